//! The outbox, delivered: every event the store wrote in the transaction of
//! its change goes out to webhooks ([`webhook`]) and to the message buses
//! operators run, NATS JetStream ([`nats`]) and Redis Streams ([`redis`]).
//!
//! Each consumer keeps a cursor (the id of the last event it delivered) in
//! the store, under a lease, so that with several gateway instances on one
//! database one instance at a time delivers, and a restart resumes where
//! the last one stopped. Delivery is at least once: a crash between
//! publishing and moving the cursor publishes those events again, and
//! consumers tell repeats by the event id.
//!
//! What an event says is typed in [`kind`]: [`Event`], written with
//! [`emit`].

pub mod kind;
pub mod nats;
pub mod redis;
pub mod subscriptions;
pub mod webhook;

pub use kind::{Event, KINDS, emit};

use crate::gateway::Gateway;
use crate::model::EventRecord;
use crate::model::views::timestamp;
use coffer_client::Event as WireEvent;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Events read and published per step.
pub const BATCH_EVENTS_MAX: u32 = 256;
// A step publishes what it asked for: the store does not cut the read.
const _: () = assert!(BATCH_EVENTS_MAX <= crate::model::READ_EVENTS_MAX);
/// How long a consumer's lease lasts unless renewed: how soon another
/// instance takes over from one that died.
pub const LEASE_MS: i64 = 10_000;
/// How often an idle consumer looks for events committed by other instances
/// (this instance's own commits wake it at once).
const POLL_INTERVAL_MS: u64 = 1_000;
// A lease is renewed once half of it has passed (`Lease::hold`): an idle
// consumer looks again well before, so it never loses its lease by waiting.
const _: () = assert!((POLL_INTERVAL_MS as i64) < LEASE_MS / 2);
/// The longest wait between retries after a failure.
const BACKOFF_MAX_MS: u64 = 30_000;

/// The event as every consumer receives it.
pub fn wire(event: &EventRecord, gateway: &str) -> WireEvent {
    WireEvent {
        id: event.id,
        kind: event.kind.clone(),
        agent_id: event.agent_id.clone(),
        gateway: gateway.to_owned(),
        created_at: timestamp(event.created_at_ms),
        data: event.data.clone(),
    }
}

pub type BusFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A message bus the outbox is published to, in id order.
pub trait Bus: Send + Sync + 'static {
    /// The consumer's name: its lease and cursor in the store.
    fn name(&self) -> &'static str;
    /// Publishes `events` in order; an error means some may not have been
    /// published (they are published again).
    fn publish<'a>(&'a self, events: &'a [WireEvent]) -> BusFuture<'a>;
}

/// A consumer's hold on its lease, renewed at half its life rather than at
/// every step: a renewal is a commit, and a commit wakes the consumers, so
/// renewing at every step would keep an idle consumer busy for ever.
pub struct Lease {
    name: String,
    owner: String,
    held_until_ms: i64,
    cursor: i64,
}

impl Lease {
    pub fn new(name: &str, owner: &str) -> Lease {
        Lease { name: name.to_owned(), owner: owner.to_owned(), held_until_ms: 0, cursor: 0 }
    }

    /// The cursor while this instance holds the lease; `None` while another
    /// instance does.
    pub async fn hold(&mut self, gateway: &Gateway) -> Result<Option<i64>, crate::error::Error> {
        let now = gateway.now_ms();
        if now < self.held_until_ms.saturating_sub(LEASE_MS / 2) {
            return Ok(Some(self.cursor));
        }
        let (name, owner) = (self.name.clone(), self.owner.clone());
        let claimed = gateway.store().write(move |tx| tx.claim_lease(&name, &owner, now, LEASE_MS)).await?;
        self.held_until_ms = if claimed.is_some() { now.saturating_add(LEASE_MS) } else { 0 };
        if let Some(cursor) = claimed {
            self.cursor = cursor;
        }
        Ok(claimed)
    }

    /// Whether this instance held the lease at its last claim, and still does.
    pub fn is_held(&self, gateway: &Gateway) -> bool {
        gateway.now_ms() < self.held_until_ms
    }

    /// Moves the cursor; a lease lost meanwhile is claimed anew next time.
    pub async fn advance(&mut self, gateway: &Gateway, cursor: i64) -> Result<(), crate::error::Error> {
        let store = gateway.store();
        let (name, owner) = (self.name.clone(), self.owner.clone());
        if store.write(move |tx| tx.advance_lease(&name, &owner, cursor)).await? {
            self.cursor = cursor;
        } else {
            self.held_until_ms = 0;
        }
        Ok(())
    }
}

/// Publishes the outbox to `bus` for as long as the gateway runs.
pub async fn run_bus(gateway: Arc<Gateway>, bus: Arc<dyn Bus>, owner: String) {
    let mut commits = gateway.commits();
    let mut lease = Lease::new(bus.name(), &owner);
    let mut failures = 0u32;
    loop {
        let outcome = publish_step(&gateway, bus.as_ref(), &mut lease).await;
        let wait_ms = match outcome {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => {
                failures = 0;
                POLL_INTERVAL_MS
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait_ms = backoff_ms(failures, 100);
                tracing::warn!(bus = bus.name(), error = %e, retry_in_ms = wait_ms, "publishing events failed");
                wait_ms
            }
        };
        // The holder is woken early by a commit of this process (a commit of
        // another instance is found by the next poll). An instance without
        // the lease only polls: its own claims are commits, and waking on
        // them would keep it busy.
        if lease.is_held(&gateway) {
            let _ = tokio::time::timeout(Duration::from_millis(wait_ms), commits.changed()).await;
        } else {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    }
}

/// One step: publishes the next batch if this instance holds the lease.
/// Answers whether it published anything (there may be more).
async fn publish_step(gateway: &Gateway, bus: &dyn Bus, lease: &mut Lease) -> Result<bool, String> {
    let Some(cursor) = lease.hold(gateway).await.map_err(|e| e.to_string())? else { return Ok(false) };
    let events = gateway.store().read(move |tx| tx.events(cursor, None, BATCH_EVENTS_MAX));
    let events = events.await.map_err(|e| e.to_string())?;
    let Some(last) = events.last().map(|e| e.id) else { return Ok(false) };
    let wire: Vec<WireEvent> = events.iter().map(|e| wire(e, gateway.node_pubkey_hex())).collect();
    bus.publish(&wire).await?;
    // Lost the lease meanwhile: the new holder publishes these again, which
    // at-least-once allows.
    lease.advance(gateway, last).await.map_err(|e| e.to_string())?;
    Ok(true)
}

/// Exponential backoff: `base_ms`, doubling with each failure in a row, up
/// to [`BACKOFF_MAX_MS`].
pub fn backoff_ms(failures: u32, base_ms: u64) -> u64 {
    let doublings = failures.saturating_sub(1).min(20);
    base_ms.saturating_mul(1u64 << doublings).min(BACKOFF_MAX_MS.max(base_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        assert_eq!(backoff_ms(1, 100), 100);
        assert_eq!(backoff_ms(2, 100), 200);
        assert_eq!(backoff_ms(5, 100), 1_600);
        assert_eq!(backoff_ms(40, 100), BACKOFF_MAX_MS);
        assert_eq!(backoff_ms(u32::MAX, 1_000), BACKOFF_MAX_MS);
    }
}
