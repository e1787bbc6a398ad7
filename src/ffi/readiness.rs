//! Waiting without consuming or reserving: the building block of event-loop
//! integrations (a waiter thread blocks here, the loop then takes the
//! message with a try-once call, so a cancelled wait has taken nothing).
//! Same futexes and sleeper protocol as the blocking calls; the answer is a
//! snapshot, another process may act first, so callers retry.

use std::os::raw::c_int;

use super::boundary::status;
use super::handles;
use crate::layout::RingBuffer;
use crate::sync::deadline::Wait;

/// Waits until at least one whole message is queued, consuming nothing.
/// `timeout_ns`: 0 checks once, negative waits for ever, positive waits that
/// many nanoseconds at most. Returns `RB_OK` (readable), `RB_ERR_TIMEOUT`
/// (nothing came in time; also for timeout 0 on an empty queue),
/// `RB_ERR_SHUTDOWN` (shut down and drained: a get would fail the same
/// way), `RB_ERR_INVALID_ARG` (bad handle), or another code.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_wait_readable(rb: *mut RingBuffer, timeout_ns: i64) -> c_int {
    status(|| {
        handles::queue(rb)?
            .view()
            .wait_readable(Wait::from_timeout_ns(timeout_ns))?;
        Ok(0)
    })
}

/// Waits until a message of `len` bytes fits now, reserving nothing.
/// `timeout_ns` as for `ring_buffer_wait_readable`. Returns `RB_OK`
/// (writable), `RB_ERR_TIMEOUT` (no room in time; also for timeout 0 on a
/// full queue), `RB_ERR_TOO_LARGE` (at once: `len` is longer than the ring
/// and the queue cannot carry it out of line: a legacy object or raw byte
/// stream; otherwise a longer message waits for room for its descriptor),
/// `RB_ERR_SHUTDOWN` (a put would fail), `RB_ERR_INVALID_ARG` (bad handle),
/// or another code.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_wait_writable(
    rb: *mut RingBuffer,
    len: u32,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        handles::queue(rb)?
            .view()
            .wait_writable(len, Wait::from_timeout_ns(timeout_ns))?;
        Ok(0)
    })
}
