//! Datagrams from peers, read from a relay socket with one `recvmmsg` per batch.
//!
//! One buffer set per shard, shared by all its relay sockets (their readers run
//! one at a time), so the cost is per shard, not per allocation. Each slot keeps
//! room before and after the payload for the core to turn it into ChannelData or
//! a Data indication in place (see `turn::server::PEER_HEADROOM`).

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

/// Datagrams read per call.
pub const BATCH: usize = 8;

pub struct RecvBatch {
    buf: Box<[u8]>,
    /// Bytes per slot: head + max payload + tail.
    slot: usize,
    head: usize,
    max: usize,
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
    addr: Box<[libc::sockaddr_storage]>,
}

impl RecvBatch {
    /// Slots for payloads of up to `max` bytes with `head` bytes before and
    /// `tail` after each.
    pub fn new(head: usize, max: usize, tail: usize) -> Self {
        let slot = head + max + tail;
        Self {
            buf: vec![0u8; BATCH * slot].into_boxed_slice(),
            slot,
            head,
            max,
            iov: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: plain C structs for which all-zero is valid.
            hdr: (0..BATCH)
                .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            addr: (0..BATCH)
                .map(|_| unsafe { mem::zeroed::<libc::sockaddr_storage>() })
                .collect(),
        }
    }

    /// Reads up to [`BATCH`] datagrams from `fd` without blocking. An empty
    /// socket is `WouldBlock` (so that tokio's `try_io` clears its readiness).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        for i in 0..BATCH {
            self.iov[i] = libc::iovec {
                // SAFETY: i * slot + head is within buf.
                iov_base: unsafe { base.add(i * self.slot + self.head) }.cast(),
                iov_len: self.max,
            };
            let h = &mut self.hdr[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.addr[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: the headers point into buffers this struct owns, which live
        // across the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(r as usize)
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
        // SAFETY: the kernel wrote a sockaddr of this length.
        let from = unsafe { SockAddr::new(self.addr[i], h.msg_hdr.msg_namelen) }.as_socket()?;
        let slot = &mut self.buf[i * self.slot..(i + 1) * self.slot];
        Some((from, slot, self.head, self.head + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_a_batch_with_sources_and_headroom() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = RecvBatch::new(48, 1500, 3);
        assert_eq!(
            b.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..BATCH + 2 {
            tx.send_to(&vec![i as u8; 10 + i], rx.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), BATCH);
        for i in 0..BATCH {
            let (from, slot, start, end) = b.get(i).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(start, 48);
            assert_eq!(&slot[start..end], &vec![i as u8; 10 + i][..]);
            assert!(slot.len() >= end + 3);
        }
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 2);
        // Larger than a slot: dropped, not cut short.
        let mut small = RecvBatch::new(0, 4, 0);
        tx.send_to(b"too long", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(small.recv(rx.as_raw_fd()).unwrap(), 1);
        assert!(small.get(0).is_none());
    }
}
