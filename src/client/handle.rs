//! [`Client`](crate::client::Client): the application's handle; the last one dropped closes the client.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::RequestError;
use crate::client::pending::Kind;
use crate::client::send::encode;
use crate::client::shared::{Shared, State};
use crate::protocol::{AcceptConf, IntoName, Message, RequestId};
use crate::{Payload, Session};

/// A WebWire client: sends requests and signals to one server and receives its signals.
///
/// `Client` is a cheap handle (`Clone + Send + Sync`): clone it into as many tasks as you
/// like; they share one connection, and any number of requests may be in flight at once.
/// Replies are matched to requests by an 8-byte identifier, a per-client `u64` counter
/// from 1 written little-endian, as the Go client does.
///
/// When the connection is lost, requests that were already handed to it fail with
/// [`RequestError::Disconnected`] (their reply can never come). The client then reconnects
/// per its [`Reconnect`](crate::client::Reconnect) policy; requests and signals issued meanwhile wait for the new
/// connection up to their own timeout, or fail at once with `Disconnected` when
/// reconnecting is off (or has given up). A malformed message from the server is a
/// protocol violation: the client closes the connection (code 1002) and treats it as lost.
///
/// The server may give the connection a session ([`ClientHandler::session_created`](crate::client::ClientHandler::session_created));
/// [`session`](crate::client::Client::session) returns it, [`restore_session`](crate::client::Client::restore_session)
/// and [`close_session`](crate::client::Client::close_session) restore one by its key and close it. The
/// client keeps its session across reconnections: it restores it on each new connection
/// before any request may use it.
///
/// After [`close`](crate::client::Client::close), or once every handle is dropped, every method fails
/// with [`RequestError::ClientClosed`] (except [`session`](crate::client::Client::session)). The
/// `&Client` a [`ClientHandler`](crate::client::ClientHandler) method receives is not such a handle: a handler cannot
/// keep its client open.
///
/// One task per connection (its driver) owns the socket: it writes queued requests in
/// batches, reads and completes replies, times out requests by one sweep of their
/// deadlines (a request fails with [`RequestError::Timeout`] at most a millisecond after
/// its deadline), and sends heartbeats. It never waits for the handler.
///
/// # Cancel safety
/// [`request`](crate::client::Client::request), [`request_with_timeout`](crate::client::Client::request_with_timeout) and
/// [`signal`](crate::client::Client::signal) may be dropped at any await point (a `select!`, a timeout of
/// your own, an aborted task): a dropped request removes its pending entry, so nothing
/// leaks, and a reply that arrives later is ignored. Dropping does not recall what was
/// already queued: the request or signal may still reach the server and be handled.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use tokio_webwire::{Client, Payload, RequestError};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::connect("ws://127.0.0.1:8081/").await?;
///
/// // Names and payloads from &str, String, Bytes, Payload; replies as Payload.
/// let reply = client.request("echo", "hello").await?;
/// assert_eq!(reply.to_text()?, "hello");
///
/// match client
///     .request_with_timeout("auth", Payload::binary(vec![1, 2, 3]), Duration::from_secs(2))
///     .await
/// {
///     Ok(reply) => println!("{} bytes", reply.len()),
///     Err(RequestError::Reply { code, message }) => println!("refused: {code} {message}"),
///     Err(other) => return Err(other.into()),
/// }
///
/// client.signal("ping", Payload::empty()).await?;
/// client.close().await;
/// assert_eq!(client.request("echo", "late").await, Err(RequestError::ClientClosed));
/// # Ok(()) }
/// ```
///
/// Its `Debug` output is short and holds no secret: the URL without credentials, query or
/// fragment, the connection's state, and whether there is a session (never its key):
///
/// ```no_run
/// # async fn demo() -> Result<(), tokio_webwire::ConnectError> {
/// let client = tokio_webwire::Client::connect("ws://127.0.0.1:8081/ws?token=s3cret").await?;
/// assert_eq!(
///     format!("{client:?}"),
///     r#"Client { url: "ws://127.0.0.1:8081/ws?<redacted>", state: Connected { generation: 1 }, session: false }"#,
/// );
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
    /// `None` for the handle a handler gets: it does not keep the client open. Held only
    /// for its `Drop`.
    #[allow(dead_code)]
    pub(crate) owner: Option<Arc<Owner>>,
}

/// Held by every handle of the application; the last one dropped closes the client.
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

impl std::fmt::Debug for Client {
    /// What helps reading a log: the URL without credentials, the state, whether there is
    /// a session (never its key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &*self.shared;
        f.debug_struct("Client")
            .field("url", &shared.config.redacted_url())
            .field("state", &*shared.state.borrow())
            .field("session", &shared.has_session())
            .finish()
    }
}

impl Client {
    /// A handle that does not keep the client open (the library's own tasks hold these).
    pub(crate) fn view(shared: Arc<Shared>) -> Client {
        Client {
            shared,
            owner: None,
        }
    }

    /// Sends request `name` with `payload` and waits for the reply, for at most the
    /// client's request timeout (60 s unless configured).
    ///
    /// `name` may be empty, but not together with an empty payload. See
    /// [`request_with_timeout`](crate::client::Client::request_with_timeout) for the details.
    ///
    /// Cancel safety: cancel safe in the sense of the [type's documentation](Client#cancel-safety):
    /// a dropped request leaves nothing behind, but may still reach the server.
    ///
    /// Requests in flight together share the connection's writes and reads. To keep many
    /// in flight from one task, send them through a [`Pipeline`](crate::client::Pipeline), which hands their
    /// outcomes back as they come: no future, waker, wake-up or shared entry per request.
    /// On the load bench (4 connections × 64 in flight of 16 B, medians of 3) it took a
    /// third less client CPU per request than this method awaited in a task each or in a
    /// `FuturesUnordered`, and as much as raw tokio-tungstenite loops at 4 KiB.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut pipeline = client.pipeline();
    /// for i in 0..64 {
    ///     pipeline.send("echo", format!("#{i}")).await?;
    /// }
    /// while let Some((_ticket, reply)) = pipeline.next().await {
    ///     println!("{:?}", reply?.to_text());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<Payload, RequestError> {
        let timeout = self.shared.config.request_timeout;
        self.request_with_timeout(name, payload, timeout).await
    }

    /// Sends request `name` with `payload` and waits up to `timeout` for the reply.
    ///
    /// The timeout covers everything: waiting for a connection while reconnecting, waiting
    /// for room in the send queue, and the reply. Fails locally, sending nothing, when the
    /// name is invalid ([`RequestError::InvalidName`]), the message could not be parsed
    /// by any peer ([`RequestError::InvalidMessage`]) or is larger than the server
    /// accepts ([`RequestError::PayloadTooLarge`]). Cancel safe in the sense of the type's
    /// documentation.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) {
    /// use std::time::Duration;
    /// use tokio_webwire::RequestError;
    ///
    /// let reply = client.request_with_timeout("slow", "x", Duration::from_millis(100)).await;
    /// assert!(matches!(reply, Ok(_) | Err(RequestError::Timeout { .. })));
    /// # }
    /// ```
    pub async fn request_with_timeout(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload, RequestError> {
        let shared = &*self.shared;
        shared.check_open()?;
        let name = name.into_name().map_err(RequestError::InvalidName)?;
        let id = shared.next_id();
        // Encoded once, before the size check: the length is the frame's.
        let frame = encode(&Message::request(RequestId::from(id), name, payload.into()))?;
        let deadline = (Instant::now().checked_add(timeout), timeout);
        shared.exchange(frame, (id, Kind::Request), deadline).await
    }

    /// Sends signal `name` with `payload`: one-way, never answered.
    ///
    /// Returns once the signal is queued for the connection's driver, which is no proof
    /// that it reached the server. While reconnecting it waits for the connection, up to
    /// the client's request timeout ([`RequestError::Timeout`]). Fails locally like
    /// [`request`](crate::client::Client::request) on invalid input, and also for a named UTF-16 signal
    /// without payload, which no parser accepts. Cancel safe: dropped before it returns,
    /// the signal was either queued or not sent at all.
    pub async fn signal(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<(), RequestError> {
        let shared = &*self.shared;
        shared.check_open()?;
        let name = name.into_name().map_err(RequestError::InvalidName)?;
        let frame = encode(&Message::signal(name, payload.into()))?;
        shared.send_signal(frame).await
    }

    /// Closes the client gracefully and waits until its connection is closed.
    ///
    /// Pending requests fail with [`RequestError::ClientClosed`]; signals queued before
    /// the call are still written, then a close frame (1000), and the client waits up to
    /// 1 s for the server's answer. A server that does not read holds this up for at most
    /// the [`write_timeout`](crate::client::ClientBuilder::write_timeout) before the socket is dropped. Afterwards every method fails with `ClientClosed`, on every
    /// clone. Closing twice is harmless. Cancel safe: the close proceeds in the background
    /// if the returned future is dropped.
    pub async fn close(&self) {
        self.shared.shut_down();
        self.shared.tasks.wait().await;
    }

    /// The client's session (a copy), if it has one.
    ///
    /// The server creates sessions ([`ClientHandler::session_created`](crate::client::ClientHandler::session_created) tells when);
    /// [`restore_session`](crate::client::Client::restore_session) restores one by its key. The session is
    /// kept while disconnected and restored automatically after a reconnection (see
    /// [`ClientBuilder::restore_session_on_reconnect`](crate::client::ClientBuilder::restore_session_on_reconnect)).
    #[must_use]
    pub fn session(&self) -> Option<Session> {
        self.shared.session()
    }

    /// Whether the client is connected right now.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.state.borrow(), State::Connected(_))
    }

    /// The server's handshake parameters (protocol version, read timeout, message size
    /// limit, sub-protocol) of the current connection, if connected.
    #[must_use]
    pub fn server_conf(&self) -> Option<AcceptConf> {
        match &*self.shared.state.borrow() {
            State::Connected(link) => Some(link.conf.clone()),
            _ => None,
        }
    }

    /// Sends request `name` with `req` as its JSON payload (UTF-8) and reads the reply's
    /// JSON as `Resp` (a UTF-16 reply is decoded first), within the client's request
    /// timeout.
    ///
    /// Fails like [`request`](crate::client::Client::request), and with [`RequestError::Json`] when `req`
    /// cannot be serialised (nothing sent) or the reply is not a `Resp`. Cancel safe like
    /// [`request`](crate::client::Client::request).
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// #[derive(serde::Serialize)]
    /// struct Login<'a> { user: &'a str, password: &'a str }
    /// #[derive(serde::Deserialize)]
    /// struct Welcome { display_name: String }
    ///
    /// let welcome: Welcome = client
    ///     .request_json("login", &Login { user: "alice", password: "wonderland" })
    ///     .await?;
    /// println!("hello, {}", welcome.display_name);
    /// # Ok(()) }
    /// ```
    pub async fn request_json<Req, Resp>(
        &self,
        name: impl IntoName,
        req: &Req,
    ) -> Result<Resp, RequestError>
    where
        Req: serde::Serialize + ?Sized,
        Resp: serde::de::DeserializeOwned,
    {
        let json = |err: serde_json::Error| RequestError::Json {
            reason: err.to_string(),
        };
        let payload = Payload::json(req).map_err(json)?;
        let reply = self.request(name, payload).await?;
        reply.parse_json().map_err(json)
    }

    /// Sends the contract request `request` ([`contract::Request`](crate::contract::Request))
    /// and reads its reply as the contract's reply type: the server's
    /// [`Router::on`](crate::router::Router::on) route and this call are checked against the
    /// same definition. An error reply is [`RequestError::Reply`], a reply that is not the
    /// reply type's JSON [`RequestError::Json`].
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Login { user: String }
    /// # #[derive(Serialize, Deserialize)] struct Welcome { visits: usize }
    /// # impl tokio_webwire::contract::Request for Login {
    /// #     const NAME: &'static str = "login"; type Reply = Welcome; }
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// let welcome: Welcome = client.call(Login { user: "alice".into() }).await?;
    /// println!("visit number {}", welcome.visits);
    /// # Ok(()) }
    /// ```
    pub async fn call<R: crate::contract::Request>(
        &self,
        request: R,
    ) -> Result<R::Reply, RequestError> {
        self.request_json(R::NAME, &request).await
    }

    /// Sends the contract signal `signal` ([`contract::Signal`](crate::contract::Signal)) as
    /// UTF-8 JSON.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Typing { user: String }
    /// # impl tokio_webwire::contract::Signal for Typing { const NAME: &'static str = "typing"; }
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// client.emit(&Typing { user: "alice".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit<G: crate::contract::Signal>(&self, signal: &G) -> Result<(), RequestError> {
        let payload = Payload::json(signal).map_err(|err| RequestError::Json {
            reason: err.to_string(),
        })?;
        self.signal(G::NAME, payload).await
    }

    /// How many server signals were dropped because the handler fell behind (see
    /// [`ClientBuilder::max_queued_signals`](crate::client::ClientBuilder::max_queued_signals) and [`SignalOverflow`](crate::client::SignalOverflow)), over the client's
    /// life.
    #[must_use]
    pub fn dropped_signals(&self) -> u64 {
        self.shared.events.dropped()
    }

    /// The number of requests waiting for a reply. A test hook, not a stable API.
    #[doc(hidden)]
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        self.shared.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn client_is_clone_send_sync() {
        assert_send_sync::<Client>();
    }
}
