//! Where message boundaries fall in the ring's byte stream.
//!
//! Messages are framed as a 4-byte little-endian length and that many bytes.
//! New calls move whole frames, but the legacy `ring_buffer_write`/`read`
//! move raw bytes (a legacy producer may write a prefix and its payload in
//! two calls). Each side of the queue keeps a [`Tracker`] that follows the
//! frames through every byte it moves, so message counts stay exact whichever
//! API moved the bytes. A descriptor frame (bit 31 of the length set, see
//! `crate::side`) never reaches a tracker: the message calls publish whole
//! frames from a frame boundary (nothing is fed), the raw calls refuse to
//! move descriptors, and a stream a raw write left between frames carries
//! none.

use crate::layout::RING_BUFFER_FRAME_PREFIX;
use crate::side::DESCRIPTOR_FLAG;

/// Bytes a message of `len` payload bytes occupies in the ring.
pub(crate) const fn frame_len(len: u32) -> u64 {
    RING_BUFFER_FRAME_PREFIX as u64 + len as u64
}

/// Payload bytes of the frame whose length prefix is `prefix`: bit 31 marks
/// a descriptor frame (see `crate::side`) and is not part of the length.
pub(crate) const fn payload_len(prefix: u32) -> u32 {
    prefix & !DESCRIPTOR_FLAG
}

/// Bytes in the ring of the frame whose length prefix is `prefix`.
pub(crate) const fn frame_len_of_prefix(prefix: u32) -> u64 {
    frame_len(payload_len(prefix))
}

/// Whether the frame whose length prefix is `prefix` is a descriptor.
pub(crate) const fn is_descriptor(prefix: u32) -> bool {
    prefix & DESCRIPTOR_FLAG != 0
}

/// Position inside the framed byte stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tracker {
    /// Payload bytes still to come in the current frame.
    frame_left: u32,
    /// Prefix bytes seen so far of the next frame (0..=3) ...
    have: u8,
    /// ... and their values.
    prefix: [u8; 3],
}

impl Tracker {
    /// Between two frames.
    pub(crate) const BOUNDARY: Tracker = Tracker {
        frame_left: 0,
        have: 0,
        prefix: [0; 3],
    };

    pub(crate) fn is_boundary(self) -> bool {
        self == Tracker::BOUNDARY
    }

    /// Payload bytes still to come in the current frame, once its whole
    /// prefix has been seen and some payload remains.
    pub(crate) fn payload_left(self) -> Option<u32> {
        (self.have == 0 && self.frame_left > 0).then_some(self.frame_left)
    }

    /// Packs the state into the shared 64-bit word.
    pub(crate) fn pack(self) -> u64 {
        u64::from(self.frame_left)
            | u64::from(self.prefix[0]) << 32
            | u64::from(self.prefix[1]) << 40
            | u64::from(self.prefix[2]) << 48
            | u64::from(self.have) << 56
    }

    /// Unpacks a shared word; any value gives a usable state (the word is
    /// shared memory and may hold anything).
    pub(crate) fn unpack(word: u64) -> Tracker {
        Tracker {
            frame_left: word as u32,
            prefix: [(word >> 32) as u8, (word >> 40) as u8, (word >> 48) as u8],
            have: ((word >> 56) & 3) as u8,
        }
    }

    /// Follows `bytes` of the stream; returns how many frames they completed.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut completed = 0;
        while !bytes.is_empty() {
            if self.frame_left > 0 {
                let take = bytes.len().min(self.frame_left as usize);
                self.frame_left -= take as u32;
                bytes = &bytes[take..];
                if self.frame_left == 0 {
                    completed += 1;
                }
            } else if self.have == 3 {
                let len =
                    u32::from_le_bytes([self.prefix[0], self.prefix[1], self.prefix[2], bytes[0]]);
                bytes = &bytes[1..];
                *self = Tracker::BOUNDARY;
                if len == 0 {
                    completed += 1;
                } else {
                    self.frame_left = len;
                }
            } else if self.have == 0 && bytes.len() >= 4 {
                // Fast path: a whole prefix at once.
                let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                bytes = &bytes[4..];
                if len == 0 {
                    completed += 1;
                } else {
                    self.frame_left = len;
                }
            } else {
                self.prefix[self.have as usize] = bytes[0];
                self.have += 1;
                bytes = &bytes[1..];
            }
        }
        completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn counts_frames_however_the_stream_is_cut() {
        let stream = framed(&[b"hello", b"", b"x", &[7u8; 300]]);
        for cut in 1..stream.len() {
            let mut t = Tracker::BOUNDARY;
            let mut n = 0;
            for chunk in stream.chunks(cut) {
                n += t.feed(chunk);
                t = Tracker::unpack(t.pack());
            }
            assert_eq!(n, 4, "chunks of {cut}");
            assert!(t.is_boundary());
        }
    }

    #[test]
    fn partial_frames_are_not_counted() {
        let stream = framed(&[b"abc"]);
        let mut t = Tracker::BOUNDARY;
        assert_eq!(t.feed(&stream[..6]), 0);
        assert!(!t.is_boundary());
        assert_eq!(t.feed(&stream[6..]), 1);
        assert!(t.is_boundary());
    }

    #[test]
    fn any_word_unpacks_and_round_trips() {
        for w in [0, u64::MAX, 0x0300_0000_0000_0001, 0x1234_5678_9abc_def0] {
            let t = Tracker::unpack(w);
            assert_eq!(Tracker::unpack(t.pack()), t);
        }
    }
}
