//! Pushing a session's figures to an OpenTelemetry collector: OTLP/HTTP with protobuf bodies
//! (`opentelemetry-proto`'s messages), every export period and once more when the session ends.
//!
//! The same folded figures as the Prometheus endpoint (`fleet.rs`), as cumulative metrics:
//! `loopscope.poll.duration` and `loopscope.schedule.latency` (histograms in seconds per
//! `site`), `loopscope.lag` (the lean profile's probe), `loopscope.tasks.spawned`,
//! `loopscope.stalls` and `loopscope.stalled.time` (by `site` and `category`),
//! `loopscope.worker.busy_ratio` (gauge per worker) and `loopscope.tasks.alive`. Everything runs on
//! the exporter's own thread; a collector that is down costs the program nothing, and the failure
//! is reported once on stderr.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopscope_core::model::Frame;
use loopscope_core::units::unix_now_ns;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::outputs::fleet::{BUCKETS_S, Hist, State};
use crate::session::Error;

/// A running exporter; ends after its last export when the session's frames end.
pub(crate) struct OtlpExporter {
    thread: Option<JoinHandle<()>>,
}

impl OtlpExporter {
    /// `endpoint`: the collector's OTLP/HTTP base (`http://127.0.0.1:4318`) or its full metrics
    /// URL (`.../v1/metrics`).
    pub(crate) fn start(
        endpoint: &str,
        period: Duration,
        max_labelled: usize,
        frames: Receiver<Frame>,
    ) -> Result<OtlpExporter, Error> {
        let bad = |why: String| Error::Otlp { endpoint: endpoint.to_string(), why };
        let url = metrics_url(endpoint).ok_or_else(|| {
            bad("expected an http:// URL of an OTLP/HTTP collector, such as http://127.0.0.1:4318".into())
        })?;
        if period < Duration::from_millis(10) {
            return Err(bad("the export period must be at least 10ms".into()));
        }
        if !loopback_host(&url) {
            crate::hot::say(&format!(
                "warning: exporting figures (spawn sites' source paths, the program's name, host name) to {url} \
                 over plain HTTP, off this machine"
            ));
        }
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
        let thread = std::thread::Builder::new()
            .name("loopscope-otlp".into())
            .spawn(move || run(&agent, &url, period, max_labelled, &frames))
            .map_err(|e| bad(format!("cannot start a thread: {e}")))?;
        Ok(OtlpExporter { thread: Some(thread) })
    }

    /// Waits for the last export (the session's frames have ended).
    pub(crate) fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a collector URL's host is this machine.
fn loopback_host(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `http://host:port` → `http://host:port/v1/metrics`; a URL with a path is taken as it is.
fn metrics_url(endpoint: &str) -> Option<String> {
    let rest = endpoint.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    if host.is_empty() {
        return None;
    }
    Some(if path.trim_matches('/').is_empty() { format!("http://{host}/v1/metrics") } else { endpoint.to_string() })
}

fn run(agent: &ureq::Agent, url: &str, period: Duration, max_labelled: usize, frames: &Receiver<Frame>) {
    let mut state = State { max_labelled, ..State::default() };
    let mut next = Instant::now() + period;
    let mut failed = false;
    let mut export = |state: &State| {
        let Some(body) = request(state, unix_now_ns()).map(|r| r.encode_to_vec()) else { return };
        let sent = agent.post(url).header("Content-Type", "application/x-protobuf").send(&body[..]);
        match sent {
            Ok(_) => failed = false,
            Err(e) if !failed => {
                failed = true;
                crate::hot::say(&format!("OTLP export to {url} failed: {e} (retried every {period:?}; said once)"));
            }
            Err(_) => {}
        }
    };
    loop {
        match frames.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(frame) => state.fold(frame),
            Err(RecvTimeoutError::Timeout) => {
                export(&state);
                next = Instant::now() + period;
            }
            // The session ended: one last export with everything.
            Err(RecvTimeoutError::Disconnected) => {
                export(&state);
                return;
            }
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }) }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

/// The request for the figures so far; `None` before the session's header.
/// Data points of one export: cumulative since the session's start, taken now.
struct Stamp {
    start: u64,
    now: u64,
}

impl Stamp {
    fn histogram(&self, attributes: Vec<KeyValue>, h: &Hist) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            count: h.count,
            sum: Some(h.sum_ns as f64 / 1e9),
            bucket_counts: h.buckets.to_vec(),
            explicit_bounds: BUCKETS_S.to_vec(),
            ..Default::default()
        }
    }

    fn number(&self, attributes: Vec<KeyValue>, value: number_data_point::Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes,
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            value: Some(value),
            ..Default::default()
        }
    }
}

fn metric(name: &str, description: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;

fn histogram(name: &str, description: &str, data_points: Vec<HistogramDataPoint>) -> Metric {
    metric(
        name,
        description,
        "s",
        metric::Data::Histogram(Histogram { data_points, aggregation_temporality: CUMULATIVE }),
    )
}

fn counter(name: &str, description: &str, unit: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    let sum = Sum { data_points, aggregation_temporality: CUMULATIVE, is_monotonic: true };
    metric(name, description, unit, metric::Data::Sum(sum))
}

fn gauge(name: &str, description: &str, unit: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    metric(name, description, unit, metric::Data::Gauge(Gauge { data_points }))
}

/// Who sends: the service (`OTEL_SERVICE_NAME`, else the workload or the executable's name), the
/// host, the pid and the executable's name (not its command line: arguments can hold secrets).
fn resource(header: &loopscope_core::model::Header) -> Resource {
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| header.workload.clone())
        .unwrap_or_else(|| header.program().to_string());
    Resource {
        attributes: vec![
            text("service.name", &service),
            text("host.name", &header.host),
            kv("process.pid", any_value::Value::IntValue(i64::from(header.pid))),
            text("process.executable.name", header.program()),
        ],
        ..Default::default()
    }
}

/// Per spawn site: poll time, scheduling latency (full profile) and tasks spawned.
fn site_metrics(st: &State, p: &Stamp) -> Vec<Metric> {
    let site = |label: &str| vec![text("site", label)];
    let mut out = vec![histogram(
        "loopscope.poll.duration",
        "Task poll durations per spawn site",
        st.all_series().map(|(l, s)| p.histogram(site(l), &s.poll)).collect(),
    )];
    if st.schedule_latency() {
        out.push(histogram(
            "loopscope.schedule.latency",
            "Scheduling latency (wake to poll) per spawn site",
            st.all_series().map(|(l, s)| p.histogram(site(l), &s.sched)).collect(),
        ));
    }
    out.push(counter(
        "loopscope.tasks.spawned",
        "Tasks spawned per spawn site",
        "{task}",
        st.all_series().map(|(l, s)| p.number(site(l), number_data_point::Value::AsInt(s.spawned as i64))).collect(),
    ));
    out
}

/// Stalls per spawn site and category: how many, and the time they blocked.
fn stall_metrics(st: &State, p: &Stamp) -> Vec<Metric> {
    if st.stalls.is_empty() {
        return Vec::new();
    }
    let by = |site: &str, category: &str| vec![text("site", site), text("category", category)];
    let count = st
        .stalls
        .iter()
        .map(|((site, c), (n, _))| p.number(by(site, c.name()), number_data_point::Value::AsInt(*n as i64)));
    let time = st
        .stalls
        .iter()
        .map(|((site, c), (_, secs))| p.number(by(site, c.name()), number_data_point::Value::AsDouble(*secs)));
    vec![
        counter(
            "loopscope.stalls",
            "Polls that blocked their worker longer than the stall threshold",
            "{stall}",
            count.collect(),
        ),
        counter("loopscope.stalled.time", "Time workers spent blocked in stalls", "s", time.collect()),
    ]
}

/// The runtime's gauges: each worker's busy share of the last interval, and tasks alive.
fn runtime_metrics(st: &State, p: &Stamp) -> Vec<Metric> {
    let mut out = Vec::new();
    if st.lag.count > 0 {
        out.push(histogram(
            "loopscope.lag",
            "The lag probe: how long a task woken by a yield waited to be polled",
            vec![p.histogram(vec![], &st.lag)],
        ));
    }
    if !st.busy.is_empty() {
        let busy = st.busy.iter().map(|(w, ratio)| {
            let thread = st.workers.get(w).map_or("?", String::as_str);
            let attrs = vec![kv("worker", any_value::Value::IntValue(i64::from(*w))), text("thread", thread)];
            p.number(attrs, number_data_point::Value::AsDouble(*ratio))
        });
        out.push(gauge(
            "loopscope.worker.busy_ratio",
            "Share of the last interval each worker thread spent polling tasks",
            "1",
            busy.collect(),
        ));
    }
    out.push(gauge(
        "loopscope.tasks.alive",
        "Tasks alive in the runtime at the end of the last interval",
        "{task}",
        vec![p.number(vec![], number_data_point::Value::AsInt(st.alive_tasks as i64))],
    ));
    out
}

/// The export request for the figures folded so far; `None` before the session's header.
fn request(st: &State, now_ns: u64) -> Option<ExportMetricsServiceRequest> {
    let header = st.header.as_ref()?;
    let p = Stamp { start: header.start_unix_ns, now: now_ns };
    let mut metrics = site_metrics(st, &p);
    metrics.extend(stall_metrics(st, &p));
    metrics.extend(runtime_metrics(st, &p));
    Some(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(header)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "loopscope".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_metrics_path_unless_they_name_one() {
        assert_eq!(metrics_url("http://127.0.0.1:4318").as_deref(), Some("http://127.0.0.1:4318/v1/metrics"));
        assert_eq!(metrics_url("http://127.0.0.1:4318/").as_deref(), Some("http://127.0.0.1:4318/v1/metrics"));
        assert_eq!(metrics_url("http://c:4318/custom/path").as_deref(), Some("http://c:4318/custom/path"));
        assert_eq!(metrics_url("https://c:4318"), None);
        assert_eq!(metrics_url("127.0.0.1:4318"), None);
        assert_eq!(metrics_url("http:///v1/metrics"), None);
    }

    #[test]
    fn only_this_machine_is_loopback() {
        for here in ["http://127.0.0.1:4318/v1/metrics", "http://localhost:4318/x", "http://[::1]:4318/v1/metrics"] {
            assert!(loopback_host(here), "{here}");
        }
        for away in ["http://10.0.0.5:4318/v1/metrics", "http://collector:4318/v1/metrics", "http://[2001:db8::1]/x"] {
            assert!(!loopback_host(away), "{away}");
        }
    }
}
