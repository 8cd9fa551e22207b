//! A topic of a shared history ([`SharedHistory`](crate::server::SharedHistory)) on one
//! node: what it has delivered, in offset order.
//!
//! Positions come from the shared store, and publications reach a node by two ways (its
//! own publishes, the backplane from each other node), so they may arrive out of order
//! (two publishers) or not at all (the backplane lost one). A [`Sequencer`] delivers each
//! offset once and in order: one that comes early is held until the hole before it is
//! filled, by its own arrival or, after a short wait, from the store; a duplicate (at or
//! below what was delivered) is dropped. An epoch it has not seen (the store lost its
//! keys and started over) is adopted, and the epochs it left are ignored from then on.
//!
//! The first arrival: a sequencer that has delivered nothing does not know where the
//! topic's order starts here, and two publishers' first publications may cross on their
//! way. So it *opens*: it holds what arrives until the hub's hole wait after the first
//! arrival is over ([`Sequencer::skip_hole`]), then delivers from the lowest offset that
//! arrived meanwhile, in order (a hole above it is filled from the store as usual). A
//! publication below that which arrives later is dropped: nothing from before this node's
//! first arrival is read from the store for its server-made subscribers. Holding costs
//! that wait once per topic per node and no round trip; reading the store's offset first
//! would cost a round trip before every topic's first delivery here, and what arrives
//! during it would have to be held anyway.
//!
//! The resume seam: a resuming client is *pending* from before the store is read until
//! it joins the topic's members: what the node delivers meanwhile is buffered for it, and
//! [`Sequencer::finish`] merges the store's snapshot and that buffer, each offset once.
//! Every step runs under the topic's sequencer lock, which the hub holds while it
//! delivers, as the in-memory ring's lock is held.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::time::Instant;

use crate::backplane::Snapshot;
use crate::protocol::topics::{Position, Status};

/// How many epochs a sequencer remembers having left (their late publications dropped).
const RETIRED: usize = 4;

/// One topic's delivery order on this node.
#[derive(Default)]
pub(crate) struct Sequencer {
    /// The epoch delivered in (`None`: nothing seen yet).
    epoch: Option<u64>,
    /// The offset delivered last.
    last: u64,
    retired: Vec<u64>,
    /// Plain signals that came before their turn, by offset.
    held: BTreeMap<u64, Bytes>,
    /// Whether a task will fill the hole before `held`.
    pub(crate) filling: bool,
    /// Nothing delivered yet: what arrives is held (a lower offset lowers `last`) until
    /// [`skip_hole`](Self::skip_hole) opens the topic.
    opening: bool,
    /// While opening, an arrival at or below this no longer lowers `last` (a resume was
    /// answered after it).
    settled: u64,
    /// Resuming connections: what was delivered since they began (publication frames by
    /// offset), or `None` once more than the bound came (the resume starts over).
    pending: HashMap<u64, Option<Vec<(u64, Bytes)>>>,
    /// Connections that must not get offsets at or below a mark (a resume from a
    /// position this node had not delivered yet).
    floors: HashMap<u64, u64>,
    /// When something last happened (to drop the least recently used one).
    pub(crate) used: Option<Instant>,
}

/// What a resume gets once the snapshot is merged.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Send `replay` (publication frames, in order), then join; answer `status` at
    /// `position`.
    Join {
        status: Status,
        position: Position,
        replay: Vec<Bytes>,
    },
    /// The snapshot and this node's deliveries do not meet (another epoch on one side, or
    /// publications this node delivered that the snapshot does not reach): read again.
    Again,
}

impl Sequencer {
    /// The position delivered last, if any.
    pub(crate) fn position(&self) -> Option<Position> {
        self.epoch.map(|epoch| Position {
            epoch,
            offset: self.last,
        })
    }

    /// The publication at `position` arrived: what to deliver now, in order (it, and the
    /// held ones it lets go); nothing if it is early (held) or a duplicate.
    pub(crate) fn arrive(&mut self, position: Position, plain: Bytes) -> Vec<(Position, Bytes)> {
        self.used = Some(Instant::now());
        let mut out = Vec::new();
        match self.epoch {
            Some(epoch) if epoch == position.epoch => {}
            _ if self.retired.contains(&position.epoch) => return out,
            current => {
                // A new epoch: what was held of the old one goes first, as it is.
                if let Some(old) = current {
                    for (offset, plain) in std::mem::take(&mut self.held) {
                        out.push((Position { epoch: old, offset }, plain));
                    }
                }
                let fresh = current.is_none();
                self.adopt(position.epoch, position.offset.saturating_sub(1));
                self.opening = fresh;
            }
        }
        if position.offset <= self.last {
            if !self.opening || position.offset <= self.settled {
                return out;
            }
            // Crossed the first arrival on its way: nothing was delivered yet.
            self.last = position.offset - 1;
        }
        self.held.insert(position.offset, plain);
        if !self.opening {
            self.release(&mut out);
        }
        out
    }

    /// Delivers in `epoch` from after `last` on; the epoch left is ignored from now on
    /// (what it still held is dropped: it may have lost something anyway).
    fn adopt(&mut self, epoch: u64, last: u64) {
        if let Some(old) = self.epoch.replace(epoch) {
            self.retired.push(old);
            if self.retired.len() > RETIRED {
                self.retired.remove(0);
            }
        }
        self.retired.retain(|retired| *retired != epoch);
        self.last = last;
        self.held.clear();
        self.floors.clear();
        self.opening = false;
        self.settled = 0;
    }

    /// Moves the held offsets that are next in line to `out`.
    fn release(&mut self, out: &mut Vec<(Position, Bytes)>) {
        let Some(epoch) = self.epoch else { return };
        while let Some(plain) = self.held.remove(&(self.last + 1)) {
            self.last += 1;
            out.push((
                Position {
                    epoch,
                    offset: self.last,
                },
                plain,
            ));
        }
    }

    /// The hole before the held publications, if any: (epoch, last delivered, the offset
    /// before the first held). While opening, it is empty (`last` is the offset before
    /// the first held): the hub waits, then [`skip_hole`](Self::skip_hole) opens.
    pub(crate) fn hole(&self) -> Option<(u64, u64, u64)> {
        let (&first, _) = self.held.first_key_value()?;
        Some((self.epoch?, self.last, first - 1))
    }

    /// The hole could not be filled (the store no longer has it), or the opening wait is
    /// over: delivery goes on after it. Returns what to deliver now.
    pub(crate) fn skip_hole(&mut self) -> Vec<(Position, Bytes)> {
        let mut out = Vec::new();
        self.opening = false;
        if let Some((_, _, before)) = self.hole() {
            self.last = before;
            self.release(&mut out);
        }
        out
    }

    /// Whether delivery waits for the opening (nothing delivered yet, see the module).
    pub(crate) fn is_opening(&self) -> bool {
        self.opening
    }

    /// What was released has been delivered (with [`skips`](Self::skips) asked): the
    /// floors it reached are done. (Not in `release`: the hub delivers what several
    /// arrivals released at once, and each must still see the floor.)
    pub(crate) fn delivered(&mut self) {
        let last = self.last;
        self.floors.retain(|_, floor| *floor > last);
    }

    /// Whether `conn` must not get `offset` (it resumed past it).
    pub(crate) fn skips(&self, conn: u64, offset: u64) -> bool {
        self.floors.get(&conn).is_some_and(|floor| offset <= *floor)
    }

    /// `conn` begins resuming: deliveries are buffered for it.
    pub(crate) fn begin(&mut self, conn: u64) {
        self.pending.insert(conn, Some(Vec::new()));
    }

    /// `conn` gave up resuming.
    pub(crate) fn cancel(&mut self, conn: u64) {
        self.pending.remove(&conn);
    }

    /// Whether `conn` is resuming.
    #[cfg(test)]
    pub(crate) fn is_pending(&self, conn: u64) -> bool {
        self.pending.contains_key(&conn)
    }

    /// Buffers a delivered publication frame for every resuming connection; a buffer
    /// over `bound` frames is dropped (that resume reads again).
    pub(crate) fn buffer(&mut self, offset: u64, frame: &Bytes, bound: usize) {
        for buffer in self.pending.values_mut() {
            if let Some(frames) = buffer {
                if frames.len() >= bound {
                    *buffer = None;
                } else {
                    frames.push((offset, frame.clone()));
                }
            }
        }
    }

    /// `conn`'s resume after `resume`, with the store's `snapshot` read since it began:
    /// the snapshot's publications it missed that this node has delivered, then the
    /// buffered ones after the snapshot, each once. `wrap` makes a publication frame.
    /// On [`Finish::Join`] the connection is no longer pending; on
    /// [`Finish::Again`] it is pending afresh.
    pub(crate) fn finish(
        &mut self,
        conn: u64,
        resume: Option<Position>,
        snapshot: &Snapshot,
        wrap: impl Fn(Position, &Bytes) -> Bytes,
    ) -> Finish {
        let buffered = self.pending.remove(&conn).flatten();
        let Some(buffered) = buffered else {
            self.begin(conn);
            return Finish::Again;
        };
        if self.epoch != Some(snapshot.epoch) {
            if !buffered.is_empty() {
                // This node moved to another epoch while the store was read.
                self.begin(conn);
                return Finish::Again;
            }
            // Nothing delivered here since the read began, which came after whatever
            // this node delivered: the store's epoch is the newer (or this node has
            // delivered nothing yet), and its position is this node's from now.
            self.adopt(snapshot.epoch, snapshot.last);
        }
        let first_buffered = buffered
            .first()
            .map_or(self.last + 1, |(offset, _)| *offset);
        if snapshot.last + 1 < first_buffered {
            self.begin(conn);
            return Finish::Again;
        }
        if self.opening {
            // It joins after `last`, and gets the held ones when the topic opens: a
            // crossing one arriving later must not go out before them.
            self.settled = self.last;
        }
        let epoch = snapshot.epoch;
        let now = self.last;
        let status = match resume {
            None => Status::Subscribed,
            Some(p) if p.epoch != epoch || p.offset > snapshot.last => Status::NotRecovered,
            Some(p) if p.offset == snapshot.last => Status::Recovered,
            Some(p) => match snapshot.entries.first() {
                Some((first, _)) if *first <= p.offset + 1 => Status::Recovered,
                _ => Status::NotRecovered,
            },
        };
        let Some(from) = resume.filter(|_| status == Status::Recovered) else {
            // Nothing sent: live publications follow the answered position.
            return Finish::Join {
                status,
                position: Position { epoch, offset: now },
                replay: Vec::new(),
            };
        };
        let mut replay: Vec<Bytes> = snapshot
            .entries
            .iter()
            .filter(|(offset, _)| *offset > from.offset && *offset <= now)
            .map(|(offset, plain)| {
                wrap(
                    Position {
                        epoch,
                        offset: *offset,
                    },
                    plain,
                )
            })
            .collect();
        let after = from.offset.max(snapshot.last);
        replay.extend(
            buffered
                .into_iter()
                .filter(|(offset, _)| *offset > after)
                .map(|(_, frame)| frame),
        );
        if from.offset > now {
            // It saw more than this node delivered yet: those must not reach it twice.
            self.floors.insert(conn, from.offset);
        }
        Finish::Join {
            status,
            position: Position {
                epoch,
                offset: now.max(from.offset),
            },
            replay,
        }
    }

    /// Whether nothing depends on this sequencer (it may be dropped).
    pub(crate) fn is_idle(&self) -> bool {
        self.held.is_empty() && self.pending.is_empty() && !self.filling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 7;

    fn at(offset: u64) -> Position {
        Position { epoch: E, offset }
    }

    fn text(offset: u64) -> Bytes {
        Bytes::from(format!("m{offset}"))
    }

    fn offsets(out: &[(Position, Bytes)]) -> Vec<u64> {
        out.iter().map(|(p, _)| p.offset).collect()
    }

    #[test]
    fn early_ones_wait_for_their_turn_and_duplicates_are_dropped() {
        let mut s = Sequencer::default();
        assert_eq!(first_arrivals(&mut s, &[1]), [1]);
        assert_eq!(offsets(&s.arrive(at(3), text(3))), [] as [u64; 0]);
        assert_eq!(s.hole(), Some((E, 1, 2)));
        assert_eq!(offsets(&s.arrive(at(4), text(4))), [] as [u64; 0]);
        assert_eq!(offsets(&s.arrive(at(2), text(2))), [2, 3, 4]);
        assert_eq!(s.hole(), None);
        assert_eq!(offsets(&s.arrive(at(3), text(3))), [] as [u64; 0]);
        assert_eq!(offsets(&s.arrive(at(6), text(6))), [] as [u64; 0]);
        assert_eq!(offsets(&s.skip_hole()), [6]);
    }

    /// What the hub delivers of `arrivals` on a fresh sequencer: each arrival's release,
    /// then its fill task's step once the hole wait is over.
    fn first_arrivals(s: &mut Sequencer, arrivals: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        for o in arrivals {
            out.extend(offsets(&s.arrive(at(*o), text(*o))));
        }
        if s.hole().is_some() {
            out.extend(offsets(&s.skip_hole()));
        }
        out
    }

    #[test]
    fn first_publications_crossing_on_their_way_are_delivered_once_in_order() {
        let mut s = Sequencer::default();
        // Another node's 1 reaches this node after its own 2: both, in order.
        assert_eq!(first_arrivals(&mut s, &[2, 1]), [1, 2]);
        assert_eq!(offsets(&s.arrive(at(1), text(1))), [] as [u64; 0]);
        assert_eq!(offsets(&s.arrive(at(3), text(3))), [3]);
        // Three crossing, one twice: held, once each.
        let mut s = Sequencer::default();
        assert_eq!(first_arrivals(&mut s, &[5, 3, 4, 3]), [3, 4, 5]);
        // One arriving after the opening is older than what this node delivers.
        assert_eq!(offsets(&s.arrive(at(2), text(2))), [] as [u64; 0]);
        assert_eq!(s.position(), Some(at(5)));
    }

    #[test]
    fn a_resume_while_the_topic_opens_gets_each_offset_once_in_order() {
        let mut s = Sequencer::default();
        s.arrive(at(3), text(3));
        s.begin(9);
        let Finish::Join {
            position, replay, ..
        } = s.finish(9, None, &snapshot(3, 1), wrap)
        else {
            panic!()
        };
        // Joined at 2: it gets 3 when the topic opens, and 2 crossing later is not sent
        // after it.
        assert_eq!((position, replay.len()), (at(2), 0));
        assert_eq!(offsets(&s.arrive(at(2), text(2))), [] as [u64; 0]);
        assert_eq!(offsets(&s.skip_hole()), [3]);
    }

    #[test]
    fn a_new_epoch_is_adopted_and_the_old_one_ignored() {
        let mut s = Sequencer::default();
        first_arrivals(&mut s, &[1]);
        s.arrive(at(3), text(3));
        let new = Position {
            epoch: 8,
            offset: 1,
        };
        let out = s.arrive(new, text(1));
        assert_eq!(
            out.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            [at(3), new]
        );
        assert_eq!(offsets(&s.arrive(at(2), text(2))), [] as [u64; 0]);
        assert_eq!(s.position(), Some(new));
    }

    fn wrap(p: Position, plain: &Bytes) -> Bytes {
        Bytes::from(format!("{}:{}", p.offset, String::from_utf8_lossy(plain)))
    }

    fn snapshot(last: u64, from: u64) -> Snapshot {
        Snapshot {
            epoch: E,
            last,
            entries: (from..=last).map(|o| (o, text(o))).collect(),
        }
    }

    #[test]
    fn a_resume_merges_the_snapshot_and_what_was_delivered_meanwhile_once() {
        let mut s = Sequencer::default();
        first_arrivals(&mut s, &[1, 2, 3, 4, 5]);
        s.begin(9);
        // Read with 6 in the store, 6 and 7 delivered meanwhile.
        for o in 6..=7 {
            for (p, plain) in s.arrive(at(o), text(o)) {
                s.buffer(p.offset, &wrap(p, &plain), 100);
            }
        }
        let finish = s.finish(9, Some(at(2)), &snapshot(6, 1), wrap);
        let Finish::Join {
            status,
            position,
            replay,
        } = finish
        else {
            panic!("{finish:?}")
        };
        assert_eq!(status, Status::Recovered);
        assert_eq!(position, at(7));
        assert_eq!(replay, ["3:m3", "4:m4", "5:m5", "6:m6", "7:m7"]);
        assert!(!s.is_pending(9));
    }

    #[test]
    fn a_resume_past_what_was_delivered_here_skips_it_later() {
        let mut s = Sequencer::default();
        first_arrivals(&mut s, &[1]);
        s.begin(9);
        // The client saw 3 elsewhere; 2 and 3 are still on their way here.
        let finish = s.finish(9, Some(at(3)), &snapshot(3, 1), wrap);
        assert_eq!(
            finish,
            Finish::Join {
                status: Status::Recovered,
                position: at(3),
                replay: vec![]
            }
        );
        s.arrive(at(2), text(2));
        assert!(s.skips(9, 2));
        // A fill hands 3 and 4 together: both released before they are delivered.
        s.arrive(at(3), text(3));
        s.arrive(at(4), text(4));
        assert!(s.skips(9, 3), "3 is delivered after 4 released it");
        assert!(!s.skips(9, 4));
        s.delivered();
        s.arrive(at(5), text(5));
        assert!(!s.skips(9, 3) && !s.skips(9, 5));
    }

    #[test]
    fn a_snapshot_that_does_not_meet_the_deliveries_is_read_again() {
        let mut s = Sequencer::default();
        s.begin(9);
        // Nothing delivered at the start, then 5 adopted while the snapshot (up to 3)
        // was read: 4 would be missing.
        let mut out = s.arrive(at(5), text(5));
        out.extend(s.skip_hole());
        for (p, plain) in out {
            s.buffer(p.offset, &wrap(p, &plain), 100);
        }
        assert_eq!(
            s.finish(9, Some(at(1)), &snapshot(3, 1), wrap),
            Finish::Again
        );
        assert!(s.is_pending(9));
        // A snapshot of another epoch than what was delivered meanwhile.
        for (p, plain) in s.arrive(at(6), text(6)) {
            s.buffer(p.offset, &wrap(p, &plain), 100);
        }
        let other = Snapshot {
            epoch: 9,
            ..snapshot(5, 1)
        };
        assert_eq!(s.finish(9, None, &other, wrap), Finish::Again);
    }

    #[test]
    fn a_store_that_started_a_new_epoch_is_followed_before_anything_of_it_arrives() {
        let mut s = Sequencer::default();
        s.arrive(at(1), text(1));
        s.arrive(at(3), text(3));
        // The keys were flushed; nothing published since: the read made a new epoch.
        s.begin(9);
        let flushed = Snapshot {
            epoch: 9,
            last: 0,
            entries: vec![],
        };
        let Finish::Join {
            status, position, ..
        } = s.finish(9, Some(at(1)), &flushed, wrap)
        else {
            panic!()
        };
        let new = Position {
            epoch: 9,
            offset: 0,
        };
        assert_eq!((status, position), (Status::NotRecovered, new));
        assert_eq!(s.hole(), None, "the old epoch's held one is dropped");
        assert_eq!(offsets(&s.arrive(at(2), text(2))), [] as [u64; 0]);
        let first = Position { offset: 1, ..new };
        assert_eq!(offsets(&s.arrive(first, text(1))), [1]);
    }

    #[test]
    fn positions_not_covered_are_not_recovered_and_get_nothing() {
        let mut s = Sequencer::default();
        s.begin(9);
        let trimmed = snapshot(10, 6);
        let Finish::Join { status, replay, .. } = s.finish(9, Some(at(3)), &trimmed, wrap) else {
            panic!()
        };
        assert_eq!((status, replay.len()), (Status::NotRecovered, 0));
        s.begin(9);
        let other = Position {
            epoch: 1,
            offset: 10,
        };
        let Finish::Join {
            status, position, ..
        } = s.finish(9, Some(other), &trimmed, wrap)
        else {
            panic!()
        };
        assert_eq!((status, position), (Status::NotRecovered, at(10)));
    }
}
