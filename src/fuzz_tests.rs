//! Property-based fuzzing of the queue operations over a heap image of a
//! queue object (header, data area, extension block), with guard zones on
//! both sides to catch any write out of bounds.
//!
//! * From a valid start, random operation sequences (message and legacy raw
//!   calls, batches, partial legacy frames, garbage framing, shutdown, task
//!   accounting) must give exactly what an independent model of the byte
//!   stream predicts, call by call.
//! * From arbitrary bytes (header counters, data, extension block; only the
//!   mutexes stay valid), any operation sequence must neither panic, nor
//!   touch a byte outside the object, nor wait.
//!
//! `RB_FUZZ_CASES` sets the number of cases of each property (`make fuzz`
//! runs millions); failing cases are recorded by proptest under
//! `proptest-regressions/` and re-run first from then on.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use crate::error::Error;
use crate::layout::{object_size, RING_BUFFER_VERSION, RING_BUFFER_VERSION_LEGACY};
use crate::name::QueueName;
use crate::ops::{Incoming, Outgoing};
use crate::segment::{initialise, View};
use crate::sync::deadline::Wait;

const GUARD: usize = 128;
const GUARD_BYTE: u8 = 0xA5;

/// A queue object image on the heap, between two guard zones (also used by
/// the repair tests, `crate::ops::repair_tests`).
pub(crate) struct HeapQueue {
    ptr: *mut u8,
    layout: Layout,
    size: usize,
    version: u32,
    buffer_size: u32,
}

impl HeapQueue {
    pub(crate) fn new(version: u32, buffer_size: u32) -> HeapQueue {
        let size = object_size(version, buffer_size).unwrap() as usize;
        let layout = Layout::from_size_align(size + 2 * GUARD, 64).unwrap();
        // SAFETY: non-zero size, valid alignment; checked for NULL.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        let q = HeapQueue {
            ptr,
            layout,
            size,
            version,
            buffer_size,
        };
        // SAFETY: the guards are inside the allocation.
        unsafe {
            std::ptr::write_bytes(ptr, GUARD_BYTE, GUARD);
            std::ptr::write_bytes(ptr.add(GUARD + size), GUARD_BYTE, GUARD);
        }
        if version == RING_BUFFER_VERSION {
            let name = QueueName::new(b"fuzz").unwrap();
            // SAFETY: zeroed, 64-aligned, private memory of the right size.
            unsafe { initialise(q.base(), buffer_size, &name, 1).unwrap() };
        } else {
            // A legacy object as the legacy library leaves it: no extension.
            // SAFETY: the header's first 16 bytes are inside the object.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    crate::RING_BUFFER_MAGIC.to_ne_bytes().as_ptr(),
                    q.base(),
                    8,
                );
                std::ptr::copy_nonoverlapping(
                    RING_BUFFER_VERSION_LEGACY.to_ne_bytes().as_ptr(),
                    q.base().add(8),
                    4,
                );
                std::ptr::copy_nonoverlapping(
                    buffer_size.to_ne_bytes().as_ptr(),
                    q.base().add(12),
                    4,
                );
            }
        }
        q
    }

    fn base(&self) -> *mut u8 {
        // SAFETY: inside the allocation.
        unsafe { self.ptr.add(GUARD) }
    }

    pub(crate) fn view(&self) -> View<'_> {
        // SAFETY: the object image is 64-aligned, of the size of its version,
        // and lives as long as `self`.
        unsafe { View::new(self.base(), self.version, self.buffer_size) }
    }

    /// Overwrites `bytes.len()` bytes at `offset` of the object, skipping
    /// the legacy `ref_mutex` (a glibc mutex, whose bytes are trusted to
    /// pthread; the extension block's own locks take any bytes).
    fn scribble(&mut self, offset: usize, bytes: &[u8]) {
        const REF_MUTEX: std::ops::Range<usize> = 48..88;
        for (i, &b) in bytes.iter().enumerate() {
            let at = offset + i;
            if at < self.size && !REF_MUTEX.contains(&at) {
                // SAFETY: inside the object, not the ref mutex, no view alive.
                unsafe { *self.base().add(at) = b };
            }
        }
    }

    fn guards_intact(&self) -> bool {
        // SAFETY: reading the guard zones of our allocation.
        let (before, after) = unsafe {
            (
                std::slice::from_raw_parts(self.ptr, GUARD),
                std::slice::from_raw_parts(self.ptr.add(GUARD + self.size), GUARD),
            )
        };
        before.iter().chain(after).all(|&b| b == GUARD_BYTE)
    }
}

impl Drop for HeapQueue {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// Messages received into a buffer of `cap` bytes, at most `max` of them.
pub(crate) struct Sink {
    buf: Vec<u8>,
    used: usize,
    lens: Vec<u32>,
    max: usize,
}

impl Sink {
    pub(crate) fn new(cap: usize, max: usize) -> Sink {
        Sink {
            buf: vec![0; cap],
            used: 0,
            lens: Vec::new(),
            max,
        }
    }
    pub(crate) fn messages(&self) -> Vec<Vec<u8>> {
        let mut at = 0;
        self.lens
            .iter()
            .map(|&l| {
                let m = self.buf[at..at + l as usize].to_vec();
                at += l as usize;
                m
            })
            .collect()
    }
}

// SAFETY: pointers are handed out only within `buf`, a Rust vector.
unsafe impl Incoming for Sink {
    fn slot(&mut self, index: usize, len: u32) -> Option<*mut u8> {
        if index >= self.max || self.buf.len() - self.used < len as usize {
            return None;
        }
        self.lens.push(len);
        // SAFETY: `used + len <= buf.len()`.
        let dst = unsafe { self.buf.as_mut_ptr().add(self.used) };
        self.used += len as usize;
        Some(dst)
    }
    fn max_count(&self) -> usize {
        self.max
    }
}

struct Batch(Vec<Vec<u8>>);

impl Outgoing for Batch {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn len_of(&self, index: usize) -> usize {
        self.0[index].len()
    }
    fn parts(&self, index: usize, put: &mut dyn FnMut(&[u8])) {
        // Two parts where possible: the gathered path is what is fuzzed.
        let (a, b) = self.0[index].split_at(self.0[index].len() / 2);
        put(a);
        put(b);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>),
    PutMany(Vec<Vec<u8>>),
    Get {
        cap: u16,
    },
    GetMany {
        cap: u16,
        max: u8,
    },
    /// Legacy raw write of arbitrary bytes (whatever framing they imply).
    Write(Vec<u8>),
    /// A legacy producer's framed message, prefix and payload written by
    /// two `ring_buffer_write` calls (`split` bytes in the first).
    WriteFramedInTwo {
        payload: Vec<u8>,
        split: u8,
    },
    Read(u16),
    Peek(u16),
    /// The legacy wrapper's get: `peek(4)`, then `read(4 + L)` (or, split,
    /// `read(4)` then `read(L)`), with the length it peeked plus `skew`.
    ReadPeeked {
        split: bool,
        skew: i8,
    },
    ReadChunks {
        max: u8,
    },
    Count,
    Shutdown,
    TaskDone,
    Join,
}

fn op(max_payload: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..max_payload).prop_map(Op::Put),
        2 => vec(vec(any::<u8>(), 0..max_payload / 2), 0..6).prop_map(Op::PutMany),
        6 => (0u16..600).prop_map(|cap| Op::Get { cap }),
        2 => (0u16..600, 1u8..8).prop_map(|(cap, max)| Op::GetMany { cap, max }),
        1 => vec(any::<u8>(), 0..max_payload).prop_map(Op::Write),
        2 => (vec(any::<u8>(), 0..max_payload), any::<u8>())
            .prop_map(|(payload, split)| Op::WriteFramedInTwo { payload, split }),
        1 => (0u16..300).prop_map(Op::Read),
        1 => (0u16..300).prop_map(Op::Peek),
        3 => (any::<bool>(), prop_oneof![4 => Just(0i8), 1 => -2i8..3])
            .prop_map(|(split, skew)| Op::ReadPeeked { split, skew }),
        1 => (0u8..4).prop_map(|max| Op::ReadChunks { max }),
        2 => Just(Op::Count),
        1 => Just(Op::Shutdown),
        2 => Just(Op::TaskDone),
        1 => Just(Op::Join),
    ]
}

/// What the queue should hold and answer: the byte stream ever written,
/// how far it was read, and the independent answers derived from them.
struct Model {
    legacy: bool,
    capacity: usize,
    written: Vec<u8>,
    read: usize,
    shut_down: bool,
    tasks_done: u64,
    /// A write left the stream between frames (FLAG_RAW_STREAM).
    raw: bool,
}

impl Model {
    /// An empty queue of `size` bytes (legacy layout or not).
    fn new(legacy: bool, size: u32) -> Model {
        Model {
            legacy,
            capacity: size as usize - 1,
            written: Vec::new(),
            read: 0,
            shut_down: false,
            tasks_done: 0,
            raw: false,
        }
    }

    fn queued(&self) -> VecDeque<u8> {
        self.written[self.read..].iter().copied().collect()
    }
    fn free(&self) -> usize {
        self.capacity - (self.written.len() - self.read)
    }
    /// End positions of the frames of the stream read from its start.
    fn frame_ends(&self) -> Vec<usize> {
        let (mut pos, mut ends) = (0, Vec::new());
        while pos + 4 <= self.written.len() {
            let len = u32::from_le_bytes(self.written[pos..pos + 4].try_into().unwrap()) as usize;
            let end = pos + 4 + len;
            if end > self.written.len() {
                break;
            }
            ends.push(end);
            pos = end;
        }
        ends
    }
    /// The whole frame `[start, end)` of the stream that holds byte `pos`.
    fn frame_at(&self, pos: usize) -> Option<(usize, usize)> {
        let mut start = 0;
        for end in self.frame_ends() {
            if pos < end {
                return Some((start, end));
            }
            start = end;
        }
        None
    }
    /// Whether legacy reads are checked against frames.
    fn framed(&self) -> bool {
        !self.legacy && !self.raw
    }
    /// Where the reader stands in a framed stream: whether on a frame
    /// boundary, and the end of the frame it is in (`None` at the end of the
    /// stream); `Err(Framing)` from inside a prefix.
    fn reader_frame(&self) -> Result<Option<(bool, usize)>, Error> {
        match self.frame_at(self.read) {
            Some((start, end)) if start == self.read => Ok(Some((true, end))),
            Some((start, end)) if self.read >= start + 4 => Ok(Some((false, end))),
            Some(_) => Err(Error::Framing),
            None => Ok(None),
        }
    }
    fn ends_on_frame(&self) -> bool {
        !self.legacy && self.frame_ends().last().copied().unwrap_or(0) == self.written.len()
    }
    fn messages_in(&self) -> u64 {
        self.frame_ends().len() as u64
    }
    fn messages_out(&self) -> u64 {
        self.frame_ends()
            .iter()
            .filter(|&&e| e <= self.read)
            .count() as u64
    }

    /// What a get (at most `max` messages into `cap` bytes) returns.
    fn get(&mut self, cap: usize, max: usize) -> Result<Vec<Vec<u8>>, Error> {
        let (mut pos, mut out, mut used) = (self.read, Vec::new(), 0);
        while pos < self.written.len() && out.len() < max {
            let queued = self.written.len() - pos;
            if queued < 4 {
                if out.is_empty() && self.ends_on_frame() {
                    return Err(Error::Corrupt);
                }
                break;
            }
            let len = u32::from_le_bytes(self.written[pos..pos + 4].try_into().unwrap()) as usize;
            if 4 + len > self.capacity {
                if out.is_empty() {
                    return Err(Error::Corrupt);
                }
                break;
            }
            if 4 + len > queued {
                if out.is_empty() && self.ends_on_frame() {
                    return Err(Error::Corrupt);
                }
                break;
            }
            if used + len > cap {
                if out.is_empty() {
                    return Err(Error::BufferTooSmall { needed: len as u32 });
                }
                break;
            }
            out.push(self.written[pos + 4..pos + 4 + len].to_vec());
            used += len;
            pos += 4 + len;
        }
        if out.is_empty() {
            return Err(if self.shut_down {
                Error::Shutdown
            } else {
                Error::Empty
            });
        }
        self.read = pos;
        Ok(out)
    }

    fn put(&mut self, msgs: &[Vec<u8>]) -> Result<usize, Error> {
        if msgs.is_empty() {
            return Err(Error::InvalidArg);
        }
        if msgs.iter().any(|m| 4 + m.len() > self.capacity) {
            return Err(Error::TooLarge);
        }
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        let mut sent = 0;
        for m in msgs {
            if 4 + m.len() > self.free() {
                break;
            }
            self.written
                .extend_from_slice(&(m.len() as u32).to_le_bytes());
            self.written.extend_from_slice(m);
            sent += 1;
        }
        if sent == 0 {
            Err(Error::Full)
        } else {
            Ok(sent)
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<u64, Error> {
        if bytes.is_empty() {
            return Err(Error::InvalidArg);
        }
        if bytes.len() > self.capacity {
            return Err(Error::TooLarge);
        }
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        if bytes.len() > self.free() {
            return Err(Error::Full);
        }
        let ends = self.frame_ends();
        let on_frame = |pos: usize, ends: &[usize]| pos == 0 || ends.contains(&pos);
        let started_on_frame = on_frame(self.written.len(), &ends);
        self.written.extend_from_slice(bytes);
        if !(started_on_frame && on_frame(self.written.len(), &self.frame_ends())) {
            self.raw = true;
        }
        Ok(bytes.len() as u64)
    }

    fn read_bytes(&mut self, n: usize, consume: bool) -> Result<Vec<u8>, Error> {
        if n == 0 {
            return Err(Error::InvalidArg);
        }
        if self.written.len() - self.read < n {
            return Err(Error::Empty);
        }
        if consume && self.framed() {
            // From a boundary: the prefix alone or the whole frame; from
            // inside a payload: the rest of it.
            let whole = match self.reader_frame()? {
                Some((boundary, end)) => self.read + n == end || (boundary && n == 4),
                None => false,
            };
            if !whole {
                return Err(Error::Framing);
            }
        }
        let bytes = self.written[self.read..self.read + n].to_vec();
        if consume {
            self.read += n;
        }
        Ok(bytes)
    }
}

/// Applies `op` to the queue and to the model; they must agree.
fn check_op(view: View<'_>, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Put(m) => {
            let got = view.send(&Batch(vec![m.clone()]), Wait::Try);
            prop_assert_eq!(got, model.put(std::slice::from_ref(m)));
        }
        Op::PutMany(ms) => {
            let got = view.send(&Batch(ms.clone()), Wait::Try);
            prop_assert_eq!(got, model.put(ms));
        }
        Op::Get { cap } | Op::GetMany { cap, .. } => {
            let max = if let Op::GetMany { max, .. } = op {
                *max as usize
            } else {
                1
            };
            let mut sink = Sink::new(*cap as usize, max);
            let got = view.recv(&mut sink, Wait::Try).map(|n| {
                assert_eq!(n, sink.lens.len());
                sink.messages()
            });
            prop_assert_eq!(got, model.get(*cap as usize, max));
        }
        Op::Write(bytes) => {
            prop_assert_eq!(view.write_bytes(&[bytes]), model.write(bytes));
        }
        Op::WriteFramedInTwo { payload, split } => {
            let mut framed = (payload.len() as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(payload);
            let split = (*split as usize).min(framed.len());
            for part in [&framed[..split], &framed[split..]] {
                prop_assert_eq!(view.write_bytes(&[part]), model.write(part));
            }
        }
        Op::Read(n) | Op::Peek(n) => {
            let consume = matches!(op, Op::Read(_));
            let mut buf = vec![0u8; *n as usize];
            let got = view.read_bytes(&mut buf, consume).map(|()| buf);
            prop_assert_eq!(got, model.read_bytes(*n as usize, consume));
        }
        Op::ReadPeeked { split, skew } => {
            let mut prefix = [0u8; 4];
            let got = view
                .read_bytes(&mut prefix, false)
                .map(|()| prefix.to_vec());
            let want = model.read_bytes(4, false);
            prop_assert_eq!(&got, &want);
            if let Ok(prefix) = want {
                let len = u32::from_le_bytes(prefix.try_into().unwrap()) as i64 + *skew as i64;
                let len = len.clamp(0, 600) as usize;
                let reads = if *split { vec![4, len] } else { vec![4 + len] };
                for n in reads.into_iter().filter(|&n| n > 0) {
                    let mut buf = vec![0u8; n];
                    let got = view.read_bytes(&mut buf, true).map(|()| buf);
                    prop_assert_eq!(got, model.read_bytes(n, true));
                }
            }
        }
        Op::ReadChunks { max } => {
            let mut store: Vec<Vec<u8>> = Vec::new();
            let mut alloc = |len: usize| {
                store.push(vec![0u8; len]);
                Some(store.last_mut().unwrap().as_mut_ptr())
            };
            let got = view.read_chunks(*max as usize, 16, &mut alloc, &mut |_| {});
            let limit = (model.written.len() - model.read).min(*max as usize * 16);
            let expect = if limit == 0 || !model.framed() {
                Ok(limit)
            } else {
                // Whole frames only: up to the last frame end within `limit`.
                let stop = model.read + limit;
                match model.reader_frame() {
                    Ok(Some((_, first_end))) if first_end <= stop => {
                        let last = model.frame_ends().into_iter().filter(|&e| e <= stop).max();
                        Ok(last.unwrap_or(first_end) - model.read)
                    }
                    Ok(_) => Err(Error::Framing),
                    Err(e) => Err(e),
                }
            };
            let got = got.map(|chunks| chunks.iter().map(|c| c.1).sum::<usize>());
            prop_assert_eq!(got, expect);
            let bytes: Vec<u8> = store.concat();
            let taken = expect.unwrap_or(0);
            prop_assert_eq!(&bytes[..], &model.written[model.read..model.read + taken]);
            model.read += taken;
        }
        Op::Count => {
            let expect = if model.legacy {
                // Walked from `head` on a legacy object.
                let q = model.queued();
                let (mut pos, mut n) = (0usize, 0u64);
                while q.len() - pos >= 4 {
                    let p: Vec<u8> = q.range(pos..pos + 4).copied().collect();
                    let f = 4 + u32::from_le_bytes(p.try_into().unwrap()) as usize;
                    if f > q.len() - pos {
                        break;
                    }
                    pos += f;
                    n += 1;
                }
                n
            } else {
                model.messages_in().saturating_sub(model.messages_out())
            };
            prop_assert_eq!(view.msg_count(), Ok(expect));
        }
        Op::Shutdown => {
            if model.legacy {
                prop_assert_eq!(view.shutdown(), Err(Error::Incompatible));
            } else {
                prop_assert_eq!(view.shutdown(), Ok(()));
                model.shut_down = true;
            }
        }
        Op::TaskDone => {
            let expect = if model.legacy {
                Err(Error::Incompatible)
            } else if model.tasks_done < model.messages_out() {
                model.tasks_done += 1;
                Ok(())
            } else {
                Err(Error::InvalidArg)
            };
            prop_assert_eq!(view.task_done(), expect);
        }
        Op::Join => {
            let expect = if model.legacy {
                Err(Error::Incompatible)
            } else if model.messages_in() <= model.tasks_done {
                Ok(())
            } else {
                Err(Error::Timeout)
            };
            prop_assert_eq!(view.join(Wait::Try), expect);
        }
    }
    // The header's counters always match the model's stream.
    prop_assert_eq!(view.ring.tail.load(Relaxed), model.written.len() as u64);
    prop_assert_eq!(view.ring.head.load(Relaxed), model.read as u64);
    Ok(())
}

/// Runs `op` and the observers, accepting any answer: on a scribbled queue
/// only a panic, an access outside the object or a wait would be wrong.
fn exercise(view: View<'_>, op: &Op) {
    match op {
        Op::Put(m) => {
            let _ = view.send(&Batch(vec![m.clone()]), Wait::Try);
        }
        Op::PutMany(ms) => {
            let _ = view.send(&Batch(ms.clone()), Wait::Try);
        }
        Op::Get { cap } => {
            let _ = view.recv(&mut Sink::new(*cap as usize, 1), Wait::Try);
        }
        Op::GetMany { cap, max } => {
            let _ = view.recv(&mut Sink::new(*cap as usize, *max as usize), Wait::Try);
        }
        Op::Write(bytes) => {
            let _ = view.write_bytes(&[bytes]);
        }
        Op::WriteFramedInTwo { payload, .. } => {
            let _ = view.write_bytes(&[&[1, 0, 0, 0], payload]);
        }
        Op::Read(n) | Op::Peek(n) => {
            let _ = view.read_bytes(&mut vec![0u8; *n as usize], matches!(op, Op::Read(_)));
        }
        Op::ReadPeeked { skew, .. } => {
            let mut prefix = [0u8; 4];
            if view.read_bytes(&mut prefix, false).is_ok() {
                let len = (u32::from_le_bytes(prefix) as i64 + *skew as i64).clamp(0, 600);
                let _ = view.read_bytes(&mut vec![0u8; 4 + len as usize], true);
            }
        }
        Op::ReadChunks { max } => {
            let mut store: Vec<Vec<u8>> = Vec::new();
            let mut alloc = |len: usize| {
                store.push(vec![0u8; len]);
                Some(store.last_mut().unwrap().as_mut_ptr())
            };
            let _ = view.read_chunks(*max as usize, 16, &mut alloc, &mut |_| {});
        }
        Op::Count => {
            let _ = view.msg_count();
        }
        Op::Shutdown => {
            let _ = view.shutdown();
        }
        Op::TaskDone => {
            let _ = view.task_done();
        }
        Op::Join => {
            let _ = view.join(Wait::Try);
        }
    }
    let _ = view.available_read();
    let _ = view.available_write();
    let _ = view.stats_ex(0);
    let _ = view.unfinished_tasks();
}

fn cases() -> u32 {
    std::env::var("RB_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20_000)
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// Whether a case uses a legacy (version 1) image rather than a version-2
/// one. Under Miri too both kinds run: the version-2 locks are the
/// library's futex locks (`sync::lock`), which the single-threaded
/// properties lock uncontended, so the extension block, the locking,
/// journaling, counting and framing paths are all checked.
fn legacy_layout() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.2)
}

fn sizes() -> impl Strategy<Value = u32> {
    prop_oneof![Just(16u32), Just(32), Just(64), Just(256), Just(1024)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn operations_match_the_model(
        legacy in legacy_layout(),
        size in sizes(),
        ops in vec(op(80), 1..60),
    ) {
        let q = HeapQueue::new(if legacy { RING_BUFFER_VERSION_LEGACY } else { RING_BUFFER_VERSION }, size);
        let mut model = Model::new(legacy, size);
        for op in &ops {
            check_op(q.view(), &mut model, op)?;
        }
        prop_assert!(q.guards_intact());
    }

    #[test]
    fn arbitrary_bytes_never_break_memory_safety(
        legacy in legacy_layout(),
        size in sizes(),
        warmup in vec(op(60), 0..10),
        scribbles in vec((any::<u16>(), vec(any::<u8>(), 1..16)), 1..12),
        ops in vec(op(80), 1..40),
    ) {
        let mut q = HeapQueue::new(if legacy { RING_BUFFER_VERSION_LEGACY } else { RING_BUFFER_VERSION }, size);
        let mut model = Model::new(legacy, size);
        for op in &warmup {
            check_op(q.view(), &mut model, op)?;
        }
        for (offset, bytes) in &scribbles {
            let offset = *offset as usize % q.size;
            q.scribble(offset, bytes);
        }
        let view = q.view();
        for op in &ops {
            exercise(view, op);
        }
        prop_assert!(q.guards_intact());
    }
}

/// A legacy drain whose allocator refuses part-way keeps whole frames on a
/// framed stream (the chunks past the last frame end go back), and stops
/// where it stopped on a raw one.
#[test]
fn refused_allocation_cuts_a_drain_at_a_frame_end() {
    for raw in [false, true] {
        let q = HeapQueue::new(RING_BUFFER_VERSION, 1024);
        let view = q.view();
        if raw {
            view.write_bytes(&[b"raw!"]).unwrap();
            view.read_bytes(&mut [0u8; 4], true).unwrap();
        }
        let frame = |b: u8| [&10u32.to_le_bytes()[..], &[b; 10]].concat();
        for b in [1u8, 2, 3] {
            view.write_bytes(&[&frame(b)]).unwrap();
        }
        let mut store: Vec<Vec<u8>> = Vec::new();
        let mut released = 0;
        let mut alloc = |len: usize| {
            (store.len() < 3).then(|| {
                store.push(vec![0u8; len]);
                store.last_mut().unwrap().as_mut_ptr()
            })
        };
        let chunks = view
            .read_chunks(10, 8, &mut alloc, &mut |_| released += 1)
            .unwrap();
        let taken: usize = chunks.iter().map(|c| c.1).sum();
        if raw {
            // Three 8-byte chunks, whatever the frames.
            assert_eq!((taken, released), (24, 0));
        } else {
            // The first frame (14 bytes) only: 8 + 6, the third block back.
            assert_eq!(chunks.iter().map(|c| c.1).collect::<Vec<_>>(), [8, 6]);
            assert_eq!((taken, released), (14, 1));
            let mut rest = [0u8; 28];
            view.read_bytes(&mut rest, false).unwrap();
            assert_eq!(&rest[..], &[frame(2), frame(3)].concat()[..]);
        }
    }
}
