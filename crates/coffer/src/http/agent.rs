//! Agent routes: the wallet, invoices, payments.

use super::AppState;
use super::extract::{Agent, ApiJson, ApiQuery, Caller, IdempotencyKey, READ, RECEIVE, SPEND};
use crate::error::Error;
use crate::gateway::{PayOptions, PayOutcome};
use crate::model::PageRequest;
use crate::model::views;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_client::{Approval, CreateInvoiceRequest, DepositRequest, Invoice, Page, PayRequest, Payment, Wallet};
use serde::Deserialize;

/// The calling agent's wallet.
#[utoipa::path(get, path = "/v1/wallet", tag = "agent",
    responses((status = 200, body = Wallet, description = "The wallet")))]
pub async fn wallet(State(gw): State<AppState>, Agent(key): Agent<READ>) -> Result<Json<Wallet>, Error> {
    let (agent, balance) = gw.wallet(&key).await?;
    Ok(Json(Wallet {
        agent_id: agent.id,
        name: agent.name,
        balance_msat: balance.net_u64(),
        pending_msat: balance.debits_pending.as_u64(),
        available_msat: balance.available().as_u64(),
        scope: key.scope,
    }))
}

/// Create a BOLT11 invoice payable to the calling agent. With `"hold":
/// true` it is a hold invoice: paying it reserves the amount on the payer's
/// wallet (status `accepted`) until the payee settles it
/// (`POST /v1/invoices/{payment_hash}/settle`) or cancels it, or
/// `hold_secs` pass (cancelled: the payer is refunded in full).
#[utoipa::path(post, path = "/v1/invoices", tag = "agent", request_body = CreateInvoiceRequest,
    responses((status = 201, body = Invoice, description = "Created: the invoice")))]
pub async fn create_invoice(
    State(gw): State<AppState>,
    Agent(key): Agent<RECEIVE>,
    ApiJson(req): ApiJson<CreateInvoiceRequest>,
) -> Result<(StatusCode, Json<Invoice>), Error> {
    let hold_secs = match (req.hold, req.hold_secs) {
        (true, secs) => Some(secs.unwrap_or(crate::model::HOLD_SECS_DEFAULT)),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(Error::InvalidField { field: "hold_secs", detail: "only with \"hold\": true".into() });
        }
    };
    let (memo, expiry_secs) = (req.memo.as_deref(), req.expiry_secs);
    let invoice = gw.create_invoice(&key, req.amount_msat, memo, expiry_secs, hold_secs).await?;
    Ok((StatusCode::CREATED, Json(views::invoice(invoice, gw.now_ms()))))
}

/// An invoice payable from the Lightning Network (needs a Lightning
/// backend). An agent's key (receive scope) credits that agent; the
/// operator's token credits the treasury, or the agent named by `agent_id`.
/// The wallet is credited once the backend reports the invoice paid.
#[utoipa::path(post, path = "/v1/deposits", tag = "agent", request_body = DepositRequest,
    responses((status = 201, body = Invoice, description = "Created: the invoice to pay from outside")))]
pub async fn create_deposit(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<DepositRequest>,
) -> Result<(StatusCode, Json<Invoice>), Error> {
    let invoice = gw.create_deposit(&caller, req.amount_msat, req.agent_id.as_deref(), req.memo.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(views::invoice(invoice, gw.now_ms()))))
}

/// One of the calling agent's invoices, with its status.
#[utoipa::path(get, path = "/v1/invoices/{payment_hash}", tag = "agent", params(("payment_hash" = String, Path)),
    responses((status = 200, body = Invoice, description = "The invoice")))]
pub async fn get_invoice(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    Path(hash): Path<String>,
) -> Result<Json<Invoice>, Error> {
    Ok(Json(views::invoice(gw.invoice(&key, &hash).await?, gw.now_ms())))
}

/// The invoice's QR code as SVG: `LIGHTNING:` and the BOLT11 in upper case.
/// For the invoice's agent, members of its room, and the operator.
#[utoipa::path(get, path = "/v1/invoices/{payment_hash}/qr.svg", tag = "agent", params(("payment_hash" = String, Path)),
    responses((status = 200, content_type = "image/svg+xml", description = "The QR code, as SVG")))]
pub async fn qr_svg(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(hash): Path<String>,
) -> Result<Response, Error> {
    let invoice = gw.visible_invoice(&caller, &hash).await?;
    let svg = super::qr::svg(&invoice.bolt11).map_err(|e| Error::internal("rendering a QR code", e))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "private, max-age=3600")], svg)
        .into_response())
}

/// The invoice's QR code as PNG (`?scale=` pixels per module, 1 to 16).
#[utoipa::path(get, path = "/v1/invoices/{payment_hash}/qr.png", tag = "agent",
    params(("payment_hash" = String, Path), ("scale" = Option<u32>, Query)),
    responses((status = 200, content_type = "image/png", description = "The QR code, as PNG")))]
pub async fn qr_png(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(hash): Path<String>,
    ApiQuery(params): ApiQuery<QrParams>,
) -> Result<Response, Error> {
    let invoice = gw.visible_invoice(&caller, &hash).await?;
    let png = super::qr::png(&invoice.bolt11, params.scale.unwrap_or(QR_SCALE_DEFAULT_PX))
        .map_err(|e| Error::internal("rendering a QR code", e))?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=3600")], png).into_response())
}

const QR_SCALE_DEFAULT_PX: u32 = 6;
// The default is a scale `qr::png` keeps as it is.
const _: () = assert!(QR_SCALE_DEFAULT_PX >= super::qr::PNG_SCALE_MIN_PX);
const _: () = assert!(QR_SCALE_DEFAULT_PX <= super::qr::PNG_SCALE_MAX_PX);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrParams {
    scale: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Rows per page, 1 to 200 (default 50).
    limit: Option<u32>,
}

pub(super) fn page(params: PageParams) -> Result<PageRequest, Error> {
    let (cursor, limit) = page_params(params)?;
    let before = cursor
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| Error::InvalidField { field: "cursor", detail: "not a cursor from this API".into() })
        })
        .transpose()?;
    Ok(PageRequest { before, limit })
}

/// A listing's cursor, as given, and its checked page size.
pub(super) fn page_params(params: PageParams) -> Result<(Option<String>, u32), Error> {
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > crate::model::PAGE_ROWS_MAX {
        return Err(Error::InvalidField { field: "limit", detail: format!("1 to {}", crate::model::PAGE_ROWS_MAX) });
    }
    Ok((params.cursor, limit))
}

/// The calling agent's invoices, newest first.
#[utoipa::path(get, path = "/v1/invoices", tag = "agent", params(PageParams),
    responses((status = 200, body = Page<Invoice>, description = "A page of invoices, newest first")))]
pub async fn list_invoices(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Page<Invoice>>, Error> {
    let (rows, cursor) = gw.invoices(&key, page(params)?).await?;
    let now = gw.now_ms();
    Ok(Json(Page {
        items: rows.into_iter().map(|i| views::invoice(i, now)).collect(),
        next_cursor: cursor.map(|c| c.to_string()),
    }))
}

/// The calling agent's payments, newest first.
#[utoipa::path(get, path = "/v1/payments", tag = "agent", params(PageParams),
    responses((status = 200, body = Page<Payment>, description = "A page of payments, newest first")))]
pub async fn list_payments(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Page<Payment>>, Error> {
    let (rows, cursor) = gw.payments(&key, page(params)?).await?;
    Ok(Json(Page { items: rows.into_iter().map(views::payment).collect(), next_cursor: cursor.map(|c| c.to_string()) }))
}

/// Pay a BOLT11 invoice, within the agent's policy. Send an
/// `Idempotency-Key` header: a retry with the same key and body returns the
/// first answer and never pays twice. `202` means held for a person's
/// approval (inside the gateway or to another node alike); `403` means
/// denied, with a problem type per reason. With `escrow` (an invoice of
/// this gateway), or to a hold invoice, the payment's status is `held`:
/// the money waits, reserved on the payer's wallet, until it is released
/// or refunded (see `escrow` in the answer).
#[utoipa::path(post, path = "/v1/payments", tag = "agent", request_body = PayRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters")),
    responses((status = 200, body = Payment, description = "The payment"), (status = 202, body = Approval, description = "Held for a person's approval (an invoice of this gateway or of another node): the approval, status `held`; its amount, plus the fee limit for another node, is reserved until a person approves (paid once, through the Lightning backend for another node), denies or lets it expire (released)")))]
pub async fn pay(
    State(gw): State<AppState>,
    Agent(key): Agent<SPEND>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(req): ApiJson<PayRequest>,
) -> Result<Response, Error> {
    let options = PayOptions {
        amount_msat: req.amount_msat,
        purpose: req.purpose.as_deref(),
        idempotency_key: idempotency_key.as_deref(),
        escrow: req.escrow.as_ref(),
        task: req.task.as_deref(),
        tags: &req.tags,
    };
    let outcome = gw.pay_to(&key, &req.bolt11, options).await?;
    Ok(match outcome {
        PayOutcome::Paid(payment) if payment.status == coffer_client::PaymentStatus::Held => {
            let view = gw.payment(&key, &payment.id).await?;
            Json(views::payment_with(view.payment, view.escrow)).into_response()
        }
        PayOutcome::Paid(payment) => Json(views::payment(payment)).into_response(),
        PayOutcome::Held(approval) => (StatusCode::ACCEPTED, Json(views::approval(approval, true))).into_response(),
    })
}
