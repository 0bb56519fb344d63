//! The gate's outputs: a table for people, JUnit XML for CI dashboards, GitHub Actions
//! annotations and job summary, and an SVG percentile plot. (JSON is `Outcome`'s serialization.)

use std::fmt::Write as _;

use loopscope_core::text::{Column, Table};

use crate::check::{Outcome, RuleResult, Verdict, fmt_nanos};

/// Figures of a rule for a table: baseline, candidate, change, interval.
fn figures(r: &RuleResult) -> [String; 4] {
    let value = |v: Option<f64>| match (v, r.unit) {
        (None, _) => "-".to_string(),
        (Some(v), "ns") => fmt_nanos(v),
        (Some(v), "share") => format!("{:.0}%", v * 100.0),
        (Some(v), _) => format!("{v}"),
    };
    let pct = |x: f64| format!("{:+.1}%", x * 100.0);
    let interval = match (r.interval, r.kind) {
        (Some([lo, hi]), "budget") => format!("[{}, {}]", fmt_nanos(lo), fmt_nanos(hi)),
        (Some([lo, hi]), _) => format!("[{}, {}]", pct(lo), pct(hi)),
        (None, _) => "-".into(),
    };
    [value(r.baseline), value(r.candidate), r.change.map_or("-".into(), pct), interval]
}

/// The human table.
pub fn text(o: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loopscope gate: {} baseline run{}, {} candidate run{}; policy {}; {:.0}% family-wise confidence over {} \
         statistical rule{} (Bonferroni), {} resamples, seed {}",
        o.baseline.files.len(),
        plural(o.baseline.files.len()),
        o.candidate.files.len(),
        plural(o.candidate.files.len()),
        o.policy,
        o.confidence * 100.0,
        o.statistical_rules,
        plural(o.statistical_rules),
        o.resamples,
        o.seed
    );
    if let Some(note) = o.programs_note() {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(host) = host_line(o) {
        let _ = writeln!(out, "{host}");
    }
    let rows: Vec<(&RuleResult, [String; 4])> = o.rules.iter().map(|r| (r, figures(r))).collect();
    type Row<'r> = (&'r RuleResult, [String; 4]);
    let table = Table::new(vec![
        Column::left("rule", |(r, _): &Row| r.name.clone()),
        Column::right("limit", |(r, _): &Row| r.limit.clone()),
        Column::right("baseline", |(_, f): &Row| f[0].clone()),
        Column::right("candidate", |(_, f): &Row| f[1].clone()),
        Column::right("change", |(_, f): &Row| f[2].clone()),
        Column::right("interval", |(_, f): &Row| f[3].clone()),
        Column::right("verdict", |(r, _): &Row| r.verdict.name().replace('-', " ").to_uppercase()),
    ])
    .gap(2);
    let _ = write!(out, "\n{}", table.render(&rows));
    let _ = writeln!(out);
    for r in o.rules.iter().filter(|r| r.verdict != Verdict::Pass) {
        let _ = writeln!(out, "{}: {}: {}", r.verdict.name().replace('-', " "), r.name, r.detail);
    }
    let _ = writeln!(out, "verdict: {}", o.verdict.name().to_uppercase());
    out
}

/// What the host took of each side, and what that did to the rules on wall time.
fn host_line(o: &Outcome) -> Option<String> {
    let sentence = o.host.sentence()?;
    let cpu_judged = o.rules.iter().any(|r| r.metric == "cpu" && r.verdict != Verdict::NotJudged);
    Some(if o.host.wall_time_judged {
        format!("host: {sentence}; within [host] max_share {:.0}%", o.host.max_share * 100.0)
    } else if !cpu_judged {
        format!(
            "host: {sentence}; above [host] max_share {:.0}%: the rules on wall-time tails are not judged, and the policy \
             has no rule on CPU time per poll to judge in their place",
            o.host.max_share * 100.0
        )
    } else {
        format!(
            "host: {sentence}; above [host] max_share {:.0}%: the rules on wall-time tails (poll, sched, lag, workload above the median) are \
             not judged, CPU time per poll is",
            o.host.max_share * 100.0
        )
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// XML text escaping.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test case per rule; a regression is a failure, an inconclusive rule is a
/// failure when inconclusive verdicts fail the gate and skipped otherwise.
pub fn junit(o: &Outcome) -> String {
    let inconclusive_fails = o.inconclusive_as == "fail";
    let failed =
        |r: &RuleResult| r.verdict == Verdict::Regression || (r.verdict == Verdict::Inconclusive && inconclusive_fails);
    let failures = o.rules.iter().filter(|r| failed(r)).count();
    let skipped = o
        .rules
        .iter()
        .filter(|r| r.verdict == Verdict::NotJudged || (r.verdict == Verdict::Inconclusive && !inconclusive_fails))
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"loopscope gate\" tests=\"{n}\" failures=\"{failures}\" skipped=\"{skipped}\">\n  \
         <testsuite name=\"loopscope gate\" tests=\"{n}\" failures=\"{failures}\" skipped=\"{skipped}\" errors=\"0\">",
        n = o.rules.len()
    );
    for r in &o.rules {
        let [b, c, ch, iv] = figures(r);
        let figures = format!("limit {}, baseline {b}, candidate {c}, change {ch}, interval {iv}", r.limit);
        let _ = write!(out, "    <testcase classname=\"loopscope.gate.{}\" name=\"{}\"", xml(&r.metric), xml(&r.name));
        if failed(r) {
            let _ = writeln!(
                out,
                ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                r.verdict.name(),
                xml(&r.detail),
                xml(&figures)
            );
        } else if matches!(r.verdict, Verdict::Inconclusive | Verdict::NotJudged) {
            let message = format!("{}: {}", r.verdict.name().replace('-', " "), r.detail);
            let _ = writeln!(out, ">\n      <skipped message=\"{}\"/>\n    </testcase>", xml(&message));
        } else {
            let _ = writeln!(out, ">\n      <system-out>{}</system-out>\n    </testcase>", xml(&figures));
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// GitHub Actions caps annotations per step (10 errors, 10 warnings); past this many of one
/// kind, the rest are folded into one more annotation.
const MAX_ANNOTATIONS: usize = 9;

/// Escapes an annotation message (workflow command data).
fn gh_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes an annotation property value.
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `::error` lines for regressions and `::warning` lines for inconclusive rules, at most ten of
/// each kind (the rest folded into the tenth).
pub fn github_annotations(o: &Outcome) -> String {
    let mut out = String::new();
    for (verdict, level) in [(Verdict::Regression, "error"), (Verdict::Inconclusive, "warning")] {
        let hits: Vec<&RuleResult> = o.rules.iter().filter(|r| r.verdict == verdict).collect();
        for r in hits.iter().take(if hits.len() > MAX_ANNOTATIONS + 1 { MAX_ANNOTATIONS } else { hits.len() }) {
            let [b, c, ch, _] = figures(r);
            let _ = writeln!(
                out,
                "::{level} title={}::{}",
                gh_property(&format!("loopscope gate: {} {}", r.name, verdict.name())),
                gh_data(&format!("{} (limit {}, baseline {b}, candidate {c}, change {ch})", r.detail, r.limit))
            );
        }
        if hits.len() > MAX_ANNOTATIONS + 1 {
            let rest: Vec<&str> = hits[MAX_ANNOTATIONS..].iter().map(|r| r.name.as_str()).collect();
            let _ = writeln!(
                out,
                "::{level} title={}::{}",
                gh_property(&format!("loopscope gate: {} more {}", rest.len(), verdict.name())),
                gh_data(&rest.join("; "))
            );
        }
    }
    out
}

/// The Markdown job summary.
pub fn markdown(o: &Outcome) -> String {
    let icon = |v: Verdict| match v {
        Verdict::NotJudged => "➖",
        Verdict::Pass => "✅",
        Verdict::Inconclusive => "⚠️",
        Verdict::Regression => "❌",
    };
    let mut out = format!("## loopscope gate: {} {}\n\n", icon(o.verdict), o.verdict.name());
    let _ = writeln!(
        out,
        "{} baseline run(s) against {} candidate run(s), {:.0}% family-wise confidence.\n",
        o.baseline.files.len(),
        o.candidate.files.len(),
        o.confidence * 100.0
    );
    if let Some(note) = o.programs_note() {
        let _ = writeln!(out, "Note: {note}.\n");
    }
    if let Some(host) = host_line(o) {
        let _ = writeln!(out, "{}.\n", host.replace("host: ", "Host: "));
    }
    out.push_str(
        "| rule | limit | baseline | candidate | change | interval | verdict |\n|---|---|---|---|---|---|---|\n",
    );
    for r in &o.rules {
        let [b, c, ch, iv] = figures(r);
        let cell = |s: &str| s.replace('|', "\\|");
        let _ = writeln!(
            out,
            "| {} | {} | {b} | {c} | {ch} | {iv} | {} {} |",
            cell(&r.name),
            cell(&r.limit),
            icon(r.verdict),
            r.verdict.name()
        );
    }
    out
}

/// An SVG with one panel per gated distribution: latency against percentile, the percentile
/// axis log-scaled in nines (as HdrHistogram's plots are), the baseline against the candidate.
pub fn svg(o: &Outcome) -> String {
    const W: f64 = 640.0;
    const H: f64 = 300.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let panels = o.curves.len().max(1);
    let height = H * panels as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    if o.curves.is_empty() {
        out.push_str("<text x=\"20\" y=\"40\">No distribution was gated.</text>\n");
    }
    for (p, curve) in o.curves.iter().enumerate() {
        let y0 = H * p as f64;
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        // x: nines of the percentile, 0 (p0) to 5 (p99.999).
        let nines = |pct: f64| (-(1.0 - pct / 100.0).max(1e-5).log10()).clamp(0.0, 5.0);
        let max_ns = curve.baseline.iter().chain(&curve.candidate).map(|(_, v)| *v).max().unwrap_or(1).max(1) as f64;
        let x = |pct: f64| LEFT + nines(pct) / 5.0 * pw;
        let y = |v: f64| y0 + TOP + ph - (v / max_ns) * ph;
        let _ = writeln!(
            out,
            "<g class=\"panel\"><text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"14\" font-weight=\"bold\">{} ({})</text>",
            y0 + 22.0,
            xml(&curve.name),
            curve.verdict.name()
        );
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>",
            y0 + TOP
        );
        for (k, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].iter().enumerate() {
            let gx = LEFT + k as f64 / 5.0 * pw;
            let _ = writeln!(
                out,
                "<line x1=\"{gx:.1}\" y1=\"{:.1}\" x2=\"{gx:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{gx:.1}\" \
                 y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                y0 + TOP,
                y0 + TOP + ph,
                y0 + TOP + ph + 16.0
            );
        }
        for k in 0..=4 {
            let v = max_ns * f64::from(k) / 4.0;
            let gy = y(v);
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" \
                 y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + pw,
                LEFT - 6.0,
                gy + 4.0,
                xml(&fmt_nanos(v))
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
            LEFT + pw / 2.0,
            y0 + TOP + ph + 34.0
        );
        for (series, color, points) in
            [("baseline", "#1f77b4", &curve.baseline), ("candidate", "#d62728", &curve.candidate)]
        {
            let pts: Vec<String> =
                points.iter().map(|(pct, v)| format!("{:.1},{:.1}", x(*pct), y(*v as f64))).collect();
            let _ = writeln!(
                out,
                "<polyline class=\"{series}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                pts.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1f77b4\">— baseline</text><text x=\"{:.1}\" y=\"{:.1}\" \
             fill=\"#d62728\">— candidate</text></g>",
            LEFT + 10.0,
            y0 + TOP + 16.0,
            LEFT + 100.0,
            y0 + TOP + 16.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{SCHEMA_VERSION, SideInfo};

    fn rule(name: &str, kind: &'static str, limit: &str, figures: [Option<f64>; 3], verdict: Verdict) -> RuleResult {
        let [baseline, candidate, change] = figures;
        RuleResult {
            name: name.into(),
            kind,
            policy_line: Some(7),
            metric: "poll".into(),
            site: None,
            stat: Some("p99".into()),
            limit: limit.into(),
            unit: if kind.starts_with("stalls") { "stalls" } else { "ns" },
            baseline,
            candidate,
            change,
            interval: change.map(|c| if kind == "budget" { [1_500.0, 2_500.0] } else { [c - 0.05, c + 0.05] }),
            confidence: Some(0.99),
            interval_method: change.map(|_| crate::stats::Method::Percentile),
            verdict,
            detail: format!("{} because", verdict.name()),
        }
    }

    fn outcome() -> Outcome {
        let side = |name: &str| SideInfo {
            files: vec![format!("{name}-1.loopscope"), format!("{name}-2.loopscope")],
            workload: None,
            programs: vec!["my-server".into()],
            intervals: 40,
        };
        Outcome {
            schema_version: SCHEMA_VERSION,
            verdict: Verdict::Regression,
            inconclusive_as: "exit3",
            policy: "gate.toml".into(),
            confidence: 0.95,
            statistical_rules: 2,
            resamples: 2000,
            seed: 1,
            baseline: side("base"),
            candidate: side("cand"),
            programs_differ: false,
            host: crate::check::HostShares {
                baseline: Some(0.031),
                candidate: Some(0.024),
                max_share: 0.1,
                wall_time_judged: true,
            },
            rules: vec![
                rule(
                    "poll at src/very/long/path/to/the/server.rs:88 p99",
                    "max-increase",
                    "+10%",
                    [Some(12_300.0), Some(24_800.0), Some(1.016)],
                    Verdict::Regression,
                ),
                rule("sched (runtime) p99", "budget", "2.00ms", [Some(1_800.0), Some(1_900.0), None], Verdict::Pass),
                rule("stalls: new blocking calls", "stalls-new", "0", [Some(0.0), Some(0.0), None], Verdict::Pass),
            ],
            curves: Vec::new(),
        }
    }

    #[test]
    fn the_table_lays_headings_and_figures_out_together() {
        let text = text(&outcome());
        let lines: Vec<&str> = text.lines().collect();
        let heading = lines.iter().position(|l| l.starts_with("rule ")).unwrap();
        // Right-aligned columns: every row ends where the heading does.
        for row in &lines[heading + 1..heading + 4] {
            assert_eq!(row.chars().count(), lines[heading].chars().count(), "{text}");
        }
        insta::assert_snapshot!(text);
    }
}
