//! Lightning addresses (`name@domain`, LUD-16) through LNURL-pay (LUD-06):
//! `GET https://domain/.well-known/lnurlp/name` gives a callback and the
//! amounts it takes; `GET callback?amount=MSAT` gives the invoice (`pr`).
//! The invoice is checked before anyone pays it: its amount is the one asked
//! for, and its description hash, when it has one, is the SHA-256 of the
//! metadata the service published (LUD-06). Answers are bounded in size;
//! plain http only for 127.0.0.1 and localhost (tests). Every URL, the
//! callback included, passes the egress guard (`crate::egress`): a Lightning
//! address names anyone's host.

use crate::egress::Egress;
use crate::error::Error;
use crate::payment::bolt11::{Network, ParsedInvoice};
use bitcoin::hashes::{Hash, sha256};
use serde::Deserialize;

/// The largest LNURL answer read.
const ANSWER_LEN_MAX_BYTES: usize = 64 * 1024;
/// A Lightning address's longest user name and domain.
const NAME_LEN_MAX_BYTES: usize = 64;
const DOMAIN_LEN_MAX_BYTES: usize = 253;

/// Whether `text` looks like a Lightning address rather than an invoice.
pub fn is_address(text: &str) -> bool {
    text.contains('@')
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayRequest {
    callback: String,
    min_sendable: u64,
    max_sendable: u64,
    metadata: String,
    tag: String,
}

#[derive(Deserialize)]
struct Invoice {
    pr: String,
}

fn bad(why: impl Into<String>) -> Error {
    Error::InvalidField { field: "bolt11", detail: format!("Lightning address: {}", why.into()) }
}

/// The invoice a Lightning address gives for `amount_msat`, checked.
pub async fn resolve(
    http: &reqwest::Client,
    egress: &Egress,
    address: &str,
    amount_msat: u64,
    network: Network,
) -> Result<String, Error> {
    let (name, domain) = address.trim().split_once('@').ok_or_else(|| bad("expected name@domain"))?;
    let name_ok = !name.is_empty()
        && name.len() <= NAME_LEN_MAX_BYTES
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.+".contains(c));
    let domain_ok = !domain.is_empty()
        && domain.len() <= DOMAIN_LEN_MAX_BYTES
        && domain.chars().all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c));
    if !name_ok || !domain_ok {
        return Err(bad("expected name@domain (a-z, 0-9, -_.+ in the name)"));
    }
    let host = domain.split(':').next().unwrap_or_default();
    let scheme = if matches!(host, "127.0.0.1" | "localhost") { "http" } else { "https" };
    let first: serde_json::Value =
        fetch(http, egress, &format!("{scheme}://{domain}/.well-known/lnurlp/{name}")).await?;
    refused(&first)?;
    let request: PayRequest = serde_json::from_value(first).map_err(|e| bad(format!("not a payRequest: {e}")))?;
    if request.tag != "payRequest" {
        return Err(bad(format!("tag {} is not payRequest", request.tag)));
    }
    if amount_msat < request.min_sendable || amount_msat > request.max_sendable {
        return Err(bad(format!(
            "it takes {} to {} msat, not {amount_msat}",
            request.min_sendable, request.max_sendable
        )));
    }
    let mut callback = reqwest::Url::parse(&request.callback).map_err(|_| bad("the callback is not a URL"))?;
    let local = matches!(callback.host_str(), Some("127.0.0.1" | "localhost"));
    if callback.scheme() != "https" && !(callback.scheme() == "http" && local) {
        return Err(bad("the callback must be https"));
    }
    callback.query_pairs_mut().append_pair("amount", &amount_msat.to_string());
    let second: serde_json::Value = fetch(http, egress, callback.as_str()).await?;
    refused(&second)?;
    let invoice: Invoice = serde_json::from_value(second).map_err(|e| bad(format!("no invoice: {e}")))?;
    check(&invoice.pr, amount_msat, &request.metadata, network)?;
    Ok(invoice.pr)
}

/// The invoice is for the amount asked, and for the metadata published.
fn check(pr: &str, amount_msat: u64, metadata: &str, network: Network) -> Result<(), Error> {
    let parsed = ParsedInvoice::parse(pr, network).map_err(|e| bad(format!("its invoice: {e}")))?;
    if parsed.amount.map(|a| a.as_u64()) != Some(amount_msat) {
        return Err(bad("its invoice is not for the amount asked"));
    }
    let invoice = parsed.verify().map_err(|e| bad(format!("its invoice: {e}")))?;
    if let lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(hash) = invoice.description()
        && hash.0.to_byte_array() != sha256::Hash::hash(metadata.as_bytes()).to_byte_array()
    {
        return Err(bad("its invoice's description hash is not that of the published metadata"));
    }
    Ok(())
}

fn refused(answer: &serde_json::Value) -> Result<(), Error> {
    if answer.get("status").and_then(|s| s.as_str()) == Some("ERROR") {
        let reason = answer.get("reason").and_then(|r| r.as_str()).unwrap_or("no reason given");
        return Err(bad(format!("the service refused: {}", reason.chars().take(200).collect::<String>())));
    }
    Ok(())
}

async fn fetch(http: &reqwest::Client, egress: &Egress, url: &str) -> Result<serde_json::Value, Error> {
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    egress.check_url(&parsed).map_err(|refused| bad(refused.to_string()))?;
    let request = http.get(parsed).header("Accept", "application/json");
    let (status, body) = super::http::send(request).await.map_err(|e| bad(e.to_string()))?;
    if body.len() > ANSWER_LEN_MAX_BYTES {
        return Err(bad(format!("an answer larger than {ANSWER_LEN_MAX_BYTES} bytes")));
    }
    if !(200..300).contains(&status) {
        return Err(bad(format!("the service answered {status}")));
    }
    serde_json::from_slice(&body).map_err(|_| bad("the service's answer is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::random_bytes;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use lightning_invoice::{InvoiceBuilder, PaymentSecret};

    /// An invoice whose description is the hash of `metadata`.
    fn invoice_for(metadata: &str, amount_msat: u64) -> String {
        let secp = Secp256k1::new();
        let key = SecretKey::from_slice(&random_bytes::<32>()).unwrap();
        InvoiceBuilder::new(Network::Bitcoin.currency())
            .description_hash(sha256::Hash::hash(metadata.as_bytes()))
            .payment_hash(sha256::Hash::hash(&random_bytes::<32>()))
            .payment_secret(PaymentSecret(random_bytes::<32>()))
            .current_timestamp()
            .min_final_cltv_expiry_delta(144)
            .amount_milli_satoshis(amount_msat)
            .build_signed(|hash| secp.sign_ecdsa_recoverable(hash, &key))
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_invoice_must_match_the_amount_and_the_published_metadata() {
        let metadata = r#"[["text/plain","tips"]]"#;
        let pr = invoice_for(metadata, 5_000);
        assert!(check(&pr, 5_000, metadata, Network::Bitcoin).is_ok());
        assert!(check(&pr, 6_000, metadata, Network::Bitcoin).is_err(), "another amount");
        let other = check(&pr, 5_000, r#"[["text/plain","other"]]"#, Network::Bitcoin).unwrap_err();
        assert!(other.to_string().contains("description hash"), "{other}");
        assert!(check(&pr, 5_000, metadata, Network::Regtest).is_err(), "another network");
    }

    #[test]
    fn only_plausible_addresses_are_fetched() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let http = crate::lightning::config::client(std::time::Duration::from_secs(1), None).unwrap();
        for bad_address in ["@example.com", "alice@", "Alice@example.com", "a b@example.com", "alice@exa/mple.com"] {
            let err =
                rt.block_on(resolve(&http, &Egress::default(), bad_address, 1_000, Network::Bitcoin)).unwrap_err();
            assert!(err.to_string().contains("name@domain"), "{bad_address}: {err}");
        }
    }
}
