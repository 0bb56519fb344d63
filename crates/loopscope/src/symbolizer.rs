//! Symbolizing stacks in a helper process.
//!
//! Turning addresses into function names and source lines means parsing the program's debug
//! information: for a large release binary that is tens of megabytes of memory (measured: +120 MB
//! peak RSS for a 64 MB binary with line tables). Done in the profiled process, that memory would
//! be the program's. So the recorder hands the addresses to a helper process instead — any
//! program that calls [`run_helper`] as its whole `main` when asked; the `loopscope` command does
//! (`loopscope __symbolize`), and `loopscope record`, `run` and `gate` point programs at it with
//! `LOOPSCOPE_SYMBOLIZER`. Without a helper, or if it fails, the recorder symbolizes in-process.
//!
//! Protocol, one JSON line each way per stack: the recorder sends
//! `{"frames":[{"path":"/proc/PID/exe","svma":4198400},...]}` (each return address as a file and
//! an address in that file's own address space); the helper answers with one list of symbols per
//! frame, innermost (inlined) first: `[[{"function":"a::b","file":"src/x.rs","line":3}],...]`.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// One return address to resolve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FrameRequest {
    /// The file the code is in.
    pub(crate) path: String,
    /// The address within the file (the runtime address minus the load bias).
    pub(crate) svma: u64,
}

/// A stack to resolve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) frames: Vec<FrameRequest>,
}

/// One symbol at an address (several when calls were inlined).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Symbol {
    pub(crate) function: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
}

/// How long the helper may take to answer (loading a large program's debug information the
/// first time takes a second or two).
const ANSWER_TIMEOUT_MS: i32 = 30_000;

/// Files kept open (their debug information parsed) at once.
const MAX_LOADERS: usize = 16;

/// The helper's main loop: reads requests from standard input and answers on standard output
/// until standard input closes (the profiled program ended). Call it as the whole of a program's
/// `main` when it is started as a symbolizer (the `loopscope` command does for `__symbolize`).
pub fn run_helper() -> std::io::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut loaders: HashMap<String, Option<addr2line::Loader>> = HashMap::new();
    for line in stdin.lines() {
        let line = line?;
        let answer: Vec<Vec<Symbol>> = match serde_json::from_str::<Request>(&line) {
            Ok(req) => req.frames.iter().map(|f| resolve(&mut loaders, f)).collect(),
            Err(_) => Vec::new(),
        };
        serde_json::to_writer(&mut stdout, &answer)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    Ok(())
}

fn resolve(loaders: &mut HashMap<String, Option<addr2line::Loader>>, f: &FrameRequest) -> Vec<Symbol> {
    if !loaders.contains_key(&f.path) && loaders.len() >= MAX_LOADERS {
        loaders.clear();
    }
    let Some(loader) = loaders.entry(f.path.clone()).or_insert_with(|| addr2line::Loader::new(&f.path).ok()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(mut frames) = loader.find_frames(f.svma) {
        while let Ok(Some(frame)) = frames.next() {
            let function = frame.function.as_ref().and_then(|n| n.raw_name().ok()).map(|raw| demangle(&raw));
            let (file, line) = frame.location.map_or((None, None), |l| (l.file.map(str::to_string), l.line));
            out.push(Symbol { function, file, line });
        }
    }
    // No debug information for it: the symbol table may still name the function.
    if out.is_empty()
        && let Some(name) = loader.find_symbol(f.svma)
    {
        out.push(Symbol { function: Some(demangle(name)), file: None, line: None });
    }
    out
}

/// A Rust name without its hash; other names as they are.
fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

/// The recorder's side: a running helper.
pub(crate) struct Helper {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Helper {
    /// Starts `program __symbolize`.
    pub(crate) fn start(program: &std::path::Path) -> std::io::Result<Helper> {
        let mut child = std::process::Command::new(program)
            .arg("__symbolize")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            // Not a recorded program itself.
            .env_remove("LOOPSCOPE_RECORD")
            .env_remove("LOOPSCOPE_SERVE")
            .env_remove("LOOPSCOPE_PROMETHEUS")
            .env_remove("LOOPSCOPE_OTLP")
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = std::io::BufReader::new(child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?);
        Ok(Helper { child, stdin, stdout })
    }

    /// Resolves one stack; an error means the helper is unusable.
    pub(crate) fn resolve(&mut self, frames: Vec<FrameRequest>) -> std::io::Result<Vec<Vec<Symbol>>> {
        block_sigpipe();
        let n = frames.len();
        let mut line = serde_json::to_vec(&Request { frames })?;
        line.push(b'\n');
        self.stdin.write_all(&line)?;
        self.stdin.flush()?;
        // A helper that hangs must not hold up stall events for long: it is given up on.
        if self.stdout.buffer().is_empty() {
            use std::os::fd::AsRawFd;
            let mut pfd = libc::pollfd { fd: self.stdout.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for a pipe this helper owns.
            if unsafe { libc::poll(&mut pfd, 1, ANSWER_TIMEOUT_MS) } <= 0 {
                return Err(std::io::Error::other("the symbolizer helper did not answer in time"));
            }
        }
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::other("the symbolizer helper exited"));
        }
        let symbols: Vec<Vec<Symbol>> = serde_json::from_str(&answer)?;
        if symbols.len() != n {
            return Err(std::io::Error::other("the symbolizer helper answered another question"));
        }
        Ok(symbols)
    }
}

/// Writing to a helper that has exited must give this thread an error, not the program a
/// SIGPIPE (a program may have restored its default action, which ends the process): the signal
/// is blocked for the calling thread, one of the recorder's own.
fn block_sigpipe() {
    // SAFETY: changes the calling thread's signal mask only; the set is initialised before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    #[test]
    fn a_helper_that_stopped_reading_gives_an_error_and_no_sigpipe() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("helper");
        std::fs::write(&script, "#!/bin/sh\nexec 0<&-\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut helper = Helper::start(&script).unwrap();
        // Wait (with a deadline) until it has closed its end of the pipe.
        let fd0 = format!("/proc/{}/fd/0", helper.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::symlink_metadata(&fd0).is_ok() {
            assert!(Instant::now() < deadline, "the helper never closed its input");
            std::thread::sleep(Duration::from_millis(5));
        }
        // As a program that restored SIGPIPE's default action (which ends the process).
        // SAFETY: sets a signal disposition; this test binary writes to no other pipe.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        let err = helper.resolve(vec![FrameRequest { path: "/proc/self/exe".into(), svma: 0 }]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
}
