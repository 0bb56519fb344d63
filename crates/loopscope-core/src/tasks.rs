//! What the program's tasks are waiting for: the recorder's task ages (per spawn site, how long
//! since each alive task's last poll) and tokio's task dumps (each task's await point), folded
//! for the report and the TUI. One place for both readers: the "waiting" view of a site, the
//! await point of a dump group (the innermost line of the program's own code in its trace).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::dist::Summary;
use crate::model::{DumpOutcome, DumpTrigger, SiteTasks, TaskAges, TaskDump};
use crate::stall::{ProgramLine, program_line};

/// Dumps a report keeps (the latest).
pub const MAX_REPORTED_DUMPS: usize = 8;

/// Idle-time bounds the report counts tasks above.
pub const IDLE_BOUNDS: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(60)];

/// Task ages and dumps folded from a recording's frames.
#[derive(Clone, Debug, Default)]
pub struct TaskState {
    /// The latest task ages in which any task was alive. A run's last interval comes after the
    /// runtime shut down (no task alive); what the tasks were doing before is the interval
    /// before that.
    latest: Option<TaskAges>,
    /// The task ages with any task alive before `latest`.
    before: Option<TaskAges>,
    /// Whether task ages with no task alive came after `latest` (the runtime shut down).
    ended: bool,
    /// Whether any task ages were recorded (a recorder that follows tasks).
    seen: bool,
    /// The latest dumps with their numbers (1 for a session's first), the latest complete one
    /// kept.
    dumps: VecDeque<(u64, TaskDump)>,
    dumps_total: u64,
}

impl TaskState {
    /// Folds one interval's task ages.
    pub fn push_ages(&mut self, t: &TaskAges) {
        self.seen = true;
        if t.sites.iter().any(|s| s.alive > 0) {
            self.before = self.latest.replace(t.clone());
            self.ended = false;
        } else {
            self.ended = self.latest.is_some();
        }
    }

    /// Folds one task dump. Past [`MAX_REPORTED_DUMPS`] the oldest goes, unless it is the latest
    /// complete one (a program whose later dumps were refused or timed out keeps it).
    pub fn push_dump(&mut self, d: &TaskDump) {
        self.dumps_total += 1;
        if self.dumps.len() == MAX_REPORTED_DUMPS {
            let complete = self.dumps.iter().rposition(|(_, d)| d.outcome == DumpOutcome::Complete);
            self.dumps.remove(usize::from(complete == Some(0)));
        }
        self.dumps.push_back((self.dumps_total, d.clone()));
    }

    /// The dump a viewer shows, with its number (1 for the session's first): the latest complete
    /// one, else the latest.
    pub fn shown_dump(&self) -> Option<(u64, &TaskDump)> {
        let complete = self.dumps.iter().rev().find(|(_, d)| d.outcome == DumpOutcome::Complete);
        complete.or(self.dumps.back()).map(|(n, d)| (*n, d))
    }

    /// Whether the recorder followed task ages.
    pub fn followed(&self) -> bool {
        self.seen
    }

    /// Dumps taken in all.
    pub fn dumps_total(&self) -> u64 {
        self.dumps_total
    }

    /// The latest dumps, oldest first.
    pub fn dumps(&self) -> impl Iterator<Item = &TaskDump> {
        self.dumps.iter().map(|(_, d)| d)
    }

    /// The task ages the views read: the latest with any task alive. When the runtime then shut
    /// down, that one may have been taken while the shutdown was dropping tasks: if it holds
    /// fewer tasks than the one before, the one before is read (one interval older).
    fn shown_ages(&self) -> Option<&TaskAges> {
        let alive = |t: &TaskAges| t.sites.iter().map(|s| s.alive).sum::<u64>();
        match (&self.latest, &self.before) {
            (Some(l), Some(b)) if self.ended && alive(l) < alive(b) => Some(b),
            (l, _) => l.as_ref(),
        }
    }

    /// A site's figures (its alive tasks' idle times and ages) in the latest task ages with any
    /// task alive.
    pub fn site(&self, site: u32) -> Option<&SiteTasks> {
        self.shown_ages()?.sites.iter().find(|s| s.site == site)
    }

    /// The interval of the latest task ages with any task alive.
    pub fn as_of(&self) -> Option<u64> {
        self.shown_ages().map(|t| t.interval)
    }

    /// Per site with alive tasks (in the latest task ages with any), the waiting view, the
    /// longest idle first. `site_name` turns a site id into its location.
    pub fn waiting(&self, site_name: impl Fn(Option<u32>) -> Option<String>) -> Vec<WaitingSite> {
        let sites = self.shown_ages().map_or(&[][..], |t| &t.sites[..]);
        let mut out: Vec<WaitingSite> =
            sites.iter().filter(|s| s.alive > 0).filter_map(|s| WaitingSite::new(s, site_name(Some(s.site)))).collect();
        out.sort_by(|a, b| b.idle.max.cmp(&a.idle.max).then(b.alive.cmp(&a.alive)));
        out
    }

    /// The idlest tasks of the latest task ages with any task alive.
    pub fn idlest(&self, site_name: impl Fn(Option<u32>) -> Option<String>) -> Vec<IdleTaskReport> {
        let idlest = self.shown_ages().map_or(&[][..], |t| &t.idlest[..]);
        idlest
            .iter()
            .map(|t| IdleTaskReport {
                id: t.id,
                spawn_site: site_name(Some(t.site)),
                idle: Duration::from_nanos(t.idle_ns),
                age: Duration::from_nanos(t.age_ns),
                never_polled: t.never_polled,
            })
            .collect()
    }

    /// Alive tasks the recorder could not follow, in the latest task ages with any task alive.
    pub fn untracked(&self) -> u64 {
        self.shown_ages().map_or(0, |t| t.untracked)
    }
}

/// The alive tasks of one spawn site, in the latest task ages with any task alive.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaitingSite {
    /// The spawn site.
    pub spawn_site: Option<String>,
    /// Alive tasks.
    pub alive: u64,
    /// Time since each task's last poll began.
    pub idle: Summary,
    /// Time since each task was spawned.
    pub age: Summary,
    /// Tasks idle for more than 1 s, 10 s and 60 s ([`IDLE_BOUNDS`]).
    pub idle_over: [u64; 3],
}

impl WaitingSite {
    fn new(s: &SiteTasks, spawn_site: Option<String>) -> Option<WaitingSite> {
        let idle = s.idle.decode().ok()?;
        let age = s.age.decode().ok()?;
        Some(WaitingSite {
            spawn_site,
            alive: s.alive,
            idle_over: s.idle_over,
            idle: idle.summary(),
            age: age.summary(),
        })
    }

    /// Tasks idle for more than `bound` (one of [`IDLE_BOUNDS`]; the next lower one otherwise).
    pub fn idle_above(&self, bound: Duration) -> (Duration, u64) {
        let i = IDLE_BOUNDS.iter().rposition(|b| *b <= bound).unwrap_or(0);
        (IDLE_BOUNDS[i], self.idle_over[i])
    }
}

/// One alive task not polled for a long time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleTaskReport {
    /// tokio's task id.
    pub id: u64,
    /// Its spawn site.
    pub spawn_site: Option<String>,
    /// Time since its last poll began.
    #[serde(rename = "idle_ns", with = "crate::units::duration_ns")]
    pub idle: Duration,
    /// Time since it was spawned.
    #[serde(rename = "age_ns", with = "crate::units::duration_ns")]
    pub age: Duration,
    /// Whether it was never polled.
    pub never_polled: bool,
}

/// A task dump, as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DumpReport {
    /// When, since the session started.
    #[serde(rename = "at_ns", with = "crate::units::duration_ns")]
    pub at: Duration,
    /// Why it was taken: `request`, `signal`, or `idle` (a site's tasks idle past the threshold).
    pub trigger: String,
    /// The spawn site whose idle tasks set it off, for an `idle` dump.
    pub idle_site: Option<String>,
    /// `complete`, `timed-out` or `unavailable`.
    pub outcome: String,
    /// What held a timed-out dump up (the stalls in progress), or why none can be taken.
    pub detail: Option<String>,
    /// The workers stuck in a poll when a dump timed out (their stalls name the line).
    pub stalled_workers: Vec<u32>,
    /// Tasks in the dump.
    pub tasks: u64,
    /// Tasks left out of the groups (past the recorder's caps; the idlest are kept).
    pub skipped: u64,
    /// Groups of tasks with one spawn site and one trace, the largest first.
    pub groups: Vec<DumpGroupReport>,
}

/// Tasks of one spawn site waiting at the same place.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DumpGroupReport {
    /// Their spawn site.
    pub spawn_site: Option<String>,
    /// How many.
    pub count: u64,
    /// Some of their task ids.
    pub ids: Vec<u64>,
    /// The longest time one of them had not been polled (zero: unknown).
    #[serde(rename = "idle_ns", with = "crate::units::duration_ns")]
    pub idle: Duration,
    /// Where each waits in the program's own code: per future it waits on, the innermost line of
    /// the program's code in its trace (`file:line`), with the function there and what it called.
    pub await_points: Vec<AwaitPoint>,
}

impl DumpGroupReport {
    /// Where the group waits, in words: each future's await point in the program's code and
    /// what it awaited (`src/bank.rs:42 (Mutex::lock)`), `path` shortening file paths.
    pub fn waiting_at(&self, path: impl Fn(&str) -> String) -> String {
        let mut parts: Vec<String> = self
            .await_points
            .iter()
            .map(|p| match (&p.line, &p.call) {
                (Some(line), Some(call)) => format!("{} ({})", path(line), call_name(call)),
                (Some(line), None) => path(line),
                _ => "(library code only)".into(),
            })
            .collect();
        parts.dedup();
        if parts.is_empty() {
            // tokio traces the futures of its own resources (timers, I/O, channels, locks); a
            // task waiting on none of them was woken by nothing tokio knows.
            "(no tokio resource in its trace: a future of its own, or a lost waker?)".into()
        } else {
            parts.join("; ")
        }
    }
}

/// A percentile of idle times or ages as text: the histograms stop at 60 s (their maxima and
/// the counts above 1, 10 and 60 s are exact), so a percentile there reads "≥60s".
pub fn fmt_percentile(d: Duration) -> String {
    if d.as_nanos() >= u128::from(crate::dist::HIGHEST_NS) * 99 / 100 {
        "≥60s".into()
    } else {
        crate::units::fmt_duration(d)
    }
}

/// What an await point awaited, as people name it: `Mutex::lock` for
/// `tokio::sync::mutex::Mutex<T>::lock::{{closure}}` (the type or module and the function).
pub fn call_name(function: &str) -> String {
    let mut short = crate::stall::short_name(function);
    // `<Sleep as Future>::poll`: the type, then the method.
    if let Some(rest) = short.strip_prefix('<')
        && let Some((ty, after)) = rest.split_once(" as ")
        && let Some((_, method)) = after.split_once(">::")
    {
        short = format!("{ty}::{method}");
    }
    let parts: Vec<&str> = short.split("::").filter(|p| !p.is_empty() && !p.starts_with('{')).collect();
    parts[parts.len().saturating_sub(2)..].join("::")
}

/// Where a task waits, in the program's own code.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AwaitPoint {
    /// `file:line` of the innermost frame of the program's code (the `.await`).
    pub line: Option<String>,
    /// The function there.
    pub function: Option<String>,
    /// What it awaited (the library function just inside it).
    pub call: Option<String>,
}

impl From<ProgramLine> for AwaitPoint {
    fn from(p: ProgramLine) -> Self {
        AwaitPoint { line: p.line, function: p.function, call: p.call }
    }
}

impl DumpReport {
    /// Whether tokio's dump was taken and answered (not timed out, not unavailable).
    pub fn is_complete(&self) -> bool {
        self.outcome == "complete"
    }

    /// The report's view of one dump.
    pub fn new(d: &TaskDump, site_name: impl Fn(Option<u32>) -> Option<String>) -> DumpReport {
        let (trigger, idle_site) = match d.trigger {
            DumpTrigger::Request => ("request", None),
            DumpTrigger::Signal => ("signal", None),
            DumpTrigger::Idle { site, .. } => ("idle", site_name(Some(site))),
        };
        let (outcome, detail, stalled_workers) = match &d.outcome {
            DumpOutcome::Complete => ("complete", None, Vec::new()),
            DumpOutcome::TimedOut { waited_ns: 0, stalled_workers } => (
                "timed-out",
                Some(
                    "not taken: a worker was stuck in a poll, and tokio's dump waits for every worker (pausing the \
                     others meanwhile)"
                        .to_string(),
                ),
                stalled_workers.clone(),
            ),
            DumpOutcome::TimedOut { waited_ns, stalled_workers } => (
                "timed-out",
                Some(format!(
                    "no answer in {}: tokio pauses every worker for a dump, and a worker stuck in a poll never pauses",
                    crate::units::fmt_duration(Duration::from_nanos(*waited_ns))
                )),
                stalled_workers.clone(),
            ),
            DumpOutcome::Unavailable { reason } => ("unavailable", Some(reason.clone()), Vec::new()),
        };
        DumpReport {
            at: Duration::from_nanos(d.at_ns),
            trigger: trigger.into(),
            idle_site,
            outcome: outcome.into(),
            detail,
            stalled_workers,
            tasks: d.tasks,
            skipped: d.skipped,
            groups: d
                .groups
                .iter()
                .map(|g| DumpGroupReport {
                    spawn_site: site_name(g.site),
                    count: g.count,
                    ids: g.ids.clone(),
                    idle: Duration::from_nanos(g.idle_ns),
                    await_points: g.traces.iter().map(|t| AwaitPoint::from(program_line(t))).collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ages_caught_during_the_shutdown_give_way_to_the_interval_before() {
        let ages = |interval, alive| TaskAges {
            interval,
            sites: vec![crate::model::SiteTasks { site: 1, alive, ..Default::default() }],
            ..TaskAges::default()
        };
        let mut state = TaskState::default();
        for (i, alive) in [100, 200, 300].into_iter().enumerate() {
            state.push_ages(&ages(i as u64, alive));
        }
        // Live, the latest is read, fewer tasks or not.
        state.push_ages(&ages(3, 155));
        assert_eq!(state.site(1).map(|s| s.alive), Some(155));
        // The runtime shut down: the 155 were caught while it dropped tasks.
        state.push_ages(&ages(4, 0));
        assert_eq!((state.site(1).map(|s| s.alive), state.as_of()), (Some(300), Some(2)));
        // A latest one that did not shrink stays.
        let mut steady = TaskState::default();
        steady.push_ages(&ages(0, 10));
        steady.push_ages(&ages(1, 12));
        steady.push_ages(&ages(2, 0));
        assert_eq!(steady.site(1).map(|s| s.alive), Some(12));
    }

    #[test]
    fn a_complete_dump_outlives_later_refused_ones_and_is_the_one_shown() {
        let dump = |at_ns, outcome| TaskDump { at_ns, outcome, ..TaskDump::default() };
        let refused = || DumpOutcome::Unavailable { reason: "one dump per run".into() };
        let mut state = TaskState::default();
        state.push_dump(&dump(1, refused()));
        state.push_dump(&dump(2, DumpOutcome::Complete));
        for at in 3..20 {
            state.push_dump(&dump(at, refused()));
        }
        assert_eq!(state.dumps_total(), 19);
        assert_eq!(state.dumps().count(), MAX_REPORTED_DUMPS);
        let (number, shown) = state.shown_dump().unwrap();
        assert_eq!((number, shown.at_ns), (2, 2), "the complete one, numbered as it came");
        let kept: Vec<u64> = state.dumps().map(|d| d.at_ns).collect();
        assert_eq!(kept, [2, 13, 14, 15, 16, 17, 18, 19], "in order, the oldest gone but the complete one");
        // Without a complete one, the latest is shown; with only complete ones, the oldest goes.
        let mut refused_only = TaskState::default();
        refused_only.push_dump(&dump(1, refused()));
        refused_only.push_dump(&dump(2, refused()));
        assert_eq!(refused_only.shown_dump().map(|(n, d)| (n, d.at_ns)), Some((2, 2)));
        let mut complete_only = TaskState::default();
        for at in 1..=9 {
            complete_only.push_dump(&dump(at, DumpOutcome::Complete));
        }
        assert_eq!(complete_only.dumps().next().map(|d| d.at_ns), Some(2));
    }

    #[test]
    fn awaited_calls_are_named_by_type_and_function() {
        assert_eq!(call_name("tokio::sync::mutex::Mutex<T>::lock::{{closure}}"), "Mutex::lock");
        assert_eq!(call_name("tokio::sync::mpsc::bounded::Receiver<T>::recv::{{closure}}"), "Receiver::recv");
        assert_eq!(call_name("<tokio::time::sleep::Sleep as core::future::future::Future>::poll"), "Sleep::poll");
        assert_eq!(call_name("poll"), "poll");
        assert_eq!(fmt_percentile(Duration::from_secs(61)), "≥60s");
        assert_eq!(fmt_percentile(Duration::from_millis(2500)), "2.50s");
    }
}
