//! The attach client against hostile servers on loopback: a stream that breaks the rules is cut
//! off with the reason, a flood cannot make the viewer hold more than its queue, and a silent
//! stream is taken as stalled.

use std::io::Write;
use std::net::TcpListener;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use loopscope_core::format::{encode_frame, preamble};
use loopscope_core::live::{FEED_QUEUE, FeedEvent, HELLO, ServeAddr, attach};
use loopscope_core::model::*;

fn header(interval_ns: u64) -> Header {
    Header {
        format_version: FORMAT_VERSION,
        loopscope_version: "test".into(),
        flavor: Flavor::MultiThread,
        workers: 2,
        host: "h".into(),
        pid: 1,
        start_unix_ns: 0,
        command_line: vec![],
        workload: None,
        interval_ns,
        slow_poll_ns: 100_000,
        schedule_latency: true,
        stall_threshold_ns: Some(10_000_000),
    }
}

/// A server that accepts one client, reads its hello and runs `serve` on the connection.
fn server(serve: impl FnOnce(std::net::TcpStream) + Send + 'static) -> ServeAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; HELLO.len()];
        std::io::Read::read_exact(&mut s, &mut hello).unwrap();
        serve(s);
    });
    ServeAddr::Tcp(addr)
}

fn bytes(frames: &[Frame]) -> Vec<u8> {
    let mut out = preamble();
    for f in frames {
        encode_frame(f, &mut out).unwrap();
    }
    out
}

/// The first status that says the client is reconnecting, within a deadline.
fn reconnecting(rx: &Receiver<FeedEvent>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(FeedEvent::Status(Some(s))) if s.starts_with("reconnecting") => return s,
            Ok(_) => {}
            Err(e) => panic!("no reconnect within {within:?}: {e}"),
        }
    }
}

#[test]
fn a_stream_that_names_what_it_never_declared_is_cut_off_with_the_reason() {
    let addr = server(|mut s| {
        let interval =
            Interval { sites: vec![SiteInterval { site: u32::MAX, ..SiteInterval::default() }], ..Interval::default() };
        let _ = s.write_all(&bytes(&[Frame::Header(header(1_000_000_000)), Frame::Interval(Box::new(interval))]));
        std::thread::sleep(Duration::from_secs(30));
    });
    let rx = attach(addr);
    let why = reconnecting(&rx, Duration::from_secs(20));
    assert!(why.contains("undeclared site 4294967295"), "{why}");
}

#[test]
fn a_flood_waits_for_the_viewer_instead_of_filling_memory() {
    let (wrote_tx, wrote) = std::sync::mpsc::channel();
    let addr = server(move |mut s| {
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(&bytes(&[Frame::Header(header(1_000_000_000))]));
        let mut one = Vec::new();
        encode_frame(&Frame::Event(Event::RecorderError { at_ns: 0, message: "x".repeat(100) }), &mut one).unwrap();
        let mut sent = 0u64;
        // Until the client stops reading (its queue is full and the socket buffers too).
        while s.write_all(&one).is_ok() && sent < 10_000_000 {
            sent += 1;
        }
        let _ = wrote_tx.send(sent);
    });
    let rx = attach(addr);
    // The viewer reads nothing: the client fills its queue of FEED_QUEUE events, stops reading,
    // and the server's writes block once the socket's buffers are full too.
    let sent = wrote.recv_timeout(Duration::from_secs(60)).expect("the server's writes stopped");
    let frame_bytes = 100 + 20;
    assert!(
        sent * frame_bytes < 64 << 20,
        "{sent} frames ({} MiB) taken from a server while the viewer read none",
        (sent * frame_bytes) >> 20
    );
    assert!(sent as usize > FEED_QUEUE, "the queue held {FEED_QUEUE} events before the client stopped reading");
    // Nothing was lost: the viewer, reading at last, gets the events in order.
    let got = rx.iter().take(FEED_QUEUE).count();
    assert_eq!(got, FEED_QUEUE);
}

#[test]
fn a_silent_stream_is_taken_as_stalled() {
    let addr = server(|mut s| {
        // A 100 ms session that goes quiet after its header.
        let _ = s.write_all(&bytes(&[Frame::Header(header(100_000_000))]));
        std::thread::sleep(Duration::from_secs(60));
    });
    let rx = attach(addr);
    let started = Instant::now();
    let why = reconnecting(&rx, Duration::from_secs(30));
    assert!(started.elapsed() >= Duration::from_secs(4), "{why} after {:?}", started.elapsed());
    assert!(why.contains("disconnected"), "{why}");
}
