//! Extractors: authentication by scope, and JSON bodies whose every failure
//! is a problem response. Authentication runs before the body is read, so a
//! caller without the right key learns nothing about the body's rules.
//!
//! Every route authenticates here, so the rule for writes is here once: a
//! request that may change something (any method but GET and HEAD) by an
//! agent key needs at least `receive` (a read key changes nothing) and is
//! admitted within the key's and the agent's write rates. Routes that need
//! more declare it with [`Agent`].

use super::AppState;
use crate::error::Error;
use crate::gateway::{AgentKey, Principal};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::{HeaderMap, Method, StatusCode, header, request::Parts};
use coffer_client::Scope;
use serde::de::DeserializeOwned;

/// The secret of an `Authorization: Bearer <secret>` header, if there is one.
pub fn bearer_secret(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

/// A request's principal, resolved once: the layer that checks signed
/// writes resolves it first (with the agent's signing keys, in one read on
/// a shared store) and leaves it here for the route's extractor.
#[derive(Clone)]
pub struct Resolved(pub Principal);

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, Error> {
    let principal = match parts.extensions.get::<Resolved>() {
        Some(Resolved(principal)) => principal.clone(),
        None => state.authenticate(bearer_secret(&parts.headers).ok_or(Error::Unauthorized)?).await?,
    };
    // `/mcp` carries JSON-RPC in POSTs, reads included: each of its tools
    // calls these routes over the loopback client, with the same key, and
    // its writes are checked then.
    if let Principal::Agent(key) = &principal
        && is_write(&parts.method)
        && parts.uri.path() != crate::mcp::http::PATH
    {
        state.admit_write(key).await?;
    }
    Ok(principal)
}

/// Whether a request may change something: all but GET and HEAD (a
/// WebSocket upgrade is a GET, and reads).
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// Anyone with a valid secret: the operator or an agent key of any scope.
/// The gateway decides what each may do (an ancestor managing a sub-agent).
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        principal(parts, state).await.map(Caller)
    }
}

/// The operator (its token), and nobody else.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match principal(parts, state).await? {
            Principal::Operator => Ok(Operator),
            Principal::Agent(_) => Err(Error::Forbidden("this route is for the operator")),
        }
    }
}

pub const READ: u8 = 0;
pub const RECEIVE: u8 = 1;
pub const SPEND: u8 = 2;

/// An agent key with at least the scope `MIN` (one of [`READ`],
/// [`RECEIVE`], [`SPEND`]).
pub struct Agent<const MIN: u8>(pub AgentKey);

impl<const MIN: u8> FromRequestParts<AppState> for Agent<MIN> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let key = match principal(parts, state).await? {
            Principal::Agent(key) => key,
            Principal::Operator => return Err(Error::Forbidden("this route is for an agent key")),
        };
        let needed = match MIN {
            READ => Scope::Read,
            RECEIVE => Scope::Receive,
            _ => Scope::Spend,
        };
        // The gateway checks the scope again in the operation itself, for
        // the callers that do not come through HTTP; checked here too, it
        // answers before the body is read.
        key.require(needed)?;
        Ok(Agent(key))
    }
}

/// A JSON body. Wrong media type, size, syntax, types, unknown or missing
/// fields each answer with a problem naming what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::BodyTooLarge
            } else {
                Error::MalformedRequest(rejection.body_text())
            }
        })?;
        // serde reads a JSON array as a struct with fields in order; every
        // body of this API is an object, so anything else is refused.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(Error::MalformedRequest("the body must be a JSON object".into()));
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| Error::MalformedRequest(e.to_string()))
    }
}

/// A query string. A malformed one (unknown or repeated fields, a value of
/// the wrong type) answers a `malformed-request` problem naming what is
/// wrong, as a malformed body does.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(Error::MalformedRequest(rejection.body_text())),
        }
    }
}

/// The `Idempotency-Key` header, if sent: a retry with the same key gets the
/// first answer. A value that is not visible ASCII is refused here
/// (`invalid-field`), never read as another key; the gateway checks the
/// rest (length, characters) with the request it keys.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else { return Ok(IdempotencyKey(None)) };
        match value.to_str() {
            Ok(key) => Ok(IdempotencyKey(Some(key.to_owned()))),
            Err(_) => {
                Err(Error::InvalidField { field: "Idempotency-Key", detail: "visible ASCII characters only".into() })
            }
        }
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A `status` query filter: absent means `default`, `all` means every
/// status, anything else must parse.
pub fn status_filter<T>(
    param: Option<&str>,
    default: T,
    parse: fn(&str) -> Option<T>,
    allowed: &'static str,
) -> Result<Option<T>, Error> {
    match param {
        None => Ok(Some(default)),
        Some("all") => Ok(None),
        Some(s) => parse(s).map(Some).ok_or(Error::InvalidField { field: "status", detail: allowed.into() }),
    }
}
