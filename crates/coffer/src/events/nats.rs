//! The outbox on NATS JetStream: each event on the subject
//! `coffer.events.<type>` of the stream `COFFER_EVENTS`, as JSON, in id
//! order, each publish acknowledged by the stream before the next batch.
//!
//! Each message carries `Nats-Msg-Id: <gateway>:<id>`, so JetStream itself
//! drops a repeat published within its duplicate window (after a crash
//! between publishing and moving the cursor, say); gateways sharing one
//! server never collide, as the node key tells them apart.

use super::{Bus, BusFuture};
use async_nats::jetstream::{self, stream};
use coffer_client::Event;
use std::time::Duration;
use tokio::sync::OnceCell;

pub const STREAM: &str = "COFFER_EVENTS";
pub const SUBJECT_PREFIX: &str = "coffer.events";
/// How long JetStream remembers message ids to drop repeats.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct NatsBus {
    url: String,
    /// Connected on first use, so that a gateway starts while NATS is down
    /// (events wait in the outbox) and reconnects by itself afterwards.
    context: OnceCell<jetstream::Context>,
}

impl NatsBus {
    pub fn new(url: &str) -> NatsBus {
        NatsBus { url: url.to_owned(), context: OnceCell::new() }
    }

    async fn context(&self) -> Result<&jetstream::Context, String> {
        self.context
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(CONNECT_TIMEOUT)
                    .request_timeout(Some(REQUEST_TIMEOUT))
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| format!("connecting to NATS: {e}"))?;
                let context = jetstream::new(client);
                let config = stream::Config {
                    name: STREAM.to_owned(),
                    subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                    duplicate_window: DUPLICATE_WINDOW,
                    ..Default::default()
                };
                context.get_or_create_stream(config).await.map_err(|e| format!("the stream {STREAM}: {e}"))?;
                Ok(context)
            })
            .await
    }
}

/// The subject of an event: its type, which is already dot-separated.
pub fn subject(event: &Event) -> String {
    format!("{SUBJECT_PREFIX}.{}", event.kind)
}

impl Bus for NatsBus {
    fn name(&self) -> &'static str {
        "bus:nats"
    }

    fn publish<'a>(&'a self, events: &'a [Event]) -> BusFuture<'a> {
        Box::pin(async move {
            let context = self.context().await?;
            // Send the batch, then wait for the acknowledgements in order:
            // one round trip per batch rather than per event.
            let mut acks = Vec::with_capacity(events.len());
            for event in events {
                let payload = serde_json::to_vec(event).map_err(|e| format!("encoding event {}: {e}", event.id))?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("{}:{}", event.gateway, event.id).as_str());
                let ack = context
                    .publish_with_headers(subject(event), headers, payload.into())
                    .await
                    .map_err(|e| format!("publishing event {}: {e}", event.id))?;
                acks.push((event.id, ack));
            }
            for (id, ack) in acks {
                ack.await.map_err(|e| format!("JetStream did not store event {id}: {e}"))?;
            }
            Ok(())
        })
    }
}
