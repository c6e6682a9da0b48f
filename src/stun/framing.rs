//! Framing of STUN and ChannelData messages on stream transports (TCP, TLS).
//!
//! RFC 8489 §6.2.2 and RFC 8656 §12.5: on a stream, STUN messages are delimited by
//! their own length field, and ChannelData messages by theirs, padded to a multiple
//! of 4. The first two bits tell which is which (RFC 7983 demultiplexing). Anything
//! else means the peer is not speaking STUN, and the connection should be closed.

use super::channel_data::{padded_len, CHANNEL_DATA_HEADER_LEN};
use super::message::HEADER_LEN;
use super::MAGIC_COOKIE;

/// What the front of a stream buffer holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Frame {
    /// A complete STUN message of this many bytes is at the front.
    Stun(usize),
    /// A complete ChannelData message is at the front: `len` bytes to consume
    /// (including padding), of which the first `unpadded` form the message.
    ChannelData { len: usize, unpadded: usize },
    /// More bytes are needed; at least this many in total.
    NeedMore(usize),
    /// Not STUN or ChannelData: close the stream.
    Invalid,
}

/// Inspects the front of `buf` and says what frame, if any, is complete there.
///
/// A STUN header is only trusted once its magic cookie has arrived, so a stream of
/// garbage is refused after at most 8 bytes instead of waiting for a bogus length.
pub fn next_frame(buf: &[u8]) -> Frame {
    let Some(&first) = buf.first() else {
        return Frame::NeedMore(4);
    };
    match first & 0xC0 {
        0x00 => {
            let Some(cookie) = buf.get(4..8) else {
                return Frame::NeedMore(8);
            };
            if cookie != MAGIC_COOKIE.to_be_bytes() {
                return Frame::Invalid;
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if len % 4 != 0 {
                return Frame::Invalid;
            }
            let total = HEADER_LEN + len;
            if buf.len() >= total {
                Frame::Stun(total)
            } else {
                Frame::NeedMore(total)
            }
        }
        0x40 => {
            let Some(&[_, _, l0, l1]) = buf.get(..CHANNEL_DATA_HEADER_LEN) else {
                return Frame::NeedMore(CHANNEL_DATA_HEADER_LEN);
            };
            let unpadded = CHANNEL_DATA_HEADER_LEN + usize::from(u16::from_be_bytes([l0, l1]));
            let len = padded_len(unpadded);
            if buf.len() >= len {
                Frame::ChannelData { len, unpadded }
            } else {
                Frame::NeedMore(len)
            }
        }
        _ => Frame::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_frames_need_the_cookie_and_the_whole_message() {
        let mut m = vec![0x00, 0x01, 0x00, 0x04];
        assert_eq!(next_frame(&m), Frame::NeedMore(8));
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(next_frame(&m), Frame::NeedMore(24));
        m.extend_from_slice(&[0; 16]);
        assert_eq!(next_frame(&m), Frame::Stun(24));
        m.extend_from_slice(&[0xFF; 3]);
        assert_eq!(next_frame(&m), Frame::Stun(24));
    }

    #[test]
    fn channel_data_frames_include_padding() {
        assert_eq!(next_frame(&[0x40, 0x00]), Frame::NeedMore(4));
        assert_eq!(next_frame(&[0x40, 0x00, 0x00, 0x05]), Frame::NeedMore(12));
        let buf = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(
            next_frame(&buf),
            Frame::ChannelData {
                len: 12,
                unpadded: 9
            }
        );
    }

    #[test]
    fn garbage_is_invalid() {
        // "GET " frames as ChannelData on channel 0x4745 with 21536 bytes to come: the
        // framer cannot tell, which is why the stream driver insists that the first
        // frame of a connection is a STUN message.
        assert_eq!(next_frame(b"GET / HTTP/1.1\r\n"), Frame::NeedMore(21540));
        assert_eq!(next_frame(b"\x00\x01\x00\x00HTTP"), Frame::Invalid);
        assert_eq!(
            next_frame(&[0x16, 0x03, 0x01, 0x00, 0x10, 0, 0, 0]),
            Frame::Invalid
        );
        assert_eq!(next_frame(&[0xC0]), Frame::Invalid);
        assert_eq!(next_frame(&[]), Frame::NeedMore(4));
    }
}
