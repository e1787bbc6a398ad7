//! Loom models of the sleep/wake handshake and of `task_done`/`join`
//! (`make test-loom`: `--cfg loom`, bounded preemptions).
//!
//! They run the protocol code itself (`wait::sleep_unless`,
//! `wait::wake_sleepers`, `wait::shut_down`, `tasks::task_done`,
//! `tasks::join`) on an extension block of loom atomics, with the futex
//! emulated by `crate::sync::loom_futex`: loom runs every interleaving (and
//! every value a weak load may return) up to the preemption bound, and fails
//! a model whose sleeper can be left asleep (a lost wake-up shows as a
//! deadlock) or whose assertion can fail. The header's `head` and `tail`
//! (std atomics, out of loom's reach) are loom words of the model's own,
//! stored and loaded with the orderings `publish` and `ready` use.

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::tasks::{join, task_done, unfinished_tasks};
use super::wait::{is_shut_down, shut_down, sleep_unless, wake_sleepers};
use super::Role;
use crate::layout::Extension;
use crate::sync::deadline::Wait;

/// Preemption bound when `LOOM_MAX_PREEMPTIONS` is not set (the Makefile
/// sets the same): every bug of the mutation checks in the report of issue
/// 11 shows within 3; 4 runs this file in seconds (5 in about a minute).
const DEFAULT_PREEMPTIONS: usize = 4;

/// Explores `model` and prints how many executions that took.
pub(super) fn check(name: &str, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    // Counted outside loom (std atomic): one increment per explored execution.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = runs.clone();
    let start = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Relaxed);
        model();
    });
    let runs = runs.load(Relaxed);
    println!(
        "loom model {name}: {runs} executions explored (preemption bound {}) in {:.1} s",
        builder.preemption_bound.unwrap_or(0),
        start.elapsed().as_secs_f64()
    );
    // A model with a single execution would have checked no interleaving.
    assert!(runs > 1, "loom model {name} explored {runs} execution(s)");
}

/// A fresh extension block, as a new queue has it.
fn block() -> Arc<Extension> {
    Arc::new(Extension::default())
}

/// What `View::wait_until` does for a member of `role` once its spins are
/// over: sleep through the handshake until `ready()`, as the send and recv
/// loops do (they retry after every wake-up, spurious or not).
fn wait_until(ext: &Extension, role: Role, ready: impl Fn() -> bool) {
    while !ready() {
        sleep_unless(ext, role, &ready, None);
    }
}

/// One side of the queue publishes `messages` times while a member of the
/// other side waits for each publication in turn. `waiter` is the waiting
/// role: `Reader` waits for `tail` (data side), `Writer` for `head` (space
/// side). The publisher writes a payload word before each publication and
/// the waiter checks it after seeing the counter move: the counter's
/// Release/Acquire pair must carry it.
fn handshake(waiter: Role, messages: u64) {
    let publisher = match waiter {
        Role::Reader => Role::Writer,
        Role::Writer => Role::Reader,
    };
    let ext = block();
    // `tail` (data side) or `head` (space side), and the bytes it publishes.
    let counter = Arc::new(AtomicU64::new(0));
    let payload = Arc::new(AtomicU64::new(0));
    let other = {
        let (ext, counter, payload) = (ext.clone(), counter.clone(), payload.clone());
        thread::spawn(move || {
            for n in 1..=messages {
                // The copy, then `publish`'s Release store of the counter,
                // then the wake-up (send.rs / recv.rs order).
                payload.store(n * 100, Relaxed);
                counter.store(n, Release);
                wake_sleepers(&ext, publisher);
            }
        })
    };
    for n in 1..=messages {
        let moved = || counter.load(Acquire) >= n;
        wait_until(&ext, waiter, moved);
        // The message published with `n` (or a later one: the publisher may
        // be ahead) is there to read.
        assert!(payload.load(Relaxed) >= n * 100);
    }
    other.join().unwrap();
}

/// (a) Data side: a consumer that goes to sleep on an empty queue while a
/// producer publishes always wakes and sees the message; twice in a row, so
/// that a `data_wanted` flag left set or cleared by the first round is
/// covered.
#[test]
fn loom_data_side_never_loses_a_wake_up() {
    check("data side (consumer sleeps, producer publishes 2)", || {
        handshake(Role::Reader, 2)
    });
}

/// (a) Space side: a producer that goes to sleep on a full queue while a
/// consumer frees room always wakes.
#[test]
fn loom_space_side_never_loses_a_wake_up() {
    check("space side (producer sleeps, consumer frees 2)", || {
        handshake(Role::Writer, 2)
    });
}

/// (a) Both sides at once: a stream of two messages through a ring with
/// room for one, so the producer sleeps for room and the consumer for data,
/// each woken by the other's publication (`space_*` and `data_*` words in
/// use together).
#[test]
fn loom_a_one_slot_stream_never_stalls() {
    check("both sides (2 messages through a 1-slot ring)", || {
        const MESSAGES: u64 = 2;
        let ext = block();
        let (head, tail) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let payload = Arc::new(AtomicU64::new(0));
        let producer = {
            let (ext, head, tail, payload) =
                (ext.clone(), head.clone(), tail.clone(), payload.clone());
            thread::spawn(move || {
                for n in 1..=MESSAGES {
                    // Room for message n once message n - 1 was consumed.
                    wait_until(&ext, Role::Writer, || head.load(Acquire) + 1 >= n);
                    payload.store(n, Relaxed);
                    tail.store(n, Release);
                    wake_sleepers(&ext, Role::Writer);
                }
            })
        };
        for n in 1..=MESSAGES {
            wait_until(&ext, Role::Reader, || tail.load(Acquire) >= n);
            // The slot holds message n until this consumer frees it.
            assert_eq!(payload.load(Relaxed), n);
            head.store(n, Release);
            wake_sleepers(&ext, Role::Reader);
        }
        producer.join().unwrap();
    });
}

/// (a) Two consumers asleep, one publication: the wake-up reaches both (one
/// bump of `data_seq` wakes every sleeper on it, and the one flag both
/// raised is cleared once).
#[test]
fn loom_one_publication_wakes_every_sleeping_consumer() {
    check("data side (2 consumers sleep, 1 publication)", || {
        let ext = block();
        let tail = Arc::new(AtomicU64::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (ext, tail) = (ext.clone(), tail.clone());
                thread::spawn(move || wait_until(&ext, Role::Reader, || tail.load(Acquire) != 0))
            })
            .collect();
        tail.store(1, Release);
        wake_sleepers(&ext, Role::Writer);
        for c in consumers {
            c.join().unwrap();
        }
    });
}

/// (b) Shutdown wakes every sleeper: a consumer waiting for data and a
/// producer waiting for room (neither counter ever moves) both return,
/// having seen the flag, whenever they announced themselves.
#[test]
fn loom_shutdown_wakes_every_sleeper() {
    check("shutdown (a sleeping consumer and producer)", || {
        let ext = block();
        let sleepers: Vec<_> = [Role::Reader, Role::Writer]
            .into_iter()
            .map(|role| {
                let ext = ext.clone();
                thread::spawn(move || {
                    let e = &*ext;
                    wait_until(e, role, || is_shut_down(e));
                })
            })
            .collect();
        shut_down(&ext);
        for s in sleepers {
            s.join().unwrap();
        }
    });
}

/// (c) `join` returns exactly when the last open task is done: two tasks
/// (published and consumed), two workers each record a result and mark
/// their task done while a joiner waits. The joiner never returns early
/// (both tasks are done and both results visible when it returns), never
/// hangs (a lost wake-up is a deadlock), and a third `task_done` is refused.
#[test]
fn loom_join_returns_when_the_last_task_is_done() {
    check("task_done/join (2 workers, 1 joiner)", || {
        let ext = block();
        ext.writer.messages.store(2, Release);
        ext.reader.messages.store(2, Release);
        let results = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (ext, results) = (ext.clone(), results.clone());
                thread::spawn(move || {
                    // The work done for the task, then task_done.
                    results[i].store(1, Relaxed);
                    task_done(&ext).unwrap();
                })
            })
            .collect();
        join(&ext, Wait::Forever).unwrap();
        assert_eq!(ext.identity.tasks_done.load(Relaxed), 2);
        // What the workers did before task_done happened before join's
        // return (Relaxed loads: only that ordering can make them see it).
        assert_eq!(results[0].load(Relaxed) + results[1].load(Relaxed), 2);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(unfinished_tasks(&ext), 0);
        assert_eq!(task_done(&ext), Err(crate::error::Error::InvalidArg));
    });
}
