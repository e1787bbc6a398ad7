//! The C API. Every `extern "C"` function of the library lives below this
//! module, as a thin shim over the safe core: it converts pointers through the
//! helpers of `handles`, runs behind the panic boundary of `boundary`, and
//! maps errors to the fixed status codes of [`crate::RbStatus`].
//!
//! Handles are the address of the mapped header (the legacy ABI: callers may
//! read `rb->buffer_size` directly). A process-local registry maps each live
//! handle to its queue, so a NULL, closed, twice-closed or made-up pointer is
//! recognised without ever being dereferenced, and a `ring_buffer_close` in
//! one thread cannot unmap a queue another thread is using.

mod admin;
mod boundary;
mod handles;
mod leases;
mod legacy;
mod messages;
mod readiness;

pub use admin::*;
pub use leases::*;
pub use legacy::*;
pub use messages::*;
pub use readiness::*;

/// `ring_buffer_create_ex` flag: fail with `RB_ERR_EXISTS` if the queue
/// exists (without it, an existing queue is opened, as `ring_buffer_create`
/// does).
pub const RB_CREATE_EXCLUSIVE: u32 = 1;

/// `ring_buffer_create_ex`/`ring_buffer_open_ex` flag: open a queue owned by
/// another user instead of refusing it with `RB_ERR_PERMISSION`.
pub const RB_OPEN_ALLOW_FOREIGN_OWNER: u32 = 2;

/// `ring_buffer_create_ex`/`ring_buffer_open_ex` flag: this handle puts every
/// message longer than the ring into a one-shot side object of its own
/// instead of a slot of the queue's pool (which keeps up to 128 MiB of
/// `/dev/shm` for reuse while the queue exists). It still receives messages
/// that others put into the pool.
pub const RB_OPEN_NO_POOL: u32 = 4;

/// `ring_buffer_create_ex`/`ring_buffer_open_ex` flag: this handle also puts
/// *medium* messages, of `RING_BUFFER_POOLED_FROM` bytes or more that fit in
/// the ring, into a slot of the queue's pool (with every slot busy, after a
/// brief wait for one, through the ring).
/// For consumers that take them with `ring_buffer_get_msg_lease`, which then
/// copies nothing; consumers that copy every message out
/// (`ring_buffer_get_msg`) pay the slot's system calls instead (measured
/// 1 -> 1 process: 0.56-0.71x the messages/s at 64-256 KiB). No effect with
/// `RB_OPEN_NO_POOL`.
pub const RB_OPEN_POOL_MEDIUM: u32 = 8;

/// Timeout value for "wait as long as it takes" (any negative value works).
pub const RB_WAIT_FOREVER: i64 = -1;

/// Timeout value for "try once, never wait".
pub const RB_NO_WAIT: i64 = 0;
