//! The hostile agent: this very test program, copied into a remote account's agent cache
//! under the genuine agent's content-hash name, so that the real master (or a genuine
//! agent running ssh from a hop) starts it in place of mitossh's agent. It speaks the
//! protocol well enough to be taken for an agent, then misbehaves as the file
//! [`MODE_FILE`] next to it says. Blocking I/O throughout: a misbehaving peer needs no
//! manners, and a pipe that fills up paces its floods.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use bytes::{Bytes, BytesMut};
use mitossh::proto::{
    ContextId, DEFAULT_WINDOW, ExitStatus, Fd, Frame, FrameCodec, Hello, MASTER, Message,
    PROTOCOL_VERSION, StreamId, encode_into,
};
use tokio_util::codec::Decoder;

/// Names the attack, next to the cached copy.
pub const MODE_FILE: &str = "hostile-mode";

/// A hostname with a terminal title sequence and a fake status line in it.
pub const EVIL_HOST: &str = "evil\u{1b}]0;pwned\u{7}\n   9      0 ssh    fake-line";
/// A user name with colour, screen-clearing and right-to-left sequences (sent padded to
/// thousands of characters).
pub const EVIL_USER: &str = "mallory\u{1b}[31m\u{1b}[2J\u{9b}1m\u{202e}";
/// An open failure that clears the screen and forges a second line.
pub const EVIL_ERROR: &str = "no such thing\u{1b}[2J\r\nssh: everything is fine";
/// Bytes a foreign frame carries: must never reach anybody's output.
pub const INJECTED: &[u8] = b"INJECTED\n";

/// What the hostile agent does once the master opens a stream on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Output without credit, as fast as the pipe takes it.
    CreditFlood,
    /// The whole window in 1-byte frames, then more of them without credit.
    TinyFrames,
    /// Data for streams that are not this agent's (every one opened before its own).
    ForeignStream,
    /// Frames claiming to come from every other context, the master included.
    ForeignContext,
    /// `ContextLost` for every context opened before it (its parent, its neighbours).
    ForgedLost,
    /// `Spawned` for a child nobody asked for.
    ForgedSpawned,
    /// A stdin window of u32::MAX, then no credit; later credit for bytes never sent.
    WindowMax,
    /// Escape sequences in its `Hello` and in error texts; otherwise well behaved.
    Escapes,
    /// Its stderr (which the master's ssh reads) flooded without a newline, escape
    /// sequences included; otherwise well behaved.
    StderrFlood,
}

impl Attack {
    pub const FLOODS: [Attack; 7] = [
        Attack::CreditFlood,
        Attack::TinyFrames,
        Attack::ForeignStream,
        Attack::ForeignContext,
        Attack::ForgedLost,
        Attack::ForgedSpawned,
        Attack::WindowMax,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::CreditFlood => "credit-flood",
            Attack::TinyFrames => "tiny-frames",
            Attack::ForeignStream => "foreign-stream",
            Attack::ForeignContext => "foreign-context",
            Attack::ForgedLost => "forged-lost",
            Attack::ForgedSpawned => "forged-spawned",
            Attack::WindowMax => "window-max",
            Attack::Escapes => "escapes",
            Attack::StderrFlood => "stderr-flood",
        }
    }

    fn parse(s: &str) -> Option<Attack> {
        Attack::FLOODS
            .into_iter()
            .chain([Attack::Escapes, Attack::StderrFlood])
            .find(|a| a.name() == s.trim())
    }
}

/// Upper limit of any flood, so that a master without defences still survives the test.
const FLOOD_LIMIT: usize = 256 << 20;

/// Entry point when started as `mitossh-agent-<hash> agent --nonce N …`.
pub fn main(args: &[String]) -> i32 {
    let nonce = args
        .iter()
        .position(|a| a == "--nonce")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let mode = std::env::current_exe()
        .ok()
        .and_then(|exe| std::fs::read_to_string(exe.with_file_name(MODE_FILE)).ok());
    let Some(attack) = mode.as_deref().and_then(Attack::parse) else {
        eprintln!("hostile agent: no attack named in {MODE_FILE}: {mode:?}");
        return 1;
    };
    let (Ok(input), Ok(output)) = (
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
    ) else {
        eprintln!("hostile agent: no stdin or stdout");
        return 1;
    };
    let (input, output) = (File::from(input), File::from(output));
    // The master's first frames, when stage 1 passed them on: read before stdin.
    let first = std::env::var("MITOSSH_FIRST")
        .map(|hex| {
            (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect::<Vec<u8>>()
        })
        .unwrap_or_default();
    let mut peer = Peer {
        input,
        output,
        buf: BytesMut::from(&first[..]),
        codec: FrameCodec::default(),
        me: MASTER,
    };
    let ready = format!(
        "MITOSSH-READY {nonce} {}\n",
        mitossh::VERSION // the same build as the master: the versions match
    );
    if !peer.send_raw(ready.as_bytes()) {
        return 1;
    }
    let Some(Frame {
        msg: Message::Hello(hello),
        ..
    }) = peer.recv()
    else {
        return 1;
    };
    peer.me = hello.ctx;
    let (user, hostname) = match attack {
        Attack::Escapes => (format!("{EVIL_USER}{}", "A".repeat(4000)), EVIL_HOST.into()),
        _ => ("mallory".to_string(), "hostile".to_string()),
    };
    peer.send(
        MASTER,
        Message::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            version: mitossh::VERSION.into(),
            ctx: MASTER,
            pid: std::process::id(),
            user,
            hostname,
        }),
    );
    while let Some(frame) = peer.recv() {
        match frame.msg {
            Message::Open { stream, .. } if attack == Attack::StderrFlood => {
                flood_stderr();
                peer.serve(stream, false);
            }
            Message::Open { stream, spec } if attack == Attack::Escapes => {
                let fail = spec
                    .command
                    .as_deref()
                    .is_some_and(|c| c.starts_with(b"fail"));
                peer.serve(stream, fail);
            }
            Message::Open { stream, spec } => {
                peer.attack(attack, stream, spec.window);
                peer.drain();
                return 0;
            }
            Message::Shutdown => return 0,
            _ => {}
        }
    }
    0
}

/// [`FLOOD_LIMIT`] bytes on stderr, in one endless line with escape sequences in it.
fn flood_stderr() {
    let chunk = "\u{1b}]0;pwned\u{7}\u{1b}[2J".repeat(4096);
    let mut stderr = std::io::stderr().lock();
    let mut sent = 0;
    while sent < FLOOD_LIMIT && stderr.write_all(chunk.as_bytes()).is_ok() {
        sent += chunk.len();
    }
}

struct Peer {
    input: File,
    output: File,
    buf: BytesMut,
    codec: FrameCodec,
    me: ContextId,
}

impl Peer {
    fn recv(&mut self) -> Option<Frame> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.input.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the master hangs up.
    fn drain(&mut self) {
        while self.recv().is_some() {}
    }

    fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.output.write_all(bytes).is_ok()
    }

    fn send_from(&mut self, ctx: ContextId, msg: Message, data: &[u8]) -> bool {
        let mut out = BytesMut::new();
        let frame = Frame::with_data(ctx, msg, Bytes::copy_from_slice(data));
        encode_into(&frame, &mut out).expect("encodable");
        self.send_raw(&out)
    }

    fn send(&mut self, ctx: ContextId, msg: Message) -> bool {
        self.send_from(ctx, msg, &[])
    }

    fn opened(&mut self, stream: StreamId, window: u32) -> bool {
        let me = self.me;
        self.send(
            me,
            Message::Opened {
                stream,
                pid: std::process::id(),
                window,
            },
        )
    }

    fn data(&mut self, ctx: ContextId, stream: StreamId, bytes: &[u8]) -> bool {
        self.send_from(
            ctx,
            Message::Data {
                stream,
                fd: Fd::Stdout,
            },
            bytes,
        )
    }

    /// A well-behaved stream, as far as a hostile agent goes: `ok` and exit 0, or a failure
    /// whose text holds escape sequences.
    fn serve(&mut self, stream: StreamId, fail: bool) {
        let me = self.me;
        if fail {
            self.send(
                me,
                Message::OpenFailed {
                    stream,
                    error: EVIL_ERROR.into(),
                },
            );
            return;
        }
        self.opened(stream, DEFAULT_WINDOW);
        self.data(me, stream, b"ok\n");
        for fd in [Fd::Stdout, Fd::Stderr] {
            self.send(me, Message::Eof { stream, fd });
        }
        self.send(
            me,
            Message::Exit {
                stream,
                status: ExitStatus::Code(0),
            },
        );
    }

    fn attack(&mut self, attack: Attack, stream: StreamId, window: u32) {
        let me = self.me;
        if attack != Attack::WindowMax && !self.opened(stream, DEFAULT_WINDOW) {
            return;
        }
        match attack {
            Attack::CreditFlood => {
                let chunk = vec![b'F'; 256 * 1024];
                let mut sent = 0;
                while sent < FLOOD_LIMIT && self.data(me, stream, &chunk) {
                    sent += chunk.len();
                }
            }
            Attack::TinyFrames => {
                // Many frames per write: the frames are tiny, the writes need not be.
                let mut one = BytesMut::new();
                let frame = Frame::with_data(
                    me,
                    Message::Data {
                        stream,
                        fd: Fd::Stdout,
                    },
                    Bytes::from_static(b"t"),
                );
                encode_into(&frame, &mut one).expect("encodable");
                let batch = one.repeat(64 * 1024);
                let frames = window as usize + (4 << 20);
                let mut sent = 0;
                while sent < frames && self.send_raw(&batch) {
                    sent += 64 * 1024;
                }
            }
            Attack::ForeignStream => {
                // Every stream opened before this one: another host's, another context's.
                for s in (1..stream).rev().take(64) {
                    self.data(me, s, INJECTED);
                }
                self.data(me, stream.wrapping_add(1000), INJECTED);
            }
            Attack::ForeignContext => {
                // Speaking as every other context there is: the master, then the first
                // contexts (the other host, or the hop this agent was reached from).
                for ctx in (0..me).take(64) {
                    for s in (1..=stream).rev().take(4) {
                        self.data(ctx, s, INJECTED);
                    }
                }
            }
            Attack::ForgedLost => {
                // Every other context there is, the first ones first (the other host, or
                // the hop this agent was reached from: its parent), then itself.
                for ctx in (1..me).take(63).chain([me]) {
                    self.send(
                        me,
                        Message::ContextLost {
                            ctx,
                            reason: "forged".into(),
                        },
                    );
                }
            }
            Attack::ForgedSpawned => {
                let hello = Hello {
                    protocol: PROTOCOL_VERSION,
                    version: mitossh::VERSION.into(),
                    ctx: me + 1000,
                    pid: 1,
                    user: "root".into(),
                    hostname: "forged".into(),
                };
                self.send(
                    me,
                    Message::Spawned {
                        child: me + 1000,
                        hello,
                    },
                );
            }
            Attack::WindowMax => self.window_max(stream),
            Attack::Escapes | Attack::StderrFlood => unreachable!("served, not attacked"),
        }
    }

    /// Grants u32::MAX bytes of stdin and never returns credit: counts what the master
    /// sends, says how much once a whole window came, then grants credit for bytes that
    /// were never sent.
    fn window_max(&mut self, stream: StreamId) {
        let me = self.me;
        if !self.opened(stream, u32::MAX) {
            return;
        }
        let mut received = 0usize;
        while let Some(frame) = self.recv() {
            let stdin =
                matches!(frame.msg, Message::Data { stream: s, fd: Fd::Stdin } if s == stream);
            if !stdin {
                continue;
            }
            received += frame.data.len();
            if received >= DEFAULT_WINDOW as usize {
                let report = format!("received {received}\n");
                self.data(me, stream, report.as_bytes());
                self.send(
                    me,
                    Message::Credit {
                        stream,
                        fd: Fd::Stdin,
                        bytes: u32::MAX,
                    },
                );
                return;
            }
        }
    }
}
