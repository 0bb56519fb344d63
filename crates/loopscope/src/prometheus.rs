//! A Prometheus (OpenMetrics text) endpoint for a session's figures.
//!
//! The exporter is one more receiver of the session's frames: a thread folds every interval into
//! cumulative histograms and counters, and another answers `GET /metrics` over TCP. Both run on
//! their own threads, never on the profiled runtime; the encoding is `prometheus-client`'s.
//!
//! Label cardinality is bounded: the first [`SessionBuilder::prometheus_sites`] spawn sites to be
//! busy (the busiest of each interval first) get a `site` label of their own, from then on; every
//! other site's figures go to `site="other"`. Each series only ever grows, so `rate()` and
//! `histogram_quantile()` work on them as on any histogram.
//!
//! [`SessionBuilder::prometheus_sites`]: crate::SessionBuilder::prometheus_sites

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use loopscope_core::dist::{Dist, highest_equivalent};
use loopscope_core::model::{Event, Frame, SiteDecl, StallCategory};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::session::Error;
use crate::shared::lock;

/// Upper bounds of the histogram buckets, in seconds (1 µs to 10 s; above: `+Inf`).
pub const BUCKETS_S: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The label of every site without a label of its own.
pub const OTHER_SITE: &str = "other";

/// A request larger than this is not a scrape.
const MAX_REQUEST: usize = 8 * 1024;

/// A cumulative histogram in [`BUCKETS_S`] (the last slot is `+Inf`).
#[derive(Clone, Debug, Default)]
struct Hist {
    buckets: [u64; BUCKETS_S.len() + 1],
    count: u64,
    sum_ns: u64,
}

impl Hist {
    /// Adds a recorded distribution: each HdrHistogram bucket goes to the first Prometheus bucket
    /// whose bound is at least the top of the HdrHistogram bucket (within its 1% precision).
    fn add(&mut self, d: &Dist) {
        let Ok(buckets) = d.buckets() else { return };
        for (low_ns, n) in buckets {
            self.buckets[bucket_of(highest_equivalent(low_ns))] += n;
        }
        self.count += d.count;
        self.sum_ns = self.sum_ns.saturating_add(d.sum_ns);
    }

    fn encode(&self, encoder: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let mut buckets: Vec<(f64, u64)> = BUCKETS_S.iter().copied().zip(self.buckets).collect();
        // prometheus-client writes `le="+Inf"` for f64::MAX.
        buckets.push((f64::MAX, self.buckets[BUCKETS_S.len()]));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_ns as f64 / 1e9,
            self.count,
            &buckets,
            None,
        )
    }
}

/// The index of the bucket a value in nanoseconds falls in.
pub fn bucket_of(value_ns: u64) -> usize {
    let s = value_ns as f64 / 1e9;
    BUCKETS_S.iter().position(|&b| s <= b).unwrap_or(BUCKETS_S.len())
}

#[derive(Debug, Default)]
struct Series {
    poll: Hist,
    sched: Hist,
    spawned: u64,
}

/// Everything exposed, folded from frames.
#[derive(Debug, Default)]
struct State {
    max_labelled: usize,
    declared: Vec<SiteDecl>,
    /// Per declared site: its series (an index into `series`), once it has one of its own.
    slot_of: Vec<Option<usize>>,
    /// Labelled series, then `other` last.
    series: Vec<(String, Series)>,
    other: Series,
    schedule_latency: bool,
    lag: Hist,
    /// (site label, category) → (stalls, seconds stalled).
    stalls: BTreeMap<(String, StallCategory), (u64, f64)>,
    /// Stalls begun and not yet ended: id → (site label, category when raised).
    open_stalls: BTreeMap<u64, (String, StallCategory)>,
    workers: BTreeMap<u32, String>,
    /// Per worker: busy time over the last interval's length.
    busy: BTreeMap<u32, f64>,
    alive_tasks: u64,
    intervals: u64,
}

impl State {
    fn fold(&mut self, frame: Frame) {
        match frame {
            Frame::Header(h) => self.schedule_latency = h.schedule_latency,
            Frame::Sites(sites) => {
                for s in sites {
                    self.slot_of.push(None);
                    self.declared.push(s);
                }
            }
            Frame::Workers(ws) => {
                for w in ws {
                    self.workers.insert(w.id, w.thread_name);
                }
            }
            Frame::Interval(i) => {
                // Sites with no series yet take free slots, busiest first.
                let mut new: Vec<(u64, u32)> = i
                    .sites
                    .iter()
                    .filter(|s| self.slot_of.get(s.site as usize).is_some_and(|slot| slot.is_none()))
                    .filter(|s| self.declared[s.site as usize].file != SiteDecl::OTHER_FILE)
                    .map(|s| (s.poll.sum_ns, s.site))
                    .collect();
                new.sort_by(|a, b| b.cmp(a));
                for (_, site) in new {
                    if self.series.len() >= self.max_labelled {
                        break;
                    }
                    self.slot_of[site as usize] = Some(self.series.len());
                    self.series.push((label_value(&self.declared[site as usize].location()), Series::default()));
                }
                for s in &i.sites {
                    let series = match self.slot_of.get(s.site as usize).copied().flatten() {
                        Some(k) => &mut self.series[k].1,
                        None => &mut self.other,
                    };
                    series.poll.add(&s.poll);
                    series.sched.add(&s.sched);
                    series.spawned += s.spawned;
                }
                self.lag.add(&i.lag);
                let length = i.end_ns.saturating_sub(i.start_ns).max(1) as f64;
                // Every known worker: one that polled nothing in the interval was idle.
                self.busy = self.workers.keys().map(|&w| (w, 0.0)).collect();
                for w in &i.workers {
                    self.busy.insert(w.worker, w.poll.sum_ns as f64 / length);
                }
                self.alive_tasks = i.gauges.alive_tasks;
                self.intervals += 1;
            }
            Frame::Event(Event::StallBegin(s)) => {
                let label = self.site_label(s.site);
                self.open_stalls.insert(s.id, (label, s.category));
            }
            Frame::Event(Event::StallEnd { id, duration_ns, category }) => {
                let (label, raised) =
                    self.open_stalls.remove(&id).unwrap_or_else(|| (OTHER_SITE.to_string(), StallCategory::Unknown));
                let e = self.stalls.entry((label, category.unwrap_or(raised))).or_default();
                e.0 += 1;
                e.1 += duration_ns as f64 / 1e9;
            }
            _ => {}
        }
    }

    fn site_label(&self, site: Option<u32>) -> String {
        match site.and_then(|s| self.slot_of.get(s as usize).copied().flatten()) {
            Some(k) => self.series[k].0.clone(),
            None => OTHER_SITE.to_string(),
        }
    }
}

/// Label values are written as given by prometheus-client: escape them here.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The collector prometheus-client calls on each scrape.
#[derive(Debug)]
struct Snapshot(Arc<Mutex<State>>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let st = lock(&self.0);
        let all_series = || st.series.iter().map(|(l, s)| (l.as_str(), s)).chain([(OTHER_SITE, &st.other)]);
        {
            let mut m = encoder.encode_descriptor(
                "loopscope_poll_duration_seconds",
                "Task poll durations per spawn site",
                None,
                MetricType::Histogram,
            )?;
            for (label, s) in all_series() {
                s.poll.encode(&mut m.encode_family(&[("site", label)])?)?;
            }
        }
        if st.schedule_latency {
            let mut m = encoder.encode_descriptor(
                "loopscope_schedule_latency_seconds",
                "Scheduling latency (wake to poll) per spawn site",
                None,
                MetricType::Histogram,
            )?;
            for (label, s) in all_series() {
                s.sched.encode(&mut m.encode_family(&[("site", label)])?)?;
            }
        }
        if st.lag.count > 0 {
            let mut m = encoder.encode_descriptor(
                "loopscope_lag_seconds",
                "The lag probe: how long a task woken by a yield waited to be polled (runtime-wide)",
                None,
                MetricType::Histogram,
            )?;
            st.lag.encode(&mut m)?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "loopscope_tasks_spawned",
                "Tasks spawned per spawn site",
                None,
                MetricType::Counter,
            )?;
            for (label, s) in all_series() {
                ConstCounter::new(s.spawned).encode(m.encode_family(&[("site", label)])?)?;
            }
        }
        // Families without samples are left out (a stall-free program has no stall series).
        if !st.stalls.is_empty() {
            let mut m = encoder.encode_descriptor(
                "loopscope_stalls",
                "Polls that blocked their worker longer than the stall threshold, by spawn site and category",
                None,
                MetricType::Counter,
            )?;
            for ((site, category), (n, _)) in &st.stalls {
                ConstCounter::new(*n)
                    .encode(m.encode_family(&[("site", site.as_str()), ("category", category.name())])?)?;
            }
        }
        if !st.stalls.is_empty() {
            let mut m = encoder.encode_descriptor(
                "loopscope_stalled_seconds",
                "Time workers spent blocked in stalls, by spawn site and category",
                None,
                MetricType::Counter,
            )?;
            for ((site, category), (_, secs)) in &st.stalls {
                ConstCounter::new(*secs)
                    .encode(m.encode_family(&[("site", site.as_str()), ("category", category.name())])?)?;
            }
        }
        ConstGauge::new(st.open_stalls.len() as i64).encode(encoder.encode_descriptor(
            "loopscope_stalls_in_progress",
            "Polls blocking their worker right now",
            None,
            MetricType::Gauge,
        )?)?;
        if !st.busy.is_empty() {
            let mut m = encoder.encode_descriptor(
                "loopscope_worker_busy_ratio",
                "Share of the last interval each worker thread spent polling tasks",
                None,
                MetricType::Gauge,
            )?;
            for (worker, ratio) in &st.busy {
                let thread = label_value(st.workers.get(worker).map_or("?", String::as_str));
                ConstGauge::new(*ratio).encode(
                    m.encode_family(&[("worker", worker.to_string().as_str()), ("thread", thread.as_str())])?,
                )?;
            }
        }
        ConstGauge::new(st.alive_tasks as i64).encode(encoder.encode_descriptor(
            "loopscope_tasks_alive",
            "Tasks alive in the runtime at the end of the last interval",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(st.intervals).encode(encoder.encode_descriptor(
            "loopscope_intervals",
            "Recording intervals folded into these figures",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// A running exporter.
pub(crate) struct Exporter {
    /// Where it listens (a port 0 resolved).
    pub(crate) bound: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Exporter {
    /// Listens on `addr` (loopback only unless `public`) and folds `frames` until they end.
    pub(crate) fn start(
        addr: &str,
        public: bool,
        max_labelled: usize,
        frames: Receiver<Frame>,
    ) -> Result<Exporter, Error> {
        let bad = |why: String| Error::Prometheus { addr: addr.to_string(), why };
        let parsed: SocketAddr =
            addr.parse().map_err(|_| bad("expected HOST:PORT such as 127.0.0.1:9464".to_string()))?;
        if !parsed.ip().is_loopback() && !public {
            return Err(bad(
                "a loopback address such as 127.0.0.1:9464; a public address needs prometheus_public(true) \
                 (LOOPSCOPE_PROMETHEUS_PUBLIC=1)"
                    .to_string(),
            ));
        }
        let listener = TcpListener::bind(parsed).map_err(|e| bad(e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| bad(e.to_string()))?;
        let state = Arc::new(Mutex::new(State { max_labelled, ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(Arc::clone(&state))));

        let fold_state = Arc::clone(&state);
        let folder = std::thread::Builder::new()
            .name("loopscope-prom-fold".into())
            .spawn(move || {
                for frame in frames {
                    lock(&fold_state).fold(frame);
                }
            })
            .map_err(|e| bad(format!("cannot start a thread: {e}")))?;
        let serve_stop = Arc::clone(&stop);
        let server = std::thread::Builder::new()
            .name("loopscope-prom".into())
            .spawn(move || serve(&listener, &registry, &serve_stop))
            .map_err(|e| bad(format!("cannot start a thread: {e}")))?;
        Ok(Exporter { bound, stop, threads: vec![folder, server] })
    }

    /// Stops serving; the folding thread ends with the session's frames.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers one request at a time; a client gets two seconds to send its request.
fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the listener, which outlives the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready <= 0 {
            continue;
        }
        if let Ok((stream, _)) = listener.accept() {
            let _ = answer(stream, registry);
        }
    }
}

fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if request.len() > MAX_REQUEST {
            respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"request too large\n")?;
            // Read what the client still sends (bounded, within the timeout) so that closing does
            // not reset the connection before it has read the answer.
            stream.shutdown(std::net::Shutdown::Write)?;
            let _ = std::io::copy(&mut (&mut stream).take(1 << 20), &mut std::io::sink());
            return Ok(());
        }
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => {
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, registry)
                .map_err(|_| std::io::Error::other("encoding the metrics"))?;
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body.as_bytes(),
            )
        }
        (b"GET", _) => respond(&mut stream, "404 Not Found", "text/plain", b"loopscope serves /metrics\n"),
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"GET /metrics\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1_000), 0);
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(10_000_000), 12);
        assert_eq!(bucket_of(10_000_001), 13);
        assert_eq!(bucket_of(10_000_000_000), BUCKETS_S.len() - 1);
        assert_eq!(bucket_of(60_000_000_000), BUCKETS_S.len());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value(r#"src/"odd"\name.rs:1:2"#), r#"src/\"odd\"\\name.rs:1:2"#);
        assert_eq!(label_value("a\nb"), "a\\nb");
    }
}
