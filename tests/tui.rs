//! The real `loopscope` TUI in a pseudo-terminal: keys go in, the screen is read back through a
//! terminal emulator (vt100), and after every way out the terminal must be restored (main
//! screen, cursor shown).

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, PtySize, native_pty_system};

mod support;

/// A program running in a pseudo-terminal, and what its screen shows.
struct Tty {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    output: Receiver<Vec<u8>>,
    screen: vt100::Parser,
    /// Everything printed, for what is left on the main screen after the TUI exits.
    log: Vec<u8>,
}

/// How long any one expected screen may take to appear (a loaded CI machine can be slow).
const DEADLINE: Duration = Duration::from_secs(20);

impl Tty {
    fn start(args: &[&str]) -> Tty {
        Tty::start_with(args, &[])
    }

    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Tty {
        let pair = native_pty_system()
            .openpty(PtySize { rows: 24, cols: 80, pixel_width: 0, pixel_height: 0 })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_loopscope"));
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.cwd(env!("CARGO_MANIFEST_DIR"));
        let child = pair.slave.spawn_command(cmd).expect("loopscope starts in the pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps the master open as long as the child may write.
            let _master = pair.master;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Tty { child, writer, output, screen: vt100::Parser::new(24, 80, 0), log: Vec::new() }
    }

    fn contents(&self) -> String {
        self.screen.screen().contents()
    }

    /// Reads output until the screen contains `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.contents().contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => {
                    self.screen.process(&bytes);
                    self.log.extend_from_slice(&bytes);
                }
                Err(RecvTimeoutError::Timeout) => panic!("{text:?} did not appear; the screen:\n{}", self.contents()),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the program ended before {text:?} appeared; the screen:\n{}", self.contents())
                }
            }
        }
    }

    fn send(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits for the program to exit (reading its last output); returns its exit code.
    fn exit_code(&mut self) -> u32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            while let Ok(bytes) = self.output.recv_timeout(Duration::from_millis(50)) {
                self.screen.process(&bytes);
                self.log.extend_from_slice(&bytes);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // Drain what the reader thread still holds.
                while let Ok(bytes) = self.output.recv_timeout(Duration::from_millis(200)) {
                    self.screen.process(&bytes);
                    self.log.extend_from_slice(&bytes);
                }
                return status.exit_code();
            }
            assert!(Instant::now() < deadline, "the program did not exit; the screen:\n{}", self.contents());
        }
    }

    /// The terminal is back to normal: main screen, cursor visible.
    fn assert_restored(&self) {
        let s = self.screen.screen();
        assert!(!s.alternate_screen(), "still on the alternate screen");
        assert!(!s.hide_cursor(), "the cursor is still hidden");
    }
}

const FIXTURE: &str = "../loopscope-tui/tests/fixtures/blocking.loopscope";

#[test]
fn replay_views_keys_and_quit_restore_the_terminal() {
    let mut t = Tty::start(&["tui", FIXTURE]);
    t.wait_for("Poll time");
    t.wait_for("stopped │ 11/11");
    t.send("2");
    t.wait_for("Spawn sites: 2 of 2 (sort: busy");
    t.send("s");
    t.wait_for("sort: poll p50");
    t.send("/174\r");
    t.wait_for("Spawn sites: 1 of 2");
    t.send("3");
    t.wait_for("Stalls in the window: 6 at 1 line");
    // Scrub back three intervals, then to the first, which holds the first two stalls.
    t.send("\x1b[D\x1b[D\x1b[D");
    t.wait_for("8/11");
    t.send("g");
    t.wait_for("1/11");
    t.wait_for("Stalls in the window: 2 at 1 line");
    t.send("G\r");
    t.wait_for("call           std::thread");
    t.send("?");
    t.wait_for("Keys (? or Esc closes)");
    t.send("?q");
    assert_eq!(t.exit_code(), 0, "{}", t.contents());
    t.assert_restored();
}

#[test]
fn sigterm_restores_the_terminal() {
    let mut t = Tty::start(&["tui", FIXTURE]);
    t.wait_for("Poll time");
    let pid = t.child.process_id().expect("a pid") as i32;
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(t.exit_code(), 0);
    t.assert_restored();
}

#[test]
fn a_panic_in_the_tui_restores_the_terminal() {
    let mut t = Tty::start_with(&["tui", FIXTURE], &[("LOOPSCOPE_TUI_FAILPOINT", "panic")]);
    assert_eq!(t.exit_code(), 101, "{}", t.contents());
    t.assert_restored();
    assert!(String::from_utf8_lossy(&t.log).contains("LOOPSCOPE_TUI_FAILPOINT=panic"));
}

#[test]
fn a_live_run_is_watched_then_reported() {
    let _turn = support::one_workload_at_a_time();
    let mut t =
        Tty::start(&["run", "sleep-storm", "--for", "1500ms", "--tasks", "200", "--interval", "250ms", "--tui"]);
    t.wait_for("LIVE");
    t.wait_for("finished");
    t.send("q");
    assert_eq!(t.exit_code(), 0, "{}", t.contents());
    t.assert_restored();
    let printed = String::from_utf8_lossy(&t.log);
    assert!(printed.contains("loopscope report — sleep-storm"), "the report follows the TUI: {printed}");
}

#[test]
fn bad_input_is_refused_before_the_terminal_is_touched() {
    let out = support::run(&["tui", "/nonexistent.loopscope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(support::text(&out.stderr).contains("/nonexistent.loopscope"));
    // Without a terminal (the test's pipes), the TUI refuses clearly.
    let out = support::run(&["tui", FIXTURE]);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out.stderr));
    assert!(support::text(&out.stderr).contains("needs a terminal"));
}

#[test]
fn attach_waits_for_a_serving_program_shows_its_data_and_its_end() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("live.sock");
    let addr = format!("unix:{}", sock.display());
    // The TUI first: nothing serves yet, so it says so and keeps trying.
    let mut t = Tty::start(&["tui", "--attach", &addr]);
    t.wait_for("reconnecting");
    let mut program = support::loopscope()
        .args(["run", "sleep-storm", "--for", "3s", "--tasks", "200", "--interval", "200ms", "--serve", &addr])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    t.wait_for("LIVE");
    // The source, on the tab bar (its start clipped on 80 columns).
    t.wait_for(".sock");
    // Data arrives: the polls/s sparkline's title shows a rate above zero at some point.
    t.send("2");
    t.wait_for("Spawn sites: 1 of 1");
    // The program ends: the TUI shows the disconnect and goes on trying.
    assert!(program.wait().unwrap().success());
    t.wait_for("reconnecting (the session ended)");
    t.send("q");
    assert_eq!(t.exit_code(), 0, "{}", t.contents());
    t.assert_restored();
}

#[test]
fn a_terminal_that_hangs_up_ends_the_tui_instead_of_spinning() {
    // tmux gives the TUI a terminal whose other end can vanish at once (its server killed): no
    // signal need arrive, reads just return end-of-file.
    let Some(tmux) = support::programs::program_or_skip(
        "a_terminal_that_hangs_up_ends_the_tui_instead_of_spinning",
        "tmux",
        "`apt-get install tmux`, `dnf install tmux` or `brew install tmux`",
    ) else {
        return;
    };
    let socket = format!("loopscope-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new(&tmux).arg("-L").arg(&socket).args(args).output().expect("tmux runs")
    };
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let cmd = format!("exec {} tui {}", env!("CARGO_BIN_EXE_loopscope"), fixture.display());
    assert!(tmux(&["new-session", "-d", "-x", "80", "-y", "24", &cmd]).status.success());
    let deadline = Instant::now() + DEADLINE;
    let pid: i32 = loop {
        let out = tmux(&["list-panes", "-F", "#{pane_pid}"]);
        if let Ok(p) = String::from_utf8_lossy(&out.stdout).trim().parse() {
            break p;
        }
        assert!(Instant::now() < deadline, "no tmux pane: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(20));
    };
    // Wait for the TUI to draw (its screen shows the overview).
    loop {
        let screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
        if screen.contains("Poll time") {
            break;
        }
        if Instant::now() >= deadline {
            let _ = tmux(&["kill-server"]);
            panic!("the TUI did not draw; the pane shows:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = tmux(&["kill-server"]);
    let deadline = Instant::now() + DEADLINE;
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "the TUI went on running after its terminal hung up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn record_watches_any_program_live_then_reports_it() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog.loopscope");
    // The program: loopscope's own `run`, which embeds the recorder through the same variables.
    let mut t = Tty::start(&[
        "record",
        "--tui",
        "--interval",
        "200ms",
        "--out",
        out.to_str().unwrap(),
        "--",
        env!("CARGO_BIN_EXE_loopscope"),
        "run",
        "sleep-storm",
        "--for",
        "2s",
        "--tasks",
        "200",
    ]);
    t.wait_for("LIVE");
    t.send("2");
    t.wait_for("Spawn sites: 1 of 1");
    t.wait_for("reconnecting (the session ended)");
    t.send("q");
    assert_eq!(t.exit_code(), 0, "{}", t.contents());
    t.assert_restored();
    let printed = String::from_utf8_lossy(&t.log);
    assert!(printed.contains("loopscope report — sleep-storm"), "the report follows the TUI: {printed}");
    // The program's own output went to a log beside the recording, not over the screen.
    let log = std::fs::read_to_string(dir.path().join("prog.loopscope.log")).unwrap();
    assert!(log.contains("loopscope report — sleep-storm"), "{log}");
    assert!(out.exists());
}

#[test]
fn console_reads_a_program_running_console_subscriber() {
    let _turn = support::one_workload_at_a_time();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    // The program: the synchronous-sleep mistake, serving tokio-console's gRPC API
    // (console-subscriber) and nothing of loopscope's own.
    let mut program = support::loopscope()
        .args(["run", "blocking", "--scenario", "sync-sleep", "--repeat", "400", "--console", &port])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut t = Tty::start(&["tui", "--console", &format!("http://127.0.0.1:{port}")]);
    t.wait_for("tokio-console");
    t.send("2");
    // Its spawn sites, from the console's task locations.
    t.wait_for("ng/src/lib.rs:");
    // Its sleeps, as long polls; what only the recorder knows is marked so.
    t.send("3");
    t.wait_for("long poll");
    t.send("\r");
    t.wait_for("blocking site  needs loopscope recorder");
    t.send("q");
    assert_eq!(t.exit_code(), 0, "{}", t.contents());
    t.assert_restored();
    let _ = program.kill();
    let _ = program.wait();
}

/// A child killed and reaped when the test ends, passed or failed.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number in the Tasks view's title ("Task dump N at ...").
fn dumps_counted(screen: &str) -> u64 {
    let rest = &screen[screen.find("Task dump ").unwrap_or_else(|| panic!("no dump title in:\n{screen}")) + 10..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no dump count in:\n{screen}"))
}

#[test]
fn a_deadlocked_program_is_dumped_from_the_command_line_and_from_the_tui() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hang.sock");
    let addr = format!("unix:{}", sock.display());
    let mut program = support::loopscope()
        // One worker: a runtime with more takes one dump per run (tokio-rs/tokio#8370, docs/tasks.md).
        .args(["run", "hangs", "--scenario", "deadlock", "--for", "60s", "--workers", "1", "--interval", "250ms"])
        .args(["--serve", &addr])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Reaped)
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the program never served {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `loopscope dump`: both transfers, each at its second lock (asked again until the run has
    // reached its deadlock: the socket is served from the start).
    loop {
        let out = support::run(&["dump", "--attach", &addr]);
        let printed = support::text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{printed}{}", support::text(&out.stderr));
        assert!(printed.contains("Task dump of hangs"), "{printed}");
        if printed.contains("2 tasks in 2 groups") && printed.matches("(Mutex::lock)").count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no dump showed the deadlock: {printed}");
    }
    // The TUI attached: the Tasks view shows the automatic dump, and `d` asks for another.
    let mut t = Tty::start(&["tui", "--attach", &addr]);
    t.wait_for("LIVE");
    t.send("5");
    t.wait_for("Mutex::lock");
    let seen = dumps_counted(&t.contents());
    t.send("d");
    t.wait_for("task dump asked for");
    // A further dump arrives (the view's title counts them): the one asked for, or an automatic
    // one (the tasks have idled past 2 s).
    t.wait_for(&format!("Task dump {} at", seen + 1));
    t.send("q");
    assert_eq!(t.exit_code(), 0, "{}", t.contents());
    t.assert_restored();
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(program.0.id() as i32, libc::SIGTERM) }, 0);
    // The program ends after its dumps (a dump that left a worker waiting would hang it).
    let deadline = Instant::now() + DEADLINE;
    while program.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the program did not end after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
