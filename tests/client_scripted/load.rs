//! Load: many concurrent requests, and a server that stops reading.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_requests_from_eight_tasks() {
    let script = Script::bind().await;
    let (client, ws) = connect(&script).await;
    let server = tokio::spawn(echo(ws));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let client = client.clone();
        tasks.spawn(async move {
            let requests = (0..125).map(|i| {
                let client = &client;
                async move {
                    let text = format!("task {task} request {i}");
                    let payload = if i % 3 == 0 {
                        Payload::utf16(&text)
                    } else {
                        Payload::utf8(text)
                    };
                    let reply = client.request("echo", payload.clone()).await;
                    assert_eq!(reply.as_ref(), Ok(&payload));
                }
            });
            futures_util::future::join_all(requests).await;
        });
    }
    within(async {
        while let Some(result) = tasks.join_next().await {
            result.expect("task succeeded");
        }
    })
    .await;
    assert_eq!(client.pending_requests(), 0);
    within(client.close()).await;
    within(server).await.unwrap();
}

/// A server that stops reading: the client drops the connection after its write timeout,
/// and what was in flight fails with `Disconnected` instead of waiting for the request
/// timeout.
#[tokio::test]
async fn a_server_that_stops_reading_is_dropped_after_the_write_timeout() {
    let script = Script::bind().await;
    let builder = no_reconnect()
        .write_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(3600));
    let (client, _never_read) =
        connect_with(builder, &script, &accept_conf(60_000, 16 << 20)).await;
    // 64 MiB in all: more than the socket buffers take, so the writes wait.
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .request("big", Payload::binary(vec![0; 4 << 20]))
                    .await
            })
        })
        .collect();
    for request in requests {
        let outcome = within(request).await.expect("the request task ends");
        assert!(
            matches!(outcome, Err(RequestError::Disconnected)),
            "{outcome:?}"
        );
    }
}
