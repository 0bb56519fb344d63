//! A real program running console-subscriber (in this process, on a loopback port the test
//! picks), read through tokio-console's gRPC API into loopscope frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loopscope_console::FeedEvent;
use loopscope_core::model::{Event, Frame, StallCategory};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The program: sleepers spawned from one line, and a task that blocks its worker for 300 ms
/// spawned from another.
fn program(stop: Arc<AtomicBool>) -> (u32, u32) {
    let sleepers_line = line!() + 7;
    let blocker_line = sleepers_line + 6;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            while !stop.load(Ordering::Relaxed) {
                for i in 0..20u64 {
                    tokio::spawn(async move {
                        for _ in 0..5 {
                            tokio::time::sleep(Duration::from_millis(1 + i % 3)).await;
                        }
                    });
                }
                tokio::spawn(async { std::thread::sleep(Duration::from_millis(300)) }).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    });
    (sleepers_line, blocker_line)
}

#[test]
fn a_console_subscriber_program_is_read_as_sites_histograms_and_long_polls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let layer = console_subscriber::ConsoleLayer::builder()
        .server_addr(([127, 0, 0, 1], port))
        .publish_interval(Duration::from_millis(100))
        .spawn();
    tracing_subscriber::registry().with(layer).init();
    let stop = Arc::new(AtomicBool::new(false));
    let (sleepers_line, blocker_line) = program(Arc::clone(&stop));

    let events = loopscope_console::connect(format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut header, mut sites) = (None, Vec::new());
    let (mut sleeper_polls, mut sleeper_sched) = (0u64, 0u64);
    let mut stall_began = None;
    let mut stall_ended = None;
    while stall_ended.is_none() || sleeper_polls == 0 || sleeper_sched == 0 {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| {
            panic!("not everything arrived: polls {sleeper_polls}, sched {sleeper_sched}, stall {stall_began:?}")
        });
        let Ok(event) = events.recv_timeout(left) else { continue };
        match event {
            FeedEvent::Reset | FeedEvent::Status(_) => {}
            FeedEvent::Frame(Frame::Header(h)) => header = Some(h),
            FeedEvent::Frame(Frame::Sites(s)) => sites.extend(s),
            FeedEvent::Frame(Frame::Interval(i)) => {
                for s in &i.sites {
                    let decl = &sites[s.site as usize];
                    if decl.file.ends_with("tests/console.rs") && decl.line == sleepers_line {
                        sleeper_polls += s.poll.count;
                        sleeper_sched += s.sched.count;
                        assert!(s.poll.decode().is_ok(), "a valid histogram");
                    }
                }
            }
            FeedEvent::Frame(Frame::Event(Event::StallBegin(st))) => {
                let decl = &sites[st.site.unwrap() as usize];
                if decl.line == blocker_line && !st.late && stall_began.is_none() {
                    // What console data cannot tell.
                    assert_eq!(st.category, StallCategory::Unknown);
                    assert!(st.blocking_site.is_none() && st.stack.is_empty());
                    stall_began = Some(st.id);
                }
            }
            FeedEvent::Frame(Frame::Event(Event::StallEnd { id, duration_ns, .. })) => {
                if Some(id) == stall_began {
                    stall_ended = Some(duration_ns);
                }
            }
            FeedEvent::Frame(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let header = header.expect("a header first");
    assert_eq!(header.stall_threshold_ns, Some(10_000_000));
    assert!(sites.iter().any(|s| s.file.ends_with("tests/console.rs") && s.line == blocker_line), "{sites:?}");
    // The blocking poll lasted 300 ms: seen in progress, then its end from the poll's timestamps.
    let d = stall_ended.unwrap();
    assert!((290_000_000..2_000_000_000).contains(&d), "{d}");
}
