//! The HTTP side of a connection the server accepts itself: read the upgrade request, ask
//! the handler, answer with 101 or an error status (PROTOCOL.md §1.2).
//!
//! tungstenite's own server handshake takes a synchronous callback; reading the request
//! here lets [`Handler::before_upgrade`] be async (a database lookup, an auth service).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response, write_response};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::server::connection::Peer;
use crate::server::{Handler, Shared, Slot};
use crate::transport::websocket_config;

/// Upgrades `io` to a WebSocket, or answers the HTTP request and returns `None`.
///
/// The whole exchange (reading the request, the `before_upgrade` hook, the answer) is
/// bounded by the handshake timeout, and abandoned when the server closes its connections.
pub(crate) async fn upgrade<H, S>(
    shared: &Shared<H>,
    io: S,
    peer: Peer,
) -> Option<(WebSocketStream<S>, Peer, Slot)>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange =
        tokio::time::timeout(shared.config.handshake_timeout, exchange(shared, io, peer));
    tokio::select! {
        upgraded = exchange => upgraded.unwrap_or_else(|_| {
            tracing::debug!("upgrade abandoned: handshake timeout");
            None
        }),
        () = shared.close_all.cancelled() => None,
    }
}

async fn exchange<H, S>(
    shared: &Shared<H>,
    mut io: S,
    mut peer: Peer,
) -> Option<(WebSocketStream<S>, Peer, Slot)>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &shared.config;
    let read = read_request(&mut io, config.max_upgrade_request_size).await;
    // Whatever was asked, a server that is shutting down says so.
    if shared.is_shutting_down() {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        respond(&mut io, status, "server shutting down").await;
        return None;
    }
    let (request, rest) = match read {
        Ok(parsed) => parsed,
        Err(status) => {
            respond(&mut io, status, "").await;
            return None;
        }
    };
    let response = match create_response(&request) {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "not a WebSocket upgrade");
            respond(&mut io, StatusCode::BAD_REQUEST, "not a WebSocket upgrade").await;
            return None;
        }
    };
    let verdict = shared.handler.before_upgrade(&request, peer.remote_addr);
    if let Err(status) = verdict.await {
        tracing::debug!(%status, "upgrade refused by the handler");
        respond(&mut io, status, "").await;
        return None;
    }
    let Some(slot) = shared.slots.try_take() else {
        tracing::debug!("upgrade refused: too many connections");
        let status = StatusCode::SERVICE_UNAVAILABLE;
        respond(&mut io, status, "too many connections").await;
        return None;
    };
    let mut head = Vec::with_capacity(160);
    if write_response(&mut head, &response).is_err() || io.write_all(&head).await.is_err() {
        return None;
    }
    peer.user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .map(Into::into);
    let ws_config = websocket_config(config.max_message_size);
    let ws = WebSocketStream::from_partially_read(io, rest, Role::Server, Some(ws_config)).await;
    Some((ws, peer, slot))
}

/// Reads one HTTP upgrade request head; also returns the bytes read past it (the client's
/// first WebSocket frames, if it did not wait for the 101). The error is the status to
/// answer instead: 200 for `OPTIONS` (as the reference server), 400 for anything that is
/// not a `GET`, 431 for a head over `max_size`.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    max_size: usize,
) -> Result<(Request, Vec<u8>), StatusCode> {
    let mut buf = Vec::with_capacity(max_size.min(1024));
    loop {
        let mut chunk = [0u8; 1024];
        let room = (max_size + 1 - buf.len()).min(chunk.len());
        let n = io
            .read(&mut chunk[..room])
            .await
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        if n == 0 {
            return Err(StatusCode::BAD_REQUEST);
        }
        buf.extend_from_slice(&chunk[..n]);
        match Request::try_parse(&buf) {
            Ok(Some((len, request))) => {
                let rest = buf.split_off(len);
                return Ok((request, rest));
            }
            Ok(None) if buf.len() > max_size => {
                return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            Ok(None) => {}
            // tungstenite parses GET requests only.
            Err(_) if buf.starts_with(b"OPTIONS ") => {
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Err(StatusCode::OK);
                }
            }
            Err(_) => return Err(StatusCode::BAD_REQUEST),
        }
    }
}

/// Answers an HTTP request that is not upgraded, and closes the connection.
async fn respond<S: AsyncWrite + Unpin>(io: &mut S, status: StatusCode, body: &str) {
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: text/plain\r\n"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(head.as_bytes()).await;
    let _ = io.shutdown().await;
}
