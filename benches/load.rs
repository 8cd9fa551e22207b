//! Server load benchmark: our server against a minimal tokio-tungstenite echo server.
//!
//! Each server runs in its own process (this binary re-executed as `serve --impl ours|minimal`,
//! printing its address on stdout), so the load generator in this process never shares a
//! runtime with it, and the server's CPU time (`/proc/<pid>/task/*/schedstat`) and memory
//! (`VmRSS`) can be read on their own. The load generator is a separate piece behind the
//! [`LoadGenerator`] trait: `C` connections, each with `P` binary requests named `"echo"` of
//! `S` payload bytes in flight; every reply is checked (type, an outstanding id, length,
//! payload bytes).
//!
//! ```text
//! cargo bench --bench load                       # the table below, then idle RSS
//! cargo bench --bench load -- run --configs 4x64x16 --duration 5
//! cargo bench --bench load -- idle --conns 10000 # or scripts/idle-rss.sh (raises ulimit -n)
//! cargo bench --bench load -- soak --duration 600  # or scripts/soak.sh: RSS flat, no error
//! cargo bench --bench load -- stall --conns 300  # RSS per connection whose client stopped reading
//! cargo bench --bench load -- serve --impl ours  # a server for perf/valgrind; prints addr
//! cargo bench --bench load -- drive --addr 127.0.0.1:PORT --configs 4x64x16
//! ```
//!
//! Modes and options (sizes accept a `k` suffix, durations are seconds):
//!
//! | mode | options (default) |
//! |---|---|
//! | `run` (default) | `--generators raw,client` (`raw`: tokio-tungstenite; `client`: our `Client`), `--configs CxPxS,..` (`1x1x16,4x64x16,4x64x4k,4x16x256k`), `--warmup` (1), `--duration` (3), `--impls` (`ours,minimal`), `--server-threads` (1), `--client-threads` (1), `--repeat` (1; medians are reported), `--idle-conns` (10000; 0 skips) |
//! | `idle` | `--conns` (10000), `--impls`, `--server-threads` |
//! | `soak` | `--duration` (600), `--sample` (10), `--clients` (16), `--rate` (2000 requests/s in all), `--churn-rate` (50 connects/s), `--rss-margin` (4m bytes), `--server-threads` (1) |
//! | `stall` | `--conns` (300), `--impls` (`ours,minimal`; ours once per handler), `--handlers` (`echo,echo-async`), `--stall` (2: a write blocked this long means the server stopped reading), `--settle` (30: bound on waiting for a stable RSS), `--write-timeout` (120, given to our server), `--server-threads` (1) |
//! | `serve` | `--impl` (`ours`), `--max-message-size` (8192), `--max-concurrent` (64), `--threads` (1), `--handler` (`echo`: answers at once; `echo-async`: yields once first, so it runs on a task of its own; `match20` / `router20`: the echo as one of 20 names, in a hand-written `match` / on a router), `--defaults` (`false`; `true`: our server with the builder's default options, only the handler and `--write-timeout` set), `--write-timeout` (the builder's 10) |
//! | `drive` | `--addr`, `--generators` (`raw`), `--configs`, `--warmup`, `--duration`, `--client-threads`, `--pid` (server pid, for CPU/req) |
//!
//! Run without `--bench` (as `cargo test --benches` does) it only runs a short smoke check.
//!
//! Metrics: built with `--features metrics`, our server counts into no-op handles (no
//! recorder installed); with `WEBWIRE_BENCH_RECORDER=1` in the environment as well, `serve`
//! first installs a recorder whose handles are plain atomics (what an exporter's handles
//! are, without the exporting), so that the load shows what counting costs.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::{AcceptConf, Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerError, Server};
use tokio_webwire::{Client, Payload, SessionInfo};

/// The default load configurations of the issue: (connections, pipeline depth, payload bytes).
const DEFAULT_CONFIGS: &str = "1x1x16,4x64x16,4x64x4k,4x16x256k";

/// Room for the header of a request (type, id, name length, `"echo"`) in the size limit.
const HEADER_ROOM: usize = 64;

/// The type byte of a binary request and of a binary reply (PROTOCOL.md §2).
const REQUEST_BINARY: u8 = 0x7F;
const REPLY_BINARY: u8 = 0xBF;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` appends `--bench`; `cargo test --benches` runs us without it.
    let benching = args.iter().any(|a| a == "--bench");
    args.retain(|a| a != "--bench");
    let mode = match args.first() {
        Some(first) if !first.starts_with('-') => args.remove(0),
        _ if benching => "run".to_owned(),
        _ => "smoke".to_owned(),
    };
    let opts = Options::parse(&args)?;
    match mode.as_str() {
        "serve" => serve_main(&opts),
        "run" => run_main(&opts, false),
        "smoke" => run_main(&opts, true),
        "idle" => idle_main(&opts),
        "drive" => drive_main(&opts),
        "soak" => soak_main(&opts),
        "stall" => stall_main(&opts),
        other => {
            Err(format!("unknown mode {other:?} (run, idle, soak, stall, serve, drive)").into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options

/// `--name value` pairs, parsed on demand.
#[derive(Debug, Default)]
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let Some(key) = name.strip_prefix("--") else {
                return Err(format!("unexpected argument {name:?}").into());
            };
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            pairs.push((key.to_owned(), value.clone()));
        }
        Ok(Options(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    fn size_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), parse_size)
    }

    fn secs_or(&self, key: &str, default: f64) -> Result<Duration> {
        let secs = match self.get(key) {
            Some(v) => v.parse::<f64>()?,
            None => default,
        };
        Ok(Duration::from_secs_f64(secs))
    }

    fn secs(&self, key: &str) -> Result<Option<Duration>> {
        self.get(key)
            .map(|v| Ok(Duration::from_secs_f64(v.parse::<f64>()?)))
            .transpose()
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!("--{key} {other:?}: expected true or false").into()),
        }
    }

    fn impls(&self) -> Result<Vec<Impl>> {
        self.str_or("impls", "ours,minimal")
            .split(',')
            .map(str::parse)
            .collect()
    }

    /// `--generators raw,client` (default `raw`).
    fn generators(&self) -> Result<Vec<&'static dyn LoadGenerator>> {
        self.str_or("generators", "raw")
            .split(',')
            .map(|name| match name {
                "raw" => Ok(&TungsteniteGenerator as &dyn LoadGenerator),
                "client" => Ok(&ClientGenerator as &dyn LoadGenerator),
                other => Err(format!("unknown generator {other:?} (raw, client)").into()),
            })
            .collect()
    }
}

/// `16`, `256k` (KiB), `1m` (MiB).
fn parse_size(text: &str) -> Result<usize> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (lower.as_str(), 1),
        },
    };
    Ok(digits.parse::<usize>()? * unit)
}

/// An enum chosen by name on the command line: `FromStr` and `Display` from one table.
macro_rules! named {
    ($(#[$meta:meta])* enum $name:ident ($what:literal) {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl std::str::FromStr for $name {
            type Err = BoxError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?} ({})",
                        $what,
                        [$($text),+].join(", ")
                    )
                    .into()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)+
                })
            }
        }
    };
}

named! {
    /// Which server a process runs.
    enum Impl ("server") {
        /// `tokio_webwire::server::Server` with an echo handler.
        Ours = "ours",
        /// [`serve_minimal`]: tokio-tungstenite and nothing else.
        Minimal = "minimal",
        /// Our server with [`SoakHandler`] (echo, signals back, sessions): for `soak`.
        Soak = "soak",
    }
}

named! {
    /// The handler of `serve --impl ours`.
    enum EchoKind ("handler") {
        /// [`Echo`]: answers at once.
        Echo = "echo",
        /// [`Echo`] that yields once first.
        EchoAsync = "echo-async",
        /// [`Match20`]: a hand-written `match` over 20 names, `"echo"` the last arm.
        Match20 = "match20",
        /// [`router20`]: a router with the same 20 routes, `"echo"` added first (the
        /// longest walk down its list).
        Router20 = "router20",
    }
}

/// One load configuration: C connections × P requests in flight × S payload bytes.
#[derive(Debug, Clone, Copy)]
struct LoadSpec {
    conns: usize,
    pipeline: usize,
    size: usize,
}

impl LoadSpec {
    fn parse_list(text: &str) -> Result<Vec<Self>> {
        text.split(',')
            .map(|item| {
                let parts: Vec<&str> = item.split('x').collect();
                let [c, p, s] = parts[..] else {
                    return Err(format!("config {item:?} is not CxPxS").into());
                };
                let spec = LoadSpec {
                    conns: c.parse()?,
                    pipeline: p.parse()?,
                    size: parse_size(s)?,
                };
                if spec.conns == 0 || spec.pipeline == 0 {
                    return Err(format!("config {item:?}: C and P must be positive").into());
                }
                Ok(spec)
            })
            .collect()
    }

    /// The message size limit both servers get for this load.
    fn max_message_size(&self) -> usize {
        (self.size + HEADER_ROOM).max(8192)
    }
}

impl fmt::Display for LoadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = if self.size >= 1024 && self.size % 1024 == 0 {
            format!("{}KiB", self.size / 1024)
        } else {
            format!("{}B", self.size)
        };
        write!(f, "C={} P={} S={size}", self.conns, self.pipeline)
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?)
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// A server running in a child process (this binary in `serve` mode).
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn spawn(
        which: Impl,
        max_message_size: usize,
        max_concurrent: usize,
        threads: usize,
    ) -> Result<Self> {
        let options = [
            ("max-message-size", max_message_size.to_string()),
            ("max-concurrent", max_concurrent.to_string()),
        ];
        Self::spawn_with(which, threads, &options)
    }

    /// A server with further `serve` options (`--name value` for each pair).
    fn spawn_with(which: Impl, threads: usize, options: &[(&str, String)]) -> Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["serve", "--impl", &which.to_string()])
            .args(["--threads", &threads.to_string()]);
        for (name, value) in options {
            command.arg(format!("--{name}")).arg(value);
        }
        let mut child = command
            // The server exits when this pipe closes, so it never outlives us.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = match line.trim().parse() {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("server printed {line:?}, not an address").into());
            }
        };
        Ok(ServerProcess { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended.
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of every live thread of a process, in nanoseconds (`/proc/<pid>/task/*/schedstat`:
/// nanosecond resolution, where `/proc/<pid>/stat` counts clock ticks).
fn cpu_ns(pid: &str) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// How many files (sockets included) a process has open (`/proc/<pid>/fd`).
fn open_files(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Resident memory of a process in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

/// The soft limit on open files of this process (`/proc/self/limits`).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The servers (child process)

fn serve_main(opts: &Options) -> Result<()> {
    let which: Impl = opts.str_or("impl", "ours").parse()?;
    let limit = opts.size_or("max-message-size", 8192)?;
    let max_concurrent = opts.size_or("max-concurrent", 64)?;
    let threads = opts.size_or("threads", 1)?;
    let ours = OursOptions {
        limit,
        max_concurrent,
        defaults: opts.bool_or("defaults", false)?,
        write_timeout: opts.secs("write-timeout")?,
    };
    let handler: EchoKind = opts.str_or("handler", "echo").parse()?;
    #[cfg(feature = "metrics")]
    if std::env::var_os("WEBWIRE_BENCH_RECORDER").is_some() {
        metrics::set_global_recorder(AtomicRecorder)?;
    }
    // Exit when the parent goes away (it holds our stdin).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    runtime(threads)?.block_on(async move {
        // Backlog 1024 for either server (tokio's bind: 128), so that a burst of connects
        // (`idle`, the soak's churn) measures the server, not dropped and resent SYNs.
        let listener = tokio_webwire::server::bind("127.0.0.1:0").await?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", listener.local_addr()?)?;
        stdout.flush()?;
        match which {
            Impl::Ours => match handler {
                EchoKind::Match20 => serve_ours(listener, Match20, &ours).await,
                EchoKind::Router20 => {
                    let router = router20().build()?;
                    serve_ours(listener, router, &ours).await
                }
                EchoKind::Echo | EchoKind::EchoAsync => {
                    let yields = handler == EchoKind::EchoAsync;
                    serve_ours(listener, Echo { yields }, &ours).await
                }
            },
            Impl::Minimal => serve_minimal(listener, limit).await,
            Impl::Soak => serve_soak(listener).await,
        }
    })
}

/// A recorder whose every counter and gauge is an atomic of its own, never read: the
/// cost of counting into a real exporter's handles, without the exporting.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct AtomicRecorder;

#[cfg(feature = "metrics")]
impl metrics::Recorder for AtomicRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(metrics::atomics::AtomicU64::new(0)))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(metrics::atomics::AtomicU64::new(0)))
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// Our server's handler: every request is answered with its payload; with `yields`, only
/// after yielding once, so that it is not ready at its first poll and the server runs it on
/// a task of its own.
struct Echo {
    yields: bool,
}

impl Handler for Echo {
    async fn request(
        &self,
        _conn: &Connection,
        _name: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        if self.yields {
            tokio::task::yield_now().await;
        }
        Ok(payload)
    }
}

/// What the 19 other routes answer: their name, so that none is optimised away.
fn other(name: &'static str) -> Result<Payload, HandlerError> {
    Ok(Payload::utf8(name))
}

/// The hand-written handler a router replaces: a `match` of 20 arms, the echo last.
struct Match20;

impl Handler for Match20 {
    async fn request(
        &self,
        _conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        match name.as_str() {
            "login" => other("login"),
            "logout" => other("logout"),
            "whoami" => other("whoami"),
            "say" => other("say"),
            "join" => other("join"),
            "leave" => other("leave"),
            "rooms" => other("rooms"),
            "members" => other("members"),
            "history" => other("history"),
            "typing" => other("typing"),
            "status" => other("status"),
            "profile" => other("profile"),
            "avatar" => other("avatar"),
            "search" => other("search"),
            "invite" => other("invite"),
            "kick" => other("kick"),
            "ban" => other("ban"),
            "topic" => other("topic"),
            "ping" => other("ping"),
            "echo" => Ok(payload),
            _ => Err(HandlerError::reply(
                tokio_webwire::protocol::ErrorCode::from_static("UNKNOWN"),
                "no such request",
            )),
        }
    }
}

/// The same 20 routes on a router, the echo added first: the route the walk down the
/// list reaches last.
fn router20() -> tokio_webwire::router::Router<(), impl tokio_webwire::router::Routes<()>> {
    macro_rules! routes {
        ($router:expr; $($name:literal),*) => {
            $router$(.request($name, || async { other($name) }))*
        };
    }
    let router =
        tokio_webwire::router::Router::new().request("echo", |p: Payload| async move { p });
    routes!(router; "login", "logout", "whoami", "say", "join", "leave", "rooms", "members",
        "history", "typing", "status", "profile", "avatar", "search", "invite", "kick", "ban",
        "topic", "ping")
}

/// The options of `serve --impl ours`.
#[derive(Debug)]
struct OursOptions {
    limit: usize,
    max_concurrent: usize,
    /// The builder's defaults instead of `limit` and `max_concurrent` (and the outbound
    /// queue raised to match).
    defaults: bool,
    /// The builder's default (10 s) if not given.
    write_timeout: Option<Duration>,
}

async fn serve_ours<H: Handler>(
    listener: TcpListener,
    handler: H,
    opts: &OursOptions,
) -> Result<()> {
    let mut builder = Server::builder(handler);
    if !opts.defaults {
        builder = builder
            .max_message_size(opts.limit)
            .max_concurrent_requests(opts.max_concurrent)
            .outbound_queue_len(opts.max_concurrent.max(64))
            // The idle mode opens as many connections as it is asked to, all from the load
            // generator's one address: the limits per source are for servers of many.
            .max_connections(0)
            .max_connections_per_source(0)
            .max_pending_upgrades_per_source(0)
            .source_connect_rate(0, 1);
    }
    if let Some(timeout) = opts.write_timeout {
        builder = builder.write_timeout(timeout);
    }
    let server = builder.build()?;
    server.serve(listener).await;
    Ok(())
}

/// The tungstenite configuration of `src/transport.rs` (`websocket_config`), replicated so
/// the minimal server reads and writes through buffers of the same sizes.
fn server_ws_config(limit: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(16 * 1024 + limit * 2 + 1024)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
}

/// The baseline: tokio-tungstenite's own handshake, then per connection one task that reads
/// requests and writes replies in the same poll loop ([`pump`]: no channel, no task per
/// request, one flush per batch). It parses the type byte, the id and the name length only.
async fn serve_minimal(listener: TcpListener, limit: usize) -> Result<()> {
    // The same first message as ours, so the generator sees no difference.
    let accept_conf = Message::AcceptConf(AcceptConf::new(
        Duration::from_secs(60),
        u32::try_from(limit)?,
    ))
    .encode()?;
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let accept_conf = accept_conf.clone();
        tokio::spawn(async move {
            let config = server_ws_config(limit);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(socket, Some(config)).await
            else {
                return;
            };
            if ws.send(WsMessage::Binary(accept_conf)).await.is_err() {
                return;
            }
            let mut out = VecDeque::new();
            let _ = pump(&mut ws, &mut out, 64, |frame, out| {
                out.push_back(echo_reply(&frame)?);
                Ok(Flow::Continue)
            })
            .await;
        });
    }
}

/// `0xBF` + id + payload of a binary request, in one buffer.
fn echo_reply(frame: &[u8]) -> Result<Bytes, String> {
    if frame.len() < 10 || frame[0] != REQUEST_BINARY {
        return Err("not a binary request".into());
    }
    let start = 10 + usize::from(frame[9]);
    let payload = frame.get(start..).ok_or("name past the end")?;
    let mut reply = BytesMut::with_capacity(9 + payload.len());
    reply.put_u8(REPLY_BINARY);
    reply.put_slice(&frame[1..9]);
    reply.put_slice(payload);
    Ok(reply.freeze())
}

// ---------------------------------------------------------------------------------------------
// A full-duplex WebSocket loop, shared by the minimal server and the generator

/// What a frame handler tells [`pump`].
enum Flow {
    Continue,
    Done,
}

/// How [`pump`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The frame handler said [`Flow::Done`].
    Done,
    /// The peer closed the connection.
    Closed,
}

/// Reads and writes one WebSocket in a single poll loop: every binary message goes to
/// `on_frame`, which may queue frames in `out`; queued frames are fed to tungstenite and
/// flushed once per round (a round reads until the socket has nothing more). Reading pauses
/// while `out` holds `max_out` frames. Reads and writes never wait for each other, so large
/// pipelined messages cannot deadlock.
async fn pump<S, F>(
    ws: &mut WebSocketStream<S>,
    out: &mut VecDeque<Bytes>,
    max_out: usize,
    mut on_frame: F,
) -> Result<Ended, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Bytes, &mut VecDeque<Bytes>) -> Result<Flow, String>,
{
    let mut unflushed = false;
    poll_fn(|cx| {
        loop {
            let mut progress = false;
            while out.len() < max_out {
                match Pin::new(&mut *ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(WsMessage::Binary(frame)))) => {
                        progress = true;
                        if let Flow::Done = on_frame(frame, out)? {
                            return Poll::Ready(Ok(Ended::Done));
                        }
                    }
                    Poll::Ready(Some(Ok(WsMessage::Close(_))) | None) => {
                        return Poll::Ready(Ok(Ended::Closed));
                    }
                    Poll::Ready(Some(Ok(_))) => progress = true,
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.to_string())),
                    Poll::Pending => break,
                }
            }
            while !out.is_empty() {
                match Pin::new(&mut *ws).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let frame = out.pop_front().expect("not empty");
                        Pin::new(&mut *ws)
                            .start_send(WsMessage::Binary(frame))
                            .map_err(|e| e.to_string())?;
                        unflushed = true;
                        progress = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.to_string())),
                    Poll::Pending => break,
                }
            }
            if unflushed {
                match Pin::new(&mut *ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.to_string())),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Load generators

/// Shared between a generator and the measuring harness.
#[derive(Debug, Default)]
struct LoadCounters {
    /// Verified replies so far, all connections.
    replies: AtomicU64,
    /// Set by the harness: send no more requests, wait for the outstanding replies, return.
    stop: AtomicBool,
}

/// What [`LoadGenerator::run`] returns: the whole run, boxed (the trait is used as `dyn`).
type Run<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A source of load. `run` opens `spec.conns` connections to `addr`, keeps `spec.pipeline`
/// requests of `spec.size` payload bytes in flight on each, checks every reply and counts it
/// in `counters.replies`; once `counters.stop` is set it sends no more and returns when every
/// request sent was answered. `ready` is called once all connections are established.
///
/// [`TungsteniteGenerator`] is the baseline; [`ClientGenerator`] is our own client.
trait LoadGenerator: Sync {
    fn name(&self) -> &'static str;

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a>;
}

/// Raw tokio-tungstenite connections, one [`pump`] task each: the cheapest load we can make,
/// so the server is what limits throughput as far as possible.
struct TungsteniteGenerator;

impl LoadGenerator for TungsteniteGenerator {
    fn name(&self) -> &'static str {
        "tokio-tungstenite"
    }

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a> {
        Box::pin(async move {
            let config = WebSocketConfig::default()
                .max_message_size(Some(spec.max_message_size()))
                .max_frame_size(Some(spec.max_message_size()));
            let mut conns = Vec::with_capacity(spec.conns);
            for _ in 0..spec.conns {
                conns.push(connect(addr, config).await?);
            }
            let mut tasks = tokio::task::JoinSet::new();
            for ws in conns {
                tasks.spawn(drive_connection(ws, spec, Arc::clone(&counters)));
            }
            while let Some(joined) = tasks.join_next().await {
                joined??;
            }
            Ok(())
        })
    }
}

/// Our own [`Client`](tokio_webwire::Client): one per connection, `P` request loops on each
/// (a request, its reply checked, the next request), all multiplexed by the client.
struct ClientGenerator;

impl LoadGenerator for ClientGenerator {
    fn name(&self) -> &'static str {
        "tokio-webwire client"
    }

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a> {
        Box::pin(async move {
            let payload = Payload::binary(
                (0..spec.size)
                    .map(|i| (i % 251) as u8 + 1)
                    .collect::<Vec<u8>>(),
            );
            let mut loops = tokio::task::JoinSet::new();
            for _ in 0..spec.conns {
                let client = tokio_webwire::Client::builder()
                    .reconnect(tokio_webwire::client::Reconnect::Off)
                    .max_message_size(spec.max_message_size())
                    .connect(format!("ws://{addr}/"))
                    .await?;
                for _ in 0..spec.pipeline {
                    let (client, payload, counters) =
                        (client.clone(), payload.clone(), Arc::clone(&counters));
                    loops.spawn(async move {
                        const ECHO: Name = Name::from_static("echo");
                        while !counters.stop.load(Ordering::Relaxed) {
                            let reply = client.request(&ECHO, payload.clone()).await?;
                            if reply != payload {
                                return Err::<(), BoxError>(
                                    "reply differs from the request".into(),
                                );
                            }
                            counters.replies.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    });
                }
            }
            while let Some(joined) = loops.join_next().await {
                joined??;
            }
            Ok(())
        })
    }
}

/// Opens a WebSocket to `addr` and reads the server's first message, which must be an
/// AcceptConf.
async fn connect(addr: SocketAddr, config: WebSocketConfig) -> Result<WebSocketStream<TcpStream>> {
    Ok(connect_conf(addr, config).await?.0)
}

/// [`connect`], and the AcceptConf parsed.
async fn connect_conf(
    addr: SocketAddr,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<TcpStream>, AcceptConf)> {
    let socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let url = format!("ws://{addr}/");
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, socket, Some(config)).await?;
    match ws.next().await {
        Some(Ok(WsMessage::Binary(frame))) => match Message::parse(frame)? {
            Message::AcceptConf(conf) => Ok((ws, conf)),
            other => Err(format!("expected AcceptConf, got {other:?}").into()),
        },
        other => Err(format!("expected AcceptConf, got {other:?}").into()),
    }
}

/// The requests one connection has sent and not yet seen answered. Ids are a counter; a
/// window of flags from the oldest unanswered id catches unknown and duplicate replies.
#[derive(Debug, Default)]
struct Outstanding {
    /// The oldest id not yet answered.
    base: u64,
    /// The next id to send.
    next: u64,
    /// For ids `base..next`: answered yet?
    answered: VecDeque<bool>,
    in_flight: usize,
}

impl Outstanding {
    fn send(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        self.answered.push_back(false);
        self.in_flight += 1;
        id
    }

    fn answer(&mut self, id: u64) -> Result<(), String> {
        if id < self.base || id >= self.next {
            return Err(format!(
                "reply to id {id}, never sent (sent {}..{})",
                self.base, self.next
            ));
        }
        let slot = &mut self.answered[(id - self.base) as usize];
        if *slot {
            return Err(format!("second reply to id {id}"));
        }
        *slot = true;
        self.in_flight -= 1;
        while self.answered.front() == Some(&true) {
            self.answered.pop_front();
            self.base += 1;
        }
        Ok(())
    }
}

/// One connection of [`TungsteniteGenerator`]: P requests first, then one more per reply.
async fn drive_connection(
    mut ws: WebSocketStream<TcpStream>,
    spec: LoadSpec,
    counters: Arc<LoadCounters>,
) -> Result<()> {
    let payload: Vec<u8> = (0..spec.size).map(|i| (i % 251) as u8 + 1).collect();
    // The codec builds the frame once; each request is a copy with its id patched in.
    let template = Message::request(
        RequestId::from(0),
        Name::from_static("echo"),
        Payload::binary(payload.clone()),
    )
    .encode()?;
    let request = |id: u64| {
        let mut frame = BytesMut::from(&template[..]);
        frame[1..9].copy_from_slice(&id.to_le_bytes());
        frame.freeze()
    };
    let mut state = Outstanding::default();
    let mut out: VecDeque<Bytes> = (0..spec.pipeline).map(|_| request(state.send())).collect();
    let ended = pump(&mut ws, &mut out, usize::MAX, |reply, out| {
        if reply.len() != 9 + spec.size || reply[0] != REPLY_BINARY {
            return Err(format!(
                "bad reply: type {:#04x}, {} bytes (expected {:#04x}, {})",
                reply.first().copied().unwrap_or(0),
                reply.len(),
                REPLY_BINARY,
                9 + spec.size
            ));
        }
        let id = u64::from_le_bytes(reply[1..9].try_into().expect("8 bytes"));
        state.answer(id)?;
        // All of a small payload, the ends of a large one.
        let data = &reply[9..];
        let checked = if spec.size <= 256 {
            data == &payload[..]
        } else {
            data[..64] == payload[..64] && data[spec.size - 64..] == payload[spec.size - 64..]
        };
        if !checked {
            return Err(format!("reply to id {id}: payload differs"));
        }
        counters.replies.fetch_add(1, Ordering::Relaxed);
        if !counters.stop.load(Ordering::Relaxed) {
            out.push_back(request(state.send()));
        } else if state.in_flight == 0 {
            return Ok(Flow::Done);
        }
        Ok(Flow::Continue)
    })
    .await?;
    if ended != Ended::Done {
        return Err(format!("server closed with {} requests unanswered", state.in_flight).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// What one load run against one server measured.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    requests: u64,
    elapsed: Duration,
    /// Server process CPU time in the measured window.
    server_cpu: Option<Duration>,
    /// This process's CPU time (the generator) in the measured window.
    client_cpu: Duration,
    size: usize,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn mib_per_s(&self) -> f64 {
        self.rate() * self.size as f64 / (1024.0 * 1024.0)
    }

    fn server_us_per_req(&self) -> Option<f64> {
        self.server_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64)
    }

    /// CPU use as a fraction of one core.
    fn load(cpu: Duration, elapsed: Duration) -> f64 {
        cpu.as_secs_f64() / elapsed.as_secs_f64()
    }
}

/// Runs `generator` against `addr`: connects, warms up, measures, stops and checks that every
/// request was answered.
async fn measure(
    generator: &dyn LoadGenerator,
    addr: SocketAddr,
    server_pid: Option<u32>,
    spec: LoadSpec,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement> {
    let counters = Arc::new(LoadCounters::default());
    let mut load = generator.run(addr, spec, Arc::clone(&counters));
    let server_cpu =
        || -> Result<Option<u64>> { server_pid.map(|pid| cpu_ns(&pid.to_string())).transpose() };
    // Drive the generator while the harness sleeps; it must not finish on its own.
    let window = async {
        tokio::time::sleep(warmup).await;
        let start = (
            counters.replies.load(Ordering::Relaxed),
            Instant::now(),
            server_cpu()?,
            cpu_ns("self")?,
        );
        tokio::time::sleep(duration).await;
        let end = (
            counters.replies.load(Ordering::Relaxed),
            Instant::now(),
            server_cpu()?,
            cpu_ns("self")?,
        );
        Ok::<_, BoxError>((start, end))
    };
    tokio::pin!(window);
    let (start, end) = tokio::select! {
        result = &mut load => {
            result?;
            return Err(format!("the {} generator stopped early", generator.name()).into());
        }
        window = &mut window => window?,
    };
    counters.stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .map_err(|_| "outstanding replies did not arrive within 30 s")??;
    if end.0 == start.0 {
        return Err("no replies in the measured window".into());
    }
    Ok(Measurement {
        requests: end.0 - start.0,
        elapsed: end.1 - start.1,
        server_cpu: match (start.2, end.2) {
            (Some(a), Some(b)) => Some(Duration::from_nanos(b - a)),
            _ => None,
        },
        client_cpu: Duration::from_nanos(end.3 - start.3),
        size: spec.size,
    })
}

fn run_main(opts: &Options, smoke: bool) -> Result<()> {
    let (default_configs, default_warmup, default_duration, default_idle) = if smoke {
        ("1x4x16,2x2x100k", 0.1, 0.3, 0)
    } else {
        (DEFAULT_CONFIGS, 1.0, 3.0, 10_000)
    };
    let specs = LoadSpec::parse_list(opts.str_or("configs", default_configs))?;
    let warmup = opts.secs_or("warmup", default_warmup)?;
    let duration = opts.secs_or("duration", default_duration)?;
    let impls = opts.impls()?;
    let server_threads = opts.size_or("server-threads", 1)?;
    let client_threads = opts.size_or("client-threads", 1)?;
    let idle_conns = opts.size_or("idle-conns", default_idle)?;
    let repeat = opts.size_or("repeat", 1)?.max(1);
    let generators = opts.generators()?;
    if smoke {
        println!("smoke check (run with `cargo bench --bench load` for figures)");
    }
    let rt = runtime(client_threads)?;
    let mut tables = Vec::new();
    for generator in generators {
        println!(
            "load: {} generator, {client_threads} client thread(s); servers: {server_threads} worker thread(s); \
             warm-up {warmup:?}, measured {duration:?}",
            generator.name()
        );
        let mut rows = Vec::new();
        for spec in &specs {
            let mut results = Vec::new();
            for &which in impls.iter().cycle().take(impls.len() * repeat) {
                let server = ServerProcess::spawn(
                    which,
                    spec.max_message_size(),
                    spec.pipeline.max(64),
                    server_threads,
                )?;
                let m = rt.block_on(measure(
                    generator,
                    server.addr,
                    Some(server.pid()),
                    *spec,
                    warmup,
                    duration,
                ))?;
                println!(
                    "  {:<22} {which:<8} {:>10.0} req/s {:>9.1} MiB/s  server {:>6.2} µs/req ({:>3.0}% of a core)  client {:>3.0}%",
                    spec.to_string(),
                    m.rate(),
                    m.mib_per_s(),
                    m.server_us_per_req().unwrap_or(f64::NAN),
                    m.server_cpu
                        .map_or(f64::NAN, |c| 100.0 * Measurement::load(c, m.elapsed)),
                    100.0 * Measurement::load(m.client_cpu, m.elapsed),
                );
                results.push((which, m));
            }
            rows.push((*spec, results));
        }
        tables.push((generator.name(), rows));
    }
    for (name, rows) in &tables {
        println!();
        println!("load from the {name} generator:");
        print_table(rows);
    }
    if let [(raw, raw_rows), (client, client_rows)] = &tables[..] {
        println!();
        println!("| config | ours ← {client} req/s | ours ← {raw} req/s | ratio (≥ 0.9) |");
        println!("|---|---:|---:|---:|");
        for ((spec, by_client), (_, by_raw)) in client_rows.iter().zip(raw_rows) {
            let rate = |results| summarize(results, Impl::Ours).map(|s| s.rate);
            if let (Some(c), Some(r)) = (rate(by_client), rate(by_raw)) {
                println!("| {spec} | {c:.0} | {r:.0} | {:.2} |", c / r);
            }
        }
    }
    if idle_conns > 0 {
        println!();
        idle_report(idle_conns, &impls, server_threads)?;
    }
    Ok(())
}

/// The median of each figure over the runs of one server (with `--repeat`).
#[derive(Debug, Clone, Copy)]
struct Summary {
    rate: f64,
    mib_per_s: f64,
    us_per_req: Option<f64>,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn summarize(results: &[(Impl, Measurement)], which: Impl) -> Option<Summary> {
    let runs: Vec<Measurement> = results
        .iter()
        .filter(|(w, _)| *w == which)
        .map(|(_, m)| *m)
        .collect();
    Some(Summary {
        rate: median(runs.iter().map(Measurement::rate).collect())?,
        mib_per_s: median(runs.iter().map(Measurement::mib_per_s).collect())?,
        us_per_req: median(
            runs.iter()
                .filter_map(Measurement::server_us_per_req)
                .collect(),
        ),
    })
}

fn print_table(rows: &[(LoadSpec, Vec<(Impl, Measurement)>)]) {
    println!();
    println!(
        "| config | ours req/s | minimal req/s | ratio (≥ 0.9) | ours MiB/s | ours CPU µs/req | minimal CPU µs/req | ratio (≤ 1.5) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    let show = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    for (spec, results) in rows {
        let ours = summarize(results, Impl::Ours);
        let minimal = summarize(results, Impl::Minimal);
        let rate = |s: Option<Summary>| s.map(|s| s.rate);
        let cpu = |s: Option<Summary>| s.and_then(|s| s.us_per_req);
        println!(
            "| {spec} | {} | {} | {} | {} | {} | {} | {} |",
            show(rate(ours), 0),
            show(rate(minimal), 0),
            ratio(rate(ours), rate(minimal)),
            show(ours.map(|s| s.mib_per_s), 1),
            show(cpu(ours), 2),
            show(cpu(minimal), 2),
            ratio(cpu(ours), cpu(minimal)),
        );
    }
}

/// `drive`: load an already-running server (e.g. one under `perf record`).
fn drive_main(opts: &Options) -> Result<()> {
    let addr: SocketAddr = opts.get("addr").ok_or("drive needs --addr")?.parse()?;
    let pid = opts.get("pid").map(str::parse::<u32>).transpose()?;
    let specs = LoadSpec::parse_list(opts.str_or("configs", DEFAULT_CONFIGS))?;
    let warmup = opts.secs_or("warmup", 1.0)?;
    let duration = opts.secs_or("duration", 3.0)?;
    let rt = runtime(opts.size_or("client-threads", 1)?)?;
    for spec in specs {
        for generator in opts.generators()? {
            let m = rt.block_on(measure(generator, addr, pid, spec, warmup, duration))?;
            println!(
                "{spec} ({}): {} requests, {:.0} req/s, {:.1} MiB/s, server {} µs/req",
                generator.name(),
                m.requests,
                m.rate(),
                m.mib_per_s(),
                m.server_us_per_req()
                    .map_or("?".into(), |us| format!("{us:.2}"))
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Idle connections

fn idle_main(opts: &Options) -> Result<()> {
    let conns = opts.size_or("conns", 10_000)?;
    idle_report(conns, &opts.impls()?, opts.size_or("server-threads", 1)?)
}

fn idle_report(conns: usize, impls: &[Impl], server_threads: usize) -> Result<()> {
    // Each connection costs a descriptor here and one in the server.
    let limit = open_files_limit().unwrap_or(1024);
    let conns = if conns + 64 > limit {
        let fit = limit.saturating_sub(64);
        println!(
            "idle: open files limited to {limit}: {fit} connections instead of {conns} \
             (scripts/idle-rss.sh raises the limit)"
        );
        fit
    } else {
        conns
    };
    if conns < 200 {
        return Err("too few connections for an idle measurement".into());
    }
    // One-time costs (runtime, first allocations) land before the first checkpoint, so the
    // marginal figure is what each further connection costs.
    let first = conns / 10;
    let rt = runtime(1)?;
    println!("idle connections: server RSS (KiB), WebSocket handshake and AcceptConf read");
    println!(
        "| server | RSS empty | RSS at {first} | RSS at {conns} | KiB/conn (marginal, ≤ 16) | KiB/conn (from empty) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for &which in impls {
        let server = ServerProcess::spawn(which, 8192, 64, server_threads)?;
        let pid = server.pid();
        let rss = || -> Result<u64> {
            std::thread::sleep(Duration::from_millis(500));
            rss_kib(pid)
        };
        let empty = rss()?;
        let (at_first, at_all) = rt.block_on(async {
            let config = WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(4 * 1024);
            let mut open = Vec::with_capacity(conns);
            open_idle(server.addr, config, first, &mut open).await?;
            let at_first = rss()?;
            open_idle(server.addr, config, conns - first, &mut open).await?;
            let at_all = rss()?;
            Ok::<_, BoxError>((at_first, at_all))
        })?;
        let marginal = (at_all - at_first) as f64 / (conns - first) as f64;
        let average = (at_all - empty) as f64 / conns as f64;
        println!("| {which} | {empty} | {at_first} | {at_all} | {marginal:.1} | {average:.1} |");
    }
    Ok(())
}

/// Opens `n` more connections to `addr`, at most 128 handshakes at a time, into `open`.
async fn open_idle(
    addr: SocketAddr,
    config: WebSocketConfig,
    n: usize,
    open: &mut Vec<WebSocketStream<TcpStream>>,
) -> Result<()> {
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while started < n || !pending.is_empty() {
        while started < n && pending.len() < 128 {
            pending.spawn(connect(addr, config));
            started += 1;
        }
        if let Some(joined) = pending.join_next().await {
            open.push(joined?.map_err(|e| format!("connection {}: {e}", open.len()))?);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Soak

/// The soak server's handler: "notify" sends its payload back as signal "news" before the
/// reply; "login" creates a session (info `user` = the payload) and replies its key; every
/// other request is answered with its payload. Client signals are dropped.
struct SoakHandler;

impl Handler for SoakHandler {
    async fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
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

async fn serve_soak(listener: TcpListener) -> Result<()> {
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
fn soak_main(opts: &Options) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// Stalled clients

/// `stall`: what a server holds for connections whose clients send requests and never read
/// the replies. `--conns` connections each read the AcceptConf, then pipeline binary "echo"
/// requests of the largest size the AcceptConf allows and never read again; each writes
/// until one write made no progress for `--stall` (the server stopped reading), then holds
/// its socket. The server's RSS is sampled once a second until it grew over neither of the
/// last two seconds (at most `--settle`), with all connections still open: our server gets a
/// `--write-timeout` longer than all that.
fn stall_main(opts: &Options) -> Result<()> {
    let conns = opts.size_or("conns", 300)?;
    let stall = opts.secs_or("stall", 2.0)?;
    let settle = opts.secs_or("settle", 30.0)?;
    let write_timeout = opts.secs_or("write-timeout", 120.0)?;
    let server_threads = opts.size_or("server-threads", 1)?;
    let handlers = opts
        .str_or("handlers", "echo,echo-async")
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<EchoKind>>>()?;
    if conns == 0 || stall.is_zero() {
        return Err("--conns and --stall must be positive".into());
    }
    // Each connection costs a descriptor here and one in the server.
    let limit = open_files_limit().unwrap_or(1024);
    if conns + 64 > limit {
        return Err(format!(
            "open files limited to {limit}: too few for {conns} connections (ulimit -n)"
        )
        .into());
    }
    let mut targets = Vec::new();
    for which in opts.impls()? {
        match which {
            Impl::Ours => {
                for &handler in &handlers {
                    let options = vec![
                        ("defaults", "true".to_owned()),
                        ("handler", handler.to_string()),
                        ("write-timeout", write_timeout.as_secs_f64().to_string()),
                    ];
                    targets.push((format!("ours, {handler}"), which, options));
                }
            }
            Impl::Minimal => {
                // The size limit of our defaults, for the same frames.
                let options = vec![("max-message-size", "8192".to_owned())];
                targets.push(("minimal".to_owned(), which, options));
            }
            Impl::Soak => return Err("stall measures ours and minimal only".into()),
        }
    }
    let rt = runtime(1)?;
    println!(
        "stalled clients: {conns} connections pipeline \"echo\" requests of the largest size \
         the AcceptConf allows and never read; a write blocked {stall:?} means the server \
         stopped reading. Ours: default options, write timeout {write_timeout:?}. Server RSS \
         (KiB) before the connections, and once stable (no growth over 2 s, at most {settle:?})"
    );
    println!(
        "| server | RSS before | RSS stalled | KiB/conn | sockets held | KiB sent/conn | frame bytes | stable after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, which, options) in targets {
        let mut server = ServerProcess::spawn_with(which, server_threads, &options)?;
        let pid = server.pid();
        let report = rt.block_on(stall_run(server.addr, pid, conns, stall, settle))?;
        if server.exited() {
            return Err(format!("{label}: the server process exited").into());
        }
        let StallReport {
            before,
            after,
            files_before,
            files_after,
            sent,
            frame_len,
            stable_after,
        } = report;
        let per_conn = (after as f64 - before as f64) / conns as f64;
        let held = files_after.saturating_sub(files_before);
        let stable = stable_after.map_or(format!("not in {settle:?}"), |t| {
            format!("{:.0} s", t.as_secs_f64())
        });
        println!(
            "| {label} | {before} | {after} | {per_conn:.1} | {held}/{conns} | {:.0} | {frame_len} | {stable} |",
            sent as f64 / conns as f64 / 1024.0,
        );
        if held < conns {
            return Err(format!(
                "{label}: the server holds {held} of {conns} connections: it dropped some"
            )
            .into());
        }
    }
    Ok(())
}

/// What [`stall_run`] saw of one server.
#[derive(Debug)]
struct StallReport {
    /// Server RSS (KiB) before the connections, and the last sample with them stalled.
    before: u64,
    after: u64,
    /// Files open in the server before the connections, and at the last sample.
    files_before: usize,
    files_after: usize,
    /// Request bytes written in all (whole frames handed to the kernel).
    sent: u64,
    frame_len: usize,
    /// From the last connection stalling to a stable RSS; `None` if it never was.
    stable_after: Option<Duration>,
}

async fn stall_run(
    addr: SocketAddr,
    pid: u32,
    conns: usize,
    stall: Duration,
    settle: Duration,
) -> Result<StallReport> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024);
    // One request of the largest size, answered in full: the frame is within the limit,
    // and the server's one-time costs land before the first sample.
    let (mut probe, conf) = connect_conf(addr, config).await?;
    let frame = stall_frame(&conf)?;
    probe.send(WsMessage::Binary(frame.clone())).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), probe.next())
        .await
        .map_err(|_| "no reply to the probe within 10 s")?;
    let expected = echo_reply(&frame)?;
    match reply {
        Some(Ok(WsMessage::Binary(reply))) if reply == expected => {}
        other => return Err(format!("probe: expected the echo reply, got {other:?}").into()),
    }
    probe.close(None).await?;
    drop(probe);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let files_before = open_files(pid)?;

    let handshakes = Arc::new(tokio::sync::Semaphore::new(128));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let handshakes = Arc::clone(&handshakes);
        tasks.spawn(async move {
            let (ws, conf) = {
                let _permit = handshakes.acquire().await?;
                connect_conf(addr, config).await?
            };
            stall_connection(ws, &conf, stall).await
        });
    }
    let mut held = Vec::with_capacity(conns);
    let mut sent = 0;
    while let Some(joined) = tasks.join_next().await {
        let (ws, bytes) = joined??;
        held.push(ws);
        sent += bytes;
    }
    let stalled = Instant::now();
    let mut samples = vec![rss_kib(pid)?];
    // No growth over the last two intervals.
    let stable = |s: &[u64]| matches!(s, [.., a, b, c] if b <= a && c <= b);
    let stable_after = loop {
        if stable(&samples) {
            break Some(stalled.elapsed());
        }
        if stalled.elapsed() + Duration::from_secs(1) > settle {
            break None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(rss_kib(pid)?);
    };
    let after = *samples.last().expect("one sample at least");
    let files_after = open_files(pid)?;
    drop(held);
    Ok(StallReport {
        before,
        after,
        files_before,
        files_after,
        sent,
        frame_len: frame.len(),
        stable_after,
    })
}

/// A binary "echo" request exactly as large as the AcceptConf's message size limit.
fn stall_frame(conf: &AcceptConf) -> Result<Bytes> {
    const ECHO: Name = Name::from_static("echo");
    let limit = usize::try_from(conf.message_buffer_size)?;
    let header =
        Message::request(RequestId::from(0), ECHO, Payload::binary(Vec::new())).encoded_len()?;
    let payload: Vec<u8> = (0..limit.checked_sub(header).ok_or("limit below a header")?)
        .map(|i| (i % 251) as u8 + 1)
        .collect();
    let frame = Message::request(RequestId::from(0), ECHO, Payload::binary(payload)).encode()?;
    if frame.len() != limit {
        return Err(format!("a {}-byte frame for a limit of {limit}", frame.len()).into());
    }
    Ok(frame)
}

/// Pipelines `frame` (with ids 0, 1, ..) on `ws` until a write makes no progress for
/// `stall`; never reads. Returns the socket, to be held open, and the bytes of the frames
/// written in full.
async fn stall_connection(
    mut ws: WebSocketStream<TcpStream>,
    conf: &AcceptConf,
    stall: Duration,
) -> Result<(WebSocketStream<TcpStream>, u64)> {
    let template = stall_frame(conf)?;
    let mut sent = 0u64;
    for id in 0u64.. {
        let mut frame = BytesMut::from(&template[..]);
        frame[1..9].copy_from_slice(&id.to_le_bytes());
        // `send` flushes: done once the kernel took the whole frame.
        match tokio::time::timeout(stall, ws.send(WsMessage::Binary(frame.freeze()))).await {
            Ok(Ok(())) => sent += template.len() as u64,
            Ok(Err(error)) => {
                return Err(format!("write of request {id} failed: {error}").into());
            }
            Err(_) => break,
        }
    }
    Ok((ws, sent))
}
