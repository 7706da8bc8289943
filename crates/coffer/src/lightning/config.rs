//! Which funding source, from the environment. Secrets come from a variable
//! or from a file named by `<NAME>_FILE`, and are never printed.
//!
//! - `COFFER_LIGHTNING`: `dev` (default), `lnbits`, `lnd`, `cln`, `nwc`.
//! - `COFFER_NETWORK`: `bitcoin`, `testnet`, `signet`, `regtest` (default:
//!   `regtest` in dev, `bitcoin` with a backend).
//! - `COFFER_LIGHTNING_TIMEOUT_MS`: the bound on every backend call (default 30 000).
//! - LNbits: `COFFER_LNBITS_URL`, `COFFER_LNBITS_ADMIN_KEY`.
//! - LND: `COFFER_LND_URL`, `COFFER_LND_MACAROON` (hex; or `_FILE`, the
//!   binary macaroon), `COFFER_LND_TLS_CERT_FILE` (its `tls.cert`, pinned).
//! - Core Lightning: `COFFER_CLN_URL`, `COFFER_CLN_RUNE`, and
//!   `COFFER_CLN_TLS_CERT_FILE` (pinned) when clnrest uses its own certificate.
//! - Nostr Wallet Connect: `COFFER_NWC_URI` (or `_FILE`), the wallet's
//!   `nostr+walletconnect://…` string; it holds the connection's secret key.

use super::FundingSource;
use super::cln::Cln;
use super::lnbits::Lnbits;
use super::lnd::Lnd;
use super::nwc::{Nwc, NwcUri};
use crate::payment::bolt11::Network;
use crate::secrets::Secret;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT_DEFAULT_MS: u64 = 30_000;
const TIMEOUT_MAX_MS: u64 = 600_000;
const _: () = assert!(TIMEOUT_DEFAULT_MS <= TIMEOUT_MAX_MS);
/// The largest secret or certificate file read.
const SECRET_FILE_LEN_MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
pub enum Backend {
    Dev,
    Lnbits {
        url: String,
        admin_key: Secret,
    },
    Lnd {
        url: String,
        macaroon_hex: Secret,
        tls_cert_pem: Option<Vec<u8>>,
    },
    Cln {
        url: String,
        rune: Secret,
        tls_cert_pem: Option<Vec<u8>>,
    },
    /// `relay_origin` is what the start-up line shows (no secret in it).
    Nwc {
        uri: NwcUri,
        relay_origin: String,
    },
}

#[derive(Debug)]
pub struct LightningConfig {
    pub backend: Backend,
    pub network: Network,
    pub timeout_ms: u64,
}

impl LightningConfig {
    pub fn dev() -> LightningConfig {
        LightningConfig { backend: Backend::Dev, network: Network::Regtest, timeout_ms: TIMEOUT_DEFAULT_MS }
    }

    pub fn from_env() -> Result<LightningConfig, String> {
        LightningConfig::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads the settings through `var` (the environment, or a test's map).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<LightningConfig, String> {
        let kind = var("COFFER_LIGHTNING").unwrap_or_else(|| "dev".into());
        let backend = match kind.as_str() {
            "dev" => Backend::Dev,
            "lnbits" => Backend::Lnbits {
                url: url(&var, "COFFER_LNBITS_URL")?,
                admin_key: secret(&var, "COFFER_LNBITS_ADMIN_KEY")?,
            },
            "lnd" => Backend::Lnd {
                url: url(&var, "COFFER_LND_URL")?,
                macaroon_hex: lnd_macaroon(&var)?,
                tls_cert_pem: var("COFFER_LND_TLS_CERT_FILE").map(|p| read_file(&p)).transpose()?,
            },
            "cln" => Backend::Cln {
                url: url(&var, "COFFER_CLN_URL")?,
                rune: secret(&var, "COFFER_CLN_RUNE")?,
                tls_cert_pem: var("COFFER_CLN_TLS_CERT_FILE").map(|p| read_file(&p)).transpose()?,
            },
            "nwc" => nwc(&var)?,
            other => return Err(format!("COFFER_LIGHTNING={other}: expected dev, lnbits, lnd, cln or nwc")),
        };
        let network = match var("COFFER_NETWORK").as_deref() {
            None if matches!(backend, Backend::Dev) => Network::Regtest,
            None | Some("bitcoin") | Some("mainnet") => Network::Bitcoin,
            Some("testnet") => Network::Testnet,
            Some("signet") => Network::Signet,
            Some("regtest") => Network::Regtest,
            Some(other) => return Err(format!("COFFER_NETWORK={other}: expected bitcoin, testnet, signet or regtest")),
        };
        let timeout_ms = match var("COFFER_LIGHTNING_TIMEOUT_MS") {
            None => TIMEOUT_DEFAULT_MS,
            Some(text) => text
                .parse::<u64>()
                .ok()
                .filter(|ms| (1..=TIMEOUT_MAX_MS).contains(ms))
                .ok_or_else(|| format!("COFFER_LIGHTNING_TIMEOUT_MS: 1 to {TIMEOUT_MAX_MS} milliseconds"))?,
        };
        Ok(LightningConfig { backend, network, timeout_ms })
    }

    /// The backend's name, for the start-up line and the invoice rows.
    pub fn name(&self) -> &'static str {
        match self.backend {
            Backend::Dev => "dev",
            Backend::Lnbits { .. } => "lnbits",
            Backend::Lnd { .. } => "lnd",
            Backend::Cln { .. } => "cln",
            Backend::Nwc { .. } => "nwc",
        }
    }

    /// Where the backend is (its URL: never a secret).
    pub fn location(&self) -> Option<&str> {
        match &self.backend {
            Backend::Dev => None,
            Backend::Lnbits { url, .. } | Backend::Lnd { url, .. } | Backend::Cln { url, .. } => Some(url),
            Backend::Nwc { relay_origin, .. } => Some(relay_origin),
        }
    }

    /// The funding source, or `None` in dev mode.
    pub fn build(&self) -> Result<Option<Arc<dyn FundingSource>>, String> {
        let timeout = Duration::from_millis(self.timeout_ms);
        let source: Arc<dyn FundingSource> = match &self.backend {
            Backend::Dev => return Ok(None),
            Backend::Lnbits { url, admin_key } => Arc::new(Lnbits::new(url, admin_key.clone(), client(timeout, None)?)),
            Backend::Lnd { url, macaroon_hex, tls_cert_pem } => {
                Arc::new(Lnd::new(url, macaroon_hex.clone(), client(timeout, tls_cert_pem.as_deref())?))
            }
            Backend::Cln { url, rune, tls_cert_pem } => {
                Arc::new(Cln::new(url, rune.clone(), client(timeout, tls_cert_pem.as_deref())?))
            }
            Backend::Nwc { uri, .. } => Arc::new(Nwc::new(uri, timeout)?),
        };
        Ok(Some(source))
    }
}

/// An HTTP client bounded by `timeout`; with a certificate, it trusts that
/// one certificate only (LND's and clnrest's are self-signed).
pub fn client(timeout: Duration, pinned_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    // reqwest is built without a TLS provider of its own (see
    // DEPENDENCIES.md); installing ring twice is harmless.
    crate::tls::install_crypto_provider();
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    let builder = match pinned_pem {
        Some(pem) => builder.tls_backend_preconfigured(super::lnd::pinned_tls(pem)?),
        None => builder,
    };
    builder.build().map_err(|e| format!("building the backend's HTTP client: {e}"))
}

/// A URL of a backend: https, or http to this machine only (a secret must
/// not cross a network in the clear).
fn url(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, String> {
    let value = var(name).ok_or_else(|| format!("{name} is not set"))?;
    let parsed = reqwest::Url::parse(&value).map_err(|e| format!("{name}: not a URL ({e})"))?;
    let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(value),
        "http" if local => Ok(value),
        _ => Err(format!("{name}: use https (http only to 127.0.0.1 or localhost)")),
    }
}

fn secret(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Secret, String> {
    if let Some(value) = var(name) {
        return Ok(Secret::new(value.trim().to_owned()));
    }
    let file_var = format!("{name}_FILE");
    let path = var(&file_var).ok_or_else(|| format!("set {name} or {file_var}"))?;
    let bytes = read_file(&path)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{file_var}: the file is not text"))?;
    Ok(Secret::new(text.trim().to_owned()))
}

/// The NWC connection string, from the variable or its file.
fn nwc(var: &impl Fn(&str) -> Option<String>) -> Result<Backend, String> {
    let text = secret(var, "COFFER_NWC_URI")?;
    let uri = NwcUri::parse(text.expose()).map_err(|e| format!("COFFER_NWC_URI: {e}"))?;
    let relay_origin = uri.relay_origin();
    Ok(Backend::Nwc { uri, relay_origin })
}

/// LND's macaroon: hex in the variable, or the binary file `lncli` uses.
fn lnd_macaroon(var: &impl Fn(&str) -> Option<String>) -> Result<Secret, String> {
    if let Some(value) = var("COFFER_LND_MACAROON") {
        return Ok(Secret::new(value.trim().to_owned()));
    }
    let path = var("COFFER_LND_MACAROON_FILE").ok_or("set COFFER_LND_MACAROON or COFFER_LND_MACAROON_FILE")?;
    Ok(Secret::new(hex::encode(read_file(&path)?)))
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(SECRET_FILE_LEN_MAX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() as u64 > SECRET_FILE_LEN_MAX_BYTES {
        return Err(format!("{path}: larger than {SECRET_FILE_LEN_MAX_BYTES} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<LightningConfig, String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LightningConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn dev_is_the_default_on_regtest() {
        let c = config(&[]).unwrap();
        assert_eq!((c.name(), c.network), ("dev", Network::Regtest));
    }

    #[test]
    fn lnbits_needs_its_url_and_key_and_never_prints_the_key() {
        assert!(config(&[("COFFER_LIGHTNING", "lnbits")]).unwrap_err().contains("COFFER_LNBITS_URL"));
        let c = config(&[
            ("COFFER_LIGHTNING", "lnbits"),
            ("COFFER_LNBITS_URL", "http://127.0.0.1:5010"),
            ("COFFER_LNBITS_ADMIN_KEY", "sekrit-admin-key"),
        ])
        .unwrap();
        assert_eq!((c.name(), c.network), ("lnbits", Network::Bitcoin));
        assert!(!format!("{c:?}").contains("sekrit"), "{c:?}");
    }

    #[test]
    fn a_secret_never_goes_over_plain_http_to_another_machine() {
        let err = config(&[
            ("COFFER_LIGHTNING", "lnbits"),
            ("COFFER_LNBITS_URL", "http://example.com"),
            ("COFFER_LNBITS_ADMIN_KEY", "k"),
        ])
        .unwrap_err();
        assert!(err.contains("https"), "{err}");
    }

    #[test]
    fn nwc_needs_its_string_and_never_prints_the_secret() {
        assert!(config(&[("COFFER_LIGHTNING", "nwc")]).unwrap_err().contains("COFFER_NWC_URI"));
        let secret = "71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c";
        let wallet = "b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4";
        let uri = format!("nostr+walletconnect://{wallet}?relay=wss://relay.example:444/nwc&secret={secret}");
        let c = config(&[("COFFER_LIGHTNING", "nwc"), ("COFFER_NWC_URI", &uri)]).unwrap();
        assert_eq!((c.name(), c.network, c.location()), ("nwc", Network::Bitcoin, Some("wss://relay.example:444")));
        assert!(!format!("{c:?}").contains(&secret[..16]), "{c:?}");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("{uri}\n")).unwrap();
        let path = file.path().to_str().unwrap();
        let from_file = config(&[("COFFER_LIGHTNING", "nwc"), ("COFFER_NWC_URI_FILE", path)]).unwrap();
        assert_eq!(from_file.location(), Some("wss://relay.example:444"));
        let bad = config(&[("COFFER_LIGHTNING", "nwc"), ("COFFER_NWC_URI", &uri.replace("wss", "https"))]);
        assert!(bad.unwrap_err().starts_with("COFFER_NWC_URI: "));
    }

    #[test]
    fn unknown_backends_and_networks_are_refused() {
        assert!(config(&[("COFFER_LIGHTNING", "eclair")]).is_err());
        assert!(config(&[("COFFER_NETWORK", "moon")]).is_err());
        assert!(config(&[("COFFER_LIGHTNING_TIMEOUT_MS", "0")]).is_err());
    }
}
