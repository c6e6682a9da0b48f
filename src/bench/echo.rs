//! `ferroturn bench echo-server`: the ceilings of the machine.
//!
//! Without `--forward-to` it is a plain batched UDP echo: `recvmmsg` up to 64
//! datagrams, `sendmmsg` them back to their sources. With `--forward-to ECHO` it
//! is a plain batched forwarder, the least a relay has to do: each client gets an
//! upstream socket of its own (like a relayed transport address) connected to
//! ECHO; datagrams from a client go out of its upstream socket (one `sendmmsg` per
//! run of datagrams from the same client), and whatever an upstream socket
//! receives goes back to its client (one `sendmmsg` per batch). No STUN parsing,
//! no permissions, no framing: the bytes go through unchanged.

use std::collections::HashMap;
use std::error::Error;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::SockAddr;

use super::{Common, EchoServerArgs};
use crate::net::mmsg::{self, Dest, RecvBatch};
use crate::net::sockets;

/// Most clients the forwarder serves (one upstream socket each).
const MAX_CLIENTS: usize = 4096;

pub fn run(args: &EchoServerArgs, common: &Common) -> Result<(), Box<dyn Error>> {
    let sock = sockets::bench_udp_socket(args.listen)
        .map_err(|e| format!("cannot bind {}: {e}", args.listen))?;
    let local = sock.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        match args.forward_to {
            Some(to) => writeln!(out, "forwarder listening on {local}, forwarding to {to}")?,
            None => writeln!(out, "echo listening on {local}")?,
        }
        out.flush()?;
    }
    let deadline = Instant::now() + common.duration;
    match args.forward_to {
        None => echo(&sock, deadline),
        Some(to) => forward(&sock, to, deadline),
    }
}

fn echo(sock: &UdpSocket, deadline: Instant) -> Result<(), Box<dyn Error>> {
    let fd = sock.as_raw_fd();
    let mut fds = [mmsg::pollfd(fd)];
    let mut batch = RecvBatch::new(64, 0, 2048, 0);
    while Instant::now() < deadline {
        fds[0].revents = 0;
        if mmsg::wait(&mut fds, Duration::from_millis(100))? == 0 {
            continue;
        }
        loop {
            let n = batch.recv_waiting(fd)?;
            if n == 0 {
                break;
            }
            batch.send(fd, 0, n, Dest::Source)?;
            if n < batch.capacity() {
                break;
            }
        }
    }
    Ok(())
}

struct Upstream {
    sock: UdpSocket,
    client: SockAddr,
}

fn forward(listener: &UdpSocket, to: SocketAddr, deadline: Instant) -> Result<(), Box<dyn Error>> {
    let lfd = listener.as_raw_fd();
    let mut fds = vec![mmsg::pollfd(lfd)];
    let mut ups: Vec<Upstream> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut batch = RecvBatch::new(64, 0, 2048, 0);
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    while Instant::now() < deadline {
        for p in fds.iter_mut() {
            p.revents = 0;
        }
        if mmsg::wait(&mut fds, Duration::from_millis(100))? == 0 {
            continue;
        }
        for k in 0..fds.len() {
            if fds[k].revents == 0 {
                continue;
            }
            let fd = fds[k].fd;
            loop {
                let n = batch.recv_waiting(fd)?;
                if n == 0 {
                    break;
                }
                if k == 0 {
                    // From clients: out of each client's upstream socket, in runs.
                    let mut run_start = 0;
                    let mut run_up: Option<usize> = None;
                    for j in 0..=n {
                        let src = if j < n { batch.source(j) } else { None };
                        let up = if let Some(src) = src {
                            match by_client.get(&src) {
                                Some(&u) => Some(u),
                                None if ups.len() < MAX_CLIENTS => {
                                    let s = sockets::bench_udp_socket(any)?;
                                    s.connect(to)?;
                                    fds.push(mmsg::pollfd(s.as_raw_fd()));
                                    ups.push(Upstream {
                                        sock: s,
                                        client: src.into(),
                                    });
                                    by_client.insert(src, ups.len() - 1);
                                    Some(ups.len() - 1)
                                }
                                None => None,
                            }
                        } else {
                            None
                        };
                        if j == n || up != run_up {
                            if let Some(u) = run_up {
                                batch.send(
                                    ups[u].sock.as_raw_fd(),
                                    run_start,
                                    j,
                                    Dest::Connected,
                                )?;
                            }
                            run_start = j;
                            run_up = up;
                        }
                    }
                } else {
                    // From the echo: back to the upstream socket's client.
                    let up = &ups[k - 1];
                    batch.send(lfd, 0, n, Dest::To(&up.client))?;
                }
                if n < batch.capacity() {
                    break;
                }
            }
        }
    }
    Ok(())
}
