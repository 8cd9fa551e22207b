//! An echo server, and a client for it.
//!
//! ```sh
//! cargo run --example echo                          # serves on ws://127.0.0.1:8081/
//! cargo run --example echo -- --addr 0.0.0.0:9000   # elsewhere
//! cargo run --example echo -- --max-message-size 1048576  # messages up to 1 MiB (8192)
//! cargo run --example echo -- --client              # the client, against ws://127.0.0.1:8081/
//! cargo run --example echo -- --client ws://host:9000/
//! ```
//!
//! The server answers every request with the request's payload, in the request's
//! encoding, and sends every signal back to its sender (`server.rs`). The client sends a
//! request in each encoding (UTF-8, UTF-16, binary) and a signal, and prints what came
//! back (`client.rs`). `tests/example_echo.rs` runs both.
//!
//! Both log connects, disconnects and errors to stderr (`RUST_LOG=debug` shows more).

mod client;
#[path = "../common/logging.rs"]
mod logging;
mod server;

use std::process::ExitCode;

const DEFAULT_ADDR: &str = "127.0.0.1:8081";
const USAGE: &str = "usage: echo [--addr HOST:PORT] [--max-message-size BYTES]
       echo --client [ws://HOST:PORT/]";

#[tokio::main]
async fn main() -> ExitCode {
    logging::init("info");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["--client"] => connect(&format!("ws://{DEFAULT_ADDR}/")).await,
        ["--client", url] => connect(url).await,
        ref server_args => match server_options(server_args) {
            Some((addr, max_message_size)) => serve(addr, max_message_size).await,
            None => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "echo failed");
            ExitCode::FAILURE
        }
    }
}

/// The server's address and message size limit, from options in any order; `None` if
/// there is anything else.
fn server_options<'a>(mut args: &[&'a str]) -> Option<(&'a str, usize)> {
    let mut addr = DEFAULT_ADDR;
    let mut max_message_size = server::DEFAULT_MAX_MESSAGE_SIZE;
    loop {
        match *args {
            [] => return Some((addr, max_message_size)),
            ["--addr", value, ref rest @ ..] => {
                addr = value;
                args = rest;
            }
            ["--max-message-size", value, ref rest @ ..] => {
                max_message_size = value.parse().ok()?;
                args = rest;
            }
            _ => return None,
        }
    }
}

/// Serves until Ctrl-C, then shuts down gracefully.
async fn serve(
    addr: &str,
    max_message_size: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (server, local) = server::start(addr, max_message_size).await?;
    println!("ws://{local}/");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

async fn connect(url: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    client::run(url, &mut std::io::stdout()).await
}
