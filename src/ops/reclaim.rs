//! Reclaiming the side objects of dead processes (see `crate::side`): run by
//! every open of a queue (its next user) and by `ring_buffer_reclaim`
//! (`sage-queue gc`).

use super::Role;
use crate::error::Result;
use crate::pool;
use crate::segment::View;
use crate::side;
use crate::sync::deadline::Wait;

impl View<'_> {
    /// Removes this queue's orphaned side objects: those nobody holds a
    /// `flock` on and no queued descriptor names; and frees the slots of its
    /// pool that dead processes left claimed (see `crate::pool`), and with
    /// `trim_pool` removes the free slots nobody holds (`sage-queue gc`
    /// gives their memory back). Returns how many orphans it removed or
    /// freed.
    ///
    /// Under the reader lock no consumer takes a descriptor; an exclusive
    /// `flock` on a side object means its producer has published it or died
    /// (it holds its shared lock from before the object had a name until
    /// after the publication), so `tail`, read after the locks, covers every
    /// descriptor that will ever name it. On a raw stream (legacy writes cut
    /// frames) the queued frames cannot be walked: nothing is removed.
    pub(crate) fn reclaim_side_objects(&self, trim_pool: bool) -> Result<usize> {
        let (Some(name), Some(_)) = (self.name, self.ext) else {
            return Ok(0);
        };
        let (slots, ids): (Vec<_>, Vec<_>) = side::list(name)?
            .into_iter()
            .partition(|id| pool::slot_of_file_id(id).is_some());
        if ids.is_empty() && slots.is_empty() {
            return Ok(0);
        }
        let _guard = self.lock(Role::Reader, Wait::Try)?;
        // The exclusive locks first, then the queued frames: a locked side
        // object or slot was published (its producer held its shared lock
        // until after) or its producer died, so the frames read below name
        // it if anything ever will.
        let unused: Vec<_> = ids
            .iter()
            .filter_map(|id| side::lock_unused(name, id))
            .collect();
        let slots: Vec<_> = slots
            .iter()
            .filter_map(|id| pool::slot_of_file_id(id))
            .filter_map(|k| pool::lock_slot(name, k))
            .collect();
        crate::failpoint::hit("reclaim_locked");
        if !self.stream_is_framed() {
            return Ok(0);
        }
        // The slots whose holders are gone, judged before the frames are
        // read (see `crate::pool`).
        let mixed = self.queue_marks().mixed_pid_ns;
        let candidates: Vec<_> = slots
            .iter()
            .filter_map(|s| s.orphan_candidate(mixed).map(|state| (s, state)))
            .collect();
        // Free slots and those of live holders are nobody's orphans: only
        // the candidates and one-shot objects need the queued frames, a walk
        // as long as the queue (skipped at the opens of a queue whose slots
        // are all free).
        let mut freed = 0;
        if !unused.is_empty() || !candidates.is_empty() {
            let Some(referenced) = self.queued_side_ids()? else {
                return Ok(0);
            };
            let queued = |id: &[u8]| referenced.iter().any(|r| r == id);
            freed = candidates
                .iter()
                .filter(|(s, state)| s.free_if_orphan(*state, queued))
                .count()
                + unused
                    .into_iter()
                    .filter(|u| !queued(&u.id))
                    .map(|u| usize::from(u.remove(name)))
                    .sum::<usize>();
        }
        if trim_pool {
            slots.iter().for_each(pool::LockedSlot::remove_if_free);
        }
        Ok(freed)
    }

    /// The ids of the side objects the queued descriptors name (the reader
    /// lock is held), or `None` if the reader stands inside a frame's prefix
    /// (a legacy raw read) and the frames cannot be followed.
    fn queued_side_ids(&self) -> Result<Option<Vec<Vec<u8>>>> {
        // The real `tail`, not the readers' cached copy: every descriptor
        // published so far must count as referenced.
        let (head, tail) = self.refresh(Role::Reader)?;
        let mut pos = head;
        if let Some(track) = self.tracker(Role::Reader) {
            match track.payload_left() {
                Some(rest) => pos += u64::from(rest),
                None if !track.is_boundary() => return Ok(None),
                None => {}
            }
        }
        let mut ids = Vec::new();
        self.for_each_queued_descriptor(pos, tail, usize::MAX, |d| {
            ids.push(d.id);
            true
        });
        Ok(Some(ids))
    }
}
