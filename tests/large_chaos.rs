//! SIGKILL chaos with messages longer than the ring (issue 14, item 3):
//! producers and consumers of a mix of inline and out-of-line messages are
//! killed at random instants and replaced. Asserts: nothing duplicated or
//! corrupted, per-stream order kept by every consumer, every confirmed
//! message delivered except at most one per consumer death (the one it had
//! taken but not recorded), and afterwards no side object left once
//! `Queue::reclaim` (what `sage-queue gc` runs) has removed the orphans of
//! killed producers. The existing chaos suite (tests/chaos.rs) is unchanged.

mod common;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{fork, fresh, kill9, SharedMem};
use ring_buffer::{Error, Queue};

const STREAMS: usize = 256;
const PER_STREAM: usize = 2048;
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
const RUN: Duration = Duration::from_secs(4);

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x
}

/// Message `seq` of stream `s`: 8 header bytes (stream, seq), then bytes
/// that follow from them; one in three fits inline, the others are 5 KiB to
/// 200 KiB (the ring is 4 KiB).
fn message(s: usize, seq: usize) -> Vec<u8> {
    let h = mix((s * PER_STREAM + seq) as u64);
    let len = if h % 3 == 0 {
        8 + (h % 200) as usize
    } else {
        5000 + (h % 195_000) as usize
    };
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(s as u32).to_le_bytes());
    m.extend_from_slice(&(seq as u32).to_le_bytes());
    m.extend((8..len).map(|i| (h as usize ^ i) as u8));
    m
}

fn side_objects(name: &str) -> usize {
    let stem = format!("sage_ringbuf_{name}..");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
        .count()
}

struct Board {
    seen: SharedMem,
    confirmed: SharedMem,
    /// [corrupt, reordered]
    errors: SharedMem,
}

impl Board {
    fn seen(&self, s: usize, seq: usize) -> &AtomicU8 {
        &self.seen.atomics::<AtomicU8>()[s * PER_STREAM + seq]
    }
    fn confirmed(&self, s: usize) -> &AtomicU64 {
        &self.confirmed.atomics::<AtomicU64>()[s]
    }
    fn error(&self, i: usize) -> &AtomicU64 {
        &self.errors.atomics::<AtomicU64>()[i]
    }
}

fn producer(name: &str, board: &Board, s: usize) -> i32 {
    let q = Queue::open(name).unwrap();
    for seq in 0..PER_STREAM {
        q.send(&message(s, seq)).unwrap();
        board.confirmed(s).store(seq as u64 + 1, Relaxed);
    }
    0
}

fn consumer(name: &str, board: &Board) -> i32 {
    let q = Queue::open(name).unwrap();
    let mut last = vec![-1i64; STREAMS];
    loop {
        let m = match q.recv_timeout(Duration::from_secs(30)) {
            Ok(m) => m,
            Err(Error::Shutdown) => return 0,
            Err(e) => panic!("recv: {e:?}"),
        };
        let s = u32::from_le_bytes(m[0..4].try_into().unwrap()) as usize;
        let seq = u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize;
        if s >= STREAMS || seq >= PER_STREAM || m != message(s, seq) {
            board.error(0).fetch_add(1, Relaxed);
            continue;
        }
        if seq as i64 <= last[s] {
            board.error(1).fetch_add(1, Relaxed);
        }
        last[s] = seq as i64;
        board.seen(s, seq).fetch_add(1, Relaxed);
    }
}

#[test]
fn random_kills_with_large_messages_lose_at_most_the_consumers_own_items() {
    let (q, c) = fresh("large_chaos", 4096);
    let name = c.0.clone();
    let board = Board {
        seen: SharedMem::new(STREAMS * PER_STREAM),
        confirmed: SharedMem::new(STREAMS * 8),
        errors: SharedMem::new(4096),
    };
    let mut next_stream = 0;
    let start_producer = |next_stream: &mut usize| {
        let s = *next_stream;
        *next_stream += 1;
        assert!(s < STREAMS);
        let (name, board) = (&name, &board);
        fork(move || producer(name, board, s))
    };
    let start_consumer = || {
        let (name, board) = (&name, &board);
        fork(move || consumer(name, board))
    };
    let mut producers: Vec<_> = (0..PRODUCERS)
        .map(|_| start_producer(&mut next_stream))
        .collect();
    let mut consumers: Vec<_> = (0..CONSUMERS).map(|_| start_consumer()).collect();
    let mut consumer_kills = 0u64;
    let started = Instant::now();
    let mut round = 0u64;
    while started.elapsed() < RUN {
        round += 1;
        std::thread::sleep(Duration::from_millis(5 + mix(round) % 40));
        let victim = (mix(round + 7) % (PRODUCERS + CONSUMERS) as u64) as usize;
        if victim < PRODUCERS {
            kill9(producers[victim]);
            producers[victim] = start_producer(&mut next_stream);
        } else {
            kill9(consumers[victim - PRODUCERS]);
            consumer_kills += 1;
            consumers[victim - PRODUCERS] = start_consumer();
        }
    }
    for p in producers {
        kill9(p);
    }
    // Orphans of killed producers go; then the consumers drain the rest.
    Queue::reclaim(&name).unwrap();
    let drain = Instant::now();
    while q.len().unwrap() > 0 {
        assert!(
            drain.elapsed() < Duration::from_secs(60),
            "consumers stalled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    q.shutdown().unwrap();
    for c in consumers {
        common::wait_child(c, Duration::from_secs(30));
    }
    assert_eq!(board.error(0).load(Relaxed), 0, "corrupt messages");
    assert_eq!(board.error(1).load(Relaxed), 0, "reordered messages");
    let (mut missing, mut delivered) = (0u64, 0u64);
    for s in 0..next_stream {
        let confirmed = board.confirmed(s).load(Relaxed) as usize;
        for seq in 0..PER_STREAM {
            let n = board.seen(s, seq).load(Relaxed);
            assert!(n <= 1, "stream {s} seq {seq} delivered {n} times");
            delivered += u64::from(n);
            if seq < confirmed && n == 0 {
                missing += 1;
            }
        }
    }
    assert!(
        delivered > 100,
        "the run moved too little to mean anything: {delivered}"
    );
    assert!(
        missing <= consumer_kills,
        "{missing} confirmed messages lost, {consumer_kills} consumer deaths"
    );
    // Orphans of consumers killed after taking a message, then none at all.
    Queue::reclaim(&name).unwrap();
    assert_eq!(side_objects(&name), 0, "side objects left behind");
    eprintln!(
        "large chaos: {delivered} delivered, {consumer_kills} consumer kills, {missing} lost, {} streams",
        next_stream
    );
}
