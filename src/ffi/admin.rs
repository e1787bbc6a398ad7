//! Creating, inspecting and retiring queues; errors and version.

use std::os::raw::{c_char, c_int};
use std::ptr;

use super::boundary::{call, last_error, status};
use super::handles;
use super::{
    RB_CREATE_EXCLUSIVE, RB_OPEN_ALLOW_FOREIGN_OWNER, RB_OPEN_NO_POOL, RB_OPEN_POOL_MEDIUM,
};
use crate::error::{Error, RbStatus};
use crate::inspect::{self, RingBufferInfo};
use crate::layout::{RingBuffer, RingBufferStatsEx};
use crate::name::{OBJECT_PREFIX_C, SHM_DIR_C};
use crate::object::{self, buffer_size_for};
use crate::queue::{Options, Queue};
use crate::sync::deadline::Wait;

/// Static, NUL-terminated text for any status code (also unknown ones).
#[no_mangle]
pub extern "C" fn ring_buffer_strerror(code: c_int) -> *const c_char {
    let text = RbStatus::from_code(code).map_or("unknown status code\0", RbStatus::message);
    text.as_ptr() as *const c_char
}

/// The code of this thread's last failing call (`RB_OK` if none failed yet).
#[no_mangle]
pub extern "C" fn ring_buffer_last_error() -> c_int {
    last_error()
}

/// The library version, e.g. "1.0.0" (static string).
#[no_mangle]
pub extern "C" fn ring_buffer_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Creates the queue `name` (data area of `size` bytes, rounded up to a power
/// of two, at least 1024; `size` 0 or above 2^31 is `RB_ERR_INVALID_ARG`)
/// with permission bits `mode` (0 means 0600; only 0777 bits allowed),
/// applied whatever the umask. `flags`: `RB_CREATE_EXCLUSIVE` fails with
/// `RB_ERR_EXISTS` if the queue exists, otherwise it is opened (size and
/// mode ignored); `RB_OPEN_ALLOW_FOREIGN_OWNER` accepts an existing queue of
/// another user; `RB_OPEN_NO_POOL` keeps this handle's messages longer than
/// the ring out of the queue's pool; `RB_OPEN_POOL_MEDIUM` puts its medium
/// messages there too. NULL on failure (see
/// `ring_buffer_last_error()`).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_create_ex(
    name: *const c_char,
    size: u32,
    mode: u32,
    flags: u32,
) -> *mut RingBuffer {
    call(ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        if flags & !(RB_CREATE_EXCLUSIVE | OPEN_FLAGS) != 0 || size == 0 {
            return Err(Error::InvalidArg);
        }
        let size = buffer_size_for(size).ok_or(Error::InvalidArg)?;
        let options = open_options(flags).mode(if mode == 0 { 0o600 } else { mode });
        let queue = if flags & RB_CREATE_EXCLUSIVE != 0 {
            Queue::create_named(&name, size, &options)?
        } else {
            Queue::open_or_create_named(&name, size, &options)?
        };
        Ok(handles::register(queue))
    })
}

/// Opens the existing queue `name`; `flags` may hold
/// `RB_OPEN_ALLOW_FOREIGN_OWNER`, `RB_OPEN_NO_POOL` and
/// `RB_OPEN_POOL_MEDIUM`. NULL on failure.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_open_ex(name: *const c_char, flags: u32) -> *mut RingBuffer {
    call(ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        if flags & !OPEN_FLAGS != 0 {
            return Err(Error::InvalidArg);
        }
        Queue::open_named(&name, &open_options(flags)).map(handles::register)
    })
}

/// The flags `ring_buffer_open_ex` takes (and `ring_buffer_create_ex`, with
/// `RB_CREATE_EXCLUSIVE`).
const OPEN_FLAGS: u32 = RB_OPEN_ALLOW_FOREIGN_OWNER | RB_OPEN_NO_POOL | RB_OPEN_POOL_MEDIUM;

/// The options `flags` (checked against `OPEN_FLAGS`) ask for.
fn open_options(flags: u32) -> Options {
    Options::default()
        .allow_foreign_owner(flags & RB_OPEN_ALLOW_FOREIGN_OWNER != 0)
        .pool(flags & RB_OPEN_NO_POOL == 0)
        .pool_medium(flags & RB_OPEN_POOL_MEDIUM != 0)
}

/// Processes that have the queue open right now (each open handle holds a
/// shared `flock`; handles inherited across `fork` count with their opener).
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_attached_processes(rb: *mut RingBuffer) -> c_int {
    status(|| Ok(handles::queue(rb)?.attached_processes()? as c_int))
}

/// Removes the queue `name` only if no live process has it open: 1 removed,
/// 0 in use, or a negative code (`RB_ERR_NOT_FOUND`, ...).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_remove_if_unused(name: *const c_char) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        Ok(object::remove_if_unused(&name)? as c_int)
    })
}

/// Closes the handle (whatever happens next) and removes the queue it
/// opened if no live process has that queue open any more: 1 removed, 0 in
/// use (or the name now belongs to a newer queue, which is never touched), or
/// a negative code. What `auto_cleanup` needs: `ring_buffer_close` then
/// `ring_buffer_remove_if_unused(name)` could remove a newer queue that took
/// the name meanwhile.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_close_remove_if_unused(rb: *mut RingBuffer) -> c_int {
    status(|| Ok(handles::unregister(rb)?.close_and_remove_if_unused()? as c_int))
}

/// Stores the number of messages queued (exact across processes) in `*out`:
/// `RB_OK` or a negative code (`*out` untouched). Unlike
/// `ring_buffer_msg_count`, a failure cannot pass for an empty queue.
///
/// # Safety
/// `out` must be NULL or writable for a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_msg_count_checked(
    rb: *mut RingBuffer,
    out: *mut u64,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let out = unsafe { handles::out(out)? };
        out.set(handles::queue(rb)?.view().msg_count()?);
        Ok(0)
    })
}

/// Stores the messages put and not yet marked done in `*out`: `RB_OK` or a
/// negative code (`RB_ERR_INCOMPATIBLE` on a legacy queue; `*out`
/// untouched).
///
/// # Safety
/// `out` must be NULL or writable for a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_unfinished_tasks_checked(
    rb: *mut RingBuffer,
    out: *mut u64,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let out = unsafe { handles::out(out)? };
        out.set(handles::queue(rb)?.unfinished_tasks()?);
        Ok(0)
    })
}

/// Stores the bytes that can be written now (`buffer_size - available_read
/// - 1`) in `*out`: `RB_OK` or a negative code (`*out` untouched).
///
/// # Safety
/// `out` must be NULL or writable for a `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_available_write_checked(
    rb: *mut RingBuffer,
    out: *mut u32,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let out = unsafe { handles::out(out)? };
        out.set(handles::queue(rb)?.view().available_write()?);
        Ok(0)
    })
}

/// Fills `*stats` with every statistic: `RB_OK` or a negative code
/// (`*stats` untouched).
///
/// # Safety
/// `stats` must be NULL or writable for a `ring_buffer_stats_ex_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_stats_ex_checked(
    rb: *mut RingBuffer,
    stats: *mut RingBufferStatsEx,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let stats = unsafe { handles::out(stats)? };
        stats.set(handles::queue(rb)?.stats()?);
        Ok(0)
    })
}

/// Messages queued, exact across processes; 0 on error (see
/// `ring_buffer_last_error()`, or use `ring_buffer_msg_count_checked`).
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_msg_count(rb: *mut RingBuffer) -> u64 {
    call(0, || handles::queue(rb)?.view().msg_count())
}

/// Shuts the queue down for every process: later puts fail with
/// `RB_ERR_SHUTDOWN`; gets drain what is queued, then fail the same way;
/// every sleeper wakes. `RB_ERR_INCOMPATIBLE` on a legacy (version 1) queue.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_shutdown(rb: *mut RingBuffer) -> c_int {
    status(|| handles::queue(rb)?.shutdown().map(|()| 0))
}

/// 1 if the queue was shut down, 0 if not, or a negative code.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_is_shutdown(rb: *mut RingBuffer) -> c_int {
    status(|| Ok(handles::queue(rb)?.is_shutdown() as c_int))
}

/// Fills `stats` with every statistic (left untouched on failure; see
/// `ring_buffer_last_error()`).
///
/// # Safety
/// `stats` must be NULL or writable for a `ring_buffer_stats_ex_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_get_stats_ex(
    rb: *mut RingBuffer,
    stats: *mut RingBufferStatsEx,
) {
    call((), || {
        // SAFETY: forwarded contract.
        let stats = unsafe { handles::out(stats)? };
        stats.set(handles::queue(rb)?.stats()?);
        Ok(())
    })
}

/// Marks one received message as processed (`queue.Queue.task_done`).
/// `RB_ERR_INVALID_ARG` if called more often than messages were received.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_task_done(rb: *mut RingBuffer) -> c_int {
    status(|| handles::queue(rb)?.task_done().map(|()| 0))
}

/// Waits (per `timeout_ns`, as for `ring_buffer_get_msg`) until every message
/// put so far was marked done: `RB_OK` or `RB_ERR_TIMEOUT`.
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_join(rb: *mut RingBuffer, timeout_ns: i64) -> c_int {
    status(|| {
        handles::queue(rb)?
            .view()
            .join(Wait::from_timeout_ns(timeout_ns))?;
        Ok(0)
    })
}

/// Messages put and not yet marked done; 0 on error (use
/// `ring_buffer_unfinished_tasks_checked` to tell).
///
/// # Safety
/// None; any handle value is checked.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_unfinished_tasks(rb: *mut RingBuffer) -> u64 {
    call(0, || handles::queue(rb)?.unfinished_tasks())
}

/// `RB_OK` if `name` is a valid queue name (1 to 63 bytes, no `/`, no `..`,
/// no control character), otherwise `RB_ERR_INVALID_NAME` (`RB_ERR_INVALID_ARG`
/// for NULL).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_check_name(name: *const c_char) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        unsafe { handles::name(name)? };
        Ok(0)
    })
}

/// The directory holding the queue objects, `"/dev/shm"` (static string).
#[no_mangle]
pub extern "C" fn ring_buffer_object_dir() -> *const c_char {
    SHM_DIR_C.as_ptr() as *const c_char
}

/// The prefix of every queue object's file name in that directory,
/// `"sage_ringbuf_"` (static string): queue `q` is `/dev/shm/sage_ringbuf_q`.
#[no_mangle]
pub extern "C" fn ring_buffer_object_prefix() -> *const c_char {
    OBJECT_PREFIX_C.as_ptr() as *const c_char
}

/// Fills `info` with what can be learnt about the object of queue `name`
/// without attaching to it (no `flock`, `process_count` untouched): owner,
/// mode, size, the header's fields, attached processes, whether the creator
/// lives. Works on objects of other users and on objects that are not queues
/// (see `header_status`). `RB_ERR_NOT_FOUND` if there is no such object;
/// `info` is written only on success.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `info` NULL or writable
/// for a `ring_buffer_info_t`.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_inspect(
    name: *const c_char,
    info: *mut RingBufferInfo,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        // SAFETY: forwarded contract.
        let info = unsafe { handles::out(info)? };
        info.set(inspect::inspect(&name)?);
        Ok(0)
    })
}

/// The pids of the processes that have queue `name` open (sorted, without
/// attaching): returns how many there are and stores the first `cap` of them
/// in `pids` (which may be NULL when `cap` is 0), or a negative code.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `pids` writable for `cap`
/// elements.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_attached_pids(
    name: *const c_char,
    pids: *mut libc::pid_t,
    cap: u32,
) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        let out: &mut [libc::pid_t] = if cap == 0 {
            &mut []
        } else {
            // SAFETY: forwarded contract.
            unsafe { handles::array_mut(pids, cap)? }
        };
        let found = inspect::attached_pids(&name)?;
        for (dst, &pid) in out.iter_mut().zip(&found) {
            *dst = pid;
        }
        Ok(found.len().min(c_int::MAX as usize) as c_int)
    })
}

/// Removes the orphaned side objects of queue `name`: the out-of-line bytes
/// of messages longer than the ring whose producer died before publishing
/// them or whose consumer died after taking them (objects
/// `/dev/shm/sage_ringbuf_<name>..<id>`). Objects in use and those a queued
/// message still names are kept. The slots of the queue's pool
/// (`..p<k>`) that a dead producer or consumer left claimed are freed (and
/// counted), and its free slots nobody holds are removed, giving their
/// memory back (not counted; they are made again when needed). If the queue
/// no longer exists, every side object of that name nobody holds is
/// removed. Returns how many were removed or freed, or a negative code
/// (`RB_ERR_PERMISSION` for another user's queue). Every open of a queue
/// does the same for it, except removing free slots.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ring_buffer_reclaim(name: *const c_char) -> c_int {
    status(|| {
        // SAFETY: forwarded contract.
        let name = unsafe { handles::name(name)? };
        let n = crate::queue::Queue::reclaim(name.as_bytes())?;
        Ok(n.min(c_int::MAX as usize) as c_int)
    })
}
