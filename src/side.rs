//! Messages longer than the ring: their bytes go into a *side object*, a
//! shared-memory object of their own, and a small *descriptor* frame goes
//! through the ring in their place. This module has the one-shot side
//! objects (made per message, removed once it is received); the slots of a
//! queue's pool, side objects kept for reuse, are `crate::pool`'s (ids
//! `p<k>`, named by descriptors as `p<k>_<generation>`).
//!
//! # Naming
//!
//! The side objects of queue `q` are `/dev/shm/sage_ringbuf_q..<id>`, where
//! `<id>` is `x<pid>_<sequence>_<nanoseconds>` (ASCII letters, digits and
//! `_` only, no dot). Queue names may not contain `..`, so no queue name maps
//! to a side object's path, and the queue a side object belongs to is what
//! precedes its last `..` (a queue name may end with a dot: `q.` gives
//! `sage_ringbuf_q...x1_2_3`, whose last `..` is still the separator because
//! the id holds no dot).
//!
//! # Descriptor frames
//!
//! A frame's 4-byte length prefix has bit 31 free: the ring is at most 2 GiB,
//! so no message in it reaches 2^31 bytes. A descriptor frame is the prefix
//! `DESCRIPTOR_FLAG | d` and `d` payload bytes: [`DESCRIPTOR_MAGIC`], the
//! message length (u64, little endian) and the id. Masking the flag gives a
//! well-formed frame, so framing trackers, message counts and the journal
//! treat it as one message. A legacy reader that peeks the prefix sees a
//! length of 2 GiB or more, which never becomes available: it waits (its
//! `get` times out as on an empty queue) and consumes nothing; the raw
//! `ring_buffer_read`/`read_batch` refuse to take a descriptor frame
//! (`RB_ERR_FRAMING`), so a raw reader can never orphan a side object.
//!
//! # Failure model
//!
//! A producer builds the side object unnamed (`O_TMPFILE`), holds a shared
//! `flock` on it, writes every byte, links it under its name and only then
//! publishes the descriptor; it drops the `flock` after the publication. So
//! an unlocked side object is either referenced by a descriptor still queued
//! or an orphan: its producer died after linking and before publishing, or
//! its consumer died after taking the descriptor and before unlinking it.
//! Consumers copy a side object's bytes while holding the reader lock, before
//! the descriptor is consumed, and unlink it after: a consumer killed during
//! the copy loses nothing (the lock repair leaves the descriptor queued). The
//! reclaimer (`View::reclaim_side_objects`, run by every open of the queue
//! and by `ring_buffer_reclaim`/`sage-queue gc`) holds the reader lock, takes
//! an exclusive `flock` on each side object it can, then walks the queued
//! frames: the locked objects no descriptor names are orphans, and go.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{Error, Result};
use crate::name::{QueueName, OBJECT_PREFIX, SHM_DIR};
use crate::object::{self, flock, fstat, link_unnamed, lstat, open_path, FileId};
use crate::ops::Outgoing;

/// Bit 31 of a length prefix: the frame is a descriptor.
pub(crate) const DESCRIPTOR_FLAG: u32 = 0x8000_0000;

/// First bytes of a descriptor's payload.
pub(crate) const DESCRIPTOR_MAGIC: [u8; 4] = *b"SQX1";

/// Longest id of a side object.
const MAX_ID_LEN: usize = 48;

/// Longest descriptor payload.
pub(crate) const MAX_DESCRIPTOR_LEN: usize = DESCRIPTOR_MAGIC.len() + 8 + MAX_ID_LEN;

/// Separator between the queue name and the id (forbidden in queue names).
const SEPARATOR: &[u8] = b"..";

/// Whether `id` is a well-formed side-object id.
fn valid_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

/// File name (in [`SHM_DIR`]) of the side objects of `queue`, up to the id.
fn name_stem(queue: &QueueName) -> Vec<u8> {
    let mut stem = Vec::with_capacity(OBJECT_PREFIX.len() + queue.as_bytes().len() + 2);
    stem.extend_from_slice(OBJECT_PREFIX.as_bytes());
    stem.extend_from_slice(queue.as_bytes());
    stem.extend_from_slice(SEPARATOR);
    stem
}

/// Full path of the side object `id` of `queue`.
pub(crate) fn path(queue: &QueueName, id: &[u8]) -> CString {
    let mut p = Vec::with_capacity(SHM_DIR.len() + 80);
    p.extend_from_slice(SHM_DIR.as_bytes());
    p.push(b'/');
    p.extend_from_slice(&name_stem(queue));
    p.extend_from_slice(id);
    CString::new(p).expect("queue names and ids hold no NUL")
}

/// Splits a file name of [`SHM_DIR`] into the queue it belongs to and its id,
/// if it is a side object's name (`sage_ringbuf_<queue>..<id>`).
#[cfg(test)]
fn parse_file_name(file_name: &[u8]) -> Option<(QueueName, Vec<u8>)> {
    let rest = file_name.strip_prefix(OBJECT_PREFIX.as_bytes())?;
    let at = rest.windows(2).rposition(|w| w == SEPARATOR)?;
    let (queue, id) = (&rest[..at], &rest[at + 2..]);
    if !valid_id(id) {
        return None;
    }
    Some((QueueName::new(queue).ok()?, id.to_vec()))
}

/// The ids of the side objects of `queue` that exist now.
pub(crate) fn list(queue: &QueueName) -> Result<Vec<Vec<u8>>> {
    let stem = name_stem(queue);
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if let Some(id) = name.as_bytes().strip_prefix(&stem[..]) {
            if valid_id(id) {
                ids.push(id.to_vec());
            }
        }
    }
    Ok(ids)
}

/// A side object being written and published by this process. It holds the
/// shared `flock` that tells reclaimers "not an orphan" until dropped, which
/// the producer does after publishing the descriptor (or after
/// [`Outbound::discard`] when publishing failed).
pub(crate) struct Outbound {
    file: File,
    queue: QueueName,
    id: Vec<u8>,
    len: u64,
}

/// Makes ids unique within this process.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn fresh_id() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "x{}_{}_{}",
        crate::sync::owner::current_pid(),
        SEQUENCE.fetch_add(1, Relaxed),
        nanos
    )
    .into_bytes()
}

/// Out of room in `/dev/shm` for a message: it is too large for this machine
/// now (`TooLarge`), not a failure to create a queue.
fn no_room(e: Error) -> Error {
    match e {
        Error::NoSpace => Error::TooLarge,
        e => e,
    }
}

impl Outbound {
    /// Writes message `index` of `msg` into a new side object of `queue`,
    /// named and complete,
    /// with this process's shared `flock` on it. `TooLarge` if `/dev/shm`
    /// cannot hold it.
    pub(crate) fn create<O: Outgoing + ?Sized>(
        queue: &QueueName,
        msg: &O,
        index: usize,
    ) -> Result<Outbound> {
        let file = object::unnamed_object(0o600)?;
        let fd = file.as_raw_fd();
        // Locked before it has a name: nobody ever sees it unlocked while
        // this producer lives.
        flock(&file, libc::LOCK_SH)?;
        let len = msg.len_of(index) as u64;
        // Reserve every page first: a full /dev/shm fails here, at once.
        // SAFETY: posix_fallocate on our descriptor.
        match unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) } {
            0 | libc::EOPNOTSUPP => {}
            e => return Err(no_room(Error::from_errno(e))),
        }
        let (mut at, mut failed) = (0u64, None);
        msg.parts(index, &mut |part| {
            if failed.is_none() {
                failed = file.write_all_at(part, at).err();
                at += part.len() as u64;
            }
        });
        if let Some(e) = failed {
            return Err(no_room(Error::from(e)));
        }
        crate::failpoint::hit("side_written");
        for _ in 0..16 {
            let id = fresh_id();
            match link_unnamed(&file, &path(queue, &id)) {
                Ok(()) => {
                    crate::failpoint::hit("side_linked");
                    return Ok(Outbound {
                        file,
                        queue: queue.clone(),
                        id,
                        len,
                    });
                }
                Err(Error::Exists) => continue,
                Err(e) => return Err(no_room(e)),
            }
        }
        Err(Error::Exists)
    }

    /// The descriptor payload that names this object.
    pub(crate) fn descriptor(&self) -> Vec<u8> {
        descriptor_payload(self.len, &self.id)
    }

    /// Removes the object: its descriptor was not published.
    pub(crate) fn discard(self) {
        let _ = unlink_if_same(&path(&self.queue, &self.id), &self.file);
    }
}

/// The descriptor payload of a message of `len` bytes kept under `id` (a
/// one-shot side object's, or a pool slot's message, see `crate::pool`).
pub(crate) fn descriptor_payload(len: u64, id: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(MAX_DESCRIPTOR_LEN);
    d.extend_from_slice(&DESCRIPTOR_MAGIC);
    d.extend_from_slice(&len.to_le_bytes());
    d.extend_from_slice(id);
    d
}

/// A descriptor read from the ring.
pub(crate) struct Descriptor {
    pub(crate) len: u64,
    pub(crate) id: Vec<u8>,
}

impl Descriptor {
    /// Parses a descriptor payload; `None` if malformed.
    pub(crate) fn parse(payload: &[u8]) -> Option<Descriptor> {
        let rest = payload.strip_prefix(&DESCRIPTOR_MAGIC[..])?;
        if rest.len() < 8 {
            return None;
        }
        let len = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let id = &rest[8..];
        valid_id(id).then(|| Descriptor {
            len,
            id: id.to_vec(),
        })
    }

    /// Opens the side object and checks it is what the descriptor says (a
    /// regular file of this user, `len` bytes). `Corrupt` if it is missing
    /// or anything else.
    pub(crate) fn open(&self, queue: &QueueName) -> Result<File> {
        let file = open_path(&path(queue, &self.id), false).map_err(|_| Error::Corrupt)?;
        let st = fstat(file.as_raw_fd())?;
        // SAFETY: geteuid cannot fail.
        let ours = st.st_uid == unsafe { libc::geteuid() };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || !ours || st.st_size as u64 != self.len {
            return Err(Error::Corrupt);
        }
        Ok(file)
    }

    /// Copies the object `file` (from [`Descriptor::open`]) into `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `self.len` bytes and must not point
    /// into shared memory.
    pub(crate) unsafe fn copy(&self, file: &File, dst: *mut u8) -> Result<()> {
        // SAFETY: the caller's contract: `dst` is valid for `len` bytes and
        // is nobody else's.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst, self.len as usize) };
        file.read_exact_at(dst, 0).map_err(|_| Error::Corrupt)
    }

    /// Removes the side object once its message was consumed.
    pub(crate) fn remove(&self, queue: &QueueName) {
        // SAFETY: the path is NUL-terminated.
        unsafe { libc::unlink(path(queue, &self.id).as_ptr()) };
    }
}

/// Unlinks `path` (a side object's or a pool slot's) if it still names
/// `file`: never a newer object that took the name.
pub(crate) fn unlink_if_same(path: &CStr, file: &File) -> Result<bool> {
    let st = fstat(file.as_raw_fd())?;
    match lstat(path) {
        Ok(now) if FileId::of(&now) == FileId::of(&st) => {
            // SAFETY: the path is NUL-terminated.
            if unsafe { libc::unlink(path.as_ptr()) } != 0 {
                return Err(Error::last_os());
            }
            Ok(true)
        }
        Ok(_) | Err(Error::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A side object nobody holds a `flock` on, held exclusively by us so that
/// no producer or reclaimer can take it meanwhile.
pub(crate) struct Unused {
    file: File,
    pub(crate) id: Vec<u8>,
}

/// Exclusively locks side object `id` of `queue` if nobody else holds a lock
/// on it (`None`: in use, or gone).
pub(crate) fn lock_unused(queue: &QueueName, id: &[u8]) -> Option<Unused> {
    let file = open_path(&path(queue, id), false).ok()?;
    flock(&file, libc::LOCK_EX | libc::LOCK_NB).ok()?;
    Some(Unused {
        file,
        id: id.to_vec(),
    })
}

impl Unused {
    /// Removes it; whether it did.
    pub(crate) fn remove(self, queue: &QueueName) -> bool {
        unlink_if_same(&path(queue, &self.id), &self.file).unwrap_or(false)
    }
}

/// Removes every side object of `queue` that nobody holds, while no queue of
/// that name exists (after the queue was removed, or for `gc` of a queue that
/// is gone). Returns how many it removed.
pub(crate) fn remove_unused_of_missing_queue(queue: &QueueName) -> Result<usize> {
    let mut removed = 0;
    for id in list(queue)? {
        let Some(unused) = lock_unused(queue, &id) else {
            continue;
        };
        // A queue of that name may have been created since the caller
        // looked: then its reclaim decides, with the ring in view.
        match lstat(queue.path()) {
            Err(Error::NotFound) => {}
            _ => return Ok(removed),
        }
        removed += usize::from(unused.remove(queue));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse_back_to_their_queue() {
        for q in [&b"jobs"[..], b"a.", b"x.y", b"\xff"] {
            let queue = QueueName::new(q).unwrap();
            let name = [name_stem(&queue), b"x12_3_4".to_vec()].concat();
            let (got, id) = parse_file_name(&name).unwrap();
            assert_eq!(got, queue);
            assert_eq!(id, b"x12_3_4");
        }
        assert!(parse_file_name(b"sage_ringbuf_jobs").is_none());
        assert!(parse_file_name(b"sage_ringbuf_jobs..").is_none());
        assert!(parse_file_name(b"sage_ringbuf_jobs..x.1").is_none());
        assert!(parse_file_name(b"sage_ringbuf_..x1").is_none());
    }

    #[test]
    fn no_queue_name_is_a_side_object_name() {
        // Whatever follows the prefix in a side object's name holds "..",
        // which queue names may not.
        assert_eq!(QueueName::new(b"jobs..x1_2_3"), Err(Error::InvalidName));
    }

    #[test]
    fn descriptors_round_trip_and_reject_garbage() {
        let mut d = DESCRIPTOR_MAGIC.to_vec();
        d.extend_from_slice(&(1u64 << 33).to_le_bytes());
        d.extend_from_slice(b"x1_2_3");
        let parsed = Descriptor::parse(&d).unwrap();
        assert_eq!((parsed.len, &parsed.id[..]), (1 << 33, &b"x1_2_3"[..]));
        assert!(Descriptor::parse(b"SQX1").is_none());
        assert!(Descriptor::parse(&d[..12]).is_none());
        let mut bad = d.clone();
        bad.push(b'/');
        assert!(Descriptor::parse(&bad).is_none());
        assert!(d.len() <= MAX_DESCRIPTOR_LEN);
    }
}
