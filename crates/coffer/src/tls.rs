//! The process's TLS: outgoing HTTPS uses rustls with the ring provider.
//! reqwest is built without a provider of its own, so whatever builds a
//! client (the CLI, the funding backends, the egress guard, MCP, tests)
//! installs it first; installing it twice is harmless. It lives here, below
//! every layer, so that none of them reaches into another for it.

/// Installs ring as the process's default rustls provider (once; later
/// calls do nothing).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
