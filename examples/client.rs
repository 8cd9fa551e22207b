//! Sends one request to a WebWire server and prints the reply; prints server signals
//! until the reply arrives.
//!
//! ```sh
//! cargo run --example client -- ws://127.0.0.1:8081/ echo "hello"
//! ```

use std::time::Duration;

use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::Name;
use tokio_webwire::{Client, Payload};

struct PrintSignals;

impl ClientHandler for PrintSignals {
    async fn signal(&self, name: Name, payload: Payload) {
        println!("signal {name:?}: {:?}", payload.to_text());
    }

    async fn disconnected(&self) {
        eprintln!("disconnected");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(name)) = (args.next(), args.next()) else {
        eprintln!("usage: client <ws://host:port/> <request name> [payload]");
        std::process::exit(2);
    };
    let payload = args.next().unwrap_or_default();

    let client = Client::builder()
        .request_timeout(Duration::from_secs(10))
        .reconnect(Reconnect::Off)
        .handler(PrintSignals)
        .connect(&url)
        .await?;
    if let Some(conf) = client.server_conf() {
        eprintln!(
            "connected: protocol {}, read timeout {:?}, message limit {} bytes",
            conf.version, conf.read_timeout, conf.message_buffer_size
        );
    }
    let result = client.request(name, payload).await;
    client.close().await;
    match result {
        Ok(reply) => match reply.to_text() {
            Ok(text) => println!("{text}"),
            Err(_) => println!("{:02x?}", &reply.data[..]),
        },
        Err(err) => {
            eprintln!("request failed: {err}");
            std::process::exit(1);
        }
    }
    Ok(())
}
