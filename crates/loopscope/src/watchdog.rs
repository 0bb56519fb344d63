//! The stall detector: a plain OS thread that watches every worker's "in poll since" slot.
//!
//! When one poll has run longer than the stall threshold, the watchdog raises a stall while the
//! worker is still blocked: it reads what the stuck thread is doing from `/proc/self/task/<tid>`
//! (the system call it is in, the file descriptor's target, its CPU time) to classify the stall,
//! copies the thread's stack (`stack::interrupt`), and hands both to its symbolizer thread, which
//! names the blocking site and forwards the event to the flusher, which writes it at once. When
//! the poll returns, the stall is closed with its exact duration (recorded by the poll hook). The
//! hot path pays for this with relaxed stores into the thread's own slot (poll start and site)
//! and one compare.
//!
//! A poll that called `tokio::task::block_in_place` has handed its worker to another thread:
//! tokio's `worker_thread_id` then names another thread, and the watchdog does not flag it.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::Duration;

use loopscope_core::model::{Event, StackFrame, Stall, StallCategory};

use crate::flusher::Cmd;
use crate::shared::{Shared, ThreadSlot, lock};
use crate::stack;

/// What the watchdog knows about one thread.
#[derive(Default)]
struct Watch {
    /// `in_poll_since` at the last scan.
    since: u64,
    /// Whether this poll has been dealt with (raised, or recognised as `block_in_place`).
    flagged: bool,
    /// The thread's CPU time once this poll was seen past half the threshold, for the CPU
    /// ratio, and the session time of that sample (until then, of the poll's first sighting).
    cpu0: Option<u64>,
    seen_ns: u64,
    /// The open stall's id and live category, until the poll returns.
    open: Option<(u64, StallCategory)>,
    /// The latest CPU-time sample (and when) taken while the stall was open; the thread may be
    /// gone by the time the watchdog sees the poll end.
    cpu_last: Option<(u64, u64)>,
    /// Start of the last long poll already accounted for (raised, or recognised as the fix);
    /// kept across polls.
    consumed_long: u64,
    /// Further looks taken at the open stall (see [`EXTRA_SAMPLES`]).
    extra_samples: u32,
}

pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    threshold_ns: u64,
    /// To the symbolizer thread, which forwards everything in order to the flusher.
    events: SyncSender<Pending>,
    /// Raw stacks queued for the symbolizer; past a few, stalls go without a stack.
    queued_stacks: Arc<AtomicUsize>,
    /// Stalls whose stack already named the blocking call: no further look is needed.
    settled: Arc<std::sync::Mutex<Vec<u64>>>,
    symbolizer: Option<std::thread::JoinHandle<()>>,
    watches: Vec<Watch>,
    capture_stacks: bool,
}

impl Watchdog {
    pub(crate) fn new(shared: Arc<Shared>, threshold: Duration, flusher: Sender<Cmd>, capture_stacks: bool) -> Self {
        let (events, pending) = std::sync::mpsc::sync_channel(256);
        let queued_stacks = Arc::new(AtomicUsize::new(0));
        let queued = Arc::clone(&queued_stacks);
        let settled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let symbolizer_settled = Arc::clone(&settled);
        // If the thread cannot start, the sender fails and stalls are simply not forwarded.
        let symbolizer = std::thread::Builder::new()
            .name("loopscope-symbolizer".into())
            .spawn(move || symbolizer(pending, flusher, queued, &symbolizer_settled))
            .ok();
        Watchdog {
            shared,
            threshold_ns: threshold.as_nanos() as u64,
            events,
            queued_stacks,
            settled,
            symbolizer,
            watches: Vec::new(),
            capture_stacks,
        }
    }

    /// Scans until told to stop (a message or a dropped sender), then scans once more so that
    /// stalls whose polls have returned are closed.
    pub(crate) fn run(mut self, stop: Receiver<()>) {
        let period = Duration::from_nanos((self.threshold_ns / 2).max(500_000));
        let mut wait = period;
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
            if !self.shared.enabled.load(Ordering::Relaxed) {
                wait = period;
                continue;
            }
            wait = self.scan().clamp(Duration::from_micros(200), period);
        }
        self.scan();
        // Let the symbolizer forward everything before the session writes its footer.
        let Watchdog { events, symbolizer, .. } = self;
        drop(events);
        if let Some(s) = symbolizer {
            let _ = s.join();
        }
    }

    /// One pass over every thread; returns how long until the next poll could become a stall.
    fn scan(&mut self) -> Duration {
        let threads: Vec<Arc<ThreadSlot>> = lock(&self.shared.threads).clone();
        let mut watches = std::mem::take(&mut self.watches);
        watches.resize_with(threads.len(), Watch::default);
        let now_raw = self.shared.clock.raw();
        let now_ns = self.shared.clock.delta_as_nanos(self.shared.start_raw, now_raw);
        let mut next = Duration::from_nanos(self.threshold_ns / 2);
        for (t, w) in threads.iter().zip(watches.iter_mut()) {
            let since = t.in_poll_since.load(Ordering::Acquire);
            if since != w.since {
                if let Some((id, live)) = w.open.take() {
                    let (last_start, last_ns) = t.last_long();
                    let duration_ns = if last_start == w.since {
                        last_ns
                    } else {
                        self.shared.clock.delta_as_nanos(w.since, now_raw)
                    };
                    // Computing vs. held up by the host, judged again over the whole stall.
                    let category = match live {
                        StallCategory::CpuBound | StallCategory::Preempted if w.cpu_last.is_some() => {
                            let whole = cpu_share(
                                w.cpu0,
                                w.cpu_last.map(|(c, _)| c),
                                w.cpu_last.map_or(0, |(_, at)| at - w.seen_ns),
                            );
                            Some(running_category(whole)).filter(|c| *c != live)
                        }
                        _ => None,
                    };
                    let _ = self.events.send(Pending::Event(Event::StallEnd { id, duration_ns, category }));
                }
                *w = Watch { since, seen_ns: now_ns, consumed_long: w.consumed_long, ..Watch::default() };
            }
            self.raise_missed(t, w, since, now_ns);
            if w.open.is_some()
                && let Some(cpu) = thread_cpu_ns(t.tid)
            {
                w.cpu_last = Some((cpu, now_ns));
            }
            if since == 0 {
                continue;
            }
            let elapsed = self.shared.clock.delta_as_nanos(since, now_raw);
            if w.flagged {
                if let Some(due) = self.look_again(t, w, since, elapsed, now_ns) {
                    next = next.min(due);
                }
                continue;
            }
            // The thread's CPU time (a system call) is first read once a poll has lasted half the
            // threshold, which leaves half the threshold to measure its CPU share over. Almost
            // every poll a scan sees ends long before; reading it for each of them cost the
            // watchdog 14.8 ms of CPU per 3 s scraper run against 10.2 ms now (`bench`'s thread
            // CPU times).
            let half = self.threshold_ns / 2;
            if w.cpu0.is_none() && elapsed >= half {
                w.cpu0 = thread_cpu_ns(t.tid);
                w.seen_ns = now_ns;
            }
            if elapsed < self.threshold_ns {
                let due = if w.cpu0.is_none() { half - elapsed } else { self.threshold_ns - elapsed };
                next = next.min(Duration::from_nanos(due));
                continue;
            }
            w.flagged = true;
            w.consumed_long = since;
            if handed_off(&self.shared, t) {
                continue;
            }
            // Read now: the poll may end while the watchdog looks closer.
            let site = t.in_poll_site.load(Ordering::Relaxed);
            let cpu_percent = cpu_percent(&self.shared, self.threshold_ns, t, w, now_ns);
            // Sample now: the thread may be gone by the time the watchdog sees the poll end.
            w.cpu_last = thread_cpu_ns(t.tid).map(|c| (c, self.shared.now_ns()));
            let (mut category, mut syscall, mut fd_target) = classify(t.tid, cpu_percent);
            if t.in_poll_since.load(Ordering::Acquire) != since {
                // The poll ended while being looked at: what the thread does now is not the stall.
                (category, syscall, fd_target) = (StallCategory::Unknown, None, None);
            }
            let raw = self.capture(t, since, MAX_QUEUED_STACKS);
            let id = self.shared.stall_ids.fetch_add(1, Ordering::Relaxed);
            w.open = Some((id, category));
            let stall = Stall {
                id,
                worker: t.decl.id,
                site: Some(site),
                started_ns: self.shared.clock.delta_as_nanos(self.shared.start_raw, since),
                detected_ns: now_ns,
                category,
                syscall,
                fd_target,
                cpu_percent,
                blocking_site: None,
                blocking_function: None,
                call: None,
                stack: Vec::new(),
                late: false,
            };
            if raw.is_some() {
                self.queued_stacks.fetch_add(1, Ordering::Relaxed);
            }
            let _ = self.events.send(Pending::Begin(Box::new(stall), raw));
        }
        self.watches = watches;
        next
    }

    /// Takes another look at an open stall once it has lasted 2, 4 and 8 thresholds: one stack
    /// is one instant, and a poll that spends most of its time in a resolver or in file I/O can
    /// be caught, by chance, in the loop around the calls, or a poll that computes and then
    /// blocks caught before it blocks. The symbolizer keeps the most telling look. Returns how
    /// long until the next look is due.
    fn look_again(&mut self, t: &ThreadSlot, w: &mut Watch, since: u64, elapsed: u64, now_ns: u64) -> Option<Duration> {
        let (id, live) = w.open?;
        if w.extra_samples >= EXTRA_SAMPLES || evidence(live) == TELLING || lock(&self.settled).contains(&id) {
            return None;
        }
        let due = self.threshold_ns << (w.extra_samples + 1);
        if elapsed < due {
            return Some(Duration::from_nanos(due - elapsed));
        }
        w.extra_samples += 1;
        let cpu_percent = cpu_share(w.cpu0, thread_cpu_ns(t.tid), now_ns.saturating_sub(w.seen_ns));
        let (category, _, _) = classify(t.tid, cpu_percent);
        // New stalls come first: a look waits for a symbolizer that is keeping up.
        let raw = self.capture(t, since, MAX_QUEUED_STACKS / 2);
        if t.in_poll_since.load(Ordering::Acquire) != since {
            return None;
        }
        if raw.is_some() {
            self.queued_stacks.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.events.send(Pending::Look(id, category, raw));
        (w.extra_samples < EXTRA_SAMPLES).then(|| Duration::from_nanos(due))
    }

    /// Copies the stack of the thread stuck in the poll that started at `since`, if stacks are
    /// captured and fewer than `max_queued` copies wait for the symbolizer.
    fn capture(&self, t: &ThreadSlot, since: u64, max_queued: usize) -> Option<stack::RawStack> {
        let range = t.stack.clone().filter(|_| self.capture_stacks)?;
        if self.queued_stacks.load(Ordering::Relaxed) >= max_queued {
            return None;
        }
        stack::interrupt(t.tid, range, Duration::from_millis(200))
            // A stack taken after the poll returned would name the wrong code.
            .filter(|_| t.in_poll_since.load(Ordering::Acquire) == since)
    }

    /// Raises, late, a long poll that ended before the watchdog saw it (it was not scheduled in
    /// time): the poll hook kept its start and duration, so stall counts stay exact.
    fn raise_missed(&mut self, t: &ThreadSlot, w: &mut Watch, current: u64, now_ns: u64) {
        let (start, duration_ns) = t.last_long();
        // Clock values only grow: anything at or before the last poll dealt with is accounted for.
        if start <= w.consumed_long || start == current {
            return;
        }
        w.consumed_long = start;
        let id = self.shared.stall_ids.fetch_add(1, Ordering::Relaxed);
        let started_ns = self.shared.clock.delta_as_nanos(self.shared.start_raw, start);
        let stall = Stall::unknown(id, t.decl.id, None, started_ns, now_ns, true);
        let _ = self.events.send(Pending::Begin(Box::new(stall), None));
        let _ = self.events.send(Pending::Event(Event::StallEnd { id, duration_ns, category: None }));
    }
}

/// The thread's share of a CPU since the watchdog first saw this poll. A window shorter than a
/// few scheduler time slices says little (a computing thread on a busy host can be off its CPU
/// for milliseconds), so a short one is extended by sampling a little longer.
fn cpu_percent(shared: &Shared, threshold_ns: u64, t: &ThreadSlot, w: &Watch, now_ns: u64) -> u32 {
    let min_window = (threshold_ns / 2).clamp(1_000_000, 5_000_000);
    let elapsed = now_ns.saturating_sub(w.seen_ns);
    if elapsed < min_window {
        std::thread::sleep(Duration::from_nanos(min_window - elapsed));
    }
    cpu_share(w.cpu0, thread_cpu_ns(t.tid), shared.now_ns().saturating_sub(w.seen_ns))
}

/// CPU time between two samples over the wall time between them, in percent.
fn cpu_share(before: Option<u64>, after: Option<u64>, wall_ns: u64) -> u32 {
    let (Some(a), Some(b)) = (before, after) else { return 0 };
    (b.saturating_sub(a).saturating_mul(100) / wall_ns.max(1)).min(100) as u32
}

/// A stuck thread in user space is either computing or waiting to be given a CPU. A computing
/// thread gets a share of a CPU even on a busy host; one that got almost none was held up by the
/// host, not by its own code.
fn running_category(cpu_percent: u32) -> StallCategory {
    if cpu_percent >= CPU_BOUND_PERCENT { StallCategory::CpuBound } else { StallCategory::Preempted }
}

/// How much a category says about what blocked the poll, for choosing among several looks at
/// one stall: a named blocking call beats the kernel's plain view of a thread (waiting on a
/// futex, computing), which beats not knowing. A poll seen once in a resolver and once in the
/// loop around it was blocked by name resolution.
fn evidence(c: StallCategory) -> u8 {
    match c {
        StallCategory::Dns | StallCategory::NestedRuntime => TELLING,
        StallCategory::NestedExecutor | StallCategory::FileIo | StallCategory::NetworkIo => 3,
        StallCategory::SyncSleep | StallCategory::LockWait => 2,
        StallCategory::CpuBound | StallCategory::Preempted => 1,
        StallCategory::Unknown => 0,
    }
}

/// The [`evidence`] of a category no further look can improve.
const TELLING: u8 = 4;

/// The [`evidence`] of a named blocking call (file or network I/O, a nested executor): enough
/// that the watchdog stops looking.
const NAMED_CALL: u8 = 3;

/// Raw stacks waiting to be symbolized beyond which new stalls are raised without a stack.
const MAX_QUEUED_STACKS: usize = 8;

/// Further looks at a stall that goes on (at 2, 4 and 8 thresholds).
const EXTRA_SAMPLES: u32 = 3;

/// What the watchdog hands to the symbolizer.
enum Pending {
    /// A new stall and the stack copied from its thread.
    Begin(Box<Stall>, Option<stack::RawStack>),
    /// Another look at an open stall: the kernel's view and a stack copy.
    Look(u64, StallCategory, Option<stack::RawStack>),
    /// Any other event, kept in order behind the stalls before it.
    Event(Event),
}

/// Unwinds and symbolizes stall stacks off the watchdog's thread (the first one waits for the
/// program's debug information to load), names the blocking site, and forwards every event to
/// the flusher in the order the watchdog raised them.
fn symbolizer(
    pending: Receiver<Pending>,
    flusher: Sender<Cmd>,
    queued: Arc<AtomicUsize>,
    settled: &std::sync::Mutex<Vec<u64>>,
) {
    // Stalls that turned out to be `block_in_place` (the fix): neither they nor their end are sent.
    let mut dropped: Vec<u64> = Vec::new();
    // Open stalls: the category raised, and the most telling one seen since.
    let mut open: Vec<(u64, StallCategory, StallCategory)> = Vec::new();
    let resolve = |raw: Option<stack::RawStack>| {
        let Some(raw) = raw else { return Vec::new() };
        queued.fetch_sub(1, Ordering::Relaxed);
        // A damaged stack copy must not take the symbolizer down with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stack::resolve(&raw))).unwrap_or_default()
    };
    for p in pending {
        let event = match p {
            Pending::Begin(mut stall, raw) => {
                stall.stack = resolve(raw);
                if in_stack(task_frames(&stall.stack), "block_in_place") {
                    dropped.push(stall.id);
                    continue;
                }
                stall.category = refine(stall.category, &stall.stack);
                open.push((stall.id, stall.category, stall.category));
                if evidence(stall.category) >= NAMED_CALL {
                    // The stack named the blocking call: further looks would only interrupt it.
                    lock(settled).push(stall.id);
                }
                if let Some(i) = blocking_site(&stall.stack) {
                    stall.blocking_site = stall.stack[i].location();
                    stall.blocking_function = Some(stall.stack[i].function.clone());
                    stall.call = i.checked_sub(1).map(|c| stall.stack[c].function.clone());
                }
                Event::StallBegin(*stall)
            }
            Pending::Look(id, category, raw) => {
                let stack = resolve(raw);
                if let Some(o) = open.iter_mut().find(|o| o.0 == id) {
                    let seen = refine(category, &stack);
                    if evidence(seen) > evidence(o.2) {
                        o.2 = seen;
                    }
                }
                continue;
            }
            Pending::Event(Event::StallEnd { id, .. }) if dropped.contains(&id) => {
                dropped.retain(|d| *d != id);
                continue;
            }
            Pending::Event(Event::StallEnd { id, duration_ns, category }) => {
                let looked = open.iter().position(|o| o.0 == id).map(|i| open.swap_remove(i));
                lock(settled).retain(|s| *s != id);
                let category = match looked {
                    Some((_, raised, best)) if best != raised => Some(best),
                    _ => category,
                };
                Event::StallEnd { id, duration_ns, category }
            }
            Pending::Event(e) => e,
        };
        if flusher.send(Cmd::Event(Box::new(event))).is_err() {
            return;
        }
    }
}

/// Whether a library frame's function (std, tokio, libc, ...) contains `needle`; the program's
/// own functions never count, whatever they are called.
fn in_stack(stack: &[StackFrame], needle: &str) -> bool {
    stack.iter().any(|f| is_library(f) && f.function.contains(needle))
}

/// The frames of the polled task: from the stuck instruction out to tokio's task harness. Frames
/// further out belong to the worker loop, which on a thread that took over a worker from
/// `block_in_place` runs inside a closure defined in `block_in_place` itself.
fn task_frames(stack: &[StackFrame]) -> &[StackFrame] {
    let harness = stack.iter().position(|f| f.function.starts_with("tokio::runtime::task::"));
    &stack[..harness.unwrap_or(stack.len())]
}

/// What the stack says that the kernel's view could not: a nested executor parks on a futex like
/// a lock does, a resolver's queries look like any other socket I/O, and a thread copying a large
/// buffer inside `write` is "running" to the kernel, like one that computes.
fn refine(category: StallCategory, stack: &[StackFrame]) -> StallCategory {
    let task = task_frames(stack);
    // The library frames between the stuck instruction and the program's own code.
    let calls = &stack[..blocking_site(stack).unwrap_or(stack.len())];
    let called = |needle: &str| calls.iter().any(|f| f.function.contains(needle));
    if in_stack(task, "getaddrinfo") || in_stack(task, "to_socket_addrs") {
        StallCategory::Dns
    } else if category == StallCategory::LockWait && in_stack(task, "block_on") {
        StallCategory::NestedExecutor
    } else if matches!(category, StallCategory::CpuBound | StallCategory::Unknown) && called("std::fs::") {
        StallCategory::FileIo
    } else if matches!(category, StallCategory::CpuBound | StallCategory::Unknown) && called("std::net::") {
        StallCategory::NetworkIo
    } else {
        category
    }
}

/// Source paths of code that is not the program's own: std, dependencies, loopscope itself.
const LIBRARY_PATHS: &[&str] = &[
    "/rustc/",
    "/rust/deps/",
    "/lib/rustlib/src/rust/",
    "/registry/src/",
    "/git/checkouts/",
    "crates/loopscope/src/",
    "crates/loopscope-core/src/",
];

/// Whether a frame is library code: in a shared library (libc, the loader), without debug
/// information, or from std, a dependency or loopscope.
pub(crate) fn is_library(f: &StackFrame) -> bool {
    match &f.file {
        _ if f.object.is_some() => true,
        None => true,
        Some(file) => LIBRARY_PATHS.iter().any(|p| file.contains(p)),
    }
}

/// Index of the innermost frame in the program's own code.
pub(crate) fn blocking_site(stack: &[StackFrame]) -> Option<usize> {
    stack.iter().position(|f| !is_library(f))
}

/// Whether the thread has handed its worker to another thread (`block_in_place`): tokio's record
/// of which thread runs each worker names it for none of them. (A thread of the blocking pool can
/// later become another worker's thread; then it is a worker again.)
fn handed_off(shared: &Shared, t: &ThreadSlot) -> bool {
    if t.decl.index.is_none() {
        return false;
    }
    let Some(handle) = lock(&shared.handle).clone() else { return false };
    let metrics = handle.metrics();
    let ids: Vec<_> = (0..metrics.num_workers()).map(|i| metrics.worker_thread_id(i)).collect();
    // Until every worker has started, the record is incomplete: do not conclude anything.
    ids.iter().all(Option::is_some) && !ids.contains(&Some(t.thread_id))
}

/// Nanoseconds the thread has spent on a CPU, exact to the moment of the call (the kernel updates
/// a running thread's figure on demand; `/proc/.../schedstat` lags by up to a scheduler tick).
///
/// The clock id is Linux's per-thread CPU clock, `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`, the
/// same value glibc's `pthread_getcpuclockid` builds; for a thread that has exited the call fails
/// with `EINVAL` instead of touching freed memory as a stale `pthread_t` could.
fn thread_cpu_ns(tid: i32) -> Option<u64> {
    let clock: libc::clockid_t = (!tid << 3) | 6;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; an invalid clock id only makes the call fail.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Share of a CPU (in percent) above which a stuck thread in user space is computing.
const CPU_BOUND_PERCENT: u32 = 10;

/// Classifies a stuck thread from its current system call (`/proc/self/task/<tid>/syscall`).
/// Returns the category, the call's name and its file descriptor's target.
pub(crate) fn classify(tid: i32, cpu_percent: u32) -> (StallCategory, Option<String>, Option<String>) {
    let Ok(line) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return (StallCategory::Unknown, None, None);
    };
    let mut fields = line.split_whitespace();
    let first = fields.next().unwrap_or("");
    if first == "running" {
        return (running_category(cpu_percent), None, None);
    }
    let Ok(nr) = first.parse::<i64>() else { return (StallCategory::Unknown, None, None) };
    let arg0 = fields.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    let name = syscall_name(nr).map_or_else(|| format!("syscall {nr}"), str::to_string);
    let (category, target) = match SyscallKind::of(nr) {
        SyscallKind::Sleep => (StallCategory::SyncSleep, None),
        SyscallKind::Futex => (StallCategory::LockWait, None),
        SyscallKind::EventLoop => (StallCategory::NestedExecutor, None),
        SyscallKind::Path => (StallCategory::FileIo, None),
        SyscallKind::Fd => match arg0.and_then(|fd| fd_target(fd as i32)) {
            Some(t) => (fd_category(&t), Some(t)),
            None => (StallCategory::Unknown, None),
        },
        SyscallKind::Socket => match arg0.and_then(|fd| fd_target(fd as i32)) {
            Some(t) => (fd_category(&t), Some(t)),
            None => (StallCategory::NetworkIo, None),
        },
        SyscallKind::Poll => match arg0.and_then(first_polled_fd).and_then(fd_target) {
            Some(t) => (fd_category(&t), Some(t)),
            None => (StallCategory::NetworkIo, None),
        },
        SyscallKind::Other => (StallCategory::Unknown, None),
    };
    (category, Some(name), target)
}

/// The category of blocking I/O on a file descriptor that points at `target`.
fn fd_category(target: &str) -> StallCategory {
    if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
        if is_dns_socket(inode) { StallCategory::Dns } else { StallCategory::NetworkIo }
    } else if target.starts_with("anon_inode:") {
        StallCategory::Unknown
    } else {
        StallCategory::FileIo
    }
}

fn fd_target(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// Whether the UDP socket with this inode talks to port 53 (a resolver query in progress). The
/// TCP tables are not read: they can take milliseconds on a busy host, and a resolver's TCP
/// fallback is recognised from the stack instead (`getaddrinfo`).
fn is_dns_socket(inode: &str) -> bool {
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(9) == Some(&inode) && f.get(2).is_some_and(|remote| remote.ends_with(":0035"))
            })
        })
    })
}

/// The first descriptor of the `pollfd` array a thread is blocked in `poll` on, read with
/// `process_vm_readv` (which fails cleanly instead of faulting if the memory is gone).
fn first_polled_fd(addr: u64) -> Option<i32> {
    let mut buf = [0u8; 8];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: reads from our own process into a local buffer of the stated length; a bad remote
    // address makes the call fail with EFAULT, it cannot fault.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == 8).then(|| i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]))
}

#[derive(Clone, Copy)]
enum SyscallKind {
    Sleep,
    Futex,
    /// Blocking on a file descriptor given as the first argument.
    Fd,
    /// A socket call with the descriptor first.
    Socket,
    /// poll/ppoll: the first argument points at the descriptors.
    Poll,
    /// An open or stat of a path (a FIFO's open blocks until the other side opens it).
    Path,
    /// epoll/select: an event loop inside the poll.
    EventLoop,
    Other,
}

use SyscallKind as K;

/// The x86-64 system calls a blocked worker is commonly found in.
#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(i64, &str, SyscallKind)] = &[
    (0, "read", K::Fd),
    (1, "write", K::Fd),
    (2, "open", K::Path),
    (4, "stat", K::Path),
    (7, "poll", K::Poll),
    (17, "pread64", K::Fd),
    (18, "pwrite64", K::Fd),
    (19, "readv", K::Fd),
    (20, "writev", K::Fd),
    (23, "select", K::EventLoop),
    (35, "nanosleep", K::Sleep),
    (40, "sendfile", K::Fd),
    (42, "connect", K::Socket),
    (43, "accept", K::Socket),
    (44, "sendto", K::Socket),
    (45, "recvfrom", K::Socket),
    (46, "sendmsg", K::Socket),
    (47, "recvmsg", K::Socket),
    (74, "fsync", K::Fd),
    (75, "fdatasync", K::Fd),
    (202, "futex", K::Futex),
    (230, "clock_nanosleep", K::Sleep),
    (232, "epoll_wait", K::EventLoop),
    (257, "openat", K::Path),
    (262, "newfstatat", K::Path),
    (270, "pselect6", K::EventLoop),
    (271, "ppoll", K::Poll),
    (277, "sync_file_range", K::Fd),
    (281, "epoll_pwait", K::EventLoop),
    (285, "fallocate", K::Fd),
    (288, "accept4", K::Socket),
    (295, "preadv", K::Fd),
    (296, "pwritev", K::Fd),
    (299, "recvmmsg", K::Socket),
    (307, "sendmmsg", K::Socket),
    (441, "epoll_pwait2", K::EventLoop),
];

#[cfg(not(target_arch = "x86_64"))]
const SYSCALLS: &[(i64, &str, SyscallKind)] = &[];

fn syscall_name(nr: i64) -> Option<&'static str> {
    SYSCALLS.iter().find(|(n, _, _)| *n == nr).map(|(_, name, _)| *name)
}

impl SyscallKind {
    fn of(nr: i64) -> SyscallKind {
        SYSCALLS.iter().find(|(n, _, _)| *n == nr).map_or(SyscallKind::Other, |(_, _, k)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_threads_cpu_time_is_read_exactly() {
        let (tx, rx) = std::sync::mpsc::channel();
        let spinner = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(50) {
                std::hint::spin_loop();
            }
        });
        let tid = rx.recv().unwrap();
        let a = thread_cpu_ns(tid).expect("a live thread's CPU clock");
        spinner.join().unwrap();
        assert_eq!(thread_cpu_ns(tid), None, "an exited thread's clock is refused");
        let _ = a;
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let before = thread_cpu_ns(me).unwrap();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let spent = thread_cpu_ns(me).unwrap() - before;
        assert!(spent >= 5_000_000, "20 ms of spinning counted {spent} ns");
    }
}
