//! What the examples say when something is wrong, as a newcomer sees it: real processes,
//! their stderr and exit codes (the binaries `cargo test` builds, see
//! `tests/common/example.rs`). Each message names what failed and where.

mod common;

use common::example::run;

/// A port in use: the address is in the message, and the exit code is 1.
#[tokio::test]
async fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("bound").to_string();
    let out = run("echo", &["--addr", &addr], "").await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "cannot listen on {addr}: Address already in use (os error 98)"
        )),
        "{}",
        out.stderr
    );
}

/// A command line the example does not know: the usage on stderr, exit code 2.
#[tokio::test]
async fn a_wrong_command_line_prints_the_usage() {
    let out = run("echo", &["--adress", "127.0.0.1:0"], "").await;
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.starts_with("usage: echo "), "{}", out.stderr);
}

/// `ws://` against a TLS server says to try `wss://`; a certificate and key swapped say
/// which file lacks what; `--ca FILE` makes the client trust a self-signed certificate.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn tls_mistakes_say_what_to_do() {
    let (dir, cert, key) = common::example::self_signed_pem_files("errors");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let swapped = run("echo", &["--addr", "127.0.0.1:0", "--tls", key, cert], "").await;
    assert_eq!(swapped.code(), Some(1), "{swapped:?}");
    assert!(
        swapped
            .stderr
            .contains(&format!("{key}: no certificate in this file")),
        "{}",
        swapped.stderr
    );
    assert!(swapped.stderr.contains("are the two swapped?"));

    let server =
        common::example::start("echo", &["--addr", "127.0.0.1:0", "--tls", cert, key]).await;
    let addr = server.addr();
    assert_eq!(server.first_line, format!("wss://{addr}/"));

    let plain = run("echo", &["--client", &format!("ws://{addr}/")], "").await;
    assert_eq!(plain.code(), Some(1), "{plain:?}");
    assert!(
        plain
            .stderr
            .contains("it looks like a TLS server, try wss:// instead of ws://"),
        "{}",
        plain.stderr
    );

    let untrusted = run("echo", &["--client", &format!("wss://{addr}/")], "").await;
    assert_eq!(untrusted.code(), Some(1), "{untrusted:?}");
    assert!(
        untrusted.stderr.contains("TLS handshake failed"),
        "{}",
        untrusted.stderr
    );

    let trusted = run(
        "echo",
        &["--client", &format!("wss://{addr}/"), "--ca", cert],
        "",
    )
    .await;
    assert_eq!(trusted.code(), Some(0), "{trusted:?}");
    assert_eq!(trusted.stdout.lines().count(), 5, "{}", trusted.stdout);

    let stopped = server.interrupt().await;
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The chat room's Redis: a URL that does not parse, and a Redis that is not there, are
/// named as such.
#[cfg(all(feature = "axum", feature = "redis"))]
#[tokio::test]
async fn redis_failures_name_redis_and_its_address() {
    let out = run(
        "chatroom",
        &["--addr", "127.0.0.1:0", "--redis", "127.0.0.1"],
        "",
    )
    .await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "invalid Redis URL \"127.0.0.1\" (expected redis://[user:password@]host[:port][/db])"
        ),
        "{}",
        out.stderr
    );

    // A port nobody listens on (free a moment ago).
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let url = format!("redis://{free}/");
    let out = run("chatroom", &["--addr", "127.0.0.1:0", "--redis", &url], "").await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot connect to Redis at {free}: ")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);
}

/// The terminal chat client pointed at the page of a `--web` server: it says where
/// WebWire is there, with the command to run.
#[cfg(feature = "axum")]
#[tokio::test]
async fn the_chat_client_at_a_web_server_is_shown_the_way_to_ws() {
    let server = common::example::start("chatroom", &["--web", "--addr", "127.0.0.1:0"]).await;
    let addr = server.addr();
    let out = run("chatroom", &["--client", &format!("ws://{addr}/")], "").await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("HTTP status 200: a page is served there"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "cargo run --example chatroom --features axum -- --client ws://{addr}/ws"
        )),
        "{}",
        out.stderr
    );
    let stopped = server.interrupt().await;
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
}
