//! Storage: one trait, one folder per backend.
//!
//! Every method that changes state is one atomic transaction: it either
//! happens whole, with its ledger postings and its event, or not at all. A
//! method returns only after its transaction is durable, so an acknowledged
//! request survives a crash of the process.

pub mod postgres;
pub mod quota;
pub mod retention;
pub mod sqlite;

pub use crate::model::records::*;
pub use quota::Quotas;

use crate::error::Error;
use crate::secrets::SecretDigest;
use coffer_core::policy::Policy;
use coffer_core::{AccountId, Balance, Transfer};
use std::future::Future;
use std::pin::Pin;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

pub trait Store: Send + Sync + 'static {
    /// Whether other processes may write this store too (several gateway
    /// instances on one database): process-local caches must then refresh.
    fn shared(&self) -> bool {
        false
    }

    fn operator_digest(&self) -> StoreFuture<'_, Option<SecretDigest>>;
    fn set_operator_digest(&self, digest: SecretDigest) -> StoreFuture<'_, ()>;

    fn create_agent(&self, agent: NewAgent, now_ms: i64) -> StoreFuture<'_, AgentRecord>;
    fn agents(&self) -> StoreFuture<'_, Vec<AgentRecord>>;
    fn agent(&self, id: String) -> StoreFuture<'_, Option<AgentRecord>>;
    fn create_key(&self, key: NewKey, now_ms: i64) -> StoreFuture<'_, KeyRecord>;
    /// Returns the revoked key, or `None` if there was no such live key.
    fn revoke_key(&self, key_id: String, now_ms: i64) -> StoreFuture<'_, Option<KeyRecord>>;
    fn live_keys(&self) -> StoreFuture<'_, Vec<KeyRecord>>;

    /// Moves money between two accounts (mint, fund); returns the transfer
    /// id and the credited account's balance.
    fn transfer(
        &self,
        transfer: Transfer,
        kind: &'static str,
        agent_id: Option<String>,
        actor: String,
        now_ms: i64,
    ) -> StoreFuture<'_, (i64, Balance)>;
    fn balance(&self, account: AccountId) -> StoreFuture<'_, Balance>;

    /// Stores a new invoice, within the payee's `invoices_open_per_agent`.
    fn insert_invoice(&self, invoice: InvoiceRecord, quotas: Quotas) -> StoreFuture<'_, ()>;
    fn invoice(&self, payment_hash: [u8; 32]) -> StoreFuture<'_, Option<InvoiceRecord>>;
    fn invoices(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<InvoiceRecord>, Option<i64>)>;

    fn pay_internal(&self, pay: PayInternal) -> StoreFuture<'_, PayAttempt>;

    // Lightning.

    /// Decides, reserves amount plus fee limit, and records the payment as
    /// pending, atomically; refuses a payment hash already pending or paid.
    fn begin_external(&self, begin: BeginExternal) -> StoreFuture<'_, ExternalStart>;
    /// Settles (at the real fee) or fails (releasing everything) a pending
    /// external payment; a finished one is returned unchanged.
    fn finish_external(
        &self,
        payment_id: String,
        outcome: ExternalOutcome,
        now_ms: i64,
    ) -> StoreFuture<'_, PaymentRecord>;
    /// Records why a pending payment is still pending (its reserve stays).
    fn note_external(&self, payment_id: String, detail: String, now_ms: i64) -> StoreFuture<'_, PaymentRecord>;
    /// Pending external payments, the least recently asked about first.
    fn pending_external(&self, limit: u32) -> StoreFuture<'_, Vec<ExternalPayment>>;
    /// Open invoices made by the backend's node, not expired before
    /// `since_ms`, after the cursor `after_seq`, in order; with the cursor
    /// of the last one (`None`: none left, start over).
    fn watched_invoices(
        &self,
        after_seq: i64,
        since_ms: i64,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<InvoiceRecord>, Option<i64>)>;
    /// Credits an invoice paid from the Lightning Network to its payee, from
    /// `outside`, exactly once: `false` if it was paid already. An invoice
    /// the sweep expired is credited too: the node's word that the money
    /// arrived wins over the clock.
    fn credit_from_outside(&self, payment_hash: [u8; 32], now_ms: i64) -> StoreFuture<'_, bool>;
    fn payments(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<PaymentRecord>, Option<i64>)>;
    /// In one transaction: forget a refused token, reuse a live one for the
    /// same access, or pay and keep the new token.
    fn pay_l402(&self, pay: L402Pay) -> StoreFuture<'_, L402Attempt>;
    /// The agent's live token whose scope covers `path` on `origin`.
    fn l402_token(
        &self,
        agent_id: String,
        origin: String,
        path: String,
        now_ms: i64,
    ) -> StoreFuture<'_, Option<L402TokenRecord>>;

    fn audit_input(&self) -> StoreFuture<'_, AuditInput>;

    // The constitution.

    fn agent_state(&self, agent_id: String) -> StoreFuture<'_, Option<AgentState>>;
    /// Sets (or with `None` removes) an agent's policy; keeps the usage of
    /// windows the new policy still has.
    fn set_policy(&self, agent_id: String, policy: Option<Policy>, actor: String, now_ms: i64) -> StoreFuture<'_, ()>;
    fn set_frozen(&self, agent_id: String, reason: Option<String>, actor: String, now_ms: i64) -> StoreFuture<'_, ()>;
    fn halted(&self) -> StoreFuture<'_, bool>;
    fn set_halted(&self, halted: bool, actor: String, now_ms: i64) -> StoreFuture<'_, ()>;
    fn approvals(&self, status: Option<ApprovalStatus>, limit: u32) -> StoreFuture<'_, Vec<ApprovalRecord>>;
    /// Approves (pays) or denies (releases) a pending approval.
    fn decide_approval(
        &self,
        id: String,
        approve: bool,
        actor: String,
        now_ms: i64,
    ) -> StoreFuture<'_, ApprovalOutcome>;
    /// Whether a pending approval is past its time. A read: the expiry job
    /// runs every second on every instance and nearly always finds nothing,
    /// and an empty write would still be a commit, which wakes every outbox
    /// watcher (and on PostgreSQL takes the write lock).
    fn approvals_due(&self, now_ms: i64) -> StoreFuture<'_, bool>;
    /// Expires every pending approval past its time; returns how many.
    fn expire_approvals(&self, now_ms: i64) -> StoreFuture<'_, u64>;
    /// Whether an open invoice is due for [`Store::expire_invoices`]: a
    /// read, as [`Store::approvals_due`] is.
    fn invoices_due(&self, now_ms: i64, watched_since_ms: i64) -> StoreFuture<'_, bool>;
    /// Marks open invoices past their expiry `expired`, each with its
    /// `invoice.expired` event in the same transaction, at most
    /// [`INVOICE_EXPIRY_BATCH_MAX`], the first to expire first; returns how
    /// many. An invoice made by the backend's node (watched for a payment
    /// from outside) is left open while the deposit watcher still looks at
    /// it: until it expired before `watched_since_ms`. Conditional on the
    /// invoice still being open, so of several instances sweeping at once
    /// each invoice expires exactly once, and never after it was paid.
    fn expire_invoices(&self, now_ms: i64, watched_since_ms: i64) -> StoreFuture<'_, u64>;
    /// Removes one batch of what retention lets go (`retention.rs`), in one
    /// write transaction.
    fn prune(&self, cutoffs: retention::Cutoffs) -> StoreFuture<'_, retention::Pruned>;
    fn audit_log(&self, filter: AuditFilter, after_seq: i64, limit: u32) -> StoreFuture<'_, Vec<AuditRecord>>;
    /// Every audit record in order, for verifying the chain.
    fn audit_chain(&self) -> StoreFuture<'_, Vec<AuditRecord>>;

    // Chat.

    /// Creates a room, within `room_members` and each member's
    /// `rooms_per_agent`.
    fn create_room(&self, room: RoomRecord, quotas: Quotas) -> StoreFuture<'_, RoomRecord>;
    fn room(&self, id: String) -> StoreFuture<'_, Option<RoomRecord>>;
    /// Rooms with this member, or every room for `None`, oldest first,
    /// after the room `after`, at most `limit`; with the cursor of the next
    /// page.
    fn rooms(
        &self,
        member: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<RoomRecord>, Option<String>)>;
    /// Adds a member (a member already is left as is), within the room's
    /// `room_members` and the newcomer's `rooms_per_agent`.
    fn add_member(&self, room_id: String, member: String, quotas: Quotas, now_ms: i64) -> StoreFuture<'_, ()>;
    /// Removes a member, with its `room.member_removed` event; `false` if it
    /// was not one.
    fn remove_member(&self, room_id: String, member: String, now_ms: i64) -> StoreFuture<'_, bool>;
    /// Counts one denial toward the agent's breaker (for limits it keeps
    /// hitting), which may trip it.
    fn observe_limit_denial(&self, agent_id: String, now_ms: i64) -> StoreFuture<'_, ()>;
    /// Posts a message, with its invoice for a payment request, atomically.
    fn post_message(&self, message: NewMessage) -> StoreFuture<'_, MessageRecord>;
    /// Messages after `after_id`, oldest first.
    fn messages(&self, room_id: String, after_id: i64, limit: u32) -> StoreFuture<'_, Vec<MessageRecord>>;
    fn message(&self, room_id: String, id: i64) -> StoreFuture<'_, Option<MessageRecord>>;
    fn chat_settings(&self, agent_id: String) -> StoreFuture<'_, ChatSettings>;
    /// Sets an agent's chat settings, with their `chat.settings_updated`
    /// event.
    fn set_chat_settings(&self, agent_id: String, settings: ChatSettings, now_ms: i64) -> StoreFuture<'_, ()>;
    fn incoming(&self, payee_agent_id: String, status: Option<IncomingStatus>) -> StoreFuture<'_, Vec<IncomingRecord>>;
    /// Accepts (releases to the payee) or rejects (refunds the payer) a
    /// pending incoming payment of this payee.
    fn decide_incoming(
        &self,
        payee_agent_id: String,
        payment_id: String,
        accept: bool,
        key_id: String,
        now_ms: i64,
    ) -> StoreFuture<'_, IncomingRecord>;

    // The outbox and its deliveries.
    /// Events with an id above `after_id`, oldest first: all of them, or
    /// those of one agent.
    fn events(&self, after_id: i64, agent_id: Option<String>, limit: u32) -> StoreFuture<'_, Vec<EventRecord>>;
    /// The id of the newest event, 0 when there is none.
    fn newest_event_id(&self) -> StoreFuture<'_, i64>;
    /// Changes after every commit of this process, so watchers of the outbox
    /// wake at once; commits of other instances are found by polling.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Takes or renews the lease `name` for `owner` until `now_ms +
    /// lease_ms` when it is free, expired or `owner`'s already, and answers
    /// the lease's cursor; `None` while another owner holds it. A lease keeps
    /// one instance of a gateway doing a background job at a time.
    fn claim_lease(&self, name: String, owner: String, now_ms: i64, lease_ms: i64) -> StoreFuture<'_, Option<i64>>;
    /// Moves the cursor of lease `name` to `cursor`, only while `owner`
    /// holds it; answers whether it did.
    fn advance_lease(&self, name: String, owner: String, cursor: i64) -> StoreFuture<'_, bool>;
    /// Stores a webhook with its `webhook.created` event; its delivery
    /// starts after that event (the answer has the cursor it got).
    fn create_webhook(&self, webhook: WebhookRecord) -> StoreFuture<'_, WebhookRecord>;
    /// The webhooks of one agent, or (`None`) all of them.
    fn webhooks(&self, owner: Option<String>) -> StoreFuture<'_, Vec<WebhookRecord>>;
    fn webhook(&self, id: String) -> StoreFuture<'_, Option<WebhookRecord>>;
    /// Deletes a webhook and its log, with its `webhook.deleted` event.
    fn delete_webhook(&self, id: String, now_ms: i64) -> StoreFuture<'_, bool>;
    /// Sets a webhook's delivery state (a resume clears the pause, with a
    /// `webhook.resumed` event).
    fn set_webhook_state(&self, id: String, state: WebhookState, now_ms: i64) -> StoreFuture<'_, ()>;
    /// Logs an attempt and sets the webhook's new state, in one transaction
    /// (with a `webhook.paused` event when this attempt pauses it).
    fn record_delivery(&self, delivery: DeliveryRecord, state: WebhookState) -> StoreFuture<'_, ()>;
    /// A webhook's attempts, newest first.
    fn deliveries(&self, webhook_id: String, limit: u32) -> StoreFuture<'_, Vec<DeliveryRecord>>;
}

/// Writes the `invoice.expired` event of an invoice the sweep expired, in
/// the sweep's transaction. A deposit to the treasury is the operator's
/// (no agent).
pub(crate) fn emit_invoice_expired(tx: &mut dyn Tx, invoice: &InvoiceRecord, now_ms: i64) -> Result<(), Error> {
    let event = crate::events::Event::InvoiceExpired(invoice.into());
    crate::events::emit(tx, &event, now_ms)
}

/// Writes the event of a change to a webhook subscription, in the change's
/// transaction: its owner agent's event, or (no owner) the operator's. The
/// URL stays out: it may carry the receiver's token.
pub(crate) fn emit_webhook_event(
    tx: &mut dyn Tx,
    kind: &str,
    webhook: &WebhookRecord,
    state: WebhookState,
    now_ms: i64,
) -> Result<(), Error> {
    use crate::events::kind::{WebhookChange, WebhookEvent};
    let which = WebhookEvent::from_kind(kind).ok_or_else(|| Error::Internal(format!("no webhook event {kind}")))?;
    let change = WebhookChange {
        webhook_id: webhook.id.clone(),
        owner: webhook.owner.clone(),
        types: webhook.types.clone(),
        failures: state.failures,
        paused: state.paused,
    };
    crate::events::emit(tx, &which.event(change), now_ms)
}

/// The event a change of a webhook's delivery state calls for, if any.
pub(crate) fn webhook_state_event(before: WebhookState, after: WebhookState) -> Option<&'static str> {
    match (before.paused, after.paused) {
        (false, true) => Some(crate::events::kind::WebhookEvent::Paused.kind()),
        (true, false) => Some(crate::events::kind::WebhookEvent::Resumed.kind()),
        _ => None,
    }
}

/// The operations of one open store transaction that the payment flows
/// (`payment`) are written against, so each backend runs the same
/// flow. Every method is part of the caller's transaction.
pub trait Tx {
    fn balance(&mut self, account: AccountId) -> Result<Balance, Error>;
    fn save_balance(&mut self, account: AccountId, balance: &Balance) -> Result<(), Error>;
    fn insert_transfer(&mut self, transfer: &Transfer, kind: &str, now_ms: i64) -> Result<i64, Error>;
    /// An invoice of this gateway and the payee's account.
    fn invoice(&mut self, payment_hash: &[u8; 32]) -> Result<Option<(InvoiceRecord, AccountId)>, Error>;
    fn mark_invoice_paid(&mut self, payment_hash: &[u8; 32], payer_agent_id: &str, now_ms: i64) -> Result<(), Error>;
    fn insert_payment(&mut self, payment: &PaymentRecord, key_id: &str, transfer_id: Option<i64>) -> Result<(), Error>;
    fn payment(&mut self, id: &str) -> Result<Option<PaymentRecord>, Error>;
    /// Writes a payment's status, fee, preimage and detail (and its transfer
    /// once it moved money).
    fn update_payment(&mut self, payment: &PaymentRecord, transfer_id: Option<i64>) -> Result<(), Error>;
    fn insert_external(&mut self, external: &ExternalPayment) -> Result<(), Error>;
    fn external(&mut self, payment_id: &str) -> Result<Option<ExternalPayment>, Error>;
    /// The pending or succeeded external payment of this payment hash.
    fn live_external(&mut self, payment_hash: &[u8; 32]) -> Result<Option<ExternalPayment>, Error>;
    fn update_external(&mut self, external: &ExternalPayment, now_ms: i64) -> Result<(), Error>;
    /// Marks an open (or swept as expired) invoice paid from the Lightning
    /// Network: `false` if it was paid already.
    fn mark_invoice_paid_from_outside(&mut self, payment_hash: &[u8; 32], now_ms: i64) -> Result<bool, Error>;
    /// `(request digest, id of the payment or approval it made)`.
    fn idempotency(&mut self, agent_id: &str, key: &str) -> Result<Option<([u8; 32], String)>, Error>;
    fn insert_idempotency(
        &mut self,
        agent_id: &str,
        idem: &Idempotency,
        target_id: &str,
        now_ms: i64,
    ) -> Result<(), Error>;
    fn halted(&mut self) -> Result<bool, Error>;
    fn agent_state(&mut self, agent_id: &str) -> Result<Option<AgentState>, Error>;
    /// Persists the usage and breaker state of an agent.
    fn save_agent_state(&mut self, state: &AgentState) -> Result<(), Error>;
    fn set_frozen(&mut self, agent_id: &str, reason: Option<&str>, now_ms: i64) -> Result<(), Error>;
    fn insert_approval(&mut self, approval: &ApprovalRecord) -> Result<(), Error>;
    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error>;
    /// A pending hold of a payment to the invoice with this hash, by
    /// `payer` or by anyone. A payer holds an invoice once (a second hold
    /// would reserve the money twice for an invoice paid once); an outside
    /// invoice is held once in all.
    fn held(&mut self, payment_hash: &[u8; 32], payer: Option<&str>) -> Result<Option<ApprovalRecord>, Error>;
    fn update_approval(&mut self, approval: &ApprovalRecord) -> Result<(), Error>;
    /// Appends to the hash-chained audit trail.
    fn audit(&mut self, entry: &AuditEntry) -> Result<(), Error>;
    /// Whether the agent acknowledges incoming payments itself.
    fn acknowledges_incoming(&mut self, agent_id: &str) -> Result<bool, Error>;
    /// Inserts or updates an incoming payment's record.
    fn save_incoming(&mut self, incoming: &IncomingRecord) -> Result<(), Error>;
    /// The live tokens of an agent on an origin (at most
    /// [`L402_TOKENS_PER_ORIGIN_MAX`]).
    fn l402_tokens(&mut self, agent_id: &str, origin: &str, now_ms: i64) -> Result<Vec<L402TokenRecord>, Error>;
    /// Keeps a token, replacing one of the same scope and dropping expired
    /// ones of the origin.
    fn save_l402_token(&mut self, token: &L402TokenRecord, now_ms: i64) -> Result<(), Error>;
    fn forget_l402_token(&mut self, agent_id: &str, origin: &str, token: &str) -> Result<(), Error>;
    /// Counts rows for a quota, at most `cap` of them (see [`quota::Counted`]).
    fn count(&mut self, counted: quota::Counted<'_>, cap: u32) -> Result<quota::Count, Error>;
    /// Writes an event to the outbox, in this transaction.
    fn emit(&mut self, kind: &str, agent_id: Option<&str>, data: &serde_json::Value, now_ms: i64) -> Result<(), Error>;
}
