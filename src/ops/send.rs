//! Producers: putting framed messages, one or a batch per lock.

use super::{Frames, Role};
use crate::error::{Error, Result};
use crate::frame::frame_len;
use crate::layout::RING_BUFFER_POOLED_FROM;
use crate::pool::Claim;
use crate::segment::View;
use crate::side::{Outbound, DESCRIPTOR_FLAG, MAX_DESCRIPTOR_LEN};
use crate::sync::deadline::Wait;

/// Messages to put, in order.
pub(crate) trait Outgoing {
    fn count(&self) -> usize;
    /// Bytes of message `index`.
    fn len_of(&self, index: usize) -> usize;
    /// Hands the bytes of message `index` to `put`, in one or more parts
    /// (as many as `len_of` says, in order).
    fn parts(&self, index: usize, put: &mut dyn FnMut(&[u8]));
}

impl Outgoing for [&[u8]] {
    fn count(&self) -> usize {
        self.len()
    }
    fn len_of(&self, index: usize) -> usize {
        self[index].len()
    }
    fn parts(&self, index: usize, put: &mut dyn FnMut(&[u8])) {
        put(self[index])
    }
}

/// One message given as parts to write back to back, never joined in memory
/// (`ring_buffer_put_msgv`): each byte is copied once, into the ring or the
/// message's side object.
pub(crate) struct Gathered<'a> {
    pub(crate) parts: &'a [&'a [u8]],
    /// The parts' total.
    pub(crate) len: usize,
}

impl Outgoing for Gathered<'_> {
    fn count(&self) -> usize {
        1
    }
    fn len_of(&self, _index: usize) -> usize {
        self.len
    }
    fn parts(&self, _index: usize, put: &mut dyn FnMut(&[u8])) {
        for part in self.parts {
            put(part);
        }
    }
}

/// Medium messages (see the constant) go into a free slot of the queue's
/// pool from handles that ask for it. In the ring, the consumer copies
/// every byte out, line by line from the producer's core, and a ring of a
/// few such messages makes its two sides wait for each other. Measured
/// 1 -> 1 process, Python arrays (leased, no copy, from a slot) in the
/// default 1 MiB ring, in the ring and through the pool: 32 KiB 62-225k and
/// 94k items/s; 64 KiB 55-146k (the machine's state) and 93-113k; 128 KiB
/// 18-31k and 92-97k; 256 KiB 23k and 87-90k; 512 KiB (one message fills
/// the ring) 4k and 51-54k.
const POOLED_FROM: usize = RING_BUFFER_POOLED_FROM as usize;

/// What one locked attempt achieved.
enum Attempt {
    /// This many messages were published.
    Sent(usize),
    /// Not even the first message fit; `head` was this, and this many
    /// bytes were queued from it.
    NoRoom { head: u64, queued: u64 },
}

impl View<'_> {
    /// Puts messages in order: waits (as `wait` allows) until the first one
    /// fits, then publishes as many as fit, under one lock and with one
    /// wake-up. Returns how many were put (at least one).
    ///
    /// A message longer than the ring goes out of line (see `crate::side`):
    /// alone if it comes first, else the batch stops before it (the caller
    /// puts the rest with its next call, as with a full ring).
    pub(crate) fn send<O: Outgoing + ?Sized>(&self, batch: &O, wait: Wait) -> Result<usize> {
        if batch.count() == 0 {
            return Err(Error::InvalidArg);
        }
        let capacity = self.ring.capacity();
        let out_of_line = self.name.is_some() && self.stream_is_framed();
        // (Asked only of medium messages: small ones skip the pool's flag.)
        let pooled = || out_of_line && self.pool.is_some_and(|pool| pool.takes_medium());
        let first_large = (0..batch.count()).find(|&i| {
            let len = batch.len_of(i);
            !fits_ever(len, capacity) || (len >= POOLED_FROM && pooled())
        });
        // A batch with a message that can go nowhere puts nothing.
        let impossible = |i: usize| {
            let len = batch.len_of(i);
            !fits_ever(len, capacity) && (!out_of_line || u32::try_from(len).is_err())
        };
        if first_large.is_some() && (0..batch.count()).any(impossible) {
            return Err(Error::TooLarge);
        }
        match first_large {
            Some(0) if fits_ever(batch.len_of(0), capacity) => self.send_pooled(batch, wait),
            Some(0) => self.send_large(batch, wait).map(|()| 1),
            Some(k) => self.send_frames(batch, k, 0, wait),
            None => self.send_frames(batch, batch.count(), 0, wait),
        }
    }

    /// Puts one medium message (of [`POOLED_FROM`] bytes or more, that fits
    /// in the ring): into a free slot of the queue's pool (its descriptor
    /// through the ring, as `send_large` does), else in the ring. Never a
    /// one-shot side object: what such messages hold of `/dev/shm` stays
    /// within the pool. With every slot busy it waits for one as a message
    /// longer than the ring does (`Pool::put`: briefly, and not again until
    /// a claim succeeds, so consumers that keep what they received cost one
    /// wait): a consumer that fell behind frees one soon, while messages in
    /// the ring would cost it a copy more each and keep it behind. (A
    /// consumer paused for 50 ms in a 256 KiB stream took 7,994-7,996 of
    /// 8,000 items lent with the wait, 7,969-7,992 without it, at the same
    /// rate.)
    fn send_pooled<O: Outgoing + ?Sized>(&self, msg: &O, wait: Wait) -> Result<usize> {
        // (A try-once call that cannot put a descriptor now gets `Full`
        // from `send_frames`, with nothing copied into a slot.)
        let claim = match (self.name, self.pool) {
            (Some(name), Some(pool)) if self.descriptor_may_fit(wait)? => {
                pool.put(name, msg, 0, wait != Wait::Try, self.queue_marks())
            }
            _ => None,
        };
        match claim {
            Some(claim) => self.publish_claim(claim, wait).map(|()| 1),
            None => self.send_frames(msg, 1, 0, wait),
        }
    }

    /// Whether a message that goes out of line is worth copying out: not
    /// for a try-once call that cannot put its descriptor now (checked
    /// again, under the lock, when it is put).
    fn descriptor_may_fit(&self, wait: Wait) -> Result<bool> {
        Ok(wait != Wait::Try
            || u64::from(self.available_write()?) >= frame_len(MAX_DESCRIPTOR_LEN as u32))
    }

    /// Publishes the descriptor of the message `claim` holds in a slot of
    /// the pool, or frees the slot if it cannot (full, timeout, shutdown).
    fn publish_claim(&self, claim: Claim, wait: Wait) -> Result<()> {
        let descriptor = claim.descriptor();
        // On an error the claim's drop frees the slot.
        self.send_frames(&[&descriptor[..]][..], 1, DESCRIPTOR_FLAG, wait)?;
        claim.published();
        crate::failpoint::hit("slot_published");
        Ok(())
    }

    /// Puts one message longer than the ring: its bytes into a free slot of
    /// the queue's pool (see `crate::pool`) or a side object, then its
    /// descriptor through the ring. The side object is complete and
    /// named before the descriptor is published, and this process's `flock`
    /// on it (which marks it "not an orphan") ends only after; if the
    /// descriptor cannot be published (full, timeout, shutdown) the object
    /// is removed. `TooLarge` if `/dev/shm` cannot hold the message, or on a
    /// queue that cannot carry descriptors (a legacy object, a raw stream).
    fn send_large<O: Outgoing + ?Sized>(&self, msg: &O, wait: Wait) -> Result<()> {
        // Receivers take lengths as u32 (the C API's `out_len`); `send`
        // checked both.
        let Some(name) = self.name.filter(|_| self.stream_is_framed()) else {
            return Err(Error::TooLarge);
        };
        if self.is_shut_down() {
            return Err(Error::Shutdown);
        }
        if !self.descriptor_may_fit(wait)? {
            return Err(Error::Full);
        }
        // Nor while the out-of-line messages queued are over their budget.
        self.wait_for_side_room(msg.len_of(0) as u64, wait)?;
        // A free slot of the queue's pool first (no new pages), else a
        // side object of its own.
        let may_wait = wait != Wait::Try;
        let marks = self.queue_marks();
        if let Some(claim) = self
            .pool
            .and_then(|pool| pool.put(name, msg, 0, may_wait, marks))
        {
            return self.publish_claim(claim, wait);
        }
        let side = Outbound::create(name, msg, 0)?;
        let descriptor = side.descriptor();
        match self.send_frames(&[&descriptor[..]][..], 1, DESCRIPTOR_FLAG, wait) {
            Ok(_) => {
                crate::failpoint::hit("side_published");
                drop(side);
                Ok(())
            }
            Err(e) => {
                side.discard();
                Err(e)
            }
        }
    }

    /// Puts the first `count` messages of `batch` (each fits in the ring),
    /// with `flag` or'ed into every length prefix.
    fn send_frames<O: Outgoing + ?Sized>(
        &self,
        batch: &O,
        count: usize,
        flag: u32,
        wait: Wait,
    ) -> Result<usize> {
        loop {
            match self.try_send(batch, count, flag, wait)? {
                Attempt::Sent(n) => {
                    self.wake_peers(Role::Writer);
                    return Ok(n);
                }
                Attempt::NoRoom { .. } if wait == Wait::Try => return Err(Error::Full),
                Attempt::NoRoom { head, queued } => {
                    self.let_consumers_drain(queued, wait);
                    self.wait_for_room(head, wait)?
                }
            }
        }
    }

    fn try_send<O: Outgoing + ?Sized>(
        &self,
        batch: &O,
        count: usize,
        flag: u32,
        wait: Wait,
    ) -> Result<Attempt> {
        if self.is_shut_down() {
            return Err(Error::Shutdown);
        }
        let _guard = self.lock(Role::Writer, wait)?;
        let capacity = self.ring.capacity();
        // Room as far as the cached `head` says; the real `head` is loaded
        // only when that is not enough for the next message.
        let (mut head, tail) = self.counters(Role::Writer)?;
        let mut refreshed = false;
        let mut pos = tail;
        let mut sent = 0;
        while sent < count {
            let len = batch.len_of(sent) as u32;
            let frame = frame_len(len);
            if pos - head + frame > capacity {
                if refreshed {
                    break;
                }
                head = self.refresh(Role::Writer)?.0;
                refreshed = true;
                continue;
            }
            self.ring.write(pos, &(len | flag).to_le_bytes());
            crate::failpoint::hit("writer_mid_copy");
            let mut at = pos + 4;
            batch.parts(sent, &mut |part| {
                self.ring.write(at, part);
                at += part.len() as u64;
            });
            debug_assert_eq!(at, pos + frame);
            pos += frame;
            sent += 1;
        }
        if sent == 0 {
            return Ok(Attempt::NoRoom {
                head,
                queued: tail - head,
            });
        }
        self.publish(Role::Writer, tail, pos, Frames::Whole(sent as u64));
        Ok(Attempt::Sent(sent))
    }
}

/// Whether a message of `len` bytes fits in an empty ring of this capacity.
pub(super) fn fits_ever(len: usize, capacity: u64) -> bool {
    u32::try_from(len).is_ok_and(|len| frame_len(len) <= capacity)
}
