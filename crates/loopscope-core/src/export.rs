//! Exports of a recording for other tools.
//!
//! [`write_hlog`] writes the interval histograms as a standard HdrHistogram interval log (the
//! format of Java's `HistogramLogWriter`, read by `HistogramLogAnalyzer`, `hdr-plot` and every
//! HdrHistogram implementation): one line per histogram per interval, V2-deflate encoded, tagged
//! `poll` and `sched` for the whole runtime and `poll@<site>` / `sched@<site>` per spawn site.
//! Values are nanoseconds.

use std::io::{Read, Write};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::dist::DistAcc;
use crate::format::{ReadError, Reader};
use crate::model::{Frame, SiteDecl};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The recording could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the output failed.
    #[error("writing the export: {0}")]
    Write(String),
    /// A histogram in the recording could not be decoded.
    #[error("{0}")]
    Corrupt(String),
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Intervals exported.
    pub intervals: u64,
    /// Histogram lines written.
    pub histograms: u64,
    /// Whether the recording was cut short (everything before the cut was exported).
    pub truncated: bool,
}

/// A tag for a spawn site: interval-log tags may not contain spaces or commas.
pub fn site_tag(kind: &str, site: &SiteDecl) -> String {
    format!("{kind}@{}", site.location()).replace([' ', ',', '\r', '\n'], "_")
}

/// Writes a recording's intervals as an HdrHistogram interval log.
pub fn write_hlog<R: Read>(mut reader: Reader<R>, out: &mut impl Write) -> Result<ExportStats, ExportError> {
    let header = reader.header().clone();
    let start = UNIX_EPOCH + Duration::from_nanos(header.start_unix_ns);
    let mut serializer = V2DeflateSerializer::new();
    let werr = |e: std::io::Error| ExportError::Write(e.to_string());
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "loopscope recording of {} ({} runtime, {} workers) on {}; values in nanoseconds",
            header.workload.as_deref().unwrap_or("a program"),
            header.flavor,
            header.workers,
            header.host
        ))
        .add_comment("tags: poll / sched for the whole runtime, poll@<spawn site> / sched@<spawn site> per site")
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(out, &mut serializer)
        .map_err(werr)?;
    let mut sites: Vec<SiteDecl> = Vec::new();
    let mut stats = ExportStats::default();
    let completeness = reader.read_rest(|_, frame| -> Result<(), ExportError> {
        match frame {
            Frame::Sites(s) => sites.extend(s),
            Frame::Interval(i) => {
                let at = Duration::from_nanos(i.start_ns);
                let length = Duration::from_nanos(i.end_ns.saturating_sub(i.start_ns));
                let decode = |d: &crate::Dist, what: &str| {
                    d.decode().map_err(|e| ExportError::Corrupt(format!("interval {}: {what}: {e}", i.index)))
                };
                let (mut poll, mut sched) = (DistAcc::new(), DistAcc::new());
                for w in &i.workers {
                    poll.add(&decode(&w.poll, "worker poll histogram")?);
                    sched.add(&decode(&w.sched, "worker scheduling histogram")?);
                }
                let mut lines = vec![("poll".to_string(), poll), ("sched".to_string(), sched)];
                for s in &i.sites {
                    let Some(decl) = sites.get(s.site as usize) else {
                        return Err(ExportError::Corrupt(format!("interval {}: undeclared site {}", i.index, s.site)));
                    };
                    lines.push((site_tag("poll", decl), decode(&s.poll, "site poll histogram")?));
                    lines.push((site_tag("sched", decl), decode(&s.sched, "site scheduling histogram")?));
                }
                for (tag, d) in lines.iter().filter(|(_, d)| d.count() > 0) {
                    log.write_histogram(d.histogram(), at, length, Tag::new(tag))
                        .map_err(|e| ExportError::Write(e.to_string()))?;
                    stats.histograms += 1;
                }
                stats.intervals += 1;
            }
            _ => {}
        }
        Ok(())
    })?;
    // Everything before a cut (or a missing footer) was exported.
    stats.truncated = completeness != crate::format::Completeness::Complete;
    Ok(stats)
}
