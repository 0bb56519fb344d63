//! Judging a candidate against a baseline under a policy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use loopscope_core::dist::{Dist, highest_equivalent};
use loopscope_core::model::StallCategory;
use loopscope_core::report::StallGroup;
use serde::Serialize;

use crate::data::{InputError, Run, check_comparable, programs};
use crate::policy::{Inconclusive, Limit, Metric, Policy, PolicyError, Rule};
use crate::stats::{Block, Method, Rng, Scale, Side, Stat, interval_at, replicates, statistic};

/// Version of the JSON document `loopscope check --json` prints (`docs/check.schema.json`).
pub const SCHEMA_VERSION: u32 = 2;

/// The verdict of one rule, or of the whole gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A rule on a wall-time metric left aside because the host took more of both sides' poll time
    /// than `[host] max_share` (its figures are shown, its verdict does not count).
    NotJudged,
    /// Within the limit, with the confidence asked for.
    Pass,
    /// The interval straddles the limit (or there is too little data to say).
    Inconclusive,
    /// Beyond the limit, with the confidence asked for.
    Regression,
}

impl Verdict {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::NotJudged => "not-judged",
            Verdict::Pass => "pass",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Regression => "regression",
        }
    }
}

/// What one rule found.
#[derive(Clone, Debug, Serialize)]
pub struct RuleResult {
    /// Short name, e.g. `poll p99 (runtime)` or `stalls: new blocking calls`.
    pub name: String,
    /// `max-increase`, `budget`, `stalls-new`, `stalls-max-per-run`, `stalls-at`, `tasks-growth`
    /// or `host` (wall-time rules set aside with no CPU rule in their place).
    pub kind: &'static str,
    /// Line of the rule in the policy file, for distribution rules.
    pub policy_line: Option<usize>,
    /// The metric (`poll`, `sched`, `lag`, `workload.NAME`, `stalls`).
    pub metric: String,
    /// The spawn site, for a per-site rule.
    pub site: Option<String>,
    /// The statistic (`p99`, `max`), for distribution rules.
    pub stat: Option<String>,
    /// The limit, as written (`+10%`, `2ms`, `0`).
    pub limit: String,
    /// Unit of the figures below: `ns`, `stalls`, `sites` (spawn sites whose tasks kept growing)
    /// or `share` (the host's share of the poll time, in [0, 1]).
    pub unit: &'static str,
    /// The baseline's figure (the statistic over all its data, or its stall count).
    pub baseline: Option<f64>,
    /// The candidate's figure.
    pub candidate: Option<f64>,
    /// Candidate over baseline, minus one (0.12 = 12% higher).
    pub change: Option<f64>,
    /// Confidence interval: of `change` for a relative rule, of the candidate's figure for a
    /// budget.
    pub interval: Option<[f64; 2]>,
    /// Confidence level of that interval (after the correction for several rules).
    pub confidence: Option<f64>,
    /// How the interval was taken from the bootstrap replicates: `percentile`, or `normal` for a
    /// level too extreme for the resamples to resolve (many rules).
    pub interval_method: Option<Method>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in a sentence.
    pub detail: String,
}

impl RuleResult {
    /// A rule judged exactly (a count, no interval): the fields every such result shares.
    fn exact(
        name: String,
        kind: &'static str,
        metric: &str,
        unit: &'static str,
        verdict: Verdict,
        detail: String,
    ) -> Self {
        RuleResult {
            name,
            kind,
            policy_line: None,
            metric: metric.into(),
            site: None,
            stat: None,
            limit: String::new(),
            unit,
            baseline: None,
            candidate: None,
            change: None,
            interval: None,
            confidence: None,
            interval_method: None,
            verdict,
            detail,
        }
    }
}

/// Which recordings one side used.
#[derive(Clone, Debug, Serialize)]
pub struct SideInfo {
    /// The files.
    pub files: Vec<String>,
    /// The workload recorded, if it is one of loopscope's.
    pub workload: Option<String>,
    /// The file names of the programs recorded (one, unless the side mixes builds).
    pub programs: Vec<String>,
    /// Intervals used (after the warm-up) over all runs.
    pub intervals: usize,
}

/// Percentile curves of one gated distribution, for the plot.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    /// e.g. `poll (runtime)`.
    pub name: String,
    /// Worst verdict among the rules on this distribution.
    pub verdict: Verdict,
    /// (percentile in [0, 100), nanoseconds) of the baseline's pooled data.
    pub baseline: Vec<(f64, u64)>,
    /// The same for the candidate.
    pub candidate: Vec<(f64, u64)>,
}

/// The gate's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The worst verdict of any rule.
    pub verdict: Verdict,
    /// What an inconclusive verdict does.
    pub inconclusive_as: &'static str,
    /// The policy file.
    pub policy: String,
    /// Family-wise confidence.
    pub confidence: f64,
    /// Statistical rules judged (the Bonferroni divisor).
    pub statistical_rules: usize,
    /// Bootstrap resamples per rule.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// The baseline.
    pub baseline: SideInfo,
    /// The candidate.
    pub candidate: SideInfo,
    /// Whether the two sides recorded programs of different names (a baseline and a candidate
    /// build, say): they are compared all the same.
    pub programs_differ: bool,
    /// What the host took of each side's workers, and whether wall-time rules were judged.
    pub host: HostShares,
    /// One result per rule (a `site = "*"` rule gives one per site).
    pub rules: Vec<RuleResult>,
    /// Distributions for the plot.
    #[serde(skip)]
    pub curves: Vec<Curve>,
}

impl Outcome {
    /// A sentence saying that the two sides recorded different programs, when they did.
    pub fn programs_note(&self) -> Option<String> {
        let list = |p: &[String]| p.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        self.programs_differ.then(|| {
            format!(
                "the programs differ: the baseline records {}, the candidate {} (compared as builds of one program)",
                list(&self.baseline.programs),
                list(&self.candidate.programs)
            )
        })
    }

    /// The process exit code: 0 pass, 1 regression, 3 inconclusive (or as the policy says).
    pub fn exit_code(&self, inconclusive: Inconclusive) -> u8 {
        match (self.verdict, inconclusive) {
            (Verdict::NotJudged | Verdict::Pass, _) | (Verdict::Inconclusive, Inconclusive::Pass) => 0,
            (Verdict::Regression, _) | (Verdict::Inconclusive, Inconclusive::Fail) => 1,
            (Verdict::Inconclusive, Inconclusive::Exit3) => 3,
        }
    }
}

/// What the host took of each side's polls: poll time the workers spent off their CPU while
/// runnable, over all poll time, summed over every run's intervals after the warm-up.
///
/// Per interval and worker the recording holds the polls' total length, the thread's CPU time
/// and its run-queue delay (the kernel's). Poll time beyond the CPU time was spent off the CPU,
/// blocked or preempted; only run-queue delay can be preemption, so the host's part is the
/// smaller of the two. (Run-queue delay alone is no measure: it also counts the wait of every
/// wake-up, which on a virtual machine is large even on an idle host, and does not lengthen a
/// poll.)
#[derive(Clone, Debug, Serialize)]
pub struct HostShares {
    /// The baseline's share in [0, 1]; `None` when its recordings hold no such figures (an older
    /// recording, a kernel without `schedstat`).
    pub baseline: Option<f64>,
    /// The candidate's.
    pub candidate: Option<f64>,
    /// The policy's `[host] max_share`.
    pub max_share: f64,
    /// Whether rules on wall-time tails (above the median) were judged: unless both sides' shares are known and
    /// above the bound (interleaved runs see the same host; one side alone above it may be the
    /// program blocking inside its polls, which the wall-time rules must see).
    pub wall_time_judged: bool,
}

impl HostShares {
    fn of(policy: &Policy, baseline: &[Run], candidate: &[Run], warmup: u64) -> HostShares {
        let share = |runs: &[Run]| {
            let (mut polls, mut taken, mut measured) = (0u64, 0u64, false);
            for w in
                runs.iter().flat_map(|r| r.intervals.iter().filter(|i| i.start_ns >= warmup)).flat_map(|i| &i.workers)
            {
                measured |= w.cpu_ns > 0;
                polls = polls.saturating_add(w.poll.sum_ns);
                taken = taken.saturating_add(w.poll.sum_ns.saturating_sub(w.cpu_ns).min(preempted_ns(w)));
            }
            (measured && polls > 0).then(|| taken as f64 / polls as f64)
        };
        let (baseline, candidate) = (share(baseline), share(candidate));
        let over = |s: Option<f64>| s.is_some_and(|s| s > policy.host_max_share);
        HostShares {
            baseline,
            candidate,
            max_share: policy.host_max_share,
            wall_time_judged: !(over(baseline) && over(candidate)),
        }
    }

    /// Whether the host took less than half of each side's poll time: then it cannot have moved
    /// the median of the polls' times by much (fewer than half the polls can have waited).
    fn below_half(&self) -> bool {
        [self.baseline, self.candidate].iter().all(|s| s.is_some_and(|s| s < 0.5))
    }

    /// "the host took 41% of the baseline's poll time and 38% of the candidate's".
    pub fn sentence(&self) -> Option<String> {
        let pct = |s: Option<f64>| s.map_or_else(|| "an unknown share".into(), |s| format!("{:.0}%", s * 100.0));
        (self.baseline.is_some() || self.candidate.is_some()).then(|| {
            format!(
                "the host took {} of the baseline's poll time and {} of the candidate's (preempted polls)",
                pct(self.baseline),
                pct(self.candidate)
            )
        })
    }
}

/// Whether a statistic is the median or below: preemption lengthens a minority of polls, which
/// moves a tail percentile by any amount and the median hardly at all.
fn is_central(stat: Stat) -> bool {
    matches!(stat, Stat::Quantile(q) if q <= 0.5)
}

/// The part of a worker's run-queue delay that followed its preemptions: the delay shared out
/// over its switches (a wake-up's wait is no preemption, and on a virtual machine it is large even
/// on an idle host). Without switch counts (recorded by an older loopscope), all of it.
fn preempted_ns(w: &loopscope_core::model::WorkerInterval) -> u64 {
    let all = w.switches.saturating_add(w.preemptions);
    if all == 0 {
        return w.run_delay_ns;
    }
    (u128::from(w.run_delay_ns) * u128::from(w.preemptions) / u128::from(all)) as u64
}

/// One run's blocks before they are put on a shared scale: (bucket value in ns, count) pairs.
type RawRun = Vec<Vec<(u64, u64)>>;

/// Both sides' blocks of one distribution (a metric in one scope) on a shared scale.
struct Data {
    base: Side,
    cand: Side,
    scale: Scale,
    /// The side that holds no data, if one does not.
    empty: Option<&'static str>,
}

/// Each distribution's data, extracted from the recordings once however many rules read it
/// (rules on one distribution differ only in their statistic and limit). A failed extraction
/// keeps its message for each rule to report or, if optional, skip.
type Extracted = HashMap<(Metric, Option<String>), Result<Rc<Data>, String>>;

/// One distribution rule applied to one scope.
struct Instance<'p> {
    rule: &'p Rule,
    /// `None`: runtime-wide; else the site pattern (or, for `*`, the site's location).
    site: Option<String>,
    data: Rc<Data>,
}

/// Compares `candidate` with `baseline` under `policy`.
pub fn check(policy: &Policy, baseline: &[Run], candidate: &[Run]) -> Result<Outcome, InputError> {
    let all: Vec<&Run> = baseline.iter().chain(candidate).collect();
    check_comparable(&all)?;
    // Recordings count nanoseconds in a u64; a longer warm-up leaves every interval out.
    let warmup = u64::try_from(policy.warmup.as_nanos()).unwrap_or(u64::MAX);
    let mut instances = Vec::new();
    let mut extracted = Extracted::new();
    for rule in &policy.rules {
        instances.extend(instances_of(policy, rule, baseline, candidate, warmup, &mut extracted)?);
    }
    let host = HostShares::of(policy, baseline, candidate, warmup);
    let judged = |inst: &Instance<'_>| {
        host.wall_time_judged || !inst.rule.metric.wall_time() || (is_central(inst.rule.stat) && host.below_half())
    };
    let m = instances.iter().filter(|i| judged(i)).count().max(1);
    let level = 1.0 - (1.0 - policy.confidence) / m as f64;
    let mut results = Vec::new();
    let mut curves: BTreeMap<String, Curve> = BTreeMap::new();
    let set_aside = instances.iter().any(|i| !judged(i));
    for inst in &instances {
        let mut r = judge(policy, inst, level);
        if !judged(inst) {
            r.detail = format!(
                "{}, above [host] max_share {:.0}%; had it been judged: {} ({})",
                host.sentence().unwrap_or_default(),
                host.max_share * 100.0,
                r.verdict.name(),
                r.detail
            );
            r.verdict = Verdict::NotJudged;
        }
        let name = scope_name(&inst.rule.metric, inst.site.as_deref());
        let curve = curves.entry(name.clone()).or_insert_with(|| Curve {
            name,
            verdict: Verdict::NotJudged,
            baseline: percentile_curve(&inst.data.base.pooled(&inst.data.scale), &inst.data.scale),
            candidate: percentile_curve(&inst.data.cand.pooled(&inst.data.scale), &inst.data.scale),
        });
        curve.verdict = curve.verdict.max(r.verdict);
        results.push(r);
    }
    results.extend(stall_rules(policy, baseline, candidate));
    results.extend(task_rules(policy, baseline, candidate));
    // Rules left aside and none on CPU time judged in their place: nothing says the program's
    // own time did not grow. A result of its own says so, to every output.
    let cpu_judged = instances.iter().any(|i| !i.rule.metric.wall_time());
    if set_aside && !cpu_judged {
        let detail = format!(
            "{}: the rules on wall time are set aside, and the policy has no rule on CPU time per poll \
             (metric = \"cpu\") to judge in their place",
            host.sentence().unwrap_or_default()
        );
        results.push(RuleResult {
            limit: format!("{:.0}%", host.max_share * 100.0),
            baseline: host.baseline,
            candidate: host.candidate,
            ..RuleResult::exact(
                "host: wall time not judged".into(),
                "host",
                "host",
                "share",
                Verdict::Inconclusive,
                detail,
            )
        });
    }
    let verdict = results.iter().map(|r| r.verdict).max().unwrap_or(Verdict::Pass).max(Verdict::Pass);
    let side = |runs: &[Run]| SideInfo {
        files: runs.iter().map(|r| r.path.display().to_string()).collect(),
        workload: runs.first().and_then(|r| r.header.workload.clone()),
        programs: programs(runs),
        intervals: runs.iter().map(|r| r.intervals.iter().filter(|i| i.start_ns >= warmup).count()).sum(),
    };
    Ok(Outcome {
        schema_version: SCHEMA_VERSION,
        verdict,
        inconclusive_as: match policy.inconclusive {
            Inconclusive::Exit3 => "exit3",
            Inconclusive::Pass => "pass",
            Inconclusive::Fail => "fail",
        },
        policy: policy.source.clone(),
        confidence: policy.confidence,
        statistical_rules: instances.iter().filter(|i| judged(i)).count(),
        resamples: policy.resamples,
        seed: policy.seed,
        programs_differ: programs(baseline) != programs(candidate),
        baseline: side(baseline),
        candidate: side(candidate),
        host,
        rules: results,
        curves: curves.into_values().collect(),
    })
}

/// `poll (runtime)`, `sched at src/main.rs:10`.
fn scope_name(metric: &Metric, site: Option<&str>) -> String {
    match site {
        None if matches!(metric, Metric::Workload(_)) => metric.name(),
        None => format!("{} (runtime)", metric.name()),
        Some(s) => format!("{} at {s}", metric.name()),
    }
}

/// Whether a spawn site's location `file:line:col` matches a policy's pattern: the location (or
/// its `file:line`, or its file) ends with the pattern at a path boundary.
pub fn site_matches(file: &str, line: u32, column: u32, pattern: &str) -> bool {
    let full = format!("{file}:{line}:{column}");
    let short = format!("{file}:{line}");
    [full.as_str(), short.as_str(), file].iter().any(|loc| ends_at_path_boundary(loc, pattern))
}

/// Whether `s` ends with `pattern`, which starts at the beginning of `s` or after a `/`.
fn ends_at_path_boundary(s: &str, pattern: &str) -> bool {
    s.strip_suffix(pattern).is_some_and(|head| head.is_empty() || head.ends_with('/'))
}

/// The rule applied to every scope it names, with the data of both sides.
fn instances_of<'p>(
    policy: &'p Policy,
    rule: &'p Rule,
    baseline: &[Run],
    candidate: &[Run],
    warmup: u64,
    extracted: &mut Extracted,
) -> Result<Vec<Instance<'p>>, InputError> {
    let fail = |key: &str, message: String| {
        InputError::Policy(PolicyError {
            file: policy.source.clone(),
            line: Some(rule.line),
            key: Some(format!("rule[{}].{key}", rule.number)),
            message,
        })
    };
    if rule.site.is_some() && matches!(rule.metric, Metric::Lag | Metric::Cpu | Metric::Workload(_)) {
        return Err(fail(
            "site",
            format!("{} is measured for the whole runtime, not per spawn site", rule.metric.name()),
        ));
    }
    let sites: Vec<Option<String>> = match rule.site.as_deref() {
        None => vec![None],
        Some("*") => {
            let on = |runs: &[Run]| -> BTreeSet<String> {
                runs.iter()
                    .flat_map(|r| r.sites.iter().map(|s| format!("{}:{}:{}", s.file, s.line, s.column)))
                    .collect()
            };
            on(baseline).intersection(&on(candidate)).map(|s| Some(s.clone())).collect()
        }
        Some(p) => {
            let found =
                |runs: &[Run]| runs.iter().any(|r| r.sites.iter().any(|s| site_matches(&s.file, s.line, s.column, p)));
            if !found(baseline) || !found(candidate) {
                let known: BTreeSet<String> = baseline
                    .iter()
                    .chain(candidate)
                    .flat_map(|r| r.sites.iter().map(|s| format!("{}:{}", s.file, s.line)))
                    .collect();
                let side = if found(baseline) { "the candidate" } else { "the baseline" };
                if rule.optional {
                    return Ok(Vec::new());
                }
                return Err(fail(
                    "site",
                    format!(
                        "no spawn site of {side} matches {p:?}; sites recorded: {}",
                        known.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            vec![Some(p.to_string())]
        }
    };
    let mut out = Vec::new();
    for site in sites {
        let data = extracted
            .entry((rule.metric.clone(), site.clone()))
            .or_insert_with(|| extract(&rule.metric, site.as_deref(), baseline, candidate, warmup))
            .clone();
        let data = match data {
            Ok(data) => data,
            Err(_) if rule.optional => continue,
            Err(e) => return Err(fail("metric", e)),
        };
        if let Some(which) = data.empty {
            // `*` covers the sites that have data on both sides (one that only ran during the
            // warm-up has none).
            if rule.optional || rule.site.as_deref() == Some("*") {
                continue;
            }
            return Err(fail(
                "metric",
                format!(
                    "the {which} recordings hold no {} data{} (after a warm-up of {:?})",
                    rule.metric.name(),
                    site.as_deref().map(|s| format!(" for site {s}")).unwrap_or_default(),
                    policy.warmup
                ),
            ));
        }
        out.push(Instance { rule, site, data });
    }
    Ok(out)
}

/// Both sides' blocks of `metric` in one scope (runtime-wide, or the sites matching `site`),
/// on a scale shared by the two.
fn extract(
    metric: &Metric,
    site: Option<&str>,
    baseline: &[Run],
    candidate: &[Run],
    warmup: u64,
) -> Result<Rc<Data>, String> {
    let collect = |runs: &[Run]| -> Result<Vec<RawRun>, String> {
        runs.iter().map(|r| blocks_of(r, metric, site, warmup)).collect()
    };
    let (b, c) = (collect(baseline)?, collect(candidate)?);
    let empty = |side: &Vec<RawRun>| side.iter().flatten().flatten().all(|(_, n)| *n == 0);
    let empty = if empty(&b) {
        Some("baseline")
    } else if empty(&c) {
        Some("candidate")
    } else {
        None
    };
    let scale = Scale::new(b.iter().chain(&c).flatten().flatten().map(|(v, _)| *v).collect());
    let index = |raw: Vec<RawRun>| Side {
        runs: raw
            .into_iter()
            .map(|run| {
                run.into_iter()
                    .map(|block| block.into_iter().filter_map(|(v, n)| Some((scale.index(v)?, n))).collect::<Block>())
                    .collect()
            })
            .collect(),
    };
    let (base, cand) = (index(b), index(c));
    Ok(Rc::new(Data { base, cand, scale, empty }))
}

/// The blocks of one run for a metric: one per interval (after the warm-up), or the workload's
/// single distribution. Each block is (bucket value in ns, count) pairs.
fn blocks_of(run: &Run, metric: &Metric, site: Option<&str>, warmup: u64) -> Result<RawRun, String> {
    let bad = |e: String| format!("{}: {e}", run.path.display());
    match metric {
        Metric::Workload(name) => {
            let w = run.workload.as_ref().ok_or_else(|| {
                format!("{} has no workload figures, so it has no distribution {name:?}", run.path.display())
            })?;
            let d = w.distributions.iter().find(|d| &d.name == name).ok_or_else(|| {
                let known: Vec<_> = w.distributions.iter().map(|d| format!("workload.{}", d.name)).collect();
                format!(
                    "{} has no workload distribution {name:?}; it has: {}",
                    run.path.display(),
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                )
            })?;
            Ok(vec![buckets(&[&d.dist]).map_err(bad)?])
        }
        Metric::Cpu => {
            // One value per interval: the workers' CPU time over their polls, counted once per
            // poll so that the statistic is a poll-weighted quantile of the intervals' figures.
            let mut blocks = Vec::new();
            let mut measured = false;
            for i in run.intervals.iter().filter(|i| i.start_ns >= warmup) {
                // A worker without a CPU figure (its first interval, say) would count polls at no cost.
                let (cpu, polls) = i
                    .workers
                    .iter()
                    .filter(|w| w.cpu_ns > 0)
                    .fold((0u64, 0u64), |(c, p), w| (c.saturating_add(w.cpu_ns), p + w.poll.count));
                measured |= cpu > 0;
                blocks.push(if cpu > 0 && polls > 0 { vec![(cpu / polls, polls)] } else { Vec::new() });
            }
            if measured {
                Ok(blocks)
            } else {
                Err(format!(
                    "{} holds no CPU time of its workers (recorded by an older loopscope, or on a kernel without \
                     /proc/self/task/TID/schedstat)",
                    run.path.display()
                ))
            }
        }
        Metric::Sched if !run.header.schedule_latency => Err(format!(
            "{} did not track per-task scheduling latency (recorded with --no-schedule-latency or the lean profile; its \
             runtime-wide scheduling latency is the metric \"lag\")",
            run.path.display()
        )),
        _ => {
            let wanted: Vec<bool> =
                run.sites.iter().map(|s| site.is_none_or(|p| site_matches(&s.file, s.line, s.column, p))).collect();
            let mut blocks = Vec::new();
            for i in run.intervals.iter().filter(|i| i.start_ns >= warmup) {
                let dists: Vec<&Dist> = match metric {
                    Metric::Lag => vec![&i.lag],
                    _ => i
                        .sites
                        .iter()
                        .filter(|s| wanted.get(s.site as usize).copied().unwrap_or(false))
                        .map(|s| if *metric == Metric::Poll { &s.poll } else { &s.sched })
                        .collect(),
                };
                blocks.push(buckets(&dists).map_err(bad)?);
            }
            Ok(blocks)
        }
    }
}

/// The histograms added up, as (bucket value, count) pairs.
/// Each bucket is named by its highest value, as HdrHistogram reports a quantile that falls in it;
/// only the non-zero buckets are decoded (no whole histogram per interval).
fn buckets(dists: &[&Dist]) -> Result<Vec<(u64, u64)>, String> {
    let mut sum = BTreeMap::new();
    for d in dists {
        for (value, n) in d.buckets().map_err(|e| e.to_string())? {
            *sum.entry(highest_equivalent(value)).or_insert(0) += n;
        }
    }
    Ok(sum.into_iter().collect())
}

/// Percentile curve points from p0 out to p99.999 (0.1 nine apart), as for an HdrHistogram plot.
fn percentile_curve(counts: &[u64], scale: &Scale) -> Vec<(f64, u64)> {
    (0..=50)
        .filter_map(|k| {
            let q = 1.0 - 10f64.powf(-f64::from(k) / 10.0);
            let stat = if k == 0 { Stat::Quantile(1e-9) } else { Stat::Quantile(q) };
            statistic(counts, scale, stat).map(|v| (q * 100.0, v))
        })
        .collect()
}

/// Seed of one rule instance: the policy's seed and the instance's name, so a verdict does not
/// depend on the other rules.
fn instance_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

fn judge(policy: &Policy, inst: &Instance<'_>, level: f64) -> RuleResult {
    let rule = inst.rule;
    let name = format!("{} {}", scope_name(&rule.metric, inst.site.as_deref()), rule.stat.name());
    let Data { base, cand, scale, .. } = &*inst.data;
    let base_point = statistic(&base.pooled(scale), scale, rule.stat).map(|v| v as f64);
    let cand_point = statistic(&cand.pooled(scale), scale, rule.stat).map(|v| v as f64);
    let mut rng = Rng::new(instance_seed(policy.seed, &name));
    let b = replicates(base, scale, &[rule.stat], policy.resamples, &mut rng).remove(0);
    let c = replicates(cand, scale, &[rule.stat], policy.resamples, &mut rng).remove(0);
    let change = base_point.zip(cand_point).map(|(b, c)| c / b - 1.0);
    let mut result = RuleResult {
        name,
        kind: "max-increase",
        policy_line: Some(rule.line),
        metric: rule.metric.name(),
        site: inst.site.clone(),
        stat: Some(rule.stat.name()),
        limit: String::new(),
        unit: "ns",
        baseline: base_point,
        candidate: cand_point,
        change,
        interval: None,
        confidence: Some(level),
        interval_method: None,
        verdict: Verdict::Inconclusive,
        detail: String::new(),
    };
    // A budget is judged on the candidate alone; a relative rule needs both sides.
    let thin = match rule.limit {
        Limit::Budget(_) => !cand.resamplable(),
        Limit::MaxIncrease(_) => !base.resamplable() || !cand.resamplable(),
    };
    let delta = base_point.zip(cand_point).map_or(0.0, |(b, c)| c - b);
    match rule.limit {
        Limit::MaxIncrease(limit) => {
            result.limit = format!("+{}%", trim(limit * 100.0));
            let mut ratios: Vec<f64> = b.iter().zip(&c).map(|(b, c)| c / b - 1.0).collect();
            (result.interval, result.interval_method) = split(change.and_then(|p| interval_at(&mut ratios, p, level)));
            (result.verdict, result.detail) = if base_point == Some(0.0) {
                (Verdict::Inconclusive, "the baseline's figure is zero: no relative change can be taken".into())
            } else if delta < nanos(rule.min_effect) {
                (
                    Verdict::Pass,
                    format!("changed by less than the minimum effect of {}", fmt_nanos(nanos(rule.min_effect))),
                )
            } else if thin {
                (Verdict::Inconclusive, THIN.into())
            } else {
                match result.interval {
                    Some([lo, _]) if lo > limit => (
                        Verdict::Regression,
                        format!("grew by more than {} with {:.1}% confidence", result.limit, level * 100.0),
                    ),
                    Some([_, hi]) if hi <= limit => (Verdict::Pass, format!("within {}", result.limit)),
                    Some(_) => (Verdict::Inconclusive, format!("the interval straddles {}", result.limit)),
                    None => (Verdict::Inconclusive, "no resample had data".into()),
                }
            };
        }
        Limit::Budget(budget) => {
            result.kind = "budget";
            result.limit = fmt_nanos(nanos(budget));
            let mut c = c;
            (result.interval, result.interval_method) = split(cand_point.and_then(|p| interval_at(&mut c, p, level)));
            let budget = nanos(budget);
            (result.verdict, result.detail) = match result.interval {
                _ if thin => (Verdict::Inconclusive, THIN.into()),
                Some([lo, _]) if lo > budget => (Verdict::Regression, format!("over the budget of {}", result.limit)),
                Some([_, hi]) if hi <= budget => (Verdict::Pass, format!("under the budget of {}", result.limit)),
                Some(_) => (Verdict::Inconclusive, format!("the interval straddles the budget of {}", result.limit)),
                None => (Verdict::Inconclusive, "no resample had data".into()),
            };
        }
    }
    result
}

/// An interval and its method, as a rule's result holds them.
fn split(interval: Option<(f64, f64, Method)>) -> (Option<[f64; 2]>, Option<Method>) {
    interval.map_or((None, None), |(lo, hi, m)| (Some([lo, hi]), Some(m)))
}

const THIN: &str = "one block of data per side: record several runs (`loopscope gate --runs N`) or shorter intervals";

/// Stalls that count: at a line of the program, not caused by the host.
fn counted(g: &StallGroup) -> bool {
    g.category != StallCategory::Preempted && g.late < g.count && g.blocking_site.is_some()
}

/// What makes a blocking call the same across builds: its function (lines move when code is
/// edited) and the category.
fn stall_key(g: &StallGroup) -> (String, StallCategory) {
    (g.blocking_function.clone().or_else(|| g.blocking_site.clone()).unwrap_or_default(), g.category)
}

fn stall_rules(policy: &Policy, baseline: &[Run], candidate: &[Run]) -> Vec<RuleResult> {
    let rules = &policy.stalls;
    let count =
        |runs: &[Run]| runs.iter().flat_map(|r| &r.stalls).filter(|g| counted(g)).map(|g| g.count).sum::<u64>() as f64;
    let stall_result = |name: String, kind: &'static str, limit: String, verdict: Verdict, detail: String| RuleResult {
        limit,
        baseline: Some(count(baseline)),
        candidate: Some(count(candidate)),
        ..RuleResult::exact(name, kind, "stalls", "stalls", verdict, detail)
    };
    let mut out = Vec::new();
    if rules.forbid_new {
        let known: BTreeSet<_> =
            baseline.iter().flat_map(|r| &r.stalls).filter(|g| counted(g)).map(stall_key).collect();
        let mut new: BTreeMap<(String, StallCategory), (u64, String)> = BTreeMap::new();
        for g in candidate.iter().flat_map(|r| &r.stalls).filter(|g| counted(g)) {
            let key = stall_key(g);
            if !known.contains(&key) {
                let e = new.entry(key).or_insert((0, g.blocking_site.clone().unwrap_or_default()));
                e.0 += g.count;
            }
        }
        let (verdict, detail) = if new.is_empty() {
            (Verdict::Pass, "no stall at a blocking call the baseline did not have".into())
        } else {
            let list: Vec<String> =
                new.iter().map(|((_, cat), (n, site))| format!("{n}× {} at {site}", cat.name())).collect();
            (Verdict::Regression, format!("new stalls: {}", list.join("; ")))
        };
        out.push(stall_result("stalls: new blocking calls".into(), "stalls-new", "0".into(), verdict, detail));
    }
    if let Some(max) = rules.max_per_run {
        let worst = candidate
            .iter()
            .map(|r| (r.stalls.iter().filter(|g| counted(g)).map(|g| g.count).sum::<u64>(), &r.path))
            .max_by_key(|(n, _)| *n);
        let (verdict, detail) = match worst {
            Some((n, path)) if n > max => {
                (Verdict::Regression, format!("{} has {n} stalls, more than {max}", path.display()))
            }
            _ => (Verdict::Pass, format!("no candidate run has more than {max} stalls")),
        };
        out.push(stall_result("stalls: per run".into(), "stalls-max-per-run", max.to_string(), verdict, detail));
    }
    for pattern in &rules.forbid_at {
        let at: Vec<&StallGroup> = candidate
            .iter()
            .flat_map(|r| &r.stalls)
            .filter(|g| counted(g) && g.blocking_site.as_deref().is_some_and(|s| blocking_site_matches(s, pattern)))
            .collect();
        let n: u64 = at.iter().map(|g| g.count).sum();
        let (verdict, detail) = if n == 0 {
            (Verdict::Pass, format!("no stall at {pattern}"))
        } else {
            (Verdict::Regression, format!("{n} stalls at {pattern} ({})", at[0].category.name()))
        };
        out.push(stall_result(format!("stalls at {pattern}"), "stalls-at", "0".into(), verdict, detail));
    }
    out
}

fn task_rules(policy: &Policy, baseline: &[Run], candidate: &[Run]) -> Vec<RuleResult> {
    if !policy.tasks.forbid_growth {
        return Vec::new();
    }
    let growing = |runs: &[Run]| runs.iter().map(|r| r.growing.len()).sum::<usize>() as f64;
    let worst = candidate
        .iter()
        .flat_map(|r| r.growing.iter().map(move |g| (g, &r.path)))
        .max_by(|a, b| a.0.growth.per_second.total_cmp(&b.0.growth.per_second));
    let (verdict, detail) = match worst {
        Some((g, path)) => (
            Verdict::Regression,
            format!(
                "tasks from {} grow by {:.1}/s ({} → {}) in {}",
                g.spawn_site.as_deref().unwrap_or("an unknown site"),
                g.growth.per_second,
                g.growth.first_third_max,
                g.growth.last_third_min,
                path.display()
            ),
        ),
        None => (Verdict::Pass, "no spawn site's tasks kept growing".into()),
    };
    vec![RuleResult {
        limit: "0".into(),
        baseline: Some(growing(baseline)),
        candidate: Some(growing(candidate)),
        ..RuleResult::exact("tasks: growth".into(), "tasks-growth", "tasks", "sites", verdict, detail)
    }]
}

/// Whether a blocking site (`/abs/path/file.rs:line`) matches a pattern (`file.rs:line` or a
/// file), at a path boundary.
fn blocking_site_matches(site: &str, pattern: &str) -> bool {
    let file = site.rsplit_once(':').map_or(site, |(f, _)| f);
    [site, file].iter().any(|s| ends_at_path_boundary(s, pattern))
}

/// A duration as the outcome's figures hold it: nanoseconds, as a float.
fn nanos(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64
}

/// A figure in nanoseconds (as the outcome holds them) in a readable unit: `1.23µs`, `20.1ms`.
pub fn fmt_nanos(v: f64) -> String {
    loopscope_core::units::fmt_duration(std::time::Duration::from_nanos(v.max(0.0) as u64))
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_patterns_match_at_path_boundaries() {
        assert!(site_matches("src/main.rs", 10, 5, "src/main.rs:10"));
        assert!(site_matches("/w/src/main.rs", 10, 5, "main.rs:10:5"));
        assert!(site_matches("/w/src/main.rs", 10, 5, "main.rs"));
        assert!(!site_matches("/w/src/domain.rs", 10, 5, "main.rs"));
        assert!(!site_matches("src/main.rs", 100, 5, "main.rs:10"));
        assert!(blocking_site_matches("/w/src/db.rs:42", "src/db.rs:42"));
        assert!(blocking_site_matches("/w/src/db.rs:42", "db.rs"));
        assert!(!blocking_site_matches("/w/src/db.rs:420", "db.rs:42"));
    }

    fn run(growing: Vec<loopscope_core::report::TaskGrowth>) -> Run {
        Run {
            path: "r.loopscope".into(),
            header: loopscope_core::model::Header {
                format_version: loopscope_core::model::FORMAT_VERSION,
                loopscope_version: "0".into(),
                flavor: loopscope_core::model::Flavor::MultiThread,
                workers: 2,
                host: "h".into(),
                pid: 1,
                start_unix_ns: 0,
                command_line: vec!["server".into()],
                workload: None,
                interval_ns: 1_000_000_000,
                slow_poll_ns: 100_000,
                schedule_latency: true,
                stall_threshold_ns: None,
            },
            sites: Vec::new(),
            intervals: Vec::new(),
            workload: None,
            stalls: Vec::new(),
            growing,
        }
    }

    #[test]
    fn a_candidate_whose_tasks_pile_up_fails_when_growth_is_forbidden() {
        let growth = loopscope_core::report::TaskGrowth {
            spawn_site: Some("src/server.rs:88:9".into()),
            growth: loopscope_core::growth::Growth {
                per_second: 12.0,
                first_third_max: 100,
                last_third_min: 400,
                over: std::time::Duration::from_secs(30),
            },
        };
        let mut policy = Policy::parse("[tasks]\nforbid_growth = true\n", "p.toml").unwrap();
        let r = task_rules(&policy, &[run(vec![])], &[run(vec![growth.clone()])]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].verdict, Verdict::Regression);
        assert!(r[0].detail.contains("src/server.rs:88:9") && r[0].detail.contains("12.0/s"), "{}", r[0].detail);
        assert_eq!(task_rules(&policy, &[run(vec![])], &[run(vec![])])[0].verdict, Verdict::Pass);
        policy.tasks.forbid_growth = false;
        assert!(task_rules(&policy, &[run(vec![])], &[run(vec![growth])]).is_empty());
    }

    /// A run of 20 intervals of 1,000 polls each, its polls taking `poll_ns` (± a little, varying
    /// by interval), its worker `cpu_per_poll_ns` of CPU per poll and waiting `host_share` of
    /// the time it wanted for a CPU.
    fn storm_run(seed: u64, poll_ns: u64, cpu_per_poll_ns: u64, host_share: f64) -> Run {
        use loopscope_core::dist::DistAcc;
        use loopscope_core::model::{Interval, SiteDecl, SiteInterval, WorkerInterval};
        let mut rng = crate::stats::Rng::new(seed);
        let mut r = run(Vec::new());
        r.sites = vec![SiteDecl { id: 0, file: "src/storm.rs".into(), line: 9, column: 5 }];
        for k in 0..20u64 {
            let jitter = |rng: &mut crate::stats::Rng, v: u64| v - v / 20 + rng.below((v / 10) as usize) as u64;
            let mut poll = DistAcc::new();
            for _ in 0..1_000 {
                poll.record_n_ns(jitter(&mut rng, poll_ns), 1);
            }
            let cpu_ns = jitter(&mut rng, cpu_per_poll_ns) * 1_000;
            let run_delay_ns = (cpu_ns as f64 * host_share / (1.0 - host_share)) as u64;
            let poll = poll.to_dist();
            r.intervals.push(Interval {
                index: k,
                start_ns: k * 100_000_000,
                end_ns: (k + 1) * 100_000_000,
                sites: vec![SiteInterval { site: 0, poll: poll.clone(), ..SiteInterval::default() }],
                // Preempted as often as it slept on the busy host; hardly ever on the quiet one.
                workers: vec![WorkerInterval {
                    worker: 0,
                    poll,
                    cpu_ns,
                    run_delay_ns: run_delay_ns * 2,
                    switches: 1_000,
                    preemptions: if host_share > 0.1 { 1_000 } else { 10 },
                    ..WorkerInterval::default()
                }],
                ..Interval::default()
            });
        }
        r
    }

    fn side(seed: u64, poll_ns: u64, cpu_per_poll_ns: u64, host_share: f64) -> Vec<Run> {
        (0..3).map(|i| storm_run(seed * 10 + i, poll_ns, cpu_per_poll_ns, host_share)).collect()
    }

    #[test]
    fn a_busy_host_sets_the_wall_time_rules_aside_and_cpu_per_poll_judges() {
        let policy = Policy::default_policy();
        // The host took half of each side's time; the candidate computes 50% more per poll,
        // its wall-time polls hidden in the noise.
        let o = check(&policy, &side(1, 40_000, 20_000, 0.5), &side(2, 40_000, 30_000, 0.5)).unwrap();
        assert_eq!(o.verdict, Verdict::Regression);
        assert!(!o.host.wall_time_judged);
        // Polls of 40 µs that computed 20 µs, their threads waiting for a CPU at least as long.
        assert!((0.45..0.55).contains(&o.host.baseline.unwrap()), "{:?}", o.host);
        let poll = o.rules.iter().find(|r| r.metric == "poll").unwrap();
        assert_eq!(poll.verdict, Verdict::NotJudged);
        assert!(poll.detail.starts_with("the host took "), "{}", poll.detail);
        let cpu = o.rules.iter().find(|r| r.metric == "cpu").unwrap();
        assert_eq!(cpu.verdict, Verdict::Regression, "{}", cpu.detail);
        assert!((cpu.change.unwrap() - 0.5).abs() < 0.05, "{:?}", cpu.change);
        // Only the judged rules share the confidence.
        assert_eq!(o.statistical_rules, 1);

        // No change: passes on CPU per poll, although the poll rule is left aside.
        let o = check(&policy, &side(1, 40_000, 20_000, 0.5), &side(3, 40_000, 20_000, 0.5)).unwrap();
        assert_eq!(o.verdict, Verdict::Pass, "{:#?}", o.rules);

        // A policy without a CPU rule cannot pass on a busy host.
        let wall_only =
            Policy::parse("[[rule]]\nmetric = \"poll\"\nstat = \"p90\"\nmax_increase = \"10%\"\n", "p.toml").unwrap();
        let o = check(&wall_only, &side(1, 40_000, 20_000, 0.5), &side(3, 40_000, 20_000, 0.5)).unwrap();
        assert_eq!(o.verdict, Verdict::Inconclusive);
        assert_eq!(o.rules[0].verdict, Verdict::NotJudged);
        let host = o.rules.iter().find(|r| r.kind == "host").expect("a result that says why");
        assert_eq!(host.verdict, Verdict::Inconclusive);
        assert_eq!(o.statistical_rules, 0);

        // The median is judged while the host took less than half of the polls' time: a minority
        // of preempted polls does not move it.
        let median =
            Policy::parse("[[rule]]\nmetric = \"poll\"\nstat = \"p50\"\nmax_increase = \"10%\"\n", "p.toml").unwrap();
        let o = check(&median, &side(1, 40_000, 20_000, 0.2), &side(4, 60_000, 20_000, 0.2)).unwrap();
        assert!(!o.host.wall_time_judged && o.host.baseline.unwrap() < 0.5, "{:?}", o.host);
        assert_eq!(o.rules[0].verdict, Verdict::Regression, "{:#?}", o.rules);

        // A quiet host: the wall-time rules are judged as ever (the polls were off the CPU, but
        // their threads hardly waited for one: they blocked).
        let o = check(&wall_only, &side(1, 40_000, 20_000, 0.02), &side(4, 60_000, 20_000, 0.02)).unwrap();
        assert!(o.host.wall_time_judged);
        assert!(o.host.candidate.unwrap() < 0.05, "{:?}", o.host);
        assert_eq!(o.verdict, Verdict::Regression, "{:#?}", o.rules);

        // Polls off their CPU and long run-queue waits, but hardly a preemption: a program that
        // blocks and wakes up (on a virtual machine each wake-up waits), judged.
        let mut blocking = side(1, 40_000, 20_000, 0.5);
        for w in blocking.iter_mut().flat_map(|r| &mut r.intervals).flat_map(|i| &mut i.workers) {
            w.preemptions = 5;
        }
        let o = check(&wall_only, &blocking, &blocking.clone()).unwrap();
        assert!(o.host.wall_time_judged && o.host.baseline.unwrap() < 0.01, "{:?}", o.host);

        // Only the candidate's polls off their CPU: maybe its own doing, judged.
        let o = check(&wall_only, &side(1, 40_000, 20_000, 0.02), &side(4, 60_000, 20_000, 0.5)).unwrap();
        assert!(o.host.wall_time_judged, "{:?}", o.host);
        assert_eq!(o.verdict, Verdict::Regression, "{:#?}", o.rules);
    }

    #[test]
    fn the_hosts_bound_is_a_percentage_named_in_errors() {
        let p = Policy::parse("[host]\nmax_share = \"25%\"\n", "p.toml").unwrap();
        assert!((p.host_max_share - 0.25).abs() < 1e-9);
        for bad in ["\"0%\"", "\"150%\"", "\"half\""] {
            let e = Policy::parse(&format!("[host]\nmax_share = {bad}\n"), "p.toml").unwrap_err().to_string();
            assert!(e.starts_with("p.toml:2"), "{e}");
            assert!(e.contains("max_share"), "{e}");
        }
        let e = Policy::parse(
            "[[rule]]\nmetric = \"cpu\"\nsite = \"src/a.rs\"\nstat = \"p50\"\nmax_increase = \"5%\"\n",
            "p.toml",
        );
        let runs = side(1, 40_000, 20_000, 0.0);
        let e = check(&e.unwrap(), &runs, &runs).unwrap_err().to_string();
        assert!(e.contains("cpu is measured for the whole runtime"), "{e}");
    }
}
