//! The text report that `loopscope report`, `run`, `record` and `demo` print: a recording's
//! [`Report`] (core's data) laid out as tables, each declared once as a column spec
//! ([`loopscope_core::text`]).

use std::fmt::Write as _;
use std::time::Duration;

use loopscope_core::dist::Summary;
use loopscope_core::format::Completeness;
use loopscope_core::model::Flavor;
use loopscope_core::report::{HotLine, PanicReport, Report, SpanReport, StallGroup, TaskGrowth, WorkerReport};
use loopscope_core::stall::{Origin, short_name};
use loopscope_core::tasks::{DumpGroupReport, DumpReport, IDLE_BOUNDS, WaitingSite, fmt_percentile};
use loopscope_core::text::{Column, Table, group, plural};
use loopscope_core::units::fmt_duration;

/// Spaces before every table row.
const INDENT: usize = 2;
/// Minimum width of a duration column (`1.23µs` and a space).
const DURATION: usize = 7;

/// The report as text; `max_sites` limits the spawn-site rows.
pub fn render(report: &Report, max_sites: usize) -> String {
    let mut o = String::new();
    heading(&mut o, report);
    runtime(&mut o, report);
    workers(&mut o, report);
    sites(&mut o, report, max_sites);
    stalls(&mut o, report);
    hot_lines(&mut o, report);
    spans(&mut o, report);
    tasks(&mut o, report);
    workload(&mut o, report);
    if !report.errors.is_empty() || report.recording.events_dropped > 0 {
        let _ = writeln!(o, "\nRecorder errors");
        for e in &report.errors {
            let _ = writeln!(o, "  {e}");
        }
        let dropped = report.recording.events_dropped;
        if dropped > 0 {
            let _ = writeln!(o, "  ({} more distinct message{} not kept)", group(dropped), plural(dropped));
        }
    }
    let mut notes = report.notes.clone();
    let skipped = report.recording.skipped_frames;
    if skipped > 0 {
        notes.push(format!(
            "{} frame{} written by a newer loopscope {} skipped; update loopscope to read {}",
            group(skipped),
            plural(skipped),
            if skipped == 1 { "was" } else { "were" },
            if skipped == 1 { "it" } else { "them" }
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(o, "\nNotes");
        for n in &notes {
            let _ = writeln!(o, "  - {n}");
        }
    }
    o
}

/// A source path as people read it: relative to the current directory when it is below it.
pub fn display_path(path: &str) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| std::path::Path::new(path).strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.to_string())
}

/// A duration of a distribution, `-` when it has no values.
fn stat(s: &Summary, d: Duration) -> String {
    if s.count == 0 { "-".into() } else { fmt_duration(d) }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A right-aligned column of one figure (`pick`) of a row's distribution (`of`).
fn stat_column<'a, R>(
    heading: &str,
    of: impl Fn(&R) -> &Summary + 'a,
    pick: impl Fn(&Summary) -> Duration + 'a,
) -> Column<'a, R> {
    Column::right(heading, move |r: &R| {
        let s = of(r);
        stat(s, pick(s))
    })
    .width(DURATION)
}

fn heading(o: &mut String, report: &Report) {
    let r = &report.recording;
    let state = match &r.completeness {
        Completeness::Complete => "complete".to_string(),
        Completeness::Truncated { at_byte, reason } => format!("CUT SHORT at byte {at_byte}: {reason}"),
    };
    let runtime = match r.flavor {
        Flavor::Unknown => "runtime not seen (no task was polled)".to_string(),
        flavor => format!("{flavor} runtime, {} worker{}", r.workers, plural(u64::from(r.workers))),
    };
    let _ = writeln!(
        o,
        "loopscope report — {} — {runtime} — {} over {} interval{} — {state}",
        r.subject(),
        fmt_duration(r.duration),
        group(r.intervals),
        plural(r.intervals),
    );
}

fn runtime(o: &mut String, report: &Report) {
    let r = &report.recording;
    let rt = &report.runtime;
    if r.intervals == 0 {
        let _ = writeln!(o, "\nRuntime: no interval was recorded");
        return;
    }
    let outliers = rt.poll_outliers + rt.sched_outliers;
    let _ = writeln!(
        o,
        "\nRuntime: {} poll{}, busy {} ({:.1}% of {} worker{}), {} slow poll{} (> {}), {} outlier{}",
        group(rt.polls),
        plural(rt.polls),
        fmt_duration(rt.busy),
        rt.busy_ratio * 100.0,
        r.workers,
        plural(u64::from(r.workers)),
        group(rt.slow_polls),
        plural(rt.slow_polls),
        fmt_duration(r.slow_poll_threshold),
        group(outliers),
        plural(outliers),
    );
    let mut rows = vec![("poll", &rt.poll), ("sched", &rt.sched)];
    if rt.lag.count > 0 {
        rows.push(("lag probe", &rt.lag));
    }
    let table = Table::new(vec![
        Column::left("", |(name, _): &(&str, &Summary)| name.to_string()).width(10),
        stat_column("p50", |(_, s): &(&str, &Summary)| *s, |s| s.p50),
        stat_column("p90", |(_, s): &(&str, &Summary)| *s, |s| s.p90),
        stat_column("p99", |(_, s): &(&str, &Summary)| *s, |s| s.p99),
        stat_column("p99.9", |(_, s): &(&str, &Summary)| *s, |s| s.p999),
        stat_column("max", |(_, s): &(&str, &Summary)| *s, |s| s.max),
        stat_column("mean", |(_, s): &(&str, &Summary)| *s, |s| s.mean),
    ])
    .indent(INDENT);
    o.push_str(&table.render(&rows));
    if !r.schedule_latency_tracked {
        let _ = writeln!(
            o,
            "  (per-task scheduling latency was not tracked in this recording{})",
            if rt.lag.count > 0 { "; the lag probe measures it for the runtime as a whole" } else { "" }
        );
    }
    let host = &rt.host;
    if !host.run_delay.is_zero() {
        let _ = writeln!(
            o,
            "  host: workers waited {} for a CPU ({:.0}% of the time they wanted one)",
            fmt_duration(host.run_delay),
            host.share * 100.0
        );
    }
    let t = &rt.tasks;
    let q = &rt.queues;
    let _ = writeln!(
        o,
        "  tasks: {} spawned, {} finished, {} alive · global queue max {} (mean {:.1}) · local queue max {} · blocking threads max {}",
        group(t.spawned),
        group(t.finished),
        group(t.alive),
        group(q.global_max),
        q.global_mean,
        group(q.local_max),
        group(q.blocking_threads_max)
    );
}

fn workers(o: &mut String, report: &Report) {
    if report.workers.is_empty() {
        return;
    }
    let table = Table::new(vec![
        Column::left("thread", |w: &WorkerReport| match w.index {
            Some(i) => format!("#{i} {}", w.thread_name),
            None => w.thread_name.clone(),
        })
        .clip(28),
        Column::right("threads", |w: &WorkerReport| group(u64::from(w.threads))),
        Column::right("polls", |w: &WorkerReport| group(w.polls)).width(9),
        Column::right("busy", |w: &WorkerReport| fmt_duration(w.busy)).width(DURATION),
        Column::right("busy%", |w: &WorkerReport| percent(w.busy_ratio)).width(6),
        Column::right("host%", |w: &WorkerReport| {
            if w.host.cpu.is_zero() && w.host.run_delay.is_zero() { "-".into() } else { percent(w.host.share) }
        })
        .width(6),
        stat_column("p50", |w: &WorkerReport| &w.poll, |s| s.p50).group("poll time"),
        stat_column("p99", |w: &WorkerReport| &w.poll, |s| s.p99),
        stat_column("max", |w: &WorkerReport| &w.poll, |s| s.max),
        stat_column("p99", |w: &WorkerReport| &w.sched, |s| s.p99).group("sched"),
        Column::right("slow", |w: &WorkerReport| group(w.slow_polls)).group(""),
    ])
    .indent(INDENT);
    let _ = writeln!(o, "\nWorkers (host%: the share of the time a worker wanted a CPU that it waited for one)");
    o.push_str(&table.render(&report.workers));
}

fn sites(o: &mut String, report: &Report, max_sites: usize) {
    let n = report.sites.len();
    if n == 0 {
        let _ = writeln!(o, "\nSpawn sites: none (no task was polled)");
        return;
    }
    let _ = writeln!(
        o,
        "\nSpawn sites ({} by busy time){}",
        group(n as u64),
        if n > max_sites { format!(", top {max_sites}") } else { String::new() }
    );
    use loopscope_core::report::SiteReport as S;
    let table = Table::new(vec![
        Column::left("site", |s: &S| s.location.clone()).clip(40),
        Column::right("tasks", |s: &S| group(s.tasks.spawned)),
        Column::right("polls", |s: &S| group(s.polls)),
        Column::right("busy", |s: &S| fmt_duration(s.busy)).width(DURATION),
        stat_column("p50", |s: &S| &s.poll, |s| s.p50).group("poll time"),
        stat_column("p90", |s: &S| &s.poll, |s| s.p90),
        stat_column("p99", |s: &S| &s.poll, |s| s.p99),
        stat_column("p99.9", |s: &S| &s.poll, |s| s.p999),
        stat_column("max", |s: &S| &s.poll, |s| s.max),
        stat_column("p50", |s: &S| &s.sched, |s| s.p50).group("scheduling latency"),
        stat_column("p90", |s: &S| &s.sched, |s| s.p90),
        stat_column("p99", |s: &S| &s.sched, |s| s.p99),
        stat_column("p99.9", |s: &S| &s.sched, |s| s.p999),
        stat_column("max", |s: &S| &s.sched, |s| s.max),
        Column::right("slow", |s: &S| group(s.slow_polls)).group(""),
        Column::right("stalls", |s: &S| group(s.stalls)),
        Column::right("outl", |s: &S| group(s.poll_outliers + s.sched_outliers)),
    ])
    .indent(INDENT);
    o.push_str(&table.render(report.sites.iter().take(max_sites)));
}

/// What a stall group's threads were in: the call, its system call and what that was on, and
/// the stalls only counted or still going at the end.
fn stall_detail(g: &StallGroup) -> String {
    let mut parts = Vec::new();
    let within = match (&g.call, &g.syscall, &g.fd_target) {
        (Some(c), Some(s), Some(fd)) => format!("{c} ({s} on {fd})"),
        (Some(c), Some(s), None) => format!("{c} ({s})"),
        (Some(c), None, _) => c.clone(),
        (None, Some(s), Some(fd)) => format!("{s} on {fd}"),
        (None, Some(s), None) => s.clone(),
        (None, None, _) => String::new(),
    };
    if !within.is_empty() {
        parts.push(within);
    }
    if g.unrecorded > 0 {
        parts.push(format!(
            "{} only counted (past the recorder's budget of stall events: no stack)",
            group(g.unrecorded)
        ));
    }
    if g.unfinished > 0 {
        parts.push(format!("{} still blocking when the recording ended", group(g.unfinished)));
    }
    parts.join("; ")
}

fn stalls(o: &mut String, report: &Report) {
    let Some(threshold) = report.recording.stall_threshold else {
        let _ = writeln!(o, "\nStalls: detector off");
        return;
    };
    let threshold = fmt_duration(threshold);
    let rank = |g: &&StallGroup| match g.origin {
        Origin::Program => 0,
        Origin::Unattributed => 1,
        Origin::Host => 2,
    };
    let mut ours: Vec<&StallGroup> = report.stalls.iter().filter(|g| g.origin != Origin::Host).collect();
    ours.sort_by_key(rank);
    let host: Vec<&StallGroup> = report.stalls.iter().filter(|g| g.origin == Origin::Host).collect();
    let count = |groups: &[&StallGroup]| groups.iter().map(|g| g.count).sum::<u64>();
    let (n, n_host) = (count(&ours), count(&host));
    let st = &report.runtime.stalls;
    let detected = format!(
        "detected {} after the threshold on average, {} at most",
        fmt_duration(st.detection_latency_mean),
        fmt_duration(st.detection_latency_max)
    );
    let host_caused = "preempted, or seen too late to look";
    match (n, n_host) {
        (0, 0) => {
            let _ = writeln!(o, "\nStalls: none (no poll blocked a worker for more than {threshold})");
            return;
        }
        (0, h) => {
            let _ = writeln!(
                o,
                "\nStalls: none the program caused; {} poll{} held up by the host for more than {threshold} \
                 ({host_caused}; {detected})",
                group(h),
                plural(h)
            );
        }
        (n, 0) => {
            let _ = writeln!(
                o,
                "\nStalls: {} poll{} blocked a worker for more than {threshold} ({detected})",
                group(n),
                plural(n)
            );
        }
        (n, h) => {
            let _ = writeln!(
                o,
                "\nStalls: {} poll{} blocked a worker for more than {threshold} (plus {} the host caused: \
                 {host_caused}; {detected})",
                group(n),
                plural(n),
                group(h)
            );
        }
    }
    let table = Table::new(vec![
        Column::left("category", |g: &&StallGroup| g.category.name().to_string()).width(15),
        Column::right("count", |g: &&StallGroup| group(g.count)),
        Column::right("total", |g: &&StallGroup| fmt_duration(g.total)).width(DURATION),
        Column::right("max", |g: &&StallGroup| fmt_duration(g.max)).width(DURATION),
        Column::left("blocking site", |g: &&StallGroup| {
            g.blocking_site.as_deref().map_or_else(|| "-".to_string(), display_path)
        })
        .clip(40),
        Column::left("spawn site", |g: &&StallGroup| g.spawn_site.as_deref().unwrap_or("-").to_string()).clip(32),
        Column::left("in", |g: &&StallGroup| stall_detail(g)),
    ])
    .indent(INDENT)
    .gap(2);
    if !ours.is_empty() {
        o.push_str(&table.render(&ours));
    }
    if !host.is_empty() {
        let _ = writeln!(
            o,
            "  The host's, not the program's (the worker was runnable but not running, or the watchdog looked too late):"
        );
        o.push_str(&table.render(&host));
    }
}

/// Sites and lines shown in "Where slow polls spend their time" (the JSON has them all).
const HOT_SITES: usize = 5;
const HOT_LINES_PER_SITE: usize = 5;

fn hot_lines(o: &mut String, report: &Report) {
    let s = &report.sampling;
    if s.threshold_ns == 0 {
        return;
    }
    if s.samples == 0 {
        let _ = writeln!(
            o,
            "\nWhere slow polls spend their time: no poll ran past {} (the sampling threshold)",
            fmt_duration(Duration::from_nanos(s.threshold_ns))
        );
        return;
    }
    let mut said = vec![format!("{} sample{}", group(s.samples), plural(s.samples))];
    if s.without_stack > 0 {
        said.push(format!("{} without a stack", group(s.without_stack)));
    }
    if s.skipped > 0 {
        said.push(format!("{} skipped past the budget", group(s.skipped)));
    }
    let _ = writeln!(
        o,
        "\nWhere slow polls spend their time (polls past {} sampled every {}: {})",
        fmt_duration(Duration::from_nanos(s.threshold_ns)),
        fmt_duration(Duration::from_nanos(s.period_ns)),
        said.join(", ")
    );
    let name = |n: &Option<String>| n.as_deref().map_or_else(|| "-".to_string(), short_name);
    let mut columns = vec![
        Column::right("share", |h: &&HotLine| percent(h.share)).width(6),
        Column::right("time", |h: &&HotLine| fmt_duration(h.time)).width(DURATION),
        Column::left("line", |h: &&HotLine| h.line.as_deref().map_or_else(|| "-".to_string(), display_path)).clip(40),
        Column::left("function", move |h: &&HotLine| name(&h.function)).clip(40),
        Column::left("calling", move |h: &&HotLine| name(&h.call)).clip(32),
    ];
    // The span column only with the tracing layer.
    if report.hot_lines.iter().any(|h| h.span.is_some()) {
        columns.push(Column::left("span", |h: &&HotLine| h.span.clone().unwrap_or_else(|| "-".into())).clip(32));
    }
    columns.push(Column::left("doing", |h: &&HotLine| h.category.name().to_string()));
    let table = Table::new(columns).indent(INDENT + 2).gap(2);
    // Lines come sorted by site (most sampled first), then by samples.
    let mut sites: Vec<(&Option<String>, Vec<&HotLine>)> = Vec::new();
    for h in &report.hot_lines {
        match sites.last_mut() {
            Some((site, lines)) if *site == &h.spawn_site => lines.push(h),
            _ => sites.push((&h.spawn_site, vec![h])),
        }
    }
    for (site, lines) in sites.iter().take(HOT_SITES) {
        let samples = lines.first().map_or(0, |h| h.site_samples);
        let _ = writeln!(
            o,
            "  tasks spawned at {} ({} sample{} with a stack):",
            site.as_deref().unwrap_or("an unknown site"),
            group(samples),
            plural(samples)
        );
        o.push_str(&table.render(lines.iter().take(HOT_LINES_PER_SITE)));
        if lines.len() > HOT_LINES_PER_SITE {
            let _ = writeln!(
                o,
                "{:indent$}… {} more lines (--json has them all)",
                "",
                lines.len() - HOT_LINES_PER_SITE,
                indent = INDENT + 2
            );
        }
    }
    if sites.len() > HOT_SITES {
        let _ = writeln!(o, "  … {} more spawn sites (--json has them all)", sites.len() - HOT_SITES);
    }
}

fn spans(o: &mut String, report: &Report) {
    if report.spans.is_empty() {
        return;
    }
    let _ = writeln!(o, "\nSpans (poll time inside each tracing span, per spawn site)");
    let table = Table::new(vec![
        Column::left("spawn site", |r: &SpanReport| r.spawn_site.clone().unwrap_or_else(|| "-".into())).clip(32),
        Column::left("span", |r: &SpanReport| r.span.clone()).clip(40),
        Column::right("polls", |r: &SpanReport| group(r.polls)),
        Column::right("busy", |r: &SpanReport| fmt_duration(r.busy)).width(DURATION),
        Column::right("of site", |r: &SpanReport| percent(r.site_share)),
        stat_column("p50", |r: &SpanReport| &r.poll, |s| s.p50).group("poll time in the span"),
        stat_column("p99", |r: &SpanReport| &r.poll, |s| s.p99),
        stat_column("p99.9", |r: &SpanReport| &r.poll, |s| s.p999),
        stat_column("max", |r: &SpanReport| &r.poll, |s| s.max),
    ])
    .indent(INDENT);
    o.push_str(&table.render(report.spans.iter().take(MAX_SPAN_ROWS)));
    if report.spans.len() > MAX_SPAN_ROWS {
        let _ = writeln!(o, "  … {} more (--json has them all)", report.spans.len() - MAX_SPAN_ROWS);
    }
}

/// Tasks that keep piling up, and tasks that panicked.
fn tasks(o: &mut String, report: &Report) {
    if !report.growing.is_empty() {
        let _ = writeln!(
            o,
            "\nTasks piling up: {} spawn site{} whose alive tasks kept growing (a leak?)",
            report.growing.len(),
            plural(report.growing.len() as u64)
        );
        let table = Table::new(vec![
            Column::left("spawn site", |g: &TaskGrowth| g.spawn_site.clone().unwrap_or_else(|| "-".into())).clip(40),
            Column::right("per second", |g: &TaskGrowth| format!("+{:.1}", g.growth.per_second)),
            Column::right("alive", |g: &TaskGrowth| {
                format!("{} → {}", group(g.growth.first_third_max), group(g.growth.last_third_min))
            }),
            Column::right("over", |g: &TaskGrowth| fmt_duration(g.growth.over)).width(DURATION),
            Column::right("idle >10s", |g: &TaskGrowth| {
                let w = report.waiting.iter().find(|w| w.spawn_site == g.spawn_site);
                w.map_or_else(|| "-".into(), |w| group(w.idle_above(Duration::from_secs(10)).1))
            }),
        ])
        .indent(INDENT);
        o.push_str(&table.render(&report.growing));
    }
    waiting(o, report);
    dumps(o, report);
    if !report.panics.is_empty() {
        let n = report.panics.iter().fold(0u64, |n, p| n.saturating_add(p.count));
        let _ = writeln!(
            o,
            "\nPanics in tasks: {} (tokio keeps a task's panic for its JoinHandle; a task nobody awaits loses it)",
            group(n)
        );
        let table = Table::new(vec![
            Column::right("count", |p: &PanicReport| group(p.count)),
            Column::left("at", |p: &PanicReport| p.location.as_deref().map_or_else(|| "-".into(), display_path))
                .clip(40),
            Column::left("spawn site", |p: &PanicReport| p.spawn_site.clone().unwrap_or_else(|| "-".into())).clip(32),
            Column::left("message", |p: &PanicReport| p.message.lines().next().unwrap_or("").to_string()).clip(60),
        ])
        .indent(INDENT)
        .gap(2);
        o.push_str(&table.render(report.panics.iter().take(MAX_SPAN_ROWS)));
        if report.panics.len() > MAX_SPAN_ROWS {
            let _ = writeln!(o, "  … {} more (--json has them all)", report.panics.len() - MAX_SPAN_ROWS);
        }
    }
}

/// Spawn sites whose tasks have waited at least a second, and the idlest tasks.
fn waiting(o: &mut String, report: &Report) {
    let idle: Vec<&WaitingSite> = report.waiting.iter().filter(|w| w.idle.max >= IDLE_BOUNDS[0]).collect();
    if idle.is_empty() {
        return;
    }
    let alive = idle.iter().fold(0u64, |n, w| n.saturating_add(w.alive));
    let _ = writeln!(
        o,
        "\nWaiting tasks: {} spawn site{} with tasks not polled for a second or more ({} task{} alive there; idle = since the task's last poll)",
        idle.len(),
        plural(idle.len() as u64),
        group(alive),
        plural(alive)
    );
    let table = Table::new(vec![
        Column::left("spawn site", |w: &&WaitingSite| w.spawn_site.clone().unwrap_or_else(|| "-".into())).clip(40),
        Column::right("alive", |w: &&WaitingSite| group(w.alive)),
        Column::right("idle p50", |w: &&WaitingSite| fmt_percentile(w.idle.p50)).width(DURATION),
        Column::right("idle max", |w: &&WaitingSite| fmt_duration(w.idle.max)).width(DURATION),
        Column::right(">1s", |w: &&WaitingSite| group(w.idle_over[0])),
        Column::right(">10s", |w: &&WaitingSite| group(w.idle_over[1])),
        Column::right(">60s", |w: &&WaitingSite| group(w.idle_over[2])),
        Column::right("oldest", |w: &&WaitingSite| fmt_duration(w.age.max)).width(DURATION),
    ])
    .indent(INDENT);
    o.push_str(&table.render(idle.iter().take(MAX_SPAN_ROWS)));
    if let Some(t) = report.idlest.first() {
        let ids: Vec<String> = report.idlest.iter().take(8).map(|t| t.id.to_string()).collect();
        let _ = writeln!(
            o,
            "  idlest: task {} from {}, {} since its last poll{} (tokio task ids, idlest first: {})",
            t.id,
            t.spawn_site.as_deref().unwrap_or("-"),
            fmt_duration(t.idle),
            if t.never_polled { ", never polled" } else { "" },
            ids.join(", ")
        );
    }
    if report.untracked_tasks > 0 {
        let _ = writeln!(
            o,
            "  ({} alive task{} not followed: the recorder's task table was full where they fell)",
            group(report.untracked_tasks),
            plural(report.untracked_tasks)
        );
    }
    if report.dumps_total == 0 {
        let _ = writeln!(o, "  What they wait for: a task dump names each one's await point (docs/tasks.md).");
    }
}

/// The latest task dumps: every task's await point, grouped.
fn dumps(o: &mut String, report: &Report) {
    const SHOWN: usize = 2;
    if report.dumps.is_empty() {
        return;
    }
    // The latest, and the latest complete one when those were all refused or timed out.
    let all = &report.dumps;
    let mut shown: Vec<usize> = (all.len().saturating_sub(SHOWN)..all.len()).collect();
    if !shown.iter().any(|&i| all[i].is_complete())
        && let Some(c) = all.iter().rposition(DumpReport::is_complete)
    {
        shown[0] = c;
    }
    let _ = writeln!(
        o,
        "\nTask dumps: {}{}",
        group(report.dumps_total),
        if report.dumps_total as usize > shown.len() {
            format!(" ({} shown; --json has {})", shown.len(), all.len())
        } else {
            String::new()
        }
    );
    for i in shown {
        dump_entry(o, report, &all[i]);
    }
}

/// One task dump as `loopscope dump` prints it: what it says, then the waiting view.
///
/// A dump that was not taken is followed by the run's latest complete one, when there is one.
pub fn render_dump(report: &Report, d: &DumpReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Task dump of {}", report.recording.subject());
    dump_entry(&mut o, report, d);
    if !d.is_complete()
        && let Some(c) = report.dumps.iter().rev().find(|c| c.is_complete())
    {
        let _ = writeln!(o, "The run's latest complete dump:");
        dump_entry(&mut o, report, c);
    }
    waiting(&mut o, report);
    o
}

fn dump_entry(o: &mut String, report: &Report, d: &DumpReport) {
    let why = match (d.trigger.as_str(), &d.idle_site) {
        ("idle", Some(site)) => format!("tasks of {site} idle"),
        ("idle", None) => "tasks idle".into(),
        (t, _) => t.to_string(),
    };
    match d.outcome.as_str() {
        "complete" => {
            let _ = writeln!(
                o,
                "  at {} ({why}): {} task{} in {} group{}{}",
                fmt_duration(d.at),
                group(d.tasks),
                plural(d.tasks),
                d.groups.len(),
                plural(d.groups.len() as u64),
                if d.skipped > 0 {
                    format!(" ({} left out past the recorder's caps; the idlest kept)", group(d.skipped))
                } else {
                    String::new()
                }
            );
            let table = Table::new(vec![
                Column::right("tasks", |g: &DumpGroupReport| group(g.count)),
                Column::left("spawn site", |g: &DumpGroupReport| g.spawn_site.clone().unwrap_or_else(|| "-".into()))
                    .clip(36),
                Column::right(
                    "idle",
                    |g: &DumpGroupReport| if g.idle.is_zero() { "-".into() } else { fmt_duration(g.idle) },
                )
                .width(DURATION),
                Column::left("waiting at", |g: &DumpGroupReport| g.waiting_at(display_path)),
            ])
            .indent(INDENT + 2)
            .gap(2);
            o.push_str(&table.render(d.groups.iter().take(MAX_SPAN_ROWS)));
            if d.groups.len() > MAX_SPAN_ROWS {
                let _ = writeln!(o, "    … {} more groups (--json has them all)", d.groups.len() - MAX_SPAN_ROWS);
            }
        }
        _ => {
            let stuck: Vec<String> = d
                .stalled_workers
                .iter()
                .map(|w| {
                    report
                        .workers
                        .iter()
                        .find(|r| r.id == *w)
                        .map_or_else(|| format!("worker {w}"), |r| r.thread_name.clone())
                })
                .collect();
            let _ = writeln!(
                o,
                "  at {} ({why}): {}: {}{}",
                fmt_duration(d.at),
                d.outcome,
                d.detail.as_deref().unwrap_or(""),
                if stuck.is_empty() {
                    String::new()
                } else {
                    format!("; stuck in a poll: {} (see Stalls)", stuck.join(", "))
                }
            );
        }
    }
}

/// Span rows shown in the text report.
const MAX_SPAN_ROWS: usize = 30;

fn workload(o: &mut String, report: &Report) {
    let Some(w) = &report.workload else { return };
    use loopscope_core::report::NamedSummary;
    use loopscope_core::workload::Metric;
    let _ = writeln!(o, "\nWorkload {} (its own measurements)", w.name);
    if !w.metrics.is_empty() {
        let table = Table::new(vec![
            Column::left("figure", |m: &Metric| m.name.clone()).width(28),
            Column::right("value", |m: &Metric| value(m.value)).width(12),
            Column::left("unit", |m: &Metric| m.unit.clone()),
        ])
        .indent(INDENT);
        o.push_str(&table.render(&w.metrics));
    }
    if !w.distributions.is_empty() {
        let table = Table::new(vec![
            Column::left("distribution", |d: &NamedSummary| d.name.clone()).width(28),
            Column::right("n", |d: &NamedSummary| group(d.summary.count)).width(12),
            stat_column("p50", |d: &NamedSummary| &d.summary, |s| s.p50),
            stat_column("p90", |d: &NamedSummary| &d.summary, |s| s.p90),
            stat_column("p99", |d: &NamedSummary| &d.summary, |s| s.p99),
            stat_column("p99.9", |d: &NamedSummary| &d.summary, |s| s.p999),
            stat_column("max", |d: &NamedSummary| &d.summary, |s| s.max),
        ])
        .indent(INDENT);
        o.push_str(&table.render(&w.distributions));
    }
}

/// A workload's figure: whole numbers and large ones without decimals.
fn value(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}
