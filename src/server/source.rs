//! Where a client comes from, for the limits that keep one source from taking what every
//! other client shares: its address (an IPv6 address by its network prefix, a /64 by
//! default, since one host or subscriber is handed a whole /64), and the session budget
//! per source.

use crate::sync;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// A client's source: an IPv4 address, or an IPv6 address cut to its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    /// The source of `addr`, IPv6 addresses cut to their first `v6_prefix` bits (an
    /// IPv4-mapped IPv6 address counts as its IPv4 address).
    pub(crate) fn of(addr: IpAddr, v6_prefix: u8) -> Source {
        match addr {
            IpAddr::V4(_) => Source(addr),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let bits = u32::from(v6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    Source(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/prefix"),
        }
    }
}

/// How many sources a [`SessionBudget`] keeps track of: beyond, the one it heard from
/// longest ago is forgotten (its sessions stay; they are just no longer counted).
const MAX_TRACKED_SOURCES: usize = 65_536;

/// The sessions created from each source, newest last: once a source has created more
/// than its budget, its oldest are evicted from the store, so that one source logging in
/// over and over pushes out its own sessions, not everyone else's.
#[derive(Debug)]
pub(crate) struct SessionBudget {
    /// 0: no budget.
    max: usize,
    sources: Mutex<Tracked>,
}

#[derive(Debug, Default)]
struct Tracked {
    /// Each source's keys, and the number of its latest entry in `order`.
    by_source: HashMap<Source, (u64, VecDeque<String>)>,
    /// Sources in the order they were heard from, numbered; an entry whose number is not
    /// its source's latest is stale, skipped when it comes up (amortised O(1)).
    order: VecDeque<(Source, u64)>,
    next: u64,
}

impl SessionBudget {
    pub(crate) fn new(max: usize) -> Self {
        SessionBudget {
            max,
            sources: Mutex::new(Tracked::default()),
        }
    }

    /// A session `key` was created from `source`: the keys of that source beyond its
    /// budget, oldest first, to evict from the store.
    pub(crate) fn created(&self, source: Source, key: &str) -> Vec<String> {
        if self.max == 0 {
            return Vec::new();
        }
        // A few map operations, none of which can panic half-way: poisoning says nothing.
        let mut tracked = sync::lock(&self.sources);
        let tracked = &mut *tracked;
        tracked.next += 1;
        let number = tracked.next;
        let (latest, keys) = tracked.by_source.entry(source).or_default();
        *latest = number;
        keys.push_back(key.to_owned());
        let over = keys.len().saturating_sub(self.max);
        let evicted = keys.drain(..over).collect();
        tracked.order.push_back((source, number));
        while tracked.by_source.len() > MAX_TRACKED_SOURCES
            || tracked.order.len() > 2 * MAX_TRACKED_SOURCES
        {
            let Some((oldest, number)) = tracked.order.pop_front() else {
                break;
            };
            let current = tracked.by_source.get(&oldest).map(|(latest, _)| *latest);
            if current == Some(number) && tracked.by_source.len() > MAX_TRACKED_SOURCES {
                tracked.by_source.remove(&oldest);
            } else if current == Some(number) {
                // Still the latest of a source that stays: back in line.
                tracked.order.push_back((oldest, number));
                break;
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_their_prefix_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a, 64), Source::of(b, 64));
        assert_ne!(Source::of(a, 64), Source::of(other, 64));
        assert_ne!(Source::of(a, 128), Source::of(b, 128));
        assert_eq!(Source::of(a, 0), Source::of(other, 0));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(mapped, 64), Source::of(v4, 64));
    }

    #[test]
    fn a_source_over_its_budget_gives_up_its_oldest_sessions() {
        let budget = SessionBudget::new(3);
        let flood = Source::of("192.0.2.1".parse().unwrap(), 64);
        let user = Source::of("192.0.2.2".parse().unwrap(), 64);
        assert!(budget.created(user, "user").is_empty());
        for n in 0..3 {
            assert!(budget.created(flood, &format!("f{n}")).is_empty());
        }
        assert_eq!(budget.created(flood, "f3"), ["f0"]);
        assert_eq!(budget.created(flood, "f4"), ["f1"]);
        // The other source's session is not touched.
        assert!(budget.created(user, "user2").is_empty());
        assert!(SessionBudget::new(0).created(flood, "x").is_empty());
    }
}
