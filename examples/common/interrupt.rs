//! Ctrl-C for the examples, armed before they print their address: a Ctrl-C (SIGINT)
//! that comes right after the address is printed stops them gracefully instead of killing
//! them (tokio installs its handler when the future is first polled, not when it is made).
//!
//! Included by each server example's `main.rs` with `#[path = "../common/interrupt.rs"]`.

use std::future::Future;
use std::pin::Pin;

/// A Ctrl-C, as a future whose handler is installed already.
pub(crate) type Interrupt = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Installs the Ctrl-C handler now; the future ends at the first Ctrl-C.
pub(crate) async fn armed() -> Interrupt {
    let mut interrupt: Interrupt = Box::pin(tokio::signal::ctrl_c());
    // Polled once, which installs the handler; it cannot have ended already unless the
    // handler could not be installed, which the future then returns.
    tokio::select! {
        biased;
        result = &mut interrupt => Box::pin(std::future::ready(result)),
        () = std::future::ready(()) => interrupt,
    }
}
