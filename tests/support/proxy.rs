//! A small TCP proxy (std threads) to cut and restore a link in tests, e.g. between a
//! sluice node and etcd: point the client at [`TcpProxy::addr`] instead of the target.
//!
//! - [`TcpProxy::cut`]: every current connection is dropped (both sides shut down) and new
//!   connections are blackholed: accepted, then held open with nothing forwarded, like a
//!   network partition (the client's connect succeeds, its requests time out).
//! - [`TcpProxy::refuse`]: like `cut`, but new connections are closed at once (a fast
//!   failure instead of a hang).
//! - [`TcpProxy::restore`]: held connections are closed (so clients reconnect) and new
//!   connections are forwarded again.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Blackhole,
    Refuse,
}

struct State {
    mode: Mode,
    next_id: u64,
    /// Forwarded connections: (id, client side, target side).
    links: Vec<(u64, TcpStream, TcpStream)>,
    /// Connections accepted while cut, held without forwarding.
    held: Vec<TcpStream>,
    /// Connections accepted in total.
    accepted: u64,
}

/// A TCP proxy to one target; dropping it closes everything.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    closing: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

fn close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Both);
}

impl TcpProxy {
    /// Listen on an ephemeral loopback port and forward every connection to `target`.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Forward,
            next_id: 0,
            links: Vec::new(),
            held: Vec::new(),
            accepted: 0,
        }));
        let closing = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let state = state.clone();
            let closing = closing.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, target, state, closing))
                .expect("spawn proxy thread")
        };
        TcpProxy {
            addr,
            target,
            state,
            closing,
            acceptor: Some(acceptor),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for clients that take URLs (etcd endpoints).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    fn set_mode(&self, mode: Mode) {
        let mut st = self.state.lock().unwrap();
        st.mode = mode;
        if mode != Mode::Forward {
            for (_, a, b) in st.links.drain(..) {
                close(&a);
                close(&b);
            }
        }
        if mode != Mode::Blackhole {
            for s in st.held.drain(..) {
                close(&s);
            }
        }
    }

    /// Drop every current connection and blackhole new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.set_mode(Mode::Blackhole);
    }

    /// Drop every current connection and close new ones at once until
    /// [`TcpProxy::restore`].
    pub fn refuse(&self) {
        self.set_mode(Mode::Refuse);
    }

    /// Forward again; connections held while cut are closed so their clients reconnect.
    pub fn restore(&self) {
        self.set_mode(Mode::Forward);
    }

    /// Whether the link is cut (blackholed or refusing).
    pub fn is_cut(&self) -> bool {
        self.state.lock().unwrap().mode != Mode::Forward
    }

    /// Connections currently forwarded.
    pub fn open_links(&self) -> usize {
        self.state.lock().unwrap().links.len()
    }

    /// Connections accepted since the start (forwarded, held or refused).
    pub fn accepted(&self) -> u64 {
        self.state.lock().unwrap().accepted
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let mut st = self.state.lock().unwrap();
        for (_, a, b) in st.links.drain(..) {
            close(&a);
            close(&b);
        }
        for s in st.held.drain(..) {
            close(&s);
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    closing: Arc<AtomicBool>,
) {
    loop {
        let conn = listener.accept();
        if closing.load(Ordering::SeqCst) {
            return;
        }
        let client = match conn {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let mode = {
            let mut st = state.lock().unwrap();
            st.accepted += 1;
            st.mode
        };
        match mode {
            Mode::Refuse => close(&client),
            Mode::Blackhole => state.lock().unwrap().held.push(client),
            Mode::Forward => {
                let state = state.clone();
                // Connect off the accept thread: a slow target must not stall other clients.
                std::thread::spawn(move || forward(client, target, &state));
            }
        }
    }
}

/// Connect to the target and pump bytes both ways until either side closes or the link is
/// cut.
fn forward(client: TcpStream, target: SocketAddr, state: &Arc<Mutex<State>>) {
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        close(&client);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        close(&client);
        close(&upstream);
        return;
    };
    let id = {
        let mut st = state.lock().unwrap();
        if st.mode != Mode::Forward {
            // Cut while we were connecting.
            drop(st);
            close(&client);
            close(&upstream);
            return;
        }
        st.next_id += 1;
        let id = st.next_id;
        st.links.push((id, c3, u3));
        id
    };
    let back = std::thread::spawn(move || pump(u2, c2));
    pump(client, upstream);
    let _ = back.join();
    state.lock().unwrap().links.retain(|(i, _, _)| *i != id);
}

/// Copy `from` → `to`; at the end, close `from` for reading and `to` for writing.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
