//! State shared by the runtime hooks and the flusher: the spawn-site table, the per-thread slots,
//! and the hook bodies themselves.
//!
//! The per-poll path is [`Shared::before_poll`] / [`Shared::after_poll`]: a thread-local lookup,
//! one TSC read on each side, the site from a thread-local cache of recent spawn locations (the
//! lock-free site table when it misses), and a few relaxed stores into cells owned by the thread.
//! Registering a thread or a new spawn site takes a lock and allocates, once.

use std::cell::Cell;
use std::io::Write as _;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use loopscope_core::model::{StallCategory, StallTally, WorkerDecl};
use tokio::runtime::{Handle, TaskMeta};

use crate::hot::cells::SiteCells;

pub(crate) mod cells;
mod clock;
pub(crate) mod probe;
mod sites;
pub(crate) mod tasks;
// Fed by the `tracing` layer; without the feature only the (empty) span stacks are read.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) mod spans;
mod threads;

pub(crate) use clock::HotClock;
pub(crate) use sites::SiteTable;
pub(crate) use threads::{CellBudget, EXIT, MAX_THREADS, MAX_WORKER_IDS, ThreadSlot};

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

impl Local {
    /// The entry `location` would occupy in `recent` (Fibonacci hashing of the address).
    #[inline(always)]
    fn recent_entry(&self, location: usize) -> &RecentSite {
        &self.recent[location.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - RECENT.trailing_zeros())]
    }
}

/// Everything the hooks, the watchdog and the flusher share: one session's state, behind an
/// interface that keeps its invariants (thread places and their cells, the runtime's handle,
/// stall ids, the lag probe's figures) in this module.
pub(crate) struct Shared {
    id: u64,
    clock: HotClock,
    start_raw: u64,
    slow_ns: u64,
    /// Slow polls and stalls (polls at least this long; `u64::MAX` when the detector is off)
    /// in the clock's raw units, for the hot path.
    slow_raw: u64,
    stall_raw: u64,
    enabled: AtomicBool,
    sites: SiteTable,
    /// Every alive task's site, spawn time and latest poll.
    tasks: tasks::TaskTable,
    /// Task dumps.
    dumps: crate::dump::Dumps,
    /// Whether alive tasks are followed in `tasks` (`SessionBuilder::task_ages`).
    follow_tasks: AtomicBool,
    threads: Mutex<Vec<Arc<ThreadSlot>>>,
    handle: Mutex<Option<Handle>>,
    threads_full: AtomicBool,
    /// The next worker id to hand out.
    next_worker: AtomicU32,
    /// Cells alive, against their cap.
    cells: CellBudget,
    errors: Mutex<Vec<String>>,
    /// Ids of stalls, unique within the session (the watchdog and the panic hook both raise them).
    stall_ids: AtomicU64,
    /// The lag probe's measurements, when the probe runs (the `lean` profile).
    lag: Option<Mutex<loopscope_core::dist::DistAcc>>,
    probe_started: AtomicBool,
    /// The lag probe's task id (0 before it is spawned).
    probe_task: AtomicU64,
    /// This session, weakly, for the probe task.
    this: std::sync::Weak<Shared>,
    /// Where events raised outside the watchdog go (the flusher), while the session runs.
    events: Mutex<Option<std::sync::mpsc::Sender<crate::outputs::flusher::Cmd>>>,
    /// Stalls counted past the budget of stall events, since the flusher last took them.
    tally: Mutex<Vec<StallTally>>,
    /// Slow-poll samples that were due but not taken (past their budget), since the flusher
    /// last took the count.
    skipped_samples: AtomicU64,
    /// Tasks that panicked since the flusher last took them, by (site, location, message).
    panics: Mutex<Vec<loopscope_core::model::PanicCount>>,
}

/// Distinct (site, location, message) panics kept per interval; further ones are counted in one
/// entry without a site.
const MAX_PANICS: usize = 256;
/// Bytes of a panic's message kept.
const PANIC_MESSAGE: usize = 512;

impl Shared {
    pub(crate) fn new(slow_ns: u64, stall_ns: u64, max_sites: u32, lag_probe: bool) -> Arc<Self> {
        let clock = HotClock::new();
        let start_raw = clock.raw();
        let (slow_raw, stall_raw) = (clock.ns_to_raw(slow_ns), clock.ns_to_raw(stall_ns));
        Arc::new_cyclic(|this| Shared {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            clock,
            start_raw,
            slow_ns,
            slow_raw,
            stall_raw,
            enabled: AtomicBool::new(true),
            sites: SiteTable::new(max_sites),
            tasks: tasks::TaskTable::new(),
            dumps: crate::dump::Dumps::default(),
            follow_tasks: AtomicBool::new(true),
            threads: Mutex::new(Vec::new()),
            handle: Mutex::new(None),
            threads_full: AtomicBool::new(false),
            next_worker: AtomicU32::new(0),
            cells: CellBudget::default(),
            errors: Mutex::new(Vec::new()),
            stall_ids: AtomicU64::new(0),
            lag: lag_probe.then(|| Mutex::new(loopscope_core::dist::DistAcc::new())),
            probe_started: AtomicBool::new(false),
            probe_task: AtomicU64::new(0),
            this: this.clone(),
            events: Mutex::new(None),
            tally: Mutex::new(Vec::new()),
            skipped_samples: AtomicU64::new(0),
            panics: Mutex::new(Vec::new()),
        })
    }

    /// Whether polls are being recorded (until the session finishes or fails).
    pub(crate) fn is_recording(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Stops recording: polls from now on are not recorded, and no thread takes the runtime's
    /// handle again.
    pub(crate) fn stop_recording(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// The clock's raw value now.
    pub(crate) fn now_raw(&self) -> u64 {
        self.clock.raw()
    }

    /// Nanoseconds between two raw clock values.
    pub(crate) fn nanos_between(&self, start: u64, end: u64) -> u64 {
        self.clock.delta_as_nanos(start, end)
    }

    /// A raw clock value as nanoseconds since the session started.
    pub(crate) fn session_ns(&self, raw: u64) -> u64 {
        self.clock.delta_as_nanos(self.start_raw, raw)
    }

    /// Whether the clock reads the TSC inline (the hooks are compiled for one or the other).
    pub(crate) fn reads_tsc(&self) -> bool {
        self.clock.is_tsc()
    }

    /// The slow-poll threshold, in nanoseconds.
    pub(crate) fn slow_poll_ns(&self) -> u64 {
        self.slow_ns
    }

    /// The spawn-site table.
    pub(crate) fn sites(&self) -> &SiteTable {
        &self.sites
    }

    /// The recorder's own tasks alive in the runtime (the lag probe's), which tokio counts with
    /// the program's.
    pub(crate) fn own_tasks(&self) -> u64 {
        u64::from(self.probe_started.load(Ordering::Relaxed)) + u64::from(self.dumps.task_alive())
    }

    /// Stops following alive tasks (before any task is spawned).
    pub(crate) fn stop_following_tasks(&self) {
        self.follow_tasks.store(false, Ordering::Relaxed);
    }

    /// Task dumps.
    pub(crate) fn dumps(&self) -> &crate::dump::Dumps {
        &self.dumps
    }

    /// The workers in one poll for `at_least` now (not those that handed their worker over with
    /// `block_in_place`: the runtime goes on without them).
    pub(crate) fn workers_in_poll_for(&self, at_least: std::time::Duration) -> Vec<u32> {
        let now = self.clock.raw();
        let least = self.clock.ns_to_raw(u64::try_from(at_least.as_nanos()).unwrap_or(u64::MAX));
        self.threads()
            .iter()
            .filter(|t| {
                let since = t.in_poll_since.load(Ordering::Relaxed);
                since != 0 && now.saturating_sub(since) >= least && !self.handed_off(t)
            })
            .map(|t| t.decl.id)
            .collect()
    }

    /// The lag probe's task id, once it runs.
    pub(crate) fn probe_task(&self) -> Option<u64> {
        Some(self.probe_task.load(Ordering::Relaxed)).filter(|id| *id != 0)
    }

    /// The task table.
    pub(crate) fn tasks(&self) -> &tasks::TaskTable {
        &self.tasks
    }

    /// The threads recorded now (a snapshot).
    pub(crate) fn threads(&self) -> Vec<Arc<ThreadSlot>> {
        lock(&self.threads).clone()
    }

    /// Frees the places (and cells) of threads that exited, once their last polls were taken.
    pub(crate) fn forget_threads(&self, gone: &[u32]) {
        lock(&self.threads).retain(|t| {
            let keep = !gone.contains(&t.decl.id);
            if !keep {
                self.cells.give_back(t.cells_held());
            }
            keep
        });
    }

    /// The runtime's handle, once a task has been polled (and until the session ends).
    pub(crate) fn runtime(&self) -> Option<Handle> {
        lock(&self.handle).clone()
    }

    /// Lets go of the runtime's handle, which would otherwise keep the runtime's internals alive
    /// through the hooks.
    pub(crate) fn forget_runtime(&self) {
        lock(&self.handle).take();
    }

    /// Errors met so far (each was said once on stderr).
    pub(crate) fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }

    /// A new stall id, unique within the session.
    pub(crate) fn next_stall_id(&self) -> u64 {
        self.stall_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Records one lag-probe measurement (the `lean` profile).
    pub(crate) fn record_lag(&self, lag: std::time::Duration) {
        if let Some(acc) = &self.lag {
            lock(acc).record(lag);
        }
    }

    /// The lag probe's measurements since the last call.
    pub(crate) fn take_lag(&self) -> loopscope_core::Dist {
        self.lag.as_ref().map(|l| std::mem::take(&mut *lock(l)).to_dist()).unwrap_or_default()
    }

    /// Where events raised outside the watchdog go (the panic hook's), while the session runs.
    pub(crate) fn event_sink(&self) -> Option<std::sync::mpsc::Sender<crate::outputs::flusher::Cmd>> {
        lock(&self.events).clone()
    }

    /// Sets (or, with `None`, closes) where events raised outside the watchdog go.
    pub(crate) fn set_event_sink(&self, sink: Option<std::sync::mpsc::Sender<crate::outputs::flusher::Cmd>>) {
        *lock(&self.events) = sink;
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

    /// Counts a panic of a task of `site` (from the panic hook: allocates a little, never panics).
    pub(crate) fn count_panic(&self, site: u32, location: Option<String>, message: &str) {
        let mut end = message.len().min(PANIC_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let mut panics = lock(&self.panics);
        let found = panics.iter().position(|p| p.site == Some(site) && p.location == location && p.message == message);
        let i = match found {
            Some(i) => i,
            None if panics.len() < MAX_PANICS => {
                panics.push(loopscope_core::model::PanicCount {
                    site: Some(site),
                    location,
                    message: message.to_string(),
                    count: 0,
                });
                panics.len() - 1
            }
            None => match panics.iter().position(|p| p.site.is_none()) {
                Some(i) => i,
                None => {
                    panics.push(loopscope_core::model::PanicCount {
                        site: None,
                        location: None,
                        message: "<other panics>".into(),
                        count: 0,
                    });
                    panics.len() - 1
                }
            },
        };
        panics[i].count += 1;
    }

    /// The panics counted since the last call.
    pub(crate) fn take_panics(&self) -> Vec<loopscope_core::model::PanicCount> {
        std::mem::take(&mut *lock(&self.panics))
    }

    /// Counts a slow-poll sample that was due but not taken (past the budget).
    pub(crate) fn count_skipped_sample(&self) {
        self.skipped_samples.fetch_add(1, Ordering::Relaxed);
    }

    /// Samples skipped since the last call.
    pub(crate) fn take_skipped_samples(&self) -> u64 {
        self.skipped_samples.swap(0, Ordering::Relaxed)
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
    pub(crate) fn before_poll<const TSC: bool, const SCHED: bool, const TASKS: bool>(&self, meta: &TaskMeta<'_>) {
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
                            return self.before_poll_other::<TSC, SCHED, TASKS>(l, meta);
                        }
                        l.last_location.set(key);
                        l.last_cells.set(recent.cells.get());
                        slot.in_poll_site.store(recent.site.get(), Ordering::Relaxed);
                    }
                    let now = self.clock.raw_as::<TSC>();
                    slot.in_poll_since.store(now, Ordering::Relaxed);
                    if TASKS {
                        self.tasks.polled(tasks::task_id(meta), now);
                    }
                    if SCHED {
                        self.record_schedule_latency(l, meta);
                    }
                }
                _ => self.before_poll_other::<TSC, SCHED, TASKS>(l, meta),
            }
        });
    }

    /// The rest of [`Shared::before_poll`]: a thread to register, or a spawn site not seen
    /// lately.
    #[cold]
    #[inline(never)]
    fn before_poll_other<const TSC: bool, const SCHED: bool, const TASKS: bool>(&self, l: &Local, meta: &TaskMeta<'_>) {
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
        let now = self.clock.raw_as::<TSC>();
        slot.in_poll_since.store(now, Ordering::Relaxed);
        if TASKS {
            self.tasks.polled(tasks::task_id(meta), now);
        }
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
        let own = |at: Option<&'static Location<'static>>| at.is_some_and(|p| std::ptr::eq(loc, p));
        if !self.enabled.load(Ordering::Relaxed) || own(crate::hot::probe::location()) || own(crate::dump::location()) {
            return false;
        }
        let key = loc as *const Location<'static> as usize;
        let site = self.sites.lookup(loc);
        let cells = slot.cells_or_insert(site, self.clock.mult, &self.cells, |m| self.report_error(m));
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
        // A poll that called `block_in_place` gave its worker to another thread: the watchdog,
        // had it looked in time, would not have called it a stall; nor does it afterwards.
        let handed_off = self.contain(false, || self.handed_off(slot));
        slot.set_last_long(start, self.clock.delta_as_nanos(start, start + d), handed_off);
        // Release: a watchdog that sees the poll end also sees `last_long_*`.
        slot.in_poll_since.store(0, Ordering::Release);
        cells.poll.record(d);
        if d > self.slow_raw {
            cells.count_slow();
        }
    }

    /// Whether `t`, a worker thread, has handed its worker to another thread (`block_in_place`):
    /// tokio's record of which thread runs each worker names it for none of them. (A thread of
    /// the blocking pool can later become another worker's thread; then it is a worker again.)
    pub(crate) fn handed_off(&self, t: &ThreadSlot) -> bool {
        if t.decl.index.is_none() {
            return false;
        }
        let Some(handle) = self.runtime() else { return false };
        let metrics = handle.metrics();
        let ids: Vec<_> = (0..metrics.num_workers()).map(|i| metrics.worker_thread_id(i)).collect();
        // Until every worker has started, the record is incomplete: do not conclude anything.
        ids.iter().all(Option::is_some) && !ids.contains(&Some(t.thread_id))
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
        let own = |at: Option<&'static Location<'static>>| at.is_some_and(|p| std::ptr::eq(meta.spawned_at(), p));
        if own(crate::hot::probe::location()) || own(crate::dump::location()) {
            return;
        }
        let site = self.sites.lookup(meta.spawned_at());
        self.sites.count_spawn(site as usize);
        if self.enabled.load(Ordering::Relaxed) && self.follow_tasks.load(Ordering::Relaxed) {
            self.tasks.spawn(tasks::task_id(meta), site, self.clock.raw());
        }
    }

    pub(crate) fn on_terminate(&self, meta: &TaskMeta<'_>) {
        self.tasks.terminated(tasks::task_id(meta));
        if let Some(site) = self.sites.find(meta.spawned_at()) {
            self.sites.count_finish(site as usize);
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
                && !self.probe_started.swap(true, Ordering::Relaxed)
            {
                let id = crate::hot::probe::spawn(h, self.this.clone());
                self.probe_task.store(id, Ordering::Relaxed);
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
        let slot = Arc::new(ThreadSlot::new(
            WorkerDecl {
                id,
                index: tokio::runtime::worker_index().and_then(|i| u32::try_from(i).ok()),
                thread_name: current.name().unwrap_or("unnamed").to_string(),
            },
            current.id(),
            self.sites.max_sites(),
        ));
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
