//! Who a request is: its bearer secret resolved to the operator or an agent
//! key, and, for a write, the agent's live signing keys.
//!
//! On an embedded store this process writes every key, so its cache is
//! exact: creation and revocation update it after their commit. On a
//! shared store other instances write keys too, so each request reads its
//! key (and, for a write, its agent's signing keys) from the database, in
//! one read: a key created on one instance works on every other at once,
//! and a revoked one is refused everywhere at once. A digest found dead is
//! remembered (a bounded set) and refused from memory: it never comes alive
//! later, since a new key is always a new random secret. An unknown secret
//! thus costs one indexed read, as a read request of a live key does.

use super::signing::AgentSigningKeys;
use super::{AgentKey, Gateway, Principal};
use crate::error::Error;
use crate::model::KeyRecord;
use crate::secrets::{self, SecretDigest};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Digests remembered as dead, at most; the oldest are forgotten first
/// (and looked up again if they come back). 32 bytes each, twice.
const DEAD_KEYS_MAX: usize = 65_536;

/// The gateway's set of dead digests.
pub type DeadKeySet = Mutex<DeadKeys>;

/// Digests of secrets that are no live key (unknown, revoked).
#[derive(Default)]
pub struct DeadKeys {
    set: HashSet<SecretDigest>,
    order: VecDeque<SecretDigest>,
}

impl DeadKeys {
    fn insert(&mut self, digest: SecretDigest) {
        if !self.set.insert(digest) {
            return;
        }
        self.order.push_back(digest);
        if self.order.len() > DEAD_KEYS_MAX
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        debug_assert_eq!(self.set.len(), self.order.len());
    }
}

impl Gateway {
    /// Resolves a bearer secret. Unknown, revoked and expired secrets look
    /// the same.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, Error> {
        Ok(self.resolve(secret, false).await?.0)
    }

    /// [`Gateway::authenticate`] with the agent's live signing keys, for
    /// checking a write request's signature (none for the operator).
    pub async fn authenticate_signed(&self, secret: &str) -> Result<(Principal, AgentSigningKeys), Error> {
        self.resolve(secret, true).await
    }

    /// Whether `secret` is the operator's token (no I/O).
    pub fn is_operator(&self, secret: &str) -> bool {
        secret.len() <= secrets::SECRET_LEN_MAX_BYTES && SecretDigest::of(secret).matches(&self.operator)
    }

    async fn resolve(&self, secret: &str, signing_keys: bool) -> Result<(Principal, AgentSigningKeys), Error> {
        if secret.is_empty() || secret.len() > secrets::SECRET_LEN_MAX_BYTES {
            return Err(Error::Unauthorized);
        }
        let digest = SecretDigest::of(secret);
        if digest.matches(&self.operator) {
            return Ok((Principal::Operator, AgentSigningKeys::default()));
        }
        let (key, keys) = match self.store.shared() {
            false => self.cached_key(&digest, signing_keys)?,
            true => self.stored_key(digest, signing_keys).await?,
        };
        match key {
            Some(key) if key.expires_at_ms.is_none_or(|at| self.now_ms() < at) => Ok((Principal::Agent(key), keys)),
            _ => Err(Error::Unauthorized),
        }
    }

    fn cached_key(
        &self,
        digest: &SecretDigest,
        signing_keys: bool,
    ) -> Result<(Option<AgentKey>, AgentSigningKeys), Error> {
        let key = {
            let keys = self.keys.read().map_err(|_| Error::Internal("key cache poisoned".into()))?;
            match keys.get_key_value(digest) {
                Some((stored, key)) if stored.matches(digest) => Some(key.clone()),
                _ => None,
            }
        };
        let keys = match (&key, signing_keys) {
            (Some(key), true) => self.signing.cached(&key.agent_id)?,
            _ => AgentSigningKeys::default(),
        };
        Ok((key, keys))
    }

    /// The key and its agent's signing keys as the database has them now.
    async fn stored_key(
        &self,
        digest: SecretDigest,
        signing_keys: bool,
    ) -> Result<(Option<AgentKey>, AgentSigningKeys), Error> {
        if self.dead_keys()?.set.contains(&digest) {
            return Ok((None, AgentSigningKeys::default()));
        }
        let (key, keys) = self
            .store
            .read(move |tx| {
                let key = tx.live_key_by_digest(&digest)?;
                let keys = match (&key, signing_keys) {
                    (Some(key), true) => tx.live_signing_keys_of(&key.agent_id)?,
                    _ => Vec::new(),
                };
                Ok((key, keys))
            })
            .await?;
        if key.is_none() {
            self.dead_keys()?.insert(digest);
        }
        Ok((key.as_ref().map(AgentKey::from), AgentSigningKeys::from_records(keys)))
    }

    fn dead_keys(&self) -> Result<std::sync::MutexGuard<'_, DeadKeys>, Error> {
        self.dead_keys.lock().map_err(|_| Error::Internal("dead key set poisoned".into()))
    }

    /// Remembers a key this process created (the cache of an embedded
    /// store; a shared one reads keys from the database).
    pub(super) fn cache_key(&self, key: &KeyRecord) -> Result<(), Error> {
        if self.store.shared() {
            return Ok(());
        }
        let mut keys = self.keys.write().map_err(|_| Error::Internal("key cache poisoned".into()))?;
        keys.insert(key.digest, AgentKey::from(key));
        Ok(())
    }

    /// Forgets a key this process revoked.
    pub(super) fn forget_key(&self, key: &KeyRecord) -> Result<(), Error> {
        if self.store.shared() {
            self.dead_keys()?.insert(key.digest);
            return Ok(());
        }
        let mut keys = self.keys.write().map_err(|_| Error::Internal("key cache poisoned".into()))?;
        keys.remove(&key.digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_set_stays_bounded_and_forgets_the_oldest_first() {
        let mut dead = DeadKeys::default();
        let digest = |i: usize| SecretDigest::of(&i.to_string());
        for i in 0..DEAD_KEYS_MAX + 10 {
            dead.insert(digest(i));
            dead.insert(digest(i));
        }
        assert_eq!(dead.set.len(), DEAD_KEYS_MAX);
        assert!(!dead.set.contains(&digest(9)) && dead.set.contains(&digest(10)));
        assert!(dead.set.contains(&digest(DEAD_KEYS_MAX + 9)));
    }
}
