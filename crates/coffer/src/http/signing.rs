//! Signed requests at the edge: the routes of agents' signing keys, and the
//! layer that checks the RFC 9421 signature of an agent's write request
//! before any handler runs (so a refused request changes nothing).

use super::AppState;
use super::extract::{ApiJson, Caller, Resolved, bearer_secret, is_write};
use crate::error::Error;
use crate::gateway::Principal;
use crate::gateway::signing::{AgentSigningKeys, SignedRequest};
use crate::limits::BODY_LEN_MAX_BYTES;
use crate::model::SigningKeyRecord;
use crate::model::views::timestamp;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use coffer_client::{CreateSigningKeyRequest, SigningKey};

/// Register a public key the agent signs its requests with (RFC 9421).
/// With `required`, every later write request of the agent must be signed
/// by one of its live keys; the bearer token alone then only reads. The
/// `id` answered is the `keyid` of `Signature-Input`.
#[utoipa::path(post, path = "/v1/agents/{id}/signing-keys", tag = "agent", params(("id" = String, Path)),
    request_body = CreateSigningKeyRequest,
    responses((status = 201, body = SigningKey, description = "Registered")))]
pub async fn create_signing_key(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(agent_id): Path<String>,
    ApiJson(req): ApiJson<CreateSigningKeyRequest>,
) -> Result<(StatusCode, Json<SigningKey>), Error> {
    let key = gw.create_signing_key(&caller, &agent_id, req.alg.as_deref(), &req.public_key, req.required).await?;
    Ok((StatusCode::CREATED, Json(view(key))))
}

/// An agent's signing keys, revoked ones included, newest first.
#[utoipa::path(get, path = "/v1/agents/{id}/signing-keys", tag = "agent", params(("id" = String, Path)),
    responses((status = 200, body = Vec<SigningKey>, description = "The keys")))]
pub async fn list_signing_keys(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<Vec<SigningKey>>, Error> {
    Ok(Json(gw.signing_keys(&caller, &agent_id).await?.into_iter().map(view).collect()))
}

/// Revoke a signing key: signatures by it are refused from now on.
#[utoipa::path(delete, path = "/v1/agents/{id}/signing-keys/{key_id}", tag = "agent",
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_signing_key(
    State(gw): State<AppState>,
    Caller(caller): Caller,
    Path((agent_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    gw.revoke_signing_key(&caller, &agent_id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn view(key: SigningKeyRecord) -> SigningKey {
    SigningKey {
        id: key.id,
        agent_id: key.agent_id,
        alg: key.alg.as_str().to_owned(),
        public_key: base64::engine::general_purpose::STANDARD.encode(&key.public_key),
        required: key.required,
        created_at: timestamp(key.created_at_ms),
        revoked_at: key.revoked_at_ms.map(timestamp),
    }
}

/// Checks the signature of an agent's write request: required when the
/// agent has a required key, and checked whenever one is sent. Reads, the
/// operator, requests without a valid token (refused later, by the route)
/// and `/mcp` (whose tools call the routes again, each checked here) pass.
pub async fn check_signed_writes(State(gw): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let keys = match signing_keys(&gw, &mut parts).await {
        Ok(Some(keys)) => keys,
        Ok(None) => return next.run(Request::from_parts(parts, body)).await,
        Err(e) => return e.into_response(),
    };
    let bytes = match read_body(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = verify(&gw, &keys, &parts, &bytes).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The agent's live signing keys for a write request whose signature is to
/// be checked. The principal found is left to the route's extractor.
async fn signing_keys(gw: &AppState, parts: &mut Parts) -> Result<Option<AgentSigningKeys>, Error> {
    if !is_write(&parts.method) || parts.uri.path() == crate::mcp::http::PATH {
        return Ok(None);
    }
    let Some(secret) = bearer_secret(&parts.headers) else { return Ok(None) };
    let (principal, keys) = match gw.authenticate_signed(secret).await {
        Ok(found) => found,
        // Refused again, with its problem, by the route (or no coffer
        // key at all: a paywalled upstream's own token).
        Err(Error::Unauthorized) => return Ok(None),
        // The keys could not be read (the database is away): nothing
        // passes unchecked.
        Err(e) => return Err(e),
    };
    let agent = matches!(principal, Principal::Agent(_));
    parts.extensions.insert(Resolved(principal));
    let signed = parts.headers.contains_key(SIGNATURE_INPUT);
    Ok((agent && (signed || keys.required())).then_some(keys))
}

const SIGNATURE_INPUT: &str = "signature-input";

/// The body, whole: the signature covers its digest. Bounded as every body
/// is.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Error> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > BODY_LEN_MAX_BYTES) {
        return Err(Error::BodyTooLarge);
    }
    axum::body::to_bytes(body, BODY_LEN_MAX_BYTES).await.map_err(|_| Error::BodyTooLarge)
}

async fn verify(gw: &AppState, keys: &AgentSigningKeys, parts: &Parts, body: &[u8]) -> Result<(), Error> {
    let header = |name: &str| -> Result<Option<&str>, Error> {
        match parts.headers.get(name) {
            None => Ok(None),
            Some(value) => value.to_str().map(Some).map_err(|_| Error::Signature {
                component: "header",
                detail: format!("{name} must be visible ASCII"),
                missing: false,
            }),
        }
    };
    let target_uri = target_uri(gw, parts)?;
    let request = SignedRequest {
        method: parts.method.as_str(),
        target_uri: &target_uri,
        body,
        content_digest: header("content-digest")?,
        idempotency_key: header("idempotency-key")?,
        signature_input: header(SIGNATURE_INPUT)?,
        signature: header("signature")?,
    };
    gw.verify_signed_request(keys, &request).await
}

/// `@target-uri` as the client addressed it: the configured public origin,
/// or `http://` and the `Host` header, then the path and query.
fn target_uri(gw: &AppState, parts: &Parts) -> Result<String, Error> {
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Some(origin) = &gw.settings().public_url {
        return Ok(format!("{origin}{path}"));
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .ok_or(Error::Signature {
            component: "@target-uri",
            detail: "no Host header to rebuild the target URI from".into(),
            missing: false,
        })?;
    Ok(format!("http://{host}{path}"))
}
