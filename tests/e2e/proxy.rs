//! A TCP proxy for outage tests, for services too heavy to stop and start
//! per test (RabbitMQ): point the client at [`Proxy::port`], then
//! [`Proxy::cut`] every connection as a network failure or a broker crash
//! would (both sides see the stream end; connections that come meanwhile
//! are accepted and closed at once), and [`Proxy::resume`] to let new
//! connections through again. Plain threads and blocking sockets, so it
//! works beside any runtime the test uses; dropped, it cuts everything
//! and stops.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A proxy from a free port on 127.0.0.1 to one target address.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

struct State {
    target: SocketAddr,
    /// New connections are closed at once while set.
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every live connection, to cut them.
    live: Mutex<Vec<(TcpStream, TcpStream)>>,
    /// Connections forwarded so far.
    forwarded: AtomicUsize,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            target,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            forwarded: AtomicUsize::new(0),
        });
        let s = state.clone();
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if s.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(s.target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                s.forwarded.fetch_add(1, Ordering::SeqCst);
                s.live
                    .lock()
                    .unwrap()
                    .push((client.try_clone().unwrap(), server.try_clone().unwrap()));
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            port,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Ends every connection now, and closes new ones at once until
    /// [`Proxy::resume`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for (a, b) in self.state.live.lock().unwrap().drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn resume(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.state.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` on a thread of its own until either side ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
