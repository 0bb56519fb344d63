//! The Prometheus endpoint of a real session, scraped over loopback: in OpenMetrics (parsed with
//! an OpenMetrics parser) the histograms must be cumulative and agree bucket by bucket with the
//! recording's intervals; stalls are counted under their spawn site's label from 0; a plain scrape
//! is the text format 0.0.4 that `promtool check metrics` accepts; bad, silent and slow clients
//! neither stop it nor keep a scraper out.

use std::collections::HashMap;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loopscope::Session;
use loopscope::core::format::Recording;
use loopscope::core::model::StallCategory;
use loopscope::prometheus::{BUCKETS_S, OTHER_SITE, bucket_of};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue, PrometheusType, PrometheusValue};

#[path = "../../../tests/support/programs.rs"]
mod programs;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;
type TextExposition = MetricsExposition<PrometheusType, PrometheusValue>;

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One HTTP request; returns the response's head and body.
fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// `GET /metrics` with the given `Accept` header (none for `None`); checks the status and the
/// content type; returns the body.
fn get_metrics(addr: SocketAddr, accept: Option<&str>, content_type: &str) -> String {
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    let (head, body) = http(addr, format!("GET /metrics HTTP/1.1\r\nHost: test\r\n{accept}\r\n").as_bytes());
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}\n{body}");
    assert!(head.contains(&format!("\r\nContent-Type: {content_type}\r\n")), "{head}");
    body
}

/// A scrape as Prometheus makes it (OpenMetrics), parsed.
fn scrape(addr: SocketAddr) -> (Exposition, String) {
    let body = get_metrics(addr, Some(PROMETHEUS_ACCEPT), OPENMETRICS_TYPE);
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&body).unwrap_or_else(|e| panic!("{e:?}\n{body}"));
    (parsed, body)
}

/// A plain scrape (text format 0.0.4), parsed.
fn scrape_text(addr: SocketAddr, accept: Option<&str>) -> (TextExposition, String) {
    let body = get_metrics(addr, accept, TEXT_TYPE);
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&body).unwrap_or_else(|e| panic!("{e:?}\n{body}"));
    (parsed, body)
}

fn counter(e: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    e.families.get(family)?.iter_samples().find_map(|s| {
        let set = s.get_labelset().ok()?;
        if !labels.iter().all(|(k, v)| set.get_label_value(k) == Some(v)) {
            return None;
        }
        match &s.value {
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Gauge(g) => Some(g.as_f64()),
            _ => None,
        }
    })
}

fn text_counter(e: &TextExposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    e.families.get(family)?.iter_samples().find_map(|s| {
        let set = s.get_labelset().ok()?;
        if !labels.iter().all(|(k, v)| set.get_label_value(k) == Some(v)) {
            return None;
        }
        match &s.value {
            PrometheusValue::Counter(c) => Some(c.value.as_f64()),
            _ => None,
        }
    })
}

/// Stalls counted under a `site` label, all categories together (on a loaded machine the
/// detector may see a synchronous sleep as `preempted`, or only after it ended, as `unknown`).
fn stalls_at(e: &Exposition, site: &str) -> f64 {
    StallCategory::ALL
        .iter()
        .filter_map(|c| counter(e, "loopscope_stalls", &[("site", site), ("category", c.name())]))
        .sum()
}

/// Per `site` label: (count, cumulative bucket counts in order, ending with +Inf).
fn histograms(e: &Exposition, family: &str) -> HashMap<String, (u64, Vec<(f64, u64)>)> {
    let fam = e.families.get(family).unwrap_or_else(|| panic!("no {family}"));
    fam.iter_samples()
        .map(|s| {
            let site = s.get_labelset().unwrap().get_label_value("site").unwrap().to_string();
            let OpenMetricsValue::Histogram(h) = &s.value else { panic!("{family} is not a histogram") };
            let buckets = h.buckets.iter().map(|b| (b.upper_bound, b.count.as_f64() as u64)).collect();
            (site, (h.count.unwrap(), buckets))
        })
        .collect()
}

/// Scrapes until `done` holds for a scrape, for at most 30 s.
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Exposition) -> bool) -> (Exposition, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (e, body) = scrape(addr);
        if done(&e) {
            return (e, body);
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `f` on the current runtime; returns its handle and the spawn site the recorder gives
/// it: `file:line:col` of the call to this function.
#[track_caller]
fn spawn_here<F>(f: F) -> (tokio::task::JoinHandle<F::Output>, String)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let at = std::panic::Location::caller();
    (tokio::spawn(f), format!("{}:{}:{}", at.file(), at.line(), at.column()))
}

/// `promtool check metrics` on `body`: no remarks.
fn promtool_check(promtool: &std::path::Path, body: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics: {:?}\n{said}\n{body}", out.status);
    assert!(said.trim().is_empty(), "promtool has remarks:\n{said}");
}

async fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn scraped_histograms_are_cumulative_and_agree_with_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prom.loopscope");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = Session::builder()
        .record_to(&path)
        .interval(Duration::from_millis(50))
        .prometheus("127.0.0.1:0")
        .prometheus_sites(2)
        .install(&mut b)
        .unwrap();
    let addr = session.prometheus_at().expect("listening");
    let rt = b.build().unwrap();
    rt.block_on(async {
        // Three spawn sites with different poll times; only the first two declared (the 300 µs
        // and the 20 µs ones, spawned first) get a label of their own.
        let mut handles = Vec::new();
        for _ in 0..40 {
            handles.push(tokio::spawn(async {
                for _ in 0..5 {
                    spin(Duration::from_micros(300)).await;
                    tokio::task::yield_now().await;
                }
            }));
            handles.push(tokio::spawn(async {
                for _ in 0..5 {
                    spin(Duration::from_micros(20)).await;
                    tokio::task::yield_now().await;
                }
            }));
            handles.push(tokio::spawn(async { tokio::time::sleep(Duration::from_millis(1)).await }));
        }
        for h in handles {
            h.await.unwrap();
        }
        // One stall: a synchronous sleep of 30 ms.
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(30)) }).await.unwrap();
    });

    // Wait for the stall to reach the endpoint (its end is counted, under `other`: its site is
    // the fourth), with a deadline.
    let (exposition, body) = scrape_until(addr, "the stall", |e| {
        stalls_at(e, OTHER_SITE) >= 1.0 && counter(e, "loopscope_stalls_in_progress", &[]) == Some(0.0)
    });
    assert!(body.ends_with("# EOF\n"));
    let intervals = counter(&exposition, "loopscope_intervals", &[]).unwrap() as usize;
    let polls = histograms(&exposition, "loopscope_poll_duration_seconds");
    let sched = histograms(&exposition, "loopscope_schedule_latency_seconds");
    assert!(exposition.families.contains_key("loopscope_worker_busy_ratio"), "{body}");
    assert_eq!(polls.len(), 3, "two labelled sites and `other`: {:?}", polls.keys());
    assert!(polls.contains_key(OTHER_SITE));
    drop(rt);
    session.finish().unwrap();

    // The same figures from the recording's first `intervals` intervals, summed per label by the
    // endpoint's rule: a value counts in the first bucket that holds the top of its HdrHistogram
    // bucket.
    let rec = Recording::read(&path).unwrap();
    let sites: Vec<String> = rec.sites.iter().map(|s| s.location()).collect();
    let mut expected: HashMap<String, (u64, Vec<u64>)> = HashMap::new();
    let mut expected_sched: HashMap<String, u64> = HashMap::new();
    for interval in rec.intervals.iter().take(intervals) {
        for s in &interval.sites {
            let loc = &sites[s.site as usize];
            let label = if polls.contains_key(loc) { loc.clone() } else { OTHER_SITE.to_string() };
            let e = expected.entry(label.clone()).or_insert_with(|| (0, vec![0; BUCKETS_S.len() + 1]));
            e.0 += s.poll.count;
            for (low, n) in s.poll.buckets().unwrap() {
                e.1[bucket_of(loopscope::core::dist::highest_equivalent(low))] += n;
            }
            *expected_sched.entry(label).or_default() += s.sched.count;
        }
    }
    for (label, (count, buckets)) in &polls {
        let (want_count, want) = &expected[label];
        assert_eq!(count, want_count, "{label}");
        assert_eq!(buckets.len(), BUCKETS_S.len() + 1, "{label}: every bound and +Inf");
        let mut cumulative = 0;
        for (i, (bound, n)) in buckets.iter().enumerate() {
            cumulative += want[i];
            assert_eq!(*n, cumulative, "{label} le={bound}");
        }
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0), "cumulative: {buckets:?}");
        assert_eq!(buckets.last().unwrap().1, *count, "+Inf holds every value");
        assert_eq!(sched[label].0, expected_sched[label], "{label}");
    }
    // The 300 µs site's polls land at or above 250 µs; the 20 µs site's below it.
    let slow = polls.iter().find(|(l, (n, b))| *l != OTHER_SITE && *n > 0 && b[7].1 < *n / 2).map(|(l, _)| l.clone());
    assert!(slow.is_some(), "a labelled site with most polls above 250 µs: {polls:?}");
}

#[test]
fn stalls_carry_their_spawn_sites_label_from_zero_and_a_plain_scrape_passes_promtool() {
    const TEST: &str = "stalls_carry_their_spawn_sites_label_from_zero_and_a_plain_scrape_passes_promtool";
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    // Intervals of a second, and no stacks to symbolize: a stall is reported within milliseconds,
    // long before the interval that first sees its task ends.
    let session = Session::builder()
        .interval(Duration::from_secs(1))
        .stall_threshold(Duration::from_millis(10))
        .capture_stacks(false)
        .prometheus("127.0.0.1:0")
        .install(&mut b)
        .unwrap();
    let addr = session.prometheus_at().expect("listening");
    let rt = b.build().unwrap();
    let in_runtime = rt.enter();
    let promtool = programs::program_or_skip(
        &format!("{TEST} (its `promtool check metrics` part)"),
        "promtool",
        "`apt-get install prometheus` on Debian and Ubuntu, which ships promtool",
    );

    // A task that will block its worker in a synchronous sleep once told to.
    let (go, told) = tokio::sync::oneshot::channel::<()>();
    let (sleeper, site) = spawn_here(async move {
        told.await.unwrap();
        std::thread::sleep(Duration::from_millis(60));
    });
    let at_site = [("site", site.as_str()), ("category", "sync-sleep")];

    // Scrape before the stall: the site is declared, so its stall series exist, at 0 (every
    // category's, and `other`'s: all 0 unless the machine is loaded enough to stall a poll).
    let (before, body) =
        scrape_until(addr, "the stall series at 0", |e| counter(e, "loopscope_stalls", &at_site).is_some());
    assert_eq!(counter(&before, "loopscope_stalls", &at_site), Some(0.0), "{body}");
    assert_eq!(counter(&before, "loopscope_stalled_seconds", &at_site), Some(0.0), "{body}");
    for category in StallCategory::ALL {
        for label in [site.as_str(), OTHER_SITE] {
            let series = [("site", label), ("category", category.name())];
            assert!(counter(&before, "loopscope_stalls", &series).is_some(), "{series:?}:\n{body}");
        }
    }
    let (text_before, plain_before) = scrape_text(addr, None);
    assert_eq!(text_counter(&text_before, "loopscope_stalls_total", &at_site), Some(0.0), "{plain_before}");
    if let Some(promtool) = &promtool {
        promtool_check(promtool, &plain_before);
    }

    // The stall; and, just after an interval has ended, a task at a new site whose first poll
    // stalls: its stall is reported before any interval has counted a poll or spawn there.
    let intervals = counter(&before, "loopscope_intervals", &[]).unwrap();
    scrape_until(addr, "a new interval", |e| counter(e, "loopscope_intervals", &[]) > Some(intervals));
    go.send(()).unwrap();
    let (first_poll, first_poll_site) = spawn_here(async { std::thread::sleep(Duration::from_millis(60)) });
    futures_executor::block_on(async {
        sleeper.await.unwrap();
        first_poll.await.unwrap();
    });
    // No more polls; then two more intervals, for any stall raised late to come in.
    drop(in_runtime);
    drop(rt);
    let (now, _) = scrape(addr);
    let intervals = counter(&now, "loopscope_intervals", &[]).unwrap();

    // Scrape after: the stalls counted under their own sites' labels (normally one
    // `sync-sleep` each).
    let (after, body) = scrape_until(addr, "both stalls", |e| {
        stalls_at(e, &site) >= 1.0
            && stalls_at(e, &first_poll_site) >= 1.0
            && counter(e, "loopscope_stalls_in_progress", &[]) == Some(0.0)
            && counter(e, "loopscope_intervals", &[]) >= Some(intervals + 2.0)
    });
    let secs: f64 = StallCategory::ALL
        .iter()
        .filter_map(|c| counter(&after, "loopscope_stalled_seconds", &[("site", &site), ("category", c.name())]))
        .sum();
    assert!((0.05..30.0).contains(&secs), "a 60 ms sleep: {secs} s\n{body}");
    let (text_after, plain_after) = scrape_text(addr, Some("text/plain;version=0.0.4"));
    let text_stalls_at = |site: &str| -> f64 {
        StallCategory::ALL
            .iter()
            .filter_map(|c| {
                text_counter(&text_after, "loopscope_stalls_total", &[("site", site), ("category", c.name())])
            })
            .sum()
    };
    assert_eq!(text_stalls_at(&site), stalls_at(&after, &site), "{plain_after}");
    for family in ["loopscope_stalls_total", "loopscope_stalled_seconds_total", "loopscope_tasks_spawned_total"] {
        assert!(plain_after.contains(&format!("# HELP {family} ")), "{family}:\n{plain_after}");
        assert!(plain_after.contains(&format!("# TYPE {family} counter\n")), "{family}:\n{plain_after}");
    }
    assert!(!plain_after.contains("# EOF"), "{plain_after}");
    if let Some(promtool) = &promtool {
        promtool_check(promtool, &plain_after);
    }

    // The report files the same stalls under the same spawn sites, category by category.
    let report = session.finish().unwrap().unwrap();
    for label in [&site, &first_poll_site] {
        let mut in_report: HashMap<&str, u64> = HashMap::new();
        for g in report.stalls.iter().filter(|g| g.spawn_site.as_ref() == Some(label)) {
            *in_report.entry(g.category.name()).or_default() += g.count;
        }
        assert!(!in_report.is_empty(), "the report has no stall at {label}: {:?}", report.stalls);
        for category in StallCategory::ALL {
            let n = in_report.get(category.name()).copied().unwrap_or(0);
            let series = [("site", label.as_str()), ("category", category.name())];
            assert_eq!(
                counter(&after, "loopscope_stalls", &series),
                Some(n as f64),
                "{series:?}: {in_report:?}\n{body}"
            );
        }
    }
}

#[test]
fn bad_requests_get_http_errors_and_the_endpoint_keeps_serving() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let session = Session::builder().prometheus("127.0.0.1:0").install(&mut b).unwrap();
    let addr = session.prometheus_at().unwrap();
    assert!(http(addr, b"GET /other HTTP/1.1\r\n\r\n").0.contains("404"));
    assert!(http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").0.contains("405"));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(http(addr, huge.as_bytes()).0.contains("431"));
    session.finish().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "the endpoint closes with the session");
}

#[test]
fn silent_and_slow_clients_neither_keep_a_scraper_out_nor_stay() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let session = Session::builder().prometheus("127.0.0.1:0").install(&mut b).unwrap();
    let addr = session.prometheus_at().unwrap();
    // Clients that connect and say nothing, one that says half a request, and one that sends
    // its request a byte every 100 ms (never a whole one: it would take over 13 minutes).
    let mut silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: te").unwrap();
    silent.push(half);
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let request = format!("GET /metrics HTTP/1.1\r\nX-Slow: {}", "a".repeat(8000));
        for byte in request.bytes() {
            if started.elapsed() > Duration::from_secs(60) || s.write_all(&[byte]).is_err() {
                break;
            }
            // Waits for the endpoint to close the connection, 100 ms at a time.
            match s.read(&mut [0u8; 64]) {
                Ok(0) => break,
                Ok(_) => return None, // an answer to half a request
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        Some(started.elapsed()).filter(|t| *t <= Duration::from_secs(60))
    });

    // A scrape is answered while they all hold their connections.
    let (e, _) = scrape(addr);
    assert!(e.families.contains_key("loopscope_poll_duration_seconds"));
    let (e, _) = scrape_text(addr, None);
    assert!(e.families.contains_key("loopscope_poll_duration_seconds"));
    for (i, s) in silent.iter_mut().enumerate() {
        s.set_nonblocking(true).unwrap();
        let r = s.read(&mut [0u8; 16]);
        assert!(matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock), "client {i} was still open: {r:?}");
        s.set_nonblocking(false).unwrap();
    }
    // Then the endpoint closes each of them at its deadline (a few seconds).
    for (i, mut s) in silent.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let r = s.read(&mut [0u8; 16]);
        assert!(
            matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "client {i}: {r:?}"
        );
    }
    let closed_after = slow.join().unwrap();
    assert!(closed_after.is_some(), "the endpoint did not close the slow client within a minute");
    let (e, _) = scrape(addr);
    assert!(e.families.contains_key("loopscope_intervals"));
    session.finish().unwrap();
}

#[test]
fn a_public_address_must_be_allowed() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    let err = Session::builder().prometheus("0.0.0.0:0").install(&mut b).unwrap_err();
    assert!(err.to_string().contains("prometheus") && err.to_string().contains("loopback"), "{err}");
    let err = Session::builder().prometheus("localhost").install(&mut b).unwrap_err();
    assert!(err.to_string().contains("HOST:PORT"), "{err}");
}
