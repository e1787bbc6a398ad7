//! Test-only failpoints: named places in the hot paths where a test can make
//! the process kill itself (SIGKILL) at an exact instant: holding a lock,
//! half-way through a copy, right before publishing. Compiled only with the
//! `failpoints` feature; the shipped library has none.

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

    use crate::sync::once::NoWaitOnce;

    // No lock anywhere here: every hot path of the test build passes through
    // `hit`, and a process forked while another thread held a lock of it
    // would inherit the lock held by a thread it does not have, and hang in
    // its first call (tests/fork_while_busy.rs).

    /// The armed failpoint's name (a leaked `&'static str`), or null.
    static ARMED: AtomicPtr<&'static str> = AtomicPtr::new(std::ptr::null_mut());
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
        // Disarmed while the signal and count change, armed by the Release
        // store that `hit`'s Acquire load pairs with. A test arms a few
        // times per process: the leaked names are a few bytes each.
        ARMED.store(std::ptr::null_mut(), Ordering::Relaxed);
        SIGNAL.store(signal, Ordering::Relaxed);
        COUNTDOWN.store(nth, Ordering::Relaxed);
        ARMED.store(Box::into_raw(Box::new(name)), Ordering::Release);
    }

    /// Arms the failpoint `RB_FAILPOINT` names, once per process. The first
    /// caller reads it; callers meanwhile go on unarmed instead of waiting
    /// (a wait would be a lock). getenv, not std::env::var: std's variant
    /// takes the environment lock.
    fn from_env() {
        static READ: NoWaitOnce = NoWaitOnce::new();
        READ.run(|| {
            arm_from_env();
            true
        });
    }

    fn arm_from_env() {
        // SAFETY: getenv with a NUL-terminated name; the returned string is
        // copied before any other call could change the environment.
        let spec = unsafe {
            let value = libc::getenv(c"RB_FAILPOINT".as_ptr());
            (!value.is_null()).then(|| {
                std::ffi::CStr::from_ptr(value)
                    .to_string_lossy()
                    .into_owned()
            })
        };
        if let Some(spec) = spec {
            let mut parts = spec.split(':');
            if let (Some(name), Some(Ok(nth))) = (parts.next(), parts.next().map(str::parse)) {
                let name = Box::leak(name.to_owned().into_boxed_str());
                match parts.next() {
                    Some("stop") => arm_stop(name, nth),
                    _ => arm(name, nth),
                }
            }
        }
    }

    pub(crate) fn hit(name: &str) {
        from_env();
        // Acquire pairs with the Release store in `arm_with`: the count and
        // signal of this arming are seen.
        let armed = ARMED.load(Ordering::Acquire);
        // SAFETY: a non-null ARMED points to a leaked, never freed Box.
        let armed_name = (!armed.is_null()).then(|| unsafe { *armed });
        if armed_name == Some(name) && COUNTDOWN.fetch_sub(1, Ordering::Relaxed) == 1 {
            // SAFETY: a signal to our own process: SIGKILL never returns,
            // SIGSTOP returns once somebody sends SIGCONT.
            unsafe { libc::kill(libc::getpid(), SIGNAL.load(Ordering::Relaxed)) };
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
