//! The `tracing` layer: which spans every poll runs in.
//!
//! With [`tracing_layer`] added to the program's subscriber, loopscope records the spans each
//! polling thread is in: every stall and slow-poll sample carries the names of the spans it ran
//! under (`mini_redis::cmd::get::apply`), and the poll time spent inside each span is kept per
//! spawn site, so a server whose connections all come from one `tokio::spawn` is broken down by
//! request path. The span stack is kept in a fixed array per thread that the watchdog reads
//! without stopping the thread (see `crate::hot::spans`).
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//!
//! #[loopscope::main]
//! async fn main() {
//!     tracing_subscriber::registry().with(loopscope::tracing_layer()).init();
//!     // ...
//! }
//! ```

use std::cell::Cell;

use loopscope_core::model::SpanDecl;
use tracing_core::span::{Attributes, Id};
use tracing_core::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::hot::spans;

/// A layer that records the spans tasks are polled in; see the [module](self) documentation.
/// It needs a subscriber that stores span data (`tracing_subscriber::registry()`, or anything
/// built on it), and records nothing while no loopscope session runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanLayer {
    _private: (),
}

/// The layer to add to the program's `tracing` subscriber; see [`SpanLayer`].
pub fn tracing_layer() -> SpanLayer {
    SpanLayer::default()
}

/// A span's callsite id, kept in its extensions.
struct SpanIdx(u32);

/// Recently interned callsites of this thread, direct-mapped by address: a span created at a
/// known callsite (one per request, on a server) skips the process-wide table's lock.
const RECENT: usize = 16;

thread_local! {
    static RECENT_CALLSITES: [Cell<(usize, u32)>; RECENT] = const { [const { Cell::new((0, 0)) }; RECENT] };
}

fn callsite_id(meta: &'static Metadata<'static>) -> Option<u32> {
    let key = meta as *const Metadata<'static> as usize;
    let slot = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - RECENT.trailing_zeros());
    if let Ok(Some(id)) = RECENT_CALLSITES.try_with(|r| {
        let (k, id) = r[slot].get();
        (k == key).then_some(id)
    }) {
        return Some(id);
    }
    let id = spans::intern(key, |id| SpanDecl {
        id,
        name: meta.name().to_string(),
        target: meta.target().to_string(),
        file: meta.file().map(str::to_string),
        line: meta.line(),
    })?;
    let _ = RECENT_CALLSITES.try_with(|r| r[slot].set((key, id)));
    Some(id)
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let (Some(idx), Some(span)) = (callsite_id(attrs.metadata()), ctx.span(id)) {
            span.extensions_mut().insert(SpanIdx(idx));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(idx) = ctx.span(id).and_then(|s| s.extensions().get::<SpanIdx>().map(|i| i.0)) {
            spans::enter(idx, id.into_u64());
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(idx) = ctx.span(id).and_then(|s| s.extensions().get::<SpanIdx>().map(|i| i.0)) {
            spans::exit(idx, id.into_u64());
        }
    }
}
