//! The routes of a router as a list of types, so a request reaches its handler by a
//! static call: no box, no dynamic dispatch, no allocation of the router's own.
//!
//! `Router::request` pushes a route ([`Push`]): up to [`FLAT`] routes are one tuple
//! `(A, B, ..)`, and the future of a call is a flat enum of their futures, one variant
//! each, chosen by one `match` on the route's position and polled by one more (the size of
//! the largest handler's future and a tag; the driver polls it in place as it polls a
//! hand-written handler's). Past [`FLAT`], tuples are chained ([`Chain`]), one `Either` per
//! link. A name finds its position in the router's name table once per message.
//!
//! A list of `Either`s, one per route, was the first shape: its walk down to the route and
//! its poll through every level cost 8 % of a request at 20 routes against a hand-written
//! `match` (`benches/load/`, `router20` against `match20`).

use std::future::{Future, ready};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;

use crate::router::future::{Either, Replying};

use crate::payload::Payload;
use crate::router::extract::{FromConnection, FromPayload, Json};
use crate::router::reply::{IntoContractReply, IntoReply};
use crate::server::{Connection, HandlerError};
use serde::de::DeserializeOwned;

/// An async function that can handle a route's messages: its arguments are
/// [`FromConnection`] types and, last, one [`FromPayload`] type; its output is
/// [`IntoReply`] (a signal's reply is dropped). Implemented for functions and closures of
/// up to six arguments; `Args` tells the implementations apart.
pub trait RouteFn<S, Args>: Send + Sync + 'static {
    /// Handles one message.
    fn call(
        &self,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send;
}

/// An async function that handles a contract's messages: [`FromConnection`] arguments,
/// then the contract's own type `C`, read from the payload's JSON once the other
/// arguments are taken (so their refusal, a missing session say, comes before a payload
/// that does not parse); its output goes to the contract's reply.
pub trait ContractFn<S, C, Args>: Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// Handles one message.
    fn call(
        &self,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Self::Output> + Send;
}

impl<S, F, Fut, Out> RouteFn<S, ()> for F
where
    S: Sync,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Out> + Send,
    Out: IntoReply,
{
    #[inline(always)]
    fn call(
        &self,
        _: &Connection,
        _: &S,
        _: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
        // The payload is not kept: the future is the handler's alone.
        Replying::new(Ok(self()))
    }
}

macro_rules! route_fn {
    ($($part:ident),* ; $last:ident) => {
        impl<S, F, Fut, Out, $($part,)* $last> RouteFn<S, ($($part,)* $last,)> for F
        where
            S: Sync,
            F: Fn($($part,)* $last) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send,
            Out: IntoReply,
            $($part: FromConnection<S> + Send,)*
            $last: FromPayload<S> + Send,
        {
            #[allow(non_snake_case)]
            #[inline(always)]
            fn call(
                &self,
                conn: &Connection,
                state: &S,
                payload: Payload,
            ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
                // Taken before the handler runs: a refused argument is the reply.
                let started = (|| {
                    $(let $part = $part::from_connection(conn, state)?;)*
                    let $last = $last::from_payload(conn, state, payload)?;
                    Ok::<_, HandlerError>(self($($part,)* $last))
                })();
                // Not an `async` block: that would keep both `started` and the future
                // taken out of it, twice the handler's size in every job.
                Replying::new(started)
            }
        }
    };
}

route_fn!(; T1);
route_fn!(T1; T2);
route_fn!(T1, T2; T3);
route_fn!(T1, T2, T3; T4);
route_fn!(T1, T2, T3, T4; T5);
route_fn!(T1, T2, T3, T4, T5; T6);

macro_rules! contract_fn {
    ($($part:ident),*) => {
        impl<S, C, F, Fut, $($part,)*> ContractFn<S, C, ($($part,)*)> for F
        where
            S: Sync,
            C: DeserializeOwned + Send,
            F: Fn($($part,)* C) -> Fut + Send + Sync + 'static,
            Fut: Future + Send,
            $($part: FromConnection<S> + Send,)*
        {
            type Output = Result<Fut::Output, HandlerError>;

            #[allow(non_snake_case)]
            fn call(
                &self,
                conn: &Connection,
                state: &S,
                payload: Payload,
            ) -> impl Future<Output = Self::Output> + Send {
                let started = (|| {
                    $(let $part = $part::from_connection(conn, state)?;)*
                    let message = Json::<C>::from_payload(conn, state, payload)?.0;
                    Ok::<_, HandlerError>(self($($part,)* message))
                })();
                match started {
                    Ok(future) => futures_util::future::Either::Left(future.map(|output| Ok(output))),
                    // Not `ready`: that would hold the handler's output type, which need
                    // not be `Send`.
                    Err(refused) => futures_util::future::Either::Right(async move { Err(refused) }),
                }
            }
        }
    };
}

contract_fn!();
contract_fn!(T1);
contract_fn!(T1, T2);
contract_fn!(T1, T2, T3);
contract_fn!(T1, T2, T3, T4);
contract_fn!(T1, T2, T3, T4, T5);

/// A contract request's handler as a route: the payload read as `R`, the output as
/// `R::Reply`.
pub struct RequestContract<R, H, A> {
    pub(crate) handler: H,
    pub(crate) _types: PhantomData<fn() -> (R, A)>,
}

impl<S, R, H, A, O> RouteFn<S, (R, A, O)> for RequestContract<R, H, A>
where
    S: Sync,
    R: crate::contract::Request,
    H: ContractFn<S, R, A, Output = Result<O, HandlerError>>,
    O: IntoContractReply<R::Reply>,
    A: 'static,
    O: 'static,
{
    async fn call(
        &self,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        let reply = self.handler.call(conn, state, payload).await?;
        Json(reply.into_contract_reply()?).into_reply()
    }
}

/// A contract signal's handler as a route: the payload read as `G`.
pub struct SignalContract<G, H, A> {
    pub(crate) handler: H,
    pub(crate) _types: PhantomData<fn() -> (G, A)>,
}

impl<S, G, H, A> RouteFn<S, (G, A)> for SignalContract<G, H, A>
where
    S: Sync,
    G: crate::contract::Signal,
    H: ContractFn<S, G, A, Output = Result<(), HandlerError>>,
    A: 'static,
{
    async fn call(
        &self,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        self.handler.call(conn, state, payload).await?;
        Ok(Payload::empty())
    }
}

impl<R, H, A> std::fmt::Debug for RequestContract<R, H, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::any::type_name::<R>())
    }
}

impl<G, H, A> std::fmt::Debug for SignalContract<G, H, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::any::type_name::<G>())
    }
}

impl<H, A> std::fmt::Debug for Route<H, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").finish_non_exhaustive()
    }
}

/// One route: its handler (its position is its place in the list).
pub struct Route<H, A> {
    pub(crate) handler: H,
    pub(crate) _args: PhantomData<fn() -> A>,
}

impl<H, A> Route<H, A> {
    pub(crate) fn new(handler: H) -> Self {
        Route {
            handler,
            _args: PhantomData,
        }
    }
}

/// One route of a list, called by its list: implemented by [`Route`].
pub trait RouteCall<S>: Send + Sync + 'static {
    /// Calls the route's handler.
    fn call(
        &self,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send;
}

impl<S, H, A> RouteCall<S> for Route<H, A>
where
    S: Sync,
    H: RouteFn<S, A>,
    A: 'static,
{
    #[inline(always)]
    fn call(
        &self,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
        self.handler.call(conn, state, payload)
    }
}

/// The list of a router's routes, a type per route, so that a request reaches its handler
/// by a static call: `()`, tuples of up to [`FLAT`] [`Route`]s, and [`Chain`]s of them.
pub trait Routes<S>: Send + Sync + 'static {
    /// How many routes the list holds.
    const LEN: usize;

    /// Calls the route at `index` (its position, from 0).
    fn call(
        &self,
        index: usize,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send;
}

/// A list of routes that takes one more: what `Router::request` and its siblings build.
pub trait Push<T> {
    /// The list with `T` last.
    type Output;

    /// Adds `route` last.
    fn push(self, route: T) -> Self::Output;
}

/// How many routes one flat list holds: a router of up to this many routes is dispatched
/// by one `match`.
pub const FLAT: usize = 32;

/// Two lists one after the other: `Hd`'s routes first, then `Tl`'s. A router past [`FLAT`]
/// routes is a chain of full lists and a last one.
#[derive(Debug)]
pub struct Chain<Hd, Tl>(Hd, Tl);

impl<S: Sync> Routes<S> for () {
    const LEN: usize = 0;

    #[inline(always)]
    fn call(
        &self,
        _: usize,
        _: &Connection,
        _: &S,
        _: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
        ready(Err(HandlerError::internal(UNROUTED)))
    }
}

impl<S, Hd, Tl> Routes<S> for Chain<Hd, Tl>
where
    S: Sync,
    Hd: Routes<S>,
    Tl: Routes<S>,
{
    const LEN: usize = Hd::LEN + Tl::LEN;

    #[inline(always)]
    fn call(
        &self,
        index: usize,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
        if index < Hd::LEN {
            Either::Left {
                future: self.0.call(index, conn, state, payload),
            }
        } else {
            Either::Right {
                future: self.1.call(index - Hd::LEN, conn, state, payload),
            }
        }
    }
}

/// The reply to a position no route has: the name tables map only to positions that
/// exist, so it is a bug of ours if it is ever sent.
const UNROUTED: &str = "no route at this position";

/// For one arity: the future of a call (an enum of the routes' futures), the tuple's
/// `Routes` and the pushes that reach it (from the tuple one shorter, alone or last in a
/// chain).
macro_rules! flat {
    ($Future:ident $Projection:ident; $(($R:ident $F:ident $V:ident $i:tt))* ; ($Rn:ident $Fn:ident $Vn:ident $in:tt)) => {
        pin_project_lite::pin_project! {
            #[project = $Projection]
            enum $Future<$($F,)* $Fn> {
                $($V { #[pin] future: $F },)*
                $Vn { #[pin] future: $Fn },
                Unrouted,
            }
        }

        impl<$($F,)* $Fn> Future for $Future<$($F,)* $Fn>
        where
            $($F: Future<Output = Result<Payload, HandlerError>>,)*
            $Fn: Future<Output = Result<Payload, HandlerError>>,
        {
            type Output = Result<Payload, HandlerError>;

            #[inline(always)]
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                match self.project() {
                    $($Projection::$V { future } => future.poll(cx),)*
                    $Projection::$Vn { future } => future.poll(cx),
                    $Projection::Unrouted => Poll::Ready(Err(HandlerError::internal(UNROUTED))),
                }
            }
        }

        impl<S: Sync, $($R,)* $Rn> Routes<S> for ($($R,)* $Rn,)
        where
            $($R: RouteCall<S>,)*
            $Rn: RouteCall<S>,
        {
            const LEN: usize = $in + 1;

            #[inline(always)]
            fn call(
                &self,
                index: usize,
                conn: &Connection,
                state: &S,
                payload: Payload,
            ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
                match index {
                    $($i => $Future::$V { future: self.$i.call(conn, state, payload) },)*
                    $in => $Future::$Vn { future: self.$in.call(conn, state, payload) },
                    _ => $Future::Unrouted,
                }
            }
        }

        impl<$($R,)* $Rn> Push<$Rn> for ($($R,)*) {
            type Output = ($($R,)* $Rn,);

            #[inline(always)]
            fn push(self, route: $Rn) -> Self::Output {
                ($(self.$i,)* route,)
            }
        }

        impl<Hd, $($R,)* $Rn> Push<$Rn> for Chain<Hd, ($($R,)*)> {
            type Output = Chain<Hd, ($($R,)* $Rn,)>;

            #[inline(always)]
            fn push(self, route: $Rn) -> Self::Output {
                Chain(self.0, ($(self.1.$i,)* route,))
            }
        }
    };
}

/// Every arity up to the last, then the pushes past the last (a new link of the chain).
macro_rules! flats {
    ([$($done:tt)*]) => {
        flats!(@full $($done)*);
    };
    (@full $(($R:ident $F:ident $V:ident $i:tt))*) => {
        impl<$($R,)* T> Push<T> for ($($R,)*) {
            type Output = Chain<($($R,)*), (T,)>;

            fn push(self, route: T) -> Self::Output {
                Chain(self, (route,))
            }
        }

        impl<Hd, $($R,)* T> Push<T> for Chain<Hd, ($($R,)*)> {
            type Output = Chain<Chain<Hd, ($($R,)*)>, (T,)>;

            fn push(self, route: T) -> Self::Output {
                Chain(self, (route,))
            }
        }
    };
    ([$($done:tt)*] ($Future:ident $Projection:ident $R:ident $F:ident $V:ident $i:tt) $($rest:tt)*) => {
        flat!($Future $Projection; $($done)* ; ($R $F $V $i));
        flats!([$($done)* ($R $F $V $i)] $($rest)*);
    };
}

flats!([] (Flat1 Flat1Projection R0 F0 V0 0) (Flat2 Flat2Projection R1 F1 V1 1) (Flat3 Flat3Projection R2 F2 V2 2) (Flat4 Flat4Projection R3 F3 V3 3) (Flat5 Flat5Projection R4 F4 V4 4) (Flat6 Flat6Projection R5 F5 V5 5) (Flat7 Flat7Projection R6 F6 V6 6) (Flat8 Flat8Projection R7 F7 V7 7) (Flat9 Flat9Projection R8 F8 V8 8) (Flat10 Flat10Projection R9 F9 V9 9) (Flat11 Flat11Projection R10 F10 V10 10) (Flat12 Flat12Projection R11 F11 V11 11) (Flat13 Flat13Projection R12 F12 V12 12) (Flat14 Flat14Projection R13 F13 V13 13) (Flat15 Flat15Projection R14 F14 V14 14) (Flat16 Flat16Projection R15 F15 V15 15) (Flat17 Flat17Projection R16 F16 V16 16) (Flat18 Flat18Projection R17 F17 V17 17) (Flat19 Flat19Projection R18 F18 V18 18) (Flat20 Flat20Projection R19 F19 V19 19) (Flat21 Flat21Projection R20 F20 V20 20) (Flat22 Flat22Projection R21 F21 V21 21) (Flat23 Flat23Projection R22 F22 V22 22) (Flat24 Flat24Projection R23 F23 V23 23) (Flat25 Flat25Projection R24 F24 V24 24) (Flat26 Flat26Projection R25 F25 V25 25) (Flat27 Flat27Projection R26 F26 V26 26) (Flat28 Flat28Projection R27 F27 V27 27) (Flat29 Flat29Projection R28 F28 V28 28) (Flat30 Flat30Projection R29 F29 V29 29) (Flat31 Flat31Projection R30 F30 V30 30) (Flat32 Flat32Projection R31 F31 V31 31));
