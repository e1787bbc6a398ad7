//! The queue's operations on a [`View`]: what producers, consumers and
//! observers do, with the locking, journaling and waking that makes them safe
//! for many processes that may die at any instant.
//!
//! Lock order: a thread holds at most one of the writer lock, the reader lock
//! and the ref mutex at a time, so there is no order to get wrong (nor any
//! reentrancy: the writer and reader locks are not reentrant, and a lock
//! word naming the thread that asks for it is treated as garbage).

mod legacy;
#[cfg(all(test, loom))]
mod loom_lock_models;
#[cfg(all(test, loom))]
mod loom_models;
#[cfg(all(test, not(any(loom, miri))))]
mod patience_tests;
mod queued;
mod readiness;
mod reclaim;
mod recv;
#[cfg(test)]
mod repair_tests;
mod send;
mod side_budget;
mod status;
mod tasks;
mod wait;
#[cfg(all(test, not(any(loom, miri))))]
mod wait_tests;

pub(crate) use recv::{Incoming, Taken};
pub(crate) use send::{Gathered, Outgoing};

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::error::{Error, Result};
use crate::frame::Tracker;
use crate::layout::{Side, FLAG_MIXED_PID_NS, FLAG_RAW_STREAM, FLAG_REMOVED};
use crate::pool;
use crate::segment::View;
use crate::sync::deadline::Wait;
use crate::sync::lock::LockGuard;
use crate::sync::owner::ProcessOwners;

/// Largest `tail` an operation accepts (see [`View::counters`]).
const MAX_POSITION: u64 = u64::MAX - (1 << 32);

/// What an operation knows of the frames in the bytes it publishes.
#[derive(Clone, Copy)]
enum Frames {
    /// This many whole messages (the message calls). When the side's framing
    /// state is on a boundary it stays there; otherwise (a legacy raw call
    /// left it mid-frame) the bytes are followed from the ring.
    Whole(u64),
    /// The side's framing state after following the bytes, and the frames
    /// they completed: the caller fed its own copy of the bytes (legacy raw
    /// calls), so nothing is read back from the ring.
    Fed(Tracker, u64),
}

/// Which side of the queue an operation belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

impl<'a> View<'a> {
    fn side(&self, role: Role) -> Option<&'a Side> {
        self.ext.map(|e| match role {
            Role::Writer => &e.writer,
            Role::Reader => &e.reader,
        })
    }

    /// Takes the writer or reader lock (no lock exists on a legacy object:
    /// the legacy one-writer/one-reader contract applies there).
    ///
    /// A lock whose owner died (or whose word names no live owner: garbage)
    /// is taken over and repaired from that side's journal before it is
    /// handed out: if the dead owner's publication of `tail` (`head`)
    /// happened, the message count and framing state it journaled are
    /// applied; if not, nothing it did is visible and they stay as they were.
    fn lock(&self, role: Role, wait: Wait) -> Result<Option<LockGuard<'a>>> {
        let Some(side) = self.side(role) else {
            return Ok(None);
        };
        let repair = || self.repair(role, side);
        let owners = ProcessOwners::new(self.file, self.ext.map(|e| &e.identity.flags));
        let guard = side.lock.lock(&owners, || wait.lock_deadline(), repair)?;
        crate::failpoint::hit(match role {
            Role::Writer => "writer_locked",
            Role::Reader => "reader_locked",
        });
        Ok(Some(guard))
    }

    /// Puts `role`'s side (`side`) back in order after its lock was taken
    /// over from an owner that died holding it, or from a word that named no
    /// live owner (the caller holds the lock now; see [`View::lock`]).
    fn repair(&self, role: Role, side: &Side) {
        let (own, inside) = match role {
            Role::Writer => (self.ring.tail, self.header.writers()),
            Role::Reader => (self.ring.head, self.header.readers()),
        };
        // Acquire pairs with the dead owner's Release stores of the journal
        // and of its counter: if we see its publication we see the journal
        // written before it.
        let pos = own.load(Acquire);
        side.own.store(pos, Relaxed);
        if side.journal_pos.load(Acquire) == pos {
            side.messages
                .store(side.journal_messages.load(Acquire), Relaxed);
            side.track.store(side.journal_track.load(Acquire), Relaxed);
        }
        inside.store(0, Relaxed);
        side.recoveries.fetch_add(1, Relaxed);
    }

    /// `head` and `tail` for an operation of `role`, whose lock the caller
    /// holds, as far as that side knows them without looking at the other
    /// side's line: its own position, and its cached copy of the other's
    /// (`Side::peer`, a lower bound). Validated: `head <= tail <= head +
    /// buffer_size`, and this side's position equal to the copy it keeps of
    /// what it last published (only the lock holder moves it, so any
    /// difference means someone else wrote it: a hostile or buggy process,
    /// or a process using the legacy library on a version-2 queue).
    /// `Corrupt` otherwise. On a legacy object both are loaded, as
    /// [`View::refresh`] does.
    ///
    /// A writer that finds too little room, or a reader too few bytes, calls
    /// [`View::refresh`] before concluding anything.
    fn counters(&self, role: Role) -> Result<(u64, u64)> {
        let Some(side) = self.side(role) else {
            return self.refresh(role);
        };
        let own = match role {
            Role::Writer => self.ring.tail,
            Role::Reader => self.ring.head,
        };
        // Acquire pairs with the Release store of the previous holder (the
        // lock orders them too; this keeps the argument local).
        let mine = own.load(Acquire);
        if side.own.load(Relaxed) != mine {
            return Err(Error::Corrupt);
        }
        let cached = side.peer.load(Relaxed);
        let pair = match role {
            Role::Writer => (cached, mine),
            Role::Reader => (mine, cached),
        };
        self.check_pair(pair)
    }

    /// Like [`View::counters`], but loads the other side's real position
    /// (its cache line) and refreshes this side's cached copy of it.
    ///
    /// Acquire pairs with the other side's Release store of its position:
    /// the bytes it copied in (or out) before moving it are complete.
    fn refresh(&self, role: Role) -> Result<(u64, u64)> {
        let Some(side) = self.side(role) else {
            return self.check_pair((self.ring.head.load(Acquire), self.ring.tail.load(Acquire)));
        };
        let (own, peer) = match role {
            Role::Writer => (self.ring.tail, self.ring.head),
            Role::Reader => (self.ring.head, self.ring.tail),
        };
        let mine = own.load(Acquire);
        if side.own.load(Relaxed) != mine {
            return Err(Error::Corrupt);
        }
        let theirs = peer.load(Acquire);
        // Positions only grow: one behind the cached copy was written by
        // someone else (and the caller may already have used the cache).
        if theirs < side.peer.load(Relaxed) {
            return Err(Error::Corrupt);
        }
        let pair = match role {
            Role::Writer => (theirs, mine),
            Role::Reader => (mine, theirs),
        };
        let pair = self.check_pair(pair)?;
        side.peer.store(theirs, Relaxed);
        Ok(pair)
    }

    /// `(head, tail)` if a well-behaved queue can have them, else `Corrupt`.
    fn check_pair(&self, (head, tail): (u64, u64)) -> Result<(u64, u64)> {
        self.ring.used(head, tail)?;
        // One operation moves a counter by less than 2^32 bytes, so below
        // this bound no position arithmetic can overflow. Reaching it
        // legitimately takes decades at 10 GB/s; above it, someone wrote
        // the counters.
        if tail > MAX_POSITION {
            return Err(Error::Corrupt);
        }
        Ok((head, tail))
    }

    /// Records a finished copy and publishes it: journal first, then the
    /// position (`tail` or `head`, Release), then the message count and
    /// framing state. The caller holds the side's lock and has copied the
    /// bytes `[from, to)` in (writer) or out (reader); `frames` says what it
    /// knows of their framing.
    ///
    /// Everything but the position goes to this side's own lines, which the
    /// other side does not read in the hot path; the stores that would not
    /// change a word are skipped (a boundary stays a boundary for the
    /// message calls), and the high-water mark looks at the other side's
    /// position only when the cached copy says a new high may have been
    /// reached.
    fn publish(&self, role: Role, from: u64, to: u64, frames: Frames) {
        use std::sync::atomic::Ordering::Release;
        let (own, total) = match role {
            Role::Writer => (self.ring.tail, self.header.total_bytes_written()),
            Role::Reader => (self.ring.head, self.header.total_bytes_read()),
        };
        let Some(side) = self.side(role) else {
            // A legacy object: the counter (Release pairs with the other
            // side's Acquire load) and the legacy byte totals.
            own.store(to, Release);
            total.fetch_add(to - from, Relaxed);
            return;
        };
        let track_before = side.track.load(Relaxed);
        let (counted, track) = match frames {
            // The message calls' case, on the packed word (a boundary packs
            // to 0): whole frames from a boundary end on one.
            Frames::Whole(n) if track_before == 0 && n > 0 => (n, 0),
            Frames::Whole(_) => {
                let mut track = Tracker::unpack(track_before);
                let n = self.feed_from_ring(&mut track, from, to);
                (n, track.pack())
            }
            Frames::Fed(fed, n) => (n, fed.pack()),
        };
        let messages = side.messages.load(Relaxed).wrapping_add(counted);
        // Journal before the publication (see `lock`'s repair), position
        // first so that a half-written journal never matches the counter.
        // A journaled framing state that already holds the right value is
        // left alone: the repair reads the same word either way.
        side.journal_pos.store(to, Release);
        side.journal_messages.store(messages, Release);
        if side.journal_track.load(Relaxed) != track {
            side.journal_track.store(track, Release);
        }
        crate::failpoint::hit(match role {
            Role::Writer => "writer_before_publish",
            Role::Reader => "reader_before_publish",
        });
        // Release pairs with the other side's Acquire load of this position
        // (`refresh`): the bytes copied before it are complete once it is
        // seen.
        own.store(to, Release);
        side.messages.store(messages, Release);
        // The framing state before `own`: a reader that finds `own` equal
        // to a `tail` it saw also finds the framing state that goes with it
        // (see `writer_ends_on_frame`).
        if track != track_before {
            side.track.store(track, Release);
        }
        side.own.store(to, Release);
        if role == Role::Writer {
            self.raise_high_water(side, to);
        }
    }

    /// Writer: records the bytes queued right after publishing up to `to`
    /// if they are a new high. The cached `head` is a lower bound of the
    /// real one, so while `to - cached` is no new high nothing is; only
    /// otherwise is the real `head` loaded (and the cache refreshed with it,
    /// which the next put can use as well).
    fn raise_high_water(&self, side: &Side, to: u64) {
        let high = side.high_water.load(Relaxed);
        let cached = side.peer.load(Relaxed);
        if to.wrapping_sub(cached) <= high {
            return;
        }
        let head = self.ring.head.load(Acquire);
        // Within `[cached, to]` unless someone wrote it: then keep the cache
        // (the next `refresh` reports the corruption).
        let head = if (cached..=to).contains(&head) {
            side.peer.store(head, Relaxed);
            head
        } else {
            cached
        };
        // (Saturating: a cache someone overwrote since it was checked may
        // be past `to`; a statistic then stays as it was.)
        let queued = to.saturating_sub(head);
        if queued > high {
            side.high_water.store(queued, Relaxed);
        }
    }

    /// Whether the byte stream up to `tail` ends on a frame boundary, as far
    /// as the writers know (`false` on a legacy object, which keeps no
    /// framing state). Then a frame that claims more bytes than are queued
    /// before `tail` cannot be a legacy producer's half-written message: it
    /// is corruption.
    fn writer_ends_on_frame(&self, tail: u64) -> bool {
        let Some(writer) = self.side(Role::Writer) else {
            return false;
        };
        // Seqlock-style: `own` brackets the framing state (both stored with
        // Release, `own` last).
        let before = writer.own.load(Acquire);
        let track = Tracker::unpack(writer.track.load(Acquire));
        let after = writer.own.load(Acquire);
        before == tail && after == tail && track.is_boundary()
    }

    /// Follows the frames of the stream bytes `[from, to)`, still in the ring
    /// (the caller's lock keeps the other side off them). Slow path: used only
    /// when a legacy raw call left the stream between two frames.
    fn feed_from_ring(&self, track: &mut Tracker, from: u64, to: u64) -> u64 {
        let mut chunk = [0u8; 256];
        let (mut pos, mut frames) = (from, 0);
        while pos < to {
            let n = (to - pos).min(chunk.len() as u64) as usize;
            self.ring.read(pos, &mut chunk[..n]);
            frames += track.feed(&chunk[..n]);
            pos += n as u64;
        }
        frames
    }

    /// The framing state of `role`'s side, which the caller's lock keeps
    /// still, or `None` on a legacy object (which keeps none).
    fn tracker(&self, role: Role) -> Option<Tracker> {
        self.side(role)
            .map(|side| Tracker::unpack(side.track.load(Relaxed)))
    }

    /// Whether every write so far put whole frames (see
    /// [`crate::layout::FLAG_RAW_STREAM`]); `false` on a legacy object.
    fn stream_is_framed(&self) -> bool {
        self.ext
            .is_some_and(|e| e.identity.flags.load(Relaxed) & FLAG_RAW_STREAM == 0)
    }

    /// What the pool needs to know of this queue's flags, loaded once:
    /// whether its processes live in more than one pid namespace (see
    /// [`FLAG_MIXED_PID_NS`]: thread and process ids cannot be judged then,
    /// and the holders of the pool's slots announce themselves with
    /// `flock`s, see `crate::pool`), and whether its name was removed
    /// ([`FLAG_REMOVED`]).
    fn queue_marks(&self) -> pool::QueueMarks {
        // Relaxed: both flags only ever go from clear to set. The namespace
        // flag by an opener of another namespace before it takes any lock
        // or slot: so that opener sees it set (it marks its slots FLOCKED,
        // and as a reclaimer judges no id), and every id a slot holds is
        // one of the creator's namespace, which a reclaimer that saw the
        // flag clear there may judge. The removal flag is a hint that slot
        // names may name another queue's slots now, as good as an `fstat`
        // of the slot file at the same moment (a removal right after either
        // goes unseen until the next call).
        let flags = self.ext.map_or(0, |e| e.identity.flags.load(Relaxed));
        pool::QueueMarks {
            mixed_pid_ns: flags & FLAG_MIXED_PID_NS != 0,
            removed: flags & FLAG_REMOVED != 0,
        }
    }

    /// Records that the stream holds bytes that are not whole frames.
    fn mark_raw_stream(&self) {
        if let Some(e) = self.ext {
            e.identity.flags.fetch_or(FLAG_RAW_STREAM, Relaxed);
        }
    }

    /// Whether the queue was shut down (never, for a legacy object).
    fn is_shut_down(&self) -> bool {
        self.ext.is_some_and(wait::is_shut_down)
    }
}
