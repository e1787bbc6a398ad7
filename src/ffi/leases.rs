//! Received messages lent out instead of copied: `ring_buffer_get_msg_lease`
//! and `ring_buffer_lease_release`.
//!
//! A message longer than the ring arrives in a slot of the queue's pool or in
//! a one-shot side object (see `crate::pool`, `crate::side`); so may a
//! medium one (in a slot, see `RB_OPEN_POOL_MEDIUM`). Copying it out
//! costs as much as sending it; a lease hands the caller its bytes where they
//! are, for as long as the caller needs them (Python builds numpy arrays on
//! them), and frees the slot when given back.

use std::fs::File;
use std::os::raw::{c_int, c_void};

use memmap2::{MmapMut, MmapOptions};

use super::boundary::status;
use super::handles::{self, register_lease, unregister_lease};
use super::messages::{recv_one, Packed};
use crate::error::Result;
use crate::layout::RingBuffer;
use crate::ops::{Incoming, Taken};
use crate::pool::Lease;

/// A received message's memory, lent to the caller until
/// `ring_buffer_lease_release` (opaque).
pub struct RingBufferLease {
    _opaque: [u8; 0],
}

/// What a lease holds.
pub(super) enum Leased {
    /// A message in a slot of the queue's pool (shared memory that is the
    /// lease's alone until released, when the slot is freed).
    Slot(Lease),
    /// A one-shot side object's bytes, mapped privately (copy on write: the
    /// caller may change them; its name is already removed).
    Private(MmapMut),
}

impl Leased {
    /// The first byte and the length.
    fn bytes(&mut self) -> (*mut u8, usize) {
        match self {
            Leased::Slot(lease) => (lease.as_ptr(), lease.len() as usize),
            Leased::Private(map) => (map.as_mut_ptr(), map.len()),
        }
    }
}

/// One message into the caller's buffer, or lent when it went out of line.
struct WithLease<'a> {
    packed: Packed<'a>,
    leased: Option<Leased>,
}

// SAFETY: `slot` is `Packed`'s, with its guarantees.
unsafe impl Incoming for WithLease<'_> {
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8> {
        self.packed.slot(index, len)
    }
    fn max_count(&self) -> usize {
        self.packed.max_count()
    }
    fn adopt(&mut self, index: usize, _len: u32, taken: Taken) -> Option<Taken> {
        if index != 0 {
            return Some(taken);
        }
        self.leased = Some(match taken {
            Taken::Slot(lease) => Leased::Slot(lease),
            Taken::File(file) => match map_private(&file) {
                Ok(map) => Leased::Private(map),
                // Mapping failed (out of address space): copy it instead.
                Err(_) => return Some(Taken::File(file)),
            },
        });
        None
    }
}

/// `file` mapped privately and writable (changes stay in this process).
fn map_private(file: &File) -> Result<MmapMut> {
    // SAFETY: a side object is never truncated while named or taken (its
    // producer wrote it whole before publishing it), and the mapping is
    // private: nobody else's writes reach it.
    Ok(unsafe { MmapOptions::new().map_copy(file)? })
}

/// Takes one whole message as `ring_buffer_get_msg` does, except that a
/// message that went out of line (longer than the ring, or medium: see
/// `RB_OPEN_POOL_MEDIUM`) is not copied: its bytes are lent. `*out_data` = their address (page-aligned; writable,
/// and the writes stay with this lease),
/// `*out_len` = their length, `*out_lease` = the lease, which the caller
/// gives back with `ring_buffer_lease_release` once done with the bytes. The
/// bytes stay valid until then, whatever happens to the queue (closed,
/// removed); a held lease keeps its slot of the queue's pool busy, so give
/// leases back promptly. A message in the ring is copied into `buf` with
/// `*out_data` = `buf` and `*out_lease` = NULL, or, if `cap` is too small,
/// `RB_ERR_BUFFER_TOO_SMALL` with `*out_len` = the length needed and
/// nothing consumed. Other codes as `ring_buffer_get_msg`. Output
/// parameters are written only on `RB_OK` (`*out_len` also on
/// `RB_ERR_BUFFER_TOO_SMALL`).
///
/// # Safety
/// `buf` must be writable for `cap` bytes (it may be NULL if `cap` is 0);
/// `out_len`, `out_data` and `out_lease` must be writable.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_msg_lease(
    rb: *mut RingBuffer,
    buf: *mut c_void,
    cap: u32,
    out_len: *mut u32,
    out_data: *mut *mut c_void,
    out_lease: *mut *mut RingBufferLease,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        let queue = handles::queue(rb)?;
        // SAFETY: forwarded contract.
        let out_len = unsafe { handles::out(out_len)? };
        // SAFETY: forwarded contract.
        let out_data = unsafe { handles::out(out_data)? };
        // SAFETY: forwarded contract.
        let out_lease = unsafe { handles::out(out_lease)? };
        let mut sink = WithLease {
            packed: Packed::single(buf, cap)?,
            leased: None,
        };
        let out_len = recv_one(&queue, &mut sink, out_len, timeout_ns)?;
        match sink.leased.take() {
            Some(mut leased) => {
                let (data, len) = leased.bytes();
                out_len.set(len as u32);
                out_data.set(data as *mut c_void);
                out_lease.set(register_lease(leased));
            }
            None => {
                out_len.set(sink.packed.used as u32);
                out_data.set(buf);
                out_lease.set(std::ptr::null_mut());
            }
        }
        Ok(0)
    })
}

/// Gives back a lease from `ring_buffer_get_msg_lease`: its bytes are no
/// longer valid, and its slot of the queue's pool is free again. NULL is
/// accepted (nothing to give back: `RB_OK`); a lease given back twice, or
/// anything else, is `RB_ERR_INVALID_ARG`. In a child forked while the
/// parent held the lease, giving it back only unmaps the child's copy.
///
/// # Safety
/// None beyond passing a value from `ring_buffer_get_msg_lease` (any other
/// pointer is refused without being read).
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_lease_release(lease: *mut RingBufferLease) -> c_int {
    status(|| {
        if lease.is_null() {
            return Ok(0);
        }
        drop(unregister_lease(lease)?);
        Ok(0)
    })
}
