//! `examples/axum`: its router on port 0 (feature `axum`), a page and WebWire on one port.

mod common;

#[path = "../examples/axum/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../examples/common/mounted.rs"]
mod mounted;

use common::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_webwire::client::Reconnect;
use tokio_webwire::{Client, ConnectError, Payload, RequestError};

#[tokio::test]
async fn one_port_serves_the_page_and_webwire() {
    let running = app::start("127.0.0.1:0").await.expect("binds");
    let addr = running.addr;

    // The page, over plain HTTP.
    let mut socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let get = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    bounded(socket.write_all(get.as_bytes())).await.unwrap();
    let mut page = String::new();
    bounded(socket.read_to_string(&mut page)).await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("text/html"), "{page}");
    assert!(page.ends_with(app::PAGE), "{page}");

    // WebWire on the same port; the name travels in the upgrade request.
    let client = bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .connect(format!("ws://{addr}/ws?name=alice")),
    )
    .await
    .unwrap();
    let reply = bounded(client.request("hello", "hi")).await.unwrap();
    assert_eq!(
        reply,
        Payload::utf8("hello, alice (on the axum example): hi")
    );
    // What the echo example's client sends (`--client ws://…/ws`).
    let echoed = bounded(client.request("echo", Payload::utf16("über axum"))).await;
    assert_eq!(echoed, Ok(Payload::utf16("über axum")));

    // Names in any script, with spaces, as the page sends them (encodeURIComponent).
    for (query, name) in [("Zo%C3%AB", "Zoë"), ("Ada%20Lovelace", "Ada Lovelace")] {
        let visitor = bounded(
            Client::builder()
                .reconnect(Reconnect::Off)
                .connect(format!("ws://{addr}/ws?name={query}")),
        )
        .await
        .unwrap_or_else(|error| panic!("{name} refused: {error}"));
        let reply = bounded(visitor.request("hello", "hi")).await.unwrap();
        assert_eq!(
            reply,
            Payload::utf8(format!("hello, {name} (on the axum example): hi"))
        );
        visitor.close().await;
    }

    // `before_upgrade` refuses a name it does not like; the router, paths it does not have.
    let too_long = "a".repeat(app::MAX_NAME_CHARS + 1);
    for (path, status) in [
        ("/ws?name=a1".to_owned(), 400),
        ("/ws?name=%20".to_owned(), 400),
        ("/ws?name=%FF".to_owned(), 400),
        (format!("/ws?name={too_long}"), 400),
        ("/nowhere".to_owned(), 404),
    ] {
        let refused = bounded(
            Client::builder()
                .reconnect(Reconnect::Off)
                .connect(format!("ws://{addr}{path}")),
        )
        .await;
        assert_eq!(refused.err(), Some(ConnectError::Http { status }), "{path}");
    }

    // The shutdown closes the WebWire connection too, then stops the HTTP server.
    bounded(running.shutdown()).await;
    let after = bounded(client.request("hello", "still there?")).await;
    assert!(
        matches!(
            after,
            Err(RequestError::Disconnected | RequestError::ClientClosed)
        ),
        "{after:?}"
    );
    client.close().await;
}

#[test]
fn names_are_letters_of_any_script_and_spaces() {
    for (encoded, name) in [
        ("alice", "alice"),
        ("Zo%C3%AB", "Zoë"),
        ("Ada+Lovelace", "Ada Lovelace"),
        ("%E6%9D%8E%E5%B0%8F%E9%BE%8D", "李小龍"),
    ] {
        assert_eq!(
            app::visitor_name(encoded).as_deref(),
            Some(name),
            "{encoded}"
        );
    }
    let longest = "é".repeat(app::MAX_NAME_CHARS);
    assert_eq!(app::visitor_name(&longest).as_deref(), Some(&*longest));
    for refused in ["", "+", "a1", "a%3Cb", "%E", "%ZZ", "%C3", "a%0Ab"] {
        assert_eq!(app::visitor_name(refused), None, "{refused}");
    }
    assert_eq!(app::visitor_name(&format!("{longest}e")), None);
}
