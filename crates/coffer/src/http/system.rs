//! Routes anyone may call: health, metrics, the OpenAPI document.

use super::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use coffer_client::Health;

/// Liveness, with the network and node identity this gateway runs on.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health, description = "The health")))]
pub async fn healthz(State(gw): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        network: gw.settings().network.as_str().into(),
        node_pubkey: gw.node_pubkey_hex().to_owned(),
    })
}

/// Readiness: whether this gateway can take payments now.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Both parts below are ready.
    pub ready: bool,
    /// `ok`, or why the store cannot write (a full disk, say).
    pub store: String,
    /// `ok`, `none` (no Lightning backend: dev mode), or why it is not
    /// reachable.
    pub backend: String,
    /// Milliseconds since this answer was found: answers are reused for
    /// [`READY_CACHE_MS`], so that calling this route cannot flood the store.
    pub age_ms: u64,
}

/// A readiness answer is reused this long.
pub const READY_CACHE_MS: u64 = 1_000;
/// The bound on each probe (a store write, a backend call).
const READY_PROBE_MS: u64 = 2_000;

/// The last readiness found, and when; the lock also makes concurrent
/// callers wait for one probe instead of each running its own.
static READY: tokio::sync::Mutex<Option<(std::time::Instant, Readiness)>> = tokio::sync::Mutex::const_new(None);

/// Readiness: 200 when the store takes a write (a probe that writes a row
/// of its own, at most once a second) and the Lightning
/// backend, if any, answers; else 503 with `Retry-After`, a problem
/// (`not-ready`) whose `store` and `backend` say which part is not ready.
/// Liveness is `/healthz`.
#[utoipa::path(get, path = "/readyz", tag = "system", responses(
    (status = 200, body = Readiness, description = "Ready: the store writes and the backend answers"),
    (status = 503, body = coffer_client::Problem, description = "Not ready (`not-ready`): the problem's `store` or `backend` says why, beside `ready` and `age_ms`; see Retry-After",
        headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
))]
pub async fn readyz(State(gw): State<AppState>) -> axum::response::Response {
    use std::time::{Duration, Instant};
    let mut last = READY.lock().await;
    let fresh = last.as_ref().filter(|(at, _)| at.elapsed() < Duration::from_millis(READY_CACHE_MS));
    let (at, mut readiness) = match fresh {
        Some((at, r)) => (*at, r.clone()),
        None => {
            let limit = Duration::from_millis(READY_PROBE_MS);
            let now_ms = gw.now_ms();
            let probe = gw.store().write(move |tx| tx.write_ready_probe(now_ms));
            let store = match tokio::time::timeout(limit, probe).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("the store cannot write: {e}"),
                Err(_) => format!("the store did not take a write within {limit:?}"),
            };
            let backend = match gw.backend_reachable(limit).await {
                None => "none".to_owned(),
                Some(Ok(())) => "ok".to_owned(),
                Some(Err(why)) => why,
            };
            let ready = store == "ok" && (backend == "ok" || backend == "none");
            let found = Readiness { ready, store, backend, age_ms: 0 };
            let now = Instant::now();
            *last = Some((now, found.clone()));
            (now, found)
        }
    };
    drop(last);
    readiness.age_ms = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
    if readiness.ready {
        return Json(readiness).into_response();
    }
    let status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    let detail = [("store", &readiness.store), ("backend", &readiness.backend)]
        .iter()
        .filter(|(_, state)| !matches!(state.as_str(), "ok" | "none"))
        .map(|(part, state)| format!("{part}: {state}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut p = super::problem::problem(status, "not-ready", "Not ready", detail);
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&readiness) {
        p.extensions.extend(fields);
    }
    let mut response = super::problem::respond(&p);
    response.headers_mut().insert(header::RETRY_AFTER, super::problem::UNAVAILABLE_RETRY_AFTER_SECS.into());
    response
}

/// Times every request by its route class
/// (`coffer_http_request_duration_seconds`): to the response's head, so a
/// stream counts the time to open it, not how long it stays open.
pub async fn time_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use crate::metrics::{METRICS, RouteClass};
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str());
    let class = RouteClass::of(request.method().as_str(), route);
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    METRICS.record_request(class, started.elapsed());
    response
}

/// Counters, latency histograms and gauges in the Prometheus text format.
/// The store's gauges are read at most once a second, and left out of a
/// scrape the store did not answer in time.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, content_type = "text/plain", description = "The metrics, in the Prometheus text format")))]
pub async fn metrics(State(gw): State<AppState>) -> impl IntoResponse {
    let gauges = gw.store_gauges().await;
    let page = crate::metrics::METRICS.render_with(gw.live().streams_open(), gauges.as_ref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page)
}

/// The process is up: 200 whenever it answers at all, with no check of the
/// store or the backend (those are `/health/ready`'s). For a liveness
/// probe, which should restart the process only when it is stuck.
#[utoipa::path(get, path = "/health/live", tag = "system", responses((status = 200, body = Health, description = "Up")))]
pub async fn health_live(state: State<AppState>) -> Json<Health> {
    healthz(state).await
}

/// Ready to take payments: the same answer as `/readyz` (the store takes a
/// write, the Lightning backend, if any, answers; each probe bounded, the
/// answer reused for a second), under the name a readiness probe expects.
#[utoipa::path(get, path = "/health/ready", tag = "system", responses(
    (status = 200, body = Readiness, description = "Ready: the store writes and the backend answers"),
    (status = 503, body = coffer_client::Problem, description = "Not ready (`not-ready`): the problem's `store` or `backend` says why; see Retry-After",
        headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
))]
pub async fn health_ready(state: State<AppState>) -> axum::response::Response {
    readyz(state).await
}

/// The serialised OpenAPI document, made once at start.
#[derive(Clone)]
pub struct Spec(pub Bytes);

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, content_type = "application/json", description = "This document")))]
pub async fn openapi(Extension(spec): Extension<Spec>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], spec.0)
}
