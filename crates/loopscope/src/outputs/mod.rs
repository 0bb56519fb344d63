//! Where the recorder's measurements go: the flusher thread (intervals into the recording file,
//! the in-process report and live frames), the live server for `loopscope tui --attach`, and the
//! fleet exporters (Prometheus, OTLP) that fold the same frames.

pub(crate) mod fleet;
pub(crate) mod flusher;
#[cfg(feature = "otlp")]
pub(crate) mod otlp;
pub mod prometheus;
pub mod serve;
#[cfg(feature = "tracing")]
pub(crate) mod stall_log;
