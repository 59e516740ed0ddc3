//! A real HTTP receiver for webhook sink tests: an actix-web server on an ephemeral port in a
//! thread of its own, answering each POST as a script says and keeping what it received.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

/// How the receiver answers one POST.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status (200 takes the batch), with an optional `Retry-After` in seconds.
    Status(u16, Option<u64>, &'static str),
    /// Say nothing for this long, then 200 (the client has usually given up by then); the
    /// POST stays recorded with status 0 (not taken).
    Hang(Duration),
    /// A slow receiver: wait this long, then 200. The POST is recorded as taken (200) only
    /// once the wait is over (status 0 until then, or for good when the client went away
    /// and the server dropped the request).
    Slow(Duration),
    /// Wait this long, then answer this status (recorded, like `Slow`, once answered).
    Late(Duration, u16, &'static str),
}

impl Answer {
    /// 200, batch taken.
    pub fn ok() -> Answer {
        Answer::Status(200, None, "")
    }
}

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Post {
    pub at: Instant,
    /// Status answered (0 for a hang, or a slow answer not given yet).
    pub status: u16,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    pub headers: HashMap<String, String>,
    /// The body as received (NDJSON: one envelope per line, each line ended by `\n`).
    pub body: String,
    pub envelopes: Vec<Value>,
}

#[derive(Default)]
struct Script {
    next: VecDeque<Answer>,
    /// When the script is empty.
    otherwise: Option<Answer>,
    posts: Vec<Post>,
}

/// See module docs; stops when dropped.
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
    server: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    script: web::Data<Mutex<Script>>,
) -> HttpResponse {
    let answer = {
        let mut s = script.lock().unwrap();
        s.next
            .pop_front()
            .or_else(|| s.otherwise.clone())
            .unwrap_or_else(Answer::ok)
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let envelopes: Vec<Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = match &answer {
        Answer::Status(s, _, _) => *s,
        Answer::Hang(_) | Answer::Slow(_) | Answer::Late(..) => 0,
    };
    let index = {
        let mut s = script.lock().unwrap();
        s.posts.push(Post {
            at: Instant::now(),
            status,
            idempotency_key: header("idempotency-key"),
            content_type: header("content-type"),
            headers,
            body: text,
            envelopes,
        });
        s.posts.len() - 1
    };
    match answer {
        Answer::Status(s, retry_after, body) => {
            let mut r =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status"));
            if let Some(secs) = retry_after {
                r.insert_header(("Retry-After", secs.to_string()));
            }
            r.body(body)
        }
        Answer::Hang(d) => {
            tokio::time::sleep(d).await;
            HttpResponse::Ok().finish()
        }
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            script.lock().unwrap().posts[index].status = 200;
            HttpResponse::Ok().finish()
        }
        Answer::Late(d, s, body) => {
            tokio::time::sleep(d).await;
            script.lock().unwrap().posts[index].status = s;
            HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status"))
                .body(body)
        }
    }
}

impl Receiver {
    /// Start a receiver answering 200 to everything.
    pub fn start() -> Receiver {
        Self::start_with(None)
    }

    /// Start a receiver serving HTTPS on `https://localhost:PORT/ingest` with a fresh
    /// self-signed certificate; returns it and the certificate's PEM (a private CA to trust).
    pub fn start_tls() -> (Receiver, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server certificate");
        let mut r = Self::start_with(Some(config));
        r.url = r.url.replace("http://127.0.0.1", "https://localhost");
        (r, pem)
    }

    fn start_with(tls: Option<rustls::ServerConfig>) -> Receiver {
        let script = Arc::new(Mutex::new(Script::default()));
        let data = web::Data::from(script.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(256 << 20))
                        .default_service(web::to(receive))
                })
                .workers(2)
                .shutdown_timeout(0);
                let server = match tls {
                    Some(config) => server.bind_rustls_0_23("127.0.0.1:0", config),
                    None => server.bind("127.0.0.1:0"),
                }
                .expect("bind the receiver");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).expect("send the address");
                let _ = server.await;
            })
        });
        let (addr, server) = rx.recv().expect("the receiver started");
        Receiver {
            url: format!("http://{addr}/ingest"),
            script,
            server,
            thread: Some(thread),
        }
    }

    /// Answer the next POSTs with `answers`, in order.
    pub fn script(&self, answers: &[Answer]) {
        self.script
            .lock()
            .unwrap()
            .next
            .extend(answers.iter().cloned());
    }

    /// Answer every POST after the script with `answer` (`None`: 200).
    pub fn otherwise(&self, answer: Option<Answer>) {
        self.script.lock().unwrap().otherwise = answer;
    }

    /// Every POST so far.
    pub fn posts(&self) -> Vec<Post> {
        self.script.lock().unwrap().posts.clone()
    }

    /// Envelopes of POSTs answered 2xx (what the receiver took), in arrival order.
    pub fn taken(&self) -> Vec<Value> {
        self.posts()
            .into_iter()
            .filter(|p| (200..300).contains(&p.status))
            .flat_map(|p| p.envelopes)
            .collect()
    }

    /// Wait until the receiver saw at least `n` POSTs (or panic after `limit`); returns them.
    pub fn wait_for_posts(&self, n: usize, limit: Duration) -> Vec<Post> {
        let until = Instant::now() + limit;
        loop {
            let posts = self.posts();
            if posts.len() >= n {
                return posts;
            }
            assert!(
                Instant::now() < until,
                "the receiver saw {} POSTs of {n} after {limit:?}",
                posts.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until the receiver took envelopes with `n` distinct ids (or panic after `limit`).
    pub fn wait_for_ids(&self, n: usize, limit: Duration) -> Vec<Value> {
        let until = Instant::now() + limit;
        loop {
            let taken = self.taken();
            let ids: std::collections::HashSet<String> =
                taken.iter().map(|e| e["id"].to_string()).collect();
            if ids.len() >= n {
                return taken;
            }
            assert!(
                Instant::now() < until,
                "the receiver took {} distinct ids of {n} after {limit:?}",
                ids.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = futures_lite_stop(&self.server);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stop the server without an async context (drop runs on the test's thread).
fn futures_lite_stop(server: &actix_web::dev::ServerHandle) -> Option<()> {
    let stop = server.stop(false);
    std::thread::spawn(move || actix_rt::System::new().block_on(stop))
        .join()
        .ok()
}
