//! What the HTTP backends share: bounded calls and bounded answers.

use super::LnError;
use serde::de::DeserializeOwned;

/// The largest answer read from a backend: its JSON answers are small.
pub const RESPONSE_LEN_MAX_BYTES: usize = 1024 * 1024;
/// How much of an error answer is kept as its detail.
const DETAIL_LEN_MAX_BYTES: usize = 512;
const _: () = assert!(DETAIL_LEN_MAX_BYTES <= RESPONSE_LEN_MAX_BYTES);

/// Sends a request and reads its answer, at most
/// [`RESPONSE_LEN_MAX_BYTES`]. A 404 is `Ok(None)`; any other error status
/// is [`LnError::Status`].
pub async fn send_json<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<Option<T>, LnError> {
    let (status, body) = send(request).await?;
    if status == 404 {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        return Err(LnError::Status { status, detail: detail(&body) });
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| LnError::Protocol(e.to_string()))
}

/// Sends a request and reads its status and body, at most
/// [`RESPONSE_LEN_MAX_BYTES`].
pub async fn send(request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), LnError> {
    let mut response = request.send().await.map_err(|e| LnError::Unreachable(describe(&e)))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| LnError::Unreachable(describe(&e)))? {
        if body.len() + chunk.len() > RESPONSE_LEN_MAX_BYTES {
            return Err(LnError::Protocol(format!("answer larger than {RESPONSE_LEN_MAX_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// An error answer's text, shortened, on one line.
pub fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(DETAIL_LEN_MAX_BYTES)]);
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A transport error without its URL (which may carry a secret in a query).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(e);
    let mut text = kind.to_owned();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}
