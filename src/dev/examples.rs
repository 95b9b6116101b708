//! The example workflows, compiled from the very files in `examples/` so `polos dev` runs the
//! code users read, not a copy. Each example keeps its own `main` (unused here) and exposes
//! `pub fn workflow() -> Workflow`.

use crate::worker::Workflow;

#[allow(dead_code)] // the example's `main` and helpers only run as the example program
#[path = "../../examples/daily_report.rs"]
mod daily_report;

#[allow(dead_code)]
#[path = "../../examples/end_of_day_sync.rs"]
mod end_of_day_sync;

#[allow(dead_code)]
#[path = "../../examples/user_reminder.rs"]
mod user_reminder;

#[allow(dead_code)]
#[path = "../../examples/scheduled_task.rs"]
mod scheduled_task;

#[allow(dead_code)]
#[path = "../../examples/daily_digest.rs"]
mod daily_digest;

#[allow(dead_code)]
#[path = "../../examples/morning_report.rs"]
mod morning_report;

/// Every workflow declared in `examples/` (`manage_schedules` is a client and declares none),
/// in the order of the examples' README.
pub fn example_workflows() -> Vec<Workflow> {
    vec![
        daily_report::workflow(),
        end_of_day_sync::workflow(),
        user_reminder::workflow(),
        scheduled_task::workflow(),
        daily_digest::workflow(),
        morning_report::workflow(),
    ]
}
