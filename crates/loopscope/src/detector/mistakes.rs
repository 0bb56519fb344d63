//! Panics in tasks. A panic hook, chained in front of the one already set, counts every panic of
//! a task being polled, per spawn site, location and message (tokio catches a task's panic, and
//! a task whose `JoinHandle` nobody awaits loses it, like asyncio's "Task exception was never
//! retrieved"), and lets the panic go on.
//!
//! One panic is also a blocking mistake: `Runtime::block_on` or `Handle::block_on` inside a task,
//! the tokio form of calling `asyncio.run()` inside a running loop. tokio panics ("Cannot start a
//! runtime from within a runtime"); the hook records it as a stall of category `nested-runtime`
//! at the panic's location (the user's `block_on` call: tokio passes its caller's location
//! through).

use std::panic::PanicHookInfo;
use std::sync::{Arc, Mutex, Once, Weak};

use loopscope_core::model::{Event, Stall, StallCategory};

use crate::hot::{Shared, lock};
use crate::outputs::flusher::Cmd;

/// Sessions watching for the panic.
static ACTIVE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

const NESTED: [&str; 2] =
    ["Cannot start a runtime from within a runtime", "Cannot block the current thread from within a runtime"];

/// Starts watching for panics in tasks on behalf of a session.
pub(crate) fn watch(shared: &Arc<Shared>) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            on_panic(info);
            previous(info);
        }));
    });
    let mut active = lock(&ACTIVE);
    active.retain(|w| w.strong_count() > 0);
    active.push(Arc::downgrade(shared));
}

fn on_panic(info: &PanicHookInfo<'_>) {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".into());
    let Some(session) = Shared::current_session() else { return };
    let shared = lock(&ACTIVE).iter().filter_map(Weak::upgrade).find(|s| s.has_id(session));
    let Some(shared) = shared else { return };
    let Some((worker, site)) = shared.current_poll() else { return };
    // Every panic of a task is counted: tokio catches it, and a task nobody awaits loses it.
    shared.count_panic(site, info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())), &message);
    if !NESTED.iter().any(|n| message.contains(n)) {
        return;
    }
    let Some(events) = shared.event_sink() else { return };
    let now = shared.now_ns();
    let id = shared.next_stall_id();
    let stall = Stall {
        id,
        worker,
        site: Some(site),
        started_ns: now,
        detected_ns: now,
        category: StallCategory::NestedRuntime,
        syscall: None,
        fd_target: None,
        cpu_percent: 0,
        frames: Vec::new(),
        blocking_site: info.location().map(|l| format!("{}:{}", l.file(), l.line())),
        blocking_function: None,
        call: Some("block_on (tokio panicked: a runtime inside a runtime)".into()),
        stack: Vec::new(),
        late: false,
        spans: crate::hot::spans::current(),
    };
    let _ = events.send(Cmd::Event(Box::new(Event::StallBegin(stall))));
    let _ = events.send(Cmd::Event(Box::new(Event::StallEnd { id, duration_ns: 0, category: None })));
}
