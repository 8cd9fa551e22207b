//! `examples/chatroom --web` (feature `axum`): the page, the JavaScript client and the chat
//! room's WebWire endpoint on one port. The page itself runs in headless Chromium in
//! `js/test/browser.test.js`; this checks the serving, from `cargo test`.

mod common;

// `server::start` serves plain WebWire (tests/example_chatroom.rs) and `web::serve` is
// the `--web` command line's: unused here.
#[allow(dead_code)]
#[path = "../examples/chatroom/contract.rs"]
mod contract;
#[allow(dead_code)]
#[path = "../examples/common/mounted.rs"]
mod mounted;
#[allow(dead_code)]
#[path = "../examples/chatroom/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../examples/chatroom/web.rs"]
mod web;

use common::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_webwire::backplane::Local;
use tokio_webwire::client::Reconnect;
use tokio_webwire::session::MemoryStore;
use tokio_webwire::{Client, Payload};

/// GET `path` over plain HTTP: the whole response, head and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    bounded(socket.write_all(request.as_bytes())).await.unwrap();
    let mut response = String::new();
    bounded(socket.read_to_string(&mut response)).await.unwrap();
    response
}

#[tokio::test]
async fn the_page_the_module_and_the_chat_room_share_one_port() {
    let running = web::start("127.0.0.1:0", server::build(MemoryStore::new(), Local))
        .await
        .expect("binds");
    let addr = running.addr;

    let page = get(addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("text/html"), "{page}");
    assert!(page.ends_with(web::PAGE), "{page}");
    // The page loads the module from where the router serves it.
    assert!(web::PAGE.contains("from '/webwire.js'"));

    let module = get(addr, "/webwire.js").await;
    assert!(module.starts_with("HTTP/1.1 200 OK\r\n"), "{module}");
    assert!(module.contains("content-type: text/javascript"), "{module}");
    assert!(module.ends_with(web::CLIENT));
    assert!(web::CLIENT.contains("export class WebWireClient"));

    // The chat room at /ws, as the page uses it.
    let client = bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .connect(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap();
    let login = Payload::json(&serde_json::json!({"user": "bob", "password": "builder"})).unwrap();
    let reply = bounded(client.request("login", login)).await.unwrap();
    assert_eq!(reply, Payload::utf8(r#"{"user":"bob"}"#));
    assert_eq!(
        client
            .session()
            .and_then(|s| s.info.get::<String>("user").ok().flatten()),
        Some("bob".to_owned())
    );
    let say = Payload::json(&serde_json::json!({"text": "hello from Rust"})).unwrap();
    assert_eq!(
        bounded(client.request("say", say)).await,
        Ok(Payload::utf8("null"))
    );

    bounded(running.shutdown()).await;
}
