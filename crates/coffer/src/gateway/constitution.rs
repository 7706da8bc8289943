//! The constitution's operations: policies, budgets, freezes, the kill
//! switch, approvals and the audit trail.

use super::*;

impl Gateway {
    /// The agent, if the caller may manage it: the operator, or one of the
    /// agent's ancestors. An agent never manages itself.
    pub async fn managed_agent(&self, caller: &Principal, agent_id: &str) -> Result<AgentRecord, Error> {
        let agent = self.agent(agent_id).await?;
        let Principal::Agent(key) = caller else { return Ok(agent) };
        let mut next = agent.parent_id.clone();
        for _ in 0..crate::payment::chain::CHAIN_DEPTH_MAX {
            let Some(id) = next else { break };
            if id == key.agent_id {
                return Ok(agent);
            }
            next = self.agent(&id).await?.parent_id;
        }
        Err(Error::Forbidden("only the operator or an ancestor agent manages this agent"))
    }

    /// The agent, if the caller may see its policy and budget: whoever
    /// manages it, and the agent itself (so that it can adapt).
    async fn visible_agent(&self, caller: &Principal, agent_id: &str) -> Result<AgentRecord, Error> {
        match caller {
            Principal::Agent(key) if key.agent_id == agent_id => self.agent(agent_id).await,
            _ => self.managed_agent(caller, agent_id).await,
        }
    }

    pub async fn policy(&self, caller: &Principal, agent_id: &str) -> Result<Option<Policy>, Error> {
        self.visible_agent(caller, agent_id).await?;
        let state = self.agent_state(agent_id).await?;
        Ok(state.policy.map(|p| (*p).clone()))
    }

    /// Sets an agent's policy from its JSON form (every field optional).
    pub async fn set_policy(&self, caller: &Principal, agent_id: &str, json: &str) -> Result<Policy, Error> {
        if let Principal::Agent(key) = caller
            && key.scope < Scope::Spend
        {
            return Err(Error::Forbidden("setting a sub-agent's policy needs a spend key"));
        }
        self.managed_agent(caller, agent_id).await?;
        let policy = Policy::from_json(json).map_err(Error::InvalidPolicy)?;
        let (id, set, actor, now_ms) = (agent_id.to_owned(), Some(policy.clone()), actor(caller), self.now_ms());
        self.store.write(move |tx| ops::agents::set_policy(tx, id.clone(), set.clone(), actor.clone(), now_ms)).await?;
        Ok(policy)
    }

    /// Spent and remaining per window, now.
    pub async fn budget(&self, caller: &Principal, agent_id: &str) -> Result<BudgetReport, Error> {
        self.visible_agent(caller, agent_id).await?;
        let state = self.agent_state(agent_id).await?;
        let policy = state.policy.map(|p| (*p).clone()).unwrap_or_default();
        // Limits in a currency show their msat value at the current rate.
        let fiat = self.fiat_rates().snapshot();
        Ok(coffer_core::policy::budget_report_at(&policy, &state.usage, &fiat, self.now_ms()))
    }

    pub async fn freeze(&self, agent_id: &str, reason: Option<&str>) -> Result<(), Error> {
        let reason = reason.unwrap_or("frozen by the operator");
        if reason.len() > PURPOSE_LEN_MAX_BYTES {
            return Err(invalid("reason", format!("at most {PURPOSE_LEN_MAX_BYTES} bytes")));
        }
        super::text::check("reason", reason, super::text::Lines::Multi)?;
        self.set_frozen(agent_id, Some(reason.to_owned())).await
    }

    async fn set_frozen(&self, agent_id: &str, reason: Option<String>) -> Result<(), Error> {
        let (id, now_ms) = (agent_id.to_owned(), self.now_ms());
        self.store
            .write(move |tx| ops::agents::set_frozen(tx, id.clone(), reason.clone(), OPERATOR.into(), now_ms))
            .await
    }

    async fn agent_state(&self, agent_id: &str) -> Result<AgentState, Error> {
        let id = agent_id.to_owned();
        self.store.read(move |tx| tx.agent_state(&id)).await?.ok_or(Error::NotFound("agent"))
    }

    pub async fn unfreeze(&self, agent_id: &str) -> Result<(), Error> {
        self.set_frozen(agent_id, None).await
    }

    /// The kill switch. Once this returns, no payment debits a wallet until
    /// it is released: the flag is written through the same serialised
    /// store as every debit, and every payment checks it.
    pub async fn set_halted(&self, halted: bool) -> Result<(), Error> {
        let now_ms = self.now_ms();
        self.store.write(move |tx| ops::agents::set_halted(tx, halted, OPERATOR.into(), now_ms)).await
    }

    pub async fn halted(&self) -> Result<bool, Error> {
        self.store.read(|tx| tx.halted()).await
    }

    pub async fn approvals(&self, status: Option<ApprovalStatus>, limit: u32) -> Result<Vec<ApprovalRecord>, Error> {
        self.store.read(move |tx| tx.approvals(status, limit)).await
    }

    /// Approves (pays) or denies (releases) a held payment. An approved
    /// payment to another node is recorded pending by the store and sent to
    /// the backend here, outside the store's transaction.
    pub async fn decide_approval(&self, id: &str, approve: bool) -> Result<ApprovalOutcome, Error> {
        let (id, now_ms, terms) = (id.to_owned(), self.now_ms(), self.spend_terms());
        let decided =
            self.store.write(move |tx| crate::payment::decide_approval(tx, &id, approve, OPERATOR, now_ms, &terms));
        let outcome = match decided.await? {
            ApprovalOutcome::Paid(approval, payment) if payment.status == coffer_client::PaymentStatus::Pending => {
                let payment = self.send_approved(&approval, payment).await?;
                ApprovalOutcome::Paid(approval, payment)
            }
            outcome => outcome,
        };
        if let ApprovalOutcome::Paid(_, payment) = &outcome {
            self.announce_request(&payment.payment_hash).await;
            self.close_backend_hold_paid_inside(payment).await;
        }
        match &outcome {
            ApprovalOutcome::Released(a) if approve && a.status == ApprovalStatus::Expired => {
                Err(Error::ApprovalNotPending("expired"))
            }
            _ => Ok(outcome),
        }
    }

    /// Expires held payments past their time; run by a background task.
    /// Writes only when one is due (see [`Tx::approvals_due`](crate::store::Tx::approvals_due)).
    pub async fn expire_approvals(&self) -> Result<u64, Error> {
        let now = self.now_ms();
        if !self.store.read(move |tx| tx.approvals_due(now)).await? {
            return Ok(0);
        }
        self.store.write(move |tx| ops::invoices::expire_approvals(tx, now)).await
    }

    pub async fn audit_log(&self, filter: AuditFilter, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, Error> {
        self.store.sealed().await?;
        self.store.read(move |tx| tx.audit_log(&filter, after_seq, limit)).await
    }

    pub async fn audit(&self) -> Result<AuditReport, Error> {
        audit(self.store.as_ref()).await
    }
}
