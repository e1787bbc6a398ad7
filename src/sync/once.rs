//! Run-once without waiting, safe to use around `fork`.
//!
//! Not a `std::sync::Once`: a process forked while another thread is inside
//! `call_once` gets a copy whose `Once` stays "running" for ever, and the
//! child hangs in its first call that needs it (tests/fork_while_busy.rs).
//! Here the first caller runs the work, and callers meanwhile go on without
//! it instead of waiting (each caller says what that means for it).

use std::sync::atomic::{AtomicU8, Ordering};

const NOT_DONE: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// Work done once per process, by whoever asks first.
pub(crate) struct NoWaitOnce {
    state: AtomicU8,
}

impl NoWaitOnce {
    pub(crate) const fn new() -> NoWaitOnce {
        NoWaitOnce {
            state: AtomicU8::new(NOT_DONE),
        }
    }

    /// Runs `work` unless it is done or running; whether it is done now.
    /// False while another thread runs it (for good in a child forked
    /// meanwhile) and when `work` reports failure (a later call tries again).
    pub(crate) fn run(&self, work: impl FnOnce() -> bool) -> bool {
        // Acquire pairs with the Release store below: whoever sees DONE acts
        // after the work.
        match self.state.load(Ordering::Acquire) {
            DONE => return true,
            RUNNING => return false,
            _ => {}
        }
        if self
            .state
            .compare_exchange(NOT_DONE, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return self.state.load(Ordering::Acquire) == DONE;
        }
        if !work() {
            self.state.store(NOT_DONE, Ordering::Relaxed);
            return false;
        }
        self.state.store(DONE, Ordering::Release);
        true
    }
}
