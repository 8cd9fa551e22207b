//! `stall`: what a server holds for connections whose clients stopped reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{AcceptConf, Message, Name, RequestId};

use crate::generators::connect_conf;
use crate::options::{EchoKind, Impl, Options, parse_size};
use crate::process::{ServerProcess, open_files, open_files_limit, rss_kib};
use crate::wire::echo_reply;
use crate::{Result, runtime};

/// `stall`: what a server holds for connections whose clients send requests and never read
/// the replies. `--conns` connections each read the AcceptConf, then pipeline binary "echo"
/// requests of the largest size the AcceptConf allows and never read again; each writes
/// until one write made no progress for `--stall` (the server stopped reading), then holds
/// its socket. The server's RSS is sampled once a second until it grew over neither of the
/// last two seconds (at most `--settle`), with all connections still open: our server gets a
/// `--write-timeout` longer than all that.
pub(crate) fn stall_main(opts: &Options) -> Result<()> {
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
