//! The pub-sub server: connections subscribe to the `news` topic with a request, and
//! whatever is published there reaches every subscriber as a signal, on this server and,
//! with a shared backplane (`--redis URL`), on every server of the service.
//!
//! Shared by `examples/pubsub/main.rs` and `tests/example_pubsub.rs`.

use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_webwire::Payload;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::protocol::ErrorCode;
use tokio_webwire::server::{CloseReason, Connection, Handler, HandlerError, Server, TopicError};

/// The topic everything is published to.
pub(crate) const TOPIC: &str = "news";
/// The signal name of what clients publish.
pub(crate) const NEWS: &str = "news";

/// The handler. The server keeps the subscribers (its topics); this only counts them, for
/// whoever wants to watch (the example prints the count, the test waits on it).
#[derive(Debug)]
pub(crate) struct PubSub {
    count: watch::Sender<usize>,
    /// This server's own topic for its ticks: each subscriber gets the ticks of the server
    /// it is connected to, not one from every server of a shared backplane.
    tick_topic: String,
    /// Whether publishes also go to other servers (a backplane other than `Local`).
    shared: bool,
}

impl PubSub {
    pub(crate) fn new(shared: bool) -> Self {
        // A name no other server has: random, as two servers may print the same address.
        let node = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        PubSub {
            count: watch::Sender::new(0),
            tick_topic: format!("tick/{node:016x}"),
            shared,
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
                conn.subscribe(&self.tick_topic)
                    .map_err(HandlerError::internal)?;
                if conn.subscribe(TOPIC).map_err(HandlerError::internal)? {
                    self.add(1);
                }
                Ok(Payload::utf8("subscribed"))
            }
            "unsubscribe" => {
                conn.unsubscribe(&self.tick_topic);
                if conn.unsubscribe(TOPIC) {
                    self.add(-1);
                }
                Ok(Payload::utf8("unsubscribed"))
            }
            "publish" => {
                // Encoded once for all subscribers; one that cannot keep up is
                // disconnected (the server's default policy), never waited for. The
                // count is this server's: the other servers' subscribers are theirs.
                let reply = match conn.publish(TOPIC, NEWS, payload).await {
                    Ok(here) if self.shared => format!(
                        "{here} subscribers on this server, and sent on to the other servers"
                    ),
                    Ok(here) => format!("{here} subscribers"),
                    Err(TopicError::Backplane { delivered, source }) => {
                        tracing::warn!(%source, "published on this server only");
                        format!(
                            "{delivered} subscribers on this server only: the other servers \
                             could not be reached"
                        )
                    }
                    Err(error) => return Err(HandlerError::internal(error)),
                };
                Ok(Payload::utf8(reply))
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

/// Publishes the tick numbered `n` to the subscribers of this server (its own topic, so
/// that with a shared backplane nobody gets one tick per server); returns how many.
pub(crate) async fn tick(server: &Server<PubSub>, n: u64) -> Result<usize, TopicError> {
    let topic = &server.handler().tick_topic;
    server.publish(topic, "tick", format!("tick {n}")).await
}

/// Binds `addr` and serves a [`PubSub`] on it (in a task of its own), with `backplane`
/// to the other servers of the service (`shared`: whether it reaches any). Returns the
/// server, which publishes too, and the address it listens on.
pub(crate) async fn start(
    addr: &str,
    backplane: impl Backplane,
    shared: bool,
) -> io::Result<(Server<PubSub>, SocketAddr)> {
    // Backlog 1024 (tokio's bind: 128): clients that all reconnect at once after a
    // restart wait in it, instead of having their connects dropped and sent again later.
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = Server::builder(PubSub::new(shared))
        .backplane(backplane)
        .build()
        .map_err(io::Error::other)?;
    tokio::spawn(server.serve(listener));
    Ok((server, local))
}
