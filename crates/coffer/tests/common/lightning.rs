//! Helpers of the Lightning tests: invoices of other nodes, waiting for the
//! gateway's background work, paying out, reading payments, and the audit
//! after each test.

use super::Gateway;
use coffer::payment::bolt11::{Network, NodeSigner};
use coffer_client::{Client, PayOutcome, PayRequest, Payment};
use coffer_core::Msat;
use std::time::Duration;

/// How long a test waits for background work (a poll round is 1 s) before
/// it fails.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// A node that is not the gateway's: its invoices are paid through the
/// backend.
pub fn other_node(network: Network) -> NodeSigner {
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&coffer::secrets::random_bytes::<32>())
        .expect("32 random bytes are a secret key");
    NodeSigner::new(secret, network)
}

/// A BOLT11 of another node on mainnet (the network of an LNbits
/// FakeWallet): `(bolt11, payment_hash hex, preimage)`.
pub fn outside_invoice(amount_msat: u64) -> (String, String, [u8; 32]) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let signed = other_node(Network::Bitcoin)
        .sign(Msat::new(amount_msat), "outside", 3600, Duration::from_secs(now.as_secs()))
        .expect("signing an invoice");
    (signed.bolt11, hex::encode(signed.payment_hash), signed.preimage)
}

/// Polls `check` every 100 ms until it gives a value, failing the test
/// after [`WAIT_LIMIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited {WAIT_LIMIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One of the agent's payments, by id.
pub async fn payment(agent: &Client, id: &str) -> Payment {
    let page = agent.payments(None).await.expect("listing payments");
    page.items.into_iter().find(|p| p.id == id).unwrap_or_else(|| panic!("no payment {id}"))
}

/// Waits until the payment is no longer pending.
pub async fn finished(agent: &Client, id: &str) -> Payment {
    wait_for(&format!("payment {id} to finish"), || async {
        let p = payment(agent, id).await;
        (p.status != coffer_client::PaymentStatus::Pending).then_some(p)
    })
    .await
}

/// Waits until the agent's wallet holds `balance_msat`.
pub async fn balance_reaches(agent: &Client, balance_msat: u64) -> coffer_client::Wallet {
    wait_for(&format!("a balance of {balance_msat} msat"), || async {
        let w = agent.wallet().await.expect("reading the wallet");
        (w.balance_msat == balance_msat).then_some(w)
    })
    .await
}

/// Pays an invoice of another node and expects an answer at once (not a
/// hold), whatever its status.
pub async fn pay_out(agent: &Client, bolt11: &str, key: &str) -> Payment {
    let request =
        PayRequest { bolt11: bolt11.into(), purpose: Some("outside".into()), amount_msat: None, ..Default::default() };
    match agent.pay(&request, key).await {
        Ok(PayOutcome::Done(p)) => p,
        other => panic!("expected a payment, got {other:?}"),
    }
}

/// `coffer audit` passes on the gateway's store.
pub async fn assert_audit(gw: &Gateway) {
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit failed:\n{report}");
}
