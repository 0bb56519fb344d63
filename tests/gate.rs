//! End-to-end tests of `loopscope check` and `loopscope gate` on small real recordings: verdicts
//! and exit codes, the JSON schema, JUnit XML, GitHub annotations and job summary, the SVG plot,
//! and every kind of bad input.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod support;

use support::{loopscope, one_workload_at_a_time, run, text, workspace_file};

/// Set in the environment of the re-run of this test binary that plays a program of the user's.
const CHILD: &str = "LOOPSCOPE_GATE_TEST_CHILD";

/// A program that is not one of loopscope's workloads: tasks that spin a little in each poll and
/// sleep between polls.
#[loopscope::main(worker_threads = 2)]
async fn program() {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async {
                for _ in 0..40 {
                    let start = std::time::Instant::now();
                    while start.elapsed() < std::time::Duration::from_micros(20) {
                        std::hint::spin_loop();
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
#[ignore = "the program run by a test below, in a child process"]
fn child_program() {
    if std::env::var_os(CHILD).is_some() {
        program();
    }
}

/// Records this test binary run as a program under the file name `name` (a symbolic link to it
/// in `dir`), as CI records a build of a server.
fn record_program(dir: &Path, name: &str) -> PathBuf {
    let link = dir.join(name);
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &link).unwrap();
    let out_path = dir.join(format!("{name}.loopscope"));
    let out = loopscope()
        .args(["record", "--interval", "50ms", "--out", s(&out_path), "--"])
        .arg(&link)
        .args(["--ignored", "--exact", "child_program", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove("LOOPSCOPE_RECORD")
        .env_remove("LOOPSCOPE_SERVE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    out_path
}

/// Recordings shared by the tests, made once: sleep-storm with a cost per poll (light enough to
/// leave the workers mostly idle in a debug build), three runs as is and three with the work per
/// poll doubled; and the blocking workload's sync-sleep fixed and not.
struct Fixtures {
    _dir: tempfile::TempDir,
    base: Vec<PathBuf>,
    slow: Vec<PathBuf>,
    fixed: PathBuf,
    mistake: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let _turn = one_workload_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let storm = |name: &str, slowdown: &str| {
            let path = dir.path().join(name);
            let out = run(&[
                "run",
                "sleep-storm",
                "--for",
                "1s",
                "--interval",
                "50ms",
                "--tasks",
                "200",
                "--work",
                "5000",
                "--slowdown",
                slowdown,
                "--record",
                path.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            path
        };
        let blocking = |name: &str, fixed: bool| {
            let path = dir.path().join(name);
            let mut args = vec!["run", "blocking", "--scenario", "sync-sleep", "--repeat", "2", "--record"];
            args.push(path.to_str().unwrap());
            if fixed {
                args.push("--fixed");
            }
            let out = run(&args);
            assert!(out.status.success(), "{}", text(&out.stderr));
            path
        };
        Fixtures {
            base: (1..=3).map(|i| storm(&format!("base-{i}.loopscope"), "0")).collect(),
            slow: (1..=3).map(|i| storm(&format!("slow-{i}.loopscope"), "100")).collect(),
            fixed: blocking("fixed.loopscope", true),
            mistake: blocking("mistake.loopscope", false),
            _dir: dir,
        }
    })
}

/// A policy on the sleepers' median poll time.
/// Judges wall time whatever the host took (`[host] max_share = "100%"`): these tests are about
/// the statistics, and run on machines as busy as they come.
const MEDIAN_POLICY: &str = r#"
[gate]
seed = 7

[host]
max_share = "100%"

[[rule]]
metric = "poll"
site = "workloads/sleep-storm/src/lib.rs"
stat = "p50"
max_increase = "10%"
"#;

fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn check(base: &[PathBuf], cand: &[PathBuf], extra: &[&str]) -> std::process::Output {
    let mut cmd = loopscope();
    cmd.arg("check").arg("--baseline").args(base).arg("--candidate").args(cand).args(extra);
    cmd.env_remove("GITHUB_ACTIONS").env_remove("GITHUB_STEP_SUMMARY");
    cmd.output().unwrap()
}

#[test]
fn identical_recordings_pass_and_a_doubled_cost_per_poll_is_a_regression() {
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let policy = write_policy(tmp.path(), MEDIAN_POLICY);
    let same = check(&f.base, &f.base, &["--policy", s(&policy)]);
    assert_eq!(same.status.code(), Some(0), "{}{}", text(&same.stdout), text(&same.stderr));
    assert!(text(&same.stdout).contains("verdict: PASS"), "{}", text(&same.stdout));

    let slow = check(&f.base, &f.slow, &["--policy", s(&policy), "--json"]);
    assert_eq!(slow.status.code(), Some(1), "{}{}", text(&slow.stdout), text(&slow.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&slow.stdout).unwrap();
    let rule = &doc["rules"][0];
    assert_eq!(rule["verdict"], "regression", "{rule:#}");
    // Twice the work per poll: the median poll grows by well over half, under twice.
    let change = rule["change"].as_f64().unwrap();
    assert!((0.5..1.2).contains(&change), "change {change}");
    let [lo, hi] = [rule["interval"][0].as_f64().unwrap(), rule["interval"][1].as_f64().unwrap()];
    assert!(lo > 0.1 && lo <= change && change <= hi, "[{lo}, {hi}] around {change}");

    // The verdict is reproducible from its seed.
    let again = check(&f.base, &f.slow, &["--policy", s(&policy), "--json"]);
    assert_eq!(again.stdout, slow.stdout);
}

#[test]
fn json_output_matches_its_schema() {
    let f = fixtures();
    let out = check(&f.base, &f.slow, &["--json"]);
    assert!(matches!(out.status.code(), Some(0 | 1 | 3)), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_file("docs/check.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(doc["policy"], "<default policy>");
    assert_eq!(doc["baseline"]["files"].as_array().unwrap().len(), 3);
}

#[test]
fn a_new_stall_fails_the_default_policy_deterministically() {
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("gate.xml");
    let summary = tmp.path().join("summary.md");
    let out = loopscope()
        .args(["check", "--baseline", s(&f.fixed), "--candidate", s(&f.mistake), "--junit", s(&junit)])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("stalls: new blocking calls"), "{stdout}");
    assert!(stdout.contains("2× sync-sleep at "), "{stdout}");

    // GitHub annotations: one ::error per regression, properly escaped, within the step limits.
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("::error title=")).collect();
    assert!(!errors.is_empty() && errors.len() <= 10, "{stdout}");
    let stall_line = errors.iter().find(|l| l.contains("stalls")).expect("an annotation for the stall");
    let (props, message) = stall_line["::error ".len()..].split_once("::").unwrap();
    assert!(!props.contains(',') || props.contains("%2C"), "{props}");
    assert!(message.contains("new stalls"), "{message}");
    assert!(!message.contains('\n'));

    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("## loopscope gate: ❌ regression"), "{md}");
    assert!(md.contains("| stalls: new blocking calls |"), "{md}");

    // JUnit: well-formed, one test case per rule, the stall rule a failure.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    let rules = stdout.lines().filter(|l| ["poll", "sched", "cpu", "stalls"].iter().any(|m| l.starts_with(m))).count();
    assert_eq!(cases.len(), rules, "{xml}");
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .map(|c| c.attribute("name").unwrap())
        .collect();
    assert!(failed.contains(&"stalls: new blocking calls"), "{xml}");
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!(suite.attribute("failures").unwrap(), failed.len().to_string());

    // The other way round, the fix removes the stall: nothing new.
    let back = check(std::slice::from_ref(&f.mistake), std::slice::from_ref(&f.fixed), &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&back.stdout).unwrap();
    let stall_rule = doc["rules"].as_array().unwrap().iter().find(|r| r["kind"] == "stalls-new").unwrap();
    assert_eq!(stall_rule["verdict"], "pass", "{stall_rule:#}");
}

#[test]
fn the_svg_plot_has_both_curves_for_every_gated_distribution() {
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let svg = tmp.path().join("gate.svg");
    let policy = write_policy(
        tmp.path(),
        &format!("{MEDIAN_POLICY}\n[[rule]]\nmetric = \"sched\"\nstat = \"p99\"\nmax_increase = \"50%\"\n"),
    );
    let out = check(&f.base, &f.slow, &["--policy", s(&policy), "--svg", s(&svg)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let panels: Vec<_> = doc.descendants().filter(|n| n.attribute("class") == Some("panel")).collect();
    assert_eq!(panels.len(), 2, "{text}");
    for panel in panels {
        for series in ["baseline", "candidate"] {
            let line = panel.descendants().find(|n| n.attribute("class") == Some(series)).unwrap();
            assert!(line.attribute("points").unwrap().split(' ').count() > 10, "{series}");
        }
    }
    assert!(text.contains("99.9%"));
}

#[test]
fn bad_inputs_exit_2_and_say_what_is_wrong() {
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let expect_2 = |out: std::process::Output, needles: &[&str]| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stdout {} stderr {err}", text(&out.stdout));
        for n in needles {
            assert!(err.contains(n), "{n:?} not in: {err}");
        }
    };
    // Missing file.
    let missing = tmp.path().join("nope.loopscope");
    expect_2(check(&f.base, std::slice::from_ref(&missing), &[]), &[s(&missing), "no such file"]);
    // A directory without recordings.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    expect_2(check(&f.base, std::slice::from_ref(&empty), &[]), &[s(&empty), "no *.loopscope"]);
    // A truncated recording.
    let bytes = std::fs::read(&f.base[0]).unwrap();
    let cut = tmp.path().join("cut.loopscope");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    expect_2(check(&f.base, std::slice::from_ref(&cut), &[]), &[s(&cut), "incomplete"]);
    // Not a recording.
    let junk = tmp.path().join("junk.loopscope");
    std::fs::write(&junk, b"hello, world").unwrap();
    expect_2(check(&f.base, std::slice::from_ref(&junk), &[]), &[s(&junk), "not a loopscope recording"]);
    // A newer format version.
    let mut newer = bytes.clone();
    newer[8] = 0xFF;
    let newer_path = tmp.path().join("newer.loopscope");
    std::fs::write(&newer_path, &newer).unwrap();
    expect_2(check(&f.base, std::slice::from_ref(&newer_path), &[]), &[s(&newer_path), "format version"]);
    // Different workloads.
    expect_2(check(&f.base, std::slice::from_ref(&f.fixed), &[]), &["cannot be compared", "sleep-storm", "blocking"]);
    // A policy naming a metric the recordings do not have.
    let p = write_policy(tmp.path(), "[[rule]]\nmetric = \"workload.nope\"\nstat = \"p99\"\nmax_increase = \"10%\"\n");
    expect_2(
        check(&f.base, &f.base, &["--policy", s(&p)]),
        &[&format!("{}:1", s(&p)), "rule[1].metric", "timer_lateness"],
    );
    // A site that does not exist.
    let p = write_policy(
        tmp.path(),
        "[[rule]]\nmetric = \"poll\"\nsite = \"src/nowhere.rs:1\"\nstat = \"p50\"\nbudget = \"1ms\"\n",
    );
    expect_2(check(&f.base, &f.base, &["--policy", s(&p)]), &["rule[1].site", "src/nowhere.rs:1", "sites recorded"]);
    // Malformed TOML, an unknown key, a bad value.
    let p = write_policy(tmp.path(), "[gate]\nconfidence = = 0.9\n");
    expect_2(check(&f.base, &f.base, &["--policy", s(&p)]), &[&format!("{}:2", s(&p))]);
    let p = write_policy(
        tmp.path(),
        "[[rule]]\nmetric = \"poll\"\nstat = \"p50\"\nmax_increase = \"10%\"\nmin_efect = \"1us\"\n",
    );
    expect_2(check(&f.base, &f.base, &["--policy", s(&p)]), &[&format!("{}:5", s(&p)), "min_efect"]);
    let p = write_policy(tmp.path(), "[[rule]]\nmetric = \"poll\"\nstat = \"p50\"\nmax_increase = \"ten\"\n");
    expect_2(
        check(&f.base, &f.base, &["--policy", s(&p)]),
        &[&format!("{}:4", s(&p)), "rule[1].max_increase", "\"10%\""],
    );
    // A missing policy file, and a bad flag.
    let p = tmp.path().join("absent.toml");
    expect_2(check(&f.base, &f.base, &["--policy", s(&p)]), &[s(&p), "cannot read"]);
    expect_2(check(&f.base, &f.base, &["--inconclusive", "maybe"]), &["--inconclusive"]);
}

#[test]
fn the_default_policy_is_printed_and_is_valid() {
    let out = run(&["check", "--default-policy"]);
    assert!(out.status.success());
    let policy = text(&out.stdout);
    assert!(policy.contains("forbid_new = true"), "{policy}");
    let tmp = tempfile::tempdir().unwrap();
    let p = write_policy(tmp.path(), &policy);
    let f = fixtures();
    let out = check(&f.base, &f.base, &["--policy", s(&p)]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn gate_runs_both_commands_interleaved_and_checks_them() {
    let _turn = one_workload_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("runs");
    let bin = env!("CARGO_BIN_EXE_loopscope");
    let storm = [bin, "run", "sleep-storm", "--for", "300ms", "--tasks", "50"];
    let mut args = vec!["gate", "--runs", "2", "--out", s(&out_dir), "--json", "--"];
    args.extend(storm);
    args.push("---");
    args.extend(storm);
    let out = run(&args);
    // Two runs a side of the same command: what is checked here is the order and the recordings,
    // any verdict will do (on a loaded machine even a regression), an error will not.
    assert!(matches!(out.status.code(), Some(0 | 1 | 3)), "{}{}", text(&out.stdout), text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["candidate"]["files"].as_array().unwrap().len(), 2);
    // Interleaved: baseline 1, candidate 1, baseline 2, candidate 2, by their recorded start.
    let start = |name: &str| loopscope_core::format::Recording::read(out_dir.join(name)).unwrap().header.start_unix_ns;
    let order =
        ["baseline-01", "candidate-01", "baseline-02", "candidate-02"].map(|n| start(&format!("{n}.loopscope")));
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    // Recorded at the gate's interval (100 ms), not the default 1 s.
    let rec = loopscope_core::format::Recording::read(out_dir.join("baseline-01.loopscope")).unwrap();
    assert_eq!(rec.header.interval_ns, 100_000_000);

    // A command that fails, and one that records nothing: exit 2, naming the log.
    let out = run(&["gate", "--runs", "1", "--out", s(&out_dir), "--", "false", "---", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the baseline command failed"), "{}", text(&out.stderr));
    let out = run(&["gate", "--runs", "1", "--out", s(&out_dir), "--", "true", "---", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("wrote no recording"), "{}", text(&out.stderr));
    let out = run(&["gate", "--runs", "1", "--", "true", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no `---`"), "{}", text(&out.stderr));
}

#[test]
fn gate_adds_pairs_while_inconclusive_and_says_why_it_stopped() {
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    // Each "run" hands the gate a copy of one recording: the same data on both sides.
    let copy =
        |src: &Path| vec!["sh".to_string(), "-c".into(), "cp \"$0\" \"$LOOPSCOPE_RECORD\"".into(), s(src).into()];
    let gate = |policy: &Path, out: &Path| {
        let mut args: Vec<String> =
            ["gate", "--runs", "1", "--max-runs", "4", "--policy", s(policy), "--out", s(out), "--"]
                .map(String::from)
                .to_vec();
        args.extend(copy(&f.base[0]));
        args.push("---".into());
        args.extend(copy(&f.base[0]));
        loopscope().args(&args).output().unwrap()
    };
    let pairs = |out: &Path| {
        std::fs::read_dir(out)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".loopscope"))
            .count()
            / 2
    };

    // The longest poll, which a resample has or has not, against a limit no interval around "no
    // change" can be within: inconclusive however many runs.
    let never = write_policy(
        tmp.path(),
        "[host]\nmax_share = \"100%\"\n[[rule]]\nmetric = \"poll\"\nstat = \"max\"\nmax_increase = \"0.0001%\"\nmin_effect = \"0ns\"\n",
    );
    let out_dir = tmp.path().join("never");
    let out = gate(&never, &out_dir);
    let stderr = text(&out.stderr);
    let n = pairs(&out_dir);
    // Each pair but the last was asked for, and the last one says why the gate stopped (as
    // copies pile up, the longest poll is in nearly every resample, and the verdict may turn).
    assert!((1..=4).contains(&n), "{n} pairs: {stderr}");
    assert_eq!(stderr.matches(": one more (up to --max-runs 4)").count(), n - 1, "{stderr}");
    let pl = if n == 1 { "" } else { "s" };
    let stopped = stderr.lines().find(|l| l.starts_with("gate: stopped after")).unwrap_or_default();
    assert!(stopped.starts_with(&format!("gate: stopped after {n} pair{pl}: ")), "{stderr}");
    match out.status.code() {
        Some(3) => assert!(stopped.contains("still inconclusive"), "{stderr}"),
        Some(0) => assert!(stopped.ends_with("the verdict is pass"), "{stderr}"),
        code => panic!("exit {code:?}: {}{stderr}", text(&out.stdout)),
    }

    // A clear verdict stops at --runs.
    let clear = write_policy(tmp.path(), MEDIAN_POLICY);
    let out_dir = tmp.path().join("clear");
    let out = gate(&clear, &out_dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}{stderr}", text(&out.stdout));
    assert_eq!(pairs(&out_dir), 1);
    assert!(stderr.contains("gate: stopped after 1 pair: the verdict is pass"), "{stderr}");
}

#[test]
fn gate_never_writes_through_links_planted_at_its_old_temporary_names() {
    use std::io::Write as _;
    let _turn = one_workload_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    // `sh` waits for a line, then becomes `loopscope gate` under the same pid: the gate's
    // directory name used to be $TMPDIR/loopscope-gate-PID, known before it runs.
    let bin = env!("CARGO_BIN_EXE_loopscope");
    let storm = [bin, "run", "sleep-storm", "--for", "200ms", "--tasks", "50"];
    let mut child = std::process::Command::new("sh")
        .args(["-c", "read -r go && exec \"$0\" \"$@\"", bin, "gate", "--runs", "1", "--"])
        .args(storm)
        .arg("---")
        .args(storm)
        .env("TMPDIR", tmp.path())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let planted = tmp.path().join(format!("loopscope-gate-{}", child.id()));
    std::fs::create_dir(&planted).unwrap();
    let names = ["baseline-01.log", "candidate-01.log", "baseline-01.loopscope", "candidate-01.loopscope"];
    for name in names {
        std::os::unix::fs::symlink(&victim, planted.join(name)).unwrap();
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    // One run a side decides nothing about the program: any verdict will do (pass, regression,
    // inconclusive), an error will not.
    assert!(matches!(out.status.code(), Some(0 | 1 | 3)), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "the victim was written through a link");
    let mut left: Vec<String> =
        std::fs::read_dir(&planted).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["baseline-01.log", "baseline-01.loopscope", "candidate-01.log", "candidate-01.loopscope"]);
    assert!(names.iter().all(|n| planted.join(n).is_symlink()), "the planted links are left alone");
    // The gate's own directory: private, and removed after a pass.
    use std::os::unix::fs::PermissionsExt as _;
    let own: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("loopscope-gate-") && *p != planted)
        .collect();
    match out.status.code() {
        Some(0) => assert!(own.is_empty(), "{own:?}"),
        _ => {
            assert_eq!(own.len(), 1, "{own:?}");
            assert_eq!(std::fs::metadata(&own[0]).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }

    // In an --out directory, a link at a log's name is refused, not followed.
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("baseline-01.log")).unwrap();
    let out = run(&["gate", "--runs", "1", "--out", s(&out_dir), "--", "true", "---", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("baseline-01.log"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn two_builds_with_different_file_names_are_compared_and_the_output_says_so() {
    let recorded = {
        let _turn = one_workload_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let v1 = record_program(dir.path(), "server-v1");
        let v2 = record_program(dir.path(), "server-v2");
        (dir, v1, v2)
    };
    let (dir, v1, v2) = &recorded;
    let summary = dir.path().join("summary.md");
    let out = loopscope()
        .args(["check", "--baseline", s(v1), "--candidate", s(v2)])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0 | 1 | 3)),
        "a verdict, not an input error: {stdout}{}",
        text(&out.stderr)
    );
    let note = "the programs differ: the baseline records \"server-v1\", the candidate \"server-v2\"";
    assert!(stdout.contains(&format!("note: {note}")), "{stdout}");
    assert!(stdout.contains("verdict: "), "{stdout}");
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains(note), "{md}");

    let out = check(std::slice::from_ref(v1), std::slice::from_ref(v2), &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["programs_differ"], true, "{doc:#}");
    assert_eq!(doc["baseline"]["programs"], serde_json::json!(["server-v1"]));
    assert_eq!(doc["candidate"]["programs"], serde_json::json!(["server-v2"]));
    assert_eq!(doc["baseline"]["workload"], serde_json::Value::Null);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_file("docs/check.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // The same build on both sides: no note.
    let out = check(std::slice::from_ref(v1), std::slice::from_ref(v1), &[]);
    assert!(!text(&out.stdout).contains("programs differ"), "{}", text(&out.stdout));

    // A workload and a program that is not one cannot be compared.
    let out = check(&fixtures().base, std::slice::from_ref(v2), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for needle in ["cannot be compared", "the workload sleep-storm", "\"server-v2\", which is not a workload"] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

/// `n` rules over the runtime's and the sleepers' poll time and scheduling latency at as many
/// percentiles, `resamples` resamples each.
fn many_rules(n: usize, resamples: u32) -> String {
    let mut policy = format!("[gate]\nresamples = {resamples}\n[host]\nmax_share = \"100%\"\n");
    for i in 0..n {
        let metric = ["poll", "sched"][i % 2];
        let site = if i % 4 < 2 { "" } else { "site = \"workloads/sleep-storm/src/lib.rs\"\n" };
        let pct = 10.0 + (i / 4) as f64 * 0.5;
        policy.push_str(&format!("[[rule]]\nmetric = \"{metric}\"\n{site}stat = \"p{pct}\"\nmax_increase = \"10%\"\n"));
    }
    policy
}

/// CPU time of the calling thread: the work it did, however busy the machine is.
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn the_check_costs_in_proportion_to_its_rules() {
    let f = fixtures();
    let mut resolver = loopscope_core::resolve::Resolver::addresses_only();
    let base = loopscope_gate::Run::read_all(&f.base, &mut resolver).unwrap();
    let cand = loopscope_gate::Run::read_all(&f.slow, &mut resolver).unwrap();
    let policy = |n| loopscope_gate::Policy::parse(&many_rules(n, 200), "many-rules.toml").unwrap();
    let (few, many) = (policy(20), policy(200));
    // The check's CPU time (it runs on one thread) and its wall time.
    let time = |p: &loopscope_gate::Policy, base: &[loopscope_gate::Run], cand: &[loopscope_gate::Run]| {
        let (cpu, wall) = (thread_cpu_time(), std::time::Instant::now());
        let outcome = loopscope_gate::check(p, base, cand).unwrap();
        (thread_cpu_time() - cpu, wall.elapsed(), outcome.statistical_rules)
    };
    let runs: Vec<_> = (0..3).map(|_| time(&few, &base, &cand)).collect();
    assert!(runs.iter().all(|r| r.2 == 20));
    let cpu20 = runs.iter().map(|r| r.0).min().unwrap();
    let wall20 = runs.iter().map(|r| r.1).min().unwrap();
    // Ten times the rules: ten times the work when the cost is linear, a hundred times when the
    // resamples per rule grow with the rule count (as they did). Up to 20 passes. The wall clock
    // only bounds the wait, generously, so that a quadratic check fails without running for long.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(time(&many, &base, &cand));
    });
    let Ok((cpu200, wall200, rules)) = rx.recv_timeout(wall20 * 60) else {
        panic!("200 rules ran for more than 60 times as long as 20 rules ({wall20:?})");
    };
    assert_eq!(rules, 200);
    let ratio = cpu200.as_secs_f64() / cpu20.as_secs_f64();
    eprintln!("CPU time: 20 rules {cpu20:?}, 200 rules {cpu200:?} ({ratio:.1}×); wall {wall20:?}, {wall200:?}");
    assert!(ratio < 20.0, "200 rules took {ratio:.1} times the CPU time of 20 ({cpu200:?} against {cpu20:?})");
}
