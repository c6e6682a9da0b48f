//! `ferroturn bench relay` and `latency`: relay flows set up with
//! [`crate::client::Client`] (an allocation with a channel or permission per flow,
//! towards the bench's echo peer or client to client), measured by
//! [`super::datapath`], torn down with Refresh 0.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use super::datapath::{Expect, Flow, Plan, Role};
use super::report::Row;
use super::scenarios::{
    allocate, connected, fail, release, run_plans, runtime, split_count, Result, CHANNEL,
};
use super::stats::{CpuMeter, Histogram};
use super::{Common, LatencyArgs, Mode, PeerKind, RelayArgs};
use crate::client::Client;
use crate::net::sockets;
use crate::stun::channel_data;

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
            let (o, cpu_use) = match result {
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
                window: Some(args.window),
                sent: o.sent,
                received: o.received,
                errors: o.errors,
                duration_s: o.elapsed.as_secs_f64(),
                ..Row::default()
            };
            row.finish(cpu_use);
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
        let (o, cpu_use) = result?;
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
        row.finish(cpu_use);
        row.bytes_per_s = Some(row.rate_per_s * f64::from(args.size));
        rows.push(row);
    }
    Ok(rows)
}
