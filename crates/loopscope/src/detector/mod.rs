//! The stall detector: the watchdog thread that sees a poll run past the threshold, the stack
//! capture (a signal handler) and the unwinder, and the kernel's view of a stuck thread. See
//! docs/detector.md.

pub(crate) mod kernel;
pub(crate) mod mistakes;
pub(crate) mod stack;
pub(crate) mod watchdog;
