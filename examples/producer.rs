//! One producer for any number of workers, with typed messages:
//!
//! ```sh
//! cargo run --features serde --example producer            # prints the queue name, then waits
//! cargo run --features serde --example worker <NAME>       # in as many other terminals as you like
//! ```
//!
//! The producer sends `COUNT` jobs (default 20; a [`jobs::Job`] has an id, a
//! payload and a timestamp) on queue `NAME`, and collects one
//! [`jobs::JobResult`] per job from queue `NAME_res`, checking each. Then it
//! waits until workers have marked every job done (`join`), shuts the jobs
//! queue down so that every worker finishes, and removes both queues.
//!
//! Usage: `producer [NAME] [COUNT]`

mod jobs;

use std::collections::BTreeMap;
use std::time::Duration;

use jobs::{job, results_name, Job, JobResult};
use ring_buffer::{Error, Queue, TypedQueue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args
        .next()
        .unwrap_or_else(|| format!("jobs_{}", std::process::id()));
    let count: u64 = args.next().map_or(Ok(20), |c| c.parse())?;
    let jobs = TypedQueue::<Job>::open_or_create(&name, 256 * 1024)?;
    let results = TypedQueue::<JobResult>::open_or_create(results_name(&name), 64 * 1024)?;
    println!("producer: queue {name:?}; start workers with: cargo run --features serde --example worker {name}");

    let sent: Vec<Job> = (0..count).map(job).collect();
    for chunk in sent.chunks(8) {
        // A batch puts as many as fit; send the rest after.
        let mut rest = chunk;
        while !rest.is_empty() {
            rest = &rest[jobs.send_batch(rest)?..];
        }
    }
    println!("producer: sent {count} jobs");

    let mut done = BTreeMap::new();
    while (done.len() as u64) < count {
        let result = match results.recv_timeout(Duration::from_secs(5)) {
            Ok(result) => result,
            Err(Error::Timeout) => {
                println!(
                    "producer: {} jobs still open (attached processes: {})",
                    jobs.unfinished_tasks()?,
                    jobs.attached_processes()?
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let job = sent
            .get(result.job_id as usize)
            .ok_or_else(|| format!("result for unknown job {}", result.job_id))?;
        let expected: u64 = job.payload.iter().sum();
        if result.sum != expected {
            return Err(format!("job {}: sum {} != {expected}", job.id, result.sum).into());
        }
        if done.insert(result.job_id, result.worker_pid).is_some() {
            return Err(format!("job {} came back twice", result.job_id).into());
        }
        println!(
            "producer: result job {} from worker {}: sum {} after {} us",
            result.job_id,
            result.worker_pid,
            result.sum,
            result.timestamp_us.saturating_sub(job.timestamp_us)
        );
    }

    // Workers mark a job done after sending its result.
    jobs.join_timeout(Duration::from_secs(60))?;
    // Every worker blocked in recv wakes with Shutdown and exits.
    jobs.shutdown()?;
    println!("producer: all {count} jobs done; queue shut down");
    let names = [name.clone(), results_name(&name)];
    drop((jobs, results));
    // The last process out removes the queues; workers may still be closing.
    for name in &names {
        remove_when_unused(name)?;
    }
    Ok(())
}

fn remove_when_unused(name: &str) -> Result<(), Error> {
    for _ in 0..50 {
        match Queue::remove_if_unused(name) {
            Ok(true) | Err(Error::NotFound) => return Ok(()),
            Ok(false) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e),
        }
    }
    Queue::remove(name)
}
