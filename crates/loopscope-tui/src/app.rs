//! The TUI's state and how keys change it: a pure key → [`Action`] mapping ([`map_key`]) and
//! [`App::apply`]. Nothing here draws or touches the terminal.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use loopscope_core::dist::DistAcc;

use crate::hot::{HotRow, SpanRow};
use crate::stalls::{StallRow, StallSort};
use crate::stats::{SiteRow, WindowAcc, WindowStats};
use crate::timeline::Timeline;

/// The screens, in Tab order (detail screens are reached with Enter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Runtime-wide histograms, workers, activity over time.
    Overview,
    /// The spawn-site table.
    Sites,
    /// One spawn site.
    Detail,
    /// Every stall.
    Stalls,
    /// One stall: its stack and source.
    StallDetail,
    /// The program's hot lines, every site's.
    HotLines,
    /// One hot line of a site: its source and heaviest stack.
    LineDetail,
    /// Alive tasks by site and how long they have waited, the latest task dump, panics.
    Tasks,
}

impl View {
    /// The views Tab cycles through.
    pub const TABS: [View; 5] = [View::Overview, View::Sites, View::Stalls, View::HotLines, View::Tasks];

    /// Title on the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Sites | View::Detail | View::LineDetail => "Spawn sites",
            View::Stalls | View::StallDetail => "Stalls",
            View::HotLines => "Hot lines",
            View::Tasks => "Tasks",
        }
    }
}

/// How much of the timeline the figures cover, ending at the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// From the start of the session.
    Whole,
    /// The last N seconds.
    Last(u32),
}

impl Span {
    /// The order `w` cycles through.
    pub const CYCLE: [Span; 4] = [Span::Whole, Span::Last(1), Span::Last(10), Span::Last(60)];

    /// Label for the status bar.
    pub fn label(self) -> String {
        match self {
            Span::Whole => "whole run".into(),
            Span::Last(n) => format!("last {n}s"),
        }
    }
}

/// Columns of the spawn-site table, in display order; each can be the sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// `file:line`.
    Site,
    /// Tasks alive.
    Alive,
    /// Tasks spawned.
    Total,
    /// Polls.
    Polls,
    /// Busy share.
    Busy,
    /// Poll p50.
    PollP50,
    /// Poll p99.
    PollP99,
    /// Poll max.
    PollMax,
    /// Scheduling latency p50.
    SchedP50,
    /// Scheduling latency p99.
    SchedP99,
    /// Scheduling latency max.
    SchedMax,
    /// Slow polls.
    Slow,
    /// Stalls.
    Stalls,
}

impl Column {
    /// Every column.
    pub const ALL: [Column; 13] = [
        Column::Site,
        Column::Alive,
        Column::Total,
        Column::Polls,
        Column::Busy,
        Column::PollP50,
        Column::PollP99,
        Column::PollMax,
        Column::SchedP50,
        Column::SchedP99,
        Column::SchedMax,
        Column::Slow,
        Column::Stalls,
    ];

    /// Header text.
    pub fn title(self) -> &'static str {
        match self {
            Column::Site => "site",
            Column::Alive => "alive",
            Column::Total => "tasks",
            Column::Polls => "polls",
            Column::Busy => "busy",
            Column::PollP50 => "poll p50",
            Column::PollP99 => "poll p99",
            Column::PollMax => "poll max",
            Column::SchedP50 => "sched p50",
            Column::SchedP99 => "sched p99",
            Column::SchedMax => "sched max",
            Column::Slow => "slow",
            Column::Stalls => "stalls",
        }
    }

    fn key(self, r: &SiteRow) -> u128 {
        match self {
            Column::Site => 0,
            Column::Alive => r.alive.into(),
            Column::Total => r.total.into(),
            Column::Polls => r.polls.into(),
            Column::Busy => (r.busy_pct * 1e6) as u128,
            Column::PollP50 => r.poll.p50.as_nanos(),
            Column::PollP99 => r.poll.p99.as_nanos(),
            Column::PollMax => r.poll.max.as_nanos(),
            Column::SchedP50 => r.sched.p50.as_nanos(),
            Column::SchedP99 => r.sched.p99.as_nanos(),
            Column::SchedMax => r.sched.max.as_nanos(),
            Column::Slow => r.slow.into(),
            Column::Stalls => r.stalls.into(),
        }
    }
}

/// Everything a key can ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave the TUI.
    Quit,
    /// Next tab.
    NextView,
    /// Previous tab.
    PrevView,
    /// A tab by number.
    Goto(View),
    /// Selection up / down by one, or by a page.
    Move(i32),
    /// Selection to the first / last row.
    MoveTo(bool),
    /// Timeline: one interval back (negative) or forward.
    Step(i32),
    /// Timeline: to the first interval.
    First,
    /// Timeline: to the newest interval, following live data again.
    Last,
    /// Pause or resume (live), play or stop (replay).
    TogglePause,
    /// Next window span.
    CycleSpan,
    /// Sort by the next column.
    NextSort,
    /// Reverse the sort order.
    ReverseSort,
    /// Start typing a filter.
    StartFilter,
    /// A character of the filter.
    FilterChar(char),
    /// Delete the filter's last character.
    FilterBackspace,
    /// Keep the filter and stop typing.
    FilterDone,
    /// Clear the filter and stop typing.
    FilterCancel,
    /// Open the selected row.
    Open,
    /// Stalls: grouped by line, or each one.
    ToggleStallGroups,
    /// Stall detail: every frame, or the library's folded.
    ToggleFrames,
    /// Back out of a detail screen or overlay.
    Back,
    /// Show or hide the help overlay.
    ToggleHelp,
    /// Ask the live program for a task dump.
    Dump,
}

/// The keys, for the help overlay: (keys, what they do).
pub const KEYS: &[(&str, &str)] = &[
    ("Tab / Shift-Tab", "next / previous view"),
    ("1 2 3 4 5", "overview, spawn sites, stalls, hot lines, tasks"),
    ("d", "live: take a task dump (shown in the Tasks view)"),
    ("↑ ↓  k j", "move the selection"),
    ("PgUp PgDn", "move a page"),
    ("Home End  g G", "timeline: first / newest interval (End follows live data)"),
    ("← →  h l", "timeline: one interval back / forward"),
    ("Space", "pause / resume (live), play / stop (replay)"),
    ("w", "window: whole run, last 1 s, 10 s, 60 s"),
    ("s  S", "sort by the next column / reverse the order (stalls: total, count, latest)"),
    ("a", "stalls: grouped by line, or each stall"),
    ("x", "stacks: show every frame, or fold the library's"),
    ("/", "filter spawn sites (Enter keeps, Esc clears)"),
    ("Enter", "open the selected row (hot lines: its site)"),
    ("↑ ↓  Enter", "site: pick a hot line, open its source and stack"),
    ("Esc  Backspace", "back"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit"),
];

/// The action a key asks for, given whether a filter is being typed and the help is shown.
pub fn map_key(key: KeyEvent, typing_filter: bool, help: bool) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if typing_filter {
        return match key.code {
            KeyCode::Enter => Some(Action::FilterDone),
            KeyCode::Esc => Some(Action::FilterCancel),
            KeyCode::Backspace => Some(Action::FilterBackspace),
            KeyCode::Char(c) if !ctrl => Some(Action::FilterChar(c)),
            _ => None,
        };
    }
    if help {
        return match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => Some(Action::ToggleHelp),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Tab => Action::NextView,
        KeyCode::BackTab => Action::PrevView,
        KeyCode::Char('1') => Action::Goto(View::Overview),
        KeyCode::Char('2') => Action::Goto(View::Sites),
        KeyCode::Char('3') => Action::Goto(View::Stalls),
        KeyCode::Char('4') => Action::Goto(View::HotLines),
        KeyCode::Char('5') => Action::Goto(View::Tasks),
        KeyCode::Char('d') => Action::Dump,
        KeyCode::Up | KeyCode::Char('k') => Action::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::Move(1),
        KeyCode::PageUp => Action::Move(-PAGE),
        KeyCode::PageDown => Action::Move(PAGE),
        KeyCode::Left | KeyCode::Char('h') => Action::Step(-1),
        KeyCode::Right | KeyCode::Char('l') => Action::Step(1),
        KeyCode::Home | KeyCode::Char('g') => Action::First,
        KeyCode::End | KeyCode::Char('G') => Action::Last,
        KeyCode::Char(' ') => Action::TogglePause,
        KeyCode::Char('w') => Action::CycleSpan,
        KeyCode::Char('s') => Action::NextSort,
        KeyCode::Char('a') => Action::ToggleStallGroups,
        KeyCode::Char('x') => Action::ToggleFrames,
        KeyCode::Char('S') => Action::ReverseSort,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc | KeyCode::Backspace => Action::Back,
        KeyCode::Char('?') => Action::ToggleHelp,
        _ => return None,
    })
}

/// Asks a live program for a task dump; an error says why it could not.
pub struct Dumper(pub Box<dyn Fn() -> Result<(), String> + Send>);

impl std::fmt::Debug for Dumper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dumper")
    }
}

/// Rows a page key moves.
pub const PAGE: i32 = 10;

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A recording file.
    Replay(String),
    /// The program running in this process.
    Live(String),
    /// A program serving its live data, at this address.
    Attached(String),
    /// A program running tokio-console's `console-subscriber`, at this URL: no per-worker figures,
    /// blocking lines, categories or stacks.
    Console(String),
}

/// The window's figures and the sums behind them, for (start, end, intervals dropped, stalls).
#[derive(Debug)]
struct Cache {
    key: (usize, usize, u64, usize),
    acc: WindowAcc,
    stats: WindowStats,
    /// The window's hot lines, once a view asked for them.
    hot: Option<Vec<HotRow>>,
}

/// The TUI's whole state.
#[derive(Debug)]
pub struct App {
    /// The data.
    pub timeline: Timeline,
    /// Where it comes from.
    pub source: Source,
    /// The screen shown.
    pub view: View,
    /// The last interval shown (a position in the timeline); `None`: the newest (follows live data).
    pub cursor: Option<usize>,
    /// Replay: advancing through the timeline in real time.
    pub playing: bool,
    /// The window ending at the cursor.
    pub span: Span,
    /// The site table's sort column.
    pub sort: Column,
    /// Largest first.
    pub descending: bool,
    /// Spawn-site filter (case-insensitive substring).
    pub filter: String,
    /// Typing the filter.
    pub typing_filter: bool,
    /// Selected row of the site table.
    pub site_sel: usize,
    /// Selected row of the stalls view.
    pub stall_sel: usize,
    /// Stalls grouped by line (or each one).
    pub stall_groups: bool,
    /// The stalls view's order.
    pub stall_sort: StallSort,
    /// Stall detail: every frame shown, the library's not folded.
    pub all_frames: bool,
    /// The site of the detail view.
    pub detail_site: Option<u32>,
    /// The stall of the stall detail view (its id).
    pub detail_stall: Option<u64>,
    /// Scroll of the stall and line detail views.
    pub detail_scroll: usize,
    /// Where Esc goes from the site detail (the site table, or the hot lines).
    pub detail_back: View,
    /// Selected row of the site detail's hot lines.
    pub detail_hot_sel: usize,
    /// Selected row of the hot lines view.
    pub hot_sel: usize,
    /// The hot line of the line detail view, as opened (the window's figures are shown when it
    /// is in the window).
    pub detail_line: Option<HotRow>,
    /// Help overlay shown.
    pub help: bool,
    /// Quit asked for.
    pub quit: bool,
    /// A message for the status bar (a disconnect, the end of the session).
    pub status: Option<String>,
    /// Asks the live program for a task dump (`None`: a recording, or a source without dumps).
    pub dumper: Option<Dumper>,
    /// Selected row of the tasks view.
    pub tasks_sel: usize,
    cache: Option<Cache>,
    rows: Vec<usize>,
}

impl App {
    /// A new state over a timeline.
    pub fn new(timeline: Timeline, source: Source) -> Self {
        App {
            timeline,
            source,
            view: View::Overview,
            cursor: None,
            playing: false,
            span: Span::Whole,
            sort: Column::Busy,
            descending: true,
            filter: String::new(),
            typing_filter: false,
            site_sel: 0,
            stall_sel: 0,
            stall_groups: true,
            stall_sort: StallSort::Total,
            all_frames: false,
            detail_site: None,
            detail_stall: None,
            detail_scroll: 0,
            detail_back: View::Sites,
            detail_hot_sel: 0,
            hot_sel: 0,
            detail_line: None,
            help: false,
            quit: false,
            status: None,
            dumper: None,
            tasks_sel: 0,
            cache: None,
            rows: Vec::new(),
        }
    }

    /// Whether the data comes from tokio-console (no per-worker figures, blocking lines,
    /// categories or stacks).
    pub fn from_console(&self) -> bool {
        matches!(self.source, Source::Console(_))
    }

    /// Groups of the latest task dump.
    pub fn dump_groups(&self) -> usize {
        self.timeline.tasks.shown_dump().map_or(0, |(_, d)| d.groups.len())
    }

    /// Whether the data is live (it can grow).
    pub fn is_live(&self) -> bool {
        matches!(self.source, Source::Live(_) | Source::Attached(_) | Source::Console(_))
    }

    /// Position of the last interval shown, if there is any.
    pub fn end_pos(&self) -> Option<usize> {
        let n = self.timeline.intervals.len();
        if n == 0 {
            return None;
        }
        Some(self.cursor.map_or(n - 1, |c| c.min(n - 1)))
    }

    /// The window `[start, end)` shown.
    pub fn window_range(&self) -> (usize, usize) {
        let Some(pos) = self.end_pos() else { return (0, 0) };
        let end = pos + 1;
        let start = match self.span {
            Span::Whole => 0,
            Span::Last(secs) => {
                let n = (u64::from(secs) * 1_000_000_000).div_ceil(self.timeline.interval_ns()) as usize;
                end.saturating_sub(n.max(1))
            }
        };
        (start, end)
    }

    /// The figures of the window (cached until the window or the data changes; a window that
    /// only grew at its end, as a live one does, is extended rather than recomputed).
    pub fn stats(&mut self) -> &WindowStats {
        let (start, end) = self.window_range();
        let key = (start, end, self.timeline.dropped_intervals, self.timeline.stalls.len());
        let fresh = matches!(&self.cache, Some(c) if c.key == key);
        if !fresh {
            let mut acc = match self.cache.take() {
                Some(c) if c.key.0 == start && c.key.2 == key.2 && c.key.1 <= end => c.acc,
                _ => WindowAcc::new(&self.timeline, start, start),
            };
            acc.extend(&self.timeline, end);
            let stats = acc.stats(&self.timeline);
            self.cache = Some(Cache { key, acc, stats, hot: None });
            self.resort();
        }
        &self.cache.as_ref().expect("just computed").stats
    }

    /// The figures as [`App::stats`] last computed them (render functions call that first, then
    /// read them beside the timeline).
    pub fn last_stats(&self) -> Option<&WindowStats> {
        self.cache.as_ref().map(|c| &c.stats)
    }

    /// One site's poll-time and scheduling-latency histograms over the window.
    pub fn site_dists(&mut self, id: u32) -> Option<(DistAcc, DistAcc)> {
        self.stats();
        self.cache.as_ref()?.acc.site_dists(id)
    }

    /// One site's samples over the window: (with a stack, without one).
    pub fn site_samples(&mut self, id: u32) -> (u64, u64) {
        self.stats();
        self.cache.as_ref().map_or((0, 0), |c| c.acc.hot().site_samples(Some(id)))
    }

    /// Indices into `stats().sites` of the site table's rows: filtered and sorted.
    pub fn site_rows(&mut self) -> &[usize] {
        self.stats();
        &self.rows
    }

    /// The window's hot lines, every site's, the most samples first (computed once per window).
    pub fn hot_rows(&mut self) -> &[HotRow] {
        self.stats();
        let Some(c) = &mut self.cache else { return &[] };
        c.hot.get_or_insert_with(|| c.acc.hot_rows(&self.timeline))
    }

    /// The hot lines as [`App::hot_rows`] last computed them (render functions call that first,
    /// then read them beside the timeline).
    pub fn last_hot_rows(&self) -> &[HotRow] {
        self.cache.as_ref().and_then(|c| c.hot.as_deref()).unwrap_or_default()
    }

    /// Positions in [`App::hot_rows`] of one site's hot lines (the most samples first); keeps the
    /// site detail's selection on a row that exists.
    pub fn site_hot_rows(&mut self, site: u32) -> Vec<usize> {
        let rows: Vec<usize> =
            self.hot_rows().iter().enumerate().filter(|(_, r)| r.site == Some(site)).map(|(i, _)| i).collect();
        self.detail_hot_sel = self.detail_hot_sel.min(rows.len().saturating_sub(1));
        rows
    }

    /// Poll time per `tracing` span of one site over the window, the busiest span first.
    pub fn site_spans(&mut self, id: u32) -> Vec<SpanRow> {
        self.stats();
        self.cache.as_ref().map_or_else(Vec::new, |c| c.acc.site_spans(&self.timeline, id))
    }

    /// The line detail's row: the window's figures for the line opened, or the figures it was
    /// opened with when it is not in the window.
    pub fn line_row(&mut self) -> Option<(HotRow, bool)> {
        let opened = self.detail_line.clone()?;
        match self.hot_rows().iter().find(|r| r.same(&opened)) {
            Some(r) => Some((r.clone(), true)),
            None => Some((opened, false)),
        }
    }

    /// Starts over with an empty timeline (a reconnect resends the session so far).
    pub fn reset(&mut self) {
        self.timeline.reset();
        self.cache = None;
        self.rows.clear();
        self.cursor = None;
        self.site_sel = 0;
        self.stall_sel = 0;
        self.hot_sel = 0;
        self.detail_hot_sel = 0;
    }

    fn resort(&mut self) {
        let Some(Cache { stats: w, .. }) = &self.cache else { return };
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<usize> = (0..w.sites.len())
            .filter(|i| needle.is_empty() || w.sites[*i].name.to_lowercase().contains(&needle))
            .collect();
        let (col, desc) = (self.sort, self.descending);
        rows.sort_by(|a, b| {
            let (ra, rb) = (&w.sites[*a], &w.sites[*b]);
            let ord = if col == Column::Site { ra.name.cmp(&rb.name) } else { col.key(ra).cmp(&col.key(rb)) };
            let ord = if desc { ord.reverse() } else { ord };
            ord.then_with(|| ra.name.cmp(&rb.name))
        });
        self.site_sel = self.site_sel.min(rows.len().saturating_sub(1));
        self.rows = rows;
    }

    /// The stalls view's rows over the window (grouped or each, the program's first); keeps the
    /// selection on a row that exists.
    pub fn stall_rows(&mut self) -> Vec<StallRow> {
        let (grouped, sort, console) = (self.stall_groups, self.stall_sort, self.from_console());
        let rows = crate::stalls::rows(&self.timeline, &self.window_stalls(), grouped, sort, console);
        self.stall_sel = self.stall_sel.min(rows.len().saturating_sub(1));
        rows
    }

    /// Stalls raised in the window (positions in the timeline's stall list, newest first).
    pub fn window_stalls(&self) -> Vec<usize> {
        let (start, end) = self.window_range();
        let t = &self.timeline;
        let (Some(a), Some(b)) = (t.intervals.get(start), end.checked_sub(1).and_then(|e| t.intervals.get(e))) else {
            return (0..t.stalls.len()).rev().collect();
        };
        let (from, to) = (a.start_ns, b.end_ns);
        let last = end == t.intervals.len();
        (0..t.stalls.len())
            .rev()
            .filter(|i| {
                let s = t.stalls[*i].stall.started_ns;
                // At the newest interval, stalls raised after it (still going) are shown too.
                s >= from && (s < to || last)
            })
            .collect()
    }

    /// Applies an action.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::ToggleHelp => self.help = !self.help,
            Action::Dump => {
                self.status = Some(match &self.dumper {
                    None if self.is_live() => "this source cannot take task dumps".into(),
                    None => "a recording holds the dumps taken while it ran (Tasks view); none can be taken now".into(),
                    Some(ask) => match (ask.0)() {
                        Ok(()) => "task dump asked for: the Tasks view (5) shows it when it comes".into(),
                        Err(e) => format!("task dump: {e}"),
                    },
                });
                self.view = View::Tasks;
            }
            Action::NextView | Action::PrevView => {
                let at = View::TABS.iter().position(|v| v.title() == self.view.title()).unwrap_or(0);
                let n = View::TABS.len();
                let next = if action == Action::NextView { (at + 1) % n } else { (at + n - 1) % n };
                self.view = View::TABS[next];
            }
            Action::Goto(v) => self.view = v,
            Action::Move(d) => self.move_selection(d),
            Action::MoveTo(top) => self.move_selection(if top { i32::MIN / 2 } else { i32::MAX / 2 }),
            Action::Step(d) => {
                self.playing = false;
                if let Some(pos) = self.end_pos() {
                    let n = self.timeline.intervals.len();
                    let to = (pos as i64 + i64::from(d)).clamp(0, n as i64 - 1) as usize;
                    self.cursor = Some(to);
                }
            }
            Action::First => {
                self.playing = false;
                if !self.timeline.intervals.is_empty() {
                    self.cursor = Some(0);
                }
            }
            Action::Last => {
                self.playing = false;
                self.cursor = if self.is_live() { None } else { self.timeline.intervals.len().checked_sub(1) };
            }
            Action::TogglePause => {
                if self.is_live() {
                    self.cursor = match self.cursor {
                        None => self.end_pos(),
                        Some(_) => None,
                    };
                } else {
                    self.playing = !self.playing;
                    if self.playing && self.end_pos() == Some(self.timeline.intervals.len().saturating_sub(1)) {
                        // Play from the start when at the end.
                        self.cursor = Some(0);
                    }
                }
            }
            Action::CycleSpan => {
                let at = Span::CYCLE.iter().position(|s| *s == self.span).unwrap_or(0);
                self.span = Span::CYCLE[(at + 1) % Span::CYCLE.len()];
            }
            Action::NextSort if self.view == View::Stalls => {
                let at = StallSort::CYCLE.iter().position(|c| *c == self.stall_sort).unwrap_or(0);
                self.stall_sort = StallSort::CYCLE[(at + 1) % StallSort::CYCLE.len()];
            }
            // Hot lines are always by samples.
            Action::NextSort | Action::ReverseSort if self.view == View::HotLines => {}
            Action::ToggleStallGroups => {
                self.stall_groups = !self.stall_groups;
                self.stall_sel = 0;
            }
            Action::ToggleFrames => self.all_frames = !self.all_frames,
            Action::NextSort => {
                let at = Column::ALL.iter().position(|c| *c == self.sort).unwrap_or(0);
                self.sort = Column::ALL[(at + 1) % Column::ALL.len()];
                self.descending = self.sort != Column::Site;
                self.resort();
            }
            Action::ReverseSort => {
                self.descending = !self.descending;
                self.resort();
            }
            Action::StartFilter => {
                self.view = if self.view == View::Detail { View::Sites } else { self.view };
                if self.view == View::Sites {
                    self.typing_filter = true;
                }
            }
            Action::FilterChar(c) => {
                self.filter.push(c);
                self.site_sel = 0;
                self.resort();
            }
            Action::FilterBackspace => {
                self.filter.pop();
                self.resort();
            }
            Action::FilterDone => self.typing_filter = false,
            Action::FilterCancel => {
                self.typing_filter = false;
                self.filter.clear();
                self.resort();
            }
            Action::Open => match self.view {
                View::Sites => {
                    let sel = self.site_sel;
                    let id = self.site_rows().get(sel).copied();
                    if let Some(i) = id {
                        let site = self.stats().sites[i].id;
                        self.open_site(site, View::Sites);
                    }
                }
                View::HotLines => {
                    let sel = self.hot_sel;
                    if let Some(site) = self.hot_rows().get(sel).and_then(|r| r.site) {
                        self.open_site(site, View::HotLines);
                    }
                }
                View::Detail => {
                    let Some(site) = self.detail_site else { return };
                    let rows = self.site_hot_rows(site);
                    if let Some(&i) = rows.get(self.detail_hot_sel) {
                        self.detail_line = Some(self.hot_rows()[i].clone());
                        self.detail_scroll = 0;
                        self.view = View::LineDetail;
                    }
                }
                View::Stalls => {
                    if let Some(row) = self.stall_rows().get(self.stall_sel) {
                        self.detail_stall = Some(self.timeline.stalls[row.latest].stall.id);
                        self.detail_scroll = 0;
                        self.view = View::StallDetail;
                    }
                }
                _ => {}
            },
            Action::Back => {
                if self.help {
                    self.help = false;
                } else {
                    self.view = match self.view {
                        View::Detail => self.detail_back,
                        View::StallDetail => View::Stalls,
                        View::LineDetail => View::Detail,
                        v => v,
                    };
                }
            }
        }
    }

    fn move_selection(&mut self, d: i32) {
        let step = |sel: usize, len: usize| (sel as i64 + i64::from(d)).clamp(0, len.saturating_sub(1) as i64) as usize;
        match self.view {
            View::Sites => {
                let len = self.site_rows().len();
                self.site_sel = step(self.site_sel, len);
            }
            View::Stalls => {
                let len = self.stall_rows().len();
                self.stall_sel = step(self.stall_sel, len);
            }
            View::HotLines => {
                let len = self.hot_rows().len();
                self.hot_sel = step(self.hot_sel, len);
            }
            View::Detail => {
                if let Some(site) = self.detail_site {
                    let len = self.site_hot_rows(site).len();
                    self.detail_hot_sel = step(self.detail_hot_sel, len);
                }
            }
            View::StallDetail | View::LineDetail => self.detail_scroll = step(self.detail_scroll, 10_000),
            View::Tasks => self.tasks_sel = step(self.tasks_sel, self.dump_groups().max(1)),
            View::Overview => {}
        }
    }

    /// Opens a site's detail; Esc goes back to `from`.
    fn open_site(&mut self, site: u32, from: View) {
        if self.detail_site != Some(site) {
            self.detail_hot_sel = 0;
        }
        self.detail_site = Some(site);
        self.detail_back = from;
        self.view = View::Detail;
    }

    /// Replay playback: moves the cursor one interval on; stops at the end.
    pub fn advance(&mut self) {
        if !self.playing {
            return;
        }
        let n = self.timeline.intervals.len();
        match self.end_pos() {
            Some(p) if p + 1 < n => self.cursor = Some(p + 1),
            _ => self.playing = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventState;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent { code, modifiers: KeyModifiers::NONE, kind: KeyEventKind::Press, state: KeyEventState::NONE }
    }

    #[test]
    fn keys_map_to_actions_by_mode() {
        assert_eq!(map_key(key(KeyCode::Char('q')), false, false), Some(Action::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(map_key(ctrl_c, true, true), Some(Action::Quit), "Ctrl-C quits from anywhere");
        // While typing a filter, letters are text, not commands.
        assert_eq!(map_key(key(KeyCode::Char('q')), true, false), Some(Action::FilterChar('q')));
        assert_eq!(map_key(key(KeyCode::Esc), true, false), Some(Action::FilterCancel));
        // In the help overlay, only closing keys work.
        assert_eq!(map_key(key(KeyCode::Char('s')), false, true), None);
        assert_eq!(map_key(key(KeyCode::Esc), false, true), Some(Action::ToggleHelp));
        // Vim keys and arrows agree.
        assert_eq!(map_key(key(KeyCode::Char('j')), false, false), map_key(key(KeyCode::Down), false, false));
        assert_eq!(map_key(key(KeyCode::Char('h')), false, false), Some(Action::Step(-1)));
        let release = KeyEvent { kind: KeyEventKind::Release, ..key(KeyCode::Char('q')) };
        assert_eq!(map_key(release, false, false), None);
    }

    #[test]
    fn every_key_in_the_help_is_mapped() {
        for c in ['1', '2', '3', '4', 'k', 'j', 'g', 'G', 'h', 'l', ' ', 'w', 's', 'S', '/', '?', 'q', 'a', 'x'] {
            assert!(map_key(key(KeyCode::Char(c)), false, false).is_some(), "{c:?}");
        }
        for code in [KeyCode::Tab, KeyCode::BackTab, KeyCode::PageUp, KeyCode::Home, KeyCode::End, KeyCode::Enter] {
            assert!(map_key(key(code), false, false).is_some(), "{code:?}");
        }
    }

    fn app() -> App {
        App::new(Timeline::default(), Source::Replay("x".into()))
    }

    #[test]
    fn the_dump_key_asks_the_live_program_and_says_so() {
        let mut a = app();
        a.apply(Action::Dump);
        assert_eq!(a.view, View::Tasks);
        assert!(a.status.as_deref().is_some_and(|s| s.contains("recording")), "{:?}", a.status);
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = std::sync::Arc::clone(&asked);
        a.dumper = Some(Dumper(Box::new(move || match n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => Ok(()),
            _ => Err("one is under way".into()),
        })));
        a.apply(Action::Dump);
        assert!(a.status.as_deref().is_some_and(|s| s.contains("asked for")), "{:?}", a.status);
        a.apply(Action::Dump);
        assert_eq!(a.status.as_deref(), Some("task dump: one is under way"));
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(map_key(key(KeyCode::Char('d')), false, false), Some(Action::Dump));
    }

    #[test]
    fn tabs_cycle_and_detail_views_back_out() {
        let mut a = app();
        a.apply(Action::NextView);
        assert_eq!(a.view, View::Sites);
        a.apply(Action::NextView);
        assert_eq!(a.view, View::Stalls);
        a.apply(Action::NextView);
        assert_eq!(a.view, View::HotLines);
        a.apply(Action::NextView);
        assert_eq!(a.view, View::Tasks);
        a.apply(Action::NextView);
        assert_eq!(a.view, View::Overview);
        a.apply(Action::PrevView);
        assert_eq!(a.view, View::Tasks);
        a.apply(Action::PrevView);
        assert_eq!(a.view, View::HotLines);
        assert_eq!(map_key(key(KeyCode::Char('4')), false, false), Some(Action::Goto(View::HotLines)));
        assert_eq!(map_key(key(KeyCode::Char('5')), false, false), Some(Action::Goto(View::Tasks)));
        // Enter and Esc on an empty session go nowhere.
        a.apply(Action::Open);
        assert_eq!(a.view, View::HotLines);
        a.view = View::LineDetail;
        a.apply(Action::Back);
        assert_eq!(a.view, View::Detail);
        a.apply(Action::Open);
        assert_eq!(a.view, View::Detail);
        a.apply(Action::Back);
        assert_eq!(a.view, View::Sites);
        a.view = View::StallDetail;
        a.apply(Action::Back);
        assert_eq!(a.view, View::Stalls);
        a.apply(Action::ToggleHelp);
        a.apply(Action::Back);
        assert!(!a.help);
        assert_eq!(a.view, View::Stalls);
    }

    #[test]
    fn sorting_cycles_columns_and_filter_typing_edits_the_filter() {
        let mut a = app();
        a.view = View::Sites;
        assert_eq!((a.sort, a.descending), (Column::Busy, true));
        a.apply(Action::NextSort);
        assert_eq!(a.sort, Column::PollP50);
        a.apply(Action::ReverseSort);
        assert!(!a.descending);
        a.apply(Action::StartFilter);
        assert!(a.typing_filter);
        for c in "db".chars() {
            a.apply(Action::FilterChar(c));
        }
        a.apply(Action::FilterBackspace);
        assert_eq!(a.filter, "d");
        a.apply(Action::FilterDone);
        assert!(!a.typing_filter);
        assert_eq!(a.filter, "d");
        a.apply(Action::StartFilter);
        a.apply(Action::FilterCancel);
        assert_eq!(a.filter, "");
        a.apply(Action::CycleSpan);
        assert_eq!(a.span, Span::Last(1));
    }
}
