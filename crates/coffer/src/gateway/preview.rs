//! `POST /v1/payments/preview`: the decision a payment would get now, for
//! an invoice or for an amount to a payee, without moving anything (see
//! `payment::preview`). The target is read as the payment reads it: an
//! invoice of this gateway pays its agent at no fee; another node's is paid
//! through the backend with the default fee limit reserved.

use super::*;
use crate::model::StoredInvoiceStatus;
use crate::payment::decision::Verdict;
use crate::payment::preview::Preview;
use coffer_client::{PaymentPreview, PreviewDecision, PreviewLifetime, PreviewRequest, PreviewWindow};
use coffer_core::policy::{Attempt, Payee, PayeeEntry};

impl Gateway {
    /// Previews a payment of the caller's agent, or (for the operator or
    /// an ancestor) of `agent_id`.
    pub async fn preview_payment(&self, caller: &Principal, req: &PreviewRequest) -> Result<PaymentPreview, Error> {
        let agent_id = self.previewed_agent(caller, req.agent_id.as_deref()).await?;
        let attempt = self.preview_attempt(&agent_id, req).await?;
        let now_ms = self.now_ms();
        let (id, asked, fiat) = (agent_id.clone(), attempt.clone(), self.fiat_rates().snapshot());
        let preview =
            self.store.read(move |tx| crate::payment::preview::preview(tx, &id, &asked, &fiat, now_ms)).await?;
        Ok(view(preview, &attempt, now_ms))
    }

    /// The payer: the caller's own agent, or one it may see the budget of.
    async fn previewed_agent(&self, caller: &Principal, agent_id: Option<&str>) -> Result<String, Error> {
        match (caller, agent_id) {
            (Principal::Operator, None) => {
                Err(invalid("agent_id", "the operator names the agent to preview for".into()))
            }
            (Principal::Agent(key), None) => Ok(key.agent_id.clone()),
            (Principal::Agent(key), Some(id)) if id == key.agent_id => Ok(key.agent_id.clone()),
            (_, Some(id)) => Ok(self.managed_agent(caller, id).await?.id),
        }
    }

    /// The attempt a payment of `req` would make.
    async fn preview_attempt(&self, payer: &str, req: &PreviewRequest) -> Result<Attempt, Error> {
        match (&req.bolt11, req.amount_msat, &req.payee) {
            (Some(bolt11), None, None) => self.invoice_attempt(payer, bolt11).await,
            (None, Some(amount), Some(payee)) => self.payee_attempt(payer, amount, payee),
            (Some(_), _, _) => Err(invalid("bolt11", "either bolt11, or amount_msat with payee".into())),
            (None, None, _) => Err(invalid("amount_msat", "required with payee (or send bolt11)".into())),
            (None, Some(_), None) => Err(invalid("payee", "required with amount_msat (or send bolt11)".into())),
        }
    }

    async fn invoice_attempt(&self, payer: &str, bolt11: &str) -> Result<Attempt, Error> {
        if crate::lightning::lnurl::is_address(bolt11) {
            return Err(invalid("bolt11", "a Lightning address: preview the invoice it gives instead".into()));
        }
        let parsed =
            ParsedInvoice::parse(bolt11, self.settings.network).map_err(|e| Error::InvalidInvoice(e.to_string()))?;
        let amount = match parsed.amount {
            None | Some(Msat::ZERO) => return Err(Error::AmountRequired),
            Some(amount) => parse_amount("invoice amount", amount.as_u64())?,
        };
        let hash = parsed.payment_hash;
        let (payer_id, now_ms) = (payer.to_owned(), self.now_ms());
        let ours = self
            .store
            .read(move |tx| {
                let held = tx.held(&hash, Some(payer_id.as_str()))?.is_some();
                Ok(tx.invoice(&hash)?.map(|(invoice, _)| (invoice, held)))
            })
            .await?;
        if let Some((invoice, held)) = ours {
            check_ours(&invoice, &parsed.bolt11, payer, held, now_ms)?;
            return Ok(self.inside_attempt(invoice.agent_id, amount));
        }
        if self.funding.is_none() {
            parsed.verify().map_err(|e| Error::InvalidInvoice(e.to_string()))?;
            return Err(Error::NoLightningBackend);
        }
        let outside = parsed.outside().map_err(|e| Error::InvalidInvoice(e.to_string()))?;
        if u64::try_from(now_ms / 1000).unwrap_or(u64::MAX) >= outside.expires_at_secs {
            return Err(Error::InvoiceExpired);
        }
        Ok(outside_attempt(outside.payee_hex, amount))
    }

    fn payee_attempt(&self, payer: &str, amount_msat: u64, payee: &str) -> Result<Attempt, Error> {
        let amount = parse_amount("amount_msat", amount_msat)?;
        match PayeeEntry::parse(payee.trim()).map_err(|e| invalid("payee", e))? {
            PayeeEntry::Agent(id) if id == payer => Err(Error::SelfPayment),
            PayeeEntry::Agent(id) => Ok(self.inside_attempt(id, amount)),
            PayeeEntry::Node(key) if *key == *self.node_pubkey_hex => {
                Err(invalid("payee", "this gateway's own node: name the agent (agent:ID)".into()))
            }
            PayeeEntry::Node(key) => Ok(outside_attempt(key, amount)),
            PayeeEntry::Domain(_) => Err(invalid("payee", "agent:ID or node:PUBKEY_HEX".into())),
        }
    }

    /// A payment to an invoice of this gateway, as `payment::internal`
    /// makes it.
    fn inside_attempt(&self, payee_agent_id: String, amount: Msat) -> Attempt {
        let payee = Payee {
            agent_id: Some(payee_agent_id),
            node_pubkey_hex: Some(self.node_pubkey_hex.to_string()),
            domain: None,
        };
        Attempt { amount, fee_limit: Msat::ZERO, payee }
    }
}

/// A payment to another node, as `payment::outside` makes it.
fn outside_attempt(node_hex: String, amount: Msat) -> Attempt {
    let payee = Payee { agent_id: None, node_pubkey_hex: Some(node_hex), domain: None };
    Attempt { amount, fee_limit: crate::lightning::default_fee_limit(amount), payee }
}

/// What a payment to an invoice of this gateway refuses before deciding:
/// the same errors.
fn check_ours(invoice: &InvoiceRecord, bolt11: &str, payer: &str, held: bool, now_ms: i64) -> Result<(), Error> {
    if invoice.bolt11 != bolt11 {
        return Err(Error::InvalidInvoice(
            "the invoice does not match the one this gateway issued for its payment hash".into(),
        ));
    }
    if invoice.agent_id == payer {
        return Err(Error::SelfPayment);
    }
    match invoice.status {
        StoredInvoiceStatus::Paid | StoredInvoiceStatus::Accepted => return Err(Error::InvoiceAlreadyPaid),
        StoredInvoiceStatus::Cancelled => return Err(Error::InvalidState("the invoice was cancelled".into())),
        StoredInvoiceStatus::Expired => return Err(Error::InvoiceExpired),
        StoredInvoiceStatus::Open if now_ms >= invoice.expires_at_ms => return Err(Error::InvoiceExpired),
        StoredInvoiceStatus::Open => {}
    }
    if held {
        return Err(Error::PaymentHeld);
    }
    Ok(())
}

fn view(preview: Preview, attempt: &Attempt, now_ms: i64) -> PaymentPreview {
    let (decision, code, message) = match &preview.verdict {
        Verdict::Allow => (PreviewDecision::Allow, None, None),
        Verdict::Hold => (
            PreviewDecision::Hold,
            Some("approval-required".to_owned()),
            Some("a person must approve this payment".to_owned()),
        ),
        Verdict::Deny(denial) => (PreviewDecision::Deny, Some(denial.code.to_owned()), Some(denial.message.clone())),
    };
    let (mut remaining, mut lifetime) = (Vec::new(), Vec::new());
    for (level, state) in preview.chain.iter().enumerate() {
        let Some(policy) = &state.policy else { continue };
        let report = budget_report(policy, &state.usage, now_ms);
        let level = u32::try_from(level).unwrap_or(u32::MAX);
        remaining.extend(report.windows.iter().map(|w| PreviewWindow {
            agent_id: state.agent_id.clone(),
            level,
            window: w.window.to_string(),
            kind: w.kind.as_str().to_owned(),
            limit_msat: w.limit_msat.as_u64(),
            spent_msat: w.spent_msat.as_u64(),
            remaining_msat: w.remaining_msat.as_u64(),
            resets_at_ms: w.resets_at_ms,
        }));
        if let (Some(limit), Some(left)) = (report.lifetime_limit_msat, report.lifetime_remaining_msat) {
            lifetime.push(PreviewLifetime {
                agent_id: state.agent_id.clone(),
                level,
                limit_msat: limit.as_u64(),
                spent_msat: report.lifetime_spent_msat.as_u64(),
                remaining_msat: left.as_u64(),
            });
        }
    }
    let decider = preview.level.and_then(|l| preview.chain.get(l).map(|s| (l, s.agent_id.clone())));
    PaymentPreview {
        decision,
        code,
        message,
        level: decider.as_ref().map(|(l, _)| u32::try_from(*l).unwrap_or(u32::MAX)),
        agent_id: decider.map(|(_, id)| id),
        payer_agent_id: preview.chain.first().map(|s| s.agent_id.clone()).unwrap_or_default(),
        amount_msat: attempt.amount.as_u64(),
        fee_limit_msat: attempt.fee_limit.as_u64(),
        balance_msat: preview.available.as_u64(),
        remaining,
        lifetime,
    }
}
