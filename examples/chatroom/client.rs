//! The chat room's terminal client: what a typed line does, and how server events are
//! shown. Everything it would print goes through a channel, so the test can read it.
//!
//! Shared by `examples/chatroom/main.rs` (`--client`) and `tests/example_chatroom.rs`.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_webwire::client::{Backoff, ClientHandler, Reconnect};
use tokio_webwire::contract::Signal;
use tokio_webwire::protocol::Name;
use tokio_webwire::{Client, ConnectError, Payload, RequestError, Session};

use crate::contract::{ChatMessage, Login, Logout, Say};

/// What the client prints: a line of text.
pub(crate) type Output = mpsc::UnboundedSender<String>;

pub(crate) const HELP: &str = "/login USER PASSWORD, /logout, /quit; anything else is said";

/// Shows what the server starts: messages, connection and session changes.
#[derive(Debug)]
struct Terminal {
    output: Output,
    /// Between a disconnect and the next connect: the client restores its session on the
    /// new connection before it reports the connection, so the login it announces then
    /// waits here to be shown after `* connected`, in the order a reader expects.
    offline: Mutex<Option<Vec<String>>>,
}

impl Terminal {
    fn show(&self, line: String) {
        let _ = self.output.send(line);
    }

    /// Shows `line` now, or after `* connected` while the client is reconnecting.
    fn show_online(&self, line: String) {
        let mut offline = self.offline.lock().unwrap_or_else(PoisonError::into_inner);
        match offline.as_mut() {
            Some(held) => held.push(line),
            None => self.show(line),
        }
    }
}

fn user(session: &Session) -> String {
    session
        .info
        .get::<String>("user")
        .ok()
        .flatten()
        .unwrap_or_else(|| "?".to_owned())
}

impl ClientHandler for Terminal {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        match ChatMessage::read(&name, &payload) {
            Some(Ok(message)) => self.show(format!("<{}> {}", message.from, message.text)),
            _ => self.show(format!("* unexpected signal {name}")),
        }
    }

    async fn connected(&self, _client: &Client) {
        let held = self
            .offline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.show("* connected".to_owned());
        held.into_iter().flatten().for_each(|line| self.show(line));
    }

    async fn disconnected(&self, _client: &Client) {
        *self.offline.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
        self.show("* disconnected, reconnecting".to_owned());
    }

    /// After `/login`, and after each reconnection: the client restores its session on its
    /// own, before the connection is used, so nobody types the password twice.
    async fn session_created(&self, _client: &Client, session: &Session) {
        self.show_online(format!("* logged in as {}", user(session)));
    }

    async fn session_closed(&self, _client: &Client) {
        self.show_online("* logged out".to_owned());
    }
}

/// Connects to the chat room at `url`, showing events on `output`; reconnects after
/// `backoff` delays whenever the connection is lost, with the session restored.
pub(crate) async fn connect(
    url: &str,
    backoff: Backoff,
    output: Output,
) -> Result<Client, ConnectError> {
    Client::builder()
        .request_timeout(Duration::from_secs(10))
        .reconnect(Reconnect::Backoff(backoff))
        .handler(Terminal {
            output,
            offline: Mutex::new(None),
        })
        .connect(url)
        .await
}

/// What the terminal client says when `url` serves a page rather than WebWire: the
/// `--client` command for the chat room served with `--web` on the same host and port.
pub(crate) fn not_the_endpoint(url: &str, error: &ConnectError) -> String {
    let endpoint = format!("{}/ws", url.trim_end_matches('/'));
    format!(
        "{error}\n  a chat room served with --web has WebWire at /ws: \
         cargo run --example chatroom --features axum -- --client {endpoint}"
    )
}

/// Runs one typed line (without its line end); returns what to print, if anything: an
/// error, or the note of a message said to some of the room only. The session events and
/// the messages say the rest.
pub(crate) async fn execute(client: &Client, line: &str) -> Option<String> {
    let line = line.trim();
    let result = match line.split_whitespace().collect::<Vec<_>>()[..] {
        [] => return None,
        ["/login", user, password] => {
            let (user, password) = (user.to_owned(), password.to_owned());
            client.call(Login { user, password }).await.map(|_| None)
        }
        ["/logout"] => client.call(Logout {}).await.map(|()| None),
        [command, ..] if command.starts_with('/') => return Some(HELP.to_owned()),
        _ => {
            client
                .call(Say {
                    text: line.to_owned(),
                })
                .await
        }
    };
    match result {
        Ok(note) => note.map(|note| format!("* {note}")),
        Err(RequestError::Reply { code, message }) => Some(format!("! {code}: {message}")),
        Err(error) => Some(format!("! {error}")),
    }
}
