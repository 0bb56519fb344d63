//! loopscope's terminal UI: live, attached and replayed profiling sessions.
//!
//! State ([`app::App`] over a [`timeline::Timeline`]), input ([`app::map_key`] → [`app::Action`] →
//! [`app::App::apply`]) and rendering ([`ui::render`], pure functions of the state) are separate;
//! [`term`] owns the terminal and the event loop.

pub mod app;
pub mod hot;
pub mod stalls;
pub mod stats;
pub mod tasks_view;
pub mod term;
pub mod timeline;
pub mod ui;

pub use app::{App, Source};
pub use timeline::Timeline;
