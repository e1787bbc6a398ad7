//! The atomics of the shared-memory protocol: std's, or loom's in a model
//! checking build (`--cfg loom`, `make test-loom`), so that the same code
//! runs in production and under the model checker.
//!
//! The extension block's words ([`crate::layout::Extension`]) and the code
//! that runs the sleep/wake handshake, task accounting and locks on them use
//! these. The legacy header's counters (`head`, `tail`) stay std atomics
//! (they are reached through raw field pointers, which loom cannot model);
//! the models stand in their own loom words for them.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::*;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::*;
