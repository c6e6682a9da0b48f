//! The scenarios: set up with [`crate::client::Client`], measure, tear down.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::datapath::{self, Expect, Flow, Outcome, Plan, Progress, Role};
use super::report::Row;
use super::stats::{self, CpuMeter, Histogram};
use super::{AllocArgs, BindingArgs, Common, HoldArgs};
use crate::client::Client;
use crate::net::sockets;
use crate::stun::{Class, MessageBuilder, Method, TransactionId};

/// Both ends of a channel use this number (so the far end of a client-to-client
/// flow can send ChannelData back unchanged).
pub(super) const CHANNEL: u16 = 0x4000;

pub(super) type Result<T> = std::result::Result<T, String>;

pub(super) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

pub(super) fn any_addr(server: SocketAddr) -> SocketAddr {
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
pub(super) fn fail(server: SocketAddr, what: &str, e: impl std::fmt::Display) -> String {
    format!("server {server}: {what}: {e}")
}

/// A nonblocking UDP socket connected to `server`.
pub(super) fn connected(server: SocketAddr) -> Result<UdpSocket> {
    let s = sockets::bench_udp_socket(any_addr(server)).map_err(|e| format!("socket: {e}"))?;
    s.connect(server).map_err(|e| fail(server, "connect", e))?;
    Ok(s)
}

/// Runs one plan per thread, prints progress on stderr once a second, and adds
/// the outcomes up.
pub(super) fn run_plans(plans: Vec<Plan>, label: &str, common: &Common) -> Result<Outcome> {
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

pub(super) fn split_count(count: u64, parts: usize) -> u64 {
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
    let cpu_use = cpu.stop();
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
    row.finish(cpu_use);
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
pub(super) async fn allocate(c: &Common) -> Result<(Client, SocketAddr)> {
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

pub(super) async fn new_client(c: &Common) -> Result<Client> {
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
    let cpu_use = cpu.stop();
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
    row.finish(cpu_use);
    Ok(vec![row])
}

/// Refresh LIFETIME 0 on every client, `concurrency` at a time.
pub(super) fn release(rt: &tokio::runtime::Runtime, clients: Vec<Client>, concurrency: usize) {
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
