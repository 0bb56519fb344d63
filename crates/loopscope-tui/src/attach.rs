//! `loopscope tui --attach ADDR`: the client side of the live protocol, on its own thread.
//! It connects, says hello, reads frames, and on any failure says so and reconnects every
//! second, until the TUI goes away.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use loopscope_core::format::Reader;
use loopscope_core::live::{HELLO, ServeAddr};
use loopscope_core::model::Frame;

/// What the attach thread tells the TUI.
#[derive(Debug)]
pub enum FeedEvent {
    /// A frame of the session.
    Frame(Frame),
    /// A new connection: the server resends the session so far; start over.
    Reset,
    /// The connection's state, for the status bar (`None`: connected).
    Status(Option<String>),
}

/// Starts attaching to `addr`; events arrive on the returned channel.
pub fn attach(addr: ServeAddr) -> Receiver<FeedEvent> {
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new().name("loopscope-attach".into()).spawn(move || run(&addr, &tx));
    rx
}

fn connect(addr: &ServeAddr) -> std::io::Result<Box<dyn Read + Send>> {
    let timeout = Some(Duration::from_secs(5));
    Ok(match addr {
        ServeAddr::Tcp(a) => {
            let mut s = TcpStream::connect_timeout(a, Duration::from_secs(5))?;
            s.set_write_timeout(timeout)?;
            s.write_all(HELLO)?;
            Box::new(s)
        }
        ServeAddr::Unix(p) => {
            let mut s = UnixStream::connect(p)?;
            s.set_write_timeout(timeout)?;
            s.write_all(HELLO)?;
            Box::new(s)
        }
    })
}

fn run(addr: &ServeAddr, tx: &Sender<FeedEvent>) {
    loop {
        let why = match connect(addr) {
            Err(e) => format!("cannot connect: {e}"),
            Ok(stream) => match Reader::new(stream, addr.to_string()) {
                Err(e) => format!("{e}"),
                Ok(mut reader) => {
                    if tx.send(FeedEvent::Reset).is_err() || tx.send(FeedEvent::Status(None)).is_err() {
                        return;
                    }
                    if tx.send(FeedEvent::Frame(Frame::Header(reader.header().clone()))).is_err() {
                        return;
                    }
                    loop {
                        match reader.next_frame() {
                            Ok(Some(f)) => {
                                if tx.send(FeedEvent::Frame(f)).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break "the session ended".to_string(),
                            Err(e) => break format!("disconnected: {e}"),
                        }
                    }
                }
            },
        };
        if tx.send(FeedEvent::Status(Some(format!("reconnecting ({why})")))).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
