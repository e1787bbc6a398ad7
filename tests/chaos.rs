//! SIGKILL chaos: producers and consumers are killed at random instants, and
//! others kill themselves at exact places through the test-only failpoints
//! (holding the writer or reader lock, half-way through a copy, right before
//! publishing). Killed workers are replaced at once. The suite asserts that
//! the survivors never stall for 2 s, that nothing is duplicated, corrupted
//! or reordered, that at most one message is lost per consumer death (the
//! message it had taken but not yet recorded), and that the queue can be
//! removed afterwards. Requires `--features failpoints`.

#![cfg(feature = "failpoints")]

mod common;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{fork, fresh, kill9, wait_child, Exit, SharedMem};
use ring_buffer::{failpoint, Error, Queue};

/// Producer incarnations ("streams"), each with its own sequence numbers.
const STREAMS: usize = 512;
/// Messages a stream may send before it retires (and is replaced).
const PER_STREAM: usize = 65_536;

const WRITER_FAILPOINTS: [&str; 3] = ["writer_locked", "writer_mid_copy", "writer_before_publish"];
const READER_FAILPOINTS: [&str; 3] = ["reader_locked", "reader_mid_copy", "reader_before_publish"];

/// What the children report through shared memory.
struct Board {
    /// Times each (stream, seq) was received.
    seen: SharedMem,
    /// Messages each stream knows were put (`send` returned).
    confirmed: SharedMem,
    /// [received, corrupt, reordered, stop]
    counters: SharedMem,
}

const RECEIVED: usize = 0;
const CORRUPT: usize = 1;
const REORDERED: usize = 2;
const STOP: usize = 3;

impl Board {
    fn new() -> Board {
        Board {
            seen: SharedMem::new(STREAMS * PER_STREAM),
            confirmed: SharedMem::new(STREAMS * 8),
            counters: SharedMem::new(4096),
        }
    }
    fn seen(&self, stream: usize, seq: usize) -> &AtomicU8 {
        &self.seen.atomics::<AtomicU8>()[stream * PER_STREAM + seq]
    }
    fn confirmed(&self, stream: usize) -> &AtomicU64 {
        &self.confirmed.atomics::<AtomicU64>()[stream]
    }
    fn counter(&self, i: usize) -> &AtomicU64 {
        &self.counters.atomics::<AtomicU64>()[i]
    }
}

fn message(stream: u32, seq: u32) -> Vec<u8> {
    let len = 8 + (stream as usize * 131 + seq as usize * 37) % 700;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&stream.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((8..len).map(|i| (i as u32 ^ seq ^ stream) as u8));
    m
}

fn parse(m: &[u8]) -> Option<(usize, usize)> {
    let stream = u32::from_le_bytes(m.get(0..4)?.try_into().ok()?);
    let seq = u32::from_le_bytes(m.get(4..8)?.try_into().ok()?);
    (m == message(stream, seq).as_slice()
        && (stream as usize) < STREAMS
        && (seq as usize) < PER_STREAM)
        .then_some((stream as usize, seq as usize))
}

fn producer(
    name: &str,
    board: &Board,
    stream: usize,
    failpoint: Option<(&'static str, u64)>,
) -> i32 {
    let q = Queue::open(name).unwrap();
    if let Some((point, nth)) = failpoint {
        failpoint::arm(point, nth);
    }
    let mut seq = 0;
    while seq < PER_STREAM && board.counter(STOP).load(Relaxed) == 0 {
        // Bounded waits: consumers may all be dead for a moment, and the
        // stop flag must be seen. A stream never skips a number.
        match q.send_timeout(
            &message(stream as u32, seq as u32),
            Duration::from_millis(200),
        ) {
            Ok(()) => {
                board.confirmed(stream).store(seq as u64 + 1, Relaxed);
                seq += 1;
            }
            Err(Error::Timeout) => {}
            Err(e) => panic!("send: {e}"),
        }
    }
    0
}

fn consumer(name: &str, board: &Board, failpoint: Option<(&'static str, u64)>) -> i32 {
    let q = Queue::open(name).unwrap();
    if let Some((point, nth)) = failpoint {
        failpoint::arm(point, nth);
    }
    let mut last = vec![None::<usize>; STREAMS];
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match q.recv_into(&mut buf) {
            Ok(n) => n,
            Err(Error::Shutdown) => return 0,
            Err(e) => panic!("recv: {e}"),
        };
        let Some((stream, seq)) = parse(&buf[..n]) else {
            board.counter(CORRUPT).fetch_add(1, Relaxed);
            continue;
        };
        if last[stream].is_some_and(|l| l >= seq) {
            board.counter(REORDERED).fetch_add(1, Relaxed);
        }
        last[stream] = Some(seq);
        board.seen(stream, seq).fetch_add(1, Relaxed);
        board.counter(RECEIVED).fetch_add(1, Relaxed);
    }
}

/// A small deterministic PRNG (the test must be reproducible from its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Producer,
    Consumer,
}

struct Worker {
    pid: libc::pid_t,
    role: Role,
}

/// Reaps a worker that exited on its own (a failpoint, or a retired stream).
fn reap(pid: libc::pid_t) -> Option<bool> {
    let mut status = 0;
    // SAFETY: waitpid on our own child, non-blocking.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then(|| libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL)
}

#[test]
fn sigkill_chaos_loses_at_most_in_flight_messages_and_never_stalls() {
    let seed = std::env::var("RB_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_CAFE);
    let mut rng = Rng(seed);
    let (q, cleanup) = fresh("chaos", 16 * 1024);
    let name = cleanup.0.clone();
    let board = Board::new();
    let mut next_stream = 0usize;
    let mut workers: Vec<Worker> = Vec::new();
    let (mut consumer_deaths, mut producer_deaths, mut armed) = (0u64, 0u64, 0u64);

    let spawn = |role: Role, rng: &mut Rng, armed: &mut u64, next_stream: &mut usize| -> Worker {
        // A third of the replacements carry a failpoint set to go off soon.
        let failpoint = (rng.below(3) == 0).then(|| {
            *armed += 1;
            let points = if role == Role::Producer {
                WRITER_FAILPOINTS
            } else {
                READER_FAILPOINTS
            };
            (points[rng.below(3) as usize], 1 + rng.below(40))
        });
        let (name, board) = (name.clone(), &board);
        let pid = match role {
            Role::Producer => {
                let stream = *next_stream;
                *next_stream += 1;
                assert!(stream < STREAMS, "out of streams");
                fork(move || producer(&name, board, stream, failpoint))
            }
            Role::Consumer => fork(move || consumer(&name, board, failpoint)),
        };
        Worker { pid, role }
    };

    for _ in 0..3 {
        workers.push(spawn(
            Role::Producer,
            &mut rng,
            &mut armed,
            &mut next_stream,
        ));
        workers.push(spawn(
            Role::Consumer,
            &mut rng,
            &mut armed,
            &mut next_stream,
        ));
    }

    let chaos_for = Duration::from_secs(4);
    let start = Instant::now();
    let mut last_progress = (board.counter(RECEIVED).load(Relaxed), Instant::now());
    let mut longest_stall = Duration::ZERO;
    let mut next_kill = Instant::now() + Duration::from_millis(20);
    while start.elapsed() < chaos_for {
        std::thread::sleep(Duration::from_millis(2));
        // Progress watch: messages must keep arriving.
        let received = board.counter(RECEIVED).load(Relaxed);
        if received != last_progress.0 {
            longest_stall = longest_stall.max(last_progress.1.elapsed());
            last_progress = (received, Instant::now());
        }
        // Replace workers that died by their own failpoint or retired.
        for worker in workers.iter_mut() {
            if let Some(killed) = reap(worker.pid) {
                if killed {
                    match worker.role {
                        Role::Consumer => consumer_deaths += 1,
                        Role::Producer => producer_deaths += 1,
                    }
                }
                *worker = spawn(worker.role, &mut rng, &mut armed, &mut next_stream);
            }
        }
        // And kill one at a random instant every 20-60 ms.
        if Instant::now() >= next_kill {
            let i = rng.below(workers.len() as u64) as usize;
            kill9(workers[i].pid);
            match workers[i].role {
                Role::Consumer => consumer_deaths += 1,
                Role::Producer => producer_deaths += 1,
            }
            workers[i] = spawn(workers[i].role, &mut rng, &mut armed, &mut next_stream);
            next_kill = Instant::now() + Duration::from_millis(20 + rng.below(40));
        }
    }
    longest_stall = longest_stall.max(last_progress.1.elapsed());

    // Wind down: producers stop, consumers drain and see Shutdown.
    board.counter(STOP).store(1, Relaxed);
    for w in workers.iter().filter(|w| w.role == Role::Producer) {
        match wait_child(w.pid, Duration::from_secs(30)) {
            Exit::Code(0) => {}
            Exit::Signal(libc::SIGKILL) => producer_deaths += 1,
            other => panic!("producer ended with {other:?}"),
        }
    }
    q.shutdown().unwrap();
    for w in workers.iter().filter(|w| w.role == Role::Consumer) {
        match wait_child(w.pid, Duration::from_secs(30)) {
            Exit::Code(0) => {}
            Exit::Signal(libc::SIGKILL) => consumer_deaths += 1,
            other => panic!("consumer ended with {other:?}"),
        }
    }

    let (mut confirmed_total, mut lost, mut duplicated, mut unexpected) = (0u64, 0u64, 0u64, 0u64);
    for stream in 0..next_stream {
        let confirmed = board.confirmed(stream).load(Relaxed) as usize;
        confirmed_total += confirmed as u64;
        for seq in 0..PER_STREAM {
            let n = board.seen(stream, seq).load(Relaxed);
            duplicated += u64::from(n.saturating_sub(1));
            match seq.cmp(&confirmed) {
                std::cmp::Ordering::Less if n == 0 => lost += 1,
                // The message a killed producer was putting may or may not
                // have been published; nothing after it can exist.
                std::cmp::Ordering::Greater if n > 0 => unexpected += 1,
                _ => {}
            }
        }
    }
    let corrupt = board.counter(CORRUPT).load(Relaxed);
    let reordered = board.counter(REORDERED).load(Relaxed);
    let recoveries = q.stats().unwrap().owner_died_recoveries;
    eprintln!(
        "chaos (seed {seed:#x}): {confirmed_total} messages confirmed from {next_stream} producer streams; \
         {producer_deaths} producer and {consumer_deaths} consumer deaths ({armed} armed with failpoints); \
         {recoveries} lock recoveries; lost {lost}, duplicated {duplicated}, unexpected {unexpected}, \
         corrupt {corrupt}, reordered {reordered}; longest stall {longest_stall:?}"
    );
    assert!(
        confirmed_total > 10_000,
        "the chaos run moved too little to mean anything"
    );
    assert!(
        consumer_deaths > 10 && producer_deaths > 10,
        "too few kills to mean anything"
    );
    assert!(
        recoveries > 0,
        "no lock was ever recovered from a dead owner"
    );
    assert_eq!((duplicated, unexpected, corrupt, reordered), (0, 0, 0, 0));
    assert!(
        lost <= consumer_deaths,
        "lost {lost} > consumer deaths {consumer_deaths}"
    );
    assert!(
        longest_stall < Duration::from_secs(2),
        "stalled for {longest_stall:?}"
    );
    drop(q);
    assert_eq!(
        Queue::remove_if_unused(&name),
        Ok(true),
        "nobody alive holds the queue any more"
    );
}

/// A peer stopped (SIGSTOP) while holding a lock: try-once and bounded calls
/// on that side give up with `Timeout` instead of hanging, the other side
/// keeps working, and everything resumes once the peer continues.
#[test]
fn a_stopped_lock_holder_does_not_hang_try_or_bounded_calls() {
    let (q, cleanup) = fresh("stopped", 4096);
    q.send(b"queued before").unwrap();
    for (point, writer_side) in [("writer_locked", true), ("reader_locked", false)] {
        let name = cleanup.0.clone();
        let child = fork(move || {
            let q = Queue::open(&name).unwrap();
            failpoint::arm_stop(point, 1);
            if writer_side {
                q.send(b"from the stopped producer").unwrap();
            } else {
                q.send(b"for the stopped consumer").unwrap();
                q.recv().unwrap();
            }
            0
        });
        // Wait until the child has stopped inside the lock.
        let mut status = 0;
        // SAFETY: waitpid on our own child; WUNTRACED reports the stop.
        assert_eq!(
            unsafe { libc::waitpid(child, &mut status, libc::WUNTRACED) },
            child
        );
        assert!(libc::WIFSTOPPED(status));
        let start = Instant::now();
        if writer_side {
            assert_eq!(q.try_send(b"x"), Err(Error::Timeout));
            assert_eq!(
                q.send_timeout(b"x", Duration::from_millis(50)),
                Err(Error::Timeout)
            );
            // Consumers are not held up by a stopped producer.
            assert_eq!(q.try_recv().unwrap(), b"queued before");
        } else {
            assert_eq!(q.try_recv(), Err(Error::Timeout));
            assert_eq!(
                q.recv_timeout(Duration::from_millis(50)),
                Err(Error::Timeout)
            );
            // Producers are not held up by a stopped consumer.
            q.try_send(b"still accepted").unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "calls hung behind a stopped peer"
        );
        // SAFETY: resume our own child.
        unsafe { libc::kill(child, libc::SIGCONT) };
        assert_eq!(wait_child(child, Duration::from_secs(30)), Exit::Code(0));
    }
    // Everything moved on: the resumed consumer took the oldest message (the
    // resumed producer's), leaving its own and ours.
    let mut left = Vec::new();
    while let Ok(m) = q.try_recv() {
        left.push(String::from_utf8(m).unwrap());
    }
    assert_eq!(left, ["for the stopped consumer", "still accepted"]);
}
