//! Decodes WebWire frames given in hexadecimal and prints what they hold.
//!
//! ```sh
//! cargo run --example decode -- 80a1e737901286f79a0361626372207520626f7265643f 2100
//! ```
//!
//! Prints one line per frame: the message, or the protocol rule it breaks. With no
//! arguments it reads one hex frame per line from standard input. A tool for looking at
//! captured traffic; it uses nothing but the codec.

use std::io::BufRead;

use bytes::Bytes;
use tokio_webwire::{Encoding, protocol::Message};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            decode(line.trim());
        }
    } else {
        args.iter().for_each(|arg| decode(arg));
    }
}

fn decode(hex: &str) {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(frame) = unhex(&hex) else {
        println!("{hex}: not hexadecimal");
        return;
    };
    match Message::parse(Bytes::from(frame)) {
        Ok(message) => {
            let text = message
                .payload()
                .filter(|p| p.encoding != Encoding::Binary)
                .and_then(|p| p.to_text().ok());
            match text {
                Some(text) => println!("{message:?}\n    payload text: {text:?}"),
                None => println!("{message:?}"),
            }
        }
        Err(err) => println!("{hex}: rejected: {err}"),
    }
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}
