//! `loopscope demo`: the first thing a new user runs. It runs the bundled workloads under the
//! recorder, prints the report and says in plain words what it found.

use std::fmt::Write as _;

use loopscope::Report;
use loopscope::core::report::StallGroup;
use loopscope::core::stall::Origin;
use loopscope::core::units::fmt_duration;

use crate::Failure;
use crate::cli::{DemoArgs, Flavor, RunOpts, WorkloadCmd};
use crate::run::{print_report, run_workload};

pub fn demo_command(args: &DemoArgs) -> Result<(), Failure> {
    // A fresh private directory (mode 0700, an unpredictable name), kept for the user to read
    // the recording again: no file or link of someone else's can be waiting at its path.
    let dir = crate::private_temp_dir("loopscope-demo-").map_err(Failure::Run)?.keep();
    let path = dir.join("demo.loopscope");
    let opts = RunOpts {
        run_for: args.run_for,
        record: Some(path.clone()),
        seed: 1,
        workers: 2,
        flavor: Flavor::MultiThread,
        interval: std::time::Duration::from_millis(500),
        slow_poll: std::time::Duration::from_micros(100),
        no_schedule_latency: false,
        profile: crate::cli::ProfileArg::Full,
        stall_threshold: std::time::Duration::from_millis(10),
        no_stall_detector: false,
        sample_threshold: crate::cli::SampleThreshold(Some(loopscope::DEFAULT_SAMPLE_THRESHOLD)),
        samples_per_second: loopscope::DEFAULT_SAMPLES_PER_SECOND,
        dump_idle: crate::cli::DumpIdle(Some(loopscope::DEFAULT_DUMP_IDLE)),
        repeat_dumps: false,
        console: None,
        json: false,
        tui: false,
        serve: None,
        serve_public: false,
        prometheus: None,
        otlp: None,
        top: 10,
    };
    let storm = sleep_storm::Config { tasks: 5_000, ..sleep_storm::Config::default() };
    println!(
        "loopscope demo: {} sleeping tasks on a 2-worker tokio runtime for {} (workload sleep-storm)\n",
        storm.tasks,
        fmt_duration(args.run_for)
    );
    let workload = WorkloadCmd::SleepStorm(storm);
    // On a terminal the run is watched live in the TUI; the report follows when it is closed.
    let report = if !args.no_tui && crate::tui::have_terminal() {
        crate::tui::run_live(&opts, &workload)?
    } else {
        run_workload(&opts, &workload)?
    };
    print_report(&report, false, opts.top);
    println!("\n{}", findings(&report));
    println!("The recording is in {}; read it again with `loopscope report {}`.", path.display(), path.display());

    println!(
        "\nNext, the classic mistakes of async code, each made 3 times and then fixed, one recorder session each\n\
         (workload blocking; `loopscope run blocking --scenario NAME` shows one in full):\n"
    );
    let rows = crate::catalogue::run_catalogue(&RunOpts { record: None, ..opts }, 3)?;
    print!("{}", crate::catalogue::table(&rows));
    let caught = rows.iter().filter(|r| r.variant == "mistake" && r.ok).count();
    let clean = rows.iter().filter(|r| r.variant == "fix" && r.ok).count();
    println!(
        "\n{caught} of {} mistakes caught (each stall names the line that blocked), {clean} of {} fixes clean.\n\
         docs/mistakes.md explains each one and its fix.",
        rows.len() / 2,
        rows.len() / 2
    );
    Ok(())
}

/// What the report says, in sentences.
pub fn findings(report: &Report) -> String {
    let mut o = String::from("What loopscope found\n");
    let rt = &report.runtime;
    let _ = writeln!(
        o,
        "  - {} polls took {} in total: the workers were busy {:.1}% of the time.",
        loopscope::core::text::group(rt.polls),
        fmt_duration(rt.busy),
        rt.busy_ratio * 100.0
    );
    if let Some(top) = report.sites.first() {
        let _ = writeln!(
            o,
            "  - The busiest spawn site is {} ({:.0}% of busy time, {} tasks); its polls take {} at p99.",
            top.location,
            top.busy_share * 100.0,
            loopscope::core::text::group(top.tasks.spawned),
            fmt_duration(top.poll.p99)
        );
    }
    if rt.sched.count > 0 {
        let _ = writeln!(
            o,
            "  - A woken task waits {} (p50) to {} (p99) before a worker polls it; the worst wait was {}.",
            fmt_duration(rt.sched.p50),
            fmt_duration(rt.sched.p99),
            fmt_duration(rt.sched.max)
        );
    }
    if let Some(late) =
        report.workload.as_ref().and_then(|w| w.distributions.iter().find(|d| d.name == "timer_lateness"))
    {
        let _ = writeln!(
            o,
            "  - Timers fire {} late at p50 and {} at p99 (tokio's timer wheel has 1 ms resolution).",
            fmt_duration(late.summary.p50),
            fmt_duration(late.summary.p99)
        );
    }
    // The host's stalls (a preempted worker) are not the program's: said apart.
    let ours: Vec<&StallGroup> = report.stalls.iter().filter(|g| g.origin != Origin::Host).collect();
    let host: u64 = report.stalls.iter().filter(|g| g.origin == Origin::Host).map(|g| g.count).sum();
    let count: u64 = ours.iter().map(|g| g.count).sum();
    let by_host = if host > 0 { format!(" ({host} more held up by the host, not the program)") } else { String::new() };
    match ours.first() {
        Some(g) => {
            let _ = writeln!(
                o,
                "  - {} stall{} blocked a worker{by_host}; the worst group: {} × {} at {} (up to {}).",
                count,
                if count == 1 { "" } else { "s" },
                g.count,
                g.category,
                g.spawn_site.as_deref().unwrap_or("an unknown site"),
                fmt_duration(g.max)
            );
        }
        None if report.recording.stall_threshold.is_some() => {
            let _ = writeln!(o, "  - No poll of the program blocked a worker{by_host}.");
        }
        None => {}
    }
    let _ = writeln!(
        o,
        "  - {} poll{} took longer than {}; a poll that long holds up every task queued behind it.",
        loopscope::core::text::group(rt.slow_polls),
        if rt.slow_polls == 1 { "" } else { "s" },
        fmt_duration(report.recording.slow_poll_threshold)
    );
    o
}
