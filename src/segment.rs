//! A typed view of one queue object's bytes, wherever they live (a shared
//! mapping, or a heap buffer in the fuzz and model tests).
//!
//! The header's control words are reached through raw field pointers turned
//! into atomics, never through a Rust reference to the plain-data struct.

use std::marker::PhantomData;
use std::mem::size_of;
use std::os::raw::c_char;
use std::ptr::{self, addr_of_mut, NonNull};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::error::{Error, Result};
use crate::layout::{
    extension_offset, Extension, RingBuffer, EXTENSION_MAGIC, FLAG_MIXED_PID_NS, MAX_NAME_LEN,
    RING_BUFFER_HEADER_SIZE, RING_BUFFER_MAGIC, RING_BUFFER_VERSION, RING_BUFFER_VERSION_LEGACY,
};
use crate::name::QueueName;
use crate::object::FileId;
use crate::pool::Pool;
use crate::ring::Ring;
use crate::sync::mutex;

/// Accessors for the legacy header's fields.
#[derive(Clone, Copy)]
pub(crate) struct Header<'a> {
    ptr: NonNull<RingBuffer>,
    _mapping: PhantomData<&'a ()>,
}

macro_rules! atomic_field {
    ($(#[$doc:meta])* $name:ident: $atomic:ty) => {
        $(#[$doc])*
        pub(crate) fn $name(self) -> &'a $atomic {
            // SAFETY: the header is mapped, 8-aligned and valid for 'a
            // (contract of `View::new`), so the field is aligned for its
            // atomic type; other processes access it only atomically too.
            unsafe { <$atomic>::from_ptr(addr_of_mut!((*self.ptr.as_ptr()).$name)) }
        }
    };
}

impl<'a> Header<'a> {
    atomic_field!(magic: AtomicU64);
    atomic_field!(version: AtomicU32);
    atomic_field!(buffer_size: AtomicU32);
    atomic_field!(head: AtomicU64);
    atomic_field!(tail: AtomicU64);
    atomic_field!(readers: AtomicU32);
    atomic_field!(writers: AtomicU32);
    atomic_field!(ref_count: AtomicU32);
    atomic_field!(process_count: AtomicU32);
    atomic_field!(creator_pid: AtomicI32);
    atomic_field!(total_bytes_written: AtomicU64);
    atomic_field!(total_bytes_read: AtomicU64);

    /// The process-shared mutex guarding `ref_count`.
    pub(crate) fn ref_mutex(self) -> *mut libc::pthread_mutex_t {
        // SAFETY: in bounds of the mapped header (contract of `View::new`).
        unsafe { addr_of_mut!((*self.ptr.as_ptr()).ref_mutex) }
    }

    /// The handle the C API gives out: the header's address.
    pub(crate) fn as_ptr(self) -> *mut RingBuffer {
        self.ptr.as_ptr()
    }

    /// A copy of the name field, always NUL-terminated.
    pub(crate) fn name_field(self) -> [c_char; MAX_NAME_LEN] {
        let mut name = [0 as c_char; MAX_NAME_LEN];
        // SAFETY: the field is 64 bytes inside the mapped header; the copy
        // goes to a local array.
        unsafe {
            ptr::copy_nonoverlapping(
                addr_of_mut!((*self.ptr.as_ptr()).name) as *const c_char,
                name.as_mut_ptr(),
                MAX_NAME_LEN - 1,
            )
        };
        name
    }
}

/// Everything the queue operations need to reach one object's bytes.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) header: Header<'a>,
    pub(crate) ring: Ring<'a>,
    /// The extension block; `None` for a legacy (version 1) object.
    pub(crate) ext: Option<&'a Extension>,
    /// The queue's name, which locates its side objects (messages longer
    /// than the ring, see `crate::side`); `None` for a bare view of bytes
    /// (tests), which then refuses such messages.
    pub(crate) name: Option<&'a QueueName>,
    /// The object file, whose attached processes are the only possible
    /// owners of its locks (`crate::sync::owner`); `None` for a bare view of
    /// bytes, whose locks only this process's threads can hold.
    pub(crate) file: Option<FileId>,
    /// This process's slots of the queue's pool (`crate::pool`); `None` for
    /// a bare view of bytes.
    pub(crate) pool: Option<&'a Pool>,
    /// This handle's patience as a consumer (`crate::ops::wait`): how long
    /// its waits for messages yield before they sleep. Process-local; `None`
    /// for a bare view of bytes (no patience).
    pub(crate) patience: Option<&'a std::sync::atomic::AtomicU64>,
}

impl<'a> View<'a> {
    /// # Safety
    /// `base` must be 64-byte aligned and valid for reads and writes of
    /// `object_size(version, buffer_size)` bytes for `'a`; `buffer_size` must
    /// be a power of two; `version` must be 1 or 2. Other processes may write
    /// the bytes concurrently; every access below copes with that.
    pub(crate) unsafe fn new(base: *mut u8, version: u32, buffer_size: u32) -> View<'a> {
        debug_assert!(version == RING_BUFFER_VERSION || version == RING_BUFFER_VERSION_LEGACY);
        let ptr = NonNull::new(base as *mut RingBuffer).expect("mapping is not NULL");
        let header = Header {
            ptr,
            _mapping: PhantomData,
        };
        // SAFETY: the data area follows the 200-byte header and is
        // `buffer_size` long (contract above).
        let data = unsafe { base.add(RING_BUFFER_HEADER_SIZE as usize) };
        let ext = (version == RING_BUFFER_VERSION).then(|| {
            // SAFETY: a version-2 object holds the block at this 64-aligned
            // offset (contract above); all its fields are atomics or
            // UnsafeCell, so a shared reference is sound under concurrent
            // writes by other processes.
            unsafe { &*(base.add(extension_offset(buffer_size) as usize) as *const Extension) }
        });
        // The authoritative counters: the extension block's position lines
        // on a version-2 object (the header's are a mirror there, see
        // `RingBuffer`), the header's on a legacy one.
        let (head, tail) = match ext {
            Some(e) => (&e.head.pos, &e.tail.pos),
            None => (header.head(), header.tail()),
        };
        // SAFETY: as above; the counters live in the mapping.
        let ring = unsafe { Ring::new(data, buffer_size, head, tail) };
        View {
            header,
            ring,
            ext,
            name: None,
            file: None,
            pool: None,
            patience: None,
        }
    }

    pub(crate) fn buffer_size(&self) -> u32 {
        self.ring.size() as u32
    }

    pub(crate) fn version(&self) -> u32 {
        if self.ext.is_some() {
            RING_BUFFER_VERSION
        } else {
            RING_BUFFER_VERSION_LEGACY
        }
    }

    /// Checks the extension block of a version-2 object (the header was
    /// checked before mapping).
    pub(crate) fn validate_extension(&self) -> Result<()> {
        match self.ext {
            Some(ext)
                if ext.identity.magic.load(Relaxed) != EXTENSION_MAGIC
                    || ext.identity.size.load(Relaxed) as usize != size_of::<Extension>() =>
            {
                Err(Error::Incompatible)
            }
            _ => Ok(()),
        }
    }

    /// Called by every opener of a version-2 object: an opener of another
    /// pid namespace than the creator's (or of one it cannot know) marks the
    /// object [`FLAG_MIXED_PID_NS`] before it can take any lock.
    pub(crate) fn note_pid_namespace(&self) {
        if let Some(ext) = self.ext {
            let mine = crate::sync::owner::pid_namespace();
            if mine == 0 || mine != ext.identity.pid_ns.load(Relaxed) {
                // Published to lock waiters by this process's AcqRel lock
                // acquisitions (see `crate::sync::owner`).
                ext.identity.flags.fetch_or(FLAG_MIXED_PID_NS, Relaxed);
            }
        }
    }
}

/// Writes the header and extension block of a new version-2 object.
///
/// # Safety
/// `base` must satisfy the contract of [`View::new`] for version 2, the bytes
/// must be zero, and no other thread or process may see them yet.
pub(crate) unsafe fn initialise(
    base: *mut u8,
    buffer_size: u32,
    name: &QueueName,
    creator_pid: libc::pid_t,
) -> std::io::Result<()> {
    // SAFETY: forwarded contract.
    let view = unsafe { View::new(base, RING_BUFFER_VERSION, buffer_size) };
    let hdr = view.header;
    hdr.version().store(RING_BUFFER_VERSION, Relaxed);
    hdr.buffer_size().store(buffer_size, Relaxed);
    hdr.ref_count().store(1, Relaxed);
    hdr.process_count().store(1, Relaxed);
    hdr.creator_pid().store(creator_pid, Relaxed);
    let field = name.to_field();
    // SAFETY: nobody else sees the object yet; the name field is 64 bytes.
    unsafe {
        ptr::copy_nonoverlapping(
            field.as_ptr(),
            addr_of_mut!((*hdr.as_ptr()).name) as *mut c_char,
            MAX_NAME_LEN,
        );
        mutex::init_robust(hdr.ref_mutex())?;
    }
    let ext = view.ext.expect("version 2 has an extension");
    for side in [&ext.writer, &ext.reader] {
        side.lock.init();
    }
    ext.identity
        .size
        .store(size_of::<Extension>() as u32, Relaxed);
    let pid_ns = crate::sync::owner::pid_namespace();
    ext.identity.pid_ns.store(pid_ns, Relaxed);
    if pid_ns == 0 {
        ext.identity.flags.store(FLAG_MIXED_PID_NS, Relaxed);
    }
    ext.identity.magic.store(EXTENSION_MAGIC, Relaxed);
    // The magic goes last: a header with the magic is a complete header.
    hdr.magic().store(RING_BUFFER_MAGIC, Relaxed);
    Ok(())
}
