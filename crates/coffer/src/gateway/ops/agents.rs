//! Agents, their keys, money moved in by the operator, and the controls:
//! policy, freeze, halt, chat settings.

use crate::error::Error;
use crate::events::{self, Event, kind::Posted};
use crate::model::{AgentRecord, AuditEntry, ChatSettings, KeyRecord, NewAgent, NewKey, OPERATOR};
use crate::quota;
use crate::store::Tx;
use coffer_core::Balance;
use coffer_core::ledger::{self, Transfer};
use coffer_core::policy::Policy;

fn operator_entry(action: &'static str, actor: String, agent_id: Option<String>, now_ms: i64) -> AuditEntry {
    AuditEntry { at_ms: now_ms, action, actor, agent_id, ..AuditEntry::default() }
}

/// Creates an agent with its wallet and first key, within its parent's
/// quotas.
pub fn create_agent(tx: &mut dyn Tx, agent: NewAgent, now_ms: i64) -> Result<AgentRecord, Error> {
    quota::check_subagent(tx, &agent.quotas, &agent, now_ms)?;
    let account = tx.insert_wallet_account()?;
    tx.insert_agent(&agent, account, now_ms)?;
    tx.insert_key(&agent.key, now_ms)?;
    let event = Event::AgentCreated {
        agent_id: agent.id.clone(),
        name: agent.name.clone(),
        parent_id: agent.parent_id.clone(),
    };
    events::emit(tx, &event, now_ms)?;
    let actor = agent.parent_id.clone().unwrap_or_else(|| OPERATOR.into());
    tx.audit(&operator_entry("agent.created", actor, Some(agent.id.clone()), now_ms))?;
    tx.agent(&agent.id)?.ok_or(Error::NotFound("agent"))
}

pub fn create_key(tx: &mut dyn Tx, key: NewKey, now_ms: i64) -> Result<KeyRecord, Error> {
    let agent = tx.agent(&key.agent_id)?.ok_or(Error::NotFound("agent"))?;
    tx.insert_key(&key, now_ms)?;
    let event = Event::KeyCreated { agent_id: key.agent_id.clone(), key_id: key.id.clone(), scope: key.scope };
    events::emit(tx, &event, now_ms)?;
    Ok(KeyRecord {
        id: key.id,
        agent_id: key.agent_id,
        account: agent.account,
        scope: key.scope,
        digest: key.digest,
        expires_at_ms: key.expires_at_ms,
    })
}

/// Revokes a live key; `None` if there is none of that id.
pub fn revoke_key(tx: &mut dyn Tx, key_id: &str, now_ms: i64) -> Result<Option<KeyRecord>, Error> {
    let Some(key) = tx.live_key(key_id)? else { return Ok(None) };
    tx.revoke_key(key_id, now_ms)?;
    let event = Event::KeyRevoked { agent_id: key.agent_id.clone(), key_id: key.id.clone() };
    events::emit(tx, &event, now_ms)?;
    Ok(Some(key))
}

/// Posts one transfer between two accounts: answers its id and the
/// credited account's new balance.
pub fn post_transfer(tx: &mut dyn Tx, t: Transfer, kind: &str, now_ms: i64) -> Result<(i64, Balance), Error> {
    let mut debit = tx.balance(t.debit)?;
    let mut credit = tx.balance(t.credit)?;
    ledger::post(t, &mut debit, &mut credit)?;
    tx.save_balance(t.debit, &debit)?;
    tx.save_balance(t.credit, &credit)?;
    Ok((tx.insert_transfer(&t, kind, now_ms)?, credit))
}

/// The operator's transfer: a mint into the treasury (`funded` `None`) or a
/// funding of an agent (by the operator or a parent), with its
/// `transfer.mint` or `transfer.fund` event.
pub fn transfer(
    tx: &mut dyn Tx,
    transfer: Transfer,
    funded: Option<String>,
    actor: String,
    now_ms: i64,
) -> Result<(i64, Balance), Error> {
    let kind = if funded.is_some() { "fund" } else { "mint" };
    let posted = post_transfer(tx, transfer, kind, now_ms)?;
    let notice = Posted { transfer_id: posted.0, transfer };
    // A funding is the funded agent's event too; a mint the operator's.
    let (event, action) = match &funded {
        Some(agent_id) => (Event::TransferFund { agent_id: agent_id.clone(), posted: notice }, "agent.funded"),
        None => (Event::TransferMint(notice), "treasury.minted"),
    };
    events::emit(tx, &event, now_ms)?;
    let agent_id = funded;
    tx.audit(&AuditEntry {
        amount_msat: Some(transfer.amount.as_u64()),
        detail: Some(format!("{} -> {}", transfer.debit, transfer.credit)),
        ..operator_entry(action, actor, agent_id, now_ms)
    })?;
    Ok(posted)
}

pub fn set_policy(
    tx: &mut dyn Tx,
    agent_id: String,
    policy: Option<Policy>,
    actor: String,
    now_ms: i64,
) -> Result<(), Error> {
    let text = policy
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::internal("serialising a policy", e))?;
    tx.set_policy(&agent_id, text.as_deref())?;
    events::emit(tx, &Event::PolicyUpdated { agent_id: agent_id.clone(), policy }, now_ms)?;
    tx.audit(&AuditEntry { detail: text, ..operator_entry("policy.updated", actor, Some(agent_id), now_ms) })
}

/// Freezes an agent (with the reason) or, `None`, unfreezes it.
pub fn set_frozen(
    tx: &mut dyn Tx,
    agent_id: String,
    reason: Option<String>,
    actor: String,
    now_ms: i64,
) -> Result<(), Error> {
    tx.set_frozen(&agent_id, reason.as_deref(), now_ms)?;
    let (event, action) = match &reason {
        Some(reason) => (Event::AgentFrozen { agent_id: agent_id.clone(), reason: reason.clone() }, "agent.frozen"),
        None => (Event::AgentUnfrozen { agent_id: agent_id.clone() }, "agent.unfrozen"),
    };
    events::emit(tx, &event, now_ms)?;
    tx.audit(&AuditEntry { detail: reason, ..operator_entry(action, actor, Some(agent_id), now_ms) })
}

/// Halts every payment of the gateway, or resumes them.
pub fn set_halted(tx: &mut dyn Tx, halted: bool, actor: String, now_ms: i64) -> Result<(), Error> {
    tx.set_halted(halted)?;
    events::emit(tx, &Event::BreakerHalted { halted }, now_ms)?;
    let action = if halted { "gateway.halted" } else { "gateway.resumed" };
    tx.audit(&operator_entry(action, actor, None, now_ms))
}

pub fn set_chat_settings(tx: &mut dyn Tx, agent_id: String, settings: ChatSettings, now_ms: i64) -> Result<(), Error> {
    tx.set_chat_settings(&agent_id, &settings)?;
    events::emit(tx, &Event::ChatSettingsUpdated { agent_id, settings }, now_ms)
}
