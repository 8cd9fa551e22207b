//! Publish-subscribe: clients subscribe, and what is published reaches them all as signals.
//!
//! ```sh
//! cargo run --example pubsub                               # server on ws://127.0.0.1:8082/, a tick a second
//! cargo run --example pubsub -- --subscribe                # prints what is published (any number of them)
//! cargo run --example pubsub -- --publish "hello, all"     # a news signal to every subscriber
//! ```
//!
//! `--addr HOST:PORT` moves the server; `--url ws://HOST:PORT/` points the clients at it.
//! `--redis URL` (with `--features redis`) joins the server to every other on that Redis:
//! run two on two ports, subscribe to one, publish to the other (the publisher counts
//! the subscribers of the server it published to, and says it sent the news on). Each
//! server ticks to its own subscribers only, so a subscriber gets one tick a second
//! however many servers there are.
//!
//! The server (`server.rs`, a router of three requests) subscribes connections to the
//! `news` topic and publishes to it:
//! the server keeps the subscribers, encodes each signal once for all of them, and takes a
//! connection off its topics when it ends. Stop a subscriber with Ctrl-C and watch the
//! server's subscriber count drop. `tests/example_pubsub.rs`
//! drives the same server code. Connects, disconnects and errors are logged to stderr
//! (`RUST_LOG=debug` shows more).

#[path = "../common/cli.rs"]
mod cli;
#[path = "../common/interrupt.rs"]
mod interrupt;
#[path = "../common/logging.rs"]
mod logging;
mod server;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_webwire::backplane::Local;
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::Name;
use tokio_webwire::{Client, Payload};

const DEFAULT_ADDR: &str = "127.0.0.1:8082";
const USAGE: &str = "usage: pubsub [--addr HOST:PORT] [--redis URL]\n       \
                     pubsub --subscribe [--url ws://HOST:PORT/]\n       \
                     pubsub --publish TEXT [--url ws://HOST:PORT/]";

type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

#[tokio::main]
async fn main() -> ExitCode {
    logging::init("info");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default_url = format!("ws://{DEFAULT_ADDR}/");
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => serve(DEFAULT_ADDR, None).await,
        ["--addr", addr] => serve(addr, None).await,
        ["--redis", url] => serve(DEFAULT_ADDR, Some(url)).await,
        ["--addr", addr, "--redis", url] | ["--redis", url, "--addr", addr] => {
            serve(addr, Some(url)).await
        }
        ["--subscribe"] => subscribe(&default_url).await,
        ["--subscribe", "--url", url] => subscribe(url).await,
        ["--publish", text] => publish(&default_url, text).await,
        ["--publish", text, "--url", url] => publish(url, text).await,
        _ => return cli::usage(USAGE),
    };
    cli::exit_code("pubsub", result)
}

/// Serves, publishes a tick every second and reports the subscriber count, until Ctrl-C.
/// With a Redis URL, what any server on that Redis publishes reaches these subscribers.
async fn serve(addr: &str, redis: Option<&str>) -> Result {
    let stop = interrupt::armed().await;
    let news = server::News::new(redis.is_some());
    let app = server::app(news.clone());
    let (server, local) = match redis {
        Some(url) => server::start(addr, app, redis_backplane(url).await?).await?,
        None => server::start(addr, app, Local).await?,
    };
    println!("ws://{local}/");

    let mut count = news.subscribers();
    tokio::spawn(async move {
        while count.changed().await.is_ok() {
            let n = *count.borrow_and_update();
            println!("subscribers: {n}");
        }
    });

    let ticker = server.clone();
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        for n in 1u64.. {
            every_second.tick().await;
            if let Err(error) = news.tick(&ticker, n).await {
                tracing::warn!(%error, "a tick was not published");
            }
        }
    });

    stop.await?;
    server.shutdown().await;
    Ok(())
}

#[cfg(feature = "redis")]
async fn redis_backplane(url: &str) -> Result<tokio_webwire::redis::RedisBackplane> {
    Ok(tokio_webwire::redis::RedisBackplane::connect(url).await?)
}

#[cfg(not(feature = "redis"))]
async fn redis_backplane(_url: &str) -> Result<Local> {
    Err("--redis needs the redis feature: cargo run --example pubsub --features redis".into())
}

/// Prints every signal the server sends; says when the connection is gone.
#[derive(Debug)]
struct Print {
    gone: Arc<Notify>,
}

impl ClientHandler for Print {
    async fn connected(&self, _client: &Client) {
        tracing::info!("connected");
    }

    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        match payload.to_text() {
            Ok(text) => println!("{name}: {text}"),
            Err(_) => println!("{name}: {} bytes", payload.len()),
        }
    }

    async fn disconnected(&self, _client: &Client) {
        tracing::info!("disconnected");
        println!("disconnected");
        self.gone.notify_one();
    }
}

async fn subscribe(url: &str) -> Result {
    let gone = Arc::new(Notify::new());
    let client = Client::builder()
        // The subscription lives on the server, per connection: a new connection would not
        // have it. Stop instead (see the chat room example for state that survives).
        .reconnect(Reconnect::Off)
        .handler(Print { gone: gone.clone() })
        .connect(url)
        .await?;
    client.request("subscribe", Payload::empty()).await?;
    let stop = interrupt::armed().await;
    println!("subscribed to {url}; Ctrl-C to stop");
    tokio::select! {
        result = stop => result?,
        () = gone.notified() => {}
    }
    client.close().await;
    Ok(())
}

async fn publish(url: &str, text: &str) -> Result {
    let client = Client::builder()
        .reconnect(Reconnect::Off)
        .connect(url)
        .await?;
    let delivered = client.request("publish", text).await?;
    println!("delivered to {}", delivered.to_text()?);
    client.close().await;
    Ok(())
}
