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

/// Counters in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, content_type = "text/plain", description = "The metrics, in the Prometheus text format")))]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::METRICS.render())
}

/// The serialised OpenAPI document, made once at start.
#[derive(Clone)]
pub struct Spec(pub Bytes);

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, content_type = "application/json", description = "This document")))]
pub async fn openapi(Extension(spec): Extension<Spec>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], spec.0)
}
