//! Processes that skip the waker's fence (registered for expedited
//! membarriers, the default) and processes that keep it (`RB_MEMBARRIER=0`,
//! or a kernel or seccomp profile that refuses membarrier) share one queue:
//! every sleeper on either side is woken. A driver and an echo process, each
//! in one of the two modes, pass messages both ways through small rings,
//! and each pauses now and then until the other has gone to sleep (its sleep
//! count moved): on an empty ring (waiting for the next message) and on a
//! full one (a burst larger than the ring). A missed wake-up leaves a process
//! asleep for ever (blocking calls without a deadline) and the test fails on
//! its time limit.

mod common;

use std::time::{Duration, Instant};

use common::{fork, fresh, wait_child, Exit};
use ring_buffer::Queue;

const ROUNDS: u32 = 3_000;
/// Messages of a burst: 64 of 1 KiB through a 4 KiB ring, so the driver
/// sleeps on a full ring.
const BURST: u32 = 64;
const LIMIT: Duration = Duration::from_secs(120);

fn message(round: u32, k: u32) -> Vec<u8> {
    let mut m = vec![(round ^ k) as u8; 1024];
    m[..4].copy_from_slice(&round.to_le_bytes());
    m[4..8].copy_from_slice(&k.to_le_bytes());
    m
}

/// In a forked child, before its first queue call: keep the fence or not.
fn choose_fences(keep: bool) {
    if keep {
        std::env::set_var("RB_MEMBARRIER", "0");
    } else {
        std::env::remove_var("RB_MEMBARRIER");
    }
}

/// Which of a queue's sleep counts a pause waits for.
#[derive(Clone, Copy)]
enum Sleeper {
    /// A producer on a full ring.
    Producer,
    /// A consumer on an empty ring.
    Consumer,
}

fn sleeps(q: &Queue, who: Sleeper) -> u64 {
    let stats = q.stats().unwrap();
    match who {
        Sleeper::Producer => stats.producer_waits,
        Sleeper::Consumer => stats.consumer_waits,
    }
}

/// Holds this side back until the other side has gone to sleep on `q` (its
/// sleep count moves right before its futex wait), however long its spinning
/// and yielding take on a loaded machine; the caller's next call must wake
/// it. Panics after a minute (the other side never slept).
fn pause_until_asleep(q: &Queue, who: Sleeper, before: u64) {
    let start = Instant::now();
    while sleeps(q, who) == before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the other side never slept"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Whether round `r` is one of those with `r % every == every / 2`: never a
/// burst round (the echo pauses in some bursts itself).
fn pausing(round: u32, every: u32) -> bool {
    round % every == every / 2
}

/// Round r sends `count(r)` messages to the echo process, which answers
/// each burst with its last message.
fn count(round: u32) -> u32 {
    if round % 10 == 0 {
        BURST
    } else {
        1
    }
}

fn driver(to: &Queue, back: &Queue) -> i32 {
    let mut echo_sleeps = None;
    for round in 0..ROUNDS {
        if let Some(before) = echo_sleeps.take() {
            // The echo waits for this round's message: let it sleep.
            pause_until_asleep(to, Sleeper::Consumer, before);
        }
        if pausing(round + 1, 150) {
            // Counted before the echo can start waiting for the next
            // round's message (it has not even had this round's yet).
            echo_sleeps = Some(sleeps(to, Sleeper::Consumer));
        }
        for k in 0..count(round) {
            to.send(&message(round, k)).unwrap();
        }
        if back.recv().unwrap() != message(round, count(round) - 1) {
            return 2;
        }
    }
    0
}

fn echo(from: &Queue, to: &Queue) -> i32 {
    let mut driver_sleeps = None;
    for round in 0..ROUNDS {
        let mut last = Vec::new();
        for k in 0..count(round) {
            // Counted before this message makes room for the driver.
            let full_before = (k == 0 && round % 300 == 0).then(|| sleeps(from, Sleeper::Producer));
            last = from.recv().unwrap();
            if last != message(round, k) {
                return 2;
            }
            if let Some(before) = full_before {
                // Mid-burst: the driver finds the ring full and sleeps.
                pause_until_asleep(from, Sleeper::Producer, before);
            }
        }
        if let Some(before) = driver_sleeps.take() {
            // The driver waits for the answer: let it sleep.
            pause_until_asleep(to, Sleeper::Consumer, before);
        }
        if pausing(round + 1, 250) {
            // Counted before the driver can start waiting for the next
            // round's answer (it cannot send that round before this answer).
            driver_sleeps = Some(sleeps(to, Sleeper::Consumer));
        }
        to.send(&last).unwrap();
    }
    0
}

fn run(driver_keeps_fence: bool) {
    let (to, _c1) = fresh("mixfence_to", 4096);
    let (back, _c2) = fresh("mixfence_back", 4096);
    let (to2, back2) = (to.clone(), back.clone());
    let (to_stats, back_stats) = (to.clone(), back.clone());
    let e = fork(move || {
        choose_fences(!driver_keeps_fence);
        echo(&to2, &back2)
    });
    let d = fork(move || {
        choose_fences(driver_keeps_fence);
        driver(&to, &back)
    });
    assert_eq!(wait_child(d, LIMIT), Exit::Code(0), "driver");
    assert_eq!(wait_child(e, LIMIT), Exit::Code(0), "echo");
    // Both kinds of sleep happened (the pauses waited for them), and every
    // sleeper was woken.
    let (to, back) = (to_stats.stats().unwrap(), back_stats.stats().unwrap());
    assert!(
        to.producer_waits > 0,
        "the driver never slept on a full ring"
    );
    assert!(
        to.consumer_waits > 0,
        "the echo never slept on an empty ring"
    );
    assert!(
        back.consumer_waits > 0,
        "the driver never slept on an empty ring"
    );
}

#[test]
fn a_fencing_driver_and_a_registered_echo_wake_each_other() {
    run(true);
}

#[test]
fn a_registered_driver_and_a_fencing_echo_wake_each_other() {
    run(false);
}
