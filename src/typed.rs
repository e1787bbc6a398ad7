//! Typed messages (feature `serde`): [`TypedQueue`] sends values of one Rust
//! type over a [`Queue`], each value one message, encoded with bincode.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bincode::Options as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{CodecFailure, Error, Result};
use crate::queue::{Options, Queue};
use crate::Stats;

/// A [`Queue`] of values of type `T` instead of byte strings (feature
/// `serde`).
///
/// Each value travels as one message: its bincode encoding (bincode 1.3,
/// `DefaultOptions`: variable-length little-endian integers; trailing bytes
/// rejected), see [`TypedQueue::encode`]. Everything else is the [`Queue`]'s:
/// sizes, blocking, `try_` and `_timeout` variants, batches, shutdown, tasks,
/// and the same errors, plus [`Error::Encode`] and [`Error::Decode`]. A value
/// whose encoding is too large for the ring fails as a byte message of that
/// length does ([`Error::TooLarge`]).
///
/// Every process using a queue must use the same `T` (or a type with the same
/// encoding). A message that does not decode as `T` is consumed and reported
/// as [`Error::Decode`], naming the type and what failed.
///
/// Clones share one mapping, as [`Queue`] clones do. The handle is `Send` and
/// `Sync` whatever `T` is: it holds no `T`.
///
/// # Examples
///
/// A worker process gets jobs and sends back results:
///
/// ```
/// use std::time::Duration;
/// use ring_buffer::TypedQueue;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Job { id: u64, numbers: Vec<u32> }
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// enum Outcome { Sum { id: u64, sum: u64 }, Skipped(u64) }
///
/// # fn fork(child: impl FnOnce() -> Result<(), ring_buffer::Error>) -> libc::pid_t {
/// #     // SAFETY (doc test): the test program is single-threaded here.
/// #     let pid = unsafe { libc::fork() };
/// #     if pid == 0 {
/// #         // Die with the doc test rather than wait for jobs for ever.
/// #         unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
/// #         let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
/// #         unsafe { libc::_exit(if matches!(ok, Ok(Ok(()))) { 0 } else { 1 }) };
/// #     }
/// #     pid
/// # }
/// # struct Rm(Vec<String>);
/// # impl Drop for Rm {
/// #     fn drop(&mut self) { for n in &self.0 { let _ = ring_buffer::Queue::remove(n); } }
/// # }
/// let pid = std::process::id();
/// let (jobs_name, results_name) = (format!("doc_jobs_{pid}"), format!("doc_results_{pid}"));
/// # let _rm = Rm(vec![jobs_name.clone(), results_name.clone()]);
/// let jobs = TypedQueue::<Job>::create(&jobs_name, 64 * 1024)?;
/// let results = TypedQueue::<Outcome>::create(&results_name, 64 * 1024)?;
///
/// let worker = fork(|| {
///     // The child process opens the queues by name.
///     let jobs = TypedQueue::<Job>::open(&jobs_name)?;
///     let results = TypedQueue::<Outcome>::open(&results_name)?;
///     while let Ok(job) = jobs.recv() {
///         // `recv` fails with Shutdown once the queue is shut down and drained.
///         let outcome = if job.numbers.is_empty() {
///             Outcome::Skipped(job.id)
///         } else {
///             Outcome::Sum { id: job.id, sum: job.numbers.iter().map(|&n| u64::from(n)).sum() }
///         };
///         results.send(&outcome)?;
///         jobs.task_done()?;
///     }
///     Ok(())
/// });
///
/// jobs.send(&Job { id: 1, numbers: vec![1, 2, 3] })?;
/// jobs.send_batch(&[Job { id: 2, numbers: vec![] }, Job { id: 3, numbers: vec![40, 2] }])?;
/// jobs.join_timeout(Duration::from_secs(60))?; // every job marked done by the worker
/// jobs.shutdown()?; // the worker's recv now fails with Shutdown: it exits
///
/// assert_eq!(results.recv()?, Outcome::Sum { id: 1, sum: 6 });
/// assert_eq!(results.recv()?, Outcome::Skipped(2));
/// assert_eq!(results.recv()?, Outcome::Sum { id: 3, sum: 42 });
/// # let mut status = 0;
/// # unsafe { libc::waitpid(worker, &mut status, 0) };
/// # assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
/// # Ok::<(), ring_buffer::Error>(())
/// ```
pub struct TypedQueue<T> {
    queue: Queue,
    // `fn(T) -> T`: the handle sends and returns `T`s but owns none, so it is
    // Send + Sync for any `T` and invariant in it.
    _type: PhantomData<fn(T) -> T>,
}

// What the documentation promises: shareable between threads whatever `T`.
static_assertions::assert_impl_all!(TypedQueue<std::rc::Rc<u8>>: Send, Sync, Clone);

impl<T> Clone for TypedQueue<T> {
    fn clone(&self) -> Self {
        TypedQueue {
            queue: self.queue.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for TypedQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedQueue")
            .field("type", &std::any::type_name::<T>())
            .field("queue", &self.queue)
            .finish()
    }
}

/// The bincode configuration of every message: bincode's `DefaultOptions`
/// (variable-length little-endian integers, no size limit), spelled out so a
/// change of bincode's defaults cannot change the wire format silently.
fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .with_no_limit()
}

/// What bincode reported, as a [`CodecFailure`] (which is `Copy`, as
/// [`Error`] is: bincode's error text cannot be kept).
fn failure(error: &bincode::ErrorKind) -> CodecFailure {
    use bincode::ErrorKind as E;
    match error {
        // Only reading past the end of a message slice can fail with I/O
        // (writing into a Vec cannot).
        E::Io(_) => CodecFailure::UnexpectedEnd,
        // Decoding is limited to the message's length: a length prefix that
        // reaches past its end.
        E::SizeLimit => CodecFailure::UnexpectedEnd,
        E::InvalidUtf8Encoding(_) => CodecFailure::InvalidUtf8,
        E::InvalidBoolEncoding(_) | E::InvalidCharEncoding | E::InvalidTagEncoding(_) => {
            CodecFailure::InvalidValue
        }
        E::DeserializeAnyNotSupported | E::SequenceMustHaveLength => CodecFailure::Unsupported,
        E::Custom(_) => CodecFailure::Rejected,
    }
}

impl<T: Serialize + DeserializeOwned> TypedQueue<T> {
    /// Creates a new queue with a data area of at least `size` bytes, as
    /// [`Queue::create`] does; [`Error::Exists`] if the name is taken.
    pub fn create(name: impl AsRef<[u8]>, size: u32) -> Result<Self> {
        Queue::create(name, size).map(Self::from_queue)
    }

    /// [`TypedQueue::create`] with [`Options`] (permission bits, ...).
    pub fn create_with(name: impl AsRef<[u8]>, size: u32, options: &Options) -> Result<Self> {
        Queue::create_with(name, size, options).map(Self::from_queue)
    }

    /// Opens an existing queue, as [`Queue::open`] does.
    pub fn open(name: impl AsRef<[u8]>) -> Result<Self> {
        Queue::open(name).map(Self::from_queue)
    }

    /// [`TypedQueue::open`] with [`Options`].
    pub fn open_with(name: impl AsRef<[u8]>, options: &Options) -> Result<Self> {
        Queue::open_with(name, options).map(Self::from_queue)
    }

    /// Opens the queue, creating it first if it does not exist, as
    /// [`Queue::open_or_create`] does.
    pub fn open_or_create(name: impl AsRef<[u8]>, size: u32) -> Result<Self> {
        Queue::open_or_create(name, size).map(Self::from_queue)
    }

    /// [`TypedQueue::open_or_create`] with [`Options`].
    pub fn open_or_create_with(
        name: impl AsRef<[u8]>,
        size: u32,
        options: &Options,
    ) -> Result<Self> {
        Queue::open_or_create_with(name, size, options).map(Self::from_queue)
    }

    /// Sends and receives `T`s over an open byte queue.
    pub fn from_queue(queue: Queue) -> Self {
        TypedQueue {
            queue,
            _type: PhantomData,
        }
    }

    /// The byte queue underneath (every [`Queue`] method works on it: the
    /// statistics, removal, waiting, ...).
    pub fn as_queue(&self) -> &Queue {
        &self.queue
    }

    /// The byte queue underneath, by value.
    pub fn into_queue(self) -> Queue {
        self.queue
    }

    /// The message a value travels as. [`Error::Encode`] if bincode cannot
    /// encode it.
    ///
    /// ```
    /// use ring_buffer::TypedQueue;
    ///
    /// // bincode's varint encoding: one byte for a small integer.
    /// assert_eq!(TypedQueue::<u64>::encode(&7)?, [7]);
    /// assert_eq!(TypedQueue::<u64>::decode(&[7])?, 7);
    /// # Ok::<(), ring_buffer::Error>(())
    /// ```
    pub fn encode(value: &T) -> Result<Vec<u8>> {
        codec().serialize(value).map_err(|e| Error::Encode {
            type_name: std::any::type_name::<T>(),
            reason: failure(&e),
        })
    }

    /// The value a message holds. [`Error::Decode`] unless the message is
    /// exactly one encoded `T`.
    ///
    /// ```
    /// use ring_buffer::{CodecFailure, Error, TypedQueue};
    ///
    /// // A length of 3, then only 2 bytes.
    /// let err = TypedQueue::<String>::decode(&[3, b'a', b'b']).unwrap_err();
    /// assert!(matches!(err, Error::Decode { reason: CodecFailure::UnexpectedEnd, .. }));
    /// println!("{err}"); // could not decode a message as type `alloc::string::String`: ...
    /// ```
    pub fn decode(msg: &[u8]) -> Result<T> {
        let decode_error = |reason| Error::Decode {
            type_name: std::any::type_name::<T>(),
            reason,
        };
        let mut rest = msg;
        // The limit keeps a corrupt length prefix from allocating more than
        // the message could ever hold.
        let value = codec()
            .with_limit(msg.len() as u64)
            .deserialize_from(&mut rest)
            .map_err(|e| decode_error(failure(&e)))?;
        if !rest.is_empty() {
            return Err(decode_error(CodecFailure::TrailingBytes));
        }
        Ok(value)
    }

    /// Sends one value, waiting as long as it takes for room.
    pub fn send(&self, value: &T) -> Result<()> {
        self.queue.send(&Self::encode(value)?)
    }

    /// Sends one value if there is room now, else [`Error::Full`].
    pub fn try_send(&self, value: &T) -> Result<()> {
        self.queue.try_send(&Self::encode(value)?)
    }

    /// Sends one value, waiting at most `timeout` for room
    /// ([`Error::Timeout`]).
    pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<()> {
        self.queue.send_timeout(&Self::encode(value)?, timeout)
    }

    /// Sends values in order under one lock: waits for room for the first,
    /// then sends as many as fit. Returns how many (at least one); send the
    /// rest with another call. Nothing is sent if any value fails to encode.
    pub fn send_batch(&self, values: &[T]) -> Result<usize> {
        self.queue.send_batch(&Self::encode_all(values)?.as_refs())
    }

    /// [`TypedQueue::send_batch`] without waiting: [`Error::Full`] if not
    /// even the first value fits now.
    pub fn try_send_batch(&self, values: &[T]) -> Result<usize> {
        self.queue
            .try_send_batch(&Self::encode_all(values)?.as_refs())
    }

    /// [`TypedQueue::send_batch`] waiting at most `timeout` for room for the
    /// first value ([`Error::Timeout`]).
    pub fn send_batch_timeout(&self, values: &[T], timeout: Duration) -> Result<usize> {
        self.queue
            .send_batch_timeout(&Self::encode_all(values)?.as_refs(), timeout)
    }

    fn encode_all(values: &[T]) -> Result<Encoded> {
        values
            .iter()
            .map(Self::encode)
            .collect::<Result<_>>()
            .map(Encoded)
    }

    /// Receives one value, waiting as long as it takes.
    pub fn recv(&self) -> Result<T> {
        Self::decode(&self.queue.recv()?)
    }

    /// Receives one value if one is queued, else [`Error::Empty`].
    pub fn try_recv(&self) -> Result<T> {
        Self::decode(&self.queue.try_recv()?)
    }

    /// Receives one value, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        Self::decode(&self.queue.recv_timeout(timeout)?)
    }

    /// Receives up to `max` values under one lock, waiting as long as it
    /// takes for the first. If a message does not decode, the error names
    /// the first that failed; the whole batch was consumed.
    pub fn recv_batch(&self, max: usize) -> Result<Vec<T>> {
        Self::decode_all(self.queue.recv_batch(max)?)
    }

    /// [`TypedQueue::recv_batch`] without waiting: [`Error::Empty`] if
    /// nothing is queued.
    pub fn try_recv_batch(&self, max: usize) -> Result<Vec<T>> {
        Self::decode_all(self.queue.try_recv_batch(max)?)
    }

    /// [`TypedQueue::recv_batch`] waiting at most `timeout` for the first
    /// value ([`Error::Timeout`]).
    pub fn recv_batch_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
        Self::decode_all(self.queue.recv_batch_timeout(max, timeout)?)
    }

    fn decode_all(msgs: Vec<Vec<u8>>) -> Result<Vec<T>> {
        msgs.iter().map(|m| Self::decode(m)).collect()
    }

    /// The queue's name.
    pub fn name(&self) -> &[u8] {
        self.queue.name()
    }

    /// Messages queued now, exact across processes.
    pub fn len(&self) -> Result<u64> {
        self.queue.len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> Result<bool> {
        self.queue.is_empty()
    }

    /// Largest encoded value that fits (in an empty queue).
    pub fn max_message_len(&self) -> u32 {
        self.queue.max_message_len()
    }

    /// Shuts the queue down for every process, as [`Queue::shutdown`] does:
    /// sends fail with [`Error::Shutdown`], receives drain what is queued and
    /// then fail the same way.
    pub fn shutdown(&self) -> Result<()> {
        self.queue.shutdown()
    }

    /// Whether somebody shut the queue down.
    pub fn is_shutdown(&self) -> bool {
        self.queue.is_shutdown()
    }

    /// Marks one received value as processed (see [`TypedQueue::join`]).
    pub fn task_done(&self) -> Result<()> {
        self.queue.task_done()
    }

    /// Values sent and not yet marked done with [`TypedQueue::task_done`].
    pub fn unfinished_tasks(&self) -> Result<u64> {
        self.queue.unfinished_tasks()
    }

    /// Waits until every value sent so far was marked done.
    pub fn join(&self) -> Result<()> {
        self.queue.join()
    }

    /// [`TypedQueue::join`] waiting at most `timeout` ([`Error::Timeout`]).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.queue.join_timeout(timeout)
    }

    /// Processes that have the queue open right now.
    pub fn attached_processes(&self) -> Result<u32> {
        self.queue.attached_processes()
    }

    /// Every statistic the queue keeps (bytes count encoded values).
    pub fn stats(&self) -> Result<Stats> {
        self.queue.stats()
    }
}

/// Encoded values of one batch.
struct Encoded(Vec<Vec<u8>>);

impl Encoded {
    fn as_refs(&self) -> Vec<&[u8]> {
        self.0.iter().map(Vec::as_slice).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_bincode_varint_little_endian() {
        // Pinned: other processes (and other builds) decode these bytes.
        assert_eq!(TypedQueue::<u64>::encode(&300).unwrap(), [251, 44, 1]);
        assert_eq!(TypedQueue::<i32>::encode(&-1).unwrap(), [1]);
        assert_eq!(
            TypedQueue::<(bool, String)>::encode(&(true, "hi".into())).unwrap(),
            [1, 2, b'h', b'i']
        );
        assert_eq!(TypedQueue::<Option<u8>>::decode(&[1, 9]).unwrap(), Some(9));
    }

    #[test]
    fn decode_failures_name_the_type_and_the_reason() {
        fn reason<T: fmt::Debug>(r: Result<T>) -> (&'static str, CodecFailure) {
            match r {
                Err(Error::Decode { type_name, reason }) => (type_name, reason),
                other => panic!("expected a decode error, got {other:?}"),
            }
        }
        assert_eq!(
            reason(TypedQueue::<u32>::decode(&[])),
            ("u32", CodecFailure::UnexpectedEnd)
        );
        assert_eq!(
            reason(TypedQueue::<u8>::decode(&[1, 2])).1,
            CodecFailure::TrailingBytes
        );
        assert_eq!(
            reason(TypedQueue::<String>::decode(&[2, 0xff, 0xfe])).1,
            CodecFailure::InvalidUtf8
        );
        assert_eq!(
            reason(TypedQueue::<bool>::decode(&[2])).1,
            CodecFailure::InvalidValue
        );
        assert_eq!(
            reason(TypedQueue::<Option<u8>>::decode(&[7, 0])).1,
            CodecFailure::InvalidValue
        );
        // A length prefix far beyond the message: refused before allocating.
        assert_eq!(
            reason(TypedQueue::<Vec<u8>>::decode(&[
                252, 0xff, 0xff, 0xff, 0x7f
            ]))
            .1,
            CodecFailure::UnexpectedEnd
        );
    }
}
