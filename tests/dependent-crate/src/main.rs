//! Typed values between two processes through `ring_buffer`, used the way a
//! dependent crate uses it. Run without arguments: the parent spawns this
//! same program as its child, sends it typed readings, and checks the typed
//! summary the child sends back. Exits non-zero on any mismatch.

use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use ring_buffer::{Error, Queue, TypedQueue};
use serde::{Deserialize, Serialize};

const READINGS: u32 = 500;
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Unit {
    Celsius,
    Pascal,
    Other(String),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Reading {
    sensor: String,
    seq: u32,
    values: Vec<f64>,
    unit: Unit,
    note: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Summary {
    child_pid: u32,
    count: u32,
    value_sum: f64,
}

/// Reading number `seq`: both processes compute it, so the child can check
/// every field of every value it receives.
fn reading(seq: u32) -> Reading {
    Reading {
        sensor: format!("sensor-{}", seq % 7),
        seq,
        values: (0..seq % 5)
            .map(|i| f64::from(seq) * 0.5 - f64::from(i))
            .collect(),
        unit: match seq % 3 {
            0 => Unit::Celsius,
            1 => Unit::Pascal,
            _ => Unit::Other(format!("unit{seq}")),
        },
        note: (seq % 4 == 0).then(|| "ünïcödé ✓".to_owned()),
    }
}

/// The child's sum, added up in the child's order.
fn expected_sum() -> f64 {
    (0..READINGS).fold(0.0, |acc, s| acc + reading(s).values.iter().sum::<f64>())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        None => parent(),
        Some("child") if args.len() == 4 => child(&args[2], &args[3]),
        Some(_) => Err("usage: ring_buffer_dependent [child READINGS SUMMARY]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring_buffer_dependent: {e}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<(), Box<dyn std::error::Error>>;

/// Removes the parent's queues and stops the child, also on failure.
struct Cleanup {
    names: [String; 2],
    child: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for name in &self.names {
            let _ = Queue::remove(name);
        }
    }
}

fn parent() -> Outcome {
    let pid = std::process::id();
    let names = [format!("dep_readings_{pid}"), format!("dep_summary_{pid}")];
    let mut cleanup = Cleanup {
        names: names.clone(),
        child: None,
    };
    let readings = TypedQueue::<Reading>::create(&names[0], 64 * 1024)?;
    let summary = TypedQueue::<Summary>::create(&names[1], 4096)?;
    let child = Command::new(std::env::current_exe()?)
        .args(["child", &names[0], &names[1]])
        .spawn()?;
    let child_pid = child.id();
    cleanup.child = Some(child);

    let all: Vec<Reading> = (0..READINGS).map(reading).collect();
    let mut rest = &all[..];
    while !rest.is_empty() {
        if rest.len() % 3 == 0 {
            rest = &rest[readings.send_batch_timeout(&rest[..3], LIMIT)?..];
        } else {
            readings.send_timeout(&rest[0], LIMIT)?;
            rest = &rest[1..];
        }
    }
    readings.join_timeout(LIMIT)?; // the child marked every reading done
    readings.shutdown()?; // its recv now fails with Shutdown: it replies

    let got = summary.recv_timeout(LIMIT)?;
    let want = Summary {
        child_pid,
        count: READINGS,
        value_sum: expected_sum(),
    };
    if got != want {
        return Err(format!("summary {got:?}, expected {want:?}").into());
    }
    let status = cleanup.child.as_mut().expect("spawned").wait()?;
    if !status.success() {
        return Err(format!("child {child_pid} failed: {status}").into());
    }
    println!(
        "ring_buffer_dependent: {READINGS} typed readings reached process {child_pid} intact and in order; its typed summary came back"
    );
    Ok(())
}

fn child(readings_name: &str, summary_name: &str) -> Outcome {
    let readings = TypedQueue::<Reading>::open(readings_name)?;
    let summary = TypedQueue::<Summary>::open(summary_name)?;
    let (mut count, mut value_sum) = (0u32, 0.0);
    loop {
        let got = match readings.recv_timeout(LIMIT) {
            Ok(r) => r,
            Err(Error::Shutdown) => break,
            Err(e) => return Err(e.into()),
        };
        let want = reading(count);
        if got != want {
            return Err(format!("reading {count}: got {got:?}, expected {want:?}").into());
        }
        value_sum += got.values.iter().sum::<f64>();
        count += 1;
        readings.task_done()?;
    }
    summary.send(&Summary {
        child_pid: std::process::id(),
        count,
        value_sum,
    })?;
    Ok(())
}
