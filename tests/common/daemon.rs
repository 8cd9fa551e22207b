//! What the tests' real servers (`redis-server`, a Redis Cluster, `nats-server`) have in
//! common: the binary checked for (skipped without it outside CI, required in CI), a
//! directory of their own, free ports of 127.0.0.1, a process started and awaited until it
//! answers, tried again on failure, and killed and reaped when dropped; a server of one
//! port kept across restarts ([`RealServer`]).

use std::future::Future;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How many times a start is tried (each on new free ports, or the same ones for a restart).
pub const ATTEMPTS: usize = 5;

/// Whether `binary` (run with `--version`) is installed. Without it a test is skipped
/// outside CI (this says so on stderr); in CI, which installs `package` (`.ci/run`), a test
/// that silently skipped would prove nothing, so this panics.
pub fn installed(binary: &str, package: &str) -> bool {
    match Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{binary} is not installed, and CI is set: these tests must run in CI \
                     (`.ci/run` installs it with apt-get install -y {package})"
                );
            }
            eprintln!(
                "SKIPPED: {binary} is not installed (apt-get install {package}); this test \
                 did not run"
            );
            false
        }
        Err(err) => panic!("cannot run {binary} --version: {err}"),
    }
}

/// A new temporary directory of this process, named for `what`.
pub fn temporary_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tokio-webwire-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory for a test server");
    dir
}

/// A port of 127.0.0.1 that was free a moment ago (servers that cannot bind port 0 and
/// say which port they got take one of these; another process may take it meanwhile, so
/// a start is tried again on another: [`retry`]).
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Runs `attempt` until it succeeds, [`ATTEMPTS`] times at most (saying why each failed on
/// stderr); panics if none did. `what` names it: "redis-server start".
pub async fn retry(what: &str, mut attempt: impl AsyncFnMut() -> Result<(), String>) {
    for n in 1..=ATTEMPTS {
        match attempt().await {
            Ok(()) => return,
            Err(why) => eprintln!("{what} {n} failed: {why}"),
        }
    }
    panic!("{what} did not succeed in {ATTEMPTS} attempts");
}

/// One server process of a test's own, in a directory of its own: killed and reaped, and
/// its directory removed, when dropped.
pub struct Daemon {
    dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// A daemon not started yet, with a new directory named for `what`.
    pub fn new(what: &str) -> Daemon {
        Daemon {
            dir: temporary_dir(what),
            child: None,
        }
    }

    /// Its directory (its log goes there, and whatever files it reads).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `command` (standard streams closed) and waits up to `limit` until `ready`
    /// says it answers. On failure the process is gone and the error has `log`'s text.
    pub async fn spawn<F>(
        &mut self,
        mut command: Command,
        log: &Path,
        limit: Duration,
        mut ready: impl FnMut() -> F,
    ) -> Result<(), String>
    where
        F: Future<Output = bool>,
    {
        // One process at a time: one still running is stopped first.
        self.stop();
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run {program}: {err}"))?;
        self.child = Some(child);
        let up = tokio::time::timeout(limit, async {
            loop {
                if let Some(child) = &mut self.child {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("{program} exited: {status}"));
                    }
                }
                if ready().await {
                    return Ok(());
                }
                // Polling a process we cannot be told about: it has no readiness signal
                // but answering.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("{program} did not answer within {limit:?}")));
        if let Err(why) = up {
            self.stop();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{why}; its log:\n{log}"));
        }
        Ok(())
    }

    /// Kills the process and reaps it: its ports refuse connections once this returns.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it has exited already; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long a [`RealServer`] has to answer: once started, and each request of a test.
pub const READY_LIMIT: Duration = Duration::from_secs(10);

/// One kind of single server ([`RealServer`]'s): how it is run on its ports.
pub trait Kind {
    /// The program: "redis-server". Its log in its directory is named for it.
    const PROGRAM: &'static str;

    /// Takes free ports for a start besides the one for clients (a restart keeps them).
    fn take_other_ports(&mut self) {}

    /// Adds the arguments that make it listen for clients on `port`, work in `dir` and log
    /// to `log`.
    fn args(&self, command: &mut Command, port: u16, dir: &Path, log: &Path);

    /// Whether it answers on `port` (and its other ports).
    fn ready(&self, port: u16) -> impl Future<Output = bool>;
}

/// A server of kind `K` of the test's own: stopped (killed and reaped) when dropped, and
/// restartable on the same ports.
pub struct RealServer<K> {
    daemon: Daemon,
    port: u16,
    kind: K,
}

impl<K: Kind> RealServer<K> {
    /// Starts `kind` in `daemon` on free ports. They are taken free and given back (most
    /// servers cannot bind port 0 and say which port they got), for a restart on the same
    /// ports; another process may take one meanwhile: then the start fails and is tried
    /// again on others.
    pub async fn launch(daemon: Daemon, kind: K) -> RealServer<K> {
        let mut server = RealServer {
            daemon,
            port: 0,
            kind,
        };
        retry(&format!("{} start", K::PROGRAM), async || {
            server.port = free_port();
            server.kind.take_other_ports();
            server.spawn().await
        })
        .await;
        server
    }

    /// What it is run with.
    pub fn kind(&self) -> &K {
        &self.kind
    }

    /// The port it listens on for clients (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and reaps it: its port refuses connections once this returns.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Starts it again, on the same ports.
    pub async fn restart(&mut self) {
        self.stop();
        let what = format!("{} restart on port {}", K::PROGRAM, self.port);
        retry(&what, async || self.spawn().await).await;
    }

    /// Runs the program on its ports and waits until it answers.
    async fn spawn(&mut self) -> Result<(), String> {
        let log = self.daemon.dir().join(format!("{}.log", K::PROGRAM));
        let mut command = Command::new(K::PROGRAM);
        self.kind
            .args(&mut command, self.port, self.daemon.dir(), &log);
        let (kind, port) = (&self.kind, self.port);
        self.daemon
            .spawn(command, &log, READY_LIMIT, || kind.ready(port))
            .await
    }
}
