//! L402: paid HTTP APIs. [`paywall`] is the seller's reverse proxy
//! (a process of its own, or [`mount`]ed on `coffer serve`);
//! [`challenge`] the header grammar both sides share; [`macaroon`] the
//! tokens. The buyer's side is in the gateway (`gateway::l402`: policy,
//! payment and the agent's stored tokens) and in `coffer_client`.

pub mod challenge;
pub mod macaroon;
pub mod mount;
pub mod path;
pub mod paywall;
pub mod throttle;

/// How long a paid token lives when nothing says otherwise: what the
/// seller's paywall gives by default and what the buyer keeps a token of
/// unknown format for. A rule of the protocol both sides share, so the
/// buyer (in the gateway) does not reach into the seller's proxy for it.
pub const TOKEN_TTL_DEFAULT_SECS: u64 = 3600;
/// A paid token lives at most this long (seller and buyer alike).
pub const TOKEN_TTL_MAX_SECS: u64 = 30 * 24 * 3600;
const _: () = assert!(TOKEN_TTL_DEFAULT_SECS <= TOKEN_TTL_MAX_SECS);

/// Whether a path prefix covers a path, on whole segments: `/data` covers
/// `/data` and `/data/today`, not `/database`.
pub fn covers(scope: &str, path: &str) -> bool {
    scope == "/" || path == scope || path.strip_prefix(scope).is_some_and(|rest| rest.starts_with('/'))
}
