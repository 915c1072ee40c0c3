//! Moving bytes between a descriptor and a stream under credit flow control.
//!
//! The agent pumps a process's pipes; the master pumps the stdin, stdout and stderr a shim
//! handed it. Both directions look the same from here: read only as much as the receiver
//! granted; write what arrives and return credit once it has left.

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::credit::CreditGate;
use crate::proto::MAX_DATA;
use crate::proto::flow::RecvWindow;

/// Bytes on their way to a descriptor.
#[derive(Debug)]
pub enum Input {
    Data(Bytes),
    Eof,
}

/// Reads `src` as far as `gate` allows, handing each chunk to `emit`, then `None` at end
/// of input. Returns early when the gate closes or `emit` returns false.
pub async fn read_with_credit<R>(
    src: &mut R,
    gate: &CreditGate,
    mut emit: impl FnMut(Option<Bytes>) -> bool,
) where
    R: AsyncRead + Unpin + ?Sized,
{
    // One buffer for the whole stream: each chunk is split off its front, so chunks share
    // allocations and a small read pins only what it holds, not a whole fresh buffer.
    let mut buf = BytesMut::new();
    loop {
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
pub struct Sink<W> {
    /// `None`: the destination was gone from the start (bytes are discarded, credited).
    pub dst: Option<W>,
    pub window: u32,
    /// A terminal has no half-close: `Eof` leaves it open.
    pub keep_open_on_eof: bool,
}

/// Writes what arrives on `rx` to the sink, calling `grant` with credit as bytes leave.
/// After a write error `broken` is called once and further bytes are discarded but still
/// credited, as sshd does, so the sender never blocks on a reader that is gone.
pub async fn write_with_credit<W>(
    mut rx: mpsc::UnboundedReceiver<Input>,
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
                if let Err(e) = window.received(bytes.len()) {
                    tracing::warn!("{e}");
                }
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
