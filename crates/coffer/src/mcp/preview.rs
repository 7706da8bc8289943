//! The `preview_payment` tool: ask before spending. It calls
//! `POST /v1/payments/preview` through the client crate, like the other
//! tools, and moves nothing.

use super::{CofferMcp, ToolResult, answer};
use coffer_client::{PaymentPreview, PreviewDecision, PreviewRequest};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::schemars::JsonSchema;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{tool, tool_router};
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct PreviewPaymentArgs {
    /// The BOLT11 invoice you consider paying. Or leave it out and give amount_msat and payee.
    #[serde(default)]
    pub bolt11: Option<String>,
    /// With payee: the amount in millisatoshis (1 sat = 1000 msat).
    #[serde(default)]
    pub amount_msat: Option<u64>,
    /// With amount_msat: `agent:ID` (an agent of this gateway) or `node:PUBKEY_HEX` (another Lightning node).
    #[serde(default)]
    pub payee: Option<String>,
}

#[tool_router(router = preview_router, vis = "pub(super)")]
impl CofferMcp {
    #[tool(
        description = "Ask before you spend: would this payment pass now? Nothing is paid, reserved or \
        recorded. Give bolt11, or amount_msat with payee (agent:ID or node:PUBKEY_HEX). Answers allow, hold \
        (a person would have to approve) or deny with the rule that would stop it (budget-exceeded, \
        amount-too-large, payee-not-allowed, rate-limited, policy-expired, insufficient-balance, agent-frozen, \
        gateway-halted), and what remains in each budget window (millisatoshis; 1 sat = 1000 msat).",
        annotations(
            title = "Preview a payment",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn preview_payment(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PreviewPaymentArgs>,
    ) -> ToolResult {
        let client = self.client(&ctx)?;
        let request =
            PreviewRequest { bolt11: args.bolt11, amount_msat: args.amount_msat, payee: args.payee, agent_id: None };
        Ok(match client.preview_payment(&request).await {
            Ok(preview) => answer::ok(summary(&preview), &preview),
            Err(e) => answer::from_error(&e),
        })
    }
}

fn summary(p: &PaymentPreview) -> String {
    let amount = format!("{} msat (+ up to {} msat in fees)", p.amount_msat, p.fee_limit_msat);
    let why = p.message.as_deref().unwrap_or("");
    match p.decision {
        PreviewDecision::Allow => format!("would pass now: {amount}. Nothing was paid."),
        PreviewDecision::Hold => {
            format!("would be held for a person's approval: {amount}. Nothing was paid.")
        }
        PreviewDecision::Deny => format!(
            "would be denied: {} — {why}. Nothing was paid; do not pay it as it is.",
            p.code.as_deref().unwrap_or("denied")
        ),
    }
}
