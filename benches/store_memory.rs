//! Memory a [`MemoryStore`] takes per session: `cargo bench --bench store_memory`.
//!
//! Saves 100 000 small sessions (info `{"user": "alice"}`) and 10 000 with 8 000 bytes of
//! info (near the default message size limit), and prints the growth of the process's
//! resident memory per session. Linux only (reads `/proc/self/status`).

use tokio_webwire::session::{DefaultKeyGenerator, MemoryStore, SessionKeyGenerator, SessionStore};
use tokio_webwire::{Session, SessionInfo};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    // Every store stays alive until the end, so that one's freed memory is not counted
    // again by the next.
    let mut stores = Vec::new();
    for (count, user_len) in [(100_000, 5), (10_000, 8_000)] {
        let store = MemoryStore::new().capacity(0);
        let keys: Vec<String> = (0..count).map(|_| DefaultKeyGenerator.generate()).collect();
        let user = "u".repeat(user_len);
        let (Some(before), after) = (
            rss_kib(),
            runtime.block_on(async {
                for key in keys {
                    let mut info = SessionInfo::new();
                    info.insert("user", &user).expect("a string is JSON");
                    store.save(&Session::new(key, info)).await.expect("saved");
                }
                rss_kib()
            }),
        ) else {
            eprintln!("no /proc/self/status: nothing measured");
            return;
        };
        let grown = after.unwrap_or(before).saturating_sub(before) * 1024;
        println!(
            "{count} sessions with {user_len} bytes of info: {:.1} MiB, {} bytes per session",
            grown as f64 / (1024.0 * 1024.0),
            grown / count as u64,
        );
        stores.push(store);
    }
}
