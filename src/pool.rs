//! A queue's *pool*: side objects kept for reuse by messages longer than the
//! ring.
//!
//! A fresh side object per message (see `crate::side`) costs its pages
//! twice over: the kernel allocates and zeroes every page when the producer
//! reserves it, and frees them when the last process unmaps it (at 1 MiB
//! that is about three times the copy itself). So a queue keeps up to
//! [`SLOTS`] side objects of its own, `sage_ringbuf_<q>..p<k>`, each mapped
//! once by each process that uses it: a message that finds a free slot large
//! enough costs one copy into shared memory and no system call, and a
//! consumer that takes a [`Lease`] copies nothing out.
//!
//! # A slot's life
//!
//! A slot file starts with a header page ([`SlotHeader`]); the message's
//! bytes follow it. The header's `state` word is 0 while the slot is free,
//! and `g << 32 | h` from the producer's claim (compare-and-swap 0 → state)
//! to the consumer's release (state → 0): `g` is the generation of the
//! message it holds (1 to 2^32 - 2), which its descriptor frame names
//! (`p<k>_<g>`), and `h` says who holds it. The producer's claim puts its
//! thread id there; the consumer that takes the descriptor (under the
//! reader lock, the descriptor still queued) puts its process id (a lease
//! may be let go of by any of its threads).
//!
//! So a claimed slot that no queued descriptor names, and whose holder is
//! dead, belongs to a process that died: the reclaimer
//! (`View::reclaim_side_objects`, which holds the reader lock and an
//! exclusive `flock` on the slot) frees it. It judges the holder before it
//! reads the queued frames: a dead producer publishes nothing more, so the
//! frames then name the slot if anything ever will. A consumer killed
//! while copying leaves the descriptor queued and the slot claimed: the
//! next consumer takes it (and puts its own id there). Ids are judged
//! conservatively (`crate::sync::owner::may_be_alive`): a zombie, or a task
//! that took a dead one's id, keeps the slot for now.
//!
//! Producers and consumers judged by id make no system call for it (a
//! `flock` and its release were two per message on each side: ~1 us of a
//! 64 KiB array's ~7 us get). But ids cannot be judged on a queue whose
//! processes live in different pid namespaces (`FLAG_MIXED_PID_NS`): there
//! `h` is [`FLOCKED`], and who holds the slot is told by shared `flock`s
//! on its file, which the kernel drops when a process dies: the producer
//! holds one from before its claim until after its descriptor is published,
//! the consumer from before it looks at the slot until it releases the
//! message; a reclaimer whose exclusive `flock` went through finds no
//! holder. Threads of one process share its descriptor of a slot file (and
//! so its `flock`): they count their holds, and the last one unlocks. A
//! holder that marked its slot with its id just before the flag was set
//! keeps the slot until the queue is removed if it dies: a reclaimer never
//! judges an id once the flag is set, so that no live holder is ever robbed
//! (as a lock of a dead owner is waited for there).
//!
//! A free slot is removed (`sage-queue gc`) only after a compare-and-swap
//! 0 → [`REMOVED`], which no claim can follow.
//!
//! # Bounds
//!
//! Slot files only grow (a mapping then never reaches past the end of its
//! file, whatever a neighbour writes into a header), and only while all the
//! queue's slots together stay within [`POOL_BYTES`]. Longer messages, and
//! messages that find every slot busy (consumers still hold what they
//! received), take a one-shot side object as before. The slots' names go
//! when the queue is removed (a lent slot's memory when its lease does; one
//! a `flock` holds, its name too), and
//! `Queue::reclaim` (`sage-queue gc`) removes the free ones nobody holds: a
//! process that had one mapped lets go of it at its next claim or take of
//! that slot.
//!
//! # Names
//!
//! A process keeps each slot file it met open, and takes it to be the one
//! the slot's name names without asking the kernel at every message (an
//! `fstat` was a twentieth of a 64 KiB array's put and of its get). It asks
//! ([`SlotFile::still_named`]), and opens the name again if not:
//! * at every claim and take once the queue's name was removed by this
//!   library ([`FLAG_REMOVED`]): a new queue of that name may have slots of
//!   its own under the same names;
//! * when a slot it has open was removed by a reclaimer (its state says
//!   [`REMOVED`], which no claim follows) or holds another message than the
//!   descriptor a take is for;
//! * and at least every [`NAME_CHECK_NS`] for each slot, for slot files
//!   removed by hand (a producer that wrote into one would send its
//!   consumers a name that names nothing).
//!
//! A lease's release learns from the same mark whether the queue's name
//! went while the message was lent (its slot's name then goes with it).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::layout::FLAG_REMOVED;
use crate::name::QueueName;
use crate::object::{
    flock, fstat, link_unnamed, lock_shared_bounded, lstat, open_path, unnamed_object,
};
use crate::ops::Outgoing;
use crate::side;
use crate::sync::deadline::coarse_monotonic_ns;
use crate::sync::owner::{current_pid, current_tid, may_be_alive};

/// Slots per queue.
pub(crate) const SLOTS: usize = 8;

/// Most bytes all of a queue's slots hold together.
pub(crate) const POOL_BYTES: u64 = 128 << 20;

/// Bytes before a slot's data: the header, padded to a page.
const HEADER_LEN: u64 = 4096;

/// First word of a slot file.
const MAGIC: u64 = u64::from_le_bytes(*b"SQPOOL01");

/// A slot grows in steps of this much (so a stream of slightly growing
/// messages does not grow it every time).
const GROW_STEP: u64 = 64 << 10;

/// Longest a consumer waits for a reclaimer's exclusive `flock` (held for a
/// few system calls; anything longer is not one of ours).
const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A slot's state once a reclaimer removes the free slot (or is about to):
/// never free again, so no claim can follow.
const REMOVED: u64 = u64::MAX;

/// Largest generation (`REMOVED`'s high half is none).
const GEN_MAX: u64 = (1 << 32) - 2;

/// The holder half of a slot's state when its holders hold `flock`s on its
/// file (pid namespaces mixed): no thread or process id is this large.
const FLOCKED: u32 = u32::MAX - 1;

/// How long a process takes a slot file it has open to be still named
/// without asking (see "Names" in the module's text).
pub(crate) const NAME_CHECK_NS: u64 = 100_000_000;

/// What a caller of the pool knows of its queue, from the queue's flags.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QueueMarks {
    /// `FLAG_MIXED_PID_NS`: holders take `flock`s (see the module's text).
    pub mixed_pid_ns: bool,
    /// `FLAG_REMOVED`: slot names may name another queue's slots now.
    pub removed: bool,
}

/// A slot's state while `holder` holds message `gen`.
fn slot_state(gen: u64, holder: u32) -> u64 {
    gen << 32 | u64::from(holder)
}

/// The generation of the message a state says the slot holds.
fn generation(state: u64) -> u64 {
    state >> 32
}

/// Who a state says holds the slot: a thread or process id, or [`FLOCKED`].
fn holder(state: u64) -> u32 {
    state as u32
}

/// The first bytes of a slot file.
#[repr(C)]
struct SlotHeader {
    magic: AtomicU64,
    /// 0: free; [`REMOVED`]; else `g << 32 | h` (see the module's text):
    /// the generation of the message the slot holds, and who holds it.
    state: AtomicU64,
    /// Source of generations (any value works: only equality is used).
    generations: AtomicU64,
}

/// The id a descriptor names slot `k`'s message of generation `gen` by.
fn message_id(k: usize, gen: u64) -> Vec<u8> {
    format!("p{k}_{gen}").into_bytes()
}

/// The id of slot `k`'s file.
fn file_id(k: usize) -> Vec<u8> {
    format!("p{k}").into_bytes()
}

/// `Some(k)` if `id` is a slot file's id (`p<k>`).
pub(crate) fn slot_of_file_id(id: &[u8]) -> Option<usize> {
    match id {
        [b'p', d] if d.is_ascii_digit() && usize::from(d - b'0') < SLOTS => {
            Some(usize::from(d - b'0'))
        }
        _ => None,
    }
}

/// `Some((k, gen))` if a descriptor's id names a slot's message.
pub(crate) fn parse_message_id(id: &[u8]) -> Option<(usize, u64)> {
    let rest = id.strip_prefix(b"p")?;
    let at = rest.iter().position(|&b| b == b'_')?;
    let k = slot_of_file_id(&id[..=at])?;
    let gen = std::str::from_utf8(&rest[at + 1..]).ok()?.parse().ok()?;
    (1..=GEN_MAX).contains(&gen).then_some((k, gen))
}

/// Whether a descriptor's id names a slot's message (not a one-shot side
/// object).
pub(crate) fn is_message_id(id: &[u8]) -> bool {
    id.first() == Some(&b'p')
}

/// This process's descriptor and mapping of one slot file.
pub(crate) struct SlotFile {
    file: File,
    /// The slot's name (`sage_ringbuf_<q>..p<k>` in `/dev/shm`), its queue
    /// and its number.
    path: CString,
    queue: QueueName,
    k: usize,
    local: Mutex<Local>,
    /// When the name was last found to be this file's
    /// ([`coarse_monotonic_ns`]).
    named_at: AtomicU64,
}

struct Local {
    /// Claims and leases of this process that hold the `flock` (pid
    /// namespaces mixed, see the module's text).
    holds: u32,
    /// The latest mapping (of the file's size when it was made).
    map: Option<Arc<MmapRaw>>,
}

impl SlotFile {
    /// Opens slot `k` of `queue`, creating it (header only) if `create`.
    fn open(queue: &QueueName, k: usize, create: bool) -> Result<SlotFile> {
        let path = side::path(queue, &file_id(k));
        let file = match open_path(&path, true) {
            Ok(file) => file,
            Err(Error::NotFound) if create => match Self::create(&path) {
                Ok(file) => file,
                Err(Error::Exists) => open_path(&path, true)?,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let st = fstat(file.as_raw_fd())?;
        // SAFETY: geteuid cannot fail.
        let ours = st.st_uid == unsafe { libc::geteuid() };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || !ours || (st.st_size as u64) < HEADER_LEN {
            return Err(Error::Corrupt);
        }
        let slot = SlotFile {
            file,
            path,
            queue: queue.clone(),
            k,
            local: Mutex::new(Local {
                holds: 0,
                map: None,
            }),
            named_at: AtomicU64::new(coarse_monotonic_ns()),
        };
        let map = slot.map_covering(0)?;
        if header(&map).magic.load(Relaxed) != MAGIC {
            return Err(Error::Corrupt);
        }
        Ok(slot)
    }

    /// A new slot file: built unnamed with its header, then linked, so
    /// nobody sees it half made.
    fn create(path: &CString) -> Result<File> {
        let file = unnamed_object(0o600)?;
        file.set_len(HEADER_LEN)?;
        file.write_all_at(&MAGIC.to_ne_bytes(), 0)?;
        link_unnamed(&file, path)?;
        Ok(file)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes this process's shared `flock` for one more claim or lease.
    /// `false` if `wait` is off and a reclaimer holds the file.
    fn hold(&self, wait: bool) -> bool {
        let mut local = self.local();
        if local.holds == 0 {
            let locked = if wait {
                lock_shared_bounded(&self.file, HOLD_WAIT).is_ok()
            } else {
                flock(&self.file, libc::LOCK_SH | libc::LOCK_NB).is_ok()
            };
            if !locked {
                return false;
            }
        }
        local.holds += 1;
        true
    }

    /// Ends one hold; the last one drops the `flock`.
    fn unhold(&self) {
        let mut local = self.local();
        local.holds = local.holds.saturating_sub(1);
        if local.holds == 0 {
            let _ = flock(&self.file, libc::LOCK_UN);
        }
    }

    /// A mapping of the file that covers `len` bytes of data (mapping the
    /// file again, at its current size, if the last one is shorter);
    /// `Corrupt` if the file is shorter.
    fn map_covering(&self, len: u64) -> Result<Arc<MmapRaw>> {
        let need = HEADER_LEN.checked_add(len).ok_or(Error::Corrupt)?;
        let mut local = self.local();
        if let Some(map) = local.map.as_ref().filter(|m| m.len() as u64 >= need) {
            return Ok(map.clone());
        }
        let size = fstat(self.file.as_raw_fd())?.st_size as u64;
        if size < need {
            return Err(Error::Corrupt);
        }
        let map = Arc::new(MmapOptions::new().len(size as usize).map_raw(&self.file)?);
        local.map = Some(map.clone());
        Ok(map)
    }

    /// Bytes of data the latest mapping covers (no system call).
    fn mapped_capacity(&self) -> u64 {
        self.local()
            .map
            .as_ref()
            .map_or(0, |m| (m.len() as u64).saturating_sub(HEADER_LEN))
    }

    /// Bytes of data the file holds now.
    fn capacity(&self) -> Result<u64> {
        Ok((fstat(self.file.as_raw_fd())?.st_size as u64).saturating_sub(HEADER_LEN))
    }

    /// Grows the file to hold `len` bytes of data (every page reserved: a
    /// full `/dev/shm` fails here, not with a SIGBUS later).
    fn grow(&self, len: u64) -> Result<()> {
        let size = HEADER_LEN + len.div_ceil(GROW_STEP) * GROW_STEP;
        let old = fstat(self.file.as_raw_fd())?.st_size as u64;
        if old >= size {
            return Ok(());
        }
        // SAFETY: posix_fallocate on our descriptor; it only extends.
        match unsafe {
            libc::posix_fallocate(
                self.file.as_raw_fd(),
                old as libc::off_t,
                (size - old) as libc::off_t,
            )
        } {
            0 => Ok(()),
            libc::EOPNOTSUPP => Ok(self.file.set_len(size)?),
            e => Err(Error::from_errno(e)),
        }
    }

    /// Whether the slot's name is still this file (the queue may have been
    /// removed and made again, the slot removed by a reclaimer or by hand).
    fn still_named(&self) -> bool {
        // Slots are only ever linked (`link_unnamed`, which never replaces
        // a name) and unlinked: a file that still has a link is still named
        // by its slot's name. `fstat` costs a fifth of an `lstat` of the
        // path.
        #[cfg(test)]
        NAME_CHECKS.with(|n| n.set(n.get() + 1));
        let named = fstat(self.file.as_raw_fd()).is_ok_and(|st| st.st_nlink > 0);
        if named {
            self.named_at.store(coarse_monotonic_ns(), Relaxed);
        }
        named
    }

    /// Whether a claim or take must ask [`Self::still_named`] first (see
    /// "Names" in the module's text).
    fn name_in_doubt(&self, queue_removed: bool) -> bool {
        // Relaxed: a time, of this process's own checks.
        queue_removed
            || coarse_monotonic_ns().saturating_sub(self.named_at.load(Relaxed)) >= NAME_CHECK_NS
    }
}

#[cfg(test)]
thread_local! {
    /// `still_named` calls of this thread (for the tests).
    static NAME_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The header of a slot file's mapping.
fn header(map: &MmapRaw) -> &SlotHeader {
    // SAFETY: every mapping of a slot file covers at least its header page
    // (`map_covering` checks the size), which is page-aligned; the header is
    // atomics only, which any bytes are valid for.
    unsafe { &*(map.as_ptr() as *const SlotHeader) }
}

/// The pool of one open queue: this process's slot files, opened on first
/// use.
pub(crate) struct Pool {
    /// This process's table (a `Box::into_raw` pointer, null until the first
    /// use). A forked child makes a table of its own: the parent's slot
    /// descriptors would share the parent's `flock`s, and its mutex may have
    /// been held by a thread the child does not have.
    table: AtomicPtr<Table>,
    /// Whether this handle puts messages into the pool (it takes them out
    /// either way).
    put: bool,
    /// Whether it also puts medium messages there (see
    /// `Options::pool_medium`).
    medium: bool,
    /// The queue object this pool belongs to, as its handle maps it (`None`
    /// for a legacy object, which carries no descriptors): by it a lease's
    /// release tells whether the queue's name was removed (see `Lease`).
    queue: Option<QueueObject>,
    /// The queue's [`QueueMarks::removed`] as a call last passed it (it
    /// stays set once set).
    queue_removed: AtomicBool,
}

struct Table {
    pid: u32,
    files: Mutex<[Option<Arc<SlotFile>>; SLOTS]>,
    /// When a claim last found slot `k` missing (see `file_for_claim`).
    missing: Mutex<[Option<Instant>; SLOTS]>,
    /// `open`s of slot files that did not exist (for the tests).
    #[cfg(test)]
    failed_opens: std::sync::atomic::AtomicUsize,
    /// Whether a put that finds every slot busy waits for one (see
    /// `wait_for_slot`): false after a wait that found none, true again
    /// after any claim.
    patient: AtomicBool,
    /// How long such a put waits, in nanoseconds (`WAIT_FOR_SLOT`; tests
    /// change it).
    wait_for_slot_ns: AtomicU64,
}

/// How long a put whose slots are all busy waits for one to be freed
/// before it takes a one-shot side object, which costs about ten times a
/// slot (a 1 MiB array from Python: put ~340 us and get ~170 us, against
/// ~32 and ~13). A stream meets all slots busy when its consumer pauses
/// for a moment; a consumer that keeps its messages makes the wait fail,
/// and the next puts do not wait until a claim succeeds again.
const WAIT_FOR_SLOT: Duration = Duration::from_micros(300);

/// How long a claim takes a slot it found missing to be still missing.
/// Another process may make it meanwhile: this one then opens it when it
/// makes that slot itself (`SlotFile::open` finds it exists); meanwhile it
/// counts that slot's bytes as 0 against the pool's bound. (The unit tests
/// take an hour, so that a slow machine cannot make them look again.)
const MISSING_FOR: Duration = if cfg!(test) {
    Duration::from_secs(3600)
} else {
    Duration::from_millis(50)
};

impl Pool {
    pub(crate) fn new(put: bool, medium: bool, queue: Option<QueueObject>) -> Pool {
        Pool {
            table: AtomicPtr::new(ptr::null_mut()),
            put,
            medium: put && medium,
            queue,
            queue_removed: AtomicBool::new(false),
        }
    }

    /// Takes in what a call says of the queue; returns whether holders
    /// take `flock`s.
    fn note(&self, marks: QueueMarks) -> bool {
        // Relaxed: as the flag it copies (see `View::queue_marks`).
        if marks.removed && !self.queue_removed.load(Relaxed) {
            self.queue_removed.store(true, Relaxed);
        }
        marks.mixed_pid_ns
    }

    /// Whether a claim or take of `slot` must ask whether it is still named.
    fn name_in_doubt(&self, slot: &SlotFile) -> bool {
        slot.name_in_doubt(self.queue_removed.load(Relaxed))
    }

    /// Whether this handle puts medium messages (of
    /// `RING_BUFFER_POOLED_FROM` bytes or more that fit in the ring) into
    /// the pool when a slot is free.
    pub(crate) fn takes_medium(&self) -> bool {
        self.medium
    }

    /// This process's table, made on first use (and in a forked child).
    fn table(&self) -> &Table {
        let me = current_pid();
        loop {
            let current = self.table.load(Acquire);
            // SAFETY: non-null values are `Box::into_raw` tables, freed only
            // by `Drop` (`&mut self`) or never (a forked parent's).
            if let Some(table) = unsafe { current.as_ref() }.filter(|t| t.pid == me) {
                return table;
            }
            let fresh = Box::into_raw(Box::new(Table {
                pid: me,
                files: Mutex::new(Default::default()),
                missing: Mutex::new(Default::default()),
                #[cfg(test)]
                failed_opens: Default::default(),
                patient: AtomicBool::new(true),
                wait_for_slot_ns: AtomicU64::new(WAIT_FOR_SLOT.as_nanos() as u64),
            }));
            // Release pairs with the Acquire load above in other threads. A
            // parent's table is left as it is (its mutex may be held by a
            // thread this child does not have).
            match self.table.compare_exchange(current, fresh, AcqRel, Acquire) {
                // SAFETY: just made, now shared through `self.table`.
                Ok(_) => return unsafe { &*fresh },
                // SAFETY: `fresh` was never shared.
                Err(_) => drop(unsafe { Box::from_raw(fresh) }),
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let table = *self.table.get_mut();
        // SAFETY: as in `table`; `&mut self`: nobody else uses it.
        if unsafe { table.as_ref() }.is_some_and(|t| t.pid == current_pid()) {
            // SAFETY: this process's table, made by `Box::into_raw`.
            drop(unsafe { Box::from_raw(table) });
        }
    }
}

impl Pool {
    /// This process's slot file `k`, opening (or creating) it if this
    /// process has none yet or `forget` says the cached one is stale (the
    /// stale one goes when its last claim or lease does).
    fn file(
        &self,
        queue: &QueueName,
        k: usize,
        create: bool,
        forget: bool,
    ) -> Result<Arc<SlotFile>> {
        let mut files = self.table().files.lock().unwrap_or_else(|e| e.into_inner());
        if forget {
            files[k] = None;
        }
        if let Some(slot) = &files[k] {
            return Ok(slot.clone());
        }
        let opened = SlotFile::open(queue, k, create);
        #[cfg(test)]
        if matches!(opened, Err(Error::NotFound)) {
            self.table().failed_opens.fetch_add(1, Relaxed);
        }
        let fresh = Arc::new(opened?);
        files[k] = Some(fresh.clone());
        drop(files);
        // Known now (`file_for_claim`).
        self.table()
            .missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())[k] = None;
        Ok(fresh)
    }

    /// Slot file `k` for a claim's search of the whole pool: as `file`, but
    /// a slot this process found missing less than `MISSING_FOR` ago is
    /// taken as still missing, without an `open` (2.6 us to fail). A
    /// producer whose open slots were all busy looked for every missing one
    /// at each such put (~10 us), and by the time it was done a consumer had
    /// freed a slot, so the pool never grew to the stream's need.
    fn file_for_claim(&self, queue: &QueueName, k: usize) -> Option<Arc<SlotFile>> {
        let table = self.table();
        let lock_missing = || table.missing.lock().unwrap_or_else(|e| e.into_inner());
        if lock_missing()[k].is_some_and(|at| at.elapsed() < MISSING_FOR) {
            return None;
        }
        match self.file(queue, k, false, false) {
            Ok(slot) => Some(slot),
            Err(Error::NotFound) => {
                lock_missing()[k] = Some(Instant::now());
                None
            }
            Err(_) => None,
        }
    }

    /// Claims a free slot for a message of `len` bytes and writes it there
    /// (message `index` of `msg`). `None`: no slot can take it now (too
    /// long, all busy, the pool full, `/dev/shm` full): the caller uses a
    /// one-shot side object.
    /// `may_wait`: when every slot is busy, wait a moment for one (see
    /// `WAIT_FOR_SLOT`); false for a put that tries once. `flocked`: the
    /// queue's pid namespaces are mixed (see the module's text).
    pub(crate) fn put<O: Outgoing + ?Sized>(
        &self,
        queue: &QueueName,
        msg: &O,
        index: usize,
        may_wait: bool,
        marks: QueueMarks,
    ) -> Option<Claim> {
        let len = msg.len_of(index) as u64;
        if !self.put || len > POOL_BYTES {
            return None;
        }
        let flocked = self.note(marks);
        let claim = match self.claim(queue, len, flocked) {
            Some(claim) => claim,
            None if may_wait => self.wait_for_slot(queue, len, flocked)?,
            None => return None,
        };
        let patient = &self.table().patient;
        if !patient.load(Relaxed) {
            patient.store(true, Relaxed);
        }
        // SAFETY: the claim's mapping covers `len` bytes of data, which
        // nobody else reads or writes while the slot is claimed.
        let mut at = unsafe { claim.map.as_mut_ptr().add(HEADER_LEN as usize) };
        msg.parts(index, &mut |part| {
            // SAFETY: the parts add up to `len` bytes (`Outgoing`), inside
            // the claimed data; `part` is the caller's memory.
            unsafe {
                ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
        });
        crate::failpoint::hit("slot_written");
        Some(claim)
    }

    /// Waits up to the table's `wait_for_slot_ns` for a slot this process has
    /// open to be freed, unless the last wait found none (then at once
    /// `None`, until a claim succeeds again).
    fn wait_for_slot(&self, queue: &QueueName, len: u64, flocked: bool) -> Option<Claim> {
        let table = self.table();
        if !table.patient.load(Relaxed) {
            return None;
        }
        let patience = Duration::from_nanos(table.wait_for_slot_ns.load(Relaxed));
        let start = Instant::now();
        loop {
            // A freed slot shows as a state word of 0 (try_claim looks at
            // it before any system call).
            if let Some(claim) = self.claim_open(queue, len, flocked) {
                return Some(claim);
            }
            if start.elapsed() >= patience {
                table.patient.store(false, Relaxed);
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// A slot this process has open and mapped large enough: no system
    /// call but `try_claim`'s (and no `open` of the slots that do not
    /// exist: 2.6 us each, failing).
    fn claim_open(&self, queue: &QueueName, len: u64, flocked: bool) -> Option<Claim> {
        let cached = self
            .table()
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (k, slot) in cached.iter().enumerate() {
            if let Some(slot) = slot.as_ref().filter(|s| s.mapped_capacity() >= len) {
                if let Some(claim) = self.try_claim(queue, k, slot.clone(), len, flocked) {
                    return Some(claim);
                }
            }
        }
        None
    }

    fn claim(&self, queue: &QueueName, len: u64, flocked: bool) -> Option<Claim> {
        if let Some(claim) = self.claim_open(queue, len, flocked) {
            return Some(claim);
        }
        // Any free slot, grown if the pool has room; then a new slot.
        let slots: Vec<Option<Arc<SlotFile>>> =
            (0..SLOTS).map(|k| self.file_for_claim(queue, k)).collect();
        let mut capacities = [0u64; SLOTS];
        for (cap, slot) in capacities.iter_mut().zip(&slots) {
            if let Some(slot) = slot {
                *cap = slot.capacity().unwrap_or(u64::MAX);
            }
        }
        let total: u64 = capacities.iter().fold(0, |a, &c| a.saturating_add(c));
        let grown = len.div_ceil(GROW_STEP) * GROW_STEP;
        // Whether slot `k` may hold `len` bytes within the pool's bound.
        let room = |k: usize| {
            capacities[k] >= len || (total - capacities[k]).saturating_add(grown) <= POOL_BYTES
        };
        for (k, slot) in slots.into_iter().enumerate() {
            if let Some(slot) = slot.filter(|_| room(k)) {
                if let Some(claim) = self.try_claim(queue, k, slot, len, flocked) {
                    return Some(claim);
                }
            }
        }
        // Then a slot this process does not know: made now, or, if another
        // process made it since this one looked (see `file_for_claim`),
        // opened and tried.
        for k in (0..SLOTS).filter(|&k| capacities[k] == 0 && room(k)) {
            if let Ok(slot) = self.file(queue, k, true, false) {
                if let Some(claim) = self.try_claim(queue, k, slot, len, flocked) {
                    return Some(claim);
                }
            }
        }
        None
    }

    /// Claims slot `k` (`slot`) if it is free, grown to `len` bytes (held
    /// by this thread's id, or with a `flock` if `flocked`).
    fn try_claim(
        &self,
        queue: &QueueName,
        k: usize,
        slot: Arc<SlotFile>,
        len: u64,
        flocked: bool,
    ) -> Option<Claim> {
        let Ok(map) = slot.map_covering(0) else {
            return None;
        };
        // A slot claimed now would fail the claim below: not worth a
        // generation or a `flock` (a consumer still holding its last message
        // keeps one or two slots busy, which a producer meets on nearly
        // every put). Relaxed: only a hint; the compare-and-swap decides.
        match header(&map).state.load(Relaxed) {
            0 => {}
            REMOVED => {
                // Removed by a reclaimer: this process lets go of that file.
                drop(map);
                let _ = self.file(queue, k, false, true);
                return None;
            }
            _ => return None,
        }
        if flocked && !slot.hold(false) {
            return None;
        }
        // 1 ..= GEN_MAX, whatever the shared counter holds.
        let gen = header(&map).generations.fetch_add(1, Relaxed) % GEN_MAX + 1;
        let state = slot_state(gen, if flocked { FLOCKED } else { current_tid() });
        // Acquire pairs with the Release by which the last consumer freed
        // the slot: its reads of the old message come before our writes.
        if header(&map)
            .state
            .compare_exchange(0, state, AcqRel, Relaxed)
            .is_err()
        {
            if flocked {
                slot.unhold();
            }
            return None;
        }
        // From here the claim's drop ends the hold, and frees the slot if
        // its message was not published.
        let mut claim = Claim {
            slot,
            map,
            k,
            state,
            len,
            flocked,
            published: false,
        };
        // The queue may have been removed and made again since this
        // process opened the slot (or the slot removed by hand): a
        // consumer would open another file.
        if self.name_in_doubt(&claim.slot) && !claim.slot.still_named() {
            drop(claim);
            let _ = self.file(queue, k, false, true);
            return None;
        }
        // Files never shrink: a mapping that covers `len` bytes says the
        // file does.
        if claim.map.len() as u64 >= HEADER_LEN + len {
            return Some(claim);
        }
        match claim
            .slot
            .grow(len)
            .and_then(|()| claim.slot.map_covering(len))
        {
            Ok(map) => {
                claim.map = map;
                Some(claim)
            }
            Err(_) => None,
        }
    }

    /// The message of generation `gen` in slot `k`, `len` bytes, for a
    /// consumer that holds the reader lock with its descriptor at the head:
    /// held (by this process's id, or its `flock` if pid namespaces are
    /// mixed) until the lease is dropped. `Corrupt` if the slot does not
    /// hold that message.
    pub(crate) fn take(
        &self,
        queue: &QueueName,
        k: usize,
        gen: u64,
        len: u64,
        marks: QueueMarks,
    ) -> Result<Lease> {
        let flocked = self.note(marks);
        let reopen = || self.file(queue, k, false, true).map_err(|_| Error::Corrupt);
        let mut slot = self
            .file(queue, k, false, false)
            .map_err(|_| Error::Corrupt)?;
        let asked = self.name_in_doubt(&slot);
        if asked && !slot.still_named() {
            slot = reopen()?;
        }
        match self.take_from(&slot, gen, len, flocked) {
            // A file that holds another message may have lost its name
            // since this process opened it (removed by a reclaimer or by
            // hand): the message is in the file the name names now.
            Err(Error::Corrupt) if !asked && !slot.still_named() => {
                self.take_from(&reopen()?, gen, len, flocked)
            }
            taken => taken,
        }
    }

    /// `take` from `slot`, the file its name named lately.
    fn take_from(&self, slot: &Arc<SlotFile>, gen: u64, len: u64, flocked: bool) -> Result<Lease> {
        // Waiting: only a reclaimer holds the file exclusively, for a few
        // system calls.
        if flocked && !slot.hold(true) {
            return Err(Error::Corrupt);
        }
        // From here the lease's drop ends the hold.
        let mut lease = Lease {
            slot: slot.clone(),
            map: None,
            state: slot_state(gen, if flocked { FLOCKED } else { current_pid() }),
            len,
            pid: current_pid(),
            consumed: false,
            flocked,
            queue: self.queue.clone(),
        };
        let map = slot.map_covering(len)?;
        // Ours now: its producer (or a consumer killed while copying it)
        // no longer holds it. Acquire pairs with the producer's claim; the
        // message bytes are ordered by the ring's publication (its Release,
        // our Acquire).
        let state = &header(&map).state;
        let now = state.load(Acquire);
        if now == REMOVED || generation(now) != gen {
            return Err(Error::Corrupt);
        }
        if now != lease.state
            && state
                .compare_exchange(now, lease.state, AcqRel, Acquire)
                .is_err()
        {
            return Err(Error::Corrupt);
        }
        lease.map = Some(map);
        Ok(lease)
    }
}

/// A pool's queue object as its handle maps it, and where its flags lie.
/// Leases hold the mapping weakly: it must go with the handle, not with the
/// last lease.
#[derive(Clone)]
pub(crate) struct QueueObject {
    map: Weak<MmapRaw>,
    flags_at: usize,
}

impl QueueObject {
    /// `map` maps a whole version-2 queue object, whose extension block's
    /// flags word lies `flags_at` bytes in.
    ///
    /// # Safety
    /// `flags_at + 4 <= map.len()`, and `flags_at` is a multiple of 4 (as
    /// `crate::layout::flags_offset` is).
    pub(crate) unsafe fn new(map: &Arc<MmapRaw>, flags_at: usize) -> QueueObject {
        QueueObject {
            map: Arc::downgrade(map),
            flags_at,
        }
    }

    /// Whether the queue's name was removed ([`FLAG_REMOVED`]); `None` once
    /// its handle is closed.
    fn removed(&self) -> Option<bool> {
        let map = self.map.upgrade()?;
        // SAFETY: an aligned word within the mapping (`new`'s contract),
        // which `map` keeps mapped; other processes write it only
        // atomically.
        let flags = unsafe { &*(map.as_ptr().add(self.flags_at) as *const AtomicU32) };
        // Relaxed: as `View::queue_marks` loads it.
        Some(flags.load(Relaxed) & FLAG_REMOVED != 0)
    }
}

/// A slot claimed by this producer, holding its message. Dropped before
/// [`Claim::published`], it frees the slot.
pub(crate) struct Claim {
    slot: Arc<SlotFile>,
    map: Arc<MmapRaw>,
    k: usize,
    /// The slot's state of the claim.
    state: u64,
    len: u64,
    /// Held with a `flock` (see the module's text).
    flocked: bool,
    published: bool,
}

impl Claim {
    /// The descriptor payload that names this message.
    pub(crate) fn descriptor(&self) -> Vec<u8> {
        side::descriptor_payload(self.len, &message_id(self.k, generation(self.state)))
    }

    /// Its descriptor is queued: the slot is the consumers' to take.
    pub(crate) fn published(mut self) {
        self.published = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.published {
            // Release pairs with the next claimer's Acquire. (It fails only
            // if a reclaimer judged the claim dead: it was not.)
            let _ = header(&self.map)
                .state
                .compare_exchange(self.state, 0, Release, Relaxed);
        }
        if self.flocked {
            // Published (a queued descriptor names it now) or freed.
            self.slot.unhold();
        }
    }
}

/// A consumer's hold on a message in a slot: its bytes stay as they are
/// while the lease lives. Dropping it frees the slot if the message was
/// consumed (its descriptor taken from the ring), else only lets go of it;
/// in a forked child, whose copy is not the consumer's, it does neither.
pub(crate) struct Lease {
    slot: Arc<SlotFile>,
    /// `None` only while being made.
    map: Option<Arc<MmapRaw>>,
    /// The slot's state while the message is lent to this process.
    state: u64,
    len: u64,
    pid: u32,
    consumed: bool,
    /// Held with a `flock` (see the module's text).
    flocked: bool,
    /// The queue object, while its handle maps it (see `Pool::queue`).
    queue: Option<QueueObject>,
}

impl Lease {
    /// The message's first byte (in shared memory, writable: the slot is
    /// this lease's alone).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        let map = self.map.as_ref().expect("set once made");
        // SAFETY: the mapping covers the header and `len` bytes after it.
        unsafe { map.as_mut_ptr().add(HEADER_LEN as usize) }
    }

    /// The message's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the message was consumed (then dropping the lease frees the
    /// slot).
    pub(crate) fn set_consumed(&mut self, consumed: bool) {
        self.consumed = consumed;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.pid != current_pid() {
            return;
        }
        if let Some(map) = self.map.as_ref().filter(|_| self.consumed) {
            // Release pairs with the next claimer's Acquire: this process's
            // reads of the message come first.
            let _ = header(map)
                .state
                .compare_exchange(self.state, 0, Release, Relaxed);
            // Removed while the message was lent: the slot goes too, now
            // that it is free (a queue of that name made since has slots of
            // its own: `unlink_if_same`). Only a queue marked removed can
            // have been (by this library: one removed by hand leaves the
            // slot's name to `sage-queue gc`): that load spares the name's
            // lookup (`lstat`, 1.6 us) on every release but those after a
            // removal (or after the handle's close).
            let unnamed = self
                .queue
                .as_ref()
                .and_then(QueueObject::removed)
                .unwrap_or(true);
            if unnamed && matches!(lstat(self.slot.queue.path()), Err(Error::NotFound)) {
                let _ = side::unlink_if_same(&self.slot.path, &self.slot.file);
            }
        }
        if self.flocked {
            self.slot.unhold();
        }
    }
}

/// A slot file held exclusively by a reclaimer (with the reader lock): no
/// producer or consumer holds its `flock`, and no consumer takes its
/// message meanwhile.
pub(crate) struct LockedSlot {
    slot: SlotFile,
    map: Arc<MmapRaw>,
}

/// Locks slot `k` of `queue` exclusively if nobody holds it (`None`: held,
/// or no such slot).
pub(crate) fn lock_slot(queue: &QueueName, k: usize) -> Option<LockedSlot> {
    // A descriptor of its own, so that this process's holds count as holds.
    let slot = SlotFile::open(queue, k, false).ok()?;
    flock(&slot.file, libc::LOCK_EX | libc::LOCK_NB).ok()?;
    let map = slot.map_covering(0).ok()?;
    Some(LockedSlot { slot, map })
}

impl LockedSlot {
    /// The slot's state if its holder is gone, to be freed by
    /// [`LockedSlot::free_if_orphan`] unless a queued descriptor names its
    /// message: a `flock` holder (this lock says none is left), or an id
    /// the kernel knows nothing of (or garbage), unless `mixed` (pid
    /// namespaces: ids are never judged). `None` for a free slot or a
    /// live holder's. Called before the queued frames are read: a dead
    /// producer publishes nothing more.
    pub(crate) fn orphan_candidate(&self, mixed: bool) -> Option<u64> {
        let state = header(&self.map).state.load(Acquire);
        let gone = match holder(state) {
            _ if state == 0 => false,
            FLOCKED => true,
            id => !mixed && !may_be_alive(id),
        };
        gone.then_some(state)
    }

    /// Frees the slot if it is still in `state` (from `orphan_candidate`)
    /// and `queued(id)` says no queued descriptor names its message (the
    /// caller read the queued frames after judging). Whether it did.
    pub(crate) fn free_if_orphan(&self, state: u64, queued: impl Fn(&[u8]) -> bool) -> bool {
        !queued(&message_id(self.slot.k, generation(state)))
            && header(&self.map)
                .state
                .compare_exchange(state, 0, Release, Relaxed)
                .is_ok()
    }

    /// Removes the slot if it is free: marked [`REMOVED`] first, so that no
    /// producer claims it meanwhile (processes that have it open let go of
    /// it at their next claim or take).
    pub(crate) fn remove_if_free(&self) {
        let state = &header(&self.map).state;
        // Relaxed: the message bytes are nobody's (free, or removed by a
        // reclaimer that died before the unlink).
        if state.load(Relaxed) == REMOVED
            || state.compare_exchange(0, REMOVED, Relaxed, Relaxed).is_ok()
        {
            let _ = side::unlink_if_same(&self.slot.path, &self.slot.file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that open real queues (not under the model checker or Miri).
    #[cfg(not(any(loom, miri)))]
    mod with_queues {
        use super::*;
        use crate::queue::Queue;

        /// A producer whose slots are all busy makes the next one without
        /// looking again for every missing slot (an `open` that fails, 2.6 us
        /// each, at each such put; the delay let a consumer free a slot
        /// meanwhile, so the pool stayed smaller than the stream needed). A slot
        /// another handle made meanwhile is still found and used.
        #[test]
        fn busy_slots_make_new_ones_without_looking_again_for_missing_ones() {
            let (removed, q, other) = two_handles("missing");
            let name = &removed.0;
            let big = vec![7u8; 5000];
            let failed_opens = |q: &Queue| table_of(q).failed_opens.load(Relaxed);
            // The first large message finds no slot: it looks at all 8 once.
            q.send(&big).unwrap();
            assert_eq!(failed_opens(&q), SLOTS);
            // Each next one finds the slots busy (queued) and makes a new one,
            // with no more failed opens.
            for _ in 1..4 {
                q.send(&big).unwrap();
            }
            assert_eq!(failed_opens(&q), SLOTS);
            // Another handle makes the next slots (p4, p5: its own first look
            // fails only for those). This handle still takes them as missing
            // (recently looked at) but finds them made and uses them.
            other.send(&big).unwrap();
            other.send(&big).unwrap();
            assert_eq!(failed_opens(&other), SLOTS - 4);
            for _ in 0..2 {
                q.send(&big).unwrap();
            }
            assert_eq!(side_files(name), (SLOTS, 0));
            assert_eq!(failed_opens(&q), SLOTS);
            for _ in 0..8 {
                assert_eq!(q.recv().unwrap(), big);
            }
        }

        /// A stream through a slot asks the kernel whether the slot is still
        /// named (`still_named`, an `fstat`) only when in doubt: not at every
        /// claim and take (one each was a twentieth of a 64 KiB message's
        /// put and of its get), but at each once the queue's name was
        /// removed, and otherwise once a while (for slot files removed by
        /// hand).
        #[test]
        fn slot_names_are_checked_only_when_in_doubt() {
            let (_removed, q, _other) = two_handles("named");
            let big = vec![5u8; 5000];
            let checks = || NAME_CHECKS.with(|n| n.get());
            let round_trips = |n: usize| {
                for _ in 0..n {
                    q.send(&big).unwrap();
                    assert_eq!(q.recv().unwrap(), big);
                }
            };
            round_trips(1);
            let (before, start) = (checks(), std::time::Instant::now());
            round_trips(50);
            // One slot, one process: at most one check per interval (two if
            // one fell between a claim and its take).
            let intervals = start.elapsed().as_nanos() as u64 / NAME_CHECK_NS + 1;
            assert!(
                checks() - before <= 2 * intervals,
                "{} checks for 50 messages in {intervals} intervals",
                checks() - before
            );
            std::thread::sleep(Duration::from_nanos(NAME_CHECK_NS + 20_000_000));
            let before = checks();
            round_trips(1);
            assert!((1..=2).contains(&(checks() - before)), "due after a while");
            // The name removed (here only the mark): every claim and take asks.
            q.view()
                .ext
                .unwrap()
                .identity
                .flags
                .fetch_or(crate::layout::FLAG_REMOVED, Relaxed);
            let before = checks();
            round_trips(5);
            assert_eq!(checks() - before, 10, "a claim and a take per message");
        }

        /// Slot 0's state word, in this handle's mapping.
        fn state_of(q: &Queue) -> &AtomicU64 {
            let files = table_of(q).files.lock().unwrap();
            let map = files[0]
                .as_ref()
                .expect("slot 0 open")
                .map_covering(0)
                .unwrap();
            // SAFETY: the mapping lives as long as the slot's file, which the
            // handle's table keeps (no test here removes it).
            unsafe { &*(&header(&map).state as *const AtomicU64) }
        }

        /// The id of a thread that has ended (and left `/proc`).
        fn dead_tid() -> u32 {
            let tid = std::thread::spawn(current_tid).join().unwrap();
            assert!(crate::sync::owner::tests::until_gone(tid));
            tid
        }

        /// Who holds a slot is told by ids, judged by the reclaimer: a live
        /// producer thread or consumer process keeps it, a dead one's slot
        /// is freed unless a queued descriptor names its message; on a queue
        /// of mixed pid namespaces ids are never judged (kept), and holders
        /// that announce themselves with `flock`s are judged by them.
        #[test]
        fn slots_are_held_by_ids_judged_by_the_reclaimer() {
            let (_removed, q, _other) = two_handles("holders");
            // What the next user's open runs (`Queue::reclaim` also removes
            // the slots it finds free).
            let reclaim = |q: &Queue| q.view().reclaim_side_objects(false).unwrap();
            let big = vec![3u8; 5000];
            q.send(&big).unwrap();
            let state = state_of(&q);
            let queued = state.load(Relaxed);
            assert_eq!(holder(queued), current_tid(), "the producer's thread");
            assert_eq!(reclaim(&q), 0, "queued: kept");
            // A consumer that took it and let go before consuming it (as one
            // killed while copying): its process's id, the descriptor still
            // queued; the next consumer takes it over.
            let (k, gen) = (0, generation(queued));
            let lease = q
                .view()
                .pool
                .unwrap()
                .take(
                    q.view().name.unwrap(),
                    k,
                    gen,
                    big.len() as u64,
                    QueueMarks::default(),
                )
                .unwrap();
            assert_eq!(state.load(Relaxed), slot_state(gen, current_pid()));
            drop(lease);
            assert_eq!(reclaim(&q), 0, "still queued: kept");
            assert_eq!(q.recv().unwrap(), big);
            assert_eq!(state.load(Relaxed), 0, "consumed: free");
            let leave = |holder: u32| state.store(slot_state(9, holder), Relaxed);
            leave(dead_tid());
            assert_eq!(reclaim(&q), 1, "a dead producer's claim");
            assert_eq!(state.load(Relaxed), 0);
            leave(current_tid());
            assert_eq!(reclaim(&q), 0, "a live thread's");
            leave(current_pid());
            assert_eq!(reclaim(&q), 0, "a live process's");
            leave(FLOCKED);
            let slot = table_of(&q).files.lock().unwrap()[0].clone().unwrap();
            assert!(slot.hold(false));
            assert_eq!(reclaim(&q), 0, "a held flock");
            slot.unhold();
            assert_eq!(reclaim(&q), 1, "no flock left");
            // Mixed pid namespaces: a dead id is not judged; claims take a
            // flock and say so.
            let flags = &q.view().ext.unwrap().identity.flags;
            flags.fetch_or(crate::layout::FLAG_MIXED_PID_NS, Relaxed);
            leave(dead_tid());
            assert_eq!(reclaim(&q), 0, "ids not judged");
            state.store(0, Relaxed);
            q.send(&big).unwrap();
            assert_eq!(holder(state.load(Relaxed)), FLOCKED);
            assert_eq!(q.recv().unwrap(), big);
            assert_eq!(state.load(Relaxed), 0);
        }

        fn side_files(name: &str) -> (usize, usize) {
            let files: Vec<String> = std::fs::read_dir(crate::name::SHM_DIR)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.starts_with(&format!("sage_ringbuf_{name}..")))
                .collect();
            let slots = files.iter().filter(|f| f.contains("..p")).count();
            (slots, files.len() - slots)
        }

        fn table_of(q: &Queue) -> &Table {
            q.view().pool.expect("a pool").table()
        }

        /// Removes a test's queue (its slots and side objects with it) when
        /// dropped, also when the test fails.
        struct Removed(String);

        impl Drop for Removed {
            fn drop(&mut self) {
                let _ = Queue::remove(&self.0);
            }
        }

        /// A fresh queue with a 1 KiB ring and a second handle of it, after
        /// their removal guard (bound first, so dropped last: after the
        /// handles' close).
        fn two_handles(tag: &str) -> (Removed, Queue, Queue) {
            let name = format!("pool_unit_{tag}_{}", std::process::id());
            let removed = Removed(name.clone());
            let q = Queue::create(&name, 1024).unwrap();
            let other = Queue::open(&name).unwrap();
            (removed, q, other)
        }

        /// A put that finds every slot busy waits for one to be freed instead
        /// of taking a one-shot object at once (about ten times a slot's cost);
        /// after a wait that found none, puts take one-shot objects without
        /// waiting until a claim succeeds again; a put that tries once never
        /// waits.
        #[test]
        fn a_put_waits_a_moment_for_a_busy_slot_before_a_one_shot_object() {
            let (removed, q, consumer) = two_handles("wait");
            let name = &removed.0;
            let set_wait = |d: Duration| {
                table_of(&q)
                    .wait_for_slot_ns
                    .store(d.as_nanos() as u64, Relaxed)
            };
            let patient = |q: &Queue| table_of(q).patient.load(Relaxed);
            let msg = |i: u8| vec![i; 5000];
            for i in 0..SLOTS as u8 {
                q.send(&msg(i)).unwrap();
            }
            assert_eq!(side_files(name), (SLOTS, 0));
            // A consumer takes a message 50 ms from now: the put waits for its
            // slot (with a wait long enough for any machine).
            set_wait(Duration::from_secs(60));
            let taker = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let first = consumer.recv().unwrap();
                (consumer, first)
            });
            q.send(&msg(8)).unwrap();
            let (consumer, first) = taker.join().unwrap();
            assert_eq!(first, msg(0));
            assert_eq!(
                side_files(name),
                (SLOTS, 0),
                "the freed slot, no one-shot object"
            );
            assert!(patient(&q));
            // Nobody frees one: the wait ends, the message takes a one-shot
            // object, and the next put takes one without waiting.
            set_wait(Duration::from_millis(20));
            q.send(&msg(9)).unwrap();
            assert_eq!(side_files(name), (SLOTS, 1));
            assert!(!patient(&q));
            set_wait(Duration::from_secs(60));
            let started = Instant::now();
            q.send(&msg(10)).unwrap();
            assert!(started.elapsed() < Duration::from_secs(30), "it waited");
            assert_eq!(side_files(name), (SLOTS, 2));
            // A claim that succeeds makes puts wait again.
            assert_eq!(consumer.recv().unwrap(), msg(1));
            q.send(&msg(11)).unwrap();
            assert!(patient(&q));
            assert_eq!(side_files(name), (SLOTS, 2));
            // A put that tries once never waits (the wait is a minute).
            let started = Instant::now();
            q.try_send(&msg(12)).unwrap();
            assert!(started.elapsed() < Duration::from_secs(30), "it waited");
            assert_eq!(side_files(name), (SLOTS, 3));
            for i in 2..13 {
                assert_eq!(consumer.recv().unwrap(), msg(i));
            }
            assert_eq!(side_files(name), (SLOTS, 0));
        }
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_message_id(&message_id(3, 17)), Some((3, 17)));
        assert_eq!(
            parse_message_id(&message_id(7, GEN_MAX)),
            Some((7, GEN_MAX))
        );
        assert_eq!(slot_of_file_id(&file_id(5)), Some(5));
        // Generations are 1 ..= GEN_MAX (a state's high half, not REMOVED's).
        for bad in [
            &b"p8_1"[..],
            b"p1_0",
            b"p1_4294967295",
            b"p1_18446744073709551615",
            b"p1_",
            b"p_1",
            b"p12_3",
            b"x1_2_3",
            b"p1_2x",
        ] {
            assert_eq!(
                parse_message_id(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(slot_of_file_id(b"p8"), None);
        assert!(is_message_id(b"p1_2") && !is_message_id(b"x1_2_3"));
    }
}
