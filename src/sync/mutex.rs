//! Robust, process-shared pthread mutexes living in shared memory.
//!
//! A process killed while holding one does not wedge anybody: the kernel
//! walks the dead thread's robust list, marks the mutex, and the next locker
//! gets `EOWNERDEAD`. [`lock`] then runs the caller's repair and marks the
//! mutex consistent before handing it out.

use std::io;
use std::mem::MaybeUninit;

use super::deadline::Deadline;
use crate::error::{Error, Result};

/// Initialises a process-shared, robust mutex in place.
///
/// # Safety
/// `m` must point to writable memory for a `pthread_mutex_t`, aligned to 8,
/// that no thread uses as a mutex while this runs.
pub(crate) unsafe fn init_robust(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    };
    // SAFETY: `attr` is initialised by pthread_mutexattr_init before any other
    // use and destroyed once, after the last; `m` is valid per the contract.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        // Miri (`make miri`) runs one process and supports neither
        // attribute: there the mutex is private and not robust. The
        // single-threaded heap images it checks lock it uncontended and
        // never see a dead owner, so the rest runs as in production.
        let result = if cfg!(miri) {
            Ok(())
        } else {
            check(libc::pthread_mutexattr_setpshared(
                attr.as_mut_ptr(),
                libc::PTHREAD_PROCESS_SHARED,
            ))
            .and_then(|()| {
                check(libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                ))
            })
        }
        .and_then(|()| check(libc::pthread_mutex_init(m, attr.as_ptr())));
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        result
    }
}

/// A held lock; unlocks when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub(crate) struct Guard {
    m: *mut libc::pthread_mutex_t,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds `m`, and the
        // mapping holding `m` outlives the guard (contract of `lock`).
        unsafe { libc::pthread_mutex_unlock(self.m) };
    }
}

/// Locks `m`. Uncontended, that is one `trylock`; contended, it waits until
/// the deadline `deadline()` returns (computed only then), or for ever if
/// that is `None`.
///
/// When the previous owner died holding it, `repair` runs under the lock
/// before it is marked consistent, so that it can put the guarded state back
/// in order.
///
/// # Safety
/// `m` must point to an initialised process-shared mutex in memory that
/// stays mapped until the returned guard is dropped.
pub(crate) unsafe fn lock(
    m: *mut libc::pthread_mutex_t,
    deadline: impl FnOnce() -> Option<Deadline>,
    repair: impl FnOnce(),
) -> Result<Guard> {
    // SAFETY: `m` is valid per the contract; `ts` outlives the call.
    let rc = unsafe {
        match libc::pthread_mutex_trylock(m) {
            libc::EBUSY => match deadline() {
                None => libc::pthread_mutex_lock(m),
                Some(d) => {
                    let ts = d.realtime_timespec();
                    libc::pthread_mutex_timedlock(m, &ts)
                }
            },
            rc => rc,
        }
    };
    match rc {
        0 => Ok(Guard { m }),
        libc::EOWNERDEAD => {
            // We own the mutex now; build the guard first so that a panic in
            // `repair` still unlocks (leaving the mutex unrecoverable rather
            // than held for ever).
            let guard = Guard { m };
            repair();
            // SAFETY: this thread holds `m` (EOWNERDEAD hands it over).
            unsafe { libc::pthread_mutex_consistent(m) };
            Ok(guard)
        }
        libc::ETIMEDOUT => Err(Error::Timeout),
        // A holder died and the next locker failed to repair it, or the mutex
        // bytes were overwritten: either way the queue's state is not sound.
        libc::ENOTRECOVERABLE | libc::EINVAL => Err(Error::Corrupt),
        e => Err(Error::System(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A robust mutex on the heap, leaked so that threads can share its
    /// address for the rest of the test process.
    fn new_mutex() -> usize {
        // SAFETY: an all-zero pthread_mutex_t is valid storage to initialise.
        let m: &'static mut libc::pthread_mutex_t =
            Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: fresh, exclusively owned, 8-aligned storage.
        unsafe { init_robust(m).unwrap() };
        m as *mut _ as usize
    }

    fn lock_at(m: usize, deadline: Option<Deadline>, repair: impl FnOnce()) -> Result<Guard> {
        // SAFETY: `m` is an initialised mutex that is never freed.
        unsafe { lock(m as *mut libc::pthread_mutex_t, || deadline, repair) }
    }

    #[test]
    fn locks_times_out_and_unlocks() {
        let m = new_mutex();
        let g = lock_at(m, None, || unreachable!()).unwrap();
        let other = std::thread::spawn(move || {
            lock_at(m, Some(Deadline::after_ns(20_000_000)), || unreachable!()).err()
        })
        .join()
        .unwrap();
        assert_eq!(other, Some(Error::Timeout));
        drop(g);
        assert!(lock_at(m, Some(Deadline::after_ns(1_000_000)), || unreachable!()).is_ok());
    }

    #[test]
    fn a_dead_owner_is_repaired() {
        let m = new_mutex();
        // A thread that exits holding a robust mutex counts as a dead owner.
        std::thread::spawn(move || std::mem::forget(lock_at(m, None, || unreachable!()).unwrap()))
            .join()
            .unwrap();
        let mut repaired = false;
        let g = lock_at(m, None, || repaired = true).unwrap();
        assert!(repaired);
        drop(g);
        // Consistent again: the next locker finds nothing to repair.
        drop(lock_at(m, None, || unreachable!()).unwrap());
    }
}
