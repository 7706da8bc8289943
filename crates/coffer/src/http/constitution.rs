//! The constitution's routes: policy, budget, approvals, freeze, the kill
//! switch and the audit trail.

use super::AppState;
use super::extract::{ApiJson, ApiQuery, Caller, Operator};
use crate::error::Error;
use crate::model::views;

use crate::model::{ApprovalOutcome, ApprovalStatus, AuditFilter};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use coffer_client::{Agent, Approval, ApprovalDecision, AuditRecord, Breaker, FreezeRequest};
use serde::Deserialize;

/// An agent's policy (`{}` when it has none). The operator, or an ancestor
/// agent for a sub-agent.
#[utoipa::path(get, path = "/v1/agents/{id}/policy", tag = "constitution", params(("id" = String, Path)),
    responses((status = 200, body = coffer_core::policy::Policy, description = "The policy, or `{}` when none is set")))]
pub async fn get_policy(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let policy = gw.policy(&caller, &id).await?;
    let value = policy.map_or_else(|| Ok(serde_json::json!({})), serde_json::to_value);
    Ok(Json(value.map_err(|e| Error::internal("serialising a policy", e))?))
}

/// Set an agent's policy. Every field is optional: `max_payment_msat`,
/// `budgets` (rolling or calendar windows), `lifetime_msat`,
/// `max_payments_per_minute`, `payees`, `approval_above_msat`, `expires_at`,
/// `breaker`. An agent never sets its own policy.
#[utoipa::path(put, path = "/v1/agents/{id}/policy", tag = "constitution", params(("id" = String, Path)),
    request_body(content = coffer_core::policy::Policy, description = "The policy document"),
    responses((status = 200, body = coffer_core::policy::Policy, description = "The policy as stored")))]
pub async fn put_policy(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<serde_json::Value>, Error> {
    let policy = gw.set_policy(&caller, &id, &body.to_string()).await?;
    Ok(Json(serde_json::to_value(policy).map_err(|e| Error::internal("serialising a policy", e))?))
}

/// Spent and remaining per budget window, the lifetime allowance and the
/// rate of the last minute.
#[utoipa::path(get, path = "/v1/agents/{id}/budget", tag = "constitution", params(("id" = String, Path)),
    responses((status = 200, body = coffer_core::policy::BudgetReport, description = "Spent and remaining per budget window, in msat")))]
pub async fn get_budget(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let report = gw.budget(&caller, &id).await?;
    Ok(Json(serde_json::to_value(report).map_err(|e| Error::internal("serialising a budget", e))?))
}

/// An optional JSON body: empty means the default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::MalformedRequest(e.to_string()))
}

/// Freeze an agent: no outgoing payment of it or of its sub-agents until
/// unfrozen. The body (`{"reason"}`) is optional.
#[utoipa::path(post, path = "/v1/agents/{id}/freeze", tag = "constitution", params(("id" = String, Path)),
    request_body = Option<FreezeRequest>,
    responses((status = 200, body = Agent, description = "The agent")))]
pub async fn freeze(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Agent>, Error> {
    let req: FreezeRequest = optional_body(&body)?;
    gw.freeze(&id, req.reason.as_deref()).await?;
    Ok(Json(views::agent(gw.agent(&id).await?)))
}

/// Unfreeze an agent.
#[utoipa::path(post, path = "/v1/agents/{id}/unfreeze", tag = "constitution", params(("id" = String, Path)),
    responses((status = 200, body = Agent, description = "The agent")))]
pub async fn unfreeze(State(gw): State<AppState>, _: Operator, Path(id): Path<String>) -> Result<Json<Agent>, Error> {
    gw.unfreeze(&id).await?;
    Ok(Json(views::agent(gw.agent(&id).await?)))
}

/// The kill switch: `{"halted": true}` stops every outgoing payment at
/// once; once this answers, no wallet is debited until it is released.
#[utoipa::path(post, path = "/v1/breaker", tag = "constitution", request_body = Breaker,
    responses((status = 200, body = Breaker, description = "The breaker")))]
pub async fn set_breaker(
    State(gw): State<AppState>,
    _: Operator,
    ApiJson(req): ApiJson<Breaker>,
) -> Result<Json<Breaker>, Error> {
    gw.set_halted(req.halted).await?;
    Ok(Json(Breaker { halted: gw.halted().await? }))
}

/// Whether the kill switch is on.
#[utoipa::path(get, path = "/v1/breaker", tag = "constitution",
    responses((status = 200, body = Breaker, description = "The breaker")))]
pub async fn get_breaker(State(gw): State<AppState>, _: Operator) -> Result<Json<Breaker>, Error> {
    Ok(Json(Breaker { halted: gw.halted().await? }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalParams {
    /// `pending` (default), `approved`, `denied`, `expired` or `all`.
    status: Option<String>,
    /// At most this many, newest first (1 to 200, default 100).
    limit: Option<u32>,
}

/// The approvals queue.
#[utoipa::path(get, path = "/v1/approvals", tag = "constitution", params(ApprovalParams),
    responses((status = 200, body = Vec<Approval>, description = "The approvals")))]
pub async fn list_approvals(
    State(gw): State<AppState>,
    _: Operator,
    ApiQuery(params): ApiQuery<ApprovalParams>,
) -> Result<Json<Vec<Approval>>, Error> {
    let status = super::extract::status_filter(
        params.status.as_deref(),
        ApprovalStatus::Pending,
        ApprovalStatus::parse,
        "pending, approved, denied, expired or all",
    )?;
    let rows = gw.approvals(status, params.limit.unwrap_or(100)).await?;
    Ok(Json(rows.into_iter().map(|a| views::approval(a, false)).collect()))
}

fn decision(outcome: ApprovalOutcome) -> ApprovalDecision {
    match outcome {
        ApprovalOutcome::Paid(a, p) => {
            ApprovalDecision { approval: views::approval(a, false), payment: Some(views::payment(p)) }
        }
        ApprovalOutcome::Released(a) => ApprovalDecision { approval: views::approval(a, false), payment: None },
    }
}

/// Approve a held payment: it is decided again (the kill switch, a freeze,
/// the policy and the balance may still refuse it, and it stays held), then
/// paid now, exactly once.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "constitution", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalDecision, description = "The approval decision and the payment made. For an invoice of another node the payment went through the Lightning backend: its status says how it ended (`pending` while the backend has not said; the resolver finishes it)")))]
pub async fn approve(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<ApprovalDecision>, Error> {
    Ok(Json(decision(gw.decide_approval(&id, true).await?)))
}

/// Deny a held payment: its reservation and budget are released.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "constitution", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalDecision, description = "The approval decision")))]
pub async fn deny(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<ApprovalDecision>, Error> {
    Ok(Json(decision(gw.decide_approval(&id, false).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Records after this sequence number (default 0: from the start).
    after: Option<i64>,
    agent_id: Option<String>,
    /// `payment.allowed`, `payment.held`, `payment.denied`, `approval.approved`,
    /// `agent.frozen`, `breaker.tripped`, `gateway.halted`, `policy.updated`, ...
    action: Option<String>,
    /// RFC 3339 bounds on the record's time.
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

/// The audit trail, oldest first: who spent what, why, under which rule.
#[utoipa::path(get, path = "/v1/audit", tag = "constitution", params(AuditParams),
    responses((status = 200, body = Vec<AuditRecord>, description = "The audit records")))]
pub async fn audit_log(
    State(gw): State<AppState>,
    _: Operator,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Json<Vec<AuditRecord>>, Error> {
    let time = |field, t: Option<String>| t.map(|t| crate::gateway::parse_time(field, &t)).transpose();
    let filter = AuditFilter {
        agent_id: p.agent_id,
        action: p.action,
        since_ms: time("since", p.since)?,
        until_ms: time("until", p.until)?,
    };
    let rows = gw.audit_log(filter, p.after.unwrap_or(0), p.limit.unwrap_or(100)).await?;
    Ok(Json(rows.into_iter().map(views::audit_record).collect()))
}
