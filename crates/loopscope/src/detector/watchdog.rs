//! The stall detector: a plain OS thread that watches every worker's "in poll since" slot.
//!
//! When one poll has run longer than the stall threshold, the watchdog raises a stall while the
//! worker is still blocked: it reads what the stuck thread is doing from `/proc/self/task/<tid>`
//! (the system call it is in, the file descriptor's target, its CPU share: `kernel.rs`) to
//! classify the stall, copies the thread's stack (`stack::interrupt`), and hands both to its
//! unwinder thread, which turns the copy into instruction addresses and forwards the event to the
//! flusher, which writes it at once. Readers symbolize the addresses and name the blocking line.
//! When the poll returns, the stall is closed with its exact duration (recorded by the poll hook).
//! The hot path pays for this with relaxed stores into the thread's own slot (poll start and site)
//! and one compare.
//!
//! Stalls are recorded one by one within a budget ([`BUDGET_PER_S`], [`BUDGET_BURST`]); past it,
//! they are counted per spawn site and category (`StallTally`), so a storm of stalls costs a
//! bounded amount of recording, and every stall is still counted.
//!
//! A poll that called `tokio::task::block_in_place` has handed its worker to another thread:
//! tokio's `worker_thread_id` then names another thread, and the watchdog does not flag it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::Duration;

use loopscope_core::model::{Event, Stall, StallCategory};

use crate::detector::kernel::{classify, cpu_share, running_category, schedstat, thread_cpu_ns};

/// A thread's run-queue delay so far, in nanoseconds.
fn run_delay(tid: i32) -> Option<u64> {
    schedstat(tid).map(|(_, delay)| delay)
}
use crate::detector::stack;
use crate::hot::{Shared, ThreadSlot};
use crate::outputs::flusher::Cmd;

/// How slow polls are sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sampling {
    /// A poll is sampled once it has run this long.
    pub(crate) threshold: Duration,
    /// And again every this long while it runs (the poll time one sample stands for).
    pub(crate) period: Duration,
    /// Samples a second for the whole program, at most.
    pub(crate) per_second: u32,
}

/// What the watchdog watches for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Polls this long are stalls (`None`: no stall detection).
    pub(crate) stall_threshold: Option<Duration>,
    /// Slow polls below the stall threshold are sampled.
    pub(crate) sampling: Option<Sampling>,
    /// Whether stacks are captured.
    pub(crate) capture_stacks: bool,
}

/// A stall raised and not yet ended.
#[derive(Clone, Copy)]
struct OpenStall {
    id: u64,
    /// The category the kernel's view gave it when raised.
    live: StallCategory,
    site: u32,
    /// Recorded as events (within the budget), or only counted.
    recorded: bool,
}

/// A sample of a thread's CPU time.
#[derive(Clone, Copy)]
struct CpuSample {
    cpu_ns: u64,
    at_ns: u64,
}

/// What the watchdog knows about one thread.
#[derive(Default)]
struct Watch {
    /// `in_poll_since` at the last scan.
    since: u64,
    /// Whether this poll has been dealt with (raised, or recognised as `block_in_place`).
    flagged: bool,
    /// The thread's CPU time once this poll was seen past half the threshold, for its CPU share,
    /// and the session time of that sample (until then, of the poll's first sighting).
    cpu0: Option<u64>,
    seen_ns: u64,
    open: Option<OpenStall>,
    /// The latest CPU-time sample taken while the stall was open; the thread may be gone by the
    /// time the watchdog sees the poll end.
    cpu_last: Option<CpuSample>,
    /// The thread's run-queue delay (time runnable but not running) when `cpu0` was taken, and
    /// at the latest sample: what the host took from the poll in between.
    delay0: Option<u64>,
    delay_last: Option<u64>,
    /// Start of the last long poll already accounted for (raised, or recognised as the fix);
    /// kept across polls.
    consumed_long: u64,
    /// Further looks taken at the open stall (see [`EXTRA_LOOKS`]).
    looks: u32,
    /// How long the poll had run at its last sample (0: none yet).
    sampled_at: u64,
    /// Whether a stack of this poll was taken (readers can then tell `block_in_place` apart).
    stack_seen: bool,
    /// A capture waiting for the thread to return from a system call, and the sample it was
    /// taken for (site, category, spans), if it was one.
    deferred: Option<(stack::Deferred, Option<HeldSample>)>,
}

/// A slow-poll sample waiting for its stack: site, category, spans.
type HeldSample = (u32, StallCategory, Vec<u32>);

/// Stall events (with their stacks) recorded per second, sustained.
pub(crate) const BUDGET_PER_S: u64 = 10;
/// Stall events that may be recorded in a burst.
pub(crate) const BUDGET_BURST: u64 = 100;

/// A token bucket: `per_s` a second, `burst` at once.
struct Budget {
    tokens: u64,
    per_s: u64,
    burst: u64,
    /// Session time up to which tokens have been added.
    refilled_ns: u64,
}

impl Budget {
    fn new(per_s: u64, burst: u64, now_ns: u64) -> Budget {
        Budget { tokens: burst, per_s: per_s.max(1), burst, refilled_ns: now_ns }
    }

    fn take(&mut self, now_ns: u64) -> bool {
        let add = now_ns.saturating_sub(self.refilled_ns) * self.per_s / 1_000_000_000;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.burst);
            self.refilled_ns += add * 1_000_000_000 / self.per_s;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    /// The stall threshold (`u64::MAX`: no stall detection).
    threshold_ns: u64,
    /// Slow-poll sampling: threshold and period in ns, and its budget.
    sampling: Option<(u64, u64)>,
    sample_budget: Budget,
    /// To the unwinder thread, which forwards everything in order to the flusher.
    events: SyncSender<Pending>,
    /// Raw stacks queued for the unwinder; past a few, stalls go without a stack.
    queued_stacks: Arc<AtomicUsize>,
    unwinder: Option<std::thread::JoinHandle<()>>,
    /// Per worker id.
    watches: HashMap<u32, Watch>,
    capture_stacks: bool,
    budget: Budget,
    /// Whether a thread that blocks the capture signal has been reported.
    told_blocked: bool,
    /// Per worker: since when (session ns) and how many times in a row its capture signal was
    /// found blocked. A thread blocks it for a moment on its own (while the handler of the last
    /// capture returns, while it creates a thread): only a mask that stays is reported.
    blocked_streak: HashMap<u32, (u64, u32)>,
}

impl Watchdog {
    pub(crate) fn new(shared: Arc<Shared>, config: Config, flusher: Sender<Cmd>) -> Self {
        let (events, pending) = std::sync::mpsc::sync_channel(256);
        let queued_stacks = Arc::new(AtomicUsize::new(0));
        let queued = Arc::clone(&queued_stacks);
        // If the thread cannot start, the sender fails and stalls are simply not forwarded.
        let unwinder = std::thread::Builder::new()
            .name("loopscope-unwind".into())
            .spawn(move || unwind_and_forward(pending, flusher, queued))
            .ok();
        let now_ns = shared.now_ns();
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let per_second = config.sampling.map_or(1, |s| u64::from(s.per_second));
        Watchdog {
            shared,
            threshold_ns: config.stall_threshold.map_or(u64::MAX, ns),
            sampling: config.sampling.map(|s| (ns(s.threshold), ns(s.period))),
            // A second's worth in a burst.
            sample_budget: Budget::new(per_second, per_second, now_ns),
            events,
            queued_stacks,
            unwinder,
            watches: HashMap::new(),
            capture_stacks: config.capture_stacks,
            budget: Budget::new(BUDGET_PER_S, BUDGET_BURST, now_ns),
            told_blocked: false,
            blocked_streak: HashMap::new(),
        }
    }

    /// Scans until told to stop (a message or a dropped sender), then scans once more so that
    /// stalls whose polls have returned are closed.
    pub(crate) fn run(mut self, stop: Receiver<()>) {
        // Often enough to see a poll cross the stall threshold early, and to sample a slow one
        // about once a period.
        let every = self.sampling.map_or(u64::MAX, |(_, period)| period);
        let period = Duration::from_nanos((self.threshold_ns / 2).min(every).max(200_000));
        let mut wait = period;
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
            if !self.shared.is_recording() {
                wait = period;
                continue;
            }
            wait = self.scan().clamp(Duration::from_micros(200), period);
        }
        self.scan();
        // Captures still waiting for a thread in a system call: their slots are the process's,
        // and a later session needs them.
        for w in self.watches.values_mut() {
            if let Some((d, _)) = w.deferred.take() {
                stack::abandon(d);
            }
        }
        // Let the unwinder forward everything before the session writes its footer.
        let Watchdog { events, unwinder, .. } = self;
        drop(events);
        if let Some(s) = unwinder {
            let _ = s.join();
        }
    }

    /// One pass over every thread; returns how long until the next poll could become a stall.
    fn scan(&mut self) -> Duration {
        let threads = self.shared.threads();
        let mut watches = std::mem::take(&mut self.watches);
        let alive: std::collections::HashSet<u32> = threads.iter().map(|t| t.decl.id).collect();
        let now_raw = self.shared.now_raw();
        // Threads whose places were freed (they exited): nothing more will come from them.
        for (_, w) in watches.extract_if(|id, _| !alive.contains(id)) {
            self.forget(w, now_raw);
        }
        self.blocked_streak.retain(|id, _| alive.contains(id));
        let now_ns = self.shared.session_ns(now_raw);
        let mut next = Duration::from_nanos(self.threshold_ns / 2);
        for t in &threads {
            let w = watches.entry(t.decl.id).or_default();
            if let Some(due) = self.watch(t, w, now_raw, now_ns) {
                next = next.min(due);
            }
        }
        self.watches = watches;
        next
    }

    /// Lets go of a thread that exited: its waiting capture is given up and its open stall
    /// closed (at least as long as it was known to last).
    fn forget(&mut self, mut w: Watch, now_raw: u64) {
        if let Some((d, _)) = w.deferred.take() {
            stack::abandon(d);
        }
        if let Some(open) = w.open.filter(|o| o.recorded) {
            let duration_ns = self.shared.nanos_between(w.since, now_raw);
            let _ = self.events.send(Pending::Event(Event::StallEnd { id: open.id, duration_ns, category: None }));
        }
    }

    /// Looks at one thread; returns how long until its poll is due another look.
    fn watch(&mut self, t: &ThreadSlot, w: &mut Watch, now_raw: u64, now_ns: u64) -> Option<Duration> {
        let since = t.in_poll_since.load(Ordering::Acquire);
        // Before the poll's end is dealt with: a stack the handler took when the thread came
        // back from its system call belongs to the stall it interrupted.
        self.collect_deferred(w, since);
        if since != w.since {
            self.poll_ended(t, w, now_raw);
            *w = Watch { since, seen_ns: now_ns, consumed_long: w.consumed_long, ..Watch::default() };
        }
        self.raise_missed(t, w, since, now_ns);
        if w.open.is_some()
            && let Some(cpu_ns) = thread_cpu_ns(t.tid)
        {
            w.cpu_last = Some(CpuSample { cpu_ns, at_ns: now_ns });
            w.delay_last = run_delay(t.tid).or(w.delay_last);
        }
        if since == 0 {
            return None;
        }
        let elapsed = self.shared.nanos_between(since, now_raw);
        if w.flagged {
            return self.look_again(t, w, since, elapsed, now_ns);
        }
        let sample_due = self.sample(t, w, since, elapsed, now_ns);
        // The thread's CPU time (a system call) is first read once a poll has lasted half the
        // threshold, which leaves half the threshold to measure its CPU share over: almost every
        // poll a scan sees ends long before, and reading it for each of them would cost the
        // watchdog a third more CPU on a busy server (docs/benchmarks.md).
        let half = self.threshold_ns / 2;
        if w.cpu0.is_none() && elapsed >= half {
            w.cpu0 = thread_cpu_ns(t.tid);
            w.delay0 = run_delay(t.tid);
            w.seen_ns = now_ns;
        }
        if elapsed < self.threshold_ns {
            // Half the threshold, for a first look at its CPU time (unless that look was taken,
            // or came up empty: a thread that exited has none).
            let due = if w.cpu0.is_none() && elapsed < half { half - elapsed } else { self.threshold_ns - elapsed };
            return Some(Duration::from_nanos(sample_due.map_or(due, |s| s.min(due))));
        }
        w.flagged = true;
        w.consumed_long = since;
        if self.shared.handed_off(t) {
            return None;
        }
        self.raise(t, w, since, now_ns);
        None
    }

    /// Takes the stack of a capture that waited for its thread to return from a system call:
    /// a further look at the open stall, or the sample it was taken for.
    fn collect_deferred(&mut self, w: &mut Watch, since: u64) {
        let Some((d, sample)) = w.deferred.take() else { return };
        let raw = match stack::collect(d) {
            Ok(Some(raw)) => raw,
            Ok(None) if since == w.since => {
                // Still in the system call.
                w.deferred = Some((d, sample));
                return;
            }
            // The poll ended and the handler never ran (the signal was lost with the thread):
            // nothing will come.
            Ok(None) => return stack::abandon(d),
            Err(()) => return,
        };
        w.stack_seen = true;
        let pending = match (w.open.filter(|o| o.recorded), sample) {
            (Some(open), _) => Pending::Look(open.id, open.live, Some(raw)),
            (None, Some((site, category, spans))) => Pending::Sample { site, category, raw: Some(raw), spans },
            (None, None) => return,
        };
        self.queued_stacks.fetch_add(1, Ordering::Relaxed);
        if self.events.try_send(pending).is_err() {
            self.queued_stacks.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Samples a slow poll's stack (below the stall threshold): once it has run the sampling
    /// threshold, then every period, within the budget. Returns how long until the next sample
    /// is due.
    fn sample(&mut self, t: &ThreadSlot, w: &mut Watch, since: u64, elapsed: u64, now_ns: u64) -> Option<u64> {
        let (threshold, period) = self.sampling?;
        if elapsed < threshold {
            return Some(threshold - elapsed);
        }
        if w.sampled_at > 0 && elapsed - w.sampled_at < period {
            return Some(period - (elapsed - w.sampled_at));
        }
        w.sampled_at = elapsed;
        let site = t.in_poll_site.load(Ordering::Relaxed);
        let spans = t.spans.snapshot(since);
        if !self.sample_budget.take(now_ns) {
            self.shared.count_skipped_sample();
            return Some(period);
        }
        // What the thread does at this instant: computing, or the call it is in.
        let (category, _, _) = classify(t.tid, SAMPLE_CPU_PERCENT);
        let raw = self.capture(t, w, since, MAX_QUEUED_STACKS / 2);
        if let Some((_, sample @ None)) = &mut w.deferred {
            // The thread is in a system call: the sample is sent with its stack when it returns.
            *sample = Some((site, category, spans));
            return Some(period);
        }
        if raw.is_some() {
            self.queued_stacks.fetch_add(1, Ordering::Relaxed);
        }
        // A sample never holds the watchdog up: one the unwinder has no room for is dropped.
        let had_stack = raw.is_some();
        if self.events.try_send(Pending::Sample { site, category, raw, spans }).is_err() && had_stack {
            self.queued_stacks.fetch_sub(1, Ordering::Relaxed);
        }
        Some(period)
    }

    /// Raises a stall for the poll of `t` that started at `since` and is still running.
    fn raise(&mut self, t: &ThreadSlot, w: &mut Watch, since: u64, now_ns: u64) {
        // Read now: the poll may end while the watchdog looks closer.
        let site = t.in_poll_site.load(Ordering::Relaxed);
        let spans = t.spans.snapshot(since);
        // What the thread is in at this instant, before the CPU share's window below, during
        // which the poll may end: a system call named now is the stall's, whatever comes after.
        let share_so_far = cpu_share(w.cpu0, thread_cpu_ns(t.tid), now_ns.saturating_sub(w.seen_ns));
        let instant = classify(t.tid, share_so_far);
        let instant = Some(instant).filter(|_| t.in_poll_since.load(Ordering::Acquire) == since);
        let cpu_percent = cpu_percent(&self.shared, self.threshold_ns, t, w, now_ns);
        // Sample now: the thread may be gone by the time the watchdog sees the poll end.
        w.cpu_last = thread_cpu_ns(t.tid).map(|cpu_ns| CpuSample { cpu_ns, at_ns: self.shared.now_ns() });
        w.delay_last = run_delay(t.tid);
        let (mut category, mut syscall, mut fd_target) = classify(t.tid, cpu_percent);
        if t.in_poll_since.load(Ordering::Acquire) != since {
            // The poll ended while being looked at: what the thread does now is not the stall;
            // what it was in at the first instant is, if it was in a call (whether it was
            // computing is judged over the whole stall when it ends).
            (category, syscall, fd_target) = match instant {
                Some((c, sys, fd)) if sys.is_some() && c != StallCategory::CpuBound => (c, sys, fd),
                _ => (StallCategory::Unknown, None, None),
            };
        }
        let id = self.shared.next_stall_id();
        let recorded = self.budget.take(now_ns);
        w.open = Some(OpenStall { id, live: category, site, recorded });
        if !recorded {
            return;
        }
        let raw = self.capture(t, w, since, MAX_QUEUED_STACKS);
        let started_ns = self.shared.session_ns(since);
        let stall = Stall {
            category,
            syscall,
            fd_target,
            cpu_percent,
            spans,
            ..Stall::unknown(id, t.decl.id, Some(site), started_ns, now_ns, false)
        };
        if raw.is_some() {
            self.queued_stacks.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.events.send(Pending::Begin(Box::new(stall), raw));
    }

    /// Closes the stall of a poll that has ended, with its exact duration and the category seen
    /// over its whole length.
    fn poll_ended(&mut self, t: &ThreadSlot, w: &Watch, now_raw: u64) {
        let Some(open) = w.open else { return };
        let (last_start, last_ns, handed_off) = t.last_long();
        // A `block_in_place` raised before its new worker thread was running (a busy host did
        // not run it yet): the worker waited for the host, not for the program.
        let handed_off = handed_off
            && last_start == w.since
            && matches!(open.live, StallCategory::Unknown | StallCategory::Preempted)
            && !w.stack_seen;
        let duration_ns = if last_start == w.since { last_ns } else { self.shared.nanos_between(w.since, now_raw) };
        // A poll that is a stall only because the host kept its thread waiting for a CPU: without
        // that wait it would have ended below the threshold. Not the program's fault.
        // Two lower bounds of the wait inside the poll: up to the last look, and up to now less
        // the time since the poll ended (a starved watchdog may not have looked since it rose).
        // Read together, now: the scan's clock reading can be older than this by other threads'
        // looks, and the thread's wait for a CPU since its poll ended must all be discounted.
        let delay_now = run_delay(t.tid);
        let ended_ago =
            self.shared.session_ns(self.shared.now_raw()).saturating_sub(self.shared.session_ns(w.since) + duration_ns);
        let host_took = match w.delay0 {
            Some(a) => {
                let to_last = w.delay_last.map_or(0, |b| b.saturating_sub(a));
                let to_now = delay_now.map_or(0, |b| b.saturating_sub(a).saturating_sub(ended_ago));
                to_last.max(to_now)
            }
            None => 0,
        };
        let held_up = host_took > 0 && duration_ns.saturating_sub(host_took) < self.threshold_ns;
        // Computing vs. held up by the host, judged again over the whole stall (also for a poll
        // that ended while it was being looked at, which was raised as unknown).
        let whole = match (open.live, w.cpu_last) {
            _ if held_up || handed_off => Some(StallCategory::Preempted).filter(|c| *c != open.live),
            (StallCategory::CpuBound | StallCategory::Preempted | StallCategory::Unknown, Some(last)) => {
                let share = cpu_share(w.cpu0, Some(last.cpu_ns), last.at_ns - w.seen_ns);
                Some(running_category(share)).filter(|c| *c != open.live)
            }
            _ => None,
        };
        if open.recorded {
            let _ = self.events.send(Pending::Event(Event::StallEnd { id: open.id, duration_ns, category: whole }));
        } else {
            self.shared.tally_stall(Some(open.site), whole.unwrap_or(open.live), duration_ns);
        }
    }

    /// Takes another look at an open stall once it has lasted 2, 4 and 8 thresholds: one stack
    /// is one instant, and a poll that spends most of its time in a resolver or in file I/O can
    /// be caught, by chance, in the loop around the calls, or a poll that computes and then
    /// blocks caught before it blocks. Readers keep the most telling look. Returns how long until
    /// the next look is due.
    fn look_again(&mut self, t: &ThreadSlot, w: &mut Watch, since: u64, elapsed: u64, now_ns: u64) -> Option<Duration> {
        let open = w.open.filter(|o| o.recorded)?;
        if w.looks >= EXTRA_LOOKS || loopscope_core::stall::evidence(open.live) >= TELLING {
            return None;
        }
        let due = self.threshold_ns << (w.looks + 1);
        if elapsed < due {
            return Some(Duration::from_nanos(due - elapsed));
        }
        w.looks += 1;
        let cpu_percent = cpu_share(w.cpu0, thread_cpu_ns(t.tid), now_ns.saturating_sub(w.seen_ns));
        let (category, _, _) = classify(t.tid, cpu_percent);
        // New stalls come first: a look waits for an unwinder that is keeping up.
        let raw = self.capture(t, w, since, MAX_QUEUED_STACKS / 2);
        if t.in_poll_since.load(Ordering::Acquire) != since {
            return None;
        }
        if raw.is_some() {
            self.queued_stacks.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.events.send(Pending::Look(open.id, category, raw));
        (w.looks < EXTRA_LOOKS).then(|| Duration::from_nanos(due))
    }

    /// Copies the stack of the thread stuck in the poll that started at `since`, if stacks are
    /// captured and fewer than `max_queued` copies wait for the unwinder.
    /// A thread inside a system call answers when the call returns: the capture is then left
    /// waiting in `w.deferred`, collected by [`Watchdog::collect_deferred`].
    fn capture(&mut self, t: &ThreadSlot, w: &mut Watch, since: u64, max_queued: usize) -> Option<stack::RawStack> {
        let range = t.stack.clone().filter(|_| self.capture_stacks)?;
        if self.queued_stacks.load(Ordering::Relaxed) >= max_queued {
            return None;
        }
        let result = stack::interrupt(t.tid, range, CAPTURE_WAIT);
        if !matches!(result, Err(stack::Unreachable::Blocked)) {
            self.blocked_streak.remove(&t.decl.id);
        }
        match result {
            // A stack taken after the poll returned would name the wrong code.
            Ok(raw) => {
                let ours = t.in_poll_since.load(Ordering::Acquire) == since;
                w.stack_seen |= ours;
                Some(raw).filter(|_| ours)
            }
            Err(stack::Unreachable::Blocked) => {
                let now = self.shared.now_ns();
                let (first, times) = self.blocked_streak.entry(t.decl.id).or_insert((now, 0));
                *times += 1;
                let lasting = *times >= BLOCKED_TIMES && now.saturating_sub(*first) >= BLOCKED_FOR.as_nanos() as u64;
                if lasting && !std::mem::replace(&mut self.told_blocked, true) {
                    self.shared.report_error(format!(
                        "thread {} blocks signal SIGRTMIN+7: its stalls are counted and classified, without stacks",
                        t.decl.thread_name
                    ));
                }
                None
            }
            // The signal reached the thread during this poll (checked after it was sent), so the
            // handler runs before the poll can end: the stack will be this poll's.
            Err(stack::Unreachable::Deferred(d)) if t.in_poll_since.load(Ordering::Acquire) == since => {
                w.deferred = Some((d, None));
                None
            }
            Err(stack::Unreachable::Deferred(d)) => {
                stack::abandon(d);
                None
            }
            Err(_) => None,
        }
    }

    /// Raises, late, a long poll that ended before the watchdog saw it (it was not scheduled in
    /// time): the poll hook kept its start and duration, so stall counts stay exact.
    fn raise_missed(&mut self, t: &ThreadSlot, w: &mut Watch, current: u64, now_ns: u64) {
        let (start, duration_ns, handed_off) = t.last_long();
        // Clock values only grow: anything at or before the last poll dealt with is accounted for.
        if start <= w.consumed_long || start == current {
            return;
        }
        w.consumed_long = start;
        // A poll that handed its worker over (`block_in_place`) is raised like any other: late,
        // without a look, it is the host's in every reader.
        let _ = handed_off;
        if !self.budget.take(now_ns) {
            self.shared.tally_stall(None, StallCategory::Unknown, duration_ns);
            return;
        }
        let id = self.shared.next_stall_id();
        let started_ns = self.shared.session_ns(start);
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

/// The CPU share a sampled thread is judged by: a thread found running is computing (a sample is
/// one instant), one in a system call is in that call.
const SAMPLE_CPU_PERCENT: u32 = 50;

/// The evidence of a category no further look can improve (see `loopscope_core::stall::evidence`).
const TELLING: u8 = 4;

/// Raw stacks waiting to be unwound beyond which new stalls are raised without a stack.
const MAX_QUEUED_STACKS: usize = 8;

/// Further looks at a stall that goes on (at 2, 4 and 8 thresholds).
const EXTRA_LOOKS: u32 = 3;

/// How long a stuck thread has to answer the capture signal. It answers within microseconds when
/// it gets a CPU; on a host that gives it none, the stall is still raised, without a stack.
const CAPTURE_WAIT: Duration = Duration::from_millis(50);

/// What the watchdog hands to the unwinder thread.
enum Pending {
    /// A new stall and the stack copied from its thread.
    Begin(Box<Stall>, Option<stack::RawStack>),
    /// Another look at an open stall: the kernel's view and a stack copy.
    Look(u64, StallCategory, Option<stack::RawStack>),
    /// Any other event, kept in order behind the stalls before it.
    Event(Event),
    /// A slow poll's stack sample.
    Sample { site: u32, category: StallCategory, raw: Option<stack::RawStack>, spans: Vec<u32> },
}

/// A worker whose capture signal is found blocked this many times in a row, over at least
/// [`BLOCKED_FOR`], blocks it for good (the program masked it): said once.
const BLOCKED_TIMES: u32 = 3;
const BLOCKED_FOR: Duration = Duration::from_millis(50);

/// Unwinds stall stacks off the watchdog's thread and forwards every event to the flusher in the
/// order the watchdog raised them, each preceded by the declarations of modules its stack is the
/// first to point into.
fn unwind_and_forward(pending: Receiver<Pending>, flusher: Sender<Cmd>, queued: Arc<AtomicUsize>) {
    let mut unwinder = stack::Unwinder::new();
    let unwind = |unwinder: &mut stack::Unwinder, raw: Option<stack::RawStack>| {
        let Some(raw) = raw else { return Vec::new() };
        queued.fetch_sub(1, Ordering::Relaxed);
        // A damaged stack copy must not take the thread down with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unwinder.unwind(&raw))).unwrap_or_default()
    };
    for p in pending {
        let event = match p {
            Pending::Begin(mut stall, raw) => {
                stall.frames = unwind(&mut unwinder, raw);
                Event::StallBegin(*stall)
            }
            Pending::Look(id, category, raw) => {
                let frames = unwind(&mut unwinder, raw);
                Event::StallLook { id, category, frames, stack: Vec::new() }
            }
            Pending::Event(e) => e,
            Pending::Sample { site, category, raw, spans } => {
                let frames = unwind(&mut unwinder, raw);
                let modules = unwinder.take_new_modules();
                if !modules.is_empty() && flusher.send(Cmd::Modules(modules)).is_err() {
                    return;
                }
                if flusher.send(Cmd::Sample { site, category, frames, spans }).is_err() {
                    return;
                }
                continue;
            }
        };
        let modules = unwinder.take_new_modules();
        if !modules.is_empty() && flusher.send(Cmd::Modules(modules)).is_err() {
            return;
        }
        if flusher.send(Cmd::Event(Box::new(event))).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_a_steady_rate() {
        let mut b = Budget::new(BUDGET_PER_S, BUDGET_BURST, 0);
        let burst = (0..1000).filter(|_| b.take(0)).count() as u64;
        assert_eq!(burst, BUDGET_BURST);
        // Ten seconds later: ten seconds' worth, no more.
        let later = (0..1000).filter(|_| b.take(10_000_000_000)).count() as u64;
        assert_eq!(later, 10 * BUDGET_PER_S);
        // Refills never exceed the burst.
        let much_later = (0..1000).filter(|_| b.take(10_000_000_000_000)).count() as u64;
        assert_eq!(much_later, BUDGET_BURST);
    }
}
