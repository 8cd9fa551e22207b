//! A real `redis-server` for the tests of feature `redis`: started on a free port of
//! 127.0.0.1 with no persistence, stopped (killed and reaped) when dropped, and restartable
//! on the same port (a "Redis restarted" test).
//!
//! Without a `redis-server` binary a test is skipped ([`RedisServer::start`] returns `None`
//! after saying so on stderr), unless the environment variable `CI` is set: CI installs
//! Redis (`.ci/run`), and a test that silently skipped there would prove nothing.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::daemon::{Daemon, Kind, READY_LIMIT, RealServer};

/// Whether `binary`, a Redis tool, is installed ([`super::daemon::installed`]).
pub fn installed(binary: &str) -> bool {
    super::daemon::installed(binary, "redis-server")
}

/// A `redis-server` process of the test's own. A restart, on the same port, starts it
/// empty (nothing is persisted).
pub type RedisServer = RealServer<Redis>;

/// How a `redis-server` is run: with the arguments of the test.
pub struct Redis {
    /// Arguments given to every start, after ours.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port, or returns `None` (the test should return at once)
    /// when there is no `redis-server` binary outside CI. Panics in CI without one.
    pub async fn start() -> Option<RedisServer> {
        Self::start_with(|_| Vec::new()).await
    }

    /// [`start`](Self::start), with more arguments for redis-server, made from the
    /// directory the server runs in (files for it go there).
    pub async fn start_with(extra: impl FnOnce(&Path) -> Vec<String>) -> Option<RedisServer> {
        if !installed("redis-server") {
            return None;
        }
        let daemon = Daemon::new("redis");
        let extra = extra(daemon.dir());
        Some(RealServer::launch(daemon, Redis { extra }).await)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// A plain connection to it, to look at what the code under test wrote and to steer
    /// the server.
    pub async fn raw(&self) -> tokio_webwire::redis::redis::aio::MultiplexedConnection {
        let client = tokio_webwire::redis::redis::Client::open(self.url()).expect("a valid URL");
        tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("connected in time")
        .expect("a plain connection")
    }
}

impl Kind for Redis {
    const PROGRAM: &'static str = "redis-server";

    fn args(&self, command: &mut Command, port: u16, dir: &Path, log: &Path) {
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(log)
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .args(&self.extra);
    }

    /// Whether it answers PING.
    fn ready(&self, port: u16) -> impl Future<Output = bool> {
        ping(port)
    }
}

/// How many connections subscribe to `channel` (`PUBSUB NUMSUB`).
pub async fn subscribers(
    raw: &mut tokio_webwire::redis::redis::aio::MultiplexedConnection,
    channel: &str,
) -> usize {
    let counts: Vec<(String, usize)> = tokio::time::timeout(
        READY_LIMIT,
        tokio_webwire::redis::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(raw),
    )
    .await
    .expect("answered in time")
    .expect("PUBSUB NUMSUB");
    counts.first().map_or(0, |(_, n)| *n)
}

/// Redis closes every pub/sub connection (as an operator or pub/sub's
/// `client-output-buffer-limit` would) and stays up; returns how many it closed.
pub async fn kill_subscribers(
    raw: &mut tokio_webwire::redis::redis::aio::MultiplexedConnection,
) -> usize {
    tokio::time::timeout(
        READY_LIMIT,
        tokio_webwire::redis::redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(raw),
    )
    .await
    .expect("answered in time")
    .expect("CLIENT KILL")
}

/// Whether a Redis on `port` answers PING within a second.
pub async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
}

/// A session with a fresh default key and `user` in its info, for a store to keep.
pub fn session(user: &str) -> tokio_webwire::Session {
    use tokio_webwire::session::{DefaultKeyGenerator, SessionKeyGenerator};
    let mut info = tokio_webwire::SessionInfo::new();
    info.insert("user", &user).expect("a string is JSON");
    tokio_webwire::Session::new(DefaultKeyGenerator.generate(), info)
}
