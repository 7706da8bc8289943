//! The gateway's one error type. Each variant maps to one stable problem
//! type (see `http::problem`); nothing has changed when one is returned.

use coffer_core::{AmountError, LedgerError, Msat};
use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A field failed validation: `field` names it.
    InvalidField {
        field: &'static str,
        detail: String,
    },
    InvalidAmount {
        field: &'static str,
        detail: String,
    },
    InvalidInvoice(String),
    /// The body is not the JSON the route takes: syntax, types, unknown or
    /// missing fields.
    MalformedRequest(String),
    BodyTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    Unauthorized,
    Forbidden(&'static str),
    NotFound(&'static str),
    InsufficientBalance {
        available: Msat,
        needed: Msat,
    },
    InvoiceExpired,
    InvoiceAlreadyPaid,
    SelfPayment,
    AmountRequired,
    NoLightningBackend,
    /// A payment of this invoice is already in flight through the backend.
    PaymentInFlight,
    /// A payment of this outside invoice waits for a person's approval.
    PaymentHeld,
    /// The Lightning backend refused or failed a request that moves no
    /// money (creating an invoice); nothing was recorded.
    Backend(String),
    IdempotencyConflict,
    MintDisabled,
    /// A payment refused by the constitution (or for want of funds).
    Denied(crate::model::Denial),
    ApprovalNotPending(&'static str),
    /// An incoming payment was already accepted or rejected.
    AlreadyDecided(&'static str),
    InvalidPolicy(coffer_core::policy::PolicyError),
    /// A bound on what a caller may create or hold open was reached
    /// (`crate::limits`): try again after `retry_after_secs`, or (`None`)
    /// never, for a bound that waiting cannot lift (`tree_depth`).
    LimitExceeded {
        limit: crate::limits::Limit,
        retry_after_secs: Option<u64>,
        detail: String,
    },
    /// What was asked does not fit the state of the thing asked of: a hold
    /// settled already, a session closed, a refund of a held payment.
    InvalidState(String),
    /// A charge past what remains of a session's maximum.
    SessionExhausted {
        remaining: Msat,
        needed: Msat,
    },
    /// A refund past what the payment left unrefunded.
    RefundExceedsPayment {
        remaining: Msat,
        needed: Msat,
    },
    /// A write request whose RFC 9421 signature is missing (`missing`) or
    /// does not hold: `component` names the part that failed.
    Signature {
        component: &'static str,
        detail: String,
        missing: bool,
    },
    /// The store is shutting down or overloaded: try again.
    Unavailable(&'static str),
    /// Another transaction holds a row this one needs (a lock wait timed
    /// out, a deadlock, a unique key written first): the store rolls the
    /// operation back and runs it again; a caller sees it only once the
    /// store gave up ([`Error::Unavailable`] then).
    Contended(&'static str),
    /// A fault of ours: storage or an invariant. Logged, never detailed to
    /// the caller.
    Internal(String),
}

impl Error {
    /// A limit reached, counted on `/metrics` as it is made.
    pub fn limit(limit: crate::limits::Limit, retry_after_secs: u64, detail: impl Into<String>) -> Error {
        crate::metrics::METRICS.record_limit_hit(limit);
        Error::LimitExceeded { limit, retry_after_secs: Some(retry_after_secs.max(1)), detail: detail.into() }
    }

    /// A limit reached that no retry lifts: answered `422`, not `429`, and
    /// counted on `/metrics` like the others.
    pub fn limit_final(limit: crate::limits::Limit, detail: impl Into<String>) -> Error {
        crate::metrics::METRICS.record_limit_hit(limit);
        Error::LimitExceeded { limit, retry_after_secs: None, detail: detail.into() }
    }

    pub fn internal(context: &str, e: impl fmt::Display) -> Error {
        Error::Internal(format!("{context}: {e}"))
    }

    /// The whole message, an internal fault's cause included. For the
    /// operator's own terminal (`coffer serve` failing to start, `coffer
    /// audit`), who needs the cause to act on it; a caller over HTTP gets
    /// `Display`, which keeps the cause in the log.
    pub fn operator_message(&self) -> String {
        match self {
            Error::Internal(cause) => format!("internal error: {cause}"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidField { field, detail } => write!(f, "{field}: {detail}"),
            Error::InvalidAmount { field, detail } => write!(f, "{field}: {detail}"),
            Error::InvalidInvoice(why) => f.write_str(why),
            Error::MalformedRequest(why) => write!(f, "malformed request: {why}"),
            Error::BodyTooLarge => {
                write!(f, "the request body is larger than {} bytes", crate::limits::BODY_LEN_MAX_BYTES)
            }
            Error::UnsupportedMediaType => f.write_str("send the body as application/json"),
            Error::MethodNotAllowed => f.write_str("this route does not take that method"),
            Error::Unauthorized => f.write_str("missing, unknown or revoked key"),
            Error::Forbidden(why) => f.write_str(why),
            Error::NotFound(what) => write!(f, "no such {what}"),
            Error::InsufficientBalance { available, needed } => {
                write!(
                    f,
                    "insufficient balance: {} msat available, {} msat needed",
                    available.as_u64(),
                    needed.as_u64()
                )
            }
            Error::InvoiceExpired => f.write_str("the invoice has expired"),
            Error::InvoiceAlreadyPaid => f.write_str("the invoice has already been paid"),
            Error::SelfPayment => f.write_str("an agent cannot pay its own invoice"),
            Error::AmountRequired => f.write_str("the invoice has no amount; zero-amount invoices are not supported"),
            Error::NoLightningBackend => f.write_str(
                "the invoice belongs to another Lightning node and no Lightning backend is configured to pay it",
            ),
            Error::PaymentInFlight => f.write_str(
                "a payment of this invoice is already in flight; it finishes when the Lightning backend says how it ended",
            ),
            Error::PaymentHeld => f.write_str(
                "a payment of this invoice is held for a person's approval; it is paid or released when they decide",
            ),
            Error::Backend(why) => write!(f, "the Lightning backend: {why}"),
            Error::IdempotencyConflict => {
                f.write_str("this Idempotency-Key was already used with a different request body")
            }
            Error::MintDisabled => f.write_str("minting test funds is only possible in dev mode"),
            Error::Denied(denial) => f.write_str(&denial.message),
            Error::ApprovalNotPending(status) => write!(f, "the approval was already decided: {status}"),
            Error::AlreadyDecided(status) => write!(f, "already decided: {status}"),
            Error::InvalidPolicy(e) => write!(f, "{}: {}", e.field, e.message),
            Error::LimitExceeded { limit, detail, .. } => write!(f, "limit {} reached: {detail}", limit.name()),
            Error::InvalidState(why) => f.write_str(why),
            Error::SessionExhausted { remaining, needed } => write!(
                f,
                "the session has {} msat left to charge; {} msat asked",
                remaining.as_u64(),
                needed.as_u64()
            ),
            Error::RefundExceedsPayment { remaining, needed } => write!(
                f,
                "the payment has {} msat left to refund; {} msat asked",
                remaining.as_u64(),
                needed.as_u64()
            ),
            Error::Signature { component, detail, .. } => write!(f, "{component}: {detail}"),
            Error::Unavailable(why) | Error::Contended(why) => f.write_str(why),
            Error::Internal(_) => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for Error {}

impl From<LedgerError> for Error {
    fn from(e: LedgerError) -> Error {
        match e {
            LedgerError::InsufficientFunds { available, needed } => Error::InsufficientBalance { available, needed },
            LedgerError::Amount(AmountError::AboveMaxMoney) => Error::InvalidAmount {
                field: "amount_msat",
                detail: "the credited balance would exceed 21 million bitcoin".into(),
            },
            other => Error::Internal(other.to_string()),
        }
    }
}
