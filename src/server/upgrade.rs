//! The HTTP upgrade: checking a request and asking the handler ([`check`] and [`accept`],
//! one home for every way a request arrives), and the HTTP side of sockets the server accepts itself
//! (read the request, answer with 101 or an error status).
//!
//! Answers (PROTOCOL.md §1.2): 503 while shutting down or full, 400 without exactly one
//! `Host` (RFC 9112 §3.2), 426 for a WebSocket version other than 13 (RFC 6455 §4.4), 400
//! for anything else that is not a WebSocket upgrade, 403 for a foreign `Origin`
//! (`origin.rs`), the handler's status when `before_upgrade` refuses (500 for
//! a 1xx, which is no final answer); and for
//! sockets read here, 431 for a head over the limit and 200 for `OPTIONS`.
//!
//! tungstenite's own server handshake takes a synchronous callback; reading the request
//! here lets [`Handler::before_upgrade`] be async (a database lookup, an auth service).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request, Response, create_response, write_response,
};
use tokio_tungstenite::tungstenite::http::{Extensions, StatusCode, header};

use crate::server::connection::Peer;
use crate::server::metrics::Metrics;
use crate::server::{Handler, Place, Shared, UpgradeRequest};

/// The answer to an HTTP request that is not upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// More headers, as name and value.
    pub(crate) headers: &'static [(&'static str, &'static str)],
    /// A `text/plain` body; none when empty.
    pub(crate) body: &'static str,
}

impl Refusal {
    /// Whatever was asked, a server that is shutting down says so.
    pub(crate) const SHUTTING_DOWN: Refusal =
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server shutting down");

    /// The checks or the hook took longer than the handshake timeout (a request handed
    /// over by a router gets an answer; a socket of our own is dropped instead).
    #[cfg(feature = "hyper")]
    pub(crate) const TIMED_OUT: Refusal =
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "upgrade timed out");

    pub(crate) const fn new(status: StatusCode, body: &'static str) -> Self {
        Refusal {
            status,
            headers: &[],
            body,
        }
    }
}

/// An upgrade the server agreed to: the 101 response to send, what the connection will
/// know of its client, and its place among the server's connections.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) response: Response,
    pub(crate) peer: Peer,
    pub(crate) place: Place,
}

/// The server's own checks of an upgrade request, before anything is asked of the handler
/// ([`accept`] then asks it); with `accept`, the one place that decides whether a request
/// becomes a connection, for sockets the server reads itself and requests a hyper or axum
/// application hands over alike. Returns the 101 response to send if it is accepted.
pub(crate) fn check<H: Handler>(
    shared: &Shared<H>,
    request: &Request,
) -> Result<Response, Refusal> {
    if shared.is_shutting_down() {
        return Err(Refusal::SHUTTING_DOWN);
    }
    one_host(request)?;
    // Another version is not a malformed request: RFC 6455 §4.4 asks for 426 and the
    // version we speak, so that the client can retry with it (tungstenite's check below
    // would only say the header is missing).
    let version = request.headers().get(header::SEC_WEBSOCKET_VERSION);
    if version.is_some_and(|version| version != "13") {
        tracing::debug!(?version, "unsupported WebSocket version");
        return Err(Refusal {
            status: StatusCode::UPGRADE_REQUIRED,
            headers: &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            body: "unsupported WebSocket version",
        });
    }
    let mut response = create_response(request).map_err(|error| {
        tracing::debug!(%error, "not a WebSocket upgrade");
        Refusal::new(StatusCode::BAD_REQUEST, "not a WebSocket upgrade")
    })?;
    crate::server::client_topics::negotiate(request, &mut response);
    if !shared.config.origins.allow(request.headers()) {
        let origin = request.headers().get(header::ORIGIN);
        tracing::debug!(?origin, "upgrade refused: origin not allowed");
        return Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    // A full server refuses before the hook, which may be a call to an auth backend: a
    // flood at the limit must not become a flood of those calls. Only a look, no place
    // taken (a refused upgrade would hold one for nothing); the place is taken after the
    // hook, in one step with the check, so racing upgrades still cannot overshoot.
    if shared.places.is_full() {
        shared.metrics.connection_rejected();
        return Err(too_many_connections());
    }
    Ok(response)
}

/// The client a request from `remote_addr` is for: from a trusted proxy, the last address
/// of its `X-Forwarded-For` headers that is not itself a trusted proxy (port 0); from
/// anyone else, or without a usable header, `remote_addr`.
fn forwarded_client(
    request: &Request,
    remote_addr: Option<SocketAddr>,
    trusted: &[std::net::IpAddr],
) -> Option<SocketAddr> {
    let peer = remote_addr?;
    if !trusted.contains(&peer.ip()) {
        return Some(peer);
    }
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in forwarded.iter().rev() {
        match hop.trim().parse::<std::net::IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return Some(SocketAddr::new(ip, 0)),
            // A hop we cannot read: whatever is left of it was written by someone untrusted.
            Err(_) => break,
        }
    }
    Some(peer)
}

/// Asks the handler about a request that passed [`check`] (`response` is the 101 it
/// made), and takes the connection's place. The caller bounds it by the handshake timeout.
pub(crate) async fn accept<H: Handler>(
    shared: &Shared<H>,
    request: Request,
    response: Response,
    remote_addr: Option<SocketAddr>,
) -> Result<Accepted, Refusal> {
    let remote_addr = forwarded_client(&request, remote_addr, &shared.config.trusted_proxies);
    let mut upgrade = UpgradeRequest::new(request, remote_addr);
    if let Err(status) = shared.handler.before_upgrade(&mut upgrade).await {
        // A 1xx is no final answer (a 101 would even claim the switch): the client would
        // wait for another response, or speak WebSocket to a closed socket.
        if status.is_informational() {
            tracing::warn!(%status, "before_upgrade refused with a 1xx status: answering 500");
            return Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, ""));
        }
        tracing::debug!(%status, "upgrade refused by the handler");
        return Err(Refusal::new(status, ""));
    }
    // A shutdown that began while the hook ran: a 101 now would only be followed by a
    // close with 1001.
    if shared.is_shutting_down() {
        return Err(Refusal::SHUTTING_DOWN);
    }
    // Filled up while the hook ran.
    let Some(place) = shared.places.try_take(remote_addr) else {
        return Err(too_many_connections());
    };
    let (request, attached) = upgrade.into_parts();
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .map(Into::into);
    let peer = Peer {
        remote_addr,
        user_agent,
        attached,
        topics_extension: crate::server::client_topics::negotiated(&response),
    };
    Ok(Accepted {
        response,
        peer,
        place,
    })
}

/// HTTP/1.1 asks for 400 when a request has no `Host` or more than one (RFC 9112 §3.2),
/// as Go's server answers. Checked here, not left to whoever read the head: hyper serves
/// both to the application (a mounted request keeps every `Host` it came with, and none
/// is added), and so does the head parser of our own sockets. With two, the origin check
/// would compare `Origin` with one of them while the hook may read the other.
fn one_host(request: &Request) -> Result<(), Refusal> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), None) => Ok(()),
        (None, _) => {
            tracing::debug!("upgrade refused: no Host header");
            Err(Refusal::new(StatusCode::BAD_REQUEST, "missing Host header"))
        }
        (Some(_), Some(_)) => {
            tracing::debug!("upgrade refused: more than one Host header");
            Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "more than one Host header",
            ))
        }
    }
}

/// The refusal of a full server.
fn too_many_connections() -> Refusal {
    tracing::debug!("upgrade refused: too many connections");
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "too many connections")
}

/// Runs `step` within the handshake timeout, abandoned (`None`) at the timeout or when the
/// server closes its connections.
pub(crate) async fn bounded<H, T>(shared: &Shared<H>, step: impl Future<Output = T>) -> Option<T> {
    let step = tokio::time::timeout(shared.config.handshake_timeout, step);
    tokio::select! {
        done = step => done.map_err(|_| tracing::debug!("upgrade abandoned: handshake timeout")).ok(),
        () = shared.close_all.cancelled() => None,
    }
}

/// Upgrades the socket `io` resolves to (a TCP socket at once, a TLS stream after its
/// handshake) to a WebSocket, or answers the HTTP request and returns `None`. The
/// extensions `io` resolves with (the stream's own: a `TlsInfo`) join the request's.
///
/// The whole exchange (the TLS handshake, reading the request, the checks and the
/// `before_upgrade` hook, the answer) is bounded by the handshake timeout, and abandoned
/// when the server closes its connections.
pub(crate) async fn upgrade<H, S>(
    shared: &Shared<H>,
    io: impl Future<Output = io::Result<(S, Extensions)>>,
    remote_addr: Option<SocketAddr>,
) -> Option<((S, BytesMut), Peer, Place)>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let (io, extensions) = io
            .await
            .map_err(|error| tracing::debug!(%error, "TLS handshake failed"))
            .ok()?;
        exchange(shared, io, extensions, remote_addr).await
    };
    bounded(shared, exchange).await.flatten()
}

async fn exchange<H, S>(
    shared: &Shared<H>,
    mut io: S,
    extensions: Extensions,
    remote_addr: Option<SocketAddr>,
) -> Option<((S, BytesMut), Peer, Place)>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &shared.config;
    let read = read_request(&mut io, config.max_upgrade_request_size)
        .await
        .map(|(mut request, rest)| {
            // The stream's extensions, for the hook (a parsed head has none of its own).
            request.extensions_mut().extend(extensions);
            (request, rest)
        });
    let accepted = match read {
        // `check` refuses a readable request while shutting down; one that could not be
        // read gets the same answer then.
        Err(_) if shared.is_shutting_down() => Err(Refusal::SHUTTING_DOWN),
        Ok((request, rest)) => match check(shared, &request) {
            Ok(response) => accept(shared, request, response, remote_addr)
                .await
                .map(|accepted| (accepted, rest)),
            Err(refusal) => Err(refusal),
        },
        Err(status) => Err(Refusal::new(status, "")),
    };
    let (accepted, rest) = match accepted {
        Ok(accepted) => accepted,
        Err(refusal) => {
            respond(&mut io, &refusal, &shared.metrics).await;
            return None;
        }
    };
    let mut head = Vec::with_capacity(160);
    if write_response(&mut head, &accepted.response).is_err() || io.write_all(&head).await.is_err()
    {
        return None;
    }
    Some((
        (io, BytesMut::from(&rest[..])),
        accepted.peer,
        accepted.place,
    ))
}

/// Reads one HTTP upgrade request head; also returns the bytes read past it (the client's
/// first WebSocket frames, if it did not wait for the 101). The error is the status to
/// answer instead: 200 for `OPTIONS` (as the reference server), 400 for anything that is
/// not a `GET`, 431 for a head over `max_size`.
///
/// The head is parsed once, when its end has arrived, and each byte is searched for that
/// end once: a head dribbled a byte per read costs what one read of it costs (re-parsing
/// the whole buffer after every read did not: quadratic in the head's size).
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    max_size: usize,
) -> Result<(Request, Vec<u8>), StatusCode> {
    let mut buf = Vec::with_capacity(max_size.min(1024));
    // Where the search for the head's end goes on: no head ends before it.
    let mut searched = 0;
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
        while let Some(end) = find_head_end(&buf, searched) {
            searched = end;
            if end > max_size {
                return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            match parse_head(&buf) {
                Ok(Some((len, request))) => {
                    let rest = buf.split_off(len);
                    return Ok((request, rest));
                }
                // Empty lines before the request line, which the parser skips (RFC 9112
                // §2.2): the head ends further on.
                Ok(None) => {}
                // tungstenite parses GET requests only.
                Err(_) if buf.starts_with(b"OPTIONS ") => return Err(StatusCode::OK),
                Err(_) => return Err(StatusCode::BAD_REQUEST),
            }
        }
        searched = buf.len();
        // No head is complete yet, so every byte read is meant to be part of one. A byte
        // that never is (a TLS ClientHello starts with 0x16) is answered at once: such a
        // client would otherwise wait for the handshake timeout, never sending a head end.
        if buf[buf.len() - n..].iter().any(|&byte| never_in_head(byte)) {
            return Err(StatusCode::BAD_REQUEST);
        }
        if buf.len() > max_size {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
    }
}

/// Where the HTTP head in `buf` ends (the index after its empty line), looking at line
/// ends from `searched_from` on: the bytes before it were searched already (the two bytes
/// before it are still looked at, as the start of a line end that `\n` completes).
///
/// An empty line ends with `\r\n` or, as the parser also accepts (and Go's server does),
/// a bare `\n`: a head ends with `\n\r\n` or `\n\n`.
fn find_head_end(buf: &[u8], searched_from: usize) -> Option<usize> {
    let start = searched_from.min(buf.len());
    buf[start..]
        .iter()
        .enumerate()
        .filter(|&(_, &byte)| byte == b'\n')
        .map(|(offset, _)| start + offset)
        .find(|&lf| {
            let before = &buf[..lf];
            before.ends_with(b"\n") || before.ends_with(b"\n\r")
        })
        .map(|lf| lf + 1)
}

/// A byte the head parser refuses wherever it stands: a control byte other than tab and
/// the line ends, or DEL.
fn never_in_head(byte: u8) -> bool {
    (byte < 0x20 && !matches!(byte, b'\t' | b'\r' | b'\n')) || byte == 0x7f
}

/// Answers an HTTP request that is not upgraded, and closes the connection: the one
/// answer of every refusal on a socket of ours (mount.rs's `refusal` is a router's), so
/// counted here.
async fn respond<S: AsyncWrite + Unpin>(io: &mut S, refusal: &Refusal, metrics: &Metrics) {
    metrics.upgrade_refused(Some(refusal.status));
    let Refusal {
        status,
        headers,
        body,
    } = refusal;
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in *headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: text/plain\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let _ = io.write_all(head.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// The one place a head is parsed; counted in tests, which hold `read_request` to parsing a
/// head once however it arrives.
fn parse_head(buf: &[u8]) -> tokio_tungstenite::tungstenite::Result<Option<(usize, Request)>> {
    #[cfg(test)]
    tests::PARSES.with(|parses| parses.set(parses.get() + 1));
    Request::try_parse(buf)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, ReadBuf};
    use tokio_tungstenite::tungstenite::http::{Method, StatusCode};

    use super::{find_head_end, read_request};

    thread_local! {
        /// Heads parsed on this thread (a current-thread runtime runs the test's reads here).
        pub(super) static PARSES: Cell<usize> = const { Cell::new(0) };
    }

    /// A peer that sends its bytes one per read: the worst case for a head parser. Then it
    /// ends the stream, or, if `open`, waits for ever.
    struct Dribble {
        bytes: Vec<u8>,
        sent: usize,
        open: bool,
    }

    impl Dribble {
        fn new(bytes: impl Into<Vec<u8>>) -> Self {
            Dribble {
                bytes: bytes.into(),
                sent: 0,
                open: false,
            }
        }

        fn then_wait(self) -> Self {
            Dribble { open: true, ..self }
        }
    }

    impl AsyncRead for Dribble {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(&byte) = self.bytes.get(self.sent) {
                buf.put_slice(&[byte]);
                self.sent += 1;
            } else if self.open {
                // Never woken: the test's timeout ends the wait.
                return Poll::Pending;
            }
            // Nothing put in `buf` reads as the end of the stream.
            Poll::Ready(Ok(()))
        }
    }

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[tokio::test]
    async fn a_head_sent_one_byte_per_read_is_parsed_once() {
        PARSES.with(|parses| parses.set(0));
        let mut peer = Dribble::new([UPGRADE.as_bytes(), b"\x82\x00"].concat());
        let (request, rest) = read_request(&mut peer, 8192).await.expect("a request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/chat");
        // Read up to the head's end, not further: the frame behind it is left unread.
        assert_eq!((rest.len(), peer.sent), (0, UPGRADE.len()));
        assert_eq!(PARSES.with(Cell::get), 1);
    }

    #[tokio::test]
    async fn bytes_read_past_the_head_are_handed_on() {
        let sent = [UPGRADE.as_bytes(), b"\x82\x00"].concat();
        let (_, rest) = read_request(&mut &sent[..], 8192).await.expect("a request");
        assert_eq!(rest, b"\x82\x00");
    }

    #[tokio::test]
    async fn options_oversized_and_garbage_heads_keep_their_answers_one_byte_per_read() {
        let options = "OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n";
        let answer = read_request(&mut Dribble::new(options), 8192).await;
        assert_eq!(answer.err(), Some(StatusCode::OK));
        let huge = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(200));
        let answer = read_request(&mut Dribble::new(huge), 100).await;
        assert_eq!(
            answer.err(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let answer = read_request(&mut Dribble::new("GET / HTTP/1.1\r\nHost: x\r\n"), 8192).await;
        assert_eq!(
            answer.err(),
            Some(StatusCode::BAD_REQUEST),
            "the end of the stream"
        );
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(find_head_end(head, 0), Some(head.len() - 4));
        // Bare line feeds, which the parser accepts too.
        for head in [
            &b"GET / HTTP/1.1\nHost: x\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        ] {
            assert_eq!(find_head_end(head, 0), Some(head.len()), "{head:?}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        assert_eq!(find_head_end(b"\r\n", 0), None);
        assert_eq!(find_head_end(b"", 0), None);
    }

    #[test]
    fn the_search_goes_on_where_it_stopped_and_looks_back_two_bytes() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        // Every split of the head in two reads finds the same end, searching the second
        // read's bytes only (and the two bytes before them).
        for split in 0..=head.len() {
            let first = find_head_end(&head[..split], 0);
            let end = first.or_else(|| find_head_end(head, split));
            assert_eq!(end, Some(head.len()), "split at {split}");
        }
        // An end before `searched_from` is not found again.
        assert_eq!(find_head_end(b"\r\n\r\nGET", 4), None);
        assert_eq!(find_head_end(b"GET", 10), None);
    }

    #[tokio::test]
    async fn a_head_may_end_in_bare_line_feeds_and_follow_empty_lines() {
        for head in [
            "GET / HTTP/1.1\nHost: x\n\n",
            "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (request, rest) = read_request(&mut Dribble::new(head), 8192)
                .await
                .unwrap_or_else(|status| panic!("{head:?}: {status}"));
            assert_eq!((request.uri().path(), rest.len()), ("/", 0), "{head:?}");
        }
    }

    #[tokio::test]
    async fn bytes_no_head_holds_are_answered_at_once_not_after_a_head_end() {
        // A TLS ClientHello's first bytes; the client then waits for the server's hello.
        let mut tls =
            Dribble::new(&b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..]).then_wait();
        let answer = tokio::time::timeout(Duration::from_secs(10), read_request(&mut tls, 8192))
            .await
            .expect("answered without waiting for more");
        assert_eq!(answer.err(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(tls.sent, 1, "answered at the first byte");
    }
}
