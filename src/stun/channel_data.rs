//! ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel number, length)
//! followed by the application data, padded to a multiple of 4 on stream transports.

use bytes::{BufMut, BytesMut};

/// Size of the ChannelData header.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// The channel numbers a client may bind. RFC 8656 §12 narrowed the range to
/// 0x4000–0x4FFF; RFC 5766 allowed 0x4000–0x7FFF, and RFC 5766 clients (coturn's
/// own tools, libre/restund, pion before v2) still pick numbers above 0x4FFF. A
/// server loses nothing by accepting them: the first two bits still mark
/// ChannelData, and only the client's own demultiplexing (RFC 7983) cares about
/// the narrower range. So the server accepts the RFC 5766 range, as coturn and
/// pion do.
pub const CHANNEL_MIN: u16 = 0x4000;
/// The last channel number RFC 8656 allows.
pub const CHANNEL_MAX_RFC8656: u16 = 0x4FFF;
/// The last channel number accepted (RFC 5766 range).
pub const CHANNEL_MAX: u16 = 0x7FFF;

/// Why a buffer is not a valid ChannelData message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelDataError {
    #[error("shorter than the 4-byte ChannelData header")]
    TooShort,
    #[error("the first two bits are not 0b01")]
    NotChannelData,
    #[error("the length field runs past the end of the buffer")]
    LengthOverrun,
    #[error("more trailing bytes than padding allows")]
    TrailingBytes,
}

/// A borrowed view of one ChannelData message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub payload: &'a [u8],
}

/// Whether the first byte marks a ChannelData message (top bits 0b01, RFC 7983).
pub fn looks_like_channel_data(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xC0 == 0x40)
}

impl<'a> ChannelData<'a> {
    /// Parses exactly one ChannelData message from `buf`: the payload must fit, and at
    /// most the padding to the next multiple of 4 may follow it (over UDP padding is
    /// optional; over streams the framer hands over the padded length). The channel
    /// number is not range-checked here: 0x5000–0x7FFF is reserved, and the server
    /// decides what to do with it.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ChannelDataError> {
        let (&[c0, c1, l0, l1], rest) = buf
            .split_first_chunk::<4>()
            .ok_or(ChannelDataError::TooShort)?;
        if c0 & 0xC0 != 0x40 {
            return Err(ChannelDataError::NotChannelData);
        }
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let payload = rest.get(..len).ok_or(ChannelDataError::LengthOverrun)?;
        if rest.len() > padded_len(len) {
            return Err(ChannelDataError::TrailingBytes);
        }
        Ok(ChannelData {
            channel: u16::from_be_bytes([c0, c1]),
            payload,
        })
    }

    /// Appends this message to `out`, padded to 4 bytes when `pad` (stream transports).
    pub fn write(&self, out: &mut BytesMut, pad: bool) {
        out.put_slice(&header(self.channel, self.payload.len()));
        out.put_slice(self.payload);
        if pad {
            out.put_bytes(0, padded_len(self.payload.len()) - self.payload.len());
        }
    }
}

/// `len` rounded up to a multiple of 4.
pub const fn padded_len(len: usize) -> usize {
    (len + 3) & !3
}

/// The 4-byte ChannelData header for `channel` and a payload of `len` bytes. Used to
/// prepend a header in place, in headroom the driver left before a received payload.
pub fn header(channel: u16, len: usize) -> [u8; 4] {
    let c = channel.to_be_bytes();
    let l = (len as u16).to_be_bytes();
    [c[0], c[1], l[0], l[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_padding() {
        for len in 0..9 {
            let payload: Vec<u8> = (0..len as u8).collect();
            for pad in [false, true] {
                let mut out = BytesMut::new();
                ChannelData {
                    channel: 0x4001,
                    payload: &payload,
                }
                .write(&mut out, pad);
                assert_eq!(out.len(), if pad { 4 + padded_len(len) } else { 4 + len });
                let cd = ChannelData::parse(&out).unwrap();
                assert_eq!(cd.channel, 0x4001);
                assert_eq!(cd.payload, &payload[..]);
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            ChannelData::parse(&[0x40, 0]),
            Err(ChannelDataError::TooShort)
        );
        assert_eq!(
            ChannelData::parse(&[0x00, 0, 0, 0]),
            Err(ChannelDataError::NotChannelData)
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 5, 1, 2]),
            Err(ChannelDataError::LengthOverrun)
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 1, 1, 0, 0, 0, 9]),
            Err(ChannelDataError::TrailingBytes)
        );
    }
}
