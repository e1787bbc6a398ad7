//! Producers: putting framed messages, one or a batch per lock.

use super::{Frames, Role};
use crate::error::{Error, Result};
use crate::frame::frame_len;
use crate::segment::View;
use crate::sync::deadline::Wait;

/// Messages to put, in order.
pub(crate) trait Outgoing {
    fn count(&self) -> usize;
    fn message(&self, index: usize) -> &[u8];
}

impl Outgoing for [&[u8]] {
    fn count(&self) -> usize {
        self.len()
    }
    fn message(&self, index: usize) -> &[u8] {
        self[index]
    }
}

/// What one locked attempt achieved.
enum Attempt {
    /// This many messages were published.
    Sent(usize),
    /// Not even the first message fit; `head` was this.
    NoRoom(u64),
}

impl View<'_> {
    /// Puts messages in order: waits (as `wait` allows) until the first one
    /// fits, then publishes as many as fit, under one lock and with one
    /// wake-up. Returns how many were put (at least one).
    pub(crate) fn send<O: Outgoing + ?Sized>(&self, batch: &O, wait: Wait) -> Result<usize> {
        if batch.count() == 0 {
            return Err(Error::InvalidArg);
        }
        let capacity = self.ring.capacity();
        if (0..batch.count()).any(|i| !fits_ever(batch.message(i).len(), capacity)) {
            return Err(Error::TooLarge);
        }
        loop {
            match self.try_send(batch, wait)? {
                Attempt::Sent(n) => {
                    self.wake_peers(Role::Writer);
                    return Ok(n);
                }
                Attempt::NoRoom(_) if wait == Wait::Try => return Err(Error::Full),
                Attempt::NoRoom(head) => self.wait_for_room(head, wait)?,
            }
        }
    }

    fn try_send<O: Outgoing + ?Sized>(&self, batch: &O, wait: Wait) -> Result<Attempt> {
        if self.is_shut_down() {
            return Err(Error::Shutdown);
        }
        let _guard = self.lock(Role::Writer, wait)?;
        let (head, tail) = self.counters(Role::Writer)?;
        let room = self.ring.capacity() - (tail - head).min(self.ring.capacity());
        let mut pos = tail;
        let mut sent = 0;
        while sent < batch.count() {
            let msg = batch.message(sent);
            let frame = frame_len(msg.len() as u32);
            if pos - tail + frame > room {
                break;
            }
            self.ring.write(pos, &(msg.len() as u32).to_le_bytes());
            crate::failpoint::hit("writer_mid_copy");
            self.ring.write(pos + 4, msg);
            pos += frame;
            sent += 1;
        }
        if sent == 0 {
            return Ok(Attempt::NoRoom(head));
        }
        self.publish(Role::Writer, tail, pos, Frames::Whole(sent as u64), head);
        Ok(Attempt::Sent(sent))
    }
}

/// Whether a message of `len` bytes fits in an empty ring of this capacity.
pub(super) fn fits_ever(len: usize, capacity: u64) -> bool {
    u32::try_from(len).is_ok_and(|len| frame_len(len) <= capacity)
}
