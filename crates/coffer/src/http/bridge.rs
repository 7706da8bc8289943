//! The routes of the bridges to messengers: link codes and linked users,
//! and rooms bridged to chats. The bridges themselves are `crate::bridge`.

use super::AppState;
use super::extract::{ApiJson, Caller};
use crate::error::Error;
use crate::model::views::timestamp;
use crate::model::{BridgeLinkRecord, RoomBridgeRecord};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use coffer_client::{BridgeLink, LinkCode, PutRoomBridgeRequest, RoomBridge};

/// A single-use code (10 minutes) that links a messenger user to the agent:
/// the user sends `/link CODE` to the bridge's bot, and then acts as the
/// agent there, through its constitution. By the operator, an ancestor, or
/// the agent with a `spend` key.
#[utoipa::path(post, path = "/v1/agents/{id}/link-codes", tag = "agent", params(("id" = String, Path)),
    responses((status = 201, body = LinkCode, description = "The code, shown once")))]
pub async fn create_link_code(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(agent_id): Path<String>,
) -> Result<(StatusCode, Json<LinkCode>), Error> {
    let code = gw.create_link_code(&caller, Some(&agent_id)).await?;
    Ok((StatusCode::CREATED, Json(LinkCode { code: code.code, expires_at: timestamp(code.expires_at_ms) })))
}

/// A link code for the operator's own messenger user: approvals arrive
/// there with Approve and Deny buttons, breaker trips as alerts, and
/// `/freeze`, `/halt` work. Operator only.
#[utoipa::path(post, path = "/v1/link-codes", tag = "operator",
    responses((status = 201, body = LinkCode, description = "The code, shown once")))]
pub async fn create_operator_link_code(
    State(gw): State<AppState>,
    Caller(caller): Caller,
) -> Result<(StatusCode, Json<LinkCode>), Error> {
    let code = gw.create_link_code(&caller, None).await?;
    Ok((StatusCode::CREATED, Json(LinkCode { code: code.code, expires_at: timestamp(code.expires_at_ms) })))
}

/// The messenger users linked to an agent.
#[utoipa::path(get, path = "/v1/agents/{id}/links", tag = "agent", params(("id" = String, Path)),
    responses((status = 200, body = Vec<BridgeLink>, description = "The linked users")))]
pub async fn list_links(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<Vec<BridgeLink>>, Error> {
    Ok(Json(gw.bridge_links(&caller, Some(&agent_id)).await?.into_iter().map(link_view).collect()))
}

/// Unlinks a messenger user from an agent: its next press or command is
/// refused.
#[utoipa::path(delete, path = "/v1/agents/{id}/links/{messenger}/{user_id}", tag = "agent",
    params(("id" = String, Path), ("messenger" = String, Path), ("user_id" = String, Path)),
    responses((status = 204, description = "Unlinked")))]
pub async fn delete_link(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path((agent_id, messenger, user_id)): Path<(String, String, String)>,
) -> Result<StatusCode, Error> {
    gw.remove_bridge_link(&caller, Some(&agent_id), &messenger, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The messenger users linked as the operator.
#[utoipa::path(get, path = "/v1/links", tag = "operator",
    responses((status = 200, body = Vec<BridgeLink>, description = "The linked users")))]
pub async fn list_operator_links(
    State(gw): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<BridgeLink>>, Error> {
    Ok(Json(gw.bridge_links(&caller, None).await?.into_iter().map(link_view).collect()))
}

/// Unlinks a messenger user linked as the operator.
#[utoipa::path(delete, path = "/v1/links/{messenger}/{user_id}", tag = "operator",
    params(("messenger" = String, Path), ("user_id" = String, Path)),
    responses((status = 204, description = "Unlinked")))]
pub async fn delete_operator_link(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path((messenger, user_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    gw.remove_bridge_link(&caller, None, &messenger, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bridges a room to a chat of a messenger the gateway runs a bot on
/// (`telegram`: `{"chat_id"}`; `matrix`: `{"room_id"}`), replacing the
/// room's chat on that messenger. Operator only.
#[utoipa::path(put, path = "/v1/rooms/{room}/bridges/{messenger}", tag = "rooms",
    params(("room" = String, Path), ("messenger" = String, Path)),
    request_body = PutRoomBridgeRequest,
    responses((status = 200, body = RoomBridge, description = "Bridged")))]
pub async fn put_room_bridge(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path((room, messenger)): Path<(String, String)>,
    ApiJson(req): ApiJson<PutRoomBridgeRequest>,
) -> Result<Json<RoomBridge>, Error> {
    let chat = match (req.chat_id, req.room_id) {
        (Some(chat), None) | (None, Some(chat)) => chat,
        _ => {
            let detail = "give the chat: chat_id (Telegram) or room_id (Matrix), one of them".into();
            return Err(Error::InvalidField { field: "chat_id", detail });
        }
    };
    Ok(Json(bridge_view(gw.bridge_room(&caller, &room, &messenger, &chat).await?)))
}

/// A room's bridges.
#[utoipa::path(get, path = "/v1/rooms/{room}/bridges", tag = "rooms", params(("room" = String, Path)),
    responses((status = 200, body = Vec<RoomBridge>, description = "The bridges")))]
pub async fn list_room_bridges(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(room): Path<String>,
) -> Result<Json<Vec<RoomBridge>>, Error> {
    Ok(Json(gw.room_bridges(&caller, &room).await?.into_iter().map(bridge_view).collect()))
}

/// Ends a room's bridge to a messenger. Operator only.
#[utoipa::path(delete, path = "/v1/rooms/{room}/bridges/{messenger}", tag = "rooms",
    params(("room" = String, Path), ("messenger" = String, Path)),
    responses((status = 204, description = "No longer bridged")))]
pub async fn delete_room_bridge(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path((room, messenger)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    gw.unbridge_room(&caller, &room, &messenger).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn link_view(l: BridgeLinkRecord) -> BridgeLink {
    BridgeLink {
        messenger: l.messenger,
        user_id: l.user_id,
        user_name: l.user_name,
        agent_id: l.agent_id,
        chat_id: l.chat_id,
        linked_at: timestamp(l.linked_at_ms),
    }
}

fn bridge_view(b: RoomBridgeRecord) -> RoomBridge {
    RoomBridge {
        room_id: b.room_id,
        messenger: b.messenger,
        chat_id: b.chat_id,
        created_at: timestamp(b.created_at_ms),
    }
}
