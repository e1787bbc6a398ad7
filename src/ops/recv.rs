//! Consumers: taking whole framed messages, one or a batch per lock.

use super::{Frames, Role};
use crate::error::{Error, Result};
use crate::frame::frame_len;
use crate::segment::View;
use crate::sync::deadline::Wait;

/// Where received messages go.
///
/// # Safety
/// A pointer returned by `slot` must be valid for writes of `len` bytes and
/// must not point into the queue's mapping.
pub(crate) unsafe trait Incoming {
    /// Destination for message number `index` (0-based within this call) of
    /// `len` bytes, or `None` to stop before it (no room left, batch full).
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8>;
}

/// What one locked attempt achieved.
enum Attempt {
    /// This many messages were consumed.
    Received(usize),
    /// No whole message was queued; `tail` was this.
    Nothing(u64),
}

impl View<'_> {
    /// Takes messages: waits (as `wait` allows) until one is queued, then
    /// copies out whole messages for as long as `sink` has room, under one
    /// lock and with one wake-up. Returns how many (at least one).
    ///
    /// If the first message does not fit in `sink`, nothing is consumed and
    /// the error says how many bytes it needs. Once the queue is shut down,
    /// what is queued is still handed out, then `Shutdown`.
    pub(crate) fn recv<I: Incoming + ?Sized>(&self, sink: &mut I, wait: Wait) -> Result<usize> {
        loop {
            match self.try_recv(sink, wait)? {
                Attempt::Received(n) => {
                    self.wake_peers(Role::Reader);
                    return Ok(n);
                }
                Attempt::Nothing(_) if wait == Wait::Try => return Err(Error::Empty),
                Attempt::Nothing(tail) => self.wait_for_messages(tail, wait)?,
            }
        }
    }

    fn try_recv<I: Incoming + ?Sized>(&self, sink: &mut I, wait: Wait) -> Result<Attempt> {
        // Read the flag before `tail`: a shutdown that follows a put (in any
        // process) then cannot hide that put's message from us.
        let shut_down = self.is_shut_down();
        let _guard = self.lock(Role::Reader, wait)?;
        let (head, tail) = self.counters(Role::Reader)?;
        let ring = self.ring;
        let mut pos = head;
        let mut received = 0;
        while pos < tail {
            let queued = tail - pos;
            let frame = (queued >= 4).then(|| frame_len(ring.prefix_at(pos)));
            match frame {
                // No writer can have produced this frame.
                Some(frame) if frame > ring.capacity() => {
                    if received == 0 {
                        return Err(Error::Corrupt);
                    }
                    break;
                }
                Some(frame) if frame <= queued => {
                    let len = (frame - 4) as u32;
                    let Some(dst) = sink.slot(received, len) else {
                        if received == 0 {
                            return Err(Error::BufferTooSmall { needed: len });
                        }
                        break;
                    };
                    // SAFETY: `slot`'s contract makes `dst` valid for `len`
                    // bytes and outside the mapping.
                    unsafe { ring.read_raw(pos + 4, dst, len as usize) };
                    crate::failpoint::hit("reader_mid_copy");
                    pos += frame;
                    received += 1;
                }
                // The last frame is incomplete. A legacy producer may be
                // half-way through writing it in two calls; but if the
                // writers' framing state says the stream ends on a frame
                // boundary right at `tail`, the prefix lies.
                _ => {
                    if received == 0 && self.writer_ends_on_frame(tail) {
                        return Err(Error::Corrupt);
                    }
                    break;
                }
            }
        }
        if received == 0 {
            return if shut_down {
                Err(Error::Shutdown)
            } else {
                Ok(Attempt::Nothing(tail))
            };
        }
        self.publish(
            Role::Reader,
            head,
            pos,
            Frames::Whole(received as u64),
            tail,
        );
        Ok(Attempt::Received(received))
    }
}
