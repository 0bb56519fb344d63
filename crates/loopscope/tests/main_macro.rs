//! `#[loopscope::main]` on a real program: this test binary runs itself as the program, once with
//! `LOOPSCOPE_RECORD` and once without.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set in the environment of the re-run that plays the program.
const CHILD: &str = "LOOPSCOPE_MACRO_TEST_CHILD";

/// The program: an echo server over loopback with 20 clients, and a few sleepers.
#[loopscope::main(flavor = "multi_thread", worker_threads = 2)]
async fn echo_program(clients: usize) -> std::io::Result<usize> {
    eprintln!("ECHO PROGRAM STARTED");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = socket.read(&mut buf).await {
                    if socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut handles = Vec::new();
    for i in 0..clients {
        handles.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let mut echoed = 0;
            for round in 0..50u8 {
                let msg = [i as u8, round, 0xAB];
                stream.write_all(&msg).await?;
                let mut back = [0u8; 3];
                stream.read_exact(&mut back).await?;
                echoed += usize::from(back == msg);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, std::io::Error>(echoed)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.expect("a client task")?;
    }
    println!("THREADS {}", thread_names().join(","));
    Ok(total)
}

/// The same on a current-thread runtime, returning early through `?`.
#[loopscope::main(flavor = "current_thread")]
async fn current_thread_program() -> Result<u32, String> {
    let n = tokio::spawn(async { 21 }).await.map_err(|e| e.to_string())?;
    if n > 100 {
        return Err("unreachable".into());
    }
    Ok(n * 2)
}

fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "the program run by the tests below, in a child process"]
fn child_program() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    assert_eq!(current_thread_program(), Ok(42));
    let echoed = echo_program(20).expect("the echo program runs");
    assert_eq!(echoed, 20 * 50);
    println!("ECHOED {echoed}");
}

fn run_child(dir: &Path, record: Option<&Path>) -> Output {
    let vars: Vec<(&str, &std::ffi::OsStr)> = record.map(|p| ("LOOPSCOPE_RECORD", p.as_os_str())).into_iter().collect();
    run_child_with(dir, &vars)
}

/// Runs the program with only these `LOOPSCOPE_*` variables set.
fn run_child_with(dir: &Path, vars: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "child_program", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .current_dir(dir);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("LOOPSCOPE_") && var != CHILD {
            cmd.env_remove(var);
        }
    }
    cmd.envs(vars.iter().copied());
    let out = cmd.output().expect("the test binary runs");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ECHOED 1000"), "{}", String::from_utf8_lossy(&out.stdout));
    out
}

fn threads_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("THREADS ").map(|(_, t)| t))
        .expect("the program lists its threads")
        .to_string()
}

#[test]
fn with_loopscope_record_the_program_writes_a_recording_of_its_own_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.loopscope");
    let out = run_child(dir.path(), Some(&path));
    let threads = threads_of(&out);
    assert!(threads.contains("loopscope-flush") && threads.contains("loopscope-watch"), "{threads}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("recorded to") && stderr.contains("echo.loopscope"), "{stderr}");

    // Two programs ran in the child, each with its own session: the second (the echo program) wrote
    // the file last.
    let report = loopscope::core::report::Report::from_file(&path).expect("a readable recording");
    assert_eq!(report.recording.workers, 2);
    assert!(report.runtime.polls >= 20 * 50, "{}", report.runtime.polls);
    let this_file = report.sites.iter().filter(|s| s.location.contains("tests/main_macro.rs")).count();
    assert!(this_file >= 3, "the accept loop, connections and clients: {:?}", report.sites);
    // No poll of this program blocks. On a busy machine the host may still hold one past the
    // threshold: such stalls are preempted, or raised late without a blocking line (the gate does
    // not count them either).
    let blocked: Vec<_> = report
        .stalls
        .iter()
        .filter(|g| {
            g.category != loopscope::core::model::StallCategory::Preempted
                && g.late < g.count
                && g.blocking_site.is_some()
        })
        .collect();
    assert!(blocked.is_empty(), "{blocked:?}");
}

#[test]
fn without_the_variables_nothing_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_child(dir.path(), None);
    let threads = threads_of(&out);
    assert!(!threads.contains("loopscope"), "no recorder thread: {threads}");
    assert!(threads.contains("tokio-rt-worker"), "the runtime ran: {threads}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("loopscope:"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bad_variable_is_reported_once_and_the_program_runs_unprofiled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.loopscope");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "child_program", "--nocapture"])
        .env(CHILD, "1")
        .env("LOOPSCOPE_RECORD", &path)
        .env("LOOPSCOPE_PROFILE", "fastest")
        .current_dir(dir.path());
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Once per runtime: the child starts two.
    assert_eq!(stderr.matches("loopscope: not profiling").count(), 2, "{stderr}");
    assert!(stderr.contains("LOOPSCOPE_PROFILE") && stderr.contains("fastest"), "{stderr}");
    assert!(!path.exists());
}

/// The lines of stderr that loopscope wrote, and where the echo program's own first line is.
fn loopscope_lines(out: &Output) -> (Vec<String>, usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let started = lines.iter().position(|l| *l == "ECHO PROGRAM STARTED").expect("the echo program ran");
    let ours = lines.iter().filter(|l| l.starts_with("loopscope:")).map(|l| l.to_string()).collect();
    (ours, started)
}

#[test]
fn at_install_one_line_says_what_is_recorded_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.loopscope");
    let out = run_child(dir.path(), Some(&path));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (lines, started) = loopscope_lines(&out);
    // Two runtimes in the child: an opening and a closing line each.
    let opening: Vec<&String> = lines.iter().filter(|l| l.starts_with("loopscope: profiling ")).collect();
    assert_eq!(opening.len(), 2, "{stderr}");
    for line in &opening {
        assert!(line.contains("poll time and per-task scheduling latency"), "{line}");
        assert!(line.contains("10ms or more (stalls)"), "{line}");
        assert!(line.contains(&format!("recording to {}", path.display())), "{line}");
        assert!(line.contains("loopscope report"), "{line}");
    }
    // The echo program's opening line comes before its own first line, at install, not at exit.
    let all: Vec<&str> = stderr.lines().collect();
    let echo_opening = all[..started].iter().rposition(|l| l.starts_with("loopscope: profiling ")).expect("{stderr}");
    assert!(!all[echo_opening..started].iter().any(|l| l.contains("recorded to")), "{stderr}");
    assert!(all[started..].iter().any(|l| l.contains("recorded to")), "{stderr}");
}

#[test]
fn serving_alone_says_where_at_install_and_quiet_silences_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("live.sock");
    let addr = format!("unix:{}", socket.display());
    let lean: &std::ffi::OsStr = "lean".as_ref();
    let out = run_child_with(
        dir.path(),
        &[
            ("LOOPSCOPE_SERVE", addr.as_ref()),
            ("LOOPSCOPE_PROFILE", lean),
            ("LOOPSCOPE_STALL_THRESHOLD", "off".as_ref()),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (lines, _) = loopscope_lines(&out);
    let opening: Vec<&String> = lines.iter().filter(|l| l.starts_with("loopscope: profiling ")).collect();
    assert_eq!(opening.len(), 2, "{stderr}");
    for line in &opening {
        assert!(line.contains("scheduling latency from a lag probe"), "{line}");
        assert!(line.contains("stall detector off"), "{line}");
        assert!(line.contains(&format!("live data served at {addr} (`loopscope tui --attach {addr}`)")), "{line}");
        assert!(!line.contains("recording to"), "{line}");
    }

    let out = run_child_with(dir.path(), &[("LOOPSCOPE_SERVE", addr.as_ref()), ("LOOPSCOPE_QUIET", "1".as_ref())]);
    let (lines, _) = loopscope_lines(&out);
    assert!(lines.is_empty(), "{lines:?}");
}
