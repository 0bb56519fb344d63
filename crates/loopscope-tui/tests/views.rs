//! Every view rendered from a fixed recording (the blocking workload's sync-sleep mistake, six
//! rounds at 100 ms intervals) into ratatui's `TestBackend`, at 80x24 and 160x48, checked
//! against snapshots (`tests/snapshots/`; review changes with `cargo insta review`, or rerun
//! with `INSTA_UPDATE=always` and read the diff).

use loopscope_core::format::Recording;
use loopscope_tui::app::{Action, View};
use loopscope_tui::{App, Source, Timeline};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// The fixture as the TUI sees it, with the stalls' blocking site pointed at a source excerpt
/// kept beside it (the recording names the absolute path of the machine that recorded it).
fn app() -> App {
    let rec = Recording::read("tests/fixtures/blocking.loopscope").expect("the fixture reads");
    let mut t = Timeline::from_recording(rec);
    for s in &mut t.stalls {
        s.stall.blocking_site = Some("tests/fixtures/sleep.rs:6".into());
    }
    App::new(t, Source::Replay("tests/fixtures/blocking.loopscope".into()))
}

fn screen(app: &mut App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| loopscope_tui::ui::render(f, app)).unwrap();
    term.backend().to_string()
}

fn both_sizes(name: &str, app: &mut App) {
    insta::assert_snapshot!(format!("{name}_80x24"), screen(app, 80, 24));
    insta::assert_snapshot!(format!("{name}_160x48"), screen(app, 160, 48));
}

#[test]
fn overview() {
    let mut a = app();
    let s = screen(&mut a, 80, 24);
    assert!(s.contains("Poll time") && s.contains("stalls        6"), "{s}");
    both_sizes("overview", &mut a);
}

#[test]
fn spawn_sites_sorted_and_filtered() {
    let mut a = app();
    a.apply(Action::Goto(View::Sites));
    both_sizes("sites", &mut a);
    a.apply(Action::NextSort);
    a.apply(Action::NextSort);
    a.apply(Action::StartFilter);
    for c in "174".chars() {
        a.apply(Action::FilterChar(c));
    }
    a.apply(Action::FilterDone);
    let s = screen(&mut a, 80, 24);
    assert!(s.contains("1 of 2") && s.contains("lib.rs:174") && !s.contains("lib.rs:248"), "{s}");
    both_sizes("sites_filtered", &mut a);
}

#[test]
fn site_detail() {
    let mut a = app();
    a.apply(Action::Goto(View::Sites));
    a.apply(Action::Open);
    assert_eq!(a.view, View::Detail);
    both_sizes("detail", &mut a);
}

#[test]
fn stalls_and_a_stall_with_its_source() {
    let mut a = app();
    a.apply(Action::Goto(View::Stalls));
    both_sizes("stalls", &mut a);
    a.apply(Action::Move(1));
    a.apply(Action::Open);
    assert_eq!(a.view, View::StallDetail);
    let s = screen(&mut a, 80, 24);
    assert!(s.contains("▶    6 │         std::thread::sleep"), "{s}");
    both_sizes("stall_detail", &mut a);
}

#[test]
fn help_overlay() {
    let mut a = app();
    a.apply(Action::ToggleHelp);
    both_sizes("help", &mut a);
}

#[test]
fn the_timeline_steps_and_the_window_narrows() {
    let mut a = app();
    let n = a.timeline.intervals.len();
    assert!(n >= 10, "{n} intervals");
    assert_eq!(a.window_range(), (0, n));
    a.apply(Action::Step(-3));
    assert_eq!(a.window_range(), (0, n - 3));
    a.apply(Action::First);
    assert_eq!(a.window_range(), (0, 1));
    a.apply(Action::Last);
    a.apply(Action::CycleSpan); // last 1 s = 10 intervals of 100 ms
    assert_eq!(a.window_range(), (n - 10, n));
    // Stepping back over the stalls removes them from the window's count.
    let all = a.stats().stalls;
    a.apply(Action::First);
    assert!(a.stats().stalls < all);
    both_sizes("first_interval", &mut a);
    // Replay: play from the start advances one interval at a time and stops at the end.
    a.apply(Action::TogglePause);
    assert!(a.playing);
    for _ in 0..n {
        a.advance();
    }
    assert!(!a.playing);
    assert_eq!(a.end_pos(), Some(n - 1));
}

#[test]
fn every_view_survives_tiny_and_odd_terminal_sizes() {
    for (w, h) in [(1, 1), (10, 5), (20, 6), (40, 10), (79, 23), (300, 100)] {
        let mut a = app();
        for action in [
            None,
            Some(Action::Goto(View::Sites)),
            Some(Action::Open),
            Some(Action::Goto(View::Stalls)),
            Some(Action::Open),
            Some(Action::Goto(View::HotLines)),
            Some(Action::Open),
            Some(Action::ToggleHelp),
        ] {
            if let Some(act) = action {
                a.apply(act);
            }
            screen(&mut a, w, h);
        }
    }
    // An empty session (a live one before its first frame) renders too.
    let mut empty = App::new(Timeline::default(), Source::Live("nothing yet".into()));
    for v in [View::Overview, View::Sites, View::Stalls, View::HotLines] {
        empty.apply(Action::Goto(v));
        empty.apply(Action::Open);
        empty.apply(Action::Step(-1));
        screen(&mut empty, 80, 24);
    }
}

/// The same data as tokio-console gives it: what only the recorder knows is marked so.
#[test]
fn console_sourced_views_mark_what_needs_the_recorder() {
    let rec = Recording::read("tests/fixtures/blocking.loopscope").expect("the fixture reads");
    let mut t = Timeline::from_recording(rec);
    for s in &mut t.stalls {
        s.stall.blocking_site = None;
        s.stall.stack.clear();
    }
    let mut a = App::new(t, Source::Console("http://127.0.0.1:6669".into()));
    let s = screen(&mut a, 160, 48);
    assert!(s.contains("tokio-console http://127.0.0.1:6669") && s.contains("need the loopscope recorder"), "{s}");
    a.apply(Action::Goto(View::Stalls));
    let s = screen(&mut a, 160, 48);
    assert!(s.contains("long poll") && s.contains("needs loopscope recorder") && !s.contains("sync-sleep"), "{s}");
    both_sizes("console_stalls", &mut a);
    a.apply(Action::Open);
    let s = screen(&mut a, 160, 48);
    assert!(s.contains("on an unknown worker") && s.contains("tokio-console data has no stacks"), "{s}");
}

/// A source file edited after the program was recorded is flagged: its lines may have moved.
#[test]
fn a_source_newer_than_the_recording_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sleep.rs");
    std::fs::copy("tests/fixtures/sleep.rs", &src).unwrap();
    let at = format!("{}:6", src.display());
    let shown = |modified: std::time::SystemTime| {
        std::fs::File::options().write(true).open(&src).unwrap().set_modified(modified).unwrap();
        let rec = Recording::read("tests/fixtures/blocking.loopscope").unwrap();
        let mut t = Timeline::from_recording(rec);
        for s in &mut t.stalls {
            s.stall.blocking_site = Some(at.clone());
        }
        let mut a = App::new(t, Source::Replay("x".into()));
        a.apply(Action::Goto(View::Stalls));
        a.apply(Action::Open);
        screen(&mut a, 160, 48)
    };
    let recorded = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(
            Recording::read("tests/fixtures/blocking.loopscope").unwrap().header.start_unix_ns,
        );
    let after = shown(recorded + std::time::Duration::from_secs(3600));
    assert!(after.contains("changed after the program was recorded"), "{after}");
    let before = shown(recorded - std::time::Duration::from_secs(3600));
    assert!(!before.contains("changed after") && before.contains("std::thread::sleep"), "{before}");
}

/// What the host took from the workers is shown beside their busy time and in the runtime's
/// figures, so that a high scheduling latency on a busy machine explains itself.
#[test]
fn time_the_workers_waited_for_a_cpu_is_shown() {
    let rec = Recording::read("tests/fixtures/blocking.loopscope").unwrap();
    let mut t = Timeline::from_recording(rec);
    for i in &mut t.intervals {
        for w in &mut i.workers {
            w.cpu_ns = 30_000_000;
            w.run_delay_ns = 10_000_000;
        }
    }
    let mut a = App::new(t, Source::Replay("x".into()));
    let s = screen(&mut a, 160, 48);
    assert!(s.contains("workers waited") && s.contains("for a CPU (25% of their time)"), "{s}");
    assert!(s.contains("25%w"), "per worker: {s}");
    assert!((a.stats().host_share() - 0.25).abs() < 1e-9);
}

/// The hang catalogue's deadlock (`loopscope run hangs --scenario deadlock --for 4s --interval
/// 250ms`): two tasks idle since the start, and the automatic dump naming each one's lock.
#[test]
fn tasks_view_shows_the_waiting_tasks_and_the_dump_of_a_deadlock() {
    let rec = Recording::read("tests/fixtures/hangs.loopscope").expect("the fixture reads");
    let mut a = App::new(Timeline::from_recording(rec), Source::Replay("tests/fixtures/hangs.loopscope".into()));
    a.apply(Action::Goto(View::Tasks));
    let s = screen(&mut a, 160, 48);
    assert!(s.contains("Waiting tasks: 2 spawn sites"), "{s}");
    assert!(s.contains("2 tasks in 2 groups"), "{s}");
    assert_eq!(s.matches("(Mutex::lock)").count(), 2, "{s}");
    both_sizes("tasks", &mut a);
    // `d` on a recording says it cannot take one.
    a.apply(Action::Dump);
    assert!(a.status.as_deref().is_some_and(|s| s.contains("recording")));
}

/// A dump refused after the deadlock's (a runtime with several workers takes one per run): the
/// view keeps the complete one, numbered as it came, and says on its border what became of the
/// later one.
#[test]
fn tasks_view_keeps_the_complete_dump_when_a_later_one_is_refused() {
    use loopscope_core::model::{DumpOutcome, DumpTrigger, Frame, TaskDump};
    let rec = Recording::read("tests/fixtures/hangs.loopscope").expect("the fixture reads");
    let mut t = Timeline::from_recording(rec);
    let complete = t.tasks.dumps_total();
    assert!(complete >= 1, "the fixture holds the deadlock's dump");
    t.push(Frame::TaskDump(Box::new(TaskDump {
        at_ns: 3_500_000_000,
        trigger: DumpTrigger::Request,
        outcome: DumpOutcome::Unavailable { reason: "one dump per run".into() },
        ..TaskDump::default()
    })));
    let mut a = App::new(t, Source::Replay("tests/fixtures/hangs.loopscope".into()));
    a.apply(Action::Goto(View::Tasks));
    let s = screen(&mut a, 160, 48);
    assert_eq!(s.matches("(Mutex::lock)").count(), 2, "the complete dump's groups: {s}");
    assert!(s.contains(&format!("Task dump {complete} at")), "{s}");
    assert!(s.contains(&format!("dump {} at 3.50s: unavailable", complete + 1)), "{s}");
}
