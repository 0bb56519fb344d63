//! Instructions per poll of each hook configuration, for callgrind: a host's noise moves times
//! by several nanoseconds per poll, but not instruction counts.
//!
//! `valgrind --tool=callgrind --toggle-collect='loopscope_bench::storm::storm*' \
//!     target/release/examples/instructions MODE POLLS` for MODE in plain, floor, lean, ...;
//! the difference of two totals over POLLS is what one configuration adds per poll. `just
//! bench-instructions` runs them all and prints the table.

use loopscope_bench::storm::{Mode, storm};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("plain") => Mode::Plain,
        Some("empty-hooks") => Mode::EmptyHooks,
        Some("floor") => Mode::Floor,
        Some("floor-sched-latency") => Mode::FloorAndTokioLatency,
        Some("lean") => Mode::Lean,
        Some("lean-no-detector") => Mode::LeanNoDetector,
        Some("full") => Mode::Full,
        Some("lean-no-tasks") => Mode::LeanNoTasks,
        other => {
            eprintln!(
                "instructions: unknown mode {other:?}: expected plain, empty-hooks, floor, floor-sched-latency, lean, lean-no-detector, lean-no-tasks or full"
            );
            std::process::exit(2);
        }
    };
    let polls = match args.next().map(|p| p.parse::<u64>()) {
        None => 200_000,
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("instructions: POLLS: {e}");
            std::process::exit(2);
        }
    };
    let two_sites = args.next().as_deref() == Some("two-sites");
    let took = storm(mode, two_sites, polls);
    println!("{mode:?}: {polls} polls in {took:?}");
}
