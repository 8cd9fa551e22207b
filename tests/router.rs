//! The router over real sockets: every extractor and return type, the error replies for a
//! bad payload, a missing session and an unknown name, names refused when the router is
//! built, the hooks and fallback handlers, and one contract used by the server's route and our client.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::nodes::{Seen, next_signal, subscriber};
use common::{bounded, listen};
use serde::{Deserialize, Serialize};
use tokio_webwire::client::TopicEvent;
use tokio_webwire::http::StatusCode;
use tokio_webwire::protocol::{ErrorCode, Name};
use tokio_webwire::router::{
    Attached, INVALID_PAYLOAD, Json, NO_SESSION, RouteError, Router, State, Text, UNKNOWN_REQUEST,
};
use tokio_webwire::server::{
    Connection, Handler, HandlerError, HandlerResult, Server, TopicError, UpgradeRequest,
};
use tokio_webwire::{Client, Payload, RequestError, Session, SessionInfo, contract};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Login {
    user: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Welcome {
    user: String,
    logins: usize,
}

impl contract::Request for Login {
    const NAME: &'static str = "login";
    type Reply = Welcome;
}

/// A contract request that needs a session.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Rename {
    user: String,
}

impl contract::Request for Rename {
    const NAME: &'static str = "rename";
    type Reply = String;
}

async fn rename(_session: Session, rename: Rename) -> Result<String, HandlerError> {
    Ok(rename.user)
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Typing {
    user: String,
}

impl contract::Signal for Typing {
    const NAME: &'static str = "typing";
}

#[derive(Clone, Default)]
struct App {
    logins: Arc<AtomicUsize>,
    typing: Arc<AtomicUsize>,
}

/// What `before_upgrade` attaches.
#[derive(Clone)]
struct Agent(String);

/// The handler of everything else: attaches the agent, answers unknown requests.
struct Hooks;

impl Handler for Hooks {
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        request.attach(Agent("test-agent".into()));
        Ok(())
    }

    subscribe_all_but_secret!();
}

/// Requests of names no route has.
struct Fallback;

impl Handler for Fallback {
    async fn request(&self, _: &Connection, name: Name, _: Payload) -> HandlerResult {
        Ok(Payload::utf8(format!("fallback for {name}")))
    }
}

async fn login(
    conn: Connection,
    State(app): State<App>,
    login: Login,
) -> Result<Welcome, HandlerError> {
    if login.user.is_empty() {
        return Err(HandlerError::reply(
            ErrorCode::from_static("EMPTY_USER"),
            "who are you?",
        ));
    }
    let mut info = SessionInfo::new();
    info.insert("user", &login.user)?;
    conn.create_session(info).await?;
    let logins = app.logins.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Welcome {
        user: login.user,
        logins,
    })
}

async fn whoami(session: Session) -> Result<String, HandlerError> {
    Ok(session.info.get::<String>("user")?.unwrap_or_default())
}

async fn typing(conn: Connection, State(app): State<App>, typing: Typing) {
    app.typing.fetch_add(1, Ordering::SeqCst);
    // Told back to the sender, as a contract signal of the server's.
    let _ = conn.emit(&typing).await;
}

#[derive(Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

fn router(app: App) -> Router<App, impl tokio_webwire::router::Routes<App>, Hooks, Fallback> {
    Router::with_state(app)
        .on(login)
        .on(rename)
        .on_signal(typing)
        .request("whoami", whoami)
        .request(
            "sum",
            |Json(sum): Json<Sum>| async move { Json(sum.a + sum.b) },
        )
        .request("shout", |Text(text): Text| async move {
            Text(text.to_uppercase())
        })
        .request("raw", |payload: Payload| async move { payload })
        .request("bytes", |bytes: Bytes| async move { bytes.to_vec() })
        .request("nothing", || async {})
        .request("agent", |Attached(agent): Attached<Agent>| async move {
            agent.0
        })
        .request("maybe", |session: Option<Session>| async move {
            if session.is_some() { "yes" } else { "no" }
        })
        .request(
            "announce",
            |conn: Connection, Text(user): Text| async move {
                // A contract signal published from a handler: how many got it here.
                Ok::<_, TopicError>(Json(conn.emit_to("news", &Typing { user }).await?))
            },
        )
        .request("broken", |_: ()| async {
            Err::<(), _>(std::io::Error::other("a secret the client must not see"))
        })
        .hooks(Hooks)
        .fallback(Fallback)
}

async fn start() -> (App, Client, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let app = App::default();
    let server = Server::new(router(app.clone()).build().expect("valid routes"));
    let addr = listen(&server).await;
    let (client, seen) = subscriber(addr).await;
    (app, client, seen)
}

/// The router's server, and a client of the topics extension connected to it.
async fn start_with_topics() -> (Server<impl Handler>, Client) {
    let server = Server::new(router(App::default()).build().expect("valid routes"));
    let addr = listen(&server).await;
    let client = bounded(
        Client::builder()
            .topics(true)
            .connect(format!("ws://{addr}/")),
    )
    .await
    .expect("connects");
    (server, client)
}

fn reply_error(result: Result<Payload, RequestError>) -> (String, String) {
    match result {
        Err(RequestError::Reply { code, message }) => (code.to_string(), message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn payload_extractors_and_return_types() {
    let (_app, client, _seen) = start().await;
    let sum = bounded(client.request("sum", r#"{"a": 2, "b": 40}"#))
        .await
        .expect("a reply");
    assert_eq!(sum.parse_json::<i64>().expect("json"), 42);
    // UTF-16 text is text too.
    let shout = bounded(client.request("shout", Payload::utf16("hé")))
        .await
        .expect("a reply");
    assert_eq!(shout, Payload::utf8("HÉ"));
    // A payload passed through keeps its encoding.
    let raw = bounded(client.request("raw", Payload::utf16("x")))
        .await
        .expect("a reply");
    assert_eq!(raw, Payload::utf16("x"));
    let bytes = bounded(client.request("bytes", Payload::binary(vec![1u8, 2, 3])))
        .await
        .expect("a reply");
    assert_eq!(bytes, Payload::binary(vec![1u8, 2, 3]));
    let nothing = bounded(client.request("nothing", "ignored"))
        .await
        .expect("a reply");
    assert_eq!(nothing, Payload::empty());
    let agent = bounded(client.request("agent", "")).await.expect("a reply");
    assert_eq!(agent.to_text().expect("text"), "test-agent");
}

#[tokio::test]
async fn a_payload_that_does_not_parse_is_answered_with_what_was_expected() {
    let (_app, client, _seen) = start().await;
    let (code, message) = reply_error(bounded(client.request("sum", r#"{"a": 2}"#)).await);
    assert_eq!(code, INVALID_PAYLOAD.as_str());
    assert!(message.contains("JSON of router::Sum"), "{message}");
    assert!(message.contains("missing field `b`"), "{message}");
    let (code, message) = reply_error(bounded(client.request("sum", "not json")).await);
    assert_eq!(code, INVALID_PAYLOAD.as_str());
    assert!(message.contains("expected JSON"), "{message}");
    // Binary that is not UTF-8 is no text.
    let (code, _) =
        reply_error(bounded(client.request("shout", Payload::binary(vec![0xffu8, 0xfe]))).await);
    assert_eq!(code, INVALID_PAYLOAD.as_str());
    // The contract's own type, too.
    let (code, message) = reply_error(bounded(client.request("login", "{}")).await);
    assert_eq!(code, INVALID_PAYLOAD.as_str());
    assert!(message.contains("router::Login"), "{message}");
}

#[tokio::test]
async fn a_route_that_needs_a_session_refuses_a_connection_without_one() {
    let (_app, client, _seen) = start().await;
    let (code, message) = reply_error(bounded(client.request("whoami", "")).await);
    assert_eq!(code, NO_SESSION.as_str());
    assert_eq!(message, "this request needs a session");
    let maybe = bounded(client.request("maybe", "")).await.expect("a reply");
    assert_eq!(maybe.to_text().expect("text"), "no");
    // A contract's message is read after the other arguments: a client without a session
    // is told so, whatever it sent.
    for payload in [r#"{"user": "ann"}"#, "not json"] {
        let (code, _) = reply_error(bounded(client.request("rename", payload)).await);
        assert_eq!(code, NO_SESSION.as_str(), "{payload}");
    }
}

#[tokio::test]
async fn one_contract_for_the_route_and_the_client() {
    let (app, client, _seen) = start().await;
    let welcome = bounded(client.call(Login {
        user: "alice".into(),
    }))
    .await
    .expect("logged in");
    assert_eq!(
        welcome,
        Welcome {
            user: "alice".into(),
            logins: 1
        }
    );
    assert_eq!(app.logins.load(Ordering::SeqCst), 1);
    // The session the route created is there for the next route.
    let me = bounded(client.request("whoami", ""))
        .await
        .expect("a reply");
    assert_eq!(me.to_text().expect("text"), "alice");
    let maybe = bounded(client.request("maybe", "")).await.expect("a reply");
    assert_eq!(maybe.to_text().expect("text"), "yes");
    // The handler's own reply error reaches the caller as such.
    match bounded(client.call(Login {
        user: String::new(),
    }))
    .await
    {
        Err(RequestError::Reply { code, message }) => {
            assert_eq!(code.as_str(), "EMPTY_USER");
            assert_eq!(message, "who are you?");
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
}

#[tokio::test]
async fn contract_signals_both_ways() {
    let (app, client, mut seen) = start().await;
    bounded(client.emit(&Typing { user: "bob".into() }))
        .await
        .expect("sent");
    let (name, text) = next_signal(&mut seen).await;
    let name = Name::new(name).expect("a name");
    let back = Typing::read_text(&name, &text);
    assert_eq!(back, Some(Typing { user: "bob".into() }));
    assert_eq!(app.typing.load(Ordering::SeqCst), 1);
    // A signal whose payload is not the contract's type is dropped; the next one arrives.
    bounded(client.signal("typing", "not json"))
        .await
        .expect("sent");
    bounded(client.emit(&Typing {
        user: "carol".into(),
    }))
    .await
    .expect("sent");
    let (_, text) = next_signal(&mut seen).await;
    assert!(text.contains("carol"), "{text}");
    assert_eq!(app.typing.load(Ordering::SeqCst), 2);
}

/// A contract signal serde cannot write as JSON (a map whose keys are not strings).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Odd(std::collections::BTreeMap<(u8, u8), u8>);

impl contract::Signal for Odd {
    const NAME: &'static str = "odd";
}

#[tokio::test]
async fn contract_signals_published_to_a_topic() {
    let (server, client) = start_with_topics().await;
    let mut news = bounded(client.subscribe("news")).await.expect("subscribed");
    let next =
        async |news: &mut tokio_webwire::client::Subscription| match bounded(news.next()).await {
            Some(TopicEvent::Publication { name, payload, .. }) => {
                <Typing as contract::Signal>::read(&name, &payload)
                    .expect("a typing signal")
                    .expect("its JSON")
            }
            other => panic!("expected a publication, got {other:?}"),
        };

    let sent = bounded(server.emit_to(
        "news",
        &Typing {
            user: "dave".into(),
        },
    ))
    .await;
    assert_eq!(sent.expect("published"), 1);
    assert_eq!(
        next(&mut news).await,
        Typing {
            user: "dave".into()
        }
    );

    // Not JSON: an error, and nothing published (the next publication is the next one).
    let odd = Odd([((1, 2), 3)].into());
    match bounded(server.emit_to("news", &odd)).await {
        Err(TopicError::Json { reason }) => assert!(reason.contains("key"), "{reason}"),
        other => panic!("expected a JSON error, got {other:?}"),
    }
    // From a handler, through its connection.
    let here = bounded(client.request("announce", "erin"))
        .await
        .expect("a reply");
    assert_eq!(here.parse_json::<usize>().expect("a count"), 1);
    assert_eq!(
        next(&mut news).await,
        Typing {
            user: "erin".into()
        }
    );
}

/// Reads a recorded signal's text as a contract signal.
trait ReadText: contract::Signal {
    fn read_text(name: &Name, text: &str) -> Option<Self> {
        Self::read(name, &Payload::utf8(text.to_owned())).map(|read| read.expect("its JSON"))
    }
}

impl<T: contract::Signal> ReadText for T {}

#[tokio::test]
async fn unknown_names_go_to_the_fallback_or_get_a_reply_naming_them() {
    let (_app, client, _seen) = start().await;
    let fallback = bounded(client.request("nope", "")).await.expect("a reply");
    assert_eq!(fallback.to_text().expect("text"), "fallback for nope");

    // Without a fallback: UNKNOWN_REQUEST, naming it, whatever the hooks handler's
    // `request` would say (hooks given for `connected` and the like must not change it).
    let server = Server::new(
        Router::new()
            .request("known", || async { "yes" })
            .hooks(Fallback)
            .build()
            .expect("valid"),
    );
    let addr = listen(&server).await;
    let client = common::clients(addr, 1).await.remove(0);
    let (code, message) = reply_error(bounded(client.request("nope", "")).await);
    assert_eq!(code, UNKNOWN_REQUEST.as_str());
    assert_eq!(message, r#"no request named "nope""#);
    let known = bounded(client.request("known", "")).await.expect("a reply");
    assert_eq!(known.to_text().expect("text"), "yes");
}

#[tokio::test]
async fn internal_errors_stay_on_the_server() {
    let (_app, client, _seen) = start().await;
    match bounded(client.request("broken", "")).await {
        Err(RequestError::Internal) => {}
        other => panic!("expected an internal error, got {other:?}"),
    }
}

#[test]
fn names_are_checked_when_the_router_is_built() {
    let twice = Router::new()
        .request("a", || async {})
        .request("a", || async {})
        .build();
    assert_eq!(
        twice.err(),
        Some(RouteError::Duplicate {
            kind: "request",
            name: "a".into()
        })
    );
    // A request and a signal may share a name: they are different messages.
    assert!(
        Router::new()
            .request("a", || async {})
            .signal("a", || async {})
            .build()
            .is_ok()
    );
    let twice = Router::new()
        .signal("s", || async {})
        .signal("s", || async {})
        .build();
    assert!(matches!(
        twice,
        Err(RouteError::Duplicate { kind: "signal", .. })
    ));
    let bad = Router::new().request("caf\u{e9}", || async {}).build();
    match bad {
        Err(RouteError::InvalidName { kind, name, .. }) => {
            assert_eq!((kind, name.as_str()), ("request", "caf\u{e9}"));
        }
        other => panic!("expected an invalid name, got {other:?}"),
    }
    let long = Router::new().request(&"x".repeat(256), || async {}).build();
    assert!(matches!(long, Err(RouteError::InvalidName { .. })));
    let empty = Router::new().request("", || async {}).build();
    assert_eq!(empty.err(), Some(RouteError::EmptyName { kind: "request" }));
    // The contract's name is checked too.
    assert!(router(App::default()).build().is_ok());
}

/// Every hook reaches the hooks handler, `subscribe_requested` too: a client of the topics
/// extension subscribes where the hooks allow it (without it, the router's default
/// refused every subscription: the chat room page could not join its room).
#[tokio::test]
async fn the_hooks_handler_decides_subscriptions() {
    let (_server, client) = start_with_topics().await;
    let _news = bounded(client.subscribe("news")).await.expect("allowed");
    match bounded(client.subscribe("secret")).await {
        Err(tokio_webwire::client::SubscribeError::Request(RequestError::Reply {
            code, ..
        })) => assert_eq!(code.as_str(), "WW_REFUSED"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    bounded(client.close()).await;
}

/// Past `FLAT` routes the lists are chained: each of 70 routes (a first list of 32, a second
/// of 32, a third of 6) answers its own name, and a name none has still reaches the
/// fallback.
#[tokio::test]
async fn every_route_of_a_long_router_answers_its_own_name() {
    macro_rules! routes {
        ($router:expr; $($name:literal),*) => {
            $router$(.request($name, || async { $name }))*
        };
    }
    assert_eq!(tokio_webwire::router::FLAT, 32, "the lists this test spans");
    // FLAT routes are one list; one more starts a chain.
    fn list<S, R, K, F>(_: &Router<S, R, K, F>) -> &'static str {
        std::any::type_name::<R>()
    }
    let flat = routes!(Router::new(); "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22", "r23", "r24", "r25", "r26", "r27", "r28", "r29", "r30", "r31");
    assert!(!list(&flat).contains("Chain"), "{}", list(&flat));
    let chained = flat.request("r32", || async { "r32" });
    assert!(list(&chained).contains("Chain"), "{}", list(&chained));
    let router = routes!(Router::new(); "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22", "r23", "r24", "r25", "r26", "r27", "r28", "r29", "r30", "r31", "r32", "r33", "r34", "r35", "r36", "r37", "r38", "r39", "r40", "r41", "r42", "r43", "r44", "r45", "r46", "r47", "r48", "r49", "r50", "r51", "r52", "r53", "r54", "r55", "r56", "r57", "r58", "r59", "r60", "r61", "r62", "r63", "r64", "r65", "r66", "r67", "r68", "r69");
    let server = Server::new(router.build().expect("valid routes"));
    let addr = listen(&server).await;
    let (client, _seen) = subscriber(addr).await;
    for index in 0..70 {
        let name = format!("r{index}");
        let reply = bounded(client.request(name.as_str(), ""))
            .await
            .expect("a reply");
        assert_eq!(reply.to_text().expect("text"), name);
    }
    let (code, _) = reply_error(bounded(client.request("r70", "")).await);
    assert_eq!(code, "UNKNOWN_REQUEST");
}
