//! A cross-process message queue in POSIX shared memory.
//!
//! Any number of producer and consumer **processes** (and threads) share a
//! queue by name. Every message is delivered exactly once, whole, and in
//! each producer's order; waiting senders and receivers sleep on shared
//! futexes instead of polling (after a short spin; longer, up to 250 us of
//! yielding, for a receiver of messages larger than the ring or of 16 KiB
//! or more); a process
//! killed at any instant, holding any
//! lock, costs at most its own in-flight message. Queues live in `/dev/shm`
//! as `sage_ringbuf_<name>` until removed.
//!
//! * [`Queue`] sends and receives byte strings.
//! * [`TypedQueue<T>`](TypedQueue) (feature `serde`) sends and receives any
//!   `T: Serialize + DeserializeOwned`, encoded with bincode.
//! * [`Error`] says what failed; each variant has a fixed C status code
//!   ([`RbStatus`]).
//!
//! The same crate builds `libring_buffer.so`, a C library that is a drop-in
//! for SAGE's legacy `ring_buffer.so` (its build, `make` in the repository,
//! turns on the `capi` feature); Rust users need none of it.
//!
//! # Create, open, send, receive
//!
//! One process creates a queue (its data area is rounded up to a power of
//! two, at least 1024 bytes); others open it by name. Messages are byte
//! strings of any length up to [`Queue::max_message_len`].
//!
//! ```
//! use ring_buffer::{Error, Queue};
//!
//! # struct Rm(String);
//! # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
//! let name = format!("doc_hello_{}", std::process::id());
//! # let _rm = Rm(name.clone());
//! let producer = Queue::create(&name, 64 * 1024)?;
//! let consumer = Queue::open(&name)?; // in another process, usually
//!
//! producer.send(b"hello")?;
//! assert_eq!(consumer.recv()?, b"hello");
//! assert_eq!(consumer.try_recv(), Err(Error::Empty)); // try_: never waits
//!
//! drop((producer, consumer));
//! Queue::remove(&name)?; // the name goes; open handles would keep working
//! # Ok::<(), Error>(())
//! ```
//!
//! Every blocking call has a `try_` variant (never waits: [`Error::Full`] or
//! [`Error::Empty`]) and a `_timeout` variant ([`Error::Timeout`]).
//!
//! # Across processes
//!
//! A forked child (any process that knows the name) opens the queue and
//! sends; the parent receives. The child is a real process: the queue is the
//! only thing the two share.
//!
//! ```
//! use std::time::Duration;
//! use ring_buffer::Queue;
//!
//! # struct Rm(String);
//! # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
//! let name = format!("doc_fork_{}", std::process::id());
//! # let _rm = Rm(name.clone());
//! let queue = Queue::create(&name, 64 * 1024)?;
//!
//! // SAFETY: the doc test is single-threaded when it forks.
//! let child = unsafe { libc::fork() };
//! if child == 0 {
//!     let ok = Queue::open(&name).and_then(|q| {
//!         for i in 0..100u32 {
//!             q.send(&i.to_le_bytes())?;
//!         }
//!         Ok(())
//!     });
//!     // SAFETY: leave the child without running the parent's exit handlers.
//!     unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
//! }
//!
//! for i in 0..100u32 {
//!     // In the child's order; a timeout instead of a hang if the child died.
//!     assert_eq!(queue.recv_timeout(Duration::from_secs(60))?, i.to_le_bytes());
//! }
//! let mut status = 0;
//! // SAFETY: waiting for our own child.
//! unsafe { libc::waitpid(child, &mut status, 0) };
//! assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
//! # Ok::<(), ring_buffer::Error>(())
//! ```
//!
//! # Batches
//!
//! [`Queue::send_batch`] puts several messages under one lock and one
//! wake-up (as many as fit; it returns how many), and
//! [`Queue::recv_batch`] takes up to `max` at once: far fewer lock round
//! trips for small messages.
//!
//! ```
//! # use ring_buffer::Queue;
//! # struct Rm(String);
//! # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
//! # let name = format!("doc_batch_{}", std::process::id());
//! # let _rm = Rm(name.clone());
//! let queue = Queue::create(&name, 64 * 1024)?;
//! let sent = queue.send_batch(&[b"a".as_slice(), b"bb", b"ccc"])?;
//! assert_eq!(sent, 3);
//! assert_eq!(queue.recv_batch(2)?, [b"a".to_vec(), b"bb".to_vec()]);
//! assert_eq!(queue.recv_batch(10)?, [b"ccc".to_vec()]);
//! # Ok::<(), ring_buffer::Error>(())
//! ```
//!
//! # Shutdown
//!
//! [`Queue::shutdown`] ends a queue for every process: sends fail with
//! [`Error::Shutdown`] at once; receives drain what is queued and then fail
//! the same way; every sleeper wakes. That is how consumers learn there is
//! no more work.
//!
//! ```
//! # use ring_buffer::{Error, Queue};
//! # struct Rm(String);
//! # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
//! # let name = format!("doc_shutdown_{}", std::process::id());
//! # let _rm = Rm(name.clone());
//! let queue = Queue::create(&name, 64 * 1024)?;
//! queue.send(b"last job")?;
//! queue.shutdown()?;
//! assert_eq!(queue.send(b"too late"), Err(Error::Shutdown));
//! assert_eq!(queue.recv()?, b"last job"); // queued messages still come out
//! assert_eq!(queue.recv(), Err(Error::Shutdown)); // then nothing blocks
//! # Ok::<(), Error>(())
//! ```
//!
//! # Tasks: `task_done` and `join`
//!
//! As in Python's `queue.Queue`: a consumer calls [`Queue::task_done`] when
//! it has finished with a message, and [`Queue::join`] waits until every
//! message sent so far is done, in whichever process it was handled.
//!
//! ```
//! use std::time::Duration;
//! use ring_buffer::Queue;
//!
//! # struct Rm(String);
//! # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
//! let name = format!("doc_join_{}", std::process::id());
//! # let _rm = Rm(name.clone());
//! let queue = Queue::create(&name, 64 * 1024)?;
//! for job in 0..10u8 {
//!     queue.send(&[job])?;
//! }
//!
//! // SAFETY: the doc test is single-threaded when it forks.
//! let worker = unsafe { libc::fork() };
//! if worker == 0 {
//!     let ok = Queue::open(&name).and_then(|q| {
//!         for _ in 0..10 {
//!             let _job = q.recv()?; // ... handle it ...
//!             q.task_done()?;
//!         }
//!         Ok(())
//!     });
//!     // SAFETY: leave the child without running the parent's exit handlers.
//!     unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
//! }
//!
//! // Returns once the worker marked all ten done (Timeout if it died).
//! queue.join_timeout(Duration::from_secs(60))?;
//! assert_eq!(queue.unfinished_tasks()?, 0);
//! # let mut status = 0;
//! # unsafe { libc::waitpid(worker, &mut status, 0) };
//! # assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
//! # Ok::<(), ring_buffer::Error>(())
//! ```
//!
//! # Typed messages (feature `serde`)
//!
//! With `features = ["serde"]`, [`TypedQueue<T>`](TypedQueue) has the same
//! constructors and calls as [`Queue`], for values of a type `T` that
//! implements serde's `Serialize` and `Deserialize`; each value is one
//! message, encoded with bincode (pinned: every process must agree on it). A
//! message that is not a `T` fails with [`Error::Decode`], which names the
//! type and what was wrong. Its documentation has an example with a worker
//! process; the `producer` and `worker` examples of the repository are a
//! complete program (`cargo run --features serde --example producer`).
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use ring_buffer::TypedQueue;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Job {
//!     id: u64,
//!     payload: String,
//! }
//!
//! # struct Rm(String);
//! # impl Drop for Rm { fn drop(&mut self) { let _ = ring_buffer::Queue::remove(&self.0); } }
//! let name = format!("doc_typed_{}", std::process::id());
//! # let _rm = Rm(name.clone());
//! let jobs = TypedQueue::<Job>::create(&name, 64 * 1024)?;
//! jobs.send(&Job { id: 1, payload: "resize photo.jpg".into() })?;
//! let job = TypedQueue::<Job>::open(&name)?.recv()?;
//! assert_eq!(job, Job { id: 1, payload: "resize photo.jpg".into() });
//! # }
//! # Ok::<(), ring_buffer::Error>(())
//! ```
//!
//! # Features
//!
//! * `serde`: [`TypedQueue`] (adds serde and bincode).
//! * `capi`: the C library's build: generates `ring_buffer.h` with cbindgen
//!   and checks its layout with the C compiler. Off by default, so a crate
//!   that depends on this one needs no C compiler and no cbindgen.
//! * `failpoints`: test hooks of this crate's own crash tests; never enable
//!   it in a program.
//!
//! Linux only (futexes, `/dev/shm`, `/proc`, a robust process-shared mutex
//! for the legacy reference count).

#![warn(missing_docs)]
#![warn(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Inside, bottom up: `layout` (the shared bytes), `ring` and `frame` (pure
// byte-stream logic), `sync` (futex locks, the robust ref mutex, futexes,
// deadlines), `segment`
// (typed view of one object's bytes), `object` (the POSIX object: create,
// validate, map, remove, liveness), `ops` (the queue operations), `queue`
// (the safe API), `typed` (typed messages), `ffi` (the C API).
//
// `ffi`, `layout` and `failpoint` stay `pub` but hidden from the docs: the
// cdylib exports the `#[no_mangle]` functions of `ffi`, and this crate's own
// integration tests call the legacy functions and arm failpoints. They are
// not part of the Rust API and may change in any release.

mod error;
#[doc(hidden)]
pub mod failpoint;
#[doc(hidden)]
pub mod ffi;
mod frame;
#[cfg(test)]
mod fuzz_tests;
mod inspect;
#[doc(hidden)]
pub mod layout;
mod name;
mod object;
mod ops;
mod pool;
mod queue;
mod ring;
mod segment;
mod side;
mod sync;
#[cfg(feature = "serde")]
mod typed;

pub use error::{CodecFailure, Error, RbStatus, Result};
pub use layout::{RingBufferStatsEx as Stats, RING_BUFFER_MAGIC, RING_BUFFER_VERSION};
pub use name::{QueueName, OBJECT_PREFIX, SHM_DIR};
pub use queue::{Options, Queue};
#[cfg(feature = "serde")]
pub use typed::TypedQueue;

/// The crate's README (`README-crate.md`, shown on crates.io): its examples
/// run as doc tests too.
#[cfg(all(doctest, feature = "serde"))]
#[doc = include_str!("../README-crate.md")]
pub struct ReadmeDoctests;
