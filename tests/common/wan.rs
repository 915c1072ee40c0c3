//! A wide-area network between a client and a loopback server, in user space (the kernel
//! here has no netem): a TCP proxy on 127.0.0.1 that delivers every byte half a round
//! trip after it was sent, paces each direction to a bandwidth, and counts the bytes.
//!
//! Each direction is a link with a queue: a chunk read from one side finishes
//! transmission `len / bandwidth` after the previous one did (or after it arrived, if the
//! link was idle), and is written to the other side a one-way delay later. The queue is
//! bounded (about 1 MiB a direction), so a fast sender is held back as by a full router
//! queue. Not modelled: loss, and the slow start of the sender's own TCP (the hops on
//! either side of the proxy are loopback), so bulk transfers come out a little faster
//! than over a real path of the same figures.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes read at once from either side.
const CHUNK: usize = 16 * 1024;
/// Chunks queued a direction before the reader waits.
const QUEUE: usize = 64;

/// The proxy. Stopped (its connections cut) when dropped.
pub struct Wan {
    port: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Every socket of every connection, to cut them when stopping.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

/// How a link behaves.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub rtt: Duration,
    /// Bits per second, each direction.
    pub bandwidth: u64,
}

impl Wan {
    /// Listens on a free loopback port and forwards each connection to `server`.
    pub fn start(server: SocketAddr, link: Link) -> Wan {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the WAN proxy");
        let port = listener.local_addr().unwrap().port();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let acceptor = thread::spawn({
            let (up, down, stop, sockets) =
                (up.clone(), down.clone(), stop.clone(), sockets.clone());
            move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(server) else {
                        continue;
                    };
                    for s in [&client, &server] {
                        let _ = s.set_nodelay(true);
                        if let Ok(c) = s.try_clone() {
                            sockets.lock().unwrap().push(c);
                        }
                    }
                    direction(&client, &server, link, up.clone());
                    direction(&server, &client, link, down.clone());
                }
            }
        });
        Wan {
            port,
            up,
            down,
            stop,
            sockets,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes carried so far: client to server, server to client.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        self.up.store(0, Ordering::SeqCst);
        self.down.store(0, Ordering::SeqCst);
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor, then cut every connection: their threads end on the errors.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// One direction of a connection: a reader that stamps chunks with their delivery time
/// and a writer that delivers them then. End of file goes through in order.
fn direction(from: &TcpStream, to: &TcpStream, link: Link, count: Arc<AtomicU64>) {
    let (Ok(mut from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (tx, rx) = sync_channel::<Option<(Instant, Vec<u8>)>>(QUEUE);
    thread::spawn(move || read_side(&mut from, &tx, link, &count));
    thread::spawn(move || write_side(to, rx));
}

fn read_side(
    from: &mut TcpStream,
    tx: &SyncSender<Option<(Instant, Vec<u8>)>>,
    link: Link,
    count: &AtomicU64,
) {
    let one_way = link.rtt / 2;
    let mut free_at = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::SeqCst);
        let transmit = Duration::from_secs_f64(n as f64 * 8.0 / link.bandwidth as f64);
        free_at = free_at.max(Instant::now()) + transmit;
        if tx
            .send(Some((free_at + one_way, buf[..n].to_vec())))
            .is_err()
        {
            return;
        }
    }
    let _ = tx.send(None);
}

fn write_side(mut to: TcpStream, rx: Receiver<Option<(Instant, Vec<u8>)>>) {
    while let Ok(Some((at, bytes))) = rx.recv() {
        // Emulating the link's delay, not waiting for an event.
        thread::sleep(at.saturating_duration_since(Instant::now()));
        if to.write_all(&bytes).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
