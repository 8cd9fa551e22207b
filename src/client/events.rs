//! The handler's queue: events in the order they happened, pushed without ever waiting,
//! so that the connection's driver never waits for user code.
//!
//! Connection and session events are always kept. Server signals are kept up to a limit
//! ([`ClientBuilder::max_queued_signals`]); beyond it the [`SignalOverflow`] policy drops
//! one, counts it ([`Client::dropped_signals`]) and says so in the log (a warning when a
//! handler starts falling behind, then one each time it catches up and falls behind again).
//!
//! [`ClientBuilder::max_queued_signals`]: crate::ClientBuilder::max_queued_signals
//! [`Client::dropped_signals`]: crate::Client::dropped_signals

use crate::protocol::Name;
use crate::{Payload, Session};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The default [`ClientBuilder::max_queued_signals`](crate::ClientBuilder::max_queued_signals).
pub const DEFAULT_MAX_QUEUED_SIGNALS: usize = 1024;

/// The default
/// [`ClientBuilder::max_queued_signal_bytes`](crate::ClientBuilder::max_queued_signal_bytes):
/// 16 MiB.
pub const DEFAULT_MAX_QUEUED_SIGNAL_BYTES: usize = 16 << 20;

/// What a queued signal holds: its name and payload bytes.
pub(crate) fn signal_bytes(event: &Event) -> usize {
    match event {
        Event::Signal(name, payload) => name.len() + payload.data.len(),
        _ => 0,
    }
}

/// What a client does with a server signal that arrives while its handler has
/// [`max_queued_signals`](crate::ClientBuilder::max_queued_signals) signals still to handle.
///
/// Either way the reply to a request is never delayed by a slow handler, connection and
/// session events are never dropped, and every dropped signal is counted
/// ([`Client::dropped_signals`](crate::Client::dropped_signals)) and logged.
///
/// ```
/// use tokio_webwire::{Client, client::SignalOverflow};
///
/// // A ticker's subscriber: only the latest 16 prices matter.
/// let builder = Client::builder()
///     .max_queued_signals(16)
///     .signal_overflow(SignalOverflow::DropOldest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SignalOverflow {
    /// Drop the oldest signal still waiting, and queue the new one: the handler sees the
    /// latest signals. The default.
    #[default]
    DropOldest,
    /// Drop the new signal: the handler sees the signals that came first.
    DropNewest,
}

/// The queue between the connection's driver (and the client's other tasks) and the task
/// that runs the handler.
#[derive(Debug)]
pub(crate) struct Events {
    queue: Mutex<Queue>,
    /// Wakes the handler's task.
    ready: Notify,
    max_signals: usize,
    max_bytes: usize,
    overflow: SignalOverflow,
    dropped: AtomicU64,
}

/// How many events other than signals (session and connection events, never dropped) may
/// wait for the handler before the server's session notifications count as a flood.
pub(crate) const MAX_SESSION_EVENTS: usize = 1024;

/// Two queues stamped with one sequence: the signals, and everything else. The handler
/// takes whichever front came first, so it sees the events in the order they were pushed,
/// while the policy finds the oldest signal at the front of its own queue: dropping it is
/// one `pop_front`, however many session or connection events wait around it.
#[derive(Debug, Default)]
struct Queue {
    /// Server signals, with their sequence numbers, oldest first.
    signals: VecDeque<(u64, Event)>,
    /// The bytes of `signals` ([`signal_bytes`]).
    signal_bytes: usize,
    /// Connection and session events (never dropped), with their sequence numbers.
    others: VecDeque<(u64, Event)>,
    /// The sequence number of the next event pushed.
    next_seq: u64,
    /// Signals were dropped since the queue was last empty (one warning per episode).
    overflowing: bool,
    /// No more events will come: the handler's task ends once the queue is empty.
    finished: bool,
    /// [`Events::finish`] calls still to come before `finished`.
    open: u8,
}

impl Queue {
    /// The event that was pushed first, taken out.
    fn pop_front(&mut self) -> Option<Event> {
        let take_signal = match (self.signals.front(), self.others.front()) {
            (Some((signal, _)), Some((other, _))) => signal < other,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if take_signal {
            self.pop_signal()
        } else {
            self.others.pop_front().map(|(_, event)| event)
        }
    }

    /// The oldest signal, taken out.
    fn pop_signal(&mut self) -> Option<Event> {
        let (_, event) = self.signals.pop_front()?;
        self.signal_bytes -= signal_bytes(&event);
        Some(event)
    }

    fn is_empty(&self) -> bool {
        self.signals.is_empty() && self.others.is_empty()
    }
}

impl Events {
    /// A queue keeping at most `max_signals` signals (at least one) of at most `max_bytes`
    /// bytes in all, finished by the `parties`-th call of [`finish`](Events::finish).
    pub(crate) fn new(
        max_signals: usize,
        max_bytes: usize,
        overflow: SignalOverflow,
        parties: u8,
    ) -> Self {
        Events {
            queue: Mutex::new(Queue {
                open: parties,
                ..Queue::default()
            }),
            ready: Notify::new(),
            max_signals: max_signals.max(1),
            max_bytes,
            overflow,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `event` for the handler; never waits, and costs O(1) (amortised) whatever
    /// the policy. A signal beyond the limit is dropped per the policy. A session event is
    /// refused (false) once [`MAX_SESSION_EVENTS`] events other than signals wait: only a
    /// server that floods session notifications gets there, and the connection is closed
    /// rather than the queue grown without bound.
    pub(crate) fn push(&self, event: Event) -> bool {
        let mut queue = crate::sync::lock(&self.queue);
        if queue.finished {
            return true;
        }
        let session_event = matches!(event, Event::SessionCreated(_) | Event::SessionClosed);
        if session_event && queue.others.len() >= MAX_SESSION_EVENTS {
            return false;
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        if matches!(event, Event::Signal(..)) {
            let bytes = signal_bytes(&event);
            if bytes > self.max_bytes {
                // It could never fit: dropped whatever the policy.
                self.overflow(&mut queue);
                return true;
            }
            while queue.signals.len() >= self.max_signals
                || queue.signal_bytes + bytes > self.max_bytes
            {
                self.overflow(&mut queue);
                match self.overflow {
                    SignalOverflow::DropNewest => return true,
                    SignalOverflow::DropOldest => {
                        queue.pop_signal();
                    }
                }
            }
            queue.signal_bytes += bytes;
            queue.signals.push_back((seq, event));
        } else {
            queue.others.push_back((seq, event));
        }
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// Counts a signal dropped before it reached the queue (held back beyond the limit).
    pub(crate) fn count_dropped_signal(&self) {
        let mut queue = crate::sync::lock(&self.queue);
        self.overflow(&mut queue);
    }

    /// Counts a dropped signal; warns when this starts an episode.
    fn overflow(&self, queue: &mut Queue) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if !queue.overflowing {
            queue.overflowing = true;
            tracing::warn!(
                max_queued_signals = self.max_signals,
                policy = ?self.overflow,
                dropped_in_all = dropped,
                "the client handler falls behind: dropping server signals"
            );
        } else {
            tracing::debug!(dropped_in_all = dropped, "server signal dropped");
        }
    }

    /// Signals dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// One party is done queueing; after the last, the handler's task ends once it has
    /// handled the queued events.
    pub(crate) fn finish(&self) {
        let mut queue = crate::sync::lock(&self.queue);
        queue.open = queue.open.saturating_sub(1);
        if queue.open == 0 {
            queue.finished = true;
            drop(queue);
            self.ready.notify_one();
        }
    }

    /// The next event, in order; `None` once the queue is finished and empty.
    pub(crate) async fn next(&self) -> Option<Event> {
        loop {
            {
                let mut queue = crate::sync::lock(&self.queue);
                if let Some(event) = queue.pop_front() {
                    if queue.is_empty() {
                        queue.overflowing = false;
                    }
                    return Some(event);
                }
                if queue.finished {
                    return None;
                }
            }
            // A push after the lock was released left a permit: this returns at once.
            self.ready.notified().await;
        }
    }
}

/// One thing the handler is told about, queued in the order it happened.
#[derive(Debug)]
pub(crate) enum Event {
    Connected,
    Disconnected,
    Signal(Name, Payload),
    SessionCreated(Session),
    SessionClosed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;
    use crate::protocol::Name;

    fn signal(n: u8) -> Event {
        Event::Signal(Name::empty(), Payload::binary(vec![n]))
    }

    fn drain(events: &Events) -> Vec<String> {
        events.finish();
        let mut seen = Vec::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            while let Some(event) = events.next().await {
                seen.push(label(&event));
            }
        });
        seen
    }

    #[test]
    fn drop_oldest_keeps_the_latest_signals_and_every_other_event() {
        let events = Events::new(2, usize::MAX, SignalOverflow::DropOldest, 1);
        events.push(signal(1));
        events.push(Event::Connected);
        events.push(signal(2));
        events.push(signal(3));
        events.push(Event::SessionClosed);
        events.push(signal(4));
        assert_eq!(events.dropped(), 2);
        assert_eq!(drain(&events), ["Connected", "s3", "SessionClosed", "s4"]);
    }

    /// A signal of `len` payload bytes, labelled by its first.
    fn sized(n: u8, len: usize) -> Event {
        let mut data = vec![0u8; len];
        data[0] = n;
        Event::Signal(Name::empty(), Payload::binary(data))
    }

    #[test]
    fn queued_signals_are_bounded_in_bytes_too() {
        // Room for 10 of 100 bytes, whatever the count allows.
        let events = Events::new(1000, 1000, SignalOverflow::DropOldest, 1);
        for n in 0..15 {
            events.push(sized(n, 100));
        }
        events.push(Event::Connected);
        assert_eq!(events.dropped(), 5);
        // A signal larger than the whole budget never fits: dropped, the others kept.
        events.push(sized(99, 1001));
        assert_eq!(events.dropped(), 6);
        // One of 550 bytes makes room by dropping the 6 oldest (4 left: 400 + 550).
        events.push(sized(20, 550));
        assert_eq!(events.dropped(), 12);
        assert_eq!(
            drain(&events),
            ["s11", "s12", "s13", "s14", "Connected", "s20"]
        );

        let events = Events::new(1000, 1000, SignalOverflow::DropNewest, 1);
        for n in 0..15 {
            events.push(sized(n, 100));
        }
        assert_eq!(events.dropped(), 5);
        let kept: Vec<String> = (0..10).map(|n| format!("s{n}")).collect();
        assert_eq!(drain(&events), kept);
    }

    /// The label a test gives an event.
    fn label(event: &Event) -> String {
        match event {
            Event::Signal(_, payload) => format!("s{}", payload.data[0]),
            other => format!("{other:?}"),
        }
    }

    /// The next event if one is queued, without waiting.
    fn try_next(events: &Events) -> Option<String> {
        use futures_util::FutureExt;
        events
            .next()
            .now_or_never()
            .flatten()
            .map(|event| label(&event))
    }

    /// Against a model (one list, the oldest signal searched and removed, as the queue did
    /// before it kept signals apart): a long pseudo-random run of signals, connection and
    /// session events and handler reads gives the same events in the same order, and the
    /// same count of dropped signals, for both policies.
    #[test]
    fn both_policies_match_the_one_list_model_event_for_event() {
        for policy in [SignalOverflow::DropOldest, SignalOverflow::DropNewest] {
            let max = 3;
            let events = Events::new(max, usize::MAX, policy, 1);
            let mut model: VecDeque<String> = VecDeque::new();
            let mut model_dropped = 0u64;
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            for step in 0..20_000u32 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                match seed % 8 {
                    0..=3 => {
                        let n = (step % 251) as u8;
                        events.push(signal(n));
                        let signal = format!("s{n}");
                        let queued = model.iter().filter(|e| e.starts_with('s')).count();
                        if queued < max {
                            model.push_back(signal);
                        } else {
                            model_dropped += 1;
                            if policy == SignalOverflow::DropOldest {
                                let oldest = model.iter().position(|e| e.starts_with('s'));
                                model.remove(oldest.expect("a signal is queued"));
                                model.push_back(signal);
                            }
                        }
                    }
                    4 => {
                        events.push(Event::SessionClosed);
                        model.push_back("SessionClosed".into());
                    }
                    5 => {
                        events.push(Event::Connected);
                        model.push_back("Connected".into());
                    }
                    _ => assert_eq!(try_next(&events), model.pop_front(), "step {step}"),
                }
            }
            assert_eq!(events.dropped(), model_dropped, "{policy:?}");
            assert!(
                model_dropped > 1_000,
                "the run overflowed often: {model_dropped}"
            );
            assert_eq!(drain(&events), Vec::from(model), "{policy:?}");
        }
    }

    #[test]
    fn drop_oldest_behind_many_session_events_keeps_their_order_and_counts() {
        let events = Events::new(4, usize::MAX, SignalOverflow::DropOldest, 1);
        events.push(signal(0));
        for _ in 0..1_000 {
            events.push(Event::SessionClosed);
        }
        // Every signal from here on finds the queue full: the oldest goes each time.
        for n in 1..=200u8 {
            events.push(signal(n));
        }
        events.push(Event::Disconnected);
        assert_eq!(events.dropped(), 197);
        let seen = drain(&events);
        assert_eq!(seen.len(), 1_000 + 4 + 1);
        assert!(seen[..1_000].iter().all(|e| e == "SessionClosed"));
        assert_eq!(
            seen[1_000..],
            ["s197", "s198", "s199", "s200", "Disconnected"]
        );
    }

    #[test]
    fn drop_newest_keeps_the_first_signals() {
        let events = Events::new(2, usize::MAX, SignalOverflow::DropNewest, 1);
        for n in 1..=5 {
            events.push(signal(n));
        }
        events.push(Event::Disconnected);
        assert_eq!(events.dropped(), 3);
        assert_eq!(drain(&events), ["s1", "s2", "Disconnected"]);
    }

    #[test]
    fn nothing_is_queued_after_finish() {
        let events = Events::new(2, usize::MAX, SignalOverflow::DropNewest, 1);
        events.finish();
        events.push(Event::Connected);
        assert!(drain(&events).is_empty());
    }

    #[test]
    fn a_flood_of_session_events_is_refused_not_queued() {
        let events = Events::new(2, usize::MAX, SignalOverflow::DropOldest, 1);
        for _ in 0..MAX_SESSION_EVENTS {
            assert!(events.push(Event::SessionClosed));
        }
        assert!(!events.push(Event::SessionClosed), "the queue is bounded");
        assert!(events.push(signal(1)), "signals follow their own policy");
        assert!(
            events.push(Event::Disconnected),
            "connection events are never refused"
        );
        assert_eq!(drain(&events).len(), MAX_SESSION_EVENTS + 2);
    }
}
