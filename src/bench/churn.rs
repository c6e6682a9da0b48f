//! `ferroturn bench churn`: a soak test of the allocation life cycle.
//!
//! Each cycle, from a fresh client: Allocate → CreatePermission → ChannelBind →
//! a few ChannelData datagrams to an echo peer the bench runs (each must come back)
//! → Refresh → the end of the allocation, one of
//!
//! - **delete**: Refresh LIFETIME 0;
//! - **expire** (UDP clients): the client falls silent (keeping its socket until
//!   the allocation is due, so that no new client reuses its port and meets the old
//!   allocation) and the server must time the allocation out; it asks for `--lifetime` seconds, which the server grants only
//!   if its `relay.default-lifetime` is that short (RFC 8656 §7.2 never grants less
//!   than the default). When the server grants more than `--max-expiry`, the cycle
//!   deletes instead and the report counts it under `expire_fallbacks`;
//! - **close** (TCP clients): the client closes the connection, which must end the
//!   allocation (RFC 8656 §3.1).
//!
//! A share of the cycles asks for EVEN-PORT with R=1 and redeems the
//! RESERVATION-TOKEN from a second fresh client (the relayed port must be the
//! reserved odd one); a few of those leave the reservation unredeemed, for the
//! server to release after its reservation lifetime (30 s). A share of the clients
//! speaks TCP (the relay is UDP either way).
//!
//! With `--server-pid` the server is sampled before the first cycle and after the
//! last one, once every allocation and reservation the run left behind is due to
//! have expired (bounded by `--settle-max`): open file descriptors (entries of
//! /proc/PID/fd), of those the sockets (`socket:[inode]` links), how many of the
//! socket inodes are UDP and TCP sockets (looked up in /proc/PID/net/{udp,udp6,
//! tcp,tcp6}; the UDP count is the listening sockets plus the relay sockets, so its
//! difference is the relay sockets left open), and VmRSS. The bench reports the
//! figures and their differences; it asserts nothing (tests/bench_churn.rs does).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;

use super::report::Row;
use super::scenarios::join_with_progress;
use super::server_sample::{SampleDiff, ServerSample};
use super::stats::CpuMeter;
use super::{ChurnArgs, Common};
use crate::client::{AllocateOptions, Client, ClientError, Received};

type Result<T> = std::result::Result<T, String>;

/// The channel every cycle binds (each allocation is fresh).
const CHANNEL: u16 = 0x4000;
/// How long the server keeps an unredeemed EVEN-PORT reservation (RFC 8656 §7.2
/// suggests 30 s; ferroturn's `RESERVATION_LIFETIME`).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Extra time after the last expiry is due, for the server's timer to run.
const SETTLE_MARGIN: Duration = Duration::from_secs(2);
/// After the settle time, how long to keep sampling while the figures still fall.
const SETTLE_EXTRA: Duration = Duration::from_secs(10);

/// The churn figures beyond the common [`Row`] ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnFigures {
    /// Cycles that ran to the end.
    pub cycles_done: u64,
    /// Cycles that failed at some step.
    pub cycles_failed: u64,
    /// Completed cycles by how the allocation ended.
    pub deleted: u64,
    pub expired: u64,
    pub tcp_closed: u64,
    /// Expire cycles that deleted instead: the server granted more than --max-expiry.
    pub expire_fallbacks: u64,
    /// Completed cycles over TCP.
    pub tcp_cycles: u64,
    /// EVEN-PORT reservations redeemed with RESERVATION-TOKEN.
    pub reservations_redeemed: u64,
    /// EVEN-PORT reservations left for the server to release.
    pub reservations_unredeemed: u64,
    /// Datagrams that made the round trip through the relay and the echo peer.
    pub datagrams_echoed: u64,
    /// Datagrams sent again after no echo came within a second (not errors).
    pub datagrams_resent: u64,
    /// Allocates answered 437 (a new socket reused the port of one whose
    /// allocation is still waiting to expire), retried from another socket.
    pub retries_437: u64,
    /// Failures by step and kind, e.g. `allocate: 486`, `relay: no echo`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The server before the first cycle (--server-pid).
    pub before: Option<ServerSample>,
    /// The server after the run and the settle time (--server-pid).
    pub after: Option<ServerSample>,
    /// after − before.
    pub diff: Option<SampleDiff>,
    /// Seconds waited after the last cycle for expiries before sampling `after`.
    pub settle_s: f64,
    /// Lifetime the server granted to the expire cycles' allocations (the largest seen).
    pub granted_lifetime_s: Option<u32>,
}

/// How a cycle ends its allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Delete,
    Expire,
    Close,
}

/// What cycle `i` does: the shares are spread evenly over the indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CyclePlan {
    tcp: bool,
    /// EVEN-PORT R=1; `Some(true)` redeems the token.
    even_port: Option<bool>,
    end: End,
}

/// True for `share`% of the indices, spread out; each `salt` gives an independent
/// choice (splitmix64 of index and salt).
fn pick(i: u64, share: u8, salt: u64) -> bool {
    let mut z = i
        .wrapping_mul(16)
        .wrapping_add(salt)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % 100 < u64::from(share)
}

impl CyclePlan {
    fn new(i: u64, args: &ChurnArgs) -> Self {
        let tcp = pick(i, args.tcp_percent, 1);
        let even_port =
            pick(i, args.even_port_percent, 2).then(|| !pick(i, args.unredeemed_percent, 3));
        let end = if pick(i, args.expire_percent, 4) {
            if tcp {
                End::Close
            } else {
                End::Expire
            }
        } else {
            End::Delete
        };
        Self {
            tcp,
            even_port,
            end,
        }
    }
}

/// A failed step: the kind (for counting) and the message (the first one shown).
struct Failure {
    kind: String,
    message: String,
}

fn failure(step: &str, e: &ClientError) -> Failure {
    let what = match e {
        ClientError::Error { code, .. } => code.to_string(),
        ClientError::Timeout => "timeout".into(),
        ClientError::Io(_) => "i/o".into(),
        ClientError::Protocol(p) => (*p).to_owned(),
    };
    Failure {
        kind: format!("{step}: {what}"),
        message: format!("{step}: {e}"),
    }
}

fn protocol(step: &str, what: &str, detail: String) -> Failure {
    Failure {
        kind: format!("{step}: {what}"),
        message: format!("{step}: {what}: {detail}"),
    }
}

/// Shared state of the run.
struct Run {
    args: ChurnArgs,
    common: Common,
    tcp_server: SocketAddr,
    peer: SocketAddr,
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    figures: Mutex<ChurnFigures>,
    first_error: Mutex<Option<String>>,
    /// When the last expiry the run caused is due.
    settle_until: Mutex<Option<Instant>>,
    echoed: AtomicU64,
    resent: AtomicU64,
    retries_437: AtomicU64,
}

impl Run {
    fn fig(&self) -> std::sync::MutexGuard<'_, ChurnFigures> {
        self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expires_in(&self, d: Duration) {
        let at = Instant::now() + d;
        let mut s = self.settle_until.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none_or(|s| s < at) {
            *s = Some(at);
        }
    }

    fn record_failure(&self, f: Failure) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.fig().errors_by_kind.entry(f.kind).or_default() += 1;
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(f.message);
    }

    async fn client(&self, tcp: bool) -> std::result::Result<Client, Failure> {
        let io = |e: std::io::Error| Failure {
            kind: "connect: i/o".into(),
            message: format!("connect: {e}"),
        };
        let client = if tcp {
            Client::tcp(self.tcp_server).await.map_err(io)?
        } else {
            Client::udp(self.common.server).await.map_err(io)?
        };
        let mut client = client.credentials(&self.common.username, &self.common.password);
        client.timeout = self.common.timeout;
        Ok(client)
    }

    /// Allocate from a fresh client, retrying from another UDP socket on 437.
    async fn allocate(
        &self,
        tcp: bool,
        opts: &AllocateOptions,
        step: &str,
    ) -> std::result::Result<(Client, crate::client::Allocation), Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.client(tcp).await?;
            match client.allocate_with(opts).await {
                Ok(a) => return Ok((client, a)),
                Err(e) if e.code() == Some(437) && attempt < 5 => {
                    self.retries_437.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(failure(step, &e)),
            }
        }
    }

    /// Permission, channel, datagrams through the echo peer, Refresh.
    async fn exercise(&self, client: &mut Client, i: u64) -> std::result::Result<u32, Failure> {
        client
            .create_permission(&[self.peer])
            .await
            .map_err(|e| failure("create-permission", &e))?;
        client
            .channel_bind(CHANNEL, self.peer)
            .await
            .map_err(|e| failure("channel-bind", &e))?;
        for k in 0..self.args.datagrams {
            let mut payload = Vec::with_capacity(self.args.size as usize);
            payload.extend_from_slice(&i.to_be_bytes());
            payload.extend_from_slice(&k.to_be_bytes());
            payload.resize(self.args.size as usize, 0x5A);
            self.relay_one(client, &payload).await?;
        }
        let lifetime = client
            .refresh(self.args.lifetime)
            .await
            .map_err(|e| failure("refresh", &e))?;
        if lifetime == 0 {
            return Err(protocol(
                "refresh",
                "granted 0",
                "Refresh ended the allocation".into(),
            ));
        }
        Ok(lifetime)
    }

    /// One datagram to the echo peer and back; sent again (up to twice) when no echo
    /// comes within a second, since loopback UDP may still drop under load.
    async fn relay_one(
        &self,
        client: &mut Client,
        payload: &[u8],
    ) -> std::result::Result<(), Failure> {
        let wait = Duration::from_secs(1).min(self.common.timeout);
        for attempt in 0..3 {
            if attempt > 0 {
                self.resent.fetch_add(1, Ordering::Relaxed);
            }
            client
                .send_channel_data(CHANNEL, payload)
                .await
                .map_err(|e| failure("relay send", &ClientError::Io(e)))?;
            let deadline = Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match client.recv_data(left).await {
                    Ok(Received::Channel { channel, data })
                        if channel == CHANNEL && data == payload =>
                    {
                        self.echoed.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    // An echo of an earlier attempt, or a Data indication: not ours.
                    Ok(_) => {}
                    Err(ClientError::Timeout) => break,
                    Err(e) => return Err(failure("relay receive", &e)),
                }
            }
        }
        Err(protocol(
            "relay",
            "no echo",
            format!("{} bytes, sent 3 times", payload.len()),
        ))
    }

    /// Ends an allocation as planned; returns how it actually ended.
    async fn end(
        &self,
        mut client: Client,
        plan: End,
        granted: u32,
        step: &str,
    ) -> std::result::Result<End, Failure> {
        let expire_ok = u64::from(granted) <= self.args.max_expiry.as_secs();
        match plan {
            End::Expire if expire_ok => {
                let lifetime = Duration::from_secs(granted.into());
                self.expires_in(lifetime);
                // The client stops talking but keeps its socket until the allocation
                // has expired: a new socket on the same port would meet the old
                // allocation (437) instead of getting a new one. (A task still
                // waiting when the run ends is dropped with the runtime.)
                tokio::spawn(async move {
                    tokio::time::sleep(lifetime + Duration::from_secs(1)).await;
                    drop(client);
                });
                Ok(End::Expire)
            }
            End::Close => {
                drop(client);
                Ok(End::Close)
            }
            End::Delete | End::Expire => {
                let left = client.refresh(0).await.map_err(|e| failure(step, &e))?;
                if left != 0 {
                    return Err(protocol(step, "lifetime not 0", format!("granted {left}")));
                }
                if plan == End::Expire {
                    self.fig().expire_fallbacks += 1;
                }
                Ok(End::Delete)
            }
        }
    }

    async fn cycle(&self, i: u64) -> std::result::Result<(), Failure> {
        let plan = CyclePlan::new(i, &self.args);
        let lifetime = (plan.end == End::Expire).then_some(self.args.lifetime);
        let opts = AllocateOptions {
            lifetime,
            even_port: plan.even_port.map(|_| true),
            ..AllocateOptions::default()
        };
        let (client, alloc) = self.allocate(plan.tcp, &opts, "allocate").await?;
        let r = self.cycle_rest(i, plan, lifetime, client, &alloc).await;
        if r.is_err() {
            // What the failed cycle left on the server expires by itself.
            self.expires_in(Duration::from_secs(alloc.lifetime.into()).max(RESERVATION_LIFETIME));
        }
        r
    }

    async fn cycle_rest(
        &self,
        i: u64,
        plan: CyclePlan,
        lifetime: Option<u32>,
        mut client: Client,
        alloc: &crate::client::Allocation,
    ) -> std::result::Result<(), Failure> {
        let relayed = alloc.relayed[0];
        let token = if plan.even_port.is_some() {
            if !relayed.port().is_multiple_of(2) {
                return Err(protocol(
                    "even-port",
                    "odd relayed port",
                    relayed.to_string(),
                ));
            }
            Some(alloc.reservation_token.ok_or_else(|| {
                protocol("even-port", "no RESERVATION-TOKEN", relayed.to_string())
            })?)
        } else {
            None
        };
        let granted = self.exercise(&mut client, i).await?;
        if plan.end == End::Expire {
            let mut f = self.fig();
            f.granted_lifetime_s = Some(f.granted_lifetime_s.unwrap_or(0).max(granted));
        }

        // The reserved odd port, from a second client.
        let mut second = None;
        match (plan.even_port, token) {
            (Some(true), Some(token)) => {
                let opts = AllocateOptions {
                    reservation_token: Some(token),
                    lifetime,
                    ..AllocateOptions::default()
                };
                let (mut c2, a2) = self
                    .allocate(plan.tcp, &opts, "allocate with token")
                    .await?;
                let want = SocketAddr::new(relayed.ip(), relayed.port() + 1);
                if a2.relayed[0] != want {
                    return Err(protocol(
                        "allocate with token",
                        "not the reserved port",
                        format!("{} instead of {want}", a2.relayed[0]),
                    ));
                }
                let g2 = self.exercise(&mut c2, i).await?;
                second = Some((c2, g2));
            }
            (Some(false), Some(_)) => self.expires_in(RESERVATION_LIFETIME),
            _ => {}
        }

        let ended = self.end(client, plan.end, granted, "refresh 0").await?;
        if let Some((c2, g2)) = second {
            self.end(c2, plan.end, g2, "refresh 0 (token)").await?;
        }
        let mut f = self.fig();
        match ended {
            End::Delete => f.deleted += 1,
            End::Expire => f.expired += 1,
            End::Close => f.tcp_closed += 1,
        }
        f.tcp_cycles += u64::from(plan.tcp);
        match plan.even_port {
            Some(true) => f.reservations_redeemed += 1,
            Some(false) => f.reservations_unredeemed += 1,
            None => {}
        }
        Ok(())
    }
}

/// The echo peer: every datagram back to where it came from, until `stop`.
async fn echo_peer(sock: Arc<UdpSocket>, stop: Arc<tokio::sync::Notify>) {
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => { let _ = sock.send_to(&buf[..n], from).await; }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            },
        }
    }
}

pub fn churn(args: &ChurnArgs, common: &Common) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(common.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let pid = common.server_pid;
    let before = match pid {
        Some(p) => Some(
            ServerSample::read(p).ok_or_else(|| format!("cannot read /proc/{p} (--server-pid)"))?,
        ),
        None => None,
    };
    let (peer_sock, peer) = rt.block_on(async {
        let s = UdpSocket::bind(SocketAddr::new(args.peer_ip, 0))
            .await
            .map_err(|e| format!("echo peer on {}: {e}", args.peer_ip))?;
        let a = s.local_addr().map_err(|e| e.to_string())?;
        Ok::<_, String>((Arc::new(s), a))
    })?;
    let run = Arc::new(Run {
        args: args.clone(),
        common: common.clone(),
        tcp_server: args.tcp_server.unwrap_or(common.server),
        peer,
        started: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        figures: Mutex::default(),
        first_error: Mutex::default(),
        settle_until: Mutex::default(),
        echoed: AtomicU64::new(0),
        resent: AtomicU64::new(0),
        retries_437: AtomicU64::new(0),
    });
    if common.progress {
        eprintln!(
            "churn: {} cycles, {} in flight, against {} (TCP {}), echo peer {peer}",
            common.count, args.concurrency, common.server, run.tcp_server
        );
        if let Some(b) = &before {
            eprintln!(
                "  server before: {} fds ({} sockets: {} UDP, {} TCP), RSS {:.1} MiB",
                b.fds,
                b.socket_fds,
                b.udp_sockets,
                b.tcp_sockets,
                b.rss_bytes as f64 / 1048576.0
            );
        }
    }
    let cpu = CpuMeter::start(pid);
    let start = Instant::now();
    let deadline = start + common.duration;
    let elapsed = rt.block_on(async {
        let stop = Arc::new(tokio::sync::Notify::new());
        let echo = tokio::spawn(echo_peer(peer_sock, stop.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency {
            let run = run.clone();
            tasks.spawn(async move {
                loop {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let i = run.started.fetch_add(1, Ordering::Relaxed);
                    if i >= run.common.count {
                        break;
                    }
                    // A server that has failed every cycle so far is not going to
                    // start answering: stop rather than wait out --duration.
                    if run.done.load(Ordering::Relaxed) == 0
                        && run.failed.load(Ordering::Relaxed) >= 8
                    {
                        break;
                    }
                    match run.cycle(i).await {
                        Ok(()) => {
                            run.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(f) => run.record_failure(f),
                    }
                }
            });
        }
        let mut last = 0;
        join_with_progress(&mut tasks, common.progress, || {
            let d = run.done.load(Ordering::Relaxed);
            eprintln!(
                "  churn: {:.0}/{:.0} s, {}/s, {d} cycles, {} failed",
                start.elapsed().as_secs_f64(),
                common.duration.as_secs_f64(),
                d - last,
                run.failed.load(Ordering::Relaxed)
            );
            last = d;
        })
        .await;
        let elapsed = start.elapsed();
        stop.notify_one();
        let _ = echo.await;
        elapsed
    });
    let cpu_use = cpu.stop();
    drop(rt);

    // Let what the run left to expire expire, then sample again.
    let settle_start = Instant::now();
    let mut after = None;
    if let (Some(p), Some(b)) = (pid, &before) {
        let due = run
            .settle_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(settle_start, |t| t + SETTLE_MARGIN);
        let cap = settle_start + args.settle_max;
        let until = due.min(cap);
        if common.progress && until > settle_start {
            eprintln!(
                "  waiting {:.0} s for the server to expire what the run left",
                (until - settle_start).as_secs_f64()
            );
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        // Then sample until nothing is left above the baseline, or the figures stop
        // falling for SETTLE_EXTRA.
        let extra = (Instant::now() + SETTLE_EXTRA).min(cap.max(Instant::now()));
        loop {
            let s = ServerSample::read(p).ok_or_else(|| format!("server {p} went away"))?;
            after = Some(s);
            let settled =
                s.fds <= b.fds && s.udp_sockets <= b.udp_sockets && s.tcp_sockets <= b.tcp_sockets;
            if settled || Instant::now() >= extra {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let settle_s = if pid.is_some() {
        settle_start.elapsed().as_secs_f64()
    } else {
        0.0
    };

    let done = run.done.load(Ordering::Relaxed);
    let failed = run.failed.load(Ordering::Relaxed);
    let first_error = run
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if done == 0 {
        return Err(format!(
            "server {}: no churn cycle completed: {}",
            common.server,
            first_error.unwrap_or_else(|| "no attempt".into())
        ));
    }
    let mut figures = std::mem::take(&mut *run.fig());
    figures.cycles_done = done;
    figures.cycles_failed = failed;
    figures.datagrams_echoed = run.echoed.load(Ordering::Relaxed);
    figures.datagrams_resent = run.resent.load(Ordering::Relaxed);
    figures.retries_437 = run.retries_437.load(Ordering::Relaxed);
    figures.before = before;
    figures.after = after;
    figures.diff = before.zip(after).map(|(b, a)| SampleDiff::between(&b, &a));
    figures.settle_s = settle_s;
    let mut row = Row {
        name: "churn cycle".into(),
        scenario: "churn".into(),
        sent: done + failed,
        received: done,
        errors: failed,
        duration_s: elapsed.as_secs_f64(),
        rss_before_bytes: before.map(|b| b.rss_bytes),
        rss_after_bytes: after.map(|a| a.rss_bytes),
        first_error,
        churn: Some(figures),
        ..Row::default()
    };
    row.finish(cpu_use);
    Ok(vec![row])
}

/// The churn lines under the table: cycles by kind, errors by kind, the server.
pub fn write_details(c: &ChurnFigures, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "cycles: {} done, {} failed; ended by Refresh 0: {}, expiry: {}, TCP close: {} \
         (expire cycles deleted instead: {}); over TCP: {}",
        c.cycles_done,
        c.cycles_failed,
        c.deleted,
        c.expired,
        c.tcp_closed,
        c.expire_fallbacks,
        c.tcp_cycles
    )?;
    writeln!(
        out,
        "EVEN-PORT reservations: {} redeemed, {} left to expire; datagrams echoed: {} \
         ({} resent); 437 retries: {}; granted expiry lifetime: {}",
        c.reservations_redeemed,
        c.reservations_unredeemed,
        c.datagrams_echoed,
        c.datagrams_resent,
        c.retries_437,
        c.granted_lifetime_s
            .map_or("-".to_owned(), |l| format!("{l} s"))
    )?;
    for (kind, n) in &c.errors_by_kind {
        writeln!(out, "error {kind}: {n}")?;
    }
    if let (Some(b), Some(a), Some(d)) = (&c.before, &c.after, &c.diff) {
        writeln!(
            out,
            "server (after {:.1} s of settling)   before      after   difference",
            c.settle_s
        )?;
        let mib = |v: u64| format!("{:.1} MiB", v as f64 / 1048576.0);
        let rows = [
            (
                "open fds",
                b.fds.to_string(),
                a.fds.to_string(),
                d.fds.to_string(),
            ),
            (
                "socket fds",
                b.socket_fds.to_string(),
                a.socket_fds.to_string(),
                d.socket_fds.to_string(),
            ),
            (
                "UDP sockets (listen+relay)",
                b.udp_sockets.to_string(),
                a.udp_sockets.to_string(),
                d.udp_sockets.to_string(),
            ),
            (
                "TCP sockets",
                b.tcp_sockets.to_string(),
                a.tcp_sockets.to_string(),
                d.tcp_sockets.to_string(),
            ),
            (
                "RSS",
                mib(b.rss_bytes),
                mib(a.rss_bytes),
                format!("{:+.1} MiB", d.rss_bytes as f64 / 1048576.0),
            ),
        ];
        for (name, b, a, d) in rows {
            writeln!(out, "  {name:<28} {b:>10} {a:>10} {d:>12}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tcp: u8, even: u8, unredeemed: u8, expire: u8) -> ChurnArgs {
        ChurnArgs {
            concurrency: 1,
            tcp_server: None,
            tcp_percent: tcp,
            even_port_percent: even,
            unredeemed_percent: unredeemed,
            expire_percent: expire,
            lifetime: 5,
            max_expiry: Duration::from_secs(60),
            settle_max: Duration::from_secs(90),
            datagrams: 3,
            size: 100,
            peer_ip: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn plans_follow_the_shares() {
        let a = args(20, 10, 50, 30);
        let plans: Vec<_> = (0..10_000).map(|i| CyclePlan::new(i, &a)).collect();
        let share = |f: &dyn Fn(&CyclePlan) -> bool| plans.iter().filter(|p| f(p)).count();
        let near = |n: usize, pct: usize| n.abs_diff(pct * 100) < 300;
        assert!(near(share(&|p| p.tcp), 20));
        assert!(near(share(&|p| p.even_port.is_some()), 10));
        assert!(near(share(&|p| p.end != End::Delete), 30));
        assert!(plans
            .iter()
            .all(|p| (p.end == End::Close) == (p.tcp && p.end != End::Delete)));
        assert!(share(&|p| p.even_port == Some(false)) > 300);
        let none = args(0, 0, 0, 0);
        assert!((0..1000).all(|i| CyclePlan::new(i, &none)
            == CyclePlan {
                tcp: false,
                even_port: None,
                end: End::Delete
            }));
        let all = args(100, 100, 0, 100);
        assert!((0..1000).all(|i| CyclePlan::new(i, &all)
            == CyclePlan {
                tcp: true,
                even_port: Some(true),
                end: End::Close
            }));
    }
}
