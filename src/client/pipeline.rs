//! [`Pipeline`]: many requests in flight from one task, their outcomes in one queue.
//!
//! A request sent through a pipeline has a pending entry like any other, with its deadline
//! and its connection, but no waker of its own: the driver puts its outcome in the
//! pipeline's [`Inbox`] and wakes the one task that reads it. The reader takes everything
//! the inbox holds under one lock, so a batch of replies costs one wake-up and one lock,
//! where requests awaited one by one (as tasks, or in a `FuturesUnordered`) cost a wake-up,
//! a future and a look at their entry each.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use super::connection::Link;
use super::pending::{Kind, Outcome};
use super::queue::Refused;
use super::{Client, RequestError, Waiter, lock};
use crate::Payload;
use crate::protocol::{IntoName, Message, RequestId};

/// The buffer a pipeline encodes its requests into, reserved this much at a time.
const FRAME_CHUNK: usize = 8 * 1024;

/// Identifies one request of a [`Pipeline`]: returned by [`Pipeline::send`], given back
/// with the request's outcome.
///
/// Tickets of one client are unique, and a later request's ticket compares greater.
///
/// ```
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
    /// The request's identifier on the wire (the client's counter).
    #[must_use]
    pub fn id(self) -> u64 {
        self.0
    }
}

/// Where a pipeline's outcomes wait for it: filled by the connection's driver (and its
/// deadline sweep), emptied by the pipeline.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    outcomes: Mutex<Outcomes>,
    /// The pipeline's reader, woken by a push.
    reader: AtomicWaker,
}

#[derive(Debug, Default)]
struct Outcomes {
    queue: VecDeque<(u64, Outcome)>,
    /// The pipeline is gone: outcomes are dropped.
    closed: bool,
}

impl Inbox {
    /// Hands outcomes (each with its request's id) to the pipeline. False if it is gone.
    pub(crate) fn push(&self, outcomes: impl IntoIterator<Item = (u64, Outcome)>) -> bool {
        {
            let mut held = lock(&self.outcomes);
            if held.closed {
                return false;
            }
            held.queue.extend(outcomes);
        }
        self.reader.wake();
        true
    }
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
/// be the order of the requests.
///
/// Where many requests are in flight at once, a pipeline costs less per request than
/// [`Client::request`] awaited in a task each or in a `FuturesUnordered`: no future, waker
/// or wake-up per request, and one lock per batch of replies. A pipeline holds its client
/// open, like a [`Client`] handle. It is also a [`Stream`](futures_util::Stream) of
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
    /// Outcomes taken from the inbox, not yet returned.
    ready: VecDeque<(u64, Outcome)>,
    /// Requests sent whose outcome has not been returned.
    in_flight: usize,
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
            ready: VecDeque::new(),
            in_flight: 0,
            timeout: self.shared.config.request_timeout,
        }
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
        let shared = &*self.client.shared;
        shared.check_open()?;
        let name = name.into_name().map_err(RequestError::InvalidName)?;
        let id = shared.next_id();
        let message = Message::request(RequestId::from(id), name, payload.into());
        if self.frames.capacity() < FRAME_CHUNK / 16 {
            self.frames.reserve(FRAME_CHUNK);
        }
        message
            .encode_into(&mut self.frames)
            .map_err(RequestError::InvalidMessage)?;
        let frame = self.frames.split().freeze();
        let at = Instant::now().checked_add(self.timeout);
        // Fast path: the connection the last request went to, while it takes frames.
        let frame = match &self.link {
            Some(link) => {
                link.check_size(frame.len())?;
                let deadline = shared.pending.deadline_at(at, self.timeout);
                shared
                    .pending
                    .insert_piped(id, link.generation, deadline, &self.inbox);
                match link.try_push(frame) {
                    Ok(()) => {
                        self.in_flight += 1;
                        return Ok(Ticket(id));
                    }
                    Err((frame, refused)) => {
                        shared.pending.remove(id);
                        if refused == Refused::Closed {
                            self.link = None;
                        }
                        frame
                    }
                }
            }
            None => frame,
        };
        shared
            .submit(
                frame,
                (id, Kind::Request),
                (at, self.timeout),
                Waiter::Pipeline(&self.inbox),
            )
            .await?;
        self.link = shared.current_link();
        self.in_flight += 1;
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
        self.in_flight
    }

    fn poll_outcome(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(Ticket, Result<Payload, RequestError>)>> {
        if self.ready.is_empty() {
            if self.in_flight == 0 {
                return Poll::Ready(None);
            }
            if !self.take() {
                self.inbox.reader.register(cx.waker());
                // A push between the look and the registration woke nobody: look again.
                if !self.take() {
                    return Poll::Pending;
                }
            }
        }
        let Some((id, outcome)) = self.ready.pop_front() else {
            return Poll::Pending;
        };
        self.in_flight -= 1;
        Poll::Ready(Some((Ticket(id), outcome)))
    }

    /// Moves everything the inbox holds to `ready` (empty), under one lock; whether
    /// anything came.
    fn take(&mut self) -> bool {
        let mut outcomes = lock(&self.inbox.outcomes);
        // A swap: both queues keep their capacity.
        std::mem::swap(&mut outcomes.queue, &mut self.ready);
        !self.ready.is_empty()
    }
}

impl futures_util::Stream for Pipeline {
    type Item = (Ticket, Result<Payload, RequestError>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_outcome(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.in_flight, Some(self.in_flight))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        {
            let mut outcomes = lock(&self.inbox.outcomes);
            outcomes.closed = true;
            outcomes.queue.clear();
        }
        if self.in_flight > self.ready.len() {
            self.client.shared.pending.forget_piped(&self.inbox);
        }
    }
}
