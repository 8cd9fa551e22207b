//! Faults around a working server: a shutdown under load, restarts under reconnecting
//! clients, and peers that stop reading or vanish without a close.
//!
//! - Shutdown under load: 8 of our clients with 16 requests in flight each (echo, and a few
//!   held "gate" requests) while the server shuts down: every request ends in its reply,
//!   `Shutdown` or `Disconnected`, none hangs, none is answered twice. A raw-frame variant
//!   shows why `Disconnected` requests were never processed: the server answers every
//!   request it read, exactly once, and the ones it read are a prefix of those sent.
//! - Reconnect under faults: the server is stopped and restarted 10 times on the same port
//!   (one shared session store) while 4 logged-in clients with backoff send requests
//!   continuously: no request is handled or answered twice, every request ends in its reply
//!   or a clear error, and every client still holds its session at the end.
//! - Dead and slow peers: a silent peer (in-memory pipe, paused time; and a real socket) is
//!   reaped by the read timeout; a socket that stops reading while the server pushes
//!   signals is reaped by the write timeout, with what the server accepted bounded.
//!
//! Counts are printed (`cargo test --test faults -- --nocapture`). About 5 s in all, most
//! of it the real-socket timeouts (1 s each) and the server waiting for silent peers to
//! answer its close frame (`close_timeout`, 2 s).

#[path = "../common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::probe::{Events, parse, request, start};
use common::{RawClient, bounded};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::{Backoff, Reconnect};
use tokio_webwire::protocol::{ErrorCode, Message, Name};
use tokio_webwire::server::{
    CloseReason, Connection, Handler, HandlerError, HandlerResult, SendError, Server,
};
use tokio_webwire::session::MemoryStore;
use tokio_webwire::{Client, Payload, RequestError, SessionInfo};

// ---------------------------------------------------------------------------------------
// A handler that records every request it handles, across server restarts.

/// Counts, per payload, how often any server sharing it handled a request; "login" creates
/// a session (like the probe's) and replies its key.
#[derive(Default)]
struct Ledger {
    handled: Mutex<HashMap<Bytes, u32>>,
}

impl Ledger {
    fn handled(&self) -> HashMap<Bytes, u32> {
        self.handled.lock().expect("ledger").clone()
    }
}

impl Handler for Ledger {
    async fn request(&self, conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        if name == "login" {
            let mut info = SessionInfo::new();
            info.insert("user", &payload.to_text()?)?;
            let session = conn.create_session(info).await.map_err(|error| {
                HandlerError::reply(ErrorCode::from_static("SESSION"), error.to_string())
            })?;
            return Ok(Payload::utf8(session.key));
        }
        *self
            .handled
            .lock()
            .expect("ledger")
            .entry(payload.data.clone())
            .or_default() += 1;
        Ok(payload)
    }
}

/// A ledger server keeping sessions in `store`, on exactly `addr` (retrying the bind while
/// the previous server's listener goes away) or on a fresh port.
async fn serve_on(
    addr: Option<SocketAddr>,
    ledger: &Arc<Ledger>,
    store: &Arc<MemoryStore>,
) -> (Server<Arc<Ledger>>, SocketAddr) {
    let server = Server::builder(Arc::clone(ledger))
        .session_store(Arc::clone(store))
        .build()
        .expect("valid options");
    let addr = match addr {
        Some(addr) => {
            common::listen_on(&server, addr).await;
            addr
        }
        None => common::listen(&server).await,
    };
    (server, addr)
}

mod peers;
mod restarts;
mod shutdown;
