//! Issue 17, items 1 and 4: a paywall decides on one form of each path and
//! forwards exactly that form, so a token bought for a cheap route reaches
//! nothing else however the path is spelled, a mounted paywall stays under
//! its upstream's base path, and per-route `uses` hold; and challenges (each
//! a stored invoice) are bounded per client and minute. Both the standalone
//! `coffer paywall` and a paywall mounted on `coffer serve` are tried. The
//! upstream stand-in listens on 127.0.0.1 and records every path it gets.

mod common;

use common::Gateway;
use common::paywall::{Paywall, Upstream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHEAP_MSAT: u64 = 1_000;
const DEFAULT_MSAT: u64 = 40_000;
const FUNDS_MSAT: u64 = 100_000;
/// The mounted paywall's upstream: everything it forwards must stay below.
const UPSTREAM_BASE: &str = "/base";
const PREFIX: &str = "/paid/shop";

const ROUTES: &str = "
[[route]]
path = \"/cheap\"
price_msat = 1000
[[route]]
path = \"/expensive\"
price_msat = 50000
[[route]]
path = \"/limited\"
price_msat = 1000
uses = 1
";

/// Spellings of `/expensive`, `/limited` or a path outside the mount that
/// start inside `/cheap`. Sent as raw bytes: an HTTP client would resolve
/// some of them before sending.
const BYPASSES: &[&str] = &[
    "/cheap/../expensive",
    "/cheap/./../expensive",
    "/cheap//../expensive",
    "/cheap/%2e%2e/expensive",
    "/cheap/%2E%2E/expensive",
    "/cheap/.%2e/expensive",
    "/cheap/%2e./expensive",
    "/cheap/..%2fexpensive",
    "/cheap%2f..%2fexpensive",
    "/cheap%2F..%2Fexpensive",
    "/cheap%5c..%5cexpensive",
    "/cheap\\..\\expensive",
    "/cheap/%252e%252e/expensive",
    "/cheap/..;/expensive",
    "/cheap/%2e%2e%2f%2e%2e%2fexpensive",
    "/cheap/../limited",
    "/cheap/%2e%2e/limited",
    "/cheap/../../../../outside",
    "/cheap/%2e%2e/%2e%2e/%2e%2e/outside",
];

/// Spellings of `/limited` tried with its one-use token, used up.
const LIMITED_AGAIN: &[&str] = &["/limited", "/limited/", "/limited/.", "//limited", "/%6cimited", "/limited/%2e"];

/// A seller and a funded buyer on a gateway serving a mounted paywall (at
/// [`PREFIX`], upstream at [`UPSTREAM_BASE`]) and a `coffer paywall`, both
/// with [`ROUTES`], in front of one recording upstream.
struct Shop {
    gw: Gateway,
    upstream: Upstream,
    standalone: Paywall,
    seller_key: String,
    buyer: coffer_client::Client,
    _config: tempfile::TempDir,
}

async fn shop(env: &[(&str, &str)]) -> Shop {
    let mut gw = Gateway::start_with_env(env).await;
    let (seller_id, _, seller_key) = gw.new_agent("seller", 0).await;
    let (_, _, buyer_key) = gw.new_agent("buyer", FUNDS_MSAT).await;
    let upstream = Upstream::start().await;
    let config = tempfile::tempdir().expect("a config folder");
    let path = config.path().join("paywalls.toml");
    let mount_routes = ROUTES.replace("[[route]]", "[[paywall.route]]");
    let text = format!(
        "[[paywall]]\nprefix = \"{PREFIX}\"\nagent = \"{seller_id}\"\nupstream = \"{}{UPSTREAM_BASE}\"\n\
         price_msat = {DEFAULT_MSAT}\n{mount_routes}",
        upstream.url
    );
    std::fs::write(&path, text).expect("writing the paywalls file");
    gw.restart_with(&["--paywall", path.to_str().expect("a UTF-8 path")]).await;
    let standalone = Paywall::start_with_env(&gw, &seller_key, &upstream, DEFAULT_MSAT, Some(ROUTES), env).await;
    let buyer = gw.client(&buyer_key);
    Shop { gw, upstream, standalone, seller_key, buyer, _config: config }
}

/// Sends `GET path` (below the base URL's path) as it is written, byte for
/// byte; answers the status
/// and the head of the answer.
async fn raw_get(base_url: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let rest = base_url.strip_prefix("http://").expect("an http URL");
    let (address, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authorization = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
    let request = format!("GET {prefix}{path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connecting to the paywall");
        stream.write_all(request.as_bytes()).await.expect("sending the request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("reading the answer");
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange).await.expect("an answer within 30 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{path}: no status: {text}"));
    (status, text)
}

/// Buys a token for `url` (a route of the paywall) and answers its
/// `Authorization` value.
async fn buy(buyer: &coffer_client::Client, url: &str, price_msat: u64) -> String {
    let fetched = buyer.fetch_l402(url).await.expect("buying a token");
    assert_eq!((fetched.status, fetched.paid_msat), (200, price_msat), "{url}");
    fetched.token.expect("the token bought").authorization
}

/// Every bypass answers 402 or another 4xx, and the upstream gets only the
/// paths paid for: `paid` (under `upstream_base`).
async fn no_spelling_gets_past(shop: &Shop, base_url: &str, upstream_base: &str) {
    let cheap = buy(&shop.buyer, &format!("{base_url}/cheap"), CHEAP_MSAT).await;
    let limited = buy(&shop.buyer, &format!("{base_url}/limited"), CHEAP_MSAT).await;
    let (status, _) = raw_get(base_url, "/cheap?q=%2e%2e/x&r=1", Some(&cheap)).await;
    assert_eq!(status, 200, "the token is good for its own route");
    for path in BYPASSES {
        let (status, answer) = raw_get(base_url, path, Some(&cheap)).await;
        assert!(status == 402 || (400..500).contains(&status), "{path}: {status}\n{answer}");
    }
    for path in LIMITED_AGAIN {
        let (status, answer) = raw_get(base_url, path, Some(&limited)).await;
        assert!(status == 402 || (400..500).contains(&status), "{path} used again: {status}\n{answer}");
    }
    let want: Vec<String> =
        ["/cheap", "/limited", "/cheap?q=%2e%2e/x&r=1"].iter().map(|path| format!("{upstream_base}{path}")).collect();
    let seen: Vec<String> = shop.upstream.paths().into_iter().filter(|p| p.starts_with(upstream_base)).collect();
    assert_eq!(seen, want, "the upstream saw only the paths paid for, as decided");
}

#[tokio::test]
async fn no_spelling_of_a_path_gets_past_coffer_paywall() {
    let shop = shop(&[]).await;
    no_spelling_gets_past(&shop, &shop.standalone.url, "").await;
    assert_eq!(shop.upstream.hits(), 3, "nothing else reached the upstream");
}

#[tokio::test]
async fn no_spelling_of_a_path_gets_past_or_out_of_a_mounted_paywall() {
    let shop = shop(&[]).await;
    let base_url = format!("{}{PREFIX}", shop.gw.url());
    no_spelling_gets_past(&shop, &base_url, UPSTREAM_BASE).await;
    assert_eq!(shop.upstream.hits(), 3, "nothing else reached the upstream, inside its base or out");
}

#[tokio::test]
async fn challenges_per_client_are_bounded_and_beyond_no_invoice_is_stored() {
    const PER_MINUTE: usize = 3;
    const TRIES: usize = 5;
    let per_minute = PER_MINUTE.to_string();
    let shop = shop(&[("COFFER_LIMIT_PAYWALL_CHALLENGES_PER_MINUTE_PER_CLIENT", &per_minute)]).await;
    let mounted = format!("{}{PREFIX}", shop.gw.url());
    for base_url in [shop.standalone.url.as_str(), mounted.as_str()] {
        let mut statuses = Vec::new();
        for _ in 0..TRIES {
            let answer = shop.gw.http().get(format!("{base_url}/cheap")).send().await.expect("a request");
            statuses.push(answer.status().as_u16());
            if answer.status() == 429 {
                let retry_after = answer.headers().get("retry-after").expect("Retry-After on a 429");
                let secs: u64 = retry_after.to_str().unwrap().parse().expect("Retry-After in seconds");
                assert!((1..=60).contains(&secs), "{secs}");
                let problem: serde_json::Value = answer.json().await.expect("a problem");
                assert_eq!(problem["code"], "limit-exceeded", "{problem}");
                assert_eq!(problem["limit"], "paywall_challenges_per_minute_per_client", "{problem}");
            }
        }
        let mut want = vec![402; PER_MINUTE];
        want.extend([429; TRIES - PER_MINUTE]);
        assert_eq!(statuses, want, "{base_url}");
    }
    let invoices = shop.gw.client(&shop.seller_key).invoices(None).await.expect("the seller's invoices").items;
    assert_eq!(invoices.len(), 2 * PER_MINUTE, "one invoice per challenge given, none beyond the bound");
    assert_eq!(shop.upstream.hits(), 0);
}
