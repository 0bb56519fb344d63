//! The cost of the per-poll hook pair, in nanoseconds per poll.
//!
//! One task on a current-thread runtime yields `iters` times (each yield is one poll of an empty
//! task, the cheapest poll there is), plainly and under the recorder in each configuration; the
//! difference between a configuration and `plain` is what the recorder adds to every poll.
//!
//! `cargo bench -p loopscope --bench hooks` (`just bench-hooks`)

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

#[derive(Clone, Copy)]
enum Mode {
    Plain,
    PollTime,
    PollTimeNoDetector,
    PollTimeAndSchedulingLatency,
}

fn polls(mode: Mode, iters: u64) -> Duration {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let session = match mode {
        Mode::Plain => None,
        Mode::PollTime => Some(loopscope::Session::builder().schedule_latency(false)),
        Mode::PollTimeNoDetector => Some(loopscope::Session::builder().schedule_latency(false).stall_detector(false)),
        Mode::PollTimeAndSchedulingLatency => Some(loopscope::Session::builder()),
    }
    .map(|s| s.install(&mut b).unwrap());
    let rt = b.build().unwrap();
    let took = rt.block_on(async move {
        tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                tokio::task::yield_now().await;
            }
            start.elapsed()
        })
        .await
        .unwrap()
    });
    drop(rt);
    if let Some(s) = session {
        s.finish().unwrap();
    }
    took
}

fn per_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_poll");
    g.measurement_time(Duration::from_secs(3));
    for (name, mode) in [
        ("plain", Mode::Plain),
        ("poll_time_no_detector", Mode::PollTimeNoDetector),
        ("poll_time", Mode::PollTime),
        ("poll_time_and_scheduling_latency", Mode::PollTimeAndSchedulingLatency),
    ] {
        g.bench_function(name, |b| b.iter_custom(|iters| polls(mode, iters)));
    }
    g.finish();
}

criterion_group!(benches, per_poll);
criterion_main!(benches);
