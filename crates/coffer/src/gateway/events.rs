//! The outbox as callers see it: events by key, and webhook subscriptions.
//!
//! Visibility: the operator sees every event; an agent's key sees the events
//! of its own agent (`agent_id` is the agent), never another's and never the
//! gateway-wide ones.

use super::*;
use crate::events::subscriptions;
use crate::model::{DeliveryRecord, EventRecord, WebhookRecord, WebhookState};

/// The longest webhook URL accepted.
pub const WEBHOOK_URL_LEN_MAX_BYTES: usize = 2_048;
// A URL at its bound fits a request body.
const _: () = assert!(WEBHOOK_URL_LEN_MAX_BYTES < crate::limits::BODY_LEN_MAX_BYTES);
/// Event types one webhook may filter on, at most.
pub const WEBHOOK_TYPES_MAX: usize = 64;
/// The longest event type name.
const EVENT_TYPE_LEN_MAX_BYTES: usize = 64;
/// Webhooks per owner (an agent, or the gateway), at most.
pub const WEBHOOKS_PER_OWNER_MAX: usize = 16;

impl Gateway {
    /// Events after `after_id` that the caller may see, oldest first.
    pub async fn events(&self, caller: &Principal, after_id: i64, limit: u32) -> Result<Vec<EventRecord>, Error> {
        if after_id < 0 {
            return Err(invalid("after", "an event id, 0 or more".into()));
        }
        let scope = event_scope(caller);
        // Every event committed before this call is listed once numbered.
        self.store.sealed().await?;
        self.store.read(move |tx| tx.events(after_id, scope.as_deref(), limit)).await
    }

    /// The id of the newest event, whoever may see it: where a live stream
    /// or a new webhook that wants only new events starts. Every event
    /// committed before this call is numbered first: one numbered later
    /// would get a higher id, and be taken for new.
    pub async fn newest_event_id(&self) -> Result<i64, Error> {
        self.store.sealed().await?;
        self.store.read(|tx| tx.newest_event_id()).await
    }

    /// A receiver that changes after each commit of this process.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.commits()
    }

    /// The caller's events after `after_id` as they commit, for a live
    /// stream; it counts against `streams_per_key` and `streams_total`
    /// until dropped.
    pub fn follow_events(&self, caller: &Principal, after_id: i64) -> Result<EventFollower, Error> {
        if after_id < 0 {
            return Err(invalid("after", "an event id, 0 or more".into()));
        }
        let guard = self.open_stream(caller)?;
        let scope = event_scope(caller);
        Ok(EventFollower {
            store: Arc::clone(&self.store),
            feed: self.live.feed(&self.store, scope.clone()),
            scope,
            seen_through: after_id,
            caught_up: false,
            ready: std::collections::VecDeque::new(),
            _guard: guard,
        })
    }

    /// A place for one more live stream (events or a room) of the caller's
    /// key, held until the guard drops.
    pub fn open_stream(&self, caller: &Principal) -> Result<crate::live::StreamGuard, Error> {
        let key = match caller {
            Principal::Operator => OPERATOR_STREAMS,
            Principal::Agent(key) => key.key_id.as_str(),
        };
        self.live.open_stream(key, &self.settings.limits)
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
        let of = owner.clone();
        if self.store.read(move |tx| tx.webhooks(of.as_deref())).await?.iter().filter(|w| w.owner == owner).count()
            >= WEBHOOKS_PER_OWNER_MAX
        {
            return Err(invalid("url", format!("at most {WEBHOOKS_PER_OWNER_MAX} webhooks each")));
        }
        let after_event_id = self.newest_event_id().await?;
        let webhook = WebhookRecord {
            id: secrets::new_id("whk"),
            owner,
            url: url.to_owned(),
            types,
            state: WebhookState { after_event_id, ..WebhookState::default() },
            created_at_ms: self.now_ms(),
        };
        let webhook = self.store.write(move |tx| subscriptions::create_webhook(tx, webhook.clone())).await?;
        let secret = self.webhook_secret(&webhook.id);
        Ok((webhook, secret))
    }

    /// The signing secret of a webhook.
    pub fn webhook_secret(&self, webhook_id: &str) -> String {
        format!("whsec_{}", hex::encode(self.node.derive_key(webhook_id.as_bytes())))
    }

    pub async fn webhooks(&self, caller: &Principal) -> Result<Vec<WebhookRecord>, Error> {
        let scope = event_scope(caller);
        self.store.read(move |tx| tx.webhooks(scope.as_deref())).await
    }

    /// A webhook the caller owns (the operator owns them all).
    pub async fn webhook(&self, caller: &Principal, id: &str) -> Result<WebhookRecord, Error> {
        let id = id.to_owned();
        let webhook = self.store.read(move |tx| tx.webhook(&id)).await?.ok_or(Error::NotFound("webhook"))?;
        match caller {
            Principal::Agent(key) if webhook.owner.as_deref() != Some(key.agent_id.as_str()) => {
                Err(Error::NotFound("webhook"))
            }
            _ => Ok(webhook),
        }
    }

    pub async fn delete_webhook(&self, caller: &Principal, id: &str) -> Result<(), Error> {
        self.webhook(caller, id).await?;
        let (id, now_ms) = (id.to_owned(), self.now_ms());
        self.store.write(move |tx| subscriptions::delete_webhook(tx, &id, now_ms)).await?;
        Ok(())
    }

    /// Restarts a paused webhook from where it stopped.
    pub async fn resume_webhook(&self, caller: &Principal, id: &str) -> Result<WebhookRecord, Error> {
        let mut webhook = self.webhook(caller, id).await?;
        webhook.state = WebhookState { failures: 0, paused: false, next_attempt_at_ms: 0, ..webhook.state };
        let (id, state, now_ms) = (id.to_owned(), webhook.state, self.now_ms());
        self.store.write(move |tx| subscriptions::set_webhook_state(tx, &id, state, now_ms)).await?;
        Ok(webhook)
    }

    pub async fn deliveries(&self, caller: &Principal, id: &str, limit: u32) -> Result<Vec<DeliveryRecord>, Error> {
        self.webhook(caller, id).await?;
        let id = id.to_owned();
        self.store.read(move |tx| tx.deliveries(&id, limit)).await
    }
}

/// The name the operator's streams are counted under (key ids have a
/// prefix, so none is this).
const OPERATOR_STREAMS: &str = "operator";
/// Events a stream reads from the store per step while catching up.
const FOLLOW_PAGE_EVENTS_MAX: u32 = 200;
// A stream takes a short page for "caught up": a page the store cut short
// would switch it to live delivery with events left unread.
const _: () = assert!(FOLLOW_PAGE_EVENTS_MAX <= crate::model::READ_EVENTS_MAX);

/// A live stream's reader: the store until it has caught up, then the
/// process's one feed of the outbox (`crate::live`), filtered to what the
/// caller sees. A gap in the feed (the stream fell behind it, or the feed
/// restarted) sends it back to the store from the last event it covered, so
/// no event is skipped or repeated and the order is the ids'.
pub struct EventFollower {
    store: Arc<dyn Store>,
    scope: Option<String>,
    /// Every event up to this id was delivered, or is not the caller's.
    seen_through: i64,
    caught_up: bool,
    feed: tokio::sync::broadcast::Receiver<Arc<crate::live::FeedBatch>>,
    ready: std::collections::VecDeque<EventRecord>,
    _guard: crate::live::StreamGuard,
}

impl EventFollower {
    /// The next event; waits for it to commit.
    pub async fn next(&mut self) -> Result<EventRecord, Error> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if !self.caught_up {
                self.catch_up().await?;
                continue;
            }
            match self.feed.recv().await {
                Ok(batch) => self.take(&batch),
                Err(RecvError::Lagged(_)) => self.caught_up = false,
                Err(RecvError::Closed) => return Err(Error::Unavailable("the event feed stopped")),
            }
        }
    }

    /// One page from the store. A page that is not full holds every event
    /// of the caller committed before it was read, so the stream has then
    /// covered at least the newest event before the read.
    async fn catch_up(&mut self) -> Result<(), Error> {
        crate::metrics::METRICS.record_event_stream_store_read();
        let (after, scope) = (self.seen_through, self.scope.clone());
        let (newest, page) = self
            .store
            .read(move |tx| Ok((tx.newest_event_id()?, tx.events(after, scope.as_deref(), FOLLOW_PAGE_EVENTS_MAX)?)))
            .await?;
        if let Some(last) = page.last() {
            self.seen_through = last.id;
        }
        if page.len() < FOLLOW_PAGE_EVENTS_MAX as usize {
            self.caught_up = true;
            self.seen_through = self.seen_through.max(newest);
        }
        self.ready.extend(page);
        Ok(())
    }

    fn take(&mut self, batch: &crate::live::FeedBatch) {
        if batch.after > self.seen_through {
            self.caught_up = false;
            return;
        }
        let seen = self.seen_through;
        // The feed sends a scope only its events; visibility is checked here
        // again all the same, being the caller's guarantee.
        let mine = |e: &&EventRecord| e.id > seen && self.scope.as_ref().is_none_or(|s| e.agent_id.as_ref() == Some(s));
        let events: Vec<EventRecord> = batch.events.iter().filter(mine).cloned().collect();
        self.ready.extend(events);
        self.seen_through = seen.max(batch.through);
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
    if url.len() > WEBHOOK_URL_LEN_MAX_BYTES {
        return Err(invalid("url", format!("at most {WEBHOOK_URL_LEN_MAX_BYTES} bytes")));
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
            || t.len() > EVENT_TYPE_LEN_MAX_BYTES
            || !t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
    };
    match types.iter().find(|t| bad(t)) {
        Some(t) => Err(invalid("types", format!("{t:?} is not an event type (like payment.succeeded)"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::FeedBatch;
    use crate::server::GatewayBuilder;

    /// The next `count` events' ids; a follower that waits for events the
    /// store already has fails the test after a bound generous for CI.
    async fn ids(follower: &mut EventFollower, count: usize) -> Vec<i64> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), follower.next()).await;
            ids.push(next.expect("an event the store has").expect("an event").id);
        }
        ids
    }

    async fn stored_ids(gateway: &Gateway, caller: &Principal, after: i64) -> Vec<i64> {
        gateway.events(caller, after, 1_000).await.expect("events").iter().map(|e| e.id).collect()
    }

    /// A gap in the feed (the stream fell behind it, or the feed started
    /// after the stream's last event) sends the stream back to the store
    /// from its last event; a batch it has partly seen repeats nothing; and
    /// it keeps to its caller's events throughout.
    #[tokio::test]
    async fn a_follower_reads_gaps_from_the_store_and_repeats_nothing() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (gateway, _token) = GatewayBuilder::default().data_dir(dir.path()).build().await.expect("a gateway");
        let (agent, secret, _) =
            gateway.create_agent(&Principal::Operator, "follower", false, None).await.expect("an agent");
        let caller = gateway.authenticate(&secret).await.expect("the agent's key");
        let mut follower = gateway.follow_events(&caller, 0).expect("a follower");
        let first = stored_ids(&gateway, &caller, 0).await;
        assert!(!first.is_empty(), "creating an agent wrote its events");
        assert_eq!(ids(&mut follower, first.len()).await, first, "the catch-up from the store");

        // Events the feed never carried: a batch past them is a gap.
        gateway.create_agent(&Principal::Operator, "other", false, None).await.expect("another agent");
        gateway.mint(1_000).await.expect("a mint");
        gateway.fund(&Principal::Operator, &agent.id, 1_000).await.expect("funding");
        let newest = gateway.newest_event_id().await.expect("the newest event");
        follower.take(&FeedBatch { after: newest, through: newest, events: Vec::new() });
        let missed = stored_ids(&gateway, &caller, *first.last().expect("an event")).await;
        assert!(!missed.is_empty(), "funding the agent wrote its event");
        assert_eq!(ids(&mut follower, missed.len()).await, missed, "the gap, read from the store");

        // A batch overlapping what was read adds only what is new, and only
        // the caller's.
        let seen = follower.seen_through;
        gateway.mint(1).await.expect("a mint");
        gateway.fund(&Principal::Operator, &agent.id, 1).await.expect("funding");
        let all = gateway.store.read(|tx| tx.events(0, None, 1_000)).await.expect("every event");
        follower.take(&FeedBatch { after: 0, through: all.last().expect("events").id, events: all });
        let fresh = stored_ids(&gateway, &caller, seen).await;
        assert_eq!(fresh.len(), 1, "one more event of the agent: {fresh:?}");
        assert_eq!(ids(&mut follower, 1).await, fresh);
        assert!(follower.ready.is_empty(), "nothing else: {:?}", follower.ready);
    }
}
