//! Processes that skip the waker's fence (registered for expedited
//! membarriers, the default) and processes that keep it (`RB_MEMBARRIER=0`,
//! or a kernel or seccomp profile that refuses membarrier) share one queue:
//! every sleeper on either side is woken. A driver and an echo process, each
//! in one of the two modes, pass messages both ways through small rings,
//! and each pauses now and then so that the other sleeps: on an empty ring
//! (waiting for the next message) and on a full one (a burst larger than the
//! ring). A missed wake-up leaves a process asleep for ever (blocking calls
//! without a deadline) and the test fails on its time limit.

mod common;

use std::time::Duration;

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

/// Pauses in one round of every `every`, never a burst round (the
/// bursts' full ring makes the driver sleep anyway).
fn pause_now_and_then(round: u32, every: u32) {
    if round % every == every / 2 {
        std::thread::sleep(Duration::from_micros(300));
    }
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
    for round in 0..ROUNDS {
        pause_now_and_then(round, 37);
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
    for round in 0..ROUNDS {
        pause_now_and_then(round, 50);
        let mut last = Vec::new();
        for k in 0..count(round) {
            last = from.recv().unwrap();
            if last != message(round, k) {
                return 2;
            }
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
    // Both kinds of sleep happened (and every sleeper was woken).
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
