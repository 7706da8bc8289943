//! Payment notifications (NIP-47 kinds 23196 and 23197): `payment_received`
//! when an agent's invoice is paid, `payment_sent` when its payment
//! succeeds, to each live connection of the agent that asked for them.
//!
//! Every instance follows the outbox; each notification of one event to one
//! connection is taken in the store first, so exactly one instance sends
//! it. It goes out twice, once per encryption (23197 NIP-44, 23196 NIP-04
//! for older clients), to every relay: a client listens for one kind.

use super::{KIND_NOTIFICATION_NIP04, KIND_NOTIFICATION_NIP44, Service};
use crate::error::Error;
use crate::gateway::Principal;
use crate::gateway::nwc::NwcLookup;
use crate::lightning::nwc::crypto::{Conversation, Encryption};
use crate::model::{EventRecord, NwcConnectionRecord};
use bitcoin::secp256k1::XOnlyPublicKey;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The notifications coffer sends.
pub const TYPES: [&str; 2] = ["payment_received", "payment_sent"];
/// The wait before following the outbox again after it failed.
const RETRY_MS: u64 = 1_000;

pub async fn run(service: Arc<Service>) {
    loop {
        if let Err(e) = follow(&service).await {
            tracing::warn!(error = %e, "NWC notifications: following the outbox failed; resuming");
        }
        tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
    }
}

/// Follows the outbox from its newest event on.
async fn follow(service: &Service) -> Result<(), Error> {
    let gateway = &service.gateway;
    let after = gateway.newest_event_id().await?;
    let mut events = gateway.follow_events(&Principal::Operator, after)?;
    loop {
        let event = events.next().await?;
        let notification_type = match event.kind.as_str() {
            "invoice.paid" => TYPES[0],
            "payment.succeeded" => TYPES[1],
            _ => continue,
        };
        let Some(agent_id) = event.agent_id.as_deref() else { continue };
        let connections = gateway.nwc_notified(agent_id).await?;
        if connections.is_empty() {
            continue;
        }
        let Some(transaction) = transaction(service, agent_id, &event).await else { continue };
        let content = json!({"notification_type": notification_type, "notification": transaction}).to_string();
        for connection in connections {
            if gateway.take_nwc_notification(&connection.id, event.id).await? {
                service.notify(&connection, &content);
            }
        }
    }
}

/// The event's payment as a NIP-47 transaction.
async fn transaction(service: &Service, agent_id: &str, event: &EventRecord) -> Option<Value> {
    let hash = event.data.get("payment_hash")?.as_str().and_then(crate::lightning::nwc::event::hex32)?;
    match service.gateway.nwc_lookup(agent_id, hash).await {
        Ok(NwcLookup::Incoming(invoice)) => Some(super::wallet::incoming(&invoice)),
        Ok(NwcLookup::Outgoing(payment, invoice)) => Some(super::wallet::outgoing(&payment, invoice.as_deref())),
        Err(e) => {
            tracing::warn!(event = event.id, error = %e, "NWC notification: the payment was not found");
            None
        }
    }
}

impl Service {
    fn notify(&self, connection: &NwcConnectionRecord, content: &str) {
        let Ok(client) = XOnlyPublicKey::from_slice(&connection.client_pubkey) else { return };
        let conversation = Conversation::new(&self.keys.secret_key(), &client);
        let tags = vec![vec!["p".to_owned(), hex::encode(connection.client_pubkey)]];
        for (kind, encryption) in
            [(KIND_NOTIFICATION_NIP44, Encryption::Nip44V2), (KIND_NOTIFICATION_NIP04, Encryption::Nip04)]
        {
            let Ok(encrypted) = conversation.encrypt(encryption, content) else { continue };
            let event = self.sign(kind, tags.clone(), encrypted);
            self.broadcast(&json!(["EVENT", event]).to_string());
        }
    }
}
