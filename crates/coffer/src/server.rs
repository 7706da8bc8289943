//! Building and running a gateway: the builder gathers the settings, opens
//! the store and the node key, and settles the operator token.

use crate::connections::IsOperator;
use crate::error::Error;
use crate::events::webhook::WebhookSettings;
use crate::gateway::{Clock, DevClock, Gateway, Settings, SystemClock};
use crate::l402::mount::Mounts;
use crate::l402::paywall::Paywall;
use crate::payment::bolt11::{Network, NodeSigner};
use crate::secrets::{self, SecretDigest};
use crate::store::Store;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::backup::{BackupReport, RestoreReport};
use crate::store::sqlite::{Durability, SqliteStore};
use axum::Router;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DEFAULT_DATA_DIR: &str = "./coffer-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8420";
const DATABASE_FILE: &str = "coffer.sqlite3";
const NODE_KEY_FILE: &str = "node.key";
/// A held payment waits this long for a person at most.
const APPROVAL_TTL_MS: i64 = 24 * 3600 * 1000;
/// How often held payments and invoices past their time are expired.
const EXPIRY_INTERVAL_MS: u64 = 1_000;
// A held payment is expired within a small part of its time.
const _: () = assert!((EXPIRY_INTERVAL_MS as i64) < APPROVAL_TTL_MS);
/// Relays the NWC wallet service listens on at most (each is a websocket
/// and a copy of every notification).
const NWC_RELAYS_MAX: usize = 8;
/// How often the backend is asked about pending payments and watched
/// invoices.
const LIGHTNING_POLL_INTERVAL_MS: u64 = 1_000;
/// At shutdown, after the requests in flight finished (within
/// [`crate::connections::SHUTDOWN_GRACE_MS`]), the writes queued for the
/// store get this long to be committed.
pub const STORE_DRAIN_MS: u64 = 5_000;
/// The process exits at most this long after SIGTERM (or SIGINT), whatever
/// still runs: the bound a service manager waits for (the systemd unit's
/// `TimeoutStopSec` is above it). A request not answered by then was never
/// acknowledged, and a write the store had not committed is rolled back,
/// as at a crash.
pub const SHUTDOWN_BOUND_MS: u64 = 20_000;
// The grace and the drain fit in the bound, with room for the rest.
const _: () = assert!(crate::connections::SHUTDOWN_GRACE_MS + STORE_DRAIN_MS < SHUTDOWN_BOUND_MS);

/// How the operator token was settled at start.
#[derive(Debug)]
pub enum OperatorToken {
    /// Set from the environment (`COFFER_OPERATOR_TOKEN`): the first one
    /// stored, or the same as the one stored.
    FromEnvironment,
    /// Set from the environment, and different from the token stored by an
    /// earlier start, which it replaced: the old token no longer works.
    ReplacedFromEnvironment,
    /// Created now: the only time it is shown.
    Created(String),
    /// Kept from an earlier start.
    Existing,
}

pub struct GatewayBuilder {
    data_dir: PathBuf,
    /// A `postgres://` URL: the shared store instead of SQLite in `data_dir`.
    database_url: Option<String>,
    operator_token: Option<String>,
    durability: Durability,
    lightning: crate::lightning::LightningConfig,
    limits: crate::limits::Limits,
    retention: crate::gateway::retention::Retention,
    egress: crate::egress::Egress,
    public_url: Option<String>,
    nwc_relays: Vec<String>,
    fiat: crate::fiat::FiatConfig,
    /// The thresholds of `budget.warning` (`COFFER_BUDGET_WARNING_PERCENT`).
    budget_warnings: coffer_core::policy::WarningThresholds,
    clock: Arc<dyn Clock>,
    /// Run on a [`DevClock`] the operator may move forward (dev mode only).
    dev_clock: bool,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        GatewayBuilder {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            operator_token: None,
            durability: Durability::default(),
            lightning: crate::lightning::LightningConfig::dev(),
            limits: crate::limits::Limits::default(),
            retention: crate::gateway::retention::Retention::default(),
            egress: crate::egress::Egress::default(),
            public_url: None,
            nwc_relays: Vec::new(),
            fiat: crate::fiat::FiatConfig::default(),
            budget_warnings: coffer_core::policy::WarningThresholds::default(),
            clock: Arc::new(SystemClock),
            dev_clock: false,
        }
    }
}

impl GatewayBuilder {
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    pub fn database_url(mut self, url: Option<String>) -> Self {
        self.database_url = url.filter(|u| !u.is_empty());
        self
    }

    pub fn operator_token(mut self, token: Option<String>) -> Self {
        self.operator_token = token.filter(|t| !t.is_empty());
        self
    }

    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Bounds on what callers may create or hold open (default:
    /// `Limits::default()`).
    pub fn limits(mut self, limits: crate::limits::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long expired invoices, events and webhook deliveries are kept.
    pub fn retention(mut self, retention: crate::gateway::retention::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Where requests made on someone's behalf may go (default: public
    /// addresses only).
    pub fn egress(mut self, egress: crate::egress::Egress) -> Self {
        self.egress = egress;
        self
    }

    /// The origin clients address the gateway by, behind a proxy (see
    /// `Settings::public_url`): `https://host[:port]`, no path.
    pub fn public_url(mut self, url: Option<String>) -> Self {
        self.public_url = url.filter(|u| !u.is_empty());
        self
    }

    /// The relays of the NWC wallet service (`COFFER_NWC_RELAYS`): each a
    /// `ws://` or `wss://` URL; none (the default) leaves NWC off.
    pub fn nwc_relays(mut self, relays: Vec<String>) -> Self {
        self.nwc_relays = relays;
        self
    }

    /// Bitcoin prices for limits stated in a currency (default: none).
    /// Warn at these percentages of every budget (default 80 and 95).
    pub fn budget_warnings(mut self, thresholds: coffer_core::policy::WarningThresholds) -> Self {
        self.budget_warnings = thresholds;
        self
    }

    pub fn fiat(mut self, fiat: crate::fiat::FiatConfig) -> Self {
        self.fiat = fiat;
        self
    }

    /// The Lightning backend and network (default: dev, regtest).
    pub fn lightning(mut self, config: crate::lightning::LightningConfig) -> Self {
        self.lightning = config;
        self
    }

    /// Where the gateway takes the time from (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs the gateway on a [`DevClock`] that the operator may move
    /// forward (`COFFER_DEV_CLOCK=1`), for tests of expiry. Only in dev mode:
    /// with a Lightning backend the build is refused.
    pub fn dev_clock(mut self, on: bool) -> Self {
        self.dev_clock = on;
        self
    }

    /// Checks the settings without opening or creating anything (`coffer
    /// config check` too); the public URL as an origin.
    pub fn check(&self) -> Result<Option<String>, Error> {
        if self.dev_clock && !matches!(self.lightning.backend, crate::lightning::config::Backend::Dev) {
            return Err(Error::InvalidField {
                field: "COFFER_DEV_CLOCK",
                detail: "a clock that can be moved runs only in dev mode, without a Lightning backend".into(),
            });
        }
        if let Some(token) = &self.operator_token {
            secrets::check_operator_token(token)
                .map_err(|detail| Error::InvalidField { field: "COFFER_OPERATOR_TOKEN", detail })?;
        }
        self.limits.check().map_err(|detail| Error::InvalidField { field: "limits", detail })?;
        check_nwc_relays(&self.nwc_relays)?;
        self.public_url.as_deref().map(check_public_url).transpose()
    }

    pub async fn build(self) -> Result<(Gateway, OperatorToken), Error> {
        // Checked before anything is created: a refused start changes nothing.
        let public_url = self.check()?;
        create_private_dir(&self.data_dir)?;
        let funding = self.lightning.build().map_err(Error::Internal)?;
        let store: Arc<dyn Store> = match &self.database_url {
            Some(url) => Arc::new(open_postgres(url).await?),
            None => Arc::new(SqliteStore::open(&self.data_dir.join(DATABASE_FILE), self.durability)?),
        };
        let network: Network = self.lightning.network;
        let settings = Settings {
            network,
            dev_mode: true,
            approval_ttl_ms: APPROVAL_TTL_MS,
            limits: self.limits,
            retention: self.retention,
            egress: self.egress,
            public_url,
            nwc_relays: self.nwc_relays,
            fiat: self.fiat,
            budget_warnings: Arc::new(self.budget_warnings),
        };
        let node = NodeSigner::load_or_create(&self.data_dir.join(NODE_KEY_FILE), settings.network)
            .map_err(|e| Error::internal("loading the node key", e))?;
        let (operator, token) = settle_operator_token(store.as_ref(), self.operator_token).await?;
        let gateway = Gateway::new(store, node, settings, operator).await?;
        let gateway = if self.dev_clock {
            gateway.with_dev_clock(Arc::new(DevClock::default()))
        } else {
            gateway.with_clock(self.clock)
        };
        let gateway = match funding {
            Some(funding) => {
                let timeout = std::time::Duration::from_millis(self.lightning.timeout_ms);
                // Lightning addresses name anyone's host: guarded.
                let builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
                let lnurl_http = gateway
                    .settings()
                    .egress
                    .client(builder, crate::egress::Redirects::None)
                    .map_err(Error::Internal)?;
                gateway.with_funding(funding, self.lightning.timeout_ms, lnurl_http)
            }
            None => gateway,
        };
        Ok((gateway, token))
    }
}

/// Opens a store without starting a gateway, for `coffer audit`: the
/// A public URL as an origin: `http(s)://host[:port]`, without a trailing
/// slash, path, query or credentials.
fn check_public_url(url: &str) -> Result<String, Error> {
    let bad = |detail: &str| Error::InvalidField { field: "COFFER_PUBLIC_URL", detail: detail.into() };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("an http:// or https:// URL with a host"));
    }
    if parsed.path() != "/" || parsed.query().is_some() || !parsed.username().is_empty() || parsed.password().is_some()
    {
        return Err(bad("an origin only: scheme, host and port, no path, query or credentials"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// The relays of the NWC wallet service: a few `ws://` or `wss://` URLs
/// with a host.
fn check_nwc_relays(relays: &[String]) -> Result<(), Error> {
    let bad = |detail: String| Error::InvalidField { field: "COFFER_NWC_RELAYS", detail };
    if relays.len() > NWC_RELAYS_MAX {
        return Err(bad(format!("at most {NWC_RELAYS_MAX} relays")));
    }
    for relay in relays {
        let parsed = reqwest::Url::parse(relay).map_err(|e| bad(format!("{relay}: {e}")))?;
        if !matches!(parsed.scheme(), "ws" | "wss") || parsed.host_str().is_none() {
            return Err(bad(format!("{relay}: a ws:// or wss:// URL with a host")));
        }
    }
    Ok(())
}

/// PostgreSQL database at `database_url`, or else the embedded store of a
/// data folder.
pub async fn open_store(data_dir: &Path, database_url: Option<&str>) -> Result<Arc<dyn Store>, Error> {
    if let Some(url) = database_url.filter(|u| !u.is_empty()) {
        return Ok(Arc::new(open_postgres(url).await?));
    }
    let path = data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Err(Error::NotFound("database in that data folder"));
    }
    Ok(Arc::new(SqliteStore::open(&path, Durability::Process)?))
}

/// Writes an online backup of the embedded store in `data_dir` to `out`,
/// with the node key if `with_node_key` (see `store::sqlite::backup`).
pub fn backup(data_dir: &Path, out: &Path, with_node_key: bool) -> Result<BackupReport, Error> {
    let node_key = match with_node_key {
        false => None,
        true => Some(read_node_key(&data_dir.join(NODE_KEY_FILE))?),
    };
    crate::store::sqlite::backup::backup(&data_dir.join(DATABASE_FILE), out, node_key.as_ref().map(|k| &k[..]))
}

/// Restores a backup into `data_dir`, which must hold no database; the node
/// key the backup carries is written there (0600), unless the same key is
/// there already. Returns the report, and whether the folder now has a node
/// key at all.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<(RestoreReport, bool), Error> {
    create_private_dir(data_dir)?;
    let key_path = data_dir.join(NODE_KEY_FILE);
    let report = crate::store::sqlite::backup::restore(backup, &data_dir.join(DATABASE_FILE))?;
    if let Some(key) = report.node_key {
        match key_path.exists() {
            true if read_node_key(&key_path)? == key => {}
            true => {
                return Err(Error::InvalidField {
                    field: "--data",
                    detail: "the folder's node.key differs from the backup's: move it away and restore again".into(),
                });
            }
            false => secrets::write_private_file(&key_path, hex::encode(key).as_bytes())
                .map_err(|e| Error::internal("writing the node key", e))?,
        }
    }
    Ok((report, key_path.exists()))
}

/// The node key file's 32 bytes.
fn read_node_key(path: &Path) -> Result<[u8; 32], Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::internal("reading the node key", e))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| Error::Internal("node.key is not 64 hex digits".into()))?;
    Ok(key)
}

/// Only `postgres://` (or `postgresql://`) URLs name a PostgreSQL store.
async fn open_postgres(url: &str) -> Result<PostgresStore, Error> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::InvalidField {
            field: "database",
            detail: "a PostgreSQL URL starts with postgres:// (without it, coffer uses SQLite in --data)".into(),
        });
    }
    PostgresStore::open(url).await
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    secrets::create_private_dir(dir).map_err(|e| Error::internal("creating the data folder", e))
}

async fn settle_operator_token(
    store: &dyn Store,
    from_env: Option<String>,
) -> Result<(SecretDigest, OperatorToken), Error> {
    let stored = store.read(|tx| tx.operator_digest()).await?;
    if let Some(token) = from_env {
        // The environment wins over the store: an operator who lost the
        // token sets a new one and restarts. Said at start, since the old
        // token stops working.
        let digest = SecretDigest::of(&token);
        let settled = match stored {
            Some(old) if old == digest => return Ok((digest, OperatorToken::FromEnvironment)),
            Some(_) => OperatorToken::ReplacedFromEnvironment,
            None => OperatorToken::FromEnvironment,
        };
        store.write(move |tx| tx.set_operator_digest(&digest)).await?;
        return Ok((digest, settled));
    }
    if let Some(digest) = stored {
        return Ok((digest, OperatorToken::Existing));
    }
    let token = secrets::new_secret(secrets::OPERATOR_TOKEN_PREFIX);
    let digest = SecretDigest::of(&token);
    store.write(move |tx| tx.set_operator_digest(&digest)).await?;
    Ok((digest, OperatorToken::Created(token)))
}

/// Where the outbox goes besides the HTTP API: webhooks always, the buses
/// when configured.
#[derive(Clone, Debug, Default)]
pub struct EventSinks {
    /// `COFFER_NATS_URL`: publish to NATS JetStream.
    pub nats_url: Option<String>,
    /// `COFFER_REDIS_URL`: publish to Redis Streams.
    pub redis_url: Option<String>,
    pub webhooks: WebhookSettings,
    /// The messengers rooms are bridged to (`crate::bridge`).
    pub bridges: Vec<Arc<dyn crate::bridge::Messenger>>,
}

/// Serves the HTTP API, and the mounted paywalls, until SIGINT or SIGTERM;
/// then stops accepting, lets the requests in flight finish, commits what
/// the store's queue holds and returns, all within [`SHUTDOWN_BOUND_MS`].
/// `on_ready` learns the bound address (the port may have been 0).
pub async fn serve(
    gateway: Gateway,
    listen: SocketAddr,
    sinks: EventSinks,
    paywalls: Mounts,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let gateway = Arc::new(gateway);
    let paywalls =
        paywalls.start(&gateway).await.map_err(|detail| Error::InvalidField { field: "--paywall", detail })?;
    // Payments left pending by an earlier run are asked about first, before
    // any request can touch their wallets.
    match gateway.resolve_pending().await {
        Ok(0) => {}
        Ok(open) => tracing::warn!(open, "payments still pending at the backend after the start-up check"),
        Err(e) => tracing::warn!(error = %e, "checking pending payments at start failed; will retry"),
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::internal(&format!("listening on {listen}"), e))?;
    let addr = listener.local_addr().map_err(|e| Error::internal("reading the bound address", e))?;
    start_event_sinks(&gateway, sinks)?;
    crate::nwc::start(&gateway)?;
    crate::fiat::start(&gateway).map_err(Error::Internal)?;
    on_ready(addr);
    tokio::spawn(expire_due(Arc::clone(&gateway)));
    tokio::spawn(crate::gateway::retention::run(Arc::clone(&gateway)));
    if gateway.lightning_name() != "dev" {
        tokio::spawn(crate::gateway::run_background(Arc::clone(&gateway), LIGHTNING_POLL_INTERVAL_MS));
    }
    let limits = gateway.settings().limits.clone();
    let operator = Arc::clone(&gateway);
    let is_operator: IsOperator = Arc::new(move |secret| operator.is_operator(secret));
    let store_gateway = Arc::clone(&gateway);
    let app = app(gateway, addr, paywalls)?;
    let stopping = async {
        shutdown_signal().await;
        tracing::info!("stopping: finishing the requests in flight");
        exit_at_bound();
    };
    crate::connections::serve(listener, app, &limits, is_operator, stopping).await;
    drain_store(&store_gateway).await;
    Ok(())
}

/// Ends the process [`SHUTDOWN_BOUND_MS`] from now if it still runs: the
/// runtime waits, once `serve` returned, for every blocking task (a DNS
/// lookup of a webhook's host, say), however long it takes.
fn exit_at_bound() {
    let watchdog = std::thread::Builder::new().name("coffer-shutdown-bound".into()).spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(SHUTDOWN_BOUND_MS));
        eprintln!("coffer: still running {SHUTDOWN_BOUND_MS} ms after the stop signal: exiting now");
        std::process::exit(1);
    });
    if let Err(e) = watchdog {
        tracing::warn!(error = %e, "cannot bound the shutdown's time");
    }
}

/// Waits until every write queued for the store before now has been
/// answered (committed, or failed), for [`STORE_DRAIN_MS`] at most: a
/// write of its own goes through the queue behind them. Writes the
/// background tasks queue later may be cut by the exit; what they did is
/// then done again at the next start.
async fn drain_store(gateway: &Gateway) {
    let barrier = gateway.store().write(|_| Ok(()));
    match tokio::time::timeout(std::time::Duration::from_millis(STORE_DRAIN_MS), barrier).await {
        Ok(Ok(())) => tracing::info!("stopped: the store's queue is committed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "stopping: the store's last write failed"),
        Err(_) => tracing::warn!("stopping: writes still queued for the store after {STORE_DRAIN_MS} ms are dropped"),
    }
}

/// The whole HTTP surface of a gateway listening on `local`, composed in
/// this one place: the API and the web UI with the routers that share their
/// rules (MCP at `/mcp`), then the paywalls, mounted after those rules so
/// that their answers pass as they are.
pub fn app(gateway: Arc<Gateway>, local: SocketAddr, paywalls: Vec<(String, Arc<Paywall>)>) -> Result<Router, Error> {
    let mcp = crate::mcp::http::router(Arc::clone(&gateway), local)
        .map_err(|e| Error::internal("making the MCP loopback client", e))?;
    Ok(crate::l402::mount::attach(crate::http::router(gateway, mcp), paywalls))
}

/// Starts the outbox's consumers. Each holds a lease in the store while it
/// works, named for this process, so that of several instances on one
/// database one at a time delivers.
fn start_event_sinks(gateway: &Arc<Gateway>, sinks: EventSinks) -> Result<(), Error> {
    let owner = secrets::new_id("inst");
    tokio::spawn(crate::events::webhook::run(Arc::clone(gateway), sinks.webhooks, owner.clone()));
    if let Some(url) = sinks.nats_url {
        let bus = Arc::new(crate::events::nats::NatsBus::new(&url));
        tokio::spawn(crate::events::run_bus(Arc::clone(gateway), bus, owner.clone()));
    }
    if let Some(url) = sinks.redis_url {
        let bus = crate::events::redis::RedisBus::new(&url)
            .map_err(|e| Error::InvalidField { field: "COFFER_REDIS_URL", detail: e })?;
        tokio::spawn(crate::events::run_bus(Arc::clone(gateway), Arc::new(bus), owner.clone()));
    }
    for messenger in sinks.bridges {
        crate::bridge::engine::start(gateway, messenger, owner.clone());
    }
    Ok(())
}

/// Releases held payments whose time is up (their reservations go back to
/// the wallets and their spend back to the budgets), marks invoices past
/// their expiry `expired`, and ends holds, escrows and sessions past their
/// deadlines. Every instance runs it; the store makes each
/// expire once.
async fn expire_due(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(EXPIRY_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = gateway.expire_approvals().await {
            tracing::warn!(error = %e, "expiring held payments failed; will retry");
        }
        if let Err(e) = gateway.expire_invoices().await {
            tracing::warn!(error = %e, "expiring invoices failed; will retry");
        }
        if let Err(e) = gateway.expire_commerce().await {
            tracing::warn!(error = %e, "ending holds, escrows and sessions past their deadline failed; will retry");
        }
    }
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
