//! `examples/chatroom --redis URL` (feature `redis`): two servers of the example on two
//! ports share one room through a real redis-server (skipped without the binary unless
//! `CI` is set): what is said on one reaches the members on both, a login made on one
//! restores on the other, and a logout on one server reaches the member on the other.

mod common;

#[allow(dead_code)]
#[path = "../examples/chatroom/contract.rs"]
mod contract;
#[allow(dead_code)]
#[path = "../examples/chatroom/server.rs"]
mod server;

use common::bounded;
use common::nodes::{Seen, next_signal, subscriber};
use common::redis::RedisServer;
use contract::{ChatMessage, Login, Logout, Say};
use tokio_webwire::Client;
use tokio_webwire::contract::Signal;
use tokio_webwire::protocol::ErrorCode;
use tokio_webwire::redis::{RedisBackplane, RedisStore};

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

fn login(user: &str, password: &str) -> Login {
    Login {
        user: user.into(),
        password: password.into(),
    }
}

/// Says `text`; returns the note of the reply (`None`: everyone heard it).
async fn say(client: &Client, text: &str) -> Option<String> {
    let say = Say { text: text.into() };
    bounded(client.call(say)).await.expect("said")
}

fn said(from: &str, text: &str) -> (String, String) {
    let message = ChatMessage {
        from: from.into(),
        text: text.into(),
    };
    (
        ChatMessage::NAME.to_owned(),
        serde_json::to_string(&message).unwrap(),
    )
}

/// `outcome` (of `what`) is a refusal with `code` and `message`.
fn refused<T: std::fmt::Debug>(
    outcome: Result<T, tokio_webwire::RequestError>,
    code: ErrorCode,
    message: &str,
    what: &str,
) {
    match outcome {
        Err(tokio_webwire::RequestError::Reply {
            code: got,
            message: said,
        }) => {
            assert_eq!(got, code);
            assert_eq!(said, message);
        }
        other => panic!("expected {what} refused, got {other:?}"),
    }
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
    bounded(alice.call(login("alice", "wonderland")))
        .await
        .expect("logged in");
    bounded(bob.call(login("bob", "builder")))
        .await
        .expect("logged in");

    assert_eq!(say(&alice, "hi from a").await, None);
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
    assert_eq!(say(&bob, "hi from b").await, None);
    for seen in [&mut alice_seen, &mut bob_seen, &mut tab_seen] {
        assert_eq!(next_signal(seen).await, said("bob", "hi from b"));
    }

    // Bob logs out on b: the room on both servers goes on without him.
    bounded(bob.call(Logout {})).await.unwrap();
    loop {
        if bounded(bob_seen.recv()).await == Some(Seen::SessionClosed) {
            break;
        }
    }
    say(&alice, "bob?").await;
    assert_eq!(next_signal(&mut tab_seen).await, said("alice", "bob?"));
    // Back in, the first thing bob hears is said after his return: "bob?" never reached him.
    bounded(bob.call(login("bob", "builder")))
        .await
        .expect("logged in");
    say(&alice, "welcome back").await;
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
    bounded(alice.call(login("alice", "wonderland")))
        .await
        .expect("logged in");

    redis.stop();

    // The room keeps its history in Redis: a message it cannot keep is said to nobody.
    let say = Say {
        text: "anyone?".into(),
    };
    refused(
        bounded(alice.call(say)).await,
        server::ROOM_UNAVAILABLE,
        "the room cannot keep messages right now: nothing was said; try again in a moment",
        "the message",
    );

    let (bob, mut bob_seen) = subscriber(a).await;
    refused(
        bounded(bob.call(login("bob", "builder"))).await,
        server::SESSIONS_UNAVAILABLE,
        "logins cannot be saved right now; try again in a moment",
        "the login",
    );
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
