//! Accuracy of the stall detector: each classic blocking mistake repeated 20 times under the
//! recorder, then the fixed twins for a while; prints how often the category and the blocking
//! site were right, the duration error and the detection latency.
//!
//! `cargo run --release -p loopscope --example accuracy [REPEATS] [TWIN_SECONDS]`

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopscope::Session;
use loopscope::core::format::Recording;
use loopscope::core::model::{Event, StallCategory};
use loopscope::core::resolve::Resolver;

static LINE: AtomicU32 = AtomicU32::new(0);

/// Makes a blocking call and remembers its line: the blocking site the stall must name.
macro_rules! blocking {
    ($e:expr) => {{
        LINE.store(line!(), Ordering::Relaxed);
        $e
    }};
}

/// Computes for `d`, the loop on one line (the blocking site wherever it is interrupted).
#[rustfmt::skip]
fn spin(d: Duration) { let s = Instant::now(); let mut x = 1u64; while s.elapsed() < d { x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1)); } }
const SPIN_LINE: u32 = line!() - 1;

/// One scenario: blocks once for about `expected`, returns the line that blocked.
struct Scenario {
    name: &'static str,
    category: StallCategory,
    expected: Duration,
    run: fn() -> u32,
}

fn sync_sleep() -> u32 {
    blocking!(std::thread::sleep(Duration::from_millis(50)));
    LINE.load(Ordering::Relaxed)
}

fn cpu_loop() -> u32 {
    spin(Duration::from_millis(100));
    SPIN_LINE
}

fn fifo_read() -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let feeder_path = fifo.clone();
    let feeder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        std::fs::OpenOptions::new().write(true).open(feeder_path).unwrap().write_all(b"x").unwrap();
    });
    let data = blocking!(std::fs::read(&fifo)).unwrap();
    assert_eq!(data, b"x");
    feeder.join().unwrap();
    LINE.load(Ordering::Relaxed)
}

fn socket_read() -> u32 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        conn.write_all(b"pong").unwrap();
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut buf = [0u8; 4];
    blocking!(s.read_exact(&mut buf)).unwrap();
    server.join().unwrap();
    LINE.load(Ordering::Relaxed)
}

fn mutex_wait() -> u32 {
    let m = Arc::new(Mutex::new(()));
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = {
        let m = Arc::clone(&m);
        std::thread::spawn(move || {
            let _g = m.lock().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        })
    };
    rx.recv().unwrap();
    drop(blocking!(m.lock()));
    holder.join().unwrap();
    LINE.load(Ordering::Relaxed)
}

fn executor_block_on() -> u32 {
    blocking!(futures_executor::block_on(tokio::time::sleep(Duration::from_millis(30))));
    LINE.load(Ordering::Relaxed)
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "std::thread::sleep(50ms)",
        category: StallCategory::SyncSleep,
        expected: Duration::from_millis(50),
        run: sync_sleep,
    },
    Scenario {
        name: "100 ms CPU loop",
        category: StallCategory::CpuBound,
        expected: Duration::from_millis(100),
        run: cpu_loop,
    },
    Scenario {
        name: "std::fs::read of a FIFO (30 ms)",
        category: StallCategory::FileIo,
        expected: Duration::from_millis(30),
        run: fifo_read,
    },
    Scenario {
        name: "std::net read, server answers in 30 ms",
        category: StallCategory::NetworkIo,
        expected: Duration::from_millis(30),
        run: socket_read,
    },
    Scenario {
        name: "std::sync::Mutex held 30 ms",
        category: StallCategory::LockWait,
        expected: Duration::from_millis(30),
        run: mutex_wait,
    },
    Scenario {
        name: "futures block_on(30 ms timer)",
        category: StallCategory::NestedExecutor,
        expected: Duration::from_millis(30),
        run: executor_block_on,
    },
];

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let repeats: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let twin_secs: u64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(30);
    let file = file!();
    println!(
        "| scenario | stalls | category right | blocking site right | duration error p50 / max | detection latency p50 / max |"
    );
    println!("|---|---|---|---|---|---|");
    for sc in SCENARIOS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.loopscope");
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        let session = Session::builder().record_to(&path).install(&mut b).unwrap();
        let rt = b.build().unwrap();
        let run = sc.run;
        let lines: Vec<(u32, Duration)> = rt.block_on(async move {
            let mut lines = Vec::new();
            for _ in 0..repeats {
                let t = Instant::now();
                let line = tokio::spawn(async move { run() }).await.unwrap();
                lines.push((line, t.elapsed()));
                // Let the watchdog see the poll end before the next one starts.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lines
        });
        drop(rt);
        session.finish().unwrap();
        let mut resolver = Resolver::new(loopscope_symbols::Symbolizer::boxed());
        let rec = Recording::read_with(&path, &mut resolver).unwrap();
        for e in &rec.events {
            if let Event::RecorderError { message, .. } = e {
                eprintln!("recorder error: {message}");
            }
        }
        let begins = loopscope::core::stall::pair(&rec.events);
        let (mut right_cat, mut right_site) = (0, 0);
        let (mut dur_err, mut latency) = (Vec::new(), Vec::new());
        for p in &begins {
            let s = &p.stall;
            let d = p.duration_ns.unwrap_or(0);
            if p.category == sc.category {
                right_cat += 1;
            }
            let line = lines.first().map_or(0, |l| l.0);
            if s.blocking_site.as_deref().is_some_and(|b| b.ends_with(&format!("{file}:{line}"))) {
                right_site += 1;
            }
            dur_err.push((d as f64 - sc.expected.as_nanos() as f64) / 1e6);
            latency.push((s.detected_ns - s.started_ns) as f64 / 1e6 - 10.0);
        }
        let stats = |v: &mut Vec<f64>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                let p50 = percentile(v, 0.5);
                let max = v.iter().copied().fold(0.0, |a: f64, b| if b.abs() > a.abs() { b } else { a });
                format!("{p50:+.2} / {max:+.2} ms")
            }
        };
        println!(
            "| {} | {} of {repeats} | {right_cat} | {right_site} | {} | {} |",
            sc.name,
            begins.len(),
            stats(&mut dur_err),
            stats(&mut latency)
        );
    }

    // The fixed twins: the same work done right, for `twin_secs`, must raise nothing.
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = Session::builder().install(&mut b).unwrap();
    let rt = b.build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(twin_secs);
    let rounds = rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("twin");
        let m = Arc::new(tokio::sync::Mutex::new(0u64));
        let mut rounds = 0;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tokio::task::spawn_blocking(|| spin(Duration::from_millis(100))).await.unwrap();
            tokio::fs::write(&file, vec![1u8; 1 << 20]).await.unwrap();
            let _ = tokio::fs::read(&file).await.unwrap();
            let held = Arc::clone(&m).lock_owned().await;
            let waiter = tokio::spawn({
                let m = Arc::clone(&m);
                async move { *m.lock().await += 1 }
            });
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(held);
            waiter.await.unwrap();
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(30)));
            rounds += 1;
        }
        rounds
    });
    drop(rt);
    let report = session.finish().unwrap().unwrap();
    println!(
        "\nFixed twins (tokio::time::sleep, spawn_blocking, tokio::fs, tokio::sync::Mutex, block_in_place): {rounds} rounds in {twin_secs} s, {} stalls",
        report.runtime.stalls.count
    );
}
