//! The server the JavaScript client's tests run against (`js/test/client.test.js`): one
//! request per flow of the client, on a server with small limits so that the tests reach
//! them quickly.
//!
//! ```sh
//! cargo run --example peer                            # on 127.0.0.1, ports chosen by the system
//! cargo run --example peer -- --addr 127.0.0.1:9000
//! ```
//!
//! It serves two servers with one handler: the main one (sessions on, held in memory
//! across restarts) at `--addr`, and one with sessions disabled on another port of the
//! same host. Once both listen it prints one JSON line on stdout, which the tests read:
//! `{"url":"ws://127.0.0.1:PORT/","no_sessions_url":"ws://127.0.0.1:PORT/"}`. The
//! requests it answers are listed in `server.rs`. It runs until Ctrl-C, the end of its
//! standard input (so a test runner that dies takes it along), or a `shutdown` request.

#[path = "../common/cli.rs"]
mod cli;
#[path = "../common/logging.rs"]
mod logging;
mod server;

use std::process::ExitCode;

const DEFAULT_ADDR: &str = "127.0.0.1:0";
const USAGE: &str = "usage: peer [--addr HOST:PORT]";

#[tokio::main]
async fn main() -> ExitCode {
    logging::init("warn");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = cli::addr_only(&args, DEFAULT_ADDR) else {
        return cli::usage(USAGE);
    };
    cli::exit_code("peer", server::run(addr).await)
}
