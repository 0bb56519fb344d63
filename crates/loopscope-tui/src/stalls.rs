//! The stalls view's rows: the window's stalls grouped by blocking line, category and spawn site
//! as the report groups them (or one row per stall), the program's first and the host's apart.

use loopscope_core::model::StallCategory;
use loopscope_core::stall::Origin;

use crate::timeline::{StallView, Timeline};

/// What the stalls view sorts its rows by (within each origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallSort {
    /// Total time blocked.
    Total,
    /// Number of stalls.
    Count,
    /// The latest first.
    Latest,
}

impl StallSort {
    /// The order `s` cycles through.
    pub const CYCLE: [StallSort; 3] = [StallSort::Total, StallSort::Count, StallSort::Latest];

    /// Label for the view's title.
    pub fn label(self) -> &'static str {
        match self {
            StallSort::Total => "total time",
            StallSort::Count => "count",
            StallSort::Latest => "latest",
        }
    }
}

/// One row: a group of stalls (or a single stall).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallRow {
    /// Whose fault.
    pub origin: Origin,
    /// The final category.
    pub category: StallCategory,
    /// The blocking line (or function), when one was named.
    pub blocking: Option<String>,
    /// The spawn site.
    pub site: Option<u32>,
    /// Stalls in the row.
    pub count: u64,
    /// Still blocking.
    pub ongoing: u64,
    /// Time blocked in all (an ongoing stall counts up to when it was seen).
    pub total_ns: u64,
    /// The longest.
    pub max_ns: u64,
    /// The latest stall of the row (a position in the timeline's stalls).
    pub latest: usize,
}

/// Whose fault one stall is.
pub fn origin(v: &StallView) -> Origin {
    Origin::of(v.category, v.stall.late, v.stall.blocking_site.is_some())
}

/// How long a stall blocked, or at least has so far.
fn blocked_ns(v: &StallView) -> u64 {
    v.duration_ns.unwrap_or_else(|| v.stall.detected_ns.saturating_sub(v.stall.started_ns))
}

/// The rows for the stalls at `members` (positions in the timeline's stalls, in the order raised):
/// grouped by line when `grouped`, else one each; the program's first, then those without a line,
/// then the host's, each part sorted by `sort`. Long polls seen by tokio-console (`console`) have
/// no origin to tell: they are all without a line.
pub fn rows(t: &Timeline, members: &[usize], grouped: bool, sort: StallSort, console: bool) -> Vec<StallRow> {
    let mut rows: Vec<StallRow> = Vec::new();
    let mut at: std::collections::HashMap<(Option<String>, StallCategory, Option<u32>), usize> =
        std::collections::HashMap::new();
    for &i in members {
        let v = &t.stalls[i];
        let blocking = v.stall.blocking_site.clone();
        let key = (blocking.clone(), v.category, v.stall.site);
        let d = blocked_ns(v);
        let existing = if grouped { at.get(&key).copied() } else { None };
        match existing {
            Some(r) => {
                let row = &mut rows[r];
                row.count += 1;
                row.ongoing += u64::from(v.duration_ns.is_none());
                row.total_ns = row.total_ns.saturating_add(d);
                row.max_ns = row.max_ns.max(d);
                if t.stalls[row.latest].stall.started_ns <= v.stall.started_ns {
                    row.latest = i;
                }
            }
            None => {
                at.insert(key, rows.len());
                rows.push(StallRow {
                    origin: if console { Origin::Unattributed } else { origin(v) },
                    category: v.category,
                    blocking,
                    site: v.stall.site,
                    count: 1,
                    ongoing: u64::from(v.duration_ns.is_none()),
                    total_ns: d,
                    max_ns: d,
                    latest: i,
                });
            }
        }
    }
    let started = |r: &StallRow| t.stalls[r.latest].stall.started_ns;
    rows.sort_by(|a, b| {
        a.origin.cmp(&b.origin).then_with(|| match sort {
            StallSort::Total => b.total_ns.cmp(&a.total_ns).then(b.count.cmp(&a.count)),
            StallSort::Count => b.count.cmp(&a.count).then(b.total_ns.cmp(&a.total_ns)),
            StallSort::Latest => started(b).cmp(&started(a)),
        })
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_core::model::{Event, Frame, Stall};

    fn stall(id: u64, category: StallCategory, site: Option<&str>, late: bool, started_ms: u64) -> Frame {
        let mut s = Stall::unknown(id, 0, Some(0), started_ms * 1_000_000, started_ms * 1_000_000 + 10_000_000, late);
        s.category = category;
        s.blocking_site = site.map(Into::into);
        Frame::Event(Event::StallBegin(s))
    }

    fn end(id: u64, ms: u64) -> Frame {
        Frame::Event(Event::StallEnd { id, duration_ns: ms * 1_000_000, category: None })
    }

    #[test]
    fn the_programs_lines_come_first_grouped_and_the_hosts_stalls_last() {
        let mut t = Timeline::default();
        // Host noise first in time, as on a busy machine; then a line that blocks three times.
        t.push(stall(0, StallCategory::Preempted, None, false, 1));
        t.push(end(0, 11));
        t.push(stall(1, StallCategory::Unknown, None, true, 2));
        t.push(end(1, 12));
        for k in 0..3 {
            t.push(stall(2 + k, StallCategory::SyncSleep, Some("src/db.rs:42"), false, 10 + k));
            t.push(end(2 + k, 40));
        }
        t.push(stall(9, StallCategory::CpuBound, None, false, 50));
        let all: Vec<usize> = (0..t.stalls.len()).collect();
        let r = rows(&t, &all, true, StallSort::Total, false);
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[0].origin, r[0].blocking.as_deref(), r[0].count, r[0].total_ns),
            (Origin::Program, Some("src/db.rs:42"), 3, 120_000_000)
        );
        assert_eq!((r[1].origin, r[1].ongoing), (Origin::Unattributed, 1));
        assert!(r[2..].iter().all(|r| r.origin == Origin::Host), "{r:#?}");
        // One row per stall, newest first within each origin.
        let each = rows(&t, &all, false, StallSort::Latest, false);
        assert_eq!(each.len(), 6);
        assert_eq!(each[0].latest, 4, "the newest of the program's stalls");
    }
}
