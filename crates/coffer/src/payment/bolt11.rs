//! BOLT11 invoices: signing ours with the gateway node key, and parsing the
//! ones agents ask to pay.

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use coffer_core::Msat;
use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret, SignedRawBolt11Invoice};
use std::path::Path;
use std::time::Duration;

use crate::secrets::{random_bytes, write_private_file};

/// The longest BOLT11 string we parse. Real invoices are a few hundred
/// characters; route hints can make them longer, but not this long.
pub const BOLT11_LEN_MAX_BYTES: usize = 7_089;
/// BOLT11's limit on the `d` (description) field.
pub const MEMO_LEN_MAX_BYTES: usize = 639;
const _: () = assert!(MEMO_LEN_MAX_BYTES < BOLT11_LEN_MAX_BYTES);
/// BOLT11 writes amounts in pico-bitcoin in a `u64`: 10 pico-BTC per msat,
/// so it cannot carry more than this (about 18.4 million BTC).
pub const INVOICE_AMOUNT_MAX_MSAT: u64 = u64::MAX / 10;
/// The default and the longest invoice expiry.
pub const EXPIRY_DEFAULT_SECS: u32 = 3_600;
pub const EXPIRY_MAX_SECS: u32 = 7 * 24 * 3_600;
const _: () = assert!(EXPIRY_DEFAULT_SECS <= EXPIRY_MAX_SECS);
/// The final CLTV delta we ask for (BOLT11's default of 18 is too short for
/// real nodes; 144 blocks is about a day).
const FINAL_CLTV_EXPIRY_DELTA_MIN_BLOCKS: u64 = 144;

/// The Bitcoin network of the gateway's invoices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Regtest,
    Signet,
    Testnet,
    Bitcoin,
}

impl Network {
    pub fn currency(self) -> Currency {
        match self {
            Network::Regtest => Currency::Regtest,
            Network::Signet => Currency::Signet,
            Network::Testnet => Currency::BitcoinTestnet,
            Network::Bitcoin => Currency::Bitcoin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Network::Regtest => "regtest",
            Network::Signet => "signet",
            Network::Testnet => "testnet",
            Network::Bitcoin => "bitcoin",
        }
    }
}

/// Why an invoice could not be made or read.
#[derive(Debug)]
pub enum InvoiceError {
    Malformed(String),
    WrongNetwork,
    BadSignature,
    Create(String),
}

impl std::fmt::Display for InvoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvoiceError::Malformed(why) => write!(f, "not a valid BOLT11 invoice: {why}"),
            InvoiceError::WrongNetwork => f.write_str("the invoice is for another Bitcoin network"),
            InvoiceError::BadSignature => f.write_str("the invoice's signature does not verify"),
            InvoiceError::Create(why) => write!(f, "could not create the invoice: {why}"),
        }
    }
}

/// An invoice we just signed. The preimage never leaves the store except to
/// the payer of a settled payment.
pub struct SignedInvoice {
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    pub preimage: [u8; 32],
}

/// The gateway's node identity: signs every invoice this gateway issues.
pub struct NodeSigner {
    secret: SecretKey,
    pubkey: PublicKey,
    secp: Secp256k1<All>,
    network: Network,
}

impl NodeSigner {
    /// Loads `node.key` from the data folder, creating it (mode 0600) on
    /// first start.
    pub fn load_or_create(path: &Path, network: Network) -> std::io::Result<NodeSigner> {
        let secret = match std::fs::read_to_string(path) {
            Ok(text) => parse_secret(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = new_secret_key();
                write_private_file(path, hex::encode(secret.secret_bytes()).as_bytes())?;
                secret
            }
            Err(e) => return Err(e),
        };
        Ok(NodeSigner::new(secret, network))
    }

    pub fn new(secret: SecretKey, network: Network) -> NodeSigner {
        let secp = Secp256k1::new();
        let pubkey = PublicKey::from_secret_key(&secp, &secret);
        NodeSigner { secret, pubkey, secp, network }
    }

    pub fn pubkey(&self) -> PublicKey {
        self.pubkey
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// A 256-bit key for `label`, derived from the node key with
    /// HMAC-SHA256: secrets the gateway must be able to recompute (webhook
    /// signing keys) without storing them. One-way: it reveals nothing of
    /// the node key.
    pub fn derive_key(&self, label: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.secret.secret_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"coffer/derive/v1/");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// ECDSA over a 32-byte digest with the node key: deterministic
    /// (RFC 6979), low-S, compact `r‖s`. For signed receipts
    /// ([`crate::payment::receipt`]).
    pub fn sign_digest(&self, digest: [u8; 32]) -> [u8; 64] {
        let message = bitcoin::secp256k1::Message::from_digest(digest);
        self.secp.sign_ecdsa(&message, &self.secret).serialize_compact()
    }

    /// Signs a new invoice. `now` is the creation time, since the epoch.
    pub fn sign(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        now: Duration,
    ) -> Result<SignedInvoice, InvoiceError> {
        self.sign_with_preimage(random_bytes::<32>(), amount, memo, expiry_secs, now)
    }

    /// Signs a new invoice for a preimage chosen by the caller, as a
    /// backend's node does for coffer's invoices.
    pub fn sign_with_preimage(
        &self,
        preimage: [u8; 32],
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        now: Duration,
    ) -> Result<SignedInvoice, InvoiceError> {
        let payment_hash = sha256::Hash::hash(&preimage);
        let invoice = InvoiceBuilder::new(self.network.currency())
            .description(memo.to_owned())
            .payment_hash(payment_hash)
            .payment_secret(PaymentSecret(random_bytes::<32>()))
            .duration_since_epoch(now)
            .min_final_cltv_expiry_delta(FINAL_CLTV_EXPIRY_DELTA_MIN_BLOCKS)
            .amount_milli_satoshis(amount.as_u64())
            .expiry_time(Duration::from_secs(u64::from(expiry_secs)))
            .basic_mpp()
            .build_signed(|message| self.secp.sign_ecdsa_recoverable(message, &self.secret))
            .map_err(|e| InvoiceError::Create(e.to_string()))?;
        Ok(SignedInvoice { bolt11: invoice.to_string(), payment_hash: payment_hash.to_byte_array(), preimage })
    }
}

fn parse_secret(text: &str) -> std::io::Result<SecretKey> {
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("node.key: {why}"));
    let bytes = hex::decode(text.trim()).map_err(|_| invalid("not hex"))?;
    SecretKey::from_slice(&bytes).map_err(|_| invalid("not a secp256k1 secret key"))
}

fn new_secret_key() -> SecretKey {
    // A uniformly random 32-byte value is a valid key except with
    // probability ~2^-128; loop rather than assume.
    loop {
        if let Ok(key) = SecretKey::from_slice(&random_bytes::<32>()) {
            return key;
        }
    }
}

/// An invoice of another node, its signature checked.
#[derive(Clone, Debug)]
pub struct OutsideInvoice {
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    pub amount: Option<Msat>,
    /// The payee node's key, hex.
    pub payee_hex: String,
    pub expires_at_secs: u64,
}

/// The payee node's key (hex) of a BOLT11 invoice of any network, already
/// checked once (when it was paid): written in the invoice, or recovered
/// from its signature.
pub fn payee_hex(bolt11: &str) -> Option<String> {
    let signed: SignedRawBolt11Invoice = bolt11.trim().parse().ok()?;
    let key = match signed.raw_invoice().payee_pub_key() {
        Some(key) => key.0,
        None => signed.recover_payee_pub_key().ok()?.0,
    };
    Some(hex::encode(key.serialize()))
}

/// An invoice an agent asked to pay, parsed but not yet verified: for an
/// invoice of this gateway the stored copy is the proof, so the costly
/// signature recovery runs only for invoices of other nodes.
pub struct ParsedInvoice {
    /// Lower case, without a `lightning:` prefix.
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    pub amount: Option<Msat>,
    signed: SignedRawBolt11Invoice,
}

impl ParsedInvoice {
    pub fn parse(input: &str, network: Network) -> Result<ParsedInvoice, InvoiceError> {
        let trimmed = input.trim();
        if trimmed.len() > BOLT11_LEN_MAX_BYTES {
            return Err(InvoiceError::Malformed(format!("longer than {BOLT11_LEN_MAX_BYTES} characters")));
        }
        let mut bolt11 = trimmed.to_ascii_lowercase();
        if let Some(rest) = bolt11.strip_prefix("lightning:") {
            bolt11 = rest.to_owned();
        }
        let signed: SignedRawBolt11Invoice =
            bolt11.parse().map_err(|e: lightning_invoice::Bolt11ParseError| InvoiceError::Malformed(e.to_string()))?;
        let raw = signed.raw_invoice();
        if raw.currency() != network.currency() {
            return Err(InvoiceError::WrongNetwork);
        }
        let payment_hash = raw
            .payment_hash()
            .map(|h| h.0.to_byte_array())
            .ok_or_else(|| InvoiceError::Malformed("no payment hash".into()))?;
        let amount = raw.amount_pico_btc().map(|pico| Msat::new(pico / 10));
        Ok(ParsedInvoice { bolt11, payment_hash, amount, signed })
    }

    /// What paying an invoice of another node needs, with its signature
    /// checked. Full BOLT11 validation first; an invoice whose only fault is
    /// a missing or odd feature field is still accepted (LNbits' FakeWallet
    /// and some older wallets write no features): its signature is checked
    /// here and the backend that pays it decides whether it can.
    pub fn outside(self) -> Result<OutsideInvoice, InvoiceError> {
        let (bolt11, payment_hash, amount) = (self.bolt11.clone(), self.payment_hash, self.amount);
        let signed = self.signed.clone();
        let (payee, timestamp_secs, expiry_secs) = match self.verify() {
            Ok(invoice) => (
                invoice.recover_payee_pub_key(),
                invoice.duration_since_epoch().as_secs(),
                invoice.expiry_time().as_secs(),
            ),
            Err(InvoiceError::Malformed(why)) if why.contains("features") => {
                if !signed.check_signature() {
                    return Err(InvoiceError::BadSignature);
                }
                let raw = signed.raw_invoice();
                let payee = match raw.payee_pub_key() {
                    Some(key) => key.0,
                    None => signed.recover_payee_pub_key().map_err(|_| InvoiceError::BadSignature)?.0,
                };
                let expiry = raw.expiry_time().map_or(lightning_invoice::DEFAULT_EXPIRY_TIME, |e| e.as_seconds());
                (payee, raw.data.timestamp.as_unix_timestamp(), expiry)
            }
            Err(other) => return Err(other),
        };
        Ok(OutsideInvoice {
            bolt11,
            payment_hash,
            amount,
            payee_hex: payee.to_string(),
            expires_at_secs: timestamp_secs.saturating_add(expiry_secs),
        })
    }

    /// Full BOLT11 validation, signature included: for invoices of other nodes.
    pub fn verify(self) -> Result<Bolt11Invoice, InvoiceError> {
        Bolt11Invoice::from_signed(self.signed).map_err(|e| match e {
            lightning_invoice::Bolt11SemanticError::InvalidSignature => InvoiceError::BadSignature,
            other => InvoiceError::Malformed(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NodeSigner {
        NodeSigner::new(new_secret_key(), Network::Regtest)
    }

    #[test]
    fn signed_invoices_round_trip_and_verify() {
        let node = signer();
        let now = Duration::from_secs(1_800_000_000);
        let inv = node.sign(Msat::new(12_345), "for an answer", 600, now).unwrap();
        assert!(inv.bolt11.starts_with("lnbcrt"));
        assert_eq!(sha256::Hash::hash(&inv.preimage).to_byte_array(), inv.payment_hash);

        let parsed = ParsedInvoice::parse(&inv.bolt11.to_uppercase(), Network::Regtest).unwrap();
        assert_eq!(parsed.payment_hash, inv.payment_hash);
        assert_eq!(parsed.amount, Some(Msat::new(12_345)));
        let full = parsed.verify().unwrap();
        assert_eq!(full.recover_payee_pub_key(), node.pubkey());
        assert_eq!(full.expiry_time(), Duration::from_secs(600));
    }

    #[test]
    fn rejects_garbage_other_networks_and_bad_signatures() {
        assert!(matches!(ParsedInvoice::parse("lnbcrt1garbage", Network::Regtest), Err(InvoiceError::Malformed(_))));
        assert!(ParsedInvoice::parse(&"x".repeat(BOLT11_LEN_MAX_BYTES + 1), Network::Regtest).is_err());
        let inv = signer().sign(Msat::new(1_000), "", 60, Duration::from_secs(1_800_000_000)).unwrap();
        assert!(matches!(ParsedInvoice::parse(&inv.bolt11, Network::Bitcoin), Err(InvoiceError::WrongNetwork)));

        // Flip one character of the signature part: the checksum fails, or
        // the signature does; either way it is refused.
        let mut chars: Vec<char> = inv.bolt11.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'q' { 'p' } else { 'q' };
        let tampered: String = chars.into_iter().collect();
        assert!(ParsedInvoice::parse(&tampered, Network::Regtest).and_then(ParsedInvoice::verify).is_err());
    }

    #[test]
    fn node_key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let a = NodeSigner::load_or_create(&path, Network::Regtest).unwrap();
        let b = NodeSigner::load_or_create(&path, Network::Regtest).unwrap();
        assert_eq!(a.pubkey(), b.pubkey());
    }
}
