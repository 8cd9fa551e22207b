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
use tokio_webwire::router::{Attached, Text};
use tokio_webwire::server::{Connection, Handler, SendError, Server, UpgradeRequest};

use crate::mounted::{self, Mounted};

/// Who is connected, as `before_upgrade` found out.
#[derive(Clone, Debug)]
pub(crate) struct Visitor(pub(crate) String);

/// What the router's layer puts on every request.
#[derive(Clone, Debug)]
pub(crate) struct Site(pub(crate) &'static str);

/// The WebWire handler: `hello`, a greeting for the visitor with the payload's text;
/// `echo`, the payload as it came, and the `ping` signal sent back, as the echo example's
/// server does (what `cargo run --example echo -- --client ws://…/ws` sends); the hooks
/// are [`Greeter`]'s.
pub(crate) fn webwire() -> impl Handler {
    // tokio-webwire's router of WebWire messages, not axum's of HTTP paths.
    tokio_webwire::router::Router::new()
        .request("hello", hello)
        .request("echo", |payload: Payload| async move { payload })
        .signal("ping", ping)
        .hooks(Greeter)
        .build()
        .expect("valid names, each routed once")
}

/// `hello`: the visitor `before_upgrade` attached, greeted with the payload's text.
async fn hello(Attached(visitor): Attached<Visitor>, Text(text): Text) -> String {
    format!("hello, {}: {text}", visitor.0)
}

/// `ping`: back to its sender (a signal is never answered, but the server may send one).
async fn ping(conn: Connection, payload: Payload) -> Result<(), SendError> {
    conn.signal("ping", payload).await
}

/// The hooks: who the visitor is, and who connects.
#[derive(Debug)]
pub(crate) struct Greeter;

impl Handler for Greeter {
    /// Takes the visitor's name from the query (`?name=…`, percent-encoded UTF-8: see
    /// [`visitor_name`]); no name is a stranger, a name it refuses is answered with 400.
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        let name = match request
            .uri()
            .query()
            .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("name=")))
        {
            None => "stranger".to_owned(),
            Some(encoded) => visitor_name(encoded).ok_or(StatusCode::BAD_REQUEST)?,
        };
        let site = request
            .extensions()
            .get::<Site>()
            .map_or("?", |site| site.0);
        request.attach(Visitor(format!("{name} (on {site})")));
        Ok(())
    }

    async fn connected(&self, conn: &Connection) {
        let visitor = conn.get::<Visitor>().map_or("?", |v| v.0.as_str());
        tracing::info!(visitor, "connected");
    }
}

/// The longest name accepted, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 32;

/// The visitor's name from its percent-encoded query value: 1 to [`MAX_NAME_CHARS`]
/// letters of any script and spaces (`Zoë`, `Ada Lovelace`, `李小龍`), not only spaces;
/// `None` for anything else (digits, punctuation, control characters, invalid UTF-8).
pub(crate) fn visitor_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => decoded.push(byte),
        }
        i += 1;
    }
    let name = String::from_utf8(decoded).ok()?;
    let chars = name.chars().count();
    let letters = name.chars().all(|c| c.is_alphabetic() || c == ' ');
    let valid = (1..=MAX_NAME_CHARS).contains(&chars) && letters && !name.trim().is_empty();
    valid.then_some(name)
}

/// The router: the page at `/`, WebWire at `/ws` (handed to `server`).
pub(crate) fn router<H: Handler>(server: Server<H>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(tokio_webwire::axum::upgrade::<H>))
        .with_state(server)
        .layer(Extension(Site("the axum example")))
}

/// Binds `addr` and serves the router on it, in a task of its own: the application,
/// running (the WebWire server and the HTTP server's task). With port 0 the system picks
/// a free one (`Mounted::addr`).
pub(crate) async fn start(addr: &str) -> std::io::Result<Mounted<impl Handler>> {
    let server = Server::new(webwire());
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
  // The server's rule, checked here first so that the page can say why.
  const typed = document.getElementById("name").value;
  if (!/^[\p{L} ]{1,32}$/u.test(typed) || !typed.trim()) {
    log(`refused: "${typed}" is not a name (1 to 32 letters and spaces)`);
    return;
  }
  // Connect again: the old connection goes, and its heartbeat with it (onclose).
  if (ws) ws.close();
  const name = encodeURIComponent(typed);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws?name=${name}`);
  ws = socket;
  socket.binaryType = "arraybuffer";
  // A heartbeat well within the server's read timeout (60 s), one per connection.
  const heartbeat = setInterval(() => socket.readyState === 1 && socket.send(new Uint8Array([33])), 30000);
  let opened = false;
  socket.onopen = () => { opened = true; document.getElementById("send").disabled = false; log("connected"); };
  socket.onclose = () => {
    clearInterval(heartbeat);
    if (ws === socket) document.getElementById("send").disabled = true;
    // A browser does not tell the page the HTTP status of a refused upgrade: a close
    // before the open is the server's 400 (or the server is gone).
    log(opened ? "closed" : "refused: a name is 1 to 32 letters and spaces (or the server is down)");
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
