//! Helpers shared by the integration tests: unique queue names, cleanup that
//! runs even when a test panics, and real child processes (fork).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ring_buffer::{Error, Queue};

/// A queue name no other test (or test run) uses. Its object is removed if
/// the test process is interrupted (SIGINT, SIGTERM, SIGHUP) as well.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("rt_{tag}_{}_{n}", std::process::id());
    on_signal::remember(&name);
    name
}

/// Removal of this process's queue objects when a signal ends it: the paths
/// live in a fixed, append-only table that the handler walks with unlink(2),
/// which is async-signal-safe (no allocation, no lock).
mod on_signal {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Once;

    const SLOTS: usize = 1024;
    const LEN: usize = 128;
    static mut PATHS: [[u8; LEN]; SLOTS] = [[0; LEN]; SLOTS];
    static READY: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
    static USED: AtomicUsize = AtomicUsize::new(0);
    static OWNER: AtomicUsize = AtomicUsize::new(0);

    pub fn remember(name: &str) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            OWNER.store(std::process::id() as usize, Ordering::Relaxed);
            let handler = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: the handler only calls async-signal-safe functions.
                unsafe { libc::signal(sig, handler) };
            }
        });
        let slot = USED.fetch_add(1, Ordering::Relaxed);
        let path = format!("/dev/shm/sage_ringbuf_{name}");
        if slot >= SLOTS || path.len() >= LEN {
            return;
        }
        // SAFETY: each slot is written once, by the thread that claimed it,
        // before READY publishes it to the handler; the copy stays inside it.
        unsafe {
            let dst = std::ptr::addr_of_mut!(PATHS[slot]) as *mut u8;
            std::ptr::copy_nonoverlapping(path.as_ptr(), dst, path.len());
        }
        READY[slot].store(true, Ordering::Release);
    }

    extern "C" fn handler(sig: libc::c_int) {
        // SAFETY: getpid, unlink, signal and raise are async-signal-safe; a
        // ready slot is never written again and is NUL-terminated. Forked
        // children leave the cleanup to the test process.
        unsafe {
            if libc::getpid() as usize == OWNER.load(Ordering::Relaxed) {
                let used = USED.load(Ordering::Relaxed).min(SLOTS);
                for (slot, ready) in READY.iter().enumerate().take(used) {
                    if ready.load(Ordering::Acquire) {
                        let path = std::ptr::addr_of!(PATHS[slot]) as *const libc::c_char;
                        libc::unlink(path);
                    }
                }
            }
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Removes the queue object when dropped, also while unwinding from a failed
/// assertion, so no test leaves anything in /dev/shm.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Queue::remove(&self.0);
    }
}

/// `len` bytes that differ from position to position and from `seed` to
/// `seed` (a message whose every byte is checked on arrival).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// A fresh queue of `size` bytes and the guard that removes it.
pub fn fresh(tag: &str, size: u32) -> (Queue, Cleanup) {
    let name = unique_name(tag);
    let q = Queue::create(&name, size).expect("create");
    (q, Cleanup(name))
}

/// Fills `q`'s ring with one message as long as the ring takes, then checks
/// that `big` (longer than the ring) is refused while it is full: `Full` for
/// a try, `Timeout` for a bounded send. Returns the filler, still queued.
pub fn refused_while_full(q: &Queue, big: &[u8]) -> Vec<u8> {
    let filler = vec![0u8; q.max_message_len() as usize];
    q.send(&filler).unwrap();
    assert_eq!(q.try_send(big), Err(Error::Full));
    assert_eq!(
        q.send_timeout(big, Duration::from_millis(20)),
        Err(Error::Timeout)
    );
    filler
}

/// Runs `body` in a forked child that exits with its return value (101 if it
/// panics). The child never returns into the test harness.
pub fn fork(body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `body` and then _exit; the test harness's
    // other threads are not touched in the child.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Die with the test (the forking thread) instead of outliving it,
        // blocked on a queue nobody will ever feed again.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: _exit skips the parent's atexit handlers and buffers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Waits for `pid`, at most `limit` (then SIGKILLs it and panics).
pub fn wait_child(pid: libc::pid_t, limit: Duration) -> Exit {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else {
                Exit::Signal(libc::WTERMSIG(status))
            };
        }
        if start.elapsed() > limit {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child {pid} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills `pid` with SIGKILL and reaps it.
pub fn kill9(pid: libc::pid_t) {
    // SAFETY: kill and reap our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Memory shared with forked children (anonymous, MAP_SHARED), zeroed.
pub struct SharedMem {
    ptr: *mut u8,
    len: usize,
}

impl SharedMem {
    pub fn new(len: usize) -> SharedMem {
        // SAFETY: anonymous shared mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        SharedMem {
            ptr: ptr as *mut u8,
            len,
        }
    }

    /// The memory as `n` atomics of type `T` (8-byte aligned mapping).
    pub fn atomics<T>(&self) -> &[T] {
        let n = self.len / std::mem::size_of::<T>();
        // SAFETY: page-aligned, zeroed, lives as long as self; T is an atomic
        // integer type for which all-zero is valid.
        unsafe { std::slice::from_raw_parts(self.ptr as *const T, n) }
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// CPU time (user + system, in clock ticks) a process has used so far.
pub fn cpu_ticks(pid: libc::pid_t) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
