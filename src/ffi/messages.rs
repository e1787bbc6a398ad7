//! The message API: whole framed messages, atomic with respect to every other
//! producer and consumer, blocking with timeouts.
//!
//! Timeouts (`timeout_ns`): 0 tries once and never waits for room or
//! messages, a negative value waits as long as it takes, a positive one waits
//! at most that many nanoseconds (`RB_ERR_TIMEOUT`). Waiting costs no CPU: a
//! short spin, then a shared futex. A try-once call still waits for another
//! process's ongoing put (get) to finish, at most 100 ms: if that process
//! is stopped inside it, the call returns `RB_ERR_TIMEOUT` rather than hang.

use std::fs::File;
use std::os::fd::IntoRawFd;
use std::os::raw::{c_int, c_void};
use std::os::unix::fs::FileExt;

use super::boundary::{length_or_status, status};
use super::handles::{self, array, array_mut, bytes, Out};
use crate::error::Error;
use crate::error::Result;
use crate::layout::RingBuffer;
use crate::object::unnamed_object;
use crate::ops::{Gathered, Incoming, Outgoing, Taken};
use crate::pool::Lease;
use crate::queue::Queue;
use crate::sync::deadline::Wait;

/// Puts one message of `len` bytes (`data` may be NULL when `len` is 0).
/// `timeout_ns`: 0 tries once, negative waits for ever, positive waits that
/// many nanoseconds at most. Returns `RB_OK`, `RB_ERR_FULL` (timeout 0),
/// `RB_ERR_TIMEOUT` (also for timeout 0 if another producer has been stopped
/// for 100 ms inside a put),
/// `RB_ERR_TOO_LARGE` (returned at once), `RB_ERR_SHUTDOWN`, or another code.
///
/// A message longer than the ring is written into a side shared-memory
/// object `/dev/shm/sage_ringbuf_<queue>..<id>` (mode 0600) and a small
/// descriptor goes through the ring; the consumer's get returns the whole
/// message and removes the object. (Into a free slot of the queue's pool,
/// `..p<k>`, kept for reuse, when one can take it; so does a medium message,
/// see `RB_OPEN_POOL_MEDIUM`, or else through the ring.) `RB_ERR_TOO_LARGE` only if /dev/shm has
/// no room for it, or on a legacy (version 1) object or a raw byte stream.
/// The messages queued out of line hold at most 128 MiB together (or one
/// message alone): past that the call waits for the consumers as for a
/// full ring (`RB_ERR_FULL` for timeout 0). A producer killed before
/// publishing leaves an orphan that the queue's next open (and
/// `ring_buffer_reclaim`) removes.
///
/// # Safety
/// `data` must be readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_put_msg(
    rb: *mut RingBuffer,
    data: *const c_void,
    len: u32,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: forwarded contract.
    status(|| unsafe { put_one(rb, data, len, timeout_ns) })
}

/// The body of `ring_buffer_put_msg` (and `_args`).
///
/// # Safety
/// As `ring_buffer_put_msg`.
unsafe fn put_one(
    rb: *mut RingBuffer,
    data: *const c_void,
    len: u32,
    timeout_ns: i64,
) -> Result<c_int> {
    let queue = handles::queue(rb)?;
    // SAFETY: forwarded contract.
    let msg = unsafe { bytes(data, len)? };
    queue.send_batch_wait(&[msg][..], Wait::from_timeout_ns(timeout_ns))?;
    Ok(0)
}

/// The arguments of `ring_buffer_put_msg` that stay the same from call to
/// call, in one struct, for `ring_buffer_put_msg_args` (see
/// `ring_buffer_get_args_t`: for callers that pay per argument).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RingBufferPutArgs {
    /// The queue.
    pub rb: *mut RingBuffer,
    /// As `ring_buffer_put_msg`'s `timeout_ns`.
    pub timeout_ns: i64,
}

/// `ring_buffer_put_msg(args->rb, data, len, args->timeout_ns)`, with the
/// same results; `RB_ERR_INVALID_ARG` for a NULL `args`. The call only
/// reads `*args`.
///
/// # Safety
/// `args` must be NULL or readable; `data` readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_put_msg_args(
    args: *const RingBufferPutArgs,
    data: *const c_void,
    len: u32,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let RingBufferPutArgs { rb, timeout_ns } = unsafe { handles::input(args)? };
        // SAFETY: forwarded contract.
        unsafe { put_one(rb, data, len, timeout_ns) }
    })
}

/// Puts one message made of `count` parts written back to back
/// (`parts[i]`, `lens[i]` bytes; NULL allowed when 0), exactly as
/// `ring_buffer_put_msg` of their concatenation, without the caller joining
/// them: each byte is copied once, into the ring or, for a message longer
/// than the ring, into its side object. `RB_ERR_TOO_LARGE` if the total
/// reaches 4 GiB, `RB_ERR_INVALID_ARG` for no parts; otherwise returns as
/// `ring_buffer_put_msg`.
///
/// # Safety
/// `parts` and `lens` must be readable arrays of `count` elements, each
/// `parts[i]` readable for `lens[i]` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_put_msgv(
    rb: *mut RingBuffer,
    parts: *const *const c_void,
    lens: *const u32,
    count: u32,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        let queue = handles::queue(rb)?;
        if count == 0 {
            return Err(Error::InvalidArg);
        }
        // SAFETY: forwarded contract.
        let parts = unsafe { handles::byte_slices(parts, lens, count)? };
        let len = parts
            .iter()
            .try_fold(0u32, |sum, p| sum.checked_add(p.len() as u32))
            .ok_or(Error::TooLarge)?;
        let msg = Gathered {
            parts: &parts,
            len: len as usize,
        };
        queue.send_batch_wait(&msg, Wait::from_timeout_ns(timeout_ns))?;
        Ok(0)
    })
}

/// Takes one whole message as `ring_buffer_get_msg` does, except that a
/// message that went out of line (see `ring_buffer_put_msg`) is not copied: its
/// side object, taken from the queue (its name is removed from /dev/shm),
/// is handed over as a read-only descriptor in `*out_fd`, which the caller
/// owns (map it with `mmap(PROT_READ [| PROT_WRITE], MAP_PRIVATE)` or read
/// it, then close it), with its length in `*out_len`; `buf` is untouched.
/// A message in a slot of the queue's pool (see `RB_OPEN_NO_POOL`) is copied
/// into a new unnamed file of the caller's, handed over the same way, and
/// its slot freed: `ring_buffer_get_msg_lease` lends it without a copy. A
/// message in the ring is copied into `buf` with `*out_fd` = -1, or, if
/// `cap` is too small, `RB_ERR_BUFFER_TOO_SMALL` with `*out_len` = the length
/// needed and nothing consumed. Other codes as `ring_buffer_get_msg`.
///
/// # Safety
/// `buf` must be writable for `cap` bytes (it may be NULL if `cap` is 0);
/// `out_len` and `out_fd` must be writable.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_msg_fd(
    rb: *mut RingBuffer,
    buf: *mut c_void,
    cap: u32,
    out_len: *mut u32,
    out_fd: *mut c_int,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        let queue = handles::queue(rb)?;
        // SAFETY: forwarded contract.
        let out_len = unsafe { handles::out(out_len)? };
        // SAFETY: forwarded contract.
        let out_fd = unsafe { handles::out(out_fd)? };
        let mut sink = WithFile {
            packed: Packed::single(buf, cap)?,
            file: None,
            len: 0,
            freed: None,
        };
        let out_len = recv_one(&queue, &mut sink, out_len, timeout_ns)?;
        match sink.file.take() {
            Some(file) => {
                out_len.set(sink.len);
                out_fd.set(file.into_raw_fd());
            }
            None => {
                out_len.set(sink.packed.used as u32);
                out_fd.set(-1);
            }
        }
        Ok(0)
    })
}

/// One message into a caller's buffer, or its side object's file when it
/// went out of line.
struct WithFile<'a> {
    packed: Packed<'a>,
    file: Option<File>,
    len: u32,
    /// The slot a message was copied out of, freed when the sink goes
    /// (after the call consumed the message).
    freed: Option<Lease>,
}

/// An unnamed file of this process holding a copy of `lease`'s bytes.
fn private_copy(lease: &Lease) -> Result<File> {
    let file = unnamed_object(0o600)?;
    // SAFETY: the lease covers `len` bytes, which nobody else writes while
    // it lives; the copy goes out through the kernel.
    let bytes = unsafe { std::slice::from_raw_parts(lease.as_ptr(), lease.len() as usize) };
    file.write_all_at(bytes, 0)?;
    Ok(file)
}

// SAFETY: `slot` is `Packed`'s, with its guarantees.
unsafe impl Incoming for WithFile<'_> {
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8> {
        self.packed.slot(index, len)
    }
    fn max_count(&self) -> usize {
        self.packed.max_count()
    }
    fn adopt(&mut self, index: usize, len: u32, taken: Taken) -> Option<Taken> {
        if index != 0 {
            return Some(taken);
        }
        match taken {
            Taken::File(file) => self.file = Some(file),
            // A pool slot is the queue's, not the caller's: its bytes go
            // into a file of the caller's own (or, failing that, `buf`).
            Taken::Slot(lease) => match private_copy(&lease) {
                Ok(file) => {
                    self.file = Some(file);
                    self.freed = Some(lease);
                }
                Err(_) => return Some(Taken::Slot(lease)),
            },
        }
        self.len = len;
        None
    }
}

/// Takes one whole message into `buf` (`cap` bytes) and stores its length in
/// `*out_len`. If it does not fit: `RB_ERR_BUFFER_TOO_SMALL`, `*out_len` =
/// the length needed, nothing consumed. Otherwise `RB_OK`, `RB_ERR_EMPTY`
/// (timeout 0), `RB_ERR_TIMEOUT` (also for timeout 0 if another consumer has
/// been stopped for 100 ms inside a get), `RB_ERR_SHUTDOWN` (shut down and drained),
/// `RB_ERR_CORRUPT`, or another code. A message longer than the ring comes
/// whole from its side object (see `ring_buffer_put_msg`), which is then
/// removed; `*out_len` reports its full length when `cap` is too small. Its
/// side object missing (removed by hand): `RB_ERR_CORRUPT`, that one message
/// dropped, the next call goes on with the next.
///
/// # Safety
/// `buf` must be writable for `cap` bytes (it may be NULL if `cap` is 0);
/// `out_len` must be writable.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_msg(
    rb: *mut RingBuffer,
    buf: *mut c_void,
    cap: u32,
    out_len: *mut u32,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let out_len = unsafe { handles::out(out_len)? };
        let (len, out_len) = get_one(rb, buf, cap, out_len, timeout_ns)?;
        out_len.set(len as u32);
        Ok(0)
    })
}

/// The body of `ring_buffer_get_msg` (and `_args`): one message into `buf`,
/// its length and `too_small` back (written only with the length needed,
/// on `BufferTooSmall`).
fn get_one(
    rb: *mut RingBuffer,
    buf: *mut c_void,
    cap: u32,
    too_small: Out<u32>,
    timeout_ns: i64,
) -> Result<(usize, Out<u32>)> {
    let queue = handles::queue(rb)?;
    let mut sink = Packed::single(buf, cap)?;
    let too_small = recv_one(&queue, &mut sink, too_small, timeout_ns)?;
    Ok((sink.used, too_small))
}

/// The arguments of `ring_buffer_get_msg` in one struct, for
/// `ring_buffer_get_msg_args`: a receiving thread fills it once and passes
/// it to each call. For callers that pay for every argument of every call:
/// Python's ctypes converts each one, and five arguments plus reading the
/// length back cost about a quarter of a 512-byte get (~0.33 us measured).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RingBufferGetArgs {
    /// The queue.
    pub rb: *mut RingBuffer,
    /// Where the message goes: writable for `cap` bytes (NULL if `cap` is 0).
    pub buf: *mut c_void,
    /// Bytes of `buf`.
    pub cap: u32,
    /// Set to the length needed when the call returns
    /// `RB_ERR_BUFFER_TOO_SMALL`; no other outcome writes it.
    pub needed: u32,
    /// As `ring_buffer_get_msg`'s `timeout_ns`.
    pub timeout_ns: i64,
}

/// `ring_buffer_get_msg` with its arguments in `*args`: returns the
/// message's length (0 or more) or a negative status code, the ones
/// `ring_buffer_get_msg` returns. On `RB_ERR_BUFFER_TOO_SMALL` nothing is
/// consumed and `args->needed` holds the length needed; the call writes
/// nothing else of `*args`. `RB_ERR_INVALID_ARG` for a NULL `args`.
///
/// # Safety
/// `args` must be NULL or point to a struct that no other thread uses during
/// the call, whose `buf` is writable for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_msg_args(args: *mut RingBufferGetArgs) -> i64 {
    length_or_status(|| {
        // SAFETY: forwarded contract.
        let RingBufferGetArgs {
            rb,
            buf,
            cap,
            timeout_ns,
            ..
        } = unsafe { handles::input(args)? };
        // SAFETY: a field of the caller's writable struct (contract above).
        let needed = unsafe { handles::out(std::ptr::addr_of_mut!((*args).needed))? };
        get_one(rb, buf, cap, needed, timeout_ns).map(|(len, _)| len)
    })
}

/// Waits (per `timeout_ns`) until the first message fits, then puts, in
/// order, as many of the `count` messages as fit, under one lock and with
/// one wake-up. Returns how many (at least 1) or a negative code;
/// `RB_ERR_TOO_LARGE` at once, nothing put, if any message can go neither
/// through the ring nor out of line. A message that goes out of line (see
/// `ring_buffer_put_msg`: longer than the ring, or medium with
/// `RB_OPEN_POOL_MEDIUM`) goes alone: first in the batch, it is put by
/// itself (returns 1); later, the batch stops before it.
///
/// # Safety
/// `datas` and `lens` must be readable arrays of `count` elements, each
/// `datas[i]` readable for `lens[i]` bytes (NULL allowed when 0).
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_put_many(
    rb: *mut RingBuffer,
    datas: *const *const c_void,
    lens: *const u32,
    count: u32,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        let queue = handles::queue(rb)?;
        // SAFETY: forwarded contract.
        let msgs = unsafe { handles::byte_slices(datas, lens, count)? };
        Ok(queue.send_batch_wait(&msgs[..], Wait::from_timeout_ns(timeout_ns))? as c_int)
    })
}

/// Like `ring_buffer_put_many`, with the `count` payloads stored back to back
/// in `data` (message `i` is `lens[i]` bytes, right after message `i-1`): the
/// layout `ring_buffer_get_many` produces, and the cheapest one to build from
/// languages without pointer arrays.
///
/// # Safety
/// `lens` must be a readable array of `count` elements and `data` readable
/// for their sum.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_put_packed(
    rb: *mut RingBuffer,
    data: *const c_void,
    lens: *const u32,
    count: u32,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        let queue = handles::queue(rb)?;
        // SAFETY: forwarded contract.
        let lens = unsafe { array(lens, count)? };
        let total = lens
            .iter()
            .try_fold(0u32, |sum, &l| sum.checked_add(l))
            .ok_or(Error::TooLarge)?;
        // SAFETY: forwarded contract.
        let data = unsafe { bytes(data, total)? };
        let mut offsets = Vec::with_capacity(lens.len());
        let mut at = 0usize;
        for &len in lens {
            offsets.push(at);
            at += len as usize;
        }
        let batch = PackedOut {
            data,
            lens,
            offsets,
        };
        Ok(queue.send_batch_wait(&batch, Wait::from_timeout_ns(timeout_ns))? as c_int)
    })
}

/// Waits (per `timeout_ns`) until a message is queued, then copies up to
/// `max_count` whole messages back to back into `buf`, stopping before one
/// that would overflow `cap`, and stores each length in `lens`. Returns how
/// many (at least 1) or a negative code. If even the first message does not
/// fit: `RB_ERR_BUFFER_TOO_SMALL`, `lens[0]` = the length needed, nothing
/// consumed.
///
/// # Safety
/// `buf` must be writable for `cap` bytes (NULL allowed if `cap` is 0) and
/// `lens` for `max_count` elements.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_many(
    rb: *mut RingBuffer,
    buf: *mut c_void,
    cap: u32,
    lens: *mut u32,
    max_count: u32,
    timeout_ns: i64,
) -> c_int {
    status(|| {
        let queue = handles::queue(rb)?;
        if max_count == 0 || (buf.is_null() && cap > 0) {
            return Err(Error::InvalidArg);
        }
        // SAFETY: forwarded contract.
        let lens = unsafe { array_mut(lens, max_count)? };
        let mut sink = Packed {
            buf: buf as *mut u8,
            cap: cap as usize,
            used: 0,
            lens,
            max: max_count as usize,
        };
        match queue
            .view()
            .recv(&mut sink, Wait::from_timeout_ns(timeout_ns))
        {
            Ok(n) => Ok(n as c_int),
            Err(Error::BufferTooSmall { needed }) => {
                sink.lens[0] = needed;
                Err(Error::BufferTooSmall { needed })
            }
            Err(e) => Err(e),
        }
    })
}

/// Messages received back to back into one caller buffer.
pub(super) struct Packed<'a> {
    buf: *mut u8,
    cap: usize,
    pub(super) used: usize,
    /// Where to store each length (empty for a single message).
    lens: &'a mut [u32],
    max: usize,
}

impl Packed<'_> {
    /// One message into the caller's `buf` of `cap` bytes (`InvalidArg`
    /// for a NULL `buf` with room).
    pub(super) fn single(buf: *mut c_void, cap: u32) -> Result<Packed<'static>> {
        if buf.is_null() && cap > 0 {
            return Err(Error::InvalidArg);
        }
        Ok(Packed {
            buf: buf as *mut u8,
            cap: cap as usize,
            used: 0,
            lens: &mut [],
            max: 1,
        })
    }
}

/// `recv` of one message into `sink`, for the single-message gets. When the
/// message does not fit, `*out_len` gets the length needed (the one output
/// those calls write on `RB_ERR_BUFFER_TOO_SMALL`); on success `out_len`
/// comes back for the caller to set.
pub(super) fn recv_one<I: Incoming + ?Sized>(
    queue: &Queue,
    sink: &mut I,
    out_len: Out<u32>,
    timeout_ns: i64,
) -> Result<Out<u32>> {
    match queue.view().recv(sink, Wait::from_timeout_ns(timeout_ns)) {
        Ok(_) => Ok(out_len),
        Err(Error::BufferTooSmall { needed }) => {
            out_len.set(needed);
            Err(Error::BufferTooSmall { needed })
        }
        Err(e) => Err(e),
    }
}

// SAFETY: a pointer is handed out only for `len` bytes inside the caller's
// `cap`-byte buffer (the C contract makes that writable and not the mapping).
unsafe impl Incoming for Packed<'_> {
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8> {
        let len = len as usize;
        if index >= self.max || self.cap - self.used < len {
            return None;
        }
        if let Some(slot) = self.lens.get_mut(index) {
            *slot = len as u32;
        }
        // SAFETY: `used + len <= cap`, inside the caller's buffer (or a
        // zero-length access at its start, also for a NULL buffer of cap 0).
        let dst = unsafe { self.buf.add(self.used) };
        self.used += len;
        Some(dst)
    }
    fn max_count(&self) -> usize {
        self.max
    }
    fn refuses(&self, index: usize, len: u32) -> bool {
        index >= self.max || self.cap - self.used < len as usize
    }
}

/// Payloads stored back to back.
struct PackedOut<'a> {
    data: &'a [u8],
    lens: &'a [u32],
    offsets: Vec<usize>,
}

impl Outgoing for PackedOut<'_> {
    fn count(&self) -> usize {
        self.lens.len()
    }
    fn len_of(&self, index: usize) -> usize {
        self.lens[index] as usize
    }
    fn parts(&self, index: usize, put: &mut dyn FnMut(&[u8])) {
        let at = self.offsets[index];
        put(&self.data[at..at + self.lens[index] as usize])
    }
}
