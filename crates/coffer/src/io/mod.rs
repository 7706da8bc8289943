//! Storage: one trait, one file per backend.
//!
//! Every method that changes state is one atomic transaction: it either
//! happens whole, with its ledger postings and its event, or not at all. A
//! method returns only after its transaction is durable, so an acknowledged
//! request survives a crash of the process.

pub mod sqlite_store;

use crate::error::Error;
use crate::secrets::SecretDigest;
use coffer_client::Scope;
use coffer_core::{AccountId, Balance, Msat};
use std::future::Future;
use std::pin::Pin;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The most rows one listing call returns.
pub const PAGE_LIMIT_MAX: u32 = 200;

#[derive(Clone, Debug)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub account: AccountId,
    pub balance: Balance,
    pub created_at_ms: i64,
}

/// A key as the authenticator needs it.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    pub id: String,
    pub agent_id: String,
    pub account: AccountId,
    pub scope: Scope,
    pub digest: SecretDigest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredInvoiceStatus {
    Open,
    Paid,
}

#[derive(Clone, Debug)]
pub struct InvoiceRecord {
    pub payment_hash: [u8; 32],
    pub agent_id: String,
    pub amount: Msat,
    pub memo: String,
    pub bolt11: String,
    pub preimage: [u8; 32],
    pub status: StoredInvoiceStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub paid_at_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: String,
    pub agent_id: String,
    pub payment_hash: [u8; 32],
    pub amount: Msat,
    pub fee: Msat,
    pub status: coffer_client::PaymentStatus,
    pub purpose: String,
    pub payee_agent_id: Option<String>,
    pub preimage: Option<[u8; 32]>,
    pub created_at_ms: i64,
}

/// Who pays: the agent's wallet and the key that asked.
#[derive(Clone, Debug)]
pub struct Payer {
    pub agent_id: String,
    pub account: AccountId,
    pub key_id: String,
}

/// An internal payment: settle an invoice of this gateway.
#[derive(Clone, Debug)]
pub struct PayInternal {
    pub payment_id: String,
    pub payer: Payer,
    /// Lower case; must equal the stored invoice's text.
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    pub purpose: String,
    pub idempotency: Option<Idempotency>,
    pub now_ms: i64,
}

#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the request, to tell a retry from a different request.
    pub request_digest: [u8; 32],
}

/// The outcome of [`Store::pay_internal`] for an invoice that is not ours.
#[derive(Debug)]
pub enum PayAttempt {
    Paid(PaymentRecord),
    /// No invoice of this gateway has that payment hash.
    NotOurs,
}

/// Which listing page: rows older than `before` (a cursor from the previous
/// page), at most `limit`.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub before: Option<i64>,
    pub limit: u32,
}

/// What `coffer audit` needs from a store.
pub struct AuditInput {
    pub accounts: Vec<(AccountId, Balance)>,
    /// Posted totals per account recomputed from the transfers.
    pub sums: coffer_core::ledger::TransferSums,
}

pub trait Store: Send + Sync + 'static {
    fn operator_digest(&self) -> StoreFuture<'_, Option<SecretDigest>>;
    fn set_operator_digest(&self, digest: SecretDigest) -> StoreFuture<'_, ()>;

    fn create_agent(&self, id: String, name: String, key: NewKey, now_ms: i64) -> StoreFuture<'_, AgentRecord>;
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
        transfer: coffer_core::Transfer,
        kind: &'static str,
        now_ms: i64,
    ) -> StoreFuture<'_, (i64, Balance)>;
    fn balance(&self, account: AccountId) -> StoreFuture<'_, Balance>;

    fn insert_invoice(&self, invoice: InvoiceRecord) -> StoreFuture<'_, ()>;
    fn invoice(&self, payment_hash: [u8; 32]) -> StoreFuture<'_, Option<InvoiceRecord>>;
    fn invoices(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<InvoiceRecord>, Option<i64>)>;

    fn pay_internal(&self, pay: PayInternal) -> StoreFuture<'_, PayAttempt>;
    fn payments(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<PaymentRecord>, Option<i64>)>;

    fn audit_input(&self) -> StoreFuture<'_, AuditInput>;
}

/// A key to store: its digest only, never the secret.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub id: String,
    pub agent_id: String,
    pub scope: Scope,
    pub digest: SecretDigest,
}
