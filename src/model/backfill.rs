//! Back-fill arithmetic shared by the API (which counts and prunes requests) and the scheduler
//! (which works them off): which instant comes next, and which requests are done. Pure: the
//! cron comes in as its `next_after` function.

use chrono::{DateTime, Utc};

use super::{Backfill, BackfillProgress};

/// Most instants one back-fill request may cover.
pub const MAX_BACKFILL_INSTANTS: u64 = 10_000;

/// Most back-fill requests of one schedule that may wait at once.
pub const MAX_PENDING_BACKFILLS: usize = 16;

/// The last instant `request` may fire: its `to`, but never after it was requested (a
/// hand-written request without `requested_at` is cut at `written_at`, when its record was
/// written): instants after that are the scheduler's own.
pub fn backfill_until(request: &Backfill, written_at: DateTime<Utc>) -> DateTime<Utc> {
    request.to.min(request.requested_at.unwrap_or(written_at))
}

/// The next instant to back-fill, with the `seq` of its request: the first instant of the
/// oldest unfinished request after what `progress` says was done. `requests` must be sorted by
/// `seq`.
pub fn next_backfill(
    requests: &[Backfill],
    progress: Option<BackfillProgress>,
    written_at: DateTime<Utc>,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Option<(u64, DateTime<Utc>)> {
    for request in requests {
        let start = match progress {
            Some(p) if request.seq < p.seq => continue,
            Some(BackfillProgress {
                seq,
                through: Some(through),
            }) if request.seq == seq => through.max(request.from - chrono::Duration::seconds(1)),
            _ => request.from - chrono::Duration::seconds(1),
        };
        let until = backfill_until(request, written_at);
        if let Some(instant) = next_after(start).filter(|t| *t <= until) {
            return Some((request.seq, instant));
        }
    }
    None
}

/// Whether `request` has nothing left to fire after `progress`.
pub fn backfill_done(
    request: &Backfill,
    progress: Option<BackfillProgress>,
    written_at: DateTime<Utc>,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> bool {
    next_backfill(
        std::slice::from_ref(request),
        progress,
        written_at,
        next_after,
    )
    .is_none()
}

/// The number of instants in `[from, to]`, counted up to `limit + 1` (so a caller can tell
/// "over the limit" without walking a century of minutes), and the first and last of them.
pub fn count_instants(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> (u64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let (mut count, mut first, mut last) = (0, None, None);
    let mut t = from - chrono::Duration::seconds(1);
    while let Some(instant) = next_after(t).filter(|i| *i <= to) {
        count += 1;
        first.get_or_insert(instant);
        last = Some(instant);
        if count > limit {
            break;
        }
        t = instant;
    }
    (count, first, last)
}

/// The instant of the cron before `instant` (a back-filled fire's `last_timestamp`: what it
/// would have been had it fired on time), searched back at most about 16 years; `None` when
/// there is none.
pub fn previous_instant(
    instant: DateTime<Utc>,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let mut span = chrono::Duration::minutes(2);
    for _ in 0..24 {
        let start = instant.checked_sub_signed(span)?;
        let mut found = None;
        let mut t = start;
        while let Some(i) = next_after(t).filter(|i| *i < instant) {
            found = Some(i);
            t = i;
        }
        if found.is_some() {
            return found;
        }
        span = span * 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::parse_instant;

    fn at(text: &str) -> DateTime<Utc> {
        parse_instant(text).unwrap()
    }

    /// Hourly on the hour.
    fn hourly(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = t + chrono::Duration::hours(1);
        let secs = next.timestamp() - next.timestamp().rem_euclid(3600);
        DateTime::from_timestamp(secs, 0)
    }

    fn request(seq: u64, from: &str, to: &str) -> Backfill {
        Backfill {
            seq,
            from: at(from),
            to: at(to),
            requested_at: Some(at("2026-05-02T00:00:00Z")),
        }
    }

    #[test]
    fn requests_are_worked_off_in_order_from_their_progress() {
        let written = at("2026-05-02T00:00:00Z");
        let requests = [
            request(1, "2026-05-01T08:00:00Z", "2026-05-01T09:00:00Z"),
            request(2, "2026-05-01T02:30:00Z", "2026-05-01T03:00:00Z"),
        ];
        let next = |p| next_backfill(&requests, p, written, hourly);
        assert_eq!(next(None), Some((1, at("2026-05-01T08:00:00Z"))));
        let p = |seq, through: Option<&str>| {
            Some(BackfillProgress {
                seq,
                through: through.map(at),
            })
        };
        assert_eq!(
            next(p(1, Some("2026-05-01T08:00:00Z"))),
            Some((1, at("2026-05-01T09:00:00Z")))
        );
        // Request 1 done: request 2 starts at its first instant, 03:00.
        assert_eq!(
            next(p(1, Some("2026-05-01T09:00:00Z"))),
            Some((2, at("2026-05-01T03:00:00Z")))
        );
        assert_eq!(next(p(2, Some("2026-05-01T03:00:00Z"))), None);
        assert_eq!(next(p(3, None)), None, "every lower seq is done");
        assert!(backfill_done(&requests[0], p(2, None), written, hourly));
        assert!(!backfill_done(&requests[1], p(2, None), written, hourly));
    }

    #[test]
    fn nothing_after_the_request_time_is_back_filled() {
        let mut r = request(1, "2026-05-01T08:00:00Z", "2026-05-01T12:00:00Z");
        r.requested_at = Some(at("2026-05-01T09:30:00Z"));
        let p = Some(BackfillProgress {
            seq: 1,
            through: Some(at("2026-05-01T09:00:00Z")),
        });
        assert_eq!(
            next_backfill(&[r.clone()], p, at("2030-01-01T00:00:00Z"), hourly),
            None
        );
        r.requested_at = None;
        assert_eq!(
            next_backfill(&[r], p, at("2026-05-01T10:00:00Z"), hourly),
            Some((1, at("2026-05-01T10:00:00Z"))),
            "a hand-written request is cut at its record's write time"
        );
    }

    #[test]
    fn counting_is_inclusive_and_bounded() {
        let (n, first, last) = count_instants(
            at("2026-05-01T08:00:00Z"),
            at("2026-05-01T10:00:00Z"),
            100,
            hourly,
        );
        assert_eq!(
            (n, first, last),
            (
                3,
                Some(at("2026-05-01T08:00:00Z")),
                Some(at("2026-05-01T10:00:00Z"))
            )
        );
        let (n, _, _) = count_instants(
            at("2000-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
            5,
            hourly,
        );
        assert_eq!(n, 6, "stops one past the limit");
        let (n, first, _) = count_instants(
            at("2026-05-01T08:10:00Z"),
            at("2026-05-01T08:50:00Z"),
            5,
            hourly,
        );
        assert_eq!((n, first), (0, None));
    }

    #[test]
    fn the_previous_instant_is_found_near_and_far() {
        assert_eq!(
            previous_instant(at("2026-05-01T08:00:00Z"), hourly),
            Some(at("2026-05-01T07:00:00Z"))
        );
        let yearly = |t: DateTime<Utc>| {
            use chrono::Datelike;
            let this = at(&format!("{}-01-01T00:00:00Z", t.year()));
            Some(if this > t {
                this
            } else {
                at(&format!("{}-01-01T00:00:00Z", t.year() + 1))
            })
        };
        assert_eq!(
            previous_instant(at("2026-01-01T00:00:00Z"), yearly),
            Some(at("2025-01-01T00:00:00Z"))
        );
        assert_eq!(previous_instant(at("2026-05-01T08:00:00Z"), |_| None), None);
    }
}
