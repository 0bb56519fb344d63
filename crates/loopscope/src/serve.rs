//! Serving a session's live data to `loopscope tui --attach`.
//!
//! The stream is the recording format itself: after a client's hello ([`HELLO`]), the server
//! sends the preamble, the session so far (header, declarations, the newest intervals and events)
//! and then every frame as it is made. Everything runs on the server's own threads, never on the
//! profiled runtime. A client that sends anything but the hello within two seconds, belongs to
//! another user (Unix sockets), or cannot keep up (its queue of [`CLIENT_QUEUE`] frames fills) is
//! dropped, and at most [`MAX_CLIENTS`] connections are open at once; the program never waits
//! for a client.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use loopscope_core::format::{encode_frame, preamble};
pub use loopscope_core::live::{HELLO, ServeAddr};
use loopscope_core::model::Frame;

use crate::session::Error;
use crate::shared::lock;

/// Frames queued for one client before it is dropped as too slow.
pub const CLIENT_QUEUE: usize = 1024;

/// Clients served at once; more are refused.
pub const MAX_CLIENTS: usize = 16;

/// Intervals and events a new client receives from before it connected.
const HISTORY_INTERVALS: usize = 600;
const HISTORY_EVENTS: usize = 1000;

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// Encoded frames of the session so far, for clients that connect later.
#[derive(Default)]
struct Hub {
    header: Option<Arc<Vec<u8>>>,
    declarations: Vec<Arc<Vec<u8>>>,
    intervals: VecDeque<Arc<Vec<u8>>>,
    events: VecDeque<Arc<Vec<u8>>>,
    tail: Vec<Arc<Vec<u8>>>,
    clients: Vec<SyncSender<Arc<Vec<u8>>>>,
    /// The session ended: clients still connecting get the whole stream and are closed.
    closed: bool,
    /// Client threads alive, from accept to close (a connection that never says hello counts).
    threads: usize,
}

/// A running server.
pub(crate) struct Server {
    /// The address actually bound (a TCP port 0 resolved).
    pub(crate) bound: ServeAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    broadcaster: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and starts serving the frames that arrive on `frames`.
    pub(crate) fn start(addr: &ServeAddr, public: bool, frames: Receiver<Frame>) -> Result<Server, Error> {
        let bad = |why: String| Error::Serve { addr: addr.to_string(), why };
        let (listener, bound) = match addr {
            ServeAddr::Tcp(a) => {
                if !a.ip().is_loopback() && !public {
                    return Err(bad(
                        "a loopback address such as 127.0.0.1:6670; serving on a public address needs serve_public \
                         (LOOPSCOPE_SERVE_PUBLIC=1), as anyone who reaches it can read the profile"
                            .into(),
                    ));
                }
                let l = TcpListener::bind(a).map_err(|e| bad(format!("an address that can be bound ({e})")))?;
                let bound = ServeAddr::Tcp(l.local_addr().map_err(|e| bad(e.to_string()))?);
                if !a.ip().is_loopback() {
                    eprintln!("loopscope: warning: serving live profile data on {bound}, reachable from other hosts");
                }
                (Listener::Tcp(l), bound)
            }
            ServeAddr::Unix(p) => {
                if let Ok(meta) = std::fs::symlink_metadata(p) {
                    if !meta.file_type().is_socket() || UnixStream::connect(p).is_ok() {
                        return Err(bad("a path that is not in use".into()));
                    }
                    // A socket left behind by a program that ended without cleaning up.
                    let _ = std::fs::remove_file(p);
                }
                let l =
                    UnixListener::bind(p).map_err(|e| bad(format!("a path where a socket can be created ({e})")))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| bad(format!("a socket whose permissions can be set ({e})")))?;
                (Listener::Unix(l, p.clone()), addr.clone())
            }
        };
        match &listener {
            Listener::Unix(l, _) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        }
        .map_err(|e| bad(e.to_string()))?;
        let hub = Arc::new(Mutex::new(Hub::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let b_hub = Arc::clone(&hub);
        let broadcaster = std::thread::Builder::new()
            .name("loopscope-serve".into())
            .spawn(move || broadcast(frames, &b_hub))
            .map_err(|e| Error::Recorder(format!("cannot start the serving thread: {e}")))?;
        let a_stop = Arc::clone(&stop);
        let acceptor = std::thread::Builder::new()
            .name("loopscope-accept".into())
            .spawn(move || accept(listener, &hub, &a_stop))
            .map_err(|e| Error::Recorder(format!("cannot start the accepting thread: {e}")))?;
        Ok(Server { bound, stop, acceptor: Some(acceptor), broadcaster: Some(broadcaster) })
    }

    /// Stops accepting; clients get the rest of the stream (the flusher's end closes it).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        if let Some(b) = self.broadcaster.take() {
            let _ = b.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn broadcast(frames: Receiver<Frame>, hub: &Mutex<Hub>) {
    let mut buf = Vec::new();
    for frame in frames {
        buf.clear();
        if encode_frame(&frame, &mut buf).is_err() {
            continue;
        }
        let bytes = Arc::new(buf.clone());
        let mut h = lock(hub);
        match frame {
            Frame::Header(_) => h.header = Some(Arc::clone(&bytes)),
            Frame::Runtime(_) | Frame::Modules(_) | Frame::Sites(_) | Frame::Workers(_) => {
                h.declarations.push(Arc::clone(&bytes))
            }
            Frame::Interval(_) => {
                if h.intervals.len() == HISTORY_INTERVALS {
                    h.intervals.pop_front();
                }
                h.intervals.push_back(Arc::clone(&bytes));
            }
            Frame::Event(_) => {
                if h.events.len() == HISTORY_EVENTS {
                    h.events.pop_front();
                }
                h.events.push_back(Arc::clone(&bytes));
            }
            Frame::Workload(_) | Frame::Footer(_) => h.tail.push(Arc::clone(&bytes)),
        }
        h.clients.retain(|c| match c.try_send(Arc::clone(&bytes)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        });
    }
    // The session ended: dropping the senders ends every client's stream.
    let mut h = lock(hub);
    h.closed = true;
    h.clients.clear();
}

fn accept(listener: Listener, hub: &Arc<Mutex<Hub>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let conn: Option<Box<dyn Conn>> = match &listener {
            Listener::Unix(l, _) => l.accept().ok().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
            Listener::Tcp(l) => l.accept().ok().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
        };
        let Some(conn) = conn else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        {
            // Every connection costs a thread and a descriptor in the profiled process: bounded
            // from the moment it is accepted, not from its hello.
            let mut h = lock(hub);
            if h.threads >= MAX_CLIENTS {
                continue;
            }
            h.threads += 1;
        }
        let client_hub = Arc::clone(hub);
        let spawned = std::thread::Builder::new().name("loopscope-client".into()).spawn(move || {
            serve_client(conn, &client_hub);
            lock(&client_hub).threads -= 1;
        });
        if spawned.is_err() {
            lock(hub).threads -= 1;
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// A connected client socket.
trait Conn: Read + Write + Send {
    fn setup(&self) -> std::io::Result<()>;
    /// Whether the peer may read this process's profile.
    fn trusted(&self) -> bool;
}

impl Conn for TcpStream {
    fn setup(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(Duration::from_secs(2)))?;
        self.set_write_timeout(Some(Duration::from_secs(5)))?;
        self.set_nodelay(true)
    }
    fn trusted(&self) -> bool {
        true
    }
}

impl Conn for UnixStream {
    fn setup(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(Duration::from_secs(2)))?;
        self.set_write_timeout(Some(Duration::from_secs(5)))
    }
    fn trusted(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: 0 };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: a valid socket and an out-buffer of the stated size.
        let rc = unsafe {
            libc::getsockopt(self.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len)
        };
        // SAFETY: getuid cannot fail.
        rc == 0 && cred.uid == unsafe { libc::getuid() }
    }
}

fn serve_client(mut conn: Box<dyn Conn>, hub: &Mutex<Hub>) {
    if conn.setup().is_err() || !conn.trusted() {
        return;
    }
    let mut hello = [0u8; HELLO.len()];
    if conn.read_exact(&mut hello).is_err() || &hello != HELLO {
        return;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(CLIENT_QUEUE);
    let backlog: Vec<Arc<Vec<u8>>> = {
        let mut h = lock(hub);
        // After the session ended nothing more comes: the backlog is the whole stream.
        if !h.closed {
            h.clients.push(tx);
        }
        h.header.iter().chain(&h.declarations).chain(&h.intervals).chain(&h.events).chain(&h.tail).cloned().collect()
    };
    if conn.write_all(&preamble()).is_err() {
        return;
    }
    for chunk in &backlog {
        if conn.write_all(chunk).is_err() {
            return;
        }
    }
    for chunk in rx {
        if conn.write_all(&chunk).is_err() {
            return;
        }
    }
}
