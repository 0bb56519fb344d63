//! tiny-load: drives tiny-server: `--connections` clients over TCP, each sending a line and
//! waiting for its answer, again and again for `--for`; prints the request count and latency
//! percentiles. Exits 1 if a request fails or none was answered.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Load for tiny-server: closed-loop clients over TCP.
#[derive(Debug, Parser)]
#[command(name = "tiny-load")]
struct Args {
    /// The server's address, as it printed it (`listening on ADDR`).
    #[arg(long)]
    addr: SocketAddr,
    /// Clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
    connections: u16,
    /// How long to send requests.
    #[arg(long = "for", default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    run_for: Duration,
}

/// How long one request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let deadline = Instant::now() + args.run_for;
    let clients: Vec<_> = (0..args.connections).map(|i| tokio::spawn(client(args.addr, i, deadline))).collect();
    let mut latencies = Vec::new();
    for c in clients {
        match c.await {
            Ok(Ok(mut l)) => latencies.append(&mut l),
            Ok(Err(e)) => {
                eprintln!("tiny-load: {}: {e}", args.addr);
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("tiny-load: a client failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if latencies.is_empty() {
        eprintln!("tiny-load: no request was answered");
        return ExitCode::FAILURE;
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "tiny-load: {} requests over {} connections in {:?}: latency p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        args.connections,
        args.run_for,
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    ExitCode::SUCCESS
}

/// One client: requests until the deadline, each answer awaited; the latencies.
async fn client(addr: SocketAddr, id: u16, deadline: Instant) -> std::io::Result<Vec<Duration>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut answers = BufReader::new(read).lines();
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let sent = Instant::now();
        write.write_all(format!("client {id} request {n}\n").as_bytes()).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, answers.next_line()).await {
            Ok(Ok(Some(_))) => latencies.push(sent.elapsed()),
            Ok(Ok(None)) => return Err(std::io::Error::other("the server closed the connection")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other(format!("no answer within {REQUEST_TIMEOUT:?}"))),
        }
        n += 1;
    }
    Ok(latencies)
}
