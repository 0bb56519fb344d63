//! The live protocol between a serving session (`SessionBuilder::serve`) and
//! `loopscope tui --attach`: the client sends [`HELLO`]; the server answers with the recording
//! format itself (preamble, then frames: the session so far, then each frame as it is made).
//!
//! [`attach`] is the client: it reads the stream on a thread of its own through the same
//! [`Reader`] (and so the same validation) as a file, and hands the viewer [`FeedEvent`]s on a
//! bounded channel, reconnecting when the stream ends, breaks or stalls. Any source of live
//! frames (the tokio-console bridge too) speaks `FeedEvent`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use crate::format::Reader;
use crate::model::Frame;

/// What a client sends first: the protocol and its version.
pub const HELLO: &[u8; 16] = b"LSCOPE-ATTACH 1\n";

/// The hello of a client that asks for a task dump (`loopscope dump --attach`), followed by the
/// request's number (8 bytes, little-endian; not 0): the server takes a dump (or lets the one under
/// way answer) and streams the session as after [`HELLO`]; the dump's frame carries the number.
pub const DUMP_HELLO: &[u8; 16] = b"LSCOPE-DUMPRQ 1\n";

/// Where a session serves its live data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeAddr {
    /// A Unix domain socket at this path (created with owner-only permissions).
    Unix(PathBuf),
    /// A TCP address (loopback unless public serving is allowed explicitly).
    Tcp(SocketAddr),
}

impl ServeAddr {
    /// Parses `unix:PATH`, a path (anything with a `/`), or `HOST:PORT` with a numeric host.
    pub fn parse(s: &str) -> Option<ServeAddr> {
        if let Some(p) = s.strip_prefix("unix:") {
            return (!p.is_empty()).then(|| ServeAddr::Unix(p.into()));
        }
        if s.contains('/') {
            return Some(ServeAddr::Unix(s.into()));
        }
        s.parse().ok().map(ServeAddr::Tcp)
    }
}

impl std::fmt::Display for ServeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ServeAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// What a live source tells its viewer.
// Frames are the common case, and the queue of them is bounded (FEED_QUEUE): boxing each would
// cost an allocation per frame to save the few bytes of the rare variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum FeedEvent {
    /// A frame of the session.
    Frame(Frame),
    /// A new connection: the server resends the session so far; start over.
    Reset,
    /// The connection's state, for the status bar (`None`: connected).
    Status(Option<String>),
}

/// Feed events queued for the viewer at most; a source faster than the viewer waits (a hostile
/// server cannot make the viewer hold more).
pub const FEED_QUEUE: usize = 4096;

/// How long a server has to answer the hello.
const SILENCE: Duration = Duration::from_secs(5);

/// How long a session's stream may be silent before it is taken as stalled and the client
/// reconnects: ten of its intervals (a session sends one frame at least every interval), at least
/// five seconds, at most ten minutes.
fn stalled_after(interval_ns: u64) -> Duration {
    Duration::from_nanos(interval_ns.saturating_mul(10)).clamp(SILENCE, Duration::from_secs(600))
}

/// Asks the session at `addr` for a task dump and returns at once (the dump comes on the
/// session's stream, e.g. to a viewer attached with [`attach`]).
pub fn ask_dump(addr: &ServeAddr, request: u64) -> std::io::Result<()> {
    let mut hello = DUMP_HELLO.to_vec();
    hello.extend_from_slice(&request.to_le_bytes());
    let (mut stream, _) = open(addr, &hello)?;
    // The server answers with the preamble once it has taken the request: closed before that, a
    // loopback TCP connection's owner could no longer be told (the kernel lists a closed socket
    // as root's), and the request would be refused.
    let mut preamble = [0u8; crate::format::PREAMBLE_LEN as usize];
    stream.read_exact(&mut preamble)
}

/// Asks the session at `addr` for a task dump and waits up to `within` for it: the session's
/// frames up to the dump (declarations, intervals, events), the dump last. An error says what
/// failed (connecting, the stream, the deadline).
pub fn request_dump(addr: &ServeAddr, request: u64, within: Duration) -> Result<Vec<Frame>, String> {
    let mut hello = DUMP_HELLO.to_vec();
    hello.extend_from_slice(&request.to_le_bytes());
    let (stream, deadline) = open(addr, &hello).map_err(|e| format!("{addr}: cannot connect: {e}"))?;
    let until = std::time::Instant::now() + within;
    let mut reader = Reader::new(stream, addr.to_string()).map_err(|e| e.to_string())?;
    let mut frames = vec![Frame::Header(reader.header().clone())];
    // Bounded: the backlog of a session is bounded by its server; past that, only what a dump
    // needs (declarations) is kept.
    const KEEP: usize = 100_000;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("{addr}: no task dump within {within:?} (the session may be finishing)"));
        }
        let _ = deadline.set_read_deadline(left);
        match reader.next_frame() {
            Ok(Some(Frame::TaskDump(d))) if d.requests.contains(&request) => {
                frames.push(Frame::TaskDump(d));
                return Ok(frames);
            }
            Ok(Some(f)) => {
                let declaration = matches!(
                    f,
                    Frame::Sites(_) | Frame::Workers(_) | Frame::Modules(_) | Frame::Spans(_) | Frame::Runtime(_)
                );
                if declaration || frames.len() < KEEP {
                    frames.push(f);
                }
            }
            Ok(None) => return Err(format!("{addr}: the session ended before the dump")),
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
}

/// Starts attaching to `addr`; events arrive on the returned channel, until it is dropped.
pub fn attach(addr: ServeAddr) -> Receiver<FeedEvent> {
    let (tx, rx) = std::sync::mpsc::sync_channel(FEED_QUEUE);
    let _ = std::thread::Builder::new().name("loopscope-attach".into()).spawn(move || attach_loop(&addr, &tx));
    rx
}

/// A connected stream's read deadline, set through a second handle on the same socket.
trait Deadline: Send {
    fn set_read_deadline(&self, d: Duration) -> std::io::Result<()>;
}

impl Deadline for TcpStream {
    fn set_read_deadline(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

impl Deadline for UnixStream {
    fn set_read_deadline(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

type Connection = (Box<dyn Read + Send>, Box<dyn Deadline>);

fn connect(addr: &ServeAddr) -> std::io::Result<Connection> {
    open(addr, HELLO)
}

fn open(addr: &ServeAddr, hello: &[u8]) -> std::io::Result<Connection> {
    let timeout = Some(Duration::from_secs(5));
    Ok(match addr {
        ServeAddr::Tcp(a) => {
            let mut s = TcpStream::connect_timeout(a, Duration::from_secs(5))?;
            s.set_write_timeout(timeout)?;
            s.set_read_timeout(Some(SILENCE))?;
            s.write_all(hello)?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
        ServeAddr::Unix(p) => {
            let mut s = UnixStream::connect(p)?;
            s.set_write_timeout(timeout)?;
            s.set_read_timeout(Some(SILENCE))?;
            s.write_all(hello)?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
    })
}

fn attach_loop(addr: &ServeAddr, tx: &SyncSender<FeedEvent>) {
    loop {
        let why = match connect(addr) {
            Err(e) => format!("cannot connect: {e}"),
            Ok(conn) => match session(conn, addr, tx) {
                None => return,
                Some(why) => why,
            },
        };
        if tx.send(FeedEvent::Status(Some(format!("reconnecting ({why})")))).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reads one connection's stream into `tx`; `None` when the viewer is gone, else why it ended.
fn session((stream, deadline): Connection, addr: &ServeAddr, tx: &SyncSender<FeedEvent>) -> Option<String> {
    let mut reader = match Reader::new(stream, addr.to_string()) {
        Err(e) => return Some(e.to_string()),
        Ok(r) => r,
    };
    let _ = deadline.set_read_deadline(stalled_after(reader.header().interval_ns));
    let send = |e: FeedEvent| tx.send(e).ok();
    send(FeedEvent::Reset)?;
    send(FeedEvent::Status(None))?;
    send(FeedEvent::Frame(Frame::Header(reader.header().clone())))?;
    loop {
        match reader.next_frame() {
            Ok(Some(f)) => send(FeedEvent::Frame(f))?,
            Ok(None) => return Some("the session ended".to_string()),
            Err(e) => return Some(format!("disconnected: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(ServeAddr::parse("unix:/tmp/x.sock"), Some(ServeAddr::Unix("/tmp/x.sock".into())));
        assert_eq!(ServeAddr::parse("./x.sock"), Some(ServeAddr::Unix("./x.sock".into())));
        assert_eq!(ServeAddr::parse("127.0.0.1:6670"), Some(ServeAddr::Tcp("127.0.0.1:6670".parse().unwrap())));
        assert_eq!(ServeAddr::parse("[::1]:0").map(|a| a.to_string()), Some("[::1]:0".into()));
        for bad in ["", "unix:", "localhost", "6670", "host:port"] {
            assert_eq!(ServeAddr::parse(bad), None, "{bad}");
        }
    }
}
