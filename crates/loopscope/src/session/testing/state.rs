//! What a test's session shares between its poll hooks, the blocking calls strict mode catches
//! and [`crate::allow_blocking`]: one [`TestState`] per test, and a thread-local that says which
//! test's poll the thread is in.
//!
//! The session's poll hooks (installed by `SessionBuilder::install` for a test session) set the
//! thread-local to the test's state before each poll and clear it after, so code that runs inside
//! a poll (a blocking call, `allow_blocking`) finds its test with one thread-local read, and code
//! outside any test's poll pays only that read.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use loopscope_core::model::StallCategory;

use crate::hot::{Shared, lock};

/// Test sessions running in the process: while there are none, the interposed libc functions go
/// straight to libc without reading the thread-local.
pub(crate) static TEST_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// The current thread's place in a test's poll. Only `Cell`s of plain values, without a
/// destructor: readable at any time, even while the thread's other thread-locals are torn down.
struct PollContext {
    /// The test whose task this thread polls, while it polls it (null otherwise).
    test: Cell<*const TestState>,
    /// When the poll began, in the session's nanoseconds.
    start_ns: Cell<u64>,
    /// Time spent inside `allow_blocking` during this poll.
    allowed_ns: Cell<u64>,
    /// `allow_blocking` sections entered and not left.
    allow_depth: Cell<u32>,
    /// Recording a blocking call: calls made while doing so are the recorder's own.
    busy: Cell<bool>,
    /// The thread's CPU time when the poll began.
    cpu_start_ns: Cell<u64>,
    /// Sleeps the poll asked for (not how long they took: a sleeping thread woken on time may
    /// still wait for a CPU).
    slept_ns: Cell<u64>,
    /// Time in the other interposed calls of the poll.
    called_ns: Cell<u64>,
    /// The thread's time waiting for a CPU (the kernel's run-queue delay) and its count of times
    /// given a CPU, when the poll began.
    sched_start: Cell<Option<(u64, u64)>>,
    /// The poll's worker and spawn site, as the recorder began it.
    poll: Cell<Option<(u32, u32)>>,
}

thread_local! {
    static POLL: PollContext = const {
        PollContext {
            test: Cell::new(std::ptr::null()),
            start_ns: Cell::new(0),
            allowed_ns: Cell::new(0),
            allow_depth: Cell::new(0),
            busy: Cell::new(false),
            cpu_start_ns: Cell::new(0),
            slept_ns: Cell::new(0),
            called_ns: Cell::new(0),
            sched_start: Cell::new(None),
            poll: Cell::new(None),
        }
    };
    /// This thread's `/proc/thread-self/schedstat`, opened once and closed when the thread ends.
    static SCHEDSTAT: SchedStat = SchedStat::open();
}

/// A thread's `/proc/thread-self/schedstat`, read with `pread`: its second field is the time the
/// thread has spent runnable but waiting for a CPU.
struct SchedStat(libc::c_int);

impl SchedStat {
    fn open() -> SchedStat {
        // A raw system call: `openat` as a C function may be interposed (`interpose.rs`).
        // SAFETY: a NUL-terminated path; the result is a descriptor or a negative error.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/proc/thread-self/schedstat".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        SchedStat(libc::c_int::try_from(fd).unwrap_or(-1))
    }

    /// The time the thread has waited for a CPU (nanoseconds) and how many times it has been
    /// given one (it gets a CPU again after every time it gave one up, or had it taken), if the
    /// kernel keeps the figures.
    fn read(&self) -> Option<(u64, u64)> {
        if self.0 < 0 {
            return None;
        }
        let mut buf = [0u8; 96];
        // SAFETY: reads at most `buf.len()` bytes into `buf` from a descriptor this struct owns.
        let n = unsafe { libc::syscall(libc::SYS_pread64, self.0, buf.as_mut_ptr(), buf.len(), 0) };
        let text = std::str::from_utf8(buf.get(..usize::try_from(n).ok()?)?).ok()?;
        let mut fields = text.split_whitespace().skip(1);
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    }
}

impl Drop for SchedStat {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: closes the descriptor this struct opened, once.
            unsafe { libc::close(self.0) };
        }
    }
}

/// The calling thread's time waiting for a CPU and its count of times given one, so far.
fn sched_counts() -> Option<(u64, u64)> {
    SCHEDSTAT.try_with(SchedStat::read).ok().flatten()
}

/// The calling thread's CPU time, exact to the moment (its CPU clock; `getrusage`'s and
/// `schedstat`'s figures move in scheduler ticks).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; the clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A poll that blocked for the threshold or longer, but spent all of it but less than the
/// threshold inside `allow_blocking`: a stall in it is excused.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Excused {
    pub(crate) worker: u32,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
}

/// What a poll that lasted half the threshold or longer did with its time, measured on its
/// thread: what is left over is what the host took (the thread waited for a CPU).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollAccount {
    pub(crate) worker: u32,
    /// The polled task's spawn site.
    pub(crate) site: u32,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// CPU time the thread got during the poll.
    pub(crate) cpu_ns: u64,
    /// Whether the thread left its CPU during the poll: it gave it up (it slept, waited for I/O,
    /// a lock, a page from disk) or had it taken by the kernel's scheduler.
    pub(crate) switched: bool,
    /// Sleeps the poll asked for.
    pub(crate) slept_ns: u64,
    /// Time in the other interposed C library calls (I/O, opens, lookups).
    pub(crate) called_ns: u64,
    /// Time the thread waited for a CPU during the poll (the kernel's run-queue delay), when the
    /// kernel keeps it: the host's share of the poll, exactly.
    pub(crate) waited_ns: Option<u64>,
}

impl PollAccount {
    /// The time the poll took itself, when it can be told: for a poll whose thread never left its
    /// CPU, what it computed (the rest of its length a hypervisor took, descheduling the virtual
    /// CPU, which no figure of the guest's kernel shows). For one that did, its length less the
    /// time it waited in a run queue; and if the kernel never saw it blocked in anything but a
    /// sleep (`quiet`), at most what it computed, slept (as asked) and spent in interposed calls.
    /// `None`: a poll that blocked where no figure reaches.
    ///
    /// Never less than what it verifiably did itself: its CPU time and the sleeps it asked for.
    /// The kernel's run-queue delay can overlap a sleep (with EEVDF's delayed dequeue a thread
    /// that goes to sleep may stay queued), so its length less that delay can fall short of
    /// them: measured, a 5 ms sleep with 3.3 ms of "run-queue delay" inside a 5.3 ms poll.
    pub(crate) fn own_ns(&self, quiet: bool) -> Option<u64> {
        let interposed = self.cpu_ns.saturating_add(self.slept_ns).saturating_add(self.called_ns);
        let verified = self.cpu_ns.saturating_add(self.slept_ns);
        let queued = self.waited_ns.map(|w| self.end_ns.saturating_sub(self.start_ns).saturating_sub(w));
        match (self.switched, quiet, queued) {
            (false, _, _) => Some(self.cpu_ns),
            (true, true, Some(q)) => Some(q.min(interposed).max(verified)),
            (true, true, None) => Some(interposed),
            (true, false, q) => q.map(|q| q.max(verified)),
        }
    }

    /// What a poll that took the threshold itself did with it, for a stall the watchdog saw only
    /// as the host holding it up, or not at all: computed, slept, or blocked in some call.
    pub(crate) fn category(&self, threshold_ns: u64) -> StallCategory {
        if self.cpu_ns >= threshold_ns {
            StallCategory::CpuBound
        } else if self.slept_ns >= threshold_ns {
            StallCategory::SyncSleep
        } else {
            StallCategory::Unknown
        }
    }
}

/// A blocking call strict mode caught inside a poll.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    /// The libc function (`nanosleep`, `read`, `getaddrinfo`, ...).
    pub(crate) call: &'static str,
    /// What it was called on: a file, a socket, a host name, a duration.
    pub(crate) detail: Option<String>,
    /// The category of blocking it is.
    pub(crate) category: StallCategory,
    /// The stack, as instruction addresses for lookup (innermost first).
    pub(crate) frames: Vec<u64>,
    pub(crate) worker: u32,
    pub(crate) site: u32,
    pub(crate) at_ns: u64,
    /// Calls with the same stack after this one.
    pub(crate) repeats: u64,
}

/// Distinct blocking calls kept per test; further ones are only counted.
const MAX_HITS: usize = 64;

/// A blocking call that lasted half the threshold or more, with its stack: a stall of the same
/// poll that the watchdog saw too late to name is explained by it.
#[derive(Clone, Debug)]
pub(crate) struct LongCall {
    pub(crate) worker: u32,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) call: &'static str,
    pub(crate) category: StallCategory,
    pub(crate) detail: Option<String>,
    pub(crate) frames: Vec<u64>,
}

/// Long calls kept per test.
const MAX_LONG_CALLS: usize = 1024;

/// Long polls accounted for per test; past them, stalls counted without an event are judged by
/// the recorder's tally alone.
pub(crate) const MAX_ACCOUNTS: usize = 10_000;

/// One test's state, shared by its session's hooks and the code its polls run.
pub(crate) struct TestState {
    shared: OnceLock<Arc<Shared>>,
    strict: bool,
    threshold_ns: u64,
    excused: Mutex<Vec<Excused>>,
    hits: Mutex<Vec<Hit>>,
    /// Blocking calls past [`MAX_HITS`] distinct ones.
    hits_dropped: std::sync::atomic::AtomicU64,
    long_calls: Mutex<Vec<LongCall>>,
    stuck: Mutex<Option<(u32, StallCategory)>>,
    /// Threads inside `allow_blocking` in a poll of this test, now.
    allowing: AtomicUsize,
    accounts: Mutex<Vec<PollAccount>>,
}

impl std::fmt::Debug for TestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestState").field("strict", &self.strict).field("threshold_ns", &self.threshold_ns).finish()
    }
}

impl TestState {
    pub(crate) fn new(strict: bool, threshold_ns: u64) -> Arc<TestState> {
        forget_polls_in_forked_children();
        TEST_SESSIONS.fetch_add(1, Ordering::Relaxed);
        Arc::new(TestState {
            shared: OnceLock::new(),
            strict,
            threshold_ns,
            excused: Mutex::new(Vec::new()),
            hits: Mutex::new(Vec::new()),
            hits_dropped: std::sync::atomic::AtomicU64::new(0),
            long_calls: Mutex::new(Vec::new()),
            stuck: Mutex::new(None),
            allowing: AtomicUsize::new(0),
            accounts: Mutex::new(Vec::new()),
        })
    }

    /// Ties the state to its session (once, at install).
    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::clone(shared));
    }

    /// Called by the before-poll hook, before the recorder's own.
    ///
    /// Besides the poll's start, it reads the thread's CPU clock and its scheduler figures (two
    /// system calls): a test's poll is judged by the time it took itself, not by the time the host
    /// kept it waiting.
    #[inline]
    pub(crate) fn enter_poll(&self) {
        let Some(shared) = self.shared.get() else { return };
        let (now, sched, _) = bracketed(shared);
        let cpu = thread_cpu_ns();
        let _ = POLL.try_with(|p| {
            p.sched_start.set(sched);
            p.poll.set(None);
            p.test.set(self);
            p.start_ns.set(now);
            p.allowed_ns.set(0);
            p.cpu_start_ns.set(cpu);
            p.slept_ns.set(0);
            p.called_ns.set(0);
        });
    }

    /// Called by the before-poll hook once the recorder's has begun the poll: its worker and
    /// spawn site, for its account.
    #[inline]
    pub(crate) fn poll_began(&self, poll: Option<(u32, u32)>) {
        let _ = POLL.try_with(|p| p.poll.set(poll));
    }

    /// Called by the after-poll hook, after the recorder's own (which ended the poll).
    #[inline]
    pub(crate) fn leave_poll(&self) {
        let Some(shared) = self.shared.get() else { return };
        let end_ns = shared.now_ns();
        let _ = POLL.try_with(|p| {
            p.test.set(std::ptr::null());
            // From half the threshold: a thread preempted between this poll's bounds and the
            // recorder's must not lose a stall its account.
            if end_ns.saturating_sub(p.start_ns.get()) >= self.threshold_ns / 2 {
                self.long_poll(shared, p);
            }
        });
    }

    /// A poll that lasted half the threshold or more: what it did with its time, and whether its
    /// allowed sections excuse it.
    #[cold]
    fn long_poll(&self, shared: &Shared, p: &PollContext) {
        let Some((worker, site)) = p.poll.get() else { return };
        let start_ns = p.start_ns.get();
        let cpu = thread_cpu_ns();
        // The poll's end is taken again after the scheduler's figures, which then fall inside it.
        let (_, end_sched, end_ns) = bracketed(shared);
        let took = end_ns.saturating_sub(start_ns);
        let sched = p.sched_start.get().zip(end_sched);
        let account = PollAccount {
            worker,
            site,
            start_ns,
            end_ns,
            cpu_ns: cpu.saturating_sub(p.cpu_start_ns.get()),
            // Unknown: as if it had.
            switched: sched.is_none_or(|((_, a), (_, b))| a != b),
            slept_ns: p.slept_ns.get(),
            called_ns: p.called_ns.get(),
            waited_ns: sched.map(|((a, _), (b, _))| b.saturating_sub(a)),
        };
        let mut accounts = lock(&self.accounts);
        if accounts.len() < MAX_ACCOUNTS {
            accounts.push(account);
        }
        drop(accounts);
        // Blocked for the threshold, but not without the allowed sections: any stall in this
        // poll was the allowed code's.
        let allowed = p.allowed_ns.get();
        if allowed > 0 && took.saturating_sub(allowed) < self.threshold_ns {
            let mut excused = lock(&self.excused);
            if excused.len() < 10_000 {
                excused.push(Excused { worker, start_ns, end_ns });
            }
        }
    }

    /// The kernel's view of the thread whose poll never returned (the test gave up on it).
    pub(crate) fn set_stuck(&self, worker: u32, category: StallCategory) {
        *lock(&self.stuck) = Some((worker, category));
    }

    pub(crate) fn stuck(&self) -> Option<(u32, StallCategory)> {
        *lock(&self.stuck)
    }

    pub(crate) fn accounts(&self) -> Vec<PollAccount> {
        lock(&self.accounts).clone()
    }

    #[cfg(test)]
    pub(crate) fn push_account(&self, account: PollAccount) {
        lock(&self.accounts).push(account);
    }

    pub(crate) fn excused(&self) -> Vec<Excused> {
        lock(&self.excused).clone()
    }

    /// Whether a thread is inside `allow_blocking` in a poll of this test (blocking as long as it
    /// likes).
    pub(crate) fn allowing(&self) -> bool {
        self.allowing.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn long_calls(&self) -> Vec<LongCall> {
        lock(&self.long_calls).clone()
    }

    pub(crate) fn hits(&self) -> (Vec<Hit>, u64) {
        (lock(&self.hits).clone(), self.hits_dropped.load(Ordering::Relaxed))
    }

    fn record(&self, mut hit: Hit) {
        let mut hits = lock(&self.hits);
        if let Some(h) = hits.iter_mut().find(|h| h.frames == hit.frames && h.call == hit.call) {
            h.repeats += 1;
        } else if hits.len() < MAX_HITS {
            hit.repeats = 0;
            hits.push(hit);
        } else {
            self.hits_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for TestState {
    fn drop(&mut self) {
        TEST_SESSIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `f` as a section of code that may block (see [`crate::allow_blocking`]).
pub(crate) fn allow_blocking<R>(f: impl FnOnce() -> R) -> R {
    struct Leave {
        start: Option<(*const TestState, u64)>,
    }
    impl Drop for Leave {
        fn drop(&mut self) {
            let _ = POLL.try_with(|p| {
                p.allow_depth.set(p.allow_depth.get().saturating_sub(1));
                // Counted only if the poll that began the section is still the thread's poll.
                if let Some((test, start)) = self.start
                    && std::ptr::eq(p.test.get(), test)
                {
                    // SAFETY: the pointer is the poll's test state, which its session's hooks keep
                    // alive while the poll runs.
                    let state = unsafe { &*test };
                    state.allowing.fetch_sub(1, Ordering::Relaxed);
                    let now = state.shared.get().map_or(start, |s| s.now_ns());
                    p.allowed_ns.set(p.allowed_ns.get().saturating_add(now.saturating_sub(start)));
                }
            });
        }
    }
    let start = POLL
        .try_with(|p| {
            p.allow_depth.set(p.allow_depth.get().saturating_add(1));
            let test = p.test.get();
            // SAFETY: as above.
            let state = unsafe { test.as_ref() }?;
            (p.allow_depth.get() == 1).then(|| {
                state.allowing.fetch_add(1, Ordering::Relaxed);
                (test, state.shared.get().map_or(0, |s| s.now_ns()))
            })
        })
        .ok()
        .flatten();
    let _leave = Leave { start };
    f()
}

/// The thread's scheduler figures (`sched_counts`) read between two readings of the clock that
/// lie close together, so that a preemption while they are read is in neither or both of the
/// poll's length and its run-queue wait (an account with one and not the other would take the
/// host's time for the poll's, or the poll's for the host's). The clock before and after.
fn bracketed(shared: &Shared) -> (u64, Option<(u64, u64)>, u64) {
    const CLOSE_NS: u64 = 100_000;
    let mut last = (0, None, 0);
    for _ in 0..4 {
        let before = shared.now_ns();
        let sched = sched_counts();
        let after = shared.now_ns();
        last = (before, sched, after);
        if after.saturating_sub(before) < CLOSE_NS {
            break;
        }
    }
    last
}

/// A child forked inside a test's poll (`std::process::Command` forks, and writes an `exec`
/// failure to a pipe before it exits) is in no poll: its calls are the C library's alone, never
/// recorded (recording allocates and locks, which a forked child of a threaded process must not).
fn forget_polls_in_forked_children() {
    extern "C" fn in_child() {
        // Only a `Cell` store: the child's one thread, right after `fork`.
        let _ = POLL.try_with(|p| p.test.set(std::ptr::null()));
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only stores into a thread-local `Cell`.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// A call to a blocking function, begun inside a test's poll: [`Call::leave`] records it once it
/// returned, if strict mode wants every such call or it lasted long enough to explain a stall.
pub(crate) struct Call {
    test: *const TestState,
    start_ns: u64,
}

/// Begins a call to a blocking function: `Some` inside a poll of a test's session (outside
/// `allow_blocking`). One relaxed load when no test runs in the process, one thread-local read
/// when one does.
#[inline]
pub(crate) fn enter() -> Option<Call> {
    if TEST_SESSIONS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let test = POLL
        .try_with(|p| {
            let test = p.test.get();
            (!test.is_null() && p.allow_depth.get() == 0 && !p.busy.get()).then_some(test)
        })
        .ok()
        .flatten()?;
    // SAFETY: the thread is inside a poll of this test's session, whose hooks keep it alive.
    let start_ns = unsafe { &*test }.shared.get()?.now_ns();
    Some(Call { test, start_ns })
}

impl Call {
    /// Records the call that just returned: in strict mode always, otherwise when it lasted half
    /// the threshold or more (it may explain a stall the watchdog saw too late to name). `what`
    /// says what kind of blocking the call is and on what, or `None` when it could not block
    /// (a non-blocking descriptor); it runs only when needed.
    /// `sleep_ns` is how long a sleep asked for, for the poll's account.
    #[inline]
    pub(crate) fn leave(
        self,
        call: &'static str,
        sleep_ns: Option<u64>,
        what: impl FnOnce() -> Option<(StallCategory, Option<String>)>,
    ) {
        // SAFETY: as in `enter`: the poll is still running.
        let state = unsafe { &*self.test };
        let Some(shared) = state.shared.get() else { return };
        let end_ns = shared.now_ns();
        let took = end_ns.saturating_sub(self.start_ns);
        let _ = POLL.try_with(|p| match sleep_ns {
            Some(asked) => p.slept_ns.set(p.slept_ns.get().saturating_add(asked.min(took))),
            None => p.called_ns.set(p.called_ns.get().saturating_add(took)),
        });
        let long = took >= state.threshold_ns / 2;
        if state.strict || long {
            self.record(state, shared, end_ns, call, sleep_ns, what);
        }
    }

    #[cold]
    fn record(
        self,
        state: &TestState,
        shared: &Shared,
        end_ns: u64,
        call: &'static str,
        sleep_ns: Option<u64>,
        what: impl FnOnce() -> Option<(StallCategory, Option<String>)>,
    ) {
        let long = end_ns.saturating_sub(self.start_ns) >= state.threshold_ns / 2;
        let _ = POLL.try_with(|p| p.busy.set(true));
        // The program's call has returned; what it left in errno is kept.
        // SAFETY: errno is this thread's.
        let errno = unsafe { *libc::__errno_location() };
        // Never let a failure here reach the program.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // A call inside `block_in_place` (the worker handed over first) is recorded all the
            // same: its stack says so, and the verdict leaves it out.
            let Some((worker, site)) = shared.current_poll() else { return };
            let Some((category, mut detail)) = what() else { return };
            if let (Some(asked), None) = (sleep_ns, &detail) {
                detail = Some(loopscope_core::units::fmt_duration(std::time::Duration::from_nanos(asked)));
            }
            // Still inside the interposed function: the stack is the call's.
            let frames = backtrace();
            if long {
                let mut calls = lock(&state.long_calls);
                if calls.len() < MAX_LONG_CALLS {
                    calls.push(LongCall {
                        worker,
                        start_ns: self.start_ns,
                        end_ns,
                        call,
                        category,
                        detail: detail.clone(),
                        frames: frames.clone(),
                    });
                }
            }
            if state.strict {
                state.record(Hit { call, detail, category, frames, worker, site, at_ns: self.start_ns, repeats: 0 });
            }
        }));
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
        let _ = POLL.try_with(|p| p.busy.set(false));
    }
}

/// Most frames kept per blocking call.
const MAX_FRAMES: usize = 64;

unsafe extern "C" {
    fn _Unwind_Backtrace(trace: extern "C" fn(ctx: *mut c_void, arg: *mut c_void) -> c_int, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
}

/// The calling thread's stack, as instruction addresses for lookup (return addresses minus one),
/// innermost first, through the unwinder std uses for panics (DWARF CFI).
fn backtrace() -> Vec<u64> {
    extern "C" fn each(ctx: *mut c_void, arg: *mut c_void) -> c_int {
        // SAFETY: `arg` is the `Vec` below, borrowed for the duration of `_Unwind_Backtrace`.
        let frames = unsafe { &mut *(arg as *mut Vec<u64>) };
        // SAFETY: `ctx` is the unwinder's context for this frame.
        let ip = unsafe { _Unwind_GetIP(ctx) } as u64;
        if ip == 0 {
            return 5; // _URC_END_OF_STACK
        }
        frames.push(ip - 1);
        if frames.len() >= MAX_FRAMES { 5 } else { 0 }
    }
    let mut frames: Vec<u64> = Vec::with_capacity(MAX_FRAMES);
    // SAFETY: the callback only pushes into `frames`, within its capacity.
    unsafe { _Unwind_Backtrace(each, (&mut frames as *mut Vec<u64>).cast()) };
    frames
}
