//! Batched datagram I/O with `recvmmsg` and `sendmmsg`, over preallocated
//! buffers: nothing is allocated per packet. The shards use it for relay sockets
//! and for datagrams to clients and peers; `ferroturn bench` for its load
//! generator and its echo/forwarder ceilings.
//!
//! - [`RecvBatch`]: slots a `recvmmsg` fills, with room before and after each
//!   payload if asked (the core frames peers' data in place); what was received
//!   can be sent on as it is ([`RecvBatch::send`], for the bench's echo).
//! - [`SendBatch`]: a queue of copied datagrams, each with its destination, an
//!   optional source address (IP_PKTINFO / IPV6_PKTINFO) and a key naming the
//!   socket it leaves from, sent with one `sendmmsg` per socket.
//! - [`Copies`]: `k` copies of one frame on a connected socket, one `sendmmsg`.
//! - [`wait`] / [`pollfd`]: `ppoll` for the bench's blocking loops.
//!
//! quinn-udp (which the UDP listeners read with) sends one destination per call
//! (GSO needs one destination), so this is the one place that speaks
//! `sendmmsg` and `recvmmsg` directly, and, with [`crate::net::sockets`], the only
//! module with `unsafe` code. Both calls go through the two `unsafe fn` below,
//! handed headers that point into buffers the batch owns.
// The one place of its folder with FFI (system calls libc has no safe
// wrapper for); every block says why it is sound.
#![allow(unsafe_code)]

mod recv;
mod send;

pub use recv::{Dest, RecvBatch};
pub use send::{classify_send_error, Copies, SendBatch, SendFailure, CAPACITY, SLOT};

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

/// `n` headers, all zero.
fn zeroed_headers(n: usize) -> Box<[libc::mmsghdr]> {
    // SAFETY: mmsghdr is a plain C struct for which all-zero is a valid value
    // (null pointers, zero lengths).
    (0..n).map(|_| unsafe { mem::zeroed() }).collect()
}

/// `n` socket addresses, all zero.
fn zeroed_addrs(n: usize) -> Box<[libc::sockaddr_storage]> {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero is valid.
    (0..n).map(|_| unsafe { mem::zeroed() }).collect()
}

/// `n` empty iovecs.
fn empty_iovecs(n: usize) -> Box<[libc::iovec]> {
    vec![
        libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0
        };
        n
    ]
    .into_boxed_slice()
}

/// The address the kernel wrote into `storage` (`len` bytes of it); `None` for
/// a family other than IPv4 and IPv6.
fn socket_addr(storage: libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: a sockaddr_storage is initialised throughout (it starts zeroed and
    // the kernel writes a sockaddr of `len` bytes into it), so any length up to
    // its size reads initialised bytes; socket2 checks the family.
    unsafe { SockAddr::new(storage, len) }.as_socket()
}

/// One `recvmmsg` call without blocking: how many messages were received.
///
/// # Safety
///
/// Every header must point at an iovec array, buffers and (if set) a name
/// buffer that are valid for writes of the lengths they give, and that stay
/// alive and unaliased for the call.
unsafe fn recvmmsg(fd: RawFd, hdr: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: upheld by the caller; the slice gives the pointer and the count.
    let r = unsafe {
        libc::recvmmsg(
            fd,
            hdr.as_mut_ptr(),
            hdr.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// One `sendmmsg` call without blocking: how many messages went out.
///
/// # Safety
///
/// Every header must point at an iovec array, buffers, a name and (if set)
/// control data that are valid for reads of the lengths they give, and that stay
/// alive for the call.
unsafe fn sendmmsg(fd: RawFd, hdr: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: upheld by the caller; the slice gives the pointer and the count.
    let r = unsafe {
        libc::sendmmsg(
            fd,
            hdr.as_mut_ptr(),
            hdr.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
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

/// A [`wait`] entry for reading `fd`.
pub fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
