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
use crate::hot::{HotRow, Sampling, SpanRow};
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
        View::HotLines => hot_lines(frame, main, app),
        View::Tasks => crate::tasks_view::render(frame, main, app),
        View::LineDetail => line_detail(frame, main, app),
    }
    status(frame, bottom, app);
    if app.help {
        help(frame, main);
    }
}

fn d(v: Duration) -> String {
    fmt_duration(v)
}

pub(crate) fn clip_left(s: &str, width: usize) -> String {
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
    let hot_rows = app.site_hot_rows(id);
    let (with_stack, without_stack) = app.site_samples(id);
    let spans = app.site_spans(id);
    let t = &app.timeline;
    let (mut p99_poll, mut p99_sched) = (Vec::new(), Vec::new());
    for i in t.intervals.iter().take(end).skip(start) {
        let s = i.sites.iter().find(|s| s.site == id);
        let p99 = |d: Option<&loopscope_core::dist::Dist>| d.map_or(0, |d| summary_of(d).p99.as_micros() as u64);
        p99_poll.push(p99(s.map(|s| &s.poll)));
        p99_sched.push(p99(s.map(|s| &s.sched)));
    }
    let text = format!(
        "{}   tasks {}/{}   polls {}   busy {:.1}%   slow {}   stalls {}",
        row.name, row.alive, row.total, row.polls, row.busy_pct, row.slow, row.stalls
    );
    let has_hot = with_stack + without_stack > 0;
    if !has_hot && spans.is_empty() {
        let [head, hists, over_time, stall_area] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(10),
            Constraint::Length(4),
            Constraint::Length(5),
        ])
        .areas(area);
        frame.render_widget(Paragraph::new(text).block(Block::bordered().title("Spawn site (Esc: back)")), head);
        site_histograms(frame, hists, &poll, &sched);
        site_over_time(frame, over_time, &p99_poll, &p99_sched);
        site_stalls(frame, stall_area, app, id);
        return;
    }
    // With hot lines or spans: the histograms give way first (their percentiles stay in the
    // head), then the stalls and the figures over time.
    let (n_hot, n_spans) = (hot_rows.len().max(1) as u16, spans.len() as u16);
    let mut left = area.height;
    // Up to `want` rows, if at least `need` are left.
    let mut take = |want: u16, need: u16| {
        if left < need {
            return 0;
        }
        let got = want.min(left);
        left -= got;
        got
    };
    let head_h = take(4, 0);
    let mut hot_h = if has_hot { take(4 + n_hot.min(3), 0) } else { 0 };
    let mut span_h = if spans.is_empty() { 0 } else { take(3 + n_spans.min(2), 0) };
    let mut hist_h = take(8, 8);
    let stall_h = if row.stalls > 0 || t.stalls.iter().any(|s| s.stall.site == Some(id)) { take(5, 5) } else { 0 };
    if has_hot {
        hot_h += take(n_hot.min(10) - n_hot.min(3), 0);
    }
    if !spans.is_empty() {
        span_h += take(n_spans.min(6) - n_spans.min(2), 0);
    }
    let spark_h = take(4, 4);
    // What is left: more bars, or more room for the hot lines.
    if hist_h > 0 {
        hist_h += take(u16::MAX, 0);
    } else if has_hot {
        hot_h += take(u16::MAX, 0);
    }
    let [head, hists, over_time, hot_area, span_area, stall_area] = Layout::vertical([
        Constraint::Length(head_h),
        Constraint::Length(hist_h),
        Constraint::Length(spark_h),
        Constraint::Length(hot_h),
        Constraint::Length(span_h),
        Constraint::Length(stall_h),
    ])
    .areas(area);
    let (p, s) = (poll.summary(), sched.summary());
    let figures = format!(
        "poll p50 {} p99 {} max {}   sched p50 {} p99 {} max {}",
        d(p.p50),
        d(p.p99),
        d(p.max),
        d(s.p50),
        d(s.p99),
        d(s.max)
    );
    frame.render_widget(
        Paragraph::new(vec![Line::from(text), Line::from(figures)])
            .block(Block::bordered().title("Spawn site (Esc: back)")),
        head,
    );
    if hist_h > 0 {
        site_histograms(frame, hists, &poll, &sched);
    }
    if spark_h > 0 {
        site_over_time(frame, over_time, &p99_poll, &p99_sched);
    }
    if hot_h > 0 {
        site_hot_lines(frame, hot_area, app, &hot_rows, (with_stack, without_stack));
    }
    if span_h > 0 {
        site_spans(frame, span_area, &spans);
    }
    if stall_h > 0 {
        site_stalls(frame, stall_area, app, id);
    }
}

fn site_histograms(frame: &mut Frame<'_>, area: Rect, poll: &DistAcc, sched: &DistAcc) {
    let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    histogram(frame, l, "Poll time", poll);
    histogram(frame, r, "Scheduling latency", sched);
}

fn site_over_time(frame: &mut Frame<'_>, area: Rect, p99_poll: &[u64], p99_sched: &[u64]) {
    let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let peak = |v: &[u64]| d(Duration::from_micros(v.iter().copied().max().unwrap_or(0)));
    sparkline_titled(frame, l, &format!("poll p99 per interval, peak {}", peak(p99_poll)), p99_poll);
    sparkline_titled(frame, r, &format!("sched p99 per interval, peak {}", peak(p99_sched)), p99_sched);
}

/// A site's latest stalls: what the host caused is counted, not listed.
fn site_stalls(frame: &mut Frame<'_>, area: Rect, app: &App, id: u32) {
    let (host, mine): (Vec<_>, Vec<_>) = app
        .timeline
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
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), area);
}

/// `12.5%`.
fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A span's `target::name`, or `-`.
fn span_name(t: &crate::Timeline, span: Option<u32>) -> String {
    match span {
        None => "-".into(),
        Some(s) => t.spans.get(s as usize).map_or_else(|| format!("span #{s}"), |d| d.path()),
    }
}

/// `N samples`.
fn sampled(samples: u64) -> String {
    format!("{} sample{}", samples, if samples == 1 { "" } else { "s" })
}

/// What one sample stands for, on a hot-lines table's bottom border.
fn per_sample(sampling: &Sampling) -> String {
    format!("one sample: {} of a poll running past {}", d(sampling.period), d(sampling.threshold))
}

/// The selected hot line's function (when its table has no room for it), category, span and
/// call, under its table.
fn hot_line_info(t: &crate::Timeline, r: &HotRow, function: bool) -> Line<'static> {
    use loopscope_core::stall::short_name;
    let mut parts = Vec::new();
    if function {
        parts.push(r.function.as_deref().map_or("-".into(), short_name));
    }
    parts.push(r.category.name().to_string());
    if r.span.is_some() {
        parts.push(format!("span {}", span_name(t, r.span)));
    }
    if let Some(call) = &r.call {
        parts.push(format!("calls {}", short_name(call)));
    }
    Line::from(format!("▶ {}", parts.join(" · "))).dim()
}

/// Widths of text columns sharing `room`: each as wide as its widest text (`desired`) when all
/// fit, the first taking what is left; otherwise by weight, a column that needs less than its
/// part keeping what it needs and the rest shared again.
fn fit_widths(room: u16, desired: &[u16], weights: &[u16]) -> Vec<u16> {
    let n = desired.len();
    let mut widths = desired.to_vec();
    let total: u16 = desired.iter().sum();
    if total <= room {
        if let Some(first) = widths.first_mut() {
            *first += room - total;
        }
        return widths;
    }
    let mut settled = vec![false; n];
    let mut left = room;
    loop {
        let weight: u32 = (0..n).filter(|i| !settled[*i]).map(|i| u32::from(weights[i])).sum();
        if weight == 0 {
            break;
        }
        let share = |i: usize| (u32::from(left) * u32::from(weights[i]) / weight) as u16;
        let fits: Vec<usize> = (0..n).filter(|&i| !settled[i] && desired[i] <= share(i)).collect();
        if fits.is_empty() {
            for i in (0..n).filter(|i| !settled[*i]) {
                widths[i] = share(i);
            }
            break;
        }
        for i in fits {
            settled[i] = true;
            left -= desired[i];
        }
    }
    widths
}

/// A hot lines table (the site detail's, or every site's) with the selected row's category,
/// span and call (and its function, when the table has no room for it) under it.
fn hot_table(
    frame: &mut Frame<'_>,
    area: Rect,
    block: Block<'_>,
    app: &App,
    rows: &[&HotRow],
    sel: usize,
    all_sites: bool,
) {
    use loopscope_core::stall::short_name;
    let t = &app.timeline;
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    // The selected line's details under the table, when there is room for a row above them.
    let info_h = u16::from(inner.height >= 3);
    let [table_area, info_area] = Layout::vertical([Constraint::Min(0), Constraint::Length(info_h)]).areas(inner);
    let (offset, visible) = scroll(sel, table_area);
    let wide = inner.width >= 120;
    // samples, share, time, then (wide) category; the text columns share the rest.
    let mut header = vec!["samples", if all_sites { "of site" } else { "share" }, "time"];
    let mut widths = vec![Constraint::Length(7), Constraint::Length(7), Constraint::Length(8)];
    if wide {
        header.push("category");
        widths.push(Constraint::Length(14));
    }
    let (text_header, weights): (&[&str], &[u16]) = match (wide, all_sites) {
        (false, false) => (&["line", "function"], &[3, 2]),
        (false, true) => (&["line", "spawn site"], &[3, 2]),
        (true, false) => (&["line", "function", "calls", "span"], &[4, 4, 3, 2]),
        (true, true) => (&["line", "function", "calls", "span", "spawn site"], &[4, 4, 3, 2, 3]),
    };
    header.extend(text_header);
    let shown: Vec<(usize, &HotRow)> = rows.iter().copied().enumerate().skip(offset).take(visible).collect();
    let texts: Vec<Vec<String>> = shown
        .iter()
        .map(|(_, r)| {
            let line = r.line.as_deref().map_or("(library code only)", |l| t.display_path(l)).to_string();
            let function = r.function.as_deref().map_or("-".into(), short_name);
            let site = r.site.map_or("-".into(), |s| t.site_name(s));
            let call = || r.call.as_deref().map_or("-".into(), short_name);
            match (wide, all_sites) {
                (false, false) => vec![line, function],
                (false, true) => vec![line, site],
                (true, false) => vec![line, function, call(), span_name(t, r.span)],
                (true, true) => vec![line, function, call(), span_name(t, r.span), site],
            }
        })
        .collect();
    let desired: Vec<u16> = (0..text_header.len())
        .map(|k| {
            let widest = texts.iter().map(|row| row[k].chars().count()).max().unwrap_or(0);
            widest.max(text_header[k].len()).min(u16::MAX as usize) as u16
        })
        .collect();
    let spacing = (widths.len() + text_header.len()).saturating_sub(1) as u16;
    let fixed: u16 = if wide { 7 + 7 + 8 + 14 } else { 7 + 7 + 8 };
    let text_widths = fit_widths(inner.width.saturating_sub(fixed + spacing), &desired, weights);
    let last = text_header.len() - 1;
    let body: Vec<Row<'_>> = shown
        .iter()
        .zip(texts)
        .map(|((pos, r), texts)| {
            let mut cells = vec![compact(r.samples), pct(r.share), d(r.time)];
            if wide {
                cells.push(r.category.name().to_string());
            }
            cells.extend(texts.iter().zip(&text_widths).enumerate().map(|(k, (text, w))| {
                // Paths keep their end (the file and line), names their start.
                if k == 0 || (all_sites && k == last) {
                    clip_left(text, *w as usize)
                } else {
                    clip_right(text, *w as usize)
                }
            }));
            let style = if *pos == sel { Style::new().reversed() } else { Style::new() };
            Row::new(cells).style(style)
        })
        .collect();
    widths.extend(text_widths.iter().map(|w| Constraint::Length(*w)));
    frame.render_widget(Table::new(body, widths).header(Row::new(header).style(Style::new().bold())), table_area);
    if let Some(r) = rows.get(sel)
        && info_h > 0
    {
        frame.render_widget(hot_line_info(t, r, all_sites && !wide), info_area);
    }
}

/// `s` cut to `width` characters, keeping its start.
pub(crate) fn clip_right(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The site detail's hot lines.
fn site_hot_lines(frame: &mut Frame<'_>, area: Rect, app: &mut App, rows: &[usize], (with, without): (u64, u64)) {
    let sel = app.detail_hot_sel;
    app.hot_rows();
    let (Some(w), hot) = (app.last_stats(), app.last_hot_rows()) else { return };
    let mut title = format!("Hot lines: {}", sampled(with));
    if without > 0 {
        title.push_str(&format!(", {without} without a stack"));
    }
    title.push_str(" — Enter: source");
    let block = Block::bordered().title(title).title_bottom(per_sample(&w.sampling));
    let picked: Vec<&HotRow> = rows.iter().filter_map(|&i| hot.get(i)).collect();
    if picked.is_empty() {
        frame.render_widget(Paragraph::new("no sampled stack of this site was kept").dim().block(block), area);
        return;
    }
    hot_table(frame, area, block, app, &picked, sel, false);
}

/// The site detail's breakdown by span.
fn site_spans(frame: &mut Frame<'_>, area: Rect, spans: &[SpanRow]) {
    /// The figure columns: title, width, value.
    type Figure = (&'static str, u16, fn(&SpanRow) -> String);
    let block = Block::bordered().title("By span: poll time inside each span (share of the site's poll time)");
    let inner = block.inner(area);
    let mut figures: Vec<Figure> = vec![
        ("polls", 7, |s| compact(s.polls)),
        ("busy", 9, |s| d(s.busy)),
        ("share", 7, |s| pct(s.share)),
        ("p50", 9, |s| d(s.poll.p50)),
        ("p99", 9, |s| d(s.poll.p99)),
        ("max", 9, |s| d(s.poll.max)),
    ];
    let room = |f: &[Figure]| inner.width.saturating_sub(f.iter().map(|(_, w, _)| w + 1).sum::<u16>());
    // On a narrow terminal the span's name keeps room: p50, then busy time, then polls give way.
    for drop in ["p50", "busy", "polls"] {
        if room(&figures) >= 16 {
            break;
        }
        figures.retain(|(title, _, _)| *title != drop);
    }
    let span_w = room(&figures).max(8);
    let header = Row::new(std::iter::once("span").chain(figures.iter().map(|(t, _, _)| *t))).style(Style::new().bold());
    let body: Vec<Row<'_>> = spans
        .iter()
        .take(inner.height.saturating_sub(1) as usize)
        .map(|s| {
            Row::new(std::iter::once(clip_left(&s.name, span_w as usize)).chain(figures.iter().map(|(_, _, f)| f(s))))
        })
        .collect();
    let widths: Vec<Constraint> = std::iter::once(Constraint::Length(span_w))
        .chain(figures.iter().map(|(_, w, _)| Constraint::Length(*w)))
        .collect();
    frame.render_widget(Table::new(body, widths).header(header).block(block), area);
}

/// Every site's hot lines, the most samples first.
fn hot_lines(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    let n = app.hot_rows().len();
    app.hot_sel = app.hot_sel.min(n.saturating_sub(1));
    let sel = app.hot_sel;
    let (Some(w), hot) = (app.last_stats(), app.last_hot_rows()) else { return };
    let s = &w.sampling;
    let with = s.samples - s.without_stack;
    let mut lines = hot.iter().filter_map(|r| r.line.as_ref()).collect::<Vec<_>>();
    lines.sort();
    lines.dedup();
    let mut sites = hot.iter().map(|r| r.site).collect::<Vec<_>>();
    sites.sort();
    sites.dedup();
    let mut title = format!(
        "Hot lines: {} at {} line{} of {} site{}",
        sampled(with),
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        sites.len(),
        if sites.len() == 1 { "" } else { "s" }
    );
    if s.without_stack > 0 {
        title.push_str(&format!(", {} without a stack", s.without_stack));
    }
    if s.skipped > 0 {
        title.push_str(&format!(", {} skipped past the budget", s.skipped));
    }
    title.push_str(" — Enter: the site");
    if hot.is_empty() {
        let text = if app.from_console() {
            "tokio-console data has no stacks: sampling slow polls needs the loopscope recorder"
        } else {
            "No slow poll was sampled in this window. The recorder samples the stacks of polls that run past its \
             sampling threshold (1 ms by default) and below the stall threshold."
        };
        let block = Block::bordered().title("Hot lines in the window");
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
        return;
    }
    let rows: Vec<&HotRow> = hot.iter().collect();
    hot_table(frame, area, Block::bordered().title(title).title_bottom(per_sample(s)), app, &rows, sel, true);
}

/// One hot line of a site: its figures, its source, and the stack sampled most often there.
fn line_detail(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    use loopscope_core::stall::short_name;
    let Some((r, in_window)) = app.line_row() else { return };
    let t = &app.timeline;
    let shown = r.line.as_deref().map_or("(library code only)", |l| t.display_path(l));
    let mut lines = vec![
        Line::from(vec![
            TextSpan::styled(shown.to_string(), Style::new().fg(Color::Yellow).bold()),
            TextSpan::raw(format!("  in {}", r.function.as_deref().map_or("-".into(), short_name))),
        ]),
        Line::from(format!(
            "calls {}   category {}   span {}",
            r.call.as_deref().map_or("-".into(), short_name),
            r.category.name(),
            span_name(t, r.span)
        )),
        Line::from(format!(
            "{} sample{}, {} of the site's samples with a stack: {} of slow polls' time{}",
            r.samples,
            if r.samples == 1 { "" } else { "s" },
            pct(r.share),
            d(r.time),
            if in_window { "" } else { " (as opened: not in this window)" }
        )),
        Line::from(format!("spawn site {}", r.site.map_or("-".into(), |s| t.site_name(s)))),
        Line::from(""),
    ];
    if let Some((file, line)) = r.file_line() {
        source_excerpt(t, file, line, &mut lines);
    }
    lines.push(
        Line::from(format!(
            "The stack sampled most often here (innermost first; ▶ the program's own code; x: {}):",
            if app.all_frames { "fold the library's frames" } else { "every frame" }
        ))
        .bold(),
    );
    match crate::hot::heaviest_stack(t, &r) {
        Some(stack) if !stack.is_empty() => lines.extend(stack_lines(t, stack, app.all_frames)),
        _ => lines.push(Line::from("  (no longer kept)").dim()),
    }
    let para = Paragraph::new(lines)
        .block(Block::bordered().title("Hot line (Esc: back, ↑↓ scroll)"))
        .wrap(Wrap { trim: false })
        .scroll((app.detail_scroll as u16, 0));
    frame.render_widget(para, area);
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
        source_excerpt(&app.timeline, file, line, &mut lines);
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

/// The lines of a source file around `line`, the line marked `▶`, flagged when the file changed
/// after the program was built; or a note that the file is not readable here. Ends with a blank
/// line.
fn source_excerpt(t: &crate::Timeline, file: &str, line: u32, lines: &mut Vec<Line<'static>>) {
    match source_lines(file, line, 3) {
        Some(src) => {
            if let Some(note) = newer_than_the_program(t, file) {
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

#[cfg(test)]
mod tests {
    use super::fit_widths;

    #[test]
    fn text_columns_fit_their_text_or_share_by_weight() {
        // All fit: each as wide as its text, the first taking the rest.
        assert_eq!(fit_widths(50, &[10, 8, 6], &[3, 2, 1]), vec![36, 8, 6]);
        // Too wide: the short column keeps what it needs, the others share the rest by weight.
        assert_eq!(fit_widths(30, &[40, 5, 40], &[1, 1, 1]), vec![12, 5, 12]);
        assert_eq!(fit_widths(0, &[4, 4], &[1, 1]), vec![0, 0]);
        assert!(fit_widths(3, &[], &[]).is_empty());
    }
}
