//! The PROXY protocol (HAProxy's, versions 1 and 2) on TCP and TLS listeners,
//! for ferroturn behind an L4 load balancer: a connection from a source in
//! `connections.proxy-protocol-from` must open with a PROXY header, and the
//! client address it carries becomes the connection's client address
//! everywhere (the 5-tuple, XOR-MAPPED-ADDRESS, quotas, rate limits, the
//! connection caps, usage records, logs). Connections from any other source
//! are never read for a header: a PROXY header from them is just bytes that are
//! not STUN (closed as `not_stun`) or not TLS (a failed handshake), so an
//! untrusted client cannot choose its own address.
//!
//! The header is read byte-exactly before TLS or STUN, so what follows it is
//! untouched: version 1 up to its CRLF (at most 107 bytes), version 2 its 16
//! fixed bytes and the length they give (at most [`MAX_V2_LEN`]). Parsing is
//! `ppp`'s.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest version 1 header (the specification's bound, CRLF included).
const MAX_V1: usize = 107;
/// The longest version 2 address block and TLVs accepted: the addresses take
/// at most 216 bytes (two UNIX paths); TLVs beyond a few hundred bytes are
/// not something a load balancer sends.
pub const MAX_V2_LEN: usize = 512;
/// The 12-byte version 2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn bad(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Reads a PROXY header from `stream`: the client address it carries, or
/// `None` for a header without one (v2 LOCAL, v1 UNKNOWN: the balancer's own
/// health checks), which keeps the balancer's address. An error when the
/// bytes are no valid header.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<SocketAddr>> {
    let mut buf = vec![0u8; 6];
    stream.read_exact(&mut buf).await?;
    if buf == b"PROXY " {
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= MAX_V1 {
                return Err(bad("PROXY v1 header longer than 107 bytes"));
            }
            buf.push(stream.read_u8().await?);
        }
    } else if buf[..] == V2_SIGNATURE[..6] {
        buf.resize(16, 0);
        stream.read_exact(&mut buf[6..]).await?;
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > MAX_V2_LEN {
            return Err(bad("PROXY v2 header too long"));
        }
        buf.resize(16 + len, 0);
        stream.read_exact(&mut buf[16..]).await?;
    } else {
        return Err(bad("no PROXY header from a proxy-protocol-from source"));
    }
    source(&buf)
}

/// The source address of a complete header in `bytes`.
fn source(bytes: &[u8]) -> io::Result<Option<SocketAddr>> {
    use ppp::{v1, v2, HeaderResult};
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => match (h.command, h.addresses) {
            (v2::Command::Local, _) => Ok(None),
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
            }
            // UNIX or unspecified sources have no address to use.
            (v2::Command::Proxy, _) => Ok(None),
        },
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => Err(bad("malformed PROXY header")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let mut input = bytes;
        let r = read_header(&mut input).await;
        (r, input.to_vec())
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[tokio::test]
    async fn version_1_and_2_give_the_client_and_leave_the_rest() {
        let (r, rest) = read(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 3478\r\n\x00\x01rest").await;
        assert_eq!(r.unwrap(), Some("198.51.100.7:40000".parse().unwrap()));
        assert_eq!(rest, b"\x00\x01rest");
        let (r, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n").await;
        assert_eq!(r.unwrap(), Some("[2001:db8::7]:40000".parse().unwrap()));
        let (r, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r.unwrap(), None);

        let mut a = vec![198, 51, 100, 7, 192, 0, 2, 1];
        a.extend_from_slice(&40000u16.to_be_bytes());
        a.extend_from_slice(&3478u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &a);
        bytes.extend_from_slice(b"\x16\x03");
        let (r, rest) = read(&bytes).await;
        assert_eq!(r.unwrap(), Some("198.51.100.7:40000".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03");
        // LOCAL: the balancer's own connection.
        let (r, _) = read(&v2(0, 0x00, &[])).await;
        assert_eq!(r.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bytes in [
            &b"\x00\x01\x00\x00\x21\x12\xa4\x42"[..],
            b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 3478",
            &[b'P'; 200][..],
        ] {
            let (r, _) = read(bytes).await;
            assert!(r.is_err(), "{bytes:?}");
        }
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(read(&long).await.0.is_err());
        let mut v1 = b"PROXY ".to_vec();
        v1.extend_from_slice(&[b'1'; 150]);
        assert!(read(&v1).await.0.is_err());
    }
}
