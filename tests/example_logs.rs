//! `examples/echo`'s log lines, in a test binary of its own: tracing caches per call site
//! whether anyone listens, and tests running beside this one on other threads, with no
//! subscriber, can leave that cache saying nobody does while this test's thread-local
//! subscriber is set (seen: the server's "disconnected" line missing from a full run).

mod common;

// Its `--ca` configuration is tested in example_echo.rs (unused with `rustls`).
#[allow(dead_code)]
#[path = "../examples/echo/client.rs"]
mod echo_client;
// Its `--tls` start is tested in example_echo.rs, not here (unused with `rustls`).
#[allow(dead_code)]
#[path = "../examples/echo/server.rs"]
mod echo_server;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use common::bounded;

/// The log lines written while `run` runs (the fmt subscriber, `filter`, no colours), on a
/// current-thread runtime so that every task, the server's included, logs to it.
fn logs_of(filter: &str, run: impl Future<Output = ()>) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer({
            let buffer = buffer.clone();
            move || buffer.clone()
        })
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run);
    let bytes = buffer.0.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What a newcomer running the example sees on stderr: each connect and disconnect of
/// the server, with the connection's id and address, and why it ended.
#[test]
fn the_example_server_logs_connects_and_disconnects() {
    let logs = logs_of("info", async {
        let (server, addr) =
            echo_server::start("127.0.0.1:0", echo_server::DEFAULT_MAX_MESSAGE_SIZE)
                .await
                .expect("binds");
        let mut out = Vec::new();
        bounded(echo_client::run(
            &format!("ws://{addr}/"),
            tokio_webwire::Client::builder(),
            &mut out,
        ))
        .await
        .expect("the client runs");
        bounded(server.shutdown()).await;
    });
    let line = |needle: &str| {
        logs.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{logs}"))
            .to_owned()
    };
    let connected = line("echo_server: connected");
    assert!(
        connected.contains("connection{id=1 remote=127.0.0.1:"),
        "{connected}"
    );
    let disconnected = line("echo_server: disconnected");
    assert!(
        disconnected.contains("connection{id=1 remote=127.0.0.1:"),
        "{disconnected}"
    );
    assert!(
        disconnected.contains("reason=closed by the client"),
        "{disconnected}"
    );
    // And the client's side of it.
    line("echo_client: connected");
    line("echo_client: disconnected");
}

/// The client's span names its connection by URL, without what the URL may hold of
/// credentials: userinfo, and a query (where browsers pass tokens).
#[test]
fn the_client_span_shows_the_url_without_credentials() {
    let mut port = 0;
    let logs = logs_of("tokio_webwire=debug", async {
        let (server, addr) =
            echo_server::start("127.0.0.1:0", echo_server::DEFAULT_MAX_MESSAGE_SIZE)
                .await
                .expect("binds");
        port = addr.port();
        let url = format!("ws://alice:s3cret@{addr}/ws?token=s3cret");
        let client = bounded(tokio_webwire::Client::connect(&url))
            .await
            .expect("connects");
        bounded(client.request("echo", "x")).await.expect("echoed");
        bounded(client.close()).await;
        bounded(server.shutdown()).await;
    });
    assert!(
        !logs.contains("s3cret"),
        "a credential in the logs:\n{logs}"
    );
    let span = format!(
        "webwire_client{{url=ws://<redacted>@127.0.0.1:{port}/ws?<redacted> generation=1}}"
    );
    let connected = logs
        .lines()
        .find(|line| line.contains("tokio_webwire::client::connection: connected"))
        .unwrap_or_else(|| panic!("no line of the client's connection in:\n{logs}"));
    assert!(connected.contains(&span), "{connected}");
}

/// A graceful server shutdown, as the client logs it: the server going away (1001), not a
/// lost connection.
#[test]
fn the_client_logs_a_server_shutdown_as_such() {
    use tokio_webwire::client::{ClientHandler, Reconnect};

    /// Says when the connection is gone.
    struct Gone(tokio::sync::mpsc::UnboundedSender<()>);

    impl ClientHandler for Gone {
        async fn disconnected(&self, _client: &tokio_webwire::Client) {
            let _ = self.0.send(());
        }
    }

    let logs = logs_of("info", async {
        let (server, addr) =
            echo_server::start("127.0.0.1:0", echo_server::DEFAULT_MAX_MESSAGE_SIZE)
                .await
                .expect("binds");
        let (gone, mut disconnected) = tokio::sync::mpsc::unbounded_channel();
        let client = bounded(
            tokio_webwire::Client::builder()
                .reconnect(Reconnect::Off)
                .handler(Gone(gone))
                .connect(format!("ws://{addr}/")),
        )
        .await
        .expect("connects");
        bounded(server.shutdown()).await;
        // The supervisor logs before the handler can run (one thread, no await between).
        bounded(disconnected.recv()).await;
        client.close().await;
    });
    let line = logs
        .lines()
        .find(|line| line.contains("tokio_webwire::client::supervisor: disconnected"))
        .unwrap_or_else(|| panic!("no disconnect logged in:\n{logs}"));
    assert!(
        line.contains("ended=the server is going away (1001)"),
        "{line}"
    );
}
