//! Memory a [`MemoryStore`] takes per session, and under a login churn:
//! `cargo bench --bench store_memory`.
//!
//! First it saves 100 000 small sessions (info `{"user": "alice"}`) and 10 000 with 8 000
//! bytes of info (near the default message size limit), and prints the growth of the
//! process's resident memory per session. Then (with `--bench`) it runs [`churn`] against
//! a server with the default store and with an unbounded one, each in a process of its
//! own, and prints the stored sessions and the memory grown. Linux only (reads
//! `/proc/self/status`).

use std::sync::Arc;

use bytes::Bytes;

use tokio_webwire::session::{DefaultKeyGenerator, MemoryStore, SessionKeyGenerator, SessionStore};
use tokio_webwire::{Session, SessionInfo};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, which] = &args[..] {
        if mode == "churn" {
            if let Err(error) = churn(which == "bounded") {
                eprintln!("churn failed: {error}");
                std::process::exit(1);
            }
            return;
        }
    }
    per_session();
    // Without `--bench` (`cargo test --benches`) the store's figures are enough.
    if !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    for which in ["bounded", "unbounded"] {
        let status = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .args(["churn", which])
                .status()
        });
        match status {
            Ok(status) if status.success() => {}
            other => eprintln!("churn {which}: {other:?}"),
        }
    }
}

/// Bytes per stored session, small and large.
fn per_session() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    // Every store stays alive until the end, so that one's freed memory is not counted
    // again by the next.
    let mut stores = Vec::new();
    for (count, user_len) in [(100_000, 5), (10_000, 8_000)] {
        let store = MemoryStore::new().capacity(0);
        let keys: Vec<String> = (0..count).map(|_| DefaultKeyGenerator.generate()).collect();
        let user = "u".repeat(user_len);
        let (Some(before), after) = (
            rss_kib(),
            runtime.block_on(async {
                for key in keys {
                    let mut info = SessionInfo::new();
                    info.insert("user", &user).expect("a string is JSON");
                    store.save(&Session::new(key, info)).await.expect("saved");
                }
                rss_kib()
            }),
        ) else {
            eprintln!("no /proc/self/status: nothing measured");
            return;
        };
        let grown = after.unwrap_or(before).saturating_sub(before) * 1024;
        println!(
            "{count} sessions with {user_len} bytes of info: {:.1} MiB, {} bytes per session",
            grown as f64 / (1024.0 * 1024.0),
            grown / count as u64,
        );
        stores.push(store);
    }
}

/// The churn of a client that logs in over and over and leaves every session behind:
/// one connection holds a session `K0`; another repeats [login (a new session), restore
/// `K0` (leaving the new one stored and unheld), logout (leaving `K0`, still held by the
/// first)]. Each cycle leaves one stored session nobody holds. Runs in a process of its
/// own per store (`store_memory churn bounded|unbounded`), so that one run's freed memory
/// is not reused by the next.
fn churn(bounded: bool) -> Result<(), Box<dyn std::error::Error>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_webwire::protocol::{Message, Name, RequestId};
    use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};
    use tokio_webwire::{Payload, SessionInfo};

    struct Login;

    impl Handler for Login {
        async fn request(
            &self,
            conn: &Connection,
            _name: Name,
            _payload: Payload,
        ) -> HandlerResult {
            let mut info = SessionInfo::new();
            info.insert("user", "mallory")?;
            let session = conn.create_session(info).await?;
            Ok(Payload::utf8(session.key))
        }
    }

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn frame(ws: &mut Socket) -> Result<Message, Box<dyn std::error::Error>> {
        loop {
            match ws.next().await.ok_or("the server closed")?? {
                Ws::Binary(data) => return Ok(Message::parse(data)?),
                Ws::Ping(_) | Ws::Pong(_) => {}
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
    }

    /// Logs in and returns the new session's key (the notification, then the reply).
    async fn login(ws: &mut Socket, id: u64) -> Result<Bytes, Box<dyn std::error::Error>> {
        let request = Message::request(
            RequestId::from(id),
            Name::from_static("login"),
            Payload::empty(),
        );
        ws.send(Ws::Binary(request.encode()?)).await?;
        let Message::NotifySessionCreated { .. } = frame(ws).await? else {
            return Err("no session notification".into());
        };
        match frame(ws).await? {
            Message::ReplyUtf8 { data, .. } => Ok(data),
            other => Err(format!("login failed: {other:?}").into()),
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Arc::new(if bounded {
            MemoryStore::new()
        } else {
            MemoryStore::new()
                .capacity(0)
                .idle_timeout(std::time::Duration::ZERO)
        });
        let server = Server::builder(Login)
            .session_store(Arc::clone(&store))
            .build()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/", listener.local_addr()?);
        tokio::spawn(server.serve(listener));
        let (mut holder, _) = tokio_tungstenite::connect_async(&url).await?;
        frame(&mut holder).await?; // AcceptConf
        let k0 = login(&mut holder, 1).await?;
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
        frame(&mut ws).await?;
        let start = rss_kib().unwrap_or(0);
        let label = if bounded {
            "default MemoryStore"
        } else {
            "unbounded MemoryStore"
        };
        for cycle in 1..=CHURN_CYCLES {
            let id = cycle * 3;
            login(&mut ws, id).await?;
            let restore = Message::RequestRestoreSession {
                id: RequestId::from(id + 1),
                key: k0.clone(),
            };
            ws.send(Ws::Binary(restore.encode()?)).await?;
            let Message::ReplyUtf8 { .. } = frame(&mut ws).await? else {
                return Err("restore failed".into());
            };
            let close = Message::RequestCloseSession {
                id: RequestId::from(id + 2),
            };
            ws.send(Ws::Binary(close.encode()?)).await?;
            frame(&mut ws).await?;
            if cycle % (CHURN_CYCLES / 3) == 0 {
                let grown = rss_kib().unwrap_or(0).saturating_sub(start);
                println!(
                    "{label}: {cycle} cycles, {} sessions stored, RSS +{:.1} MiB",
                    store.len(),
                    grown as f64 / 1024.0
                );
            }
        }
        Ok(())
    })
}

/// Login cycles per churn run: three times the default store's capacity.
const CHURN_CYCLES: u64 = 300_000;
