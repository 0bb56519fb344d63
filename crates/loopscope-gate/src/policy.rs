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
    /// A distribution the workload measured itself.
    Workload(String),
}

impl Metric {
    /// Parses `poll`, `sched`, `lag` or `workload.NAME`.
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "poll" => Some(Metric::Poll),
            "sched" => Some(Metric::Sched),
            "lag" => Some(Metric::Lag),
            _ => s.strip_prefix("workload.").filter(|n| !n.is_empty()).map(|n| Metric::Workload(n.into())),
        }
    }

    /// The name as written in a policy.
    pub fn name(&self) -> String {
        match self {
            Metric::Poll => "poll".into(),
            Metric::Sched => "sched".into(),
            Metric::Lag => "lag".into(),
            Metric::Workload(n) => format!("workload.{n}"),
        }
    }
}

/// The limit of a rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// The candidate may exceed the baseline by at most this fraction (0.1 = 10%).
    MaxIncrease(f64),
    /// The candidate must stay under this many nanoseconds.
    Budget(u64),
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
    /// Changes smaller than this (nanoseconds) never count as a regression.
    pub min_effect_ns: u64,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    gate: RawGate,
    #[serde(default)]
    stalls: RawStalls,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
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
    metric: Spanned<String>,
    site: Option<Spanned<String>>,
    stat: Spanned<String>,
    max_increase: Option<Spanned<String>>,
    budget: Option<Spanned<String>>,
    min_effect: Option<Spanned<String>>,
    optional: Option<bool>,
}

/// Default of `min_effect`.
const DEFAULT_MIN_EFFECT_NS: u64 = 1_000;

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
        let at = |span: std::ops::Range<usize>, key: String, message: String| PolicyError {
            file: file.into(),
            line: Some(line_of(text, span.start)),
            key: Some(key),
            message,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError {
            file: file.into(),
            line: e.span().map(|s| line_of(text, s.start)),
            key: None,
            message: e.message().to_string(),
        })?;
        let g = &raw.gate;
        let confidence = match &g.confidence {
            None => 0.95,
            Some(c) if (0.5..1.0).contains(c.get_ref()) => *c.get_ref(),
            Some(c) => {
                return Err(at(
                    c.span(),
                    "gate.confidence".into(),
                    format!("expected a number from 0.5 up to (not including) 1, found {}", c.get_ref()),
                ));
            }
        };
        let resamples = match &g.resamples {
            None => 2000,
            Some(r) if (100..=1_000_000).contains(r.get_ref()) => *r.get_ref() as usize,
            Some(r) => {
                return Err(at(
                    r.span(),
                    "gate.resamples".into(),
                    format!("expected a whole number from 100 to 1000000, found {}", r.get_ref()),
                ));
            }
        };
        let seed = match &g.seed {
            None => 1,
            Some(s) if *s.get_ref() >= 0 => *s.get_ref() as u64,
            Some(s) => {
                return Err(at(
                    s.span(),
                    "gate.seed".into(),
                    format!("expected a whole number ≥ 0, found {}", s.get_ref()),
                ));
            }
        };
        let warmup = match &g.warmup {
            None => Duration::ZERO,
            Some(w) => parse_duration(w.get_ref()).map_err(|m| at(w.span(), "gate.warmup".into(), m))?,
        };
        let inconclusive = match &g.inconclusive {
            None => Inconclusive::Exit3,
            Some(i) => Inconclusive::parse(i.get_ref()).ok_or_else(|| {
                at(
                    i.span(),
                    "gate.inconclusive".into(),
                    format!("expected \"exit3\", \"pass\" or \"fail\", found {:?}", i.get_ref()),
                )
            })?,
        };
        let max_per_run = match &raw.stalls.max_per_run {
            None => None,
            Some(m) if *m.get_ref() >= 0 => Some(*m.get_ref() as u64),
            Some(m) => {
                return Err(at(
                    m.span(),
                    "stalls.max_per_run".into(),
                    format!("expected a whole number ≥ 0, found {}", m.get_ref()),
                ));
            }
        };
        let stalls = StallRules {
            forbid_new: raw.stalls.forbid_new.unwrap_or(true),
            max_per_run,
            forbid_at: raw.stalls.forbid_at.clone().unwrap_or_default(),
        };
        let mut rules = Vec::new();
        for (i, spanned) in raw.rule.iter().enumerate() {
            let number = i + 1;
            let r = spanned.get_ref();
            let key = |k: &str| format!("rule[{number}].{k}");
            let metric = Metric::parse(r.metric.get_ref()).ok_or_else(|| {
                at(
                    r.metric.span(),
                    key("metric"),
                    format!(
                        "expected \"poll\", \"sched\", \"lag\" or \"workload.NAME\", found {:?}",
                        r.metric.get_ref()
                    ),
                )
            })?;
            let stat = Stat::parse(r.stat.get_ref()).ok_or_else(|| {
                at(
                    r.stat.span(),
                    key("stat"),
                    format!(
                        "expected \"p50\", \"p90\", \"p99\", \"p99.9\" (any pN) or \"max\", found {:?}",
                        r.stat.get_ref()
                    ),
                )
            })?;
            let limit = match (&r.max_increase, &r.budget) {
                (Some(m), None) => Limit::MaxIncrease(
                    parse_percent(m.get_ref()).map_err(|msg| at(m.span(), key("max_increase"), msg))?,
                ),
                (None, Some(b)) => {
                    let d = parse_duration(b.get_ref()).map_err(|msg| at(b.span(), key("budget"), msg))?;
                    if d.is_zero() {
                        return Err(at(b.span(), key("budget"), "expected a duration above zero".into()));
                    }
                    Limit::Budget(d.as_nanos() as u64)
                }
                (Some(m), Some(_)) => {
                    return Err(at(
                        m.span(),
                        key("max_increase"),
                        "give either max_increase or budget, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(at(
                        spanned.span(),
                        format!("rule[{number}]"),
                        "expected a limit: max_increase (e.g. \"10%\") or budget (e.g. \"2ms\")".into(),
                    ));
                }
            };
            let min_effect_ns = match &r.min_effect {
                None => DEFAULT_MIN_EFFECT_NS,
                Some(m) => {
                    parse_duration(m.get_ref()).map_err(|msg| at(m.span(), key("min_effect"), msg))?.as_nanos() as u64
                }
            };
            let site = match &r.site {
                Some(s) if s.get_ref().trim().is_empty() => {
                    return Err(at(
                        s.span(),
                        key("site"),
                        "expected a spawn site such as \"src/main.rs:42\" or \"*\"".into(),
                    ));
                }
                s => s.as_ref().map(|s| s.get_ref().clone()),
            };
            rules.push(Rule {
                line: line_of(text, spanned.span().start),
                number,
                metric,
                site,
                stat,
                limit,
                min_effect_ns,
                optional: r.optional.unwrap_or(false),
            });
        }
        Ok(Policy { source: file.into(), confidence, resamples, seed, warmup, inconclusive, rules, stalls })
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration such as \"2ms\" or \"500us\", found {s:?} ({e})"))
}

/// `"10%"` → 0.1.
fn parse_percent(s: &str) -> Result<f64, String> {
    let expected = || format!("expected a percentage above 0 such as \"10%\", found {s:?}");
    let pct: f64 = s.trim().strip_suffix('%').ok_or_else(expected)?.trim().parse().map_err(|_| expected())?;
    if pct > 0.0 && pct.is_finite() { Ok(pct / 100.0) } else { Err(expected()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PolicyError {
        Policy::parse(text, "gate.toml").unwrap_err()
    }

    #[test]
    fn the_default_policy_parses() {
        let p = Policy::default_policy();
        assert!(p.stalls.forbid_new);
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.rules[0].metric, Metric::Poll);
        assert_eq!(p.rules[0].limit, Limit::MaxIncrease(0.25));
        assert_eq!(p.rules[0].min_effect_ns, 5_000);
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
        assert_eq!(p.rules[0].limit, Limit::Budget(2_000_000));
        assert_eq!(p.rules[1].metric, Metric::Workload("timer_lateness".into()));
        assert_eq!(p.rules[1].limit, Limit::MaxIncrease(0.125));
        assert_eq!(p.rules[1].min_effect_ns, 50_000);
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
