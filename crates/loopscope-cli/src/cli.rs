//! Command-line definitions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes:
  0  success (check, gate: the candidate passed)
     record: the program's own exit code (128+N if signal N killed it); 1 if it wrote no recording
  1  a workload or the recorder failed (check, gate: a regression; doctor: something to fix;
     dump: no dump came back in time)
  2  usage or input error (bad flag, missing, corrupt or foreign recording, malformed policy)
  3  check, gate: inconclusive (the confidence interval straddles a limit; see --inconclusive)

Examples:
  loopscope demo
  loopscope run sleep-storm --for 10s --tasks 100000 --record storm.loopscope
  loopscope run scraper --mode gather --pages 1000
  loopscope run chat --clients 5000 --for 20s
  loopscope run blocking                      # every classic mistake beside its fix
  loopscope run blocking --scenario sync-sleep --record mistake.loopscope
  loopscope run hangs --scenario deadlock --for 10s   # an async hang: tasks that wait forever
  loopscope report storm.loopscope --json
  loopscope tui storm.loopscope               # replay: ←/→ step, Space play, ? keys
  loopscope tui --console http://127.0.0.1:6669   # any program running console-subscriber
  loopscope dump --attach 127.0.0.1:6670      # what every task of a running program waits for
  loopscope run chat --clients 2000 --tui     # watch a run live
  loopscope export storm.loopscope --hlog storm.hlog
  loopscope export mistake.loopscope --trace stalls.json   # open in ui.perfetto.dev
  loopscope check --baseline base/ --candidate new/ --junit gate.xml --svg gate.svg
  loopscope record -- ./target/release/my-server --port 8080   # any program using #[loopscope::main]
  loopscope doctor --manifest-path ../my-server/Cargo.toml     # is a project set up for loopscope?
  loopscope gate --runs 5 -- loopscope run sleep-storm --for 3s --- loopscope run sleep-storm --for 3s --slowdown 25";

/// Profile the tokio event loop: poll time and scheduling latency per spawn site and per worker.
#[derive(Debug, Parser)]
#[command(name = "loopscope", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workload under the recorder and print its report.
    Run(RunArgs),
    /// Print the report of a recording.
    Report(ReportArgs),
    /// Run the bundled workloads under the recorder and show what loopscope finds.
    Demo(DemoArgs),
    /// Export a recording for other tools.
    Export(ExportArgs),
    /// Open a recording in the terminal UI: step and scrub through its intervals.
    Tui(TuiArgs),
    /// Compare candidate recordings with baseline recordings under a policy (a CI latency gate).
    Check(CheckArgs),
    /// Run a baseline and a candidate command interleaved, record each run, then check them.
    Gate(GateArgs),
    /// Run any program that embeds the recorder (`#[loopscope::main]`, `Session::from_env`) with
    /// recording switched on, then print its report. Leaves with the program's exit code.
    Record(RecordArgs),
    /// Ask a running program (serving live data: `LOOPSCOPE_SERVE`, `run --serve`) for a task
    /// dump and print it: every task's await point, grouped by spawn site and trace. Needs the
    /// program's loopscope built with its `taskdump` feature (docs/tasks.md).
    Dump(DumpArgs),
    /// Check a cargo project's set-up for loopscope and say what to change: tokio's version, the
    /// `--cfg tokio_unstable` flag, the loopscope dependency, and the debug information stall
    /// reports need.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The program's live-data address: `unix:PATH` or `127.0.0.1:PORT`.
    #[arg(long, value_name = "ADDR", value_parser = parse_serve_addr)]
    pub attach: loopscope::core::live::ServeAddr,
    /// How long to wait for the dump (tokio's dump waits for every worker; a worker stuck in a
    /// poll holds it up: the program gives up after 2 s and says which).
    #[arg(long, default_value = "15s", value_parser = parse_positive, value_name = "DURATION")]
    pub timeout: Duration,
    /// Print JSON (the report's `dumps` entry) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The project's Cargo.toml (default: the nearest Cargo.toml from this directory up).
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// The cargo profile the profiled program is built with.
    #[arg(long, default_value = "release", value_name = "NAME")]
    pub profile: String,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Where the recording goes (default: `<program name>.loopscope` in this directory).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Watch the program live in the terminal UI (its output goes to FILE.log); the report follows
    /// when both the TUI and the program have ended.
    #[arg(long)]
    pub tui: bool,
    /// Length of one recording interval (LOOPSCOPE_INTERVAL).
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    pub interval: Duration,
    /// What to measure (LOOPSCOPE_PROFILE).
    #[arg(long, value_enum, default_value_t = ProfileArg::Full)]
    pub profile: ProfileArg,
    /// Stall threshold of the watchdog (LOOPSCOPE_STALL_THRESHOLD; default: the program's own).
    #[arg(long, value_parser = parse_stall_threshold, value_name = "DURATION")]
    pub stall_threshold: Option<Duration>,
    /// With the `taskdump` feature in the program: a task dump once a spawn site's tasks have not
    /// been polled for this long (LOOPSCOPE_DUMP_IDLE, unless set already). `off` takes none.
    #[arg(long, default_value = "2s", value_parser = parse_dump_idle, value_name = "DURATION|off")]
    pub dump_idle: DumpIdle,
    /// Allow the program more than one task dump when its runtime has several workers
    /// (LOOPSCOPE_DUMP_REPEAT=1; tokio 1.54's dump can then stop a worker for good:
    /// tokio-rs/tokio#8370, docs/tasks.md).
    #[arg(long)]
    pub repeat_dumps: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Spawn sites shown in the table.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "CMD ARGS")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct TuiArgs {
    /// The recording to replay.
    #[arg(required_unless_present_any = ["attach", "console"], conflicts_with_all = ["attach", "console"])]
    pub file: Option<PathBuf>,
    /// Attach to a program serving its live data (`loopscope run --serve`, `LOOPSCOPE_SERVE`,
    /// `SessionBuilder::serve`): `unix:PATH` or `127.0.0.1:PORT`. Reconnects when the link drops.
    #[arg(long, value_name = "ADDR", value_parser = parse_serve_addr, conflicts_with = "console")]
    pub attach: Option<loopscope::core::live::ServeAddr>,
    /// Read any program running tokio-console's console-subscriber through its gRPC API, e.g.
    /// http://127.0.0.1:6669: spawn sites, poll and scheduling histograms, long polls. Per-worker
    /// figures, blocking lines and categories need the loopscope recorder.
    #[arg(long, value_name = "URL", value_parser = parse_console_url)]
    pub console: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Baseline recordings: files, or directories of *.loopscope files.
    #[arg(long, num_args = 1.., value_name = "PATH", required_unless_present = "default_policy")]
    pub baseline: Vec<PathBuf>,
    /// Candidate recordings: files, or directories of *.loopscope files.
    #[arg(long, num_args = 1.., value_name = "PATH", required_unless_present = "default_policy")]
    pub candidate: Vec<PathBuf>,
    #[command(flatten)]
    pub gate: GateOpts,
    /// Print the built-in policy, with comments on every key, and exit.
    #[arg(long, conflicts_with_all = ["baseline", "candidate"])]
    pub default_policy: bool,
}

/// How recordings are judged and where the verdict goes.
#[derive(Debug, Clone, Args)]
pub struct GateOpts {
    /// Policy file (TOML; see docs/ci-gates.md). Default: the built-in policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Seed of the bootstrap resampling (overrides the policy's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// What an inconclusive verdict does (overrides the policy's).
    #[arg(long, value_enum, value_name = "AS")]
    pub inconclusive: Option<InconclusiveArg>,
    /// Print the verdict as JSON (schema: docs/check.schema.json) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write JUnit XML (one test case per rule) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write an SVG plot of baseline and candidate percentiles for each gated distribution.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InconclusiveArg {
    /// Exit code 3.
    Exit3,
    /// Exit code 0.
    Pass,
    /// Exit code 1, as a regression.
    Fail,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// Runs of each command, interleaved (baseline, candidate, baseline, ...).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub runs: u32,
    /// While the verdict is inconclusive and its intervals still narrow, add interleaved pairs
    /// of runs, up to N in all (default: --runs, no more); the gate says why it stopped.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=200))]
    pub max_runs: Option<u32>,
    /// Keep the recordings and the commands' output in DIR (default: a new temporary directory,
    /// removed after a pass).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Recording interval asked of the commands (LOOPSCOPE_INTERVAL): the bootstrap's block.
    #[arg(long, default_value = "100ms", value_parser = parse_interval, value_name = "DURATION")]
    pub interval: Duration,
    #[command(flatten)]
    pub gate: GateOpts,
    /// The baseline command, `---`, the candidate command. Each is run with LOOPSCOPE_RECORD set
    /// to a new file (`loopscope run` and programs using `Session::from_env()` record there).
    #[arg(last = true, required = true, value_name = "BASE_CMD --- NEW_CMD")]
    pub commands: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("format").required(true).multiple(true).args(["hlog", "trace", "folded", "flamegraph"])))]
pub struct ExportArgs {
    /// The recording.
    pub file: PathBuf,
    /// Write the interval histograms as an HdrHistogram interval log to OUT (`-`: standard output).
    #[arg(long, value_name = "OUT")]
    pub hlog: Option<PathBuf>,
    /// Write the stalls as a Chrome trace (Trace Event Format JSON, for Perfetto or
    /// chrome://tracing) to OUT (`-`: standard output): one slice per stall on its worker's track.
    #[arg(long, value_name = "OUT")]
    pub trace: Option<PathBuf>,
    /// Write slow-poll samples (or, with `--of stalls`, stalls) as folded stacks to OUT (`-`:
    /// standard output), for inferno, flamegraph.pl or speedscope: one line per stack, from the
    /// task's spawn site in to the innermost frame, with its samples (stalls: microseconds
    /// blocked).
    #[arg(long, value_name = "OUT")]
    pub folded: Option<PathBuf>,
    /// Draw the same as a flame graph (SVG) to OUT.
    #[arg(long, value_name = "OUT.svg")]
    pub flamegraph: Option<PathBuf>,
    /// What `--folded` and `--flamegraph` show: where slow polls spend their time (`samples`), or
    /// where stalls blocked (`stalls`).
    #[arg(long, value_name = "WHAT", default_value = "samples")]
    pub of: FoldedOf,
}

/// What folded stacks and flame graphs show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FoldedOf {
    /// Slow-poll samples.
    Samples,
    /// Stalls.
    Stalls,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: RunOpts,
    #[command(subcommand)]
    pub workload: WorkloadCmd,
}

/// Options shared by every workload.
#[derive(Debug, Clone, Args)]
pub struct RunOpts {
    /// How long the workload runs.
    #[arg(long = "for", global = true, default_value = "10s", value_parser = parse_run_time, value_name = "DURATION")]
    pub run_for: Duration,
    /// Also stream the recording to FILE.
    #[arg(long, global = true, value_name = "FILE", env = "LOOPSCOPE_RECORD")]
    pub record: Option<PathBuf>,
    /// Seed of the workload's random choices.
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads of the multi-thread runtime.
    #[arg(long, global = true, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub workers: u16,
    /// Runtime flavor.
    #[arg(long, global = true, value_enum, default_value_t = Flavor::MultiThread)]
    pub flavor: Flavor,
    /// Length of one recording interval.
    #[arg(
        long,
        global = true,
        default_value = "1s",
        value_parser = parse_interval,
        value_name = "DURATION",
        env = "LOOPSCOPE_INTERVAL"
    )]
    pub interval: Duration,
    /// Polls longer than this count as slow.
    #[arg(long, global = true, default_value = "100us", value_parser = parse_positive, value_name = "DURATION")]
    pub slow_poll: Duration,
    /// Polls at least this long are stalls, flagged live by the watchdog.
    #[arg(long, global = true, default_value = "10ms", value_parser = parse_stall_threshold, value_name = "DURATION")]
    pub stall_threshold: Duration,
    /// Turn the stall detector off (the watchdog keeps sampling slow polls unless that is off
    /// too).
    #[arg(long, global = true)]
    pub no_stall_detector: bool,
    /// Sample the stacks of polls that run longer than this (below the stall threshold), again
    /// every millisecond while they run: where slow polls spend their time. `off` turns it off.
    #[arg(long, global = true, default_value = "1ms", value_parser = parse_sample_threshold, value_name = "DURATION|off")]
    pub sample_threshold: SampleThreshold,
    /// Take a task dump once when a spawn site's tasks have not been polled for this long (what
    /// they wait for; at most once per site, four times a run, once with several workers unless
    /// --repeat-dumps). `off` takes none.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_dump_idle, value_name = "DURATION|off")]
    pub dump_idle: DumpIdle,
    /// Allow more than one task dump in a run with several workers (tokio 1.54's dump can leave
    /// such a runtime one worker short after a dump, and a further one can then stop a worker for
    /// good: tokio-rs/tokio#8370; docs/tasks.md).
    #[arg(long, global = true, env = "LOOPSCOPE_DUMP_REPEAT", value_parser = clap::builder::BoolishValueParser::new())]
    pub repeat_dumps: bool,
    /// The budget of slow-poll samples a second, for the whole program.
    #[arg(long, global = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "N")]
    pub samples_per_second: u32,
    /// What to measure: `full` (per-task scheduling latency) or `lean` (a lag probe for the
    /// runtime's scheduling latency instead; cheaper per poll).
    #[arg(long, global = true, value_enum, default_value_t = ProfileArg::Full)]
    pub profile: ProfileArg,
    /// Do not track per-task scheduling latency (saves two clock reads per wake-up).
    #[arg(long, global = true)]
    pub no_schedule_latency: bool,
    /// Also serve tokio-console's data (console-subscriber) on 127.0.0.1:PORT, so tokio-console can
    /// attach to the same run (`tokio-console http://127.0.0.1:PORT`).
    #[arg(long, global = true, value_name = "PORT", num_args = 0..=1, default_missing_value = "6669")]
    pub console: Option<u16>,
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Watch the run live in the terminal UI (needs a terminal); the report follows when you quit.
    #[arg(long, global = true)]
    pub tui: bool,
    /// Serve the run's live data for `loopscope tui --attach ADDR` from another terminal:
    /// `unix:PATH` (owner-only socket) or `127.0.0.1:PORT`.
    #[arg(long, global = true, value_name = "ADDR", env = "LOOPSCOPE_SERVE", value_parser = parse_serve_addr)]
    pub serve: Option<loopscope::core::live::ServeAddr>,
    /// Allow --serve on a non-loopback address (anyone who reaches it can read the profile).
    #[arg(long, global = true)]
    pub serve_public: bool,
    /// Serve the run's figures to Prometheus at http://ADDR/metrics (OpenMetrics text; loopback
    /// HOST:PORT such as 127.0.0.1:9464; see docs/fleet.md).
    #[arg(long, global = true, value_name = "ADDR", env = "LOOPSCOPE_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// Push the run's figures to an OpenTelemetry collector over OTLP/HTTP (protobuf), e.g.
    /// http://127.0.0.1:4318, every 10 s and at the end (see docs/fleet.md).
    #[arg(long, global = true, value_name = "URL", env = "LOOPSCOPE_OTLP")]
    pub otlp: Option<String>,
    /// Spawn sites shown in the table.
    #[arg(long, global = true, default_value_t = 20, value_name = "N")]
    pub top: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Poll time and per-task scheduling latency.
    Full,
    /// Poll time; scheduling latency for the whole runtime from a lag probe.
    Lean,
}

impl ProfileArg {
    /// The name `LOOPSCOPE_PROFILE` takes.
    pub fn name(self) -> &'static str {
        match self {
            ProfileArg::Full => "full",
            ProfileArg::Lean => "lean",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Flavor {
    /// `Builder::new_multi_thread` with `--workers` threads.
    MultiThread,
    /// `Builder::new_current_thread`.
    CurrentThread,
}

/// The workloads `loopscope run` knows.
#[derive(Debug, Clone, Subcommand)]
pub enum WorkloadCmd {
    /// Many tasks sleeping random durations in a loop; measures timer lateness.
    SleepStorm(sleep_storm::Config),
    /// A concurrent web scraper against a local HTTP server; measures pages/s and request latency.
    Scraper(scraper::Config),
    /// A TCP chat server with rooms and thousands of clients; measures delivery and message latency.
    Chat(chat::Config),
    /// The catalogue of accidental blocking calls, each mistake beside its fix (`--for` does not
    /// apply: each scenario runs `--repeat` rounds).
    Blocking(blocking::Config),
    /// The catalogue of async hangs: deadlocks, lost wakers, task leaks, lost panics, forgotten
    /// handles; each mistake beside its fix.
    Hangs(hangs::Config),
}

impl WorkloadCmd {
    pub fn name(&self) -> &'static str {
        match self {
            WorkloadCmd::SleepStorm(_) => sleep_storm::NAME,
            WorkloadCmd::Blocking(_) => blocking::NAME,
            WorkloadCmd::Hangs(_) => hangs::NAME,
            WorkloadCmd::Scraper(_) => scraper::NAME,
            WorkloadCmd::Chat(_) => chat::NAME,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The recording.
    pub file: PathBuf,
    /// Print JSON (schema: docs/report.schema.json) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Spawn sites shown in the table.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the demo's workload runs.
    #[arg(long = "for", default_value = "3s", value_parser = parse_run_time, value_name = "DURATION")]
    pub run_for: Duration,
    /// On a terminal, print the report without opening the TUI first.
    #[arg(long)]
    pub no_tui: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected a duration such as 10s, 250ms or 100us)"))
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() { Err("must be greater than zero".into()) } else { Ok(d) }
}

fn parse_run_time(s: &str) -> Result<Duration, String> {
    let d = parse_positive(s)?;
    if d > Duration::from_secs(7 * 24 * 3600) { Err("must be at most 7 days".into()) } else { Ok(d) }
}

fn parse_stall_threshold(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) { Err("must be at least 1ms".into()) } else { Ok(d) }
}

/// `--sample-threshold`: a duration, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleThreshold(pub Option<Duration>);

/// `--dump-idle`: a duration, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpIdle(pub Option<Duration>);

fn parse_dump_idle(s: &str) -> Result<DumpIdle, String> {
    if s == "off" {
        return Ok(DumpIdle(None));
    }
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) { Err("must be at least 100ms, or off".into()) } else { Ok(DumpIdle(Some(d))) }
}

fn parse_sample_threshold(s: &str) -> Result<SampleThreshold, String> {
    if s == "off" {
        return Ok(SampleThreshold(None));
    }
    let d = parse_duration(s)?;
    if d < Duration::from_micros(100) {
        Err("must be at least 100us, or off".into())
    } else {
        Ok(SampleThreshold(Some(d)))
    }
}

fn parse_serve_addr(s: &str) -> Result<loopscope::core::live::ServeAddr, String> {
    loopscope::core::live::ServeAddr::parse(s)
        .ok_or_else(|| "expected unix:PATH, a socket path, or HOST:PORT such as 127.0.0.1:6670".to_string())
}

fn parse_console_url(s: &str) -> Result<String, String> {
    let url = if s.contains("://") { s.to_string() } else { format!("http://{s}") };
    match url.strip_prefix("http://") {
        Some(rest) if rest.split('/').next().is_some_and(|h| h.contains(':')) => Ok(url),
        _ => Err("expected http://HOST:PORT, such as http://127.0.0.1:6669".into()),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) { Err("must be at least 10ms".into()) } else { Ok(d) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
