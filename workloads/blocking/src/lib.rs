//! blocking: the asyncio guide's table of common mistakes, brought to tokio. Each scenario makes
//! one classic mistake a few times, or (with `--fixed`) does the same work the right way, while a
//! ticker task measures how late its ticks come: the harm a blocked worker does to everyone else.
//!
//! | scenario | the mistake | the fix |
//! |---|---|---|
//! | `sync-sleep` | `std::thread::sleep` | `tokio::time::sleep(..).await` |
//! | `cpu-loop` | hashing 16 MiB in a task | `spawn_blocking` |
//! | `blocking-fs` | `std::fs` write + `fsync` of 64 MiB, read back | `tokio::fs` |
//! | `blocking-dns` | `ToSocketAddrs` lookups of `localhost` | `tokio::net::lookup_host` |
//! | `blocking-net` | `std::net::TcpStream` to a slow loopback server | `tokio::net::TcpStream` |
//! | `std-mutex` | `std::sync::Mutex` held by a slow holder while tasks wait | `tokio::sync::Mutex` |
//! | `nested-runtime` | `Handle::block_on` inside a task (tokio panics) | `.await` |
//! | `executor-block-on` | `futures::executor::block_on` inside a task | `.await` |
//! | `forgot-await` | a future created and never awaited: the work never happens | `.await` |

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loopscope_core::dist::DistAcc;
use loopscope_core::workload::WorkloadResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The name `loopscope run` knows this workload by.
pub const NAME: &str = "blocking";

/// One mistake and its fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `std::thread::sleep` in async code (fix: `tokio::time::sleep`).
    SyncSleep,
    /// CPU-heavy hashing without yielding (fix: `spawn_blocking`).
    CpuLoop,
    /// `std::fs` reads, writes and `fsync` (fix: `tokio::fs`).
    BlockingFs,
    /// `std::net::ToSocketAddrs` lookups (fix: `tokio::net::lookup_host`).
    BlockingDns,
    /// `std::net::TcpStream` against a slow server (fix: `tokio::net`).
    BlockingNet,
    /// A `std::sync::Mutex` held across a slow operation (fix: `tokio::sync::Mutex`).
    StdMutex,
    /// `Handle::block_on` inside a task (fix: `.await`).
    NestedRuntime,
    /// `futures::executor::block_on` inside a task (fix: `.await`).
    ExecutorBlockOn,
    /// A future created and dropped without `.await` (fix: `.await`).
    ForgotAwait,
}

impl Scenario {
    /// Every scenario, in the order of the guide's table.
    pub const ALL: [Scenario; 9] = [
        Scenario::SyncSleep,
        Scenario::CpuLoop,
        Scenario::BlockingFs,
        Scenario::BlockingDns,
        Scenario::BlockingNet,
        Scenario::StdMutex,
        Scenario::NestedRuntime,
        Scenario::ExecutorBlockOn,
        Scenario::ForgotAwait,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SyncSleep => "sync-sleep",
            Scenario::CpuLoop => "cpu-loop",
            Scenario::BlockingFs => "blocking-fs",
            Scenario::BlockingDns => "blocking-dns",
            Scenario::BlockingNet => "blocking-net",
            Scenario::StdMutex => "std-mutex",
            Scenario::NestedRuntime => "nested-runtime",
            Scenario::ExecutorBlockOn => "executor-block-on",
            Scenario::ForgotAwait => "forgot-await",
        }
    }

    /// Whether the loopscope stall detector is expected to flag the mistake (`forgot-await` loses
    /// work silently instead; the compiler warns about it).
    pub fn stalls(self) -> bool {
        self != Scenario::ForgotAwait
    }
}

/// Which scenarios to run: `all`, or one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Which(pub Option<Scenario>);

impl Which {
    /// Every scenario, each mistake and its fix.
    pub const ALL: Which = Which(None);

    /// The scenarios selected.
    pub fn scenarios(self) -> Vec<Scenario> {
        self.0.map_or_else(|| Scenario::ALL.to_vec(), |s| vec![s])
    }
}

impl clap::ValueEnum for Which {
    fn value_variants<'a>() -> &'a [Self] {
        const VARIANTS: [Which; 10] = {
            let mut v = [Which::ALL; 10];
            let mut i = 0;
            while i < Scenario::ALL.len() {
                v[i + 1] = Which(Some(Scenario::ALL[i]));
                i += 1;
            }
            v
        };
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self.0 {
            None => Some(
                clap::builder::PossibleValue::new("all").help("Every scenario, each mistake and its fix (a table)"),
            ),
            Some(s) => s.to_possible_value(),
        }
    }
}

/// Options of the blocking workload.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Which mistake to make (`all`: every one, then every fix, as a table).
    #[arg(long, value_enum, default_value_t = Which::ALL)]
    pub scenario: Which,
    /// Run the fix instead of the mistake.
    #[arg(long)]
    pub fixed: bool,
    /// How many times each scenario makes its mistake (or runs its fix).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
}

/// Why the workload could not run.
pub use loopscope_core::workload::ScenarioError as Error;

/// Measures how late a 5 ms ticker's ticks come while the scenario runs.
struct Ticker {
    lateness: Arc<std::sync::Mutex<DistAcc>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    fn start() -> Ticker {
        let lateness = Arc::new(std::sync::Mutex::new(DistAcc::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let l = Arc::clone(&lateness);
        let task = tokio::spawn(async move {
            let period = Duration::from_millis(5);
            let mut next = tokio::time::Instant::now() + period;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stopped.changed() => return,
                }
                let late = tokio::time::Instant::now().saturating_duration_since(next);
                l.lock().unwrap_or_else(|p| p.into_inner()).record(late);
                next = tokio::time::Instant::now() + period;
            }
        });
        Ticker { lateness, stop, task }
    }

    async fn finish(self) -> DistAcc {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.lateness.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs one scenario (`fixed`: its fix) `repeat` times on the current runtime, a ticker beside it.
pub async fn run_scenario(scenario: Scenario, fixed: bool, repeat: u32) -> Result<WorkloadResult, Error> {
    let ticker = Ticker::start();
    let start = Instant::now();
    let mut lost_work = 0u64;
    let mut panics = 0u64;
    let setup = |source| Error::Setup { scenario: scenario.name(), source };
    // The scratch directory is made and removed on the blocking pool: removing a 64 MiB file
    // takes milliseconds, and only the scenario itself may block the runtime.
    let dir = tokio::task::spawn_blocking(tempfile::tempdir)
        .await
        .map_err(|e| Error::Task { scenario: scenario.name(), message: e.to_string() })?
        .map_err(setup)?;
    let server = if scenario == Scenario::BlockingNet { Some(SlowServer::start().map_err(setup)?) } else { None };
    for _ in 0..repeat {
        // Give the ticker a moment between rounds, so its lateness shows each blocking episode.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let outcome = match scenario {
            Scenario::SyncSleep => spawn(sync_sleep(fixed)).await,
            Scenario::CpuLoop => spawn(cpu_loop(fixed)).await,
            Scenario::BlockingFs => spawn(blocking_fs(fixed, dir.path().join("data"))).await,
            Scenario::BlockingDns => spawn(blocking_dns(fixed)).await,
            Scenario::BlockingNet => spawn(blocking_net(fixed, server.as_ref().map(|s| s.addr))).await,
            Scenario::StdMutex => std_mutex(fixed).await,
            Scenario::NestedRuntime => spawn(nested_runtime(fixed)).await,
            Scenario::ExecutorBlockOn => spawn(executor_block_on(fixed)).await,
            Scenario::ForgotAwait => spawn(forgot_await(fixed)).await,
        };
        match outcome {
            Ok(Ok(lost)) => lost_work += lost,
            Ok(Err(e)) => return Err(Error::Task { scenario: scenario.name(), message: e.to_string() }),
            Err(join) if join.is_panic() && scenario == Scenario::NestedRuntime && !fixed => panics += 1,
            Err(join) => return Err(Error::Task { scenario: scenario.name(), message: join.to_string() }),
        }
    }
    let elapsed = start.elapsed();
    let lateness = ticker.finish().await;
    let _ = tokio::task::spawn_blocking(move || drop(dir)).await;
    Ok(WorkloadResult::new(NAME)
        .metric("rounds", f64::from(repeat), "rounds")
        .metric("lost_work", lost_work as f64, "units")
        .metric("panics_caught", panics as f64, "panics")
        .metric("ticker_lateness_max_ms", lateness.max().as_secs_f64() * 1e3, "ms")
        .metric("run_time_s", elapsed.as_secs_f64(), "s")
        .distribution("ticker_lateness", &lateness))
}

/// Runs the selected scenario(s) of `cfg` (for `all`, the caller runs each separately).
pub async fn run(cfg: &Config) -> Result<WorkloadResult, Error> {
    let scenario = cfg.scenario.scenarios()[0];
    run_scenario(scenario, cfg.fixed, cfg.repeat).await
}

type Outcome = std::io::Result<u64>;

/// Each scenario's work runs in a task of its own, spawned here.
fn spawn(work: impl std::future::Future<Output = Outcome> + Send + 'static) -> tokio::task::JoinHandle<Outcome> {
    tokio::spawn(work)
}

async fn sync_sleep(fixed: bool) -> Outcome {
    if fixed {
        tokio::time::sleep(Duration::from_millis(30)).await;
    } else {
        std::thread::sleep(Duration::from_millis(30));
    }
    Ok(0)
}

/// FNV-1a over `data`, the stand-in for real CPU work (parsing, compression, hashing).
fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The CPU work: build 16 MiB of data and hash it.
fn crunch() -> u64 {
    hash(&vec![0x5au8; 16 << 20])
}

async fn cpu_loop(fixed: bool) -> Outcome {
    let h = if fixed { tokio::task::spawn_blocking(crunch).await.map_err(std::io::Error::other)? } else { crunch() };
    std::hint::black_box(h);
    Ok(0)
}

/// Bytes written (and synced), and read back (a little: tokio::fs copies it on the worker).
const FS_WRITE: usize = 64 << 20;
const FS_READ_BACK: u64 = 64 << 10;

async fn blocking_fs(fixed: bool, path: std::path::PathBuf) -> Outcome {
    // Zeroed memory is mapped lazily: making the buffer costs nothing, writing it out does.
    let data = vec![0u8; FS_WRITE];
    let mut head = Vec::new();
    if fixed {
        // tokio::fs runs each call on the blocking pool. `fs::write` hands the whole buffer over;
        // writing through a `tokio::fs::File` would copy it, 2 MiB per poll, on the worker.
        tokio::fs::write(&path, data).await?;
        tokio::fs::File::open(&path).await?.sync_all().await?;
        tokio::fs::File::open(&path).await?.take(FS_READ_BACK).read_to_end(&mut head).await?;
    } else {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::File::open(&path)?.take(FS_READ_BACK).read_to_end(&mut head)?;
    }
    assert_eq!(head.len() as u64, FS_READ_BACK);
    Ok(0)
}

async fn blocking_dns(fixed: bool) -> Outcome {
    // `localhost` resolves from /etc/hosts, so this works offline; each lookup is quick, a burst of
    // them is not (as one lookup to a slow resolver would not be).
    for _ in 0..4_000 {
        if fixed {
            tokio::net::lookup_host(("localhost", 80)).await?.for_each(drop);
        } else {
            std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))?.for_each(drop);
        }
    }
    Ok(0)
}

/// A loopback server that answers each 4-byte request after 30 ms.
struct SlowServer {
    addr: SocketAddr,
}

impl SlowServer {
    fn start() -> std::io::Result<SlowServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new().name("blocking-slow-server".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut req = [0u8; 4];
                    while conn.read_exact(&mut req).is_ok() {
                        std::thread::sleep(Duration::from_millis(30));
                        if conn.write_all(b"pong").is_err() {
                            return;
                        }
                    }
                });
            }
        })?;
        Ok(SlowServer { addr })
    }
}

async fn blocking_net(fixed: bool, addr: Option<SocketAddr>) -> Outcome {
    let addr = addr.ok_or_else(|| std::io::Error::other("no server"))?;
    let mut resp = [0u8; 4];
    if fixed {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        s.read_exact(&mut resp).await?;
    } else {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(b"ping")?;
        s.read_exact(&mut resp)?;
    }
    Ok(0)
}

async fn std_mutex(fixed: bool) -> Result<Outcome, tokio::task::JoinError> {
    if fixed {
        let m = Arc::new(tokio::sync::Mutex::new(0u64));
        let held = Arc::clone(&m).lock_owned().await;
        let waiter = {
            let m = Arc::clone(&m);
            spawn(async move {
                *m.lock().await += 1;
                Ok(0)
            })
        };
        // The slow operation, done while holding the lock, without blocking a worker.
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(held);
        waiter.await
    } else {
        let m = Arc::new(std::sync::Mutex::new(0u64));
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let holder = {
            let m = Arc::clone(&m);
            tokio::task::spawn_blocking(move || {
                let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
                let _ = locked_tx.send(());
                // The slow operation, done while holding a std lock.
                std::thread::sleep(Duration::from_millis(30));
                *g += 1;
            })
        };
        let _ = locked_rx.await;
        let waiter = {
            let m = Arc::clone(&m);
            spawn(async move {
                *m.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                Ok(0)
            })
        };
        let out = waiter.await;
        holder.await?;
        out
    }
}

async fn nested_runtime(fixed: bool) -> Outcome {
    let work = async { tokio::time::sleep(Duration::from_millis(5)).await };
    if fixed {
        work.await;
    } else {
        // The guide's `asyncio.run()` inside a running loop: tokio refuses with a panic.
        tokio::runtime::Handle::current().block_on(work);
    }
    Ok(0)
}

async fn executor_block_on(fixed: bool) -> Outcome {
    let work = tokio::time::sleep(Duration::from_millis(30));
    if fixed {
        work.await;
    } else {
        futures_executor::block_on(work);
    }
    Ok(0)
}

static RECORDED: AtomicU64 = AtomicU64::new(0);

/// The work whose result a forgotten `.await` loses.
async fn record_once() {
    RECORDED.fetch_add(1, Ordering::Relaxed);
}

/// Returns how many units of work were lost (1 when the future was never awaited).
async fn forgot_await(fixed: bool) -> Outcome {
    let before = RECORDED.load(Ordering::Relaxed);
    if fixed {
        record_once().await;
    } else {
        // The mistake: the future is created and never awaited, so `record_once` never runs.
        // Written as a bare `record_once();` it triggers rustc's `unused_must_use` ("futures do
        // nothing unless you `.await` or poll them") and as `let _ = record_once();` clippy's
        // `let_underscore_future`; binding it to a name, as here, gets past both.
        let _unawaited = record_once();
    }
    Ok(1 - (RECORDED.load(Ordering::Relaxed) - before).min(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    #[test]
    fn every_scenario_and_fix_runs_to_the_end() {
        let rt = rt();
        for s in Scenario::ALL {
            for fixed in [false, true] {
                let r = rt
                    .block_on(run_scenario(s, fixed, 1))
                    .unwrap_or_else(|e| panic!("{} fixed={fixed}: {e}", s.name()));
                assert_eq!(r.get_metric("rounds"), Some(1.0));
                let late = r.summary("ticker_lateness").unwrap();
                assert!(late.count > 0, "{}: the ticker ran", s.name());
            }
        }
    }

    #[test]
    fn forgetting_await_loses_the_work_and_the_fix_keeps_it() {
        let rt = rt();
        let lost = rt.block_on(run_scenario(Scenario::ForgotAwait, false, 3)).unwrap();
        assert_eq!(lost.get_metric("lost_work"), Some(3.0));
        let kept = rt.block_on(run_scenario(Scenario::ForgotAwait, true, 3)).unwrap();
        assert_eq!(kept.get_metric("lost_work"), Some(0.0));
    }

    #[test]
    fn a_nested_runtime_panics_and_is_counted() {
        let rt = rt();
        let r = rt.block_on(run_scenario(Scenario::NestedRuntime, false, 2)).unwrap();
        assert_eq!(r.get_metric("panics_caught"), Some(2.0));
        let r = rt.block_on(run_scenario(Scenario::NestedRuntime, true, 2)).unwrap();
        assert_eq!(r.get_metric("panics_caught"), Some(0.0));
    }

    #[test]
    fn a_blocking_sleep_delays_the_ticker_and_the_fix_does_not() {
        // One worker: whatever blocks it, the ticker waits for.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bad = rt.block_on(run_scenario(Scenario::SyncSleep, false, 3)).unwrap();
        let good = rt.block_on(run_scenario(Scenario::SyncSleep, true, 3)).unwrap();
        let (bad, good) = (bad.summary("ticker_lateness").unwrap(), good.summary("ticker_lateness").unwrap());
        assert!(bad.max >= Duration::from_millis(20), "the ticker waited behind a 30 ms sleep: {:?}", bad.max);
        assert!(good.max < bad.max, "fix {:?} vs mistake {:?}", good.max, bad.max);
    }
}
