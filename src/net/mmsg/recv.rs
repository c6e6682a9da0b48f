//! Datagrams read with one `recvmmsg` per batch, into preallocated slots.
//!
//! The shards keep one batch per shard, shared by all its relay sockets (their
//! readers run one at a time), so the cost is per shard, not per allocation.
//! Each slot can keep room before and after the payload for the core to turn it
//! into ChannelData or a Data indication in place (see
//! `turn::server::PEER_HEADROOM`). The bench reads with slots of plain payload
//! and sends what it read on as it is ([`RecvBatch::send`]).

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

use super::send::send_all;

/// Where [`RecvBatch::send`] sends each message.
#[derive(Clone, Copy)]
pub enum Dest<'a> {
    /// The socket is connected: no address.
    Connected,
    /// Back to where each message came from.
    Source,
    /// All to one address.
    To(&'a SockAddr),
}

/// `n` slots, each `head` + up to `max` payload bytes + `tail`, with their
/// iovecs, headers and source addresses, reused for every call.
pub struct RecvBatch {
    buf: Box<[u8]>,
    /// Bytes per slot: head + max payload + tail.
    slot: usize,
    head: usize,
    max: usize,
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
    addr: Box<[libc::sockaddr_storage]>,
    /// Control data per slot: the UDP_GRO segment size of a coalesced train.
    cmsg: Box<[[u64; CMSG_WORDS]]>,
}

/// Room for the control messages of one datagram (a UDP_GRO int).
const CMSG_WORDS: usize = 8;

impl RecvBatch {
    /// `n` slots for payloads of up to `max` bytes with `head` bytes before and
    /// `tail` after each.
    pub fn new(n: usize, head: usize, max: usize, tail: usize) -> Self {
        let slot = head + max + tail;
        Self {
            buf: vec![0u8; n * slot].into_boxed_slice(),
            slot,
            head,
            max,
            iov: super::empty_iovecs(n),
            hdr: super::zeroed_headers(n),
            addr: super::zeroed_addrs(n),
            cmsg: vec![[0u64; CMSG_WORDS]; n].into_boxed_slice(),
        }
    }

    /// Datagrams read per call.
    pub fn capacity(&self) -> usize {
        self.hdr.len()
    }

    /// Reads up to [`capacity`](Self::capacity) datagrams from `fd` without
    /// blocking. An empty socket is `WouldBlock` (so that tokio's `try_io`
    /// clears its readiness).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // Every header back at its own slot and address, full length (a send
        // may have pointed them elsewhere).
        let base = self.buf.as_mut_ptr();
        for i in 0..self.capacity() {
            self.iov[i] = libc::iovec {
                // Within buf: slot i starts at i * slot.
                iov_base: base.wrapping_add(i * self.slot + self.head).cast(),
                iov_len: self.max,
            };
            let h = &mut self.hdr[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.addr[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsg[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = mem::size_of::<[u64; CMSG_WORDS]>() as _;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: each header points at its own iovec, which points at `max`
        // bytes of its own slot (head + max + tail fit in it), at its own
        // sockaddr_storage and its own control buffer, each with its full size:
        // all owned by `self`, which the `&mut self` keeps alive and unaliased
        // across the call.
        match unsafe { super::recvmmsg(fd, &mut self.hdr) }? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Like [`recv`](Self::recv), but 0 when nothing is waiting, and also for
    /// an interrupted call and for ECONNREFUSED (an ICMP error on a connected
    /// socket): for loops that poll and read until a batch comes back empty.
    pub fn recv_waiting(&mut self, fd: RawFd) -> io::Result<usize> {
        match self.recv(fd) {
            Ok(n) => Ok(n),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            },
        }
    }

    /// Datagram `i` of the last [`recv`](Self::recv): its source, the whole slot
    /// and where the payload lies in it. `None` for a truncated datagram
    /// (larger than the slot), which is dropped rather than relayed cut short.
    pub fn get(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize, usize)> {
        let h = &self.hdr[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (h.msg_len as usize).min(self.max);
        let from = super::socket_addr(self.addr[i], h.msg_hdr.msg_namelen)?;
        let slot = &mut self.buf[i * self.slot..(i + 1) * self.slot];
        Some((from, slot, self.head, self.head + len))
    }

    /// The segment size of datagram `i` of the last [`recv`](Self::recv) when
    /// it is a GRO train (several datagrams of one source coalesced by the
    /// kernel on a socket with UDP_GRO: all of this size but the last, which
    /// may be shorter); `None` for a single datagram.
    pub fn segment(&self, i: usize) -> Option<usize> {
        let h = &self.hdr[i].msg_hdr;
        if h.msg_controllen == 0 {
            return None;
        }
        // SAFETY: the header's control pointer and length are those the kernel
        // left after the last recv, into this slot's own buffer, which `self`
        // keeps alive; CMSG_FIRSTHDR/NXTHDR stay within that length, and the
        // data of a UDP_GRO message is one int (read unaligned).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    let size: libc::c_int = ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    let len = self.hdr[i].msg_len as usize;
                    return usize::try_from(size).ok().filter(|&s| s > 0 && s < len);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// The payload of message `i` of the last [`recv`](Self::recv).
    pub fn msg(&self, i: usize) -> &[u8] {
        let start = i * self.slot + self.head;
        let len = (self.hdr[i].msg_len as usize).min(self.max);
        &self.buf[start..start + len]
    }

    /// Message `i`, writable (e.g. to patch a header before echoing it).
    pub fn msg_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * self.slot + self.head;
        let len = (self.hdr[i].msg_len as usize).min(self.max);
        &mut self.buf[start..start + len]
    }

    /// Where message `i` came from (unconnected sockets).
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        super::socket_addr(self.addr[i], self.hdr[i].msg_hdr.msg_namelen)
    }

    /// Sends received messages `start..end` as they are (each with the length it
    /// was received with). Returns how many went out; the rest (a full socket
    /// buffer) are dropped, as a router would.
    pub fn send(
        &mut self,
        fd: RawFd,
        start: usize,
        end: usize,
        dest: Dest<'_>,
    ) -> io::Result<usize> {
        for i in start..end {
            let len = self.hdr[i].msg_len as usize;
            self.iov[i].iov_len = len;
            let h = &mut self.hdr[i].msg_hdr;
            h.msg_control = ptr::null_mut();
            h.msg_controllen = 0;
            match dest {
                Dest::Connected => {
                    h.msg_name = ptr::null_mut();
                    h.msg_namelen = 0;
                }
                Dest::Source => {}
                Dest::To(a) => {
                    h.msg_name = a.as_ptr() as *mut libc::c_void;
                    h.msg_namelen = a.len();
                }
            }
        }
        // SAFETY: headers start..end point at their own iovecs and slots (each
        // holds the `len` bytes it received), and at their own source address,
        // no address, or `dest`'s, which the borrow keeps alive for the call.
        unsafe { send_all(fd, &mut self.hdr[start..end]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Datagrams read per call in the test (the shards' relay readers read 8).
    const BATCH: usize = 8;

    #[test]
    fn reads_a_batch_with_sources_and_headroom() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = RecvBatch::new(BATCH, 48, 1500, 3);
        assert_eq!(
            b.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(b.recv_waiting(rx.as_raw_fd()).unwrap(), 0);
        for i in 0..BATCH + 2 {
            tx.send_to(&vec![i as u8; 10 + i], rx.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), BATCH);
        for i in 0..BATCH {
            assert_eq!(b.msg(i), &vec![i as u8; 10 + i][..]);
            assert_eq!(b.source(i), Some(tx.local_addr().unwrap()));
            let (from, slot, start, end) = b.get(i).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(start, 48);
            assert_eq!(&slot[start..end], &vec![i as u8; 10 + i][..]);
            assert!(slot.len() >= end + 3);
        }
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 2);
        // Larger than a slot: dropped, not cut short.
        let mut small = RecvBatch::new(BATCH, 0, 4, 0);
        tx.send_to(b"too long", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(small.recv(rx.as_raw_fd()).unwrap(), 1);
        assert!(small.get(0).is_none());
    }

    #[test]
    fn sends_what_it_received_back_to_the_sources() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        for i in 0..3u8 {
            client.send_to(&[i; 5], echo.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut b = RecvBatch::new(64, 0, 2048, 0);
        let n = b.recv_waiting(echo.as_raw_fd()).unwrap();
        assert_eq!(n, 3);
        b.msg_mut(1)[0] = 9;
        assert_eq!(b.send(echo.as_raw_fd(), 0, n, Dest::Source).unwrap(), 3);
        let mut buf = [0u8; 16];
        for want in [[0u8; 5], [9, 1, 1, 1, 1], [2; 5]] {
            let (len, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, echo.local_addr().unwrap());
            assert_eq!(&buf[..len], &want);
        }
    }
}
