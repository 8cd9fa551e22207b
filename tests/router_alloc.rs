//! Routing allocates nothing per request: a router of 20 routes costs the same heap blocks
//! per request as the hand-written `match` it replaces, whole server and client included
//! (the reply's one block, tungstenite's reads and writes). One `#[test]` in this file, so
//! that no other test allocates meanwhile; one thread, so that nothing else runs either.

mod common;

use common::RawClient;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{ErrorCode, Message, Name, RequestId};
use tokio_webwire::router::Router;
use tokio_webwire::server::{Connection, Handler, HandlerError, HandlerResult, Server};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Requests counted per server, after as many for warming up.
const REQUESTS: u64 = 5_000;

const NAMES: [&str; 19] = [
    "login", "logout", "whoami", "say", "join", "leave", "rooms", "members", "history", "typing",
    "status", "profile", "avatar", "search", "invite", "kick", "ban", "topic", "ping",
];

/// The hand-written handler: a `match` whose last arm is the echo.
struct Match;

impl Handler for Match {
    async fn request(&self, _: &Connection, name: Name, payload: Payload) -> HandlerResult {
        if name.as_str() == "echo" {
            return Ok(payload);
        }
        match NAMES.iter().find(|known| name.as_str() == **known) {
            Some(known) => Ok(Payload::utf8(*known)),
            None => Err(HandlerError::reply(ErrorCode::from_static("UNKNOWN"), "no")),
        }
    }
}

/// Heap blocks allocated by `REQUESTS` echo requests, one after another, to `server`.
async fn blocks<H: Handler>(server: &Server<H>) -> u64 {
    let (mut client, _) = RawClient::connect_in_memory(server, 64 * 1024).await;
    let mut run = async |count: u64| {
        for id in 0..count {
            let request = Message::request(
                RequestId::from(id),
                Name::from_static("echo"),
                Payload::binary(&b"sixteen bytes!!!"[..]),
            );
            client.send(request.encode().expect("encodes")).await;
            let reply = client.recv().await;
            assert_eq!(&reply[9..], b"sixteen bytes!!!");
        }
    };
    run(REQUESTS).await;
    let before = dhat::HeapStats::get().total_blocks;
    run(REQUESTS).await;
    dhat::HeapStats::get().total_blocks - before
}

#[test]
fn a_router_of_twenty_routes_allocates_what_a_match_does() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let matched = blocks(&Server::new(Match)).await;
        let router = Router::new().request("echo", |payload: Payload| async move { payload });
        let routed = {
            // 19 more routes, each of its own closure type, as an application's are.
            macro_rules! more {
                ($($name:literal),*) => {
                    router$(.request($name, || async { $name }))*
                };
            }
            let router = more!(
                "login", "logout", "whoami", "say", "join", "leave", "rooms", "members", "history",
                "typing", "status", "profile", "avatar", "search", "invite", "kick", "ban",
                "topic", "ping"
            );
            blocks(&Server::new(router.build().expect("valid routes"))).await
        };
        println!(
            "heap blocks per request: match {:.3}, router {:.3}",
            matched as f64 / REQUESTS as f64,
            routed as f64 / REQUESTS as f64
        );
        // Less than one block per hundred requests apart (buffers grow at other moments).
        dhat::assert!(
            routed <= matched + REQUESTS / 100,
            "the router allocated {routed} blocks, the match {matched}"
        );
    });
}
