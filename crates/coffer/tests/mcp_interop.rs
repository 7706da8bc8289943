//! coffer's MCP server driven by an outside client: the official `mcp`
//! Python SDK (`tests/interop/mcp_client.py`), over both transports: it
//! starts `coffer mcp` over stdio, or connects to `/mcp` on the gateway over
//! streamable HTTP with the agent's key. Against a real gateway it lists the
//! tools, reads the balance, pays an invoice (and retries the call, which
//! must not pay twice), then, once this test has set a policy that allows at
//! most 1 msat a payment, pays again and must read a denial as a tool result.
//!
//! The interpreter comes from `COFFER_TEST_PYTHON` (`bash .ci/run` makes a
//! venv with the pinned packages of `tests/interop/requirements.txt` and
//! sets it). Without it the test skips loudly, except under CI, where it
//! fails.

mod common;

use coffer_client::{CreateInvoiceRequest, InvoiceStatus};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/mcp_client.py");
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
const FUND_MSAT: u64 = 100_000;
const PAY_MSAT: u64 = 21_000;

/// Reads the client's JSON lines up to and including the step `until`.
async fn read_steps(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    until: &str,
    steps: &mut Vec<Value>,
) {
    tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            let line = lines.next_line().await.expect("reading the client's stdout");
            let Some(line) = line else { panic!("the MCP client ended before `{until}`; steps so far: {steps:#?}") };
            let step: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("the client printed no JSON ({e}): {line}"));
            let done = step["step"] == until;
            steps.push(step);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{until}` from the MCP client within {STEP_TIMEOUT:?}; steps: {steps:#?}"));
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no step {name}: {steps:#?}"))
}

/// The text blocks of a tool step.
fn texts(step: &Value) -> Vec<&str> {
    step["texts"].as_array().expect("texts").iter().map(|t| t.as_str().expect("a text")).collect()
}

#[tokio::test]
async fn an_mcp_client_pays_over_stdio_and_reads_a_denial_as_a_tool_result() {
    pay_and_read_a_denial("stdio").await;
}

#[tokio::test]
async fn an_mcp_client_pays_over_streamable_http_and_reads_a_denial_as_a_tool_result() {
    pay_and_read_a_denial("http").await;
}

async fn pay_and_read_a_denial(transport: &str) {
    let Some(python) = common::test_python("the MCP interop with the PyPI `mcp` client") else { return };
    let gw = common::Gateway::start().await;
    let (payer_id, payer, payer_key) = gw.new_agent("mcp-payer", FUND_MSAT).await;
    let (payee_id, payee, _) = gw.new_agent("mcp-payee", 0).await;
    let invoice = |amount_msat: u64, memo: &str| CreateInvoiceRequest {
        amount_msat,
        memo: Some(memo.to_owned()),
        expiry_secs: None,
        ..Default::default()
    };
    let ok = payee.create_invoice(&invoice(PAY_MSAT, "an answer, over MCP")).await.expect("an invoice");
    let denied = payee.create_invoice(&invoice(5_000, "too much")).await.expect("a second invoice");

    let mut child = Command::new(&python)
        .arg(CLIENT)
        .args([transport, common::BIN, gw.url(), &payer_key, &ok.bolt11, &denied.bolt11])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the Python MCP client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut steps = Vec::new();
    read_steps(&mut lines, "waiting", &mut steps).await;

    let init = step(&steps, "initialize");
    assert_eq!(init["name"], "coffer", "{init}");
    assert_eq!(init["version"], env!("CARGO_PKG_VERSION"), "{init}");
    let names: Vec<&str> =
        step(&steps, "list_tools")["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    for name in coffer::mcp::TOOL_NAMES {
        assert!(names.contains(name), "{name} is not listed: {names:?}");
    }

    let balance = step(&steps, "get_balance");
    assert_eq!(balance["is_error"], false, "{balance}");
    let wallet: Value = serde_json::from_str(texts(balance)[1]).expect("the wallet as JSON");
    assert_eq!(
        (wallet["agent_id"].as_str(), wallet["balance_msat"].as_u64()),
        (Some(payer_id.as_str()), Some(FUND_MSAT))
    );

    let decoded = step(&steps, "decode_invoice");
    let decoded: Value = serde_json::from_str(texts(decoded)[1]).expect("the decoded invoice as JSON");
    assert_eq!(decoded["amount_msat"], PAY_MSAT);
    assert_eq!(decoded["payment_hash"], ok.payment_hash.as_str());
    assert_eq!(decoded["description"], "an answer, over MCP");
    assert_eq!(decoded["payee"], gw.operator().health().await.expect("health").node_pubkey.as_str());

    // Paid once, though the tool was called twice.
    let paid = step(&steps, "pay_invoice");
    assert_eq!(paid["is_error"], false, "{paid}");
    assert!(texts(paid)[0].starts_with(&format!("paid {PAY_MSAT} msat")), "{paid}");
    let payment: Value = serde_json::from_str(texts(paid)[1]).expect("the payment as JSON");
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let retry = step(&steps, "pay_invoice_retry");
    assert_eq!(retry["is_error"], false, "{retry}");
    let again: Value = serde_json::from_str(texts(retry)[1]).expect("the retried payment as JSON");
    assert_eq!(again["id"], payment["id"], "a retry answers the first payment");
    assert_eq!(gw.payment_count(&payer).await, 1, "one payment, not two");
    let fee = payment["fee_msat"].as_u64().expect("fee_msat");
    let balances = gw.balances().await;
    assert_eq!(balances[&payee_id], PAY_MSAT, "the payee got paid");
    assert_eq!(balances[&payer_id], FUND_MSAT - PAY_MSAT - fee, "the payer paid once");
    assert_eq!(payee.invoice(&ok.payment_hash).await.expect("the invoice").status, InvoiceStatus::Paid);

    // Now the operator allows at most 1 msat per payment.
    gw.operator().set_policy(&payer_id, &json!({"max_payment_msat": 1})).await.expect("setting the policy");
    stdin.write_all(b"go\n").await.expect("telling the client to go on");
    stdin.flush().await.expect("flushing");
    read_steps(&mut lines, "done", &mut steps).await;
    let status = tokio::time::timeout(STEP_TIMEOUT, child.wait()).await.expect("the client exits").expect("waiting");
    assert!(status.success(), "the MCP client failed: {status}; steps: {steps:#?}");

    let denial = step(&steps, "pay_invoice_denied");
    assert_eq!(denial["is_error"], true, "{denial}");
    let text = texts(denial)[0];
    eprintln!("the denial, as the model reads it: {text}");
    assert!(text.starts_with("denied: amount-too-large — "), "{text}");
    assert!(text.contains("ask the operator"), "the denial says what to do next: {text}");
    assert_eq!(payee.invoice(&denied.payment_hash).await.expect("the invoice").status, InvoiceStatus::Open);
    assert_eq!(gw.balances().await[&payer_id], FUND_MSAT - PAY_MSAT - fee, "nothing more was paid");

    let budget = step(&steps, "get_budget");
    assert_eq!(budget["is_error"], false, "{budget}");
    let missing = step(&steps, "read_room_missing");
    assert_eq!(missing["is_error"], true, "{missing}");
    assert!(texts(missing)[0].starts_with("error: "), "{missing}");
}

/// One JSON-RPC request to `/mcp`, answered as JSON (the server is stateless
/// and answers in JSON, so no session or event stream is needed).
async fn rpc(gw: &common::Gateway, secret: Option<&str>, method: &str, params: Value) -> common::Reply {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let request = gw
        .request(reqwest::Method::POST, "/mcp", secret)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body);
    common::send(request).await
}

/// The text blocks of a `tools/call` answer, and whether it is an error.
fn tool_texts(reply: &common::Reply) -> (bool, Vec<String>) {
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = &reply.json["result"];
    let texts = result["content"].as_array().unwrap_or_else(|| panic!("no content: {reply:?}"));
    let texts = texts.iter().map(|c| c["text"].as_str().expect("a text block").to_owned()).collect();
    (result["isError"].as_bool().unwrap_or(false), texts)
}

#[tokio::test]
async fn mcp_over_http_acts_with_the_key_of_each_request() {
    let gw = common::Gateway::start().await;
    let (a_id, _, a_key) = gw.new_agent("mcp-http-a", 7_000).await;
    let (b_id, _, b_key) = gw.new_agent("mcp-http-b", 9_000).await;

    // Only an agent's key opens /mcp; the refusal is a problem, as elsewhere.
    rpc(&gw, None, "tools/list", json!({})).await.assert_problem(401, "unauthorized");
    rpc(&gw, Some("csk_not_a_key"), "tools/list", json!({})).await.assert_problem(401, "unauthorized");
    rpc(&gw, Some(gw.operator_token()), "tools/list", json!({})).await.assert_problem(403, "forbidden");

    // Two agents, interleaved: each call reads the wallet of its own key.
    for (id, key, balance_msat) in [(&a_id, &a_key, 7_000), (&b_id, &b_key, 9_000), (&a_id, &a_key, 7_000)] {
        let (is_error, texts) = tool_texts(&rpc(&gw, Some(key), "tools/call", json!({"name": "get_balance"})).await);
        assert!(!is_error, "{texts:?}");
        let wallet: Value = serde_json::from_str(&texts[1]).expect("the wallet as JSON");
        assert_eq!(
            (wallet["agent_id"].as_str(), wallet["balance_msat"].as_u64()),
            (Some(id.as_str()), Some(balance_msat))
        );
    }

    // A read-only key reaches the tools, but the gateway refuses it a payment,
    // and the model reads why.
    let read_key = gw.operator().create_key(&a_id, coffer_client::Scope::Read).await.expect("a read key").key;
    let (_, payee, _) = gw.new_agent("mcp-http-payee", 0).await;
    let invoice = payee
        .create_invoice(&CreateInvoiceRequest {
            amount_msat: 1_000,
            memo: None,
            expiry_secs: None,
            ..Default::default()
        })
        .await
        .expect("an invoice");
    let args = json!({"name": "pay_invoice", "arguments": {"bolt11": invoice.bolt11, "purpose": "read-only"}});
    let (is_error, texts) = tool_texts(&rpc(&gw, Some(&read_key), "tools/call", args).await);
    assert!(is_error && texts[0].starts_with("error: forbidden"), "{texts:?}");
    assert_eq!(gw.balances().await[&a_id], 7_000, "nothing was paid");
    assert_eq!(payee.invoice(&invoice.payment_hash).await.expect("the invoice").status, InvoiceStatus::Open);
}

/// The official MCP SDK trades through coffer's tools, each agent over its
/// own MCP session with its own key: a hold invoice paid, then settled by
/// the seller (the buyer gets the preimage only then), and a metered
/// session charged twice (one charge retried under its name) and closed.
#[tokio::test]
async fn an_mcp_client_drives_a_hold_then_settle_and_a_metered_session() {
    let Some(python) = common::test_python("the MCP trade interop with the PyPI `mcp` client") else { return };
    let gw = common::Gateway::start().await;
    let (buyer_id, _, buyer_key) = gw.new_agent("mcp-buyer", FUND_MSAT).await;
    let (seller_id, _, seller_key) = gw.new_agent("mcp-seller", 0).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/mcp_trade.py");
    let run = Command::new(&python)
        .arg(script)
        .args([gw.url(), &seller_key, &buyer_key, &seller_id])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP_TIMEOUT, run).await.expect("the client ends").expect("running it");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the MCP client failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let steps: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON step")).collect();
    assert_eq!(steps.last().map(|s| &s["step"]), Some(&json!("done")), "{steps:#?}");
    let held = step(&steps, "pay_hold");
    assert!(texts(held)[0].starts_with("held: 21000 msat"), "the model reads that the money waits: {held}");

    // 21 000 for the settled hold, 5 000 charged; the rest back with the buyer.
    let balances = gw.balances().await;
    assert_eq!((balances[&buyer_id], balances[&seller_id]), (FUND_MSAT - 26_000, 26_000));
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}
