//! MCP over streamable HTTP at `/mcp` on `coffer serve`.
//!
//! Every request carries an agent's key as a bearer token and is
//! authenticated before rmcp sees it; each tool call then acts with the key
//! of the request it arrived in, never with one remembered from an earlier
//! request.
//!
//! The server is stateless (no MCP sessions): any instance of the gateway
//! can answer any request, nothing per client lives in memory, and there is
//! no session table to bound or to lose in a restart.
//!
//! The tools reach the gateway through its own HTTP API over loopback, like
//! `coffer mcp` does from afar: one implementation of each tool for both
//! transports, with the same scopes, idempotency keys and problem codes.
//! The hop costs a local round trip per call, little next to a model's turn.

use super::CofferMcp;
use crate::http::AppState;
use crate::http::extract::{Agent, READ, bearer_secret};
use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use coffer_client::Scope;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Where the MCP endpoint is mounted.
pub const PATH: &str = "/mcp";

/// The largest JSON-RPC message accepted, as for every other route.
const BODY_LEN_MAX_BYTES: usize = crate::limits::BODY_LEN_MAX_BYTES;

/// A loopback call to the gateway should answer in milliseconds; this bounds
/// a tool call when the gateway is overloaded.
const LOOPBACK_TIMEOUT_MS: u64 = 30_000;

/// The secret of the agent key that authenticated an `/mcp` request, and
/// whether it may spend, handed to the tools through the request's
/// extensions.
#[derive(Clone)]
pub struct AgentSecret(String, bool);

impl AgentSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn may_spend(&self) -> bool {
        self.1
    }
}

impl fmt::Debug for AgentSecret {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentSecret(..)")
    }
}

/// The `/mcp` route for a gateway listening on `local`.
pub fn router(state: AppState, local: SocketAddr) -> Result<Router<AppState>, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(LOOPBACK_TIMEOUT_MS))
        .build()
        .map_err(|e| format!("the loopback client: {e}"))?;
    let fetcher = super::Fetcher::new(&state.settings().egress)?;
    let base_url = format!("http://{}", loopback(local));
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // Host checks guard unauthenticated local servers against DNS
        // rebinding; here every request needs an agent's key, which a page
        // from another site does not have, so any host name may be used.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(BODY_LEN_MAX_BYTES);
    let service = StreamableHttpService::new(
        move || Ok(CofferMcp::per_request(http.clone(), base_url.clone(), fetcher.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Ok(Router::new().route_service(PATH, service).route_layer(middleware::from_fn_with_state(state, authenticate)))
}

/// Admits a request only with an agent's key (any scope: the gateway checks
/// each tool's scope when the tool calls it) and hands the key on.
async fn authenticate(Agent(key): Agent<READ>, mut request: Request, next: Next) -> Response {
    if let Some(secret) = bearer_secret(request.headers()) {
        let secret = AgentSecret(secret.to_owned(), key.require(Scope::Spend).is_ok());
        request.extensions_mut().insert(secret);
    }
    next.run(request).await
}

/// The address that reaches this process from itself: a wildcard listen
/// address is answered on loopback.
fn loopback(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8420".parse().unwrap();
        assert_eq!(loopback(v4).to_string(), "127.0.0.1:8420");
        let v6: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(loopback(v6).to_string(), "[::1]:9");
        let fixed: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(loopback(fixed), fixed);
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert_eq!(format!("{:?}", AgentSecret("csk_secret".into(), true)), "AgentSecret(..)");
    }
}
