//! Helpers shared by the integration tests: unique queue names, cleanup that
//! runs even when a test panics, and real child processes (fork).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ring_buffer::Queue;

/// A queue name no other test (or test run) uses.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rt_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the queue object when dropped, also while unwinding from a failed
/// assertion, so no test leaves anything in /dev/shm.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Queue::remove(&self.0);
    }
}

/// A fresh queue of `size` bytes and the guard that removes it.
pub fn fresh(tag: &str, size: u32) -> (Queue, Cleanup) {
    let name = unique_name(tag);
    let q = Queue::create(&name, size).expect("create");
    (q, Cleanup(name))
}

/// Runs `body` in a forked child that exits with its return value (101 if it
/// panics). The child never returns into the test harness.
pub fn fork(body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `body` and then _exit; the test harness's
    // other threads are not touched in the child.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
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
