//! A local stand-in of the Telegram Bot API, for one bot: an HTTP server
//! on 127.0.0.1 that the real adapter (`coffer::bridge::telegram`) talks to.
//!
//! Written from the Bot API's documentation
//! (<https://core.telegram.org/bots/api>), not from Telegram's code or
//! recorded traffic; it implements only what the bridge uses, as documented:
//!
//! - requests are `/bot{TOKEN}/{method}` (a method's name in any case),
//!   their parameters in the query string, or a body of JSON,
//!   `application/x-www-form-urlencoded` or `multipart/form-data`; a wrong
//!   token is `401 Unauthorized`;
//! - answers are `{"ok": true, "result"}` or `{"ok": false, "error_code",
//!   "description"}` (with `parameters.retry_after` on a 429);
//! - `getUpdates {offset, limit, timeout}`: updates with an id below
//!   `offset` are confirmed and forgotten; the others are answered (at most
//!   `limit`, 1-100, default 100) until confirmed, so an unconfirmed update
//!   is delivered again; with none waiting, it waits up to `timeout`
//!   seconds and answers as soon as one is queued;
//! - `getMe`, `sendMessage`, `sendPhoto` (an uploaded PNG only),
//!   `editMessageText` (without `reply_markup`, the buttons go),
//!   `editMessageReplyMarkup`, `answerCallbackQuery` (a query is answered
//!   once: again, it is refused like an unknown one). An edit that changes
//!   nothing is refused as "message is not modified"; callback data is 1-64
//!   bytes; a text is 1-4096 UTF-16 code units.
//!
//! Users are the test's: [`StandIn::user_says`], [`StandIn::user_presses`]
//! queue the updates Telegram would send. [`StandIn::fail_next`] simulates
//! an outage.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The bot's user id (the first part of its token).
pub const BOT_ID: i64 = 7_000_001;
/// What a 429 of [`StandIn::fail_next`] asks to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;
/// How long [`StandIn::wait_for`] waits before the test fails.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_UPDATE_ID: i64 = 800_000_000;
const TEXT_LEN_MAX_UTF16: usize = 4096;
const CALLBACK_DATA_MAX_BYTES: usize = 64;
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const QUERY_INVALID: &str = "query is too old and response timeout expired or query ID is invalid";

/// A message the bot sent, as it stands after its edits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    pub id: i64,
    /// The text, or a photo's caption.
    pub text: String,
    /// The inline keyboard, row after row: (label, callback data).
    pub buttons: Vec<(String, String)>,
    pub edits: u32,
    /// A photo (a PNG with bytes) rather than a text.
    pub photo: bool,
}

struct Inner {
    next_update_id: i64,
    next_message_id: i64,
    next_callback: u64,
    /// Queued and not yet confirmed, in order.
    queue: Vec<(i64, Value)>,
    /// The bot's messages, by chat.
    sent: BTreeMap<i64, Vec<SentMessage>>,
    /// Every press's callback query, by its id.
    callbacks: HashMap<String, Value>,
    answered: HashMap<String, String>,
    delivered: Vec<i64>,
    /// The next this many calls answer this status.
    failing: (u32, u16),
}

/// The stand-in; clones share it.
#[derive(Clone)]
pub struct StandIn {
    token: String,
    url: String,
    inner: Arc<Mutex<Inner>>,
    queued: Arc<Notify>,
}

impl StandIn {
    /// Starts a stand-in on a free port, with a fresh token.
    pub async fn start() -> StandIn {
        let token = format!("{BOT_ID}:AAH{:032x}", rand::random::<u128>());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the Telegram stand-in");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let stand_in = StandIn {
            token,
            url,
            inner: Arc::new(Mutex::new(Inner {
                next_update_id: FIRST_UPDATE_ID,
                next_message_id: 1,
                next_callback: 1,
                queue: Vec::new(),
                sent: BTreeMap::new(),
                callbacks: HashMap::new(),
                answered: HashMap::new(),
                delivered: Vec::new(),
                failing: (0, 200),
            })),
            queued: Arc::new(Notify::new()),
        };
        let app = Router::new().route("/{bot}/{method}", any(call)).with_state(stand_in.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serving the Telegram stand-in") });
        stand_in
    }

    /// The API's URL (the adapter's `api_url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// A user writes in a chat; answers the message's id.
    pub fn user_says(&self, chat_id: i64, user_id: i64, name: &str, text: &str) -> i64 {
        self.user_message(chat_id, user_id, name, None, text)
    }

    /// A user replies to a message (usually the bot's).
    pub fn user_replies(&self, chat_id: i64, user_id: i64, name: &str, reply_to_message_id: i64, text: &str) -> i64 {
        self.user_message(chat_id, user_id, name, Some(reply_to_message_id), text)
    }

    /// A user presses a button of a message; answers the callback query's id.
    pub fn user_presses(&self, chat_id: i64, user_id: i64, name: &str, message_id: i64, data: &str) -> String {
        let mut inner = self.inner.lock().unwrap();
        let id = format!("{}{:06}", user_id, inner.next_callback);
        inner.next_callback += 1;
        let message = inner.message_json(chat_id, message_id);
        let query = json!({
            "id": id, "from": person(user_id, name), "message": message,
            "chat_instance": format!("ci{chat_id}"), "data": data,
        });
        inner.callbacks.insert(id.clone(), query.clone());
        inner.queue_update(json!({ "callback_query": query }));
        drop(inner);
        self.queued.notify_waiters();
        id
    }

    /// Queues a press's callback query again, under a new update id: a
    /// double delivery.
    pub fn redeliver(&self, callback_id: &str) {
        let mut inner = self.inner.lock().unwrap();
        let query = inner.callbacks.get(callback_id).cloned().expect("a press of this stand-in");
        inner.queue_update(json!({ "callback_query": query }));
        drop(inner);
        self.queued.notify_waiters();
    }

    /// The bot's messages in a chat, in the order sent, as edited since.
    pub fn messages(&self, chat_id: i64) -> Vec<SentMessage> {
        self.inner.lock().unwrap().sent.get(&chat_id).cloned().unwrap_or_default()
    }

    /// The text a press was answered with, once answered.
    pub fn answered(&self, callback_id: &str) -> Option<String> {
        self.inner.lock().unwrap().answered.get(callback_id).cloned()
    }

    /// The ids of the updates `getUpdates` handed out, in order, repeats
    /// included.
    pub fn updates_delivered(&self) -> Vec<i64> {
        self.inner.lock().unwrap().delivered.clone()
    }

    /// The ids of the updates queued and not yet confirmed.
    pub fn unconfirmed(&self) -> Vec<i64> {
        self.inner.lock().unwrap().queue.iter().map(|(id, _)| *id).collect()
    }

    /// The next `n` calls (any method, a right token) answer `status`:
    /// 429 with `retry_after` [`RETRY_AFTER_SECS`], 502 with a proxy's HTML
    /// page, any other with the Bot API's error JSON.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.inner.lock().unwrap().failing = (n, status);
    }

    /// Waits until `check` holds (it reads the stand-in through its
    /// methods), failing the test after a bounded time.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&StandIn) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
        while !check(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn user_message(&self, chat_id: i64, user_id: i64, name: &str, reply_to: Option<i64>, text: &str) -> i64 {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.next_message_id;
        inner.next_message_id += 1;
        let mut message = json!({
            "message_id": id, "from": person(user_id, name), "chat": chat(chat_id, name), "date": now(), "text": text,
        });
        if let Some(replied) = reply_to {
            message["reply_to_message"] = inner.message_json(chat_id, replied);
        }
        inner.queue_update(json!({ "message": message }));
        drop(inner);
        self.queued.notify_waiters();
        id
    }
}

impl Inner {
    fn queue_update(&mut self, mut update: Value) {
        let id = self.next_update_id;
        self.next_update_id += 1;
        update["update_id"] = json!(id);
        self.queue.push((id, update));
    }

    fn find(&mut self, chat_id: i64, message_id: i64) -> Option<&mut SentMessage> {
        self.sent.get_mut(&chat_id)?.iter_mut().find(|m| m.id == message_id)
    }

    /// A message as an update carries it: the bot's with its text and
    /// keyboard; another, only its id and chat (as an inaccessible one).
    fn message_json(&mut self, chat_id: i64, message_id: i64) -> Value {
        match self.find(chat_id, message_id) {
            Some(m) => bot_message(chat_id, m),
            None => json!({"message_id": message_id, "chat": chat(chat_id, "someone"), "date": 0}),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn person(user_id: i64, name: &str) -> Value {
    json!({"id": user_id, "is_bot": false, "first_name": name})
}

fn chat(chat_id: i64, name: &str) -> Value {
    if chat_id > 0 {
        json!({"id": chat_id, "type": "private", "first_name": name})
    } else {
        json!({"id": chat_id, "type": "group", "title": format!("group {chat_id}")})
    }
}

fn bot_message(chat_id: i64, m: &SentMessage) -> Value {
    let mut message = json!({
        "message_id": m.id, "chat": chat(chat_id, "someone"), "date": now(),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "coffer test bot", "username": "coffer_test_bot"},
    });
    if m.photo {
        message["photo"] = json!([{"file_id": format!("photo{}", m.id), "file_unique_id": format!("u{}", m.id),
            "width": 256, "height": 256}]);
        if !m.text.is_empty() {
            message["caption"] = json!(m.text);
        }
    } else {
        message["text"] = json!(m.text);
    }
    if !m.buttons.is_empty() {
        let rows: Vec<Value> = m.buttons.iter().map(|(l, d)| json!([{"text": l, "callback_data": d}])).collect();
        message["reply_markup"] = json!({ "inline_keyboard": rows });
    }
    message
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

fn error(status: u16, description: &str) -> Response {
    let code = StatusCode::from_u16(status).expect("a status");
    (code, axum::Json(json!({"ok": false, "error_code": status, "description": description}))).into_response()
}

/// A 400 with this description (after "Bad Request: ").
fn bad(description: &str) -> Response {
    error(400, &format!("Bad Request: {description}"))
}

/// Why a request is refused: the description of its 400.
fn refuse(description: &str) -> String {
    description.to_owned()
}

/// A request's parameters: text and JSON values, and uploaded files.
#[derive(Default)]
struct Params {
    values: HashMap<String, Value>,
    files: HashMap<String, Vec<u8>>,
}

impl Params {
    fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Params, String> {
        let mut params = Params::default();
        if let Some(query) = query {
            params.form(query);
        }
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            _ if body.is_empty() => {}
            "application/json" => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => params.values.extend(map),
                _ => return Err(refuse("can't parse JSON object")),
            },
            "application/x-www-form-urlencoded" => params.form(&String::from_utf8_lossy(body)),
            "multipart/form-data" => {
                let boundary = content_type
                    .split(';')
                    .filter_map(|p| p.trim().strip_prefix("boundary="))
                    .next()
                    .map(|b| b.trim_matches('"').to_owned())
                    .ok_or_else(|| refuse("can't parse multipart body"))?;
                params.multipart(&boundary, body).ok_or_else(|| refuse("can't parse multipart body"))?;
            }
            _ => return Err(refuse("unsupported content type")),
        }
        Ok(params)
    }

    fn form(&mut self, encoded: &str) {
        let url = reqwest::Url::parse(&format!("http://form/?{encoded}")).expect("a query");
        for (k, v) in url.query_pairs() {
            self.values.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }

    /// Parts: `--boundary`, headers, a blank line, content, CRLF; the last
    /// boundary ends with `--`. A part with a filename is a file.
    fn multipart(&mut self, boundary: &str, body: &[u8]) -> Option<()> {
        let delimiter = format!("--{boundary}").into_bytes();
        let mut rest = &body[find(body, &delimiter)? + delimiter.len()..];
        loop {
            if rest.starts_with(b"--") {
                return Some(());
            }
            rest = rest.strip_prefix(b"\r\n")?;
            let head_end = find(rest, b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
            let after = &rest[head_end + 4..];
            let end = find(after, &[b"\r\n", delimiter.as_slice()].concat())?;
            let content = &after[..end];
            let disposition = head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
            let attribute = |name: &str| {
                disposition.split(';').find_map(|p| {
                    p.trim().strip_prefix(&format!("{name}=\"")).map(|v| v.trim_end_matches('"').to_owned())
                })
            };
            let name = attribute("name")?;
            if attribute("filename").is_some() {
                self.files.insert(name, content.to_vec());
            } else {
                self.values.insert(name, Value::String(String::from_utf8_lossy(content).into_owned()));
            }
            rest = &after[end + 2 + delimiter.len()..];
        }
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn text(&self, name: &str) -> Option<String> {
        match self.values.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// `reply_markup`'s inline keyboard (an object, or its JSON in a
    /// string), flattened; `None` without one.
    fn buttons(&self) -> Result<Option<Vec<(String, String)>>, String> {
        let markup = match self.values.get("reply_markup") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => {
                serde_json::from_str(s).map_err(|_| refuse("can't parse reply keyboard markup JSON object"))?
            }
            Some(other) => other.clone(),
        };
        let Some(rows) = markup.get("inline_keyboard").and_then(Value::as_array) else {
            return Err(refuse("can't parse inline keyboard button: field \"inline_keyboard\" must be an Array"));
        };
        let mut buttons = Vec::new();
        for button in rows.iter().flat_map(|r| r.as_array().cloned().unwrap_or_default()) {
            let label = button["text"].as_str().unwrap_or("").to_owned();
            let data = button["callback_data"].as_str().unwrap_or("").to_owned();
            if label.is_empty() {
                return Err(refuse(
                    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
                ));
            }
            if data.is_empty() || data.len() > CALLBACK_DATA_MAX_BYTES {
                return Err(refuse("BUTTON_DATA_INVALID"));
            }
            buttons.push((label, data));
        }
        Ok(Some(buttons))
    }

    fn message_text(&self, name: &str) -> Result<String, String> {
        let text = self.text(name).unwrap_or_default();
        if text.trim().is_empty() {
            return Err(refuse("message text is empty"));
        }
        if text.encode_utf16().count() > TEXT_LEN_MAX_UTF16 {
            return Err(refuse("message is too long"));
        }
        Ok(text)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn call(
    State(stand_in): State<StandIn>,
    Path((bot, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if bot.strip_prefix("bot") != Some(stand_in.token.as_str()) {
        return error(401, "Unauthorized");
    }
    if let Some(failure) = failure(&stand_in) {
        return failure;
    }
    let params = match Params::read(query.as_deref(), &headers, &body) {
        Ok(params) => params,
        Err(refusal) => return bad(&refusal),
    };
    let answer = match method.to_ascii_lowercase().as_str() {
        "getme" => Ok(json!({"id": BOT_ID, "is_bot": true, "first_name": "coffer test bot",
            "username": "coffer_test_bot", "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false})),
        "getupdates" => Ok(get_updates(&stand_in, &params).await),
        "sendmessage" => send_message(&stand_in, &params),
        "sendphoto" => send_photo(&stand_in, &params),
        "editmessagetext" => edit(&stand_in, &params, true),
        "editmessagereplymarkup" => edit(&stand_in, &params, false),
        "answercallbackquery" => answer_callback_query(&stand_in, &params),
        _ => return error(404, "Not Found"),
    };
    match answer {
        Ok(result) => ok(result),
        Err(refusal) => bad(&refusal),
    }
}

fn failure(stand_in: &StandIn) -> Option<Response> {
    let mut inner = stand_in.inner.lock().unwrap();
    let (left, status) = inner.failing;
    if left == 0 {
        return None;
    }
    inner.failing.0 -= 1;
    Some(match status {
        429 => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {RETRY_AFTER_SECS}"),
                "parameters": {"retry_after": RETRY_AFTER_SECS}})),
        )
            .into_response(),
        502 => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
        )
            .into_response(),
        other => error(other, "Simulated failure"),
    })
}

async fn get_updates(stand_in: &StandIn, params: &Params) -> Value {
    let limit = params.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(params.int("timeout").unwrap_or(0).clamp(0, 60) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = stand_in.queued.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut inner = stand_in.inner.lock().unwrap();
            if let Some(offset) = params.int("offset") {
                inner.queue.retain(|(id, _)| *id >= offset);
            }
            if !inner.queue.is_empty() || tokio::time::Instant::now() >= deadline {
                let batch: Vec<(i64, Value)> = inner.queue.iter().take(limit).cloned().collect();
                inner.delivered.extend(batch.iter().map(|(id, _)| *id));
                return Value::Array(batch.into_iter().map(|(_, update)| update).collect());
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

fn send_message(stand_in: &StandIn, params: &Params) -> Result<Value, String> {
    let chat_id = params.int("chat_id").ok_or_else(|| refuse("chat_id is empty"))?;
    let text = params.message_text("text")?;
    let buttons = params.buttons()?.unwrap_or_default();
    Ok(stand_in.record(chat_id, SentMessage { id: 0, text, buttons, edits: 0, photo: false }))
}

fn send_photo(stand_in: &StandIn, params: &Params) -> Result<Value, String> {
    let chat_id = params.int("chat_id").ok_or_else(|| refuse("chat_id is empty"))?;
    let Some(png) = params.files.get("photo") else {
        return Err(refuse("there is no photo in the request"));
    };
    if png.len() <= PNG_SIGNATURE.len() || !png.starts_with(PNG_SIGNATURE) {
        return Err(refuse("IMAGE_PROCESS_FAILED"));
    }
    let caption = params.text("caption").unwrap_or_default();
    let buttons = params.buttons()?.unwrap_or_default();
    Ok(stand_in.record(chat_id, SentMessage { id: 0, text: caption, buttons, edits: 0, photo: true }))
}

impl StandIn {
    /// Keeps a message the bot sent, under a new id; answers it as JSON.
    fn record(&self, chat_id: i64, mut message: SentMessage) -> Value {
        let mut inner = self.inner.lock().unwrap();
        message.id = inner.next_message_id;
        inner.next_message_id += 1;
        let json = bot_message(chat_id, &message);
        inner.sent.entry(chat_id).or_default().push(message);
        json
    }
}

/// `editMessageText` (`text`), or `editMessageReplyMarkup`.
fn edit(stand_in: &StandIn, params: &Params, text: bool) -> Result<Value, String> {
    let chat_id = params.int("chat_id").ok_or_else(|| refuse("chat_id is empty"))?;
    let message_id = params.int("message_id").ok_or_else(|| refuse("message identifier is not specified"))?;
    let new_text = if text { Some(params.message_text("text")?) } else { None };
    let buttons = params.buttons()?.unwrap_or_default();
    let mut inner = stand_in.inner.lock().unwrap();
    let message = inner.find(chat_id, message_id).ok_or_else(|| refuse("message to edit not found"))?;
    if text && message.photo {
        return Err(refuse("there is no text in the message to edit"));
    }
    let new_text = new_text.unwrap_or_else(|| message.text.clone());
    if new_text == message.text && buttons == message.buttons {
        return Err(refuse(
            "message is not modified: specified new message content and reply markup are exactly the same as a \
             current content and reply markup of the message",
        ));
    }
    message.text = new_text;
    message.buttons = buttons;
    message.edits += 1;
    Ok(bot_message(chat_id, message))
}

fn answer_callback_query(stand_in: &StandIn, params: &Params) -> Result<Value, String> {
    let id = params.text("callback_query_id").ok_or_else(|| refuse("QUERY_ID_INVALID"))?;
    let mut inner = stand_in.inner.lock().unwrap();
    if !inner.callbacks.contains_key(&id) || inner.answered.contains_key(&id) {
        return Err(refuse(QUERY_INVALID));
    }
    inner.answered.insert(id, params.text("text").unwrap_or_default());
    Ok(json!(true))
}
