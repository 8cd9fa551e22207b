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

mod fastws;
mod generators;
mod handlers;
mod measure;
mod memory;
mod minimal;
mod options;
mod process;
#[cfg(feature = "metrics")]
mod recorder;
mod run;
mod serve;
mod soak;
mod stall;
mod wire;

use crate::memory::{burst_main, idle_main};
use crate::options::Options;
use crate::run::{clients_main, drive_main, run_main};
use crate::serve::serve_main;
use crate::soak::soak_main;
use crate::stall::stall_main;

/// The default load configurations of the issue: (connections, pipeline depth, payload bytes).
pub(crate) const DEFAULT_CONFIGS: &str = "1x1x16,16x1x16,4x64x16,4x64x1k,4x64x4k,4x16x256k";

/// The loads at which our `Client` is compared with the raw generator (issue 22, point 4).
pub(crate) const CLIENT_CONFIGS: &str = "4x64x4k,4x64x16";

/// The servers of the CPU table and of the memory modes.
pub(crate) const DEFAULT_IMPLS: &str = "ours,minimal,fastwebsockets";

/// Room for the header of a request (type, id, name length, `"echo"`) in the size limit.
pub(crate) const HEADER_ROOM: usize = 64;

/// The type byte of a binary request and of a binary reply (PROTOCOL.md §2).
pub(crate) const REQUEST_BINARY: u8 = 0x7F;
pub(crate) const REPLY_BINARY: u8 = 0xBF;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T, E = BoxError> = std::result::Result<T, E>;

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

pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?)
}
