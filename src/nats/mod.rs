//! Many servers, one service, on NATS (feature `nats`): [`NatsBackplane`] carries
//! publishes, session signals and revocations between the nodes on NATS subjects, and each
//! node receives only the traffic of what it serves.
//!
//! | file | holds |
//! |---|---|
//! | `backplane.rs` | [`NatsBackplane`] and its builder: subjects per route, joins counted per route, the receiving task, reconnections |
//! | `subject.rs` | the subjects of routes: a topic's name escaped into one subject token; the prefix's checks |
//! | `error.rs` | [`NatsConnectError`] |
//!
//! ```no_run
//! use tokio_webwire::nats::NatsBackplane;
//! use tokio_webwire::server::Server;
//! use tokio_webwire::session::SessionStore;
//!
//! # async fn f(shared_store: impl SessionStore) -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder(())
//!     // Sessions need a store every node reads (`RedisStore`, feature `redis`): NATS
//!     // holds none here.
//!     .session_store(shared_store)
//!     .backplane(NatsBackplane::connect("nats://10.0.0.6:4222").await?)
//!     // Every node's, and nobody else's: it signs what the nodes send each other.
//!     .backplane_secret(std::env::var("WEBWIRE_SECRET")?)
//!     .build()?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! # Subjects
//! Every node uses the same prefix (`webwire` unless set). A topic travels on
//! `<prefix>.t.<topic>`, its name escaped into one subject token (every byte that is not
//! printable ASCII, and `.`, `*`, `>`, `%`, as `%XX`: `room/1` stays `room/1`, `chat.eu`
//! is `chat%2Eeu`); a session on `<prefix>.s.<32 hex digits>` (a keyed hash of the
//! session key: the key itself never travels in a subject); revocations on `<prefix>.all`,
//! which every node subscribes to while it runs. A node subscribes to a topic's subject
//! while it has a subscriber to the topic, and to a session's while it holds the session,
//! so a node without subscribers to a topic receives none of its traffic: with N nodes
//! and topics spread over them, a node receives what its own subscribers need rather
//! than everything every node publishes. Each backplane also subscribes to a subject of
//! its own, `<prefix>.sync.<random>`, to learn when the NATS server has registered a
//! subscription (a message of its own comes back through it).
//!
//! # Memory
//! Per route a node serves: its subject (up to 3 KiB for the longest topic, a few dozen
//! bytes usually) in the backplane's map and in async-nats's, and a channel that holds
//! what arrived and was not yet handed to the servers (empty in steady state; async-nats
//! drops messages past 65 536 in one subscription's channel, logged as a slow consumer).
//! The NATS server keeps a subscription per route and node.
//!
//! # TLS
//! A `tls://host:port` URL speaks TLS with the operating system's root certificates;
//! [`NatsBackplaneBuilder::tls_config`] takes a rustls `ClientConfig` of your own (your
//! CA, a client certificate), and requires TLS whatever the URL says. async-nats always
//! builds rustls; the `nats` feature brings the `ring` provider (the one the `rustls`
//! feature uses) so that a server asking for TLS finds one. With the `rustls` feature,
//! `tokio_webwire::tokio_rustls::rustls` and [`async_nats::rustls`] are the same crate
//! (rustls 0.23), so one `ClientConfig` serves both.
//! Credentials: `nats://user:password@host` or [`NatsBackplaneBuilder::options`]
//! (tokens, user and password).
//!
//! # While NATS is away
//! async-nats reconnects by itself, moves to another server of the URL list if there are
//! several, and subscribes again to every subject it had:
//! - publishes, session signals and revocations still reach this node's connections; the
//!   call returns a partial result after the local delivery,
//!   [`TopicError::Backplane`](crate::server::TopicError::Backplane) with how many of
//!   this node's connections got it (the send fails at once while the connection is
//!   down);
//! - what any node publishes while this node's connection is down is lost for this node
//!   (core NATS keeps nothing); once the connection is back and the server has the
//!   subscriptions again, the servers are told ([`Inbox::reconnected`](crate::backplane::Inbox::reconnected));
//! - connections, requests and signals on each node are unaffected.
//!
//! # Topic histories
//! [`shared_history`](crate::backplane::Backplane::shared_history) is `None`: core NATS
//! stores nothing, so it cannot carry the history of a topic (`docs/topics.md`, section 5).
//! Every node keeps its histories in memory, each with its own epochs: a client that
//! resumes on the node it was on recovers what it missed there, and a client that moves to
//! another node is told "not recovered" (another epoch) and subscribes live, never handed
//! another node's offsets. A node receives a topic only while one of its connections
//! subscribes to it: when the last one leaves, what other nodes publish no longer reaches
//! it, so when a subscriber comes back the node starts the topic's history afresh (a new
//! epoch) and a client resuming from before is told "not recovered" rather than handed a
//! history with a hole. A client recovers what it missed when another subscriber kept its
//! node on the topic meanwhile. Publications published while the node was disconnected
//! from NATS are missing from its history too.
//!
//! JetStream could carry them, but this module does not build it. It would take: a
//! stream capturing the history topics' subjects (`<prefix>.h.>`; one stream per history
//! configuration, since a stream's `max_age` and `max_bytes` are the stream's, while
//! `max_msgs_per_subject` bounds each topic's count), publishes through JetStream (a
//! `PubAck`: one round trip, as Redis's script), and positions: JetStream numbers a stream,
//! not a subject, so a topic's consecutive offsets would be the publisher's, carried in a
//! header and kept unique by publishing with `Nats-Expected-Last-Subject-Sequence` (a
//! conflict re-reads the topic's last message and tries again); an epoch per topic (a
//! header of its first message, renewed when the stream lost it); resumes and holes read
//! with direct gets or an ordered consumer filtered on the topic's subject. Live
//! delivery stays on core subscriptions, as now.
//!
//! # Who can write to the subjects
//! Every message between nodes carries a tag made with the service's secret
//! ([`ServerBuilder::backplane_secret`](crate::server::ServerBuilder::backplane_secret)),
//! checked before anything of it is applied, and no session key travels in clear
//! (`docs/backplane.md`): whoever can publish on the subjects cannot forge a signal or a
//! logout. They can still replay a message they saw, and read topics' names and signals
//! (use TLS, and give the service a NATS account, or a user allowed `<prefix>.>` only, of
//! its own).

mod backplane;
mod error;
mod subject;

pub use backplane::{NatsBackplane, NatsBackplaneBuilder};
pub use error::NatsConnectError;

/// The NATS client this module is built on, in the version it uses: its
/// [`ConnectOptions`](async_nats::ConnectOptions) configure the connection beyond a URL,
/// and [`async_nats::rustls`] names the TLS configuration.
pub use ::async_nats;
