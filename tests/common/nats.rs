//! A real `nats-server` for the tests of feature `nats`: started on a free port of
//! 127.0.0.1 (`nats-server -a 127.0.0.1 -p PORT`, with its HTTP monitoring on another free
//! port of 127.0.0.1), stopped (killed and reaped) when dropped, and restartable on the same
//! ports (a "NATS restarted" test).
//!
//! Without a `nats-server` binary a test is skipped ([`NatsServer::start`] returns `None`
//! after saying so on stderr), unless the environment variable `CI` is set: CI installs
//! nats-server (`.ci/run`), and a test that silently skipped there would prove nothing.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::daemon::{Daemon, Kind, READY_LIMIT, RealServer, free_port, installed};

/// A `nats-server` process of the test's own. A restart, on the same ports, knows no
/// client (NATS keeps nothing).
pub type NatsServer = RealServer<Nats>;

/// How a `nats-server` is run: its monitoring port, and whether it speaks TLS.
pub struct Nats {
    monitor: u16,
    /// `--tls --tlscert --tlskey`: the server then accepts TLS connections only.
    tls: Option<(PathBuf, PathBuf)>,
}

impl NatsServer {
    /// Starts a server on a free port, or returns `None` (the test should return at once)
    /// when there is no `nats-server` binary outside CI. Panics in CI without one.
    pub async fn start() -> Option<NatsServer> {
        Self::start_with(None).await
    }

    /// Starts a server that speaks TLS only, with the certificate and key given as PEM
    /// text (a self-signed one for 127.0.0.1 in the test); `None` as for [`start`].
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Option<NatsServer> {
        Self::start_with(Some((cert_pem, key_pem))).await
    }

    async fn start_with(tls: Option<(&str, &str)>) -> Option<NatsServer> {
        if !installed("nats-server", "nats-server") {
            return None;
        }
        let daemon = Daemon::new("nats");
        // The server reads them at every start: they stay beside its log.
        let tls = tls.map(|(cert_pem, key_pem)| {
            let (cert, key) = (daemon.dir().join("cert.pem"), daemon.dir().join("key.pem"));
            std::fs::write(&cert, cert_pem).expect("the certificate written");
            std::fs::write(&key, key_pem).expect("the key written");
            (cert, key)
        });
        Some(RealServer::launch(daemon, Nats { monitor: 0, tls }).await)
    }

    /// `nats://127.0.0.1:<port>` (`tls://…` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.kind().tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// The server's own view of its client connections: the monitoring endpoint
    /// `/connz?subs=1`, each connection with its `name`, `subscriptions_list` and the
    /// messages it was sent (`out_msgs`) and sent (`in_msgs`).
    pub async fn connections(&self) -> Vec<Value> {
        let body = http_get(self.kind().monitor, "/connz?subs=1&limit=1024").await;
        let connz: Value = serde_json::from_str(&body).expect("connz is JSON");
        connz["connections"]
            .as_array()
            .cloned()
            .expect("connz lists connections")
    }

    /// The connection named `name` (set with `ConnectOptions::name`).
    pub async fn connection(&self, name: &str) -> Value {
        self.connections()
            .await
            .into_iter()
            .find(|connection| connection["name"] == name)
            .unwrap_or_else(|| panic!("no connection named {name:?}"))
    }
}

impl Kind for Nats {
    const PROGRAM: &'static str = "nats-server";

    fn take_other_ports(&mut self) {
        self.monitor = free_port();
    }

    fn args(&self, command: &mut Command, port: u16, _: &Path, log: &Path) {
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            // Monitoring listens on the client address (-a): 127.0.0.1 too.
            .args(["-m", &self.monitor.to_string()])
            .arg("-l")
            .arg(log);
        if let Some((cert, key)) = &self.tls {
            command
                .arg("--tls")
                .arg("--tlscert")
                .arg(cert)
                .arg("--tlskey")
                .arg(key);
        }
    }

    /// Whether it greets a client and its monitoring answers.
    async fn ready(&self, port: u16) -> bool {
        greets(port).await && answers(self.monitor).await
    }
}

/// Whether a NATS server on `port` sends its `INFO` line within a second (it does before
/// any TLS, so this works for a TLS server too).
async fn greets(port: u16) -> bool {
    let exchange = async {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line.starts_with("INFO "))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
}

/// Whether the monitoring port answers HTTP.
async fn answers(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1."))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
}

/// The body of `GET path` on the monitoring port (HTTP/1.0: the server closes after it).
async fn http_get(port: u16, path: &str) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(READY_LIMIT, exchange)
        .await
        .expect("the monitoring endpoint answered in time")
        .expect("the monitoring endpoint answered");
    match response.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            body.to_owned()
        }
        _ => panic!("GET {path}: {response}"),
    }
}
