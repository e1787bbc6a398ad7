//! Asymmetric store-load fences for the sleep/wake handshake
//! (`ops/wait.rs`): the waker's side, run after every publication, costs a
//! compiler fence; the sleeper's side, run only before going to sleep, pays
//! for both with `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`.
//!
//! The handshake needs store-load order on both sides (a waker stores its
//! position and loads the "wanted" flag; a sleeper stores the flag and loads
//! the position). A `SeqCst` fence on the waker's side waits for its store
//! of the position to leave the store buffer, which is a cache miss whenever
//! a consumer on another core is watching that line: a fifth of the time of
//! a pinned 1 -> 1 stream of 64-byte messages went there. The expedited
//! membarrier makes every CPU that runs a thread of a registered process
//! execute a full memory barrier before it returns (an IPI; a CPU that runs
//! something else has passed a context switch, itself a barrier). So when a
//! sleeper's flag store is followed by a membarrier, a waker whose program
//! order is "store position; load flag" either loaded the flag after that
//! barrier, and sees it, or had its store made visible by it, and the
//! sleeper's re-check sees the position. This is the pattern of liburcu and
//! folly's `asymmetricHeavyBarrier`.
//!
//! A process skips its fence only once it is registered
//! (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, asked when it opens or
//! creates a queue, and again in a forked child, whose inherited
//! registration this code does not rely on). Where
//! the kernel or a seccomp profile refuses it, or `RB_MEMBARRIER=0` is set in
//! the environment, the process keeps its `SeqCst` fences. A sleeper whose
//! membarrier is refused (a seccomp profile of its own, while processes of
//! other containers on the same kernel may be registered) cannot rule out a
//! waker that skipped its fence, so it sleeps in short slices instead (see
//! `wait::sleep_unless`): nothing hangs, whatever mix of processes shares a
//! queue. On a kernel without the command nobody registers, and sleepers
//! sleep as before. Under loom and Miri both sides
//! are plain `SeqCst` fences, the symmetric protocol the loom models check.

use super::atomic::{fence, Ordering::SeqCst};

#[cfg(not(any(loom, miri)))]
use std::sync::atomic::{compiler_fence, AtomicU8, Ordering};

#[cfg(not(any(loom, miri)))]
use super::{atfork, once::NoWaitOnce};

/// This process's registration: not asked yet (or forked since).
#[cfg(not(any(loom, miri)))]
const UNKNOWN: u8 = 0;
/// Registered: every expedited membarrier reaches this process's threads.
#[cfg(not(any(loom, miri)))]
const REGISTERED: u8 = 1;
/// Refused or switched off: this process fences.
#[cfg(not(any(loom, miri)))]
const FENCING: u8 = 2;

// Commands of membarrier(2), from <linux/membarrier.h> (a stable ABI).
#[cfg(not(any(loom, miri)))]
const CMD_QUERY: libc::c_int = 0;
#[cfg(not(any(loom, miri)))]
const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
#[cfg(not(any(loom, miri)))]
const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

#[cfg(not(any(loom, miri)))]
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

#[cfg(not(any(loom, miri)))]
static FORK_HANDLER: NoWaitOnce = NoWaitOnce::new();

/// The waker's side: orders the caller's earlier stores before its later
/// loads, as seen by any sleeper that runs [`heavy`] in between.
#[inline]
pub(crate) fn light() {
    #[cfg(not(any(loom, miri)))]
    {
        // Acquire pairs with the Release store in `register`: the
        // registration happened before this thread skips its fence.
        if STATE.load(Ordering::Acquire) == REGISTERED {
            compiler_fence(SeqCst);
            return;
        }
        fence(SeqCst);
        // A child forked with queues open asks here (a forked child has one
        // thread, and registers in microseconds).
        prepare();
    }
    #[cfg(any(loom, miri))]
    fence(SeqCst);
}

/// Registers this process for expedited membarriers unless it has asked
/// already. Called when a queue is opened or created (`Queue::wrap`), not
/// left to the first wake-up check: in a process with several threads the
/// kernel's registration waits for an RCU grace period (10-15 ms measured
/// here), which must not land on a first put.
pub(crate) fn prepare() {
    #[cfg(not(any(loom, miri)))]
    if STATE.load(Ordering::Relaxed) == UNKNOWN {
        register();
    }
}

/// The sleeper's side, between its store of the "wanted" flag and its
/// re-check of the position. False if the membarrier was refused to this
/// process (a seccomp profile: others on the same kernel may be registered):
/// then only wakers that fence are covered, and the caller must not sleep
/// unbounded. A kernel without the command (ENOSYS, EINVAL) registers
/// nobody, so every waker fences and the `SeqCst` fence here suffices.
pub(crate) fn heavy() -> bool {
    // Pairs with the `SeqCst` fence of wakers that do not skip theirs.
    fence(SeqCst);
    #[cfg(not(any(loom, miri)))]
    {
        #[cfg(test)]
        if tests::HEAVY_FAILS.load(Ordering::Relaxed) {
            return false;
        }
        membarrier(CMD_GLOBAL_EXPEDITED) == 0
            || matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOSYS | libc::EINVAL)
            )
    }
    #[cfg(any(loom, miri))]
    true
}

/// Asks the kernel to include this process in expedited membarriers.
#[cfg(not(any(loom, miri)))]
#[cold]
fn register() {
    // A forked child must ask again before it skips a fence, so the fork
    // handler comes first; while it cannot be installed, keep fencing.
    if !FORK_HANDLER.run(|| atfork::register(None, None, Some(forget_registration))) {
        return;
    }
    // getenv, not std::env::var_os, which takes std's environment lock: a
    // child forked while another thread held it would hang here.
    // SAFETY: getenv with a NUL-terminated name; the value is compared
    // before any other call could change the environment.
    let switched_off = unsafe {
        let value = libc::getenv(c"RB_MEMBARRIER".as_ptr());
        !value.is_null() && std::ffi::CStr::from_ptr(value).to_bytes() == b"0"
    };
    let registered = !switched_off && offered() && membarrier(CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
    // Release pairs with the Acquire load in `light`.
    STATE.store(
        if registered { REGISTERED } else { FENCING },
        Ordering::Release,
    );
}

/// Child side of `fork`: the child registers again on first use.
#[cfg(not(any(loom, miri)))]
unsafe extern "C" fn forget_registration() {
    STATE.store(UNKNOWN, Ordering::Relaxed);
}

/// Whether this kernel (and this process's seccomp profile) offers the
/// expedited global membarrier and its registration.
#[cfg(not(any(loom, miri)))]
fn offered() -> bool {
    let wanted = (CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED) as libc::c_long;
    let cmds = membarrier(CMD_QUERY);
    cmds >= 0 && cmds & wanted == wanted
}

#[cfg(not(any(loom, miri)))]
fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes no pointers; an unknown command is EINVAL.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) }
}

#[cfg(all(test, not(any(loom, miri))))]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::Mutex;

    /// Makes [`super::heavy`] report failure in this process.
    pub(super) static HEAVY_FAILS: AtomicBool = AtomicBool::new(false);

    /// `HEAVY_FAILS` is the process's: one test at a time sets it.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// Runs `f` with every membarrier of this process failing or not.
    pub(crate) fn with_heavy_failing<R>(fails: bool, f: impl FnOnce() -> R) -> R {
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        HEAVY_FAILS.store(fails, Relaxed);
        let result = f();
        HEAVY_FAILS.store(false, Relaxed);
        result
    }

    #[test]
    fn a_process_registers_on_first_use() {
        if !super::offered() {
            // Outside the project: this kernel (or its seccomp profile)
            // offers no expedited membarrier, and the process fences.
            eprintln!("membarrier(GLOBAL_EXPEDITED) not offered here: nothing to register");
            return;
        }
        // Another test's thread may be registering meanwhile: ask until an
        // answer is in.
        for _ in 0..10_000 {
            super::light();
            if super::STATE.load(super::Ordering::Acquire) != super::UNKNOWN {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(
            super::STATE.load(super::Ordering::Acquire),
            super::REGISTERED,
            "membarrier registration refused here"
        );
        assert!(with_heavy_failing(false, super::heavy));
    }

    /// Registration happens when a queue is opened, before any put: a
    /// forked child (which forgets its parent's registration) is registered
    /// right after creating a queue, without having woken anybody.
    #[test]
    fn opening_a_queue_registers_the_process() {
        if !super::offered() {
            eprintln!("membarrier(GLOBAL_EXPEDITED) not offered here: nothing to register");
            return;
        }
        super::prepare(); // the parent's fork handler is in place
        let name = format!("rbtest_barrier_{}", std::process::id());
        // SAFETY: the child only makes library calls and then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let before = super::STATE.load(super::Ordering::Relaxed);
            let q = crate::Queue::create(&name, 4096);
            let after = super::STATE.load(super::Ordering::Relaxed);
            let _ = crate::Queue::remove(&name);
            let code = match (before, q.is_ok(), after) {
                (super::UNKNOWN, true, super::REGISTERED) => 0,
                (_, false, _) => 3,
                (super::UNKNOWN, true, _) => 4, // not registered at open
                _ => 5,                         // the child kept the parent's state
            };
            // SAFETY: _exit ends the child without running the harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let _ = crate::Queue::remove(&name);
        assert!(libc::WIFEXITED(status), "the child died: {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "3: create failed, 4: not registered at open, 5: state inherited"
        );
    }
}
