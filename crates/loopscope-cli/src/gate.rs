//! `loopscope check` and `loopscope gate`: the CI latency gate over recordings.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, anyhow};
use loopscope_gate::{Inconclusive, Outcome, Policy, Run, render};

use crate::Failure;
use crate::cli::{CheckArgs, GateArgs, GateOpts, InconclusiveArg};

/// `loopscope check`: returns the exit code of the verdict.
pub fn check_command(args: &CheckArgs) -> Result<u8, Failure> {
    if args.default_policy {
        print!("{}", loopscope_gate::DEFAULT_POLICY);
        return Ok(crate::EXIT_OK);
    }
    judge(&args.gate, &args.baseline, &args.candidate)
}

/// Loads the policy and the recordings, judges, and writes every output asked for.
fn judge(opts: &GateOpts, baseline: &[PathBuf], candidate: &[PathBuf]) -> Result<u8, Failure> {
    let policy = policy(opts)?;
    let outcome = outcome(&policy, baseline, candidate)?;
    emit(opts, &outcome)?;
    Ok(outcome.exit_code(policy.inconclusive))
}

/// The policy of `--policy` (or the default), with the options that override it.
fn policy(opts: &GateOpts) -> Result<Policy, Failure> {
    let mut policy = match &opts.policy {
        Some(p) => Policy::read(p).map_err(|e| Failure::Input(e.into()))?,
        None => Policy::default_policy(),
    };
    if let Some(seed) = opts.seed {
        policy.seed = seed;
    }
    if let Some(i) = opts.inconclusive {
        policy.inconclusive = match i {
            InconclusiveArg::Exit3 => Inconclusive::Exit3,
            InconclusiveArg::Pass => Inconclusive::Pass,
            InconclusiveArg::Fail => Inconclusive::Fail,
        };
    }
    Ok(policy)
}

/// Reads both sides' recordings and judges them.
fn outcome(policy: &Policy, baseline: &[PathBuf], candidate: &[PathBuf]) -> Result<Outcome, Failure> {
    let input = |e: loopscope_gate::InputError| Failure::Input(e.into());
    let mut resolver = crate::resolver();
    let base = Run::read_all(baseline, &mut resolver).map_err(input)?;
    let cand = Run::read_all(candidate, &mut resolver).map_err(input)?;
    loopscope_gate::check(policy, &base, &cand).map_err(input)
}

/// Prints the verdict and writes the files and CI integrations asked for.
fn emit(opts: &GateOpts, outcome: &Outcome) -> Result<(), Failure> {
    let write = |path: &Path, what: &str, text: String| {
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the {what} to {}", path.display()))
            .map_err(Failure::Input)
    };
    if let Some(p) = &opts.junit {
        write(p, "JUnit XML", render::junit(outcome))?;
    }
    if let Some(p) = &opts.svg {
        write(p, "SVG plot", render::svg(outcome))?;
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(outcome).expect("the outcome serializes"));
    } else {
        print!("{}", render::text(outcome));
    }
    if std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
        // The runner reads workflow commands from both streams; keep JSON on stdout clean.
        let annotations = render::github_annotations(outcome);
        if opts.json { eprint!("{annotations}") } else { print!("{annotations}") }
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty()) {
        use std::io::Write as _;
        let path = PathBuf::from(summary);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(render::markdown(outcome).as_bytes()))
            .with_context(|| format!("cannot append the job summary to {} ($GITHUB_STEP_SUMMARY)", path.display()))
            .map_err(Failure::Input)?;
    }
    Ok(())
}

/// `loopscope gate`: runs both commands interleaved, then judges their recordings.
pub fn gate_command(args: &GateArgs) -> Result<u8, Failure> {
    let usage =
        |m: &str| Failure::Input(anyhow!("{m} (expected: loopscope gate [OPTIONS] -- BASE_CMD... --- NEW_CMD...)"));
    let split = args.commands.iter().position(|a| a == "---").ok_or_else(|| usage("no `---` between the commands"))?;
    let (base_cmd, new_cmd) = (&args.commands[..split], &args.commands[split + 1..]);
    if base_cmd.is_empty() || new_cmd.is_empty() {
        return Err(usage("a command is empty"));
    }
    // Without --out, a fresh private directory (mode 0700, an unpredictable name): nothing can
    // be planted in it beforehand, such as a link at a log's name to a file of the user's.
    let (dir, temporary) = match &args.out {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create --out directory {}", d.display()))
                .map_err(Failure::Input)?;
            (d.clone(), None)
        }
        None => {
            let t = crate::private_temp_dir("loopscope-gate-").map_err(Failure::Input)?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let result = run_and_judge(args, base_cmd, new_cmd, &dir);
    match (temporary, &result) {
        // A pass leaves nothing behind; anything else keeps what explains it.
        (Some(t), Ok(code)) if *code == crate::EXIT_OK => drop(t),
        (t, _) => {
            if let Some(t) = t {
                let _ = t.keep();
            }
            eprintln!("gate: recordings and command output kept in {}", dir.display());
        }
    }
    result
}

/// Runs both commands `args.runs` times, interleaved, recording into `dir`, then judges; while
/// the verdict is inconclusive and its intervals still narrow, adds pairs of runs up to
/// `--max-runs`.
fn run_and_judge(args: &GateArgs, base_cmd: &[String], new_cmd: &[String], dir: &Path) -> Result<u8, Failure> {
    let mut policy = policy(&args.gate)?;
    let max_runs = args.max_runs.unwrap_or(args.runs).max(args.runs);
    // Each look at the data may stop the gate: the family-wise error is shared out over every
    // look it may take (Bonferroni again), so that looking until an answer comes does not make
    // one more likely than the policy allows.
    let looks = max_runs - args.runs + 1;
    if looks > 1 {
        policy.confidence = 1.0 - (1.0 - policy.confidence) / f64::from(looks);
        eprintln!(
            "gate: up to {looks} looks at the data ({} to {max_runs} pairs), each at {:.2}% confidence",
            args.runs,
            policy.confidence * 100.0
        );
    }
    let (mut base, mut cand) = (Vec::new(), Vec::new());
    let mut widths: Vec<OpenWidths> = Vec::new();
    let mut i = 0;
    let outcome = loop {
        i += 1;
        for (label, cmd, files) in [("baseline", base_cmd, &mut base), ("candidate", new_cmd, &mut cand)] {
            let file = dir.join(format!("{label}-{i:02}.loopscope"));
            record_one(label, cmd, &file, args, i, max_runs)?;
            files.push(file);
        }
        if i < args.runs {
            continue;
        }
        let outcome = outcome(&policy, &base, &cand)?;
        if max_runs == args.runs {
            break outcome;
        }
        widths.push(open_widths(&outcome));
        match next_pair(&outcome, &widths, i, max_runs) {
            Continue::Yes => {
                eprintln!(
                    "gate: inconclusive after {i} pair{}: one more (up to --max-runs {max_runs})",
                    if i == 1 { "" } else { "s" }
                )
            }
            Continue::No(why) => {
                eprintln!("gate: stopped after {i} pair{}: {why}", if i == 1 { "" } else { "s" });
                break outcome;
            }
        }
    };
    emit(&args.gate, &outcome)?;
    Ok(outcome.exit_code(policy.inconclusive))
}

/// Whether `loopscope gate --max-runs` runs another pair.
enum Continue {
    Yes,
    No(String),
}

/// The interval widths of the inconclusive rules, by rule: what one more pair of runs would
/// have to narrow.
type OpenWidths = std::collections::BTreeMap<String, f64>;

fn open_widths(o: &Outcome) -> OpenWidths {
    o.rules
        .iter()
        .filter(|r| r.verdict == loopscope_gate::Verdict::Inconclusive)
        .map(|r| (r.name.clone(), r.interval.map_or(0.0, |[lo, hi]| hi - lo)))
        .collect()
}

/// Whether the pair between two looks narrowed the intervals of the rules open at both by at
/// least 5% in all (each rule relative to its own width, so that a budget's nanoseconds and a
/// change's fraction weigh alike). No rule open at both: a new situation, as good as narrowing.
fn narrowed(before: &OpenWidths, after: &OpenWidths) -> bool {
    let both: Vec<(f64, f64)> =
        after.iter().filter_map(|(name, w)| before.get(name).filter(|b| **b > 0.0).map(|b| (*b, *w))).collect();
    both.is_empty() || both.iter().map(|(b, a)| a / b).sum::<f64>() < 0.95 * both.len() as f64
}

/// An inconclusive verdict earns another pair while runs are left and the last pairs narrowed
/// the open intervals (two pairs in a row that did not are a plateau: more runs of this noise
/// will not decide).
fn next_pair(o: &Outcome, widths: &[OpenWidths], pairs: u32, max_runs: u32) -> Continue {
    if o.verdict != loopscope_gate::Verdict::Inconclusive {
        return Continue::No(format!("the verdict is {}", o.verdict.name()));
    }
    if pairs >= max_runs {
        return Continue::No(format!("still inconclusive at --max-runs {max_runs}"));
    }
    if widths.last().is_some_and(|w| w.values().all(|w| *w == 0.0)) {
        return Continue::No("inconclusive for want of data, which more runs will not give".into());
    }
    match widths {
        [.., a, b, c] if !narrowed(a, b) && !narrowed(b, c) => {
            Continue::No("still inconclusive, and the last two pairs did not narrow the open intervals".into())
        }
        _ => Continue::Yes,
    }
}

/// Runs one command with `LOOPSCOPE_RECORD=file`; its output goes to `file` with `.log`.
fn record_one(label: &str, cmd: &[String], file: &Path, args: &GateArgs, i: u32, of: u32) -> Result<(), Failure> {
    let log_path = file.with_extension("log");
    // Never through a symbolic link at the log's name (in an --out directory others can write).
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)
        .with_context(|| format!("cannot create {} (a symbolic link is refused)", log_path.display()))
        .map_err(Failure::Input)?;
    let err_log = log.try_clone().map_err(|e| Failure::Input(e.into()))?;
    let _ = std::fs::remove_file(file);
    eprint!("gate: run {i}/{of} {label}: {} ... ", cmd.join(" "));
    let start = Instant::now();
    let mut command = Command::new(&cmd[0]);
    let status = command
        .args(&cmd[1..])
        .env("LOOPSCOPE_RECORD", file)
        .env("LOOPSCOPE_INTERVAL", humantime::format_duration(args.interval).to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .status()
        .with_context(|| format!("cannot start the {label} command `{}`", cmd[0]))
        .map_err(Failure::Input)?;
    eprintln!("{:.1}s", start.elapsed().as_secs_f64());
    if !status.success() {
        return Err(Failure::Input(anyhow!(
            "the {label} command failed ({status}) on run {i}; its output is in {}",
            log_path.display()
        )));
    }
    if !file.exists() {
        return Err(Failure::Input(anyhow!(
            "the {label} command ran but wrote no recording to {} (does it record with Session::from_env(), \
             or `loopscope run`?); its output is in {}",
            file.display(),
            log_path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_gate::Verdict;

    fn outcome(verdict: Verdict) -> Outcome {
        let policy = Policy::parse("[stalls]\nforbid_new = false\n", "p.toml").unwrap();
        let mut o = loopscope_gate::check(&policy, &[], &[]).unwrap();
        o.verdict = verdict;
        o
    }

    #[test]
    fn pairs_are_added_while_inconclusive_and_narrowing_and_never_past_the_maximum() {
        let open = outcome(Verdict::Inconclusive);
        let w = |ws: &[f64]| -> Vec<OpenWidths> {
            ws.iter().map(|w| [("poll p99".to_string(), *w)].into_iter().collect()).collect()
        };
        let go = |widths: &[f64], pairs| matches!(next_pair(&open, &w(widths), pairs, 10), Continue::Yes);
        let why = |o: &Outcome, widths: &[f64], pairs, max| match next_pair(o, &w(widths), pairs, max) {
            Continue::Yes => String::new(),
            Continue::No(why) => why,
        };
        assert!(go(&[0.4], 1));
        assert!(go(&[0.4, 0.3], 2));
        // One pair that did not narrow is noise; two in a row are a plateau.
        assert!(go(&[0.4, 0.3, 0.3], 3));
        assert!(go(&[0.4, 0.3, 0.3, 0.2], 4));
        assert!(why(&open, &[0.4, 0.3, 0.3, 0.3], 4, 10).contains("did not narrow"));
        assert!(why(&open, &[0.4, 0.3], 10, 10).contains("--max-runs 10"));
        assert!(why(&open, &[0.0], 1, 10).contains("for want of data"));
        assert_eq!(why(&outcome(Verdict::Pass), &[0.4], 1, 10), "the verdict is pass");
        assert_eq!(why(&outcome(Verdict::Regression), &[0.4], 1, 10), "the verdict is regression");
        // Widths of different rules are not compared: a rule that turned inconclusive is new.
        let mixed: Vec<OpenWidths> = vec![
            [("a".to_string(), 0.4)].into_iter().collect(),
            [("a".to_string(), 0.4)].into_iter().collect(),
            [("b".to_string(), 9e6)].into_iter().collect(),
        ];
        assert!(matches!(next_pair(&open, &mixed, 3, 10), Continue::Yes));
    }
}
