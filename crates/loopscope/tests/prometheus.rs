//! The Prometheus endpoint of a real session, scraped over loopback and parsed with an
//! OpenMetrics parser: the histograms must be cumulative and agree bucket by bucket with the
//! recording's intervals; stalls are counted by site and category; bad requests do not stop it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use loopscope::Session;
use loopscope::core::format::Recording;
use loopscope::prometheus::{BUCKETS_S, OTHER_SITE, bucket_of};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// One HTTP request; returns the status line and the body.
fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> (Exposition, String) {
    let (status, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&body).unwrap_or_else(|e| panic!("{e:?}\n{body}"));
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
        // Three spawn sites with different poll times; only two get a label of their own.
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

    // Wait for the stall to reach the endpoint (its end is counted), with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (exposition, body) = loop {
        let (e, body) = scrape(addr);
        if counter(&e, "loopscope_stalls", &[("category", "sync-sleep")]) == Some(1.0) {
            break (e, body);
        }
        assert!(Instant::now() < deadline, "the stall never showed:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    };
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
fn bad_requests_get_http_errors_and_the_endpoint_keeps_serving() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let session = Session::builder().prometheus("127.0.0.1:0").install(&mut b).unwrap();
    let addr = session.prometheus_at().unwrap();
    assert!(http(addr, b"GET /other HTTP/1.1\r\n\r\n").0.contains("404"));
    assert!(http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").0.contains("405"));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(http(addr, huge.as_bytes()).0.contains("431"));
    // A client that connects and says nothing is given up on; the next scrape is answered.
    let silent = TcpStream::connect(addr).unwrap();
    let (e, _) = scrape(addr);
    assert!(e.families.contains_key("loopscope_poll_duration_seconds"));
    drop(silent);
    session.finish().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "the endpoint closes with the session");
}

#[test]
fn a_public_address_must_be_allowed() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    let err = Session::builder().prometheus("0.0.0.0:0").install(&mut b).unwrap_err();
    assert!(err.to_string().contains("prometheus") && err.to_string().contains("loopback"), "{err}");
    let err = Session::builder().prometheus("localhost").install(&mut b).unwrap_err();
    assert!(err.to_string().contains("HOST:PORT"), "{err}");
}
