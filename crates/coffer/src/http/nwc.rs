//! The routes of agents' Nostr Wallet Connect connections. The wallet
//! service that answers their requests is `crate::nwc`.

use super::AppState;
use super::extract::{ApiJson, Caller};
use crate::error::Error;
use crate::gateway::nwc::NwcConnectionSpec;
use crate::gateway::parse_time;
use crate::model::NwcConnectionRecord;
use crate::model::views::timestamp;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use coffer_client::{CreateNwcConnectionRequest, NwcConnection, NwcConnectionCreated};

/// Create an NWC connection to an agent's wallet: by the operator, an
/// ancestor, or the agent with a `spend` key. Every request made with it
/// passes the agent's constitution as an HTTP payment does. The `uri`
/// holds the connection's secret and is shown only in this answer.
#[utoipa::path(post, path = "/v1/agents/{id}/nwc", tag = "agent", params(("id" = String, Path)),
    request_body = CreateNwcConnectionRequest,
    responses((status = 201, body = NwcConnectionCreated, description = "Created; the URI is shown once")))]
pub async fn create_nwc_connection(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(agent_id): Path<String>,
    ApiJson(req): ApiJson<CreateNwcConnectionRequest>,
) -> Result<(StatusCode, Json<NwcConnectionCreated>), Error> {
    let expires_at_ms = req.expires_at.as_deref().map(|t| parse_time("expires_at", t)).transpose()?;
    let spec = NwcConnectionSpec {
        name: &req.name,
        methods: req.methods.as_deref(),
        expires_at_ms,
        notifications: req.notifications.unwrap_or(true),
    };
    let created = gw.create_nwc_connection(&caller, &agent_id, spec).await?;
    // A few hundred characters: far within what a QR code holds.
    let uri_qr_svg = super::qr::svg_of(&created.uri).map_err(|e| Error::internal("drawing the URI's QR code", e))?;
    let body = NwcConnectionCreated {
        id: created.record.id.clone(),
        uri: created.uri,
        uri_qr_svg,
        connection: view(created.record),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// An agent's NWC connections, revoked ones included, newest first.
#[utoipa::path(get, path = "/v1/agents/{id}/nwc", tag = "agent", params(("id" = String, Path)),
    responses((status = 200, body = Vec<NwcConnection>, description = "The connections")))]
pub async fn list_nwc_connections(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<Vec<NwcConnection>>, Error> {
    Ok(Json(gw.nwc_connections(&caller, &agent_id).await?.into_iter().map(view).collect()))
}

/// Revoke an NWC connection: its next request, on any instance, is
/// answered `UNAUTHORIZED`.
#[utoipa::path(delete, path = "/v1/agents/{id}/nwc/{connection_id}", tag = "agent",
    params(("id" = String, Path), ("connection_id" = String, Path)),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_nwc_connection(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path((agent_id, connection_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    gw.revoke_nwc_connection(&caller, &agent_id, &connection_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn view(c: NwcConnectionRecord) -> NwcConnection {
    NwcConnection {
        id: c.id,
        agent_id: c.agent_id,
        name: c.name,
        client_pubkey: hex::encode(c.client_pubkey),
        methods: c.methods.iter().map(|m| m.as_str().to_owned()).collect(),
        notifications: c.notifications,
        created_at: timestamp(c.created_at_ms),
        expires_at: c.expires_at_ms.map(timestamp),
        revoked_at: c.revoked_at_ms.map(timestamp),
        last_used_at: c.last_used_at_ms.map(timestamp),
    }
}
