//! Live delivery: what happens in rooms, pushed to the members watching
//! (SSE and WebSocket). In memory and bounded; a watcher that falls behind
//! is told to reload, and the store stays the record.

use serde_json::Value;
use tokio::sync::broadcast;

/// Events kept for watchers that are slower than the gateway.
const BACKLOG_EVENTS_MAX: usize = 1_024;

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
}

impl Default for Live {
    fn default() -> Self {
        Live { sender: broadcast::channel(BACKLOG_EVENTS_MAX).0 }
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
}
