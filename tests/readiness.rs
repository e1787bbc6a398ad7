//! `Queue::wait_readable` / `Queue::wait_writable`: waits that take and
//! reserve nothing, across processes, with timeouts and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{fork, fresh, wait_child, Exit};
use ring_buffer::{Error, Queue};

const ZERO: Option<Duration> = Some(Duration::ZERO);

/// Waits until `n` consumers (or producers) sleep on the queue's futex, as
/// its statistics report; panics after 30 s (a child that failed early).
fn sleepers(q: &Queue, n: u32, producers: bool) {
    let start = Instant::now();
    loop {
        let stats = q.stats().unwrap();
        let asleep = if producers {
            stats.sleeping_producers
        } else {
            stats.sleeping_consumers
        };
        if asleep >= n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no {n} sleepers");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn readable_reports_a_message_without_taking_it() {
    let (q, _c) = fresh("rd_one", 4096);
    assert_eq!(q.wait_readable(ZERO), Err(Error::Timeout));
    let start = Instant::now();
    assert_eq!(
        q.wait_readable(Some(Duration::from_millis(100))),
        Err(Error::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    q.send(b"kept").unwrap();
    for _ in 0..3 {
        assert_eq!(q.wait_readable(None), Ok(()));
        assert_eq!(q.wait_readable(ZERO), Ok(()));
    }
    assert_eq!(q.len().unwrap(), 1);
    assert_eq!(q.stats().unwrap().messages_out, 0);
    assert_eq!(q.try_recv().unwrap(), b"kept");
    assert_eq!(q.wait_readable(ZERO), Err(Error::Timeout));
}

#[test]
fn writable_is_about_the_length_asked_and_reserves_nothing() {
    let (q, _c) = fresh("wr_one", 1024);
    // 1023 usable bytes: 1019 payload bytes plus the 4-byte prefix.
    assert_eq!(q.wait_writable(1019, ZERO), Ok(()));
    // Longer ones go out of line (issue 14): room for their descriptor frame
    // is what they wait for.
    assert_eq!(q.wait_writable(1020, ZERO), Ok(()));
    assert_eq!(q.wait_writable(u32::MAX, ZERO), Ok(()));
    q.send(&[7u8; 996]).unwrap(); // 1000 bytes queued, 23 free
    assert_eq!(q.wait_writable(19, ZERO), Ok(()));
    assert_eq!(q.wait_writable(20, ZERO), Err(Error::Timeout));
    assert_eq!(q.wait_writable(1020, ZERO), Err(Error::Timeout));
    let start = Instant::now();
    assert_eq!(
        q.wait_writable(500, Some(Duration::from_millis(100))),
        Err(Error::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    // Nothing was reserved: the 23 bytes take a 19-byte message.
    q.try_send(&[8u8; 19]).unwrap();
    assert_eq!(q.len().unwrap(), 2);
}

#[test]
fn waiters_in_other_processes_wake_for_a_put_and_for_a_get() {
    let (q, c) = fresh("rw_procs", 1024);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let name = c.0.clone();
            fork(move || {
                let q = Queue::open(&name).unwrap();
                match q.wait_readable(Some(Duration::from_secs(60))) {
                    Ok(()) if q.len().unwrap() >= 1 => 0,
                    other => {
                        eprintln!("wait_readable: {other:?}");
                        1
                    }
                }
            })
        })
        .collect();
    sleepers(&q, 2, false);
    q.send(&[1u8; 1000]).unwrap();
    for pid in readers {
        assert_eq!(wait_child(pid, Duration::from_secs(60)), Exit::Code(0));
    }
    // Nobody took it; the ring is now too full for another 100 bytes.
    assert_eq!(q.len().unwrap(), 1);
    let name = c.0.clone();
    let writer = fork(move || {
        let q = Queue::open(&name).unwrap();
        match q.wait_writable(100, None) {
            Ok(()) => 0,
            other => {
                eprintln!("wait_writable: {other:?}");
                1
            }
        }
    });
    sleepers(&q, 1, true);
    assert_eq!(q.recv().unwrap().len(), 1000);
    assert_eq!(wait_child(writer, Duration::from_secs(60)), Exit::Code(0));
    assert_eq!(q.len().unwrap(), 0);
    assert_eq!(q.stats().unwrap().available_write, 1023);
}

#[test]
fn shutdown_wakes_waiters_and_readable_drains_first() {
    let (q, c) = fresh("rw_shut", 1024);
    let name = c.0.clone();
    let reader = fork(move || {
        let q = Queue::open(&name).unwrap();
        (q.wait_readable(None) != Err(Error::Shutdown)) as i32
    });
    sleepers(&q, 1, false);
    q.send(b"left").unwrap();
    // The message woke it: it must not have consumed it, and exits 1 (Ok).
    assert_eq!(wait_child(reader, Duration::from_secs(60)), Exit::Code(1));
    q.shutdown().unwrap();
    assert_eq!(q.wait_readable(None), Ok(()));
    assert_eq!(q.wait_writable(1, None), Err(Error::Shutdown));
    assert_eq!(q.recv().unwrap(), b"left");
    assert_eq!(q.wait_readable(None), Err(Error::Shutdown));
    assert_eq!(q.wait_readable(ZERO), Err(Error::Shutdown));

    let (q, c) = fresh("rw_shut2", 1024);
    q.send(&[0u8; 1000]).unwrap();
    let name = c.0.clone();
    let writer = fork(move || {
        let q = Queue::open(&name).unwrap();
        (q.wait_writable(500, None) != Err(Error::Shutdown)) as i32
    });
    sleepers(&q, 1, true);
    q.shutdown().unwrap();
    assert_eq!(wait_child(writer, Duration::from_secs(60)), Exit::Code(0));
}

#[test]
fn an_idle_waiter_uses_no_cpu() {
    let (q, c) = fresh("rd_idle", 4096);
    let name = c.0.clone();
    let waiter = fork(move || {
        let q = Queue::open(&name).unwrap();
        (q.wait_readable(None) != Ok(())) as i32
    });
    sleepers(&q, 1, false);
    let before = common::cpu_ticks(waiter);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = common::cpu_ticks(waiter) - before;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = used as f64 / ticks_per_second / start.elapsed().as_secs_f64();
    assert!(
        share < 0.01,
        "the waiter used {:.2}% of a CPU",
        share * 100.0
    );
    q.send(b"wake up").unwrap();
    assert_eq!(wait_child(waiter, Duration::from_secs(10)), Exit::Code(0));
    assert_eq!(q.len().unwrap(), 1);
}
