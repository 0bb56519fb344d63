//! A Prometheus (OpenMetrics text) endpoint for a session's figures.
//!
//! The exporter is one more receiver of the session's frames: a thread folds every interval into
//! cumulative histograms and counters, and another answers `GET /metrics` over TCP. Both run on
//! their own threads, never on the profiled runtime; the encoding is `prometheus-client`'s.
//!
//! Label cardinality is bounded: the first [`SessionBuilder::prometheus_sites`] spawn sites to be
//! busy (the busiest of each interval first) get a `site` label of their own, from then on; every
//! other site's figures go to `site="other"` ([`OTHER_SITE`]). Each series only ever grows, so
//! `rate()` and `histogram_quantile()` work on them as on any histogram. Histogram buckets are
//! [`BUCKETS_S`]; a value counts in the first bucket whose bound holds the top of its HdrHistogram
//! bucket ([`bucket_of`]).
//!
//! [`SessionBuilder::prometheus_sites`]: crate::SessionBuilder::prometheus_sites

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use loopscope_core::model::Frame;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use crate::fleet::{BUCKETS_S, OTHER_SITE, bucket_of};
use crate::fleet::{Hist, State};
use crate::session::Error;
use crate::shared::lock;

/// Label values are written as given by prometheus-client: escape them here.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The collector prometheus-client calls on each scrape.
/// A request larger than this is not a scrape.
const MAX_REQUEST: usize = 8 * 1024;

fn encode_hist(h: &Hist, encoder: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
    let mut buckets: Vec<(f64, u64)> = BUCKETS_S.iter().copied().zip(h.buckets).collect();
    // prometheus-client writes `le="+Inf"` for f64::MAX.
    buckets.push((f64::MAX, h.buckets[BUCKETS_S.len()]));
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum_ns as f64 / 1e9, h.count, &buckets, None)
}

#[derive(Debug)]
struct Snapshot(Arc<Mutex<State>>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let st = lock(&self.0);
        let all_series = || st.all_series().map(|(l, s)| (label_value(l), s));
        {
            let mut m = encoder.encode_descriptor(
                "loopscope_poll_duration_seconds",
                "Task poll durations per spawn site",
                None,
                MetricType::Histogram,
            )?;
            for (label, s) in all_series() {
                encode_hist(&s.poll, &mut m.encode_family(&[("site", label.as_str())])?)?;
            }
        }
        if st.schedule_latency() {
            let mut m = encoder.encode_descriptor(
                "loopscope_schedule_latency_seconds",
                "Scheduling latency (wake to poll) per spawn site",
                None,
                MetricType::Histogram,
            )?;
            for (label, s) in all_series() {
                encode_hist(&s.sched, &mut m.encode_family(&[("site", label.as_str())])?)?;
            }
        }
        if st.lag.count > 0 {
            let mut m = encoder.encode_descriptor(
                "loopscope_lag_seconds",
                "The lag probe: how long a task woken by a yield waited to be polled (runtime-wide)",
                None,
                MetricType::Histogram,
            )?;
            encode_hist(&st.lag, &mut m)?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "loopscope_tasks_spawned",
                "Tasks spawned per spawn site",
                None,
                MetricType::Counter,
            )?;
            for (label, s) in all_series() {
                ConstCounter::new(s.spawned).encode(m.encode_family(&[("site", label.as_str())])?)?;
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
