//! Fuzz the TCP/TLS stream framing the way the server's stream driver does it.
//!
//! The driver (`stream_connection` in src/net/shard.rs) keeps its buffering inline in
//! async code, so this target reproduces its buffer discipline around
//! `stun::framing::next_frame` rather than calling it:
//!
//! - one `BytesMut` per connection, created with a capacity of 4096;
//! - before every read: if less than 2048 bytes of spare capacity remain,
//!   `reserve(4096)` (which compacts the consumed prefix away or grows);
//! - a read fills at most the spare capacity, and the kernel may return fewer bytes:
//!   here the fuzzer chooses how many (the split points);
//! - after each read, frame until `NeedMore`: the first frame of a connection must
//!   be STUN (a first byte whose top bits are not 00 closes it, and so does a
//!   ChannelData frame first), `Invalid` closes it, and each frame is consumed with
//!   `advance`.
//!
//! Input layout: byte 0 is `n` (0..=31), bytes 1..=2n are `n` big-endian u16 read
//! sizes (cycled; a size of 0 means "as much as fits"), the rest is the stream.
//!
//! Properties:
//! - the frames handed to the server, whether the connection closes, and the bytes
//!   left unconsumed are the same as framing the whole stream in one go (a plain
//!   slice, no buffer management);
//! - every read makes progress (the spare capacity is never zero);
//! - the buffer never holds more than one maximal frame plus one read, and its
//!   capacity stays bounded (no growth without limit from compaction misses).
#![no_main]

use bytes::{Buf, BytesMut};
use ferroturn::stun::framing::{next_frame, Frame};
use ferroturn::stun::message::HEADER_LEN;
use libfuzzer_sys::fuzz_target;

/// The driver's constants (src/net/shard.rs, stream_connection).
const INITIAL_CAPACITY: usize = 4096;
const LOW_WATER: usize = 2048;
const GROW: usize = 4096;

/// The longest frame: a STUN message, 20 bytes of header and a body of at most
/// 65532 bytes (its length is a multiple of 4); a ChannelData message is at most 4 +
/// 65535 bytes, padded to 65540.
const MAX_FRAME: usize = HEADER_LEN + 65532;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    /// The connection was closed for bad framing (rather than by the end of input).
    closed: bool,
    /// Bytes received but not consumed by a frame, plus bytes never read.
    leftover: Vec<u8>,
}

/// What one frame step decides, with the driver's first-message rule.
enum Step {
    Frame(usize),
    NeedMore,
    Close,
}

fn step(buf: &[u8], first: bool) -> Step {
    if first && buf.first().is_some_and(|b| b & 0xC0 != 0) {
        return Step::Close;
    }
    match next_frame(buf) {
        Frame::Stun(n) => {
            assert!(n <= buf.len());
            Step::Frame(n)
        }
        Frame::ChannelData { len, .. } if !first => {
            assert!(len <= buf.len());
            Step::Frame(len)
        }
        Frame::NeedMore(k) => {
            assert!(
                k > buf.len() && k <= MAX_FRAME,
                "NeedMore({k}) of {}",
                buf.len()
            );
            Step::NeedMore
        }
        Frame::ChannelData { .. } | Frame::Invalid => Step::Close,
    }
}

/// The reference: the whole stream as one slice.
fn one_shot(stream: &[u8]) -> Outcome {
    let mut frames = Vec::new();
    let mut at = 0;
    let mut first = true;
    loop {
        match step(&stream[at..], first) {
            Step::Frame(n) => {
                frames.push(stream[at..at + n].to_vec());
                at += n;
                first = false;
            }
            Step::NeedMore => {
                return Outcome {
                    frames,
                    closed: false,
                    leftover: stream[at..].to_vec(),
                }
            }
            Step::Close => {
                return Outcome {
                    frames,
                    closed: true,
                    leftover: stream[at..].to_vec(),
                }
            }
        }
    }
}

/// The driver's read loop, reads of the sizes given (cycled).
fn driver(stream: &[u8], sizes: &[u16]) -> Outcome {
    let mut buf = BytesMut::with_capacity(INITIAL_CAPACITY);
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut first = true;
    let mut reads = 0usize;
    let mut largest_capacity = buf.capacity();
    while fed < stream.len() {
        if buf.capacity() - buf.len() < LOW_WATER {
            buf.reserve(GROW);
        }
        let spare = buf.capacity() - buf.len();
        assert!(spare >= LOW_WATER, "only {spare} bytes to read into");
        let want = match sizes.get(reads % sizes.len().max(1)) {
            Some(&0) | None => spare,
            Some(&s) => usize::from(s),
        };
        reads += 1;
        let n = want.min(spare).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        assert!(
            buf.len() <= MAX_FRAME + spare,
            "{} bytes held after a read of {n}",
            buf.len()
        );
        largest_capacity = largest_capacity.max(buf.capacity());
        loop {
            match step(&buf, first) {
                Step::Frame(len) => {
                    frames.push(buf[..len].to_vec());
                    buf.advance(len);
                    first = false;
                }
                Step::NeedMore => break,
                Step::Close => {
                    let mut leftover = buf.to_vec();
                    leftover.extend_from_slice(&stream[fed..]);
                    return Outcome {
                        frames,
                        closed: true,
                        leftover,
                    };
                }
            }
        }
    }
    // Growth is by GROW at a time when less than LOW_WATER is free; with the
    // compaction `reserve` does, the capacity stays within a few growth steps of the
    // largest frame that was ever pending.
    assert!(
        largest_capacity <= 2 * (MAX_FRAME + GROW),
        "buffer capacity grew to {largest_capacity}"
    );
    Outcome {
        frames,
        closed: false,
        leftover: buf.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 32).min(rest.len() / 2);
    let (size_bytes, stream) = rest.split_at(2 * n);
    let sizes: Vec<u16> = size_bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();

    let expected = one_shot(stream);
    let got = driver(stream, &sizes);
    assert_eq!(expected, got, "the driver's buffering changes the framing");
    // Byte-at-a-time reads and reads as large as fit give the same too.
    assert_eq!(expected, driver(stream, &[1]));
    assert_eq!(expected, driver(stream, &[]));
    // Nothing is lost or invented: frames and leftover make up the stream.
    let total: usize =
        expected.frames.iter().map(Vec::len).sum::<usize>() + expected.leftover.len();
    assert_eq!(total, stream.len());
});
