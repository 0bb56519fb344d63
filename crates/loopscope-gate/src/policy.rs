//! The gate's policy file: what is compared, against which limits, with which confidence.
//!
//! The format is TOML, documented in `docs/ci-gates.md`; `default-policy.toml` (compiled in) is
//! the default and the commented example. Every error names the file, the line and the key.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::stats::Stat;

/// The default policy, with comments explaining every key.
pub const DEFAULT_POLICY: &str = include_str!("../default-policy.toml");

/// A policy file that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The policy file (`<default policy>` for the built-in one).
    pub file: String,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The key, e.g. `rule[2].max_increase`.
    pub key: Option<String>,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What an inconclusive verdict does to the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inconclusive {
    /// Exit code 3 (the default).
    Exit3,
    /// Treated as a pass (exit 0).
    Pass,
    /// Treated as a regression (exit 1).
    Fail,
}

impl Inconclusive {
    /// Parses `exit3`, `pass` or `fail`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exit3" => Some(Inconclusive::Exit3),
            "pass" => Some(Inconclusive::Pass),
            "fail" => Some(Inconclusive::Fail),
            _ => None,
        }
    }
}

/// A distribution the gate can compare.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Poll durations.
    Poll,
    /// Scheduling latency (wake to poll), per task.
    Sched,
    /// The lean profile's lag probe.
    Lag,
    /// CPU time per poll: each interval's CPU time of the workers (the kernel's account, which
    /// time spent waiting for a CPU does not inflate) over its polls, weighted by its polls.
    Cpu,
    /// A distribution the workload measured itself.
    Workload(String),
}

impl Metric {
    /// Parses `poll`, `sched`, `lag`, `cpu` or `workload.NAME`.
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "poll" => Some(Metric::Poll),
            "sched" => Some(Metric::Sched),
            "lag" => Some(Metric::Lag),
            "cpu" => Some(Metric::Cpu),
            _ => s.strip_prefix("workload.").filter(|n| !n.is_empty()).map(|n| Metric::Workload(n.into())),
        }
    }

    /// The name as written in a policy.
    pub fn name(&self) -> String {
        match self {
            Metric::Poll => "poll".into(),
            Metric::Sched => "sched".into(),
            Metric::Lag => "lag".into(),
            Metric::Cpu => "cpu".into(),
            Metric::Workload(n) => format!("workload.{n}"),
        }
    }

    /// Whether the metric is measured in wall time, which a host that keeps the program's
    /// threads waiting for a CPU inflates (every metric but `cpu`).
    pub fn wall_time(&self) -> bool {
        !matches!(self, Metric::Cpu)
    }
}

/// The limit of a rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// The candidate may exceed the baseline by at most this fraction (0.1 = 10%).
    MaxIncrease(f64),
    /// The candidate must stay under this.
    Budget(Duration),
}

/// One rule on a distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// 1-based line of the rule in the policy file.
    pub line: usize,
    /// Position among the rules, from 1.
    pub number: usize,
    /// What is compared.
    pub metric: Metric,
    /// A spawn site pattern (`file:line`, `file:line:col`, a file, or `*`); `None`: runtime-wide.
    pub site: Option<String>,
    /// The statistic.
    pub stat: Stat,
    /// The limit.
    pub limit: Limit,
    /// Changes smaller than this never count as a regression.
    pub min_effect: Duration,
    /// Skip the rule when the recordings lack the metric.
    pub optional: bool,
}

/// The deterministic rules on stalls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StallRules {
    /// Fail on a stall at a blocking call the baseline never stalled at.
    pub forbid_new: bool,
    /// Fail when any candidate run has more stalls than this.
    pub max_per_run: Option<u64>,
    /// Fail on any candidate stall at these blocking sites.
    pub forbid_at: Vec<String>,
}

/// The rules on tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRules {
    /// Fail when a candidate run has a spawn site whose alive tasks kept growing (a leak; see
    /// `loopscope_core::growth`).
    pub forbid_growth: bool,
}

/// A parsed, validated policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Where it came from, for messages.
    pub source: String,
    /// Family-wise confidence.
    pub confidence: f64,
    /// Bootstrap resamples per rule.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// Intervals starting before this are left out.
    pub warmup: Duration,
    /// What an inconclusive verdict does.
    pub inconclusive: Inconclusive,
    /// Rules on distributions.
    pub rules: Vec<Rule>,
    /// Rules on stalls.
    pub stalls: StallRules,
    /// Rules on tasks.
    pub tasks: TaskRules,
    /// The most of the poll time the host may take (polls preempted) on both sides for
    /// rules on wall-time metrics to be judged (`[host] max_share`).
    pub host_max_share: f64,
}

/// Default of `[host] max_share`.
pub const DEFAULT_HOST_MAX_SHARE: f64 = 0.03;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    gate: RawGate,
    #[serde(default)]
    stalls: RawStalls,
    #[serde(default)]
    tasks: RawTasks,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    max_share: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTasks {
    forbid_growth: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGate {
    confidence: Option<Spanned<f64>>,
    resamples: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    warmup: Option<Spanned<String>>,
    inconclusive: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStalls {
    forbid_new: Option<bool>,
    max_per_run: Option<Spanned<i64>>,
    forbid_at: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    metric: Option<Spanned<String>>,
    site: Option<Spanned<String>>,
    stat: Option<Spanned<String>>,
    max_increase: Option<Spanned<String>>,
    budget: Option<Spanned<String>>,
    min_effect: Option<Spanned<String>>,
    optional: Option<bool>,
}

/// Default of `min_effect`.
const DEFAULT_MIN_EFFECT: Duration = Duration::from_micros(1);

/// The longest duration a policy may give: what a recording measures, 2^64 - 1 nanoseconds
/// (about 584 years). Longer ones would wrap when compared with recorded nanoseconds.
pub const MAX_DURATION: Duration = Duration::from_nanos(u64::MAX);

/// A duration in a policy: humantime's syntax (`2ms`, `500us`, `1.5s`).
const DURATION_SYNTAX: &str = "a duration such as \"2ms\" or \"500us\"";

impl Policy {
    /// The built-in default policy.
    pub fn default_policy() -> Policy {
        Policy::parse(DEFAULT_POLICY, "<default policy>").expect("the default policy is valid")
    }

    /// Reads and parses a policy file.
    pub fn read(path: &Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: file.clone(),
            line: None,
            key: None,
            message: format!("cannot read the policy file: {e}"),
        })?;
        Policy::parse(&text, &file)
    }

    /// Parses policy text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError {
            file: file.into(),
            line: e.span().map(|s| line_of(text, s.start)),
            key: None,
            message: e.message().to_string(),
        })?;
        let v = Values { text, file };
        let (g, st) = (&raw.gate, &raw.stalls);
        let confidence = v.fraction("gate.confidence", &g.confidence, 0.5, 1.0)?.unwrap_or(0.95);
        let resamples = v.whole("gate.resamples", &g.resamples, 100, 1_000_000)?.unwrap_or(2_000) as usize;
        let seed = v.whole("gate.seed", &g.seed, 0, u64::MAX)?.unwrap_or(1);
        let warmup = v.duration("gate.warmup", &g.warmup, Duration::ZERO)?.unwrap_or_default();
        let inconclusive = v
            .choice("gate.inconclusive", &g.inconclusive, Inconclusive::parse, INCONCLUSIVE)?
            .unwrap_or(Inconclusive::Exit3);
        let stalls = StallRules {
            forbid_new: st.forbid_new.unwrap_or(true),
            max_per_run: v.whole("stalls.max_per_run", &st.max_per_run, 0, u64::MAX)?,
            forbid_at: st.forbid_at.clone().unwrap_or_default(),
        };
        let tasks = TaskRules { forbid_growth: raw.tasks.forbid_growth.unwrap_or(false) };
        let host_max_share = match &raw.host.max_share {
            Some(m) => match v.percent("host.max_share", &Some(m.clone()))? {
                Some(x) if x <= 1.0 => x,
                _ => {
                    return Err(v.error(
                        m.span(),
                        "host.max_share",
                        format!(
                            "expected a percentage above 0 and at most 100% such as \"10%\", found {:?}",
                            m.get_ref()
                        ),
                    ));
                }
            },
            None => DEFAULT_HOST_MAX_SHARE,
        };
        let rules = raw.rule.iter().enumerate().map(|(i, r)| v.rule(i + 1, r)).collect::<Result<_, _>>()?;
        Ok(Policy {
            source: file.into(),
            confidence,
            resamples,
            seed,
            warmup,
            inconclusive,
            rules,
            stalls,
            tasks,
            host_max_share,
        })
    }
}

const INCONCLUSIVE: &str = "\"exit3\", \"pass\" or \"fail\"";
const METRICS: &str = "\"poll\", \"sched\", \"lag\", \"cpu\" or \"workload.NAME\"";
const STATS: &str = "\"p50\", \"p90\", \"p99\", \"p99.9\" (any pN) or \"max\"";

/// Checks the values of a policy's text, one helper per kind of value; every error names the
/// file, the line of the value and its key.
struct Values<'t> {
    text: &'t str,
    file: &'t str,
}

impl Values<'_> {
    fn error(&self, span: std::ops::Range<usize>, key: &str, message: String) -> PolicyError {
        PolicyError {
            file: self.file.into(),
            line: Some(line_of(self.text, span.start)),
            key: Some(key.into()),
            message,
        }
    }

    /// A number from `low` up to (not including) `high`.
    fn fraction(&self, key: &str, v: &Option<Spanned<f64>>, low: f64, high: f64) -> Result<Option<f64>, PolicyError> {
        v.as_ref()
            .map(|v| match *v.get_ref() {
                x if (low..high).contains(&x) => Ok(x),
                x => Err(self.error(
                    v.span(),
                    key,
                    format!("expected a number from {low} up to (not including) {high}, found {x}"),
                )),
            })
            .transpose()
    }

    /// A whole number from `low` to `high` (TOML integers are signed 64-bit).
    fn whole(&self, key: &str, v: &Option<Spanned<i64>>, low: u64, high: u64) -> Result<Option<u64>, PolicyError> {
        v.as_ref()
            .map(|v| match u64::try_from(*v.get_ref()) {
                Ok(x) if (low..=high).contains(&x) => Ok(x),
                _ if high == u64::MAX => {
                    Err(self.error(v.span(), key, format!("expected a whole number ≥ {low}, found {}", v.get_ref())))
                }
                _ => Err(self.error(
                    v.span(),
                    key,
                    format!("expected a whole number from {low} to {high}, found {}", v.get_ref()),
                )),
            })
            .transpose()
    }

    /// A duration of at least `low` and at most [`MAX_DURATION`].
    fn duration(&self, key: &str, v: &Option<Spanned<String>>, low: Duration) -> Result<Option<Duration>, PolicyError> {
        v.as_ref()
            .map(|v| {
                let s = v.get_ref();
                let fail = |m: String| self.error(v.span(), key, m);
                let d = humantime::parse_duration(s)
                    .map_err(|e| fail(format!("expected {DURATION_SYNTAX}, found {s:?} ({e})")))?;
                if d > MAX_DURATION {
                    Err(fail(format!(
                        "expected a duration of at most {}.{:09}s (2^64 - 1 nanoseconds, the longest a recording \
                         measures), found {s:?}",
                        MAX_DURATION.as_secs(),
                        MAX_DURATION.subsec_nanos()
                    )))
                } else if d < low && low == Duration::from_nanos(1) {
                    Err(fail(format!("expected a duration above zero, found {s:?}")))
                } else if d < low {
                    Err(fail(format!(
                        "expected a duration of at least {}, found {s:?}",
                        humantime::format_duration(low)
                    )))
                } else {
                    Ok(d)
                }
            })
            .transpose()
    }

    /// A percentage above zero (`"10%"` → 0.1).
    fn percent(&self, key: &str, v: &Option<Spanned<String>>) -> Result<Option<f64>, PolicyError> {
        v.as_ref()
            .map(|v| {
                let s = v.get_ref();
                let pct = s.trim().strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok());
                match pct {
                    Some(p) if p > 0.0 && p.is_finite() => Ok(p / 100.0),
                    _ => Err(self.error(
                        v.span(),
                        key,
                        format!("expected a percentage above 0 such as \"10%\", found {s:?}"),
                    )),
                }
            })
            .transpose()
    }

    /// One of the names `parse` knows (`expected` lists them).
    fn choice<T>(
        &self,
        key: &str,
        v: &Option<Spanned<String>>,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, PolicyError> {
        v.as_ref()
            .map(|v| {
                parse(v.get_ref())
                    .ok_or_else(|| self.error(v.span(), key, format!("expected {expected}, found {:?}", v.get_ref())))
            })
            .transpose()
    }

    /// A value the rule must have.
    fn required<T>(&self, rule: &Spanned<RawRule>, key: &str, v: Option<T>, expected: &str) -> Result<T, PolicyError> {
        v.ok_or_else(|| self.error(rule.span(), key, format!("missing; expected {expected}")))
    }

    /// The `number`th `[[rule]]`.
    fn rule(&self, number: usize, spanned: &Spanned<RawRule>) -> Result<Rule, PolicyError> {
        let r = spanned.get_ref();
        let key = |k: &str| format!("rule[{number}].{k}");
        let metric = self.choice(&key("metric"), &r.metric, Metric::parse, METRICS)?;
        let metric = self.required(spanned, &key("metric"), metric, METRICS)?;
        let stat = self.choice(&key("stat"), &r.stat, Stat::parse, STATS)?;
        let stat = self.required(spanned, &key("stat"), stat, STATS)?;
        let max_increase = self.percent(&key("max_increase"), &r.max_increase)?;
        let budget = self.duration(&key("budget"), &r.budget, Duration::from_nanos(1))?;
        let limit = match (max_increase, budget) {
            (Some(m), None) => Limit::MaxIncrease(m),
            (None, Some(b)) => Limit::Budget(b),
            (Some(_), Some(_)) => {
                let span = r.max_increase.as_ref().map_or(spanned.span(), Spanned::span);
                return Err(self.error(
                    span,
                    &key("max_increase"),
                    "give either max_increase or budget, not both".into(),
                ));
            }
            (None, None) => {
                return Err(self.error(
                    spanned.span(),
                    &format!("rule[{number}]"),
                    "expected a limit: max_increase (e.g. \"10%\") or budget (e.g. \"2ms\")".into(),
                ));
            }
        };
        let min_effect = self.duration(&key("min_effect"), &r.min_effect, Duration::ZERO)?;
        let site = match &r.site {
            Some(s) if s.get_ref().trim().is_empty() => {
                return Err(self.error(
                    s.span(),
                    &key("site"),
                    "expected a spawn site such as \"src/main.rs:42\" or \"*\"".into(),
                ));
            }
            s => s.as_ref().map(|s| s.get_ref().clone()),
        };
        Ok(Rule {
            line: line_of(self.text, spanned.span().start),
            number,
            metric,
            site,
            stat,
            limit,
            min_effect: min_effect.unwrap_or(DEFAULT_MIN_EFFECT),
            optional: r.optional.unwrap_or(false),
        })
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PolicyError {
        Policy::parse(text, "gate.toml").unwrap_err()
    }

    #[test]
    fn task_growth_is_forbidden_when_asked() {
        assert!(!Policy::default_policy().tasks.forbid_growth);
        let p = Policy::parse("[tasks]\nforbid_growth = true\n", "gate.toml").unwrap();
        assert!(p.tasks.forbid_growth);
        let e = err("[tasks]\nforbid_grwoth = true\n");
        assert!(e.to_string().contains("forbid_grwoth"), "{e}");
    }

    #[test]
    fn the_default_policy_parses() {
        let p = Policy::default_policy();
        assert!(p.stalls.forbid_new);
        assert_eq!(p.rules.len(), 4);
        assert_eq!(p.rules[3].metric, Metric::Cpu);
        assert!((p.host_max_share - DEFAULT_HOST_MAX_SHARE).abs() < 1e-9);
        assert_eq!(p.rules[0].metric, Metric::Poll);
        assert_eq!(p.rules[0].limit, Limit::MaxIncrease(0.25));
        assert_eq!(p.rules[0].min_effect, Duration::from_micros(5));
        assert_eq!(p.inconclusive, Inconclusive::Exit3);
    }

    #[test]
    fn a_full_policy_parses() {
        let p = Policy::parse(
            r#"
[gate]
confidence = 0.99
resamples = 500
seed = 42
warmup = "200ms"
inconclusive = "pass"

[stalls]
forbid_new = false
max_per_run = 0
forbid_at = ["src/db.rs:42"]

[[rule]]
metric = "sched"
site = "src/main.rs:10"
stat = "p99.9"
budget = "2ms"

[[rule]]
metric = "workload.timer_lateness"
stat = "max"
max_increase = "12.5%"
min_effect = "50us"
"#,
            "gate.toml",
        )
        .unwrap();
        assert_eq!((p.confidence, p.resamples, p.seed), (0.99, 500, 42));
        assert_eq!(p.warmup, Duration::from_millis(200));
        assert_eq!(p.inconclusive, Inconclusive::Pass);
        assert_eq!(
            p.stalls,
            StallRules { forbid_new: false, max_per_run: Some(0), forbid_at: vec!["src/db.rs:42".into()] }
        );
        assert_eq!(p.rules[0].line, 14, "the line of its [[rule]] header");
        assert_eq!(p.rules[0].site.as_deref(), Some("src/main.rs:10"));
        assert_eq!(p.rules[0].stat.name(), "p99.9");
        assert_eq!(p.rules[0].limit, Limit::Budget(Duration::from_millis(2)));
        assert_eq!(p.rules[1].metric, Metric::Workload("timer_lateness".into()));
        assert_eq!(p.rules[1].limit, Limit::MaxIncrease(0.125));
        assert_eq!(p.rules[1].min_effect, Duration::from_micros(50));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let e = err("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\nmax_increase = \"10\"\n");
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("rule[1].max_increase"));
        assert!(e.to_string().starts_with("gate.toml:4: key `rule[1].max_increase`: expected a percentage"), "{e}");

        let e = err("[[rule]]\nmetric = \"polls\"\nstat = \"p99\"\nmax_increase = \"10%\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("rule[1].metric")));
        assert!(e.message.contains("\"polls\""), "{e}");

        let e = err("[[rule]]\nmetric = \"poll\"\nstat = \"p101\"\nbudget = \"1ms\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("rule[1].stat")));

        let e = err("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("rule[1]")));
        assert!(e.message.contains("max_increase"), "{e}");

        let e = err("[gate]\nconfidence = 1.5\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("gate.confidence")));

        let e = err("[gate]\ninconclusive = \"maybe\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("gate.inconclusive")));

        let e = err("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\nbudget = \"fast\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("rule[1].budget")));
    }

    #[test]
    fn durations_past_what_a_recording_measures_are_errors_not_wrapped() {
        // 18446744074 s is past 2^64 ns; it used to wrap to 290 ms.
        let e = err("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\nbudget = \"18446744074s\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("rule[1].budget")), "{e}");
        assert!(e.message.contains("at most") && e.message.contains("\"18446744074s\""), "{e}");
        let e =
            err("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\nmax_increase = \"10%\"\nmin_effect = \"18446744074s\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("rule[1].min_effect")), "{e}");
        let e = err("[gate]\nseed = 3\nwarmup = \"18446744074s\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("gate.warmup")), "{e}");
        assert!(e.to_string().starts_with("gate.toml:3: key `gate.warmup`: expected a duration of at most"), "{e}");
        // Too large for humantime itself.
        let e = err("[gate]\nwarmup = \"99999999999999999999999s\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("gate.warmup")), "{e}");

        // The longest that fits is taken as it is.
        let p = Policy::parse(
            "[gate]\nwarmup = \"18446744073s\"\n[[rule]]\nmetric = \"poll\"\nstat = \"max\"\nbudget = \"18446744073s\"\n",
            "gate.toml",
        )
        .unwrap();
        assert_eq!(p.warmup, Duration::from_secs(18_446_744_073));
        assert_eq!(p.rules[0].limit, Limit::Budget(Duration::from_secs(18_446_744_073)));
    }

    #[test]
    fn whole_numbers_and_fractions_out_of_range_name_their_key() {
        for (text, line, key) in [
            ("[gate]\nresamples = 99\n", 2, "gate.resamples"),
            ("[gate]\nresamples = 1000001\n", 2, "gate.resamples"),
            ("[gate]\n\nseed = -1\n", 3, "gate.seed"),
            ("[stalls]\nmax_per_run = -2\n", 2, "stalls.max_per_run"),
            ("[gate]\nconfidence = 0.4\n", 2, "gate.confidence"),
            ("[gate]\nconfidence = nan\n", 2, "gate.confidence"),
            ("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\nbudget = \"0s\"\n", 4, "rule[1].budget"),
            ("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\nmax_increase = \"inf%\"\n", 4, "rule[1].max_increase"),
            ("[[rule]]\nmetric = \"poll\"\nbudget = \"1ms\"\n", 1, "rule[1].stat"),
            ("[[rule]]\nstat = \"p99\"\nbudget = \"1ms\"\n", 1, "rule[1].metric"),
        ] {
            let e = err(text);
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{text:?}: {e}");
        }
    }

    #[test]
    fn malformed_toml_and_unknown_keys_are_reported_with_their_line() {
        let e = err("[gate]\nconfidence = \n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = err("[[rule]]\nmetric = \"poll\"\nstat = \"p99\"\nmax_increse = \"10%\"\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("max_increse"), "{e}");
        let e = err("[gates]\n");
        assert!(e.message.contains("gates"), "{e}");
    }
}
