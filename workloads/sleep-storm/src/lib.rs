//! sleep-storm: the asyncio guide's `asyncio.gather` of sleeping tasks, at scale.
//!
//! N tasks each sleep a random duration (seeded), wake, measure how late the timer fired
//! (actual wake time minus deadline) and sleep again, until the run time is over. This stresses
//! tokio's timer wheel and wake-up path; the timer lateness histogram shows what the event loop's
//! scheduling delay means to a program that relies on timers.
//!
//! Two modes mirror the guide: `spawn` starts every sleeper with `tokio::spawn` and awaits the
//! handles later (`asyncio.create_task`), `gather` runs them all as futures of one task with
//! `join_all` (`asyncio.gather`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopscope_core::dist::DistAcc;
use loopscope_core::workload::WorkloadResult;

/// The name `loopscope run` knows this workload by.
pub const NAME: &str = "sleep-storm";

/// How the sleepers are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One `tokio::spawn` per sleeper, handles awaited at the end (`asyncio.create_task`).
    Spawn,
    /// All sleepers as futures of a single task with `join_all` (`asyncio.gather`).
    Gather,
}

/// Options of the sleep-storm workload.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Number of sleeping tasks (100,000 works).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tasks: u32,
    /// Shortest sleep.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    pub min_sleep: Duration,
    /// Longest sleep.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub max_sleep: Duration,
    /// How the sleepers are started.
    #[arg(long, value_enum, default_value_t = Mode::Spawn)]
    pub mode: Mode,
    /// CPU work each sleeper does per wake-up, in rounds of a 64-bit hash (about 1 ns each), so
    /// that a poll has a cost of its own; 0: none.
    #[arg(long, default_value_t = 0, value_name = "ROUNDS")]
    pub work: u32,
    /// Percent of extra work per wake-up, an injected regression of the sleepers' spawn site for
    /// testing a CI gate (`--work 20000 --slowdown 25`: each poll does 25% more work).
    #[arg(long, default_value_t = 0, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub slowdown: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tasks: 10_000,
            min_sleep: Duration::from_millis(1),
            max_sleep: Duration::from_millis(100),
            mode: Mode::Spawn,
            work: 0,
            slowdown: 0,
        }
    }
}

/// Why the workload could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--min-sleep` is above `--max-sleep`.
    #[error("--min-sleep ({min:?}) must not exceed --max-sleep ({max:?})")]
    SleepRange {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
    /// A sleeper task panicked or was cancelled.
    #[error("a sleeper task failed: {0}")]
    Task(String),
}

/// Timer lateness, sharded so sleepers on different workers rarely share a lock.
struct Lateness {
    shards: Vec<Mutex<DistAcc>>,
}

impl Lateness {
    fn new() -> Self {
        Lateness { shards: (0..16).map(|_| Mutex::new(DistAcc::new())).collect() }
    }

    fn record(&self, task: u32, late: Duration) {
        let shard = &self.shards[task as usize % self.shards.len()];
        shard.lock().unwrap_or_else(|p| p.into_inner()).record(late);
    }

    fn merged(&self) -> DistAcc {
        let mut all = DistAcc::new();
        for s in &self.shards {
            all.add(&s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// One sleeper: sleeps random durations until `until`; returns its number of wake-ups.
async fn sleeper(task: u32, seed: u64, cfg: Config, until: Instant, lateness: Arc<Lateness>) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed ^ u64::from(task).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (min, max) = (cfg.min_sleep.as_nanos() as u64, cfg.max_sleep.as_nanos() as u64);
    let rounds = u64::from(cfg.work) + u64::from(cfg.work) * u64::from(cfg.slowdown) / 100;
    let mut wakeups = 0;
    loop {
        let deadline = tokio::time::Instant::now() + Duration::from_nanos(rng.u64(min..=max));
        if deadline.into_std() > until {
            return wakeups;
        }
        tokio::time::sleep_until(deadline).await;
        lateness.record(task, tokio::time::Instant::now().saturating_duration_since(deadline));
        work(rounds);
        wakeups += 1;
    }
}

/// CPU work the optimizer cannot remove: `rounds` steps of a 64-bit mixing function.
fn work(rounds: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..rounds {
        x = std::hint::black_box(x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    x
}

/// Runs the storm for `run_for` on the current tokio runtime.
pub async fn run(cfg: &Config, run_for: Duration, seed: u64) -> Result<WorkloadResult, Error> {
    if cfg.min_sleep > cfg.max_sleep {
        return Err(Error::SleepRange { min: cfg.min_sleep, max: cfg.max_sleep });
    }
    let lateness = Arc::new(Lateness::new());
    let start = Instant::now();
    let until = start + run_for;
    let wakeups: u64 = match cfg.mode {
        Mode::Spawn => {
            let handles: Vec<_> = (0..cfg.tasks)
                .map(|t| tokio::spawn(sleeper(t, seed, cfg.clone(), until, Arc::clone(&lateness))))
                .collect();
            let mut total = 0;
            for h in handles {
                total += h.await.map_err(|e| Error::Task(e.to_string()))?;
            }
            total
        }
        Mode::Gather => {
            let all: Vec<_> =
                (0..cfg.tasks).map(|t| sleeper(t, seed, cfg.clone(), until, Arc::clone(&lateness))).collect();
            let gather = tokio::spawn(async move { futures_util::future::join_all(all).await.into_iter().sum() });
            gather.await.map_err(|e| Error::Task(e.to_string()))?
        }
    };
    let elapsed = start.elapsed();
    let lateness_dist = lateness.merged();
    Ok(WorkloadResult::new(NAME)
        .metric("tasks", f64::from(cfg.tasks), "tasks")
        .metric("wakeups", wakeups as f64, "wake-ups")
        .metric("wakeups_per_s", wakeups as f64 / elapsed.as_secs_f64(), "1/s")
        .metric(
            "work_rounds_per_wakeup",
            (u64::from(cfg.work) * (100 + u64::from(cfg.slowdown)) / 100) as f64,
            "rounds",
        )
        .metric("run_time_s", elapsed.as_secs_f64(), "s")
        .distribution("timer_lateness", &lateness_dist))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_on(rt: tokio::runtime::Runtime, cfg: Config) -> WorkloadResult {
        rt.block_on(run(&cfg, Duration::from_millis(300), 7)).unwrap()
    }

    #[test]
    fn every_sleeper_wakes_and_lateness_is_measured() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let cfg = Config {
            tasks: 200,
            min_sleep: Duration::from_millis(5),
            max_sleep: Duration::from_millis(20),
            ..Config::default()
        };
        let r = run_on(rt, cfg);
        let wakeups = r.get_metric("wakeups").unwrap();
        // Each of 200 sleepers fits at least 300/20 - 1 = 14 sleeps into 300 ms.
        assert!(wakeups >= 200.0 * 14.0, "wakeups {wakeups}");
        let late = r.summary("timer_lateness").unwrap();
        assert_eq!(late.count as f64, wakeups);
        assert!(late.p50 < Duration::from_millis(50), "median lateness {:?}", late.p50);
    }

    #[test]
    fn gather_mode_runs_on_one_task() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cfg = Config {
            tasks: 100,
            mode: Mode::Gather,
            min_sleep: Duration::from_millis(1),
            max_sleep: Duration::from_millis(10),
            ..Config::default()
        };
        let r = run_on(rt, cfg);
        assert!(r.get_metric("wakeups").unwrap() >= 100.0 * 29.0);
    }

    #[test]
    fn inverted_range_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cfg =
            Config { min_sleep: Duration::from_millis(10), max_sleep: Duration::from_millis(1), ..Config::default() };
        let err = rt.block_on(run(&cfg, Duration::from_millis(10), 1)).unwrap_err();
        assert!(err.to_string().contains("--min-sleep"));
    }
}
