//! chat: the asyncio guide's "thousands of sockets", as a TCP chat server and its clients.
//!
//! The server (on 127.0.0.1) speaks a line protocol: `JOIN <room> <client>` (answered `JOINED`),
//! then `MSG <client> <sent_ns> <seq>` lines, each broadcast to the other members of the room with
//! a `tokio::sync::broadcast` channel per room. Every connection has its own bounded outgoing
//! queue, filled from the room's channel without ever waiting and drained to the socket by its own
//! writer task: a slow reader's queue fills up and new messages for it are dropped (and counted),
//! instead of holding up the server or the other members.
//!
//! `--clients` clients (default 1,000; 5,000 works) connect, join room `i % --rooms`, wait until
//! everyone has joined, then send `--rate` messages per second each (seeded jitter), or exactly
//! `--messages` each. Every message carries its send time, so each receiver measures the
//! end-to-end latency. `--slow-clients` of them read slowly, to show the server is not stalled.
//!
//! Each client costs two file descriptors in this one process (its socket and the server's), so
//! the workload raises its soft descriptor limit to the hard limit and refuses a count that cannot
//! fit, naming the largest that can.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopscope_core::dist::DistAcc;
use loopscope_core::workload::WorkloadResult;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// The name `loopscope run` knows this workload by.
pub const NAME: &str = "chat";

/// Messages a room's broadcast channel keeps for members whose forwarder has not taken them yet
/// (forwarders never wait, so this only overflows if a worker is starved).
const ROOM_BACKLOG: usize = 4096;

/// File descriptors kept free for everything else in the process.
const FD_RESERVE: u64 = 128;

/// Options of the chat workload.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Clients connected at once (each costs two file descriptors).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub clients: u32,
    /// Rooms; client `i` joins room `i % rooms`.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rooms: u32,
    /// Messages per second each client sends.
    #[arg(long, default_value_t = 1.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Send exactly this many messages per client, then stop (0: send until `--for` has passed).
    #[arg(long, default_value_t = 0)]
    pub messages: u32,
    /// Clients that read slowly (one line per 50 ms).
    #[arg(long, default_value_t = 0)]
    pub slow_clients: u32,
    /// Bytes of text in each message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub size: u32,
    /// Messages each member's outgoing queue holds; when it is full, new ones are dropped (counted).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { clients: 1_000, rooms: 20, rate: 1.0, messages: 0, slow_clients: 0, size: 64, queue: 256 }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 10_000.0 => Ok(r),
        _ => Err("expected messages per second, more than 0 and at most 10000".into()),
    }
}

/// Why the workload failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The descriptor limit cannot hold the requested clients.
    #[error(
        "--clients {requested} needs {needed} file descriptors but the hard limit is {hard}; the largest count that fits is {max}"
    )]
    TooManyClients {
        /// Clients asked for.
        requested: u32,
        /// Descriptors they need.
        needed: u64,
        /// The hard `RLIMIT_NOFILE`.
        hard: u64,
        /// The most clients that fit.
        max: u64,
    },
    /// Setting up a socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The run ended with messages still undelivered to members that read normally.
    #[error("a client task failed: {0}")]
    Task(String),
}

/// Raises the soft descriptor limit to the hard one; checks that `clients` fit.
pub fn ensure_descriptors(clients: u32) -> Result<u64, Error> {
    let needed = 2 * u64::from(clients) + FD_RESERVE;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(Error::Io {
                what: "reading the file descriptor limit",
                source: std::io::Error::last_os_error(),
            });
        }
        let hard = lim.rlim_max;
        if needed > hard {
            return Err(Error::TooManyClients {
                requested: clients,
                needed,
                hard,
                max: hard.saturating_sub(FD_RESERVE) / 2,
            });
        }
        if lim.rlim_cur < needed {
            lim.rlim_cur = hard;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(Error::Io {
                    what: "raising the file descriptor limit",
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(hard)
    }
}

/// One chat line on its way to a room's members.
#[derive(Debug)]
struct Line {
    from: u32,
    text: Arc<str>,
}

/// The server's rooms.
type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Arc<Line>>>>>;

/// The chat server; stops when dropped.
pub struct Server {
    addr: std::net::SocketAddr,
    drops: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start(queue: usize) -> Result<Server, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io { what: "binding the chat server", source })?;
        let addr = listener.local_addr().map_err(|source| Error::Io { what: "reading its address", source })?;
        let rooms: Rooms = Arc::new(Mutex::new(HashMap::new()));
        let drops = Arc::new(AtomicU64::new(0));
        let d = Arc::clone(&drops);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(serve(stream, Arc::clone(&rooms), Arc::clone(&d), queue));
            }
        });
        Ok(Server { addr, drops, task })
    }
}

/// One connection: reads commands, broadcasts messages; its writer task forwards the room's.
async fn serve(stream: TcpStream, rooms: Rooms, drops: Arc<AtomicU64>, queue: usize) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(join)) = lines.next_line().await else { return };
    let mut parts = join.split_whitespace();
    let (Some("JOIN"), Some(room), Some(me)) = (parts.next(), parts.next(), parts.next().and_then(|c| c.parse().ok()))
    else {
        let _ = write.write_all(b"ERR expected JOIN <room> <client>\n").await;
        return;
    };
    let tx = {
        let mut rooms = rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.entry(room.to_string()).or_insert_with(|| broadcast::channel(ROOM_BACKLOG).0).clone()
    };
    let mut rx = tx.subscribe();
    if write.write_all(b"JOINED\n").await.is_err() {
        return;
    }
    // The member's own bounded queue: a forwarder moves the room's messages into it without ever
    // waiting (a full queue drops the message and counts it), a writer drains it to the socket.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Arc<Line>>(queue);
    let forwarder = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(line) if line.from == me => {}
                Ok(line) => {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = out_tx.try_send(line) {
                        drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    drops.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            if write.write_all(line.text.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("MSG ") {
            let text: Arc<str> = format!("{line}\n").into();
            let _ = tx.send(Arc::new(Line { from: me, text }));
        }
    }
    forwarder.abort();
    writer.abort();
}

/// Counts kept by all clients; the latency histogram is sharded so readers rarely share a lock.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    delivered: AtomicU64,
    latency: [Mutex<DistAcc>; 16],
}

impl Totals {
    fn delivered(&self, client: u32, latency: Duration) {
        let shard = &self.latency[client as usize % self.latency.len()];
        shard.lock().unwrap_or_else(|p| p.into_inner()).record(latency);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn latency(&self) -> DistAcc {
        let mut all = DistAcc::new();
        for s in &self.latency {
            all.add(&s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// Runs the server and the clients for `run_for` (or until `--messages` are all sent and
/// delivered).
pub async fn run(cfg: &Config, run_for: Duration, seed: u64) -> Result<WorkloadResult, Error> {
    ensure_descriptors(cfg.clients)?;
    let server = Server::start(cfg.queue as usize).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = Arc::new(Run {
        addr: server.addr,
        cfg: cfg.clone(),
        seed,
        epoch: Instant::now(),
        totals: Totals::default(),
        joined: tokio::sync::Barrier::new(cfg.clients as usize + 1),
        // Connect in waves, so the listen backlog is never overrun.
        connecting: tokio::sync::Semaphore::new(256),
    });
    let totals = &run.totals;
    let joined = &run.joined;
    let clients: Vec<_> =
        (0..cfg.clients).map(|id| tokio::spawn(client(Arc::clone(&run), id, stop_rx.clone()))).collect();
    joined.wait().await;
    let start = Instant::now();
    // Time-based runs stop sending at the deadline; counted runs when every client has sent.
    if cfg.messages == 0 {
        tokio::time::sleep(run_for).await;
    } else {
        let target = u64::from(cfg.messages) * u64::from(cfg.clients);
        while totals.sent.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let sending_time = start.elapsed();
    let _ = stop_tx.send(true);
    // Let what was sent arrive: every normal reader gets every message from its room.
    let expected = expected_deliveries(cfg, totals);
    let deadline = Instant::now() + Duration::from_secs(5);
    while totals.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in clients {
        c.abort();
    }
    let delivered = totals.delivered.load(Ordering::Relaxed);
    let latency = totals.latency();
    Ok(WorkloadResult::new(NAME)
        .metric("clients", f64::from(cfg.clients), "clients")
        .metric("messages_sent", totals.sent.load(Ordering::Relaxed) as f64, "messages")
        .metric("messages_delivered", delivered as f64, "messages")
        .metric("expected_deliveries", expected as f64, "messages")
        .metric("delivered_per_s", delivered as f64 / sending_time.as_secs_f64().max(1e-3), "1/s")
        .metric("drops", server.drops.load(Ordering::Relaxed) as f64, "messages")
        .distribution("message_latency", &latency))
}

/// Deliveries owed to clients that read normally: each message goes to every other member.
fn expected_deliveries(cfg: &Config, totals: &Totals) -> u64 {
    if cfg.messages == 0 {
        // Time-based: what was sent, times the other normal members of a room on average.
        let members = f64::from(cfg.clients) / f64::from(cfg.rooms);
        let normal_share = 1.0 - f64::from(cfg.slow_clients) / f64::from(cfg.clients);
        return (totals.sent.load(Ordering::Relaxed) as f64 * (members - 1.0).max(0.0) * normal_share) as u64;
    }
    (0..cfg.rooms)
        .map(|r| {
            let members: Vec<u32> = (0..cfg.clients).filter(|i| i % cfg.rooms == r).collect();
            let normal = members.iter().filter(|i| **i >= cfg.slow_clients).count() as u64;
            // Each member's messages go to the normal readers other than itself.
            members.iter().map(|m| u64::from(cfg.messages) * (normal - u64::from(*m >= cfg.slow_clients))).sum::<u64>()
        })
        .sum()
}

/// What every client of one run shares.
struct Run {
    addr: std::net::SocketAddr,
    cfg: Config,
    seed: u64,
    epoch: Instant,
    totals: Totals,
    joined: tokio::sync::Barrier,
    connecting: tokio::sync::Semaphore,
}

async fn client(run: Arc<Run>, id: u32, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (addr, cfg, epoch) = (run.addr, &run.cfg, run.epoch);
    let (totals, joined, connecting) = (&run.totals, &run.joined, &run.connecting);
    let room = format!("room{}", id % cfg.rooms);
    let slow = id < cfg.slow_clients;
    let stream = {
        let _wave = connecting.acquire().await;
        match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                joined.wait().await;
                return;
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let ok = write.write_all(format!("JOIN {room} {id}\n").as_bytes()).await.is_ok()
        && matches!(lines.next_line().await, Ok(Some(l)) if l == "JOINED");
    joined.wait().await;
    if !ok {
        return;
    }
    let r = Arc::clone(&run);
    let reader = tokio::spawn(async move {
        let t = &r.totals;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(sent) = line.split_whitespace().nth(2).and_then(|s| s.parse::<u64>().ok()) {
                let now = epoch.elapsed().as_nanos() as u64;
                t.delivered(id, Duration::from_nanos(now.saturating_sub(sent)));
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mut rng = fastrand::Rng::with_seed(run.seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let period = Duration::from_secs_f64(1.0 / cfg.rate);
    let text = "x".repeat(cfg.size as usize);
    let mut seq = 0u32;
    loop {
        if cfg.messages > 0 && seq >= cfg.messages {
            break;
        }
        // Spread the sends: each wait is 50% to 150% of the period.
        let wait = period.mul_f64(0.5 + rng.f64());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        let sent = epoch.elapsed().as_nanos() as u64;
        if write.write_all(format!("MSG {id} {sent} {seq} {text}\n").as_bytes()).await.is_err() {
            break;
        }
        totals.sent.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    let _ = stop.changed().await;
    let _ = reader.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    #[test]
    fn every_message_reaches_every_other_member_of_its_room() {
        let cfg = Config { clients: 40, rooms: 4, rate: 200.0, messages: 10, ..Config::default() };
        let r = rt().block_on(run(&cfg, Duration::from_secs(30), 1)).unwrap();
        // 4 rooms of 10: each of 10 messages per client reaches the 9 others.
        assert_eq!(r.get_metric("messages_sent"), Some(400.0));
        assert_eq!(r.get_metric("expected_deliveries"), Some(3_600.0));
        assert_eq!(r.get_metric("messages_delivered"), Some(3_600.0));
        assert_eq!(r.get_metric("drops"), Some(0.0));
        let late = r.summary("message_latency").unwrap();
        assert_eq!(late.count, 3_600);
    }

    #[test]
    fn slow_readers_lose_messages_but_do_not_hold_up_the_others() {
        // 20 clients x 400 messages of 1 KiB: 7.6 MB for each reader, far more than a slow reader's
        // socket buffers and queue of 1,024 hold. A normal reader takes 1,900 messages a second,
        // with half a second of queue to spare if the machine holds it up.
        let cfg =
            Config { clients: 20, rooms: 1, rate: 100.0, messages: 400, slow_clients: 2, size: 1024, queue: 1024 };
        let r = rt().block_on(run(&cfg, Duration::from_secs(30), 1)).unwrap();
        // The 18 normal readers each get every message from the 19 others.
        let expected = r.get_metric("expected_deliveries").unwrap();
        assert_eq!(expected, (18 * 19 * 400) as f64);
        assert!(r.get_metric("messages_delivered").unwrap() >= expected, "normal readers got everything");
        assert!(r.get_metric("drops").unwrap() > 0.0, "the slow readers' queues overflowed");
    }

    #[test]
    fn too_many_clients_are_refused_with_the_largest_count_that_fits() {
        let err = ensure_descriptors(u32::MAX / 4).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--clients") && text.contains("the largest count that fits is"), "{text}");
    }
}
