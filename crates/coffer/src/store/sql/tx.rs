//! The store's row operations ([`Tx`]) over any backend's [`Sql`]: every
//! statement both stores run, once.

use super::rows::{self, *};
use super::{Expect, PolicyCache, Sql, SqlRow, args};
use crate::error::Error;
use crate::model::PAGE_ROWS_MAX;
use crate::model::*;
use crate::secrets::SecretDigest;
use crate::store::{Tx, quota, retention};
use coffer_core::audit_chain;
use coffer_core::ledger::{Transfer, TransferSums};
use coffer_core::policy::Policy;
use coffer_core::{AccountId, Balance};
use std::sync::Arc;

/// One transaction of a store: the writer's (inside its batch) or a
/// reader's.
pub struct SqlTx<'a> {
    sql: &'a mut dyn Sql,
    /// The writer's policy cache; readers parse every time.
    policies: Option<&'a mut PolicyCache>,
    /// Appended to a read of a row the transaction may go on to change:
    /// ` FOR UPDATE` in a write transaction among concurrent writers (see
    /// [`Sql::concurrent_writers`]), so a check and the write it allows
    /// see the same row; empty otherwise.
    for_update: &'static str,
}

impl<'a> SqlTx<'a> {
    /// A transaction on `sql`: a write transaction when given the writer's
    /// policy cache, a read-only one without.
    pub fn new(sql: &'a mut dyn Sql, policies: Option<&'a mut PolicyCache>) -> SqlTx<'a> {
        let for_update = if policies.is_some() && sql.concurrent_writers() { " FOR UPDATE" } else { "" };
        SqlTx { sql, policies, for_update }
    }

    fn execute(&mut self, sql: &str, args: &[super::Arg<'_>]) -> Result<u64, Error> {
        self.sql.execute(sql, args)
    }

    /// A write whose answer the operation does not wait for (see
    /// [`super::Sql::append`]): on PostgreSQL, the writes of an operation
    /// go in one round trip.
    fn append(&mut self, sql: &str, args: &[super::Arg<'_>], expect: Expect) -> Result<(), Error> {
        self.sql.append(sql, args, expect)
    }

    /// Every row of a query, each read by `map`.
    fn rows<T>(
        &mut self,
        sql: &str,
        args: &[super::Arg<'_>],
        map: impl Fn(&dyn SqlRow) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let mut found = Vec::new();
        self.sql.query(sql, args, &mut |row| {
            found.push(map(row)?);
            Ok(())
        })?;
        Ok(found)
    }

    /// The first row of a query, if any.
    fn row<T>(
        &mut self,
        sql: &str,
        args: &[super::Arg<'_>],
        map: impl Fn(&dyn SqlRow) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let mut found = None;
        self.sql.query(sql, args, &mut |row| {
            if found.is_none() {
                found = Some(map(row)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    fn policy(&mut self, agent_id: &str, rev: i64, text: Option<String>) -> Result<Option<Arc<Policy>>, Error> {
        let Some(text) = text else { return Ok(None) };
        if let Some(cache) = self.policies.as_ref()
            && let Some((cached_rev, policy)) = cache.get(agent_id)
            && *cached_rev == rev
        {
            return Ok(Some(Arc::clone(policy)));
        }
        let policy = Arc::new(Policy::from_json(&text).map_err(|e| Error::internal("a stored policy", e))?);
        if let Some(cache) = self.policies.as_mut() {
            cache.insert(agent_id.to_owned(), (rev, Arc::clone(&policy)));
        }
        Ok(Some(policy))
    }

    fn room_members(&mut self, room_id: &str) -> Result<Vec<String>, Error> {
        let sql = "SELECT member FROM room_members WHERE room_id = ?1 ORDER BY added_at, member";
        self.rows(sql, args![room_id], |r| r.text(0))
    }

    fn messages_where(&mut self, filter: &str, args: &[super::Arg<'_>]) -> Result<Vec<MessageRecord>, Error> {
        let sql = format!(
            "SELECT m.id, m.room_id, m.sender, m.kind, m.text, m.created_at, m.payment_hash FROM messages m WHERE {filter}"
        );
        type Found = (i64, String, String, String, String, i64, Option<Vec<u8>>);
        let found: Vec<Found> = self.rows(&sql, args, |r| {
            Ok((r.i64(0)?, r.text(1)?, r.text(2)?, r.text(3)?, r.text(4)?, r.i64(5)?, r.opt_blob(6)?))
        })?;
        found
            .into_iter()
            .map(|(id, room_id, sender, kind, text, created_at_ms, hash)| {
                let invoice = match hash {
                    Some(h) => self.invoice(&hash32(h)?)?.map(|(i, _)| i),
                    None => None,
                };
                let kind = if kind == "payment_request" { MessageKind::PaymentRequest } else { MessageKind::Text };
                Ok(MessageRecord { id, room_id, sender, kind, text, created_at_ms, invoice })
            })
            .collect()
    }

    /// Among concurrent writers (in a write transaction), takes the lock
    /// `sql` names before a check whose answer another writer could change:
    /// writes that take it then take turns from here on. Nothing otherwise
    /// (one writer takes turns already).
    fn lock(&mut self, sql: &str, args: &[super::Arg<'_>]) -> Result<(), Error> {
        if !self.for_update.is_empty() {
            self.execute(sql, args)?;
        }
        Ok(())
    }

    /// Locks the agent's row (see [`SqlTx::lock`]).
    fn lock_agent(&mut self, agent_id: &str) -> Result<(), Error> {
        self.lock("SELECT 1 FROM agents WHERE id = ?1 FOR UPDATE", args![agent_id])
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
        let sql =
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        self.execute(sql, args![key, value])?;
        Ok(())
    }
}

/// `(before, limit)` of a page of a newest-first listing.
fn page_bounds(page: PageRequest) -> (i64, i64) {
    let limit = page.limit.clamp(1, PAGE_ROWS_MAX);
    (page.before.unwrap_or(i64::MAX), i64::from(limit))
}

/// A full page has a next one, after its last row.
fn next_cursor(rows: usize, limit: i64, last_seq: Option<i64>) -> Option<i64> {
    if i64::try_from(rows).unwrap_or(i64::MAX) >= limit { last_seq } else { None }
}

fn limit_rows(limit: u32) -> i64 {
    i64::from(limit.clamp(1, PAGE_ROWS_MAX))
}

/// Open invoices due for the sweep (`?1`: now, `?2`: the deposit watcher's
/// horizon), by the partial index `invoices_open_by_expiry`.
const INVOICES_DUE: &str = "status = 'open' AND expires_at <= ?1 AND (backend IS NULL OR expires_at < ?2)";

/// Gives a kind its code the first time it is written. The existence test
/// comes first so that a known kind costs one index probe and draws no
/// number from PostgreSQL's identity; two instances learning the same new
/// kind at once meet at the unique name, and the second does nothing.
const LEARN_EVENT_KIND: &str = "INSERT INTO event_kinds (name) SELECT CAST(?1 AS TEXT) \
     WHERE NOT EXISTS (SELECT 1 FROM event_kinds WHERE name = ?1) ON CONFLICT (name) DO NOTHING";

/// Appends an event by its kind's code and its agent's account id (none
/// where `?2` names no agent of the store). VALUES with a subquery per
/// name, not INSERT ... SELECT over a join: SQLite parsed that form anew
/// on every run once it had been prepared again (its plan came to depend
/// on the bound values), which cost a fifth of the throughput.
const INSERT_EVENT: &str = "INSERT INTO events (kind, agent, data, created_at) \
     VALUES ((SELECT code FROM event_kinds WHERE name = ?1), (SELECT account_id FROM agents WHERE id = ?2), ?3, ?4)";

impl Tx for SqlTx<'_> {
    fn balance(&mut self, account: AccountId) -> Result<Balance, Error> {
        let sql = format!(
            "SELECT debits_posted, credits_posted, debits_pending FROM accounts WHERE id = ?1{}",
            self.for_update
        );
        self.row(&sql, args![account.0], |r| rows::balance(r, 0))?.ok_or(Error::NotFound("account"))
    }

    fn save_balance(&mut self, account: AccountId, b: &Balance) -> Result<(), Error> {
        let sql = "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3, debits_pending = ?4 WHERE id = ?1";
        let (d, c, p) = (to_sql(b.debits_posted)?, to_sql(b.credits_posted)?, to_sql(b.debits_pending)?);
        self.append(sql, args![account.0, d, c, p], Expect::One(|| Error::NotFound("account")))
    }

    fn insert_transfer(&mut self, t: &Transfer, kind: &str, now_ms: i64) -> Result<i64, Error> {
        let sql =
            "INSERT INTO transfers (debit, credit, amount, kind, created_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id";
        self.row(sql, args![t.debit.0, t.credit.0, to_sql(t.amount)?, kind, now_ms], |r| r.i64(0))?
            .ok_or_else(|| Error::Internal("an insert returned no id".into()))
    }

    fn invoice(&mut self, payment_hash: &[u8; 32]) -> Result<Option<(InvoiceRecord, AccountId)>, Error> {
        let sql = format!("SELECT {INVOICE_COLUMNS} WHERE payment_hash = ?1{}", self.for_update);
        Ok(self.row(&sql, args![payment_hash], rows::invoice)?.map(|(record, _, account)| (record, account)))
    }

    fn mark_invoice_paid(&mut self, payment_hash: &[u8; 32], payer_agent_id: &str, now_ms: i64) -> Result<(), Error> {
        // Only an open invoice: the flow checked that it is, and the
        // statement asserts it too (the sweep may not expire it meanwhile).
        let sql = concat!(
            "UPDATE invoices SET status = 'paid', paid_at = ?2, payer = ",
            account_of!("?3"),
            ", paid_by = CASE WHEN ",
            account_of!("?3"),
            " IS NULL THEN ?3 END",
            " WHERE payment_hash = ?1 AND status = 'open'"
        );
        self.append(sql, args![payment_hash, now_ms, payer_agent_id], Expect::One(|| Error::InvoiceAlreadyPaid))
    }

    fn insert_payment(&mut self, p: &PaymentRecord, key_id: &str, transfer_id: Option<i64>) -> Result<(), Error> {
        let sql = concat!(
            "INSERT INTO payments (id, agent, key_id, payment_hash, amount, fee, status, purpose, payee, preimage, \
             transfer_id, created_at, detail, task, tags) VALUES (?1, ",
            account_of!("?2"),
            ", ?3, ?4, ?5, ?6, ?7, ?8, ",
            account_of!("CAST(?9 AS TEXT)"),
            ", ",
            preimage_kept!("?10", "?4"),
            ", ?11, ?12, ?13, ?14, ?15)"
        );
        let (amount, fee) = (to_sql(p.amount)?, to_sql(p.fee)?);
        let tags = p.attribution.tags_column();
        self.append(
            sql,
            args![
                &p.id,
                &p.agent_id,
                key_id,
                &p.payment_hash,
                amount,
                fee,
                status_str(p.status),
                &p.purpose,
                &p.payee_agent_id,
                p.preimage.as_ref(),
                transfer_id,
                p.created_at_ms,
                &p.detail,
                &p.attribution.task,
                &tags
            ],
            Expect::Any,
        )?;
        Ok(())
    }

    fn payment(&mut self, id: &str) -> Result<Option<PaymentRecord>, Error> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} WHERE id = ?1{}", self.for_update);
        Ok(self.row(&sql, args![id], rows::payment)?.map(|(p, _)| p))
    }

    fn update_payment(&mut self, p: &PaymentRecord, transfer_id: Option<i64>) -> Result<(), Error> {
        let sql = concat!(
            "UPDATE payments SET status = ?2, fee = ?3, preimage = ",
            preimage_kept!("?4", "payments.payment_hash"),
            ", detail = ?5, transfer_id = COALESCE(?6, transfer_id), refunded = ?7 WHERE id = ?1"
        );
        let (fee, refunded) = (to_sql(p.fee)?, to_sql(p.refunded)?);
        let status = status_str(p.status);
        let args = args![&p.id, status, fee, p.preimage.as_ref(), &p.detail, transfer_id, refunded];
        self.append(sql, args, Expect::One(|| Error::Internal("a payment to update is missing".into())))
    }

    fn insert_external(&mut self, e: &ExternalPayment) -> Result<(), Error> {
        let sql = "INSERT INTO external_payments (payment_id, payment_hash, bolt11, agent_id, account_id, amount, \
                   fee_limit, status, checks, created_at, updated_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)";
        let (amount, fee_limit) = (to_sql(e.amount)?, to_sql(e.fee_limit)?);
        self.execute(
            sql,
            args![
                &e.payment_id,
                &e.payment_hash,
                &e.bolt11,
                &e.agent_id,
                e.account.0,
                amount,
                fee_limit,
                status_str(e.status),
                e.checks,
                e.created_at_ms
            ],
        )?;
        Ok(())
    }

    fn external(&mut self, payment_id: &str) -> Result<Option<ExternalPayment>, Error> {
        let sql = format!("SELECT {EXTERNAL_COLUMNS} WHERE payment_id = ?1{}", self.for_update);
        self.row(&sql, args![payment_id], rows::external)
    }

    fn live_external(&mut self, payment_hash: &[u8; 32]) -> Result<Option<ExternalPayment>, Error> {
        let sql =
            format!("SELECT {EXTERNAL_COLUMNS} WHERE payment_hash = ?1 AND status <> 'failed'{}", self.for_update);
        self.row(&sql, args![payment_hash], rows::external)
    }

    fn update_external(&mut self, e: &ExternalPayment, now_ms: i64) -> Result<(), Error> {
        let sql = "UPDATE external_payments SET status = ?2, checks = ?3, updated_at = ?4 WHERE payment_id = ?1";
        self.append(sql, args![&e.payment_id, status_str(e.status), e.checks, now_ms], Expect::Any)?;
        Ok(())
    }

    fn mark_invoice_paid_from_outside(&mut self, payment_hash: &[u8; 32], now_ms: i64) -> Result<bool, Error> {
        let sql = "UPDATE invoices SET status = 'paid', paid_at = ?2, paid_by = 'outside' \
                   WHERE payment_hash = ?1 AND status IN ('open', 'expired')";
        Ok(self.execute(sql, args![payment_hash, now_ms])? == 1)
    }

    fn idempotency(&mut self, agent_id: &str, key: &str) -> Result<Option<([u8; 32], String)>, Error> {
        // A retry racing the request it repeats then finds its key once
        // that one committed, rather than its paid invoice.
        self.lock_agent(agent_id)?;
        let sql = concat!(
            "SELECT request_digest, payment_id FROM idempotency WHERE agent = ",
            account_of!("?1"),
            " AND key = ?2"
        );
        self.row(sql, args![agent_id, key], |r| Ok((hash32(r.blob(0)?)?, r.text(1)?)))
    }

    fn insert_idempotency(
        &mut self,
        agent_id: &str,
        idem: &Idempotency,
        target_id: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        let sql = concat!(
            "INSERT INTO idempotency (agent, key, request_digest, payment_id, created_at) VALUES (",
            account_of!("?1"),
            ", ?2, ?3, ?4, ?5)"
        );
        self.append(sql, args![agent_id, &idem.key, &idem.request_digest, target_id, now_ms], Expect::Any)?;
        Ok(())
    }

    fn halted(&mut self) -> Result<bool, Error> {
        // A flag: SQLite stores of before this code hold the integer 1.
        Ok(self.row("SELECT value FROM meta WHERE key = 'halted'", args![], |r| r.flag(0))?.unwrap_or(false))
    }

    fn agent_state(&mut self, agent_id: &str) -> Result<Option<AgentState>, Error> {
        let sql = format!(
            "SELECT account_id, parent_id, frozen_reason, policy, policy_rev, usage, breaker, task FROM agents \
             WHERE id = ?1{}",
            self.for_update
        );
        type Found = (i64, Option<String>, bool, Option<String>, i64, Option<String>, Option<String>, Option<String>);
        let found: Option<Found> = self.row(&sql, args![agent_id], |r| {
            let frozen = r.opt_text(2)?.is_some();
            let (policy, usage, breaker) = (r.opt_text(3)?, r.opt_text(5)?, r.opt_text(6)?);
            Ok((r.i64(0)?, r.opt_text(1)?, frozen, policy, r.i64(4)?, usage, breaker, r.opt_text(7)?))
        })?;
        let Some((account, parent_id, frozen, policy, rev, usage, breaker, task)) = found else { return Ok(None) };
        Ok(Some(AgentState {
            agent_id: agent_id.to_owned(),
            account: AccountId(account),
            parent_id,
            frozen,
            policy: self.policy(agent_id, rev, policy)?,
            usage: from_json(usage)?,
            breaker: from_json(breaker)?,
            task,
        }))
    }

    fn save_agent_state(&mut self, state: &AgentState) -> Result<(), Error> {
        let sql = "UPDATE agents SET usage = ?2, breaker = ?3 WHERE id = ?1";
        let (usage, breaker) = (json(&state.usage)?, json(&state.breaker)?);
        self.append(sql, args![&state.agent_id, &usage, &breaker], Expect::Any)?;
        Ok(())
    }

    fn set_frozen(&mut self, agent_id: &str, reason: Option<&str>, _now_ms: i64) -> Result<(), Error> {
        // Unfreezing starts the breaker's counts afresh: what tripped it
        // must not trip it again.
        let sql = "UPDATE agents SET frozen_reason = ?2, \
                   breaker = CASE WHEN CAST(?2 AS TEXT) IS NULL THEN NULL ELSE breaker END WHERE id = ?1";
        if self.execute(sql, args![agent_id, reason])? == 0 {
            return Err(Error::NotFound("agent"));
        }
        Ok(())
    }

    fn insert_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        let sql = "INSERT INTO approvals (id, agent_id, key_id, payment_hash, bolt11, amount, purpose, \
                   payee_agent_id, status, created_at, expires_at, fee_limit, payee_node, escrow_after_ms, \
                   escrow_on_timeout, task, tags) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
        let (amount, fee_limit) = (to_sql(a.amount)?, to_sql(a.fee_limit)?);
        let tags = a.attribution.tags_column();
        self.append(
            sql,
            args![
                &a.id,
                &a.agent_id,
                &a.key_id,
                &a.payment_hash,
                &a.bolt11,
                amount,
                &a.purpose,
                &a.payee_agent_id,
                a.status.as_str(),
                a.created_at_ms,
                a.expires_at_ms,
                fee_limit,
                &a.payee_node_hex,
                a.escrow.map(|e| e.release_after_ms),
                a.escrow.map(|e| outcome_str(e.on_timeout)),
                &a.attribution.task,
                &tags
            ],
            Expect::Any,
        )?;
        Ok(())
    }

    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        let sql = format!("SELECT {APPROVAL_COLUMNS} WHERE id = ?1{}", self.for_update);
        self.row(&sql, args![id], rows::approval)
    }

    fn held(&mut self, payment_hash: &[u8; 32], payer: Option<&str>) -> Result<Option<ApprovalRecord>, Error> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} WHERE payment_hash = ?1 AND status = 'pending' \
             AND (CAST(?2 AS TEXT) IS NULL OR agent_id = ?2) LIMIT 1{}",
            self.for_update
        );
        self.row(&sql, args![payment_hash, payer], rows::approval)
    }

    fn update_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        // Only a pending one: a decision is final.
        let sql = "UPDATE approvals SET status = ?2, decided_at = ?3, decided_by = ?4, payment_id = ?5 \
                   WHERE id = ?1 AND status = 'pending'";
        let args = args![&a.id, a.status.as_str(), a.decided_at_ms, &a.decided_by, &a.payment_id];
        self.append(sql, args, Expect::One(|| Error::ApprovalNotPending("the approval was already decided")))?;
        Ok(())
    }

    fn audit(&mut self, entry: &AuditEntry) -> Result<(), Error> {
        // The chain links the body's text; the row holds it packed. For
        // the filters it names its agent by account id (schema 18), or as
        // text where the name is no agent's (`operator` linking a chat).
        let body = json(entry)?;
        let packed = coffer_core::pack::json::pack(&body);
        if self.sql.concurrent_writers() {
            // Chained after commit, by the sealer (see `Sql::concurrent_writers`).
            let sql = "INSERT INTO audit_log (at, agent, agent_text, action, body) \
                       VALUES (?1, (SELECT account_id FROM agents WHERE id = ?2), \
                       CASE WHEN EXISTS (SELECT 1 FROM agents WHERE id = ?2) THEN NULL ELSE CAST(?2 AS TEXT) END, ?3, ?4)";
            let args = args![entry.at_ms, &entry.agent_id, entry.action, packed.as_slice()];
            return self.append(sql, args, Expect::Any);
        }
        let last = self.row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", args![], |r| {
            Ok((r.i64(0)?, hash32(r.blob(1)?)?))
        })?;
        let (seq, prev) = match last {
            Some((seq, hash)) => (seq.checked_add(1).ok_or(Error::Internal("the audit log is full".into()))?, hash),
            None => (1, audit_chain::GENESIS),
        };
        let hash = audit_chain::link(&prev, body.as_bytes());
        let sql = "INSERT INTO audit_log (seq, at, agent, agent_text, action, body, prev_hash, hash) \
                   VALUES (?1, ?2, (SELECT account_id FROM agents WHERE id = ?3), \
                   CASE WHEN EXISTS (SELECT 1 FROM agents WHERE id = ?3) THEN NULL ELSE CAST(?3 AS TEXT) END, \
                   ?4, ?5, ?6, ?7)";
        let args = args![seq, entry.at_ms, &entry.agent_id, entry.action, packed.as_slice(), &prev, &hash];
        self.append(sql, args, Expect::Any)
    }

    fn acknowledges_incoming(&mut self, agent_id: &str) -> Result<bool, Error> {
        let sql = "SELECT ack_incoming FROM agents WHERE id = ?1";
        Ok(self.row(sql, args![agent_id], |r| r.flag(0))?.unwrap_or(false))
    }

    fn save_incoming(&mut self, i: &IncomingRecord) -> Result<(), Error> {
        let sql = "INSERT INTO incoming (payment_id, payee_agent_id, payer_agent_id, amount, status, created_at, \
                   decided_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                   ON CONFLICT (payment_id) DO UPDATE SET status = excluded.status, decided_at = excluded.decided_at";
        let amount = to_sql(i.amount)?;
        self.append(
            sql,
            args![
                &i.payment_id,
                &i.payee_agent_id,
                &i.payer_agent_id,
                amount,
                i.status.as_str(),
                i.created_at_ms,
                i.decided_at_ms
            ],
            Expect::Any,
        )?;
        Ok(())
    }

    fn l402_tokens(&mut self, agent_id: &str, origin: &str, now_ms: i64) -> Result<Vec<L402TokenRecord>, Error> {
        // Two fetches meeting one paywall: the second finds the first's token.
        self.lock_agent(agent_id)?;
        let sql =
            format!("SELECT {L402_TOKEN_COLUMNS} WHERE agent_id = ?1 AND origin = ?2 AND expires_at > ?3 LIMIT ?4");
        let max = L402_TOKENS_PER_ORIGIN_MAX as i64;
        self.rows(&sql, args![agent_id, origin, now_ms, max], rows::l402_token)
    }

    fn save_l402_token(&mut self, t: &L402TokenRecord, now_ms: i64) -> Result<(), Error> {
        let expired = "DELETE FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND expires_at <= ?3";
        self.execute(expired, args![&t.agent_id, &t.origin, now_ms])?;
        // At the bound, the tokens that expire first make room.
        let others = "SELECT COUNT(*) FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND scope <> ?3";
        let kept = self.row(others, args![&t.agent_id, &t.origin, &t.scope], |r| r.i64(0))?.unwrap_or(0);
        let over = kept - (L402_TOKENS_PER_ORIGIN_MAX as i64 - 1);
        if over > 0 {
            let oldest = "DELETE FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND scope IN \
                          (SELECT scope FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND scope <> ?3 \
                          ORDER BY expires_at LIMIT ?4)";
            self.execute(oldest, args![&t.agent_id, &t.origin, &t.scope, over])?;
        }
        let sql = "INSERT INTO l402_tokens (agent_id, origin, scope, token, preimage, amount, payment_id, \
                   created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                   ON CONFLICT (agent_id, origin, scope) DO UPDATE SET token = excluded.token, \
                   preimage = excluded.preimage, amount = excluded.amount, payment_id = excluded.payment_id, \
                   created_at = excluded.created_at, expires_at = excluded.expires_at";
        let amount = to_sql(t.amount)?;
        self.execute(
            sql,
            args![
                &t.agent_id,
                &t.origin,
                &t.scope,
                &t.token,
                &t.preimage,
                amount,
                &t.payment_id,
                t.created_at_ms,
                t.expires_at_ms
            ],
        )?;
        Ok(())
    }

    fn forget_l402_token(&mut self, agent_id: &str, origin: &str, token: &str) -> Result<(), Error> {
        let sql = "DELETE FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND token = ?3";
        self.execute(sql, args![agent_id, origin, token])?;
        Ok(())
    }

    fn count(&mut self, counted: quota::Counted<'_>, cap: u32) -> Result<quota::Count, Error> {
        self.lock(quota::COUNT_LOCK, args![counted.subject(), counted.lock_key()])?;
        let read = |r: &dyn SqlRow| Ok((r.i64(0)?, r.opt_i64(1)?));
        let sql = counted.sql(cap);
        let found = match counted.time() {
            Some(at_ms) => self.row(&sql, args![counted.subject(), at_ms], read)?,
            None => self.row(&sql, args![counted.subject()], read)?,
        };
        let (rows, frees_at_ms) = found.ok_or_else(|| Error::Internal("a count returned no row".into()))?;
        Ok(quota::Count { rows: u32::try_from(rows).unwrap_or(u32::MAX), frees_at_ms })
    }

    fn insert_event(
        &mut self,
        kind: &str,
        agent_id: Option<&str>,
        data: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), Error> {
        // Packed: most of an event's bytes are key names, ids and hashes
        // in hex, and the outbox holds several events per payment. Its
        // kind and agent are integers (schema 18); a kind written for the
        // first time gets its code here.
        let data = coffer_core::pack::json::pack(&data.to_string());
        self.append(LEARN_EVENT_KIND, args![kind], Expect::Any)?;
        self.append(INSERT_EVENT, args![kind, agent_id, data.as_slice(), now_ms], Expect::Any)
    }

    fn operator_digest(&mut self) -> Result<Option<SecretDigest>, Error> {
        let sql = "SELECT value FROM meta WHERE key = 'operator_token_digest'";
        self.row(sql, args![], |r| Ok(SecretDigest(hash32(r.blob(0)?)?)))
    }

    fn set_operator_digest(&mut self, digest: &SecretDigest) -> Result<(), Error> {
        self.set_meta("operator_token_digest", &digest.0)
    }

    fn set_halted(&mut self, halted: bool) -> Result<(), Error> {
        self.set_meta("halted", &[u8::from(halted)])
    }

    fn write_ready_probe(&mut self, now_ms: i64) -> Result<(), Error> {
        self.set_meta("ready_probe", &now_ms.to_be_bytes())
    }

    fn insert_wallet_account(&mut self) -> Result<AccountId, Error> {
        // Wallets take ids from FIRST_WALLET on; the system accounts sit
        // below. MAX + 1: one writer takes it at a time on SQLite; writers
        // that run concurrently (PostgreSQL) may both take it, and the one
        // that loses (a unique violation) runs again.
        let sql = "INSERT INTO accounts (id, kind) SELECT CASE WHEN MAX(id) >= ?1 THEN MAX(id) + 1 ELSE ?1 END, \
                   'wallet' FROM accounts RETURNING id";
        let id = self.row(sql, args![AccountId::FIRST_WALLET], |r| r.i64(0))?;
        Ok(AccountId(id.ok_or_else(|| Error::Internal("an insert returned no id".into()))?))
    }

    fn insert_agent(&mut self, agent: &NewAgent, account: AccountId, now_ms: i64) -> Result<(), Error> {
        let sql = "INSERT INTO agents (id, account_id, name, created_at, parent_id, can_create_subagents, task) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
        let a = agent;
        self.execute(sql, args![&a.id, account.0, &a.name, now_ms, &a.parent_id, a.can_create_subagents, &a.task])?;
        Ok(())
    }

    fn agent(&mut self, id: &str) -> Result<Option<AgentRecord>, Error> {
        let sql = format!("SELECT {AGENT_COLUMNS} WHERE g.id = ?1");
        self.row(&sql, args![id], rows::agent)
    }

    fn agents(&mut self) -> Result<Vec<AgentRecord>, Error> {
        let sql = format!("SELECT {AGENT_COLUMNS} ORDER BY g.created_at, g.id");
        self.rows(&sql, args![], rows::agent)
    }

    fn set_policy(&mut self, agent_id: &str, policy_json: Option<&str>) -> Result<(), Error> {
        let sql = "UPDATE agents SET policy = ?2, policy_rev = policy_rev + 1 WHERE id = ?1";
        if self.execute(sql, args![agent_id, policy_json])? == 0 {
            return Err(Error::NotFound("agent"));
        }
        if let Some(cache) = self.policies.as_mut() {
            cache.remove(agent_id);
        }
        Ok(())
    }

    fn chat_settings(&mut self, agent_id: &str) -> Result<Option<ChatSettings>, Error> {
        let found = self.row("SELECT chat FROM agents WHERE id = ?1", args![agent_id], |r| r.opt_text(0))?;
        found.map(from_json).transpose()
    }

    fn set_chat_settings(&mut self, agent_id: &str, settings: &ChatSettings) -> Result<(), Error> {
        let sql = "UPDATE agents SET chat = ?2, ack_incoming = ?3 WHERE id = ?1";
        let text = json(settings)?;
        if self.execute(sql, args![agent_id, &text, settings.require_acknowledgment])? == 0 {
            return Err(Error::NotFound("agent"));
        }
        Ok(())
    }

    fn insert_key(&mut self, key: &NewKey, now_ms: i64) -> Result<(), Error> {
        let sql = "INSERT INTO keys (id, agent_id, digest, scope, created_at, expires_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
        let k = key;
        self.execute(sql, args![&k.id, &k.agent_id, &k.digest.0, k.scope.as_str(), now_ms, k.expires_at_ms])?;
        Ok(())
    }

    fn live_key(&mut self, key_id: &str) -> Result<Option<KeyRecord>, Error> {
        let sql = format!("SELECT {KEY_COLUMNS} WHERE k.id = ?1 AND k.revoked_at IS NULL");
        self.row(&sql, args![key_id], rows::key)
    }

    fn live_keys(&mut self) -> Result<Vec<KeyRecord>, Error> {
        let sql = format!("SELECT {KEY_COLUMNS} WHERE k.revoked_at IS NULL");
        self.rows(&sql, args![], rows::key)
    }

    fn live_key_by_digest(&mut self, digest: &SecretDigest) -> Result<Option<KeyRecord>, Error> {
        let sql = format!("SELECT {KEY_COLUMNS} WHERE k.digest = ?1 AND k.revoked_at IS NULL");
        self.row(&sql, args![&digest.0], rows::key)
    }

    fn revoke_key(&mut self, key_id: &str, now_ms: i64) -> Result<(), Error> {
        self.execute("UPDATE keys SET revoked_at = ?2 WHERE id = ?1", args![key_id, now_ms])?;
        Ok(())
    }

    fn insert_signing_key(&mut self, key: &SigningKeyRecord) -> Result<(), Error> {
        let sql = "INSERT INTO signing_keys (id, agent_id, alg, public_key, required, created_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
        let k = key;
        self.execute(
            sql,
            args![&k.id, &k.agent_id, k.alg.as_str(), k.public_key.as_slice(), k.required, k.created_at_ms],
        )?;
        Ok(())
    }

    fn signing_keys_of(&mut self, agent_id: &str, limit: u32) -> Result<Vec<SigningKeyRecord>, Error> {
        // Counted against the agent's bound before one more is added.
        self.lock_agent(agent_id)?;
        let sql = format!("SELECT {SIGNING_KEY_COLUMNS} WHERE agent_id = ?1 ORDER BY created_at DESC, id LIMIT ?2");
        self.rows(&sql, args![agent_id, i64::from(limit)], rows::signing_key)
    }

    fn live_signing_keys(&mut self) -> Result<Vec<SigningKeyRecord>, Error> {
        let sql = format!("SELECT {SIGNING_KEY_COLUMNS} WHERE revoked_at IS NULL");
        self.rows(&sql, args![], rows::signing_key)
    }

    fn live_signing_keys_of(&mut self, agent_id: &str) -> Result<Vec<SigningKeyRecord>, Error> {
        let sql =
            format!("SELECT {SIGNING_KEY_COLUMNS} WHERE agent_id = ?1 AND revoked_at IS NULL ORDER BY created_at, id");
        self.rows(&sql, args![agent_id], rows::signing_key)
    }

    fn revoke_signing_key(&mut self, agent_id: &str, key_id: &str, now_ms: i64) -> Result<bool, Error> {
        let sql = "UPDATE signing_keys SET revoked_at = ?3 WHERE id = ?1 AND agent_id = ?2 AND revoked_at IS NULL";
        Ok(self.execute(sql, args![key_id, agent_id, now_ms])? == 1)
    }

    fn insert_nwc_connection(&mut self, c: &NwcConnectionRecord) -> Result<(), Error> {
        let sql = "INSERT INTO nwc_connections (id, agent_id, name, client_pubkey, methods, notifications, \
                   created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
        let methods = c.methods.names();
        let args = args![
            &c.id,
            &c.agent_id,
            &c.name,
            &c.client_pubkey[..],
            &methods,
            c.notifications,
            c.created_at_ms,
            c.expires_at_ms
        ];
        self.execute(sql, args)?;
        Ok(())
    }

    fn nwc_connections_of(&mut self, agent_id: &str, limit: u32) -> Result<Vec<NwcConnectionRecord>, Error> {
        self.lock_agent(agent_id)?;
        let sql = format!("SELECT {NWC_CONNECTION_COLUMNS} WHERE agent_id = ?1 ORDER BY created_at DESC, id LIMIT ?2");
        self.rows(&sql, args![agent_id, i64::from(limit)], rows::nwc_connection)
    }

    fn nwc_connection_by_client(&mut self, client_pubkey: &[u8; 32]) -> Result<Option<NwcConnectionRecord>, Error> {
        let sql = format!("SELECT {NWC_CONNECTION_COLUMNS} WHERE client_pubkey = ?1");
        self.row(&sql, args![&client_pubkey[..]], rows::nwc_connection)
    }

    fn revoke_nwc_connection(&mut self, agent_id: &str, connection_id: &str, now_ms: i64) -> Result<bool, Error> {
        let sql = "UPDATE nwc_connections SET revoked_at = ?3 WHERE id = ?1 AND agent_id = ?2 AND revoked_at IS NULL";
        Ok(self.execute(sql, args![connection_id, agent_id, now_ms])? == 1)
    }

    fn take_nwc_request(&mut self, event_id: &[u8; 32], connection_id: &str, now_ms: i64) -> Result<bool, Error> {
        let sql = "INSERT INTO nwc_requests (event_id, connection_id, taken_at) VALUES (?1, ?2, ?3) \
                   ON CONFLICT DO NOTHING";
        if self.execute(sql, args![&event_id[..], connection_id, now_ms])? == 0 {
            return Ok(false);
        }
        let sql = "UPDATE nwc_connections SET last_used_at = ?2 WHERE id = ?1";
        self.append(sql, args![connection_id, now_ms], Expect::Any)?;
        Ok(true)
    }

    fn prune_nwc_requests(&mut self, before_ms: i64, limit: u32) -> Result<u64, Error> {
        let sql = "DELETE FROM nwc_requests WHERE event_id IN \
                   (SELECT event_id FROM nwc_requests WHERE taken_at < ?1 ORDER BY taken_at LIMIT ?2)";
        self.execute(sql, args![before_ms, i64::from(limit)])
    }

    fn insert_link_code(&mut self, c: &LinkCodeRecord) -> Result<(), Error> {
        let sql = "INSERT INTO link_codes (digest, agent_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)";
        self.execute(sql, args![&c.digest[..], &c.agent_id, c.created_at_ms, c.expires_at_ms])?;
        Ok(())
    }

    fn live_link_codes(&mut self, agent_id: &str, now_ms: i64) -> Result<u32, Error> {
        if agent_id != OPERATOR {
            self.lock_agent(agent_id)?;
        }
        self.execute("DELETE FROM link_codes WHERE agent_id = ?1 AND expires_at <= ?2", args![agent_id, now_ms])?;
        let live = self.row("SELECT COUNT(*) FROM link_codes WHERE agent_id = ?1", args![agent_id], |r| r.i64(0))?;
        Ok(u32::try_from(live.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    fn take_link_code(&mut self, digest: &[u8; 32], now_ms: i64) -> Result<Option<LinkCodeRecord>, Error> {
        let sql = format!("SELECT {LINK_CODE_COLUMNS} WHERE digest = ?1 AND expires_at > ?2");
        let Some(code) = self.row(&sql, args![&digest[..], now_ms], rows::link_code)? else { return Ok(None) };
        // Deleted whether or not it was live: a code is used once.
        if self.execute("DELETE FROM link_codes WHERE digest = ?1", args![&digest[..]])? == 0 {
            return Ok(None);
        }
        Ok(Some(code))
    }

    fn put_bridge_link(&mut self, l: &BridgeLinkRecord) -> Result<(), Error> {
        let sql = "INSERT INTO bridge_links (messenger, user_id, user_name, agent_id, chat_id, linked_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (messenger, user_id) DO UPDATE SET \
                   user_name = excluded.user_name, agent_id = excluded.agent_id, chat_id = excluded.chat_id, \
                   linked_at = excluded.linked_at";
        self.execute(sql, args![&l.messenger, &l.user_id, &l.user_name, &l.agent_id, &l.chat_id, l.linked_at_ms])?;
        Ok(())
    }

    fn bridge_link(&mut self, messenger: &str, user_id: &str) -> Result<Option<BridgeLinkRecord>, Error> {
        let sql = format!("SELECT {BRIDGE_LINK_COLUMNS} WHERE messenger = ?1 AND user_id = ?2");
        self.row(&sql, args![messenger, user_id], rows::bridge_link)
    }

    fn bridge_links_of(&mut self, agent_id: &str, limit: u32) -> Result<Vec<BridgeLinkRecord>, Error> {
        let sql =
            format!("SELECT {BRIDGE_LINK_COLUMNS} WHERE agent_id = ?1 ORDER BY linked_at, messenger, user_id LIMIT ?2");
        self.rows(&sql, args![agent_id, i64::from(limit)], rows::bridge_link)
    }

    fn delete_bridge_link(&mut self, messenger: &str, user_id: &str, agent_id: Option<&str>) -> Result<bool, Error> {
        let deleted = match agent_id {
            Some(agent_id) => {
                let sql = "DELETE FROM bridge_links WHERE messenger = ?1 AND user_id = ?2 AND agent_id = ?3";
                self.execute(sql, args![messenger, user_id, agent_id])?
            }
            None => self
                .execute("DELETE FROM bridge_links WHERE messenger = ?1 AND user_id = ?2", args![messenger, user_id])?,
        };
        Ok(deleted == 1)
    }

    fn put_room_bridge(&mut self, b: &RoomBridgeRecord) -> Result<(), Error> {
        if let Some(other) = self.room_bridge_of_chat(&b.messenger, &b.chat_id)?
            && other.room_id != b.room_id
        {
            return Err(Error::InvalidState("this chat is bridged to another room".into()));
        }
        let sql = "INSERT INTO room_bridges (room_id, messenger, chat_id, created_at) VALUES (?1, ?2, ?3, ?4) \
                   ON CONFLICT (room_id, messenger) DO UPDATE SET chat_id = excluded.chat_id, \
                   created_at = excluded.created_at";
        self.execute(sql, args![&b.room_id, &b.messenger, &b.chat_id, b.created_at_ms])?;
        Ok(())
    }

    fn room_bridges(&mut self, room_id: &str) -> Result<Vec<RoomBridgeRecord>, Error> {
        let sql = format!("SELECT {ROOM_BRIDGE_COLUMNS} WHERE room_id = ?1 ORDER BY messenger");
        self.rows(&sql, args![room_id], rows::room_bridge)
    }

    fn room_bridge_of_chat(&mut self, messenger: &str, chat_id: &str) -> Result<Option<RoomBridgeRecord>, Error> {
        let sql = format!("SELECT {ROOM_BRIDGE_COLUMNS} WHERE messenger = ?1 AND chat_id = ?2");
        self.row(&sql, args![messenger, chat_id], rows::room_bridge)
    }

    fn delete_room_bridge(&mut self, room_id: &str, messenger: &str) -> Result<bool, Error> {
        let sql = "DELETE FROM room_bridges WHERE room_id = ?1 AND messenger = ?2";
        Ok(self.execute(sql, args![room_id, messenger])? == 1)
    }

    fn insert_bridge_post(&mut self, p: &BridgePostRecord) -> Result<bool, Error> {
        let sql = "INSERT INTO bridge_posts (messenger, room_id, message_id, chat_id, external_id, payment_hash) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING";
        let hash = p.payment_hash.as_ref().map(|h| &h[..]);
        let args = args![&p.messenger, &p.room_id, p.message_id, &p.chat_id, &p.external_id, hash];
        Ok(self.execute(sql, args)? == 1)
    }

    fn bridge_post(
        &mut self,
        messenger: &str,
        room_id: &str,
        message_id: i64,
    ) -> Result<Option<BridgePostRecord>, Error> {
        let sql = format!("SELECT {BRIDGE_POST_COLUMNS} WHERE messenger = ?1 AND room_id = ?2 AND message_id = ?3");
        self.row(&sql, args![messenger, room_id, message_id], rows::bridge_post)
    }

    fn bridge_post_by_external(
        &mut self,
        messenger: &str,
        chat_id: &str,
        external_id: &str,
    ) -> Result<Option<BridgePostRecord>, Error> {
        let sql = format!("SELECT {BRIDGE_POST_COLUMNS} WHERE messenger = ?1 AND chat_id = ?2 AND external_id = ?3");
        self.row(&sql, args![messenger, chat_id, external_id], rows::bridge_post)
    }

    fn bridge_posts_of_hash(&mut self, payment_hash: &[u8; 32]) -> Result<Vec<BridgePostRecord>, Error> {
        let sql = format!("SELECT {BRIDGE_POST_COLUMNS} WHERE payment_hash = ?1 ORDER BY messenger, chat_id LIMIT 16");
        self.rows(&sql, args![&payment_hash[..]], rows::bridge_post)
    }

    fn bridge_cursor(&mut self, messenger: &str) -> Result<Option<String>, Error> {
        let key = format!("bridge_cursor.{messenger}");
        let value = self.row("SELECT value FROM meta WHERE key = ?1", args![&key], |r| r.blob(0))?;
        value.map(|v| String::from_utf8(v).map_err(|e| Error::internal("a stored bridge cursor", e))).transpose()
    }

    fn set_bridge_cursor(&mut self, messenger: &str, cursor: &str) -> Result<(), Error> {
        self.set_meta(&format!("bridge_cursor.{messenger}"), cursor.as_bytes())
    }

    fn audit_input(&mut self) -> Result<AuditInput, Error> {
        let sql = "SELECT id, debits_posted, credits_posted, debits_pending FROM accounts ORDER BY id";
        let accounts = self.rows(sql, args![], |r| Ok((AccountId(r.i64(0)?), rows::balance(r, 1)?)))?;
        // Streamed: the history may be larger than memory.
        let mut sums = TransferSums::default();
        self.sql.query("SELECT debit, credit, amount FROM transfers", args![], &mut |r| {
            sums.add(&Transfer { debit: AccountId(r.i64(0)?), credit: AccountId(r.i64(1)?), amount: msat(r.i64(2)?)? });
            Ok(())
        })?;
        Ok(AuditInput { accounts, sums })
    }

    fn insert_invoice(&mut self, inv: &InvoiceRecord) -> Result<(), Error> {
        let account = if inv.agent_id == TREASURY_PAYEE {
            AccountId::TREASURY.0
        } else {
            let sql = "SELECT account_id FROM agents WHERE id = ?1";
            self.row(sql, args![&inv.agent_id], |r| r.i64(0))?.ok_or(Error::NotFound("agent"))?
        };
        let sql = "INSERT INTO invoices (payment_hash, account_id, amount, memo, bolt11, preimage, status, \
                   created_at, expires_at, room_id, backend, hold_secs, escrow_after_ms, escrow_on_timeout) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
        let amount = to_sql(inv.amount)?;
        // Packed, without the payment hash the row holds anyway: the
        // invoice is most of its row.
        let bolt11 = coffer_core::pack::bech32::pack_invoice(&inv.bolt11, &inv.payment_hash);
        self.append(
            sql,
            args![
                &inv.payment_hash,
                account,
                amount,
                &inv.memo,
                bolt11.as_slice(),
                &inv.preimage,
                inv.created_at_ms,
                inv.expires_at_ms,
                &inv.room_id,
                &inv.backend,
                inv.hold_secs,
                inv.escrow.map(|e| e.release_after_ms),
                inv.escrow.map(|e| outcome_str(e.on_timeout))
            ],
            Expect::Any,
        )?;
        Ok(())
    }

    fn invoices(&mut self, agent_id: &str, page: PageRequest) -> Result<(Vec<InvoiceRecord>, Option<i64>), Error> {
        let (before, limit) = page_bounds(page);
        let sql = format!(
            concat!("SELECT {} WHERE account_id = ", account_of!("?1"), " AND seq < ?2 ORDER BY seq DESC LIMIT ?3"),
            INVOICE_COLUMNS
        );
        let found = self.rows(&sql, args![agent_id, before, limit], rows::invoice)?;
        let cursor = next_cursor(found.len(), limit, found.last().map(|r| r.1));
        Ok((found.into_iter().map(|r| r.0).collect(), cursor))
    }

    fn watched_invoices(
        &mut self,
        after_seq: i64,
        since_ms: i64,
        limit: u32,
    ) -> Result<(Vec<InvoiceRecord>, Option<i64>), Error> {
        let sql = format!(
            "SELECT {INVOICE_COLUMNS} WHERE status = 'open' AND backend IS NOT NULL AND seq > ?1 \
             AND expires_at >= ?2 ORDER BY seq LIMIT ?3"
        );
        let found = self.rows(&sql, args![after_seq, since_ms, limit_rows(limit)], rows::invoice)?;
        let last = found.last().map(|r| r.1);
        Ok((found.into_iter().map(|r| r.0).collect(), last))
    }

    fn invoices_due(&mut self, now_ms: i64, watched_since_ms: i64) -> Result<bool, Error> {
        let sql = format!("SELECT 1 FROM invoices WHERE {INVOICES_DUE} LIMIT 1");
        Ok(self.row(&sql, args![now_ms, watched_since_ms], |_| Ok(()))?.is_some())
    }

    fn expire_invoices(&mut self, now_ms: i64, watched_since_ms: i64, limit: u32) -> Result<Vec<InvoiceRecord>, Error> {
        let sql = format!(
            "UPDATE invoices SET status = 'expired' WHERE status = 'open' AND seq IN \
             (SELECT seq FROM invoices WHERE {INVOICES_DUE} ORDER BY expires_at LIMIT ?3) \
             RETURNING {INVOICE_COLUMNS_ONLY}"
        );
        let mut expired = self.rows(&sql, args![now_ms, watched_since_ms, limit], rows::invoice)?;
        // RETURNING gives no order: answer them in the invoices' order.
        expired.sort_by_key(|(_, seq, _)| *seq);
        Ok(expired.into_iter().map(|(invoice, _, _)| invoice).collect())
    }

    fn payments(&mut self, agent_id: &str, page: PageRequest) -> Result<(Vec<PaymentRecord>, Option<i64>), Error> {
        let (before, limit) = page_bounds(page);
        let sql = format!(
            concat!("SELECT {} WHERE agent = ", account_of!("?1"), " AND seq < ?2 ORDER BY seq DESC LIMIT ?3"),
            PAYMENT_COLUMNS
        );
        let found = self.rows(&sql, args![agent_id, before, limit], rows::payment)?;
        let cursor = next_cursor(found.len(), limit, found.last().map(|r| r.1));
        Ok((found.into_iter().map(|r| r.0).collect(), cursor))
    }

    fn pending_external(&mut self, limit: u32) -> Result<Vec<ExternalPayment>, Error> {
        // Least recently asked first: every check updates the row, so a
        // payment stuck at the backend does not starve the others.
        let sql = format!("SELECT {EXTERNAL_COLUMNS} WHERE status = 'pending' ORDER BY updated_at LIMIT ?1");
        self.rows(&sql, args![limit_rows(limit)], rows::external)
    }

    fn approvals(&mut self, status: Option<ApprovalStatus>, limit: u32) -> Result<Vec<ApprovalRecord>, Error> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} WHERE CAST(?1 AS TEXT) IS NULL OR status = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        );
        self.rows(&sql, args![status.map(ApprovalStatus::as_str), limit_rows(limit)], rows::approval)
    }

    fn approvals_due(&mut self, now_ms: i64) -> Result<bool, Error> {
        let sql = "SELECT 1 FROM approvals WHERE status = 'pending' AND expires_at <= ?1 LIMIT 1";
        Ok(self.row(sql, args![now_ms], |_| Ok(()))?.is_some())
    }

    fn due_approvals(&mut self, now_ms: i64, limit: u32) -> Result<Vec<ApprovalRecord>, Error> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2"
        );
        self.rows(&sql, args![now_ms, limit], rows::approval)
    }

    fn incoming(&mut self, payee_agent_id: &str, status: Option<IncomingStatus>) -> Result<Vec<IncomingRecord>, Error> {
        let sql = format!(
            "SELECT {INCOMING_COLUMNS} WHERE payee_agent_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR status = ?2) \
             ORDER BY created_at DESC LIMIT ?3"
        );
        let status = status.map(IncomingStatus::as_str);
        self.rows(&sql, args![payee_agent_id, status, i64::from(PAGE_ROWS_MAX)], rows::incoming)
    }

    fn incoming_payment(&mut self, payment_id: &str) -> Result<Option<IncomingRecord>, Error> {
        let sql = format!("SELECT {INCOMING_COLUMNS} WHERE payment_id = ?1{}", self.for_update);
        self.row(&sql, args![payment_id], rows::incoming)
    }

    fn audit_log(&mut self, filter: &AuditFilter, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, Error> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} WHERE seq > ?1 \
             AND (CAST(?2 AS TEXT) IS NULL OR agent = (SELECT account_id FROM agents WHERE id = ?2) \
             OR agent_text = ?2) \
             AND (CAST(?3 AS TEXT) IS NULL OR action = ?3) AND (CAST(?4 AS BIGINT) IS NULL OR at >= ?4) \
             AND (CAST(?5 AS BIGINT) IS NULL OR at < ?5) ORDER BY seq LIMIT ?6"
        );
        let f = filter;
        let args = args![after_seq, &f.agent_id, &f.action, f.since_ms, f.until_ms, limit_rows(limit)];
        self.rows(&sql, args, rows::audit)
    }

    fn audit_chain(&mut self) -> Result<Vec<AuditRecord>, Error> {
        // Records not yet sealed (numbered and chained) are not part of it.
        self.rows(&format!("SELECT {AUDIT_COLUMNS} WHERE seq IS NOT NULL ORDER BY seq"), args![], rows::audit)
    }

    fn audit_at(&mut self, agent_id: &str, action: &str, at_ms: i64, limit: u32) -> Result<Vec<AuditRecord>, Error> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} WHERE agent = (SELECT account_id FROM agents WHERE id = ?1) \
             AND action = ?2 AND at = ?3 AND seq IS NOT NULL ORDER BY seq LIMIT ?4"
        );
        self.rows(&sql, args![agent_id, action, at_ms, limit_rows(limit)], rows::audit)
    }

    fn external_settled_at(&mut self, payment_id: &str) -> Result<Option<i64>, Error> {
        let sql = "SELECT updated_at FROM external_payments WHERE payment_id = ?1 AND status = 'succeeded'";
        self.row(sql, args![payment_id], |r| r.i64(0))
    }

    fn insert_room(&mut self, room: &RoomRecord) -> Result<(), Error> {
        let sql = "INSERT INTO rooms (id, name, created_by, created_at) VALUES (?1, ?2, ?3, ?4)";
        self.execute(sql, args![&room.id, &room.name, &room.created_by, room.created_at_ms])?;
        Ok(())
    }

    fn room(&mut self, id: &str) -> Result<Option<RoomRecord>, Error> {
        let sql = "SELECT name, created_by, created_at FROM rooms WHERE id = ?1";
        let Some((name, created_by, created_at_ms)) =
            self.row(sql, args![id], |r| Ok((r.text(0)?, r.text(1)?, r.i64(2)?)))?
        else {
            return Ok(None);
        };
        let members = self.room_members(id)?;
        Ok(Some(RoomRecord { id: id.to_owned(), name, created_by, created_at_ms, members }))
    }

    fn rooms(
        &mut self,
        member: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<RoomRecord>, Option<String>), Error> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        // Oldest first; the cursor is the last room's id, and the page goes
        // on after its (created_at, id).
        let sql = "SELECT r.id FROM rooms r WHERE (CAST(?1 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM room_members m \
                   WHERE m.room_id = r.id AND m.member = ?1)) AND (CAST(?2 AS TEXT) IS NULL OR (r.created_at, r.id) > \
                   (SELECT created_at, id FROM rooms WHERE id = ?2)) ORDER BY r.created_at, r.id LIMIT ?3";
        let ids = self.rows(sql, args![member, after, limit], |r| r.text(0))?;
        let next = (ids.len() == limit as usize).then(|| ids.last().cloned()).flatten();
        let rooms = ids.iter().filter_map(|id| self.room(id).transpose()).collect::<Result<_, _>>()?;
        Ok((rooms, next))
    }

    fn add_member(&mut self, room_id: &str, member: &str, now_ms: i64) -> Result<(), Error> {
        let sql = "INSERT INTO room_members (room_id, member, added_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
        self.execute(sql, args![room_id, member, now_ms])?;
        Ok(())
    }

    fn remove_member(&mut self, room_id: &str, member: &str) -> Result<bool, Error> {
        let sql = "DELETE FROM room_members WHERE room_id = ?1 AND member = ?2";
        Ok(self.execute(sql, args![room_id, member])? > 0)
    }

    fn insert_message(&mut self, m: &NewMessage, kind: MessageKind) -> Result<i64, Error> {
        // Readers page a room by message id: among concurrent writers, the
        // room's row lock makes its messages take their ids in the order
        // they commit, so none appears below one already read.
        self.lock("SELECT 1 FROM rooms WHERE id = ?1 FOR UPDATE", args![&m.room_id])?;
        let sql = "INSERT INTO messages (room_id, sender, kind, text, payment_hash, created_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id";
        let kind = match kind {
            MessageKind::PaymentRequest => "payment_request",
            MessageKind::Text => "text",
        };
        let hash = m.invoice.as_ref().map(|i| &i.payment_hash);
        self.row(sql, args![&m.room_id, &m.sender, kind, &m.text, hash, m.now_ms], |r| r.i64(0))?
            .ok_or_else(|| Error::Internal("an insert returned no id".into()))
    }

    fn messages(&mut self, room_id: &str, after_id: i64, limit: u32) -> Result<Vec<MessageRecord>, Error> {
        self.messages_where(
            "m.room_id = ?1 AND m.id > ?2 ORDER BY m.id LIMIT ?3",
            args![room_id, after_id, limit_rows(limit)],
        )
    }

    fn message(&mut self, room_id: &str, id: i64) -> Result<Option<MessageRecord>, Error> {
        Ok(self.messages_where("m.room_id = ?1 AND m.id = ?2", args![room_id, id])?.pop())
    }

    fn events(&mut self, after_id: i64, agent_id: Option<&str>, limit: u32) -> Result<Vec<EventRecord>, Error> {
        let limit = i64::from(limit.clamp(1, READ_EVENTS_MAX));
        // Two statements, so each uses its index: (id) for all events,
        // (agent, id) for one agent's.
        match agent_id {
            None => {
                let sql = format!("SELECT {EVENT_COLUMNS} WHERE e.id > ?1 ORDER BY e.id LIMIT ?2");
                self.rows(&sql, args![after_id, limit], rows::event)
            }
            Some(agent) => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} WHERE e.agent = (SELECT account_id FROM agents WHERE id = ?1) \
                     AND e.id > ?2 ORDER BY e.id LIMIT ?3"
                );
                self.rows(&sql, args![agent, after_id, limit], rows::event)
            }
        }
    }

    fn newest_event_id(&mut self) -> Result<i64, Error> {
        Ok(self.row("SELECT COALESCE(MAX(id), 0) FROM events", args![], |r| r.i64(0))?.unwrap_or(0))
    }

    fn gauges(&mut self) -> Result<crate::metrics::StoreGauges, Error> {
        // Pending approvals and open escrows are read through their partial
        // or status indexes; frozen agents scan the agents (no index: the
        // table is small next to payments, and this runs once a scrape).
        let sql = "SELECT (SELECT COUNT(*) FROM approvals WHERE status = 'pending'), \
                   (SELECT COUNT(*) FROM escrows WHERE kind = 'hold' AND status IN ('held', 'disputed')), \
                   (SELECT COUNT(*) FROM escrows WHERE kind = 'escrow' AND status IN ('held', 'disputed')), \
                   (SELECT COUNT(*) FROM agents WHERE frozen_reason IS NOT NULL)";
        let counts = self.row(sql, args![], |r| Ok([r.i64(0)?, r.i64(1)?, r.i64(2)?, r.i64(3)?]))?;
        let [approvals_pending, holds_open, escrows_open, agents_frozen] = counts.unwrap_or_default();
        // A lease named `*.read` keeps a messenger's own cursor, not an
        // outbox event id.
        let sql = "SELECT name, (SELECT COALESCE(MAX(id), 0) FROM events) - cursor FROM leases \
                   WHERE name NOT LIKE '%.read' ORDER BY name LIMIT ?1";
        let consumers = super::super::GAUGE_CONSUMERS_MAX;
        let outbox_backlog = self.rows(sql, args![consumers], |r| Ok((r.text(0)?, r.i64(1)?.max(0))))?;
        Ok(crate::metrics::StoreGauges { approvals_pending, holds_open, escrows_open, agents_frozen, outbox_backlog })
    }

    fn claim_lease(&mut self, name: &str, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<i64>, Error> {
        let until_ms = now_ms.saturating_add(lease_ms);
        // One statement: take it when free or expired, renew it when ours.
        let sql = "INSERT INTO leases (name, owner, expires_at) VALUES (?1, ?2, ?3) \
                   ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                   WHERE leases.owner = excluded.owner OR leases.expires_at <= ?4 \
                   RETURNING cursor";
        self.row(sql, args![name, owner, until_ms, now_ms], |r| r.i64(0))
    }

    fn advance_lease(&mut self, name: &str, owner: &str, cursor: i64) -> Result<bool, Error> {
        let sql = "UPDATE leases SET cursor = ?3 WHERE name = ?1 AND owner = ?2";
        Ok(self.execute(sql, args![name, owner, cursor])? == 1)
    }

    fn insert_webhook(&mut self, w: &WebhookRecord) -> Result<(), Error> {
        let types = serde_json::to_string(&w.types).map_err(|e| Error::internal("a webhook's types", e))?;
        let sql = "INSERT INTO webhooks (id, owner, url, types, after_event_id, failures, paused, next_attempt_at, \
                   created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
        let s = &w.state;
        self.execute(
            sql,
            args![
                &w.id,
                &w.owner,
                &w.url,
                &types,
                s.after_event_id,
                s.failures,
                s.paused,
                s.next_attempt_at_ms,
                w.created_at_ms
            ],
        )?;
        Ok(())
    }

    fn webhooks(&mut self, owner: Option<&str>) -> Result<Vec<WebhookRecord>, Error> {
        match owner {
            None => self.rows(&format!("SELECT {WEBHOOK_COLUMNS} ORDER BY created_at"), args![], rows::webhook),
            Some(owner) => {
                // Counted against the owner's bound before one more is added.
                self.lock_agent(owner)?;
                let sql = format!("SELECT {WEBHOOK_COLUMNS} WHERE owner = ?1 ORDER BY created_at");
                self.rows(&sql, args![owner], rows::webhook)
            }
        }
    }

    fn webhook(&mut self, id: &str) -> Result<Option<WebhookRecord>, Error> {
        self.row(&format!("SELECT {WEBHOOK_COLUMNS} WHERE id = ?1"), args![id], rows::webhook)
    }

    fn delete_webhook(&mut self, id: &str) -> Result<bool, Error> {
        self.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1", args![id])?;
        Ok(self.execute("DELETE FROM webhooks WHERE id = ?1", args![id])? == 1)
    }

    fn save_webhook_state(&mut self, id: &str, s: &WebhookState) -> Result<(), Error> {
        let sql = "UPDATE webhooks SET after_event_id = ?2, failures = ?3, paused = ?4, next_attempt_at = ?5 \
                   WHERE id = ?1";
        if self.execute(sql, args![id, s.after_event_id, s.failures, s.paused, s.next_attempt_at_ms])? == 0 {
            return Err(Error::NotFound("webhook"));
        }
        Ok(())
    }

    fn insert_delivery(&mut self, d: &DeliveryRecord) -> Result<(), Error> {
        let sql = "INSERT INTO webhook_deliveries (webhook_id, event_id, attempt, status, error, delivered, at, \
                   duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
        let duration_ms = i64::try_from(d.duration_ms).unwrap_or(i64::MAX);
        let status = d.status.map(i64::from);
        self.append(
            sql,
            args![&d.webhook_id, d.event_id, d.attempt, status, &d.error, d.delivered, d.at_ms, duration_ms],
            Expect::Any,
        )?;
        Ok(())
    }

    fn deliveries(&mut self, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>, Error> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2");
        self.rows(&sql, args![webhook_id, limit_rows(limit)], rows::delivery)
    }

    fn move_invoice(
        &mut self,
        payment_hash: &[u8; 32],
        from: StoredInvoiceStatus,
        to: StoredInvoiceStatus,
        paid_by: Option<&str>,
        paid_at_ms: Option<i64>,
    ) -> Result<bool, Error> {
        // A payer given (an agent, or `outside`) replaces the one before.
        let sql = concat!(
            "UPDATE invoices SET status = ?3, payer = CASE WHEN CAST(?4 AS TEXT) IS NULL THEN payer ELSE ",
            account_of!("CAST(?4 AS TEXT)"),
            " END, paid_by = CASE WHEN CAST(?4 AS TEXT) IS NULL THEN paid_by WHEN ",
            account_of!("CAST(?4 AS TEXT)"),
            " IS NULL THEN ?4 END, paid_at = COALESCE(?5, paid_at) WHERE payment_hash = ?1 AND status = ?2"
        );
        Ok(self.execute(sql, args![payment_hash, from.as_str(), to.as_str(), paid_by, paid_at_ms])? == 1)
    }

    fn insert_escrow(&mut self, e: &EscrowRecord) -> Result<(), Error> {
        let sql = "INSERT INTO escrows (payment_id, kind, payment_hash, payer_agent_id, payee_agent_id, amount, \
                   status, on_timeout, deadline_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
        let amount = to_sql(e.amount)?;
        self.append(
            sql,
            args![
                &e.payment_id,
                e.kind.as_str(),
                &e.payment_hash,
                &e.payer_agent_id,
                &e.payee_agent_id,
                amount,
                e.status.as_str(),
                outcome_str(e.on_timeout),
                e.deadline_at_ms,
                e.created_at_ms
            ],
            Expect::Any,
        )?;
        Ok(())
    }

    fn escrow(&mut self, payment_id: &str) -> Result<Option<EscrowRecord>, Error> {
        let sql = format!("SELECT {ESCROW_COLUMNS} WHERE payment_id = ?1{}", self.for_update);
        self.row(&sql, args![payment_id], rows::escrow)
    }

    fn escrow_by_hash(&mut self, payment_hash: &[u8; 32]) -> Result<Option<EscrowRecord>, Error> {
        let sql = format!("SELECT {ESCROW_COLUMNS} WHERE payment_hash = ?1{}", self.for_update);
        self.row(&sql, args![payment_hash], rows::escrow)
    }

    fn update_escrow(&mut self, e: &EscrowRecord, from: EscrowStatus) -> Result<bool, Error> {
        let sql = "UPDATE escrows SET status = ?3, resolved_at = ?4, resolved_by = ?5 \
                   WHERE payment_id = ?1 AND status = ?2";
        let changed = self
            .execute(sql, args![&e.payment_id, from.as_str(), e.status.as_str(), e.resolved_at_ms, &e.resolved_by])?;
        Ok(changed == 1)
    }

    fn escrows_due(&mut self, now_ms: i64) -> Result<bool, Error> {
        let sql = "SELECT 1 FROM escrows WHERE status = 'held' AND deadline_at <= ?1 AND payer_agent_id <> ?2 LIMIT 1";
        Ok(self.row(sql, args![now_ms, OUTSIDE_PAYER], |r| r.i64(0))?.is_some())
    }

    fn due_escrows(&mut self, now_ms: i64, limit: u32) -> Result<Vec<EscrowRecord>, Error> {
        let sql = format!(
            "SELECT {ESCROW_COLUMNS} WHERE status = 'held' AND deadline_at <= ?1 AND payer_agent_id <> ?2 \
             ORDER BY deadline_at, payment_id LIMIT ?3"
        );
        self.rows(&sql, args![now_ms, OUTSIDE_PAYER, limit_rows(limit)], rows::escrow)
    }

    fn due_outside_holds(&mut self, now_ms: i64, limit: u32) -> Result<Vec<EscrowRecord>, Error> {
        let sql = format!(
            "SELECT {ESCROW_COLUMNS} WHERE status = 'held' AND deadline_at <= ?1 AND payer_agent_id = ?2 \
             ORDER BY deadline_at, payment_id LIMIT ?3"
        );
        self.rows(&sql, args![now_ms, OUTSIDE_PAYER, limit_rows(limit)], rows::escrow)
    }

    fn escrows(
        &mut self,
        agent_id: Option<&str>,
        status: Option<EscrowStatus>,
        limit: u32,
    ) -> Result<Vec<EscrowRecord>, Error> {
        let sql = format!(
            "SELECT {ESCROW_COLUMNS} WHERE (CAST(?1 AS TEXT) IS NULL OR payer_agent_id = ?1 OR payee_agent_id = ?1) \
             AND (CAST(?2 AS TEXT) IS NULL OR status = ?2) ORDER BY created_at DESC, payment_id LIMIT ?3"
        );
        self.rows(&sql, args![agent_id, status.map(EscrowStatus::as_str), limit_rows(limit)], rows::escrow)
    }

    fn insert_session(&mut self, x: &SessionRecord) -> Result<(), Error> {
        let sql = "INSERT INTO sessions (id, payer_agent_id, payee_agent_id, max, charged, charges, status, purpose, \
                   created_at, expires_at, task, tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
        let (max, charged) = (to_sql(x.max)?, to_sql(x.charged)?);
        let tags = x.attribution.tags_column();
        self.append(
            sql,
            args![
                &x.id,
                &x.payer_agent_id,
                &x.payee_agent_id,
                max,
                charged,
                x.charges,
                x.status.as_str(),
                &x.purpose,
                x.created_at_ms,
                x.expires_at_ms,
                &x.attribution.task,
                &tags
            ],
            Expect::Any,
        )?;
        Ok(())
    }

    fn session(&mut self, id: &str) -> Result<Option<SessionRecord>, Error> {
        let sql = format!("SELECT {SESSION_COLUMNS} WHERE id = ?1{}", self.for_update);
        Ok(self.row(&sql, args![id], rows::session)?.map(|(x, _)| x))
    }

    fn update_session(&mut self, x: &SessionRecord, from: SessionStatus) -> Result<bool, Error> {
        let sql = "UPDATE sessions SET charged = ?3, charges = ?4, status = ?5, closed_at = ?6, closed_by = ?7 \
                   WHERE id = ?1 AND status = ?2";
        let charged = to_sql(x.charged)?;
        let changed = self.execute(
            sql,
            args![&x.id, from.as_str(), charged, x.charges, x.status.as_str(), x.closed_at_ms, &x.closed_by],
        )?;
        Ok(changed == 1)
    }

    fn sessions_due(&mut self, now_ms: i64) -> Result<bool, Error> {
        let sql = "SELECT 1 FROM sessions WHERE status = 'open' AND expires_at <= ?1 LIMIT 1";
        Ok(self.row(sql, args![now_ms], |r| r.i64(0))?.is_some())
    }

    fn due_sessions(&mut self, now_ms: i64, limit: u32) -> Result<Vec<SessionRecord>, Error> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} WHERE status = 'open' AND expires_at <= ?1 ORDER BY expires_at, seq LIMIT ?2"
        );
        Ok(self.rows(&sql, args![now_ms, limit_rows(limit)], rows::session)?.into_iter().map(|(x, _)| x).collect())
    }

    fn sessions(&mut self, agent_id: &str, page: PageRequest) -> Result<(Vec<SessionRecord>, Option<i64>), Error> {
        let (before, limit) = page_bounds(page);
        let sql = format!(
            "SELECT {SESSION_COLUMNS} WHERE (payer_agent_id = ?1 OR payee_agent_id = ?1) AND seq < ?2 \
             ORDER BY seq DESC LIMIT ?3"
        );
        let found = self.rows(&sql, args![agent_id, before, limit], rows::session)?;
        let cursor = next_cursor(found.len(), limit, found.last().map(|r| r.1));
        Ok((found.into_iter().map(|r| r.0).collect(), cursor))
    }

    fn insert_charge(&mut self, c: &ChargeRecord, transfer_id: i64) -> Result<(), Error> {
        let sql = "INSERT INTO session_charges (id, session_id, amount, memo, transfer_id, created_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
        let amount = to_sql(c.amount)?;
        self.append(sql, args![&c.id, &c.session_id, amount, &c.memo, transfer_id, c.created_at_ms], Expect::Any)?;
        Ok(())
    }

    fn charge(&mut self, id: &str) -> Result<Option<ChargeRecord>, Error> {
        let sql = format!("SELECT {CHARGE_COLUMNS} WHERE id = ?1");
        self.row(&sql, args![id], rows::charge)
    }

    fn charges(&mut self, session_id: &str, limit: u32) -> Result<Vec<ChargeRecord>, Error> {
        let sql = format!(
            "SELECT * FROM (SELECT {CHARGE_COLUMNS_ONLY}, seq FROM session_charges WHERE session_id = ?1 \
             ORDER BY seq DESC LIMIT ?2) AS newest ORDER BY seq"
        );
        self.rows(&sql, args![session_id, i64::from(limit)], rows::charge)
    }

    fn insert_refund(&mut self, x: &RefundRecord, transfer_id: i64) -> Result<(), Error> {
        let sql = "INSERT INTO refunds (id, payment_id, from_agent_id, to_agent_id, amount, reason, payment_refunded, \
                   transfer_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
        let (amount, total) = (to_sql(x.amount)?, to_sql(x.payment_refunded)?);
        self.append(
            sql,
            args![
                &x.id,
                &x.payment_id,
                &x.from_agent_id,
                &x.to_agent_id,
                amount,
                &x.reason,
                total,
                transfer_id,
                x.created_at_ms
            ],
            Expect::Any,
        )?;
        Ok(())
    }

    fn refund(&mut self, id: &str) -> Result<Option<RefundRecord>, Error> {
        let sql = format!("SELECT {REFUND_COLUMNS} WHERE id = ?1");
        self.row(&sql, args![id], rows::refund)
    }

    fn refunds(&mut self, payment_id: &str) -> Result<Vec<RefundRecord>, Error> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} WHERE payment_id = ?1 ORDER BY seq LIMIT {}",
            crate::model::REFUNDS_PER_PAYMENT_MAX
        );
        self.rows(&sql, args![payment_id], rows::refund)
    }

    fn add_spend(&mut self, spend: &Spend<'_>) -> Result<(), Error> {
        let sql = "INSERT INTO spend_totals (dimension, day, agent_id, value, payments, amount, fee) \
                   VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6) ON CONFLICT (dimension, day, agent_id, value) DO UPDATE SET \
                   payments = spend_totals.payments + 1, amount = spend_totals.amount + excluded.amount, \
                   fee = spend_totals.fee + excluded.fee";
        let (amount, fee) = (to_sql(spend.amount)?, to_sql(spend.fee)?);
        let day = crate::model::attribution::day_of(spend.at_ms);
        let task = spend.attribution.task.as_deref().map(|task| (Dimension::Task, task));
        let tags = spend.attribution.tags.iter().map(|tag| (Dimension::Tag, tag.as_str()));
        for (dimension, value) in std::iter::once((Dimension::Payee, spend.payee)).chain(task).chain(tags) {
            let args = args![dimension.as_str(), day, spend.agent_id, value, amount, fee];
            self.append(sql, args, Expect::Any)?;
        }
        Ok(())
    }

    fn spend_totals(&mut self, q: &SpendQuery) -> Result<Vec<SpendTotal>, Error> {
        let key = if q.by_day { "CAST(day AS TEXT)" } else { "value" };
        let group = if q.by_day { "day" } else { "value" };
        let sql = format!(
            "SELECT agent_id, {key}, CAST(SUM(payments) AS BIGINT), CAST(SUM(amount) AS BIGINT), \
             CAST(SUM(fee) AS BIGINT) FROM spend_totals WHERE dimension = ?1 AND day >= ?2 AND day <= ?3 \
             GROUP BY agent_id, {group} ORDER BY 4 DESC, 1, 2 LIMIT ?4"
        );
        let args = args![q.dimension.as_str(), q.from_day, q.to_day, q.limit];
        self.rows(&sql, args, |r| {
            Ok(SpendTotal {
                agent_id: r.text(0)?,
                value: r.text(1)?,
                payments: u64::try_from(r.i64(2)?).map_err(|e| Error::internal("a count of payments", e))?,
                amount: rows::msat(r.i64(3)?)?,
                fee: rows::msat(r.i64(4)?)?,
            })
        })
    }

    fn prune(&mut self, cutoffs: &retention::Cutoffs) -> Result<retention::Pruned, Error> {
        use retention::*;
        let batch = PRUNE_BATCH_ROWS_MAX;
        let invoices = self.execute(DELETE_EXPIRED_INVOICES, args![cutoffs.invoices_expired_before_ms, batch])?;
        let read_by_all = self.row(EVENTS_READ_BY_ALL, args![cutoffs.events_before_ms], |r| r.opt_i64(0))?.flatten();
        let floor = read_by_all.unwrap_or(i64::MAX);
        let events = self.execute(DELETE_OLD_EVENTS, args![floor, batch, cutoffs.events_before_ms])?;
        let deliveries = self.execute(DELETE_OLD_DELIVERIES, args![batch, cutoffs.deliveries_before_ms])?;
        Ok(Pruned { invoices, events, deliveries })
    }
}
