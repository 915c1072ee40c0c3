//! Moving bytes between a descriptor and a stream under credit flow control.
//!
//! The agent pumps a process's pipes; the master pumps the stdin, stdout and stderr a shim
//! handed it. Both directions look the same from here: read only as much as the receiver
//! granted (and only while the link has room); write what arrives and return credit once
//! it has left.
//!
//! Where both ends are pipes, the bytes never enter user space: a reading pump splices
//! its descriptor into a [`Staging`] pipe that the link's writer splices on, and a large
//! payload arriving on a link is spliced straight into the destination pipe when nothing
//! is queued for it, or else into the queue's own pipe, from which the writer splices it
//! on in its turn ([`Feed::deliver`]). What cannot go that way (a terminal, a socket, a
//! file, a full queue pipe) goes through memory, in order with the rest. Nothing is
//! allocated for a stream while no bytes move.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::credit::CreditGate;
use crate::link::inbound::{LinkIn, SPLICE_MIN};
use crate::link::{LinkSender, Staged, Staging};
use crate::proto::flow::{FlowViolation, RecvWindow};
use crate::proto::{FrameError, MAX_DATA};
use crate::sys::fdio::{FdIo, Spliced, Watch};
use crate::sys::splice::{self, Pipe};

/// Bytes on their way to a descriptor.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Data(Bytes),
    Eof,
}

/// Payloads shorter than this are copied together into shared chunks of [`CHUNK`] bytes
/// when queued, so that a flood of tiny frames costs its bytes, not a frame's
/// bookkeeping each.
const COALESCE_BELOW: usize = 16 * 1024;
const CHUNK: usize = 64 * 1024;

/// What a reading pump reads first from a descriptor that cannot say how much is
/// waiting (a terminal, a socket): an idle stream holds no more than this.
const FIRST_READ: usize = 4096;

/// A pump keeps its staging pipe while bytes flow; after this long without any, it closes
/// it (an idle stream holds no descriptors but its own).
const STAGING_IDLE: Duration = Duration::from_secs(1);

/// A queue of bytes for one descriptor's writer: [`Feed`] puts in, [`Inbox`] takes out.
/// It does not bound itself: what may be put in is bounded by the window the writer's side
/// granted (`window`), which the sender must respect (and which [`crate::guard`] checks
/// on arrival of what an untrusted peer sends).
pub(crate) fn inbox(window: u32) -> (Feed, Inbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(Queued::new(window)),
        changed: Notify::new(),
    });
    (Feed(shared.clone()), Inbox(shared))
}

/// The queue and the destination, shared by the writer task and whoever delivers: both
/// may write to the destination, so who does it now is decided under this lock.
#[derive(Debug)]
struct Shared {
    state: Mutex<Queued>,
    changed: Notify,
}

/// A queued piece of a stream's bytes.
#[derive(Debug)]
enum Piece {
    Bytes(Bytes),
    /// The next `n` bytes in this queue pipe.
    Staged(Arc<Pipe>, usize),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::Staged(_, n) => *n,
        }
    }
}

#[derive(Debug)]
struct Queued {
    chunks: VecDeque<Piece>,
    /// Small payloads being gathered into one chunk.
    tail: BytesMut,
    eof: bool,
    closed: bool,
    /// What arrived and what left, for the credit to return.
    window: RecvWindow,
    /// The destination, when it is a pipe a delivery may splice into while the writer
    /// is idle and nothing is queued.
    pipe: Option<Arc<FdIo>>,
    /// Where payloads for a pipe destination wait in the kernel while others are queued
    /// before them; made when first needed, closed when the queue stays empty a while.
    staging: Option<Arc<Pipe>>,
    /// The writer is writing a chunk, or a delivery is splicing.
    busy: bool,
    /// The destination failed: bytes are dropped (and credited).
    gone: bool,
    /// `gone` was reported.
    reported: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Queued {
    fn new(window: u32) -> Queued {
        Queued {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            eof: false,
            closed: false,
            window: RecvWindow::new(window),
            pipe: None,
            staging: None,
            busy: false,
            gone: false,
            reported: false,
        }
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.chunks.push_back(Piece::Bytes(chunk));
        }
    }

    /// The queue pipe, made now if there is none (`None`: no pipe could be made).
    fn staging(&mut self) -> Option<Arc<Pipe>> {
        if self.staging.is_none() {
            self.staging = splice::pipe().ok().map(Arc::new);
        }
        self.staging.clone()
    }

    /// `n` bytes were spliced into `pipe`, after everything queued so far.
    fn push_staged(&mut self, pipe: Arc<Pipe>, n: usize) {
        if n == 0 {
            return;
        }
        self.flush_tail();
        match self.chunks.back_mut() {
            Some(Piece::Staged(last, m)) if Arc::ptr_eq(last, &pipe) => *m += n,
            _ => self.chunks.push_back(Piece::Staged(pipe, n)),
        }
    }

    fn idle(&self) -> bool {
        !self.busy && self.chunks.is_empty() && self.tail.is_empty()
    }

    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
        } else if bytes.len() < COALESCE_BELOW {
            if self.tail.len() + bytes.len() > CHUNK {
                self.flush_tail();
            }
            if self.tail.capacity() - self.tail.len() < bytes.len() {
                self.tail.reserve(CHUNK);
            }
            self.tail.extend_from_slice(&bytes);
        } else {
            self.flush_tail();
            self.chunks.push_back(Piece::Bytes(bytes));
        }
    }

    /// `n` bytes left (or were dropped): the credit to return now, if it is time.
    fn consumed(&mut self, n: usize) -> Option<u32> {
        self.window.consumed(n)
    }
}

/// What a delivery asks of its caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Credit to return to the sender.
    pub grant: Option<u32>,
    /// The destination just failed: tell the sender (once).
    pub broken: bool,
}

/// The producing end of an [`inbox`]. Dropping it ends the inbox once it is drained.
#[derive(Debug)]
pub(crate) struct Feed(Arc<Shared>);

impl Feed {
    /// Queues `input`. Data beyond the window the sender was granted is refused (and
    /// not queued): the caller drops the link it came on.
    pub(crate) fn send(&self, input: Input) -> Result<(), FlowViolation> {
        {
            let mut q = self.0.lock();
            if q.closed || q.eof {
                return Ok(()); // nothing follows the end
            }
            match input {
                Input::Data(bytes) => {
                    q.window.received(bytes.len())?;
                    q.push(bytes);
                }
                Input::Eof => q.eof = true,
            }
        }
        self.0.changed.notify_one();
        Ok(())
    }

    /// A payload arrived on `link`: `prefix` already read, `unread` more bytes still in
    /// the link. Splices it straight into the destination pipe when that is possible now,
    /// else reads it into the queue; never waits for the destination. Either way, every
    /// byte of it is taken off the link before this returns.
    pub(crate) async fn deliver(
        &self,
        prefix: Bytes,
        unread: usize,
        link: &mut LinkIn,
    ) -> Result<Delivered, DeliverError> {
        let total = prefix.len() + unread;
        let route = {
            let mut q = self.0.lock();
            if q.closed || q.eof {
                Route::Drop { credit: false }
            } else {
                q.window.received(total)?;
                match &q.pipe {
                    _ if q.gone => Route::Drop { credit: true },
                    Some(pipe) if q.idle() && unread > 0 => {
                        let pipe = pipe.clone();
                        q.busy = true;
                        Route::Splice(pipe)
                    }
                    Some(_) if unread >= SPLICE_MIN => match q.staging() {
                        Some(staging) => Route::Stage(staging),
                        None => Route::Queue,
                    },
                    _ => Route::Queue,
                }
            }
        };
        match route {
            Route::Queue => {
                let data = join(prefix, link.read_payload().await?);
                {
                    let mut q = self.0.lock();
                    q.push(data);
                }
                self.0.changed.notify_one();
                Ok(Delivered::default())
            }
            Route::Drop { credit } => {
                link.read_payload().await?;
                let grant = if credit {
                    self.0.lock().consumed(total)
                } else {
                    None
                };
                Ok(Delivered {
                    grant,
                    broken: false,
                })
            }
            Route::Splice(pipe) => Ok(self.splice_in(&pipe, prefix, unread, link).await?),
            Route::Stage(staging) => {
                self.stage_in(staging, prefix, unread, link).await?;
                Ok(Delivered::default())
            }
        }
    }

    /// Queues a payload behind what is queued already, its unread part spliced into the
    /// queue pipe as far as that has room and read into memory beyond.
    async fn stage_in(
        &self,
        staging: Arc<Pipe>,
        prefix: Bytes,
        unread: usize,
        link: &mut LinkIn,
    ) -> Result<(), FrameError> {
        let (staged, mut result) = match stage_payload(link, &staging, unread).await {
            (n, None) => (n, Ok(Bytes::new())),
            (n, Some(e)) => (n, Err(e)),
        };
        if staged < unread && result.is_ok() {
            result = link.read_payload().await;
        }
        // What reached the queue pipe is queued even when the link failed after it, so
        // that the pipe never holds bytes no piece accounts for.
        {
            let mut q = self.0.lock();
            q.push(prefix);
            q.push_staged(staging, staged);
            if let Ok(tail) = &result {
                q.push(tail.clone());
            }
        }
        self.0.changed.notify_one();
        result.map(drop)
    }

    async fn splice_in(
        &self,
        pipe: &FdIo,
        mut prefix: Bytes,
        unread: usize,
        link: &mut LinkIn,
    ) -> Result<Delivered, FrameError> {
        let total = prefix.len() + unread;
        let fd = pipe.get_ref();
        let mut moved = 0;
        let mut failed = false;
        let mut error = None;
        if !prefix.is_empty() {
            match splice::write(std::os::fd::AsFd::as_fd(fd), &prefix) {
                Ok(n) => {
                    moved += n;
                    prefix.advance(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => failed = true,
            }
        }
        let mut rest = unread;
        while rest > 0 && prefix.is_empty() && !failed {
            match link
                .splice_payload(std::os::fd::AsFd::as_fd(fd), rest)
                .await
            {
                Ok(Spliced::Moved(n)) => {
                    rest -= n;
                    moved += n;
                }
                Ok(_) => break, // full: the rest waits in memory
                Err(FrameError::Io(e)) if e.raw_os_error() == Some(libc::EPIPE) => failed = true,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        // The destination is full: the rest waits in the queue pipe, or in memory.
        let mut staged = None;
        if rest > 0 && prefix.is_empty() && error.is_none() && !failed {
            let staging = self.0.lock().staging();
            if let Some(st) = staging {
                let (n, e) = stage_payload(link, &st, rest).await;
                error = e;
                rest -= n;
                staged = Some((st, n));
            }
        }
        let mut tail = Bytes::new();
        if rest > 0 && error.is_none() {
            match link.read_payload().await {
                Ok(bytes) => tail = bytes,
                Err(e) => error = Some(e),
            }
        }
        let delivered = {
            let mut q = self.0.lock();
            q.busy = false;
            q.gone |= failed;
            let broken = failed && !q.reported;
            q.reported |= failed;
            let grant = if q.gone {
                q.consumed(total)
            } else {
                q.push(prefix);
                if let Some((st, n)) = staged {
                    q.push_staged(st, n);
                }
                q.push(tail);
                q.consumed(moved)
            };
            Delivered { grant, broken }
        };
        self.0.changed.notify_one();
        match error {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }
}

/// Splices up to `want` of the payload's unread bytes from `link` into the queue pipe, as
/// far as it has room: how many moved, and the link's error if it failed meanwhile.
async fn stage_payload(
    link: &mut LinkIn,
    queue: &Pipe,
    want: usize,
) -> (usize, Option<FrameError>) {
    let mut n = 0;
    while n < want {
        match link
            .splice_payload(std::os::fd::AsFd::as_fd(&queue.write), want - n)
            .await
        {
            Ok(Spliced::Moved(k)) => n += k,
            Ok(_) => break, // full: the rest waits in memory
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

/// Why a delivery ends the link it came on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    /// The sender broke flow control.
    #[error(transparent)]
    Flow(#[from] FlowViolation),
    /// The link failed while the payload was taken off it.
    #[error(transparent)]
    Link(#[from] FrameError),
}

/// Where a delivery goes.
enum Route {
    Splice(Arc<FdIo>),
    /// Behind what is queued, in the queue pipe.
    Stage(Arc<Pipe>),
    Queue,
    Drop {
        credit: bool,
    },
}

fn join(prefix: Bytes, rest: Bytes) -> Bytes {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest,
        (_, true) => prefix,
        _ => {
            let mut all = BytesMut::with_capacity(prefix.len() + rest.len());
            all.put(prefix);
            all.put(rest);
            all.freeze()
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_one();
    }
}

/// The consuming end of an [`inbox`].
#[derive(Debug)]
pub(crate) struct Inbox(Arc<Shared>);

impl Inbox {
    /// The next input, in order; `None` once the feed is gone and everything was taken.
    /// Data is handed out only while nobody else writes to the destination, and marks it
    /// busy until [`Inbox::wrote`].
    async fn take(&mut self) -> Option<Taken> {
        loop {
            let staging = {
                let mut q = self.0.lock();
                if !q.busy {
                    q.flush_tail();
                    if let Some(piece) = q.chunks.pop_front() {
                        q.busy = true;
                        return Some(Taken::Piece(piece));
                    }
                    if q.eof {
                        q.eof = false;
                        q.closed = true;
                        return Some(Taken::Eof);
                    }
                    if q.closed {
                        return None;
                    }
                    if q.idle() && q.tail.capacity() > 0 {
                        q.tail = BytesMut::new(); // an idle stream keeps no buffer
                    }
                }
                q.staging.is_some()
            };
            if !staging {
                self.0.changed.notified().await;
            } else if tokio::time::timeout(STAGING_IDLE, self.0.changed.notified())
                .await
                .is_err()
            {
                let mut q = self.0.lock();
                if q.idle() {
                    q.staging = None; // nor its queue pipe, once quiet
                }
            }
        }
    }

    /// A chunk of `n` bytes was written (or, `failed`, could not be). Returns the credit
    /// to return and whether the failure is news.
    fn wrote(&self, n: usize, failed: bool) -> Delivered {
        let mut q = self.0.lock();
        q.busy = false;
        q.gone |= failed;
        let broken = failed && !q.reported;
        q.reported |= failed;
        Delivered {
            grant: q.consumed(n),
            broken,
        }
    }

    fn gone(&self) -> bool {
        self.0.lock().gone
    }

    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Option<Input> {
        let data = match self.take().await? {
            Taken::Eof => return Some(Input::Eof),
            Taken::Piece(Piece::Bytes(b)) => b,
            Taken::Piece(Piece::Staged(pipe, n)) => {
                let mut buf = BytesMut::new();
                while buf.len() < n {
                    let left = n - buf.len();
                    splice::read(std::os::fd::AsFd::as_fd(&pipe.read), &mut buf, left).unwrap();
                }
                buf.freeze()
            }
        };
        self.wrote(data.len(), false);
        Some(Input::Data(data))
    }
}

/// What the writer takes from its queue.
enum Taken {
    Piece(Piece),
    Eof,
}

/// Where a reading pump reads.
pub(crate) enum Source<'a, R: ?Sized> {
    /// A pipe of our own (non-blocking): spliced when the link takes staged payloads.
    Pipe(FdIo),
    /// Anything else; `first`: how much to read at first (a file: a whole frame).
    Stream { io: &'a mut R, first: usize },
}

impl<'a> Source<'a, tokio::io::Empty> {
    pub(crate) fn pipe(pipe: FdIo) -> Source<'a, tokio::io::Empty> {
        Source::Pipe(pipe)
    }
}

impl<'a, R: ?Sized> Source<'a, R> {
    /// A source that says nothing about how much is waiting.
    pub(crate) fn stream(io: &'a mut R) -> Source<'a, R> {
        Source::Stream {
            io,
            first: FIRST_READ,
        }
    }
}

/// What a reading pump hands on.
#[derive(Debug)]
pub(crate) enum Chunk {
    Bytes(Bytes),
    /// Bytes in a staging pipe, to be spliced after their frame's header.
    Staged(Staged),
    /// The end of input.
    End,
}

/// Reads `src` as far as `gate` allows, handing each chunk to `emit`, then `End`. Reads
/// only while `link` (where `emit` sends) has room. Returns early when the gate closes or
/// `emit` returns false.
pub(crate) async fn read_with_credit<R>(
    src: Source<'_, R>,
    gate: &CreditGate,
    link: &LinkSender,
    emit: impl FnMut(Chunk) -> bool,
) where
    R: AsyncRead + Unpin + ?Sized,
{
    match src {
        Source::Pipe(pipe) => read_pipe(pipe, gate, link, emit).await,
        Source::Stream { io, first } => read_stream(io, first, gate, link, emit).await,
    }
}

async fn read_pipe(
    src: FdIo,
    gate: &CreditGate,
    link: &LinkSender,
    mut emit: impl FnMut(Chunk) -> bool,
) {
    if let Err(e) = pipe_to_link(src, gate, link, &mut emit).await {
        tracing::debug!("read: {e}");
        emit(Chunk::End);
    }
}

/// [`read_pipe`]'s loop: an error ends the stream.
async fn pipe_to_link(
    src: FdIo,
    gate: &CreditGate,
    link: &LinkSender,
    emit: &mut impl FnMut(Chunk) -> bool,
) -> std::io::Result<()> {
    // Off the event loop while the pump waits for room downstream: every write into a
    // pipe that epoll watches wakes the watcher (`head` writes 8 KiB at a time).
    let mut src = Watch::new(src);
    let mut staging: Option<Arc<Staging>> = None;
    loop {
        link.ready().await;
        let Some(allowed) = gate.acquire(MAX_DATA).await else {
            return Ok(()); // closed: nobody wants the rest
        };
        let waiting = wait_for_input(&mut src, &mut staging).await?;
        if link.splices() && waiting >= SPLICE_MIN && allowed >= SPLICE_MIN {
            if staging.is_none() {
                staging = Staging::new().ok();
            }
            if let Some(st) = &staging {
                let (n, end) = stage(&src, st, allowed);
                gate.give_back(allowed - n);
                if n > 0 && !emit(Chunk::Staged(st.staged(n))) {
                    return Ok(());
                }
                if end {
                    emit(Chunk::End);
                    return Ok(());
                }
                if n > 0 {
                    continue;
                }
                // The staging pipe is full: its frames are queued on the link, and its
                // writer frees room as it writes them. (Reading on through memory instead
                // costs a copy in and a copy out of every byte, here on the busiest path.)
                src.unwatch();
                tokio::select! {
                    _ = st.half_drained() => continue,
                    _ = link.closed() => return Ok(()),
                }
            }
        }
        if !read_pipe_chunk(src.watched()?, waiting, allowed, gate, emit).await {
            return Ok(());
        }
    }
}

/// Waits for input on `src` (watching it only when it has none); closes the staging
/// pipe if it stays unused a while.
async fn wait_for_input(
    src: &mut Watch,
    staging: &mut Option<Arc<Staging>>,
) -> std::io::Result<usize> {
    let waiting = src.pending()?;
    if waiting > 0 {
        return Ok(waiting);
    }
    let src = src.watched()?;
    loop {
        let Some(st) = staging else {
            return src.ready_to_read().await;
        };
        tokio::select! {
            r = src.ready_to_read() => return r,
            _ = tokio::time::sleep(STAGING_IDLE) => {
                if st.held() == 0 {
                    *staging = None;
                }
            }
        }
    }
}

/// Splices what `src` has now, up to `allowed`, into the staging pipe. Returns how much
/// moved and whether the input ended.
fn stage(src: &Watch, st: &Staging, allowed: usize) -> (usize, bool) {
    let mut n = 0;
    while n < allowed {
        match src.try_splice_to(st.input(), allowed - n) {
            Ok(Some(Spliced::Moved(k))) => n += k,
            Ok(Some(Spliced::End)) => return (n, true),
            Ok(Some(Spliced::Full)) | Ok(None) => break,
            Err(e) => {
                tracing::debug!("splice: {e}");
                return (n, true);
            }
        }
    }
    (n, false)
}

/// Reads one chunk of at most `allowed` bytes from a pipe into memory (`waiting`: what it
/// said it holds). False when the stream is over.
async fn read_pipe_chunk(
    src: &FdIo,
    waiting: usize,
    allowed: usize,
    gate: &CreditGate,
    emit: &mut impl FnMut(Chunk) -> bool,
) -> bool {
    let size = waiting.clamp(FIRST_READ.min(allowed), allowed);
    let mut buf = BytesMut::with_capacity(size);
    let mut n = match src.read_into(&mut buf, size).await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!("read: {e}");
            0
        }
    };
    // Gather what is already waiting into the same frame: writers such as `head` hand
    // over 8 KiB at a time, and each frame costs a wake-up in every process downstream.
    while n > 0 && n < allowed {
        match src.read_into(&mut buf, allowed - n).now_or_never() {
            Some(Ok(more)) if more > 0 => n += more,
            _ => break,
        }
    }
    gate.give_back(allowed - n);
    if n == 0 {
        emit(Chunk::End);
        return false;
    }
    emit(Chunk::Bytes(buf.freeze()))
}

async fn read_stream<R>(
    src: &mut R,
    first: usize,
    gate: &CreditGate,
    link: &LinkSender,
    mut emit: impl FnMut(Chunk) -> bool,
) where
    R: AsyncRead + Unpin + ?Sized,
{
    loop {
        link.ready().await;
        let Some(allowed) = gate.acquire(MAX_DATA).await else {
            return; // closed: nobody wants the rest
        };
        // Small at first: a stream waiting for input holds only this much.
        let mut buf = BytesMut::with_capacity(first.min(allowed));
        let mut n = match src.read_buf(&mut (&mut buf).limit(allowed)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("read: {e}");
                0
            }
        };
        while n > 0 && n < allowed {
            if buf.len() == buf.capacity() {
                buf.reserve(buf.capacity().min(allowed - n));
            }
            match src
                .read_buf(&mut (&mut buf).limit(allowed - n))
                .now_or_never()
            {
                Some(Ok(more)) if more > 0 => n += more,
                _ => break,
            }
        }
        gate.give_back(allowed - n);
        if n == 0 {
            emit(Chunk::End);
            return;
        }
        if !emit(Chunk::Bytes(buf.freeze())) {
            return;
        }
    }
}

/// Where a writing pump writes.
pub(crate) enum Dst<W> {
    /// A pipe of our own (non-blocking): deliveries may splice into it directly.
    Pipe(FdIo),
    Stream(W),
    /// Gone from the start: bytes are dropped and credited.
    Gone,
}

/// Where written bytes go and what to do about credit.
pub(crate) struct Sink<W> {
    pub dst: Dst<W>,
    /// A terminal has no half-close: `Eof` leaves it open.
    pub keep_open_on_eof: bool,
}

/// Writes what arrives in `rx` to the sink, calling `grant` with credit as bytes leave.
/// After a write error `broken` is called once and further bytes are discarded but still
/// credited, as sshd does, so the sender never blocks on a reader that is gone.
pub(crate) async fn write_with_credit<W>(
    mut rx: Inbox,
    sink: Sink<W>,
    mut grant: impl FnMut(u32),
    mut broken: impl FnMut(),
) where
    W: AsyncWrite + Unpin,
{
    let (mut pipe, mut stream) = (None, None);
    match sink.dst {
        Dst::Pipe(p) => {
            let p = Arc::new(p);
            rx.0.lock().pipe = Some(p.clone());
            pipe = Some(p);
        }
        Dst::Stream(w) => stream = Some(w),
        Dst::Gone => {
            let said = rx.wrote(0, true);
            if said.broken {
                broken();
            }
        }
    }
    while let Some(taken) = rx.take().await {
        match taken {
            Taken::Piece(piece) => {
                let result = match (&piece, &pipe, stream.as_mut()) {
                    _ if rx.gone() => Ok(()),
                    (Piece::Bytes(bytes), Some(p), _) => write_pipe(p, bytes).await,
                    (Piece::Bytes(bytes), None, Some(w)) => write_all(w, bytes).await,
                    (Piece::Staged(staged, n), Some(p), _) => splice_out(p, staged, *n).await,
                    // Staged only while the destination is a pipe; gone without one.
                    _ => Ok(()),
                };
                if let Err(e) = &result {
                    tracing::debug!("write: {e}");
                }
                let done = rx.wrote(piece.len(), result.is_err());
                if done.broken {
                    broken();
                }
                if let Some(n) = done.grant {
                    grant(n);
                }
            }
            Taken::Eof if sink.keep_open_on_eof => {}
            Taken::Eof => {
                {
                    let mut q = rx.0.lock();
                    q.pipe = None;
                    q.gone = true;
                    q.reported = true;
                }
                pipe = None;
                if let Some(mut w) = stream.take() {
                    let _ = w.shutdown().await;
                }
            }
        }
    }
    drop(pipe);
}

/// Moves `n` queued bytes from the queue pipe `from` into the destination pipe.
async fn splice_out(pipe: &FdIo, from: &Pipe, mut n: usize) -> std::io::Result<()> {
    while n > 0 {
        n -= pipe
            .splice_from(std::os::fd::AsFd::as_fd(&from.read), n)
            .await?;
    }
    Ok(())
}

async fn write_pipe(pipe: &FdIo, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = pipe.write_some(bytes).await?;
        bytes = &bytes[n..];
    }
    Ok(())
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads for a destination pipe that is full queue up in the kernel (the queue
    /// pipe), the small and the overflow in memory, and leave in order, byte for byte.
    #[tokio::test]
    async fn payloads_behind_a_full_pipe_wait_in_the_kernel_and_leave_in_order() {
        use crate::proto::{Fd, Frame, Message, encode_into};
        use std::os::fd::AsFd;
        let sizes = [
            300_000,
            MAX_DATA,
            SPLICE_MIN,
            SPLICE_MIN - 1,
            1,
            100_001,
            MAX_DATA,
            MAX_DATA,
            70_000,
        ];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| (i * 31 + k) as u8).collect())
            .collect();
        let mut wire = BytesMut::new();
        for p in &payloads {
            let msg = Message::Data {
                stream: 1,
                fd: Fd::Stdin,
            };
            encode_into(&Frame::with_data(1, msg, Bytes::from(p.clone())), &mut wire).unwrap();
        }
        // A blocking writer at the link's far end, as a process writing to us.
        let (link_read, link_write) = nix::unistd::pipe().unwrap();
        let feeder = std::thread::spawn(move || {
            let mut f = std::fs::File::from(link_write);
            std::io::Write::write_all(&mut f, &wire).unwrap();
        });
        let mut link = LinkIn::new(FdIo::new(link_read).unwrap(), &[]);
        // The destination, full before anything arrives: nobody reads it yet.
        let dest = splice::pipe().unwrap();
        let mut filled = 0;
        while let Ok(n) = splice::write(dest.write.as_fd(), &[7u8; 65536]) {
            filled += n;
        }
        let (feed, inbox) = inbox(u32::MAX);
        let sink = Sink {
            dst: Dst::<tokio::io::Empty>::Pipe(FdIo::new(dest.write).unwrap()),
            keep_open_on_eof: false,
        };
        let writer = tokio::spawn(write_with_credit(inbox, sink, |_| {}, || {}));
        // Until the writer has registered the destination, deliveries queue in memory.
        while feed.0.lock().pipe.is_none() {
            tokio::task::yield_now().await;
        }
        for _ in &payloads {
            let got = link.next().await.unwrap().unwrap();
            feed.deliver(got.frame.data, got.unread, &mut link)
                .await
                .unwrap();
        }
        let staged: usize = {
            let q = feed.0.lock();
            q.chunks
                .iter()
                .map(|p| match p {
                    Piece::Staged(_, n) => *n,
                    Piece::Bytes(_) => 0,
                })
                .sum()
        };
        assert!(staged > 3 * MAX_DATA, "{staged} bytes waited in the kernel");
        feed.send(Input::Eof).unwrap();
        drop(feed);
        crate::sys::fdio::set_nonblocking(&dest.read, false).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(dest.read), &mut got).unwrap();
            got
        });
        writer.await.unwrap();
        let got = reader.join().unwrap();
        feeder.join().unwrap();
        let want: Vec<u8> = std::iter::repeat_n(7u8, filled)
            .chain(payloads.concat())
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes in order");
    }

    #[tokio::test]
    async fn tiny_payloads_are_gathered_in_order() {
        let (feed, mut inbox) = inbox(1 << 20);
        for i in 0..100_000u32 {
            feed.send(Input::Data(Bytes::copy_from_slice(&[i as u8])))
                .unwrap();
        }
        feed.send(Input::Data(Bytes::from(vec![9u8; COALESCE_BELOW])))
            .unwrap();
        feed.send(Input::Eof).unwrap();
        feed.send(Input::Data(Bytes::from_static(b"after the end")))
            .unwrap();
        drop(feed);
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(Input::Data(chunk)) = inbox.recv().await {
            assert!(chunk.len() <= CHUNK.max(COALESCE_BELOW));
            got.extend_from_slice(&chunk);
            chunks += 1;
        }
        let want: Vec<u8> = (0..100_000u32)
            .map(|i| i as u8)
            .chain(std::iter::repeat_n(9, COALESCE_BELOW))
            .collect();
        assert!(got == want, "bytes in order");
        assert!(chunks < 10, "{chunks} chunks for 100000 tiny payloads");
        assert_eq!(inbox.recv().await, None, "Eof came, nothing after it");
    }

    #[tokio::test]
    async fn the_inbox_ends_when_the_feed_goes() {
        let (feed, mut inbox) = inbox(1 << 20);
        feed.send(Input::Data(Bytes::from_static(b"last words")))
            .unwrap();
        drop(feed);
        assert_eq!(
            inbox.recv().await,
            Some(Input::Data(Bytes::from_static(b"last words")))
        );
        assert_eq!(inbox.recv().await, None);
    }

    #[tokio::test]
    async fn data_beyond_the_window_is_refused_and_not_queued() {
        let (feed, mut inbox) = inbox(100);
        feed.send(Input::Data(Bytes::from(vec![1u8; 60]))).unwrap();
        let over = feed.send(Input::Data(Bytes::from(vec![2u8; 41])));
        assert!(over.is_err(), "101 bytes in a window of 100");
        feed.send(Input::Data(Bytes::from(vec![3u8; 40]))).unwrap();
        drop(feed);
        let mut got = Vec::new();
        while let Some(Input::Data(chunk)) = inbox.recv().await {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got.len(), 100);
        assert!(!got.contains(&2));
    }
}
