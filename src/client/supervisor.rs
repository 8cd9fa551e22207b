//! The client's background task: runs one connection after another, fails the requests a
//! lost connection strands, and reconnects per the policy.

use std::sync::Arc;

use tracing::{Instrument, info, info_span, warn};

use crate::client::connection::{self, WsStream};
use crate::client::events::Event;
use crate::client::reconnect::random_jitter;
use crate::client::shared::{Shared, State};
use crate::client::{Reconnect, RequestError};
use crate::protocol::AcceptConf;

/// Owns the connections of one client until it is closed or gives up reconnecting.
pub(crate) async fn supervise(shared: Arc<Shared>, first: (WsStream, AcceptConf)) {
    /// The handler's task ends after the last event, however this task ends.
    struct Finish<'a>(&'a Shared);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            self.0.events.finish();
        }
    }
    let _finish = Finish(&shared);
    let mut next = Some(first);
    let mut generation = 0;
    while let Some((ws, conf)) = next.take() {
        generation += 1;
        // No credentials in logs: the URL's query often carries a token.
        let span = info_span!("webwire_client", url = %shared.config.redacted_url(), generation);
        let ended = connection::run(&shared, ws, conf, generation)
            .instrument(span)
            .await;
        // Requests handed to that connection cannot get a reply any more.
        let closing = shared.is_closed();
        let error = if closing {
            RequestError::ClientClosed
        } else {
            RequestError::Disconnected
        };
        let failed = shared.fail_generation(Some(generation), &error);
        shared.events.push(Event::Disconnected);
        if closing {
            break;
        }
        info!(generation, %ended, failed, "disconnected");
        next = reconnect(&shared).await;
    }
}

/// Dials until a connection is established, the policy gives up, or the client closes.
async fn reconnect(shared: &Shared) -> Option<(WsStream, AcceptConf)> {
    let Reconnect::Backoff(backoff) = &shared.config.reconnect else {
        shared.set_state(State::Down);
        return None;
    };
    shared.set_state(State::Connecting);
    let mut attempt = 0;
    while backoff.allows(attempt) {
        let delay = backoff.delay(attempt, random_jitter());
        let dialed = tokio::select! {
            () = shared.stop.cancelled() => return None,
            dialed = async {
                tokio::time::sleep(delay).await;
                connection::dial(&shared.config).await
            } => dialed,
        };
        match dialed {
            Ok(connection) => return Some(connection),
            Err(err) => warn!(attempt, ?delay, %err, "reconnection failed"),
        }
        attempt = attempt.saturating_add(1);
    }
    warn!(attempt, "giving up reconnecting");
    shared.set_state(State::Down);
    None
}
