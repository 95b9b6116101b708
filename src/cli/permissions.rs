//! `polos permissions`: the nats-server permissions of a role, to paste into a server
//! configuration or a user JWT. Without a role it prints the whole shipped
//! `deploy/nats/permissions.conf`.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{fail, EXIT_INVALID};
use crate::nats::permissions::{default_user, render, server_conf_file, Format, Role, Scope};

/// `polos permissions [ROLE] [--workflow W]... [--format conf|jwt|nsc]`
#[derive(Debug, Args)]
pub struct PermissionsArgs {
    /// The role: admin, scheduler, worker, client or operator. Leave it out for the complete
    /// configuration of every role (deploy/nats/permissions.conf).
    #[arg(value_enum)]
    pub role: Option<RoleArg>,
    /// Limit a worker to this workflow (repeat for several). Subject wildcards cannot match a
    /// name prefix, so workflows are listed one by one.
    #[arg(long = "workflow", value_name = "WORKFLOW")]
    pub workflows: Vec<String>,
    /// The NATS user that logs in with these permissions: it may receive replies only on
    /// `_INBOX.<user>.>` (polos uses that reply prefix when it logs in by name). Default for
    /// `conf` and `nsc`: polos-<role> (polos-worker-<workflows> for a limited worker); for
    /// `jwt`: none, replies on `_INBOX.>` (or set nats.inbox_prefix and pass it here).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// `conf` (nats-server configuration), `jwt` (the `nats` claim of a user JWT) or `nsc`
    /// (an `nsc add user` command).
    #[arg(long, value_enum, default_value_t = FormatArg::Conf)]
    pub format: FormatArg,
}

/// A role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// `polos streams apply`.
    Admin,
    /// `polos scheduler`: ticker + schedules API.
    Scheduler,
    /// A worker binary.
    Worker,
    /// A schedules API client.
    Client,
    /// Read-only: inspects everything, changes nothing.
    Operator,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Scheduler => Role::Scheduler,
            RoleArg::Worker => Role::Worker,
            RoleArg::Client => Role::Client,
            RoleArg::Operator => Role::Operator,
        }
    }
}

/// An output format on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// nats-server configuration.
    Conf,
    /// The permissions claim of a user JWT.
    Jwt,
    /// An `nsc add user` command.
    Nsc,
}

pub(super) fn run(args: &PermissionsArgs) -> ExitCode {
    let Some(role) = args.role else {
        if !args.workflows.is_empty() || args.user.is_some() {
            return fail(
                EXIT_INVALID,
                "--workflow and --user describe one user: name the role, e.g. `polos permissions worker --workflow daily-report`",
            );
        }
        print!("{}", server_conf_file());
        return ExitCode::SUCCESS;
    };
    let role = Role::from(role);
    if role != Role::Worker && !args.workflows.is_empty() {
        return fail(
            EXIT_INVALID,
            format!("--workflow applies to the worker role only, not {role}: other roles cannot be limited by workflow through subjects"),
        );
    }
    let scope = match Scope::workflows(args.workflows.iter().cloned()) {
        Ok(scope) => scope,
        Err(e) => return fail(EXIT_INVALID, e),
    };
    let format = match args.format {
        FormatArg::Conf => Format::Conf,
        FormatArg::Jwt => Format::Jwt,
        FormatArg::Nsc => Format::Nsc,
    };
    if let Some(user) = &args.user {
        if user.is_empty() || user.contains(['.', '*', '>', ' ']) {
            return fail(
                EXIT_INVALID,
                format!("--user {user:?} must be one subject token (no '.', '*', '>' or spaces): it names the user's reply inbox _INBOX.<user>"),
            );
        }
    }
    let user = match (&args.user, format) {
        (Some(user), _) => Some(user.clone()),
        (None, Format::Jwt) => None,
        (None, _) => Some(default_user(role, &scope)),
    };
    print!("{}", render(role, &scope, user.as_deref(), format));
    ExitCode::SUCCESS
}
