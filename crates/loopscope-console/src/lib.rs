//! tokio-console interop: `loopscope tui --console URL` reads any program running
//! `console-subscriber` through its gRPC API (`console-api`) and turns what it publishes into
//! loopscope frames for the TUI.
//!
//! What the data allows:
//! - spawn sites: each task's spawn location;
//! - per interval (one per console update) and per site: tasks spawned and finished, and poll-time
//!   and scheduling-latency histograms, the differences between consecutive cumulative per-task
//!   histograms of `watch_task_details` (for up to [`MAX_WATCHED`] live tasks at a time);
//! - long polls: a poll seen in progress for longer than the threshold is raised as a stall while
//!   it lasts; one seen only afterwards in a task's histogram is raised late, its duration that of
//!   its histogram bucket and its start the interval's.
//!
//! What it does not allow, and the TUI marks as needing the loopscope recorder: per-worker
//! figures, the blocking line, its category and stack. Blocking-pool tasks (`spawn_blocking`)
//! are left out: they are meant to block.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use loopscope_core::units::unix_now_ns;

use console_api::instrument::instrument_client::InstrumentClient;
use console_api::instrument::{InstrumentRequest, TaskDetailsRequest};
use console_api::tasks::{Stats, TaskDetails, task_details};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use loopscope_core::dist::{DistAcc, highest_equivalent};
pub use loopscope_core::live::FeedEvent;
use loopscope_core::model::{
    Event, FORMAT_VERSION, Flavor, Frame, Gauges, Header, Interval, SiteDecl, SiteInterval, Stall,
};

/// Tasks whose histograms are watched at once; the polls of others are not in the histograms.
pub const MAX_WATCHED: usize = 256;

/// Polls longer than this are raised as stalls (loopscope's default stall threshold).
pub const LONG_POLL: Duration = Duration::from_millis(10);

/// Polls longer than this count as slow (loopscope's default slow-poll threshold).
const SLOW_POLL_NS: u64 = 100_000;

/// Starts reading the console at `url` (`http://127.0.0.1:6669`) on a thread of its own;
/// reconnects every second after a failure, until the receiver is dropped.
pub fn connect(url: String) -> std::sync::mpsc::Receiver<FeedEvent> {
    let (tx, rx) = std::sync::mpsc::sync_channel(loopscope_core::live::FEED_QUEUE);
    let _ = std::thread::Builder::new().name("loopscope-console".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(FeedEvent::Status(Some(format!("cannot start the console client: {e}"))));
                return;
            }
        };
        rt.block_on(run(&url, &tx));
    });
    rx
}

async fn run(url: &str, tx: &SyncSender<FeedEvent>) {
    loop {
        let why = match session(url, tx).await {
            Ok(()) => "the program ended".to_string(),
            Err(Gone) => return,
            Err(Failed(why)) => why,
        };
        if tx.send(FeedEvent::Status(Some(format!("reconnecting ({why})")))).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

enum Stop {
    /// The TUI has gone.
    Gone,
    /// The connection failed.
    Failed(String),
}
use Stop::{Failed, Gone};

fn unix_ns(t: &prost_types::Timestamp) -> u64 {
    (t.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(t.nanos.max(0) as u64)
}

/// One connection: the header, then one interval per console update.
async fn session(url: &str, tx: &SyncSender<FeedEvent>) -> Result<(), Stop> {
    let mut client = InstrumentClient::connect(url.to_string())
        .await
        .map_err(|e| Failed(format!("cannot connect to {url}: {e}")))?;
    let mut updates = client
        .watch_updates(InstrumentRequest {})
        .await
        .map_err(|e| Failed(format!("{url}: {}", e.message())))?
        .into_inner();
    // Strings come from a server anyone could run: cleaned as a recording's are.
    let send = |mut e: FeedEvent| {
        if let FeedEvent::Frame(f) = &mut e {
            loopscope_core::validate::clean_frame(f);
        }
        tx.send(e).map_err(|_| Gone)
    };
    send(FeedEvent::Reset)?;
    send(FeedEvent::Status(None))?;
    let mut conv = Converter::new(unix_now_ns(), url);
    send(FeedEvent::Frame(Frame::Header(conv.header.clone())))?;
    let (details_tx, mut details_rx) = tokio::sync::mpsc::channel::<TaskDetails>(1024);
    loop {
        tokio::select! {
            update = updates.message() => {
                let update = match update {
                    Ok(Some(u)) => u,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(Failed(format!("disconnected: {}", e.message()))),
                };
                let now = update.now.as_ref().map_or_else(unix_now_ns, unix_ns);
                let mut frames = Vec::new();
                if let Some(tasks) = update.task_update {
                    for task in &tasks.new_tasks {
                        if let Some(id) = conv.new_task(task, &mut frames) {
                            // Its histograms, while there is room to watch it.
                            if conv.watched < MAX_WATCHED {
                                conv.watched += 1;
                                let watch = watch_details(&mut client, id, details_tx.clone());
                                conv.tasks.get_mut(&id).expect("just added").watch = Some(watch);
                            }
                        }
                    }
                    for (id, stats) in &tasks.stats_update {
                        conv.stats(*id, stats);
                    }
                }
                conv.long_polls(now, &mut frames);
                // Details that arrived since the last update belong to this interval.
                while let Ok(d) = details_rx.try_recv() {
                    conv.details(&d);
                }
                conv.interval(now, &mut frames);
                for f in frames {
                    send(FeedEvent::Frame(f))?;
                }
                let (watched, alive) = (conv.watched, conv.alive());
                let status = (alive > watched).then(|| {
                    format!("tokio-console: histograms from {watched} of {alive} live tasks")
                });
                send(FeedEvent::Status(status))?;
            }
            Some(d) = details_rx.recv() => conv.details(&d),
        }
    }
}

/// Streams one task's details into `tx`, until aborted through the returned handle.
fn watch_details(
    client: &mut InstrumentClient<tonic::transport::Channel>,
    id: u64,
    tx: tokio::sync::mpsc::Sender<TaskDetails>,
) -> tokio::task::AbortHandle {
    let mut client = client.clone();
    tokio::spawn(async move {
        let request = TaskDetailsRequest { id: Some(console_api::Id { id }) };
        let Ok(response) = client.watch_task_details(request).await else { return };
        let mut stream = response.into_inner();
        while let Ok(Some(d)) = stream.message().await {
            if tx.send(d).await.is_err() {
                return;
            }
        }
    })
    .abort_handle()
}

/// One task as seen so far.
#[derive(Default)]
struct TaskState {
    site: u32,
    /// Its details stream, while watched.
    watch: Option<tokio::task::AbortHandle>,
    /// The interval in which it was seen dropped.
    dropped: Option<u64>,
    /// The start (unix ns) of the poll in progress at the last stats, if one was.
    in_progress: Option<u64>,
    poll: Option<Histogram<u64>>,
    sched: Option<Histogram<u64>>,
    /// The poll in progress raised as a stall: (stall id, its start in unix ns).
    open_stall: Option<(u64, u64)>,
    /// When its last poll ended (unix ns).
    last_poll_ended: Option<u64>,
    /// Stalls raised live that ended since the task's last histogram (not to be raised again
    /// from the histogram).
    ended_live: u64,
}

#[derive(Default)]
struct SiteAcc {
    spawned: u64,
    finished: u64,
    poll: DistAcc,
    sched: DistAcc,
}

/// Folds console data into loopscope frames.
struct Converter {
    header: Header,
    start_unix_ns: u64,
    sites: HashMap<String, u32>,
    tasks: HashMap<u64, TaskState>,
    watched: usize,
    acc: HashMap<u32, SiteAcc>,
    next_stall: u64,
    index: u64,
    last_end_ns: u64,
    /// Long polls found in histograms this interval: (site, duration in ns).
    late: Vec<(u32, u64)>,
}

impl Converter {
    fn new(start_unix_ns: u64, url: &str) -> Self {
        let header = Header {
            format_version: FORMAT_VERSION,
            loopscope_version: env!("CARGO_PKG_VERSION").to_string(),
            flavor: Flavor::Unknown,
            workers: 0,
            host: String::new(),
            pid: 0,
            start_unix_ns,
            command_line: vec!["tokio-console".into(), url.to_string()],
            workload: None,
            interval_ns: 1_000_000_000,
            slow_poll_ns: SLOW_POLL_NS,
            schedule_latency: true,
            stall_threshold_ns: Some(LONG_POLL.as_nanos() as u64),
        };
        Converter {
            header,
            start_unix_ns,
            sites: HashMap::new(),
            tasks: HashMap::new(),
            watched: 0,
            acc: HashMap::new(),
            next_stall: 0,
            index: 0,
            last_end_ns: 0,
            late: Vec::new(),
        }
    }

    fn rel(&self, unix_ns: u64) -> u64 {
        unix_ns.saturating_sub(self.start_unix_ns)
    }

    fn alive(&self) -> usize {
        self.tasks.values().filter(|t| t.dropped.is_none()).count()
    }

    /// A new task: its site (declared if new); returns its id. Blocking-pool tasks
    /// (`spawn_blocking`, tokio's own worker threads) are meant to block and are left out.
    fn new_task(&mut self, task: &console_api::tasks::Task, frames: &mut Vec<Frame>) -> Option<u64> {
        if is_blocking(task) {
            return None;
        }
        let id = task.id.as_ref()?.id;
        let (file, line, column) = match &task.location {
            Some(l) => {
                (l.file.clone().unwrap_or_else(|| "<unknown file>".into()), l.line.unwrap_or(0), l.column.unwrap_or(0))
            }
            None => ("<unknown location>".into(), 0, 0),
        };
        let key = format!("{file}:{line}:{column}");
        let next = self.sites.len() as u32;
        let site = *self.sites.entry(key).or_insert_with(|| {
            frames.push(Frame::Sites(vec![SiteDecl { id: next, file, line, column }]));
            next
        });
        self.acc.entry(site).or_default().spawned += 1;
        self.tasks.insert(id, TaskState { site, ..TaskState::default() });
        Some(id)
    }

    /// A task's cumulative stats: its end, and the poll it is in.
    fn stats(&mut self, id: u64, stats: &Stats) {
        let Some(task) = self.tasks.get_mut(&id) else { return };
        if let Some(ps) = &stats.poll_stats {
            let started = ps.last_poll_started.as_ref().map(unix_ns);
            let ended = ps.last_poll_ended.as_ref().map(unix_ns);
            task.in_progress = match (started, ended) {
                (Some(s), Some(e)) => (s > e).then_some(s),
                (Some(s), None) => Some(s),
                _ => None,
            };
            task.last_poll_ended = ended;
        }
        if stats.dropped_at.is_some() && task.dropped.is_none() {
            task.dropped = Some(self.index);
            task.in_progress = None;
            self.acc.entry(task.site).or_default().finished += 1;
        }
    }

    /// Raises polls in progress for longer than [`LONG_POLL`] and ends those that have returned.
    /// Every task is looked at on every update: the console sends a task's stats only when they
    /// change, and a blocked task's do not.
    fn long_polls(&mut self, now: u64, frames: &mut Vec<Frame>) {
        let start = self.start_unix_ns;
        let mut next_stall = self.next_stall;
        for task in self.tasks.values_mut() {
            if let Some((stall, began)) = task.open_stall
                && task.in_progress != Some(began)
            {
                let end = task.last_poll_ended.filter(|&e| e >= began).unwrap_or(now);
                frames.push(Frame::Event(Event::StallEnd { id: stall, duration_ns: end - began, category: None }));
                task.open_stall = None;
                task.ended_live += 1;
            }
            if let Some(s) = task.in_progress
                && task.open_stall.is_none()
                && now.saturating_sub(s) >= LONG_POLL.as_nanos() as u64
            {
                let stall = next_stall;
                next_stall += 1;
                task.open_stall = Some((stall, s));
                frames.push(Frame::Event(Event::StallBegin(Stall::unknown(
                    stall,
                    0,
                    Some(task.site),
                    s.saturating_sub(start),
                    now.saturating_sub(start),
                    false,
                ))));
            }
        }
        self.next_stall = next_stall;
    }

    /// A task's cumulative histograms: what they gained since the last ones goes to its site.
    fn details(&mut self, d: &TaskDetails) {
        let Some(id) = d.task_id.as_ref().map(|i| i.id) else { return };
        let Some(task) = self.tasks.get_mut(&id) else { return };
        let site = task.site;
        let acc = self.acc.entry(site).or_default();
        let poll = match &d.poll_times_histogram {
            Some(task_details::PollTimesHistogram::Histogram(h)) => decode(&h.raw_histogram),
            Some(task_details::PollTimesHistogram::LegacyHistogram(raw)) => decode(raw),
            None => None,
        };
        if let Some(poll) = poll {
            let long = add_delta(&mut acc.poll, &poll, task.poll.as_ref());
            // Long polls raised live are already stalls.
            let seen = long.len() as u64;
            let already = task.ended_live.min(seen);
            task.ended_live -= already;
            self.late.extend(long.into_iter().skip(already as usize).map(|ns| (site, ns)));
            task.poll = Some(poll);
        }
        if let Some(sched) = d.scheduled_times_histogram.as_ref().and_then(|h| decode(&h.raw_histogram)) {
            add_delta(&mut acc.sched, &sched, task.sched.as_ref());
            task.sched = Some(sched);
        }
    }

    /// Closes the interval ending at `now`.
    fn interval(&mut self, now: u64, frames: &mut Vec<Frame>) {
        let end_ns = self.rel(now).max(self.last_end_ns);
        let start_ns = self.last_end_ns;
        for (site, duration_ns) in std::mem::take(&mut self.late).into_iter().take(100) {
            let id = self.next_stall;
            self.next_stall += 1;
            frames.push(Frame::Event(Event::StallBegin(Stall::unknown(id, 0, Some(site), start_ns, end_ns, true))));
            frames.push(Frame::Event(Event::StallEnd { id, duration_ns, category: None }));
        }
        let mut sites: Vec<SiteInterval> = self
            .acc
            .drain()
            .map(|(site, a)| SiteInterval {
                site,
                spawned: a.spawned,
                finished: a.finished,
                slow_polls: a.poll.count_above(Duration::from_nanos(SLOW_POLL_NS)),
                poll: a.poll.to_dist(),
                sched: a.sched.to_dist(),
            })
            .collect();
        sites.sort_by_key(|s| s.site);
        let alive = self.alive() as u64;
        frames.push(Frame::Interval(Box::new(Interval {
            index: self.index,
            start_ns,
            end_ns,
            sites,
            workers: Vec::new(),
            gauges: Gauges { alive_tasks: alive, ..Gauges::default() },
            lag: Default::default(),
            stall_tally: Vec::new(),
            spans: Vec::new(),
            panics: Vec::new(),
        })));
        // A task dropped an interval ago has sent its last details: stop watching and forget it.
        let index = self.index;
        let mut unwatched = 0;
        self.tasks.retain(|_, t| {
            let forget = t.dropped.is_some_and(|d| index > d) && t.open_stall.is_none();
            if forget && let Some(w) = t.watch.take() {
                w.abort();
                unwatched += 1;
            }
            !forget
        });
        self.watched -= unwatched;
        self.index += 1;
        self.last_end_ns = end_ns;
    }
}

/// Whether a task runs on the blocking pool: console-subscriber marks every task `Spawn` and puts
/// tokio's `kind` span field (`task`, `local`, `block_on`, `blocking`) among its fields.
fn is_blocking(task: &console_api::tasks::Task) -> bool {
    use console_api::field::Value;
    task.kind == console_api::tasks::task::Kind::Blocking as i32
        || task.fields.iter().any(|f| match &f.value {
            Some(Value::StrVal(v) | Value::DebugVal(v)) => v == "blocking",
            _ => false,
        })
}

/// Decodes a histogram from the wire, refusing bounds that would make it large: console-subscriber
/// keeps poll times at two significant digits up to seconds; anything wider is not its.
fn decode(raw: &[u8]) -> Option<Histogram<u64>> {
    let word = |at: usize, n: usize| raw.get(at..at + n).map(|b| b.iter().fold(0u64, |v, x| v << 8 | u64::from(*x)));
    // The V2 header (big-endian): cookie, payload length, offset, digits, lowest, highest.
    let (digits, lowest, highest) = (word(12, 4)?, word(16, 8)?, word(24, 8)?);
    let plain_v2 = word(0, 4)? == 0x1c84_9313;
    if !plain_v2 || digits > 3 || lowest == 0 || highest > 3_600_000_000_000 || lowest >= highest {
        return None;
    }
    Deserializer::new().deserialize(&mut &raw[..]).ok()
}

/// Adds `current - previous` (cumulative histograms of one task) to `acc`; returns the durations
/// of the new polls at or above [`LONG_POLL`].
fn add_delta(acc: &mut DistAcc, current: &Histogram<u64>, previous: Option<&Histogram<u64>>) -> Vec<u64> {
    let mut delta = current.clone();
    if let Some(p) = previous
        && delta.subtract(p).is_err()
    {
        // Not the same task's later histogram (a reset): take it whole.
        delta = current.clone();
    }
    let mut long = Vec::new();
    for v in delta.iter_recorded() {
        let value = highest_equivalent(v.value_iterated_to());
        acc.record_n_ns(value, v.count_at_value());
        if value >= LONG_POLL.as_nanos() as u64 {
            long.extend(std::iter::repeat_n(value, v.count_at_value().min(100) as usize));
        }
    }
    long
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_of_cumulative_histograms_hold_only_the_new_polls() {
        let mut before = Histogram::<u64>::new_with_max(10_000_000_000, 2).unwrap();
        before.record_n(5_000, 10).unwrap();
        let mut after = before.clone();
        after.record_n(5_000, 3).unwrap();
        after.record(40_000_000).unwrap();
        let mut acc = DistAcc::new();
        let long = add_delta(&mut acc, &after, Some(&before));
        assert_eq!(acc.count(), 4);
        assert_eq!(long.len(), 1);
        assert!((39_000_000..=41_000_000).contains(&long[0]), "{long:?}");
        // A first histogram counts whole.
        let mut acc = DistAcc::new();
        add_delta(&mut acc, &after, None);
        assert_eq!(acc.count(), 14);
    }
}
