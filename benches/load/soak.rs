//! `soak`: long-lived clients and continuous churn against one server, its RSS sampled.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};
use tokio_webwire::{Client, Payload, SessionInfo};

use crate::generators::connect;
use crate::options::{Impl, Options};
use crate::process::{ServerProcess, rss_kib};
use crate::{BoxError, Result, runtime};

/// The soak server's handler: "notify" sends its payload back as signal "news" before the
/// reply; "login" creates a session (info `user` = the payload) and replies its key; every
/// other request is answered with its payload. Client signals are dropped.
pub(crate) struct SoakHandler;

impl Handler for SoakHandler {
    async fn request(&self, conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        match name.as_str() {
            "notify" => {
                conn.signal("news", payload.clone()).await?;
                Ok(payload)
            }
            "login" => {
                let mut info = SessionInfo::new();
                info.insert("user", &payload.to_text()?)?;
                let session = conn.create_session(info).await?;
                Ok(Payload::utf8(session.key))
            }
            _ => Ok(payload),
        }
    }
}

pub(crate) async fn serve_soak(listener: TcpListener) -> Result<()> {
    Server::new(SoakHandler).serve(listener).await;
    Ok(())
}

/// What the soak's clients did, and every error they saw.
#[derive(Debug, Default)]
struct SoakStats {
    /// Requests answered with their own payload.
    requests: AtomicU64,
    /// Signals sent by clients, and "news" signals received.
    signals_out: AtomicU64,
    signals_in: AtomicU64,
    /// Short-lived connections completed.
    churned: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

impl SoakStats {
    /// Counts an error; the first 20 are printed.
    fn error(&self, what: impl fmt::Display) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("soak error: {what}");
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A client handler counting the "news" signals (per client and in all).
struct SoakSignals {
    stats: Arc<SoakStats>,
    received: Arc<AtomicU64>,
}

impl ClientHandler for SoakSignals {
    async fn signal(&self, _client: &Client, name: Name, _payload: Payload) {
        if name == "news" {
            self.received.fetch_add(1, Ordering::Relaxed);
            self.stats.signals_in.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.error(format!("unexpected signal {name:?}"));
        }
    }
}

async fn soak_connect(
    addr: SocketAddr,
    stats: &Arc<SoakStats>,
    received: Arc<AtomicU64>,
) -> Result<Client> {
    let client = Client::builder()
        .reconnect(Reconnect::Off)
        .request_timeout(Duration::from_secs(10))
        .handler(SoakSignals {
            stats: Arc::clone(stats),
            received,
        })
        .connect(format!("ws://{addr}/"))
        .await?;
    Ok(client)
}

/// One long-lived client: a request every `period` (every 4th a "notify", whose "news"
/// signal must arrive), a signal every 4th period; payloads of 8..=968 bytes.
async fn soak_client(
    addr: SocketAddr,
    index: usize,
    period: Duration,
    stats: Arc<SoakStats>,
) -> Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let client = soak_connect(addr, &stats, Arc::clone(&received)).await?;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut notified = 0u64;
    let mut n = 0u64;
    while !stats.stopping() {
        tick.tick().await;
        n += 1;
        let mut body = format!("{index}/{n}/").into_bytes();
        body.resize(body.len() + (n % 16) as usize * 64, b'x');
        let body = Payload::binary(body);
        let name = if n % 4 == 0 { "notify" } else { "echo" };
        match client.request(name, body.clone()).await {
            Ok(reply) if reply == body => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                notified += u64::from(name == "notify");
            }
            Ok(_) => stats.error(format!("client {index}: a reply to another request")),
            Err(error) => stats.error(format!("client {index}: {name}: {error}")),
        }
        if n % 4 == 2 {
            match client.signal("tick", body).await {
                Ok(()) => {
                    stats.signals_out.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => stats.error(format!("client {index}: signal: {error}")),
            }
        }
    }
    // Signals go to the handler through a queue: give the last ones a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < notified && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = received.load(Ordering::Relaxed);
    if got != notified {
        stats.error(format!(
            "client {index}: {got} news signals for {notified} notify requests"
        ));
    }
    client.close().await;
    Ok(())
}

/// Connects and disconnects continuously, one connection every `period`, alternating: our
/// client logging in, requesting, logging out and closing; and a raw WebSocket that sends
/// one request, reads its reply and vanishes without a close frame.
async fn soak_churn(addr: SocketAddr, period: Duration, stats: Arc<SoakStats>) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while !stats.stopping() {
        tick.tick().await;
        n += 1;
        let outcome = if n % 2 == 0 {
            churn_client(addr, n, &stats).await
        } else {
            churn_vanish(addr, n).await
        };
        match outcome {
            Ok(()) => {
                stats.churned.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => stats.error(format!("churn {n}: {error}")),
        }
    }
}

async fn churn_client(addr: SocketAddr, n: u64, stats: &Arc<SoakStats>) -> Result<()> {
    let client = soak_connect(addr, stats, Arc::default()).await?;
    let key = client
        .request("login", format!("churn{n}"))
        .await?
        .to_text()?;
    if client.session().map(|s| s.key) != Some(key) {
        return Err("no session after login".into());
    }
    let body = Payload::utf8(format!("churn {n}"));
    if client.request("echo", body.clone()).await? != body {
        return Err("a reply to another request".into());
    }
    client.close_session().await?;
    client.close().await;
    stats.requests.fetch_add(2, Ordering::Relaxed);
    Ok(())
}

async fn churn_vanish(addr: SocketAddr, n: u64) -> Result<()> {
    let mut ws = connect(addr, WebSocketConfig::default()).await?;
    let request = Message::request(
        RequestId::from(n),
        Name::from_static("echo"),
        Payload::utf8("vanish"),
    );
    ws.send(WsMessage::Binary(request.encode()?)).await?;
    match ws.next().await {
        Some(Ok(WsMessage::Binary(reply)))
            if Message::parse(reply.clone())?.request_id() == Some(RequestId::from(n)) =>
        {
            Ok(())
        }
        other => Err(format!("expected the reply to {n}, got {other:?}").into()),
    }
    // Dropped here: the socket closes without a WebSocket close frame.
}

/// `soak`: long-lived clients with request and signal traffic plus continuous churn against
/// one server process, sampling its RSS; fails on any error, or if the RSS at the end
/// exceeds the first sample (taken after one sampling period of load) by more than
/// `--rss-margin`.
pub(crate) fn soak_main(opts: &Options) -> Result<()> {
    let duration = opts.secs_or("duration", 600.0)?;
    let sample = opts.secs_or("sample", 10.0)?.min(duration);
    let clients = opts.size_or("clients", 16)?;
    let rate = opts.size_or("rate", 2000)?.max(1);
    let churn_rate = opts.size_or("churn-rate", 50)?.max(1);
    let margin_kib = opts.size_or("rss-margin", 4 * 1024 * 1024)? / 1024;
    let server_threads = opts.size_or("server-threads", 1)?;
    if sample.is_zero() {
        return Err("--sample and --duration must be positive".into());
    }
    let mut server = ServerProcess::spawn(Impl::Soak, 8192, 64, server_threads)?;
    let (addr, pid) = (server.addr, server.pid());
    println!(
        "soak: {clients} clients, {rate} req/s in all (1 in 4 notify, a signal every 4 requests), \
         {churn_rate} connects/s of churn, {duration:?}; server pid {pid} on {addr}; RSS \
         margin {margin_kib} KiB"
    );
    let idle_rss = rss_kib(pid)?;
    println!("  server RSS before load: {idle_rss} KiB");
    let stats = Arc::new(SoakStats::default());
    let period = Duration::from_secs_f64(clients as f64 / rate as f64);
    let rt = runtime(1)?;
    let samples = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..clients {
            tasks.spawn(soak_client(addr, index, period, Arc::clone(&stats)));
        }
        let churn = tokio::spawn(soak_churn(
            addr,
            Duration::from_secs_f64(1.0 / churn_rate as f64),
            Arc::clone(&stats),
        ));
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut at = sample;
        loop {
            tokio::time::sleep_until((started + at).into()).await;
            if server.exited() {
                stats.error("the server process exited");
                break;
            }
            let rss = rss_kib(pid)?;
            println!(
                "  t={:>5.0} s  RSS {rss:>7} KiB  requests {:>9}  signals to server {:>8} to clients {:>8}  \
                 churned {:>7}  errors {}",
                started.elapsed().as_secs_f64(),
                stats.requests.load(Ordering::Relaxed),
                stats.signals_out.load(Ordering::Relaxed),
                stats.signals_in.load(Ordering::Relaxed),
                stats.churned.load(Ordering::Relaxed),
                stats.errors.load(Ordering::Relaxed),
            );
            samples.push(rss);
            if at >= duration {
                break;
            }
            at = (at + sample).min(duration);
        }
        stats.stop.store(true, Ordering::Relaxed);
        let stopped = async {
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => stats.error(format!("client: {error}")),
                    Err(error) => stats.error(format!("client task: {error}")),
                }
            }
            if let Err(error) = churn.await {
                stats.error(format!("churn task: {error}"));
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), stopped)
            .await
            .is_err()
        {
            stats.error("the clients did not stop within 30 s");
        }
        Ok::<_, BoxError>(samples)
    })?;
    let after = rss_kib(pid).ok();
    let (Some(&start), Some(&end)) = (samples.first(), samples.last()) else {
        return Err("no RSS sample".into());
    };
    let errors = stats.errors.load(Ordering::Relaxed);
    println!(
        "soak: RSS start {start} KiB, end {end} KiB ({:+} KiB; margin {margin_kib}), max {} KiB, \
         after the clients left {} KiB; {} requests, {} signals to the server, {} to clients, {} churned; \
         {errors} errors",
        end as i64 - start as i64,
        samples.iter().max().copied().unwrap_or(0),
        after.map_or("?".into(), |kib| kib.to_string()),
        stats.requests.load(Ordering::Relaxed),
        stats.signals_out.load(Ordering::Relaxed),
        stats.signals_in.load(Ordering::Relaxed),
        stats.churned.load(Ordering::Relaxed),
    );
    if errors > 0 {
        return Err(format!("soak failed: {errors} errors").into());
    }
    if end > start + margin_kib as u64 {
        return Err(format!("soak failed: RSS grew from {start} to {end} KiB").into());
    }
    println!("soak: passed");
    Ok(())
}
