//! The sleepers' fallback of the asymmetric handshake (`sync::barrier`): a
//! sleeper whose membarrier failed cannot rule out a waker that skipped its
//! fence and missed its flag, so it sleeps in short slices and still finds
//! the message. The missed wake-up is made on purpose: the flag is cleared
//! under the sleeper, as a waker whose load of it came too early would
//! leave it.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::error::Result;
use crate::sync::barrier::tests::with_heavy_failing;
use crate::Queue;

/// Removes the test's queue whatever happens.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = Queue::remove(&self.0);
    }
}

/// A consumer sleeps in `recv_timeout(patience)`; a message comes whose
/// wake-up it misses. What the consumer got.
fn recv_after_missed_wake_up(heavy_fails: bool, patience: Duration) -> Result<Vec<u8>> {
    let name = format!("rbtest_wait_{}_{}", std::process::id(), heavy_fails as u8);
    let _removed = Removed(name.clone());
    let q = Queue::create(&name, 4096).unwrap();
    with_heavy_failing(heavy_fails, || {
        std::thread::scope(|s| {
            let ext = q.view().ext.expect("a version-2 queue");
            let waits_before = ext.reader.waits.load(SeqCst);
            let consumer = s.spawn(|| q.recv_timeout(patience));
            // `waits` moves after the sleeper's flag store and re-check, right
            // before its futex wait: from here on only a wake-up (or the end of
            // a slice) makes it look again.
            while ext.reader.waits.load(SeqCst) == waits_before {
                std::thread::yield_now();
            }
            ext.signals.data_wanted.store(0, SeqCst);
            q.send(b"late").unwrap();
            consumer.join().unwrap()
        })
    })
}

#[test]
fn a_sleeper_whose_membarrier_failed_finds_a_message_whose_wake_up_it_missed() {
    assert_eq!(
        recv_after_missed_wake_up(true, Duration::from_secs(20)),
        Ok(b"late".to_vec())
    );
}

/// The control: without the slices the same missed wake-up leaves the
/// sleeper asleep until its deadline, so the test above tests something.
#[test]
fn a_missed_wake_up_is_slept_through_without_the_fallback() {
    assert_eq!(
        recv_after_missed_wake_up(false, Duration::from_millis(300)),
        Err(crate::Error::Timeout)
    );
}
