//! Webhooks: the outbox POSTed to subscribers' URLs, one event per request,
//! in id order per webhook, at least once.
//!
//! Each request is signed: `Coffer-Signature: t=<unix seconds>,v1=<hex>`,
//! where `v1` is HMAC-SHA256 keyed with the webhook's secret (the whole
//! `whsec_…` string) over `<t>.<body>`. A receiver checks the MAC in
//! constant time and refuses an old `t` (replay protection), and drops a
//! repeat by `Coffer-Event-Id`.
//!
//! A failed attempt (no answer, or not 2xx) is retried with exponential
//! backoff; after [`WebhookSettings::pause_after_failures`] failures in a
//! row the webhook is paused until someone resumes it. Every attempt is in
//! the delivery log.
//!
//! Every request passes the egress guard (`crate::egress`): a destination it
//! refuses is logged as "destination refused by the egress guard", with no
//! status, so the log never tells what answers at an address the gateway
//! may not reach.

use super::subscriptions;
use super::{Lease, backoff_ms, wire};
use crate::egress::{Egress, Redirects};
use crate::gateway::{Clock, Gateway, SystemClock};
use crate::model::{DeliveryRecord, EventRecord, WebhookRecord, WebhookState};
use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lease of the webhook dispatcher.
const LEASE: &str = "webhooks";
/// Webhooks attempted in one step, at most (concurrently).
const WEBHOOKS_PER_STEP_MAX: usize = 64;
/// Events read per webhook and step: those of other types are skipped.
const EVENTS_PER_READ_MAX: u32 = 64;
const _: () = assert!(EVENTS_PER_READ_MAX <= crate::model::READ_EVENTS_MAX);
/// The longest error text kept in the delivery log.
const ERROR_LEN_MAX_BYTES: usize = 300;
/// How often the dispatcher looks for work when idle.
const POLL_INTERVAL_MS: u64 = 250;
// Idle or after a failed step (four polls), the dispatcher is back before
// half its lease has passed, when `Lease::hold` renews it.
const _: () = assert!(((POLL_INTERVAL_MS * 4) as i64) < super::LEASE_MS / 2);

#[derive(Clone, Copy, Debug)]
pub struct WebhookSettings {
    /// The wait after the first failure; it doubles with each further one.
    pub backoff_base_ms: u64,
    /// Failures in a row that pause a webhook.
    pub pause_after_failures: u32,
    /// How long a receiver may take to answer.
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { backoff_base_ms: 1_000, pause_after_failures: 10, timeout_ms: 10_000 }
    }
}

/// Delivers webhooks for as long as the gateway runs.
pub async fn run(gateway: Arc<Gateway>, settings: WebhookSettings, owner: String) {
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.timeout_ms))
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")));
    // A redirect would re-send a signed body elsewhere: not followed.
    let http = match gateway.settings().egress.client(builder, Redirects::None) {
        Ok(http) => http,
        Err(e) => return tracing::error!(error = %e, "webhooks disabled: no HTTP client"),
    };
    let mut commits = gateway.commits();
    let mut lease = Lease::new(LEASE, &owner);
    loop {
        let (wait_ms, any) = match step(&gateway, &http, settings, &mut lease).await {
            Ok(Step::Worked) => continue,
            Ok(Step::Idle { any_webhook }) => (POLL_INTERVAL_MS, any_webhook),
            Err(e) => {
                tracing::warn!(error = %e, "the webhook dispatcher failed a step; will retry");
                (POLL_INTERVAL_MS * 4, false)
            }
        };
        // With webhooks to serve, a commit of this process wakes it at once;
        // without, every commit would only cost a read.
        if any {
            let _ = tokio::time::timeout(Duration::from_millis(wait_ms), commits.changed()).await;
        } else {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    }
}

enum Step {
    Worked,
    Idle { any_webhook: bool },
}

/// One step: an attempt for each due webhook, if this instance holds the
/// lease.
async fn step(
    gateway: &Gateway,
    http: &reqwest::Client,
    settings: WebhookSettings,
    lease: &mut Lease,
) -> Result<Step, String> {
    let store = gateway.store();
    if lease.hold(gateway).await.map_err(|e| e.to_string())?.is_none() {
        return Ok(Step::Idle { any_webhook: false });
    }
    let now = gateway.now_ms();
    let webhooks = store.read(|tx| tx.webhooks(None)).await.map_err(|e| e.to_string())?;
    let any_webhook = webhooks.iter().any(|w| !w.state.paused);
    let due = webhooks.into_iter().filter(|w| !w.state.paused && w.state.next_attempt_at_ms <= now);
    let attempts = due.take(WEBHOOKS_PER_STEP_MAX).map(|w| advance(gateway, http, settings, w));
    let done = join_all(attempts).await;
    let mut worked = false;
    for outcome in done {
        worked |= outcome.map_err(|e| e.to_string())?;
    }
    Ok(if worked { Step::Worked } else { Step::Idle { any_webhook } })
}

/// A webhook is not told of its own creation. Its cursor starts past the
/// newest numbered event, which is that event where the store numbers
/// events as it writes them; where they are numbered after commit
/// (PostgreSQL), the event comes after the cursor and is passed over here.
fn is_own_creation(webhook: &WebhookRecord, event: &EventRecord) -> bool {
    event.kind == "webhook.created" && event.data["webhook_id"].as_str() == Some(webhook.id.as_str())
}

/// Delivers a webhook's next event, or moves it past events of other types.
async fn advance(
    gateway: &Gateway,
    http: &reqwest::Client,
    settings: WebhookSettings,
    webhook: WebhookRecord,
) -> Result<bool, crate::error::Error> {
    let store = gateway.store();
    let (after, owner) = (webhook.state.after_event_id, webhook.owner.clone());
    let events = store.read(move |tx| tx.events(after, owner.as_deref(), EVENTS_PER_READ_MAX)).await?;
    let wanted = |e: &&EventRecord| {
        (webhook.types.is_empty() || webhook.types.contains(&e.kind)) && !is_own_creation(&webhook, e)
    };
    let Some(event) = events.iter().find(wanted) else {
        let Some(last) = events.last() else { return Ok(false) };
        let state = WebhookState { after_event_id: last.id, ..webhook.state };
        let (id, now_ms) = (webhook.id, gateway.now_ms());
        store.write(move |tx| subscriptions::set_webhook_state(tx, &id, state, now_ms)).await?;
        return Ok(true);
    };
    // Events of other types before this one are passed over for good.
    let skipped_through = events.iter().take_while(|e| e.id < event.id).last().map(|e| e.id);
    let after_event_id = skipped_through.unwrap_or(webhook.state.after_event_id);
    let attempt = webhook.state.failures.saturating_add(1);
    let secret = gateway.webhook_secret(&webhook.id);
    let target = Target { http, egress: &gateway.settings().egress };
    let delivery = post(target, &webhook, event, &secret, gateway, attempt).await;
    let state = if delivery.delivered {
        WebhookState { after_event_id: event.id, failures: 0, paused: false, next_attempt_at_ms: 0 }
    } else {
        let failures = attempt;
        WebhookState {
            after_event_id,
            failures,
            paused: failures >= settings.pause_after_failures,
            next_attempt_at_ms: gateway.now_ms().saturating_add(backoff_ms(failures, settings.backoff_base_ms) as i64),
        }
    };
    if state.paused && !webhook.state.paused {
        tracing::warn!(webhook = %webhook.id, failures = state.failures, "webhook paused after failures in a row");
    }
    store.write(move |tx| subscriptions::record_delivery(tx, delivery.clone(), state)).await?;
    Ok(true)
}

/// Where deliveries go out: the guarded client, and the guard for the URL
/// itself (the client checks addresses it resolves, not IP literals).
#[derive(Clone, Copy)]
struct Target<'a> {
    http: &'a reqwest::Client,
    egress: &'a Egress,
}

async fn post(
    target: Target<'_>,
    webhook: &WebhookRecord,
    event: &EventRecord,
    secret: &str,
    gateway: &Gateway,
    attempt: u32,
) -> DeliveryRecord {
    let started = Instant::now();
    let outcome = match reqwest::Url::parse(&webhook.url) {
        Ok(url) => match target.egress.check_url(&url) {
            Ok(()) => send(target.http, url, event, secret, gateway.node_pubkey_hex()).await,
            Err(refused) => (None, Some(refused.to_string())),
        },
        Err(e) => (None, Some(format!("not a URL: {e}"))),
    };
    let (status, error) = outcome;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    DeliveryRecord {
        webhook_id: webhook.id.clone(),
        event_id: event.id,
        attempt,
        status,
        delivered: error.is_none(),
        error,
        at_ms: gateway.now_ms(),
        duration_ms,
    }
}

/// One signed POST: the status, if an answer came, and the error, if any.
async fn send(
    http: &reqwest::Client,
    url: reqwest::Url,
    event: &EventRecord,
    secret: &str,
    gateway: &str,
) -> (Option<u16>, Option<String>) {
    let body = body(event, gateway);
    // The signature's time is for the receiver, which checks it against
    // its own clock: the system's, whatever clock the gateway runs on.
    let t = SystemClock.now_ms().div_euclid(1000);
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("coffer-event-id", event.id.to_string())
        .header("coffer-event-type", &event.kind)
        .header("coffer-signature", format!("t={t},v1={}", sign(secret, t, &body)))
        .body(body);
    match request.send().await {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
        Ok(r) => (Some(r.status().as_u16()), Some(format!("answered HTTP {}", r.status().as_u16()))),
        Err(e) => match crate::egress::refusal(&e) {
            Some(refused) => (None, Some(truncate(&refused.to_string()))),
            // Without the URL: it may carry a token of the receiver's.
            None => (None, Some(truncate(&e.without_url().to_string()))),
        },
    }
}

/// The body of an event's request: the event as every consumer sees it.
pub fn body(event: &EventRecord, gateway: &str) -> Vec<u8> {
    serde_json::to_vec(&wire(event, gateway)).unwrap_or_default()
}

/// The `v1` signature: HMAC-SHA256 of `<t>.<body>`, hex.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn truncate(text: &str) -> String {
    crate::gateway::text::truncate(text, ERROR_LEN_MAX_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_time_and_the_body() {
        let s = sign("whsec_k", 1_700_000_000, b"{\"id\":1}");
        assert_eq!(s.len(), 64);
        assert_ne!(s, sign("whsec_k", 1_700_000_001, b"{\"id\":1}"));
        assert_ne!(s, sign("whsec_k", 1_700_000_000, b"{\"id\":2}"));
        assert_ne!(s, sign("whsec_j", 1_700_000_000, b"{\"id\":1}"));
        // RFC 4231 test case 2, as a check of the construction.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        let long = "é".repeat(400);
        let cut = truncate(&long);
        assert!(cut.len() <= ERROR_LEN_MAX_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
