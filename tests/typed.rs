//! Typed messages (`TypedQueue`, feature `serde`): values cross real
//! processes intact and in order; every variant of the byte API has its typed
//! twin with the same blocking, errors and size limit; values that cannot be
//! encoded or decoded fail with errors that say what and why.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fork, fresh, wait_child, Exit};
use ring_buffer::{CodecFailure, Error, Queue, TypedQueue};
use serde::{Deserialize, Serialize, Serializer};

const LIMIT: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Kind {
    Resize { width: u32, height: u32 },
    Transcode(String),
    Ping,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Job {
    producer: u8,
    seq: u64,
    kind: Kind,
    weights: Vec<f64>,
    note: Option<String>,
    tags: BTreeMap<String, i64>,
}

/// The job `producer` sends as number `seq`: rebuilt by the receiver to check
/// every field arrived intact.
fn job(producer: u8, seq: u64) -> Job {
    let kind = match seq % 3 {
        0 => Kind::Resize {
            width: seq as u32,
            height: 2 * seq as u32 + 1,
        },
        1 => Kind::Transcode(format!("video-{seq}.mkv")),
        _ => Kind::Ping,
    };
    Job {
        producer,
        seq,
        kind,
        weights: (0..seq % 7).map(|i| i as f64 / 3.0 - seq as f64).collect(),
        note: (seq % 2 == 0).then(|| "é ünïcode ✓".repeat((seq % 5) as usize)),
        tags: (0..seq % 4)
            .map(|i| (format!("t{i}"), -(seq as i64) * i as i64))
            .collect(),
    }
}

fn decode_reason<T: std::fmt::Debug>(r: ring_buffer::Result<T>) -> (&'static str, CodecFailure) {
    match r {
        Err(Error::Decode { type_name, reason }) => (type_name, reason),
        other => panic!("expected Error::Decode, got {other:?}"),
    }
}

#[test]
fn typed_values_cross_processes_intact_and_in_producer_order() {
    const PER_PRODUCER: u64 = 3000;
    let (bytes, _cleanup) = fresh("typed_mp", 16 * 1024);
    let queue = TypedQueue::<Job>::from_queue(bytes);
    let name = String::from_utf8(queue.name().to_vec()).unwrap();
    let producers: Vec<_> = (0..2u8)
        .map(|p| {
            let name = name.clone();
            fork(move || {
                let q = TypedQueue::<Job>::open(&name).unwrap();
                let mut seq = 0;
                while seq < PER_PRODUCER {
                    if seq % 10 == 0 {
                        // A batch of up to 5; it may put fewer (as fit).
                        let batch: Vec<Job> = (seq..(seq + 5).min(PER_PRODUCER))
                            .map(|s| job(p, s))
                            .collect();
                        seq += q.send_batch(&batch).unwrap() as u64;
                    } else {
                        q.send(&job(p, seq)).unwrap();
                        seq += 1;
                    }
                }
                0
            })
        })
        .collect();
    let mut next = [0u64; 2];
    let mut received = 0;
    while received < 2 * PER_PRODUCER {
        let got = if received % 3 == 0 {
            queue.recv_batch_timeout(7, LIMIT).unwrap()
        } else {
            vec![queue.recv_timeout(LIMIT).unwrap()]
        };
        for j in got {
            let p = j.producer as usize;
            assert_eq!(
                j,
                job(j.producer, next[p]),
                "producer {p} out of order or damaged"
            );
            next[p] += 1;
            received += 1;
        }
    }
    for pid in producers {
        assert_eq!(wait_child(pid, LIMIT), Exit::Code(0));
    }
    assert_eq!(next, [PER_PRODUCER; 2]);
    assert_eq!(queue.try_recv(), Err(Error::Empty));
}

#[test]
fn workers_in_other_processes_mark_tasks_done_and_stop_at_shutdown() {
    let (jobs_bytes, _c1) = fresh("typed_jobs", 64 * 1024);
    let (results_bytes, _c2) = fresh("typed_results", 64 * 1024);
    let jobs = TypedQueue::<Job>::from_queue(jobs_bytes);
    let results = TypedQueue::<(u32, u64)>::from_queue(results_bytes);
    let jobs_name = String::from_utf8(jobs.name().to_vec()).unwrap();
    let results_name = String::from_utf8(results.name().to_vec()).unwrap();
    let workers: Vec<_> = (0..3u32)
        .map(|w| {
            let (jobs_name, results_name) = (jobs_name.clone(), results_name.clone());
            fork(move || {
                let jobs = TypedQueue::<Job>::open(&jobs_name).unwrap();
                let results = TypedQueue::<(u32, u64)>::open(&results_name).unwrap();
                loop {
                    match jobs.recv() {
                        Ok(j) => {
                            assert_eq!(j, job(0, j.seq));
                            results.send(&(w, j.seq)).unwrap();
                            jobs.task_done().unwrap();
                        }
                        Err(Error::Shutdown) => return 0,
                        Err(e) => panic!("worker {w}: {e}"),
                    }
                }
            })
        })
        .collect();
    for seq in 0..200 {
        jobs.send(&job(0, seq)).unwrap();
    }
    jobs.join_timeout(LIMIT).unwrap();
    assert_eq!(jobs.unfinished_tasks().unwrap(), 0);
    jobs.shutdown().unwrap();
    assert!(jobs.is_shutdown());
    assert_eq!(jobs.send(&job(0, 999)), Err(Error::Shutdown));
    for pid in workers {
        assert_eq!(wait_child(pid, LIMIT), Exit::Code(0));
    }
    let mut seen: Vec<u64> = results
        .try_recv_batch(1000)
        .unwrap()
        .into_iter()
        .map(|(w, seq)| {
            assert!(w < 3);
            seq
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..200).collect::<Vec<_>>(),
        "every job handled exactly once"
    );
}

#[test]
fn try_and_timeout_variants_wait_and_fail_as_the_byte_api_does() {
    let (bytes, _cleanup) = fresh("typed_variants", 1024);
    let q = TypedQueue::<Vec<u8>>::from_queue(bytes);
    let short = Duration::from_millis(20);
    assert_eq!(q.try_recv(), Err(Error::Empty));
    assert_eq!(q.recv_timeout(short), Err(Error::Timeout));
    assert_eq!(q.try_recv_batch(4), Err(Error::Empty));
    assert_eq!(q.recv_batch_timeout(4, short), Err(Error::Timeout));
    assert_eq!(q.try_recv_batch(0), Err(Error::InvalidArg));

    // 300 bytes encode as 303 (a 3-byte varint length), 307 framed: three fit
    // in the 1023 usable bytes, a fourth does not.
    let v = vec![7u8; 300];
    assert_eq!(TypedQueue::<Vec<u8>>::encode(&v).unwrap().len(), 303);
    q.try_send(&v).unwrap();
    q.send_timeout(&v, short).unwrap();
    q.send(&v).unwrap();
    assert_eq!(q.try_send(&v), Err(Error::Full));
    assert_eq!(q.send_timeout(&v, short), Err(Error::Timeout));
    assert_eq!(q.try_send_batch(std::slice::from_ref(&v)), Err(Error::Full));
    assert_eq!(
        q.send_batch_timeout(std::slice::from_ref(&v), short),
        Err(Error::Timeout)
    );
    assert_eq!(q.len().unwrap(), 3);
    assert!(!q.is_empty().unwrap());
    assert_eq!(q.recv_batch(2).unwrap(), [v.clone(), v.clone()]);
    // Room for two again: a batch of three puts the two that fit.
    assert_eq!(q.try_send_batch(&[v.clone(), v.clone(), v.clone()]), Ok(2));
    assert_eq!(
        q.send_batch_timeout(std::slice::from_ref(&v), short),
        Err(Error::Timeout)
    );
    assert_eq!(q.try_recv_batch(10).unwrap().len(), 3);
    assert_eq!(q.send_batch(&[vec![1], vec![2, 2]]), Ok(2));
    assert_eq!(q.try_recv().unwrap(), [1]);
    assert_eq!(q.recv().unwrap(), [2, 2]);
    assert_eq!(q.try_send_batch(&[]), Err(Error::InvalidArg));
}

#[test]
fn a_value_longer_than_the_ring_goes_out_of_line_as_bytes_of_that_length_do() {
    let (bytes, _cleanup) = fresh("typed_large", 1024);
    let max = bytes.max_message_len() as usize; // 1019
    let q = TypedQueue::<Vec<u8>>::from_queue(bytes.clone());
    assert_eq!(q.max_message_len() as usize, max);
    // A Vec<u8> of n < 251 bytes encodes as n + 1, from 251 on as n + 3.
    let fits = vec![1u8; max - 3];
    let longer = vec![2u8; 100_000];
    assert_eq!(TypedQueue::<Vec<u8>>::encode(&fits).unwrap().len(), max);
    q.send(&longer).unwrap();
    q.send_timeout(&longer, Duration::from_millis(100)).unwrap();
    assert_eq!(q.len().unwrap(), 2);
    assert_eq!(q.recv().unwrap(), longer);
    assert_eq!(q.recv().unwrap(), longer);
    // In a batch it goes alone, in order.
    let batch = [vec![1], longer.clone(), vec![3]];
    let mut sent = 0;
    while sent < batch.len() {
        sent += q.send_batch(&batch[sent..]).unwrap();
    }
    for want in &batch {
        assert_eq!(&q.recv().unwrap(), want);
    }
    q.send(&fits).unwrap();
    assert_eq!(q.recv().unwrap(), fits);
}

#[test]
fn a_message_that_is_not_the_queue_type_is_a_decode_error_and_consumed() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Point {
        x: i32,
        y: i32,
    }
    let (bytes, _cleanup) = fresh("typed_decode", 4096);
    let q = TypedQueue::<Point>::from_queue(bytes.clone());
    let good = Point { x: -3, y: 400 };
    let encoded = TypedQueue::<Point>::encode(&good).unwrap();

    bytes.send(&encoded[..encoded.len() - 1]).unwrap(); // cut short
    bytes.send(&[encoded.as_slice(), &[0]].concat()).unwrap(); // one byte too many
    q.send(&good).unwrap();
    let (type_name, reason) = decode_reason(q.recv());
    assert!(type_name.ends_with("Point"), "{type_name}");
    assert_eq!(reason, CodecFailure::UnexpectedEnd);
    let err = q.try_recv().unwrap_err();
    assert_eq!(decode_reason::<()>(Err(err)).1, CodecFailure::TrailingBytes);
    let text = err.to_string();
    assert!(
        text.contains("Point") && text.contains("left over") && text.contains("another type"),
        "{text}"
    );
    // The bad messages were consumed; the good one is next.
    assert_eq!(q.recv().unwrap(), good);

    // In a batch the error names the first bad message; the whole batch is
    // consumed, the messages after it are not.
    q.send(&good).unwrap();
    bytes.send(&[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]).unwrap();
    q.send(&good).unwrap();
    q.send(&Point { x: 1, y: 2 }).unwrap();
    assert_eq!(
        decode_reason(q.recv_batch(3)).1,
        CodecFailure::TrailingBytes
    );
    assert_eq!(q.try_recv_batch(3).unwrap(), [Point { x: 1, y: 2 }]);

    // Other reasons, each from a message of another type.
    let strings = TypedQueue::<String>::from_queue(bytes.clone());
    bytes.send(&[2, 0xff, 0xfe]).unwrap();
    assert_eq!(decode_reason(strings.recv()).1, CodecFailure::InvalidUtf8);
    let kinds = TypedQueue::<Kind>::from_queue(bytes.clone());
    bytes.send(&[3]).unwrap(); // Kind has variants 0..=2
    assert_eq!(decode_reason(kinds.recv()).1, CodecFailure::Rejected);
    let flags = TypedQueue::<(bool, Option<u8>)>::from_queue(bytes.clone());
    bytes.send(&[2, 0]).unwrap();
    assert_eq!(decode_reason(flags.recv()).1, CodecFailure::InvalidValue);
    bytes.send(&[1, 5, 0]).unwrap(); // Option tag 5
    assert_eq!(decode_reason(flags.recv()).1, CodecFailure::InvalidValue);
    bytes.send(&[1, 1, 0]).unwrap();
    assert_eq!(flags.recv().unwrap(), (true, Some(0)));
    assert_eq!(
        err.code(),
        ring_buffer::RbStatus::RB_ERR_INCOMPATIBLE as i32
    );
}

/// Serialises as a sequence of unknown length, which bincode cannot encode.
struct Unsized(Vec<u8>);

impl Serialize for Unsized {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().filter(|_| true))
    }
}

impl<'de> Deserialize<'de> for Unsized {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d).map(Unsized)
    }
}

/// A type whose own `Serialize`/`Deserialize` refuse odd numbers.
#[derive(Debug, PartialEq)]
struct Even(u32);

impl Serialize for Even {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 2 == 1 {
            return Err(serde::ser::Error::custom("odd"));
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Even {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 1 {
            return Err(serde::de::Error::custom("odd"));
        }
        Ok(Even(n))
    }
}

/// Untagged enums need a self-describing format (`deserialize_any`).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(untagged)]
enum Loose {
    Number(u64),
    Text(String),
}

#[test]
fn values_that_cannot_be_encoded_send_nothing_and_say_why() {
    let (bytes, _cleanup) = fresh("typed_encode", 4096);
    let unsized_q = TypedQueue::<Unsized>::from_queue(bytes.clone());
    let err = unsized_q.send(&Unsized(vec![1, 2])).unwrap_err();
    let Error::Encode { type_name, reason } = err else {
        panic!("expected Error::Encode, got {err:?}");
    };
    assert!(type_name.ends_with("Unsized"), "{type_name}");
    assert_eq!(reason, CodecFailure::Unsupported);
    assert_eq!(err.code(), ring_buffer::RbStatus::RB_ERR_INVALID_ARG as i32);
    assert!(err.to_string().contains("unknown length"), "{err}");

    let even = TypedQueue::<Even>::from_queue(bytes.clone());
    let rejected = Error::Encode {
        type_name: std::any::type_name::<Even>(),
        reason: CodecFailure::Rejected,
    };
    assert_eq!(even.try_send(&Even(3)), Err(rejected));
    // Nothing of a batch goes if one value fails to encode.
    assert_eq!(even.send_batch(&[Even(2), Even(5)]), Err(rejected));
    assert_eq!(bytes.len().unwrap(), 0);
    even.send(&Even(4)).unwrap();
    assert_eq!(even.recv().unwrap(), Even(4));
    bytes.send(&[7]).unwrap(); // an odd number, sent as bytes
    assert_eq!(decode_reason(even.recv()).1, CodecFailure::Rejected);

    let loose = TypedQueue::<Loose>::from_queue(bytes.clone());
    loose.send(&Loose::Number(5)).unwrap(); // encoding works...
    assert_eq!(decode_reason(loose.recv()).1, CodecFailure::Unsupported); // ...decoding cannot
}

#[test]
fn handles_wrap_share_and_report_as_byte_queues_do() {
    let (bytes, _cleanup) = fresh("typed_handle", 4096);
    let q = TypedQueue::<u64>::from_queue(bytes);
    let clone = q.clone();
    q.send(&42).unwrap();
    assert_eq!(clone.recv().unwrap(), 42);
    assert!(format!("{q:?}").contains("TypedQueue") && format!("{q:?}").contains("u64"));
    assert_eq!(q.as_queue().name(), q.name());
    assert_eq!(q.attached_processes().unwrap(), 1);
    q.send_batch(&[1, 2, 3]).unwrap();
    let stats = q.stats().unwrap();
    assert_eq!((stats.messages_in, stats.messages_queued), (4, 3));
    q.recv().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 3);
    // The byte queue underneath holds the encodings.
    let raw: Queue = q.into_queue();
    assert_eq!(raw.recv().unwrap(), [2]);

    // Constructors mirror the byte API's.
    let name = common::unique_name("typed_ctor");
    let _c = common::Cleanup(name.clone());
    let created = TypedQueue::<String>::create(&name, 1024).unwrap();
    assert_eq!(
        TypedQueue::<String>::create(&name, 1024).unwrap_err(),
        Error::Exists
    );
    let opened = TypedQueue::<String>::open_or_create(&name, 1024).unwrap();
    let options = ring_buffer::Options::default();
    let opened_with = TypedQueue::<String>::open_with(&name, &options).unwrap();
    opened.send(&"hi".to_owned()).unwrap();
    assert_eq!(opened_with.recv().unwrap(), "hi");
    drop((created, opened, opened_with));
    Queue::remove(&name).unwrap();
    assert_eq!(
        TypedQueue::<String>::open(&name).unwrap_err(),
        Error::NotFound
    );
    let made =
        TypedQueue::<String>::open_or_create_with(&name, 1024, &options.mode(0o640)).unwrap();
    drop(made);
    Queue::remove(&name).unwrap();
    let made =
        TypedQueue::<String>::create_with(&name, 1024, &ring_buffer::Options::default()).unwrap();
    assert!(made.is_empty().unwrap());
}
