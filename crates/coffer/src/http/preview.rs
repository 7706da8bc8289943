//! `POST /v1/payments/preview`.

use super::AppState;
use super::extract::{ApiJson, Caller};
use crate::error::Error;
use axum::Json;
use axum::extract::State;
use coffer_client::{PaymentPreview, PreviewRequest};

/// Whether a payment would pass now, which rule would stop or hold it, and
/// what remains of each budget window of the payer's chain, without moving
/// anything: no debit, no usage counted, no audit entry, no event. Decided
/// by the same code as the payment itself. Send `bolt11`, or `amount_msat`
/// with `payee` (`agent:ID` or `node:PUBKEY_HEX`). An agent key previews
/// for its own agent (or, with `agent_id`, a sub-agent); the operator names
/// `agent_id`. Counted as a write of the key (it is a POST): a read key
/// cannot preview.
#[utoipa::path(post, path = "/v1/payments/preview", tag = "agent", request_body = PreviewRequest,
    responses((status = 200, body = PaymentPreview, description = "The decision a payment would get now")))]
pub async fn preview_payment(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> Result<Json<PaymentPreview>, Error> {
    Ok(Json(gw.preview_payment(&caller, &req).await?))
}
