//! The shared futex under the model checker (`--cfg loom`): the kernel's
//! futex contract rebuilt from loom's mutex and condition variable, so that
//! loom explores every interleaving of sleepers and wakers, and reports a
//! lost wake-up as a deadlock.
//!
//! The contract kept: `wait` compares the word with `expected` and queues the
//! caller as one step with respect to `wake_all` (the kernel does both under
//! the futex's hash-bucket lock), so a waker that changes the word and then
//! wakes either finds the sleeper queued or the sleeper finds the new value.
//! The comparison is a Relaxed load under that lock: the only ordering the
//! model grants is the lock's (the kernel's full barriers are not assumed),
//! so the protocol must bring its own fences. Wakes are never spurious here;
//! callers cope with spurious ones anyway.
//!
//! A wait with a deadline models its timeout firing at once (it returns
//! `TimedOut` without sleeping, after the same check): a legal outcome of
//! every timed wait, and the models use untimed waits for liveness.

use loom::sync::{Condvar, Mutex};

use super::atomic::{AtomicU32, Ordering::Relaxed};
use super::deadline::Deadline;
use super::futex::Woken;

/// Sleepers queued on futex words: (word address, ticket).
#[derive(Default)]
struct Queue {
    next_ticket: u64,
    sleepers: Vec<(usize, u64)>,
}

struct Table {
    queue: Mutex<Queue>,
    changed: Condvar,
}

loom::lazy_static! {
    // One table per explored execution (loom resets its statics).
    static ref TABLE: Table = Table {
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
    };
}

fn address(word: &AtomicU32) -> usize {
    word as *const AtomicU32 as usize
}

/// Sleeps while `*word == expected`, until woken (or, with a deadline, not
/// at all: see the module docs).
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> Woken {
    let table = &*TABLE;
    let mut queue = table.queue.lock().unwrap();
    if word.load(Relaxed) != expected {
        return Woken::Maybe;
    }
    if deadline.is_some() {
        return Woken::TimedOut;
    }
    let me = (address(word), queue.next_ticket);
    queue.next_ticket += 1;
    queue.sleepers.push(me);
    while queue.sleepers.contains(&me) {
        queue = table.changed.wait(queue).unwrap();
    }
    Woken::Maybe
}

/// Wakes every sleeper queued on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    let table = &*TABLE;
    let at = address(word);
    table
        .queue
        .lock()
        .unwrap()
        .sleepers
        .retain(|&(a, _)| a != at);
    table.changed.notify_all();
}

/// Wakes the longest-queued sleeper on `word`, if any (the kernel wakes
/// sleepers in FIFO order within a priority).
pub(crate) fn wake_one(word: &AtomicU32) {
    let table = &*TABLE;
    let at = address(word);
    let mut queue = table.queue.lock().unwrap();
    if let Some(i) = queue.sleepers.iter().position(|&(a, _)| a == at) {
        queue.sleepers.remove(i);
        table.changed.notify_all();
    }
}
