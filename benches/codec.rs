//! Codec benchmarks: [`Message::parse`] and [`Message::encode`] of a binary request (name
//! `"echo"`) and a binary reply, each with 16 B, 1 KiB and 64 KiB payloads, plus a plain
//! memcpy of the 64 KiB request frame as a baseline for the zero-copy parse.
//!
//! Throughput is counted in messages (`Throughput::Elements(1)`), so criterion reports
//! messages per second. Run with `cargo bench --bench codec`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use tokio_webwire::Payload;
use tokio_webwire::protocol::{Message, Name, RequestId};

/// Payload sizes, with the labels used in benchmark ids.
const SIZES: [(&str, usize); 3] = [("16B", 16), ("1KiB", 1024), ("64KiB", 64 * 1024)];

/// A binary payload of `len` bytes (a repeating non-zero pattern).
fn payload(len: usize) -> Payload {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
    Payload::binary(data)
}

/// A binary request named `"echo"` carrying `len` payload bytes.
fn request(len: usize) -> Message {
    Message::request(
        RequestId::from(0x0123_4567_89ab_cdef),
        Name::from_static("echo"),
        payload(len),
    )
}

/// A binary reply carrying `len` payload bytes.
fn reply(len: usize) -> Message {
    Message::reply(RequestId::from(0x0123_4567_89ab_cdef), payload(len))
}

/// The frame of `msg`, made shared so that cloning it is a refcount increment only.
fn shared_frame(msg: &Message) -> Bytes {
    let frame = msg.encode().expect("benchmark message encodes");
    // `Bytes::from(Vec)` (what `encode` returns) starts out "promotable": its first clone or
    // slice allocates the shared header and promotes the buffer. Clone once here so that the
    // clones in the timed loop, and the slices `parse` takes, do not allocate.
    let _ = frame.clone();
    frame
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (label, len) in SIZES {
        for (kind, msg) in [("request", request(len)), ("reply", reply(len))] {
            let frame = shared_frame(&msg);
            assert_eq!(Message::parse(frame.clone()).as_ref(), Ok(&msg));
            group.bench_with_input(BenchmarkId::new(kind, label), &frame, |b, frame| {
                b.iter(|| black_box(Message::parse(black_box(frame.clone()))));
            });
        }
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (label, len) in SIZES {
        for (kind, msg) in [("request", request(len)), ("reply", reply(len))] {
            group.bench_with_input(BenchmarkId::new(kind, label), &msg, |b, msg| {
                b.iter(|| black_box(black_box(msg).encode()));
            });
        }
    }
    group.finish();
}

fn bench_memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    group.throughput(Throughput::Elements(1));
    let frame = shared_frame(&request(64 * 1024));
    let mut dst = vec![0u8; frame.len()];
    group.bench_function(BenchmarkId::new("request", "64KiB"), |b| {
        b.iter(|| {
            black_box(&mut dst[..]).copy_from_slice(black_box(&frame[..]));
            black_box(&dst);
        });
    });
    group.finish();
}

/// Every codec benchmark, with a short configuration (1 s warm-up, 3 s measurement) that
/// command-line arguments may still override.
///
/// Written out instead of `criterion_group!`, whose generated `pub fn` carries no doc
/// comment and so fails `missing_docs` under `-D warnings`.
fn benches() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_parse(&mut c);
    bench_encode(&mut c);
    bench_memcpy(&mut c);
}

criterion_main!(benches);
