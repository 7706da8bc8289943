//! A room's payment request as its card shows it: where it stands, and
//! what the member reading it may do. Pure: from the invoice's status, the
//! hold or escrow its payment waits (or waited) in, and who reads.
//!
//! A request that asks for escrow keeps its terms on its invoice (what the
//! Pay action pays with); its message's text states them for people, on a
//! line after the memo ([`request_text`]).

use crate::model::{EscrowKind, EscrowStatus};
use coffer_client::{EscrowTerms, InvoiceStatus, Outcome};

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardState {
    Open,
    Expired,
    /// A hold invoice paid: the payee settles or cancels it.
    Accepted,
    /// Paid into escrow: the payer releases or disputes it.
    Held,
    /// An escrow disputed: the operator resolves it.
    Disputed,
    Paid,
    /// An escrow released to the payee.
    Released,
    /// A hold cancelled: the payer was refunded in full.
    Cancelled,
    /// An escrow given back to the payer.
    Refunded,
}

const STATES: [CardState; 9] = [
    CardState::Open,
    CardState::Expired,
    CardState::Accepted,
    CardState::Held,
    CardState::Disputed,
    CardState::Paid,
    CardState::Released,
    CardState::Cancelled,
    CardState::Refunded,
];

impl CardState {
    pub fn as_str(self) -> &'static str {
        match self {
            CardState::Open => "open",
            CardState::Expired => "expired",
            CardState::Accepted => "accepted",
            CardState::Held => "held",
            CardState::Disputed => "disputed",
            CardState::Paid => "paid",
            CardState::Released => "released",
            CardState::Cancelled => "cancelled",
            CardState::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<CardState> {
        STATES.into_iter().find(|state| state.as_str() == s)
    }

    /// The kind of the room event that announces a request reaching this
    /// state: `invoice.accepted`, `invoice.disputed`, `invoice.paid` or
    /// `invoice.cancelled` (the card's `state` tells held from accepted,
    /// released from paid, refunded from cancelled).
    pub fn room_event(self) -> Option<&'static str> {
        match self {
            CardState::Open | CardState::Expired => None,
            CardState::Accepted | CardState::Held => Some("invoice.accepted"),
            CardState::Disputed => Some("invoice.disputed"),
            CardState::Paid | CardState::Released => Some("invoice.paid"),
            CardState::Cancelled | CardState::Refunded => Some("invoice.cancelled"),
        }
    }
}

/// The state of a request from its invoice's status and the kind and status
/// of the hold or escrow its payment waits (or waited) in, if any.
pub fn state(status: InvoiceStatus, waiting: Option<(EscrowKind, EscrowStatus)>) -> CardState {
    let escrow = waiting.filter(|(kind, _)| *kind == EscrowKind::Escrow).map(|(_, status)| status);
    match (status, escrow) {
        (InvoiceStatus::Open, _) => CardState::Open,
        (InvoiceStatus::Expired, _) => CardState::Expired,
        (InvoiceStatus::Accepted, Some(EscrowStatus::Disputed)) => CardState::Disputed,
        (InvoiceStatus::Accepted, Some(_)) => CardState::Held,
        (InvoiceStatus::Accepted, None) => CardState::Accepted,
        (InvoiceStatus::Paid, Some(_)) => CardState::Released,
        (InvoiceStatus::Paid, None) => CardState::Paid,
        (InvoiceStatus::Cancelled, Some(_)) => CardState::Refunded,
        (InvoiceStatus::Cancelled, None) => CardState::Cancelled,
    }
}

/// Who reads a card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer<'a> {
    Operator,
    Agent(&'a str),
}

/// What `viewer` may do with a request in `state`, posted by `payee` and
/// paid by `payer`; each is a route the viewer's key may call:
/// - `pay`: a member other than the payee, while it is open
///   (`POST /v1/rooms/{room}/messages/{id}/pay`);
/// - `settle`, `cancel`: the payee of an accepted hold
///   (`POST /v1/invoices/{payment_hash}/settle|cancel`);
/// - `release`, `dispute`: the payer of a held escrow
///   (`POST /v1/payments/{payment_id}/release|dispute`);
/// - `cancel`: the payee of a held or disputed escrow, giving it back;
/// - `resolve`: the operator, for a disputed escrow
///   (`POST /v1/payments/{payment_id}/resolve`).
pub fn actions(state: CardState, viewer: Viewer<'_>, payee: &str, payer: Option<&str>) -> Vec<&'static str> {
    let (is_payee, is_payer) = match viewer {
        Viewer::Operator => (false, false),
        Viewer::Agent(me) => (me == payee, payer == Some(me)),
    };
    let mut actions = Vec::new();
    match state {
        CardState::Open if matches!(viewer, Viewer::Agent(_)) && !is_payee => actions.push("pay"),
        CardState::Accepted if is_payee => actions.extend(["settle", "cancel"]),
        CardState::Held => {
            if is_payer {
                actions.extend(["release", "dispute"]);
            }
            if is_payee {
                actions.push("cancel");
            }
        }
        CardState::Disputed if viewer == Viewer::Operator => actions.push("resolve"),
        CardState::Disputed if is_payee => actions.push("cancel"),
        _ => {}
    }
    actions
}

/// Where the signed receipt of a request's payment is: once it is paid
/// (or its escrow released), for the payment `payment_id`.
pub fn receipt_url(state: CardState, payment_id: &str) -> Option<String> {
    matches!(state, CardState::Paid | CardState::Released).then(|| format!("/v1/payments/{payment_id}/receipt"))
}

/// The first words of the line that carries a request's escrow terms.
const TERMS_PREFIX: &str = "escrow: release after ";

/// The text of a payment request's message: its memo, and the escrow terms
/// it asks for on a line of their own.
pub fn request_text(memo: &str, escrow: Option<&EscrowTerms>) -> String {
    match escrow {
        None => memo.to_owned(),
        Some(terms) => format!("{memo}\n{}", terms_line(terms)),
    }
}

fn terms_line(terms: &EscrowTerms) -> String {
    let rule = match terms.on_timeout {
        Outcome::Release => "release",
        Outcome::Refund => "refund",
    };
    format!("{TERMS_PREFIX}{} s unless disputed, on timeout {rule}", terms.release_after_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYEE: &str = "agt_payee";
    const PAYER: &str = "agt_payer";
    const OTHER: &str = "agt_other";

    fn acts(state: CardState, viewer: Viewer<'_>) -> Vec<&'static str> {
        actions(state, viewer, PAYEE, Some(PAYER))
    }

    #[test]
    fn states_follow_the_invoice_and_what_its_payment_waits_in() {
        use EscrowKind::{Escrow, Hold};
        use EscrowStatus::{Disputed, Held, Refunded, Released};
        let cases = [
            (InvoiceStatus::Open, None, CardState::Open),
            (InvoiceStatus::Expired, None, CardState::Expired),
            (InvoiceStatus::Accepted, Some((Hold, Held)), CardState::Accepted),
            (InvoiceStatus::Accepted, Some((Escrow, Held)), CardState::Held),
            (InvoiceStatus::Accepted, Some((Escrow, Disputed)), CardState::Disputed),
            (InvoiceStatus::Paid, None, CardState::Paid),
            (InvoiceStatus::Paid, Some((Hold, Released)), CardState::Paid),
            (InvoiceStatus::Paid, Some((Escrow, Released)), CardState::Released),
            (InvoiceStatus::Cancelled, Some((Hold, Refunded)), CardState::Cancelled),
            (InvoiceStatus::Cancelled, Some((Escrow, Refunded)), CardState::Refunded),
            // An accepted invoice whose hold record was not read yet.
            (InvoiceStatus::Accepted, None, CardState::Accepted),
        ];
        for (status, waiting, want) in cases {
            assert_eq!(state(status, waiting), want, "{status:?} {waiting:?}");
        }
    }

    #[test]
    fn every_state_has_a_name_that_parses_back() {
        for s in STATES {
            assert_eq!(CardState::parse(s.as_str()), Some(s));
        }
        assert_eq!(CardState::parse("settled"), None);
        assert_eq!(CardState::Held.room_event(), Some("invoice.accepted"));
        assert_eq!(CardState::Released.room_event(), Some("invoice.paid"));
        assert_eq!(CardState::Refunded.room_event(), Some("invoice.cancelled"));
        assert_eq!(CardState::Disputed.room_event(), Some("invoice.disputed"));
        assert_eq!(CardState::Open.room_event(), None);
    }

    #[test]
    fn an_open_request_is_paid_by_any_agent_but_its_payee() {
        assert_eq!(actions(CardState::Open, Viewer::Agent(OTHER), PAYEE, None), ["pay"]);
        assert_eq!(actions(CardState::Open, Viewer::Agent(PAYEE), PAYEE, None), Vec::<&str>::new());
        assert_eq!(actions(CardState::Open, Viewer::Operator, PAYEE, None), Vec::<&str>::new());
        assert_eq!(actions(CardState::Expired, Viewer::Agent(OTHER), PAYEE, None), Vec::<&str>::new());
    }

    #[test]
    fn an_accepted_hold_is_settled_or_cancelled_by_its_payee_only() {
        assert_eq!(acts(CardState::Accepted, Viewer::Agent(PAYEE)), ["settle", "cancel"]);
        assert_eq!(acts(CardState::Accepted, Viewer::Agent(PAYER)), Vec::<&str>::new());
        assert_eq!(acts(CardState::Accepted, Viewer::Agent(OTHER)), Vec::<&str>::new());
        assert_eq!(acts(CardState::Accepted, Viewer::Operator), Vec::<&str>::new());
    }

    #[test]
    fn a_held_escrow_is_released_or_disputed_by_its_payer_and_given_back_by_its_payee() {
        assert_eq!(acts(CardState::Held, Viewer::Agent(PAYER)), ["release", "dispute"]);
        assert_eq!(acts(CardState::Held, Viewer::Agent(PAYEE)), ["cancel"]);
        assert_eq!(acts(CardState::Held, Viewer::Agent(OTHER)), Vec::<&str>::new());
        assert_eq!(acts(CardState::Held, Viewer::Operator), Vec::<&str>::new());
    }

    #[test]
    fn a_dispute_is_the_operators_to_resolve() {
        assert_eq!(acts(CardState::Disputed, Viewer::Operator), ["resolve"]);
        assert_eq!(acts(CardState::Disputed, Viewer::Agent(PAYER)), Vec::<&str>::new());
        assert_eq!(acts(CardState::Disputed, Viewer::Agent(PAYEE)), ["cancel"]);
    }

    #[test]
    fn nothing_is_left_to_do_once_it_ended() {
        for state in [CardState::Paid, CardState::Released, CardState::Cancelled, CardState::Refunded] {
            for viewer in [Viewer::Agent(PAYEE), Viewer::Agent(PAYER), Viewer::Agent(OTHER), Viewer::Operator] {
                assert_eq!(acts(state, viewer), Vec::<&str>::new(), "{state:?} {viewer:?}");
            }
        }
    }

    #[test]
    fn a_paid_request_links_its_receipt() {
        assert_eq!(receipt_url(CardState::Paid, "pay_1").as_deref(), Some("/v1/payments/pay_1/receipt"));
        assert_eq!(receipt_url(CardState::Released, "pay_1").as_deref(), Some("/v1/payments/pay_1/receipt"));
        for state in [CardState::Open, CardState::Accepted, CardState::Held, CardState::Disputed, CardState::Refunded] {
            assert_eq!(receipt_url(state, "pay_1"), None, "{state:?}");
        }
    }

    #[test]
    fn a_request_states_its_escrow_terms_for_people_on_a_line_of_their_own() {
        let terms = EscrowTerms { release_after_secs: 3600, on_timeout: Outcome::Refund };
        assert_eq!(
            request_text("a report", Some(&terms)),
            "a report\nescrow: release after 3600 s unless disputed, on timeout refund"
        );
        assert_eq!(request_text("a report", None), "a report");
    }
}
