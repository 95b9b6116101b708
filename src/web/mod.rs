//! The dashboard: server-rendered HTML pages of schedules, runs and the load ahead, served by
//! `polos dev` and (with `--http ADDR` / `http.addr`) by `polos scheduler`, next to `/metrics`.
//!
//! | file | concept |
//! |---|---|
//! | `catalog` | [`Catalog`]: every schedule and its state followed live from KV, paged in memory |
//! | `runs` | [`RunReader`]: runs newest first in bounded windows, one run with its steps |
//! | `load` | [`LoadAhead`]: fires per minute (24 h) and per hour (7 days), drawn as inline SVG |
//! | `pages` | each page rendered from plain data |
//! | `html` | escaping, the page frame, the embedded stylesheet and icon |
//! | `error` | [`WebError`] |
//!
//! Reads go to the buckets (through the model's parsers); pause, resume, trigger and delete are
//! HTML forms whose handler sends the same `polos.schedules.*` requests as the CLI, so the API
//! service validates them. No JavaScript, no CDN: every asset is compiled into the binary.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let config = polos::config::Config::from_env()?;
//! let client = polos::nats::connect(&config.nats).await?;
//! let metrics = polos::metrics::Metrics::new();
//! let dashboard = polos::web::Dashboard::start(client, metrics).await?;
//! let addr = polos::metrics::HttpAddr::parse("127.0.0.1:4280")?;
//! let listener = polos::metrics::bind(&addr, None).await?;
//! polos::web::serve(listener, dashboard, None, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod catalog;
mod error;
mod html;
mod load;
mod pages;
mod runs;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

pub use catalog::{Catalog, Filter, Group, Page, Row, RowView, Summary};
pub use error::WebError;
pub use load::LoadAhead;
pub use runs::{RunFilter, RunPage, RunReader, StepView};

use crate::client::{schedules, PolosClient};
use crate::metrics::{metrics_router, require_token, HttpError, Metrics};
use crate::model::names::{
    LEASES_BUCKET, LEASE_KEY, RUNS_BUCKET, SCHEDULES_BUCKET, SCHEDULE_STATE_BUCKET,
};
use crate::model::{schedule_kv_key, validate_key, validate_workflow, RunStatus, DEFAULT_KEY};
use crate::store::{RunStore, StepStore};
use crate::ticker::LeaseValue;
use html::Section;

/// How long an action waits for the catalog to show its effect before redirecting, so the page
/// after "Pause" says paused.
const SETTLE: Duration = Duration::from_secs(2);

/// The dashboard's data sources, shared by every request.
pub struct Dashboard {
    /// Shared with the router's handlers.
    state: Arc<AppState>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

/// A load computation: the catalog version and the instant it was computed at, and the result.
type CachedLoad = (u64, DateTime<Utc>, Arc<LoadAhead>);

struct AppState {
    /// Schedules and states, in memory.
    catalog: Catalog,
    /// Runs and steps.
    runs: RunReader,
    /// The schedules API, for the action buttons.
    api: PolosClient,
    /// `polos_leases`, for "who leads" in the header.
    leases: Store,
    /// Served at `/metrics` beside the pages.
    metrics: Metrics,
    /// The last load computation: (catalog version, minute computed, result).
    load: Mutex<Option<CachedLoad>>,
    /// The catalog's followers, stopped with the dashboard.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for AppState {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Dashboard {
    /// Opens the buckets and starts following the schedules; pages answer at once and say
    /// "loading…" until the initial read is complete. The buckets must exist
    /// (`polos streams apply`).
    pub async fn start(
        client: async_nats::Client,
        metrics: Metrics,
    ) -> Result<Dashboard, WebError> {
        let js = async_nats::jetstream::new(client.clone());
        let open = |bucket: &'static str| {
            let js = js.clone();
            async move {
                js.get_key_value(bucket).await.map_err(|e| WebError::Open {
                    bucket,
                    source: e.into(),
                })
            }
        };
        let (catalog, tasks) = Catalog::follow(
            client.clone(),
            open(SCHEDULES_BUCKET).await?,
            open(SCHEDULE_STATE_BUCKET).await?,
        );
        let state = AppState {
            catalog,
            runs: RunReader::new(
                open(RUNS_BUCKET).await?,
                RunStore::open(&js).await?,
                StepStore::open(&js).await?,
            ),
            api: PolosClient::from_nats(client),
            leases: open(LEASES_BUCKET).await?,
            metrics,
            load: Mutex::new(None),
            tasks,
        };
        Ok(Dashboard {
            state: Arc::new(state),
        })
    }

    /// The followed schedules.
    pub fn catalog(&self) -> &Catalog {
        &self.state.catalog
    }

    /// Every page, the assets and `/metrics`, behind `token` when one is set.
    pub fn router(&self, token: Option<&str>) -> Router {
        let pages = Router::new()
            .route("/", get(|| async { Redirect::to("/schedules") }))
            .route("/schedules", get(schedules_page))
            .route("/schedule", get(schedule_page))
            .route("/schedule/{action}", post(action))
            .route("/runs", get(runs_page))
            .route("/runs/{run_id}", get(run_page))
            .route("/load", get(load_page))
            .route("/assets/style.css", get(style))
            .route("/assets/icon.svg", get(icon))
            .with_state(self.state.clone())
            .merge(metrics_router(self.state.metrics.clone()));
        require_token(pages, token)
    }
}

/// Serves `dashboard` (and `/metrics`) on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    dashboard: Dashboard,
    token: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    crate::metrics::serve_router(listener, dashboard.router(token), shutdown).await
}

type Params = Query<HashMap<String, String>>;

/// A query parameter, `None` when absent or empty.
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

impl AppState {
    async fn status(&self) -> String {
        let leader = match self.leases.get(LEASE_KEY).await {
            Ok(Some(v)) => match serde_json::from_slice::<LeaseValue>(&v) {
                Ok(lease) => format!("leader {}", lease.holder),
                Err(_) => "lease unreadable".to_string(),
            },
            Ok(None) => "no scheduler leads".to_string(),
            Err(_) => "lease unknown".to_string(),
        };
        pages::status_line(&self.catalog.summary(), &leader)
    }

    async fn render(
        &self,
        title: &str,
        section: Section,
        flash: Option<&str>,
        body: &str,
    ) -> Html<String> {
        Html(html::page(
            title,
            section,
            &self.status().await,
            flash,
            body,
        ))
    }

    async fn problem(&self, status: StatusCode, section: Section, message: &str) -> Response {
        (
            status,
            self.render("Not here", section, None, &pages::problem(message))
                .await,
        )
            .into_response()
    }

    fn load(&self, now: DateTime<Utc>) -> Arc<LoadAhead> {
        let (version, groups) = self.catalog.groups();
        let minute = now.timestamp() / 60;
        let mut cache = self.load.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, at, load)) = cache.as_ref() {
            if *v == version && at.timestamp() / 60 == minute {
                return load.clone();
            }
        }
        let load = Arc::new(LoadAhead::compute(&groups, now));
        *cache = Some((version, now, load.clone()));
        load
    }
}

async fn schedules_page(State(s): State<Arc<AppState>>, Query(p): Params) -> Response {
    let filter = Filter {
        workflow: param(&p, "workflow").map(String::from),
        key: param(&p, "key").map(String::from),
        invalid_only: param(&p, "invalid").is_some(),
    };
    let after = param(&p, "after");
    let page = s.catalog.page(&filter, after, pages::SCHEDULES_PER_PAGE);
    let body = pages::schedules(&filter, &page, &s.catalog.workflows(), after, Utc::now());
    s.render("Schedules", Section::Schedules, param(&p, "msg"), &body)
        .await
        .into_response()
}

async fn schedule_page(State(s): State<Arc<AppState>>, Query(p): Params) -> Response {
    let Some(workflow) = param(&p, "workflow") else {
        return s
            .problem(
                StatusCode::BAD_REQUEST,
                Section::Schedules,
                "which schedule? open one from the list",
            )
            .await;
    };
    let key = p.get("key").map_or(DEFAULT_KEY, String::as_str);
    if let Err(e) = validate_workflow(workflow).and_then(|()| validate_key(key)) {
        return s
            .problem(StatusCode::BAD_REQUEST, Section::Schedules, &e.to_string())
            .await;
    }
    let kv_key = schedule_kv_key(workflow, key);
    let Some(view) = s.catalog.get(&kv_key) else {
        let message = if s.catalog.summary().loaded {
            format!("no schedule for workflow {workflow:?} with key {key:?}")
        } else {
            "the schedules are still loading; reload in a moment".to_string()
        };
        return s
            .problem(StatusCode::NOT_FOUND, Section::Schedules, &message)
            .await;
    };
    let filter = RunFilter {
        workflow: Some(workflow.to_string()),
        schedule_id: view.row.record.as_ref().ok().map(|r| r.schedule_id.clone()),
        ..RunFilter::default()
    };
    let runs = s.runs.recent(&filter, None, 20).await;
    let title = format!("{workflow} / {key}");
    let body = pages::schedule(&view, &runs, Utc::now());
    s.render(&title, Section::Schedules, param(&p, "msg"), &body)
        .await
        .into_response()
}

/// Whether a form post comes from this dashboard's own pages. A page elsewhere could make a
/// browser post to 127.0.0.1 (cross-site request forgery); browsers mark such posts with an
/// `Origin` of that other site and `Sec-Fetch-Site: cross-site`.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    }
}

async fn action(
    State(s): State<Arc<AppState>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !same_origin(&headers) {
        return s
            .problem(
                StatusCode::FORBIDDEN,
                Section::Schedules,
                "this form was posted from another site; use the dashboard's own buttons",
            )
            .await;
    }
    let workflow = form.get("workflow").map_or("", String::as_str);
    let key = form.get("key").map_or(DEFAULT_KEY, String::as_str);
    let kv_key = schedule_kv_key(workflow, key);
    let paused = |want: bool| {
        move |v: Option<RowView>| v.is_some_and(|v| v.row.record.is_ok_and(|r| r.paused == want))
    };
    let outcome: Result<String, String> = match action.as_str() {
        "pause" => match schedules::pause(&s.api, workflow, key, None).await {
            Ok(_) => {
                settle(&s.catalog, &kv_key, paused(true)).await;
                Ok("paused: it fires no more until resumed".into())
            }
            Err(e) => Err(e.to_string()),
        },
        "resume" => match schedules::resume(&s.api, workflow, key, None).await {
            Ok(_) => {
                settle(&s.catalog, &kv_key, paused(false)).await;
                Ok("resumed: it fires from its next instant on".into())
            }
            Err(e) => Err(e.to_string()),
        },
        "trigger" => schedules::trigger(&s.api, workflow, key)
            .await
            .map(|run_id| format!("triggered: run {run_id}"))
            .map_err(|e| e.to_string()),
        "delete" => match schedules::delete(&s.api, workflow, key).await {
            Ok(existed) => {
                settle(&s.catalog, &kv_key, |v| v.is_none()).await;
                let msg = if existed {
                    format!("deleted {workflow} / {key}")
                } else {
                    format!("{workflow} / {key} was already deleted")
                };
                return Redirect::to(&format!("/schedules?msg={}", html::q(&msg))).into_response();
            }
            Err(e) => Err(e.to_string()),
        },
        other => {
            return s
                .problem(
                    StatusCode::NOT_FOUND,
                    Section::Schedules,
                    &format!("no action {other:?}; use pause, resume, trigger or delete"),
                )
                .await
        }
    };
    let msg = outcome.unwrap_or_else(|e| format!("refused: {e}"));
    Redirect::to(&format!(
        "/schedule?workflow={}&key={}&msg={}",
        html::q(workflow),
        html::q(key),
        html::q(&msg)
    ))
    .into_response()
}

/// Waits (bounded) until the catalog shows what the API just wrote.
async fn settle(catalog: &Catalog, kv_key: &str, done: impl Fn(Option<RowView>) -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done(catalog.get(kv_key)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn runs_page(State(s): State<Arc<AppState>>, Query(p): Params) -> Response {
    let status = match param(&p, "status") {
        None => None,
        Some(text) if RunStatus::parse(text).is_some() => RunStatus::parse(text),
        Some(other) => {
            return s
                .problem(
                    StatusCode::BAD_REQUEST,
                    Section::Runs,
                    &format!(
                        "status {other:?} is not running, completed, failed, cancelled or skipped"
                    ),
                )
                .await
        }
    };
    let workflow = param(&p, "workflow");
    if let Some(Err(e)) = workflow.map(validate_workflow) {
        return s
            .problem(StatusCode::BAD_REQUEST, Section::Runs, &e.to_string())
            .await;
    }
    let before = param(&p, "before").and_then(|b| b.parse::<u64>().ok());
    let filter = RunFilter {
        workflow: workflow.map(String::from),
        status,
        schedule_id: None,
    };
    let page = s.runs.recent(&filter, before, pages::RUNS_PER_PAGE).await;
    let body = pages::runs(&filter, &page, &s.catalog.workflows(), Utc::now());
    s.render("Runs", Section::Runs, None, &body)
        .await
        .into_response()
}

async fn run_page(State(s): State<Arc<AppState>>, Path(run_id): Path<String>) -> Response {
    match s.runs.run(&run_id).await {
        Ok(Some((record, steps))) => {
            let body = pages::run(&record, &steps, Utc::now());
            s.render(&format!("Run {run_id}"), Section::Runs, None, &body)
                .await
                .into_response()
        }
        Ok(None) => {
            s.problem(
                StatusCode::NOT_FOUND,
                Section::Runs,
                &format!("no run {run_id:?} in polos_runs (runs are kept 30 days)"),
            )
            .await
        }
        Err(e) => {
            s.problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                Section::Runs,
                &e.to_string(),
            )
            .await
        }
    }
}

async fn load_page(State(s): State<Arc<AppState>>) -> Response {
    let now = Utc::now();
    let load = s.load(now);
    let body = pages::load(&load, s.catalog.summary().active, now);
    s.render("Load ahead", Section::Load, None, &body)
        .await
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        html::STYLE,
    )
        .into_response()
}

async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], html::ICON).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn forms_from_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "curl and scripts send no Origin");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4280"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:4280"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }
}
