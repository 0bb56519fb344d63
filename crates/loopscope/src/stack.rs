//! Stacks of stuck workers: captured in a signal handler, unwound and symbolized off it.
//!
//! The watchdog sends one real-time signal ([`capture_signal`]) to the stuck thread with
//! `tgkill`. The handler allocates nothing, takes no lock and calls nothing but `gettid`: it copies
//! the interrupted registers (`rip`, `rsp`, `rbp` from the `ucontext`) and the live part of the
//! thread's stack (from `rsp` up to the stack's top, at most [`STACK_COPY`] bytes) into a buffer
//! allocated in advance, then publishes them with one atomic store. The watchdog then unwinds
//! that copy with framehop (DWARF CFI from each loaded module's `.eh_frame`, so frames right
//! above a libc call are not lost as with frame pointers) and symbolizes every address with
//! inlined frames through the backtrace crate's resolver.
//!
//! One capture runs at a time in the process. The handler checks that it runs on the thread that
//! was asked for and that a capture is armed; anything else returns at once. The signal is
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
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use loopscope_core::model::StackFrame;
use object::{Object, ObjectSection};

/// Most bytes of stack copied per capture.
pub(crate) const STACK_COPY: usize = 256 * 1024;
/// Most frames kept per stack.
const MAX_FRAMES: usize = 128;

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const BUSY: u8 = 2;
const DONE: u8 = 3;

/// What the handler and the watchdog share: only atomics and a pointer to a buffer allocated
/// before any signal is sent.
struct Slot {
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

static SLOT: Slot = Slot {
    state: AtomicU8::new(IDLE),
    tid: AtomicI32::new(0),
    stack_lo: AtomicU64::new(0),
    stack_top: AtomicU64::new(0),
    buf: AtomicPtr::new(ptr::null_mut()),
    ip: AtomicU64::new(0),
    sp: AtomicU64::new(0),
    bp: AtomicU64::new(0),
    len: AtomicUsize::new(0),
};

/// Serializes captures between sessions (the handler never takes it).
static CAPTURE_LOCK: Mutex<()> = Mutex::new(());
/// Whether the handler is installed: `Some(signal)`, or `None` when capture is unavailable.
static INSTALLED: OnceLock<Option<c_int>> = OnceLock::new();

/// The signal used for captures: `SIGRTMIN + 7`, a real-time signal applications rarely use
/// (glibc reserves the first ones; SIGUSR1/2 and SIGPROF belong to applications and profilers).
pub(crate) fn capture_signal() -> c_int {
    libc::SIGRTMIN() + 7
}

extern "C" fn on_signal(_sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let s = &SLOT;
    if s.state.compare_exchange(ARMED, BUSY, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return;
    }
    // SAFETY: gettid is async-signal-safe (a plain system call).
    if unsafe { libc::gettid() } != s.tid.load(Ordering::Relaxed) || ctx.is_null() {
        s.state.store(ARMED, Ordering::Release);
        return;
    }
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
        // The buffer lives for the rest of the process: a late handler may still write to it.
        let buf: &'static mut [u8] = Box::leak(vec![0u8; STACK_COPY].into_boxed_slice());
        SLOT.buf.store(buf.as_mut_ptr(), Ordering::Release);
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

/// Interrupts thread `tid` (whose stack spans `stack`) and copies its stack; `None` if capture is
/// unavailable or the thread did not answer within `wait`.
pub(crate) fn interrupt(tid: i32, stack: Range<u64>, wait: Duration) -> Option<RawStack> {
    let sig = install()?;
    if !still_ours(sig) {
        // The program installed its own handler for the signal since: never send it ours.
        return None;
    }
    let _one_at_a_time = CAPTURE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let s = &SLOT;
    s.tid.store(tid, Ordering::Relaxed);
    s.stack_lo.store(stack.start, Ordering::Relaxed);
    s.stack_top.store(stack.end, Ordering::Relaxed);
    s.state.store(ARMED, Ordering::Release);
    // SAFETY: tgkill to a thread of our own process; a thread that has exited gives ESRCH.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    let deadline = Instant::now() + wait;
    let answered = rc == 0
        && loop {
            match s.state.load(Ordering::Acquire) {
                DONE => break true,
                ARMED if Instant::now() >= deadline => {
                    if s.state.compare_exchange(ARMED, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        break false;
                    }
                }
                _ => std::thread::sleep(Duration::from_micros(20)),
            }
        };
    if !answered {
        // Disarm; a handler that began copying finishes quickly, wait for it before the buffer and
        // the stack bounds are reused.
        loop {
            match s.state.compare_exchange(ARMED, IDLE, Ordering::AcqRel, Ordering::Acquire) {
                Err(BUSY) => std::hint::spin_loop(),
                Err(DONE) => {
                    s.state.store(IDLE, Ordering::Release);
                    break;
                }
                _ => break,
            }
        }
        return None;
    }
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
    Some(raw)
}

/// A loaded module as the unwinder and the symbolizer see it.
struct ModuleInfo {
    /// Where it is mapped.
    avma: Range<u64>,
    /// Its load bias (runtime address minus file address).
    bias: u64,
    /// Its file, for a helper process (`/proc/PID/exe` for the program itself).
    path: String,
    /// Its file name in frames; `None` for the program itself.
    name: Option<String>,
}

/// The loaded modules' unwind tables, for framehop, and the symbolizer helper if there is one.
pub(crate) struct Stacks {
    unwinder: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
    modules: Vec<ModuleInfo>,
    /// The helper program ([`set_symbolizer`]); `None` once it failed.
    helper_program: Option<std::path::PathBuf>,
    helper: Option<crate::symbolizer::Helper>,
}

/// The program to symbolize stacks with, out of process (the first session's choice holds).
static SYMBOLIZER: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Symbolizes stacks in a helper process started from `program` (see `symbolizer.rs`).
pub(crate) fn set_symbolizer(program: std::path::PathBuf) {
    let _ = SYMBOLIZER.set(program);
}

impl Stacks {
    fn new() -> Self {
        let mut s = Stacks {
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            modules: Vec::new(),
            helper_program: SYMBOLIZER.get().cloned(),
            helper: None,
        };
        s.load_modules();
        s
    }

    fn load_modules(&mut self) {
        for m in loaded_modules() {
            if self.modules.iter().any(|known| known.avma.start == m.avma.start) {
                continue;
            }
            if let Some(module) = unwind_module(&m) {
                let main = m.path == MAIN_PROGRAM;
                self.modules.push(ModuleInfo {
                    avma: m.avma.clone(),
                    bias: m.bias,
                    path: if main { format!("/proc/{}/exe", std::process::id()) } else { m.path.clone() },
                    name: (!main).then(|| m.path.rsplit('/').next().unwrap_or(&m.path).to_string()),
                });
                self.unwinder.add_module(module);
            }
        }
    }

    /// Symbolizes in the helper process; `None` if there is none or it failed (it is then not
    /// tried again).
    fn symbolize_in_helper(&mut self, addresses: &[u64]) -> Option<Vec<StackFrame>> {
        let program = self.helper_program.as_ref()?;
        if self.helper.is_none() {
            match crate::symbolizer::Helper::start(program) {
                Ok(h) => self.helper = Some(h),
                Err(_) => {
                    self.helper_program = None;
                    return None;
                }
            }
        }
        let requests = addresses
            .iter()
            .map(|&a| match self.modules.iter().find(|m| m.avma.contains(&a)) {
                Some(m) => crate::symbolizer::FrameRequest { path: m.path.clone(), svma: a.wrapping_sub(m.bias) },
                None => crate::symbolizer::FrameRequest { path: String::new(), svma: a },
            })
            .collect();
        let helper = self.helper.as_mut()?;
        match helper.resolve(requests) {
            Ok(symbols) => Some(
                addresses
                    .iter()
                    .zip(symbols)
                    .flat_map(|(&addr, syms)| frames_at(addr, syms.into_iter().map(|s| (s.function, s.file, s.line))))
                    .collect(),
            ),
            Err(_) => {
                self.helper = None;
                self.helper_program = None;
                None
            }
        }
    }

    /// Unwinds and symbolizes a captured stack (innermost frame first).
    pub(crate) fn unwind(&mut self, raw: &RawStack) -> Vec<StackFrame> {
        if !self.modules.iter().any(|m| m.avma.contains(&raw.ip)) {
            // Code loaded since we last looked (dlopen).
            self.load_modules();
        }
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
        let mut stack = match self.symbolize_in_helper(&addresses) {
            Some(stack) => stack,
            None => symbolize(&addresses),
        };
        for f in &mut stack {
            f.object = self.modules.iter().find(|m| m.avma.contains(&f.address)).and_then(|m| m.name.clone());
        }
        stack
    }
}

/// How the loader names the program itself.
const MAIN_PROGRAM: &str = "/proc/self/exe";

/// The process's unwinder, built on first use. Reading unwind tables and debug information
/// takes a while for a large program; it happens on the symbolizer thread, after the stack was
/// copied, so it never delays a capture.
static STACKS: OnceLock<Mutex<Stacks>> = OnceLock::new();

/// Unwinds and symbolizes a captured stack.
pub(crate) fn resolve(raw: &RawStack) -> Vec<StackFrame> {
    STACKS.get_or_init(|| Mutex::new(Stacks::new())).lock().unwrap_or_else(|p| p.into_inner()).unwind(raw)
}

/// Symbolizes return addresses in this process, expanding inlined calls (innermost first).
pub(crate) fn symbolize(addresses: &[u64]) -> Vec<StackFrame> {
    let mut out = Vec::new();
    for &addr in addresses {
        let mut here = Vec::new();
        backtrace::resolve(addr as *mut c_void, |sym| {
            here.push((
                sym.name().map(|n| format!("{n:#}")),
                sym.filename().map(|f| f.to_string_lossy().into_owned()),
                sym.lineno(),
            ));
        });
        out.extend(frames_at(addr, here));
    }
    out
}

/// The frames at one return address from its symbols (function, file, line), innermost first:
/// all but the last were inlined into the next. No symbol gives one frame named by the address.
fn frames_at(
    addr: u64,
    symbols: impl IntoIterator<Item = (Option<String>, Option<String>, Option<u32>)>,
) -> Vec<StackFrame> {
    let mut here: Vec<StackFrame> = symbols
        .into_iter()
        .map(|(function, file, line)| StackFrame {
            address: addr,
            function: function.unwrap_or_else(|| format!("{addr:#x}")),
            file,
            line,
            inlined: false,
            object: None,
        })
        .collect();
    if here.is_empty() {
        here.push(StackFrame {
            address: addr,
            function: format!("{addr:#x}"),
            file: None,
            line: None,
            inlined: false,
            object: None,
        });
    }
    let n = here.len();
    for (i, f) in here.iter_mut().enumerate() {
        f.inlined = i + 1 < n;
    }
    here
}

/// A loaded object: its file, load bias and mapped range.
struct Loaded {
    path: String,
    bias: u64,
    avma: Range<u64>,
}

fn loaded_modules() -> Vec<Loaded> {
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes valid info and our own Vec as data.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Loaded>)) };
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string owned by the loader.
            unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
        };
        let mut lo = u64::MAX;
        let mut hi = 0;
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                lo = lo.min(ph.p_vaddr);
                hi = hi.max(ph.p_vaddr + ph.p_memsz);
            }
        }
        let path = if name.is_empty() { MAIN_PROGRAM.to_string() } else { name };
        if lo < hi && !path.starts_with("linux-vdso") {
            out.push(Loaded { path, bias: info.dlpi_addr, avma: info.dlpi_addr + lo..info.dlpi_addr + hi });
        }
        0
    }
    let mut out: Vec<Loaded> = Vec::new();
    // SAFETY: the callback only reads what the loader passes and appends to `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut out as *mut Vec<Loaded>).cast()) };
    out
}

/// framehop's view of one module: its `.eh_frame` unwind tables, read from the file.
fn unwind_module(m: &Loaded) -> Option<Module<Vec<u8>>> {
    let file = std::fs::File::open(&m.path).ok()?;
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).ok()?;
    let section = |name: &str| {
        let s = obj.section_by_name(name)?;
        Some((s.address()..s.address() + s.size(), s.data().ok()?.to_vec()))
    };
    let (eh_frame_svma, eh_frame) = section(".eh_frame").unzip();
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr").unzip();
    let text_svma = obj.section_by_name(".text").map(|s| s.address()..s.address() + s.size());
    let got_svma = obj.section_by_name(".got").map(|s| s.address()..s.address() + s.size());
    // ELF addresses are relative to a base of 0; the load bias maps them to memory.
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma,
        got_svma,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        ..Default::default()
    };
    Some(Module::new(m.path.clone(), m.avma.clone(), m.bias, info))
}
