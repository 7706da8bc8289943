//! The dev clock's control, for tests of expiry: `POST /v1/dev/clock`
//! `{"advance_ms": N}` moves the gateway's clock N milliseconds forward
//! (never back) and runs the expiry sweeps before it answers
//! `{"now_ms", "now"}`. The operator's token only.
//!
//! The route exists only on a gateway started with `COFFER_DEV_CLOCK=1` in
//! dev mode (no Lightning backend); anywhere else it is not mounted and
//! answers `404` like any unknown path. It is not part of the API, so not in
//! `/openapi.json`.

use super::AppState;
use super::extract::{ApiJson, Operator};
use crate::error::Error;
use crate::model::views;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub const PATH: &str = "/v1/dev/clock";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    advance_ms: i64,
}

#[derive(Debug, Serialize)]
struct Now {
    now_ms: i64,
    now: String,
}

/// The route, on a gateway whose clock may move; nothing otherwise.
pub fn router(state: &AppState) -> Router<AppState> {
    if !state.has_dev_clock() {
        return Router::new();
    }
    Router::new().route(PATH, post(advance))
}

async fn advance(State(gw): State<AppState>, _: Operator, ApiJson(req): ApiJson<Advance>) -> Result<Json<Now>, Error> {
    let now_ms = gw.advance_clock(req.advance_ms).await?;
    Ok(Json(Now { now_ms, now: views::timestamp(now_ms) }))
}
