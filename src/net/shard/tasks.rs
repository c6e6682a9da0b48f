//! The background tasks of a shard, beside its packet path: the timer, the
//! flusher of queued client datagrams, the metrics publisher (with flood
//! warnings), the main thread's commands and the credential watch.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use std::rc::Rc;

use super::stream::ConnOut;
use super::{unix_now, ShardCommand, ShardRef};
use crate::net::relay::Binder;
use crate::ops::flood::FloodWatch;
use crate::ops::metrics::{ShardSlot, ShardSnapshot, PUBLISH_INTERVAL};
use crate::ops::usage::{UsageLog, UsageRecord};
use crate::turn::server::Event;
use crate::turn::{FastMap, FiveTuple, Server};

/// Sends what relay readers (and stream connections) queued for UDP clients,
/// once the tasks that were ready with it have run: the datagrams of all the
/// relay sockets that became readable together go out in one `sendmmsg`.
pub(super) async fn flusher(shard: ShardRef) {
    let notify = shard.borrow().flush.clone();
    loop {
        notify.notified().await;
        shard.borrow_mut().flush_udp();
    }
}

pub(super) async fn timer(shard: ShardRef) {
    let notify = shard.borrow().timer.clone();
    let mut last_anchor = Instant::now();
    loop {
        let deadline = shard.borrow().server.poll_timeout();
        // Wake at least once a minute to re-anchor wall-clock time.
        let cap = Instant::now() + Duration::from_secs(60);
        let wake = deadline.map_or(cap, |d| d.min(cap));
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            _ = notify.notified() => {
                // A reply went out: an allocation may have been created or
                // deleted. Report it now, not at the next expiry.
                let mut s = shard.borrow_mut();
                let s = &mut *s;
                log_events(&mut s.server, &mut s.offload, &s.usage, &s.conns);
                continue;
            }
        }
        let now = Instant::now();
        let mut s = shard.borrow_mut();
        let s = &mut *s;
        if now.duration_since(last_anchor) >= Duration::from_secs(60) {
            s.server.set_wall_clock(now, unix_now());
            last_anchor = now;
        }
        s.server.handle_timeout(now);
        log_events(&mut s.server, &mut s.offload, &s.usage, &s.conns);
    }
}

/// Logs what the core reports (at debug: one line per allocation, never per
/// packet), writes a usage record per finished allocation, and tells a stream
/// connection whose allocation ended without it (expired, deleted, killed) so
/// that its allocate timeout starts again (see `stream`).
pub(super) fn log_events(
    server: &mut Server<Binder>,
    offload: &mut Option<crate::offload::ShardOffload>,
    usage: &UsageLog,
    conns: &FastMap<FiveTuple, Rc<ConnOut>>,
) {
    // First the fast path's changes: an unbind's last counts must reach the
    // close event below.
    if let Some(o) = offload {
        o.apply(server);
    }
    let record = usage.enabled();
    for e in server.drain_events() {
        match e {
            Event::AllocationCreated { tuple } => {
                tracing::debug!(transport = tuple.transport.name(), client = %tuple.client, "allocation created")
            }
            Event::AllocationClosed {
                allocation: a,
                reason,
            } => {
                tracing::debug!(
                    id = a.id,
                    transport = a.tuple.transport.name(),
                    client = %a.tuple.client,
                    reason = reason.name(),
                    to_peer_bytes = a.traffic.to_peer_bytes,
                    to_client_bytes = a.traffic.to_client_bytes,
                    "allocation closed"
                );
                if record {
                    usage.write(&UsageRecord::new(&a, reason));
                }
                if let Some(c) = conns.get(&a.tuple) {
                    c.allocation_ended();
                }
            }
        }
    }
}

/// Copies the shard's counters into its metrics slot: one uncontended lock and a
/// copy of plain integers, a few times a second. The gauges are counted here, off
/// the packet path.
pub(super) fn publish(shard: &ShardRef, slot: &ShardSlot) {
    let s = shard.borrow();
    let g = s.server.gauges(Instant::now());
    let (gso_sends, gso_segments) = s.gso_counts();
    let snap = ShardSnapshot {
        stats: s.server.stats().clone(),
        allocations: g.allocations,
        permissions: g.permissions,
        channels: g.channels,
        tcp_active: s.tcp_active,
        tcp_total: s.tcp_total,
        in_process: s.in_process,
        gso_sends,
        gso_segments,
        gro_segments: s.gro_segments,
        tls_handshake_failures: s.tls_handshake_failures,
        conn_closed: s.conn_closed,
    };
    drop(s);
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = snap;
}

pub(super) async fn publisher(shard: ShardRef, slot: ShardSlot, index: usize) {
    let mut every = tokio::time::interval(PUBLISH_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flood = FloodWatch::default();
    let mut window = Instant::now();
    let mut ticks = 0u32;
    loop {
        every.tick().await;
        // The fast path's counters, once a second (a system call per entry).
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(4) {
            let mut s = shard.borrow_mut();
            let s = &mut *s;
            if let Some(o) = &mut s.offload {
                o.poll(&mut s.server);
            }
        }
        publish(&shard, &slot);
        if window.elapsed() >= crate::ops::flood::WINDOW {
            window = Instant::now();
            flood.warn(index, shard.borrow().server.stats());
        }
    }
}

pub(super) async fn commands(shard: ShardRef, mut rx: mpsc::UnboundedReceiver<ShardCommand>) {
    while let Some(cmd) = rx.recv().await {
        let mut guard = shard.borrow_mut();
        let s = &mut *guard;
        let now = Instant::now();
        let mut done = None;
        match cmd {
            ShardCommand::Offload(next, ack) => {
                if let Some(o) = s.offload.take() {
                    o.detach(&mut s.server);
                }
                if let Some(o) = next {
                    s.offload = Some(crate::offload::ShardOffload::new(o));
                    s.server.set_offload(true);
                    s.server.offload_resync(now);
                }
                done = ack;
            }
            ShardCommand::Reconfigure(cfg) => {
                s.server.reconfigure(cfg);
                let ended = s.server.recheck_credentials(now);
                if ended > 0 {
                    tracing::info!(
                        allocations = ended,
                        "reload: users no longer configured, allocations ended"
                    );
                }
            }
            ShardCommand::Drain(d) => s.server.set_drain(d),
            ShardCommand::Sessions(reply) => {
                let _ = reply.send(s.server.sessions(now));
            }
            ShardCommand::Kill(filter, reply) => {
                let _ = reply.send(s.server.kill(now, &filter));
            }
        }
        // Applies the fast path's queued changes (a new program's entries).
        log_events(&mut s.server, &mut s.offload, &s.usage, &s.conns);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// Ends allocations whose credential vanished, each time the credentials change.
pub(super) async fn recheck_on_change(shard: ShardRef, mut generation: watch::Receiver<i64>) {
    while generation.changed().await.is_ok() {
        let mut s = shard.borrow_mut();
        let s = &mut *s;
        let ended = s.server.recheck_credentials(Instant::now());
        if ended > 0 {
            tracing::info!(
                allocations = ended,
                "credentials removed or revoked: allocations ended"
            );
        }
        log_events(&mut s.server, &mut s.offload, &s.usage, &s.conns);
    }
}
