//! Task dumps: what every task of the runtime is waiting for, from tokio's own task dump
//! (`Handle::dump`, which needs `--cfg tokio_unstable` and tokio's `taskdump` feature, turned on by
//! loopscope's feature of the same name; Linux on x86-64, x86, aarch64, s390x).
//!
//! A dump is asked for by a viewer (`loopscope dump --attach`, a key in the TUI), by the program
//! ([`crate::Session::request_dump`]), by the dump signal (`SIGUSR2`, opt-in), or by the flusher
//! once when a spawn site's tasks have been idle beyond the dump threshold. One dump at a time, on
//! a thread of the recorder's own: it spawns one small task that awaits `Handle::dump()` (tokio
//! pauses the workers, re-polls every task in a tracing mode and resumes them), waits for it with
//! a deadline (a worker stuck in a poll never pauses, so a dump then never completes: the dump is
//! recorded as timed out, naming the stalled workers), symbolizes the traces there (tokio's
//! backtraces are resolved in the program: the first dump reads the binary's debug information),
//! groups tasks by spawn site and trace, and hands the frame to the flusher.

// Without the feature, the parts that take and group a dump are not reached.
#![cfg_attr(not(feature = "taskdump"), allow(dead_code, unused_imports))]

use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use loopscope_core::model::{DumpGroup, DumpOutcome, DumpTrigger, StackFrame, TaskDump};

use crate::hot::tasks::TaskView;
use crate::hot::{Shared, lock};
use crate::outputs::flusher::Cmd;

/// How long a dump may take before it is given up.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);
/// A worker in one poll for this long holds a dump up (tokio pauses every worker for a dump,
/// and waits for each up to 250 ms at a time, the others paused meanwhile): no dump is started.
pub(crate) const STUCK: Duration = Duration::from_millis(100);
/// Automatic dumps (idle sites) in one session at most.
pub(crate) const MAX_AUTOMATIC: u32 = 4;
/// The least time between the starts of two dumps: a viewer that asks again and again gets the
/// dump under way, or the next one after this gap.
pub(crate) const GAP: Duration = Duration::from_secs(1);
/// Frames of one trace kept (innermost first).
const MAX_FRAMES: usize = 64;
/// Traces of one task kept (one per future it waits on).
const MAX_TRACES: usize = 8;
/// Frames of one dump in all, within what readers accept of one frame.
const MAX_DUMP_FRAMES: usize = 32_768;
/// Bytes of names and paths of one dump in all (a frame stays far below the format's 64 MiB).
const MAX_DUMP_TEXT: usize = 8 << 20;
/// Bytes of one function name or file path kept (generic types can make names very long).
const MAX_NAME: usize = 4096;
/// Tasks symbolized per dump, the idlest first (tokio resolves each task's backtraces: its cost
/// grows with tasks and frames); the rest are counted.
const MAX_TRACED_TASKS: usize = 10_000;
/// How long after a dump its wake-ups of the traced tasks are waited for.
const SETTLE: Duration = Duration::from_secs(1);

/// Whether this build can take dumps.
pub(crate) const AVAILABLE: bool = cfg!(all(
    feature = "taskdump",
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
));

static LOCATION: OnceLock<&'static Location<'static>> = OnceLock::new();

/// Where the dumping task is spawned (tokio's `spawned_at` for it), once it has been: the
/// recorder's own task, left out of the profile like the lag probe.
#[inline]
pub(crate) fn location() -> Option<&'static Location<'static>> {
    LOCATION.get().copied()
}

struct Request {
    trigger: DumpTrigger,
    at_ns: u64,
    /// For an automatic dump: the sites it stands for (re-armed when it could not be taken).
    sites: Vec<u32>,
}

/// The dumping task of tokio's dump, as the recorder knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum DumpTask {
    /// None alive.
    #[default]
    Idle,
    /// Spawned, its dump awaited.
    Running,
    /// Given up at this time: tokio's dump still waits for a worker stuck in a poll.
    Abandoned(Instant),
}

/// Automatic dumps taken so far.
#[derive(Default)]
struct Auto {
    count: u32,
    /// Automatic dumps asked for, taken or not (bounded: [`MAX_AUTOMATIC_ATTEMPTS`]).
    attempts: u32,
    /// Sites whose idle tasks set off an automatic dump already.
    sites: Vec<u32>,
}

/// Automatic dumps asked for in one session at most, whether they could be taken or not.
const MAX_AUTOMATIC_ATTEMPTS: u32 = 4 * MAX_AUTOMATIC;

/// A session's dumps: the dumping thread (started at the first request), one dump at a time.
#[derive(Default)]
pub(crate) struct Dumps {
    busy: AtomicBool,
    tx: Mutex<Option<SyncSender<Request>>>,
    auto: Mutex<Auto>,
    signals_seen: AtomicU64,
    /// Viewers' request numbers the next dump answers.
    requests: Mutex<Vec<u64>>,
    /// The dumping task: while one that timed out has not ended (tokio's dump waits for a worker
    /// stuck in a poll), no other is started, so at most one of tokio's dumping threads waits at
    /// a time, whoever asks and however often.
    task: Arc<Mutex<DumpTask>>,
    errors: AtomicBool,
    /// The flusher, while the session runs.
    sink: Mutex<Option<std::sync::mpsc::Sender<Cmd>>>,
    /// Dumps handed to tokio so far.
    started: AtomicU64,
    /// Whether more than one dump may be taken of a runtime with several workers
    /// ([`crate::SessionBuilder::repeat_dumps`]; see [`ONE_DUMP`]).
    repeat: AtomicBool,
}

/// Why a runtime with several workers gets one dump per session unless the program asks for
/// more: tokio's (1.54) dump gathers the workers at a barrier whose wait gives up after 250 ms
/// without taking back its arrival (tokio-rs/tokio#8370, not in a release yet). A worker that
/// gives up there (one busy in a long poll, or one that came back for the dump just taken while
/// another did not) leaves the barrier one short, and a later dump then lets one worker through
/// alone: it traces tasks another worker is running (tokio's assertion panics on a worker), or
/// waits for that worker forever, which then also hangs the runtime's shutdown. Measured here:
/// repeated dumps of a deadlocked program with two workers wedged a worker after 4 to 17 dumps
/// beside two busy loops; with one worker, 60 dumps out of 60 completed.
pub(crate) const ONE_DUMP: &str = "tokio 1.54's task dump can leave a runtime with several workers one \
     worker short after a dump (tokio-rs/tokio#8370), and a further dump can then stop a worker for good: one \
     dump per run unless the program allows more (LOOPSCOPE_DUMP_REPEAT=1, SessionBuilder::repeat_dumps, \
     --repeat-dumps of loopscope run and record; docs/tasks.md)";

impl Dumps {
    /// Allows dumps after the first on a runtime with several workers (see [`ONE_DUMP`]).
    pub(crate) fn set_repeat(&self, repeat: bool) {
        self.repeat.store(repeat, Ordering::Relaxed);
    }

    /// Whether tokio's dump may be started again on this runtime: its first, any on a runtime
    /// with one worker, or any when the program opted in (see [`ONE_DUMP`]).
    fn may_start(&self, handle: &tokio::runtime::Handle) -> bool {
        self.started.load(Ordering::Relaxed) == 0
            || handle.metrics().num_workers() <= 1
            || self.repeat.load(Ordering::Relaxed)
    }

    /// Takes the dump signals received so far as seen (at install: only later ones count).
    pub(crate) fn signals_seen_now(&self) {
        self.signals_seen.store(signal::received(), Ordering::Relaxed);
    }

    /// Whether the recorder's dumping task is alive in the runtime.
    pub(crate) fn task_alive(&self) -> bool {
        *lock(&self.task) != DumpTask::Idle
    }

    /// Sets (or, with `None`, closes) where dumps go.
    pub(crate) fn set_sink(&self, sink: Option<std::sync::mpsc::Sender<Cmd>>) {
        *lock(&self.sink) = sink;
    }

    /// Asks for a dump; false when one is under way or was taken less than [`GAP`] ago: then the
    /// next dump answers a viewer's request number `request` (when not 0; at most
    /// [`TaskDump::MAX_REQUESTS`] wait at once).
    pub(crate) fn request(&self, shared: &Arc<Shared>, trigger: DumpTrigger, request: u64) -> bool {
        if !shared.is_recording() {
            return false;
        }
        if request != 0 {
            let mut r = lock(&self.requests);
            if r.len() < TaskDump::MAX_REQUESTS && !r.contains(&request) {
                r.push(request);
            }
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.start(shared, Request { trigger, at_ns: shared.now_ns(), sites: Vec::new() })
    }

    /// Hands a request to the dumping thread (started at the first); `busy` is set.
    fn start(&self, shared: &Arc<Shared>, req: Request) -> bool {
        let mut tx = lock(&self.tx);
        if tx.is_none() {
            let (t, rx) = sync_channel::<Request>(1);
            let weak = Arc::downgrade(shared);
            let started = std::thread::Builder::new().name("loopscope-dump".into()).spawn(move || dumper(&weak, &rx));
            match started {
                Ok(_) => *tx = Some(t),
                Err(e) => {
                    self.busy.store(false, Ordering::Release);
                    if !self.errors.swap(true, Ordering::Relaxed) {
                        shared.report_error(format!("cannot start the task-dump thread: {e}; no dumps"));
                    }
                    return false;
                }
            }
        }
        match tx.as_ref().map(|t| t.try_send(req)) {
            Some(Ok(())) => true,
            _ => {
                self.busy.store(false, Ordering::Release);
                false
            }
        }
    }

    /// The flusher's check, once an interval: a dump signal received since the last check (when
    /// the session takes dumps on the signal), or a site whose idlest task has waited past `after`
    /// (`idle`: each site's longest idle time; once per site, [`MAX_AUTOMATIC`] in all).
    pub(crate) fn check(&self, shared: &Arc<Shared>, idle: &[(u32, u64)], after: Option<Duration>, on_signal: bool) {
        let signals = signal::received();
        let seen = self.signals_seen.load(Ordering::Relaxed);
        if signals != seen && on_signal {
            // Seen once a dump has been started for it; while one is under way, asked again.
            if self.request(shared, DumpTrigger::Signal, 0) {
                self.signals_seen.store(signals, Ordering::Relaxed);
            }
            return;
        }
        self.signals_seen.store(signals, Ordering::Relaxed);
        let (Some(after), true) = (after, AVAILABLE) else { return };
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        let mut auto = lock(&self.auto);
        if auto.count >= MAX_AUTOMATIC
            || auto.attempts >= MAX_AUTOMATIC_ATTEMPTS
            || shared.runtime().is_some_and(|h| !self.may_start(&h))
        {
            return;
        }
        let Some(&(site, idle_ns)) =
            idle.iter().filter(|(s, i)| *i >= after && !auto.sites.contains(s)).max_by_key(|(_, i)| *i)
        else {
            return;
        };
        if !shared.is_recording() || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        // Every site idle past the threshold now is in this dump.
        let sites: Vec<u32> =
            idle.iter().filter(|(s, i)| *i >= after && !auto.sites.contains(s)).map(|(s, _)| *s).collect();
        let req =
            Request { trigger: DumpTrigger::Idle { site, idle_ns }, at_ns: shared.now_ns(), sites: sites.clone() };
        if self.start(shared, req) {
            auto.count += 1;
            auto.attempts += 1;
            auto.sites.extend(sites);
        }
    }

    /// An automatic dump that traced nothing (held up, or the runtime ending): its sites may set
    /// one off again (within [`MAX_AUTOMATIC_ATTEMPTS`]).
    fn retry_automatic(&self, sites: &[u32]) {
        let mut auto = lock(&self.auto);
        auto.count = auto.count.saturating_sub(1);
        auto.sites.retain(|s| !sites.contains(s));
    }
}

/// The dumping thread: takes requests until the session ends.
fn dumper(shared: &Weak<Shared>, rx: &Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut req = first;
        loop {
            let Some(s) = shared.upgrade() else { return };
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take(&s, &req)));
            let (dump, taken) = match outcome {
                Ok(d) => d,
                Err(_) => (
                    TaskDump {
                        at_ns: req.at_ns,
                        trigger: req.trigger,
                        outcome: DumpOutcome::Unavailable { reason: "the task dump failed inside tokio".into() },
                        ..TaskDump::default()
                    },
                    true,
                ),
            };
            let automatic = matches!(req.trigger, DumpTrigger::Idle { .. });
            if automatic && dump.outcome != DumpOutcome::Complete {
                s.dumps().retry_automatic(&req.sites);
            }
            // An automatic dump that was not started (a worker stuck in a poll) is only tried
            // again later; every other outcome is recorded, and answers the viewers waiting.
            if taken || !automatic {
                let dump = TaskDump { requests: std::mem::take(&mut *lock(&s.dumps().requests)), ..dump };
                if let Some(sink) = lock(&s.dumps().sink).clone() {
                    let _ = sink.send(Cmd::Dump(Box::new(dump)));
                }
            }
            drop(s);
            // Dumps pause the program: at most one a `GAP`, however often they are asked for.
            std::thread::sleep(GAP.saturating_sub(started.elapsed()));
            let Some(s) = shared.upgrade() else { return };
            // Viewers that asked meanwhile get the next dump. Checked under the lock their
            // requests are added under: one added after this finds the dump no longer busy.
            let waiting = lock(&s.dumps().requests);
            if waiting.is_empty() {
                s.dumps().busy.store(false, Ordering::Release);
                break;
            }
            drop(waiting);
            req = Request { trigger: DumpTrigger::Request, at_ns: s.now_ns(), sites: Vec::new() };
        }
    }
}

/// Takes a dump; and whether tokio's dump was started (false: held up or unavailable).
fn take(shared: &Arc<Shared>, req: &Request) -> (TaskDump, bool) {
    let base = TaskDump { at_ns: req.at_ns, trigger: req.trigger, ..TaskDump::default() };
    let unavailable = |reason: &str| {
        (TaskDump { outcome: DumpOutcome::Unavailable { reason: reason.into() }, ..base.clone() }, false)
    };
    if !AVAILABLE {
        return unavailable(
            "this program's loopscope was built without its `taskdump` feature (docs/tasks.md: \
             `loopscope = { features = [\"taskdump\"] }`, with `--cfg tokio_unstable`; Linux only)",
        );
    }
    let Some(handle) = shared.runtime() else { return unavailable("no task has been polled yet") };
    let held_up = |since: Option<Instant>| {
        let dump = TaskDump {
            outcome: DumpOutcome::TimedOut {
                waited_ns: since.map_or(0, |t| u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)),
                stalled_workers: shared.workers_in_poll_for(STUCK),
            },
            ..base.clone()
        };
        (dump, false)
    };
    // tokio's dump waits for every worker, pausing the others meanwhile: not while one is stuck
    // in a poll, nor while the last dump still waits for one.
    if let DumpTask::Abandoned(since) = *lock(&shared.dumps().task) {
        return held_up(Some(since));
    }
    if !shared.dumps().may_start(&handle) {
        return unavailable(ONE_DUMP);
    }
    if !shared.workers_in_poll_for(STUCK).is_empty() {
        return held_up(None);
    }
    shared.dumps().started.fetch_add(1, Ordering::Relaxed);
    (imp::take(shared, &handle, base), true)
}

/// Tasks of one dump, grouped by (spawn site, trace) as they are symbolized, within the caps on
/// groups and frames.
struct Grouping {
    groups: Vec<DumpGroup>,
    /// (site, the traces' instruction addresses) → index in `groups`.
    index: HashMap<(Option<u32>, Vec<u64>), usize>,
    frames: usize,
    /// Bytes of names and paths kept.
    text: usize,
    /// Tasks left out past the caps.
    skipped: u64,
}

impl Grouping {
    fn new() -> Self {
        Grouping { groups: Vec::new(), index: HashMap::new(), frames: 0, text: 0, skipped: 0 }
    }

    /// Adds one task: `site` and `idle_ns` from the task table, `traces` symbolized.
    fn add(&mut self, id: u64, site: Option<u32>, idle_ns: u64, traces: Vec<Vec<StackFrame>>) {
        // One address per frame and a separator per trace: two tasks with the same key wait at
        // the same places.
        let key: Vec<u64> =
            traces.iter().flat_map(|t| t.iter().map(|f| f.address).chain(std::iter::once(u64::MAX))).collect();
        let at = match self.index.get(&(site, key.clone())) {
            Some(&at) => at,
            None => {
                let frames: usize = traces.iter().map(Vec::len).sum();
                let text: usize =
                    traces.iter().flatten().map(|f| f.function.len() + f.file.as_ref().map_or(0, String::len)).sum();
                if self.groups.len() >= TaskDump::MAX_GROUPS
                    || self.frames + frames > MAX_DUMP_FRAMES
                    || self.text + text > MAX_DUMP_TEXT
                {
                    self.skipped += 1;
                    return;
                }
                self.frames += frames;
                self.text += text;
                self.groups.push(DumpGroup { site, traces, ..DumpGroup::default() });
                self.index.insert((site, key), self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[at];
        g.count += 1;
        g.idle_ns = g.idle_ns.max(idle_ns);
        if g.ids.len() < TaskDump::MAX_IDS {
            g.ids.push(id);
        }
    }

    fn finish(mut self) -> (Vec<DumpGroup>, u64) {
        self.groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.idle_ns.cmp(&a.idle_ns)).then(a.ids.cmp(&b.ids)));
        (self.groups, self.skipped)
    }
}

/// `s` cut to at most [`MAX_NAME`] bytes, at a character boundary.
fn clamp_name(mut s: String) -> String {
    if s.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A demangled name without its hash (`::h0123456789abcdef`).
pub(crate) fn without_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => name,
    }
}

#[cfg(all(
    feature = "taskdump",
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
))]
mod imp {
    use super::*;

    /// Marks the dumping task ended when its future is dropped, however it ends.
    struct Ended(Arc<Mutex<DumpTask>>);

    impl Drop for Ended {
        fn drop(&mut self) {
            *lock(&self.0) = DumpTask::Idle;
        }
    }

    #[track_caller]
    fn spawn_dump(
        handle: &tokio::runtime::Handle,
        tx: SyncSender<tokio::runtime::Dump>,
        ended: Ended,
    ) -> tokio::task::JoinHandle<()> {
        let _ = LOCATION.set(Location::caller());
        handle.spawn(async move {
            let _ended = ended;
            let dump = tokio::runtime::Handle::current().dump().await;
            let _ = tx.send(dump);
        })
    }

    pub(super) fn take(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, base: TaskDump) -> TaskDump {
        let state = Arc::clone(&shared.dumps().task);
        // Every task's latest poll before the dump: tokio wakes each task it traced once the
        // dump is over, and that poll must not make a stuck task look busy. (The time first: a
        // poll after it is the program's or the dump's, never one to put back.)
        let dump_raw = shared.now_raw();
        let before: HashMap<u64, TaskView> = shared.tasks().alive().map(|t| (t.id, t)).collect();
        let (tx, rx) = sync_channel(1);
        let started = Instant::now();
        *lock(&state) = DumpTask::Running;
        let task = spawn_dump(handle, tx, Ended(Arc::clone(&state)));
        let own = crate::hot::tasks::id_of(&task.id());
        let probe = shared.probe_task();
        let dump = match rx.recv_timeout(TIMEOUT) {
            Ok(d) => d,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return TaskDump {
                    outcome: DumpOutcome::Unavailable {
                        reason: "the runtime shut down before the dump was done".into(),
                    },
                    ..base
                };
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Not aborted: tokio's dump goes on until the stuck worker returns, and no other
                // is started until it is done. The task's end marks it idle (under the same lock:
                // one that ended just now stays idle).
                let mut st = lock(&state);
                if *st == DumpTask::Running {
                    *st = DumpTask::Abandoned(started);
                }
                drop(st);
                drop(task);
                return TaskDump {
                    outcome: DumpOutcome::TimedOut {
                        waited_ns: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        stalled_workers: shared.workers_in_poll_for(STUCK),
                    },
                    ..base
                };
            }
        };
        let now = shared.now_raw();
        let idle_of = |t: &TaskView| shared.nanos_between(if t.last == 0 { t.spawned } else { t.last }, now);
        // The idlest first: past the cap on tasks symbolized, the busy ones are left out.
        let mut tasks: Vec<(u64, u64, &tokio::runtime::dump::Task)> = dump
            .tasks()
            .iter()
            .map(|t| (crate::hot::tasks::id_of(&t.id()), t))
            .filter(|(id, _)| *id != own && Some(*id) != probe)
            .map(|(id, t)| (id, before.get(&id).map_or(0, idle_of), t))
            .collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.1));
        let total = tasks.len() as u64;
        let mut grouping = Grouping::new();
        // tokio wakes every task it traced, symbolized here or not.
        let traced: Vec<u64> = tasks.iter().map(|(id, _, _)| *id).collect();
        for (i, (id, idle_ns, t)) in tasks.iter().enumerate() {
            if i >= MAX_TRACED_TASKS {
                grouping.skipped += 1;
                continue;
            }
            let traces = t.trace().resolve_backtraces().iter().take(MAX_TRACES).map(frames).collect();
            grouping.add(*id, before.get(id).map(|v| v.site), *idle_ns, traces);
        }
        drop(tasks);
        drop(dump);
        let (groups, skipped) = grouping.finish();
        restore(shared, &before, traced, dump_raw);
        TaskDump { tasks: total, skipped, groups, ..base }
    }

    /// tokio wakes every task it traced once the dump is over; that poll is not the program's.
    /// Waits (up to [`SETTLE`]) for each traced task's next poll and puts its latest poll back to
    /// what it was before the dump. A task the program really polled meanwhile looks idle a
    /// little longer, until its next poll.
    fn restore(shared: &Shared, before: &HashMap<u64, TaskView>, traced: Vec<u64>, dump_raw: u64) {
        // A task never polled before the dump has nothing to put back (its first poll may be the
        // program's).
        let mut waiting: Vec<(u64, u64)> =
            traced.into_iter().filter_map(|id| before.get(&id).filter(|t| t.last != 0).map(|t| (id, t.last))).collect();
        let deadline = Instant::now() + SETTLE;
        while !waiting.is_empty() && Instant::now() < deadline {
            waiting.retain(|&(id, was)| match shared.tasks().get(id) {
                // Gone (finished), or its place taken by another task: nothing to put back.
                None => false,
                Some(now) if now.last != was && now.last >= dump_raw => {
                    shared.tasks().restore(id, now.last, was);
                    false
                }
                Some(_) => true,
            });
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One backtrace as stack frames, innermost first (a frame's inlined functions first).
    fn frames(bt: &tokio::runtime::dump::Backtrace) -> Vec<StackFrame> {
        let mut out = Vec::new();
        for f in bt.frames() {
            let symbols: Vec<_> = f.symbols().collect();
            for (i, sym) in symbols.iter().enumerate() {
                let function =
                    sym.name_demangled().map_or_else(|| "<unknown>".to_string(), |n| without_hash(n).to_string());
                let file = sym.filename().map(|p| clamp_name(p.to_string_lossy().into_owned()));
                out.push(StackFrame {
                    address: f.ip() as u64,
                    function: clamp_name(loopscope_core::stall::qualify(function, file.as_deref())),
                    file,
                    line: sym.lineno(),
                    inlined: i + 1 < symbols.len(),
                    object: None,
                });
            }
            if out.len() >= MAX_FRAMES {
                out.truncate(MAX_FRAMES);
                break;
            }
        }
        out
    }
}

#[cfg(not(all(
    feature = "taskdump",
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
)))]
mod imp {
    use super::*;

    pub(super) fn take(_: &Arc<Shared>, _: &tokio::runtime::Handle, base: TaskDump) -> TaskDump {
        base
    }
}

/// The opt-in dump signal (`SIGUSR2`): its handler only counts; flushers compare the count with
/// the one they saw last, once an interval.
pub(crate) mod signal {
    use super::*;

    static RECEIVED: AtomicU64 = AtomicU64::new(0);
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

    extern "C" fn on_signal(_: libc::c_int) {
        RECEIVED.fetch_add(1, Ordering::Relaxed);
    }

    /// Signals received so far.
    pub(crate) fn received() -> u64 {
        RECEIVED.load(Ordering::Relaxed)
    }

    /// Installs the handler, once per process; an error when the program handles `SIGUSR2`
    /// itself (its handler is left alone).
    pub(crate) fn install() -> Result<(), String> {
        INSTALLED
            .get_or_init(|| {
                // SAFETY: plain sigaction calls with a zeroed, filled-in struct; the handler only
                // does an atomic add, which is async-signal-safe.
                unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut old) != 0 {
                        return Err("cannot read SIGUSR2's handler".into());
                    }
                    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                        return Err("the program handles SIGUSR2 itself; dumps on the signal are off".into());
                    }
                    let mut new: libc::sigaction = std::mem::zeroed();
                    new.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                    new.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut new.sa_mask);
                    if libc::sigaction(libc::SIGUSR2, &new, std::ptr::null_mut()) != 0 {
                        return Err("cannot set SIGUSR2's handler".into());
                    }
                }
                Ok(())
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let name = "é".repeat(MAX_NAME);
        let cut = clamp_name(name);
        assert!(cut.len() <= MAX_NAME && cut.chars().all(|c| c == 'é'));
        assert_eq!(clamp_name("short".into()), "short");
    }

    #[test]
    fn hashes_are_cut_from_names() {
        assert_eq!(without_hash("app::main::{{closure}}::h0123456789abcdef"), "app::main::{{closure}}");
        assert_eq!(without_hash("app::hold"), "app::hold");
        assert_eq!(without_hash("app::hx"), "app::hx");
    }
}
