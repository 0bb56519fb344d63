//! What the `loopscope` command prints, as a library for its binary and its tests: the text
//! report ([`report_text`]). The binary itself (`src/main.rs`) holds the commands.
#![warn(missing_docs)]

pub mod report_text;
