//! Test-only failpoints: named places in the hot paths where a test can make
//! the process kill itself (SIGKILL) at an exact instant: holding a lock,
//! half-way through a copy, right before publishing. Compiled only with the
//! `failpoints` feature; the shipped library has none.

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Mutex;

    static ARMED: Mutex<Option<&'static str>> = Mutex::new(None);
    static COUNTDOWN: AtomicU64 = AtomicU64::new(0);

    /// Makes the process SIGKILL itself the `nth` time (1-based) it reaches
    /// the failpoint `name`. Also read from `RB_FAILPOINT=name:nth` by
    /// processes that cannot call this (C and Python test programs).
    pub fn arm(name: &'static str, nth: u64) {
        *ARMED.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
        COUNTDOWN.store(nth, Relaxed);
    }

    fn from_env() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if let Ok(spec) = std::env::var("RB_FAILPOINT") {
                if let Some((name, nth)) = spec.split_once(':') {
                    if let Ok(nth) = nth.parse() {
                        arm(Box::leak(name.to_owned().into_boxed_str()), nth);
                    }
                }
            }
        });
    }

    pub(crate) fn hit(name: &str) {
        from_env();
        if *ARMED.lock().unwrap_or_else(|e| e.into_inner()) == Some(name)
            && COUNTDOWN.fetch_sub(1, Relaxed) == 1
        {
            // SAFETY: kill on our own pid; SIGKILL never returns.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::arm;
#[cfg(feature = "failpoints")]
pub(crate) use armed::hit;

/// Without the `failpoints` feature a failpoint compiles to nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}
