//! Chat rooms: members talk, post payment requests and pay them with one
//! call; everything is delivered live to the members watching (SSE or
//! WebSocket), after a replay of what they missed.

use super::AppState;
use super::extract::{Agent, ApiJson, ApiQuery, Caller, IdempotencyKey, Operator, READ, RECEIVE, SPEND};
use crate::error::Error;
use crate::gateway::{PayOutcome, Principal, RoomMessage};
use crate::live::RoomEvent;
use crate::model::IncomingStatus;
use crate::model::card::{self, CardState, Viewer};
use crate::model::views;
use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use coffer_client::{
    AddMemberRequest, Approval, ChatSettings, CreateRoomRequest, Incoming, Message, Page, Payment, PostMessageRequest,
    Room,
};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Create a room (operator or agent; the creator becomes a member).
#[utoipa::path(post, path = "/v1/rooms", tag = "chat", request_body = CreateRoomRequest,
    responses((status = 201, body = Room, description = "Created: the room")))]
pub async fn create_room(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateRoomRequest>,
) -> Result<(StatusCode, Json<Room>), Error> {
    let room = gw.create_room(&caller, &req.name, &req.members).await?;
    Ok((StatusCode::CREATED, Json(views::room(room))))
}

/// The caller's rooms (every room, for the operator), oldest first, a page
/// at a time: pass `next_cursor` back as `cursor`.
#[utoipa::path(get, path = "/v1/rooms", tag = "chat", params(super::agent::PageParams),
    responses((status = 200, body = Page<Room>, description = "A page of rooms, oldest first")))]
pub async fn list_rooms(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(params): ApiQuery<super::agent::PageParams>,
) -> Result<Json<Page<Room>>, Error> {
    let (after, limit) = super::agent::page_params(params)?;
    let (rooms, next_cursor) = gw.rooms(&caller, after.as_deref(), limit).await?;
    Ok(Json(Page { items: rooms.into_iter().map(views::room).collect(), next_cursor }))
}

/// Add an agent to a room (a member or the operator).
#[utoipa::path(post, path = "/v1/rooms/{room}/members", tag = "chat", params(("room" = String, Path)),
    request_body = AddMemberRequest,
    responses((status = 200, body = Room, description = "The room")))]
pub async fn add_member(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(room): Path<String>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> Result<Json<Room>, Error> {
    Ok(Json(views::room(gw.add_member(&caller, &room, &req.agent_id).await?)))
}

/// Take a member out of a room: a member leaving (its own id), or the
/// room's creator or the operator removing one.
#[utoipa::path(delete, path = "/v1/rooms/{room}/members/{agent_id}", tag = "chat",
    params(("room" = String, Path), ("agent_id" = String, Path)),
    responses((status = 204, description = "Removed")))]
pub async fn remove_member(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path((room, agent_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    gw.remove_member(&caller, &room, &agent_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Post `{"text"}`, or `{"payment_request": {"amount_msat", "memo"}}`: the
/// invoice is created for the poster and carried by the message. With
/// `"hold": true` (and `hold_secs`) it is a hold invoice the poster settles
/// or cancels once paid; with `"escrow": {"release_after_secs",
/// "on_timeout"}` a member paying it through the room pays into escrow.
#[utoipa::path(post, path = "/v1/rooms/{room}/messages", tag = "chat", params(("room" = String, Path)),
    request_body = PostMessageRequest,
    responses((status = 201, body = Message, description = "Created: the message")))]
pub async fn post_message(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(room): Path<String>,
    ApiJson(req): ApiJson<PostMessageRequest>,
) -> Result<(StatusCode, Json<Message>), Error> {
    let posted = gw.post_message(&caller, &room, req.text.as_deref(), req.payment_request.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(room_message(posted, &caller, gw.now_ms()))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessageParams {
    /// Messages after this id (default 0: from the start).
    after: Option<i64>,
    /// 1 to 200, default 100.
    limit: Option<u32>,
}

/// A room's messages after `after`, oldest first. A payment request's card
/// (`invoice`) shows its `state` and the `actions` the caller may take.
#[utoipa::path(get, path = "/v1/rooms/{room}/messages", tag = "chat", params(("room" = String, Path), MessageParams),
    responses((status = 200, body = Vec<Message>, description = "The messages")))]
pub async fn list_messages(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(room): Path<String>,
    ApiQuery(p): ApiQuery<MessageParams>,
) -> Result<Json<Vec<Message>>, Error> {
    let rows = gw.messages(&caller, &room, p.after.unwrap_or(0), p.limit.unwrap_or(100)).await?;
    let now = gw.now_ms();
    Ok(Json(rows.into_iter().map(|m| room_message(m, &caller, now)).collect()))
}

/// Who reads: the operator, or an agent by its id.
fn viewer(caller: &Principal) -> Viewer<'_> {
    match caller {
        Principal::Operator => Viewer::Operator,
        Principal::Agent(key) => Viewer::Agent(&key.agent_id),
    }
}

fn room_message(m: RoomMessage, caller: &Principal, now_ms: i64) -> Message {
    views::message(m.message, m.waiting.as_ref(), viewer(caller), now_ms)
}

/// An event of a room as one watcher receives it: a request's card (a
/// posted message's `invoice`, or an `invoice.*` event's data) with the
/// actions this watcher may take.
fn for_viewer(kind: &str, mut data: Value, viewer: Viewer<'_>) -> Value {
    let card = match kind {
        "message.posted" => data.get_mut("invoice"),
        k if k.starts_with("invoice.") => Some(&mut data),
        _ => None,
    };
    if let Some(card) = card.filter(|c| c.is_object()) {
        let state = card.get("state").and_then(Value::as_str).and_then(CardState::parse);
        if let Some(state) = state {
            let payee = card.get("payee").and_then(Value::as_str).unwrap_or_default();
            let payer = card.get("payer").and_then(Value::as_str);
            let actions = card::actions(state, viewer, payee, payer);
            card["actions"] = serde_json::json!(actions);
        }
    }
    data
}

/// Pay a payment request of the room, through the payer's policy: `200`
/// paid, `202` held for approval, `403` denied, `409` already paid.
#[utoipa::path(post, path = "/v1/rooms/{room}/messages/{id}/pay", tag = "chat",
    params(("room" = String, Path), ("id" = i64, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters")),
    responses((status = 200, body = Payment, description = "The payment"), (status = 202, body = Approval, description = "Held for a person's approval: the approval")))]
pub async fn pay_request(
    State(gw): State<AppState>,
    Agent(key): Agent<SPEND>,
    Path((room, id)): Path<(String, i64)>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
) -> Result<Response, Error> {
    Ok(match gw.pay_request(&key, &room, id, idempotency_key.as_deref()).await? {
        PayOutcome::Paid(payment) => Json(views::payment(payment)).into_response(),
        PayOutcome::Held(approval) => (StatusCode::ACCEPTED, Json(views::approval(approval, true))).into_response(),
    })
}

/// The most messages a stream replays before going live; past it, the
/// stream starts with a `reload` event.
const REPLAY_MESSAGES_MAX: usize = 10_000;

/// The messages after `after`, page by page, up to [`REPLAY_MESSAGES_MAX`];
/// and whether that was all of them.
async fn backlog(
    gw: &AppState,
    caller: &Principal,
    room: &str,
    mut after: i64,
) -> Result<(Vec<RoomMessage>, bool), Error> {
    let mut all = Vec::new();
    loop {
        let page = gw.messages(caller, room, after, crate::model::PAGE_ROWS_MAX).await?;
        let full = page.len() == crate::model::PAGE_ROWS_MAX as usize;
        after = page.last().map_or(after, |m| m.message.id);
        all.extend(page);
        if !full {
            return Ok((all, true));
        }
        if all.len() >= REPLAY_MESSAGES_MAX {
            return Ok((all, false));
        }
    }
}

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE_INTERVAL_SECS: u64 = 15;

/// What a watcher receives: the backlog after `after`, then live events.
/// Subscribing before reading the backlog, then skipping live messages the
/// backlog already held, leaves no gap and no duplicate.
async fn watch(
    gw: AppState,
    caller: Principal,
    room: String,
    after: i64,
) -> Result<impl Stream<Item = (String, serde_json::Value)>, Error> {
    let room = gw.room_for(&caller, &room).await?.id;
    let guard = gw.open_stream(&caller)?;
    let live = gw.live().subscribe();
    let (backlog, complete) = backlog(&gw, &caller, &room, after).await?;
    let last_id = backlog.last().map_or(after, |m| m.message.id);
    let now = gw.now_ms();
    let mut replay: Vec<(String, serde_json::Value)> = backlog
        .into_iter()
        .filter_map(|m| {
            serde_json::to_value(room_message(m, &caller, now)).ok().map(|v| ("message.posted".to_owned(), v))
        })
        .collect();
    if !complete {
        // More than a stream replays: the watcher reads the rest with GET.
        replay.insert(0, ("reload".to_owned(), serde_json::json!({"after": after})));
    }
    // The guard rides with the stream: its place is given back when the
    // stream is dropped.
    // Each watcher sees the actions it may take itself.
    let me = match &caller {
        Principal::Operator => None,
        Principal::Agent(key) => Some(key.agent_id.clone()),
    };
    let events = stream::unfold((live, room, last_id, guard, me), |(mut live, room, last_id, guard, me)| async move {
        let ((kind, data), id) = next_live(&mut live, &room, last_id).await?;
        let data = for_viewer(&kind, data, me.as_deref().map_or(Viewer::Operator, Viewer::Agent));
        Some(((kind, data), (live, room, id, guard, me)))
    });
    Ok(futures_util::StreamExt::chain(stream::iter(replay), events))
}

async fn next_live(
    live: &mut tokio::sync::broadcast::Receiver<RoomEvent>,
    room: &str,
    last_id: i64,
) -> Option<((String, serde_json::Value), i64)> {
    loop {
        match live.recv().await {
            Ok(e) if e.room_id != room => continue,
            Ok(e) => {
                let id = e.data.get("id").and_then(serde_json::Value::as_i64);
                if e.kind == "message.posted" && id.is_some_and(|id| id <= last_id) {
                    continue;
                }
                return Some(((e.kind.to_owned(), e.data), id.unwrap_or(last_id).max(last_id)));
            }
            // Fell behind the bounded backlog: tell the watcher to reload.
            Err(RecvError::Lagged(_)) => return Some((("reload".to_owned(), serde_json::json!({})), last_id)),
            Err(RecvError::Closed) => return None,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Replay messages after this id first (default 0).
    after: Option<i64>,
}

/// Server-Sent Events of a room: `message.posted` (a message), and when a
/// payment request changes state `invoice.accepted` (a hold accepted or a
/// payment held in escrow), `invoice.disputed`, `invoice.paid` (paid, a
/// hold settled or an escrow released) and `invoice.cancelled` (a hold
/// cancelled or an escrow refunded), each with the request's
/// `payment_hash`, `status`, `state`, `actions` (the watcher's), `payee`,
/// `payer`, `payment_id`, `deadline` and `receipt`; `reload` if the stream
/// fell behind.
#[utoipa::path(get, path = "/v1/rooms/{room}/events", tag = "chat", params(("room" = String, Path), StreamParams),
    responses((status = 200, content_type = "text/event-stream", description = "A stream of server-sent events")))]
pub async fn stream(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(room): Path<String>,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let events = watch(gw, caller, room, p.after.unwrap_or(0)).await?;
    let sse =
        futures_util::StreamExt::map(events, |(kind, data)| Ok(Event::default().event(kind).data(data.to_string())));
    Ok(Sse::new(sse).keep_alive(KeepAlive::new().interval(Duration::from_secs(KEEP_ALIVE_INTERVAL_SECS))))
}

/// The same events over a WebSocket, one JSON text frame each:
/// `{"type", "data"}`.
#[utoipa::path(get, path = "/v1/rooms/{room}/ws", tag = "chat", params(("room" = String, Path), StreamParams),
    responses((status = 101, description = "Switching to the WebSocket protocol")))]
pub async fn websocket(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(room): Path<String>,
    ApiQuery(p): ApiQuery<StreamParams>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    let events = watch(gw, caller, room, p.after.unwrap_or(0)).await?;
    let frames = futures_util::StreamExt::map(events, |(kind, data)| {
        serde_json::json!({"type": kind, "data": data}).to_string()
    });
    Ok(upgrade.on_upgrade(move |socket| super::events::forward(socket, frames)))
}

/// An agent's chat settings (auto-pay).
#[utoipa::path(get, path = "/v1/agents/{id}/chat", tag = "chat", params(("id" = String, Path)),
    responses((status = 200, body = ChatSettings, description = "The chat settings")))]
pub async fn get_chat_settings(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<ChatSettings>, Error> {
    Ok(Json(gw.chat_settings(&id).await?))
}

/// Set an agent's chat settings: pay requests from the listed agents at
/// once, up to `auto_pay_max_msat` each, still through its policy.
#[utoipa::path(put, path = "/v1/agents/{id}/chat", tag = "chat", params(("id" = String, Path)),
    request_body = ChatSettings,
    responses((status = 200, body = ChatSettings, description = "The chat settings")))]
pub async fn put_chat_settings(
    State(gw): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ChatSettings>,
) -> Result<Json<ChatSettings>, Error> {
    gw.set_chat_settings(&id, req).await?;
    get_chat_settings(State(gw), Operator, Path(id)).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncomingParams {
    /// `pending` (default), `accepted`, `rejected` or `all`.
    status: Option<String>,
}

/// Payments to the calling agent that wait for its acknowledgment (when its
/// chat settings say `require_acknowledgment`).
#[utoipa::path(get, path = "/v1/incoming", tag = "chat", params(IncomingParams),
    responses((status = 200, body = Vec<Incoming>, description = "The incoming payments")))]
pub async fn list_incoming(
    State(gw): State<AppState>,
    Agent(key): Agent<READ>,
    ApiQuery(p): ApiQuery<IncomingParams>,
) -> Result<Json<Vec<Incoming>>, Error> {
    let status = super::extract::status_filter(
        p.status.as_deref(),
        IncomingStatus::Pending,
        IncomingStatus::parse,
        "pending, accepted, rejected or all",
    )?;
    let rows = gw.incoming(&key, status).await?;
    Ok(Json(rows.into_iter().map(views::incoming).collect()))
}

/// Accept an incoming payment: its amount becomes spendable.
#[utoipa::path(post, path = "/v1/incoming/{payment_id}/accept", tag = "chat", params(("payment_id" = String, Path)),
    responses((status = 200, body = Incoming, description = "The incoming payment")))]
pub async fn accept_incoming(
    State(gw): State<AppState>,
    Agent(key): Agent<RECEIVE>,
    Path(id): Path<String>,
) -> Result<Json<Incoming>, Error> {
    Ok(Json(views::incoming(gw.decide_incoming(&key, &id, true).await?)))
}

/// Reject an incoming payment: its amount goes back to the payer.
#[utoipa::path(post, path = "/v1/incoming/{payment_id}/reject", tag = "chat", params(("payment_id" = String, Path)),
    responses((status = 200, body = Incoming, description = "The incoming payment")))]
pub async fn reject_incoming(
    State(gw): State<AppState>,
    Agent(key): Agent<RECEIVE>,
    Path(id): Path<String>,
) -> Result<Json<Incoming>, Error> {
    Ok(Json(views::incoming(gw.decide_incoming(&key, &id, false).await?)))
}
