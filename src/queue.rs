//! The safe Rust API: [`Queue`].

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{RingBuffer, RingBufferStatsEx, RING_BUFFER_FRAME_PREFIX};
use crate::name::QueueName;
use crate::object::{self, buffer_size_for, Access, Mapping};
use crate::ops::{Incoming, Outgoing};
use crate::segment::View;
use crate::sync::deadline::Wait;

/// How to create or open a queue.
#[derive(Clone, Debug)]
pub struct Options {
    mode: u32,
    allow_foreign_owner: bool,
    pool: bool,
    pool_medium: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: 0o600,
            allow_foreign_owner: false,
            pool: true,
            pool_medium: false,
        }
    }
}

impl Options {
    /// Permission bits of a new queue object (default `0o600`), applied
    /// exactly, whatever the umask. Only the `0o777` bits are allowed.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Open queues owned by another user instead of refusing them with
    /// [`Error::Permission`] (default: refuse).
    pub fn allow_foreign_owner(mut self, allow: bool) -> Self {
        self.allow_foreign_owner = allow;
        self
    }

    /// Put messages longer than the ring into slots of the queue's pool,
    /// side objects kept for reuse (default: yes). A pool slot costs one copy
    /// in and, for a consumer that borrows it, none out; a one-shot side
    /// object costs its pages' allocation and release per message. The
    /// pool keeps up to 128 MiB of `/dev/shm` while the queue exists
    /// ([`Queue::reclaim`] gives back what is free). Without it, this
    /// handle's long messages take one-shot side objects; it still receives
    /// messages others put into the pool.
    pub fn pool(mut self, pool: bool) -> Self {
        self.pool = pool;
        self
    }

    /// Also put *medium* messages, of
    /// [`RING_BUFFER_POOLED_FROM`](crate::layout::RING_BUFFER_POOLED_FROM)
    /// bytes or more that fit in the ring, into a slot of the pool (with
    /// every slot busy, after a brief wait, through the ring; default: no;
    /// nothing without [`Options::pool`]). For consumers that borrow them
    /// where they lie (`ring_buffer_get_msg_lease`; Python's `SageQueue`,
    /// which turns this option on): they copy nothing, where a message in
    /// the ring is copied out byte by byte from the producer's core.
    /// Consumers that copy every message out pay the slot's system calls
    /// instead (measured with `ring_buffer_get_msg`, 1 -> 1 process:
    /// 0.56-0.71x the messages/s at 64-256 KiB).
    pub fn pool_medium(mut self, pool_medium: bool) -> Self {
        self.pool_medium = pool_medium;
        self
    }

    fn access(&self) -> Result<Access> {
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidArg);
        }
        Ok(Access {
            mode: self.mode,
            allow_foreign_owner: self.allow_foreign_owner,
            pool: self.pool,
            pool_medium: self.pool_medium,
        })
    }
}

/// A handle to a cross-process message queue in POSIX shared memory.
///
/// Any number of processes and threads may put and get concurrently; every
/// message is delivered exactly once while everybody lives, and a process
/// killed at any instant costs at most its own in-flight message. Clones
/// share one mapping; the mapping goes when the last clone drops. Handles are
/// `Send` and `Sync`: threads may share one.
///
/// The crate documentation shows the whole API at work, with several
/// processes; [`TypedQueue`](crate::TypedQueue) (feature `serde`) carries
/// typed values instead of bytes.
///
/// ```
/// use std::thread;
/// use ring_buffer::{Error, Queue};
///
/// # struct Rm(String);
/// # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
/// let name = format!("doc_queue_{}", std::process::id());
/// # let _rm = Rm(name.clone());
/// let queue = Queue::create(&name, 4096)?;
/// let consumer = {
///     let queue = queue.clone();
///     thread::spawn(move || {
///         let mut got = Vec::new();
///         loop {
///             match queue.recv() {
///                 Ok(msg) => got.push(msg),
///                 Err(Error::Shutdown) => return got, // shut down and drained
///                 Err(e) => panic!("{e}"),
///             }
///         }
///     })
/// };
/// for i in 0..1000u32 {
///     queue.send(&i.to_le_bytes())?; // waits while the queue is full
/// }
/// queue.shutdown()?;
/// let got = consumer.join().unwrap();
/// assert_eq!(got.len(), 1000);
/// assert_eq!(got[999], 999u32.to_le_bytes());
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct Queue {
    mapping: Arc<Mapping>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &String::from_utf8_lossy(self.name()))
            .field("buffer_size", &self.buffer_size())
            .finish()
    }
}

impl Queue {
    /// Creates a new queue with a data area of at least `size` bytes (rounded
    /// up to a power of two, at least 1024); `Exists` if the name is taken.
    pub fn create(name: impl AsRef<[u8]>, size: u32) -> Result<Queue> {
        Queue::create_with(name, size, &Options::default())
    }

    /// [`Queue::create`] with [`Options`] (permission bits, foreign owners).
    ///
    /// ```
    /// use ring_buffer::{Options, Queue};
    ///
    /// # let name = format!("doc_create_with_{}", std::process::id());
    /// # struct Rm(String);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
    /// # let _rm = Rm(name.clone());
    /// // Readable and writable by the owner's group too (the umask is ignored).
    /// let queue = Queue::create_with(&name, 4096, &Options::default().mode(0o660))?;
    /// assert_eq!(queue.buffer_size(), 4096);
    /// # Ok::<(), ring_buffer::Error>(())
    /// ```
    pub fn create_with(name: impl AsRef<[u8]>, size: u32, options: &Options) -> Result<Queue> {
        let name = QueueName::new(name.as_ref())?;
        let size = requested_size(size)?;
        Ok(Queue::wrap(Mapping::create(
            &name,
            size,
            options.access()?,
        )?))
    }

    /// Opens an existing queue.
    pub fn open(name: impl AsRef<[u8]>) -> Result<Queue> {
        Queue::open_with(name, &Options::default())
    }

    /// [`Queue::open`] with [`Options`] (for instance, to accept a queue
    /// another user created).
    pub fn open_with(name: impl AsRef<[u8]>, options: &Options) -> Result<Queue> {
        let name = QueueName::new(name.as_ref())?;
        Ok(Queue::wrap(Mapping::open(&name, options.access()?)?))
    }

    /// Opens the queue, creating it first if it does not exist (the legacy
    /// `ring_buffer_create` behaviour; `size` is ignored for an existing one).
    pub fn open_or_create(name: impl AsRef<[u8]>, size: u32) -> Result<Queue> {
        Queue::open_or_create_with(name, size, &Options::default())
    }

    /// [`Queue::open_or_create`] with [`Options`].
    pub fn open_or_create_with(
        name: impl AsRef<[u8]>,
        size: u32,
        options: &Options,
    ) -> Result<Queue> {
        let name = QueueName::new(name.as_ref())?;
        Queue::open_or_create_named(&name, requested_size(size)?, options)
    }

    pub(crate) fn open_or_create_named(
        name: &QueueName,
        buffer_size: u32,
        options: &Options,
    ) -> Result<Queue> {
        let access = options.access()?;
        // Someone may remove the queue between our failed create and our open;
        // then the name is free again and the next create wins.
        for _ in 0..16 {
            match Mapping::create(name, buffer_size, access) {
                Err(Error::Exists) => {}
                other => return other.map(Queue::wrap),
            }
            match Mapping::open(name, access) {
                Err(Error::NotFound) => {}
                other => return other.map(Queue::wrap),
            }
        }
        Err(Error::NotFound)
    }

    pub(crate) fn open_named(name: &QueueName, options: &Options) -> Result<Queue> {
        Ok(Queue::wrap(Mapping::open(name, options.access()?)?))
    }

    pub(crate) fn create_named(
        name: &QueueName,
        buffer_size: u32,
        options: &Options,
    ) -> Result<Queue> {
        Ok(Queue::wrap(Mapping::create(
            name,
            buffer_size,
            options.access()?,
        )?))
    }

    /// Every open (and create) reclaims the queue's orphaned side objects
    /// (a dead process's message longer than the ring): the queue's next
    /// user cleans up after the dead. Failing to is not the open's failure
    /// (`sage-queue gc` tries again).
    fn wrap(mapping: Mapping) -> Queue {
        let queue = Queue {
            mapping: Arc::new(mapping),
        };
        let _ = queue.view().reclaim_side_objects(false);
        crate::sync::barrier::prepare();
        queue
    }

    /// Removes the orphaned side objects of queue `name` (messages longer
    /// than the ring whose producer died before publishing them, or whose
    /// consumer died after taking them): through the queue if it exists
    /// (attaching to it for the moment), else every side object of that name
    /// nobody holds. Also gives back the memory of the queue's pool (the
    /// side objects it keeps for reuse): its free slots nobody holds are
    /// removed (they are made again when needed). Returns how many orphans
    /// it removed or freed.
    pub fn reclaim(name: impl AsRef<[u8]>) -> Result<usize> {
        let name = QueueName::new(name.as_ref())?;
        match Mapping::open(&name, Options::default().access()?) {
            Ok(mapping) => {
                let queue = Queue {
                    mapping: Arc::new(mapping),
                };
                let n = queue.view().reclaim_side_objects(true)?;
                Ok(n)
            }
            Err(Error::NotFound) => crate::side::remove_unused_of_missing_queue(&name),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn view(&self) -> View<'_> {
        self.mapping.view()
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The address C callers know this queue by (the mapped header).
    pub(crate) fn header_ptr(&self) -> *mut RingBuffer {
        self.view().header.as_ptr()
    }

    /// Removes the queue's name (legacy `ring_buffer_destroy`); open handles
    /// keep working until they close.
    pub fn remove(name: impl AsRef<[u8]>) -> Result<()> {
        object::unlink(&QueueName::new(name.as_ref())?)
    }

    /// Removes the queue only if no live process has it open. Returns
    /// whether it did.
    pub fn remove_if_unused(name: impl AsRef<[u8]>) -> Result<bool> {
        object::remove_if_unused(&QueueName::new(name.as_ref())?)
    }

    /// Closes this handle and removes the queue it opened if no live process
    /// has that queue open any more. A newer queue that took the name since
    /// (after a remove and a create) is never touched. Returns whether the
    /// queue was removed; other clones of this handle keep it open (then
    /// `false`).
    pub fn close_and_remove_if_unused(self) -> Result<bool> {
        let (name, id) = (self.mapping.name().clone(), self.mapping.file_id());
        drop(self);
        object::remove_if_unused_same(&name, id)
    }

    /// The queue's name.
    pub fn name(&self) -> &[u8] {
        self.mapping.name().as_bytes()
    }

    /// Size of the data area in bytes.
    pub fn buffer_size(&self) -> u32 {
        self.view().buffer_size()
    }

    /// Largest message that travels inside the ring (in an empty queue).
    /// Longer messages go out of line: their bytes in a shared-memory object
    /// of their own (`/dev/shm/sage_ringbuf_<name>..<id>`) or a slot of the
    /// queue's pool, a descriptor in the ring; [`Error::TooLarge`] only if
    /// `/dev/shm` cannot hold them. (So do medium messages when a slot of
    /// the pool is free, with [`Options::pool_medium`].)
    pub fn max_message_len(&self) -> u32 {
        self.buffer_size() - 1 - RING_BUFFER_FRAME_PREFIX
    }

    /// Puts one message, waiting as long as it takes for room. A message
    /// longer than the ring goes out of line (see [`Queue::max_message_len`]).
    ///
    /// ```
    /// # use ring_buffer::{Error, Queue};
    /// # struct Rm(String);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
    /// # let name = format!("doc_send_large_{}", std::process::id());
    /// # let _rm = Rm(name.clone());
    /// let queue = Queue::create(&name, 4096)?;
    /// let big = vec![7u8; 1 << 20]; // 256 times the ring
    /// queue.send(&big)?;
    /// assert_eq!(queue.recv()?, big);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        self.send_batch_wait(&[msg][..], Wait::Forever).map(drop)
    }

    /// Puts one message if there is room now, else `Full`.
    pub fn try_send(&self, msg: &[u8]) -> Result<()> {
        self.send_batch_wait(&[msg][..], Wait::Try).map(drop)
    }

    /// Puts one message, waiting at most `timeout` for room (`Timeout`).
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_batch_wait(&[msg][..], Wait::from_duration(timeout))
            .map(drop)
    }

    /// Puts messages in order under one lock: waits for room for the first,
    /// then puts as many as fit. Returns how many (at least one).
    pub fn send_batch(&self, msgs: &[&[u8]]) -> Result<usize> {
        self.send_batch_wait(msgs, Wait::Forever)
    }

    /// [`Queue::send_batch`] without waiting: [`Error::Full`] if not even
    /// the first message fits now.
    pub fn try_send_batch(&self, msgs: &[&[u8]]) -> Result<usize> {
        self.send_batch_wait(msgs, Wait::Try)
    }

    /// [`Queue::send_batch`] waiting at most `timeout` for room for the first
    /// message ([`Error::Timeout`]).
    pub fn send_batch_timeout(&self, msgs: &[&[u8]], timeout: Duration) -> Result<usize> {
        self.send_batch_wait(msgs, Wait::from_duration(timeout))
    }

    pub(crate) fn send_batch_wait<O: Outgoing + ?Sized>(
        &self,
        msgs: &O,
        wait: Wait,
    ) -> Result<usize> {
        self.view().send(msgs, wait)
    }

    /// Takes one message, waiting as long as it takes.
    pub fn recv(&self) -> Result<Vec<u8>> {
        self.recv_wait(Wait::Forever)
    }

    /// Takes one message if one is queued, else `Empty`.
    pub fn try_recv(&self) -> Result<Vec<u8>> {
        self.recv_wait(Wait::Try)
    }

    /// Takes one message, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_wait(Wait::from_duration(timeout))
    }

    fn recv_wait(&self, wait: Wait) -> Result<Vec<u8>> {
        let mut msg = Vec::new();
        self.view().recv(&mut IntoVec(&mut msg), wait)?;
        Ok(msg)
    }

    /// Takes one message into `buf`, waiting as long as it takes; returns its
    /// length. `BufferTooSmall { needed }` (nothing consumed) if it does not fit.
    ///
    /// ```
    /// # use ring_buffer::{Error, Queue};
    /// # struct Rm(String);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
    /// # let name = format!("doc_recv_into_{}", std::process::id());
    /// # let _rm = Rm(name.clone());
    /// let queue = Queue::create(&name, 4096)?;
    /// queue.send(b"twelve bytes")?;
    /// let mut small = [0u8; 4];
    /// assert_eq!(queue.recv_into(&mut small), Err(Error::BufferTooSmall { needed: 12 }));
    /// let mut buf = [0u8; 64];
    /// let len = queue.recv_into(&mut buf)?; // the message was still there
    /// assert_eq!(&buf[..len], b"twelve bytes");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn recv_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_into_wait(buf, Wait::Forever)
    }

    /// [`Queue::recv_into`] without waiting: [`Error::Empty`] if nothing is
    /// queued.
    pub fn try_recv_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_into_wait(buf, Wait::Try)
    }

    /// [`Queue::recv_into`] waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_into_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.recv_into_wait(buf, Wait::from_duration(timeout))
    }

    fn recv_into_wait(&self, buf: &mut [u8], wait: Wait) -> Result<usize> {
        let mut sink = IntoSlice { buf, len: 0 };
        self.view().recv(&mut sink, wait)?;
        Ok(sink.len)
    }

    /// Takes up to `max` messages under one lock, waiting as long as it takes
    /// for the first.
    pub fn recv_batch(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        self.recv_batch_wait(max, Wait::Forever)
    }

    /// [`Queue::recv_batch`] without waiting: [`Error::Empty`] if nothing
    /// is queued.
    pub fn try_recv_batch(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        self.recv_batch_wait(max, Wait::Try)
    }

    /// [`Queue::recv_batch`] waiting at most `timeout` for the first message
    /// ([`Error::Timeout`]).
    pub fn recv_batch_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        self.recv_batch_wait(max, Wait::from_duration(timeout))
    }

    fn recv_batch_wait(&self, max: usize, wait: Wait) -> Result<Vec<Vec<u8>>> {
        if max == 0 {
            return Err(Error::InvalidArg);
        }
        let mut sink = IntoVecs {
            out: Vec::new(),
            max,
        };
        self.view().recv(&mut sink, wait)?;
        Ok(sink.out)
    }

    /// Waits until at least one message is queued, without taking it
    /// (`None`: as long as it takes; `Some(Duration::ZERO)`: checks once).
    /// `Timeout` if none came in time, `Shutdown` once the queue is shut down
    /// and drained. Another consumer may take the message first: this is a
    /// readiness signal for a later `try_recv`, which may still find nothing.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<()> {
        self.view().wait_readable(wait_for(timeout))
    }

    /// Waits until a message of `len` bytes fits now, without reserving the
    /// room (`None`: as long as it takes; `Some(Duration::ZERO)`: checks
    /// once). A message longer than the ring goes out of line and waits for
    /// room for its descriptor; `TooLarge` at once only on a queue that
    /// cannot carry it (a legacy object, a raw byte stream), `Timeout` if no
    /// room came in time, `Shutdown` once the queue is shut down.
    pub fn wait_writable(&self, len: u32, timeout: Option<Duration>) -> Result<()> {
        self.view().wait_writable(len, wait_for(timeout))
    }

    /// Messages queued now, exact across processes.
    pub fn len(&self) -> Result<u64> {
        self.view().msg_count()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Shuts the queue down for every process: puts fail with `Shutdown`,
    /// gets drain what is queued and then fail the same way; every sleeper
    /// wakes.
    pub fn shutdown(&self) -> Result<()> {
        self.view().shutdown()
    }

    /// Whether somebody shut the queue down (see [`Queue::shutdown`]).
    pub fn is_shutdown(&self) -> bool {
        self.view().is_shutdown()
    }

    /// Marks one received message as processed (see [`Queue::join`]).
    pub fn task_done(&self) -> Result<()> {
        self.view().task_done()
    }

    /// Messages put and not yet marked done with [`Queue::task_done`].
    pub fn unfinished_tasks(&self) -> Result<u64> {
        self.view().unfinished_tasks()
    }

    /// Waits until every message put so far was marked done.
    pub fn join(&self) -> Result<()> {
        self.view().join(Wait::Forever)
    }

    /// [`Queue::join`] waiting at most `timeout` ([`Error::Timeout`]).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.view().join(Wait::from_duration(timeout))
    }

    /// Processes that have the queue open right now.
    pub fn attached_processes(&self) -> Result<u32> {
        object::attached_processes(self.mapping.file_id())
    }

    /// Every statistic the queue keeps ([`Stats`](crate::Stats)).
    ///
    /// ```
    /// # use ring_buffer::Queue;
    /// # struct Rm(String);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
    /// # let name = format!("doc_stats_{}", std::process::id());
    /// # let _rm = Rm(name.clone());
    /// let queue = Queue::create(&name, 4096)?;
    /// queue.send_batch(&[b"a".as_slice(), b"b"])?;
    /// queue.recv()?;
    /// let stats = queue.stats()?;
    /// assert_eq!((stats.messages_in, stats.messages_out, stats.messages_queued), (2, 1, 1));
    /// assert_eq!(stats.attached_processes, 1);
    /// # Ok::<(), ring_buffer::Error>(())
    /// ```
    pub fn stats(&self) -> Result<RingBufferStatsEx> {
        self.view().stats_ex(self.attached_processes()?)
    }

    /// Zeroes the statistics (not the message counts).
    pub fn reset_stats(&self) {
        self.view().reset_stats()
    }
}

/// `None` waits for ever, a duration at most that long (zero: try once).
fn wait_for(timeout: Option<Duration>) -> Wait {
    timeout.map_or(Wait::Forever, Wait::from_duration)
}

/// Rounds a size the legacy way; 0 and sizes past 2 GiB are refused here
/// (the legacy `ring_buffer_create` maps 0 to 1024 itself).
fn requested_size(size: u32) -> Result<u32> {
    if size == 0 {
        return Err(Error::InvalidArg);
    }
    buffer_size_for(size).ok_or(Error::InvalidArg)
}

/// One message into a caller's slice.
struct IntoSlice<'a> {
    buf: &'a mut [u8],
    len: usize,
}

// SAFETY: the pointer handed out is into `buf`, an exclusive Rust buffer (not
// the mapping), and only when the message fits.
unsafe impl Incoming for IntoSlice<'_> {
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8> {
        (index == 0 && len as usize <= self.buf.len()).then(|| {
            self.len = len as usize;
            self.buf.as_mut_ptr()
        })
    }
    fn max_count(&self) -> usize {
        1
    }
    fn refuses(&self, index: usize, len: u32) -> bool {
        index != 0 || len as usize > self.buf.len()
    }
}

/// One message into a vector sized for it.
struct IntoVec<'a>(&'a mut Vec<u8>);

// SAFETY: the vector is resized to `len` before its pointer is handed out.
unsafe impl Incoming for IntoVec<'_> {
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8> {
        (index == 0).then(|| {
            self.0.resize(len as usize, 0);
            self.0.as_mut_ptr()
        })
    }
    fn max_count(&self) -> usize {
        1
    }
}

/// Up to `max` messages, a vector each.
struct IntoVecs {
    out: Vec<Vec<u8>>,
    max: usize,
}

// SAFETY: each pointer is to a fresh vector of exactly `len` bytes, owned by
// `out`; moving the outer vector's elements does not move their buffers.
unsafe impl Incoming for IntoVecs {
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8> {
        (index < self.max).then(|| {
            self.out.push(vec![0; len as usize]);
            self.out[index].as_mut_ptr()
        })
    }
    fn max_count(&self) -> usize {
        self.max
    }
}
