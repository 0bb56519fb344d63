//! Quick overhead check of the recorder's hot path (the full comparison with other tools is the
//! benchmark harness's job): the yield storm (1,000 tasks x 2,000 `yield_now`, empty polls) and
//! ping-pong (200 task pairs x 5,000 messages over bounded mpsc), plain and under each profile, interleaved,
//! median wall-time ratio over several runs.
//!
//! `cargo run --release -p loopscope --example overhead [RUNS]`

use std::time::{Duration, Instant};

type Workload = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Plain,
    Lean,
    LeanNoDetector,
    Full,
}

async fn yield_storm() {
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            tokio::spawn(async {
                for _ in 0..2_000 {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn ping_pong() {
    let pairs: Vec<_> = (0..200)
        .map(|_| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1);
            let (back_tx, mut back_rx) = tokio::sync::mpsc::channel::<u64>(1);
            let ponger = tokio::spawn(async move {
                while let Some(v) = rx.recv().await {
                    if back_tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                for i in 0..5_000u64 {
                    tx.send(i).await.unwrap();
                    back_rx.recv().await.unwrap();
                }
                drop(tx);
                ponger.await.unwrap();
            })
        })
        .collect();
    for p in pairs {
        p.await.unwrap();
    }
}

fn once(mode: Mode, workload: Workload) -> Duration {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = match mode {
        Mode::Plain => None,
        Mode::Lean => Some(loopscope::Session::builder().profile(loopscope::Profile::Lean).install(&mut b).unwrap()),
        Mode::LeanNoDetector => Some(
            loopscope::Session::builder()
                .profile(loopscope::Profile::Lean)
                .stall_detector(false)
                .install(&mut b)
                .unwrap(),
        ),
        Mode::Full => Some(loopscope::Session::builder().install(&mut b).unwrap()),
    };
    let rt = b.build().unwrap();
    let start = Instant::now();
    rt.block_on(workload());
    let took = start.elapsed();
    drop(rt);
    if let Some(s) = session {
        s.finish().unwrap();
    }
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let workloads: [(&str, Workload); 2] =
        [("yield storm", || Box::pin(yield_storm())), ("ping-pong", || Box::pin(ping_pong()))];
    println!(
        "| workload | plain (median) | lean, no stall detector | lean (poll time, lag probe) | full (poll time, per-task scheduling latency) |"
    );
    println!("|---|---|---|---|---|");
    for (name, w) in workloads {
        let (mut plain, mut bare, mut lean, mut full) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            plain.push(once(Mode::Plain, w));
            bare.push(once(Mode::LeanNoDetector, w));
            lean.push(once(Mode::Lean, w));
            full.push(once(Mode::Full, w));
        }
        let (p, n, l, f) = (median(plain), median(bare), median(lean), median(full));
        let ratio = |d: Duration| d.as_secs_f64() / p.as_secs_f64();
        println!(
            "| {name} | {:.1} ms | {:.2}x | {:.2}x | {:.2}x |",
            p.as_secs_f64() * 1e3,
            ratio(n),
            ratio(l),
            ratio(f)
        );
    }
}
