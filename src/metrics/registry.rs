//! [`Metrics`]: every metric polos exports and one typed method per thing recorded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::Trigger;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How late fires are: from a millisecond (the design target) to a day (catch-up fires).
const LATENESS_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0, 86400.0,
];
/// Run and step durations: from a millisecond to an hour.
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
/// API latency: a KV round trip is about a millisecond.
const API_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How an attempt of a run ended, as counted in `polos_runs_total{status}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values are the contract's lowercase spellings
enum RunStatusLabel {
    completed,
    failed,
    retried,
    released,
    cancelled,
    skipped,
}

/// How one attempt of a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The handler returned `Ok`; the run is `completed`.
    Completed,
    /// A terminal error or the last attempt failed; the run is `failed`.
    Failed,
    /// The attempt failed and the run will be retried.
    Retried,
    /// The worker stopped before the attempt finished and gave the run back.
    Released,
    /// The run was cancelled (`polos.run.cancel`, or the overlap policy `cancel_other`).
    Cancelled,
    /// The run never started: another run of its schedule was executing (overlap policy).
    Skipped,
}

impl RunOutcome {
    fn label(self) -> RunStatusLabel {
        match self {
            RunOutcome::Completed => RunStatusLabel::completed,
            RunOutcome::Failed => RunStatusLabel::failed,
            RunOutcome::Retried => RunStatusLabel::retried,
            RunOutcome::Released => RunStatusLabel::released,
            RunOutcome::Cancelled => RunStatusLabel::cancelled,
            RunOutcome::Skipped => RunStatusLabel::skipped,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum TriggerLabel {
    schedule,
    catchup,
    manual,
    backfill,
}

impl From<Trigger> for TriggerLabel {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Schedule => TriggerLabel::schedule,
            Trigger::Catchup => TriggerLabel::catchup,
            Trigger::Manual => TriggerLabel::manual,
            Trigger::Backfill => TriggerLabel::backfill,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum LeaseChange {
    acquired,
    lost,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FireLabels {
    workflow: String,
    trigger: TriggerLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TriggerLabels {
    trigger: TriggerLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LeaseLabels {
    change: LeaseChange,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabels {
    endpoint: String,
    code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    workflow: String,
    status: RunStatusLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    workflow: String,
    step: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The counters one workflow's fires touch, looked up once per workflow rather than once per
/// fire: 100,000 fires at one instant then cost no label allocation each.
#[derive(Clone)]
struct FireHandles {
    /// `polos_fires_total`, indexed like [`TriggerLabel`].
    fires: [Counter; 4],
    /// `polos_fire_duplicates_total`.
    duplicates: Counter,
}

/// Every metric polos exports. `Clone` is cheap and shares the registry.
#[derive(Clone)]
pub struct Metrics {
    /// Shared by clones.
    inner: Arc<Inner>,
}

struct Inner {
    /// What `/metrics` encodes.
    registry: Registry,
    // --- scheduler ---
    fires: Family<FireLabels, Counter>,
    fire_handles: RwLock<HashMap<Box<str>, FireHandles>>,
    /// `polos_fire_lateness_seconds{trigger="schedule"}` and `{trigger="catchup"}`, held
    /// directly so a fire needs no label lookup.
    late_schedule: Histogram,
    late_catchup: Histogram,
    duplicates: Family<WorkflowLabels, Counter>,
    missed: Family<WorkflowLabels, Counter>,
    schedules: Gauge,
    invalid: Gauge,
    leading: Gauge,
    lease_changes: Family<LeaseLabels, Counter>,
    // --- API ---
    api_requests: Family<ApiLabels, Counter>,
    api_latency: HistogramFamily<EndpointLabels>,
    // --- worker ---
    runs: Family<RunLabels, Counter>,
    run_duration: HistogramFamily<RunLabels>,
    retries: Family<WorkflowLabels, Counter>,
    in_flight: Family<WorkflowLabels, Gauge>,
    step_duration: HistogramFamily<StepLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn lateness_histogram() -> Histogram {
    Histogram::new(LATENESS_BUCKETS)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn api_histogram() -> Histogram {
    Histogram::new(API_BUCKETS)
}

impl Metrics {
    /// A fresh registry with every metric defined (series appear once something is recorded).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("polos_build_info", "polos version of this process", build);

        let fires = Family::<FireLabels, Counter>::default();
        registry.register(
            "polos_fires",
            "Fires published to POLOS_RUNS, by workflow and trigger (schedule, catchup, manual, backfill)",
            fires.clone(),
        );
        let lateness = HistogramFamily::<TriggerLabels>::new_with_constructor(
            lateness_histogram as fn() -> Histogram,
        );
        registry.register(
            "polos_fire_lateness_seconds",
            "Time from a fire's scheduled instant until the stream acknowledged it",
            lateness.clone(),
        );
        let duplicates = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "polos_fire_duplicates",
            "Fires the stream had already stored (Nats-Msg-Id within the duplicate window): overlap absorbed",
            duplicates.clone(),
        );
        let missed = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "polos_missed_instants",
            "Scheduled instants not fired: skipped by the catch-up policy, outside its window, or not published",
            missed.clone(),
        );
        let schedules = Gauge::default();
        registry.register(
            "polos_schedules_loaded",
            "Schedules in the scheduler's table (valid, paused and invalid)",
            schedules.clone(),
        );
        let invalid = Gauge::default();
        registry.register(
            "polos_schedules_invalid",
            "Stored schedule values that cannot fire (bad JSON, cron or zone)",
            invalid.clone(),
        );
        let leading = Gauge::default();
        registry.register(
            "polos_scheduler_leading",
            "1 while this replica holds the lease and fires, else 0",
            leading.clone(),
        );
        let lease_changes = Family::<LeaseLabels, Counter>::default();
        registry.register(
            "polos_scheduler_lease_changes",
            "Times this replica acquired or lost the scheduler lease",
            lease_changes.clone(),
        );

        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "polos_api_requests",
            "Schedules API requests, by endpoint and result code (ok or the error code)",
            api_requests.clone(),
        );
        let api_latency = HistogramFamily::<EndpointLabels>::new_with_constructor(
            api_histogram as fn() -> Histogram,
        );
        registry.register(
            "polos_api_request_duration_seconds",
            "Time to answer a schedules API request",
            api_latency.clone(),
        );

        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "polos_runs",
            "Run attempts finished by this worker, by workflow and outcome (completed, failed, retried, released)",
            runs.clone(),
        );
        let run_duration = HistogramFamily::<RunLabels>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "polos_run_duration_seconds",
            "Duration of one run attempt (the handler), by workflow and outcome",
            run_duration.clone(),
        );
        let retries = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "polos_run_retries",
            "Run attempts that failed and were scheduled for a retry",
            retries.clone(),
        );
        let in_flight = Family::<WorkflowLabels, Gauge>::default();
        registry.register(
            "polos_runs_in_flight",
            "Runs this worker is executing now",
            in_flight.clone(),
        );
        let step_duration = HistogramFamily::<StepLabels>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "polos_step_duration_seconds",
            "Duration of a durable step's body (stored steps that are skipped are not counted)",
            step_duration.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry,
                fires,
                fire_handles: RwLock::new(HashMap::new()),
                late_schedule: lateness.get_or_create_owned(&TriggerLabels {
                    trigger: TriggerLabel::schedule,
                }),
                late_catchup: lateness.get_or_create_owned(&TriggerLabels {
                    trigger: TriggerLabel::catchup,
                }),
                duplicates,
                missed,
                schedules,
                invalid,
                leading,
                lease_changes,
                api_requests,
                api_latency,
                runs,
                run_duration,
                retries,
                in_flight,
                step_duration,
            }),
        }
    }

    /// Everything in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    // ----- scheduler -----

    /// One fire acknowledged by the stream, `lateness` after its scheduled instant.
    /// `duplicate`: the stream already had it (another replica fired the same instant).
    /// Manual fires have no scheduled instant, so they count no lateness.
    pub fn fired(
        &self,
        workflow: &str,
        trigger: Trigger,
        lateness: chrono::TimeDelta,
        duplicate: bool,
    ) {
        let label = TriggerLabel::from(trigger);
        let count = |h: &FireHandles| {
            h.fires[label as usize].inc();
            if duplicate {
                h.duplicates.inc();
            }
        };
        // The hot path (a known workflow) is a read lock and two atomic adds.
        let counted = match self.inner.fire_handles.read() {
            Ok(map) => map.get(workflow).map(count).is_some(),
            Err(_) => false,
        };
        if !counted {
            count(&self.fire_handles(workflow));
        }
        let secs = (lateness.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0);
        match trigger {
            Trigger::Schedule => self.inner.late_schedule.observe(secs),
            Trigger::Catchup => self.inner.late_catchup.observe(secs),
            // Manual and back-filled fires are not late: they have no on-time moment.
            Trigger::Manual | Trigger::Backfill => {}
        }
    }

    fn fire_handles(&self, workflow: &str) -> FireHandles {
        if let Ok(map) = self.inner.fire_handles.read() {
            if let Some(h) = map.get(workflow) {
                return h.clone();
            }
        }
        let fire = |trigger| {
            self.inner.fires.get_or_create_owned(&FireLabels {
                workflow: workflow.to_string(),
                trigger,
            })
        };
        let handles = FireHandles {
            fires: [
                fire(TriggerLabel::schedule),
                fire(TriggerLabel::catchup),
                fire(TriggerLabel::manual),
                fire(TriggerLabel::backfill),
            ],
            duplicates: self.inner.duplicates.get_or_create_owned(&WorkflowLabels {
                workflow: workflow.to_string(),
            }),
        };
        if let Ok(mut map) = self.inner.fire_handles.write() {
            map.insert(workflow.into(), handles.clone());
        }
        handles
    }

    /// `instants` scheduled instants of `workflow` that will not fire.
    pub fn missed(&self, workflow: &str, instants: u64) {
        if instants > 0 {
            self.inner
                .missed
                .get_or_create(&WorkflowLabels {
                    workflow: workflow.to_string(),
                })
                .inc_by(instants);
        }
    }

    /// How many schedules the scheduler's table holds now.
    pub fn schedules_loaded(&self, schedules: usize) {
        self.inner
            .schedules
            .set(i64::try_from(schedules).unwrap_or(i64::MAX));
    }

    /// A stored schedule value that could fire no longer can (`+1`), or the reverse (`-1`).
    pub fn invalid_schedules_changed(&self, delta: i64) {
        self.inner.invalid.inc_by(delta);
    }

    /// Whether this replica leads now; a change from the last call counts as a lease change.
    pub fn leading(&self, leading: bool) {
        let was = self.inner.leading.set(i64::from(leading)) == 1;
        if was != leading {
            let change = if leading {
                LeaseChange::acquired
            } else {
                LeaseChange::lost
            };
            self.inner
                .lease_changes
                .get_or_create(&LeaseLabels { change })
                .inc();
        }
    }

    // ----- API -----

    /// One schedules API request on `endpoint` (`schedules.upsert`, …) answered after `elapsed`,
    /// with `code` `None` for success or the error code (`invalid_cron`, …).
    pub fn api_request(&self, endpoint: &str, code: Option<&str>, elapsed: Duration) {
        self.inner
            .api_requests
            .get_or_create(&ApiLabels {
                endpoint: endpoint.to_string(),
                code: code.unwrap_or("ok").to_string(),
            })
            .inc();
        self.inner
            .api_latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    // ----- worker -----

    /// A run of `workflow` starts executing; it counts as in flight until the guard is dropped.
    pub fn run_started(&self, workflow: &str) -> InFlight {
        let gauge = self.inner.in_flight.get_or_create_owned(&WorkflowLabels {
            workflow: workflow.to_string(),
        });
        gauge.inc();
        InFlight { gauge }
    }

    /// One attempt of a run of `workflow` ended with `outcome` after `elapsed`.
    pub fn run_finished(&self, workflow: &str, outcome: RunOutcome, elapsed: Duration) {
        let labels = RunLabels {
            workflow: workflow.to_string(),
            status: outcome.label(),
        };
        self.inner.runs.get_or_create(&labels).inc();
        self.inner
            .run_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if outcome == RunOutcome::Retried {
            self.inner
                .retries
                .get_or_create(&WorkflowLabels {
                    workflow: labels.workflow,
                })
                .inc();
        }
    }

    /// The body of step `step` of a `workflow` run completed after `elapsed`.
    pub fn step_finished(&self, workflow: &str, step: &str, elapsed: Duration) {
        self.inner
            .step_duration
            .get_or_create(&StepLabels {
                workflow: workflow.to_string(),
                step: step.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// A run counted in `polos_runs_in_flight` until dropped.
#[derive(Debug)]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn fires_are_counted_per_workflow_and_trigger() {
        let m = Metrics::new();
        let ms = chrono::TimeDelta::milliseconds;
        m.fired("a", Trigger::Schedule, ms(2), false);
        m.fired("a", Trigger::Schedule, ms(3), true);
        m.fired("a", Trigger::Catchup, ms(3_600_000), false);
        m.fired("b", Trigger::Manual, ms(0), false);
        let text = m.encode();
        assert_eq!(
            line(
                &text,
                "polos_fires_total{workflow=\"a\",trigger=\"schedule\"}"
            ),
            Some("polos_fires_total{workflow=\"a\",trigger=\"schedule\"} 2"),
            "{text}"
        );
        assert!(text.contains("polos_fires_total{workflow=\"a\",trigger=\"catchup\"} 1"));
        assert!(text.contains("polos_fires_total{workflow=\"b\",trigger=\"manual\"} 1"));
        assert!(text.contains("polos_fire_duplicates_total{workflow=\"a\"} 1"));
        // Two on-time fires in the 2.5 ms and 5 ms buckets; the catch-up fire an hour late.
        assert!(
            text.contains(
                "polos_fire_lateness_seconds_bucket{le=\"0.005\",trigger=\"schedule\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("polos_fire_lateness_seconds_bucket{le=\"300.0\",trigger=\"catchup\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("polos_fire_lateness_seconds_count{trigger=\"manual\"}"),
            "manual fires have no lateness"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn lease_changes_count_transitions_only() {
        let m = Metrics::new();
        m.leading(false);
        m.leading(true);
        m.leading(true);
        m.leading(false);
        let text = m.encode();
        assert!(text.contains("polos_scheduler_lease_changes_total{change=\"acquired\"} 1"));
        assert!(text.contains("polos_scheduler_lease_changes_total{change=\"lost\"} 1"));
        assert!(text.contains("polos_scheduler_leading 0"));
    }

    #[test]
    fn runs_in_flight_drop_back() {
        let m = Metrics::new();
        let guard = m.run_started("wf");
        assert!(m
            .encode()
            .contains("polos_runs_in_flight{workflow=\"wf\"} 1"));
        drop(guard);
        m.run_finished("wf", RunOutcome::Retried, Duration::from_millis(5));
        let text = m.encode();
        assert!(text.contains("polos_runs_in_flight{workflow=\"wf\"} 0"));
        assert!(text.contains("polos_runs_total{workflow=\"wf\",status=\"retried\"} 1"));
        assert!(text.contains("polos_run_retries_total{workflow=\"wf\"} 1"));
    }
}
