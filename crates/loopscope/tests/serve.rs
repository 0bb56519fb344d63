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

    // Connections that have not said hello are bounded from the moment they are accepted: with
    // four silent ones open, one more is closed at once, whatever it sends.
    let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut extra = TcpStream::connect(&addr).unwrap();
    let _ = extra.write_all(HELLO);
    extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert!(got.is_empty(), "a fifth connection before any hello was served {} bytes", got.len());
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

#[test]
fn an_output_that_fails_to_start_after_the_server_started_fails_install_without_hanging() {
    // The live server starts first; the Prometheus endpoint is then refused (a public address
    // without prometheus_public). Install must return the error, not wait for the server.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        let r = Session::builder().serve("127.0.0.1:0").prometheus("0.0.0.0:0").install(&mut b);
        let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
    });
    let result = rx.recv_timeout(Duration::from_secs(60)).expect("install returned");
    let err = result.expect_err("a public Prometheus address is refused");
    assert!(err.contains("prometheus"), "{err}");
    // And a Unix socket server with an OTLP endpoint that cannot be used.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("live.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = format!("unix:{}", sock.display());
    std::thread::spawn(move || {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        let r = Session::builder().serve(addr).otlp("https://collector.invalid:4318").install(&mut b);
        let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
    });
    let err = rx.recv_timeout(Duration::from_secs(60)).expect("install returned").expect_err("https is refused");
    assert!(err.contains("otlp"), "{err}");
    assert!(!sock.exists(), "the server that had started was stopped and its socket removed");
}

#[test]
fn another_users_connections_never_keep_this_users_client_out() {
    // As root, a child process of another user (nobody) opens twenty silent connections to the
    // port, which any local user can reach; this user's client still attaches.
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!(
            "SKIPPED: another_users_connections_never_keep_this_users_client_out: needs root to run a process as another user"
        );
        return;
    }
    use std::os::unix::process::CommandExt;
    let (addr, stop, program) = serving_program("127.0.0.1:0");
    let port = addr.rsplit(':').next().unwrap().to_string();
    let script = format!(
        "for i in $(seq 20); do exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || exit 1; done; echo open; exec sleep 60"
    );
    let mut hog = std::process::Command::new("bash")
        .args(["-c", &script])
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bash runs as nobody");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(hog.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "open", "the other user's connections are open");
    let mut good = TcpStream::connect(&addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    good.write_all(HELLO).unwrap();
    let mut reader = Reader::new(good, addr.clone()).expect("this user's client is served");
    next_interval(&mut reader);
    let _ = hog.kill();
    let _ = hog.wait();
    stop.store(true, Ordering::Relaxed);
    program.join().unwrap();
}
