//! Loading the recordings of one side of a comparison.

use std::path::{Path, PathBuf};

use loopscope_core::format::{Completeness, ReadError, Reader};
use loopscope_core::model::{Frame, Header, Interval, SiteDecl};
use loopscope_core::report::{Aggregator, StallGroup};
use loopscope_core::resolve::Resolver;
use loopscope_core::workload::WorkloadResult;

/// Why recordings cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file or directory given does not exist.
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    /// A directory given holds no recording.
    #[error("{0}: the directory holds no *.loopscope recording")]
    EmptyDirectory(PathBuf),
    /// The file could not be read as a recording.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The recording ends early (the program was killed, or the file was cut).
    #[error("{path}: the recording is incomplete ({reason}); the gate compares complete runs only")]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What `loopscope report` would say about it.
        reason: String,
    },
    /// Recordings that do not measure the same program.
    #[error("{first} and {second} cannot be compared: {why}")]
    Mismatch {
        /// One recording.
        first: PathBuf,
        /// The other.
        second: PathBuf,
        /// What differs.
        why: String,
    },
    /// The policy is malformed, or names something the recordings do not have.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

/// One recording, as the gate needs it.
#[derive(Clone, Debug)]
pub struct Run {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Spawn sites, by id.
    pub sites: Vec<SiteDecl>,
    /// Intervals in order.
    pub intervals: Vec<Interval>,
    /// The workload's own figures.
    pub workload: Option<WorkloadResult>,
    /// Stalls, grouped as `loopscope report` groups them.
    pub stalls: Vec<StallGroup>,
    /// Spawn sites whose alive tasks kept growing.
    pub growing: Vec<loopscope_core::report::TaskGrowth>,
}

impl Run {
    /// Reads one complete recording, symbolizing its stall stacks with `resolver` (stall rules
    /// match blocking calls by function).
    pub fn read(path: &Path, resolver: &mut Resolver) -> Result<Run, InputError> {
        if !path.exists() {
            return Err(InputError::Missing(path.into()));
        }
        let mut reader = Reader::open(path)?;
        let mut agg = Aggregator::new(reader.header().clone());
        let mut intervals = Vec::new();
        let mut workload = None;
        resolver.reset();
        let completeness = reader.read_rest(|at, frame| {
            let frame = resolver.frame(frame);
            agg.push(&frame).map_err(|e| ReadError::Corrupt {
                path: path.into(),
                offset: at,
                reason: e.to_string(),
            })?;
            match frame {
                Frame::Interval(i) => intervals.push(*i),
                Frame::Workload(w) => workload = Some(*w),
                _ => {}
            }
            Ok::<_, ReadError>(())
        })?;
        if let Completeness::Truncated { at_byte, reason } = completeness {
            return Err(InputError::Incomplete { path: path.into(), reason: format!("{reason} at byte {at_byte}") });
        }
        let report = agg.report(Completeness::Complete, reader.skipped_frames());
        let header = reader.header().clone();
        Ok(Run {
            path: path.into(),
            header,
            sites: agg.sites().to_vec(),
            intervals,
            workload,
            stalls: report.stalls,
            growing: report.growing,
        })
    }

    /// Reads every recording named: files, and the `*.loopscope` files of directories (sorted).
    pub fn read_all(paths: &[PathBuf], resolver: &mut Resolver) -> Result<Vec<Run>, InputError> {
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|source| ReadError::Io { path: p.clone(), source })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "loopscope") && f.is_file())
                    .collect();
                if found.is_empty() {
                    return Err(InputError::EmptyDirectory(p.clone()));
                }
                found.sort();
                files.extend(found);
            } else {
                files.push(p.clone());
            }
        }
        files.iter().map(|f| Run::read(f, resolver)).collect()
    }
}

/// Checks that every run can be compared with the others: they record the same workload, or all
/// record programs that are not loopscope's workloads. Programs with different names are
/// comparable (CI builds the baseline and the candidate as two binaries); [`programs`] lists them
/// so that the verdict can say so.
pub fn check_comparable(runs: &[&Run]) -> Result<(), InputError> {
    let Some(first) = runs.first() else { return Ok(()) };
    for r in &runs[1..] {
        if r.header.workload != first.header.workload {
            let name = |h: &Header| match &h.workload {
                Some(w) => format!("the workload {w}"),
                None => format!("the program {:?}, which is not a workload", program(h)),
            };
            return Err(InputError::Mismatch {
                first: first.path.clone(),
                second: r.path.clone(),
                why: format!("one records {}, the other {}", name(&first.header), name(&r.header)),
            });
        }
    }
    Ok(())
}

/// The distinct names of the programs the runs recorded, in the order first met.
pub fn programs(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        let name = program(&r.header);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The file name of the recorded program.
pub fn program(h: &Header) -> String {
    h.command_line
        .first()
        .map(|p| Path::new(p).file_name().map_or_else(|| p.clone(), |f| f.to_string_lossy().into_owned()))
        .unwrap_or_default()
}
