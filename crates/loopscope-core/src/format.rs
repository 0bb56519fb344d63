//! The recording file: framed, checksummed, written as the program runs.
//!
//! Layout (all integers little-endian; see `docs/format.md`):
//!
//! ```text
//! preamble  8 bytes magic "\x89LSCOPE\n", u16 format version, u16 flags (0)
//! frame*    u8 kind, u32 payload length, u32 CRC-32 of kind byte + payload, payload (postcard)
//! ```
//!
//! A kind with its top bit set ([`COMPRESSED`]) carries a zlib-compressed payload; interval frames
//! are written that way.
//!
//! The first frame is the header, the last the footer. Each frame is written with one `write`
//! call and flushed, so a program killed mid-run leaves every complete frame readable; the reader
//! recovers that prefix and says where the file was cut. A frame whose checksum or payload is
//! wrong is corruption, reported with the file and byte offset.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{
    Event, FORMAT_VERSION, Footer, Frame, Header, Interval, ModuleDecl, OLDEST_FORMAT_VERSION, RuntimeDecl, SiteDecl,
    WorkerDecl,
};
use crate::validate::Declared;
use crate::workload::WorkloadResult;

/// The first 8 bytes of every recording.
pub const MAGIC: [u8; 8] = *b"\x89LSCOPE\n";
/// Bytes before the first frame.
pub const PREAMBLE_LEN: u64 = 12;
/// Bytes of a frame's own header (kind, length, checksum).
pub const FRAME_HEADER_LEN: u64 = 9;
/// Largest payload a frame may carry (compressed or not); anything larger is corruption.
pub const MAX_FRAME_LEN: u32 = 64 << 20;
/// Largest payload a compressed frame may inflate to.
pub const MAX_INFLATED_LEN: usize = 16 << 20;
/// How many times its stored size a compressed payload may inflate to (beyond the first 64 KiB):
/// recordings compress 2-3 times (measured on the workloads); a "zip bomb" is cut off long before
/// it costs memory.
pub const MAX_INFLATE_RATIO: usize = 16;
/// Bit set in a frame's kind when its payload is zlib-compressed.
pub const COMPRESSED: u8 = 0x80;

mod kind {
    pub const HEADER: u8 = 1;
    pub const SITES: u8 = 2;
    pub const WORKERS: u8 = 3;
    pub const INTERVAL: u8 = 4;
    pub const EVENT: u8 = 5;
    pub const WORKLOAD: u8 = 6;
    pub const FOOTER: u8 = 7;
    pub const RUNTIME: u8 = 8;
    pub const MODULES: u8 = 9;
    pub const SAMPLES: u8 = 10;
    pub const SPANS: u8 = 11;
    pub const TASK_AGES: u8 = 12;
    pub const TASK_DUMP: u8 = 13;
}

/// Why writing a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The underlying writer failed (disk full, closed pipe, ...).
    #[error("writing the recording failed: {0}")]
    Io(#[from] io::Error),
    /// A frame could not be encoded.
    #[error("encoding a frame failed: {0}")]
    Encode(String),
}

/// Why reading a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file does not start like a loopscope recording.
    #[error("{path}: not a loopscope recording ({reason} at byte {offset})")]
    NotARecording {
        /// The file.
        path: PathBuf,
        /// Where the problem is.
        offset: u64,
        /// What was found.
        reason: String,
    },
    /// Written by a newer loopscope.
    #[error(
        "{path}: recording format version {found} is not supported (this loopscope reads version {FORMAT_VERSION}); upgrade loopscope"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u16,
    },
    /// A frame is damaged.
    #[error("{path}: corrupt recording at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset of the damaged frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file ends inside a frame (or before its header frame).
    #[error("{path}: recording cut short at byte {offset} (inside {inside})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Offset where the incomplete part starts.
        offset: u64,
        /// What was being read.
        inside: &'static str,
    },
}

impl ReadError {
    /// The byte offset the error refers to, where there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ReadError::NotARecording { offset, .. }
            | ReadError::Corrupt { offset, .. }
            | ReadError::Truncated { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// Writes a recording frame by frame.
pub struct Writer<W: Write> {
    inner: W,
    offset: u64,
    buf: Vec<u8>,
}

/// The preamble every recording (and every live stream) starts with: magic, version, flags.
pub fn preamble() -> Vec<u8> {
    let mut pre = Vec::with_capacity(PREAMBLE_LEN as usize);
    pre.extend_from_slice(&MAGIC);
    pre.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    pre.extend_from_slice(&0u16.to_le_bytes());
    pre
}

/// Appends one frame, as it is stored (kind, length, checksum, payload), to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let (k, payload) = match frame {
        Frame::Header(h) => (kind::HEADER, encode(h)?),
        Frame::Runtime(r) => (kind::RUNTIME, encode(r)?),
        Frame::Modules(m) => (kind::MODULES, encode(m)?),
        Frame::Spans(d) => (kind::SPANS, encode(d)?),
        Frame::Samples(s) => pack(kind::SAMPLES, encode(s)?)?,
        Frame::Sites(s) => (kind::SITES, encode(s)?),
        Frame::Workers(w) => (kind::WORKERS, encode(w)?),
        Frame::Interval(i) => pack(kind::INTERVAL, encode(i)?)?,
        Frame::Event(e) => (kind::EVENT, encode(e)?),
        Frame::Workload(w) => pack(kind::WORKLOAD, encode(w)?)?,
        Frame::TaskAges(t) => pack(kind::TASK_AGES, encode(t)?)?,
        Frame::TaskDump(d) => pack(kind::TASK_DUMP, encode(d)?)?,
        Frame::Footer(f) => (kind::FOOTER, encode(f)?),
    };
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or_else(|| WriteError::Encode(format!("frame of {} bytes is too large", payload.len())))?;
    out.push(k);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(k, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

impl<W: Write> Writer<W> {
    /// Writes the preamble and the header frame.
    pub fn new(mut inner: W, header: &Header) -> Result<Self, WriteError> {
        inner.write_all(&preamble())?;
        let mut w = Writer { inner, offset: PREAMBLE_LEN, buf: Vec::new() };
        w.write(&Frame::Header(header.clone()))?;
        Ok(w)
    }

    /// Appends one frame and flushes it.
    pub fn write(&mut self, frame: &Frame) -> Result<(), WriteError> {
        self.buf.clear();
        encode_frame(frame, &mut self.buf)?;
        self.inner.write_all(&self.buf)?;
        self.inner.flush()?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, WriteError> {
    postcard::to_stdvec(v).map_err(|e| WriteError::Encode(e.to_string()))
}

/// A frame's kind and payload, compressed unless readers would refuse to inflate it: a payload
/// that compresses more than [`MAX_INFLATE_RATIO`] times (repetitive text, such as a task dump's
/// stacks) or inflates beyond [`MAX_INFLATED_LEN`] is stored as it is.
fn pack(kind: u8, plain: Vec<u8>) -> Result<(u8, Vec<u8>), WriteError> {
    let packed = compress(&plain)?;
    let cap = packed.len().saturating_mul(MAX_INFLATE_RATIO).clamp(64 << 10, MAX_INFLATED_LEN);
    Ok(if plain.len() <= cap { (kind | COMPRESSED, packed) } else { (kind, plain) })
}

fn compress(payload: &[u8]) -> Result<Vec<u8>, WriteError> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(payload)?;
    Ok(z.finish()?)
}

fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// Reads a recording frame by frame.
///
/// Every frame is validated before it is handed out ([`crate::validate`]): ids refer to what was
/// declared, counts and lengths stay within the documented limits, histograms have loopscope's
/// bounds. Every reader (report, export, the gate, the TUI, the attach client) reads through
/// this, so they all accept and refuse the same recordings.
pub struct Reader<R: Read> {
    inner: R,
    path: PathBuf,
    offset: u64,
    version: u16,
    header: Header,
    finished: bool,
    skipped_frames: u64,
    declared: Declared,
}

impl Reader<BufReader<File>> {
    /// Opens a recording file and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ReadError::Io { path: path.into(), source })?;
        Reader::new(BufReader::new(file), path)
    }
}

impl<R: Read> Reader<R> {
    /// Reads the preamble and the header from `inner`; `path` names it in errors.
    pub fn new(mut inner: R, path: impl Into<PathBuf>) -> Result<Self, ReadError> {
        let path = path.into();
        let mut pre = [0u8; PREAMBLE_LEN as usize];
        let got = read_full(&mut inner, &mut pre).map_err(|source| ReadError::Io { path: path.clone(), source })?;
        let magic_got = got.min(MAGIC.len());
        if pre[..magic_got] != MAGIC[..magic_got] {
            return Err(ReadError::NotARecording { path, offset: 0, reason: "wrong magic bytes".into() });
        }
        if got < pre.len() {
            return Err(ReadError::Truncated { path, offset: 0, inside: "the preamble" });
        }
        let version = u16::from_le_bytes([pre[8], pre[9]]);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(ReadError::UnsupportedVersion { path, found: version });
        }
        let mut r = Reader {
            inner,
            path,
            offset: PREAMBLE_LEN,
            version,
            header: placeholder_header(),
            finished: false,
            skipped_frames: 0,
            declared: Declared::default(),
        };
        match r.read_raw() {
            Ok(Some((kind::HEADER, payload))) => {
                let mut header: Header = r.decode(PREAMBLE_LEN, &payload)?;
                crate::validate::clean_header(&mut header);
                r.declared.header(&header).map_err(|e| r.corrupt(PREAMBLE_LEN, e))?;
                r.header = header;
                Ok(r)
            }
            Ok(Some(_)) => Err(r.corrupt(PREAMBLE_LEN, "the first frame is not a header".into())),
            Ok(None) => Err(ReadError::Truncated { path: r.path, offset: PREAMBLE_LEN, inside: "the header frame" }),
            Err(ReadError::Truncated { path, offset, .. }) => {
                Err(ReadError::Truncated { path, offset, inside: "the header frame" })
            }
            Err(e) => Err(e),
        }
    }

    /// The recording's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The format version of the file (older versions are read into this build's model).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Bytes consumed so far (the end of the last complete frame).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file name used in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames of unknown kinds or undecodable events skipped so far (written by a newer loopscope).
    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// The next frame after the header; `Ok(None)` at the end of the file.
    ///
    /// A file cut inside a frame gives [`ReadError::Truncated`]; everything before it was valid.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let at = self.offset;
            let Some((k, payload)) = self.read_raw()? else { return Ok(None) };
            let v1 = self.version == 1;
            let frame = match k {
                kind::HEADER => return Err(self.corrupt(at, "a second header frame".into())),
                kind::RUNTIME if !v1 => Frame::Runtime(self.decode::<RuntimeDecl>(at, &payload)?),
                kind::MODULES if !v1 => {
                    Frame::Modules(self.decode_list::<ModuleDecl>(at, &payload, self.declared.room().modules)?)
                }
                kind::SAMPLES if !v1 => Frame::Samples(Box::new(self.decode::<crate::model::Samples>(at, &payload)?)),
                kind::TASK_AGES if !v1 => {
                    Frame::TaskAges(Box::new(self.decode::<crate::model::TaskAges>(at, &payload)?))
                }
                kind::TASK_DUMP if !v1 => {
                    Frame::TaskDump(Box::new(self.decode::<crate::model::TaskDump>(at, &payload)?))
                }
                kind::SPANS if !v1 => Frame::Spans(self.decode_list::<crate::model::SpanDecl>(
                    at,
                    &payload,
                    self.declared.room().spans,
                )?),
                kind::SITES => Frame::Sites(self.decode_list::<SiteDecl>(at, &payload, self.declared.room().sites)?),
                kind::WORKERS => {
                    Frame::Workers(self.decode_list::<WorkerDecl>(at, &payload, self.declared.room().workers)?)
                }
                kind::INTERVAL if v1 => {
                    Frame::Interval(Box::new(self.decode::<crate::model_v1::Interval>(at, &payload)?.into()))
                }
                kind::INTERVAL => Frame::Interval(Box::new(self.decode::<Interval>(at, &payload)?)),
                kind::EVENT => {
                    let event = if v1 {
                        postcard::from_bytes::<crate::model_v1::Event>(&payload).map(Event::from)
                    } else {
                        postcard::from_bytes::<Event>(&payload)
                    };
                    match event {
                        Ok(e) => Frame::Event(e),
                        // A checksummed event we cannot decode was written by a newer loopscope.
                        Err(_) => {
                            self.skipped_frames += 1;
                            continue;
                        }
                    }
                }
                kind::WORKLOAD => Frame::Workload(Box::new(self.decode::<WorkloadResult>(at, &payload)?)),
                kind::FOOTER => {
                    self.finished = true;
                    Frame::Footer(self.decode::<Footer>(at, &payload)?)
                }
                _ => {
                    self.skipped_frames += 1;
                    continue;
                }
            };
            self.declared.check(&frame).map_err(|reason| self.corrupt(at, reason))?;
            let mut frame = frame;
            crate::validate::clean_frame(&mut frame);
            if let Frame::Runtime(r) = &frame {
                self.header.apply_runtime(r);
            }
            return Ok(Some(frame));
        }
    }

    /// Reads every remaining frame into `f` (with the frame's byte offset) and says how the file
    /// ended: complete (a footer), cut inside a frame, or ending without a footer. `f`'s errors stop
    /// the reading and are returned as they are.
    pub fn read_rest<E: From<ReadError>>(
        &mut self,
        mut f: impl FnMut(u64, Frame) -> Result<(), E>,
    ) -> Result<Completeness, E> {
        loop {
            let at = self.offset;
            match self.next_frame() {
                Ok(Some(frame)) => f(at, frame)?,
                Ok(None) if self.finished => return Ok(Completeness::Complete),
                Ok(None) => {
                    return Ok(Completeness::Truncated {
                        at_byte: self.offset,
                        reason: "no footer: the recorded program did not finish its session".into(),
                    });
                }
                Err(ReadError::Truncated { offset, inside, .. }) => {
                    return Ok(Completeness::Truncated {
                        at_byte: offset,
                        reason: format!("the file ends inside {inside}"),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn decode<T: DeserializeOwned>(&self, at: u64, payload: &[u8]) -> Result<T, ReadError> {
        postcard::from_bytes(payload).map_err(|e| self.corrupt(at, format!("undecodable frame payload: {e}")))
    }

    /// Decodes a list of declarations one at a time, refusing more than `room` of them before
    /// they are held (a few bytes each on disk, tens in memory).
    fn decode_list<T: DeserializeOwned>(&self, at: u64, payload: &[u8], room: usize) -> Result<Vec<T>, ReadError> {
        let bad = |e: postcard::Error| self.corrupt(at, format!("undecodable frame payload: {e}"));
        let (len, mut rest) = postcard::take_from_bytes::<usize>(payload).map_err(bad)?;
        if len > room {
            return Err(self.corrupt(at, format!("declares {len} entries where at most {room} more are allowed")));
        }
        let mut out = Vec::new();
        for _ in 0..len {
            let (item, after) = postcard::take_from_bytes::<T>(rest).map_err(bad)?;
            out.push(item);
            rest = after;
        }
        Ok(out)
    }

    fn corrupt(&self, offset: u64, reason: String) -> ReadError {
        ReadError::Corrupt { path: self.path.clone(), offset, reason }
    }

    /// Reads one frame's kind and payload, checking its checksum.
    fn read_raw(&mut self) -> Result<Option<(u8, Vec<u8>)>, ReadError> {
        let at = self.offset;
        let io = |source| ReadError::Io { path: self.path.clone(), source };
        let mut head = [0u8; FRAME_HEADER_LEN as usize];
        let got = read_full(&mut self.inner, &mut head).map_err(io)?;
        if got == 0 {
            return Ok(None);
        }
        let truncated = |inside| ReadError::Truncated { path: self.path.clone(), offset: at, inside };
        if got < head.len() {
            return Err(truncated("a frame header"));
        }
        let k = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let crc = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        if k & !COMPRESSED == 0 || len > MAX_FRAME_LEN {
            return Err(self.corrupt(at, format!("frame header kind {k}, length {len}: not a frame")));
        }
        // Grow with the data actually present, so a damaged length cannot force a large allocation.
        let mut payload = Vec::new();
        (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut payload)
            .map_err(|source| ReadError::Io { path: self.path.clone(), source })?;
        if payload.len() < len as usize {
            return Err(truncated("a frame"));
        }
        if checksum(k, &payload) != crc {
            return Err(self.corrupt(at, "frame checksum mismatch".into()));
        }
        self.offset += FRAME_HEADER_LEN + u64::from(len);
        if k & COMPRESSED == 0 {
            return Ok(Some((k, payload)));
        }
        // A payload may inflate to a bounded multiple of its stored size, never beyond an absolute
        // cap: a small hostile file cannot make a reader allocate much.
        let cap = payload.len().saturating_mul(MAX_INFLATE_RATIO).clamp(64 << 10, MAX_INFLATED_LEN);
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&payload[..])
            .take(cap as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|e| self.corrupt(at, format!("compressed frame does not inflate: {e}")))?;
        if plain.len() > cap {
            return Err(
                self.corrupt(at, format!("a compressed frame of {} bytes inflates beyond {cap} bytes", payload.len()))
            );
        }
        Ok(Some((k & !COMPRESSED, plain)))
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn placeholder_header() -> Header {
    Header {
        format_version: 0,
        loopscope_version: String::new(),
        flavor: crate::model::Flavor::CurrentThread,
        workers: 0,
        host: String::new(),
        pid: 0,
        start_unix_ns: 0,
        command_line: Vec::new(),
        workload: None,
        interval_ns: 0,
        slow_poll_ns: 0,
        schedule_latency: false,
        stall_threshold_ns: None,
    }
}

/// How a recording ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Completeness {
    /// The footer was read: the program finished its session.
    Complete,
    /// The file ends early; everything before `at_byte` was recovered.
    Truncated {
        /// Where the readable prefix ends.
        at_byte: u64,
        /// Why reading stopped there.
        reason: String,
    },
}

/// A whole recording read into memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// The header.
    pub header: Header,
    /// Spawn sites, indexed by id.
    pub sites: Vec<SiteDecl>,
    /// Worker threads, indexed by id.
    pub workers: Vec<WorkerDecl>,
    /// Loaded modules that stacks point into, indexed by id.
    pub modules: Vec<ModuleDecl>,
    /// `tracing` span callsites, indexed by id.
    pub spans: Vec<crate::model::SpanDecl>,
    /// Stacks sampled from slow polls, per interval.
    pub samples: Vec<crate::model::Samples>,
    /// Intervals in order.
    pub intervals: Vec<Interval>,
    /// The alive tasks' ages, per interval.
    pub task_ages: Vec<crate::model::TaskAges>,
    /// Task dumps, in order.
    pub dumps: Vec<crate::model::TaskDump>,
    /// Events in order.
    pub events: Vec<Event>,
    /// The workload's own result, if it reported one.
    pub workload: Option<WorkloadResult>,
    /// The footer, if the recording ended cleanly.
    pub footer: Option<Footer>,
    /// Whether the file was complete.
    pub completeness: Completeness,
    /// Frames skipped because this loopscope does not know them.
    pub skipped_frames: u64,
}

impl Recording {
    /// Reads a recording as it is stored (stacks as raw addresses), recovering the complete
    /// prefix of a file that was cut short. See [`Recording::read_with`] to symbolize.
    pub fn read(path: impl AsRef<Path>) -> Result<Recording, ReadError> {
        Recording::from_reader(Reader::open(path)?, None)
    }

    /// Reads a recording, symbolizing its stacks and attributing its stalls with `resolver`.
    pub fn read_with(path: impl AsRef<Path>, resolver: &mut crate::resolve::Resolver) -> Result<Recording, ReadError> {
        Recording::from_reader(Reader::open(path)?, Some(resolver))
    }

    /// Reads the rest of an opened recording, through `resolver` if there is one.
    pub fn from_reader<R: Read>(
        mut reader: Reader<R>,
        mut resolver: Option<&mut crate::resolve::Resolver>,
    ) -> Result<Recording, ReadError> {
        let mut rec = Recording::empty(reader.header().clone());
        rec.completeness = reader.read_rest(|_, frame| -> Result<(), ReadError> {
            rec.push(match resolver.as_deref_mut() {
                Some(r) => r.frame(frame),
                None => frame,
            });
            Ok(())
        })?;
        rec.header = reader.header().clone();
        rec.skipped_frames = reader.skipped_frames();
        Ok(rec)
    }

    /// A recording of nothing yet but its header.
    pub fn empty(header: Header) -> Recording {
        Recording {
            header,
            sites: Vec::new(),
            workers: Vec::new(),
            modules: Vec::new(),
            spans: Vec::new(),
            samples: Vec::new(),
            intervals: Vec::new(),
            task_ages: Vec::new(),
            dumps: Vec::new(),
            events: Vec::new(),
            workload: None,
            footer: None,
            completeness: Completeness::Complete,
            skipped_frames: 0,
        }
    }

    /// Adds one frame (frames from a [`Reader`] have been validated already).
    pub fn push(&mut self, frame: Frame) {
        match frame {
            Frame::Header(h) => self.header = h,
            Frame::Runtime(r) => self.header.apply_runtime(&r),
            Frame::Modules(m) => self.modules.extend(m),
            Frame::Spans(d) => self.spans.extend(d),
            Frame::Samples(s) => self.samples.push(*s),
            Frame::Sites(s) => self.sites.extend(s),
            Frame::Workers(w) => self.workers.extend(w),
            Frame::Interval(i) => self.intervals.push(*i),
            Frame::TaskAges(t) => self.task_ages.push(*t),
            Frame::TaskDump(d) => self.dumps.push(*d),
            Frame::Event(e) => self.events.push(e),
            Frame::Workload(w) => self.workload = Some(*w),
            Frame::Footer(f) => self.footer = Some(f),
        }
    }

    /// Whether the footer was read.
    pub fn is_complete(&self) -> bool {
        self.completeness == Completeness::Complete
    }
}
