//! Agents, their keys, money moved in by the operator, and the controls:
//! policy, freeze, halt, chat settings.

use crate::error::Error;
use crate::model::{AgentRecord, AuditEntry, ChatSettings, KeyRecord, NewAgent, NewKey, OPERATOR};
use crate::store::{Tx, quota};
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
    let data = serde_json::json!({"agent_id": agent.id, "name": agent.name, "parent_id": agent.parent_id});
    tx.emit("agent.created", Some(&agent.id), &data, now_ms)?;
    let actor = agent.parent_id.clone().unwrap_or_else(|| OPERATOR.into());
    tx.audit(&operator_entry("agent.created", actor, Some(agent.id.clone()), now_ms))?;
    tx.agent(&agent.id)?.ok_or(Error::NotFound("agent"))
}

pub fn create_key(tx: &mut dyn Tx, key: NewKey, now_ms: i64) -> Result<KeyRecord, Error> {
    let agent = tx.agent(&key.agent_id)?.ok_or(Error::NotFound("agent"))?;
    tx.insert_key(&key, now_ms)?;
    let data = serde_json::json!({"agent_id": key.agent_id, "key_id": key.id, "scope": key.scope.as_str()});
    tx.emit("key.created", Some(&key.agent_id), &data, now_ms)?;
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
    let data = serde_json::json!({"agent_id": key.agent_id, "key_id": key.id});
    tx.emit("key.revoked", Some(&key.agent_id), &data, now_ms)?;
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

/// The operator's transfer: a mint into the treasury (`kind` `mint`) or a
/// funding of an agent (`fund`), with its `transfer.<kind>` event.
pub fn transfer(
    tx: &mut dyn Tx,
    transfer: Transfer,
    kind: &'static str,
    agent_id: Option<String>,
    actor: String,
    now_ms: i64,
) -> Result<(i64, Balance), Error> {
    let posted = post_transfer(tx, transfer, kind, now_ms)?;
    let data = serde_json::json!({
        "transfer_id": posted.0, "debit": transfer.debit.to_string(), "credit": transfer.credit.to_string(),
        "amount_msat": transfer.amount.as_u64(), "kind": kind,
    });
    // A funding is the funded agent's event too; a mint the operator's.
    tx.emit(&format!("transfer.{kind}"), agent_id.as_deref(), &data, now_ms)?;
    let action = if kind == "mint" { "treasury.minted" } else { "agent.funded" };
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
    let data = serde_json::json!({"agent_id": agent_id, "policy": policy});
    tx.emit("policy.updated", Some(&agent_id), &data, now_ms)?;
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
    let kind = if reason.is_some() { "agent.frozen" } else { "agent.unfrozen" };
    tx.emit(kind, Some(&agent_id), &serde_json::json!({"agent_id": agent_id, "reason": reason}), now_ms)?;
    tx.audit(&AuditEntry { detail: reason, ..operator_entry(kind, actor, Some(agent_id), now_ms) })
}

/// Halts every payment of the gateway, or resumes them.
pub fn set_halted(tx: &mut dyn Tx, halted: bool, actor: String, now_ms: i64) -> Result<(), Error> {
    tx.set_halted(halted)?;
    tx.emit("breaker.halted", None, &serde_json::json!({"halted": halted}), now_ms)?;
    let action = if halted { "gateway.halted" } else { "gateway.resumed" };
    tx.audit(&operator_entry(action, actor, None, now_ms))
}

pub fn set_chat_settings(tx: &mut dyn Tx, agent_id: String, settings: ChatSettings, now_ms: i64) -> Result<(), Error> {
    tx.set_chat_settings(&agent_id, &settings)?;
    let data = serde_json::json!({"agent_id": agent_id, "settings": settings});
    tx.emit("chat.settings_updated", Some(&agent_id), &data, now_ms)
}
