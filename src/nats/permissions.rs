//! Least-privilege NATS permissions per polos role, and how to write them down for a server.
//!
//! One table of subjects serves three outputs, so they cannot drift apart: the nats-server
//! configuration shipped in `deploy/nats/permissions.conf` (a unit test compares the file with
//! [`server_conf_file`]), `polos permissions <role>` for a user's own configuration (optionally
//! limited to a list of workflows), and the permission claims of a user JWT (`--format jwt`,
//! `--format nsc`).
//!
//! The subjects were found by running each role against a server that allowed everything with
//! `-DV` tracing, then proven by the tests in `tests/it/permissions.rs`, which run every role
//! against a server started with exactly the shipped file and fail on any `Permissions
//! Violation` in the server log. Some subjects appear only under load or on rarer paths and are
//! granted by reading the client code; each is commented below.
//!
//! What subject wildcards cannot express: a `*` matches one whole token, so a workflow-name
//! *prefix* (`billing-*`) cannot be matched inside a token — list the workflows instead
//! ([`Scope::Workflows`]). And `polos_steps` keys are `<run_id>.<step>` where a run id starts
//! with the schedule id (a hash of workflow and key), so step results cannot be limited to one
//! workflow: every worker may read and write every step record.

use std::fmt::Write as _;

use serde_json::json;

use crate::model::names::{
    API_RUN_CANCEL, API_SCHEDULES_ALL, API_WORKFLOWS_LIST, CANCELS_BUCKET, LEASES_BUCKET,
    OVERLAP_BUCKET, RUNS_BUCKET, RUNS_STREAM, RUNS_SUBJECTS, SCHEDULES_BUCKET,
    SCHEDULE_STATE_BUCKET, STEPS_BUCKET, WORKFLOWS_BUCKET,
};
use crate::model::{validate_workflow, ValidationError, DEFAULT_KEY};

/// A kind of polos process (or person), each with its own NATS user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `polos streams apply`: creates and updates polos's buckets and stream, nothing else.
    Admin,
    /// `polos scheduler`: the ticker (lease, fires, state) and the schedules API service.
    Scheduler,
    /// A worker binary: registers its workflows, consumes their runs, records runs and steps.
    Worker,
    /// A program using the schedules API (`PolosClient`, `polos schedules …`, any language).
    Client,
    /// A person or dashboard that reads everything and changes nothing: `polos schedules
    /// list|get|next`, `polos runs list|get`, `nats kv get|ls|watch`, `nats micro ls|stats`,
    /// `nats stream info`.
    Operator,
}

impl Role {
    /// Every role, in the order the shipped configuration lists them.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Scheduler,
        Role::Worker,
        Role::Client,
        Role::Operator,
    ];

    /// The role's name on the command line and in user names (`polos-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Scheduler => "scheduler",
            Role::Worker => "worker",
            Role::Client => "client",
            Role::Operator => "operator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which workflows a worker may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every workflow.
    All,
    /// Only these workflow ids (subject wildcards cannot match a name prefix, so they are
    /// listed one by one).
    Workflows(Vec<String>),
}

impl Scope {
    /// A scope of the given workflow ids, each checked against the contract's id rules (an id
    /// with `.`, `*` or `>` would widen the permission it is written into).
    pub fn workflows<I, S>(ids: I) -> Result<Scope, ValidationError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        for id in &ids {
            validate_workflow(id)?;
        }
        Ok(if ids.is_empty() {
            Scope::All
        } else {
            Scope::Workflows(ids)
        })
    }

    /// The subject tokens standing for the workflows: `*` for all, else each id.
    fn tokens(&self) -> Vec<String> {
        match self {
            Scope::All => vec!["*".to_string()],
            Scope::Workflows(ids) => ids.clone(),
        }
    }
}

/// The subjects one NATS user may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to (requests included).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer requests it received (`allow_responses`): the API service does.
    pub allow_responses: bool,
}

/// Every JetStream stream polos defines.
const STREAMS: [&str; 9] = [
    "KV_polos_schedules",
    "KV_polos_schedule_state",
    "KV_polos_workflows",
    "KV_polos_runs",
    "KV_polos_steps",
    "KV_polos_leases",
    "KV_polos_overlap",
    "KV_polos_cancels",
    RUNS_STREAM,
];

/// Every KV bucket polos defines.
const BUCKETS: [&str; 8] = [
    SCHEDULES_BUCKET,
    SCHEDULE_STATE_BUCKET,
    WORKFLOWS_BUCKET,
    RUNS_BUCKET,
    STEPS_BUCKET,
    LEASES_BUCKET,
    OVERLAP_BUCKET,
    CANCELS_BUCKET,
];

/// Where a user's replies come back: `_INBOX.<user>.>` for a user that logs in by name (polos
/// uses `_INBOX.<user>` as its reply prefix then, see `nats.inbox_prefix`), so no user can read
/// another's replies; `_INBOX.>` for one that does not (a JWT user, unless its processes set
/// `nats.inbox_prefix`).
pub fn inbox(user: Option<&str>) -> String {
    match user {
        Some(user) => format!("{}.{user}.>", super::DEFAULT_INBOX),
        None => format!("{}.>", super::DEFAULT_INBOX),
    }
}

/// The user name a role gets unless told otherwise (`polos-scheduler`,
/// `polos-worker-billing-invoices` for a worker limited to two workflows).
pub fn default_user(role: Role, scope: &Scope) -> String {
    match (role, scope) {
        (Role::Worker, Scope::Workflows(ids)) => format!("polos-worker-{}", ids.join("-")),
        _ => format!("polos-{role}"),
    }
}

pub(crate) fn stream_info(stream: &str) -> String {
    format!("$JS.API.STREAM.INFO.{stream}")
}

/// A KV read of one key (or a wildcard of keys): async-nats reads buckets with `allow_direct`
/// by direct get with the key's subject in the request subject.
pub(crate) fn direct_get(bucket: &str, keys: &str) -> String {
    format!("$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{keys}")
}

/// A KV write (put, create, compare-and-swap update, delete, purge) of one key or a wildcard.
pub(crate) fn kv_write(bucket: &str, keys: &str) -> String {
    format!("$KV.{bucket}.{keys}")
}

/// Following the keys `<keys>` of a bucket with a named ordered consumer (a worker's view of
/// its workflows' schedules and cancel requests): the filter is part of the request subject,
/// so the permission confines it to those keys.
fn bucket_follow(bucket: &str, keys: &str, out: &mut Vec<String>) {
    out.push(format!(
        "$JS.API.CONSUMER.CREATE.KV_{bucket}.*.$KV.{bucket}.{keys}"
    ));
    out.push(format!("$JS.FC.KV_{bucket}.>"));
}

/// Reading a whole bucket: an ordered consumer (watch, listing, the scheduler's loader). The
/// unnamed form is what async-nats sends; the named form is what the `nats` CLI sends.
fn bucket_consumers(bucket: &str, out: &mut Vec<String>) {
    out.push(format!("$JS.API.CONSUMER.CREATE.KV_{bucket}"));
    out.push(format!("$JS.API.CONSUMER.CREATE.KV_{bucket}.>"));
    // Ordered push consumers (watches) ask for flow control under load: the reply goes to
    // `$JS.FC.…`. A short trace never shows it; without it a large watch stalls.
    out.push(format!("$JS.FC.KV_{bucket}.>"));
}

impl Role {
    /// The permissions of this role for the NATS user `user` (it decides the reply inbox, see
    /// [`inbox`]); `scope` only narrows [`Role::Worker`].
    pub fn permissions(self, scope: &Scope, user: Option<&str>) -> Permissions {
        let inbox = inbox(user);
        let mut publish = Vec::new();
        let mut subscribe = vec![inbox.clone()];
        let mut allow_responses = false;
        match self {
            Role::Admin => {
                for stream in STREAMS {
                    publish.push(stream_info(stream));
                    publish.push(format!("$JS.API.STREAM.CREATE.{stream}"));
                    publish.push(format!("$JS.API.STREAM.UPDATE.{stream}"));
                }
            }
            Role::Scheduler => {
                // `polos scheduler` checks every definition at start (and changes none: a
                // missing or different stream is the admin's `polos streams apply`).
                publish.extend(STREAMS.map(stream_info));
                for bucket in [SCHEDULES_BUCKET, SCHEDULE_STATE_BUCKET, WORKFLOWS_BUCKET] {
                    bucket_consumers(bucket, &mut publish);
                }
                // The loader reads the schedules bucket with an ordered pull consumer.
                publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.KV_{SCHEDULES_BUCKET}.*"));
                for bucket in [
                    SCHEDULES_BUCKET,
                    SCHEDULE_STATE_BUCKET,
                    WORKFLOWS_BUCKET,
                    LEASES_BUCKET,
                ] {
                    publish.push(direct_get(bucket, ">"));
                }
                // The API writes schedules; the ticker writes state and its lease.
                for bucket in [SCHEDULES_BUCKET, SCHEDULE_STATE_BUCKET, LEASES_BUCKET] {
                    publish.push(kv_write(bucket, ">"));
                }
                // `schedules.get` reads a schedule's recent runs and overlap record;
                // `run.cancel` finds a run's workflow (a listing of `*.<run_id>`) and stores
                // the request.
                publish.push(direct_get(RUNS_BUCKET, ">"));
                bucket_consumers(RUNS_BUCKET, &mut publish);
                publish.push(direct_get(OVERLAP_BUCKET, ">"));
                publish.push(direct_get(CANCELS_BUCKET, ">"));
                publish.push(kv_write(CANCELS_BUCKET, ">"));
                // Fires, and manual triggers through the API.
                publish.push(RUNS_SUBJECTS.to_string());
                // The API confirms its subscriptions with an echo through its own inbox.
                publish.push(inbox);
                subscribe.extend(
                    [
                        API_SCHEDULES_ALL,
                        API_WORKFLOWS_LIST,
                        API_RUN_CANCEL,
                        // NATS micro discovery: `nats micro ls|info|stats`.
                        "$SRV.*",
                        "$SRV.*.polos",
                        "$SRV.*.polos.*",
                    ]
                    .map(String::from),
                );
                allow_responses = true;
            }
            Role::Worker => {
                for stream in [
                    "KV_polos_workflows",
                    "KV_polos_schedules",
                    "KV_polos_schedule_state",
                    "KV_polos_runs",
                    "KV_polos_steps",
                    "KV_polos_overlap",
                    "KV_polos_cancels",
                    RUNS_STREAM,
                ] {
                    publish.push(stream_info(stream));
                }
                // Whether a run's fire is still queued (a second fire of a run, the overlap
                // policy's active and waiting runs): a read of one stream message.
                publish.push(format!("$JS.API.STREAM.MSG.GET.{RUNS_STREAM}"));
                for w in scope.tokens() {
                    let consumer = if w == "*" {
                        "*".to_string()
                    } else {
                        format!("polos_{w}")
                    };
                    publish.push(format!(
                        "$JS.API.CONSUMER.CREATE.{RUNS_STREAM}.{consumer}.polos.runs.{w}"
                    ));
                    publish.push(format!(
                        "$JS.API.CONSUMER.MSG.NEXT.{RUNS_STREAM}.{consumer}"
                    ));
                    // Acks, naks, in-progress and terminate all answer the message's reply
                    // subject `$JS.ACK.<stream>.<consumer>.…`.
                    publish.push(format!("$JS.ACK.{RUNS_STREAM}.{consumer}.>"));
                    publish.push(kv_write(WORKFLOWS_BUCKET, &w));
                    let all = format!("{w}.>");
                    // The workflow's schedules: followed for their overlap policy, written to
                    // sync the inline (`global`) one and to pause one whose run failed
                    // (`pause_on_failure`). The inline schedule's state is purged when the
                    // code stops declaring one.
                    bucket_follow(SCHEDULES_BUCKET, &all, &mut publish);
                    publish.push(direct_get(SCHEDULES_BUCKET, &all));
                    publish.push(kv_write(SCHEDULES_BUCKET, &all));
                    let global = format!("{w}.{DEFAULT_KEY}");
                    publish.push(kv_write(SCHEDULE_STATE_BUCKET, &global));
                    publish.push(direct_get(RUNS_BUCKET, &all));
                    publish.push(kv_write(RUNS_BUCKET, &all));
                    // Overlap records of the workflow's schedules; cancel requests of its runs
                    // (followed, and written by `cancel_other`).
                    publish.push(direct_get(OVERLAP_BUCKET, &all));
                    publish.push(kv_write(OVERLAP_BUCKET, &all));
                    bucket_follow(CANCELS_BUCKET, &all, &mut publish);
                    publish.push(direct_get(CANCELS_BUCKET, &all));
                    publish.push(kv_write(CANCELS_BUCKET, &all));
                }
                // Step keys start with the run id, not the workflow: no narrower pattern exists.
                publish.push(direct_get(STEPS_BUCKET, ">"));
                publish.push(kv_write(STEPS_BUCKET, ">"));
            }
            Role::Client => {
                publish.extend(
                    [API_SCHEDULES_ALL, API_WORKFLOWS_LIST, API_RUN_CANCEL].map(String::from),
                );
            }
            Role::Operator => {
                publish.extend(
                    [
                        "polos.schedules.get",
                        "polos.schedules.list",
                        "polos.workflows.list",
                        "$JS.API.INFO",
                        "$JS.API.STREAM.NAMES",
                        "$JS.API.STREAM.LIST",
                        "$SRV.*",
                        "$SRV.*.polos",
                        "$SRV.*.polos.*",
                    ]
                    .map(String::from),
                );
                publish.extend(STREAMS.map(stream_info));
                for bucket in BUCKETS {
                    publish.push(direct_get(bucket, ">"));
                    bucket_consumers(bucket, &mut publish);
                }
                // Looking at queued fires without taking them: consumers of the work queue may
                // be inspected, never created.
                publish.extend([
                    format!("$JS.API.CONSUMER.NAMES.{RUNS_STREAM}"),
                    format!("$JS.API.CONSUMER.LIST.{RUNS_STREAM}"),
                    format!("$JS.API.CONSUMER.INFO.{RUNS_STREAM}.*"),
                    format!("$JS.API.STREAM.MSG.GET.{RUNS_STREAM}"),
                ]);
            }
        }
        Permissions {
            publish,
            subscribe,
            allow_responses,
        }
    }
}

/// The format `polos permissions` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A nats-server configuration block (`authorization { … }` permissions).
    Conf,
    /// The `nats` claim of a user JWT (`pub`, `sub`, `resp`).
    Jwt,
    /// An `nsc add user` command for operator mode.
    Nsc,
}

/// Writes `permissions` as a nats-server configuration value named `var`, indented by `indent`.
fn conf_block(var: &str, permissions: &Permissions, indent: &str, out: &mut String) {
    let list = |subjects: &[String], out: &mut String| {
        for s in subjects {
            let _ = writeln!(out, "{indent}      \"{s}\"");
        }
    };
    let _ = writeln!(out, "{indent}{var} = {{");
    let _ = writeln!(out, "{indent}  publish: {{ allow: [");
    list(&permissions.publish, out);
    let _ = writeln!(out, "{indent}  ] }}");
    let _ = writeln!(out, "{indent}  subscribe: {{ allow: [");
    list(&permissions.subscribe, out);
    let _ = writeln!(out, "{indent}  ] }}");
    if permissions.allow_responses {
        let _ = writeln!(out, "{indent}  allow_responses: true");
    }
    let _ = writeln!(out, "{indent}}}");
}

/// The variable name of a role's permissions in a server configuration.
fn conf_var(role: Role, scope: &Scope) -> String {
    let mut var = format!("POLOS_{}", role.name().to_uppercase());
    if let (Role::Worker, Scope::Workflows(ids)) = (role, scope) {
        for id in ids {
            var.push('_');
            var.push_str(&id.to_uppercase().replace('-', "_"));
        }
    }
    var
}

/// The permissions of `role` (narrowed by `scope` for a worker) for the NATS user `user`, in
/// `format`.
pub fn render(role: Role, scope: &Scope, user: Option<&str>, format: Format) -> String {
    let permissions = role.permissions(scope, user);
    match format {
        Format::Conf => {
            let mut out = String::new();
            let who = user.map_or_else(|| "a user".to_string(), |u| format!("user {u}"));
            let _ = writeln!(
                out,
                "# polos {role}: paste inside `authorization {{ … }}` and give {who} `permissions: ${}`",
                conf_var(role, scope)
            );
            conf_block(&conf_var(role, scope), &permissions, "", &mut out);
            out
        }
        Format::Jwt => {
            let mut claim = json!({
                "pub": { "allow": permissions.publish },
                "sub": { "allow": permissions.subscribe },
            });
            if permissions.allow_responses {
                claim["resp"] = json!({ "max": 1, "ttl": 0 });
            }
            let mut text = serde_json::to_string_pretty(&claim).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Nsc => {
            let mut command = format!(
                "nsc add user --name {} \\\n  --allow-pub '{}' \\\n  --allow-sub '{}'",
                user.map_or_else(|| default_user(role, scope), str::to_string),
                permissions.publish.join(","),
                permissions.subscribe.join(",")
            );
            if permissions.allow_responses {
                command.push_str(" \\\n  --allow-pub-response=1");
            }
            command.push('\n');
            command
        }
    }
}

/// The workflow the shipped configuration uses to show a worker limited to its own workflows.
pub const EXAMPLE_WORKFLOW: &str = "daily-report";

/// The whole of `deploy/nats/permissions.conf`: every role as a variable, one user per role
/// (passwords from environment variables, so the file holds no secret), plus a worker limited
/// to [`EXAMPLE_WORKFLOW`].
pub fn server_conf_file() -> String {
    let limited = Scope::Workflows(vec![EXAMPLE_WORKFLOW.to_string()]);
    let mut out = String::new();
    out.push_str(
        "# polos: one NATS user per role, least privilege. Generated by `polos permissions`;\n\
         # a test fails when this file and the generator disagree.\n\
         #\n\
         # Use it as it is (`include \"permissions.conf\"` from your server configuration, see\n\
         # server.conf beside it) or paste the roles you need into your own `authorization`.\n\
         # Passwords come from the environment of nats-server (POLOS_ADMIN_PASSWORD, …): the\n\
         # server refuses to start while one is missing, and no secret sits in this file.\n\
         #\n\
         # Limits of subject permissions, and what to do about them:\n\
         # - A worker is limited to its workflows by listing them: `polos permissions worker\n\
         #   --workflow a --workflow b` prints the block. Wildcards match whole tokens only, so\n\
         #   a workflow-name prefix (`billing-*`) cannot be expressed.\n\
         # - polos_steps keys are <run_id>.<step> and a run id starts with the schedule id (a\n\
         #   hash of workflow and key): every worker can read and write every step result.\n\
         # - API clients cannot be limited to workflows: the workflow is in the request body,\n\
         #   not the subject. Give read-only people the operator role instead.\n\
         #\n\
         # Each user receives replies only on _INBOX.<user>.>, so no user reads another's\n\
         # replies. polos picks that reply prefix by itself when it logs in with a user name;\n\
         # other NATS tools need it said: `nats --inbox-prefix _INBOX.polos-operator …`.\n\n",
    );
    out.push_str("authorization {\n");
    for role in Role::ALL {
        let _ = writeln!(out, "  # {}", describe(role));
        conf_block(
            &conf_var(role, &Scope::All),
            &role.permissions(&Scope::All, Some(&default_user(role, &Scope::All))),
            "  ",
            &mut out,
        );
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "  # A worker that may serve only workflow {EXAMPLE_WORKFLOW} (its consumer, acks, runs,\n  # registration and inline schedule); generated by\n  # `polos permissions worker --workflow {EXAMPLE_WORKFLOW}`."
    );
    conf_block(
        &conf_var(Role::Worker, &limited),
        &Role::Worker.permissions(&limited, Some(&default_user(Role::Worker, &limited))),
        "  ",
        &mut out,
    );
    out.push_str("\n  users = [\n");
    for role in Role::ALL {
        let var = conf_var(role, &Scope::All);
        let _ = writeln!(
            out,
            "    {{ user: {}, password: ${var}_PASSWORD, permissions: ${var} }}",
            default_user(role, &Scope::All)
        );
    }
    let var = conf_var(Role::Worker, &limited);
    let _ = writeln!(
        out,
        "    {{ user: {}, password: ${var}_PASSWORD, permissions: ${var} }}",
        default_user(Role::Worker, &limited)
    );
    out.push_str("  ]\n}\n");
    out
}

fn describe(role: Role) -> &'static str {
    match role {
        Role::Admin => {
            "admin: `polos streams apply` (create/update polos's streams; deletes nothing)"
        }
        Role::Scheduler => "scheduler: `polos scheduler` (ticker + schedules API service)",
        Role::Worker => "worker: a worker binary serving any workflow",
        Role::Client => "client: the schedules API only (no direct KV or stream access)",
        Role::Operator => "operator: reads everything, changes nothing",
    }
}

/// The user name and password variable of a role in the shipped configuration, e.g.
/// `("polos-worker", "POLOS_WORKER_PASSWORD")`; `workflow` picks the limited example worker.
pub fn shipped_user(role: Role, workflow: Option<&str>) -> (String, String) {
    let scope = match workflow {
        Some(w) => Scope::Workflows(vec![w.to_string()]),
        None => Scope::All,
    };
    (
        default_user(role, &scope),
        format!("{}_PASSWORD", conf_var(role, &scope)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_is_the_generated_one() {
        let shipped = include_str!("../../deploy/nats/permissions.conf");
        assert!(
            shipped == server_conf_file(),
            "deploy/nats/permissions.conf differs from the role table in src/nats/permissions.rs; \
             regenerate it with `cargo run -- permissions > deploy/nats/permissions.conf`"
        );
    }

    #[test]
    fn the_readme_security_section_names_every_shipped_user_and_the_file() {
        let readme = include_str!("../../README.md");
        let security = &readme[readme.find("## Security").unwrap_or(0)..];
        assert!(security.contains("deploy/nats/permissions.conf"));
        for role in Role::ALL {
            let (user, variable) = shipped_user(role, None);
            assert!(
                security.contains(&format!("`{user}`")),
                "README lacks {user}"
            );
            assert!(security.contains(&variable), "README lacks {variable}");
        }
        let (user, _) = shipped_user(Role::Worker, Some(EXAMPLE_WORKFLOW));
        assert!(
            security.contains(&format!("`{user}`")),
            "README lacks {user}"
        );
    }

    #[test]
    fn a_limited_worker_names_its_workflows_and_nothing_wider() {
        let scope = Scope::workflows(["daily-report"]).unwrap();
        let p = Role::Worker.permissions(&scope, Some("w1"));
        for s in [
            "$JS.API.CONSUMER.CREATE.POLOS_RUNS.polos_daily-report.polos.runs.daily-report",
            "$JS.API.CONSUMER.MSG.NEXT.POLOS_RUNS.polos_daily-report",
            "$JS.ACK.POLOS_RUNS.polos_daily-report.>",
            "$KV.polos_schedules.daily-report.>",
            "$KV.polos_runs.daily-report.>",
            "$KV.polos_workflows.daily-report",
            "$KV.polos_overlap.daily-report.>",
            "$KV.polos_cancels.daily-report.>",
            "$JS.API.CONSUMER.CREATE.KV_polos_schedules.*.$KV.polos_schedules.daily-report.>",
            "$JS.API.CONSUMER.CREATE.KV_polos_cancels.*.$KV.polos_cancels.daily-report.>",
        ] {
            assert!(p.publish.iter().any(|x| x == s), "missing {s}");
        }
        assert!(!p
            .publish
            .iter()
            .any(|s| s.starts_with("$JS.API.STREAM.DELETE")
                || s.starts_with("$JS.API.CONSUMER.DELETE")
                || s == "$JS.API.>"
                || s.contains("$KV.polos_schedules.*")
                || s.contains("$KV.polos_cancels.*")
                || s.contains("$KV.polos_overlap.*")
                || s == "$JS.API.CONSUMER.CREATE.KV_polos_schedules"
                || s == "$JS.API.CONSUMER.CREATE.KV_polos_cancels"));
        assert_eq!(p.subscribe, ["_INBOX.w1.>"], "only its own replies");
    }

    #[test]
    fn workflow_ids_that_would_widen_a_subject_are_refused() {
        for bad in ["a.b", "*", ">", "a b", ""] {
            assert!(Scope::workflows([bad]).is_err(), "{bad:?}");
        }
        assert_eq!(Scope::workflows(Vec::<String>::new()).unwrap(), Scope::All);
    }

    #[test]
    fn only_the_scheduler_answers_requests_and_nobody_gets_the_whole_api() {
        for role in Role::ALL {
            let p = role.permissions(&Scope::All, None);
            assert_eq!(p.allow_responses, role == Role::Scheduler, "{role}");
            assert!(
                !p.publish.iter().any(|s| s == "$JS.API.>" || s == ">"),
                "{role}"
            );
        }
    }

    #[test]
    fn the_jwt_claim_is_json_with_pub_and_sub() {
        let text = render(Role::Scheduler, &Scope::All, None, Format::Jwt);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["pub"]["allow"].as_array().unwrap().len() > 10);
        assert_eq!(v["sub"]["allow"][0], "_INBOX.>");
        assert_eq!(v["resp"]["max"], 1);
    }
}
