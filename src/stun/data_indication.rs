//! The Data indication towards a client (RFC 8656 §11.3), written in place: the
//! header, XOR-PEER-ADDRESS and the DATA attribute header go into headroom before
//! a payload that is already in the buffer, so relayed data is never copied.

use std::net::SocketAddr;

use super::attr;
use super::channel_data::padded_len;
use super::message::{message_type, HEADER_LEN};
use super::{Class, Method, TransactionId, MAGIC_COOKIE};

/// Writes a Data indication header, XOR-PEER-ADDRESS and the DATA attribute header
/// into the headroom before `buf[start..]`; returns where the message starts.
/// `tid` should be random, as RFC 8656 §11.3 asks (the core draws it from its
/// seeded RNG).
pub fn write_data_indication_prefix(
    buf: &mut [u8],
    start: usize,
    len: usize,
    peer: SocketAddr,
    tid: TransactionId,
) -> usize {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let prefix = HEADER_LEN + 4 + addr_len + 4;
    let first = start - prefix;
    let msg_len = (prefix - HEADER_LEN + padded_len(len)) as u16;
    let b = &mut buf[first..start];
    b[0..2].copy_from_slice(&message_type(Method::Data, Class::Indication).to_be_bytes());
    b[2..4].copy_from_slice(&msg_len.to_be_bytes());
    b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b[8..20].copy_from_slice(&tid.0);
    b[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    b[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    let (value, _) = attr::address_value(&peer, Some(&tid));
    b[24..24 + addr_len].copy_from_slice(&value[..addr_len]);
    let d = 24 + addr_len;
    b[d..d + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    b[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
    first
}
