//! hangs: the catalogue of async hangs. A blocked worker (the `blocking` workload) holds up every
//! task behind it; a hung task holds up nothing and uses no CPU: it waits for something that will
//! never come, and the program carries on without it. Each scenario makes one classic mistake or
//! (with `--fixed`) does the same work the right way, for the whole `--for` of the run; tasks still
//! hung at the end are left to the runtime's shutdown.
//!
//! | scenario | the mistake | the fix |
//! |---|---|---|
//! | `deadlock` | two tasks take two `tokio::sync::Mutex`es in opposite orders | one lock order for every task |
//! | `lost-waker` | a hand-written `Future` returns `Pending` without keeping the waker | store the waker where the event's setter wakes it |
//! | `leak-per-request` | a helper task per request waits on a channel whose sender is kept "for later" | drop the sender when the request is done |
//! | `detached-panic` | tasks panic and their `JoinHandle`s were dropped: nobody sees the panics | return `Err`, await the handles, handle the errors |
//! | `forgotten-handle` | a heartbeat task per request, its `JoinHandle` dropped: it runs forever | abort it when the request ends (`AbortOnDrop`) |
//!
//! Lines marked `// hang: NAME` are where each mistake waits (or is spawned, or panics); the tests
//! and the documentation (`docs/mistakes.md`) point at them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loopscope_core::workload::WorkloadResult;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The name `loopscope run` knows this workload by.
pub const NAME: &str = "hangs";

/// How many tasks `detached-panic` spawns (each panics, or with the fix returns an error).
pub const PANICS: usize = 5;

/// How often the `leak-per-request` client sends a request (50 per second).
pub const LEAK_REQUEST_PERIOD: Duration = Duration::from_millis(20);

/// How often `forgotten-handle` starts a request (20 per second).
pub const FORGOTTEN_REQUEST_PERIOD: Duration = Duration::from_millis(50);

/// One hang and its fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Two tasks take two `tokio::sync::Mutex`es in opposite orders (fix: one lock order).
    Deadlock,
    /// A hand-written future returns `Pending` without keeping the waker (fix: keep it, wake it).
    LostWaker,
    /// A helper task per request waits on a channel whose sender is never dropped (fix: drop it).
    LeakPerRequest,
    /// Panics in tasks whose `JoinHandle`s were dropped (fix: return `Err`, await the handles).
    DetachedPanic,
    /// A heartbeat task per request whose `JoinHandle` is forgotten (fix: abort it at the end).
    ForgottenHandle,
}

impl Scenario {
    /// Every scenario, in the order of the table.
    pub const ALL: [Scenario; 5] = [
        Scenario::Deadlock,
        Scenario::LostWaker,
        Scenario::LeakPerRequest,
        Scenario::DetachedPanic,
        Scenario::ForgottenHandle,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Deadlock => "deadlock",
            Scenario::LostWaker => "lost-waker",
            Scenario::LeakPerRequest => "leak-per-request",
            Scenario::DetachedPanic => "detached-panic",
            Scenario::ForgottenHandle => "forgotten-handle",
        }
    }
}

/// Options of the hangs workload.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Which hang to make.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Run the fix instead of the mistake.
    #[arg(long)]
    pub fixed: bool,
}

/// Why the workload could not run.
pub use loopscope_core::workload::ScenarioError as Error;

/// A task of `scenario` failed in a way the scenario does not mean to show.
fn task_error(scenario: Scenario, message: impl ToString) -> Error {
    Error::Task { scenario: scenario.name(), message: message.to_string() }
}

/// Runs `cfg`'s scenario on the current runtime for `run_for`.
pub async fn run(cfg: &Config, run_for: Duration) -> Result<WorkloadResult, Error> {
    run_scenario(cfg.scenario, cfg.fixed, run_for).await
}

/// Runs one scenario (`fixed`: its fix) on the current runtime for `run_for`.
pub async fn run_scenario(scenario: Scenario, fixed: bool, run_for: Duration) -> Result<WorkloadResult, Error> {
    match scenario {
        Scenario::Deadlock => deadlock(fixed, run_for).await,
        Scenario::LostWaker => lost_waker(fixed, run_for).await,
        Scenario::LeakPerRequest => leak_per_request(fixed, run_for).await,
        Scenario::DetachedPanic => detached_panic(fixed, run_for).await,
        Scenario::ForgottenHandle => forgotten_handle(fixed, run_for).await,
    }
}

/// The bookkeeping every scenario shares: when the run ends, and how many tasks were alive on the
/// runtime when it began (hung and leaked tasks stay alive: the growth is the workload's own
/// measure of them).
struct RunClock {
    started: Instant,
    deadline: Instant,
    alive_at_start: usize,
}

impl RunClock {
    fn start(run_for: Duration) -> RunClock {
        let started = Instant::now();
        RunClock { started, deadline: started + run_for, alive_at_start: alive_tasks() }
    }

    /// The figures every scenario reports: alive tasks gained during the run, and its length.
    fn result(&self) -> WorkloadResult {
        let growth = alive_tasks() as f64 - self.alive_at_start as f64;
        let run_time = self.started.elapsed().as_secs_f64();
        WorkloadResult::new(NAME).metric("alive_tasks_growth", growth, "tasks").metric("run_time_s", run_time, "s")
    }
}

/// Tasks alive on the current runtime: spawned and not yet finished (hung ones included).
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// At the end of the run, the scenario's long-lived tasks: the fix's stop by themselves at the
/// deadline and are awaited; the mistake's are hung, are counted as stuck and left where they are
/// (the runtime drops them when it shuts down). Returns the outputs of the tasks that finished,
/// and how many are stuck.
async fn wind_down<T>(scenario: Scenario, fixed: bool, tasks: Vec<JoinHandle<T>>) -> Result<(Vec<T>, usize), Error> {
    let (mut outputs, mut stuck) = (Vec::new(), 0);
    for task in tasks {
        if fixed || task.is_finished() {
            outputs.push(task.await.map_err(|e| task_error(scenario, e))?);
        } else {
            stuck += 1;
        }
    }
    Ok((outputs, stuck))
}

// ---------------------------------------------------------------------------------------------
// deadlock

/// Two accounts, each behind its own async lock.
struct Bank {
    a: Mutex<i64>,
    b: Mutex<i64>,
    /// Counts completed transfers.
    transfers: AtomicU64,
    /// Makes the mistake's deadlock certain: each transfer holds its first lock before either
    /// asks for its second. Without it the two transfers deadlock only when their timing is
    /// unlucky: rarely in a test, sooner or later in production.
    both_hold_one: Barrier,
}

fn move_one(from: &mut i64, to: &mut i64) {
    *from -= 1;
    *to += 1;
}

/// The mistake, first half: locks A, then B.
async fn transfer_a_to_b(bank: Arc<Bank>) -> u64 {
    let mut a = bank.a.lock().await;
    bank.both_hold_one.wait().await;
    let mut b = bank.b.lock().await; // hang: deadlock-a
    move_one(&mut a, &mut b);
    bank.transfers.fetch_add(1, Ordering::Relaxed);
    1
}

/// The mistake, second half: locks B, then A. Each task now holds the lock the other waits for.
async fn transfer_b_to_a(bank: Arc<Bank>) -> u64 {
    let mut b = bank.b.lock().await;
    bank.both_hold_one.wait().await;
    let mut a = bank.a.lock().await; // hang: deadlock-b
    move_one(&mut b, &mut a);
    bank.transfers.fetch_add(1, Ordering::Relaxed);
    1
}

/// The fix: every transfer takes A first, then B, whichever way the money goes. Runs transfers
/// until `deadline`, yielding after each; returns how many it made.
async fn transfer_in_lock_order(bank: Arc<Bank>, a_to_b: bool, deadline: Instant) -> u64 {
    let mut rounds = 0;
    while Instant::now() < deadline {
        let mut a = bank.a.lock().await;
        let mut b = bank.b.lock().await;
        if a_to_b {
            move_one(&mut a, &mut b);
        } else {
            move_one(&mut b, &mut a);
        }
        drop((a, b));
        bank.transfers.fetch_add(1, Ordering::Relaxed);
        rounds += 1;
        tokio::task::yield_now().await;
    }
    rounds
}

/// `deadlock`: two tasks lock two `tokio::sync::Mutex`es in opposite orders and wait for each
/// other forever (the fix: both lock in the same order, and run transfers until the end).
///
/// Metrics: `tasks_spawned` (2), `transfers` (completed transfers: 0 for the mistake),
/// `tasks_stuck` (tasks still waiting at the end: 2 for the mistake).
pub async fn deadlock(fixed: bool, run_for: Duration) -> Result<WorkloadResult, Error> {
    let clock = RunClock::start(run_for);
    let bank = Arc::new(Bank {
        a: Mutex::new(100),
        b: Mutex::new(100),
        transfers: AtomicU64::new(0),
        both_hold_one: Barrier::new(2),
    });
    let tasks = if fixed {
        let a_to_b = tokio::spawn(transfer_in_lock_order(Arc::clone(&bank), true, clock.deadline));
        let b_to_a = tokio::spawn(transfer_in_lock_order(Arc::clone(&bank), false, clock.deadline));
        vec![a_to_b, b_to_a]
    } else {
        let a_to_b = tokio::spawn(transfer_a_to_b(Arc::clone(&bank)));
        let b_to_a = tokio::spawn(transfer_b_to_a(Arc::clone(&bank)));
        vec![a_to_b, b_to_a]
    };
    tokio::time::sleep_until(clock.deadline).await;
    let (_, stuck) = wind_down(Scenario::Deadlock, fixed, tasks).await?;
    Ok(clock
        .result()
        .metric("tasks_spawned", 2.0, "tasks")
        .metric("transfers", bank.transfers.load(Ordering::Relaxed) as f64, "transfers")
        .metric("tasks_stuck", stuck as f64, "tasks"))
}

// ---------------------------------------------------------------------------------------------
// lost-waker

/// A flag one task sets and another waits for, written by hand.
#[derive(Default)]
struct Flag {
    set: AtomicBool,
    /// The waker of the task waiting for the flag, if it left one.
    waiter: std::sync::Mutex<Option<Waker>>,
}

impl Flag {
    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Sets the flag and wakes the waiting task, if it left its waker.
    fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        if let Some(waker) = self.waiter.lock().unwrap_or_else(PoisonError::into_inner).take() {
            waker.wake();
        }
    }
}

/// Waits until a [`Flag`] is set.
struct FlagSet {
    flag: Arc<Flag>,
    /// Whether `poll` keeps the waker (the fix) or forgets it (the mistake).
    keep_waker: bool,
}

impl Future for FlagSet {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.is_set() {
            return Poll::Ready(());
        }
        if self.keep_waker {
            // The fix: leave the waker where `Flag::set` finds it, then look again, in case the
            // flag was set in between by a setter that found no waker yet.
            *self.flag.waiter.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            if self.flag.is_set() {
                return Poll::Ready(());
            }
        }
        // The mistake (without `keep_waker`): `Pending` promises the executor a wake-up, and
        // nothing will ever call the waker, so the task is never polled again.
        Poll::Pending
    }
}

/// Sets `flag` a little later, from another task.
async fn set_later(flag: Arc<Flag>, flags_set: Arc<AtomicU64>) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    flag.set();
    flags_set.fetch_add(1, Ordering::Relaxed);
}

/// Waits for flag after flag, each set 50 ms later by another task, until `deadline`; returns how
/// many waits completed.
async fn wait_for_flags(keep_waker: bool, deadline: Instant, flags_set: Arc<AtomicU64>) -> u64 {
    let mut waits = 0;
    while Instant::now() < deadline {
        let flag = Arc::new(Flag::default());
        tokio::spawn(set_later(Arc::clone(&flag), Arc::clone(&flags_set)));
        FlagSet { flag, keep_waker }.await; // hang: lost-waker
        waits += 1;
    }
    waits
}

/// `lost-waker`: a task awaits a hand-written future whose `poll` returns `Pending` without
/// keeping the waker; another task sets the flag 50 ms later, and the waiter never wakes (the fix:
/// `poll` stores the waker and the setter wakes it; the wait then repeats until the end).
///
/// Metrics: `flags_set`, `waits_completed` (0 for the mistake, though its flag was set),
/// `tasks_stuck` (1 for the mistake).
pub async fn lost_waker(fixed: bool, run_for: Duration) -> Result<WorkloadResult, Error> {
    let clock = RunClock::start(run_for);
    let flags_set = Arc::new(AtomicU64::new(0));
    let waiter = tokio::spawn(wait_for_flags(fixed, clock.deadline, Arc::clone(&flags_set)));
    tokio::time::sleep_until(clock.deadline).await;
    let (waits, stuck) = wind_down(Scenario::LostWaker, fixed, vec![waiter]).await?;
    Ok(clock
        .result()
        .metric("flags_set", flags_set.load(Ordering::Relaxed) as f64, "flags")
        .metric("waits_completed", waits.iter().sum::<u64>() as f64, "waits")
        .metric("tasks_stuck", stuck as f64, "tasks"))
}

// ---------------------------------------------------------------------------------------------
// leak-per-request

/// Open requests "kept for later" (say, for a status page that could still add to their events).
/// Nothing ever removes them: the mistake.
static OPEN_REQUESTS: std::sync::Mutex<Vec<mpsc::UnboundedSender<String>>> = std::sync::Mutex::new(Vec::new());

/// Counts of the per-request helper tasks.
#[derive(Default)]
struct Helpers {
    spawned: AtomicU64,
    finished: AtomicU64,
}

/// The per-request helper: collects the request's events and files them once the request is
/// over, that is, once the channel closes, when every sender is gone.
async fn file_events(mut events: mpsc::UnboundedReceiver<String>, helpers: Arc<Helpers>) {
    let mut log = Vec::new();
    loop {
        // `None` once the channel is closed: every sender dropped.
        let Some(event) = events.recv().await else { break }; // hang: leak-wait
        log.push(event);
    }
    std::hint::black_box(log);
    helpers.finished.fetch_add(1, Ordering::Relaxed);
}

/// Answers one request line, with a helper task filing its events.
async fn answer(
    line: &str,
    out: &mut (impl AsyncWriteExt + Unpin),
    fixed: bool,
    helpers: &Arc<Helpers>,
) -> std::io::Result<()> {
    let (events, rx) = mpsc::unbounded_channel();
    helpers.spawned.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(file_events(rx, Arc::clone(helpers))); // hang: leak-spawn
    let _ = events.send(format!("received {line}"));
    out.write_all(format!("ok {line}\n").as_bytes()).await?;
    let _ = events.send("answered".to_string());
    if !fixed {
        // The mistake: the sender is kept "for later", so the channel never closes and the
        // helper waits forever: one more task alive per request.
        OPEN_REQUESTS.lock().unwrap_or_else(PoisonError::into_inner).push(events);
    }
    // The fix: `events` is dropped here, when the request is done; the helper sees the channel
    // close, files the events and ends.
    Ok(())
}

/// The server: answers the lines of the client's kept-alive connection until the client hangs up;
/// returns how many it answered.
async fn serve(listener: TcpListener, fixed: bool, helpers: Arc<Helpers>) -> std::io::Result<u64> {
    let (conn, _) = listener.accept().await?;
    let (input, mut output) = conn.into_split();
    let mut lines = BufReader::new(input).lines();
    let mut answered = 0;
    while let Some(line) = lines.next_line().await? {
        answer(&line, &mut output, fixed, &helpers).await?;
        answered += 1;
    }
    Ok(answered)
}

/// The client: one request line every [`LEAK_REQUEST_PERIOD`] on one connection, each answer read
/// before the next request, until `deadline`; returns how many were answered.
async fn send_requests(server: std::net::SocketAddr, deadline: Instant) -> std::io::Result<u64> {
    let (input, mut output) = TcpStream::connect(server).await?.into_split();
    let mut answers = BufReader::new(input).lines();
    let mut every = tokio::time::interval(LEAK_REQUEST_PERIOD);
    let mut answered = 0;
    while every.tick().await < deadline {
        output.write_all(format!("GET /orders/{answered}\n").as_bytes()).await?;
        answers.next_line().await?.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        answered += 1;
    }
    Ok(answered)
}

/// `leak-per-request`: a loopback TCP server spawns a helper task per request that waits on a
/// channel whose sender is kept "for later", so the helpers never end: the alive tasks grow by one
/// per request, 50 per second (the fix: the sender is dropped when the request is done).
///
/// Metrics: `requests` (answered), `tasks_spawned` (helpers), `helpers_alive` (helpers not
/// finished at the end: about `requests` for the mistake, about 0 for the fix).
pub async fn leak_per_request(fixed: bool, run_for: Duration) -> Result<WorkloadResult, Error> {
    let scenario = Scenario::LeakPerRequest;
    let clock = RunClock::start(run_for);
    let setup = |source| Error::Setup { scenario: scenario.name(), source };
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(setup)?;
    let addr = listener.local_addr().map_err(setup)?;
    let helpers = Arc::new(Helpers::default());
    let server = tokio::spawn(serve(listener, fixed, Arc::clone(&helpers)));
    let requests = send_requests(addr, clock.deadline).await.map_err(|e| task_error(scenario, e))?;
    // The client hung up: the server answers nothing more and ends.
    server.await.map_err(|e| task_error(scenario, e))?.map_err(|e| task_error(scenario, e))?;
    let spawned = helpers.spawned.load(Ordering::Relaxed);
    let alive = spawned - helpers.finished.load(Ordering::Relaxed);
    Ok(clock
        .result()
        .metric("requests", requests as f64, "requests")
        .metric("tasks_spawned", spawned as f64, "tasks")
        .metric("helpers_alive", alive as f64, "tasks"))
}

// ---------------------------------------------------------------------------------------------
// detached-panic

/// The order every task of `detached-panic` bills: its customer record is missing.
const ORDER: u32 = 7;

fn customer_of(order: u32) -> Option<&'static str> {
    [(5, "Ada"), (6, "Grace"), (8, "Barbara")].into_iter().find(|(o, _)| *o == order).map(|(_, name)| name)
}

/// The fix's error: the order has no customer.
#[derive(Debug)]
struct NoCustomer(u32);

/// Bills [`ORDER`]. `_running` is the scenario's own bookkeeping, not part of the mistake: it is
/// dropped when the task ends, whether it returns or unwinds from a panic.
async fn bill_order(fixed: bool, _running: mpsc::Sender<()>) -> Result<String, NoCustomer> {
    let Some(customer) = customer_of(ORDER) else {
        if fixed {
            // The fix: say so in the result, for whoever awaits the handle to handle.
            return Err(NoCustomer(ORDER));
        }
        // The mistake: tokio catches a task's panic and keeps it in the task's JoinHandle, and
        // nobody holds the handle: the panic only reaches stderr, and the work is lost.
        panic!("order 7 has no customer"); // hang: panic
    };
    Ok(format!("invoice for order {ORDER}: {customer}"))
}

/// `detached-panic`: [`PANICS`] tasks panic and their `JoinHandle`s were dropped, so nobody sees
/// the panics and the run goes on as if nothing happened (the fix: the tasks return `Err`, the
/// handles are awaited and the errors handled).
///
/// Metrics: `tasks_spawned` (5), `tasks_ended` (5), `errors_handled` (5 with the fix, 0 for the
/// mistake), `outcomes_lost` (tasks that ended with nobody seeing how: 5 for the mistake).
pub async fn detached_panic(fixed: bool, run_for: Duration) -> Result<WorkloadResult, Error> {
    let scenario = Scenario::DetachedPanic;
    let clock = RunClock::start(run_for);
    let (running, mut ended) = mpsc::channel::<()>(1);
    let mut handles = Vec::new();
    for _ in 0..PANICS {
        let handle = tokio::spawn(bill_order(fixed, running.clone())); // hang: panic-spawn
        if fixed {
            handles.push(handle);
        }
        // The mistake: `handle` is dropped here; the task runs on, detached.
    }
    // Wait until every task has ended (each drops its sender as it returns or unwinds).
    drop(running);
    let _ = ended.recv().await;
    // The fix's handling: the orders that need a customer go on a list for someone to fix.
    let (mut billed, mut orders_to_fix) = (0usize, Vec::new());
    for handle in handles {
        match handle.await.map_err(|e| task_error(scenario, e))? {
            Ok(_) => billed += 1,
            Err(NoCustomer(order)) => orders_to_fix.push(order),
        }
    }
    let errors_handled = orders_to_fix.len();
    tokio::time::sleep_until(clock.deadline).await;
    Ok(clock
        .result()
        .metric("tasks_spawned", PANICS as f64, "tasks")
        .metric("tasks_ended", PANICS as f64, "tasks")
        .metric("errors_handled", errors_handled as f64, "errors")
        .metric("outcomes_lost", (PANICS - billed - errors_handled) as f64, "tasks"))
}

// ---------------------------------------------------------------------------------------------
// forgotten-handle

/// Aborts its task when dropped: ties a background task's life to the scope that owns the guard,
/// however the scope ends (return, `?`, panic, or the future being dropped).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request's heartbeat: says the request is alive once a second (to a load balancer, a lease,
/// a progress bar), for as long as it runs.
async fn heartbeat(beats: Arc<AtomicU64>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await; // hang: forgotten-wait
        beats.fetch_add(1, Ordering::Relaxed);
    }
}

/// One request: starts its heartbeat, does its work (10 ms of I/O, simulated), ends.
async fn handle_request(fixed: bool, beats: &Arc<AtomicU64>) {
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(beats))); // hang: forgotten-spawn
    // The fix: the request owns its heartbeat; the guard aborts it when the request ends.
    let _heartbeat = if fixed { Some(AbortOnDrop(heartbeat)) } else { None };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The mistake (without the guard): the JoinHandle is dropped here, and dropping a JoinHandle
    // detaches its task, it does not stop it: the heartbeat beats on forever.
}

/// `forgotten-handle`: each request (20 per second) spawns a heartbeat task that loops forever
/// and forgets its `JoinHandle`, so heartbeats pile up (the fix: the request aborts its heartbeat
/// when it ends).
///
/// Metrics: `requests`, `tasks_spawned` (heartbeats), `heartbeats` (beats sent).
pub async fn forgotten_handle(fixed: bool, run_for: Duration) -> Result<WorkloadResult, Error> {
    let clock = RunClock::start(run_for);
    let beats = Arc::new(AtomicU64::new(0));
    let mut every = tokio::time::interval(FORGOTTEN_REQUEST_PERIOD);
    let mut requests = 0u64;
    while every.tick().await < clock.deadline {
        handle_request(fixed, &beats).await;
        requests += 1;
    }
    Ok(clock
        .result()
        .metric("requests", requests as f64, "requests")
        .metric("tasks_spawned", requests as f64, "tasks")
        .metric("heartbeats", beats.load(Ordering::Relaxed) as f64, "beats"))
}
