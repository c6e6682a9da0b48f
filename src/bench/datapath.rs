//! The packet loop behind `relay` and `latency`: one thread drives its share of
//! the flows, the echo peer its flows relay to, and the far ends of
//! client-to-client flows, with `ppoll` + `recvmmsg`/`sendmmsg`. After setup it
//! allocates nothing: frames are prebuilt, receive buffers are reused, latencies
//! go into a fixed histogram.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::stats::Histogram;
use crate::net::mmsg::{self, Copies, Dest, RecvBatch};
use crate::stun::attr::Data;
use crate::stun::Message;

/// A flow whose window has seen no answer for this long is presumed lost: its
/// window reopens (the lost packets stay counted as lost).
const STALL: Duration = Duration::from_millis(200);
/// After the last send, how long to wait for packets still in flight.
const DRAIN: Duration = Duration::from_millis(500);

/// What a flow's socket does.
pub enum Role {
    /// Sends `frame` (window-limited or paced) and counts what comes back; when
    /// paced, the send time (8 bytes, ns) is written at `ts_offset`, the start of
    /// the payload.
    Sender { frame: Vec<u8>, ts_offset: usize },
    /// The far end of a client-to-client flow: sends back whatever arrives.
    Echoer,
}

pub struct Flow {
    /// Connected to the server, nonblocking.
    pub sock: UdpSocket,
    pub role: Role,
}

/// One thread's work.
pub struct Plan {
    pub flows: Vec<Flow>,
    /// The echo peer socket (unconnected) this thread's flows relay to.
    pub echo: Option<UdpSocket>,
    pub window: u32,
    /// Packets per second for this thread (latency); `None`: window-limited.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub count: u64,
    /// Give up when nothing at all came back this long after the first send.
    pub timeout: Duration,
    /// What counts as an answer.
    pub expect: Expect,
}

/// What a sender counts as an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Relayed data: ChannelData or a Data indication.
    Relayed,
    /// Any STUN message that is not an error response (Binding responses; a
    /// plain echo sends the request itself back).
    Reply,
}

#[derive(Default)]
pub struct Outcome {
    pub sent: u64,
    pub received: u64,
    /// STUN error responses received on a data socket.
    pub errors: u64,
    /// From the first send to the last packet received.
    pub elapsed: Duration,
    pub hist: Option<Histogram>,
}

/// Counters the progress printer reads.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

struct SenderState {
    outstanding: u32,
    last_progress: Instant,
}

/// Whether a datagram from the server is relayed data: ChannelData, or a STUN
/// Data indication.
fn is_data(m: &[u8]) -> bool {
    match m.first() {
        Some(b) if b & 0xC0 == 0x40 => m.len() >= 4,
        Some(0) => m.len() >= 20 && m[1] == 0x17,
        _ => false,
    }
}

/// A STUN message (magic cookie in place) that is not an error response.
fn is_reply(m: &[u8]) -> bool {
    m.len() >= 20
        && m[0] & 0xC0 == 0
        && m[4..8] == [0x21, 0x12, 0xA4, 0x42]
        && !is_error_response(m)
}

fn is_error_response(m: &[u8]) -> bool {
    m.len() >= 20 && m[0] & 0xC1 == 0x01 && m[1] & 0x10 == 0x10
}

/// The payload of relayed data.
fn payload(m: &[u8]) -> Option<&[u8]> {
    if m.first()? & 0xC0 == 0x40 {
        return m.get(4..);
    }
    match Message::parse(m).ok()?.get::<Data>()? {
        Ok(Data(d)) => Some(d),
        Err(_) => None,
    }
}

/// Turns a Data indication into a Send indication to the same peer with the same
/// data (the far end of a client-to-client flow answering), fixing FINGERPRINT
/// when present. ChannelData is sent back as it is: both ends use the same channel
/// number.
fn data_to_send(m: &mut [u8]) {
    if m.len() < 20 || m[0] != 0 || m[1] != 0x17 {
        return;
    }
    m[1] = 0x16;
    let n = m.len();
    if n >= 28 && m[n - 8..n - 6] == [0x80, 0x28] {
        let crc = crc32fast::hash(&m[..n - 8]) ^ 0x5354_554E;
        m[n - 4..].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Runs one thread's plan to completion.
pub fn run(mut plan: Plan, progress: &Progress) -> Result<Outcome, String> {
    let latency = plan.rate.is_some();
    let mut hist = latency.then(Histogram::new);
    let mut batch = RecvBatch::new(64, 0, 2048, 0);
    let mut copies = Copies::new(plan.window.max(1) as usize);
    let mut fds: Vec<libc::pollfd> = plan
        .flows
        .iter()
        .map(|f| mmsg::pollfd(f.sock.as_raw_fd()))
        .collect();
    if let Some(e) = &plan.echo {
        fds.push(mmsg::pollfd(e.as_raw_fd()));
    }
    let senders: Vec<usize> = plan
        .flows
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.role, Role::Sender { .. }))
        .map(|(i, _)| i)
        .collect();
    let start = Instant::now();
    let mut state: Vec<SenderState> = plan
        .flows
        .iter()
        .map(|_| SenderState {
            outstanding: 0,
            last_progress: start,
        })
        .collect();
    let deadline = start + plan.duration;
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
    let mut next_due = start;
    let mut rr = 0usize;
    let mut out = Outcome::default();
    let mut last_rx = start;
    let mut stop: Option<Instant> = None;
    let mut published = start;

    loop {
        let now = Instant::now();
        if stop.is_none() && (now >= deadline || out.sent >= plan.count || senders.is_empty()) {
            stop = Some(now);
        }
        if let Some(s) = stop {
            let in_flight = out.sent > out.received
                && senders.iter().any(|&i| state[i].outstanding > 0 || latency);
            if !in_flight || now >= s + DRAIN {
                break;
            }
        }
        if out.received == 0 && out.sent > 0 && now >= start + plan.timeout {
            return Err(format!(
                "nothing came back within {:?} ({} packets sent)",
                plan.timeout, out.sent
            ));
        }

        // Send.
        let mut wait = Duration::from_millis(1);
        if stop.is_none() {
            if let Some(interval) = interval {
                // Paced: one packet per interval, round robin over the flows, each
                // stamped with its send time.
                while next_due <= now && out.sent < plan.count {
                    let i = senders[rr % senders.len()];
                    rr += 1;
                    let flow = &mut plan.flows[i];
                    if let Role::Sender { frame, ts_offset } = &mut flow.role {
                        let ts = start.elapsed().as_nanos() as u64;
                        frame[*ts_offset..*ts_offset + 8].copy_from_slice(&ts.to_be_bytes());
                        let n = copies
                            .send(flow.sock.as_raw_fd(), frame, 1)
                            .map_err(|e| format!("send: {e}"))?;
                        out.sent += n as u64;
                    }
                    next_due += interval;
                }
                wait = next_due.saturating_duration_since(Instant::now()).min(wait);
            } else {
                for &i in &senders {
                    let st = &mut state[i];
                    if st.outstanding > 0 && now.duration_since(st.last_progress) > STALL {
                        st.outstanding = 0;
                        st.last_progress = now;
                    }
                    let room = plan.window.saturating_sub(st.outstanding) as u64;
                    let k = room.min(plan.count - out.sent) as usize;
                    if k == 0 {
                        continue;
                    }
                    let flow = &plan.flows[i];
                    if let Role::Sender { frame, .. } = &flow.role {
                        let n = copies
                            .send(flow.sock.as_raw_fd(), frame, k)
                            .map_err(|e| format!("send: {e}"))?;
                        if st.outstanding == 0 {
                            st.last_progress = now;
                        }
                        st.outstanding += n as u32;
                        out.sent += n as u64;
                    }
                }
            }
        }

        // Wait for anything to read.
        for p in fds.iter_mut() {
            p.revents = 0;
        }
        let ready = mmsg::wait(&mut fds, wait).map_err(|e| format!("poll: {e}"))?;
        if ready == 0 {
            continue;
        }
        for (k, p) in fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let fd = p.fd;
            let is_echo = k == plan.flows.len();
            loop {
                let n = batch
                    .recv_waiting(fd)
                    .map_err(|e| format!("receive: {e}"))?;
                if n == 0 {
                    break;
                }
                if is_echo {
                    batch
                        .send(fd, 0, n, Dest::Source)
                        .map_err(|e| format!("echo send: {e}"))?;
                } else {
                    match plan.flows[k].role {
                        Role::Echoer => {
                            for j in 0..n {
                                data_to_send(batch.msg_mut(j));
                            }
                            batch
                                .send(fd, 0, n, Dest::Connected)
                                .map_err(|e| format!("echo send: {e}"))?;
                        }
                        Role::Sender { .. } => {
                            let rx = Instant::now();
                            let rx_ns = rx.duration_since(start).as_nanos() as u64;
                            let mut got = 0u32;
                            for j in 0..n {
                                let m = batch.msg(j);
                                let answer = match plan.expect {
                                    Expect::Relayed => is_data(m),
                                    Expect::Reply => is_reply(m),
                                };
                                if answer {
                                    got += 1;
                                    if let Some(h) = hist.as_mut() {
                                        // The send time leads the payload.
                                        if let Some(ts) = payload(m)
                                            .and_then(|p| p.get(..8))
                                            .and_then(|b| b.try_into().ok())
                                            .map(u64::from_be_bytes)
                                        {
                                            h.record(rx_ns.saturating_sub(ts));
                                        }
                                    }
                                } else if is_error_response(m) {
                                    out.errors += 1;
                                }
                            }
                            if got > 0 {
                                let st = &mut state[k];
                                st.outstanding = st.outstanding.saturating_sub(got);
                                st.last_progress = rx;
                                out.received += u64::from(got);
                                last_rx = rx;
                            }
                        }
                    }
                }
                if n < batch.capacity() {
                    break;
                }
            }
        }
        if now.duration_since(published) >= Duration::from_millis(200) {
            progress.sent.store(out.sent, Ordering::Relaxed);
            progress.received.store(out.received, Ordering::Relaxed);
            published = now;
        }
    }
    progress.sent.store(out.sent, Ordering::Relaxed);
    progress.received.store(out.received, Ordering::Relaxed);
    out.elapsed = last_rx.duration_since(start);
    out.hist = hist;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_relayed_data() {
        assert!(is_data(&[0x40, 0x00, 0x00, 0x01, 0xAA]));
        let mut ind = vec![0u8; 20];
        ind[1] = 0x17;
        assert!(is_data(&ind));
        data_to_send(&mut ind);
        assert_eq!(ind[1], 0x16);
        let mut err = vec![0u8; 20];
        err[0] = 0x01;
        err[1] = 0x13; // Allocate error response
        assert!(is_error_response(&err));
        assert!(!is_data(&err));
    }
}
