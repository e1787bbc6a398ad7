//! A process forked while other threads of its parent are inside queue calls
//! can use queues in the child. `fork` copies every lock word as it is: a
//! process-wide lock of the library (or of its test build) held by a thread
//! that does not exist in the child stays held there for ever, and the
//! child's first call that takes it hangs. The Rust API has no handle
//! registry (the C API's is covered by `ffi-tests/test_fork_threads.c`), so
//! what this guards are the library's other process-wide state (the thread-id
//! cache of the queue locks) and the test-only failpoints that every hot
//! path passes through in the `failpoints` build `make test` runs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fresh, unique_name, wait_child, Cleanup, Exit};
use ring_buffer::Queue;

/// How long a child may take for its few calls before it counts as hung
/// (generous: the machine may be loaded; a hung child never finishes).
const CHILD_LIMIT_SECS: u32 = 10;

#[test]
fn children_forked_while_threads_are_inside_calls_never_hang() {
    let (busy, _busy_cleanup) = fresh("forkbusy", 4096);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    // Two threads put and get without pause, so that at any instant one of
    // them is likely inside a call (holding whatever the call holds).
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (q, stop, rounds) = (busy.clone(), stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = q.try_send(b"churn");
                    let _ = q.try_recv();
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (mut hung, mut failed) = (0, 0);
    let children = 150;
    for _ in 0..children {
        let name = unique_name("forkchild");
        let cleanup = Cleanup(name.clone());
        let child = common::fork(move || {
            // A hang ends the child with SIGALRM; the parent counts it.
            // SAFETY: signal and alarm with integer arguments only.
            unsafe {
                libc::signal(libc::SIGALRM, libc::SIG_DFL);
                libc::alarm(CHILD_LIMIT_SECS);
            }
            let Ok(q) = Queue::create(&name, 4096) else {
                return 10;
            };
            let Ok(other) = Queue::open(&name) else {
                return 11;
            };
            if q.try_send(b"hello").is_err() {
                return 12;
            }
            match other.try_recv() {
                Ok(m) if m == b"hello" => 0,
                _ => 13,
            }
        });
        match wait_child(child, Duration::from_secs(u64::from(CHILD_LIMIT_SECS) + 20)) {
            Exit::Code(0) => {}
            Exit::Signal(libc::SIGALRM) => hung += 1,
            other => {
                eprintln!("a child ended with {other:?}");
                failed += 1;
            }
        }
        drop(cleanup);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let rounds = rounds.load(Ordering::Relaxed);
    eprintln!(
        "{children} children forked during {rounds} thread rounds: {hung} hung, {failed} failed"
    );
    assert!(rounds > 0, "the busy threads never ran");
    assert_eq!((hung, failed), (0, 0), "children hung or failed");
}
