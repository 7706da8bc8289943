//! The Model Context Protocol server that acts for one agent, through the
//! gateway's HTTP API with that agent's key. A language model gets tools to
//! read its wallet, receive, pay within the operator's policy, and talk in
//! rooms. Every gateway failure comes back as a tool result the model reads
//! (see [`answer`]).
//!
//! Two transports serve the same tools: `coffer mcp` over stdio (stdout
//! carries only the protocol, logs go to stderr) and streamable HTTP at
//! `/mcp` on `coffer serve` ([`http`]).

pub mod answer;
pub mod http;
pub mod invoice;
pub mod preview;
pub mod trade;

use coffer_client::{
    Client, CreateInvoiceRequest, PayOutcome, PayRequest, PaymentRequestBody, PaymentStatus, PostMessageRequest,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::schemars::JsonSchema;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The name the server reports in `initialize`.
pub const SERVER_NAME: &str = "coffer";

/// Every tool's name, in the order they are listed.
pub const TOOL_NAMES: &[&str] = &[
    "get_balance",
    "get_budget",
    "create_invoice",
    "pay_invoice",
    "decode_invoice",
    "list_payments",
    "list_rooms",
    "read_room",
    "post_message",
    "request_payment",
    "pay_request",
    "fetch_paid",
    "create_hold_invoice",
    "settle_invoice",
    "cancel_invoice",
    "pay_into_escrow",
    "release_escrow",
    "dispute_escrow",
    "refund_payment",
    "get_payment",
    "list_escrows",
    "open_session",
    "charge_session",
    "get_session",
    "close_session",
    "preview_payment",
];

const INSTRUCTIONS: &str = "You act for one agent of a coffer gateway: a Lightning wallet whose spending an operator \
bounds with a policy (budgets per window, a largest single payment, allowed payees, approvals). \
All amounts are integer millisatoshis (msat): 1 sat = 1000 msat. \
Before paying, decode_invoice shows what an invoice asks for. pay_invoice is safe to retry: the same invoice is \
never paid twice. A refusal is a normal answer that starts with `denied:` and says what to do next; a payment \
above the operator's approval threshold answers `held for approval` and waits for a person: do not pay it again. \
To trade safely with another agent: as a seller, create_hold_invoice and settle_invoice once you delivered; as a \
buyer, pay_into_escrow and release_escrow once you checked the delivery (dispute_escrow if it is bad); for metered \
use, open_session (the seller charges with charge_session, close_session returns the rest).";

/// The MCP server of one agent.
#[derive(Clone)]
pub struct CofferMcp {
    caller: Caller,
    // Read by the code `#[tool_handler]` generates.
    #[allow(dead_code)]
    tool_router: ToolRouter<CofferMcp>,
}

/// Whose key a tool call uses.
#[derive(Clone)]
enum Caller {
    /// stdio: one agent for the whole session, from `COFFER_AGENT_KEY`.
    Fixed(Client),
    /// HTTP: the key that authenticated the current request (see
    /// [`http::AgentSecret`]), so a session never acts with another
    /// request's key. The connection pool is shared.
    PerRequest { http: reqwest::Client, base_url: String, fetcher: Fetcher },
}

/// Over `/mcp` the gateway itself would fetch what `fetch_paid` asks, from
/// inside the operator's network, so it fetches only through the egress
/// guard (no loopback, private or link-local destination, on any redirect
/// hop), only for a key that may spend, in bounded time and size. Over
/// stdio the fetch comes from the agent's own machine and is the agent's.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    egress: std::sync::Arc<crate::egress::Egress>,
}

/// The longest a fetch over `/mcp` may take, each request of it.
pub const FETCH_TIMEOUT_MS: u64 = 30_000;

impl Fetcher {
    pub fn new(egress: &crate::egress::Egress) -> Result<Fetcher, String> {
        let timeout = std::time::Duration::from_millis(FETCH_TIMEOUT_MS);
        let builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        let http = egress.client(builder, crate::egress::Redirects::Checked)?;
        Ok(Fetcher { http, egress: std::sync::Arc::new(egress.clone()) })
    }

    /// The client to fetch `url` with for a key that `may_spend`, or the
    /// refusal the model reads.
    fn admit(&self, url: &str, may_spend: bool) -> Result<reqwest::Client, String> {
        if !may_spend {
            return Err("denied: forbidden — over /mcp the gateway fetches for you only with a key of the spend \
                scope. Nothing was fetched or paid; ask your operator for such a key."
                .into());
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("error: invalid-url — {url:?}: {e}"))?;
        self.egress.check_url(&parsed).map_err(|refused| refused_answer(&refused))?;
        Ok(self.http.clone())
    }
}

/// The answer for a fetch the egress guard stopped (on a redirect hop, or
/// at a name's resolution).
fn transport_refusal(e: &coffer_client::Error) -> Option<String> {
    match e {
        coffer_client::Error::Transport(e) => crate::egress::refusal(e).map(refused_answer),
        _ => None,
    }
}

fn refused_answer(refused: &crate::egress::Refused) -> String {
    format!(
        "denied: destination-refused — {refused}. The gateway fetches only public addresses (and those its \
         operator allows). Nothing was paid; do not retry this URL."
    )
}

type ToolResult = Result<CallToolResult, ErrorData>;

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct CreateInvoiceArgs {
    /// The amount to receive, in millisatoshis (1 sat = 1000 msat). Greater than zero.
    pub amount_msat: u64,
    /// Shown to the payer: what the payment is for. At most 639 bytes.
    #[serde(default)]
    pub memo: Option<String>,
    /// Seconds until the invoice expires: 1 to 604800 (7 days). Default 3600 (one hour).
    #[serde(default)]
    pub expiry_secs: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct PayInvoiceArgs {
    /// The BOLT11 invoice to pay (starts with `lnbc`, `lntb`, `lntbs` or `lnbcrt`; a `lightning:` prefix is fine).
    pub bolt11: String,
    /// Why you pay, in a few words: kept in the operator's audit trail. At most 512 bytes. Use the same
    /// purpose when you retry the same invoice.
    pub purpose: String,
    /// The task this serves, for the operator's cost reports (at most 128 bytes). Leave it out to use
    /// the task your agent was given.
    #[serde(default)]
    pub task: Option<String>,
    /// Up to 8 tags for the operator's cost reports: letters, digits and `-_.:/`.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct DecodeInvoiceArgs {
    /// The BOLT11 invoice to read.
    pub bolt11: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ListPaymentsArgs {
    /// The `next_cursor` of the previous page, to read older payments. Omit for the newest.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ReadRoomArgs {
    /// The room's id (from list_rooms).
    pub room_id: String,
    /// Return only messages with an id greater than this; 0 or omitted for the start of the room.
    #[serde(default)]
    pub after: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct PostMessageArgs {
    /// The room's id (from list_rooms).
    pub room_id: String,
    /// The message text.
    pub text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct RequestPaymentArgs {
    /// The room's id (from list_rooms).
    pub room_id: String,
    /// The amount you ask for, in millisatoshis (1 sat = 1000 msat).
    pub amount_msat: u64,
    /// What the payment is for; shown to the room and to the payer.
    pub memo: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct FetchPaidArgs {
    /// The http or https URL to GET.
    pub url: String,
}

/// The most of a fetched body a tool answer carries: a model's context is
/// not the place for a large download.
const FETCH_TEXT_LEN_MAX_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct PayRequestArgs {
    /// The room's id.
    pub room_id: String,
    /// The id of the payment-request message (from read_room).
    pub message_id: i64,
}

/// The Idempotency-Key of a payment through `pay_invoice`: derived from the
/// invoice alone, so a retried call never pays twice.
pub fn idempotency_key(bolt11: &str) -> String {
    let mut normal = bolt11.trim().to_ascii_lowercase();
    if let Some(rest) = normal.strip_prefix("lightning:") {
        normal = rest.to_owned();
    }
    format!("mcp-{}", hex::encode(Sha256::digest(normal.as_bytes())))
}

fn sats(msat: u64) -> String {
    if msat.is_multiple_of(1000) {
        format!("{} sat", msat / 1000)
    } else {
        format!("{}.{:03} sat", msat / 1000, msat % 1000)
    }
}

/// A message without its QR codes, which are for people and long.
fn without_qr(mut message: Value) -> Value {
    if let Some(invoice) = message.get_mut("invoice").and_then(Value::as_object_mut) {
        invoice.remove("qr_svg");
        invoice.remove("qr_png");
    }
    message
}

fn payment_answer(payment: &coffer_client::Payment) -> CallToolResult {
    match payment.status {
        PaymentStatus::Succeeded => answer::ok(
            format!(
                "paid {} msat ({}) with a fee of {} msat; payment id {}. The preimage is the proof of payment.",
                payment.amount_msat,
                sats(payment.amount_msat),
                payment.fee_msat,
                payment.id
            ),
            payment,
        ),
        PaymentStatus::Pending => answer::ok(
            format!(
                "pending: payment {} of {} msat is on its way and not final yet; do not pay again. \
                 list_payments shows when it completes.",
                payment.id, payment.amount_msat
            ),
            payment,
        ),
        PaymentStatus::Held => answer::ok(
            format!(
                "held: {} msat left your spendable balance and waits in a hold or escrow (payment {}). The payee is \
                 paid when it settles the hold or you release the escrow (release_escrow); otherwise it comes back \
                 to you. Do not pay again.",
                payment.amount_msat, payment.id
            ),
            payment,
        ),
        PaymentStatus::Refunded => answer::ok(
            format!("refunded: payment {} of {} msat came back to you in full.", payment.id, payment.amount_msat),
            payment,
        ),
        PaymentStatus::Failed => {
            let json = serde_json::to_string_pretty(payment).unwrap_or_default();
            answer::fail(format!(
                "error: payment-failed — payment {} of {} msat did not go through. Check get_balance, then ask the \
                 payee for a new invoice if needed.\n{json}",
                payment.id, payment.amount_msat
            ))
        }
    }
}

/// `fee_limit_msat` is reserved too for an invoice of another node, paid
/// through the Lightning backend once approved.
fn held_answer(approval_id: &str, amount_msat: u64, fee_limit_msat: u64, value: &Value) -> CallToolResult {
    let reserved = match fee_limit_msat {
        0 => "its amount is reserved".to_owned(),
        fee => format!("its amount plus a routing fee limit of {fee} msat is reserved"),
    };
    answer::ok(
        format!(
            "held for approval: approval id {approval_id} ({amount_msat} msat). The operator's policy asks a person \
             to approve this payment; it is not paid yet and {reserved}. Do not pay it again; \
             get_balance and list_payments show the outcome once a person decides."
        ),
        value,
    )
}

// Each tool's annotations say, for the client, what a call does: read-only;
// destructive when money leaves for good or something ends for good;
// idempotent when a repeated call with the same arguments changes nothing
// more (an Idempotency-Key derived from them, or a state that moves once);
// open-world when it reaches beyond this gateway (another node, a URL).
#[tool_router]
impl CofferMcp {
    pub fn new(client: Client) -> CofferMcp {
        CofferMcp {
            caller: Caller::Fixed(client),
            tool_router: Self::tool_router() + Self::trade_router() + Self::preview_router(),
        }
    }

    /// A server whose every call uses the key of the HTTP request it came in.
    pub fn per_request(http: reqwest::Client, base_url: String, fetcher: Fetcher) -> CofferMcp {
        let tool_router = Self::tool_router() + Self::trade_router() + Self::preview_router();
        CofferMcp { caller: Caller::PerRequest { http, base_url, fetcher }, tool_router }
    }

    /// The client acting for the caller of this tool call. Over HTTP the
    /// `/mcp` route has authenticated the request before the call arrives,
    /// so a missing secret here is a wiring fault: a protocol error, not a
    /// panic.
    fn client(&self, ctx: &RequestContext<RoleServer>) -> Result<Client, ErrorData> {
        match &self.caller {
            Caller::Fixed(client) => Ok(client.clone()),
            Caller::PerRequest { http, base_url, .. } => {
                let secret = agent_secret(ctx)?;
                Ok(Client::with_http(http.clone(), base_url, secret.expose()))
            }
        }
    }

    /// The client for `fetch_paid` of `url`: over `/mcp` its fetches go
    /// through the [`Fetcher`]; `Err` is the answer to give instead.
    fn fetch_client(&self, ctx: &RequestContext<RoleServer>, url: &str) -> Result<Result<Client, String>, ErrorData> {
        let client = self.client(ctx)?;
        match &self.caller {
            Caller::Fixed(_) => Ok(Ok(client)),
            Caller::PerRequest { fetcher, .. } => {
                let may_spend = agent_secret(ctx)?.may_spend();
                Ok(fetcher.admit(url, may_spend).map(|http| client.with_fetch_http(http)))
            }
        }
    }

    #[tool(
        description = "Your wallet: balance_msat (all your funds), pending_msat (reserved for payments not final \
        yet, or held for approval) and available_msat (what you can spend now). Amounts are millisatoshis; \
        1 sat = 1000 msat.",
        annotations(title = "Wallet balance", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_balance(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.wallet().await {
            Ok(w) => answer::ok(
                format!(
                    "balance {} msat ({}); available to spend now {} msat; pending {} msat. \
                     Amounts are millisatoshis (1 sat = 1000 msat).",
                    w.balance_msat,
                    sats(w.balance_msat),
                    w.available_msat,
                    w.pending_msat
                ),
                &w,
            ),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Your spending limits as the operator set them: per budget window what is spent and what \
        remains (millisatoshis; 1 sat = 1000 msat), the lifetime allowance and the policy. A payment above what \
        remains is denied with budget-exceeded.",
        annotations(title = "Budgets and what remains", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_budget(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let client = self.client(&ctx)?;
        let wallet = match client.wallet().await {
            Ok(w) => w,
            Err(e) => return Ok(answer::from_error(&e)),
        };
        Ok(match client.budget(&wallet.agent_id).await {
            Ok(b) => answer::ok(
                format!(
                    "budget of agent {}: spent and remaining per window, in millisatoshis (1 sat = 1000 msat).",
                    wallet.agent_id
                ),
                &b,
            ),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Create a BOLT11 invoice to receive a payment. amount_msat is millisatoshis; \
        1 sat = 1000 msat. Give the returned bolt11 to the payer; the invoice expires after expiry_secs \
        (default 3600). Needs a key with the receive scope.",
        annotations(
            title = "Create an invoice",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn create_invoice(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CreateInvoiceArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let request = CreateInvoiceRequest {
            amount_msat: args.amount_msat,
            memo: args.memo,
            expiry_secs: args.expiry_secs,
            ..Default::default()
        };
        Ok(match client.create_invoice(&request).await {
            Ok(i) => answer::ok(
                format!(
                    "invoice for {} msat ({}), expires at {}. Give this bolt11 to the payer: {}",
                    i.amount_msat,
                    sats(i.amount_msat),
                    i.expires_at,
                    i.bolt11
                ),
                &i,
            ),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Pay a BOLT11 invoice from your wallet, within the operator's policy. Safe to retry: the \
        same invoice is never paid twice (a retry returns the first answer). Answers: paid (with the preimage, \
        the proof of payment); `held for approval` (a person must approve; do not pay again); or `denied: <reason>` \
        with what to do next, e.g. budget-exceeded, amount-too-large, insufficient-balance. Amounts are \
        millisatoshis; 1 sat = 1000 msat. Use decode_invoice first to check what you pay.",
        annotations(
            title = "Pay an invoice",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn pay_invoice(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PayInvoiceArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let key = idempotency_key(&args.bolt11);
        let request = PayRequest {
            bolt11: args.bolt11,
            purpose: Some(args.purpose),
            task: args.task,
            tags: args.tags,
            ..Default::default()
        };
        Ok(match client.pay(&request, &key).await {
            Ok(PayOutcome::Done(p)) => payment_answer(&p),
            Ok(PayOutcome::Held(a)) => {
                let value = serde_json::to_value(&a).unwrap_or_default();
                held_answer(&a.id, a.amount_msat, a.fee_limit_msat, &value)
            }
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Read a BOLT11 invoice without paying it: amount_msat (millisatoshis; 1 sat = 1000 msat), \
        payee (the node public key), description, creation time, expiry and whether it has expired. The \
        signature is checked: an invoice that fails is damaged or forged and must not be paid.",
        annotations(title = "Read an invoice", read_only_hint = true, open_world_hint = false)
    )]
    async fn decode_invoice(&self, Parameters(args): Parameters<DecodeInvoiceArgs>) -> ToolResult {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(match invoice::decode(&args.bolt11, now) {
            Ok(d) => {
                let amount = match d.amount_msat {
                    Some(a) => format!("{a} msat ({})", sats(a)),
                    None => "no amount (coffer cannot pay it)".to_owned(),
                };
                let state = if d.expired { "EXPIRED" } else { "valid" };
                answer::ok(
                    format!(
                        "{state} {} invoice for {amount} to payee {}, description {:?}, expires at {}.",
                        d.network,
                        d.payee,
                        d.description.as_deref().unwrap_or(""),
                        d.expires_at
                    ),
                    &d,
                )
            }
            Err(text) => answer::fail(text),
        })
    }

    #[tool(
        description = "Your payments, newest first, a page at a time: status (succeeded, pending, failed), \
        amount_msat and fee_msat (millisatoshis; 1 sat = 1000 msat), purpose and time. Pass next_cursor as cursor \
        for older ones.",
        annotations(title = "Your payments", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_payments(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ListPaymentsArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.payments(args.cursor.as_deref()).await {
            Ok(page) => {
                let more = if page.next_cursor.is_some() { " Older ones: pass next_cursor as cursor." } else { "" };
                answer::ok(format!("{} payments, newest first.{more}", page.items.len()), &page)
            }
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "The chat rooms you are a member of: id, name, members (agent ids). Use read_room to \
        read one.",
        annotations(title = "Your chat rooms", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_rooms(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.rooms(None).await {
            Ok(page) => answer::ok(format!("{} rooms.", page.items.len()), &page.items),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Read the messages of a room, oldest first, after message id `after` (0 for the start). \
        A message of kind payment_request carries an invoice (amount_msat in millisatoshis; 1 sat = 1000 msat) \
        and, once paid, a receipt; pay one with pay_request. Pass the last id you saw as `after` to read only new \
        messages.",
        annotations(title = "Read a room", read_only_hint = true, open_world_hint = false)
    )]
    async fn read_room(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ReadRoomArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let after = args.after.unwrap_or(0);
        Ok(match client.messages(&args.room_id, after).await {
            Ok(messages) => {
                let last = messages.last().map(|m| m.id).unwrap_or(after);
                let values: Vec<Value> =
                    messages.iter().map(|m| without_qr(serde_json::to_value(m).unwrap_or_default())).collect();
                answer::ok(
                    format!(
                        "{} messages in room {} after {after}. Next time pass after={last} to read only newer ones.",
                        values.len(),
                        args.room_id
                    ),
                    &values,
                )
            }
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Post a text message to a room you are a member of.",
        annotations(
            title = "Post a message",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn post_message(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PostMessageArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let request = PostMessageRequest { text: Some(args.text), payment_request: None };
        Ok(match client.post_message(&args.room_id, &request).await {
            Ok(m) => {
                let id = m.get("id").cloned().unwrap_or_default();
                answer::ok(format!("posted message {id} to room {}.", args.room_id), &without_qr(m))
            }
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Ask the members of a room to pay you: posts a payment request with an invoice for \
        amount_msat (millisatoshis; 1 sat = 1000 msat) that expires in an hour. Another member pays it with \
        pay_request; read_room shows the receipt once paid.",
        annotations(
            title = "Ask a room to pay you",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn request_payment(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<RequestPaymentArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let body = PaymentRequestBody { amount_msat: args.amount_msat, memo: Some(args.memo), ..Default::default() };
        let request = PostMessageRequest { text: None, payment_request: Some(body) };
        Ok(match client.post_message(&args.room_id, &request).await {
            Ok(m) => {
                let id = m.get("id").cloned().unwrap_or_default();
                answer::ok(
                    format!(
                        "posted payment request {id} for {} msat ({}) to room {}.",
                        args.amount_msat,
                        sats(args.amount_msat),
                        args.room_id
                    ),
                    &without_qr(m),
                )
            }
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Pay a payment request posted in a room (a message of kind payment_request, from \
        read_room), within the operator's policy, like pay_invoice: paid, `held for approval` (a person must \
        approve; do not pay again), or `denied: <reason>` with what to do next. An already paid request answers \
        invoice-already-paid. Amounts are millisatoshis; 1 sat = 1000 msat.",
        annotations(
            title = "Pay a payment request",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn pay_request(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PayRequestArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.pay_message(&args.room_id, args.message_id).await {
            Ok((202, value)) => {
                let id = value.get("id").and_then(Value::as_str).unwrap_or("?").to_owned();
                let amount = value.get("amount_msat").and_then(Value::as_u64).unwrap_or(0);
                let fee_limit = value.get("fee_limit_msat").and_then(Value::as_u64).unwrap_or(0);
                held_answer(&id, amount, fee_limit, &value)
            }
            Ok((_, value)) => match serde_json::from_value::<coffer_client::Payment>(value.clone()) {
                Ok(p) => payment_answer(&p),
                Err(_) => answer::ok("paid.", &value),
            },
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "GET an HTTP URL that may sit behind an L402 paywall (a paid API), paying it from your \
        wallet within the operator's policy: the price per request and the budget of the URL's domain are limited. \
        A token you already paid for is reused, so the same access is never paid twice. Answers the HTTP status, \
        `paid_msat` (0 when nothing was paid now; millisatoshis, 1 sat = 1000 msat) and the body (text, cut at 16 \
        KiB). `denied: <reason>` means nothing was paid: amount-too-large (the price is above your limit), \
        budget-exceeded (the domain's or your budget is used up), payee-not-allowed (the domain is not allowed); \
        do not retry, tell your operator. A status 402 after paying means the server refused its own token.",
        annotations(
            title = "Fetch a paid URL",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn fetch_paid(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<FetchPaidArgs>,
    ) -> ToolResult {
        let client = match self.fetch_client(&ctx, &args.url)? {
            Ok(client) => client,
            Err(refusal) => return Ok(answer::fail(refusal)),
        };
        Ok(match client.fetch_l402(&args.url).await {
            Ok(fetched) => {
                let body = &fetched.body[..fetched.body.len().min(FETCH_TEXT_LEN_MAX_BYTES)];
                let value = serde_json::json!({
                    "status": fetched.status, "paid_msat": fetched.paid_msat,
                    "truncated": fetched.body.len() > FETCH_TEXT_LEN_MAX_BYTES,
                    "body": String::from_utf8_lossy(body),
                });
                let summary = format!("HTTP {}; paid {} msat.", fetched.status, fetched.paid_msat);
                answer::ok(summary, &value)
            }
            Err(e) => match transport_refusal(&e) {
                Some(refusal) => answer::fail(refusal),
                None => answer::from_error(&e),
            },
        })
    }
}

/// The key that authenticated this call over `/mcp`. The route admits no
/// request without one, so a missing key is a wiring fault: a protocol
/// error, not a panic.
fn agent_secret(ctx: &RequestContext<RoleServer>) -> Result<&http::AgentSecret, ErrorData> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<http::AgentSecret>())
        .ok_or_else(|| ErrorData::internal_error("this call carried no agent key", None))
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CofferMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION"))
                    .with_title("coffer: a Lightning wallet with bounded spending"),
            )
            .with_instructions(INSTRUCTIONS)
    }
}

/// Serves MCP over stdin and stdout until the client closes them.
/// With a `signer`, every write request is signed (RFC 9421).
pub async fn serve_stdio(
    url: &str,
    agent_key: &str,
    signer: Option<std::sync::Arc<coffer_client::signing::Signer>>,
) -> Result<(), String> {
    init_tracing();
    let client = Client::new(url, agent_key).map_err(|e| format!("cannot make the HTTP client: {e}"))?;
    let client = match signer {
        Some(signer) => client.with_signer(signer),
        None => client,
    };
    let running = CofferMcp::new(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP session did not start: {e}"))?;
    running.waiting().await.map_err(|e| format!("the MCP session failed: {e}"))?;
    Ok(())
}

/// Logs go to stderr: stdout is the protocol's.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    crate::logging::init(filter);
}

#[cfg(test)]
mod annotations_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_key_depends_on_the_invoice_only() {
        let a = idempotency_key("lnbcrt1abc");
        assert_eq!(a, idempotency_key(" LIGHTNING:LNBCRT1ABC "));
        assert_ne!(a, idempotency_key("lnbcrt1abd"));
        assert!(a.len() <= 128 && a.starts_with("mcp-"));
    }

    #[test]
    fn a_held_payment_to_another_node_names_the_reserved_fee_limit() {
        let text = |r: CallToolResult| serde_json::to_value(&r.content).unwrap().to_string();
        let outside = text(held_answer("apr_1", 100_000, 10_000, &serde_json::json!({})));
        assert!(outside.contains("held for approval: approval id apr_1 (100000 msat)"), "{outside}");
        assert!(outside.contains("its amount plus a routing fee limit of 10000 msat is reserved"), "{outside}");
        let inside = text(held_answer("apr_2", 5_000, 0, &serde_json::json!({})));
        assert!(inside.contains("its amount is reserved") && !inside.contains("fee limit"), "{inside}");
    }

    #[test]
    fn every_tool_is_listed_with_a_description() {
        crate::tls::install_crypto_provider();
        let server = CofferMcp::new(Client::new("http://127.0.0.1:1", "csk_x").unwrap());
        let tools = server.tool_router.list_all();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        let mut want = TOOL_NAMES.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);
        assert!(tools.iter().all(|t| t.description.as_deref().is_some_and(|d| d.len() > 20)));
        assert_eq!(server.get_info().server_info.name, "coffer");
    }
}
