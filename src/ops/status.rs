//! What observers ask: fill levels, message counts, statistics, reference
//! counts, shutdown.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::error::{Error, Result};
use crate::frame::frame_len;
use crate::layout::{RingBufferStats, RingBufferStatsEx};
use crate::segment::View;
use crate::sync::deadline::Wait;
use crate::sync::mutex;

impl View<'_> {
    /// Bytes queued now (`tail - head`, read without locks).
    ///
    /// A pair read without locks is a consistent snapshot when `tail` did
    /// not move around the read of `head` (it only grows): then
    /// `tail - head > buffer_size` or `head > tail` is corruption. If writers
    /// keep moving `tail` through every attempt, the last pair is clamped.
    pub(crate) fn available_read(&self) -> Result<u32> {
        let capacity = self.ring.capacity();
        for _ in 0..8 {
            let tail = self.ring.tail.load(Acquire);
            let head = self.ring.head.load(Acquire);
            if self.ring.tail.load(Acquire) == tail {
                let used = self.ring.used(head, tail)?;
                return Ok(used.min(capacity) as u32);
            }
        }
        let head = self.ring.head.load(Acquire);
        let tail = self.ring.tail.load(Acquire);
        let used = tail.checked_sub(head).ok_or(Error::Corrupt)?;
        Ok(used.min(capacity) as u32)
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

    /// The legacy byte totals. On a version-2 object they are derived from
    /// the counters and written back to the header fields, so programs that
    /// read `rb->total_bytes_written` directly see them as of this call.
    fn byte_totals(&self) -> (u64, u64) {
        let (written, read) = (
            self.header.total_bytes_written(),
            self.header.total_bytes_read(),
        );
        if let Some(ext) = self.ext {
            let tail = self.ring.tail.load(Acquire);
            let head = self.ring.head.load(Acquire);
            written.store(
                tail.wrapping_sub(ext.identity.stats_base_tail.load(Relaxed)),
                Relaxed,
            );
            read.store(
                head.wrapping_sub(ext.identity.stats_base_head.load(Relaxed)),
                Relaxed,
            );
        }
        (written.load(Relaxed), read.load(Relaxed))
    }

    pub(crate) fn stats(&self) -> Result<RingBufferStats> {
        let hdr = self.header;
        let available_read = self.available_read()?;
        let (total_bytes_written, total_bytes_read) = self.byte_totals();
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
