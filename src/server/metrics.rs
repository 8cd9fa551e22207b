//! The server's metrics (feature `metrics`): what they are called, what they count, and
//! what they cost.
//!
//! With the `metrics` feature the server counts through the [`metrics`](https://docs.rs/metrics)
//! facade; the application installs an exporter (Prometheus, StatsD, ...) of its choice.
//! Install it **before building the [`Server`](crate::server::Server)**: the server
//! resolves its handles when it is built, so that counting costs an addition and never a
//! lookup, and a server built before any recorder was installed records nothing.
//!
//! ```ignore
//! // Cargo.toml: tokio-webwire = { version = "0.1", features = ["metrics"] }
//! //             metrics-exporter-prometheus = "..."
//! metrics_exporter_prometheus::PrometheusBuilder::new()
//!     .with_http_listener(([127, 0, 0, 1], 9000))
//!     .install()?;                 // first: the server's handles are resolved when it is built
//! let server = Server::new(handler);
//! ```
//!
//! Without the feature this module holds only zero-sized types with empty `#[inline]`
//! methods: the server's code reads the same in both builds, and the default build has
//! neither the dependency nor any of its code on its paths.
//!
//! # Cost
//! A connection's driver adds up what it reads and writes in plain integers and hands the
//! sums to the handles once per round, right before it flushes the socket: a round that
//! answers 64 pipelined requests costs a few atomic additions in all, not several per
//! request. With no recorder installed the handles are no-op handles: a branch each.
//!
//! # The metrics
//! Every name starts with `webwire_`; labels take only the fixed values listed, never a
//! session key, a request name or anything else a client chooses.
//!
//! | name | type | unit | labels | what |
//! |---|---|---|---|---|
//! | `webwire_connections_open` | gauge | count | | WebWire connections open now: upgraded, socket not yet closed ([`Server::connection_count`](crate::server::Server::connection_count)) |
//! | `webwire_connections_total` | counter | count | | connections upgraded (or headless WebSockets taken) |
//! | `webwire_connections_rejected_total` | counter | count | | upgrades refused because `max_connections` were open (HTTP 503; headless: close code 1013) |
//! | `webwire_upgrades_refused_total` | counter | count | `status` | HTTP requests to the server answered with a refusal instead of a 101, on every way in (own listener, TLS, headless, hyper/axum mount), by the status answered: `400` (not a WebSocket upgrade, an unreadable head, no `Host` or more than one), `403` (a foreign `Origin`, one with user information), `426` (WebSocket version ≠ 13), `431` (head over `max_upgrade_request_size`), `500`, `503` (shutting down, `max_connections` open, a mounted upgrade timed out), `other` (any other status, such as a `before_upgrade` refusal's 401; a hook's status in this list counts under it, a 1xx as the 500 answered); `none`: sockets closed unanswered, before any TLS or HTTP work, because `max_pending_upgrades` were waiting. The 503s of a full server are also in `webwire_connections_rejected_total` (a subset: do not add the two). Not counted: `OPTIONS` answered 200, sockets dropped at the handshake timeout or in a failed TLS handshake, headless WebSockets closed with 1013 |
//! | `webwire_connections_closed_total` | counter | count | `reason`, `code` | connections ended: `reason` is the [`CloseReason`] (`client_closed`, `connection_lost`, `read_timeout`, `write_timeout`, `protocol_violation`, `closed`, `hook_failed`, `server_shutdown`, `slow_consumer`); `code` the close code of the closing handshake, the server's or, for `client_closed`, the client's (`1000`, `1001`, `1002`, `1003`, `1007`, `1009`, `1011`, `1013`, `other`, or `none` without a close frame) |
//! | `webwire_requests_total` | counter | count | `outcome` | requests answered (session requests included), by reply: `ok`, `error_reply` (the handler's [`HandlerError::reply`](crate::server::HandlerError::reply)), `internal_error` (an internal error, a panic, a reply that could not be sent), `shutdown` (refused or stopped by a shutdown), `session_refused` (a restore refused: unknown key, connection limit, sessions disabled) |
//! | `webwire_handlers_in_flight` | gauge | count | | handlers (requests, signals, session requests) that had to wait and run on tasks of their own, each holding one of its connection's `max_concurrent_requests` permits; a handler that finishes when first polled (most do) never counts |
//! | `webwire_signals_received_total` | counter | count | | signals from clients |
//! | `webwire_signals_sent_total` | counter | count | | signals written to clients |
//! | `webwire_bytes_received_total` | counter | bytes | | WebWire messages read (WebSocket message payloads; WebSocket framing, pings and close frames not counted) |
//! | `webwire_bytes_sent_total` | counter | bytes | | WebWire messages written: handshakes, replies, signals, session notifications |
//! | `webwire_protocol_errors_total` | counter | count | `kind` | messages that broke the protocol: `malformed_message`, `message_too_large`, `text_message`, `websocket` (a WebSocket protocol error), `invalid_utf8` (each closes the connection), `unexpected_message` (a type only servers send: ignored) |
//! | `webwire_backplane_received_total` | counter | count | | messages the backplane handed to this server (its own included, when the backplane brings them back): with a routing backplane, the traffic of the topics and sessions this node has a use for, and of revocations |
//! | `webwire_backplane_refused_total` | counter | count | | a message from the backplane (or a publication read back from a shared history) was refused: its tag is not the service secret's (forged, altered, another service's), or it is not an envelope; nothing of it reached a client |
//! | `webwire_fanout_slow_total` | counter | count | `policy` | a publish or session signal found a subscriber's outbound queue full, and the [`SlowSubscriber`](crate::server::config::SlowSubscriber) policy was applied: `disconnect` (the connection is closed, reason `slow_consumer`) or `skip` (that subscriber missed the signal) |
//! | `webwire_sessions_active` | gauge | count | | sessions held by at least one connection ([`Server::active_sessions`](crate::server::Server::active_sessions)), as of the last time a connection took or left one |
//! | `webwire_sessions_created_total` | counter | count | | sessions created ([`Connection::create_session`](crate::server::Connection::create_session)) |
//! | `webwire_sessions_closed_total` | counter | count | | sessions closed for good: their last connection left them explicitly, or the server revoked them ([`Server::close_session`](crate::server::Server::close_session)); a disconnect or an expiry in the store does not count |
//!
//! Counts of one connection reach the handles at the end of each of its rounds, before
//! the replies of that round are flushed to the socket; a connection's last counts, its
//! close among them, before its `disconnected` hook runs.
//!
//! [`CloseReason`]: crate::server::CloseReason
//!
//! Over 600 lines (741, 677 before the unit tests): its module docs are the reference of
//! every metric (names, units, labels, cost); then the handles and the driver's `Tally`,
//! and unit tests against a recorder.

#[cfg(feature = "metrics")]
use std::sync::Arc;

#[cfg(feature = "metrics")]
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[cfg(feature = "metrics")]
use crate::protocol::MessageType;
use crate::server::CloseReason;

/// A message that broke the protocol, as `webwire_protocol_errors_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtocolErrorKind {
    MalformedMessage,
    MessageTooLarge,
    TextMessage,
    WebSocket,
    InvalidUtf8,
    UnexpectedMessage,
}

/// The server's metric handles, resolved when it is built; cheap to clone. Without the
/// feature: nothing.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    handles: Arc<Handles>,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    connections_open: Gauge,
    connections_total: Counter,
    connections_rejected: Counter,
    /// Indexed like [`REFUSALS`].
    upgrades_refused: [Counter; REFUSALS.len()],
    /// One per combination of reason and code that can occur ([`CLOSES`]).
    connections_closed: Vec<Counter>,
    /// Indexed like [`OUTCOMES`].
    requests: [Counter; OUTCOMES.len()],
    handlers_in_flight: Gauge,
    signals_received: Counter,
    signals_sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    /// Indexed like [`PROTOCOL_ERRORS`].
    protocol_errors: [Counter; PROTOCOL_ERRORS.len()],
    /// `policy="disconnect"`, then `policy="skip"`.
    fanout_slow: [Counter; 2],
    backplane_refused: Counter,
    backplane_received: Counter,
}

/// The `status` labels of `webwire_upgrades_refused_total`: a fixed set, so a hook's
/// arbitrary status cannot make a label of its own.
#[cfg(feature = "metrics")]
const REFUSALS: [&str; 8] = ["400", "403", "426", "431", "500", "503", "other", "none"];

/// The `outcome` labels of `webwire_requests_total`, in index order.
#[cfg(feature = "metrics")]
const OUTCOMES: [&str; 5] = [
    "ok",
    "error_reply",
    "internal_error",
    "shutdown",
    "session_refused",
];

/// The `kind` labels of `webwire_protocol_errors_total`, in [`ProtocolErrorKind`] order.
#[cfg(feature = "metrics")]
const PROTOCOL_ERRORS: [(ProtocolErrorKind, &str); 6] = [
    (ProtocolErrorKind::MalformedMessage, "malformed_message"),
    (ProtocolErrorKind::MessageTooLarge, "message_too_large"),
    (ProtocolErrorKind::TextMessage, "text_message"),
    (ProtocolErrorKind::WebSocket, "websocket"),
    (ProtocolErrorKind::InvalidUtf8, "invalid_utf8"),
    (ProtocolErrorKind::UnexpectedMessage, "unexpected_message"),
];

/// Every `(reason, code)` pair of `webwire_connections_closed_total` that can occur, each
/// registered up front (so an exporter shows it at 0, and closing looks nothing up).
#[cfg(feature = "metrics")]
const CLOSES: [(&str, &str); 18] = [
    ("client_closed", "1000"),
    ("client_closed", "1001"),
    ("client_closed", "other"),
    ("client_closed", "none"),
    ("connection_lost", "none"),
    ("read_timeout", "1000"),
    ("write_timeout", "none"),
    ("protocol_violation", "1002"),
    ("protocol_violation", "1003"),
    ("protocol_violation", "1007"),
    ("protocol_violation", "1009"),
    ("protocol_violation", "other"),
    ("closed", "1000"),
    ("hook_failed", "1011"),
    ("server_shutdown", "1001"),
    ("slow_consumer", "1013"),
    // A reason whose code is not the usual one (a close frame that could not be made).
    ("other", "other"),
    ("other", "none"),
];

impl ProtocolErrorKind {
    /// The kind of a violation the WebSocket layer reported with `code`.
    pub(crate) fn of_websocket(code: CloseCode) -> Self {
        match code {
            CloseCode::Size => ProtocolErrorKind::MessageTooLarge,
            CloseCode::Unsupported => ProtocolErrorKind::TextMessage,
            CloseCode::Invalid => ProtocolErrorKind::InvalidUtf8,
            _ => ProtocolErrorKind::WebSocket,
        }
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl Metrics {
    /// Describes every metric to the current recorder (names, units, help texts) and
    /// resolves the handles. Called once per server, when it is built.
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            describe();
            let closed = |(reason, code): &(&'static str, &'static str)| counter!("webwire_connections_closed_total", "reason" => *reason, "code" => *code);
            Metrics {
                handles: Arc::new(Handles {
                    connections_open: gauge!("webwire_connections_open"),
                    connections_total: counter!("webwire_connections_total"),
                    connections_rejected: counter!("webwire_connections_rejected_total"),
                    upgrades_refused: REFUSALS.map(
                        |status| counter!("webwire_upgrades_refused_total", "status" => status),
                    ),
                    connections_closed: CLOSES.iter().map(closed).collect(),
                    requests: OUTCOMES
                        .map(|outcome| counter!("webwire_requests_total", "outcome" => outcome)),
                    handlers_in_flight: gauge!("webwire_handlers_in_flight"),
                    signals_received: counter!("webwire_signals_received_total"),
                    signals_sent: counter!("webwire_signals_sent_total"),
                    bytes_received: counter!("webwire_bytes_received_total"),
                    bytes_sent: counter!("webwire_bytes_sent_total"),
                    protocol_errors: PROTOCOL_ERRORS
                        .map(|(_, kind)| counter!("webwire_protocol_errors_total", "kind" => kind)),
                    fanout_slow: ["disconnect", "skip"]
                        .map(|policy| counter!("webwire_fanout_slow_total", "policy" => policy)),
                    backplane_refused: counter!("webwire_backplane_refused_total"),
                    backplane_received: counter!("webwire_backplane_received_total"),
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Metrics {}
    }

    /// A connection took its place among the server's `max_connections`.
    #[inline]
    pub(crate) fn connection_opened(&self) {
        #[cfg(feature = "metrics")]
        {
            self.handles.connections_open.increment(1);
            self.handles.connections_total.increment(1);
        }
    }

    /// A connection's socket is closed: its place is free.
    #[inline]
    pub(crate) fn connection_gone(&self) {
        #[cfg(feature = "metrics")]
        self.handles.connections_open.decrement(1);
    }

    /// An upgrade was refused: `max_connections` were open.
    #[inline]
    pub(crate) fn connection_rejected(&self) {
        #[cfg(feature = "metrics")]
        self.handles.connections_rejected.increment(1);
    }

    /// An upgrade request was answered with `status` instead of a 101 (`None`: its socket
    /// was closed unanswered, at `max_pending_upgrades`). A 2xx (`OPTIONS`) refuses nothing.
    #[inline]
    pub(crate) fn upgrade_refused(&self, status: Option<StatusCode>) {
        #[cfg(feature = "metrics")]
        {
            let status = match status {
                Some(status) if status.is_success() => return,
                status => status,
            };
            let label = status.as_ref().map_or("none", StatusCode::as_str);
            let index = REFUSALS
                .iter()
                .position(|&known| known == label)
                .or_else(|| REFUSALS.iter().position(|&known| known == "other"));
            if let Some(counter) = index.and_then(|index| self.handles.upgrades_refused.get(index))
            {
                counter.increment(1);
            }
        }
    }

    /// A message broke the protocol.
    #[inline]
    pub(crate) fn protocol_error(&self, kind: ProtocolErrorKind) {
        #[cfg(feature = "metrics")]
        if let Some(index) = PROTOCOL_ERRORS.iter().position(|(k, _)| *k == kind) {
            self.handles.protocol_errors[index].increment(1);
        }
    }

    /// A publish or session signal found a subscriber's queue full; `policy` was applied.
    #[inline]
    pub(crate) fn fanout_slow(&self, policy: crate::server::config::SlowSubscriber) {
        #[cfg(feature = "metrics")]
        {
            let index = match policy {
                crate::server::config::SlowSubscriber::Disconnect => 0,
                crate::server::config::SlowSubscriber::Skip => 1,
            };
            self.handles.fanout_slow[index].increment(1);
        }
    }

    /// The backplane handed this server a message.
    #[inline]
    pub(crate) fn backplane_received(&self) {
        #[cfg(feature = "metrics")]
        self.handles.backplane_received.increment(1);
    }

    /// A message from another node was refused.
    #[inline]
    pub(crate) fn backplane_refused(&self) {
        #[cfg(feature = "metrics")]
        self.handles.backplane_refused.increment(1);
    }

    /// A connection ended for `reason`, with `code` in its closing handshake (`None`:
    /// no close frame).
    #[inline]
    pub(crate) fn connection_closed(&self, reason: &CloseReason, code: Option<u16>) {
        #[cfg(feature = "metrics")]
        {
            let reason = reason_label(reason);
            let code = code_label(code);
            let index = CLOSES
                .iter()
                .position(|&pair| pair == (reason, code))
                .or_else(|| CLOSES.iter().position(|&pair| pair == ("other", code)))
                .or_else(|| CLOSES.iter().position(|&pair| pair == ("other", "other")));
            if let Some(counter) =
                index.and_then(|index| self.handles.connections_closed.get(index))
            {
                counter.increment(1);
            }
        }
    }
}

#[cfg(feature = "metrics")]
fn describe() {
    let counters = [
        (
            "webwire_connections_total",
            Unit::Count,
            "WebWire connections upgraded",
        ),
        (
            "webwire_connections_rejected_total",
            Unit::Count,
            "upgrades refused because max_connections were open",
        ),
        (
            "webwire_upgrades_refused_total",
            Unit::Count,
            "upgrade requests answered with a refusal (by HTTP status), or closed unanswered at max_pending_upgrades (status none)",
        ),
        (
            "webwire_connections_closed_total",
            Unit::Count,
            "connections ended, by close reason and close code",
        ),
        (
            "webwire_requests_total",
            Unit::Count,
            "requests answered, by outcome of the reply",
        ),
        (
            "webwire_signals_received_total",
            Unit::Count,
            "signals from clients",
        ),
        (
            "webwire_signals_sent_total",
            Unit::Count,
            "signals written to clients",
        ),
        (
            "webwire_bytes_received_total",
            Unit::Bytes,
            "WebWire message bytes read (WebSocket payloads)",
        ),
        (
            "webwire_bytes_sent_total",
            Unit::Bytes,
            "WebWire message bytes written (WebSocket payloads)",
        ),
        (
            "webwire_protocol_errors_total",
            Unit::Count,
            "client messages that broke the protocol, by kind",
        ),
        (
            "webwire_fanout_slow_total",
            Unit::Count,
            "subscribers whose queue was full at a publish or session signal, by the policy applied",
        ),
        (
            "webwire_backplane_received_total",
            Unit::Count,
            "messages the backplane handed to this server",
        ),
        (
            "webwire_backplane_refused_total",
            Unit::Count,
            "messages from other nodes refused: a bad tag (forged, altered, another service's) or not an envelope",
        ),
        (
            "webwire_sessions_created_total",
            Unit::Count,
            "sessions created",
        ),
        (
            "webwire_sessions_closed_total",
            Unit::Count,
            "sessions closed for good (their last connection left them)",
        ),
    ];
    for (name, unit, help) in counters {
        describe_counter!(name, unit, help);
    }
    let gauges = [
        ("webwire_connections_open", "WebWire connections open"),
        (
            "webwire_handlers_in_flight",
            "handlers running on tasks of their own (waiting handlers)",
        ),
        (
            "webwire_sessions_active",
            "sessions held by at least one connection",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, Unit::Count, help);
    }
}

/// The `reason` label of a [`CloseReason`].
#[cfg(feature = "metrics")]
fn reason_label(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::ClientClosed => "client_closed",
        CloseReason::ConnectionLost => "connection_lost",
        CloseReason::ReadTimeout => "read_timeout",
        CloseReason::WriteTimeout => "write_timeout",
        CloseReason::ProtocolViolation(_) => "protocol_violation",
        CloseReason::Closed => "closed",
        CloseReason::HookFailed => "hook_failed",
        CloseReason::ServerShutdown => "server_shutdown",
        CloseReason::SlowConsumer => "slow_consumer",
    }
}

/// The `code` label of a close code: the codes the server sends and the usual ones of
/// clients by number, the rest (any a client may choose) as `other`.
#[cfg(feature = "metrics")]
fn code_label(code: Option<u16>) -> &'static str {
    match code {
        None => "none",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1002) => "1002",
        Some(1003) => "1003",
        Some(1007) => "1007",
        Some(1009) => "1009",
        Some(1011) => "1011",
        Some(1013) => "1013",
        Some(_) => "other",
    }
}

/// The sessions' handles (`webwire_sessions_*`), resolved when the server is built.
#[derive(Debug)]
pub(crate) struct SessionMetrics {
    #[cfg(feature = "metrics")]
    active: Gauge,
    #[cfg(feature = "metrics")]
    created: Counter,
    #[cfg(feature = "metrics")]
    closed: Counter,
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl SessionMetrics {
    pub(crate) fn new() -> Self {
        SessionMetrics {
            #[cfg(feature = "metrics")]
            active: gauge!("webwire_sessions_active"),
            #[cfg(feature = "metrics")]
            created: counter!("webwire_sessions_created_total"),
            #[cfg(feature = "metrics")]
            closed: counter!("webwire_sessions_closed_total"),
        }
    }

    /// What sets `webwire_sessions_active` from the registry's count, under the
    /// registry's lock (nothing without the feature: the registry then calls nothing).
    pub(crate) fn active_observer(&self) -> Option<impl Fn(usize) + Send + Sync + 'static> {
        #[cfg(feature = "metrics")]
        {
            let active = self.active.clone();
            Some(move |count: usize| active.set(count as f64))
        }
        #[cfg(not(feature = "metrics"))]
        None::<fn(usize)>
    }

    /// A session was created.
    #[inline]
    pub(crate) fn created(&self) {
        #[cfg(feature = "metrics")]
        self.created.increment(1);
    }

    /// A session was closed for good.
    #[inline]
    pub(crate) fn closed(&self) {
        #[cfg(feature = "metrics")]
        self.closed.increment(1);
    }
}

/// What one connection's driver counted since it last handed its counts over: plain
/// integers, added to the handles once per round ([`flush`](Self::flush)). Without the
/// feature: nothing.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    #[cfg(feature = "metrics")]
    counts: Counts,
}

#[cfg(feature = "metrics")]
#[derive(Debug, Default)]
struct Counts {
    bytes_received: u64,
    bytes_sent: u64,
    /// Indexed like [`OUTCOMES`].
    replies: [u64; OUTCOMES.len()],
    signals_received: u64,
    signals_sent: u64,
    handlers_started: u64,
    handlers_done: u64,
    /// The close code of the client's close frame, once it sent one.
    client_code: Option<u16>,
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl Tally {
    /// A message of `frame.len()` bytes was read.
    #[inline]
    pub(crate) fn received(&mut self, frame: &[u8]) {
        #[cfg(feature = "metrics")]
        {
            self.counts.bytes_received += frame.len() as u64;
        }
    }

    /// A signal arrived for the handler.
    #[inline]
    pub(crate) fn signal_received(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.counts.signals_received += 1;
        }
    }

    /// A request was answered with the encoded reply `frame` (its type byte is the outcome).
    #[inline]
    pub(crate) fn replied(&mut self, frame: &[u8]) {
        #[cfg(feature = "metrics")]
        {
            self.counts.replies[outcome(frame)] += 1;
        }
    }

    /// `frame` goes to the socket.
    #[inline]
    pub(crate) fn sent(&mut self, frame: &[u8]) {
        #[cfg(feature = "metrics")]
        {
            self.counts.bytes_sent += frame.len() as u64;
            if frame.first().is_some_and(|&t| is_signal(t)) {
                self.counts.signals_sent += 1;
            }
        }
    }

    /// A handler went on to a task of its own.
    #[inline]
    pub(crate) fn handler_started(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.counts.handlers_started += 1;
        }
    }

    /// A handler that ran on a task of its own finished.
    #[inline]
    pub(crate) fn handler_done(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.counts.handlers_done += 1;
        }
    }

    /// The client closed with `code` (`None`: a close frame without one).
    #[inline]
    pub(crate) fn client_closed(&mut self, code: Option<u16>) {
        #[cfg(feature = "metrics")]
        {
            self.counts.client_code = code;
        }
    }

    /// Hands what was counted to the handles.
    #[inline]
    pub(crate) fn flush(&mut self, metrics: &Metrics) {
        #[cfg(feature = "metrics")]
        self.counts.flush(&metrics.handles);
    }

    /// The connection ended for `reason`; the server's close frame carried `sent` (`None`:
    /// the server sent none). Hands over the last counts and counts the close.
    pub(crate) fn closed(&mut self, metrics: &Metrics, reason: &CloseReason, sent: Option<u16>) {
        self.flush(metrics);
        #[cfg(feature = "metrics")]
        let sent = match reason {
            CloseReason::ClientClosed => self.counts.client_code,
            _ => sent,
        };
        metrics.connection_closed(reason, sent);
    }
}

#[cfg(feature = "metrics")]
impl Counts {
    fn flush(&mut self, handles: &Handles) {
        let add = |counter: &Counter, count: &mut u64| {
            if *count > 0 {
                counter.increment(std::mem::take(count));
            }
        };
        add(&handles.bytes_received, &mut self.bytes_received);
        add(&handles.bytes_sent, &mut self.bytes_sent);
        add(&handles.signals_received, &mut self.signals_received);
        add(&handles.signals_sent, &mut self.signals_sent);
        for (counter, count) in handles.requests.iter().zip(&mut self.replies) {
            add(counter, count);
        }
        // Gauges take floating-point steps; a round moves this one by a handful.
        let started = std::mem::take(&mut self.handlers_started);
        let done = std::mem::take(&mut self.handlers_done);
        match started.cmp(&done) {
            std::cmp::Ordering::Greater => {
                handles
                    .handlers_in_flight
                    .increment((started - done) as f64);
            }
            std::cmp::Ordering::Less => {
                handles
                    .handlers_in_flight
                    .decrement((done - started) as f64);
            }
            std::cmp::Ordering::Equal => {}
        }
    }
}

/// The index in [`OUTCOMES`] of a reply, from its type byte.
#[cfg(feature = "metrics")]
fn outcome(reply: &[u8]) -> usize {
    const OK: [u8; 3] = [
        MessageType::ReplyBinary as u8,
        MessageType::ReplyUtf8 as u8,
        MessageType::ReplyUtf16 as u8,
    ];
    match reply.first().copied() {
        Some(t) if OK.contains(&t) => 0,
        Some(t) if t == MessageType::ReplyError as u8 => 1,
        Some(t) if t == MessageType::ReplyInternalError as u8 => 2,
        Some(t) if t == MessageType::ReplyShutdown as u8 => 3,
        _ => 4,
    }
}

/// Whether `t` is the type byte of a signal.
#[cfg(feature = "metrics")]
fn is_signal(t: u8) -> bool {
    [
        MessageType::SignalBinary as u8,
        MessageType::SignalUtf8 as u8,
        MessageType::SignalUtf16 as u8,
    ]
    .contains(&t)
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;
    use crate::protocol::{Message, RequestId};

    #[test]
    fn every_close_the_driver_makes_has_its_own_pair() {
        // The pairs the driver produces: each must be registered, not fall back to `other`.
        let made = [
            (CloseReason::Closed, Some(CloseCode::Normal)),
            (CloseReason::ServerShutdown, Some(CloseCode::Away)),
            (CloseReason::SlowConsumer, Some(CloseCode::Again)),
            (CloseReason::ReadTimeout, Some(CloseCode::Normal)),
            (CloseReason::HookFailed, Some(CloseCode::Error)),
            (
                CloseReason::ProtocolViolation(String::new()),
                Some(CloseCode::Protocol),
            ),
            (
                CloseReason::ProtocolViolation(String::new()),
                Some(CloseCode::Size),
            ),
            (
                CloseReason::ProtocolViolation(String::new()),
                Some(CloseCode::Unsupported),
            ),
            (
                CloseReason::ProtocolViolation(String::new()),
                Some(CloseCode::Invalid),
            ),
            (CloseReason::ConnectionLost, None),
            (CloseReason::WriteTimeout, None),
            (CloseReason::ClientClosed, None),
            (CloseReason::ClientClosed, Some(CloseCode::Library(4000))),
        ];
        for (reason, code) in made {
            let pair = (reason_label(&reason), code_label(code.map(u16::from)));
            assert!(CLOSES.contains(&pair), "{pair:?} is not registered");
        }
    }

    #[test]
    fn outcomes_follow_the_reply_type() {
        let id = RequestId::from(7_u64);
        let encode = |message: Message| message.encode().expect("encodes");
        let cases = [
            (encode(Message::reply(id, crate::Payload::utf8("x"))), "ok"),
            (encode(Message::ReplyInternalError { id }), "internal_error"),
            (encode(Message::ReplyShutdown { id }), "shutdown"),
            (
                encode(Message::ReplySessionNotFound { id }),
                "session_refused",
            ),
            (
                encode(Message::ReplySessionsDisabled { id }),
                "session_refused",
            ),
        ];
        for (frame, label) in cases {
            assert_eq!(OUTCOMES[outcome(&frame)], label);
        }
    }
}
