//! Counted quotas, the store's part: what to count (`Counted`) and the one
//! statement that counts it, bounded (`Counted::sql`). The rules that use the
//! counts are the domain's (`crate::quota`); each backend answers the same
//! counts through [`super::Tx::count`].

/// What to count, and of whom.
#[derive(Clone, Copy, Debug)]
pub enum Counted<'a> {
    /// Open invoices of an agent not expired at `now_ms`.
    InvoicesOpen {
        agent_id: &'a str,
        now_ms: i64,
    },
    /// Pending holds of an agent not expired at `now_ms`.
    HoldsPending {
        agent_id: &'a str,
        now_ms: i64,
    },
    /// Holds and escrows of a payer not yet released or refunded.
    EscrowsOpen {
        payer: &'a str,
    },
    /// Sessions of a payer still open.
    SessionsOpen {
        payer: &'a str,
    },
    /// Rooms an agent (or the operator) is a member of.
    Rooms {
        member: &'a str,
    },
    RoomMembers {
        room_id: &'a str,
    },
    Subagents {
        parent_id: &'a str,
    },
    /// Messages of a room posted after `since_ms`.
    RecentMessages {
        room_id: &'a str,
        since_ms: i64,
    },
}

/// Locks one count of one subject (`?1`, with the kind's
/// [`Counted::lock_key`] as `?2`) until the transaction ends, for a store
/// with concurrent writers (PostgreSQL only: an advisory lock): a count and
/// the insert it allows then run one at a time, so two writers cannot both
/// see room for one more. Not the subject's row: a payment holds the
/// agent's row, and an invoice it receives meanwhile need not wait.
pub const COUNT_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended(?1, ?2))";

/// A count, at most the cap it was asked with, and when the oldest counted
/// row stops counting (an expiry, or a message leaving the window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub rows: u32,
    pub frees_at_ms: Option<i64>,
}

impl Counted<'_> {
    /// The query (SQLite placeholders; PostgreSQL swaps `?` for `$`): `?1`
    /// the subject, `?2` the time for the timed counts. The inner `LIMIT`
    /// bounds the rows read, whatever the subject holds; the cap is written
    /// into the text, not bound: SQLite plans a bound `LIMIT` by its value,
    /// and prepared such a statement again on every run (one per invoice).
    /// A cap is fixed for a process, so each kind stays one cached
    /// statement.
    pub fn sql(self, cap: u32) -> String {
        let query = match self {
            Counted::InvoicesOpen { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT expires_at AS t FROM invoices WHERE account_id = \
                 (SELECT account_id FROM agents WHERE id = ?1) AND status = 'open' AND expires_at > ?2 LIMIT {cap}) \
                 AS counted"
            }
            Counted::HoldsPending { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT expires_at AS t FROM approvals \
                 WHERE agent_id = ?1 AND status = 'pending' AND expires_at > ?2 LIMIT {cap}) AS counted"
            }
            Counted::EscrowsOpen { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT deadline_at AS t FROM escrows \
                 WHERE payer_agent_id = ?1 AND status IN ('held', 'disputed') LIMIT {cap}) AS counted"
            }
            Counted::SessionsOpen { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT expires_at AS t FROM sessions \
                 WHERE payer_agent_id = ?1 AND status = 'open' LIMIT {cap}) AS counted"
            }
            Counted::RecentMessages { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT created_at AS t FROM messages \
                 WHERE room_id = ?1 AND created_at > ?2 ORDER BY id DESC LIMIT {cap}) AS counted"
            }
            Counted::Rooms { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT added_at AS t FROM room_members WHERE member = ?1 LIMIT {cap}) \
                 AS counted"
            }
            Counted::RoomMembers { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT added_at AS t FROM room_members WHERE room_id = ?1 LIMIT {cap}) \
                 AS counted"
            }
            Counted::Subagents { .. } => {
                "SELECT COUNT(*), MIN(t) FROM (SELECT created_at AS t FROM agents WHERE parent_id = ?1 LIMIT {cap}) \
                 AS counted"
            }
        };
        query.replace("{cap}", &cap.to_string())
    }

    pub fn subject(&self) -> &str {
        match self {
            Counted::InvoicesOpen { agent_id, .. } | Counted::HoldsPending { agent_id, .. } => agent_id,
            Counted::EscrowsOpen { payer } | Counted::SessionsOpen { payer } => payer,
            Counted::Rooms { member } => member,
            Counted::RoomMembers { room_id } | Counted::RecentMessages { room_id, .. } => room_id,
            Counted::Subagents { parent_id } => parent_id,
        }
    }

    /// The key of this kind of count in [`COUNT_LOCK`] (`?2`): each kind
    /// of count of one subject has a lock of its own.
    pub fn lock_key(&self) -> i64 {
        match self {
            Counted::InvoicesOpen { .. } => 1,
            Counted::HoldsPending { .. } => 2,
            Counted::EscrowsOpen { .. } => 3,
            Counted::SessionsOpen { .. } => 4,
            Counted::Rooms { .. } => 5,
            Counted::RoomMembers { .. } => 6,
            Counted::Subagents { .. } => 7,
            Counted::RecentMessages { .. } => 8,
        }
    }

    /// The time of a timed count (`?2`).
    pub fn time(self) -> Option<i64> {
        match self {
            Counted::InvoicesOpen { now_ms, .. } | Counted::HoldsPending { now_ms, .. } => Some(now_ms),
            Counted::RecentMessages { since_ms, .. } => Some(since_ms),
            _ => None,
        }
    }
}
