//! The per-poll micro-benchmark's storm: 1,000 tasks on a current-thread runtime each yield in
//! turn, so every poll is an empty one and the runtime polls its driver only once per round of
//! 1,000 polls (a storm of a single task would make a system call per poll and measure cold
//! caches instead of the hooks). Used by the criterion benchmark (`benches/hooks.rs`, time per
//! poll) and by `examples/instructions.rs` (instructions per poll, under callgrind).

use std::time::{Duration, Instant};

/// Tasks in the storm.
pub const TASKS: u64 = 1_000;

/// How the storm's runtime is instrumented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No hooks.
    Plain,
    /// Two hooks that do nothing: the price of having hooks at all.
    EmptyHooks,
    /// The reference floor ([`crate::floor`]).
    Floor,
    /// The floor with tokio's schedule-latency tracking.
    FloorAndTokioLatency,
    /// loopscope's `lean` profile.
    Lean,
    /// loopscope's `lean` profile without the stall detector.
    LeanNoDetector,
    /// loopscope's `full` profile.
    Full,
    /// loopscope's `lean` profile without following alive tasks' ages.
    LeanNoTasks,
}

/// Runs at least `iters` empty polls (whole rounds, at least 20) and returns how long `iters` of
/// them took. With `two_sites`, the tasks come from two spawn sites, alternately, so consecutive
/// polls are of different sites (as in a ping-pong between a sender and a receiver).
pub fn storm(mode: Mode, two_sites: bool, iters: u64) -> Duration {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    match mode {
        Mode::EmptyHooks => {
            b.on_before_task_poll(|_| {}).on_after_task_poll(|_| {});
        }
        Mode::Floor => crate::floor::install(&mut b, false),
        Mode::FloorAndTokioLatency => crate::floor::install(&mut b, true),
        _ => {}
    }
    let session = match mode {
        Mode::Plain | Mode::EmptyHooks | Mode::Floor | Mode::FloorAndTokioLatency => None,
        Mode::Lean => Some(loopscope::Session::builder().profile(loopscope::Profile::Lean)),
        Mode::LeanNoDetector => {
            Some(loopscope::Session::builder().profile(loopscope::Profile::Lean).stall_detector(false))
        }
        Mode::Full => Some(loopscope::Session::builder().profile(loopscope::Profile::Full)),
        Mode::LeanNoTasks => Some(loopscope::Session::builder().profile(loopscope::Profile::Lean).task_ages(false)),
    }
    .map(|s| s.install(&mut b).unwrap());
    let rt = b.build().unwrap();
    let rounds = iters.div_ceil(TASKS).max(20);
    let took = rt.block_on(async move {
        async fn yielder(rounds: u64) {
            for _ in 0..rounds {
                tokio::task::yield_now().await;
            }
        }
        // The branches differ in their spawn location, which is the point.
        #[allow(clippy::if_same_then_else)]
        let tasks: Vec<_> =
            (0..TASKS)
                .map(|i| {
                    if two_sites && i % 2 == 1 { tokio::spawn(yielder(rounds)) } else { tokio::spawn(yielder(rounds)) }
                })
                .collect();
        // The tasks first run when this future waits.
        let start = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    });
    drop(rt);
    if let Some(s) = session {
        s.finish().unwrap();
    }
    took.mul_f64(iters as f64 / (rounds * TASKS) as f64)
}
