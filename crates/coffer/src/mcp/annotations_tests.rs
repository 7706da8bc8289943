//! Every tool tells a client what calling it does (the MCP spec's
//! ToolAnnotations), so a client can ask a person before a tool that spends
//! and let read-only ones run freely. The hints are checked as the client
//! reads them: in the JSON of `tools/list`.

use super::*;
use serde_json::json;

/// The tools as `tools/list` lists them, as JSON.
fn listed() -> Vec<Value> {
    crate::tls::install_crypto_provider();
    let server = CofferMcp::new(Client::new("http://127.0.0.1:1", "csk_x").unwrap());
    server.tool_router.list_all().iter().map(|t| serde_json::to_value(t).unwrap()).collect()
}

fn tool(tools: &[Value], name: &str) -> Value {
    tools.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no tool {name}")).clone()
}

/// What is missing from a tool's annotations: a title and the read-only
/// and open-world hints always; the destructive and idempotent hints when
/// it writes (the spec gives them meaning only then).
fn missing_hints(tool: &Value) -> Vec<&'static str> {
    let a = &tool["annotations"];
    let mut missing = Vec::new();
    if a["title"].as_str().is_none_or(|t| t.trim().is_empty()) {
        missing.push("title");
    }
    for hint in ["readOnlyHint", "openWorldHint"] {
        if !a[hint].is_boolean() {
            missing.push(hint);
        }
    }
    if a["readOnlyHint"] == json!(false) {
        for hint in ["destructiveHint", "idempotentHint"] {
            if !a[hint].is_boolean() {
                missing.push(hint);
            }
        }
    }
    missing
}

#[test]
fn every_listed_tool_carries_annotations() {
    let tools = listed();
    assert!(tools.len() >= TOOL_NAMES.len(), "{} tools listed", tools.len());
    let bare: Vec<String> = tools
        .iter()
        .filter_map(|t| {
            let missing = missing_hints(t);
            (!missing.is_empty()).then(|| format!("{}: {}", t["name"], missing.join(", ")))
        })
        .collect();
    assert!(bare.is_empty(), "tools without their annotations:\n{}", bare.join("\n"));
}

#[test]
fn the_check_finds_a_tool_without_hints() {
    // The check itself can fail.
    assert_eq!(missing_hints(&json!({"name": "x"})), ["title", "readOnlyHint", "openWorldHint"]);
    let writes = json!({"annotations": {"title": "x", "readOnlyHint": false, "openWorldHint": false}});
    assert_eq!(missing_hints(&writes), ["destructiveHint", "idempotentHint"]);
}

#[test]
fn reading_tools_are_read_only_and_spending_ones_are_not() {
    let tools = listed();
    for name in ["get_balance", "get_budget", "decode_invoice", "list_payments", "read_room", "get_payment"] {
        assert_eq!(tool(&tools, name)["annotations"]["readOnlyHint"], true, "{name}");
    }
    // Money that leaves the wallet does not come back by itself.
    for name in ["pay_invoice", "pay_request", "fetch_paid", "pay_into_escrow", "release_escrow", "refund_payment"] {
        let a = &tool(&tools, name)["annotations"];
        assert_eq!((a["readOnlyHint"].clone(), a["destructiveHint"].clone()), (json!(false), json!(true)), "{name}");
    }
    // pay_invoice's Idempotency-Key comes from the invoice: a retry pays
    // nothing more. Each create_invoice makes a new invoice.
    assert_eq!(tool(&tools, "pay_invoice")["annotations"]["idempotentHint"], true);
    assert_eq!(tool(&tools, "create_invoice")["annotations"]["idempotentHint"], false);
    // Only paying an invoice of another node and fetching a URL reach
    // beyond the gateway.
    assert_eq!(tool(&tools, "pay_invoice")["annotations"]["openWorldHint"], true);
    assert_eq!(tool(&tools, "fetch_paid")["annotations"]["openWorldHint"], true);
    assert_eq!(tool(&tools, "get_balance")["annotations"]["openWorldHint"], false);
}
