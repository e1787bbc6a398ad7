//! The `producer` and `worker` examples (typed messages: feature `serde`),
//! run as real processes: one producer and three workers, every job handled
//! exactly once with the right result, nothing left behind.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{unique_name, Cleanup};
use ring_buffer::Queue;

/// Examples are built next to the test binaries: target/<profile>/examples.
/// They are (re)built with the same cargo and profile on every use (a no-op
/// when up to date): a binary left there by an earlier build of other
/// sources or features would otherwise be run against this library.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let profile = if profile == "debug" { "dev" } else { profile };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--examples", "--features", "serde"])
        .args(["--profile", profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building the examples failed");
    profile_dir.join("examples").join(name)
}

#[test]
fn one_producer_three_workers_handle_every_job_once() {
    let name = unique_name("example");
    let _cleanup = (Cleanup(name.clone()), Cleanup(format!("{name}_res")));
    // Workers must be attached before the producer starts, or a slow one
    // could arrive after the producer finished and removed the queue.
    let queue = Queue::create(&name, 64 * 1024).unwrap();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            Command::new(example("worker"))
                .arg(&name)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    while queue.attached_processes().unwrap() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "workers did not attach"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(queue);
    let producer = Command::new(example("producer"))
        .args([&name, "40"])
        .output()
        .unwrap();
    assert!(
        producer.status.success(),
        "{}",
        String::from_utf8_lossy(&producer.stderr)
    );
    // The producer checked each result's sum; here: one result per job.
    let stdout = String::from_utf8_lossy(&producer.stdout);
    let mut results = BTreeMap::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("producer: result job ") {
            let mut words = rest.split(' ');
            let job: u64 = words.next().unwrap().parse().unwrap();
            let worker: u32 = words.nth(2).unwrap().trim_end_matches(':').parse().unwrap();
            assert!(
                results.insert(job, worker).is_none(),
                "result twice: {line}"
            );
        }
    }
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    let mut handled = HashSet::new();
    let mut pids = HashSet::new();
    for worker in workers {
        let pid = worker.id();
        let out = worker.wait_with_output().unwrap();
        assert!(out.status.success());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix(&format!("worker {pid}: handled job ")) {
                let job: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                assert!(handled.insert(job), "job handled twice: {job}");
                assert_eq!(results[&job], pid, "job {job}: result names another worker");
            }
        }
        pids.insert(pid);
    }
    assert_eq!(handled.len(), 40);
    assert!(results.values().all(|w| pids.contains(w)));
    for queue in [name.clone(), format!("{name}_res")] {
        assert!(!std::path::Path::new(&format!("/dev/shm/sage_ringbuf_{queue}")).exists());
    }
}
