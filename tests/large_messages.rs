//! Messages longer than the ring (issue 14): their bytes travel in a side
//! object `/dev/shm/sage_ringbuf_<queue>..<id>` and a descriptor goes through
//! the ring. Round trips, sizes reported, batches, full/timeout/shutdown
//! paths, real processes, and the failure model with SIGKILLs at exact
//! places (failpoints): nothing left in /dev/shm after normal use, a dead
//! producer's orphan reclaimed by the next user and by `Queue::reclaim`, a
//! consumer killed during the copy loses nothing.
//!
//! These tests follow one-shot side objects, so their producers' handles keep
//! messages out of the queue's pool (`Options::pool(false)`); `tests/pool.rs`
//! covers the pool.

mod common;

use std::time::Duration;

use common::{fork, pattern, refused_while_full, unique_name, wait_child, Cleanup, Exit};
use ring_buffer::{Error, Options, Queue};

/// A new queue, through a handle that uses one-shot side objects.
fn fresh(tag: &str, size: u32) -> (Queue, Cleanup) {
    let (q, c) = common::fresh(tag, size);
    drop(q);
    (one_shot(&c.0), c)
}

/// Queue `name` opened by a handle that uses one-shot side objects.
fn one_shot(name: &str) -> Queue {
    Queue::open_with(name, &Options::default().pool(false)).unwrap()
}

/// The side objects of queue `name` in /dev/shm now.
fn side_objects(name: &str) -> Vec<String> {
    let stem = format!("sage_ringbuf_{name}..");
    let mut found: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&stem))
        .collect();
    found.sort();
    found
}

#[test]
fn a_message_longer_than_the_ring_round_trips_and_leaves_nothing() {
    let (q, c) = fresh("large_rt", 1024);
    let big = pattern(300_000, 1);
    q.send(&big).unwrap();
    assert_eq!(side_objects(&c.0).len(), 1, "one side object while queued");
    assert_eq!(q.len().unwrap(), 1);
    assert_eq!(q.recv().unwrap(), big);
    assert!(side_objects(&c.0).is_empty(), "removed once consumed");
    assert_eq!(q.len().unwrap(), 0);
    // Small messages still go inline, before and after.
    q.send(b"small").unwrap();
    q.send(&big).unwrap();
    q.send(b"after").unwrap();
    assert_eq!(q.recv().unwrap(), b"small");
    assert_eq!(q.recv().unwrap(), big);
    assert_eq!(q.recv().unwrap(), b"after");
    assert!(side_objects(&c.0).is_empty());
}

#[test]
fn buffer_too_small_reports_the_whole_size_and_consumes_nothing() {
    let (q, c) = fresh("large_small_buf", 1024);
    let big = pattern(50_000, 2);
    q.send(&big).unwrap();
    let mut small = vec![0u8; 1000];
    assert_eq!(
        q.try_recv_into(&mut small),
        Err(Error::BufferTooSmall { needed: 50_000 })
    );
    assert_eq!(q.len().unwrap(), 1);
    let mut buf = vec![0u8; 50_000];
    assert_eq!(q.try_recv_into(&mut buf).unwrap(), 50_000);
    assert_eq!(buf, big);
    assert!(side_objects(&c.0).is_empty());
}

#[test]
fn batches_carry_large_messages_in_order() {
    let (q, c) = fresh("large_batch", 1024);
    let msgs: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        pattern(5000, 3),
        pattern(7000, 4),
        b"b".to_vec(),
    ];
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let mut sent = 0;
    while sent < refs.len() {
        sent += q.try_send_batch(&refs[sent..]).unwrap();
    }
    assert_eq!(q.len().unwrap(), 4);
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(q.try_recv_batch(10).unwrap());
    }
    assert_eq!(got, msgs);
    assert!(side_objects(&c.0).is_empty());
}

#[test]
fn full_timeout_and_shutdown_leave_no_side_object() {
    let (q, c) = fresh("large_full", 1024);
    let big = pattern(10_000, 5);
    let filler = refused_while_full(&q, &big);
    assert!(side_objects(&c.0).is_empty());
    assert_eq!(q.recv().unwrap(), filler);
    q.shutdown().unwrap();
    assert_eq!(q.send(&big), Err(Error::Shutdown));
    assert!(side_objects(&c.0).is_empty());
}

/// The out-of-line messages queued stay within 128 MiB (or one alone): past
/// that, a producer waits as for a full ring, whatever room the ring has for
/// descriptors. Before, a 4 KiB queue took every message it was given, one
/// side object each, until /dev/shm was full. Messages taken no longer
/// count.
#[test]
fn out_of_line_messages_queued_are_bounded() {
    let (q, c) = fresh("large_budget", 4096);
    let big = pattern(40 << 20, 9);
    for _ in 0..3 {
        q.try_send(&big).unwrap(); // 120 MiB
    }
    assert_eq!(q.try_send(&big), Err(Error::Full));
    assert_eq!(
        q.send_timeout(&big, Duration::from_millis(50)),
        Err(Error::Timeout)
    );
    assert_eq!(q.try_send_batch(&[&big[..]]), Err(Error::Full));
    // Small messages still go through the ring.
    q.try_send(b"small").unwrap();
    assert_eq!(side_objects(&c.0).len(), 3);
    let is_big = |m: Vec<u8>| m.len() == big.len() && m == big;
    assert!(is_big(q.recv().unwrap()));
    q.try_send(&big).unwrap();
    assert!(is_big(q.recv().unwrap()));
    assert!(is_big(q.recv().unwrap()));
    assert_eq!(q.recv().unwrap(), b"small");
    assert!(is_big(q.recv().unwrap()));
    // One message alone may pass the budget.
    let huge = pattern(130 << 20, 10);
    q.try_send(&huge).unwrap();
    assert_eq!(q.try_send(&big), Err(Error::Full));
    let got = q.recv().unwrap();
    assert!(got.len() == huge.len() && got == huge);
    assert!(side_objects(&c.0).is_empty());
}

#[test]
fn removing_the_queue_removes_its_queued_side_objects() {
    let name = unique_name("large_remove");
    drop(Queue::create(&name, 1024).unwrap());
    let q = one_shot(&name);
    q.send(&pattern(4096, 6)).unwrap();
    assert_eq!(side_objects(&name).len(), 1);
    drop(q);
    assert!(Queue::remove_if_unused(&name).unwrap());
    assert!(side_objects(&name).is_empty());
}

#[test]
fn large_messages_between_processes() {
    let (q, c) = fresh("large_procs", 4096);
    const N: usize = 40;
    let producer = fork(|| {
        let q = one_shot(&c.0);
        for i in 0..N {
            let len = if i % 3 == 0 { 100 } else { 1 << 20 };
            q.send(&pattern(len, i as u8)).unwrap();
        }
        0
    });
    for i in 0..N {
        let len = if i % 3 == 0 { 100 } else { 1 << 20 };
        assert_eq!(
            q.recv_timeout(Duration::from_secs(30)).unwrap(),
            pattern(len, i as u8)
        );
    }
    assert_eq!(wait_child(producer, Duration::from_secs(30)), Exit::Code(0));
    assert!(side_objects(&c.0).is_empty());
}

#[test]
fn reclaim_keeps_queued_side_objects() {
    let (q, c) = fresh("large_keep", 1024);
    let big = pattern(20_000, 7);
    q.send(&big).unwrap();
    // Published, unlocked, but named by a queued descriptor: not an orphan.
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
    let again = Queue::open(&c.0).unwrap();
    drop(again);
    assert_eq!(side_objects(&c.0).len(), 1);
    assert_eq!(q.recv().unwrap(), big);
}

#[cfg(feature = "failpoints")]
mod killed {
    use super::*;
    use ring_buffer::failpoint;

    /// A producer SIGKILLed after naming its side object and before
    /// publishing the descriptor leaves an orphan; the queue's next user
    /// removes it, and nothing reaches the consumer.
    #[test]
    fn producer_killed_before_publishing_leaves_an_orphan_the_next_user_removes() {
        let (q, c) = fresh("large_kill_prod", 1024);
        let child = fork(|| {
            let q = one_shot(&c.0);
            failpoint::arm("side_linked", 1);
            let _ = q.send(&pattern(8000, 9));
            0
        });
        assert_eq!(
            wait_child(child, Duration::from_secs(10)),
            Exit::Signal(libc::SIGKILL)
        );
        assert_eq!(side_objects(&c.0).len(), 1, "the orphan");
        assert_eq!(q.try_recv(), Err(Error::Empty));
        let next = Queue::open(&c.0).unwrap();
        assert!(side_objects(&c.0).is_empty(), "the next open reclaimed it");
        drop(next);
    }

    /// Killed before the object has a name: nothing at all is left.
    #[test]
    fn producer_killed_while_writing_leaves_nothing() {
        let (_q, c) = fresh("large_kill_write", 1024);
        let child = fork(|| {
            let q = one_shot(&c.0);
            failpoint::arm("side_written", 1);
            let _ = q.send(&pattern(8000, 10));
            0
        });
        assert_eq!(
            wait_child(child, Duration::from_secs(10)),
            Exit::Signal(libc::SIGKILL)
        );
        assert!(side_objects(&c.0).is_empty());
    }

    /// Killed after publishing, before dropping its lock: the message is
    /// delivered and its object removed as usual.
    #[test]
    fn producer_killed_after_publishing_loses_nothing() {
        let (q, c) = fresh("large_kill_pub", 1024);
        let child = fork(|| {
            let q = one_shot(&c.0);
            failpoint::arm("side_published", 1);
            let _ = q.send(&pattern(8000, 11));
            0
        });
        assert_eq!(
            wait_child(child, Duration::from_secs(10)),
            Exit::Signal(libc::SIGKILL)
        );
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
        assert_eq!(q.recv().unwrap(), pattern(8000, 11));
        assert!(side_objects(&c.0).is_empty());
    }

    /// A consumer killed half-way through copying a side object loses
    /// nothing: the descriptor is still queued for the next consumer.
    #[test]
    fn consumer_killed_during_the_copy_loses_nothing() {
        let (q, c) = fresh("large_kill_copy", 1024);
        q.send(&pattern(8000, 12)).unwrap();
        let child = fork(|| {
            let q = one_shot(&c.0);
            failpoint::arm("reader_mid_side_copy", 1);
            let _ = q.recv();
            0
        });
        assert_eq!(
            wait_child(child, Duration::from_secs(10)),
            Exit::Signal(libc::SIGKILL)
        );
        assert_eq!(
            q.recv_timeout(Duration::from_secs(5)).unwrap(),
            pattern(8000, 12)
        );
        assert!(side_objects(&c.0).is_empty());
    }

    /// A consumer killed after taking the item, before removing its object:
    /// that one item is gone with it, its object is an orphan, and
    /// `Queue::reclaim` (what `sage-queue gc` calls) removes it.
    #[test]
    fn consumer_killed_after_taking_loses_only_that_item_and_gc_reclaims() {
        let (q, c) = fresh("large_kill_cons", 1024);
        q.send(&pattern(8000, 13)).unwrap();
        q.send(&pattern(9000, 14)).unwrap();
        let child = fork(|| {
            let q = one_shot(&c.0);
            failpoint::arm("side_consumed", 1);
            let _ = q.recv();
            0
        });
        assert_eq!(
            wait_child(child, Duration::from_secs(10)),
            Exit::Signal(libc::SIGKILL)
        );
        assert_eq!(side_objects(&c.0).len(), 2, "the orphan and the queued one");
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 1);
        assert_eq!(side_objects(&c.0).len(), 1);
        assert_eq!(q.recv().unwrap(), pattern(9000, 14));
        assert!(side_objects(&c.0).is_empty());
    }

    /// `reclaim` of a queue that is gone removes every unused side object of
    /// its name.
    #[test]
    fn reclaim_of_a_removed_queue_removes_its_orphans() {
        let name = unique_name("large_kill_gone");
        drop(Queue::create(&name, 1024).unwrap());
        let _c = common::Cleanup(name.clone());
        let q = one_shot(&name);
        let child = fork(|| {
            let q = one_shot(&name);
            failpoint::arm("side_linked", 1);
            let _ = q.send(&pattern(8000, 15));
            0
        });
        assert_eq!(
            wait_child(child, Duration::from_secs(10)),
            Exit::Signal(libc::SIGKILL)
        );
        drop(q);
        // SAFETY-free: unlink the queue object directly, as a crash of a
        // remover between its two steps would leave things.
        std::fs::remove_file(format!("/dev/shm/sage_ringbuf_{name}")).unwrap();
        assert_eq!(side_objects(&name).len(), 1);
        assert_eq!(Queue::reclaim(&name).unwrap(), 1);
        assert!(side_objects(&name).is_empty());
    }
}
