//! `tracing` spans (the `tracing` feature): a server whose connections all come from one
//! `tokio::spawn` is broken down by the spans its request paths run in, and stalls reach the
//! program's own `tracing` subscriber as WARN events.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use loopscope::Session;
use loopscope::core::report::Report;
use loopscope::core::resolve::Resolver;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// The server's request handling, as a real one's would be: a fast path, and a report path
/// that computes for 4 ms on every 20th request.
mod service {
    /// Computes for about `ms` milliseconds without yielding.
    #[inline(never)]
    pub fn render_report(ms: u64) -> u64 {
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while start.elapsed() < std::time::Duration::from_millis(ms) {
            for _ in 0..1_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        x
    }

    pub async fn get(key: &str) -> String {
        tokio::task::yield_now().await;
        format!("value-of-{key}")
    }

    pub async fn report(n: u64) -> String {
        tokio::task::yield_now().await;
        let x = if n.is_multiple_of(20) { render_report(4) } else { n };
        format!("report {x}")
    }
}

/// What the program's own subscriber saw from loopscope: its WARN events' fields.
#[derive(Default)]
struct Seen(Mutex<Vec<Vec<(String, String)>>>);

struct Collect(&'static Seen);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "loopscope" {
            return;
        }
        struct Fields(Vec<(String, String)>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push((field.name().to_string(), format!("{value:?}")));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push((field.name().to_string(), value.to_string()));
            }
        }
        let mut f = Fields(vec![("level".into(), event.metadata().level().to_string())]);
        event.record(&mut f);
        self.0.0.lock().unwrap().push(f.0);
    }
}

/// The process's subscriber (spans are entered on the runtime's worker threads, so it is the
/// global one): loopscope's layer and the collector, set once for the tests of this file.
fn subscriber() -> &'static Seen {
    static SEEN: OnceLock<&'static Seen> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen: &'static Seen = Box::leak(Box::default());
        let s = tracing_subscriber::registry().with(loopscope::tracing_layer()).with(Collect(seen));
        tracing::subscriber::set_global_default(s).expect("the first global subscriber");
        seen
    })
}

/// The tests of this file record one at a time: each looks for its own spawn sites, but the
/// sampling budget and the subscriber are the process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn record(stall_threshold: Duration, app: impl std::future::Future<Output = ()>) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.loopscope");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = Session::builder().record_to(&path).stall_threshold(stall_threshold).install(&mut b).unwrap();
    let rt = b.build().unwrap();
    rt.block_on(app);
    drop(rt);
    session.finish().unwrap();
    let mut resolver = Resolver::new(loopscope_symbols::Symbolizer::boxed());
    Report::from_file_with(&path, &mut resolver).unwrap()
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((conn, _)) = listener.accept().await else { return };
        // One spawn site for every connection, as in any server.
        tokio::spawn(async move {
            let (r, mut w) = conn.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut n = 0u64;
            while let Ok(Some(line)) = lines.next_line().await {
                n += 1;
                let reply = match line.split_once(' ') {
                    Some(("GET", key)) => service::get(key).instrument(tracing::info_span!("get")).await,
                    _ => service::report(n).instrument(tracing::info_span!("report")).await,
                };
                if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[test]
fn one_spawn_site_is_broken_down_by_the_spans_of_its_request_paths() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    subscriber();
    let started = Instant::now();
    let report = record(Duration::from_millis(100), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        // Eight clients, each 200 GETs and 200 reports over one connection, in turn.
        let clients: Vec<_> = (0..8)
            .map(|c| {
                tokio::spawn(async move {
                    let conn = TcpStream::connect(addr).await.unwrap();
                    let (r, mut w) = conn.into_split();
                    let mut lines = BufReader::new(r).lines();
                    for i in 0..400 {
                        let req = if i % 2 == 0 { format!("GET k{c}-{i}\n") } else { format!("REPORT {i}\n") };
                        w.write_all(req.as_bytes()).await.unwrap();
                        lines.next_line().await.unwrap().expect("a reply");
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        server.abort();
    });
    let took = started.elapsed();
    let here = file!();
    // The connection handler's site, broken down by span.
    let rows: Vec<_> =
        report.spans.iter().filter(|s| s.spawn_site.as_deref().is_some_and(|s| s.contains(here))).collect();
    let row = |name: &str| {
        rows.iter().find(|r| r.span.ends_with(&format!("::{name}"))).unwrap_or_else(|| panic!("{name}: {rows:#?}"))
    };
    let (get, rep) = (row("get"), row("report"));
    assert!(get.span.starts_with("spans::"), "the target is the module: {get:#?}");
    // Every request is one poll in its span at least (the yield makes two).
    assert!(get.polls >= 8 * 200 && rep.polls >= 8 * 200, "{rows:#?}");
    // The report path's bursts are in its histogram, not in get's: 160 of them (every 20th
    // request of each connection), each at least 4 ms long by construction.
    let rep_max = rep.poll.max.as_secs_f64() * 1e3;
    assert!(rep_max >= 3.9, "report max {rep_max:.2} ms: {rep:#?}");
    assert!(rep.busy >= Duration::from_millis(160 * 4), "{rep:#?}");
    assert!(rep.poll.p99 >= Duration::from_millis(3), "{rep:#?}");
    // get's polls are a yield and a format: its typical poll is far below a millisecond, and
    // its time a small part of the report path's, however the host delays a few of them.
    assert!(get.poll.p50 < Duration::from_micros(100), "{get:#?} (run took {took:?})");
    assert!(rep.busy > get.busy * 4, "{rows:#?}");
    // And the samples name the burst's line, under the report span.
    let hot: Vec<_> =
        report.hot_lines.iter().filter(|h| h.spawn_site.as_deref().is_some_and(|s| s.contains(here))).collect();
    let top = hot.first().unwrap_or_else(|| panic!("no hot line at the handler's site: {:#?}", report.hot_lines));
    assert!(top.function.as_deref().is_some_and(|f| f.ends_with("service::render_report")), "{hot:#?}");
    assert!(top.line.as_deref().is_some_and(|l| l.contains(&format!("{here}:"))), "{top:#?}");
    assert!(top.span.as_deref().is_some_and(|s| s.ends_with("::report")), "{top:#?}");
}

#[test]
fn stalls_are_logged_as_tracing_events_with_their_span() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let seen = subscriber();
    let report = record(Duration::from_millis(20), async {
        tokio::spawn(
            async {
                tokio::task::yield_now().await;
                // A synchronous sleep in a request path: a stall.
                std::thread::sleep(Duration::from_millis(80));
            }
            .instrument(tracing::warn_span!("checkout")),
        )
        .await
        .unwrap();
    });
    let here = file!();
    let stall = report
        .stalls
        .iter()
        .find(|g| g.spawn_site.as_deref().is_some_and(|s| s.contains(here)))
        .unwrap_or_else(|| panic!("{:#?}", report.stalls));
    assert!(stall.span.as_deref().is_some_and(|s| s.ends_with("::checkout")), "{stall:#?}");
    // The program's own subscriber got the stall: WARN, target loopscope, with its fields.
    let events = seen.0.lock().unwrap();
    let event = events
        .iter()
        .find(|f| f.iter().any(|(k, v)| k == "span" && v.contains("checkout")))
        .unwrap_or_else(|| panic!("no stall event with the span: {events:#?}"));
    let field = |k: &str| event.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or_default();
    assert_eq!(field("level"), "WARN");
    assert_eq!(field("category"), "sync-sleep", "{event:?}");
    assert!(field("spawn_site").contains(here), "{event:?}");
    let ms: f64 = field("duration_ms").parse().unwrap();
    assert!(ms >= 75.0, "{event:?}");
    // Named from the symbol table: the test's own function (a closure in it), std's sleep called.
    assert!(field("blocking_site").starts_with("spans::"), "{event:?}");
    assert!(field("call").contains("sleep"), "{event:?}");
    assert!(field("message").contains("event loop stalled"), "{event:?}");
}
