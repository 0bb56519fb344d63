//! `#[loopscope::test]` and `loopscope::testing` on real runtimes: a test fails when its async
//! code blocks (naming the line), passes when it does not, strict mode catches short blocking
//! calls, allow-lists and `allow_blocking` accept known blocking, and many tests run side by side
//! in one process without one test's blocking leaking into another's verdict.
//!
//! Every failing case here blocks for well over its threshold, and every passing case never
//! blocks at all, so the outcomes hold on a loaded machine (stalls the host causes never fail a
//! test).

use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use loopscope::testing::{FindingKind, TestRun};
use tokio::runtime::{Builder, RuntimeFlavor};

fn current_thread() -> Builder {
    Builder::new_current_thread()
}

fn here(line: u32) -> String {
    format!("{}:{line}", file!())
}

/// The line of the last blocking call made through [`blocking!`], which a message must name.
static LINE: AtomicU32 = AtomicU32::new(0);

/// Makes a blocking call and remembers its line.
macro_rules! blocking {
    ($e:expr) => {{
        LINE.store(line!(), Ordering::Relaxed);
        $e
    }};
}

fn blocking_line() -> String {
    here(LINE.load(Ordering::Relaxed))
}

#[loopscope::test]
async fn a_tokio_sleep_passes() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[loopscope::test]
#[should_panic(expected = "sync-sleep: a poll blocked its thread")]
async fn a_thread_sleep_fails() {
    std::thread::sleep(Duration::from_millis(5));
}

#[test]
fn the_message_names_the_sleeps_line_its_call_the_spawn_site_and_the_fix() {
    let body = line!() + 1;
    let checked = TestRun::new("sleeper").run(current_thread(), async {
        blocking!(std::thread::sleep(Duration::from_millis(5)));
    });
    let verdict = checked.unwrap().verdict;
    let msg = verdict.to_string();
    assert!(!verdict.passed(), "{msg}");
    assert_eq!(verdict.findings().len(), 1, "{msg}");
    let f = &verdict.findings()[0];
    assert_eq!(f.kind, FindingKind::Stall);
    assert_eq!(f.category.name(), "sync-sleep", "{msg}");
    assert_eq!(f.blocking_site.as_deref(), Some(blocking_line().as_str()), "{msg}");
    assert!(f.call.as_deref().is_some_and(|c| c.starts_with("std::thread::") && c.ends_with("::sleep")), "{msg}");
    assert!(f.longest.is_some_and(|d| d >= Duration::from_millis(5)), "{msg}");
    assert!(f.in_test_body, "{msg}");
    assert!(f.spawn_site.as_deref().is_some_and(|s| s.starts_with(&format!("{}:", here(body)))), "{msg}");
    assert!(f.stack.first().is_some_and(|s| s.starts_with(&blocking_line())), "{msg}");
    for needle in [
        "loopscope: test `sleeper` blocked its runtime (stall threshold 2ms, the default):",
        &format!("   at       {}\n", blocking_line()),
        "(the test's body)",
        "fix      await `tokio::time::sleep(..)`",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
    }
}

#[test]
fn the_same_body_with_tokio_sleep_passes() {
    let checked = TestRun::new("sleeper").run(current_thread(), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        7
    });
    let checked = checked.unwrap();
    assert!(checked.verdict.passed(), "{}", checked.verdict);
    assert_eq!(checked.assert_clean(), 7);
}

#[loopscope::test(stall_threshold = "200ms")]
async fn a_test_threshold_lets_shorter_blocking_pass() {
    std::thread::sleep(Duration::from_millis(5));
}

#[loopscope::test]
async fn a_test_may_return_a_result() -> std::io::Result<()> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}

#[loopscope::test]
#[should_panic(expected = "the body's own panic")]
async fn a_panic_in_the_body_is_the_tests_failure() {
    panic!("the body's own panic");
}

#[loopscope::test(start_paused = true)]
async fn paused_time_runs_as_with_tokio_test() {
    let t = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(t.elapsed() >= Duration::from_secs(3600));
}

#[loopscope::test]
#[should_panic(expected = "sync-sleep")]
async fn a_body_that_is_not_send_is_watched_on_the_current_thread() {
    let shared = Rc::new(5);
    tokio::task::yield_now().await;
    std::thread::sleep(Duration::from_millis(*shared));
}

#[loopscope::test]
async fn spawn_local_works_on_the_tests_runtime() {
    let local = Rc::new(1);
    let n = tokio::task::spawn_local(async move { *local + 1 }).await.unwrap();
    assert_eq!(n, 2);
}

#[test]
fn a_spawned_task_that_blocks_names_its_own_spawn_site_on_the_multi_thread_runtime() {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(2);
    let spawned = line!() + 2;
    let checked = TestRun::new("multi").flavor(RuntimeFlavor::MultiThread).run(builder, async {
        tokio::spawn(async { blocking!(std::thread::sleep(Duration::from_millis(20))) }).await.unwrap();
    });
    let verdict = checked.unwrap().verdict;
    assert_eq!(verdict.findings().len(), 1, "{verdict}");
    let f = &verdict.findings()[0];
    assert_eq!(f.blocking_site.as_deref(), Some(blocking_line().as_str()), "{verdict}");
    assert!(f.spawn_site.as_deref().is_some_and(|s| s.starts_with(&format!("{}:", here(spawned)))), "{verdict}");
    assert!(!f.in_test_body, "{verdict}");
}

#[loopscope::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_in_place_is_the_fix_on_the_multi_thread_runtime() {
    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(10)));
    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10))).await.unwrap();
}

#[loopscope::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_in_place_may_take_longer_than_the_deadlock_deadline() {
    // The thread handed its worker over: the test is not stuck, however long this takes.
    let longer = loopscope::testing::GIVE_UP_AFTER + Duration::from_millis(500);
    tokio::task::block_in_place(|| std::thread::sleep(longer));
}

#[test]
fn a_body_that_is_not_send_runs_in_block_on_on_the_multi_thread_runtime_and_says_so() {
    let checked =
        TestRun::new("local body").flavor(RuntimeFlavor::MultiThread).run_local(Builder::new_multi_thread(), async {
            let here = Rc::new(());
            tokio::spawn(async { blocking!(std::thread::sleep(Duration::from_millis(20))) }).await.unwrap();
            drop(here);
        });
    let verdict = checked.unwrap().verdict;
    let msg = verdict.to_string();
    assert_eq!(verdict.findings().len(), 1, "the spawned task is still watched: {msg}");
    assert!(msg.contains("Note: the test's body is not `Send`"), "{msg}");
}

/// Called by [`a_body_whose_error_is_not_send_is_a_watched_task_on_the_multi_thread_runtime`].
#[loopscope::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "called by a_body_whose_error_is_not_send_is_a_watched_task_on_the_multi_thread_runtime"]
async fn blocks_then_returns_a_boxed_error() -> Result<(), Box<dyn std::error::Error>> {
    tokio::task::yield_now().await;
    blocking!(std::thread::sleep(Duration::from_millis(20)));
    Ok(())
}

/// Called by [`a_body_whose_error_is_not_send_is_a_watched_task_on_the_multi_thread_runtime`].
#[loopscope::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "called by a_body_whose_error_is_not_send_is_a_watched_task_on_the_multi_thread_runtime"]
async fn fails_with_a_boxed_error() -> Result<(), Box<dyn std::error::Error>> {
    tokio::task::yield_now().await;
    Err(std::io::Error::other("no such key"))?
}

#[test]
fn a_body_whose_error_is_not_send_is_a_watched_task_on_the_multi_thread_runtime() {
    // `Box<dyn Error>` is not `Send`: such a body used to run unwatched in `block_on`.
    let panic = std::panic::catch_unwind(blocks_then_returns_a_boxed_error).unwrap_err();
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("sync-sleep") && msg.contains(&blocking_line()), "{msg}");
    assert!(!msg.contains("is not `Send`"), "{msg}");
    // An error is the test's failure, printed as the harness would have printed it.
    let err = fails_with_a_boxed_error().unwrap_err();
    assert_eq!(format!("{err:?}"), format!("{:?}", std::io::Error::other("no such key")));
}

#[test]
fn waiting_for_a_file_lock_fails_like_any_blocking_call() {
    use std::os::fd::AsRawFd as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let held = std::fs::File::create(&path).unwrap();
    // SAFETY: a valid descriptor.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (locking, about_to_lock) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        // Held until the test's poll is waiting for it, and then some.
        about_to_lock.recv().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(held);
    });
    let checked = TestRun::new("flock").run(current_thread(), async move {
        let mine = std::fs::File::open(&path).unwrap();
        locking.send(()).unwrap();
        // SAFETY: a valid descriptor.
        blocking!(assert_eq!(unsafe { libc::flock(mine.as_raw_fd(), libc::LOCK_EX) }, 0));
    });
    holder.join().unwrap();
    let verdict = checked.unwrap().verdict;
    // `flock` is no sleep and no computing: the kernel saw the thread blocked in it, so the poll's
    // length is its own whatever the host did.
    assert!(!verdict.passed(), "{verdict}");
    assert_eq!(verdict.findings()[0].category.name(), "file-io", "{verdict}");
}

// Strict mode: blocking calls of any length.

#[loopscope::test(strict)]
#[should_panic(expected = "sync-sleep: a blocking call to")]
async fn strict_mode_fails_a_sleep_far_below_the_threshold() {
    std::thread::sleep(Duration::from_micros(100));
}

#[test]
fn without_strict_mode_the_same_short_sleep_passes() {
    let checked = TestRun::new("short").run(current_thread(), async { std::thread::sleep(Duration::from_micros(100)) });
    let verdict = checked.unwrap().verdict;
    assert!(verdict.passed(), "{verdict}");
}

#[test]
fn strict_mode_names_a_short_file_read_its_file_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.txt");
    std::fs::write(&file, "x").unwrap();
    let path = file.clone();
    let checked = TestRun::new("read").strict(true).run(current_thread(), async move {
        blocking!(std::fs::read(&path)).unwrap();
    });
    let verdict = checked.unwrap().verdict;
    let msg = verdict.to_string();
    let reads: Vec<_> = verdict.findings().iter().filter(|f| f.kind == FindingKind::Call).collect();
    assert!(!reads.is_empty(), "{msg}");
    assert!(reads.iter().all(|f| f.category.name() == "file-io"), "{msg}");
    assert!(reads.iter().all(|f| f.blocking_site.as_deref() == Some(blocking_line().as_str())), "{msg}");
    // Opening the file and reading it, each named with the file.
    let file = file.to_string_lossy().into_owned();
    assert!(reads.iter().any(|f| f.target.as_deref() == Some(file.as_str())), "{msg}");
    assert!(msg.contains("fix      use `tokio::fs`"), "{msg}");
}

#[loopscope::test(strict)]
async fn strict_mode_passes_tokio_fs_tokio_net_and_timers() {
    // Making and removing a directory are file-system calls too: on the blocking pool.
    let dir = tokio::task::spawn_blocking(|| tempfile::tempdir().unwrap()).await.unwrap();
    let file = dir.path().join("data");
    tokio::fs::write(&file, vec![1u8; 4096]).await.unwrap();
    assert_eq!(tokio::fs::read(&file).await.unwrap().len(), 4096);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        conn.write_all(&buf).await.unwrap();
    });
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    server.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    println!("printing is not blocking in strict mode");
    tokio::task::spawn_blocking(move || drop(dir)).await.unwrap();
}

#[loopscope::test(strict, flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_leaves_block_in_place_and_spawn_blocking_alone() {
    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_micros(100)));
    tokio::task::spawn_blocking(|| std::fs::read("/proc/self/stat").unwrap()).await.unwrap();
}

// Accepted blocking.

mod logger {
    pub fn flush() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[loopscope::test(allow = ["test_attr::logger::flush"])]
async fn an_allowed_function_may_block() {
    logger::flush();
}

#[loopscope::test(allow = ["tests/test_attr.rs"], strict)]
async fn an_allowed_file_may_block() {
    std::thread::sleep(Duration::from_millis(5));
}

#[loopscope::test(strict)]
async fn allow_blocking_accepts_a_section() {
    loopscope::allow_blocking(|| std::thread::sleep(Duration::from_millis(5)));
    loopscope::allow_blocking(|| std::fs::read("/proc/self/stat").unwrap());
}

#[test]
fn blocking_outside_the_allowed_section_of_the_same_poll_still_fails() {
    let checked = TestRun::new("mixed").run(current_thread(), async {
        loopscope::allow_blocking(|| std::thread::sleep(Duration::from_millis(5)));
        blocking!(std::thread::sleep(Duration::from_millis(8)));
    });
    let verdict = checked.unwrap().verdict;
    assert_eq!(verdict.findings().len(), 1, "{verdict}");
    assert_eq!(verdict.findings()[0].blocking_site.as_deref(), Some(blocking_line().as_str()), "{verdict}");
}

#[test]
fn allow_blocking_outside_any_test_only_runs_the_closure() {
    assert_eq!(loopscope::allow_blocking(|| 41 + 1), 42);
}

// The policy file and the variable.

#[test]
fn the_crates_policy_file_sets_threshold_strictness_and_allowed_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("loopscope-test.toml"),
        "stall_threshold = \"200ms\"\nstrict = true\nallow = [\"test_attr::logger\"]\n",
    )
    .unwrap();
    let run = || TestRun::new("policy").crate_root(dir.path());
    // 5 ms is under the policy's threshold, but strict mode sees the call.
    let checked = run().run(current_thread(), async { std::thread::sleep(Duration::from_millis(5)) }).unwrap();
    assert_eq!(checked.verdict.stall_threshold(), Duration::from_millis(200));
    assert_eq!(checked.verdict.findings().len(), 1, "{}", checked.verdict);
    assert_eq!(checked.verdict.findings()[0].kind, FindingKind::Call, "{}", checked.verdict);
    // The allowed module may block; a test's own settings win over the file's.
    let checked = run().run(current_thread(), async { logger::flush() }).unwrap();
    assert!(checked.verdict.passed(), "{}", checked.verdict);
    let checked = run().strict(false).run(current_thread(), async { std::thread::sleep(Duration::from_millis(5)) });
    assert!(checked.unwrap().verdict.passed());
}

#[test]
fn a_bad_policy_file_is_an_error_naming_its_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("loopscope-test.toml");
    std::fs::write(&file, "strict = true\nstall_threshold = \"2 fortnights\"\n").unwrap();
    let err = TestRun::new("bad").crate_root(dir.path()).run(current_thread(), async {}).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: key `stall_threshold`: expected a duration", file.display())), "{err}");
}

/// Run by [`the_variable_sets_the_threshold_of_tests_that_set_none`] in a child process.
#[loopscope::test]
#[ignore = "run by the_variable_sets_the_threshold_of_tests_that_set_none"]
async fn sleeps_10ms() {
    std::thread::sleep(Duration::from_millis(10));
}

/// Runs [`sleeps_10ms`] in a child process of this test binary with `LOOPSCOPE_TEST_THRESHOLD`.
fn run_sleeps_10ms(threshold: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sleeps_10ms", "--ignored", "--test-threads", "1"])
        .env("LOOPSCOPE_TEST_THRESHOLD", threshold)
        .output()
        .unwrap()
}

#[test]
fn the_variable_sets_the_threshold_of_tests_that_set_none() {
    let out = run_sleeps_10ms("500ms");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}");
    let out = run_sleeps_10ms("3ms");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("(stall threshold 3ms, LOOPSCOPE_TEST_THRESHOLD)"), "{stdout}");
    let out = run_sleeps_10ms("soon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("this test cannot be watched, so it cannot pass: invalid environment variable LOOPSCOPE_TEST_THRESHOLD=\"soon\""),
        "{stdout}"
    );
}

// Many tests at once in one process.

#[test]
fn concurrent_tests_each_get_their_own_verdict() {
    let runs: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let strict = i % 4 == 1;
                let run = TestRun::new(format!("run {i}")).strict(strict);
                let checked = run.run(current_thread(), async move {
                    for _ in 0..5 {
                        if i % 2 == 1 {
                            std::thread::sleep(Duration::from_millis(if strict { 1 } else { 6 }));
                        }
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                });
                (i, checked.unwrap().verdict)
            })
        })
        .collect();
    for run in runs {
        let (i, verdict) = run.join().unwrap();
        if i % 2 == 0 {
            assert!(verdict.passed(), "run {i} never blocked:\n{verdict}");
        } else {
            let blocked: u64 = verdict.findings().iter().map(|f| f.count).sum();
            assert!(!verdict.passed() && blocked >= 5, "run {i} blocked five times:\n{verdict}");
            assert!(verdict.to_string().contains(&format!("test `run {i}`")), "{verdict}");
        }
    }
}
