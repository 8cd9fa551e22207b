//! The application: an axum router that serves a page at `/` and WebWire at `/ws`, on one
//! port, and the WebWire handler behind it.
//!
//! The visitor's name comes from the upgrade request (`/ws?name=alice`):
//! `before_upgrade` reads it and attaches it to the connection, and the `hello` request
//! answers with it. A layer puts the application's name on every request, which
//! `before_upgrade` sees too.
//!
//! Shared by `examples/axum/main.rs` and `tests/example_axum.rs`.

use axum::response::Html;
use axum::routing::get;
use axum::{Extension, Router};
use tokio_webwire::Payload;
use tokio_webwire::http::StatusCode;
use tokio_webwire::protocol::{ErrorCode, Name};
use tokio_webwire::server::{Connection, Handler, HandlerError, Server, UpgradeRequest};

use crate::mounted::{self, Mounted};

/// Who is connected, as `before_upgrade` found out.
#[derive(Clone, Debug)]
pub(crate) struct Visitor(pub(crate) String);

/// What the router's layer puts on every request.
#[derive(Clone, Debug)]
pub(crate) struct Site(pub(crate) &'static str);

/// The WebWire handler.
#[derive(Debug)]
pub(crate) struct Greeter;

impl Handler for Greeter {
    /// Takes the visitor's name from the query (`?name=…`, at most 32 characters); no
    /// name is a stranger.
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        let name = request
            .uri()
            .query()
            .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("name=")))
            .unwrap_or("stranger");
        if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StatusCode::BAD_REQUEST);
        }
        let site = request
            .extensions()
            .get::<Site>()
            .map_or("?", |site| site.0);
        request.attach(Visitor(format!("{name} (on {site})")));
        Ok(())
    }

    /// `hello`: a greeting for the visitor, with the payload's text; `echo`: the payload
    /// as it came (what `cargo run --example echo -- --client` sends).
    async fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        match name.as_str() {
            "hello" => {
                let visitor = conn.get::<Visitor>().map_or("stranger", |v| v.0.as_str());
                Ok(Payload::utf8(format!(
                    "hello, {visitor}: {}",
                    payload.to_text()?
                )))
            }
            "echo" => Ok(payload),
            _ => Err(HandlerError::reply(
                ErrorCode::from_static("UNKNOWN"),
                "no such request",
            )),
        }
    }
}

/// The router: the page at `/`, WebWire at `/ws` (handed to `server`).
pub(crate) fn router(server: Server<Greeter>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(tokio_webwire::axum::upgrade::<Greeter>))
        .with_state(server)
        .layer(Extension(Site("the axum example")))
}

/// The application, running: the WebWire server and the HTTP server's task.
pub(crate) type Running = Mounted<Greeter>;

/// Binds `addr` and serves the router on it, in a task of its own. With port 0 the
/// system picks a free one (`Running::addr`).
pub(crate) async fn start(addr: &str) -> std::io::Result<Running> {
    let server = Server::new(Greeter);
    mounted::serve(addr, server.clone(), router(server)).await
}

/// The page: sends `hello` requests over WebWire, with a few lines of JavaScript that speak
/// the binary protocol (the WebWire JavaScript client does this properly).
pub(crate) const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>tokio-webwire behind axum</title></head>
<body>
<h1>tokio-webwire behind axum</h1>
<p>This page and the WebWire endpoint <code>/ws</code> share one port.</p>
<p><input id="name" value="alice"> <button id="connect">connect</button></p>
<p><input id="text" value="hi"> <button id="send" disabled>send hello</button></p>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
const utf8 = new TextEncoder(), text = new TextDecoder();
let ws, nextId = 1;
document.getElementById("connect").onclick = () => {
  // Connect again: the old connection goes, and its heartbeat with it (onclose).
  if (ws) ws.close();
  const name = encodeURIComponent(document.getElementById("name").value);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws?name=${name}`);
  ws = socket;
  socket.binaryType = "arraybuffer";
  // A heartbeat well within the server's read timeout (60 s), one per connection.
  const heartbeat = setInterval(() => socket.readyState === 1 && socket.send(new Uint8Array([33])), 30000);
  socket.onopen = () => { document.getElementById("send").disabled = false; log("connected"); };
  socket.onclose = () => {
    clearInterval(heartbeat);
    if (ws === socket) document.getElementById("send").disabled = true;
    log("closed");
  };
  socket.onmessage = (event) => {
    const frame = new Uint8Array(event.data);
    if (frame[0] === 0xc0) log("reply: " + text.decode(frame.subarray(9)));       // ReplyUtf8
    else if (frame[0] === 0x00) log("error: " + text.decode(frame.subarray(10 + frame[9])));
  };
};
document.getElementById("send").onclick = () => {
  // RequestUtf8: type 0x80, 8-byte id (little-endian), name length, name, payload.
  const name = utf8.encode("hello"), payload = utf8.encode(document.getElementById("text").value);
  const frame = new Uint8Array(10 + name.length + payload.length);
  frame[0] = 0x80;
  new DataView(frame.buffer).setUint32(1, nextId++, true);
  frame[9] = name.length;
  frame.set(name, 10);
  frame.set(payload, 10 + name.length);
  ws.send(frame);
};
</script>
</body></html>
"#;
