//! The safe Rust API: every call's success and error paths, blocking,
//! timeouts, shutdown, task accounting, liveness.

mod common;

use std::time::{Duration, Instant};

use common::{fork, fresh, unique_name, wait_child, Cleanup, Exit};
use ring_buffer::{Error, Options, Queue};

#[test]
fn messages_round_trip_in_order() {
    let (q, _c) = fresh("rt", 4096);
    assert_eq!(q.buffer_size(), 4096);
    assert_eq!(q.max_message_len(), 4096 - 1 - 4);
    for i in 0..10u32 {
        q.send(&i.to_le_bytes()).unwrap();
    }
    q.send(b"").unwrap();
    assert_eq!(q.len().unwrap(), 11);
    for i in 0..10u32 {
        assert_eq!(q.recv().unwrap(), i.to_le_bytes());
    }
    assert_eq!(q.recv().unwrap(), b"");
    assert!(q.is_empty().unwrap());
    assert_eq!(q.try_recv(), Err(Error::Empty));
}

#[test]
fn wraps_around_many_times() {
    let (q, _c) = fresh("wrap", 1024);
    let mut next = 0u64;
    for round in 0..2000u64 {
        let len = (round * 37 % 300) as usize;
        let msg: Vec<u8> = (0..len).map(|i| (i as u64 + round) as u8).collect();
        q.send(&msg).unwrap();
        if round % 3 == 2 {
            while let Ok(m) = q.try_recv() {
                let expect_len = (next * 37 % 300) as usize;
                let expect: Vec<u8> = (0..expect_len).map(|i| (i as u64 + next) as u8).collect();
                assert_eq!(m, expect);
                next += 1;
            }
        }
    }
    while q.try_recv().is_ok() {
        next += 1;
    }
    assert_eq!(next, 2000);
}

#[test]
fn full_too_large_and_buffer_too_small() {
    let (q, _c) = fresh("full", 1024);
    let big = vec![7u8; q.max_message_len() as usize];
    q.try_send(&big).unwrap();
    assert_eq!(q.try_send(b"x"), Err(Error::Full));
    // One byte more goes out of line (a side object), but its descriptor
    // needs room in the ring too: full now.
    assert_eq!(
        q.try_send(&vec![0; q.max_message_len() as usize + 1]),
        Err(Error::Full)
    );
    let mut small = [0u8; 10];
    assert_eq!(
        q.try_recv_into(&mut small),
        Err(Error::BufferTooSmall {
            needed: q.max_message_len()
        })
    );
    // Nothing was consumed.
    assert_eq!(q.len().unwrap(), 1);
    assert_eq!(q.try_recv().unwrap(), big);
}

#[test]
fn batches_put_what_fits_and_get_what_fits() {
    let (q, _c) = fresh("batch", 1024);
    let msgs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 20]).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let n = q.try_send_batch(&refs).unwrap();
    // 24 bytes a frame, 1023 bytes of capacity.
    assert_eq!(n, 1023 / 24);
    assert_eq!(q.try_send_batch(&refs[n..]), Err(Error::Full));
    let got = q.try_recv_batch(10).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got[9], vec![9u8; 20]);
    let rest = q.try_recv_batch(1000).unwrap();
    assert_eq!(rest.len(), n - 10);
    assert_eq!(q.try_recv_batch(1), Err(Error::Empty));
    assert_eq!(q.try_recv_batch(0), Err(Error::InvalidArg));
    assert_eq!(q.try_send_batch(&[]), Err(Error::InvalidArg));
    // A message longer than the ring goes out of line, alone: the batch
    // stops before it, and the next call puts it.
    let huge = vec![9u8; 2000];
    assert_eq!(q.try_send_batch(&[b"ok", &huge]), Ok(1));
    assert_eq!(q.try_send_batch(&[&huge, b"ok"]), Ok(1));
    assert_eq!(q.try_recv_batch(10).unwrap(), vec![b"ok".to_vec(), huge]);
}

#[test]
fn get_timeout_is_honoured() {
    let (q, _c) = fresh("timeout", 1024);
    let start = Instant::now();
    assert_eq!(
        q.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(50),
        "returned after {waited:?}"
    );
    let big = vec![0u8; q.max_message_len() as usize];
    q.send(&big).unwrap();
    let start = Instant::now();
    assert_eq!(
        q.send_timeout(b"x", Duration::from_millis(30)),
        Err(Error::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn a_blocked_consumer_wakes_for_a_message_from_another_process() {
    let (q, c) = fresh("wake", 4096);
    let name = c.0.clone();
    let child = fork(move || {
        let q = Queue::open(&name).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        q.send(b"hello").unwrap();
        0
    });
    let start = Instant::now();
    assert_eq!(q.recv_timeout(Duration::from_secs(10)).unwrap(), b"hello");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(wait_child(child, Duration::from_secs(10)), Exit::Code(0));
    assert!(
        q.stats().unwrap().consumer_waits >= 1,
        "the consumer slept rather than spun"
    );
}

#[test]
fn shutdown_drains_then_refuses_and_wakes_sleepers() {
    let (q, c) = fresh("shutdown", 4096);
    let name = c.0.clone();
    // A consumer asleep in another process wakes with Shutdown.
    let sleeper = fork(move || {
        let q = Queue::open(&name).unwrap();
        match q.recv() {
            Err(Error::Shutdown) => 0,
            other => {
                eprintln!("unexpected {other:?}");
                1
            }
        }
    });
    std::thread::sleep(Duration::from_millis(150));
    q.shutdown().unwrap();
    assert_eq!(wait_child(sleeper, Duration::from_secs(10)), Exit::Code(0));
    assert!(q.is_shutdown());
    assert_eq!(q.try_send(b"late"), Err(Error::Shutdown));

    let (q, _c2) = fresh("shutdown2", 4096);
    q.send(b"a").unwrap();
    q.send(b"b").unwrap();
    q.shutdown().unwrap();
    assert_eq!(q.recv().unwrap(), b"a");
    assert_eq!(q.recv_timeout(Duration::from_secs(1)).unwrap(), b"b");
    assert_eq!(q.recv(), Err(Error::Shutdown));
    assert_eq!(q.try_recv(), Err(Error::Shutdown));
}

#[test]
fn task_done_and_join_across_processes() {
    let (q, c) = fresh("join", 4096);
    for i in 0..5u8 {
        q.send(&[i]).unwrap();
    }
    assert_eq!(q.unfinished_tasks().unwrap(), 5);
    assert_eq!(
        q.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    );
    let name = c.0.clone();
    let worker = fork(move || {
        let q = Queue::open(&name).unwrap();
        for _ in 0..5 {
            q.recv().unwrap();
            std::thread::sleep(Duration::from_millis(10));
            q.task_done().unwrap();
        }
        0
    });
    q.join_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 0);
    assert_eq!(wait_child(worker, Duration::from_secs(10)), Exit::Code(0));
    assert_eq!(
        q.task_done(),
        Err(Error::InvalidArg),
        "more task_done than messages received"
    );
}

#[test]
fn open_validates_and_names_are_checked() {
    assert_eq!(
        Queue::open(unique_name("missing")).unwrap_err(),
        Error::NotFound
    );
    for bad in ["", "a/b", "..", &"x".repeat(64)] {
        assert_eq!(Queue::open(bad).unwrap_err(), Error::InvalidName, "{bad:?}");
        assert_eq!(Queue::create(bad, 1024).unwrap_err(), Error::InvalidName);
    }
    assert_eq!(
        Queue::create(unique_name("zero"), 0).unwrap_err(),
        Error::InvalidArg
    );
    assert_eq!(
        Queue::create(unique_name("huge"), u32::MAX).unwrap_err(),
        Error::InvalidArg
    );
    let (q, c) = fresh("exists", 1024);
    assert_eq!(Queue::create(&c.0, 1024).unwrap_err(), Error::Exists);
    let again = Queue::open_or_create(&c.0, 1 << 20).unwrap();
    assert_eq!(
        again.buffer_size(),
        1024,
        "an existing queue keeps its size"
    );
    q.send(b"shared").unwrap();
    assert_eq!(again.recv().unwrap(), b"shared");
    assert_eq!(
        Queue::create_with(unique_name("mode"), 1024, &Options::default().mode(0o4600))
            .unwrap_err(),
        Error::InvalidArg
    );
}

#[test]
fn objects_are_private_whatever_the_umask() {
    // SAFETY: umask only affects this process's later creations.
    let old = unsafe { libc::umask(0) };
    let name = unique_name("mode");
    let q = Queue::create(&name, 1024);
    let _c = Cleanup(name.clone());
    // SAFETY: restore the previous mask.
    unsafe { libc::umask(old) };
    q.unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/sage_ringbuf_{name}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let name2 = unique_name("mode");
    let _q2 = Queue::create_with(&name2, 1024, &Options::default().mode(0o640)).unwrap();
    let _c2 = Cleanup(name2.clone());
    let meta = std::fs::metadata(format!("/dev/shm/sage_ringbuf_{name2}")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
}

#[test]
fn liveness_decides_removal() {
    let (q, c) = fresh("live", 1024);
    assert_eq!(q.attached_processes().unwrap(), 1);
    assert_eq!(Queue::remove_if_unused(&c.0), Ok(false), "we hold it open");
    let name = c.0.clone();
    let (ready_r, ready_w) = pipe();
    let holder = fork(move || {
        let _q = Queue::open(&name).unwrap();
        write_byte(ready_w);
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    read_byte(ready_r);
    assert_eq!(q.attached_processes().unwrap(), 2);
    drop(q);
    assert_eq!(
        Queue::remove_if_unused(&c.0),
        Ok(false),
        "the child holds it open"
    );
    common::kill9(holder);
    assert_eq!(
        Queue::remove_if_unused(&c.0),
        Ok(true),
        "nobody alive holds it"
    );
    assert_eq!(Queue::remove_if_unused(&c.0), Err(Error::NotFound));
}

#[test]
fn stats_count_messages_and_bytes() {
    let (q, _c) = fresh("stats", 4096);
    q.send(&[1; 10]).unwrap();
    q.send(&[2; 20]).unwrap();
    q.recv().unwrap();
    let s = q.stats().unwrap();
    assert_eq!(
        (s.messages_in, s.messages_out, s.messages_queued),
        (2, 1, 1)
    );
    assert_eq!(s.total_bytes_written, 38);
    assert_eq!(s.total_bytes_read, 14);
    assert_eq!(s.available_read, 24);
    assert_eq!(s.high_water_bytes, 38);
    assert_eq!(s.version, 2);
    assert_eq!(s.attached_processes, 1);
    q.reset_stats();
    let s = q.stats().unwrap();
    assert_eq!(
        (
            s.total_bytes_written,
            s.total_bytes_read,
            s.high_water_bytes
        ),
        (0, 0, 0)
    );
    assert_eq!(
        s.messages_queued, 1,
        "message counts are state, not statistics"
    );
}

pub fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

pub fn write_byte(fd: i32) {
    // SAFETY: one byte from a local.
    assert_eq!(unsafe { libc::write(fd, [1u8].as_ptr() as *const _, 1) }, 1);
}

pub fn read_byte(fd: i32) {
    let mut b = [0u8];
    // SAFETY: one byte into a local.
    assert_eq!(unsafe { libc::read(fd, b.as_mut_ptr() as *mut _, 1) }, 1);
}

#[test]
fn stats_report_a_corrupt_tail_instead_of_clamping_it() {
    use std::os::unix::fs::FileExt;
    let (q, c) = fresh("corrupt_stats", 4096);
    q.send(b"a").unwrap();
    let object = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/sage_ringbuf_{}", c.0))
        .unwrap();
    // The authoritative `tail` of a version-2 object lives on its own line
    // of the extension block (which starts at the first 64-byte boundary
    // after the data area), 384 bytes in; the header's (offset 24) is a
    // mirror.
    let tail_at = ((200 + 4096 + 63) & !63) + 384;
    object
        .write_at(&1_000_000_000u64.to_le_bytes(), tail_at)
        .unwrap();
    assert_eq!(q.stats().unwrap_err(), Error::Corrupt);
    assert_eq!(q.try_recv().unwrap_err(), Error::Corrupt);
    assert_eq!(q.try_send(b"b").unwrap_err(), Error::Corrupt);
}

#[test]
fn an_idle_blocked_consumer_uses_no_cpu() {
    let (q, c) = fresh("idle", 4096);
    let name = c.0.clone();
    let consumer = fork(move || {
        let q = Queue::open(&name).unwrap();
        match q.recv() {
            Ok(m) if m == b"wake up" => 0,
            other => {
                eprintln!("unexpected {other:?}");
                1
            }
        }
    });
    // Let it get past its short spin and fall asleep on the futex.
    std::thread::sleep(Duration::from_millis(200));
    let before = common::cpu_ticks(consumer);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = common::cpu_ticks(consumer) - before;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = used as f64 / ticks_per_second / start.elapsed().as_secs_f64();
    assert!(
        share < 0.01,
        "the blocked consumer used {:.2}% of a CPU",
        share * 100.0
    );
    // And it still wakes for a message.
    q.send(b"wake up").unwrap();
    assert_eq!(wait_child(consumer, Duration::from_secs(10)), Exit::Code(0));
}
