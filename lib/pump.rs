//! Moving bytes between a descriptor and a stream under credit flow control.
//!
//! The agent pumps a process's pipes; the master pumps the stdin, stdout and stderr a shim
//! handed it. Both directions look the same from here: read only as much as the receiver
//! granted (and only while the link has room); write what arrives and return credit once
//! it has left.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::credit::CreditGate;
use crate::link::LinkSender;
use crate::proto::MAX_DATA;
use crate::proto::flow::RecvWindow;

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

/// A queue of bytes for one descriptor's writer: [`Feed`] puts in, [`Inbox`] takes out.
/// It does not bound itself: what may be put in is bounded by the window the writer's side
/// granted, which the sender must respect (and which [`crate::guard`] checks on arrival
/// of what an untrusted peer sends).
pub(crate) fn inbox() -> (Feed, Inbox) {
    let shared = Arc::new(Shared::default());
    (Feed(shared.clone()), Inbox(shared))
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<Queued>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Queued {
    chunks: VecDeque<Bytes>,
    /// Small payloads being gathered into one chunk.
    tail: BytesMut,
    eof: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Queued {
    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.chunks.push_back(chunk);
        }
    }
}

/// The producing end of an [`inbox`]. Dropping it ends the inbox once it is drained.
#[derive(Debug)]
pub(crate) struct Feed(Arc<Shared>);

impl Feed {
    pub(crate) fn send(&self, input: Input) {
        {
            let mut q = self.0.lock();
            if q.closed || q.eof {
                return; // nothing follows the end
            }
            match input {
                Input::Data(bytes) if bytes.is_empty() => return,
                Input::Data(bytes) if bytes.len() < COALESCE_BELOW => {
                    if q.tail.len() + bytes.len() > CHUNK {
                        q.flush_tail();
                    }
                    if q.tail.capacity() - q.tail.len() < bytes.len() {
                        q.tail.reserve(CHUNK);
                    }
                    q.tail.extend_from_slice(&bytes);
                }
                Input::Data(bytes) => {
                    q.flush_tail();
                    q.chunks.push_back(bytes);
                }
                Input::Eof => q.eof = true,
            }
        }
        self.0.changed.notify_one();
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
    pub(crate) async fn recv(&mut self) -> Option<Input> {
        loop {
            {
                let mut q = self.0.lock();
                q.flush_tail();
                if let Some(chunk) = q.chunks.pop_front() {
                    return Some(Input::Data(chunk));
                }
                if q.eof {
                    q.eof = false;
                    q.closed = true;
                    return Some(Input::Eof);
                }
                if q.closed {
                    return None;
                }
            }
            self.0.changed.notified().await;
        }
    }
}

/// Reads `src` as far as `gate` allows, handing each chunk to `emit`, then `None` at end
/// of input. Reads only while `link` (where `emit` sends) has room. Returns early when the
/// gate closes or `emit` returns false.
pub(crate) async fn read_with_credit<R>(
    src: &mut R,
    gate: &CreditGate,
    link: &LinkSender,
    mut emit: impl FnMut(Option<Bytes>) -> bool,
) where
    R: AsyncRead + Unpin + ?Sized,
{
    // One buffer for the whole stream: each chunk is split off its front, so chunks share
    // allocations and a small read pins only what it holds, not a whole fresh buffer.
    let mut buf = BytesMut::new();
    loop {
        link.ready().await;
        let Some(allowed) = gate.acquire(MAX_DATA).await else {
            return; // closed: nobody wants the rest
        };
        buf.reserve(allowed);
        let mut n = match src.read_buf(&mut (&mut buf).limit(allowed)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("read: {e}");
                0
            }
        };
        // Gather what is already waiting into the same frame: writers such as `head` hand
        // over 8 KiB at a time, and each frame costs a wake-up in every process downstream.
        while n > 0 && n < allowed {
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
            emit(None);
            return;
        }
        if !emit(Some(buf.split().freeze())) {
            return;
        }
    }
}

/// Where written bytes go and what to do about credit.
pub(crate) struct Sink<W> {
    /// `None`: the destination was gone from the start (bytes are discarded, credited).
    pub dst: Option<W>,
    pub window: u32,
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
    let mut window = RecvWindow::new(sink.window);
    let mut dst = sink.dst;
    let mut reported = dst.is_none();
    if reported {
        broken();
    }
    while let Some(input) = rx.recv().await {
        match input {
            Input::Data(bytes) => {
                // Over-sending was refused when it arrived (crate::guard); here the
                // window only batches the credit returned.
                let _ = window.received(bytes.len());
                if let Some(w) = dst.as_mut()
                    && let Err(e) = write_all(w, &bytes).await
                {
                    tracing::debug!("write: {e}");
                    dst = None;
                }
                if dst.is_none() && !reported {
                    reported = true;
                    broken();
                }
                if let Some(n) = window.consumed(bytes.len()) {
                    grant(n);
                }
            }
            Input::Eof if sink.keep_open_on_eof => {}
            Input::Eof => {
                if let Some(mut w) = dst.take() {
                    let _ = w.shutdown().await;
                }
                reported = true;
            }
        }
    }
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tiny_payloads_are_gathered_in_order() {
        let (feed, mut inbox) = inbox();
        for i in 0..100_000u32 {
            feed.send(Input::Data(Bytes::copy_from_slice(&[i as u8])));
        }
        feed.send(Input::Data(Bytes::from(vec![9u8; COALESCE_BELOW])));
        feed.send(Input::Eof);
        feed.send(Input::Data(Bytes::from_static(b"after the end")));
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
        let (feed, mut inbox) = inbox();
        feed.send(Input::Data(Bytes::from_static(b"last words")));
        drop(feed);
        assert_eq!(
            inbox.recv().await,
            Some(Input::Data(Bytes::from_static(b"last words")))
        );
        assert_eq!(inbox.recv().await, None);
    }
}
