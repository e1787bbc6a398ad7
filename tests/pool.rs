//! The queue's pool (`src/pool.rs`): messages longer than the ring go into
//! side objects the queue keeps for reuse, `sage_ringbuf_<queue>..p<k>`.
//! Reuse, the bounds (slots busy, messages beyond the pool's bytes: one-shot
//! side objects), `Queue::reclaim` giving the memory back, forked children
//! with inherited handles, and the failure model with SIGKILLs at exact
//! places (failpoints): a dead producer's claim freed by the next user, a
//! consumer killed during the copy losing nothing, one killed after taking
//! losing only its item. Medium messages (`RING_BUFFER_POOLED_FROM` bytes or
//! more that fit in the ring) from handles opened with `pool_medium`.

mod common;

use std::time::Duration;

use common::{fork, fresh, pattern, refused_while_full, wait_child, Exit};
use ring_buffer::layout::RING_BUFFER_POOLED_FROM;
use ring_buffer::{Error, Options, Queue};

/// The side objects of queue `name` now: (pool slots, one-shot objects).
fn side_objects(name: &str) -> (usize, usize) {
    let stem = format!("sage_ringbuf_{name}..");
    let ids: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.strip_prefix(&stem).map(str::to_owned)
        })
        .collect();
    let slots = ids.iter().filter(|id| id.starts_with('p')).count();
    (slots, ids.len() - slots)
}

#[test]
fn one_slot_carries_message_after_message_and_reclaim_gives_it_back() {
    let (q, c) = fresh("pool_reuse", 1024);
    for round in 0..20u8 {
        let big = pattern(300_000 + usize::from(round) * 1000, round);
        q.send(&big).unwrap();
        assert_eq!(q.recv().unwrap(), big);
    }
    assert_eq!(side_objects(&c.0), (1, 0), "one slot, reused");
    // Nothing was orphaned; the free slot's memory goes back.
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
    assert_eq!(side_objects(&c.0), (0, 0));
    // The handle notices and makes the slot again.
    let big = pattern(200_000, 99);
    q.send(&big).unwrap();
    assert_eq!(side_objects(&c.0), (1, 0));
    assert_eq!(q.recv().unwrap(), big);
}

/// The inodes of queue `name`'s slot files now.
fn slot_inodes(name: &str) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let stem = format!("sage_ringbuf_{name}..p");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
        .filter_map(|e| Some(e.metadata().ok()?.ino()))
        .collect()
}

/// How many of this process's mappings and descriptors refer to files of
/// these inodes (by number: a file made with `O_TMPFILE` shows no name).
fn still_open(inodes: &[u64]) -> usize {
    use std::os::unix::fs::MetadataExt;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<u64>().ok())
        .filter(|ino| inodes.contains(ino))
        .count();
    let open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| Some(std::fs::metadata(e.ok()?.path()).ok()?.ino()))
        .filter(|ino| inodes.contains(ino))
        .count();
    mapped + open
}

/// A handle that had a slot mapped when `Queue::reclaim` removed it lets go
/// of it at its next message: it keeps no descriptor or mapping of a removed
/// slot, whose memory would stay allocated for as long as it did.
#[test]
fn a_handle_lets_go_of_the_slots_reclaim_removed() {
    let (q, c) = fresh("pool_trimmed", 1024);
    let big = pattern(4 << 20, 1);
    let mut removed = Vec::new();
    for _ in 0..3 {
        q.send(&big).unwrap();
        assert_eq!(q.recv().unwrap(), big);
        removed.extend(slot_inodes(&c.0));
        assert!(still_open(&removed) > 0, "mapped while in use");
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
        assert_eq!(side_objects(&c.0), (0, 0));
    }
    q.send(&big).unwrap();
    assert_eq!(q.recv().unwrap(), big);
    assert_eq!(side_objects(&c.0), (1, 0));
    assert_eq!(still_open(&removed), 0, "removed slots let go of");
}

/// A queue removed and made again under its name: the handles of the old
/// queue still deliver their messages to each other. The names of its slots
/// went with it and name the new queue's slots now, so a consumer of the old
/// queue that had never opened a slot opens the new queue's: its producer,
/// which has the old slot open, must not write into that file (no name
/// leads to it any more), and asks whether the name is still its file at
/// every claim once the queue is marked removed.
#[test]
fn handles_of_a_removed_queue_still_deliver_once_it_is_made_again() {
    let (old, c) = fresh("pool_remade", 1024);
    let old_consumer = Queue::open(&c.0).unwrap();
    deliver(&old, &old, 1..2);
    assert_eq!(side_objects(&c.0), (1, 0));
    Queue::remove(&c.0).unwrap();
    assert_eq!(side_objects(&c.0), (0, 0), "its free slot went with it");
    let new = Queue::create(&c.0, 1024).unwrap();
    let new_consumer = Queue::open(&c.0).unwrap();
    new.send(&pattern(8000, 2)).unwrap();
    old.send(&pattern(8000, 3)).unwrap();
    old.send(&pattern(9000, 4)).unwrap();
    assert_eq!(old_consumer.recv().unwrap(), pattern(8000, 3));
    assert_eq!(new_consumer.recv().unwrap(), pattern(8000, 2));
    assert_eq!(old.recv().unwrap(), pattern(9000, 4));
    drop((old, old_consumer));
    deliver(&new, &new_consumer, 5..6);
}

/// A consumer that has a slot open which `Queue::reclaim` removed since
/// (free, nobody held it) takes the next message of that slot from the file
/// its producer made under the name since: the old file holds no such
/// message, so it asks whether that file is still named, and opens the
/// name again.
#[test]
fn a_consumer_finds_the_message_in_a_slot_made_again_after_reclaim() {
    let (producer, c) = fresh("pool_made_again", 1024);
    let consumer = Queue::open(&c.0).unwrap();
    deliver(&producer, &consumer, 1..2);
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
    assert_eq!(side_objects(&c.0), (0, 0), "the free slot removed");
    deliver(&producer, &consumer, 2..6);
    assert_eq!(side_objects(&c.0), (1, 0));
}

/// A slot file removed by hand while its producer has it open: within
/// `NAME_CHECK_NS` (0.1 s) the producer asks whether it is still named and
/// makes the slot again, so a consumer that opens it by name finds its
/// messages. (Until then it may write into the removed file, which only
/// consumers that have it open can read: removing a queue's files by hand
/// is not a way to use it.)
#[test]
fn a_slot_file_removed_by_hand_is_made_again_within_a_tenth_of_a_second() {
    let (producer, c) = fresh("pool_by_hand", 1024);
    deliver(&producer, &producer, 1..2);
    std::fs::remove_file(format!("/dev/shm/sage_ringbuf_{}..p0", c.0)).unwrap();
    std::thread::sleep(Duration::from_millis(130));
    let consumer = Queue::open(&c.0).unwrap();
    deliver(&producer, &consumer, 2..5);
    assert_eq!(side_objects(&c.0), (1, 0));
}

/// Sends an 8000-byte message of each seed (longer than a 1 KiB ring: into
/// a slot) and checks that `consumer` receives it before the next.
fn deliver(producer: &Queue, consumer: &Queue, seeds: std::ops::Range<u8>) {
    for seed in seeds {
        producer.send(&pattern(8000, seed)).unwrap();
        assert_eq!(consumer.recv().unwrap(), pattern(8000, seed));
    }
}

#[test]
fn queued_messages_fill_the_slots_then_take_one_shot_objects() {
    let (q, c) = fresh("pool_busy", 1024);
    let msgs: Vec<Vec<u8>> = (0..11u8).map(|i| pattern(50_000, i)).collect();
    for m in &msgs {
        q.send(m).unwrap();
    }
    assert_eq!(side_objects(&c.0), (8, 3), "8 slots, then one-shot objects");
    // Queued messages are not orphans.
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
    assert_eq!(side_objects(&c.0), (8, 3));
    for m in &msgs {
        assert_eq!(&q.recv().unwrap(), m);
    }
    assert_eq!(side_objects(&c.0), (8, 0));
}

#[test]
fn messages_beyond_the_pools_bytes_take_one_shot_objects() {
    let (q, c) = fresh("pool_bound", 1024);
    let huge = pattern((128 << 20) + 1, 3);
    q.send(&huge).unwrap();
    assert_eq!(side_objects(&c.0), (0, 1));
    assert_eq!(q.recv().unwrap(), huge);
    drop(huge);
    // 70 MiB and a byte (a slot of 70 MiB and 64 KiB: slots grow in 64 KiB
    // steps), then 58 MiB less 1 KiB: the second does not fit beside the
    // first slot, though both messages together stay within the 128 MiB
    // that out-of-line messages may hold queued.
    let big = pattern((70 << 20) + 1, 4);
    let next = pattern((58 << 20) - 1024, 5);
    q.send(&big).unwrap();
    q.send(&next).unwrap();
    assert_eq!(side_objects(&c.0), (1, 1));
    assert!(q.recv().unwrap() == big);
    assert!(q.recv().unwrap() == next);
    assert_eq!(side_objects(&c.0), (1, 0));
}

#[test]
fn full_timeout_and_shutdown_free_the_claimed_slot() {
    let (q, c) = fresh("pool_full", 1024);
    let big = pattern(10_000, 5);
    let filler = refused_while_full(&q, &big);
    assert_eq!(q.recv().unwrap(), filler);
    // The slot was freed each time: one slot serves the next message.
    q.send(&big).unwrap();
    assert_eq!(side_objects(&c.0), (1, 0));
    assert_eq!(q.recv().unwrap(), big);
    q.shutdown().unwrap();
    assert_eq!(q.send(&big), Err(Error::Shutdown));
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0, "nothing left claimed");
}

/// A handle opened with `pool_medium` on a queue `name` (removed by the
/// caller's guard).
fn medium_handle(name: &str) -> Queue {
    Queue::open_with(name, &Options::default().pool_medium(true)).unwrap()
}

/// Medium messages (`RING_BUFFER_POOLED_FROM` bytes or more, that fit in the
/// ring) go into a slot from a handle that asks for it, and through the ring
/// from one that does not (or has no pool); shorter ones always go through
/// the ring. Every one arrives whole and in order.
#[test]
fn medium_messages_take_a_slot_only_from_handles_that_ask() {
    let (plain, c) = fresh("pool_medium", 1 << 20);
    let medium = medium_handle(&c.0);
    let no_pool =
        Queue::open_with(&c.0, &Options::default().pool(false).pool_medium(true)).unwrap();
    let from = RING_BUFFER_POOLED_FROM as usize;
    let below = pattern(from - 1, 1);
    let at = pattern(from, 2);
    let above = pattern(300_000, 3);
    medium.send(&below).unwrap();
    assert_eq!(side_objects(&c.0), (0, 0), "shorter: through the ring");
    medium.send(&at).unwrap();
    medium.send(&above).unwrap();
    assert_eq!(side_objects(&c.0), (2, 0), "medium: one slot each");
    plain.send(&above).unwrap();
    no_pool.send(&above).unwrap();
    assert_eq!(side_objects(&c.0), (2, 0), "without pool_medium: the ring");
    for want in [&below, &at, &above, &above, &above] {
        assert_eq!(&plain.recv().unwrap(), want);
    }
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0, "nothing left claimed");
}

/// A medium message that finds every slot busy goes through the ring, never
/// into a one-shot side object, and waits for no slot.
#[test]
fn medium_messages_go_through_the_ring_when_every_slot_is_busy() {
    let (q, c) = fresh("pool_medium_busy", 1 << 20);
    let medium = medium_handle(&c.0);
    let msgs: Vec<Vec<u8>> = (0..11u8).map(|i| pattern(70_000, i)).collect();
    for m in &msgs {
        medium.send(m).unwrap();
    }
    assert_eq!(side_objects(&c.0), (8, 0), "8 slots, then the ring");
    for m in &msgs {
        assert_eq!(&q.recv().unwrap(), m);
    }
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
}

/// A try-once put of a medium message into a full ring is refused without
/// keeping a slot: `Full`, then the slot serves the next message.
#[test]
fn a_refused_medium_message_keeps_no_slot() {
    let (q, c) = fresh("pool_medium_full", 1 << 20);
    let medium = medium_handle(&c.0);
    let msg = pattern(100_000, 7);
    // (The filler from the plain handle: from `medium` it would take a slot.)
    let filler = vec![0u8; q.max_message_len() as usize];
    q.send(&filler).unwrap();
    assert_eq!(medium.try_send(&msg), Err(Error::Full));
    assert_eq!(
        medium.send_timeout(&msg, Duration::from_millis(20)),
        Err(Error::Timeout)
    );
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0, "nothing left claimed");
    assert_eq!(q.recv().unwrap(), filler);
    medium.send(&msg).unwrap();
    medium.send(&msg).unwrap();
    assert_eq!(side_objects(&c.0), (2, 0));
    assert_eq!(q.recv().unwrap(), msg);
    assert_eq!(q.recv().unwrap(), msg);
}

/// A child that inherited a handle (and this process's descriptors of the
/// slots) uses slots of its own making, and the parent receives everything.
#[test]
fn forked_children_with_inherited_handles_use_the_pool() {
    let (q, c) = fresh("pool_fork", 4096);
    let first = pattern(100_000, 1);
    q.send(&first).unwrap();
    assert_eq!(q.recv().unwrap(), first);
    let children: Vec<_> = (0..3u8)
        .map(|k| {
            let q = &q;
            fork(move || {
                for i in 0..20u8 {
                    q.send(&pattern(100_000 + usize::from(k), i)).unwrap();
                }
                0
            })
        })
        .collect();
    let mut got = [0u8; 3];
    for _ in 0..60 {
        let m = q.recv_timeout(Duration::from_secs(30)).unwrap();
        let k = m.len() - 100_000;
        assert_eq!(m, pattern(m.len(), got[k]), "child {k} in order, intact");
        got[k] += 1;
    }
    for child in children {
        assert_eq!(wait_child(child, Duration::from_secs(30)), Exit::Code(0));
    }
    assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
    assert_eq!(side_objects(&c.0), (0, 0));
}

#[cfg(feature = "failpoints")]
mod killed {
    use super::*;
    use ring_buffer::failpoint;

    fn killed_child(name: &str, point: &'static str, body: impl FnOnce(&Queue)) {
        let child = fork(|| {
            let q = Queue::open(name).unwrap();
            failpoint::arm(point, 1);
            body(&q);
            0
        });
        assert_eq!(
            wait_child(child, Duration::from_secs(10)),
            Exit::Signal(libc::SIGKILL)
        );
    }

    /// A producer killed after writing into its slot, before publishing:
    /// nothing reaches the consumer, and the next user frees the slot.
    #[test]
    fn producer_killed_before_publishing_leaves_a_claim_the_next_user_frees() {
        let (q, c) = fresh("pool_kill_write", 1024);
        killed_child(&c.0, "slot_written", |q| {
            let _ = q.send(&pattern(8000, 9));
        });
        assert_eq!(side_objects(&c.0), (1, 0));
        assert_eq!(q.try_recv(), Err(Error::Empty));
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 1, "the dead claim freed");
        let next = pattern(8000, 10);
        q.send(&next).unwrap();
        assert_eq!(q.recv().unwrap(), next);
        assert_eq!(side_objects(&c.0), (1, 0), "the same slot again");
    }

    /// The same for a medium message, which fits in the ring: the dead
    /// producer's slot is freed, and nothing of it arrives.
    #[test]
    fn producer_killed_before_publishing_a_medium_message_leaves_a_claim_the_next_user_frees() {
        let (q, c) = fresh("pool_kill_medium", 1 << 20);
        killed_child(&c.0, "slot_written", |_| {
            let _ = medium_handle(&c.0).send(&pattern(100_000, 9));
        });
        assert_eq!(side_objects(&c.0), (1, 0));
        assert_eq!(q.try_recv(), Err(Error::Empty));
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 1, "the dead claim freed");
        let next = pattern(100_000, 10);
        medium_handle(&c.0).send(&next).unwrap();
        assert_eq!(q.recv().unwrap(), next);
        assert_eq!(side_objects(&c.0), (1, 0), "the same slot again");
    }

    /// Waits until `child` has stopped (at an `arm_stop` failpoint).
    fn stopped(child: libc::pid_t) {
        let mut status = 0;
        // SAFETY: waitpid on our own child; WUNTRACED reports the stop.
        assert_eq!(
            unsafe { libc::waitpid(child, &mut status, libc::WUNTRACED) },
            child
        );
        assert!(libc::WIFSTOPPED(status));
    }

    fn resume(child: libc::pid_t) {
        // SAFETY: kill on our own child.
        assert_eq!(unsafe { libc::kill(child, libc::SIGCONT) }, 0);
    }

    /// A producer of `pattern(8000, seed)` into queue `name`, stopped after
    /// writing it into its slot, before publishing it.
    fn stopped_producer(name: &str, seed: u8) -> libc::pid_t {
        let producer = fork(|| {
            let q = Queue::open(name).unwrap();
            failpoint::arm_stop("slot_written", 1);
            q.send(&pattern(8000, seed)).unwrap();
            0
        });
        stopped(producer);
        producer
    }

    /// A reclaimer that looked at the slot while its producer was still
    /// writing it, and went on only after the producer published and
    /// ended, must not free it: it judges the slot's holder before it reads
    /// the queued descriptors (the other way round, the descriptor it did
    /// not see named a slot whose holder it then found gone, and the
    /// consumer got `Corrupt`: the large chaos suite stalled on that).
    #[test]
    fn a_reclaimer_never_frees_a_slot_published_while_it_looked() {
        let (q, c) = fresh("pool_reclaim_race", 1024);
        let name = c.0.clone();
        let producer = stopped_producer(&name, 20);
        let reclaimer = fork(|| {
            failpoint::arm_stop("reclaim_locked", 1);
            Queue::reclaim(&name).unwrap() as i32
        });
        stopped(reclaimer);
        resume(producer);
        assert_eq!(wait_child(producer, Duration::from_secs(10)), Exit::Code(0));
        resume(reclaimer);
        assert_eq!(
            wait_child(reclaimer, Duration::from_secs(10)),
            Exit::Code(0),
            "nothing freed"
        );
        assert_eq!(
            q.recv_timeout(Duration::from_secs(5)).unwrap(),
            pattern(8000, 20)
        );
    }

    /// A producer stopped after writing into its slot, before publishing,
    /// is alive: `Queue::reclaim` (which judges the producer's thread id,
    /// its only mark on the slot) keeps its claim, and once resumed it
    /// publishes the message.
    #[test]
    fn a_stopped_producer_keeps_its_claim() {
        let (q, c) = fresh("pool_stop_write", 1024);
        let producer = stopped_producer(&c.0, 21);
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 0, "a live producer's claim");
        resume(producer);
        assert_eq!(wait_child(producer, Duration::from_secs(10)), Exit::Code(0));
        assert_eq!(
            q.recv_timeout(Duration::from_secs(5)).unwrap(),
            pattern(8000, 21)
        );
    }

    /// Killed after publishing, before letting go of the slot: the message
    /// is delivered and the slot freed as usual.
    #[test]
    fn producer_killed_after_publishing_loses_nothing() {
        let (q, c) = fresh("pool_kill_pub", 1024);
        killed_child(&c.0, "slot_published", |q| {
            let _ = q.send(&pattern(8000, 11));
        });
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 0, "queued: not an orphan");
        assert_eq!(q.recv().unwrap(), pattern(8000, 11));
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
        assert_eq!(side_objects(&c.0), (0, 0), "free, so given back");
    }

    /// A consumer killed half-way through copying out of a slot loses
    /// nothing: the descriptor is still queued for the next consumer.
    #[test]
    fn consumer_killed_during_the_copy_loses_nothing() {
        let (q, c) = fresh("pool_kill_copy", 1024);
        q.send(&pattern(8000, 12)).unwrap();
        killed_child(&c.0, "reader_mid_side_copy", |q| {
            let _ = q.recv();
        });
        assert_eq!(
            q.recv_timeout(Duration::from_secs(5)).unwrap(),
            pattern(8000, 12)
        );
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
    }

    /// A consumer killed after taking the item, before freeing its slot:
    /// that one item is gone with it, and `Queue::reclaim` frees the slot.
    #[test]
    fn consumer_killed_after_taking_loses_only_that_item_and_gc_frees_it() {
        let (q, c) = fresh("pool_kill_cons", 1024);
        q.send(&pattern(8000, 13)).unwrap();
        q.send(&pattern(9000, 14)).unwrap();
        killed_child(&c.0, "side_consumed", |q| {
            let _ = q.recv();
        });
        assert_eq!(side_objects(&c.0), (2, 0));
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 1);
        assert_eq!(q.recv().unwrap(), pattern(9000, 14));
        assert_eq!(Queue::reclaim(&c.0).unwrap(), 0);
        assert_eq!(side_objects(&c.0), (0, 0));
    }
}
