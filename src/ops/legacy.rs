//! The legacy raw-byte calls (`ring_buffer_write`, `read`, `peek`, the two
//! batch calls). They never wait for room or data, exactly like the legacy
//! library (and wait for another process's ongoing operation only as long as
//! a try-once call does, see `Wait::lock_deadline`), but take the same locks as the message calls, so they are atomic
//! with respect to other producers (consumers) of any kind, and they feed the
//! framing trackers so message counts stay exact.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use super::Role;
use crate::error::{Error, Result};
use crate::segment::View;
use crate::sync::deadline::Wait;

/// Counts this call in the header's legacy `readers`/`writers` field for as
/// long as it lives. (A holder that dies is forgiven by the lock repair.)
struct Inside<'a>(&'a AtomicU32);

impl<'a> Inside<'a> {
    fn enter(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Relaxed);
        Inside(count)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
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
            let _inside = Inside::enter(self.header.writers());
            let (head, tail) = self.counters(Role::Writer)?;
            let used = tail - head;
            if self.ring.capacity() - used.min(self.ring.capacity()) < total {
                return Err(Error::Full);
            }
            let mut pos = tail;
            for part in parts {
                self.ring.write(pos, part);
                pos += part.len() as u64;
            }
            self.publish(Role::Writer, tail, pos, 0, head);
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
            let _inside = Inside::enter(self.header.readers());
            let (head, tail) = self.counters(Role::Reader)?;
            if tail - head < dst.len() as u64 {
                return Err(Error::Empty);
            }
            self.ring.read(head, dst);
            if !consume {
                return Ok(());
            }
            self.publish(Role::Reader, head, head + dst.len() as u64, 0, tail);
        }
        self.wake_peers(Role::Reader);
        Ok(())
    }

    /// Legacy `read_batch`: consumes everything queued, in chunks of at most
    /// `chunk` bytes, at most `max_chunks` of them, each copied to memory
    /// from `alloc` (which may refuse: then the call stops there, having
    /// consumed only what it handed out). Returns the chunks.
    pub(crate) fn read_chunks(
        &self,
        max_chunks: usize,
        chunk: usize,
        alloc: &mut dyn FnMut(usize) -> Option<*mut u8>,
    ) -> Result<Vec<(*mut u8, usize)>> {
        let mut chunks = Vec::new();
        {
            let _guard = self.lock(Role::Reader, Wait::Try)?;
            let _inside = Inside::enter(self.header.readers());
            let (head, tail) = self.counters(Role::Reader)?;
            let mut pos = head;
            while chunks.len() < max_chunks && pos < tail {
                let len = (tail - pos).min(chunk as u64) as usize;
                let Some(dst) = alloc(len) else { break };
                // SAFETY: `alloc` hands out fresh heap blocks of `len` bytes.
                unsafe { self.ring.read_raw(pos, dst, len) };
                chunks.push((dst, len));
                pos += len as u64;
            }
            if pos == head {
                return Ok(chunks);
            }
            self.publish(Role::Reader, head, pos, 0, tail);
        }
        self.wake_peers(Role::Reader);
        Ok(chunks)
    }
}
