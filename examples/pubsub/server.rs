//! The pub-sub server: connections subscribe with a request, and whatever is published
//! reaches every subscriber as a signal.
//!
//! Shared by `examples/pubsub/main.rs` and `tests/example_pubsub.rs`.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{ErrorCode, Name};
use tokio_webwire::server::{CloseReason, Connection, Handler, HandlerError, SendError, Server};

/// The signal name of what clients publish.
pub(crate) const NEWS: &str = "news";

/// The handler, and the list of subscribers it keeps.
#[derive(Debug)]
pub(crate) struct PubSub {
    /// `Connection` is a cheap handle that stays usable after the hook that received it
    /// returned, and two handles are equal when they are the same connection, so a set of
    /// them is a list of subscribers.
    subscribers: Mutex<HashSet<Connection>>,
    /// The number of subscribers, for whoever wants to watch it (the example prints it,
    /// the test waits on it).
    count: watch::Sender<usize>,
}

impl PubSub {
    pub(crate) fn new() -> Self {
        PubSub {
            subscribers: Mutex::new(HashSet::new()),
            count: watch::Sender::new(0),
        }
    }

    /// Sends signal `name` with `payload` to every subscriber; returns to how many.
    ///
    /// `try_signal`, not `signal`: `signal` waits while a connection's outbound queue is
    /// full, so one subscriber that stopped reading would hold up everyone after it in the
    /// loop (and, here, everyone waiting for the lock). `try_signal` fails at once instead;
    /// that subscriber misses this message and stays subscribed (the server drops it
    /// altogether if it reads nothing for the write timeout). A subscriber whose
    /// connection is closed is removed on the spot: its `disconnected` hook will come, but
    /// there is no reason to keep trying until then.
    pub(crate) fn publish(&self, name: &Name, payload: &Payload) -> usize {
        let mut delivered = 0;
        let mut subscribers = self.lock();
        subscribers.retain(|conn| match conn.try_signal(name, payload.clone()) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(SendError::QueueFull) => true,
            Err(SendError::Closed) => false,
            // Too large or invalid: the same for every subscriber. Keep them all.
            Err(_) => true,
        });
        self.report(subscribers.len());
        delivered
    }

    /// The number of subscribers, as it changes.
    pub(crate) fn subscribers(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Adds or removes `conn`; true if that changed anything.
    fn set(&self, conn: &Connection, subscribed: bool) -> bool {
        let mut subscribers = self.lock();
        let changed = if subscribed {
            subscribers.insert(conn.clone())
        } else {
            subscribers.remove(conn)
        };
        self.report(subscribers.len());
        changed
    }

    /// Publishes the count if it changed.
    fn report(&self, n: usize) {
        self.count.send_if_modified(|count| {
            let changed = *count != n;
            *count = n;
            changed
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Connection>> {
        // Nothing panics while the lock is held.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handler for PubSub {
    /// `subscribe`, `unsubscribe`, and `publish` (the payload becomes a `news` signal to
    /// every subscriber; the reply says to how many).
    async fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        match name.as_str() {
            "subscribe" => {
                self.set(conn, true);
                Ok(Payload::utf8("subscribed"))
            }
            "unsubscribe" => {
                self.set(conn, false);
                Ok(Payload::utf8("unsubscribed"))
            }
            "publish" => {
                let delivered = self.publish(&Name::from_static(NEWS), &payload);
                Ok(Payload::utf8(delivered.to_string()))
            }
            _ => Err(HandlerError::reply(
                ErrorCode::from_static("UNKNOWN_REQUEST"),
                "requests: subscribe, unsubscribe, publish",
            )),
        }
    }

    async fn connected(&self, conn: &Connection) {
        // The server's `connection` span adds the connection's id and address.
        tracing::info!(user_agent = conn.user_agent(), "connected");
    }

    /// A subscriber that disconnects leaves the list; nothing else would remove it until
    /// the next publication.
    async fn disconnected(&self, conn: &Connection, reason: &CloseReason) {
        tracing::info!(%reason, "disconnected");
        self.set(conn, false);
    }
}

/// Binds `addr` and serves a [`PubSub`] on it (in a task of its own). Returns the server,
/// whose [`handler`](Server::handler) publishes, and the address it listens on.
pub(crate) async fn start(addr: &str) -> io::Result<(Server<PubSub>, SocketAddr)> {
    // Backlog 1024 (tokio's bind: 128): clients that all reconnect at once after a
    // restart wait in it, instead of having their connects dropped and sent again later.
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = Server::new(PubSub::new());
    tokio::spawn(server.serve(listener));
    Ok((server, local))
}
