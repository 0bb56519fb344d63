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
/// Automatic dumps (idle sites) in one session at most.
pub(crate) const MAX_AUTOMATIC: u32 = 4;
/// Frames of one trace kept (innermost first).
const MAX_FRAMES: usize = 128;
/// Traces of one task kept (one per future it waits on).
const MAX_TRACES: usize = 16;
/// How long after a dump its wake-ups of every task are taken to have been polled.
const SETTLE: Duration = Duration::from_millis(50);

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
}

/// A session's dumps: the dumping thread (started at the first request), one dump at a time.
#[derive(Default)]
pub(crate) struct Dumps {
    busy: AtomicBool,
    tx: Mutex<Option<SyncSender<Request>>>,
    automatic: std::sync::atomic::AtomicU32,
    /// Sites whose idle tasks set off an automatic dump already.
    dumped_sites: Mutex<Vec<u32>>,
    signals_seen: AtomicU64,
    /// Viewers' request numbers the dump under way answers.
    requests: Mutex<Vec<u64>>,
    errors: AtomicBool,
    /// The flusher, while the session runs.
    sink: Mutex<Option<std::sync::mpsc::Sender<Cmd>>>,
}

impl Dumps {
    /// Whether a dump is under way.
    #[inline(always)]
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Sets (or, with `None`, closes) where dumps go.
    pub(crate) fn set_sink(&self, sink: Option<std::sync::mpsc::Sender<Cmd>>) {
        *lock(&self.sink) = sink;
    }

    /// Asks for a dump; false when one is under way (the dump under way answers it: a viewer's
    /// request number `request`, when not 0, is added to its numbers).
    pub(crate) fn request(&self, shared: &Arc<Shared>, trigger: DumpTrigger, request: u64) -> bool {
        if !shared.is_recording() {
            return false;
        }
        if request != 0 {
            let mut r = lock(&self.requests);
            if r.len() < TaskDump::MAX_REQUESTS {
                r.push(request);
            }
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let req = Request { trigger, at_ns: shared.now_ns() };
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

    /// The flusher's check, once an interval: a dump signal received since the last check, or a
    /// site whose idlest task has waited past `after` (once per site, [`MAX_AUTOMATIC`] in all).
    pub(crate) fn check(&self, shared: &Arc<Shared>, idle: &[(u32, u64)], after: Option<Duration>) {
        let signals = signal::received();
        if signals != self.signals_seen.swap(signals, Ordering::Relaxed) {
            self.request(shared, DumpTrigger::Signal, 0);
            return;
        }
        let (Some(after), true) = (after, AVAILABLE) else { return };
        if self.automatic.load(Ordering::Relaxed) >= MAX_AUTOMATIC {
            return;
        }
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        let mut dumped = lock(&self.dumped_sites);
        let Some(&(site, idle_ns)) =
            idle.iter().filter(|(s, i)| *i >= after && !dumped.contains(s)).max_by_key(|(_, i)| *i)
        else {
            return;
        };
        if self.request(shared, DumpTrigger::Idle { site, idle_ns }, 0) {
            self.automatic.fetch_add(1, Ordering::Relaxed);
            // Every site idle past the threshold now is in this dump.
            dumped.extend(idle.iter().filter(|(_, i)| *i >= after).map(|(s, _)| *s));
        }
    }
}

/// The dumping thread: takes requests until the session ends.
fn dumper(shared: &Weak<Shared>, rx: &Receiver<Request>) {
    while let Ok(req) = rx.recv() {
        let Some(s) = shared.upgrade() else { return };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take(&s, &req)));
        let dump = match outcome {
            Ok(d) => d,
            Err(_) => TaskDump {
                at_ns: req.at_ns,
                trigger: req.trigger,
                outcome: DumpOutcome::Unavailable { reason: "the task dump failed inside tokio".into() },
                ..TaskDump::default()
            },
        };
        // Taken under the lock that requests are added under, just before the dump is no longer
        // busy: a request that finds it busy is answered by this dump.
        let mut requests = lock(&s.dumps().requests);
        let dump = TaskDump { requests: std::mem::take(&mut *requests), ..dump };
        s.dumps().busy.store(false, Ordering::Release);
        drop(requests);
        if let Some(sink) = lock(&s.dumps().sink).clone() {
            let _ = sink.send(Cmd::Dump(Box::new(dump)));
        }
    }
}

fn take(shared: &Arc<Shared>, req: &Request) -> TaskDump {
    let base = TaskDump { at_ns: req.at_ns, trigger: req.trigger, ..TaskDump::default() };
    let unavailable =
        |reason: &str| TaskDump { outcome: DumpOutcome::Unavailable { reason: reason.into() }, ..base.clone() };
    if !AVAILABLE {
        return unavailable(
            "this program's loopscope was built without its `taskdump` feature (docs/tasks.md: \
             `loopscope = { features = [\"taskdump\"] }`, with `--cfg tokio_unstable`; Linux only)",
        );
    }
    let Some(handle) = shared.runtime() else { return unavailable("no task has been polled yet") };
    imp::take(shared, &handle, base)
}

/// Whether the poll about to run on this thread is tokio's re-poll of a task for a dump (in its
/// tracing mode): not a poll of the program's, left out of the profile and of the task's idle
/// time. (tokio's `Handle::is_tracing`, public "for integration testing": a thread-local read.)
#[inline]
pub(crate) fn tracing_poll() -> bool {
    #[cfg(all(
        feature = "taskdump",
        target_os = "linux",
        any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
    ))]
    return tokio::runtime::Handle::is_tracing();
    #[allow(unreachable_code)]
    false
}

/// Groups traced tasks by (spawn site, trace); `tasks` are (id, traces), `before` the task table
/// as it was when the dump was asked for.
pub(crate) fn group(
    shared: &Shared,
    before: &HashMap<u64, TaskView>,
    tasks: Vec<(u64, Vec<Vec<StackFrame>>)>,
) -> (u64, Vec<DumpGroup>) {
    let now = shared.now_raw();
    let total = tasks.len() as u64;
    let mut by: HashMap<(Option<u32>, Vec<Vec<(String, Option<String>, Option<u32>)>>), DumpGroup> = HashMap::new();
    for (id, traces) in tasks {
        let known = before.get(&id);
        let site = known.map(|t| t.site);
        let idle_ns = known.map_or(0, |t| shared.nanos_between(if t.last == 0 { t.spawned } else { t.last }, now));
        let key: Vec<Vec<_>> =
            traces.iter().map(|t| t.iter().map(|f| (f.function.clone(), f.file.clone(), f.line)).collect()).collect();
        let g = by.entry((site, key)).or_insert_with(|| DumpGroup { site, traces, ..DumpGroup::default() });
        g.count += 1;
        g.idle_ns = g.idle_ns.max(idle_ns);
        if g.ids.len() < TaskDump::MAX_IDS {
            g.ids.push(id);
        }
    }
    let mut groups: Vec<DumpGroup> = by.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.idle_ns.cmp(&a.idle_ns)).then(a.ids.cmp(&b.ids)));
    groups.truncate(TaskDump::MAX_GROUPS);
    (total, groups)
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

    #[track_caller]
    fn spawn_dump(
        handle: &tokio::runtime::Handle,
        tx: SyncSender<tokio::runtime::Dump>,
    ) -> tokio::task::JoinHandle<()> {
        let _ = LOCATION.set(Location::caller());
        handle.spawn(async move {
            let dump = tokio::runtime::Handle::current().dump().await;
            let _ = tx.send(dump);
        })
    }

    pub(super) fn take(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, base: TaskDump) -> TaskDump {
        // Every task's latest poll before the dump: tokio wakes each task it traced once the
        // dump is over, and that poll must not make a stuck task look busy.
        let before: HashMap<u64, TaskView> = shared.tasks().alive().map(|t| (t.id, t)).collect();
        let dump_raw = shared.now_raw();
        let (tx, rx) = sync_channel(1);
        let started = Instant::now();
        let task = spawn_dump(handle, tx);
        let own = super::super::hot::tasks::id_of(&task.id());
        let dump = match rx.recv_timeout(TIMEOUT) {
            Ok(d) => d,
            Err(_) => {
                task.abort();
                return TaskDump {
                    outcome: DumpOutcome::TimedOut {
                        waited_ns: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        stalled_workers: shared.stalled_workers(),
                    },
                    ..base
                };
            }
        };
        let tasks: Vec<(u64, Vec<Vec<StackFrame>>)> = dump
            .tasks()
            .iter()
            .map(|t| (super::super::hot::tasks::id_of(&t.id()), t))
            .filter(|(id, _)| *id != own)
            .map(|(id, t)| (id, t.trace().resolve_backtraces().iter().take(MAX_TRACES).map(frames).collect()))
            .collect();
        let traced: Vec<u64> = tasks.iter().map(|(id, _)| *id).collect();
        let (total, groups) = group(shared, &before, tasks);
        // The dump's own wake-ups have been polled by now (they were queued when it ended): put
        // back the latest poll of each traced task polled since the dump began. A task the
        // program really polled in these few milliseconds looks idle a little longer, until its
        // next poll.
        std::thread::sleep(SETTLE);
        for id in traced {
            if let (Some(now), Some(was)) = (shared.tasks().get(id), before.get(&id))
                && now.last >= dump_raw
            {
                shared.tasks().restore(id, now.last, was.last);
            }
        }
        TaskDump { tasks: total, groups, ..base }
    }

    /// One backtrace as stack frames, innermost first (a frame's inlined functions first).
    fn frames(bt: &tokio::runtime::dump::Backtrace) -> Vec<StackFrame> {
        let mut out = Vec::new();
        for f in bt.frames() {
            let symbols: Vec<_> = f.symbols().collect();
            for (i, sym) in symbols.iter().enumerate() {
                let function =
                    sym.name_demangled().map_or_else(|| "<unknown>".to_string(), |n| without_hash(n).to_string());
                let file = sym.filename().map(|p| p.to_string_lossy().into_owned());
                out.push(StackFrame {
                    address: f.ip() as u64,
                    function: loopscope_core::stall::qualify(function, file.as_deref()),
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
    fn hashes_are_cut_from_names() {
        assert_eq!(without_hash("app::main::{{closure}}::h0123456789abcdef"), "app::main::{{closure}}");
        assert_eq!(without_hash("app::hold"), "app::hold");
        assert_eq!(without_hash("app::hx"), "app::hx");
    }
}
