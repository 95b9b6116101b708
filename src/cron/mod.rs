//! The cron and time-zone engine: pure code, no clock, no I/O (README, "Cron and time zones"; ARCHITECTURE.md, "Cron").
//!
//! | file | what |
//! |---|---|
//! | `parse.rs` | the 5-field dialect + macros → bitsets, with errors naming the field |
//! | `fields.rs` | bitsets per field and the `*`-prefix flags (dom/dow rule, interval vs fixed) |
//! | `saffron_expr.rs` | bitsets → a normalized saffron expression (lists only, weekday names) |
//! | `zone.rs` | IANA zones, cached UTC-offset transitions, constant-offset segments |
//! | `schedule.rs` | [`CronSchedule`]: `next_after` walking segments with Vixie's DST rules |
//! | `describe.rs` | [`describe`] in plain English, [`schedule_notes`]: DST notes and frequency advice |

mod describe;
mod error;
mod fields;
mod parse;
mod saffron_expr;
mod schedule;
mod zone;

#[cfg(test)]
mod dst_tests;

pub use describe::{describe, dst_notes, schedule_notes, DST_HORIZON_DAYS};
pub use error::CronError;
pub use schedule::CronSchedule;
