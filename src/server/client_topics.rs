//! The topics extension on the server (`docs/topics.md`): the sub-protocol an upgrade
//! selects when the client offers it, and the `ww.` requests of a client that did.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};

use crate::payload::{Encoding, Payload};
use crate::protocol::topics::{self, Subscribe, codes};
use crate::protocol::{ErrorCode, Message, Name, RequestId};
use crate::server::panic::catch_panic;
use crate::server::{Connection, Handler, Shared, TopicError};

/// Selects the extension's sub-protocol in the `101` when the request offers it among
/// its `Sec-WebSocket-Protocol` values; a request that does not is answered as before.
pub(crate) fn negotiate(request: &Request, response: &mut Response) {
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|protocol| protocol.trim() == topics::SUBPROTOCOL);
    if offered {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(topics::SUBPROTOCOL),
        );
    }
}

/// Whether the `101` selected the extension.
pub(crate) fn negotiated(response: &Response) -> bool {
    response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .is_some_and(|value| value == topics::SUBPROTOCOL)
}

/// Whether a request of a connection is the extension's (a `ww.` name, negotiated).
pub(crate) fn is_extension_request(conn: &Connection, name: &Name) -> bool {
    conn.speaks_topics() && name.as_str().starts_with(topics::RESERVED_PREFIX)
}

/// Answers one of the extension's requests.
pub(crate) async fn handle<H: Handler>(
    shared: &Shared<H>,
    conn: &Connection,
    id: RequestId,
    name: &Name,
    payload: Payload,
) -> Message {
    if payload.encoding != Encoding::Binary {
        return error(
            id,
            codes::BAD_REQUEST,
            "the extension's requests are binary",
        );
    }
    if *name == topics::SUBSCRIBE {
        subscribe(shared, conn, id, &payload.data).await
    } else if *name == topics::UNSUBSCRIBE {
        match topics::parse_unsubscribe(&payload.data) {
            Ok(topic) => {
                conn.unsubscribe_client(topic);
                Message::reply(id, Payload::binary(Bytes::new()))
            }
            Err(wrong) => error(id, codes::BAD_REQUEST, &wrong.to_string()),
        }
    } else {
        error(id, codes::BAD_REQUEST, "unknown extension request")
    }
}

async fn subscribe<H: Handler>(
    shared: &Shared<H>,
    conn: &Connection,
    id: RequestId,
    payload: &[u8],
) -> Message {
    let request = match Subscribe::parse(payload) {
        Ok(request) => request,
        Err(wrong) => return error(id, codes::BAD_REQUEST, &wrong.to_string()),
    };
    let asked = catch_panic(shared.handler.subscribe_requested(conn, &request.topic)).await;
    match asked {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return error(id, codes::REFUSED, "subscription refused"),
        Err(panic) => {
            tracing::error!(panic, "the subscribe_requested hook panicked: refused");
            return error(id, codes::REFUSED, "subscription refused");
        }
    }
    match conn.subscribe_client(&request.topic, request.resume).await {
        Ok(answer) => Message::reply(id, Payload::binary(answer.encode())),
        Err(TopicError::TooManyTopics { limit }) => error(
            id,
            codes::TOO_MANY_TOPICS,
            &format!("at most {limit} topics per connection"),
        ),
        Err(TopicError::History(why)) => {
            tracing::warn!(topic = %request.topic, error = %why, "a subscription could not read the shared history");
            error(
                id,
                codes::UNAVAILABLE,
                "the topic's history is unavailable, try again",
            )
        }
        // Closing: the client will not read the answer; it subscribes again later.
        Err(TopicError::Closed) => error(id, codes::UNAVAILABLE, "the connection is closing"),
        Err(other) => error(id, codes::BAD_REQUEST, &other.to_string()),
    }
}

fn error(id: RequestId, code: &'static str, message: &str) -> Message {
    Message::ReplyError {
        id,
        code: ErrorCode::from_static(code),
        message: Bytes::copy_from_slice(message.as_bytes()),
    }
}
