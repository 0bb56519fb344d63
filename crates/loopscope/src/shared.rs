//! State shared by the runtime hooks and the flusher: the spawn-site table, the per-thread slots,
//! and the hook bodies themselves.
//!
//! The per-poll path is [`Shared::before_poll`] / [`Shared::after_poll`]: a thread-local lookup,
//! one TSC read on each side, the site from a thread-local cache of recent spawn locations (the
//! lock-free site table when it misses), and a few relaxed stores into cells owned by the thread.
//! Registering a thread or a new spawn site takes a lock and allocates, once.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write as _;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use loopscope_core::model::{SiteDecl, StallCategory, StallTally, WorkerDecl};
use tokio::runtime::{Handle, TaskMeta};

use crate::hot::SiteCells;

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

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Says something on stderr, prefixed `loopscope: `; never panics (stderr may be closed: the
/// program must not die of it).
pub(crate) fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "loopscope: {message}");
}

/// Locks a mutex, ignoring poisoning: the recorder's own data stays usable after a panic elsewhere.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Local {
    session: Cell<u64>,
    slot: Cell<*const ThreadSlot>,
    /// The spawn location of the task this thread polls or polled last (its address) and the
    /// cells of its site: a task polled again, or its siblings, skip the site lookup. The site's
    /// id is published in the slot's `in_poll_site` when this changes.
    last_location: Cell<usize>,
    last_cells: Cell<*const SiteCells>,
    /// The sites of recently polled spawn locations, direct-mapped by the location's address:
    /// tasks of a few sites polled in turn (a sender and its receiver) skip the site table too.
    recent: [RecentSite; RECENT],
}

/// One entry of [`Local::recent`].
struct RecentSite {
    location: Cell<usize>,
    site: Cell<u32>,
    cells: Cell<*const SiteCells>,
}

const RECENT: usize = 16;

thread_local! {
    static LOCAL: Local = const {
        Local {
            session: Cell::new(0),
            slot: Cell::new(std::ptr::null()),
            last_location: Cell::new(0),
            last_cells: Cell::new(std::ptr::null()),
            recent: [const {
                RecentSite { location: Cell::new(0), site: Cell::new(0), cells: Cell::new(std::ptr::null()) }
            }; RECENT],
        }
    };
}

/// Marks the thread's slot as exited when the thread ends (its thread-local storage is torn down).
struct ExitGuard(Cell<Option<Arc<ThreadSlot>>>);

impl ExitGuard {
    fn replace(&self, slot: Option<Arc<ThreadSlot>>) -> Option<Arc<ThreadSlot>> {
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
    static EXIT: ExitGuard = const { ExitGuard(Cell::new(None)) };
}

impl Local {
    /// The entry `location` would occupy in `recent` (Fibonacci hashing of the address).
    #[inline(always)]
    fn recent_entry(&self, location: usize) -> &RecentSite {
        &self.recent[location.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - RECENT.trailing_zeros())]
    }
}

/// Interns spawn locations into dense site ids. Lookups are lock-free; inserts take a lock.
pub(crate) struct SiteTable {
    keys: Box<[AtomicUsize]>,
    ids: Box<[AtomicU32]>,
    inner: Mutex<SiteTableInner>,
    declared: AtomicUsize,
    /// Keys published in the lock-free table; capped so lookups stay short and lock-free.
    published: AtomicUsize,
    max_sites: u32,
    pub(crate) spawned: Box<[AtomicU64]>,
    pub(crate) finished: Box<[AtomicU64]>,
}

#[derive(Default)]
struct SiteTableInner {
    decls: Vec<SiteDecl>,
    by_value: HashMap<(&'static str, u32, u32), u32>,
}

impl SiteTable {
    fn new(max_sites: u32) -> Self {
        let capacity = (4 * max_sites as usize + 4).next_power_of_two();
        SiteTable {
            keys: (0..capacity).map(|_| AtomicUsize::new(0)).collect(),
            ids: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            inner: Mutex::new(SiteTableInner::default()),
            declared: AtomicUsize::new(0),
            published: AtomicUsize::new(0),
            max_sites,
            spawned: (0..=max_sites).map(|_| AtomicU64::new(0)).collect(),
            finished: (0..=max_sites).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    fn start(&self, key: usize) -> usize {
        // Fibonacci hashing of the pointer.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) & (self.keys.len() - 1)
    }

    /// The site id of a spawn location.
    #[inline]
    pub(crate) fn lookup(&self, loc: &'static Location<'static>) -> u32 {
        match self.find(loc) {
            Some(id) => id,
            // A program with thousands of spawn locations: the table is as full as it may get,
            // and every real site is in it; the rest share the "other" site without a lock.
            None if self.published.load(Ordering::Relaxed) >= self.keys.len() / 2 => self.max_sites,
            None => self.insert(loc),
        }
    }

    /// The site id of a spawn location already interned, without interning it.
    pub(crate) fn find(&self, loc: &'static Location<'static>) -> Option<u32> {
        let key = loc as *const Location<'static> as usize;
        let mask = self.keys.len() - 1;
        let mut i = self.start(key);
        for _ in 0..self.keys.len() {
            match self.keys[i].load(Ordering::Acquire) {
                0 => return None,
                k if k == key => return Some(self.ids[i].load(Ordering::Relaxed)),
                _ => i = (i + 1) & mask,
            }
        }
        None
    }

    #[cold]
    fn insert(&self, loc: &'static Location<'static>) -> u32 {
        let key = loc as *const Location<'static> as usize;
        let mut inner = lock(&self.inner);
        let value = (loc.file(), loc.line(), loc.column());
        let id = match inner.by_value.get(&value) {
            Some(id) => *id,
            None if inner.decls.len() < self.max_sites as usize => {
                let id = inner.decls.len() as u32;
                inner.decls.push(SiteDecl { id, file: loc.file().into(), line: loc.line(), column: loc.column() });
                inner.by_value.insert(value, id);
                id
            }
            None => {
                if inner.decls.len() == self.max_sites as usize {
                    let id = self.max_sites;
                    inner.decls.push(SiteDecl { id, file: SiteDecl::OTHER_FILE.into(), line: 0, column: 0 });
                }
                self.max_sites
            }
        };
        self.declared.store(inner.decls.len(), Ordering::Release);
        // Publish the pointer so later lookups skip the lock; the id is stored before the key.
        let mask = self.keys.len() - 1;
        let mut i = self.start(key);
        for _ in 0..self.keys.len() / 2 {
            match self.keys[i].load(Ordering::Relaxed) {
                0 => {
                    self.ids[i].store(id, Ordering::Relaxed);
                    self.keys[i].store(key, Ordering::Release);
                    self.published.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                k if k == key => break,
                _ => i = (i + 1) & mask,
            }
        }
        id
    }

    /// Sites declared so far.
    pub(crate) fn declared(&self) -> usize {
        self.declared.load(Ordering::Acquire)
    }

    /// Declarations from `from` on.
    pub(crate) fn decls_from(&self, from: usize) -> Vec<SiteDecl> {
        lock(&self.inner).decls.get(from..).map(<[SiteDecl]>::to_vec).unwrap_or_default()
    }
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
    cells: Box<[AtomicPtr<SiteCells>]>,
}

impl ThreadSlot {
    /// Records a long poll. Only the owning thread calls this.
    #[cold]
    fn set_last_long(&self, start: u64, ns: u64) {
        let seq = self.last_long_seq.load(Ordering::Relaxed);
        self.last_long_seq.store(seq + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.last_long_start.store(start, Ordering::Relaxed);
        self.last_long_ns.store(ns, Ordering::Relaxed);
        self.last_long_seq.store(seq + 2, Ordering::Release);
    }

    /// The last long poll's start and duration, read consistently.
    pub(crate) fn last_long(&self) -> (u64, u64) {
        loop {
            let before = self.last_long_seq.load(Ordering::Acquire);
            let start = self.last_long_start.load(Ordering::Relaxed);
            let ns = self.last_long_ns.load(Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Acquire);
            if before.is_multiple_of(2) && self.last_long_seq.load(Ordering::Relaxed) == before {
                return (start, ns);
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

    /// Only the owning thread calls this. Null once the session holds [`MAX_CELLS`] cells.
    #[inline]
    fn cells_or_insert(&self, site: u32, poll_scale: u64, shared: &Shared) -> *const SiteCells {
        let Some(cell) = self.cells.get(site as usize) else { return std::ptr::null() };
        let p = cell.load(Ordering::Relaxed);
        if !p.is_null() {
            return p;
        }
        if shared.cells.fetch_add(1, Ordering::Relaxed) >= MAX_CELLS {
            shared.cells.fetch_sub(1, Ordering::Relaxed);
            if !shared.cells_full.swap(true, Ordering::Relaxed) {
                shared.report_error(format!(
                    "more than {MAX_CELLS} (thread, spawn site) pairs at once: polls of further pairs are not recorded"
                ));
            }
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

/// quanta's clock, read on the hot path without a call: when quanta counts TSC ticks, the
/// hooks read the TSC themselves, and scale ticks to nanoseconds with a multiplier taken from
/// quanta's calibration (for quanta's monotonic fallback, whose values are nanoseconds already,
/// the multiplier is one).
pub(crate) struct HotClock {
    clock: quanta::Clock,
    tsc: bool,
    /// Nanoseconds per 2^32 ticks.
    pub(crate) mult: u64,
}

impl HotClock {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let tsc = reads_tsc(&clock);
        let mult = clock.delta_as_nanos(0, 1 << 32);
        HotClock { clock, tsc, mult }
    }

    /// The clock's raw value (TSC ticks or nanoseconds).
    #[inline(always)]
    pub(crate) fn raw(&self) -> u64 {
        if self.tsc { self.raw_as::<true>() } else { self.raw_as::<false>() }
    }

    /// Whether the raw values are TSC ticks read directly (see [`HotClock::raw_as`]).
    pub(crate) fn is_tsc(&self) -> bool {
        self.tsc
    }

    /// The raw value, for a caller that knows whether the clock is the TSC (`TSC` must equal
    /// [`HotClock::is_tsc`]): the hooks are compiled for one or the other, so that the hot path
    /// has neither the branch nor, on the TSC side, a call.
    #[inline(always)]
    pub(crate) fn raw_as<const TSC: bool>(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if TSC {
            // SAFETY: quanta only counts TSC ticks on CPUs with an invariant TSC.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        self.clock.raw()
    }

    /// Nanoseconds from raw value `start` to raw value `end` (0 if `end` is earlier).
    #[inline(always)]
    pub(crate) fn delta_as_nanos(&self, start: u64, end: u64) -> u64 {
        crate::hot::scale_to_ns(end.saturating_sub(start), self.mult)
    }

    /// Raw units in `ns` nanoseconds (`u64::MAX` stays "never").
    fn ns_to_raw(&self, ns: u64) -> u64 {
        if ns == u64::MAX { u64::MAX } else { crate::hot::ns_to_scale(ns, self.mult) }
    }
}

/// Whether quanta's raw values are the TSC's: a TSC read on either side brackets them.
fn reads_tsc(clock: &quanta::Clock) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (0..3).all(|_| {
            // SAFETY: reading the TSC has no preconditions on x86-64.
            let before = unsafe { core::arch::x86_64::_rdtsc() };
            let raw = clock.raw();
            // SAFETY: as above.
            let after = unsafe { core::arch::x86_64::_rdtsc() };
            before <= raw && raw <= after && after - before < 10_000_000
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = clock;
        false
    }
}

/// Everything the hooks and the flusher share.
pub(crate) struct Shared {
    id: u64,
    pub(crate) clock: HotClock,
    pub(crate) start_raw: u64,
    pub(crate) slow_ns: u64,
    /// Slow polls and stalls (polls at least this long; `u64::MAX` when the detector is off)
    /// in the clock's raw units, for the hot path.
    slow_raw: u64,
    stall_raw: u64,
    pub(crate) enabled: AtomicBool,
    pub(crate) sites: SiteTable,
    pub(crate) threads: Mutex<Vec<Arc<ThreadSlot>>>,
    pub(crate) handle: Mutex<Option<Handle>>,
    threads_full: AtomicBool,
    /// The next worker id to hand out.
    next_worker: AtomicU32,
    /// Cells alive, against [`MAX_CELLS`].
    pub(crate) cells: AtomicUsize,
    cells_full: AtomicBool,
    pub(crate) errors: Mutex<Vec<String>>,
    /// Ids of stalls, unique within the session (the watchdog and the panic hook both raise them).
    pub(crate) stall_ids: AtomicU64,
    /// The lag probe's measurements, when the probe runs (the `lean` profile).
    pub(crate) lag: Option<Mutex<loopscope_core::dist::DistAcc>>,
    probe_started: AtomicBool,
    /// This session, weakly, for the probe task (set once the `Arc` exists).
    pub(crate) this: std::sync::OnceLock<std::sync::Weak<Shared>>,
    /// Where events raised outside the watchdog go (the flusher), while the session runs.
    pub(crate) events: Mutex<Option<std::sync::mpsc::Sender<crate::flusher::Cmd>>>,
    /// Stalls counted past the budget of stall events, since the flusher last took them.
    tally: Mutex<Vec<StallTally>>,
}

impl Shared {
    pub(crate) fn new(slow_ns: u64, stall_ns: u64, max_sites: u32, lag_probe: bool) -> Self {
        let clock = HotClock::new();
        let start_raw = clock.raw();
        let (slow_raw, stall_raw) = (clock.ns_to_raw(slow_ns), clock.ns_to_raw(stall_ns));
        Shared {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            clock,
            start_raw,
            slow_ns,
            slow_raw,
            stall_raw,
            enabled: AtomicBool::new(true),
            sites: SiteTable::new(max_sites),
            threads: Mutex::new(Vec::new()),
            handle: Mutex::new(None),
            threads_full: AtomicBool::new(false),
            next_worker: AtomicU32::new(0),
            cells: AtomicUsize::new(0),
            cells_full: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
            stall_ids: AtomicU64::new(0),
            lag: lag_probe.then(|| Mutex::new(loopscope_core::dist::DistAcc::new())),
            probe_started: AtomicBool::new(false),
            this: std::sync::OnceLock::new(),
            events: Mutex::new(None),
            tally: Mutex::new(Vec::new()),
        }
    }

    /// Counts a stall that is not recorded as events (past the budget).
    pub(crate) fn tally_stall(&self, site: Option<u32>, category: StallCategory, duration_ns: u64) {
        let mut tally = lock(&self.tally);
        let i = match tally.iter().position(|t| t.site == site && t.category == category) {
            Some(i) => i,
            None => {
                tally.push(StallTally { site, category, ..StallTally::default() });
                tally.len() - 1
            }
        };
        let t = &mut tally[i];
        t.count += 1;
        t.total_ns = t.total_ns.saturating_add(duration_ns);
        t.max_ns = t.max_ns.max(duration_ns);
    }

    /// The stalls counted since the last call.
    pub(crate) fn take_tally(&self) -> Vec<StallTally> {
        std::mem::take(&mut *lock(&self.tally))
    }

    /// Nanoseconds since the session started.
    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.delta_as_nanos(self.start_raw, self.clock.raw())
    }

    /// Reports an error once on stderr and keeps it for the report.
    pub(crate) fn report_error(&self, message: String) {
        let mut errors = lock(&self.errors);
        if !errors.contains(&message) {
            // Not eprintln!: it panics when stderr is gone, and this runs inside runtime hooks.
            say(&message);
            errors.push(message);
        }
    }

    /// Runs recorder code called from a runtime hook; a panic in it stops recording and gives
    /// `fallback` instead of reaching tokio.
    pub(crate) fn contain<T>(&self, fallback: T, f: impl FnOnce() -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(_) => {
                self.fail("internal error in a runtime hook".into());
                fallback
            }
        }
    }

    /// Stops recording after an internal failure.
    pub(crate) fn fail(&self, message: String) {
        self.enabled.store(false, Ordering::Relaxed);
        self.report_error(format!("{message}; recording stopped"));
    }

    // The hook pair is the whole per-poll cost, so it does as little as it can: one clock read
    // and one store on each side; no `catch_unwind` (only the cold paths, which allocate and
    // lock, can panic, and they run inside `contain`); the site looked up only when the spawn
    // location changes, in a thread-local cache first; and the poll's start kept where the
    // watchdog reads it (the slot) rather than twice. A poll whose
    // start was not stored (the lag probe's, or one that began before this thread registered)
    // leaves `in_poll_since` at 0, and the after-hook then records nothing.
    #[inline]
    pub(crate) fn before_poll<const TSC: bool, const SCHED: bool>(&self, meta: &TaskMeta<'_>) {
        let key = meta.spawned_at() as *const Location<'static> as usize;
        let _ = LOCAL.try_with(|l| {
            // SAFETY: the pointer was set by `register_thread` of this session (checked by id) from
            // an `Arc<ThreadSlot>` that `self.threads` keeps alive as long as `self`.
            match unsafe { l.slot.get().as_ref() } {
                // The common case, with no call (so no registers to save): a registered thread, and
                // a task of the same spawn site as the last one or of a recent one.
                Some(slot) if l.session.get() == self.id => {
                    if key != l.last_location.get() {
                        let recent = l.recent_entry(key);
                        if recent.location.get() != key {
                            return self.before_poll_other::<TSC, SCHED>(l, meta);
                        }
                        l.last_location.set(key);
                        l.last_cells.set(recent.cells.get());
                        slot.in_poll_site.store(recent.site.get(), Ordering::Relaxed);
                    }
                    slot.in_poll_since.store(self.clock.raw_as::<TSC>(), Ordering::Relaxed);
                    if SCHED {
                        self.record_schedule_latency(l, meta);
                    }
                }
                _ => self.before_poll_other::<TSC, SCHED>(l, meta),
            }
        });
    }

    /// The rest of [`Shared::before_poll`]: a thread to register, or a spawn site not seen
    /// lately.
    #[cold]
    #[inline(never)]
    fn before_poll_other<const TSC: bool, const SCHED: bool>(&self, l: &Local, meta: &TaskMeta<'_>) {
        // Once the session is finished or failed (`enabled` false), threads and sites met for the
        // first time are not registered; known ones go on counting into cells nobody reads.
        let slot = if l.session.get() == self.id {
            l.slot.get()
        } else {
            self.contain(std::ptr::null(), || self.register_thread(l))
        };
        // SAFETY: as in `before_poll`.
        let Some(slot) = (unsafe { slot.as_ref() }) else { return };
        let spawned_at = meta.spawned_at();
        let key = spawned_at as *const Location<'static> as usize;
        // A thread just registered has an empty cache: its first site is looked up too.
        if key != l.last_location.get() && !self.contain(false, || self.enter_site(l, slot, spawned_at)) {
            return;
        }
        slot.in_poll_since.store(self.clock.raw_as::<TSC>(), Ordering::Relaxed);
        if SCHED {
            self.record_schedule_latency(l, meta);
        }
    }

    #[inline(always)]
    fn record_schedule_latency(&self, l: &Local, meta: &TaskMeta<'_>) {
        // SAFETY: as in `ThreadSlot::cells`.
        if let (Some(lat), Some(cells)) = (meta.schedule_latency(), unsafe { l.last_cells.get().as_ref() }) {
            cells.sched.record(u64::try_from(lat.as_nanos()).unwrap_or(u64::MAX));
        }
    }

    /// Makes `loc` the thread's current spawn location: looks its site up and publishes it for
    /// the watchdog. False for the lag probe, the recorder's own task, which is not part of the
    /// program's profile.
    #[inline(never)]
    fn enter_site(&self, l: &Local, slot: &ThreadSlot, loc: &'static Location<'static>) -> bool {
        if !self.enabled.load(Ordering::Relaxed) || crate::probe::location().is_some_and(|p| std::ptr::eq(loc, p)) {
            return false;
        }
        let key = loc as *const Location<'static> as usize;
        let site = self.sites.lookup(loc);
        let cells = slot.cells_or_insert(site, self.clock.mult, self);
        let recent = l.recent_entry(key);
        recent.location.set(key);
        recent.site.set(site);
        recent.cells.set(cells);
        l.last_location.set(key);
        l.last_cells.set(cells);
        slot.in_poll_site.store(site, Ordering::Relaxed);
        true
    }

    #[inline]
    pub(crate) fn after_poll<const TSC: bool>(&self) {
        let _ = LOCAL.try_with(|l| {
            if l.session.get() != self.id {
                return;
            }
            // SAFETY: as in `before_poll`.
            let Some(slot) = (unsafe { l.slot.get().as_ref() }) else { return };
            let start = slot.in_poll_since.load(Ordering::Relaxed);
            // SAFETY: as in `ThreadSlot::cells`.
            let Some(cells) = (unsafe { l.last_cells.get().as_ref() }) else { return };
            if start == 0 {
                return;
            }
            // In raw units: nanoseconds are the flusher's business.
            let d = self.clock.raw_as::<TSC>().saturating_sub(start);
            if d >= self.stall_raw {
                return self.after_long_poll(slot, cells, start, d);
            }
            slot.in_poll_since.store(0, Ordering::Release);
            cells.poll.record(d);
            if d > self.slow_raw {
                cells.count_slow();
            }
        });
    }

    /// The end of a poll at least as long as the stall threshold.
    #[cold]
    #[inline(never)]
    fn after_long_poll(&self, slot: &ThreadSlot, cells: &SiteCells, start: u64, d: u64) {
        slot.set_last_long(start, self.clock.delta_as_nanos(start, start + d));
        // Release: a watchdog that sees the poll end also sees `last_long_*`.
        slot.in_poll_since.store(0, Ordering::Release);
        cells.poll.record(d);
        if d > self.slow_raw {
            cells.count_slow();
        }
    }

    /// The session id of the current thread's recorder, if it polls tasks for one.
    pub(crate) fn current_session() -> Option<u64> {
        LOCAL.try_with(|l| l.session.get()).ok().filter(|id| *id != 0)
    }

    /// Whether this is the session with the given id.
    pub(crate) fn has_id(&self, id: u64) -> bool {
        self.id == id
    }

    /// The session's id, unique in the process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The worker id and polled task's site of the current thread, if it is inside a poll of
    /// this session.
    pub(crate) fn current_poll(&self) -> Option<(u32, u32)> {
        LOCAL
            .try_with(|l| {
                if l.session.get() != self.id {
                    return None;
                }
                // SAFETY: as in `before_poll`.
                let slot = unsafe { l.slot.get().as_ref() }?;
                (slot.in_poll_since.load(Ordering::Relaxed) != 0)
                    .then(|| (slot.decl.id, slot.in_poll_site.load(Ordering::Relaxed)))
            })
            .ok()
            .flatten()
    }

    pub(crate) fn on_spawn(&self, meta: &TaskMeta<'_>) {
        if crate::probe::location().is_some_and(|p| std::ptr::eq(meta.spawned_at(), p)) {
            return;
        }
        let site = self.sites.lookup(meta.spawned_at()) as usize;
        if let Some(c) = self.sites.spawned.get(site) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn on_terminate(&self, meta: &TaskMeta<'_>) {
        // Tasks whose spawn was not seen (tokio's own worker threads, run as blocking tasks) are
        // not counted, so `finished` never exceeds `spawned`.
        let Some(site) = self.sites.find(meta.spawned_at()) else { return };
        let site = site as usize;
        if self.sites.spawned.get(site).is_none_or(|c| c.load(Ordering::Relaxed) == 0) {
            return;
        }
        if let Some(c) = self.sites.finished.get(site) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cold]
    fn register_thread(&self, l: &Local) -> *const ThreadSlot {
        l.session.set(self.id);
        l.slot.set(std::ptr::null());
        l.last_location.set(0);
        for r in &l.recent {
            r.location.set(0);
        }
        l.last_cells.set(std::ptr::null());
        if !self.enabled.load(Ordering::Relaxed) {
            return std::ptr::null();
        }
        {
            let mut handle = lock(&self.handle);
            // Not once the session is finishing: the handle would keep the runtime alive.
            if handle.is_none() && self.enabled.load(Ordering::Relaxed) {
                *handle = Handle::try_current().ok();
            }
            if self.lag.is_some()
                && let Some(h) = handle.as_ref()
                && let Some(me) = self.this.get()
                && !self.probe_started.swap(true, Ordering::Relaxed)
            {
                crate::probe::spawn(h, me.clone());
            }
        }
        let mut threads = lock(&self.threads);
        let full = threads.len() >= MAX_THREADS;
        let id = if full { None } else { Some(self.next_worker.fetch_add(1, Ordering::Relaxed)) };
        let Some(id) = id.filter(|id| *id < MAX_WORKER_IDS) else {
            if !self.threads_full.swap(true, Ordering::Relaxed) {
                drop(threads);
                self.report_error(if full {
                    format!("more than {MAX_THREADS} threads polled tasks at once; further threads are not recorded")
                } else {
                    format!("more than {MAX_WORKER_IDS} threads polled tasks; later threads are not recorded")
                });
            }
            return std::ptr::null();
        };
        let current = std::thread::current();
        let slot = Arc::new(ThreadSlot {
            decl: WorkerDecl {
                id,
                index: tokio::runtime::worker_index().and_then(|i| u32::try_from(i).ok()),
                thread_name: current.name().unwrap_or("unnamed").to_string(),
            },
            // SAFETY: gettid has no preconditions.
            tid: unsafe { libc::gettid() },
            thread_id: current.id(),
            stack: crate::stack::current_stack(),
            in_poll_since: AtomicU64::new(0),
            in_poll_site: AtomicU32::new(0),
            exited: AtomicBool::new(false),
            last_long_seq: AtomicU64::new(0),
            last_long_start: AtomicU64::new(0),
            last_long_ns: AtomicU64::new(0),
            cells: (0..=self.sites.max_sites).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
        });
        let ptr = Arc::as_ptr(&slot);
        let _ = EXIT.try_with(|e| {
            // A thread that moves to another session leaves its place in the last one.
            if let Some(old) = e.replace(Some(Arc::clone(&slot))) {
                old.exited.store(true, Ordering::Release);
            }
        });
        threads.push(slot);
        l.slot.set(ptr);
        ptr
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn the_hot_clock_agrees_with_quanta_and_with_the_wall_clock() {
        let c = HotClock::new();
        for ticks in [0u64, 1, 1_000, 123_456_789, 3_000_000_000, 1 << 40] {
            let ours = c.delta_as_nanos(5, 5 + ticks);
            let quanta = c.clock.delta_as_nanos(5, 5 + ticks);
            assert!(ours.abs_diff(quanta) <= 1 + quanta / 1_000_000, "{ticks} ticks: {ours} vs {quanta}");
        }
        assert_eq!(c.delta_as_nanos(10, 5), 0, "a later start is no time");
        // Each raw read bracketed by wall-clock reads, so that a preemption between them widens
        // the bounds instead of failing the test.
        let a0 = std::time::Instant::now();
        let start = c.raw();
        let a1 = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b0 = std::time::Instant::now();
        let end = c.raw();
        let b1 = std::time::Instant::now();
        let ns = c.delta_as_nanos(start, end);
        let (shortest, longest) = ((b0 - a1).as_nanos() as u64, (b1 - a0).as_nanos() as u64);
        // Calibration error: 1%.
        assert!(
            ns >= shortest - shortest / 100 && ns <= longest + longest / 100,
            "{ns} ns, wall {shortest}..{longest} ns"
        );
    }

    #[test]
    fn both_compiled_clock_reads_give_the_same_clock() {
        // The hooks are compiled for one or the other; on a TSC machine both read the same
        // counter (one inline, one through quanta), elsewhere only the quanta one runs.
        let c = HotClock::new();
        if !c.is_tsc() {
            let (a, b) = (c.raw_as::<false>(), c.raw_as::<false>());
            assert!(b >= a);
            return;
        }
        let before = c.raw_as::<true>();
        let via_quanta = c.raw_as::<false>();
        let after = c.raw_as::<true>();
        assert!(before <= via_quanta && via_quanta <= after, "{before} {via_quanta} {after}");
    }
}
