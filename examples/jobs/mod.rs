//! The typed messages the `producer` and `worker` examples exchange, and the
//! helpers both use.

// Each example compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring_buffer::{Error, TypedQueue};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A unit of work: sum `payload`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Job {
    pub id: u64,
    pub payload: Vec<u64>,
    /// When the producer sent it, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// What a worker sends back for one job.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobResult {
    pub job_id: u64,
    pub worker_pid: u32,
    pub sum: u64,
    /// When the worker finished it, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// The job the producer sends as number `id` (the producer checks each
/// result against it).
pub fn job(id: u64) -> Job {
    Job {
        id,
        payload: (1..=1000 + id).collect(),
        timestamp_us: now_us(),
    }
}

pub fn now_us() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_micros() as u64
}

/// The results travel back on a second queue named after the jobs queue.
pub fn results_name(jobs_name: &str) -> String {
    format!("{jobs_name}_res")
}

/// Opens a queue, waiting up to 30 s for somebody to create it.
pub fn open_when_created<T: Serialize + DeserializeOwned>(
    name: &str,
) -> Result<TypedQueue<T>, Error> {
    let start = Instant::now();
    loop {
        match TypedQueue::open(name) {
            Err(Error::NotFound) if start.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
}
