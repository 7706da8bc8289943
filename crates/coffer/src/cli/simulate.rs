//! `coffer simulate`: an agent economy against a live gateway, to watch in
//! the dashboard. Sellers of answers, data sets and compute post offers and
//! payment requests in rooms; buyers pay them within their budgets (one
//! needs a person's approval above a threshold); an orchestrator funds a
//! tree of sub-agents that buy compute out of its own budget; and a runaway
//! agent pays spam invoices in a loop until the breaker freezes it. They
//! trade safely: the answers seller asks with hold invoices it settles once
//! it served; a failing GPU seller takes hold payments it then cannot serve,
//! and cancels them (its buyers are refunded); the orchestrator hires its
//! workers through escrow, releasing each job on delivery and disputing a
//! bad one, which the operator resolves; and workers buy compute through
//! metered sessions (the seller charges per unit, closing returns the
//! rest). A report at the end: volume, spend against budget, denials by
//! reason, trips, and the trades by how they ended.
//!
//! `coffer demo` starts a gateway on a temporary folder and runs this.

use super::CliResult;
use clap::Args;
use coffer_client::{
    ChargeRequest, Client, CreateAgentRequest, CreateRoomRequest, Error, EscrowTerms, OpenSessionRequest, Outcome,
    PaymentRequestBody, PostMessageRequest,
};
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
/// How long a hired job's escrow waits for the orchestrator, and a hold for
/// its seller: longer than any run, so that every one is decided by a party.
const ESCROW_RELEASE_AFTER_SECS: u32 = 3600;
const HOLD_SECS: u32 = 600;
/// The job whose delivery is bad: the orchestrator disputes it.
const BAD_JOB_ROUND: u32 = 1;
/// A compute session: its maximum, the price of a unit, the most units.
const SESSION_MAX_MSAT: u64 = 120 * SAT;
const UNIT_MSAT: u64 = 20 * SAT;
const UNITS_MAX: u64 = 4;
const _: () = assert!(UNIT_MSAT * UNITS_MAX <= SESSION_MAX_MSAT);

#[derive(Args, Clone)]
pub struct SimulateArgs {
    /// The gateway's URL.
    #[arg(long, env = "COFFER_URL", default_value = "http://127.0.0.1:8420")]
    url: String,
    /// The gateway's operator token.
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
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Chats the market room is bridged to: `coffer demo` takes them from
    /// `COFFER_DEMO_TELEGRAM_CHAT_ID` and `COFFER_DEMO_MATRIX_ROOM_ID`.
    #[arg(skip)]
    bridges: Vec<(&'static str, String)>,
}

impl SimulateArgs {
    /// The settings `coffer demo` runs with.
    pub fn for_demo(url: String, token: String, rounds: u32, pause_ms: u64) -> SimulateArgs {
        let bridges = [("telegram", "COFFER_DEMO_TELEGRAM_CHAT_ID"), ("matrix", "COFFER_DEMO_MATRIX_ROOM_ID")]
            .into_iter()
            .filter_map(|(messenger, env)| Some((messenger, std::env::var(env).ok().filter(|v| !v.is_empty())?)))
            .collect();
        SimulateArgs { url, token, agents: 16, rounds, pause_ms, seed: 16, json: false, bridges }
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
    trade: TradeCounts,
}

/// The trades that waited, by how they ended.
#[derive(Serialize, Default)]
pub struct TradeCounts {
    /// Jobs paid into escrow by the orchestrator.
    escrows_held: u64,
    escrows_released: u64,
    escrows_disputed: u64,
    /// Disputes the operator resolved for the payer.
    escrows_refunded: u64,
    sessions_opened: u64,
    session_charges: u64,
    session_charged_msat: u64,
    sessions_closed: u64,
    /// What closing the sessions gave back to their payers.
    session_returned_msat: u64,
    holds_accepted: u64,
    holds_settled: u64,
    /// Holds of the failing seller, cancelled: their payers refunded.
    holds_cancelled: u64,
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
    bridge_market(&operator, &rooms.market, &args.bridges).await?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut report = Report { rounds, agents: members.len(), ..Report::default() };
    for round in 0..rounds {
        for _ in 0..TRADES_PER_ROUND {
            trade(&members, &rooms, &mut rng, round, &mut report).await?;
        }
        failing_sale(&members, &rooms.market, &mut rng, round, &mut report).await?;
        hire(&operator, &members, &rooms.jobs, &mut rng, round, &mut report).await?;
        buy_compute(&members, &mut rng, round, &mut report).await;
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    finish(&operator, &members, &mut report).await?;
    Ok(report)
}

/// Mints, creates the agents with their roles and constitutions, and builds
/// the orchestrator's tree of workers.
async fn setup(operator: &Client, agents: usize) -> Result<Vec<Member>, Error> {
    operator.mint(100_000_000 * SAT).await?;
    let sellers = ["answers", "datasets", "compute", "translation", "gpu"];
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
    let request =
        CreateAgentRequest { name: name.into(), can_create_subagents: role == Role::Orchestrator, task: None };
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

struct Rooms {
    market: String,
    spam: String,
    /// The orchestrator and its workers.
    jobs: String,
}

/// Bridges the market room to the demo's chats (the gateway runs those
/// bridges when its messenger variables are set), and gives a link code for
/// the operator's messenger user: approvals and alerts then arrive there.
async fn bridge_market(operator: &Client, market: &str, bridges: &[(&'static str, String)]) -> Result<(), Error> {
    for (messenger, chat) in bridges {
        operator.bridge_room(market, messenger, chat).await?;
        let code = operator.create_operator_link_code().await?;
        eprintln!(
            "the market room is bridged to {messenger} {chat}: send /link {} to the bot to act as the operator",
            code.code
        );
    }
    Ok(())
}

/// The market room has everyone; the spam room has the spam seller and the
/// runaway bot; the jobs room, the orchestrator and its workers.
async fn open_rooms(operator: &Client, members: &[Member]) -> Result<Rooms, Error> {
    let all: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let market = operator.create_room(&CreateRoomRequest { name: "market".into(), members: all }).await?;
    let spam_members = members
        .iter()
        .filter(|m| matches!(m.role, Role::Runaway | Role::Seller("spam")))
        .map(|m| m.id.clone())
        .collect();
    let spam = operator.create_room(&CreateRoomRequest { name: "free-tokens".into(), members: spam_members }).await?;
    let team =
        members.iter().filter(|m| matches!(m.role, Role::Orchestrator | Role::Worker)).map(|m| m.id.clone()).collect();
    let jobs = operator.create_room(&CreateRoomRequest { name: "jobs".into(), members: team }).await?;
    Ok(Rooms { market: market.id, spam: spam.id, jobs: jobs.id })
}

async fn trade(
    members: &[Member],
    Rooms { market, spam, .. }: &Rooms,
    rng: &mut StdRng,
    round: u32,
    report: &mut Report,
) -> Result<(), Error> {
    // A seller offers; a buyer (or a worker, for compute) takes it.
    let sellers: Vec<&Member> =
        members.iter().filter(|m| matches!(m.role, Role::Seller(k) if k != "spam" && k != "gpu")).collect();
    let seller = sellers[rng.random_range(0..sellers.len())];
    let Role::Seller(kind) = seller.role else { return Ok(()) };
    let price_sat = match kind {
        "datasets" => rng.random_range(150..450),
        "compute" => rng.random_range(50..250),
        _ => rng.random_range(5..80),
    };
    let offer = format!("{} offers {kind} #{round} for {price_sat} sat", seller.name);
    post(&seller.client, market, PostMessageRequest { text: Some(offer), payment_request: None }).await?;
    // The answers seller is paid by hold invoice: it settles once served.
    let hold = kind == "answers";
    let body = PaymentRequestBody {
        hold,
        hold_secs: hold.then_some(HOLD_SECS),
        ..request(price_sat * SAT, &kind_memo(kind, round))
    };
    let message = post(&seller.client, market, PostMessageRequest { text: None, payment_request: Some(body) }).await?;
    let buyers: Vec<&Member> = members
        .iter()
        .filter(|m| if kind == "compute" { m.role == Role::Worker } else { m.role == Role::Buyer })
        .collect();
    if let Some(buyer) = buyers.get(rng.random_range(0..buyers.len().max(1))) {
        let paid = pay(&buyer.client, market, message.id, report).await;
        if hold && paid.is_some_and(|p| p["status"] == "held") {
            report.trade.holds_accepted += 1;
            let served = format!("{} answered {kind} #{round}", seller.name);
            post(&seller.client, market, PostMessageRequest { text: Some(served), payment_request: None }).await?;
            match seller.client.settle_invoice(&message.payment_hash).await {
                Ok(payment) => {
                    report.trade.holds_settled += 1;
                    report.payments += 1;
                    report.volume_msat += payment.amount_msat;
                }
                Err(e) => deny(report, &e),
            }
        }
    }
    // The runaway bot pays every "free token" the spam seller asks for.
    if let (Some(spammer), Some(bot)) =
        (members.iter().find(|m| m.role == Role::Seller("spam")), members.iter().find(|m| m.role == Role::Runaway))
    {
        for _ in 0..3 {
            let body = request(3 * SAT, "FREE TOKENS, pay 3 sat to claim");
            let spam_message =
                post(&spammer.client, spam, PostMessageRequest { text: None, payment_request: Some(body) });
            pay(&bot.client, spam, spam_message.await?.id, report).await;
        }
    }
    Ok(())
}

fn kind_memo(kind: &str, round: u32) -> String {
    format!("{kind} #{round}")
}

/// A plain payment request, valid ten minutes.
fn request(amount_msat: u64, memo: &str) -> PaymentRequestBody {
    PaymentRequestBody { amount_msat, memo: Some(memo.into()), expiry_secs: Some(600), ..PaymentRequestBody::default() }
}

/// The failing GPU seller asks by hold invoice, a buyer pays, and the seller
/// finds it cannot serve: it cancels the hold, and the buyer is refunded.
async fn failing_sale(
    members: &[Member],
    market: &str,
    rng: &mut StdRng,
    round: u32,
    report: &mut Report,
) -> Result<(), Error> {
    let Some(seller) = members.iter().find(|m| m.role == Role::Seller("gpu")) else { return Ok(()) };
    let buyers: Vec<&Member> = members.iter().filter(|m| m.role == Role::Buyer).collect();
    let Some(buyer) = buyers.get(rng.random_range(0..buyers.len().max(1))) else { return Ok(()) };
    let body = PaymentRequestBody {
        hold: true,
        hold_secs: Some(HOLD_SECS),
        ..request(rng.random_range(20..60) * SAT, &format!("GPU hour #{round}, settled once it runs"))
    };
    let message = post(&seller.client, market, PostMessageRequest { text: None, payment_request: Some(body) }).await?;
    if pay(&buyer.client, market, message.id, report).await.is_some_and(|p| p["status"] == "held") {
        report.trade.holds_accepted += 1;
        let sorry = format!("{}: no GPU free for #{round}; cancelling, you are refunded", seller.name);
        post(&seller.client, market, PostMessageRequest { text: Some(sorry), payment_request: None }).await?;
        match seller.client.cancel_invoice(&message.payment_hash).await {
            Ok(_) => report.trade.holds_cancelled += 1,
            Err(e) => deny(report, &e),
        }
    }
    Ok(())
}

/// The orchestrator hires a worker for a job: the worker asks to be paid
/// into escrow, the orchestrator pays, the worker delivers; the
/// orchestrator releases the escrow, or disputes a bad delivery, which the
/// operator resolves for the orchestrator.
async fn hire(
    operator: &Client,
    members: &[Member],
    jobs: &str,
    rng: &mut StdRng,
    round: u32,
    report: &mut Report,
) -> Result<(), Error> {
    let workers: Vec<&Member> = members.iter().filter(|m| m.role == Role::Worker).collect();
    let (Some(orchestrator), Some(worker)) = (
        members.iter().find(|m| m.role == Role::Orchestrator),
        workers.get(usize::try_from(round).unwrap_or(0) % workers.len().max(1)),
    ) else {
        return Ok(());
    };
    let escrow = EscrowTerms { release_after_secs: ESCROW_RELEASE_AFTER_SECS, on_timeout: Outcome::Refund };
    let body = PaymentRequestBody {
        escrow: Some(escrow),
        ..request(rng.random_range(40..120) * SAT, &format!("job #{round}: label a batch"))
    };
    let message = post(&worker.client, jobs, PostMessageRequest { text: None, payment_request: Some(body) }).await?;
    let Some(payment) = pay(&orchestrator.client, jobs, message.id, report).await else { return Ok(()) };
    let Some(id) = payment["id"].as_str().filter(|_| payment["status"] == "held") else { return Ok(()) };
    report.trade.escrows_held += 1;
    let bad = round == BAD_JOB_ROUND;
    let delivery =
        if bad { format!("job #{round}: done (half the batch)") } else { format!("job #{round}: delivered") };
    post(&worker.client, jobs, PostMessageRequest { text: Some(delivery), payment_request: None }).await?;
    if !bad {
        match orchestrator.client.release(id).await {
            Ok(released) => {
                report.trade.escrows_released += 1;
                report.payments += 1;
                report.volume_msat += released.amount_msat;
            }
            Err(e) => deny(report, &e),
        }
        return Ok(());
    }
    if let Err(e) = orchestrator.client.dispute(id).await {
        deny(report, &e);
        return Ok(());
    }
    report.trade.escrows_disputed += 1;
    operator.resolve(id, Outcome::Refund).await?;
    report.trade.escrows_refunded += 1;
    Ok(())
}

/// A worker buys compute through a metered session: the compute seller
/// charges per unit used, and closing gives the rest back.
async fn buy_compute(members: &[Member], rng: &mut StdRng, round: u32, report: &mut Report) {
    let workers: Vec<&Member> = members.iter().filter(|m| m.role == Role::Worker).collect();
    let (Some(seller), Some(worker)) = (
        members.iter().find(|m| m.role == Role::Seller("compute")),
        workers.get(usize::try_from(round).unwrap_or(0).wrapping_add(1) % workers.len().max(1)),
    ) else {
        return;
    };
    let open = OpenSessionRequest {
        payee: seller.id.clone(),
        max_msat: SESSION_MAX_MSAT,
        expires_in_secs: 600,
        purpose: Some(format!("compute for round {round}")),
        ..OpenSessionRequest::default()
    };
    let session = match worker.client.open_session(&open).await {
        Ok(session) => session,
        Err(e) => return deny(report, &e),
    };
    report.trade.sessions_opened += 1;
    for unit in 0..rng.random_range(1..=UNITS_MAX) {
        let charge = ChargeRequest { amount_msat: UNIT_MSAT, memo: Some(format!("unit {}", unit + 1)) };
        match seller.client.charge(&session.id, &charge, &format!("{}-{unit}", session.id)).await {
            Ok(_) => {
                report.trade.session_charges += 1;
                report.trade.session_charged_msat += UNIT_MSAT;
                report.payments += 1;
                report.volume_msat += UNIT_MSAT;
            }
            Err(e) => deny(report, &e),
        }
    }
    match worker.client.close_session(&session.id).await {
        Ok(closed) => {
            report.trade.sessions_closed += 1;
            report.trade.session_returned_msat += closed.returned_msat.unwrap_or(0);
        }
        Err(e) => deny(report, &e),
    }
}

/// A posted message: its id, and its invoice's payment hash if a request.
struct Posted {
    id: i64,
    payment_hash: String,
}

async fn post(client: &Client, room: &str, body: PostMessageRequest) -> Result<Posted, Error> {
    let message: Value = client.post_message(room, &body).await?;
    let id = message["id"].as_i64().ok_or(Error::Decode { status: 201, message: "a message without id".into() })?;
    let payment_hash = message["invoice"]["payment_hash"].as_str().unwrap_or_default().to_owned();
    Ok(Posted { id, payment_hash })
}

/// Refusals are part of the story, counted by reason.
fn deny(report: &mut Report, e: &Error) {
    *report.denials_by_reason.entry(e.code().unwrap_or("transport").to_owned()).or_default() += 1;
}

/// Pays a request: the payment when made (settled now, or waiting in a
/// hold or escrow: counted once it is settled).
async fn pay(client: &Client, room: &str, message_id: i64, report: &mut Report) -> Option<Value> {
    match client.pay_message(room, message_id).await {
        Ok((202, _)) => report.held_for_approval += 1,
        Ok((_, payment)) if payment["status"] == "held" => return Some(payment),
        Ok((_, payment)) => {
            report.payments += 1;
            report.volume_msat += payment["amount_msat"].as_u64().unwrap_or(0);
            return Some(payment);
        }
        Err(e) => deny(report, &e),
    }
    None
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
    let t = &r.trade;
    println!(
        "escrow:     {} jobs held, {} released, {} disputed, {} refunded by the operator",
        t.escrows_held, t.escrows_released, t.escrows_disputed, t.escrows_refunded
    );
    println!(
        "sessions:   {} opened, {} charges ({} sat), {} closed, {} sat returned",
        t.sessions_opened,
        t.session_charges,
        t.session_charged_msat / SAT,
        t.sessions_closed,
        t.session_returned_msat / SAT
    );
    println!(
        "holds:      {} accepted, {} settled, {} cancelled by the failing seller",
        t.holds_accepted, t.holds_settled, t.holds_cancelled
    );
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
