//! Storage: a store runs operations in transactions ([`Store`]); what an
//! operation does to the rows goes through [`Tx`].
//!
//! - `sql/`: the row operations, written once in SQL both backends read
//!   (`tx.rs`), and rows to records (`rows.rs`);
//! - `sqlite/` and `postgres/`: each a connection for that SQL, its writer
//!   (group commit: many operations, one transaction, one sync), readers,
//!   locking and schema, and nothing else;
//! - `quota.rs` and `retention.rs`: the counted bounds and what retention
//!   removes, also shared.
//!
//! A write either happens whole, with its ledger postings, its event and its
//! audit entry, or not at all, and is answered only once durable. The
//! compound operations themselves (a payment, a funding, a sweep) live above
//! the store, in `payment/` and `gateway/ops/`, written once against `Tx`.

mod commit;
pub mod postgres;
pub mod quota;
pub mod retention;
pub mod sql;
pub mod sqlite;

/// The schema version this build writes, on either store: both number
/// their migrations alike (a migration one store does not need is empty
/// there), so that one number names a build's schema.
pub const SCHEMA_VERSION: usize = sqlite::schema::VERSION;
const _: () = assert!(postgres::schema::VERSION == SCHEMA_VERSION, "the stores' schema versions differ");

/// The outbox consumers whose backlog `/metrics` shows, at most: their
/// names are set by the code (webhooks, each bus, each bridge), so this is
/// a guard, not a limit anyone reaches.
pub const GAUGE_CONSUMERS_MAX: u32 = 32;

use crate::model::*;

use crate::error::Error;
use crate::secrets::SecretDigest;
use coffer_core::{AccountId, Balance, Transfer};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// What an operation answers, carried type-erased through a backend's
/// queue (see `store.write`).
pub type Answer = Box<dyn Any + Send>;
/// An operation to run in a write transaction.
pub type WriteOp = Box<dyn FnMut(&mut dyn Tx) -> Result<Answer, Error> + Send>;
/// An operation to run in a read transaction. A backend may run it again
/// on a new connection when the first was lost (a read changes nothing).
pub type ReadOp = Box<dyn FnMut(&mut dyn Tx) -> Result<Answer, Error> + Send>;

/// A store runs operations in transactions; what they do to the rows is
/// [`Tx`]'s. Callers use `store.write(|tx| …)` and `store.read(|tx| …)` (on `dyn Store`).
pub trait Store: Send + Sync + 'static {
    /// Whether other processes may write this store too (several gateway
    /// instances on one database): process-local caches must then refresh.
    fn shared(&self) -> bool {
        false
    }

    /// Runs `op` in a write transaction: all of it commits, durably, or
    /// none of it does (an error rolls it back). Resolves once committed.
    fn write_tx(&self, op: WriteOp) -> StoreFuture<'_, Answer>;

    /// Runs `op` in a read transaction: one consistent snapshot.
    fn read_tx(&self, op: ReadOp) -> StoreFuture<'_, Answer>;

    /// Changes once this process's commits can be read from the outbox
    /// (once sealed, where the store seals), so its watchers wake at once;
    /// commits of other instances are found by polling.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Resolves once every write committed before the call is numbered in
    /// the ordered logs (the audit chain, the event outbox), so a read that
    /// follows sees it there. A store that numbers them as it writes them
    /// (one writer) has nothing to wait for; PostgreSQL, whose instances
    /// commit in any order, seals them after commit (`postgres/seal.rs`).
    fn sealed(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

impl dyn Store {
    /// Runs `op` in a write transaction (see [`Store::write_tx`]).
    pub async fn write<T, F>(&self, mut op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
    {
        let answer = self.write_tx(Box::new(move |tx| op(tx).map(|t| Box::new(t) as Answer))).await?;
        unbox(answer)
    }

    /// Runs `op` in a read transaction (see [`Store::read_tx`]).
    pub async fn read<T, F>(&self, mut op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
    {
        let answer = self.read_tx(Box::new(move |tx| op(tx).map(|t| Box::new(t) as Answer))).await?;
        unbox(answer)
    }
}

fn unbox<T: 'static>(answer: Answer) -> Result<T, Error> {
    answer.downcast::<T>().map(|t| *t).map_err(|_| Error::Internal("a store answered another type".into()))
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
    /// Appends an event to the outbox, in this transaction (the domain
    /// writes typed events through `events::emit`).
    fn insert_event(
        &mut self,
        kind: &str,
        agent_id: Option<&str>,
        data: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), Error>;

    // The gateway's own settings.
    fn operator_digest(&mut self) -> Result<Option<SecretDigest>, Error>;
    fn set_operator_digest(&mut self, digest: &SecretDigest) -> Result<(), Error>;
    fn set_halted(&mut self, halted: bool) -> Result<(), Error>;
    /// Writes the readiness probe's own row (`meta` key `ready_probe`, the
    /// time): a real write, so that it fails when the store cannot write.
    fn write_ready_probe(&mut self, now_ms: i64) -> Result<(), Error>;

    // Accounts, agents and keys.
    /// Opens a new wallet account (empty) and answers its id.
    fn insert_wallet_account(&mut self) -> Result<AccountId, Error>;
    fn insert_agent(&mut self, agent: &NewAgent, account: AccountId, now_ms: i64) -> Result<(), Error>;
    fn agent(&mut self, id: &str) -> Result<Option<AgentRecord>, Error>;
    /// Every agent, oldest first.
    fn agents(&mut self) -> Result<Vec<AgentRecord>, Error>;
    /// Sets (or, `None`, clears) an agent's policy as its JSON; the
    /// revision moves on, so no cache serves the old one.
    fn set_policy(&mut self, agent_id: &str, policy_json: Option<&str>) -> Result<(), Error>;
    fn chat_settings(&mut self, agent_id: &str) -> Result<Option<ChatSettings>, Error>;
    fn set_chat_settings(&mut self, agent_id: &str, settings: &ChatSettings) -> Result<(), Error>;
    fn insert_key(&mut self, key: &NewKey, now_ms: i64) -> Result<(), Error>;
    /// A key that is not revoked.
    fn live_key(&mut self, key_id: &str) -> Result<Option<KeyRecord>, Error>;
    fn live_keys(&mut self) -> Result<Vec<KeyRecord>, Error>;
    /// The live key whose secret has this digest (expired or not).
    fn live_key_by_digest(&mut self, digest: &SecretDigest) -> Result<Option<KeyRecord>, Error>;
    fn revoke_key(&mut self, key_id: &str, now_ms: i64) -> Result<(), Error>;
    fn insert_signing_key(&mut self, key: &SigningKeyRecord) -> Result<(), Error>;
    /// An agent's signing keys, revoked ones included, newest first (at most
    /// `limit`).
    fn signing_keys_of(&mut self, agent_id: &str, limit: u32) -> Result<Vec<SigningKeyRecord>, Error>;
    /// Every signing key that is not revoked.
    fn live_signing_keys(&mut self) -> Result<Vec<SigningKeyRecord>, Error>;
    /// One agent's signing keys that are not revoked.
    fn live_signing_keys_of(&mut self, agent_id: &str) -> Result<Vec<SigningKeyRecord>, Error>;
    /// Revokes a live signing key of the agent; whether there was one.
    fn revoke_signing_key(&mut self, agent_id: &str, key_id: &str, now_ms: i64) -> Result<bool, Error>;
    fn insert_nwc_connection(&mut self, connection: &NwcConnectionRecord) -> Result<(), Error>;
    /// An agent's NWC connections, revoked ones included, newest first (at
    /// most `limit`). In a write, the agent is locked first: counted against
    /// its bound before one more is added.
    fn nwc_connections_of(&mut self, agent_id: &str, limit: u32) -> Result<Vec<NwcConnectionRecord>, Error>;
    /// The connection of this client key, live or not.
    fn nwc_connection_by_client(&mut self, client_pubkey: &[u8; 32]) -> Result<Option<NwcConnectionRecord>, Error>;
    /// Revokes a live connection of the agent; whether there was one.
    fn revoke_nwc_connection(&mut self, agent_id: &str, connection_id: &str, now_ms: i64) -> Result<bool, Error>;
    /// Takes a request event for a connection and marks the connection used:
    /// `false` if the event was taken before (by this or another instance).
    fn take_nwc_request(&mut self, event_id: &[u8; 32], connection_id: &str, now_ms: i64) -> Result<bool, Error>;
    /// Forgets up to `limit` requests taken before `before_ms`; how many.
    fn prune_nwc_requests(&mut self, before_ms: i64, limit: u32) -> Result<u64, Error>;
    fn insert_link_code(&mut self, code: &LinkCodeRecord) -> Result<(), Error>;
    /// Forgets an agent's expired link codes and counts its live ones; in a
    /// write, the agent is locked first.
    fn live_link_codes(&mut self, agent_id: &str, now_ms: i64) -> Result<u32, Error>;
    /// Takes a live link code (it is used up): `None` if there is none.
    fn take_link_code(&mut self, digest: &[u8; 32], now_ms: i64) -> Result<Option<LinkCodeRecord>, Error>;
    /// Links a messenger user, replacing the user's link if there was one.
    fn put_bridge_link(&mut self, link: &BridgeLinkRecord) -> Result<(), Error>;
    fn bridge_link(&mut self, messenger: &str, user_id: &str) -> Result<Option<BridgeLinkRecord>, Error>;
    /// An agent's (or the operator's) linked users, oldest first.
    fn bridge_links_of(&mut self, agent_id: &str, limit: u32) -> Result<Vec<BridgeLinkRecord>, Error>;
    /// Unlinks a user (of `agent_id` only, when given); whether it was linked.
    fn delete_bridge_link(&mut self, messenger: &str, user_id: &str, agent_id: Option<&str>) -> Result<bool, Error>;
    /// Bridges a room to a chat, replacing the room's chat on that
    /// messenger; a chat already bridged to another room is a conflict.
    fn put_room_bridge(&mut self, bridge: &RoomBridgeRecord) -> Result<(), Error>;
    fn room_bridges(&mut self, room_id: &str) -> Result<Vec<RoomBridgeRecord>, Error>;
    fn room_bridge_of_chat(&mut self, messenger: &str, chat_id: &str) -> Result<Option<RoomBridgeRecord>, Error>;
    fn delete_room_bridge(&mut self, room_id: &str, messenger: &str) -> Result<bool, Error>;
    /// Records what a bridge posted for a room's message: `false` if it had
    /// posted it before.
    fn insert_bridge_post(&mut self, post: &BridgePostRecord) -> Result<bool, Error>;
    fn bridge_post(
        &mut self,
        messenger: &str,
        room_id: &str,
        message_id: i64,
    ) -> Result<Option<BridgePostRecord>, Error>;
    fn bridge_post_by_external(
        &mut self,
        messenger: &str,
        chat_id: &str,
        external_id: &str,
    ) -> Result<Option<BridgePostRecord>, Error>;
    /// The cards of a payment request, on every bridge.
    fn bridge_posts_of_hash(&mut self, payment_hash: &[u8; 32]) -> Result<Vec<BridgePostRecord>, Error>;
    /// Where a bridge's reading of its messenger stands (the messenger's own
    /// token), kept in `meta`.
    fn bridge_cursor(&mut self, messenger: &str) -> Result<Option<String>, Error>;
    fn set_bridge_cursor(&mut self, messenger: &str, cursor: &str) -> Result<(), Error>;
    /// Every account's balance and the posted totals of all transfers: one
    /// snapshot, for `coffer audit`.
    fn audit_input(&mut self) -> Result<AuditInput, Error>;

    // Invoices and payments.
    /// Stores a new invoice (`open`) under its payee's account.
    fn insert_invoice(&mut self, invoice: &InvoiceRecord) -> Result<(), Error>;
    /// An agent's invoices, newest first, with the cursor of the next page.
    fn invoices(&mut self, agent_id: &str, page: PageRequest) -> Result<(Vec<InvoiceRecord>, Option<i64>), Error>;
    /// Open invoices of a funding source's node created after `after_seq`
    /// that expire at or after `since_ms`, with the last one's place.
    fn watched_invoices(
        &mut self,
        after_seq: i64,
        since_ms: i64,
        limit: u32,
    ) -> Result<(Vec<InvoiceRecord>, Option<i64>), Error>;
    /// Whether an open invoice is due for the sweep (`watched_since_ms`:
    /// an invoice a funding source's node made stays open until the
    /// deposit watcher is past its expiry).
    fn invoices_due(&mut self, now_ms: i64, watched_since_ms: i64) -> Result<bool, Error>;
    /// Marks at most `limit` due invoices expired, in one conditional
    /// statement (one paid meanwhile is not expired), and answers them in
    /// their order of creation.
    fn expire_invoices(&mut self, now_ms: i64, watched_since_ms: i64, limit: u32) -> Result<Vec<InvoiceRecord>, Error>;
    /// An agent's payments, newest first, with the cursor of the next page.
    fn payments(&mut self, agent_id: &str, page: PageRequest) -> Result<(Vec<PaymentRecord>, Option<i64>), Error>;
    /// Pending outside payments, the least recently checked first.
    fn pending_external(&mut self, limit: u32) -> Result<Vec<ExternalPayment>, Error>;

    // Approvals and incoming payments.
    fn approvals(&mut self, status: Option<ApprovalStatus>, limit: u32) -> Result<Vec<ApprovalRecord>, Error>;
    fn approvals_due(&mut self, now_ms: i64) -> Result<bool, Error>;
    /// Pending approvals past their time, the oldest deadline first.
    fn due_approvals(&mut self, now_ms: i64, limit: u32) -> Result<Vec<ApprovalRecord>, Error>;
    fn incoming(&mut self, payee_agent_id: &str, status: Option<IncomingStatus>) -> Result<Vec<IncomingRecord>, Error>;
    fn incoming_payment(&mut self, payment_id: &str) -> Result<Option<IncomingRecord>, Error>;

    // The audit trail.
    fn audit_log(&mut self, filter: &AuditFilter, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, Error>;
    /// The whole chain, in order.
    fn audit_chain(&mut self) -> Result<Vec<AuditRecord>, Error>;
    /// An agent's audit records of one action at one time (the decision a
    /// signed receipt names), oldest first, at most `limit`: read through
    /// the agent's index, for one receipt at a time.
    fn audit_at(&mut self, agent_id: &str, action: &str, at_ms: i64, limit: u32) -> Result<Vec<AuditRecord>, Error>;
    /// When an external payment succeeded (its last update), if it did.
    fn external_settled_at(&mut self, payment_id: &str) -> Result<Option<i64>, Error>;

    // Rooms and messages.
    fn insert_room(&mut self, room: &RoomRecord) -> Result<(), Error>;
    fn room(&mut self, id: &str) -> Result<Option<RoomRecord>, Error>;
    /// Rooms with this member (or all), oldest first, after the room
    /// `after`; with the cursor of the next page.
    fn rooms(
        &mut self,
        member: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<RoomRecord>, Option<String>), Error>;
    /// Adds a member; one already there stays as it is.
    fn add_member(&mut self, room_id: &str, member: &str, now_ms: i64) -> Result<(), Error>;
    /// `false` if it was not a member.
    fn remove_member(&mut self, room_id: &str, member: &str) -> Result<bool, Error>;
    /// Stores a message (its invoice stored already) and answers its id.
    fn insert_message(&mut self, message: &NewMessage, kind: MessageKind) -> Result<i64, Error>;
    /// A room's messages after `after_id`, oldest first.
    fn messages(&mut self, room_id: &str, after_id: i64, limit: u32) -> Result<Vec<MessageRecord>, Error>;
    fn message(&mut self, room_id: &str, id: i64) -> Result<Option<MessageRecord>, Error>;

    // The outbox and its consumers.
    /// Events with an id above `after_id`, oldest first: all, or one agent's.
    fn events(&mut self, after_id: i64, agent_id: Option<&str>, limit: u32) -> Result<Vec<EventRecord>, Error>;
    /// The id of the newest event, 0 when there is none.
    fn newest_event_id(&mut self) -> Result<i64, Error>;
    /// What `/metrics` shows of the store: pending approvals, open holds
    /// and escrows, frozen agents, and each outbox consumer's backlog (at
    /// most [`GAUGE_CONSUMERS_MAX`] consumers). One statement each, read at
    /// scrape time.
    fn gauges(&mut self) -> Result<crate::metrics::StoreGauges, Error>;
    /// Takes or renews lease `name` for `owner` until `now_ms + lease_ms`
    /// when it is free, expired or `owner`'s; answers its cursor, `None`
    /// while another owner holds it.
    fn claim_lease(&mut self, name: &str, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<i64>, Error>;
    /// Moves the lease's cursor, only while `owner` holds it.
    fn advance_lease(&mut self, name: &str, owner: &str, cursor: i64) -> Result<bool, Error>;
    fn insert_webhook(&mut self, webhook: &WebhookRecord) -> Result<(), Error>;
    /// One agent's webhooks, or (`None`) all.
    fn webhooks(&mut self, owner: Option<&str>) -> Result<Vec<WebhookRecord>, Error>;
    fn webhook(&mut self, id: &str) -> Result<Option<WebhookRecord>, Error>;
    /// Deletes a webhook and its delivery log; `false` if there was none.
    fn delete_webhook(&mut self, id: &str) -> Result<bool, Error>;
    fn save_webhook_state(&mut self, id: &str, state: &WebhookState) -> Result<(), Error>;
    fn insert_delivery(&mut self, delivery: &DeliveryRecord) -> Result<(), Error>;
    /// A webhook's attempts, newest first.
    fn deliveries(&mut self, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>, Error>;

    // Trade between agents: money that waits, sessions, refunds.
    /// Moves an invoice from status `from` to `to`, naming its payer and
    /// the time it was paid where given; `false` if it was not in `from`.
    fn move_invoice(
        &mut self,
        payment_hash: &[u8; 32],
        from: StoredInvoiceStatus,
        to: StoredInvoiceStatus,
        paid_by: Option<&str>,
        paid_at_ms: Option<i64>,
    ) -> Result<bool, Error>;
    fn insert_escrow(&mut self, escrow: &EscrowRecord) -> Result<(), Error>;
    fn escrow(&mut self, payment_id: &str) -> Result<Option<EscrowRecord>, Error>;
    fn escrow_by_hash(&mut self, payment_hash: &[u8; 32]) -> Result<Option<EscrowRecord>, Error>;
    /// Writes an escrow's status and resolution, only while it is in
    /// status `from`: `false` if another decision came first.
    fn update_escrow(&mut self, escrow: &EscrowRecord, from: EscrowStatus) -> Result<bool, Error>;
    /// Whether a held escrow's deadline has come (an agent's: not a hold
    /// paid from outside, [`OUTSIDE_PAYER`](crate::model::OUTSIDE_PAYER),
    /// whose deadline the backend's node applies first).
    fn escrows_due(&mut self, now_ms: i64) -> Result<bool, Error>;
    /// Held escrows of agents past their deadline, the oldest deadline
    /// first (not the holds paid from outside).
    fn due_escrows(&mut self, now_ms: i64, limit: u32) -> Result<Vec<EscrowRecord>, Error>;
    /// Held holds paid from outside (payer
    /// [`OUTSIDE_PAYER`](crate::model::OUTSIDE_PAYER)) past their deadline,
    /// the oldest deadline first: each is cancelled at the backend, then
    /// here.
    fn due_outside_holds(&mut self, now_ms: i64, limit: u32) -> Result<Vec<EscrowRecord>, Error>;
    /// Escrows the agent pays or is paid by (or all), in a status (or any),
    /// newest first.
    fn escrows(
        &mut self,
        agent_id: Option<&str>,
        status: Option<EscrowStatus>,
        limit: u32,
    ) -> Result<Vec<EscrowRecord>, Error>;
    fn insert_session(&mut self, session: &SessionRecord) -> Result<(), Error>;
    fn session(&mut self, id: &str) -> Result<Option<SessionRecord>, Error>;
    /// Writes what a session charged and how it ended, only while it is in
    /// status `from`: `false` if it was not.
    fn update_session(&mut self, session: &SessionRecord, from: SessionStatus) -> Result<bool, Error>;
    fn sessions_due(&mut self, now_ms: i64) -> Result<bool, Error>;
    /// Open sessions past their expiry, the oldest expiry first.
    fn due_sessions(&mut self, now_ms: i64, limit: u32) -> Result<Vec<SessionRecord>, Error>;
    /// Sessions an agent pays or is paid by, newest first, with the cursor
    /// of the next page.
    fn sessions(&mut self, agent_id: &str, page: PageRequest) -> Result<(Vec<SessionRecord>, Option<i64>), Error>;
    fn insert_charge(&mut self, charge: &ChargeRecord, transfer_id: i64) -> Result<(), Error>;
    fn charge(&mut self, id: &str) -> Result<Option<ChargeRecord>, Error>;
    /// A session's newest `limit` charges, oldest first.
    fn charges(&mut self, session_id: &str, limit: u32) -> Result<Vec<ChargeRecord>, Error>;
    fn insert_refund(&mut self, refund: &RefundRecord, transfer_id: i64) -> Result<(), Error>;
    fn refund(&mut self, id: &str) -> Result<Option<RefundRecord>, Error>;
    /// A payment's refunds, oldest first.
    fn refunds(&mut self, payment_id: &str) -> Result<Vec<RefundRecord>, Error>;

    /// Adds a settled spend to the maintained totals: its payee row, its
    /// task's row and one row per tag, of its agent and day.
    fn add_spend(&mut self, spend: &Spend<'_>) -> Result<(), Error>;
    /// The maintained totals `query` asks for.
    fn spend_totals(&mut self, query: &SpendQuery) -> Result<Vec<SpendTotal>, Error>;

    /// Removes one bounded batch of what retention may remove.
    fn prune(&mut self, cutoffs: &retention::Cutoffs) -> Result<retention::Pruned, Error>;
}
