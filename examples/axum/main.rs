//! tokio-webwire mounted in an axum application: a page and WebWire on one port.
//!
//! ```sh
//! cargo run --example axum --features axum                         # http://127.0.0.1:8080/
//! cargo run --example axum --features axum -- --addr 0.0.0.0:9000
//! cargo run --example echo -- --client ws://127.0.0.1:8080/ws       # any WebWire client
//! ```
//!
//! Open the page in a browser, type a name (1 to 32 letters and spaces, any script),
//! connect and send `hello` requests; the echo example's client sends `echo` requests and
//! a signal, which are answered and sent back too. The router (`app.rs`) serves the page
//! at `/` and hands `/ws` to the WebWire server, whose `before_upgrade` reads the
//! visitor's name from the query (`/ws?name=Zo%C3%AB`), refuses others with 400, and
//! attaches it to the connection. Connects, disconnects and errors are logged to stderr
//! (`RUST_LOG=debug` shows more). Ctrl-C shuts both down. `tests/example_axum.rs` runs
//! it, in process and as processes.

mod app;
#[path = "../common/cli.rs"]
mod cli;
#[path = "../common/interrupt.rs"]
mod interrupt;
#[path = "../common/logging.rs"]
mod logging;
#[path = "../common/mounted.rs"]
mod mounted;

use std::process::ExitCode;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";
const USAGE: &str = "usage: axum [--addr HOST:PORT]";

#[tokio::main]
async fn main() -> ExitCode {
    logging::init("info");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = cli::addr_only(&args, DEFAULT_ADDR) else {
        return cli::usage(USAGE);
    };
    cli::exit_code("axum example", serve(addr).await)
}

/// Serves until Ctrl-C, then shuts down gracefully.
async fn serve(addr: &str) -> std::io::Result<()> {
    let stop = interrupt::armed().await;
    let running = app::start(addr).await?;
    let local = running.addr;
    println!("http://{local}/ (WebWire at ws://{local}/ws)");
    stop.await?;
    running.shutdown().await;
    Ok(())
}
