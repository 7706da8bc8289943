//! Errors as RFC 9457 problems: `application/problem+json` with a stable
//! `type` (`/problems/<code>`), the status, a title and a human detail.

use crate::error::Error;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_client::Problem;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` of a 503: the store heals within about a second of a
/// fault ending (`store/sqlite`), so one second is soon enough to ask again.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// `Accept-Signature` on a refused signature: the components and
/// parameters a coffer signature needs (`content-digest` and
/// `idempotency-key` when the request has them).
const ACCEPT_SIGNATURE: &str = r#"coffer=("@method" "@target-uri" "content-digest");created;keyid;nonce"#;

/// Status, code and title of each error kind. The code is the stable part.
pub fn classify(e: &Error) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match e {
        Error::InvalidField { .. } => (S::BAD_REQUEST, "invalid-field", "Invalid field"),
        Error::InvalidAmount { .. } => (S::BAD_REQUEST, "invalid-amount", "Invalid amount"),
        Error::InvalidInvoice(_) => (S::BAD_REQUEST, "invalid-invoice", "Invalid invoice"),
        Error::MalformedRequest(_) => (S::BAD_REQUEST, "malformed-request", "Malformed request"),
        Error::BodyTooLarge => (S::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large"),
        Error::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type"),
        Error::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
        Error::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
        Error::Forbidden(_) => (S::FORBIDDEN, "forbidden", "Forbidden"),
        Error::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
        Error::InsufficientBalance { .. } => (S::PAYMENT_REQUIRED, "insufficient-balance", "Insufficient balance"),
        Error::InvoiceExpired => (S::CONFLICT, "invoice-expired", "Invoice expired"),
        Error::InvoiceAlreadyPaid => (S::CONFLICT, "invoice-already-paid", "Invoice already paid"),
        Error::SelfPayment => (S::UNPROCESSABLE_ENTITY, "self-payment", "Own invoice"),
        Error::AmountRequired => (S::UNPROCESSABLE_ENTITY, "amount-required", "Invoice has no amount"),
        Error::NoLightningBackend => {
            (S::UNPROCESSABLE_ENTITY, "no-lightning-backend", "No Lightning backend configured")
        }
        Error::PaymentInFlight => (S::CONFLICT, "payment-in-flight", "Payment in flight"),
        Error::PaymentHeld => (S::CONFLICT, "payment-held", "Payment held for approval"),
        Error::Backend(_) => (S::BAD_GATEWAY, "lightning-backend", "Lightning backend error"),
        Error::IdempotencyConflict => (S::CONFLICT, "idempotency-conflict", "Idempotency-Key reused"),
        Error::MintDisabled => (S::FORBIDDEN, "mint-disabled", "Minting disabled"),
        Error::Denied(d) if d.code == "insufficient-balance" => {
            (S::PAYMENT_REQUIRED, "insufficient-balance", "Insufficient balance")
        }
        Error::Denied(d) => (S::FORBIDDEN, d.code, "Payment denied"),
        Error::ApprovalNotPending(_) => (S::CONFLICT, "approval-not-pending", "Approval already decided"),
        Error::AlreadyDecided(_) => (S::CONFLICT, "already-decided", "Already decided"),
        Error::InvalidPolicy(_) => (S::BAD_REQUEST, "invalid-policy", "Invalid policy"),
        Error::LimitExceeded { retry_after_secs: None, .. } => {
            (S::UNPROCESSABLE_ENTITY, "limit-exceeded", "Limit reached")
        }
        Error::LimitExceeded { .. } => (S::TOO_MANY_REQUESTS, "limit-exceeded", "Limit reached"),
        Error::InvalidState(_) => (S::CONFLICT, "invalid-state", "Not possible in this state"),
        Error::SessionExhausted { .. } => (S::CONFLICT, "session-exhausted", "Session maximum reached"),
        Error::RefundExceedsPayment { .. } => (S::CONFLICT, "refund-exceeds-payment", "Refund exceeds the payment"),
        Error::Signature { missing: true, .. } => (S::UNAUTHORIZED, "signature-required", "Signature required"),
        Error::Signature { .. } => (S::UNAUTHORIZED, "signature-invalid", "Signature invalid"),
        Error::Unavailable(_) | Error::Contended(_) => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
        Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
    }
}

pub fn problem(status: StatusCode, code: &str, title: &str, detail: String) -> Problem {
    Problem {
        problem_type: format!("/problems/{code}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail,
        code: code.to_owned(),
        extensions: serde_json::Map::new(),
    }
}

pub fn respond(p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(p).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, title) = classify(&self);
        if let Error::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let mut p = problem(status, code, title, self.to_string());
        match &self {
            Error::InsufficientBalance { available, needed } => {
                p.extensions.insert("available_msat".into(), available.as_u64().into());
                p.extensions.insert("needed_msat".into(), needed.as_u64().into());
            }
            Error::SessionExhausted { remaining, needed } | Error::RefundExceedsPayment { remaining, needed } => {
                p.extensions.insert("remaining_msat".into(), remaining.as_u64().into());
                p.extensions.insert("needed_msat".into(), needed.as_u64().into());
            }
            Error::InvalidField { field, .. } | Error::InvalidAmount { field, .. } => {
                p.extensions.insert("field".into(), (*field).into());
            }
            Error::Signature { component, .. } => {
                p.extensions.insert("component".into(), (*component).into());
            }
            Error::InvalidPolicy(e) => {
                p.extensions.insert("field".into(), e.field.clone().into());
            }
            Error::LimitExceeded { limit, retry_after_secs, .. } => {
                p.extensions.insert("limit".into(), limit.name().into());
                if let Some(secs) = retry_after_secs {
                    p.extensions.insert("retry_after_secs".into(), (*secs).into());
                }
            }
            Error::Denied(d) => {
                if let Some(remaining) = d.remaining {
                    p.extensions.insert("remaining_msat".into(), remaining.as_u64().into());
                }
                if let Some(available) = d.available {
                    p.extensions.insert("available_msat".into(), available.as_u64().into());
                }
                if let Some(needed) = d.needed {
                    p.extensions.insert("needed_msat".into(), needed.as_u64().into());
                }
            }
            _ => {}
        }
        let mut response = respond(&p);
        if let Error::LimitExceeded { retry_after_secs: Some(secs), .. } = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        if let Error::Unavailable(_) | Error::Contended(_) = &self {
            // The store or a service is down for a moment (a full disk that
            // heals, a restart): a client may try again soon.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS));
        }
        if let Error::Signature { .. } = &self {
            // RFC 9421 §5.1: what a signature of this gateway must cover.
            response.headers_mut().insert(
                header::HeaderName::from_static("accept-signature"),
                HeaderValue::from_static(ACCEPT_SIGNATURE),
            );
        } else if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
