//! The recorder's memory is bounded by spawn sites and threads, not by the number of tasks.
//!
//! A counting global allocator measures live heap bytes. One million short tasks from twenty
//! spawn sites run under the recorder; its memory (live bytes minus those of the same program
//! without it) must stay under 32 MiB and must not grow between a quarter and all of the tasks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: isize = 1 << 20;

/// The live-byte count is the process's: the tests of this file measure one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
const SITES: usize = 20;

async fn short() {
    tokio::task::yield_now().await;
}

/// Twenty distinct spawn sites.
fn spawn_from(site: usize) -> tokio::task::JoinHandle<()> {
    match site {
        0 => tokio::spawn(short()),
        1 => tokio::spawn(short()),
        2 => tokio::spawn(short()),
        3 => tokio::spawn(short()),
        4 => tokio::spawn(short()),
        5 => tokio::spawn(short()),
        6 => tokio::spawn(short()),
        7 => tokio::spawn(short()),
        8 => tokio::spawn(short()),
        9 => tokio::spawn(short()),
        10 => tokio::spawn(short()),
        11 => tokio::spawn(short()),
        12 => tokio::spawn(short()),
        13 => tokio::spawn(short()),
        14 => tokio::spawn(short()),
        15 => tokio::spawn(short()),
        16 => tokio::spawn(short()),
        17 => tokio::spawn(short()),
        18 => tokio::spawn(short()),
        _ => tokio::spawn(short()),
    }
}

/// Runs `total` tasks in batches; returns live heap bytes after each quarter.
async fn run_tasks(total: usize) -> Vec<isize> {
    let mut samples = Vec::new();
    let batch = 2_000;
    let mut handles = Vec::with_capacity(batch);
    for done in (0..total).step_by(batch) {
        for i in 0..batch {
            handles.push(spawn_from((done + i) % SITES));
        }
        for h in handles.drain(..) {
            h.await.unwrap();
        }
        if (done + batch) % (total / 4) == 0 {
            samples.push(LIVE.load(Ordering::Relaxed));
        }
    }
    samples
}

fn measure(record: bool, total: usize) -> (Vec<isize>, Option<loopscope::Report>) {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    let dir = tempfile::tempdir().unwrap();
    let session = record.then(|| {
        loopscope::Session::builder()
            .record_to(dir.path().join("memory.loopscope"))
            .interval(Duration::from_millis(100))
            .install(&mut builder)
            .unwrap()
    });
    let rt = builder.build().unwrap();
    let samples = rt.block_on(run_tasks(total));
    drop(rt);
    let report = session.map(|s| s.finish().unwrap().unwrap());
    (samples, report)
}

#[test]
fn a_million_tasks_from_twenty_sites_in_bounded_memory() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TOTAL: usize = 1_000_000;
    let (plain, _) = measure(false, TOTAL);
    let (recorded, report) = measure(true, TOTAL);
    let report = report.unwrap();
    assert_eq!(report.runtime.tasks.spawned, TOTAL as u64);
    assert_eq!(report.sites.len(), SITES);
    assert_eq!(report.runtime.polls, 2 * TOTAL as u64, "two polls per task");

    let overhead: Vec<isize> = recorded.iter().zip(&plain).map(|(r, p)| r - p).collect();
    eprintln!("recorder memory after each quarter of the tasks (bytes): {overhead:?}");
    let worst = *overhead.iter().max().unwrap();
    assert!(worst < 32 * MIB, "recorder memory {worst} bytes exceeds 32 MiB");
    // No growth with task count: the last quarter's figure is within 4 MiB (the flusher's
    // transient per-interval buffers) of the first's.
    let growth = recorded[3] - recorded[0];
    assert!(growth < 4 * MIB, "live memory grew by {growth} bytes from 250k to 1M tasks");
}

/// A program whose threads come and go without end: concurrent `block_in_place` calls hand
/// workers to new threads, and the blocking pool lets idle threads exit after a millisecond.
#[test]
fn threads_that_come_and_go_keep_being_recorded_in_bounded_memory() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const ROUNDS: usize = 300;
    const TASKS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.loopscope");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).thread_keep_alive(Duration::from_millis(1)).enable_all();
    let session = loopscope::Session::builder()
        .record_to(&path)
        .interval(Duration::from_millis(50))
        .install(&mut builder)
        .unwrap();
    let rt = builder.build().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let mut samples = Vec::new();
    rt.block_on(async {
        for round in 0..ROUNDS {
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    tokio::spawn(async {
                        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_micros(200)));
                        tokio::task::yield_now().await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            // Long enough for idle threads to pass their keep-alive and exit.
            tokio::time::sleep(Duration::from_millis(3)).await;
            if (round + 1) % (ROUNDS / 3) == 0 {
                samples.push(LIVE.load(Ordering::Relaxed) - before);
            }
        }
    });
    drop(rt);
    let report = session.finish().unwrap().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let rec = loopscope::core::format::Recording::read(&path).unwrap();
    eprintln!("{} threads polled tasks; recorder memory after each third: {samples:?}", rec.workers.len());
    assert!(rec.workers.len() > MAX_THREADS, "the run had more threads than places: {}", rec.workers.len());
    assert_eq!(report.runtime.tasks.spawned, (ROUNDS * TASKS) as u64);
    assert!(
        report.runtime.polls >= (2 * ROUNDS * TASKS) as u64,
        "every task's polls recorded: {}",
        report.runtime.polls
    );
    let growth = samples[2] - samples[0];
    assert!(growth < 4 * MIB, "memory grew by {growth} bytes while threads came and went");
}

/// The recorder's number of places for threads recorded at once (`shared::MAX_THREADS`).
const MAX_THREADS: usize = 1024;
