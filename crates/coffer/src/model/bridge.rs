//! What the bridges keep: single-use link codes, the messenger users linked
//! to agents (or to the operator), the rooms bridged to chats, and the
//! messages a bridge posted for a room's messages.

/// A link code waiting to be used (only its digest is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkCodeRecord {
    pub digest: [u8; 32],
    /// The agent the code links to, or `operator`.
    pub agent_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A messenger user acting as an agent (or as the operator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeLinkRecord {
    /// `telegram`, `matrix`.
    pub messenger: String,
    pub user_id: String,
    /// The name the messenger gave when the user linked (for people only).
    pub user_name: String,
    /// The agent, or `operator`.
    pub agent_id: String,
    /// The chat the user linked from: where approvals and alerts go.
    pub chat_id: String,
    pub linked_at_ms: i64,
}

impl BridgeLinkRecord {
    /// The key id this user acts under, as the audit chain names it.
    pub fn key_id(&self) -> String {
        bridge_key_id(&self.messenger, &self.user_id)
    }
}

/// `telegram:12345`: a messenger user in the audit chain's `key_id`.
pub fn bridge_key_id(messenger: &str, user_id: &str) -> String {
    format!("{messenger}:{user_id}")
}

/// A room mirrored into a chat of a messenger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomBridgeRecord {
    pub room_id: String,
    pub messenger: String,
    pub chat_id: String,
    pub created_at_ms: i64,
}

/// A room's message as a bridge posted it (or as it came from the chat):
/// by it the bridge edits a card when its invoice changes, finds the card
/// a reply or reaction is about, and never posts a message twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgePostRecord {
    pub messenger: String,
    pub room_id: String,
    pub message_id: i64,
    pub chat_id: String,
    /// The messenger's id of the message.
    pub external_id: String,
    /// The payment request's, for cards.
    pub payment_hash: Option<[u8; 32]>,
}
