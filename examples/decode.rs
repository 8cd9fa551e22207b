//! Decodes WebWire frames given in hexadecimal and prints what they hold.
//!
//! ```sh
//! cargo run --example decode -- 80a1e737901286f79a0361626372207520626f7265643f 21
//! ```
//!
//! Prints one line per frame: the message, or the protocol rule it breaks. With no
//! arguments it reads one hex frame per line from standard input (`-` too). A tool for
//! looking at captured traffic; it uses nothing but the codec.
//!
//! Exit codes: 0 when every frame is a valid message, 1 when any is not (not hexadecimal,
//! or rejected by the codec), 2 for no frame at all or an unknown option (the usage on
//! stderr). `--help` prints the usage and exits 0.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use bytes::Bytes;
use tokio_webwire::{Encoding, protocol::Message};

const USAGE: &str = "usage: decode HEX...    (or one HEX frame per line on standard input)
decodes WebWire frames; exit code 0: all valid, 1: some not, 2: no frames";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let frames: Vec<String> = match &args[..] {
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [] | [_] if args.first().is_none_or(|arg| arg == "-") => {
            if args.is_empty() && std::io::stdin().is_terminal() {
                // Nothing given, nobody piping: say what to give rather than wait.
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            let lines = std::io::stdin().lock().lines().map_while(Result::ok);
            lines.filter(|line| !line.trim().is_empty()).collect()
        }
        _ if args.iter().any(|arg| arg.starts_with('-')) => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        _ => args,
    };
    if frames.is_empty() {
        eprintln!("no frames\n{USAGE}");
        return ExitCode::from(2);
    }
    // Every frame is decoded, the valid ones too, before the exit code says whether any
    // was not.
    let valid = frames.iter().filter(|frame| decode(frame)).count();
    if valid == frames.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints what `hex` holds; whether it is a valid message.
fn decode(hex: &str) -> bool {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(frame) = unhex(&hex) else {
        println!("{hex}: not hexadecimal");
        return false;
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
            true
        }
        Err(err) => {
            println!("{hex}: rejected: {err}");
            false
        }
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
