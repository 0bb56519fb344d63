//! `loopscope run blocking` with every scenario: each mistake and its fix under the recorder, one
//! session each, summed up in one table.

use blocking::{Scenario, Which};
use loopscope::Report;
use loopscope::core::model::StallCategory;
use loopscope::core::text::{Column, Table};
use loopscope::core::units::fmt_duration;
use loopscope_cli::report_text::display_path;
use serde::Serialize;

use crate::Failure;
use crate::cli::{RunOpts, WorkloadCmd};
use crate::run::run_workload;

/// One line of the table.
#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub variant: &'static str,
    /// Stalls at a line of the program's own code (the blocking site).
    pub stalls: u64,
    /// Stalls not attributed to a line of the program: the host held the thread up (`preempted`),
    /// the watchdog raised it too late to look (`late`), or every frame was in the runtime or a
    /// library. On an overloaded machine any poll can be held up, however well written.
    pub host_stalls: u64,
    pub category: Option<String>,
    pub blocking_site: Option<String>,
    pub worst_ticker_lateness_ms: f64,
    pub lost_work: u64,
    pub verdict: &'static str,
    /// Whether the verdict is what loopscope is meant to give (the mistake caught, the fix clean).
    pub ok: bool,
}

fn row(scenario: Scenario, fixed: bool, report: &Report) -> Row {
    let w = report.workload.as_ref();
    let metric = |name: &str| w.and_then(|w| w.metrics.iter().find(|m| m.name == name)).map_or(0.0, |m| m.value);
    let host = |g: &&loopscope::core::report::StallGroup| {
        g.category == StallCategory::Preempted || g.late == g.count || g.blocking_site.is_none()
    };
    let host_stalls: u64 = report.stalls.iter().filter(host).map(|g| g.count).sum();
    let stalls = report.runtime.stalls.count - host_stalls;
    let lost_work = metric("lost_work") as u64;
    let top = report.stalls.iter().find(|g| !host(g));
    let (verdict, ok) = match (fixed, scenario.stalls()) {
        (false, true) if stalls > 0 => ("caught", true),
        (false, true) => ("MISSED", false),
        (false, false) if lost_work > 0 => ("work lost (the compiler warns)", true),
        (false, false) => ("MISSED", false),
        (true, _) if stalls == 0 && lost_work == 0 => ("clean", true),
        (true, _) => ("FLAGGED", false),
    };
    Row {
        scenario: scenario.name(),
        variant: if fixed { "fix" } else { "mistake" },
        stalls,
        host_stalls,
        category: top.map(|g| g.category.name().to_string()),
        blocking_site: top.and_then(|g| g.blocking_site.as_deref().map(display_path)),
        worst_ticker_lateness_ms: metric("ticker_lateness_max_ms"),
        lost_work,
        verdict,
        ok,
    }
}

/// Runs every scenario and fix; returns the rows.
pub fn run_catalogue(opts: &RunOpts, repeat: u32) -> Result<Vec<Row>, Failure> {
    let mut rows = Vec::new();
    for scenario in Scenario::ALL {
        for fixed in [false, true] {
            let cfg = blocking::Config { scenario: Which(Some(scenario)), fixed, repeat };
            let mut one = opts.clone();
            one.record = None;
            let report = run_workload(&one, &WorkloadCmd::Blocking(cfg))?;
            rows.push(row(scenario, fixed, &report));
        }
    }
    Ok(rows)
}

/// The rows as a table.
pub fn table(rows: &[Row]) -> String {
    let table = Table::new(vec![
        Column::left("scenario", |r: &Row| r.scenario.to_string()),
        Column::left("variant", |r: &Row| r.variant.to_string()),
        Column::right("stalls", |r: &Row| {
            if r.host_stalls > 0 { format!("{} +{}h", r.stalls, r.host_stalls) } else { r.stalls.to_string() }
        }),
        Column::left("category", |r: &Row| r.category.as_deref().unwrap_or("-").to_string()),
        Column::left("blocking site", |r: &Row| r.blocking_site.as_deref().unwrap_or("-").to_string()).clip(40),
        Column::right("ticker late", |r: &Row| {
            std::time::Duration::try_from_secs_f64(r.worst_ticker_lateness_ms / 1e3).map_or("-".into(), fmt_duration)
        }),
        Column::left("verdict", |r: &Row| r.verdict.to_string()),
    ])
    .gap(2);
    let mut o = table.render(rows);
    if rows.iter().any(|r| r.host_stalls > 0) {
        o.push_str(
            "(+Nh: stalls not at a line of the program: the host held the worker up, or it blocked inside the runtime)\n",
        );
    }
    o
}

pub fn catalogue_command(opts: &RunOpts, repeat: u32) -> Result<(), Failure> {
    let rows = run_catalogue(opts, repeat)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| Failure::Run(e.into()))?);
    } else {
        print!("{}", table(&rows));
    }
    if let Some(path) = &opts.record {
        eprintln!(
            "note: --record is ignored with --scenario all (one session per scenario); record one scenario, e.g. --scenario sync-sleep --record {}",
            path.display()
        );
    }
    Ok(())
}

/// tokio's "Cannot start a runtime from within a runtime" panic is the `nested-runtime` mistake,
/// which the recorder reports; printing it as well would only clutter the output. Install it before
/// any session: a session's hook goes in front of it and so still sees the panic.
pub fn quiet_nested_runtime_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("");
        if !text.contains("Cannot start a runtime from within a runtime") {
            previous(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &'static str, variant: &'static str, stalls: u64, host_stalls: u64, site: Option<&str>) -> Row {
        Row {
            scenario,
            variant,
            stalls,
            host_stalls,
            category: site.map(|_| "sync-sleep".to_string()),
            blocking_site: site.map(str::to_string),
            worst_ticker_lateness_ms: if stalls > 0 { 61.5 } else { 1.2 },
            lost_work: 0,
            verdict: if variant == "fix" { "clean" } else { "caught" },
            ok: true,
        }
    }

    #[test]
    fn the_catalogue_table_has_one_heading_per_column() {
        let rows = [
            row("sync-sleep", "mistake", 3, 0, Some("workloads/blocking/src/lib.rs:120")),
            row("sync-sleep", "fix", 0, 1, None),
            row("std-mutex", "mistake", 12, 0, Some("/a/checkout/somewhere/deep/workloads/blocking/src/lib.rs:201")),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        // The last column (left-aligned) starts under its heading on every row, whatever the
        // widths of the cells before it.
        let verdict_at = lines[0].chars().count() - "verdict".len();
        for (line, row) in lines[1..].iter().zip(&rows) {
            assert_eq!(line.chars().count() - row.verdict.len(), verdict_at, "{text}");
        }
        insta::assert_snapshot!(text);
    }
}
