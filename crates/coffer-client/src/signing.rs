//! Signed requests: RFC 9421 HTTP Message Signatures over the parts of a
//! request that decide what it does, with RFC 9530's `Content-Digest` for
//! the body. Both sides use this module: the client signs with
//! [`Signer`], the gateway rebuilds the same signature base with
//! [`signature_base`] and verifies it.
//!
//! What a coffer signature covers, in this order (docs/signed-requests.md):
//! `"@method"`, `"@target-uri"`, then `"content-digest"` when the request
//! has a body and `"idempotency-key"` when it has that header; its
//! parameters are `created`, `keyid`, `alg` and `nonce`. The gateway
//! accepts any order and more components, as RFC 9421 allows, but requires
//! these.
//!
//! Only the part of RFC 8941 (Structured Fields) these two headers use is
//! parsed: a dictionary whose members are inner lists of strings or byte
//! sequences, with parameters. Everything is bounded: a header longer than
//! [`HEADER_LEN_MAX_BYTES`] is refused before it is parsed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt::{self, Write as _};

/// The signature label a [`Signer`] uses. The gateway accepts any label.
pub const LABEL: &str = "coffer";
/// The longest `Signature-Input`, `Signature` or `Content-Digest` the
/// gateway reads.
pub const HEADER_LEN_MAX_BYTES: usize = 4096;
/// The most labels (signatures) one request may carry.
pub const LABELS_MAX: usize = 8;
/// The most components one signature may cover.
pub const COMPONENTS_MAX: usize = 16;
/// The longest `nonce` the gateway accepts.
pub const NONCE_LEN_MAX_BYTES: usize = 128;
/// The longest parameter string or component name.
const STRING_LEN_MAX_BYTES: usize = 512;

pub const METHOD: &str = "@method";
pub const TARGET_URI: &str = "@target-uri";
pub const CONTENT_DIGEST: &str = "content-digest";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A signature algorithm, by its name in RFC 9421's registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// Ed25519 over the signature base; 64-byte signatures.
    Ed25519,
    /// ECDSA on P-256 over SHA-256 of the base; `r ‖ s`, 64 bytes.
    EcdsaP256Sha256,
}

impl Alg {
    pub const fn as_str(self) -> &'static str {
        match self {
            Alg::Ed25519 => "ed25519",
            Alg::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ed25519" => Some(Alg::Ed25519),
            "ecdsa-p256-sha256" => Some(Alg::EcdsaP256Sha256),
            _ => None,
        }
    }

    /// The length of a raw public key of this algorithm: 32 bytes for
    /// Ed25519, 65 for an uncompressed P-256 point (`0x04 ‖ x ‖ y`).
    pub const fn public_key_len(self) -> usize {
        match self {
            Alg::Ed25519 => 32,
            Alg::EcdsaP256Sha256 => 65,
        }
    }
}

/// Why a header could not be read, or a base not built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn fail<T>(why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(why.into()))
}

/// A parameter's value (RFC 8941's bare items but decimals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bare {
    Integer(i64),
    String(String),
    Token(String),
    Boolean(bool),
    Bytes(Vec<u8>),
}

/// One signature's covered components and parameters: the value of one
/// member of `Signature-Input`, and the `@signature-params` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureParams {
    /// Component names, in order (derived ones start with `@`).
    pub covered: Vec<String>,
    /// Parameters, in order.
    pub params: Vec<(String, Bare)>,
}

impl SignatureParams {
    fn param(&self, name: &str) -> Option<&Bare> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn string(&self, name: &str) -> Option<&str> {
        match self.param(name) {
            Some(Bare::String(s)) => Some(s),
            _ => None,
        }
    }

    fn integer(&self, name: &str) -> Option<i64> {
        match self.param(name) {
            Some(Bare::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn keyid(&self) -> Option<&str> {
        self.string("keyid")
    }

    pub fn nonce(&self) -> Option<&str> {
        self.string("nonce")
    }

    pub fn alg(&self) -> Option<&str> {
        self.string("alg")
    }

    /// `created`, in seconds since the Unix epoch.
    pub fn created(&self) -> Option<i64> {
        self.integer("created")
    }

    /// `expires`, in seconds since the Unix epoch.
    pub fn expires(&self) -> Option<i64> {
        self.integer("expires")
    }

    pub fn covers(&self, component: &str) -> bool {
        self.covered.iter().any(|c| c == component)
    }

    /// The canonical serialization (RFC 8941 §4.1.1.1), which is the value
    /// of `@signature-params` in the signature base.
    pub fn serialize(&self) -> String {
        let mut out = String::from("(");
        for (i, component) in self.covered.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            write_string(&mut out, component);
        }
        out.push(')');
        for (name, value) in &self.params {
            out.push(';');
            out.push_str(name);
            match value {
                Bare::Boolean(true) => {}
                Bare::Boolean(false) => out.push_str("=?0"),
                Bare::Integer(i) => {
                    let _ = write!(out, "={i}");
                }
                Bare::String(s) => {
                    out.push('=');
                    write_string(&mut out, s);
                }
                Bare::Token(t) => {
                    out.push('=');
                    out.push_str(t);
                }
                Bare::Bytes(b) => {
                    let _ = write!(out, "=:{}:", STANDARD.encode(b));
                }
            }
        }
        out
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The request's parts a signature may cover.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// Upper case, as sent (`POST`).
    pub method: &'a str,
    /// The absolute URI the client addressed: scheme, authority, path and
    /// query (`http://127.0.0.1:8420/v1/payments`).
    pub target_uri: &'a str,
    pub content_digest: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

impl Message<'_> {
    fn component(&self, name: &str) -> Option<&str> {
        match name {
            METHOD => Some(self.method),
            TARGET_URI => Some(self.target_uri),
            CONTENT_DIGEST => self.content_digest,
            IDEMPOTENCY_KEY => self.idempotency_key,
            _ => None,
        }
    }
}

/// The signature base of RFC 9421 §2.5: one line per covered component,
/// then `@signature-params`. A component the message lacks, or one this
/// gateway does not resolve, is an error naming it.
pub fn signature_base(message: &Message<'_>, params: &SignatureParams) -> Result<String, ParseError> {
    let mut base = String::new();
    for (i, name) in params.covered.iter().enumerate() {
        if params.covered[..i].contains(name) {
            return fail(format!("component {name} is covered twice"));
        }
        let Some(value) = message.component(name) else {
            return fail(format!("component {name} is not in the request, or not one this gateway resolves"));
        };
        let value = value.trim();
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || !(b == b'\t' || (0x20..0x7f).contains(&b))) {
            return fail(format!("component {name} has characters a signature base cannot hold"));
        }
        write_string(&mut base, name);
        base.push_str(": ");
        base.push_str(value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&params.serialize());
    Ok(base)
}

/// `Content-Digest` of a body: `sha-256=:<base64>:` (RFC 9530).
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Whether a `Content-Digest` value is the body's: every `sha-256` and
/// `sha-512` member must match, and there must be at least one. Members of
/// other algorithms are ignored, as RFC 9530 says.
pub fn check_content_digest(header: &str, body: &[u8]) -> Result<(), ParseError> {
    let members = parse_dictionary(header)?;
    let mut checked = 0;
    for (name, member) in &members {
        let Member::Item(Bare::Bytes(digest)) = member else {
            return fail(format!("Content-Digest member {name} is not a byte sequence"));
        };
        let matches = match name.as_str() {
            "sha-256" => Sha256::digest(body).as_slice() == digest.as_slice(),
            "sha-512" => Sha512::digest(body).as_slice() == digest.as_slice(),
            _ => continue,
        };
        if !matches {
            return fail(format!("the body's {name} digest is not the one in Content-Digest"));
        }
        checked += 1;
    }
    if checked == 0 {
        return fail("Content-Digest has no sha-256 or sha-512 member");
    }
    Ok(())
}

/// `Signature-Input`: each label's parameters, in order.
pub fn parse_signature_input(header: &str) -> Result<Vec<(String, SignatureParams)>, ParseError> {
    parse_dictionary(header)?
        .into_iter()
        .map(|(label, member)| match member {
            Member::InnerList(items, params) => {
                let covered = items
                    .into_iter()
                    .map(|item| match item {
                        Bare::String(s) => Ok(s),
                        _ => fail(format!("signature {label}: a component name must be a string")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok((label, SignatureParams { covered, params }))
            }
            Member::Item(_) => fail(format!("signature {label}: its value must be an inner list")),
        })
        .collect()
}

/// `Signature`: each label's signature bytes.
pub fn parse_signature(header: &str) -> Result<Vec<(String, Vec<u8>)>, ParseError> {
    parse_dictionary(header)?
        .into_iter()
        .map(|(label, member)| match member {
            Member::Item(Bare::Bytes(bytes)) => Ok((label, bytes)),
            _ => fail(format!("signature {label}: its value must be a byte sequence")),
        })
        .collect()
}

enum Member {
    /// An item; its parameters are read (to be well-formed) and dropped.
    Item(Bare),
    InnerList(Vec<Bare>, Vec<(String, Bare)>),
}

/// An RFC 8941 dictionary, bounded in length and member count. A later
/// duplicate key is refused rather than overriding (a signature must mean
/// one thing).
fn parse_dictionary(input: &str) -> Result<Vec<(String, Member)>, ParseError> {
    if input.len() > HEADER_LEN_MAX_BYTES {
        return fail(format!("the header is longer than {HEADER_LEN_MAX_BYTES} bytes"));
    }
    let mut p = Parser { s: input.as_bytes(), i: 0 };
    let mut members: Vec<(String, Member)> = Vec::new();
    p.skip_spaces();
    if p.done() {
        return fail("the header is empty");
    }
    loop {
        let key = p.key()?;
        if members.iter().any(|(k, _)| *k == key) {
            return fail(format!("{key} appears twice"));
        }
        if members.len() == LABELS_MAX {
            return fail(format!("more than {LABELS_MAX} members"));
        }
        let member = if p.eat(b'=') {
            if p.peek() == Some(b'(') { p.inner_list()? } else { p.item()? }
        } else {
            p.params()?;
            Member::Item(Bare::Boolean(true))
        };
        members.push((key, member));
        p.skip_ows();
        if p.done() {
            return Ok(members);
        }
        if !p.eat(b',') {
            return fail("expected a comma between members");
        }
        p.skip_ows();
        if p.done() {
            return fail("a trailing comma");
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Result<String, ParseError> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => self.i += 1,
            _ => return fail("a key must start with a lower-case letter or *"),
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.' | b'*') {
                self.i += 1;
            } else {
                break;
            }
        }
        self.text(start)
    }

    fn text(&self, start: usize) -> Result<String, ParseError> {
        match std::str::from_utf8(&self.s[start..self.i]) {
            Ok(s) if s.len() <= STRING_LEN_MAX_BYTES => Ok(s.to_owned()),
            Ok(_) => fail(format!("a value is longer than {STRING_LEN_MAX_BYTES} bytes")),
            Err(_) => fail("not ASCII"),
        }
    }

    fn inner_list(&mut self) -> Result<Member, ParseError> {
        self.i += 1; // '('
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            if self.eat(b')') {
                return Ok(Member::InnerList(items, self.params()?));
            }
            if items.len() == COMPONENTS_MAX {
                return fail(format!("more than {COMPONENTS_MAX} components"));
            }
            // Components may carry parameters (`;sf`, `;key`); coffer
            // resolves none of them, so a parameterised component is
            // refused rather than read as the plain one.
            let item = self.bare()?;
            if self.peek() == Some(b';') {
                return fail("component parameters are not supported");
            }
            items.push(item);
            match self.peek() {
                Some(b' ' | b')') => {}
                _ => return fail("expected a space or ) in an inner list"),
            }
        }
    }

    fn item(&mut self) -> Result<Member, ParseError> {
        let bare = self.bare()?;
        self.params()?;
        Ok(Member::Item(bare))
    }

    fn params(&mut self) -> Result<Vec<(String, Bare)>, ParseError> {
        let mut params: Vec<(String, Bare)> = Vec::new();
        while self.eat(b';') {
            self.skip_spaces();
            let key = self.key()?;
            let value = if self.eat(b'=') { self.bare()? } else { Bare::Boolean(true) };
            if params.iter().any(|(k, _)| *k == key) {
                return fail(format!("parameter {key} appears twice"));
            }
            if params.len() == COMPONENTS_MAX {
                return fail(format!("more than {COMPONENTS_MAX} parameters"));
            }
            params.push((key, value));
        }
        Ok(params)
    }

    fn bare(&mut self) -> Result<Bare, ParseError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => {
                self.i += 1;
                match self.peek() {
                    Some(b'0') => {
                        self.i += 1;
                        Ok(Bare::Boolean(false))
                    }
                    Some(b'1') => {
                        self.i += 1;
                        Ok(Bare::Boolean(true))
                    }
                    _ => fail("a boolean is ?0 or ?1"),
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.integer(),
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => self.token(),
            _ => fail("expected a string, byte sequence, integer, token or boolean"),
        }
    }

    fn string(&mut self) -> Result<Bare, ParseError> {
        self.i += 1; // '"'
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else { return fail("an unterminated string") };
            self.i += 1;
            match c {
                b'"' => return Ok(Bare::String(out)),
                b'\\' => match self.peek() {
                    Some(e @ (b'"' | b'\\')) => {
                        self.i += 1;
                        out.push(char::from(e));
                    }
                    _ => return fail("a bad escape in a string"),
                },
                0x20..=0x7e => out.push(char::from(c)),
                _ => return fail("a string holds visible ASCII only"),
            }
            if out.len() > STRING_LEN_MAX_BYTES {
                return fail(format!("a string is longer than {STRING_LEN_MAX_BYTES} bytes"));
            }
        }
    }

    fn bytes(&mut self) -> Result<Bare, ParseError> {
        self.i += 1; // ':'
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b':' {
                break;
            }
            if !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')) {
                return fail("a byte sequence holds base64 only");
            }
            self.i += 1;
        }
        let encoded = &self.s[start..self.i];
        if !self.eat(b':') {
            return fail("an unterminated byte sequence");
        }
        STANDARD.decode(encoded).map(Bare::Bytes).map_err(|_| ParseError("a byte sequence is not base64".into()))
    }

    fn integer(&mut self) -> Result<Bare, ParseError> {
        let start = self.i;
        self.eat(b'-');
        let digits = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        // RFC 8941 integers have at most 15 digits; decimals are not used.
        let count = self.i - digits;
        if count == 0 || count > 15 || self.peek() == Some(b'.') {
            return fail("an integer has 1 to 15 digits");
        }
        let text = self.text(start)?;
        text.parse().map(Bare::Integer).map_err(|_| ParseError("not an integer".into()))
    }

    fn token(&mut self) -> Result<Bare, ParseError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        self.text(start).map(Bare::Token)
    }
}

/// The headers a [`Signer`] adds to a request.
#[derive(Clone, Debug)]
pub struct SignedHeaders {
    pub signature_input: String,
    pub signature: String,
    /// `Content-Digest`, for a request with a body.
    pub content_digest: Option<String>,
}

/// An Ed25519 key held by the agent, and the id the gateway gave its public
/// half. The private key never leaves this value (its `Debug` hides it).
pub struct Signer {
    key_id: String,
    /// Zeroed when dropped.
    key: ed25519_dalek::SigningKey,
    rng: ring::rand::SystemRandom,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte Ed25519 seed (the private key).
    pub fn ed25519(key_id: &str, seed: &[u8]) -> Result<Signer, ParseError> {
        let key = ed25519_dalek::SigningKey::try_from(seed)
            .map_err(|_| ParseError("an Ed25519 private key is 32 bytes".into()))?;
        Ok(Signer { key_id: key_id.to_owned(), key, rng: ring::rand::SystemRandom::new() })
    }

    /// A new random seed, for a new key.
    pub fn generate_seed() -> Result<[u8; 32], ParseError> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| ParseError("the system's random source failed".into()))?;
        Ok(seed)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte public key, as the gateway registers it.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a request made now, with a fresh random nonce.
    pub fn sign(
        &self,
        method: &str,
        target_uri: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<SignedHeaders, ParseError> {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| ParseError("the clock is before 1970".into()))?
            .as_secs();
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&self.rng, &mut nonce)
            .map_err(|_| ParseError("the system's random source failed".into()))?;
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
        let created = i64::try_from(created).map_err(|_| ParseError("the clock is out of range".into()))?;
        self.sign_at(method, target_uri, body, idempotency_key, created, &nonce)
    }

    /// Signs with a given `created` and `nonce` (for test vectors).
    pub fn sign_at(
        &self,
        method: &str,
        target_uri: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
        created: i64,
        nonce: &str,
    ) -> Result<SignedHeaders, ParseError> {
        let content_digest = (!body.is_empty()).then(|| content_digest(body));
        let mut covered = vec![METHOD.to_owned(), TARGET_URI.to_owned()];
        if content_digest.is_some() {
            covered.push(CONTENT_DIGEST.to_owned());
        }
        if idempotency_key.is_some() {
            covered.push(IDEMPOTENCY_KEY.to_owned());
        }
        let params = SignatureParams {
            covered,
            params: vec![
                ("created".into(), Bare::Integer(created)),
                ("keyid".into(), Bare::String(self.key_id.clone())),
                ("alg".into(), Bare::String(Alg::Ed25519.as_str().into())),
                ("nonce".into(), Bare::String(nonce.to_owned())),
            ],
        };
        let message = Message { method, target_uri, content_digest: content_digest.as_deref(), idempotency_key };
        let base = signature_base(&message, &params)?;
        let signature = ed25519_dalek::Signer::sign(&self.key, base.as_bytes()).to_bytes();
        Ok(SignedHeaders {
            signature_input: format!("{LABEL}={}", params.serialize()),
            signature: format!("{LABEL}=:{}:", STANDARD.encode(signature)),
            content_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_INPUT: &str = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;

    #[test]
    fn parses_and_reserializes_rfc_9421_example() {
        let parsed = parse_signature_input(RFC_INPUT).unwrap();
        assert_eq!(parsed.len(), 1);
        let (label, params) = &parsed[0];
        assert_eq!(label, "sig-b26");
        assert_eq!(params.covered.len(), 6);
        assert_eq!(params.created(), Some(1_618_884_473));
        assert_eq!(params.keyid(), Some("test-key-ed25519"));
        assert_eq!(format!("{label}={}", params.serialize()), RFC_INPUT);
    }

    #[test]
    fn signs_what_it_verifies() {
        let signer = Signer::ed25519("sk_test", &[7u8; 32]).unwrap();
        let body = br#"{"bolt11":"lnbcrt1"}"#;
        let h =
            signer.sign_at("POST", "http://127.0.0.1:8420/v1/payments", body, Some("k1"), 1_700_000_000, "n1").unwrap();
        let (_, params) = parse_signature_input(&h.signature_input).unwrap().remove(0);
        let (_, signature) = parse_signature(&h.signature).unwrap().remove(0);
        let digest = h.content_digest.unwrap();
        check_content_digest(&digest, body).unwrap();
        let message = Message {
            method: "POST",
            target_uri: "http://127.0.0.1:8420/v1/payments",
            content_digest: Some(&digest),
            idempotency_key: Some("k1"),
        };
        let base = signature_base(&message, &params).unwrap();
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, signer.public_key().to_vec());
        key.verify(base.as_bytes(), &signature).unwrap();
        let changed = Message { idempotency_key: Some("k2"), ..message };
        let base = signature_base(&changed, &params).unwrap();
        assert!(key.verify(base.as_bytes(), &signature).is_err());
    }

    /// docs/vectors/signed-requests.json, made independently (Python's
    /// `cryptography`): the signer reproduces it byte for byte.
    #[test]
    fn matches_the_documented_vector() {
        let text = include_str!("../../../docs/vectors/signed-requests.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        let seed: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&s("private_key_seed_hex")[2 * i..2 * i + 2], 16).unwrap()).collect();
        let signer = Signer::ed25519(&s("keyid"), &seed).unwrap();
        assert_eq!(STANDARD.encode(signer.public_key()), s("public_key_base64"));
        let h = signer
            .sign_at(
                "POST",
                &s("target_uri"),
                s("body").as_bytes(),
                Some(&s("idempotency_key")),
                v["created"].as_i64().unwrap(),
                &s("nonce"),
            )
            .unwrap();
        assert_eq!(h.content_digest.unwrap(), s("content_digest"));
        assert_eq!(h.signature_input, s("signature_input"));
        assert_eq!(h.signature, s("signature"));
        let (_, params) = parse_signature_input(&h.signature_input).unwrap().remove(0);
        let message = Message {
            method: "POST",
            target_uri: &s("target_uri"),
            content_digest: Some(&s("content_digest")),
            idempotency_key: Some(&s("idempotency_key")),
        };
        assert_eq!(signature_base(&message, &params).unwrap(), s("signature_base"));
    }

    #[test]
    fn content_digest_mismatch_is_refused() {
        let digest = content_digest(b"one");
        assert!(check_content_digest(&digest, b"two").is_err());
        assert!(check_content_digest("md5=:AAAA:", b"one").is_err());
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        for input in ["", "a=(", "a=(\"x\"", "A=1", "a=:!!:", "a=1,", "a=1, a=2", "a=(\"x\";p)", "a=\"\\q\""] {
            assert!(parse_signature_input(input).is_err(), "{input}");
        }
        let long = format!("a=\"{}\"", "x".repeat(HEADER_LEN_MAX_BYTES));
        assert!(parse_signature(&long).is_err());
    }
}
