//! Byte-exactness of every way a stream's bytes can go: spliced pipe to pipe in the
//! master and the agent, through memory when a pipe is full, and the fallbacks for files
//! and sockets; at every size around a buffer or frame boundary, with all 256 byte values,
//! across a half-close, and with a reader that stalls.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(120);

const K: usize = 1024;

/// Sizes on both sides of every boundary the data path has: the first read of an idle
/// stream (4 KiB), the smallest spliced payload (8 KiB), coalescing (16 KiB), a kernel
/// pipe's default (64 KiB), a frame's payload (256 KiB), a window and a grown pipe
/// (1 MiB), and a few frames' worth beyond.
fn boundary_sizes() -> Vec<usize> {
    let mut sizes = vec![0, 1, 255, 256, 257];
    for edge in [
        4 * K,
        8 * K,
        16 * K,
        64 * K,
        256 * K,
        512 * K,
        K * K,
        4 * K * K,
    ] {
        sizes.extend([edge - 1, edge, edge + 1]);
    }
    sizes.push(3 * K * K + 7);
    sizes
}

/// `n` bytes holding every byte value, then noise.
fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).cycle().take(n.min(64 * K)).collect();
    if n > v.len() {
        v.extend(random_bytes(n - v.len(), seed));
    }
    v
}

fn shim(master: &Master, sshd: &Sshd, command: &str) -> Command {
    let mut c = master.ssh();
    c.args(sshd.ssh_args()).arg(command);
    c
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    format!(
        "got {} bytes, want {}; first difference at {:?}",
        a.len(),
        b.len(),
        at.or((a.len() != b.len()).then(|| a.len().min(b.len())))
    )
}

#[test]
fn pipe_to_pipe_is_byte_exact_at_every_boundary_both_ways() {
    let sshd = Sshd::start();
    let master = Master::start();
    for (i, n) in boundary_sizes().into_iter().enumerate() {
        let input = payload(n, i as u64);
        let out = output_within(&mut shim(&master, &sshd, "cat"), &input, T);
        assert!(
            out.status.success(),
            "{n} bytes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == input,
            "stdout, {n} bytes: {}",
            first_difference(&out.stdout, &input)
        );
        // Stderr has a path of its own, stdout stays apart.
        let out = output_within(&mut shim(&master, &sshd, "cat >&2; echo end"), &input, T);
        assert!(
            out.status.success(),
            "{n} bytes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"end\n");
        assert!(
            out.stderr == input,
            "stderr, {n} bytes: {}",
            first_difference(&out.stderr, &input)
        );
    }
    assert_eq!(sshd.accepted_connections(), 1);
}

/// A writer that hands over odd-sized pieces, so that frames, staged payloads and
/// in-memory chunks follow each other in every order.
#[test]
fn ragged_writes_arrive_whole_and_in_order() {
    let sshd = Sshd::start();
    let master = Master::start();
    let input = payload(24 * K * K + 3, 77);
    let mut child = shim(&master, &sshd, "cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = thread::spawn(move || {
        let mut pieces = [1usize, 8191, 8193, 3, 300_000, 65_537, 4095, 1 << 20, 17]
            .into_iter()
            .cycle();
        let mut at = 0;
        while at < data.len() {
            let end = (at + pieces.next().unwrap()).min(data.len());
            stdin.write_all(&data[at..end]).unwrap();
            at = end;
        }
    });
    let mut got = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    let status = wait_child(&mut child, T, "the shim");
    assert!(status.success());
    assert!(got == input, "{}", first_difference(&got, &input));
}

/// Files and sockets are not spliced: their fallbacks keep every byte too.
#[test]
fn files_and_sockets_as_stdio_are_byte_exact() {
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let input = payload(5 * K * K + 11, 5);
    let src = dir.path().join("in");
    std::fs::write(&src, &input).unwrap();

    // A file as stdin, a file as stdout.
    let dst = dir.path().join("out");
    let status = shim(&master, &sshd, "cat")
        .stdin(std::fs::File::open(&src).unwrap())
        .stdout(std::fs::File::create(&dst).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let got = std::fs::read(&dst).unwrap();
    assert!(
        got == input,
        "file to file: {}",
        first_difference(&got, &input)
    );

    // A socket as stdout (and a file as stdin), read at the far end.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut child = shim(&master, &sshd, "cat")
        .stdin(std::fs::File::open(&src).unwrap())
        .stdout(std::os::fd::OwnedFd::from(theirs))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut ours = ours;
        ours.read_to_end(&mut got).unwrap();
        got
    });
    assert!(wait_child(&mut child, T, "the shim").success());
    let got = reader.join().unwrap();
    assert!(
        got == input,
        "to a socket: {}",
        first_difference(&got, &input)
    );

    // A socket as stdin.
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let data = input.clone();
    let writer = thread::spawn(move || {
        ours.write_all(&data).unwrap();
        ours.shutdown(std::net::Shutdown::Write).unwrap();
        ours // kept open until the shim is done
    });
    let out = shim(&master, &sshd, "cat")
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    drop(writer.join().unwrap());
    assert!(out.status.success());
    assert!(
        out.stdout == input,
        "from a socket: {}",
        first_difference(&out.stdout, &input)
    );
}

/// Output after the end of input, and the exit status after all of it.
#[test]
fn half_close_keeps_output_after_eof_and_before_exit() {
    let sshd = Sshd::start();
    let master = Master::start();
    for n in [0, 8 * K + 1, 256 * K, 3 * K * K + 5] {
        let input = payload(n, n as u64);
        let out = output_within(
            &mut shim(&master, &sshd, "cat; printf after-eof; exit 3"),
            &input,
            T,
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut want = input.clone();
        want.extend_from_slice(b"after-eof");
        assert!(
            out.stdout == want,
            "{n} bytes: {}",
            first_difference(&out.stdout, &want)
        );
    }
}

/// A reader that stops: the remote writer is held back by flow control, and once the
/// reader comes back every byte arrives, in order, before the exit status.
#[test]
fn a_stalled_reader_gets_every_byte_when_it_comes_back() {
    let sshd = Sshd::start();
    let master = Master::start();
    let input = payload(40 * K * K + 1, 40);
    let marker = unique_marker();
    let mut child = shim(&master, &sshd, &format!("exec -a {marker} cat"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = thread::spawn(move || stdin.write_all(&data).unwrap());
    // Nobody reads stdout until the remote cat is blocked writing its own.
    let blocked = || blocked_writing_a_pipe(&marker);
    wait_until(T, "the remote cat to block on its output", blocked);
    let mut got = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(wait_child(&mut child, T, "the shim").success());
    assert!(got == input, "{}", first_difference(&got, &input));
}
