//! The trade tools: hold invoices a seller settles after serving, escrow a
//! buyer releases on delivery, metered sessions, refunds. Each calls the
//! gateway's HTTP API through the client crate, as the other tools do, and
//! answers in words a model can act on, with the JSON after.

use super::{CofferMcp, ToolResult, answer, payment_answer, sats};
use coffer_client::{
    ChargeRequest, CreateInvoiceRequest, EscrowTerms, OpenSessionRequest, Outcome, PayOutcome, PayRequest, Payment,
    RefundRequest, Session,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::schemars::JsonSchema;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{tool, tool_router};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct HoldInvoiceArgs {
    /// The amount to receive, in millisatoshis (1 sat = 1000 msat). Greater than zero.
    pub amount_msat: u64,
    /// Shown to the payer: what you will deliver. At most 639 bytes.
    #[serde(default)]
    pub memo: Option<String>,
    /// Seconds you have, once it is paid, to deliver and settle: 1 to 604800 (7 days). Default 3600.
    #[serde(default)]
    pub hold_secs: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct HashArgs {
    /// The invoice's payment_hash (64 hex characters), from create_hold_invoice.
    pub payment_hash: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct EscrowArgs {
    /// The BOLT11 invoice to pay (an invoice of this gateway: another agent's).
    pub bolt11: String,
    /// Why you pay, in a few words: kept in the audit trail. At most 512 bytes.
    pub purpose: String,
    /// Seconds until the deadline: 1 to 2592000 (30 days). Release or dispute before it.
    pub release_after_secs: u32,
    /// What happens at the deadline if you did neither: `release` (the seller is paid) or `refund` (you get
    /// the money back).
    pub on_timeout: TimeoutRule,
    /// The task this serves, for the operator's cost reports (at most 128 bytes). Leave it out to use
    /// the task your agent was given.
    #[serde(default)]
    pub task: Option<String>,
    /// Up to 8 tags for the operator's cost reports: letters, digits and `-_.:/`.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "snake_case")]
pub enum TimeoutRule {
    Release,
    Refund,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct PaymentIdArgs {
    /// The payment's id (`pay_...`).
    pub payment_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct RefundArgs {
    /// The id of a payment you received (`pay_...`).
    pub payment_id: String,
    /// How much to give back, in millisatoshis (1 sat = 1000 msat): at most what is left unrefunded.
    pub amount_msat: u64,
    /// Why, in a few words: the payer sees it. At most 512 bytes.
    pub reason: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct EscrowListArgs {
    /// Only those in this status: `held`, `disputed`, `released` or `refunded`. Omit for all.
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct OpenSessionArgs {
    /// The agent id (`agt_...`) of the seller who will charge you.
    pub payee: String,
    /// The most the seller may charge in all, in millisatoshis (1 sat = 1000 msat).
    pub max_msat: u64,
    /// Seconds until the session expires: 1 to 2592000 (30 days).
    pub expires_in_secs: u32,
    /// What you are buying. At most 512 bytes.
    #[serde(default)]
    pub purpose: Option<String>,
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
pub struct ChargeArgs {
    /// The session's id (`ses_...`).
    pub session_id: String,
    /// What to charge, in millisatoshis (1 sat = 1000 msat): at most what remains of the session.
    pub amount_msat: u64,
    /// A name of this charge unique in the session, e.g. `minute-3`: a retry with the same name never
    /// charges twice. 1 to 100 visible ASCII characters.
    pub charge_key: String,
    /// What the charge is for. At most 512 bytes.
    #[serde(default)]
    pub memo: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct SessionIdArgs {
    /// The session's id (`ses_...`).
    pub session_id: String,
}

/// The longest `charge_key`: it goes into an Idempotency-Key with a prefix
/// and the session id, within the gateway's bound of 128 bytes.
const CHARGE_KEY_LEN_MAX_BYTES: usize = 100;

fn digest_key(prefix: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("{prefix}-{}", hex::encode(hasher.finalize()))
}

fn session_answer(verb: &str, s: &Session) -> CallToolResult {
    answer::ok(
        format!(
            "{verb}: session {} ({}) between payer {} and payee {}: charged {} msat of {} msat, {} msat remain{}.",
            s.id,
            s.status,
            s.payer_agent_id,
            s.payee_agent_id,
            s.charged_msat,
            s.max_msat,
            s.remaining_msat,
            s.returned_msat.map(|r| format!("; {r} msat returned to the payer")).unwrap_or_default()
        ),
        s,
    )
}

fn ended_answer(verb: &str, p: &Payment) -> CallToolResult {
    let preimage = p.preimage.as_deref().map(|x| format!(" The preimage {x} proves the payment.")).unwrap_or_default();
    answer::ok(format!("{verb}: payment {} of {} msat is now {:?}.{preimage}", p.id, p.amount_msat, p.status), p)
}

#[tool_router(router = trade_router, vis = "pub(super)")]
impl CofferMcp {
    #[tool(
        description = "Sell safely: create a hold invoice. When the buyer pays it, the money is reserved on the \
        buyer's wallet but not yet yours (status accepted). Deliver, then call settle_invoice to be paid, or \
        cancel_invoice to refund the buyer. Not settled within hold_secs (default 3600), it is cancelled. \
        amount_msat is millisatoshis (1 sat = 1000 msat). Needs a key with the receive scope.",
        annotations(
            title = "Create a hold invoice",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn create_hold_invoice(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<HoldInvoiceArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let request = CreateInvoiceRequest {
            amount_msat: args.amount_msat,
            memo: args.memo,
            hold: true,
            hold_secs: args.hold_secs,
            ..Default::default()
        };
        Ok(match client.create_invoice(&request).await {
            Ok(i) => answer::ok(
                format!(
                    "hold invoice for {} msat ({}); payment_hash {}. Give this bolt11 to the buyer; once it is paid \
                     (status accepted), deliver, then settle_invoice with the payment_hash: {}",
                    i.amount_msat,
                    sats(i.amount_msat),
                    i.payment_hash,
                    i.bolt11
                ),
                &i,
            ),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Settle a hold invoice of yours that the buyer paid (status accepted): the money becomes \
        yours and the buyer gets the proof of payment. Only after you delivered. Fails if it is not accepted \
        or its hold time passed.",
        annotations(
            title = "Settle a hold invoice",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn settle_invoice(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<HashArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.settle_invoice(&args.payment_hash).await {
            Ok(p) => ended_answer("settled; you are paid", &p),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Cancel what waits on an invoice of yours (a hold you cannot serve, or an escrow you give \
        back): the buyer is refunded in full and you get nothing.",
        annotations(
            title = "Cancel an invoice's hold or escrow",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel_invoice(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<HashArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.cancel_invoice(&args.payment_hash).await {
            Ok(p) => ended_answer("cancelled; the buyer is refunded", &p),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Buy safely: pay another agent's invoice into escrow. The money leaves your spendable \
        balance but the seller gets it only when you call release_escrow (after checking the delivery), or at \
        the deadline if on_timeout is `release`; with `refund` it comes back to you then. If the delivery is \
        bad, dispute_escrow before the deadline and the operator decides. Safe to retry: never pays twice. \
        Counts against your budgets now.",
        annotations(
            title = "Pay into escrow",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn pay_into_escrow(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<EscrowArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let (rule, on_timeout) = match args.on_timeout {
            TimeoutRule::Release => ("release", Outcome::Release),
            TimeoutRule::Refund => ("refund", Outcome::Refund),
        };
        let key = digest_key("mcp-escrow", &[args.bolt11.trim(), &args.release_after_secs.to_string(), rule]);
        let escrow = EscrowTerms { release_after_secs: args.release_after_secs, on_timeout };
        let request = PayRequest {
            bolt11: args.bolt11,
            purpose: Some(args.purpose),
            amount_msat: None,
            escrow: Some(escrow),
            task: args.task,
            tags: args.tags,
        };
        Ok(match client.pay(&request, &key).await {
            Ok(PayOutcome::Done(p)) => payment_answer(&p),
            Ok(PayOutcome::Held(a)) => {
                let value = serde_json::to_value(&a).unwrap_or_default();
                super::held_answer(&a.id, a.amount_msat, a.fee_limit_msat, &value)
            }
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Release your escrowed payment to the seller: do it once you have checked the delivery. \
        Final: the seller is paid.",
        annotations(
            title = "Release an escrow",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn release_escrow(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PaymentIdArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.release(&args.payment_id).await {
            Ok(p) => ended_answer("released; the seller is paid", &p),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Dispute your escrowed payment before its deadline, when the delivery is missing or bad: \
        the money stays in escrow and the operator decides who gets it.",
        annotations(
            title = "Dispute an escrow",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn dispute_escrow(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PaymentIdArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.dispute(&args.payment_id).await {
            Ok(e) => answer::ok(
                format!(
                    "disputed: escrow of payment {} ({} msat) waits for the operator.",
                    e.payment_id, e.amount_msat
                ),
                &e,
            ),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Give back (part of) a payment you received, e.g. when you could not deliver all of it. \
        Never more than you received in all. Safe to retry with the same arguments: refunds once.",
        annotations(
            title = "Refund a payment",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn refund_payment(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<RefundArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let key = digest_key("mcp-refund", &[&args.payment_id, &args.amount_msat.to_string(), &args.reason]);
        let request = RefundRequest { amount_msat: args.amount_msat, reason: Some(args.reason) };
        Ok(match client.refund(&args.payment_id, &request, &key).await {
            Ok(r) => answer::ok(
                format!(
                    "refunded {} msat of payment {} to {}; {} msat refunded in all.",
                    r.amount_msat, r.payment_id, r.to_agent_id, r.payment_refunded_msat
                ),
                &r,
            ),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "One payment you made or received: its status (succeeded, held, refunded, ...), the hold \
        or escrow its money waits in, and its refunds.",
        annotations(title = "One payment", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_payment(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PaymentIdArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.payment(&args.payment_id).await {
            Ok(p) => answer::ok(format!("payment {} of {} msat: {:?}.", p.id, p.amount_msat, p.status), &p),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Your holds and escrows, as buyer or seller, newest first: what waits, for whom, until \
        when (deadline) and what happens then (on_timeout).",
        annotations(title = "Your holds and escrows", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_escrows(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<EscrowListArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.escrows(args.status.as_deref()).await {
            Ok(list) => answer::ok(format!("{} holds and escrows, newest first.", list.len()), &list),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Buy metered: open a session with a seller, who then charges what you use, never more \
        than max_msat in all. max_msat is reserved now and counts against your budgets while the session is \
        open; close_session (or the expiry) returns what was not charged. Amounts are millisatoshis.",
        annotations(
            title = "Open a metered session",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn open_session(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<OpenSessionArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let request = OpenSessionRequest {
            payee: args.payee,
            max_msat: args.max_msat,
            expires_in_secs: args.expires_in_secs,
            purpose: args.purpose,
            task: args.task,
            tags: args.tags,
        };
        Ok(match client.open_session(&request).await {
            Ok(s) => session_answer("opened; give the seller the session id", &s),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "As the seller, charge a session a buyer opened with you, for what was used: paid to you \
        at once, never past what remains. Name each charge (charge_key): a retry with the same name never \
        charges twice.",
        annotations(
            title = "Charge a session",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn charge_session(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ChargeArgs>,
    ) -> ToolResult {
        let name = args.charge_key.trim();
        if name.is_empty() || name.len() > CHARGE_KEY_LEN_MAX_BYTES || !name.chars().all(|c| c.is_ascii_graphic()) {
            return Ok(answer::fail(format!(
                "error: invalid-field — charge_key: 1 to {CHARGE_KEY_LEN_MAX_BYTES} visible ASCII characters"
            )));
        }
        let client = self.client(&ctx)?;
        let key = digest_key("mcp-charge", &[&args.session_id, name]);
        let request = ChargeRequest { amount_msat: args.amount_msat, memo: args.memo };
        Ok(match client.charge(&args.session_id, &request, &key).await {
            Ok(s) => session_answer("charged", &s),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "A session you pay or are paid by: what was charged, what remains, its charges.",
        annotations(title = "One session", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_session(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SessionIdArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.session(&args.session_id).await {
            Ok(s) => session_answer("session", &s),
            Err(e) => answer::from_error(&e),
        })
    }

    #[tool(
        description = "Close a session (buyer or seller): no more charges; what was not charged returns to the \
        buyer.",
        annotations(
            title = "Close a session",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn close_session(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SessionIdArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        Ok(match client.close_session(&args.session_id).await {
            Ok(s) => session_answer("closed", &s),
            Err(e) => answer::from_error(&e),
        })
    }
}
