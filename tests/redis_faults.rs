//! What a client sees when the network between its node and Redis is slow, or silently
//! drops everything for a while (a partition), against a real redis-server.
//!
//! The issue asked for a network namespace with `tc netem`; this machine's kernel has no
//! `netem` queueing discipline (`tc qdisc add dev lo root netem` answers "Specified qdisc
//! kind is unknown"), so the faults are made in user space instead: node a reaches Redis
//! through a proxy of the test's own on 127.0.0.1 that delays every chunk it forwards, or
//! drops every byte (both ways) while keeping the connections open, as a partition does,
//! and closes the connections that lost bytes once the partition ends (their TCP state
//! would not survive one). Node b and both nodes' store reach Redis directly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::bounded;
use common::nodes::{self, Seen};
use common::redis::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_webwire::redis::RedisBackplane;

/// What the proxy does with the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    /// Forwarded after this delay (per chunk).
    Slow(Duration),
    /// Dropped, both ways; connections stay open.
    Partitioned,
}

/// A TCP proxy to `upstream` whose link the test steers.
struct Proxy {
    addr: std::net::SocketAddr,
    link: watch::Sender<Link>,
    /// Connections accepted so far.
    accepted: watch::Receiver<usize>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link::Slow(Duration::ZERO));
        let (count, accepted) = watch::channel(0);
        let links = link.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.send_modify(|n| *n += 1);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let lost = Arc::new(AtomicBool::new(false));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (from, to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_read), Box::new(client_write)),
                ] {
                    tokio::spawn(pump(from, to, links.subscribe(), Arc::clone(&lost)));
                }
            }
        });
        Proxy {
            addr,
            link,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }
}

/// Forwards `from` to `to` as the link says; a connection that lost bytes is closed at
/// the first byte after the partition.
async fn pump(
    mut from: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut to: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    link: watch::Receiver<Link>,
    lost: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *link.borrow();
        match now {
            Link::Partitioned => lost.store(true, Ordering::SeqCst),
            Link::Slow(_) if lost.load(Ordering::SeqCst) => return,
            Link::Slow(delay) => {
                tokio::time::sleep(delay).await;
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_slow_link_delays_and_a_partition_loses_only_what_passed_during_it() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let port: u16 = redis
        .url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the port of redis-server");
    let proxy = Proxy::start(port).await;
    // a notices a silent link within 600 ms: a PING every 300 ms, 300 ms for its answer.
    let a_backplane = bounded(
        RedisBackplane::builder()
            .health_check(Duration::from_millis(300), Duration::from_millis(300))
            .connect(&proxy.url()),
    )
    .await
    .expect("a's backplane connects through the proxy");
    let a = nodes::redis_node_with(&redis, a_backplane).await;
    let b = nodes::redis_node(&redis).await;
    let (on_a, mut seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    let key = nodes::login(&on_a, &mut seen).await;

    // Slow: 100 ms each way on a's link. What b publishes still arrives, later.
    proxy
        .link
        .send_replace(Link::Slow(Duration::from_millis(100)));
    let sent = Instant::now();
    bounded(b.server.publish("room", "news", "slow"))
        .await
        .expect("published");
    assert_eq!(nodes::next_signal(&mut seen).await, nodes::news("slow"));
    eprintln!(
        "through a link delaying each chunk 100 ms: {:?}",
        sent.elapsed()
    );
    proxy.link.send_replace(Link::Slow(Duration::ZERO));

    // Partitioned: a hears nothing. b publishes, and revokes the session a's client holds
    // (Redis, reached directly, forgets it at once; the news cannot reach a).
    let mut accepted = proxy.accepted.clone();
    let before = *accepted.borrow_and_update();
    proxy.link.send_replace(Link::Partitioned);
    bounded(b.server.publish("room", "news", "lost"))
        .await
        .expect("published");
    assert_eq!(
        bounded(b.server.close_session(&key))
            .await
            .expect("revoked"),
        0
    );
    // a notices (its PING goes unanswered) and tries to subscribe again: a new connection
    // to the proxy shows it.
    bounded(accepted.wait_for(|&n| n > before))
        .await
        .expect("the proxy is alive");
    assert!(
        on_a.session().is_some(),
        "a cannot know of the revocation yet"
    );

    // The partition ends: a subscribes again, finds the session gone from the store and
    // takes it from its client; what b publishes from then on arrives. What was
    // published during the partition is lost for a (Redis pub/sub keeps nothing).
    let healed = Instant::now();
    proxy.link.send_replace(Link::Slow(Duration::ZERO));
    // The first thing a's client hears is the end of its session: nothing of what was
    // published during the partition.
    assert_eq!(bounded(seen.recv()).await, Some(Seen::SessionClosed));
    eprintln!(
        "revocation applied {:?} after the partition ended",
        healed.elapsed()
    );
    nodes::publish_until_delivered(&b, "room", "retry", &mut seen).await;
    bounded(b.server.publish("room", "news", "after"))
        .await
        .expect("published");
    assert_eq!(
        nodes::signals_until(&mut seen, "after").await,
        [nodes::news("after")]
    );
}
