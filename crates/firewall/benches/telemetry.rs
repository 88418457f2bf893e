//! Kernel telemetry benchmark: the cost of each tracepoint program per event, measured with the
//! kernel's BPF statistics while bounded traffic flows between two namespaces (root only).
//!
//! Workloads: a TCP stream to the watched P2P port, UDP datagrams to a closed port of the watched
//! namespace (stack drops), and UDP datagrams over the loopback of another namespace (the cost
//! every packet of the host pays while a node watches its own namespace).

use std::{
    error::Error,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    time::{Duration, Instant},
};

use firewall::{
    netns::{self, VethPair},
    telemetry::Telemetry,
};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const A4: &str = "198.18.19.1";
const B4: &str = "198.18.19.2";
const P2P_PORT: u16 = 47_200;
const CLOSED_PORT: u16 = 47_201;
/// Bytes of the TCP stream (bounded: about a second on a small machine).
const STREAM_BYTES: usize = 256 << 20;
const WRITE_BYTES: usize = 64 << 10;
/// Datagrams of each UDP workload.
const DATAGRAMS: usize = 200_000;
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

fn main() -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the telemetry bench needs root (tracepoints, namespaces): nothing measured");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemetry bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Turns the kernel's BPF run-time statistics on, and back to what they were on drop.
struct StatsOn {
    before: String,
}

impl StatsOn {
    fn new() -> BenchResult<StatsOn> {
        let before = std::fs::read_to_string(BPF_STATS)?.trim().to_string();
        std::fs::write(BPF_STATS, "1")?;
        Ok(StatsOn { before })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.before) {
            eprintln!("restoring {BPF_STATS} to {}: {e}", self.before);
        }
    }
}

type Stats = Vec<(String, u64, Duration)>;
/// A named workload.
type Workload<'a> = (&'static str, Box<dyn Fn() -> BenchResult<()> + 'a>);

fn tcp_stream(ns: &VethPair) -> BenchResult<()> {
    let to: SocketAddr = format!("{A4}:{P2P_PORT}").parse()?;
    let listener = netns::in_netns(&ns.a, || TcpListener::bind(to))??;
    let server = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; WRITE_BYTES];
        let mut total = 0;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    });
    netns::in_netns(&ns.b, || -> std::io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        let chunk = vec![1u8; WRITE_BYTES];
        for _ in 0..STREAM_BYTES / WRITE_BYTES {
            stream.write_all(&chunk)?;
        }
        Ok(())
    })??;
    let received = server.join().map_err(|_| "server thread panicked")??;
    if received != STREAM_BYTES {
        return Err(format!("received {received} of {STREAM_BYTES} bytes").into());
    }
    Ok(())
}

fn datagrams(ns: &str, to: SocketAddr) -> BenchResult<()> {
    netns::in_netns(ns, || -> std::io::Result<()> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..DATAGRAMS {
            // ICMP errors from earlier datagrams surface as send errors: ignore them.
            let _ = socket.send_to(b"telemetry bench", to);
        }
        Ok(())
    })??;
    Ok(())
}

fn print_delta(workload: &str, before: &Stats, after: &Stats, elapsed: Duration) {
    for ((tracepoint, count0, time0), (_, count1, time1)) in before.iter().zip(after) {
        let events = count1.saturating_sub(*count0);
        if events == 0 {
            continue;
        }
        let ns = time1.saturating_sub(*time0).as_nanos() as f64 / events as f64;
        println!("| {workload:<34} | {tracepoint:<29} | {events:>9} | {ns:>8.0} |");
    }
    println!(
        "| {workload:<34} | {:<29} | {:>9} | {:>8} |",
        format!("(wall time {:.2} s)", elapsed.as_secs_f64()),
        "",
        ""
    );
}

fn run() -> BenchResult<()> {
    let pid = std::process::id();
    let ns = VethPair::create(
        (
            &format!("fwt-{pid}-bench-a"),
            &format!("tba{pid}"),
            A4.parse()?,
        ),
        (
            &format!("fwt-{pid}-bench-b"),
            &format!("tbb{pid}"),
            B4.parse()?,
        ),
    )?;
    let _stats = StatsOn::new()?;
    let telemetry = netns::in_netns(&ns.a, || Telemetry::start(P2P_PORT))??;
    for a in telemetry.attachments() {
        if let Err(why) = &a.result {
            return Err(format!("{} not attached: {why}", a.tracepoint).into());
        }
    }
    println!("| workload | tracepoint | events | ns/event |");
    println!("| --- | --- | ---: | ---: |");
    let closed_a: SocketAddr = format!("{A4}:{CLOSED_PORT}").parse()?;
    let b_loopback: SocketAddr = format!("127.0.0.1:{CLOSED_PORT}").parse()?;
    let workloads: [Workload; 3] = [
        (
            "TCP stream to the P2P port (256 MiB)",
            Box::new(|| tcp_stream(&ns)),
        ),
        (
            "UDP to a closed port, watched ns",
            Box::new(|| datagrams(&ns.b, closed_a)),
        ),
        (
            "UDP to a closed port, other ns",
            Box::new(|| datagrams(&ns.b, b_loopback)),
        ),
    ];
    for (name, workload) in workloads {
        let before = telemetry.run_stats();
        let started = Instant::now();
        workload()?;
        print_delta(name, &before, &telemetry.run_stats(), started.elapsed());
    }
    Ok(())
}
