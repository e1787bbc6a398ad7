//! Test-only failpoints: named places in the hot paths where a test can make
//! the process kill itself (SIGKILL) at an exact instant: holding a lock,
//! half-way through a copy, right before publishing. Compiled only with the
//! `failpoints` feature; the shipped library has none.

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
    use std::sync::Mutex;

    static ARMED: Mutex<Option<&'static str>> = Mutex::new(None);
    static COUNTDOWN: AtomicU64 = AtomicU64::new(0);
    static SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGKILL);

    /// Makes the process SIGKILL itself the `nth` time (1-based) it reaches
    /// the failpoint `name`. Also read from `RB_FAILPOINT=name:nth` by
    /// processes that cannot call this (C and Python test programs).
    pub fn arm(name: &'static str, nth: u64) {
        arm_with(name, nth, libc::SIGKILL);
    }

    /// Like [`arm`], but the process stops (SIGSTOP) there instead, holding
    /// whatever it holds, until it gets SIGCONT (`RB_FAILPOINT=name:nth:stop`).
    pub fn arm_stop(name: &'static str, nth: u64) {
        arm_with(name, nth, libc::SIGSTOP);
    }

    fn arm_with(name: &'static str, nth: u64, signal: i32) {
        *ARMED.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
        SIGNAL.store(signal, Relaxed);
        COUNTDOWN.store(nth, Relaxed);
    }

    fn from_env() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let Ok(spec) = std::env::var("RB_FAILPOINT") else {
                return;
            };
            let mut parts = spec.split(':');
            let (Some(name), Some(Ok(nth))) = (parts.next(), parts.next().map(str::parse)) else {
                return;
            };
            let name = Box::leak(name.to_owned().into_boxed_str());
            match parts.next() {
                Some("stop") => arm_stop(name, nth),
                _ => arm(name, nth),
            }
        });
    }

    pub(crate) fn hit(name: &str) {
        from_env();
        if *ARMED.lock().unwrap_or_else(|e| e.into_inner()) == Some(name)
            && COUNTDOWN.fetch_sub(1, Relaxed) == 1
        {
            // SAFETY: a signal to our own process: SIGKILL never returns,
            // SIGSTOP returns once somebody sends SIGCONT.
            unsafe { libc::kill(libc::getpid(), SIGNAL.load(Relaxed)) };
        }
    }
}

#[cfg(feature = "failpoints")]
pub(crate) use armed::hit;
#[cfg(feature = "failpoints")]
pub use armed::{arm, arm_stop};

/// Without the `failpoints` feature a failpoint compiles to nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}
