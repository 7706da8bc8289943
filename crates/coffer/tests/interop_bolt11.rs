//! Interop: the BOLT11 invoices a running gateway signs, read back by an
//! independent implementation, the PyPI package `bolt11`, through
//! `tests/interop/decode_bolt11.py`.
//!
//! Every field that decoder reads must equal what the gateway answered:
//! amount (sub-satoshi ones too), description (empty, unicode, long),
//! payment hash, network, timestamp and expiry, and the payee, whose key must
//! be the node key `/healthz` reports and must verify the signature. A
//! corrupted invoice must be refused.
//!
//! The interpreter comes from `COFFER_TEST_PYTHON` (`bash .ci/run` makes a
//! venv with the pinned packages of `tests/interop/requirements.txt` and
//! sets it). Without it the tests skip loudly, except under CI, where they
//! fail.

mod common;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DECODER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/decode_bolt11.py");
const READY_PREFIX: &str = "coffer listening on ";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const DECODER_TIMEOUT: Duration = Duration::from_secs(120);
/// The final CLTV delta the gateway asks for: `FINAL_CLTV_EXPIRY_DELTA_MIN_BLOCKS`
/// in `src/payment/bolt11.rs`. Change both together.
const FINAL_CLTV_EXPIRY_DELTA_MIN_BLOCKS: u64 = 144;
/// The decoder's exit status when it refused some of its invoices.
const SOME_REFUSED: i32 = 3;

/// A `coffer serve` child on a fresh data folder and a free port; killed on
/// drop.
struct Gateway {
    child: Child,
    base: String,
    operator_token: String,
    _data: tempfile::TempDir,
}

impl Gateway {
    fn start() -> Gateway {
        let data = tempfile::tempdir().expect("temporary data folder");
        let operator_token = format!("op_{:032x}", rand::random::<u128>());
        let stderr_path = data.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg("serve")
            .arg("--data")
            .arg(data.path().join("gateway"))
            .args(["--listen", "127.0.0.1:0"])
            .env("COFFER_OPERATOR_TOKEN", &operator_token)
            .env("COFFER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the coffer binary");

        // Read stdout on a thread, which goes on draining it after the ready
        // line so the child never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    // Nobody listens any more: keep draining.
                    continue;
                }
            }
        });

        let mut gateway = Gateway { child, base: String::new(), operator_token, _data: data };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(READY_PREFIX) {
                        gateway.base = url.trim().trim_end_matches('/').to_owned();
                        return gateway;
                    }
                    seen.push(line);
                }
                Err(why) => {
                    let status = gateway.child.try_wait().ok().flatten();
                    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!(
                        "coffer did not print `{READY_PREFIX}ADDR` ({why:?}; exit status {status:?})\n\
                         stdout:\n{}\nstderr:\n{log}",
                        seen.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    coffer::tls::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

async fn call(request: reqwest::RequestBuilder, expect: u16) -> Value {
    let response = request.send().await.expect("request to the gateway");
    let status = response.status().as_u16();
    let body = response.text().await.expect("response body");
    assert_eq!(status, expect, "unexpected status; body: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// One invoice the gateway made: what was asked and what it answered.
struct Made {
    amount_msat: u64,
    memo: String,
    expiry_secs: u64,
    answer: Value,
}

impl Made {
    fn bolt11(&self) -> &str {
        self.answer["bolt11"].as_str().expect("bolt11 in the answer")
    }
}

/// A gateway with one agent: its node key, network, and invoices on demand.
struct Fixture {
    gateway: Gateway,
    client: reqwest::Client,
    agent_key: String,
    node_pubkey: String,
    network: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let gateway = Gateway::start();
        let client = http();
        let health = call(client.get(format!("{}/healthz", gateway.base)), 200).await;
        let node_pubkey = health["node_pubkey"].as_str().expect("node_pubkey").to_owned();
        let network = health["network"].as_str().expect("network").to_owned();
        assert_eq!(node_pubkey.len(), 66, "a compressed public key in hex: {node_pubkey}");
        let agent = call(
            client
                .post(format!("{}/v1/agents", gateway.base))
                .bearer_auth(&gateway.operator_token)
                .json(&json!({"name": "interop-bolt11"})),
            201,
        )
        .await;
        let agent_key = agent["key"].as_str().expect("agent key").to_owned();
        assert!(agent["id"].as_str().is_some_and(|id| !id.is_empty()), "agent id: {agent}");
        Fixture { gateway, client, agent_key, node_pubkey, network }
    }

    async fn invoice(&self, amount_msat: u64, memo: &str, expiry_secs: u64) -> Made {
        let answer = call(
            self.client
                .post(format!("{}/v1/invoices", self.gateway.base))
                .bearer_auth(&self.agent_key)
                .json(&json!({"amount_msat": amount_msat, "memo": memo, "expiry_secs": expiry_secs})),
            201,
        )
        .await;
        Made { amount_msat, memo: memo.to_owned(), expiry_secs, answer }
    }

    /// The BOLT11 currency prefix (hrp without `ln` and amount) of this
    /// gateway's network.
    fn currency(&self) -> &'static str {
        match self.network.as_str() {
            "bitcoin" => "bc",
            "testnet" => "tb",
            "signet" => "tbs",
            "regtest" => "bcrt",
            other => panic!("unknown network {other}"),
        }
    }
}

/// Runs the Python decoder on `invoices`, verifying against `payee`.
/// Returns its exit code and one JSON object per invoice.
fn decode(python: &Path, payee: &str, invoices: &[&str]) -> (i32, Vec<Value>) {
    let mut child = Command::new(python)
        .arg(DECODER)
        .args(["--payee", payee])
        .args(invoices)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run COFFER_TEST_PYTHON={}: {e}", python.display()));
    let deadline = Instant::now() + DECODER_TIMEOUT;
    while child.try_wait().expect("poll the decoder").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Python decoder ran longer than {DECODER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("decoder output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == SOME_REFUSED,
        "the decoder failed (exit {code}); is the venv complete (bolt11, bitstring<5)?\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let results: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("decoder output is not JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(results.len(), invoices.len(), "one result per invoice: {stdout}");
    (code, results)
}

fn unix_millis(rfc3339: &Value) -> i64 {
    let text = rfc3339.as_str().expect("a timestamp string");
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}")).timestamp_millis()
}

/// Asserts the decoder read back exactly what the gateway signed.
fn assert_same(fixture: &Fixture, made: &Made, decoded: &Value) {
    let ctx = format!("invoice {} msat, memo {:?}: decoded {decoded}", made.amount_msat, made.memo);
    let answer = &made.answer;
    assert_eq!(decoded["ok"], true, "{ctx}");
    assert_eq!(answer["amount_msat"], made.amount_msat, "gateway answer: {answer}");
    assert_eq!(answer["memo"], made.memo.as_str(), "gateway answer: {answer}");

    assert_eq!(decoded["currency"], fixture.currency(), "{ctx}");
    assert!(made.bolt11().starts_with(&format!("ln{}", fixture.currency())), "{ctx}");
    assert_eq!(decoded["amount_msat"], made.amount_msat, "{ctx}");
    assert_eq!(decoded["description"], made.memo.as_str(), "{ctx}");
    assert_eq!(decoded["description_hash"], Value::Null, "{ctx}");
    assert_eq!(decoded["payment_hash"], answer["payment_hash"], "{ctx}");
    assert!(decoded["payment_secret"].as_str().is_some_and(|s| s.len() == 64), "a 32-byte payment secret: {ctx}");
    assert_eq!(decoded["payee"], fixture.node_pubkey.as_str(), "{ctx}");
    assert_eq!(decoded["signature_valid"], true, "{ctx}");
    assert_eq!(decoded["expiry"], made.expiry_secs, "{ctx}");
    assert_eq!(decoded["min_final_cltv_expiry"], FINAL_CLTV_EXPIRY_DELTA_MIN_BLOCKS, "{ctx}");
    assert_eq!(decoded["features"]["payment_secret"], "required", "{ctx}");

    // BOLT11 timestamps are whole seconds: the creation time, truncated.
    let timestamp = decoded["timestamp"].as_i64().expect("timestamp");
    let created_ms = unix_millis(&answer["created_at"]);
    assert_eq!(timestamp, created_ms.div_euclid(1000), "timestamp vs created_at {}: {ctx}", answer["created_at"]);
    let expires_ms = unix_millis(&answer["expires_at"]);
    let expiry = i64::try_from(made.expiry_secs).expect("expiry");
    assert_eq!((timestamp + expiry) * 1000, expires_ms, "expires_at {}: {ctx}", answer["expires_at"]);
}

#[tokio::test]
async fn gateway_invoices_decode_identically_in_python_bolt11() {
    let Some(python) = common::test_python("the BOLT11 interop with the PyPI `bolt11` decoder") else { return };
    let fixture = Fixture::new().await;

    let long_text: String =
        "Inference for agent run 42: summarise the quarterly report. ".chars().cycle().take(600).collect();
    assert_eq!(long_text.len(), 600);
    // The BOLT11 limit, 639 bytes, in three-byte characters.
    let longest = "€".repeat(213);
    assert_eq!(longest.len(), 639);

    // (amount in msat, memo, expiry in seconds)
    let cases: Vec<(u64, String, u64)> = vec![
        (1, String::new(), 3_600),
        (1_001, "☕ für 2 sats".to_owned(), 600),
        (1_000, "one sat".to_owned(), 60),
        (150_000, "line one\nline \"two\" \\ tab\tend".to_owned(), 1),
        (123_456_789, long_text, 604_800),
        (100_000_000_000, "one bitcoin".to_owned(), 86_400),
        (2_100_000_000_000, longest, 3_600),
        (2_500, "日本語のメモ 🚀".to_owned(), 7_200),
        // The largest amount a BOLT11 invoice can carry (its pico-BTC
        // amount fills a u64): no precision lost on either side.
        (coffer::payment::bolt11::INVOICE_AMOUNT_MAX_MSAT, "the most an invoice can ask".to_owned(), 3_600),
    ];
    let mut made = Vec::new();
    for (amount_msat, memo, expiry_secs) in &cases {
        made.push(fixture.invoice(*amount_msat, memo, *expiry_secs).await);
    }

    // The same invoices, and the first in upper case (as in QR codes),
    // which BOLT11 readers must accept too.
    let upper = made[0].bolt11().to_uppercase();
    let mut invoices: Vec<&str> = made.iter().map(Made::bolt11).collect();
    invoices.push(&upper);
    let (code, decoded) = decode(&python, &fixture.node_pubkey, &invoices);
    assert_eq!(code, 0, "every invoice must decode: {decoded:?}");

    for (m, d) in made.iter().zip(&decoded) {
        assert_same(&fixture, m, d);
    }
    assert_same(&fixture, &made[0], &decoded[made.len()]);

    // Each invoice has its own payment hash and secret.
    let mut hashes: Vec<&str> = decoded.iter().take(made.len()).filter_map(|d| d["payment_hash"].as_str()).collect();
    let mut secrets: Vec<&str> = decoded.iter().take(made.len()).filter_map(|d| d["payment_secret"].as_str()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    secrets.sort_unstable();
    secrets.dedup();
    assert_eq!(hashes.len(), made.len(), "distinct payment hashes");
    assert_eq!(secrets.len(), made.len(), "distinct payment secrets");
}

#[tokio::test]
async fn python_bolt11_refuses_corrupted_gateway_invoices() {
    let Some(python) = common::test_python("the BOLT11 interop with the PyPI `bolt11` decoder") else { return };
    let fixture = Fixture::new().await;
    let made = fixture.invoice(21_000, "tamper with me", 600).await;
    let original = made.bolt11().to_owned();
    let separator = original.rfind('1').expect("bech32 separator");
    let (hrp, data) = (&original[..separator], &original[separator + 1..]);
    let data: Vec<u8> = data.bytes().map(bech32_value).collect();
    assert_eq!(with_checksum(hrp, &data[..data.len() - 6]), original, "the checksum helper reproduces the gateway's");

    // 1. One character of the data part changed: the bech32 checksum fails.
    let corrupted = replace_char(&original, separator + 1 + 10);
    // 2. Same change, checksum recomputed: only the signature can tell.
    //    The 10th data character is in the tagged fields; the 7 first are the
    //    timestamp.
    let mut tagged = data[..data.len() - 6].to_vec();
    tagged[10] ^= 1;
    let forged_field = with_checksum(hrp, &tagged);
    let mut stamped = data[..data.len() - 6].to_vec();
    stamped[3] ^= 4;
    let forged_timestamp = with_checksum(hrp, &stamped);
    // 3. A signature byte changed, checksum recomputed.
    let mut signed = data[..data.len() - 6].to_vec();
    let n = signed.len();
    signed[n - 20] ^= 8;
    let forged_signature = with_checksum(hrp, &signed);

    let invoices = [original.as_str(), &corrupted, &forged_field, &forged_timestamp, &forged_signature];
    let (code, decoded) = decode(&python, &fixture.node_pubkey, &invoices);
    assert_eq!(code, SOME_REFUSED, "some invoices must be refused: {decoded:?}");

    let valid = &decoded[0];
    assert_eq!(valid["ok"], true, "the untouched invoice decodes: {valid}");
    assert_eq!(valid["signature_valid"], true, "{valid}");
    assert_eq!(valid["payee"], fixture.node_pubkey.as_str(), "{valid}");

    assert_eq!(decoded[1]["ok"], false, "a corrupted invoice must be refused: {}", decoded[1]);
    assert!(
        decoded[1]["error_type"].as_str().is_some_and(|t| t.contains("Bech32")),
        "refused for its checksum: {}",
        decoded[1]
    );

    // A forgery with a valid checksum may parse: these invoices carry no
    // `n` field, so the package recovers whichever key the changed message
    // and signature give (bolt11 2.2.0 accepts all three forgeries so). It
    // must not pass as signed by this gateway's node: a payer has to check
    // the payee it expects, as `decode_bolt11.py --payee` does.
    for (name, d) in [("field", &decoded[2]), ("timestamp", &decoded[3]), ("signature", &decoded[4])] {
        if d["ok"] == true {
            assert_eq!(d["signature_valid"], false, "forged {name}: the signature must not verify: {d}");
            assert_ne!(d["payee"], fixture.node_pubkey.as_str(), "forged {name}: a different key recovers: {d}");
        }
    }
}

const BECH32_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn bech32_value(c: u8) -> u8 {
    BECH32_CHARSET.iter().position(|&x| x == c).unwrap_or_else(|| panic!("not bech32: {}", c as char)) as u8
}

fn polymod(values: impl IntoIterator<Item = u8>) -> u32 {
    const GEN: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// `hrp` + `1` + the data + a fresh bech32 checksum (no length limit, as
/// BOLT11 uses it).
fn with_checksum(hrp: &str, data: &[u8]) -> String {
    let expanded = hrp.bytes().map(|c| c >> 5).chain([0]).chain(hrp.bytes().map(|c| c & 31));
    let pm = polymod(expanded.chain(data.iter().copied()).chain([0; 6])) ^ 1;
    let checksum = (0..6).map(|i| ((pm >> (5 * (5 - i))) & 31) as u8);
    let mut out = format!("{hrp}1");
    out.extend(data.iter().copied().chain(checksum).map(|v| BECH32_CHARSET[usize::from(v)] as char));
    out
}

/// The string with the ASCII character at `index` swapped for another
/// bech32 character.
fn replace_char(s: &str, index: usize) -> String {
    let mut bytes = s.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'q' { b'p' } else { b'q' };
    String::from_utf8(bytes).expect("ASCII")
}
