//! Memory modes: `idle` (RSS per idle connection) and `burst` (RSS per connection after a
//! burst of requests), and waiting for the server's RSS to settle.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::generators::{Outstanding, Requests, connect};
use crate::options::{Impl, LoadSpec, Options};
use crate::process::{ServerProcess, open_files_limit, rss_kib};
use crate::wire::{Ended, Flow, pump};
use crate::{BoxError, DEFAULT_IMPLS, Result, runtime};

/// How a memory figure waits for the server to settle: its RSS polled every 50 ms until it
/// has not changed for `quiet`, for at most `bound` (no sleep stands in for an event: the
/// RSS itself says when the server is done).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settle {
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

pub(crate) fn idle_main(opts: &Options) -> Result<()> {
    let conns = opts.size_or("conns", 10_000)?;
    idle_report(
        conns,
        &opts.impls_or(DEFAULT_IMPLS)?,
        opts.size_or("server-threads", 1)?,
        Settle::parse(opts)?,
    )
}

pub(crate) fn idle_report(
    conns: usize,
    impls: &[Impl],
    server_threads: usize,
    settle: Settle,
) -> Result<()> {
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
pub(crate) struct BurstOptions {
    /// Connections (0: none, the mode is skipped in `run`).
    pub(crate) conns: usize,
    /// Requests each connection pipelines once, and their payload bytes.
    requests: usize,
    size: usize,
    pub(crate) settle: Settle,
}

impl BurstOptions {
    pub(crate) fn parse(opts: &Options, conns: usize) -> Result<Self> {
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

pub(crate) fn burst_main(opts: &Options) -> Result<()> {
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
pub(crate) fn burst_report(
    burst: &BurstOptions,
    impls: &[Impl],
    server_threads: usize,
) -> Result<()> {
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
