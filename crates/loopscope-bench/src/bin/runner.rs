//! One measured run of the overhead benchmark, in a process of its own:
//! `bench-runner WORKLOAD INSTRUMENT [--reps N] [--for DURATION]`; prints one JSON line
//! (`RunOutput`). The `bench` driver runs it and measures its CPU time and peak memory.

use std::time::Duration;

use clap::Parser;
use loopscope_bench::{Instrument, Workload, run_once};

#[derive(Parser)]
struct Args {
    #[arg(value_enum)]
    workload: Workload,
    #[arg(value_enum)]
    instrument: Instrument,
    /// Repetitions of a fixed-work workload (yield-storm, ping-pong) on the same runtime.
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// How long a realistic workload (scraper, chat) runs, in milliseconds.
    #[arg(long = "for-ms", default_value_t = 3_000)]
    for_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let out = run_once(a.workload, a.instrument, a.reps, Duration::from_millis(a.for_ms))?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
