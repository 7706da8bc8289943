//! Paywalls mounted on `coffer serve --paywall FILE`: the L402 proxy of
//! `coffer paywall`, under a path prefix of the gateway itself, selling for
//! an agent of that gateway; a buyer agent of the same gateway pays through
//! it. And files the gateway must refuse to start with.

mod common;

use common::Gateway;
use common::paywall::{Paywall, Upstream};
use std::path::Path;

const PRICE_MSAT: u64 = 3_000;
const REPORTS_PRICE_MSAT: u64 = 5_000;
const FUNDS_MSAT: u64 = 100_000;

struct Mounted {
    gw: Gateway,
    upstream: Upstream,
    seller_id: String,
    buyer_id: String,
    buyer: coffer_client::Client,
    buyer_key: String,
    _config: tempfile::TempDir,
}

/// A gateway with two paywalls of the same seller in front of one
/// upstream: `/paid/data` (a default price and a `/reports` route) and
/// `/paid/other`.
async fn mounted() -> Mounted {
    let mut gw = Gateway::start().await;
    let (seller_id, _, _) = gw.new_agent("seller", 0).await;
    let (buyer_id, _, buyer_key) = gw.new_agent("buyer", FUNDS_MSAT).await;
    let upstream = Upstream::start().await;
    let config = tempfile::tempdir().expect("a config folder");
    let path = config.path().join("paywalls.toml");
    let text = format!(
        "[[paywall]]\nprefix = \"/paid/data\"\nagent = \"{seller_id}\"\nupstream = \"{url}\"\nprice_msat = {PRICE_MSAT}\n\
         [[paywall.route]]\npath = \"/reports\"\nprice_msat = {REPORTS_PRICE_MSAT}\n\
         [[paywall]]\nprefix = \"/paid/other/\"\nagent = \"{seller_id}\"\nupstream = \"{url}\"\nprice_msat = {PRICE_MSAT}\n",
        url = upstream.url
    );
    std::fs::write(&path, text).expect("writing the paywalls file");
    // The file names agents, which exist now: start again with it.
    gw.restart_with(&["--paywall", path.to_str().expect("a UTF-8 path")]).await;
    let buyer = gw.client(&buyer_key);
    Mounted { gw, upstream, seller_id, buyer_id, buyer, buyer_key, _config: config }
}

impl Mounted {
    async fn balance(&self, agent_id: &str) -> u64 {
        self.gw.operator().agent(agent_id).await.expect("an agent").balance_msat
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    async fn get(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.gw.http().get(self.url(path));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.expect("a request to the mounted paywall")
    }
}

#[tokio::test]
async fn a_buyer_of_the_same_gateway_pays_once_per_route_and_reuses_its_tokens() {
    let m = mounted().await;

    let reports = m.buyer.fetch_l402(&m.url("/paid/data/reports/q1?x=1")).await.expect("fetching a report");
    assert_eq!((reports.status, reports.paid_msat), (200, REPORTS_PRICE_MSAT));
    assert_eq!(&reports.body[..], b"data for /reports/q1", "the upstream sees the path below the prefix");
    let token = reports.token.expect("the token used");
    assert_eq!(token.scope, "/paid/data/reports", "the token's route is the path the buyer sees");
    assert_eq!(m.upstream.hits(), 1);

    let today = m.buyer.fetch_l402(&m.url("/paid/data/today")).await.expect("fetching at the default price");
    assert_eq!((today.status, today.paid_msat), (200, PRICE_MSAT));
    assert_eq!(&today.body[..], b"data for /today");
    assert_eq!(today.token.expect("the token used").scope, "/paid/data");
    assert_eq!(m.upstream.hits(), 2);

    let again = m.buyer.fetch_l402(&m.url("/paid/data/yesterday")).await.expect("a second default fetch");
    assert_eq!((again.status, again.paid_msat), (200, 0), "the kept token is reused");
    let other = m.gw.client(&m.buyer_key).fetch_l402(&m.url("/paid/data/reports/q2")).await.expect("another report");
    assert_eq!((other.status, other.paid_msat), (200, 0), "another process reuses the report's token");
    let exact = m.buyer.fetch_l402(&m.url("/paid/data")).await.expect("the prefix itself");
    assert_eq!((exact.status, exact.paid_msat, &exact.body[..]), (200, 0, &b"data for /"[..]));
    assert_eq!(m.upstream.hits(), 5, "one upstream hit per request");

    let paid = PRICE_MSAT + REPORTS_PRICE_MSAT;
    assert_eq!(m.balance(&m.buyer_id).await, FUNDS_MSAT - paid, "charged each price exactly once");
    assert_eq!(m.balance(&m.seller_id).await, paid, "the seller agent was credited");
    assert_eq!(m.buyer.payments(None).await.expect("payments").items.len(), 2);
    let (ok, report) = m.gw.audit().await;
    assert!(ok, "{report}");

    // The gateway's own routes are as before.
    assert_eq!(m.get("/healthz", None).await.status(), 200);
    let missing = m.get("/paid", None).await;
    assert_eq!(missing.status(), 404, "no paywall at /paid itself");
    assert_eq!(missing.headers()["content-type"], common::PROBLEM_JSON);
}

#[tokio::test]
async fn bad_tokens_get_a_402_like_the_standalone_paywall_and_never_reach_the_upstream() {
    let m = mounted().await;
    let challenge = m.get("/paid/data/x", None).await;
    assert_eq!(challenge.status(), 402);
    let www = challenge.headers()["www-authenticate"].to_str().expect("an ASCII challenge").to_owned();
    assert!(www.starts_with("L402 version=\"0\", token=\""), "{www}");
    let request = coffer_client::L402PayRequest { url: m.url("/paid/data/x"), challenge: www, rejected_token: None };
    let token = m.buyer.l402_pay(&request).await.expect("paying the challenge");
    let (token_part, preimage) = token.authorization.rsplit_once(':').expect("token:preimage");
    let wrong = format!("{token_part}:{}", if preimage.starts_with('0') { "1" } else { "0" }.repeat(64));

    let refused = |authorization: String, path: &'static str, why: &'static str| {
        let m = &m;
        async move {
            let before = m.upstream.hits();
            let response = m.get(path, Some(&authorization)).await;
            assert_eq!(response.status(), 402, "{why}");
            assert!(response.headers().contains_key("www-authenticate"), "{why}: a new challenge");
            let content_type = response.headers()["content-type"].to_str().expect("ASCII").to_owned();
            let body: serde_json::Value = response.json().await.expect("a JSON body");
            assert_eq!(m.upstream.hits(), before, "{why}: the upstream was reached");
            (content_type, body)
        }
    };
    let (content_type, body) = refused(wrong, "/paid/data/x", "a wrong preimage").await;
    assert_eq!(content_type, "application/json", "as from the standalone paywall, not wrapped as a problem");
    assert!(body["detail"].as_str().is_some_and(|d| d.starts_with("the preimage does not match")), "{body}");
    assert_eq!(body["route"], "/paid/data");
    let (_, other) = refused(token.authorization.clone(), "/paid/other/x", "a token of another paywall").await;
    assert!(other["detail"].as_str().is_some_and(|d| d.starts_with("the token is for another route")), "{other}");
    refused("L402 garbage".into(), "/paid/data/x", "malformed credentials").await;
    assert_eq!(m.get("/paid/data/x", Some(&token.authorization)).await.status(), 200, "the right preimage passes");
    assert_eq!(m.upstream.hits(), 1);

    // The standalone `coffer paywall` answers the same, but for the route's
    // name: without credentials, and with malformed ones.
    let (_, _, seller_key) = m.gw.new_agent("standalone seller", 0).await;
    let standalone = Paywall::start(&m.gw, &seller_key, &m.upstream, PRICE_MSAT, None).await;
    for authorization in [None, Some("L402 garbage")] {
        let answer = |response: reqwest::Response| async move {
            assert_eq!(response.status(), 402);
            let content_type = response.headers()["content-type"].to_str().expect("ASCII").to_owned();
            let mut body: serde_json::Value = response.json().await.expect("a JSON body");
            assert!(body["route"].is_string(), "{body}");
            body["route"] = serde_json::Value::Null;
            (content_type, body)
        };
        let mut request = m.gw.http().get(format!("{}/x", standalone.url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let expected = answer(request.send().await.expect("a request to the standalone paywall")).await;
        assert_eq!(answer(m.get("/paid/data/x", authorization).await).await, expected, "{authorization:?}");
    }
    assert_eq!(m.upstream.hits(), 1);
}

/// Runs `coffer serve` with a paywalls file; it must exit (non-zero).
async fn refused_start(config: &str, data_dir: &Path) -> String {
    let dir = tempfile::tempdir().expect("a config folder");
    let path = dir.path().join("paywalls.toml");
    std::fs::write(&path, config).expect("writing the paywalls file");
    let env = [("COFFER_OPERATOR_TOKEN", "cop_test_refused_0123456789abcdef0123")];
    common::serve_refused(data_dir, &["--paywall".as_ref(), path.as_os_str()], &env).await
}

#[tokio::test]
async fn an_unknown_agent_or_a_reserved_prefix_refuses_the_start() {
    let file = |prefix: &str, agent: &str| {
        format!(
            "[[paywall]]\nprefix = \"{prefix}\"\nagent = \"{agent}\"\nupstream = \"http://127.0.0.1:9\"\nprice_msat = 1"
        )
    };
    let data = tempfile::tempdir().expect("a data folder");

    let stderr = refused_start(&file("/paid/x", "agt_nobody"), &data.path().join("a")).await;
    assert!(stderr.contains("paywall[0].agent: agt_nobody"), "{stderr}");

    for prefix in ["/v1", "/v1/paid", "/mcp", "/openapi.json", "/healthz", "/metrics", "/", "/ui"] {
        let dir = data.path().join("b");
        let stderr = refused_start(&file(prefix, "agt_x"), &dir).await;
        assert!(stderr.contains("paywall[0].prefix:") && stderr.contains("gateway's own"), "{prefix}: {stderr}");
        assert!(!dir.exists(), "{prefix}: a refused file changes nothing");
    }
    let stderr = refused_start(&format!("{}\nprize_msat = 5", file("/p", "agt_x")), &data.path().join("c")).await;
    assert!(stderr.contains("prize_msat"), "an unknown field is named: {stderr}");
}
