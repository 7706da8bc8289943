//! The OpenAPI document describes the router: it is valid OpenAPI 3.1 (as
//! `openapi-spec-validator`, written by others, judges it), every operation
//! it lists is routed (answers something other than "no such route"), and
//! every route answers problems in the documented form.
//!
//! The other direction holds by construction: the router and the document
//! come from one route list (`http::api()`); the two additions, `/mcp`
//! (described by hand, so probed here like the rest) and the web UI's three
//! static files, are the only routes outside it.

mod common;

use common::{Gateway, send};
use reqwest::Method;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const VALIDATOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/validate_openapi.py");

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let gw = Gateway::start().await;
    let spec = send(gw.request(Method::GET, "/openapi.json", None)).await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.json["openapi"], "3.1.0");
    let paths = spec.json["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", "x1").replace("{room}", "x1").replace("{payment_hash}", &"0".repeat(64));
        let concrete = concrete.replace("{payment_id}", "x1").replace("{agent_id}", "x1").replace("{key_id}", "x1");
        let concrete = concrete.replace("{connection_id}", "x1").replace("{messenger}", "telegram");
        let concrete = concrete.replace("{user_id}", "x1");
        assert!(!concrete.contains('{'), "an unfilled parameter in {path}");
        for method in item.as_object().expect("operations").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let reply = send(gw.request(method.clone(), &concrete, Some("csk_not_a_key"))).await;
            let detail = reply.json["detail"].as_str().unwrap_or_default();
            assert!(
                !(reply.status == 404 && detail == "no such route") && reply.status != 405,
                "{method} {path} is documented but not routed: {reply:?}"
            );
            if reply.status >= 400 {
                reply.assert_well_formed_problem();
            }
            operations += 1;
        }
    }
    assert!(operations >= 40, "{operations} operations");
    // And an undocumented path is not routed.
    let missing = send(gw.request(Method::GET, "/v1/nothing-here", None)).await;
    missing.assert_problem(404, "not-found");
}

/// Runs the outside validator on `doc`: whether it passed, and what it said.
fn validate(python: &Path, doc: &serde_json::Value) -> (bool, String) {
    let mut child = Command::new(python)
        .arg(VALIDATOR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the validator");
    let body = serde_json::to_vec(doc).expect("the document as JSON");
    child.stdin.take().expect("piped stdin").write_all(&body).expect("writing the document");
    let out = child.wait_with_output().expect("running the validator");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_for_an_outside_validator() {
    let Some(python) = common::test_python("validating /openapi.json with openapi-spec-validator") else { return };
    let gw = Gateway::start().await;
    let spec = send(gw.request(Method::GET, "/openapi.json", None)).await;
    assert_eq!(spec.status, 200);
    let (valid, said) = validate(&python, &spec.json);
    assert!(valid && said.starts_with("valid OpenAPI 3.1"), "the validator rejects /openapi.json:\n{said}");

    // The check can fail: a response without its required description (a
    // fault this document once had) is caught.
    let mut broken = spec.json.clone();
    broken["paths"]["/v1/wallet"]["get"]["responses"]["200"] = serde_json::json!({"content": {}});
    let (valid, said) = validate(&python, &broken);
    assert!(!valid && said.contains("/v1/wallet"), "a broken document passed: {said}");
}

/// Every operation describes the problems it can answer as
/// `application/problem+json` (the media type the gateway sends), and every
/// operation but the three public ones needs the bearer token and documents
/// 401, 403, 429 (with Retry-After) and 500; one with a body documents 413
/// and 415. A client generated from the document can thus read every error.
#[tokio::test]
async fn every_operation_documents_its_problems_as_problem_json_and_its_token() {
    let gw = Gateway::start().await;
    let spec = send(gw.request(Method::GET, "/openapi.json", None)).await;
    assert_eq!(spec.status, 200);
    let public = ["/healthz", "/readyz", "/health/live", "/health/ready", "/metrics", "/openapi.json"];
    let paths = spec.json["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("operations") {
            let at = format!("{method} {path}");
            let responses = operation["responses"].as_object().expect("responses");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"].as_object().expect("problem content");
                    let types: Vec<_> = content.keys().collect();
                    assert_eq!(types, ["application/problem+json"], "{at} {status}");
                }
            }
            assert!(responses.contains_key("500"), "{at}: no 500");
            if public.contains(&path.as_str()) {
                continue;
            }
            assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{at}: no bearer security");
            for status in ["400", "401", "403", "404", "429"] {
                assert!(responses.contains_key(status), "{at}: no {status}");
            }
            assert!(responses["429"]["headers"]["Retry-After"].is_object(), "{at}: 429 without Retry-After");
            if operation.get("requestBody").is_some() {
                assert!(responses.contains_key("413") && responses.contains_key("415"), "{at}: no 413 or 415");
            }
        }
    }
}

/// The policy and budget bodies are typed: an operator's client sees their
/// fields, not a free-form object.
#[tokio::test]
async fn the_policy_and_budget_bodies_are_typed() {
    let gw = Gateway::start().await;
    let spec = send(gw.request(Method::GET, "/openapi.json", None)).await;
    let policy = &spec.json["paths"]["/v1/agents/{id}/policy"];
    let body_ref = &policy["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body_ref, "#/components/schemas/Policy");
    let schemas = &spec.json["components"]["schemas"];
    for field in ["max_payment_msat", "budgets", "payees", "breaker", "l402", "expires_at"] {
        assert!(schemas["Policy"]["properties"][field].is_object(), "Policy.{field} is not described");
    }
    assert_eq!(schemas["Policy"]["additionalProperties"], false, "unknown policy fields are refused");
    let budget = &spec.json["paths"]["/v1/agents/{id}/budget"]["get"]["responses"]["200"]["content"];
    assert_eq!(budget["application/json"]["schema"]["$ref"], "#/components/schemas/BudgetReport");
    assert!(schemas["Window"]["pattern"].is_string());
}
