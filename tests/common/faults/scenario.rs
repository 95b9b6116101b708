//! One scenario: its own nats-server or cluster, two `polos scheduler` replicas, two worker
//! processes, `schedules` schedules on `* * * * *`, and one fault per consecutive minute
//! boundary. Every fault is timed against a boundary (the instant it must not disturb); the
//! expected (schedule, instant) pairs are every schedule at every one of those boundaries.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::StreamExt;
use polos::model::schedule_kv_key;

use super::garbage::{self, Planted};
use super::observer::Observer;
use super::procs::{ChildEnv, Proc, Role};
use super::topology::{Nats, Topology};
use super::verdict::{self, Row};
use super::workload::{Effects, WORKFLOW};

/// Lease TTL of the replicas: short, so a takeover fits well inside a minute.
pub const LEASE_TTL_SECS: u64 = 2;
/// Worker ack wait: a killed worker's runs are redelivered after this.
pub const ACK_WAIT_SECS: u64 = 5;
/// How long step two works.
pub const STEP_MS: u64 = 3000;

/// What happens around one minute boundary `B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the boundary must simply fire.
    None,
    /// kill -9 the replica holding the lease at `B` − 1 s.
    KillLeader,
    /// SIGSTOP the leading replica at `B` − 1 s for this many seconds (longer than the stream's
    /// duplicate window, see [`Scenario::duplicate_window`]), then SIGCONT. Nothing it publishes
    /// after it resumes may repeat a fire.
    PauseLeader(u64),
    /// kill -9 a worker at `B` + 1.5 s, while every run of `B` is inside step two.
    KillWorker,
    /// kill -9 the nats-server at `B` − 1 s; start it again (same port and store) this many
    /// seconds later.
    KillNats(u64),
    /// SIGTERM the nats-server at `B` − 1 s and start it again once it has exited.
    RestartNats,
    /// kill -9 the server leading this stream (stream info `cluster.leader`) at `B` − 1 s; start
    /// it again at `B` + 5 s.
    KillStreamLeader(&'static str),
    /// kill -9 two of the three servers at `B` − 1 s (no quorum); start them again this many
    /// seconds later.
    KillTwoServers(u64),
    /// SIGSTOP the server leading this stream at `B` − 1 s (a frozen VM: its peers and clients
    /// wait on it until they give up); SIGCONT this many seconds later.
    PauseStreamLeader(&'static str, u64),
    /// At `B` − 1 s at once: kill -9 the leading replica and the server leading this stream, so
    /// the standby takes over while the stream elects a new leader; the server is started again
    /// at `B` + 5 s.
    KillLeaderAndStreamLeader(&'static str),
    /// At `B` − 5 s, hostile values into every bucket (the live lease and a valid schedule's
    /// state among them) and hostile messages onto the fire subject.
    Garbage,
}

impl Fault {
    /// How the README table names it.
    pub fn describe(self) -> String {
        match self {
            Fault::None => "none".into(),
            Fault::KillLeader => "leader kill -9 at B−1 s".into(),
            Fault::PauseLeader(s) => format!("leader SIGSTOP {s} s from B−1 s"),
            Fault::KillWorker => "worker kill -9 mid-step".into(),
            Fault::KillNats(s) => format!("nats-server kill -9 at B−1 s, back after {s} s"),
            Fault::RestartNats => "nats-server clean restart at B−1 s".into(),
            Fault::KillStreamLeader(s) => format!("kill -9 the server leading {s} at B−1 s"),
            Fault::KillTwoServers(s) => format!("2 of 3 servers kill -9 at B−1 s for {s} s"),
            Fault::PauseStreamLeader(s, secs) => {
                format!("SIGSTOP the server leading {s} at B−1 s for {secs} s")
            }
            Fault::KillLeaderAndStreamLeader(s) => {
                format!("leader kill -9 and kill -9 the server leading {s}, at B−1 s")
            }
            Fault::Garbage => "garbage in every bucket and on the fire subject".into(),
        }
    }
}

/// A scenario to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name in the result table.
    pub name: String,
    /// Single server or cluster.
    pub topology: Topology,
    /// How many `* * * * *` schedules fire.
    pub schedules: usize,
    /// One entry per consecutive minute boundary, the first at least a few seconds after
    /// everything is ready.
    pub faults: Vec<Fault>,
    /// `POLOS_RUNS`'s duplicate window is set to this after every replica applied the streams,
    /// so a pause longer than it fits in CI time.
    pub duplicate_window: Option<Duration>,
    /// Start a replacement ~15 s after a replica or worker is killed, as a supervisor would
    /// (the soak repeats faults; the CI scenarios leave the survivors alone).
    pub replace_killed: bool,
}

/// What a scenario found.
pub struct Outcome {
    /// The table row.
    pub row: Row,
    /// Every broken guarantee, by name; empty when the scenario passed.
    pub problems: Vec<String>,
    /// Logs of every process, printed when it failed.
    pub diagnostics: String,
}

/// A running scenario.
struct Run {
    spec: Scenario,
    dir: tempfile::TempDir,
    nats: Nats,
    js: jetstream::Context,
    client: async_nats::Client,
    observer: Observer,
    env: ChildEnv,
    procs: Vec<Proc>,
    /// Notes of what was done when, for the diagnostics.
    events: Vec<String>,
    /// When a paused leader was continued, and the boundary it was paused across.
    resumed: Vec<(Instant, DateTime<Utc>)>,
    /// Workers killed mid-step: pid and the boundary whose runs they held.
    killed_workers: Vec<(u32, DateTime<Utc>)>,
    /// What the garbage fault planted.
    planted: Option<Planted>,
    /// Problems found while injecting (a stream without a leader, …).
    problems: Vec<String>,
}

impl Scenario {
    /// Runs the scenario to its verdict.
    pub async fn run(self) -> Outcome {
        let mut run = Run::start(self).await;
        let keys = run.keys();
        let first = next_boundary(Utc::now() + TimeDelta::seconds(6));
        let instants: Vec<DateTime<Utc>> = (0..run.spec.faults.len())
            .map(|i| first + TimeDelta::minutes(i as i64))
            .collect();
        run.event(format!(
            "ready; boundaries {}",
            instants
                .iter()
                .map(|t| t.format("%H:%M").to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        for (fault, instant) in run.spec.faults.clone().into_iter().zip(&instants) {
            run.inject(fault, *instant).await;
        }
        let last = *instants
            .last()
            .expect("a scenario has at least one boundary");
        sleep_until(last + TimeDelta::seconds(1)).await;
        run.verdict(&keys, &instants).await
    }
}

impl Run {
    async fn start(spec: Scenario) -> Run {
        let dir = tempfile::Builder::new()
            .prefix(&format!("polos-faults-{}-", spec.name.replace(' ', "-")))
            .tempdir()
            .expect("scenario directory");
        let nats = Nats::start(spec.topology).await;
        let client = async_nats::ConnectOptions::new()
            .name("fault-suite-control")
            .connect(nats.urls())
            .await
            .expect("control connection");
        let js = jetstream::new(client.clone());
        nats.apply_streams(&js).await;
        let schedules = js.get_key_value("polos_schedules").await.expect("bucket");
        for i in 0..spec.schedules {
            schedules
                .put(
                    schedule_kv_key(WORKFLOW, &key(i)),
                    r#"{"cron":"* * * * *"}"#.into(),
                )
                .await
                .expect("put schedule");
        }
        let observer = Observer::start(&nats.urls()).await;
        let env = ChildEnv {
            vars: vec![
                ("POLOS_NATS__URL".into(), nats.urls().join(",")),
                ("POLOS_STORAGE__REPLICAS".into(), nats.replicas.to_string()),
                (
                    "POLOS_SCHEDULER__LEASE_TTL_SECS".into(),
                    LEASE_TTL_SECS.to_string(),
                ),
                // Every missed instant fires: what is expected does not depend on how many
                // boundaries one outage spans.
                ("POLOS_SCHEDULER__CATCHUP_POLICY".into(), "all".into()),
                (
                    "POLOS_WORKER__ACK_WAIT_SECS".into(),
                    ACK_WAIT_SECS.to_string(),
                ),
                (
                    "POLOS_WORKER__CONCURRENCY".into(),
                    spec.schedules.max(16).to_string(),
                ),
                // Our handler never fails; attempts are only used up by NATS being away, and
                // 1 + 2 + 4 + 8 s of backoff outlast the longest outage of the suite.
                ("POLOS_WORKER__MAX_ATTEMPTS".into(), "5".into()),
                ("POLOS_WORKER__RETRY_BACKOFF_SECS".into(), "1".into()),
                ("POLOS_LOG__LEVEL".into(), "info,async_nats=warn".into()),
            ],
            dir: dir.path().to_path_buf(),
            effects: dir.path().join("effects.log"),
            step_ms: STEP_MS,
        };
        let mut run = Run {
            spec,
            dir,
            nats,
            js,
            client,
            observer,
            env,
            procs: Vec::new(),
            events: Vec::new(),
            resumed: Vec::new(),
            killed_workers: Vec::new(),
            planted: None,
            problems: Vec::new(),
        };
        for _ in 0..2 {
            run.spawn(Role::Scheduler);
            run.spawn(Role::Worker);
        }
        run.wait_ready().await;
        if let Some(window) = run.spec.duplicate_window {
            run.set_duplicate_window(window).await;
        }
        run
    }

    fn keys(&self) -> Vec<String> {
        (0..self.spec.schedules).map(key).collect()
    }

    fn event(&mut self, what: String) {
        self.events
            .push(format!("{} {what}", Utc::now().format("%H:%M:%S%.3f")));
    }

    fn spawn(&mut self, role: Role) {
        let n = self.procs.iter().filter(|p| p.role == role).count() + 1;
        let proc = match role {
            Role::Scheduler => Proc::scheduler(n, &self.env),
            Role::Worker => Proc::worker(n, &self.env),
        };
        self.event(format!("started {} (pid {})", proc.name, proc.pid()));
        self.procs.push(proc);
    }

    /// Bounded: a replica leads, every replica answers the API (so each has applied the
    /// streams), the workers' consumer exists, and every schedule is armed (state `next` set) —
    /// the last only as long as 15 s, as the state record's timing is the ticker's business: a
    /// schedule loaded late still fires its instant by catch-up, which is what is checked.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let replicas = self
            .procs
            .iter()
            .filter(|p| p.role == Role::Scheduler)
            .count();
        let keys = self.keys();
        let mut running_since = None;
        loop {
            let leader = self.leader().await.is_some();
            let answering = if leader {
                api_instances(&self.client).await
            } else {
                0
            };
            let consumer = answering >= replicas && self.consumer_exists().await;
            let armed = if consumer { self.armed(&keys).await } else { 0 };
            if consumer {
                let since = *running_since.get_or_insert_with(tokio::time::Instant::now);
                if armed == keys.len() || since.elapsed() > Duration::from_secs(15) {
                    self.event(format!("{armed} of {} schedules armed", keys.len()));
                    return;
                }
            }
            if tokio::time::Instant::now() > deadline {
                let logs = self.diagnostics();
                let holder = self.lease_holder().await;
                panic!(
                    "scenario {}: not ready after 90 s (lease holder {holder:?} is one of ours: {leader}, API instances: {answering}/{replicas}, consumer: {consumer})\n{logs}",
                    self.spec.name,
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// How many of `keys` have a state record with `next` set.
    async fn armed(&self, keys: &[String]) -> usize {
        let Ok(state) = self.js.get_key_value("polos_schedule_state").await else {
            return 0;
        };
        let mut n = 0;
        for k in keys {
            if let Ok(Some(bytes)) = state.get(schedule_kv_key(WORKFLOW, k)).await {
                if serde_json::from_slice::<serde_json::Value>(&bytes)
                    .is_ok_and(|v| v["next"].is_string())
                {
                    n += 1;
                }
            }
        }
        n
    }

    async fn consumer_exists(&self) -> bool {
        let Ok(stream) = self.js.get_stream("POLOS_RUNS").await else {
            return false;
        };
        stream
            .get_consumer::<jetstream::consumer::pull::Config>(&format!("polos_{WORKFLOW}"))
            .await
            .is_ok()
    }

    async fn set_duplicate_window(&mut self, window: Duration) {
        let mut stream = self.js.get_stream("POLOS_RUNS").await.expect("POLOS_RUNS");
        let mut config = stream.info().await.expect("stream info").config.clone();
        config.duplicate_window = window;
        self.js
            .update_stream(config)
            .await
            .expect("shorten the duplicate window");
        self.event(format!("POLOS_RUNS duplicate window set to {window:?}"));
    }

    /// The `holder` of the lease in `polos_leases`, if it can be read.
    async fn lease_holder(&self) -> Option<String> {
        let leases = self.js.get_key_value("polos_leases").await.ok()?;
        let bytes = tokio::time::timeout(Duration::from_secs(3), leases.get("scheduler"))
            .await
            .ok()?
            .ok()??;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        value["holder"].as_str().map(str::to_string)
    }

    /// The index in `procs` of the replica named by the lease, if it is one of ours and alive.
    async fn leader(&self) -> Option<usize> {
        let holder = self.lease_holder().await?;
        // The holder starts with the replica's process id (`<pid>-<nuid>`); find which of ours.
        self.procs.iter().position(|p| {
            p.role == Role::Scheduler
                && !p.killed
                && holder
                    .split(|c: char| !c.is_ascii_digit())
                    .any(|t| t == p.pid().to_string())
        })
    }

    /// The leader, looked up until `deadline` (bounded).
    async fn leader_by(&mut self, deadline: DateTime<Utc>) -> Option<usize> {
        loop {
            if let Some(i) = self.leader().await {
                return Some(i);
            }
            if Utc::now() > deadline {
                self.problems
                    .push("no replica of ours held the lease when a fault was due".into());
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the server leading `stream`, looked up with a bounded wait; a problem when
    /// there is none (the fault would prove nothing).
    async fn stream_leader(&mut self, stream: &str) -> Option<usize> {
        let leader = tokio::time::timeout(
            Duration::from_secs(3),
            Nats::stream_leader(&self.js, stream),
        )
        .await
        .ok()
        .flatten();
        let index = leader.as_deref().and_then(|n| self.nats.index_of(n));
        if index.is_none() {
            self.problems
                .push(format!("no leader of {stream} found to kill ({leader:?})"));
        }
        index
    }

    fn kill_server(&mut self, i: usize, stream: &str) {
        self.nats.kill(i);
        let name = self.nats.servers[i].name().unwrap_or("?").to_string();
        self.event(format!("kill -9 nats-server {name} (leader of {stream})"));
    }

    fn replace_later(&self) -> bool {
        self.spec.replace_killed
    }

    async fn inject(&mut self, fault: Fault, b: DateTime<Utc>) {
        let at = |secs: f64| b + TimeDelta::milliseconds((secs * 1000.0) as i64);
        match fault {
            Fault::None => {}
            Fault::KillLeader => {
                sleep_until(at(-3.0)).await;
                if let Some(i) = self.leader_by(at(-1.0)).await {
                    sleep_until(at(-1.0)).await;
                    self.procs[i].kill();
                    let name = self.procs[i].name.clone();
                    self.event(format!("kill -9 {name} (the leader)"));
                    if self.replace_later() {
                        sleep_until(at(15.0)).await;
                        self.spawn(Role::Scheduler);
                    }
                }
            }
            Fault::PauseLeader(secs) => {
                sleep_until(at(-3.0)).await;
                if let Some(i) = self.leader_by(at(-1.0)).await {
                    sleep_until(at(-1.0)).await;
                    self.procs[i].pause();
                    let name = self.procs[i].name.clone();
                    self.event(format!("SIGSTOP {name} (the leader)"));
                    sleep_until(at(-1.0 + secs as f64)).await;
                    self.resumed.push((Instant::now(), b));
                    self.procs[i].resume();
                    self.event(format!("SIGCONT {name}"));
                }
            }
            Fault::KillWorker => {
                sleep_until(at(1.5)).await;
                // The worker holding the most runs of `b`: the consumer spreads fires over the
                // workers as they ask, so either may hold them.
                let effects = Effects::read(&self.env.effects);
                let suffix = format!("-{}", b.format("%Y%m%dT%H%M%SZ"));
                let held = |pid: u32| {
                    effects
                        .starts
                        .iter()
                        .filter(|(run, p)| *p == pid && run.ends_with(&suffix))
                        .count()
                };
                if let Some(i) = self
                    .procs
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.role == Role::Worker && !p.killed)
                    .max_by_key(|(_, p)| held(p.pid()))
                    .map(|(i, _)| i)
                {
                    self.procs[i].kill();
                    self.killed_workers.push((self.procs[i].pid(), b));
                    let name = self.procs[i].name.clone();
                    self.event(format!("kill -9 {name} (mid-step)"));
                    if self.replace_later() {
                        sleep_until(at(15.0)).await;
                        self.spawn(Role::Worker);
                    }
                }
            }
            Fault::KillNats(down) => {
                sleep_until(at(-1.0)).await;
                self.nats.kill(0);
                self.event("kill -9 nats-server".into());
                sleep_until(at(-1.0 + down as f64)).await;
                self.nats.restart(0);
                self.event("nats-server started again".into());
            }
            Fault::RestartNats => {
                sleep_until(at(-1.0)).await;
                self.event("SIGTERM nats-server".into());
                self.nats.clean_restart(0);
                self.event("nats-server started again".into());
            }
            Fault::KillStreamLeader(stream) => {
                sleep_until(at(-4.0)).await;
                let Some(server) = self.stream_leader(stream).await else {
                    return;
                };
                sleep_until(at(-1.0)).await;
                self.kill_server(server, stream);
                sleep_until(at(5.0)).await;
                self.nats.restart(server);
                self.event(format!("nats-server #{server} started again"));
            }
            Fault::PauseStreamLeader(stream, secs) => {
                sleep_until(at(-4.0)).await;
                let Some(server) = self.stream_leader(stream).await else {
                    return;
                };
                sleep_until(at(-1.0)).await;
                let name = self.nats.servers[server].name().unwrap_or("?").to_string();
                self.nats.servers[server]
                    .pause()
                    .expect("SIGSTOP nats-server");
                self.event(format!("SIGSTOP nats-server {name} (leader of {stream})"));
                sleep_until(at(-1.0 + secs as f64)).await;
                self.nats.servers[server]
                    .resume()
                    .expect("SIGCONT nats-server");
                self.event(format!("SIGCONT nats-server {name}"));
            }
            Fault::KillLeaderAndStreamLeader(stream) => {
                sleep_until(at(-4.0)).await;
                let Some(server) = self.stream_leader(stream).await else {
                    return;
                };
                let Some(replica) = self.leader_by(at(-1.0)).await else {
                    return;
                };
                sleep_until(at(-1.0)).await;
                self.procs[replica].kill();
                self.kill_server(server, stream);
                let name = self.procs[replica].name.clone();
                self.event(format!("kill -9 {name} (the leader)"));
                sleep_until(at(5.0)).await;
                self.nats.restart(server);
                self.event(format!("nats-server #{server} started again"));
                if self.replace_later() {
                    sleep_until(at(15.0)).await;
                    self.spawn(Role::Scheduler);
                }
            }
            Fault::KillTwoServers(down) => {
                sleep_until(at(-1.0)).await;
                self.nats.kill(0);
                self.nats.kill(1);
                self.event("kill -9 nats-servers s1 and s2".into());
                sleep_until(at(-1.0 + down as f64)).await;
                self.nats.restart(0);
                self.nats.restart(1);
                self.event("nats-servers s1 and s2 started again".into());
            }
            Fault::Garbage => {
                sleep_until(at(-5.0)).await;
                let planted = garbage::put_everywhere(&self.js, &key(0)).await;
                self.event(format!(
                    "garbage planted ({} invalid schedules, {} stream messages)",
                    planted.invalid_schedules.len(),
                    planted.stream_messages
                ));
                self.planted = Some(planted);
            }
        }
    }

    async fn verdict(mut self, keys: &[String], instants: &[DateTime<Utc>]) -> Outcome {
        let expected = verdict::expected(keys, instants);
        let verdict::Judged {
            completed,
            duplicated,
            lost,
            rerun_before_stored,
            mut problems,
        } = verdict::judge(
            &self.js,
            &self.observer,
            &self.env.effects,
            &expected,
            Duration::from_secs(60),
        )
        .await;
        problems.append(&mut self.problems);
        let test_messages = self.planted.as_ref().map_or(0, |p| p.stream_messages);
        if let Some(p) =
            verdict::stream_matches_runs(&self.js, test_messages, Duration::from_secs(30)).await
        {
            problems.push(p);
        }
        // Each fault must have hit something, or the scenario proves nothing.
        for (t, b) in &self.resumed {
            let fired_meanwhile: HashSet<String> = self
                .observer
                .publishes()
                .into_iter()
                .filter(|p| p.at < *t)
                .map(|p| p.msg_id)
                .collect();
            let unfired = expected
                .iter()
                .filter(|e| e.instant == *b && !fired_meanwhile.contains(&e.msg_id))
                .count();
            if unfired > 0 {
                problems.push(format!(
                    "{unfired} fires of {} were not published while the leader was stopped: no standby took over",
                    b.format("%H:%M")
                ));
            }
            let again = self.observer.republished_after(*t);
            if !again.is_empty() {
                problems.push(format!(
                    "the paused leader published {} fires again after SIGCONT (first: {} trigger {})",
                    again.len(),
                    again[0].msg_id,
                    again[0].trigger
                ));
            }
        }
        let effects = Effects::read(&self.env.effects);
        for (pid, b) in &self.killed_workers {
            let held: Vec<&String> = effects
                .starts
                .iter()
                .filter(|(run, p)| {
                    p == pid && expected.iter().any(|e| e.run_id == *run && e.instant == *b)
                })
                .map(|(run, _)| run)
                .collect();
            let resumed = held
                .iter()
                .filter(|run| effects.started.get(run.as_str()).copied().unwrap_or(0) > 1)
                .count();
            self.events.push(format!(
                "worker {pid} held {} runs of {} when killed; {resumed} of them were started again elsewhere",
                held.len(),
                b.format("%H:%M")
            ));
            if held.is_empty() {
                problems.push(format!(
                    "the worker kill at {} hit no run: the fault proved nothing",
                    b.format("%H:%M")
                ));
            }
        }
        if let Some(planted) = &self.planted {
            let silent = garbage::invalid_without_error(&self.js, planted).await;
            if !silent.is_empty() {
                problems.push(format!(
                    "invalid schedules without an error in their state record: {silent:?}"
                ));
            }
        }
        for p in &mut self.procs {
            if p.killed {
                continue;
            }
            if let Some(status) = p.exit_status() {
                problems.push(format!("{} exited by itself ({status})", p.name));
            }
        }
        let triggers = verdict::triggers(&self.observer, &expected);
        self.event(format!(
            "publishes of expected fires by trigger: {triggers:?}"
        ));
        let row = Row {
            scenario: self.spec.name.clone(),
            faults: describe_faults(&self.spec.faults),
            expected: expected.len(),
            completed,
            duplicated,
            lost,
            rerun_before_stored,
        };
        let keep = std::env::var_os("POLOS_FAULTS_KEEP").is_some();
        let diagnostics = if problems.is_empty() && !keep {
            String::new()
        } else {
            let d = if problems.is_empty() {
                String::new()
            } else {
                self.diagnostics()
            };
            // Keep the scenario's directory (logs, effects file) for a closer look.
            let kept = self.dir.keep();
            format!("{d}\n(logs kept in {})", kept.display())
        };
        Outcome {
            row,
            problems,
            diagnostics,
        }
    }

    fn diagnostics(&self) -> String {
        let mut out = format!("=== scenario {} ===\n", self.spec.name);
        for e in &self.events {
            out.push_str(e);
            out.push('\n');
        }
        for p in &self.procs {
            let lines = if p.role == Role::Scheduler { 60 } else { 30 };
            out.push_str(&format!(
                "--- {} (pid {}{}) ---\n{}\n",
                p.name,
                p.pid(),
                if p.killed {
                    ", killed by the suite"
                } else {
                    ""
                },
                p.log_tail(lines)
            ));
        }
        out.push_str(&self.nats.log_tails(20));
        out
    }
}

/// `k00`, `k01`, …
fn key(i: usize) -> String {
    format!("k{i:02}")
}

/// Faults in order, repeated runs collapsed (`none ×2`).
fn describe_faults(faults: &[Fault]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for f in faults {
        let d = f.describe();
        match parts.last_mut() {
            Some((last, n)) if *last == d => *n += 1,
            _ => parts.push((d, 1)),
        }
    }
    parts
        .into_iter()
        .map(|(d, n)| if n > 1 { format!("{d} ×{n}") } else { d })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first whole minute at or after `t`.
fn next_boundary(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t
        .duration_trunc(TimeDelta::minutes(1))
        .expect("truncating to a minute");
    if floor == t {
        t
    } else {
        floor + TimeDelta::minutes(1)
    }
}

/// Sleeps until wall-clock `t` (at once when it has passed). Faults are timed against the
/// wall clock because the boundaries they disturb are; nothing waits on a sleep for a result.
async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

/// How many instances of the `polos` micro service answer a ping (collected for 500 ms).
async fn api_instances(client: &async_nats::Client) -> usize {
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return 0;
    };
    if client
        .publish_with_reply("$SRV.PING.polos", inbox, bytes::Bytes::new())
        .await
        .is_err()
    {
        return 0;
    }
    let mut ids = HashSet::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(m)) = tokio::time::timeout_at(until, replies.next()).await {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) {
            if let Some(id) = v["id"].as_str() {
                ids.insert(id.to_string());
            }
        }
    }
    ids.len()
}
