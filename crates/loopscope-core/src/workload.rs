//! The figures a workload measures about itself, reported beside the recorder's.

use serde::{Deserialize, Serialize};

use crate::dist::{Dist, DistAcc, Summary};

/// One scalar figure (e.g. throughput).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Short name, e.g. `wakeups_per_s`.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit, e.g. `1/s`.
    pub unit: String,
}

/// One distribution of durations the workload measured (e.g. timer lateness).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedDist {
    /// Short name, e.g. `timer_lateness`.
    pub name: String,
    /// The distribution.
    pub dist: Dist,
}

/// What a workload returns from its `run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// The workload's name as `loopscope run` knows it.
    pub name: String,
    /// Scalar figures.
    pub metrics: Vec<Metric>,
    /// Distributions.
    pub distributions: Vec<NamedDist>,
}

impl WorkloadResult {
    /// An empty result for the named workload.
    pub fn new(name: impl Into<String>) -> Self {
        WorkloadResult { name: name.into(), metrics: Vec::new(), distributions: Vec::new() }
    }

    /// Adds a scalar figure.
    pub fn metric(mut self, name: &str, value: f64, unit: &str) -> Self {
        self.metrics.push(Metric { name: name.into(), value, unit: unit.into() });
        self
    }

    /// Adds a distribution.
    pub fn distribution(mut self, name: &str, dist: &DistAcc) -> Self {
        self.distributions.push(NamedDist { name: name.into(), dist: dist.to_dist() });
        self
    }

    /// Looks up a scalar figure by name.
    pub fn get_metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }

    /// Percentile summary of a named distribution, if present and decodable.
    pub fn summary(&self, name: &str) -> Option<Summary> {
        let d = self.distributions.iter().find(|d| d.name == name)?;
        Some(d.dist.decode().ok()?.summary())
    }
}

/// Why a catalogue workload's scenario (`blocking`, `hangs`) could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Setting up the scenario failed (a temp file, a loopback socket).
    #[error("setting up {scenario}: {source}")]
    Setup {
        /// The scenario.
        scenario: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A task of the scenario failed in a way the scenario does not mean to show.
    #[error("{scenario}: {message}")]
    Task {
        /// The scenario.
        scenario: &'static str,
        /// What happened.
        message: String,
    },
}
