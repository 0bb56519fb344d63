//! Rendering: pure functions from the state to a frame.

use std::time::Duration;

use loopscope_core::dist::{DistAcc, Summary};
use loopscope_core::model::StallCategory;
use loopscope_core::units::fmt_duration;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span as TextSpan};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};

use crate::app::{App, Column, KEYS, Source, View};
use crate::stats::summary_of;

/// Draws the whole screen.
pub fn render(frame: &mut Frame<'_>, app: &mut App) {
    let [top, main, bottom] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(frame.area());
    tabs(frame, top, app);
    match app.view {
        View::Overview => overview(frame, main, app),
        View::Sites => sites(frame, main, app),
        View::Detail => detail(frame, main, app),
        View::Stalls => stalls(frame, main, app),
        View::StallDetail => stall_detail(frame, main, app),
    }
    status(frame, bottom, app);
    if app.help {
        help(frame, main);
    }
}

fn d(v: Duration) -> String {
    fmt_duration(v)
}

fn clip_left(s: &str, width: usize) -> String {
    loopscope_core::report::clip_left(s, width)
}

fn tabs(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let mut spans = vec![TextSpan::styled(" loopscope ", Style::new().bold().reversed()), TextSpan::raw(" ")];
    for (i, v) in View::TABS.iter().enumerate() {
        let style = if v.title() == app.view.title() { Style::new().bold().underlined() } else { Style::new() };
        spans.push(TextSpan::styled(format!("{} {}", i + 1, v.title()), style));
        spans.push(TextSpan::raw("  "));
    }
    let source = match &app.source {
        Source::Replay(p) => format!("replay {p}"),
        Source::Live(p) => format!("live {p}"),
        Source::Attached(a) => format!("attached {a}"),
        Source::Console(u) => format!("tokio-console {u}"),
    };
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let room = (area.width as usize).saturating_sub(used + 1);
    spans.push(TextSpan::styled(format!("{:>room$}", clip_left(&source, room)), Style::new().dim()));
    frame.render_widget(Line::from(spans), area);
}

fn status(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    let n = app.timeline.intervals.len();
    let iv = app.timeline.interval_ns();
    let (start, end) = app.window_range();
    let at = app.end_pos().map_or(0, |p| p + 1);
    let secs = |k: usize| Duration::from_nanos(iv.saturating_mul(k as u64 + app.timeline.dropped_intervals));
    let state = if app.is_live() {
        if app.cursor.is_none() { if app.timeline.finished { "finished" } else { "LIVE" } } else { "paused" }
    } else if app.playing {
        "playing"
    } else {
        "stopped"
    };
    let mut text = format!(
        " {state} │ {}/{n} ({}) │ window {} ({} intervals) │ ? help  q quit",
        at,
        d(secs(at)),
        app.span.label(),
        end - start
    );
    if let Some(s) = &app.status {
        text = format!(" {s} │{text}");
    } else if let Some(note) = app.timeline.notes().first() {
        // What the symbolizer could not do (a binary missing or rebuilt, no line tables).
        text = format!(" {note} │{text}");
    }
    if app.typing_filter {
        text = format!(" filter: {}▏  (Enter keeps, Esc clears)", app.filter);
    }
    frame.render_widget(Paragraph::new(text).style(Style::new().reversed()), area);
}

/// Bucket edges (ns) of the log-scaled histogram bars: powers of 4 from 1 µs to 64 ms.
const EDGES: [u64; 9] = [1_000, 4_000, 16_000, 64_000, 256_000, 1_000_000, 4_000_000, 16_000_000, 64_000_000];

/// Counts per bucket: below each edge, and the rest.
fn buckets(acc: &DistAcc) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut below_prev = 0;
    for edge in EDGES {
        let below = acc.count_between(0, edge.saturating_sub(1));
        let label = format!("<{}", d(Duration::from_nanos(edge)));
        out.push((label, below - below_prev));
        below_prev = below;
    }
    let total: u64 = acc.buckets().map(|(_, n)| n).sum();
    out.push((format!("≥{}", d(Duration::from_nanos(EDGES[EDGES.len() - 1]))), total.saturating_sub(below_prev)));
    out
}

/// A histogram as rows of log-scaled bars, with the percentile table beside it.
fn histogram(frame: &mut Frame<'_>, area: Rect, title: &str, acc: &DistAcc) {
    let block = Block::bordered().title(title.to_string());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if acc.count() == 0 {
        frame.render_widget(Paragraph::new("no data in this window").dim(), inner);
        return;
    }
    let [bars, table] = Layout::horizontal([Constraint::Min(20), Constraint::Length(16)]).areas(inner);
    let rows = buckets(acc);
    let max_log = rows.iter().map(|(_, c)| ((*c + 1) as f64).log10()).fold(0.0, f64::max).max(1e-9);
    let bar_width = bars.width.saturating_sub(16) as f64;
    let lines: Vec<Line<'_>> = rows
        .iter()
        .map(|(label, c)| {
            let len =
                if *c == 0 { 0 } else { ((((*c + 1) as f64).log10() / max_log) * bar_width).ceil().max(1.0) as usize };
            Line::from(vec![
                TextSpan::raw(format!("{label:>7} ")),
                TextSpan::styled("█".repeat(len), Style::new().fg(Color::Cyan)),
                TextSpan::raw(format!(" {}", compact(*c))),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), bars);
    frame.render_widget(Paragraph::new(percentiles(&acc.summary())), table);
}

fn percentiles(s: &Summary) -> Vec<Line<'static>> {
    [("p50", s.p50), ("p90", s.p90), ("p99", s.p99), ("p99.9", s.p999), ("max", s.max)]
        .into_iter()
        .map(|(k, v)| Line::from(format!("{k:>5} {:>9}", d(v))))
        .chain(std::iter::once(Line::from(format!("{:>5} {:>9}", "n", compact(s.count)))))
        .collect()
}

/// 1234567 → `1.2M`.
fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn overview(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    let from_console = app.from_console();
    let w = app.stats();
    let [hists, middle, spark] =
        Layout::vertical([Constraint::Min(12), Constraint::Length(7), Constraint::Length(4)]).areas(area);
    let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(hists);
    histogram(frame, left, "Poll time", &w.poll);
    let (sched_title, sched) = if w.sched.count() == 0 && w.lag.count() > 0 {
        ("Scheduling latency (lag probe)", &w.lag)
    } else {
        ("Scheduling latency", &w.sched)
    };
    histogram(frame, right, sched_title, sched);

    let [workers, facts] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    let block = Block::bordered().title(if w.host_delay.is_zero() {
        "Workers busy"
    } else {
        "Workers busy (w: waiting for a CPU)"
    });
    let inner = block.inner(workers);
    frame.render_widget(block, workers);
    let waited = w.workers.iter().any(|wk| wk.host_share > 0.0);
    let bar = inner.width.saturating_sub(if waited { 27 } else { 20 }) as usize;
    let lines: Vec<Line<'_>> = w
        .workers
        .iter()
        .map(|wk| {
            let filled = (wk.busy * bar as f64).round() as usize;
            Line::from(vec![
                TextSpan::raw(format!("{:<9}", clip_left(&wk.name, 9))),
                TextSpan::styled("▇".repeat(filled), Style::new().fg(Color::Green)),
                TextSpan::styled("·".repeat(bar.saturating_sub(filled)), Style::new().dim()),
                TextSpan::raw(format!(" {:>5.1}%", wk.busy * 100.0)),
                TextSpan::styled(
                    if wk.host_share > 0.0 { format!(" {:>4.0}%w", wk.host_share * 100.0) } else { String::new() },
                    Style::new().fg(Color::Yellow),
                ),
            ])
        })
        .collect();
    if from_console {
        let note = "tokio-console has no per-worker figures: they need the loopscope recorder";
        frame.render_widget(Paragraph::new(note).dim().wrap(Wrap { trim: true }), inner);
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
    let stalls_style = if w.stalls > 0 { Style::new().fg(Color::Red).bold() } else { Style::new() };
    let mut facts_lines = vec![
        Line::from(vec![TextSpan::raw("stalls        "), TextSpan::styled(w.stalls.to_string(), stalls_style)]),
        Line::from(format!("tasks alive   {}", compact(w.tasks_alive.last().copied().unwrap_or(0)))),
        Line::from(format!("global queue  {}   local max {}", w.global_queue, w.local_queue_max)),
        Line::from(format!("blocking pool {}   sites {}", w.blocking_threads, w.sites.len())),
    ];
    if !w.host_delay.is_zero() {
        // The host's share beside scheduling latency: a wait for a CPU is not the program's.
        facts_lines.insert(
            1,
            Line::from(format!(
                "host          workers waited {} for a CPU ({:.0}% of their time)",
                d(w.host_delay),
                w.host_share() * 100.0
            ))
            .style(Style::new().fg(Color::Yellow)),
        );
    }
    frame.render_widget(
        Paragraph::new(facts_lines).wrap(Wrap { trim: true }).block(Block::bordered().title("Runtime")),
        facts,
    );

    let [polls, tasks] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(spark);
    sparkline(frame, polls, "Polls/s", &w.polls_per_s);
    sparkline(frame, tasks, "Tasks alive", &w.tasks_alive);
}

/// The newest values that fit, titled with the newest value.
fn sparkline(frame: &mut Frame<'_>, area: Rect, title: &str, data: &[u64]) {
    let last = data.last().copied().unwrap_or(0);
    sparkline_titled(frame, area, &format!("{title} {}", compact(last)), data);
}

fn sparkline_titled(frame: &mut Frame<'_>, area: Rect, title: &str, data: &[u64]) {
    let width = area.width.saturating_sub(2) as usize;
    let tail = &data[data.len().saturating_sub(width)..];
    let block = Block::bordered().title(title.to_string());
    frame.render_widget(Sparkline::default().block(block).data(tail).style(Style::new().fg(Color::Yellow)), area);
}

/// The first row shown and how many fit under a table's header, keeping `sel` in view.
fn scroll(sel: usize, inner: Rect) -> (usize, usize) {
    let visible = inner.height.saturating_sub(1) as usize;
    (sel.saturating_sub(visible.saturating_sub(1)), visible)
}

/// The columns that fit: all from 150 columns, the essential ones below.
fn columns_for(width: u16) -> Vec<Column> {
    if width >= 150 {
        Column::ALL.to_vec()
    } else {
        vec![
            Column::Site,
            Column::Total,
            Column::Polls,
            Column::Busy,
            Column::PollP99,
            Column::SchedP99,
            Column::Stalls,
        ]
    }
}

fn sites(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    let cols = columns_for(area.width);
    let rows: Vec<usize> = app.site_rows().to_vec();
    let (sel, sort, desc) = (app.site_sel, app.sort, app.descending);
    let filter = app.filter.clone();
    let w = app.stats();
    let title = format!(
        "Spawn sites: {} of {} (sort: {} {}){}",
        rows.len(),
        w.sites.len(),
        sort.title(),
        if desc { "↓" } else { "↑" },
        if filter.is_empty() { String::new() } else { format!(" filter: {filter}") }
    );
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let (offset, visible) = scroll(sel, inner);
    let site_width = inner.width.saturating_sub((cols.len() as u16 - 1) * 10).max(12) as usize;
    let header = Row::new(cols.iter().map(|c| {
        let t = c.title();
        let t = if *c == sort { format!("{t}{}", if desc { "↓" } else { "↑" }) } else { t.to_string() };
        Cell::from(t)
    }))
    .style(Style::new().bold());
    let body: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(pos, i)| {
            let r = &w.sites[*i];
            let cells = cols.iter().map(|c| match c {
                Column::Site => clip_left(&r.name, site_width),
                Column::Alive => compact(r.alive),
                Column::Total => format!("{}/{}", compact(r.alive), compact(r.total)),
                Column::Polls => compact(r.polls),
                Column::Busy => format!("{:.1}%", r.busy_pct),
                Column::PollP50 => d(r.poll.p50),
                Column::PollP99 => d(r.poll.p99),
                Column::PollMax => d(r.poll.max),
                Column::SchedP50 => d(r.sched.p50),
                Column::SchedP99 => d(r.sched.p99),
                Column::SchedMax => d(r.sched.max),
                Column::Slow => compact(r.slow),
                Column::Stalls => r.stalls.to_string(),
            });
            let style = if pos == sel {
                Style::new().reversed()
            } else if r.stalls > 0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Row::new(cells).style(style)
        })
        .collect();
    let widths: Vec<Constraint> =
        cols.iter().map(|c| if *c == Column::Site { Constraint::Min(12) } else { Constraint::Length(9) }).collect();
    frame.render_widget(Table::new(body, widths).header(header).block(block), area);
}

fn detail(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    let Some(id) = app.detail_site else { return };
    let (start, end) = app.window_range();
    let row = app.stats().sites.iter().find(|r| r.id == id).cloned();
    let (Some(row), Some((poll, sched))) = (row, app.site_dists(id)) else {
        frame.render_widget(Paragraph::new("this site has no data in the window").block(Block::bordered()), area);
        return;
    };
    let t = &app.timeline;
    let (mut p99_poll, mut p99_sched) = (Vec::new(), Vec::new());
    for i in t.intervals.iter().take(end).skip(start) {
        let s = i.sites.iter().find(|s| s.site == id);
        let p99 = |d: Option<&loopscope_core::dist::Dist>| d.map_or(0, |d| summary_of(d).p99.as_micros() as u64);
        p99_poll.push(p99(s.map(|s| &s.poll)));
        p99_sched.push(p99(s.map(|s| &s.sched)));
    }
    let [head, hists, over_time, stall_area] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(10), Constraint::Length(4), Constraint::Length(5)])
            .areas(area);
    let text = format!(
        "{}   tasks {}/{}   polls {}   busy {:.1}%   slow {}   stalls {}",
        row.name, row.alive, row.total, row.polls, row.busy_pct, row.slow, row.stalls
    );
    frame.render_widget(Paragraph::new(text).block(Block::bordered().title("Spawn site (Esc: back)")), head);
    let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(hists);
    histogram(frame, l, "Poll time", &poll);
    histogram(frame, r, "Scheduling latency", &sched);
    let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(over_time);
    let peak = |v: &[u64]| d(Duration::from_micros(v.iter().copied().max().unwrap_or(0)));
    sparkline_titled(frame, l, &format!("poll p99 per interval, peak {}", peak(&p99_poll)), &p99_poll);
    sparkline_titled(frame, r, &format!("sched p99 per interval, peak {}", peak(&p99_sched)), &p99_sched);
    // The program's stalls: what the host caused is counted, not listed.
    let (host, mine): (Vec<_>, Vec<_>) = t
        .stalls
        .iter()
        .rev()
        .filter(|s| s.stall.site == Some(id))
        .partition(|s| crate::stalls::origin(s) == loopscope_core::stall::Origin::Host);
    let lines: Vec<Line<'_>> = mine
        .iter()
        .take(3)
        .map(|s| {
            Line::from(format!(
                "{} {} at {}",
                s.duration_ns.map_or("ongoing".into(), |n| d(Duration::from_nanos(n))),
                category(app, s.category),
                blocking_site(app, s.stall.blocking_site.as_deref(), "?")
            ))
        })
        .collect();
    let title = if host.is_empty() {
        "Its latest stalls".to_string()
    } else {
        format!("Its latest stalls (and {} the host caused)", host.len())
    };
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), stall_area);
}

fn stalls(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    use loopscope_core::stall::Origin;
    let rows = app.stall_rows();
    let sel = app.stall_sel.min(rows.len().saturating_sub(1));
    let t = &app.timeline;
    let count = |o: Origin| rows.iter().filter(|r| r.origin == o).map(|r| r.count).sum::<u64>();
    let (program, unattributed, host) = (count(Origin::Program), count(Origin::Unattributed), count(Origin::Host));
    let lines = rows.iter().filter(|r| r.origin == Origin::Program).count();
    let mut parts = Vec::new();
    if program > 0 {
        parts.push(format!("{program} at {lines} line{}", if lines == 1 { "" } else { "s" }));
    }
    if unattributed > 0 {
        parts.push(if app.from_console() {
            format!("{unattributed} long polls")
        } else {
            format!("{unattributed} without a line")
        });
    }
    if host > 0 {
        parts.push(format!("{host} the host caused"));
    }
    let mut title =
        format!("Stalls in the window: {}", if parts.is_empty() { "none".into() } else { parts.join(", ") });
    title.push_str(&format!(
        " — {} by {} (a: {}, s: sort, Enter: stack and source)",
        if app.stall_groups { "grouped" } else { "each" },
        app.stall_sort.label(),
        if app.stall_groups { "each stall" } else { "group by line" },
    ));
    let block = Block::bordered().title(title);
    if rows.is_empty() {
        frame.render_widget(Paragraph::new("No poll blocked a worker in this window.").block(block), area);
        return;
    }
    let inner = block.inner(area);
    let (offset, visible) = scroll(sel, inner);
    // count or time, category, total or duration, max or worker, then the two sites share the rest.
    let site_w = (inner.width.saturating_sub(9 + 15 + 9 + 9 + 5) / 2).max(10) as usize;
    let header = if app.stall_groups {
        ["count", "category", "total", "max", "blocking site", "spawn site"]
    } else {
        ["time", "category", "duration", "worker", "blocking site", "spawn site"]
    };
    let body: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(pos, r)| {
            let latest = &t.stalls[r.latest];
            let (first, fourth) = if app.stall_groups {
                (r.count.to_string(), d(Duration::from_nanos(r.max_ns)))
            } else {
                let worker = if app.from_console() { "-".to_string() } else { latest.stall.worker.to_string() };
                (format!("{:.3}s", latest.stall.started_ns as f64 / 1e9), worker)
            };
            let total = if r.ongoing > 0 && r.count == r.ongoing {
                "ongoing".to_string()
            } else {
                d(Duration::from_nanos(r.total_ns))
            };
            let blocking = r.blocking.as_deref().map(|b| t.display_path(b));
            let cells = [
                first,
                category(app, r.category).to_string(),
                total,
                fourth,
                clip_left(&blocking_site(app, blocking, "-"), site_w),
                r.site.map_or("-".into(), |id| clip_left(&t.site_name(id), site_w)),
            ];
            let style = match (pos == sel, r.origin) {
                (true, _) => Style::new().reversed(),
                (false, Origin::Host) => Style::new().dim(),
                (false, _) => Style::new(),
            };
            Row::new(cells).style(style)
        })
        .collect();
    let widths = [
        Constraint::Length(9),
        Constraint::Length(15),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(site_w as u16),
        Constraint::Length(site_w as u16),
    ];
    frame.render_widget(
        Table::new(body, widths)
            .header(header.map(Cell::from).into_iter().collect::<Row<'_>>().style(Style::new().bold()))
            .block(block),
        area,
    );
}

/// A stall's category; tokio-console data only tells that a poll was long.
fn category(app: &App, c: StallCategory) -> &'static str {
    if app.from_console() { "long poll" } else { c.name() }
}

/// "worker N"; tokio-console data does not say which worker.
fn worker(app: &App, id: u32) -> String {
    if app.from_console() { "an unknown worker".into() } else { format!("worker {id}") }
}

/// A stall's blocking line, or what stands in for it.
fn blocking_site(app: &App, site: Option<&str>, none: &str) -> String {
    match (site, &app.source) {
        (Some(s), _) => s.to_string(),
        (None, Source::Console(_)) => "needs loopscope recorder".to_string(),
        (None, _) => none.to_string(),
    }
}

/// Largest source file read for the excerpt (a recording names paths; it must not make the
/// TUI read a device or a huge file).
const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// Lines of a source file around `line` (1-based), if it is a readable regular file.
fn source_lines(file: &str, line: u32, around: u32) -> Option<Vec<(u32, String)>> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() || meta.len() > MAX_SOURCE_BYTES {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let (from, to) = (line.saturating_sub(around).max(1), line.saturating_add(around));
    Some(
        text.lines()
            .enumerate()
            .map(|(i, l)| (i as u32 + 1, l.to_string()))
            .skip_while(|(n, _)| *n < from)
            .take_while(|(n, _)| *n <= to)
            .collect(),
    )
}

fn stall_detail(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let Some(s) = app.detail_stall.and_then(|id| app.timeline.stalls.iter().find(|s| s.stall.id == id)) else {
        return;
    };
    let st = &s.stall;
    let console = app.from_console();
    let spawn_site = st.site.map_or("-".into(), |id| app.timeline.site_name(id));
    let mut lines = vec![
        Line::from(vec![
            TextSpan::styled(category(app, s.category).to_string(), Style::new().fg(Color::Red).bold()),
            TextSpan::raw(format!(
                " for {} on {} at {:.3}s{}",
                s.duration_ns.map_or("(ongoing)".into(), |n| d(Duration::from_nanos(n))),
                worker(app, st.worker),
                st.started_ns as f64 / 1e9,
                match (st.late, console) {
                    (false, _) => "",
                    (true, false) => " (raised late)",
                    (true, true) => " (seen in its task's histogram: start within the interval)",
                }
            )),
        ]),
        Line::from(format!(
            "blocking site  {}",
            blocking_site(app, st.blocking_site.as_deref().map(|b| app.timeline.display_path(b)), "-")
        )),
    ];
    if console {
        lines.push(Line::from(format!("spawn site     {spawn_site}")));
    } else {
        lines.push(Line::from(format!("call           {}", st.call.as_deref().unwrap_or("-"))));
        lines.push(Line::from(format!(
            "spawn site     {spawn_site}   syscall {}   fd {}   cpu {}%",
            st.syscall.as_deref().unwrap_or("-"),
            st.fd_target.as_deref().unwrap_or("-"),
            st.cpu_percent
        )));
    }
    lines.push(Line::from(""));
    if let Some((file, line)) = st.blocking_site.as_deref().and_then(|b| b.rsplit_once(':'))
        && let Ok(line) = line.parse::<u32>()
    {
        match source_lines(file, line, 3) {
            Some(src) => {
                if let Some(note) = newer_than_the_program(&app.timeline, file) {
                    lines.push(Line::from(note).style(Style::new().fg(Color::Yellow)));
                }
                for (n, text) in src {
                    let style = if n == line {
                        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
                    } else {
                        Style::new().dim()
                    };
                    lines.push(Line::styled(format!("{}{n:>5} │ {text}", if n == line { "▶" } else { " " }), style));
                }
            }
            None => lines.push(Line::from(format!("(source {file} is not readable here)").dim())),
        }
        lines.push(Line::from(""));
    }
    lines.push(
        Line::from(format!(
            "Stack (innermost first; ▶ the program's own code; x: {}):",
            if app.all_frames { "fold the library's frames" } else { "every frame" }
        ))
        .bold(),
    );
    lines.extend(stack_lines(&app.timeline, &st.stack, app.all_frames));
    if st.stack.is_empty() {
        lines.push(Line::from(if app.from_console() {
            "  (tokio-console data has no stacks: the category, blocking line and stack need the loopscope recorder)"
        } else {
            "  (no stack was captured)"
        }));
    }
    let para = Paragraph::new(lines)
        .block(Block::bordered().title("Stall (Esc: back, ↑↓ scroll)"))
        .wrap(Wrap { trim: false })
        .scroll((app.detail_scroll as u16, 0));
    frame.render_widget(para, area);
}

/// A stack as a person reads it: short names, the program's frames marked, runs of library frames
/// (std, tokio, ...) folded into one line unless `all` is asked for.
fn stack_lines(t: &crate::Timeline, stack: &[loopscope_core::model::StackFrame], all: bool) -> Vec<Line<'static>> {
    use loopscope_core::stall::{is_library, short_name};
    let mut out = Vec::new();
    let mut folded: Vec<&loopscope_core::model::StackFrame> = Vec::new();
    let flush = |folded: &mut Vec<&loopscope_core::model::StackFrame>, out: &mut Vec<Line<'static>>| {
        if folded.is_empty() {
            return;
        }
        let mut crates: Vec<String> = Vec::new();
        for f in folded.iter() {
            let name = f.object.clone().unwrap_or_else(|| {
                short_name(&f.function).trim_start_matches(['<', '&']).split("::").next().unwrap_or("").to_string()
            });
            if !crates.contains(&name) && crates.len() < 4 {
                crates.push(name);
            }
        }
        out.push(
            Line::from(format!(
                "    … {} frame{} in {}",
                folded.len(),
                if folded.len() == 1 { "" } else { "s" },
                crates.join(", ")
            ))
            .dim(),
        );
        folded.clear();
    };
    for f in stack {
        let at = f
            .location()
            .map(|l| t.display_path(&l).to_string())
            .unwrap_or_else(|| f.object.clone().unwrap_or_default());
        if is_library(f) {
            if all {
                out.push(Line::from(format!("    {}  {at}", short_name(&f.function))).dim());
            } else {
                folded.push(f);
            }
            continue;
        }
        flush(&mut folded, &mut out);
        out.push(Line::from(format!("  ▶ {}  {at}", short_name(&f.function))).style(Style::new().bold()));
    }
    flush(&mut folded, &mut out);
    out
}

/// Says so when a source file changed after the program was built (or, without the program's
/// file, after the recording started): the line shown may have moved.
fn newer_than_the_program(t: &crate::Timeline, file: &str) -> Option<String> {
    let source = std::fs::metadata(file).ok()?.modified().ok()?;
    let program = t.modules.iter().find(|m| m.main).and_then(|m| std::fs::metadata(&m.path).ok()?.modified().ok());
    let reference = program.or_else(|| {
        let start = t.header.as_ref()?.start_unix_ns;
        Some(std::time::UNIX_EPOCH + Duration::from_nanos(start))
    })?;
    (source > reference).then(|| {
        format!(
            "(this source file changed after the program was {}: the line shown may have moved)",
            if program.is_some() { "built" } else { "recorded" }
        )
    })
}

fn help(frame: &mut Frame<'_>, area: Rect) {
    let width = 72.min(area.width);
    let height = (KEYS.len() as u16 + 4).min(area.height);
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    frame.render_widget(Clear, popup);
    let lines: Vec<Line<'_>> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![TextSpan::styled(format!("{k:>16}  "), Style::new().bold()), TextSpan::raw(*what)])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::new().borders(Borders::ALL).title("Keys (? or Esc closes)").title_alignment(Alignment::Center),
        ),
        popup,
    );
}
