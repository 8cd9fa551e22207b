//! [`Pipeline`]: many requests in flight from one task, their outcomes in one queue.
//!
//! A pipeline keeps what it has in flight itself, in a table only its own task touches:
//! no lock, no shared entry and no waker per request. Its request ids come from the
//! client's counter in chunks of [`CHUNK`]; each chunk is registered in the client's
//! [`Routes`] while the pipeline has requests in it. The driver routes a reply whose id
//! falls in a chunk to the pipeline's [`Inbox`] (the chunk of the last such reply is
//! cached, so a run of them costs no lock), a read batch's outcomes at a time, with one
//! lock and one wake-up. When a connection ends, or the client closes, every registered
//! pipeline is told; it fails what it had sent on that connection itself. Its deadlines
//! are its own too: a timer the pipeline polls when it waits for an outcome.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Sleep};

use super::link::Link;
use super::pending::Outcome;
use super::queue::Refused;
use super::routes::{Arrival, CHUNK, Inbox};
use super::shared::Shared;
use super::{Client, RequestError};
use crate::Payload;
use crate::protocol::{IntoName, Message, RequestId};
use crate::sync::lock;

/// Slots of a pipeline's table of requests in flight; a power of two.
const SLOTS: usize = 256;

/// The buffer a pipeline encodes its requests into, reserved this much at a time.
const FRAME_CHUNK: usize = 8 * 1024;

/// Identifies one request of a [`Pipeline`]: returned by [`Pipeline::send`], given back
/// with the request's outcome.
///
/// Tickets of one client are unique, and within one pipeline a later request's ticket
/// compares greater.
///
/// ```no_run
/// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
/// let mut pipeline = client.pipeline();
/// let first = pipeline.send("echo", "a").await?;
/// let second = pipeline.send("echo", "b").await?;
/// assert!(first < second);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The request's identifier on the wire.
    #[must_use]
    pub fn id(self) -> u64 {
        self.0
    }
}

/// A request in flight, in its pipeline's table.
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: u64,
    /// The connection it was handed to.
    generation: u64,
    /// When it times out (`None`: never), and the timeout it reports.
    at: Option<Instant>,
    after: Duration,
}

/// A pipeline's requests in flight: slot `id % SLOTS`, or the overflow map when that slot
/// is still taken (more than [`SLOTS`] in flight, or a slow one).
#[derive(Debug)]
struct Table {
    slots: Box<[Option<Sent>]>,
    overflow: HashMap<u64, Sent>,
    len: usize,
}

impl Table {
    fn new() -> Self {
        Table {
            slots: vec![None; SLOTS].into_boxed_slice(),
            overflow: HashMap::new(),
            len: 0,
        }
    }

    fn index(id: u64) -> usize {
        // The cast keeps the low bits, which is all the mask looks at.
        #[allow(clippy::cast_possible_truncation)]
        let index = id as usize & (SLOTS - 1);
        index
    }

    fn insert(&mut self, sent: Sent) {
        let slot = &mut self.slots[Self::index(sent.id)];
        if slot.is_none() {
            *slot = Some(sent);
        } else {
            self.overflow.insert(sent.id, sent);
        }
        self.len += 1;
    }

    fn remove(&mut self, id: u64) -> Option<Sent> {
        let slot = &mut self.slots[Self::index(id)];
        let removed = match slot {
            Some(sent) if sent.id == id => slot.take(),
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.remove(&id),
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Removes every request `which` selects, in the order they were sent.
    fn remove_where(&mut self, mut which: impl FnMut(&Sent) -> bool) -> Vec<Sent> {
        let mut removed: Vec<Sent> = Vec::new();
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(&mut which) {
                removed.extend(slot.take());
            }
        }
        self.overflow.retain(|_, sent| {
            let take = which(sent);
            if take {
                removed.push(*sent);
            }
            !take
        });
        self.len -= removed.len();
        removed.sort_unstable_by_key(|sent| sent.id);
        removed
    }

    /// The earliest deadline of a request in flight.
    fn earliest(&self) -> Option<Instant> {
        let slots = self.slots.iter().flatten();
        slots
            .chain(self.overflow.values())
            .filter_map(|sent| sent.at)
            .min()
    }
}

/// The chunks of ids a pipeline has taken, oldest first, with how many of their requests
/// are in flight; the last one is where the next ids come from.
#[derive(Debug, Default)]
struct Chunks {
    held: VecDeque<(u64, usize)>,
    /// The next id of the newest chunk, and the end of that chunk.
    next: u64,
    end: u64,
}

/// Many requests in flight from one task, their outcomes as they come: the cheapest way to
/// pipeline requests over a [`Client`].
///
/// [`send`](Pipeline::send) queues a request and returns its [`Ticket`] at once (it waits
/// only for a connection or for room in the send queue, as
/// [`Client::request`] does); [`next`](Pipeline::next) returns the next outcome to come,
/// with the ticket of its request, and `None` once every request sent has its outcome.
/// Each request ends in exactly one outcome: its reply, or the error a
/// [`Client::request`] would have returned ([`RequestError::Timeout`] after the
/// pipeline's [`timeout`](Pipeline::timeout), [`RequestError::Disconnected`] when its
/// connection is lost, ...). Outcomes come in the order the server answers, which need not
/// be the order of the requests. Timeouts are noticed while [`next`](Pipeline::next) waits.
///
/// Where many requests are in flight at once, a pipeline costs less per request than
/// [`Client::request`] awaited in a task each or in a `FuturesUnordered`: it keeps its
/// requests in a table of its own, with no lock, future, waker or wake-up per request, and
/// takes a batch of replies with one lock. A pipeline holds its client open, like a
/// [`Client`] handle. It is also a [`Stream`](futures_util::Stream) of
/// `(Ticket, Result<Payload, RequestError>)`.
///
/// Dropping a pipeline forgets its requests: their replies, when they come, are ignored.
/// Outcomes wait in the pipeline until read: memory grows with the requests in flight, so
/// the application bounds it by how many it sends before it reads.
///
/// # Example
/// Keep 64 requests in flight: one more each time one is answered.
/// ```no_run
/// # async fn demo(client: tokio_webwire::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let mut pipeline = client.pipeline();
/// let mut to_send = 1_000;
/// while to_send > 0 && pipeline.in_flight() < 64 {
///     pipeline.send("echo", "ping").await?;
///     to_send -= 1;
/// }
/// while let Some((_ticket, reply)) = pipeline.next().await {
///     assert_eq!(reply?.to_text()?, "ping");
///     if to_send > 0 {
///         pipeline.send("echo", "ping").await?;
///         to_send -= 1;
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a pipeline sends nothing until `send` is called"]
pub struct Pipeline {
    client: Client,
    inbox: Arc<Inbox>,
    /// The connection the last request went to: the next one goes there without a look
    /// at the client's state, until its queue refuses a frame (the connection ended).
    link: Option<Arc<Link>>,
    /// Where requests are encoded, each split off as its frame: a chunk's allocation is
    /// shared by many frames, and taken again once the driver has dropped them.
    frames: BytesMut,
    table: Table,
    chunks: Chunks,
    /// Arrivals taken from the inbox, not yet looked at.
    arrivals: VecDeque<Arrival>,
    /// Outcomes ready to be returned.
    ready: VecDeque<(u64, Outcome)>,
    /// Fires at `sweep_at`, no later than the earliest deadline in the table.
    timer: Option<Pin<Box<Sleep>>>,
    sweep_at: Option<Instant>,
    timeout: Duration,
}

impl Client {
    /// A [`Pipeline`] over this client: many requests in flight from one task, each with
    /// the client's request timeout (see [`Pipeline::timeout`]).
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// let mut pipeline = client.pipeline();
    /// for i in 0..3 {
    ///     pipeline.send("echo", format!("#{i}")).await?;
    /// }
    /// while let Some((ticket, reply)) = pipeline.next().await {
    ///     println!("{}: {:?}", ticket.id(), reply?.to_text());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            client: self.clone(),
            inbox: Arc::default(),
            link: None,
            frames: BytesMut::new(),
            table: Table::new(),
            chunks: Chunks::default(),
            arrivals: VecDeque::new(),
            ready: VecDeque::new(),
            timer: None,
            sweep_at: None,
            timeout: self.shared.config.request_timeout,
        }
    }

    /// The chunks of request ids registered by pipelines. A test hook, not a stable API.
    #[doc(hidden)]
    #[must_use]
    pub fn pipeline_chunks(&self) -> usize {
        self.shared.routes.len()
    }
}

impl Pipeline {
    /// Sets how long each request sent from now on may take: the wait for a connection
    /// or for room, then for the reply. The client's request timeout by default.
    ///
    /// ```no_run
    /// # fn demo(client: tokio_webwire::Client) {
    /// use std::time::Duration;
    /// let pipeline = client.pipeline().timeout(Duration::from_secs(2));
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends request `name` with `payload`; its outcome comes from [`next`](Pipeline::next)
    /// with the returned ticket.
    ///
    /// Returns once the request is queued for the connection's driver; waits only while
    /// reconnecting or while the send queue is full, up to the pipeline's timeout. Fails
    /// as [`Client::request`] does when the request cannot be sent (invalid name, too
    /// large, client closed, the timeout passed while waiting); then nothing was sent and
    /// no outcome will come. Cancel safe: dropped before it returns, nothing was sent.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// let mut pipeline = client.pipeline();
    /// let ticket = pipeline.send("echo", "x").await?;
    /// let (answered, reply) = pipeline.next().await.expect("one request in flight");
    /// assert_eq!(answered, ticket);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(
        &mut self,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<Ticket, RequestError> {
        self.client.shared.check_open()?;
        let name = name.into_name().map_err(RequestError::InvalidName)?;
        let id = self.next_id();
        let message = Message::request(RequestId::from(id), name, payload.into());
        if self.frames.capacity() < FRAME_CHUNK / 16 {
            self.frames.reserve(FRAME_CHUNK);
        }
        message
            .encode_into(&mut self.frames)
            .map_err(RequestError::InvalidMessage)?;
        let frame = self.frames.split().freeze();
        let (at, after) = (Instant::now().checked_add(self.timeout), self.timeout);
        // Fast path: the connection the last request went to, while it takes frames.
        let frame = match &self.link {
            // A limit is the connection's: a closed one's says nothing of the next.
            Some(link) if link.check_size(frame.len()).is_err() && link.queue.is_closed() => {
                self.link = None;
                frame
            }
            Some(link) => {
                link.check_size(frame.len())?;
                match link.try_push(frame) {
                    Ok(()) => {
                        let generation = link.generation;
                        self.sent(id, generation, at, after);
                        return Ok(Ticket(id));
                    }
                    Err((frame, refused)) => {
                        if refused == Refused::Closed {
                            self.link = None;
                        }
                        frame
                    }
                }
            }
            None => frame,
        };
        let link = Box::pin(push(&self.client.shared, frame, at, after)).await?;
        let generation = link.generation;
        self.link = Some(link);
        self.sent(id, generation, at, after);
        Ok(Ticket(id))
    }

    /// The next outcome, with the ticket of its request; `None` when no request is in
    /// flight. Cancel safe: dropped while waiting, it takes nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) {
    /// let mut pipeline = client.pipeline();
    /// assert!(pipeline.next().await.is_none(), "nothing sent yet");
    /// # }
    /// ```
    pub async fn next(&mut self) -> Option<(Ticket, Result<Payload, RequestError>)> {
        std::future::poll_fn(|cx| self.poll_outcome(cx)).await
    }

    /// The number of requests sent whose outcome [`next`](Pipeline::next) has not
    /// returned yet.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// let mut pipeline = client.pipeline();
    /// pipeline.send("echo", "x").await?;
    /// assert_eq!(pipeline.in_flight(), 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.table.len + self.ready.len()
    }

    /// The next request id: from the newest chunk, or a new chunk (registered, so that
    /// the driver routes its replies here).
    fn next_id(&mut self) -> u64 {
        let chunks = &mut self.chunks;
        if chunks.next == chunks.end {
            let base = self.client.shared.next_ids(CHUNK);
            self.client.shared.routes.register(base, &self.inbox);
            chunks.held.push_back((base, 0));
            chunks.next = base;
            chunks.end = base + CHUNK;
            // The chunk before, if nothing in it is in flight (the newest stays for the
            // next ids).
            self.release_previous();
        }
        let id = self.chunks.next;
        self.chunks.next += 1;
        id
    }

    /// Request `id` was queued on connection `generation`: in flight until `at`.
    fn sent(&mut self, id: u64, generation: u64, at: Option<Instant>, after: Duration) {
        self.table.insert(Sent {
            id,
            generation,
            at,
            after,
        });
        if let Some((_, count)) = self.chunks.held.back_mut() {
            *count += 1;
        }
        if let Some(at) = at {
            if self.sweep_at.is_none_or(|sweep| at < sweep) {
                self.sweep_at = Some(at);
                if let Some(timer) = &mut self.timer {
                    timer.as_mut().reset(at);
                }
            }
        }
    }

    /// Request `id` has its outcome: one fewer in flight in its chunk. A chunk other than
    /// the newest goes once nothing in it is in flight, wherever it sits: one slow request
    /// pins its own chunk, not the ones after it.
    fn settled(&mut self, id: u64) {
        let held = &mut self.chunks.held;
        // Sorted by base: the chunk of `id` is the last one starting at or before it.
        let Some(index) = held.partition_point(|&(base, _)| base <= id).checked_sub(1) else {
            return;
        };
        let newest = index + 1 == held.len();
        let Some((base, count)) = held.get_mut(index) else {
            return;
        };
        if id - *base >= CHUNK {
            return;
        }
        *count = count.saturating_sub(1);
        if *count == 0 && !newest {
            let base = *base;
            held.remove(index);
            self.client.shared.routes.unregister(base);
        }
    }

    /// Unregisters the chunk before the newest if nothing in it is in flight.
    fn release_previous(&mut self) {
        let held = &mut self.chunks.held;
        let Some(index) = held.len().checked_sub(2) else {
            return;
        };
        if held.get(index).is_some_and(|&(_, count)| count == 0) {
            if let Some((base, _)) = held.remove(index) {
                self.client.shared.routes.unregister(base);
            }
        }
    }

    fn poll_outcome(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(Ticket, Result<Payload, RequestError>)>> {
        loop {
            if let Some((id, outcome)) = self.ready.pop_front() {
                return Poll::Ready(Some((Ticket(id), outcome)));
            }
            if self.table.len == 0 {
                return Poll::Ready(None);
            }
            if let Some(arrival) = self.arrivals.pop_front() {
                self.arrive(arrival);
                continue;
            }
            // Once per batch of arrivals: a request whose reply never comes times out
            // while others keep coming.
            if self.sweep(cx) || self.take() {
                continue;
            }
            self.inbox.reader.register(cx.waker());
            // A push between the look and the registration woke nobody: look again.
            if !self.take() {
                return Poll::Pending;
            }
        }
    }

    /// Moves everything the inbox holds to `arrivals` (empty), under one lock; whether
    /// anything came.
    fn take(&mut self) -> bool {
        let mut held = lock(&self.inbox.arrivals);
        // A swap: both queues keep their capacity.
        std::mem::swap(&mut held.queue, &mut self.arrivals);
        !self.arrivals.is_empty()
    }

    fn arrive(&mut self, arrival: Arrival) {
        match arrival {
            Arrival::Reply(id, outcome) => {
                // A late reply (timed out), a duplicate or one for nothing sent: ignored.
                if self.table.remove(id).is_some() {
                    self.settled(id);
                    self.ready.push_back((id, outcome));
                }
            }
            Arrival::Ended(generation, error) => {
                let ended = self
                    .table
                    .remove_where(|sent| generation.is_none_or(|ended| sent.generation == ended));
                for sent in ended {
                    self.settled(sent.id);
                    self.ready.push_back((sent.id, Err(error.clone())));
                }
            }
        }
    }

    /// Times out what is due, if the timer fired; whether anything did.
    fn sweep(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.sweep_at else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        let due = self
            .table
            .remove_where(|sent| sent.at.is_some_and(|at| at <= now));
        self.sweep_at = self.table.earliest();
        if let (Some(next), Some(timer)) = (self.sweep_at, &mut self.timer) {
            timer.as_mut().reset(next);
        }
        let timed_out = !due.is_empty();
        for sent in due {
            self.settled(sent.id);
            self.ready
                .push_back((sent.id, Err(RequestError::Timeout { after: sent.after })));
        }
        timed_out
    }
}

/// The slow path of [`Pipeline::send`]: waits for a connection with room, until `at`,
/// queues `frame` there and returns the connection.
async fn push(
    shared: &Shared,
    frame: Bytes,
    at: Option<Instant>,
    after: Duration,
) -> Result<Arc<Link>, RequestError> {
    let len = frame.len();
    let pushed = shared.queue(frame, len, |link, frame| async move {
        link.push(frame).await.map(|()| link)
    });
    match at {
        Some(at) => tokio::time::timeout_at(at, pushed)
            .await
            .unwrap_or(Err(RequestError::Timeout { after })),
        None => pushed.await,
    }
}

impl futures_util::Stream for Pipeline {
    type Item = (Ticket, Result<Payload, RequestError>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_outcome(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let in_flight = self.in_flight();
        (in_flight, Some(in_flight))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        {
            let mut held = lock(&self.inbox.arrivals);
            held.closed = true;
            held.queue.clear();
        }
        for (base, _) in self.chunks.held.drain(..) {
            self.client.shared.routes.unregister(base);
        }
    }
}
