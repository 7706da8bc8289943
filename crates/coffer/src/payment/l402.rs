//! Paying L402 challenges: a payment to an invoice of this gateway
//! (`internal`) that buys a token, kept for the access it covers and
//! reused instead of paying again.

use super::internal;
use crate::error::Error;
use crate::model::{L402Attempt, L402Pay, L402TokenRecord, PayAttempt};
use crate::store::Tx;

/// Pays for an L402 token, in the caller's transaction: a refused token is
/// forgotten first; a live token for the same access is reused instead of
/// paying again (two processes of one agent that meet the same paywall at
/// once pay once); else the payment is made and its token kept, together.
pub fn pay(tx: &mut dyn Tx, l402: L402Pay) -> Result<L402Attempt, Error> {
    let agent_id = l402.pay.payer.agent_id.clone();
    if let Some(rejected) = &l402.rejected_token {
        tx.forget_l402_token(&agent_id, &l402.origin, rejected)?;
    }
    let kept = tx.l402_tokens(&agent_id, &l402.origin, l402.pay.now_ms)?;
    if let Some(token) = covering(kept, &l402.path) {
        return Ok(L402Attempt::Reused(token));
    }
    let now_ms = l402.pay.now_ms;
    let payment = match internal::pay(tx, &l402.pay)? {
        PayAttempt::Paid(payment) => payment,
        PayAttempt::Denied(denial) => return Ok(L402Attempt::Denied(denial)),
        PayAttempt::NotOurs => return Ok(L402Attempt::NotOurs),
        PayAttempt::Held(_) => return Err(Error::Internal("an L402 payment was held".into())),
    };
    let preimage = payment.preimage.ok_or_else(|| Error::Internal("a settled payment without preimage".into()))?;
    let token = L402TokenRecord {
        agent_id,
        origin: l402.origin,
        scope: l402.scope,
        token: l402.token,
        preimage,
        amount: payment.amount,
        payment_id: payment.id,
        created_at_ms: now_ms,
        expires_at_ms: l402.expires_at_ms,
    };
    tx.save_l402_token(&token, now_ms)?;
    Ok(L402Attempt::Paid(token))
}

/// The kept token whose scope covers `path` (on whole segments), the
/// narrowest first.
pub fn covering(tokens: Vec<L402TokenRecord>, path: &str) -> Option<L402TokenRecord> {
    tokens.into_iter().filter(|t| crate::l402::covers(&t.scope, path)).max_by_key(|t| t.scope.len())
}
