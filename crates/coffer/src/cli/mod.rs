//! The command line: `coffer serve` runs a gateway; `coffer audit` checks a
//! store; the other commands call a running gateway over HTTP for a person
//! (`--json` for scripts).

use crate::events::webhook::WebhookSettings;
use crate::server::{self, GatewayBuilder, OperatorToken};
use clap::{Args, Parser, Subcommand};
use coffer_client::{Client, CreateInvoiceRequest, PayOutcome, PayRequest, PaymentStatus, Scope};
use config::Config;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The schema version this build writes, as a literal (`concat!` takes no
/// constant); checked against the stores' at compile time.
macro_rules! schema_version {
    () => {
        "20"
    };
}

/// What `coffer --version` prints after the name: the release, and the
/// schema version a store it opens is migrated to (a store of a newer one
/// is refused).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (schema ", schema_version!(), ")");
const _: () = assert!(
    matches!(usize::from_str_radix(schema_version!(), 10), Ok(v) if v == crate::store::SCHEMA_VERSION),
    "schema_version! names another schema than the stores write"
);

#[derive(Parser)]
#[command(name = "coffer", version = VERSION, about = "Lightning wallets with bounded, delegated spending for AI agents")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: on SQLite in --data, or on PostgreSQL with --database.
    Serve(ServeArgs),
    /// Check a store (its gateway may run): exit 0 only if it is sound.
    ///
    /// Sound: the ledger balances, every balance matches its transfers, no
    /// wallet is negative and the audit trail's hash chain verifies.
    Audit {
        /// The data folder of the gateway whose SQLite store to check.
        #[arg(long, env = "COFFER_DATA", default_value = server::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Audit this PostgreSQL database (a postgres:// URL) instead of --data.
        #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The configuration file of `coffer serve --config`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write a consistent copy of an embedded store, while its gateway runs
    /// (SQLite's VACUUM INTO). On PostgreSQL use pg_dump (see the README).
    Backup {
        /// The data folder of the gateway to back up.
        #[arg(long, default_value = server::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// The backup file to write (mode 0600); it must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Carry the node key too (the gateway's identity: whoever holds the
        /// file can sign invoices and receipts as this gateway).
        #[arg(long)]
        node_key: bool,
        /// Refused when set: a PostgreSQL store is backed up with pg_dump.
        #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a new data folder (never over a store).
    Restore {
        /// The file `coffer backup` wrote.
        file: PathBuf,
        /// The data folder to restore into: new, or without a database.
        #[arg(long)]
        data: PathBuf,
        /// Print what was restored as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Operator: agents, their funds and keys.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Operator: the treasury.
    #[command(subcommand)]
    Treasury(TreasuryCommand),
    /// Agent: invoices.
    #[command(subcommand)]
    Invoice(InvoiceCommand),
    /// Agent: pay a BOLT11 invoice.
    Pay {
        #[command(flatten)]
        remote: AgentRemote,
        /// The BOLT11 invoice to pay.
        bolt11: String,
        /// Why: kept in the audit trail.
        #[arg(long)]
        purpose: Option<String>,
        /// Makes a retry safe; a random one is used if absent.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The task spend reports count it under (default: the agent's own).
        #[arg(long)]
        task: Option<String>,
        /// A tag spend reports count it under; repeat for more (at most 8).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Operator: where the money went, from `GET /v1/reports/spend`.
    Report {
        #[command(flatten)]
        remote: OperatorRemote,
        /// agent, tree, task, tag, payee or day.
        #[arg(long, default_value = "agent")]
        group_by: String,
        /// The first day covered (YYYY-MM-DD or RFC 3339); default: 29 days before --to.
        #[arg(long)]
        from: Option<String>,
        /// The last day covered, included; default: today (UTC).
        #[arg(long)]
        to: Option<String>,
    },
    /// Agent: the wallet's balance.
    Balance {
        #[command(flatten)]
        remote: AgentRemote,
    },
    /// Agent: recent payments.
    Payments {
        #[command(flatten)]
        remote: AgentRemote,
    },
    /// Signed receipts: verify one offline against the gateway's node key,
    /// or fetch one.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// The constitution as a TOML file: apply it, or check it against an
    /// agent's past payments.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Operator: held payments.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Operator: stop one agent's outgoing payments.
    Freeze {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The agent to freeze, with its sub-agents.
        agent_id: String,
        /// Why: kept in the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Operator: let a frozen agent pay again.
    Unfreeze {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The agent to unfreeze.
        agent_id: String,
    },
    /// Operator: the kill switch. `coffer halt` stops every outgoing
    /// payment; `coffer halt --off` lets them through again.
    Halt {
        #[command(flatten)]
        remote: OperatorRemote,
        /// Lift the halt instead.
        #[arg(long)]
        off: bool,
    },
    /// Agent: an MCP server on stdin and stdout, acting for the agent of
    /// COFFER_AGENT_KEY through the gateway at COFFER_URL.
    Mcp {
        /// The gateway's URL.
        #[arg(long, env = "COFFER_URL", default_value = "http://127.0.0.1:8420")]
        url: String,
        /// The agent's key (`csk_…`).
        #[arg(long, env = "COFFER_AGENT_KEY", hide_env_values = true)]
        key: String,
        /// Sign write requests with this key file (see `coffer signing-key`).
        #[arg(long, env = "COFFER_SIGNING_KEY", value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
    /// Agent: a signing key of its own (RFC 9421), kept on this machine.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Seller: an L402 paywall in front of an HTTP service. Invoices go to
    /// the wallet of the agent of COFFER_AGENT_KEY (a receive key is enough).
    Paywall(PaywallArgs),
    /// Buyer: GET a URL, paying its L402 paywall within the agent's policy
    /// (a kept token of the agent is reused). The body goes to stdout.
    Fetch {
        #[command(flatten)]
        remote: AgentRemote,
        /// The URL to GET (`--url` is the gateway's).
        #[arg(value_name = "URL")]
        target: String,
    },
    /// Load a gateway with payments and report throughput and latency.
    Bench(crate::cli::bench::BenchArgs),
    /// An agent economy against a live gateway, to watch in the dashboard.
    Simulate(simulate::SimulateArgs),
    /// Start a gateway in a temporary folder, run the simulation against it,
    /// and keep serving the dashboard until Ctrl-C. With a bridge's
    /// variables set (COFFER_TELEGRAM_BOT_TOKEN, or COFFER_MATRIX_*), the
    /// market room is bridged to COFFER_DEMO_TELEGRAM_CHAT_ID or
    /// COFFER_DEMO_MATRIX_ROOM_ID.
    Demo {
        /// Trading rounds of the simulation.
        #[arg(long, default_value_t = 60)]
        rounds: u32,
        /// Pause between rounds, so that a person can watch.
        #[arg(long, default_value_t = 500)]
        pause_ms: u64,
        /// Stop once the simulation ends instead of serving on.
        #[arg(long)]
        exit: bool,
    },
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Make an Ed25519 key, register its public half for the agent of
    /// --key, and write it to --out (mode 0600; never overwritten).
    New {
        #[command(flatten)]
        remote: AgentRemote,
        /// The key file to write (mode 0600); it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// From now on every write of the agent must be signed.
        #[arg(long)]
        required: bool,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// The payments waiting for a person's decision.
    List {
        #[command(flatten)]
        remote: OperatorRemote,
    },
    /// Pay a held payment (once).
    Approve {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The approval's id (`coffer approvals list`).
        id: String,
    },
    /// Refuse a held payment: what it reserved is released.
    Deny {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The approval's id (`coffer approvals list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Reads FILE as `coffer serve --config` would (without the
    /// environment) and names the first wrong field; exit 0 if none.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Prints a commented example holding every setting.
    Example,
}

#[derive(Args, Default)]
struct ServeArgs {
    /// Every setting from this TOML file (`coffer config example` prints
    /// one); flags and the environment win over it.
    #[arg(long, env = "COFFER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder of the database and the node key [default: ./coffer-data].
    #[arg(long, env = "COFFER_DATA")]
    data: Option<PathBuf>,
    /// A postgres:// URL: keep the state in PostgreSQL, which several
    /// instances may share (the node key stays in --data: give every
    /// instance of one gateway the same node.key). Without it: SQLite in --data.
    #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// The address to serve HTTP on.
    /// [default: 127.0.0.1:8420]
    #[arg(long, env = "COFFER_LISTEN")]
    listen: Option<SocketAddr>,
    /// The origin clients address this gateway by when a proxy in front of
    /// it changes scheme or host (`https://pay.example`): the `@target-uri`
    /// that signed requests cover. Default: `http://` and the request's Host.
    #[arg(long, env = "COFFER_PUBLIC_URL")]
    public_url: Option<String>,
    /// Serve every agent wallet as a Nostr Wallet Connect wallet through
    /// these relays (ws:// or wss:// URLs, comma-separated); the
    /// connections' URIs name them. Without it NWC is off.
    #[arg(long, env = "COFFER_NWC_RELAYS", value_delimiter = ',')]
    nwc_relays: Vec<String>,
    /// Sets the operator token instead of generating one.
    #[arg(long, env = "COFFER_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// How a commit is made durable before it is acknowledged. `full` (the
    /// default): synced to disk, so it survives power loss. `process`: it
    /// survives a crash of the process only; a power loss or kernel crash
    /// may lose the last acknowledged payments. SQLite only: on PostgreSQL
    /// the server's `synchronous_commit` decides.
    #[arg(long, env = "COFFER_DURABILITY")]
    durability: Option<crate::store::sqlite::Durability>,
    /// Kept for scripts written before commits were synced by default: the
    /// same as `--durability full`.
    #[arg(long, hide = true)]
    fsync: bool,
    /// Publish every event to NATS JetStream (stream COFFER_EVENTS).
    #[arg(long, env = "COFFER_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// Publish every event to the Redis stream coffer:events.
    #[arg(long, env = "COFFER_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// The wait before retrying a failed webhook delivery; it doubles with
    /// each failure in a row.
    /// [default: 1000]
    #[arg(long, env = "COFFER_WEBHOOK_BACKOFF_MS")]
    webhook_backoff_ms: Option<u64>,
    /// Failures in a row that pause a webhook.
    /// [default: 10]
    #[arg(long, env = "COFFER_WEBHOOK_PAUSE_AFTER", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    webhook_pause_after: Option<u32>,
    /// Mount L402 paywalls, as listed in this TOML file (`[[paywall]]
    /// prefix, agent, upstream, price_msat, [[paywall.route]]`); repeatable.
    #[arg(long, value_name = "FILE")]
    paywall: Vec<PathBuf>,
}

#[derive(Args)]
struct PaywallArgs {
    /// The address the paywall listens on, e.g. 127.0.0.1:8402.
    #[arg(long)]
    listen: SocketAddr,
    /// The service behind the paywall, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    upstream: String,
    /// The price of a path no route of --config names.
    #[arg(long)]
    price_msat: Option<u64>,
    /// Per-route prices (TOML: `[[route]] path, price_msat, uses, ttl_secs`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder of the macaroon root key (created, mode 0600).
    #[arg(long, default_value = "./coffer-paywall")]
    data: PathBuf,
    /// The gateway's URL.
    #[arg(long, env = "COFFER_URL", default_value = "http://127.0.0.1:8420")]
    url: String,
    /// The seller agent's key (`csk_…`; the receive scope is enough).
    #[arg(long, env = "COFFER_AGENT_KEY", hide_env_values = true)]
    key: String,
}

#[derive(Args)]
pub struct OperatorRemote {
    /// The gateway's URL.
    #[arg(long, env = "COFFER_URL", default_value = "http://127.0.0.1:8420")]
    url: String,
    /// The operator token.
    #[arg(long, env = "COFFER_OPERATOR_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the answer as JSON, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AgentRemote {
    /// The gateway's URL.
    #[arg(long, env = "COFFER_URL", default_value = "http://127.0.0.1:8420")]
    url: String,
    /// The agent's key (`csk_…`).
    #[arg(long, env = "COFFER_AGENT_KEY", hide_env_values = true)]
    key: String,
    /// Sign write requests with this key file (`coffer signing-key new`
    /// makes one): needed once the agent has a required signing key.
    #[arg(long, env = "COFFER_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Print the answer as JSON, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Create an agent: prints its id and its first spend key (shown once).
    Create {
        #[command(flatten)]
        remote: OperatorRemote,
        /// A name for people: 1 to 64 characters.
        name: String,
    },
    /// Every agent, with its balance.
    List {
        #[command(flatten)]
        remote: OperatorRemote,
    },
    /// One agent.
    Show {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The agent's id (`agt_…`).
        id: String,
    },
    /// Move funds from the treasury to an agent's wallet.
    Fund {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The agent's id (`agt_…`).
        id: String,
        /// The amount in millisatoshis (1 sat = 1000 msat).
        amount_msat: u64,
    },
    /// Issue a key of the given scope (read, receive, spend).
    Key {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The agent's id (`agt_…`).
        id: String,
        /// What the key may do: read, receive or spend.
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
    },
    /// Revoke a key: it stops working at once.
    Revoke {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The key's id (`key_…`), not the key itself.
        key_id: String,
    },
}

#[derive(Subcommand)]
enum TreasuryCommand {
    /// Dev mode: add test funds.
    Mint {
        #[command(flatten)]
        remote: OperatorRemote,
        /// The amount in millisatoshis (1 sat = 1000 msat).
        amount_msat: u64,
    },
    /// The treasury's balance.
    Balance {
        #[command(flatten)]
        remote: OperatorRemote,
    },
}

#[derive(Subcommand)]
enum InvoiceCommand {
    /// Create a BOLT11 invoice to receive a payment (a receive key is enough).
    Create {
        #[command(flatten)]
        remote: AgentRemote,
        /// The amount in millisatoshis (1 sat = 1000 msat).
        amount_msat: u64,
        /// Shown to the payer: what the payment is for.
        #[arg(long)]
        memo: Option<String>,
        /// Seconds until it expires [default: 3600].
        #[arg(long)]
        expiry_secs: Option<u32>,
    },
    /// One of the agent's invoices, and whether it is paid.
    Show {
        #[command(flatten)]
        remote: AgentRemote,
        /// The invoice's payment hash (hex).
        payment_hash: String,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| "read, receive or spend".to_owned())
}

pub mod bench;
mod bench_nwc;
mod child;
mod config;
#[cfg(test)]
mod help_tests;
pub mod policy;
mod receipt;
mod signing_key;
pub mod simulate;

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    crate::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coffer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("coffer: {message}");
            ExitCode::FAILURE
        }
    }
}

pub type CliResult = Result<ExitCode, String>;

async fn dispatch(command: Command) -> CliResult {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Audit { data, database, json } => audit(data, database, json).await,
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => check_config(&file),
        Command::Backup { data, out, node_key, database, json } => backup(&data, &out, node_key, database, json),
        Command::Restore { file, data, json } => restore(&file, &data, json),
        Command::Agent(cmd) => agent(cmd).await,
        Command::Treasury(cmd) => treasury(cmd).await,
        Command::Invoice(cmd) => invoice(cmd).await,
        Command::Report { remote, group_by, from, to } => {
            let client = remote.client()?;
            let report =
                client.spend_report(&group_by, from.as_deref(), to.as_deref()).await.map_err(|e| e.to_string())?;
            print(remote.json, &report, || report_text(&report))
        }
        Command::Pay { remote, bolt11, purpose, idempotency_key, task, tags } => {
            let client = remote.client()?;
            let key = idempotency_key.unwrap_or_else(|| crate::secrets::new_id("cli_"));
            match client
                .pay(&PayRequest { bolt11, purpose, task, tags, ..Default::default() }, &key)
                .await
                .map_err(|e| e.to_string())?
            {
                PayOutcome::Done(p) => print(remote.json, &p, || {
                    format!(
                        "paid {} msat (fee {} msat), preimage {}",
                        p.amount_msat,
                        p.fee_msat,
                        p.preimage.clone().unwrap_or_default()
                    )
                }),
                PayOutcome::Held(a) => print(remote.json, &a, || {
                    format!("held for approval {} ({} msat); an operator approves or denies it", a.id, a.amount_msat)
                }),
            }
        }
        Command::Balance { remote } => {
            let w = remote.client()?.wallet().await.map_err(|e| e.to_string())?;
            print(remote.json, &w, || format!("{} msat ({} available)", w.balance_msat, w.available_msat))
        }
        Command::Payments { remote } => {
            let page = remote.client()?.payments(None).await.map_err(|e| e.to_string())?;
            print(remote.json, &page, || {
                page.items
                    .iter()
                    .map(|p| format!("{} {:?} {} msat {}", p.created_at, p.status, p.amount_msat, p.purpose))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Mcp { url, key, signing_key } => {
            let signer = signing_key.as_deref().map(signing_key::load).transpose()?;
            crate::mcp::serve_stdio(&url, &key, signer).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SigningKey(SigningKeyCommand::New { remote, out, required }) => {
            let key_id = signing_key::create(&remote.client()?, &out, required).await?;
            println!("registered signing key {key_id}; its private key is in {} (mode 0600)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Paywall(args) => paywall(args).await,
        Command::Fetch { remote, target } => fetch(remote, &target).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Demo { rounds, pause_ms, exit } => demo(rounds, pause_ms, exit).await,
        Command::Policy(cmd) => policy::run(cmd).await,
        Command::Receipt(cmd) => receipt::run(cmd).await,
        Command::Approvals(cmd) => approvals(cmd).await,
        Command::Freeze { remote, agent_id, reason } => {
            let a = remote.client()?.freeze(&agent_id, reason.as_deref()).await.map_err(|e| e.to_string())?;
            print(remote.json, &a, || format!("{} frozen: {}", a.id, a.frozen_reason.clone().unwrap_or_default()))
        }
        Command::Unfreeze { remote, agent_id } => {
            let a = remote.client()?.unfreeze(&agent_id).await.map_err(|e| e.to_string())?;
            print(remote.json, &a, || format!("{} unfrozen", a.id))
        }
        Command::Halt { remote, off } => {
            let b = remote.client()?.set_halted(!off).await.map_err(|e| e.to_string())?;
            print(remote.json, &b, || {
                if b.halted { "halted: no outgoing payments".into() } else { "resumed: payments flow".into() }
            })
        }
    }
}

async fn paywall(args: PaywallArgs) -> CliResult {
    use crate::l402::paywall::{Paywall, PaywallConfig, parse_upstream, root_key};
    crate::tls::install_crypto_provider();
    let config = args.config.as_deref().map(PaywallConfig::load).transpose()?.unwrap_or_default();
    let routes = config.routes(args.price_msat)?;
    let seller = Client::new(&args.url, &args.key).map_err(|e| e.to_string())?;
    let upstream = parse_upstream("--upstream", &args.upstream)?;
    let limits = crate::limits::Limits::from_env()?;
    let per_client = limits.paywall_challenges_per_minute_per_client;
    let paywall = Paywall::new(root_key(&args.data)?, routes, "", upstream, Box::new(seller), per_client)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("{}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // On stdout, like `coffer serve`: scripts and tests wait for this line.
    println!("coffer paywall listening on http://{local} in front of {}", args.upstream);
    // The same bounds as `coffer serve`; no operator here, so the reserved
    // connections serve only /healthz.
    let no_operator: crate::connections::IsOperator = std::sync::Arc::new(|_| false);
    let app = std::sync::Arc::new(paywall).router();
    crate::connections::serve(listener, app, &limits, no_operator, crate::server::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// Prints the body to stdout, and what was paid to stderr; fails on a
/// status that is not a success.
async fn fetch(remote: AgentRemote, url: &str) -> CliResult {
    use std::io::Write;
    crate::tls::install_crypto_provider();
    let fetched = remote.client()?.fetch_l402(url).await.map_err(|e| e.to_string())?;
    if remote.json {
        let body = String::from_utf8_lossy(&fetched.body);
        let value = serde_json::json!({
            "status": fetched.status, "paid_msat": fetched.paid_msat, "token": fetched.token, "body": body,
        });
        println!("{value}");
    } else {
        std::io::stdout().write_all(&fetched.body).map_err(|e| e.to_string())?;
        eprintln!("{} {url}: paid {} msat", fetched.status, fetched.paid_msat);
    }
    Ok(if (200..300).contains(&fetched.status) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A spend report as a table for people.
fn report_text(r: &coffer_client::SpendReport) -> String {
    let mut out = format!("spend by {} from {} to {}\n", r.group_by, r.from, r.to);
    for row in &r.rows {
        let label = row.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
        out.push_str(&format!(
            "{:>14} msat {:>6} payments  fees {:>10} msat  {}{label}\n",
            row.amount_msat, row.payments, row.fee_msat, row.key
        ));
    }
    out.push_str(&format!("{:>14} msat {:>6} payments in all", r.total.amount_msat, r.total.payments));
    if r.truncated {
        out.push_str(" (rows left out: at most 1000 are shown)");
    }
    out
}

pub fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) -> CliResult {
    if json {
        println!("{}", serde_json::to_string_pretty(value).map_err(|e| e.to_string())?);
    } else {
        println!("{}", human());
    }
    Ok(ExitCode::SUCCESS)
}

impl OperatorRemote {
    fn client(&self) -> Result<Client, String> {
        Client::new(&self.url, &self.token).map_err(|e| e.to_string())
    }
}

impl AgentRemote {
    fn client(&self) -> Result<Client, String> {
        let client = Client::new(&self.url, &self.key).map_err(|e| e.to_string())?;
        match &self.signing_key {
            Some(path) => Ok(client.with_signer(signing_key::load(path)?)),
            None => Ok(client),
        }
    }
}

/// `COFFER_DEV_CLOCK=1`: the gateway's clock can be moved forward by the
/// operator (dev mode only), so that tests of expiry need not sleep. Not a
/// setting for a gateway that holds anyone's money.
fn dev_clock_from_env() -> Result<bool, String> {
    match std::env::var("COFFER_DEV_CLOCK").ok().as_deref() {
        None | Some("" | "0") => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err("COFFER_DEV_CLOCK: 1 (a clock tests may move, dev mode only) or 0".into()),
    }
}

/// A `serve` setting of the flags and the environment, else of the file:
/// parsed, an error naming the variable (or the file's field, by
/// `Config::explain`).
fn setting<T: std::str::FromStr>(flag: Option<T>, config: &Config, env: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    match flag {
        Some(value) => Ok(Some(value)),
        None => config.get(env).map(|v| v.trim().parse::<T>().map_err(|e| format!("{env}: {e}"))).transpose(),
    }
}

/// What `coffer serve` runs with: the flags, then the environment, then
/// the configuration file, then the defaults.
struct Serve {
    data: PathBuf,
    database: Option<String>,
    listen: SocketAddr,
    public_url: Option<String>,
    nwc_relays: Vec<String>,
    operator_token: Option<String>,
    durability: crate::store::sqlite::Durability,
    nats_url: Option<String>,
    redis_url: Option<String>,
    webhook_backoff_ms: u64,
    webhook_pause_after: u32,
    paywall: Vec<PathBuf>,
    lightning: crate::lightning::LightningConfig,
    limits: crate::limits::Limits,
    retention: crate::gateway::retention::Retention,
    egress: crate::egress::Egress,
    bridges: crate::bridge::BridgeConfig,
    fiat: crate::fiat::FiatConfig,
    budget_warnings: coffer_core::policy::WarningThresholds,
}

impl Serve {
    fn resolve(args: ServeArgs, config: &Config) -> Result<Serve, String> {
        let text = |flag: Option<String>, env: &str| flag.filter(|v| !v.is_empty()).or_else(|| config.get(env));
        let list = |flag: Vec<String>, env: &str| match flag.is_empty() {
            false => flag,
            true => config
                .get(env)
                .map(|v| v.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        let default_listen: SocketAddr = server::DEFAULT_LISTEN.parse().map_err(|e| format!("{e}"))?;
        let durability = match args.fsync {
            true => crate::store::sqlite::Durability::Full,
            false => setting(args.durability, config, "COFFER_DURABILITY")?.unwrap_or_default(),
        };
        let webhook_pause_after =
            setting(args.webhook_pause_after, config, "COFFER_WEBHOOK_PAUSE_AFTER")?.unwrap_or(10);
        if !(1..=1_000).contains(&webhook_pause_after) {
            return Err(format!("COFFER_WEBHOOK_PAUSE_AFTER: 1 to 1000, not {webhook_pause_after}"));
        }
        let lookup = |name: &str| config.get(name);
        Ok(Serve {
            data: setting(args.data, config, "COFFER_DATA")?.unwrap_or_else(|| PathBuf::from(server::DEFAULT_DATA_DIR)),
            database: text(args.database, "COFFER_DATABASE_URL"),
            listen: setting(args.listen, config, "COFFER_LISTEN")?.unwrap_or(default_listen),
            public_url: text(args.public_url, "COFFER_PUBLIC_URL"),
            nwc_relays: list(args.nwc_relays, "COFFER_NWC_RELAYS"),
            operator_token: text(args.operator_token, "COFFER_OPERATOR_TOKEN"),
            durability,
            nats_url: text(args.nats_url, "COFFER_NATS_URL"),
            redis_url: text(args.redis_url, "COFFER_REDIS_URL"),
            webhook_backoff_ms: setting(args.webhook_backoff_ms, config, "COFFER_WEBHOOK_BACKOFF_MS")?.unwrap_or(1_000),
            webhook_pause_after,
            paywall: args.paywall,
            lightning: crate::lightning::LightningConfig::from_lookup(lookup)?,
            limits: crate::limits::Limits::from_lookup(lookup)?,
            retention: crate::gateway::retention::Retention::from_lookup(lookup)?,
            egress: crate::egress::Egress::from_lookup(lookup)?,
            bridges: crate::bridge::BridgeConfig::from_lookup(lookup)?,
            fiat: crate::fiat::FiatConfig::from_lookup(lookup)?,
            budget_warnings: crate::payment::warning::from_lookup(lookup)?,
        })
    }
}

impl Serve {
    /// The gateway's builder (the Lightning settings move into it).
    fn builder(&mut self) -> Result<GatewayBuilder, String> {
        let lightning = std::mem::replace(&mut self.lightning, crate::lightning::LightningConfig::dev());
        Ok(GatewayBuilder::default()
            .lightning(lightning)
            .limits(self.limits.clone())
            .retention(self.retention.clone())
            .egress(self.egress.clone())
            .public_url(self.public_url.clone())
            .nwc_relays(self.nwc_relays.clone())
            .fiat(self.fiat.clone())
            .budget_warnings(self.budget_warnings.clone())
            .data_dir(&self.data)
            .database_url(self.database.clone())
            .operator_token(self.operator_token.clone())
            .durability(self.durability)
            .dev_clock(dev_clock_from_env()?))
    }
}

/// Reads the configuration file and resolves every setting, as `serve`
/// does before it opens anything.
fn configured(args: ServeArgs) -> Result<(Serve, Config), String> {
    let config = Config::load(args.config.as_deref())?;
    config::check_env_files()?;
    let serve = Serve::resolve(args, &config).map_err(|e| config.explain(&e))?;
    Ok((serve, config))
}

fn check_config(file: &Path) -> CliResult {
    let config = Config::load(Some(file))?.file_only();
    let mut serve = Serve::resolve(ServeArgs::default(), &config).map_err(|e| config.explain(&e))?;
    let builder = serve.builder()?;
    builder.check().map_err(|e| config.explain(&e.operator_message()))?;
    println!("{}: ok", file.display());
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> CliResult {
    let (args, config) = configured(args)?;
    init_tracing(config.get("COFFER_LOG"));
    // Checked before anything is opened: a bad file changes nothing.
    let paywalls = crate::l402::mount::Mounts::load(&args.paywall, &args.data)?;
    let (durability, mut args) = (args.durability, args);
    let location = args.lightning.location().map(|url| format!(" at {url}")).unwrap_or_default();
    let (gateway, token) = args.builder()?.build().await.map_err(|e| e.operator_message())?;
    let network = gateway.settings().network.as_str();
    let node = gateway.node_pubkey_hex();
    match token {
        OperatorToken::Created(t) => println!("operator token (shown once, keep it): {t}"),
        OperatorToken::FromEnvironment => println!("operator token: from COFFER_OPERATOR_TOKEN"),
        OperatorToken::ReplacedFromEnvironment => {
            println!("operator token: from COFFER_OPERATOR_TOKEN");
            // One line, never the token: the old one stopped working now.
            tracing::warn!(
                "COFFER_OPERATOR_TOKEN replaced the operator token stored by an earlier start: \
                 the earlier token no longer works"
            );
        }
        OperatorToken::Existing => println!("operator token: unchanged, the one an earlier start stored"),
    }
    match args.database.as_deref().filter(|u| !u.is_empty()) {
        // Not the URL: it may carry a password.
        Some(_) => println!("store: PostgreSQL (shared; node key in {})", args.data.display()),
        None => println!(
            "store: embedded SQLite in {} ({})",
            args.data.display(),
            match durability {
                crate::store::sqlite::Durability::Full => "commits synced to disk",
                crate::store::sqlite::Durability::Process =>
                    "--durability process: commits are NOT synced; a power loss may lose acknowledged payments",
            }
        ),
    }
    match gateway.lightning_name() {
        "dev" => println!("lightning: dev (no backend), network {network}, node {node}"),
        name => println!("lightning: {name}{location}, network {network}"),
    }
    if gateway.has_dev_clock() {
        println!("clock: dev, COFFER_DEV_CLOCK: the operator may move it forward (for tests only)");
    }
    let sinks = server::EventSinks {
        nats_url: args.nats_url.filter(|u| !u.is_empty()),
        redis_url: args.redis_url.filter(|u| !u.is_empty()),
        webhooks: WebhookSettings {
            backoff_base_ms: args.webhook_backoff_ms.max(1),
            pause_after_failures: args.webhook_pause_after,
            ..WebhookSettings::default()
        },
        bridges: args.bridges.messengers()?,
    };
    // Where events go; the URLs may hold credentials, so only which.
    println!(
        "events: /v1/events, webhooks{}{}",
        if sinks.nats_url.is_some() { ", NATS JetStream" } else { "" },
        if sinks.redis_url.is_some() { ", Redis Streams" } else { "" }
    );
    if !args.nwc_relays.is_empty() {
        let wallet = gateway.nwc_wallet_keys().map_err(|e| e.operator_message())?.x_only_public_key().0;
        println!("nwc: wallet service {wallet} on {}", args.nwc_relays.join(", "));
    }
    for name in args.bridges.names() {
        println!("bridge: {name} (rooms bridged with PUT /v1/rooms/{{room}}/bridges/{name})");
    }
    for mount in &paywalls.mounts {
        println!("paywall: {} -> {} for {}", mount.prefix, mount.upstream, mount.agent_id);
    }
    server::serve(gateway, args.listen, sinks, paywalls, |addr| {
        // Tests and scripts wait for this exact line.
        println!("coffer listening on http://{addr}");
    })
    .await
    .map_err(|e| e.operator_message())?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(filter: Option<String>) {
    let filter = filter
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    crate::logging::init(filter);
}

async fn audit(data: PathBuf, database: Option<String>, json: bool) -> CliResult {
    let store = server::open_store(&data, database.as_deref()).await.map_err(|e| e.operator_message())?;
    let report = crate::gateway::audit(store.as_ref()).await.map_err(|e| e.operator_message())?;
    print(json, &report, || {
        let mut out = format!(
            "checked {} accounts and {} transfers: debits {} msat, credits {} msat\n\
             checked the audit trail's hash chain: {} records",
            report.accounts_checked,
            report.transfers_checked,
            report.total_debits_msat,
            report.total_credits_msat,
            report.audit_records_checked
        );
        for v in &report.violations {
            out.push_str(&format!("\nVIOLATION: {v}"));
        }
        out.push_str(if report.is_clean() { "\nledger OK" } else { "\nledger FAILED" });
        out
    })?;
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn backup(data: &Path, out: &Path, node_key: bool, database: Option<String>, json: bool) -> CliResult {
    if database.is_some_and(|d| !d.is_empty()) {
        return Err("a PostgreSQL store is backed up with pg_dump (see the README's Backups section); \
                    coffer backup copies an embedded store"
            .into());
    }
    let report = server::backup(data, out, node_key).map_err(|e| e.operator_message())?;
    let view = serde_json::json!({
        "file": out.display().to_string(), "bytes": report.bytes, "schema_version": report.schema_version,
        "payments": report.payments, "node_key": report.with_node_key,
    });
    print(json, &view, || {
        format!(
            "backup: {} ({} bytes, schema {}, {} payments{}); check it with: coffer restore {} --data NEW_FOLDER && coffer audit --data NEW_FOLDER",
            out.display(),
            report.bytes,
            report.schema_version,
            report.payments,
            if report.with_node_key { ", with the node key: keep it as secret as node.key" } else { "" },
            out.display()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

fn restore(file: &Path, data: &Path, json: bool) -> CliResult {
    let (report, has_key) = server::restore(file, data).map_err(|e| e.operator_message())?;
    let view = serde_json::json!({
        "data": data.display().to_string(), "schema_version": report.schema_version,
        "node_key": if report.node_key.is_some() { "restored" } else if has_key { "kept" } else { "none" },
    });
    print(json, &view, || {
        let key = match (report.node_key.is_some(), has_key) {
            (true, _) => "the node key restored",
            (false, true) => "the folder's node key kept",
            (false, false) => {
                "no node key: the gateway will make a new one, and receipts signed before verify with the old key only"
            }
        };
        format!(
            "restored into {} (schema {}), {key}; now: coffer audit --data {}",
            data.display(),
            report.schema_version,
            data.display()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(rounds: u32, pause_ms: u64, exit: bool) -> CliResult {
    let gateway = child::OwnGateway::start(None, None).await?;
    println!("coffer demo: a gateway on embedded SQLite in {}", gateway.data.display());
    println!("  dashboard:      {}/", gateway.url);
    println!("  operator token: {}", gateway.token);
    println!("  sign in with the token, then watch the agents trade ({rounds} rounds)\n");
    let args = simulate::SimulateArgs::for_demo(gateway.url.clone(), gateway.token.clone(), rounds, pause_ms);
    simulate::run(args).await?;
    println!("\naudit: {}", gateway.audit().await?);
    if !exit {
        println!("the gateway keeps serving at {}/ until Ctrl-C", gateway.url);
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn approvals(cmd: ApprovalsCommand) -> CliResult {
    match cmd {
        ApprovalsCommand::List { remote } => {
            let list = remote.client()?.approvals().await.map_err(|e| e.to_string())?;
            print(remote.json, &list, || {
                list.iter()
                    .map(|a| format!("{}  {} msat  {}  {}", a.id, a.amount_msat, a.agent_id, a.purpose))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ApprovalsCommand::Approve { remote, id } => {
            let d = remote.client()?.approve(&id).await.map_err(|e| e.to_string())?;
            print(remote.json, &d, || match d.payment.as_ref().map(|p| p.status) {
                Some(PaymentStatus::Pending) => format!("{} approved; the payment is in flight", d.approval.id),
                Some(PaymentStatus::Failed) => {
                    format!("{} approved; the payment failed and is released", d.approval.id)
                }
                _ => format!("{} approved and paid", d.approval.id),
            })
        }
        ApprovalsCommand::Deny { remote, id } => {
            let d = remote.client()?.deny(&id).await.map_err(|e| e.to_string())?;
            print(remote.json, &d, || format!("{} denied; the reservation is released", d.approval.id))
        }
    }
}

async fn agent(cmd: AgentCommand) -> CliResult {
    match cmd {
        AgentCommand::Create { remote, name } => {
            let a = remote.client()?.create_agent(&name).await.map_err(|e| e.to_string())?;
            print(remote.json, &a, || format!("agent {}\nspend key (shown once): {}", a.id, a.key))
        }
        AgentCommand::List { remote } => {
            let agents = remote.client()?.agents().await.map_err(|e| e.to_string())?;
            print(remote.json, &agents, || {
                agents
                    .iter()
                    .map(|a| format!("{}  {:<24} {} msat", a.id, a.name, a.balance_msat))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AgentCommand::Show { remote, id } => {
            let a = remote.client()?.agent(&id).await.map_err(|e| e.to_string())?;
            print(remote.json, &a, || format!("{} {} {} msat", a.id, a.name, a.balance_msat))
        }
        AgentCommand::Fund { remote, id, amount_msat } => {
            let t = remote.client()?.fund_agent(&id, amount_msat).await.map_err(|e| e.to_string())?;
            print(remote.json, &t, || format!("funded {} msat; balance {} msat", t.amount_msat, t.balance_msat))
        }
        AgentCommand::Key { remote, id, scope } => {
            let k = remote.client()?.create_key(&id, scope).await.map_err(|e| e.to_string())?;
            print(remote.json, &k, || format!("key {} ({}) (shown once): {}", k.id, k.scope.as_str(), k.key))
        }
        AgentCommand::Revoke { remote, key_id } => {
            remote.client()?.revoke_key(&key_id).await.map_err(|e| e.to_string())?;
            print(remote.json, &serde_json::json!({"revoked": key_id}), || format!("revoked {key_id}"))
        }
    }
}

async fn treasury(cmd: TreasuryCommand) -> CliResult {
    match cmd {
        TreasuryCommand::Mint { remote, amount_msat } => {
            let t = remote.client()?.mint(amount_msat).await.map_err(|e| e.to_string())?;
            print(remote.json, &t, || format!("minted {} msat; treasury {} msat", t.amount_msat, t.balance_msat))
        }
        TreasuryCommand::Balance { remote } => {
            let client = remote.client()?;
            let t: coffer_client::Treasury = client.treasury().await.map_err(|e| e.to_string())?;
            print(remote.json, &t, || format!("treasury {} msat", t.balance_msat))
        }
    }
}

async fn invoice(cmd: InvoiceCommand) -> CliResult {
    match cmd {
        InvoiceCommand::Create { remote, amount_msat, memo, expiry_secs } => {
            let req = CreateInvoiceRequest { amount_msat, memo, expiry_secs, ..Default::default() };
            let i = remote.client()?.create_invoice(&req).await.map_err(|e| e.to_string())?;
            print(remote.json, &i, || format!("{}\npayment hash {}", i.bolt11, i.payment_hash))
        }
        InvoiceCommand::Show { remote, payment_hash } => {
            let i = remote.client()?.invoice(&payment_hash).await.map_err(|e| e.to_string())?;
            print(remote.json, &i, || format!("{:?} {} msat, expires {}", i.status, i.amount_msat, i.expires_at))
        }
    }
}
