//! Stacks of stuck workers: captured in a signal handler, unwound off it, never symbolized here.
//!
//! The watchdog sends one real-time signal ([`capture_signal`]) to the stuck thread with
//! `tgkill`. The handler allocates nothing, takes no lock and calls nothing but `gettid`: it copies
//! the interrupted registers (`rip`, `rsp`, `rbp` from the `ucontext`) and the live part of the
//! thread's stack (from `rsp` up to the stack's top, at most [`STACK_COPY`] bytes) into a buffer
//! allocated in advance, then publishes them with one atomic store. The watchdog's unwinder
//! thread then unwinds that copy with framehop (DWARF CFI from each loaded module's
//! `.eh_frame_hdr` and `.eh_frame`, read where the loader mapped them, so frames right above a libc
//! call are not lost as with frame pointers) into instruction addresses. Those go into the
//! recording with the modules they fall in ([`Unwinder::take_new_modules`]: path, build id, load
//! bias); readers symbolize them from the binaries on disk. The program never parses debug
//! information.
//!
//! A signal the thread blocks is never sent (its mask is read from `/proc/self/task/TID/status`
//! first): it would only wait in the queue, against the user's limit of pending signals, and the
//! capture would time out.
//!
//! A few captures can be armed at once, one per thread, each in a slot of its own with its own
//! buffer. The handler looks for the slot armed for its own thread; without one it returns at
//! once. A thread inside a long system call (a 64 MiB `write`, an `fsync`) takes the signal only
//! when the call returns to user space: its capture is then left armed ([`Unreachable::Deferred`])
//! and the handler copies the stack at that moment, which is still the call's caller, the line
//! that blocked. The watchdog collects it later ([`collect`]). The signal is
//! installed with `SA_RESTART`; a thread stuck in `nanosleep`, `poll` or `futex` still sees
//! `EINTR`, which std's sleep and locks retry. If another handler already owns the signal,
//! capture is off and stalls are reported without stacks.

use std::ffi::{CStr, c_int, c_void};
use std::ops::Range;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use loopscope_core::model::ModuleDecl;

/// Most bytes of stack copied per capture.
pub(crate) const STACK_COPY: usize = 256 * 1024;
/// Most frames kept per stack.
pub(crate) const MAX_FRAMES: usize = 128;

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const BUSY: u8 = 2;
const DONE: u8 = 3;

/// What the handler and the watchdog share: only atomics and a pointer to a buffer allocated
/// before any signal is sent.
struct Slot {
    /// Counts the captures armed in this slot, so a deferred one is collected only by its owner.
    generation: AtomicU64,
    state: AtomicU8,
    tid: AtomicI32,
    stack_lo: AtomicU64,
    stack_top: AtomicU64,
    buf: AtomicPtr<u8>,
    ip: AtomicU64,
    sp: AtomicU64,
    bp: AtomicU64,
    len: AtomicUsize,
}

/// Captures armed at once (each holds [`STACK_COPY`] bytes for the process's lifetime).
const SLOTS: usize = 4;

static SLOT_LIST: [Slot; SLOTS] = [const {
    Slot {
        generation: AtomicU64::new(0),
        state: AtomicU8::new(IDLE),
        tid: AtomicI32::new(0),
        stack_lo: AtomicU64::new(0),
        stack_top: AtomicU64::new(0),
        buf: AtomicPtr::new(ptr::null_mut()),
        ip: AtomicU64::new(0),
        sp: AtomicU64::new(0),
        bp: AtomicU64::new(0),
        len: AtomicUsize::new(0),
    }
}; SLOTS];

/// Serializes the arming of captures (the handler never takes it).
static CAPTURE_LOCK: Mutex<()> = Mutex::new(());
/// Whether the handler is installed: `Some(signal)`, or `None` when capture is unavailable.
static INSTALLED: OnceLock<Option<c_int>> = OnceLock::new();

/// The signal used for captures: `SIGRTMIN + 7`, a real-time signal applications rarely use
/// (glibc reserves the first ones; SIGUSR1/2 and SIGPROF belong to applications and profilers).
pub(crate) fn capture_signal() -> c_int {
    libc::SIGRTMIN() + 7
}

extern "C" fn on_signal(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: gettid is async-signal-safe (a plain system call).
    let me = unsafe { libc::gettid() };
    // The slot armed for this thread: the tid is stored before the slot is armed (Release), so
    // an armed slot's tid is its thread's.
    let Some(s) = SLOT_LIST.iter().find(|s| {
        if s.state.load(Ordering::Acquire) != ARMED || s.tid.load(Ordering::Relaxed) != me {
            return false;
        }
        if s.state.compare_exchange(ARMED, BUSY, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        // Re-armed for another thread between the two reads: leave it to that thread.
        if s.tid.load(Ordering::Relaxed) != me {
            s.state.store(ARMED, Ordering::Release);
            return false;
        }
        true
    }) else {
        return;
    };
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let gregs = unsafe { &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs };
    let (ip, sp, bp) = (
        gregs[libc::REG_RIP as usize] as u64,
        gregs[libc::REG_RSP as usize] as u64,
        gregs[libc::REG_RBP as usize] as u64,
    );
    let (lo, top) = (s.stack_lo.load(Ordering::Relaxed), s.stack_top.load(Ordering::Relaxed));
    // Copy only from inside the stack the watchdog was told about (a thread that reused an
    // exited thread's id would be stopped here).
    let len = if sp >= lo && sp < top { ((top - sp) as usize).min(STACK_COPY) } else { 0 };
    let buf = s.buf.load(Ordering::Relaxed);
    if !buf.is_null() && len > 0 {
        // SAFETY: [sp, sp + len) lies within this thread's own stack (bounded by its top, which
        // the watchdog took from pthread_getattr_np), and `buf` holds STACK_COPY bytes.
        unsafe { ptr::copy_nonoverlapping(sp as *const u8, buf, len) };
    }
    s.ip.store(ip, Ordering::Relaxed);
    s.sp.store(sp, Ordering::Relaxed);
    s.bp.store(bp, Ordering::Relaxed);
    s.len.store(if buf.is_null() { 0 } else { len }, Ordering::Relaxed);
    s.state.store(DONE, Ordering::Release);
}

/// Installs the handler once per process; `None` if the signal is taken or this is not x86-64.
fn install() -> Option<c_int> {
    *INSTALLED.get_or_init(|| {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return None;
        }
        let sig = capture_signal();
        // SAFETY: plain sigaction calls with zeroed, then filled, sigaction structs.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, ptr::null(), &mut old) != 0 || old.sa_sigaction != libc::SIG_DFL {
                return None;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            // SA_ONSTACK: run on the thread's alternate signal stack where it has one (std gives its
            // threads one), so a stall deep in recursion cannot overflow the stack it interrupted.
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            if libc::sigaction(sig, &act, ptr::null_mut()) != 0 {
                return None;
            }
        }
        // The buffers live for the rest of the process: a late handler may still write to them.
        for s in &SLOT_LIST {
            let buf: &'static mut [u8] = Box::leak(vec![0u8; STACK_COPY].into_boxed_slice());
            s.buf.store(buf.as_mut_ptr(), Ordering::Release);
        }
        Some(sig)
    })
}

/// Whether the capture handler is still the one installed for `sig`.
fn still_ours(sig: c_int) -> bool {
    // SAFETY: a query-only sigaction call into a zeroed struct.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, ptr::null(), &mut current) == 0 && current.sa_sigaction == on_signal as *const () as usize
    }
}

/// The calling thread's stack: its lowest and one-past-highest address.
pub(crate) fn current_stack() -> Option<std::ops::Range<u64>> {
    // SAFETY: pthread_getattr_np fills `attr`, which is destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut c_void = ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        ok.then(|| addr as u64..addr as u64 + size as u64)
    }
}

/// Registers and a copy of the stack of an interrupted thread.
pub(crate) struct RawStack {
    ip: u64,
    sp: u64,
    bp: u64,
    bytes: Vec<u8>,
}

/// Why a thread cannot be interrupted for a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// Capture is not available in this process (another handler owns the signal, or this is not
    /// Linux on x86-64).
    Unavailable,
    /// The thread blocks the signal.
    Blocked,
    /// A signal sent earlier has not been delivered yet (the thread is in an uninterruptible
    /// system call, such as disk I/O): another would only queue behind it.
    Pending,
    /// The thread did not answer in time, or has exited.
    NoAnswer,
    /// The signal is pending: the thread is inside a system call, and its stack will be copied
    /// when the call returns. [`collect`] takes it then.
    Deferred(Deferred),
    /// A capture of this thread is already waiting for it to return from a system call.
    Waiting,
}

/// A capture left armed for a thread inside a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deferred {
    slot: usize,
    generation: u64,
    tid: i32,
}

/// Whether `tid` blocks `sig` or already has it pending (`/proc/self/task/TID/status`: the
/// `SigBlk`, `SigPnd` and `ShdPnd` masks, signal N at bit N-1).
fn unreachable(tid: i32, sig: c_int) -> Option<Unreachable> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return Some(Unreachable::NoAnswer);
    };
    let bit = 1u64 << (sig - 1);
    let set = |name: &str| {
        status.lines().any(|l| {
            l.split_once(':').is_some_and(|(key, value)| {
                key == name && u64::from_str_radix(value.trim(), 16).is_ok_and(|mask| mask & bit != 0)
            })
        })
    };
    if set("SigBlk") {
        Some(Unreachable::Blocked)
    } else if set("SigPnd") || set("ShdPnd") {
        Some(Unreachable::Pending)
    } else {
        None
    }
}

/// Interrupts thread `tid` (whose stack spans `stack`) and copies its stack; an error if capture
/// is unavailable, the thread blocks the signal, or it did not answer within `wait` (a thread in
/// a system call answers when the call returns: [`Unreachable::Deferred`]).
pub(crate) fn interrupt(tid: i32, stack: Range<u64>, wait: Duration) -> Result<RawStack, Unreachable> {
    let sig = install().ok_or(Unreachable::Unavailable)?;
    if !still_ours(sig) {
        // The program installed its own handler for the signal since: never send it ours.
        return Err(Unreachable::Unavailable);
    }
    if SLOT_LIST.iter().any(|s| s.state.load(Ordering::Acquire) != IDLE && s.tid.load(Ordering::Relaxed) == tid) {
        return Err(Unreachable::Waiting);
    }
    if let Some(why) = unreachable(tid, sig) {
        return Err(why);
    }
    let (index, s) = {
        let _arming = CAPTURE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let Some((index, s)) = SLOT_LIST.iter().enumerate().find(|(_, s)| s.state.load(Ordering::Acquire) == IDLE)
        else {
            // Every slot waits for a thread in a system call.
            return Err(Unreachable::NoAnswer);
        };
        s.tid.store(tid, Ordering::Relaxed);
        s.stack_lo.store(stack.start, Ordering::Relaxed);
        s.stack_top.store(stack.end, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Relaxed);
        s.state.store(ARMED, Ordering::Release);
        (index, s)
    };
    // SAFETY: tgkill to a thread of our own process; a thread that has exited gives ESRCH.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if rc != 0 {
        disarm(s);
        return Err(Unreachable::NoAnswer);
    }
    let started = Instant::now();
    let mut looked = false;
    loop {
        match s.state.load(Ordering::Acquire) {
            DONE => return Ok(take(s)),
            ARMED => {
                let waited = started.elapsed();
                // Still pending after a moment: the thread is in a system call or waits for a
                // CPU. Its handler will run when it gets back to user space; the watchdog does not
                // wait for that and goes on with the other threads.
                if !looked && waited >= PENDING_AFTER {
                    looked = true;
                    if matches!(unreachable(tid, sig), Some(Unreachable::Pending)) {
                        break;
                    }
                }
                if waited >= wait {
                    break;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            // The handler is copying.
            _ => std::thread::sleep(Duration::from_micros(20)),
        }
    }
    // Not answered in time. A signal still pending means the thread is in a system call: the
    // handler runs when it returns, and the capture stays armed for it.
    if matches!(unreachable(tid, sig), Some(Unreachable::Pending)) {
        return Err(Unreachable::Deferred(Deferred {
            slot: index,
            generation: s.generation.load(Ordering::Relaxed),
            tid,
        }));
    }
    disarm(s);
    Err(Unreachable::NoAnswer)
}

/// How long a capture waits for the handler before it checks whether the signal is pending.
const PENDING_AFTER: Duration = Duration::from_millis(1);

/// The stack of a deferred capture, once its thread has returned from the system call and the
/// handler has run (`Ok(None)`: not yet). `Err` when the capture is gone (collected, or given up).
pub(crate) fn collect(d: Deferred) -> Result<Option<RawStack>, ()> {
    let s = &SLOT_LIST[d.slot];
    if s.generation.load(Ordering::Acquire) != d.generation || s.tid.load(Ordering::Relaxed) != d.tid {
        return Err(());
    }
    match s.state.load(Ordering::Acquire) {
        DONE => Ok(Some(take(s))),
        ARMED | BUSY => Ok(None),
        _ => Err(()),
    }
}

/// Gives a deferred capture up (its poll ended without the handler running, or its thread
/// exited).
pub(crate) fn abandon(d: Deferred) {
    let s = &SLOT_LIST[d.slot];
    if s.generation.load(Ordering::Acquire) == d.generation && s.tid.load(Ordering::Relaxed) == d.tid {
        disarm(s);
    }
}

/// Disarms a slot; a handler that began copying finishes quickly, so wait for it before the
/// buffer and the stack bounds are reused.
fn disarm(s: &Slot) {
    loop {
        match s.state.compare_exchange(ARMED, IDLE, Ordering::AcqRel, Ordering::Acquire) {
            // The handler's thread may be off its CPU mid-copy on a busy host: yield to it.
            Err(BUSY) => std::thread::yield_now(),
            Err(DONE) => {
                s.state.store(IDLE, Ordering::Release);
                break;
            }
            _ => break,
        }
    }
}

/// The registers and stack copy of a slot whose handler is done; frees the slot.
fn take(s: &Slot) -> RawStack {
    let len = s.len.load(Ordering::Relaxed);
    let buf = s.buf.load(Ordering::Acquire);
    // SAFETY: the handler wrote `len` <= STACK_COPY bytes to `buf` before publishing DONE.
    let bytes = if buf.is_null() { Vec::new() } else { unsafe { std::slice::from_raw_parts(buf, len) }.to_vec() };
    let raw = RawStack {
        ip: s.ip.load(Ordering::Relaxed),
        sp: s.sp.load(Ordering::Relaxed),
        bp: s.bp.load(Ordering::Relaxed),
        bytes,
    };
    s.state.store(IDLE, Ordering::Release);
    raw
}

/// Module memory the unwinder reads in place: a section of a loaded object, as the loader mapped
/// it. It is only read while the loader's lock is held and the set of loaded objects is the one it
/// was taken from ([`Unwinder::unwind`]), so it cannot be unmapped under the reader.
struct Mapped {
    ptr: *const u8,
    len: usize,
}

// SAFETY: read-only memory of a loaded object, read only under the loader's lock (see `Mapped`).
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: a mapped, readable range of a loaded object (see `Mapped`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A loaded object as `dl_iterate_phdr` shows it.
struct Loaded {
    path: String,
    main: bool,
    bias: u64,
    avma: Range<u64>,
    /// The executable segment, in file addresses.
    text_svma: Option<Range<u64>>,
    /// `.eh_frame_hdr` (file addresses) and the rest of its segment from `.eh_frame` on.
    eh_frame_hdr: Option<(Range<u64>, Mapped)>,
    eh_frame: Option<(Range<u64>, Mapped)>,
    build_id: Option<Vec<u8>>,
}

/// The loader's count of objects loaded and unloaded: while it is unchanged, every object the
/// unwinder knows is still mapped.
type Generation = (u64, u64);

/// Unwinds captured stacks into instruction addresses, with the loaded objects they point into.
pub(crate) struct Unwinder {
    unwinder: UnwinderX86_64<Mapped>,
    cache: CacheX86_64,
    generation: Option<Generation>,
    /// Every object declared so far (ids are indices); never forgotten.
    declared: Vec<ModuleDecl>,
    /// Declarations not yet taken for the recording.
    new: Vec<ModuleDecl>,
}

impl Unwinder {
    pub(crate) fn new() -> Self {
        Unwinder {
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            generation: None,
            declared: Vec::new(),
            new: Vec::new(),
        }
    }

    /// Modules declared since the last call, for the recording (before the stacks that use them).
    pub(crate) fn take_new_modules(&mut self) -> Vec<ModuleDecl> {
        std::mem::take(&mut self.new)
    }

    /// The instruction addresses of a captured stack (for lookup: return addresses minus one),
    /// innermost first. Unwinding reads the loaded objects' unwind tables where they are mapped,
    /// under the loader's lock, after checking no object was unloaded since they were taken.
    pub(crate) fn unwind(&mut self, raw: &RawStack) -> Vec<u64> {
        for _ in 0..3 {
            let me: *mut Unwinder = self;
            let done = with_loader_lock(|generation| {
                // SAFETY: `self` is borrowed mutably by this function for the whole call; the
                // callback runs synchronously inside it.
                let me = unsafe { &mut *me };
                (me.generation == Some(generation) && me.declared_contains(raw.ip)).then(|| me.walk(raw))
            });
            match done {
                Some(Some(addresses)) => return addresses,
                // Objects were loaded or unloaded since (or the stuck code is new): take them again.
                Some(None) => self.reload(),
                None => return Vec::new(),
            }
        }
        Vec::new()
    }

    fn declared_contains(&self, ip: u64) -> bool {
        self.declared.iter().any(|m| m.contains(ip))
    }

    fn walk(&mut self, raw: &RawStack) -> Vec<u64> {
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(raw.sp).ok_or(())? as usize;
            let bytes = raw.bytes.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut addresses = Vec::new();
        let mut frames = self.unwinder.iter_frames(
            raw.ip,
            UnwindRegsX86_64::new(raw.ip, raw.sp, raw.bp),
            &mut self.cache,
            &mut read_stack,
        );
        while let Ok(Some(frame)) = frames.next() {
            addresses.push(frame.address_for_lookup());
            if addresses.len() >= MAX_FRAMES {
                break;
            }
        }
        addresses
    }

    /// Takes the loaded objects again: a new framehop unwinder over them, and declarations for
    /// the ones not declared before.
    fn reload(&mut self) {
        let (generation, loaded) = loaded_objects();
        let mut unwinder = UnwinderX86_64::new();
        for m in loaded {
            let known = self.declared.iter().any(|d| d.start == m.avma.start && d.path == m.path);
            if !known {
                let decl = ModuleDecl {
                    id: self.declared.len() as u32,
                    path: m.path.clone(),
                    main: m.main,
                    build_id: m.build_id.clone(),
                    bias: m.bias,
                    start: m.avma.start,
                    end: m.avma.end,
                };
                self.declared.push(decl.clone());
                self.new.push(decl);
            }
            let (eh_frame_hdr_svma, eh_frame_hdr) = m.eh_frame_hdr.unzip();
            let (eh_frame_svma, eh_frame) = m.eh_frame.unzip();
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: m.text_svma,
                text: None,
                stubs_svma: None,
                stub_helper_svma: None,
                got_svma: None,
                unwind_info: None,
                eh_frame_svma,
                eh_frame,
                eh_frame_hdr_svma,
                eh_frame_hdr,
                debug_frame: None,
                text_segment_svma: None,
                text_segment: None,
            };
            unwinder.add_module(Module::new(m.path, m.avma, m.bias, info));
        }
        self.unwinder = unwinder;
        self.cache = CacheX86_64::new();
        self.generation = Some(generation);
    }
}

/// Runs `f` while holding the loader's lock (inside a `dl_iterate_phdr` callback), with the
/// loader's current [`Generation`]; `None` if the loader offers no object or no counts.
fn with_loader_lock<T, F: FnOnce(Generation) -> T>(f: F) -> Option<T> {
    struct Call<F, T> {
        f: Option<F>,
        out: Option<T>,
    }
    unsafe extern "C" fn first<F: FnOnce(Generation) -> T, T>(
        info: *mut libc::dl_phdr_info,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // The counts are in the struct since glibc 2.4; an older loader gives a shorter one.
        if size < std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs) + 8 {
            return 1;
        }
        // SAFETY: dl_iterate_phdr passes valid info and our own `Call` as data.
        let (info, call) = unsafe { (&*info, &mut *(data as *mut Call<F, T>)) };
        if let Some(f) = call.f.take() {
            call.out = Some(f((info.dlpi_adds, info.dlpi_subs)));
        }
        1
    }
    let mut call = Call { f: Some(f), out: None };
    // SAFETY: the callback only reads what the loader passes and writes into `call`.
    unsafe { libc::dl_iterate_phdr(Some(first::<F, T>), (&mut call as *mut Call<F, T>).cast()) };
    call.out
}

/// How the loader names the program itself.
const MAIN_PROGRAM: &str = "/proc/self/exe";

/// Every loaded object, with the loader's generation, read in one pass under its lock.
fn loaded_objects() -> (Generation, Vec<Loaded>) {
    struct Out {
        generation: Generation,
        loaded: Vec<Loaded>,
        exe: String,
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, size: usize, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes valid info and our own `Out` as data.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Out)) };
        if size >= std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs) + 8 {
            out.generation = (info.dlpi_adds, info.dlpi_subs);
        }
        // SAFETY: the loader's info for one object, valid during the callback.
        if let Some(m) = unsafe { object_of(info, &out.exe) } {
            out.loaded.push(m);
        }
        0
    }
    let exe = std::fs::read_link(MAIN_PROGRAM)
        .map_or_else(|_| MAIN_PROGRAM.to_string(), |p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string());
    let mut out = Out { generation: (0, 0), loaded: Vec::new(), exe };
    // SAFETY: the callback only reads what the loader passes and appends to `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut out as *mut Out).cast()) };
    (out.generation, out.loaded)
}

/// One loaded object from the loader's info: its segments, unwind tables and build id, all read
/// from where the loader mapped them.
///
/// # Safety
/// `info` must be the loader's info for a loaded object, read under its lock.
unsafe fn object_of(info: &libc::dl_phdr_info, exe: &str) -> Option<Loaded> {
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
    };
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let bias = info.dlpi_addr;
    let loads: Vec<Range<u64>> =
        phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).map(|p| p.p_vaddr..p.p_vaddr + p.p_memsz).collect();
    let lo = loads.iter().map(|r| r.start).min()?;
    let hi = loads.iter().map(|r| r.end).max()?;
    if lo >= hi {
        return None;
    }
    let main = name.is_empty();
    let path = if main {
        exe.to_string()
    } else if name.starts_with("linux-vdso") {
        "[vdso]".to_string()
    } else {
        name
    };
    let text_svma = phdrs
        .iter()
        .find(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
        .map(|p| p.p_vaddr..p.p_vaddr + p.p_memsz);
    let segment_end = |svma: u64| loads.iter().find(|r| r.contains(&svma)).map(|r| r.end);
    let mapped = |svma: Range<u64>| Mapped {
        ptr: (bias.wrapping_add(svma.start)) as *const u8,
        len: (svma.end - svma.start) as usize,
    };
    let mut eh_frame_hdr = None;
    let mut eh_frame = None;
    if let Some(p) = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME) {
        let hdr = p.p_vaddr..p.p_vaddr + p.p_memsz;
        if segment_end(hdr.start).is_some_and(|end| hdr.end <= end) {
            // The header lies within a loaded segment (checked above).
            let hdr_bytes = mapped(hdr.clone());
            if let Some(start) = eh_frame_start(&hdr_bytes, hdr.start)
                && let Some(end) = segment_end(start)
            {
                eh_frame = Some((start..end, mapped(start..end)));
            }
            eh_frame_hdr = Some((hdr, hdr_bytes));
        }
    }
    let build_id = phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE).find_map(|p| {
        let range = p.p_vaddr..p.p_vaddr + p.p_memsz;
        segment_end(range.start).filter(|end| range.end <= *end)?;
        gnu_build_id(&mapped(range))
    });
    Some(Loaded { path, main, bias, avma: bias + lo..bias + hi, text_svma, eh_frame_hdr, eh_frame, build_id })
}

/// Whether the program's file has line tables (`.debug_line`, or a `.gnu_debuglink` to a file
/// that has them); `None` when it cannot be told. Reads only the ELF section headers and their
/// names (a few kilobytes), never debug information.
pub(crate) fn program_has_line_tables() -> Option<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(MAIN_PROGRAM).ok()?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    // ELF64, little-endian only (x86-64).
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(&eh, 0x28), u16_at(&eh, 0x3a), u16_at(&eh, 0x3c), u16_at(&eh, 0x3e));
    if shentsize != 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return None;
    }
    let mut headers = vec![0u8; 64 * shnum as usize];
    f.seek(SeekFrom::Start(shoff)).ok()?;
    f.read_exact(&mut headers).ok()?;
    let strtab = &headers[64 * shstrndx as usize..][..64];
    let (str_off, str_size) = (u64_at(strtab, 0x18), u64_at(strtab, 0x20).min(1 << 20));
    let mut names = vec![0u8; str_size as usize];
    f.seek(SeekFrom::Start(str_off)).ok()?;
    f.read_exact(&mut names).ok()?;
    let named = |want: &[u8]| {
        headers.chunks_exact(64).any(|h| {
            let at = u32_at(h, 0) as usize;
            names.get(at..).is_some_and(|n| n.split(|c| *c == 0).next() == Some(want))
        })
    };
    Some(named(b".debug_line") || named(b".gnu_debuglink"))
}

/// The file address of `.eh_frame`, from the `eh_frame_ptr` field of `.eh_frame_hdr` (at file
/// address `hdr_svma`), for the pointer encodings linkers use.
fn eh_frame_start(hdr: &[u8], hdr_svma: u64) -> Option<u64> {
    let (&version, &encoding) = (hdr.first()?, hdr.get(1)?);
    if version != 1 {
        return None;
    }
    // DW_EH_PE_*: the low nibble is the value's format, the high one what it is relative to.
    let field = hdr.get(4..)?;
    let value = match encoding & 0x0f {
        0x03 => u64::from(u32::from_le_bytes(field.get(..4)?.try_into().ok()?)),
        0x0b => i64::from(i32::from_le_bytes(field.get(..4)?.try_into().ok()?)) as u64,
        0x04 | 0x0c => u64::from_le_bytes(field.get(..8)?.try_into().ok()?),
        _ => return None,
    };
    match encoding & 0x70 {
        0x00 => Some(value),
        // pc-relative: relative to the field itself, 4 bytes into the header.
        0x10 => Some((hdr_svma + 4).wrapping_add(value)),
        // Relative to the start of `.eh_frame_hdr`.
        0x30 => Some(hdr_svma.wrapping_add(value)),
        _ => None,
    }
}

/// The GNU build id in an ELF note segment.
fn gnu_build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let word =
            |i: usize| u32::from_le_bytes(notes[at + 4 * i..at + 4 * i + 4].try_into().unwrap_or_default()) as usize;
        let (namesz, descsz, kind) = (word(0), word(1), word(2));
        let name_at = at + 12;
        let desc_at = name_at.checked_add(align4(namesz)?)?;
        let next = desc_at.checked_add(align4(descsz)?)?;
        if next > notes.len() {
            return None;
        }
        // NT_GNU_BUILD_ID, owner "GNU\0".
        if kind == 3 && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") && descsz <= 64 {
            return Some(notes[desc_at..desc_at + descsz].to_vec());
        }
        at = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_found_with_its_build_id_and_unwind_tables() {
        let (generation, loaded) = loaded_objects();
        assert!(generation.0 > 0, "the loader counts objects");
        let main = loaded.iter().find(|m| m.main).expect("the program itself");
        assert!(main.path.starts_with('/') && std::path::Path::new(&main.path).exists(), "{}", main.path);
        assert!(main.eh_frame_hdr.is_some() && main.eh_frame.is_some(), "unwind tables found in memory");
        fn here() {}
        assert!(main.avma.contains(&(here as *const () as u64)), "this code is in the program");
        // The build id agrees with the file's own (read the way `readelf -n` does).
        let id = main.build_id.as_ref().expect("rustc links with a build id here");
        let file = std::fs::read(&main.path).unwrap();
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let in_file = file.windows(id.len()).any(|w| w == &id[..]);
        assert!(in_file, "build id {hex} not in {}", main.path);
    }

    #[test]
    fn this_test_binary_has_line_tables() {
        // The workspace's test profile has debug information.
        assert_eq!(program_has_line_tables(), Some(true));
    }

    #[test]
    fn notes_are_parsed_with_bounds() {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&3u32.to_le_bytes());
        note.extend_from_slice(&3u32.to_le_bytes());
        note.extend_from_slice(b"GNU\0");
        note.extend_from_slice(&[0xab, 0xcd, 0xef, 0]);
        assert_eq!(gnu_build_id(&note), Some(vec![0xab, 0xcd, 0xef]));
        for cut in 0..note.len() {
            assert_eq!(gnu_build_id(&note[..cut]), None, "cut at {cut}");
        }
        let mut huge = note.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(gnu_build_id(&huge), None);
    }

    #[test]
    fn a_thread_that_blocks_the_signal_is_not_sent_it() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: blocks one signal for this thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, capture_signal());
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut());
            }
            // SAFETY: gettid has no preconditions.
            tx.send((unsafe { libc::gettid() }, current_stack().unwrap())).unwrap();
            let _ = done_rx.recv();
        });
        let (tid, stack) = rx.recv().unwrap();
        let started = Instant::now();
        let result = interrupt(tid, stack, Duration::from_secs(10));
        assert_eq!(result.err(), Some(Unreachable::Blocked));
        assert!(started.elapsed() < Duration::from_secs(1), "no waiting for a signal that cannot arrive");
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
