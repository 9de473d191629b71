//! A TCP relay that slows a link down: it listens on 127.0.0.1 (a port of its own) and forwards
//! every connection to one target, in both directions, holding each chunk it reads for a fixed
//! delay before writing it on. Order is kept (one writer per direction, chunks in a FIFO), and an
//! end of stream is passed on (as a half-close) after the chunks before it. For tests that need
//! a slow link between two real servers, e.g. a replica and its primary
//! (`mariadb.sh replicate ENV I J <relay port>`).
//!
//! Plain threads and std only. Dropping the relay stops accepting, shuts every relayed socket
//! down and joins every thread it started.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the relay's threads share: the stop flag, every socket it holds (to shut them down on
/// drop) and every connection thread (to join them).
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub struct DelayRelay {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl DelayRelay {
    /// Listen on 127.0.0.1:0 and relay every connection to `target`, each chunk `delay` late.
    /// Panics when it cannot listen (a test set-up failure).
    pub fn start(target: SocketAddr, delay: Duration) -> DelayRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("delay relay: bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("delay relay: local_addr")
            .port();
        let shared = Arc::new(Shared::default());
        let sh = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("delay-relay-accept".into())
            .spawn(move || accept_loop(&listener, target, delay, &sh))
            .expect("delay relay: spawn");
        DelayRelay {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port the relay listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The relay's address, `127.0.0.1:port()`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the acceptor sees the flag and drops this connection.
        let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        // The acceptor is gone: no socket or thread is added from here on.
        for s in self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for h in threads {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, delay: Duration, sh: &Arc<Shared>) {
    for conn in listener.incoming() {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        let _ = client.set_nodelay(true);
        // A target that refuses: close the client at once, as the target would have.
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            continue;
        };
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        sh.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([c3, s3]);
        let mut threads = sh.threads.lock().unwrap_or_else(|e| e.into_inner());
        // Finished connections' threads are joined as new ones come, so the list stays short.
        let (done, live): (Vec<_>, Vec<_>) = threads.drain(..).partition(|h| h.is_finished());
        *threads = live;
        for h in done {
            let _ = h.join();
        }
        threads.extend(pipe(client, s2, delay));
        threads.extend(pipe(server, c2, delay));
    }
}

/// One direction: a reader thread stamps each chunk read from `from` with the time it is due and
/// queues it; a writer thread writes the chunks to `to` in order, each no earlier than due.
/// `None` in the queue is the end of stream, passed on as a half-close.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<Option<(Instant, Vec<u8>)>>();
    let from2 = from.try_clone().ok();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx
                        .send(Some((Instant::now() + delay, buf[..n].to_vec())))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let writer = thread::spawn(move || {
        while let Ok(Some((due, chunk))) = rx.recv() {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                // The far side is gone: stop reading this direction too.
                if let Some(f) = &from2 {
                    let _ = f.shutdown(Shutdown::Both);
                }
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    [reader, writer]
}
