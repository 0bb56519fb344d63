//! The task table: every alive task's spawn site, spawn time and the start of its latest poll, so
//! that the flusher can say, per spawn site, how long tasks have waited since they were last
//! polled (a deadlocked or forgotten task is one that is never polled again).
//!
//! A table of [`SLOTS`] places indexed by tokio's task id: a task goes to the place its id maps
//! to, or to a second one half the table away when an older task holds the first (tokio's ids
//! count up, so places are reused in order and only long-lived tasks collide). A task that finds
//! both taken is not followed (counted as untracked). Per poll the cost is one load, one compare
//! and one store into the task's place, beside the poll's other clock store. Memory: [`SLOTS`] ×
//! 32 bytes (2 MiB), whatever the program does.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::runtime::TaskMeta;

/// Places in the table.
pub(crate) const SLOTS: usize = 1 << 16;

/// A task's latest poll is kept to within this many clock units (2^20: about 0.3 ms of a 3 GHz
/// TSC, 1 ms of a nanosecond clock).
pub(crate) const STEP: u64 = 1 << 20;

#[repr(align(32))]
struct Slot {
    /// The task's id; 0 when free.
    id: AtomicU64,
    site: AtomicU32,
    /// Raw clock at spawn; 0 while the place is being filled or emptied.
    spawned: AtomicU64,
    /// Raw clock at the start of the latest poll; 0 before the first.
    last: AtomicU64,
}

/// One alive task, as the flusher reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskView {
    pub(crate) id: u64,
    pub(crate) site: u32,
    /// Raw clock at spawn.
    pub(crate) spawned: u64,
    /// Raw clock at the start of the latest poll, 0 if never polled.
    pub(crate) last: u64,
}

/// See the module's documentation.
pub(crate) struct TaskTable {
    slots: Box<[Slot]>,
}

/// tokio's task id as a number. `tokio::task::Id` shows it (`Display`) and hashes it (its only
/// field, a `NonZeroU64`, hashed with `write_u64`) but has no accessor: a hasher that keeps what
/// it is given reads it without formatting.
#[inline(always)]
pub(crate) fn task_id(meta: &TaskMeta<'_>) -> u64 {
    id_of(&meta.id())
}

#[inline(always)]
pub(crate) fn id_of(id: &tokio::task::Id) -> u64 {
    struct Keep(u64);
    impl Hasher for Keep {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            // Not reached for tokio's ids (`write_u64` below); kept whole for any other layout.
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }
    let mut h = Keep(0);
    id.hash(&mut h);
    h.0
}

impl TaskTable {
    pub(crate) fn new() -> Self {
        // Zeroed memory is an empty table (all atomics 0), and the allocator hands large zeroed
        // blocks out as untouched pages: a place costs memory once a task has used it.
        // SAFETY: every field of `Slot` is an atomic integer, for which all-zero bytes are valid.
        TaskTable { slots: unsafe { Box::<[Slot]>::new_zeroed_slice(SLOTS).assume_init() } }
    }

    #[inline(always)]
    fn places(id: u64) -> [usize; 2] {
        let a = (id as usize) & (SLOTS - 1);
        [a, a ^ (SLOTS / 2)]
    }

    /// A task was spawned: takes a place for it. False when both its places are taken.
    pub(crate) fn spawn(&self, id: u64, site: u32, now: u64) -> bool {
        if id == 0 {
            return false;
        }
        for p in Self::places(id) {
            let s = &self.slots[p];
            if s.id.compare_exchange(0, id, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                s.site.store(site, Ordering::Relaxed);
                s.last.store(0, Ordering::Relaxed);
                // Last: a reader takes the place as filled once `spawned` is set (Release: after
                // the site and the last poll).
                s.spawned.store(now.max(1), Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Frees every place taken by a task spawned before `raw` (when the runtime has no task).
    pub(crate) fn clear_spawned_before(&self, raw: u64) {
        for s in self.slots.iter() {
            let id = s.id.load(Ordering::Acquire);
            let spawned = s.spawned.load(Ordering::Acquire);
            // Emptied only if still the task read: a place freed and taken again meanwhile has
            // another `spawned`, which the first exchange keeps.
            if id != 0
                && spawned != 0
                && spawned < raw
                && s.spawned.compare_exchange(spawned, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                let _ = s.id.compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    /// A task is being polled: the start of its poll is its latest. Stored only when the one
    /// kept is older than [`STEP`]: idle times are wanted in milliseconds and up, and a task polled
    /// thousands of times a second (on either worker) then leaves its place's cache line shared
    /// instead of moving it between cores at every poll.
    #[inline(always)]
    pub(crate) fn polled(&self, id: u64, now: u64) {
        let [a, b] = Self::places(id);
        // SAFETY: `places` masks with `SLOTS - 1`, and the table has `SLOTS` places.
        let mut s = unsafe { self.slots.get_unchecked(a) };
        if s.id.load(Ordering::Relaxed) != id {
            // SAFETY: as above.
            s = unsafe { self.slots.get_unchecked(b) };
            if s.id.load(Ordering::Relaxed) != id {
                return;
            }
        }
        if now.wrapping_sub(s.last.load(Ordering::Relaxed)) > STEP {
            s.last.store(now, Ordering::Relaxed);
        }
    }

    /// A task ended: frees its place.
    pub(crate) fn terminated(&self, id: u64) {
        for p in Self::places(id) {
            let s = &self.slots[p];
            if s.id.load(Ordering::Relaxed) == id {
                s.spawned.store(0, Ordering::Relaxed);
                let _ = s.id.compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed);
                return;
            }
        }
    }

    /// The task with this id, if followed.
    #[cfg_attr(not(feature = "taskdump"), allow(dead_code))]
    pub(crate) fn get(&self, id: u64) -> Option<TaskView> {
        Self::places(id).into_iter().find_map(|p| self.read(p).filter(|t| t.id == id))
    }

    /// Puts a task's latest poll back to `to` if it is still `seen`: a task dump wakes every task
    /// once (tokio re-polls what it traced), and that poll is not the program's.
    #[cfg_attr(not(feature = "taskdump"), allow(dead_code))]
    pub(crate) fn restore(&self, id: u64, seen: u64, to: u64) {
        for p in Self::places(id) {
            let s = &self.slots[p];
            if s.id.load(Ordering::Acquire) == id {
                let _ = s.last.compare_exchange(seen, to, Ordering::Relaxed, Ordering::Relaxed);
                return;
            }
        }
    }

    fn read(&self, p: usize) -> Option<TaskView> {
        let s = &self.slots[p];
        let id = s.id.load(Ordering::Acquire);
        if id == 0 {
            return None;
        }
        let spawned = s.spawned.load(Ordering::Acquire);
        let site = s.site.load(Ordering::Relaxed);
        let last = s.last.load(Ordering::Relaxed);
        // The loads above before the check below: a place emptied or refilled meanwhile shows a
        // changed id or `spawned`, and is left for the next reading.
        std::sync::atomic::fence(Ordering::Acquire);
        let settled = s.id.load(Ordering::Relaxed) == id && s.spawned.load(Ordering::Relaxed) == spawned;
        (spawned != 0 && settled).then_some(TaskView { id, site, spawned, last })
    }

    /// Every task followed, in no order.
    pub(crate) fn alive(&self) -> impl Iterator<Item = TaskView> + '_ {
        (0..SLOTS).filter_map(|p| self.read(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_from_the_hash_are_tokios_ids() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for _ in 0..3 {
            let h = rt.spawn(async { tokio::task::id() });
            let id = rt.block_on(h).unwrap();
            assert_eq!(id_of(&id), id.to_string().parse::<u64>().unwrap());
        }
    }

    #[test]
    fn a_task_takes_its_place_or_the_one_half_a_table_away_and_frees_it() {
        // Raw clock values as a machine's counter gives them (far from 0).
        let t0 = 1u64 << 40;
        let t = TaskTable::new();
        assert!(t.spawn(7, 1, t0 + 100));
        assert!(t.spawn(7 + SLOTS as u64, 2, t0 + 200), "the second place");
        assert!(!t.spawn(7 + 2 * SLOTS as u64, 3, t0 + 300), "both taken");
        t.polled(7 + SLOTS as u64, t0 + 250);
        let view = |last| Some(TaskView { id: 7 + SLOTS as u64, site: 2, spawned: t0 + 200, last });
        assert_eq!(t.get(7 + SLOTS as u64), view(t0 + 250));
        // Within a step of the last one kept, a poll changes nothing; past it, it is kept.
        t.polled(7 + SLOTS as u64, t0 + 250 + STEP);
        assert_eq!(t.get(7 + SLOTS as u64), view(t0 + 250));
        t.polled(7 + SLOTS as u64, t0 + 251 + STEP);
        assert_eq!(t.get(7 + SLOTS as u64), view(t0 + 251 + STEP));
        assert_eq!(t.get(7).map(|v| v.last), Some(0), "never polled");
        t.terminated(7);
        assert_eq!(t.get(7), None);
        assert_eq!(t.alive().count(), 1);
        assert!(t.spawn(7 + 2 * SLOTS as u64, 3, t0 + 300), "a freed place is taken again");
        t.polled(12345, t0);
        assert_eq!(t.alive().count(), 2, "a poll of an unknown task changes nothing");
        t.clear_spawned_before(t0 + 250);
        assert_eq!(t.alive().map(|v| v.id).collect::<Vec<_>>(), vec![7 + 2 * SLOTS as u64], "spawned later, kept");
    }
}
