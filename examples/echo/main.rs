//! An echo server, and a client for it.
//!
//! ```sh
//! cargo run --example echo                          # serves on ws://127.0.0.1:8081/
//! cargo run --example echo -- --addr 0.0.0.0:9000   # elsewhere
//! cargo run --example echo -- --client              # the client, against ws://127.0.0.1:8081/
//! cargo run --example echo -- --client ws://host:9000/
//! ```
//!
//! The server answers every request with the request's payload, in the request's
//! encoding, and sends every signal back to its sender (`server.rs`). The client sends a
//! request in each encoding (UTF-8, UTF-16, binary) and a signal, and prints what came
//! back (`client.rs`). `tests/example_echo.rs` runs both.

mod client;
mod server;

use std::process::ExitCode;

const DEFAULT_ADDR: &str = "127.0.0.1:8081";
const USAGE: &str = "usage: echo [--addr HOST:PORT] | echo --client [ws://HOST:PORT/]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => serve(DEFAULT_ADDR).await,
        ["--addr", addr] => serve(addr).await,
        ["--client"] => connect(&format!("ws://{DEFAULT_ADDR}/")).await,
        ["--client", url] => connect(url).await,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until Ctrl-C, then shuts down gracefully.
async fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (server, local) = server::start(addr).await?;
    println!("ws://{local}/");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

async fn connect(url: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    client::run(url, &mut std::io::stdout()).await
}
