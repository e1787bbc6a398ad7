//! `pthread_atfork` handlers registered once per process without a lock.
//!
//! Not a `std::sync::Once`: a process forked while another thread is inside
//! `call_once` gets a copy whose `Once` stays "running" for ever, and the
//! child hangs in its first call that needs it (tests/fork_while_busy.rs).
//! Here the first caller registers, and callers meanwhile go on without the
//! handlers' protection instead of waiting (each caller says what that
//! means for it).

use std::sync::atomic::{AtomicU8, Ordering};

const UNREGISTERED: u8 = 0;
const REGISTERING: u8 = 1;
const REGISTERED: u8 = 2;

type Handler = Option<unsafe extern "C" fn()>;

/// One set of fork handlers, registered on first use.
pub(crate) struct AtFork {
    state: AtomicU8,
}

impl AtFork {
    pub(crate) const fn new() -> AtFork {
        AtFork {
            state: AtomicU8::new(UNREGISTERED),
        }
    }

    /// Registers the handlers unless that is done; whether they are
    /// registered now. False while another thread registers them (for good
    /// in a child forked meanwhile) and if the registration failed (ENOMEM;
    /// a later call tries again). Under Miri, which runs no child processes
    /// and knows no `pthread_atfork`, always true.
    pub(crate) fn ensure(&self, prepare: Handler, parent: Handler, child: Handler) -> bool {
        if cfg!(miri) {
            return true;
        }
        // Acquire pairs with the Release store below: whoever sees
        // REGISTERED acts after the registration.
        match self.state.load(Ordering::Acquire) {
            REGISTERED => return true,
            REGISTERING => return false,
            _ => {}
        }
        if self
            .state
            .compare_exchange(
                UNREGISTERED,
                REGISTERING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return self.state.load(Ordering::Acquire) == REGISTERED;
        }
        #[cfg(not(miri))]
        {
            // SAFETY: pthread_atfork only records the handlers, which are
            // `extern "C"` functions without arguments that live as long as
            // the program.
            if unsafe { libc::pthread_atfork(prepare, parent, child) } != 0 {
                self.state.store(UNREGISTERED, Ordering::Relaxed);
                return false;
            }
        }
        #[cfg(miri)]
        let _ = (prepare, parent, child);
        self.state.store(REGISTERED, Ordering::Release);
        true
    }
}
