//! Live delivery: what happens in rooms, pushed to the members watching
//! (SSE and WebSocket), and the outbox fed to the event streams. In memory
//! and bounded; a watcher that falls behind reloads, and the store stays the
//! record. The streams themselves are counted here, per key and in all.

use crate::error::Error;
use crate::limits::{Limit, Limits};
use crate::model::EventRecord;
use crate::store::Store;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::broadcast;

/// Events kept for watchers that are slower than the gateway.
const BACKLOG_EVENTS_MAX: usize = 1_024;
/// Batches of the outbox kept for event streams that are slower than the
/// commits; one that falls further behind reads from the store.
const FEED_BATCHES_MAX: usize = 1_024;
/// Events the feed reads per step.
const FEED_BATCH_EVENTS_MAX: u32 = 256;
// The feed takes a short read for "caught up": a read the store cut short
// would leave events behind until the next poll.
const _: () = assert!(FEED_BATCH_EVENTS_MAX <= crate::model::READ_EVENTS_MAX);
/// How often the feed looks for events of other instances; this instance's
/// commits wake it at once.
const FEED_POLL_INTERVAL_MS: u64 = 1_000;
/// What a stream refused for a limit is told to wait: streams end when
/// their clients leave, which is not on a clock.
const STREAM_RETRY_AFTER_SECS: u64 = 5;

/// One event of a room: `message.posted` (data: the message) or
/// `invoice.paid` (data: the payment hash and the receipt).
#[derive(Clone, Debug)]
pub struct RoomEvent {
    pub room_id: String,
    pub kind: &'static str,
    pub data: Value,
}

pub struct Live {
    sender: broadcast::Sender<RoomEvent>,
    feed: EventFeed,
    streams: Arc<Mutex<StreamCounts>>,
}

impl Default for Live {
    fn default() -> Self {
        Live { sender: broadcast::channel(BACKLOG_EVENTS_MAX).0, feed: EventFeed::default(), streams: Arc::default() }
    }
}

impl Live {
    pub fn publish(&self, event: RoomEvent) {
        // No watcher is not an error: the store has the message.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.sender.subscribe()
    }

    /// Whether anyone watches: work done only for watchers is skipped
    /// otherwise (the payment hot path asks).
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// The outbox as it commits, the events of `scope` (an agent's id, or
    /// `None` for all), read once for all subscribers.
    pub fn feed(&self, store: &Arc<dyn Store>, scope: Option<String>) -> broadcast::Receiver<Arc<FeedBatch>> {
        self.feed.subscribe(store, scope)
    }

    /// How many streams are open now (`/metrics`).
    pub fn streams_open(&self) -> u32 {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).total
    }

    /// A place for one more stream of `key` (an agent's key id, or the
    /// operator), held until the guard drops; `429` past `streams_per_key`
    /// or `streams_total`.
    pub fn open_stream(&self, key: &str, limits: &Limits) -> Result<StreamGuard, Error> {
        let mut counts = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= limits.streams_total {
            let detail = format!("at most {} streams are open at once", limits.streams_total);
            return Err(Error::limit(Limit::StreamsTotal, STREAM_RETRY_AFTER_SECS, detail));
        }
        let of_key = counts.by_key.entry(key.to_owned()).or_default();
        if *of_key >= limits.streams_per_key {
            let detail = format!("at most {} streams per key; close one first", limits.streams_per_key);
            return Err(Error::limit(Limit::StreamsPerKey, STREAM_RETRY_AFTER_SECS, detail));
        }
        *of_key += 1;
        counts.total += 1;
        Ok(StreamGuard { counts: Arc::clone(&self.streams), key: key.to_owned() })
    }
}

#[derive(Default)]
struct StreamCounts {
    total: u32,
    by_key: HashMap<String, u32>,
}

/// An open stream's place in the counts, given back when dropped (when the
/// stream ends, whichever way).
pub struct StreamGuard {
    counts: Arc<Mutex<StreamCounts>>,
    key: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_key.remove(&self.key);
            }
        }
    }
}

/// Events of one scope committed with ids in `(after, through]`: every
/// event of that range the scope sees. A batch whose `after` is past what a
/// subscriber has seen leaves a gap that the subscriber reads from the
/// store.
#[derive(Debug)]
pub struct FeedBatch {
    pub after: i64,
    pub through: i64,
    pub events: Vec<EventRecord>,
}

/// One reader of the outbox per process, started by the first subscriber:
/// each commit costs one read, however many streams follow, and wakes only
/// the streams that see one of its events.
#[derive(Default)]
struct EventFeed {
    state: Arc<Mutex<FeedState>>,
    reader: OnceLock<()>,
}

/// Subscribers by scope: the operator's sees every event, an agent's its
/// own.
#[derive(Default)]
struct FeedState {
    /// The last event read, while anyone subscribes.
    cursor: Option<i64>,
    all: Option<Channel>,
    agents: HashMap<String, Channel>,
}

struct Channel {
    sender: broadcast::Sender<Arc<FeedBatch>>,
    /// The scope has been told of every event up to here: a range without
    /// its events costs its subscribers nothing, and the next batch it gets
    /// covers that range too.
    told_through: Option<i64>,
}

impl EventFeed {
    fn subscribe(&self, store: &Arc<dyn Store>, scope: Option<String>) -> broadcast::Receiver<Arc<FeedBatch>> {
        let receiver = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let told_through = state.cursor;
            let new = || Channel { sender: broadcast::channel(FEED_BATCHES_MAX).0, told_through };
            let channel = match scope {
                None => state.all.get_or_insert_with(new),
                Some(agent) => state.agents.entry(agent).or_insert_with(new),
            };
            channel.sender.subscribe()
        };
        self.reader.get_or_init(|| {
            tokio::spawn(read_feed(Arc::downgrade(store), Arc::clone(&self.state)));
        });
        receiver
    }
}

impl FeedState {
    /// Forgets the scopes nobody follows; answers whether any is left.
    fn followed(&mut self) -> bool {
        let followed = |c: &Channel| c.sender.receiver_count() > 0;
        self.all = self.all.take().filter(followed);
        self.agents.retain(|_, c| followed(c));
        let any = self.all.is_some() || !self.agents.is_empty();
        if !any {
            self.cursor = None;
        }
        any
    }

    /// Sends each scope its events of `(after, through]`.
    fn dispatch(&mut self, after: i64, through: i64, events: &[EventRecord]) {
        if let Some(all) = &mut self.all {
            all.send(after, through, events.to_vec());
        }
        let mut by_agent: HashMap<&str, Vec<EventRecord>> = HashMap::new();
        for event in events {
            if let Some(agent) = event.agent_id.as_deref().filter(|a| self.agents.contains_key(*a)) {
                by_agent.entry(agent).or_default().push(event.clone());
            }
        }
        for (agent, events) in by_agent {
            if let Some(channel) = self.agents.get_mut(agent) {
                channel.send(after, through, events);
            }
        }
        self.cursor = Some(through);
    }

    /// Tells every scope that the feed starts after `newest`: a subscriber
    /// that has seen less reads the rest from the store.
    fn start_at(&mut self, newest: i64) {
        for channel in self.all.iter_mut().chain(self.agents.values_mut()) {
            channel.send(newest, newest, Vec::new());
        }
        self.cursor = Some(newest);
    }
}

impl Channel {
    fn send(&mut self, after: i64, through: i64, events: Vec<EventRecord>) {
        let after = self.told_through.unwrap_or(after).min(after);
        self.told_through = Some(through);
        // No subscriber left is not an error: the store has the events.
        let _ = self.sender.send(Arc::new(FeedBatch { after, through, events }));
    }
}

/// Reads what each commit added and sends it to the subscribers, for as
/// long as the store is open. With no subscriber it reads nothing, and
/// starts again from the newest event when one comes.
async fn read_feed(store: Weak<dyn Store>, state: Arc<Mutex<FeedState>>) {
    let Some(mut commits) = store.upgrade().map(|s| s.commits()) else { return };
    loop {
        let Some(open) = store.upgrade() else { return };
        let cursor = {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.followed().then_some(state.cursor)
        };
        if let Some(cursor) = cursor
            && let Err(e) = read_new(open.as_ref(), &state, cursor).await
        {
            tracing::warn!(error = %e, "reading the outbox for event streams failed; will retry");
        }
        drop(open);
        let _ = tokio::time::timeout(Duration::from_millis(FEED_POLL_INTERVAL_MS), commits.changed()).await;
    }
}

/// Sends the events after `cursor`, or with no cursor tells the scopes
/// where the feed starts.
async fn read_new(store: &dyn Store, state: &Mutex<FeedState>, cursor: Option<i64>) -> Result<(), Error> {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut after = match cursor {
        Some(after) => after,
        None => {
            // Everything committed before the feed starts is numbered
            // first, so that none of it is taken for new.
            store.sealed().await?;
            let newest = store.read(|tx| tx.newest_event_id()).await?;
            lock().start_at(newest);
            newest
        }
    };
    loop {
        let events = store.read(move |tx| tx.events(after, None, FEED_BATCH_EVENTS_MAX)).await?;
        let Some(through) = events.last().map(|e| e.id) else { return Ok(()) };
        lock().dispatch(after, through, &events);
        if events.len() < FEED_BATCH_EVENTS_MAX as usize {
            return Ok(());
        }
        after = through;
    }
}
