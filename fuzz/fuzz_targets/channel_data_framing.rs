//! Fuzz ChannelData parsing and the stream framer (`stun::framing::next_frame`).
//!
//! Input layout: byte 0 is `n` (0..=15 split sizes), bytes 1..=n are the split sizes,
//! the rest is the stream. The same stream is framed twice: handed over whole, and
//! delivered in pieces of those sizes (cycled) the way a TCP read loop would see it.
//!
//! Properties:
//! - a frame never claims more bytes than the buffer holds; `NeedMore(k)` always asks
//!   for more than the buffer holds;
//! - a STUN frame passes every header check of `Message::parse`; a ChannelData frame
//!   parses with `ChannelData::parse`, padded and unpadded, to the same payload;
//! - whole vs in pieces: the same sequence of frames, the same final verdict, and the
//!   same leftover bytes;
//! - `ChannelData::parse` on the raw input: the payload is a sub-slice, and writing it
//!   back (padded or not) re-parses to the same message.
#![no_main]

use bytes::BytesMut;
use ferroturn::stun::channel_data::{padded_len, ChannelData, CHANNEL_DATA_HEADER_LEN};
use ferroturn::stun::framing::{next_frame, Frame};
use ferroturn::stun::message::HEADER_LEN;
use ferroturn::stun::{Message, ParseError};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Framed {
    Stun(Vec<u8>),
    ChannelData(Vec<u8>),
    Invalid,
}

/// Looks at the front of `buf`; on a complete frame checks it and returns it with the
/// number of bytes it consumes. `Err(true)` for Invalid, `Err(false)` for NeedMore.
fn step(buf: &[u8]) -> Result<(Framed, usize), bool> {
    match next_frame(buf) {
        Frame::Stun(n) => {
            assert!(
                n >= HEADER_LEN && n <= buf.len(),
                "Stun({n}) of {}",
                buf.len()
            );
            assert_eq!((n - HEADER_LEN) % 4, 0);
            let frame = &buf[..n];
            // The framer checked the header; only attribute-level errors may remain.
            if let Err(e) = Message::parse(frame) {
                assert!(
                    matches!(
                        e,
                        ParseError::AttributeOverrun | ParseError::BadIntegrityAttribute
                    ),
                    "framed STUN message fails a header check: {e:?}"
                );
            }
            Ok((Framed::Stun(frame.to_vec()), n))
        }
        Frame::ChannelData { len, unpadded } => {
            assert!(len <= buf.len(), "ChannelData len {len} of {}", buf.len());
            assert!(unpadded >= CHANNEL_DATA_HEADER_LEN && unpadded <= len);
            assert_eq!(len, padded_len(unpadded));
            let a = ChannelData::parse(&buf[..unpadded]).expect("unpadded frame parses");
            let b = ChannelData::parse(&buf[..len]).expect("padded frame parses");
            assert_eq!(a, b);
            assert_eq!(a.payload.len(), unpadded - CHANNEL_DATA_HEADER_LEN);
            Ok((Framed::ChannelData(buf[..len].to_vec()), len))
        }
        Frame::NeedMore(k) => {
            assert!(k > buf.len(), "NeedMore({k}) with {} bytes held", buf.len());
            Err(false)
        }
        Frame::Invalid => Err(true),
    }
}

/// Frames `stream` delivered in pieces of `sizes` (cycled; an empty list means whole).
/// Returns the frames (ending with `Invalid` if the stream went bad) and the bytes not
/// consumed by any frame.
fn frame_stream(stream: &[u8], sizes: &[u8]) -> (Vec<Framed>, Vec<u8>) {
    let mut frames = Vec::new();
    let mut rx: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    while fed < stream.len() {
        let n = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) => usize::from(s) + 1,
            None => stream.len(),
        };
        i += 1;
        let end = (fed + n).min(stream.len());
        rx.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            match step(&rx) {
                Ok((f, n)) => {
                    frames.push(f);
                    rx.drain(..n);
                }
                Err(false) => break,
                Err(true) => {
                    // The connection closes here: what was not consumed is what the
                    // reader holds plus what never got read.
                    frames.push(Framed::Invalid);
                    rx.extend_from_slice(&stream[fed..]);
                    return (frames, rx);
                }
            }
        }
    }
    (frames, rx)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(cd) = ChannelData::parse(data) {
        let (p, d) = (cd.payload.as_ptr() as usize, data.as_ptr() as usize);
        assert_eq!(p, d + CHANNEL_DATA_HEADER_LEN);
        assert_eq!(cd.channel & 0xC000, 0x4000);
        assert!(data.len() <= CHANNEL_DATA_HEADER_LEN + padded_len(cd.payload.len()));
        for pad in [false, true] {
            let mut out = BytesMut::new();
            cd.write(&mut out, pad);
            assert_eq!(ChannelData::parse(&out), Ok(cd));
        }
    }

    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    let whole = frame_stream(stream, &[]);
    let pieces = frame_stream(stream, sizes);
    assert_eq!(whole, pieces, "framing depends on how the stream was split");
    let one_by_one = frame_stream(stream, &[0]);
    assert_eq!(whole, one_by_one, "framing a byte at a time differs");
});
