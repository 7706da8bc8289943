//! `coffer simulate`: an agent economy against a live gateway, to watch in
//! the dashboard. Sellers of answers, data sets and compute post offers and
//! payment requests in rooms; buyers pay them within their budgets (one
//! needs a person's approval above a threshold); an orchestrator funds a
//! tree of sub-agents that buy compute out of its own budget; and a runaway
//! agent pays spam invoices in a loop until the breaker freezes it. A report
//! at the end: volume, spend against budget, denials by reason, trips.
//!
//! `coffer demo` starts a gateway on a temporary folder and runs this.

use super::CliResult;
use clap::Args;
use coffer_client::{Client, CreateAgentRequest, CreateRoomRequest, Error, PostMessageRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

const SAT: u64 = 1_000;
/// Bounds: a run never goes on forever.
const ROUNDS_MAX: u32 = 100_000;
const AGENTS_MIN: usize = 8;
const AGENTS_MAX: usize = 256;
/// Offers taken per round (and three spam invoices each).
const TRADES_PER_ROUND: u32 = 2;

#[derive(Args, Clone)]
pub struct SimulateArgs {
    #[arg(long, env = "COFFER_URL", default_value = "http://127.0.0.1:8420")]
    url: String,
    #[arg(long, env = "COFFER_OPERATOR_TOKEN", hide_env_values = true)]
    token: String,
    /// How many agents take part (at least 8).
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// Trading rounds.
    #[arg(long, default_value_t = 40)]
    rounds: u32,
    /// Pause between rounds, so that a person can watch.
    #[arg(long, default_value_t = 250)]
    pause_ms: u64,
    /// Seed of the agents' choices: the same seed, the same story.
    #[arg(long, default_value_t = 16)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

impl SimulateArgs {
    /// The settings `coffer demo` runs with.
    pub fn for_demo(url: String, token: String, rounds: u32, pause_ms: u64) -> SimulateArgs {
        SimulateArgs { url, token, agents: 16, rounds, pause_ms, seed: 16, json: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Seller(&'static str),
    Buyer,
    Orchestrator,
    Worker,
    Runaway,
}

struct Member {
    id: String,
    name: String,
    role: Role,
    client: Client,
}

#[derive(Serialize, Default)]
pub struct Report {
    rounds: u32,
    agents: usize,
    payments: u64,
    volume_msat: u64,
    held_for_approval: u64,
    denials_by_reason: BTreeMap<String, u64>,
    breaker_trips: Vec<Value>,
    spend_against_budget: Vec<Value>,
}

pub async fn run(args: SimulateArgs) -> CliResult {
    let report = simulate(&args).await.map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn simulate(args: &SimulateArgs) -> Result<Report, Error> {
    let agents = args.agents.clamp(AGENTS_MIN, AGENTS_MAX);
    let rounds = args.rounds.min(ROUNDS_MAX);
    let operator = Client::new(&args.url, &args.token)?;
    let members = setup(&operator, agents).await?;
    let rooms = open_rooms(&operator, &members).await?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut report = Report { rounds, agents: members.len(), ..Report::default() };
    for round in 0..rounds {
        for _ in 0..TRADES_PER_ROUND {
            trade(&members, &rooms, &mut rng, round, &mut report).await?;
        }
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    finish(&operator, &members, &mut report).await?;
    Ok(report)
}

/// Mints, creates the agents with their roles and constitutions, and builds
/// the orchestrator's tree of workers.
async fn setup(operator: &Client, agents: usize) -> Result<Vec<Member>, Error> {
    operator.mint(100_000_000 * SAT).await?;
    let sellers = ["answers", "datasets", "compute", "translation"];
    let mut members = Vec::with_capacity(agents);
    for kind in sellers {
        members.push(create(operator, &format!("{kind}-seller"), Role::Seller(kind), 0, None).await?);
    }
    members.push(create(operator, "spam-seller", Role::Seller("spam"), 0, None).await?);
    let runaway_policy = json!({
        "budgets": [{"limit_msat": 200 * SAT, "window": "1h", "kind": "rolling"}],
        "breaker": {"max_payments_to_one_payee": 12, "window": "1m"}});
    members.push(create(operator, "runaway-bot", Role::Runaway, 10_000 * SAT, Some(runaway_policy)).await?);
    let orchestrator_policy = json!({"budgets": [{"limit_msat": 3_000 * SAT, "window": "1h", "kind": "rolling"}]});
    let orchestrator =
        create(operator, "orchestrator", Role::Orchestrator, 20_000 * SAT, Some(orchestrator_policy)).await?;
    let workers = agents.saturating_sub(members.len() + 1).min(3);
    let mut tree = Vec::new();
    for i in 0..workers {
        tree.push(subagent(operator, &orchestrator, &format!("worker-{}", i + 1)).await?);
    }
    members.push(orchestrator);
    members.extend(tree);
    let mut i = 0;
    while members.len() < agents {
        i += 1;
        let mut policy = json!({
            "max_payment_msat": 500 * SAT,
            "budgets": [{"limit_msat": 1_500 * SAT, "window": "1h", "kind": "rolling"}],
            "max_payments_per_minute": 30});
        if i == 1 {
            // One buyer asks a person before any payment above 300 sat.
            policy["approval_above_msat"] = json!(300 * SAT);
        }
        members.push(create(operator, &format!("buyer-{i}"), Role::Buyer, 5_000 * SAT, Some(policy)).await?);
    }
    Ok(members)
}

async fn create(
    operator: &Client,
    name: &str,
    role: Role,
    fund_msat: u64,
    policy: Option<Value>,
) -> Result<Member, Error> {
    let request = CreateAgentRequest { name: name.into(), can_create_subagents: role == Role::Orchestrator };
    let created = operator.create_agent_with(&request).await?;
    if fund_msat > 0 {
        operator.fund_agent(&created.id, fund_msat).await?;
    }
    if let Some(policy) = policy {
        operator.set_policy(&created.id, &policy).await?;
    }
    let client = Client::new(operator.base_url(), &created.key)?;
    Ok(Member { id: created.id, name: name.into(), role, client })
}

/// A worker created, funded and governed by the orchestrator itself.
async fn subagent(operator: &Client, parent: &Member, name: &str) -> Result<Member, Error> {
    let created = parent.client.create_agent(name).await?;
    parent.client.fund_agent(&created.id, 2_000 * SAT).await?;
    let policy = json!({"max_payment_msat": 300 * SAT, "budgets": [{"limit_msat": 1_000 * SAT, "window": "1h", "kind": "rolling"}]});
    parent.client.set_policy(&created.id, &policy).await?;
    let client = Client::new(operator.base_url(), &created.key)?;
    Ok(Member { id: created.id, name: name.into(), role: Role::Worker, client })
}

/// The market room has everyone; the spam room has the spam seller and the
/// runaway bot.
async fn open_rooms(operator: &Client, members: &[Member]) -> Result<(String, String), Error> {
    let all: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let market = operator.create_room(&CreateRoomRequest { name: "market".into(), members: all }).await?;
    let spam_members = members
        .iter()
        .filter(|m| matches!(m.role, Role::Runaway | Role::Seller("spam")))
        .map(|m| m.id.clone())
        .collect();
    let spam = operator.create_room(&CreateRoomRequest { name: "free-tokens".into(), members: spam_members }).await?;
    Ok((market.id, spam.id))
}

async fn trade(
    members: &[Member],
    (market, spam): &(String, String),
    rng: &mut StdRng,
    round: u32,
    report: &mut Report,
) -> Result<(), Error> {
    // A seller offers; a buyer (or a worker, for compute) takes it.
    let sellers: Vec<&Member> = members.iter().filter(|m| matches!(m.role, Role::Seller(k) if k != "spam")).collect();
    let seller = sellers[rng.random_range(0..sellers.len())];
    let Role::Seller(kind) = seller.role else { return Ok(()) };
    let price_sat = match kind {
        "datasets" => rng.random_range(150..450),
        "compute" => rng.random_range(50..250),
        _ => rng.random_range(5..80),
    };
    let offer = format!("{} offers {kind} #{round} for {price_sat} sat", seller.name);
    post(&seller.client, market, PostMessageRequest { text: Some(offer), payment_request: None }).await?;
    let memo = format!("{kind} #{round}");
    let request = PostMessageRequest {
        text: None,
        payment_request: Some(coffer_client::PaymentRequestBody {
            amount_msat: price_sat * SAT,
            memo: Some(memo),
            expiry_secs: Some(600),
        }),
    };
    let message = post(&seller.client, market, request).await?;
    let buyers: Vec<&Member> = members
        .iter()
        .filter(|m| if kind == "compute" { m.role == Role::Worker } else { m.role == Role::Buyer })
        .collect();
    if let Some(buyer) = buyers.get(rng.random_range(0..buyers.len().max(1))) {
        pay(&buyer.client, market, message, report).await;
    }
    // The runaway bot pays every "free token" the spam seller asks for.
    if let (Some(spammer), Some(bot)) =
        (members.iter().find(|m| m.role == Role::Seller("spam")), members.iter().find(|m| m.role == Role::Runaway))
    {
        for _ in 0..3 {
            let request = PostMessageRequest {
                text: None,
                payment_request: Some(coffer_client::PaymentRequestBody {
                    amount_msat: 3 * SAT,
                    memo: Some("FREE TOKENS, pay 3 sat to claim".into()),
                    expiry_secs: Some(600),
                }),
            };
            let spam_message = post(&spammer.client, spam, request).await?;
            pay(&bot.client, spam, spam_message, report).await;
        }
    }
    Ok(())
}

async fn post(client: &Client, room: &str, body: PostMessageRequest) -> Result<i64, Error> {
    let message: Value = client.post_message(room, &body).await?;
    message["id"].as_i64().ok_or(Error::Decode { status: 201, message: "a message without id".into() })
}

/// Pays a request; refusals are part of the story, counted by reason.
async fn pay(client: &Client, room: &str, message_id: i64, report: &mut Report) {
    match client.pay_message(room, message_id).await {
        Ok((202, _)) => report.held_for_approval += 1,
        Ok((_, payment)) => {
            report.payments += 1;
            report.volume_msat += payment["amount_msat"].as_u64().unwrap_or(0);
        }
        Err(e) => *report.denials_by_reason.entry(e.code().unwrap_or("transport").to_owned()).or_default() += 1,
    }
}

async fn finish(operator: &Client, members: &[Member], report: &mut Report) -> Result<(), Error> {
    for m in members.iter().filter(|m| !matches!(m.role, Role::Seller(_))) {
        let budget = operator.budget(&m.id).await?;
        let window = &budget["windows"][0];
        report.spend_against_budget.push(json!({
            "agent": m.name,
            "spent_msat": window["spent_msat"],
            "limit_msat": window["limit_msat"],
            "balance_msat": operator.agent(&m.id).await?.balance_msat,
        }));
    }
    let trips = operator.audit(0, "action=breaker.tripped").await?;
    report.breaker_trips = trips
        .into_iter()
        .map(|t| {
            let agent = t.record["agent_id"].as_str().unwrap_or_default().to_owned();
            let name = members.iter().find(|m| m.id == agent).map_or(agent, |m| m.name.clone());
            json!({"agent": name, "rule": t.record["rule"], "detail": t.record["detail"]})
        })
        .collect();
    Ok(())
}

fn print_report(r: &Report) {
    println!("simulation: {} rounds, {} agents", r.rounds, r.agents);
    println!("volume:     {} payments, {} sat", r.payments, r.volume_msat / SAT);
    println!("held:       {} payments waiting for a person (see the dashboard's approvals)", r.held_for_approval);
    println!("denials:    {:?}", r.denials_by_reason);
    for trip in &r.breaker_trips {
        println!("breaker:    {} frozen ({}): {}", trip["agent"], trip["rule"], trip["detail"]);
    }
    println!("spend against budget:");
    for s in &r.spend_against_budget {
        let (spent, limit) = (s["spent_msat"].as_u64().unwrap_or(0), s["limit_msat"].as_u64().unwrap_or(0));
        let limit = if limit == 0 { "no budget".to_owned() } else { format!("{} sat", limit / SAT) };
        println!("  {:<14} {:>7} sat of {limit}", s["agent"].as_str().unwrap_or(""), spent / SAT);
    }
}
