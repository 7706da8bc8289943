//! The outbox over HTTP: replay (`GET /v1/events?after=ID`), live streams
//! (SSE and WebSocket, which replay first and then follow), and webhook
//! subscriptions with their delivery logs. Each key sees what
//! `gateway::events` lets it see.

use super::AppState;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::error::Error;
use crate::events::wire;
use crate::gateway::{EventFollower, Gateway};
use crate::model::PAGE_ROWS_MAX;
use crate::model::views;
use axum::Json;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use coffer_client::{CreateWebhookRequest, Delivery, Event, EventPage, Webhook, WebhookCreated};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

const KEEP_ALIVE_INTERVAL_SECS: u64 = 15;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Only events with a greater id (default 0, the start).
    after: Option<i64>,
    /// At most this many (1 to 1000, default 200).
    limit: Option<u32>,
}

/// Events after `after`, oldest first: every event for the operator, an
/// agent's own for its keys. Pass `next_after` as `after` for more.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventParams),
    responses((status = 200, body = EventPage, description = "A page of events, oldest first")))]
pub async fn list_events(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(p): ApiQuery<EventParams>,
) -> Result<Json<EventPage>, Error> {
    let after = p.after.unwrap_or(0);
    let events = gw.events(&caller, after, p.limit.unwrap_or(PAGE_ROWS_MAX)).await?;
    let next_after = events.last().map_or(after, |e| e.id);
    let events = events.iter().map(|e| wire(e, gw.node_pubkey_hex())).collect();
    Ok(Json(EventPage { events, next_after }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Replay events after this id first; `Last-Event-ID` does the same
    /// for a reconnecting EventSource. Default: only new events.
    after: Option<i64>,
}

/// Server-Sent Events: each event with its `id` (so a reconnect resumes
/// with `Last-Event-ID`), its type as the SSE event name and the event as
/// JSON data.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamParams),
    responses((status = 200, content_type = "text/event-stream", description = "A stream of server-sent events")))]
pub async fn stream_events(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Error> {
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let after = start(&gw, resume.or(p.after)).await?;
    let follower = gw.follow_events(&caller, after)?;
    let sse = futures_util::StreamExt::map(follow(gw, follower), |e| {
        let data = serde_json::to_string(&e).unwrap_or_default();
        Ok(SseEvent::default().id(e.id.to_string()).event(e.kind).data(data))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::new().interval(Duration::from_secs(KEEP_ALIVE_INTERVAL_SECS))))
}

/// The same events over a WebSocket, one JSON text frame each.
#[utoipa::path(get, path = "/v1/events/ws", tag = "events", params(StreamParams),
    responses((status = 101, description = "Switching to the WebSocket protocol")))]
pub async fn events_websocket(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(p): ApiQuery<StreamParams>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    let after = start(&gw, p.after).await?;
    let events = follow(Arc::clone(&gw), gw.follow_events(&caller, after)?);
    let frames = futures_util::StreamExt::map(events, |e| serde_json::to_string(&e).unwrap_or_default());
    Ok(upgrade.on_upgrade(move |socket| forward(socket, frames)))
}

/// Where a stream starts: after the given id, or after the newest event.
async fn start(gw: &Gateway, after: Option<i64>) -> Result<i64, Error> {
    match after {
        Some(after) => Ok(after),
        None => gw.newest_event_id().await,
    }
}

/// The caller's events after `after`, for as long as the client listens.
fn follow(gw: Arc<Gateway>, follower: EventFollower) -> impl Stream<Item = Event> {
    stream::unfold((gw, follower), |(gw, mut follower)| async move {
        match follower.next().await {
            Ok(event) => Some((wire(&event, gw.node_pubkey_hex()), (gw, follower))),
            Err(e) => {
                tracing::warn!(error = %e, "an event stream ended: reading the outbox failed");
                None
            }
        }
    })
}

/// Sends each frame as a text message, and a ping whenever the stream is
/// quiet for [`KEEP_ALIVE_INTERVAL_SECS`]: the connection then never looks idle to
/// the listener's idle timeout, and a vanished client is found.
pub(super) async fn forward(mut socket: WebSocket, frames: impl Stream<Item = String>) {
    let mut frames = std::pin::pin!(frames);
    let mut keep_alive = tokio::time::interval(Duration::from_secs(KEEP_ALIVE_INTERVAL_SECS));
    keep_alive.tick().await;
    loop {
        let message = tokio::select! {
            frame = futures_util::StreamExt::next(&mut frames) => match frame {
                Some(frame) => WsMessage::Text(frame.into()),
                None => return,
            },
            _ = keep_alive.tick() => WsMessage::Ping(Default::default()),
        };
        if socket.send(message).await.is_err() {
            return;
        }
        keep_alive.reset();
    }
}

/// Subscribe a URL to events: an agent's key to its own, the operator to
/// one agent's (`agent_id`) or the whole gateway's. Delivery starts with
/// the next event. The answer holds the signing secret, shown only here.
#[utoipa::path(post, path = "/v1/webhooks", tag = "events", request_body = CreateWebhookRequest,
    responses((status = 201, body = WebhookCreated, description = "Created: the webhook and its signing secret")))]
pub async fn create_webhook(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<WebhookCreated>), Error> {
    let (webhook, secret) = gw.create_webhook(&caller, &req.url, req.types, req.agent_id).await?;
    Ok((StatusCode::CREATED, Json(WebhookCreated { webhook: views::webhook(webhook), secret })))
}

/// The caller's webhooks (all of them, for the operator).
#[utoipa::path(get, path = "/v1/webhooks", tag = "events",
    responses((status = 200, body = Vec<Webhook>, description = "The webhooks")))]
pub async fn list_webhooks(State(gw): State<AppState>, Caller(caller): Caller) -> Result<Json<Vec<Webhook>>, Error> {
    Ok(Json(gw.webhooks(&caller).await?.into_iter().map(views::webhook).collect()))
}

/// Unsubscribe: no more deliveries; its log goes too.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 204, description = "Done")))]
pub async fn delete_webhook(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    gw.delete_webhook(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restart a paused webhook from the event where it stopped.
#[utoipa::path(post, path = "/v1/webhooks/{id}/resume", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = Webhook, description = "The webhook")))]
pub async fn resume_webhook(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, Error> {
    Ok(Json(views::webhook(gw.resume_webhook(&caller, &id).await?)))
}

/// A webhook's delivery attempts, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = Vec<Delivery>, description = "The delivery attempts, newest first")))]
pub async fn list_deliveries(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Delivery>>, Error> {
    Ok(Json(gw.deliveries(&caller, &id, PAGE_ROWS_MAX).await?.into_iter().map(views::delivery).collect()))
}
