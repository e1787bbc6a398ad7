//! Integrity under load, across real processes: producers x consumers in
//! {1x1, 2x2, 4x4, 8x2}, 1,000,000 messages per configuration, random payload
//! sizes 1 B .. 4 KiB behind a 16-byte identification header. Every message
//! carries (producer, sequence, checksum); the suite asserts nothing lost,
//! duplicated, corrupted, or reordered within one producer's stream as seen by
//! each consumer. The same again through the legacy raw calls with
//! fixed-size records.

mod common;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{fork, fresh, wait_child, Exit, SharedMem};
use ring_buffer::{Error, Queue};

/// 16-byte header: producer (4), sequence (8), checksum of the payload (4).
const HEADER: usize = 16;

/// Cheap deterministic payload generator for (producer, seq): xorshift64,
/// eight bytes at a time.
fn next_word(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn payload_byte(state: &mut u64) -> u8 {
    next_word(state) as u8
}

/// Fills `out` with the payload of the stream `state`; returns its checksum.
fn fill_payload(state: &mut u64, out: &mut [u8]) -> u32 {
    let mut sum = 0u64;
    for chunk in out.chunks_mut(8) {
        let w = next_word(state);
        chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
        sum = sum.rotate_left(5) ^ w;
    }
    (sum ^ sum >> 32) as u32
}

fn seed(producer: u32, seq: u64) -> u64 {
    (u64::from(producer) << 40 ^ seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Payload length for (producer, seq): 1 ..= 4096 bytes, varied.
fn payload_len(producer: u32, seq: u64) -> usize {
    1 + (seed(producer, seq) >> 20) as usize % 4096
}

fn make_message(producer: u32, seq: u64, buf: &mut Vec<u8>) {
    let len = payload_len(producer, seq);
    buf.clear();
    buf.extend_from_slice(&producer.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.resize(HEADER + len, 0);
    let sum = fill_payload(&mut seed(producer, seq), &mut buf[HEADER..]);
    buf[12..16].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a message; returns (producer, seq) if it is intact.
fn check_message(msg: &[u8]) -> Option<(u32, u64)> {
    if msg.len() < HEADER + 1 {
        return None;
    }
    let producer = u32::from_le_bytes(msg[0..4].try_into().ok()?);
    let seq = u64::from_le_bytes(msg[4..12].try_into().ok()?);
    let sum = u32::from_le_bytes(msg[12..16].try_into().ok()?);
    if msg.len() - HEADER != payload_len(producer, seq) {
        return None;
    }
    let mut expected = [0u8; 4096];
    let payload = &msg[HEADER..];
    let actual = fill_payload(&mut seed(producer, seq), &mut expected[..payload.len()]);
    (actual == sum && payload == &expected[..payload.len()]).then_some((producer, seq))
}

/// Counters the children report through shared memory.
struct Tally {
    /// Times each (producer, seq) was received.
    seen: SharedMem,
    /// [corrupt, out_of_order, received]
    counters: SharedMem,
}

impl Tally {
    fn new(messages: usize) -> Tally {
        Tally {
            seen: SharedMem::new(messages),
            counters: SharedMem::new(4096),
        }
    }
    fn seen(&self) -> &[AtomicU8] {
        self.seen.atomics()
    }
    fn counter(&self, i: usize) -> &AtomicU64 {
        &self.counters.atomics::<AtomicU64>()[i]
    }
}

const CORRUPT: usize = 0;
const REORDERED: usize = 1;
const RECEIVED: usize = 2;

/// What producers and consumers use to move records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    Messages,
    /// Legacy `ring_buffer_write`/`read` of fixed-size records (through the
    /// same locks), waiting by yielding as legacy callers do.
    LegacyRecords,
}

const RECORD: usize = 64;

fn run(api: Api, producers: u32, consumers: u32, total: u64) {
    let per = total / u64::from(producers);
    let ring = if api == Api::Messages {
        64 * 1024
    } else {
        16 * 1024
    };
    let (q, cleanup) = fresh(&format!("stress{producers}x{consumers}"), ring);
    let name = cleanup.0.clone();
    let tally = Tally::new((per * u64::from(producers)) as usize);
    let start = Instant::now();
    let mut consumer_pids = Vec::new();
    for _ in 0..consumers {
        let (name, tally) = (name.clone(), &tally);
        consumer_pids.push(fork(move || consume(&name, api, producers, per, tally)));
    }
    let producer_pids: Vec<_> = (0..producers)
        .map(|p| {
            let name = name.clone();
            fork(move || produce(&name, api, p, per))
        })
        .collect();
    for pid in producer_pids {
        assert_eq!(
            wait_child(pid, Duration::from_secs(120)),
            Exit::Code(0),
            "producer"
        );
    }
    match api {
        // Consumers drain what is left, then see Shutdown.
        Api::Messages => q.shutdown().unwrap(),
        // Legacy consumers stop once everything they expect has arrived.
        Api::LegacyRecords => {}
    }
    for pid in consumer_pids {
        assert_eq!(
            wait_child(pid, Duration::from_secs(120)),
            Exit::Code(0),
            "consumer"
        );
    }
    let (mut lost, mut duplicated) = (0u64, 0u64);
    for count in tally.seen() {
        match count.load(Relaxed) {
            0 => lost += 1,
            1 => {}
            n => duplicated += u64::from(n) - 1,
        }
    }
    let corrupt = tally.counter(CORRUPT).load(Relaxed);
    let reordered = tally.counter(REORDERED).load(Relaxed);
    eprintln!(
        "{api:?} {producers}x{consumers}: {} messages in {:.2?}: lost {lost}, duplicated {duplicated}, corrupt {corrupt}, reordered {reordered}",
        per * u64::from(producers),
        start.elapsed()
    );
    assert_eq!((lost, duplicated, corrupt, reordered), (0, 0, 0, 0));
    assert_eq!(
        tally.counter(RECEIVED).load(Relaxed),
        per * u64::from(producers)
    );
    assert_eq!(q.len().unwrap(), 0);
    if api == Api::Messages {
        let stats = q.stats().unwrap();
        assert_eq!(stats.messages_in, per * u64::from(producers));
        assert_eq!(stats.messages_out, per * u64::from(producers));
    }
}

fn produce(name: &str, api: Api, producer: u32, count: u64) -> i32 {
    let q = Queue::open(name).unwrap();
    let mut msg = Vec::with_capacity(HEADER + 4096);
    for seq in 0..count {
        match api {
            Api::Messages => {
                make_message(producer, seq, &mut msg);
                q.send(&msg).unwrap();
            }
            Api::LegacyRecords => {
                let mut rec = [0u8; RECORD];
                rec[0..4].copy_from_slice(&producer.to_le_bytes());
                rec[4..12].copy_from_slice(&seq.to_le_bytes());
                let mut state = seed(producer, seq);
                for b in &mut rec[12..] {
                    *b = payload_byte(&mut state);
                }
                while legacy::write(&q, &rec).is_err() {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                }
            }
        }
    }
    0
}

fn consume(name: &str, api: Api, producers: u32, per: u64, tally: &Tally) -> i32 {
    let q = Queue::open(name).unwrap();
    let mut last: Vec<Option<u64>> = vec![None; producers as usize];
    let mut buf = vec![0u8; 8192];
    let expected = per * u64::from(producers);
    loop {
        let id = match api {
            Api::Messages => match q.recv_into(&mut buf) {
                Ok(n) => check_message(&buf[..n]),
                Err(Error::Shutdown) => break,
                Err(e) => panic!("recv: {e}"),
            },
            Api::LegacyRecords => {
                if tally.counter(RECEIVED).load(Relaxed) >= expected {
                    break;
                }
                let rec = &mut buf[..RECORD];
                if legacy::read(&q, rec).is_err() {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                    continue;
                }
                let producer = u32::from_le_bytes(rec[0..4].try_into().unwrap());
                let seq = u64::from_le_bytes(rec[4..12].try_into().unwrap());
                let mut state = seed(producer, seq);
                let intact = producer < producers
                    && rec[12..].iter().all(|&b| b == payload_byte(&mut state));
                intact.then_some((producer, seq))
            }
        };
        tally.counter(RECEIVED).fetch_add(1, Relaxed);
        let Some((producer, seq)) = id.filter(|&(p, s)| p < producers && s < per) else {
            tally.counter(CORRUPT).fetch_add(1, Relaxed);
            continue;
        };
        let prev = &mut last[producer as usize];
        if prev.is_some_and(|p| p >= seq) {
            tally.counter(REORDERED).fetch_add(1, Relaxed);
        }
        *prev = Some(seq);
        tally.seen()[(u64::from(producer) * per + seq) as usize].fetch_add(1, Relaxed);
    }
    0
}

/// The legacy raw calls, reached the way C callers reach them.
mod legacy {
    use ring_buffer::ffi;
    use ring_buffer::Queue;

    /// One handle per process for the legacy calls, opened by name.
    fn handle(q: &Queue) -> *mut ring_buffer::layout::RingBuffer {
        use std::sync::OnceLock;
        static RB: OnceLock<usize> = OnceLock::new();
        *RB.get_or_init(|| {
            let name = std::ffi::CString::new(q.name()).unwrap();
            // SAFETY: a NUL-terminated name.
            let rb = unsafe { ffi::ring_buffer_open(name.as_ptr()) };
            assert!(!rb.is_null());
            rb as usize
        }) as *mut _
    }

    pub fn write(q: &Queue, rec: &[u8]) -> Result<(), ()> {
        // SAFETY: `rec` is readable for its length; the handle is live.
        let n = unsafe { ffi::ring_buffer_write(handle(q), rec.as_ptr().cast(), rec.len() as u32) };
        if n == rec.len() as i32 {
            Ok(())
        } else {
            Err(())
        }
    }

    pub fn read(q: &Queue, rec: &mut [u8]) -> Result<(), ()> {
        // SAFETY: `rec` is writable for its length; the handle is live.
        let n =
            unsafe { ffi::ring_buffer_read(handle(q), rec.as_mut_ptr().cast(), rec.len() as u32) };
        if n == rec.len() as i32 {
            Ok(())
        } else {
            Err(())
        }
    }
}

#[test]
fn messages_1x1_2x2_4x4_8x2_exactly_once() {
    for (p, c) in [(1, 1), (2, 2), (4, 4), (8, 2)] {
        run(Api::Messages, p, c, 1_000_000);
    }
}

#[test]
fn legacy_records_1x1_2x2_4x4_8x2_exactly_once() {
    for (p, c) in [(1, 1), (2, 2), (4, 4), (8, 2)] {
        run(Api::LegacyRecords, p, c, 1_000_000);
    }
}
