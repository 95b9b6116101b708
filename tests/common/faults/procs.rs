//! Child processes of the fault suite — `polos scheduler` replicas (the real binary) and worker
//! processes (this test binary re-executed) — each with its stderr in a file, so a red run shows
//! what every process logged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use polos::nats::server::{send_signal, Signal};

use super::workload::{EFFECTS_ENV, STEP_MS_ENV};

/// The test that, started with [`EFFECTS_ENV`] set, is a worker process.
pub const WORKER_ENTRY: &str = "it::faults::worker_child";

/// What a child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `polos scheduler` replica.
    Scheduler,
    /// A worker process running the fault suite's workflow.
    Worker,
}

/// One child process; SIGKILLed on drop.
pub struct Proc {
    /// `scheduler-1`, `worker-2`, …
    pub name: String,
    /// What it is.
    pub role: Role,
    /// The process.
    child: Child,
    /// Its stderr.
    pub log: PathBuf,
    /// Set when the suite killed it on purpose: its death is the fault, not a finding.
    pub killed: bool,
    /// Set while it is stopped by SIGSTOP.
    pub paused: bool,
}

/// The environment every polos child shares: where NATS is and the settings under test.
#[derive(Debug, Clone)]
pub struct ChildEnv {
    /// `POLOS_*` variables.
    pub vars: Vec<(String, String)>,
    /// The scenario's directory (working directory of each child, so no `polos.toml` is read).
    pub dir: PathBuf,
    /// The effects file of the workers.
    pub effects: PathBuf,
    /// How long step two works, in ms.
    pub step_ms: u64,
}

impl Proc {
    fn spawn(name: String, role: Role, mut command: Command, env: &ChildEnv) -> Proc {
        let log = env.dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("create log {}: {e}", log.display()));
        // Only the variables under test: a developer's own POLOS_* must not leak in.
        for (key, _) in std::env::vars() {
            if key.starts_with("POLOS_") && key != "POLOS_NATS_SERVER" {
                command.env_remove(key);
            }
        }
        command
            .envs(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("POLOS_NATS__NAME", &name)
            // Plain logs: they are read in files, not terminals.
            .env("NO_COLOR", "1")
            .current_dir(&env.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name,
            role,
            child,
            log,
            killed: false,
            paused: false,
        }
    }

    /// Starts `polos scheduler`.
    pub fn scheduler(n: usize, env: &ChildEnv) -> Proc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_polos"));
        command.arg("scheduler");
        Proc::spawn(format!("scheduler-{n}"), Role::Scheduler, command, env)
    }

    /// Starts a worker: this test binary, running only [`WORKER_ENTRY`].
    pub fn worker(n: usize, env: &ChildEnv) -> Proc {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                WORKER_ENTRY,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EFFECTS_ENV, &env.effects)
            .env(STEP_MS_ENV, env.step_ms.to_string());
        Proc::spawn(format!("worker-{n}"), Role::Worker, command, env)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9, and wait for it.
    pub fn kill(&mut self) {
        self.killed = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes with its connections open.
    pub fn pause(&mut self) {
        send_signal(self.pid(), Signal::Stop).expect("SIGSTOP");
        self.paused = true;
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&mut self) {
        send_signal(self.pid(), Signal::Cont).expect("SIGCONT");
        self.paused = false;
    }

    /// `Some(status)` when the process has ended.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_lines(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.paused {
            let _ = send_signal(self.pid(), Signal::Cont);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a text file (empty when it cannot be read).
pub fn tail_lines(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
