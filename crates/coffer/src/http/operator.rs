//! Operator routes: agents, keys, funding, the treasury.

use super::AppState;
use super::extract::{ApiJson, Caller, Operator};
use crate::error::Error;
use crate::model::views;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use coffer_client::{
    Agent, AgentCreated, AmountRequest, CreateAgentRequest, CreateKeyRequest, KeyCreated, Transferred, Treasury,
};

/// Create an agent with its own wallet and a first `spend` key. With an
/// agent's spend key (of an agent that may create sub-agents), this creates
/// a sub-agent whose spending counts against its parent's budgets too.
#[utoipa::path(post, path = "/v1/agents", tag = "operator", request_body = CreateAgentRequest,
    responses((status = 201, body = AgentCreated, description = "Created: the new agent and its spend key")))]
pub async fn create_agent(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateAgentRequest>,
) -> Result<(StatusCode, Json<AgentCreated>), Error> {
    let task = req.task.as_deref();
    let (agent, key, key_id) = gw.create_agent(&caller, &req.name, req.can_create_subagents, task).await?;
    Ok((StatusCode::CREATED, Json(AgentCreated { id: agent.id, key, key_id })))
}

/// List every agent with its balance.
#[utoipa::path(get, path = "/v1/agents", tag = "operator",
    responses((status = 200, body = Vec<Agent>, description = "The agents")))]
pub async fn list_agents(State(gw): State<AppState>, _: Operator) -> Result<Json<Vec<Agent>>, Error> {
    Ok(Json(gw.agents().await?.into_iter().map(views::agent).collect()))
}

/// One agent.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = Agent, description = "The agent")))]
pub async fn get_agent(State(gw): State<AppState>, _: Operator, Path(id): Path<String>) -> Result<Json<Agent>, Error> {
    Ok(Json(views::agent(gw.agent(&id).await?)))
}

/// Move funds to an agent's wallet: from the treasury (operator), or from a
/// parent agent's wallet to its sub-agent (the parent's spend key).
#[utoipa::path(post, path = "/v1/agents/{id}/fund", tag = "operator", params(("id" = String, Path)),
    request_body = AmountRequest,
    responses((status = 200, body = Transferred, description = "The transfer and the new balance")))]
pub async fn fund_agent(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AmountRequest>,
) -> Result<Json<Transferred>, Error> {
    let (transfer_id, balance) = gw.fund(&caller, &id, req.amount_msat).await?;
    Ok(Json(Transferred { transfer_id, amount_msat: req.amount_msat, balance_msat: balance.net_u64() }))
}

/// Issue another key for an agent. The secret is shown once.
#[utoipa::path(post, path = "/v1/agents/{id}/keys", tag = "operator", params(("id" = String, Path)),
    request_body = CreateKeyRequest,
    responses((status = 201, body = KeyCreated, description = "Created: the new key (its secret is shown only here)")))]
pub async fn create_key(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<KeyCreated>), Error> {
    let (key, secret) = gw.create_key(&id, req.scope, req.expires_at.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(KeyCreated { id: key.id, agent_id: key.agent_id, scope: key.scope, key: secret })))
}

/// Revoke a key at once.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "operator", params(("id" = String, Path)),
    responses((status = 204, description = "Done")))]
pub async fn revoke_key(State(gw): State<AppState>, _: Operator, Path(id): Path<String>) -> Result<StatusCode, Error> {
    gw.revoke_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Dev mode only: add test funds to the treasury.
#[utoipa::path(post, path = "/v1/treasury/mint", tag = "operator", request_body = AmountRequest,
    responses((status = 200, body = Transferred, description = "The transfer and the new balance")))]
pub async fn mint(
    State(gw): State<AppState>,
    _: Operator,
    ApiJson(req): ApiJson<AmountRequest>,
) -> Result<Json<Transferred>, Error> {
    let (transfer_id, balance) = gw.mint(req.amount_msat).await?;
    Ok(Json(Transferred { transfer_id, amount_msat: req.amount_msat, balance_msat: balance.net_u64() }))
}

/// The treasury's balance.
#[utoipa::path(get, path = "/v1/treasury", tag = "operator",
    responses((status = 200, body = Treasury, description = "The treasury")))]
pub async fn treasury(State(gw): State<AppState>, _: Operator) -> Result<Json<Treasury>, Error> {
    Ok(Json(Treasury { balance_msat: gw.treasury().await?.net_u64() }))
}
