//! Hostile and damaged recordings against every reader: thousands of mutations of real
//! recordings (bit flips, truncations, frames re-encoded with valid checksums and compressed
//! payloads, crafted bombs) go through the reader, the report (text and JSON), both exports, the
//! gate's loader and the TUI's views. Each must end in a result or a clear error, never a panic,
//! and never hold more than a bounded amount of memory for an input of a few kilobytes.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use loopscope::core::export;
use loopscope::core::format::{PREAMBLE_LEN, Reader, Recording};
use loopscope::core::report::Report;
use loopscope::core::resolve::Resolver;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The most memory any reader may hold at once for one input of this test (a few KB to a few
/// hundred KB): generous for the legitimate work, far below what the bombs below would cost
/// unbounded (gigabytes).
const CAP: isize = 64 << 20;

/// A small generator, so every run mutates the same way (a failure names its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A real recording of this format: a runtime with a few spawn sites, a stall with its stack, a
/// workload result.
fn fresh_recording() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.loopscope");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = loopscope::Session::builder()
        .record_to(&path)
        .interval(Duration::from_millis(20))
        .workload("fuzz")
        .install(&mut b)
        .unwrap();
    let rt = b.build().unwrap();
    rt.block_on(async {
        for i in 0..40u64 {
            tokio::spawn(async move { tokio::time::sleep(Duration::from_micros(i * 50)).await }).await.unwrap();
        }
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(25)) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    });
    drop(rt);
    let mut lateness = loopscope::core::dist::DistAcc::new();
    lateness.record(Duration::from_micros(300));
    session.record_workload(&loopscope::WorkloadResult::new("fuzz").metric("x", 1.0, "1").distribution("d", &lateness));
    session.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// The frames of a recording: (offset, kind as stored, payload as stored).
fn frames(bytes: &[u8]) -> Vec<(usize, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = PREAMBLE_LEN as usize;
    while at + 9 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        if at + 9 + len > bytes.len() {
            break;
        }
        out.push((at, bytes[at], bytes[at + 9..at + 9 + len].to_vec()));
        at += 9 + len;
    }
    out
}

/// One frame as stored, with a valid checksum, compressing `plain` if `kind` says so.
fn frame(kind: u8, plain: &[u8]) -> Vec<u8> {
    let payload = if kind & 0x80 != 0 {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(plain).unwrap();
        z.finish().unwrap()
    } else {
        plain.to_vec()
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&payload);
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn inflate(kind: u8, stored: &[u8]) -> Vec<u8> {
    if kind & 0x80 == 0 {
        return stored.to_vec();
    }
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(stored), &mut out);
    out
}

/// The recording with frame `i` replaced by `replacement` (any number of frames' bytes).
fn replace(bytes: &[u8], frames: &[(usize, u8, Vec<u8>)], i: usize, replacement: &[u8]) -> Vec<u8> {
    let (at, _, payload) = &frames[i];
    let end = at + 9 + payload.len();
    let mut out = bytes[..*at].to_vec();
    out.extend_from_slice(replacement);
    out.extend_from_slice(&bytes[end..]);
    out
}

/// A payload changed the way a bug or an attacker might: bytes flipped, varints made huge,
/// bytes inserted or removed.
fn mutate(rng: &mut Rng, plain: &[u8]) -> Vec<u8> {
    let mut p = plain.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !p.is_empty() => {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
            1 if !p.is_empty() => {
                // A varint with every continuation bit set: the largest length or id it can say.
                let i = rng.below(p.len());
                let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
                p.splice(i..(i + 1).min(p.len()), huge);
            }
            2 => {
                let i = rng.below(p.len() + 1);
                let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                p.splice(i..i, junk);
            }
            3 if !p.is_empty() => {
                let i = rng.below(p.len());
                let n = 1 + rng.below(8);
                p.drain(i..(i + n).min(p.len()));
            }
            _ => {
                if !p.is_empty() {
                    let i = rng.below(p.len());
                    p[i] = rng.next() as u8;
                }
            }
        }
    }
    p
}

/// Runs every reader on `bytes`; returns the most memory held at once above what was live before.
fn every_reader(bytes: &[u8], scratch: &std::path::Path) -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let ran = std::panic::catch_unwind(|| {
        if let Ok(r) = Reader::new(bytes, "fuzz") {
            let _ = Recording::from_reader(r, None);
        }
        if let Ok(r) = Reader::new(bytes, "fuzz")
            && let Ok(report) = Report::from_reader(r, &mut Resolver::addresses_only())
        {
            let _ = report.to_json();
            let _ = loopscope_cli_text(&report);
        }
        if let Ok(r) = Reader::new(bytes, "fuzz") {
            let _ = export::write_hlog(r, &mut std::io::sink());
        }
        if let Ok(r) = Reader::new(bytes, "fuzz") {
            let _ = export::write_trace(r, &mut Resolver::addresses_only(), &mut std::io::sink());
        }
        // The gate reads files.
        std::fs::write(scratch, bytes).unwrap();
        let _ = loopscope_gate::data::Run::read(scratch, &mut Resolver::addresses_only());
        // The TUI: every view of whatever the reader accepted.
        if let Ok(r) = Reader::new(bytes, "fuzz")
            && let Ok(rec) = Recording::from_reader(r, None)
        {
            let mut app = loopscope_tui::App::new(
                loopscope_tui::Timeline::from_recording(rec),
                loopscope_tui::Source::Replay("fuzz".into()),
            );
            for view in
                [loopscope_tui::app::View::Overview, loopscope_tui::app::View::Sites, loopscope_tui::app::View::Stalls]
            {
                app.apply(loopscope_tui::app::Action::Goto(view));
                app.apply(loopscope_tui::app::Action::Open);
                let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 30)).unwrap();
                term.draw(|f| loopscope_tui::ui::render(f, &mut app)).unwrap();
            }
        }
    });
    assert!(ran.is_ok(), "a reader panicked");
    PEAK.load(Ordering::Relaxed) - before
}

/// The text report, as `loopscope report` prints it.
fn loopscope_cli_text(report: &Report) -> String {
    loopscope_cli::report_text::render(report, 10)
}

#[test]
fn damaged_and_hostile_recordings_never_panic_a_reader_nor_exhaust_its_memory() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("input.loopscope");
    let v1 = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../loopscope-tui/tests/fixtures/blocking.loopscope"))
        .expect("the format-1 fixture");
    let v2 = fresh_recording();
    let mut worst = 0isize;
    let mut inputs = 0usize;
    let mut check = |input: &[u8], what: &str| {
        let peak = every_reader(input, &scratch);
        assert!(peak < CAP, "{what}: a reader held {} MiB for {} bytes of input", peak >> 20, input.len());
        worst = worst.max(peak);
        inputs += 1;
    };
    for (name, base) in [("format 1", &v1), ("format 2", &v2)] {
        check(base, name);
        let fr = frames(base);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ base.len() as u64);
        // Bit flips anywhere (most break a checksum: the reader must say where).
        for k in 0..400 {
            let mut b = base.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            check(&b, &format!("{name}: bit flips #{k}"));
        }
        // Every truncation of the first 300 bytes, and 100 more anywhere.
        for cut in (0..base.len().min(300)).chain((0..100).map(|_| rng.below(base.len()))) {
            check(&base[..cut], &format!("{name}: cut at {cut}"));
        }
        // Frames whose payload is changed and re-encoded with a valid checksum (and compressed
        // again where the kind says so): the decoders and the validation see them.
        for k in 0..800 {
            let i = rng.below(fr.len());
            let (_, kind, stored) = &fr[i];
            let plain = inflate(*kind, stored);
            let changed = frame(*kind, &mutate(&mut rng, &plain));
            check(&replace(base, &fr, i, &changed), &format!("{name}: frame {i} (kind {kind:#x}) mutated #{k}"));
        }
        // Frames repeated, dropped or moved.
        for k in 0..100 {
            let (i, j) = (rng.below(fr.len()), rng.below(fr.len()));
            let (at, _, p) = &fr[j];
            let copy = base[*at..at + 9 + p.len()].to_vec();
            let b = if k % 2 == 0 { replace(base, &fr, i, &copy) } else { replace(base, &fr, i, &[]) };
            check(&b, &format!("{name}: frames {i}/{j} shuffled #{k}"));
        }
    }
    // Bombs: a compressed interval of 16 MiB of zeros (postcard reads zeros as empty entries), an
    // uncompressed sites frame of a million empty declarations, a header that claims every
    // worker, a stall with a stack of a million frames.
    let header_end = frames(&v2)[1].0;
    let mut bomb = v2[..header_end].to_vec();
    bomb.extend(frame(0x84, &vec![0u8; 16 << 20]));
    check(&bomb, "a 16 MiB interval of zeros");
    // An interval of a million spawn-site entries (14 bytes each, compressed a thousandfold):
    // 144 MB once decoded.
    let mut entries = vec![0u8, 0, 0, 0x80, 0x89, 0x7a];
    for _ in 0..1_000_000 {
        entries.extend_from_slice(&[0u8; 14]);
    }
    let mut bomb = v2[..header_end].to_vec();
    bomb.extend(frame(0x84, &entries));
    check(&bomb, "an interval of a million entries");
    let mut sites = v2[..header_end].to_vec();
    let mut payload = vec![0x80, 0x89, 0x7a]; // a million, as a varint
    for i in 0..1_000_000u32 {
        payload.extend(postcard::to_stdvec(&(i, "", 1u32, 1u32)).unwrap());
    }
    sites.extend(frame(2, &payload));
    check(&sites, "a million spawn sites");
    let fr = frames(&v2);
    let mut hdr: loopscope::core::model::Header = postcard::from_bytes(&inflate(fr[0].1, &fr[0].2)).unwrap();
    hdr.workers = u32::MAX;
    hdr.command_line = vec!["\x1b]0;pwned\x07\x1b[2J".into(); 4];
    let mut b = v2[..PREAMBLE_LEN as usize].to_vec();
    b.extend(frame(1, &postcard::to_stdvec(&hdr).unwrap()));
    b.extend_from_slice(&v2[fr[1].0..]);
    check(&b, "a header that claims every worker");
    eprintln!("{inputs} inputs, the most any reader held at once: {} KiB", worst >> 10);
}
