//! A lock owner in another pid namespace (containers of one pod sharing
//! `/dev/shm`, each with its own pids) is never robbed of its lock: its
//! thread id means nothing in this namespace's `/proc`, where it may even
//! name an unrelated live process, so a waiter here must not judge it dead.
//! Requires `--features failpoints` (the owner stops itself inside the lock)
//! and the right to create a pid namespace (CAP_SYS_ADMIN; without it the
//! test says so and checks nothing).

#![cfg(feature = "failpoints")]

mod common;

use std::time::Duration;

use common::{fork, fresh, kill9};
use ring_buffer::{failpoint, Error, Queue};

fn write_byte(fd: libc::c_int, b: u8) {
    // SAFETY: one byte from a live local to an open pipe.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
}

fn read_byte(fd: libc::c_int) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: one byte into a live local from an open pipe.
    let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
    (n == 1).then_some(b)
}

/// Forks a child that makes a new pid namespace, in which a process runs
/// `body` (which stops itself at a failpoint). Returns the child (killing it
/// kills the namespace: every process there dies with its parent) and what
/// it reported: `S` once that process stopped, `U` if the namespace could
/// not be made, `X` otherwise.
fn stopped_in_another_namespace(body: impl FnOnce() -> i32) -> (libc::pid_t, Option<u8>) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let child = fork(move || {
        // Our children are created in a new pid namespace.
        // SAFETY: unshare with a flag only.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            write_byte(wr, b'U');
            return 0;
        }
        // Pid 1 of the namespace, which cannot stop itself (init ignores
        // its own signals): its child runs `body`.
        let init = fork(move || {
            let holder = fork(body);
            let mut status = 0;
            // SAFETY: waitpid on our own child; WUNTRACED reports the stop.
            let r = unsafe { libc::waitpid(holder, &mut status, libc::WUNTRACED) };
            write_byte(
                wr,
                if r == holder && libc::WIFSTOPPED(status) {
                    b'S'
                } else {
                    b'X'
                },
            );
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let mut status = 0;
        // SAFETY: waitpid on our own child (it runs until we are killed).
        unsafe { libc::waitpid(init, &mut status, 0) };
        0
    });
    let state = read_byte(rd);
    // SAFETY: closing our own pipe ends.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
    (child, state)
}

fn skipped() {
    eprintln!(
        "SKIPPED: creating a pid namespace needs CAP_SYS_ADMIN, which this test \
         process lacks; the cross-namespace owner check was not exercised"
    );
}

#[test]
fn a_lock_owner_in_another_pid_namespace_is_waited_for_not_taken_over() {
    let (q, cleanup) = fresh("pidns", 64 * 1024);
    let name = cleanup.0.clone();
    let (child, state) = stopped_in_another_namespace(move || {
        let q = Queue::open(&name).unwrap();
        failpoint::arm_stop("writer_locked", 1);
        q.send(b"from another namespace").unwrap();
        0
    });
    if state == Some(b'U') {
        kill9(child);
        skipped();
        return;
    }
    assert_eq!(
        state,
        Some(b'S'),
        "the owner in the other namespace did not stop holding the lock"
    );
    // The owner is alive (stopped) and holds the writer lock: a bounded put
    // here must time out, several judgement slices long, not take it over.
    let r = q.send_timeout(b"from this namespace", Duration::from_millis(300));
    kill9(child);
    assert!(
        matches!(r, Err(Error::Timeout)),
        "the writer lock was taken from a live owner: {r:?}"
    );
}

/// A producer in another pid namespace, stopped after writing into a slot
/// of the queue's pool, before publishing: its thread id means nothing
/// here, so it holds the slot with a `flock` (the queue is marked as of
/// mixed namespaces), which keeps the reclaimer off while it lives and is
/// gone with it. Then the reclaimer frees the slot, and nothing of the
/// message arrives.
#[test]
fn a_slot_holder_in_another_pid_namespace_is_judged_by_its_flock() {
    let (q, cleanup) = fresh("pidns_slot", 1024);
    let name = cleanup.0.clone();
    let (child, state) = stopped_in_another_namespace(move || {
        let q = Queue::open(&name).unwrap();
        failpoint::arm_stop("slot_written", 1);
        q.send(&[7u8; 8000]).unwrap();
        0
    });
    if state == Some(b'U') {
        kill9(child);
        skipped();
        return;
    }
    assert_eq!(state, Some(b'S'), "the producer did not stop in its slot");
    let held = Queue::reclaim(&cleanup.0);
    kill9(child);
    assert_eq!(held.unwrap(), 0, "a live producer's slot was freed");
    // Its namespace dies with the child (each process there with its
    // parent): then its flock is gone, and so is the claim.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Queue::reclaim(&cleanup.0).unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead producer's slot was never freed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(q.try_recv(), Err(Error::Empty));
    q.send(&[8u8; 8000]).unwrap();
    assert_eq!(q.recv().unwrap(), vec![8u8; 8000]);
}
