//! The lag probe of the `lean` profile: runtime-wide scheduling latency without tokio's per-task
//! tracking (which reads the clock at every wake and every poll).
//!
//! One task of the recorder's own wakes every 10 ms, yields, and measures how long it waited to be
//! polled again: the time a woken task spends queued behind others. Its own polls are left out of
//! the profile. It holds the session only weakly and ends with it.

use std::panic::Location;
use std::sync::{OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::hot::Shared;

/// How often the probe samples.
pub(crate) const PERIOD: Duration = Duration::from_millis(10);

static LOCATION: OnceLock<&'static Location<'static>> = OnceLock::new();

/// Where the probe is spawned (tokio's `spawned_at` for its task), once it has been.
#[inline]
pub(crate) fn location() -> Option<&'static Location<'static>> {
    LOCATION.get().copied()
}

/// Spawns the probe on `handle`; its task id. Being `#[track_caller]` like tokio's `spawn`, the location it
/// records is the one tokio gives the task.
#[track_caller]
pub(crate) fn spawn(handle: &Handle, shared: Weak<Shared>) -> u64 {
    let _ = LOCATION.set(Location::caller());
    crate::hot::tasks::id_of(&handle.spawn(run(shared)).id())
}

async fn run(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(PERIOD).await;
        let queued = Instant::now();
        tokio::task::yield_now().await;
        let lag = queued.elapsed();
        let Some(shared) = shared.upgrade() else { return };
        if !shared.is_recording() {
            return;
        }
        shared.record_lag(lag);
    }
}
