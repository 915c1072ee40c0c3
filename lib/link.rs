//! A link: one framed, bidirectional byte pipe between two mitossh processes.
//!
//! Any task sends on a link through a cheap, cloneable [`LinkSender`]; one writer task per
//! link drains the queue and batches frames into large writes. Sending never waits: a
//! task must never stall on a slow pipe while it holds other work. What the queue holds
//! is bounded in bytes all the same: flow control bounds each stream's data (see
//! [`crate::proto::flow`]), and whatever produces data in bulk (a pump, an agent relaying
//! a child's frames) first waits for [`LinkSender::ready`], which holds it back while the
//! queue is above [`QUEUE_LIMIT`]. Reading is a plain `FramedRead` whose buffer grows with
//! the frames and is given back when idle ([`trim`]); its owner decides where each frame goes.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::proto::{Frame, FrameCodec, frame::encode_header};

/// Frames are gathered into writes of about this size.
const WRITE_BATCH: usize = 256 * 1024;

/// A link's read buffer starts this small (an idle link holds little: a master has one
/// link per host) and grows as frames need: the codec makes room for each frame's whole
/// body as soon as its length is read.
const READ_BUFFER: usize = 8 * 1024;

/// An empty read buffer larger than this is given back (see [`trim`]).
const READ_BUFFER_KEPT: usize = 64 * 1024;

/// Bytes queued on a link above which [`LinkSender::ready`] holds producers back: a few
/// large writes' worth, enough to keep the pipe busy.
pub const QUEUE_LIMIT: usize = 4 << 20;

/// What a queued frame counts for besides its payload (its header and bookkeeping).
const FRAME_COST: usize = 64;

/// The link's writer is gone; nothing more can be sent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("link closed")]
pub struct LinkClosed;

/// The sending side of a link. Cloning is cheap; the link's write half closes once every
/// clone is dropped and the queue is drained.
#[derive(Debug, Clone)]
pub struct LinkSender {
    tx: mpsc::UnboundedSender<Frame>,
    backlog: Arc<Backlog>,
}

/// Bytes queued and not yet written, and a wake-up for producers waiting for room.
#[derive(Debug, Default)]
struct Backlog {
    bytes: AtomicUsize,
    room: Notify,
}

impl Backlog {
    fn sub(&self, n: usize) {
        let before = self.bytes.fetch_sub(n, Ordering::SeqCst);
        if before >= QUEUE_LIMIT && before - n < QUEUE_LIMIT {
            self.room.notify_waiters();
        }
    }
}

fn cost(frame: &Frame) -> usize {
    frame.data.len() + FRAME_COST
}

impl LinkSender {
    /// Queues `frame`. Frames from one sender leave in the order they were queued.
    pub fn send(&self, frame: Frame) -> Result<(), LinkClosed> {
        let n = cost(&frame);
        self.backlog.bytes.fetch_add(n, Ordering::SeqCst);
        self.tx.send(frame).map_err(|_| {
            self.backlog.sub(n);
            LinkClosed
        })
    }

    /// Waits while more than [`QUEUE_LIMIT`] bytes are queued (or returns at once when the
    /// link is closed: sending then fails).
    pub async fn ready(&self) {
        loop {
            let room = self.backlog.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.backlog.bytes.load(Ordering::SeqCst) < QUEUE_LIMIT || self.tx.is_closed() {
                return;
            }
            tokio::select! {
                _ = room => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Bytes queued and not yet written (payloads plus a little per frame).
    pub fn queued(&self) -> usize {
        self.backlog.bytes.load(Ordering::SeqCst)
    }

    /// True once the writer has stopped (the pipe broke or the link was shut down).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the writer has stopped.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The reading side of a link.
pub type LinkReader<R> = FramedRead<R, FrameCodec>;

/// Wraps `r` as a link reader.
pub fn reader<R: AsyncRead>(r: R) -> LinkReader<R> {
    FramedRead::with_capacity(r, FrameCodec::default(), READ_BUFFER)
}

/// Gives back a large read buffer once it is empty, so that a link that carried a burst
/// holds no more than an idle one. Call after each frame; cheap when there is nothing to do.
pub fn trim<R>(reader: &mut LinkReader<R>) {
    let buffer = reader.read_buffer_mut();
    if buffer.is_empty() && buffer.capacity() > READ_BUFFER_KEPT {
        *buffer = BytesMut::with_capacity(READ_BUFFER);
    }
}

/// Starts the writer task for `w`. The task ends with `Ok` once every sender is dropped and
/// the queue is written out, or with the first write error.
pub fn spawn_writer<W>(w: W) -> (LinkSender, JoinHandle<std::io::Result<()>>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let task = tokio::spawn(write_frames(w, rx, backlog.clone()));
    (LinkSender { tx, backlog }, task)
}

async fn write_frames<W>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    backlog: Arc<Backlog>,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    // Headers are encoded into one buffer; payloads go out as they are, gathered with
    // writev, so no byte of data is copied in user space on its way out.
    let mut headers = BytesMut::with_capacity(1024);
    let mut batch: Vec<(std::ops::Range<usize>, Bytes)> = Vec::new();
    while let Some(frame) = rx.recv().await {
        let mut costs = cost(&frame);
        let mut size = queue(frame, &mut headers, &mut batch);
        while size < WRITE_BATCH && batch.len() < MAX_IOVECS / 2 {
            match rx.try_recv() {
                Ok(frame) => {
                    costs += cost(&frame);
                    size += queue(frame, &mut headers, &mut batch);
                }
                Err(_) => break,
            }
        }
        let result = write_batch(&mut w, &headers, &batch).await;
        headers.clear();
        batch.clear();
        backlog.sub(costs);
        if let Err(e) = result {
            rx.close();
            backlog.room.notify_waiters();
            return Err(e);
        }
    }
    w.flush().await?;
    w.shutdown().await
}

/// iovecs per writev, well below the kernel's IOV_MAX of 1024.
const MAX_IOVECS: usize = 256;

/// Appends a frame's header to `headers` and remembers where it is, with its payload.
fn queue(
    frame: Frame,
    headers: &mut BytesMut,
    batch: &mut Vec<(std::ops::Range<usize>, Bytes)>,
) -> usize {
    let start = headers.len();
    if let Err(e) = encode_header(&frame, headers) {
        // Only a bug can produce an unencodable frame; dropping it keeps the link usable.
        tracing::error!("dropping a frame that cannot be encoded: {e}");
        return 0;
    }
    let size = headers.len() - start + frame.data.len();
    batch.push((start..headers.len(), frame.data));
    size
}

/// Writes every header and payload of `batch`, in order, coping with partial writes.
async fn write_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    headers: &BytesMut,
    batch: &[(std::ops::Range<usize>, Bytes)],
) -> std::io::Result<()> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(batch.len() * 2);
    for (range, data) in batch {
        parts.push(&headers[range.clone()]);
        if !data.is_empty() {
            parts.push(data);
        }
    }
    let mut first = 0;
    let mut offset = 0;
    while first < parts.len() {
        let slices: Vec<IoSlice> = std::iter::once(IoSlice::new(&parts[first][offset..]))
            .chain(parts[first + 1..].iter().map(|p| IoSlice::new(p)))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Skip what was written.
        while first < parts.len() && n >= parts[first].len() - offset {
            n -= parts[first].len() - offset;
            first += 1;
            offset = 0;
        }
        offset += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Fd, Message};
    use bytes::Bytes;
    use futures::StreamExt;

    #[tokio::test]
    async fn frames_arrive_in_order_and_close_propagates() {
        let (a, b) = tokio::io::duplex(4096);
        let (tx, writer) = spawn_writer(a);
        let mut rx = reader(b);
        for i in 0..100u32 {
            let data = Bytes::from(vec![i as u8; (i as usize) * 100]);
            tx.send(Frame::with_data(
                i,
                Message::Data {
                    stream: i,
                    fd: Fd::Stdout,
                },
                data,
            ))
            .unwrap();
        }
        drop(tx);
        for i in 0..100u32 {
            let f = rx.next().await.unwrap().unwrap();
            assert_eq!(f.ctx, i);
            assert_eq!(f.data.len(), i as usize * 100);
            assert!(f.data.iter().all(|b| *b == i as u8));
        }
        assert!(
            rx.next().await.is_none(),
            "EOF after the last sender is dropped"
        );
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_large_read_buffer_is_given_back_once_empty_and_not_before() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (tx, _writer) = spawn_writer(a);
        let mut rx = reader(b);
        assert!(rx.read_buffer().capacity() <= READ_BUFFER);
        // As after a burst: a large buffer, part of a frame in it.
        rx.read_buffer_mut().reserve(256 * 1024);
        rx.read_buffer_mut().extend_from_slice(&[0, 0]);
        trim(&mut rx);
        assert!(
            rx.read_buffer().capacity() > READ_BUFFER_KEPT,
            "not while it holds bytes"
        );
        rx.read_buffer_mut().clear();
        trim(&mut rx);
        assert!(rx.read_buffer().capacity() <= READ_BUFFER);
        // A large frame still arrives whole, and the reader goes on.
        let data = Message::Data {
            stream: 1,
            fd: Fd::Stdout,
        };
        let big = Bytes::from(vec![3u8; 200 * 1024]);
        tx.send(Frame::with_data(1, data.clone(), big)).unwrap();
        tx.send(Frame::with_data(1, data, Bytes::from_static(b"after")))
            .unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap().data.len(), 200 * 1024);
        trim(&mut rx);
        assert_eq!(&rx.next().await.unwrap().unwrap().data[..], b"after");
    }

    #[tokio::test]
    async fn producers_wait_while_the_queue_is_full() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (tx, _writer) = spawn_writer(a);
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        let frame = || {
            Frame::with_data(
                1,
                Message::Data {
                    stream: 1,
                    fd: Fd::Stdout,
                },
                chunk.clone(),
            )
        };
        // Nobody reads `b`: the queue fills past the limit, and `ready` holds back.
        while tx.queued() < QUEUE_LIMIT {
            tx.send(frame()).unwrap();
        }
        use futures::FutureExt;
        assert!(
            tx.ready().now_or_never().is_none(),
            "ready() must wait while the queue is full"
        );
        // Reading lets it go on.
        let mut rx = reader(b);
        let reading = async {
            loop {
                rx.next().await.unwrap().unwrap();
            }
        };
        let ready = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::select! {
                _ = tx.ready() => {}
                _ = reading => {}
            }
        });
        assert!(ready.await.is_ok(), "ready() returns once the queue drains");
        assert!(tx.queued() < QUEUE_LIMIT);
    }

    #[tokio::test]
    async fn a_broken_pipe_closes_the_sender() {
        let (a, b) = tokio::io::duplex(64);
        let (tx, writer) = spawn_writer(a);
        drop(b);
        tx.send(Frame::new(0, Message::Shutdown)).unwrap();
        assert!(writer.await.unwrap().is_err());
        assert!(tx.is_closed());
        assert_eq!(tx.send(Frame::new(0, Message::Shutdown)), Err(LinkClosed));
    }
}
