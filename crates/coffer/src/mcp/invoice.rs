//! `decode_invoice`: what a BOLT11 invoice asks for, read and verified
//! locally (signature included) without paying anything.

use crate::payment::bolt11::{InvoiceError, Network, ParsedInvoice};
use lightning_invoice::Bolt11InvoiceDescriptionRef;
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, Serialize)]
pub struct Decoded {
    pub network: &'static str,
    /// `None` for an invoice that lets the payer choose (coffer refuses to
    /// pay those).
    pub amount_msat: Option<u64>,
    pub payment_hash: String,
    /// The payee's node public key (hex), recovered from the signature.
    pub payee: String,
    pub description: Option<String>,
    /// Hex SHA-256 of a description kept elsewhere, when the invoice has that
    /// instead of a description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description_hash: Option<String>,
    pub created_at: String,
    pub expiry_secs: u64,
    pub expires_at: String,
    pub expired: bool,
}

/// Reads an invoice of any network; the error is a sentence for the model.
pub fn decode(bolt11: &str, now: Duration) -> Result<Decoded, String> {
    let mut last = None;
    for network in [Network::Regtest, Network::Signet, Network::Testnet, Network::Bitcoin] {
        match ParsedInvoice::parse(bolt11, network) {
            Ok(parsed) => return finish(parsed, network, now),
            Err(InvoiceError::WrongNetwork) => continue,
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    Err(match last {
        Some(e) => {
            format!("error: invalid-invoice — {e}. This is not a valid BOLT11 invoice; ask the payee for it again.")
        }
        None => "error: invalid-invoice — the invoice is for an unknown network. Ask the payee for another.".into(),
    })
}

fn finish(parsed: ParsedInvoice, network: Network, now: Duration) -> Result<Decoded, String> {
    let amount_msat = parsed.amount.map(|a| a.as_u64());
    let payment_hash = hex::encode(parsed.payment_hash);
    let invoice = parsed.verify().map_err(|e| {
        format!("error: invalid-invoice — {e}. The invoice is damaged or forged: do not pay it; ask the payee again.")
    })?;
    let (description, description_hash) = match invoice.description() {
        Bolt11InvoiceDescriptionRef::Direct(d) => (Some(d.to_string()), None),
        Bolt11InvoiceDescriptionRef::Hash(h) => (None, Some(h.0.to_string())),
    };
    let created = invoice.duration_since_epoch();
    let expiry = invoice.expiry_time();
    let expires = created.saturating_add(expiry);
    Ok(Decoded {
        network: network.as_str(),
        amount_msat,
        payment_hash,
        payee: invoice.recover_payee_pub_key().to_string(),
        description,
        description_hash,
        created_at: rfc3339(created),
        expiry_secs: expiry.as_secs(),
        expires_at: rfc3339(expires),
        expired: now >= expires,
    })
}

fn rfc3339(since_epoch: Duration) -> String {
    let t: chrono::DateTime<chrono::Utc> = (UNIX_EPOCH + since_epoch).into();
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::bolt11::NodeSigner;
    use coffer_core::Msat;

    #[test]
    fn reads_amount_payee_description_and_expiry() {
        let secret = bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap();
        let node = NodeSigner::new(secret, Network::Regtest);
        let signed = node.sign(Msat::new(12_345), "for an answer", 600, Duration::from_secs(1_800_000_000)).unwrap();
        let d = decode(&signed.bolt11, Duration::from_secs(1_800_000_100)).unwrap();
        assert_eq!(d.network, "regtest");
        assert_eq!(d.amount_msat, Some(12_345));
        assert_eq!(d.payee, node.pubkey().to_string());
        assert_eq!(d.description.as_deref(), Some("for an answer"));
        assert_eq!((d.expiry_secs, d.expired), (600, false));
        assert_eq!(d.payment_hash, hex::encode(signed.payment_hash));
        assert!(decode(&signed.bolt11, Duration::from_secs(1_800_000_600)).unwrap().expired);
        assert!(decode("lnbcrt1garbage", Duration::ZERO).unwrap_err().starts_with("error: invalid-invoice"));
    }
}
