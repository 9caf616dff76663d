//! [`ConnectorProcess`]: a built connector binary run as the platform runs it, on free loopback
//! ports, for the tests that must kill a real process (SIGKILL, SIGTERM) or measure one (CPU
//! seconds, RSS) and read what it logged.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::harness::{EventView, StreamDecl, fetch_events, grpc_client, has_status};
use crate::events::State;
use crate::proto;
use crate::proto::connector_service_client::ConnectorServiceClient;

/// How long [`ConnectorProcess`] waits for a stream to become healthy or the process to exit.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a [`ConnectorProcess`]; [`ConnectorProcess::builder`] makes one.
#[derive(Debug, Clone)]
pub struct ProcessBuilder {
    binary: PathBuf,
    connector_id: String,
    state_dir: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    rust_log: String,
}

impl ProcessBuilder {
    /// Keeps the source positions in `dir` (a restarted process must get the same one).
    pub fn state_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.state_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Runs in JetStream mode.
    pub fn jetstream(self) -> Self {
        self.arg("--transport").arg("jetstream")
    }

    /// Adds one command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The log filter (`RUST_LOG`); `warn` unless set.
    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.rust_log = filter.into();
        self
    }

    /// Starts the process; its stdout and stderr go to a log file [`ConnectorProcess::logs`]
    /// reads. Panics if the binary does not start.
    pub fn start(self) -> ConnectorProcess {
        let listen = free_port();
        let metrics = free_port();
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| scratch.path().join("state"));
        let log_path = scratch.path().join("connector.log");
        let log = std::fs::File::create(&log_path).expect("a log file");
        let log_err = log.try_clone().expect("a second handle on the log file");
        let child = Command::new(&self.binary)
            .args(["--connector-id", &self.connector_id])
            .args(["--listen", &listen.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--nats-url", &super::nats_url()])
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.binary.display()));
        ConnectorProcess {
            child,
            connector_id: self.connector_id,
            grpc_addr: listen,
            metrics_addr: metrics,
            log_path,
            client: None,
            _scratch: scratch,
        }
    }
}

/// A connector binary running as a child process. Dropping it kills the process.
pub struct ConnectorProcess {
    child: Child,
    connector_id: String,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    log_path: PathBuf,
    client: Option<ConnectorServiceClient<Channel>>,
    _scratch: tempfile::TempDir,
}

impl std::fmt::Debug for ConnectorProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorProcess")
            .field("pid", &self.child.id())
            .field("connector_id", &self.connector_id)
            .field("grpc_addr", &self.grpc_addr)
            .finish()
    }
}

impl ConnectorProcess {
    /// How to run `binary` (in a connector's own tests: `env!("CARGO_BIN_EXE_<name>")`) as
    /// connector instance `connector_id`, against the test NATS server.
    pub fn builder(binary: impl AsRef<Path>, connector_id: impl Into<String>) -> ProcessBuilder {
        ProcessBuilder {
            binary: binary.as_ref().to_path_buf(),
            connector_id: connector_id.into(),
            state_dir: None,
            args: Vec::new(),
            env: Vec::new(),
            rust_log: "warn".to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The connector instance id.
    pub fn connector_id(&self) -> &str {
        &self.connector_id
    }

    /// The gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The metrics port's address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// A gRPC client, connected on first use (retrying while the process starts).
    pub async fn client(&mut self) -> &mut ConnectorServiceClient<Channel> {
        if self.client.is_none() {
            let client = grpc_client(&self.endpoint())
                .await
                .unwrap_or_else(|e| panic!("the connector's gRPC port never answered: {e}"));
            self.client = Some(client);
        }
        self.client.as_mut().expect("just connected")
    }

    /// Declares `streams` (SetPayload), failing with the gRPC status if refused.
    pub async fn set_streams(&mut self, streams: &[StreamDecl]) -> Result<(), tonic::Status> {
        let request = proto::SetPayloadRequest {
            connector_id: self.connector_id.clone(),
            payloads: streams.iter().map(StreamDecl::to_payload).collect(),
        };
        self.client().await.set_payload(request).await.map(|_| ())
    }

    /// Declares `streams` and waits until every one of them is HEALTHY.
    pub async fn apply(&mut self, streams: &[StreamDecl]) {
        self.set_streams(streams).await.expect("streams accepted");
        for stream in streams {
            self.wait_for_state(&stream.id, State::Healthy, TIMEOUT)
                .await;
        }
    }

    /// The current events.
    pub async fn events(&mut self) -> Vec<EventView> {
        let connector_id = self.connector_id.clone();
        fetch_events(self.client().await, &connector_id).await
    }

    /// Waits until the stream's status is `state`; panics with the events and the log after
    /// `timeout`.
    pub async fn wait_for_state(&mut self, stream_id: &str, state: State, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events().await;
            if has_status(&events, stream_id, state) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "stream {stream_id} did not reach {state:?} within {timeout:?}; events: {events:#?}\nlog:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// CPU seconds (user + system) the process used so far, from `/proc` (Linux).
    pub fn cpu_seconds(&self) -> f64 {
        proc_stat_cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }

    /// The context switches of the process's threads so far (summed over its threads), from
    /// `/proc` (Linux): how often a thread ran out of work and was woken again, and how often
    /// the scheduler took its core away while it still had work.
    pub fn context_switches(&self) -> ContextSwitches {
        proc_context_switches(self.pid()).unwrap_or_default()
    }

    /// Resident memory now and at its peak, in bytes, from `/proc` (Linux).
    pub fn memory(&self) -> ProcessMemory {
        proc_status_memory(self.pid()).unwrap_or_default()
    }

    /// Open file descriptors (files, sockets, pipes) of the process, from `/proc` (Linux): what
    /// a connection leak makes grow.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// Threads of the process, from `/proc` (Linux).
    pub fn threads(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The value of the metric `name` (a series without labels) on the metrics port, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = super::harness::http_get(self.metrics_addr, "/metrics").await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// SIGKILL: no draining, no clean close; returns once the process is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill();
        self.wait_exit().await;
    }

    /// SIGTERM: the connector drains and exits; returns once it has, panicking after a minute.
    pub async fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM runs");
        assert!(status.success(), "kill -TERM failed");
        self.wait_exit().await;
    }

    async fn wait_exit(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "the connector did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Resident now (`VmRSS`).
    pub rss: u64,
    /// The most it has been resident (`VmHWM`).
    pub peak_rss: u64,
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// User plus system CPU seconds of `pid`, from `/proc/<pid>/stat`.
pub fn proc_stat_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / CLOCK_TICKS_PER_SECOND)
}

/// Linux's USER_HZ, the unit of `/proc/<pid>/stat` times, 100 on every architecture it runs.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Context switches of a process, summed over its threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextSwitches {
    /// A thread gave up its core because it had nothing to do (it sleeps until woken): the
    /// wake-ups a record path costs.
    pub voluntary: u64,
    /// The scheduler took the core from a thread that still had work (another process wanted
    /// it): the sign of a machine with more work than cores.
    pub involuntary: u64,
}

impl ContextSwitches {
    /// The switches since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }
}

/// The context switches of every thread of `pid`, from `/proc/<pid>/task/<tid>/status` (a
/// process's own `status` counts only its main thread).
pub fn proc_context_switches(pid: u32) -> Option<ContextSwitches> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = ContextSwitches::default();
    for task in tasks.flatten() {
        // A thread that ended meanwhile has no status any more: it counts for nothing.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let thread = switches_in(&status);
        total.voluntary += thread.voluntary;
        total.involuntary += thread.involuntary;
    }
    Some(total)
}

/// The `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of a thread's `/proc`
/// status text (0 for a line that is missing).
fn switches_in(status: &str) -> ContextSwitches {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    ContextSwitches {
        voluntary: field("voluntary_ctxt_switches:"),
        involuntary: field("nonvoluntary_ctxt_switches:"),
    }
}

/// `VmRSS` and `VmHWM` of `pid`, from `/proc/<pid>/status`.
pub fn proc_status_memory(pid: u32) -> Option<ProcessMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some(ProcessMemory {
        rss: kib("VmRSS:")?,
        peak_rss: kib("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let cpu = proc_stat_cpu_seconds(pid).expect("/proc/self/stat parses");
        assert!(cpu >= 0.0);
        let memory = proc_status_memory(pid).expect("/proc/self/status parses");
        assert!(memory.rss > 0 && memory.peak_rss >= memory.rss);
    }

    #[test]
    fn every_thread_s_wake_ups_are_counted() {
        let (report, reported) = std::sync::mpsc::channel::<Option<u64>>();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        // A thread that sleeps (and is woken) ten times, then reports its own count and stays
        // alive until the process total was read.
        let sleeper = std::thread::spawn(move || {
            let own = || {
                std::fs::read_to_string("/proc/thread-self/status")
                    .ok()
                    .map(|status| switches_in(&status).voluntary)
            };
            let (_keep, idle) = std::sync::mpsc::channel::<()>();
            let before = own();
            for _ in 0..10 {
                let _ = idle.recv_timeout(std::time::Duration::from_millis(1));
            }
            let after = own();
            let _ = report.send(after);
            let _ = finished.recv();
            before.zip(after).map(|(b, a)| a - b)
        });
        let own = reported
            .recv()
            .expect("the sleeper reports")
            .expect("its status parses");
        let total = proc_context_switches(std::process::id())
            .expect("/proc parses")
            .voluntary;
        let _ = finish.send(());
        let slept = sleeper
            .join()
            .expect("the sleeper")
            .expect("its status parses");
        assert!(slept >= 10, "ten sleeps, {slept} wake-ups counted");
        assert!(
            total >= own,
            "the process total {total} holds the thread's {own}"
        );
        assert!(proc_context_switches(u32::MAX).is_none());
    }

    #[test]
    fn both_kinds_of_switch_are_read_from_a_status() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(
            switches_in(status),
            ContextSwitches {
                voluntary: 12,
                involuntary: 3
            }
        );
        assert_eq!(switches_in("Name:\tx\n"), ContextSwitches::default());
        let later = ContextSwitches {
            voluntary: 20,
            involuntary: 4,
        };
        assert_eq!(
            later.since(switches_in(status)),
            ContextSwitches {
                voluntary: 8,
                involuntary: 1
            }
        );
    }
}
