//! Where a job is polled for the first time: [`Launcher`], one pinned allocation reused
//! for every job that finishes in that poll (most do), handed over to the task of one
//! that does not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::server::job::{self, Job};

/// Starts jobs: polls each one for the first time in one pinned allocation, reused for every job
/// that finishes in that poll (most do), and handed over to the task of one that does not.
pub(super) struct Launcher<M, F> {
    pub(super) start: M,
    pub(super) spare: Option<Pin<Box<Option<F>>>>,
}

/// How far a job got when it was polled once.
pub(super) enum Started<F> {
    /// Finished, with its reply.
    Done(Option<Bytes>),
    /// Waiting: it goes on on a task of its own.
    Waiting(Pin<Box<Option<F>>>),
}

impl<M, F> Launcher<M, F>
where
    F: Future<Output = Option<Bytes>>,
{
    pub(super) fn start<H>(
        &mut self,
        cx: &Arc<job::Context<H>>,
        job: Job,
        span: &tracing::Span,
    ) -> Started<F>
    where
        M: Fn(Arc<job::Context<H>>, Job) -> F,
    {
        let request = job.request_id();
        let mut boxed = self.spare.take().unwrap_or_else(|| Box::pin(None));
        boxed.set(Some((self.start)(Arc::clone(cx), job)));
        // A no-op waker: a job that is not done is polled again by its own task at once,
        // so nothing it registers here needs to reach anyone.
        let mut noop = Context::from_waker(Waker::noop());
        let polled = match boxed.as_mut().as_pin_mut() {
            Some(future) => span.in_scope(|| job::poll_job(future, &mut noop, request)),
            None => Poll::Ready(None),
        };
        match polled {
            Poll::Ready(reply) => {
                boxed.set(None);
                self.spare = Some(boxed);
                Started::Done(reply)
            }
            Poll::Pending => Started::Waiting(boxed),
        }
    }
}
