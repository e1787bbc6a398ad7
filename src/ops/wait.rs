//! Waiting for room or for messages: a short spin, then sleep on a shared
//! futex. Producers and consumers issue a wake-up only when the other side
//! has a sleeper, so a streaming queue makes no system calls at all. A
//! consumer whose last message went out of line, or was a large one in the
//! ring, or who took a batch, yields a while longer before it sleeps
//! ([`View::note_received`]): the next such message (or batch) is usually
//! a copy's (or a batch's making) time away, and a sleeping consumer costs
//! its producer a wake-up. A producer that finds no room first keeps off
//! the consumers' position for a while ([`View::let_consumers_drain`]),
//! then waits the same way.
//!
//! The sleep protocol is Dekker-style. A sleeper reads the sequence word,
//! raises the "wanted" flag, issues a store-load fence, re-checks the counter
//! it waits on, and only then sleeps on the sequence word. A waker publishes
//! its counter, issues a store-load fence, and reads the flag. The fences are
//! asymmetric ([`crate::sync::barrier`]): the waker's, on every publication,
//! is a compiler fence where the kernel offers expedited membarriers, and
//! the sleeper's, only before it sleeps, a membarrier that serves both.
//! Either the waker sees the flag,
//! clears it and bumps the sequence word (so the sleeper's futex wait returns
//! at once or is woken), or the sleeper's re-check sees the new counter and
//! does not sleep. Only the waker that clears the flag makes the system call,
//! so a sleeper that takes a while to get scheduled again does not turn every
//! publication in the meantime into a wake-up. Sleeper counts are kept for
//! the statistics only.
//!
//! The handshake itself ([`sleep_unless`], [`wake_sleepers`],
//! [`shut_down`]) works on the extension block alone, so that the loom
//! models (`loom_models.rs`, `make test-loom`) run this very code.

use std::hint::spin_loop;
// The header's counters: std atomics whatever the build (see crate::sync::atomic).
use std::sync::atomic::AtomicU64 as HeaderWord;

use super::Role;
use crate::error::{Error, Result};
use crate::layout::Extension;
use crate::segment::View;
use crate::sync::atomic::{AtomicU32, Ordering::*};
use crate::sync::barrier;
use crate::sync::deadline::{Deadline, Wait};
use crate::sync::futex::{self, Woken};

/// Spins (with the CPU's pause hint) before yielding the CPU.
const SPINS: u32 = 256;
/// The first spins look at the awaited word after each pause: an answer
/// within a few hundred nanoseconds (a round trip) is seen at once...
const SPIN_QUICK: u32 = 32;
/// ...later ones after 2, 4, then this many pauses. Each look takes the
/// word's cache line from the other side's core, whose next store to it
/// (its next publication) then waits for the line to come back, and whose
/// next locked instruction (a lock, a reference count) waits for that
/// store: a consumer that looked after every pause for a slower producer
/// slowed that producer down (measured with `make bench-ab`, 1 -> 1 pinned,
/// 64-byte messages: 1.17x with this where the reference ring ran at
/// 16-32 M/s, 1.00x at 32-64 and 0.94-1.01x at 4-8; no change at 512 B;
/// the blocking round trip unchanged, 0.52-0.54 us).
const SPIN_STEP_MAX: u32 = 8;
/// `sched_yield` rounds before sleeping: a peer on another core usually
/// answers within these few microseconds, and on an oversubscribed machine
/// yielding lets it run.
const YIELDS: u32 = 16;
/// A consumer whose last message went out of line, or was at least
/// [`PATIENT_FROM`] bytes, keeps yielding, before it sleeps, for about as
/// long as its producer takes to write the next one (its length at this
/// many bytes per nanosecond, a memcpy's pace here with room for the
/// producer's other work)...
const PATIENCE_BYTES_PER_NS: u64 = 8;
/// ...but at most this long (a 2 MiB message's worth).
pub(super) const MAX_PATIENCE_NS: u64 = 250_000;
/// Messages in the ring of this many bytes or more call for patience too.
/// A consumer of 64 KiB arrays that slept between them fell, in 3 of 4
/// runs of one benchmark, into a state of frequent sleeps and wake-ups
/// (e.g. 751 sleeps, 1,466 wake-ups per 30,000 messages) at 58-69k
/// instead of 130-160k items/s.
pub(super) const PATIENT_FROM: u32 = 16 << 10;
/// A receive that took this many messages or more at once (a consumer
/// draining its producer's batch, as `get_many` does) calls for patience
/// too: for as long as the producer takes to make as many again (see
/// [`batch_patience_len`]). A Python consumer of `put_many` batches of
/// 256 512-byte pickles that slept between them fell, whenever the machine
/// ran both processes slower, into sleeps and wake-ups (1,700-3,500 sleeps
/// per million items, as many wake-ups) at 1.58-1.78M items/s; patient, in
/// the same state, it slept 5-41 times and moved 1.75-1.98M.
pub(super) const PATIENT_BATCH: usize = 16;
/// A producer's time per message of a batch, over and above its bytes: a
/// Python producer pickles and frames a small item in about 200 ns here.
const PATIENCE_NS_PER_MESSAGE: u64 = 256;
/// A producer that finds no room stays off the consumers' position for a
/// while before it waits for room as usual ([`View::let_consumers_drain`]):
/// for as long as a consumer as fast as a large copy here takes to take
/// half of what is queued (at this many bytes a nanosecond; 64 KiB arrays
/// moved at 10.6, measured)...
const DRAIN_BYTES_PER_NS: u64 = 16;
/// ...if that is at least this long (32 KiB queued: a smaller ring's
/// consumer is soon done, and its producer keeps the short spin)...
const MIN_DRAIN_NS: u64 = 1_024;
/// ...and at most this long (2 MiB queued).
const MAX_DRAIN_NS: u64 = 64 << 10;

/// How long [`View::let_consumers_drain`] keeps off with `queued` bytes in
/// the ring (0: not at all).
pub(super) fn drain_ns(queued: u64) -> u64 {
    match queued / DRAIN_BYTES_PER_NS / 2 {
        ns if ns < MIN_DRAIN_NS => 0,
        ns => ns.min(MAX_DRAIN_NS),
    }
}

/// Legacy objects have no sleeper counts, and legacy-library peers never
/// wake anybody: sleeps there last at most this long before re-checking.
const LEGACY_SLEEP_NS: u64 = 10_000_000;
/// A sleeper whose membarrier failed cannot rule out a missed wake-up from
/// a waker that skipped its fence (`sync::barrier`): it sleeps at most this
/// long before re-checking.
const UNFENCED_SLEEP_NS: u64 = 1_000_000;

/// The message length whose patience (see [`View::note_received`]) a
/// receive of `messages` messages in `bytes` bytes of frames calls for, if
/// it is a batch ([`PATIENT_BATCH`] messages or more): their bytes plus
/// [`PATIENCE_NS_PER_MESSAGE`] each, at [`PATIENCE_BYTES_PER_NS`].
pub(super) fn batch_patience_len(messages: usize, bytes: u64) -> Option<u64> {
    (messages >= PATIENT_BATCH).then(|| {
        let per_message = PATIENCE_NS_PER_MESSAGE * PATIENCE_BYTES_PER_NS;
        bytes.saturating_add((messages as u64).saturating_mul(per_message))
    })
}

impl View<'_> {
    /// After a consumer's receive: `large` is the length of its last message
    /// if that went out of line or was at least [`PATIENT_FROM`] bytes, or
    /// the [`batch_patience_len`] of a batch if that is longer. A
    /// consumer of large messages that sleeps between them makes its
    /// producer pay a `futex` wake-up and an IPI (the
    /// sleeper's membarrier) per message, about a fifth of a 1 MiB put here;
    /// yielding until the next one arrives, as iceoryx2's subscribers poll,
    /// spares the producer both. Small messages keep the short spin: a
    /// yielding waiter can delay a peer that shares its core. The patience
    /// belongs to the handle, so that every wait for its messages uses it:
    /// the receiving thread's, and a helper thread's non-consuming wait
    /// (`wait_readable`, as `sage_queue.aio` waits).
    pub(super) fn note_received(&self, large: Option<u64>) {
        if let Some(patience) = self.patience {
            let ns = large.map_or(0, |len| (len / PATIENCE_BYTES_PER_NS).min(MAX_PATIENCE_NS));
            // Relaxed: a hint about how long to yield, nothing more. Stored
            // only when it changes: every receive comes here, and threads
            // sharing the handle would otherwise pass its line around.
            if patience.load(Relaxed) != ns {
                patience.store(ns, Relaxed);
            }
        }
    }

    /// This handle's patience as a consumer (see [`Self::note_received`]).
    pub(super) fn patience_ns(&self) -> u64 {
        self.patience.map_or(0, |p| p.load(Relaxed))
    }

    /// Waits until `counter` moves away from `seen` (or the queue is shut
    /// down). `Err(Timeout)` once the deadline has passed.
    fn wait_for_change(
        &self,
        role: Role,
        counter: &HeaderWord,
        seen: u64,
        wait: Wait,
    ) -> Result<()> {
        let moved = || counter.load(Acquire) != seen || self.is_shut_down();
        self.wait_until(role, moved, (counter, seen), wait)
    }

    /// Waits until `ready()` holds, or at least until something it depends
    /// on may have changed: returns `Ok(())` after a wake-up even if
    /// `ready()` is still false, so callers loop. `ready` may only depend on
    /// state that the wakers of `role`'s sleepers publish before they wake
    /// (`head`/`tail`, message counts, the shutdown flag), which the sleep
    /// protocol then guarantees a sleeper sees. On a legacy object (no
    /// futex words) it sleeps on `legacy.0` while it equals `legacy.1`, for
    /// at most [`LEGACY_SLEEP_NS`]. `Err(Timeout)` once the deadline passed.
    pub(super) fn wait_until(
        &self,
        role: Role,
        ready: impl Fn() -> bool,
        legacy: (&HeaderWord, u64),
        wait: Wait,
    ) -> Result<()> {
        // Pauses between looks at `ready`: 1, then growing (`SPIN_QUICK`).
        let mut spun = 0;
        let mut step = 1;
        while spun < SPINS {
            if ready() {
                return Ok(());
            }
            for _ in 0..step {
                spin_loop();
            }
            spun += step;
            if spun >= SPIN_QUICK {
                step = (step * 2).min(SPIN_STEP_MAX);
            }
        }
        for _ in 0..YIELDS {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
            if ready() {
                return Ok(());
            }
        }
        let patience = match role {
            Role::Reader => self.patience_ns(),
            Role::Writer => 0,
        };
        if patience > 0 {
            let spent = Deadline::after_ns(patience);
            let until = spent.or_earlier(wait.deadline());
            while !until.expired() {
                // SAFETY: as above.
                unsafe { libc::sched_yield() };
                if ready() {
                    return Ok(());
                }
            }
            if spent.expired() {
                // Nothing came within it: the producer has stopped for now.
                // Later waits (Python's come in 100 ms slices) sleep after
                // the short spin until the next large message.
                self.note_received(None);
            }
        }
        if wait.expired() {
            return Err(Error::Timeout);
        }
        let woken = match self.ext {
            Some(ext) => sleep_unless(ext, role, ready, wait.deadline()),
            None => {
                let (counter, seen) = legacy;
                let deadline = Deadline::after_ns(LEGACY_SLEEP_NS).or_earlier(wait.deadline());
                // SAFETY: the low half of a mapped, 8-aligned counter is an
                // aligned 32-bit word (little-endian x86_64/aarch64).
                unsafe {
                    futex::wait_at(counter.as_ptr() as *const u32, seen as u32, Some(deadline))
                }
            }
        };
        match woken {
            Woken::TimedOut if wait.expired() => Err(Error::Timeout),
            _ => Ok(()),
        }
    }

    /// Producer that found no room with `queued` bytes in the ring: yields
    /// the CPU for [`drain_ns`] without looking at the consumers' position
    /// (or until the deadline, or a shutdown). Each look takes that
    /// position's cache line from the consumer's core, and its next
    /// publication then waits for the line to come back: a producer that
    /// looked every 10-100 nanoseconds while the ring stayed full, as the
    /// spin in [`Self::wait_until`] does, made every receive of its
    /// consumer pay that miss. Kept off, it then finds room for many
    /// messages at once (1 -> 1 process, Python put/get of 512-byte pickles
    /// checked by the consumer, default 1 MiB ring, so 32 us: 925k against
    /// 763k items a second, medians of 16 interleaved runs; no change to
    /// the C benchmark's pinned 1 -> 1 rates or round trip). Keeping off
    /// for this long cannot starve the consumer: half of what was queued is
    /// still there when the producer looks again.
    pub(super) fn let_consumers_drain(&self, queued: u64, wait: Wait) {
        let ns = drain_ns(queued);
        if ns == 0 {
            return;
        }
        let until = Deadline::after_ns(ns).or_earlier(wait.deadline());
        while !until.expired() && !self.is_shut_down() {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    /// Producer: waits until `head` moves away from `seen`.
    pub(super) fn wait_for_room(&self, seen_head: u64, wait: Wait) -> Result<()> {
        self.wait_for_change(Role::Writer, self.ring.head, seen_head, wait)
    }

    /// Consumer: waits until `tail` moves away from `seen`.
    pub(super) fn wait_for_messages(&self, seen_tail: u64, wait: Wait) -> Result<()> {
        self.wait_for_change(Role::Reader, self.ring.tail, seen_tail, wait)
    }

    /// After a publication by `role`: wakes the other side if it sleeps.
    pub(super) fn wake_peers(&self, role: Role) {
        match self.ext {
            Some(ext) => wake_sleepers(ext, role),
            None => {
                let counter = match role {
                    Role::Writer => self.ring.tail,
                    Role::Reader => self.ring.head,
                };
                futex::wake_all_at(counter.as_ptr() as *const u32);
            }
        }
    }
}

/// The sleeper's half of the handshake (module docs) for a member of `role`
/// that found `ready()` false: announces itself, re-checks, and sleeps on
/// its side's sequence word unless the re-check holds or a waker bumped the
/// word meanwhile.
pub(super) fn sleep_unless(
    ext: &Extension,
    role: Role,
    ready: impl Fn() -> bool,
    deadline: Option<Deadline>,
) -> Woken {
    let sig = &ext.signals;
    let (seq, wanted, sleepers, waits) = match role {
        // A producer waits for consumers to make room.
        Role::Writer => (
            &sig.space_seq,
            &sig.space_wanted,
            &sig.producer_sleepers,
            &ext.writer.waits,
        ),
        Role::Reader => (
            &sig.data_seq,
            &sig.data_wanted,
            &sig.consumer_sleepers,
            &ext.reader.waits,
        ),
    };
    let expected = seq.load(SeqCst);
    sleepers.fetch_add(1, SeqCst);
    wanted.store(1, SeqCst);
    // The re-check must not move before the flag's store: this heavy fence
    // pairs with the waker's light one in `wake_sleepers` (store of the
    // position, fence, load of the flag there; store of the flag, fence,
    // load of the position here), so either the waker sees the flag or
    // `ready` sees the new position. `ready` loads the real positions
    // (`ring.head`/`tail`, not the cached copies), with plain Acquire.
    let covered = barrier::heavy();
    let woken = if ready() {
        Woken::Maybe
    } else {
        waits.fetch_add(1, Relaxed);
        let deadline = if covered {
            deadline
        } else {
            Some(Deadline::after_ns(UNFENCED_SLEEP_NS).or_earlier(deadline))
        };
        futex::wait(seq, expected, deadline)
    };
    sleepers.fetch_sub(1, SeqCst);
    woken
}

/// The waker's half, after a member of `role` published its counter: wakes
/// the other side if one of its members announced itself.
pub(super) fn wake_sleepers(ext: &Extension, role: Role) {
    let (seq, wanted) = match role {
        Role::Writer => (&ext.signals.data_seq, &ext.signals.data_wanted),
        Role::Reader => (&ext.signals.space_seq, &ext.signals.space_wanted),
    };
    // Store-load ordering, the one place it is needed: the caller's Release
    // store of its position (in `publish`) must not be reordered after this
    // load of the flag, or a consumer (producer) that raised the flag and
    // then, after its own heavy fence in `sleep_unless`, re-read the old
    // position would sleep while we see no flag: a missed wake-up. This
    // light fence pairs with that heavy one (`sync::barrier`: either this
    // load comes after the sleeper's barrier and sees the flag, or the
    // barrier made our store visible to its re-check). No other operation of
    // the hot path needs store-load order: the lock, the journal and the
    // cached positions are plain Acquire/Release. The plain load keeps the
    // common case (nobody asleep) free of writes to the shared `signals`
    // line.
    barrier::light();
    if wanted.load(Relaxed) != 0 && wanted.swap(0, SeqCst) != 0 {
        wake(seq);
        ext.signals.wakeups.fetch_add(1, Relaxed);
    }
}

/// Marks the queue shut down and wakes every sleeper of every kind.
pub(super) fn shut_down(ext: &Extension) {
    // SeqCst: sleepers re-check the flag after announcing themselves.
    ext.signals.shutdown.store(1, SeqCst);
    for seq in [
        &ext.signals.data_seq,
        &ext.signals.space_seq,
        &ext.signals.join_seq,
    ] {
        wake(seq);
    }
    ext.signals.wakeups.fetch_add(3, Relaxed);
}

/// Whether the queue was shut down.
pub(super) fn is_shut_down(ext: &Extension) -> bool {
    ext.signals.shutdown.load(Acquire) != 0
}

/// Bumps a sequence word and wakes its sleepers.
pub(super) fn wake(seq: &AtomicU32) {
    seq.fetch_add(1, SeqCst);
    futex::wake_all(seq);
}
