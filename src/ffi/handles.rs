//! Turning C arguments into safe values: the handle registry, names, byte
//! slices, output pointers. Every check the C API makes on a pointer is here.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::raw::{c_char, c_void};
use std::slice;
use std::sync::{RwLock, RwLockWriteGuard};

use super::leases::{Leased, RingBufferLease};
use crate::error::{Error, Result};
use crate::layout::{RingBuffer, MAX_NAME_LEN};
use crate::name::QueueName;
use crate::queue::Queue;
use crate::sync::atfork;
use crate::sync::once::NoWaitOnce;

/// Live handles of this process: queues by header address, leases (see
/// `super::leases`) by the address of their box.
struct Registry {
    queues: BTreeMap<usize, Queue>,
    leases: BTreeMap<usize, Box<Leased>>,
}

static HANDLES: RwLock<Registry> = RwLock::new(Registry {
    queues: BTreeMap::new(),
    leases: BTreeMap::new(),
});

type HandlesGuard = RwLockWriteGuard<'static, Registry>;

thread_local! {
    /// The registry's write lock, held by the forking thread across `fork`
    /// (see [`fork_safe`]).
    static HELD_ACROSS_FORK: RefCell<Option<HandlesGuard>> = const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    let guard = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(guard));
}

extern "C" fn after_fork() {
    // In the parent, and in the child, whose only thread is the one that
    // forked and so holds the guard: release it.
    HELD_ACROSS_FORK.with(|held| drop(held.borrow_mut().take()));
}

/// Makes the registry safe to use in a child forked while other threads are
/// inside a call: `fork` copies the lock word as it is, so a lock held by a
/// thread that does not exist in the child would stay held there for ever
/// (every create/open/close of the child would hang). The `pthread_atfork`
/// handlers take the write lock before `fork` (waiting out the calls in
/// flight, which hold it only for a map lookup) and release it on both sides.
/// Registered before the registry's first use, from every entry point.
fn fork_safe() -> &'static RwLock<Registry> {
    static HANDLERS: NoWaitOnce = NoWaitOnce::new();
    // False only during the process's first call (another thread registers
    // them) and if registering failed (ENOMEM): without the handlers the
    // library still works, it is just not safe to fork while calls are in
    // flight.
    let _ =
        HANDLERS.run(|| atfork::register(Some(before_fork), Some(after_fork), Some(after_fork)));
    &HANDLES
}

/// Records `queue` as open and returns its handle.
pub(super) fn register(queue: Queue) -> *mut RingBuffer {
    let rb = queue.header_ptr();
    fork_safe()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .queues
        .insert(rb as usize, queue);
    rb
}

/// The queue behind a handle: `InvalidArg` for NULL, for a handle already
/// closed, and for anything this library never handed out. The queue stays
/// mapped while the returned clone lives, even if another thread closes the
/// handle meanwhile.
pub(super) fn queue(rb: *const RingBuffer) -> Result<Queue> {
    if rb.is_null() {
        return Err(Error::InvalidArg);
    }
    let handles = fork_safe().read().unwrap_or_else(|e| e.into_inner());
    handles
        .queues
        .get(&(rb as usize))
        .cloned()
        .ok_or(Error::InvalidArg)
}

/// Forgets a handle; the mapping goes once no call uses it any more.
pub(super) fn unregister(rb: *const RingBuffer) -> Result<Queue> {
    if rb.is_null() {
        return Err(Error::InvalidArg);
    }
    let mut handles = fork_safe().write().unwrap_or_else(|e| e.into_inner());
    handles
        .queues
        .remove(&(rb as usize))
        .ok_or(Error::InvalidArg)
}

/// Records a received message's memory as leased out and returns its handle.
pub(super) fn register_lease(leased: Leased) -> *mut RingBufferLease {
    let boxed = Box::new(leased);
    let handle = &*boxed as *const Leased as *mut RingBufferLease;
    fork_safe()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .leases
        .insert(handle as usize, boxed);
    handle
}

/// Takes a lease back: `InvalidArg` for NULL, a lease already released, and
/// anything this library never handed out.
pub(super) fn unregister_lease(lease: *mut RingBufferLease) -> Result<Box<Leased>> {
    let mut handles = fork_safe().write().unwrap_or_else(|e| e.into_inner());
    handles
        .leases
        .remove(&(lease as usize))
        .ok_or(Error::InvalidArg)
}

/// A validated queue name from a C string. Reads at most 64 bytes, so an
/// unterminated string cannot make us read past it further than that.
///
/// # Safety
/// `name` must be NULL or point to a NUL-terminated string or to at least 64
/// readable bytes.
pub(super) unsafe fn name(name: *const c_char) -> Result<QueueName> {
    if name.is_null() {
        return Err(Error::InvalidArg);
    }
    // SAFETY: per the contract, the first MAX_NAME_LEN bytes (or up to the
    // NUL) are readable.
    let len = unsafe { libc::strnlen(name, MAX_NAME_LEN) };
    if len == MAX_NAME_LEN {
        return Err(Error::InvalidName);
    }
    // SAFETY: `len` bytes before the NUL are readable.
    QueueName::new(unsafe { slice::from_raw_parts(name as *const u8, len) })
}

/// The name stored in a fixed 64-byte field (a `ring_buffer_ref_t`).
pub(super) fn field_name(field: &[c_char; MAX_NAME_LEN]) -> Result<QueueName> {
    let len = field
        .iter()
        .position(|&c| c == 0)
        .ok_or(Error::InvalidName)?;
    let bytes: Vec<u8> = field[..len].iter().map(|&c| c as u8).collect();
    QueueName::new(&bytes)
}

/// `len` bytes at `data`; NULL is accepted only for an empty slice.
///
/// # Safety
/// A non-NULL `data` must be readable for `len` bytes for `'a`.
pub(super) unsafe fn bytes<'a>(data: *const c_void, len: u32) -> Result<&'a [u8]> {
    match (data.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(Error::InvalidArg),
        // SAFETY: per the contract.
        (false, len) => Ok(unsafe { slice::from_raw_parts(data as *const u8, len as usize) }),
    }
}

/// `len` writable bytes at `data`; NULL is accepted only for an empty slice.
///
/// # Safety
/// A non-NULL `data` must be writable for `len` bytes for `'a`, and not be
/// aliased meanwhile.
pub(super) unsafe fn bytes_mut<'a>(data: *mut c_void, len: u32) -> Result<&'a mut [u8]> {
    match (data.is_null(), len) {
        (_, 0) => Ok(&mut []),
        (true, _) => Err(Error::InvalidArg),
        // SAFETY: per the contract.
        (false, len) => Ok(unsafe { slice::from_raw_parts_mut(data as *mut u8, len as usize) }),
    }
}

/// The byte strings of a C batch: `count` pointers and `count` lengths
/// (`ptrs[i]` may be NULL where `lens[i]` is 0).
///
/// # Safety
/// Non-NULL `ptrs` and `lens` must be readable for `count` elements, and each
/// non-NULL `ptrs[i]` readable for `lens[i]` bytes, for `'a`.
pub(super) unsafe fn byte_slices<'a>(
    ptrs: *const *const c_void,
    lens: *const u32,
    count: u32,
) -> Result<Vec<&'a [u8]>> {
    // SAFETY: forwarded contract.
    let (ptrs, lens) = unsafe { (array(ptrs, count)?, array(lens, count)?) };
    ptrs.iter()
        .zip(lens)
        // SAFETY: forwarded contract, element by element.
        .map(|(&p, &len)| unsafe { bytes(p, len) })
        .collect()
}

/// An array of `count` elements at `ptr`, which must not be NULL.
///
/// # Safety
/// A non-NULL `ptr` must be readable for `count` elements for `'a`.
pub(super) unsafe fn array<'a, T>(ptr: *const T, count: u32) -> Result<&'a [T]> {
    if ptr.is_null() {
        return Err(Error::InvalidArg);
    }
    // SAFETY: per the contract.
    Ok(unsafe { slice::from_raw_parts(ptr, count as usize) })
}

/// A writable array of `count` elements at `ptr`, which must not be NULL.
///
/// # Safety
/// A non-NULL `ptr` must be writable for `count` elements for `'a`, and not be
/// aliased meanwhile.
pub(super) unsafe fn array_mut<'a, T>(ptr: *mut T, count: u32) -> Result<&'a mut [T]> {
    if ptr.is_null() {
        return Err(Error::InvalidArg);
    }
    // SAFETY: per the contract.
    Ok(unsafe { slice::from_raw_parts_mut(ptr, count as usize) })
}

/// A copy of the input struct at `ptr`, which must not be NULL (no Rust
/// reference to the caller's memory outlives the call).
///
/// # Safety
/// A non-NULL `ptr` must be readable for a `T`.
pub(super) unsafe fn input<T: Copy>(ptr: *const T) -> Result<T> {
    if ptr.is_null() {
        return Err(Error::InvalidArg);
    }
    // SAFETY: per the contract.
    Ok(unsafe { ptr.read() })
}

/// A checked, write-only output parameter.
pub(super) struct Out<T>(std::ptr::NonNull<T>);

impl<T> Out<T> {
    /// Stores the result (the caller's memory may have been uninitialised).
    pub(super) fn set(self, value: T) {
        // SAFETY: `out`'s contract made the pointer valid for writes of a T;
        // `write` does not read or drop the old contents.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// An output parameter, which must not be NULL. Checked up front and written
/// only on success.
///
/// # Safety
/// A non-NULL `ptr` must be valid for writes of a `T` until the returned
/// value is used.
pub(super) unsafe fn out<T>(ptr: *mut T) -> Result<Out<T>> {
    std::ptr::NonNull::new(ptr)
        .map(Out)
        .ok_or(Error::InvalidArg)
}
