//! Keys the agent holds: public keys an agent signs its requests with
//! (RFC 9421 HTTP Message Signatures), and the check of those signatures.
//!
//! Once an agent has a `required` key, every write request made with its
//! bearer token must also be signed by one of its live keys: a token copied
//! from a log or a prompt then reads but never spends. A signature must
//! cover `@method` and `@target-uri`, the body's `content-digest` (RFC
//! 9530) and the `Idempotency-Key` when the request has them; its `created`
//! must be recent and its `nonce` new. docs/signed-requests.md is the
//! format.
//!
//! The keys are found like bearer keys: in this process's cache on an
//! embedded store (exact: this process writes them all), in the database on
//! a shared one, read with the bearer key of each write request
//! ([`Gateway::authenticate_signed`]), so a key registered or revoked on any
//! instance rules the next request on every other. Nonces are remembered
//! per instance. Ed25519 signatures are checked in batches ([`batch`]).

mod batch;

use super::{Gateway, Principal, invalid};
use crate::error::Error;
use crate::limits::{Limit, SIGNATURE_NONCES_MAX, SIGNING_KEYS_PER_AGENT_MAX};
use crate::model::{AuditEntry, SigningKeyRecord};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_client::Scope;
use coffer_client::signing::{self, Alg, Message, SignatureParams};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// How old a signature's `created` may be.
pub const SIGNATURE_AGE_MAX_SECS: i64 = 300;
/// How far ahead of this gateway's clock a `created` may be (the agent's
/// clock may run a little fast).
pub const SIGNATURE_SKEW_AHEAD_MAX_SECS: i64 = 30;
/// A nonce is remembered as long as a signature carrying it could be
/// accepted: a replay after that has a `created` too old.
const NONCE_KEPT_MS: i64 = (SIGNATURE_AGE_MAX_SECS + SIGNATURE_SKEW_AHEAD_MAX_SECS) * 1000;

const _: () = assert!(SIGNATURE_SKEW_AHEAD_MAX_SECS < SIGNATURE_AGE_MAX_SECS);
const _: () = assert!(SIGNATURE_NONCES_MAX > 0);

/// The live signing keys, the nonces seen within the window, and the
/// checker of Ed25519 signatures.
pub struct SigningKeys {
    /// Every live key by agent: this process's copy on an embedded store;
    /// none on a shared one, whose keys are read per request.
    cache: Option<RwLock<HashMap<String, AgentSigningKeys>>>,
    nonces: Mutex<Nonces>,
    ed25519: batch::Ed25519Batches,
}

/// One agent's live signing keys, as a request sees them.
#[derive(Clone, Default)]
pub struct AgentSigningKeys(Vec<Arc<LiveKey>>);

impl AgentSigningKeys {
    pub fn from_records(records: Vec<SigningKeyRecord>) -> AgentSigningKeys {
        AgentSigningKeys(records.into_iter().map(|k| Arc::new(LiveKey::from(k))).collect())
    }

    /// Adds `key` to its agent's keys in `cache`.
    fn insert_into(cache: &mut HashMap<String, AgentSigningKeys>, key: SigningKeyRecord) {
        cache.entry(key.agent_id.clone()).or_default().0.push(Arc::new(LiveKey::from(key)));
    }

    /// Whether the agent's writes must be signed.
    pub fn required(&self) -> bool {
        self.0.iter().any(|k| k.record.required)
    }

    fn by_id(&self, key_id: &str) -> Option<&Arc<LiveKey>> {
        self.0.iter().find(|k| k.record.id == key_id)
    }
}

/// A live key, with its Ed25519 point decompressed once, when it is loaded,
/// rather than on every request (a decompression costs a field inversion).
pub struct LiveKey {
    record: SigningKeyRecord,
    /// `None` for a P-256 key, or for an Ed25519 key stored malformed (none
    /// are: [`parse_public_key`] refuses them; such a key verifies nothing).
    ed25519: Option<ed25519_dalek::VerifyingKey>,
}

impl From<SigningKeyRecord> for LiveKey {
    fn from(record: SigningKeyRecord) -> LiveKey {
        let ed25519 = match record.alg {
            Alg::Ed25519 => ed25519_dalek::VerifyingKey::try_from(record.public_key.as_slice()).ok(),
            Alg::EcdsaP256Sha256 => None,
        };
        LiveKey { record, ed25519 }
    }
}

/// Nonces of accepted signatures, forgotten once a replay would be stale
/// anyway. Kept as 16-byte digests of `keyid` and nonce, in the order seen
/// (which is the order they are forgotten: the window is one constant).
#[derive(Default)]
struct Nonces {
    seen: HashSet<[u8; 16]>,
    order: VecDeque<(i64, [u8; 16])>,
}

impl Nonces {
    /// Remembers a nonce; `false` if it was seen within the window.
    fn admit(&mut self, key_id: &str, nonce: &str, now_ms: i64) -> Result<bool, Error> {
        while let Some(&(forget_at_ms, digest)) = self.order.front() {
            if forget_at_ms > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&digest);
        }
        let digest = nonce_digest(key_id, nonce);
        if self.seen.contains(&digest) {
            return Ok(false);
        }
        if self.seen.len() >= SIGNATURE_NONCES_MAX {
            let frees_at_ms = self.order.front().map_or(now_ms, |&(at, _)| at);
            let secs = u64::try_from(frees_at_ms.saturating_sub(now_ms)).unwrap_or(0).div_ceil(1000);
            return Err(Error::limit(Limit::SignatureNonces, secs, "too many signed requests within the window"));
        }
        self.seen.insert(digest);
        self.order.push_back((now_ms + NONCE_KEPT_MS, digest));
        debug_assert_eq!(self.seen.len(), self.order.len());
        Ok(true)
    }
}

fn nonce_digest(key_id: &str, nonce: &str) -> [u8; 16] {
    let hash = Sha256::new().chain_update(key_id).chain_update([0]).chain_update(nonce).finalize();
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash[..16]);
    digest
}

/// What of a request a signature may cover, with the signature itself.
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub target_uri: &'a str,
    pub body: &'a [u8],
    pub content_digest: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub signature_input: Option<&'a str>,
    pub signature: Option<&'a str>,
}

fn refuse(component: &'static str, detail: impl Into<String>) -> Error {
    Error::Signature { component, detail: detail.into(), missing: false }
}

impl SigningKeys {
    /// Starts the checker. `cached`: every live key, for an embedded
    /// store's cache; `None` on a shared store (no cache).
    pub fn load(cached: Option<Vec<SigningKeyRecord>>) -> Result<SigningKeys, Error> {
        let cache = cached.map(|keys| {
            let mut cache = HashMap::new();
            keys.into_iter().for_each(|key| AgentSigningKeys::insert_into(&mut cache, key));
            RwLock::new(cache)
        });
        Ok(SigningKeys { cache, nonces: Mutex::default(), ed25519: batch::Ed25519Batches::start()? })
    }

    /// An agent's live keys, from the cache (an embedded store's).
    pub fn cached(&self, agent_id: &str) -> Result<AgentSigningKeys, Error> {
        let cache =
            self.cache.as_ref().ok_or_else(|| Error::Internal("no signing key cache on a shared store".into()))?;
        let cache = cache.read().map_err(|_| Error::Internal("signing key cache poisoned".into()))?;
        Ok(cache.get(agent_id).cloned().unwrap_or_default())
    }

    /// Runs `change` on the cache, if this process keeps one.
    fn change_cache(&self, change: impl FnOnce(&mut HashMap<String, AgentSigningKeys>)) -> Result<(), Error> {
        if let Some(cache) = &self.cache {
            change(&mut *cache.write().map_err(|_| Error::Internal("signing key cache poisoned".into()))?);
        }
        Ok(())
    }

    fn cache_insert(&self, key: SigningKeyRecord) -> Result<(), Error> {
        self.change_cache(|cache| AgentSigningKeys::insert_into(cache, key))
    }

    fn cache_remove(&self, agent_id: &str, key_id: &str) -> Result<(), Error> {
        self.change_cache(|cache| {
            if let Some(keys) = cache.get_mut(agent_id) {
                keys.0.retain(|k| k.record.id != key_id);
                if keys.0.is_empty() {
                    cache.remove(agent_id);
                }
            }
        })
    }

    /// Checks a write request of an agent whose live keys are `keys`:
    /// signed as they require, and signed well if it carries a signature at
    /// all. The nonce is spent only by a signature that verifies.
    pub async fn verify(&self, keys: &AgentSigningKeys, request: &SignedRequest<'_>, now_ms: i64) -> Result<(), Error> {
        let Some(Check { key, base, signature, nonce }) = Self::prepare(keys, request, now_ms)? else {
            return Ok(());
        };
        self.verify_signature(&key, base, &signature).await?;
        let mut nonces = self.nonces.lock().map_err(|_| Error::Internal("nonce window poisoned".into()))?;
        if !nonces.admit(&key.record.id, &nonce, now_ms)? {
            return Err(refuse("nonce", "this nonce was already used: a replayed request"));
        }
        Ok(())
    }

    /// Everything but the signature itself: the key named, the parameters
    /// and coverage, the digest, the signature base. `None` for an unsigned
    /// request of an agent that need not sign.
    fn prepare(keys: &AgentSigningKeys, request: &SignedRequest<'_>, now_ms: i64) -> Result<Option<Check>, Error> {
        let Some(input) = request.signature_input else {
            if keys.required() {
                return Err(Error::Signature {
                    component: "signature-input",
                    detail: "this agent's writes must be signed (RFC 9421): no Signature-Input header".into(),
                    missing: true,
                });
            }
            return Ok(None);
        };
        let inputs = signing::parse_signature_input(input).map_err(|e| refuse("signature-input", e.0))?;
        let signature = request.signature.ok_or_else(|| refuse("signature", "no Signature header"))?;
        let signatures = signing::parse_signature(signature).map_err(|e| refuse("signature", e.0))?;
        let (label, params, key) = Self::pick(keys, inputs)?;
        let signature = signatures
            .into_iter()
            .find_map(|(l, bytes)| (l == label).then_some(bytes))
            .ok_or_else(|| refuse("signature", format!("no signature labelled {label}")))?;
        check_params(&params, &key.record, request, now_ms)?;
        let message = Message {
            method: request.method,
            target_uri: request.target_uri,
            content_digest: request.content_digest,
            idempotency_key: request.idempotency_key,
        };
        let base = signing::signature_base(&message, &params).map_err(|e| refuse("signature-input", e.0))?;
        let nonce = params.nonce().unwrap_or_default().to_owned();
        Ok(Some(Check { key, base, signature, nonce }))
    }

    async fn verify_signature(&self, key: &LiveKey, base: String, signature: &[u8]) -> Result<(), Error> {
        let valid = match (key.record.alg, key.ed25519) {
            (Alg::Ed25519, Some(public_key)) => self.ed25519.verify(public_key, base.into_bytes(), signature).await?,
            (Alg::Ed25519, None) => false,
            (Alg::EcdsaP256Sha256, _) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                &key.record.public_key,
            )
            .verify(base.as_bytes(), signature)
            .is_ok(),
        };
        match valid {
            true => Ok(()),
            false => Err(refuse("signature", format!("the signature does not verify with the key {}", key.record.id))),
        }
    }

    /// The first signature made by a live key of the caller's agent.
    fn pick(
        keys: &AgentSigningKeys,
        inputs: Vec<(String, SignatureParams)>,
    ) -> Result<(String, SignatureParams, Arc<LiveKey>), Error> {
        let mut named = None;
        for (label, params) in inputs {
            let Some(key_id) = params.keyid() else { continue };
            match keys.by_id(key_id) {
                Some(key) => return Ok((label, params, Arc::clone(key))),
                None => named = Some(key_id.to_owned()),
            }
        }
        Err(match named {
            Some(id) => refuse("keyid", format!("{id} is not a live signing key of this agent (unknown or revoked)")),
            None => refuse("keyid", "no signature names a keyid"),
        })
    }
}

/// The parameters and coverage a coffer signature must have.
fn check_params(
    params: &SignatureParams,
    key: &SigningKeyRecord,
    request: &SignedRequest<'_>,
    now_ms: i64,
) -> Result<(), Error> {
    if let Some(alg) = params.alg()
        && alg != key.alg.as_str()
    {
        return Err(refuse("alg", format!("the key {} is {}, not {alg}", key.id, key.alg.as_str())));
    }
    let mut needed = vec![signing::METHOD, signing::TARGET_URI];
    if !request.body.is_empty() {
        needed.push(signing::CONTENT_DIGEST);
    }
    if request.idempotency_key.is_some() {
        needed.push(signing::IDEMPOTENCY_KEY);
    }
    if let Some(missing) = needed.into_iter().find(|c| !params.covers(c)) {
        return Err(refuse(component_name(missing), format!("the signature must cover {missing}")));
    }
    if params.covers(signing::CONTENT_DIGEST) || !request.body.is_empty() {
        let header = request.content_digest.ok_or_else(|| refuse("content-digest", "no Content-Digest header"))?;
        signing::check_content_digest(header, request.body).map_err(|e| refuse("content-digest", e.0))?;
    }
    let now_secs = now_ms.div_euclid(1000);
    let created = params.created().ok_or_else(|| refuse("created", "the signature has no created time"))?;
    if created < now_secs - SIGNATURE_AGE_MAX_SECS {
        return Err(refuse("created", format!("created {created} is more than {SIGNATURE_AGE_MAX_SECS} s ago")));
    }
    if created > now_secs + SIGNATURE_SKEW_AHEAD_MAX_SECS {
        return Err(refuse("created", format!("created {created} is in the future")));
    }
    if params.expires().is_some_and(|expires| expires <= now_secs) {
        return Err(refuse("expires", "the signature has expired"));
    }
    match params.nonce() {
        Some(n) if !n.is_empty() && n.len() <= signing::NONCE_LEN_MAX_BYTES => Ok(()),
        Some(_) => Err(refuse("nonce", format!("a nonce is 1 to {} bytes", signing::NONCE_LEN_MAX_BYTES))),
        None => Err(refuse("nonce", "the signature has no nonce")),
    }
}

/// A covered component's name as a `&'static str` for the problem.
fn component_name(component: &str) -> &'static str {
    match component {
        signing::METHOD => "@method",
        signing::TARGET_URI => "@target-uri",
        signing::CONTENT_DIGEST => "content-digest",
        _ => "idempotency-key",
    }
}

/// A signature to check, with what it must sign and the nonce it spends.
struct Check {
    key: Arc<LiveKey>,
    base: String,
    signature: Vec<u8>,
    nonce: String,
}

/// A public key as registered: standard base64 of the raw key, of the
/// length its algorithm has (and, for P-256, a point on the curve).
fn parse_public_key(alg: Alg, public_key: &str) -> Result<Vec<u8>, Error> {
    let bytes = STANDARD
        .decode(public_key.trim())
        .map_err(|_| invalid("public_key", "standard base64 of the raw public key".into()))?;
    if bytes.len() != alg.public_key_len() {
        let detail =
            format!("an {} public key is {} bytes; this is {}", alg.as_str(), alg.public_key_len(), bytes.len());
        return Err(invalid("public_key", detail));
    }
    match alg {
        Alg::EcdsaP256Sha256 if bytes.first() != Some(&0x04) => {
            Err(invalid("public_key", "a P-256 key is an uncompressed point (0x04, x, y)".into()))
        }
        // A point off the curve, or of small order (which would accept
        // signatures nobody made), is no key.
        Alg::Ed25519 if ed25519_dalek::VerifyingKey::try_from(bytes.as_slice()).map_or(true, |k| k.is_weak()) => {
            Err(invalid("public_key", "not a valid Ed25519 public key".into()))
        }
        _ => Ok(bytes),
    }
}

impl Gateway {
    /// Registers a public key of an agent: by the operator, an ancestor, or
    /// the agent itself (whose request must then be signed by one of its
    /// keys, if it has a required one: a leaked token cannot add its own).
    pub async fn create_signing_key(
        &self,
        caller: &Principal,
        agent_id: &str,
        alg: Option<&str>,
        public_key: &str,
        required: bool,
    ) -> Result<SigningKeyRecord, Error> {
        self.self_or_managed(caller, agent_id, Scope::Spend).await?;
        let alg = match alg {
            None => Alg::Ed25519,
            Some(name) => Alg::parse(name).ok_or_else(|| invalid("alg", "ed25519 or ecdsa-p256-sha256".into()))?,
        };
        let key = SigningKeyRecord {
            id: crate::secrets::new_id("sk_"),
            agent_id: agent_id.to_owned(),
            alg,
            public_key: parse_public_key(alg, public_key)?,
            required,
            created_at_ms: self.now_ms(),
            revoked_at_ms: None,
        };
        let actor = actor(caller);
        let stored = key.clone();
        self.store.write(move |tx| insert_signing_key(tx, &stored, actor.clone())).await?;
        self.signing.cache_insert(key.clone())?;
        Ok(key)
    }

    pub async fn signing_keys(&self, caller: &Principal, agent_id: &str) -> Result<Vec<SigningKeyRecord>, Error> {
        self.self_or_managed(caller, agent_id, Scope::Read).await?;
        let agent_id = agent_id.to_owned();
        // Revoked keys stay listed; a few rotations' worth is enough.
        let limit = SIGNING_KEYS_PER_AGENT_MAX * 4;
        self.store.read(move |tx| tx.signing_keys_of(&agent_id, limit)).await
    }

    pub async fn revoke_signing_key(&self, caller: &Principal, agent_id: &str, key_id: &str) -> Result<(), Error> {
        self.self_or_managed(caller, agent_id, Scope::Spend).await?;
        let (agent, key, now_ms, actor) = (agent_id.to_owned(), key_id.to_owned(), self.now_ms(), actor(caller));
        let revoked = self
            .store
            .write(move |tx| {
                let revoked = tx.revoke_signing_key(&agent, &key, now_ms)?;
                if revoked {
                    tx.audit(&key_audit("signing_key.revoked", &agent, &key, actor.clone(), now_ms))?;
                }
                Ok(revoked)
            })
            .await?;
        if !revoked {
            return Err(Error::NotFound("signing key"));
        }
        self.signing.cache_remove(agent_id, key_id)?;
        Ok(())
    }

    /// Checks the signature of a write request of an agent whose live keys
    /// are `keys` (see [`SigningKeys::verify`]).
    pub async fn verify_signed_request(
        &self,
        keys: &AgentSigningKeys,
        request: &SignedRequest<'_>,
    ) -> Result<(), Error> {
        self.signing.verify(keys, request, self.now_ms()).await
    }

    /// The agent itself with a key of scope `needed` (keys decide what the
    /// agent's money may do: changing them takes `spend`), or one the
    /// caller manages.
    pub(super) async fn self_or_managed(&self, caller: &Principal, agent_id: &str, needed: Scope) -> Result<(), Error> {
        match caller {
            Principal::Agent(key) if key.agent_id == agent_id => {
                key.require(needed)?;
                self.agent(agent_id).await.map(drop)
            }
            _ => self.managed_agent(caller, agent_id).await.map(drop),
        }
    }
}

/// Who the audit names for a caller's change.
pub(super) fn actor(caller: &Principal) -> String {
    match caller {
        Principal::Operator => crate::model::OPERATOR.to_owned(),
        Principal::Agent(key) => key.agent_id.clone(),
    }
}

fn insert_signing_key(tx: &mut dyn crate::store::Tx, key: &SigningKeyRecord, actor: String) -> Result<(), Error> {
    let live = tx.signing_keys_of(&key.agent_id, SIGNING_KEYS_PER_AGENT_MAX * 4)?;
    if live.iter().filter(|k| k.revoked_at_ms.is_none()).count() >= SIGNING_KEYS_PER_AGENT_MAX as usize {
        let detail = format!("an agent holds at most {SIGNING_KEYS_PER_AGENT_MAX} live signing keys; revoke one");
        return Err(Error::limit_final(Limit::SigningKeysPerAgent, detail));
    }
    tx.insert_signing_key(key)?;
    let mut entry = key_audit("signing_key.created", &key.agent_id, &key.id, actor, key.created_at_ms);
    entry.detail = Some(format!("{}{}", key.alg.as_str(), if key.required { ", required" } else { "" }));
    tx.audit(&entry)
}

/// The audit entry of a change to a key an agent holds (a signing key, an
/// NWC connection): by `actor`, naming the key.
pub(super) fn key_audit(action: &'static str, agent_id: &str, key_id: &str, actor: String, at_ms: i64) -> AuditEntry {
    AuditEntry {
        at_ms,
        action,
        actor,
        key_id: Some(key_id.to_owned()),
        agent_id: Some(agent_id.to_owned()),
        amount_msat: None,
        payee: None,
        purpose: None,
        rule: None,
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_admitted_once_within_the_window() {
        let mut nonces = Nonces::default();
        assert!(nonces.admit("sk_a", "n1", 0).unwrap());
        assert!(!nonces.admit("sk_a", "n1", NONCE_KEPT_MS - 1).unwrap());
        assert!(nonces.admit("sk_b", "n1", 1).unwrap(), "nonces are per key");
        assert!(nonces.admit("sk_a", "n1", NONCE_KEPT_MS).unwrap(), "forgotten once a replay is stale");
        assert_eq!(nonces.seen.len(), nonces.order.len());
    }

    #[test]
    fn public_keys_are_checked_for_length_and_form() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]).verifying_key().to_bytes();
        assert!(parse_public_key(Alg::Ed25519, &STANDARD.encode(key)).is_ok());
        // The identity point: of small order, so weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_public_key(Alg::Ed25519, &STANDARD.encode(identity)).is_err());
        assert!(parse_public_key(Alg::Ed25519, &STANDARD.encode([1u8; 31])).is_err());
        assert!(parse_public_key(Alg::Ed25519, "not base64!").is_err());
        assert!(parse_public_key(Alg::EcdsaP256Sha256, &STANDARD.encode([2u8; 65])).is_err());
    }
}
