//! One configuration file for `coffer serve --config coffer.toml`.
//!
//! Every setting of the file is also an environment variable (`COFFER_*`)
//! and most are flags; a flag wins over the environment, which wins over
//! the file, which wins over the default. The file is read into the same
//! names the environment uses, so each setting is parsed and checked in
//! one place whichever way it came (`Limits::from_lookup`, ...).
//!
//! Secrets are never written in the file: a `*_file` key names a file that
//! holds one (read at start, trailing newline dropped), and so does the
//! environment's `COFFER_<SECRET>_FILE`. `coffer config check FILE` reads a
//! file as `serve` would and names the first wrong field; `coffer config
//! example` prints [`EXAMPLE`], which a test checks against [`SETTINGS`].

use std::collections::BTreeMap;
use std::path::Path;

/// What a key's value is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// A whole number, 0 or more.
    Number,
    Bool,
    /// A list of strings, joined by commas as the environment has it.
    List,
    /// The path of a file holding a secret; the setting is the file's text.
    SecretFile,
}

/// One setting: `[section] key`, the environment variable it stands for.
struct Setting {
    section: &'static str,
    key: &'static str,
    env: &'static str,
    kind: Kind,
}

const fn setting(section: &'static str, key: &'static str, env: &'static str, kind: Kind) -> Setting {
    Setting { section, key, env, kind }
}

/// Every setting but the limits (`[limits]`, named by `Limits::names`).
const SETTINGS: &[Setting] = &[
    setting("server", "listen", "COFFER_LISTEN", Kind::Text),
    setting("server", "data", "COFFER_DATA", Kind::Text),
    setting("server", "public_url", "COFFER_PUBLIC_URL", Kind::Text),
    setting("server", "durability", "COFFER_DURABILITY", Kind::Text),
    setting("server", "operator_token_file", "COFFER_OPERATOR_TOKEN", Kind::SecretFile),
    setting("server", "log", "COFFER_LOG", Kind::Text),
    setting("store", "database_url_file", "COFFER_DATABASE_URL", Kind::SecretFile),
    setting("lightning", "backend", "COFFER_LIGHTNING", Kind::Text),
    setting("lightning", "network", "COFFER_NETWORK", Kind::Text),
    setting("lightning", "timeout_ms", "COFFER_LIGHTNING_TIMEOUT_MS", Kind::Number),
    setting("lightning", "lnbits_url", "COFFER_LNBITS_URL", Kind::Text),
    setting("lightning", "lnbits_admin_key_file", "COFFER_LNBITS_ADMIN_KEY", Kind::SecretFile),
    setting("lightning", "lnd_url", "COFFER_LND_URL", Kind::Text),
    setting("lightning", "lnd_macaroon_file", "COFFER_LND_MACAROON_FILE", Kind::Text),
    setting("lightning", "lnd_tls_cert_file", "COFFER_LND_TLS_CERT_FILE", Kind::Text),
    setting("lightning", "cln_url", "COFFER_CLN_URL", Kind::Text),
    setting("lightning", "cln_rune_file", "COFFER_CLN_RUNE", Kind::SecretFile),
    setting("lightning", "cln_tls_cert_file", "COFFER_CLN_TLS_CERT_FILE", Kind::Text),
    setting("lightning", "nwc_uri_file", "COFFER_NWC_URI_FILE", Kind::Text),
    setting("retention", "invoices_secs", "COFFER_RETENTION_INVOICES_SECS", Kind::Number),
    setting("retention", "events_secs", "COFFER_RETENTION_EVENTS_SECS", Kind::Number),
    setting("retention", "deliveries_secs", "COFFER_RETENTION_DELIVERIES_SECS", Kind::Number),
    setting("retention", "interval_secs", "COFFER_RETENTION_INTERVAL_SECS", Kind::Number),
    setting("egress", "allow", "COFFER_EGRESS_ALLOW", Kind::List),
    setting("egress", "deny_public", "COFFER_EGRESS_DENY_PUBLIC", Kind::Bool),
    setting("fiat", "rates", "COFFER_FIAT_RATES", Kind::List),
    setting("fiat", "rate_url", "COFFER_FIAT_RATE_URL", Kind::Text),
    setting("fiat", "rate_pointer", "COFFER_FIAT_RATE_POINTER", Kind::Text),
    setting("fiat", "rate_currency", "COFFER_FIAT_RATE_CURRENCY", Kind::Text),
    setting("fiat", "rate_interval_s", "COFFER_FIAT_RATE_INTERVAL_S", Kind::Number),
    setting("fiat", "rate_max_age_s", "COFFER_FIAT_RATE_MAX_AGE_S", Kind::Number),
    setting("events", "nats_url_file", "COFFER_NATS_URL", Kind::SecretFile),
    setting("events", "redis_url_file", "COFFER_REDIS_URL", Kind::SecretFile),
    setting("events", "webhook_backoff_ms", "COFFER_WEBHOOK_BACKOFF_MS", Kind::Number),
    setting("events", "webhook_pause_after", "COFFER_WEBHOOK_PAUSE_AFTER", Kind::Number),
    setting("events", "budget_warning_percent", "COFFER_BUDGET_WARNING_PERCENT", Kind::Text),
    setting("nwc", "relays", "COFFER_NWC_RELAYS", Kind::List),
    setting("bridges", "telegram_bot_token_file", "COFFER_TELEGRAM_BOT_TOKEN", Kind::SecretFile),
    setting("bridges", "telegram_api_url", "COFFER_TELEGRAM_API_URL", Kind::Text),
    setting("bridges", "matrix_homeserver", "COFFER_MATRIX_HOMESERVER", Kind::Text),
    setting("bridges", "matrix_user", "COFFER_MATRIX_USER", Kind::Text),
    setting("bridges", "matrix_access_token_file", "COFFER_MATRIX_ACCESS_TOKEN", Kind::SecretFile),
];

/// Secrets the environment may also give as `COFFER_<NAME>_FILE`.
const SECRETS: [&str; 8] = [
    "COFFER_OPERATOR_TOKEN",
    "COFFER_DATABASE_URL",
    "COFFER_LNBITS_ADMIN_KEY",
    "COFFER_CLN_RUNE",
    "COFFER_NATS_URL",
    "COFFER_REDIS_URL",
    "COFFER_TELEGRAM_BOT_TOKEN",
    "COFFER_MATRIX_ACCESS_TOKEN",
];
/// The largest configuration or secret file read.
const FILE_LEN_MAX_BYTES: u64 = 1024 * 1024;

/// A configuration file, read into the environment's names, with the
/// field each came from (for messages).
#[derive(Default)]
pub struct Config {
    values: BTreeMap<&'static str, (String, String)>,
    /// For `coffer config check`: the file alone, whatever the
    /// environment says.
    file_only: bool,
}

impl Config {
    /// Reads `path` (none: an empty configuration). Every key must be known
    /// and of its type; a secret file must be readable.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let Some(path) = path else { return Ok(Config::default()) };
        let name = path.display();
        let text = read_small(path).map_err(|e| format!("{name}: {e}"))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
        let mut config = Config::default();
        for (section, entries) in &table {
            let entries =
                entries.as_table().ok_or_else(|| format!("{name}: `{section}` must be a table ([{section}])"))?;
            for (key, value) in entries {
                let field = format!("{section}.{key}");
                let (env, kind) = find(section, key).ok_or_else(|| format!("{name}: unknown field `{field}`"))?;
                let value = read_value(kind, value).map_err(|e| format!("{name}: `{field}`: {e}"))?;
                config.values.insert(env, (value, field));
            }
        }
        Ok(config)
    }

    /// A setting by its environment name: the environment first (with
    /// `COFFER_<SECRET>_FILE` for a secret), then the file.
    pub fn get(&self, env: &str) -> Option<String> {
        if self.file_only {
            return self.values.get(env).map(|(value, _)| value.clone());
        }
        if let Some(value) = std::env::var(env).ok().filter(|v| !v.is_empty()) {
            return Some(value);
        }
        if SECRETS.contains(&env)
            && let Some(path) = std::env::var(format!("{env}_FILE")).ok().filter(|v| !v.is_empty())
        {
            // An unreadable secret file is reported by `check_env_files`.
            return read_small(Path::new(&path)).ok().map(|t| t.trim_end_matches(['\n', '\r']).to_owned());
        }
        self.values.get(env).map(|(value, _)| value.clone())
    }

    /// The same configuration, read without the environment.
    pub fn file_only(mut self) -> Config {
        self.file_only = true;
        self
    }

    /// `message` with environment names replaced by the file's fields they
    /// came from, so that an error names what the operator wrote.
    pub fn explain(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for (env, (_, field)) in &self.values {
            if self.file_only || std::env::var(env).is_err() {
                out = out.replace(env, &format!("{field} ({env})"));
            }
        }
        out
    }
}

/// Fails on a `COFFER_<SECRET>_FILE` that cannot be read.
pub fn check_env_files() -> Result<(), String> {
    for secret in SECRETS {
        let name = format!("{secret}_FILE");
        if let Some(path) = std::env::var(&name).ok().filter(|v| !v.is_empty()) {
            read_small(Path::new(&path)).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

fn find(section: &str, key: &str) -> Option<(&'static str, Kind)> {
    if section == "limits" {
        let name = crate::limits::Limits::names().into_iter().find(|n| *n == key)?;
        return Some((leak_limit_env(name), Kind::Number));
    }
    SETTINGS.iter().find(|s| s.section == section && s.key == key).map(|s| (s.env, s.kind))
}

/// `COFFER_LIMIT_<NAME>`, as a `'static` name: one small string per limit
/// name, made once.
fn leak_limit_env(name: &'static str) -> &'static str {
    static NAMES: std::sync::OnceLock<BTreeMap<&'static str, &'static str>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        crate::limits::Limits::names()
            .into_iter()
            .map(|n| (n, &*Box::leak(crate::limits::env_name(n).into_boxed_str())))
            .collect()
    });
    names.get(name).copied().unwrap_or("COFFER_LIMIT_UNKNOWN")
}

fn read_value(kind: Kind, value: &toml::Value) -> Result<String, String> {
    match (kind, value) {
        (Kind::Text, toml::Value::String(s)) => Ok(s.clone()),
        (Kind::Number, toml::Value::Integer(n)) if *n >= 0 => Ok(n.to_string()),
        (Kind::Number, toml::Value::Integer(n)) => Err(format!("a whole number, 0 or more, not {n}")),
        (Kind::Bool, toml::Value::Boolean(b)) => Ok(b.to_string()),
        (Kind::List, toml::Value::Array(items)) => {
            let texts: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            let texts = texts.ok_or("a list of strings")?;
            if texts.iter().any(|t| t.contains(',')) {
                return Err("an entry holds a comma".into());
            }
            Ok(texts.join(","))
        }
        (Kind::SecretFile, toml::Value::String(path)) => {
            let text = read_small(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        (kind, other) => Err(format!("{}, not {}", expected(kind), other.type_str())),
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "a string",
        Kind::Number => "a whole number",
        Kind::Bool => "true or false",
        Kind::List => "a list of strings",
        Kind::SecretFile => "the path of a file (a string)",
    }
}

fn read_small(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > FILE_LEN_MAX_BYTES {
        return Err(format!("longer than {FILE_LEN_MAX_BYTES} bytes"));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// A commented example holding every setting, with its default or an
/// example value; `coffer config check` passes on it.
pub const EXAMPLE: &str = r#"# coffer.toml: `coffer serve --config coffer.toml`. Every setting is also an
# environment variable (named in each comment) and most are flags; a flag wins over
# the environment, which wins over this file. Secrets are never written here: a
# `*_file` key names a file holding one (mode 0600), as COFFER_<NAME>_FILE does.

[server]
listen = "127.0.0.1:8420"          # COFFER_LISTEN, --listen
data = "./coffer-data"             # COFFER_DATA, --data: the SQLite store and node.key (0700)
# public_url = "https://pay.example"   # COFFER_PUBLIC_URL: the origin behind a proxy
durability = "full"                # COFFER_DURABILITY: full (synced to disk) or process
# operator_token_file = "/etc/coffer/operator-token"   # COFFER_OPERATOR_TOKEN
log = "info"                       # COFFER_LOG (tracing filter)

[store]
# database_url_file = "/etc/coffer/database-url"   # COFFER_DATABASE_URL: PostgreSQL instead of SQLite

[lightning]
backend = "dev"                    # COFFER_LIGHTNING: dev, lnbits, lnd, cln, nwc
network = "regtest"                # COFFER_NETWORK: bitcoin, testnet, signet, regtest
timeout_ms = 30000                 # COFFER_LIGHTNING_TIMEOUT_MS
# lnbits_url = "https://lnbits.example"             # COFFER_LNBITS_URL
# lnbits_admin_key_file = "/etc/coffer/lnbits-key"  # COFFER_LNBITS_ADMIN_KEY
# lnd_url = "https://127.0.0.1:8080"                # COFFER_LND_URL
# lnd_macaroon_file = "/etc/coffer/admin.macaroon"  # COFFER_LND_MACAROON_FILE
# lnd_tls_cert_file = "/etc/coffer/lnd-tls.cert"    # COFFER_LND_TLS_CERT_FILE
# cln_url = "https://127.0.0.1:3010"                # COFFER_CLN_URL
# cln_rune_file = "/etc/coffer/cln-rune"            # COFFER_CLN_RUNE
# cln_tls_cert_file = "/etc/coffer/cln-ca.pem"      # COFFER_CLN_TLS_CERT_FILE
# nwc_uri_file = "/etc/coffer/nwc-uri"              # COFFER_NWC_URI_FILE

[limits]                           # COFFER_LIMIT_<NAME>; 429 with Retry-After past each
writes_per_second_per_key = 1000
writes_per_second_per_agent = 2000
invoices_open_per_agent = 10000
room_messages_per_minute = 600
rooms_per_agent = 1000
room_members = 256
holds_pending_per_agent = 100
subagents_per_parent = 1000
tree_depth = 8
paywall_challenges_per_minute_per_client = 120
streams_per_key = 8
streams_total = 1024
connections_per_client = 512
connections_total = 8192
connections_reserved = 64
limit_hits_per_breaker_denial = 10
escrows_open_per_agent = 1000
sessions_open_per_agent = 1000
header_read_timeout_ms = 10000
idle_timeout_ms = 120000

[retention]
invoices_secs = 604800             # COFFER_RETENTION_INVOICES_SECS: expired invoices kept 7 days
events_secs = 2592000              # COFFER_RETENTION_EVENTS_SECS: events, 30 days (and until every consumer read them)
deliveries_secs = 604800           # COFFER_RETENTION_DELIVERIES_SECS: the webhook delivery log, 7 days
interval_secs = 3600               # COFFER_RETENTION_INTERVAL_SECS: how often the pruner runs

[egress]                           # where requests on someone's behalf may go
allow = []                         # COFFER_EGRESS_ALLOW: private hosts or CIDRs allowed, host[:port]
deny_public = false                # COFFER_EGRESS_DENY_PUBLIC

[fiat]                             # prices of one bitcoin, for policy limits stated in a currency
rates = []                         # COFFER_FIAT_RATES: fixed prices, e.g. ["USD:95000.00", "EUR:88000"]
# rate_url = "https://prices.example/btc"   # COFFER_FIAT_RATE_URL: or poll a JSON price (through the egress guard)
# rate_pointer = "/bitcoin/usd"             # COFFER_FIAT_RATE_POINTER: JSON pointer to the price in its answer
# rate_currency = "USD"                     # COFFER_FIAT_RATE_CURRENCY: the currency it prices
rate_interval_s = 60               # COFFER_FIAT_RATE_INTERVAL_S: how often it is polled
rate_max_age_s = 600               # COFFER_FIAT_RATE_MAX_AGE_S: an older price refuses payments under such limits

[events]
# nats_url_file = "/etc/coffer/nats-url"     # COFFER_NATS_URL: publish to NATS JetStream
# redis_url_file = "/etc/coffer/redis-url"   # COFFER_REDIS_URL: publish to Redis Streams
webhook_backoff_ms = 1000          # COFFER_WEBHOOK_BACKOFF_MS, --webhook-backoff-ms
webhook_pause_after = 10           # COFFER_WEBHOOK_PAUSE_AFTER, --webhook-pause-after
budget_warning_percent = "80,95"   # COFFER_BUDGET_WARNING_PERCENT: budget.warning at these % of each budget ("off": none)

[nwc]
relays = []                        # COFFER_NWC_RELAYS: ws:// or wss:// relays of the NWC wallet service

[bridges]                          # rooms mirrored into messengers (PUT /v1/rooms/{room}/bridges/...)
# telegram_bot_token_file = "/etc/coffer/telegram-token"   # COFFER_TELEGRAM_BOT_TOKEN
# telegram_api_url = "https://api.telegram.org"             # COFFER_TELEGRAM_API_URL
# matrix_homeserver = "https://matrix.example"               # COFFER_MATRIX_HOMESERVER
# matrix_user = "@coffer:matrix.example"                     # COFFER_MATRIX_USER
# matrix_access_token_file = "/etc/coffer/matrix-token"      # COFFER_MATRIX_ACCESS_TOKEN
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_names_every_setting() {
        for s in SETTINGS {
            let line = format!("{} = ", s.key);
            assert!(EXAMPLE.contains(&format!("[{}]", s.section)), "[{}] is missing", s.section);
            assert!(EXAMPLE.contains(&line), "{}.{} is missing from the example", s.section, s.key);
            assert!(EXAMPLE.contains(s.env), "{} is not named in the example", s.env);
        }
        for name in crate::limits::Limits::names() {
            assert!(EXAMPLE.contains(&format!("\n{name} = ")), "limits.{name} is missing from the example");
        }
    }

    #[test]
    fn the_examples_limits_are_the_defaults() {
        let table: toml::Table = toml::from_str(EXAMPLE).expect("the example parses");
        let limits = table["limits"].as_table().expect("a table");
        let read = crate::limits::Limits::from_lookup(|env| {
            let key = env.strip_prefix("COFFER_LIMIT_")?.to_ascii_lowercase();
            limits.get(&key).and_then(toml::Value::as_integer).map(|n| n.to_string())
        });
        assert_eq!(read, Ok(crate::limits::Limits::default()));
    }
}
