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

/// Whether a path prefix covers a path, on whole segments: `/data` covers
/// `/data` and `/data/today`, not `/database`.
pub fn covers(scope: &str, path: &str) -> bool {
    scope == "/" || path == scope || path.strip_prefix(scope).is_some_and(|rest| rest.starts_with('/'))
}
