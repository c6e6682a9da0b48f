//! Socket creation: SO_REUSEPORT so that every shard has its own socket on the same
//! address (the kernel spreads clients over them), IPV6_V6ONLY so that `[::]` and
//! `0.0.0.0` can both be bound, and generous buffers for bursts.
// The one place of its folder with FFI (system calls libc has no safe
// wrapper for); every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Kernel buffer size asked for on listener sockets (the kernel caps it at
/// net.core.rmem_max / wmem_max).
const LISTENER_BUFFER: usize = 4 << 20;

fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A UDP listener socket with SO_REUSEPORT.
pub fn udp_listener(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(LISTENER_BUFFER);
    let _ = s.set_send_buffer_size(LISTENER_BUFFER);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A UDP socket without SO_REUSEPORT: binding it fails if anything holds `addr`.
pub fn exclusive_udp(addr: SocketAddr) -> io::Result<Socket> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// A TCP socket without SO_REUSEPORT (SO_REUSEADDR only, so TIME_WAIT does not
/// count): binding it fails if anything listens on `addr`.
pub fn exclusive_tcp(addr: SocketAddr) -> io::Result<Socket> {
    let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// A TCP listener socket with SO_REUSEPORT and SO_REUSEADDR (restart without
/// waiting out TIME_WAIT).
pub fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// A relay socket bound to `ip:port`; `dont_fragment` sets the DF bit on what it
/// sends (RFC 8656 DONT-FRAGMENT).
pub fn relay_socket(ip: IpAddr, port: u16, dont_fragment: bool) -> io::Result<std::net::UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&addr.into())?;
    if dont_fragment {
        set_dont_fragment(&s, ip.is_ipv4())?;
    }
    // Trains of datagrams a peer sent with GSO come in as one read, which the
    // relay reader splits (`gso_size`); refused on old kernels, which deliver
    // datagram by datagram as before.
    let _ = set_int_option(&s, libc::SOL_UDP, libc::UDP_GRO, 1);
    Ok(s.into())
}

/// Turns off the control messages quinn-udp's `UdpSocketState::new` asks for
/// on a listener and that ferroturn never reads: receive timestamps
/// (SO_TIMESTAMPNS, which also has the kernel stamp every packet the host
/// receives for as long as any socket wants them), the TOS or traffic class
/// (ECN, which a TURN server does not act on) and, on a listener bound to one
/// address, the destination address (IP_PKTINFO, IPV6_RECVPKTINFO: only a
/// wildcard listener needs it, to answer from the address a client reached).
/// Each costs a control message per datagram read. Errors are ignored: an
/// option this kernel or socket does not have was not on.
pub fn drop_unread_control_messages(s: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(s);
    let _ = set_int_option(&sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
    let _ = set_int_option(&sock, libc::IPPROTO_IP, libc::IP_RECVTOS, 0);
    let _ = set_int_option(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 0);
    if s.local_addr().is_ok_and(|a| !a.ip().is_unspecified()) {
        let _ = set_int_option(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 0);
        let _ = set_int_option(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 0);
    }
}

/// Whether this kernel sends UDP GSO (`UDP_SEGMENT`, Linux 4.18): probed once
/// per process on a throwaway socket, as quinn-udp does.
pub fn udp_gso_supported() -> bool {
    static GSO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GSO.get_or_init(|| {
        let Ok(s) = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)) else {
            return false;
        };
        set_int_option(&s, libc::SOL_UDP, libc::UDP_SEGMENT, 1200).is_ok()
    })
}

fn set_int_option(
    s: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a valid fd, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The listening socket of a TCP allocation's relayed address (RFC 6062).
/// SO_REUSEADDR and SO_REUSEPORT so that the connections the allocation opens
/// to peers (Connect) can be bound to the same address ([`tcp_relay_connector`]).
pub fn tcp_relay_listener(ip: IpAddr, port: u16) -> io::Result<std::net::TcpListener> {
    let addr = SocketAddr::new(ip, port);
    let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s.into())
}

/// A socket bound to the relayed address `from` of a TCP allocation, for a
/// connection to a peer (RFC 6062 §5.2).
pub fn tcp_relay_connector(from: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let s = new_socket(from, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&from.into())?;
    Ok(tokio::net::TcpSocket::from_std_stream(s.into()))
}

fn set_dont_fragment(s: &Socket, v4: bool) -> io::Result<()> {
    let (level, name, value) = if v4 {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    };
    set_int_option(s, level, name, value)
}

/// A nonblocking UDP socket on `bind` with 4 MiB buffers, for `ferroturn
/// bench`'s load side (so that a burst is not dropped by the load side itself).
pub fn bench_udp_socket(bind: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    force_buffers(&s);
    s.bind(&bind.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// 4 MiB send and receive buffers, forced past the sysctl limits when we may.
fn force_buffers(s: &Socket) {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    let size: libc::c_int = 4 << 20;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: setsockopt with a valid fd, a pointer to a live c_int and
            // its size.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
    }
}

/// Registers a UDP socket with the current tokio reactor, for reading only: a
/// UDP send never waits, so only reads go through readiness. Must be called on
/// the runtime that will drive the socket.
pub fn register_readable(socket: std::net::UdpSocket) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the AsyncFd owns the std socket, whose descriptor stays open and
    // the same until the AsyncFd is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?)
}

/// A Unix domain listener on `path`, created with mode 0600 (umask 0177 while
/// it is bound, the previous mask restored after). umask is process-wide: call
/// this before other threads create files.
pub fn unix_listener_owner_only(
    path: &std::path::Path,
) -> io::Result<std::os::unix::net::UnixListener> {
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    bound
}

/// This host's interface addresses (link-local IPv6 excluded: it needs a scope).
pub fn local_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    ips.retain(|ip| match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        IpAddr::V4(_) => true,
    });
    ips.sort();
    ips.dedup();
    ips
}
