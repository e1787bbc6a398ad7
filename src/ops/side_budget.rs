//! Backpressure for messages that go out of line. The ring holds only their
//! descriptors (tens of bytes each), so a full ring would stop a producer
//! of large messages only after thousands of them, each one a side object
//! in `/dev/shm`: a producer faster than its consumer filled `/dev/shm`
//! (300 messages of 1 MiB put in 0.16 s into a 1 MiB queue nobody read,
//! 302 MiB in 301 objects; its ring had room for about 17,000), until every
//! user of `/dev/shm` on the machine failed. So a message goes out of line
//! only while the out-of-line messages queued before it, and it, stay
//! within [`SIDE_BUDGET`] bytes (or it is the only one queued); otherwise
//! its producer waits for the consumers as it would for a full ring.
//! Messages consumers have taken do not count, even while they hold them
//! (a lease): only a consumer can free those, so waiting for them could
//! wait for ever.

use super::Role;
use crate::error::{Error, Result};
use crate::pool::POOL_BYTES;
use crate::segment::View;
use crate::sync::deadline::Wait;

/// Bytes of out-of-line messages a queue holds queued at most (beyond one
/// message alone): its pool's bytes, so that a consumer that keeps up
/// leaves the pool enough for every message in flight.
pub(crate) const SIDE_BUDGET: u64 = POOL_BYTES;
/// Frames a producer looks at, at most, to add up the queued out-of-line
/// messages: beyond them it goes ahead (a queue holding that many frames is
/// mostly small messages, which the ring bounds).
const MAX_WALK: usize = 4096;

impl View<'_> {
    /// Waits, as `wait` allows, until a message of `len` bytes may go out of
    /// line (see the module's documentation). `Full` for a try-once call,
    /// `Timeout`, `Shutdown`.
    pub(super) fn wait_for_side_room(&self, len: u64, wait: Wait) -> Result<()> {
        loop {
            if self.is_shut_down() {
                return Err(Error::Shutdown);
            }
            let (head, queued) = self.queued_side_bytes(wait)?;
            if queued == 0 || queued.saturating_add(len) <= SIDE_BUDGET {
                return Ok(());
            }
            if wait == Wait::Try {
                return Err(Error::Full);
            }
            // A consumer that takes a message moves `head`.
            self.wait_for_room(head, wait)?;
        }
    }

    /// `head`, and the bytes of the out-of-line messages whose descriptors
    /// are queued from it (counted up to a little past [`SIDE_BUDGET`], over
    /// at most [`MAX_WALK`] frames). Under the writer lock, so that no
    /// producer writes over the frames while they are read.
    fn queued_side_bytes(&self, wait: Wait) -> Result<(u64, u64)> {
        let _guard = self.lock(Role::Writer, wait)?;
        let (head, tail) = self.refresh(Role::Writer)?;
        let mut queued = 0u64;
        self.for_each_queued_descriptor(head, tail, MAX_WALK, |d| {
            queued = queued.saturating_add(d.len);
            queued <= SIDE_BUDGET
        });
        Ok((head, queued))
    }
}
