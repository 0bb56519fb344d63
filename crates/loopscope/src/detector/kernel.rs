//! The kernel's view of a thread of this process, from `/proc/self/task/<tid>` and its CPU clock:
//! the system call it is blocked in and what its file descriptor points at, its CPU time, and how
//! long it waited for a CPU. Reading these for the process's own threads needs no privilege.

use loopscope_core::model::StallCategory;

/// CPU time between two samples over the wall time between them, in percent.
pub(crate) fn cpu_share(before: Option<u64>, after: Option<u64>, wall_ns: u64) -> u32 {
    let (Some(a), Some(b)) = (before, after) else { return 0 };
    (b.saturating_sub(a).saturating_mul(100) / wall_ns.max(1)).min(100) as u32
}

/// A stuck thread in user space is either computing or waiting to be given a CPU. A computing
/// thread gets a share of a CPU even on a busy host; one that got almost none was held up by the
/// host, not by its own code.
pub(crate) fn running_category(cpu_percent: u32) -> StallCategory {
    if cpu_percent >= CPU_BOUND_PERCENT { StallCategory::CpuBound } else { StallCategory::Preempted }
}

/// Nanoseconds the thread has spent on a CPU, exact to the moment of the call (the kernel updates
/// a running thread's figure on demand; `/proc/.../schedstat` lags by up to a scheduler tick).
///
/// The clock id is Linux's per-thread CPU clock, `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`, the
/// same value glibc's `pthread_getcpuclockid` builds; for a thread that has exited the call fails
/// with `EINVAL` instead of touching freed memory as a stale `pthread_t` could.
pub(crate) fn thread_cpu_ns(tid: i32) -> Option<u64> {
    let clock: libc::clockid_t = (!tid << 3) | 6;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; an invalid clock id only makes the call fail.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Share of a CPU (in percent) above which a stuck thread in user space is computing.
const CPU_BOUND_PERCENT: u32 = 10;

/// Share of a CPU (in percent) above which a stuck thread was computing whatever system call it
/// is seen in at one instant: a poll that spent 94% of its time on a CPU and is caught in a
/// `read` at the end was slowed by its computing, not by the read.
const COMPUTING_PERCENT: u32 = 80;

/// Classifies a stuck thread from its current system call (`/proc/self/task/<tid>/syscall`).
/// Returns the category, the call's name and its file descriptor's target.
pub(crate) fn classify(tid: i32, cpu_percent: u32) -> (StallCategory, Option<String>, Option<String>) {
    let Ok(line) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return (StallCategory::Unknown, None, None);
    };
    let mut fields = line.split_whitespace();
    let first = fields.next().unwrap_or("");
    if first == "running" {
        return (running_category(cpu_percent), None, None);
    }
    let Ok(nr) = first.parse::<i64>() else { return (StallCategory::Unknown, None, None) };
    if cpu_percent >= COMPUTING_PERCENT {
        let name = syscall_name(nr).map_or_else(|| format!("syscall {nr}"), str::to_string);
        return (StallCategory::CpuBound, Some(name), None);
    }
    let arg0 = fields.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    let name = syscall_name(nr).map_or_else(|| format!("syscall {nr}"), str::to_string);
    let (category, target) = match SyscallKind::of(nr) {
        SyscallKind::Sleep => (StallCategory::SyncSleep, None),
        SyscallKind::Futex => (StallCategory::LockWait, None),
        SyscallKind::EventLoop => (StallCategory::NestedExecutor, None),
        SyscallKind::Path => (StallCategory::FileIo, None),
        SyscallKind::Fd => match arg0.and_then(|fd| fd_target(fd as i32)) {
            Some(t) => (fd_category(&t), Some(t)),
            None => (StallCategory::Unknown, None),
        },
        SyscallKind::Socket => match arg0.and_then(|fd| fd_target(fd as i32)) {
            Some(t) => (fd_category(&t), Some(t)),
            None => (StallCategory::NetworkIo, None),
        },
        SyscallKind::Poll => match arg0.and_then(first_polled_fd).and_then(fd_target) {
            Some(t) => (fd_category(&t), Some(t)),
            None => (StallCategory::NetworkIo, None),
        },
        SyscallKind::Other => (StallCategory::Unknown, None),
    };
    (category, Some(name), target)
}

/// The category of blocking I/O on a file descriptor that points at `target`.
fn fd_category(target: &str) -> StallCategory {
    if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
        if is_dns_socket(inode) { StallCategory::Dns } else { StallCategory::NetworkIo }
    } else if target.starts_with("anon_inode:") {
        StallCategory::Unknown
    } else {
        StallCategory::FileIo
    }
}

fn fd_target(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// Whether the UDP socket with this inode talks to port 53 (a resolver query in progress). The
/// TCP tables are not read: they can take milliseconds on a busy host, and a resolver's TCP
/// fallback is recognised from the stack instead (`getaddrinfo`).
fn is_dns_socket(inode: &str) -> bool {
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(9) == Some(&inode) && f.get(2).is_some_and(|remote| remote.ends_with(":0035"))
            })
        })
    })
}

/// The first descriptor of the `pollfd` array a thread is blocked in `poll` on, read with
/// `process_vm_readv` (which fails cleanly instead of faulting if the memory is gone).
fn first_polled_fd(addr: u64) -> Option<i32> {
    let mut buf = [0u8; 8];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: reads from our own process into a local buffer of the stated length; a bad remote
    // address makes the call fail with EFAULT, it cannot fault.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == 8).then(|| i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]))
}

#[derive(Clone, Copy)]
enum SyscallKind {
    Sleep,
    Futex,
    /// Blocking on a file descriptor given as the first argument.
    Fd,
    /// A socket call with the descriptor first.
    Socket,
    /// poll/ppoll: the first argument points at the descriptors.
    Poll,
    /// An open or stat of a path (a FIFO's open blocks until the other side opens it).
    Path,
    /// epoll/select: an event loop inside the poll.
    EventLoop,
    Other,
}

use SyscallKind as K;

/// The x86-64 system calls a blocked worker is commonly found in.
#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(i64, &str, SyscallKind)] = &[
    (0, "read", K::Fd),
    (1, "write", K::Fd),
    (2, "open", K::Path),
    (3, "close", K::Fd),
    (4, "stat", K::Path),
    (5, "fstat", K::Fd),
    (6, "lstat", K::Path),
    (7, "poll", K::Poll),
    (16, "ioctl", K::Fd),
    (17, "pread64", K::Fd),
    (18, "pwrite64", K::Fd),
    (19, "readv", K::Fd),
    (20, "writev", K::Fd),
    (21, "access", K::Path),
    (23, "select", K::EventLoop),
    (34, "pause", K::Sleep),
    (35, "nanosleep", K::Sleep),
    (40, "sendfile", K::Fd),
    (42, "connect", K::Socket),
    (43, "accept", K::Socket),
    (44, "sendto", K::Socket),
    (45, "recvfrom", K::Socket),
    (46, "sendmsg", K::Socket),
    (47, "recvmsg", K::Socket),
    (61, "wait4", K::Other),
    (72, "fcntl", K::Fd),
    (73, "flock", K::Fd),
    (74, "fsync", K::Fd),
    (75, "fdatasync", K::Fd),
    (76, "truncate", K::Path),
    (77, "ftruncate", K::Fd),
    (78, "getdents", K::Fd),
    (82, "rename", K::Path),
    (83, "mkdir", K::Path),
    (84, "rmdir", K::Path),
    (85, "creat", K::Path),
    (86, "link", K::Path),
    (87, "unlink", K::Path),
    (88, "symlink", K::Path),
    (89, "readlink", K::Path),
    (90, "chmod", K::Path),
    (162, "sync", K::Path),
    (202, "futex", K::Futex),
    (217, "getdents64", K::Fd),
    (230, "clock_nanosleep", K::Sleep),
    (232, "epoll_wait", K::EventLoop),
    (247, "waitid", K::Other),
    (257, "openat", K::Path),
    (258, "mkdirat", K::Path),
    (262, "newfstatat", K::Path),
    (263, "unlinkat", K::Path),
    (264, "renameat", K::Path),
    (270, "pselect6", K::EventLoop),
    (271, "ppoll", K::Poll),
    (275, "splice", K::Fd),
    (277, "sync_file_range", K::Fd),
    (281, "epoll_pwait", K::EventLoop),
    (285, "fallocate", K::Fd),
    (288, "accept4", K::Socket),
    (295, "preadv", K::Fd),
    (296, "pwritev", K::Fd),
    (299, "recvmmsg", K::Socket),
    (306, "syncfs", K::Fd),
    (307, "sendmmsg", K::Socket),
    (316, "renameat2", K::Path),
    (326, "copy_file_range", K::Fd),
    (332, "statx", K::Path),
    (437, "openat2", K::Path),
    (441, "epoll_pwait2", K::EventLoop),
];

#[cfg(not(target_arch = "x86_64"))]
const SYSCALLS: &[(i64, &str, SyscallKind)] = &[];

fn syscall_name(nr: i64) -> Option<&'static str> {
    SYSCALLS.iter().find(|(n, _, _)| *n == nr).map(|(_, name, _)| *name)
}

impl SyscallKind {
    fn of(nr: i64) -> SyscallKind {
        SYSCALLS.iter().find(|(n, _, _)| *n == nr).map_or(SyscallKind::Other, |(_, _, k)| *k)
    }
}

/// The CPU time a thread has had and the time it spent runnable, waiting for a CPU, in
/// nanoseconds (`/proc/self/task/<tid>/schedstat`: on-CPU time, run-queue delay, time slices).
pub(crate) fn schedstat(tid: i32) -> Option<(u64, u64)> {
    let line = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut fields = line.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(cpu)), Some(Ok(delay))) => Some((cpu, delay)),
        _ => None,
    }
}

/// How often the thread gave up its CPU itself (to sleep or wait) and how often it was
/// preempted (`voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` in
/// `/proc/self/task/<tid>/status`).
pub(crate) fn switches(tid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
    Some((field("voluntary_ctxt_switches:")?, field("nonvoluntary_ctxt_switches:")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_threads_switches_are_counted() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let (before, _) = switches(tid).expect("this thread's status");
        // Sleeping gives the CPU up: a voluntary switch.
        std::thread::sleep(Duration::from_millis(2));
        let (after, _) = switches(tid).unwrap();
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn another_threads_cpu_time_is_read_exactly() {
        let (tx, rx) = std::sync::mpsc::channel();
        let spinner = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(50) {
                std::hint::spin_loop();
            }
        });
        let tid = rx.recv().unwrap();
        let a = thread_cpu_ns(tid).expect("a live thread's CPU clock");
        spinner.join().unwrap();
        assert_eq!(thread_cpu_ns(tid), None, "an exited thread's clock is refused");
        let _ = a;
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let before = thread_cpu_ns(me).unwrap();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let spent = thread_cpu_ns(me).unwrap() - before;
        assert!(spent >= 5_000_000, "20 ms of spinning counted {spent} ns");
    }

    #[test]
    fn a_thread_that_computed_most_of_the_time_is_cpu_bound_whatever_call_it_is_caught_in() {
        let (mut r, w) = std::io::pipe().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let mut b = [0u8; 1];
            let _ = std::io::Read::read(&mut r, &mut b);
        });
        let tid = rx.recv().unwrap();
        // Wait (with a deadline) until it is blocked in read(2).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).is_ok_and(|l| l.starts_with("0 ")) {
            assert!(std::time::Instant::now() < deadline, "the reader never blocked");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (category, call, target) = classify(tid, 2);
        assert_eq!((category, call.as_deref()), (StallCategory::FileIo, Some("read")), "{target:?}");
        assert_eq!(classify(tid, 94).0, StallCategory::CpuBound, "94% of a CPU: computing, caught in a read");
        let (cpu, _) = schedstat(tid).expect("schedstat of a live thread");
        assert!(cpu > 0);
        assert_eq!(schedstat(-5), None);
        drop(w);
        reader.join().unwrap();
    }
}
