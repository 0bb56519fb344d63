//! A Prometheus endpoint for a session's figures, in the Prometheus text format 0.0.4 or, to
//! clients that ask for it, OpenMetrics 1.0.0 text.
//!
//! The exporter is one more receiver of the session's frames: a thread folds every interval into
//! cumulative histograms and counters, and another answers `GET /metrics` over TCP. Both run on
//! their own threads, never on the profiled runtime.
//!
//! **Formats.** A client whose `Accept` header asks for `application/openmetrics-text` (as
//! Prometheus does) gets OpenMetrics (`application/openmetrics-text; version=1.0.0`); any other
//! client gets the text format 0.0.4 (`text/plain; version=0.0.4`), with `HELP` and `TYPE` for
//! every family under the name its samples carry (`loopscope_stalls_total`), as
//! `promtool check metrics` expects.
//!
//! **Labels.** Cardinality is bounded: the first [`SessionBuilder::prometheus_sites`] spawn sites
//! the session declares (the order they are first seen) get a `site` label of their own as soon as
//! they are declared, for the rest of the run; every other site's figures go to `site="other"`
//! ([`OTHER_SITE`]). The stall counters exist at 0 for every labelled site (and `other`) and every
//! category from then on, so `increase()` counts the first stall of each series. Each series only
//! ever grows, so `rate()` and `histogram_quantile()` work on them as on any histogram. Histogram
//! buckets are [`BUCKETS_S`]; a value counts in the first bucket whose bound holds the top of its
//! HdrHistogram bucket ([`bucket_of`]).
//!
//! **Clients.** One thread serves up to 32 connections at once (poll(2)); each connection has 5 s
//! from accept to the end of its answer, so silent or slow clients neither keep a scraper out nor
//! stay longer.
//!
//! [`SessionBuilder::prometheus_sites`]: crate::SessionBuilder::prometheus_sites

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopscope_core::model::{Frame, StallCategory};

use crate::hot::lock;
pub use crate::outputs::fleet::{BUCKETS_S, OTHER_SITE, bucket_of};
use crate::outputs::fleet::{Hist, State};
use crate::session::Error;

/// The `le` label values of [`BUCKETS_S`], then `+Inf` (spelled as earlier versions spelled them,
/// so that a series keeps its identity across versions).
const BUCKET_LE: [&str; BUCKETS_S.len() + 1] = [
    "0.000001",
    "0.0000025",
    "0.000005",
    "0.00001",
    "0.000025",
    "0.00005",
    "0.0001",
    "0.00025",
    "0.0005",
    "0.001",
    "0.0025",
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "0.5",
    "1.0",
    "2.5",
    "5.0",
    "10.0",
    "+Inf",
];

/// Connections served at once; further clients wait in the listen queue until one ends.
const MAX_CONNECTIONS: usize = 32;
/// How long a connection may last from accept: reading the request and writing the answer.
const DEADLINE: Duration = Duration::from_secs(5);
/// A request larger than this is not a scrape.
const MAX_REQUEST: usize = 8 * 1024;
/// What is read (and thrown away) after an answer, until the client closes: closing with unread
/// bytes would reset the connection, and the client could lose the answer.
const MAX_DRAIN: usize = 1 << 20;
/// How often the serving thread looks at its stop flag.
const TICK: Duration = Duration::from_millis(100);

/// The two exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// The Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The format for a request's `Accept` header values: OpenMetrics when one of them asks for
    /// `application/openmetrics-text` at least as much as for `text/plain` (by `q`), the text
    /// format otherwise (no `Accept`, `*/*`, `text/plain`).
    fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let (mut openmetrics, mut text) = (0.0f64, 0.0f64);
        for range in accept.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f64>().unwrap_or(0.0));
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(q);
            } else if media.eq_ignore_ascii_case("text/plain") {
                text = text.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics >= text { Format::OpenMetrics } else { Format::Text }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A sample's value.
enum Num {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Num::Int(n) => write!(f, "{n}"),
            Num::Float(x) if x.is_nan() => f.write_str("NaN"),
            Num::Float(x) if x == f64::INFINITY => f.write_str("+Inf"),
            Num::Float(x) if x == f64::NEG_INFINITY => f.write_str("-Inf"),
            // `{:?}` keeps a decimal point or an exponent (`1.0`, `2.5e-7`), which both formats read.
            Num::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// An exposition being written.
struct Exposition {
    out: String,
    format: Format,
}

impl Exposition {
    /// Starts a family: its `HELP` and `TYPE` lines. A counter's `name` is without `_total`, which
    /// its samples carry (and, in the text format, its `HELP` and `TYPE` lines).
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (suffix, kind) = match (kind, self.format) {
            (Kind::Counter, Format::Text) => ("_total", "counter"),
            (Kind::Counter, Format::OpenMetrics) => ("", "counter"),
            (Kind::Gauge, _) => ("", "gauge"),
            (Kind::Histogram, _) => ("", "histogram"),
        };
        let mut escaped = help.replace('\\', "\\\\").replace('\n', "\\n");
        if self.format == Format::OpenMetrics {
            escaped = escaped.replace('"', "\\\"");
        }
        let _ = writeln!(self.out, "# HELP {name}{suffix} {escaped}");
        let _ = writeln!(self.out, "# TYPE {name}{suffix} {kind}");
    }

    fn sample(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], value: Num) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(self.out, "{sep}{k}=\"{}\"", label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter's sample (`name` without `_total`).
    fn counter(&mut self, name: &str, labels: &[(&str, &str)], value: Num) {
        self.sample(name, "_total", labels, value);
    }

    /// A histogram's samples: cumulative buckets ending with `+Inf`, count, sum in seconds.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Hist) {
        let mut cumulative = 0;
        for (le, n) in BUCKET_LE.iter().zip(h.buckets) {
            cumulative += n;
            let with_le: Vec<(&str, &str)> = labels.iter().copied().chain([("le", *le)]).collect();
            self.sample(name, "_bucket", &with_le, Num::Int(cumulative));
        }
        self.sample(name, "_count", labels, Num::Int(h.count));
        self.sample(name, "_sum", labels, Num::Float(h.sum_ns as f64 / 1e9));
    }
}

/// Escapes a label value (the same in both formats).
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The session's figures in `format`.
fn render(st: &State, format: Format) -> String {
    let mut e = Exposition { out: String::with_capacity(64 * 1024), format };
    let sites: Vec<(&str, &crate::outputs::fleet::Series)> = st.all_series().collect();
    let name = "loopscope_poll_duration_seconds";
    e.family(name, Kind::Histogram, "Task poll durations per spawn site");
    for (site, s) in &sites {
        e.histogram(name, &[("site", site)], &s.poll);
    }
    if st.schedule_latency() {
        let name = "loopscope_schedule_latency_seconds";
        e.family(name, Kind::Histogram, "Scheduling latency (wake to poll) per spawn site");
        for (site, s) in &sites {
            e.histogram(name, &[("site", site)], &s.sched);
        }
    }
    if st.lag.count > 0 {
        let name = "loopscope_lag_seconds";
        e.family(
            name,
            Kind::Histogram,
            "The lag probe: how long a task woken by a yield waited to be polled (runtime-wide)",
        );
        e.histogram(name, &[], &st.lag);
    }
    let name = "loopscope_tasks_spawned";
    e.family(name, Kind::Counter, "Tasks spawned per spawn site");
    for (site, s) in &sites {
        e.counter(name, &[("site", site)], Num::Int(s.spawned));
    }
    // Every (site, category) from the moment the site has its label, at 0 until its first stall:
    // a series born at 1 would hide its first stall from increase().
    let mut stalls: Vec<(&str, StallCategory, u64, f64)> = Vec::new();
    for (site, _) in &sites {
        for category in StallCategory::ALL {
            let (n, secs) = st.stalls.get(&(site.to_string(), category)).copied().unwrap_or_default();
            stalls.push((site, category, n, secs));
        }
    }
    // (None expected: every stall is filed under a series' label or `other`.)
    for ((site, category), (n, secs)) in &st.stalls {
        if !sites.iter().any(|(l, _)| l == site) {
            stalls.push((site, *category, *n, *secs));
        }
    }
    let name = "loopscope_stalls";
    e.family(
        name,
        Kind::Counter,
        "Polls that blocked their worker longer than the stall threshold, by spawn site and category",
    );
    for (site, category, n, _) in &stalls {
        e.counter(name, &[("site", site), ("category", category.name())], Num::Int(*n));
    }
    let name = "loopscope_stalled_seconds";
    e.family(name, Kind::Counter, "Time workers spent blocked in stalls, by spawn site and category");
    for (site, category, _, secs) in &stalls {
        e.counter(name, &[("site", site), ("category", category.name())], Num::Float(*secs));
    }
    let name = "loopscope_stalls_in_progress";
    e.family(name, Kind::Gauge, "Polls blocking their worker right now");
    e.sample(name, "", &[], Num::Int(st.tracker.open_count() as u64));
    if !st.busy.is_empty() {
        let name = "loopscope_worker_busy_ratio";
        e.family(name, Kind::Gauge, "Share of the last interval each worker thread spent polling tasks");
        for (worker, ratio) in &st.busy {
            let thread = st.workers.get(worker).map_or("?", String::as_str);
            e.sample(name, "", &[("worker", &worker.to_string()), ("thread", thread)], Num::Float(*ratio));
        }
    }
    let name = "loopscope_tasks_alive";
    e.family(name, Kind::Gauge, "Tasks alive in the runtime at the end of the last interval");
    e.sample(name, "", &[], Num::Int(st.alive_tasks));
    let name = "loopscope_intervals";
    e.family(name, Kind::Counter, "Recording intervals folded into these figures");
    e.counter(name, &[], Num::Int(st.intervals));
    if format == Format::OpenMetrics {
        e.out.push_str("# EOF\n");
    }
    e.out
}

/// Prints, once, that the endpoint at `bound` is not on loopback (when it is not). A failed write
/// (a closed stderr) is not the program's error and is ignored.
fn warn_if_public(bound: SocketAddr, stderr: &mut dyn Write) {
    if !bound.ip().is_loopback() {
        let _ = writeln!(
            stderr,
            "loopscope: warning: the Prometheus endpoint listens on {bound}, not on loopback: anyone who can \
             reach it can read this program's figures and the source file names in their labels"
        );
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
        listener.set_nonblocking(true).map_err(|e| bad(e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| bad(e.to_string()))?;
        let state = Arc::new(Mutex::new(State { max_labelled, ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));

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
            .spawn(move || serve(&listener, &state, &serve_stop))
            .map_err(|e| bad(format!("cannot start a thread: {e}")))?;
        warn_if_public(bound, &mut std::io::stderr());
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

/// Where a connection is.
enum Phase {
    /// Reading the request.
    Reading(Vec<u8>),
    /// Writing the answer, from `at`.
    Writing { answer: Vec<u8>, at: usize },
    /// Answered and shut for writing: reading what the client still sends until it closes.
    Draining { read: usize },
}

struct Conn {
    stream: TcpStream,
    /// When it is closed, whatever its phase.
    deadline: Instant,
    phase: Phase,
}

impl Conn {
    /// What to wait for.
    fn events(&self) -> libc::c_short {
        match self.phase {
            Phase::Writing { .. } => libc::POLLOUT,
            Phase::Reading(_) | Phase::Draining { .. } => libc::POLLIN,
        }
    }

    /// Goes as far as the socket allows without waiting; false once the connection is done.
    fn step(&mut self, state: &Mutex<State>) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            // Ok(None): go on; Ok(Some(next)): go on in `next`; an end of file ends the connection.
            let moved: std::io::Result<Option<Phase>> = match &mut self.phase {
                Phase::Reading(request) => self.stream.read(&mut buf).and_then(|n| {
                    if n == 0 {
                        return Err(ErrorKind::UnexpectedEof.into());
                    }
                    request.extend_from_slice(&buf[..n]);
                    Ok(answer(request, state).map(|answer| Phase::Writing { answer, at: 0 }))
                }),
                Phase::Writing { answer, at } => self.stream.write(&answer[*at..]).and_then(|n| {
                    if n == 0 {
                        return Err(ErrorKind::WriteZero.into());
                    }
                    *at += n;
                    Ok((*at == answer.len()).then_some(Phase::Draining { read: 0 }))
                }),
                Phase::Draining { read } => self.stream.read(&mut buf).and_then(|n| {
                    *read += n;
                    if n == 0 || *read > MAX_DRAIN { Err(ErrorKind::UnexpectedEof.into()) } else { Ok(None) }
                }),
            };
            match moved {
                Ok(None) => {}
                Ok(Some(next)) => {
                    if matches!(next, Phase::Draining { .. }) {
                        let _ = self.stream.shutdown(Shutdown::Write);
                    }
                    self.phase = next;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// Serves connections until `stop`: every open connection is read or written as soon as its
/// socket is ready, and closed at its deadline.
fn serve(listener: &TcpListener, state: &Mutex<State>, stop: &AtomicBool) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    // After a failed accept (out of file descriptors), the listener is left alone for a tick
    // rather than polled in a tight loop.
    let mut accept_after = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        conns.retain(|c| c.deadline > now);
        let accepting = conns.len() < MAX_CONNECTIONS && now >= accept_after;
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: if accepting { libc::POLLIN } else { 0 },
            revents: 0,
        });
        fds.extend(conns.iter().map(|c| libc::pollfd { fd: c.stream.as_raw_fd(), events: c.events(), revents: 0 }));
        let wait = conns.iter().map(|c| c.deadline.saturating_duration_since(now)).chain([TICK]).min().unwrap_or(TICK);
        let wait_ms = wait.as_millis().clamp(1, TICK.as_millis()) as libc::c_int;
        // SAFETY: `fds` holds `fds.len()` pollfds whose descriptors stay open during the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if ready <= 0 {
            continue;
        }
        let mut ready_conns = fds[1..].iter().map(|fd| fd.revents != 0);
        conns.retain_mut(|c| !ready_conns.next().unwrap_or(false) || c.step(state));
        if fds[0].revents == 0 {
            continue;
        }
        while conns.len() < MAX_CONNECTIONS {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut conn =
                        Conn { stream, deadline: Instant::now() + DEADLINE, phase: Phase::Reading(Vec::new()) };
                    if conn.step(state) {
                        conns.push(conn);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    accept_after = Instant::now() + TICK;
                    break;
                }
            }
        }
    }
}

/// The answer to a request, once it is complete (or too large to be a scrape).
fn answer(request: &[u8], state: &Mutex<State>) -> Option<Vec<u8>> {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (request.len() > MAX_REQUEST)
            .then(|| response("431 Request Header Fields Too Large", "text/plain", b"request too large\n"));
    };
    let head = String::from_utf8_lossy(&request[..end]);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, value)| value.trim());
    Some(match (method, path) {
        ("GET", "/metrics") => {
            let format = Format::negotiate(accept);
            let body = render(&lock(state), format);
            response("200 OK", format.content_type(), body.as_bytes())
        }
        ("GET", _) => response("404 Not Found", "text/plain", b"loopscope serves /metrics\n"),
        _ => response("405 Method Not Allowed", "text/plain", b"GET /metrics\n"),
    })
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_core::model::{Event, SiteDecl, Stall};

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
    fn le_labels_spell_the_bucket_bounds() {
        for (le, bound) in BUCKET_LE.iter().zip(BUCKETS_S) {
            assert_eq!(le.parse::<f64>().unwrap(), bound, "{le}");
        }
        assert_eq!(BUCKET_LE[BUCKETS_S.len()], "+Inf");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value(r#"src/"odd"\name.rs:1:2"#), r#"src/\"odd\"\\name.rs:1:2"#);
        assert_eq!(label_value("a\nb"), "a\\nb");
    }

    #[test]
    fn openmetrics_only_for_clients_that_ask_for_it() {
        use Format::{OpenMetrics, Text};
        // What Prometheus 2.x and 3.x send.
        let prometheus2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                           q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate([prometheus2]), OpenMetrics);
        let prometheus3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                           text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate([prometheus3]), OpenMetrics);
        assert_eq!(Format::negotiate(["Application/OpenMetrics-Text"]), OpenMetrics);
        assert_eq!(Format::negotiate(["text/plain", "application/openmetrics-text"]), OpenMetrics);
        assert_eq!(Format::negotiate([]), Text);
        assert_eq!(Format::negotiate(["*/*"]), Text);
        assert_eq!(Format::negotiate(["text/plain;version=0.0.4"]), Text);
        assert_eq!(Format::negotiate(["application/openmetrics-text;q=0"]), Text);
        assert_eq!(Format::negotiate(["application/openmetrics-text;q=0.2, text/plain;q=0.9"]), Text);
        assert_eq!(Format::negotiate(["application/json"]), Text);
    }

    #[test]
    fn floats_keep_a_point_or_an_exponent() {
        assert_eq!(Num::Float(1.0).to_string(), "1.0");
        assert_eq!(Num::Float(0.25).to_string(), "0.25");
        assert_eq!(Num::Float(2.5e-9).to_string(), "2.5e-9");
        assert_eq!(Num::Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Num::Int(42).to_string(), "42");
    }

    /// A state with one declared site (`src/a.rs:1:2`) and one finished stall there.
    fn state_with_a_stall() -> State {
        let mut st = State { max_labelled: 20, ..State::default() };
        st.fold(Frame::Sites(vec![SiteDecl { id: 0, file: "src/a.rs".into(), line: 1, column: 2 }]));
        let stall = Stall { category: StallCategory::SyncSleep, ..Stall::unknown(7, 0, Some(0), 0, 0, false) };
        st.fold(Frame::Event(Event::StallBegin(stall)));
        st.fold(Frame::Event(Event::StallEnd { id: 7, duration_ns: 25_000_000, category: None }));
        st
    }

    #[test]
    fn the_text_format_names_counters_with_total_in_help_and_type() {
        let text = render(&state_with_a_stall(), Format::Text);
        assert!(text.contains("# HELP loopscope_stalls_total Polls that blocked"), "{text}");
        assert!(text.contains("# TYPE loopscope_stalls_total counter\n"), "{text}");
        assert!(text.contains("loopscope_stalls_total{site=\"src/a.rs:1:2\",category=\"sync-sleep\"} 1\n"), "{text}");
        assert!(
            text.contains("loopscope_stalled_seconds_total{site=\"src/a.rs:1:2\",category=\"sync-sleep\"} 0.025\n")
        );
        assert!(!text.contains("# EOF"), "{text}");
        let om = render(&state_with_a_stall(), Format::OpenMetrics);
        assert!(om.contains("# TYPE loopscope_stalls counter\n"), "{om}");
        assert!(om.contains("loopscope_stalls_total{site=\"src/a.rs:1:2\",category=\"sync-sleep\"} 1\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        // Every family has its HELP and TYPE under the name of its samples.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            let family = if text.contains(&format!("# TYPE {family} ")) { family } else { name };
            assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {name}:\n{text}");
        }
    }

    #[test]
    fn stall_counters_exist_at_zero_for_every_site_and_category_once_declared() {
        let mut st = State { max_labelled: 1, ..State::default() };
        st.fold(Frame::Sites(vec![
            SiteDecl { id: 0, file: "src/a.rs".into(), line: 1, column: 2 },
            SiteDecl { id: 1, file: "src/b.rs".into(), line: 3, column: 4 },
        ]));
        let text = render(&st, Format::Text);
        for site in ["src/a.rs:1:2", OTHER_SITE] {
            for c in StallCategory::ALL {
                let series = format!("loopscope_stalls_total{{site=\"{site}\",category=\"{}\"}} 0\n", c.name());
                assert!(text.contains(&series), "{series} in:\n{text}");
            }
        }
        assert!(!text.contains("src/b.rs"), "beyond the cap: {text}");
    }

    #[test]
    fn a_public_address_is_warned_about_once_and_a_closed_stderr_is_no_error() {
        let mut out = Vec::new();
        warn_if_public("127.0.0.1:9464".parse().unwrap(), &mut out);
        warn_if_public("[::1]:9464".parse().unwrap(), &mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        warn_if_public("0.0.0.0:9464".parse().unwrap(), &mut out);
        let printed = String::from_utf8(out).unwrap();
        assert_eq!(printed.lines().count(), 1, "{printed}");
        assert!(printed.contains("0.0.0.0:9464") && printed.contains("anyone who can reach it"), "{printed}");
        assert!(printed.contains("source file names"), "{printed}");

        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(libc::EBADF))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::from_raw_os_error(libc::EBADF))
            }
        }
        warn_if_public("192.0.2.1:9464".parse().unwrap(), &mut Closed);
    }
}
