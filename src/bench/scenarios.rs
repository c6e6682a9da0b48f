//! The scenarios: set up with [`crate::client::Client`], measure, tear down.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::datapath::{self, Expect, Flow, Outcome, Plan, Progress, Role};
use super::report::Row;
use super::stats::{self, CpuMeter, Histogram};
use super::{AllocArgs, BindingArgs, Common, HoldArgs, LatencyArgs, Mode, PeerKind, RelayArgs};
use crate::client::Client;
use crate::net::sockets;
use crate::stun::channel_data;
use crate::stun::{Class, MessageBuilder, Method, TransactionId};

/// Both ends of a channel use this number (so the far end of a client-to-client
/// flow can send ChannelData back unchanged).
const CHANNEL: u16 = 0x4000;

type Result<T> = std::result::Result<T, String>;

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

fn any_addr(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

/// Waits for every task of a scenario, calling `report` once a second while
/// `progress` is on (the one progress loop of alloc, hold and churn).
pub(super) async fn join_with_progress(
    tasks: &mut tokio::task::JoinSet<()>,
    progress: bool,
    mut report: impl FnMut(),
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = tick.tick() => if progress { report() },
        }
    }
}

/// "SERVER: WHAT: error", so a silent server is named.
fn fail(server: SocketAddr, what: &str, e: impl std::fmt::Display) -> String {
    format!("server {server}: {what}: {e}")
}

/// A nonblocking UDP socket connected to `server`.
fn connected(server: SocketAddr) -> Result<UdpSocket> {
    let s = sockets::bench_udp_socket(any_addr(server)).map_err(|e| format!("socket: {e}"))?;
    s.connect(server).map_err(|e| fail(server, "connect", e))?;
    Ok(s)
}

/// Runs one plan per thread, prints progress on stderr once a second, and adds
/// the outcomes up.
fn run_plans(plans: Vec<Plan>, label: &str, common: &Common) -> Result<Outcome> {
    let progress: Vec<Progress> = plans.iter().map(|_| Progress::default()).collect();
    let start = Instant::now();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .into_iter()
            .zip(&progress)
            .map(|(plan, p)| scope.spawn(move || datapath::run(plan, p)))
            .collect();
        let mut last = Instant::now();
        let mut last_rx = 0u64;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if common.progress && last.elapsed() >= Duration::from_secs(1) {
                let rx: u64 = progress
                    .iter()
                    .map(|p| p.received.load(Ordering::Relaxed))
                    .sum();
                let rate = (rx - last_rx.min(rx)) as f64 / last.elapsed().as_secs_f64();
                eprintln!(
                    "  {label}: {:.0}/{:.0} s, {rate:.0}/s, {rx} answered",
                    start.elapsed().as_secs_f64(),
                    common.duration.as_secs_f64()
                );
                last = Instant::now();
                last_rx = rx;
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a load thread panicked".into()))
            })
            .collect::<Vec<_>>()
    });
    let mut total = Outcome::default();
    for r in results {
        let o = r?;
        total.sent += o.sent;
        total.received += o.received;
        total.errors += o.errors;
        total.elapsed = total.elapsed.max(o.elapsed);
        if let Some(h) = o.hist {
            total.hist.get_or_insert_with(Histogram::new).merge(&h);
        }
    }
    Ok(total)
}

fn split_count(count: u64, parts: usize) -> u64 {
    count.div_ceil(parts.max(1) as u64).max(1)
}

// ---------------------------------------------------------------------------
// binding

pub fn binding(args: &BindingArgs, common: &Common) -> Result<Vec<Row>> {
    let threads = common.threads.min(args.sockets as usize);
    let mut plans: Vec<Plan> = (0..threads)
        .map(|_| Plan {
            flows: Vec::new(),
            echo: None,
            window: args.window,
            rate: None,
            duration: common.duration,
            count: split_count(common.count, threads),
            timeout: common.timeout,
            expect: Expect::Reply,
        })
        .collect();
    for i in 0..args.sockets as usize {
        let mut frame = BytesMut::new();
        MessageBuilder::new(
            &mut frame,
            Method::Binding,
            Class::Request,
            TransactionId::random(),
        )
        .finish();
        plans[i % threads].flows.push(Flow {
            sock: connected(common.server)?,
            role: Role::Sender {
                frame: frame.to_vec(),
                ts_offset: 0,
            },
        });
    }
    if common.progress {
        eprintln!(
            "binding: {} sockets × window {} against {}",
            args.sockets, args.window, common.server
        );
    }
    let cpu = CpuMeter::start(common.server_pid);
    let o = run_plans(plans, "binding", common).map_err(|e| fail(common.server, "Binding", e))?;
    let mut row = Row {
        name: "binding".into(),
        scenario: "binding".into(),
        sent: o.sent,
        received: o.received,
        errors: o.errors,
        duration_s: o.elapsed.as_secs_f64(),
        ..Row::default()
    };
    row.finish(cpu.stop());
    Ok(vec![row])
}

/// Failed operations of concurrent tasks: how many, and the first message.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Failures {
    fn record(&self, e: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn first(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

// ---------------------------------------------------------------------------
// alloc

pub fn alloc(args: &AllocArgs, common: &Common) -> Result<Vec<Row>> {
    let rt = runtime(common.threads)?;
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Failures::default());
    if common.progress {
        eprintln!(
            "alloc: {} cycles in flight against {}",
            args.concurrency, common.server
        );
    }
    let cpu = CpuMeter::start(common.server_pid);
    let start = Instant::now();
    let deadline = start + common.duration;
    let elapsed = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency {
            let (started, done, failures) = (started.clone(), done.clone(), failures.clone());
            let c = common.clone();
            tasks.spawn(async move {
                while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < c.count
                {
                    // A server that has failed every cycle so far is not going
                    // to start answering: stop rather than wait out --duration.
                    if done.load(Ordering::Relaxed) == 0 && failures.count() > 0 {
                        break;
                    }
                    match cycle(&c).await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.record(e),
                    }
                }
            });
        }
        let mut last = 0;
        join_with_progress(&mut tasks, common.progress, || {
            let d = done.load(Ordering::Relaxed);
            eprintln!(
                "  alloc: {:.0}/{:.0} s, {}/s, {d} cycles",
                start.elapsed().as_secs_f64(),
                common.duration.as_secs_f64(),
                d - last
            );
            last = d;
        })
        .await;
        start.elapsed()
    });
    let cpu_s = cpu.stop();
    let done = done.load(Ordering::Relaxed);
    let (errors, first_error) = (failures.count(), failures.first());
    if done == 0 {
        return Err(fail(
            common.server,
            "no allocation cycle completed",
            first_error.unwrap_or_else(|| "no attempt".into()),
        ));
    }
    let mut row = Row {
        name: "alloc cycle".into(),
        scenario: "alloc".into(),
        sent: done + errors,
        received: done,
        errors,
        duration_s: elapsed.as_secs_f64(),
        first_error,
        ..Row::default()
    };
    row.finish(cpu_s);
    Ok(vec![row])
}

/// One allocation cycle from a fresh socket: Allocate (401, then with
/// credentials), then Refresh LIFETIME 0.
async fn cycle(c: &Common) -> Result<()> {
    let (mut client, _) = allocate(c).await?;
    client
        .refresh(0)
        .await
        .map_err(|e| fail(c.server, "Refresh", e))?;
    Ok(())
}

/// Allocate from a fresh socket; returns the client and its (first) relayed
/// address. A 437 (allocation mismatch) means the server still keeps state for
/// this 5-tuple from an earlier allocation on the same port (coturn does, for a
/// while after Refresh 0): another fresh socket is tried, up to 5 in all.
async fn allocate(c: &Common) -> Result<(Client, SocketAddr)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = new_client(c).await?;
        match client.allocate().await {
            Ok(a) => return Ok((client, a.relayed[0])),
            Err(e) if e.code() == Some(437) && attempt < 5 => continue,
            Err(e) => return Err(fail(c.server, "Allocate", e)),
        }
    }
}

async fn new_client(c: &Common) -> Result<Client> {
    let mut client = Client::udp(c.server)
        .await
        .map_err(|e| format!("socket: {e}"))?
        .credentials(&c.username, &c.password);
    client.timeout = c.timeout;
    Ok(client)
}

// ---------------------------------------------------------------------------
// hold

pub fn hold(args: &HoldArgs, common: &Common) -> Result<Vec<Row>> {
    let rt = runtime(common.threads)?;
    let n = args.allocations as u64;
    let pid = common.server_pid;
    let rss_before = pid.and_then(stats::rss);
    if pid.is_some() && rss_before.is_none() {
        return Err(format!(
            "cannot read /proc/{}/status (--server-pid)",
            pid.unwrap_or(0)
        ));
    }
    if common.progress {
        eprintln!("hold: opening {n} allocations on {}", common.server);
    }
    let cpu = CpuMeter::start(pid);
    let start = Instant::now();
    let deadline = start + common.duration;
    let started = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Failures::default());
    let held: Arc<Mutex<Vec<Client>>> = Arc::default();
    let opened = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency {
            let (started, failures, held) = (started.clone(), failures.clone(), held.clone());
            let c = common.clone();
            tasks.spawn(async move {
                while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < n {
                    if failures.count() > 0
                        && held.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
                    {
                        break;
                    }
                    let r = allocate(&c).await.map(|(client, _)| client);
                    match r {
                        Ok(client) => held.lock().unwrap_or_else(|p| p.into_inner()).push(client),
                        Err(e) => failures.record(e),
                    }
                }
            });
        }
        join_with_progress(&mut tasks, common.progress, || {
            let h = held.lock().unwrap_or_else(|p| p.into_inner()).len();
            eprintln!(
                "  hold: {:.0} s, {h}/{n} open",
                start.elapsed().as_secs_f64()
            );
        })
        .await;
        held.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    });
    let open_time = start.elapsed();
    let cpu_s = cpu.stop();
    // Let the server settle (a shard may still be publishing) before reading.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = pid.and_then(stats::rss);
    let (errors, first_error) = (failures.count(), failures.first());
    if common.progress {
        eprintln!("hold: {opened} open; deleting them");
    }
    // Delete them all again (bounded: each request has the client's timeout).
    let clients = std::mem::take(&mut *held.lock().unwrap_or_else(|p| p.into_inner()));
    release(&rt, clients, args.concurrency as usize);
    if opened == 0 {
        return Err(fail(
            common.server,
            "no allocation opened",
            first_error.unwrap_or_else(|| "no attempt".into()),
        ));
    }
    let mut row = Row {
        name: format!("hold {opened} allocations"),
        scenario: "hold".into(),
        allocations: Some(opened),
        sent: opened + errors,
        received: opened,
        errors,
        duration_s: open_time.as_secs_f64(),
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_allocation_bytes: rss_before
            .zip(rss_after)
            .map(|(b, a)| (a as f64 - b as f64) / opened as f64),
        first_error,
        ..Row::default()
    };
    row.finish(cpu_s);
    Ok(vec![row])
}

/// Refresh LIFETIME 0 on every client, `concurrency` at a time.
fn release(rt: &tokio::runtime::Runtime, clients: Vec<Client>, concurrency: usize) {
    let queue = Arc::new(Mutex::new(clients));
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let queue = queue.clone();
            tasks.spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some(mut c) = next else { break };
                    c.timeout = c.timeout.min(Duration::from_secs(2));
                    let _ = c.refresh(0).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

// ---------------------------------------------------------------------------
// relay and latency

/// A frame carrying `size` payload bytes to `peer`; returns it and where the
/// payload starts.
fn frame(mode: Mode, peer: SocketAddr, size: usize) -> (Vec<u8>, usize) {
    let payload = vec![0x5Au8; size];
    match mode {
        Mode::Channel => {
            let mut f = channel_data::header(CHANNEL, size).to_vec();
            f.extend_from_slice(&payload);
            (f, channel_data::CHANNEL_DATA_HEADER_LEN)
        }
        Mode::Send => {
            let buf = crate::client::send_indication(peer, &payload);
            let at = buf.len() - size.div_ceil(4) * 4;
            (buf.to_vec(), at)
        }
    }
}

/// A flow's socket and, for a sender, where it sends and how.
type FlowSock = (UdpSocket, Option<(SocketAddr, Mode)>);

/// The flows of one (mode, peer) combination, set up and ready to measure.
struct Setup {
    /// Per thread: the echo socket and the flows.
    threads: Vec<(Option<UdpSocket>, Vec<FlowSock>)>,
    /// Sockets to give back to a client for Refresh 0 afterwards.
    teardown: Vec<UdpSocket>,
}

/// Allocates and binds: for the echo peer, one allocation per flow with a channel
/// or permission to this thread's echo socket; client to client, two allocations
/// per flow, each with a channel or permission to the other's relayed address.
fn setup(
    rt: &tokio::runtime::Runtime,
    common: &Common,
    flows: u32,
    mode: Mode,
    peer: PeerKind,
    peer_ip: std::net::IpAddr,
) -> Result<Setup> {
    let threads = common.threads.min(flows as usize).max(1);
    let mut echo = Vec::new();
    for _ in 0..threads {
        echo.push(if peer == PeerKind::Echo {
            Some(
                sockets::bench_udp_socket(SocketAddr::new(peer_ip, 0))
                    .map_err(|e| format!("echo peer on {peer_ip}: {e}"))?,
            )
        } else {
            None
        });
    }
    let echo_addrs: Vec<Option<SocketAddr>> = echo
        .iter()
        .map(|e| e.as_ref().and_then(|s| s.local_addr().ok()))
        .collect();
    let c = common.clone();
    // Per flow: (thread, sender socket and its peer, optional echoer socket).
    let made = rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(32));
        for i in 0..flows as usize {
            let t = i % threads;
            let echo_addr = echo_addrs[t];
            let c = c.clone();
            let sem = sem.clone();
            tasks.spawn(async move {
                let _permit = sem.acquire().await;
                let bind = |mut cl: Client, to: SocketAddr| {
                    let server = c.server;
                    async move {
                        match mode {
                            Mode::Channel => cl
                                .channel_bind(CHANNEL, to)
                                .await
                                .map_err(|e| fail(server, "ChannelBind", e))?,
                            Mode::Send => cl
                                .create_permission(&[to])
                                .await
                                .map_err(|e| fail(server, "CreatePermission", e))?,
                        }
                        Ok::<_, String>(cl)
                    }
                };
                let r = match echo_addr {
                    Some(to) => {
                        let (a, _) = allocate(&c).await?;
                        (bind(a, to).await?, to, None)
                    }
                    None => {
                        let (a, ra) = allocate(&c).await?;
                        let (b, rb) = allocate(&c).await?;
                        let a = bind(a, rb).await?;
                        let b = bind(b, ra).await?;
                        (a, rb, Some(b))
                    }
                };
                let (a, to, b) = r;
                let std = |cl: Client| -> Result<UdpSocket> {
                    cl.into_udp_socket()
                        .ok_or("not UDP")?
                        .into_std()
                        .map_err(|e| format!("socket: {e}"))
                };
                Ok::<_, String>((t, std(a)?, to, b.map(std).transpose()?))
            });
        }
        let mut out = Vec::new();
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(format!("setup task: {e}"));
                }
            }
        }
        (out, first_err)
    });
    let (made, err) = made;
    let mut s = Setup {
        threads: echo.into_iter().map(|e| (e, Vec::new())).collect(),
        teardown: Vec::new(),
    };
    for (t, a, to, b) in made {
        s.teardown
            .push(a.try_clone().map_err(|e| format!("socket: {e}"))?);
        s.threads[t].1.push((a, Some((to, mode))));
        if let Some(b) = b {
            s.teardown
                .push(b.try_clone().map_err(|e| format!("socket: {e}"))?);
            s.threads[t].1.push((b, None));
        }
    }
    if let Some(e) = err {
        teardown(rt, common, std::mem::take(&mut s.teardown));
        return Err(e);
    }
    Ok(s)
}

/// Deletes the allocations behind `socks` (Refresh LIFETIME 0).
fn teardown(rt: &tokio::runtime::Runtime, common: &Common, socks: Vec<UdpSocket>) {
    let clients: Vec<Client> = rt.block_on(async {
        socks
            .into_iter()
            .filter_map(|s| tokio::net::UdpSocket::from_std(s).ok())
            .map(|s| {
                let mut c = Client::from_udp_socket(s, common.server)
                    .credentials(&common.username, &common.password);
                c.timeout = common.timeout;
                c
            })
            .collect()
    });
    release(rt, clients, 32);
}

/// Plain mode: flows straight to the forwarder, no allocation.
fn plain_setup(common: &Common, flows: u32) -> Result<Setup> {
    let threads = common.threads.min(flows as usize).max(1);
    let mut s = Setup {
        threads: (0..threads).map(|_| (None, Vec::new())).collect(),
        teardown: Vec::new(),
    };
    for i in 0..flows as usize {
        s.threads[i % threads].1.push((
            connected(common.server)?,
            Some((common.server, Mode::Channel)),
        ));
    }
    Ok(s)
}

/// The plans for one measurement over `setup` (the frames depend on the size).
fn plans(
    setup: &Setup,
    size: usize,
    window: u32,
    rate: Option<f64>,
    common: &Common,
) -> Result<Vec<Plan>> {
    let n = setup.threads.len();
    setup
        .threads
        .iter()
        .map(|(echo, flows)| {
            Ok(Plan {
                flows: flows
                    .iter()
                    .map(|(sock, send)| {
                        Ok(Flow {
                            sock: sock.try_clone().map_err(|e| format!("socket: {e}"))?,
                            role: match send {
                                Some((to, mode)) => {
                                    let (frame, ts_offset) = frame(*mode, *to, size);
                                    Role::Sender { frame, ts_offset }
                                }
                                None => Role::Echoer,
                            },
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
                echo: echo
                    .as_ref()
                    .map(|e| e.try_clone().map_err(|e| format!("socket: {e}")))
                    .transpose()?,
                window,
                rate: rate.map(|r| r / n as f64),
                duration: common.duration,
                count: split_count(common.count, n),
                timeout: common.timeout,
                expect: Expect::Relayed,
            })
        })
        .collect()
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Channel => "channel",
        Mode::Send => "send",
    }
}

fn peer_name(p: PeerKind) -> &'static str {
    match p {
        PeerKind::Echo => "echo",
        PeerKind::Client => "client",
    }
}

/// The combinations to measure, without repeats, in the order given.
fn combos(modes: &[Mode], peers: &[PeerKind]) -> Vec<(Mode, PeerKind)> {
    let mut v = Vec::new();
    for &p in peers {
        for &m in modes {
            if !v.contains(&(m, p)) {
                v.push((m, p));
            }
        }
    }
    v
}

pub fn relay(args: &RelayArgs, common: &Common) -> Result<Vec<Row>> {
    let rt = runtime(common.threads)?;
    let mut rows = Vec::new();
    let mut sizes = args.size.clone();
    sizes.dedup();
    let combos: Vec<(Option<Mode>, Option<PeerKind>)> = if args.plain {
        vec![(None, None)]
    } else {
        combos(&args.mode, &args.peer)
            .into_iter()
            .map(|(m, p)| (Some(m), Some(p)))
            .collect()
    };
    for (mode, peer) in combos {
        let setup = match (mode, peer) {
            (Some(m), Some(p)) => {
                setup(&rt, common, args.allocations, m, p, args.peer_opts.peer_ip)?
            }
            _ => plain_setup(common, args.allocations)?,
        };
        let label_base = match (mode, peer) {
            (Some(m), Some(p)) => format!("relay {} {}", mode_name(m), peer_name(p)),
            _ => "relay plain".to_owned(),
        };
        for &size in &sizes {
            let label = format!("{label_base} {size}B");
            if common.progress {
                eprintln!(
                    "{label}: {} flows × window {} against {}",
                    args.allocations, args.window, common.server
                );
            }
            let result = plans(&setup, size as usize, args.window, None, common).and_then(|p| {
                let cpu = CpuMeter::start(common.server_pid);
                let o = run_plans(p, &label, common).map_err(|e| fail(common.server, &label, e))?;
                Ok((o, cpu.stop()))
            });
            let (o, cpu_s) = match result {
                Ok(v) => v,
                Err(e) => {
                    teardown(&rt, common, setup.teardown);
                    return Err(e);
                }
            };
            let mut row = Row {
                name: label,
                scenario: "relay".into(),
                mode: Some(mode.map_or("channel", mode_name).into()),
                peer: Some(peer.map_or("plain", peer_name).into()),
                payload_bytes: Some(u32::from(size)),
                allocations: Some(
                    u64::from(args.allocations)
                        * if peer == Some(PeerKind::Client) { 2 } else { 1 },
                ),
                sent: o.sent,
                received: o.received,
                errors: o.errors,
                duration_s: o.elapsed.as_secs_f64(),
                ..Row::default()
            };
            row.finish(cpu_s);
            row.bytes_per_s = Some(row.rate_per_s * f64::from(size));
            rows.push(row);
        }
        teardown(&rt, common, setup.teardown);
    }
    Ok(rows)
}

pub fn latency(args: &LatencyArgs, common: &Common) -> Result<Vec<Row>> {
    let rt = runtime(common.threads)?;
    let mut rows = Vec::new();
    for (mode, peer) in combos(&args.mode, &args.peer) {
        let setup = setup(
            &rt,
            common,
            args.allocations,
            mode,
            peer,
            args.peer_opts.peer_ip,
        )?;
        let label = format!(
            "latency {} {} {}B @{}/s",
            mode_name(mode),
            peer_name(peer),
            args.size,
            args.rate
        );
        if common.progress {
            eprintln!(
                "{label}: {} flows against {}",
                args.allocations, common.server
            );
        }
        let result = plans(
            &setup,
            args.size as usize,
            1,
            Some(f64::from(args.rate)),
            common,
        )
        .and_then(|p| {
            let cpu = CpuMeter::start(common.server_pid);
            let o = run_plans(p, &label, common).map_err(|e| fail(common.server, &label, e))?;
            Ok((o, cpu.stop()))
        });
        teardown(&rt, common, setup.teardown);
        let (o, cpu_s) = result?;
        let mut row = Row {
            name: label,
            scenario: "latency".into(),
            mode: Some(mode_name(mode).into()),
            peer: Some(peer_name(peer).into()),
            payload_bytes: Some(u32::from(args.size)),
            allocations: Some(
                u64::from(args.allocations) * if peer == PeerKind::Client { 2 } else { 1 },
            ),
            sent: o.sent,
            received: o.received,
            errors: o.errors,
            duration_s: o.elapsed.as_secs_f64(),
            latency: o.hist.as_ref().and_then(Histogram::summary),
            ..Row::default()
        };
        row.finish(cpu_s);
        row.bytes_per_s = Some(row.rate_per_s * f64::from(args.size));
        rows.push(row);
    }
    Ok(rows)
}
