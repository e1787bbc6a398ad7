//! The data area: a power-of-two array of bytes addressed by the ever-growing
//! byte counters `head` and `tail` (the header's on a legacy object, the
//! extension block's position lines on a version-2 one). Every index is masked, so no
//! value read from shared memory can make an access leave the data area.

use std::ptr;
use std::sync::atomic::AtomicU64;

use crate::error::{Error, Result};

/// The ring's bytes and its two counters.
#[derive(Clone, Copy)]
pub(crate) struct Ring<'a> {
    data: *mut u8,
    size: u64,
    /// Total bytes ever consumed; stored (Release) only by the reader-lock
    /// holder after it copied them out.
    pub(crate) head: &'a AtomicU64,
    /// Total bytes ever published; stored (Release) only by the writer-lock
    /// holder after it copied them in.
    pub(crate) tail: &'a AtomicU64,
}

impl<'a> Ring<'a> {
    /// # Safety
    /// `data` must be valid for reads and writes of `size` bytes for `'a`,
    /// and `size` must be a power of two.
    pub(crate) unsafe fn new(
        data: *mut u8,
        size: u32,
        head: &'a AtomicU64,
        tail: &'a AtomicU64,
    ) -> Self {
        debug_assert!(size.is_power_of_two());
        Ring {
            data,
            size: u64::from(size),
            head,
            tail,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Most bytes that may be queued at once: one byte always stays free, as
    /// in the legacy library, whose `available_write` is `size - used - 1`.
    pub(crate) fn capacity(&self) -> u64 {
        self.size - 1
    }

    /// Bytes queued between two counter values, or `Corrupt` when the pair
    /// cannot have been produced by a well-behaved queue.
    pub(crate) fn used(&self, head: u64, tail: u64) -> Result<u64> {
        match tail.checked_sub(head) {
            Some(used) if used <= self.size => Ok(used),
            _ => Err(Error::Corrupt),
        }
    }

    /// The (at most two) contiguous pieces of `len` bytes from stream
    /// position `pos`: (offset, length) pairs inside the data area.
    fn pieces(&self, pos: u64, len: usize) -> [(usize, usize); 2] {
        assert!(len as u64 <= self.size, "ring access larger than the ring");
        let start = (pos & (self.size - 1)) as usize;
        let first = len.min(self.size as usize - start);
        [(start, first), (0, len - first)]
    }

    /// Copies `src` into the ring at stream position `pos`. The caller holds
    /// the writer lock and owns `[pos, pos + src.len())` (free space).
    pub(crate) fn write(&self, pos: u64, src: &[u8]) {
        let mut done = 0;
        for (offset, len) in self.pieces(pos, src.len()) {
            if len == 0 {
                continue;
            }
            // SAFETY: `pieces` keeps offset + len within the `size` bytes of
            // `data` (contract of `new`); `src` is a distinct local buffer.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr().add(done), self.data.add(offset), len) };
            done += len;
        }
    }

    /// Copies `len` bytes from stream position `pos` to `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes (it may be NULL when
    /// `len` is 0) and must not overlap the data area.
    pub(crate) unsafe fn read_raw(&self, pos: u64, dst: *mut u8, len: usize) {
        let mut done = 0;
        for (offset, piece) in self.pieces(pos, len) {
            if piece == 0 {
                // Nothing to copy, and `dst` may be NULL for an empty message.
                continue;
            }
            // SAFETY: the source stays within the data area (`pieces`), the
            // destination within the caller's `len` bytes.
            unsafe { ptr::copy_nonoverlapping(self.data.add(offset), dst.add(done), piece) };
            done += piece;
        }
    }

    /// Copies `dst.len()` bytes from stream position `pos` into `dst`.
    pub(crate) fn read(&self, pos: u64, dst: &mut [u8]) {
        // SAFETY: `dst` is a live exclusive buffer of that length, outside the
        // shared mapping (it is a Rust `&mut`, never shared memory).
        unsafe { self.read_raw(pos, dst.as_mut_ptr(), dst.len()) }
    }

    /// The 4-byte little-endian length prefix at stream position `pos`.
    pub(crate) fn prefix_at(&self, pos: u64) -> u32 {
        let mut bytes = [0u8; 4];
        self.read(pos, &mut bytes);
        u32::from_le_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a ring over a 16-byte heap buffer, then returns the
    /// buffer (read only after the ring's last use, never while it writes).
    fn with_ring(f: impl FnOnce(Ring<'_>)) -> Vec<u8> {
        let mut data = vec![0u8; 16];
        let (head, tail) = (AtomicU64::new(0), AtomicU64::new(0));
        // SAFETY: `data` holds 16 bytes and outlives the ring, which is the
        // only thing that touches it until `f` returns.
        f(unsafe { Ring::new(data.as_mut_ptr(), 16, &head, &tail) });
        data
    }

    #[test]
    fn copies_wrap_around_the_end() {
        let data = with_ring(|ring| {
            ring.write(13, b"abcdefg");
            let mut out = [0u8; 7];
            ring.read(13 + 16 * 5, &mut out);
            assert_eq!(&out, b"abcdefg");
        });
        assert_eq!(&data[13..], b"abc");
        assert_eq!(&data[..4], b"defg");
    }

    #[test]
    fn used_rejects_impossible_counters() {
        with_ring(|ring| {
            assert_eq!(ring.used(5, 21), Ok(16));
            assert_eq!(ring.used(5, 22), Err(Error::Corrupt));
            assert_eq!(ring.used(6, 5), Err(Error::Corrupt));
        });
    }

    #[test]
    #[should_panic(expected = "larger than the ring")]
    fn oversized_access_panics_instead_of_overflowing() {
        with_ring(|ring| ring.write(0, &[0u8; 17]));
    }
}
