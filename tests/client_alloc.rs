//! Heap blocks per request on the client's hot path: one (the encoded frame; the reply is
//! a slice of tungstenite's read buffer, the completion lives in the pending slab), one
//! request after another and pipelined. The budget of the issue was two.
//!
//! Blocks are counted by dhat's allocator for the whole process, so the server here is a
//! WebSocket echo written against blocking `std` sockets with buffers allocated once: it
//! allocates nothing per message, and every block counted is the client's (or its
//! runtime's). One `#[test]` in this file, so that no other test allocates meanwhile.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio_webwire::protocol::{AcceptConf, Message, Name};
use tokio_webwire::{Client, Payload};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Requests counted per run, after as many for warming up.
const REQUESTS: u64 = 20_000;

/// Blocks the measuring itself allocates per run (the counter's `Arc`, `join_all`'s list).
const HARNESS: u64 = 4;

/// Binary request and reply type bytes (PROTOCOL.md §2.1).
const REQUEST_BINARY: u8 = 0x7F;
const REPLY_BINARY: u8 = 0xBF;

/// Accepts one WebSocket client, sends it `accept_conf`, and answers each binary request
/// with its payload until the client closes. Buffers are allocated once, up front.
fn echo_server(listener: &TcpListener, accept_conf: &[u8]) -> std::io::Result<()> {
    let (mut tcp, _) = listener.accept()?;
    tcp.set_nodelay(true)?;
    let mut input = vec![0u8; 1 << 16];
    let mut output = Vec::with_capacity(1 << 16);
    // The upgrade: read the head, answer with the accept key.
    let mut head = 0;
    let key = loop {
        let read = tcp.read(&mut input[head..])?;
        if read == 0 {
            return Ok(());
        }
        head += read;
        if let Some(end) = find(&input[..head], b"\r\n\r\n") {
            let text = std::str::from_utf8(&input[..end]).map_err(std::io::Error::other)?;
            let key = text
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_owned())
                })
                .ok_or_else(|| std::io::Error::other("no key"))?;
            break key;
        }
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    write!(
        tcp,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )?;
    frame_into(&mut output, 0x2, accept_conf);
    tcp.write_all(&output)?;
    output.clear();
    // Client frames: FIN + opcode, mask bit + length (7, 16 or 64 bits), mask, payload.
    let mut filled = 0;
    loop {
        let read = tcp.read(&mut input[filled..])?;
        if read == 0 {
            return Ok(());
        }
        filled += read;
        let mut at = 0;
        while let Some((opcode, start, end)) = parse_frame(&mut input[at..filled]) {
            let (start, end) = (at + start, at + end);
            match opcode {
                0x8 => {
                    frame_into(&mut output, 0x8, &input[start..end.min(start + 2)]);
                    tcp.write_all(&output)?;
                    return Ok(());
                }
                0x2 if input[start] == REQUEST_BINARY => {
                    let request = &input[start..end];
                    let body = 10 + usize::from(request[9]);
                    let len = 9 + (request.len() - body);
                    frame_header(&mut output, 0x2, len);
                    output.push(REPLY_BINARY);
                    output.extend_from_slice(&request[1..9]);
                    output.extend_from_slice(&request[body..]);
                }
                // Heartbeats and anything else: nothing to answer.
                _ => {}
            }
            at = end;
        }
        if !output.is_empty() {
            tcp.write_all(&output)?;
            output.clear();
        }
        input.copy_within(at..filled, 0);
        filled -= at;
    }
}

/// Parses and unmasks the client frame at the start of `buf`: (opcode, payload start, end).
fn parse_frame(buf: &mut [u8]) -> Option<(u8, usize, usize)> {
    let (&first, &second) = (buf.first()?, buf.get(1)?);
    let (len, mut at) = match second & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        short => (usize::from(short), 2),
    };
    let mask: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    at += 4;
    let payload = buf.get_mut(at..at + len)?;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Some((first & 0x0F, at, at + len))
}

fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

fn frame_into(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    frame_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Heap blocks allocated while `f` runs.
async fn blocks_allocated<F: Future<Output = ()>>(f: F) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f.await;
    dhat::HeapStats::get().total_blocks - before
}

/// `count` requests from `tasks` loops sharing one client; every reply checked.
async fn load(client: &Client, tasks: usize, count: u64) {
    const ECHO: Name = Name::from_static("echo");
    let payload = Payload::binary(Bytes::from_static(b"0123456789abcdef"));
    let left = Arc::new(AtomicU64::new(count));
    let loops = (0..tasks).map(|_| {
        let (left, payload) = (Arc::clone(&left), payload.clone());
        async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let reply = client.request(&ECHO, payload.clone()).await;
                assert_eq!(reply.as_ref(), Ok(&payload));
            }
        }
    });
    futures_util::future::join_all(loops).await;
}

#[test]
fn one_heap_block_per_request() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let accept_conf =
        Message::AcceptConf(AcceptConf::new(std::time::Duration::from_secs(60), 8192))
            .encode()
            .expect("encodes");
    let server = std::thread::spawn(move || echo_server(&listener, &accept_conf));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Client::connect(&url).await.expect("connects");
        for (tasks, name) in [(1, "one at a time"), (16, "16 in flight")] {
            load(&client, tasks, REQUESTS).await;
            let blocks = blocks_allocated(load(&client, tasks, REQUESTS)).await;
            println!("{name}: {blocks} heap blocks for {REQUESTS} requests");
            assert!(
                blocks <= REQUESTS + HARNESS,
                "{name}: {blocks} heap blocks for {REQUESTS} requests"
            );
        }
        client.close().await;
    });
    server.join().expect("server thread").expect("server I/O");
}
