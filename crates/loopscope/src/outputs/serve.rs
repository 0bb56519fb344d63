//! Serving a session's live data to `loopscope tui --attach`.
//!
//! The stream is the recording format itself: after a client's hello ([`HELLO`], or [`DUMP_HELLO`]
//! and a request number for a client that asks for a task dump first), the server
//! sends the preamble, the session so far (header, declarations, the newest intervals and events)
//! and then every frame as it is made. Everything runs on the server's own threads, never on the
//! profiled runtime. A client that sends anything but the hello within two seconds, belongs to
//! another user (a Unix socket's peer credentials; for TCP on loopback, the owner of the client's
//! socket in `/proc/net/tcp`), or cannot keep up (its queue of [`CLIENT_QUEUE`] frames fills) is
//! dropped. At most [`MAX_CLIENTS`] connections are open at once, and at most [`MAX_GREETING`] of
//! them before their hello, so silent connections cannot keep a real client out. The program
//! never waits for a client.

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
pub use loopscope_core::live::{DUMP_HELLO, HELLO, ServeAddr};
use loopscope_core::model::Frame;

use crate::hot::lock;
use crate::session::Error;

/// Frames queued for one client before it is dropped as too slow.
pub const CLIENT_QUEUE: usize = 1024;

/// Clients served at once; more are refused.
pub const MAX_CLIENTS: usize = 16;

/// Connections that have not said hello yet, at once; more are refused.
pub const MAX_GREETING: usize = 4;

/// How long a connection has to say hello.
const HELLO_WITHIN: Duration = Duration::from_millis(500);

/// Intervals and events a new client receives from before it connected (and the latest task
/// ages and task dumps: a few frames each, kept apart, as one dump can be large).
const HISTORY_INTERVALS: usize = 600;
const HISTORY_EVENTS: usize = 1000;
const HISTORY_DUMPS: usize = 2;

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
    /// The latest task-ages frame.
    ages: Option<Arc<Vec<u8>>>,
    /// The latest task dumps.
    dumps: VecDeque<Arc<Vec<u8>>>,
    /// The latest complete task dump (kept when later ones were refused or timed out).
    complete_dump: Option<Arc<Vec<u8>>>,
    tail: Vec<Arc<Vec<u8>>>,
    clients: Vec<SyncSender<Arc<Vec<u8>>>>,
    /// The session ended: clients still connecting get the whole stream and are closed.
    closed: bool,
    /// Client threads alive, from accept to close (a connection that never says hello counts).
    threads: usize,
    /// Of those, the ones still waiting for their hello.
    greeting: usize,
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
    pub(crate) fn start(
        addr: &ServeAddr,
        public: bool,
        frames: Receiver<Frame>,
        on_dump: DumpHook,
    ) -> Result<Server, Error> {
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
                    crate::hot::say(&format!(
                        "warning: serving live profile data (stacks, source paths, the command line) on {bound}, \
                         readable by anyone who can reach it"
                    ));
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
            .spawn(move || accept(listener, &hub, &a_stop, &on_dump))
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
            Frame::Runtime(_) | Frame::Modules(_) | Frame::Sites(_) | Frame::Spans(_) | Frame::Workers(_) => {
                h.declarations.push(Arc::clone(&bytes))
            }
            Frame::TaskAges(_) => h.ages = Some(Arc::clone(&bytes)),
            Frame::TaskDump(d) => {
                if d.outcome == loopscope_core::model::DumpOutcome::Complete {
                    h.complete_dump = Some(Arc::clone(&bytes));
                }
                if h.dumps.len() == HISTORY_DUMPS {
                    h.dumps.pop_front();
                }
                h.dumps.push_back(Arc::clone(&bytes));
            }
            Frame::Interval(_) | Frame::Samples(_) => {
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

/// What a client's dump request calls, with the request's number.
pub(crate) type DumpHook = Arc<dyn Fn(u64) + Send + Sync>;

fn accept(listener: Listener, hub: &Arc<Mutex<Hub>>, stop: &AtomicBool, on_dump: &DumpHook) {
    while !stop.load(Ordering::Relaxed) {
        let conn: Option<Box<dyn Conn>> = match &listener {
            Listener::Unix(l, _) => l.accept().ok().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
            Listener::Tcp(l) => l.accept().ok().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
        };
        let Some(conn) = conn else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        // Another user's connection is closed before it can take a place.
        if !conn.trusted() {
            continue;
        }
        {
            // Every connection costs a thread and a descriptor in the profiled process: bounded
            // from the moment it is accepted, not from its hello.
            let mut h = lock(hub);
            if h.threads >= MAX_CLIENTS || h.greeting >= MAX_GREETING {
                continue;
            }
            h.threads += 1;
            h.greeting += 1;
        }
        let client_hub = Arc::clone(hub);
        let client_dump = Arc::clone(on_dump);
        let spawned = std::thread::Builder::new().name("loopscope-client".into()).spawn(move || {
            serve_client(conn, &client_hub, &client_dump);
            lock(&client_hub).threads -= 1;
        });
        if spawned.is_err() {
            let mut h = lock(hub);
            h.threads -= 1;
            h.greeting -= 1;
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether a new (trusted) connection says a hello in time; a dump request's number, if it
/// asks for one.
fn greet(conn: &mut dyn Conn) -> Option<Option<u64>> {
    conn.setup().ok()?;
    let mut hello = [0u8; HELLO.len()];
    conn.read_exact(&mut hello).ok()?;
    if &hello == HELLO {
        return Some(None);
    }
    if &hello != DUMP_HELLO {
        return None;
    }
    let mut n = [0u8; 8];
    conn.read_exact(&mut n).ok()?;
    Some(Some(u64::from_le_bytes(n)).filter(|n| *n != 0))
}

/// A connected client socket.
trait Conn: Read + Write + Send {
    fn setup(&self) -> std::io::Result<()>;
    /// Whether the peer may read this process's profile.
    fn trusted(&self) -> bool;
    /// Whether the peer is this user's, on this machine (it may ask for task dumps).
    fn local(&self) -> bool;
}

impl Conn for TcpStream {
    fn setup(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(HELLO_WITHIN))?;
        self.set_write_timeout(Some(Duration::from_secs(5)))?;
        self.set_nodelay(true)
    }
    /// On loopback, only this user's programs; a public address (allowed explicitly) is open.
    fn trusted(&self) -> bool {
        let (Ok(local), Ok(peer)) = (self.local_addr(), self.peer_addr()) else { return false };
        if !peer.ip().is_loopback() {
            return true;
        }
        // SAFETY: getuid cannot fail.
        tcp_owner(peer, local) == Some(unsafe { libc::getuid() })
    }
    fn local(&self) -> bool {
        self.peer_addr().is_ok_and(|p| p.ip().is_loopback()) && self.trusted()
    }
}

/// The owner of the loopback TCP socket at `from` connected to `to`, from the kernel's socket
/// tables (`/proc/net/tcp`, `/proc/net/tcp6`: local address, remote address, ..., uid).
fn tcp_owner(from: std::net::SocketAddr, to: std::net::SocketAddr) -> Option<u32> {
    // The kernel prints each 32-bit word of the address as a number in the host's byte order.
    fn hex(a: std::net::SocketAddr) -> String {
        let octets = match a.ip() {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let words: String =
            octets.chunks(4).map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))).collect();
        format!("{words}:{:04X}", a.port())
    }
    let table = if from.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let (want_local, want_remote) = (hex(from), hex(to));
    std::fs::read_to_string(table).ok()?.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&want_local.as_str()) && f.get(2) == Some(&want_remote.as_str()))
            .then(|| f.get(7)?.parse().ok())
            .flatten()
    })
}

impl Conn for UnixStream {
    fn setup(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(HELLO_WITHIN))?;
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
    fn local(&self) -> bool {
        self.trusted()
    }
}

fn serve_client(mut conn: Box<dyn Conn>, hub: &Mutex<Hub>, on_dump: &DumpHook) {
    let greeted = greet(&mut *conn);
    lock(hub).greeting -= 1;
    let Some(dump) = greeted else { return };
    // A dump pauses the program: only this user's programs on this machine may ask for one, not
    // every peer of a public address.
    if let Some(n) = dump
        && conn.local()
    {
        on_dump(n);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(CLIENT_QUEUE);
    let backlog: Vec<Arc<Vec<u8>>> = {
        let mut h = lock(hub);
        // After the session ended nothing more comes: the backlog is the whole stream.
        if !h.closed {
            h.clients.push(tx);
        }
        h.header
            .iter()
            .chain(&h.declarations)
            .chain(&h.intervals)
            .chain(&h.ages)
            .chain(&h.events)
            // The latest complete dump first when the latest dumps are all refused or timed out.
            .chain(h.complete_dump.iter().filter(|c| !h.dumps.iter().any(|d| Arc::ptr_eq(c, d))))
            .chain(&h.dumps)
            .chain(&h.tail)
            .cloned()
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_connection_is_owned_by_the_user_who_made_it() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(bind) else { continue };
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server_side, peer) = listener.accept().unwrap();
            let local = server_side.local_addr().unwrap();
            // SAFETY: getuid cannot fail.
            assert_eq!(tcp_owner(peer, local), Some(unsafe { libc::getuid() }), "{bind}");
            assert!(server_side.trusted());
            // A pair of addresses no socket has belongs to nobody.
            let nobody = std::net::SocketAddr::new(peer.ip(), 1);
            assert_eq!(tcp_owner(nobody, local), None);
            drop(client);
        }
    }
}
