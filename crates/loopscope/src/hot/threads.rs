//! The threads that poll tasks: one slot each, holding what the watchdog reads (the poll in
//! progress, the last long poll) and the thread's cells, one per spawn site. A slot's place is
//! freed once its thread has exited and the flusher has taken its last polls.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use loopscope_core::model::WorkerDecl;

use crate::hot::cells::SiteCells;

/// Most threads recorded at once in one session; a thread's place is freed once it has exited
/// and its last polls were flushed, so a program that starts threads without end (a
/// `block_in_place`-heavy one, a blocking pool with a short keep-alive) keeps being recorded.
pub(crate) const MAX_THREADS: usize = 1024;

/// Most worker ids one session hands out (the readers' limit of declared workers).
pub(crate) const MAX_WORKER_IDS: u32 = loopscope_core::validate::MAX_WORKERS as u32;

/// Most (thread, spawn site) cells alive at once in one session, about 10 KB each in the hot
/// path plus as much in the flusher: 2,048 bound them to about 40 MB whatever the program does.
/// Polls of further pairs are not recorded (said once).
pub(crate) const MAX_CELLS: usize = 2048;

/// The session's count of cells alive, against [`MAX_CELLS`].
#[derive(Default)]
pub(crate) struct CellBudget {
    alive: AtomicUsize,
    full: AtomicBool,
}

impl CellBudget {
    /// Takes one cell; false (said once through `say`) when the cap is reached.
    fn take(&self, say: impl FnOnce(String)) -> bool {
        if self.alive.fetch_add(1, Ordering::Relaxed) < MAX_CELLS {
            return true;
        }
        self.alive.fetch_sub(1, Ordering::Relaxed);
        if !self.full.swap(true, Ordering::Relaxed) {
            say(format!(
                "more than {MAX_CELLS} (thread, spawn site) pairs at once: polls of further pairs are not recorded"
            ));
        }
        false
    }

    /// Gives back the cells of a thread whose place was freed.
    pub(crate) fn give_back(&self, n: usize) {
        self.alive.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Marks the thread's slot as exited when the thread ends (its thread-local storage is torn down).
pub(crate) struct ExitGuard(Cell<Option<Arc<ThreadSlot>>>);

impl ExitGuard {
    pub(crate) fn replace(&self, slot: Option<Arc<ThreadSlot>>) -> Option<Arc<ThreadSlot>> {
        self.0.replace(slot)
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.exited.store(true, Ordering::Release);
        }
    }
}

thread_local! {
    pub(crate) static EXIT: ExitGuard = const { ExitGuard(Cell::new(None)) };
}

/// One thread that polled tasks: its cells, one per spawn site, allocated on first use.
pub(crate) struct ThreadSlot {
    pub(crate) decl: WorkerDecl,
    /// The kernel's id of the thread, for `/proc/self/task/<tid>`.
    pub(crate) tid: i32,
    /// std's id of the thread, compared with tokio's record of which thread runs a worker.
    pub(crate) thread_id: std::thread::ThreadId,
    /// The thread's stack, bounding what a stack capture copies.
    pub(crate) stack: Option<std::ops::Range<u64>>,
    /// Raw clock value when the current poll started; 0 outside polls. Read by the watchdog.
    pub(crate) in_poll_since: AtomicU64,
    /// Site id of the task being polled.
    pub(crate) in_poll_site: AtomicU32,
    /// Set when the thread has exited: the flusher takes its last polls and frees its place.
    pub(crate) exited: AtomicBool,
    /// Start (raw clock) and duration of the last poll longer than the stall threshold, so the
    /// watchdog can close a stall with its exact duration; a sequence count (odd while the owner
    /// writes) lets it read the pair consistently.
    last_long_seq: AtomicU64,
    last_long_start: AtomicU64,
    last_long_ns: AtomicU64,
    /// Whether that poll had handed its worker to another thread (`block_in_place`).
    last_long_handed_off: AtomicBool,
    cells: Box<[AtomicPtr<SiteCells>]>,
    /// The `tracing` spans the thread is in, and its poll time per span.
    pub(crate) spans: crate::hot::spans::SpanStack,
}

impl ThreadSlot {
    /// Records a long poll. Only the owning thread calls this.
    #[cold]
    pub(crate) fn set_last_long(&self, start: u64, ns: u64, handed_off: bool) {
        let seq = self.last_long_seq.load(Ordering::Relaxed);
        self.last_long_seq.store(seq + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.last_long_start.store(start, Ordering::Relaxed);
        self.last_long_ns.store(ns, Ordering::Relaxed);
        self.last_long_handed_off.store(handed_off, Ordering::Relaxed);
        self.last_long_seq.store(seq + 2, Ordering::Release);
    }

    /// The last long poll's start, duration and whether it had handed its worker over, read
    /// consistently.
    pub(crate) fn last_long(&self) -> (u64, u64, bool) {
        loop {
            let before = self.last_long_seq.load(Ordering::Acquire);
            let start = self.last_long_start.load(Ordering::Relaxed);
            let ns = self.last_long_ns.load(Ordering::Relaxed);
            let handed_off = self.last_long_handed_off.load(Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Acquire);
            if before.is_multiple_of(2) && self.last_long_seq.load(Ordering::Relaxed) == before {
                return (start, ns, handed_off);
            }
            std::hint::spin_loop();
        }
    }

    /// The cells for `site`, if this thread has polled a task from it.
    pub(crate) fn cells(&self, site: usize) -> Option<&SiteCells> {
        let p = self.cells.get(site)?.load(Ordering::Acquire);
        // SAFETY: non-null pointers come from `Box::into_raw` in `cells_or_insert` and are freed
        // only when the slot is dropped.
        unsafe { p.as_ref() }
    }

    /// A slot for the calling thread, with room for `max_sites` sites and `<other sites>`.
    pub(crate) fn new(decl: WorkerDecl, thread_id: std::thread::ThreadId, max_sites: u32) -> ThreadSlot {
        ThreadSlot {
            decl,
            // SAFETY: gettid has no preconditions.
            tid: unsafe { libc::gettid() },
            thread_id,
            stack: crate::detector::stack::current_stack(),
            in_poll_since: AtomicU64::new(0),
            in_poll_site: AtomicU32::new(0),
            exited: AtomicBool::new(false),
            last_long_seq: AtomicU64::new(0),
            last_long_start: AtomicU64::new(0),
            last_long_ns: AtomicU64::new(0),
            last_long_handed_off: AtomicBool::new(false),
            cells: (0..=max_sites).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
            spans: crate::hot::spans::SpanStack::new(),
        }
    }

    /// Only the owning thread calls this. Null once the session holds [`MAX_CELLS`] cells.
    #[inline]
    pub(crate) fn cells_or_insert(
        &self,
        site: u32,
        poll_scale: u64,
        budget: &CellBudget,
        say: impl FnOnce(String),
    ) -> *const SiteCells {
        let Some(cell) = self.cells.get(site as usize) else { return std::ptr::null() };
        let p = cell.load(Ordering::Relaxed);
        if !p.is_null() {
            return p;
        }
        if !budget.take(say) {
            return std::ptr::null();
        }
        let fresh = Box::into_raw(Box::new(SiteCells::new(poll_scale)));
        cell.store(fresh, Ordering::Release);
        fresh
    }

    /// How many cells this thread holds.
    pub(crate) fn cells_held(&self) -> usize {
        self.cells.iter().filter(|c| !c.load(Ordering::Relaxed).is_null()).count()
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        for c in self.cells.iter() {
            let p = c.swap(std::ptr::null_mut(), Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: allocated with `Box::into_raw` and never freed elsewhere.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}
