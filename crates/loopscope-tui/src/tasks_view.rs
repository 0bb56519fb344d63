//! The Tasks view: what is stuck rather than slow. Alive tasks per spawn site and how long since
//! each was last polled, the idlest tasks, the latest task dump's groups with their await points,
//! and panics in tasks. The figures are core's (`loopscope_core::tasks`), as in the report.

use std::collections::BTreeMap;
use std::time::Duration;

use loopscope_core::tasks::{DumpReport, WaitingSite};
use loopscope_core::units::fmt_duration;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};

use crate::app::App;

fn d(v: Duration) -> String {
    fmt_duration(v)
}

/// Draws the view.
pub fn render(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    let panics = panics(app);
    let panic_rows = if panics.is_empty() { 0 } else { (panics.len() as u16).min(5) + 3 };
    let [waiting_area, dump_area, panic_area] =
        Layout::vertical([Constraint::Percentage(40), Constraint::Min(6), Constraint::Length(panic_rows)]).areas(area);
    waiting(frame, waiting_area, app);
    dump(frame, dump_area, app);
    if !panics.is_empty() {
        panic_table(frame, panic_area, &panics);
    }
}

fn waiting(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.timeline;
    let name = |id: Option<u32>| id.map(|i| t.site_name(i));
    let rows: Vec<WaitingSite> = t.tasks.waiting(name);
    let mut block = Block::bordered().title(format!(
        "Waiting tasks: {} spawn site{} (the latest figures; idle = since the task's last poll)",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    if let Some(i) = t.tasks.idlest(name).first() {
        block = block.title_bottom(format!(
            " idlest: task {} from {}, idle {}{} ",
            i.id,
            i.spawn_site.as_deref().map_or("-", |s| t.display_path(s)),
            d(i.idle),
            if i.never_polled { ", never polled" } else { "" }
        ));
    }
    if rows.is_empty() {
        let text = if t.tasks.followed() {
            "No task is alive (or none yet)."
        } else if app.from_console() {
            "tokio-console data has no per-task idle times: following tasks needs the loopscope recorder."
        } else {
            "This recording has no task ages (a loopscope before task following, or no task polled yet)."
        };
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
        return;
    }
    let inner = block.inner(area);
    let site_w = inner.width.saturating_sub(8 * 7 + 2).max(12);
    let body: Vec<Row<'_>> = rows
        .iter()
        .take(inner.height.saturating_sub(1) as usize)
        .map(|w| {
            let idle = w.idle.max >= Duration::from_secs(1);
            Row::new([
                crate::ui::clip_left(w.spawn_site.as_deref().map_or("-", |s| t.display_path(s)), site_w as usize),
                w.alive.to_string(),
                loopscope_core::tasks::fmt_percentile(w.idle.p50),
                d(w.idle.max),
                w.idle_over[0].to_string(),
                w.idle_over[1].to_string(),
                w.idle_over[2].to_string(),
                d(w.age.max),
            ])
            .style(if idle { Style::new().yellow() } else { Style::new() })
        })
        .collect();
    let widths = [
        Constraint::Length(site_w),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    let header = ["spawn site", "alive", "idle p50", "idle max", ">1s", ">10s", ">60s", "oldest"];
    frame.render_widget(
        Table::new(body, widths)
            .header(header.map(Cell::from).into_iter().collect::<Row<'_>>().style(Style::new().bold()))
            .block(block),
        area,
    );
}

fn dump(frame: &mut Frame<'_>, area: Rect, app: &mut App) {
    let t = &app.timeline;
    let report = |d: &loopscope_core::model::TaskDump| DumpReport::new(d, |id| id.map(|i| t.site_name(i)));
    let shown = t.tasks.shown_dump();
    let number = shown.map_or(0, |(n, _)| n);
    let latest = shown.map(|(_, d)| report(d));
    // A later dump that was not taken (refused, timed out), below the complete one shown.
    let later = t.tasks.dumps().last().filter(|_| number != t.tasks.dumps_total()).map(report);
    let can = if app.dumper.is_some() { " — d: take another" } else { "" };
    let Some(dump) = latest else {
        let text = if app.dumper.is_some() {
            "No task dump yet. d takes one: every task's await point, grouped by spawn site and trace \
             (the program's loopscope needs its `taskdump` feature)."
        } else {
            "No task dump in this session. A program whose loopscope has the `taskdump` feature takes one when a \
             site's tasks idle past the dump threshold, on request (d when attached, `loopscope dump --attach`) \
             or on SIGUSR2 (opt-in)."
        };
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(Block::bordered().title("Task dump")),
            area,
        );
        return;
    };
    let why = match (dump.trigger.as_str(), &dump.idle_site) {
        ("idle", Some(site)) => format!("tasks of {} idle", t.display_path(site)),
        (w, _) => w.to_string(),
    };
    if !dump.is_complete() {
        let stuck: Vec<String> = dump.stalled_workers.iter().map(|w| format!("worker {w}")).collect();
        let mut lines = vec![Line::from(format!("at {} ({why}): {}", d(dump.at), dump.outcome)).bold()];
        if let Some(detail) = &dump.detail {
            lines.push(Line::from(detail.clone()));
        }
        if !stuck.is_empty() {
            lines.push(Line::from(format!(
                "stuck in a poll: {} — the Stalls view (3) names the line",
                stuck.join(", ")
            )));
        }
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(format!("Task dump {number}{can}"))),
            area,
        );
        return;
    }
    let mut block = Block::bordered().title(format!(
        "Task dump {number} at {} ({why}): {} task{} in {} group{}{can}",
        d(dump.at),
        dump.tasks,
        if dump.tasks == 1 { "" } else { "s" },
        dump.groups.len(),
        if dump.groups.len() == 1 { "" } else { "s" }
    ));
    if dump.skipped > 0 {
        block =
            block.title_bottom(format!(" {} tasks left out past the recorder's caps (the idlest kept) ", dump.skipped));
    }
    if let Some(l) = &later {
        // The reason in full is in the report and `loopscope dump`; here, what and where to read.
        let stuck = if l.stalled_workers.is_empty() { "" } else { ", a worker stuck in a poll (Stalls view)" };
        block = block.title_bottom(format!(
            " dump {} at {}: {}{stuck} (docs/tasks.md) ",
            t.tasks.dumps_total(),
            d(l.at),
            l.outcome
        ));
    }
    let inner = block.inner(area);
    app.tasks_sel = app.tasks_sel.min(dump.groups.len().saturating_sub(1));
    let sel = app.tasks_sel;
    let visible = inner.height.saturating_sub(1) as usize;
    let offset = sel.saturating_sub(visible.saturating_sub(1));
    let site_w = (inner.width.saturating_sub(7 + 8 + 4) / 3).max(12);
    let at_w = inner.width.saturating_sub(7 + 8 + site_w + 4).max(12);
    let body: Vec<Row<'_>> = dump
        .groups
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, g)| {
            // Each path clipped on the left, so that the line number and the call stay in view.
            let at = g.waiting_at(|p| crate::ui::clip_left(t.display_path(p), (at_w as usize / 2).max(16)));
            Row::new([
                g.count.to_string(),
                crate::ui::clip_left(g.spawn_site.as_deref().map_or("-", |s| t.display_path(s)), site_w as usize),
                if g.idle.is_zero() { "-".into() } else { d(g.idle) },
                crate::ui::clip_right(&at, at_w as usize),
            ])
            .style(if i == sel { Style::new().reversed() } else { Style::new() })
        })
        .collect();
    let widths = [Constraint::Length(7), Constraint::Length(site_w), Constraint::Length(8), Constraint::Length(at_w)];
    frame.render_widget(
        Table::new(body, widths)
            .header(
                ["tasks", "spawn site", "idle", "waiting at"]
                    .map(Cell::from)
                    .into_iter()
                    .collect::<Row<'_>>()
                    .style(Style::new().bold()),
            )
            .block(block),
        area,
    );
}

/// Panics in the timeline's intervals, by (site, location, message), the most first.
fn panics(app: &App) -> Vec<(u64, String, String)> {
    let t = &app.timeline;
    let mut by: BTreeMap<(Option<u32>, Option<String>, String), u64> = BTreeMap::new();
    for i in &t.intervals {
        for p in &i.panics {
            let n = by.entry((p.site, p.location.clone(), p.message.clone())).or_default();
            *n = n.saturating_add(p.count);
        }
    }
    let mut rows: Vec<(u64, String, String)> = by
        .into_iter()
        .map(|((site, at, msg), n)| {
            let at = at.map_or_else(|| site.map_or("-".into(), |s| t.site_name(s)), |a| t.display_path(&a).to_string());
            (n, at, msg.lines().next().unwrap_or("").to_string())
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    rows
}

fn panic_table(frame: &mut Frame<'_>, area: Rect, rows: &[(u64, String, String)]) {
    let n = rows.iter().fold(0u64, |n, r| n.saturating_add(r.0));
    let block = Block::bordered().title(format!(
        "Panics in tasks: {n} (a task nobody awaits loses its panic: tokio keeps it for the JoinHandle)"
    ));
    let inner = block.inner(area);
    let at_w = (inner.width / 3).max(12);
    let body: Vec<Row<'_>> = rows
        .iter()
        .take(inner.height.saturating_sub(1) as usize)
        .map(|(n, at, msg)| Row::new([n.to_string(), crate::ui::clip_left(at, at_w as usize), msg.clone()]))
        .collect();
    let widths = [Constraint::Length(7), Constraint::Length(at_w), Constraint::Min(10)];
    frame.render_widget(
        Table::new(body, widths)
            .header(
                ["count", "at", "message"].map(Cell::from).into_iter().collect::<Row<'_>>().style(Style::new().bold()),
            )
            .block(block),
        area,
    );
}
