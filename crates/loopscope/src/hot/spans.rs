//! The program's `tracing` spans, as the recorder sees them: a process-wide table of span
//! callsites, and per polling thread the stack of spans it is in and the poll time spent inside
//! each.
//!
//! The layer (`crate::tracing_layer`, behind the `tracing` feature) calls [`enter`] and [`exit`]
//! as spans are entered and left. The stack lives in the thread's slot as atomics, so the watchdog
//! can read which spans a stalled or sampled poll is in without stopping the thread; the poll
//! time between a span's enter and its exit within one poll (an instrumented future's span is
//! entered for each of its polls) goes to a histogram per (spawn site, span), single-writer like
//! the site cells. Nothing here allocates or locks after a span callsite's first enter on a
//! thread.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Instant;

use loopscope_core::model::SpanDecl;

use crate::hot::cells::{HotHist, NANOS};
use crate::hot::threads::{EXIT, ThreadSlot};

/// Span callsites the recorder tells apart; spans of further callsites are not recorded (said once).
pub(crate) const MAX_SPANS: usize = 1024;

/// Spans of one thread's stack that are recorded; deeper ones are counted but not named.
pub(crate) const SPAN_DEPTH: usize = 16;

/// (site, span) histograms one thread keeps; a thread that meets more keeps the first ones.
const SPAN_CELLS: usize = 64;

/// (site, span) histograms alive in the process, about 4 KB each: 1,024 bound them to about
/// 4 MB whatever the program does. Poll times of further pairs are not recorded (said once).
pub(crate) const MAX_SPAN_CELLS: usize = 1024;

static SPAN_CELLS_ALIVE: AtomicUsize = AtomicUsize::new(0);
static SPAN_CELLS_FULL: AtomicBool = AtomicBool::new(false);

/// Takes one histogram from the process's budget; false (said once) past it.
fn take_cell() -> bool {
    if SPAN_CELLS_ALIVE.fetch_add(1, Ordering::Relaxed) < MAX_SPAN_CELLS {
        return true;
    }
    SPAN_CELLS_ALIVE.fetch_sub(1, Ordering::Relaxed);
    if !SPAN_CELLS_FULL.swap(true, Ordering::Relaxed) {
        crate::hot::say(&format!(
            "more than {MAX_SPAN_CELLS} (thread, spawn site, span) histograms: poll times of further ones are not recorded"
        ));
    }
    false
}

/// The span callsites met so far, process-wide (a span callsite is code, shared by sessions).
struct SpanTable {
    by_callsite: HashMap<usize, u32>,
    decls: Vec<SpanDecl>,
    full: bool,
}

static TABLE: LazyLock<Mutex<SpanTable>> =
    LazyLock::new(|| Mutex::new(SpanTable { by_callsite: HashMap::new(), decls: Vec::new(), full: false }));

fn table() -> std::sync::MutexGuard<'static, SpanTable> {
    crate::hot::lock(&TABLE)
}

/// The id of a span callsite (`key`: its address, unique in the process), declaring it with
/// `decl` the first time. `None` past [`MAX_SPANS`] callsites.
pub(crate) fn intern(key: usize, decl: impl FnOnce(u32) -> SpanDecl) -> Option<u32> {
    let mut t = table();
    if let Some(id) = t.by_callsite.get(&key) {
        return Some(*id);
    }
    if t.decls.len() >= MAX_SPANS {
        if !std::mem::replace(&mut t.full, true) {
            drop(t);
            crate::hot::say(&format!("more than {MAX_SPANS} span callsites: spans of further ones are not recorded"));
        }
        return None;
    }
    let id = t.decls.len() as u32;
    t.decls.push(decl(id));
    t.by_callsite.insert(key, id);
    Some(id)
}

/// The span callsites declared since the first `from`.
pub(crate) fn decls_from(from: usize) -> Vec<SpanDecl> {
    table().decls.get(from..).map(<[SpanDecl]>::to_vec).unwrap_or_default()
}

/// Nanoseconds on a process-wide monotonic clock (spans are entered outside any session's view
/// of its own clock).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One (site, span) histogram of a thread: the key is written before the histogram is published.
struct SpanCell {
    key: AtomicU64,
    hist: AtomicPtr<HotHist>,
}

/// The spans a thread is in, and its poll time per (site, span). Only the owning thread writes;
/// the watchdog reads the stack, the flusher the histograms.
pub(crate) struct SpanStack {
    /// Span callsite ids plus one (0: none), outermost first; entries at or past `depth` are
    /// stale.
    ids: [AtomicU32; SPAN_DEPTH],
    /// The poll each was entered in (the slot's `in_poll_since` then; 0 outside a poll).
    polls: [AtomicU64; SPAN_DEPTH],
    depth: AtomicU32,
    cells: [SpanCell; SPAN_CELLS],
}

/// What the owner remembers about each span of its stack.
struct Entered {
    /// When it was entered (`now_ns`).
    at_ns: Cell<u64>,
    /// The span itself (tracing's id of the instance, not of its callsite).
    instance: Cell<u64>,
}

thread_local! {
    static ENTERED: [Entered; SPAN_DEPTH] =
        const { [const { Entered { at_ns: Cell::new(0), instance: Cell::new(0) } }; SPAN_DEPTH] };
}

fn key(site: u32, span: u32) -> u64 {
    (u64::from(site) << 32) | u64::from(span)
}

impl SpanStack {
    pub(crate) fn new() -> Self {
        SpanStack {
            ids: [const { AtomicU32::new(0) }; SPAN_DEPTH],
            polls: [const { AtomicU64::new(0) }; SPAN_DEPTH],
            depth: AtomicU32::new(0),
            cells: [const { SpanCell { key: AtomicU64::new(0), hist: AtomicPtr::new(std::ptr::null_mut()) } };
                SPAN_CELLS],
        }
    }

    /// The spans the thread is in during its poll `poll` (its `in_poll_since`), outermost first
    /// (at most [`SPAN_DEPTH`]): those entered outside any poll, and those entered in this one
    /// (a span entered in an earlier poll and never left here, as a guard held across an
    /// `.await` is, is not this poll's). Read from another thread while the owner may change
    /// it: a span entered or left meanwhile may be missing or stale, never out of range.
    pub(crate) fn snapshot(&self, poll: u64) -> Vec<u32> {
        let depth = (self.depth.load(Ordering::Acquire) as usize).min(SPAN_DEPTH);
        (0..depth)
            .filter(|&i| {
                matches!(self.polls[i].load(Ordering::Relaxed), 0) || self.polls[i].load(Ordering::Relaxed) == poll
            })
            .filter_map(|i| self.ids[i].load(Ordering::Relaxed).checked_sub(1))
            .collect()
    }

    /// The (site, span) histograms that have values, for the flusher.
    pub(crate) fn cells(&self) -> impl Iterator<Item = (u32, u32, &HotHist)> {
        self.cells.iter().filter_map(|c| {
            // SAFETY: non-null pointers come from `Box::into_raw` in `cell` and are freed only
            // when the stack is dropped.
            let hist = unsafe { c.hist.load(Ordering::Acquire).as_ref() }?;
            let k = c.key.load(Ordering::Relaxed);
            Some(((k >> 32) as u32, k as u32, hist))
        })
    }

    /// The histogram for (site, span), made on first use within the budget. Only the owner calls.
    fn cell(&self, site: u32, span: u32) -> Option<&HotHist> {
        let k = key(site, span);
        let start = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize;
        for i in 0..SPAN_CELLS {
            let c = &self.cells[(start + i) % SPAN_CELLS];
            let p = c.hist.load(Ordering::Relaxed);
            if p.is_null() {
                if !take_cell() {
                    return None;
                }
                c.key.store(k, Ordering::Relaxed);
                let fresh = Box::into_raw(Box::new(HotHist::new(NANOS)));
                c.hist.store(fresh, Ordering::Release);
                // SAFETY: just allocated; freed only when the stack is dropped.
                return unsafe { fresh.as_ref() };
            }
            if c.key.load(Ordering::Relaxed) == k {
                // SAFETY: as in `cells`.
                return unsafe { p.as_ref() };
            }
        }
        None
    }
}

impl Drop for SpanStack {
    fn drop(&mut self) {
        for c in &self.cells {
            let p = c.hist.swap(std::ptr::null_mut(), Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: allocated with `Box::into_raw` and never freed elsewhere.
                drop(unsafe { Box::from_raw(p) });
                SPAN_CELLS_ALIVE.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `f` with the calling thread's slot, if it polls tasks for a session.
fn with_slot(f: impl FnOnce(&ThreadSlot)) {
    let _ = EXIT.try_with(|e| {
        let slot = e.replace(None);
        if let Some(s) = &slot {
            f(s);
        }
        e.replace(slot);
    });
}

/// The spans the calling thread is in, outermost first.
pub(crate) fn current() -> Vec<u32> {
    let mut out = Vec::new();
    with_slot(|slot| out = slot.spans.snapshot(slot.in_poll_since.load(Ordering::Relaxed)));
    out
}

/// The calling thread enters span `instance`, of callsite `id`.
pub(crate) fn enter(id: u32, instance: u64) {
    with_slot(|slot| {
        let s = &slot.spans;
        let poll = slot.in_poll_since.load(Ordering::Relaxed);
        let mut d = s.depth.load(Ordering::Relaxed) as usize;
        // Spans entered in another poll and never left on this thread (a guard held across an
        // `.await`, left on the thread the task moved to) are gone from this thread's view.
        if poll != 0 {
            while d > 0
                && !matches!(s.polls[d - 1].load(Ordering::Relaxed), 0)
                && s.polls[d - 1].load(Ordering::Relaxed) != poll
            {
                d -= 1;
            }
        }
        if d == SPAN_DEPTH {
            // Deeper spans are not named (nor timed).
            s.depth.store(d as u32, Ordering::Release);
            return;
        }
        s.ids[d].store(id + 1, Ordering::Relaxed);
        s.polls[d].store(poll, Ordering::Relaxed);
        let _ = ENTERED.try_with(|e| {
            e[d].at_ns.set(now_ns());
            e[d].instance.set(instance);
        });
        s.depth.store(d as u32 + 1, Ordering::Release);
    });
}

/// The calling thread leaves span `instance`, of callsite `id`: its poll time since the enter
/// is recorded when both happened within one poll.
pub(crate) fn exit(id: u32, instance: u64) {
    with_slot(|slot| {
        let s = &slot.spans;
        let depth = s.depth.load(Ordering::Relaxed) as usize;
        let _ = ENTERED.try_with(|e| {
            // Spans are usually left in the reverse order of entering; one that is not is looked
            // for lower down, and the spans above it move down.
            let Some(at) = (0..depth).rev().find(|&i| e[i].instance.get() == instance) else {
                // Entered past the depth, or on another thread, or before this thread had a slot.
                return;
            };
            let poll = slot.in_poll_since.load(Ordering::Relaxed);
            if poll != 0 && s.polls[at].load(Ordering::Relaxed) == poll {
                let site = slot.in_poll_site.load(Ordering::Relaxed);
                let ns = now_ns().saturating_sub(e[at].at_ns.get());
                if let Some(h) = s.cell(site, id) {
                    h.record(ns);
                }
            }
            for i in at..depth - 1 {
                s.ids[i].store(s.ids[i + 1].load(Ordering::Relaxed), Ordering::Relaxed);
                s.polls[i].store(s.polls[i + 1].load(Ordering::Relaxed), Ordering::Relaxed);
                e[i].at_ns.set(e[i + 1].at_ns.get());
                e[i].instance.set(e[i + 1].instance.get());
            }
            s.depth.store(depth as u32 - 1, Ordering::Release);
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs `f` on a fresh thread that has a slot, as a worker thread has.
    fn on_a_worker(f: impl FnOnce(&ThreadSlot) + Send + 'static) {
        std::thread::spawn(move || {
            let decl = loopscope_core::model::WorkerDecl { id: 0, index: Some(0), thread_name: "w".into() };
            let slot = Arc::new(ThreadSlot::new(decl, std::thread::current().id(), 4));
            EXIT.with(|e| e.replace(Some(Arc::clone(&slot))));
            f(&slot);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_stack_follows_enters_and_exits_by_instance() {
        on_a_worker(|slot| {
            let poll = 1234;
            slot.in_poll_since.store(poll, Ordering::Relaxed);
            enter(7, 100);
            enter(8, 200);
            enter(8, 201);
            assert_eq!(slot.spans.snapshot(poll), vec![7, 8, 8]);
            // Left out of order, by instance: the right one goes.
            exit(8, 200);
            assert_eq!(slot.spans.snapshot(poll), vec![7, 8]);
            exit(8, 201);
            exit(7, 100);
            assert!(slot.spans.snapshot(poll).is_empty());
            // An exit of a span this thread never entered changes nothing.
            enter(7, 300);
            exit(7, 999);
            assert_eq!(slot.spans.snapshot(poll), vec![7]);
            // Each span's poll time went to its (site, span) histogram.
            let cells: Vec<_> = slot.spans.cells().map(|(site, span, _)| (site, span)).collect();
            assert!(cells.contains(&(0, 7)) && cells.contains(&(0, 8)), "{cells:?}");
        });
    }

    #[test]
    fn spans_left_behind_by_an_earlier_poll_are_not_this_polls() {
        on_a_worker(|slot| {
            // Entered outside any poll: context for every poll of the thread.
            enter(1, 10);
            slot.in_poll_since.store(5, Ordering::Relaxed);
            // A guard held across an `.await`: entered here, left on another thread.
            enter(2, 20);
            assert_eq!(slot.spans.snapshot(5), vec![1, 2]);
            slot.in_poll_since.store(6, Ordering::Relaxed);
            assert_eq!(slot.spans.snapshot(6), vec![1], "not the next poll's");
            // The next enter drops it for good; the stack never fills up with such spans.
            for i in 0..(SPAN_DEPTH as u64 * 2) {
                slot.in_poll_since.store(100 + i, Ordering::Relaxed);
                enter(3, 1000 + i);
            }
            assert_eq!(slot.spans.snapshot(100 + SPAN_DEPTH as u64 * 2 - 1), vec![1, 3]);
        });
    }
}
