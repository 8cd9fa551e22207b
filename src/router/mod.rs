//! Handlers as short as axum's: a [`Router`] routes requests and signals by name to async
//! functions whose arguments say what they need, and is itself a
//! [`Handler`].
//!
//! - **Arguments** ([`FromConnection`], [`FromPayload`]): the [`Connection`], the
//!   connection's [`Session`] (a request without one is answered
//!   [`NO_SESSION`]), the router's [`State`], what `before_upgrade` [`Attached`], and last
//!   the payload as [`Json<T>`], [`Text`], [`Payload`] or `Bytes`. A payload
//!   that does not parse is answered [`INVALID_PAYLOAD`] naming the type expected; the
//!   handler never runs.
//! - **Return values** ([`IntoReply`]): `Json<T>`, text, bytes, `()`, a `Payload`, or a
//!   `Result` of them whose error is a [`HandlerError`] (a reply error the client sees) or
//!   any `std::error::Error` (an internal-error reply, logged, never sent).
//! - **Contracts** ([`contract`](crate::contract)): [`Router::on`] routes a request type
//!   that carries its name and reply type, so the server's route and the client's
//!   [`Client::call`](crate::Client::call) are checked against one definition.
//! - **Names are checked when the router is built**: valid WebWire names, none routed twice
//!   ([`RouteError`]): a mistake fails at start-up, not at the first request.
//! - **Unknown names** go to the handler given to [`Router::fallback`] (its `request` and
//!   `signal`); without one ([`NotFound`]), an unknown request is answered
//!   [`UNKNOWN_REQUEST`] naming it, an unknown signal is dropped (logged at debug level).
//! - **Every other hook** (`before_upgrade`, `connected`, the session hooks, ...) goes to
//!   the handler given to [`Router::hooks`], whose `request` and `signal` the router never
//!   calls: hooks that keep a connection's state do not change what an unknown name gets.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use serde::{Deserialize, Serialize};
//! use tokio_webwire::router::{Json, Router, State, Text};
//! use tokio_webwire::server::{Connection, HandlerError, Server};
//! use tokio_webwire::{contract, Session, SessionInfo};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Login { user: String }
//! #[derive(Serialize, Deserialize)]
//! struct Welcome { visits: usize }
//! impl contract::Request for Login {
//!     const NAME: &'static str = "login";
//!     type Reply = Welcome;
//! }
//!
//! #[derive(Clone, Default)]
//! struct App { visits: Arc<AtomicUsize> }
//!
//! async fn login(conn: Connection, State(app): State<App>, login: Login)
//!     -> Result<Welcome, HandlerError> {
//!     let mut info = SessionInfo::new();
//!     info.insert("user", &login.user)?;
//!     conn.create_session(info).await?;
//!     Ok(Welcome { visits: app.visits.fetch_add(1, Ordering::Relaxed) + 1 })
//! }
//!
//! async fn whoami(session: Session) -> Result<String, HandlerError> {
//!     Ok(session.info.get::<String>("user")?.unwrap_or_default())
//! }
//!
//! let router = Router::with_state(App::default())
//!     .on(login)
//!     .request("whoami", whoami)
//!     .request("echo", |Text(text): Text| async move { text })
//!     .build()
//!     .expect("valid routes");
//! let server = Server::new(router);
//! # drop(server);
//! ```

mod extract;
mod future;
mod names;
mod reply;
mod routes;

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;

use futures_util::FutureExt;

use crate::router::future::Either;
use tokio_tungstenite::tungstenite::http::StatusCode;

pub use extract::{
    Attached, FromConnection, FromPayload, INVALID_PAYLOAD, Json, NO_SESSION, State, Text,
};
pub use reply::{IntoContractReply, IntoReply};
pub use routes::{
    Chain, ContractFn, FLAT, Push, RequestContract, Route, RouteCall, RouteFn, Routes,
    SignalContract,
};

use crate::payload::Payload;
use crate::protocol::{ErrorCode, Name, ProtocolError};
use crate::router::names::NameTable;
use crate::server::{
    CloseReason, Connection, Handler, HandlerError, HandlerResult, RestoreRefused,
    SubscribeRefused, UpgradeRequest,
};
use crate::session::Session;

/// The reply code of a request whose name no route has (the default [`NotFound`]).
pub const UNKNOWN_REQUEST: ErrorCode = ErrorCode::from_static("UNKNOWN_REQUEST");

/// Builds a routed [`Handler`]: routes by name, then [`build`](Self::build). See the
/// [module docs](self).
#[must_use = "a router does nothing until it is built and served"]
pub struct Router<S = (), R = (), K = (), F = NotFound> {
    state: S,
    routes: R,
    hooks: K,
    fallback: F,
    requests: Vec<(String, usize)>,
    signals: Vec<(String, usize)>,
}

impl Router {
    /// A router without state.
    ///
    /// ```
    /// use tokio_webwire::router::Router;
    ///
    /// let handler = Router::new().request("ping", || async { "pong" }).build().unwrap();
    /// # drop(handler);
    /// ```
    pub fn new() -> Self {
        Router::with_state(())
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl<S> Router<S> {
    /// A router whose handlers may take a clone of `state` ([`State<S>`]): keep it cheap to
    /// clone (an `Arc`, pools and handles).
    pub fn with_state(state: S) -> Self {
        Router {
            state,
            routes: (),
            hooks: (),
            fallback: NotFound,
            requests: Vec::new(),
            signals: Vec::new(),
        }
    }
}

impl<S, R, K, F> Router<S, R, K, F>
where
    S: Send + Sync + 'static,
    R: Routes<S>,
    K: Handler,
    F: Handler,
{
    /// Routes the requests named `name` to `handler`, an async function of
    /// [`FromConnection`] arguments and a last [`FromPayload`] one, returning
    /// [`IntoReply`].
    pub fn request<H, A>(self, name: &str, handler: H) -> Router<S, R::Output, K, F>
    where
        R: Push<Route<H, A>>,
        H: RouteFn<S, A>,
        A: 'static,
    {
        self.add(name, handler, true)
    }

    /// Routes the signals named `name` to `handler` (as [`request`](Self::request); what
    /// it returns is dropped, an error logged).
    pub fn signal<H, A>(self, name: &str, handler: H) -> Router<S, R::Output, K, F>
    where
        R: Push<Route<H, A>>,
        H: RouteFn<S, A>,
        A: 'static,
    {
        self.add(name, handler, false)
    }

    /// Routes the contract request `C` ([`contract::Request`](crate::contract::Request)) to
    /// `handler`: [`FromConnection`] arguments, then a `C`; it returns
    /// `Result<C::Reply, E>` (any `E` that converts into a [`HandlerError`]). Its name is
    /// `C::NAME`.
    pub fn on<C, H, A, O>(self, handler: H) -> Router<S, R::Output, K, F>
    where
        R: Push<Route<RequestContract<C, H, A>, (C, A, O)>>,
        C: crate::contract::Request,
        H: ContractFn<S, C, A, Output = Result<O, HandlerError>>,
        O: IntoContractReply<C::Reply> + 'static,
        A: 'static,
    {
        let route = RequestContract {
            handler,
            _types: PhantomData,
        };
        self.add(C::NAME, route, true)
    }

    /// Routes the contract signal `C` ([`contract::Signal`](crate::contract::Signal)) to
    /// `handler`: [`FromConnection`] arguments, then a `C`; it returns `()`.
    pub fn on_signal<C, H, A>(self, handler: H) -> Router<S, R::Output, K, F>
    where
        R: Push<Route<SignalContract<C, H, A>, (C, A)>>,
        C: crate::contract::Signal,
        H: ContractFn<S, C, A, Output = Result<(), HandlerError>>,
        A: 'static,
    {
        let route = SignalContract {
            handler,
            _types: PhantomData,
        };
        self.add(C::NAME, route, false)
    }

    /// The handler of the hooks other than requests and signals: `before_upgrade`,
    /// `connected`, `disconnected`, the session hooks, `subscribe_requested`. Its
    /// [`request`](Handler::request) and [`signal`](Handler::signal) are never called:
    /// names no route has go to the [`fallback`](Self::fallback). The default, `()`, does
    /// what [`Handler`]'s defaults do.
    ///
    /// ```
    /// use tokio_webwire::router::Router;
    /// use tokio_webwire::server::{Connection, Handler};
    ///
    /// struct Log;
    /// impl Handler for Log {
    ///     async fn connected(&self, conn: &Connection) {
    ///         println!("{} connected", conn.id());
    ///     }
    /// }
    ///
    /// // An unknown request is still answered UNKNOWN_REQUEST.
    /// let handler = Router::new().request("ping", || async { "pong" }).hooks(Log).build();
    /// # drop(handler);
    /// ```
    pub fn hooks<K2: Handler>(self, hooks: K2) -> Router<S, R, K2, F> {
        Router {
            state: self.state,
            routes: self.routes,
            hooks,
            fallback: self.fallback,
            requests: self.requests,
            signals: self.signals,
        }
    }

    /// The handler of requests and signals of names no route has (its
    /// [`request`](Handler::request) and [`signal`](Handler::signal); its other hooks are
    /// never called). The default, [`NotFound`], answers an unknown request
    /// `UNKNOWN_REQUEST` naming it, and drops an unknown signal. A fallback that takes
    /// only signals still answers requests: [`Handler`]'s default `request` is
    /// `NOT_IMPLEMENTED`, so pass them to [`NotFound`] to keep its reply.
    ///
    /// ```
    /// use tokio_webwire::{Payload, protocol::Name};
    /// use tokio_webwire::router::Router;
    /// use tokio_webwire::server::{Connection, Handler, HandlerResult};
    ///
    /// /// Every other request, passed on to the application that was there before.
    /// struct Legacy;
    /// impl Handler for Legacy {
    ///     async fn request(&self, _: &Connection, name: Name, _: Payload) -> HandlerResult {
    ///         Ok(Payload::utf8(format!("legacy {name}")))
    ///     }
    /// }
    ///
    /// let handler = Router::new().request("ping", || async { "pong" }).fallback(Legacy).build();
    /// # drop(handler);
    /// ```
    pub fn fallback<F2: Handler>(self, fallback: F2) -> Router<S, R, K, F2> {
        Router {
            state: self.state,
            routes: self.routes,
            hooks: self.hooks,
            fallback,
            requests: self.requests,
            signals: self.signals,
        }
    }

    /// Checks the routes (every name valid, none routed twice for requests or for
    /// signals) and returns the handler to serve.
    pub fn build(self) -> Result<Routed<S, R, K, F>, RouteError> {
        Ok(Routed {
            requests: names(self.requests, "request")?,
            signals: names(self.signals, "signal")?,
            state: self.state,
            routes: self.routes,
            hooks: self.hooks,
            fallback: self.fallback,
        })
    }

    fn add<H, A>(mut self, name: &str, handler: H, request: bool) -> Router<S, R::Output, K, F>
    where
        R: Push<Route<H, A>>,
        H: RouteFn<S, A>,
        A: 'static,
    {
        let index = self.requests.len() + self.signals.len();
        let list = if request {
            &mut self.requests
        } else {
            &mut self.signals
        };
        list.push((name.to_owned(), index));
        Router {
            state: self.state,
            routes: self.routes.push(Route::new(handler)),
            hooks: self.hooks,
            fallback: self.fallback,
            requests: self.requests,
            signals: self.signals,
        }
    }
}

impl<S, R, K, F> std::fmt::Debug for Router<S, R, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("requests", &self.requests)
            .field("signals", &self.signals)
            .finish_non_exhaustive()
    }
}

/// A route that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The name is no valid WebWire name (1 to 255 printable ASCII characters).
    #[error("the {kind} name {name:?} is invalid: {reason}")]
    InvalidName {
        /// `request` or `signal`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: ProtocolError,
    },
    /// The name is the empty name.
    #[error("a {kind} name must not be empty")]
    EmptyName {
        /// `request` or `signal`.
        kind: &'static str,
    },
    /// Two routes of one kind have the same name.
    #[error("the {kind} {name:?} is routed twice")]
    Duplicate {
        /// `request` or `signal`.
        kind: &'static str,
        /// The name.
        name: String,
    },
}

/// Checks the names of one kind and maps them to their routes' positions.
fn names(routes: Vec<(String, usize)>, kind: &'static str) -> Result<NameTable, RouteError> {
    let mut map: HashMap<Box<[u8]>, usize> = HashMap::with_capacity(routes.len());
    for (name, index) in routes {
        if name.is_empty() {
            return Err(RouteError::EmptyName { kind });
        }
        let checked = Name::new(name.clone()).map_err(|reason| RouteError::InvalidName {
            kind,
            name: name.clone(),
            reason,
        })?;
        if map.insert(checked.as_bytes().into(), index).is_some() {
            return Err(RouteError::Duplicate { kind, name });
        }
    }
    Ok(NameTable::new(map.into_iter().collect()))
}

/// Logs a signal handler's error (a signal has no reply to carry it).
fn signal_handled(handled: Result<Payload, HandlerError>) {
    if let Err(error) = handled {
        match error.as_reply() {
            Some((code, message)) => tracing::debug!(%code, message, "signal refused"),
            None => tracing::error!(%error, "signal failed"),
        }
    }
}

/// A built [`Router`]: the [`Handler`] to serve (`Server::new(router.build()?)`).
pub struct Routed<S, R, K, F = NotFound> {
    state: S,
    routes: R,
    hooks: K,
    fallback: F,
    requests: NameTable,
    signals: NameTable,
}

impl<S, R, K, F> std::fmt::Debug for Routed<S, R, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("requests", &self.requests.len())
            .field("signals", &self.signals.len())
            .finish_non_exhaustive()
    }
}

impl<S, R, K, F> Routed<S, R, K, F> {
    /// The router's state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The handler of the hooks other than requests and signals.
    pub fn hooks(&self) -> &K {
        &self.hooks
    }

    /// The handler of names no route has.
    pub fn fallback(&self) -> &F {
        &self.fallback
    }
}

// Every hook of `Handler` is forwarded: one added there must be added here too, or every
// router silently gets its default (as `subscribe_requested` once did).
impl<S, R, K, F> Handler for Routed<S, R, K, F>
where
    S: Send + Sync + 'static,
    R: Routes<S>,
    K: Handler,
    F: Handler,
{
    #[inline(always)]
    fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
        match self.requests.get(name.as_bytes()) {
            Some(index) => Either::Left {
                future: self.routes.call(index, conn, &self.state, payload),
            },
            None => Either::Right {
                future: self.fallback.request(conn, name, payload),
            },
        }
    }

    fn signal(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = ()> + Send {
        match self.signals.get(name.as_bytes()) {
            Some(index) => Either::Left {
                future: self
                    .routes
                    .call(index, conn, &self.state, payload)
                    .map(signal_handled),
            },
            None => Either::Right {
                future: self.fallback.signal(conn, name, payload),
            },
        }
    }

    fn before_upgrade(
        &self,
        request: &mut UpgradeRequest,
    ) -> impl Future<Output = Result<(), StatusCode>> + Send {
        self.hooks.before_upgrade(request)
    }

    fn connected(&self, conn: &Connection) -> impl Future<Output = ()> + Send {
        self.hooks.connected(conn)
    }

    fn disconnected(
        &self,
        conn: &Connection,
        reason: &CloseReason,
    ) -> impl Future<Output = ()> + Send {
        self.hooks.disconnected(conn, reason)
    }

    fn session_created(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> impl Future<Output = ()> + Send {
        self.hooks.session_created(conn, session)
    }

    fn session_restored(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> impl Future<Output = Result<(), RestoreRefused>> + Send {
        self.hooks.session_restored(conn, session)
    }

    fn session_closed(
        &self,
        conn: Option<&Connection>,
        key: &str,
    ) -> impl Future<Output = ()> + Send {
        self.hooks.session_closed(conn, key)
    }

    fn session_left(&self, conn: &Connection, key: &str) -> impl Future<Output = ()> + Send {
        self.hooks.session_left(conn, key)
    }

    fn subscribe_requested(
        &self,
        conn: &Connection,
        topic: &str,
    ) -> impl Future<Output = Result<(), SubscribeRefused>> + Send {
        self.hooks.subscribe_requested(conn, topic)
    }
}

/// The default [`Router::fallback`]: an unknown request is answered `UNKNOWN_REQUEST`,
/// naming it; an unknown signal is dropped (logged at debug level).
#[derive(Debug, Clone, Copy, Default)]
pub struct NotFound;

impl Handler for NotFound {
    async fn request(&self, _: &Connection, name: Name, _: Payload) -> HandlerResult {
        Err(HandlerError::reply(
            UNKNOWN_REQUEST,
            format!("no request named {:?}", name.as_str()),
        ))
    }

    async fn signal(&self, _: &Connection, name: Name, _: Payload) {
        tracing::debug!(%name, "signal of no route dropped");
    }
}
