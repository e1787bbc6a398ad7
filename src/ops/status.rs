//! What observers ask: fill levels, message counts, statistics, reference
//! counts, shutdown.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::Role;
use crate::error::{Error, Result};
use crate::frame::frame_len;
use crate::layout::{RingBufferStats, RingBufferStatsEx};
use crate::segment::View;
use crate::sync::deadline::Wait;
use crate::sync::mutex;

impl View<'_> {
    /// Bytes queued now (`tail - head`, read without locks). On a
    /// version-2 object the pair is mirrored into the legacy header.
    pub(crate) fn available_read(&self) -> Result<u32> {
        let (head, tail) = self.positions()?;
        self.mirror_legacy_header(head, tail, None)?;
        Ok((tail - head).min(self.ring.capacity()) as u32)
    }

    /// `head` and `tail` read without locks.
    ///
    /// A pair is a consistent snapshot when `tail` did not move around the
    /// read of `head` (it only grows): then `tail - head > buffer_size` or
    /// `head > tail` is corruption. If writers keep moving `tail` through
    /// every attempt, the last pair (`head` read first, so never past
    /// `tail`) is clamped to the ring by the callers.
    fn positions(&self) -> Result<(u64, u64)> {
        for _ in 0..8 {
            let tail = self.ring.tail.load(Acquire);
            let head = self.ring.head.load(Acquire);
            if self.ring.tail.load(Acquire) == tail {
                self.ring.used(head, tail)?;
                return Ok((head, tail));
            }
        }
        let head = self.ring.head.load(Acquire);
        let tail = self.ring.tail.load(Acquire);
        tail.checked_sub(head).ok_or(Error::Corrupt)?;
        Ok((head, tail.min(head + self.ring.size())))
    }

    /// [`View::mirror_legacy_header`] with positions read now. `Corrupt`
    /// if they are impossible or the header holds counters ahead of them.
    pub(crate) fn sync_legacy_header(&self) -> Result<()> {
        if self.ext.is_none() {
            return Ok(());
        }
        let (head, tail) = self.positions()?;
        self.mirror_legacy_header(head, tail, None)
    }

    /// Brings the legacy header's `head`, `tail` and byte totals of a
    /// version-2 object up to date with `head` and `tail` (positions read
    /// by the caller, see `RingBuffer`); nothing on a legacy object, whose
    /// header holds the real counters. Called by every legacy call that moves
    /// bytes and every status call, never by the message calls.
    ///
    /// The positions only move forward, and the header's copies are only
    /// ever stored from them, so a copy is never ahead of the position it
    /// mirrors: a call that read the positions before a racing call moved
    /// them must not take the mirror back (a field is only raised), and a
    /// copy ahead of the real position (looked at again) was written by
    /// someone else, such as a process running the legacy library, which
    /// moves these fields itself: `Corrupt`, and nothing is stored. The
    /// words are written only when they change, so status calls in a loop
    /// do not keep taking the header's line from other cores.
    ///
    /// `holder` is the side whose lock the caller holds and whose position
    /// it has just moved (its field is then stored, not raised by a
    /// compare-and-swap), `None` for the checks and for status calls.
    pub(super) fn mirror_legacy_header(
        &self,
        head: u64,
        tail: u64,
        holder: Option<Role>,
    ) -> Result<()> {
        let Some(ext) = self.ext else {
            return Ok(());
        };
        // Each field with its value, the real position, and the side that
        // moves that position.
        let mirrors = [
            (self.header.head(), head, self.ring.head, Role::Reader),
            (self.header.tail(), tail, self.ring.tail, Role::Writer),
        ];
        for (field, value, real, _) in mirrors {
            let cur = field.load(Relaxed);
            if cur > value && cur > real.load(Acquire) {
                return Err(Error::Corrupt);
            }
        }
        for (field, value, _, mover) in mirrors {
            if holder == Some(mover) {
                // The holder of this side's lock is the only one that moves
                // the position this field mirrors, and it stores the newest
                // value: every other writer of the field stores an older
                // position. A plain store (no locked instruction stalling
                // on the line the other side just had) cannot go back.
                if field.load(Relaxed) < value {
                    field.store(value, Relaxed);
                }
            } else {
                let _ = field.fetch_update(Relaxed, Relaxed, |cur| (cur < value).then_some(value));
            }
        }
        let totals = [
            (
                self.header.total_bytes_written(),
                tail,
                &ext.identity.stats_base_tail,
            ),
            (
                self.header.total_bytes_read(),
                head,
                &ext.identity.stats_base_head,
            ),
        ];
        for (field, position, base) in totals {
            let total = position.wrapping_sub(base.load(Relaxed));
            if field.load(Relaxed) != total {
                field.store(total, Relaxed);
            }
        }
        Ok(())
    }

    /// Bytes that can be written now (`buffer_size - available_read - 1`).
    pub(crate) fn available_write(&self) -> Result<u32> {
        Ok((self.ring.capacity() - u64::from(self.available_read()?)) as u32)
    }

    /// Whole messages queued now. Exact on a version-2 object (counters kept
    /// under the locks); a legacy object is walked frame by frame.
    pub(crate) fn msg_count(&self) -> Result<u64> {
        match self.ext {
            Some(ext) => {
                self.sync_legacy_header()?;
                // Consumed first: the published count can only grow after,
                // and every message consumed was published before (the
                // Acquire of `out` sees the writers' counts that preceded
                // it). More consumed than published was written by someone
                // else: report it instead of passing off 0 as a count.
                let out = ext.reader.messages.load(Acquire);
                ext.writer
                    .messages
                    .load(Acquire)
                    .checked_sub(out)
                    .ok_or(Error::Corrupt)
            }
            None => {
                let (mut pos, tail) = (self.ring.head.load(Acquire), self.ring.tail.load(Acquire));
                self.ring.used(pos, tail)?;
                let mut count = 0;
                while tail - pos >= 4 {
                    // No descriptors on a legacy object: the prefix is the length.
                    let frame = frame_len(self.ring.prefix_at(pos));
                    if frame > tail - pos {
                        break;
                    }
                    pos += frame;
                    count += 1;
                }
                Ok(count)
            }
        }
    }

    pub(crate) fn stats(&self) -> Result<RingBufferStats> {
        let hdr = self.header;
        // Mirrors the header's counters and totals (version 2) first.
        let available_read = self.available_read()?;
        let total_bytes_written = hdr.total_bytes_written().load(Relaxed);
        let total_bytes_read = hdr.total_bytes_read().load(Relaxed);
        Ok(RingBufferStats {
            buffer_size: self.buffer_size(),
            available_read,
            available_write: (self.ring.capacity() - u64::from(available_read)) as u32,
            readers: hdr.readers().load(Relaxed),
            writers: hdr.writers().load(Relaxed),
            ref_count: hdr.ref_count().load(Relaxed),
            total_bytes_written,
            total_bytes_read,
            utilization: f64::from(available_read) / f64::from(self.buffer_size()),
        })
    }

    pub(crate) fn stats_ex(&self, attached_processes: u32) -> Result<RingBufferStatsEx> {
        let s = self.stats()?;
        let mut ex = RingBufferStatsEx {
            buffer_size: s.buffer_size,
            available_read: s.available_read,
            available_write: s.available_write,
            readers: s.readers,
            writers: s.writers,
            ref_count: s.ref_count,
            total_bytes_written: s.total_bytes_written,
            total_bytes_read: s.total_bytes_read,
            utilization: s.utilization,
            version: self.version(),
            attached_processes,
            messages_in: 0,
            messages_out: 0,
            messages_queued: self.msg_count()?,
            sleeping_producers: 0,
            sleeping_consumers: 0,
            producer_waits: 0,
            consumer_waits: 0,
            wakeups: 0,
            owner_died_recoveries: 0,
            high_water_bytes: 0,
            tasks_done: 0,
            shutdown: 0,
            reserved: 0,
        };
        if let Some(ext) = self.ext {
            ex.messages_out = ext.reader.messages.load(Acquire);
            ex.messages_in = ext.writer.messages.load(Acquire);
            ex.sleeping_producers = ext.signals.producer_sleepers.load(Relaxed);
            ex.sleeping_consumers = ext.signals.consumer_sleepers.load(Relaxed);
            ex.producer_waits = ext.writer.waits.load(Relaxed);
            ex.consumer_waits = ext.reader.waits.load(Relaxed);
            ex.wakeups = ext.signals.wakeups.load(Relaxed);
            ex.owner_died_recoveries =
                // Counters from shared memory: any value, never a panic.
                ext.writer.recoveries.load(Relaxed).wrapping_add(ext.reader.recoveries.load(Relaxed));
            ex.high_water_bytes = ext.writer.high_water.load(Relaxed);
            ex.tasks_done = ext.identity.tasks_done.load(Relaxed);
            ex.shutdown = ext.signals.shutdown.load(Relaxed);
        }
        Ok(ex)
    }

    /// Zeroes the statistics (byte totals, waits, wake-ups, recoveries, high
    /// water). Message counts and task accounting are state, not statistics,
    /// and stay.
    pub(crate) fn reset_stats(&self) {
        self.header.total_bytes_written().store(0, Relaxed);
        self.header.total_bytes_read().store(0, Relaxed);
        if let Some(ext) = self.ext {
            ext.identity
                .stats_base_tail
                .store(self.ring.tail.load(Acquire), Relaxed);
            ext.identity
                .stats_base_head
                .store(self.ring.head.load(Acquire), Relaxed);
            // A refused mirror (`Corrupt`) is reported by the next call.
            let _ = self.sync_legacy_header();
            for counter in [
                &ext.writer.waits,
                &ext.reader.waits,
                &ext.signals.wakeups,
                &ext.writer.recoveries,
                &ext.reader.recoveries,
                &ext.writer.high_water,
            ] {
                counter.store(0, Relaxed);
            }
        }
    }

    /// Adds `delta` (+1 or -1) to the legacy reference count under the ref
    /// mutex; returns the new count (never below 0).
    pub(crate) fn add_ref(&self, delta: i32) -> Result<u32> {
        let count = self.header.ref_count();
        // SAFETY: the ref mutex lives in the mapped header, which outlives the
        // guard; the repair has nothing to do (the count is a plain word).
        let _guard =
            unsafe { mutex::lock(self.header.ref_mutex(), || Wait::Try.lock_deadline(), || {})? };
        let new = count.load(Relaxed).saturating_add_signed(delta);
        count.store(new, Relaxed);
        // The count is kept whatever the mirror finds (the next status or
        // data call reports a corrupt one).
        let _ = self.sync_legacy_header();
        Ok(new)
    }

    /// Marks the queue shut down and wakes every sleeper: puts fail from now
    /// on, gets drain what is queued, then fail.
    pub(crate) fn shutdown(&self) -> Result<()> {
        let ext = self.ext.ok_or(Error::Incompatible)?;
        super::wait::shut_down(ext);
        Ok(())
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.is_shut_down()
    }
}
