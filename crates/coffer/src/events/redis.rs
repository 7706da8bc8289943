//! The outbox on Redis Streams: each event an entry of the stream
//! `coffer:events` with the fields `id`, `type` and `event` (the event as
//! JSON), in id order. A batch goes in one pipeline, one round trip.
//!
//! Entries get Redis's own ids (`*`), so the stream stays usable by other
//! writers; consumers tell a repeat (after a crash between publishing and
//! moving the cursor) by the `id` field, with `gateway` inside `event`
//! telling gateways that share one Redis apart.

use super::{Bus, BusFuture};
use coffer_client::Event;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

pub const STREAM_KEY: &str = "coffer:events";
/// The stream is trimmed to about this many entries: a bound on Redis's
/// memory when nobody trims it.
const STREAM_ENTRIES_MAX: usize = 1_000_000;

pub struct RedisBus {
    client: redis::Client,
    /// Opened on first use and dropped after an error, so that the next
    /// batch reconnects.
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl RedisBus {
    pub fn new(url: &str) -> Result<RedisBus, String> {
        let client = redis::Client::open(url).map_err(|e| format!("the Redis URL: {e}"))?;
        Ok(RedisBus { client, connection: Mutex::new(None) })
    }
}

/// The fields of an event's stream entry, in order: `id`, `type` and
/// `event` (the event as JSON).
pub fn entry(event: &Event) -> Result<[(&'static str, String); 3], String> {
    let json = serde_json::to_string(event).map_err(|e| format!("encoding event {}: {e}", event.id))?;
    Ok([("id", event.id.to_string()), ("type", event.kind.clone()), ("event", json)])
}

impl Bus for RedisBus {
    fn name(&self) -> &'static str {
        "bus:redis"
    }

    fn publish<'a>(&'a self, events: &'a [Event]) -> BusFuture<'a> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for event in events {
                pipe.cmd("XADD").arg(STREAM_KEY).arg("MAXLEN").arg("~").arg(STREAM_ENTRIES_MAX).arg("*");
                for (field, value) in entry(event)? {
                    pipe.arg(field).arg(value);
                }
                pipe.ignore();
            }
            let mut slot = self.connection.lock().await;
            let connection = match slot.as_mut() {
                Some(c) => c,
                None => {
                    let c = self
                        .client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| format!("connecting to Redis: {e}"))?;
                    slot.insert(c)
                }
            };
            let sent: redis::RedisResult<()> = pipe.query_async(connection).await;
            sent.map_err(|e| {
                *slot = None;
                format!("XADD to {STREAM_KEY}: {e}")
            })
        })
    }
}
