//! A chat room with logins that survive reconnects, and a terminal client for it.
//!
//! ```sh
//! cargo run --example chatroom --features axum                          # server on ws://127.0.0.1:8083/
//! cargo run --example chatroom --features axum -- --sessions /tmp/chat  # sessions kept in files
//! cargo run --example chatroom --features axum -- --client              # a terminal client (run two)
//! cargo run --example chatroom --features axum -- --web                 # for browsers: http://127.0.0.1:8083/
//! # two servers, one room (a redis-server on 127.0.0.1:6379):
//! cargo run --example chatroom --features axum,redis -- --web --redis redis://127.0.0.1/
//! cargo run --example chatroom --features axum,redis -- --web --addr 127.0.0.1:8084 --redis redis://127.0.0.1/
//! ```
//!
//! In the client, `/login alice wonderland` (or `bob builder`), then type. Restart a
//! server started with `--sessions DIR`: the clients reconnect, restore their sessions and
//! carry on without logging in again (with the default in-memory store the sessions die
//! with the server, and the clients are told they are logged out).
//!
//! Options: `--addr HOST:PORT` for the server, `--client [ws://HOST:PORT/]` for the client.
//! `--redis URL` keeps the sessions in Redis and shares the room with every server on the
//! same Redis: a message said on one reaches the members on all, a login restores on any.
//! `--web` (anywhere among the server's options) serves the chat room for browsers
//! instead: a page at `/` using the JavaScript client, WebWire at `/ws` (`web.rs`); the
//! terminal client reaches it with `--client ws://HOST:PORT/ws`.
//! The requests and signals are defined once, in `contract.rs`, for the server
//! (`server.rs`, a router of one async function per request), the terminal client
//! (`client.rs`) and, as TypeScript, the page; `tests/example_chatroom.rs` drives both.
//!
//! The server logs connects, disconnects, logins and errors to stderr; the terminal client
//! only errors, so as not to clutter the chat: it shows connection and session events as
//! `*` lines (`RUST_LOG=info` or `debug` shows more of either).

#[path = "../common/cli.rs"]
mod cli;
mod client;
mod contract;
#[path = "../common/interrupt.rs"]
mod interrupt;
#[path = "../common/logging.rs"]
mod logging;
#[path = "../common/mounted.rs"]
mod mounted;
mod server;
mod web;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_webwire::ConnectError;
use tokio_webwire::backplane::Local;
use tokio_webwire::client::Backoff;
use tokio_webwire::server::{Handler, Server};
use tokio_webwire::session::{FileStore, MemoryStore};

const DEFAULT_ADDR: &str = "127.0.0.1:8083";
const USAGE: &str = "usage: chatroom [--web] [--addr HOST:PORT] [--sessions DIR | --redis URL]\n       \
                     chatroom --client [ws://HOST:PORT/]";

type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The client shows connection and session events in the chat itself: its log (the
    // library's reconnection warnings included) would only interleave with the chat.
    logging::init(if args.first().is_some_and(|a| a == "--client") {
        "error"
    } else {
        "info"
    });
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--client"] => chat(&format!("ws://{DEFAULT_ADDR}/")).await,
        ["--client", url] => chat(url).await,
        ref server_args => match server_options(server_args) {
            Some(options) => serve(&options).await,
            None => return cli::usage(USAGE),
        },
    };
    cli::exit_code("chatroom", result)
}

/// The server's options.
#[derive(Debug, Clone, Copy)]
struct Options<'a> {
    addr: &'a str,
    /// `--sessions DIR`: sessions in files there.
    sessions: Option<&'a str>,
    /// `--redis URL`: sessions in Redis, and the room shared with every server on it.
    redis: Option<&'a str>,
    /// `--web`: the page and the chat room at `/ws`, through axum.
    web: bool,
}

/// `[--web] [--addr HOST:PORT] [--sessions DIR | --redis URL]`, in any order.
fn server_options<'a>(mut args: &[&'a str]) -> Option<Options<'a>> {
    let mut options = Options {
        addr: DEFAULT_ADDR,
        sessions: None,
        redis: None,
        web: false,
    };
    loop {
        args = match *args {
            ["--web", ref rest @ ..] => {
                options.web = true;
                rest
            }
            ["--addr", value, ref rest @ ..] => {
                options.addr = value;
                rest
            }
            ["--sessions", value, ref rest @ ..] => {
                options.sessions = Some(value);
                rest
            }
            ["--redis", value, ref rest @ ..] => {
                options.redis = Some(value);
                rest
            }
            _ => break,
        };
    }
    let one_store = options.sessions.is_none() || options.redis.is_none();
    (args.is_empty() && one_store).then_some(options)
}

/// Serves the chat room the options describe until Ctrl-C: sessions in memory, in
/// files, or in Redis (then the room also reaches every server on the same Redis, through
/// its backplane).
async fn serve(options: &Options<'_>) -> Result {
    match (options.sessions, options.redis) {
        (_, Some(url)) => redis(url, options).await,
        (Some(dir), None) => run(options, server::build(FileStore::new(dir)?, Local)).await,
        (None, None) => run(options, server::build(MemoryStore::new(), Local)).await,
    }
}

#[cfg(feature = "redis")]
async fn redis(url: &str, options: &Options<'_>) -> Result {
    use tokio_webwire::redis::{RedisBackplane, RedisStore};
    let store = RedisStore::connect(url).await?;
    let backplane = RedisBackplane::connect(url).await?;
    run(options, server::build(store, backplane)).await
}

#[cfg(not(feature = "redis"))]
async fn redis(_url: &str, _options: &Options<'_>) -> Result {
    Err(
        "--redis needs the redis feature: cargo run --example chatroom --features axum,redis"
            .into(),
    )
}

/// Serves `server` (with `--web`, the page too) until Ctrl-C, then shuts down gracefully.
async fn run(options: &Options<'_>, server: Server<impl Handler>) -> Result {
    let stop = interrupt::armed().await;
    if options.web {
        return web::serve(options.addr, server, stop).await;
    }
    let (server, local) = server::start(options.addr, server).await?;
    println!("ws://{local}/");
    stop.await?;
    server.shutdown().await;
    Ok(())
}

/// The terminal client: typed lines in, messages and events out, until `/quit` or the
/// end of input.
async fn chat(url: &str) -> Result {
    let (output, mut printed) = mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(line) = printed.recv().await {
            println!("{line}");
        }
    });
    let backoff = Backoff::default().max(Duration::from_secs(5));
    let client = match client::connect(url, backoff, output.clone()).await {
        Ok(client) => client,
        // A page there: most likely the chat room served with `--web`, at /ws.
        Err(error @ ConnectError::Http { status: 200 }) => {
            return Err(client::not_the_endpoint(url, &error).into());
        }
        Err(error) => return Err(error.into()),
    };
    let _ = output.send(client::HELP.to_owned());

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "/quit" {
            break;
        }
        if let Some(answer) = client::execute(&client, &line).await {
            let _ = output.send(answer);
        }
    }
    client.close().await;
    // What is still queued is printed before the process ends (the handler's own sender
    // goes with the client; a second at most, then the rest is dropped).
    drop((client, output));
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    Ok(())
}
