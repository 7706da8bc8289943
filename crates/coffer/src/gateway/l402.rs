//! The buyer's side of L402, for an agent: pay a paywall's challenge within
//! the agent's policy, and keep the paid token so that every process of the
//! agent reuses it until it expires.
//!
//! The gateway never fetches the URL itself: the agent's client does the
//! HTTP request and hands over the server's challenge. A gateway that made
//! requests to any URL an agent names would let agents reach whatever the
//! gateway's network can (server-side request forgery: internal services,
//! cloud metadata endpoints).

use super::{AgentKey, Gateway, PURPOSE_LEN_MAX_BYTES, invalid, parse_amount};
use crate::error::Error;
use crate::l402::challenge::{self, decode_token};
use crate::l402::macaroon::{Identifier, Macaroon};
use crate::l402::{TOKEN_TTL_DEFAULT_SECS, TOKEN_TTL_MAX_SECS, covers};
use crate::model::{L402Attempt, L402Pay, L402TokenRecord, PayInternal, Payer};
use crate::payment::bolt11::ParsedInvoice;
use crate::secrets;
use coffer_client::Scope;
use coffer_core::Msat;
use std::sync::Arc;

/// A paid token: kept now, or found kept.
#[derive(Debug)]
pub struct L402Outcome {
    pub token: L402TokenRecord,
    /// Whether this call paid for it.
    pub paid: bool,
}

/// The parts of a URL the token store keys on.
struct Target {
    origin: String,
    host: String,
    path: String,
}

fn target(url: &str) -> Result<Target, Error> {
    // The URL is the payment's purpose, so it has the purpose's bound.
    if url.len() > PURPOSE_LEN_MAX_BYTES {
        return Err(invalid("url", format!("at most {PURPOSE_LEN_MAX_BYTES} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("url", "an http or https URL".into()));
    }
    let host = parsed.host_str().ok_or_else(|| invalid("url", "the URL has no host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let origin = parsed.origin().ascii_serialization();
    Ok(Target { origin, host, path: parsed.path().to_owned() })
}

/// What the challenge's token says of itself, if it is a macaroon in the
/// L402 format: its payment hash, expiry and route. A token of another
/// format is opaque and kept for its path only.
struct TokenFacts {
    payment_hash: Option<[u8; 32]>,
    expires_at_ms: Option<i64>,
    route: Option<String>,
}

fn token_facts(token: &str) -> TokenFacts {
    let macaroon = decode_token(token).and_then(|bytes| Macaroon::decode(&bytes));
    let Some(macaroon) = macaroon else { return TokenFacts { payment_hash: None, expires_at_ms: None, route: None } };
    let mut facts = TokenFacts {
        payment_hash: Identifier::decode(&macaroon.identifier).map(|id| id.payment_hash),
        expires_at_ms: None,
        route: None,
    };
    for (key, value) in macaroon.caveat_pairs() {
        match key {
            "expires_at" => facts.expires_at_ms = value.parse::<i64>().ok().map(|s| s.saturating_mul(1000)),
            "route" => facts.route = Some(value.to_owned()),
            _ => {}
        }
    }
    facts
}

impl Gateway {
    /// Pays a paywall's challenge for `url`, or returns the agent's live
    /// token for it. `rejected_token` is a kept token the server refused
    /// (expired early, uses exhausted): it is forgotten first.
    /// Needs a `spend` key; a payment made (or refused) is counted on
    /// `/metrics` like any other, a token reused is not a payment.
    pub async fn l402_pay(
        &self,
        caller: &AgentKey,
        url: &str,
        challenge_value: &str,
        rejected_token: Option<&str>,
    ) -> Result<L402Outcome, Error> {
        caller.require(Scope::Spend)?;
        let outcome = self.l402_attempt(caller, url, challenge_value, rejected_token).await;
        match &outcome {
            Ok(L402Outcome { paid: false, .. }) => {}
            counted => {
                crate::metrics::METRICS.record_payment(counted.is_ok());
                let label = match counted {
                    Ok(_) => crate::metrics::PayOutcomeLabel::Succeeded,
                    Err(e) => super::metered::error_label(e),
                };
                crate::metrics::METRICS.record_payment_outcome(label, crate::metrics::Rail::L402);
            }
        }
        outcome
    }

    async fn l402_attempt(
        &self,
        caller: &AgentKey,
        url: &str,
        challenge_value: &str,
        rejected_token: Option<&str>,
    ) -> Result<L402Outcome, Error> {
        let target = target(url)?;
        let challenge = challenge::parse_challenge(challenge_value).map_err(|why| invalid("challenge", why))?;
        let parsed = ParsedInvoice::parse(&challenge.invoice, self.settings.network)
            .map_err(|e| Error::InvalidInvoice(e.to_string()))?;
        match parsed.amount {
            None | Some(Msat::ZERO) => return Err(Error::AmountRequired),
            Some(amount) => parse_amount("invoice amount", amount.as_u64())?,
        };
        let facts = token_facts(&challenge.token);
        // Paying for a token bound to another invoice would buy nothing.
        if facts.payment_hash.is_some_and(|hash| hash != parsed.payment_hash) {
            return Err(invalid("challenge", "the token is bound to another invoice than the challenge's".into()));
        }
        let now = self.now_ms();
        let ttl_ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let longest = now.saturating_add(ttl_ms(TOKEN_TTL_MAX_SECS));
        let expires_at_ms = facts.expires_at_ms.unwrap_or(now.saturating_add(ttl_ms(TOKEN_TTL_DEFAULT_SECS)));
        let scope = facts.route.filter(|route| covers(route, &target.path)).unwrap_or_else(|| target.path.clone());
        let pay = PayInternal {
            node_pubkey_hex: Arc::clone(&self.node_pubkey_hex),
            approval_ttl_ms: self.settings.approval_ttl_ms,
            holds_pending_max: self.settings.limits.holds_pending_per_agent,
            payment_id: secrets::new_id("pay_"),
            payer: Payer { agent_id: caller.agent_id.clone(), account: caller.account, key_id: caller.key_id.clone() },
            bolt11: parsed.bolt11.clone(),
            payment_hash: parsed.payment_hash,
            purpose: url.to_owned(),
            // The payer's task, inherited in the payment's transaction.
            attribution: crate::model::Attribution::default(),
            idempotency: None,
            domain: Some(target.host),
            escrow: None,
            escrows_open_max: self.settings.limits.escrows_open_per_agent,
            now_ms: now,
            terms: self.spend_terms(),
        };
        let l402 = L402Pay {
            pay,
            origin: target.origin,
            path: target.path,
            token: challenge.token,
            scope,
            expires_at_ms: expires_at_ms.min(longest),
            rejected_token: rejected_token.map(str::to_owned),
        };
        match self.store.write(move |tx| crate::payment::l402::pay(tx, l402.clone())).await? {
            L402Attempt::Reused(token) => Ok(L402Outcome { token, paid: false }),
            L402Attempt::Paid(token) => Ok(L402Outcome { token, paid: true }),
            L402Attempt::Denied(denial) => Err(Error::Denied(denial)),
            L402Attempt::NotOurs => {
                parsed.verify().map_err(|e| Error::InvalidInvoice(e.to_string()))?;
                Err(Error::NoLightningBackend)
            }
        }
    }

    /// The identity a paywall mounted on this gateway creates `agent_id`'s
    /// invoices with: receive scope only. It is no key anyone holds (its
    /// id says where it comes from), and it never authenticates a request.
    pub async fn paywall_receiver(&self, agent_id: &str) -> Result<AgentKey, Error> {
        let agent = self.agent(agent_id).await?;
        Ok(AgentKey {
            key_id: "paywall".into(),
            agent_id: agent.id,
            account: agent.account,
            scope: coffer_client::Scope::Receive,
            expires_at_ms: None,
        })
    }

    /// The agent's live token for `url`, if one is kept.
    pub async fn l402_token(&self, caller: &AgentKey, url: &str) -> Result<L402TokenRecord, Error> {
        let target = target(url)?;
        let (agent_id, now_ms) = (caller.agent_id.clone(), self.now_ms());
        let tokens = self.store.read(move |tx| tx.l402_tokens(&agent_id, &target.origin, now_ms)).await?;
        crate::payment::l402::covering(tokens, &target.path).ok_or(Error::NotFound("L402 token for this URL"))
    }
}

pub fn authorization(token: &L402TokenRecord) -> String {
    challenge::format_authorization(&token.token, &token.preimage)
}
