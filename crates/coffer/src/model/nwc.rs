//! Nostr Wallet Connect connections (NIP-47): a client key allowed to act
//! as one agent, with the methods it was given.

use coffer_client::Scope;

/// The NIP-47 methods coffer answers as a wallet service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NwcMethod {
    GetInfo,
    GetBalance,
    MakeInvoice,
    PayInvoice,
    LookupInvoice,
    ListTransactions,
}

impl NwcMethod {
    pub const ALL: [NwcMethod; 6] = [
        NwcMethod::GetInfo,
        NwcMethod::GetBalance,
        NwcMethod::MakeInvoice,
        NwcMethod::PayInvoice,
        NwcMethod::LookupInvoice,
        NwcMethod::ListTransactions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NwcMethod::GetInfo => "get_info",
            NwcMethod::GetBalance => "get_balance",
            NwcMethod::MakeInvoice => "make_invoice",
            NwcMethod::PayInvoice => "pay_invoice",
            NwcMethod::LookupInvoice => "lookup_invoice",
            NwcMethod::ListTransactions => "list_transactions",
        }
    }

    pub fn parse(name: &str) -> Option<NwcMethod> {
        NwcMethod::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The key scope the method needs: the same rule as HTTP's.
    pub fn scope(self) -> Scope {
        match self {
            NwcMethod::PayInvoice => Scope::Spend,
            NwcMethod::MakeInvoice => Scope::Receive,
            _ => Scope::Read,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

const _: () = assert!(NwcMethod::ALL.len() <= 16, "a method set is 16 bits");

/// A set of methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NwcMethods(u16);

impl NwcMethods {
    pub fn all() -> NwcMethods {
        NwcMethods::from_iter(NwcMethod::ALL)
    }

    pub fn contains(self, method: NwcMethod) -> bool {
        self.0 & method.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = NwcMethod> {
        NwcMethod::ALL.into_iter().filter(move |m| self.contains(*m))
    }

    /// The widest scope a method of the set needs: the scope the
    /// connection acts with.
    pub fn scope(self) -> Scope {
        self.iter().map(NwcMethod::scope).max().unwrap_or(Scope::Read)
    }

    /// The names, space-separated, as stored and as NIP-47's info event
    /// lists them.
    pub fn names(self) -> String {
        self.iter().map(NwcMethod::as_str).collect::<Vec<_>>().join(" ")
    }

    /// Space-separated names, every one known.
    pub fn parse_names(text: &str) -> Option<NwcMethods> {
        text.split_ascii_whitespace().map(NwcMethod::parse).collect::<Option<Vec<_>>>().map(NwcMethods::from_iter)
    }
}

impl FromIterator<NwcMethod> for NwcMethods {
    fn from_iter<I: IntoIterator<Item = NwcMethod>>(methods: I) -> NwcMethods {
        NwcMethods(methods.into_iter().fold(0, |set, m| set | m.bit()))
    }
}

/// A connection as stored: only what verifies a request (the client's
/// public key), never its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NwcConnectionRecord {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    /// The client's x-only public key: requests are signed by it.
    pub client_pubkey: [u8; 32],
    pub methods: NwcMethods,
    /// Whether it is sent `payment_received` and `payment_sent`.
    pub notifications: bool,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
}

impl NwcConnectionRecord {
    /// Neither revoked nor expired at `now_ms`.
    pub fn live(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_sets_keep_their_names_and_imply_the_widest_scope() {
        let set = NwcMethods::parse_names("get_balance  pay_invoice get_info").expect("known names");
        assert_eq!(set.names(), "get_info get_balance pay_invoice");
        assert_eq!(set.scope(), Scope::Spend);
        assert_eq!(NwcMethods::parse_names("make_invoice lookup_invoice").map(NwcMethods::scope), Some(Scope::Receive));
        assert_eq!(NwcMethods::parse_names("get_info").map(NwcMethods::scope), Some(Scope::Read));
        assert!(NwcMethods::parse_names("get_info pay_keysend").is_none());
        assert_eq!(NwcMethods::parse_names(&NwcMethods::all().names()), Some(NwcMethods::all()));
        assert!(NwcMethods::parse_names("").is_some_and(NwcMethods::is_empty));
    }
}
