//! The outbox as callers see it: events by key, and webhook subscriptions.
//!
//! Visibility: the operator sees every event; an agent's key sees the events
//! of its own agent (`agent_id` is the agent), never another's and never the
//! gateway-wide ones.

use super::*;
use crate::io::{DeliveryRecord, EventRecord, WebhookRecord, WebhookState};

/// The longest webhook URL accepted.
pub const WEBHOOK_URL_LEN_MAX: usize = 2_048;
/// Event types one webhook may filter on, at most.
pub const WEBHOOK_TYPES_MAX: usize = 64;
/// The longest event type name.
const EVENT_TYPE_LEN_MAX: usize = 64;
/// Webhooks per owner (an agent, or the gateway), at most.
pub const WEBHOOKS_PER_OWNER_MAX: usize = 16;

impl Gateway {
    /// Events after `after_id` that the caller may see, oldest first.
    pub async fn events(&self, caller: &Principal, after_id: i64, limit: u32) -> Result<Vec<EventRecord>, Error> {
        if after_id < 0 {
            return Err(invalid("after", "an event id, 0 or more".into()));
        }
        self.store.events(after_id, event_scope(caller), limit).await
    }

    /// The id of the newest event, whoever may see it: where a live stream
    /// that wants only new events starts.
    pub async fn newest_event_id(&self) -> Result<i64, Error> {
        self.store.newest_event_id().await
    }

    /// A receiver that changes after each commit of this process.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.commits()
    }

    /// Subscribes `url` to the caller's events (or, for the operator, to one
    /// agent's or the whole gateway's). Delivery starts after the newest
    /// event now stored. The secret is derived from the node key, so every
    /// instance of the gateway signs alike and no secret is stored.
    pub async fn create_webhook(
        &self,
        caller: &Principal,
        url: &str,
        types: Vec<String>,
        agent_id: Option<String>,
    ) -> Result<(WebhookRecord, String), Error> {
        let owner = match (caller, agent_id) {
            (Principal::Agent(_), Some(_)) => {
                return Err(invalid("agent_id", "only the operator names an agent".into()));
            }
            (Principal::Agent(key), None) => Some(key.agent_id.clone()),
            (Principal::Operator, Some(id)) => Some(self.agent(&id).await?.id),
            (Principal::Operator, None) => None,
        };
        check_webhook_url(url, &self.settings.egress)?;
        check_event_types(&types)?;
        if self.store.webhooks(owner.clone()).await?.iter().filter(|w| w.owner == owner).count()
            >= WEBHOOKS_PER_OWNER_MAX
        {
            return Err(invalid("url", format!("at most {WEBHOOKS_PER_OWNER_MAX} webhooks each")));
        }
        let after_event_id = self.store.newest_event_id().await?;
        let webhook = WebhookRecord {
            id: secrets::new_id("whk"),
            owner,
            url: url.to_owned(),
            types,
            state: WebhookState { after_event_id, ..WebhookState::default() },
            created_at_ms: now_ms(),
        };
        let webhook = self.store.create_webhook(webhook).await?;
        let secret = self.webhook_secret(&webhook.id);
        Ok((webhook, secret))
    }

    /// The signing secret of a webhook.
    pub fn webhook_secret(&self, webhook_id: &str) -> String {
        format!("whsec_{}", hex::encode(self.node.derive_key(webhook_id.as_bytes())))
    }

    pub async fn webhooks(&self, caller: &Principal) -> Result<Vec<WebhookRecord>, Error> {
        self.store.webhooks(event_scope(caller)).await
    }

    /// A webhook the caller owns (the operator owns them all).
    pub async fn webhook(&self, caller: &Principal, id: &str) -> Result<WebhookRecord, Error> {
        let webhook = self.store.webhook(id.to_owned()).await?.ok_or(Error::NotFound("webhook"))?;
        match caller {
            Principal::Agent(key) if webhook.owner.as_deref() != Some(key.agent_id.as_str()) => {
                Err(Error::NotFound("webhook"))
            }
            _ => Ok(webhook),
        }
    }

    pub async fn delete_webhook(&self, caller: &Principal, id: &str) -> Result<(), Error> {
        self.webhook(caller, id).await?;
        self.store.delete_webhook(id.to_owned(), now_ms()).await?;
        Ok(())
    }

    /// Restarts a paused webhook from where it stopped.
    pub async fn resume_webhook(&self, caller: &Principal, id: &str) -> Result<WebhookRecord, Error> {
        let mut webhook = self.webhook(caller, id).await?;
        webhook.state = WebhookState { failures: 0, paused: false, next_attempt_at_ms: 0, ..webhook.state };
        self.store.set_webhook_state(id.to_owned(), webhook.state, now_ms()).await?;
        Ok(webhook)
    }

    pub async fn deliveries(&self, caller: &Principal, id: &str, limit: u32) -> Result<Vec<DeliveryRecord>, Error> {
        self.webhook(caller, id).await?;
        self.store.deliveries(id.to_owned(), limit).await
    }
}

/// Whose events a caller sees: `None` for all of them.
fn event_scope(caller: &Principal) -> Option<String> {
    match caller {
        Principal::Operator => None,
        Principal::Agent(key) => Some(key.agent_id.clone()),
    }
}

/// A URL the gateway may post to. What the URL alone shows is refused
/// here (an IP literal the egress guard refuses, `localhost`); a host
/// name's addresses are checked at each delivery, when it is resolved.
fn check_webhook_url(url: &str, egress: &crate::egress::Egress) -> Result<(), Error> {
    if url.len() > WEBHOOK_URL_LEN_MAX {
        return Err(invalid("url", format!("at most {WEBHOOK_URL_LEN_MAX} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid("url", "an http or https URL with a host".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("url", "no user name or password in the URL (they would be logged)".into()));
    }
    egress.check_url(&parsed).map_err(|refused| invalid("url", refused.to_string()))?;
    match parsed.host_str() {
        Some(host) if crate::egress::is_local_name(host) && !egress.allows_name(host) => {
            Err(invalid("url", format!("destination refused by the egress guard: {host} is this machine")))
        }
        _ => Ok(()),
    }
}

fn check_event_types(types: &[String]) -> Result<(), Error> {
    if types.len() > WEBHOOK_TYPES_MAX {
        return Err(invalid("types", format!("at most {WEBHOOK_TYPES_MAX}")));
    }
    let bad = |t: &String| {
        t.is_empty()
            || t.len() > EVENT_TYPE_LEN_MAX
            || !t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
    };
    match types.iter().find(|t| bad(t)) {
        Some(t) => Err(invalid("types", format!("{t:?} is not an event type (like payment.succeeded)"))),
        None => Ok(()),
    }
}
