//! What a route's handler may return: anything [`IntoReply`].

use bytes::Bytes;
use serde::Serialize;

use crate::payload::Payload;
use crate::router::extract::{Json, Text};
use crate::server::HandlerError;

/// A handler's return value as the request's reply: a payload, or an error
/// ([`HandlerError::reply`] is what the client sees; any other error is an internal-error
/// reply, its text logged and never sent).
///
/// Implemented for [`Payload`], [`Json<T>`] (UTF-8 JSON), [`Text`], `String` and
/// `&'static str` (UTF-8), [`Bytes`] and `Vec<u8>` (binary), `()` (an empty reply), and
/// `Result<T, E>` of any of them with an error that converts into a [`HandlerError`] (every
/// `std::error::Error` does, as an internal error).
pub trait IntoReply {
    /// The reply.
    fn into_reply(self) -> Result<Payload, HandlerError>;
}

impl IntoReply for Payload {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Ok(self)
    }
}

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Payload::json(&self.0).map_err(HandlerError::internal)
    }
}

impl IntoReply for Text {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Ok(Payload::utf8(self.0))
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Ok(Payload::utf8(self))
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Ok(Payload::utf8(self))
    }
}

impl IntoReply for Bytes {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Ok(Payload::binary(self))
    }
}

impl IntoReply for Vec<u8> {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Ok(Payload::binary(self))
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        Ok(Payload::empty())
    }
}

impl<T: IntoReply, E: Into<HandlerError>> IntoReply for Result<T, E> {
    fn into_reply(self) -> Result<Payload, HandlerError> {
        self.map_err(Into::into)?.into_reply()
    }
}

/// A contract handler's return value: the contract's reply type, or an error.
pub trait IntoContractReply<T> {
    /// The reply value.
    fn into_contract_reply(self) -> Result<T, HandlerError>;
}

impl<T, E: Into<HandlerError>> IntoContractReply<T> for Result<T, E> {
    fn into_contract_reply(self) -> Result<T, HandlerError> {
        self.map_err(Into::into)
    }
}
