//! `loopscope record -- CMD ARGS...`: profile any program that embeds the recorder
//! (`#[loopscope::main]` or `Session::from_env`) through its environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use anyhow::anyhow;
use loopscope::Report;
use loopscope::core::format::Completeness;

use crate::cli::RecordArgs;
use crate::{EXIT_FAILURE, Failure};

/// Runs the command with the recorder's variables set; returns the exit code to leave with.
pub fn record_command(args: &RecordArgs) -> Result<u8, Failure> {
    let (program, program_args) = args.command.split_first().expect("clap requires a command");
    let out = args.out.clone().unwrap_or_else(|| default_out(program));
    if out.is_dir() {
        return Err(Failure::Input(anyhow!("--out {}: is a directory (expected a file)", out.display())));
    }
    let started_unix_ns = loopscope::core::units::unix_now_ns();
    let mut cmd = Command::new(program);
    cmd.args(program_args)
        .env("LOOPSCOPE_RECORD", &out)
        .env("LOOPSCOPE_QUIET", "1")
        .env("LOOPSCOPE_INTERVAL", humantime::format_duration(args.interval).to_string())
        .env("LOOPSCOPE_PROFILE", args.profile.name());
    if let Some(t) = args.stall_threshold {
        cmd.env("LOOPSCOPE_STALL_THRESHOLD", humantime::format_duration(t).to_string());
    }
    if args.repeat_dumps {
        cmd.env("LOOPSCOPE_DUMP_REPEAT", "1");
    }
    if std::env::var_os("LOOPSCOPE_DUMP_IDLE").is_none() {
        let idle = args.dump_idle.0.map_or_else(|| "off".to_string(), |d| humantime::format_duration(d).to_string());
        cmd.env("LOOPSCOPE_DUMP_IDLE", idle);
    }
    // With the TUI the program's output would scribble over the screen: it goes to a log instead.
    let live = if args.tui {
        crate::tui::need_terminal("--tui")?;
        let dir = tempfile::Builder::new()
            .prefix("loopscope-record-")
            .tempdir()
            .map_err(|e| Failure::Run(anyhow!("cannot create a directory for the live socket: {e}")))?;
        let socket = loopscope::core::live::ServeAddr::Unix(dir.path().join("live.sock"));
        let log_path = log_path(&out);
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Failure::Input(anyhow!("cannot write the program's output to {}: {e}", log_path.display())))?;
        let log2 = log.try_clone().map_err(|e| Failure::Run(e.into()))?;
        cmd.env("LOOPSCOPE_SERVE", socket.to_string()).stdout(log).stderr(log2);
        Some((dir, socket, log_path))
    } else {
        None
    };
    // Signals are caught from before the program starts: one sent as soon as it has started (a
    // script that saw its first line) waits for the forwarder instead of ending loopscope.
    let signals = SignalForwarder::catch().map_err(|e| Failure::Run(anyhow!("signal handling: {e}")))?;
    let child = cmd.spawn().map_err(|e| Failure::Input(anyhow!("cannot run `{}`: {e}", program.to_string_lossy())))?;
    let forwarder =
        SignalForwarder::start(signals, child.id()).map_err(|e| Failure::Run(anyhow!("signal handling: {e}")))?;
    if let Some((_, socket, _)) = &live {
        watch(&child, socket.clone());
    }
    // The program has ended but is not reaped yet, so its pid cannot be reused while signals are
    // still being forwarded to it.
    wait_unreaped(child.id());
    forwarder.stop();
    let status = wait(child)?;
    let code = exit_code(status);
    if let Some((_, _, log_path)) = &live {
        eprintln!("the program's output is in {}", log_path.display());
    }
    if !matches!(status.code(), Some(0)) {
        eprintln!("{} {}", program.to_string_lossy(), describe(status));
    }

    match read_fresh_recording(&out, started_unix_ns) {
        Ok(Some(report)) => {
            if let Completeness::Truncated { at_byte, reason } = &report.recording.completeness {
                eprintln!(
                    "warning: {} was cut short at byte {at_byte} ({reason}): the program did not end cleanly",
                    out.display()
                );
            }
            crate::run::print_report(&report, args.json, args.top);
            eprintln!("recording written to {}", out.display());
            Ok(code)
        }
        Ok(None) => {
            eprintln!(
                "error: {} wrote no recording to {}: it does not embed loopscope.\n\
                 Replace #[tokio::main] with #[loopscope::main] (or install `loopscope::Session::from_env()` \
                 on your runtime builder) and build with --cfg tokio_unstable; see the README's \"Use it on your program\", \
                 and `loopscope doctor` in the program's project.",
                program.to_string_lossy(),
                out.display()
            );
            Ok(if code == 0 { EXIT_FAILURE } else { code })
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(if code == 0 { EXIT_FAILURE } else { code })
        }
    }
}

/// `<program name>.loopscope` in the current directory.
fn default_out(program: &OsString) -> PathBuf {
    let name = Path::new(program).file_name().map_or_else(|| "program".into(), |n| n.to_string_lossy().into_owned());
    PathBuf::from(format!("{name}.loopscope"))
}

fn log_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".log");
    out.with_file_name(name)
}

fn wait(mut child: Child) -> Result<ExitStatus, Failure> {
    child.wait().map_err(|e| Failure::Run(anyhow!("waiting for the program: {e}")))
}

/// Waits until the process has ended, leaving it to be reaped.
fn wait_unreaped(pid: u32) {
    loop {
        // SAFETY: waitid(2) on our own child with a zeroed siginfo to fill; WNOWAIT leaves it
        // waitable.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// The TUI attached to the program's live socket on this thread; the program keeps running after
/// the TUI is closed.
fn watch(child: &Child, socket: loopscope::core::live::ServeAddr) {
    let source = loopscope_tui::Source::Attached(format!("pid {}", child.id()));
    let dumper = crate::tui::attached_dumper(socket.clone());
    if let Err(e) = crate::tui::watch_feed(source, loopscope::core::live::attach(socket), Some(dumper)) {
        eprintln!("error: terminal: {e}");
    }
    eprintln!("waiting for the program (pid {}) to end; Ctrl-C stops it", child.id());
}

/// The shell's convention: the child's code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => EXIT_FAILURE,
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// The recording at `out` if the program wrote one during this run (a file from an earlier run is
/// not this run's).
fn read_fresh_recording(
    out: &Path,
    started_unix_ns: u64,
) -> Result<Option<Report>, loopscope::core::format::ReadError> {
    if !out.exists() {
        return Ok(None);
    }
    let report = Report::from_file_with(out, &mut crate::resolver())?;
    Ok((report.recording.start_unix_ns >= started_unix_ns).then_some(report))
}

/// Passes SIGTERM, SIGHUP, SIGINT and SIGQUIT sent to loopscope on to the program. Signals from
/// the terminal (Ctrl-C, Ctrl-\) already reach the whole foreground process group, the program
/// included, and are not sent twice; loopscope itself stays to report.
struct SignalForwarder {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

type Caught = signal_hook::iterator::SignalsInfo<signal_hook::iterator::exfiltrator::WithOrigin>;

impl SignalForwarder {
    /// Catches the signals to forward; they wait in the returned set until [`Self::start`].
    fn catch() -> std::io::Result<Caught> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        Caught::new([SIGTERM, SIGHUP, SIGINT, SIGQUIT])
    }

    /// Forwards the signals caught, those already waiting first, to the process `pid`.
    fn start(mut signals: Caught, pid: u32) -> std::io::Result<Self> {
        use signal_hook::low_level::siginfo::Cause;
        let handle = signals.handle();
        let thread = std::thread::Builder::new().name("loopscope-signals".into()).spawn(move || {
            for origin in signals.forever() {
                if origin.cause == Cause::Kernel {
                    continue;
                }
                // SAFETY: kill(2) with the child's pid; the child is not reaped before `stop`.
                unsafe {
                    libc::kill(pid as libc::pid_t, origin.signal);
                }
            }
        })?;
        Ok(SignalForwarder { handle, thread })
    }

    fn stop(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}
