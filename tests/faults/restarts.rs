//! Reconnect under faults: restarts on the same port under logged-in clients that keep
//! sending; nothing is lost or done twice, and sessions are kept.

use super::*;

const RESTARTS: usize = 10;
const LOGGED_IN: usize = 4;
/// Concurrent request loops per client.
const LOOPS: usize = 2;

/// How one client's requests ended.
#[derive(Debug, Default, Clone)]
struct Ended {
    /// The payloads of the replies, each at most once.
    replies: HashSet<String>,
    disconnected: usize,
    shutdown: usize,
    timeout: usize,
}

/// Requests with unique payloads until `stop`; each must end in its own reply (never one
/// seen before) or a clear error.
async fn request_loop(
    client: Client,
    tag: String,
    stop: Arc<AtomicBool>,
    progress: Arc<watch::Sender<Vec<usize>>>,
    index: usize,
) -> Ended {
    let mut ended = Ended::default();
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let body = format!("{tag}/{n}");
        n += 1;
        match bounded(client.request("echo", body.clone())).await {
            Ok(reply) => {
                assert_eq!(
                    reply,
                    Payload::utf8(body.clone()),
                    "a reply to another request"
                );
                assert!(ended.replies.insert(body), "a reply received twice");
                progress.send_modify(|counts| counts[index] += 1);
            }
            Err(RequestError::Disconnected) => ended.disconnected += 1,
            Err(RequestError::Shutdown) => ended.shutdown += 1,
            Err(RequestError::Timeout { .. }) => ended.timeout += 1,
            Err(other) => panic!("{body}: unexpected {other:?}"),
        }
    }
    ended
}

/// Waits until every client has had `more` replies since `since` (a snapshot).
async fn progress_after(progress: &watch::Sender<Vec<usize>>, more: usize) {
    let since = progress.borrow().clone();
    let mut watching = progress.subscribe();
    bounded(watching.wait_for(|counts| {
        counts
            .iter()
            .zip(&since)
            .all(|(now, then)| *now >= then + more)
    }))
    .await
    .expect("progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_reconnecting_clients_lose_nothing_and_keep_sessions() {
    let ledger = Arc::new(Ledger::default());
    let store = Arc::new(MemoryStore::default());
    let (mut server, addr) = serve_on(None, &ledger, &store).await;
    let backoff = Backoff::default()
        .min(Duration::from_millis(5))
        .max(Duration::from_millis(50));
    let mut clients = Vec::new();
    let mut keys = Vec::new();
    for i in 0..LOGGED_IN {
        let client = bounded(
            Client::builder()
                .reconnect(Reconnect::Backoff(backoff.clone()))
                .request_timeout(Duration::from_secs(5))
                .connect(format!("ws://{addr}/")),
        )
        .await
        .expect("connects");
        let key = bounded(client.request("login", format!("user{i}")))
            .await
            .expect("login")
            .to_text()
            .expect("key");
        assert_eq!(client.session().map(|s| s.key), Some(key.clone()));
        clients.push(client);
        keys.push(key);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(watch::Sender::new(vec![0usize; LOGGED_IN]));
    let mut loops = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        for l in 0..LOOPS {
            loops.push(tokio::spawn(request_loop(
                client.clone(),
                format!("c{i}l{l}"),
                Arc::clone(&stop),
                Arc::clone(&progress),
                i,
            )));
        }
    }
    for _ in 0..RESTARTS {
        // Replies under way on this server (a reply of the previous one may be counted
        // late, one per loop: hence more than LOOPS).
        progress_after(&progress, LOOPS + 1).await;
        bounded(server.shutdown()).await;
        server = serve_on(Some(addr), &ledger, &store).await.0;
    }
    progress_after(&progress, LOOPS + 1).await;
    stop.store(true, Ordering::Release);
    let mut all = Vec::new();
    for task in loops {
        all.push(bounded(task).await.expect("request loop"));
    }

    // Sessions came back with every reconnection.
    for (client, key) in clients.iter().zip(&keys) {
        assert_eq!(client.session().map(|s| s.key), Some(key.clone()));
        assert_eq!(server.session_connections(key).len(), 1, "restored");
        assert_eq!(client.pending_requests(), 0);
    }
    // Nothing handled twice; every reply was handled exactly once.
    let handled = ledger.handled();
    assert!(handled.values().all(|&n| n == 1), "a request handled twice");
    let mut replies = HashSet::new();
    let (mut disconnected, mut shutdown, mut timeout) = (0, 0, 0);
    for ended in all {
        for body in &ended.replies {
            assert_eq!(handled.get(body.as_bytes()), Some(&1), "{body}");
        }
        replies.extend(ended.replies);
        disconnected += ended.disconnected;
        shutdown += ended.shutdown;
        timeout += ended.timeout;
    }
    // The servers answer every request they handle before closing: the requests that
    // ended in an error were never handled.
    assert_eq!(handled.len(), replies.len(), "handled but not answered");
    println!(
        "{RESTARTS} restarts: {} replies, {disconnected} disconnected, {shutdown} shutdown, \
         {timeout} timed out; {} handled by the servers",
        replies.len(),
        handled.len()
    );
}
