//! The policy document (the agent's constitution) and its validation.

use super::breaker::BreakerRules;
use super::fiat::FiatAmount;
use super::json_path;
use super::window::{Window, WindowKind};
use crate::amount::Msat;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// At most this many budget windows per policy: evaluation cost and the
/// size of the persisted usage grow with it.
pub const BUDGETS_MAX: usize = 16;
/// At most this many payee entries (allow and deny together).
pub const PAYEE_ENTRIES_MAX: usize = 1_000;
/// The highest `max_payments_per_minute`: 1,000 a second.
pub const PAYMENTS_PER_MINUTE_MAX: u32 = 60_000;
const _: () =
    assert!(PAYMENTS_PER_MINUTE_MAX as i64 == 1_000 * (super::window::MS_PER_MINUTE / super::window::MS_PER_SECOND));
/// Agent ids and domains are names, not documents.
const AGENT_ID_LEN_MAX_BYTES: usize = 128;
const DOMAIN_LEN_MAX_BYTES: usize = 253;
// The longest DNS name (RFC 1035: 255 octets on the wire, 253 written out).
const _: () = assert!(DOMAIN_LEN_MAX_BYTES == 253);

/// What an agent may spend. Every field is optional; the default policy has
/// no limits at all. Parse untrusted text with [`Policy::from_json`], which
/// also validates; a policy built in code should pass [`Policy::validate`]
/// before it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Policy {
    /// The most one payment may cost, fee limit included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payment_msat: Option<Msat>,
    /// `max_payment_msat` stated in a currency instead (converted at the
    /// current rate, rounded down, when a payment is decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payment: Option<FiatAmount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// The most the agent may ever spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_msat: Option<Msat>,
    /// `lifetime_msat` stated in a currency instead. What is spent is still
    /// counted in msat: the limit moves with the rate, the spend does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<FiatAmount>,
    /// Payments allowed or held in any 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payments_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "PayeeRules::is_default")]
    pub payees: PayeeRules,
    /// Payments whose amount is above this wait for a person's approval.
    /// Zero is allowed and means "approve every payment".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_above_msat: Option<Msat>,
    /// From this instant on, every payment is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When to freeze the agent automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerRules>,
    /// Limits on paying for HTTP APIs (L402): what a payment whose payee
    /// has a domain may cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l402: Option<L402Rules>,
}

/// At most this many domains with their own budgets: each has its usage
/// persisted with the agent's.
pub const L402_DOMAINS_MAX: usize = 64;

/// Limits on paid HTTP requests (L402). A paid request's payee is its
/// domain (`domain:HOST` entries of `payees` apply to it too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct L402Rules {
    /// The most one request's price may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_msat: Option<Msat>,
    /// Budgets per domain (host name, lower case), counted on top of the
    /// agent's own budgets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub domains: std::collections::BTreeMap<String, Vec<Budget>>,
}

impl L402Rules {
    /// The budgets of one domain, matched without regard to case.
    pub fn domain_budgets(&self, domain: &str) -> &[Budget] {
        self.domains.iter().find(|(name, _)| name.eq_ignore_ascii_case(domain)).map_or(&[], |(_, b)| b.as_slice())
    }

    fn validate(&self) -> Result<(), PolicyError> {
        if let Some(max) = self.max_price_msat {
            check_amount("l402.max_price_msat", max)?;
        }
        if self.domains.len() > L402_DOMAINS_MAX {
            return Err(PolicyError::new(
                "l402.domains",
                format!("at most {L402_DOMAINS_MAX} domains may have budgets"),
            ));
        }
        let mut seen = HashSet::with_capacity(self.domains.len());
        for (name, budgets) in &self.domains {
            let field = format!("l402.domains.{name}");
            check_domain(name).map_err(|message| PolicyError::new(field.clone(), message))?;
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(PolicyError::new(field, format!("domain {name} is listed twice")));
            }
            validate_budget_list(&field, budgets)?;
        }
        Ok(())
    }
}

/// A spending limit over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Budget {
    /// Absent (zero) when `limit` states the limit in a currency instead.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit_msat: Msat,
    /// The limit in a currency, converted at the current rate (rounded
    /// down) when a payment is decided; exactly one of the two is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<FiatAmount>,
    pub window: Window,
    /// Must match the window's form. It is redundant on purpose: "1d" and
    /// "day" behave very differently, and stating the kind makes the author
    /// say which one they meant.
    pub kind: WindowKind,
}

/// Who the agent may pay. The deny list wins over the allow list, which wins
/// over the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PayeeRules {
    #[serde(default)]
    pub default: PayeeDefault,
    #[serde(default)]
    pub allow: Vec<PayeeEntry>,
    #[serde(default)]
    pub deny: Vec<PayeeEntry>,
}

impl PayeeRules {
    fn is_default(&self) -> bool {
        *self == PayeeRules::default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum PayeeDefault {
    #[default]
    Allow,
    Deny,
}

/// One payee: "agent:ID", "node:PUBKEY_HEX" (33-byte compressed key) or
/// "domain:example.com". Node keys and domains are stored in lowercase, so
/// that matching and duplicate detection do not depend on spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayeeEntry {
    Agent(String),
    Node(String),
    Domain(String),
}

impl PayeeEntry {
    /// Parses and normalises an entry. The error is a sentence for the operator.
    pub fn parse(text: &str) -> Result<PayeeEntry, String> {
        let entry = match text.split_once(':') {
            Some(("agent", id)) => PayeeEntry::Agent(id.to_owned()),
            Some(("node", key)) => PayeeEntry::Node(key.to_ascii_lowercase()),
            Some(("domain", name)) => PayeeEntry::Domain(name.to_ascii_lowercase()),
            _ => {
                return Err(format!(
                    "invalid payee {text:?}: expected \"agent:ID\", \"node:PUBKEY_HEX\" or \"domain:NAME\""
                ));
            }
        };
        entry.check()?;
        Ok(entry)
    }

    /// Checks the syntax of an entry, including one built in code.
    pub fn check(&self) -> Result<(), String> {
        match self {
            PayeeEntry::Agent(id) => check_agent_id(id),
            PayeeEntry::Node(key) => check_node_key(key),
            PayeeEntry::Domain(name) => check_domain(name),
        }
    }

    /// Whether this entry names the payee. Node keys and domains compare
    /// without regard to case, so an entry built in code in uppercase still
    /// matches.
    pub fn matches(&self, payee: &Payee) -> bool {
        match self {
            PayeeEntry::Agent(id) => payee.agent_id.as_deref() == Some(id.as_str()),
            PayeeEntry::Node(key) => payee.node_pubkey_hex.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)),
            PayeeEntry::Domain(name) => payee.domain.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(name)),
        }
    }

    /// The entry with case normalised, for duplicate detection.
    fn normalized(&self) -> PayeeEntry {
        match self {
            PayeeEntry::Agent(id) => PayeeEntry::Agent(id.clone()),
            PayeeEntry::Node(key) => PayeeEntry::Node(key.to_ascii_lowercase()),
            PayeeEntry::Domain(name) => PayeeEntry::Domain(name.to_ascii_lowercase()),
        }
    }
}

fn check_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > AGENT_ID_LEN_MAX_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid agent id {id:?}: expected 1 to {AGENT_ID_LEN_MAX_BYTES} printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

fn check_node_key(key: &str) -> Result<(), String> {
    let hex_ok = key.len() == 66 && key.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok || !(key.starts_with("02") || key.starts_with("03")) {
        return Err(format!(
            "invalid node public key {key:?}: expected 66 hex digits of a compressed key (starting 02 or 03)"
        ));
    }
    Ok(())
}

fn check_domain(name: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.is_empty() || name.len() > DOMAIN_LEN_MAX_BYTES || !name.split('.').all(label_ok) {
        return Err(format!("invalid domain {name:?}: expected a host name such as \"api.example.com\""));
    }
    Ok(())
}

impl fmt::Display for PayeeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayeeEntry::Agent(id) => write!(f, "agent:{id}"),
            PayeeEntry::Node(key) => write!(f, "node:{key}"),
            PayeeEntry::Domain(name) => write!(f, "domain:{name}"),
        }
    }
}

impl std::str::FromStr for PayeeEntry {
    type Err = String;
    fn from_str(text: &str) -> Result<PayeeEntry, String> {
        PayeeEntry::parse(text)
    }
}

impl Serialize for PayeeEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PayeeEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PayeeEntry, D::Error> {
        super::serde_text::deserialize(deserializer, "a payee such as \"agent:ID\"", PayeeEntry::parse)
    }
}

/// Who a payment goes to, as far as the gateway knows. Any identity may be
/// unknown: an external invoice has a node key but no agent id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Payee {
    pub agent_id: Option<String>,
    pub node_pubkey_hex: Option<String>,
    pub domain: Option<String>,
}

impl Payee {
    /// One stable name for the payee, for per-payee counting: the node key
    /// (where the money actually goes) when known, else the agent, else the
    /// domain.
    pub fn key(&self) -> String {
        if let Some(key) = &self.node_pubkey_hex {
            return format!("node:{}", key.to_ascii_lowercase());
        }
        if let Some(id) = &self.agent_id {
            return format!("agent:{id}");
        }
        match &self.domain {
            Some(name) => format!("domain:{}", name.to_ascii_lowercase()),
            None => "unknown".to_owned(),
        }
    }
}

/// Why a policy was rejected: `field` is a JSON path such as
/// `budgets[1].window` (empty for the document as a whole).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Parses and validates a policy document. Serde's errors (negative
    /// numbers, unknown fields, bad windows or payees) come back with the
    /// JSON path of the offending field.
    pub fn from_json(json: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = serde_json::from_str(json)
            .map_err(|e| PolicyError::new(json_path::error_path(json, &e), json_path::error_message(&e)))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what the types cannot: amount ranges, limits on sizes, and
    /// contradictions. Returns the first problem found.
    pub fn validate(&self) -> Result<(), PolicyError> {
        check_optional_limit("max_payment", self.max_payment_msat, self.max_payment)?;
        self.validate_budgets()?;
        check_optional_limit("lifetime", self.lifetime_msat, self.lifetime)?;
        if let Some(rate) = self.max_payments_per_minute {
            check_rate(rate)?;
        }
        self.payees.validate()?;
        if let Some(threshold) = self.approval_above_msat {
            // Zero is meaningful here ("approve everything"), so only the top.
            if threshold > Msat::MONEY_MAX {
                return Err(PolicyError::new("approval_above_msat", "amount exceeds 21 million bitcoin"));
            }
        }
        if let Some(breaker) = &self.breaker {
            breaker.validate("breaker")?;
        }
        if let Some(l402) = &self.l402 {
            l402.validate()?;
        }
        Ok(())
    }

    fn validate_budgets(&self) -> Result<(), PolicyError> {
        validate_budget_list("budgets", &self.budgets)
    }

    /// Whether any limit is stated in a currency: such a policy needs a
    /// rate before a payment can be decided (see [`super::fiat::resolve`]).
    pub fn has_fiat_limits(&self) -> bool {
        let in_currency = |budgets: &[Budget]| budgets.iter().any(|b| b.limit.is_some());
        self.max_payment.is_some()
            || self.lifetime.is_some()
            || in_currency(&self.budgets)
            || self.l402.as_ref().is_some_and(|l| l.domains.values().any(|b| in_currency(b)))
    }

    /// The currencies the policy states limits in, each once.
    pub fn fiat_currencies(&self) -> Vec<super::fiat::Currency> {
        let budgets = self.budgets.iter().chain(self.l402.iter().flat_map(|l| l.domains.values().flatten()));
        let mut all: Vec<_> = self
            .max_payment
            .iter()
            .chain(self.lifetime.iter())
            .chain(budgets.filter_map(|b| b.limit.as_ref()))
            .map(|a| a.currency)
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

fn is_zero(amount: &Msat) -> bool {
    amount.is_zero()
}

/// A limit that may be stated in msat (`NAME_msat`) or in a currency
/// (`NAME`), not both.
fn check_optional_limit(name: &str, msat: Option<Msat>, fiat: Option<FiatAmount>) -> Result<(), PolicyError> {
    match (msat, fiat) {
        (Some(_), Some(_)) => Err(both(name)),
        (Some(amount), None) => check_amount(&format!("{name}_msat"), amount),
        (None, _) => Ok(()),
    }
}

fn both(name: &str) -> PolicyError {
    PolicyError::new(name, format!("state the limit either in msat ({name}_msat) or in a currency ({name}), not both"))
}

/// Checks a list of budgets; `field` is its JSON path.
fn validate_budget_list(field: &str, budgets: &[Budget]) -> Result<(), PolicyError> {
    if budgets.len() > BUDGETS_MAX {
        return Err(PolicyError::new(field, format!("at most {BUDGETS_MAX} budgets are allowed")));
    }
    let mut seen: HashMap<Window, usize> = HashMap::new();
    for (i, budget) in budgets.iter().enumerate() {
        match budget.limit {
            None => check_amount(&format!("{field}[{i}].limit_msat"), budget.limit_msat)?,
            Some(_) if !budget.limit_msat.is_zero() => return Err(both(&format!("{field}[{i}].limit"))),
            Some(_) => {}
        }
        if budget.kind != budget.window.kind() {
            return Err(PolicyError::new(
                format!("{field}[{i}].kind"),
                format!(
                    "kind is {:?} but window {:?} is a {} window",
                    budget.kind.as_str(),
                    budget.window.to_string(),
                    budget.window.kind()
                ),
            ));
        }
        if let Some(first) = seen.insert(budget.window, i) {
            return Err(PolicyError::new(
                format!("{field}[{i}].window"),
                format!("window {} is already limited by {field}[{first}]", budget.window),
            ));
        }
    }
    Ok(())
}

impl PayeeRules {
    fn validate(&self) -> Result<(), PolicyError> {
        if self.allow.len().saturating_add(self.deny.len()) > PAYEE_ENTRIES_MAX {
            return Err(PolicyError::new(
                "payees",
                format!("at most {PAYEE_ENTRIES_MAX} allow and deny entries are allowed in total"),
            ));
        }
        let allowed = check_entries("payees.allow", &self.allow)?;
        check_entries("payees.deny", &self.deny)?;
        for (i, entry) in self.deny.iter().enumerate() {
            if allowed.contains(&entry.normalized()) {
                return Err(PolicyError::new(
                    format!("payees.deny[{i}]"),
                    format!("{entry} is both allowed and denied"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks each entry and rejects duplicates; returns the normalised set.
fn check_entries(field: &str, entries: &[PayeeEntry]) -> Result<HashSet<PayeeEntry>, PolicyError> {
    let mut seen = HashSet::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        entry.check().map_err(|message| PolicyError::new(format!("{field}[{i}]"), message))?;
        if !seen.insert(entry.normalized()) {
            return Err(PolicyError::new(format!("{field}[{i}]"), format!("{entry} is listed twice")));
        }
    }
    Ok(seen)
}

/// A limit: more than zero (zero would be a freeze; freezing is its own
/// operation) and at most 21 million bitcoin.
pub(crate) fn check_amount(field: &str, amount: Msat) -> Result<(), PolicyError> {
    Msat::parse_positive(amount.as_u64()).map(|_| ()).map_err(|e| PolicyError::new(field, e.to_string()))
}

fn check_rate(rate: u32) -> Result<(), PolicyError> {
    if rate == 0 || rate > PAYMENTS_PER_MINUTE_MAX {
        return Err(PolicyError::new(
            "max_payments_per_minute",
            format!("must be between 1 and {PAYMENTS_PER_MINUTE_MAX}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::MONEY_MAX_MSAT;

    const NODE: &str = "02aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899";

    fn err(json: &str) -> PolicyError {
        match Policy::from_json(json) {
            Ok(policy) => panic!("accepted {json}: {policy:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn example_policy_parses_and_round_trips() {
        let json = format!(
            r#"{{"max_payment_msat": 50000,
                "budgets": [{{"limit_msat": 1000000, "window": "1h", "kind": "rolling"}},
                            {{"limit_msat": 20000000, "window": "day", "kind": "calendar"}}],
                "lifetime_msat": 100000000,
                "max_payments_per_minute": 60,
                "payees": {{"default": "allow", "allow": [], "deny": ["agent:AGENT_ID", "node:{NODE}", "domain:Example.com"]}},
                "approval_above_msat": 200000,
                "expires_at": "2027-01-01T00:00:00Z",
                "breaker": {{"max_denials": 5}}}}"#
        );
        let policy = Policy::from_json(&json).unwrap();
        assert_eq!(policy.max_payment_msat, Some(Msat::new(50_000)));
        assert_eq!(policy.budgets[1].window, Window::parse("day").unwrap());
        assert_eq!(policy.payees.deny[2], PayeeEntry::Domain("example.com".into()));
        assert_eq!(policy.expires_at.map(|t| t.timestamp()), Some(1_798_761_600));
        let breaker = policy.breaker.clone().unwrap();
        assert_eq!(breaker.window, Window::parse("1m").unwrap(), "breaker window defaults to one minute");
        let again = Policy::from_json(&serde_json::to_string(&policy).unwrap()).unwrap();
        assert_eq!(again, policy);
    }

    #[test]
    fn limits_in_a_currency_parse_validate_and_round_trip() {
        let json = r#"{"max_payment": {"amount": "0.50", "currency": "USD"},
            "budgets": [{"limit": {"amount": "5.00", "currency": "USD"}, "window": "1h", "kind": "rolling"},
                        {"limit_msat": 9, "window": "day", "kind": "calendar"}],
            "lifetime": {"amount": "100", "currency": "EUR"}}"#;
        let policy = Policy::from_json(json).unwrap();
        assert!(policy.has_fiat_limits());
        assert_eq!(policy.budgets[0].limit.map(|l| l.to_string()), Some("5.00 USD".to_owned()));
        let names: Vec<String> = policy.fiat_currencies().iter().map(|c| c.to_string()).collect();
        assert_eq!(names, ["EUR", "USD"]);
        let text = serde_json::to_string(&policy).unwrap();
        assert!(
            text.contains(r#"{"limit":{"amount":"5.00","currency":"USD"},"window":"1h","kind":"rolling"}"#),
            "{text}"
        );
        assert_eq!(Policy::from_json(&text).unwrap(), policy);
        assert!(!Policy::from_json(r#"{"max_payment_msat": 5}"#).unwrap().has_fiat_limits());
    }

    #[test]
    fn limits_in_a_currency_name_the_field_of_each_mistake() {
        let both = err(r#"{"budgets": [{"limit_msat": 5, "limit": {"amount": "1", "currency": "USD"},
                                          "window": "1h", "kind": "rolling"}]}"#);
        assert_eq!(both.field, "budgets[0].limit");
        assert!(both.message.contains("not both"), "{both}");
        let e = err(r#"{"max_payment_msat": 5, "max_payment": {"amount": "1", "currency": "USD"}}"#);
        assert_eq!(e.field, "max_payment");
        let e = err(r#"{"lifetime_msat": 5, "lifetime": {"amount": "1", "currency": "USD"}}"#);
        assert_eq!(e.field, "lifetime");
        let neither = err(r#"{"budgets": [{"window": "1h", "kind": "rolling"}]}"#);
        assert_eq!(neither.field, "budgets[0].limit_msat");
        let e = err(
            r#"{"budgets": [{"limit": {"amount": "5.001234567", "currency": "USD"}, "window": "1h", "kind": "rolling"}]}"#,
        );
        assert_eq!(e.field, "budgets[0].limit.amount");
        assert!(e.message.contains("8 digits"), "{e}");
        let e = err(r#"{"max_payment": {"amount": "0", "currency": "USD"}}"#);
        assert_eq!(e.field, "max_payment.amount");
        let e = err(r#"{"max_payment": {"amount": 5, "currency": "USD"}}"#);
        assert_eq!(e.field, "max_payment.amount");
        let e = err(r#"{"lifetime": {"amount": "5", "currency": "usd"}}"#);
        assert_eq!(e.field, "lifetime.currency");
        let e = err(r#"{"lifetime": {"amount": "5"}}"#);
        assert_eq!(e.field, "lifetime.currency");
        let e = err(r#"{"lifetime": {"amount": "5", "currency": "USD", "rate": 1}}"#);
        assert_eq!(e.field, "lifetime.rate");
    }

    #[test]
    fn empty_document_is_the_unlimited_default() {
        assert_eq!(Policy::from_json("{}").unwrap(), Policy::default());
        assert_eq!(serde_json::to_string(&Policy::default()).unwrap(), "{}");
    }

    #[test]
    fn negative_amount_names_the_field() {
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "1h", "kind": "rolling"},
                                      {"limit_msat": -5, "window": "day", "kind": "calendar"}]}"#);
        assert_eq!(e.field, "budgets[1].limit_msat");
        assert!(e.message.contains("-5"), "{e}");
        assert_eq!(err(r#"{"max_payment_msat": -1}"#).field, "max_payment_msat");
    }

    #[test]
    fn unknown_field_names_the_field() {
        let e = err(r#"{"max_payment_msat": 5, "max_paymnet_msat": 6}"#);
        assert_eq!(e.field, "max_paymnet_msat");
        assert!(e.message.contains("unknown field"), "{e}");
        let e = err(r#"{"payees": {"default": "deny", "alow": []}}"#);
        assert_eq!(e.field, "payees.alow");
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "1h", "kind": "rolling", "x": 1}]}"#);
        assert_eq!(e.field, "budgets[0].x");
    }

    #[test]
    fn missing_field_names_the_field() {
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "1h"}]}"#);
        assert_eq!(e.field, "budgets[0].kind");
        assert!(e.message.contains("missing field"), "{e}");
    }

    #[test]
    fn bad_window_strings_name_the_field() {
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "1h", "kind": "rolling"},
                                      {"limit_msat": 5, "window": "2 hours", "kind": "rolling"}]}"#);
        assert_eq!(e.field, "budgets[1].window");
        assert!(e.message.contains("invalid window"), "{e}");
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "0s", "kind": "rolling"}]}"#);
        assert_eq!(e.field, "budgets[0].window");
        assert!(e.message.contains("longer than zero"), "{e}");
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "400d", "kind": "rolling"}]}"#);
        assert!(e.message.contains("366 days"), "{e}");
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "1h", "kind": "sliding"}]}"#);
        assert_eq!(e.field, "budgets[0].kind");
    }

    #[test]
    fn kind_must_match_window() {
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "day", "kind": "rolling"}]}"#);
        assert_eq!(e.field, "budgets[0].kind");
        assert!(e.message.contains("calendar window"), "{e}");
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "24h", "kind": "calendar"}]}"#);
        assert_eq!(e.field, "budgets[0].kind");
    }

    #[test]
    fn zero_and_oversized_amounts_are_rejected() {
        assert_eq!(err(r#"{"max_payment_msat": 0}"#).field, "max_payment_msat");
        assert_eq!(err(r#"{"lifetime_msat": 0}"#).field, "lifetime_msat");
        let e = err(r#"{"budgets": [{"limit_msat": 0, "window": "1h", "kind": "rolling"}]}"#);
        assert_eq!(e.field, "budgets[0].limit_msat");
        let too_much = MONEY_MAX_MSAT + 1;
        let e = err(&format!(r#"{{"lifetime_msat": {too_much}}}"#));
        assert!(e.message.contains("21 million"), "{e}");
        assert_eq!(err(&format!(r#"{{"approval_above_msat": {too_much}}}"#)).field, "approval_above_msat");
        assert!(Policy::from_json(r#"{"approval_above_msat": 0}"#).is_ok(), "zero means approve everything");
        assert_eq!(err(r#"{"max_payment_msat": 18446744073709551616}"#).field, "max_payment_msat");
    }

    #[test]
    fn rate_limit_bounds() {
        assert_eq!(err(r#"{"max_payments_per_minute": 0}"#).field, "max_payments_per_minute");
        assert_eq!(err(r#"{"max_payments_per_minute": 60001}"#).field, "max_payments_per_minute");
        assert_eq!(err(r#"{"max_payments_per_minute": -1}"#).field, "max_payments_per_minute");
    }

    #[test]
    fn duplicate_windows_are_a_contradiction() {
        let e = err(r#"{"budgets": [{"limit_msat": 5, "window": "1h", "kind": "rolling"},
                                      {"limit_msat": 9, "window": "60m", "kind": "rolling"}]}"#);
        assert_eq!(e.field, "budgets[1].window");
        assert!(e.message.contains("budgets[0]"), "{e}");
        let ok = r#"{"budgets": [{"limit_msat": 5, "window": "1d", "kind": "rolling"},
                                   {"limit_msat": 9, "window": "day", "kind": "calendar"}]}"#;
        assert!(Policy::from_json(ok).is_ok(), "a rolling day and a calendar day are different windows");
    }

    #[test]
    fn too_many_budgets() {
        let budgets: Vec<String> =
            (1..=17).map(|h| format!(r#"{{"limit_msat": 5, "window": "{h}h", "kind": "rolling"}}"#)).collect();
        let e = err(&format!(r#"{{"budgets": [{}]}}"#, budgets.join(",")));
        assert_eq!(e.field, "budgets");
        let sixteen = budgets[..16].join(",");
        assert!(Policy::from_json(&format!(r#"{{"budgets": [{sixteen}]}}"#)).is_ok());
    }

    #[test]
    fn allow_and_deny_of_one_payee_is_a_contradiction() {
        let upper = NODE.to_ascii_uppercase();
        let json = format!(r#"{{"payees": {{"allow": ["node:{NODE}"], "deny": ["agent:a", "node:{upper}"]}}}}"#);
        let e = err(&json);
        assert_eq!(e.field, "payees.deny[1]");
        assert!(e.message.contains("both allowed and denied"), "{e}");
    }

    #[test]
    fn malformed_and_duplicate_payees() {
        for bad in
            ["agent:", "agent:has space", "node:02ab", "node:04aabb", "domain:-x.com", "domain:a..b", "bob", "url:x"]
        {
            let e = err(&format!(r#"{{"payees": {{"deny": ["agent:ok", "{bad}"]}}}}"#));
            assert_eq!(e.field, "payees.deny[1]", "{bad}: {e}");
        }
        let e = err(r#"{"payees": {"allow": ["domain:a.com", "domain:A.com"]}}"#);
        assert_eq!(e.field, "payees.allow[1]");
        assert!(e.message.contains("twice"), "{e}");
        let e = err(r#"{"payees": {"default": "maybe"}}"#);
        assert_eq!(e.field, "payees.default");
    }

    #[test]
    fn too_many_payees() {
        let entries: Vec<String> = (0..1_001).map(|i| format!("\"agent:a{i}\"")).collect();
        let e = err(&format!(r#"{{"payees": {{"deny": [{}]}}}}"#, entries.join(",")));
        assert_eq!(e.field, "payees");
        let thousand = entries[..1_000].join(",");
        assert!(Policy::from_json(&format!(r#"{{"payees": {{"deny": [{thousand}]}}}}"#)).is_ok());
    }

    #[test]
    fn bad_expiry_names_the_field() {
        let e = err(r#"{"max_payment_msat": 5, "expires_at": "next tuesday"}"#);
        assert_eq!(e.field, "expires_at");
    }

    #[test]
    fn validate_checks_entries_built_in_code() {
        let mut policy = Policy::default();
        policy.payees.allow.push(PayeeEntry::Node("zz".into()));
        assert_eq!(policy.validate().unwrap_err().field, "payees.allow[0]");
    }

    #[test]
    fn payee_matching_ignores_case_of_keys_and_domains() {
        let node = PayeeEntry::parse(&format!("node:{}", NODE.to_ascii_uppercase())).unwrap();
        let payee = Payee { node_pubkey_hex: Some(NODE.into()), ..Payee::default() };
        assert!(node.matches(&payee));
        assert!(!PayeeEntry::parse("agent:x").unwrap().matches(&payee));
        let domain = Payee { domain: Some("API.Example.com".into()), ..Payee::default() };
        assert!(PayeeEntry::parse("domain:api.example.com").unwrap().matches(&domain));
        assert_eq!(payee.key(), format!("node:{NODE}"));
        assert_eq!(Payee::default().key(), "unknown");
    }
}
