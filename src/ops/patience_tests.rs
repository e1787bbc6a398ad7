//! A consumer whose last message went out of line, or was a message of
//! `PATIENT_FROM` bytes or more in the ring, yields, instead of sleeping,
//! for about as long as the next such message takes to write
//! (`View::note_received`), once: a patience spent without a message is
//! not renewed until the next large message. After a shorter message in
//! the ring it sleeps after the short spin, as before. Told apart by the reader's wait
//! count, which moves only on the way to a futex sleep: no timing is
//! asserted beyond deadlines far from the patience.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::wait::{drain_ns, MAX_PATIENCE_NS, PATIENT_BATCH, PATIENT_FROM};
use crate::error::Error;
use crate::Queue;

/// Removes the test's queue whatever happens.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = Queue::remove(&self.0);
    }
}

#[test]
fn patience_follows_the_last_message_and_is_bounded_and_per_handle() {
    let name = format!("rbtest_patience_h_{}", std::process::id());
    let _removed = Removed(name.clone());
    let q = Queue::create(&name, 4096).unwrap();
    let other = Queue::open(&name).unwrap();
    let view = q.view();
    view.note_received(Some(1 << 20));
    assert_eq!(view.patience_ns(), (1 << 20) / 8);
    view.note_received(Some(64 << 20));
    assert_eq!(view.patience_ns(), MAX_PATIENCE_NS);
    // Another handle of the same queue (in this process) has its own.
    assert_eq!(other.view().patience_ns(), 0);
    // Every thread using the handle sees it.
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(q.view().patience_ns(), MAX_PATIENCE_NS));
    });
    view.note_received(None);
    assert_eq!(view.patience_ns(), 0);
}

/// Large messages in the ring call for patience too (their length at 8
/// bytes a nanosecond), shorter ones do not; a batch takes its last
/// message's.
#[test]
fn large_messages_in_the_ring_call_for_patience() {
    let name = format!("rbtest_patience_r_{}", std::process::id());
    let _removed = Removed(name.clone());
    let q = Queue::create(&name, 1 << 20).unwrap();
    let patient = vec![1u8; PATIENT_FROM as usize];
    let longer = vec![2u8; 64 << 10];
    let short = vec![3u8; PATIENT_FROM as usize - 1];
    q.send(&longer).unwrap();
    assert_eq!(q.recv().unwrap(), longer);
    assert_eq!(q.view().patience_ns(), (64 << 10) / 8);
    q.send(&patient).unwrap();
    assert_eq!(q.recv().unwrap(), patient);
    assert_eq!(q.view().patience_ns(), u64::from(PATIENT_FROM) / 8);
    q.send(&short).unwrap();
    assert_eq!(q.recv().unwrap(), short);
    assert_eq!(q.view().patience_ns(), 0);
    q.send_batch(&[&short[..], &longer[..]]).unwrap();
    assert_eq!(q.recv_batch(2).unwrap().len(), 2);
    assert_eq!(q.view().patience_ns(), (64 << 10) / 8);
    q.send_batch(&[&longer[..], &short[..]]).unwrap();
    assert_eq!(q.recv_batch(2).unwrap().len(), 2);
    assert_eq!(q.view().patience_ns(), 0);
}

/// A receive of `PATIENT_BATCH` messages or more calls for patience: their
/// frames' bytes plus 2 KiB a message (256 ns at 8 bytes a nanosecond), or
/// its last message's if that is longer; fewer messages do not.
#[test]
fn batches_call_for_patience() {
    let name = format!("rbtest_patience_b_{}", std::process::id());
    let _removed = Removed(name.clone());
    let q = Queue::create(&name, 1 << 20).unwrap();
    let item = vec![5u8; 512];
    let batch = vec![&item[..]; 256];
    q.send_batch(&batch).unwrap();
    assert_eq!(q.recv_batch(256).unwrap().len(), 256);
    // 256 frames of 4 + 512 bytes, and 256 messages' worth of 2 KiB.
    assert_eq!(q.view().patience_ns(), (256 * 516 + 256 * 2048) / 8);

    // One message short of a batch: no patience (short messages).
    let fewer = vec![&item[..]; PATIENT_BATCH - 1];
    q.send_batch(&fewer).unwrap();
    assert_eq!(q.recv_batch(256).unwrap().len(), PATIENT_BATCH - 1);
    assert_eq!(q.view().patience_ns(), 0);
    let just = vec![&item[..]; PATIENT_BATCH];
    q.send_batch(&just).unwrap();
    assert_eq!(q.recv_batch(256).unwrap().len(), PATIENT_BATCH);
    assert_eq!(
        q.view().patience_ns(),
        (PATIENT_BATCH as u64) * (516 + 2048) / 8
    );

    // A batch that ends with a message that went out of line (longer than
    // the ring) takes that message's patience if it is the longer.
    let longer = vec![2u8; 3 << 19];
    let mut mixed = vec![&item[..]; PATIENT_BATCH];
    mixed.push(&longer[..]);
    let mut sent = 0;
    while sent < mixed.len() {
        sent += q.send_batch(&mixed[sent..]).unwrap();
    }
    let mut got = q.recv_batch(256).unwrap();
    while got.len() < mixed.len() {
        got.extend(q.recv_batch(256).unwrap());
    }
    assert_eq!(got.last().unwrap().len(), longer.len());
    assert_eq!(q.view().patience_ns(), (3 << 19) / 8);

    // Bounded like any patience.
    let many = vec![&item[..]; 1500];
    let mut sent = 0;
    while sent < many.len() {
        sent += q.send_batch(&many[sent..]).unwrap();
    }
    let mut got = 0;
    while got < many.len() {
        got += q.recv_batch(2000).unwrap().len();
    }
    assert_eq!(q.view().patience_ns(), MAX_PATIENCE_NS);
}

#[test]
fn a_consumer_of_large_messages_yields_and_one_of_small_messages_sleeps() {
    let name = format!("rbtest_patience_{}", std::process::id());
    let _removed = Removed(name.clone());
    let q = Queue::create(&name, 4096).unwrap();
    let ext = q.view().ext.expect("a version-2 queue");
    let large = vec![7u8; 4 << 20];

    // After a message that went out of line: a wait shorter than the
    // patience (250 us) ends by its deadline without a sleep.
    q.send(&large).unwrap();
    assert_eq!(q.recv().unwrap().len(), large.len());
    assert_eq!(q.view().patience_ns(), MAX_PATIENCE_NS);
    let waits = ext.reader.waits.load(SeqCst);
    assert_eq!(
        q.recv_timeout(Duration::from_micros(150)),
        Err(Error::Timeout)
    );
    assert_eq!(
        ext.reader.waits.load(SeqCst),
        waits,
        "slept within its patience"
    );

    // Cut short by its deadline, that wait left the patience whole.
    assert_eq!(q.view().patience_ns(), MAX_PATIENCE_NS);

    // A helper thread's non-consuming wait on the handle (as
    // `sage_queue.aio` waits) is as patient.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(
                q.wait_readable(Some(Duration::from_micros(150))),
                Err(Error::Timeout)
            );
        });
    });
    assert_eq!(
        ext.reader.waits.load(SeqCst),
        waits,
        "a helper thread slept within the handle's patience"
    );

    // A longer wait sleeps once the patience is spent, and spends it: the
    // next waits sleep after the short spin until the next large message.
    assert_eq!(
        q.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    );
    assert!(ext.reader.waits.load(SeqCst) > waits, "never slept");
    assert_eq!(q.view().patience_ns(), 0);
    q.send(&large).unwrap();
    assert_eq!(q.recv().unwrap().len(), large.len());
    assert_eq!(q.view().patience_ns(), MAX_PATIENCE_NS);

    // After a message in the ring: the short spin, then a sleep.
    q.send(b"small").unwrap();
    assert_eq!(q.recv().unwrap(), b"small");
    assert_eq!(q.view().patience_ns(), 0);
    let waits = ext.reader.waits.load(SeqCst);
    assert_eq!(
        q.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    );
    assert!(ext.reader.waits.load(SeqCst) > waits, "never slept");
}

#[test]
fn a_producer_keeps_off_for_half_of_what_is_queued_at_a_copy_pace_bounded() {
    // A small ring's worth: no keeping off (its consumer is soon done).
    assert_eq!(drain_ns(0), 0);
    assert_eq!(drain_ns(4 << 10), 0);
    assert_eq!(drain_ns((32 << 10) - 1), 0);
    // From there, half of the queued bytes at 16 bytes a nanosecond.
    assert_eq!(drain_ns(32 << 10), 1_024);
    assert_eq!(drain_ns(64 << 10), 2_048);
    assert_eq!(drain_ns(1 << 20), 32_768);
    // At most 64 us (2 MiB queued), whatever the ring.
    assert_eq!(drain_ns(2 << 20), 65_536);
    assert_eq!(drain_ns(4 << 20), 65_536);
    assert_eq!(drain_ns(u64::MAX), 65_536);
}
