//! Task accounting across processes (`task_done`/`join` of `queue.Queue`):
//! a message is an open task from its publication until some process calls
//! `task_done` for it. Open tasks = messages published - tasks done.
//!
//! The accounting and its handshake ([`task_done`], [`join`]) work on the
//! extension block alone, so that the loom models (`loom_models.rs`) run
//! this very code.

use super::wait::wake;
use crate::error::{Error, Result};
use crate::layout::Extension;
use crate::segment::View;
use crate::sync::atomic::{fence, Ordering::*};
use crate::sync::deadline::Wait;
use crate::sync::futex::{self, Woken};

impl View<'_> {
    /// Marks one consumed message as processed. `InvalidArg` if that would
    /// mark more tasks done than messages were consumed.
    pub(crate) fn task_done(&self) -> Result<()> {
        task_done(self.ext.ok_or(Error::Incompatible)?)
    }

    /// Tasks published and not yet marked done.
    pub(crate) fn unfinished_tasks(&self) -> Result<u64> {
        Ok(unfinished_tasks(self.ext.ok_or(Error::Incompatible)?))
    }

    /// Waits until every published message has been marked done.
    pub(crate) fn join(&self, wait: Wait) -> Result<()> {
        join(self.ext.ok_or(Error::Incompatible)?, wait)
    }
}

/// [`View::task_done`] on the extension block: the task count, then, when
/// that closed the last open task and a joiner announced itself, a wake-up.
pub(super) fn task_done(ext: &Extension) -> Result<()> {
    let done = &ext.identity.tasks_done;
    let consumed = ext.reader.messages.load(Acquire);
    let now = done
        .fetch_update(AcqRel, Acquire, |d| (d < consumed).then_some(d + 1))
        .map_err(|_| Error::InvalidArg)?
        + 1;
    // Pairs with the joiner's SeqCst store of `join_wanted`.
    fence(SeqCst);
    let signals = &ext.signals;
    if now >= ext.writer.messages.load(Acquire)
        && signals.join_wanted.load(Relaxed) != 0
        && signals.join_wanted.swap(0, SeqCst) != 0
    {
        wake(&ext.signals.join_seq);
        ext.signals.wakeups.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// [`View::unfinished_tasks`] on the extension block.
pub(super) fn unfinished_tasks(ext: &Extension) -> u64 {
    let done = ext.identity.tasks_done.load(Acquire);
    ext.writer.messages.load(Acquire).saturating_sub(done)
}

/// [`View::join`] on the extension block.
pub(super) fn join(ext: &Extension, wait: Wait) -> Result<()> {
    let signals = &ext.signals;
    loop {
        if unfinished_tasks(ext) == 0 {
            return Ok(());
        }
        if wait.expired() {
            return Err(Error::Timeout);
        }
        let expected = signals.join_seq.load(SeqCst);
        signals.join_sleepers.fetch_add(1, SeqCst);
        signals.join_wanted.store(1, SeqCst);
        // The re-check must not move before the flag's store: pairs with
        // `task_done`'s fence, as in `wait::sleep_unless` (without it the
        // Acquire loads of the re-check may read counts older than a
        // `task_done` that in turn missed the flag, and the joiner sleeps
        // for ever; the loom model `loom_join_returns_when_the_last_task_is_done`
        // finds that schedule).
        fence(SeqCst);
        let woken = if unfinished_tasks(ext) == 0 {
            Woken::Maybe
        } else {
            futex::wait(&signals.join_seq, expected, wait.deadline())
        };
        signals.join_sleepers.fetch_sub(1, SeqCst);
        if woken == Woken::TimedOut && wait.expired() {
            return Err(Error::Timeout);
        }
    }
}
