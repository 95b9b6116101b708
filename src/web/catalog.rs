//! [`Catalog`]: every schedule and its state in memory, followed live from KV, so a dashboard
//! page costs a lookup in a sorted map, never a read of the whole bucket.
//!
//! Two followers (`store::read::follow` over `polos_schedules`, `polos_schedule_state`) deliver the latest value of every
//! key, then each change. Values are read with the model's own parsers
//! ([`ScheduleRecord::from_kv`], [`ScheduleState`]); a value that is not a schedule is kept with
//! its reason and shown as invalid. Identical (cron, zone) pairs share one parsed
//! [`CronSchedule`], and each pair counts its active schedules: that is all the load-ahead
//! chart needs, so 100,000 schedules at `0 8 * * *` in 30 zones are 30 computations.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_nats::jetstream::kv::Store;

use crate::cron::CronSchedule;
use crate::model::{ScheduleRecord, ScheduleState};
use crate::store::{follow, Followed, ReadError};

/// One stored schedule value.
#[derive(Debug, Clone)]
pub struct Row {
    /// `<workflow>.<encoded key>`.
    pub kv_key: String,
    /// The record, or why the value is not a valid schedule (bad JSON, cron or zone).
    pub record: Result<ScheduleRecord, String>,
    /// The parsed cron when the record is valid.
    pub cron: Option<Arc<CronSchedule>>,
}

/// A row with the scheduler's state record, as pages show it.
#[derive(Debug, Clone)]
pub struct RowView {
    /// The stored value.
    pub row: Row,
    /// `polos_schedule_state` of the same key, if the scheduler wrote one.
    pub state: Option<ScheduleState>,
}

/// Which schedules a page lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only keys containing this text (case-insensitive).
    pub key: Option<String>,
    /// Only values that cannot fire.
    pub invalid_only: bool,
}

/// One page of schedules.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// At most the requested number, in KV key order.
    pub rows: Vec<RowView>,
    /// The `after` of the next page, when there is one.
    pub next_after: Option<String>,
    /// Schedules matching the filter, on every page.
    pub matching: usize,
}

/// A (cron, zone) pair and how many active (valid, not paused) schedules use it.
#[derive(Debug, Clone)]
pub struct Group {
    /// The parsed cron.
    pub cron: Arc<CronSchedule>,
    /// Active schedules with this cron and zone.
    pub active: usize,
}

#[derive(Default)]
struct Table {
    /// Every schedule value by KV key (sorted: pages are ranges).
    rows: BTreeMap<String, Row>,
    /// Every state record by KV key.
    states: HashMap<String, ScheduleState>,
    /// Shared crons and their use counts, by (expression, zone).
    groups: HashMap<(String, String), GroupCount>,
    /// Schedules per workflow (for the filter's list of workflows).
    workflows: BTreeMap<String, usize>,
    /// Values that are not valid schedules.
    invalid: usize,
    /// Both buckets delivered their initial values.
    schedules_loaded: bool,
    states_loaded: bool,
    /// Bumped on every change to a schedule, so derived data (the load chart) can be cached.
    version: u64,
}

struct GroupCount {
    cron: Arc<CronSchedule>,
    /// Valid rows using it.
    rows: usize,
    /// Of those, not paused.
    active: usize,
}

/// What the tables say right now, for page headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Stored schedule values (valid and invalid).
    pub schedules: usize,
    /// Values that cannot fire.
    pub invalid: usize,
    /// Active (valid, not paused) schedules.
    pub active: usize,
    /// Both buckets have been read completely.
    pub loaded: bool,
    /// Changes seen so far (a cache key for derived data).
    pub version: u64,
}

/// The followed buckets, shared by every request.
#[derive(Clone, Default)]
pub struct Catalog {
    /// Written by the two follower tasks, read by pages.
    table: Arc<RwLock<Table>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
enum Bucket {
    Schedules,
    States,
}

impl Catalog {
    /// Starts following `schedules` and `states` over `client`; the returned tasks run until
    /// aborted.
    pub fn follow(
        client: async_nats::Client,
        schedules: Store,
        states: Store,
    ) -> (Catalog, Vec<tokio::task::JoinHandle<()>>) {
        let catalog = Catalog::default();
        let tasks = vec![
            tokio::spawn(catalog.clone().follow_bucket(
                client.clone(),
                schedules,
                Bucket::Schedules,
            )),
            tokio::spawn(
                catalog
                    .clone()
                    .follow_bucket(client, states, Bucket::States),
            ),
        ];
        (catalog, tasks)
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts for page headers.
    pub fn summary(&self) -> Summary {
        let t = self.read();
        Summary {
            schedules: t.rows.len(),
            invalid: t.invalid,
            active: t.groups.values().map(|g| g.active).sum(),
            loaded: t.schedules_loaded && t.states_loaded,
            version: t.version,
        }
    }

    /// Workflows that have schedules, with how many each.
    pub fn workflows(&self) -> Vec<(String, usize)> {
        self.read()
            .workflows
            .iter()
            .map(|(w, n)| (w.clone(), *n))
            .collect()
    }

    /// The schedule at `kv_key`.
    pub fn get(&self, kv_key: &str) -> Option<RowView> {
        let t = self.read();
        t.rows.get(kv_key).map(|row| RowView {
            row: row.clone(),
            state: t.states.get(kv_key).cloned(),
        })
    }

    /// Up to `limit` schedules matching `filter` after KV key `after`, and how many match in all.
    pub fn page(&self, filter: &Filter, after: Option<&str>, limit: usize) -> Page {
        let t = self.read();
        let needle = filter.key.as_ref().map(|k| k.to_lowercase());
        let prefix = filter.workflow.as_ref().map(|w| format!("{w}."));
        let start = match &prefix {
            Some(p) => Bound::Included(p.clone()),
            None => Bound::Unbounded,
        };
        let matches = |row: &Row| {
            if filter.invalid_only && row.record.is_ok() {
                return false;
            }
            match &needle {
                None => true,
                Some(needle) => {
                    let key = match &row.record {
                        Ok(r) => r.key.to_lowercase(),
                        Err(_) => row.kv_key.to_lowercase(),
                    };
                    key.contains(needle.as_str())
                }
            }
        };
        let mut page = Page::default();
        for (kv_key, row) in t.rows.range::<String, _>((start, Bound::Unbounded)) {
            if let Some(p) = &prefix {
                if !kv_key.starts_with(p.as_str()) {
                    break;
                }
            }
            if !matches(row) {
                continue;
            }
            page.matching += 1;
            if after.is_some_and(|a| kv_key.as_str() <= a) {
                continue;
            }
            if page.rows.len() < limit {
                page.rows.push(RowView {
                    row: row.clone(),
                    state: t.states.get(kv_key).cloned(),
                });
            } else if page.next_after.is_none() {
                page.next_after = page.rows.last().map(|r| r.row.kv_key.clone());
            }
        }
        page
    }

    /// Every (cron, zone) pair with active schedules, and the version they were read at.
    pub fn groups(&self) -> (u64, Vec<Group>) {
        let t = self.read();
        let groups = t
            .groups
            .values()
            .filter(|g| g.active > 0)
            .map(|g| Group {
                cron: g.cron.clone(),
                active: g.active,
            })
            .collect();
        (t.version, groups)
    }

    async fn follow_bucket(self, client: async_nats::Client, kv: Store, bucket: Bucket) {
        loop {
            let why = self.follow_once(&client, &kv, bucket).await;
            tracing::warn!(bucket = %kv.name, error = %why, "dashboard: reading the bucket failed; starting over");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reads every key (into a fresh table part, swapped in when complete, so a restarted
    /// follow also forgets keys deleted meanwhile), then applies changes until following ends;
    /// returns why it ended. Read the one way every bucket is read (`store::read`).
    async fn follow_once(
        &self,
        client: &async_nats::Client,
        kv: &Store,
        bucket: Bucket,
    ) -> ReadError {
        let mut initial: Vec<(String, Option<bytes::Bytes>)> = Vec::new();
        let mut caught_up = false;
        follow(client, &kv.stream, &kv.name, ">", |event| {
            let (key, value) = match event {
                Followed::CaughtUp => {
                    caught_up = true;
                    self.replace(bucket, std::mem::take(&mut initial));
                    return;
                }
                Followed::Put { kv_key, value } => (kv_key, Some(value)),
                Followed::Gone { kv_key } => (kv_key, None),
            };
            if caught_up {
                self.apply(bucket, key, value);
            } else {
                initial.push((key, value));
            }
        })
        .await
    }

    fn replace(&self, bucket: Bucket, entries: Vec<(String, Option<bytes::Bytes>)>) {
        let mut t = self.write();
        match bucket {
            Bucket::Schedules => {
                let keys: Vec<String> = t.rows.keys().cloned().collect();
                for key in keys {
                    t.remove_row(&key);
                }
                for (key, value) in entries {
                    t.put_schedule(key, value);
                }
                t.schedules_loaded = true;
            }
            Bucket::States => {
                t.states.clear();
                for (key, value) in entries {
                    t.put_state(key, value);
                }
                t.states_loaded = true;
            }
        }
        t.version += 1;
    }

    fn apply(&self, bucket: Bucket, key: String, value: Option<bytes::Bytes>) {
        let mut t = self.write();
        match bucket {
            Bucket::Schedules => {
                t.put_schedule(key, value);
                t.version += 1;
            }
            Bucket::States => t.put_state(key, value),
        }
    }

    /// A catalog filled from values, for tests of pages and charts.
    #[cfg(test)]
    pub(crate) fn from_values(values: &[(&str, &str)]) -> Catalog {
        let catalog = Catalog::default();
        catalog.replace(
            Bucket::Schedules,
            values
                .iter()
                .map(|(k, v)| (k.to_string(), Some(bytes::Bytes::from(v.to_string()))))
                .collect(),
        );
        catalog.replace(Bucket::States, Vec::new());
        catalog
    }
}

impl Table {
    fn put_state(&mut self, key: String, value: Option<bytes::Bytes>) {
        match value.map(|v| serde_json::from_slice::<ScheduleState>(&v)) {
            Some(Ok(state)) => {
                self.states.insert(key, state);
            }
            // An unreadable state record shows as none; the scheduler rewrites it.
            Some(Err(_)) | None => {
                self.states.remove(&key);
            }
        }
    }

    fn put_schedule(&mut self, kv_key: String, value: Option<bytes::Bytes>) {
        self.remove_row(&kv_key);
        let Some(value) = value else {
            return;
        };
        let record = ScheduleRecord::from_kv(&kv_key, &value).map_err(|e| e.to_string());
        let (record, cron) = match record {
            Ok(record) => match self.intern(&record) {
                Ok(cron) => (Ok(record), Some(cron)),
                Err(e) => (Err(format!("{e}; fix it with an upsert")), None),
            },
            Err(e) => (Err(e), None),
        };
        if let Ok(r) = &record {
            if let Some(g) = self.groups.get_mut(&(r.cron.clone(), r.timezone.clone())) {
                g.rows += 1;
                g.active += usize::from(!r.paused);
            }
            *self.workflows.entry(r.workflow.clone()).or_default() += 1;
        } else {
            self.invalid += 1;
            let workflow = kv_key.split('.').next().unwrap_or_default().to_string();
            *self.workflows.entry(workflow).or_default() += 1;
        }
        self.rows.insert(
            kv_key.clone(),
            Row {
                kv_key,
                record,
                cron,
            },
        );
    }

    /// The shared cron of `record`'s (expression, zone), parsed once.
    fn intern(
        &mut self,
        record: &ScheduleRecord,
    ) -> Result<Arc<CronSchedule>, crate::cron::CronError> {
        let id = (record.cron.clone(), record.timezone.clone());
        if let Some(g) = self.groups.get(&id) {
            return Ok(g.cron.clone());
        }
        let cron = Arc::new(CronSchedule::parse(&record.cron, &record.timezone)?);
        self.groups.insert(
            id,
            GroupCount {
                cron: cron.clone(),
                rows: 0,
                active: 0,
            },
        );
        Ok(cron)
    }

    fn remove_row(&mut self, kv_key: &str) {
        let Some(row) = self.rows.remove(kv_key) else {
            return;
        };
        let workflow = match &row.record {
            Ok(r) => {
                let id = (r.cron.clone(), r.timezone.clone());
                if let Some(g) = self.groups.get_mut(&id) {
                    g.rows = g.rows.saturating_sub(1);
                    g.active = g.active.saturating_sub(usize::from(!r.paused));
                    if g.rows == 0 {
                        self.groups.remove(&id);
                    }
                }
                r.workflow.clone()
            }
            Err(_) => {
                self.invalid = self.invalid.saturating_sub(1);
                kv_key.split('.').next().unwrap_or_default().to_string()
            }
        };
        if let Some(n) = self.workflows.get_mut(&workflow) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.workflows.remove(&workflow);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_values(&[
            (
                "daily-digest.user_1",
                r#"{"cron":"0 8 * * *","timezone":"America/New_York"}"#,
            ),
            (
                "daily-digest.user_2",
                r#"{"cron":"0 8 * * *","timezone":"America/New_York","paused":true}"#,
            ),
            (
                "daily-digest.user_3",
                r#"{"cron":"0 8 * * *","timezone":"Europe/London"}"#,
            ),
            ("report.global", r#"{"cron":"0 9 * * *"}"#),
            ("report.bad", r#"{"cron":"0 25 * * *"}"#),
            ("report.worse", "not json"),
        ])
    }

    #[test]
    fn pages_filters_and_counts() {
        let c = catalog();
        let s = c.summary();
        assert_eq!(
            (s.schedules, s.invalid, s.active, s.loaded),
            (6, 2, 3, true)
        );
        let all = c.page(&Filter::default(), None, 4);
        assert_eq!(all.matching, 6);
        assert_eq!(all.rows.len(), 4);
        let next = all.next_after.clone().unwrap();
        assert_eq!(next, "report.bad");
        let rest = c.page(&Filter::default(), Some(&next), 4);
        let keys: Vec<&str> = rest.rows.iter().map(|r| r.row.kv_key.as_str()).collect();
        assert_eq!(keys, ["report.global", "report.worse"]);
        assert_eq!(rest.next_after, None);

        let digest = Filter {
            workflow: Some("daily-digest".into()),
            key: Some("USER_3".into()),
            ..Filter::default()
        };
        let p = c.page(&digest, None, 10);
        assert_eq!(
            (p.matching, p.rows[0].row.kv_key.as_str()),
            (1, "daily-digest.user_3")
        );
        let invalid = Filter {
            invalid_only: true,
            ..Filter::default()
        };
        let p = c.page(&invalid, None, 10);
        assert_eq!(p.matching, 2);
        let why = p.rows[0].row.record.as_ref().unwrap_err();
        assert!(why.contains("hour 25"), "{why}");
        assert_eq!(
            c.workflows(),
            [("daily-digest".to_string(), 3), ("report".to_string(), 3)]
        );
    }

    #[test]
    fn groups_follow_changes() {
        let c = catalog();
        let (_, groups) = c.groups();
        let mut counts: Vec<(String, usize)> = groups
            .iter()
            .map(|g| {
                (
                    format!("{} {}", g.cron.expr(), g.cron.timezone().name()),
                    g.active,
                )
            })
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [
                ("0 8 * * * America/New_York".to_string(), 1),
                ("0 8 * * * Europe/London".to_string(), 1),
                ("0 9 * * * UTC".to_string(), 1)
            ]
        );
        c.apply(
            Bucket::Schedules,
            "daily-digest.user_2".into(),
            Some(r#"{"cron":"0 8 * * *","timezone":"America/New_York"}"#.into()),
        );
        c.apply(Bucket::Schedules, "report.global".into(), None);
        c.apply(
            Bucket::Schedules,
            "report.bad".into(),
            Some(r#"{"cron":"0 7 * * *"}"#.into()),
        );
        let s = c.summary();
        assert_eq!((s.schedules, s.invalid, s.active), (5, 1, 4));
        assert!(c.get("report.global").is_none());
    }
}
