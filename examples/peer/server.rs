//! The peer's handler and its servers.
//!
//! Requests (name: what it does):
//! - `echo`: replies the payload as it came, in its encoding;
//! - `describe`: replies JSON `{"encoding", "hex"}` of the payload as the server received it;
//! - `error`: an error reply, code `SAMPLE_ERROR`, the payload's text as message;
//! - `internal`: a handler failure (the client sees an internal error);
//! - `hold`: waits until a `release` request (or the shutdown deadline), then replies `released`;
//! - `release`: ends every `hold`; replies how many were waiting;
//! - `signal-me`: sends the signal `note` with the payload, then replies `sent`;
//! - `login`: creates a session whose info is `{"user": <payload text>}`;
//! - `whoami`: replies the session's user, or the error `NO_SESSION`;
//! - `logout`: closes the session from the server (the client is notified);
//! - `restart`: starts a graceful shutdown of the main server, replies once it has begun
//!   (requests after the reply are answered with the shutdown reply), then serves again on
//!   the same address with the same sessions;
//! - `shutdown`: replies, then shuts everything down and ends the process;
//! - `publish`: payload `topic|text`: publishes the signal `msg` with `text` to `topic`,
//!   replies for how many connections;
//! - `drop-me`: replies, then closes this connection (the client reconnects).
//!
//! Signals are sent back to their sender, with their name and payload.
//!
//! Topics extension: clients may subscribe themselves to `room/*` (nothing else), whose
//! topics keep their last 100 publications.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_webwire::protocol::{ErrorCode, Name};
use tokio_webwire::server::{
    Connection, Handler, HandlerError, HandlerResult, History, Server, SubscribeRefused,
};
use tokio_webwire::session::MemoryStore;
use tokio_webwire::{Encoding, Payload, SessionInfo};

/// The main server's read timeout: short, so that a test can outlast it in little time,
/// but not the minimum (1 s), so that the client's heartbeat (at 75 %) has half a second
/// of slack on a loaded machine.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The main server's message size limit: small, for the client's limit check.
const MAX_MESSAGE_SIZE: usize = 1024;
/// Connections per session: enough for the tests' two clients of one login, not three.
const MAX_SESSION_CONNECTIONS: usize = 2;
/// How long a shutdown waits for `hold`s before it stops them (they get the shutdown
/// reply): short, so a restart with a `hold` pending takes the tests little time, and
/// long enough for the request a test sends right after the restart's reply to meet the
/// shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// What a request asks of the process, beyond its own connection.
#[derive(Debug)]
enum Control {
    /// Restart the main server; the sender is told once the shutdown has begun.
    Restart(oneshot::Sender<()>),
    /// End the process.
    Shutdown,
}

/// The handler of both servers.
#[derive(Debug)]
pub(crate) struct Peer {
    released: Notify,
    control: mpsc::UnboundedSender<Control>,
}

/// An error reply with `code` and `message`.
fn reply(code: &'static str, message: impl Into<String>) -> HandlerError {
    HandlerError::reply(ErrorCode::from_static(code), message)
}

/// The encoding's name as the JavaScript client spells it.
fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Binary => "binary",
        Encoding::Utf8 => "utf8",
        Encoding::Utf16 => "utf16",
    }
}

impl Handler for Peer {
    async fn request(&self, conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        match name.as_str() {
            "echo" => Ok(payload),
            "describe" => {
                let hex: String = payload.data.iter().map(|b| format!("{b:02x}")).collect();
                let described = serde_json::json!({
                    "encoding": encoding_name(payload.encoding),
                    "hex": hex,
                });
                Ok(Payload::json(&described)?)
            }
            "error" => Err(reply("SAMPLE_ERROR", payload.to_text()?)),
            "internal" => Err(HandlerError::internal("the internal request always fails")),
            "hold" => {
                self.released.notified().await;
                Ok(Payload::utf8("released"))
            }
            "release" => {
                // `notify_waiters` wakes only those already waiting: the tests release after
                // the hold's outcome they wait for, so none is missed.
                self.released.notify_waiters();
                Ok(Payload::utf8("released"))
            }
            "signal-me" => {
                conn.signal(&Name::from_static("note"), payload).await?;
                Ok(Payload::utf8("sent"))
            }
            "login" => {
                let mut info = SessionInfo::new();
                info.insert("user", &payload.to_text()?)?;
                conn.create_session(info).await?;
                Ok(Payload::utf8("logged in"))
            }
            "whoami" => {
                let session = conn
                    .session()
                    .ok_or_else(|| reply("NO_SESSION", "not logged in"))?;
                let user: Option<String> = session.info.get("user")?;
                Ok(Payload::utf8(user.unwrap_or_default()))
            }
            "logout" => {
                conn.close_session().await?;
                Ok(Payload::utf8("logged out"))
            }
            "restart" => {
                let (begun, begins) = oneshot::channel();
                self.control
                    .send(Control::Restart(begun))
                    .map_err(|_| HandlerError::internal("the peer is ending"))?;
                // The reply leaves once the shutdown has begun, so the client's next request
                // meets it.
                begins
                    .await
                    .map_err(|_| HandlerError::internal("the peer is ending"))?;
                Ok(Payload::utf8("restarting"))
            }
            "shutdown" => {
                self.control
                    .send(Control::Shutdown)
                    .map_err(|_| HandlerError::internal("the peer is ending"))?;
                Ok(Payload::utf8("shutting down"))
            }
            "publish" => {
                let text = payload.to_text()?;
                let (topic, text) = text
                    .split_once('|')
                    .ok_or_else(|| reply("BAD_PUBLISH", "topic|text"))?;
                let here = conn.publish(topic, "msg", text.to_owned()).await?;
                Ok(Payload::utf8(here.to_string()))
            }
            "drop-me" => {
                // The reply leaves before the close frame.
                conn.close();
                Ok(Payload::utf8("dropping"))
            }
            _ => Err(reply("UNKNOWN_REQUEST", format!("no request {name}"))),
        }
    }

    async fn subscribe_requested(
        &self,
        _conn: &Connection,
        topic: &str,
    ) -> Result<(), SubscribeRefused> {
        if topic.starts_with("room/") {
            Ok(())
        } else {
            Err(SubscribeRefused)
        }
    }

    async fn signal(&self, conn: &Connection, name: Name, payload: Payload) {
        if let Err(error) = conn.signal(&name, payload).await {
            tracing::warn!(%error, "signal not sent back");
        }
    }
}

/// The main server: sessions in `store`, the tests' limits.
fn main_server(peer: &Arc<Peer>, store: &Arc<MemoryStore>) -> io::Result<Server<Arc<Peer>>> {
    Server::builder(Arc::clone(peer))
        .session_store(Arc::clone(store))
        .read_timeout(READ_TIMEOUT)
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_session_connections(MAX_SESSION_CONNECTIONS)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .history("room/*", History::last(100))
        .build()
        .map_err(io::Error::other)
}

/// Binds `addr` and serves `server` on it in a task; returns the bound address.
async fn serve(server: &Server<Arc<Peer>>, addr: &str) -> io::Result<SocketAddr> {
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(server.serve(listener));
    Ok(local)
}

/// Serves both servers until Ctrl-C, the end of stdin or a `shutdown` request.
pub(crate) async fn run(addr: &str) -> io::Result<()> {
    let (control, mut requests) = mpsc::unbounded_channel();
    let peer = Arc::new(Peer {
        released: Notify::new(),
        control,
    });
    let store = Arc::new(MemoryStore::new());

    let mut main = main_server(&peer, &store)?;
    let local = serve(&main, addr).await?;
    let no_sessions = Server::builder(Arc::clone(&peer))
        .sessions(false)
        .build()
        .map_err(io::Error::other)?;
    let other = serve(&no_sessions, &SocketAddr::new(local.ip(), 0).to_string()).await?;
    println!(r#"{{"url":"ws://{local}/","no_sessions_url":"ws://{other}/"}}"#);

    // The end of stdin: the test runner that started this process is gone. Read on a
    // thread of its own: tokio's stdin reads on the runtime's blocking pool, whose shutdown
    // would wait for the read, so the process could not end before its stdin does.
    let (stdin_closed, mut stdin_closes) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = stdin_closed.send(());
    });
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(Control::Restart(begun)) => {
                    let stopping = main.clone();
                    let stopped = tokio::spawn(async move { stopping.shutdown().await });
                    while !main.is_shutting_down() {
                        tokio::task::yield_now().await;
                    }
                    let _ = begun.send(());
                    // Done when every connection is closed and the listener dropped: the
                    // address is free again.
                    let _ = stopped.await;
                    main = main_server(&peer, &store)?;
                    serve(&main, &local.to_string()).await?;
                }
                Some(Control::Shutdown) | None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut stdin_closes => break,
        }
    }
    tokio::join!(main.shutdown(), no_sessions.shutdown());
    Ok(())
}
