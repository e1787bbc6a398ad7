//! Shared (not process-private) futexes: the kernel keys them on the physical
//! page, so sleepers in different processes that map the same object meet.
//!
//! Under `--cfg loom`, [`wait`], [`wake_all`] and [`wake_one`] (the
//! extension block's words) are loom's emulation in `loom_futex.rs`; the raw-address forms for
//! legacy counters stay system calls (the models do not use them).

use std::ptr;

#[cfg(not(loom))]
use super::atomic::AtomicU32;
use super::deadline::Deadline;
#[cfg(loom)]
pub(crate) use super::loom_futex::{wait, wake_all, wake_one};

/// Why a futex wait returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Woken, interrupted, or the word no longer held `expected`: re-check.
    Maybe,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or `deadline` passes.
#[cfg(not(loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> Woken {
    // SAFETY: a live atomic is an aligned, readable 32-bit word.
    unsafe { wait_at(word.as_ptr(), expected, deadline) }
}

/// [`wait`] on a raw address: the low half of a legacy 64-bit counter.
///
/// # Safety
/// `word` must be a 4-byte aligned address readable for the whole call.
pub(crate) unsafe fn wait_at(word: *const u32, expected: u32, deadline: Option<Deadline>) -> Woken {
    let ts = deadline.map(Deadline::monotonic_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is aligned and readable (contract above);
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout, `ts_ptr` is
    // NULL or points to `ts`, which outlives the call. The kernel only reads
    // the word.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT_BITSET,
            expected,
            ts_ptr,
            ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        Woken::TimedOut
    } else {
        Woken::Maybe
    }
}

/// Wakes every sleeper on `word`.
#[cfg(not(loom))]
pub(crate) fn wake_all(word: &AtomicU32) {
    wake_all_at(word.as_ptr())
}

/// [`wake_all`] on a raw address.
pub(crate) fn wake_all_at(word: *const u32) {
    // SAFETY: FUTEX_WAKE neither reads nor writes the word; it only wakes the
    // threads queued on its address, and fails harmlessly for a bad one.
    unsafe {
        libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, i32::MAX);
    }
}

/// Wakes at most one sleeper on `word` (a lock hand-over: waking them all
/// would only send the others back to sleep).
#[cfg(not(loom))]
pub(crate) fn wake_one(word: &AtomicU32) {
    // SAFETY: as in `wake_all_at`; the address is a live atomic.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}
