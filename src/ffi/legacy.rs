//! The legacy C API of `ring_buffer.so`: same names, signatures, return
//! conventions (-1 / NULL / 0) and behaviour, with the legacy defects fixed.
//! A failing call also sets the thread's `ring_buffer_last_error()`.

use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering::Relaxed;

use super::boundary::call;
use super::handles::{self, array_mut, bytes, bytes_mut};
use crate::error::Error;
use crate::layout::{RingBuffer, RingBufferRef, RingBufferStats};
use crate::object::{self, buffer_size_for};
use crate::queue::{Options, Queue};

/// Creates the queue `name` with a data area of `size` bytes rounded up to a
/// power of two (at least 1024; 0 means 1024), or opens it if it exists (the
/// size is then ignored). New objects get mode 0600 whatever the umask.
/// Returns NULL on failure (see `ring_buffer_last_error()`).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_create(name: *const c_char, size: u32) -> *mut RingBuffer {
    call(ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        let size = buffer_size_for(size).ok_or(Error::InvalidArg)?;
        Queue::open_or_create_named(&name, size, &Options::default()).map(handles::register)
    })
}

/// Opens the existing queue `name`. NULL if it is missing, belongs to another
/// user, or is not a well-formed queue (magic, version, size checked against
/// the object's real size).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_open(name: *const c_char) -> *mut RingBuffer {
    call(ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        Queue::open_named(&name, &Options::default()).map(handles::register)
    })
}

/// Closes a handle: unmaps the queue (once no other thread is inside a call
/// on it). The queue itself stays. NULL and unknown handles are ignored
/// (last error `RB_ERR_INVALID_ARG`).
///
/// # Safety
/// None beyond passing what `ring_buffer_create`/`open` returned; any value
/// is checked against the handles this process holds.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_close(rb: *mut RingBuffer) {
    call((), || handles::unregister(rb).map(drop))
}

/// Removes the queue's name. Open handles keep working until closed.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_destroy(name: *const c_char) {
    call((), || {
        // SAFETY: forwarded contract.
        object::unlink(&unsafe { handles::name(name)? })
    })
}

/// Writes `len` raw bytes, all or nothing, without waiting: returns `len`, or
/// -1 if an argument is NULL/0 or fewer than `len` bytes are free. Atomic
/// with respect to every other producer.
///
/// # Safety
/// `data` must be readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_write(
    rb: *mut RingBuffer,
    data: *const c_void,
    len: u32,
) -> c_int {
    call(-1, || {
        let queue = handles::queue(rb)?;
        // SAFETY: forwarded contract.
        let data = unsafe { bytes(data, len)? };
        queue.view().write_bytes(&[data])?;
        Ok(len as c_int)
    })
}

/// Reads and consumes exactly `len` raw bytes, all or nothing, without
/// waiting: returns `len`, or -1 if fewer are queued. Atomic with respect to
/// every other consumer.
///
/// # Safety
/// `data` must be writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_read(
    rb: *mut RingBuffer,
    data: *mut c_void,
    len: u32,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { read_bytes(rb, data, len, true) }
}

/// Like `ring_buffer_read`, without consuming.
///
/// # Safety
/// `data` must be writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_peek(
    rb: *mut RingBuffer,
    data: *mut c_void,
    len: u32,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { read_bytes(rb, data, len, false) }
}

/// The body of `ring_buffer_read` (`consume`) and `ring_buffer_peek`.
///
/// # Safety
/// `data` must be writable for `len` bytes.
unsafe fn read_bytes(rb: *mut RingBuffer, data: *mut c_void, len: u32, consume: bool) -> c_int {
    call(-1, || {
        let queue = handles::queue(rb)?;
        // SAFETY: forwarded contract.
        let data = unsafe { bytes_mut(data, len)? };
        queue.view().read_bytes(data, consume)?;
        Ok(len as c_int)
    })
}

/// Bytes queued (`tail - head`); 0 for a bad handle.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_available_read(rb: *mut RingBuffer) -> u32 {
    call(0, || handles::queue(rb)?.view().available_read())
}

/// Bytes that can be written (`buffer_size - available_read - 1`); 0 for a
/// bad handle.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_available_write(rb: *mut RingBuffer) -> u32 {
    call(0, || handles::queue(rb)?.view().available_write())
}

/// Whether no byte is queued (true for a bad handle, as in the legacy
/// library).
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_is_empty(rb: *mut RingBuffer) -> bool {
    call(true, || {
        Ok(handles::queue(rb)?.view().available_read()? == 0)
    })
}

/// Whether no byte can be written (true for a bad handle, as in the legacy
/// library).
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_is_full(rb: *mut RingBuffer) -> bool {
    call(true, || {
        Ok(handles::queue(rb)?.view().available_write()? == 0)
    })
}

/// Allocates (with `malloc`) a reference to the queue and increments its
/// reference count. Free it with `ring_buffer_release_ref`.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_ref(rb: *mut RingBuffer) -> *mut RingBufferRef {
    call(ptr::null_mut(), || {
        let queue = handles::queue(rb)?;
        let view = queue.view();
        let value = RingBufferRef {
            name: view.header.name_field(),
            size: view.buffer_size(),
            auto_cleanup: false,
            creator_pid: view.header.creator_pid().load(Relaxed),
        };
        // SAFETY: malloc of the struct's size; checked for NULL below.
        let r = unsafe { libc::malloc(std::mem::size_of::<RingBufferRef>()) } as *mut RingBufferRef;
        if r.is_null() {
            return Err(Error::System(libc::ENOMEM));
        }
        view.add_ref(1).inspect_err(|_| {
            // SAFETY: `r` came from malloc just above and was not handed out.
            unsafe { libc::free(r as *mut c_void) }
        })?;
        // SAFETY: `r` is a fresh, suitably aligned allocation of that size.
        unsafe { r.write(value) };
        Ok(r)
    })
}

/// Opens the queue a reference names and increments its reference count.
///
/// # Safety
/// `r` must be NULL or point to a readable `ring_buffer_ref_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_from_ref(r: *const RingBufferRef) -> *mut RingBuffer {
    call(ptr::null_mut(), || {
        // SAFETY: per the contract, a non-NULL `r` is readable.
        let r = unsafe { r.as_ref() }.ok_or(Error::InvalidArg)?;
        let name = handles::field_name(&r.name)?;
        let queue = Queue::open_named(&name, &Options::default())?;
        queue.view().add_ref(1)?;
        Ok(handles::register(queue))
    })
}

/// Frees a reference from `ring_buffer_get_ref` (NULL allowed).
///
/// # Safety
/// `r` must be NULL or a pointer from `ring_buffer_get_ref` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_release_ref(r: *mut RingBufferRef) {
    // SAFETY: per the contract, `r` came from malloc (or is NULL).
    unsafe { libc::free(r as *mut c_void) }
}

/// Increments the queue's reference count; returns the new count, or -1.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_inc_ref(rb: *mut RingBuffer) -> c_int {
    call(-1, || Ok(handles::queue(rb)?.view().add_ref(1)? as c_int))
}

/// Decrements the queue's reference count and returns the new count, or -1.
/// At 0 the queue's name is removed; unlike the legacy library, the handle
/// stays valid until `ring_buffer_close`.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_dec_ref(rb: *mut RingBuffer) -> c_int {
    call(-1, || {
        let queue = handles::queue(rb)?;
        let count = queue.view().add_ref(-1)?;
        if count == 0 {
            object::unlink_if_same(queue.mapping().name(), queue.mapping().file_id())?;
        }
        Ok(count as c_int)
    })
}

/// Fills `stats` (left untouched on failure).
///
/// # Safety
/// `stats` must be NULL or writable for a `ring_buffer_stats_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_stats(rb: *mut RingBuffer, stats: *mut RingBufferStats) {
    call((), || {
        // SAFETY: forwarded contract.
        let stats = unsafe { handles::out(stats)? };
        stats.set(handles::queue(rb)?.view().stats()?);
        Ok(())
    })
}

/// Zeroes the byte totals and the other statistics.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_reset_stats(rb: *mut RingBuffer) {
    call((), || {
        handles::queue(rb)?.view().reset_stats();
        Ok(())
    })
}

/// Writes `batch_count` buffers back to back, all or nothing, without
/// waiting; returns the total bytes, or -1.
///
/// # Safety
/// `data_ptrs` and `lengths` must be readable arrays of `batch_count`
/// elements, each `data_ptrs[i]` readable for `lengths[i]` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_write_batch(
    rb: *mut RingBuffer,
    data_ptrs: *const *const c_void,
    lengths: *const u32,
    batch_count: u32,
) -> c_int {
    call(-1, || {
        let queue = handles::queue(rb)?;
        if batch_count == 0 {
            return Err(Error::InvalidArg);
        }
        // SAFETY: forwarded contract.
        let parts = unsafe { handles::byte_slices(data_ptrs, lengths, batch_count)? };
        Ok(queue.view().write_bytes(&parts)? as c_int)
    })
}

/// Legacy contract: consumes everything queued, in chunks of at most 1024
/// bytes (at most `max_batch_count` of them), each `malloc`ed for the caller
/// to `free`; returns the chunk count, 0 when empty, -1 on bad arguments.
///
/// # Safety
/// `data_ptrs` and `lengths` must be writable arrays of `max_batch_count`
/// elements.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_read_batch(
    rb: *mut RingBuffer,
    data_ptrs: *mut *mut c_void,
    lengths: *mut u32,
    max_batch_count: u32,
) -> c_int {
    call(-1, || {
        let queue = handles::queue(rb)?;
        if max_batch_count == 0 {
            return Err(Error::InvalidArg);
        }
        // SAFETY: forwarded contract.
        let (ptrs, lens) = unsafe {
            (
                array_mut(data_ptrs, max_batch_count)?,
                array_mut(lengths, max_batch_count)?,
            )
        };
        let mut alloc = |len: usize| {
            // SAFETY: plain malloc; NULL stops the batch.
            let p = unsafe { libc::malloc(len) } as *mut u8;
            (!p.is_null()).then_some(p)
        };
        let mut release = |p: *mut u8| {
            // SAFETY: `p` came from the malloc above and was not handed out.
            unsafe { libc::free(p as *mut c_void) }
        };
        let chunks = queue
            .view()
            .read_chunks(ptrs.len(), 1024, &mut alloc, &mut release)?;
        for (i, (p, len)) in chunks.iter().enumerate() {
            ptrs[i] = *p as *mut c_void;
            lens[i] = *len as u32;
        }
        Ok(chunks.len() as c_int)
    })
}

/// Smallest power of two at least `v`; `next_power_of_2(0) == 1`, and 0 when
/// the result does not fit in 32 bits (as the legacy bit trick gives).
#[no_mangle]
pub extern "C" fn next_power_of_2(v: u32) -> u32 {
    v.max(1).checked_next_power_of_two().unwrap_or(0)
}

/// Whether `v` is a power of two (false for 0).
#[no_mangle]
pub extern "C" fn is_power_of_2(v: u32) -> bool {
    v.is_power_of_two()
}
