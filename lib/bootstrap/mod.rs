//! Getting an agent running at the far end of a pipe that only promises `/bin/sh`.
//!
//! - [`stage1`]: the one-line shell script that finds a cached agent or receives one;
//! - [`image`]: the agent images by architecture (`mitossh-agent` beside the master),
//!   their hashes and compressed forms, and running an agent from memory;
//! - [`ssh`]: the master's side, over the user's real `ssh` client.
//!
//! The exchange on the pipe, before frames start:
//!
//! ```text
//! master                         remote /bin/sh (stage 1)            agent
//!   ── ssh host "/bin/sh -c '…'" ─▶ (hash and size per architecture; `MITOSSH_FIRST=<hex>`:
//!                                   Hello, Open for the agent, when they can be public)
//!   ── or Hello, Open on stdin ───────────────────────────────────────▶ (read once it runs)
//!                                 arch (file, else uname -m);
//!                                 cached?  ── exec ────────────────▶
//!                                 else: skips the pipelined frames,
//!                                       ◀── "MITOSSH-UPLOAD <nonce> <arch> xz|gz|raw"
//!   ── "<count>\n" <count> bytes ─▶ inflated into a private 0700 dir ─exec▶
//!   ── Hello, Open again (if on stdin) ───────────────────────────────▶
//!                                                  ◀── "MITOSSH-READY <nonce> <version>"
//!   ◀═══════════════════════════ frames both ways ═══════════════════▶
//! ```
//!
//! The master's first frames go out with the command, before it knows whether the host
//! has the agent: on a host that has it, the first stream's `Open` costs no round trip.
//! They travel in stage 1's command when they can ([`FirstFrames`]): sshd opens a
//! session's stdin only once its command runs, a round trip after the command was sent.

pub(crate) mod image;
pub(crate) mod ssh;
pub(crate) mod stage1;

use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncRead;

use crate::link::inbound::LinkIn;
use crate::link::{LinkReader, LinkSender};
use crate::proto::{ContextId, Frame, Hello, Message, PROTOCOL_VERSION};

/// Marker line: stage 1 wants the image.
pub(crate) const UPLOAD_MARKER: &str = "MITOSSH-UPLOAD";
/// Marker line: the agent runs; frames follow the newline.
pub(crate) const READY_MARKER: &str = "MITOSSH-READY";

/// How long a new agent has to introduce itself once its ready marker arrived.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The variable stage 1 hands the master's first frames to the agent in (hex), so that
/// they are in no command line once the agent runs.
pub(crate) const FIRST_ENV: &str = "MITOSSH_FIRST";

/// Frames in stage 1's command at most this long, encoded (hex doubles them); a larger
/// first `Open` goes on stdin.
const MAX_INLINE_FRAMES: usize = 2048;

/// Longest remote command stage 1 may make: dropbear refuses an exec request over 9000
/// bytes (its `MAX_CMD_LEN`).
pub(crate) const MAX_REMOTE_COMMAND: usize = 8000;

/// How the master's first frames (its `Hello` and the first stream's `Open`) reach a new
/// agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FirstFrames {
    /// Written ahead on the agent's stdin; stage 1 skips them when it must receive the
    /// image first, and they are written again after it.
    Stdin(Vec<u8>),
    /// In stage 1's command (hex), which sshd receives with the command: they wait for no
    /// stdin window. Stage 1 passes them to the agent in [`FIRST_ENV`].
    Command(String),
}

impl FirstFrames {
    /// `encoded` in the command when it is small and `public` (see [`open_is_public`]),
    /// else on stdin.
    pub(crate) fn new(encoded: Vec<u8>, public: bool) -> FirstFrames {
        if public && encoded.len() <= MAX_INLINE_FRAMES {
            FirstFrames::Command(to_hex(&encoded))
        } else {
            FirstFrames::Stdin(encoded)
        }
    }

    /// What goes ahead on stdin.
    pub(crate) fn on_stdin(&self) -> &[u8] {
        match self {
            FirstFrames::Stdin(bytes) => bytes,
            FirstFrames::Command(_) => &[],
        }
    }

    /// The same frames on stdin (for a command that would be too long).
    pub(crate) fn to_stdin(&self) -> FirstFrames {
        match self {
            FirstFrames::Command(hex) => FirstFrames::Stdin(from_hex(hex).unwrap_or_default()),
            stdin => stdin.clone(),
        }
    }
}

/// Whether a session's `Open` may travel in stage 1's command, which the master's ssh
/// shows in the local process table for the connection's life (and the remote one while
/// stage 1 runs): a process, as with `ssh host cmd`, whose variables are only the
/// locale's and the terminal's (any other may hold a secret, as `SendEnv` sends what the
/// user names; so may an `LC_` name that is not a locale category, a common way to
/// smuggle a variable past `AcceptEnv`). Not a TCP stream (`-W`), whose destination plain
/// ssh never shows.
pub(crate) fn open_is_public(spec: &crate::proto::OpenSpec) -> bool {
    const LOCALE: &[&[u8]] = &[
        b"LANG",
        b"LANGUAGE",
        b"LC_ALL",
        b"LC_ADDRESS",
        b"LC_COLLATE",
        b"LC_CTYPE",
        b"LC_IDENTIFICATION",
        b"LC_MEASUREMENT",
        b"LC_MESSAGES",
        b"LC_MONETARY",
        b"LC_NAME",
        b"LC_NUMERIC",
        b"LC_PAPER",
        b"LC_TELEPHONE",
        b"LC_TIME",
        b"TERM",
        b"COLORTERM",
        b"TZ",
    ];
    spec.connect.is_none()
        && spec.env.is_empty()
        && (spec.ssh_env.iter()).all(|(name, _)| LOCALE.contains(&name.as_slice()))
}

/// Lowercase hex: a plain word for stage 1 and any login shell.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)].into());
        hex.push(DIGITS[usize::from(b & 15)].into());
    }
    hex
}

/// The bytes of [`to_hex`]'s text; `None` for anything else.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The master's (or a parent agent's) `Hello` to a new agent: its id. It names no user or
/// host: an agent has no use for them, and the frame may travel in a command line.
pub(crate) fn hello_frame(ctx: ContextId) -> Frame {
    Frame::new(
        ctx,
        Message::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            version: crate::VERSION.into(),
            ctx,
            pid: std::process::id(),
            user: String::new(),
            hostname: String::new(),
        }),
    )
}

/// The first frames on a new link: tells the agent its id, and returns its own `Hello`.
/// Errors are one line for the user.
pub(crate) async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut LinkReader<R>,
    writer: &LinkSender,
    ctx: ContextId,
) -> Result<Hello, String> {
    let _ = writer.send(hello_frame(ctx));
    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await;
    judge_hello(
        first
            .map_err(|_| ())
            .map(|f| f.map(|f| f.map_err(|e| e.to_string()))),
    )
}

/// The agent's `Hello`, the first frame on a link whose own `Hello` went ahead with the
/// bootstrap. Errors are one line for the user.
pub(crate) async fn receive_hello(reader: &mut LinkIn) -> Result<Hello, String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await;
    let first = first.map_err(|_| ()).map(|f| {
        f.map(|f| match f {
            // A hello has no payload; anything that does is not one.
            Ok(incoming) if incoming.unread == 0 => Ok(incoming.frame),
            Ok(incoming) => Err(format!("unexpected {}", incoming.frame.msg.name())),
            Err(e) => Err(e.to_string()),
        })
    });
    judge_hello(first)
}

/// What the first frame from an agent says (`Err(())`: none came in time). An agent of
/// another build is refused: the cache is keyed by content, so only an image of another
/// build beside the master (or a host that lies) gets here.
fn judge_hello(first: Result<Option<Result<Frame, String>>, ()>) -> Result<Hello, String> {
    match first {
        Ok(Some(Ok(Frame {
            msg: Message::Hello(mut h),
            ..
        }))) if h.protocol == PROTOCOL_VERSION && h.version == crate::VERSION => {
            // What an agent says about itself is shown to the user: clean it on arrival.
            crate::untrusted::clean_hello(&mut h);
            Ok(h)
        }
        Ok(Some(Ok(Frame {
            msg: Message::Hello(h),
            ..
        }))) => Err(format!(
            "the agent is mitossh {} (protocol {}), this side mitossh {} (protocol {}): \
             an agent image of another build; rebuild the agents with this mitossh \
             (scripts/build-agents)",
            crate::untrusted::clean(&h.version, crate::untrusted::MAX_NAME),
            h.protocol,
            crate::VERSION,
            PROTOCOL_VERSION,
        )),
        Ok(Some(Ok(f))) => Err(format!(
            "agent handshake failed: unexpected {}",
            f.msg.name()
        )),
        Ok(Some(Err(e))) => Err(format!("agent handshake failed: {e}")),
        Ok(None) => Err("agent handshake failed: the connection closed".into()),
        Err(()) => Err(format!(
            "agent handshake failed: no answer within {}s",
            HELLO_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the handshake against a peer that answers with `hello`.
    async fn against(hello: Hello) -> Result<Hello, String> {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (our_read, our_write) = tokio::io::split(ours);
        let (their_read, their_write) = tokio::io::split(theirs);
        let (sender, _w) = crate::link::spawn_writer(our_write);
        let mut reader = crate::link::reader(our_read);
        let (peer, _pw) = crate::link::spawn_writer(their_write);
        let mut peer_reader = crate::link::reader(their_read);
        let _ = peer.send(Frame::new(0, Message::Hello(hello)));
        let result = handshake(&mut reader, &sender, 7).await;
        // The agent was told its id.
        match peer_reader.next().await {
            Some(Ok(Frame {
                msg: Message::Hello(h),
                ..
            })) => assert_eq!((h.ctx, h.version.as_str()), (7, crate::VERSION)),
            other => panic!("no hello: {other:?}"),
        }
        result
    }

    fn hello(protocol: u32, version: &str) -> Hello {
        Hello {
            protocol,
            version: version.into(),
            ctx: 0,
            pid: 1,
            user: "u".into(),
            hostname: "h".into(),
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&all)), Some(all));
        for bad in ["0", "0g", "+1", "é1", "AB"] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_small_frames_of_public_sessions_go_in_the_command_line() {
        use crate::proto::OpenSpec;
        let env = |name: &str| OpenSpec {
            ssh_env: vec![(name.as_bytes().to_vec(), b"v".to_vec())],
            ..OpenSpec::default()
        };
        assert!(open_is_public(&OpenSpec::default()));
        assert!(open_is_public(&env("LANG")) && open_is_public(&env("LC_ALL")));
        assert!(!open_is_public(&env("AWS_SECRET_ACCESS_KEY")));
        assert!(
            !open_is_public(&env("LC_MY_TOKEN")),
            "not a locale category"
        );
        let tcp = OpenSpec {
            connect: Some(crate::proto::Endpoint {
                host: "db".into(),
                port: 5432,
            }),
            ..OpenSpec::default()
        };
        assert!(
            !open_is_public(&tcp),
            "-W's destination stays off the command line"
        );
        let run_env = OpenSpec {
            env: vec![(b"LANG".to_vec(), b"C".to_vec())],
            ..OpenSpec::default()
        };
        assert!(
            !open_is_public(&run_env),
            "mitossh run's env stays off the command line"
        );
        assert_eq!(
            FirstFrames::new(vec![1, 2], true),
            FirstFrames::Command("0102".into())
        );
        assert_eq!(FirstFrames::new(vec![1, 2], false).on_stdin(), &[1, 2]);
        let big = vec![0; MAX_INLINE_FRAMES + 1];
        assert!(matches!(FirstFrames::new(big, true), FirstFrames::Stdin(_)));
    }

    #[tokio::test]
    async fn an_agent_of_this_build_is_taken() {
        let h = against(hello(PROTOCOL_VERSION, crate::VERSION))
            .await
            .unwrap();
        assert_eq!(h.hostname, "h");
    }

    #[tokio::test]
    async fn an_agent_of_another_build_is_refused_with_what_to_do() {
        let other = format!("{}+0000000000000000", env!("CARGO_PKG_VERSION"));
        for h in [
            hello(PROTOCOL_VERSION, &other),
            hello(PROTOCOL_VERSION + 1, crate::VERSION),
        ] {
            let e = against(h).await.unwrap_err();
            assert!(e.contains("another build"), "{e}");
            assert!(e.contains("scripts/build-agents"), "{e}");
        }
        let e = against(hello(PROTOCOL_VERSION, "0.0.1\x1b[2J"))
            .await
            .unwrap_err();
        assert!(e.contains("0.0.1\\x1b[2J"), "escaped: {e}");
    }
}
