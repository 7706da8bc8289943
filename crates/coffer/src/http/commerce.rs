//! Trade routes: hold invoices settled or cancelled by their payee, escrows
//! released or disputed by their payer and resolved by the operator,
//! refunds, metered sessions, and one payment as either side sees it.

use super::AppState;
use super::agent::{PageParams, page};
use super::extract::{Agent, ApiJson, ApiQuery, Caller, IdempotencyKey, Operator, READ, RECEIVE, SPEND};
use crate::error::Error;
use crate::gateway::PaymentView;
use crate::model::views;
use crate::payment::escrow::Ended;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use coffer_client::{
    ChargeRequest, Escrow, OpenSessionRequest, Page, Payment, Refund, RefundRequest, ResolveRequest, Session,
    SignedReceipt,
};
use serde::Deserialize;

fn ended(e: Ended) -> Payment {
    views::payment_with(e.payment, Some(e.escrow))
}

fn payment_view(v: PaymentView) -> Payment {
    Payment { refunds: v.refunds.into_iter().map(views::refund).collect(), ..views::payment_with(v.payment, v.escrow) }
}

/// Settle a hold invoice of the calling agent once it is `accepted`: the
/// amount moves from the payer's reservation to this agent, the invoice is
/// `paid`, the payer's payment `succeeded` (and shows the preimage).
#[utoipa::path(post, path = "/v1/invoices/{payment_hash}/settle", tag = "trade", params(("payment_hash" = String, Path)),
    responses((status = 200, body = Payment, description = "The payer's payment, now succeeded, with its escrow `released`"),
        (status = 409, body = coffer_client::Problem, description = "Not waiting any more (settled, cancelled, past its deadline), or an escrow (released by its payer)")))]
pub async fn settle_hold(
    State(gw): State<AppState>,
    Agent(key): Agent<RECEIVE>,
    Path(hash): Path<String>,
) -> Result<Json<Payment>, Error> {
    Ok(Json(ended(gw.settle_hold(&key, &hash).await?)))
}

/// Cancel what waits on an invoice of the calling agent (a hold it will
/// not serve, or an escrow it gives back): the payer is refunded in full,
/// the invoice is `cancelled`, the payment `refunded`.
#[utoipa::path(post, path = "/v1/invoices/{payment_hash}/cancel", tag = "trade", params(("payment_hash" = String, Path)),
    responses((status = 200, body = Payment, description = "The payer's payment, now refunded")))]
pub async fn cancel_hold(
    State(gw): State<AppState>,
    Agent(key): Agent<RECEIVE>,
    Path(hash): Path<String>,
) -> Result<Json<Payment>, Error> {
    Ok(Json(ended(gw.cancel_hold(&key, &hash).await?)))
}

/// One payment, to its payer or its payee: with the hold or escrow its
/// money waits in and its refunds (`refunds`).
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "trade", params(("id" = String, Path)),
    responses((status = 200, body = Payment, description = "The payment")))]
pub async fn get_payment(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    Path(id): Path<String>,
) -> Result<Json<Payment>, Error> {
    Ok(Json(payment_view(gw.payment(&key, &id).await?)))
}

/// The signed receipt of a settled payment (an internal payment, a hold
/// settled, an escrow released, a payment to another node), to its payer,
/// its payee or the operator: verifiable offline with the gateway's node
/// public key alone (`node_pubkey` of `/healthz`). See docs/receipts.md.
#[utoipa::path(get, path = "/v1/payments/{id}/receipt", tag = "trade", params(("id" = String, Path)),
    responses((status = 200, body = SignedReceipt, description = "The receipt and the node key's signature over its canonical form"),
        (status = 409, body = coffer_client::Problem, description = "`invalid-state`: the payment was never settled (pending, held, failed, a hold cancelled, an escrow refunded)")))]
pub async fn payment_receipt(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SignedReceipt>, Error> {
    Ok(Json(gw.payment_receipt(&caller, &id).await?))
}

/// Release a held escrowed payment of the calling agent to its payee (a
/// disputed one is the operator's to resolve).
#[utoipa::path(post, path = "/v1/payments/{id}/release", tag = "trade", params(("id" = String, Path)),
    responses((status = 200, body = Payment, description = "The payment, now succeeded")))]
pub async fn release(
    State(gw): State<AppState>,
    Agent(key): Agent<SPEND>,
    Path(id): Path<String>,
) -> Result<Json<Payment>, Error> {
    Ok(Json(ended(gw.release_escrow(&key, &id).await?)))
}

/// Dispute an escrowed payment of the calling agent before its deadline:
/// it then waits for the operator (`POST /v1/payments/{id}/resolve`).
#[utoipa::path(post, path = "/v1/payments/{id}/dispute", tag = "trade", params(("id" = String, Path)),
    responses((status = 200, body = Escrow, description = "The escrow, now disputed")))]
pub async fn dispute(
    State(gw): State<AppState>,
    Agent(key): Agent<SPEND>,
    Path(id): Path<String>,
) -> Result<Json<Escrow>, Error> {
    Ok(Json(views::escrow(gw.dispute_escrow(&key, &id).await?)))
}

/// The operator decides a disputed escrow: `release` pays the payee,
/// `refund` gives the payer its money back.
#[utoipa::path(post, path = "/v1/payments/{id}/resolve", tag = "trade", params(("id" = String, Path)),
    request_body = ResolveRequest,
    responses((status = 200, body = Payment, description = "The payment, succeeded or refunded")))]
pub async fn resolve(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> Result<Json<Payment>, Error> {
    Ok(Json(ended(gw.resolve_escrow(&id, req.outcome).await?)))
}

/// Refund (part of) a payment the calling agent received: never more than
/// it received in all. Send an `Idempotency-Key`: a retry never refunds
/// twice. Budgets are not given back by a refund.
#[utoipa::path(post, path = "/v1/payments/{id}/refund", tag = "trade", params(("id" = String, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters")),
    request_body = RefundRequest,
    responses((status = 201, body = Refund, description = "The refund"),
        (status = 409, body = coffer_client::Problem, description = "`refund-exceeds-payment`: past what is left to refund")))]
pub async fn refund(
    State(gw): State<AppState>,
    Agent(key): Agent<SPEND>,
    Path(id): Path<String>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(req): ApiJson<RefundRequest>,
) -> Result<(StatusCode, Json<Refund>), Error> {
    let refund = gw.refund(&key, &id, req.amount_msat, req.reason.as_deref(), idempotency_key.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(views::refund(refund))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EscrowParams {
    /// `held`, `disputed`, `released` or `refunded`.
    pub status: Option<String>,
    /// The operator's filter: one agent's, as payer or payee.
    pub agent_id: Option<String>,
}

/// Holds and escrows, newest first (at most 200): the calling agent's as
/// payer or payee; for the operator every agent's (`agent_id` for one),
/// e.g. `?status=disputed` for the disputes to decide.
#[utoipa::path(get, path = "/v1/escrows", tag = "trade", params(EscrowParams),
    responses((status = 200, body = Vec<Escrow>, description = "Holds and escrows")))]
pub async fn list_escrows(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(params): ApiQuery<EscrowParams>,
) -> Result<Json<Vec<Escrow>>, Error> {
    let found = gw.escrows(&caller, params.agent_id.as_deref(), params.status.as_deref()).await?;
    Ok(Json(found.into_iter().map(views::escrow).collect()))
}

/// Open a metered session: `max_msat` is reserved on the calling agent's
/// wallet and counted against its budgets now; the payee charges against
/// it; on close or expiry the rest returns.
#[utoipa::path(post, path = "/v1/sessions", tag = "trade", request_body = OpenSessionRequest,
    responses((status = 201, body = Session, description = "The open session")))]
pub async fn open_session(
    State(gw): State<AppState>,
    Agent(key): Agent<SPEND>,
    ApiJson(req): ApiJson<OpenSessionRequest>,
) -> Result<(StatusCode, Json<Session>), Error> {
    let purpose = req.purpose.as_deref();
    let attribution = crate::gateway::attribution::parse(req.task.as_deref(), &req.tags)?;
    let session = gw.open_session(&key, &req.payee, req.max_msat, req.expires_in_secs, purpose, attribution).await?;
    Ok((StatusCode::CREATED, Json(views::session(session, None, Vec::new()))))
}

/// The sessions the calling agent pays or is paid by, newest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "trade", params(PageParams),
    responses((status = 200, body = Page<Session>, description = "A page of sessions")))]
pub async fn list_sessions(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Page<Session>>, Error> {
    let (rows, cursor) = gw.sessions(&key, page(params)?).await?;
    let items = rows.into_iter().map(|x| views::session(x, None, Vec::new())).collect();
    Ok(Json(Page { items, next_cursor: cursor.map(|c| c.to_string()) }))
}

/// The sessions an agent pays or is paid by, newest first (operator).
#[utoipa::path(get, path = "/v1/agents/{id}/sessions", tag = "trade", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<Session>, description = "A page of the agent's sessions")))]
pub async fn agent_sessions(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Page<Session>>, Error> {
    let (rows, cursor) = gw.agent_sessions(&id, page(params)?).await?;
    let items = rows.into_iter().map(|x| views::session(x, None, Vec::new())).collect();
    Ok(Json(Page { items, next_cursor: cursor.map(|c| c.to_string()) }))
}

/// A session, to its payer or payee, with its charges (the newest 1000,
/// oldest first) and what remains.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "trade", params(("id" = String, Path)),
    responses((status = 200, body = Session, description = "The session")))]
pub async fn get_session(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    Path(id): Path<String>,
) -> Result<Json<Session>, Error> {
    let (session, charges) = gw.session(&key, &id).await?;
    Ok(Json(views::session(session, None, charges)))
}

/// The signed receipt of a closed or expired session (kind `session`,
/// `amount_msat` what was charged in all, `payment_id` the session's id),
/// to its payer, its payee or the operator. See docs/receipts.md.
#[utoipa::path(get, path = "/v1/sessions/{id}/receipt", tag = "trade", params(("id" = String, Path)),
    responses((status = 200, body = SignedReceipt, description = "The receipt and the node key's signature over its canonical form"),
        (status = 409, body = coffer_client::Problem, description = "`invalid-state`: the session is still open")))]
pub async fn session_receipt(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SignedReceipt>, Error> {
    Ok(Json(gw.session_receipt(&caller, &id).await?))
}

/// Charge a session the calling agent is paid by: moved from the payer's
/// reservation at once, never past what remains. Send an `Idempotency-Key`:
/// a retry never charges twice.
#[utoipa::path(post, path = "/v1/sessions/{id}/charges", tag = "trade", params(("id" = String, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters")),
    request_body = ChargeRequest,
    responses((status = 201, body = Session, description = "The session after the charge, the charge alone in `charges`"),
        (status = 409, body = coffer_client::Problem, description = "`session-exhausted` (past what remains), or `invalid-state` (closed or expired)")))]
pub async fn charge(
    State(gw): State<AppState>,
    Agent(key): Agent<RECEIVE>,
    Path(id): Path<String>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(req): ApiJson<ChargeRequest>,
) -> Result<(StatusCode, Json<Session>), Error> {
    let memo = req.memo.as_deref();
    let (session, charge) = gw.charge_session(&key, &id, req.amount_msat, memo, idempotency_key.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(views::session(session, None, vec![charge]))))
}

/// Close a session (its payer or payee): the unused remainder returns to
/// the payer (`returned_msat`).
#[utoipa::path(post, path = "/v1/sessions/{id}/close", tag = "trade", params(("id" = String, Path)),
    responses((status = 200, body = Session, description = "The closed session")))]
pub async fn close_session(
    State(gw): State<AppState>,
    Agent(key): Agent<RECEIVE>,
    Path(id): Path<String>,
) -> Result<Json<Session>, Error> {
    let (session, returned) = gw.close_session(&key, &id).await?;
    Ok(Json(views::session(session, Some(returned), Vec::new())))
}
