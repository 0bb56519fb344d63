//! The overhead benchmark (`just bench`): every workload under every instrumentation, each run in
//! a process of its own, interleaved (plain, lean, full, ..., plain, lean, ...; the order rotates
//! each round), several rounds. Prints and writes (Markdown and JSON) the median wall-time ratio
//! to plain, the CPU-time ratio (user + system, from `wait4`), the peak RSS (`ru_maxrss`) and, for
//! the realistic workloads, the throughput lost.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Parser;
use loopscope_bench::{Instrument, RunOutput, Workload};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "loopscope's overhead benchmark against other tokio instrumentation")]
struct Args {
    /// Rounds: each instrumentation runs this many times per workload.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Workloads (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Instrumentations (default: all; plain is always added).
    #[arg(long, value_enum, value_delimiter = ',')]
    instruments: Vec<Instrument>,
    /// Repetitions of a fixed-work workload inside one run.
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// How long a realistic workload runs, in milliseconds.
    #[arg(long = "for-ms", default_value_t = 3_000)]
    for_ms: u64,
    /// Where bench.md and bench.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The runner (default: `bench-runner` beside this program).
    #[arg(long)]
    runner: Option<PathBuf>,
    /// The runner built with the `console` feature (default:
    /// target/bench-console/release/bench-runner); without it the console column is skipped.
    #[arg(long)]
    console_runner: Option<PathBuf>,
}

/// One run's measurements.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    wall_s: f64,
    cpu_s: f64,
    max_rss_kib: u64,
    throughput: Option<f64>,
    /// CPU time of loopscope's own threads, by thread name.
    recorder_threads_cpu_s: BTreeMap<String, f64>,
}

/// The medians of one (workload, instrumentation) cell and their ratios to plain.
#[derive(Clone, Debug, Serialize)]
struct Cell {
    workload: Workload,
    instrument: Instrument,
    samples: Vec<Sample>,
    wall_s: f64,
    cpu_s: f64,
    /// Median CPU time of loopscope's own threads per run, by thread name.
    recorder_threads_cpu_s: BTreeMap<String, f64>,
    max_rss_mib: f64,
    throughput: Option<f64>,
    throughput_unit: Option<String>,
    /// Median over rounds of this run's wall time over plain's in the same round.
    wall_ratio: f64,
    /// Lowest and highest of those per-round ratios.
    wall_ratio_range: [f64; 2],
    cpu_ratio: f64,
    cpu_ratio_range: [f64; 2],
    rss_delta_mib: f64,
    /// Median over rounds of the throughput lost against plain's in the same round.
    throughput_loss_percent: Option<f64>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    machine: Machine,
    command: String,
    runs: u32,
    reps: u32,
    realistic_run_ms: u64,
    cells: &'a [Cell],
    skipped: &'a [String],
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    Machine { cpus: std::thread::available_parallelism().map_or(1, |n| n.get()), cpu_model, kernel }
}

/// Runs one (workload, instrumentation) in its own process; CPU time and peak RSS from `wait4`.
fn measure(runner: &Path, w: Workload, i: Instrument, args: &Args) -> anyhow::Result<(Sample, Option<String>)> {
    let mut child = Command::new(runner)
        .args([w.name(), i.name(), "--reps", &args.reps.to_string(), "--for-ms", &args.for_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", runner.display()))?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut stdout)?;
    child.stderr.take().expect("piped").read_to_string(&mut stderr)?;
    let mut status = 0;
    // SAFETY: wait4 on our own child with zeroed out-parameters; std's `Child` is not waited on
    // afterwards.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        usage
    };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{} {} failed: {}", w.name(), i.name(), stderr.trim());
    }
    let out: RunOutput = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("the runner's output: {stdout}"))?;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        Sample {
            wall_s: out.wall_s,
            cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss as u64,
            throughput: out.throughput,
            recorder_threads_cpu_s: out.recorder_threads_cpu_s,
        },
        out.throughput_unit,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of `v` and its lowest and highest values.
fn median_and_range(v: Vec<f64>) -> (f64, [f64; 2]) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = if v.is_empty() { [f64::NAN; 2] } else { [lo, hi] };
    (median(v), range)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let here = std::env::current_exe()?;
    let dir = here.parent().context("the program's directory")?;
    let runner = args.runner.clone().unwrap_or_else(|| dir.join("bench-runner"));
    if !runner.exists() {
        bail!("{} not found: build it with `cargo build --release -p loopscope-bench`", runner.display());
    }
    let console_runner =
        args.console_runner.clone().unwrap_or_else(|| dir.join("../bench-console/release/bench-runner"));
    let workloads = if args.workloads.is_empty() { Workload::ALL.to_vec() } else { args.workloads.clone() };
    let mut instruments = if args.instruments.is_empty() { Instrument::ALL.to_vec() } else { args.instruments.clone() };
    if !instruments.contains(&Instrument::Plain) {
        instruments.insert(0, Instrument::Plain);
    }
    let mut skipped = Vec::new();
    if instruments.contains(&Instrument::Console) && !console_runner.exists() {
        skipped.push(format!(
            "console: {} not found (cargo build --release -p loopscope-bench --features console --target-dir target/bench-console)",
            console_runner.display()
        ));
        instruments.retain(|i| *i != Instrument::Console);
    }

    let mut samples: BTreeMap<(usize, usize), Vec<Sample>> = BTreeMap::new();
    let mut units: BTreeMap<usize, String> = BTreeMap::new();
    for round in 0..args.runs {
        for (wi, &w) in workloads.iter().enumerate() {
            let applicable: Vec<(usize, Instrument)> =
                instruments.iter().copied().enumerate().filter(|(_, i)| i.applies_to(w)).collect();
            // Rotate the order each round so that no instrumentation always runs first or after
            // the same neighbour.
            let shift = round as usize % applicable.len();
            for &(ii, i) in applicable.iter().cycle().skip(shift).take(applicable.len()) {
                let r = if i == Instrument::Console { &console_runner } else { &runner };
                eprint!("\rround {}/{}: {:<12} {:<18}", round + 1, args.runs, w.name(), i.name());
                let (s, unit) = measure(r, w, i, &args)?;
                if let Some(u) = unit {
                    units.insert(wi, u);
                }
                samples.entry((wi, ii)).or_default().push(s);
            }
        }
    }
    eprintln!();

    let mut cells = Vec::new();
    for ((wi, ii), ss) in &samples {
        let (w, i) = (workloads[*wi], instruments[*ii]);
        let wall = median(ss.iter().map(|s| s.wall_s).collect());
        let cpu = median(ss.iter().map(|s| s.cpu_s).collect());
        let rss = median(ss.iter().map(|s| s.max_rss_kib as f64).collect()) / 1024.0;
        let names: std::collections::BTreeSet<&String> =
            ss.iter().flat_map(|s| s.recorder_threads_cpu_s.keys()).collect();
        let recorder_threads_cpu_s = names
            .into_iter()
            .map(|n| {
                (
                    n.clone(),
                    median(ss.iter().map(|s| s.recorder_threads_cpu_s.get(n).copied().unwrap_or(0.0)).collect()),
                )
            })
            .collect();
        let thr =
            ss.iter().all(|s| s.throughput.is_some()).then(|| median(ss.iter().filter_map(|s| s.throughput).collect()));
        cells.push(Cell {
            workload: w,
            instrument: i,
            samples: ss.clone(),
            wall_s: wall,
            cpu_s: cpu,
            recorder_threads_cpu_s,
            max_rss_mib: rss,
            throughput: thr,
            throughput_unit: units.get(wi).cloned(),
            wall_ratio: f64::NAN,
            wall_ratio_range: [f64::NAN; 2],
            cpu_ratio: f64::NAN,
            cpu_ratio_range: [f64::NAN; 2],
            rss_delta_mib: f64::NAN,
            throughput_loss_percent: None,
        });
    }
    // Ratios are paired by round (each round runs every pair once, close together in time), so a
    // machine that slows down for a while slows both sides of a ratio.
    let plain: std::collections::HashMap<Workload, (Vec<Sample>, f64)> = cells
        .iter()
        .filter(|c| c.instrument == Instrument::Plain)
        .map(|c| (c.workload, (c.samples.clone(), c.max_rss_mib)))
        .collect();
    for c in &mut cells {
        let (base, rss) = &plain[&c.workload];
        let paired = |f: fn(&Sample) -> f64| -> Vec<f64> {
            c.samples.iter().zip(base).map(|(s, p)| f(s) / f(p)).filter(|r| r.is_finite()).collect()
        };
        (c.wall_ratio, c.wall_ratio_range) = median_and_range(paired(|s| s.wall_s));
        (c.cpu_ratio, c.cpu_ratio_range) = median_and_range(paired(|s| s.cpu_s));
        c.rss_delta_mib = c.max_rss_mib - rss;
        if c.throughput.is_some() && base.iter().all(|p| p.throughput.is_some_and(|t| t > 0.0)) {
            let kept = paired(|s| s.throughput.unwrap_or(f64::NAN));
            c.throughput_loss_percent = Some((1.0 - median_and_range(kept).0) * 100.0);
        }
    }

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let md = markdown(&cells, &workloads, &instruments, &machine(), &command, &args, &skipped);
    print!("{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("bench.md"), &md)?;
    let json = ReportJson {
        machine: machine(),
        command,
        runs: args.runs,
        reps: args.reps,
        realistic_run_ms: args.for_ms,
        cells: &cells,
        skipped: &skipped,
    };
    std::fs::write(args.out.join("bench.json"), serde_json::to_string_pretty(&json)?)?;
    eprintln!("written: {} and bench.json", args.out.join("bench.md").display());
    Ok(())
}

fn markdown(
    cells: &[Cell],
    workloads: &[Workload],
    instruments: &[Instrument],
    m: &Machine,
    command: &str,
    args: &Args,
    skipped: &[String],
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Machine: {} CPUs, {} (Linux {}). Command: `{command}`.", m.cpus, m.cpu_model, m.kernel);
    let _ = writeln!(
        s,
        "{} runs of each pair, each in its own process, interleaved; fixed-work workloads repeated {} times per run, realistic ones run {} ms. Ratios and losses are medians over rounds of each run against plain's run in the same round, with the lowest and highest in brackets; times and memory are medians.\n",
        args.runs, args.reps, args.for_ms
    );
    let cell = |w: Workload, i: Instrument| cells.iter().find(|c| c.workload == w && c.instrument == i);
    let fixed: Vec<Workload> = workloads.iter().copied().filter(|w| !w.is_realistic()).collect();
    let realistic: Vec<Workload> = workloads.iter().copied().filter(|w| w.is_realistic()).collect();
    if !fixed.is_empty() {
        let _ = write!(s, "| instrumentation |");
        for w in &fixed {
            let _ = write!(s, " {} wall | CPU | peak RSS |", w.name());
        }
        let _ = write!(s, "\n|---|");
        for _ in &fixed {
            let _ = write!(s, "---|---|---|");
        }
        s.push('\n');
        for &i in instruments {
            let _ = write!(s, "| {} |", i.name());
            for &w in &fixed {
                match cell(w, i) {
                    Some(c) if i == Instrument::Plain => {
                        let _ = write!(s, " {:.1} ms | {:.2} s | {:.1} MiB |", c.wall_s * 1e3, c.cpu_s, c.max_rss_mib);
                    }
                    Some(c) => {
                        let _ = write!(
                            s,
                            " {:.2}x ({:.2}–{:.2}) | {:.2}x | {:+.1} MiB |",
                            c.wall_ratio, c.wall_ratio_range[0], c.wall_ratio_range[1], c.cpu_ratio, c.rss_delta_mib
                        );
                    }
                    None => s.push_str(" – | – | – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    if !realistic.is_empty() {
        let _ = write!(s, "| instrumentation |");
        for w in &realistic {
            let _ = write!(s, " {} throughput | CPU | peak RSS |", w.name());
        }
        let _ = write!(s, "\n|---|");
        for _ in &realistic {
            let _ = write!(s, "---|---|---|");
        }
        s.push('\n');
        for &i in instruments {
            let _ = write!(s, "| {} |", i.name());
            for &w in &realistic {
                match cell(w, i) {
                    Some(c) if i == Instrument::Plain => {
                        let _ = write!(
                            s,
                            " {:.0} {} | {:.2} s | {:.1} MiB |",
                            c.throughput.unwrap_or(f64::NAN),
                            c.throughput_unit.as_deref().unwrap_or(""),
                            c.cpu_s,
                            c.max_rss_mib
                        );
                    }
                    Some(c) => {
                        let loss = c.throughput_loss_percent.map_or("?".into(), |l| format!("{l:+.1}% lost"));
                        let _ = write!(s, " {loss} | {:.2}x | {:+.1} MiB |", c.cpu_ratio, c.rss_delta_mib);
                    }
                    None => s.push_str(" n/a | | |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    let threads: Vec<String> = workloads
        .iter()
        .flat_map(|&w| instruments.iter().filter_map(move |&i| cell(w, i)))
        .filter(|c| !c.recorder_threads_cpu_s.is_empty())
        .map(|c| {
            let total: f64 = c.recorder_threads_cpu_s.values().sum();
            let each: Vec<String> =
                c.recorder_threads_cpu_s.iter().map(|(n, t)| format!("{n} {:.1} ms", t * 1e3)).collect();
            format!(
                "- {} {}: {} ({:.2}% of the run's CPU time)",
                c.workload.name(),
                c.instrument.name(),
                each.join(", "),
                total / c.cpu_s * 100.0
            )
        })
        .collect();
    if !threads.is_empty() {
        let _ = writeln!(s, "loopscope's own threads, CPU time per run (medians):\n");
        for t in threads {
            let _ = writeln!(s, "{t}");
        }
        s.push('\n');
    }
    for k in skipped {
        let _ = writeln!(s, "Skipped: {k}");
    }
    s
}
