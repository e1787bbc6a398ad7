//! Walking the frames queued between two positions for the descriptors of
//! the messages that went out of line: which side objects they name
//! (reclaim) and how many bytes they hold (the out-of-line budget).

use crate::frame::{frame_len_of_prefix, is_descriptor, payload_len};
use crate::segment::View;
use crate::side::{Descriptor, MAX_DESCRIPTOR_LEN};

impl View<'_> {
    /// Calls `each` with every descriptor queued in `[from, to)`, in order,
    /// until it returns `false`, the frames end (a frame longer than what is
    /// left), or `max_frames` frames were looked at. A descriptor frame that
    /// does not parse is passed over. The caller holds the reader or the
    /// writer lock: either keeps these frames from being written over (a
    /// writer only writes where a reader has moved `head` past).
    pub(super) fn for_each_queued_descriptor(
        &self,
        from: u64,
        to: u64,
        max_frames: usize,
        mut each: impl FnMut(Descriptor) -> bool,
    ) {
        let mut pos = from;
        let mut payload = [0u8; MAX_DESCRIPTOR_LEN];
        for _ in 0..max_frames {
            if to.saturating_sub(pos) < 4 {
                return;
            }
            let prefix = self.ring.prefix_at(pos);
            let frame = frame_len_of_prefix(prefix);
            if frame > to - pos {
                return;
            }
            let len = payload_len(prefix) as usize;
            if is_descriptor(prefix) && len <= MAX_DESCRIPTOR_LEN {
                self.ring.read(pos + 4, &mut payload[..len]);
                if let Some(d) = Descriptor::parse(&payload[..len]) {
                    if !each(d) {
                        return;
                    }
                }
            }
            pos += frame;
        }
    }
}
