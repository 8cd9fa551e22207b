//! [`Config`]: a client's options once built, read by its handles and tasks.

use std::time::Duration;

use bytes::Bytes;

use crate::client::{Reconnect, SignalOverflow};

/// How many encoded frames may wait for the driver of a connection before senders wait.
pub(crate) const SEND_QUEUE: usize = 1024;

/// Everything a connection needs to know, fixed when the client is built.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) dial_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) sub_protocol: Option<Bytes>,
    pub(crate) reconnect: Reconnect,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) max_message_size: usize,
    pub(crate) restore_session: bool,
    /// Offer the topics extension's sub-protocol.
    pub(crate) topics: bool,
    /// Events one subscription buffers before publications are held back.
    pub(crate) subscription_buffer: usize,
    pub(crate) max_queued_signals: usize,
    pub(crate) max_queued_signal_bytes: usize,
    pub(crate) signal_overflow: SignalOverflow,
    /// For `wss://`: the application's TLS configuration; `None` for the default one.
    #[cfg(feature = "rustls")]
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Config {
    /// The URL as logs may show it: see [`redact_url`].
    pub(crate) fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for Config {
    /// Header values and the URL's credentials stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        let mut f = f.debug_struct("Config");
        f.field("url", &self.redacted_url())
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("sub_protocol", &self.sub_protocol)
            .field("reconnect", &self.reconnect)
            .field("header_names", &header_names)
            .field("max_message_size", &self.max_message_size)
            .field("restore_session", &self.restore_session)
            .field("topics", &self.topics)
            .field("subscription_buffer", &self.subscription_buffer)
            .field("max_queued_signals", &self.max_queued_signals)
            .field("max_queued_signal_bytes", &self.max_queued_signal_bytes)
            .field("signal_overflow", &self.signal_overflow);
        #[cfg(feature = "rustls")]
        f.field("tls_config", &self.tls.is_some());
        f.finish()
    }
}

/// `url` as logs may show it: without its userinfo (`user:password@`), and with its query
/// and fragment replaced by `<redacted>`: browsers pass tokens in the query
/// (`wss://host/ws?token=…`). Scheme, host, port and path stay, which is what one needs
/// to tell connections apart.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    // The host is after the last `@`: a password may hold another one.
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (path, hidden) = match rest.find(['?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let mut shown = String::with_capacity(url.len().min(256));
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    if host.len() < authority.len() {
        shown.push_str("<redacted>@");
    }
    shown.push_str(host);
    shown.push_str(path);
    if let Some(mark) = hidden.chars().next() {
        shown.push(mark);
        shown.push_str("<redacted>");
    }
    shown
}
