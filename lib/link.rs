//! A link: one framed, bidirectional byte pipe between two mitossh processes.
//!
//! Any task sends on a link through a cheap, cloneable [`LinkSender`]; one writer task per
//! link drains the queue and batches frames into large writes. Sending never waits: a
//! task must never stall on a slow pipe while it holds other work. What the queue holds
//! is bounded in bytes all the same: flow control bounds each stream's data (see
//! [`crate::proto::flow`]), and whatever produces data in bulk (a pump, an agent relaying
//! a child's frames) first waits for [`LinkSender::ready`], which holds it back while the
//! queue is above [`QUEUE_LIMIT`]. A copying reader is a plain `FramedRead` whose buffer
//! grows with the frames and is given back when idle ([`trim`]); its owner decides where
//! each frame goes.
//!
//! A link whose far end is a descriptor of our own (ssh's pipes, an agent's stdio) moves
//! payloads without copying them: a pump splices a stream's bytes into a [`Staging`] pipe
//! and queues the frame with its length; the writer writes the header and splices the
//! payload after it. The reading side is [`inbound::LinkIn`], which reads headers and
//! leaves large payloads in the descriptor for their receiver to splice. Other links (the
//! shims' sockets, child links) read with a plain `FramedRead` ([`reader`]).

pub(crate) mod inbound;
mod pace;

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::proto::frame::encode_header_for;
use crate::proto::{Frame, FrameCodec};
use crate::sys::fdio::FdIo;
use crate::sys::splice::{self, Pipe};

/// Frames are gathered into writes of about this size.
const WRITE_BATCH: usize = 256 * 1024;

/// A link's read buffer starts this small (an idle link holds little: a master has one
/// link per host) and grows as frames need: the codec makes room for each frame's whole
/// body as soon as its length is read.
const READ_BUFFER: usize = 8 * 1024;

/// An empty read buffer larger than this is given back (see [`trim`]).
const READ_BUFFER_KEPT: usize = 64 * 1024;

/// Initial read buffer of a link of control messages; it grows for a larger one.
const CONTROL_READ_BUFFER: usize = 512;

/// Bytes queued on a link above which [`LinkSender::ready`] holds producers back: a few
/// large writes' worth, enough to keep the pipe busy.
pub(crate) const QUEUE_LIMIT: usize = 4 << 20;

/// What a queued frame counts for besides its payload (its header and bookkeeping).
const FRAME_COST: usize = 64;

/// The link's writer is gone; nothing more can be sent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("link closed")]
pub(crate) struct LinkClosed;

/// A stream's pipe of payloads on their way to a link: its pump splices bytes in, the
/// link's writer splices them out right after their frame's header. Shared by the two,
/// and closed when both are done with it.
#[derive(Debug)]
pub(crate) struct Staging {
    pipe: Pipe,
    /// What the pipe holds at most.
    capacity: usize,
    /// Bytes put in and not yet taken out.
    held: AtomicUsize,
    /// Woken when the writer takes bytes out: a pump waits on it while the pipe is full.
    drained: Notify,
}

impl Staging {
    pub(crate) fn new() -> std::io::Result<Arc<Staging>> {
        let pipe = splice::pipe()?;
        let capacity = crate::sys::pipesize::capacity(&pipe.write).unwrap_or(64 * 1024);
        Ok(Arc::new(Staging {
            pipe,
            capacity,
            held: AtomicUsize::new(0),
            drained: Notify::new(),
        }))
    }

    /// Where a pump splices bytes in.
    pub(crate) fn input(&self) -> BorrowedFd<'_> {
        self.pipe.write.as_fd()
    }

    /// `n` more bytes were spliced in: a frame's payload, made ready to be queued.
    pub(crate) fn staged(self: &Arc<Self>, n: usize) -> Staged {
        self.held.fetch_add(n, Ordering::SeqCst);
        Staged {
            pipe: self.clone(),
            len: n,
        }
    }

    /// Bytes in the pipe that no frame has taken out yet.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits until the writer has taken out half of what the pipe can hold, so that a
    /// pump that found it full tops it up in a few large frames, not in one small frame
    /// for each 32 KiB that ssh takes from the link (each frame costs a header, a splice
    /// in and one out, and a wake-up downstream). Only frames already queued are held,
    /// so this ends while their link is open. It waits for one take at least (unless
    /// nothing is held): a pipe found full may hold less than its capacity in bytes,
    /// each small buffer taking a slot of its own.
    pub(crate) async fn half_drained(&self) {
        let mut took = false;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let held = self.held();
            if held == 0 || (took && held <= self.capacity / 2) {
                return;
            }
            drained.await;
            took = true;
        }
    }
}

/// A payload waiting in a [`Staging`] pipe: the next `len` bytes there.
#[derive(Debug)]
pub(crate) struct Staged {
    pipe: Arc<Staging>,
    len: usize,
}

impl Staged {
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// A frame in a link's queue, its payload in `frame.data` or staged in a pipe.
#[derive(Debug)]
struct Outgoing {
    frame: Frame,
    staged: Option<Staged>,
}

impl Outgoing {
    fn payload(&self) -> usize {
        self.frame.data.len() + self.staged.as_ref().map_or(0, Staged::len)
    }

    fn cost(&self) -> usize {
        self.payload() + FRAME_COST
    }
}

/// The sending side of a link. Cloning is cheap; the link's write half closes once every
/// clone is dropped and the queue is drained.
#[derive(Debug, Clone)]
pub(crate) struct LinkSender {
    tx: mpsc::UnboundedSender<Outgoing>,
    backlog: Arc<Backlog>,
    /// The writer splices staged payloads (its far end is a descriptor).
    splices: bool,
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

impl LinkSender {
    /// Queues `frame`. Frames from one sender leave in the order they were queued.
    pub(crate) fn send(&self, frame: Frame) -> Result<(), LinkClosed> {
        self.queue(Outgoing {
            frame,
            staged: None,
        })
    }

    /// Queues `frame` (without data of its own) with `staged` as its payload.
    pub(crate) fn send_staged(&self, frame: Frame, staged: Staged) -> Result<(), LinkClosed> {
        self.queue(Outgoing {
            frame,
            staged: Some(staged),
        })
    }

    fn queue(&self, out: Outgoing) -> Result<(), LinkClosed> {
        let n = out.cost();
        self.backlog.bytes.fetch_add(n, Ordering::SeqCst);
        self.tx.send(out).map_err(|_| {
            self.backlog.sub(n);
            LinkClosed
        })
    }

    /// Whether payloads staged in a pipe are welcome (the writer splices them).
    pub(crate) fn splices(&self) -> bool {
        self.splices
    }

    /// Waits while more than [`QUEUE_LIMIT`] bytes are queued (or returns at once when the
    /// link is closed: sending then fails).
    pub(crate) async fn ready(&self) {
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
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.backlog.bytes.load(Ordering::SeqCst)
    }

    /// True once the writer has stopped (the pipe broke or the link was shut down).
    #[cfg(test)]
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the writer has stopped.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The reading side of a link that copies everything (see [`inbound`] for the other).
pub(crate) type LinkReader<R> = FramedRead<R, FrameCodec>;

/// Wraps `r` as a link reader.
pub(crate) fn reader<R: AsyncRead>(r: R) -> LinkReader<R> {
    FramedRead::with_capacity(r, FrameCodec::default(), READ_BUFFER)
}

/// Gives back a large read buffer once it is empty, so that a link that carried a burst
/// holds no more than an idle one. Call after each frame; cheap when there is nothing to do.
pub(crate) fn trim<R>(reader: &mut LinkReader<R>) {
    let buffer = reader.read_buffer_mut();
    if buffer.is_empty() && buffer.capacity() > READ_BUFFER_KEPT {
        *buffer = BytesMut::with_capacity(READ_BUFFER);
    }
}

/// Wraps `r` as the reader of a link that carries only control messages (a shim's): it
/// holds next to nothing while its session runs.
pub(crate) fn control_reader<R: AsyncRead>(r: R) -> LinkReader<R> {
    FramedRead::with_capacity(r, FrameCodec::default(), CONTROL_READ_BUFFER)
}

/// Where a writer task writes.
enum Output {
    /// A descriptor of our own: staged payloads are spliced into it.
    Fd(FdIo),
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

/// Starts the writer task for `w`. The task ends with `Ok` once every sender is dropped and
/// the queue is written out, or with the first write error.
pub(crate) fn spawn_writer<W>(w: W) -> (LinkSender, JoinHandle<std::io::Result<()>>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    start_writer(Output::Stream(Box::new(w)), None)
}

/// Starts the writer task for a descriptor of our own; it splices staged payloads.
pub(crate) fn spawn_fd_writer(fd: FdIo) -> (LinkSender, JoinHandle<std::io::Result<()>>) {
    start_writer(Output::Fd(fd), None)
}

/// Holds a link's first write back until it carries an answer, so that it leaves as one
/// packet. An agent's first reply is its ready line, its hello and the first stream's
/// `Opened`, then that stream's output and exit a few milliseconds later: written as they
/// come, the later ones wait for the first packet's acknowledgement, a whole round trip,
/// since sshd leaves Nagle's algorithm on for sessions without a terminal.
pub(crate) struct Cork {
    /// Written first, in the same write (the agent's ready line). Not empty.
    pub prefix: Bytes,
    /// A frame for which the first write goes at once.
    pub answers: fn(&crate::proto::Message) -> bool,
    /// The first write goes after this at the latest.
    pub max: std::time::Duration,
}

/// [`spawn_fd_writer`] with its first write held by `cork`.
pub(crate) fn spawn_corked_fd_writer(
    fd: FdIo,
    cork: Cork,
) -> (LinkSender, JoinHandle<std::io::Result<()>>) {
    start_writer(Output::Fd(fd), Some(cork))
}

fn start_writer(out: Output, cork: Option<Cork>) -> (LinkSender, JoinHandle<std::io::Result<()>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let splices = matches!(out, Output::Fd(_));
    let task = tokio::spawn(write_frames(out, rx, backlog.clone(), cork));
    let sender = LinkSender {
        tx,
        backlog,
        splices,
    };
    (sender, task)
}

async fn write_frames(
    mut out: Output,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    backlog: Arc<Backlog>,
    mut cork: Option<Cork>,
) -> std::io::Result<()> {
    // Headers are encoded into one buffer; payloads in memory go out as they are,
    // gathered with writev, and staged ones are spliced: no byte of data is copied in
    // user space on its way out.
    let mut headers = BytesMut::new();
    let mut batch: Vec<(std::ops::Range<usize>, Bytes)> = Vec::new();
    let mut pacer = match &out {
        Output::Fd(fd) => pace::Pacer::new(fd),
        Output::Stream(_) => None,
    };
    loop {
        let gathered = match cork.take() {
            Some(cork) => gather_corked(cork, &mut rx, &mut headers, &mut batch).await,
            None => match rx.recv().await {
                Some(first) => gather(first, &mut rx, &mut headers, &mut batch),
                None => break,
            },
        };
        let mut result = write_batch(&mut out, &headers, &batch).await;
        if let (Ok(()), Some(staged)) = (&result, gathered.staged) {
            result = splice_staged(&mut out, staged, pacer.as_mut()).await;
        }
        headers.clear();
        batch.clear();
        // An idle link keeps no buffers.
        if headers.capacity() > 16 * 1024 {
            headers = BytesMut::new();
        }
        backlog.sub(gathered.costs);
        if let Err(e) = result {
            rx.close();
            backlog.room.notify_waiters();
            return Err(e);
        }
    }
    match &mut out {
        Output::Fd(fd) => {
            fd.flush().await?;
            fd.shutdown().await
        }
        Output::Stream(w) => {
            w.flush().await?;
            w.shutdown().await
        }
    }
}

/// One write's worth of queued frames.
struct Gathered {
    /// What they counted for in the backlog.
    costs: usize,
    /// The last one's payload, staged in a pipe: spliced right after the write.
    staged: Option<Staged>,
}

/// `first` and whatever else is queued, up to one batch.
fn gather(
    first: Outgoing,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    headers: &mut BytesMut,
    batch: &mut Vec<(std::ops::Range<usize>, Bytes)>,
) -> Gathered {
    let mut gathered = Gathered {
        costs: 0,
        staged: None,
    };
    let mut size = 0;
    add(first, headers, batch, &mut size, &mut gathered);
    take_queued(rx, headers, batch, &mut size, &mut gathered);
    gathered
}

/// The first write of a corked link: its prefix, then frames as they are queued until
/// one answers, the batch is full, or the cork's time is up.
async fn gather_corked(
    cork: Cork,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    headers: &mut BytesMut,
    batch: &mut Vec<(std::ops::Range<usize>, Bytes)>,
) -> Gathered {
    headers.extend_from_slice(&cork.prefix);
    batch.push((0..cork.prefix.len(), Bytes::new()));
    let mut gathered = Gathered {
        costs: 0,
        staged: None,
    };
    let mut size = cork.prefix.len();
    let deadline = tokio::time::sleep(cork.max);
    tokio::pin!(deadline);
    while has_room(size, batch) {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = &mut deadline => None,
        };
        let Some(next) = next else { break };
        let answers = (cork.answers)(&next.frame.msg);
        add(next, headers, batch, &mut size, &mut gathered);
        if gathered.staged.is_some() {
            return gathered;
        }
        if answers {
            break;
        }
    }
    // And whatever else is queued already, as any batch.
    take_queued(rx, headers, batch, &mut size, &mut gathered);
    gathered
}

/// Whether a batch of `size` bytes in `batch` takes another frame.
fn has_room(size: usize, batch: &[(std::ops::Range<usize>, Bytes)]) -> bool {
    size < WRITE_BATCH && batch.len() < MAX_IOVECS / 2
}

/// Adds `next` to the batch; a staged payload (which must follow at once) ends it.
fn add(
    next: Outgoing,
    headers: &mut BytesMut,
    batch: &mut Vec<(std::ops::Range<usize>, Bytes)>,
    size: &mut usize,
    gathered: &mut Gathered,
) {
    gathered.costs += next.cost();
    let (more, staged) = queue(next, headers, batch);
    *size += more;
    gathered.staged = staged;
}

/// Adds what is queued already, while the batch has room and nothing is staged.
fn take_queued(
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    headers: &mut BytesMut,
    batch: &mut Vec<(std::ops::Range<usize>, Bytes)>,
    size: &mut usize,
    gathered: &mut Gathered,
) {
    while gathered.staged.is_none() && has_room(*size, batch) {
        let Ok(next) = rx.try_recv() else { break };
        add(next, headers, batch, size, gathered);
    }
}

/// iovecs per writev, well below the kernel's IOV_MAX of 1024.
const MAX_IOVECS: usize = 256;

/// Appends a frame's header to `headers` and remembers where it is, with its payload.
/// Returns the bytes it adds and its staged payload, which must follow at once.
fn queue(
    out: Outgoing,
    headers: &mut BytesMut,
    batch: &mut Vec<(std::ops::Range<usize>, Bytes)>,
) -> (usize, Option<Staged>) {
    let start = headers.len();
    if let Err(e) = encode_header_for(&out.frame, out.payload(), headers) {
        // Only a bug can produce an unencodable frame; dropping it keeps the link usable.
        tracing::error!("dropping a frame that cannot be encoded: {e}");
        return (0, None);
    }
    let size = headers.len() - start + out.payload();
    batch.push((start..headers.len(), out.frame.data));
    (size, out.staged)
}

/// Moves a staged payload from its pipe to the link; where the link is a pipe that the
/// payload fills, `pacer` says when to go on.
async fn splice_staged(
    out: &mut Output,
    staged: Staged,
    mut pacer: Option<&mut pace::Pacer>,
) -> std::io::Result<()> {
    let from = staged.pipe.pipe.read.as_fd();
    let mut left = staged.len;
    while left > 0 {
        let n = match out {
            Output::Fd(fd) => fd.splice_from(from, left).await?,
            Output::Stream(w) => {
                // Not a descriptor: through memory after all (no pump stages for such a
                // link; this only keeps the bytes right if one did).
                let mut buf = BytesMut::new();
                let n = splice::read(from, &mut buf, left)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                w.write_all(&buf).await?;
                n
            }
        };
        let full = n < left;
        left -= n;
        staged.pipe.held.fetch_sub(n, Ordering::SeqCst);
        staged.pipe.drained.notify_waiters();
        if let (Output::Fd(fd), Some(pacer), true) = (&*out, pacer.as_deref_mut(), full) {
            pacer.full(fd).await?;
        }
    }
    Ok(())
}

/// Writes every header and payload of `batch`, in order, coping with partial writes.
async fn write_batch(
    out: &mut Output,
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
        let mut n = match out {
            Output::Fd(fd) => fd.write_vectored(&slices).await?,
            Output::Stream(w) => w.write_vectored(&slices).await?,
        };
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

    fn is_exit(msg: &Message) -> bool {
        matches!(msg, Message::Exit { .. })
    }

    /// What the pipe holds now, without waiting.
    fn drain(pipe: &Pipe) -> Vec<u8> {
        let mut buf = BytesMut::new();
        while matches!(splice::read(pipe.read.as_fd(), &mut buf, 1 << 16), Ok(n) if n > 0) {}
        buf.to_vec()
    }

    /// A link into a pipe, corked for 10 ms after `READY\n` until an `Exit` is queued.
    fn corked() -> (Pipe, LinkSender, JoinHandle<std::io::Result<()>>) {
        let pipe = splice::pipe().unwrap();
        let fd = FdIo::new(pipe.write.try_clone().unwrap()).unwrap();
        let cork = Cork {
            prefix: Bytes::from_static(b"READY\n"),
            answers: is_exit,
            max: std::time::Duration::from_millis(10),
        };
        let (tx, writer) = spawn_corked_fd_writer(fd, cork);
        (pipe, tx, writer)
    }

    /// Lets the writer task run until it waits again (the clock is paused).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_corked_link_writes_its_prefix_and_frames_together_once_one_answers() {
        let (pipe, tx, _writer) = corked();
        let eof = Message::Eof {
            stream: 1,
            fd: Fd::Stdout,
        };
        tx.send(Frame::new(0, eof)).unwrap();
        settle().await;
        assert!(drain(&pipe).is_empty(), "held until an answer is queued");
        let exit = Message::Exit {
            stream: 1,
            status: crate::proto::ExitStatus::Code(0),
        };
        tx.send(Frame::new(0, exit)).unwrap();
        settle().await;
        let written = drain(&pipe);
        assert!(written.starts_with(b"READY\n"), "{written:?}");
        let mut frames = reader(&written[6..]);
        assert!(matches!(frames.next().await, Some(Ok(f)) if matches!(f.msg, Message::Eof { .. })));
        assert!(
            matches!(frames.next().await, Some(Ok(f)) if matches!(f.msg, Message::Exit { .. }))
        );
        // Later frames are not held.
        tx.send(Frame::new(0, Message::Shutdown)).unwrap();
        settle().await;
        assert!(!drain(&pipe).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_corked_link_writes_when_its_time_is_up_without_an_answer() {
        let (pipe, tx, _writer) = corked();
        tx.send(Frame::new(0, Message::Shutdown)).unwrap();
        settle().await;
        assert!(drain(&pipe).is_empty());
        tokio::time::advance(std::time::Duration::from_millis(11)).await;
        settle().await;
        let written = drain(&pipe);
        assert!(
            written.starts_with(b"READY\n") && written.len() > 6,
            "{written:?}"
        );
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
