//! One request (kind 23194) to its answer (kind 23195): checked, taken,
//! decrypted, dispatched to `wallet`, encrypted back with the scheme the
//! request used.

use super::wallet::{self, NwcError};
use super::{Service, lock, short};
use crate::gateway::nwc::{NWC_REQUEST_AGE_MAX_SECS, NWC_REQUEST_SKEW_AHEAD_MAX_SECS, NwcCaller};
use crate::lightning::nwc::crypto::{Conversation, Encryption};
use crate::lightning::nwc::event::{Event, hex32};
use crate::limits::NWC_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX;
use crate::model::{NwcConnectionRecord, NwcMethod};
use bitcoin::secp256k1::XOnlyPublicKey;
use serde::Deserialize;
use serde_json::{Value, json};

pub const KIND_REQUEST: u32 = 23194;
pub const KIND_RESPONSE: u32 = 23195;
/// Notifications encrypted with NIP-04 (older clients) and with NIP-44.
pub const KIND_NOTIFICATION_NIP04: u32 = 23196;
pub const KIND_NOTIFICATION_NIP44: u32 = 23197;

#[derive(Deserialize)]
struct Request {
    method: String,
    #[serde(default)]
    params: Value,
}

/// Why a request gets no answer at all (logged at debug: anyone can send
/// events to a public relay).
type Ignored = &'static str;

impl Service {
    /// The answer to a request event, or `None` when it gets none.
    pub(super) async fn answer(&self, event: Event) -> Option<Event> {
        match self.check(&event) {
            Err(why) => {
                tracing::debug!(event = %short(&event.id), why, "NWC request ignored");
                None
            }
            Ok((client, event_id, encryption)) => self.take(event, client, event_id, encryption).await,
        }
    }

    /// Everything that can be checked without the store: id and signature
    /// first, then kind, addressee, age, expiration and encryption.
    fn check(&self, event: &Event) -> Result<(XOnlyPublicKey, [u8; 32], Encryption), Ignored> {
        event.verify(&self.secp)?;
        if event.kind != KIND_REQUEST || event.tag("p") != Some(self.wallet_hex.as_str()) {
            return Err("not a request to this wallet");
        }
        let now_secs = i64::try_from(crate::lightning::nwc::now_secs()).unwrap_or(i64::MAX);
        let created_secs = i64::try_from(event.created_at).unwrap_or(i64::MAX);
        if created_secs < now_secs - NWC_REQUEST_AGE_MAX_SECS
            || created_secs > now_secs + NWC_REQUEST_SKEW_AHEAD_MAX_SECS
        {
            return Err("created too long ago or in the future");
        }
        if let Some(expiration) = event.tag("expiration") {
            match expiration.parse::<i64>() {
                Ok(at) if at > now_secs => {}
                _ => return Err("expired"),
            }
        }
        let encryption = match event.tag("encryption") {
            None | Some("nip04") => Encryption::Nip04,
            Some("nip44_v2") => Encryption::Nip44V2,
            Some(_) => return Err("an encryption this wallet does not offer"),
        };
        let id = hex32(&event.id).ok_or("id is not 32 bytes of hex")?;
        let client = hex32(&event.pubkey).and_then(|k| XOnlyPublicKey::from_slice(&k).ok()).ok_or("bad pubkey")?;
        Ok((client, id, encryption))
    }

    /// Takes the request in the store and answers it, if it is this
    /// instance's to answer.
    async fn take(&self, event: Event, client: XOnlyPublicKey, id: [u8; 32], encryption: Encryption) -> Option<Event> {
        let conversation = Conversation::new(&self.keys.secret_key(), &client);
        let request = conversation
            .decrypt(encryption, &event.content)
            .ok()
            .and_then(|plain| serde_json::from_str::<Request>(&plain).ok());
        let caller = match self.gateway.take_nwc_request(client.serialize(), id).await {
            Ok(caller) => caller,
            Err(e) => {
                // Not taken: another delivery of it may be answered.
                tracing::warn!(event = %short(&event.id), error = %e, "NWC request not taken");
                return None;
            }
        };
        let method = request.as_ref().map_or("unknown", |r| r.method.as_str());
        let outcome = match (caller, &request) {
            (NwcCaller::Ignored, _) => return None,
            (NwcCaller::Dead(_), _) => Err(NwcError::new("UNAUTHORIZED", "this connection was revoked or has expired")),
            (NwcCaller::Taken(..), None) => Err(NwcError::new("OTHER", "the request is not a NIP-47 request")),
            (NwcCaller::Taken(connection, key), Some(request)) => {
                self.dispatch(&connection, &key, request, &event.id).await
            }
        };
        let body = match outcome {
            Ok(result) => json!({"result_type": method, "result": result}),
            Err(e) => json!({"result_type": method, "error": {"code": e.code, "message": e.message}}),
        };
        let content = conversation.encrypt(encryption, &body.to_string()).ok()?;
        let tags = vec![vec!["p".to_owned(), event.pubkey.clone()], vec!["e".to_owned(), event.id.clone()]];
        Some(self.sign(KIND_RESPONSE, tags, content))
    }

    /// Within the connection's grant, its bound in flight and its rate.
    async fn dispatch(
        &self,
        connection: &NwcConnectionRecord,
        key: &crate::gateway::AgentKey,
        request: &Request,
        event_id: &str,
    ) -> Result<Value, NwcError> {
        let method = NwcMethod::parse(&request.method)
            .ok_or_else(|| NwcError::new("NOT_IMPLEMENTED", format!("coffer does not offer {}", request.method)))?;
        if !connection.methods.contains(method) {
            let detail =
                format!("this connection may not {}: it was given {}", method.as_str(), connection.methods.names());
            return Err(NwcError::new("RESTRICTED", detail));
        }
        let _slot = InFlight::enter(self, &connection.id)?;
        self.gateway.admit_nwc_request(key).await.map_err(NwcError::from)?;
        wallet::call(&self.gateway, connection, key, method, &request.params, event_id).await
    }
}

/// A connection's place among its requests in flight.
struct InFlight<'a> {
    service: &'a Service,
    connection_id: String,
}

impl<'a> InFlight<'a> {
    fn enter(service: &'a Service, connection_id: &str) -> Result<InFlight<'a>, NwcError> {
        let mut counts = lock(&service.per_connection);
        let count = counts.entry(connection_id.to_owned()).or_default();
        if *count >= NWC_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX {
            crate::metrics::METRICS.record_limit_hit(crate::limits::Limit::NwcRequestsInFlight);
            let detail =
                format!("at most {NWC_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX} requests of a connection at once");
            return Err(NwcError::new("RATE_LIMITED", detail));
        }
        *count += 1;
        Ok(InFlight { service, connection_id: connection_id.to_owned() })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut counts = lock(&self.service.per_connection);
        if let Some(count) = counts.get_mut(&self.connection_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.connection_id);
            }
        }
    }
}
