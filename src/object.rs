//! The POSIX shared-memory object behind a queue: creating, validating,
//! mapping and removing it, and telling which processes have it open.
//!
//! Liveness is the kernel's business, not a counter's: every handle holds a
//! shared `flock` on the object for as long as it is open, and the kernel
//! drops it when the process dies. "Nobody uses it" is then "an exclusive
//! `flock` succeeds".

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::layout::{
    flags_offset, object_size, FLAG_REMOVED, RING_BUFFER_HEADER_SIZE, RING_BUFFER_MAGIC,
    RING_BUFFER_MAX_SIZE, RING_BUFFER_MIN_SIZE, RING_BUFFER_VERSION,
};
use crate::name::{QueueName, SHM_DIR};
use crate::pool::{Pool, QueueObject};
use crate::segment::{self, View};

/// Identity of an object file, to tell "the object I mapped" from "whatever
/// has this name now".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity `st` describes.
    pub(crate) fn of(st: &libc::stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    /// Whether this is the file of device `major:minor`, inode `ino` (as
    /// `/proc` shows files).
    pub(crate) fn is(&self, major: u64, minor: u64, ino: u64) -> bool {
        (
            libc::major(self.dev) as u64,
            libc::minor(self.dev) as u64,
            self.ino,
        ) == (major, minor, ino)
    }

    #[cfg(test)]
    pub(crate) fn from_parts(major: u32, minor: u32, ino: u64) -> FileId {
        FileId {
            dev: libc::makedev(major, minor),
            ino,
        }
    }
}

pub(crate) fn fstat(fd: libc::c_int) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage for a `struct stat`; fstat fills it on
    // success, and it is only read then.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(Error::last_os());
    }
    // SAFETY: initialised by the successful fstat.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn lstat(path: &CStr) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: as in `fstat`; `path` is NUL-terminated.
    if unsafe { libc::lstat(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(Error::last_os());
    }
    // SAFETY: initialised by the successful lstat.
    Ok(unsafe { st.assume_init() })
}

/// `flock(2)`, retried when a signal interrupts it.
pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Longest an open waits for another process's exclusive `flock` on the
/// object. This library holds it only inside `remove_if_unused`, for a few
/// system calls; anything longer is a foreign (or stopped) process.
const OPEN_LOCK_WAIT: Duration = Duration::from_secs(1);

/// Takes a shared `flock`, retrying a non-blocking attempt with a growing
/// pause (50 us up to 10 ms) until `limit` has passed: then `Timeout`. A
/// blocking `flock` could wait for ever, and no signal but a fatal one
/// would end it.
pub(crate) fn lock_shared_bounded(file: &File, limit: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        match flock(file, libc::LOCK_SH | libc::LOCK_NB) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() >= limit {
            return Err(Error::Timeout);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Opens `path` read-write (or read-only), never through a symbolic link,
/// and never waiting: `O_NONBLOCK` keeps a FIFO planted at the path from
/// blocking the open (it is refused later as not a regular file).
pub(crate) fn open_path(path: &CStr, write: bool) -> Result<File> {
    let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
    let flags = access | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: `path` is NUL-terminated; the flags create nothing.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::last_os());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A new, unnamed (`O_TMPFILE`) file in /dev/shm with exactly the
/// permission bits `mode` (`fchmod`, whatever the umask): what every object
/// this library makes starts as, to be linked under its name once complete.
pub(crate) fn unnamed_object(mode: u32) -> Result<File> {
    let dir = c"/dev/shm";
    debug_assert_eq!(dir.to_bytes(), SHM_DIR.as_bytes());
    // SAFETY: `dir` is NUL-terminated; O_TMPFILE creates an unnamed file.
    let fd = unsafe {
        libc::open(
            dir.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(Error::last_os());
    }
    // SAFETY: fresh descriptor, owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: fchmod on our descriptor.
    if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 {
        return Err(Error::last_os());
    }
    Ok(file)
}

/// Gives the unnamed file `file` (from [`unnamed_object`]) the name `path`;
/// `Exists` if the name is taken (`linkat` never replaces a name, exactly as
/// `O_CREAT|O_EXCL` would refuse it).
pub(crate) fn link_unnamed(file: &File, path: &CStr) -> Result<()> {
    let fd_path = format!("/proc/self/fd/{}\0", file.as_raw_fd());
    // SAFETY: both paths are NUL-terminated; linkat creates a new name and
    // never replaces an existing one.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            fd_path.as_ptr() as *const libc::c_char,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc != 0 {
        return Err(Error::last_os());
    }
    Ok(())
}

/// Rounds a requested size the legacy way: next power of two, at least 1024.
/// `None` when that exceeds [`RING_BUFFER_MAX_SIZE`].
pub(crate) fn buffer_size_for(requested: u32) -> Option<u32> {
    let size = requested
        .max(RING_BUFFER_MIN_SIZE)
        .checked_next_power_of_two()?;
    (size <= RING_BUFFER_MAX_SIZE).then_some(size)
}

/// How to create or open an object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Access {
    /// Permission bits for a new object (applied with `fchmod`, so the umask
    /// does not matter).
    pub(crate) mode: u32,
    /// Open objects owned by another user instead of refusing them.
    pub(crate) allow_foreign_owner: bool,
    /// Put long messages into the queue's pool (`crate::pool`).
    pub(crate) pool: bool,
    /// Put medium messages there too (`Options::pool_medium`).
    pub(crate) pool_medium: bool,
}

/// A mapped, validated queue object. Dropping it unmaps the object and
/// closes the descriptor, which releases this handle's `flock`.
pub(crate) struct Mapping {
    /// Shared with the pool (weakly, see `crate::pool::QueueObject`).
    map: Arc<MmapRaw>,
    /// Kept open for the shared `flock` it holds: it marks this process as
    /// attached until the mapping is dropped.
    #[allow(dead_code)]
    file: File,
    name: QueueName,
    version: u32,
    buffer_size: u32,
    id: FileId,
    /// This process's slots of the queue's pool.
    pool: Pool,
    /// This handle's patience as a consumer (see `View::patience`).
    patience: std::sync::atomic::AtomicU64,
}

impl Mapping {
    /// Creates a new object named `name`, failing with `Exists` if there is
    /// one. The object is built unnamed (`O_TMPFILE`) and only linked under
    /// its name once complete, so nobody ever opens a half-initialised queue
    /// and a creator killed half-way leaves nothing behind. The link fails
    /// with `EEXIST` if the name is taken, exactly as `O_CREAT|O_EXCL` would.
    pub(crate) fn create(name: &QueueName, buffer_size: u32, access: Access) -> Result<Mapping> {
        let file = unnamed_object(access.mode)?;
        let fd = file.as_raw_fd();
        let size = object_size(RING_BUFFER_VERSION, buffer_size).expect("known version");
        file.set_len(size)?;
        // Reserve every page now: on a full tmpfs this fails with ENOSPC here
        // instead of a SIGBUS on some later write.
        // SAFETY: posix_fallocate on our descriptor.
        match unsafe { libc::posix_fallocate(fd, 0, size as libc::off_t) } {
            0 | libc::EOPNOTSUPP => {}
            e => return Err(Error::from_errno(e)),
        }
        let map = Arc::new(MmapOptions::new().len(size as usize).map_raw(&file)?);
        // SAFETY: `map` is a fresh, zero-filled, page-aligned mapping of the
        // whole object, which nobody else can reach before the link below.
        unsafe {
            segment::initialise(map.as_mut_ptr(), buffer_size, name, std::process::id() as _)?
        };
        flock(&file, libc::LOCK_SH)?;
        link_unnamed(&file, name.path())?;
        let id = FileId::of(&fstat(fd)?);
        Ok(Mapping {
            file,
            name: name.clone(),
            version: RING_BUFFER_VERSION,
            buffer_size,
            id,
            pool: Pool::new(
                access.pool,
                access.pool_medium,
                queue_object(&map, RING_BUFFER_VERSION, buffer_size),
            ),
            map,
            patience: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Opens and validates an existing object: real size (`fstat`) equal to
    /// what the header's version and size imply, magic, version, power-of-two
    /// size, owner. Anything else is refused before a byte is mapped.
    pub(crate) fn open(name: &QueueName, access: Access) -> Result<Mapping> {
        let file = open_path(name.path(), true)?;
        // Who owns it and what it is, before any call that can wait: an
        // object of another user is refused at once, whatever it does with
        // its locks.
        let st = fstat(file.as_raw_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::Incompatible);
        }
        // SAFETY: geteuid cannot fail.
        if st.st_uid != unsafe { libc::geteuid() } && !access.allow_foreign_owner {
            return Err(Error::Permission);
        }
        // Shared lock next: it marks us attached, and it waits out a
        // concurrent `remove_if_unused` that holds the exclusive lock for a
        // moment. A process that holds the exclusive lock longer is not one
        // of ours: give up after a bounded wait instead of hanging.
        lock_shared_bounded(&file, OPEN_LOCK_WAIT)?;
        let st = fstat(file.as_raw_fd())?;
        if st.st_nlink == 0 {
            // Removed between our open and our lock.
            return Err(Error::NotFound);
        }
        let (version, buffer_size) = geometry(&file, &st)?;
        let map = Arc::new(MmapOptions::new().len(st.st_size as usize).map_raw(&file)?);
        let id = FileId::of(&st);
        let mapping = Mapping {
            file,
            name: name.clone(),
            version,
            buffer_size,
            id,
            pool: Pool::new(
                access.pool,
                access.pool_medium,
                queue_object(&map, version, buffer_size),
            ),
            map,
            patience: std::sync::atomic::AtomicU64::new(0),
        };
        mapping.view().validate_extension()?;
        mapping.view().note_pid_namespace();
        mapping.view().header.process_count().fetch_add(1, Relaxed);
        // A program that opened the queue reads the legacy header's counters
        // as of now (a version-2 object keeps them as a mirror).
        // (A corrupt queue is reported by the first call that uses it.)
        let _ = mapping.view().sync_legacy_header();
        Ok(mapping)
    }

    /// Typed access to the mapped bytes.
    pub(crate) fn view(&self) -> View<'_> {
        // SAFETY: `map` covers exactly `object_size(version, buffer_size)`
        // bytes, page-aligned, for as long as `self` lives; both values were
        // validated (open) or chosen (create).
        let view = unsafe { View::new(self.map.as_mut_ptr(), self.version, self.buffer_size) };
        View {
            name: Some(&self.name),
            file: Some(self.id),
            pool: Some(&self.pool),
            patience: Some(&self.patience),
            ..view
        }
    }

    pub(crate) fn name(&self) -> &QueueName {
        &self.name
    }

    pub(crate) fn file_id(&self) -> FileId {
        self.id
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Legacy bookkeeping; saturating so a corrupt count cannot wrap.
        let _ = self
            .view()
            .header
            .process_count()
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        // `map` and `file` drop next: unmap, close, release the flock.
    }
}

/// Unlinks the object called `name` (legacy `ring_buffer_destroy`). Mapped
/// handles keep working; the memory goes when the last one closes. The
/// queue's side objects that nobody holds go too: the messages longer than
/// the ring still queued are dropped with the queue's name (a handle still
/// open that takes one of their descriptors gets `Corrupt` for it).
pub(crate) fn unlink(name: &QueueName) -> Result<()> {
    mark_removed(name);
    // SAFETY: the path is NUL-terminated.
    if unsafe { libc::unlink(name.path().as_ptr()) } != 0 {
        return Err(Error::last_os());
    }
    let _ = crate::side::remove_unused_of_missing_queue(name);
    Ok(())
}

/// The version and data-area size of the object `file` (whose `fstat` is
/// `st`) as its header states them, validated: magic, a power-of-two size
/// within bounds, and a file exactly as long as that version's layout of
/// that size. `Incompatible` otherwise.
fn geometry(file: &File, st: &libc::stat) -> Result<(u32, u32)> {
    let mut header = [0u8; RING_BUFFER_HEADER_SIZE as usize];
    if (st.st_size as u64) < u64::from(RING_BUFFER_HEADER_SIZE) {
        return Err(Error::Incompatible);
    }
    file.read_exact_at(&mut header, 0)?;
    let word = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let magic = u64::from_ne_bytes(header[0..8].try_into().expect("8 bytes"));
    let (version, buffer_size) = (word(8), word(12));
    let valid_size = buffer_size.is_power_of_two()
        && (RING_BUFFER_MIN_SIZE..=RING_BUFFER_MAX_SIZE).contains(&buffer_size);
    if magic != RING_BUFFER_MAGIC
        || !valid_size
        || object_size(version, buffer_size) != Some(st.st_size as u64)
    {
        return Err(Error::Incompatible);
    }
    Ok((version, buffer_size))
}

/// The pool's view of a queue object mapped whole by `map` (`None` for a
/// legacy object: it has no flags, and carries no descriptors).
fn queue_object(map: &Arc<MmapRaw>, version: u32, buffer_size: u32) -> Option<QueueObject> {
    (version == RING_BUFFER_VERSION).then(|| {
        let at = flags_offset(buffer_size) as usize;
        // SAFETY: `map` covers the whole version-2 object, extension block
        // included, whose flags word is a 4-aligned `AtomicU32`.
        unsafe { QueueObject::new(map, at) }
    })
}

/// Sets [`FLAG_REMOVED`] on the version-2 object called `name`, whose name
/// is about to go: the processes that have it open then ask, at each claim
/// and take, whether the names of its pool's slots are still theirs (see
/// `crate::pool`). Best effort, as the removal itself is by name: anything
/// that is not a well-formed version-2 object this process may write is
/// left as it is (its slots are then checked as often as ever).
fn mark_removed(name: &QueueName) {
    let Ok(file) = open_path(name.path(), true) else {
        return;
    };
    let Ok(st) = fstat(file.as_raw_fd()) else {
        return;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return;
    }
    let Ok((version @ RING_BUFFER_VERSION, buffer_size)) = geometry(&file, &st) else {
        return;
    };
    let Ok(map) = MmapOptions::new().len(st.st_size as usize).map_raw(&file) else {
        return;
    };
    // SAFETY: `map` covers exactly `object_size(version, buffer_size)` bytes
    // of a file of that size (`geometry`; tmpfs files do not shrink
    // under a mapping but by `ftruncate`, a neighbour's fault that `View`
    // documents), page-aligned, for as long as `view` lives.
    let view = unsafe { View::new(map.as_mut_ptr(), version, buffer_size) };
    if let Some(ext) = view.ext {
        // Relaxed: nothing is published with it (see `View::queue_marks`).
        ext.identity.flags.fetch_or(FLAG_REMOVED, Relaxed);
    }
}

/// Unlinks `name` only if it still names the object `id` (and not a newer
/// queue of the same name). Returns whether it did.
pub(crate) fn unlink_if_same(name: &QueueName, id: FileId) -> Result<bool> {
    match lstat(name.path()) {
        Ok(st) if st.st_dev == id.dev && st.st_ino == id.ino => unlink(name).map(|()| true),
        Ok(_) | Err(Error::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Unlinks `name` if no live process holds it open. Returns whether it did.
pub(crate) fn remove_if_unused(name: &QueueName) -> Result<bool> {
    remove_if_unused_matching(name, None)
}

/// Unlinks `name` if it still names the object `id` (not a newer queue that
/// took the name) and no live process holds it open. Returns whether it did;
/// `false`, not an error, when the name is gone or names another object.
pub(crate) fn remove_if_unused_same(name: &QueueName, id: FileId) -> Result<bool> {
    match remove_if_unused_matching(name, Some(id)) {
        Err(Error::NotFound) => Ok(false),
        other => other,
    }
}

fn remove_if_unused_matching(name: &QueueName, only: Option<FileId>) -> Result<bool> {
    let file = open_path(name.path(), false)?;
    if let Some(id) = only {
        // Checked before the lock, too: never even lock a newer queue.
        let st = fstat(file.as_raw_fd())?;
        if (st.st_dev, st.st_ino) != (id.dev, id.ino) {
            return Ok(false);
        }
    }
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // We hold the exclusive lock: openers now wait in their LOCK_SH and will
    // see the object unlinked once we close.
    let st = fstat(file.as_raw_fd())?;
    if st.st_nlink == 0 {
        return Err(Error::NotFound);
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::Incompatible);
    }
    unlink_if_same(
        name,
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        },
    )
}

/// Processes holding a `flock` on the object `id`: see [`lock_holders`].
pub(crate) fn attached_processes(id: FileId) -> Result<u32> {
    Ok(lock_holders(id)?.len() as u32)
}

/// Pids of the processes holding a `flock` on the object `id`, sorted, from
/// `/proc/locks` (one line per lock: `N: FLOCK ADVISORY READ <pid>
/// <maj>:<min>:<ino> 0 EOF`, device numbers in hex). Several handles of one
/// process count once; a child that inherited a handle across `fork` shares
/// its parent's lock.
pub(crate) fn lock_holders(id: FileId) -> Result<Vec<libc::pid_t>> {
    let mut text = String::new();
    File::open("/proc/locks")?.read_to_string(&mut text)?;
    let (major, minor) = (libc::major(id.dev) as u64, libc::minor(id.dev) as u64);
    let mut pids: Vec<libc::pid_t> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            // Lines of blocked waiters read `N: -> FLOCK ...`; they hold nothing.
            if fields.next()? != "FLOCK" {
                return None;
            }
            let pid: libc::pid_t = fields.nth(2)?.parse().ok()?;
            let mut dev = fields.next()?.split(':');
            let maj = u64::from_str_radix(dev.next()?, 16).ok()?;
            let min = u64::from_str_radix(dev.next()?, 16).ok()?;
            let ino: u64 = dev.next()?.parse().ok()?;
            (maj == major && min == minor && ino == id.ino).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_like_the_legacy_library() {
        assert_eq!(buffer_size_for(0), Some(1024));
        assert_eq!(buffer_size_for(1), Some(1024));
        assert_eq!(buffer_size_for(1025), Some(2048));
        assert_eq!(buffer_size_for(1 << 31), Some(1 << 31));
        assert_eq!(buffer_size_for((1 << 31) + 1), None);
        assert_eq!(buffer_size_for(u32::MAX), None);
    }
}
