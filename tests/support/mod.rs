//! Shared test harness: runs the real `sluice` binary on an ephemeral port in a temporary
//! directory and talks HTTP to it with a real client.

#![allow(dead_code)]

pub mod cluster;
pub mod cql;
pub mod etcd;
pub mod faults;
pub mod leaving;
pub mod lookup_http;
pub mod proxy;
pub mod webhook;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// The sample table shipped in `config/`.
pub fn sample_table() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sample-users.jsonl")
}

/// An HTTP answer: status, headers (lower-case names) and body text.
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Assert an RFC 9457 problem with this status; returns the problem.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["type"].is_string() && p["title"].is_string() && p["detail"].is_string());
        p
    }
}

/// A running `sluice serve` and its working directory.
pub struct Service {
    child: Option<Child>,
    /// Working directory: config, sinks (`out.jsonl`, `dead.jsonl`), `checkpoints/`.
    pub dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
    pub base: String,
    agent: ureq::Agent,
}

/// A test config: each field is TOML lines added to that section; paths (table, sinks,
/// checkpoints) and an ephemeral port are filled in by the harness.
#[derive(Default)]
pub struct Config {
    pub server: String,
    pub pipeline: String,
    pub retry: String,
    pub lookup: String,
    pub memory: String,
    /// TOML of `[lookup.steps.*]` tables (a pipeline): when set, `[lookup.memory]` (the
    /// single lookup's table) is left out.
    pub steps: String,
    pub cql: String,
    pub checkpoint: String,
    /// TOML for `[output.cql]`; when set, `output.kind = "cql"`.
    pub output_cql: String,
    /// TOML for `[output.webhook]`; when set, `output.kind = "webhook"`.
    pub output_webhook: String,
    /// TOML for `[dead_letter.webhook]`; when set, `dead_letter.kind = "webhook"`.
    pub dead_webhook: String,
    /// `output.kind = "stdout"`: the service's stdout is appended to `out.jsonl` (or to
    /// `output_path`, e.g. `/dev/full`); the listening line then comes on stderr.
    pub output_stdout: bool,
    /// Replaces `output.path` (e.g. `/dev/full`, a file that cannot be written).
    pub output_path: Option<String>,
    /// TOML for `[cluster]` (empty: standalone).
    pub cluster: String,
    /// Extra environment for the process (e.g. [`faults::Faults::env`]).
    pub env: Vec<(String, String)>,
    /// Append the process's stderr (its logs) to this file instead of the test's stderr, as
    /// `nohup` or a unit file does (not with `output_stdout`).
    pub stderr_path: Option<PathBuf>,
}

impl Config {
    /// Render into a config file for a service whose files live in `dir`.
    pub fn render(&self, dir: &Path) -> String {
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nworkers = 2\nshutdown_grace_ms = 20000\n{}\n\
             [pipeline]\n{}\n[retry]\n{}\n[lookup]\n{}\n\
             {}\n[lookup.cql]\n{}\n\
             [output]\nkind = \"{}\"\npath = \"{}\"\n[output.cql]\n{}\n[output.webhook]\n{}\n\
             [dead_letter]\nkind = \"{}\"\npath = \"{}\"\n[dead_letter.webhook]\n{}\n\
             [checkpoint]\ndir = \"{}\"\n{}{}\n[cluster]\n{}\n",
            self.server,
            self.pipeline,
            self.retry,
            self.lookup,
            if self.steps.is_empty() {
                format!(
                    "[lookup.memory]\ntable = \"{}\"\n{}",
                    sample_table().display(),
                    self.memory
                )
            } else {
                self.steps.clone()
            },
            self.cql,
            if !self.output_cql.is_empty() {
                "cql"
            } else if !self.output_webhook.is_empty() {
                "webhook"
            } else if self.output_stdout {
                "stdout"
            } else {
                "file"
            },
            self.output_path
                .clone()
                .unwrap_or_else(|| dir.join("out.jsonl").display().to_string()),
            self.output_cql,
            self.output_webhook,
            if self.dead_webhook.is_empty() {
                "file"
            } else {
                "webhook"
            },
            dir.join("dead.jsonl").display(),
            self.dead_webhook,
            dir.join("checkpoints").display(),
            self.checkpoint,
            if self.checkpoint.contains("interval_ms") {
                ""
            } else {
                "interval_ms = 50\n"
            },
            self.cluster,
        )
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("HTTP request failed");
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

impl Service {
    /// Start `sluice serve` with `config` in a fresh directory and wait until it is ready.
    pub fn start(config: &Config) -> Service {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut svc = Service::start_in(config, tmp.path());
        svc._owned = Some(tmp);
        svc
    }

    /// Start `sluice serve` in `dir` (kept by the caller: restarts reuse it).
    pub fn start_in(config: &Config, dir: &Path) -> Service {
        Service::start_in_with_text(config, dir, &config.render(dir))
    }

    /// [`Service::start_in`] with the config file's text given (e.g. `config.render(dir)`
    /// edited); `config` still says how stdout is wired.
    pub fn start_in_with_text(config: &Config, dir: &Path, text: &str) -> Service {
        let path = dir.join("sluice.toml");
        std::fs::write(&path, text).expect("write config");
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .envs(config.env.iter().map(|(k, v)| (k, v)));
        let mut line = String::new();
        let child = if config.output_stdout {
            let target = config
                .output_path
                .clone()
                .map_or_else(|| dir.join("out.jsonl"), PathBuf::from);
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&target)
                .expect("open the stdout file");
            let mut child = cmd
                .stdout(Stdio::from(out))
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sluice");
            let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
            stderr.read_line(&mut line).expect("read listening line");
            // The rest of stderr (logs) goes on to the test's stderr.
            std::thread::spawn(move || {
                let mut rest = String::new();
                while stderr.read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {
                    eprint!("{rest}");
                    rest.clear();
                }
            });
            child
        } else {
            let stderr = match &config.stderr_path {
                Some(p) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .expect("open the stderr file"),
                ),
                None => Stdio::inherit(),
            };
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .expect("spawn sluice");
            let stdout = child.stdout.take().expect("stdout");
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read listening line");
            child
        };
        let base = line
            .trim()
            .strip_prefix("sluice listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let svc = Service {
            child: Some(child),
            dir: dir.to_path_buf(),
            _owned: None,
            base,
            agent: agent(),
        };
        svc.wait_ready(Duration::from_secs(30));
        svc
    }

    /// Poll `/readyz` until it answers `status` with a body containing `contains` (or panic
    /// after `limit`); returns that body.
    pub fn wait_readyz(&self, status: u16, contains: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            let r = self.get("/readyz");
            if r.status == status && r.body.contains(contains) {
                return r.body;
            }
            assert!(
                Instant::now() < until,
                "/readyz never answered {status} with {contains:?} in {limit:?}; last: {} {}",
                r.status,
                r.body
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until `/readyz` answers 200 (restore finished).
    pub fn wait_ready(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.get("/readyz").status != 200 {
            assert!(Instant::now() < until, "not ready after {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the process in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time the process has used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses; utime and
        // stime are the 14th and 15th fields, in clock ticks (100 per second on Linux).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    /// Send a signal (e.g. "KILL", "TERM") without waiting.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status();
        }
    }

    /// kill -9: no flush, no checkpoint, nothing graceful.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// POST a JSON array, or `None` when the connection failed (the node was killed).
    pub fn try_post_json(&self, path: &str, records: &[Value]) -> Option<Reply> {
        let body = serde_json::to_vec(records).expect("serialize");
        self.agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(&body[..])
            .ok()
            .map(|r| reply(Ok(r)))
    }

    /// POST `body` with a content type (and optional bearer token).
    pub fn post_as(
        &self,
        path: &str,
        content_type: Option<&str>,
        token: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        reply(req.send(body))
    }

    /// POST a JSON array of records.
    pub fn post_json(&self, path: &str, records: &[Value]) -> Reply {
        let body = serde_json::to_vec(records).expect("serialize");
        self.post_as(path, Some("application/json"), None, &body)
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Reply {
        reply(self.agent.get(format!("{}{path}", self.base)).call())
    }

    /// POST records in batches, waiting and retrying on 429; returns every accepted id.
    pub fn post_all(&self, records: &[Value], batch: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in records.chunks(batch) {
            loop {
                let r = self.post_json("/v1/records", chunk);
                match r.status {
                    202 => {
                        let v = r.json();
                        assert_eq!(v["accepted"], chunk.len());
                        ids.extend(
                            v["ids"]
                                .as_array()
                                .expect("ids")
                                .iter()
                                .map(|i| i.as_str().expect("id").to_string()),
                        );
                        break;
                    }
                    429 => {
                        assert!(r.header("retry-after").is_some());
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    s => panic!("unexpected status {s}: {}", r.body),
                }
            }
        }
        ids
    }

    /// `/v1/status` as JSON.
    pub fn status(&self) -> Value {
        self.get("/v1/status").json()
    }

    /// Wait until `/v1/status.pending` is 0.
    pub fn wait_quiescent(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let s = self.status();
            if s["pending"] == 0 {
                return;
            }
            assert!(Instant::now() < until, "still pending after {limit:?}: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send SIGTERM without waiting for the exit.
    pub fn send_term(&self) {
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "kill -TERM failed");
        }
    }

    /// Wait up to `limit` for the process to end by itself (after [`Service::send_term`]);
    /// its exit code (`None`: killed by a signal, or still running after `limit`, when it
    /// is killed).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        wait_exit(&mut child, limit)
    }

    /// Send SIGTERM and wait for the process; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!("sluice did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop the service gracefully and read both sinks' envelopes.
    pub fn finish(mut self) -> (Vec<Value>, Vec<Value>) {
        assert_eq!(self.terminate(), Some(0), "graceful exit");
        (
            read_lines(&self.dir.join("out.jsonl")),
            read_lines(&self.dir.join("dead.jsonl")),
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every line of an NDJSON file as JSON (missing file = no lines).
pub fn read_lines(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Assert every accepted id appears exactly once across output and dead letters.
pub fn assert_exactly_once(ids: &[String], out: &[Value], dead: &[Value]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in out.iter().chain(dead) {
        *seen.entry(e["id"].as_str().expect("id")).or_default() += 1;
    }
    for id in ids {
        assert_eq!(
            seen.get(id.as_str()),
            Some(&1),
            "id {id} must appear exactly once"
        );
    }
    assert_eq!(seen.len(), ids.len(), "no unknown ids");
    assert_eq!(out.len() + dead.len(), ids.len(), "no duplicates");
}

/// `sluice serve --config NAME` in `dir` (logs at warn) with stdout and stderr as given.
pub fn spawn_serve(dir: &Path, name: &str, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(binary())
        .args(["serve", "--config", name])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn sluice")
}

/// Wait up to `limit` for `child` to exit: its exit code (`None` when killed by a signal or
/// still running after `limit`, when it is killed).
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `sluice serve --config NAME` in `dir` with `text` as the file, expected to exit on its own
/// (refusing to start): (exit code, stderr). A service still running after 20 s is killed
/// and `None` is its code.
pub fn serve_exit(dir: &Path, name: &str, text: &str) -> (Option<i32>, String) {
    use std::io::Read;
    std::fs::write(dir.join(name), text).expect("write config");
    let mut child = spawn_serve(dir, name, Stdio::null(), Stdio::piped());
    let code = wait_exit(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

/// A small tmpfs mounted for one test (needs root and mount rights; `None`, with a visible
/// `SKIP <test>: …` line, when the machine does not allow it). Unmounted when dropped.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mount a tmpfs of `size` (e.g. "4m").
    pub fn mount(size: &str, test: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIP {test}: cannot mount a tmpfs here (needs root and mount rights)");
            return None;
        }
        Some(SmallDisk { path, _dir: dir })
    }

    /// Fill the disk up; returns the filler to remove.
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        use std::io::Write;
        while f.write_all(&block).is_ok() {}
        // The last partial block too: not a byte left.
        while f.write_all(&[0u8; 512]).is_ok() {}
        while f.write_all(&[0u8]).is_ok() {}
        let _ = f.flush();
        filler
    }

    /// `mount -o remount,ro` (or back to `rw`): the command's error text when it failed.
    pub fn remount(&self, read_only: bool) -> Result<(), String> {
        let out = Command::new("mount")
            .args([
                "-o",
                if read_only {
                    "remount,ro"
                } else {
                    "remount,rw"
                },
            ])
            .arg(&self.path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l"]).arg(&self.path).status();
    }
}

/// The sum of a metric's series (every label set) in `/metrics` text.
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
