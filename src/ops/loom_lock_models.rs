//! Loom models of the writer/reader lock (`crate::sync::lock`) and of its
//! dead-owner takeover with the journal repair (`make test-loom`).
//!
//! They run the lock itself on a loom word, with a mock of the owner
//! judgement (`Owners`): thread ids are the model's, and an owner "dies" by
//! stopping without releasing and then marking itself dead, which the mock
//! reports from then on (in production the kernel's bookkeeping, read
//! through `/proc`, plays that part, and its system calls order the dead
//! owner's last stores before the waiter's look). The guarded state is a
//! loom `UnsafeCell`, so that two holders at once, or a holder that does not
//! see its predecessor's writes, fail the model; a lost wake-up shows as a
//! deadlock.
//!
//! The journal repair is modelled on the extension block's `Side` (loom
//! atomics): the dying owner journals and publishes in `publish`'s order
//! (journal first, then the counter, then the counts), and the repair is
//! `View::lock`'s, restated (the header's `tail` is a std atomic out of
//! loom's reach, so the model keeps its own loom word for it).

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU64};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::loom_models::check;
use crate::layout::Side;
use crate::sync::lock::{Owners, SharedLock, WAITERS};

/// The model's threads: ids 1..=3; any other id names nobody.
const THREADS: usize = 3;

/// The mock owner judgement.
struct Mock {
    me: u32,
    dead: Arc<Vec<AtomicBool>>,
    /// Waits cut into slices (false: untimed, see `Owners::sliced`).
    sliced: bool,
}

impl Owners for Mock {
    fn me(&self) -> u32 {
        self.me
    }

    fn alive(&self, owner: u32) -> bool {
        // Acquire pairs with the dying owner's Release store of its flag:
        // what it wrote before dying is visible to the one that takes over.
        (1..=THREADS as u32).contains(&owner) && !self.dead[owner as usize].load(Acquire)
    }

    fn sliced(&self) -> bool {
        self.sliced
    }
}

/// A lock, a counter only the lock guards, and the mock's death flags.
struct Shared {
    lock: SharedLock,
    count: UnsafeCell<u64>,
    repairs: AtomicU64,
    dead: Arc<Vec<AtomicBool>>,
}

// SAFETY: `count` is only accessed under `lock` (which is what the models
// check: loom's UnsafeCell fails them on any unordered access).
unsafe impl Sync for Shared {}

/// `increment` as thread `me`, in a thread of its own.
fn spawn_increment(s: &Arc<Shared>, me: u32, sliced: bool) -> thread::JoinHandle<()> {
    let s = s.clone();
    thread::spawn(move || s.increment(me, sliced))
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        lock: SharedLock::new(),
        count: UnsafeCell::new(0),
        repairs: AtomicU64::new(0),
        dead: Arc::new((0..=THREADS).map(|_| AtomicBool::new(false)).collect()),
    })
}

impl Shared {
    fn owners(&self, me: u32, sliced: bool) -> Mock {
        Mock {
            me,
            dead: self.dead.clone(),
            sliced,
        }
    }

    /// Takes the lock as thread `me` (waiting for ever), counts a repair if
    /// one ran, and adds one to the guarded counter.
    fn increment(&self, me: u32, sliced: bool) {
        let repair = || {
            self.repairs.fetch_add(1, Relaxed);
        };
        let _held = self
            .lock
            .lock(&self.owners(me, sliced), || None, repair)
            .unwrap();
        // SAFETY: under the lock.
        self.count.with_mut(|c| unsafe { *c += 1 });
    }

    fn count(&self) -> u64 {
        // SAFETY: every thread has been joined.
        self.count.with(|c| unsafe { *c })
    }

    /// The end state of a model, once every thread has been joined: the
    /// guarded counter, the repairs run, and the lock free again.
    fn assert_finished(&self, count: u64, repairs: u64) {
        assert_eq!(self.count(), count);
        assert_eq!(self.repairs.load(Relaxed), repairs);
        assert_eq!(self.lock.word().load(Relaxed), 0);
    }
}

/// (a) Plain hand-over: three threads take the lock in turn; waits are
/// untimed, so a release that fails to wake a sleeper deadlocks the model.
/// Exclusion and visibility of the previous holder's writes: the counter.
#[test]
fn loom_lock_excludes_and_never_loses_a_hand_over() {
    check("lock hand-over", || {
        let s = shared();
        let others: Vec<_> = (2..=3).map(|me| spawn_increment(&s, me, false)).collect();
        s.increment(1, false);
        for t in others {
            t.join().unwrap();
        }
        s.assert_finished(3, 0);
    });
}

/// (a') The same with waits cut in slices, two threads: a waiter that
/// judges the live holder (whatever it is doing) never takes the lock from
/// it, and no repair runs.
#[test]
fn loom_a_live_owner_is_never_taken_over() {
    check("live owner, sliced waits", || {
        let s = shared();
        let other = spawn_increment(&s, 2, true);
        s.increment(1, true);
        other.join().unwrap();
        s.assert_finished(2, 0);
    });
}

/// (b) Dead owner: thread 1 takes the lock, writes, and dies holding it,
/// while thread 2 waits in slices, judging it alive until it is dead; then
/// 2 takes it over and repairs, once. (One waiter: two spinning waiters
/// could hand loom's scheduler to each other for ever; the race between two
/// is model (c).)
#[test]
fn loom_a_dead_owner_is_taken_over_and_repaired() {
    check("dead owner takeover", || {
        let s = shared();
        let held = s.lock.lock(&s.owners(1, true), || None, || {}).unwrap();
        let waiter = spawn_increment(&s, 2, true);
        // SAFETY: under the lock.
        s.count.with_mut(|c| unsafe { *c += 1 });
        // Dies: stops without releasing; then the kernel knows.
        std::mem::forget(held);
        s.dead[1].store(true, Release);
        waiter.join().unwrap();
        s.assert_finished(2, 1);
    });
}

/// (c) Two waiters find the same dead owner: exactly one takes the lock
/// over and repairs, the other gets it after, as usual.
#[test]
fn loom_two_waiters_take_a_dead_owner_over_once() {
    check("dead owner, two waiters", || {
        let s = shared();
        let held = s.lock.lock(&s.owners(1, true), || None, || {}).unwrap();
        // SAFETY: under the lock.
        s.count.with_mut(|c| unsafe { *c += 1 });
        std::mem::forget(held);
        s.dead[1].store(true, Release);
        let other = spawn_increment(&s, 2, true);
        s.increment(3, true);
        other.join().unwrap();
        s.assert_finished(3, 1);
    });
}

/// (d) Garbage in the word: one naming nobody, and one naming a live
/// contender (which does not hold it: the lock is not reentrant). Either
/// way exactly one takeover, and both contenders finish.
#[test]
fn loom_a_garbage_word_is_taken_over_once() {
    for garbage in [0x7777 | WAITERS, 2] {
        check(&format!("garbage word {garbage:#x}"), move || {
            let s = shared();
            s.lock.word().store(garbage, Relaxed);
            let other = spawn_increment(&s, 2, true);
            s.increment(3, true);
            other.join().unwrap();
            s.assert_finished(2, 1);
        });
    }
}

/// The dying writer's publication, in `publish`'s order; it dies after
/// `steps` of its stores (0 = before any, 5 = after all).
fn publish_then_die(side: &Side, tail: &AtomicU64, steps: usize) {
    let (to, messages) = (64, 1);
    let stores: [&dyn Fn(); 5] = [
        &|| side.journal_pos.store(to, Release),
        &|| side.journal_messages.store(messages, Release),
        &|| tail.store(to, Release),
        &|| side.messages.store(messages, Release),
        &|| side.own.store(to, Release),
    ];
    for store in &stores[..steps] {
        store();
    }
}

/// `View::lock`'s repair, restated on the model's `tail`.
fn repair(side: &Side, tail: &AtomicU64) {
    let pos = tail.load(Acquire);
    side.own.store(pos, Relaxed);
    if side.journal_pos.load(Acquire) == pos {
        side.messages
            .store(side.journal_messages.load(Acquire), Relaxed);
    }
    side.recoveries.fetch_add(1, Relaxed);
}

/// (e) The journal repair after a takeover: a writer dies holding the lock
/// at every point of its publication; the next writer takes the lock over,
/// repairs, and finds the side's counts agreeing with `tail` (the message
/// counted if and only if its publication happened).
#[test]
fn loom_the_journal_repair_agrees_with_the_publication() {
    for steps in 0..=5 {
        check(
            &format!("journal repair, death after {steps} stores"),
            move || {
                let side = Arc::new(Side::default());
                let tail = Arc::new(AtomicU64::new(0));
                let dead = Arc::new(
                    (0..=THREADS)
                        .map(|_| AtomicBool::new(false))
                        .collect::<Vec<_>>(),
                );
                let mock = |me| Mock {
                    me,
                    dead: dead.clone(),
                    sliced: true,
                };
                let held = side.lock.lock(&mock(1), || None, || {}).unwrap();
                let next = {
                    let (side, tail, owners) = (side.clone(), tail.clone(), mock(2));
                    thread::spawn(move || {
                        let _held = side
                            .lock
                            .lock(&owners, || None, || repair(&side, &tail))
                            .unwrap();
                        let published = tail.load(Relaxed);
                        assert_eq!(side.own.load(Relaxed), published);
                        assert_eq!(side.messages.load(Relaxed), published / 64);
                        assert_eq!(side.recoveries.load(Relaxed), 1);
                    })
                };
                publish_then_die(&side, &tail, steps);
                std::mem::forget(held);
                dead[1].store(true, Release);
                next.join().unwrap();
            },
        );
    }
}
