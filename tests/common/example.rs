//! The examples as a newcomer runs them: real processes, their stdout, stderr and exit
//! codes.
//!
//! The binaries are the ones `cargo test` builds beside the test binaries
//! (`target/debug/examples/`), with the same features: run `cargo test` (or
//! `cargo build --examples` with the test's features first when running one test file).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_webwire::Client;
use tokio_webwire::client::{ClientHandler, Reconnect};

/// How long a command may take: a client's 5 s timeouts fit in it with room to spare.
const LIMIT: Duration = Duration::from_secs(30);

/// The path of the example `name`'s binary, built by `cargo test` beside this test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/debug/deps/<test> → target/debug/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (with one --test, run \
         `cargo build --examples` with the same features first)",
        path.display()
    );
    path
}

fn command(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary(name));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The exit code (`None`: killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs the example `name` with `args`, `stdin` as its input, to its end.
pub async fn run(name: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = command(name, args).spawn().expect("the example starts");
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_owned();
    // Written while the output is read: a large input cannot block on a full pipe.
    let writer = tokio::spawn(async move {
        let _ = input.write_all(stdin.as_bytes()).await;
    });
    let output = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not end within {LIMIT:?}"))
        .expect("the example runs");
    let _ = writer.await;
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A server example running until interrupted.
pub struct Server {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Its first line of output: where it serves.
    pub first_line: String,
}

/// Starts the server example `name` with `args` and waits for its first line of output
/// (the URL it serves at).
pub async fn start(name: &str, args: &[&str]) -> Server {
    let mut child = command(name, args).spawn().expect("the example starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = tokio::time::timeout(LIMIT, stdout.next_line()).await;
    let Ok(Ok(Some(first_line))) = first else {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(LIMIT, err.read_to_string(&mut stderr)).await;
        }
        panic!("{name} {args:?} printed no address: {first:?}, stderr:\n{stderr}");
    };
    Server {
        child,
        stdout,
        first_line,
    }
}

impl Server {
    /// `host:port` of the URL in its first line (`ws://127.0.0.1:1234/`, `http://…/ …`).
    pub fn addr(&self) -> String {
        let rest = self
            .first_line
            .split_once("://")
            .map_or(&*self.first_line, |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest).to_owned()
    }

    /// The next line it prints.
    pub async fn next_line(&mut self) -> String {
        tokio::time::timeout(LIMIT, self.stdout.next_line())
            .await
            .expect("a line in time")
            .expect("readable")
            .expect("a line, not the end")
    }

    /// Ctrl-C: sends SIGINT and waits for it to end; returns what it wrote to stderr.
    pub async fn interrupt(mut self) -> Output {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let mut stderr = String::new();
        let mut err = self.child.stderr.take().expect("piped");
        let mut rest = Vec::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(LIMIT, self.stdout.next_line()).await {
            rest.push(line);
        }
        tokio::time::timeout(LIMIT, err.read_to_string(&mut stderr))
            .await
            .expect("stderr closes in time")
            .expect("readable");
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("it ends after Ctrl-C")
            .expect("waited");
        Output {
            status,
            stdout: rest.join("\n"),
            stderr,
        }
    }
}

/// Our client of an example's server at `url`, with `handler`, without reconnection (an
/// example's server does not come back).
pub async fn client_with<H: ClientHandler>(url: &str, handler: H) -> Client {
    super::bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .handler(handler)
            .connect(url),
    )
    .await
    .expect("connects")
}

/// A self-signed certificate for 127.0.0.1 written as PEM files into a fresh directory
/// named after `what` and this process: returns the directory, the certificate's file and
/// the key's file. The test removes the directory.
#[cfg(feature = "rustls")]
pub fn self_signed_pem_files(what: &str) -> (PathBuf, PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let dir = std::env::temp_dir().join(format!("tokio-webwire-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("the certificate written");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("the key written");
    (dir, cert, key)
}
