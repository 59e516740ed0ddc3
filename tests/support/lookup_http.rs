//! A real HTTP lookup service for the tests: an actix-web server on an ephemeral port (or a
//! given one) in a thread of its own, answering each request as the test's function says and
//! counting what it saw — requests, TCP connections accepted, requests in flight at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One request as the service saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query exactly as sent (still percent-encoded).
    pub target: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// How the service answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = Box<dyn Fn(&Seen) -> Reply + Send + Sync>;

struct State {
    handler: Handler,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// See module docs; stops when dropped.
pub struct Service {
    pub addr: std::net::SocketAddr,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let seen = Seen {
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let reply = (state.handler)(&seen);
    state.seen.lock().unwrap().push(seen);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut r = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(reply.status).expect("a valid status"),
    );
    for (k, v) in &reply.headers {
        r.insert_header((k.as_str(), v.as_str()));
    }
    r.body(reply.body)
}

impl Service {
    /// Serve on an ephemeral port of 127.0.0.1.
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Service {
        Self::start_with(0, None, Box::new(handler))
    }

    /// Serve on 127.0.0.1:`port`.
    pub fn start_on(
        port: u16,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Service {
        Self::start_with(port, None, Box::new(handler))
    }

    /// Serve HTTPS with a fresh self-signed certificate for `localhost`; returns the service
    /// and the certificate's PEM (the CA to trust).
    pub fn start_tls(
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> (Service, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        let pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("the server certificate");
        (Self::start_with(0, Some(config), Box::new(handler)), pem)
    }

    fn start_with(port: u16, tls: Option<rustls::ServerConfig>, handler: Handler) -> Service {
        let state = Arc::new(State {
            handler,
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let data = web::Data::from(state.clone());
        let counter = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(handle))
                })
                .on_connect(move |_, _| {
                    counter.connections.fetch_add(1, Ordering::SeqCst);
                })
                .workers(2)
                .shutdown_timeout(0);
                let addr = ("127.0.0.1", port);
                let server = match tls {
                    Some(config) => server.bind_rustls_0_23(addr, config),
                    None => server.bind(addr),
                }
                .expect("bind the lookup service");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).expect("send the address");
                let _ = server.await;
            })
        });
        let (addr, server) = rx.recv().expect("the lookup service started");
        Service {
            addr,
            state,
            server,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The most requests that were being handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Stopping is a future; drop runs on the test's thread, outside any runtime.
        let stop = self.server.stop(false);
        let _ = std::thread::spawn(move || actix_rt::System::new().block_on(stop)).join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
