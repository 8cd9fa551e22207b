//! The hooks a client calls for what the server starts: signals, connection and session
//! events.

use std::future::Future;
use std::sync::Arc;

use crate::client::events::Event;
use crate::client::handle::Client;
use crate::protocol::Name;
use crate::{Payload, Session};

/// What a [`Client`] tells the application: server signals, connection and session
/// events. Every method has a default that does nothing, so implement only what you need;
/// `async fn` works for each.
///
/// The client calls the methods one at a time, in the order the events happened, from one
/// task of its own. The connection never waits for the handler: a slow method delays the
/// next event, never a reply. Connection and session events always wait their turn;
/// server signals beyond [`ClientBuilder::max_queued_signals`](crate::ClientBuilder::max_queued_signals)
/// are dropped per the [`SignalOverflow`](crate::client::SignalOverflow) policy (counted and
/// logged). A method may use the client it is given, [`Client::request`] (whose reply is
/// never stuck behind the handler) and [`Client::close`] included.
///
/// The `client` handed to a method does not keep the client open: once every handle the
/// application holds is dropped, the client closes, handler or not, and requests through
/// `client` (or a clone of it kept by the handler) fail with
/// [`RequestError::ClientClosed`](crate::RequestError::ClientClosed). Keeping a clone in
/// the handler is therefore safe, but rarely needed. (A handle the *application* moves
/// into its handler, on the other hand, is a handle like any other: it keeps the client
/// open as long as the handler lives. Use the one each method receives.)
///
/// `()` is the handler that ignores everything; `Arc<H>` is a handler when `H` is.
///
/// ```
/// use tokio_webwire::{Client, Payload, client::ClientHandler, protocol::Name};
///
/// struct Printer;
///
/// impl ClientHandler for Printer {
///     async fn signal(&self, client: &Client, name: Name, payload: Payload) {
///         println!("signal {name}: {:?}", payload.to_text());
///         // Answering a signal with a request is fine: its reply is never stuck
///         // behind the signals still queued for this handler.
///         if name == "ping" {
///             let _ = client.request("pong", payload).await;
///         }
///     }
///
///     async fn disconnected(&self, _client: &Client) {
///         println!("connection lost");
///     }
/// }
/// ```
pub trait ClientHandler: Send + Sync + 'static {
    /// The server sent a signal. `name` may be empty.
    fn signal(
        &self,
        client: &Client,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = ()> + Send {
        let _ = (client, name, payload);
        async {}
    }

    /// A connection was established (the first one, or a reconnection) and its handshake
    /// succeeded.
    fn connected(&self, client: &Client) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }

    /// The connection was lost or closed. Requests that were waiting on it have already
    /// failed with [`RequestError::Disconnected`](crate::RequestError::Disconnected).
    fn disconnected(&self, client: &Client) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }

    /// The client's session was created or replaced: the server created one for this
    /// connection, [`Client::restore_session`] succeeded, or the session was restored
    /// automatically after a reconnection (this event then comes before
    /// [`connected`](ClientHandler::connected)). [`Client::session`] already returns it.
    fn session_created(
        &self,
        client: &Client,
        session: &Session,
    ) -> impl Future<Output = ()> + Send {
        let _ = (client, session);
        async {}
    }

    /// The client's session is gone: the server closed it, it was closed with
    /// [`Client::close_session`], or it could not be restored after a reconnection. Only
    /// fired when there was a session.
    fn session_closed(&self, client: &Client) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }
}

/// The handler that ignores every event.
impl ClientHandler for () {}

impl<H: ClientHandler> ClientHandler for Arc<H> {
    fn signal(
        &self,
        client: &Client,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = ()> + Send {
        H::signal(self, client, name, payload)
    }

    fn connected(&self, client: &Client) -> impl Future<Output = ()> + Send {
        H::connected(self, client)
    }

    fn disconnected(&self, client: &Client) -> impl Future<Output = ()> + Send {
        H::disconnected(self, client)
    }

    fn session_created(
        &self,
        client: &Client,
        session: &Session,
    ) -> impl Future<Output = ()> + Send {
        H::session_created(self, client, session)
    }

    fn session_closed(&self, client: &Client) -> impl Future<Output = ()> + Send {
        H::session_closed(self, client)
    }
}

/// Runs the handler for each event until the queue is finished. `client` is a handle that
/// does not keep the client open.
pub(crate) async fn run_events<H: ClientHandler>(handler: H, client: Client) {
    while let Some(event) = client.shared.events.next().await {
        match event {
            Event::Connected => handler.connected(&client).await,
            Event::Disconnected => handler.disconnected(&client).await,
            Event::Signal(name, payload) => handler.signal(&client, name, payload).await,
            Event::SessionCreated(session) => handler.session_created(&client, &session).await,
            Event::SessionClosed => handler.session_closed(&client).await,
        }
    }
}
