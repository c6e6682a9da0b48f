//! Datagrams queued and sent with one `sendmmsg` per batch, and the bench's
//! copies of one frame.
//!
//! A shard answers and forwards many datagrams through the same listener socket
//! in one turn of its event loop (a `recvmmsg` batch of requests, the relay
//! sockets that became readable together). Sending each with its own `sendmsg`
//! makes the syscall, not the relaying, the cost; queuing them and sending the
//! lot with `sendmmsg` pays for one. The queue is preallocated: no heap
//! allocation per datagram. Each message can carry a source address
//! (IP_PKTINFO / IPV6_PKTINFO), which wildcard listeners need to answer from
//! the address the client reached.
//!
//! The bench's load side deliberately sends with `sendmmsg` (one datagram per
//! message) and not with UDP GSO: a GSO train would reach a server that enables
//! UDP_GRO as one coalesced unit, which real clients (browsers) never produce,
//! and would flatter such servers against those that read datagram by datagram.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

/// Datagrams queued before the queue sends itself.
pub const CAPACITY: usize = 64;
/// Largest datagram that is queued; bigger ones are sent at once, alone.
pub const SLOT: usize = 2048;

/// Room for one IP_PKTINFO or IPV6_PKTINFO control message and one
/// UDP_SEGMENT.
const CMSG_SPACE: usize = 80;

/// Most segments in one GSO send (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send: one IP datagram's, with room for headers.
const GSO_MAX_BYTES: usize = 65_000;
/// Largest segment sent with GSO: one that fits a 1500-byte MTU over IPv6
/// (a segment over the route's MTU makes the kernel refuse the whole send;
/// larger datagrams go out alone and the kernel fragments them if allowed).
const GSO_MAX_SEGMENT: usize = 1452;

/// A queue of datagrams for one socket.
pub struct SendBatch {
    buf: Box<[u8]>,
    lens: [usize; CAPACITY],
    dest: Box<[libc::sockaddr_storage]>,
    dest_len: [libc::socklen_t; CAPACITY],
    src: [Option<IpAddr>; CAPACITY],
    /// Which socket each datagram goes out of, for [`SendBatch::flush_by_key`].
    key: [u64; CAPACITY],
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
    cmsg: Box<[[u64; CMSG_SPACE / 8]]>,
    len: usize,
    /// Destinations as addresses, to compare (GSO runs).
    to: [SocketAddr; CAPACITY],
    /// The datagrams of one socket in sending order (indices into the queue).
    order: [u8; CAPACITY],
    /// Per message of the last flush: its first iovec and datagram count.
    run: [(u8, u8); CAPACITY],
    /// Per message: the length of its IP_PKTINFO control message (0: none).
    pktinfo_len: [usize; CAPACITY],
    /// Whether runs go out as one UDP GSO send (the kernel supports it).
    gso: bool,
    gso_sends: u64,
    gso_segments: u64,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// A batch that uses UDP GSO if the kernel has it.
    pub fn new() -> Self {
        Self::with_gso(crate::net::sockets::udp_gso_supported())
    }

    /// A batch that sends runs of equal-sized datagrams to one destination as
    /// one GSO send (`gso`, where the kernel supports it), or each alone.
    pub fn with_gso(gso: bool) -> Self {
        Self {
            buf: vec![0u8; CAPACITY * SLOT].into_boxed_slice(),
            lens: [0; CAPACITY],
            dest: super::zeroed_addrs(CAPACITY),
            dest_len: [0; CAPACITY],
            src: [None; CAPACITY],
            key: [0; CAPACITY],
            iov: super::empty_iovecs(CAPACITY),
            hdr: super::zeroed_headers(CAPACITY),
            cmsg: vec![[0u64; CMSG_SPACE / 8]; CAPACITY].into_boxed_slice(),
            len: 0,
            to: [SocketAddr::from(([0, 0, 0, 0], 0)); CAPACITY],
            order: [0; CAPACITY],
            run: [(0, 0); CAPACITY],
            pktinfo_len: [0; CAPACITY],
            gso,
            gso_sends: 0,
            gso_segments: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == CAPACITY
    }

    /// Queues `data` for `to`, from `src` if given. Returns false when it
    /// does not fit (full, or larger than a slot): the caller sends it itself.
    pub fn push(&mut self, data: &[u8], to: SocketAddr, src: Option<IpAddr>) -> bool {
        self.push_keyed(0, data, to, src)
    }

    /// Like [`push`](Self::push), for the socket `key` stands for (see
    /// [`flush_by_key`](Self::flush_by_key)).
    pub fn push_keyed(
        &mut self,
        key: u64,
        data: &[u8],
        to: SocketAddr,
        src: Option<IpAddr>,
    ) -> bool {
        if self.len == CAPACITY || data.len() > SLOT {
            return false;
        }
        let i = self.len;
        self.key[i] = key;
        self.buf[i * SLOT..i * SLOT + data.len()].copy_from_slice(data);
        self.lens[i] = data.len();
        let addr = SockAddr::from(to);
        // SAFETY: `addr` holds a valid sockaddr of `addr.len()` bytes, which fits
        // a sockaddr_storage.
        unsafe {
            ptr::copy_nonoverlapping(
                addr.as_ptr().cast::<u8>(),
                (&mut self.dest[i] as *mut libc::sockaddr_storage).cast::<u8>(),
                addr.len() as usize,
            );
        }
        self.dest_len[i] = addr.len();
        self.to[i] = to;
        self.src[i] = src;
        self.len += 1;
        true
    }

    /// Sends everything queued with `sendmmsg` on `fd` and empties the queue.
    /// Like the network, it drops what the socket cannot take now (a full send
    /// buffer) and skips a datagram the kernel refuses. Returns how many
    /// datagrams were dropped for a full buffer.
    pub fn flush(&mut self, fd: RawFd) -> u64 {
        let n = self.len;
        for (i, o) in self.order.iter_mut().enumerate().take(n) {
            *o = i as u8;
        }
        let dropped = self.send_ordered(fd, n);
        self.len = 0;
        dropped
    }

    /// Sends what is queued, each datagram out of the socket its key names
    /// (`fd_of`; `None` drops it): one `sendmmsg` per key, in the order the
    /// datagrams of that key were queued. Returns how many were dropped for a
    /// full buffer.
    pub fn flush_by_key(&mut self, fd_of: impl Fn(u64) -> Option<RawFd>) -> u64 {
        let n = self.len;
        let mut done = [false; CAPACITY];
        let mut dropped = 0;
        for first in 0..n {
            if done[first] {
                continue;
            }
            let key = self.key[first];
            let mut pos = 0;
            for (i, d) in done.iter_mut().enumerate().take(n).skip(first) {
                if !*d && self.key[i] == key {
                    *d = true;
                    self.order[pos] = i as u8;
                    pos += 1;
                }
            }
            if let Some(fd) = fd_of(key) {
                dropped += self.send_ordered(fd, pos);
            }
        }
        self.len = 0;
        dropped
    }

    /// GSO sends and the datagrams they carried, since the batch was made.
    pub fn gso_counts(&self) -> (u64, u64) {
        (self.gso_sends, self.gso_segments)
    }

    /// How many datagrams from `order[j]` on go out as one message: with GSO,
    /// a run of datagrams to the same destination from the same source, all
    /// of the first one's size except the last, which may be shorter; within
    /// the kernel's limits of segments and bytes.
    fn run_at(&self, j: usize, m: usize) -> usize {
        let first = self.order[j] as usize;
        let size = self.lens[first];
        if !self.gso || size == 0 || size > GSO_MAX_SEGMENT {
            return 1;
        }
        let mut k = 1;
        let mut total = size;
        while j + k < m && k < GSO_MAX_SEGMENTS {
            let prev = self.order[j + k - 1] as usize;
            let i = self.order[j + k] as usize;
            let len = self.lens[i];
            // Only the last segment may be shorter; an empty one would vanish.
            if self.lens[prev] != size
                || len == 0
                || len > size
                || total + len > GSO_MAX_BYTES
                || self.to[i] != self.to[first]
                || self.src[i] != self.src[first]
            {
                break;
            }
            total += len;
            k += 1;
        }
        k
    }

    /// Sends datagrams `order[..m]` on `fd`, in that order: runs that GSO can
    /// carry as one message each (see [`run_at`](Self::run_at)), the others one
    /// message each, all with one `sendmmsg`. Returns how many datagrams were
    /// dropped for a full buffer.
    fn send_ordered(&mut self, fd: RawFd, m: usize) -> u64 {
        let mut j = 0;
        let mut msgs = 0;
        while j < m {
            let k = self.run_at(j, m);
            self.fill(msgs, j, k);
            j += k;
            msgs += 1;
        }
        self.send(fd, msgs)
    }

    /// Points iovecs `j..j + k` at datagrams `order[j..j + k]` and header
    /// `msg` at those iovecs: one datagram, or (k > 1) one GSO send whose
    /// segments are the first datagram's size.
    fn fill(&mut self, msg: usize, j: usize, k: usize) {
        let base = self.buf.as_mut_ptr();
        for t in j..j + k {
            let i = self.order[t] as usize;
            self.iov[t] = libc::iovec {
                // Within buf: datagram i is at i * SLOT.
                iov_base: base.wrapping_add(i * SLOT).cast(),
                iov_len: self.lens[i],
            };
        }
        let first = self.order[j] as usize;
        let buf = &mut self.cmsg[msg];
        *buf = [0; CMSG_SPACE / 8];
        let mut control_len = match self.src[first] {
            Some(ip) => write_pktinfo(buf, ip),
            None => 0,
        };
        self.pktinfo_len[msg] = control_len;
        if k > 1 {
            // The segment size; the kernel cuts the iovecs' bytes at it.
            let size = self.lens[first] as u16;
            control_len += write_cmsg(buf, control_len, libc::SOL_UDP, libc::UDP_SEGMENT, size);
        }
        let control = if control_len > 0 {
            buf.as_mut_ptr().cast::<libc::c_void>()
        } else {
            ptr::null_mut()
        };
        self.run[msg] = (j as u8, k as u8);
        let h = &mut self.hdr[msg];
        h.msg_len = 0;
        h.msg_hdr.msg_name = (&mut self.dest[first] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = self.dest_len[first];
        h.msg_hdr.msg_iov = &mut self.iov[j];
        h.msg_hdr.msg_iovlen = k as _;
        h.msg_hdr.msg_control = control;
        h.msg_hdr.msg_controllen = control_len as _;
        h.msg_hdr.msg_flags = 0;
    }

    /// `sendmmsg` of headers `0..msgs`; returns how many datagrams were
    /// dropped for a full buffer (see [`classify_send_error`]).
    fn send(&mut self, fd: RawFd, msgs: usize) -> u64 {
        let mut sent = 0;
        while sent < msgs {
            // SAFETY: headers 0..msgs were filled by `fill`: they point at
            // iovecs, datagrams, destinations and control messages this struct
            // owns, which the `&mut self` keeps alive across the call.
            let r = unsafe { super::sendmmsg(fd, &mut self.hdr[sent..msgs]) };
            let failure = match r {
                Ok(n) if n > 0 => {
                    for msg in sent..sent + n {
                        self.count_gso(msg);
                    }
                    sent += n;
                    continue;
                }
                Err(e) => classify_send_error(&e),
                // Not for a non-empty batch; skipped like a refused datagram.
                Ok(_) => SendFailure::Refused,
            };
            match failure {
                SendFailure::Retry => continue,
                // No room: the rest is dropped, as a congested link would.
                SendFailure::Full => {
                    return self.run[sent..msgs].iter().map(|r| u64::from(r.1)).sum();
                }
                // A GSO send refused (a segment over the route's MTU, a device
                // without checksum offload): its datagrams go out one by one,
                // as they would have without GSO.
                SendFailure::Refused if self.run[sent].1 > 1 => {
                    let dropped = self.send_singly(fd, sent);
                    if dropped > 0 {
                        let rest: u64 = self.run[sent + 1..msgs]
                            .iter()
                            .map(|r| u64::from(r.1))
                            .sum();
                        return dropped + rest;
                    }
                    sent += 1;
                }
                // This datagram was refused: skip it, send the others.
                SendFailure::Refused => sent += 1,
            }
        }
        0
    }

    fn count_gso(&mut self, msg: usize) {
        let k = u64::from(self.run[msg].1);
        if k > 1 {
            self.gso_sends += 1;
            self.gso_segments += k;
        }
    }

    /// Sends the datagrams of GSO message `msg` one message each, reusing its
    /// header without the UDP_SEGMENT control message. Returns how many were
    /// dropped for a full buffer.
    fn send_singly(&mut self, fd: RawFd, msg: usize) -> u64 {
        let (j, k) = self.run[msg];
        let (j, k) = (j as usize, k as usize);
        let pktinfo = self.pktinfo_len[msg];
        let h = &mut self.hdr[msg].msg_hdr;
        h.msg_iovlen = 1;
        h.msg_controllen = pktinfo as _;
        if pktinfo == 0 {
            h.msg_control = ptr::null_mut();
        }
        let mut t = j;
        while t < j + k {
            self.hdr[msg].msg_hdr.msg_iov = &mut self.iov[t];
            // SAFETY: header `msg` points at iovec t (one datagram of this
            // batch), its destination and at most its IP_PKTINFO control
            // message, all owned by `self` and alive across the call.
            let r = unsafe { super::sendmmsg(fd, &mut self.hdr[msg..msg + 1]) };
            match r.map_err(|e| classify_send_error(&e)) {
                Ok(n) if n > 0 => t += 1,
                Ok(_) | Err(SendFailure::Refused) => t += 1,
                Err(SendFailure::Retry) => {}
                Err(SendFailure::Full) => return (j + k - t) as u64,
            }
        }
        0
    }
}

/// What a failed UDP send means for the datagram it carried. No send error is
/// fatal to a socket, an allocation or a shard: each drops datagrams at most.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SendFailure {
    /// Interrupted by a signal: send it again.
    Retry,
    /// No room now: the socket buffer is full (EAGAIN) or the kernel or the
    /// device queue is out of buffers (ENOBUFS, ENOMEM). Dropped and counted
    /// (`dropped_packets_total{reason="backlog"}`), as a congested link drops
    /// it; trying the rest of a batch at once would only fail the same way.
    Full,
    /// This datagram is refused (no route, a firewall's EPERM, EMSGSIZE with
    /// DF set, a pending ICMP error, an address of the wrong family): skipped,
    /// the next one may well go out.
    Refused,
}

/// Sorts a send error into a [`SendFailure`].
pub fn classify_send_error(e: &io::Error) -> SendFailure {
    match e.kind() {
        io::ErrorKind::Interrupted => return SendFailure::Retry,
        io::ErrorKind::WouldBlock => return SendFailure::Full,
        _ => {}
    }
    match e.raw_os_error() {
        Some(libc::ENOBUFS | libc::ENOMEM) => SendFailure::Full,
        _ => SendFailure::Refused,
    }
}

/// `sendmmsg` until everything is out or the socket is full; the bench's policy:
/// a full buffer or ECONNREFUSED ends the call with what went out, other errors
/// are returned.
///
/// # Safety
///
/// As for [`super::sendmmsg`]: the headers point at live iovecs, buffers and
/// addresses.
pub(super) unsafe fn send_all(fd: RawFd, hdr: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let mut done = 0;
    while done < hdr.len() {
        // SAFETY: upheld by the caller.
        match unsafe { super::sendmmsg(fd, &mut hdr[done..]) } {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused => return Ok(done),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            },
        }
    }
    Ok(done)
}

/// Sends `k` copies of one frame on a connected socket with one `sendmmsg`: the
/// headers all point at the same bytes, so nothing is copied.
pub struct Copies {
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
}

impl Copies {
    pub fn new(max: usize) -> Self {
        Self {
            iov: super::empty_iovecs(max),
            hdr: super::zeroed_headers(max),
        }
    }

    /// Sends up to `k` (at most `max`) copies of `frame`; returns how many left.
    pub fn send(&mut self, fd: RawFd, frame: &[u8], k: usize) -> io::Result<usize> {
        let k = k.min(self.hdr.len());
        for i in 0..k {
            self.iov[i] = libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            };
            let h = &mut self.hdr[i].msg_hdr;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_name = ptr::null_mut();
            h.msg_namelen = 0;
        }
        // SAFETY: headers 0..k point at their own iovecs, each at `frame`, which
        // the borrow keeps alive for the call (sendmmsg only reads it); no name
        // and no control data.
        unsafe { send_all(fd, &mut self.hdr[..k]) }
    }
}

/// Writes an IP_PKTINFO (IPv4) or IPV6_PKTINFO control message for source
/// `ip` at the start of `buf`; returns its length.
fn write_pktinfo(buf: &mut [u64; CMSG_SPACE / 8], ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(v4) => write_cmsg(
            buf,
            0,
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            },
        ),
        IpAddr::V6(v6) => write_cmsg(
            buf,
            0,
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                ipi6_ifindex: 0,
            },
        ),
    }
}

/// Writes one control message (`level`, `ty`, `value`) at byte `off` of `buf`
/// (a multiple of the alignment, as the lengths this returns are); returns the
/// room it takes (CMSG_SPACE).
fn write_cmsg<T: Copy>(
    buf: &mut [u64; CMSG_SPACE / 8],
    off: usize,
    level: libc::c_int,
    ty: libc::c_int,
    value: T,
) -> usize {
    let size = mem::size_of::<T>() as u32;
    // SAFETY: pure arithmetic on the size.
    let space = unsafe { libc::CMSG_SPACE(size) } as usize;
    assert!(off + space <= CMSG_SPACE, "control messages fit the buffer");
    // SAFETY: `buf` is 8-byte aligned and `off` is a CMSG_SPACE, so the header
    // at `off` is aligned; header and data end within `buf` (the assert). The
    // msghdr only tells CMSG_FIRSTHDR where the buffer starts and how long it is.
    unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_control = buf.as_mut_ptr().cast::<u8>().add(off).cast();
        msg.msg_controllen = (CMSG_SPACE - off) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(size) as _;
        ptr::write_unaligned(libc::CMSG_DATA(c).cast(), value);
    }
    space
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn sends_every_queued_datagram_in_order_with_source_addresses() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        // Wildcard senders need IP_PKTINFO to choose their source.
        let to = rx.local_addr().unwrap();
        let mut b = SendBatch::new();
        for i in 0..CAPACITY {
            let src = (i % 2 == 0).then(|| "127.0.0.3".parse().unwrap());
            assert!(b.push(&[i as u8; 10], to, src));
        }
        assert!(b.is_full());
        assert!(!b.push(b"more", to, None));
        assert!(!SendBatch::new().push(&[0; SLOT + 1], to, None));
        b.flush(tx.as_raw_fd());
        assert!(b.is_empty());
        let mut buf = [0u8; 64];
        for i in 0..CAPACITY {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i as u8; 10]);
            let want: IpAddr = if i % 2 == 0 {
                "127.0.0.3".parse().unwrap()
            } else {
                "127.0.0.1".parse().unwrap()
            };
            assert_eq!(from.ip(), want, "datagram {i}");
        }
    }

    #[test]
    fn flush_by_key_sends_each_datagram_out_of_its_socket_in_order() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = rx.local_addr().unwrap();
        let socks: Vec<_> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut b = SendBatch::new();
        // Keys interleaved; key 9 has no socket and is dropped.
        for (i, key) in [0u64, 1, 0, 2, 9, 1, 0].into_iter().enumerate() {
            assert!(b.push_keyed(key, &[i as u8], to, None));
        }
        let dropped = b.flush_by_key(|k| socks.get(k as usize).map(|s| s.as_raw_fd()));
        assert_eq!(dropped, 0);
        assert!(b.is_empty());
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for _ in 0..6 {
            let (_, from) = rx.recv_from(&mut buf).unwrap();
            let key = socks
                .iter()
                .position(|s| s.local_addr().unwrap() == from)
                .unwrap();
            got.push((key, buf[0]));
        }
        // Grouped per socket, each group in queue order.
        assert_eq!(got, [(0, 0), (0, 2), (0, 6), (1, 1), (1, 5), (2, 3)]);
    }

    /// ENOBUFS cannot be produced on loopback (the kernel would have to run out
    /// of buffers), so its classification is checked on a synthetic error.
    #[test]
    fn enobufs_and_eagain_are_a_full_buffer_other_errors_refuse_one_datagram() {
        let os = io::Error::from_raw_os_error;
        for e in [libc::ENOBUFS, libc::EAGAIN, libc::EWOULDBLOCK, libc::ENOMEM] {
            assert_eq!(classify_send_error(&os(e)), SendFailure::Full, "errno {e}");
        }
        assert_eq!(
            classify_send_error(&io::ErrorKind::WouldBlock.into()),
            SendFailure::Full
        );
        assert_eq!(classify_send_error(&os(libc::EINTR)), SendFailure::Retry);
        for e in [
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::EMSGSIZE,
            libc::EPERM,
            libc::EACCES,
            libc::EINVAL,
            libc::EAFNOSUPPORT,
        ] {
            assert_eq!(
                classify_send_error(&os(e)),
                SendFailure::Refused,
                "errno {e}"
            );
        }
    }

    /// A datagram the kernel refuses (here an IPv6 destination on an IPv4
    /// socket) is skipped and not counted as a full buffer; the ones after it
    /// in the same batch still go out.
    #[test]
    fn a_refused_datagram_is_skipped_and_the_rest_of_the_batch_goes_out() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut b = SendBatch::new();
        assert!(b.push(b"one", to, None));
        assert!(b.push(b"refused", "[::1]:9".parse().unwrap(), None));
        assert!(b.push(b"two", to, None));
        assert_eq!(b.flush(tx.as_raw_fd()), 0);
        let mut buf = [0u8; 16];
        for want in [&b"one"[..], b"two"] {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
    }

    #[test]
    fn copies_of_one_frame_on_a_connected_socket() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut c = Copies::new(4);
        assert_eq!(c.send(tx.as_raw_fd(), b"frame", 9).unwrap(), 4);
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"frame");
        }
    }

    #[test]
    fn ipv6_source_addresses() {
        let Ok(rx) = std::net::UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 on this host
        };
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("[::]:0").unwrap();
        let mut b = SendBatch::new();
        assert!(b.push(
            b"six",
            rx.local_addr().unwrap(),
            Some("::1".parse().unwrap())
        ));
        b.flush(tx.as_raw_fd());
        let mut buf = [0u8; 8];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"six");
        assert_eq!(from.ip(), "::1".parse::<IpAddr>().unwrap());
    }

    /// A run of equal-sized datagrams (the last shorter) to one destination
    /// leaves as one GSO send; a reader without UDP_GRO gets each datagram
    /// with its exact bytes, and one with UDP_GRO gets the train and its
    /// segment size (what the relay reader splits by).
    #[test]
    fn gso_runs_arrive_as_separate_datagrams_and_as_a_gro_train() {
        if !crate::net::sockets::udp_gso_supported() {
            return; // no UDP GSO in this kernel
        }
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let gro =
            crate::net::sockets::relay_socket("127.0.0.1".parse().unwrap(), 0, false).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sizes = [100usize, 100, 100, 37];
        for to in [plain.local_addr().unwrap(), gro.local_addr().unwrap()] {
            let mut b = SendBatch::with_gso(true);
            for (i, &n) in sizes.iter().enumerate() {
                assert!(b.push(&vec![i as u8; n], to, None));
            }
            assert_eq!(b.flush(tx.as_raw_fd()), 0);
            assert_eq!(b.gso_counts(), (1, 4));
        }
        let mut buf = [0u8; 256];
        for (i, &n) in sizes.iter().enumerate() {
            let got = plain.recv(&mut buf).unwrap();
            assert_eq!(&buf[..got], &vec![i as u8; n][..]);
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut rx = super::super::RecvBatch::new(4, 0, 65536, 0);
        assert_eq!(rx.recv(gro.as_raw_fd()).unwrap(), 1);
        assert_eq!(rx.segment(0), Some(100));
        let want: Vec<u8> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| vec![i as u8; n])
            .collect();
        assert_eq!(rx.msg(0), &want[..]);
    }
}
