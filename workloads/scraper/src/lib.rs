//! scraper: the asyncio guide's aiohttp web scraper, in tokio, against a local HTTP server.
//!
//! The workload starts an HTTP/1.1 server (hyper) on 127.0.0.1 serving `--pages` pages, each
//! after `--latency` and `--size` bytes long, failing a seeded `--error-rate` of them with a 500.
//! A reqwest client then fetches every page, in one of the guide's modes:
//!
//! - `sequential`: one after another (what `requests` in a loop does);
//! - `gather`: all at once in one task with `join_all` (`asyncio.gather`);
//! - `bounded`: at most `--concurrency` in flight, with a semaphore;
//! - `spawn`: a `tokio::spawn` per page, handles awaited after (`asyncio.create_task`).
//!
//! Crawls repeat until `--for` has passed (at least one). It reports pages per second and the
//! request latency distribution.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use loopscope_core::dist::DistAcc;
use loopscope_core::workload::WorkloadResult;
use tokio::net::TcpListener;

/// The name `loopscope run` knows this workload by.
pub const NAME: &str = "scraper";

/// How the client fetches the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One page after another.
    Sequential,
    /// All pages at once with `join_all` in one task (`asyncio.gather`).
    Gather,
    /// At most `--concurrency` pages in flight (a semaphore).
    Bounded,
    /// A `tokio::spawn` per page (`asyncio.create_task`).
    Spawn,
}

/// Options of the scraper workload.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Pages on the server (one crawl fetches each once).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub pages: u32,
    /// How long the server takes to answer each request.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Body size of each page, in bytes.
    #[arg(long, default_value_t = 2048)]
    pub size: usize,
    /// Share of pages answered with a 500 (seeded), 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// How the client fetches.
    #[arg(long, value_enum, default_value_t = Mode::Bounded)]
    pub mode: Mode,
    /// Requests in flight at most, for `--mode bounded`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pages: 500,
            latency: Duration::from_millis(20),
            size: 2048,
            error_rate: 0.0,
            mode: Mode::Bounded,
            concurrency: 50,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a number from 0.0 to 1.0".into()),
    }
}

/// Why the workload failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not start.
    #[error("starting the local HTTP server: {0}")]
    Server(std::io::Error),
    /// The client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// A fetch task failed.
    #[error("a fetch task failed: {0}")]
    Task(String),
}

/// Whether page `i` fails, decided by the seed (so a run is repeatable).
fn fails(seed: u64, i: u32, rate: f64) -> bool {
    let mut x = seed ^ (u64::from(i) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x as f64 / u64::MAX as f64) < rate
}

/// The local HTTP server; stops when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts serving on an ephemeral loopback port.
    pub async fn start(cfg: &Config, seed: u64) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let body = Bytes::from(vec![b'x'; cfg.size]);
        let (latency, rate, pages) = (cfg.latency, cfg.error_rate, cfg.pages);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let body = body.clone();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        tokio::time::sleep(latency).await;
                        let page = req.uri().path().strip_prefix("/page/").and_then(|p| p.parse::<u32>().ok());
                        let response = match page {
                            Some(i) if i < pages && !fails(seed, i, rate) => Response::new(Full::new(body)),
                            Some(i) if i < pages => {
                                let mut r = Response::new(Full::new(Bytes::from_static(b"server error")));
                                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                r
                            }
                            _ => {
                                let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(Server { addr, task })
    }
}

/// What one fetch gave.
struct Fetched {
    ok: bool,
    bytes: u64,
    latency: Duration,
}

async fn fetch(client: &reqwest::Client, url: String) -> Fetched {
    let start = Instant::now();
    let result = async {
        let resp = client.get(url).send().await?;
        let ok = resp.status().is_success();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((ok, body.len() as u64))
    }
    .await;
    let (ok, bytes) = result.unwrap_or((false, 0));
    Fetched { ok, bytes, latency: start.elapsed() }
}

/// One crawl of every page in the configured mode.
async fn crawl(client: &reqwest::Client, base: &str, cfg: &Config) -> Result<Vec<Fetched>, Error> {
    let urls = (0..cfg.pages).map(|i| format!("{base}/page/{i}"));
    Ok(match cfg.mode {
        Mode::Sequential => {
            let mut out = Vec::with_capacity(cfg.pages as usize);
            for url in urls {
                out.push(fetch(client, url).await);
            }
            out
        }
        Mode::Gather => futures_util::future::join_all(urls.map(|u| fetch(client, u))).await,
        Mode::Bounded => {
            let permits = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency as usize));
            let tasks: Vec<_> = urls
                .map(|url| {
                    let (client, permits) = (client.clone(), Arc::clone(&permits));
                    tokio::spawn(async move {
                        let _permit = permits.acquire_owned().await;
                        fetch(&client, url).await
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.map_err(|e| Error::Task(e.to_string()))?);
            }
            out
        }
        Mode::Spawn => {
            let tasks: Vec<_> = urls
                .map(|url| {
                    let client = client.clone();
                    tokio::spawn(async move { fetch(&client, url).await })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.map_err(|e| Error::Task(e.to_string()))?);
            }
            out
        }
    })
}

/// Starts the server and crawls until `run_for` has passed (at least once).
pub async fn run(cfg: &Config, run_for: Duration, seed: u64) -> Result<WorkloadResult, Error> {
    let server = Server::start(cfg, seed).await.map_err(Error::Server)?;
    let base = format!("http://{}", server.addr);
    // Many connections at once in the gather and spawn modes: keep them, as aiohttp's pool does.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    let start = Instant::now();
    let (mut pages, mut errors, mut bytes, mut crawls) = (0u64, 0u64, 0u64, 0u64);
    let mut latency = DistAcc::new();
    loop {
        for f in crawl(&client, &base, cfg).await? {
            pages += 1;
            errors += u64::from(!f.ok);
            bytes += f.bytes;
            latency.record(f.latency);
        }
        crawls += 1;
        if start.elapsed() >= run_for {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(server);
    Ok(WorkloadResult::new(NAME)
        .metric("pages", pages as f64, "pages")
        .metric("pages_per_s", pages as f64 / secs, "1/s")
        .metric("errors", errors as f64, "pages")
        .metric("crawls", crawls as f64, "crawls")
        .metric("megabytes", bytes as f64 / 1e6, "MB")
        .distribution("request_latency", &latency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crawl_once(mode: Mode, pages: u32, error_rate: f64) -> WorkloadResult {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let cfg = Config { pages, mode, error_rate, latency: Duration::from_millis(20), ..Config::default() };
        rt.block_on(run(&cfg, Duration::ZERO, 3)).unwrap()
    }

    #[test]
    fn every_mode_fetches_every_page_and_concurrency_pays() {
        let mut rates = Vec::new();
        for mode in [Mode::Sequential, Mode::Gather, Mode::Bounded, Mode::Spawn] {
            let r = crawl_once(mode, 60, 0.0);
            assert_eq!(r.get_metric("pages"), Some(60.0), "{mode:?}");
            assert_eq!(r.get_metric("errors"), Some(0.0), "{mode:?}");
            let late = r.summary("request_latency").unwrap();
            assert!(late.p50 >= Duration::from_millis(20), "{mode:?}: the server waits 20 ms: {:?}", late.p50);
            rates.push(r.get_metric("pages_per_s").unwrap());
        }
        // 60 pages x 20 ms one after another is over 1.2 s; concurrently, a few tens of ms.
        let (sequential, gather, spawn) = (rates[0], rates[1], rates[3]);
        assert!(sequential < 50.0, "sequential {sequential} pages/s");
        assert!(gather > 4.0 * sequential, "gather {gather} vs sequential {sequential}");
        assert!(spawn > 4.0 * sequential, "spawn {spawn} vs sequential {sequential}");
    }

    #[test]
    fn the_error_rate_is_seeded_and_counted() {
        let r = crawl_once(Mode::Spawn, 200, 0.25);
        let expected = (0..200).filter(|i| fails(3, *i, 0.25)).count() as f64;
        assert!(expected > 20.0 && expected < 80.0);
        assert_eq!(r.get_metric("errors"), Some(expected));
    }
}
