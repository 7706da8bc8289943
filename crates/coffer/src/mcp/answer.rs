//! What a tool answers: a short sentence for the model, then the JSON. Every
//! failure of the gateway (a policy denial, a low balance, a bad argument,
//! the gateway unreachable) is a tool result with `is_error` set and a
//! sentence that says what it means and what to do next, never a protocol
//! error, so the model reads it.

use coffer_client::{Error, Problem};
use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

/// A successful answer: `summary`, then `value` as JSON.
pub fn ok<T: Serialize>(summary: impl Into<String>, value: &T) -> CallToolResult {
    let json = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(unprintable answer: {e})"));
    CallToolResult::success(vec![ContentBlock::text(summary.into()), ContentBlock::text(json)])
}

/// A failed answer the model reads.
pub fn fail(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

/// A failed call to the gateway, as a sentence for the model.
pub fn from_error(e: &Error) -> CallToolResult {
    fail(explain(e))
}

pub fn explain(e: &Error) -> String {
    match e {
        Error::Problem(p) => explain_problem(p),
        Error::Transport(e) => format!(
            "error: gateway-unreachable — {e}. The request may not have reached the gateway. \
             Try again in a moment; a payment retried with pay_invoice is never made twice. \
             If it persists, a person must check that the gateway runs and COFFER_URL is right."
        ),
        Error::Decode { status, message } => format!(
            "error: unexpected-answer — the gateway answered HTTP {status} with something this tool \
             cannot read ({message}). Try again later; if it persists, tell a person."
        ),
        Error::Signing(why) => format!(
            "error: signing-failed — the request could not be signed ({why}); nothing was sent. \
             A person must check the signing key this server was started with."
        ),
    }
}

/// Codes that refuse a payment: the answer starts with `denied:`.
const DENIALS: &[&str] = &[
    "budget-exceeded",
    "amount-too-large",
    "rate-limited",
    "payee-not-allowed",
    "policy-expired",
    "insufficient-balance",
    "agent-frozen",
    "gateway-halted",
    "too-many-denials",
    "spend-burst",
    "payee-concentration",
    "fiat-rate-unavailable",
];

fn explain_problem(p: &Problem) -> String {
    let code = p.code.as_str();
    let kind = if DENIALS.contains(&code) { "denied" } else { "error" };
    let mut text = format!("{kind}: {code} — {}", p.detail.trim_end_matches('.'));
    let facts: Vec<String> = ["remaining_msat", "available_msat", "needed_msat", "field"]
        .iter()
        .filter_map(|name| p.extensions.get(*name).map(|v| format!("{name}: {}", plain(v))))
        .collect();
    if !facts.is_empty() {
        text.push_str(&format!(" ({})", facts.join(", ")));
    }
    text.push_str(". ");
    text.push_str(hint(code));
    text
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What the model should do next, per problem code.
pub fn hint(code: &str) -> &'static str {
    match code {
        "budget-exceeded" => {
            "The operator sets the budget; wait for the window or ask for a raise. \
             get_budget shows what is spent and what remains."
        }
        "amount-too-large" => {
            "The payment is above the largest single payment the operator allows. Retrying will not help: \
             ask the payee for a smaller invoice, or ask the operator to raise the limit."
        }
        "rate-limited" => "Too many payments in a short time. Wait a minute, then try again.",
        "payee-not-allowed" => {
            "The operator allows payments only to approved payees. Ask the operator to allow this payee."
        }
        "policy-expired" => "Your spending policy has expired. Ask the operator to renew it.",
        "insufficient-balance" => {
            "Your wallet does not hold enough for this payment and its fee. Check get_balance; \
             receive funds with create_invoice, or ask the operator to fund you."
        }
        "agent-frozen" => "The operator froze payments. Nothing can be paid until the operator unfreezes; ask them.",
        "gateway-halted" => "The operator stopped all payments (kill switch). Wait, or ask the operator.",
        "fiat-rate-unavailable" => {
            "Your budget is set in a currency and the gateway has no fresh bitcoin price to convert it. \
             Wait a few minutes and try again; if it persists, ask the operator to check the price source."
        }
        "too-many-denials" | "spend-burst" | "payee-concentration" => {
            "The circuit breaker stopped your payments after unusual activity. Ask the operator to review and reset it."
        }
        "invoice-expired" => "The invoice has expired. Ask the payee for a new one.",
        "invoice-already-paid" => {
            "The invoice is already paid; do not pay it again. list_payments shows your payments."
        }
        "self-payment" => "This is your own invoice; an agent cannot pay itself.",
        "amount-required" => "The invoice has no amount. Ask the payee for an invoice with an amount.",
        "no-lightning-backend" => {
            "This gateway pays only invoices of agents on the same gateway. Ask the payee for an invoice \
             from this gateway, or ask the operator to connect a Lightning node."
        }
        "idempotency-conflict" => {
            "This invoice was already submitted with a different purpose; it was not paid twice. \
             Check list_payments before doing anything else."
        }
        "unauthorized" => {
            "The agent key is missing, wrong, revoked or expired. A person must fix COFFER_AGENT_KEY; retrying will not help."
        }
        "forbidden" => {
            "The agent key may not do this (scopes: read < receive < spend), or you are not a member of the room. \
             Ask the operator."
        }
        "not-found" => "Nothing has that id. Check it with list_rooms, read_room or list_payments.",
        "invalid-field" | "invalid-amount" | "invalid-invoice" | "malformed-request" => {
            "An argument is not valid. Fix it and call again."
        }
        "unavailable" | "internal" => "A problem on the gateway. Try again later; if it persists, tell a person.",
        _ => "Read the detail; if unsure, tell a person.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(code: &str, detail: &str, ext: serde_json::Value) -> Error {
        Error::Problem(Box::new(Problem {
            problem_type: format!("/problems/{code}"),
            title: "t".into(),
            status: 403,
            detail: detail.into(),
            code: code.into(),
            extensions: ext.as_object().cloned().unwrap_or_default(),
        }))
    }

    #[test]
    fn a_budget_denial_reads_as_one_sentence_with_the_remaining_amount() {
        let e = problem("budget-exceeded", "daily budget exceeded", serde_json::json!({"remaining_msat": 42}));
        assert_eq!(
            explain(&e),
            "denied: budget-exceeded — daily budget exceeded (remaining_msat: 42). The operator sets the budget; \
             wait for the window or ask for a raise. get_budget shows what is spent and what remains."
        );
    }

    #[test]
    fn other_problems_are_errors_with_a_hint() {
        let e = problem("not-found", "no such room", serde_json::json!({}));
        assert!(explain(&e).starts_with("error: not-found — no such room. Nothing has that id."));
        let result = from_error(&e);
        assert_eq!(result.is_error, Some(true));
    }
}
