//! The bytes other processes see: the legacy 200-byte header, the legacy
//! helper structs, and the extension block this library adds after the data
//! area.
//!
//! The three legacy structs are declared with plain C field types so that
//! cbindgen reproduces the legacy header field for field. Rust code never holds
//! a reference to them: `crate::segment::Header` reaches each control word
//! through a raw field pointer turned into an atomic. The extension block is
//! never seen by C, so it is declared with atomics directly and may be borrowed.

use crate::sync::atomic::{AtomicU32, AtomicU64};
use std::cell::UnsafeCell;
use std::mem::{align_of, offset_of, size_of};
use std::os::raw::c_char;

#[cfg(not(loom))]
use static_assertions::const_assert_eq;

use crate::sync::lock::SharedLock;

// Under `--cfg loom` the extension block's atomics are loom's (larger,
// never mapped: the models build the block on the heap), so the layout
// assertions below hold only in real builds, which check them; a loom build
// still evaluates both sides.
#[cfg(loom)]
macro_rules! const_assert_eq {
    ($left:expr, $right:expr $(,)?) => {
        const _: () = {
            let _ = ($left, $right);
        };
    };
}

/// `"SAGEBLKR"` read as a big-endian integer (`0x53414745424C4B52`); the first
/// eight bytes of every queue object.
pub const RING_BUFFER_MAGIC: u64 = 0x5341_4745_424C_4B52;

/// Size of the `name` field, terminating NUL included: names are 1..=63 bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Layout version this library creates: the legacy header, the data area,
/// then the extension block (locks, futex words, message counters).
pub const RING_BUFFER_VERSION: u32 = 2;

/// Layout version of objects made by the legacy C library: header and data
/// only. Such objects still open, with the legacy one-writer/one-reader
/// guarantee.
pub const RING_BUFFER_VERSION_LEGACY: u32 = 1;

/// Smallest data area; requested sizes are rounded up to a power of two and to
/// at least this.
pub const RING_BUFFER_MIN_SIZE: u32 = 1024;

/// Largest data area (2 GiB): the largest power of two a `uint32_t` holds.
pub const RING_BUFFER_MAX_SIZE: u32 = 0x8000_0000;

/// Bytes before the data area (`sizeof(ring_buffer_t)`).
pub const RING_BUFFER_HEADER_SIZE: u32 = 200;

/// Bytes of the 4-byte little-endian length prefix framing every message.
pub const RING_BUFFER_FRAME_PREFIX: u32 = 4;

/// *Medium* messages, of this many bytes or more that fit in the ring, go
/// into a free slot of the queue's pool, their descriptor through the ring,
/// when the producer's handle asks for it (`RB_OPEN_POOL_MEDIUM`,
/// `Options::pool_medium`; Python's `SageQueue` does). A consumer that takes
/// them with `ring_buffer_get_msg_lease` copies nothing; in the ring, it
/// would copy every byte out. With every slot busy, such a message waits
/// for one briefly, as a message longer than the ring does, then goes
/// through the ring.
pub const RING_BUFFER_POOLED_FROM: u32 = 0x1_0000;

/// The shared header at offset 0 of every queue object, byte for byte the
/// legacy `ring_buffer_t`. Handles returned by this library point here.
///
/// `head` and `tail` count bytes ever read and written; the read position is
/// `head & (buffer_size - 1)`. On a legacy (version 1) object they are the
/// authoritative counters. On a version-2 object the authoritative ones live
/// in the extension block after the data area, each on its side's own cache
/// line, and these two (with the byte totals) are a mirror that every legacy
/// call that moves bytes and every status or statistics call brings up to
/// date: a program that reads the fields after such a call sees what the
/// legacy library would have shown it. The message calls leave the mirror
/// alone, so that producers and consumers share no line of the header, and
/// so do legacy calls that find the ring full or empty (polling must not
/// take the line from the other side).
#[repr(C)]
pub struct RingBuffer {
    /// [`RING_BUFFER_MAGIC`].
    pub magic: u64,
    /// [`RING_BUFFER_VERSION_LEGACY`] or [`RING_BUFFER_VERSION`].
    pub version: u32,
    /// Size of the data area, a power of two, at least 1024.
    pub buffer_size: u32,
    /// Total bytes ever consumed (a mirror on version-2 objects, see above).
    pub head: u64,
    /// Total bytes ever published (a mirror on version-2 objects).
    pub tail: u64,
    /// Readers currently inside a legacy read call (1 while one moves bytes:
    /// the reader lock lets one in at a time).
    pub readers: u32,
    /// Writers currently inside a legacy write call (1 while one moves bytes).
    pub writers: u32,
    /// Reference count, guarded by `ref_mutex`.
    pub ref_count: u32,
    /// Processes that have the object mapped.
    pub process_count: u32,
    /// Process-shared (and, in objects this library creates, robust) mutex
    /// guarding `ref_count`.
    pub ref_mutex: libc::pthread_mutex_t,
    /// Queue name without the `/sage_ringbuf_` prefix, NUL-terminated.
    pub name: [c_char; MAX_NAME_LEN],
    /// Process that created the object.
    pub creator_pid: libc::pid_t,
    /// Bytes written since creation or the last `ring_buffer_reset_stats`.
    /// In objects this library creates, the value is derived from `tail` and
    /// stored here by every legacy and status call (one shared counter less
    /// for the message calls to bounce between cores).
    pub total_bytes_written: u64,
    /// Bytes read since creation or the last `ring_buffer_reset_stats`
    /// (derived from `head` likewise).
    pub total_bytes_read: u64,
    /// Unused, zero.
    pub padding: [c_char; 24],
    // The ring's `buffer_size` bytes follow at offset 200. C sees them as the
    // flexible array member `data`, which cbindgen.toml adds to the header
    // (`[export.body]`): Rust has no such member type, and a zero-length
    // array is not ISO C or C++.
}

/// A serialisable reference to a queue (legacy `ring_buffer_ref_t`), allocated
/// by `ring_buffer_get_ref` and freed by `ring_buffer_release_ref`.
#[repr(C)]
pub struct RingBufferRef {
    /// Queue name, NUL-terminated.
    pub name: [c_char; MAX_NAME_LEN],
    /// The queue's `buffer_size`.
    pub size: u32,
    /// Whether the holder means to remove the queue when done with it.
    pub auto_cleanup: bool,
    /// Process that created the queue.
    pub creator_pid: libc::pid_t,
}

/// Legacy statistics (`ring_buffer_stats_t`), filled by `ring_buffer_get_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingBufferStats {
    pub buffer_size: u32,
    pub available_read: u32,
    pub available_write: u32,
    pub readers: u32,
    pub writers: u32,
    pub ref_count: u32,
    pub total_bytes_written: u64,
    pub total_bytes_read: u64,
    /// `available_read / buffer_size`.
    pub utilization: f64,
}

/// Everything `ring_buffer_get_stats` reports, plus the message-level and
/// synchronisation counters of this library (`ring_buffer_get_stats_ex`).
/// Counters of the extension block read as 0 on a legacy (version 1) object.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingBufferStatsEx {
    /// Size of the data area in bytes.
    pub buffer_size: u32,
    /// Bytes queued now, 4-byte length prefixes included.
    pub available_read: u32,
    /// Bytes free now.
    pub available_write: u32,
    /// Readers inside a legacy read call right now.
    pub readers: u32,
    /// Writers inside a legacy write call right now.
    pub writers: u32,
    /// The legacy reference count (`ring_buffer_get_ref`/`_release_ref`).
    pub ref_count: u32,
    /// Bytes written since creation or the last reset, prefixes included.
    pub total_bytes_written: u64,
    /// Bytes read since creation or the last reset, prefixes included.
    pub total_bytes_read: u64,
    /// `available_read / buffer_size`.
    pub utilization: f64,
    /// Layout version of the object (1 legacy, 2 this library).
    pub version: u32,
    /// Processes that have the queue open right now (`flock` liveness).
    pub attached_processes: u32,
    /// Messages ever published.
    pub messages_in: u64,
    /// Messages ever consumed.
    pub messages_out: u64,
    /// Messages queued now.
    pub messages_queued: u64,
    /// Producers asleep waiting for space right now.
    pub sleeping_producers: u32,
    /// Consumers asleep waiting for messages right now.
    pub sleeping_consumers: u32,
    /// Times a producer went to sleep because the ring was full.
    pub producer_waits: u64,
    /// Times a consumer went to sleep because the ring was empty.
    pub consumer_waits: u64,
    /// Futex wake-ups issued.
    pub wakeups: u64,
    /// Locks recovered from a process that died holding them.
    pub owner_died_recoveries: u64,
    /// Most bytes ever queued at once (since the last reset).
    pub high_water_bytes: u64,
    /// Messages marked done with `ring_buffer_task_done`.
    pub tasks_done: u64,
    /// 1 once `ring_buffer_shutdown` was called.
    pub shutdown: u32,
    /// Always 0 (keeps the size a multiple of 8).
    pub reserved: u32,
}

// The legacy ABI, pinned (docs/legacy-abi.md, x86_64 glibc).
const_assert_eq!(size_of::<libc::pthread_mutex_t>(), 40);
const_assert_eq!(offset_of!(RingBuffer, magic), 0);
const_assert_eq!(offset_of!(RingBuffer, version), 8);
const_assert_eq!(offset_of!(RingBuffer, buffer_size), 12);
const_assert_eq!(offset_of!(RingBuffer, head), 16);
const_assert_eq!(offset_of!(RingBuffer, tail), 24);
const_assert_eq!(offset_of!(RingBuffer, readers), 32);
const_assert_eq!(offset_of!(RingBuffer, writers), 36);
const_assert_eq!(offset_of!(RingBuffer, ref_count), 40);
const_assert_eq!(offset_of!(RingBuffer, process_count), 44);
const_assert_eq!(offset_of!(RingBuffer, ref_mutex), 48);
const_assert_eq!(offset_of!(RingBuffer, name), 88);
const_assert_eq!(offset_of!(RingBuffer, creator_pid), 152);
const_assert_eq!(offset_of!(RingBuffer, total_bytes_written), 160);
const_assert_eq!(offset_of!(RingBuffer, total_bytes_read), 168);
const_assert_eq!(offset_of!(RingBuffer, padding), 176);
const_assert_eq!(size_of::<RingBuffer>(), RING_BUFFER_HEADER_SIZE as usize);
const_assert_eq!(align_of::<RingBuffer>(), 8);

const_assert_eq!(offset_of!(RingBufferRef, name), 0);
const_assert_eq!(offset_of!(RingBufferRef, size), 64);
const_assert_eq!(offset_of!(RingBufferRef, auto_cleanup), 68);
const_assert_eq!(offset_of!(RingBufferRef, creator_pid), 72);
const_assert_eq!(size_of::<RingBufferRef>(), 76);
const_assert_eq!(align_of::<RingBufferRef>(), 4);

const_assert_eq!(offset_of!(RingBufferStats, buffer_size), 0);
const_assert_eq!(offset_of!(RingBufferStats, available_read), 4);
const_assert_eq!(offset_of!(RingBufferStats, available_write), 8);
const_assert_eq!(offset_of!(RingBufferStats, readers), 12);
const_assert_eq!(offset_of!(RingBufferStats, writers), 16);
const_assert_eq!(offset_of!(RingBufferStats, ref_count), 20);
const_assert_eq!(offset_of!(RingBufferStats, total_bytes_written), 24);
const_assert_eq!(offset_of!(RingBufferStats, total_bytes_read), 32);
const_assert_eq!(offset_of!(RingBufferStats, utilization), 40);
const_assert_eq!(size_of::<RingBufferStats>(), 48);
const_assert_eq!(align_of::<RingBufferStats>(), 8);

// The extended stats start with the legacy ones, so a caller may read the
// first 48 bytes as a `ring_buffer_stats_t`.
const_assert_eq!(offset_of!(RingBufferStatsEx, utilization), 40);
const_assert_eq!(offset_of!(RingBufferStatsEx, version), 48);
const_assert_eq!(size_of::<RingBufferStatsEx>(), 144);

/// `"SAGEXT04"`: first word of the extension block of a version-2 object.
/// `"SAGEXT02"` (0x...3032) was the 1.0 block, whose positions lived in the
/// legacy header: such an object is refused as incompatible (its real size
/// differs too, so `open` refuses it before mapping), never misread.
/// `"SAGEXT03"` (0x...3033) had this block's size and positions but glibc
/// robust mutexes where the [`SharedLock`]s now are: refused as
/// incompatible by its magic, never misread.
pub(crate) const EXTENSION_MAGIC: u64 = 0x5341_4745_5854_3034;

/// Where the extension block of a version-2 object with this data-area size
/// starts: after the data area, rounded up to a cache line so that the
/// producer- and consumer-owned parts below do not share lines.
pub(crate) const fn extension_offset(buffer_size: u32) -> u64 {
    (RING_BUFFER_HEADER_SIZE as u64 + buffer_size as u64 + 63) & !63
}

/// Offset of the extension block's flags word ([`Identity::flags`]) in a
/// version-2 object with this data-area size.
pub(crate) const fn flags_offset(buffer_size: u32) -> u64 {
    extension_offset(buffer_size)
        + offset_of!(Extension, identity) as u64
        + offset_of!(Identity, flags) as u64
}

/// Exact size of a well-formed object of `version` with this data-area size,
/// or `None` for a version this library does not know.
pub(crate) const fn object_size(version: u32, buffer_size: u32) -> Option<u64> {
    match version {
        RING_BUFFER_VERSION_LEGACY => Some(RING_BUFFER_HEADER_SIZE as u64 + buffer_size as u64),
        RING_BUFFER_VERSION => Some(extension_offset(buffer_size) + size_of::<Extension>() as u64),
        _ => None,
    }
}

/// The extension block of a version-2 object. Every field is an atomic or an
/// `UnsafeCell`, so a shared reference to it is sound although other
/// processes write it concurrently.
///
/// Cache lines, and who touches them per message while the queue streams:
///
/// | line | written by | read by the other side |
/// |---|---|---|
/// | `identity` | creation, statistics resets, `task_done` | read-only in the hot path |
/// | `signals` | sleepers and their wakers only | the wake check, a plain load |
/// | `writer` (2 lines) | the writer-lock holder | no (stats callers only) |
/// | `reader` (2 lines) | the reader-lock holder | no (stats callers only) |
/// | `tail` (and a line of padding) | the writer-lock holder, once per publication | when the consumers' cached `tail` says "empty" |
/// | `head` (and a line of padding) | the reader-lock holder, once per publication | when the producers' cached `head` says "full" |
///
/// So a message moves between the cores the lines of its bytes and one
/// position line, and the other position line only once per ring's worth
/// of traffic, as in a lock-free single-producer single-consumer ring.
#[repr(C, align(64))]
#[cfg_attr(loom, derive(Default))]
pub(crate) struct Extension {
    pub identity: Identity,
    pub signals: Signals,
    /// State owned by whoever holds the writer lock.
    pub writer: Side,
    /// State owned by whoever holds the reader lock.
    pub reader: Side,
    /// Total bytes ever published: the authoritative `tail`.
    pub tail: Position,
    /// Total bytes ever consumed: the authoritative `head`.
    pub head: Position,
}

/// One side's published position, alone on its cache line: stored (Release)
/// only by that side's lock holder after the bytes are copied, loaded
/// (Acquire) by the other side when its cached copy is exhausted.
///
/// Followed by a line of padding: x86 cores fetch lines in aligned pairs
/// (the adjacent-line prefetcher), so `tail` and `head` in one 128-byte pair
/// would still move between the cores together (crossbeam's `CachePadded`
/// pads to 128 bytes on x86_64 for the same reason). No code reads the
/// padding; it is an `UnsafeCell` because other processes may write it.
#[repr(C, align(64))]
pub(crate) struct Position {
    /// std's atomic even under `--cfg loom`: `crate::ring::Ring` reaches the
    /// legacy header's counters and these through one type, and the loom
    /// models keep loom words of their own for the positions.
    pub pos: std::sync::atomic::AtomicU64,
    _pad: UnsafeCell<[u8; 120]>,
}

/// [`Identity::flags`] bit, set (for good) by the first legacy raw write that
/// leaves the byte stream between two frames (a prefix written apart from its
/// payload, bytes that were never framed). Until then every write put whole
/// frames, and a legacy consuming read must take whole frames too (or a
/// prefix, then the rest of its frame), so that consumers racing with the
/// legacy `peek(4)`-then-`read(4 + L)` pattern can never split or merge
/// messages. Once set, the stream is plain bytes and legacy reads are not
/// checked against frames (the legacy one-consumer contract).
pub(crate) const FLAG_RAW_STREAM: u32 = 1;

/// [`Identity::flags`] bit, set (for good) by an opener whose pid namespace
/// differs from the creator's, or is unknown (no `/proc`). Thread ids in a
/// lock word are then numbers of another namespace, which `/proc` here
/// cannot judge: a waiter never takes a lock over from an owner it cannot
/// see (`crate::sync::owner`), so that no live owner is ever robbed; a dead
/// one is waited for (calls with a deadline time out).
pub(crate) const FLAG_MIXED_PID_NS: u32 = 2;

/// [`Identity::flags`] bit, set (for good) by this library's removal of the
/// queue's name, just before it unlinks it (`crate::object::unlink`). The
/// names of the queue's pool slots go with it and may then name the slots
/// of a new queue of that name: until this is set, a process that has a
/// slot file open takes it to be still named (`crate::pool`).
pub(crate) const FLAG_REMOVED: u32 = 4;

/// Written once at creation, read at open to validate the block.
#[repr(C, align(64))]
#[cfg_attr(loom, derive(Default))]
pub(crate) struct Identity {
    /// [`EXTENSION_MAGIC`].
    pub magic: AtomicU64,
    /// `size_of::<Extension>()` of the creator.
    pub size: AtomicU32,
    /// [`FLAG_RAW_STREAM`], [`FLAG_MIXED_PID_NS`], [`FLAG_REMOVED`], or 0.
    pub flags: AtomicU32,
    /// `task_done` calls so far; `messages_in - tasks_done` tasks are open.
    pub tasks_done: AtomicU64,
    /// `tail` and `head` at the last statistics reset: the legacy byte
    /// totals are `tail - stats_base_tail` and `head - stats_base_head`,
    /// computed when asked instead of two shared counters bumped by every
    /// operation (which would bounce one more cache line per message).
    pub stats_base_tail: AtomicU64,
    pub stats_base_head: AtomicU64,
    /// The creator's pid namespace (inode of `/proc/self/ns/pid`; 0 when
    /// unknown), compared by every opener (see [`FLAG_MIXED_PID_NS`]).
    pub pid_ns: AtomicU64,
}

/// Futex words and sleeper counts. Read by every producer and consumer after
/// each operation, written only when someone goes to sleep or is woken, so
/// this line stays shared in every cache while the queue streams.
#[repr(C, align(64))]
#[cfg_attr(loom, derive(Default))]
pub(crate) struct Signals {
    /// Bumped by producers (when consumers sleep) and by shutdown.
    pub data_seq: AtomicU32,
    /// Consumers asleep (or about to sleep) on `data_seq`.
    pub consumer_sleepers: AtomicU32,
    /// Bumped by consumers (when producers sleep) and by shutdown.
    pub space_seq: AtomicU32,
    /// Producers asleep (or about to sleep) on `space_seq`.
    pub producer_sleepers: AtomicU32,
    /// Bumped by `task_done` when it completes the last open task.
    pub join_seq: AtomicU32,
    /// Callers asleep in `join`.
    pub join_sleepers: AtomicU32,
    /// 1 once the queue is shut down; never goes back to 0.
    pub shutdown: AtomicU32,
    /// Set by a consumer about to sleep, cleared by the first producer that
    /// wakes it: one sleep costs at most one wake-up system call, however
    /// many messages are published before the sleeper actually runs.
    pub data_wanted: AtomicU32,
    /// The same for producers waiting for room ...
    pub space_wanted: AtomicU32,
    /// ... and for callers of `join`.
    pub join_wanted: AtomicU32,
    /// Futex wake-ups issued (statistics).
    pub wakeups: AtomicU64,
}

/// One side (producers or consumers) of the queue. Everything but the wait
/// counter is written only by the holder of `lock`.
#[repr(C, align(64))]
pub(crate) struct Side {
    /// The library's own futex lock (`crate::sync::lock`): a waiter that
    /// finds its owner dead, or its word naming no live owner, takes it
    /// over and repairs this side from the journal below.
    pub lock: SharedLock,
    /// Unused, zero: the rest of the 40 bytes the 1.0 layout's pthread mutex
    /// took, so that every field below stays where it was. No code reads it;
    /// an `UnsafeCell` because other processes may write it.
    pub lock_reserved: UnsafeCell<[u8; 36]>,
    /// This side's own counter (`tail` for the writer, `head` for the
    /// reader) as it last published it. Only the lock holder moves the
    /// counter, so this copy is exact: a header counter that differs from it
    /// was written by somebody else, and the queue is reported corrupt.
    /// Repaired from the header after a crash.
    pub own: AtomicU64,
    /// Whole messages this side has published (writer) or consumed (reader).
    pub messages: AtomicU64,
    /// Framing tracker (see [`crate::frame::Tracker`]), so that raw legacy
    /// writes and reads count messages too.
    pub track: AtomicU64,
    /// Journal of the operation in progress: the `tail`/`head` it will
    /// publish, then the counters that go with it. Written before the
    /// publication, so a locker that finds the owner dead can tell whether the
    /// publication happened and make the counters agree with it.
    pub journal_pos: AtomicU64,
    pub journal_messages: AtomicU64,
    pub journal_track: AtomicU64,
    /// Times a member of this side went to sleep (statistics).
    pub waits: AtomicU64,
    /// Times this side's lock was recovered from a dead owner.
    pub recoveries: AtomicU64,
    /// Writer only: most bytes ever queued at once.
    pub high_water: AtomicU64,
    /// The other side's position as this side last read it (`head` for the
    /// writer, `tail` for the reader): a lower bound of the real one, which
    /// only grows. Room (messages) up to it needs no look at the other
    /// side's line; only when it says full (empty) is the real position
    /// loaded and this copy refreshed. Written only by the lock holder.
    pub peer: AtomicU64,
}

/// Model-checking builds only: a position at 0, for loom's models.
#[cfg(loom)]
impl Default for Position {
    fn default() -> Position {
        Position {
            pos: Default::default(),
            _pad: UnsafeCell::new([0; 120]),
        }
    }
}

/// Model-checking builds only: a fresh side for loom's models (a free lock,
/// as in a new object).
#[cfg(loom)]
impl Default for Side {
    fn default() -> Side {
        Side {
            lock: SharedLock::new(),
            lock_reserved: UnsafeCell::new([0; 36]),
            own: AtomicU64::default(),
            messages: AtomicU64::default(),
            track: AtomicU64::default(),
            journal_pos: AtomicU64::default(),
            journal_messages: AtomicU64::default(),
            journal_track: AtomicU64::default(),
            waits: AtomicU64::default(),
            recoveries: AtomicU64::default(),
            high_water: AtomicU64::default(),
            peer: AtomicU64::default(),
        }
    }
}

const_assert_eq!(size_of::<Identity>(), 64);
const_assert_eq!(size_of::<Signals>(), 64);
const_assert_eq!(size_of::<SharedLock>(), 4);
const_assert_eq!(size_of::<Side>(), 128);
const_assert_eq!(offset_of!(Extension, signals), 64);
const_assert_eq!(offset_of!(Extension, writer), 128);
const_assert_eq!(offset_of!(Extension, reader), 256);
const_assert_eq!(size_of::<Position>(), 128);
const_assert_eq!(offset_of!(Side, lock), 0);
const_assert_eq!(offset_of!(Side, own), 40);
const_assert_eq!(offset_of!(Side, messages), 48);
const_assert_eq!(offset_of!(Side, peer), 112);
const_assert_eq!(offset_of!(Extension, tail), 384);
const_assert_eq!(offset_of!(Extension, head), 512);
const_assert_eq!(size_of::<Extension>(), 640);
