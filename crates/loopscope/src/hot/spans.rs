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
    /// Span ids plus one (0: none), outermost first; entries at or past `depth` are stale.
    ids: [AtomicU32; SPAN_DEPTH],
    depth: AtomicU32,
    cells: [SpanCell; SPAN_CELLS],
}

/// What the owner remembers about each span of its stack, for its poll time.
struct Entered {
    /// When it was entered (`now_ns`).
    at_ns: Cell<u64>,
    /// The poll it was entered in (the slot's `in_poll_since` then; 0 outside a poll).
    poll: Cell<u64>,
}

thread_local! {
    static ENTERED: [Entered; SPAN_DEPTH] =
        const { [const { Entered { at_ns: Cell::new(0), poll: Cell::new(0) } }; SPAN_DEPTH] };
}

fn key(site: u32, span: u32) -> u64 {
    (u64::from(site) << 32) | u64::from(span)
}

impl SpanStack {
    pub(crate) fn new() -> Self {
        SpanStack {
            ids: [const { AtomicU32::new(0) }; SPAN_DEPTH],
            depth: AtomicU32::new(0),
            cells: [const { SpanCell { key: AtomicU64::new(0), hist: AtomicPtr::new(std::ptr::null_mut()) } };
                SPAN_CELLS],
        }
    }

    /// The spans the thread is in now, outermost first (at most [`SPAN_DEPTH`]). Read from
    /// another thread while the owner may change it: a span entered or left meanwhile may be
    /// missing or stale, never out of range.
    pub(crate) fn snapshot(&self) -> Vec<u32> {
        let depth = (self.depth.load(Ordering::Acquire) as usize).min(SPAN_DEPTH);
        self.ids[..depth].iter().filter_map(|id| id.load(Ordering::Relaxed).checked_sub(1)).collect()
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
    with_slot(|slot| out = slot.spans.snapshot());
    out
}

/// The calling thread enters span `id`.
pub(crate) fn enter(id: u32) {
    with_slot(|slot| {
        let s = &slot.spans;
        let d = s.depth.load(Ordering::Relaxed) as usize;
        if d < SPAN_DEPTH {
            s.ids[d].store(id + 1, Ordering::Relaxed);
            let poll = slot.in_poll_since.load(Ordering::Relaxed);
            let _ = ENTERED.try_with(|e| {
                e[d].at_ns.set(now_ns());
                e[d].poll.set(poll);
            });
        }
        s.depth.store(d as u32 + 1, Ordering::Release);
    });
}

/// The calling thread leaves span `id`: its poll time since the enter is recorded when both
/// happened within one poll.
pub(crate) fn exit(id: u32) {
    with_slot(|slot| {
        let s = &slot.spans;
        let depth = s.depth.load(Ordering::Relaxed) as usize;
        if depth == 0 {
            return;
        }
        // Spans are usually left in the reverse order of entering; one that is not is looked
        // for lower down, and the spans above it move down.
        let top = depth.min(SPAN_DEPTH);
        let at = if depth > SPAN_DEPTH {
            None
        } else {
            (0..top).rev().find(|&i| s.ids[i].load(Ordering::Relaxed) == id + 1)
        };
        if depth <= SPAN_DEPTH && at.is_none() {
            // Entered before this thread had a slot (or past the table's cap): not on the stack.
            return;
        }
        if let Some(at) = at {
            let poll = slot.in_poll_since.load(Ordering::Relaxed);
            let _ = ENTERED.try_with(|e| {
                if poll != 0 && e[at].poll.get() == poll {
                    let site = slot.in_poll_site.load(Ordering::Relaxed);
                    let ns = now_ns().saturating_sub(e[at].at_ns.get());
                    if let Some(h) = s.cell(site, id) {
                        h.record(ns);
                    }
                }
                for i in at..top - 1 {
                    s.ids[i].store(s.ids[i + 1].load(Ordering::Relaxed), Ordering::Relaxed);
                    e[i].at_ns.set(e[i + 1].at_ns.get());
                    e[i].poll.set(e[i + 1].poll.get());
                }
            });
        }
        s.depth.store(depth as u32 - 1, Ordering::Release);
    });
}
