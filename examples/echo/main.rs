//! An echo server, and a client for it.
//!
//! ```sh
//! cargo run --example echo                          # serves on ws://127.0.0.1:8081/
//! cargo run --example echo -- --addr 0.0.0.0:9000   # elsewhere
//! cargo run --example echo -- --max-message-size 1048576  # messages up to 1 MiB (8192)
//! cargo run --example echo -- --client              # the client, against ws://127.0.0.1:8081/
//! cargo run --example echo -- --client ws://host:9000/
//! cargo run --example echo --features rustls -- --tls cert.pem key.pem   # wss://127.0.0.1:8081/
//! cargo run --example echo --features rustls -- --client wss://host:9000/
//! cargo run --example echo --features rustls -- --client wss://localhost:8081/ --ca cert.pem
//! ```
//!
//! `--tls CERT KEY` serves `wss://` with the certificate chain and private key of two PEM
//! files (the `rustls` feature). The client trusts the webpki roots, or with `--ca FILE`
//! the certificates of that PEM file only: a self-signed certificate, or a private CA's.
//!
//! The server answers every request with the request's payload, in the request's
//! encoding, and sends every signal back to its sender (`server.rs`). The client sends a
//! request in each encoding (UTF-8, UTF-16, binary) and a signal, and prints what came
//! back (`client.rs`). `tests/example_echo.rs` runs both.
//!
//! Both log connects, disconnects and errors to stderr (`RUST_LOG=debug` shows more).

#[path = "../common/cli.rs"]
mod cli;
mod client;
#[path = "../common/interrupt.rs"]
mod interrupt;
#[path = "../common/logging.rs"]
mod logging;
mod server;

use std::process::ExitCode;

const DEFAULT_ADDR: &str = "127.0.0.1:8081";
#[cfg(not(feature = "rustls"))]
const TLS_NEEDS_THE_FEATURE: &str = "--tls needs the `rustls` feature: cargo run --example echo --features rustls -- --tls CERT KEY";
#[cfg(not(feature = "rustls"))]
const CA_NEEDS_THE_FEATURE: &str = "--ca needs the `rustls` feature: cargo run --example echo --features rustls -- --client wss://HOST:PORT/ --ca FILE";
const USAGE: &str = "usage: echo [--addr HOST:PORT] [--max-message-size BYTES] [--tls CERT KEY]
       echo --client [ws://HOST:PORT/ | wss://HOST:PORT/ [--ca FILE]]";

#[tokio::main]
async fn main() -> ExitCode {
    logging::init("info");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["--client"] => connect(&format!("ws://{DEFAULT_ADDR}/"), None).await,
        ["--client", url] => connect(url, None).await,
        ["--client", url, "--ca", ca] | ["--client", "--ca", ca, url] => {
            connect(url, Some(ca)).await
        }
        ref server_args => match server_options(server_args) {
            Some(options) => serve(options).await,
            None => return cli::usage(USAGE),
        },
    };
    cli::exit_code("echo", result)
}

/// The server's options.
struct Options<'a> {
    addr: &'a str,
    max_message_size: usize,
    /// The certificate and key PEM files, for `wss://`.
    tls: Option<(&'a str, &'a str)>,
}

/// The server's options, in any order; `None` if there is anything else.
fn server_options<'a>(mut args: &[&'a str]) -> Option<Options<'a>> {
    let mut options = Options {
        addr: DEFAULT_ADDR,
        max_message_size: server::DEFAULT_MAX_MESSAGE_SIZE,
        tls: None,
    };
    loop {
        match *args {
            [] => return Some(options),
            ["--addr", value, ref rest @ ..] => {
                options.addr = value;
                args = rest;
            }
            ["--max-message-size", value, ref rest @ ..] => {
                options.max_message_size = value.parse().ok()?;
                args = rest;
            }
            ["--tls", cert, key, ref rest @ ..] => {
                options.tls = Some((cert, key));
                args = rest;
            }
            _ => return None,
        }
    }
}

/// Serves until Ctrl-C, then shuts down gracefully.
async fn serve(options: Options<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Options {
        addr,
        max_message_size,
        tls,
    } = options;
    let stop = interrupt::armed().await;
    let (server, local, scheme) = match tls {
        None => {
            let (server, local) = server::start(addr, max_message_size).await?;
            (server, local, "ws")
        }
        #[cfg(feature = "rustls")]
        Some((cert, key)) => {
            let started = server::start_tls(addr, max_message_size, cert.as_ref(), key.as_ref());
            let (server, local) = started.await?;
            (server, local, "wss")
        }
        #[cfg(not(feature = "rustls"))]
        Some(_) => return Err(TLS_NEEDS_THE_FEATURE.into()),
    };
    println!("{scheme}://{local}/");
    stop.await?;
    server.shutdown().await;
    Ok(())
}

/// The client, trusting the certificates of the PEM file `ca` (for `wss://`) if given.
async fn connect(
    url: &str,
    ca: Option<&str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let builder = match ca {
        None => tokio_webwire::Client::builder(),
        #[cfg(feature = "rustls")]
        Some(ca) => tokio_webwire::Client::builder().tls_config(client::trusting(ca.as_ref())?),
        #[cfg(not(feature = "rustls"))]
        Some(_) => return Err(CA_NEEDS_THE_FEATURE.into()),
    };
    client::run(url, builder, &mut std::io::stdout()).await
}
