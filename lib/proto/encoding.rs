//! Pins the wire encoding: postcard writes an enum's variant as its index in declaration
//! order, so the order of every enum a frame carries is part of the protocol. These lists
//! are that order, read from the types themselves (serde hands a deserializer the variant
//! names in declaration order). A change here is a protocol change: new variants go last,
//! none is removed or moved, and `PROTOCOL_VERSION` is bumped (see docs/PROTOCOL.md,
//! "Encoding").

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::message::{
    BecomeMethod, ConnectFailure, ExitStatus, Fd, Message, Method, PROTOCOL_VERSION, PromptKind,
    Reply, Request, ViaMode,
};

/// The variant names of enum `T`, in declaration order (= their postcard discriminants).
fn variants<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.expect("an enum")
}

/// A deserializer that only records the variants it is asked to choose from.
struct Probe(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe stops here")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for &mut Probe {
    type Error = Stop;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(variants);
        Err(Stop)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[test]
fn discriminants_are_pinned() {
    assert_eq!(
        PROTOCOL_VERSION, 3,
        "a new protocol version: update the lists below to the new order"
    );
    assert_eq!(
        variants::<Message>(),
        [
            "Hello",
            "Shutdown",
            "Open",
            "Signal",
            "Resize",
            "Close",
            "Release",
            "Stop",
            "Opened",
            "OpenFailed",
            "Released",
            "Exit",
            "Data",
            "Eof",
            "Credit",
            "Spawn",
            "Password",
            "NeedPassword",
            "Spawned",
            "SpawnFailed",
            "ContextLost",
            "Request",
            "Reply",
            "Prompt",
            "PromptReply",
            "Diagnostic",
        ]
    );
    assert_eq!(
        variants::<Request>(),
        [
            "Session",
            "Check",
            "ExitContext",
            "StopContext",
            "Proxy",
            "Status",
            "Shutdown",
            "Lookup",
            "Askpass",
        ]
    );
    assert_eq!(
        variants::<Reply>(),
        ["Opened", "Failed", "Done", "Status", "Lookup", "Askpass"]
    );
    assert_eq!(variants::<Method>(), ["Become", "Ssh", "Exec"]);
    assert_eq!(variants::<BecomeMethod>(), ["Sudo", "Su", "Doas"]);
    assert_eq!(variants::<PromptKind>(), ["Become", "Ssh"]);
    assert_eq!(variants::<ExitStatus>(), ["Code", "Signal"]);
    assert_eq!(variants::<ViaMode>(), ["Tcp", "Ssh"]);
    assert_eq!(
        variants::<ConnectFailure>(),
        [
            "Unreachable",
            "Auth",
            "Timeout",
            "NoAgent",
            "Descriptors",
            "Other"
        ]
    );
    assert_eq!(variants::<Fd>(), ["Stdin", "Stdout", "Stderr"]);
}

#[test]
fn postcard_writes_the_declaration_index() {
    // What the lists above stand for: the first byte of an encoded enum is its index.
    let index = |msg: &Message| postcard::to_allocvec(msg).unwrap()[0];
    assert_eq!(index(&Message::Shutdown), 1);
    assert_eq!(index(&Message::Close { stream: 7 }), 5);
    let at = |name| {
        variants::<Message>()
            .iter()
            .position(|v| *v == name)
            .unwrap() as u8
    };
    assert_eq!(index(&Message::Released { stream: 7 }), at("Released"));
    assert_eq!(
        index(&Message::Eof {
            stream: 7,
            fd: Fd::Stderr
        }),
        at("Eof")
    );
}
