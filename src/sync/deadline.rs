//! How long an operation may wait, on the monotonic clock.

use std::time::Duration;

/// Nanoseconds on `clock`.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks asked for
    // (CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE since Linux 2.6.32) always
    // exist, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds on `CLOCK_MONOTONIC`.
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds on `CLOCK_MONOTONIC_COARSE`: the clock as of the last tick
/// (a few milliseconds behind at most), read in a few nanoseconds, for
/// checks that come due after tens of milliseconds.
pub(crate) fn coarse_monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Longest a try-once operation waits for a lock held by another process
/// (copies of very large messages legitimately hold it a while).
pub(crate) const TRY_LOCK_GRACE_NS: u64 = 100_000_000;

/// An instant on the monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline(u64);

impl Deadline {
    /// `ns` nanoseconds from now, saturating (a huge timeout never wraps).
    pub(crate) fn after_ns(ns: u64) -> Deadline {
        Deadline(monotonic_ns().saturating_add(ns))
    }

    pub(crate) fn expired(self) -> bool {
        monotonic_ns() >= self.0
    }

    /// This deadline, or `other` if it comes first: the end of one slice of
    /// a wait that has a deadline of its own (or none).
    pub(crate) fn or_earlier(self, other: Option<Deadline>) -> Deadline {
        other.map_or(self, |d| d.min(self))
    }

    /// The deadline as an absolute `CLOCK_MONOTONIC` timespec (for futexes).
    pub(crate) fn monotonic_timespec(self) -> libc::timespec {
        // Clamp so that tv_sec stays a valid time_t however far away it is.
        let ns = self.0.min(i64::MAX as u64);
        libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as _,
        }
    }

    /// The same instant as an absolute `CLOCK_REALTIME` timespec, for
    /// `pthread_mutex_timedlock`, which knows no other clock.
    pub(crate) fn realtime_timespec(self) -> libc::timespec {
        let remaining = self.0.saturating_sub(monotonic_ns());
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `monotonic_ns`.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
        let ns = (now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
            .saturating_add(remaining)
            .min(i64::MAX as u64);
        libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as _,
        }
    }
}

/// How long a blocking operation may wait for room or for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Try once, never sleep.
    Try,
    /// Wait as long as it takes.
    Forever,
    /// Wait until this instant at the latest.
    Until(Deadline),
}

impl Wait {
    /// The C API's convention: 0 tries once, a negative value waits forever,
    /// a positive one waits that many nanoseconds.
    pub(crate) fn from_timeout_ns(timeout_ns: i64) -> Wait {
        match timeout_ns {
            0 => Wait::Try,
            t if t < 0 => Wait::Forever,
            t => Wait::Until(Deadline::after_ns(t as u64)),
        }
    }

    pub(crate) fn from_duration(timeout: Duration) -> Wait {
        if timeout.is_zero() {
            Wait::Try
        } else {
            Wait::Until(Deadline::after_ns(
                u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            ))
        }
    }

    /// The deadline, if the wait is bounded and may sleep.
    pub(crate) fn deadline(self) -> Option<Deadline> {
        match self {
            Wait::Until(d) => Some(d),
            _ => None,
        }
    }

    /// How long to wait for a lock another process holds. A try-once
    /// operation never waits for room or messages, but it does wait for a
    /// peer's ongoing copy to finish, at most [`TRY_LOCK_GRACE_NS`]: a peer
    /// stopped (SIGSTOP, a debugger) inside one then costs a try-once call
    /// `Timeout` instead of hanging it. Bounded waits use their own deadline;
    /// unbounded ones wait as long as a live holder holds it (a dead holder
    /// never blocks anybody: waiters take its lock over, see
    /// `crate::sync::lock`).
    pub(crate) fn lock_deadline(self) -> Option<Deadline> {
        match self {
            Wait::Try => Some(Deadline::after_ns(TRY_LOCK_GRACE_NS)),
            Wait::Forever => None,
            Wait::Until(d) => Some(d),
        }
    }

    /// Whether no more waiting is allowed.
    pub(crate) fn expired(self) -> bool {
        match self {
            Wait::Try => true,
            Wait::Forever => false,
            Wait::Until(d) => d.expired(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_the_c_convention() {
        assert_eq!(Wait::from_timeout_ns(0), Wait::Try);
        assert_eq!(Wait::from_timeout_ns(-1), Wait::Forever);
        assert_eq!(Wait::from_timeout_ns(i64::MIN), Wait::Forever);
        assert!(matches!(Wait::from_timeout_ns(1), Wait::Until(_)));
        assert!(!Wait::from_timeout_ns(i64::MAX).expired());
        assert!(Wait::Try.expired());
        assert!(!Wait::Forever.expired());
        assert_eq!(Wait::from_duration(Duration::ZERO), Wait::Try);
        assert!(!Wait::from_duration(Duration::MAX).expired());
    }

    #[test]
    fn far_deadlines_make_valid_timespecs() {
        let d = Deadline::after_ns(u64::MAX);
        let ts = d.monotonic_timespec();
        assert!(ts.tv_sec > 0 && (0..1_000_000_000).contains(&ts.tv_nsec));
        let rt = d.realtime_timespec();
        assert!(rt.tv_sec > 0 && (0..1_000_000_000).contains(&rt.tv_nsec));
    }
}
