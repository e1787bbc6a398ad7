//! One producer for any number of workers:
//!
//! ```sh
//! cargo run --example producer            # prints the queue name, then waits
//! cargo run --example worker <NAME>       # in as many other terminals as you like
//! ```
//!
//! The producer puts `COUNT` jobs (default 20) on the queue, waits until
//! workers have marked every one done (`join`), then shuts the queue down so
//! that every worker finishes, and removes it.
//!
//! Usage: `producer [NAME] [COUNT]`

use std::time::Duration;

use ring_buffer::{Error, Queue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args
        .next()
        .unwrap_or_else(|| format!("jobs_{}", std::process::id()));
    let count: u32 = args.next().map_or(Ok(20), |c| c.parse())?;
    let queue = Queue::open_or_create(&name, 64 * 1024)?;
    println!("producer: queue {name:?}; start workers with: cargo run --example worker {name}");
    for job in 0..count {
        let payload = format!("job {job}: compute the sum of 1..={}", 1000 + job);
        queue.send(payload.as_bytes())?;
        println!("producer: put job {job}");
    }
    println!("producer: waiting for workers to finish {count} jobs");
    loop {
        match queue.join_timeout(Duration::from_secs(5)) {
            Ok(()) => break,
            Err(Error::Timeout) => println!(
                "producer: {} jobs still open (attached processes: {})",
                queue.unfinished_tasks()?,
                queue.attached_processes()?
            ),
            Err(e) => return Err(e.into()),
        }
    }
    // Every worker blocked in recv wakes with Shutdown and exits.
    queue.shutdown()?;
    println!("producer: all {count} jobs done; queue shut down");
    drop(queue);
    // The last process out removes the queue; workers may still be closing.
    for _ in 0..50 {
        match Queue::remove_if_unused(&name) {
            Ok(true) | Err(Error::NotFound) => return Ok(()),
            Ok(false) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e.into()),
        }
    }
    Queue::remove(&name)?;
    Ok(())
}
