//! Building and running a gateway: the builder gathers the settings, opens
//! the store and the node key, and settles the operator token.

use crate::error::Error;
use crate::gateway::{Gateway, Settings};
use crate::io::Store;
use crate::io::sqlite_store::{Durability, SqliteStore};
use crate::payment::bolt11::{Network, NodeSigner};
use crate::secrets::{self, SecretDigest};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DEFAULT_DATA_DIR: &str = "./coffer-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8420";
const DATABASE_FILE: &str = "coffer.sqlite3";
const NODE_KEY_FILE: &str = "node.key";
/// A held payment waits this long for a person at most.
const APPROVAL_TTL_MS: i64 = 24 * 3600 * 1000;
/// How often held payments past their time are expired.
const EXPIRY_INTERVAL_MS: u64 = 1_000;
/// How often the backend is asked about pending payments and watched
/// invoices.
const LIGHTNING_POLL_INTERVAL_MS: u64 = 1_000;

/// How the operator token was settled at start.
#[derive(Debug)]
pub enum OperatorToken {
    /// Set from the environment (`COFFER_OPERATOR_TOKEN`).
    FromEnvironment,
    /// Created now: the only time it is shown.
    Created(String),
    /// Kept from an earlier start.
    Existing,
}

pub struct GatewayBuilder {
    data_dir: PathBuf,
    operator_token: Option<String>,
    durability: Durability,
    lightning: crate::lightning::LightningConfig,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        GatewayBuilder {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            operator_token: None,
            durability: Durability::Process,
            lightning: crate::lightning::LightningConfig::dev(),
        }
    }
}

impl GatewayBuilder {
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
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

    /// The Lightning backend and network (default: dev, regtest).
    pub fn lightning(mut self, config: crate::lightning::LightningConfig) -> Self {
        self.lightning = config;
        self
    }

    pub async fn build(self) -> Result<(Gateway, OperatorToken), Error> {
        create_private_dir(&self.data_dir)?;
        let funding = self.lightning.build().map_err(Error::Internal)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&self.data_dir.join(DATABASE_FILE), self.durability)?);
        let network: Network = self.lightning.network;
        let settings = Settings { network, dev_mode: true, approval_ttl_ms: APPROVAL_TTL_MS };
        let node = NodeSigner::load_or_create(&self.data_dir.join(NODE_KEY_FILE), settings.network)
            .map_err(|e| Error::internal("loading the node key", e))?;
        let (operator, token) = settle_operator_token(store.as_ref(), self.operator_token).await?;
        let gateway = Gateway::new(store, node, settings, operator).await?;
        let gateway = match funding {
            Some(funding) => {
                let timeout = std::time::Duration::from_millis(self.lightning.timeout_ms);
                let lnurl_http = crate::lightning::config::client(timeout, None).map_err(Error::Internal)?;
                gateway.with_funding(funding, self.lightning.timeout_ms, lnurl_http)
            }
            None => gateway,
        };
        Ok((gateway, token))
    }
}

/// Opens the embedded store of a data folder without starting a gateway:
/// for `coffer audit`.
pub fn open_store(data_dir: &Path) -> Result<Arc<dyn Store>, Error> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Err(Error::NotFound("database in that data folder"));
    }
    Ok(Arc::new(SqliteStore::open(&path, Durability::Process)?))
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| Error::internal("creating the data folder", e))
}

async fn settle_operator_token(
    store: &dyn Store,
    from_env: Option<String>,
) -> Result<(SecretDigest, OperatorToken), Error> {
    if let Some(token) = from_env {
        let digest = SecretDigest::of(&token);
        store.set_operator_digest(digest).await?;
        return Ok((digest, OperatorToken::FromEnvironment));
    }
    if let Some(digest) = store.operator_digest().await? {
        return Ok((digest, OperatorToken::Existing));
    }
    let token = secrets::new_secret(secrets::OPERATOR_TOKEN_PREFIX);
    let digest = SecretDigest::of(&token);
    store.set_operator_digest(digest).await?;
    Ok((digest, OperatorToken::Created(token)))
}

/// Serves the HTTP API until SIGINT or SIGTERM. `on_ready` learns the bound
/// address (the port may have been 0).
pub async fn serve(gateway: Gateway, listen: SocketAddr, on_ready: impl FnOnce(SocketAddr)) -> Result<(), Error> {
    // Payments left pending by an earlier run are asked about first, before
    // any request can touch their wallets.
    match gateway.resolve_pending().await {
        Ok(0) => {}
        Ok(open) => tracing::warn!(open, "payments still pending at the backend after the start-up check"),
        Err(e) => tracing::warn!(error = %e, "checking pending payments at start failed; will retry"),
    }
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| Error::internal("binding the listen address", e))?;
    let addr = listener.local_addr().map_err(|e| Error::internal("reading the bound address", e))?;
    on_ready(addr);
    let gateway = Arc::new(gateway);
    tokio::spawn(expire_approvals(Arc::clone(&gateway)));
    if gateway.lightning_name() != "dev" {
        tokio::spawn(crate::gateway::run_background(Arc::clone(&gateway), LIGHTNING_POLL_INTERVAL_MS));
    }
    let app = crate::http::router(gateway);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Error::internal("serving", e))
}

/// Releases held payments whose time is up: their reservations go back to
/// the wallets and their spend back to the budgets.
async fn expire_approvals(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(EXPIRY_INTERVAL_MS));
    loop {
        tick.tick().await;
        if let Err(e) = gateway.expire_approvals().await {
            tracing::warn!(error = %e, "expiring held payments failed; will retry");
        }
    }
}

async fn shutdown_signal() {
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
