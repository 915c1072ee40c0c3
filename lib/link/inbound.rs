//! Reading frames from a link that is a descriptor of our own, leaving large payloads in
//! the descriptor so that their receiver can splice them to where they go.
//!
//! A frame's length and header are read into memory (exactly the header's bytes when a
//! large data frame is likely to follow, so that its payload stays in the kernel) and
//! handed out as an [`Incoming`] before its payload is read: the owner judges the header
//! (the [`crate::guard`] charges the whole payload on arrival) and only then moves the
//! payload, with [`LinkIn::splice_payload`] into a pipe, or into memory with
//! [`LinkIn::read_payload`]. The wire format is the same as [`crate::proto::frame`]'s.

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use bytes::{Buf, Bytes, BytesMut};

use crate::proto::frame::decode_body;
use crate::proto::{ContextId, Fd, Frame, FrameError, MAX_FRAME, Message};
use crate::sys::fdio::{FdIo, Spliced, Watch};

use super::pace::ReadPacer;

/// Data payloads at least this long are left in the link for splicing; shorter ones
/// are read with their header.
pub(crate) const SPLICE_MIN: usize = 8 * 1024;

/// How much is read at once while frames are small.
const READ_AHEAD: usize = 4096;

/// The shortest header a data frame can have: one byte each for its context, the
/// message, the stream and the descriptor.
const DATA_HEADER_MIN: usize = 4;

/// A frame as it arrives: its header, the part of its payload already read, and how many
/// payload bytes are still in the link (to be moved before the next frame is read).
#[derive(Debug)]
pub(crate) struct Incoming {
    pub frame: Frame,
    pub unread: usize,
}

#[cfg(test)]
impl Incoming {
    /// The whole payload's length.
    pub(crate) fn payload_len(&self) -> usize {
        self.frame.data.len() + self.unread
    }
}

/// The reading side of a descriptor link.
#[derive(Debug)]
pub(crate) struct LinkIn {
    /// Off the event loop while the reader sleeps for a payload's rest.
    io: Watch,
    /// How long to leave a large payload arriving before splicing it on.
    pacer: ReadPacer,
    buf: BytesMut,
    /// Payload bytes of the last frame still in the descriptor.
    unread: usize,
    /// Read only what the next header needs: the last frame was spliced, so the next is
    /// likely large too.
    exact: bool,
}

/// What the bytes read so far make.
enum Parsed {
    Frame(Incoming),
    /// Read at least this many more; `ahead`: more may be read at once.
    Need {
        more: usize,
        ahead: bool,
    },
}

impl LinkIn {
    /// Reads frames from `io`, starting with `already` (bytes read before frames began).
    pub(crate) fn new(io: FdIo, already: &[u8]) -> LinkIn {
        LinkIn {
            pacer: ReadPacer::new(io.get_ref()),
            io: Watch::new(io),
            buf: BytesMut::from(already),
            unread: 0,
            exact: false,
        }
    }

    /// The next frame; `None` at the end of the link between frames. Whatever is left of
    /// the previous frame's payload is read and dropped first.
    pub(crate) async fn next(&mut self) -> Option<Result<Incoming, FrameError>> {
        if self.unread > 0 {
            debug_assert!(false, "a payload was left unread");
            if let Err(e) = self.read_payload().await {
                return Some(Err(e));
            }
        }
        loop {
            let (more, ahead) = match self.parse() {
                Ok(Parsed::Frame(incoming)) => return Some(Ok(incoming)),
                Ok(Parsed::Need { more, ahead }) => (more, ahead),
                Err(e) => return Some(Err(e)),
            };
            let max = if ahead && !self.exact {
                more.max(READ_AHEAD)
            } else {
                more
            };
            let io = match self.io.watched() {
                Ok(io) => io,
                Err(e) => return Some(Err(e.into())),
            };
            match io.read_into(&mut self.buf, max).await {
                Ok(0) if self.buf.is_empty() => return None,
                Ok(0) => return Some(Err(truncated())),
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    /// Moves up to `max` of the payload's unread bytes into the pipe `to` without ever
    /// waiting for room there; waits only for the link. `Full`: `to` took nothing.
    pub(crate) async fn splice_payload(
        &mut self,
        to: BorrowedFd<'_>,
        max: usize,
    ) -> Result<Spliced, FrameError> {
        let max = max.min(self.unread);
        if max == 0 {
            return Ok(Spliced::Moved(0));
        }
        self.pace(max).await?;
        // What came while it slept is moved without watching the link again first.
        let spliced = match self.io.try_splice_to(to, max)? {
            Some(spliced) => spliced,
            None => self.io.watched()?.splice_to(to, max).await?,
        };
        match spliced {
            Spliced::Moved(n) => {
                self.unread -= n;
                Ok(Spliced::Moved(n))
            }
            Spliced::End => Err(truncated()),
            Spliced::Full => Ok(Spliced::Full),
        }
    }

    /// With part of `want` payload bytes in the link, waits for the rest (see
    /// [`ReadPacer`]) unwatched, when that is worth a sleep.
    async fn pace(&mut self, want: usize) -> Result<(), FrameError> {
        // Only what the link can hold can come while the reader sleeps: a sender stopped
        // by a full link is no rate (a pipe never grown, a socket: not paced at all).
        let Some(room) = self.pacer.room() else {
            return Ok(());
        };
        let want = want.min(room);
        let here = self.io.pending()?;
        if here == 0 || here >= want {
            return Ok(());
        }
        let missing = want - here;
        let Some(sleep) = self.pacer.wait_for(missing) else {
            return Ok(());
        };
        self.io.unwatch();
        let io = &self.io;
        // All that came counts for the rate (the next frames' bytes are the same sender's).
        let arrived = || {
            let came = io.pending()?.saturating_sub(here);
            Ok((came, came >= missing))
        };
        self.pacer.sleep(sleep, arrived).await?;
        Ok(())
    }

    /// Reads the payload's unread bytes into memory.
    pub(crate) async fn read_payload(&mut self) -> Result<Bytes, FrameError> {
        let mut data = BytesMut::with_capacity(self.unread);
        while self.unread > 0 {
            match self.io.watched()?.read_into(&mut data, self.unread).await? {
                0 => return Err(truncated()),
                n => self.unread -= n,
            }
        }
        Ok(data.freeze())
    }

    fn parse(&mut self) -> Result<Parsed, FrameError> {
        if self.buf.len() < 4 {
            let more = 4 - self.buf.len();
            return Ok(Parsed::Need {
                more: if self.exact {
                    more + DATA_HEADER_MIN
                } else {
                    more
                },
                ahead: true,
            });
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge);
        }
        let have = self.buf.len() - 4;
        if have >= len {
            self.buf.advance(4);
            let body = self.buf.split_to(len).freeze();
            self.exact = false;
            let frame = decode_body(body)?;
            if self.buf.is_empty() && self.buf.capacity() > 4 * READ_AHEAD {
                self.buf = BytesMut::new(); // an idle link keeps no buffer
            }
            return Ok(Parsed::Frame(Incoming { frame, unread: 0 }));
        }
        let whole = Parsed::Need {
            more: len - have,
            ahead: true,
        };
        if len < SPLICE_MIN + DATA_HEADER_MIN {
            return Ok(whole);
        }
        match scan_data_header(&self.buf[4..]) {
            Scan::NotData => Ok(whole),
            Scan::Incomplete(more) => Ok(Parsed::Need {
                more: more.min(len - have),
                ahead: false,
            }),
            Scan::Complete(_) => {
                let body = &self.buf[4..];
                let ((ctx, msg), rest) = postcard::take_from_bytes::<(ContextId, Message)>(body)
                    .map_err(FrameError::Malformed)?;
                let header = body.len() - rest.len();
                if !matches!(msg, Message::Data { .. }) || len - header < SPLICE_MIN {
                    return Ok(whole);
                }
                let data = Bytes::copy_from_slice(rest);
                self.buf.clear();
                self.unread = len - have;
                self.exact = true;
                let frame = Frame { ctx, msg, data };
                let unread = self.unread;
                Ok(Parsed::Frame(Incoming { frame, unread }))
            }
        }
    }
}

fn truncated() -> FrameError {
    FrameError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the link ended in the middle of a frame",
    ))
}

/// What the start of a frame's body says about a data header.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Not a data frame.
    NotData,
    /// A data header, at least this many bytes short.
    Incomplete(usize),
    /// A data header of this length.
    Complete(usize),
}

/// Walks postcard's encoding of `(ctx, Message::Data { stream, fd })`: varints for the
/// context, the variant and the stream, one byte for the descriptor.
fn scan_data_header(body: &[u8]) -> Scan {
    let Some(pos) = varint_end(body, 0) else {
        return Scan::Incomplete(DATA_HEADER_MIN);
    };
    let Some(&variant) = body.get(pos) else {
        return Scan::Incomplete(3);
    };
    if variant != data_variant() {
        return Scan::NotData;
    }
    let Some(pos) = varint_end(body, pos + 1) else {
        return Scan::Incomplete(2);
    };
    if pos >= body.len() {
        return Scan::Incomplete(1);
    }
    Scan::Complete(pos + 1)
}

/// Where the varint starting at `at` ends, if all of it is there.
fn varint_end(b: &[u8], at: usize) -> Option<usize> {
    let tail = b.get(at..)?;
    tail.iter()
        .take(5)
        .position(|x| x & 0x80 == 0)
        .map(|i| at + i + 1)
}

/// The byte postcard writes for `Message::Data`'s variant.
fn data_variant() -> u8 {
    static VARIANT: OnceLock<u8> = OnceLock::new();
    *VARIANT.get_or_init(|| {
        let probe = Message::Data {
            stream: 0,
            fd: Fd::Stdin,
        };
        let bytes = postcard::to_stdvec(&(0 as ContextId, probe)).expect("encodable");
        bytes[1]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::encode_into;
    use crate::sys::splice;
    use proptest::prelude::*;
    use std::os::fd::AsFd;

    fn data(ctx: ContextId, stream: u32, n: usize) -> Frame {
        let payload: Vec<u8> = (0..n).map(|i| (i * 7 + stream as usize) as u8).collect();
        Frame::with_data(
            ctx,
            Message::Data {
                stream,
                fd: Fd::Stdout,
            },
            Bytes::from(payload),
        )
    }

    #[test]
    fn the_data_variant_is_one_byte() {
        let bytes = postcard::to_stdvec(&(
            0 as ContextId,
            Message::Data {
                stream: 0,
                fd: Fd::Stdin,
            },
        ))
        .unwrap();
        assert_eq!(bytes.len(), DATA_HEADER_MIN);
        assert!(data_variant() < 0x80);
    }

    proptest! {
        // The scanner agrees with postcard on every data header, at every cut.
        #[test]
        fn the_scanner_finds_data_headers_as_postcard_writes_them(ctx in any::<u32>(), stream in any::<u32>(), fd in 0..3u8) {
            let fd = [Fd::Stdin, Fd::Stdout, Fd::Stderr][fd as usize];
            let f = Frame::new(ctx, Message::Data { stream, fd });
            let bytes = postcard::to_stdvec(&(f.ctx, &f.msg)).unwrap();
            for cut in 0..bytes.len() {
                match scan_data_header(&bytes[..cut]) {
                    Scan::Incomplete(more) => prop_assert!(cut + more <= bytes.len()),
                    other => prop_assert!(false, "{:?} at {}", other, cut),
                }
            }
            prop_assert_eq!(scan_data_header(&bytes), Scan::Complete(bytes.len()));
        }

        #[test]
        fn other_messages_are_not_data(ctx in any::<u32>(), stream in any::<u32>(), bytes in any::<u32>()) {
            let f = Frame::new(ctx, Message::Credit { stream, fd: Fd::Stdin, bytes });
            let enc = postcard::to_stdvec(&(f.ctx, &f.msg)).unwrap();
            prop_assert_eq!(scan_data_header(&enc), Scan::NotData);
        }
    }

    /// Frames written into a pipe come out of a `LinkIn` whole, large payloads spliced
    /// into a second pipe, small ones in memory, in order.
    #[tokio::test]
    async fn large_payloads_stay_in_the_kernel_and_everything_arrives_in_order() {
        // A blocking writer at one end, as a process writing to us.
        let (read, write) = nix::unistd::pipe().unwrap();
        let out = splice::pipe().unwrap();
        let frames = [
            data(1, 3, 10),
            data(1, 3, SPLICE_MIN - 1),
            data(300, 200_000, SPLICE_MIN),
            Frame::new(
                1,
                Message::Credit {
                    stream: 3,
                    fd: Fd::Stdin,
                    bytes: 9,
                },
            ),
            data(1, 3, 256 * 1024),
            data(1, 3, 100_000),
            data(1, 3, 0),
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            encode_into(f, &mut wire).unwrap();
        }
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(write);
            std::io::Write::write_all(&mut f, &wire).unwrap();
        });
        let mut reader = LinkIn::new(FdIo::new(read).unwrap(), &[]);
        let sink = FdIo::new(out.read).unwrap();
        let mut after_splice = false;
        for want in &frames {
            let mut got = reader.next().await.unwrap().unwrap();
            let spliced = got.unread > 0;
            assert_eq!(got.frame.msg, want.msg);
            assert_eq!(got.frame.ctx, want.ctx);
            assert_eq!(got.payload_len(), want.data.len());
            if got.unread > 0 {
                assert!(want.data.len() >= SPLICE_MIN);
                // Read ahead only while frames were small; right after a large one
                // the header is read alone.
                let ahead = got.frame.data.len();
                assert!(ahead < READ_AHEAD, "{ahead} bytes read ahead");
                assert!(
                    !after_splice || ahead == 0,
                    "{ahead} bytes read after a splice"
                );
                let mut spliced = BytesMut::from(&got.frame.data[..]);
                while reader.unread > 0 {
                    let n = match reader.splice_payload(out.write.as_fd(), 50_000).await {
                        Ok(Spliced::Moved(n)) => n,
                        other => panic!("{other:?}"),
                    };
                    let until = spliced.len() + n;
                    while spliced.len() < until {
                        let want = until - spliced.len();
                        sink.read_into(&mut spliced, want).await.unwrap();
                    }
                }
                got.frame.data = spliced.freeze();
                got.unread = 0;
            }
            after_splice = spliced;
            assert!(got.frame.data == want.data, "payload of {:?}", want.msg);
        }
        assert!(reader.next().await.is_none());
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn a_link_that_ends_inside_a_frame_is_an_error() {
        let link = splice::pipe().unwrap();
        let mut wire = BytesMut::new();
        encode_into(&data(1, 1, 50_000), &mut wire).unwrap();
        splice::write(link.write.as_fd(), &wire[..1000]).unwrap();
        drop(link.write);
        let mut reader = LinkIn::new(FdIo::new(link.read).unwrap(), &[]);
        let got = reader.next().await.unwrap().unwrap();
        assert_eq!(got.payload_len(), 50_000);
        assert!(reader.read_payload().await.is_err());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_anything_is_read() {
        let link = splice::pipe().unwrap();
        splice::write(link.write.as_fd(), &u32::MAX.to_be_bytes()).unwrap();
        let mut reader = LinkIn::new(FdIo::new(link.read).unwrap(), &[]);
        assert!(matches!(
            reader.next().await,
            Some(Err(FrameError::TooLarge))
        ));
    }
}
