//! The router's own futures, each polled with one `match` and inlined into the job that
//! polls it: `futures-util`'s `Either` and `Map` were not inlined there and cost a call
//! each, and `Map` keeps a state to replace. With the flat dispatch of `routes.rs` they
//! took a request on `benches/load/`'s `router20` from 2 141 instructions to 2 041
//! (callgrind; a hand-written `match` of the same 20 names: 1 934).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::payload::Payload;
use crate::router::reply::IntoReply;
use crate::server::HandlerError;

pin_project_lite::pin_project! {
    /// A route's call: its handler's future, whose output becomes the reply; or the refusal
    /// of one of its arguments, which is the reply.
    #[project = ReplyingProjection]
    pub(crate) enum Replying<F> {
        Running { #[pin] future: F },
        Refused { error: Option<HandlerError> },
    }
}

impl<F> Replying<F> {
    /// The call of a handler whose arguments were all taken (`Ok`) or one refused.
    #[inline(always)]
    pub(crate) fn new(started: Result<F, HandlerError>) -> Self {
        match started {
            Ok(future) => Replying::Running { future },
            Err(error) => Replying::Refused { error: Some(error) },
        }
    }
}

impl<F> Future for Replying<F>
where
    F: Future,
    F::Output: IntoReply,
{
    type Output = Result<Payload, HandlerError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ReplyingProjection::Running { future } => future.poll(cx).map(IntoReply::into_reply),
            ReplyingProjection::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| HandlerError::internal("a refused call polled again")))),
        }
    }
}

pin_project_lite::pin_project! {
    /// One of two futures of the same output: a route's or the fallback's, a link of a
    /// chain of routes or the next.
    #[project = EitherProjection]
    pub(crate) enum Either<A, B> {
        Left { #[pin] future: A },
        Right { #[pin] future: B },
    }
}

impl<A, B> Future for Either<A, B>
where
    A: Future,
    B: Future<Output = A::Output>,
{
    type Output = A::Output;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EitherProjection::Left { future } => future.poll(cx),
            EitherProjection::Right { future } => future.poll(cx),
        }
    }
}
