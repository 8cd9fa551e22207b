//! `examples/chatroom --redis URL` (feature `redis`): two servers of the example on two
//! ports share one room through a real redis-server (skipped without the binary unless
//! `CI` is set): what is said on one reaches the members on both, a login made on one
//! restores on the other, and a logout on one server reaches the member on the other.

mod common;

#[allow(dead_code)]
#[path = "../examples/chatroom/server.rs"]
mod server;

use common::bounded;
use common::nodes::{Seen, next_signal, subscriber};
use common::redis::RedisServer;
use tokio_webwire::redis::{RedisBackplane, RedisStore};
use tokio_webwire::{Client, Payload};

async fn chat_server(redis: &RedisServer) -> std::net::SocketAddr {
    let store = bounded(RedisStore::connect(&redis.url())).await.unwrap();
    let backplane = bounded(RedisBackplane::connect(&redis.url()))
        .await
        .unwrap();
    let (_server, addr) = server::start("127.0.0.1:0", server::build(store, backplane))
        .await
        .expect("binds");
    addr
}

async fn login(client: &Client, user: &str, password: &str) {
    let login = Payload::json(&server::Login {
        user: user.into(),
        password: password.into(),
    })
    .unwrap();
    bounded(client.request("login", login))
        .await
        .expect("logged in");
}

fn said(from: &str, text: &str) -> (String, String) {
    let message = server::ChatMessage {
        from: from.into(),
        text: text.into(),
    };
    (
        server::MESSAGE.to_owned(),
        serde_json::to_string(&message).unwrap(),
    )
}

#[tokio::test]
async fn two_servers_on_one_redis_share_one_room() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = chat_server(&redis).await;
    let b = chat_server(&redis).await;
    let (alice, mut alice_seen) = subscriber(a).await;
    let (bob, mut bob_seen) = subscriber(b).await;
    login(&alice, "alice", "wonderland").await;
    login(&bob, "bob", "builder").await;

    bounded(alice.request("say", "hi from a")).await.unwrap();
    assert_eq!(
        next_signal(&mut alice_seen).await,
        said("alice", "hi from a")
    );
    assert_eq!(next_signal(&mut bob_seen).await, said("alice", "hi from a"));

    // Alice's login, made on a, restores on b: she is a member there too.
    let key = alice.session().expect("a session").key;
    let (tab, mut tab_seen) = subscriber(b).await;
    bounded(tab.restore_session(&key))
        .await
        .expect("restored on b");
    bounded(bob.request("say", "hi from b")).await.unwrap();
    for seen in [&mut alice_seen, &mut bob_seen, &mut tab_seen] {
        assert_eq!(next_signal(seen).await, said("bob", "hi from b"));
    }

    // Bob logs out on b: the room on both servers goes on without him.
    bounded(bob.request("logout", "")).await.unwrap();
    loop {
        if bounded(bob_seen.recv()).await == Some(Seen::SessionClosed) {
            break;
        }
    }
    bounded(alice.request("say", "bob?")).await.unwrap();
    assert_eq!(next_signal(&mut tab_seen).await, said("alice", "bob?"));
    // Back in, the first thing bob hears is said after his return: "bob?" never reached him.
    login(&bob, "bob", "builder").await;
    bounded(alice.request("say", "welcome back")).await.unwrap();
    assert_eq!(
        next_signal(&mut bob_seen).await,
        said("alice", "welcome back")
    );
}

/// Redis stopped under a running room (a real redis-server, killed): a login is refused
/// with an error the client can act on, and no session is announced that a reconnect
/// could not restore; a message said is refused and reaches nobody (the room keeps its
/// history in Redis: a message delivered but not kept would be missed by every resume),
/// with an error the sender can act on.
#[tokio::test]
async fn with_redis_away_logins_and_messages_are_refused_with_errors_to_act_on() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let a = chat_server(&redis).await;
    let (alice, mut alice_seen) = subscriber(a).await;
    login(&alice, "alice", "wonderland").await;

    redis.stop();

    match bounded(alice.request("say", "anyone?")).await {
        Err(tokio_webwire::RequestError::Reply { code, message }) => {
            assert_eq!(code, server::ROOM_UNAVAILABLE);
            assert_eq!(
                message,
                "the room cannot keep messages right now: nothing was said; try again in a moment"
            );
        }
        other => panic!("expected the message refused, got {other:?}"),
    }

    let (bob, mut bob_seen) = subscriber(a).await;
    let login = Payload::json(&server::Login {
        user: "bob".into(),
        password: "builder".into(),
    })
    .unwrap();
    match bounded(bob.request("login", login)).await {
        Err(tokio_webwire::RequestError::Reply { code, message }) => {
            assert_eq!(code, server::SESSIONS_UNAVAILABLE);
            assert_eq!(
                message,
                "logins cannot be saved right now; try again in a moment"
            );
        }
        other => panic!("expected the login refused, got {other:?}"),
    }
    assert!(bob.session().is_none(), "no session was announced");
    assert!(bob_seen.try_recv().is_err(), "no session event either");
    // The refused message was queued for nobody (it would have come before the reply).
    while let Ok(seen) = alice_seen.try_recv() {
        assert!(
            !matches!(seen, Seen::Signal(..)),
            "nothing was said: {seen:?}"
        );
    }
}
