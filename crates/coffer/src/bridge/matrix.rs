//! Matrix, through the client-server API as the bot's user (an access
//! token of the bot's account on its homeserver).
//!
//! - Updates: `GET /_matrix/client/v3/sync` long polling (25 s), with an
//!   inline filter: joined rooms' timelines only (messages, reactions and
//!   memberships, at most [`TIMELINE_LIMIT`] events a room a batch; a room
//!   with more since the last batch loses the older ones, which the
//!   homeserver marks `limited`), the senders' member events for their
//!   display names, no presence or account data. The cursor is the sync's
//!   `next_batch`. A batch's updates carry the batch's `since` as their
//!   cursor, but the last, which carries `next_batch`: a restart in the
//!   middle of a batch reads it again (its handled events come again, and
//!   the engine's actions are idempotent by event id), none is lost.
//! - The first sync (no cursor) hands back nothing of the rooms' history:
//!   its `next_batch` only (one update without an inbound).
//! - A room the bot is invited to is joined (`POST /join/{room}`) as soon
//!   as a sync shows the invitation, so that a room can be bridged after
//!   an invite; the room's history before the bot's join is not handed
//!   back.
//! - `m.room.message` `m.text` from others (not edits) are
//!   [`Inbound::Text`], their reply fallback (the `> ` quote lines and the
//!   blank line after them) stripped; `m.reaction` annotations are
//!   [`Inbound::Press`] on the event reacted to, with empty data.
//! - Sending: `m.text` with an HTML body (escaped, newlines as `<br>`);
//!   the image is uploaded (`POST /_matrix/media/v3/upload`) before the
//!   text is sent, and sent after it as an `m.image`. Buttons are not sent
//!   (Matrix has none: the engine's text says how to act by replying).
//! - Editing: an `m.replace` edit (`m.new_content`, the fallback body
//!   prefixed with `* `).
//! - Answering a press: an `m.notice` in reply to the message reacted to
//!   (for a text, to the text).
//! - Errors: `429` (`M_LIMIT_EXCEEDED`, with `retry_after_ms`), `5xx` and
//!   transport failures are [`BridgeError::Unavailable`]; any other refusal
//!   is [`BridgeError::Refused`] with the homeserver's `errcode` and
//!   `error`.
//!
//! The access token is sent in the `Authorization` header only: never in a
//! URL, a log line, an error or `Debug`.

use super::{BridgeError, BridgeFuture, Inbound, Messenger, Outbound, Update, User};
use crate::secrets::Secret;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a sync waits on the homeserver for something to happen.
pub const SYNC_TIMEOUT_MS: u64 = 25_000;
/// The most events of one room's timeline in one sync batch.
pub const TIMELINE_LIMIT: u32 = 50;
/// The largest sync answer read (a batch of [`TIMELINE_LIMIT`] events in
/// each of many rooms, with their senders' member events).
pub const SYNC_LEN_MAX_BYTES: usize = 4 * 1024 * 1024;
/// The largest answer of any other call (an event id, an error).
const ANSWER_LEN_MAX_BYTES: usize = 64 * 1024;
/// How much of an error answer is kept as its detail.
const DETAIL_LEN_MAX_BYTES: usize = 300;
/// A call other than a sync or an upload.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A sync: its long poll, and time for the answer.
const SYNC_CALL_TIMEOUT: Duration = Duration::from_millis(SYNC_TIMEOUT_MS + 20_000);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Matrix {
    base: String,
    user_id: String,
    access_token: Secret,
    http: reqwest::Client,
    /// Transaction ids: random per process, and a counter.
    txn_prefix: String,
    txn_counter: AtomicU64,
    sync_timeout_ms: u64,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matrix").field("homeserver", &self.base).field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

impl Matrix {
    /// The bot `user_id` (`@bot:example.org`) on the homeserver at
    /// `homeserver` (its client-server API's base URL, like
    /// `https://matrix.example.org`), with its access token.
    pub fn new(homeserver: &str, user_id: &str, access_token: Secret) -> Result<Matrix, String> {
        let parsed = reqwest::Url::parse(homeserver).map_err(|e| format!("the Matrix homeserver URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err("the Matrix homeserver URL: an http(s) URL without a query".into());
        }
        if !user_id.starts_with('@') || !user_id.contains(':') {
            return Err(format!("the Matrix bot's user id {user_id:?} is not like @name:server"));
        }
        // reqwest is built without a TLS provider of its own.
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the Matrix HTTP client: {e}"))?;
        Ok(Matrix {
            base: homeserver.trim_end_matches('/').to_owned(),
            user_id: user_id.to_owned(),
            access_token,
            http,
            txn_prefix: hex::encode(crate::secrets::random_bytes::<8>()),
            txn_counter: AtomicU64::new(0),
            sync_timeout_ms: SYNC_TIMEOUT_MS,
        })
    }

    /// How long a sync waits for something to happen (at most
    /// [`SYNC_TIMEOUT_MS`]); tests wait less.
    pub fn with_sync_timeout(mut self, ms: u64) -> Matrix {
        self.sync_timeout_ms = ms.min(SYNC_TIMEOUT_MS);
        self
    }

    /// The bot's user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    fn txn_id(&self) -> String {
        format!("coffer.{}.{}", self.txn_prefix, self.txn_counter.fetch_add(1, Ordering::Relaxed))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.access_token.expose())
            .timeout(CALL_TIMEOUT)
    }

    /// Sends an event to a room; answers its event id.
    async fn send_event(&self, room: &str, kind: &str, content: &Value) -> Result<String, BridgeError> {
        let path =
            format!("/_matrix/client/v3/rooms/{}/send/{}/{}", segment(room), segment(kind), segment(&self.txn_id()));
        let answer = call(self.request(reqwest::Method::PUT, &path).json(content), ANSWER_LEN_MAX_BYTES).await?;
        answer
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| unavailable(None, "the homeserver answered a sent event without its event_id"))
    }

    async fn upload_png(&self, png: &[u8]) -> Result<String, BridgeError> {
        let request = self
            .request(reqwest::Method::POST, "/_matrix/media/v3/upload?filename=qr.png")
            .timeout(UPLOAD_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "image/png")
            .body(png.to_vec());
        let answer = call(request, ANSWER_LEN_MAX_BYTES).await?;
        answer
            .get("content_uri")
            .and_then(Value::as_str)
            .filter(|uri| uri.starts_with("mxc://"))
            .map(str::to_owned)
            .ok_or_else(|| unavailable(None, "the homeserver answered an upload without its mxc content_uri"))
    }

    async fn join(&self, room: &str) -> Result<(), BridgeError> {
        let path = format!("/_matrix/client/v3/join/{}", segment(room));
        call(self.request(reqwest::Method::POST, &path).json(&json!({})), ANSWER_LEN_MAX_BYTES).await.map(|_| ())
    }

    async fn sync(&self, since: Option<&str>) -> Result<Value, BridgeError> {
        let (filter, timeout) = match since {
            // The first sync only finds where "now" is, and the invitations.
            None => (sync_filter(1), 0),
            Some(_) => (sync_filter(TIMELINE_LIMIT), self.sync_timeout_ms),
        };
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout}&filter={}", segment(&filter.to_string()));
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&segment(since));
        }
        call(self.request(reqwest::Method::GET, &path).timeout(SYNC_CALL_TIMEOUT), SYNC_LEN_MAX_BYTES).await
    }

    async fn updates_after(&self, cursor: Option<&str>) -> Result<Vec<Update>, BridgeError> {
        let batch = self.sync(cursor).await?;
        let mapped = map_sync(&self.user_id, cursor, &batch)?;
        // Join before the cursor moves on: a failed join is tried again
        // with the same batch.
        for room in &mapped.invites {
            match self.join(room).await {
                Ok(()) => tracing::info!(room = %room, "matrix: joined a room the bot was invited to"),
                Err(BridgeError::Refused(why)) => {
                    tracing::warn!(room = %room, "matrix: cannot join a room the bot was invited to: {why}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(mapped.updates)
    }
}

impl Messenger for Matrix {
    fn name(&self) -> &'static str {
        "matrix"
    }

    fn updates<'a>(&'a self, cursor: Option<&'a str>) -> BridgeFuture<'a, Vec<Update>> {
        Box::pin(self.updates_after(cursor))
    }

    fn send<'a>(&'a self, chat: &'a str, message: &'a Outbound) -> BridgeFuture<'a, String> {
        Box::pin(async move {
            // Uploaded first: a failed upload sends nothing.
            let image = match &message.image_png {
                Some(png) => Some((self.upload_png(png).await?, png)),
                None => None,
            };
            let id = self.send_event(chat, "m.room.message", &text_content("m.text", &message.text)).await?;
            if let Some((uri, png)) = image {
                let content = image_content(&uri, png);
                // The text is sent: failing here would have it sent again.
                if let Err(e) = self.send_event(chat, "m.room.message", &content).await {
                    tracing::warn!(room = %chat, "matrix: the image after a message was not sent: {e}");
                }
            }
            Ok(id)
        })
    }

    fn edit<'a>(&'a self, chat: &'a str, message_id: &'a str, message: &'a Outbound) -> BridgeFuture<'a, ()> {
        Box::pin(async move {
            self.send_event(chat, "m.room.message", &edit_content(message_id, &message.text)).await.map(|_| ())
        })
    }

    fn answer<'a>(&'a self, press: &'a Inbound, text: &'a str) -> BridgeFuture<'a, ()> {
        Box::pin(async move {
            let to = match press {
                Inbound::Text { id, .. } => id,
                Inbound::Press { id, message, .. } => message.as_ref().unwrap_or(id),
            };
            let mut content = text_content("m.notice", text);
            content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": to}});
            self.send_event(press.chat(), "m.room.message", &content).await.map(|_| ())
        })
    }
}

/// The sync filter: joined rooms' timelines (messages, reactions and
/// memberships, `limit` a room), the timeline senders' member events;
/// nothing else.
fn sync_filter(limit: u32) -> Value {
    json!({
        "presence": {"types": []},
        "account_data": {"types": []},
        "room": {
            "timeline": {"limit": limit, "types": ["m.room.message", "m.reaction", "m.room.member"]},
            "state": {"types": ["m.room.member"], "lazy_load_members": true, "include_redundant_members": true},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        },
    })
}

/// What a sync batch means to the bridge.
#[derive(Debug, Default)]
struct Mapped {
    updates: Vec<Update>,
    /// Rooms the bot is invited to (to join).
    invites: Vec<String>,
}

fn map_sync(own: &str, since: Option<&str>, batch: &Value) -> Result<Mapped, BridgeError> {
    let next = batch
        .get("next_batch")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unavailable(None, "a sync answer without next_batch"))?;
    let rooms = batch.get("rooms");
    let invites = rooms
        .and_then(|r| r.get("invite"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut inbound = Vec::new();
    // The first sync: where "now" is, no history.
    if let Some(since) = since {
        for (room, joined) in rooms.and_then(|r| r.get("join")).and_then(Value::as_object).into_iter().flatten() {
            room_inbound(own, room, joined, &mut inbound);
        }
        let count = inbound.len();
        let updates = inbound
            .into_iter()
            .enumerate()
            .map(|(i, inbound)| Update {
                cursor: if i + 1 == count { next.to_owned() } else { since.to_owned() },
                inbound: Some(inbound),
            })
            .collect::<Vec<_>>();
        if !updates.is_empty() {
            return Ok(Mapped { updates, invites });
        }
        if since == next {
            return Ok(Mapped { updates, invites });
        }
    }
    Ok(Mapped { updates: vec![Update { cursor: next.to_owned(), inbound: None }], invites })
}

/// The events of one joined room's timeline that mean something to the
/// bridge, in order.
fn room_inbound(own: &str, room: &str, joined: &Value, out: &mut Vec<Inbound>) {
    let events = |section: &str| -> Vec<&Value> {
        joined.get(section).and_then(|s| s.get("events")).and_then(Value::as_array).into_iter().flatten().collect()
    };
    let mut names: HashMap<String, String> = HashMap::new();
    for event in events("state") {
        learn_name(event, &mut names);
    }
    let timeline = events("timeline");
    // The room's history before the bot joined it is not the bridge's.
    let start = timeline.iter().rposition(|e| is_own_join(own, e)).map_or(0, |i| i + 1);
    for (i, event) in timeline.iter().enumerate() {
        learn_name(event, &mut names);
        if i < start {
            continue;
        }
        if let Some(inbound) = event_inbound(own, room, event, &names) {
            out.push(inbound);
        }
    }
}

fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}

/// A member event's display name, for the events after it.
fn learn_name(event: &Value, names: &mut HashMap<String, String>) {
    if str_at(event, &["type"]) != Some("m.room.member") {
        return;
    }
    if let Some(user) = str_at(event, &["state_key"]) {
        match str_at(event, &["content", "displayname"]).filter(|n| !n.trim().is_empty()) {
            Some(name) => names.insert(user.to_owned(), name.to_owned()),
            None => names.remove(user),
        };
    }
}

/// The bot's own join (not a change of its profile while joined).
fn is_own_join(own: &str, event: &Value) -> bool {
    str_at(event, &["type"]) == Some("m.room.member")
        && str_at(event, &["state_key"]) == Some(own)
        && str_at(event, &["content", "membership"]) == Some("join")
        && str_at(event, &["unsigned", "prev_content", "membership"]) != Some("join")
}

fn event_inbound(own: &str, room: &str, event: &Value, names: &HashMap<String, String>) -> Option<Inbound> {
    let sender = str_at(event, &["sender"])?;
    if sender == own {
        return None;
    }
    let id = str_at(event, &["event_id"])?.to_owned();
    let user = User { id: sender.to_owned(), name: names.get(sender).cloned().unwrap_or_else(|| sender.to_owned()) };
    let chat = room.to_owned();
    let relates = event.get("content").and_then(|c| c.get("m.relates_to"));
    match str_at(event, &["type"])? {
        "m.room.message" => {
            if str_at(event, &["content", "msgtype"]) != Some("m.text") {
                return None;
            }
            // An edit of a message is not a new command.
            if relates.and_then(|r| str_at(r, &["rel_type"])) == Some("m.replace") {
                return None;
            }
            let body = str_at(event, &["content", "body"])?;
            let reply_to = relates.and_then(|r| str_at(r, &["m.in_reply_to", "event_id"])).map(str::to_owned);
            let text = if reply_to.is_some() { strip_reply_fallback(body) } else { body }.to_owned();
            Some(Inbound::Text { chat, user, id, text, reply_to })
        }
        "m.reaction" => {
            let relates = relates?;
            if str_at(relates, &["rel_type"]) != Some("m.annotation") {
                return None;
            }
            let message = str_at(relates, &["event_id"])?.to_owned();
            Some(Inbound::Press { chat, user, id, data: String::new(), message: Some(message) })
        }
        _ => None,
    }
}

/// A reply's body without its fallback: the leading lines quoting the
/// message answered (`> ...`), and the blank line after them.
fn strip_reply_fallback(body: &str) -> &str {
    let mut rest = body;
    let mut quoted = false;
    while rest.starts_with("> ") || rest == ">" || rest.starts_with(">\n") {
        quoted = true;
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    if quoted {
        rest = rest.strip_prefix('\n').unwrap_or(rest);
    }
    rest
}

/// Plain text as HTML: escaped, newlines as `<br>`.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn text_content(msgtype: &str, text: &str) -> Value {
    json!({"msgtype": msgtype, "body": text, "format": "org.matrix.custom.html", "formatted_body": html(text)})
}

fn edit_content(message_id: &str, text: &str) -> Value {
    let new = text_content("m.text", text);
    json!({
        "msgtype": "m.text",
        "body": format!("* {text}"),
        "format": "org.matrix.custom.html",
        "formatted_body": format!("* {}", html(text)),
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": message_id},
    })
}

fn image_content(uri: &str, png: &[u8]) -> Value {
    let mut info = json!({"mimetype": "image/png", "size": png.len()});
    if let Some((w, h)) = png_size(png) {
        info["w"] = json!(w);
        info["h"] = json!(h);
    }
    json!({"msgtype": "m.image", "body": "qr.png", "url": uri, "info": info})
}

/// A PNG's width and height, from its header (`IHDR`, the first chunk).
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || !png.starts_with(SIGNATURE) || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}

/// A path segment (or a query value), percent-encoded: room ids have `!`
/// and `:`, event ids `$`, tokens anything.
fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unavailable(retry_after_ms: Option<u64>, detail: impl Into<String>) -> BridgeError {
    BridgeError::Unavailable { retry_after_ms, detail: detail.into() }
}

/// Sends a call and reads its JSON answer, at most `limit` bytes; maps a
/// refusal to [`BridgeError`].
async fn call(request: reqwest::RequestBuilder, limit: usize) -> Result<Value, BridgeError> {
    let mut response = request.send().await.map_err(|e| unavailable(None, describe(&e)))?;
    let status = response.status().as_u16();
    let retry_header = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| secs.saturating_mul(1000));
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(None, describe(&e)))? {
        if body.len() + chunk.len() > limit {
            return Err(unavailable(None, format!("the homeserver's answer is larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if (200..300).contains(&status) {
        return json.ok_or_else(|| unavailable(None, format!("the homeserver's answer ({status}) is not JSON")));
    }
    let errcode = json.as_ref().and_then(|j| str_at(j, &["errcode"])).unwrap_or("");
    let error = json.as_ref().and_then(|j| str_at(j, &["error"])).unwrap_or("");
    let detail = clean(&format!("{status} {errcode}: {error}"));
    if status == 429 || errcode == "M_LIMIT_EXCEEDED" {
        let retry = json.as_ref().and_then(|j| j.get("retry_after_ms")).and_then(Value::as_u64).or(retry_header);
        return Err(unavailable(retry, detail));
    }
    if status >= 500 {
        return Err(unavailable(retry_header, detail));
    }
    Err(BridgeError::Refused(detail))
}

/// One line, bounded.
fn clean(text: &str) -> String {
    text.chars().take(DETAIL_LEN_MAX_BYTES).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A transport error without its URL (a sync's carries its cursor).
fn describe(e: &reqwest::Error) -> String {
    clean(&format!("the homeserver: {}", crate::lightning::http::describe(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "@coffer:example.org";
    const ROOM: &str = "!room:example.org";

    fn message(id: &str, sender: &str, content: Value) -> Value {
        json!({"type": "m.room.message", "event_id": id, "sender": sender, "origin_server_ts": 1, "content": content})
    }

    fn member(user: &str, membership: &str, name: Option<&str>, prev: Option<&str>) -> Value {
        let mut event = json!({
            "type": "m.room.member", "event_id": format!("$m-{user}-{membership}"), "sender": user,
            "state_key": user, "content": {"membership": membership},
        });
        if let Some(name) = name {
            event["content"]["displayname"] = json!(name);
        }
        if let Some(prev) = prev {
            event["unsigned"] = json!({"prev_content": {"membership": prev}});
        }
        event
    }

    fn batch(next: &str, state: Vec<Value>, timeline: Vec<Value>) -> Value {
        json!({
            "next_batch": next,
            "rooms": {"join": {ROOM: {"state": {"events": state}, "timeline": {"events": timeline, "limited": false}}}},
        })
    }

    fn alice() -> User {
        User { id: "@alice:example.org".into(), name: "Alice".into() }
    }

    #[test]
    fn texts_replies_and_reactions_map_with_the_cursor_on_the_last() {
        let reply = json!({
            "msgtype": "m.text",
            "body": "> <@coffer:example.org> Card: pay 21 sat\n> to bob\n\n!pay",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$card"}},
        });
        let b = batch(
            "s2",
            vec![member("@alice:example.org", "join", Some("Alice"), None)],
            vec![
                message("$1", "@alice:example.org", json!({"msgtype": "m.text", "body": "hello\n> not a quote"})),
                message("$2", "@alice:example.org", reply),
                json!({"type": "m.reaction", "event_id": "$3", "sender": "@alice:example.org",
                       "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$card", "key": "👍"}}}),
            ],
        );
        let mapped = map_sync(BOT, Some("s1"), &b).expect("mapped");
        let cursors: Vec<_> = mapped.updates.iter().map(|u| u.cursor.as_str()).collect();
        assert_eq!(cursors, ["s1", "s1", "s2"]);
        let inbound: Vec<_> = mapped.updates.into_iter().map(|u| u.inbound.expect("inbound")).collect();
        assert_eq!(
            inbound,
            [
                Inbound::Text {
                    chat: ROOM.into(),
                    user: alice(),
                    id: "$1".into(),
                    text: "hello\n> not a quote".into(),
                    reply_to: None
                },
                Inbound::Text {
                    chat: ROOM.into(),
                    user: alice(),
                    id: "$2".into(),
                    text: "!pay".into(),
                    reply_to: Some("$card".into())
                },
                Inbound::Press {
                    chat: ROOM.into(),
                    user: alice(),
                    id: "$3".into(),
                    data: String::new(),
                    message: Some("$card".into())
                },
            ]
        );
        assert!(mapped.invites.is_empty());
    }

    #[test]
    fn the_bot_itself_edits_notices_and_other_events_mean_nothing() {
        let b = batch(
            "s2",
            vec![],
            vec![
                message("$own", BOT, json!({"msgtype": "m.text", "body": "a card"})),
                message("$notice", "@alice:example.org", json!({"msgtype": "m.notice", "body": "bot talk"})),
                message(
                    "$image",
                    "@alice:example.org",
                    json!({"msgtype": "m.image", "body": "x.png", "url": "mxc://a/b"}),
                ),
                message(
                    "$edit",
                    "@alice:example.org",
                    json!({"msgtype": "m.text", "body": "* !pay", "m.new_content": {"msgtype": "m.text", "body": "!pay"},
                           "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}),
                ),
                message("$redacted", "@alice:example.org", json!({})),
                json!({"type": "m.reaction", "event_id": "$r", "sender": "@alice:example.org", "content": {}}),
                json!({"type": "m.room.message", "sender": "@alice:example.org", "content": {"msgtype": "m.text", "body": "no id"}}),
                json!("not an event"),
            ],
        );
        let mapped = map_sync(BOT, Some("s1"), &b).expect("mapped");
        assert_eq!(mapped.updates.len(), 1);
        assert_eq!(mapped.updates[0].cursor, "s2");
        assert!(mapped.updates[0].inbound.is_none(), "the cursor moves on alone");
        // No new position, nothing happened: nothing to store.
        let same = map_sync(BOT, Some("s2"), &batch("s2", vec![], vec![])).expect("mapped");
        assert!(same.updates.is_empty());
    }

    #[test]
    fn the_first_sync_hands_back_no_history_and_invitations_are_joined() {
        let mut b = batch(
            "s1",
            vec![],
            vec![message("$old", "@alice:example.org", json!({"msgtype": "m.text", "body": "!pay"}))],
        );
        b["rooms"]["invite"] = json!({"!new:example.org": {"invite_state": {"events": []}}});
        let mapped = map_sync(BOT, None, &b).expect("mapped");
        assert_eq!(mapped.updates.len(), 1);
        assert_eq!(mapped.updates[0].cursor, "s1");
        assert!(mapped.updates[0].inbound.is_none());
        assert_eq!(mapped.invites, ["!new:example.org"]);
        assert!(map_sync(BOT, None, &json!({"rooms": {}})).is_err(), "no next_batch");
    }

    #[test]
    fn history_before_the_bots_join_is_not_handed_back() {
        let b = batch(
            "s3",
            vec![],
            vec![
                message("$before", "@alice:example.org", json!({"msgtype": "m.text", "body": "old"})),
                member(BOT, "join", Some("coffer"), Some("invite")),
                member("@alice:example.org", "join", Some("Alice B."), Some("join")),
                message("$after", "@alice:example.org", json!({"msgtype": "m.text", "body": "new"})),
                member("@alice:example.org", "join", None, Some("join")),
                message("$later", "@alice:example.org", json!({"msgtype": "m.text", "body": "newer"})),
            ],
        );
        let mapped = map_sync(BOT, Some("s2"), &b).expect("mapped");
        let seen: Vec<_> = mapped
            .updates
            .iter()
            .filter_map(|u| match &u.inbound {
                Some(Inbound::Text { id, user, .. }) => Some((id.as_str(), user.name.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(seen, [("$after", "Alice B."), ("$later", "@alice:example.org")]);
    }

    #[test]
    fn reply_fallbacks_are_stripped() {
        assert_eq!(strip_reply_fallback("> <@a:b> x\n> y\n\nanswer"), "answer");
        assert_eq!(strip_reply_fallback("> <@a:b> x\n>\n> y\n\nline 1\nline 2"), "line 1\nline 2");
        assert_eq!(strip_reply_fallback("no fallback"), "no fallback");
        assert_eq!(strip_reply_fallback("> only a quote"), "");
        assert_eq!(strip_reply_fallback(""), "");
    }

    #[test]
    fn contents_are_escaped_edits_replace_and_pngs_have_their_size() {
        let text = text_content("m.text", "a < b & \"c\"\nnext");
        assert_eq!(text["formatted_body"], "a &lt; b &amp; &quot;c&quot;<br>next");
        assert_eq!(text["body"], "a < b & \"c\"\nnext");
        let edit = edit_content("$card", "paid");
        assert_eq!(edit["body"], "* paid");
        assert_eq!(edit["m.new_content"]["body"], "paid");
        assert_eq!(edit["m.relates_to"], json!({"rel_type": "m.replace", "event_id": "$card"}));
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&300u32.to_be_bytes());
        png.extend_from_slice(&200u32.to_be_bytes());
        assert_eq!(png_size(&png), Some((300, 200)));
        assert_eq!(png_size(b"not a png"), None);
        let image = image_content("mxc://a/b", &png);
        assert_eq!(image["info"], json!({"mimetype": "image/png", "size": png.len(), "w": 300, "h": 200}));
        assert_eq!(segment("!r:ex.org/$e?&="), "%21r%3Aex.org%2F%24e%3F%26%3D");
    }

    #[test]
    fn the_token_is_not_in_debug() {
        let m = Matrix::new("http://127.0.0.1:1", BOT, Secret::new("syt_secret_token".into())).expect("made");
        let shown = format!("{m:?}");
        assert!(!shown.contains("syt_secret_token"), "{shown}");
        assert!(Matrix::new("ftp://x", BOT, Secret::new("t".into())).is_err());
        assert!(Matrix::new("http://x", "coffer", Secret::new("t".into())).is_err());
    }
}
