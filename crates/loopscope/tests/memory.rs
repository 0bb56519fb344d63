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
