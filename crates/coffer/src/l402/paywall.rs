//! The seller's side: an L402 reverse proxy in front of any HTTP service.
//!
//! A request without valid credentials gets `402` with a fresh invoice of
//! the selling agent (an [`InvoiceSource`]: over HTTP with its receive key
//! for `coffer paywall`, or the gateway itself for a paywall mounted on
//! `coffer serve`; the money goes to the agent's wallet either way) and a
//! macaroon bound to the invoice's payment hash,
//! with caveats: expiry, route, and optionally a number of uses. A request
//! with `Authorization: L402 <token>:<preimage>` is checked here alone (the
//! macaroon's signature and caveats, and sha256(preimage) == payment hash)
//! and passed through; a bad one gets a new challenge and never reaches the
//! upstream.
//!
//! Every path is brought to its one canonical form ([`super::path`]) before
//! anything else: the route is chosen on that form and the upstream gets
//! exactly that form (the query string as it came). A path without one is
//! refused with `400 invalid-path` and reaches no one. Challenges are
//! bounded per client and minute ([`super::throttle`]): each one stores an
//! invoice.
//!
//! Use counts are kept in this process's memory, bounded: after a restart
//! a token with a `uses` caveat starts counting again (the root key is kept
//! on disk, so paid tokens stay valid; the alternative, invalidating every
//! paid token at each restart, would make buyers pay again).

use super::challenge::{self, decode_token, encode_token};
use super::macaroon::{Identifier, Macaroon};
use super::throttle::ChallengeThrottle;
use super::{TOKEN_TTL_DEFAULT_SECS, TOKEN_TTL_MAX_SECS};
use crate::gateway::Clock;
use crate::limits::Limit;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_client::{Client, CreateInvoiceRequest};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The largest request body passed to the upstream.
pub const REQUEST_BODY_LEN_MAX_BYTES: usize = 1024 * 1024;
/// The largest upstream answer passed back.
pub const RESPONSE_BODY_LEN_MAX_BYTES: usize = 8 * 1024 * 1024;
pub const UPSTREAM_TIMEOUT_MS: u64 = 30_000;
/// Requests in flight at once (proxied or challenged): beyond, 503.
pub const IN_FLIGHT_MAX: usize = 256;
/// Tokens with a `uses` caveat tracked at once.
pub const METERED_TOKENS_MAX: usize = 100_000;
pub const ROUTES_MAX: usize = 256;
pub const ROUTE_PATH_LEN_MAX_BYTES: usize = 256;
/// The challenge's invoice expires sooner than the token: it only has to
/// be paid, right away.
const INVOICE_EXPIRY_SECS: u32 = 600;
const _: () = assert!((INVOICE_EXPIRY_SECS as u64) < super::TOKEN_TTL_DEFAULT_SECS);
const _: () = assert!(INVOICE_EXPIRY_SECS <= crate::payment::bolt11::EXPIRY_MAX_SECS);
const ROOT_KEY_FILE: &str = "l402-root.key";
const LOCATION: &str = "coffer";

/// The per-route prices file (TOML).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaywallConfig {
    /// The price of paths no route matches; `--price-msat` if absent.
    pub price_msat: Option<u64>,
    pub token_ttl_secs: Option<u64>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A path prefix, matched on whole segments: `/data` covers `/data` and
    /// `/data/today`, not `/database`.
    pub path: String,
    pub price_msat: u64,
    /// How often one paid token may be used (unlimited if absent).
    pub uses: Option<u32>,
    pub ttl_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub path: String,
    pub price_msat: u64,
    pub uses: Option<u32>,
    pub ttl_secs: u64,
}

impl PaywallConfig {
    pub fn load(path: &Path) -> Result<PaywallConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The routes, longest path first, ending with `/` at the default price.
    pub fn routes(&self, default_price_msat: Option<u64>) -> Result<Vec<Route>, String> {
        let ttl = self.token_ttl_secs.unwrap_or(TOKEN_TTL_DEFAULT_SECS);
        check_ttl("token_ttl_secs", ttl)?;
        if self.routes.len() > ROUTES_MAX {
            return Err(format!("route: at most {ROUTES_MAX} routes"));
        }
        let mut routes = Vec::with_capacity(self.routes.len() + 1);
        for (i, r) in self.routes.iter().enumerate() {
            let path = r.path.trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            if path.len() > ROUTE_PATH_LEN_MAX_BYTES {
                return Err(format!("route[{i}].path: at most {ROUTE_PATH_LEN_MAX_BYTES} bytes"));
            }
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') {
                return Err(format!("route[{i}].path: a path such as \"/data\""));
            }
            check_price(&format!("route[{i}].price_msat"), r.price_msat)?;
            let ttl_secs = r.ttl_secs.unwrap_or(ttl);
            check_ttl(&format!("route[{i}].ttl_secs"), ttl_secs)?;
            if r.uses == Some(0) {
                return Err(format!("route[{i}].uses: at least 1"));
            }
            if routes.iter().any(|known: &Route| known.path == path) {
                return Err(format!("route[{i}].path: {path} is listed twice"));
            }
            routes.push(Route { path: path.to_owned(), price_msat: r.price_msat, uses: r.uses, ttl_secs });
        }
        if !routes.iter().any(|r| r.path == "/") {
            let price = self.price_msat.or(default_price_msat).ok_or("no price: give --price-msat or price_msat")?;
            check_price("price_msat", price)?;
            routes.push(Route { path: "/".into(), price_msat: price, uses: None, ttl_secs: ttl });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        Ok(routes)
    }
}

fn check_price(field: &str, price_msat: u64) -> Result<(), String> {
    if price_msat == 0 || price_msat > crate::payment::bolt11::INVOICE_AMOUNT_MAX_MSAT {
        return Err(format!("{field}: between 1 and {} msat", crate::payment::bolt11::INVOICE_AMOUNT_MAX_MSAT));
    }
    Ok(())
}

fn check_ttl(field: &str, ttl_secs: u64) -> Result<(), String> {
    if ttl_secs == 0 || ttl_secs > TOKEN_TTL_MAX_SECS {
        return Err(format!("{field}: between 1 and {TOKEN_TTL_MAX_SECS} seconds"));
    }
    Ok(())
}

/// The route a path falls under: the longest prefix on segment boundaries.
pub fn route_for<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes.iter().find(|r| super::covers(&r.path, path))
}

/// Loads the macaroon root key, creating it (mode 0600) on first use.
pub fn root_key(dir: &Path) -> Result<[u8; 32], String> {
    let path = dir.join(ROOT_KEY_FILE);
    if !path.exists() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let key = crate::secrets::random_bytes::<32>();
        crate::secrets::write_private_file(&path, &key).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    bytes.try_into().map_err(|_| format!("{} is not a 32-byte key", path.display()))
}

/// An invoice of the selling agent, as the challenge needs it.
pub struct SellerInvoice {
    pub bolt11: String,
    pub payment_hash: [u8; 32],
}

pub type InvoiceFuture<'a> = Pin<Box<dyn Future<Output = Result<SellerInvoice, String>> + Send + 'a>>;

/// Where the paywall's invoices come from: the selling agent's wallet.
pub trait InvoiceSource: Send + Sync {
    fn create_invoice(&self, amount_msat: u64, memo: String, expiry_secs: u32) -> InvoiceFuture<'_>;
}

/// `coffer paywall`: over HTTP, with the selling agent's (receive) key.
impl InvoiceSource for Client {
    fn create_invoice(&self, amount_msat: u64, memo: String, expiry_secs: u32) -> InvoiceFuture<'_> {
        Box::pin(async move {
            let request = CreateInvoiceRequest {
                amount_msat,
                memo: Some(memo),
                expiry_secs: Some(expiry_secs),
                ..Default::default()
            };
            let invoice = Client::create_invoice(self, &request).await.map_err(|e| e.to_string())?;
            let mut payment_hash = [0u8; 32];
            hex::decode_to_slice(&invoice.payment_hash, &mut payment_hash)
                .map_err(|_| "the invoice's payment hash is not 32 bytes of hex".to_owned())?;
            Ok(SellerInvoice { bolt11: invoice.bolt11, payment_hash })
        })
    }
}

/// Checks an upstream URL; `field` names it in the error.
pub fn parse_upstream(field: &str, upstream: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(upstream).map_err(|e| format!("{field} {upstream:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{field}: an http or https URL"));
    }
    Ok(url)
}

pub struct Paywall {
    root_key: [u8; 32],
    routes: Vec<Route>,
    /// Where the paywall is mounted on a gateway (`/paid/weather`), or ""
    /// on a process of its own. Routes match the path below it; the
    /// tokens' `route` caveats name the full path, as the buyer sees it,
    /// so that a buyer keeps a token for that path and no wider.
    mount: String,
    upstream: reqwest::Url,
    upstream_http: reqwest::Client,
    seller: Box<dyn InvoiceSource>,
    /// Uses so far and expiry (unix ms) by token id, for tokens with a
    /// `uses` caveat.
    uses: Mutex<HashMap<[u8; 32], (u32, i64)>>,
    in_flight: tokio::sync::Semaphore,
    challenges: ChallengeThrottle,
}

/// Why credentials were refused: said in the new challenge's body.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed(String),
    BadSignature,
    WrongPreimage,
    Expired,
    OtherRoute,
    UsesExhausted,
    UnknownCaveat,
}

impl Refusal {
    fn as_str(&self) -> String {
        match self {
            Refusal::Malformed(why) => format!("malformed credentials: {why}"),
            Refusal::BadSignature => "the token's signature does not verify".into(),
            Refusal::WrongPreimage => "the preimage does not match the token's payment hash".into(),
            Refusal::Expired => "the token has expired".into(),
            Refusal::OtherRoute => "the token is for another route".into(),
            Refusal::UsesExhausted => "the token has been used as often as it may".into(),
            Refusal::UnknownCaveat => "the token has a caveat this paywall does not know".into(),
        }
    }
}

impl Paywall {
    pub fn new(
        root_key: [u8; 32],
        routes: Vec<Route>,
        mount: &str,
        upstream: reqwest::Url,
        seller: Box<dyn InvoiceSource>,
        challenges_per_minute_per_client: u32,
    ) -> Result<Paywall, String> {
        assert!(mount.is_empty() || (mount.starts_with('/') && !mount.ends_with('/')), "a mount is a path prefix");
        let upstream_http = reqwest::Client::builder()
            .timeout(Duration::from_millis(UPSTREAM_TIMEOUT_MS))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the upstream client: {e}"))?;
        assert!(route_for(&routes, "/").is_some(), "the routes end with a default route");
        Ok(Paywall {
            root_key,
            routes,
            mount: mount.to_owned(),
            upstream,
            upstream_http,
            seller,
            uses: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(IN_FLIGHT_MAX),
            challenges: ChallengeThrottle::new(challenges_per_minute_per_client),
        })
    }

    /// The name of `route` in tokens and answers: its path as the buyer
    /// sees it.
    pub fn route_name(&self, route: &Route) -> String {
        match (self.mount.as_str(), route.path.as_str()) {
            ("", path) => path.to_owned(),
            (mount, "/") => mount.to_owned(),
            (mount, path) => format!("{mount}{path}"),
        }
    }

    /// Checks credentials for a request to `route`; counts one use.
    pub fn verify(&self, authorization: &str, route: &Route, now_ms: i64) -> Result<(), Refusal> {
        let credentials = challenge::parse_authorization(authorization).map_err(Refusal::Malformed)?;
        if credentials.token.contains(',') {
            return Err(Refusal::Malformed("one macaroon only".into()));
        }
        let bytes = decode_token(&credentials.token).ok_or(Refusal::Malformed("the token is not base64".into()))?;
        let macaroon = Macaroon::decode(&bytes).ok_or(Refusal::Malformed("the token is not a macaroon".into()))?;
        if !macaroon.verify_signature(&self.root_key) {
            return Err(Refusal::BadSignature);
        }
        let id = Identifier::decode(&macaroon.identifier).ok_or(Refusal::BadSignature)?;
        let hash: [u8; 32] = Sha256::digest(credentials.preimage).into();
        if !bool::from(hash.ct_eq(&id.payment_hash)) {
            return Err(Refusal::WrongPreimage);
        }
        let (mut uses, mut expires_at_ms) = (None, None);
        for (key, value) in macaroon.caveat_pairs() {
            match key {
                "expires_at" => {
                    let secs: i64 = value.parse().map_err(|_| Refusal::UnknownCaveat)?;
                    if now_ms >= secs.saturating_mul(1000) {
                        return Err(Refusal::Expired);
                    }
                    expires_at_ms = Some(secs.saturating_mul(1000));
                }
                "route" if value == self.route_name(route) => {}
                "route" => return Err(Refusal::OtherRoute),
                "uses" => uses = Some(value.parse::<u32>().map_err(|_| Refusal::UnknownCaveat)?),
                _ => return Err(Refusal::UnknownCaveat),
            }
        }
        // Ours always carry an expiry; a token without one was not minted here.
        let expires_at_ms = expires_at_ms.ok_or(Refusal::UnknownCaveat)?;
        match uses {
            Some(limit) => self.count_use(id.token_id, limit, expires_at_ms, now_ms),
            None => Ok(()),
        }
    }

    fn count_use(&self, token_id: [u8; 32], limit: u32, expires_at_ms: i64, now_ms: i64) -> Result<(), Refusal> {
        let mut uses = self.uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !uses.contains_key(&token_id) && uses.len() >= METERED_TOKENS_MAX {
            uses.retain(|_, (_, expires)| *expires > now_ms);
            if uses.len() >= METERED_TOKENS_MAX {
                // Refusing is the safe side: counting would need memory we
                // do not give, and not counting would serve for free.
                return Err(Refusal::UsesExhausted);
            }
        }
        let entry = uses.entry(token_id).or_insert((0, expires_at_ms));
        if entry.0 >= limit {
            return Err(Refusal::UsesExhausted);
        }
        entry.0 += 1;
        Ok(())
    }

    /// A new invoice and a macaroon bound to it, for `route`.
    pub async fn challenge(&self, route: &Route, now_ms: i64) -> Result<String, String> {
        let name = self.route_name(route);
        let invoice = self.seller.create_invoice(route.price_msat, format!("L402 {name}"), INVOICE_EXPIRY_SECS).await?;
        let id = Identifier { payment_hash: invoice.payment_hash, token_id: crate::secrets::random_bytes::<32>() };
        let mut macaroon = Macaroon::mint(&self.root_key, LOCATION, id.encode());
        let ttl_ms = i64::try_from(route.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        macaroon.add_caveat(&format!("expires_at={}", now_ms.saturating_add(ttl_ms) / 1000));
        macaroon.add_caveat(&format!("route={name}"));
        if let Some(uses) = route.uses {
            macaroon.add_caveat(&format!("uses={uses}"));
        }
        Ok(challenge::format_challenge(&encode_token(&macaroon.encode()), &invoice.bolt11))
    }

    pub fn router(self: Arc<Paywall>) -> Router {
        Router::new().fallback(handle).with_state(self)
    }
}

async fn handle(State(paywall): State<Arc<Paywall>>, request: Request) -> Response {
    let Ok(_permit) = paywall.in_flight.try_acquire() else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many requests in flight; retry shortly");
    };
    let now_ms = crate::gateway::SystemClock.now_ms();
    let path = match super::path::canonicalize(request.uri().path()) {
        Ok(path) => path,
        Err(why) => return problem(StatusCode::BAD_REQUEST, "invalid-path", &why.to_string()),
    };
    let Some(route) = route_for(&paywall.routes, &path) else {
        return problem(StatusCode::NOT_FOUND, "not-found", "no route");
    };
    // A value that is not text cannot be L402 credentials: refused below.
    let authorization = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("-").to_owned());
    let refusal = match authorization {
        None => None,
        Some(value) => match paywall.verify(&value, route, now_ms) {
            Ok(()) => return proxy(&paywall, &path, request).await,
            Err(refusal) => Some(refusal),
        },
    };
    if let Err(retry_after_secs) = paywall.challenges.take(client_address(&request), now_ms) {
        let detail = "too many payment challenges from this address in a minute: pay one of them, or wait";
        return crate::error::Error::limit(Limit::PaywallChallengesPerClient, retry_after_secs, detail).into_response();
    }
    match paywall.challenge(route, now_ms).await {
        Ok(www_authenticate) => payment_required(&www_authenticate, route, &paywall.route_name(route), refusal),
        Err(e) => {
            tracing::warn!(error = %e, "the paywall could not create an invoice");
            problem(StatusCode::BAD_GATEWAY, "invoice-failed", "the paywall could not create an invoice")
        }
    }
}

/// The client's address, from the server's connection info. A server that
/// gives none (which ours always do) puts every client in one bucket:
/// bounded still, only coarser.
fn client_address(request: &Request) -> IpAddr {
    let connected = request.extensions().get::<ConnectInfo<SocketAddr>>();
    connected.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(address)| address.ip())
}

fn payment_required(www_authenticate: &str, route: &Route, name: &str, refusal: Option<Refusal>) -> Response {
    let detail = match &refusal {
        Some(refusal) => format!("{}; pay the new invoice for {} msat", refusal.as_str(), route.price_msat),
        None => format!(
            "pay the invoice for {} msat, then retry with Authorization: L402 <token>:<preimage>",
            route.price_msat
        ),
    };
    let body = serde_json::json!({
        "type": "/problems/payment-required", "title": "Payment required", "status": 402,
        "code": "payment-required", "detail": detail, "price_msat": route.price_msat, "route": name,
    });
    let mut response = (StatusCode::PAYMENT_REQUIRED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(www_authenticate) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("/problems/{code}"), "title": code, "status": status.as_u16(),
        "code": code, "detail": detail,
    });
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

/// Headers that belong to one connection, not to the message (RFC 9110
/// 7.6.1), and the credentials, which are for the paywall only.
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
            | "proxy-authorization"
    )
}

/// Forwards the request to `path` (its canonical form) under the upstream's
/// base path.
async fn proxy(paywall: &Paywall, path: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, REQUEST_BODY_LEN_MAX_BYTES).await {
        Ok(body) => body,
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "the request body is too large"),
    };
    let mut url = paywall.upstream.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}{path}"));
    url.set_query(parts.uri.query());
    let mut upstream = paywall.upstream_http.request(parts.method, url).body(body);
    for (name, value) in parts.headers.iter().filter(|(name, _)| forwarded(name)) {
        upstream = upstream.header(name, value);
    }
    match relay(upstream).await {
        Ok(response) => response,
        Err(why) => {
            tracing::warn!(error = %why, "the upstream failed");
            problem(StatusCode::BAD_GATEWAY, "upstream-failed", "the upstream service did not answer")
        }
    }
}

async fn relay(upstream: reqwest::RequestBuilder) -> Result<Response, String> {
    let mut answer = upstream.send().await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers().iter().filter(|(name, _)| forwarded(name)) {
        headers.append(name.clone(), value.clone());
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > RESPONSE_BODY_LEN_MAX_BYTES {
            return Err(format!("the answer is larger than {RESPONSE_BODY_LEN_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let mut response = Response::new(Body::from(Bytes::from(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Route> {
        let config: PaywallConfig = toml::from_str(
            r#"
            token_ttl_secs = 60
            [[route]]
            path = "/data"
            price_msat = 5000
            uses = 2
            [[route]]
            path = "/data/big/"
            price_msat = 9000
            "#,
        )
        .unwrap();
        config.routes(Some(1000)).unwrap()
    }

    #[test]
    fn routes_match_whole_segments_longest_first() {
        let routes = routes();
        assert_eq!(route_for(&routes, "/data").unwrap().price_msat, 5000);
        assert_eq!(route_for(&routes, "/data/today").unwrap().price_msat, 5000);
        assert_eq!(route_for(&routes, "/data/big/x").unwrap().price_msat, 9000);
        assert_eq!(route_for(&routes, "/database").unwrap().price_msat, 1000);
        assert_eq!(route_for(&routes, "/").unwrap().path, "/");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |text: &str, default: Option<u64>| {
            let config: PaywallConfig = toml::from_str(text).unwrap();
            config.routes(default).unwrap_err()
        };
        assert!(bad("", None).contains("no price"));
        assert!(bad("[[route]]\npath = \"/a\"\nprice_msat = 0", Some(1)).contains("route[0].price_msat"));
        assert!(bad("[[route]]\npath = \"a\"\nprice_msat = 5", Some(1)).contains("route[0].path"));
        assert!(bad("[[route]]\npath = \"/a\"\nprice_msat = 5\nuses = 0", Some(1)).contains("route[0].uses"));
        assert!(bad("token_ttl_secs = 0", Some(1)).contains("token_ttl_secs"));
        assert!(toml::from_str::<PaywallConfig>("prize_msat = 5").is_err());
    }
}
