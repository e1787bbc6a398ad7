//! Looking at a queue object from outside, without attaching to it: what
//! `sage-queue list`/`stat` show. Nothing here takes the object's `flock` or
//! moves its `process_count`, so inspecting never counts as "using" a queue
//! (and never delays `remove_if_unused`): the object is opened read-only, its
//! header read with one `pread`, and the attached processes read from the
//! kernel's lock table.

use std::fs::File;
use std::mem::offset_of;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::os::unix::fs::FileExt;

use crate::error::{Error, RbStatus, Result};
use crate::layout::{
    extension_offset, object_size, Extension, RING_BUFFER_HEADER_SIZE, RING_BUFFER_MAGIC,
    RING_BUFFER_MAX_SIZE, RING_BUFFER_MIN_SIZE, RING_BUFFER_VERSION,
};
use crate::name::QueueName;
use crate::object::{fstat, lock_holders, lstat, open_path, FileId};

/// What `ring_buffer_inspect` learns about a queue object without attaching
/// to it. Header fields are 0 unless `header_status` is `RB_OK` or
/// `RB_ERR_INCOMPATIBLE` with `version` set (a queue header of an unknown
/// layout or a size that does not match it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingBufferInfo {
    /// Bytes of the object (`st_size`).
    pub object_size: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    /// User owning the object.
    pub owner_uid: u32,
    /// `st_mode` of the object: file type and permission bits.
    pub mode: u32,
    /// `RB_OK` if the object holds a queue header of a known layout and its
    /// size matches; otherwise why not: `RB_ERR_INCOMPATIBLE` (not a regular
    /// file, bad magic, unknown version or size), `RB_ERR_PERMISSION` (this
    /// user may not read it), `RB_ERR_SYSTEM`.
    pub header_status: c_int,
    /// Layout version in the header (1 legacy, 2 this library).
    pub version: u32,
    /// `buffer_size` in the header.
    pub buffer_size: u32,
    /// Process that created the object, from the header.
    pub creator_pid: libc::pid_t,
    /// Bytes ever consumed: `head` in the header of a version-1 object, in
    /// the extension block of a version-2 one (where the header holds a
    /// mirror updated by the legacy and status calls).
    pub head: u64,
    /// Bytes ever published (`tail`), from the same place.
    pub tail: u64,
    /// Processes that have the queue open (their `flock`s), this one included
    /// if it has.
    pub attached_processes: u32,
    /// 1 if `creator_pid` names a live process, 0 if it is gone, -1 unknown
    /// (no header read, or no creator recorded).
    pub creator_alive: i32,
}

/// Inspects the object of queue `name` (see [`RingBufferInfo`]).
/// `Error::NotFound` if there is none.
pub fn inspect(name: &QueueName) -> Result<RingBufferInfo> {
    let st = lstat(name.path())?;
    let mut info = RingBufferInfo {
        header_status: RbStatus::RB_ERR_INCOMPATIBLE as c_int,
        creator_alive: -1,
        ..RingBufferInfo::default()
    };
    let mut id = FileId::of(&st);
    let mut facts = st;
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        match open_path(name.path(), false) {
            Ok(file) => {
                // The object as opened (the name may have been replaced
                // since the lstat): every fact below is about this one.
                facts = fstat(file.as_raw_fd())?;
                id = FileId::of(&facts);
                read_header(&file, &facts, &mut info);
            }
            Err(Error::NotFound) => return Err(Error::NotFound),
            Err(e) => info.header_status = e.code(),
        }
    }
    info.object_size = facts.st_size as u64;
    info.modified_ns = facts.st_mtime * 1_000_000_000 + facts.st_mtime_nsec;
    info.owner_uid = facts.st_uid;
    info.mode = facts.st_mode;
    info.attached_processes = lock_holders(id)?.len() as u32;
    Ok(info)
}

/// Pids of the processes that have queue `name` open, sorted.
pub fn attached_pids(name: &QueueName) -> Result<Vec<libc::pid_t>> {
    lock_holders(FileId::of(&lstat(name.path())?))
}

/// Fills the header fields of `info` from the object `file` (of status
/// `st`), and `header_status` with the verdict.
fn read_header(file: &File, st: &libc::stat, info: &mut RingBufferInfo) {
    let mut header = [0u8; RING_BUFFER_HEADER_SIZE as usize];
    if (st.st_size as u64) < u64::from(RING_BUFFER_HEADER_SIZE) {
        return; // RB_ERR_INCOMPATIBLE: too small for a header
    }
    if let Err(e) = file.read_exact_at(&mut header, 0) {
        info.header_status = Error::from(e).code();
        return;
    }
    let word = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let dword = |at: usize| u64::from_ne_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if dword(0) != RING_BUFFER_MAGIC {
        return;
    }
    info.version = word(8);
    info.buffer_size = word(12);
    info.head = dword(16);
    info.tail = dword(24);
    info.creator_pid = word(152) as libc::pid_t;
    info.creator_alive = pid_alive(info.creator_pid);
    let valid_size = info.buffer_size.is_power_of_two()
        && (RING_BUFFER_MIN_SIZE..=RING_BUFFER_MAX_SIZE).contains(&info.buffer_size);
    if valid_size && object_size(info.version, info.buffer_size) == Some(st.st_size as u64) {
        info.header_status = RbStatus::RB_OK as c_int;
        if info.version == RING_BUFFER_VERSION {
            // The authoritative positions, on their own lines of the block.
            let ext = extension_offset(info.buffer_size);
            let at = |offset: usize| {
                let mut word = [0u8; 8];
                file.read_exact_at(&mut word, ext + offset as u64)
                    .map(|()| u64::from_ne_bytes(word))
            };
            match (
                at(offset_of!(Extension, head)),
                at(offset_of!(Extension, tail)),
            ) {
                (Ok(head), Ok(tail)) => (info.head, info.tail) = (head, tail),
                (Err(e), _) | (_, Err(e)) => info.header_status = Error::from(e).code(),
            }
        }
    }
}

/// 1 if `pid` is a live process (also another user's), 0 if not, -1 if `pid`
/// is not a real pid.
fn pid_alive(pid: libc::pid_t) -> i32 {
    if pid <= 0 {
        return -1;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return 1;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EPERM) => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_alive_tells_live_dead_and_unknown() {
        assert_eq!(pid_alive(std::process::id() as libc::pid_t), 1);
        assert_eq!(pid_alive(0), -1);
        assert_eq!(pid_alive(-5), -1);
        // Beyond pid_max (at most 2^22 on Linux): never a process.
        assert_eq!(pid_alive(1 << 30), 0);
    }

    #[test]
    fn a_missing_object_is_not_found() {
        let name =
            QueueName::new(format!("t10_missing_{}", std::process::id()).as_bytes()).unwrap();
        assert_eq!(inspect(&name), Err(Error::NotFound));
        assert_eq!(attached_pids(&name), Err(Error::NotFound));
    }
}
