//! Bridges: a coffer room mirrored into a messenger's chat, both ways.
//!
//! One design, an adapter per messenger ([`Messenger`]): the adapter only
//! speaks its messenger's protocol (long polling, sending, editing,
//! acknowledging a press); everything coffer means by a message lives in
//! [`engine`] (what a chat's text or press does) and [`render`] (what a
//! room's message, a card's state, an approval or an alert looks like), so
//! a third messenger is one more adapter.
//!
//! The bridge is the operator's bot. Keys, ledger and constitution stay in
//! the gateway: a messenger user acts as an agent only once linked (a
//! single-use code the agent asks for), and then through that agent's
//! constitution, with the messenger and user named in the audit chain as
//! the key that acted (`telegram:USER`, `matrix:@user:server`).

pub mod engine;
pub mod matrix;
pub mod render;
pub mod telegram;

use std::future::Future;
use std::pin::Pin;

/// A messenger's answer, or why there is none.
pub type BridgeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BridgeError>> + Send + 'a>>;

#[derive(Debug)]
pub enum BridgeError {
    /// The messenger cannot be reached or asks to wait: tried again after a
    /// backoff (`retry_after_ms` when the messenger said how long).
    Unavailable { retry_after_ms: Option<u64>, detail: String },
    /// The messenger refused this one request (a chat the bot left, a
    /// message it cannot edit): not retried.
    Refused(String),
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Unavailable { detail, .. } => write!(f, "messenger unavailable: {detail}"),
            BridgeError::Refused(detail) => write!(f, "messenger refused: {detail}"),
        }
    }
}

/// A messenger user, as the messenger names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Stable id: Telegram's numeric user id, a Matrix user id.
    pub id: String,
    /// For people to read (never trusted for identity).
    pub name: String,
}

/// Something that happened in a chat the bot is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A text message; `reply_to` is the messenger's id of the message it
    /// answers, when it answers one.
    Text { chat: String, user: User, id: String, text: String, reply_to: Option<String> },
    /// A press of a button (Telegram's callback query) or a reaction to a
    /// message (Matrix): `id` is the press's own id (the idempotency key of
    /// what it does), `data` the button's opaque data (empty for a
    /// reaction), `message` the messenger's id of the message pressed on.
    Press { chat: String, user: User, id: String, data: String, message: Option<String> },
}

impl Inbound {
    pub fn chat(&self) -> &str {
        match self {
            Inbound::Text { chat, .. } | Inbound::Press { chat, .. } => chat,
        }
    }

    pub fn user(&self) -> &User {
        match self {
            Inbound::Text { user, .. } | Inbound::Press { user, .. } => user,
        }
    }
}

/// One update and the cursor that follows it: stored once the update is
/// handled, so a restart neither loses nor repeats it.
#[derive(Clone, Debug)]
pub struct Update {
    pub cursor: String,
    /// `None` for an update the adapter read but that means nothing to the
    /// bridge (its cursor still moves).
    pub inbound: Option<Inbound>,
}

/// A button under a message: its label, and the opaque data a press
/// carries back (at most [`BUTTON_DATA_MAX_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub data: String,
}

/// Telegram's limit on callback data, the smallest of the messengers'.
pub const BUTTON_DATA_MAX_BYTES: usize = 64;

/// A message the bridge sends: plain text (the adapter may format it), an
/// optional image sent with it (a payment request's QR code, PNG), and
/// buttons (a messenger without buttons shows `text` alone, which says how
/// to act by replying).
#[derive(Clone, Debug, Default)]
pub struct Outbound {
    pub text: String,
    pub image_png: Option<Vec<u8>>,
    pub buttons: Vec<Button>,
}

/// A messenger's protocol, as the bridge needs it.
pub trait Messenger: Send + Sync + std::fmt::Debug + 'static {
    /// `telegram`, `matrix`: the name in routes, the store and the audit.
    fn name(&self) -> &'static str;

    /// Waits (long polling, bounded by the adapter) for the updates after
    /// `cursor` (`None`: from wherever the messenger starts) and answers them
    /// in order; an empty answer when the wait ends with none.
    fn updates<'a>(&'a self, cursor: Option<&'a str>) -> BridgeFuture<'a, Vec<Update>>;

    /// Sends a message to a chat (with its image, if any, after it) and
    /// answers the messenger's id of the text message, by which it is edited
    /// and replied to.
    fn send<'a>(&'a self, chat: &'a str, message: &'a Outbound) -> BridgeFuture<'a, String>;

    /// Replaces the text and buttons of a message sent before.
    fn edit<'a>(&'a self, chat: &'a str, message_id: &'a str, message: &'a Outbound) -> BridgeFuture<'a, ()>;

    /// Answers a press, with a short text for the user who pressed
    /// (Telegram's `answerCallbackQuery`; a messenger without it replies in
    /// the chat). Every press is answered.
    fn answer<'a>(&'a self, press: &'a Inbound, text: &'a str) -> BridgeFuture<'a, ()>;
}

/// The bridges a gateway runs, from its settings: Telegram when
/// `COFFER_TELEGRAM_BOT_TOKEN` is set (`COFFER_TELEGRAM_API_URL`, default
/// the public Bot API), Matrix when `COFFER_MATRIX_HOMESERVER`,
/// `COFFER_MATRIX_USER` and `COFFER_MATRIX_ACCESS_TOKEN` are.
#[derive(Clone, Debug, Default)]
pub struct BridgeConfig {
    telegram: Option<(String, crate::secrets::Secret)>,
    matrix: Option<(String, String, crate::secrets::Secret)>,
}

impl BridgeConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<BridgeConfig, String> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let telegram = get("COFFER_TELEGRAM_BOT_TOKEN").map(|token| {
            let url = get("COFFER_TELEGRAM_API_URL").unwrap_or_else(|| telegram::DEFAULT_API_URL.to_owned());
            (url, crate::secrets::Secret::new(token))
        });
        let matrix =
            match (get("COFFER_MATRIX_HOMESERVER"), get("COFFER_MATRIX_USER"), get("COFFER_MATRIX_ACCESS_TOKEN")) {
                (Some(hs), Some(user), Some(token)) => Some((hs, user, crate::secrets::Secret::new(token))),
                (None, None, None) => None,
                _ => {
                    return Err(
                        "COFFER_MATRIX_HOMESERVER, COFFER_MATRIX_USER and COFFER_MATRIX_ACCESS_TOKEN go together"
                            .to_owned(),
                    );
                }
            };
        let config = BridgeConfig { telegram, matrix };
        config.messengers()?;
        Ok(config)
    }

    /// The adapters, checked (URLs, ids) but not yet connected.
    pub fn messengers(&self) -> Result<Vec<std::sync::Arc<dyn Messenger>>, String> {
        let mut all: Vec<std::sync::Arc<dyn Messenger>> = Vec::new();
        if let Some((url, token)) = &self.telegram {
            let adapter =
                telegram::Telegram::new(url, token.clone()).map_err(|e| format!("COFFER_TELEGRAM_API_URL: {e}"))?;
            all.push(std::sync::Arc::new(adapter));
        }
        if let Some((homeserver, user, token)) = &self.matrix {
            let adapter = matrix::Matrix::new(homeserver, user, token.clone())
                .map_err(|e| format!("COFFER_MATRIX_HOMESERVER: {e}"))?;
            all.push(std::sync::Arc::new(adapter));
        }
        Ok(all)
    }

    /// The messengers configured, for the start-up lines.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.telegram.is_some() {
            names.push("telegram");
        }
        if self.matrix.is_some() {
            names.push("matrix");
        }
        names
    }
}
