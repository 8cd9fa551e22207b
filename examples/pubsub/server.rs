//! The pub-sub server: connections subscribe to the `news` topic with a request, and
//! whatever is published there reaches every subscriber as a signal, on this server and,
//! with a shared backplane (`--redis URL`), on every server of the service.
//!
//! Shared by `examples/pubsub/main.rs` and `tests/example_pubsub.rs`.

use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_webwire::Payload;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::router::{Router, State};
use tokio_webwire::server::{CloseReason, Connection, Handler, Server, TopicError};

// Shared with the other example of many servers.
#[path = "../common/secret.rs"]
mod secret;
use secret::backplane_secret;

/// The topic everything is published to.
pub(crate) const TOPIC: &str = "news";
/// The signal name of what clients publish.
pub(crate) const NEWS: &str = "news";

/// The server's handler: three requests, routed by name, and [`News`] for the hooks.
pub(crate) fn app(news: News) -> impl Handler {
    Router::with_state(news.clone())
        .request("subscribe", subscribe)
        .request("unsubscribe", unsubscribe)
        .request("publish", publish)
        .hooks(news)
        .build()
        .expect("valid names, each routed once")
}

/// `subscribe`: the news, and the ticks of this server. Answered once the backplane
/// carries the topic here, so that "subscribed" means every later publication arrives,
/// whichever server it was published on.
async fn subscribe(conn: Connection, State(news): State<News>) -> Result<&'static str, TopicError> {
    conn.subscribe(&news.tick_topic)?;
    if conn.subscribe(TOPIC)? {
        news.add(1);
    }
    conn.sync_backplane().await;
    Ok("subscribed")
}

/// `unsubscribe`: no more news, nor ticks.
async fn unsubscribe(conn: Connection, State(news): State<News>) -> &'static str {
    conn.unsubscribe(&news.tick_topic);
    if conn.unsubscribe(TOPIC) {
        news.add(-1);
    }
    "unsubscribed"
}

/// `publish`: the payload, as a `news` signal to every subscriber; the reply says to how
/// many on this server. Encoded once for all subscribers; one that cannot keep up is
/// disconnected (the server's default policy), never waited for. The count is this
/// server's: the other servers' subscribers are theirs.
async fn publish(
    conn: Connection,
    State(news): State<News>,
    payload: Payload,
) -> Result<String, TopicError> {
    match conn.publish(TOPIC, NEWS, payload).await {
        Ok(here) if news.shared => Ok(format!(
            "{here} subscribers on this server, and sent on to the other servers"
        )),
        Ok(here) => Ok(format!("{here} subscribers")),
        Err(TopicError::Backplane { delivered, source }) => {
            tracing::warn!(%source, "published on this server only");
            Ok(format!(
                "{delivered} subscribers on this server only: the other servers could not be \
                 reached"
            ))
        }
        Err(error) => Err(error),
    }
}

/// The state of the routes and the hooks. The server keeps the subscribers (its topics);
/// this only counts them, for whoever wants to watch (the example prints the count, the
/// test waits on it). A clone is cheap and shares the count.
#[derive(Debug, Clone)]
pub(crate) struct News {
    count: Arc<watch::Sender<usize>>,
    /// This server's own topic for its ticks: each subscriber gets the ticks of the server
    /// it is connected to, not one from every server of a shared backplane.
    tick_topic: Arc<str>,
    /// Whether publishes also go to other servers (a backplane other than `Local`).
    shared: bool,
}

impl News {
    pub(crate) fn new(shared: bool) -> Self {
        // A name no other server has: random, as two servers may print the same address.
        let node = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        News {
            count: Arc::new(watch::Sender::new(0)),
            tick_topic: format!("tick/{node:016x}").into(),
            shared,
        }
    }

    /// The number of this server's subscribers, as it changes.
    pub(crate) fn subscribers(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Publishes the tick numbered `n` to the subscribers of `server` (its own topic, so
    /// that with a shared backplane nobody gets one tick per server); returns how many.
    pub(crate) async fn tick(
        &self,
        server: &Server<impl Handler>,
        n: u64,
    ) -> Result<usize, TopicError> {
        server
            .publish(&self.tick_topic, "tick", format!("tick {n}"))
            .await
    }

    fn add(&self, change: isize) {
        self.count
            .send_modify(|count| *count = count.saturating_add_signed(change));
    }
}

/// The hooks: connections logged, and a subscriber that leaves without unsubscribing
/// taken off the count. Requests of other names get the router's `UNKNOWN_REQUEST`.
impl Handler for News {
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

/// Binds `addr` and serves `handler` ([`app`]) on it (in a task of its own), with
/// `backplane` to the other servers of the service. Returns the server, which publishes
/// too, and the address it listens on.
pub(crate) async fn start<H: Handler>(
    addr: &str,
    handler: H,
    backplane: impl Backplane,
) -> io::Result<(Server<H>, SocketAddr)> {
    // Backlog 1024 (tokio's bind: 128): clients that all reconnect at once after a
    // restart wait in it, instead of having their connects dropped and sent again later.
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = Server::builder(handler)
        .backplane(backplane)
        .backplane_secret(backplane_secret())
        .build()
        .map_err(io::Error::other)?;
    tokio::spawn(server.serve(listener));
    Ok((server, local))
}
