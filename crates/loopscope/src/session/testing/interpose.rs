//! Strict mode's view of blocking calls: the usual blocking functions of the C library, defined
//! again in the test binary so that the program's calls reach these first.
//!
//! A function defined in the executable takes precedence over the C library's for every call the
//! linker resolves in the executable (std's `thread::sleep`, `fs`, `net`; C code linked in). Each
//! one asks [`super::state::watching`] (one relaxed load while no strict test runs, one
//! thread-local read while one does) and, inside a test's poll, times the call to the C
//! library's function (found with `dlsym(RTLD_NEXT)`) and records it with its stack: every call
//! in strict mode, and any that lasted half the threshold (which explains a stall the watchdog
//! saw too late to name). Nothing else changes: same arguments, same result, same `errno`.
//!
//! Not seen: calls the C library makes to itself (its internal aliases), raw system calls
//! (`syscall(SYS_futex, ..)`: std's `Mutex`, `Condvar`, `thread::park`, and so
//! `futures::executor::block_on`), calls made by a shared library that does not go through the
//! executable's symbols, and calls inlined as `syscall` instructions. The stall detector still
//! catches those when they last the threshold. Linux, x86-64 and glibc only.

use std::ffi::{c_char, c_int, c_uint, c_void};

use libc::{
    addrinfo, clockid_t, epoll_event, iovec, msghdr, nfds_t, off_t, off64_t, pid_t, pollfd, size_t, sockaddr,
    socklen_t, ssize_t, timespec, useconds_t,
};
use loopscope_core::model::StallCategory;

use super::state::enter;

/// The C library's definition of `$name`, of type `$ty`, looked up once.
macro_rules! next {
    ($name:expr, $ty:ty) => {{
        static AT: std::sync::atomic::AtomicPtr<c_void> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
        let mut at = AT.load(std::sync::atomic::Ordering::Relaxed);
        if at.is_null() {
            // SAFETY: a NUL-terminated name; RTLD_NEXT finds the next definition after this object's.
            at = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) };
            AT.store(at, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: the C library's function of that name has this signature.
        (!at.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, $ty>(at) })
    }};
}

/// Defines `$name` with the C library's signature: begins a call ([`enter`]), calls the C
/// library's function, and records the call with what `$what` says it was (see
/// `super::state::Call::leave`); `$sleeps` is how long a sleep asks for. `$fail` is what the
/// function returns if the C library had none (never with glibc), with `errno` set to `ENOSYS`.
macro_rules! interpose {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $t:ty),*) -> $r:ty, fail $fail:expr, what $what:expr) => {
        interpose!($(#[$doc])* fn $name($($arg: $t),*) -> $r, fail $fail, sleeps None, what $what);
    };
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $t:ty),*) -> $r:ty, fail $fail:expr, sleeps $sleeps:expr, what $what:expr) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        unsafe extern "C" fn $name($($arg: $t),*) -> $r {
            let call = enter();
            // Before the call: std passes one `timespec` as both the request and the remainder,
            // which an interrupted sleep overwrites.
            let asked: Option<u64> = if call.is_some() { $sleeps } else { None };
            let result = match next!(stringify!($name), unsafe extern "C" fn($($t),*) -> $r) {
                // SAFETY: the caller's arguments, passed on unchanged to the function they meant.
                Some(f) => unsafe { f($($arg),*) },
                None => {
                    // SAFETY: errno is this thread's.
                    unsafe { *libc::__errno_location() = libc::ENOSYS };
                    $fail
                }
            };
            if let Some(call) = call {
                call.leave(stringify!($name), asked, || $what);
            }
            result
        }
    };
}

/// A relative sleep's length.
fn asked(ts: *const timespec) -> Option<std::time::Duration> {
    // SAFETY: the caller passed a valid timespec or null, as the C library requires.
    let ts = unsafe { ts.as_ref() }?;
    Some(std::time::Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32))
}

fn nanos(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

type What = Option<(StallCategory, Option<String>)>;

/// A sleep (its length, when it asked for one, is added by `Call::leave`).
fn sleeping() -> What {
    Some((StallCategory::SyncSleep, None))
}

/// A call on a descriptor: blocking on a file, directory or block device always; on anything else
/// unless it is non-blocking (`O_NONBLOCK`, `MSG_DONTWAIT`). Writes to standard output and error
/// are left alone (printing and logging).
fn on_fd(fd: c_int, writes: bool, flags: c_int) -> What {
    if writes && (fd == 1 || fd == 2) {
        return None;
    }
    // SAFETY: fstat into a zeroed struct; a bad descriptor only makes it fail.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat64(fd, &mut st) } != 0 {
        return None;
    }
    let kind = st.st_mode & libc::S_IFMT;
    let always = kind == libc::S_IFREG || kind == libc::S_IFBLK || kind == libc::S_IFDIR;
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if !always && (fl < 0 || fl & libc::O_NONBLOCK != 0 || flags & libc::MSG_DONTWAIT != 0) {
        return None;
    }
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.to_string_lossy().into_owned());
    let category = if kind == libc::S_IFSOCK { StallCategory::NetworkIo } else { StallCategory::FileIo };
    Some((category, target))
}

fn on_path(path: *const c_char) -> What {
    // SAFETY: the C library requires a NUL-terminated path.
    let path = (!path.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(path) }.to_string_lossy().into_owned());
    Some((StallCategory::FileIo, path))
}

/// A socket call that waits unless the socket is non-blocking.
fn on_socket(fd: c_int) -> What {
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    (fl >= 0 && fl & libc::O_NONBLOCK == 0).then_some((StallCategory::NetworkIo, None))
}

interpose!(
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int,
    fail -1,
    sleeps nanos(asked(req)).or(Some(0)),
    what sleeping()
);
// An absolute deadline (`TIMER_ABSTIME`) is counted as the time the call took.
interpose!(
    fn clock_nanosleep(clock: clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec) -> c_int,
    fail libc::ENOSYS,
    sleeps if flags & libc::TIMER_ABSTIME == 0 { nanos(asked(req)).or(Some(0)) } else { None },
    what sleeping()
);
interpose!(
    fn usleep(usec: useconds_t) -> c_int,
    fail -1,
    sleeps Some(u64::from(usec) * 1_000),
    what sleeping()
);
interpose!(
    fn sleep(secs: c_uint) -> c_uint,
    fail secs,
    sleeps Some(u64::from(secs) * 1_000_000_000),
    what sleeping()
);
interpose!(fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t, fail -1, what on_fd(fd, false, 0));
interpose!(fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t, fail -1, what on_fd(fd, true, 0));
interpose!(
    fn pread(fd: c_int, buf: *mut c_void, count: size_t, offset: off_t) -> ssize_t,
    fail -1,
    what on_fd(fd, false, 0)
);
interpose!(
    fn pread64(fd: c_int, buf: *mut c_void, count: size_t, offset: off64_t) -> ssize_t,
    fail -1,
    what on_fd(fd, false, 0)
);
interpose!(
    fn pwrite(fd: c_int, buf: *const c_void, count: size_t, offset: off_t) -> ssize_t,
    fail -1,
    what on_fd(fd, true, 0)
);
interpose!(
    fn pwrite64(fd: c_int, buf: *const c_void, count: size_t, offset: off64_t) -> ssize_t,
    fail -1,
    what on_fd(fd, true, 0)
);
interpose!(fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t, fail -1, what on_fd(fd, false, 0));
interpose!(fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t, fail -1, what on_fd(fd, true, 0));
interpose!(
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t,
    fail -1,
    what on_fd(fd, false, flags)
);
interpose!(
    fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        len: size_t,
        flags: c_int,
        addr: *mut sockaddr,
        addrlen: *mut socklen_t
    ) -> ssize_t,
    fail -1,
    what on_fd(fd, false, flags)
);
interpose!(fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t, fail -1, what on_fd(fd, false, flags));
interpose!(
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t,
    fail -1,
    what on_fd(fd, true, flags)
);
interpose!(
    fn sendto(
        fd: c_int,
        buf: *const c_void,
        len: size_t,
        flags: c_int,
        addr: *const sockaddr,
        addrlen: socklen_t
    ) -> ssize_t,
    fail -1,
    what on_fd(fd, true, flags)
);
interpose!(fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t, fail -1, what on_fd(fd, true, flags));
interpose!(fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int, fail -1, what on_socket(fd));
interpose!(fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int, fail -1, what on_socket(fd));
interpose!(
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int,
    fail -1,
    what on_socket(fd)
);
// `open` and `openat` are variadic in C: the mode is read only with O_CREAT or O_TMPFILE. On
// x86-64 a variadic call passes it in the same register as a fixed argument would be, so it is
// taken as one and passed on (unused otherwise, as the C library does).
interpose!(
    /// `open(2)`; the mode as a fixed argument (see above).
    fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int, fail -1, what on_path(path)
);
interpose!(
    /// `open64`; the mode as a fixed argument (see above).
    fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int, fail -1, what on_path(path)
);
interpose!(
    /// `openat(2)`; the mode as a fixed argument (see above).
    fn openat(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int, fail -1, what on_path(path)
);
interpose!(
    /// `openat64`; the mode as a fixed argument (see above).
    fn openat64(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int, fail -1, what on_path(path)
);
interpose!(fn fsync(fd: c_int) -> c_int, fail -1, what on_fd(fd, true, 0));
interpose!(fn fdatasync(fd: c_int) -> c_int, fail -1, what on_fd(fd, true, 0));
interpose!(
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int,
    fail libc::EAI_SYSTEM,
    // SAFETY: a NUL-terminated host name or null, as getaddrinfo requires.
    what Some((StallCategory::Dns, (!node.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(node) }.to_string_lossy().into_owned())))
);
interpose!(
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t,
    fail -1,
    what (options & libc::WNOHANG == 0).then(|| (StallCategory::Unknown, Some(format!("child process {pid}"))))
);
interpose!(
    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int,
    fail -1,
    what (timeout != 0).then(|| (StallCategory::NetworkIo, Some(format!("timeout {timeout}ms"))))
);
interpose!(
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int) -> c_int,
    fail -1,
    what (timeout != 0).then(|| (StallCategory::NestedExecutor, Some(format!("timeout {timeout}ms"))))
);
