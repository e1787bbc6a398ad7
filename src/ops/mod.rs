//! The queue's operations on a [`View`]: what producers, consumers and
//! observers do, with the locking, journaling and waking that makes them safe
//! for many processes that may die at any instant.
//!
//! Lock order: a thread holds at most one of the writer lock, the reader lock
//! and the ref mutex at a time, so there is no order to get wrong.

mod legacy;
mod recv;
mod send;
mod status;
mod tasks;
mod wait;

pub(crate) use recv::Incoming;
pub(crate) use send::Outgoing;

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::error::Result;
use crate::frame::Tracker;
use crate::layout::Side;
use crate::segment::View;
use crate::sync::deadline::Wait;
use crate::sync::mutex::{self, Guard};

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
    /// A lock whose owner died is repaired from that side's journal before it
    /// is handed out: if the dead owner's publication of `tail` (`head`)
    /// happened, the message count and framing state it journaled are
    /// applied; if not, nothing it did is visible and they stay as they were.
    fn lock(&self, role: Role, wait: Wait) -> Result<Option<Guard>> {
        let Some(side) = self.side(role) else {
            return Ok(None);
        };
        let (own, peer, inside) = match role {
            Role::Writer => (self.ring.tail, self.ring.head, self.header.writers()),
            Role::Reader => (self.ring.head, self.ring.tail, self.header.readers()),
        };
        let repair = || {
            // Acquire pairs with the dead owner's Release stores of the
            // journal and of its counter: if we see its publication we see the
            // journal written before it.
            let pos = own.load(Acquire);
            side.own.store(pos, Relaxed);
            if side.journal_pos.load(Acquire) == pos {
                side.messages
                    .store(side.journal_messages.load(Acquire), Relaxed);
                side.track.store(side.journal_track.load(Acquire), Relaxed);
            }
            side.cached_peer.store(peer.load(Acquire), Relaxed);
            inside.store(0, Relaxed);
            side.recoveries.fetch_add(1, Relaxed);
        };
        // SAFETY: the lock lives in the mapped extension block, which outlives
        // the guard (the guard never leaves the operation holding the View).
        let guard = unsafe { mutex::lock(side.lock.get(), wait.deadline(), repair)? };
        crate::failpoint::hit(match role {
            Role::Writer => "writer_locked",
            Role::Reader => "reader_locked",
        });
        Ok(Some(guard))
    }

    /// Records a finished copy and publishes it: journal first, then the
    /// counter (`tail` or `head`, Release), then the message count, framing
    /// state and statistics. The caller holds the side's lock and has copied
    /// the bytes `[from, to)` in (writer) or out (reader); `frames` is how
    /// many whole frames they hold if they start on a frame boundary.
    fn publish(&self, role: Role, from: u64, to: u64, frames: u64) {
        use std::sync::atomic::Ordering::Release;
        let (own, total) = match role {
            Role::Writer => (self.ring.tail, self.header.total_bytes_written()),
            Role::Reader => (self.ring.head, self.header.total_bytes_read()),
        };
        let journaled = self.side(role).map(|side| {
            let mut track = Tracker::unpack(side.track.load(Relaxed));
            let counted = if track.is_boundary() && frames > 0 {
                frames
            } else {
                self.feed_from_ring(&mut track, from, to)
            };
            let messages = side.messages.load(Relaxed).wrapping_add(counted);
            let track = track.pack();
            // Journal before the publication (see `lock`'s repair), position
            // first so that a half-written journal never matches the counter.
            side.journal_pos.store(to, Release);
            side.journal_messages.store(messages, Release);
            side.journal_track.store(track, Release);
            (side, messages, track)
        });
        crate::failpoint::hit(match role {
            Role::Writer => "writer_before_publish",
            Role::Reader => "reader_before_publish",
        });
        // Release pairs with the other side's Acquire load of this counter:
        // the bytes copied before it are complete once it is seen.
        own.store(to, Release);
        match journaled {
            Some((side, messages, track)) => {
                side.own.store(to, Relaxed);
                side.messages.store(messages, Release);
                side.track.store(track, Relaxed);
                if role == Role::Writer {
                    self.note_high_water(side, to);
                }
            }
            // A legacy object keeps its byte totals the legacy way.
            None => {
                total.fetch_add(to - from, Relaxed);
            }
        }
    }

    /// Raises the high-water mark if `tail` (just published) makes the queue
    /// fuller than ever. The cached `head` gives an upper bound for free; the
    /// shared `head` is read only when that bound would raise the mark.
    fn note_high_water(&self, writer: &Side, tail: u64) {
        let mark = writer.high_water.load(Relaxed);
        if tail.wrapping_sub(writer.cached_peer.load(Relaxed)) <= mark {
            return;
        }
        let head = self.ring.head.load(Acquire);
        writer.cached_peer.store(head, Relaxed);
        let queued = tail.wrapping_sub(head);
        if queued <= self.ring.size() && queued > mark {
            writer.high_water.store(queued, Relaxed);
        }
    }

    /// This side's counter: the exact shadow in its own cache line on a
    /// version-2 object, the header's on a legacy one. The caller holds the
    /// side's lock (only the holder moves the counter).
    fn own_position(&self, role: Role) -> u64 {
        match (self.side(role), role) {
            (Some(side), _) => side.own.load(Relaxed),
            (None, Role::Writer) => self.ring.tail.load(Relaxed),
            (None, Role::Reader) => self.ring.head.load(Relaxed),
        }
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

    /// Whether the queue was shut down (never, for a legacy object).
    fn is_shut_down(&self) -> bool {
        self.ext
            .is_some_and(|e| e.signals.shutdown.load(Acquire) != 0)
    }
}
