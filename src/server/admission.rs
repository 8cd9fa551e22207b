//! Which accepted sockets may wait for their upgrade: [`Admission`] bounds them in all
//! (`max_pending_upgrades`), per source (`max_pending_upgrades_per_source`) and in how
//! fast one source may open them (`source_connect_rate`), and when every place is taken,
//! makes room by closing the pending socket that has sent the least for the longest.
//!
//! A place is a [`Ticket`], held by the socket's task until its upgrade ends. Each ticket
//! counts the bytes its socket has read ([`Counting`]), so that a full pool can tell a
//! silent socket (a slowloris, a scanner) from a client in the middle of its handshake.
//! A socket that upgrades gives back its share of the source's rate: behaving clients
//! never run out of it, and only sources whose sockets hold places without upgrading do.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::server::source::Source;
use crate::sync;

/// How many sources' rates [`Admission`] keeps while none of their sockets is pending;
/// beyond, those of sources with nothing pending are forgotten (their rate starts full).
const MAX_IDLE_SOURCES: usize = 65_536;

/// The limits on pending upgrades (see the builder's options).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// 0: no limit.
    pub(crate) max_pending: usize,
    /// 0: no limit.
    pub(crate) max_pending_per_source: usize,
    /// New sockets per second one source may open without upgrading them (0: no limit).
    pub(crate) rate: u32,
    /// How many of them at once.
    pub(crate) burst: u32,
    pub(crate) v6_prefix: u8,
    /// Proxies, whose sockets carry many clients: no limits per source for them.
    pub(crate) trusted: Arc<[std::net::IpAddr]>,
}

/// Why a socket was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_pending_upgrades` wait, none of them silent long enough to make room.
    Full,
    /// Its source has `max_pending_upgrades_per_source` waiting.
    SourcePending,
    /// Its source opened sockets faster than its rate, without upgrading them.
    SourceRate,
}

impl Refused {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::Full => "too many pending upgrades",
            Refused::SourcePending => "too many pending upgrades from its source",
            Refused::SourceRate => "its source opens sockets too fast",
        }
    }
}

/// The pending sockets of a server.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    pending: HashMap<u64, Pending>,
    sources: HashMap<Source, PerSource>,
}

#[derive(Debug)]
struct Pending {
    source: Option<Source>,
    since: Instant,
    read: Arc<AtomicU64>,
    evict: CancellationToken,
}

#[derive(Debug)]
struct PerSource {
    pending: usize,
    /// The rate's tokens, as of `refilled`.
    tokens: f64,
    refilled: Instant,
}

/// One socket's place among the pending upgrades, given back on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    read: Arc<AtomicU64>,
    evict: CancellationToken,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few map operations that cannot panic half-way.
        sync::lock(&self.state)
    }

    /// A place for a socket from `remote_addr`, or why not. When every place is taken, a
    /// socket of a source with more sockets waiting than this one's is told to close and
    /// its place given to this one: of those, the one that has read the fewest bytes, the
    /// oldest of them. A client's socket sends its first bytes (a TLS hello, the HTTP
    /// request) one round trip after it is accepted, and from then on it is behind every
    /// silent socket in the line; before, it is behind every older one.
    pub(crate) fn admit(
        self: &Arc<Self>,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Ticket, Refused> {
        let limits = &self.limits;
        let source = remote_addr
            .filter(|addr| !limits.trusted.contains(&addr.ip()))
            .map(|addr| Source::of(addr.ip(), limits.v6_prefix));
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        if let Some(source) = source {
            let per = state.sources.entry(source).or_insert(PerSource {
                pending: 0,
                tokens: f64::from(limits.burst),
                refilled: now,
            });
            if limits.max_pending_per_source != 0 && per.pending >= limits.max_pending_per_source {
                return Err(Refused::SourcePending);
            }
            if limits.rate != 0 {
                let elapsed = now.saturating_duration_since(per.refilled).as_secs_f64();
                per.tokens =
                    (per.tokens + elapsed * f64::from(limits.rate)).min(f64::from(limits.burst));
                per.refilled = now;
                if per.tokens < 1.0 {
                    return Err(Refused::SourceRate);
                }
            }
        }
        if limits.max_pending != 0 && state.pending.len() >= limits.max_pending {
            // Only a socket of a source with more waiting than the newcomer's may make
            // room: sources that hold many places yield them to those that hold few, and
            // never take them from each other (so a crowd of silent sockets cannot churn
            // the pool until every socket in it is too young to be told apart).
            let mine = source.map_or(0, |source| state.waiting(source));
            let victim = state
                .pending
                .iter()
                .filter(|(_, pending)| {
                    pending
                        .source
                        .is_some_and(|theirs| state.waiting(theirs) > mine)
                })
                .min_by_key(|(id, pending)| {
                    (pending.read.load(Ordering::Relaxed), pending.since, **id)
                })
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(Refused::Full);
            };
            if let Some(pending) = state.remove(victim) {
                tracing::debug!(
                    read = pending.read.load(Ordering::Relaxed),
                    "pending socket closed to make room: it sent the least for the longest"
                );
                pending.evict.cancel();
            }
        }
        if let Some(source) = source {
            if let Some(per) = state.sources.get_mut(&source) {
                per.pending += 1;
                if limits.rate != 0 {
                    per.tokens -= 1.0;
                }
            }
        }
        state.next += 1;
        let id = state.next;
        let read = Arc::new(AtomicU64::new(0));
        let evict = CancellationToken::new();
        state.pending.insert(
            id,
            Pending {
                source,
                since: now,
                read: Arc::clone(&read),
                evict: evict.clone(),
            },
        );
        if state.sources.len() > MAX_IDLE_SOURCES {
            state.sources.retain(|_, per| per.pending > 0);
        }
        Ok(Ticket {
            admission: Arc::clone(self),
            id,
            read,
            evict,
        })
    }
}

impl State {
    /// How many sockets of `source` wait.
    fn waiting(&self, source: Source) -> usize {
        self.sources.get(&source).map_or(0, |per| per.pending)
    }

    /// Takes the pending socket `id` out, with its source's count.
    fn remove(&mut self, id: u64) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        if let Some(per) = pending
            .source
            .and_then(|source| self.sources.get_mut(&source))
        {
            per.pending = per.pending.saturating_sub(1);
        }
        Some(pending)
    }
}

impl Ticket {
    /// The socket, counting what it reads for this ticket.
    pub(crate) fn count<S>(&self, io: S) -> Counting<S> {
        Counting {
            inner: io,
            read: Arc::clone(&self.read),
        }
    }

    /// Resolves when the socket must close to make room for another.
    pub(crate) async fn evicted(&self) {
        self.evict.cancelled().await;
    }

    /// The socket upgraded: its source gets back what opening it took from its rate.
    pub(crate) fn upgraded(&self) {
        let limits = &self.admission.limits;
        if limits.rate == 0 {
            return;
        }
        let mut state = self.admission.lock();
        let source = state
            .pending
            .get(&self.id)
            .and_then(|pending| pending.source);
        if let Some(per) = source.and_then(|source| state.sources.get_mut(&source)) {
            per.tokens = (per.tokens + 1.0).min(f64::from(limits.burst));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Already gone if it was closed to make room.
        self.admission.lock().remove(self.id);
    }
}

/// A stream that counts the bytes read from it (a relaxed atomic add per read).
#[derive(Debug)]
pub(crate) struct Counting<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_pending: 4,
            max_pending_per_source: 2,
            rate: 0,
            burst: 0,
            v6_prefix: 64,
            trusted: Arc::new([]),
        }
    }

    fn addr(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 1000))
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_holds_at_most_its_share_and_a_full_pool_drops_the_most_silent() {
        let admission = Admission::new(limits());
        let a1 = admission.admit(addr("10.0.0.1")).unwrap();
        let _a2 = admission.admit(addr("10.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(addr("10.0.0.1")).err(),
            Some(Refused::SourcePending)
        );
        let b1 = admission.admit(addr("10.0.0.2")).unwrap();
        let c1 = admission.admit(addr("10.0.0.3")).unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        // b1 and c1 have read something, a1 and a2 nothing: the older of those goes.
        b1.read.fetch_add(100, Ordering::Relaxed);
        c1.read.fetch_add(10, Ordering::Relaxed);
        let d1 = admission.admit(addr("10.0.0.4")).unwrap();
        assert!(
            a1.evict.is_cancelled(),
            "the oldest silent socket made room"
        );
        // Its source may open another now.
        let _a3 = admission.admit(addr("10.0.0.1"));
        drop((a1, b1, c1, d1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_does_not_upgrade_runs_out_of_rate_one_that_does_never() {
        let admission = Admission::new(Limits {
            max_pending: 0,
            max_pending_per_source: 0,
            rate: 10,
            burst: 5,
            v6_prefix: 64,
            trusted: Arc::new([]),
        });
        for _ in 0..5 {
            drop(admission.admit(addr("10.0.0.1")).unwrap());
        }
        assert_eq!(
            admission.admit(addr("10.0.0.1")).err(),
            Some(Refused::SourceRate)
        );
        // Another source is not affected; and a tenth of a second refills one.
        assert!(admission.admit(addr("10.0.0.2")).is_ok());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(admission.admit(addr("10.0.0.1")).is_ok());
        // Sockets that upgrade give their token back.
        for _ in 0..100 {
            let ticket = admission.admit(addr("10.0.0.3")).unwrap();
            ticket.upgraded();
        }
    }
}
