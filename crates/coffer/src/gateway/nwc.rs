//! Nostr Wallet Connect connections (NIP-47): an agent's wallet handed to a
//! tool as a `nostr+walletconnect://` string. The operator, an ancestor or
//! the agent itself creates one; its client secret is shown once, in the
//! URI, and only the client's public key is kept. A request signed by that
//! key acts as the agent, with the scope its methods imply, through the
//! same operations as HTTP (the edge is `crate::nwc`).
//!
//! The wallet service's own key is derived from the node key, so every
//! instance of one gateway (which share the node key) is the same wallet:
//! each request is taken by one of them in the store
//! ([`Gateway::take_nwc_request`]) and answered once.

use super::signing::{actor, key_audit};
use super::{AgentKey, Gateway, Principal, invalid};
use crate::error::Error;
use crate::limits::{Limit, NWC_CONNECTIONS_PER_AGENT_MAX};
use crate::model::{InvoiceRecord, NwcConnectionRecord, NwcMethods, PageRequest, PaymentRecord};
use bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey};
use coffer_client::Scope;

/// What the wallet service's key is derived with, from the node key.
const WALLET_KEY_LABEL: &[u8] = b"coffer/nwc/wallet-service/v1";
/// The longest name of a connection.
pub const NWC_NAME_LEN_MAX_CHARS: usize = 100;
/// A request taken is remembered this long: a duplicate delivered later
/// than this is older than [`NWC_REQUEST_AGE_MAX_SECS`] and ignored anyway.
pub const NWC_REQUEST_KEPT_MS: i64 = 2 * NWC_REQUEST_AGE_MAX_SECS * 1000;
/// A request created longer ago than this is ignored (a relay replaying
/// stored events after a reconnection must not pay anything twice or late).
pub const NWC_REQUEST_AGE_MAX_SECS: i64 = 300;
/// How far ahead of this gateway's clock a request may be dated.
pub const NWC_REQUEST_SKEW_AHEAD_MAX_SECS: i64 = 60;
/// Requests forgotten per write when pruning.
const NWC_PRUNE_BATCH_MAX: u32 = 1_000;

const _: () = assert!(NWC_REQUEST_KEPT_MS > (NWC_REQUEST_AGE_MAX_SECS + NWC_REQUEST_SKEW_AHEAD_MAX_SECS) * 1000);

/// A new connection: the record and the client secret (hex), which is
/// never stored.
pub struct NewNwcConnection {
    pub record: NwcConnectionRecord,
    pub client_secret_hex: String,
    /// The `nostr+walletconnect://` URI with the secret: shown once.
    pub uri: String,
}

/// What a request event's author and id came to.
pub enum NwcCaller {
    /// A live connection's request, taken by this instance: answer it.
    Taken(NwcConnectionRecord, AgentKey),
    /// A revoked or expired connection's request, taken: answer
    /// `UNAUTHORIZED`.
    Dead(NwcConnectionRecord),
    /// Taken before (a duplicate delivery, or another instance's), or no
    /// connection has this key: nothing is answered.
    Ignored,
}

/// A payment hash as the agent knows it: an invoice of its own, or a
/// payment it made (with the invoice, when it was one of this gateway's).
pub enum NwcLookup {
    Incoming(InvoiceRecord),
    Outgoing(PaymentRecord, Option<Box<InvoiceRecord>>),
}

/// Payments of the agent searched for a payment hash that is not one of
/// this gateway's invoices (an outside payment): the newest ones.
const LOOKUP_PAYMENTS_MAX: u32 = 200;

/// What the options of a new connection say.
pub struct NwcConnectionSpec<'a> {
    pub name: &'a str,
    pub methods: Option<&'a [String]>,
    pub expires_at_ms: Option<i64>,
    pub notifications: bool,
}

impl Gateway {
    /// The wallet service's key pair: the same on every instance.
    pub fn nwc_wallet_keys(&self) -> Result<Keypair, Error> {
        let secret = SecretKey::from_slice(&self.node.derive_key(WALLET_KEY_LABEL))
            .map_err(|_| Error::Internal("the derived NWC wallet key is not a valid key".into()))?;
        Ok(Keypair::from_secret_key(&Secp256k1::signing_only(), &secret))
    }

    /// Creates a connection for an agent: by the operator, an ancestor, or
    /// the agent itself with a `spend` key (a connection may spend).
    pub async fn create_nwc_connection(
        &self,
        caller: &Principal,
        agent_id: &str,
        spec: NwcConnectionSpec<'_>,
    ) -> Result<NewNwcConnection, Error> {
        self.self_or_managed(caller, agent_id, Scope::Spend).await?;
        if self.settings.nwc_relays.is_empty() {
            let detail = "Nostr Wallet Connect is off: no relay is configured (COFFER_NWC_RELAYS)";
            return Err(Error::InvalidState(detail.into()));
        }
        let (methods, name) = (parse_methods(spec.methods)?, parse_name(spec.name)?);
        let now_ms = self.now_ms();
        if spec.expires_at_ms.is_some_and(|at| at <= now_ms) {
            return Err(invalid("expires_at", "a time in the future".into()));
        }
        let secret = SecretKey::from_slice(&crate::secrets::random_bytes::<32>())
            .map_err(|_| Error::Internal("a random secret key was out of range".into()))?;
        let client = Keypair::from_secret_key(&Secp256k1::signing_only(), &secret);
        let record = NwcConnectionRecord {
            id: crate::secrets::new_id("nwc_"),
            agent_id: agent_id.to_owned(),
            name,
            client_pubkey: client.x_only_public_key().0.serialize(),
            methods,
            notifications: spec.notifications,
            created_at_ms: now_ms,
            expires_at_ms: spec.expires_at_ms,
            revoked_at_ms: None,
            last_used_at_ms: None,
        };
        let (stored, actor) = (record.clone(), actor(caller));
        self.store.write(move |tx| insert_connection(tx, &stored, actor.clone())).await?;
        let client_secret_hex = hex::encode(secret.secret_bytes());
        let uri = self.nwc_uri(&client_secret_hex)?;
        Ok(NewNwcConnection { record, client_secret_hex, uri })
    }

    /// `nostr+walletconnect://<wallet pubkey>?relay=…&secret=…`, a `relay`
    /// parameter per configured relay.
    fn nwc_uri(&self, client_secret_hex: &str) -> Result<String, Error> {
        let wallet = hex::encode(self.nwc_wallet_keys()?.x_only_public_key().0.serialize());
        let mut uri = reqwest::Url::parse(&format!("nostr+walletconnect://{wallet}"))
            .map_err(|e| Error::internal("building the NWC URI", e))?;
        {
            let mut query = uri.query_pairs_mut();
            for relay in &self.settings.nwc_relays {
                query.append_pair("relay", relay);
            }
            query.append_pair("secret", client_secret_hex);
        }
        Ok(uri.into())
    }

    /// An agent's connections, revoked ones included, newest first.
    pub async fn nwc_connections(&self, caller: &Principal, agent_id: &str) -> Result<Vec<NwcConnectionRecord>, Error> {
        self.self_or_managed(caller, agent_id, Scope::Read).await?;
        let agent_id = agent_id.to_owned();
        let limit = NWC_CONNECTIONS_PER_AGENT_MAX * 4;
        self.store.read(move |tx| tx.nwc_connections_of(&agent_id, limit)).await
    }

    /// Revokes a connection: its requests are refused from the next one
    /// on, on every instance (each request reads its connection).
    pub async fn revoke_nwc_connection(&self, caller: &Principal, agent_id: &str, id: &str) -> Result<(), Error> {
        self.self_or_managed(caller, agent_id, Scope::Spend).await?;
        let (agent, id, now_ms, actor) = (agent_id.to_owned(), id.to_owned(), self.now_ms(), actor(caller));
        let revoked = self
            .store
            .write(move |tx| {
                let revoked = tx.revoke_nwc_connection(&agent, &id, now_ms)?;
                if revoked {
                    tx.audit(&key_audit("nwc_connection.revoked", &agent, &id, actor.clone(), now_ms))?;
                }
                Ok(revoked)
            })
            .await?;
        if !revoked {
            return Err(Error::NotFound("NWC connection"));
        }
        Ok(())
    }

    /// Finds the connection of a request's author and takes the request,
    /// in one write: of duplicate deliveries, and of several instances
    /// reading one relay, exactly one takes it.
    pub async fn take_nwc_request(&self, client_pubkey: [u8; 32], event_id: [u8; 32]) -> Result<NwcCaller, Error> {
        let now_ms = self.now_ms();
        let found = self
            .store
            .write(move |tx| {
                let Some(connection) = tx.nwc_connection_by_client(&client_pubkey)? else { return Ok(None) };
                if !tx.take_nwc_request(&event_id, &connection.id, now_ms)? {
                    return Ok(None);
                }
                let account = tx.agent(&connection.agent_id)?.map(|a| a.account);
                Ok(Some((connection, account)))
            })
            .await?;
        Ok(match found {
            None => NwcCaller::Ignored,
            Some((connection, Some(account))) if connection.live(now_ms) => {
                let key = AgentKey {
                    key_id: connection.id.clone(),
                    agent_id: connection.agent_id.clone(),
                    account,
                    scope: connection.methods.scope(),
                    expires_at_ms: connection.expires_at_ms,
                };
                NwcCaller::Taken(connection, key)
            }
            Some((connection, _)) => NwcCaller::Dead(connection),
        })
    }

    /// Takes a notification of an event for a connection: of several
    /// instances that follow the outbox, one sends it.
    pub async fn take_nwc_notification(&self, connection_id: &str, event_id: i64) -> Result<bool, Error> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::new()
            .chain_update(b"notification\0")
            .chain_update(connection_id)
            .chain_update(event_id.to_be_bytes())
            .finalize()
            .into();
        let (connection, now_ms) = (connection_id.to_owned(), self.now_ms());
        self.store.write(move |tx| tx.take_nwc_request(&digest, &connection, now_ms)).await
    }

    /// The live connections of an agent that are sent notifications.
    pub async fn nwc_notified(&self, agent_id: &str) -> Result<Vec<NwcConnectionRecord>, Error> {
        let (agent_id, now_ms) = (agent_id.to_owned(), self.now_ms());
        let all =
            self.store.read(move |tx| tx.nwc_connections_of(&agent_id, NWC_CONNECTIONS_PER_AGENT_MAX * 4)).await?;
        Ok(all.into_iter().filter(|c| c.notifications && c.live(now_ms)).collect())
    }

    /// Admits one request of a connection within the write rates of a key
    /// (the connection's) and of its agent: a flooding client is refused
    /// as a flooding key is, and feeds its agent's breaker the same way.
    pub async fn admit_nwc_request(&self, key: &AgentKey) -> Result<(), Error> {
        let admitted = self.throttle.admit_write(&self.settings.limits, &key.key_id, &key.agent_id);
        self.feed_breaker(&key.agent_id, admitted).await
    }

    /// A payment hash of an agent's: its invoice, or its payment.
    pub async fn nwc_lookup(&self, agent_id: &str, payment_hash: [u8; 32]) -> Result<NwcLookup, Error> {
        let agent_id = agent_id.to_owned();
        self.store
            .read(move |tx| {
                let invoice = tx.invoice(&payment_hash)?.map(|(invoice, _)| invoice);
                if let Some(invoice) = invoice.as_ref().filter(|i| i.agent_id == agent_id) {
                    return Ok(NwcLookup::Incoming(invoice.clone()));
                }
                let page = PageRequest { before: None, limit: LOOKUP_PAYMENTS_MAX };
                let (payments, _) = tx.payments(&agent_id, page)?;
                match payments.into_iter().find(|p| p.payment_hash == payment_hash) {
                    Some(payment) => Ok(NwcLookup::Outgoing(payment, invoice.map(Box::new))),
                    None => Err(Error::NotFound("invoice or payment of this wallet")),
                }
            })
            .await
    }

    /// Forgets requests taken long enough ago that a duplicate would be
    /// ignored for its age anyway.
    pub async fn prune_nwc_requests(&self) -> Result<u64, Error> {
        let before_ms = self.now_ms().saturating_sub(NWC_REQUEST_KEPT_MS);
        self.store.write(move |tx| tx.prune_nwc_requests(before_ms, NWC_PRUNE_BATCH_MAX)).await
    }
}

/// The methods asked for (default: all), each known, at least one.
fn parse_methods(methods: Option<&[String]>) -> Result<NwcMethods, Error> {
    let Some(names) = methods else { return Ok(NwcMethods::all()) };
    let known = NwcMethods::all().names();
    let parsed = NwcMethods::parse_names(&names.join(" "))
        .filter(|_| names.iter().all(|n| !n.contains(char::is_whitespace)))
        .ok_or_else(|| invalid("methods", format!("NIP-47 methods among: {known}")))?;
    if parsed.is_empty() {
        return Err(invalid("methods", format!("at least one of: {known}")));
    }
    Ok(parsed)
}

fn parse_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NWC_NAME_LEN_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(invalid("name", format!("1 to {NWC_NAME_LEN_MAX_CHARS} characters, no control characters")));
    }
    Ok(name.to_owned())
}

fn insert_connection(tx: &mut dyn crate::store::Tx, c: &NwcConnectionRecord, actor: String) -> Result<(), Error> {
    let all = tx.nwc_connections_of(&c.agent_id, NWC_CONNECTIONS_PER_AGENT_MAX * 4)?;
    if all.iter().filter(|k| k.live(c.created_at_ms)).count() >= NWC_CONNECTIONS_PER_AGENT_MAX as usize {
        let detail = format!("an agent holds at most {NWC_CONNECTIONS_PER_AGENT_MAX} live NWC connections; revoke one");
        return Err(Error::limit_final(Limit::NwcConnectionsPerAgent, detail));
    }
    tx.insert_nwc_connection(c)?;
    let mut entry = key_audit("nwc_connection.created", &c.agent_id, &c.id, actor, c.created_at_ms);
    entry.detail = Some(format!("{}: {}", c.name, c.methods.names()));
    tx.audit(&entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_default_to_all_and_must_be_known() {
        assert_eq!(parse_methods(None).ok(), Some(NwcMethods::all()));
        let some = ["get_balance".to_owned(), "pay_invoice".to_owned()];
        assert_eq!(parse_methods(Some(&some)).map(NwcMethods::names).ok().as_deref(), Some("get_balance pay_invoice"));
        assert!(parse_methods(Some(&["pay_keysend".to_owned()])).is_err());
        assert!(parse_methods(Some(&["get_info pay_invoice".to_owned()])).is_err(), "one name per entry");
        assert!(parse_methods(Some(&[])).is_err());
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(parse_name("  my tool ").ok().as_deref(), Some("my tool"));
        assert!(parse_name("").is_err());
        assert!(parse_name("a\nb").is_err());
        assert!(parse_name(&"x".repeat(NWC_NAME_LEN_MAX_CHARS + 1)).is_err());
    }
}
