//! The routes of a router as a list of types, so a request reaches its handler by a
//! static call: no box, no dynamic dispatch, no allocation of the router's own.
//!
//! `Router::request` adds a node: the list `(((), A), B)` holds the handlers `A` and `B`
//! with their positions, and the future of a call is a nest of `Either`s with one handler
//! future in each leaf (the size of the largest; the driver polls it in place as it polls
//! a hand-written handler's). A name finds its position in a hash map once per message,
//! then the call walks the list to it.

use std::future::{Future, ready};
use std::marker::PhantomData;

use futures_util::future::Either;

use crate::payload::Payload;
use crate::router::extract::{FromConnection, FromPayload};
use crate::router::reply::{IntoContractReply, IntoReply};
use crate::server::{Connection, HandlerError};

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
/// then the contract's own type `C`; its output goes to the contract's reply.
pub trait ContractFn<S, C, Args>: Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// Handles one message.
    fn call(
        &self,
        conn: &Connection,
        state: &S,
        message: C,
    ) -> impl Future<Output = Self::Output> + Send;
}

impl<S, F, Fut, Out> RouteFn<S, ()> for F
where
    S: Sync,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Out> + Send,
    Out: IntoReply,
{
    async fn call(&self, _: &Connection, _: &S, _: Payload) -> Result<Payload, HandlerError> {
        self().await.into_reply()
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
                async move { started?.await.into_reply() }
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
            C: Send,
            F: Fn($($part,)* C) -> Fut + Send + Sync + 'static,
            Fut: Future + Send,
            $($part: FromConnection<S> + Send,)*
        {
            type Output = Result<Fut::Output, HandlerError>;

            // With no argument before the message the closure is one call.
            #[allow(non_snake_case, unused_variables, clippy::redundant_closure_call)]
            fn call(
                &self,
                conn: &Connection,
                state: &S,
                message: C,
            ) -> impl Future<Output = Self::Output> + Send {
                let started = (|| {
                    $(let $part = $part::from_connection(conn, state)?;)*
                    Ok::<_, HandlerError>(self($($part,)* message))
                })();
                async move { Ok(started?.await) }
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
        let message = crate::router::extract::Json::<R>::from_payload(conn, state, payload)?.0;
        let reply = self.handler.call(conn, state, message).await?;
        crate::router::extract::Json(reply.into_contract_reply()?).into_reply()
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
        let message = crate::router::extract::Json::<G>::from_payload(conn, state, payload)?.0;
        self.handler.call(conn, state, message).await?;
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
        f.debug_struct("Route")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// One route: its handler and its position in the list.
pub struct Route<H, A> {
    pub(crate) handler: H,
    pub(crate) index: usize,
    pub(crate) _args: PhantomData<fn() -> A>,
}

/// The list of a router's routes, a type per route, so that a request reaches its handler
/// by a static call; implemented by `()` and by `(Routes, Route)`.
pub trait Routes<S>: Send + Sync + 'static {
    /// Calls the route at `index`.
    fn call(
        &self,
        index: usize,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send;
}

impl<S: Sync> Routes<S> for () {
    #[inline(always)]
    fn call(
        &self,
        _: usize,
        _: &Connection,
        _: &S,
        _: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
        // The names map only to positions that exist.
        ready(Err(HandlerError::internal("no route at this position")))
    }
}

impl<S, Head, H, A> Routes<S> for (Head, Route<H, A>)
where
    S: Sync,
    Head: Routes<S>,
    H: RouteFn<S, A>,
    A: 'static,
{
    // Inlined down the whole list, so that the nest of `Either`s is built in place rather
    // than moved up through a call per route.
    #[inline(always)]
    fn call(
        &self,
        index: usize,
        conn: &Connection,
        state: &S,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, HandlerError>> + Send {
        if index == self.1.index {
            Either::Right(self.1.handler.call(conn, state, payload))
        } else {
            Either::Left(self.0.call(index, conn, state, payload))
        }
    }
}
