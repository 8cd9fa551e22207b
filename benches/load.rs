//! Server load benchmark: our server against minimal echo servers.
//!
//! The servers (`--impls`, each chosen by name):
//!
//! - `ours`: our [`Server`] with an echo handler;
//! - `minimal`: the reference, a minimal tokio-tungstenite echo loop with generous buffers:
//!   an 8 KiB read chunk (`read_buffer_size`; tungstenite's default is 128 KiB) and a
//!   128 KiB write buffer (`write_buffer_size`, tungstenite's default), its
//!   `max_write_buffer_size` 128 KiB + 2 × the size limit + 1 KiB;
//! - `minimal-4k16k`: the same loop with a 4 KiB read chunk and a 16 KiB write buffer (the
//!   sizes of our transport before issue 22): beside `minimal`, what the buffers alone cost;
//! - `fastwebsockets`: a minimal fastwebsockets echo loop (handshake by its `upgrade` on
//!   hyper 1, its own read buffer: 8 KiB, grown to the frame), the reference for memory per
//!   connection and a second one for CPU; fastwebsockets writes each frame at once, so its
//!   replies are gathered ([`GatherWrites`]) and written when there is nothing more to read;
//! - `fastwebsockets-direct`: the same without the gathering, a write per reply.
//!
//! Each server runs in its own process (this binary re-executed as `serve --impl NAME`,
//! printing its address on stdout), so the load generator in this process never shares a
//! runtime with it, and the server's CPU time (`/proc/<pid>/task/*/schedstat`) and memory
//! (`VmRSS`) can be read on their own. The load generator is a separate piece behind the
//! [`LoadGenerator`] trait: `C` connections, each with `P` binary requests named `"echo"` of
//! `S` payload bytes in flight; every reply is checked (type, an outstanding id, length,
//! payload bytes).
//!
//! The default run (`cargo bench --bench load`, about 2 minutes) prints the CPU table (every
//! default config against every server), the client as load generator, idle RSS per
//! connection at 10 000 connections and the burst-then-idle RSS at 2 000.
//!
//! ```text
//! cargo bench --bench load                       # the tables below
//! cargo bench --bench load -- run --configs 4x64x16 --duration 5 --repeat 3
//! cargo bench --bench load -- run --impls ours,minimal,minimal-4k16k --configs 4x64x4k
//! cargo bench --bench load -- clients --configs 4x64x4k,4x64x16  # our Client as generator
//! cargo bench --bench load -- idle --conns 10000 # or scripts/idle-rss.sh (raises ulimit -n)
//! cargo bench --bench load -- burst --conns 10000  # RSS after every connection pipelined 32 × 4 KiB once
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
//! | `run` (default) | `--generators` (`raw`: tokio-tungstenite; also `client`, `client-unordered`, `client-pipeline`: our `Client`, see `clients`), `--configs CxPxS,..` (`1x1x16,16x1x16,4x64x16,4x64x1k,4x64x4k,4x16x256k`), `--warmup` (1), `--duration` (3), `--impls` (`ours,minimal,fastwebsockets`), `--server-threads` (1), `--client-threads` (1), `--repeat` (1; medians are reported), `--client-configs` (`4x64x4k,4x64x16`; `none` skips the `clients` table), `--idle-conns` (10000; 0 skips), `--burst-conns` (2000; 0 skips), and `burst`'s `--requests`, `--size`, `--quiet`, `--settle` |
//! | `clients` | `--configs` (`4x64x4k,4x64x16`), `--generators` (`raw,client,client-unordered,client-pipeline`: the raw generator, our `Client` with a task per request, our `Client` with one task per connection driving its requests as a `FuturesUnordered`, our `Client` with one `Pipeline` per connection), `--impl` (`ours`: the server they load), `--warmup`, `--duration`, `--repeat`, `--server-threads`, `--client-threads` |
//! | `idle` | `--conns` (10000), `--impls` (`ours,minimal,fastwebsockets`), `--server-threads`, `--quiet`, `--settle` |
//! | `burst` | `--conns` (2000), `--requests` (32), `--size` (4k), `--impls` (`ours,minimal,fastwebsockets`), `--server-threads` (1), `--quiet` (0.5: RSS unchanged this long is settled), `--settle` (10: bound on waiting for it) |
//! | `soak` | `--duration` (600), `--sample` (10), `--clients` (16), `--rate` (2000 requests/s in all), `--churn-rate` (50 connects/s), `--rss-margin` (4m bytes), `--server-threads` (1) |
//! | `stall` | `--conns` (300), `--impls` (`ours,minimal`; ours once per handler), `--handlers` (`echo,echo-async`), `--stall` (2: a write blocked this long means the server stopped reading), `--settle` (30: bound on waiting for a stable RSS), `--write-timeout` (120, given to our server), `--write-batch` (our server's default), `--server-threads` (1) |
//! | `serve` | `--impl` (`ours`), `--max-message-size` (8192), `--max-concurrent` (64), `--threads` (1), `--handler` (`echo`: answers at once; `echo-async`: yields once first, so it runs on a task of its own; `match20` / `router20`: the echo as one of 20 names, in a hand-written `match` / on a router), `--defaults` (`false`; `true`: our server with the builder's default options, only the handler, `--write-timeout` and `--write-batch` set), `--write-timeout` (the builder's 10), `--write-batch` (the builder's `write_batch_size`, 32k) |
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
const DEFAULT_CONFIGS: &str = "1x1x16,16x1x16,4x64x16,4x64x1k,4x64x4k,4x16x256k";

/// The loads at which our `Client` is compared with the raw generator (issue 22, point 4).
const CLIENT_CONFIGS: &str = "4x64x4k,4x64x16";

/// The servers of the CPU table and of the memory modes.
const DEFAULT_IMPLS: &str = "ours,minimal,fastwebsockets";

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
        "burst" => burst_main(&opts),
        "clients" => clients_main(&opts),
        "drive" => drive_main(&opts),
        "soak" => soak_main(&opts),
        "stall" => stall_main(&opts),
        other => Err(format!(
            "unknown mode {other:?} (run, clients, idle, burst, soak, stall, serve, drive)"
        )
        .into()),
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

    /// `--impls a,b,..`, `default` if not given.
    fn impls_or(&self, default: &str) -> Result<Vec<Impl>> {
        self.str_or("impls", default)
            .split(',')
            .map(str::parse)
            .collect()
    }

    /// `--generators raw,client,client-unordered,client-pipeline`, `default` if not given.
    fn generators_or(&self, default: &str) -> Result<Vec<&'static dyn LoadGenerator>> {
        self.str_or("generators", default)
            .split(',')
            .map(|name| match name {
                "raw" => Ok(&TungsteniteGenerator as &dyn LoadGenerator),
                "client" => Ok(&ClientGenerator {
                    how: Pipelining::Tasks,
                } as &dyn LoadGenerator),
                "client-unordered" => Ok(&ClientGenerator {
                    how: Pipelining::Unordered,
                } as &dyn LoadGenerator),
                "client-pipeline" => Ok(&ClientGenerator {
                    how: Pipelining::Pipeline,
                } as &dyn LoadGenerator),
                other => Err(format!(
                    "unknown generator {other:?} (raw, client, client-unordered, client-pipeline)"
                )
                .into()),
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
        /// [`serve_minimal`]: tokio-tungstenite and nothing else, [`Buffers::GENEROUS`].
        Minimal = "minimal",
        /// [`serve_minimal`] with [`Buffers::SMALL`].
        MinimalSmall = "minimal-4k16k",
        /// [`serve_fastwebsockets`]: fastwebsockets (and hyper for the handshake), its writes
        /// gathered by [`GatherWrites`].
        FastWebSockets = "fastwebsockets",
        /// [`serve_fastwebsockets`] writing each reply at once, as fastwebsockets' own echo
        /// example does.
        FastWebSocketsDirect = "fastwebsockets-direct",
        /// Our server with [`SoakHandler`] (echo, signals back, sessions): for `soak`.
        Soak = "soak",
    }
}

impl Impl {
    /// What the server is, for the printed header.
    fn describe(self) -> String {
        match self {
            Impl::Ours => "tokio-webwire's Server, echo handler".into(),
            Impl::Minimal => format!("minimal tokio-tungstenite echo loop, {}", Buffers::GENEROUS),
            Impl::MinimalSmall => format!(
                "minimal tokio-tungstenite echo loop, {} (our transport's before issue 22)",
                Buffers::SMALL
            ),
            Impl::FastWebSockets => "minimal fastwebsockets echo loop (hyper 1 upgrade; its \
                8 KiB read buffer grown to the frame), replies gathered and written when there \
                is nothing more to read or at 128 KiB (buffer freed once written)"
                .into(),
            Impl::FastWebSocketsDirect => "minimal fastwebsockets echo loop, each reply \
                written at once (a system call per reply, as in fastwebsockets' example)"
                .into(),
            Impl::Soak => "tokio-webwire's Server, soak handler".into(),
        }
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
        write_batch: opts.get("write-batch").map(parse_size).transpose()?,
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
            Impl::Minimal => serve_minimal(listener, limit, Buffers::GENEROUS).await,
            Impl::MinimalSmall => serve_minimal(listener, limit, Buffers::SMALL).await,
            Impl::FastWebSockets => serve_fastwebsockets(listener, limit, true).await,
            Impl::FastWebSocketsDirect => serve_fastwebsockets(listener, limit, false).await,
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
    /// `write_batch_size`; the builder's default if not given.
    write_batch: Option<usize>,
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
    if let Some(bytes) = opts.write_batch {
        builder = builder.write_batch_size(bytes);
    }
    let server = builder.build()?;
    server.serve(listener).await;
    Ok(())
}

/// The read chunk and the write buffer of a minimal tokio-tungstenite server.
#[derive(Debug, Clone, Copy)]
struct Buffers {
    /// `read_buffer_size`: the bytes tungstenite asks the socket for in one read.
    read: usize,
    /// `write_buffer_size`: frames are gathered up to this before a write.
    write: usize,
}

impl Buffers {
    /// The reference: what a server tuned for throughput takes. An 8 KiB read chunk
    /// (tungstenite's default, 128 KiB, would be that much memory per connection) and
    /// tungstenite's default 128 KiB write buffer: few system calls per request.
    const GENEROUS: Buffers = Buffers {
        read: 8 * 1024,
        write: 128 * 1024,
    };

    /// The sizes of our transport before issue 22 (4 KiB / 16 KiB): beside
    /// [`Buffers::GENEROUS`], what the buffer sizes alone cost.
    const SMALL: Buffers = Buffers {
        read: 4 * 1024,
        write: 16 * 1024,
    };

    /// The hard cap on the write buffer: the write buffer, then room for one more frame of
    /// the largest size (twice, as our transport allows) and its header.
    fn max_write(self, limit: usize) -> usize {
        self.write + limit * 2 + 1024
    }

    /// The tungstenite configuration of a minimal server with these buffers.
    fn config(self, limit: usize) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read)
            .write_buffer_size(self.write)
            .max_write_buffer_size(self.max_write(limit))
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit))
    }
}

impl fmt::Display for Buffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} KiB read chunk, {} KiB write buffer (max: that + 2 × the size limit + 1 KiB)",
            self.read / 1024,
            self.write / 1024
        )
    }
}

/// The AcceptConf the minimal servers send first, the same as ours, so the generator sees
/// no difference.
fn accept_conf_frame(limit: usize) -> Result<Bytes> {
    Ok(Message::AcceptConf(AcceptConf::new(
        Duration::from_secs(60),
        u32::try_from(limit)?,
    ))
    .encode()?)
}

/// The baseline: tokio-tungstenite's own handshake, then per connection one task that reads
/// requests and writes replies in the same poll loop ([`pump`]: no channel, no task per
/// request, one flush per batch). It parses the type byte, the id and the name length only.
async fn serve_minimal(listener: TcpListener, limit: usize, buffers: Buffers) -> Result<()> {
    let accept_conf = accept_conf_frame(limit)?;
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let accept_conf = accept_conf.clone();
        tokio::spawn(async move {
            let config = buffers.config(limit);
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

/// The memory reference: fastwebsockets as its own echo example uses it. hyper serves the
/// HTTP/1 upgrade request (fastwebsockets' `upgrade`), then per connection one task reads a
/// frame and writes its reply, the same [`echo_reply`] as the tokio-tungstenite loop.
/// fastwebsockets has no write buffer: each frame is a write of its own. With `gather`, the
/// socket is wrapped in [`GatherWrites`], so that pipelined replies go out in one write as
/// the tokio-tungstenite loop's do (without it, a system call per reply is most of its CPU
/// at 1 KiB: 4.2 µs per request against 0.6 in a smoke run).
async fn serve_fastwebsockets(listener: TcpListener, limit: usize, gather: bool) -> Result<()> {
    let accept_conf = accept_conf_frame(limit)?;
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let accept_conf = accept_conf.clone();
        if gather {
            tokio::spawn(fastwebsockets_upgrade(
                GatherWrites::new(socket),
                accept_conf,
                limit,
            ));
        } else {
            tokio::spawn(fastwebsockets_upgrade(socket, accept_conf, limit));
        }
    }
}

/// Serves the HTTP/1 upgrade request of one connection of [`serve_fastwebsockets`], then
/// its WebSocket on a task of its own.
async fn fastwebsockets_upgrade<S>(socket: S, accept_conf: Bytes, limit: usize)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        let accept_conf = accept_conf.clone();
        async move {
            let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut request)?;
            tokio::spawn(async move {
                let echoed =
                    async { fastwebsockets_echo(upgrade.await?, accept_conf, limit).await };
                match echoed.await {
                    Err(error) if !peer_gone(&error) => eprintln!("fastwebsockets echo: {error}"),
                    _ => {}
                }
            });
            Ok::<_, fastwebsockets::WebSocketError>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
        .with_upgrades()
        .await;
}

/// Whether a fastwebsockets connection ended because the peer went away (the load
/// generators end by dropping their sockets; the stalled clients' are reset).
fn peer_gone(error: &BoxError) -> bool {
    use fastwebsockets::WebSocketError;
    match error.downcast_ref::<WebSocketError>() {
        Some(WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed) => true,
        Some(WebSocketError::IoError(error)) => matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// One connection of [`serve_fastwebsockets`]: the AcceptConf, then a reply to each binary
/// request until the peer closes.
async fn fastwebsockets_echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: fastwebsockets::WebSocket<S>,
    accept_conf: Bytes,
    limit: usize,
) -> Result<()> {
    use fastwebsockets::{Frame, OpCode, Payload as WsPayload};
    // fastwebsockets refuses a frame of its limit or more: a frame of `limit` bytes passes.
    ws.set_max_message_size(limit + 1);
    ws.write_frame(Frame::binary(WsPayload::Borrowed(&accept_conf)))
        .await?;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Binary if frame.fin => {
                let reply = echo_reply(&frame.payload)?;
                ws.write_frame(Frame::binary(WsPayload::Borrowed(&reply)))
                    .await?;
            }
            OpCode::Close => return Ok(()),
            other => return Err(format!("unexpected frame: {other:?}, fin {}", frame.fin).into()),
        }
    }
}

/// A connection whose writes are gathered in memory and written out when a read finds
/// nothing to read (every request read so far has its reply), or before a write once
/// [`GatherWrites::MAX`] bytes wait: what the tokio-tungstenite loop's flush per round and
/// 128 KiB write buffer do, for a library that writes each frame at once. Holds no memory
/// while nothing waits (the buffer is freed once written).
struct GatherWrites<S> {
    inner: S,
    /// Written to us, not yet to `inner`.
    out: Vec<u8>,
    /// How much of `out` went to `inner`.
    sent: usize,
}

impl<S> GatherWrites<S> {
    /// Writes are passed on before a write once this many bytes wait.
    const MAX: usize = 128 * 1024;

    fn new(inner: S) -> Self {
        GatherWrites {
            inner,
            out: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> GatherWrites<S> {
    /// Writes out all that waits, then frees the buffer.
    fn poll_send(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        (self.out, self.sent) = (Vec::new(), 0);
        Poll::Ready(Ok(()))
    }

    /// Room for more: what waits is written out first once it reaches `MAX`. (The buffer
    /// grows as `Vec` does: a first reserve of 16 KiB changed neither the CPU nor the idle
    /// RSS measurably in smoke runs.)
    fn poll_room(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        if self.out.len() >= Self::MAX {
            std::task::ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GatherWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // Nothing more to answer for now: the replies go out.
            Poll::Pending => match this.poll_send(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Pending,
            },
            read => read,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GatherWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_room(cx))?;
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        std::task::ready!(this.poll_room(cx))?;
        for buf in bufs {
            this.out.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
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
    /// What it is, for the header.
    fn name(&self) -> &'static str;

    /// Its `--generators` name, for the tables.
    fn key(&self) -> &'static str;

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a>;
}

/// Raw tokio-tungstenite connections, one [`pump`] task each: the cheapest load we can make,
/// so the server is what limits throughput as far as possible.
struct TungsteniteGenerator;

impl LoadGenerator for TungsteniteGenerator {
    fn name(&self) -> &'static str {
        "tokio-tungstenite"
    }

    fn key(&self) -> &'static str {
        "raw"
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

/// The request name of every load.
const ECHO: Name = Name::from_static("echo");

/// The payload of every request of `size` bytes: no zero byte, not one repeated byte.
fn load_payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8 + 1).collect()
}

/// Our own [`Client`](tokio_webwire::Client), one per connection, used one of the ways a
/// user pipelines (see [`Pipelining`]).
struct ClientGenerator {
    how: Pipelining,
}

/// How [`ClientGenerator`] keeps `P` requests in flight on each connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pipelining {
    /// `P` request loops per connection, each a task of its own (a request, its reply
    /// checked, the next request), all multiplexed by the client.
    Tasks,
    /// One task per connection driving its `P` requests as a `FuturesUnordered` (a reply
    /// checked, the next request pushed).
    Unordered,
    /// One task per connection with a [`Pipeline`](tokio_webwire::client::Pipeline) (a
    /// reply checked, the next request sent).
    Pipeline,
}

impl LoadGenerator for ClientGenerator {
    fn name(&self) -> &'static str {
        match self.how {
            Pipelining::Tasks => "client, a task per request",
            Pipelining::Unordered => "client, FuturesUnordered per connection",
            Pipelining::Pipeline => "client, a Pipeline per connection",
        }
    }

    fn key(&self) -> &'static str {
        match self.how {
            Pipelining::Tasks => "client",
            Pipelining::Unordered => "client-unordered",
            Pipelining::Pipeline => "client-pipeline",
        }
    }

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a> {
        Box::pin(async move {
            let payload = Payload::binary(load_payload(spec.size));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..spec.conns {
                let client = connect_client(addr, spec).await?;
                let (payload, counters) = (payload.clone(), Arc::clone(&counters));
                match self.how {
                    Pipelining::Unordered => {
                        tasks.spawn(unordered_requests(client, spec.pipeline, payload, counters));
                    }
                    Pipelining::Pipeline => {
                        tasks.spawn(pipelined_requests(client, spec.pipeline, payload, counters));
                    }
                    Pipelining::Tasks => {
                        for _ in 0..spec.pipeline {
                            let (client, payload, counters) =
                                (client.clone(), payload.clone(), Arc::clone(&counters));
                            tasks.spawn(async move {
                                while !counters.stop.load(Ordering::Relaxed) {
                                    let reply = client.request(&ECHO, payload.clone()).await;
                                    count_reply(reply, &payload, &counters)?;
                                }
                                Ok(())
                            });
                        }
                    }
                }
            }
            while let Some(joined) = tasks.join_next().await {
                joined??;
            }
            Ok(())
        })
    }
}

/// One connection of [`ClientGenerator`] with [`Pipelining::Unordered`]: `pipeline`
/// requests in flight as a `FuturesUnordered`, one more pushed per reply until the harness
/// says stop.
async fn unordered_requests(
    client: Client,
    pipeline: usize,
    payload: Payload,
    counters: Arc<LoadCounters>,
) -> Result<()> {
    // Borrowed by every request future, so it outlives them.
    let echo = ECHO;
    let mut in_flight: futures_util::stream::FuturesUnordered<_> = (0..pipeline)
        .map(|_| client.request(&echo, payload.clone()))
        .collect();
    while let Some(reply) = in_flight.next().await {
        count_reply(reply, &payload, &counters)?;
        if !counters.stop.load(Ordering::Relaxed) {
            in_flight.push(client.request(&echo, payload.clone()));
        }
    }
    Ok(())
}

/// One connection of [`ClientGenerator`] with [`Pipelining::Pipeline`]: `pipeline`
/// requests in flight through one [`Pipeline`](tokio_webwire::client::Pipeline), one more
/// sent per reply until the harness says stop.
async fn pipelined_requests(
    client: Client,
    pipeline: usize,
    payload: Payload,
    counters: Arc<LoadCounters>,
) -> Result<()> {
    let mut requests = client.pipeline();
    for _ in 0..pipeline {
        requests.send(&ECHO, payload.clone()).await?;
    }
    while let Some((_, reply)) = requests.next().await {
        count_reply(reply, &payload, &counters)?;
        if !counters.stop.load(Ordering::Relaxed) {
            requests.send(&ECHO, payload.clone()).await?;
        }
    }
    Ok(())
}

/// A [`Client`] for the client generators: no reconnecting, the load's size limit.
async fn connect_client(addr: SocketAddr, spec: LoadSpec) -> Result<Client> {
    Ok(Client::builder()
        .reconnect(Reconnect::Off)
        .max_message_size(spec.max_message_size())
        .connect(format!("ws://{addr}/"))
        .await?)
}

/// Checks a reply of a client generator against the request's payload and counts it.
fn count_reply(
    reply: Result<Payload, tokio_webwire::client::RequestError>,
    payload: &Payload,
    counters: &LoadCounters,
) -> Result<()> {
    if reply? != *payload {
        return Err("reply differs from the request".into());
    }
    counters.replies.fetch_add(1, Ordering::Relaxed);
    Ok(())
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

/// Binary "echo" requests of one payload, each a copy of one frame with its id patched in
/// (the codec builds the frame once), and the check of their replies.
struct Requests {
    payload: Vec<u8>,
    template: Bytes,
}

impl Requests {
    fn new(size: usize) -> Result<Self> {
        let payload = load_payload(size);
        let template = Message::request(RequestId::from(0), ECHO, Payload::binary(payload.clone()))
            .encode()?;
        Ok(Requests { payload, template })
    }

    /// The request with id `id`.
    fn frame(&self, id: u64) -> Bytes {
        let mut frame = BytesMut::from(&self.template[..]);
        frame[1..9].copy_from_slice(&id.to_le_bytes());
        frame.freeze()
    }

    /// Checks `reply` (type, length, an outstanding id, payload) and marks its id answered.
    fn answer(&self, reply: &[u8], state: &mut Outstanding) -> Result<(), String> {
        let size = self.payload.len();
        if reply.len() != 9 + size || reply[0] != REPLY_BINARY {
            return Err(format!(
                "bad reply: type {:#04x}, {} bytes (expected {:#04x}, {})",
                reply.first().copied().unwrap_or(0),
                reply.len(),
                REPLY_BINARY,
                9 + size
            ));
        }
        let id = u64::from_le_bytes(reply[1..9].try_into().expect("8 bytes"));
        state.answer(id)?;
        // All of a small payload, the ends of a large one.
        let (data, payload) = (&reply[9..], &self.payload[..]);
        let checked = if size <= 256 {
            data == payload
        } else {
            data[..64] == payload[..64] && data[size - 64..] == payload[size - 64..]
        };
        if !checked {
            return Err(format!("reply to id {id}: payload differs"));
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
    let requests = Requests::new(spec.size)?;
    let mut state = Outstanding::default();
    let mut out: VecDeque<Bytes> = (0..spec.pipeline)
        .map(|_| requests.frame(state.send()))
        .collect();
    let ended = pump(&mut ws, &mut out, usize::MAX, |reply, out| {
        requests.answer(&reply, &mut state)?;
        counters.replies.fetch_add(1, Ordering::Relaxed);
        if !counters.stop.load(Ordering::Relaxed) {
            out.push_back(requests.frame(state.send()));
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

    /// The load generator's CPU (this process's) per request.
    fn client_us_per_req(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
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

/// The options of a load measurement (`run`, `clients`).
#[derive(Debug, Clone, Copy)]
struct LoadOptions {
    warmup: Duration,
    duration: Duration,
    server_threads: usize,
    client_threads: usize,
    /// Runs of each server (or generator), interleaved; medians are reported.
    repeat: usize,
}

impl LoadOptions {
    fn parse(opts: &Options, warmup: f64, duration: f64) -> Result<Self> {
        Ok(LoadOptions {
            warmup: opts.secs_or("warmup", warmup)?,
            duration: opts.secs_or("duration", duration)?,
            server_threads: opts.size_or("server-threads", 1)?,
            client_threads: opts.size_or("client-threads", 1)?,
            repeat: opts.size_or("repeat", 1)?.max(1),
        })
    }
}

/// Starts server `which` for `spec`, loads it with `generator` and prints one line.
fn measure_one(
    rt: &tokio::runtime::Runtime,
    generator: &dyn LoadGenerator,
    which: Impl,
    spec: LoadSpec,
    load: &LoadOptions,
    label: &str,
) -> Result<Measurement> {
    let server = ServerProcess::spawn(
        which,
        spec.max_message_size(),
        spec.pipeline.max(64),
        load.server_threads,
    )?;
    let m = rt.block_on(measure(
        generator,
        server.addr,
        Some(server.pid()),
        spec,
        load.warmup,
        load.duration,
    ))?;
    println!(
        "  {:<22} {label:<21} {:>10.0} req/s {:>9.1} MiB/s  server {:>6.2} µs/req ({:>3.0}% of a core)  \
         generator {:>6.2} µs/req ({:>3.0}%)",
        spec.to_string(),
        m.rate(),
        m.mib_per_s(),
        m.server_us_per_req().unwrap_or(f64::NAN),
        m.server_cpu
            .map_or(f64::NAN, |c| 100.0 * Measurement::load(c, m.elapsed)),
        m.client_us_per_req(),
        100.0 * Measurement::load(m.client_cpu, m.elapsed),
    );
    Ok(m)
}

/// Prints what each server is.
fn print_servers(impls: &[Impl], server_threads: usize) {
    println!("servers, each in its own process with {server_threads} worker thread(s):");
    for which in impls {
        println!("  {:<21} {}", which.to_string(), which.describe());
    }
}

fn run_main(opts: &Options, smoke: bool) -> Result<()> {
    let (configs, client_configs, warmup, duration, idle, burst) = if smoke {
        ("1x4x16,2x2x100k", "1x4x16", 0.1, 0.3, 0, 20)
    } else {
        (DEFAULT_CONFIGS, CLIENT_CONFIGS, 1.0, 3.0, 10_000, 2_000)
    };
    let specs = LoadSpec::parse_list(opts.str_or("configs", configs))?;
    let client_specs = match opts.str_or("client-configs", client_configs) {
        "none" => Vec::new(),
        list => LoadSpec::parse_list(list)?,
    };
    let load = LoadOptions::parse(opts, warmup, duration)?;
    let impls = opts.impls_or(DEFAULT_IMPLS)?;
    let idle_conns = opts.size_or("idle-conns", idle)?;
    let burst = BurstOptions::parse(opts, opts.size_or("burst-conns", burst)?)?;
    if smoke {
        println!("smoke check (run with `cargo bench --bench load` for figures)");
    }
    print_servers(&impls, load.server_threads);
    let rt = runtime(load.client_threads)?;
    for generator in opts.generators_or("raw")? {
        println!();
        println!(
            "load: {} generator, {} client thread(s); warm-up {:?}, measured {:?}, {} run(s) each",
            generator.name(),
            load.client_threads,
            load.warmup,
            load.duration,
            load.repeat,
        );
        let mut rows = Vec::new();
        for spec in &specs {
            let mut results = Vec::new();
            for &which in impls.iter().cycle().take(impls.len() * load.repeat) {
                let m = measure_one(&rt, generator, which, *spec, &load, &which.to_string())?;
                results.push((which, m));
            }
            rows.push((*spec, results));
        }
        println!();
        println!("load from the {} generator:", generator.name());
        print_table(&rows, &impls);
    }
    if !client_specs.is_empty() {
        println!();
        let generators = opts_generators(CLIENT_GENERATORS)?;
        clients_report(&rt, &client_specs, &generators, Impl::Ours, &load)?;
    }
    if idle_conns > 0 {
        println!();
        idle_report(idle_conns, &impls, load.server_threads, burst.settle)?;
    }
    if burst.conns > 0 {
        println!();
        burst_report(&burst, &impls, load.server_threads)?;
    }
    Ok(())
}

/// The generators of the `clients` table: the raw baseline first, then our `Client` used
/// both ways.
const CLIENT_GENERATORS: &str = "raw,client,client-unordered,client-pipeline";

/// Generators by name, without options.
fn opts_generators(names: &str) -> Result<Vec<&'static dyn LoadGenerator>> {
    Options::default().generators_or(names)
}

/// `clients`: our `Client` as the load generator against the raw tokio-tungstenite one.
fn clients_main(opts: &Options) -> Result<()> {
    let specs = LoadSpec::parse_list(opts.str_or("configs", CLIENT_CONFIGS))?;
    let load = LoadOptions::parse(opts, 1.0, 3.0)?;
    let which: Impl = opts.str_or("impl", "ours").parse()?;
    let generators = opts.generators_or(CLIENT_GENERATORS)?;
    print_servers(&[which], load.server_threads);
    println!();
    let rt = runtime(load.client_threads)?;
    clients_report(&rt, &specs, &generators, which, &load)
}

/// Loads server `which` from each generator in turn (interleaved, `repeat` times) and
/// prints, for each load, the throughput and the generator's CPU per request of each, as
/// ratios to the first generator's.
fn clients_report(
    rt: &tokio::runtime::Runtime,
    specs: &[LoadSpec],
    generators: &[&'static dyn LoadGenerator],
    which: Impl,
    load: &LoadOptions,
) -> Result<()> {
    let [base, others @ ..] = generators else {
        return Err("no generator".into());
    };
    println!(
        "the client as load generator: {which} server; {} client thread(s); warm-up {:?}, \
         measured {:?}, {} run(s) each; generators:",
        load.client_threads, load.warmup, load.duration, load.repeat
    );
    for generator in generators {
        println!("  {:<16} {}", generator.key(), generator.name());
    }
    let mut rows = Vec::new();
    for spec in specs {
        let mut results: Vec<(&str, Measurement)> = Vec::new();
        for generator in generators
            .iter()
            .cycle()
            .take(generators.len() * load.repeat)
        {
            let m = measure_one(rt, *generator, which, *spec, load, generator.key())?;
            results.push((generator.key(), m));
        }
        rows.push((*spec, results));
    }
    println!();
    let mut header = format!("| config | {} req/s |", base.key());
    for g in others {
        header += &format!(" {} req/s | ÷ {} (≥ 0.9) |", g.key(), base.key());
    }
    header += &format!(" {} µs/req |", base.key());
    for g in others {
        header += &format!(" {} µs/req | ÷ {} |", g.key(), base.key());
    }
    println!("generator CPU per request: this process's CPU time over the replies it counted");
    println!("{header}");
    println!("|---|{}", "---:|".repeat(1 + 4 * others.len() + 1));
    for (spec, results) in &rows {
        let summary = |key: &str| summarize(results, |k| *k == key);
        let rate = |s: Option<Summary>| s.map(|s| s.rate);
        let cpu = |s: Option<Summary>| s.map(|s| s.client_us_per_req);
        let base = summary(base.key());
        let mut line = format!("| {spec} | {} |", show(rate(base), 0));
        for g in others {
            let s = summary(g.key());
            line += &format!(" {} | {} |", show(rate(s), 0), ratio(rate(s), rate(base)));
        }
        line += &format!(" {} |", show(cpu(base), 2));
        for g in others {
            let s = summary(g.key());
            line += &format!(" {} | {} |", show(cpu(s), 2), ratio(cpu(s), cpu(base)));
        }
        println!("{line}");
    }
    Ok(())
}

/// The median of each figure over the runs of one server (with `--repeat`).
#[derive(Debug, Clone, Copy)]
struct Summary {
    rate: f64,
    mib_per_s: f64,
    us_per_req: Option<f64>,
    client_us_per_req: f64,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The medians of the runs whose key `pick` takes.
fn summarize<K>(results: &[(K, Measurement)], pick: impl Fn(&K) -> bool) -> Option<Summary> {
    let runs: Vec<Measurement> = results
        .iter()
        .filter(|(k, _)| pick(k))
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
        client_us_per_req: median(runs.iter().map(Measurement::client_us_per_req).collect())?,
    })
}

/// `a ÷ b` with two decimals, `-` if either is missing.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// A figure with `digits` decimals, `-` if missing.
fn show(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The CPU table: ours beside every other server, throughput and server CPU per request,
/// each with ours ÷ it (targets of issue 22 against `minimal`: throughput ≥ 0.9; CPU ≤ 1.2,
/// ≤ 1.1 at 256 KiB).
fn print_table(rows: &[(LoadSpec, Vec<(Impl, Measurement)>)], impls: &[Impl]) {
    let others: Vec<Impl> = impls.iter().copied().filter(|w| *w != Impl::Ours).collect();
    let mut header = "| config | ours req/s |".to_owned();
    for o in &others {
        header += &format!(" {o} req/s | ours ÷ {o} |");
    }
    header += " ours MiB/s | ours CPU µs/req |";
    for o in &others {
        header += &format!(" {o} CPU µs/req | ours ÷ {o} |");
    }
    println!();
    println!("{header}");
    println!("|---|{}", "---:|".repeat(3 + 4 * others.len()));
    for (spec, results) in rows {
        let summary = |which: Impl| summarize(results, |w| *w == which);
        let rate = |s: Option<Summary>| s.map(|s| s.rate);
        let cpu = |s: Option<Summary>| s.and_then(|s| s.us_per_req);
        let ours = summary(Impl::Ours);
        let mut line = format!("| {spec} | {} |", show(rate(ours), 0));
        for &o in &others {
            let s = summary(o);
            line += &format!(" {} | {} |", show(rate(s), 0), ratio(rate(ours), rate(s)));
        }
        line += &format!(
            " {} | {} |",
            show(ours.map(|s| s.mib_per_s), 1),
            show(cpu(ours), 2)
        );
        for &o in &others {
            let s = summary(o);
            line += &format!(" {} | {} |", show(cpu(s), 2), ratio(cpu(ours), cpu(s)));
        }
        println!("{line}");
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
        for generator in opts.generators_or("raw")? {
            let m = rt.block_on(measure(generator, addr, pid, spec, warmup, duration))?;
            println!(
                "{spec} ({}): {} requests, {:.0} req/s, {:.1} MiB/s, server {} µs/req",
                generator.name(),
                m.requests,
                m.rate(),
                m.mib_per_s(),
                // Three decimals: `drive` is for comparing two builds of our server, where
                // a few nanoseconds per request are the question.
                m.server_us_per_req()
                    .map_or("?".into(), |us| format!("{us:.3}"))
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Memory: idle connections, and after a burst

/// How a memory figure waits for the server to settle: its RSS polled every 50 ms until it
/// has not changed for `quiet`, for at most `bound` (no sleep stands in for an event: the
/// RSS itself says when the server is done).
#[derive(Debug, Clone, Copy)]
struct Settle {
    quiet: Duration,
    bound: Duration,
}

/// A settled RSS.
#[derive(Debug, Clone, Copy)]
struct Settled {
    kib: u64,
    /// How long it took to settle; `None` if it still moved at the bound.
    after: Option<Duration>,
}

impl Settle {
    fn parse(opts: &Options) -> Result<Self> {
        Ok(Settle {
            quiet: opts.secs_or("quiet", 0.5)?,
            bound: opts.secs_or("settle", 10.0)?,
        })
    }

    /// Polls the RSS of process `pid` until it settles (or the bound passes).
    async fn rss(self, pid: u32) -> Result<Settled> {
        const POLL: Duration = Duration::from_millis(50);
        let started = Instant::now();
        let mut last = rss_kib(pid)?;
        let mut since = Instant::now();
        loop {
            if since.elapsed() >= self.quiet {
                return Ok(Settled {
                    kib: last,
                    after: Some(started.elapsed()),
                });
            }
            if started.elapsed() >= self.bound {
                return Ok(Settled {
                    kib: last,
                    after: None,
                });
            }
            tokio::time::sleep(POLL).await;
            let now = rss_kib(pid)?;
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }
}

impl fmt::Display for Settled {
    /// The KiB, marked `*` if it had not settled.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.kib,
            if self.after.is_some() { "" } else { "*" }
        )
    }
}

/// The client side of an idle connection: small buffers, so the load generator's memory
/// stays small at 10 000 connections.
fn idle_client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
}

/// `conns`, or as many as the open files limit allows (each costs a descriptor here and one
/// in the server); an error under `min`.
fn fit_conns(conns: usize, min: usize, what: &str) -> Result<usize> {
    let limit = open_files_limit().unwrap_or(1024);
    let conns = if conns + 64 > limit {
        let fit = limit.saturating_sub(64);
        println!(
            "{what}: open files limited to {limit}: {fit} connections instead of {conns} \
             (scripts/idle-rss.sh raises the limit)"
        );
        fit
    } else {
        conns
    };
    if conns < min {
        return Err(format!("too few connections for the {what} measurement").into());
    }
    Ok(conns)
}

fn idle_main(opts: &Options) -> Result<()> {
    let conns = opts.size_or("conns", 10_000)?;
    idle_report(
        conns,
        &opts.impls_or(DEFAULT_IMPLS)?,
        opts.size_or("server-threads", 1)?,
        Settle::parse(opts)?,
    )
}

fn idle_report(conns: usize, impls: &[Impl], server_threads: usize, settle: Settle) -> Result<()> {
    let conns = fit_conns(conns, 200, "idle")?;
    // One-time costs (runtime, first allocations) land before the first checkpoint, so the
    // marginal figure is what each further connection costs.
    let first = conns / 10;
    let rt = runtime(1)?;
    println!(
        "idle connections: server RSS (KiB; settled: unchanged for {:?}, * if not within {:?}), \
         WebSocket handshake and AcceptConf read",
        settle.quiet, settle.bound
    );
    println!(
        "| server | RSS empty | RSS at {first} | RSS at {conns} | KiB/conn (marginal) | KiB/conn (from empty) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for &which in impls {
        let server = ServerProcess::spawn(which, 8192, 64, server_threads)?;
        let pid = server.pid();
        let (empty, at_first, at_all) = rt.block_on(async {
            let empty = settle.rss(pid).await?;
            let mut open = Vec::with_capacity(conns);
            open_idle(server.addr, idle_client_config(), first, &mut open).await?;
            let at_first = settle.rss(pid).await?;
            open_idle(server.addr, idle_client_config(), conns - first, &mut open).await?;
            let at_all = settle.rss(pid).await?;
            Ok::<_, BoxError>((empty, at_first, at_all))
        })?;
        let marginal = (at_all.kib as f64 - at_first.kib as f64) / (conns - first) as f64;
        let average = (at_all.kib as f64 - empty.kib as f64) / conns as f64;
        println!("| {which} | {empty} | {at_first} | {at_all} | {marginal:.1} | {average:.1} |");
    }
    Ok(())
}

/// The options of the burst-then-idle memory mode.
#[derive(Debug, Clone, Copy)]
struct BurstOptions {
    /// Connections (0: none, the mode is skipped in `run`).
    conns: usize,
    /// Requests each connection pipelines once, and their payload bytes.
    requests: usize,
    size: usize,
    settle: Settle,
}

impl BurstOptions {
    fn parse(opts: &Options, conns: usize) -> Result<Self> {
        let burst = BurstOptions {
            conns,
            requests: opts.size_or("requests", 32)?,
            size: opts.size_or("size", 4 * 1024)?,
            settle: Settle::parse(opts)?,
        };
        if burst.requests == 0 {
            return Err("--requests must be positive".into());
        }
        Ok(burst)
    }
}

fn burst_main(opts: &Options) -> Result<()> {
    let burst = BurstOptions::parse(opts, opts.size_or("conns", 2_000)?)?;
    burst_report(
        &burst,
        &opts.impls_or(DEFAULT_IMPLS)?,
        opts.size_or("server-threads", 1)?,
    )
}

/// `burst`: `conns` connections open and go idle; then every one pipelines `requests`
/// binary "echo" requests of `size` bytes at once (one write), reads every reply, and goes
/// quiet again.
/// The server's RSS per connection once settled, beside its idle figure: what a burst took
/// and did not give back.
fn burst_report(burst: &BurstOptions, impls: &[Impl], server_threads: usize) -> Result<()> {
    let conns = fit_conns(burst.conns, 1, "burst")?;
    let spec = LoadSpec {
        conns,
        pipeline: burst.requests,
        size: burst.size,
    };
    let rt = runtime(1)?;
    println!(
        "burst then idle: {conns} connections open and go idle, then each pipelines {} requests \
         of {} B once and reads every reply; server RSS (KiB; settled: unchanged for {:?}, * if \
         not within {:?}); KiB/conn from the RSS after one probe request",
        burst.requests, burst.size, burst.settle.quiet, burst.settle.bound
    );
    println!(
        "| server | RSS empty | RSS idle | RSS after the burst | KiB/conn idle | KiB/conn after the burst | after ÷ idle (≤ 2) | burst took | settled in |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &which in impls {
        let mut server = ServerProcess::spawn(which, spec.max_message_size(), 64, server_threads)?;
        let report = rt.block_on(burst_run(server.addr, server.pid(), spec, burst.settle))?;
        if server.exited() {
            return Err(format!("{which}: the server process exited").into());
        }
        let BurstReport {
            empty,
            idle,
            after,
            took,
        } = report;
        let per_conn = |s: Settled| (s.kib as f64 - empty.kib as f64) / conns as f64;
        let settled = after
            .after
            .map_or(format!("not in {:?}", burst.settle.bound), |t| {
                format!("{:.1} s", t.as_secs_f64())
            });
        println!(
            "| {which} | {empty} | {idle} | {after} | {:.1} | {:.1} | {:.2} | {:.2} s | {settled} |",
            per_conn(idle),
            per_conn(after),
            per_conn(after) / per_conn(idle),
            took.as_secs_f64(),
        );
    }
    Ok(())
}

/// What [`burst_run`] saw of one server.
#[derive(Debug)]
struct BurstReport {
    /// Server RSS after one probe connection came and went, with the connections idle,
    /// and after the burst.
    empty: Settled,
    idle: Settled,
    after: Settled,
    /// From the first request of the burst to the last reply.
    took: Duration,
}

async fn burst_run(
    addr: SocketAddr,
    pid: u32,
    spec: LoadSpec,
    settle: Settle,
) -> Result<BurstReport> {
    let requests = Arc::new(Requests::new(spec.size)?);
    // The burst leaves in one write: a write buffer for all of it (a small read chunk, so
    // that the generator's memory stays small).
    let config = idle_client_config().write_buffer_size(spec.pipeline * requests.template.len());
    // One request answered on a connection that then closes: the server's one-time costs
    // land before the first figure.
    let mut probe = connect(addr, config).await?;
    burst_connection(&mut probe, &requests, 1).await?;
    drop(probe);
    let empty = settle.rss(pid).await?;
    let mut open = Vec::with_capacity(spec.conns);
    open_idle(addr, config, spec.conns, &mut open).await?;
    let idle = settle.rss(pid).await?;
    let started = Instant::now();
    let mut bursts = tokio::task::JoinSet::new();
    for mut ws in open.drain(..) {
        let requests = Arc::clone(&requests);
        bursts.spawn(async move {
            burst_connection(&mut ws, &requests, spec.pipeline).await?;
            Ok::<_, BoxError>(ws)
        });
    }
    while let Some(joined) = bursts.join_next().await {
        open.push(joined??);
    }
    let took = started.elapsed();
    let after = settle.rss(pid).await?;
    drop(open);
    Ok(BurstReport {
        empty,
        idle,
        after,
        took,
    })
}

/// Pipelines `n` requests on `ws` at once and reads every reply (checked).
async fn burst_connection(
    ws: &mut WebSocketStream<TcpStream>,
    requests: &Requests,
    n: usize,
) -> Result<()> {
    let mut state = Outstanding::default();
    let mut out: VecDeque<Bytes> = (0..n).map(|_| requests.frame(state.send())).collect();
    let ended = pump(ws, &mut out, usize::MAX, |reply, _| {
        requests.answer(&reply, &mut state)?;
        Ok(if state.in_flight == 0 {
            Flow::Done
        } else {
            Flow::Continue
        })
    })
    .await?;
    if ended != Ended::Done {
        return Err(format!("server closed with {} requests unanswered", state.in_flight).into());
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
    let write_batch = opts.get("write-batch");
    // Checked here, not only by the server process it is given to.
    if let Some(bytes) = write_batch {
        parse_size(bytes)?;
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
    for which in opts.impls_or("ours,minimal")? {
        match which {
            Impl::Ours => {
                for &handler in &handlers {
                    let mut options = vec![
                        ("defaults", "true".to_owned()),
                        ("handler", handler.to_string()),
                        ("write-timeout", write_timeout.as_secs_f64().to_string()),
                    ];
                    if let Some(bytes) = write_batch {
                        options.push(("write-batch", bytes.to_owned()));
                    }
                    targets.push((format!("ours, {handler}"), which, options));
                }
            }
            Impl::Minimal
            | Impl::MinimalSmall
            | Impl::FastWebSockets
            | Impl::FastWebSocketsDirect => {
                // The size limit of our defaults, for the same frames.
                let options = vec![("max-message-size", "8192".to_owned())];
                targets.push((which.to_string(), which, options));
            }
            Impl::Soak => return Err("stall measures the echo servers only".into()),
        }
    }
    let rt = runtime(1)?;
    let batch = write_batch.unwrap_or("the default");
    println!(
        "stalled clients: {conns} connections pipeline \"echo\" requests of the largest size \
         the AcceptConf allows and never read; a write blocked {stall:?} means the server \
         stopped reading. Ours: default options, write timeout {write_timeout:?}, write batch \
         {batch}. Server RSS \
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

    // Below the default `max_pending_upgrades_per_source` (64): every connection comes
    // from this one address, and the server's defaults are what is measured.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(32));
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
