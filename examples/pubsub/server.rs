//! The pub-sub server: connections subscribe to the `news` topic with a request, and
//! whatever is published there reaches every subscriber as a signal, on this server and,
//! with a shared backplane (`--redis URL`), on every server of the service.
//!
//! Shared by `examples/pubsub/main.rs` and `tests/example_pubsub.rs`.

use std::io;
use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_webwire::Payload;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::protocol::ErrorCode;
use tokio_webwire::server::{CloseReason, Connection, Handler, HandlerError, Server};

/// The topic everything is published to.
pub(crate) const TOPIC: &str = "news";
/// The signal name of what clients publish.
pub(crate) const NEWS: &str = "news";

/// The handler. The server keeps the subscribers (its topics); this only counts them, for
/// whoever wants to watch (the example prints the count, the test waits on it).
#[derive(Debug)]
pub(crate) struct PubSub {
    count: watch::Sender<usize>,
}

impl PubSub {
    pub(crate) fn new() -> Self {
        PubSub {
            count: watch::Sender::new(0),
        }
    }

    /// The number of this server's subscribers, as it changes.
    pub(crate) fn subscribers(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    fn add(&self, change: isize) {
        self.count
            .send_modify(|count| *count = count.saturating_add_signed(change));
    }
}

impl Handler for PubSub {
    /// `subscribe`, `unsubscribe`, and `publish` (the payload becomes a `news` signal to
    /// every subscriber; the reply says to how many on this server).
    async fn request(
        &self,
        conn: &Connection,
        name: tokio_webwire::protocol::Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        match name.as_str() {
            "subscribe" => {
                if conn.subscribe(TOPIC).map_err(HandlerError::internal)? {
                    self.add(1);
                }
                Ok(Payload::utf8("subscribed"))
            }
            "unsubscribe" => {
                if conn.unsubscribe(TOPIC) {
                    self.add(-1);
                }
                Ok(Payload::utf8("unsubscribed"))
            }
            "publish" => {
                // Encoded once for all subscribers; one that cannot keep up is
                // disconnected (the server's default policy), never waited for.
                let here = conn
                    .publish(TOPIC, NEWS, payload)
                    .await
                    .map_err(HandlerError::internal)?;
                Ok(Payload::utf8(here.to_string()))
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

    /// The server took the connection off its topics already; `topics()` still says what
    /// it had.
    async fn disconnected(&self, conn: &Connection, reason: &CloseReason) {
        tracing::info!(%reason, "disconnected");
        if conn.topics().iter().any(|topic| topic == TOPIC) {
            self.add(-1);
        }
    }
}

/// Binds `addr` and serves a [`PubSub`] on it (in a task of its own), with `backplane`
/// to the other servers of the service. Returns the server, which publishes too, and
/// the address it listens on.
pub(crate) async fn start(
    addr: &str,
    backplane: impl Backplane,
) -> io::Result<(Server<PubSub>, SocketAddr)> {
    // Backlog 1024 (tokio's bind: 128): clients that all reconnect at once after a
    // restart wait in it, instead of having their connects dropped and sent again later.
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = Server::builder(PubSub::new())
        .backplane(backplane)
        .build()
        .map_err(io::Error::other)?;
    tokio::spawn(server.serve(listener));
    Ok((server, local))
}
