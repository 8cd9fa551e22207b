//! The examples' commands as their docs show them, run as processes (the binaries
//! `cargo test` builds, see `tests/common/example.rs`): what they print and their exit
//! codes, so that the docs cannot go stale.

mod common;

use common::example::{run, start};

const FRAME: &str = "80a1e737901286f79a0361626372207520626f7265643f";

/// `decode`: 0 when every frame is valid, 1 when one is not, 2 without frames; `--help`
/// is no error.
#[tokio::test]
async fn decode_says_with_its_exit_code_whether_every_frame_was_valid() {
    let out = run("decode", &[FRAME, "21"], "").await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("payload text: \"r u bored?\""),
        "{}",
        out.stdout
    );

    let out = run("decode", &["zz"], "").await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, "zz: not hexadecimal\n");

    let out = run("decode", &["2100"], "").await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stdout,
        "2100: rejected: Heartbeat (0x21) must be exactly 1 bytes, got 2\n"
    );

    // From standard input, one frame a line; a bad one among good ones still says so.
    let out = run("decode", &[], &format!("{FRAME}\n\nzz\n")).await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stdout.ends_with("zz: not hexadecimal\n"),
        "{}",
        out.stdout
    );

    let out = run("decode", &[], "").await;
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.starts_with("no frames\nusage: decode"),
        "{}",
        out.stderr
    );

    let out = run("decode", &["--help"], "").await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.starts_with("usage: decode"), "{}", out.stdout);

    let out = run("decode", &["--verbose", FRAME], "").await;
    assert_eq!(out.code(), Some(2), "{out:?}");
}

/// `echo` and `echo --client`: the server prints its URL and logs the connection; the
/// client prints each exchange and exits 0; Ctrl-C stops the server gracefully (0).
#[tokio::test]
async fn echo_server_and_client() {
    let server = start("echo", &["--addr", "127.0.0.1:0"]).await;
    let url = server.first_line.clone();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let client = run("echo", &["--client", &url], "").await;
    assert_eq!(client.code(), Some(0), "{client:?}");
    assert_eq!(client.stdout.lines().count(), 5, "{}", client.stdout);
    assert!(client.stdout.starts_with(&format!("connected to {url}\n")));
    let stopped = server.interrupt().await;
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
    assert!(
        stopped.stderr.contains("echo::server: connected"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("reason=closed by the client"),
        "{}",
        stopped.stderr
    );
}

/// `pubsub`, `--subscribe`, `--publish TEXT`: what is published reaches the subscriber,
/// the publisher is told how many got it.
#[tokio::test]
async fn pubsub_server_subscriber_and_publisher() {
    let mut server = start("pubsub", &["--addr", "127.0.0.1:0"]).await;
    let url = server.first_line.clone();
    let mut subscriber = start("pubsub", &["--subscribe", "--url", &url]).await;
    assert_eq!(
        subscriber.first_line,
        format!("subscribed to {url}; Ctrl-C to stop")
    );
    assert_eq!(server.next_line().await, "subscribers: 1");

    let publisher = run("pubsub", &["--publish", "hello, all", "--url", &url], "").await;
    assert_eq!(publisher.code(), Some(0), "{publisher:?}");
    assert_eq!(publisher.stdout, "delivered to 1 subscribers\n");
    // Ticks come once a second meanwhile: the news is among the next lines.
    loop {
        let line = subscriber.next_line().await;
        if line == "news: hello, all" {
            break;
        }
        assert!(line.starts_with("tick: tick "), "{line}");
    }
    assert_eq!(subscriber.interrupt().await.code(), Some(0));
    assert_eq!(server.interrupt().await.code(), Some(0));
}

/// `axum`: the page's server; the echo example's client, as its docs say, at `/ws`.
#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_example_with_the_echo_client() {
    let server = start("axum", &["--addr", "127.0.0.1:0"]).await;
    let addr = server.addr();
    assert_eq!(
        server.first_line,
        format!("http://{addr}/ (WebWire at ws://{addr}/ws)")
    );
    let client = run("echo", &["--client", &format!("ws://{addr}/ws")], "").await;
    assert_eq!(client.code(), Some(0), "{client:?}");
    assert_eq!(client.stdout.lines().count(), 5, "{}", client.stdout);
    let stopped = server.interrupt().await;
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
    // It logs, as the other examples do.
    assert!(stopped.stderr.contains("connected"), "{}", stopped.stderr);
}

/// `chatroom --web` takes its options in any order (`--addr X --web` was a usage error).
#[cfg(feature = "axum")]
#[tokio::test]
async fn chatroom_web_options_in_any_order() {
    for args in [
        ["--web", "--addr", "127.0.0.1:0"],
        ["--addr", "127.0.0.1:0", "--web"],
    ] {
        let server = start("chatroom", &args).await;
        assert!(
            server.first_line.starts_with("http://127.0.0.1:"),
            "{args:?}: {}",
            server.first_line
        );
        assert_eq!(server.interrupt().await.code(), Some(0));
    }
    let out = run("chatroom", &["--web", "--addr"], "").await;
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.starts_with("usage: chatroom"), "{}", out.stderr);
}

/// `echo --max-message-size BYTES`: a larger limit, still serving.
#[tokio::test]
async fn echo_with_a_larger_message_size() {
    let server = start(
        "echo",
        &["--addr", "127.0.0.1:0", "--max-message-size", "1048576"],
    )
    .await;
    let client = run("echo", &["--client", &server.first_line], "").await;
    assert_eq!(client.code(), Some(0), "{client:?}");
    assert_eq!(server.interrupt().await.code(), Some(0));
    let out = run("echo", &["--max-message-size", "lots"], "").await;
    assert_eq!(out.code(), Some(2), "{out:?}");
}

/// `chatroom` (and `--sessions DIR`) with its terminal client: typed lines in, the chat
/// out, everything printed before the client exits.
#[cfg(feature = "axum")]
#[tokio::test]
async fn chatroom_server_and_terminal_client() {
    let dir = std::env::temp_dir().join(format!("tokio-webwire-cmd-chat-{}", std::process::id()));
    let sessions = dir.to_str().unwrap().to_owned();
    for args in [
        vec!["--addr", "127.0.0.1:0"],
        vec!["--addr", "127.0.0.1:0", "--sessions", &sessions],
    ] {
        let server = start("chatroom", &args).await;
        let url = server.first_line.clone();
        let chat = run(
            "chatroom",
            &["--client", &url],
            "/login alice wonderland\nhello, room\n/logout\n/quit\n",
        )
        .await;
        assert_eq!(chat.code(), Some(0), "{chat:?}");
        let lines: Vec<&str> = chat.stdout.lines().collect();
        for expected in [
            "* connected",
            "* logged in as alice",
            "<alice> hello, room",
            "* logged out",
        ] {
            assert!(
                lines.contains(&expected),
                "{args:?}: {expected:?} in {lines:?}"
            );
        }
        assert_eq!(chat.stderr, "", "the client logs nothing into the chat");
        assert_eq!(server.interrupt().await.code(), Some(0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pubsub --redis URL` on two ports (a real redis-server): subscribe to one, publish to
/// the other, as its docs say.
#[cfg(feature = "redis")]
#[tokio::test]
async fn pubsub_on_two_servers_sharing_redis() {
    let Some(redis) = common::redis::RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let a = start("pubsub", &["--addr", "127.0.0.1:0", "--redis", &url]).await;
    let b = start("pubsub", &["--addr", "127.0.0.1:0", "--redis", &url]).await;
    let mut subscriber = start("pubsub", &["--subscribe", "--url", &b.first_line]).await;
    let publisher = run("pubsub", &["--publish", "hi", "--url", &a.first_line], "").await;
    assert_eq!(publisher.code(), Some(0), "{publisher:?}");
    assert_eq!(
        publisher.stdout,
        "delivered to 0 subscribers on this server, and sent on to the other servers\n"
    );
    loop {
        let line = subscriber.next_line().await;
        if line == "news: hi" {
            break;
        }
        assert!(line.starts_with("tick: tick "), "{line}");
    }
    assert_eq!(subscriber.interrupt().await.code(), Some(0));
    assert_eq!(a.interrupt().await.code(), Some(0));
    assert_eq!(b.interrupt().await.code(), Some(0));
}
