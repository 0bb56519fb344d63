//! The reference floor of a poll timer: two runtime hooks that read the TSC and count the poll's
//! length in a thread-local histogram, nothing else (no spawn sites, no detector, no flushing).
//! It is what the overhead issue measured as the least instrumentation can cost, and the
//! benchmark runs it beside loopscope so that each run says how far above the floor loopscope
//! is on that run's machine and noise. Not a profiler: it never reads what it counts.

use std::cell::Cell;

const BUCKETS: usize = 2048;

thread_local! {
    static START: Cell<u64> = const { Cell::new(0) };
    static COUNTS: [Cell<u32>; BUCKETS] = const { [const { Cell::new(0) }; BUCKETS] };
}

#[inline(always)]
fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reading the TSC has no preconditions on x86-64.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

/// Counts `v` in a log-linear bucket (32 per power of two), as an HDR histogram would.
#[inline(always)]
fn record(v: u64) {
    let b = (64 - v.leading_zeros()) as usize * 32 + (v & 31) as usize;
    COUNTS.with(|c| {
        let c = &c[b % BUCKETS];
        c.set(c.get().wrapping_add(1));
    });
}

/// Installs the floor's hooks; with `schedule_latency`, also tokio's schedule-latency tracking,
/// whose figure is recorded too (the least loopscope's `full` profile can cost).
pub fn install(builder: &mut tokio::runtime::Builder, schedule_latency: bool) {
    if schedule_latency {
        builder.track_task_schedule_latency();
    }
    builder
        .on_before_task_poll(|meta| {
            START.with(|s| s.set(now()));
            if let Some(l) = meta.schedule_latency() {
                record(l.as_nanos() as u64);
            }
        })
        .on_after_task_poll(|_| record(now().wrapping_sub(START.with(Cell::get))));
}
