//! A real `redis-server` for the tests of feature `redis`: started on a free port of
//! 127.0.0.1 with no persistence, stopped (killed and reaped) when dropped, and restartable
//! on the same port (a "Redis restarted" test).
//!
//! Without a `redis-server` binary a test is skipped ([`RedisServer::start`] returns `None`
//! after saying so on stderr), unless the environment variable `CI` is set: CI installs
//! Redis (`.ci/run`), and a test that silently skipped there would prove nothing.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a started server has to answer PING.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// How many times a start is tried (each on a new free port, or the same one for a restart).
const ATTEMPTS: usize = 5;

/// A `redis-server` process of the test's own.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
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
    pub async fn start_with(
        extra: impl FnOnce(&std::path::Path) -> Vec<String>,
    ) -> Option<RedisServer> {
        if !installed("redis-server") {
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tokio-webwire-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory for redis-server");
        let extra = extra(&dir);
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
            extra,
        };
        for attempt in 1..=ATTEMPTS {
            // Redis cannot bind port 0 and tell us which port it got: take a free one and
            // give it back. Another process may take it meanwhile; then the start fails and
            // is tried again on another.
            server.port = free_port();
            match server.spawn().await {
                Ok(()) => return Some(server),
                Err(why) => eprintln!("redis-server start {attempt} failed: {why}"),
            }
        }
        panic!("redis-server did not start in {ATTEMPTS} attempts");
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
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

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and reaps it: its port refuses connections once this returns.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it has exited already; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty (nothing is persisted), on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        for attempt in 1..=ATTEMPTS {
            match self.spawn().await {
                Ok(()) => return,
                Err(why) => eprintln!("redis-server restart {attempt} failed: {why}"),
            }
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Runs `redis-server` on `self.port` and waits until it answers PING; on failure the
    /// process is gone and its log is in the error.
    async fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run redis-server: {err}"))?;
        self.child = Some(child);
        let ready = tokio::time::timeout(READY_LIMIT, async {
            loop {
                if let Some(child) = &mut self.child {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("redis-server exited: {status}"));
                    }
                }
                if ping(self.port).await {
                    return Ok(());
                }
                // Polling a process we cannot be told about: it has no readiness signal
                // but answering.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no PONG within {READY_LIMIT:?}")));
        if let Err(why) = ready {
            self.stop();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{why}; its log:\n{log}"));
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// Whether `binary` (a Redis tool, run with `--version`) is installed; outside CI a test
/// is skipped without it (this says so on stderr), in CI it must be there (this panics).
pub fn installed(binary: &str) -> bool {
    match Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{binary} is not installed, and CI is set: the Redis tests must run in CI \
                     (`.ci/run` installs it with apt-get install -y redis-server)"
                );
            }
            eprintln!(
                "SKIPPED: {binary} is not installed (apt-get install redis-server); this \
                 Redis test did not run"
            );
            false
        }
        Err(err) => panic!("cannot run {binary} --version: {err}"),
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
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
