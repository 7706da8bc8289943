//! L402 routes for buying agents: pay a paywall's challenge, find a kept
//! token. The agent's client makes the HTTP requests to the paywall itself
//! (see `gateway::l402` for why the gateway does not).

use super::AppState;
use super::extract::{Agent, ApiJson, ApiQuery, READ, SPEND};
use crate::error::Error;
use crate::model::views;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use coffer_client::{L402PayRequest, L402Token};
use serde::Deserialize;

/// Pay an L402 challenge for a URL, within the agent's policy (payee
/// `domain:HOST`, `l402.max_price_msat`, per-domain budgets). If the agent
/// already has a live token for that access, it is returned and nothing is
/// paid. `201` when paid now, `200` when reused; `403` when denied.
#[utoipa::path(post, path = "/v1/l402/pay", tag = "agent", operation_id = "l402_pay", request_body = L402PayRequest,
    responses((status = 201, body = L402Token, description = "Paid now: the new token"),
        (status = 200, body = L402Token, description = "A kept token for the same access: nothing paid")))]
pub async fn pay(
    State(gw): State<AppState>,
    Agent(key): Agent<SPEND>,
    ApiJson(req): ApiJson<L402PayRequest>,
) -> Result<(StatusCode, Json<L402Token>), Error> {
    let outcome = gw.l402_pay(&key, &req.url, &req.challenge, req.rejected_token.as_deref()).await?;
    let status = if outcome.paid { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(views::l402_token(outcome.token, outcome.paid))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenParams {
    /// The URL about to be fetched.
    url: String,
}

/// The agent's live L402 token covering a URL (`404` if none is kept).
#[utoipa::path(get, path = "/v1/l402/tokens", tag = "agent", operation_id = "l402_token", params(TokenParams),
    responses((status = 200, body = L402Token, description = "The kept token")))]
pub async fn token(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    ApiQuery(params): ApiQuery<TokenParams>,
) -> Result<Json<L402Token>, Error> {
    Ok(Json(views::l402_token(gw.l402_token(&key, &params.url).await?, false)))
}
