//! The gateway's operations: what the HTTP handlers, the CLI and (later) MCP
//! call. Each validates its input, then makes one atomic store call.
//! Agents, keys, funds, invoices and payments are here; the constitution and
//! chat have a file each.

pub mod attribution;
mod auth;
pub mod bridge;
mod chat;
pub mod clock;
mod commerce;
mod constitution;
mod events;
pub mod l402;
mod lightning;
mod metered;
pub mod nwc;
pub mod ops;
mod outside_holds;
mod preview;
mod rate;
pub mod reports;
pub mod retention;
pub mod signing;
pub mod text;

pub use commerce::{ESCROWS_LISTED_MAX, PaymentView};
pub use events::EventFollower;
pub use lightning::run_background;

pub use chat::{AUTO_PAY_KEY_ID, MESSAGE_LEN_MAX_BYTES, ROOM_MEMBERS_MAX, RoomMessage};
pub use clock::{Clock, DevClock, SystemClock};

use crate::error::Error;
use crate::model::{
    AgentRecord, AgentState, ApprovalOutcome, ApprovalRecord, ApprovalStatus, AuditFilter, AuditRecord, ChatSettings,
    Idempotency, InvoiceRecord, KeyRecord, MessageRecord, NewAgent, NewKey, NewMessage, OPERATOR, PageRequest,
    PayAttempt, PayInternal, Payer, PaymentRecord, RoomRecord,
};
use crate::payment::bolt11::{self, Network, NodeSigner, ParsedInvoice};
use crate::quota::Quotas;
use crate::secrets::{self, SecretDigest};
use crate::store::Store;
use coffer_client::Scope;
use coffer_core::ledger::AuditReport;
use coffer_core::policy::{BudgetReport, Policy, budget_report};
use coffer_core::{AccountId, Balance, Msat, Transfer};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub const AGENT_NAME_LEN_MAX_CHARS: usize = 64;
pub const PURPOSE_LEN_MAX_BYTES: usize = 512;
pub const IDEMPOTENCY_KEY_LEN_MAX_BYTES: usize = 128;
/// Batches of [`crate::model::INVOICE_EXPIRY_BATCH_MAX`] invoices one sweep
/// step expires at most: a backlog (after a long stop) drains over several
/// steps instead of holding up the writer at once.
const INVOICE_EXPIRY_BATCHES_PER_STEP_MAX: u32 = 8;
// A field at its bound fits a request body (UTF-8 takes up to 4 bytes a
// character).
const _: () = assert!(4 * AGENT_NAME_LEN_MAX_CHARS < crate::limits::BODY_LEN_MAX_BYTES);
const _: () = assert!(PURPOSE_LEN_MAX_BYTES < crate::limits::BODY_LEN_MAX_BYTES);
const _: () = assert!(INVOICE_EXPIRY_BATCHES_PER_STEP_MAX >= 1);

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Principal {
    Operator,
    Agent(AgentKey),
}

/// An agent's key, as resolved from its secret.
#[derive(Clone, Debug)]
pub struct AgentKey {
    pub key_id: String,
    pub agent_id: String,
    pub account: AccountId,
    pub scope: Scope,
    pub expires_at_ms: Option<i64>,
}

impl From<&KeyRecord> for AgentKey {
    fn from(k: &KeyRecord) -> AgentKey {
        AgentKey {
            key_id: k.id.clone(),
            agent_id: k.agent_id.clone(),
            account: k.account,
            scope: k.scope,
            expires_at_ms: k.expires_at_ms,
        }
    }
}

impl AgentKey {
    /// The scope rule, written once for every edge and every way of paying:
    /// `read` sees, `receive` also creates invoices, `spend` also pays.
    pub fn require(&self, needed: Scope) -> Result<(), Error> {
        if self.scope >= needed {
            return Ok(());
        }
        Err(Error::Forbidden(match needed {
            Scope::Spend => "this key's scope does not allow spending",
            _ => "this key's scope does not allow receiving",
        }))
    }
}

/// What a caller may say about a payment besides its target; all optional.
#[derive(Clone, Copy, Debug, Default)]
pub struct PayOptions<'a> {
    /// The amount to pay a Lightning address (an invoice carries its own).
    pub amount_msat: Option<u64>,
    pub purpose: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// Pay an invoice of this gateway into escrow.
    pub escrow: Option<&'a coffer_client::EscrowTerms>,
    /// What reports count the payment under (see `attribution::parse`).
    pub task: Option<&'a str>,
    pub tags: &'a [String],
}

/// What a payment call ended in, when it was not refused.
#[derive(Debug)]
pub enum PayOutcome {
    Paid(PaymentRecord),
    /// Held for a person's approval; the amount is reserved.
    Held(ApprovalRecord),
}

/// Settings the gateway runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub network: Network,
    /// Dev mode: no real Lightning network; the treasury can mint test funds.
    pub dev_mode: bool,
    /// How long a held payment waits for a person, at most (it also ends
    /// when its invoice expires).
    pub approval_ttl_ms: i64,
    /// Bounds on what callers may create or hold open.
    pub limits: crate::limits::Limits,
    /// How long old rows are kept.
    pub retention: retention::Retention,
    /// Where requests made on someone's behalf may go.
    pub egress: crate::egress::Egress,
    /// The origin clients address this gateway by (`https://pay.example`),
    /// when a proxy in front of it changes the scheme or host: the
    /// `@target-uri` signed requests cover. `None`: `http://` and the
    /// request's `Host`.
    pub public_url: Option<String>,
    /// The relays the NWC wallet service listens on and its connections'
    /// URIs name (`COFFER_NWC_RELAYS`); none: NWC is off.
    pub nwc_relays: Vec<String>,
    /// Where the price of a bitcoin in the operator's currencies comes
    /// from, for limits stated in a currency.
    pub fiat: crate::fiat::FiatConfig,
    /// The percentages of a budget at which `budget.warning` events fire
    /// (`COFFER_BUDGET_WARNING_PERCENT`).
    pub budget_warnings: Arc<coffer_core::policy::WarningThresholds>,
}

pub struct Gateway {
    store: Arc<dyn Store>,
    node: NodeSigner,
    node_pubkey_hex: Arc<str>,
    settings: Settings,
    operator: SecretDigest,
    live: crate::live::Live,
    /// Held from a message's commit to its announcement: watchers then see
    /// messages in id order, which their gapless replay relies on. (A batch
    /// of the writer commits several posts at once, and their callers would
    /// otherwise announce them in any order.)
    post_order: tokio::sync::Mutex<()>,
    /// The Lightning backend; `None` in dev mode.
    funding: Option<Arc<dyn crate::lightning::FundingSource>>,
    /// The bound on one backend call.
    lightning_timeout_ms: i64,
    /// For resolving Lightning addresses (LNURL-pay), with a backend.
    lnurl_http: Option<reqwest::Client>,
    /// Where the deposit watcher goes on (an invoice `seq`).
    watch_cursor: std::sync::atomic::AtomicI64,
    /// Live keys by digest, exact on an embedded store (see [`auth`]); a
    /// shared store's are read per request.
    keys: RwLock<HashMap<SecretDigest, AgentKey>>,
    /// Digests known to be no live key, on a shared store.
    dead_keys: auth::DeadKeySet,
    /// Agents' public keys for signed requests, and their checker.
    signing: signing::SigningKeys,
    /// Write rates, and the limit hits that feed breakers.
    throttle: rate::Throttle,
    /// Where every operation takes the time from.
    clock: Arc<dyn Clock>,
    /// The same clock when it is a dev clock the operator may move: only
    /// on a gateway started so, in dev mode.
    dev_clock: Option<Arc<DevClock>>,
    /// The latest bitcoin prices: every payment decides with a snapshot.
    fiat_rates: crate::fiat::Rates,
}

impl Gateway {
    pub async fn new(
        store: Arc<dyn Store>,
        node: NodeSigner,
        settings: Settings,
        operator: SecretDigest,
    ) -> Result<Gateway, Error> {
        // The caches of an embedded store (see `auth`); a shared one's keys
        // are read per request.
        let (live, signing_keys) = match store.shared() {
            false => store.read(|tx| Ok((tx.live_keys()?, Some(tx.live_signing_keys()?)))).await?,
            true => (Vec::new(), None),
        };
        let keys = live.iter().map(|k| (k.digest, AgentKey::from(k))).collect();
        let node_pubkey_hex = node.pubkey().to_string().into();
        let settings_fiat = settings.fiat.clone();
        Ok(Gateway {
            store,
            node,
            node_pubkey_hex,
            settings,
            operator,
            live: crate::live::Live::default(),
            post_order: tokio::sync::Mutex::new(()),
            funding: None,
            lightning_timeout_ms: 0,
            lnurl_http: None,
            watch_cursor: std::sync::atomic::AtomicI64::new(0),
            keys: RwLock::new(keys),
            dead_keys: auth::DeadKeySet::default(),
            signing: signing::SigningKeys::load(signing_keys)?,
            throttle: rate::Throttle::default(),
            clock: Arc::new(SystemClock),
            dev_clock: None,
            fiat_rates: crate::fiat::Rates::new(&settings_fiat),
        })
    }

    /// Takes the time from `clock` (default: the system's).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Gateway {
        self.clock = clock;
        self.dev_clock = None;
        self
    }

    /// Runs on a dev clock that the operator may move forward
    /// ([`Gateway::advance_clock`]). Only in dev mode: a gateway with a
    /// Lightning backend refuses to move its clock.
    pub fn with_dev_clock(mut self, clock: Arc<DevClock>) -> Gateway {
        self.clock = Arc::clone(&clock) as Arc<dyn Clock>;
        self.dev_clock = Some(clock);
        self
    }

    /// The time, in milliseconds since the Unix epoch, from the gateway's
    /// clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the operator may move this gateway's clock.
    pub fn has_dev_clock(&self) -> bool {
        self.dev_clock.is_some() && self.settings.dev_mode
    }

    /// Moves a dev clock `by_ms` forward, then runs the expiry sweeps at the
    /// new time, so that what expired is expired when this returns. Returns
    /// the new time. Without a dev clock (or with a Lightning backend)
    /// there is no clock to move: `not-found`, and nothing changes.
    pub async fn advance_clock(&self, by_ms: i64) -> Result<i64, Error> {
        let Some(clock) = self.dev_clock.as_ref().filter(|_| self.settings.dev_mode) else {
            return Err(Error::NotFound("route"));
        };
        let now = clock.advance(by_ms).map_err(|detail| invalid("advance_ms", detail))?;
        self.expire_approvals().await?;
        self.expire_invoices().await?;
        self.expire_commerce().await?;
        Ok(now)
    }

    /// Pays and receives through this backend (instead of dev mode).
    pub fn with_funding(
        mut self,
        funding: Arc<dyn crate::lightning::FundingSource>,
        timeout_ms: u64,
        lnurl_http: reqwest::Client,
    ) -> Gateway {
        self.settings.dev_mode = false;
        self.dev_clock = None;
        self.funding = Some(funding);
        self.lnurl_http = Some(lnurl_http);
        self.lightning_timeout_ms = i64::try_from(timeout_ms).unwrap_or(i64::MAX);
        self
    }

    /// The latest bitcoin prices (see [`crate::fiat`]).
    pub fn fiat_rates(&self) -> &crate::fiat::Rates {
        &self.fiat_rates
    }

    /// What a spend taken now is decided and counted with.
    pub fn spend_terms(&self) -> crate::model::SpendTerms {
        crate::model::SpendTerms {
            fiat: self.fiat_rates.snapshot(),
            warnings: Arc::clone(&self.settings.budget_warnings),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store, for the edges that consume it directly (the outbox's
    /// publishers).
    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The bounds the store checks in the transactions of writes.
    fn quotas(&self) -> Quotas {
        Quotas::from(&self.settings.limits)
    }

    /// Admits one write request of an agent key (read keys change nothing)
    /// within the key's and the agent's write rates.
    pub async fn admit_write(&self, key: &AgentKey) -> Result<(), Error> {
        if key.scope < Scope::Receive {
            return Err(Error::Forbidden("a read key changes nothing"));
        }
        let admitted = self.throttle.admit_write(&self.settings.limits, &key.key_id, &key.agent_id);
        self.feed_breaker(&key.agent_id, admitted).await
    }

    /// Passes `result` on; a limit the agent hit is counted, and every
    /// `limit_hits_per_breaker_denial` of them is a denial for its breaker,
    /// as a runaway spender's refused payments are.
    async fn feed_breaker<T>(&self, agent_id: &str, result: Result<T, Error>) -> Result<T, Error> {
        if matches!(result, Err(Error::LimitExceeded { .. }))
            && self.throttle.hit(&self.settings.limits, agent_id)
            && let Err(e) = self.observe_limit_denial(agent_id).await
        {
            tracing::warn!(agent = %agent_id, error = %e, "could not feed the breaker");
        }
        result
    }

    pub fn node_pubkey_hex(&self) -> &str {
        &self.node_pubkey_hex
    }

    /// Whether other instances share this gateway's store.
    pub fn shared_store(&self) -> bool {
        self.store.shared()
    }

    // Operator operations.

    /// Creates an agent: a top-level one for the operator, or a sub-agent
    /// of a calling agent that may create them. Returns the agent, its first
    /// `spend` key's secret and the key's id.
    pub async fn create_agent(
        &self,
        caller: &Principal,
        name: &str,
        can_create_subagents: bool,
        task: Option<&str>,
    ) -> Result<(AgentRecord, String, String), Error> {
        let name = validate_name(name)?;
        let task = attribution::parse(task, &[])?.task;
        let parent_id = match caller {
            Principal::Operator => None,
            Principal::Agent(key) => {
                let parent = self.agent(&key.agent_id).await?;
                if key.scope < Scope::Spend || !parent.can_create_subagents {
                    return Err(Error::Forbidden("this agent may not create sub-agents"));
                }
                Some(parent.id)
            }
        };
        let id = secrets::new_id("agt_");
        let secret = secrets::new_secret(secrets::AGENT_KEY_PREFIX);
        let key = NewKey {
            id: secrets::new_id("key_"),
            agent_id: id.clone(),
            scope: Scope::Spend,
            digest: SecretDigest::of(&secret),
            expires_at_ms: None,
        };
        let (key_id, digest) = (key.id.clone(), key.digest);
        let new = NewAgent { id: id.clone(), name, parent_id, can_create_subagents, task, key, quotas: self.quotas() };
        let now_ms = self.now_ms();
        let created = self.store.write(move |tx| ops::agents::create_agent(tx, new.clone(), now_ms)).await;
        let agent = match caller {
            Principal::Agent(key) => self.feed_breaker(&key.agent_id, created).await?,
            Principal::Operator => created?,
        };
        let record = KeyRecord {
            id: key_id.clone(),
            agent_id: id,
            account: agent.account,
            scope: Scope::Spend,
            digest,
            expires_at_ms: None,
        };
        self.cache_key(&record)?;
        Ok((agent, secret, key_id))
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, Error> {
        self.store.read(|tx| tx.agents()).await
    }

    pub async fn agent(&self, id: &str) -> Result<AgentRecord, Error> {
        let id = id.to_owned();
        self.store.read(move |tx| tx.agent(&id)).await?.ok_or(Error::NotFound("agent"))
    }

    /// Funds an agent: from the treasury (operator), or from the wallet of
    /// an ancestor agent (a parent funding its sub-agent).
    pub async fn fund(&self, caller: &Principal, agent_id: &str, amount_msat: u64) -> Result<(i64, Balance), Error> {
        let amount = parse_amount("amount_msat", amount_msat)?;
        let agent = self.managed_agent(caller, agent_id).await?;
        let (debit, actor) = match caller {
            Principal::Operator => (AccountId::TREASURY, "operator".to_owned()),
            Principal::Agent(key) if key.scope == Scope::Spend => (key.account, key.agent_id.clone()),
            Principal::Agent(_) => return Err(Error::Forbidden("funding a sub-agent needs a spend key")),
        };
        let transfer = Transfer { debit, credit: agent.account, amount };
        let now_ms = self.now_ms();
        self.store
            .write(move |tx| ops::agents::transfer(tx, transfer, Some(agent.id.clone()), actor.clone(), now_ms))
            .await
    }

    pub async fn mint(&self, amount_msat: u64) -> Result<(i64, Balance), Error> {
        if !self.settings.dev_mode {
            return Err(Error::MintDisabled);
        }
        let amount = parse_amount("amount_msat", amount_msat)?;
        let transfer = Transfer { debit: AccountId::OUTSIDE, credit: AccountId::TREASURY, amount };
        let now_ms = self.now_ms();
        self.store.write(move |tx| ops::agents::transfer(tx, transfer, None, OPERATOR.into(), now_ms)).await
    }

    pub async fn treasury(&self) -> Result<Balance, Error> {
        self.store.read(|tx| tx.balance(AccountId::TREASURY)).await
    }

    pub async fn create_key(
        &self,
        agent_id: &str,
        scope: Scope,
        expires_at: Option<&str>,
    ) -> Result<(KeyRecord, String), Error> {
        let expires_at_ms = expires_at.map(|t| parse_time("expires_at", t)).transpose()?;
        if expires_at_ms.is_some_and(|at| at <= self.now_ms()) {
            return Err(invalid("expires_at", "must be in the future".into()));
        }
        let secret = secrets::new_secret(secrets::AGENT_KEY_PREFIX);
        let key = NewKey {
            id: secrets::new_id("key_"),
            agent_id: agent_id.to_owned(),
            scope,
            digest: SecretDigest::of(&secret),
            expires_at_ms,
        };
        let now_ms = self.now_ms();
        let record = self.store.write(move |tx| ops::agents::create_key(tx, key.clone(), now_ms)).await?;
        self.cache_key(&record)?;
        Ok((record, secret))
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), Error> {
        let (key_id, now_ms) = (key_id.to_owned(), self.now_ms());
        let revoked = self.store.write(move |tx| ops::agents::revoke_key(tx, &key_id, now_ms));
        let revoked = revoked.await?.ok_or(Error::NotFound("key"))?;
        self.forget_key(&revoked)
    }

    // Agent operations.

    pub async fn wallet(&self, caller: &AgentKey) -> Result<(AgentRecord, Balance), Error> {
        let agent = self.agent(&caller.agent_id).await?;
        let balance = agent.balance;
        Ok((agent, balance))
    }

    /// A new invoice of the caller's. `hold_secs`: a hold invoice, which
    /// waits that long for its payee to settle once it is paid. With a
    /// backend that has hold invoices (LND, an NWC wallet with NIP-47's hold
    /// methods) the backend's node makes it, payable from outside and inside
    /// (see `outside_holds`); otherwise it is signed by coffer's own key:
    /// payable inside this gateway only.
    pub async fn create_invoice(
        &self,
        caller: &AgentKey,
        amount_msat: u64,
        memo: Option<&str>,
        expiry_secs: Option<u32>,
        hold_secs: Option<u32>,
    ) -> Result<InvoiceRecord, Error> {
        caller.require(Scope::Receive)?;
        let record = match hold_secs {
            None => self.make_invoice(&caller.agent_id, amount_msat, memo, expiry_secs, None).await?,
            Some(hold_secs) => {
                let max = crate::model::HOLD_SECS_MAX;
                if hold_secs == 0 || hold_secs > max {
                    return Err(invalid("hold_secs", format!("between 1 and {max} seconds")));
                }
                let mut signed = self.sign_invoice(&caller.agent_id, amount_msat, memo, expiry_secs, None)?;
                signed.hold_secs = Some(hold_secs);
                self.backend_hold_invoice(signed).await?
            }
        };
        let (stored, quotas) = (record.clone(), self.quotas());
        let stored = self.store.write(move |tx| ops::invoices::create_invoice(tx, &stored, &quotas)).await;
        self.feed_breaker(&caller.agent_id, stored).await?;
        crate::metrics::METRICS.record_invoice();
        Ok(record)
    }

    /// A new invoice of an agent (or the treasury), not yet stored: made by
    /// the backend's node when there is one, so that the Lightning Network
    /// can pay it; signed by coffer's own key in dev mode.
    async fn make_invoice(
        &self,
        agent_id: &str,
        amount_msat: u64,
        memo: Option<&str>,
        expiry_secs: Option<u32>,
        room_id: Option<String>,
    ) -> Result<InvoiceRecord, Error> {
        let local = self.sign_invoice(agent_id, amount_msat, memo, expiry_secs, room_id)?;
        match &self.funding {
            None => Ok(local),
            Some(funding) => self.backend_invoice(funding.as_ref(), local).await,
        }
    }

    /// A new invoice of an agent, signed by the node key, not yet stored.
    fn sign_invoice(
        &self,
        agent_id: &str,
        amount_msat: u64,
        memo: Option<&str>,
        expiry_secs: Option<u32>,
        room_id: Option<String>,
    ) -> Result<InvoiceRecord, Error> {
        let amount = parse_amount("amount_msat", amount_msat)?;
        if amount.as_u64() > bolt11::INVOICE_AMOUNT_MAX_MSAT {
            return Err(Error::InvalidAmount {
                field: "amount_msat",
                detail: format!("a BOLT11 invoice carries at most {} msat", bolt11::INVOICE_AMOUNT_MAX_MSAT),
            });
        }
        let memo = memo.unwrap_or("");
        if memo.len() > bolt11::MEMO_LEN_MAX_BYTES {
            return Err(invalid("memo", format!("at most {} bytes", bolt11::MEMO_LEN_MAX_BYTES)));
        }
        text::check("memo", memo, text::Lines::Multi)?;
        let expiry_secs = expiry_secs.unwrap_or(bolt11::EXPIRY_DEFAULT_SECS);
        if expiry_secs == 0 || expiry_secs > bolt11::EXPIRY_MAX_SECS {
            return Err(invalid("expiry_secs", format!("between 1 and {} seconds", bolt11::EXPIRY_MAX_SECS)));
        }
        let now = self.now_ms();
        // BOLT11 timestamps are whole seconds: the invoice's own expiry and
        // ours must agree, so both start at the same second.
        let created_secs = u64::try_from(now / 1000).map_err(|_| Error::Internal("clock before 1970".into()))?;
        let signed = self
            .node
            .sign(amount, memo, expiry_secs, Duration::from_secs(created_secs))
            .map_err(|e| Error::internal("signing", e))?;
        Ok(InvoiceRecord {
            payment_hash: signed.payment_hash,
            agent_id: agent_id.to_owned(),
            amount,
            memo: memo.to_owned(),
            bolt11: signed.bolt11,
            preimage: signed.preimage,
            status: crate::model::StoredInvoiceStatus::Open,
            created_at_ms: now,
            expires_at_ms: (created_secs as i64 + i64::from(expiry_secs)) * 1000,
            paid_at_ms: None,
            paid_by: None,
            room_id,
            backend: None,
            hold_secs: None,
            escrow: None,
        })
    }

    /// An invoice of the caller's own.
    pub async fn invoice(&self, caller: &AgentKey, payment_hash_hex: &str) -> Result<InvoiceRecord, Error> {
        let hash = parse_hash(payment_hash_hex)?;
        let invoice = self.stored_invoice(hash).await?.ok_or(Error::NotFound("invoice"))?;
        if invoice.agent_id != caller.agent_id {
            return Err(Error::Forbidden("the invoice belongs to another agent"));
        }
        Ok(invoice)
    }

    pub async fn invoices(
        &self,
        caller: &AgentKey,
        page: PageRequest,
    ) -> Result<(Vec<InvoiceRecord>, Option<i64>), Error> {
        let agent_id = caller.agent_id.clone();
        self.store.read(move |tx| tx.invoices(&agent_id, page)).await
    }

    /// Marks open invoices past their expiry `expired`, with their
    /// `invoice.expired` events, a batch at a time; run by a background task
    /// on every instance (the store makes each expire once). Invoices of the
    /// backend's node stay open while the deposit watcher looks at them.
    /// Writes only when one is due (see [`Tx::invoices_due`](crate::store::Tx::invoices_due)). Returns
    /// how many expired.
    pub async fn expire_invoices(&self) -> Result<u64, Error> {
        let mut expired = 0;
        for _ in 0..INVOICE_EXPIRY_BATCHES_PER_STEP_MAX {
            let now = self.now_ms();
            let watched_since_ms = now.saturating_sub(lightning::WATCH_AFTER_EXPIRY_MS);
            if !self.store.read(move |tx| tx.invoices_due(now, watched_since_ms)).await? {
                break;
            }
            let swept = self.store.write(move |tx| ops::invoices::expire_invoices(tx, now, watched_since_ms)).await?;
            expired += swept;
            if swept < u64::from(crate::model::INVOICE_EXPIRY_BATCH_MAX) {
                break;
            }
        }
        Ok(expired)
    }

    pub async fn payments(
        &self,
        caller: &AgentKey,
        page: PageRequest,
    ) -> Result<(Vec<PaymentRecord>, Option<i64>), Error> {
        let agent_id = caller.agent_id.clone();
        self.store.read(move |tx| tx.payments(&agent_id, page)).await
    }

    /// Pays a BOLT11 invoice. An invoice of this gateway settles at once,
    /// inside one store transaction: the constitution's decision, debit,
    /// credit, invoice paid, payment recorded, idempotency key remembered,
    /// audit record and events. A refusal by the constitution is recorded
    /// too, then returned as [`Error::Denied`].
    pub async fn pay(
        &self,
        caller: &AgentKey,
        bolt11: &str,
        purpose: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<PayOutcome, Error> {
        self.pay_to(caller, bolt11, PayOptions { purpose, idempotency_key, ..PayOptions::default() }).await
    }

    /// Pays [`Gateway::pay_target`] with a `spend` key, counts the attempt
    /// on `/metrics`, and feeds its limit hits (held payments) to the
    /// payer's breaker.
    pub async fn pay_to(&self, caller: &AgentKey, target: &str, options: PayOptions<'_>) -> Result<PayOutcome, Error> {
        caller.require(Scope::Spend)?;
        let outcome = self.pay_target(caller, target, options).await;
        // Every way of paying (HTTP, a room's request, auto-pay, MCP) comes
        // through here, so each is counted once, the same way.
        crate::metrics::METRICS.record_payment(matches!(outcome, Ok(PayOutcome::Paid(_))));
        self.count_payment(target, &outcome);
        self.feed_breaker(&caller.agent_id, outcome).await
    }

    /// Pays an invoice, or `amount_msat` to a Lightning address
    /// (`name@domain`), whose invoice is fetched and checked first. A retry
    /// with the same idempotency key fetches an invoice again but gets the
    /// first answer: it never pays twice. With `escrow`, an invoice of this
    /// gateway is paid into escrow (one of another node cannot be).
    async fn pay_target(&self, caller: &AgentKey, target: &str, options: PayOptions<'_>) -> Result<PayOutcome, Error> {
        let PayOptions { amount_msat, purpose, idempotency_key, escrow, task, tags } = options;
        let attribution = attribution::parse(task, tags)?;
        let purpose = purpose.unwrap_or("");
        if purpose.len() > PURPOSE_LEN_MAX_BYTES {
            return Err(invalid("purpose", format!("at most {PURPOSE_LEN_MAX_BYTES} bytes")));
        }
        text::check("purpose", purpose, text::Lines::Multi)?;
        let escrow = escrow.map(commerce::escrow_terms).transpose()?;
        let mut request_text = match amount_msat {
            Some(amount) => format!("{target}?amount_msat={amount}"),
            None => target.to_owned(),
        };
        if let Some(terms) = &escrow {
            let rule = crate::model::outcome_str(terms.on_timeout);
            request_text.push_str(&format!("\0escrow={}:{rule}", terms.release_after_ms));
        }
        // The attribution is part of the request a key stands for (an
        // empty one adds nothing, so keys taken before it existed match).
        if !attribution.is_empty() {
            let task = attribution.task.as_deref().unwrap_or("");
            request_text.push_str(&format!("\0task={task}\0tags={}", attribution.tags.join(",")));
        }
        let idempotency = idempotency_key.map(|key| idempotency_for(key, &request_text, purpose)).transpose()?;
        let resolved;
        let bolt11 = match (crate::lightning::lnurl::is_address(target), amount_msat) {
            (false, None) => target,
            (false, Some(_)) => {
                return Err(invalid(
                    "amount_msat",
                    "only with a Lightning address: an invoice carries its amount".into(),
                ));
            }
            (true, None) => return Err(invalid("amount_msat", "paying a Lightning address needs an amount".into())),
            (true, Some(amount)) => {
                let Some(http) = &self.lnurl_http else { return Err(Error::NoLightningBackend) };
                let amount = parse_amount("amount_msat", amount)?;
                let (egress, network) = (&self.settings.egress, self.settings.network);
                resolved = crate::lightning::lnurl::resolve(http, egress, target, amount.as_u64(), network).await?;
                resolved.as_str()
            }
        };
        let pay_idempotency = idempotency.clone();
        let parsed =
            ParsedInvoice::parse(bolt11, self.settings.network).map_err(|e| Error::InvalidInvoice(e.to_string()))?;
        match parsed.amount {
            None | Some(Msat::ZERO) => return Err(Error::AmountRequired),
            Some(amount) => parse_amount("invoice amount", amount.as_u64())?,
        };
        let pay = PayInternal {
            node_pubkey_hex: Arc::clone(&self.node_pubkey_hex),
            approval_ttl_ms: self.settings.approval_ttl_ms,
            holds_pending_max: self.settings.limits.holds_pending_per_agent,
            payment_id: secrets::new_id("pay_"),
            payer: Payer { agent_id: caller.agent_id.clone(), account: caller.account, key_id: caller.key_id.clone() },
            bolt11: parsed.bolt11.clone(),
            payment_hash: parsed.payment_hash,
            purpose: purpose.to_owned(),
            attribution: attribution.clone(),
            idempotency,
            domain: None,
            escrow,
            escrows_open_max: self.settings.limits.escrows_open_per_agent,
            now_ms: self.now_ms(),
            terms: self.spend_terms(),
        };
        match self.store.write(move |tx| crate::payment::internal::pay(tx, &pay)).await? {
            PayAttempt::Paid(payment) => {
                self.announce_request(&payment.payment_hash).await;
                self.close_backend_hold_paid_inside(&payment).await;
                Ok(PayOutcome::Paid(payment))
            }
            PayAttempt::Held(approval) => Ok(PayOutcome::Held(approval)),
            PayAttempt::Denied(denial) => Err(Error::Denied(denial)),
            PayAttempt::NotOurs if escrow.is_some() => {
                Err(invalid("escrow", "only an invoice of this gateway can be paid into escrow".into()))
            }
            PayAttempt::NotOurs => {
                // Tell a forged or corrupt invoice apart from a real one of
                // another node before saying we cannot route it.
                let Some(funding) = &self.funding else {
                    parsed.verify().map_err(|e| Error::InvalidInvoice(e.to_string()))?;
                    return Err(Error::NoLightningBackend);
                };
                let outside = parsed.outside().map_err(|e| Error::InvalidInvoice(e.to_string()))?;
                self.pay_external(funding.as_ref(), caller, &outside, (purpose, attribution), pay_idempotency).await
            }
        }
    }
}

impl Gateway {
    /// Tells a room's watchers that its payment request changed state
    /// (accepted, held, disputed, paid, released, cancelled, refunded),
    /// however it did: the event [`crate::model::views::request_update`]
    /// makes. Skipped when nobody watches: the store has it all.
    async fn announce_request(&self, payment_hash: &[u8; 32]) {
        if !self.live.watched() {
            return;
        }
        let hash = *payment_hash;
        let read = self
            .store
            .read(move |tx| match tx.invoice(&hash)? {
                Some((invoice, _)) if invoice.room_id.is_some() => Ok(Some((invoice, tx.escrow_by_hash(&hash)?))),
                _ => Ok(None),
            })
            .await;
        let Ok(Some((invoice, waiting))) = read else { return };
        let Some(room_id) = invoice.room_id.clone() else { return };
        let Some((kind, data)) = crate::model::views::request_update(&invoice, waiting.as_ref(), self.now_ms()) else {
            return;
        };
        self.live.publish(crate::live::RoomEvent { room_id, kind, data });
    }

    pub fn live(&self) -> &crate::live::Live {
        &self.live
    }

    /// An invoice of this gateway, whoever's.
    async fn stored_invoice(&self, payment_hash: [u8; 32]) -> Result<Option<InvoiceRecord>, Error> {
        self.store.read(move |tx| Ok(tx.invoice(&payment_hash)?.map(|(invoice, _)| invoice))).await
    }

    /// Counts one denial toward the agent's breaker (for limits it keeps
    /// hitting), which may trip it.
    async fn observe_limit_denial(&self, agent_id: &str) -> Result<(), Error> {
        let (agent_id, now_ms) = (agent_id.to_owned(), self.now_ms());
        self.store
            .write(move |tx| {
                let mut chain = crate::payment::chain::load_chain(tx, &agent_id)?;
                crate::payment::chain::observe_denial(tx, &mut chain, "limit-exceeded", now_ms)
            })
            .await
    }
}

/// Recomputes the ledger from its transfers and checks every invariant,
/// then verifies the audit trail's hash chain.
pub async fn audit(store: &dyn Store) -> Result<AuditReport, Error> {
    store.sealed().await?;
    let input = store.read(|tx| tx.audit_input()).await?;
    let mut report = coffer_core::ledger::audit(input.accounts, input.sums);
    let chain = store.read(|tx| tx.audit_chain()).await?;
    let records = chain.iter().map(|r| coffer_core::audit_chain::Link {
        seq: r.seq,
        prev_hash: r.prev_hash,
        hash: r.hash,
        body: r.body.as_bytes(),
    });
    match coffer_core::audit_chain::verify(records) {
        Ok(count) => report.audit_records_checked = count,
        Err(broken) => {
            report.violations.push(format!("audit trail broken at record {}: {}", broken.seq, broken.reason))
        }
    }
    Ok(report)
}

fn actor(caller: &Principal) -> String {
    match caller {
        Principal::Operator => "operator".into(),
        Principal::Agent(key) => key.agent_id.clone(),
    }
}

pub fn parse_time(field: &'static str, text: &str) -> Result<i64, Error> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| invalid(field, "an RFC 3339 time such as 2027-01-01T00:00:00Z".into()))
}

pub(crate) fn invalid(field: &'static str, detail: String) -> Error {
    Error::InvalidField { field, detail }
}

pub fn parse_amount(field: &'static str, value_msat: u64) -> Result<Msat, Error> {
    Msat::parse_positive(value_msat).map_err(|cause| Error::InvalidAmount { field, detail: cause.to_string() })
}

fn validate_name(name: &str) -> Result<String, Error> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > AGENT_NAME_LEN_MAX_CHARS {
        return Err(invalid("name", format!("1 to {AGENT_NAME_LEN_MAX_CHARS} characters")));
    }
    text::check("name", trimmed, text::Lines::Single)?;
    Ok(trimmed.to_owned())
}

pub fn parse_hash(hex_str: &str) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).map_err(|_| invalid("payment_hash", "64 hexadecimal characters".into()))?;
    Ok(out)
}

fn idempotency_for(key: &str, bolt11: &str, purpose: &str) -> Result<Idempotency, Error> {
    check_idempotency_key(key)?;
    let mut hasher = Sha256::new();
    hasher.update(bolt11.trim().to_ascii_lowercase().as_bytes());
    hasher.update([0]);
    hasher.update(purpose.as_bytes());
    Ok(Idempotency { key: key.to_owned(), request_digest: hasher.finalize().into() })
}

fn check_idempotency_key(key: &str) -> Result<(), Error> {
    let valid_char = |c: char| c.is_ascii_graphic();
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX_BYTES || !key.chars().all(valid_char) {
        return Err(invalid(
            "Idempotency-Key",
            format!("1 to {IDEMPOTENCY_KEY_LEN_MAX_BYTES} visible ASCII characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::server::GatewayBuilder;

    /// The expiry jobs run every second on every instance. With nothing
    /// due they must not commit: every commit wakes every outbox watcher,
    /// and on PostgreSQL takes the kill switch's share lock and wakes the sealer.
    #[tokio::test]
    async fn expiry_jobs_with_nothing_due_commit_nothing() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (gateway, _token) = GatewayBuilder::default().data_dir(dir.path()).build().await.expect("a gateway");
        let commits = gateway.store.commits();
        let before = *commits.borrow();
        for _ in 0..3 {
            assert_eq!(gateway.expire_approvals().await.expect("approvals"), 0);
            assert_eq!(gateway.expire_invoices().await.expect("invoices"), 0);
            assert_eq!(gateway.expire_commerce().await.expect("holds, escrows, sessions"), 0);
        }
        assert_eq!(*commits.borrow(), before, "an expiry job with nothing due committed");
    }
}
