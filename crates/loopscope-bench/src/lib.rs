//! The overhead benchmark's workloads and instrumentations. `bench-runner` runs one pair in its
//! own process (so that CPU time and peak memory are that pair's alone); the `bench` driver runs
//! every pair, interleaved, and tabulates.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub mod floor;
pub mod storm;

/// What is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 1,000 tasks x 2,000 `yield_now`: empty polls, the worst case for per-poll cost.
    YieldStorm,
    /// 200 task pairs x 5,000 messages over bounded mpsc channels.
    PingPong,
    /// The scraper workload (hyper server, reqwest client on loopback, 50 concurrent, no
    /// simulated latency): pages per second.
    Scraper,
    /// The chat workload (2,000 clients, 20 rooms, 5 messages/s each): deliveries per second.
    Chat,
}

impl Workload {
    /// Every workload, worst cases first.
    pub const ALL: [Workload; 4] = [Workload::YieldStorm, Workload::PingPong, Workload::Scraper, Workload::Chat];

    /// Whether it runs for a fixed time and reports a throughput (else: fixed work, timed).
    pub fn is_realistic(self) -> bool {
        matches!(self, Workload::Scraper | Workload::Chat)
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::YieldStorm => "yield-storm",
            Workload::PingPong => "ping-pong",
            Workload::Scraper => "scraper",
            Workload::Chat => "chat",
        }
    }
}

/// How the runtime is instrumented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Instrument {
    /// Nothing.
    Plain,
    /// loopscope `lean`: poll time per site and worker, the lag probe, the stall detector.
    Lean,
    /// loopscope `lean` without the stall detector.
    LeanNoDetector,
    /// loopscope `full` (the default): poll time and per-task scheduling latency, stall detector.
    Full,
    /// loopscope `full` without the stall detector.
    FullNoDetector,
    /// loopscope `full` with the stall detector but without slow-poll sampling (what sampling
    /// costs is `full` against this).
    FullNoSampling,
    /// loopscope `lean` without following alive tasks' ages (what task ages cost is `lean`
    /// against this).
    LeanNoTasks,
    /// loopscope `full` without following alive tasks' ages.
    FullNoTasks,
    /// Reference, not a profiler: two hooks reading the TSC into a thread-local histogram, the
    /// least a poll timer costs (`lean`'s floor).
    Floor,
    /// Reference: the floor plus tokio's schedule-latency tracking (`full`'s floor).
    FloorSchedLatency,
    /// tokio's own poll-time histogram (`enable_metrics_poll_time_histogram`), sampled every 100 ms.
    PollHistogram,
    /// tokio-metrics 0.5: a `TaskMonitor` instrumenting every task, sampled every 100 ms.
    TokioMetrics,
    /// dial9 0.5.7: `attach_tokio_runtime` with task tracking, every poll into a trace in a
    /// size-capped temporary directory.
    Dial9,
    /// console-subscriber 0.5 serving tokio-console on loopback (needs the `console` feature).
    Console,
}

impl Instrument {
    /// Every instrumentation, in table order.
    pub const ALL: [Instrument; 14] = [
        Instrument::Plain,
        Instrument::Lean,
        Instrument::LeanNoDetector,
        Instrument::Full,
        Instrument::FullNoDetector,
        Instrument::FullNoSampling,
        Instrument::LeanNoTasks,
        Instrument::FullNoTasks,
        Instrument::Floor,
        Instrument::FloorSchedLatency,
        Instrument::PollHistogram,
        Instrument::TokioMetrics,
        Instrument::Dial9,
        Instrument::Console,
    ];

    /// Its name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Instrument::Plain => "plain",
            Instrument::Lean => "lean",
            Instrument::LeanNoDetector => "lean-no-detector",
            Instrument::Full => "full",
            Instrument::FullNoDetector => "full-no-detector",
            Instrument::FullNoSampling => "full-no-sampling",
            Instrument::LeanNoTasks => "lean-no-tasks",
            Instrument::FullNoTasks => "full-no-tasks",
            Instrument::Floor => "floor",
            Instrument::FloorSchedLatency => "floor-sched-latency",
            Instrument::PollHistogram => "poll-histogram",
            Instrument::TokioMetrics => "tokio-metrics",
            Instrument::Dial9 => "dial9",
            Instrument::Console => "console",
        }
    }

    /// Whether it can run on `w` (a `TaskMonitor` must wrap each task, which only our own
    /// micro-workloads let us do).
    pub fn applies_to(self, w: Workload) -> bool {
        !(self == Instrument::TokioMetrics && w.is_realistic())
    }
}

/// What one run measured (CPU time and peak memory are measured by the driver).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunOutput {
    /// Wall time of the workload alone (runtime built, instrumentation installed, before).
    pub wall_s: f64,
    /// The realistic workloads' throughput.
    pub throughput: Option<f64>,
    /// Its unit.
    pub throughput_unit: Option<String>,
    /// CPU time (s) of loopscope's own threads (the flusher, the watchdog, ...), by thread name:
    /// the recorder's cost that is not in the hooks.
    #[serde(default)]
    pub recorder_threads_cpu_s: BTreeMap<String, f64>,
}

/// CPU time of this process's threads whose name starts with `loopscope`, by name.
fn recorder_threads_cpu_s() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
        let name = name.trim();
        if !name.starts_with("loopscope") {
            continue;
        }
        // The kernel's CPU clock of thread `tid` (a per-thread `CPUCLOCK_SCHED` clock id).
        let clock: libc::clockid_t = (!tid << 3) | 6;
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid out-pointer; a thread gone meanwhile only makes the call fail.
        if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
            *out.entry(name.to_string()).or_default() += ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
        }
    }
    out
}

type Spawner = Option<tokio_metrics::TaskMonitor>;

fn spawn<F>(monitor: &Spawner, f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match monitor {
        Some(m) => tokio::spawn(m.instrument(f)),
        None => tokio::spawn(f),
    }
}

async fn yield_storm(m: Spawner) {
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            spawn(&m, async {
                for _ in 0..2_000 {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a yielding task");
    }
}

async fn ping_pong(m: Spawner) {
    let pairs: Vec<_> = (0..200)
        .map(|_| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1);
            let (back_tx, mut back_rx) = tokio::sync::mpsc::channel::<u64>(1);
            let ponger = spawn(&m, async move {
                while let Some(v) = rx.recv().await {
                    if back_tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            spawn(&m, async move {
                for i in 0..5_000u64 {
                    tx.send(i).await.expect("the ponger listens");
                    back_rx.recv().await.expect("the ponger answers");
                }
                drop(tx);
                ponger.await.expect("the ponger ends");
            })
        })
        .collect();
    for p in pairs {
        p.await.expect("a pinger");
    }
}

/// Runs `workload` under `instrument` on a 2-worker runtime; `reps` times for the fixed-work
/// workloads, once for `run_for` for the realistic ones.
pub fn run_once(workload: Workload, instrument: Instrument, reps: u32, run_for: Duration) -> anyhow::Result<RunOutput> {
    if !instrument.applies_to(workload) {
        bail!(
            "{} cannot instrument {}: it wraps each task, and that workload spawns its own",
            instrument.name(),
            workload.name()
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    let session = match instrument {
        Instrument::Lean
        | Instrument::LeanNoDetector
        | Instrument::Full
        | Instrument::FullNoDetector
        | Instrument::FullNoSampling
        | Instrument::LeanNoTasks
        | Instrument::FullNoTasks => {
            let profile =
                if matches!(instrument, Instrument::Lean | Instrument::LeanNoDetector | Instrument::LeanNoTasks) {
                    loopscope::Profile::Lean
                } else {
                    loopscope::Profile::Full
                };
            let detector = !matches!(instrument, Instrument::LeanNoDetector | Instrument::FullNoDetector);
            let session = loopscope::Session::builder()
                .profile(profile)
                .stall_detector(detector)
                .slow_poll_sampling(instrument != Instrument::FullNoSampling)
                .task_ages(!matches!(instrument, Instrument::LeanNoTasks | Instrument::FullNoTasks));
            Some(session.install(&mut builder)?)
        }
        _ => None,
    };
    if matches!(instrument, Instrument::Floor | Instrument::FloorSchedLatency) {
        floor::install(&mut builder, instrument == Instrument::FloorSchedLatency);
    }
    if instrument == Instrument::PollHistogram {
        builder.enable_metrics_poll_time_histogram();
    }
    if instrument == Instrument::Console {
        start_console()?;
    }
    let monitor = (instrument == Instrument::TokioMetrics).then(tokio_metrics::TaskMonitor::new);
    let trace_dir = tempfile::tempdir()?;
    let (rt, dial9) = if instrument == Instrument::Dial9 {
        use dial9::Dial9HandleTokioExt;
        let writer = dial9::DiskBuffer::builder()
            .base_path(trace_dir.path().join("trace"))
            .max_file_size(64 << 20)
            .max_total_size(256 << 20)
            .build()?;
        let recorder = dial9::recorder(writer).build();
        let options = dial9::TokioAttachOptions::builder().task_tracking_enabled(true).build();
        let rt = recorder.handle().attach_tokio_runtime(builder, options)?;
        (rt, Some(recorder))
    } else {
        (builder.build().context("building the runtime")?, None)
    };
    let sampler = sampler(&rt, instrument, monitor.clone());
    let start = Instant::now();
    let mut throughput = None;
    match workload {
        Workload::YieldStorm | Workload::PingPong => {
            for _ in 0..reps {
                let w: Pin<Box<dyn Future<Output = ()>>> = if workload == Workload::YieldStorm {
                    Box::pin(yield_storm(monitor.clone()))
                } else {
                    Box::pin(ping_pong(monitor.clone()))
                };
                rt.block_on(w);
            }
        }
        Workload::Scraper => {
            let cfg = scraper::Config { latency: Duration::ZERO, ..scraper::Config::default() };
            let r = rt.block_on(scraper::run(&cfg, run_for, 1))?;
            throughput = r.get_metric("pages_per_s").map(|v| (v, "pages/s"));
        }
        Workload::Chat => {
            chat::ensure_descriptors(2_000)?;
            let cfg = chat::Config { clients: 2_000, rate: 5.0, ..chat::Config::default() };
            let r = rt.block_on(chat::run(&cfg, run_for, 1))?;
            throughput = r.get_metric("delivered_per_s").map(|v| (v, "deliveries/s"));
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    if let Some(s) = sampler {
        s.abort();
    }
    drop(rt);
    // Before the session's threads end.
    let recorder_threads_cpu_s = recorder_threads_cpu_s();
    if let Some(s) = session {
        s.finish()?;
    }
    if let Some(recorder) = dial9 {
        recorder.graceful_shutdown(Duration::from_secs(5));
    }
    Ok(RunOutput {
        wall_s,
        throughput: throughput.map(|t| t.0),
        throughput_unit: throughput.map(|t| t.1.to_string()),
        recorder_threads_cpu_s,
    })
}

/// What a user of tokio-metrics or tokio's histogram does with it: read it every 100 ms.
fn sampler(
    rt: &tokio::runtime::Runtime,
    instrument: Instrument,
    monitor: Option<tokio_metrics::TaskMonitor>,
) -> Option<tokio::task::AbortHandle> {
    let handle = rt.handle().clone();
    let task = match (instrument, monitor) {
        (Instrument::TokioMetrics, Some(m)) => rt.spawn(async move {
            let mut intervals = m.intervals();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::hint::black_box(intervals.next());
            }
        }),
        (Instrument::PollHistogram, _) => rt.spawn(async move {
            let metrics = handle.metrics();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for w in 0..metrics.num_workers() {
                    for b in 0..metrics.poll_time_histogram_num_buckets() {
                        std::hint::black_box(metrics.poll_time_histogram_bucket_count(w, b));
                    }
                }
            }
        }),
        _ => return None,
    };
    Some(task.abort_handle())
}

#[cfg(feature = "console")]
fn start_console() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let layer = console_subscriber::ConsoleLayer::builder().server_addr(([127, 0, 0, 1], port)).spawn();
    tracing_subscriber::registry().with(layer).try_init()?;
    Ok(())
}

#[cfg(not(feature = "console"))]
fn start_console() -> anyhow::Result<()> {
    bail!("this runner was built without the `console` feature (the driver builds one with it)")
}
