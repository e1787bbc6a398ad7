//! The dead-owner repair ([`View::repair`]) on a heap image of a version-2
//! object: a side left at each point of `publish` where its owner can die is
//! put back so that its counts agree with the published counter, and the
//! queue goes on. (The chaos suites kill real processes at those points;
//! these tests also run under Miri, `make miri`.)

use std::sync::atomic::Ordering::Relaxed;

use super::Role;
use crate::error::Error;
use crate::fuzz_tests::{HeapQueue, Sink};
use crate::layout::{Side, RING_BUFFER_VERSION};
use crate::segment::View;
use crate::sync::deadline::Wait;

/// The words `publish` stores after the journal: restoring them undoes a
/// publication whose owner "died" before storing them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counts {
    own: u64,
    messages: u64,
    track: u64,
}

fn counts(side: &Side) -> Counts {
    Counts {
        own: side.own.load(Relaxed),
        messages: side.messages.load(Relaxed),
        track: side.track.load(Relaxed),
    }
}

fn restore(side: &Side, c: Counts) {
    side.own.store(c.own, Relaxed);
    side.messages.store(c.messages, Relaxed);
    side.track.store(c.track, Relaxed);
}

fn send(view: View<'_>, msg: &[u8]) {
    assert_eq!(view.send(&[msg][..], Wait::Try), Ok(1));
}

fn recv_all(view: View<'_>) -> Vec<Vec<u8>> {
    let mut sink = Sink::new(1024, 64);
    match view.recv(&mut sink, Wait::Try) {
        Ok(_) => sink.messages(),
        Err(Error::Empty) => Vec::new(),
        Err(e) => panic!("recv failed: {e:?}"),
    }
}

fn sides(view: View<'_>) -> (&Side, &Side) {
    let ext = view.ext.expect("a version-2 image");
    (&ext.writer, &ext.reader)
}

/// A producer died after publishing `tail` (its journal complete) but
/// before its message count, framing state and own copy of `tail`, inside
/// a legacy write call: the repair applies the journal.
#[test]
fn a_writer_dead_after_its_publication_is_counted() {
    let q = HeapQueue::new(RING_BUFFER_VERSION, 1024);
    let view = q.view();
    let (writer, _) = sides(view);
    send(view, b"zero");
    let before = counts(writer);
    send(view, b"one");
    restore(writer, before);
    view.header.writers().store(1, Relaxed);
    view.repair(Role::Writer, writer);
    assert_eq!(writer.own.load(Relaxed), view.ring.tail.load(Relaxed));
    assert_eq!(writer.messages.load(Relaxed), 2);
    assert_eq!(view.header.writers().load(Relaxed), 0);
    assert_eq!(writer.recoveries.load(Relaxed), 1);
    assert_eq!(view.msg_count(), Ok(2));
    assert_eq!(recv_all(view), [b"zero".to_vec(), b"one".to_vec()]);
    send(view, b"two");
    assert_eq!(recv_all(view), [b"two".to_vec()]);
    assert_eq!(view.msg_count(), Ok(0));
}

/// A producer died after its journal but before publishing `tail`: nothing
/// it did is visible, its message is lost (its own only), the counts stay.
#[test]
fn a_writer_dead_before_its_publication_leaves_no_trace() {
    let q = HeapQueue::new(RING_BUFFER_VERSION, 1024);
    let view = q.view();
    let (writer, _) = sides(view);
    send(view, b"zero");
    let (before, tail) = (counts(writer), view.ring.tail.load(Relaxed));
    send(view, b"one");
    restore(writer, before);
    view.ring.tail.store(tail, Relaxed);
    view.repair(Role::Writer, writer);
    assert_eq!(counts(writer), before);
    assert_eq!(view.msg_count(), Ok(1));
    assert_eq!(recv_all(view), [b"zero".to_vec()]);
    send(view, b"two");
    assert_eq!(recv_all(view), [b"two".to_vec()]);
}

/// A consumer died after publishing `head` but before its counts: the
/// message it took is consumed and counted as such.
#[test]
fn a_reader_dead_after_its_publication_is_counted() {
    let q = HeapQueue::new(RING_BUFFER_VERSION, 1024);
    let view = q.view();
    let (_, reader) = sides(view);
    for m in [&b"zero"[..], b"one", b"two"] {
        send(view, m);
    }
    let before = counts(reader);
    let mut one = Sink::new(1024, 1);
    assert_eq!(view.recv(&mut one, Wait::Try), Ok(1));
    restore(reader, before);
    view.header.readers().store(1, Relaxed);
    view.repair(Role::Reader, reader);
    assert_eq!(reader.own.load(Relaxed), view.ring.head.load(Relaxed));
    assert_eq!(reader.messages.load(Relaxed), 1);
    assert_eq!(view.header.readers().load(Relaxed), 0);
    assert_eq!(view.msg_count(), Ok(2));
    assert_eq!(recv_all(view), [b"one".to_vec(), b"two".to_vec()]);
}

/// A consumer died before publishing `head`: the message stays queued for
/// the next consumer.
#[test]
fn a_reader_dead_before_its_publication_leaves_the_message() {
    let q = HeapQueue::new(RING_BUFFER_VERSION, 1024);
    let view = q.view();
    let (_, reader) = sides(view);
    send(view, b"zero");
    send(view, b"one");
    let (before, head) = (counts(reader), view.ring.head.load(Relaxed));
    let mut one = Sink::new(1024, 1);
    assert_eq!(view.recv(&mut one, Wait::Try), Ok(1));
    restore(reader, before);
    view.ring.head.store(head, Relaxed);
    view.repair(Role::Reader, reader);
    assert_eq!(counts(reader), before);
    assert_eq!(view.msg_count(), Ok(2));
    assert_eq!(recv_all(view), [b"zero".to_vec(), b"one".to_vec()]);
}
