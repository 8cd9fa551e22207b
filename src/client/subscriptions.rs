//! The topics the client is subscribed to: what a [`Subscription`](crate::client::Subscription)
//! receives ([`TopicEvent`]) and the table of each topic's last position and the sender to
//! its subscription ([`Topics`]), kept in the client's shared state.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc;

use crate::client::RequestError;
use crate::payload::Payload;
use crate::protocol::Name;
use crate::protocol::topics::Position;

/// What a [`Subscription`](crate::client::Subscription) yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicEvent {
    /// A publication: the signal `name` with `payload`, at `position` (`None` for a topic
    /// without history). Delivered once each, in the topic's order.
    Publication {
        /// Its place in the topic; `None` when the topic keeps no history.
        position: Option<Position>,
        /// The signal's name.
        name: Name,
        /// The signal's payload.
        payload: Payload,
    },
    /// After a reconnection the client subscribed again from the last position it saw,
    /// and the server had everything since: every publication missed was delivered,
    /// in order and none twice, *before* this event. Live ones follow the missed ones;
    /// one may come before this event (it was published while the answer was on its way).
    Recovered {
        /// The topic's position when the subscription joined again.
        position: Position,
    },
    /// After a reconnection the server no longer had everything since the last position
    /// seen (the history was trimmed, or its epoch changed: a restart, another node):
    /// publications up to `position` were missed and none of them is delivered; live ones
    /// after `position` may come before this event. Reload the state the topic carries.
    NotRecovered {
        /// The topic's position when the subscription joined again.
        position: Position,
    },
    /// The subscription ended: the server refused it again after a reconnection, or its
    /// history stayed unavailable (`WW_UNAVAILABLE`: asked again after 100 ms, doubling,
    /// 3.1 s in all, before the connection is handed to the application). No more events
    /// follow.
    Ended(RequestError),
}

/// One subscribed topic on the client side.
#[derive(Debug)]
pub(crate) struct Topic {
    /// The last position seen: from the answer, then from each publication delivered.
    pub(crate) position: Option<Position>,
    pub(crate) events: mpsc::Sender<TopicEvent>,
    /// The buffer was full: publications are held back (not delivered, the position not
    /// advanced) until the subscription catches up.
    pub(crate) behind: Arc<AtomicBool>,
    /// A catch-up is under way (one at a time).
    pub(crate) catching_up: bool,
}

/// The client's subscriptions, by topic.
pub(crate) type Topics = std::sync::Mutex<HashMap<String, Topic>>;
