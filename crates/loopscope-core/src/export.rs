//! Exports of a recording for other tools.
//!
//! [`write_hlog`] writes the interval histograms as a standard HdrHistogram interval log (the
//! format of Java's `HistogramLogWriter`, read by `HistogramLogAnalyzer`, `hdr-plot` and every
//! HdrHistogram implementation): one line per histogram per interval, V2-deflate encoded, tagged
//! `poll` and `sched` for the whole runtime and `poll@<site>` / `sched@<site>` per spawn site.
//! Values are nanoseconds.
//!
//! [`write_trace`] writes the stalls as a Chrome trace (Trace Event Format JSON) for Perfetto and
//! other trace viewers: one slice per stall on its worker's track.

use std::io::{Read, Write};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::dist::DistAcc;
use crate::format::{ReadError, Reader};
use crate::model::{Event, Frame, SiteDecl, StallCategory};
use crate::resolve::Resolver;
use crate::stall::StallTracker;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The recording could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the output failed.
    #[error("writing the export: {0}")]
    Write(String),
    /// A histogram in the recording could not be decoded.
    #[error("{0}")]
    Corrupt(String),
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Intervals exported.
    pub intervals: u64,
    /// Histogram lines written.
    pub histograms: u64,
    /// Whether the recording was cut short (everything before the cut was exported).
    pub truncated: bool,
}

/// A tag for a spawn site: interval-log tags may not contain spaces or commas.
pub fn site_tag(kind: &str, site: &SiteDecl) -> String {
    format!("{kind}@{}", site.location()).replace([' ', ',', '\r', '\n'], "_")
}

/// Writes a recording's intervals as an HdrHistogram interval log.
pub fn write_hlog<R: Read>(mut reader: Reader<R>, out: &mut impl Write) -> Result<ExportStats, ExportError> {
    let header = reader.header().clone();
    let start = UNIX_EPOCH + Duration::from_nanos(header.start_unix_ns);
    let mut serializer = V2DeflateSerializer::new();
    let werr = |e: std::io::Error| ExportError::Write(e.to_string());
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "loopscope recording of {} ({} runtime, {} workers) on {}; values in nanoseconds",
            header.workload.as_deref().unwrap_or("a program"),
            header.flavor,
            header.workers,
            header.host
        ))
        .add_comment("tags: poll / sched for the whole runtime, poll@<spawn site> / sched@<spawn site> per site")
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(out, &mut serializer)
        .map_err(werr)?;
    let mut sites: Vec<SiteDecl> = Vec::new();
    let mut stats = ExportStats::default();
    let completeness = reader.read_rest(|_, frame| -> Result<(), ExportError> {
        match frame {
            Frame::Sites(s) => sites.extend(s),
            Frame::Interval(i) => {
                let at = Duration::from_nanos(i.start_ns);
                let length = Duration::from_nanos(i.end_ns.saturating_sub(i.start_ns));
                let decode = |d: &crate::Dist, what: &str| {
                    d.decode().map_err(|e| ExportError::Corrupt(format!("interval {}: {what}: {e}", i.index)))
                };
                let (poll, sched) = runtime_dists(&i)?;
                let mut lines = vec![("poll".to_string(), poll), ("sched".to_string(), sched)];
                for s in &i.sites {
                    let Some(decl) = sites.get(s.site as usize) else {
                        return Err(ExportError::Corrupt(format!("interval {}: undeclared site {}", i.index, s.site)));
                    };
                    lines.push((site_tag("poll", decl), decode(&s.poll, "site poll histogram")?));
                    lines.push((site_tag("sched", decl), decode(&s.sched, "site scheduling histogram")?));
                }
                for (tag, d) in lines.iter().filter(|(_, d)| d.count() > 0) {
                    log.write_histogram(&d.to_histogram(), at, length, Tag::new(tag))
                        .map_err(|e| ExportError::Write(e.to_string()))?;
                    stats.histograms += 1;
                }
                stats.intervals += 1;
            }
            _ => {}
        }
        Ok(())
    })?;
    // Everything before a cut (or a missing footer) was exported.
    stats.truncated = completeness != crate::format::Completeness::Complete;
    Ok(stats)
}

/// An interval's runtime-wide poll and scheduling histograms: its workers' summed.
fn runtime_dists(i: &crate::model::Interval) -> Result<(DistAcc, DistAcc), ExportError> {
    let decode = |d: &crate::Dist, what: &str| {
        d.decode().map_err(|e| ExportError::Corrupt(format!("interval {}: {what}: {e}", i.index)))
    };
    let (mut poll, mut sched) = (DistAcc::new(), DistAcc::new());
    for w in &i.workers {
        poll.add(&decode(&w.poll, "worker poll histogram")?);
        sched.add(&decode(&w.sched, "worker scheduling histogram")?);
    }
    Ok((poll, sched))
}

/// What a trace export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Stalls written as slices.
    pub stalls: u64,
    /// Stalls whose end the recording does not hold (written up to the recording's last moment).
    pub unfinished: u64,
    /// Intervals written as counter samples.
    pub intervals: u64,
    /// Whether the recording was cut short (everything before the cut was exported).
    pub truncated: bool,
}

/// Writes a recording as a Chrome trace (the JSON object format of the Trace Event Format, read by
/// Perfetto, `chrome://tracing` and speedscope).
///
/// Each worker thread is a track (`tid` = the worker's id, named after its thread); each stall is a
/// complete (`"ph": "X"`) slice on its worker's track, named after its category and blocking site,
/// with everything the detector found in `args`. Each interval adds counter (`"ph": "C"`) samples:
/// polls, poll and scheduling p99 in microseconds, and tasks alive. Timestamps are microseconds
/// since the recording started.
pub fn write_trace<R: Read>(
    mut reader: Reader<R>,
    resolver: &mut Resolver,
    out: &mut impl Write,
) -> Result<TraceStats, ExportError> {
    use serde_json::{Value, json};

    let header = reader.header().clone();
    let pid = header.pid;
    let us = |ns: u64| ns as f64 / 1000.0;
    let process = match &header.workload {
        Some(w) => format!("loopscope: {w} (pid {pid})"),
        None => format!("loopscope: {} (pid {pid})", header.command_line.first().map_or("program", |s| s.as_str())),
    };
    let mut events: Vec<Value> =
        vec![json!({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": process}})];
    let mut sites: Vec<SiteDecl> = Vec::new();
    let mut tracker = StallTracker::default();
    let mut stats = TraceStats::default();
    let mut last_ns = 0u64;
    let slice = |s: &crate::model::Stall, sites: &[SiteDecl], end_ns: u64, finished: bool, category: StallCategory| {
        let name = match &s.blocking_site {
            Some(at) => format!("stall: {category} at {at}"),
            None => format!("stall: {category}"),
        };
        let spawn_site = s.site.and_then(|id| sites.get(id as usize)).map(SiteDecl::location);
        let stack: Vec<String> = s
            .stack
            .iter()
            .map(|f| match f.location() {
                Some(at) => format!("{} ({at})", f.function),
                None => f.function.clone(),
            })
            .collect();
        let end = end_ns.max(s.started_ns);
        json!({
            "name": name,
            "cat": format!("stall,{category}"),
            "ph": "X",
            "pid": pid,
            "tid": s.worker,
            "ts": us(s.started_ns),
            "dur": us(end - s.started_ns),
            "args": {
                "category": category.name(),
                "blocking_site": s.blocking_site,
                "blocking_function": s.blocking_function,
                "call": s.call,
                "spawn_site": spawn_site,
                "syscall": s.syscall,
                "fd_target": s.fd_target,
                "cpu_percent": s.cpu_percent,
                "detected_after_ms": (s.detected_ns.saturating_sub(s.started_ns)) as f64 / 1e6,
                "late": s.late,
                "finished": finished,
                "stack": stack,
            }
        })
    };
    let completeness = reader.read_rest(|_, frame| -> Result<(), ExportError> {
        match resolver.frame(frame) {
            Frame::Sites(s) => sites.extend(s),
            Frame::Workers(ws) => {
                for w in ws {
                    events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": w.id,
                        "args": {"name": format!("{} (worker {})", w.thread_name, w.id)}}));
                }
            }
            Frame::Interval(i) => {
                last_ns = last_ns.max(i.end_ns);
                let (poll, sched) = runtime_dists(&i)?;
                let ts = us(i.end_ns);
                let p99 = |d: &DistAcc| us(d.quantile(0.99).as_nanos() as u64);
                for (name, value) in [
                    ("polls", poll.count() as f64),
                    ("poll p99 (us)", p99(&poll)),
                    ("scheduling p99 (us)", p99(&sched)),
                    ("tasks alive", i.gauges.alive_tasks as f64),
                ] {
                    events.push(json!({"name": name, "ph": "C", "pid": pid, "tid": 0, "ts": ts,
                        "args": {"value": value}}));
                }
                stats.intervals += 1;
            }
            Frame::Event(Event::StallBegin(s)) => {
                last_ns = last_ns.max(s.detected_ns);
                tracker.begin(&s);
            }
            Frame::Event(Event::StallLook { id, category, stack, .. }) => tracker.look(id, category, &stack),
            Frame::Event(Event::StallEnd { id, duration_ns, category }) => {
                if let Some(c) = tracker.end(id, duration_ns, category) {
                    let end = c.stall.started_ns.saturating_add(c.duration_ns);
                    last_ns = last_ns.max(end);
                    events.push(slice(&c.stall, &sites, end, true, c.category));
                    stats.stalls += 1;
                }
            }
            Frame::Footer(f) => last_ns = last_ns.max(f.end_ns),
            _ => {}
        }
        Ok(())
    })?;
    // Stalls still open when the recording ended: drawn up to its last moment, marked unfinished.
    for s in tracker.open() {
        events.push(slice(s, &sites, last_ns.max(s.detected_ns), false, s.category));
        stats.stalls += 1;
        stats.unfinished += 1;
    }
    let doc = json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "producer": format!("loopscope {}", header.loopscope_version),
            "host": header.host,
            "command_line": header.command_line.join(" "),
            "start_unix_ns": header.start_unix_ns,
            "stall_threshold_ms": header.stall_threshold_ns.map(|ns| ns as f64 / 1e6),
        }
    });
    serde_json::to_writer(&mut *out, &doc).map_err(|e| ExportError::Write(e.to_string()))?;
    out.write_all(b"\n").map_err(|e| ExportError::Write(e.to_string()))?;
    stats.truncated = completeness != crate::format::Completeness::Complete;
    Ok(stats)
}

/// What a folded-stack export holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folded {
    /// Slow-poll samples: each line's count is its samples.
    Samples,
    /// Stalls: each line's count is the time they blocked, in microseconds.
    Stalls,
}

/// What a folded-stack export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldedStats {
    /// Distinct stacks written.
    pub stacks: u64,
    /// Samples (or stalls) they hold.
    pub events: u64,
    /// Whether the recording was cut short.
    pub truncated: bool,
}

/// Writes a recording's slow-poll samples or stalls as folded stacks (Brendan Gregg's format,
/// read by `flamegraph.pl`, inferno and speedscope): one line per distinct stack, frames from
/// the outermost to the innermost joined by `;`, then a space and its count. Each stack starts
/// at its task's spawn site (`spawn:file:line`), then the `tracing` spans the poll was in
/// (`span:target::name`, with the layer), and holds the task's frames (from tokio's task
/// harness in), with short names ([`crate::stall::short_name`]).
pub fn write_folded<R: Read>(
    mut reader: Reader<R>,
    resolver: &mut Resolver,
    what: Folded,
    out: &mut impl Write,
) -> Result<FoldedStats, ExportError> {
    use std::collections::BTreeMap;
    let mut sites: Vec<SiteDecl> = Vec::new();
    let mut spans: Vec<crate::model::SpanDecl> = Vec::new();
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let mut stats = FoldedStats::default();
    let mut tracker = StallTracker::default();
    let line = |sites: &[SiteDecl],
                spans: &[crate::model::SpanDecl],
                site: Option<u32>,
                in_spans: &[u32],
                stack: &[crate::model::StackFrame]| {
        let root = site
            .and_then(|id| sites.get(id as usize))
            .map_or("spawn:?".to_string(), |d| format!("spawn:{}", d.location()));
        let frames = crate::stall::task_frames(stack);
        let mut parts = vec![root.replace([';', ' '], "_")];
        // The spans the poll was in, outermost first, between the spawn site and the frames.
        parts.extend(
            in_spans
                .iter()
                .filter_map(|s| spans.get(*s as usize))
                .map(|d| format!("span:{}", d.path()).replace([';', ' '], "_")),
        );
        parts.extend(frames.iter().rev().map(|f| {
            let name = match &f.object {
                // A shared library without symbols for the address: its file name.
                Some(object) if f.function.starts_with("0x") => {
                    format!("[{}]", object.rsplit('/').next().unwrap_or(object))
                }
                _ => crate::stall::short_name(&f.function),
            };
            name.replace([';', ' '], "_")
        }));
        parts.join(";")
    };
    let completeness = reader.read_rest(|_, frame| -> Result<(), ExportError> {
        match resolver.frame(frame) {
            Frame::Sites(s) => sites.extend(s),
            Frame::Spans(d) => spans.extend(d),
            Frame::Samples(s) if what == Folded::Samples => {
                for st in s.stacks.iter().filter(|st| !st.stack.is_empty()) {
                    *folded.entry(line(&sites, &spans, st.site, &st.spans, &st.stack)).or_default() += st.count;
                    stats.events += st.count;
                }
            }
            Frame::Event(Event::StallBegin(s)) if what == Folded::Stalls => {
                tracker.begin(&s);
            }
            // A later look may name a stall raised without a stack, or say better what it did.
            Frame::Event(Event::StallLook { id, category, stack, .. }) if what == Folded::Stalls => {
                tracker.look(id, category, &stack);
            }
            Frame::Event(Event::StallEnd { id, duration_ns, category }) if what == Folded::Stalls => {
                if let Some(c) = tracker.end(id, duration_ns, category)
                    && !c.stall.stack.is_empty()
                {
                    *folded.entry(line(&sites, &spans, c.stall.site, &c.stall.spans, &c.stall.stack)).or_default() +=
                        c.duration_ns.div_ceil(1000);
                    stats.events += 1;
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    for (stack, count) in &folded {
        writeln!(out, "{stack} {count}").map_err(|e| ExportError::Write(e.to_string()))?;
    }
    stats.stacks = folded.len() as u64;
    stats.truncated = completeness != crate::format::Completeness::Complete;
    Ok(stats)
}
