//! Topic histories: which topics keep one ([`History`] rules), the two engines behind
//! them, and the bounded ring of one topic's last publications with their positions
//! ([`Ring`], the in-memory engine).
//!
//! The engine is chosen by the backplane: a backplane whose nodes share histories (the
//! Redis backplane) hands the server a [`SharedHistory`], and every history topic's
//! positions then come from it, so that every node agrees; otherwise each server keeps
//! its rings in memory.
//!
//! A ring holds each publication as the extension's publication message (`ww.pub`, with
//! its position), encoded once: what a live subscriber receives and what a resume
//! replays are the same buffer. Its epoch is random and new whenever a ring is made (the
//! process started, or the ring was dropped to bound the number of rings), so a position
//! from before can never be mistaken for one of this ring.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::time::Instant;

use crate::backplane::{History, random_epoch};
use crate::protocol::topics::{Position, Status};

/// Which topics keep which history: exact names, and prefixes (a pattern ending in `*`).
#[derive(Debug, Default)]
pub(crate) struct Rules {
    exact: HashMap<Box<str>, History>,
    /// Longest prefix first.
    prefixes: Vec<(Box<str>, History)>,
    pub(crate) max_topics: usize,
}

impl Rules {
    pub(crate) fn new(max_topics: usize) -> Self {
        Rules {
            max_topics,
            ..Rules::default()
        }
    }

    pub(crate) fn add(&mut self, pattern: &str, history: History) {
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                self.prefixes.retain(|(p, _)| **p != *prefix);
                self.prefixes.push((prefix.into(), history));
                self.prefixes
                    .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
            }
            None => {
                self.exact.insert(pattern.into(), history);
            }
        }
    }

    /// The history `topic` keeps: an exact rule, else the longest matching prefix.
    pub(crate) fn find(&self, topic: &str) -> Option<History> {
        if let Some(history) = self.exact.get(topic) {
            return Some(*history);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| topic.starts_with(&**prefix))
            .map(|(_, history)| *history)
    }

    /// The most all histories together hold, in bytes.
    pub(crate) fn memory_bound(&self) -> usize {
        let largest = self
            .exact
            .values()
            .chain(self.prefixes.iter().map(|(_, h)| h))
            .map(History::memory_per_topic)
            .max()
            .unwrap_or(0);
        largest.saturating_mul(self.max_topics)
    }
}

struct Entry {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

/// One topic's history. Publishes to the topic and resumes from it take its lock, so that
/// a position is given, kept and delivered in one step, and a resume's snapshot and its
/// joining of the live subscribers are one step with respect to publishes.
pub(crate) struct Ring {
    history: History,
    epoch: u64,
    /// The offset of the last publication (0: none yet).
    last: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// When the last publication was kept (to drop the least recently used ring).
    pub(crate) used: Instant,
}

/// A topic's ring, shared by the publishes and resumes of the topic.
pub(crate) type SharedRing = Arc<Mutex<Ring>>;

impl Ring {
    pub(crate) fn new(history: History) -> Self {
        Ring {
            history,
            epoch: random_epoch(),
            last: 0,
            entries: VecDeque::new(),
            bytes: 0,
            used: Instant::now(),
        }
    }

    /// The position of the last publication.
    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.last,
        }
    }

    /// The position the next publication gets.
    pub(crate) fn next_position(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.last + 1,
        }
    }

    /// Keeps the publication `frame`, which carries [`next_position`](Self::next_position).
    pub(crate) fn push(&mut self, frame: Bytes) {
        let now = Instant::now();
        self.last += 1;
        self.bytes += frame.len();
        self.entries.push_back(Entry {
            offset: self.last,
            at: now,
            frame,
        });
        self.used = now;
        while self.entries.len() > self.history.max_len()
            || (self.bytes > self.history.max_bytes_kept() && !self.entries.is_empty())
        {
            self.pop();
        }
        self.trim(now);
    }

    fn pop(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.frame.len();
        }
    }

    /// Drops what is older than the history's age.
    fn trim(&mut self, now: Instant) {
        let Some(age) = self.history.max_age_kept() else {
            return;
        };
        while self
            .entries
            .front()
            .is_some_and(|entry| now.saturating_duration_since(entry.at) > age)
        {
            self.pop();
        }
    }

    /// What a subscription resuming after `resume` gets: its status and the messages to
    /// send before it joins the live subscribers (in order; none unless recovered).
    pub(crate) fn resume(&mut self, resume: Option<Position>) -> (Status, Vec<Bytes>) {
        self.trim(Instant::now());
        let Some(resume) = resume else {
            return (Status::Subscribed, Vec::new());
        };
        if resume.epoch != self.epoch || resume.offset > self.last {
            return (Status::NotRecovered, Vec::new());
        }
        if resume.offset == self.last {
            return (Status::Recovered, Vec::new());
        }
        // Every offset after `resume` must still be here: the oldest kept is at most the
        // first missed.
        let first = self.entries.front().map_or(self.last + 1, |e| e.offset);
        if first > resume.offset + 1 {
            return (Status::NotRecovered, Vec::new());
        }
        let skip = usize::try_from(resume.offset + 1 - first).unwrap_or(usize::MAX);
        let missed = self
            .entries
            .iter()
            .skip(skip)
            .map(|entry| entry.frame.clone())
            .collect();
        (Status::Recovered, missed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ring(history: History, n: u64) -> Ring {
        let mut ring = Ring::new(history);
        for i in 0..n {
            ring.push(Bytes::from(format!("m{}", i + 1)));
        }
        ring
    }

    fn at(ring: &Ring, offset: u64) -> Option<Position> {
        Some(Position {
            epoch: ring.epoch,
            offset,
        })
    }

    #[test]
    fn a_resume_gets_exactly_what_followed_its_position() {
        let mut ring = ring(History::last(10), 5);
        let (status, missed) = ring.resume(at(&ring, 2));
        assert_eq!(status, Status::Recovered);
        assert_eq!(missed, [&b"m3"[..], b"m4", b"m5"].map(Bytes::from_static));
        assert_eq!(ring.resume(at(&ring, 5)), (Status::Recovered, vec![]));
        assert_eq!(ring.resume(at(&ring, 0)).1.len(), 5);
        assert_eq!(ring.resume(None), (Status::Subscribed, vec![]));
    }

    #[test]
    fn a_position_the_ring_no_longer_covers_is_not_recovered() {
        let mut ring = ring(History::last(3), 6);
        assert_eq!(ring.position().offset, 6);
        // m4..m6 kept: a resume after 3 needs m4 onwards, after 2 needs m3 (gone).
        assert_eq!(ring.resume(at(&ring, 3)).1.len(), 3);
        assert_eq!(ring.resume(at(&ring, 2)), (Status::NotRecovered, vec![]));
        assert_eq!(ring.resume(at(&ring, 7)), (Status::NotRecovered, vec![]));
        let other = Some(Position {
            epoch: ring.epoch ^ 1,
            offset: 5,
        });
        assert_eq!(ring.resume(other), (Status::NotRecovered, vec![]));
        assert_ne!(Ring::new(History::last(1)).epoch, ring.epoch);
    }

    #[test]
    fn bytes_bound_the_ring() {
        let mut ring = ring(History::last(100).max_bytes(10), 20);
        assert!(ring.bytes <= 10, "{}", ring.bytes);
        assert_eq!(ring.entries.len(), 3, "three messages of 3 bytes");
        assert_eq!(ring.resume(at(&ring, 16)).0, Status::NotRecovered);
        assert_eq!(ring.resume(at(&ring, 17)).1.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn age_bounds_the_ring() {
        let mut ring = ring(History::last(100).max_age(Duration::from_secs(60)), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        ring.push(Bytes::from_static(b"m3"));
        assert_eq!(ring.entries.len(), 1);
        assert_eq!(ring.resume(at(&ring, 1)).0, Status::NotRecovered);
        assert_eq!(ring.resume(at(&ring, 2)).1.len(), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(ring.resume(at(&ring, 2)), (Status::NotRecovered, vec![]));
        assert_eq!(ring.resume(at(&ring, 3)), (Status::Recovered, vec![]));
    }

    #[test]
    fn exact_rules_win_then_the_longest_prefix() {
        let mut rules = Rules::new(10);
        rules.add("room/*", History::last(1));
        rules.add("room/vip/*", History::last(2));
        rules.add("room/lobby", History::last(3));
        assert_eq!(rules.find("room/1"), Some(History::last(1)));
        assert_eq!(rules.find("room/vip/1"), Some(History::last(2)));
        assert_eq!(rules.find("room/lobby"), Some(History::last(3)));
        assert_eq!(rules.find("news"), None);
        assert_eq!(
            rules.memory_bound(),
            10 * History::last(3).memory_per_topic()
        );
    }
}
