//! A worker for the `producer` example: takes jobs until the queue is shut
//! down, printing each one it handles.
//!
//! Usage: `worker NAME` (the name the producer printed). Waits for the queue
//! to appear if the producer has not created it yet.

use std::time::{Duration, Instant};

use ring_buffer::{Error, Queue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).ok_or("usage: worker NAME")?;
    let me = std::process::id();
    let queue = open_when_created(&name)?;
    let mut handled = 0;
    loop {
        let job = match queue.recv() {
            Ok(job) => job,
            Err(Error::Shutdown) => break,
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8_lossy(&job);
        let upto: u64 = text
            .rsplit("..=")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let sum: u64 = (1..=upto).sum();
        println!("worker {me}: handled \"{text}\" -> {sum}");
        handled += 1;
        queue.task_done()?;
    }
    println!("worker {me}: queue shut down; handled {handled} jobs");
    Ok(())
}

fn open_when_created(name: &str) -> Result<Queue, Error> {
    let start = Instant::now();
    loop {
        match Queue::open(name) {
            Err(Error::NotFound) if start.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
}
