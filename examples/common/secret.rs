//! The backplane secret of the examples that run many servers (chat room, pubsub).
//!
//! Included by their `server.rs` with `#[path = "../common/secret.rs"]`.

/// The secret the servers of the service share (`WEBWIRE_SECRET`, at least 16 bytes): it
/// tags every message between them (`docs/backplane.md`). Without it, a demo secret
/// everybody knows, said in the debug log: fine on one machine, never in production.
pub(super) fn backplane_secret() -> Vec<u8> {
    match std::env::var("WEBWIRE_SECRET") {
        Ok(secret) => secret.into_bytes(),
        Err(_) => {
            tracing::debug!("WEBWIRE_SECRET is not set: the servers use a demo secret");
            b"demo secret: set WEBWIRE_SECRET!".to_vec()
        }
    }
}
