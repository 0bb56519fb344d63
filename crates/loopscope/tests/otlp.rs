//! The OTLP exporter of a real session, pushing to a collector on loopback that decodes every
//! request with opentelemetry-proto's messages: cumulative histograms per site that agree with the
//! recording, stall counters, and a collector that is down costing the program nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use loopscope::Session;
use loopscope::core::format::Recording;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric, metric, number_data_point};
use prost::Message;

/// A minimal OTLP/HTTP collector: answers every POST with 200 and hands over the decoded body.
fn collector() -> (String, Receiver<(String, ExportMetricsServiceRequest)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Requests on one kept-alive connection, one after another.
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
                    let decoded = ExportMetricsServiceRequest::decode(&body[..]).expect("an OTLP metrics request");
                    let _ = tx.send((path, decoded));
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                    )
                    .unwrap();
                }
            });
        }
    });
    (url, rx)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn text_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn metrics(r: &ExportMetricsServiceRequest) -> &[Metric] {
    &r.resource_metrics[0].scope_metrics[0].metrics
}

/// Per site: the poll-duration histogram's (count, bucket counts).
fn poll_histograms(r: &ExportMetricsServiceRequest) -> HashMap<String, (u64, Vec<u64>)> {
    let m = metrics(r).iter().find(|m| m.name == "loopscope.poll.duration").expect("poll durations");
    let Some(metric::Data::Histogram(h)) = &m.data else { panic!("not a histogram") };
    assert_eq!(h.aggregation_temporality, AggregationTemporality::Cumulative as i32);
    assert_eq!(m.unit, "s");
    h.data_points
        .iter()
        .map(|p| {
            assert_eq!(p.explicit_bounds, loopscope::prometheus::BUCKETS_S.to_vec());
            assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
            assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count, "count = sum of the buckets");
            assert!(p.time_unix_nano >= p.start_time_unix_nano);
            (text_attr(&p.attributes, "site").unwrap(), (p.count, p.bucket_counts.clone()))
        })
        .collect()
}

#[test]
fn pushed_metrics_decode_and_agree_with_the_recording() {
    let (url, received) = collector();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otlp.loopscope");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = Session::builder()
        .record_to(&path)
        .interval(Duration::from_millis(50))
        .otlp(&url)
        .otlp_period(Duration::from_millis(100))
        .install(&mut b)
        .unwrap();
    let rt = b.build().unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..100u64 {
            handles.push(tokio::spawn(async move { tokio::time::sleep(Duration::from_millis(i % 5)).await }));
            handles.push(tokio::spawn(async { tokio::task::yield_now().await }));
        }
        for h in handles {
            h.await.unwrap();
        }
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(30)) }).await.unwrap();
    });
    drop(rt);
    session.finish().unwrap();
    // The last export is made before `finish` returns.
    let requests: Vec<_> = received.try_iter().collect();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|(path, _)| path == "/v1/metrics"));
    let (_, last) = requests.last().unwrap();

    let rec = Recording::read(&path).unwrap();
    let resource = last.resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(attr(&resource.attributes, "process.pid"), Some(&any_value::Value::IntValue(i64::from(rec.header.pid))));
    assert!(text_attr(&resource.attributes, "service.name").is_some());

    // Every poll of every site is in the last export, in the bucket the rule gives.
    let mut want: HashMap<String, (u64, Vec<u64>)> = HashMap::new();
    for interval in &rec.intervals {
        for s in &interval.sites {
            let e = want
                .entry(rec.sites[s.site as usize].location())
                .or_insert_with(|| (0, vec![0; loopscope::prometheus::BUCKETS_S.len() + 1]));
            e.0 += s.poll.count;
            for (low, n) in s.poll.buckets().unwrap() {
                e.1[loopscope::prometheus::bucket_of(loopscope::core::dist::highest_equivalent(low))] += n;
            }
        }
    }
    let got = poll_histograms(last);
    for (site, figures) in &want {
        assert_eq!(got.get(site), Some(figures), "{site}");
    }
    assert_eq!(got["other"].0, 0, "three sites fit in the labelled ones");
    // Cumulative: no export has fewer polls for a site than the one before.
    let mut previous: HashMap<String, u64> = HashMap::new();
    for (_, r) in &requests {
        for (site, (count, _)) in poll_histograms(r) {
            let before = previous.insert(site.clone(), count).unwrap_or(0);
            assert!(count >= before, "{site}: {count} after {before}");
        }
    }
    let stalls = metrics(last).iter().find(|m| m.name == "loopscope.stalls").expect("the stall is counted");
    let Some(metric::Data::Sum(sum)) = &stalls.data else { panic!("stalls are a sum") };
    assert!(sum.is_monotonic);
    assert_eq!(sum.data_points.len(), 1);
    assert_eq!(text_attr(&sum.data_points[0].attributes, "category").as_deref(), Some("sync-sleep"));
    assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsInt(1)));
}

#[test]
fn a_collector_that_is_down_costs_the_program_nothing() {
    // Nothing listens on the port of a listener just closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("down.loopscope");
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let session = Session::builder()
        .record_to(&path)
        .otlp(format!("http://127.0.0.1:{port}"))
        .otlp_period(Duration::from_millis(20))
        .install(&mut b)
        .unwrap();
    let rt = b.build().unwrap();
    let n = rt.block_on(async {
        let mut n = 0;
        for _ in 0..20 {
            n += tokio::spawn(async { 1 }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    });
    assert_eq!(n, 20);
    drop(rt);
    let report = session.finish().unwrap().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(Recording::read(&path).unwrap().footer.is_some());

    let mut b = tokio::runtime::Builder::new_current_thread();
    let err = Session::builder().otlp("https://collector:4318").install(&mut b).unwrap_err();
    assert!(err.to_string().contains("otlp") && err.to_string().contains("http://"), "{err}");
}
