//! Serving live data: a real session serves its frames over TCP and a Unix socket; a client that
//! says hello receives the recording stream; garbage, oversized and silent clients are dropped
//! while the program and the good client carry on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use loopscope::Session;
use loopscope::core::format::Reader;
use loopscope::core::model::Frame;
use loopscope::serve::HELLO;

/// A program under the recorder that runs until told to stop; returns where it serves, the stop
/// flag, and its thread (which returns the report's poll count).
fn serving_program(addr: &str) -> (String, Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = addr.to_string();
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        let session = Session::builder().interval(Duration::from_millis(50)).serve(addr).install(&mut b).unwrap();
        tx.send(session.serving_at().expect("serving")).unwrap();
        let rt = b.build().unwrap();
        rt.block_on(async {
            tokio::spawn(async move {
                while !flag.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await
            .unwrap();
        });
        drop(rt);
        session.finish().unwrap().unwrap().runtime.polls
    });
    (rx.recv().unwrap(), stop, thread)
}

fn next_interval<R: Read>(r: &mut Reader<R>) {
    loop {
        match r.next_frame().expect("a frame") {
            Some(Frame::Interval(_)) => return,
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
}

/// Whether the server closed the connection (EOF or reset) before the deadline.
fn dropped(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_attaches_over_tcp_and_hostile_clients_are_dropped() {
    let (addr, stop, program) = serving_program("127.0.0.1:0");
    let mut good = TcpStream::connect(&addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    good.write_all(HELLO).unwrap();
    let mut reader = Reader::new(good, addr.clone()).expect("the stream starts like a recording");
    assert!(reader.header().interval_ns == 50_000_000);
    next_interval(&mut reader);

    // Garbage instead of the hello.
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(dropped(garbage), "a client sending garbage is dropped");
    // An oversized first message.
    let mut big = TcpStream::connect(&addr).unwrap();
    let _ = big.write_all(&vec![b'x'; 1 << 20]);
    assert!(dropped(big), "a client sending a megabyte is dropped");
    // A client that says nothing (dropped after the hello's 2 s timeout).
    let silent = TcpStream::connect(&addr).unwrap();
    assert!(dropped(silent), "a silent client is dropped");
    // A wrong protocol version.
    let mut old = TcpStream::connect(&addr).unwrap();
    old.write_all(b"LSCOPE-ATTACH 9\n").unwrap();
    assert!(dropped(old));

    // Connections are bounded from the moment they are accepted: with 15 silent ones and the
    // good client open, one more is closed at once (before any hello timeout).
    let silent: Vec<TcpStream> = (0..15).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut extra = TcpStream::connect(&addr).unwrap();
    // Even with a proper hello it gets nothing: no preamble, just the end of the stream.
    let _ = extra.write_all(HELLO);
    extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert!(got.is_empty(), "the 17th connection was served {} bytes", got.len());
    drop(silent);

    // The good client and the program carry on.
    next_interval(&mut reader);
    stop.store(true, Ordering::Relaxed);
    let polls = program.join().unwrap();
    assert!(polls > 10, "{polls} polls");
    let mut footer = false;
    while let Some(f) = reader.next_frame().expect("frames up to the end") {
        footer |= matches!(f, Frame::Footer(_));
    }
    assert!(footer, "the stream ends with the session's footer");
}

#[test]
fn a_unix_socket_is_owner_only_and_removed_at_the_end() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let (addr, stop, program) = serving_program(&format!("unix:{}", path.display()));
    assert_eq!(addr, format!("unix:{}", path.display()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(HELLO).unwrap();
    let mut reader = Reader::new(s, path.clone()).unwrap();
    next_interval(&mut reader);
    stop.store(true, Ordering::Relaxed);
    program.join().unwrap();
    assert!(!path.exists(), "the socket is removed when the session ends");
}

#[test]
fn public_and_malformed_addresses_are_refused() {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    let err = Session::builder().serve("0.0.0.0:0").install(&mut b).unwrap_err().to_string();
    assert!(err.contains("serve_public"), "{err}");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    let err = Session::builder().serve("somewhere").install(&mut b).unwrap_err().to_string();
    assert!(err.contains("`serve`") && err.contains("somewhere"), "{err}");
}
