//! `coffer policy apply|check`: the constitution as a TOML file.
//!
//! The file holds the policy fields of the JSON form at its top level
//! (`max_payment_msat`, `[[budgets]]`, `[payees]`, ...), and optionally
//! `agents = ["agt_..."]`, the agents it applies to (a template names none
//! and takes `--agent`).
//!
//! `check` replays an agent's past payments, oldest first, through the pure
//! policy evaluation with a fresh usage, and reports which the policy would
//! have allowed, held or denied: a dry run before `apply`.

use super::CliResult;
use clap::Subcommand;
use coffer_client::{Client, Payment};
use coffer_core::Msat;
use coffer_core::policy::{Attempt, Decision, Payee, Policy, Usage, evaluate};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The most past payments `check` replays.
const REPLAY_PAYMENTS_MAX: usize = 100_000;
/// The largest policy file read.
const FILE_LEN_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Set the policy of the file's agents (and of every `--agent`).
    Apply {
        #[command(flatten)]
        remote: super::OperatorRemote,
        /// The policy as TOML (see examples/policy.toml).
        file: PathBuf,
        /// An agent to set it on (`agt_…`), besides the file's; repeatable.
        #[arg(long = "agent")]
        agents: Vec<String>,
    },
    /// Replay an agent's past payments against the file's policy.
    Check {
        #[command(flatten)]
        remote: super::OperatorRemote,
        /// The policy as TOML (see examples/policy.toml).
        file: PathBuf,
        /// The agent whose payments to replay (`agt_…`).
        #[arg(long)]
        agent: String,
    },
}

pub async fn run(cmd: PolicyCommand) -> CliResult {
    match cmd {
        PolicyCommand::Apply { remote, file, agents } => apply(remote, &file, agents).await,
        PolicyCommand::Check { remote, file, agent } => check(remote, &file, &agent).await,
    }
}

/// A policy document and the agents it names.
#[derive(Debug)]
pub struct PolicyFile {
    pub policy: Policy,
    pub agents: Vec<String>,
}

/// Reads and validates a TOML policy file; errors name the field.
pub fn read(path: &Path) -> Result<PolicyFile, String> {
    let size = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    if size > FILE_LEN_MAX_BYTES {
        return Err(format!("{}: larger than {FILE_LEN_MAX_BYTES} bytes", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<PolicyFile, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let agents = match table.remove("agents") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| "agents: a list of agent ids".to_owned()))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("agents: a list of agent ids".into()),
    };
    // The JSON form is the one the gateway validates; going through it
    // gives the same rules and the same field-naming errors.
    let json = serde_json::to_string(&table).map_err(|e| e.to_string())?;
    let policy = Policy::from_json(&json).map_err(|e| format!("{}: {}", e.field, e.message))?;
    Ok(PolicyFile { policy, agents })
}

async fn apply(remote: super::OperatorRemote, file: &Path, mut agents: Vec<String>) -> CliResult {
    let doc = read(file)?;
    agents.extend(doc.agents);
    if agents.is_empty() {
        return Err("no agent: name them in the file (agents = [...]) or with --agent".into());
    }
    let client = remote.client()?;
    let body = serde_json::to_value(&doc.policy).map_err(|e| e.to_string())?;
    for agent in &agents {
        client.set_policy(agent, &body).await.map_err(|e| format!("{agent}: {e}"))?;
    }
    super::print(remote.json, &serde_json::json!({"applied": agents}), || format!("applied to {}", agents.join(", ")))
}

#[derive(Serialize, Default)]
struct CheckReport {
    payments: usize,
    allowed: usize,
    held: usize,
    denied: usize,
    denied_by_reason: BTreeMap<String, usize>,
    decisions: Vec<ReplayedDecision>,
}

#[derive(Serialize)]
struct ReplayedDecision {
    payment_id: String,
    created_at: String,
    amount_msat: u64,
    decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn check(remote: super::OperatorRemote, file: &Path, agent: &str) -> CliResult {
    let doc = read(file)?;
    let policy = at_fixed_prices(&doc.policy)?;
    let client = remote.client()?;
    // Payments are listed with the agent's own keys; the operator issues a
    // read key for the replay and revokes it afterwards.
    let key = client.create_key(agent, coffer_client::Scope::Read).await.map_err(|e| e.to_string())?;
    let reader = Client::new(client.base_url(), &key.key).map_err(|e| e.to_string())?;
    let history = history(&reader).await;
    client.revoke_key(&key.id).await.map_err(|e| e.to_string())?;
    let report = replay(&policy, history?);
    super::print(remote.json, &report, || {
        format!(
            "{} past payments: {} allowed, {} held, {} denied {:?}",
            report.payments, report.allowed, report.held, report.denied, report.denied_by_reason
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The policy in msat: limits in a currency are converted at the fixed
/// prices of `COFFER_FIAT_RATES` (the replay has no other prices), which
/// must name every currency the policy uses.
fn at_fixed_prices(policy: &Policy) -> Result<Policy, String> {
    if !policy.has_fiat_limits() {
        return Ok(policy.clone());
    }
    let config = crate::fiat::FiatConfig::from_lookup(|name| {
        (name == crate::fiat::RATES_ENV).then(|| std::env::var(name).ok()).flatten()
    })?;
    let rates = crate::fiat::Rates::new(&config).snapshot();
    coffer_core::policy::resolve(policy, &rates, 0).map(|p| p.into_owned()).map_err(|e| {
        format!("{e}: set {}=CURRENCY:PRICE_OF_ONE_BITCOIN to check it at that price", crate::fiat::RATES_ENV)
    })
}

/// The agent's payments, oldest first.
async fn history(reader: &Client) -> Result<Vec<Payment>, String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = reader.payments(cursor.as_deref()).await.map_err(|e| e.to_string())?;
        all.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() || all.len() >= REPLAY_PAYMENTS_MAX {
            break;
        }
    }
    all.reverse();
    Ok(all)
}

fn replay(policy: &Policy, payments: Vec<Payment>) -> CheckReport {
    let mut usage = Usage::new();
    let mut report = CheckReport { payments: payments.len(), ..CheckReport::default() };
    for p in payments {
        let at_ms = chrono::DateTime::parse_from_rfc3339(&p.created_at).map_or(0, |t| t.timestamp_millis());
        let attempt = Attempt {
            amount: Msat::new(p.amount_msat),
            fee_limit: Msat::new(p.fee_msat),
            payee: Payee { agent_id: p.payee_agent_id.clone(), ..Payee::default() },
        };
        let (decision, reason) = match evaluate(policy, &usage, &attempt, at_ms) {
            Decision::Allow => ("allowed", None),
            Decision::Hold { .. } => ("held", None),
            Decision::Deny { code, .. } => ("denied", Some(code.as_str().to_owned())),
        };
        match decision {
            "denied" => {
                report.denied += 1;
                *report.denied_by_reason.entry(reason.clone().unwrap_or_default()).or_default() += 1;
            }
            kept => {
                usage.record(policy, attempt.spend(), at_ms);
                if kept == "held" { report.held += 1 } else { report.allowed += 1 }
            }
        }
        report.decisions.push(ReplayedDecision {
            payment_id: p.id,
            created_at: p.created_at,
            amount_msat: p.amount_msat,
            decision: decision.to_owned(),
            reason,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_policy_parses_like_json() {
        let doc = parse(
            r#"
agents = ["agt_a", "agt_b"]
max_payment_msat = 50000
approval_above_msat = 200000
[[budgets]]
limit_msat = 1000000
window = "1h"
kind = "rolling"
[payees]
default = "allow"
deny = ["agent:agt_spam"]
"#,
        )
        .unwrap();
        assert_eq!(doc.agents, ["agt_a", "agt_b"]);
        assert_eq!(doc.policy.max_payment_msat, Some(Msat::new(50_000)));
        assert_eq!(doc.policy.budgets.len(), 1);
    }

    #[test]
    fn bad_documents_name_the_field() {
        let err = parse("[[budgets]]\nlimit_msat = 0\nwindow = \"1h\"\nkind = \"rolling\"\n").unwrap_err();
        assert!(err.contains("budgets[0].limit_msat"), "{err}");
        let err = parse("max_payment_msats = 5\n").unwrap_err();
        assert!(err.contains("max_payment_msats"), "{err}");
        assert!(parse("agents = \"agt_a\"\n").unwrap_err().contains("agents"));
    }

    fn payment(id: &str, at: &str, amount_msat: u64) -> Payment {
        Payment {
            id: id.into(),
            status: coffer_client::PaymentStatus::Succeeded,
            payment_hash: String::new(),
            preimage: None,
            amount_msat,
            fee_msat: 0,
            purpose: String::new(),
            payee_agent_id: Some("agt_x".into()),
            created_at: at.into(),
            detail: None,
            refunded_msat: 0,
            task: None,
            tags: Vec::new(),
            escrow: None,
            refunds: Vec::new(),
        }
    }

    #[test]
    fn replay_reports_what_a_stricter_policy_would_have_done() {
        let policy = Policy::from_json(
            r#"{"budgets":[{"limit_msat": 2500, "window": "1h", "kind": "rolling"}], "approval_above_msat": 1500}"#,
        )
        .unwrap();
        let history = vec![
            payment("p1", "2026-11-01T10:00:00Z", 1000),
            payment("p2", "2026-11-01T10:01:00Z", 2000),
            payment("p3", "2026-11-01T10:02:00Z", 1000),
            payment("p4", "2026-11-01T12:00:00Z", 1000),
        ];
        let report = replay(&policy, history);
        let decisions: Vec<&str> = report.decisions.iter().map(|d| d.decision.as_str()).collect();
        // p2 would exceed the hour's 2500 (1000 + 2000); p3 fits; p4 is in a new hour.
        assert_eq!(decisions, ["allowed", "denied", "allowed", "allowed"]);
        assert_eq!(report.denied_by_reason.get("budget-exceeded"), Some(&1));
    }
}
