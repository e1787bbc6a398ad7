//! Waiting until a get or a put could succeed, without consuming or
//! reserving anything: what an event loop's waiter thread blocks in, so that
//! the item itself is taken later by a try-once call on the loop's thread
//! (a cancelled waiter then has taken nothing). Same futexes, sleeper flags
//! and statistics as the blocking calls (see `wait`).
//!
//! Both answers are snapshots: another consumer (producer) may take the
//! message (room) before the caller acts on it, so callers retry.

use std::sync::atomic::Ordering::Acquire;

use super::send::fits_ever;
use super::Role;
use crate::error::{Error, Result};
use crate::frame::frame_len;
use crate::segment::View;
use crate::side::MAX_DESCRIPTOR_LEN;
use crate::sync::deadline::Wait;

impl View<'_> {
    /// Waits (as `wait` allows) until at least one whole message is queued.
    /// `Shutdown` once the queue is shut down and drained (as a get would
    /// answer); `Timeout` when the deadline passes first, at once for
    /// [`Wait::Try`].
    pub(crate) fn wait_readable(&self, wait: Wait) -> Result<()> {
        // Impossible counters are `Corrupt` here as in a get (the message
        // counts alone would not show them).
        let readable = || -> Result<bool> {
            self.available_read()?;
            Ok(self.msg_count()? > 0)
        };
        let queued = || readable().unwrap_or(true);
        loop {
            // The flag before the count, as in `try_recv`: a shutdown that
            // follows a put cannot hide that put's message.
            let shut_down = self.is_shut_down();
            let seen = self.ring.tail.load(Acquire);
            if readable()? {
                return Ok(());
            }
            if shut_down {
                return Err(Error::Shutdown);
            }
            if wait == Wait::Try {
                return Err(Error::Timeout);
            }
            // An error counts as ready: the next round reports it.
            let ready = || self.is_shut_down() || queued();
            self.wait_until(Role::Reader, ready, (self.ring.tail, seen), wait)?;
        }
    }

    /// Waits (as `wait` allows) until a message of `len` bytes fits now.
    /// A message longer than the ring goes out of line (`crate::side`): it
    /// needs room for its descriptor frame only. `TooLarge` at once if it can
    /// go nowhere (a queue that cannot carry descriptors), `Shutdown` once
    /// the queue is shut down (a put would fail), `Timeout` when the
    /// deadline passes first, at once for [`Wait::Try`].
    pub(crate) fn wait_writable(&self, len: u32, wait: Wait) -> Result<()> {
        let frame = if fits_ever(len as usize, self.ring.capacity()) {
            frame_len(len)
        } else if self.name.is_some() && self.stream_is_framed() {
            frame_len(MAX_DESCRIPTOR_LEN as u32)
        } else {
            return Err(Error::TooLarge);
        };
        // The same room a put computes (`try_send`).
        let fits = || {
            self.available_write()
                .map_or(true, |room| u64::from(room) >= frame)
        };
        loop {
            if self.is_shut_down() {
                return Err(Error::Shutdown);
            }
            let seen = self.ring.head.load(Acquire);
            if u64::from(self.available_write()?) >= frame {
                return Ok(());
            }
            if wait == Wait::Try {
                return Err(Error::Timeout);
            }
            let ready = || self.is_shut_down() || fits();
            self.wait_until(Role::Writer, ready, (self.ring.head, seen), wait)?;
        }
    }
}
