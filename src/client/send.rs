//! How a request or a signal reaches the connection: the fast path (encoded and queued on
//! the current connection without an await, no clone of the link) and the slow one
//! (waiting for a connection, or for room), as methods of [`Shared`].

use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::Payload;
use crate::client::RequestError;
use crate::client::link::Link;
use crate::client::pending::{Deadline, Kind, Pending, Reply};
use crate::client::shared::{Shared, State};
use crate::protocol::Message;

impl Shared {
    /// The connection to send through, waiting while connecting. With `stale`, a link
    /// whose queue turned out to be closed: wait until the state has moved past it.
    pub(crate) async fn link(&self, stale: Option<&Arc<Link>>) -> Result<Arc<Link>, RequestError> {
        let usable = |state: &State| match state {
            State::Connecting => false,
            State::Connected(link) => stale.is_none_or(|stale| !Arc::ptr_eq(link, stale)),
            State::Down | State::Closed => true,
        };
        let resolve = |state: &State| match state {
            State::Connected(link) => Ok(link.clone()),
            State::Down => Err(RequestError::Disconnected),
            State::Connecting | State::Closed => Err(RequestError::ClientClosed),
        };
        {
            // Fast path: connected, no subscription needed.
            let state = self.state.borrow();
            if usable(&state) {
                return resolve(&state);
            }
        }
        let mut changes = self.state.subscribe();
        let state = changes
            .wait_for(usable)
            .await
            .map_err(|_| RequestError::ClientClosed)?;
        resolve(&state)
    }

    pub(crate) fn check_open(&self) -> Result<(), RequestError> {
        if self.is_closed() {
            return Err(RequestError::ClientClosed);
        }
        Ok(())
    }

    /// Queues `frame` on the current connection without waiting, if it is connected and
    /// has room. With `request`, registers it as pending first (the entry is removed again
    /// if the frame is not queued). [`Queued::Retry`] hands the frame back for the slow
    /// path.
    pub(crate) fn try_queue(
        &self,
        len: usize,
        frame: Bytes,
        request: Option<(u64, Kind, Deadline, &Waker)>,
    ) -> Result<Queued<'_>, RequestError> {
        let state = self.state.borrow();
        let State::Connected(link) = &*state else {
            return Ok(Queued::Retry(frame));
        };
        link.check_size(len)?;
        let Some((id, kind, deadline, waker)) = request else {
            return Ok(match link.try_push(frame) {
                Ok(()) => Queued::Signal,
                Err((frame, _)) => Queued::Retry(frame),
            });
        };
        let reply = self
            .pending
            .insert_polled((id, link.generation, kind, deadline), waker);
        match link.try_push(frame) {
            Ok(()) => Ok(Queued::Request(reply)),
            Err((frame, _)) => {
                reply.withdraw();
                Ok(Queued::Retry(frame))
            }
        }
    }

    /// Sends request `message` and waits for its reply, over whichever connection is
    /// current, registering it as pending before its frame is queued. A plain request's
    /// entry goes when this future is dropped (timed out, cancelled); a session request's
    /// stays, so its reply still reaches the driver, which applies it.
    ///
    /// `deadline` (`None`: never) bounds the whole exchange: the wait for a connection or
    /// for room in its queue here, the wait for the reply through the driver's sweep.
    pub(crate) async fn exchange(
        &self,
        frame: Bytes,
        (id, kind): (u64, Kind),
        (at, after): (Option<Instant>, Duration),
    ) -> Result<Payload, RequestError> {
        let deadline = match kind {
            Kind::Request => self.pending.deadline_at(at, after),
            // A late reply must still reach the driver: no sweep for these.
            Kind::RestoreSession(_) | Kind::CloseSession(_) => Pending::never(),
        };
        // Fast path: connected, room in the queue; no await, no clone of the link.
        let len = frame.len();
        // The requester's waker goes with the entry: the reply's first poll, right below
        // in this same poll, need not look at the entry.
        let mut frame = Some(frame);
        let queued = std::future::poll_fn(|cx| {
            let frame = frame.take().unwrap_or_default();
            Poll::Ready(self.try_queue(len, frame, Some((id, kind, deadline, cx.waker()))))
        })
        .await;
        let reply = match queued? {
            Queued::Request(reply) => reply,
            Queued::Signal => return Err(RequestError::Disconnected),
            Queued::Retry(frame) => {
                // Boxed: waiting for a connection or for room needs a timer and the
                // state's subscription, which would make every request's future (and the
                // copies of it) a kilobyte larger.
                let queued = Box::pin(async move {
                    let queued = self.queue(frame, len, |link, frame| async move {
                        self.send_request_on(&link, frame, (id, kind), deadline)
                            .await
                    });
                    match at {
                        Some(at) => tokio::time::timeout_at(at, queued)
                            .await
                            .unwrap_or(Err(RequestError::Timeout { after })),
                        None => queued.await,
                    }
                });
                queued.await?
            }
        };
        // Dropped before its outcome (timed out by the caller, cancelled), the reply
        // removes the entry.
        reply.await
    }

    /// Queues signal `frame` on whichever connection is current.
    pub(crate) async fn send_signal(&self, frame: Bytes) -> Result<(), RequestError> {
        let len = frame.len();
        let frame = match self.try_queue(len, frame, None)? {
            Queued::Retry(frame) => frame,
            Queued::Signal | Queued::Request(_) => return Ok(()),
        };
        let after = self.config.request_timeout;
        let queued = self.queue(
            frame,
            len,
            |link, frame| async move { link.push(frame).await },
        );
        tokio::time::timeout(after, queued)
            .await
            .unwrap_or(Err(RequestError::Timeout { after }))
    }

    /// Queues `frame` on the current connection with `attempt`, which hands the frame back
    /// if the connection ended before its driver took it: nothing was sent, so the next
    /// connection is tried.
    pub(crate) async fn queue<T, F>(
        &self,
        mut frame: Bytes,
        len: usize,
        mut attempt: impl FnMut(Arc<Link>, Bytes) -> F,
    ) -> Result<T, RequestError>
    where
        F: Future<Output = Result<T, Bytes>>,
    {
        let mut link = self.link(None).await?;
        loop {
            link.check_size(len)?;
            match attempt(Arc::clone(&link), frame).await {
                Ok(sent) => return Ok(sent),
                Err(bytes) => frame = bytes,
            }
            link = self.link(Some(&link)).await?;
        }
    }

    /// Registers request `id` of `kind` as pending on `link` until `deadline`, then queues
    /// its frame. If the connection ended before its driver took the frame, nothing was
    /// sent: the entry is removed and the frame handed back.
    pub(crate) async fn send_request_on(
        &self,
        link: &Link,
        frame: Bytes,
        (id, kind): (u64, Kind),
        deadline: Deadline,
    ) -> Result<Reply<'_>, Bytes> {
        // Room first, then register and queue with no await in between: a caller that
        // gives up while waiting for room leaves no entry behind (a session request's
        // entry would otherwise wait for a reply that can never come).
        if !link.reserve().await {
            return Err(frame);
        }
        let reply = self.pending.insert(id, link.generation, kind, deadline);
        match link.push_reserved(frame) {
            Ok(()) => Ok(reply),
            Err(returned) => {
                reply.withdraw();
                Err(returned)
            }
        }
    }
}

/// What [`Shared::try_queue`] did with a frame.
pub(crate) enum Queued<'a> {
    /// The request's frame is queued; its outcome comes through this.
    Request(Reply<'a>),
    /// The signal's frame is queued.
    Signal,
    /// Not connected, or no room: the frame, for the slow path.
    Retry(Bytes),
}

pub(crate) fn encode(message: &Message) -> Result<Bytes, RequestError> {
    message.encode().map_err(RequestError::InvalidMessage)
}
