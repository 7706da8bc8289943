//! The gateway's operations: what the HTTP handlers, the CLI and (later) MCP
//! call. Each validates its input, then makes one atomic store call.

use crate::error::Error;
use crate::io::{
    AgentRecord, Idempotency, InvoiceRecord, KeyRecord, NewKey, PageRequest, PayAttempt, PayInternal, Payer,
    PaymentRecord, Store,
};
use crate::payment::bolt11::{self, Network, NodeSigner, ParsedInvoice};
use crate::secrets::{self, SecretDigest};
use coffer_client::Scope;
use coffer_core::ledger::AuditReport;
use coffer_core::{AccountId, Balance, Msat, Transfer};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const AGENT_NAME_LEN_MAX: usize = 64;
pub const PURPOSE_LEN_MAX_BYTES: usize = 512;
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;

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
}

impl From<&KeyRecord> for AgentKey {
    fn from(k: &KeyRecord) -> AgentKey {
        AgentKey { key_id: k.id.clone(), agent_id: k.agent_id.clone(), account: k.account, scope: k.scope }
    }
}

/// Settings the gateway runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub network: Network,
    /// Dev mode: no real Lightning network; the treasury can mint test funds.
    pub dev_mode: bool,
}

pub struct Gateway {
    store: Arc<dyn Store>,
    node: NodeSigner,
    settings: Settings,
    operator: SecretDigest,
    /// Live keys by digest. This process is the only writer of keys on an
    /// embedded store, so the cache is exact: creation and revocation update
    /// it after their commit.
    keys: RwLock<HashMap<SecretDigest, AgentKey>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Gateway {
    pub async fn new(
        store: Arc<dyn Store>,
        node: NodeSigner,
        settings: Settings,
        operator: SecretDigest,
    ) -> Result<Gateway, Error> {
        let live = store.live_keys().await?;
        let keys = live.iter().map(|k| (k.digest, AgentKey::from(k))).collect();
        Ok(Gateway { store, node, settings, operator, keys: RwLock::new(keys) })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn node_pubkey_hex(&self) -> String {
        self.node.pubkey().to_string()
    }

    /// Resolves a bearer secret. Unknown and revoked secrets look the same.
    pub fn authenticate(&self, secret: &str) -> Result<Principal, Error> {
        if secret.is_empty() || secret.len() > secrets::SECRET_LEN_MAX {
            return Err(Error::Unauthorized);
        }
        let digest = SecretDigest::of(secret);
        if digest.matches(&self.operator) {
            return Ok(Principal::Operator);
        }
        let keys = self.keys.read().map_err(|_| Error::Internal("key cache poisoned".into()))?;
        match keys.get_key_value(&digest) {
            Some((stored, key)) if stored.matches(&digest) => Ok(Principal::Agent(key.clone())),
            _ => Err(Error::Unauthorized),
        }
    }

    fn cache_key(&self, key: &KeyRecord) -> Result<(), Error> {
        let mut keys = self.keys.write().map_err(|_| Error::Internal("key cache poisoned".into()))?;
        keys.insert(key.digest, AgentKey::from(key));
        Ok(())
    }

    // Operator operations.

    pub async fn create_agent(&self, name: &str) -> Result<(AgentRecord, String, String), Error> {
        let name = validate_name(name)?;
        let id = secrets::new_id("agt_");
        let secret = secrets::new_secret(secrets::AGENT_KEY_PREFIX);
        let key = NewKey {
            id: secrets::new_id("key_"),
            agent_id: id.clone(),
            scope: Scope::Spend,
            digest: SecretDigest::of(&secret),
        };
        let key_id = key.id.clone();
        let record = KeyRecord {
            id: key.id.clone(),
            agent_id: id.clone(),
            account: AccountId(0),
            scope: key.scope,
            digest: key.digest,
        };
        let agent = self.store.create_agent(id, name, key, now_ms()).await?;
        self.cache_key(&KeyRecord { account: agent.account, ..record })?;
        Ok((agent, secret, key_id))
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, Error> {
        self.store.agents().await
    }

    pub async fn agent(&self, id: &str) -> Result<AgentRecord, Error> {
        self.store.agent(id.to_owned()).await?.ok_or(Error::NotFound("agent"))
    }

    pub async fn fund(&self, agent_id: &str, amount_msat: u64) -> Result<(i64, Balance), Error> {
        let amount = parse_amount("amount_msat", amount_msat)?;
        let agent = self.agent(agent_id).await?;
        let transfer = Transfer { debit: AccountId::TREASURY, credit: agent.account, amount };
        self.store.transfer(transfer, "fund", now_ms()).await
    }

    pub async fn mint(&self, amount_msat: u64) -> Result<(i64, Balance), Error> {
        if !self.settings.dev_mode {
            return Err(Error::MintDisabled);
        }
        let amount = parse_amount("amount_msat", amount_msat)?;
        let transfer = Transfer { debit: AccountId::OUTSIDE, credit: AccountId::TREASURY, amount };
        self.store.transfer(transfer, "mint", now_ms()).await
    }

    pub async fn treasury(&self) -> Result<Balance, Error> {
        self.store.balance(AccountId::TREASURY).await
    }

    pub async fn create_key(&self, agent_id: &str, scope: Scope) -> Result<(KeyRecord, String), Error> {
        let secret = secrets::new_secret(secrets::AGENT_KEY_PREFIX);
        let key = NewKey {
            id: secrets::new_id("key_"),
            agent_id: agent_id.to_owned(),
            scope,
            digest: SecretDigest::of(&secret),
        };
        let record = self.store.create_key(key, now_ms()).await?;
        self.cache_key(&record)?;
        Ok((record, secret))
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), Error> {
        let revoked = self.store.revoke_key(key_id.to_owned(), now_ms()).await?.ok_or(Error::NotFound("key"))?;
        let mut keys = self.keys.write().map_err(|_| Error::Internal("key cache poisoned".into()))?;
        keys.remove(&revoked.digest);
        Ok(())
    }

    // Agent operations.

    pub async fn wallet(&self, caller: &AgentKey) -> Result<(AgentRecord, Balance), Error> {
        let agent = self.agent(&caller.agent_id).await?;
        let balance = agent.balance;
        Ok((agent, balance))
    }

    pub async fn create_invoice(
        &self,
        caller: &AgentKey,
        amount_msat: u64,
        memo: Option<&str>,
        expiry_secs: Option<u32>,
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
        let expiry_secs = expiry_secs.unwrap_or(bolt11::EXPIRY_DEFAULT_SECS);
        if expiry_secs == 0 || expiry_secs > bolt11::EXPIRY_MAX_SECS {
            return Err(invalid("expiry_secs", format!("between 1 and {} seconds", bolt11::EXPIRY_MAX_SECS)));
        }
        let now = now_ms();
        // BOLT11 timestamps are whole seconds: the invoice's own expiry and
        // ours must agree, so both start at the same second.
        let created_secs = u64::try_from(now / 1000).map_err(|_| Error::Internal("clock before 1970".into()))?;
        let signed = self
            .node
            .sign(amount, memo, expiry_secs, Duration::from_secs(created_secs))
            .map_err(|e| Error::internal("signing", e))?;
        let created_at_ms = now;
        let expires_at_ms = (created_secs as i64 + i64::from(expiry_secs)) * 1000;
        let record = InvoiceRecord {
            payment_hash: signed.payment_hash,
            agent_id: caller.agent_id.clone(),
            amount,
            memo: memo.to_owned(),
            bolt11: signed.bolt11,
            preimage: signed.preimage,
            status: crate::io::StoredInvoiceStatus::Open,
            created_at_ms,
            expires_at_ms,
            paid_at_ms: None,
        };
        self.store.insert_invoice(record.clone()).await?;
        Ok(record)
    }

    /// An invoice of the caller's own.
    pub async fn invoice(&self, caller: &AgentKey, payment_hash_hex: &str) -> Result<InvoiceRecord, Error> {
        let hash = parse_hash(payment_hash_hex)?;
        let invoice = self.store.invoice(hash).await?.ok_or(Error::NotFound("invoice"))?;
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
        self.store.invoices(caller.agent_id.clone(), page).await
    }

    pub async fn payments(
        &self,
        caller: &AgentKey,
        page: PageRequest,
    ) -> Result<(Vec<PaymentRecord>, Option<i64>), Error> {
        self.store.payments(caller.agent_id.clone(), page).await
    }

    /// Pays a BOLT11 invoice. An invoice of this gateway settles at once,
    /// inside one store transaction: debit, credit, invoice paid, payment
    /// recorded, idempotency key remembered.
    pub async fn pay(
        &self,
        caller: &AgentKey,
        bolt11: &str,
        purpose: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<PaymentRecord, Error> {
        let purpose = purpose.unwrap_or("");
        if purpose.len() > PURPOSE_LEN_MAX_BYTES {
            return Err(invalid("purpose", format!("at most {PURPOSE_LEN_MAX_BYTES} bytes")));
        }
        let idempotency = idempotency_key.map(|key| idempotency_for(key, bolt11, purpose)).transpose()?;
        let parsed =
            ParsedInvoice::parse(bolt11, self.settings.network).map_err(|e| Error::InvalidInvoice(e.to_string()))?;
        match parsed.amount {
            None | Some(Msat::ZERO) => return Err(Error::AmountRequired),
            Some(amount) => parse_amount("invoice amount", amount.as_u64())?,
        };
        let pay = PayInternal {
            payment_id: secrets::new_id("pay_"),
            payer: Payer { agent_id: caller.agent_id.clone(), account: caller.account, key_id: caller.key_id.clone() },
            bolt11: parsed.bolt11.clone(),
            payment_hash: parsed.payment_hash,
            purpose: purpose.to_owned(),
            idempotency,
            now_ms: now_ms(),
        };
        match self.store.pay_internal(pay).await? {
            PayAttempt::Paid(payment) => Ok(payment),
            PayAttempt::NotOurs => {
                // Tell a forged or corrupt invoice apart from a real one of
                // another node before saying we cannot route it.
                parsed.verify().map_err(|e| Error::InvalidInvoice(e.to_string()))?;
                Err(Error::NoLightningBackend)
            }
        }
    }

    pub async fn audit(&self) -> Result<AuditReport, Error> {
        audit(self.store.as_ref()).await
    }
}

/// Recomputes the ledger from its transfers and checks every invariant.
pub async fn audit(store: &dyn Store) -> Result<AuditReport, Error> {
    let input = store.audit_input().await?;
    Ok(coffer_core::ledger::audit(input.accounts, input.sums))
}

fn invalid(field: &'static str, detail: String) -> Error {
    Error::InvalidField { field, detail }
}

pub fn parse_amount(field: &'static str, value_msat: u64) -> Result<Msat, Error> {
    Msat::parse_positive(value_msat).map_err(|cause| Error::InvalidAmount { field, detail: cause.to_string() })
}

fn validate_name(name: &str) -> Result<String, Error> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > AGENT_NAME_LEN_MAX {
        return Err(invalid("name", format!("1 to {AGENT_NAME_LEN_MAX} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid("name", "no control characters".into()));
    }
    Ok(trimmed.to_owned())
}

pub fn parse_hash(hex_str: &str) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).map_err(|_| invalid("payment_hash", "64 hexadecimal characters".into()))?;
    Ok(out)
}

fn idempotency_for(key: &str, bolt11: &str, purpose: &str) -> Result<Idempotency, Error> {
    let valid_char = |c: char| c.is_ascii_graphic();
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX || !key.chars().all(valid_char) {
        return Err(invalid("Idempotency-Key", format!("1 to {IDEMPOTENCY_KEY_LEN_MAX} visible ASCII characters")));
    }
    let mut hasher = Sha256::new();
    hasher.update(bolt11.trim().to_ascii_lowercase().as_bytes());
    hasher.update([0]);
    hasher.update(purpose.as_bytes());
    Ok(Idempotency { key: key.to_owned(), request_digest: hasher.finalize().into() })
}
