//! Logging for the examples: the `fmt` subscriber of `tracing-subscriber` on stderr, so
//! that stdout stays the example's output (the tests read it).
//!
//! Included by each example's `main.rs` with `#[path = "../common/logging.rs"]`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs what `RUST_LOG` asks for (e.g. `RUST_LOG=debug` adds the server's own events per
/// connection), else `default`; in colour only on a terminal.
pub(crate) fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
