//! Telegram, through the Bot API (<https://core.telegram.org/bots/api>).
//!
//! Every call is `POST {api_url}/bot{token}/{method}`, answered
//! `{"ok": true, "result": ...}` or `{"ok": false, "error_code",
//! "description", "parameters": {"retry_after"}}`:
//!
//! - `getUpdates {offset, limit, timeout, allowed_updates}`: a long poll
//!   ([`POLL_TIMEOUT_SECS`]) for messages and callback queries (button
//!   presses); `offset` is the cursor (the last update's id plus one), which
//!   confirms every update before it;
//! - `sendMessage {chat_id, text, reply_markup}`: plain text (no
//!   `parse_mode`: nothing to escape) with an inline keyboard of the buttons;
//!   an image follows as `sendPhoto` (multipart/form-data, built here: the
//!   build enables no multipart feature of reqwest), in reply to the text;
//! - `editMessageText {chat_id, message_id, text, reply_markup}`: an empty
//!   keyboard removes the buttons; "message is not modified" is success;
//! - `answerCallbackQuery {callback_query_id, text}`.
//!
//! Errors: 429 (with `retry_after`), 409 (another poller, or a webhook set),
//! 5xx and transport failures are [`BridgeError::Unavailable`]; any other
//! refusal is [`BridgeError::Refused`] with Telegram's description. The
//! token is part of every URL: it is never printed (`Debug` shows
//! `<secret>`), transport errors lose their URL, and every error text is
//! scrubbed of it.

use super::{BridgeError, BridgeFuture, Button, Inbound, Messenger, Outbound, Update, User};
use crate::secrets::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::time::Duration;

/// Where the Bot API is, unless the operator runs a local Bot API server.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// How long a `getUpdates` waits for an update (seconds).
pub const POLL_TIMEOUT_SECS: u32 = 25;
/// The longest wait a caller may choose ([`Telegram::with_poll_timeout`]).
pub const POLL_TIMEOUT_SECS_MAX: u32 = 50;
/// How much longer than its long poll a `getUpdates` may take in all.
const POLL_MARGIN: Duration = Duration::from_secs(10);
/// Every other call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Updates asked for per `getUpdates`. An update is at most ~100 KiB of
/// JSON (a 4096-character text and the message it replies to, escaped), so
/// this many fit in [`RESPONSE_LEN_MAX_BYTES`]; a larger answer is asked
/// again one update at a time.
pub const UPDATES_PER_CALL: u32 = 16;
/// The largest answer read from the Bot API.
pub const RESPONSE_LEN_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Telegram's limit on a message's text, in UTF-16 code units: a longer
/// text is clipped (ending with `…`) rather than refused.
pub const TEXT_LEN_MAX_UTF16: usize = 4096;
/// Telegram's limit on the text answering a press.
pub const ANSWER_LEN_MAX_UTF16: usize = 200;
/// How much of an error's text is kept.
const DETAIL_LEN_MAX_CHARS: usize = 300;
/// A longest token accepted: Telegram's are ~46 characters.
const TOKEN_LEN_MAX_BYTES: usize = 256;
/// At most this many buttons, each with a label at most
/// [`ROW_LABEL_MAX_CHARS`] long, share one row; otherwise one per row.
const ROW_BUTTONS_MAX: usize = 3;
const ROW_LABEL_MAX_CHARS: usize = 12;
/// Telegram's refusal of an edit that changes nothing.
const NOT_MODIFIED: &str = "message is not modified";

/// A bot, through the Bot API.
pub struct Telegram {
    /// `api_url` without a trailing slash.
    base: String,
    token: Secret,
    http: reqwest::Client,
    poll_secs: u32,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("api_url", &self.base)
            .field("token", &self.token)
            .field("poll_secs", &self.poll_secs)
            .finish()
    }
}

impl Telegram {
    /// The bot of this token at `api_url` ([`DEFAULT_API_URL`], or a local
    /// Bot API server): https, or http to this machine only (the token must
    /// not cross a network in the clear). No call is made.
    pub fn new(api_url: &str, token: Secret) -> Result<Telegram, String> {
        let t = token.expose();
        if t.is_empty()
            || t.len() > TOKEN_LEN_MAX_BYTES
            || !t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
        {
            return Err("the Telegram bot token is not a token (letters, digits, ':', '_' and '-')".into());
        }
        let parsed = reqwest::Url::parse(api_url).map_err(|e| format!("the Telegram API URL: {e}"))?;
        let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match parsed.scheme() {
            "https" => {}
            "http" if local => {}
            _ => return Err("the Telegram API URL: use https (http only to 127.0.0.1 or localhost)".into()),
        }
        if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
            return Err("the Telegram API URL: no query, fragment or credentials".into());
        }
        // reqwest is built without a TLS provider of its own.
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the Telegram HTTP client: {e}"))?;
        Ok(Telegram { base: api_url.trim_end_matches('/').to_owned(), token, http, poll_secs: POLL_TIMEOUT_SECS })
    }

    /// The same bot with another long-poll wait, at most
    /// [`POLL_TIMEOUT_SECS_MAX`] (0: `getUpdates` answers at once).
    pub fn with_poll_timeout(mut self, secs: u32) -> Telegram {
        self.poll_secs = secs.min(POLL_TIMEOUT_SECS_MAX);
        self
    }

    /// Calls a method and answers its `result`, with every error text
    /// scrubbed of the token.
    async fn call(&self, method: &str, body: Body, timeout: Duration) -> Result<Value, Failure> {
        let url = format!("{}/bot{}/{method}", self.base, self.token.expose());
        let request = self.http.post(url).timeout(timeout);
        let request = match body {
            Body::Json(value) => request.json(&value),
            Body::Multipart { boundary, bytes } => request
                .header(reqwest::header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
                .body(bytes),
        };
        let answer = match read(request).await {
            Ok((status, body)) => outcome(status, &body).map_err(Failure::Bridge),
            Err(failure) => Err(failure),
        };
        answer.map_err(|failure| match failure {
            Failure::Bridge(e) => Failure::Bridge(self.scrub(e)),
            other => other,
        })
    }

    /// An error without the token (which no error should hold: this is the
    /// last guard).
    fn scrub(&self, error: BridgeError) -> BridgeError {
        let token = self.token.expose();
        let clean = |text: String| if text.contains(token) { text.replace(token, "<token>") } else { text };
        match error {
            BridgeError::Unavailable { retry_after_ms, detail } => {
                BridgeError::Unavailable { retry_after_ms, detail: clean(detail) }
            }
            BridgeError::Refused(detail) => BridgeError::Refused(clean(detail)),
        }
    }

    async fn get_updates(&self, offset: Option<i64>, limit: u32) -> Result<Value, Failure> {
        let mut body = json!({
            "timeout": self.poll_secs,
            "limit": limit,
            "allowed_updates": ["message", "callback_query"],
        });
        if let Some(offset) = offset {
            body["offset"] = json!(offset);
        }
        let timeout = Duration::from_secs(u64::from(self.poll_secs)) + POLL_MARGIN;
        self.call("getUpdates", Body::Json(body), timeout).await
    }

    async fn send_photo(&self, chat: &str, png: &[u8], reply_to: i64) -> Result<(), BridgeError> {
        let reply = json!({"message_id": reply_to, "allow_sending_without_reply": true}).to_string();
        let (boundary, bytes) = multipart(&[("chat_id", chat), ("reply_parameters", &reply)], ("photo", "qr.png", png));
        self.call("sendPhoto", Body::Multipart { boundary, bytes }, REQUEST_TIMEOUT).await?;
        Ok(())
    }
}

impl Messenger for Telegram {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn updates<'a>(&'a self, cursor: Option<&'a str>) -> BridgeFuture<'a, Vec<Update>> {
        Box::pin(async move {
            let offset = match cursor {
                None => None,
                Some(c) => Some(
                    c.parse::<i64>()
                        .map_err(|_| BridgeError::Refused("a Telegram cursor is an update id plus one".into()))?,
                ),
            };
            let result = match self.get_updates(offset, UPDATES_PER_CALL).await {
                Err(Failure::TooLarge) => self.get_updates(offset, 1).await?,
                other => other?,
            };
            parse_updates(result)
        })
    }

    fn send<'a>(&'a self, chat: &'a str, message: &'a Outbound) -> BridgeFuture<'a, String> {
        Box::pin(async move {
            let mut body = json!({"chat_id": chat_id(chat), "text": clip(&message.text, TEXT_LEN_MAX_UTF16)});
            if !message.buttons.is_empty() {
                body["reply_markup"] = keyboard(&message.buttons);
            }
            let sent = self.call("sendMessage", Body::Json(body), REQUEST_TIMEOUT).await?;
            let id = message_id(&sent)?;
            if let Some(png) = &message.image_png {
                // The text is sent: failing here would send it again. The
                // image only repeats what the text says (a payment
                // request), so it is let go.
                if let Err(e) = self.send_photo(chat, png, id).await {
                    tracing::warn!(messenger = "telegram", chat, error = %e, "sending an image failed");
                }
            }
            Ok(id.to_string())
        })
    }

    fn edit<'a>(&'a self, chat: &'a str, message_id: &'a str, message: &'a Outbound) -> BridgeFuture<'a, ()> {
        Box::pin(async move {
            let id: i64 =
                message_id.parse().map_err(|_| BridgeError::Refused("a Telegram message id is a number".into()))?;
            let body = json!({
                "chat_id": chat_id(chat),
                "message_id": id,
                "text": clip(&message.text, TEXT_LEN_MAX_UTF16),
                "reply_markup": keyboard(&message.buttons),
            });
            match self.call("editMessageText", Body::Json(body), REQUEST_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err(Failure::Bridge(BridgeError::Refused(why))) if why.contains(NOT_MODIFIED) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn answer<'a>(&'a self, press: &'a Inbound, text: &'a str) -> BridgeFuture<'a, ()> {
        Box::pin(async move {
            let Inbound::Press { id, .. } = press else {
                return Err(BridgeError::Refused("only a press is answered".into()));
            };
            let body = json!({"callback_query_id": id, "text": clip(text, ANSWER_LEN_MAX_UTF16)});
            self.call("answerCallbackQuery", Body::Json(body), REQUEST_TIMEOUT).await?;
            Ok(())
        })
    }
}

enum Body {
    Json(Value),
    Multipart { boundary: String, bytes: Vec<u8> },
}

/// Why a call has no result.
enum Failure {
    /// An answer larger than [`RESPONSE_LEN_MAX_BYTES`].
    TooLarge,
    Bridge(BridgeError),
}

impl From<Failure> for BridgeError {
    fn from(failure: Failure) -> BridgeError {
        match failure {
            Failure::TooLarge => BridgeError::Unavailable {
                retry_after_ms: None,
                detail: format!("an answer larger than {RESPONSE_LEN_MAX_BYTES} bytes"),
            },
            Failure::Bridge(e) => e,
        }
    }
}

/// Sends a request and reads its status and body, at most
/// [`RESPONSE_LEN_MAX_BYTES`].
async fn read(request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), Failure> {
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    if response.content_length().is_some_and(|len| len > RESPONSE_LEN_MAX_BYTES as u64) {
        return Err(Failure::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > RESPONSE_LEN_MAX_BYTES {
            return Err(Failure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// A transport error, without its URL (which holds the token).
fn transport(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut detail = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the answer broke off".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        detail = format!("{detail}: {c}");
        cause = c.source();
    }
    Failure::Bridge(BridgeError::Unavailable { retry_after_ms: None, detail: shorten(&detail) })
}

/// The Bot API's answer, successful or not.
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    result: Option<Value>,
    description: Option<String>,
    error_code: Option<u16>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
}

/// An answer's `result`, or the error it means.
fn outcome(status: u16, body: &[u8]) -> Result<Value, BridgeError> {
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        // Not the Bot API speaking: a proxy in front of it, most likely.
        let detail = shorten(&format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(512)])));
        return Err(match status {
            429 | 500..=599 | 200..=299 => BridgeError::Unavailable { retry_after_ms: None, detail },
            _ => BridgeError::Refused(detail),
        });
    };
    if answer.ok && (200..300).contains(&status) {
        return answer.result.ok_or_else(|| BridgeError::Unavailable {
            retry_after_ms: None,
            detail: "an answer without its result".into(),
        });
    }
    let code = answer.error_code.unwrap_or(status);
    let detail = shorten(&answer.description.unwrap_or_else(|| format!("HTTP {status}")));
    let retry_after_ms = answer.parameters.and_then(|p| p.retry_after).map(|s| s.saturating_mul(1000));
    match (status, code) {
        (429, _) | (_, 429) | (409, _) | (500..=599, _) | (_, 500..=599) => {
            Err(BridgeError::Unavailable { retry_after_ms, detail })
        }
        _ if retry_after_ms.is_some() => Err(BridgeError::Unavailable { retry_after_ms, detail }),
        _ => Err(BridgeError::Refused(detail)),
    }
}

/// Text for an error: one line, bounded.
fn shorten(text: &str) -> String {
    text.chars().take(DETAIL_LEN_MAX_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[derive(Deserialize)]
struct RawUpdate {
    message: Option<Message>,
    callback_query: Option<CallbackQuery>,
}

#[derive(Deserialize)]
struct Message {
    message_id: i64,
    from: Option<Sender>,
    chat: Chat,
    text: Option<String>,
    reply_to_message: Option<MessageRef>,
}

/// A message named by another (the one replied to, the one pressed on;
/// an "inaccessible" message still has both).
#[derive(Deserialize)]
struct MessageRef {
    message_id: i64,
    chat: Option<Chat>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
}

#[derive(Deserialize)]
struct Sender {
    id: i64,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    first_name: String,
    last_name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct CallbackQuery {
    id: String,
    from: Sender,
    message: Option<MessageRef>,
    data: Option<String>,
}

impl Sender {
    fn user(&self) -> User {
        let mut name = self.first_name.trim().to_owned();
        if let Some(last) = self.last_name.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            if !name.is_empty() {
                name.push(' ');
            }
            name.push_str(last);
        }
        if name.is_empty() {
            name = match &self.username {
                Some(username) => format!("@{username}"),
                None => self.id.to_string(),
            };
        }
        User { id: self.id.to_string(), name }
    }
}

/// `getUpdates`' result as updates, in order of their ids. An update whose
/// id cannot be read fails the whole answer (the cursor could not move past
/// it); one that cannot otherwise be read, or means nothing to the bridge
/// (another kind of update, a message without text, a bot's), is kept with
/// no inbound, so that its cursor moves.
pub fn parse_updates(result: Value) -> Result<Vec<Update>, BridgeError> {
    let Value::Array(items) = result else {
        return Err(BridgeError::Unavailable { retry_after_ms: None, detail: "getUpdates answered no list".into() });
    };
    let mut numbered = Vec::with_capacity(items.len());
    for item in items {
        let id = item.get("update_id").and_then(Value::as_i64).ok_or_else(|| BridgeError::Unavailable {
            retry_after_ms: None,
            detail: "an update without its update_id".into(),
        })?;
        numbered.push((id, item));
    }
    numbered.sort_by_key(|(id, _)| *id);
    Ok(numbered
        .into_iter()
        .map(|(id, item)| Update { cursor: id.saturating_add(1).to_string(), inbound: inbound(item) })
        .collect())
}

/// What an update means to the bridge, if anything.
fn inbound(item: Value) -> Option<Inbound> {
    let update: RawUpdate = serde_json::from_value(item).ok()?;
    if let Some(message) = update.message {
        let from = message.from.filter(|f| !f.is_bot)?;
        return Some(Inbound::Text {
            chat: message.chat.id.to_string(),
            user: from.user(),
            id: message.message_id.to_string(),
            text: message.text?,
            reply_to: message.reply_to_message.map(|r| r.message_id.to_string()),
        });
    }
    let press = update.callback_query?;
    if press.from.is_bot {
        return None;
    }
    // Without its message (a press in inline mode, which the bridge does
    // not use), a press has no chat.
    let pressed = press.message?;
    Some(Inbound::Press {
        chat: pressed.chat?.id.to_string(),
        user: press.from.user(),
        id: press.id,
        data: press.data?,
        message: Some(pressed.message_id.to_string()),
    })
}

/// `message_id` of a sent message.
fn message_id(sent: &Value) -> Result<i64, BridgeError> {
    sent.get("message_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| BridgeError::Refused("Telegram answered a sent message without its message_id".into()))
}

/// A chat id as Telegram takes it: a number, or `@channelusername`.
fn chat_id(chat: &str) -> Value {
    chat.parse::<i64>().map_or_else(|_| Value::String(chat.to_owned()), Value::from)
}

/// The buttons as an inline keyboard: a few short ones in one row, others
/// one per row; none is an empty keyboard (which removes one).
fn keyboard(buttons: &[Button]) -> Value {
    let key = |b: &Button| json!({"text": b.label, "callback_data": b.data});
    let one_row =
        buttons.len() <= ROW_BUTTONS_MAX && buttons.iter().all(|b| b.label.chars().count() <= ROW_LABEL_MAX_CHARS);
    let rows: Vec<Value> = if buttons.is_empty() {
        Vec::new()
    } else if one_row {
        vec![Value::Array(buttons.iter().map(key).collect())]
    } else {
        buttons.iter().map(|b| json!([key(b)])).collect()
    };
    json!({ "inline_keyboard": rows })
}

/// `text`, clipped to `max_utf16` UTF-16 code units (Telegram's count),
/// ending with `…` when clipped.
fn clip(text: &str, max_utf16: usize) -> Cow<'_, str> {
    if text.encode_utf16().count() <= max_utf16 {
        return Cow::Borrowed(text);
    }
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        if used + c.len_utf16() > max_utf16.saturating_sub(1) {
            break;
        }
        used += c.len_utf16();
        end = i + c.len_utf8();
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// A multipart/form-data body of text fields and one file: its boundary
/// and bytes. The boundary is random (128 bits), and chosen again in the
/// unlikely case that a part holds it.
fn multipart(fields: &[(&str, &str)], file: (&str, &str, &[u8])) -> (String, Vec<u8>) {
    let (name, filename, content) = file;
    loop {
        let boundary = format!("coffer-{}", hex::encode(crate::secrets::random_bytes::<16>()));
        let b = boundary.as_bytes();
        let held = |part: &[u8]| part.windows(b.len()).any(|w| w == b);
        if held(content) || fields.iter().any(|(_, v)| held(v.as_bytes())) {
            continue;
        }
        let mut body = Vec::with_capacity(content.len() + 512);
        for (field, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        return (boundary, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str) -> User {
        User { id: id.into(), name: name.into() }
    }

    #[test]
    fn updates_map_to_texts_replies_and_presses() {
        let result = json!([
            {"update_id": 101, "message": {"message_id": 7, "date": 1,
                "from": {"id": 42, "is_bot": false, "first_name": "Ada", "last_name": "L", "username": "ada"},
                "chat": {"id": -1001, "type": "supergroup", "title": "ops"}, "text": "/balance"}},
            {"update_id": 102, "message": {"message_id": 8, "date": 1,
                "from": {"id": 43, "is_bot": false, "first_name": "", "username": "bob"},
                "chat": {"id": 43, "type": "private"}, "text": "yes",
                "reply_to_message": {"message_id": 5, "date": 1, "chat": {"id": 43, "type": "private"},
                    "text": "approve?"}}},
            {"update_id": 103, "callback_query": {"id": "cb-1", "chat_instance": "x", "data": "a:1",
                "from": {"id": 42, "is_bot": false, "first_name": "Ada"},
                "message": {"message_id": 5, "date": 0, "chat": {"id": -1001, "type": "supergroup"}}}},
        ]);
        let updates = parse_updates(result).unwrap();
        let cursors: Vec<&str> = updates.iter().map(|u| u.cursor.as_str()).collect();
        assert_eq!(cursors, ["102", "103", "104"]);
        assert_eq!(
            updates[0].inbound,
            Some(Inbound::Text {
                chat: "-1001".into(),
                user: user("42", "Ada L"),
                id: "7".into(),
                text: "/balance".into(),
                reply_to: None,
            })
        );
        assert_eq!(
            updates[1].inbound,
            Some(Inbound::Text {
                chat: "43".into(),
                user: user("43", "@bob"),
                id: "8".into(),
                text: "yes".into(),
                reply_to: Some("5".into()),
            })
        );
        assert_eq!(
            updates[2].inbound,
            Some(Inbound::Press {
                chat: "-1001".into(),
                user: user("42", "Ada"),
                id: "cb-1".into(),
                data: "a:1".into(),
                message: Some("5".into()),
            })
        );
    }

    #[test]
    fn updates_that_mean_nothing_still_move_the_cursor() {
        let result = json!([
            {"update_id": 9, "edited_message": {"message_id": 1}},
            {"update_id": 5, "message": {"message_id": 2, "date": 1, "chat": {"id": 1, "type": "private"},
                "from": {"id": 1, "is_bot": false, "first_name": "A"}, "photo": []}},
            {"update_id": 6, "message": {"message_id": 3, "date": 1, "chat": {"id": 1, "type": "private"},
                "from": {"id": 2, "is_bot": true, "first_name": "B"}, "text": "hi"}},
            {"update_id": 7, "message": {"message_id": "not a number"}},
            {"update_id": 8, "callback_query": {"id": "c", "chat_instance": "x", "inline_message_id": "i",
                "from": {"id": 1, "is_bot": false, "first_name": "A"}, "data": "d"}},
            {"update_id": 10, "callback_query": {"id": "g", "chat_instance": "x", "game_short_name": "g",
                "from": {"id": 1, "is_bot": false, "first_name": "A"},
                "message": {"message_id": 4, "date": 0, "chat": {"id": 1, "type": "private"}}}},
        ]);
        let updates = parse_updates(result).unwrap();
        let cursors: Vec<&str> = updates.iter().map(|u| u.cursor.as_str()).collect();
        assert_eq!(cursors, ["6", "7", "8", "9", "10", "11"], "in order of their ids");
        assert!(updates.iter().all(|u| u.inbound.is_none()));
        assert!(parse_updates(json!([])).unwrap().is_empty());
    }

    #[test]
    fn an_answer_without_update_ids_is_an_error() {
        assert!(matches!(parse_updates(json!([{"message": {}}])), Err(BridgeError::Unavailable { .. })));
        assert!(matches!(parse_updates(json!({"update_id": 1})), Err(BridgeError::Unavailable { .. })));
    }

    #[test]
    fn errors_map_to_unavailable_or_refused() {
        let ok = outcome(200, br#"{"ok":true,"result":{"message_id":3}}"#).unwrap();
        assert_eq!(ok["message_id"], 3);
        let busy = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7",
            "parameters":{"retry_after":7}}"#;
        match outcome(429, busy) {
            Err(BridgeError::Unavailable { retry_after_ms: Some(7000), detail }) => {
                assert!(detail.contains("Too Many Requests"));
            }
            other => panic!("{other:?}"),
        }
        match outcome(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>") {
            Err(BridgeError::Unavailable { retry_after_ms: None, detail }) => assert!(detail.contains("502")),
            other => panic!("{other:?}"),
        }
        let internal = br#"{"ok":false,"error_code":500,"description":"Internal Server Error"}"#;
        assert!(matches!(outcome(500, internal), Err(BridgeError::Unavailable { .. })));
        let conflict =
            br#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request"}"#;
        assert!(matches!(outcome(409, conflict), Err(BridgeError::Unavailable { .. })));
        let refused = br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#;
        match outcome(400, refused) {
            Err(BridgeError::Refused(d)) => assert_eq!(d, "Bad Request: chat not found"),
            other => panic!("{other:?}"),
        }
        let unauthorized = br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#;
        assert!(matches!(outcome(401, unauthorized), Err(BridgeError::Refused(_))));
        assert!(matches!(outcome(404, b"Not Found"), Err(BridgeError::Refused(_))));
        assert!(matches!(outcome(200, b"{}"), Err(BridgeError::Unavailable { .. })));
    }

    #[test]
    fn texts_are_clipped_in_utf16_units() {
        assert_eq!(clip("hello", 5), "hello");
        assert_eq!(clip("hello!", 5), "hell…");
        // An emoji is two UTF-16 units: it is not split.
        assert_eq!(clip("ab😀cd", 4), "ab…");
        let long = "x".repeat(5000);
        assert_eq!(clip(&long, TEXT_LEN_MAX_UTF16).encode_utf16().count(), TEXT_LEN_MAX_UTF16);
    }

    #[test]
    fn keyboards_put_a_few_short_buttons_in_one_row() {
        let b = |label: &str, data: &str| Button { label: label.into(), data: data.into() };
        assert_eq!(keyboard(&[]), json!({"inline_keyboard": []}));
        assert_eq!(
            keyboard(&[b("Approve", "a:1"), b("Deny", "d:1")]),
            json!({"inline_keyboard": [[{"text": "Approve", "callback_data": "a:1"},
                {"text": "Deny", "callback_data": "d:1"}]]})
        );
        let long = keyboard(&[b("Approve this payment", "a:1"), b("Deny", "d:1")]);
        assert_eq!(long["inline_keyboard"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn multipart_bodies_hold_their_fields_and_file() {
        let (boundary, body) = multipart(&[("chat_id", "42")], ("photo", "qr.png", b"\x89PNG\r\n"));
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"chat_id\"\r\n\r\n42\r\n"));
        assert!(text.contains("name=\"photo\"; filename=\"qr.png\"\r\nContent-Type: image/png\r\n\r\n"));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }

    #[test]
    fn the_token_is_never_shown() {
        let token = "123456:SECRET-token_value";
        let bot = Telegram::new("https://api.telegram.org/", Secret::new(token.into())).unwrap();
        assert!(!format!("{bot:?}").contains("SECRET"));
        let scrubbed = bot.scrub(BridgeError::Refused(format!("at /bot{token}/getMe")));
        assert!(!scrubbed.to_string().contains(token));
        let bad = Telegram::new("https://api.telegram.org", Secret::new("SECRET token".into())).unwrap_err();
        assert!(!bad.contains("SECRET"));
        let clear = Telegram::new("http://example.com", Secret::new(token.into())).unwrap_err();
        assert!(!clear.contains("SECRET"));
        assert!(Telegram::new("http://127.0.0.1:8081", Secret::new(token.into())).is_ok());
    }
}
