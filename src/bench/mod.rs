//! `ferroturn bench`: a load generator for STUN/TURN servers, built on
//! [`crate::client`] for the control path (Allocate, permissions, channels) and on
//! raw `recvmmsg`/`sendmmsg` ([`crate::net::mmsg`]) for the data path.
//!
//! Every scenario is bounded by a count *and* a duration (each with a hard cap),
//! prints a table (or one JSON object with `--json`) on stdout and progress on
//! stderr. See docs/performance.md for what each figure means.
//!
//! Modules: [`scenarios`] (binding, alloc, hold), [`flows`] (relay and latency),
//! [`churn`] (the allocation life-cycle soak test) with [`server_sample`] (the
//! server's fds, sockets and RSS from /proc),
//! [`datapath`] (the single-threaded packet loop behind relay and latency),
//! [`echo`] (the plain batched echo and forwarder, the ceilings of the machine),
//! [`stats`] (histogram, /proc readings) and
//! [`report`] (the result rows, the table and the JSON).

pub mod churn;
pub mod datapath;
pub mod echo;
pub mod flows;
pub mod report;
pub mod scenarios;
pub mod server_sample;
pub mod stats;

use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

/// Longest `--duration` for the load scenarios. Permissions live 300 s and the
/// bench does not refresh them, so a measurement must end well before that.
pub const MAX_DURATION: Duration = Duration::from_secs(240);
/// Longest `--duration` of `echo-server`.
pub const MAX_ECHO_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Largest `--count`.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Longest `--duration` of `churn` (a soak test).
pub const MAX_CHURN_DURATION: Duration = Duration::from_secs(3600);
/// Default `--count` of `churn`.
pub const CHURN_DEFAULT_COUNT: u64 = 100_000;
/// Most allocations any scenario opens.
pub const MAX_ALLOCATIONS: u32 = 50_000;

/// `ferroturn bench`: options shared by every scenario, then the scenario.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server to load (UDP). Loopback by default.
    #[arg(
        long,
        global = true,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:3478"
    )]
    pub server: SocketAddr,

    /// Long-term credential NAME:PASSWORD for the TURN scenarios.
    #[arg(
        long,
        global = true,
        value_name = "NAME:PASSWORD",
        default_value = "bench:bench"
    )]
    pub user: String,

    /// How long each measurement runs (e.g. 5s, 500ms, 2m; plain numbers are
    /// seconds). Default: 5s (hold: 60s, echo-server: 1h). Capped at 240s
    /// (echo-server: 24h).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Most operations per measurement (requests, cycles or packets sent).
    /// Default 100000000, capped at 1000000000.
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    pub count: Option<u64>,

    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// PID of the server process when it runs on this host: its CPU time
    /// (/proc/PID/stat) is read around every measurement and its RSS
    /// (/proc/PID/status) around `hold`.
    #[arg(long, global = true, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Load threads (default: the CPUs this process may run on).
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,

    /// How long to wait for any answer before giving up on the server.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration,
          default_value = "3s")]
    pub timeout: Duration,

    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// What to measure.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Binding requests per second, many in flight.
    Binding(BindingArgs),
    /// Allocation cycles per second: Allocate (with the 401 round) then
    /// Refresh LIFETIME 0, each from a fresh socket.
    Alloc(AllocArgs),
    /// Relayed round trips per second through channels or Send indications, to
    /// an echo peer run by the bench or between two clients of the server.
    Relay(RelayArgs),
    /// Round-trip time percentiles at a fixed packet rate.
    Latency(LatencyArgs),
    /// Hold many allocations open and report the server's memory per
    /// allocation (needs --server-pid).
    Hold(HoldArgs),
    /// Soak test of the allocation life cycle: Allocate, CreatePermission,
    /// ChannelBind, datagrams to an echo peer, Refresh, then delete, expiry or
    /// TCP close; with EVEN-PORT reservations and TCP clients mixed in. With
    /// --server-pid, reports the server's fds, sockets and RSS before and after.
    /// Default --count 100000, --duration 10m (cap 1h).
    Churn(ChurnArgs),
    /// A plain batched UDP echo (or, with --forward-to, a batched forwarder):
    /// the ceiling of this machine for comparisons. Runs for --duration.
    EchoServer(EchoServerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BindingArgs {
    /// Client sockets.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub sockets: u32,
    /// Requests in flight per socket.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub window: u32,
}

#[derive(Debug, Clone, Args)]
pub struct AllocArgs {
    /// Cycles in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
}

/// How relayed data travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// ChannelData on a bound channel.
    Channel,
    /// Send indications out, Data indications back (permission only).
    Send,
}

/// Who answers relayed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// A UDP echo peer that the bench runs.
    Echo,
    /// A second allocation on the same server that sends everything back
    /// (client to client, the relay-only WebRTC case).
    Client,
}

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Allocations (flows); client-to-client uses two allocations per flow.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=MAX_ALLOCATIONS as i64))]
    pub allocations: u32,
    /// Packets in flight per flow.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub window: u32,
    /// Modes to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["channel", "send"])]
    pub mode: Vec<Mode>,
    /// Peers to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["echo", "client"])]
    pub peer: Vec<PeerKind>,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["100", "1200"],
          value_parser = clap::value_parser!(u16).range(8..=1400))]
    pub size: Vec<u16>,
    #[command(flatten)]
    pub peer_opts: PeerOpts,
    /// The target is not TURN but a plain forwarder (`echo-server
    /// --forward-to`): send the ChannelData frames to it as they are, no
    /// allocation. Measures the ceiling of the machine.
    #[arg(long)]
    pub plain: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// Packets per second, all flows together.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Allocations (flows).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=MAX_ALLOCATIONS as i64))]
    pub allocations: u32,
    /// Modes to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["channel"])]
    pub mode: Vec<Mode>,
    /// Peers to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["echo", "client"])]
    pub peer: Vec<PeerKind>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(16..=1400))]
    pub size: u16,
    #[command(flatten)]
    pub peer_opts: PeerOpts,
}

#[derive(Debug, Clone, Args)]
pub struct PeerOpts {
    /// Address the bench's echo peer binds to; it must be reachable from the
    /// server (and allowed by its peer policy). Default: 127.0.0.1.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub peer_ip: IpAddr,
}

#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    /// Allocations to hold.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=MAX_ALLOCATIONS as i64))]
    pub allocations: u32,
    /// Allocations being opened at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Cycles in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// The server's TCP address for the TCP clients (default: --server).
    #[arg(long, value_name = "ADDR:PORT")]
    pub tcp_server: Option<SocketAddr>,
    /// Share of cycles over TCP, in percent.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub tcp_percent: u8,
    /// Share of cycles that reserve a port pair with EVEN-PORT R=1, in percent.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub even_port_percent: u8,
    /// Of those, the share that leaves the reservation for the server to release
    /// (after 30 s) instead of redeeming its RESERVATION-TOKEN, in percent.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub unredeemed_percent: u8,
    /// Share of cycles whose allocation is left to expire (UDP) or ended by
    /// closing the connection (TCP) instead of Refresh 0, in percent.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub expire_percent: u8,
    /// LIFETIME requested by the cycles that let their allocation expire (the
    /// server grants no less than its relay.default-lifetime).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub lifetime: u32,
    /// Longest granted lifetime to wait out; an expire cycle granted more deletes
    /// its allocation instead (counted as expire_fallbacks).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub max_expiry: Duration,
    /// Longest wait after the run for expiries before sampling the server again.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "90s")]
    pub settle_max: Duration,
    /// Datagrams relayed to the echo peer and back per allocation.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub datagrams: u16,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(16..=1400))]
    pub size: u16,
    /// Address the bench's echo peer binds to; the server must be allowed to
    /// relay to it (loopback peers are denied by default: --allow-peer).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub peer_ip: IpAddr,
}

#[derive(Debug, Clone, Args)]
pub struct EchoServerArgs {
    /// Where to listen (UDP).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Forward every datagram to this echo and relay the answer back (one
    /// upstream socket per client, like a relay): a plain forwarder.
    #[arg(long, value_name = "ADDR:PORT")]
    pub forward_to: Option<SocketAddr>,
}

/// Parses `5s`, `250ms`, `2m`, `1h` or plain seconds (`1.5`): the shared
/// parser, re-exported under its old path.
pub use crate::time::parse_duration;

/// Settings every scenario gets, resolved from [`BenchArgs`].
#[derive(Debug, Clone)]
pub struct Common {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    pub duration: Duration,
    pub count: u64,
    pub server_pid: Option<u32>,
    pub threads: usize,
    pub timeout: Duration,
    pub progress: bool,
}

impl Common {
    fn new(args: &BenchArgs, default: Duration, cap: Duration) -> Result<Self, String> {
        let duration = args.duration.unwrap_or(default);
        if duration > cap {
            return Err(format!(
                "--duration {:?} is longer than the cap of {}s for this scenario",
                duration,
                cap.as_secs()
            ));
        }
        let (username, password) = args
            .user
            .split_once(':')
            .ok_or("--user must be NAME:PASSWORD")?;
        let threads = args.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |t| t as usize,
        );
        Ok(Self {
            server: args.server,
            username: username.to_owned(),
            password: password.to_owned(),
            duration,
            count: args.count.unwrap_or(100_000_000),
            server_pid: args.server_pid,
            threads,
            timeout: args.timeout,
            progress: !args.quiet,
        })
    }
}

/// Runs `ferroturn bench ...`.
pub fn run(args: &BenchArgs) -> Result<(), Box<dyn Error>> {
    stats::raise_fd_limit();
    let five = Duration::from_secs(5);
    let (name, rows) = match &args.scenario {
        Scenario::EchoServer(e) => {
            let common = Common::new(args, Duration::from_secs(3600), MAX_ECHO_DURATION)?;
            return echo::run(e, &common);
        }
        Scenario::Binding(b) => (
            "binding",
            scenarios::binding(b, &Common::new(args, five, MAX_DURATION)?)?,
        ),
        Scenario::Alloc(a) => (
            "alloc",
            scenarios::alloc(a, &Common::new(args, five, MAX_DURATION)?)?,
        ),
        Scenario::Relay(r) => (
            "relay",
            flows::relay(r, &Common::new(args, five, MAX_DURATION)?)?,
        ),
        Scenario::Latency(l) => (
            "latency",
            flows::latency(l, &Common::new(args, five, MAX_DURATION)?)?,
        ),
        Scenario::Churn(c) => {
            let mut common = Common::new(args, Duration::from_secs(600), MAX_CHURN_DURATION)?;
            common.count = args.count.unwrap_or(CHURN_DEFAULT_COUNT);
            ("churn", churn::churn(c, &common)?)
        }
        Scenario::Hold(h) => (
            "hold",
            scenarios::hold(
                h,
                &Common::new(args, Duration::from_secs(60), MAX_DURATION)?,
            )?,
        ),
    };
    let report = report::Report::new(name, args.server, rows);
    let mut out = std::io::stdout().lock();
    if args.json {
        report.write_json(&mut out)?;
    } else {
        report.write_table(&mut out)?;
    }
    Ok(())
}
