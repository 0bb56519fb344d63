//! A test's verdict: the recording of its run read back, its stacks symbolized here, in the test
//! process, after the test body finished (the recorder only ever stores addresses), each stall
//! judged, and the message a developer can act on.
//!
//! A stall fails the test when its cause lies in the program: core's [`Origin`] is `program` or
//! `unattributed`. The host's (`preempted`, or late with nothing seen) never do, nor does a poll
//! that computed for less than the threshold and was only slowed by the host, a stall inside a
//! panic's handling (the panic is the test's failure), one inside `allow_blocking`, or one whose
//! stack passes through allowed code.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use loopscope_core::format::Recording;
use loopscope_core::model::{Event, Frame, ModuleDecl, SiteDecl, StackFrame, Stall, StallCategory, StallTally};
use loopscope_core::resolve::{Resolver, Symbol, Symbolize};
use loopscope_core::stall::{self, Origin};
use loopscope_core::units::fmt_duration;

use super::state::{Excused, LongCall, MAX_ACCOUNTS, PollAccount, TestState};

/// What kind of blocking a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// Polls that blocked their thread for the threshold or longer, caught by the stall detector.
    Stall,
    /// Calls to a known blocking function inside a poll, caught by strict mode whatever they
    /// lasted.
    Call,
    /// Stalls counted past the recorder's budget of stall events: no stack was taken.
    Counted,
}

/// One way the test's async code blocked its runtime: polls (or calls) of one category at one
/// line, from one spawn site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// A stall, a blocking call (strict mode), or stalls only counted.
    pub kind: FindingKind,
    /// What blocked: `sync-sleep`, `file-io`, `cpu-bound`, ...
    pub category: StallCategory,
    /// How many times.
    pub count: u64,
    /// The longest (stalls; `None` for calls and for a stall still running when the test ended).
    pub longest: Option<Duration>,
    /// The program's line that blocked (`path:line`, the path from the project's root), or its
    /// function in a build without line tables; `None` when no line of the program was seen.
    pub blocking_site: Option<String>,
    /// What that line called (e.g. `std::thread::sleep`).
    pub call: Option<String>,
    /// The system call or C library function the thread was in (e.g. `clock_nanosleep`).
    pub syscall: Option<String>,
    /// What it was called on: a file, a socket, a host name.
    pub target: Option<String>,
    /// Where the blocked task was spawned (`path:line:column`).
    pub spawn_site: Option<String>,
    /// Whether that task is the test's own body.
    pub in_test_body: bool,
    /// The program's frames of the stack (`path:line  function`, short names), innermost first;
    /// the library's innermost frames when the program has none.
    pub stack: Vec<String>,
}

/// What a test's run under the recorder showed: its [`Display`](fmt::Display) is the message a
/// failing `#[loopscope::test]` panics with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub(crate) test: String,
    pub(crate) threshold: Duration,
    pub(crate) threshold_from: &'static str,
    pub(crate) strict: bool,
    pub(crate) findings: Vec<Finding>,
    /// The recorder failed: the run cannot be vouched for.
    pub(crate) errors: Vec<String>,
    /// Stalls the host caused, by what they were (a category, or "seen too late").
    pub(crate) host: Vec<(String, u64)>,
    /// Polls that computed and slept less than the threshold, slowed by the host.
    pub(crate) slowed: u64,
    /// Stalls inside `allow_blocking`, or through allowed code.
    pub(crate) allowed: u64,
    /// Stalls inside a panic's handling.
    pub(crate) panicking: u64,
    pub(crate) notes: Vec<String>,
}

impl Verdict {
    /// Whether nothing blocked (and the recorder worked): the test passes.
    pub fn passed(&self) -> bool {
        self.findings.is_empty() && self.errors.is_empty()
    }

    /// How the test's code blocked its runtime.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// What went wrong in the recorder, if anything (the run then fails: it was not watched).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Stalls that are not failures because the host caused them: the worker waited for a CPU,
    /// or the watchdog itself could not run in time to look, or the poll computed less than the
    /// threshold and was slowed by the host.
    pub fn host_stalls(&self) -> u64 {
        self.host.iter().map(|(_, n)| n).sum::<u64>() + self.slowed
    }

    /// Stalls and blocking calls accepted by `allow` or `allow_blocking`.
    pub fn allowed(&self) -> u64 {
        self.allowed
    }

    /// The threshold the test ran with.
    pub fn stall_threshold(&self) -> Duration {
        self.threshold
    }
}

/// The symbolizer every test of the process shares: each binary's debug information is loaded
/// once, however many tests fail.
struct SharedSymbolizer;

static SYMBOLIZER: Mutex<Option<loopscope_symbols::Symbolizer>> = Mutex::new(None);

impl Symbolize for SharedSymbolizer {
    fn symbolize(&mut self, module: &ModuleDecl, file_address: u64) -> Vec<Symbol> {
        crate::hot::lock(&SYMBOLIZER)
            .get_or_insert_with(loopscope_symbols::Symbolizer::new)
            .symbolize(module, file_address)
    }

    fn notes(&self) -> Vec<String> {
        crate::hot::lock(&SYMBOLIZER).as_ref().map(|s| s.notes()).unwrap_or_default()
    }
}

/// Code that may block: a function (and what is nested in it) or a source file (or line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    Function(String),
    Path { path: String, line: Option<u32> },
}

impl Pattern {
    pub(crate) fn parse(s: &str) -> Pattern {
        let s = s.trim();
        let (path, line) = match s.rsplit_once(':') {
            Some((p, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && !p.ends_with(':') => {
                (p, l.parse().ok())
            }
            _ => (s, None),
        };
        if path.contains('/') || path.ends_with(".rs") {
            Pattern::Path { path: path.trim_start_matches("./").to_string(), line }
        } else {
            Pattern::Function(s.to_string())
        }
    }

    fn matches(&self, f: &StackFrame) -> bool {
        match self {
            Pattern::Function(p) => {
                let name = display_name(&f.function);
                name == *p || name.starts_with(&format!("{p}::"))
            }
            Pattern::Path { path, line } => {
                f.file.as_deref().is_some_and(|file| file == path || file.ends_with(&format!("/{path}")))
                    && line.is_none_or(|l| f.line == Some(l))
            }
        }
    }

    fn matches_site(&self, site: &str) -> bool {
        match self {
            Pattern::Function(p) => site == p || site.starts_with(&format!("{p}::")),
            Pattern::Path { path, line } => {
                let (file, at) = site.rsplit_once(':').map_or((site, None), |(f, l)| (f, l.parse::<u32>().ok()));
                (file == path || file.ends_with(&format!("/{path}"))) && line.is_none_or(|l| at == Some(l))
            }
        }
    }
}

/// A function's name as the message shows it: short, without the test body's inner function.
fn display_name(function: &str) -> String {
    stall::short_name(function).replace("::__loopscope_test_body::{closure}", "").replace("::__loopscope_test_body", "")
}

/// What the verdict is judged from.
pub(crate) struct Inputs<'a> {
    pub(crate) test: &'a str,
    pub(crate) recording: &'a std::path::Path,
    pub(crate) state: &'a TestState,
    pub(crate) threshold: Duration,
    pub(crate) threshold_from: &'static str,
    pub(crate) strict: bool,
    pub(crate) allow: &'a [Pattern],
    /// `file:line:column` of the test body's spawn.
    pub(crate) body_site: &'a str,
    pub(crate) errors: Vec<String>,
    pub(crate) notes: Vec<String>,
}

/// Paths as the program's developer reads them: from the project's root.
struct Paths {
    relative: Vec<String>,
}

impl Paths {
    fn show(&self, path: &str) -> String {
        match stall::source_root(self.relative.iter().map(String::as_str), path) {
            Some(root) => path.strip_prefix(&root).unwrap_or(path).to_string(),
            None => path.to_string(),
        }
    }

    fn frame(&self, f: &StackFrame) -> String {
        let name = display_name(&f.function);
        match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{}:{line}  {name}", self.show(file)),
            (Some(file), None) => format!("{}  {name}", self.show(file)),
            _ => name,
        }
    }
}

pub(crate) fn judge(i: Inputs<'_>) -> Verdict {
    let mut v = Verdict {
        test: i.test.to_string(),
        threshold: i.threshold,
        threshold_from: i.threshold_from,
        strict: i.strict,
        findings: Vec::new(),
        errors: i.errors,
        host: Vec::new(),
        slowed: 0,
        allowed: 0,
        panicking: 0,
        notes: i.notes,
    };
    let raw = match Recording::read(i.recording) {
        Ok(r) => r,
        Err(e) => {
            v.errors.push(format!("the test's recording cannot be read back: {e}"));
            return v;
        }
    };
    for e in &raw.events {
        if let Event::RecorderError { message, .. } = e
            && !v.errors.contains(message)
        {
            v.errors.push(message.clone());
        }
    }
    // Not a failure of the recording: a thread that blocks the capture signal (glibc blocks every
    // signal for a moment while it starts a thread) has its stalls counted and classified
    // without a stack.
    let (notes, errors): (Vec<String>, Vec<String>) =
        std::mem::take(&mut v.errors).into_iter().partition(|e| e.contains("blocks signal SIGRTMIN+7"));
    v.errors = errors;
    v.notes.extend(notes);
    let stalled = raw.events.iter().any(|e| matches!(e, Event::StallBegin(_)));
    // What the kernel saw of each stall (before the stacks refine it): as raised, at each further
    // look, and over its whole length.
    let mut seen: HashMap<u64, Vec<StallCategory>> = HashMap::new();
    // Stalls raised waiting in a system call the kernel view has no category for (a child
    // process's end): blocked in the kernel, never quiet.
    let mut in_other_call: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for e in &raw.events {
        match e {
            Event::StallBegin(s) => {
                if s.category == StallCategory::Unknown && s.syscall.as_deref().is_some_and(|c| WAITS.contains(&c)) {
                    in_other_call.insert(s.id);
                }
                seen.entry(s.id).or_default().push(s.category)
            }
            Event::StallLook { id, category, .. } => seen.entry(*id).or_default().push(*category),
            Event::StallEnd { id, category: Some(c), .. } => seen.entry(*id).or_default().push(*c),
            _ => {}
        }
    }
    let (hits, hits_dropped) = i.state.hits();
    let tallies: Vec<_> = raw.intervals.iter().flat_map(|iv| iv.stall_tally.iter().cloned()).collect();
    let accounts = i.state.accounts();
    if !stalled && hits.is_empty() && tallies.is_empty() && accounts.is_empty() {
        return v;
    }
    // Symbolized only when something blocked: a clean run never loads debug information.
    let mut resolver = Resolver::new(Box::new(SharedSymbolizer));
    let rec = if stalled {
        match Recording::read_with(i.recording, &mut resolver) {
            Ok(r) => r,
            Err(e) => {
                v.errors.push(format!("the test's recording cannot be read back: {e}"));
                return v;
            }
        }
    } else {
        raw
    };
    // A look that caught the thread inside the test's own recording of a blocking call (after
    // the call returned, still in the poll: taking the unwinder's lock can wait on a busy host)
    // says nothing of the program: it is left out, and a stall raised there is the call's.
    let mut rec = rec;
    rec.events.retain(|e| !matches!(e, Event::StallLook { stack, .. } if in_own_recording(stack)));
    for e in &mut rec.events {
        if let Event::StallBegin(s) = e
            && in_own_recording(&s.stack)
        {
            s.category = StallCategory::Unknown;
            s.stack.clear();
            s.syscall = None;
        }
    }
    let paths = Paths { relative: rec.sites.iter().map(|s| s.file.clone()).chain([i.body_site.to_string()]).collect() };
    let site =
        |id: Option<u32>| id.and_then(|id| rec.sites.get(id as usize)).filter(|s| s.file != SiteDecl::OTHER_FILE);
    let excused = i.state.excused();
    let mut looks: HashMap<u64, Vec<(StallCategory, Vec<StackFrame>)>> = HashMap::new();
    for e in &rec.events {
        if let Event::StallLook { id, category, stack, .. } = e {
            looks.entry(*id).or_default().push((*category, stack.clone()));
        }
    }
    let long_calls = i.state.long_calls();
    let mut calls = Resolver::new(Box::new(SharedSymbolizer));
    if !long_calls.is_empty() || !hits.is_empty() {
        calls.frame(Frame::Modules(loaded_modules()));
    }
    let threshold_ns = i.threshold.as_nanos() as u64;
    let mut found: Vec<(Finding, Option<Duration>)> = Vec::new();
    let finding = |s: &Stall, duration: Option<Duration>| Finding {
        kind: FindingKind::Stall,
        category: s.category,
        count: 1,
        longest: duration.filter(|d| !d.is_zero()),
        blocking_site: s.blocking_site.as_deref().map(|b| paths.show(b)),
        // A computing poll calls nothing in particular: it was caught somewhere in its work.
        call: s.call.as_deref().filter(|_| s.category != StallCategory::CpuBound).map(display_name),
        syscall: s.syscall.clone(),
        target: s.fd_target.clone(),
        spawn_site: site(s.site).map(|d| format!("{}:{}:{}", paths.show(&d.file), d.line, d.column)),
        in_test_body: site(s.site).is_some_and(|d| d.location() == i.body_site),
        stack: shown_stack(&s.stack, &paths),
    };
    let stuck = i.state.stuck();
    let paired = stall::pair(&rec.events);
    for p in &paired {
        let duration = p.duration_ns.map(Duration::from_nanos);
        let accepted = |stack: &[StackFrame]| {
            in_allowed_section(stack) || i.allow.iter().any(|a| stack.iter().any(|f| a.matches(f)))
        };
        let sightings = looks.get(&p.stall.id).map_or(&[][..], Vec::as_slice);
        // Inside `block_in_place` the worker had been handed over first: no stall (core leaves out
        // one raised with such a stack; a later look can be the first to show it).
        if sightings.iter().any(|(_, stack)| stall::is_block_in_place(stack)) {
            continue;
        }
        // A poll that never returned (the test gave up on it after seconds) is the program's,
        // whatever the watchdog saw as it was raised: it is in what the kernel shows it in now,
        // as its stacks tell it.
        let unfinished = p.duration_ns.is_none();
        let mut category = p.category;
        if unfinished
            && matches!(category, StallCategory::Preempted | StallCategory::Unknown)
            && let Some((_, now)) = stuck.filter(|(w, _)| *w == p.stall.worker)
        {
            let stack = sightings.iter().rev().map(|(_, st)| st).find(|st| !st.is_empty()).unwrap_or(&p.stall.stack);
            category = stall::refine(now, stack);
        }
        let mut s = decisive(&p.stall, category, sightings, accepted);
        s.category = category;
        let start = p.stall.started_ns;
        let end = start.saturating_add(p.duration_ns.unwrap_or(u64::MAX / 2));
        // What the poll did with its time, measured on its thread: if the kernel never saw it
        // blocked in anything but a sleep, and it computed, slept (as long as it asked) and called
        // the C library for less than the threshold, the rest was the host's (it waited for a
        // CPU). A stack alone (a look inside tokio's own `lookup_host`, which only hands the
        // lookup to the blocking pool) does not make such a poll a blocking one.
        let account: Option<&PollAccount> =
            accounts.iter().find(|a| a.worker == p.stall.worker && a.start_ns < end && start < a.end_ns);
        // A stall raised after its poll ended does not know the task; the poll's account does.
        if s.site.is_none() {
            s.site = account.map(|a| a.site);
        }
        let quiet = !in_other_call.contains(&p.stall.id)
            && seen.get(&p.stall.id).is_none_or(|views| {
                views.iter().all(|c| {
                    matches!(
                        c,
                        StallCategory::SyncSleep
                            | StallCategory::CpuBound
                            | StallCategory::Preempted
                            | StallCategory::Unknown
                    )
                })
            });
        // Whether the poll's own account shows it took the threshold itself: then it is the
        // program's, whatever the kernel's view at one instant said.
        // The test gave up on the stuck worker's poll; others still open then were cut short.
        let mut owned = unfinished && stuck.is_some_and(|(w, _)| w == p.stall.worker);
        // A runtime started inside a runtime is tokio's refusal, not a length: never the host's.
        let refused = s.category == StallCategory::NestedRuntime;
        match account.filter(|_| !refused).map(|a| (a, a.own_ns(quiet))) {
            Some((_, Some(own))) if own < threshold_ns => {
                v.slowed += 1;
                continue;
            }
            Some((a, Some(_))) => {
                owned = true;
                if matches!(s.category, StallCategory::Preempted | StallCategory::Unknown) {
                    s.category = a.category(threshold_ns);
                }
            }
            Some((_, None)) => {}
            // No account (the poll never returned): estimate a computing poll's CPU time from
            // its CPU share when it was raised.
            None => {
                let cpu = duration.map(|d| d.mul_f64(f64::from(p.stall.cpu_percent.min(100)) / 100.0));
                if s.category == StallCategory::CpuBound && cpu.is_some_and(|c| c < i.threshold) {
                    v.slowed += 1;
                    continue;
                }
            }
        }
        // The blocking calls this poll made (timed by the interposed C library functions): a
        // stall the watchdog saw too late to name, or only as the host holding it up, is theirs
        // when they took the threshold.
        let made: Vec<&LongCall> =
            long_calls.iter().filter(|c| c.worker == p.stall.worker && c.start_ns < end && start < c.end_ns).collect();
        let in_calls: u64 = made.iter().map(|c| c.end_ns.min(end) - c.start_ns.max(start)).sum();
        // Weak: nothing seen, only the host seen, or only seen inside accepted code (a poll that
        // also blocked outside it, in a call this poll made, is shown at that call).
        // A computing poll whose time went into blocking calls it made (a large `write` copies
        // on the CPU inside the kernel) is theirs too: the calls are what to fix.
        let weak = s.stack.is_empty()
            || matches!(s.category, StallCategory::Unknown | StallCategory::Preempted)
            || (s.category == StallCategory::CpuBound && in_calls >= threshold_ns)
            || accepted(&s.stack);
        if weak
            && in_calls >= threshold_ns
            && let Some(c) = made.iter().max_by_key(|c| c.end_ns - c.start_ns)
        {
            // A sleep's requested length says less than the stall's own duration.
            let detail = c.detail.clone().filter(|_| c.category != StallCategory::SyncSleep);
            let at = Stall { site: s.site, ..p.stall.clone() };
            let seen = call_stall(c.call, c.category, detail, &c.frames, &at, &mut calls);
            if stall::is_block_in_place(&seen.stack) {
                continue;
            }
            s = seen;
        }
        // Nothing seen: the watchdog looked as the poll ended (it ran late on a busy host).
        let nothing_seen = s.category == StallCategory::Unknown && s.syscall.is_none() && s.stack.is_empty();
        if nothing_seen && !owned {
            count(&mut v.host, "seen too late to tell".into(), 1);
            continue;
        }
        match Origin::of(s.category, p.stall.late, s.blocking_site.is_some()) {
            Origin::Host if !owned => {
                count(&mut v.host, s.category.to_string(), 1);
                continue;
            }
            Origin::Host | Origin::Program | Origin::Unattributed => {}
        }
        if s.stack.iter().any(|f| PANICKING.iter().any(|p| f.function.starts_with(p))) {
            v.panicking += 1;
            continue;
        }
        let in_allowed_section = |x: &Excused| x.worker == p.stall.worker && x.start_ns <= end && start <= x.end_ns;
        if excused.iter().any(in_allowed_section) || allowed(i.allow, &s) {
            v.allowed += 1;
            continue;
        }
        found.push((finding(&s, duration), duration));
    }
    // Long polls the watchdog never raised: starved on a busy host, it keeps only the last long
    // poll of a thread between two looks. Each one's account says whether the poll itself took
    // the threshold, and the calls it made where. On the multi-thread runtime a poll may have
    // spent its time in `block_in_place` (never a stall), which only a call's stack can show, so
    // there only a poll whose blocking calls took the threshold is judged.
    let current_thread = rec.header.flavor == loopscope_core::model::Flavor::CurrentThread;
    for a in &accounts {
        let seen = paired.iter().any(|p| {
            let end = p.stall.started_ns.saturating_add(p.duration_ns.unwrap_or(u64::MAX / 2));
            p.stall.worker == a.worker && p.stall.started_ns < a.end_ns && a.start_ns < end
        });
        let short = a.end_ns.saturating_sub(a.start_ns) < threshold_ns;
        if short
            || seen
            || excused.iter().any(|x| x.worker == a.worker && x.start_ns <= a.end_ns && a.start_ns <= x.end_ns)
        {
            continue;
        }
        // Nothing was seen of it: whether the kernel saw a blocking call is not known.
        if a.own_ns(true).is_some_and(|own| own < threshold_ns) {
            v.slowed += 1;
            continue;
        }
        let made: Vec<&LongCall> = long_calls
            .iter()
            .filter(|c| c.worker == a.worker && c.start_ns < a.end_ns && a.start_ns < c.end_ns)
            .collect();
        let in_calls: u64 = made.iter().map(|c| c.end_ns.min(a.end_ns) - c.start_ns.max(a.start_ns)).sum();
        let mut at = Stall::unknown(u64::MAX, a.worker, Some(a.site), a.start_ns, a.end_ns, true);
        let s = match made.iter().max_by_key(|c| c.end_ns - c.start_ns) {
            Some(c) if in_calls >= threshold_ns || current_thread => {
                let detail = c.detail.clone().filter(|_| c.category != StallCategory::SyncSleep);
                call_stall(c.call, c.category, detail, &c.frames, &at, &mut calls)
            }
            _ if current_thread => {
                at.category = a.category(threshold_ns);
                at
            }
            _ => continue,
        };
        if stall::is_block_in_place(&s.stack) {
            continue;
        }
        if allowed(i.allow, &s) {
            v.allowed += 1;
            continue;
        }
        let duration = Some(Duration::from_nanos(a.end_ns - a.start_ns));
        found.push((finding(&s, duration), duration));
    }
    // Stalls counted past the budget were polls with accounts, judged above with the long polls
    // the watchdog never raised; only if the accounts ran out is the tally all there is.
    let tallied: &[StallTally] = if accounts.len() < MAX_ACCOUNTS { &[] } else { &tallies };
    for t in tallied {
        if t.category.is_host() {
            count(&mut v.host, t.category.to_string(), t.count);
            continue;
        }
        let finding = Finding {
            kind: FindingKind::Counted,
            category: t.category,
            count: t.count,
            longest: Some(Duration::from_nanos(t.max_ns)),
            blocking_site: None,
            call: None,
            syscall: None,
            target: None,
            spawn_site: site(t.site).map(|d| format!("{}:{}:{}", paths.show(&d.file), d.line, d.column)),
            in_test_body: site(t.site).is_some_and(|d| d.location() == i.body_site),
            stack: Vec::new(),
        };
        found.push((finding, None));
    }
    if !hits.is_empty() {
        for h in &hits {
            let at = Stall::unknown(0, h.worker, Some(h.site), h.at_ns, h.at_ns, false);
            let s = call_stall(h.call, h.category, h.detail.clone(), &h.frames, &at, &mut calls);
            // Inside `block_in_place` the worker had been handed to another thread first.
            if stall::is_block_in_place(&s.stack) {
                continue;
            }
            if allowed(i.allow, &s) {
                v.allowed += 1 + h.repeats;
                continue;
            }
            let blocking_site = s.blocking_site.as_deref().map(|b| paths.show(b));
            let finding = Finding {
                kind: FindingKind::Call,
                category: h.category,
                count: 1 + h.repeats,
                longest: None,
                blocking_site,
                call: s.call.as_deref().map(display_name),
                syscall: Some(h.call.to_string()),
                target: h.detail.clone(),
                spawn_site: site(Some(h.site)).map(|d| format!("{}:{}:{}", paths.show(&d.file), d.line, d.column)),
                in_test_body: site(Some(h.site)).is_some_and(|d| d.location() == i.body_site),
                stack: shown_stack(&s.stack, &paths),
            };
            found.push((finding, None));
        }
        if hits_dropped > 0 {
            v.notes.push(format!("{hits_dropped} more blocking calls at other places were not kept"));
        }
    }
    v.findings = group(found);
    if !v.findings.is_empty() {
        for note in resolver.notes() {
            if !v.notes.contains(&note) {
                v.notes.push(note);
            }
        }
    }
    v
}

/// Functions of a panic's handling (the hook that prints it, with its backtrace).
const PANICKING: [&str; 4] = [
    "std::panicking::rust_panic_with_hook",
    "std::panicking::begin_panic",
    "std::panicking::default_hook",
    "core::panicking::",
];

fn count(list: &mut Vec<(String, u64)>, what: String, n: u64) {
    match list.iter_mut().find(|(c, _)| *c == what) {
        Some((_, count)) => *count += n,
        None => list.push((what, n)),
    }
}

/// Whether allowed code is on the stall's stack, or is its blocking site.
fn allowed(allow: &[Pattern], s: &Stall) -> bool {
    allow
        .iter()
        .any(|p| s.stack.iter().any(|f| p.matches(f)) || s.blocking_site.as_deref().is_some_and(|b| p.matches_site(b)))
}

/// The stall as its most telling sighting showed it: the one whose stack says what the final
/// category says (the first such for a blocking call; the last for a computing poll, whose time
/// goes where the later looks find it), attributed from that stack. Sightings inside accepted
/// code (`accepted`) come last: a poll that blocked there and elsewhere is shown where it was not
/// accepted.
fn decisive(
    raised: &Stall,
    category: StallCategory,
    looks: &[(StallCategory, Vec<StackFrame>)],
    accepted: impl Fn(&[StackFrame]) -> bool,
) -> Stall {
    let mut sightings: Vec<(StallCategory, &[StackFrame])> = vec![(raised.category, &raised.stack)];
    sightings.extend(looks.iter().map(|(c, stack)| (*c, stack.as_slice())));
    let telling: Vec<usize> = (0..sightings.len())
        .filter(|&k| !sightings[k].1.is_empty() && stall::refine(sightings[k].0, sightings[k].1) == category)
        .collect();
    let pick = |candidates: Vec<usize>| {
        if category == StallCategory::CpuBound { candidates.last().copied() } else { candidates.first().copied() }
    };
    let free = pick(telling.iter().copied().filter(|&k| !accepted(sightings[k].1)).collect());
    match free.or_else(|| pick(telling)) {
        Some(k) if k > 0 => {
            let stack = sightings[k].1.to_vec();
            // The system call seen as the stall was raised belongs to another instant.
            let mut s = Stall {
                stack,
                blocking_site: None,
                blocking_function: None,
                call: None,
                syscall: None,
                fd_target: None,
                ..raised.clone()
            };
            stall::attribute(&mut s);
            s
        }
        _ => raised.clone(),
    }
}

/// Whether a stack was taken inside the test's own recording of a blocking call.
fn in_own_recording(stack: &[StackFrame]) -> bool {
    stack.iter().any(|f| f.function.starts_with("loopscope::session::testing::state::"))
}

/// System calls that wait for another process, which the kernel view files under no category.
const WAITS: [&str; 2] = ["wait4", "waitid"];

/// Whether a stack is inside `loopscope::allow_blocking`.
fn in_allowed_section(stack: &[StackFrame]) -> bool {
    stack.iter().any(|f| f.function.starts_with("loopscope::") && f.function.contains("allow_blocking"))
}

/// The frames a message shows: the program's, innermost first (at most 8); without any, the
/// innermost library frames, so that an unattributed stall still says where it was.
fn shown_stack(stack: &[StackFrame], paths: &Paths) -> Vec<String> {
    let mut program: Vec<&StackFrame> = Vec::new();
    for f in stack.iter().filter(|f| !stall::is_library(f)) {
        // One line of code once: a closure and the function around it on one line are shown as
        // the function.
        let same_line = program.last().is_some_and(|l| l.file.is_some() && l.file == f.file && l.line == f.line);
        if same_line {
            program.pop();
        } else if program.len() == 8 {
            break;
        }
        program.push(f);
    }
    if !program.is_empty() {
        return program.into_iter().map(|f| paths.frame(f)).collect();
    }
    stack
        .iter()
        .filter(|f| f.object.is_none() && !f.function.starts_with("0x"))
        .take(5)
        .map(|f| paths.frame(f))
        .collect()
}

/// A blocking call the interposed C library functions saw, as a stall of the poll `at` for the
/// core's attribution: its stack symbolized here, its blocking site and call named, its category
/// the call's.
fn call_stall(
    call: &str,
    category: StallCategory,
    detail: Option<String>,
    frames: &[u64],
    at: &Stall,
    resolver: &mut Resolver,
) -> Stall {
    let mut s = Stall::unknown(at.id, at.worker, at.site, at.started_ns, at.detected_ns, at.late);
    s.syscall = Some(call.to_string());
    s.fd_target = detail;
    s.stack = resolver.stack(frames);
    stall::attribute(&mut s);
    s.category = category;
    s
}

/// Groups findings of one kind, category, line, call and spawn site.
fn group(found: Vec<(Finding, Option<Duration>)>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for (f, _) in found {
        match out.iter_mut().find(|g| {
            g.kind == f.kind
                && g.category == f.category
                && g.blocking_site == f.blocking_site
                && g.call == f.call
                && g.spawn_site == f.spawn_site
        }) {
            Some(g) => {
                g.count += f.count;
                g.longest = g.longest.max(f.longest);
            }
            None => out.push(f),
        }
    }
    out
}

/// The modules loaded in this process (for the stacks strict mode took here): path, load bias
/// and extent. No build id: the files are the ones this process runs.
fn loaded_modules() -> Vec<ModuleDecl> {
    struct Walk {
        exe: String,
        first: bool,
        out: Vec<ModuleDecl>,
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `data` is the `Walk` below; `info` is the loader's, valid during the callback.
        let (walk, info) = unsafe { (&mut *(data as *mut Walk), &*info) };
        let first = std::mem::replace(&mut walk.first, false);
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: the loader's NUL-terminated name of the object.
            unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
        };
        let (path, main) = if first && name.is_empty() { (walk.exe.clone(), true) } else { (name, false) };
        if !path.starts_with('/') {
            return 0;
        }
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for k in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: the loader's array of `dlpi_phnum` program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(k) };
            if ph.p_type == libc::PT_LOAD {
                lo = lo.min(info.dlpi_addr.wrapping_add(ph.p_vaddr));
                hi = hi.max(info.dlpi_addr.wrapping_add(ph.p_vaddr).wrapping_add(ph.p_memsz));
            }
        }
        if lo < hi {
            let id = walk.out.len() as u32;
            walk.out.push(ModuleDecl { id, path, main, build_id: None, bias: info.dlpi_addr, start: lo, end: hi });
        }
        0
    }
    let exe = std::env::current_exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let mut walk = Walk { exe, first: true, out: Vec::new() };
    // SAFETY: the callback only reads the loader's data and writes into `walk`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut walk as *mut Walk).cast()) };
    walk.out
}

/// What to do instead, by category.
fn fix(category: StallCategory) -> Option<&'static str> {
    Some(match category {
        StallCategory::SyncSleep => "await `tokio::time::sleep(..)` instead of sleeping the thread",
        StallCategory::FileIo => "use `tokio::fs`, or do the file work in `tokio::task::spawn_blocking`",
        StallCategory::NetworkIo => {
            "use `tokio::net` sockets, or run a blocking client in `tokio::task::spawn_blocking`"
        }
        StallCategory::Dns => "resolve with `tokio::net::lookup_host(..).await`",
        StallCategory::LockWait => {
            "use `tokio::sync::Mutex`, or do not hold a `std` lock across slow work (the holder blocked this poll)"
        }
        StallCategory::CpuBound => {
            "move the computation to `tokio::task::spawn_blocking`, or yield with `tokio::task::yield_now().await` \
             between chunks"
        }
        StallCategory::NestedExecutor => "`.await` the future instead of blocking on it",
        StallCategory::NestedRuntime => "`.await` the future: a runtime cannot be started inside a runtime",
        StallCategory::Preempted | StallCategory::Unknown => return None,
    })
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let threshold = humantime::format_duration(self.threshold);
        let mode = if self.strict { ", strict" } else { "" };
        if !self.errors.is_empty() {
            writeln!(f, "loopscope: the recorder could not watch test `{}`, so it cannot pass:", self.test)?;
            for e in &self.errors {
                writeln!(f, "  {e}")?;
            }
            if self.findings.is_empty() {
                return Ok(());
            }
            writeln!(f)?;
        }
        if self.findings.is_empty() {
            writeln!(
                f,
                "loopscope: test `{}` did not block its runtime (stall threshold {threshold}{mode})",
                self.test
            )?;
        } else {
            writeln!(
                f,
                "loopscope: test `{}` blocked its runtime (stall threshold {threshold}, {}{mode}):",
                self.test, self.threshold_from
            )?;
        }
        for (n, g) in self.findings.iter().enumerate() {
            writeln!(f)?;
            let times =
                |one: &str, many: &str| if g.count == 1 { one.to_string() } else { format!("{} {many}", g.count) };
            let longest = g.longest.map(fmt_duration);
            let what = match (g.kind, g.category) {
                (FindingKind::Stall, StallCategory::NestedRuntime) => {
                    format!("{}tokio panicked: a runtime was started inside a runtime", times("", "times: "))
                }
                (FindingKind::Stall, _) => match longest {
                    Some(l) if g.count == 1 => format!("a poll blocked its thread for {l}"),
                    Some(l) => format!("{} polls blocked their thread, the longest for {l}", g.count),
                    None => times(
                        "a poll blocked its thread and had not returned when the test ended",
                        "polls blocked their thread",
                    ),
                },
                (FindingKind::Call, _) => {
                    let call = g.syscall.as_deref().unwrap_or("?");
                    format!(
                        "{} `{call}` inside a poll (strict mode: any length)",
                        times("a blocking call to", "calls to")
                    )
                }
                (FindingKind::Counted, _) => format!(
                    "{} more polls blocked their thread, the longest for {} (counted past the recorder's budget of \
                     stall stacks, so without a stack)",
                    g.count,
                    longest.unwrap_or_default()
                ),
            };
            writeln!(f, "{}) {}: {what}", n + 1, g.category)?;
            match &g.blocking_site {
                Some(site) => writeln!(f, "   at       {site}")?,
                None if g.kind != FindingKind::Counted => {
                    writeln!(f, "   at       no line of the program (no stack, or every frame in a library)")?
                }
                None => {}
            }
            // The recorder names tokio's refusal after the call; the headline says it already.
            let call = g.call.as_deref().map(|c| c.split(" (tokio panicked").next().unwrap_or(c).to_string());
            let on = match (&g.target, g.category) {
                (Some(t), StallCategory::SyncSleep) => format!(" for {t}"),
                (Some(t), _) => format!(" on {t}"),
                (None, _) => String::new(),
            };
            match (&call, &g.syscall) {
                (Some(call), Some(sys)) if g.kind == FindingKind::Call => {
                    writeln!(f, "   calling  {call} ({sys}{on})")?
                }
                (Some(call), Some(sys)) => writeln!(f, "   calling  {call} (the thread was in {sys}{on})")?,
                (Some(call), None) => writeln!(f, "   calling  {call}")?,
                (None, Some(sys)) => writeln!(f, "   in       {sys}{on}")?,
                (None, None) => {}
            }
            if let Some(spawn) = &g.spawn_site {
                let body = if g.in_test_body { " (the test's body)" } else { "" };
                writeln!(f, "   task     spawned at {spawn}{body}")?;
            }
            for (k, frame) in g.stack.iter().enumerate() {
                writeln!(f, "   {}{frame}", if k == 0 { "stack    " } else { "         " })?;
            }
            if let Some(fix) = fix(g.category) {
                writeln!(f, "   fix      {fix}")?;
            }
        }
        let mut aside = Vec::new();
        let host = self.host_stalls();
        if host > 0 {
            let what: Vec<String> = self
                .host
                .iter()
                .map(|(what, n)| format!("{n} {what}"))
                .chain((self.slowed > 0).then(|| format!("{} that ran and slept less than the threshold", self.slowed)))
                .collect();
            aside.push(format!("{host} held up by the host ({})", what.join(", ")));
        }
        if self.allowed > 0 {
            aside.push(format!("{} allowed", self.allowed));
        }
        if self.panicking > 0 {
            aside.push(format!("{} inside a panic's handling", self.panicking));
        }
        if !aside.is_empty() {
            writeln!(f)?;
            writeln!(f, "Not failures: {}.", aside.join("; "))?;
        }
        for note in &self.notes {
            writeln!(f, "Note: {note}")?;
        }
        if !self.findings.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "Code that may block: `#[loopscope::test(allow = [\"my_crate::module::function\", \"src/file.rs\"])]`, \
                 `allow` in loopscope-test.toml, or `loopscope::allow_blocking(|| ..)` around it (docs/testing.md)."
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_core::model::{FORMAT_VERSION, Flavor, Footer, Header, Interval, WorkerDecl};

    fn frame(function: &str, file: Option<&str>, line: u32) -> StackFrame {
        StackFrame {
            address: 1,
            function: function.into(),
            file: file.map(Into::into),
            line: file.map(|_| line),
            inlined: false,
            object: None,
        }
    }

    #[test]
    fn allow_patterns_name_functions_files_and_lines() {
        let flush = frame("app::log::flush::{{closure}}", Some("/home/me/app/src/log.rs"), 12);
        assert!(Pattern::parse("app::log::flush").matches(&flush));
        assert!(Pattern::parse("app::log").matches(&flush));
        assert!(!Pattern::parse("app::lo").matches(&flush));
        assert!(Pattern::parse("src/log.rs").matches(&flush));
        assert!(Pattern::parse("src/log.rs:12").matches(&flush));
        assert!(!Pattern::parse("src/log.rs:13").matches(&flush));
        assert!(!Pattern::parse("log.rs").matches(&frame("x", Some("/a/catalog.rs"), 1)));
        assert!(Pattern::parse("log.rs").matches(&frame("x", Some("/a/log.rs"), 1)));
        let body = frame("t::a_test::__loopscope_test_body::{{closure}}", Some("/p/tests/t.rs"), 3);
        assert!(Pattern::parse("t::a_test").matches(&body), "the test body's inner function is not named");
        assert_eq!(Pattern::parse("a::b"), Pattern::Function("a::b".into()));
        assert_eq!(Pattern::parse("./src/x.rs:7"), Pattern::Path { path: "src/x.rs".into(), line: Some(7) });
        assert!(Pattern::parse("src/x.rs:7").matches_site("/p/src/x.rs:7"));
    }

    const MS: u64 = 1_000_000;

    fn program(line: u32) -> StackFrame {
        frame("app::handler::{{closure}}", Some("/home/me/app/src/handler.rs"), line)
    }

    fn library(function: &str) -> StackFrame {
        frame(function, Some("/rustc/abc/library/std/src/x.rs"), 1)
    }

    /// A stall of the spawned task `src/main.rs:10:5` (site 0) on worker 0.
    fn stall(id: u64, category: StallCategory, stack: Vec<StackFrame>) -> Stall {
        let mut s = Stall::unknown(id, 0, Some(0), 100 * MS * id, 100 * MS * id + 2 * MS, false);
        s.category = category;
        s.stack = stack;
        s
    }

    /// Judges a recording of `events` and `tallies` (one interval) at a 2 ms threshold.
    fn judge_events(events: Vec<Event>, tallies: Vec<StallTally>, allow: &[&str]) -> Verdict {
        judge_accounted(events, tallies, allow, &[])
    }

    /// The same, with what the test's hooks measured of its long polls.
    fn judge_accounted(
        events: Vec<Event>,
        tallies: Vec<StallTally>,
        allow: &[&str],
        accounts: &[PollAccount],
    ) -> Verdict {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "loopscope-verdict-{}-{}.loopscope",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let header = Header {
            format_version: FORMAT_VERSION,
            loopscope_version: "test".into(),
            flavor: Flavor::CurrentThread,
            workers: 1,
            host: "host".into(),
            pid: 1,
            start_unix_ns: 1,
            command_line: vec!["t".into()],
            workload: None,
            interval_ns: 1_000_000_000,
            slow_poll_ns: 100_000,
            schedule_latency: false,
            stall_threshold_ns: Some(2 * MS),
        };
        let mut w = loopscope_core::format::Writer::new(std::fs::File::create(&path).unwrap(), &header).unwrap();
        let site = SiteDecl { id: 0, file: "src/main.rs".into(), line: 10, column: 5 };
        w.write(&Frame::Sites(vec![site])).unwrap();
        w.write(&Frame::Workers(vec![WorkerDecl { id: 0, index: None, thread_name: "t".into() }])).unwrap();
        for e in events {
            w.write(&Frame::Event(e)).unwrap();
        }
        let interval =
            Interval { index: 0, start_ns: 0, end_ns: 1_000 * MS, stall_tally: tallies, ..Interval::default() };
        w.write(&Frame::Interval(Box::new(interval))).unwrap();
        w.write(&Frame::Footer(Footer { end_ns: 1_000 * MS, intervals: 1, errors: Vec::new() })).unwrap();
        drop(w);
        let state = TestState::new(false, 2 * MS);
        for a in accounts {
            state.push_account(*a);
        }
        let allow: Vec<Pattern> = allow.iter().map(|a| Pattern::parse(a)).collect();
        let v = judge(Inputs {
            test: "t",
            recording: &path,
            state: &state,
            threshold: Duration::from_millis(2),
            threshold_from: "the default",
            strict: false,
            allow: &allow,
            body_site: "src/main.rs:1:1",
            errors: Vec::new(),
            notes: Vec::new(),
        });
        let _ = std::fs::remove_file(&path);
        v
    }

    fn ended(s: Stall, duration_ms: u64, category: Option<StallCategory>) -> Vec<Event> {
        let id = s.id;
        vec![Event::StallBegin(s), Event::StallEnd { id, duration_ns: duration_ms * MS, category }]
    }

    #[test]
    fn a_stall_at_a_line_of_the_program_fails_and_says_where() {
        let mut s = stall(1, StallCategory::SyncSleep, vec![library("std::thread::sleep"), program(42)]);
        s.syscall = Some("clock_nanosleep".into());
        let v = judge_events(ended(s, 5, None), vec![], &[]);
        assert!(!v.passed(), "{v}");
        let f = &v.findings()[0];
        // Shown from the project's root, as the spawn site is.
        assert_eq!(f.blocking_site.as_deref(), Some("src/handler.rs:42"));
        assert_eq!((f.longest, f.spawn_site.as_deref()), (Some(Duration::from_millis(5)), Some("src/main.rs:10:5")));
        assert!(v.to_string().contains("calling  std::thread::sleep (the thread was in clock_nanosleep)"), "{v}");
    }

    #[test]
    fn an_unattributed_stall_fails_too() {
        let s = stall(1, StallCategory::LockWait, vec![library("std::sync::Mutex::lock")]);
        let v = judge_events(ended(s, 5, None), vec![], &[]);
        assert_eq!(v.findings().len(), 1, "{v}");
        assert!(v.to_string().contains("no line of the program"), "{v}");
    }

    #[test]
    fn stalls_the_host_caused_never_fail() {
        let mut events = Vec::new();
        // Waiting for a CPU.
        events.extend(ended(stall(1, StallCategory::Preempted, vec![program(42)]), 30, None));
        // Raised late: the watchdog itself did not run in time.
        let mut late = stall(2, StallCategory::Unknown, vec![]);
        late.late = true;
        events.extend(ended(late, 30, None));
        // Raised as the poll ended: nothing seen.
        events.extend(ended(stall(3, StallCategory::Unknown, vec![]), 3, None));
        // Computing at first sight, held up by the host over the whole stall.
        events.extend(ended(stall(4, StallCategory::CpuBound, vec![program(42)]), 30, Some(StallCategory::Preempted)));
        // Computed 1.5 ms of its 3: slowed by the host, not a computation of the threshold.
        let mut slowed = stall(5, StallCategory::CpuBound, vec![program(42)]);
        slowed.cpu_percent = 50;
        events.extend(ended(slowed, 3, None));
        let v = judge_events(events, vec![], &[]);
        assert!(v.passed(), "{v}");
        assert_eq!(v.host_stalls(), 5, "{v}");
        let msg = v.to_string();
        assert!(msg.contains("Not failures: 5 held up by the host (2 preempted, "), "{msg}");
        assert!(
            msg.contains("2 seen too late to tell") && msg.contains("1 that ran and slept less than the threshold"),
            "{msg}"
        );
    }

    #[test]
    fn a_poll_that_computed_for_the_threshold_fails() {
        let mut s = stall(1, StallCategory::CpuBound, vec![program(42)]);
        s.cpu_percent = 80;
        let v = judge_events(ended(s, 10, None), vec![], &[]);
        assert_eq!(v.findings().len(), 1, "{v}");
        assert_eq!(v.findings()[0].call, None, "a computing poll calls nothing in particular");
    }

    #[test]
    fn allowed_code_and_a_panics_handling_are_not_failures() {
        let mut events =
            ended(stall(1, StallCategory::SyncSleep, vec![library("std::thread::sleep"), program(42)]), 5, None);
        let panicking =
            vec![library("std::panicking::default_hook"), library("std::panicking::rust_panic_with_hook"), program(7)];
        let mut printing = stall(2, StallCategory::CpuBound, panicking);
        printing.cpu_percent = 100;
        events.extend(ended(printing, 50, None));
        let v = judge_events(events, vec![], &["src/handler.rs:42"]);
        assert!(v.passed(), "{v}");
        assert_eq!(v.allowed(), 1);
        assert!(v.to_string().contains("1 inside a panic's handling"), "{v}");
        let v = judge_events(
            ended(stall(1, StallCategory::SyncSleep, vec![program(42)]), 5, None),
            vec![],
            &["app::handler"],
        );
        assert!(v.passed(), "{v}");
        let v = judge_events(
            ended(stall(1, StallCategory::SyncSleep, vec![program(42)]), 5, None),
            vec![],
            &["app::other"],
        );
        assert!(!v.passed(), "{v}");
    }

    #[test]
    fn stalls_counted_past_the_budget_are_judged_by_their_polls_accounts() {
        let tally =
            StallTally { site: Some(0), category: StallCategory::SyncSleep, count: 2, total_ns: 0, max_ns: 6 * MS };
        // Two long polls no event was raised for: one slept 5 ms, one was held up by the host.
        let accounts = [PollAccount { switched: true, ..account(1, 6, 50, 5_000, 0) }, account(2, 4, 300, 0, 0)];
        let v = judge_accounted(vec![], vec![tally.clone()], &[], &accounts);
        assert_eq!(v.findings().len(), 1, "{v}");
        assert_eq!((v.findings()[0].kind, v.host_stalls()), (FindingKind::Stall, 1), "{v}");
        // Past the accounts' cap, the tally is all there is.
        let many: Vec<PollAccount> = (0..MAX_ACCOUNTS as u64).map(|k| account(1_000 + k, 3, 10, 0, 0)).collect();
        let tally = StallTally { count: 150, max_ns: 3 * MS, ..tally };
        let v = judge_accounted(vec![], vec![tally], &[], &many);
        assert_eq!(v.findings().len(), 1, "{v}");
        assert_eq!((v.findings()[0].kind, v.findings()[0].count), (FindingKind::Counted, 150));
        assert!(v.to_string().contains("150 more polls blocked their thread"), "{v}");
    }

    #[test]
    fn a_stall_still_running_when_the_recording_ended_fails() {
        let v = judge_events(
            vec![Event::StallBegin(stall(1, StallCategory::NestedExecutor, vec![program(42)]))],
            vec![],
            &[],
        );
        assert_eq!(v.findings().len(), 1, "{v}");
        assert!(v.to_string().contains("had not returned when the test ended"), "{v}");
    }

    /// The account of the poll of stall `id` (as [`stall`] places it), lasting `ms`.
    fn account(id: u64, ms: u64, cpu_us: u64, slept_us: u64, called_us: u64) -> PollAccount {
        let start_ns = 100 * MS * id;
        PollAccount {
            worker: 0,
            site: 0,
            start_ns,
            end_ns: start_ns + ms * MS,
            cpu_ns: cpu_us * 1_000,
            switched: slept_us + called_us > 0,
            slept_ns: slept_us * 1_000,
            called_ns: called_us * 1_000,
            waited_ns: None,
        }
    }

    #[test]
    fn a_sleep_counts_in_full_when_the_run_queue_delay_overlaps_it() {
        // Measured on a loaded machine: a 5 ms sleep in a 5.28 ms poll, 3.33 ms of run-queue
        // delay reported over the same poll (a sleeping thread left queued).
        let a =
            PollAccount { waited_ns: Some(3_334_313), end_ns: 5_282_137, start_ns: 0, ..account(0, 0, 172, 5_069, 0) };
        let own = a.own_ns(true).unwrap();
        assert!(own >= 5_069_000 + 172_000, "{own}");
        assert!(a.own_ns(false).unwrap() >= 5_069_000, "blocked elsewhere too: at least the sleep");
    }

    #[test]
    fn a_poll_that_ran_and_slept_less_than_the_threshold_was_held_up_by_the_host() {
        // A 100 µs sleep, then 3 ms waiting for a CPU, still "in" the sleep to the kernel.
        let sleep = stall(1, StallCategory::SyncSleep, vec![library("std::thread::sleep"), program(42)]);
        // A look inside tokio's non-blocking lookup_host while the host held the thread up.
        let lookup = vec![
            frame(
                "<(&str, u16) as tokio::net::addr::sealed::ToSocketAddrsPriv>::to_socket_addrs",
                Some("/root/.cargo/registry/src/x/tokio-1.54.1/src/net/addr.rs"),
                1,
            ),
            program(50),
        ];
        let mut events = ended(sleep, 3, None);
        events.extend(ended(stall(2, StallCategory::Preempted, lookup), 4, None));
        let accounts = [account(1, 3, 40, 100, 0), account(2, 4, 300, 0, 0)];
        let v = judge_accounted(events.clone(), vec![], &[], &accounts);
        assert!(v.passed(), "{v}");
        assert_eq!(v.host_stalls(), 2, "{v}");
        // Without the account, each is judged by what was seen: a sleep at a line, and dns.
        let v = judge_events(events, vec![], &[]);
        assert_eq!(v.findings().len(), 2, "{v}");
    }

    #[test]
    fn a_poll_that_slept_computed_or_waited_on_a_lock_for_the_threshold_fails() {
        let slept = stall(1, StallCategory::SyncSleep, vec![program(42)]);
        let computed = stall(2, StallCategory::CpuBound, vec![program(43)]);
        // The kernel saw a futex: std's locks wait with a raw system call no account sees.
        let waited = stall(3, StallCategory::LockWait, vec![library("std::sync::Mutex::lock"), program(44)]);
        let mut events = ended(slept, 6, None);
        events.extend(ended(computed, 6, None));
        events.extend(ended(waited, 6, None));
        // Parked on the futex: a voluntary context switch.
        let parked = PollAccount { switched: true, ..account(3, 6, 30, 0, 0) };
        let accounts = [account(1, 6, 30, 5_000, 0), account(2, 6, 5_000, 0, 0), parked];
        let v = judge_accounted(events, vec![], &[], &accounts);
        assert_eq!(v.findings().len(), 3, "{v}");
    }

    #[test]
    fn a_long_poll_the_watchdog_never_raised_is_judged_by_its_account() {
        // A starved watchdog keeps only a thread's last long poll between two looks.
        let v = judge_accounted(vec![], vec![], &[], &[account(1, 6, 50, 5_000, 0), account(2, 4, 300, 0, 0)]);
        assert_eq!(v.findings().len(), 1, "{v}");
        assert_eq!(v.findings()[0].category, StallCategory::SyncSleep, "{v}");
        assert_eq!(v.findings()[0].spawn_site.as_deref(), Some("src/main.rs:10:5"), "{v}");
        assert_eq!(v.host_stalls(), 1, "the other ran and slept 0.3 ms of its 4: {v}");
    }

    #[test]
    fn what_a_poll_took_itself_is_judged_from_its_switches_run_queue_and_calls() {
        let waited = |a: PollAccount, ms: u64| PollAccount { waited_ns: Some(ms * MS), ..a };
        // 30 ms, 29 of them waiting for a CPU after a 1 ms sleep: the host's, whatever the kernel
        // saw at its look.
        let held = stall(1, StallCategory::SyncSleep, vec![library("std::thread::sleep"), program(42)]);
        // 30 ms parked on a futex (std's locks, futures' block_on), 2 waiting for a CPU.
        let parked = stall(2, StallCategory::LockWait, vec![library("std::sync::Mutex::lock"), program(44)]);
        // 90 ms without leaving its CPU, 10 of them computing: a computation with a ninth of a
        // CPU (the rest a descheduled virtual CPU, which no figure of the guest's kernel shows).
        let computed = stall(3, StallCategory::Preempted, vec![program(43)]);
        // 3 ms without leaving its CPU, 15 us of them computing: the host's.
        let stolen = stall(4, StallCategory::Preempted, vec![program(45)]);
        let mut events = ended(held, 30, None);
        events.extend(ended(parked, 30, None));
        events.extend(ended(computed, 90, None));
        events.extend(ended(stolen, 3, None));
        let accounts = [
            waited(account(1, 30, 100, 1_000, 0), 29),
            waited(PollAccount { switched: true, ..account(2, 30, 100, 0, 0) }, 2),
            waited(account(3, 90, 10_000, 0, 0), 0),
            waited(account(4, 3, 15, 0, 0), 0),
        ];
        let v = judge_accounted(events, vec![], &[], &accounts);
        assert_eq!(v.host_stalls(), 2, "{v}");
        let categories: Vec<_> = v.findings().iter().map(|f| f.category).collect();
        assert_eq!(categories, [StallCategory::LockWait, StallCategory::CpuBound], "{v}");
        assert_eq!(v.findings()[1].blocking_site.as_deref(), Some("src/handler.rs:43"), "{v}");
    }

    #[test]
    fn a_runtime_started_inside_a_runtime_fails_however_its_poll_went() {
        let mut nested = stall(1, StallCategory::NestedRuntime, vec![]);
        nested.blocking_site = Some("src/handler.rs:42".into());
        // Its poll (printing the panic) was long, but ran for little of it.
        let v = judge_accounted(ended(nested, 0, None), vec![], &[], &[account(1, 12, 300, 0, 0)]);
        assert_eq!(v.findings().len(), 1, "{v}");
        assert!(v.to_string().contains("nested-runtime: tokio panicked"), "{v}");
    }
}
