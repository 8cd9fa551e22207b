//! Listening: a burst of connections waits in the backlog of `server::bind_with_backlog`
//! until the server accepts them.
//!
//! A file of its own, so that its thousand sockets do not share a process (and its open-file
//! limit) with other tests.

mod common;

use common::bounded;
use tokio::net::TcpStream;
use tokio_webwire::server;

#[tokio::test]
async fn a_burst_of_connects_waits_in_the_backlog_before_any_accept() {
    let listener = bounded(server::bind_with_backlog("127.0.0.1:0", 2048))
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    // One after another, all before the first accept: each connect completes only once
    // the kernel has queued the connection, so the first that finds the backlog full
    // waits (the kernel drops its SYN) and the bound fails the test.
    let mut peers = Vec::with_capacity(1000);
    bounded(async {
        for _ in 0..1000 {
            peers.push(TcpStream::connect(addr).await.expect("connects"));
        }
    })
    .await;
    // They were real connections, waiting for the server.
    bounded(async {
        for _ in 0..1000 {
            listener.accept().await.expect("accepts");
        }
    })
    .await;
}

#[tokio::test]
async fn bind_resolves_names_and_serves() {
    let listener = bounded(server::bind("localhost:0")).await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    assert!(addr.ip().is_loopback(), "{addr}");
    let server = server::Server::new(());
    tokio::spawn(server.serve(listener));
    for client in common::clients(addr, 1).await {
        bounded(client.close()).await;
    }
    bounded(server.shutdown()).await;
}

#[tokio::test]
async fn an_address_in_use_is_an_error() {
    let listener = bounded(server::bind("127.0.0.1:0")).await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let error = bounded(server::bind(addr)).await.expect_err("in use");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
}
