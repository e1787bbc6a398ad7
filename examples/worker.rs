//! A worker for the `producer` example: takes typed jobs until the queue is
//! shut down, sends a result for each, and marks it done.
//!
//! Usage: `worker NAME` (the name the producer printed). Waits for the queues
//! to appear if the producer has not created them yet.

mod jobs;

use jobs::{now_us, open_when_created, results_name, Job, JobResult};
use ring_buffer::{Error, TypedQueue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).ok_or("usage: worker NAME")?;
    let me = std::process::id();
    let jobs: TypedQueue<Job> = open_when_created(&name)?;
    let results: TypedQueue<JobResult> = open_when_created(&results_name(&name))?;
    let mut handled = 0;
    loop {
        let job = match jobs.recv() {
            Ok(job) => job,
            Err(Error::Shutdown) => break,
            Err(e) => return Err(e.into()),
        };
        let sum = job.payload.iter().sum();
        results.send(&JobResult {
            job_id: job.id,
            worker_pid: me,
            sum,
            timestamp_us: now_us(),
        })?;
        println!("worker {me}: handled job {} -> {sum}", job.id);
        handled += 1;
        jobs.task_done()?;
    }
    println!("worker {me}: queue shut down; handled {handled} jobs");
    Ok(())
}
