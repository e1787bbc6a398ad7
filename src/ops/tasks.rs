//! Task accounting across processes (`task_done`/`join` of `queue.Queue`):
//! a message is an open task from its publication until some process calls
//! `task_done` for it. Open tasks = messages published - tasks done.

use std::sync::atomic::{fence, Ordering::*};

use super::wait::wake;
use crate::error::{Error, Result};
use crate::segment::View;
use crate::sync::deadline::Wait;
use crate::sync::futex::{self, Woken};

impl View<'_> {
    /// Marks one consumed message as processed. `InvalidArg` if that would
    /// mark more tasks done than messages were consumed.
    pub(crate) fn task_done(&self) -> Result<()> {
        let ext = self.ext.ok_or(Error::Incompatible)?;
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

    /// Tasks published and not yet marked done.
    pub(crate) fn unfinished_tasks(&self) -> Result<u64> {
        let ext = self.ext.ok_or(Error::Incompatible)?;
        let done = ext.identity.tasks_done.load(Acquire);
        Ok(ext.writer.messages.load(Acquire).saturating_sub(done))
    }

    /// Waits until every published message has been marked done.
    pub(crate) fn join(&self, wait: Wait) -> Result<()> {
        let ext = self.ext.ok_or(Error::Incompatible)?;
        let signals = &ext.signals;
        loop {
            if self.unfinished_tasks()? == 0 {
                return Ok(());
            }
            if wait.expired() {
                return Err(Error::Timeout);
            }
            let expected = signals.join_seq.load(SeqCst);
            signals.join_sleepers.fetch_add(1, SeqCst);
            signals.join_wanted.store(1, SeqCst);
            let woken = if self.unfinished_tasks()? == 0 {
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
}
