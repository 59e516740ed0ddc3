//! A real etcd cluster for integration tests: N members (1 or 3) of the installed `etcd`
//! binary (Debian's etcd-server 3.4; `tests/run.sh` installs it) on loopback, each on free
//! ephemeral ports with its own data directory, with short raft timings (heartbeat 50 ms,
//! election 500 ms, pre-vote on) so that elections take well under a second.
//!
//! Members can be killed (SIGKILL), frozen (SIGSTOP) and thawed (SIGCONT), and restarted
//! on their data directory and ports. Dropping the cluster kills every member.
//!
//! ```ignore
//! let Some(cluster) = EtcdCluster::try_start_or_skip("my_test", 3) else { return };
//! let endpoints = cluster.endpoints(); // ["http://127.0.0.1:PORT", ...]
//! let leader = cluster.leader().expect("a leader");
//! cluster.kill(leader);
//! cluster.wait_healthy(Duration::from_secs(10));
//! ```

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Raft heartbeat interval of the test members (ms).
pub const HEARTBEAT_MS: u64 = 50;
/// Raft election timeout of the test members (ms).
pub const ELECTION_MS: u64 = 500;

/// How long a fresh cluster may take to elect a leader and answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at starting a fresh cluster (a port picked by binding port 0 and releasing it
/// can be taken by someone else before etcd binds it).
const START_ATTEMPTS: usize = 4;

/// The `etcd` binary: `$SLUICE_ETCD` when set, else `etcd` on `PATH`; `None` if absent.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_ETCD") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

/// Print the visible skip line for `test` (written straight to the process's stderr, so
/// the test harness's output capture does not swallow it).
pub fn print_skip(test: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: etcd not installed (tests/run.sh installs etcd-server)"
    );
}

/// Run state of one member, as the harness left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Running,
    /// SIGSTOP'ed: the process exists, holds its sockets and answers nothing.
    Stopped,
    /// SIGKILL'ed (or never started again since).
    Killed,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    state: MemberState,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (and reap it if so).
    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL works on a stopped process too
            let _ = c.wait();
        }
        self.state = MemberState::Killed;
    }
}

/// A running etcd cluster of real processes.
pub struct EtcdCluster {
    binary: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    agent: ureq::Agent,
    dir: tempfile::TempDir,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(1000)))
        .build()
        .into()
}

/// `n` distinct free loopback ports: all bound at once (so they differ), then released.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The last `max` bytes of a file, for failure messages.
fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// A JSON field that the etcd gateway renders as a string (uint64) or a number.
fn u64_field(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

impl EtcdCluster {
    /// Start an `n`-member cluster and wait until it is healthy; panics when `etcd` is not
    /// installed (use [`EtcdCluster::try_start`] to skip instead).
    pub fn start(n: usize) -> EtcdCluster {
        Self::try_start(n)
            .expect("etcd is not installed (tests/run.sh installs Debian's etcd-server)")
    }

    /// Like [`EtcdCluster::start`], but `None` when the `etcd` binary is missing.
    pub fn try_start(n: usize) -> Option<EtcdCluster> {
        assert!(n >= 1, "a cluster needs at least one member");
        let binary = etcd_binary()?;
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::launch(&binary, n) {
                Ok(c) => return Some(c),
                Err(why) => {
                    let _ = writeln!(failures, "attempt {attempt}: {why}");
                }
            }
        }
        panic!("could not start a {n}-member etcd cluster:\n{failures}");
    }

    /// [`EtcdCluster::try_start`], printing `SKIP <test>: etcd not installed ...` when it
    /// returns `None`.
    pub fn try_start_or_skip(test: &str, n: usize) -> Option<EtcdCluster> {
        let c = Self::try_start(n);
        if c.is_none() {
            print_skip(test);
        }
        c
    }

    /// One attempt: fresh ports and directories; `Err` (with the logs) if a member exits
    /// during startup (e.g. its port was taken) or the cluster is not healthy in time.
    fn launch(binary: &Path, n: usize) -> Result<EtcdCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-etcd-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
                state: MemberState::Killed,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "sluice-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = EtcdCluster {
            binary: binary.to_path_buf(),
            members,
            initial_cluster,
            token,
            agent: agent(),
            dir,
        };
        for i in 0..n {
            cluster.spawn(i, "new")?;
        }
        cluster.await_healthy(START_TIMEOUT)?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<(), String> {
        let m = &self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| format!("open {}: {e}", m.log.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .arg("--pre-vote")
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        let m = &mut self.members[i];
        m.child = Some(child);
        m.state = MemberState::Running;
        Ok(())
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The client URL of every member, `http://127.0.0.1:PORT`, by member index.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// The client address of member `i` (e.g. for a [`super::proxy::TcpProxy`]).
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.members[i].client_port))
    }

    /// The data directory of member `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// What the harness did to member `i` last.
    pub fn state(&self, i: usize) -> MemberState {
        self.members[i].state
    }

    /// The members currently running (not killed, not stopped).
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].state == MemberState::Running)
            .collect()
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i]
            .pid()
            .unwrap_or_else(|| panic!("member {i} is not running"));
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// SIGSTOP member `i`: it keeps its sockets open but answers nothing (a hung node).
    pub fn stop(&mut self, i: usize) {
        self.signal(i, "STOP");
        self.members[i].state = MemberState::Stopped;
    }

    /// SIGCONT member `i` after [`EtcdCluster::stop`].
    pub fn cont(&mut self, i: usize) {
        self.signal(i, "CONT");
        self.members[i].state = MemberState::Running;
    }

    /// Start member `i` again on its data directory and ports, as an existing member
    /// (killing it first if it still runs). Does not wait: see [`EtcdCluster::wait_healthy`].
    pub fn restart(&mut self, i: usize) {
        self.members[i].kill();
        if let Err(e) = self.spawn(i, "existing") {
            panic!("restart member {i}: {e}");
        }
    }

    /// `/health` of member `i` (`false` when it does not answer within a second).
    pub fn member_healthy(&self, i: usize) -> bool {
        let url = format!("{}/health", self.members[i].client_url());
        let Ok(mut r) = self.agent.get(&url).call() else {
            return false;
        };
        if r.status() != 200 {
            return false;
        }
        r.body_mut()
            .read_json::<Value>()
            .map(|v| v["health"] == "true")
            .unwrap_or(false)
    }

    /// `/v3/maintenance/status` of member `i`: (its member id, the leader it knows (0 =
    /// none), raft term); `None` when it does not answer.
    pub fn member_status(&self, i: usize) -> Option<(u64, u64, u64)> {
        let url = format!("{}/v3/maintenance/status", self.members[i].client_url());
        let mut r = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send("{}")
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        let v: Value = r.body_mut().read_json().ok()?;
        let id = u64_field(&v["header"]["member_id"])?;
        let leader = u64_field(&v["leader"]).unwrap_or(0);
        let term = u64_field(&v["raftTerm"])
            .or_else(|| u64_field(&v["raft_term"]))
            .or_else(|| u64_field(&v["header"]["raft_term"]))
            .unwrap_or(0);
        Some((id, leader, term))
    }

    /// Index of the current leader among the running members, as the running members see
    /// it (the report with the highest raft term wins); `None` when there is none.
    pub fn leader(&self) -> Option<usize> {
        let statuses: Vec<(usize, u64, u64, u64)> = self
            .running()
            .into_iter()
            .filter_map(|i| self.member_status(i).map(|(id, l, t)| (i, id, l, t)))
            .collect();
        let (_, _, leader, _) = statuses
            .iter()
            .filter(|s| s.2 != 0)
            .max_by_key(|s| s.3)
            .copied()?;
        statuses.iter().find(|s| s.1 == leader).map(|s| s.0)
    }

    /// Wait for a leader seen by the running members; panics after `timeout`.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(
                Instant::now() < until,
                "no etcd leader after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every running member answers `/health` (which needs a leader and a quorum)
    /// and they agree on a leader; panics with the members' logs after `timeout`.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        if let Err(e) = self.await_healthy(timeout) {
            panic!("{e}");
        }
    }

    fn await_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let until = Instant::now() + timeout;
        loop {
            for i in self.running() {
                if self.members[i].exited() {
                    let m = &mut self.members[i];
                    m.child = None;
                    m.state = MemberState::Killed;
                    return Err(format!(
                        "etcd member {i} exited; its log ends with:\n{}",
                        tail(&m.log, 3000)
                    ));
                }
            }
            let running = self.running();
            if !running.is_empty()
                && running.iter().all(|&i| self.member_healthy(i))
                && self.leader().is_some()
            {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "etcd cluster not healthy after {timeout:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let _ = writeln!(
                s,
                "--- etcd member {i} ({:?}, client {}, peer {}) log tail:\n{}",
                m.state,
                m.client_port,
                m.peer_port,
                tail(&m.log, 2000)
            );
        }
        s
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// Whether something accepts TCP connections on `addr` (within 200 ms).
pub fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
