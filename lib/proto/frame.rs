//! Frames: the unit of every mitossh link.
//!
//! On the wire a frame is a 4-byte big-endian body length, then the body: a postcard-encoded
//! header `(context id, message)` followed, for `Data` messages, by the payload exactly as it
//! was read from a process. Payloads are never re-encoded. Decoding slices a large payload
//! out of the read buffer without copying, and copies a small one out: a slice would keep
//! the whole buffer (hundreds of KiB) alive for as long as its few bytes wait.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use super::message::{ContextId, Message};

/// Largest frame body accepted or produced. A peer announcing more is broken or hostile,
/// and its link is dropped.
pub const MAX_FRAME: usize = 1 << 20;

/// Largest payload of one `Data` frame. Small enough that a fat transfer interleaves finely
/// with other streams on the same link, large enough to keep per-frame costs negligible.
pub const MAX_DATA: usize = 256 * 1024;

/// Payloads shorter than this are copied out of the read buffer when decoded. Longer ones
/// are sliced out of it: a quarter of the largest payload or more, so a frame pins at most
/// a few times its own size however a peer mixes its frames.
pub(crate) const COPY_BELOW: usize = MAX_DATA / 4;

/// One frame: which context it concerns, what it says and, for data, the bytes.
///
/// `ctx` is the far endpoint of the exchange: on the way down the tree it names the
/// destination context, on the way up the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub ctx: ContextId,
    pub msg: Message,
    pub data: Bytes,
}

impl Frame {
    /// A frame without payload.
    pub fn new(ctx: ContextId, msg: Message) -> Frame {
        Frame {
            ctx,
            msg,
            data: Bytes::new(),
        }
    }

    /// A frame carrying `data` as its payload.
    pub fn with_data(ctx: ContextId, msg: Message, data: Bytes) -> Frame {
        Frame { ctx, msg, data }
    }
}

/// Why a link stopped making sense.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(postcard::Error),
    #[error("frame exceeds the {MAX_FRAME}-byte limit")]
    TooLarge,
}

/// Encoder and decoder of [`Frame`]s, for `FramedRead`/`FramedWrite` or direct use.
#[derive(Debug)]
pub struct FrameCodec {
    lengths: LengthDelimitedCodec,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            lengths: LengthDelimitedCodec::builder()
                .length_field_type::<u32>()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let body = match self.lengths.decode(src) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e)
                if e.get_ref()
                    .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) =>
            {
                return Err(FrameError::TooLarge);
            }
            Err(e) => return Err(FrameError::Io(e)),
        };
        decode_body(body.freeze()).map(Some)
    }
}

/// Decodes a frame's body (everything after its length).
pub(crate) fn decode_body(body: Bytes) -> Result<Frame, FrameError> {
    let ((ctx, msg), rest) =
        postcard::take_from_bytes::<(ContextId, Message)>(&body).map_err(FrameError::Malformed)?;
    let header_len = body.len() - rest.len();
    let data = if rest.len() < COPY_BELOW {
        Bytes::copy_from_slice(rest)
    } else {
        body.slice(header_len..)
    };
    Ok(Frame { ctx, msg, data })
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_into(&frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_into(frame, dst)
    }
}

/// Appends the wire form of `frame` to `dst`. On error `dst` is left as it was.
pub fn encode_into(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    encode_header(frame, dst)?;
    dst.extend_from_slice(&frame.data);
    Ok(())
}

/// Appends the length and header of `frame` to `dst`: everything but the payload, which
/// the caller sends right after (with a vectored write, say). On error `dst` is unchanged.
pub(crate) fn encode_header(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    encode_header_for(frame, frame.data.len(), dst)
}

/// Like [`encode_header`], for a payload of `payload` bytes that travels apart from the
/// frame (spliced from a pipe right after the header).
pub(crate) fn encode_header_for(
    frame: &Frame,
    payload: usize,
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let header = postcard::to_stdvec(&(frame.ctx, &frame.msg)).map_err(FrameError::Malformed)?;
    let body = header.len() + payload;
    if body > MAX_FRAME {
        return Err(FrameError::TooLarge);
    }
    dst.reserve(4 + header.len());
    dst.put_u32(body as u32);
    dst.extend_from_slice(&header);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::*;
    use proptest::prelude::*;

    fn roundtrip(frame: Frame) -> Frame {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(&frame, &mut buf).unwrap();
        let mut codec = FrameCodec::default();
        let out = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "decoder must consume exactly one frame");
        out
    }

    #[test]
    fn data_frame_roundtrips_with_payload_intact() {
        let payload: Vec<u8> = (0..=255u8).collect();
        let frame = Frame::with_data(
            7,
            Message::Data {
                stream: 42,
                fd: Fd::Stdout,
            },
            Bytes::from(payload.clone()),
        );
        let out = roundtrip(frame.clone());
        assert_eq!(out, frame);
        assert_eq!(&out.data[..], &payload[..]);
    }

    #[test]
    fn control_frames_roundtrip() {
        let frames = [
            Frame::new(
                0,
                Message::Exit {
                    stream: 1,
                    status: ExitStatus::Signal {
                        signal: "TERM".into(),
                        core_dumped: false,
                    },
                },
            ),
            Frame::new(
                3,
                Message::Credit {
                    stream: 9,
                    fd: Fd::Stdin,
                    bytes: 1 << 20,
                },
            ),
            Frame::new(1, Message::Shutdown),
        ];
        for f in frames {
            assert_eq!(roundtrip(f.clone()), f);
        }
    }

    #[test]
    fn partial_input_waits_for_more() {
        let frame = Frame::with_data(
            1,
            Message::Data {
                stream: 1,
                fd: Fd::Stdin,
            },
            Bytes::from_static(b"hello"),
        );
        let mut full = BytesMut::new();
        FrameCodec::default().encode(&frame, &mut full).unwrap();
        let mut codec = FrameCodec::default();
        let mut partial = BytesMut::new();
        for (i, byte) in full.iter().enumerate() {
            partial.put_u8(*byte);
            let got = codec.decode(&mut partial).unwrap();
            if i + 1 < full.len() {
                assert!(got.is_none(), "decoded early at byte {i}");
            } else {
                assert_eq!(got.unwrap(), frame);
            }
        }
    }

    #[test]
    fn small_payloads_do_not_pin_the_read_buffer() {
        let mut buf = BytesMut::new();
        for n in [1, COPY_BELOW] {
            let frame = Frame::with_data(
                1,
                Message::Data {
                    stream: 1,
                    fd: Fd::Stdout,
                },
                Bytes::from(vec![b'x'; n]),
            );
            FrameCodec::default().encode(&frame, &mut buf).unwrap();
        }
        let (base, capacity) = (buf.as_ptr() as usize, buf.capacity());
        let within = |b: &Bytes| {
            let p = b.as_ptr() as usize;
            p >= base && p < base + capacity
        };
        let mut codec = FrameCodec::default();
        let small = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(small.data.len(), 1);
        assert!(!within(&small.data), "a 1-byte payload is copied out");
        let large = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(large.data.len(), COPY_BELOW);
        assert!(within(&large.data), "a large payload is a slice");
    }

    #[test]
    fn oversized_announcement_is_an_error_not_an_allocation() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        buf.put_slice(b"xx");
        let err = FrameCodec::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge), "{err}");
    }

    #[test]
    fn oversized_payload_is_refused_on_encode() {
        let frame = Frame::with_data(
            0,
            Message::Data {
                stream: 0,
                fd: Fd::Stdout,
            },
            Bytes::from(vec![0u8; MAX_FRAME + 1]),
        );
        let mut buf = BytesMut::from(&b"keep"[..]);
        let err = FrameCodec::default().encode(frame, &mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge));
        assert_eq!(
            &buf[..],
            b"keep",
            "earlier bytes must survive a failed encode"
        );
    }

    #[test]
    fn garbage_body_is_malformed() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.put_slice(&[0xff, 0xff, 0xff]);
        let err = FrameCodec::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    proptest! {
        // Whatever arrives on a link, the decoder returns frames or an error; it never panics
        // and never claims more than MAX_FRAME.
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            'outer: for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => prop_assert!(frame.data.len() <= MAX_FRAME),
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
        }

        // A valid frame with arbitrary bytes spliced after its header still decodes to a
        // frame or an error: a length prefix that lies must not hang or panic.
        #[test]
        fn mutated_frames_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<usize>(), value in any::<u8>()) {
            let frame = Frame::with_data(5, Message::Data { stream: 3, fd: Fd::Stderr }, Bytes::from(payload));
            let mut buf = BytesMut::new();
            FrameCodec::default().encode(frame, &mut buf).unwrap();
            let i = flip % buf.len();
            buf[i] = value;
            let mut codec = FrameCodec::default();
            let _ = codec.decode(&mut buf);
        }
    }
}
