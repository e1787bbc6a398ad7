//! libring_buffer: a cross-process message queue in POSIX shared memory.
//!
//! A byte-for-byte drop-in for SAGE's legacy C `ring_buffer.so` (same
//! symbols, struct layouts, object names and framing) that is safe with many
//! producer and consumer processes, blocks without polling, and survives
//! processes killed at any instant.
//!
//! * [`Queue`] is the safe Rust API.
//! * [`ffi`] holds every `extern "C"` function; `include/ring_buffer.h` is
//!   generated from it by cbindgen.
//!
//! Layers, bottom up: [`layout`] (the shared bytes), `ring` and `frame`
//! (pure byte-stream logic), `sync` (robust mutexes, futexes, deadlines),
//! `segment` (typed view of one object's bytes), `object` (the POSIX object:
//! create, validate, map, remove, liveness), `ops` (the queue operations),
//! `queue` (the safe API), `ffi` (the C API).

#![warn(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod error;
pub mod failpoint;
pub mod ffi;
mod frame;
#[cfg(test)]
mod fuzz_tests;
pub mod inspect;
pub mod layout;
mod name;
mod object;
mod ops;
mod queue;
mod ring;
mod segment;
mod sync;

pub use error::{Error, RbStatus, Result};
pub use layout::{RingBufferStatsEx as Stats, RING_BUFFER_MAGIC, RING_BUFFER_VERSION};
pub use name::{QueueName, OBJECT_PREFIX, SHM_DIR};
pub use queue::{Options, Queue};
