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
fn request(st: &State, now_ns: u64) -> Option<ExportMetricsServiceRequest> {
    let header = st.header.as_ref()?;
    let start = header.start_unix_ns;
    let program = header.command_line.first().map_or("program", |s| s.as_str());
    let service = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        header.workload.clone().unwrap_or_else(|| {
            std::path::Path::new(program).file_name().map_or(program.into(), |n| n.to_string_lossy().into_owned())
        })
    });
    let resource = Resource {
        attributes: vec![
            text("service.name", &service),
            text("host.name", &header.host),
            kv("process.pid", any_value::Value::IntValue(i64::from(header.pid))),
            // The executable's name, not its command line: arguments can hold secrets.
            text("process.executable.name", header.program()),
        ],
        ..Default::default()
    };
    let histogram = |attributes: Vec<KeyValue>, h: &Hist| HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now_ns,
        count: h.count,
        sum: Some(h.sum_ns as f64 / 1e9),
        bucket_counts: h.buckets.to_vec(),
        explicit_bounds: BUCKETS_S.to_vec(),
        ..Default::default()
    };
    let number = |attributes: Vec<KeyValue>, value: number_data_point::Value| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now_ns,
        value: Some(value),
        ..Default::default()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let metric = |name: &str, description: &str, unit: &str, data: metric::Data| Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    };
    // A histogram metric with one data point per spawn site.
    let site_histogram = |name: &str, description: &str, pick: fn(&crate::outputs::fleet::Series) -> &Hist| {
        let data_points = st.all_series().map(|(label, s)| histogram(vec![text("site", label)], pick(s))).collect();
        metric(
            name,
            description,
            "s",
            metric::Data::Histogram(Histogram { data_points, aggregation_temporality: cumulative }),
        )
    };
    let mut metrics =
        vec![site_histogram("loopscope.poll.duration", "Task poll durations per spawn site", |s| &s.poll)];
    if st.schedule_latency() {
        metrics.push(site_histogram(
            "loopscope.schedule.latency",
            "Scheduling latency (wake to poll) per spawn site",
            |s| &s.sched,
        ));
    }
    if st.lag.count > 0 {
        metrics.push(metric(
            "loopscope.lag",
            "The lag probe: how long a task woken by a yield waited to be polled",
            "s",
            metric::Data::Histogram(Histogram {
                data_points: vec![histogram(vec![], &st.lag)],
                aggregation_temporality: cumulative,
            }),
        ));
    }
    let counter = |points: Vec<NumberDataPoint>| {
        metric::Data::Sum(Sum { data_points: points, aggregation_temporality: cumulative, is_monotonic: true })
    };
    metrics.push(metric(
        "loopscope.tasks.spawned",
        "Tasks spawned per spawn site",
        "{task}",
        counter(
            st.all_series()
                .map(|(label, s)| number(vec![text("site", label)], number_data_point::Value::AsInt(s.spawned as i64)))
                .collect(),
        ),
    ));
    if !st.stalls.is_empty() {
        let by = |site: &str, category: &str| vec![text("site", site), text("category", category)];
        metrics.push(metric(
            "loopscope.stalls",
            "Polls that blocked their worker longer than the stall threshold",
            "{stall}",
            counter(
                st.stalls
                    .iter()
                    .map(|((site, c), (n, _))| number(by(site, c.name()), number_data_point::Value::AsInt(*n as i64)))
                    .collect(),
            ),
        ));
        metrics.push(metric(
            "loopscope.stalled.time",
            "Time workers spent blocked in stalls",
            "s",
            counter(
                st.stalls
                    .iter()
                    .map(|((site, c), (_, secs))| number(by(site, c.name()), number_data_point::Value::AsDouble(*secs)))
                    .collect(),
            ),
        ));
    }
    if !st.busy.is_empty() {
        metrics.push(metric(
            "loopscope.worker.busy_ratio",
            "Share of the last interval each worker thread spent polling tasks",
            "1",
            metric::Data::Gauge(Gauge {
                data_points: st
                    .busy
                    .iter()
                    .map(|(w, ratio)| {
                        let thread = st.workers.get(w).map_or("?", String::as_str);
                        let attrs =
                            vec![kv("worker", any_value::Value::IntValue(i64::from(*w))), text("thread", thread)];
                        number(attrs, number_data_point::Value::AsDouble(*ratio))
                    })
                    .collect(),
            }),
        ));
    }
    metrics.push(metric(
        "loopscope.tasks.alive",
        "Tasks alive in the runtime at the end of the last interval",
        "{task}",
        metric::Data::Gauge(Gauge {
            data_points: vec![number(vec![], number_data_point::Value::AsInt(st.alive_tasks as i64))],
        }),
    ));
    Some(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
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
