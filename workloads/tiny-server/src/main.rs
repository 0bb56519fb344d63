//! tiny-server: a line-oriented TCP server on tokio, profiled with `#[loopscope::main]`. Each
//! request is a line; the answer is a line holding a hash of it. `--slow DURATION` adds that much
//! CPU work to every request: the regression a candidate build brings in the worked example of
//! gating a server (docs/ci-gates.md, scripts/gate-server-example).
//!
//! It prints `listening on ADDR` on stdout once it accepts connections, and ends cleanly (the
//! recording finished) on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// A line-oriented TCP server: one hash per line received.
#[derive(Debug, Parser)]
#[command(name = "tiny-server")]
struct Args {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Extra CPU work for every request: a busy loop this long (e.g. 2ms).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    slow: Duration,
}

#[loopscope::main(worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.addr).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    println!("listening on {}", listener.local_addr()?);
    let mut served = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    served += 1;
                    tokio::spawn(serve(socket, args.slow));
                }
                // A connection that failed before it was accepted, or no file descriptor left:
                // the server goes on.
                Err(e) => eprintln!("tiny-server: accept: {e}"),
            },
            _ = term.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    println!("tiny-server: stopped after {served} connections");
    Ok(())
}

/// Answers every line of one connection until the client closes it.
async fn serve(socket: TcpStream, slow: Duration) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = format!("{:016x}\n", hash(&line, slow));
        if write.write_all(answer.as_bytes()).await.is_err() {
            break;
        }
    }
}

/// FNV-1a of the line, mixed 200 times (a few microseconds), then mixed on until `slow` has
/// passed.
fn hash(line: &str, slow: Duration) -> u64 {
    let start = Instant::now();
    let mut h = line.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    let mut round = 0u32;
    while round < 200 || start.elapsed() < slow {
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        round = round.wrapping_add(1);
    }
    std::hint::black_box(h)
}
