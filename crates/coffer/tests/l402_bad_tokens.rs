//! Bad L402 credentials at coffer's paywall: each gets `402` with a new
//! challenge, and the upstream is never reached.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffer::l402::macaroon::{Identifier, Macaroon};
use coffer_client::L402PayRequest;
use common::Gateway;
use common::paywall::{Paywall, Upstream};

const ROUTES: &str = "[[route]]\npath = \"/a\"\nprice_msat = 1000\n\
    [[route]]\npath = \"/b\"\nprice_msat = 1000\n\
    [[route]]\npath = \"/metered\"\nprice_msat = 1000\nuses = 2\n";

struct Setup {
    _gw: Gateway,
    upstream: Upstream,
    paywall: Paywall,
    buyer: coffer_client::Client,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    let gw = Gateway::start().await;
    let (_, _, seller_key) = gw.new_agent("seller", 0).await;
    let (_, buyer, _) = gw.new_agent("buyer", 100_000).await;
    let upstream = Upstream::start().await;
    let paywall = Paywall::start(&gw, &seller_key, &upstream, 500, Some(ROUTES)).await;
    Setup { _gw: gw, upstream, paywall, buyer, http: reqwest::Client::new() }
}

impl Setup {
    async fn get(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.paywall.url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.expect("a request to the paywall")
    }

    /// Pays the challenge of `path` through the gateway: the token, and its
    /// `Authorization` value.
    async fn buy(&self, path: &str) -> coffer_client::L402Token {
        let challenge = self.get(path, None).await;
        assert_eq!(challenge.status(), 402);
        let value = challenge.headers()["www-authenticate"].to_str().expect("an ASCII challenge").to_owned();
        assert!(value.starts_with("L402 version=\"0\", token=\""), "the current challenge form: {value}");
        let url = format!("{}{path}", self.paywall.url);
        self.buyer.l402_pay(&L402PayRequest { url, challenge: value, rejected_token: None }).await.expect("paying")
    }

    async fn assert_refused(&self, path: &str, authorization: &str, why: &str) {
        let before = self.upstream.hits();
        let response = self.get(path, Some(authorization)).await;
        assert_eq!(response.status(), 402, "{why}");
        assert!(response.headers().contains_key("www-authenticate"), "{why}: a new challenge");
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert_eq!(body["code"], "payment-required", "{why}: {body}");
        assert_eq!(self.upstream.hits(), before, "{why}: the upstream was reached");
    }
}

fn preimage_of(token: &coffer_client::L402Token) -> String {
    token.authorization.rsplit_once(':').expect("token:preimage").1.to_owned()
}

#[tokio::test]
async fn a_good_token_passes_in_both_scheme_names() {
    let s = setup().await;
    let token = s.buy("/a").await;
    assert_eq!(s.get("/a/x", Some(&token.authorization)).await.status(), 200);
    let lsat = token.authorization.replacen("L402 ", "LSAT ", 1);
    assert_eq!(s.get("/a", Some(&lsat)).await.status(), 200);
    assert_eq!(s.upstream.hits(), 2);
}

#[tokio::test]
async fn wrong_preimage_tampered_and_other_route_tokens_are_refused() {
    let s = setup().await;
    let token = s.buy("/a").await;
    s.assert_refused("/a", &format!("L402 {}:{}", token.token, "00".repeat(32)), "a wrong preimage").await;

    let mut bytes = STANDARD.decode(&token.token).expect("standard base64");
    let mut macaroon = Macaroon::decode(&bytes).expect("a v2 macaroon");
    macaroon.caveats[1] = b"route=/b".to_vec();
    let tampered = STANDARD.encode(macaroon.encode());
    s.assert_refused("/b", &format!("L402 {tampered}:{}", preimage_of(&token)), "a tampered caveat").await;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let flipped = STANDARD.encode(&bytes);
    s.assert_refused("/a", &format!("L402 {flipped}:{}", preimage_of(&token)), "a flipped signature").await;

    s.assert_refused("/b", &token.authorization, "a token for another route").await;
    s.assert_refused("/abc", &token.authorization, "a route sharing a prefix only").await;
    s.assert_refused("/a", "L402 not-base64!:00", "garbage").await;
    s.assert_refused("/a", &format!("Bearer {}", token.token), "another scheme").await;
    assert_eq!(s.get("/a", Some(&token.authorization)).await.status(), 200, "the real token still works");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let s = setup().await;
    let token = s.buy("/a").await;
    // A token as the paywall mints them, with the paywall's own key and the
    // paid invoice's hash, but expired a minute ago.
    let paid = Macaroon::decode(&STANDARD.decode(&token.token).unwrap()).unwrap();
    let id = Identifier::decode(&paid.identifier).expect("an L402 identifier");
    let mut expired = Macaroon::mint(&s.paywall.root_key(), "coffer", id.encode());
    let past_secs = coffer::gateway::Clock::now_ms(&coffer::gateway::SystemClock) / 1000 - 60;
    expired.add_caveat(&format!("expires_at={past_secs}"));
    expired.add_caveat("route=/a");
    let authorization = format!("L402 {}:{}", STANDARD.encode(expired.encode()), preimage_of(&token));
    s.assert_refused("/a", &authorization, "an expired token").await;
    // The same forgery with a future expiry passes: the refusal was the expiry.
    let mut fresh = Macaroon::mint(&s.paywall.root_key(), "coffer", id.encode());
    fresh.add_caveat(&format!("expires_at={}", past_secs + 3600));
    fresh.add_caveat("route=/a");
    let authorization = format!("L402 {}:{}", STANDARD.encode(fresh.encode()), preimage_of(&token));
    assert_eq!(s.get("/a", Some(&authorization)).await.status(), 200);
}

#[tokio::test]
async fn a_metered_token_serves_its_uses_then_is_refused() {
    let s = setup().await;
    let token = s.buy("/metered").await;
    assert_eq!(s.get("/metered", Some(&token.authorization)).await.status(), 200);
    assert_eq!(s.get("/metered/2", Some(&token.authorization)).await.status(), 200);
    s.assert_refused("/metered", &token.authorization, "uses exhausted").await;
    assert_eq!(s.upstream.hits(), 2);
}

#[tokio::test]
async fn a_refused_kept_token_is_replaced_by_paying_again() {
    let s = setup().await;
    let url = format!("{}/metered", s.paywall.url);
    let mut paid_msat = 0;
    for _ in 0..3 {
        let fetched = s.buyer.fetch_l402(&url).await.expect("a fetch");
        assert_eq!(fetched.status, 200);
        paid_msat += fetched.paid_msat;
    }
    assert_eq!(paid_msat, 2_000, "two uses per token: the third fetch paid for a new one");
    assert_eq!(s.upstream.hits(), 3);
}
