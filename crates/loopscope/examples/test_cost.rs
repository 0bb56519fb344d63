//! What `#[loopscope::test]` costs a test, against `#[tokio::test]`: the same small test body
//! (a few timers and spawned tasks, no blocking) run many times each way, interleaved, on the
//! runtime each attribute builds, then a body that polls 100,000 times; prints the median wall
//! time per test of each and the difference.
//!
//! `cargo run -p loopscope --example test_cost [RUNS]` (the test profile's build, as `cargo test`
//! uses; add `--release` for an optimized one)

use std::time::{Duration, Instant};

use loopscope::testing::TestRun;
use tokio::runtime::{Builder, RuntimeFlavor};

/// A test body that does what async tests do: spawn, await, time out.
async fn body() -> u64 {
    let mut handles = Vec::new();
    for i in 0..10u64 {
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            i
        }));
    }
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    tokio::task::yield_now().await;
    sum
}

/// What `#[tokio::test]` does.
fn tokio_test<F: std::future::Future<Output = u64>>(multi_thread: bool, body: impl Fn() -> F) -> Duration {
    let t = Instant::now();
    let mut b = if multi_thread { Builder::new_multi_thread() } else { Builder::new_current_thread() };
    let rt = b.enable_all().build().unwrap();
    assert_eq!(rt.block_on(body()), 45);
    drop(rt);
    t.elapsed()
}

/// What `#[loopscope::test]` does.
fn loopscope_test<F>(multi_thread: bool, body: impl Fn() -> F) -> Duration
where
    F: std::future::Future<Output = u64> + Send + 'static,
{
    let t = Instant::now();
    let (builder, flavor) = if multi_thread {
        (Builder::new_multi_thread(), RuntimeFlavor::MultiThread)
    } else {
        (Builder::new_current_thread(), RuntimeFlavor::CurrentThread)
    };
    let out = TestRun::new("cost").flavor(flavor).run(builder, body()).unwrap().assert_clean();
    assert_eq!(out, 45);
    t.elapsed()
}

/// A test that polls a great deal: a task yielding 100,000 times.
async fn yields() -> u64 {
    tokio::spawn(async {
        for _ in 0..100_000 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    45
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    println!("{runs} runs of each, interleaved; median wall time per test");
    for (name, multi_thread) in [("current_thread", false), ("multi_thread (default workers)", true)] {
        compare(name, runs, || tokio_test(multi_thread, body), || loopscope_test(multi_thread, body));
    }
    let runs = (runs / 10).max(3);
    println!("{runs} runs of each: a task yielding 100,000 times (current_thread)");
    compare("100,000 polls", runs, || tokio_test(false, yields), || loopscope_test(false, yields));
}

fn compare(name: &str, runs: usize, plain: impl Fn() -> Duration, watched: impl Fn() -> Duration) {
    // One of each first, untimed: threads, the temporary directory.
    plain();
    watched();
    let (mut p, mut w) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        p.push(plain());
        w.push(watched());
    }
    let (p, w) = (median(p), median(w));
    println!(
        "{name:>32}: #[tokio::test] {:>8.2?}  #[loopscope::test] {:>8.2?}  (+{:.2?} per test)",
        p,
        w,
        w.saturating_sub(p)
    );
}
