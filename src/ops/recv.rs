//! Consumers: taking whole framed messages, one or a batch per lock.

use std::fs::File;

use super::wait::{batch_patience_len, PATIENT_FROM};
use super::{Frames, Role};
use crate::error::{Error, Result};
use crate::frame::{frame_len, frame_len_of_prefix, is_descriptor, payload_len};
use crate::pool::{self, Lease};
use crate::segment::View;
use crate::side::{Descriptor, MAX_DESCRIPTOR_LEN};
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

    /// Most messages this sink takes (a bound `slot` also enforces): once
    /// it has them, a get stops without looking for more, so it does not
    /// load the producers' position for a message it could not take.
    fn max_count(&self) -> usize {
        usize::MAX
    }

    /// Message number `index`, of `len` bytes, went out of line: here it is
    /// (see [`Taken`]). `None` keeps it instead of a copy (the call consumes
    /// the message); `Some(taken)` hands it back to be copied through `slot`
    /// (the default).
    fn adopt(&mut self, _index: usize, _len: u32, taken: Taken) -> Option<Taken> {
        Some(taken)
    }

    /// Whether message `index` of `len` bytes is sure to be refused, by
    /// `slot` and by `adopt` alike: then a message that went out of line is
    /// not taken from its side object or slot at all (`false` when unsure,
    /// the default).
    fn refuses(&self, _index: usize, _len: u32) -> bool {
        false
    }
}

/// A message that went out of line, as a consumer takes it.
pub(crate) enum Taken {
    /// A one-shot side object, opened read-only and checked; its name is
    /// removed once the message is consumed.
    File(File),
    /// A message in a slot of the queue's pool; the slot is freed when the
    /// lease is dropped (once the message is consumed).
    Slot(Lease),
}

/// What is left to do once the messages are consumed.
enum Done {
    /// Unlink this descriptor's side object.
    Remove(Descriptor),
    /// Free this slot (by dropping the lease).
    Free(Lease),
    /// Nothing (the sink kept the slot's lease).
    Kept,
}

/// What one locked attempt achieved.
enum Attempt {
    /// This many messages were consumed; what is left to do for those that
    /// came out of line.
    Received(usize, Vec<Done>),
    /// No whole message was queued; `tail` was this.
    Nothing(u64),
}

/// What the frame at the read position is.
enum Next {
    /// A message of this many payload bytes, in the ring.
    Inline(u32),
    /// A message that went out of line, its descriptor frame this long.
    Large(Descriptor, u64),
    /// Not a whole frame yet.
    Incomplete,
    /// No writer can have produced this frame.
    Corrupt,
}

impl Taken {
    /// Marks a slot's lease as consumed (its drop frees the slot) or not
    /// (its drop only lets go of it).
    fn settled(self, consumed: bool) -> Taken {
        match self {
            Taken::Slot(mut lease) => {
                lease.set_consumed(consumed);
                Taken::Slot(lease)
            }
            file => file,
        }
    }
}

impl View<'_> {
    /// The message descriptor `d` (at the head, reader lock held) names.
    fn take_large(&self, d: &Descriptor) -> Result<Taken> {
        let name = self.name.ok_or(Error::Corrupt)?;
        match (pool::parse_message_id(&d.id), self.pool) {
            (Some((k, gen)), Some(pool)) => pool
                .take(name, k, gen, d.len, self.queue_marks())
                .map(Taken::Slot),
            (Some(_), None) => Err(Error::Corrupt),
            (None, _) => d.open(name).map(Taken::File),
        }
    }

    /// Takes messages: waits (as `wait` allows) until one is queued, then
    /// copies out whole messages for as long as `sink` has room, under one
    /// lock and with one wake-up. Returns how many (at least one).
    ///
    /// If the first message does not fit in `sink`, nothing is consumed and
    /// the error says how many bytes it needs. Once the queue is shut down,
    /// what is queued is still handed out, then `Shutdown`.
    ///
    /// A message that went out of line (see `crate::side`) is copied from
    /// its side object under the lock, before its descriptor is consumed,
    /// and the object is removed after: a consumer killed during the copy
    /// loses nothing. A descriptor whose side object is missing or malformed
    /// is consumed and reported as `Corrupt` (that one item is lost; the
    /// next call goes on with the next one).
    pub(crate) fn recv<I: Incoming + ?Sized>(&self, sink: &mut I, wait: Wait) -> Result<usize> {
        loop {
            match self.try_recv(sink, wait)? {
                Attempt::Received(n, done) => {
                    self.wake_peers(Role::Reader);
                    if !done.is_empty() {
                        crate::failpoint::hit("side_consumed");
                    }
                    for d in done {
                        match (d, self.name) {
                            (Done::Remove(d), Some(name)) => d.remove(name),
                            (Done::Free(lease), _) => drop(lease),
                            (Done::Kept, _) | (Done::Remove(_), None) => {}
                        }
                    }
                    return Ok(n);
                }
                Attempt::Nothing(_) if wait == Wait::Try => return Err(Error::Empty),
                Attempt::Nothing(tail) => self.wait_for_messages(tail, wait)?,
            }
        }
    }

    /// The frame at `pos`, with `queued` bytes published from there.
    fn next_frame(&self, pos: u64, queued: u64) -> Next {
        if queued < 4 {
            return Next::Incomplete;
        }
        let prefix = self.ring.prefix_at(pos);
        let frame = frame_len_of_prefix(prefix);
        if !is_descriptor(prefix) {
            return match frame {
                f if f > self.ring.capacity() => Next::Corrupt,
                f if f <= queued => Next::Inline(payload_len(prefix)),
                _ => Next::Incomplete,
            };
        }
        let len = payload_len(prefix) as usize;
        if len > MAX_DESCRIPTOR_LEN || self.name.is_none() {
            return Next::Corrupt;
        }
        if frame > queued {
            return Next::Incomplete;
        }
        let mut payload = [0u8; MAX_DESCRIPTOR_LEN];
        self.ring.read(pos + 4, &mut payload[..len]);
        match Descriptor::parse(&payload[..len]) {
            Some(d) if u32::try_from(d.len).is_ok() => Next::Large(d, frame),
            _ => Next::Corrupt,
        }
    }

    fn try_recv<I: Incoming + ?Sized>(&self, sink: &mut I, wait: Wait) -> Result<Attempt> {
        // Read the flag before `tail`: a shutdown that follows a put (in any
        // process) then cannot hide that put's message from us.
        let shut_down = self.is_shut_down();
        let _guard = self.lock(Role::Reader, wait)?;
        // What is queued as far as the cached `tail` says; the real `tail`
        // is loaded only once that is used up (or ends in a partial frame).
        let (head, mut tail) = self.counters(Role::Reader)?;
        let mut refreshed = false;
        let ring = self.ring;
        let mut pos = head;
        let mut received = 0;
        let mut done = Vec::new();
        // The length of the last message taken, if it went out of line or
        // is long enough to call for patience (`View::note_received`).
        let mut patient_len = None;
        loop {
            if received > 0 && received >= sink.max_count() {
                break;
            }
            let next = match self.next_frame(pos, tail - pos) {
                Next::Incomplete if !refreshed => {
                    tail = self.refresh(Role::Reader)?.1;
                    refreshed = true;
                    continue;
                }
                Next::Incomplete if pos == tail => break,
                next => next,
            };
            match next {
                Next::Corrupt => {
                    if received == 0 {
                        return Err(Error::Corrupt);
                    }
                    break;
                }
                Next::Inline(len) => {
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
                    pos += frame_len(len);
                    received += 1;
                    patient_len = (len >= PATIENT_FROM).then_some(u64::from(len));
                }
                Next::Large(d, frame) => {
                    // Too large for this sink (Python's first try with its
                    // receive buffer): not worth taking the slot.
                    if sink.refuses(received, d.len as u32) {
                        if received == 0 {
                            return Err(Error::BufferTooSmall {
                                needed: d.len as u32,
                            });
                        }
                        break;
                    }
                    let taken = match self.take_large(&d) {
                        Ok(taken) => taken,
                        Err(e) if received == 0 => {
                            // Lost (removed by someone else): drop its
                            // descriptor so the queue goes on.
                            self.publish(Role::Reader, head, pos + frame, Frames::Whole(1));
                            return Err(e);
                        }
                        Err(_) => break,
                    };
                    let len = d.len as u32;
                    let Some(taken) = sink.adopt(received, len, taken.settled(true)) else {
                        done.push(match pool::is_message_id(&d.id) {
                            true => Done::Kept,
                            false => Done::Remove(d),
                        });
                        pos += frame;
                        received += 1;
                        patient_len = Some(u64::from(len));
                        continue;
                    };
                    // Not consumed yet: dropping it now frees nothing.
                    let taken = taken.settled(false);
                    let Some(dst) = sink.slot(received, len) else {
                        if received == 0 {
                            return Err(Error::BufferTooSmall { needed: len });
                        }
                        break;
                    };
                    match &taken {
                        // SAFETY: as above.
                        Taken::File(file) => unsafe { d.copy(file, dst)? },
                        // SAFETY: the lease covers `len` bytes; `dst` is valid
                        // for them and outside shared memory (as above).
                        Taken::Slot(lease) => unsafe {
                            std::ptr::copy_nonoverlapping(lease.as_ptr(), dst, len as usize)
                        },
                    }
                    crate::failpoint::hit("reader_mid_side_copy");
                    done.push(match taken {
                        Taken::File(_) => Done::Remove(d),
                        Taken::Slot(mut lease) => {
                            lease.set_consumed(true);
                            Done::Free(lease)
                        }
                    });
                    pos += frame;
                    received += 1;
                    patient_len = Some(u64::from(len));
                }
                // The last frame is incomplete. A legacy producer may be
                // half-way through writing it in two calls; but if the
                // writers' framing state says the stream ends on a frame
                // boundary right at `tail`, the prefix lies.
                Next::Incomplete => {
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
        self.publish(Role::Reader, head, pos, Frames::Whole(received as u64));
        // The longer of the two (None, no patience, is the least).
        self.note_received(patient_len.max(batch_patience_len(received, pos - head)));
        Ok(Attempt::Received(received, done))
    }
}
