//! The extension block's writer and reader locks: a futex lock the library
//! owns, whose whole state is one 32-bit word in shared memory.
//!
//! The word is 0 when the lock is free, else the owner's thread id (a Linux
//! tid, below 2^22) with [`WAITERS`] set while somebody may sleep on it.
//! Uncontended, taking the lock is one compare-and-swap and releasing it
//! another; a futex wake-up is issued only when the word says someone sleeps.
//!
//! Why not a robust pthread mutex: glibc trusts the mutex bytes, and a
//! neighbour that writes garbage over them makes `pthread_mutex_timedlock`
//! abort the process (an assertion on `ESRCH`). Here nothing in the word is
//! trusted: a waiter sleeps in bounded slices, and after a slice in which the
//! word did not move it asks [`Owners::alive`] whether the thread the word
//! names is alive and attached to the object. If not (it died holding the
//! lock, or the word is garbage that names nobody), the waiter takes the lock
//! over with one compare-and-swap and runs the caller's repair. A live owner
//! that is merely slow or stopped (SIGSTOP, a debugger) is waited for, until
//! the caller's deadline if it has one. Whatever bytes are in the word, no
//! call aborts and none sleeps without looking again.

use std::hint::spin_loop;

use super::deadline::Deadline;
use super::futex::{self, Woken};
use crate::error::{Error, Result};

use super::atomic::{AtomicU32, Ordering::AcqRel, Ordering::Relaxed, Ordering::Release};

/// Set in the lock word while a thread may be asleep waiting for it: the
/// release must then wake one.
pub(crate) const WAITERS: u32 = 1 << 31;

/// Re-checks of a busy word before the first sleep (a hold is usually a
/// copy of a few hundred bytes). One under loom, where every look is a
/// branch to explore and spinning proves nothing.
#[cfg(not(loom))]
const SPINS: u32 = 64;
#[cfg(loom)]
const SPINS: u32 = 1;

/// The first sleep between two looks at the owner, doubling up to
/// [`MAX_SLICE_NS`]: a dead owner is noticed within about a millisecond when
/// it dies just as we start waiting, and a long hold by a live one costs a
/// waiter at most 20 checks a second.
const FIRST_SLICE_NS: u64 = 1_000_000;
const MAX_SLICE_NS: u64 = 50_000_000;

/// A lock in shared memory (4 bytes, zero = free, so a zeroed object is an
/// initialised one).
///
/// Every compare-and-swap that takes the lock is AcqRel: Acquire pairs with
/// the Release of the previous owner's release (or, for a takeover, with
/// whatever the dead owner published); Release makes what the new owner's
/// process wrote before (the object's flags, at open) visible to a waiter
/// that reads this word and then judges the owner (`Owners::alive`).
#[repr(C)]
pub(crate) struct SharedLock {
    word: AtomicU32,
}

/// Who the lock's users are: the calling thread's identity and a verdict on
/// the identity a lock word holds. The queue uses [`super::owner`]'s
/// (thread ids, `/proc`); the loom model a mock.
pub(crate) trait Owners {
    /// The calling thread's identity: nonzero and below [`WAITERS`].
    fn me(&self) -> u32;

    /// Whether `owner` (nonzero, not [`Owners::me`]) names a thread that is
    /// alive and may hold this lock. `false` makes the caller take the lock
    /// over and repair; when unsure, say `true` (the caller looks again
    /// after its next slice).
    fn alive(&self, owner: u32) -> bool;

    /// Whether waits are cut into slices to look at the owner. Always, but
    /// in the loom model of the plain hand-over, whose owners never die:
    /// there the waits are untimed, so that a lost wake-up shows as a
    /// deadlock instead of being covered by the next slice.
    /// Whether to judge an owner before the first sleep instead of after
    /// it. Only for owners `/proc` can tell about at once and for sure: a
    /// private image (tests, Miri, the fuzz properties) whose only possible
    /// owners are this process's threads. A shared object's owner gets its
    /// first slice first: a hold is usually short, and a judgement reads
    /// `/proc`.
    fn judge_at_once(&self) -> bool {
        false
    }

    fn sliced(&self) -> bool {
        true
    }
}

/// A held lock; released when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub(crate) struct LockGuard<'l> {
    lock: &'l SharedLock,
    me: u32,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(self.me);
    }
}

impl SharedLock {
    /// A free lock (tests and models; in shared memory, zero bytes are one).
    #[cfg(any(test, loom))]
    pub(crate) fn new() -> SharedLock {
        SharedLock {
            word: AtomicU32::new(0),
        }
    }

    /// Makes the lock free (object creation).
    pub(crate) fn init(&self) {
        self.word.store(0, Relaxed);
    }

    /// The raw word (tests that scribble it, and the model's checks).
    #[cfg(test)]
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.word
    }

    /// Takes the lock. Uncontended, one compare-and-swap. Otherwise waits
    /// until `deadline()` (computed only then; `None` = for ever):
    /// `Err(Timeout)` when it passes with a live owner still holding the lock.
    ///
    /// When the owner is found dead, or the word names no live owner at all,
    /// the lock is taken over and `repair` runs under it before it is handed
    /// out, to put the guarded state back in order.
    pub(crate) fn lock<'l>(
        &'l self,
        owners: &impl Owners,
        deadline: impl FnOnce() -> Option<Deadline>,
        repair: impl FnOnce(),
    ) -> Result<LockGuard<'l>> {
        let me = owners.me();
        debug_assert!(me != 0 && me & WAITERS == 0);
        if self.word.compare_exchange(0, me, AcqRel, Relaxed).is_ok() {
            return Ok(LockGuard { lock: self, me });
        }
        self.lock_contended(me, owners, deadline(), repair)
    }

    #[cold]
    fn lock_contended<'l>(
        &'l self,
        me: u32,
        owners: &impl Owners,
        deadline: Option<Deadline>,
        repair: impl FnOnce(),
    ) -> Result<LockGuard<'l>> {
        // Taken by the one takeover that may happen (it ends the call).
        let mut repair = Some(repair);
        for _ in 0..SPINS {
            if self.word.load(Relaxed) == 0
                && self.word.compare_exchange(0, me, AcqRel, Relaxed).is_ok()
            {
                return Ok(LockGuard { lock: self, me });
            }
            spin_loop();
        }
        let mut slice = if owners.judge_at_once() {
            0
        } else {
            FIRST_SLICE_NS
        };
        // The owner this call first found (0 until then) and whether it has
        // slept (and so may have consumed a wake-up meant for the next owner).
        let (mut first_owner, mut slept) = (0, false);
        loop {
            let seen = self.word.load(Relaxed);
            if seen == 0 {
                // Others may be asleep as we were: take the lock marked
                // contended, so that our release wakes one of them.
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, AcqRel, Relaxed)
                    .is_ok()
                {
                    return Ok(LockGuard { lock: self, me });
                }
                continue;
            }
            if first_owner == 0 {
                first_owner = seen & !WAITERS;
            }
            if deadline.is_some_and(Deadline::expired) {
                // Judge an owner that held the lock through the whole call
                // before giving up, so that calls with deadlines shorter
                // than a slice still notice a dead one (a lock that changed
                // hands meanwhile is alive: no /proc reads for it).
                if seen & !WAITERS == first_owner {
                    if let Some(guard) = self.take_over_if_abandoned(seen, me, owners, &mut repair)
                    {
                        return Ok(guard);
                    }
                }
                // A live owner (or the word just moved): one last try.
                let last = self.word.compare_exchange(0, me | WAITERS, AcqRel, Relaxed);
                return match last {
                    Ok(_) => Ok(LockGuard { lock: self, me }),
                    Err(now) => {
                        // The wake-up that ended our sleep may have been the
                        // hand-over to us, and the owner that barged in may
                        // not know of the others asleep: make its release
                        // wake one.
                        if slept && now != 0 && now & WAITERS == 0 {
                            let _ =
                                self.word
                                    .compare_exchange(now, now | WAITERS, Relaxed, Relaxed);
                        }
                        Err(Error::Timeout)
                    }
                };
            }
            let asleep = seen | WAITERS;
            if seen != asleep
                && self
                    .word
                    .compare_exchange(seen, asleep, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice_end = Deadline::after_ns(slice);
            let until = slice_end.or_earlier(deadline);
            let woken = futex::wait(&self.word, asleep, owners.sliced().then_some(until));
            slept = true;
            // Under loom a timed wait times out at once and time is not
            // modelled: the timeout stands for the slice passing.
            let slice_passed = woken == Woken::TimedOut && (cfg!(loom) || slice_end.expired());
            if slice_passed && self.word.load(Relaxed) == asleep {
                // A whole slice without a hand-over: is the owner there?
                if let Some(guard) = self.take_over_if_abandoned(asleep, me, owners, &mut repair) {
                    return Ok(guard);
                }
                slice = (slice * 2).clamp(FIRST_SLICE_NS, MAX_SLICE_NS);
                // A live owner: let it run (loom explores spinning threads
                // only as far as others make progress).
                #[cfg(loom)]
                loom::thread::yield_now();
            }
        }
    }

    /// Takes the lock over if the word still holds `seen` and `seen` names no
    /// live owner; runs `repair` under it then.
    fn take_over_if_abandoned<'l, F: FnOnce()>(
        &'l self,
        seen: u32,
        me: u32,
        owners: &impl Owners,
        repair: &mut Option<F>,
    ) -> Option<LockGuard<'l>> {
        let owner = seen & !WAITERS;
        // The word naming the caller is garbage: the lock is not reentrant,
        // so a thread that is asking for it does not hold it.
        if owner != 0 && owner != me && owners.alive(owner) {
            return None;
        }
        // Acquire: whatever the dead owner published before dying (its
        // journal, Release stores) is visible to the repair.
        self.word
            .compare_exchange(seen, me | WAITERS, AcqRel, Relaxed)
            .ok()?;
        // Built first, so that a panic in `repair` still releases the lock.
        let guard = LockGuard { lock: self, me };
        if let Some(repair) = repair.take() {
            repair();
        }
        Some(guard)
    }

    /// Releases the lock `me` holds: one compare-and-swap, plus a wake-up if
    /// the word says someone sleeps. If the word no longer names `me`
    /// (scribbled over, or taken over while we were thought dead), it is not
    /// ours to clear: it is left to the waiters' judgement, and one of them
    /// is woken to judge it now rather than after its slice.
    fn release(&self, me: u32) {
        if self.word.compare_exchange(me, 0, Release, Relaxed).is_ok() {
            return;
        }
        let _ = self
            .word
            .compare_exchange(me | WAITERS, 0, Release, Relaxed);
        futex::wake_one(&self.word);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::UnsafeCell;
    use std::sync::mpsc::channel;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sync::owner::{current_tid, ProcessOwners};

    fn owners() -> ProcessOwners<'static> {
        ProcessOwners::new(None, None)
    }

    fn after_ms(ms: u64) -> Option<Deadline> {
        Some(Deadline::after_ns(ms * 1_000_000))
    }

    #[test]
    fn uncontended_lock_and_release_leave_a_free_word() {
        let l = SharedLock::new();
        let g = l
            .lock(&owners(), || unreachable!(), || unreachable!())
            .unwrap();
        assert_eq!(l.word().load(Relaxed), current_tid());
        drop(g);
        assert_eq!(l.word().load(Relaxed), 0);
    }

    /// A counter that only the lock protects.
    struct Guarded {
        lock: SharedLock,
        count: UnsafeCell<u64>,
    }
    // SAFETY: `count` is only touched under `lock`.
    unsafe impl Sync for Guarded {}

    #[test]
    fn contended_threads_exclude_each_other() {
        let g = Arc::new(Guarded {
            lock: SharedLock::new(),
            count: UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let _held = g.lock.lock(&owners(), || None, || unreachable!()).unwrap();
                        // SAFETY: under the lock.
                        unsafe { *g.count.get() += 1 };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: every thread has finished.
        assert_eq!(unsafe { *g.count.get() }, 80_000);
        assert_eq!(g.lock.word().load(Relaxed), 0);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's thread ids are not the kernel's: /proc does not list them"
    )]
    fn a_live_holder_is_waited_for_until_the_deadline() {
        let l = Arc::new(SharedLock::new());
        let (held_tx, held_rx) = channel();
        let (go_tx, go_rx) = channel::<()>();
        let holder = {
            let l = Arc::clone(&l);
            std::thread::spawn(move || {
                let _g = l.lock(&owners(), || None, || unreachable!()).unwrap();
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            })
        };
        held_rx.recv().unwrap();
        // Longer than several slices: the owner is judged alive each time.
        let start = Instant::now();
        let r = l.lock(&owners(), || after_ms(30), || unreachable!());
        assert_eq!(r.err(), Some(Error::Timeout));
        assert!(start.elapsed() >= Duration::from_millis(30));
        go_tx.send(()).unwrap();
        holder.join().unwrap();
        drop(
            l.lock(&owners(), || after_ms(1000), || unreachable!())
                .unwrap(),
        );
        assert_eq!(l.word().load(Relaxed), 0);
    }

    #[test]
    fn a_waiter_sleeping_on_a_live_holder_gets_it_on_release() {
        let l = Arc::new(SharedLock::new());
        let g = l.lock(&owners(), || None, || unreachable!()).unwrap();
        let waiter = {
            let l = Arc::clone(&l);
            std::thread::spawn(move || {
                let _g = l.lock(&owners(), || None, || unreachable!()).unwrap();
            })
        };
        // Let it go to sleep (the word gets the waiters bit).
        while l.word().load(Relaxed) & WAITERS == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(g);
        waiter.join().unwrap();
        assert_eq!(l.word().load(Relaxed), 0);
    }

    #[test]
    fn a_dead_owner_is_taken_over_and_repaired() {
        for deadline in [None, after_ms(1000), Some(Deadline::after_ns(0))] {
            let l = Arc::new(SharedLock::new());
            {
                let l = Arc::clone(&l);
                // A thread that exits holding the lock is a dead owner.
                std::thread::spawn(move || {
                    std::mem::forget(l.lock(&owners(), || None, || unreachable!()).unwrap())
                })
                .join()
                .unwrap();
            }
            // Judged dead once the kernel no longer lists it (a moment
            // after the join; a deadline already past judges only once).
            let dead = l.word().load(Relaxed) & !WAITERS;
            assert!(crate::sync::owner::tests::until_gone(dead));
            let mut repaired = 0;
            let g = l.lock(&owners(), || deadline, || repaired += 1).unwrap();
            assert_eq!(repaired, 1, "deadline {deadline:?}");
            drop(g);
            assert_eq!(l.word().load(Relaxed), 0);
            // Sound again: the next locker finds nothing to repair.
            drop(l.lock(&owners(), || None, || unreachable!()).unwrap());
        }
    }

    #[test]
    fn garbage_words_are_taken_over_whatever_they_hold() {
        let me = current_tid();
        for garbage in [
            u32::MAX,
            WAITERS,
            WAITERS - 1,
            1,           // init: alive, but not attached to this image
            1 | WAITERS, // the same, with sleepers claimed
            me,          // the caller itself: it does not hold the lock
            me | WAITERS,
            0x4242_4242,
        ] {
            let l = SharedLock::new();
            l.word().store(garbage, Relaxed);
            let mut repaired = false;
            let start = Instant::now();
            let g = l
                .lock(&owners(), || None, || repaired = true)
                .unwrap_or_else(|e| panic!("{garbage:#x}: {e:?}"));
            assert!(repaired, "{garbage:#x}");
            assert!(start.elapsed() < Duration::from_secs(5), "{garbage:#x}");
            drop(g);
            assert_eq!(l.word().load(Relaxed), 0, "{garbage:#x}");
        }
    }

    #[test]
    fn a_release_never_clears_a_word_it_does_not_own() {
        let l = SharedLock::new();
        let g = l.lock(&owners(), || None, || unreachable!()).unwrap();
        // Scribbled over, or taken over by a waiter that judged us dead
        // (any id but ours: a fixed number could be this thread's id).
        let other = (current_tid() + 1) & !WAITERS;
        l.word().store(other, Relaxed);
        drop(g);
        assert_eq!(l.word().load(Relaxed), other);
    }
}
