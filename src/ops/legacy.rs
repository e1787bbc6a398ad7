//! The legacy raw-byte calls (`ring_buffer_write`, `read`, `peek`, the two
//! batch calls). They never wait for room or data, exactly like the legacy
//! library (and wait for another process's ongoing operation only as long as
//! a try-once call does, see `Wait::lock_deadline`), but take the same locks as the message calls, so they are atomic
//! with respect to other producers (consumers) of any kind, and they feed the
//! framing trackers so message counts stay exact.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use super::{Frames, Role};
use crate::error::{Error, Result};
use crate::frame::{frame_len_of_prefix, is_descriptor};
use crate::segment::View;
use crate::sync::deadline::Wait;

/// Marks this call in the header's legacy `readers`/`writers` field for as
/// long as it lives. The side's lock serialises the calls it counts, so the
/// count is 0 or 1, written with plain stores: no locked instruction on the
/// header's line, which the other side's calls write too. (A holder that
/// dies is forgiven by the lock repair.)
struct Inside<'a>(&'a AtomicU32);

impl<'a> Inside<'a> {
    fn enter(count: &'a AtomicU32) -> Self {
        count.store(1, Relaxed);
        Inside(count)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.store(0, Relaxed);
    }
}

impl View<'_> {
    /// Writes `parts` back to back, all or nothing. Returns the byte total.
    pub(crate) fn write_bytes(&self, parts: &[&[u8]]) -> Result<u64> {
        let total = parts
            .iter()
            .try_fold(0u64, |sum, p| sum.checked_add(p.len() as u64));
        let total = match total {
            Some(0) | None => return Err(Error::InvalidArg),
            Some(t) if t > self.ring.capacity() => return Err(Error::TooLarge),
            Some(t) => t,
        };
        if self.is_shut_down() {
            return Err(Error::Shutdown);
        }
        {
            let _guard = self.lock(Role::Writer, Wait::Try)?;
            // The real `head`, not the cached one: the legacy call answers
            // "full" only when it is, and mirrors `head` into the header.
            let (head, tail) = self.refresh(Role::Writer)?;
            let used = tail - head;
            if self.ring.capacity() - used.min(self.ring.capacity()) < total {
                // Nothing moves, and the header's line is not touched: a
                // producer polling a full ring must not keep taking it from
                // the consumer (the mirror is brought up to date by the
                // calls that move bytes and by the status calls).
                return Err(Error::Full);
            }
            // Into free space nobody reads before `publish`: the header's
            // line is then touched in one short burst below, not held
            // across the copy while the consumer wants it too.
            let mut pos = tail;
            for part in parts {
                self.ring.write(pos, part);
                pos += part.len() as u64;
            }
            let _inside = Inside::enter(self.header.writers());
            // Before anything moves: a header a legacy-library process
            // wrote (its counters ahead of ours) is refused (the bytes just
            // copied stay unpublished free space).
            self.mirror_legacy_header(head, tail, None)?;
            // Framing followed in the caller's bytes (`Frames::Fed`): nothing
            // written is read back from the ring.
            let frames = self.writer_frames(parts);
            self.publish(Role::Writer, tail, pos, frames);
            // Only raises the copies now (checked above).
            let _ = self.mirror_legacy_header(head, pos, Some(Role::Writer));
        }
        self.wake_peers(Role::Writer);
        Ok(total)
    }

    /// Reads exactly `dst.len()` bytes, consuming them (`consume`) or not
    /// (peek); all or nothing.
    pub(crate) fn read_bytes(&self, dst: &mut [u8], consume: bool) -> Result<()> {
        if dst.is_empty() {
            return Err(Error::InvalidArg);
        }
        {
            let _guard = self.lock(Role::Reader, Wait::Try)?;
            let (head, tail) = self.refresh(Role::Reader)?;
            // Nothing to take: the header's line is not touched, so a
            // consumer polling an empty ring does not keep taking it from
            // the producer (see `write_bytes`).
            if tail - head < dst.len() as u64 {
                return Err(Error::Empty);
            }
            // Checked (and brought up to date) before anything is copied out:
            // the caller's buffer is written only on success. `readers`
            // counts only calls that take bytes.
            self.mirror_legacy_header(head, tail, None)?;
            let taken = self.read_locked(dst, consume, head, tail)?;
            if taken > 0 {
                let _inside = Inside::enter(self.header.readers());
                let _ = self.mirror_legacy_header(head + taken, tail, Some(Role::Reader));
            } else {
                // A peek: nothing consumed, nobody to wake.
                return Ok(());
            }
        }
        self.wake_peers(Role::Reader);
        Ok(())
    }

    /// `read_bytes` under the reader lock, with `head` and `tail` just
    /// loaded: the bytes consumed (0 for a peek).
    fn read_locked(&self, dst: &mut [u8], consume: bool, head: u64, tail: u64) -> Result<u64> {
        let len = dst.len() as u64;
        if tail - head < len {
            return Err(Error::Empty);
        }
        if consume {
            self.check_whole_read(head, len)?;
        }
        self.ring.read(head, dst);
        if !consume {
            return Ok(0);
        }
        let frames = self.fed(Role::Reader, &[dst]);
        self.publish(Role::Reader, head, head + len, frames);
        Ok(len)
    }

    /// Legacy `read_batch`: consumes everything queued, in chunks of at most
    /// `chunk` bytes, at most `max_chunks` of them, each copied to memory
    /// from `alloc` (which may refuse: then the call stops there, having
    /// consumed only what it handed out, cut back to a frame end on a framed
    /// stream, blocks it does not hand out going to `release`). Returns the
    /// chunks.
    pub(crate) fn read_chunks(
        &self,
        max_chunks: usize,
        chunk: usize,
        alloc: &mut dyn FnMut(usize) -> Option<*mut u8>,
        release: &mut dyn FnMut(*mut u8),
    ) -> Result<Vec<(*mut u8, usize)>> {
        let mut chunks = Vec::new();
        {
            let _guard = self.lock(Role::Reader, Wait::Try)?;
            // Drains what is queued now: the real `tail`.
            let (head, tail) = self.refresh(Role::Reader)?;
            if tail == head {
                // Nothing to take: the header's line is not touched (see
                // `write_bytes`).
                return Ok(chunks);
            }
            self.mirror_legacy_header(head, tail, None)?;
            let budget = head.saturating_add((max_chunks as u64).saturating_mul(chunk as u64));
            let end = self.read_end(head, tail.min(budget))?;
            let mut pos = head;
            while chunks.len() < max_chunks && pos < end {
                let len = (end - pos).min(chunk as u64) as usize;
                let Some(dst) = alloc(len) else { break };
                // SAFETY: `alloc` hands out fresh heap blocks of `len` bytes.
                unsafe { self.ring.read_raw(pos, dst, len) };
                chunks.push((dst, len));
                pos += len as u64;
            }
            if pos == head {
                return Ok(chunks);
            }
            if pos != end {
                // `alloc` refused part-way. A framed stream is cut at the
                // last frame end before where it stopped: the chunks past
                // it go back to `release`, the one across it is shortened.
                let cut = self.read_end(head, pos).unwrap_or(head);
                let mut at = head;
                chunks.retain_mut(|(block, len)| {
                    let keep = cut.saturating_sub(at).min(*len as u64) as usize;
                    at += *len as u64;
                    if keep == 0 {
                        release(*block);
                    }
                    *len = keep;
                    keep > 0
                });
                pos = cut;
                if pos == head {
                    return Ok(chunks);
                }
            }
            // Counted only when it takes bytes (see `read_bytes`).
            let _inside = Inside::enter(self.header.readers());
            self.publish(Role::Reader, head, pos, Frames::Whole(0));
            let _ = self.mirror_legacy_header(pos, tail, Some(Role::Reader));
        }
        self.wake_peers(Role::Reader);
        Ok(chunks)
    }
}

impl View<'_> {
    /// The framing of a legacy write of `parts`, followed in the caller's
    /// bytes (never read back from the ring). A write that does not start and
    /// end on frame boundaries makes the stream raw for good.
    fn writer_frames(&self, parts: &[&[u8]]) -> Frames {
        let Some(before) = self.tracker(Role::Writer) else {
            return Frames::Whole(0);
        };
        let frames = self.fed(Role::Writer, parts);
        if let Frames::Fed(after, completed) = frames {
            if !(before.is_boundary() && after.is_boundary() && completed > 0) {
                self.mark_raw_stream();
            }
        }
        frames
    }

    /// `role`'s framing state after following `parts`, and the frames they
    /// complete (`Whole(0)`, "follow the ring", on a legacy object, which
    /// keeps no framing state).
    fn fed(&self, role: Role, parts: &[&[u8]]) -> Frames {
        let Some(mut track) = self.tracker(role) else {
            return Frames::Whole(0);
        };
        let completed = parts.iter().map(|p| track.feed(p)).sum();
        Frames::Fed(track, completed)
    }

    /// Checks that consuming `len` bytes at `head` (all queued) neither
    /// splits nor merges messages of a framed stream: from a frame boundary,
    /// exactly one whole frame or exactly its 4-byte prefix (the legacy
    /// `read(4)` then `read(L)` pattern); after a prefix, exactly the rest
    /// of that frame. `Framing` otherwise, and for a descriptor frame (see
    /// `crate::side`); raw streams and legacy objects are not checked. The reader lock is held.
    fn check_whole_read(&self, head: u64, len: u64) -> Result<()> {
        if !self.stream_is_framed() {
            return Ok(());
        }
        let Some(track) = self.tracker(Role::Reader) else {
            return Ok(());
        };
        let whole = if track.is_boundary() {
            let prefix = self.ring.prefix_at(head);
            // A descriptor frame names a side object only the message calls
            // resolve: a raw read taking it would orphan that object.
            if is_descriptor(prefix) {
                return Err(Error::Framing);
            }
            len == 4 || (len > 4 && len == frame_len_of_prefix(prefix))
        } else {
            track.payload_left().map(u64::from) == Some(len)
        };
        if whole {
            Ok(())
        } else {
            Err(Error::Framing)
        }
    }

    /// Where a legacy drain from `head` that may go up to `limit` stops: at
    /// `limit` for a raw stream or a legacy object, else at the last frame
    /// end at or before it. `Framing` if not even the first frame fits.
    fn read_end(&self, head: u64, limit: u64) -> Result<u64> {
        if limit == head || !self.stream_is_framed() {
            return Ok(limit);
        }
        let Some(track) = self.tracker(Role::Reader) else {
            return Ok(limit);
        };
        // The end of the frame the reader is in.
        let mut end = match track.payload_left() {
            Some(rest) => head + u64::from(rest),
            None if track.is_boundary() && limit - head >= 4 => {
                let prefix = self.ring.prefix_at(head);
                if is_descriptor(prefix) {
                    return Err(Error::Framing);
                }
                head + frame_len_of_prefix(prefix)
            }
            None => return Err(Error::Framing),
        };
        if end > limit {
            return Err(Error::Framing);
        }
        while limit - end >= 4 {
            let prefix = self.ring.prefix_at(end);
            if is_descriptor(prefix) {
                break;
            }
            let next = end + frame_len_of_prefix(prefix);
            if next > limit {
                break;
            }
            end = next;
        }
        Ok(end)
    }
}
