//! What a route's handler may take as arguments: parts of the connection
//! ([`FromConnection`]) and, last, the message's payload read as a type ([`FromPayload`]).

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::payload::Payload;
use crate::protocol::ErrorCode;
use crate::server::{Connection, HandlerError};
use crate::session::Session;

/// The reply code of a payload that is not what the route expects (bad JSON, JSON of
/// another shape, text that is not text).
pub const INVALID_PAYLOAD: ErrorCode = ErrorCode::from_static("INVALID_PAYLOAD");

/// The reply code of a request whose route needs a session on a connection without one.
pub const NO_SESSION: ErrorCode = ErrorCode::from_static("NO_SESSION");

/// A handler argument taken from the connection (and the router's state), before the
/// handler runs; an `Err` is the request's reply instead (or drops the signal).
///
/// Implemented for [`Connection`], [`Session`] (a request without one is answered
/// [`NO_SESSION`]), `Option<Session>`, [`State`] and [`Attached`]. Implement it for your
/// own extractors (a user taken from the session, say).
///
/// ```
/// use tokio_webwire::protocol::ErrorCode;
/// use tokio_webwire::router::FromConnection;
/// use tokio_webwire::server::{Connection, HandlerError};
///
/// /// The logged-in user's name, from the session.
/// struct User(String);
///
/// impl<S> FromConnection<S> for User {
///     fn from_connection(conn: &Connection, _state: &S) -> Result<Self, HandlerError> {
///         conn.session()
///             .and_then(|session| session.info.get::<String>("user").ok().flatten())
///             .map(User)
///             .ok_or_else(|| HandlerError::reply(ErrorCode::from_static("LOGIN"), "log in first"))
///     }
/// }
/// ```
pub trait FromConnection<S>: Sized {
    /// Takes the argument from `conn` and the router's `state`.
    fn from_connection(conn: &Connection, state: &S) -> Result<Self, HandlerError>;
}

/// A handler's last argument: the message's payload read as a type ([`Json`], [`Text`],
/// [`Payload`], [`Bytes`], `()` to ignore it), or any [`FromConnection`] argument of the
/// types this crate has (then the payload is ignored).
pub trait FromPayload<S>: Sized {
    /// Reads the argument from `payload` (and `conn`, `state`).
    fn from_payload(conn: &Connection, state: &S, payload: Payload) -> Result<Self, HandlerError>;
}

/// The payload as JSON of a `T` (any encoding: UTF-16 is read as text first); as a
/// return value, the reply as UTF-8 JSON. A payload that does not parse is answered
/// [`INVALID_PAYLOAD`], naming the type expected and what was wrong.
///
/// ```
/// use serde::Deserialize;
/// use tokio_webwire::router::Json;
///
/// #[derive(Deserialize)]
/// struct Say { text: String }
///
/// async fn say(Json(say): Json<Say>) -> Json<usize> {
///     Json(say.text.len())
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// The payload as text (UTF-8 or UTF-16, or binary that is UTF-8); as a return value, a
/// UTF-8 reply. A payload that is no text is answered [`INVALID_PAYLOAD`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

/// A clone of the router's state ([`Router::with_state`](crate::router::Router::with_state)):
/// keep it cheap to clone (an `Arc`, handles).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

/// A clone of what `before_upgrade` attached to the connection
/// ([`UpgradeRequest::attach`](crate::server::UpgradeRequest::attach)). A route that asks
/// for what was not attached is a mistake of the application's: an internal error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attached<T>(pub T);

/// A payload that is not what a route expects.
fn invalid(expected: impl fmt::Display, error: impl fmt::Display) -> HandlerError {
    HandlerError::reply(INVALID_PAYLOAD, format!("expected {expected}: {error}"))
}

impl<S> FromConnection<S> for Connection {
    fn from_connection(conn: &Connection, _: &S) -> Result<Self, HandlerError> {
        Ok(conn.clone())
    }
}

impl<S> FromConnection<S> for Session {
    fn from_connection(conn: &Connection, _: &S) -> Result<Self, HandlerError> {
        conn.session()
            .ok_or_else(|| HandlerError::reply(NO_SESSION, "this request needs a session"))
    }
}

impl<S> FromConnection<S> for Option<Session> {
    fn from_connection(conn: &Connection, _: &S) -> Result<Self, HandlerError> {
        Ok(conn.session())
    }
}

impl<S: Clone> FromConnection<S> for State<S> {
    fn from_connection(_: &Connection, state: &S) -> Result<Self, HandlerError> {
        Ok(State(state.clone()))
    }
}

impl<S, T: Clone + Send + Sync + 'static> FromConnection<S> for Attached<T> {
    fn from_connection(conn: &Connection, _: &S) -> Result<Self, HandlerError> {
        conn.get::<T>().cloned().map(Attached).ok_or_else(|| {
            HandlerError::internal(format!(
                "nothing of type {} was attached to the connection",
                std::any::type_name::<T>()
            ))
        })
    }
}

impl<S, T: DeserializeOwned> FromPayload<S> for Json<T> {
    fn from_payload(_: &Connection, _: &S, payload: Payload) -> Result<Self, HandlerError> {
        let expected = || format!("JSON of {}", std::any::type_name::<T>());
        payload
            .parse_json()
            .map(Json)
            .map_err(|error| invalid(expected(), error))
    }
}

impl<S> FromPayload<S> for Text {
    fn from_payload(_: &Connection, _: &S, payload: Payload) -> Result<Self, HandlerError> {
        payload
            .to_text()
            .map(Text)
            .map_err(|error| invalid("text", error))
    }
}

impl<S> FromPayload<S> for Payload {
    fn from_payload(_: &Connection, _: &S, payload: Payload) -> Result<Self, HandlerError> {
        Ok(payload)
    }
}

impl<S> FromPayload<S> for Bytes {
    fn from_payload(_: &Connection, _: &S, payload: Payload) -> Result<Self, HandlerError> {
        Ok(payload.data)
    }
}

impl<S> FromPayload<S> for () {
    fn from_payload(_: &Connection, _: &S, _: Payload) -> Result<Self, HandlerError> {
        Ok(())
    }
}

/// The [`FromConnection`] types of this crate serve as a last argument too (the payload
/// is ignored), so a handler may take only them.
macro_rules! from_connection_as_payload {
    ($($ty:ty $(where $param:ident: $($bound:tt)+)?),*) => {$(
        impl<S $(, $param: $($bound)+)?> FromPayload<S> for $ty
        where
            $ty: FromConnection<S>,
        {
            fn from_payload(conn: &Connection, state: &S, _: Payload) -> Result<Self, HandlerError> {
                <$ty as FromConnection<S>>::from_connection(conn, state)
            }
        }
    )*};
}

from_connection_as_payload!(Connection, Session, Option<Session>, State<S>, Attached<T> where T: Clone + Send + Sync + 'static);
