//! Who holds a queue's lock, for [`super::lock`]: the calling thread's id,
//! and whether the thread id a lock word holds names a live thread of a
//! process attached to the queue object.
//!
//! Everything is learnt from the thread id alone (`/proc/<tid>/status` works
//! for any thread, not only for process leaders), so the lock word needs no
//! second field that an owner would write after acquiring and that a waiter
//! could find half-written.

use std::cell::Cell;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;

use super::atfork;
use super::atomic::{fence, AtomicU32, Ordering::Acquire};
use super::lock::Owners;
use super::once::NoWaitOnce;
use crate::layout::FLAG_MIXED_PID_NS;
use crate::object::{lock_holders, FileId};

/// The kernel's largest possible thread id (`PID_MAX_LIMIT` on 64-bit
/// Linux), in every pid namespace.
const PID_MAX_LIMIT: u32 = 1 << 22;

/// The calling process's pid namespace: the inode of `/proc/self/ns/pid`,
/// 0 when `/proc` cannot tell (not mounted, no access). Not cached: a
/// process may `unshare` its children into another namespace.
pub(crate) fn pid_namespace() -> u64 {
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

thread_local! {
    /// This thread's id, 0 until first asked (and again in a forked child,
    /// see `forget_tid`).
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// This process's id, 0 until first asked (and again in a forked child,
/// see `forget_ids`). Not modelled by loom: no model forks.
static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The handler that forgets the cached ids in forked children.
static FORK_HANDLER: NoWaitOnce = NoWaitOnce::new();

/// Runs in the child after `fork`: it is a new process, and its only thread
/// has a new id; the copies it inherited name the parent and its thread.
extern "C" fn forget_ids() {
    let _ = TID.try_with(|t| t.set(0));
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// The calling thread's kernel thread id (cached; one system call per
/// thread, and again after a fork).
pub(crate) fn current_tid() -> u32 {
    TID.with(|cached| {
        let tid = cached.get();
        if tid != 0 {
            return tid;
        }
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        // Cached only once `forget_tid` runs in forked children; until
        // then (for good in a child forked while another thread registered
        // it), one system call per lock.
        if FORK_HANDLER.run(|| atfork::register(None, None, Some(forget_ids))) {
            cached.set(tid);
        }
        tid
    })
}

/// The calling process's id (cached as `current_tid` is: `getpid` is a
/// system call, and the pool asks several times per message).
pub(crate) fn current_pid() -> u32 {
    // Relaxed: the value is the same in every thread of this process; the
    // fork handler runs in the child's only thread.
    let pid = PID.load(std::sync::atomic::Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    let pid = std::process::id();
    if FORK_HANDLER.run(|| atfork::register(None, None, Some(forget_ids))) {
        PID.store(pid, std::sync::atomic::Ordering::Relaxed);
    }
    pid
}

/// The owners of the locks of one queue object: threads of processes that
/// have the object open (their `flock`, see `crate::object`) or mapped (a
/// forked child that inherited a handle holds no `flock` of its own).
pub(crate) struct ProcessOwners<'a> {
    /// The object; `None` for an image in private memory (tests), whose
    /// only possible owners are this process's threads.
    file: Option<FileId>,
    /// The last owner found attached: a long wait on one owner checks the
    /// attachment once and then only that the thread still lives.
    vouched: Cell<u32>,
    /// The object's flags word (`Identity::flags`; `None` for private
    /// images): with [`FLAG_MIXED_PID_NS`] set, owners are never judged.
    flags: Option<&'a AtomicU32>,
}

impl<'a> ProcessOwners<'a> {
    pub(crate) fn new(file: Option<FileId>, flags: Option<&'a AtomicU32>) -> ProcessOwners<'a> {
        ProcessOwners {
            file,
            vouched: Cell::new(0),
            flags,
        }
    }
}

impl Owners for ProcessOwners<'_> {
    fn me(&self) -> u32 {
        current_tid()
    }

    fn judge_at_once(&self) -> bool {
        self.file.is_none()
    }

    fn alive(&self, owner: u32) -> bool {
        // The fence makes the caller's earlier (Relaxed) read of the lock
        // word an acquire, pairing with the AcqRel compare-and-swap by which
        // `owner` took the lock: an owner of another namespace set the flag
        // when it opened the object, before that, so it is seen here.
        fence(Acquire);
        // No thread of any namespace has an id beyond the kernel's limit:
        // such a word is garbage whatever the flags say (they may be
        // garbage too). A private image has only our own threads as owners.
        if owner == 0 || owner > PID_MAX_LIMIT {
            return false;
        }
        if self.file.is_some()
            && self
                .flags
                .is_some_and(|f| f.load(Acquire) & FLAG_MIXED_PID_NS != 0)
        {
            return true;
        }
        let tgid = match thread_status(owner) {
            Status::Gone => return false,
            Status::Unknown => return true,
            Status::Live { tgid } => tgid,
        };
        if self.vouched.get() == owner {
            return true;
        }
        let attached = self.attached(tgid);
        if attached {
            self.vouched.set(owner);
        }
        attached
    }
}

impl ProcessOwners<'_> {
    /// Whether process `tgid` has the object open or mapped. When the
    /// answer cannot be had (a `/proc` read failing for a reason other than
    /// the process being gone or foreign), `true`: wait and look again.
    fn attached(&self, tgid: u32) -> bool {
        if tgid == current_pid() {
            return true;
        }
        let Some(file) = self.file else {
            return false;
        };
        let Ok(holders) = lock_holders(file) else {
            return true;
        };
        if holders.contains(&(tgid as libc::pid_t)) {
            return true;
        }
        match fs::read_to_string(format!("/proc/{tgid}/maps")) {
            Ok(maps) => maps_hold(&maps, file),
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            // Another user's process, or one that is not dumpable: its
            // mappings are private. A child that inherited its handle across
            // fork has an ancestor that took the flock.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                ancestors(tgid).any(|p| holders.contains(&(p as libc::pid_t)))
            }
            Err(_) => true,
        }
    }
}

/// What `/proc/<tid>/status` says of a thread.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    /// No such thread, a zombie, or not a thread id at all.
    Gone,
    /// Alive (running, sleeping or stopped), in process `tgid`.
    Live { tgid: u32 },
    /// `/proc` could not be read for another reason.
    Unknown,
}

fn thread_status(tid: u32) -> Status {
    // Ids beyond the kernel's limit are not threads.
    if tid == 0 || tid > PID_MAX_LIMIT {
        return Status::Gone;
    }
    let text = match fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(t) => t,
        // Not in this /proc: gone, unless the kernel still knows the id (a
        // /proc mounted with hidepid, or none at all): then unsure.
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return if signalable(tid) {
                Status::Unknown
            } else {
                Status::Gone
            };
        }
        Err(_) => return Status::Unknown,
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // "State:\tZ (zombie)" / "X (dead)": exited, its locks are abandoned.
    if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return Status::Gone;
    }
    match field("Tgid:").and_then(|t| t.parse().ok()) {
        Some(tgid) => Status::Live { tgid },
        None => Status::Unknown,
    }
}

/// Whether `id` may name a live thread or process of our pid namespace:
/// false only for a number no task can have and for one the kernel knows
/// nothing of. A zombie, or a task that took over a dead one's id, counts
/// as live: the caller keeps what it holds (see `crate::pool`).
pub(crate) fn may_be_alive(id: u32) -> bool {
    id != 0 && id <= PID_MAX_LIMIT && signalable(id)
}

/// Whether the kernel knows a task with this id in our pid namespace
/// (signal 0 checks without sending; EPERM: it exists, another user's).
fn signalable(tid: u32) -> bool {
    // Miri emulates no signals (`make miri`): there, a thread missing from
    // `/proc` is gone.
    if cfg!(miri) {
        return false;
    }
    // SAFETY: signal 0 only checks that the target exists and may be
    // signalled; nothing is sent.
    let rc = unsafe { libc::kill(tid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a `/proc/<pid>/maps` text maps the object `file` (lines read
/// `start-end perms offset maj:min inode path`, device numbers in hex).
fn maps_hold(maps: &str, file: FileId) -> bool {
    maps.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(3);
        let (Some(dev), Some(ino)) = (fields.next(), fields.next()) else {
            return false;
        };
        let mut dev = dev.split(':');
        let (Some(maj), Some(min)) = (dev.next(), dev.next()) else {
            return false;
        };
        match (
            u64::from_str_radix(maj, 16),
            u64::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) {
            (Ok(maj), Ok(min), Ok(ino)) => file.is(maj, min, ino),
            _ => false,
        }
    })
}

/// The parents of process `pid`, nearest first, up to 32 of them.
fn ancestors(pid: u32) -> impl Iterator<Item = u32> {
    let mut at = pid;
    std::iter::from_fn(move || {
        let text = fs::read_to_string(format!("/proc/{at}/status")).ok()?;
        let parent: u32 = text
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()?;
        (parent > 1).then(|| {
            at = parent;
            parent
        })
    })
    .take(32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Waits (at most 5 s) until `tid` has left `/proc`. A joined thread
    /// has run its last user instruction, but the kernel lists it a moment
    /// longer (join returns when the thread clears its tid word, before the
    /// task is reaped): until then it is rightly judged alive.
    pub(crate) fn until_gone(tid: u32) -> bool {
        let start = std::time::Instant::now();
        while thread_status(tid) != Status::Gone {
            if start.elapsed() > std::time::Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's thread ids are not the kernel's: /proc does not list them"
    )]
    fn thread_ids_are_per_thread_and_live() {
        let me = current_tid();
        assert_eq!(me, current_tid());
        let other = std::thread::spawn(current_tid).join().unwrap();
        assert_ne!(me, other);
        assert_eq!(
            thread_status(me),
            Status::Live {
                tgid: std::process::id()
            }
        );
        // The other thread has exited (joined): gone, once reaped.
        assert!(until_gone(other), "thread {other} still listed after 5 s");
        assert_eq!(thread_status(0), Status::Gone);
        assert_eq!(thread_status(u32::MAX >> 1), Status::Gone);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot fork")]
    fn a_forked_child_gets_its_own_id() {
        let parent = current_tid();
        let (mut fds, parent_pid) = ([0; 2], std::process::id());
        assert_eq!(current_pid(), parent_pid);
        // SAFETY: a pipe into a local array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only computes its id, writes it and _exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let tid = current_tid();
            let ok = tid != parent
                && tid == std::process::id()
                && tid != parent_pid
                && current_pid() == std::process::id();
            // SAFETY: write to our pipe, then leave without unwinding.
            unsafe {
                libc::write(fds[1], [ok as u8].as_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let mut ok = [0u8];
        // SAFETY: read from our pipe; reap our child; close our descriptors.
        unsafe {
            assert_eq!(libc::read(fds[0], ok.as_mut_ptr().cast(), 1), 1);
            libc::waitpid(child, std::ptr::null_mut(), 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(ok[0], 1, "the child's cached ids must be its own");
        assert_eq!(current_pid(), parent_pid);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's thread ids are not the kernel's: /proc does not list them"
    )]
    fn private_images_are_owned_only_by_this_process() {
        let owners = ProcessOwners::new(None, None);
        // A live thread of ours.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert!(owners.alive(tid));
        // pid 1 lives but is not attached to a private image.
        assert!(!owners.alive(1));
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(until_gone(tid), "thread {tid} still listed after 5 s");
        assert!(!owners.alive(tid));
    }

    #[test]
    fn maps_lines_are_matched_by_device_and_inode() {
        let maps = "7f00-7f01 rw-s 00000000 00:1a 4242 /dev/shm/sage_ringbuf_x\n\
                    7f02-7f03 r-xp 00000000 fd:01 4242 /usr/lib/x.so\n";
        assert!(maps_hold(maps, FileId::from_parts(0, 0x1a, 4242)));
        assert!(!maps_hold(maps, FileId::from_parts(0, 0x1a, 4243)));
        assert!(!maps_hold(maps, FileId::from_parts(0, 0x1b, 4242)));
        assert!(!maps_hold(
            "garbage\n\n1 2 3 x:y z\n",
            FileId::from_parts(0, 0x1a, 4242)
        ));
    }
}
