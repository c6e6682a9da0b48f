//! Batched datagram I/O with `recvmmsg` and `sendmmsg`, over preallocated buffers:
//! nothing is allocated per packet.
//!
//! The load side deliberately sends with `sendmmsg` (one datagram per message) and
//! not with UDP GSO: a GSO train would reach a server that enables UDP_GRO as one
//! coalesced unit, which real clients (browsers) never produce, and would flatter
//! such servers against those that read datagram by datagram.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use socket2::SockAddr;

/// Where [`Batch::send`] sends each message.
#[derive(Clone, Copy)]
pub enum Dest<'a> {
    /// The socket is connected: no address.
    Connected,
    /// Back to where each message came from.
    Source,
    /// All to one address.
    To(&'a SockAddr),
}

/// `n` message slots of `slot` bytes each, with their iovecs, headers and source
/// addresses, reused for every call.
pub struct Batch {
    buf: Box<[u8]>,
    slot: usize,
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
    addr: Box<[libc::sockaddr_storage]>,
}

// The raw pointers point into the boxes the struct owns; moving the struct moves
// no heap memory.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new(n: usize, slot: usize) -> Self {
        let mut b = Self {
            buf: vec![0u8; n * slot].into_boxed_slice(),
            slot,
            iov: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0
                };
                n
            ]
            .into_boxed_slice(),
            // SAFETY: mmsghdr and sockaddr_storage are plain C structs for which
            // all-zero is a valid value.
            hdr: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            addr: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
        };
        b.reset(n);
        b
    }

    pub fn capacity(&self) -> usize {
        self.hdr.len()
    }

    /// Points every header back at its own slot and address, full length.
    fn reset(&mut self, n: usize) {
        let base = self.buf.as_mut_ptr();
        for i in 0..n {
            self.iov[i] = libc::iovec {
                // SAFETY: i * slot is within buf.
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: self.slot,
            };
            let h = &mut self.hdr[i].msg_hdr;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut self.addr[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_control = ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdr[i].msg_len = 0;
        }
    }

    /// Receives up to `capacity()` datagrams without blocking; 0 when none is
    /// waiting. ECONNREFUSED (an ICMP error on a connected socket) also gives 0.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.capacity();
        self.reset(n);
        // SAFETY: the headers point at buffers and addresses that this struct owns
        // and that outlive the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdr.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }

    /// Message `i` of the last [`recv`](Self::recv).
    pub fn msg(&self, i: usize) -> &[u8] {
        let len = (self.hdr[i].msg_len as usize).min(self.slot);
        &self.buf[i * self.slot..i * self.slot + len]
    }

    /// Message `i`, writable (e.g. to patch a header before echoing it).
    pub fn msg_mut(&mut self, i: usize) -> &mut [u8] {
        let len = (self.hdr[i].msg_len as usize).min(self.slot);
        &mut self.buf[i * self.slot..i * self.slot + len]
    }

    /// Where message `i` came from (unconnected sockets).
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        let len = self.hdr[i].msg_hdr.msg_namelen;
        // SAFETY: the kernel wrote a sockaddr of this length and family.
        unsafe { SockAddr::new(self.addr[i], len) }.as_socket()
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
        send_all(fd, &mut self.hdr[start..end])
    }
}

/// `sendmmsg` until everything is out or the socket is full.
fn send_all(fd: RawFd, hdr: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let mut done = 0;
    while done < hdr.len() {
        // SAFETY: the headers point at live buffers owned by the caller.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                hdr[done..].as_mut_ptr(),
                (hdr.len() - done) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused => Ok(done),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        if r == 0 {
            break;
        }
        done += r as usize;
    }
    Ok(done)
}

/// Sends `k` copies of one frame on a connected socket with one `sendmmsg`: the
/// headers all point at the same bytes, so nothing is copied.
pub struct Copies {
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
}

unsafe impl Send for Copies {}

impl Copies {
    pub fn new(max: usize) -> Self {
        Self {
            iov: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0
                };
                max
            ]
            .into_boxed_slice(),
            // SAFETY: all-zero mmsghdr is valid.
            hdr: (0..max).map(|_| unsafe { mem::zeroed() }).collect(),
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
        send_all(fd, &mut self.hdr[..k])
    }
}

/// A nonblocking UDP socket on `bind` with large buffers (so that a burst is not
/// dropped by the load side itself).
pub fn udp_socket(bind: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(bind);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    set_buffers(&s);
    s.bind(&bind.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// 4 MiB send and receive buffers, forced past the sysctl limits when we may.
pub fn set_buffers(s: &impl AsRawFd) {
    let fd = s.as_raw_fd();
    let size: libc::c_int = 4 << 20;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: setsockopt with a c_int value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`ppoll`, so the
/// timeout can be shorter than a millisecond). Returns the number ready.
pub fn wait(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds is a valid slice of pollfd; ts lives across the call.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            ptr::null(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

pub fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
