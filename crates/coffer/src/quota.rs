//! Counted quotas: what an agent holds (open invoices, pending holds, rooms,
//! sub-agents) or a room takes (members, messages a minute), counted in the
//! transaction of the write they guard, so that concurrent writers can never
//! pass a bound together. The rules are here, once; the counting is the
//! store's ([`Tx::count`]).

use crate::error::Error;
use crate::limits::{Limit, Limits};
use crate::model::{NewAgent, OPERATOR, RoomRecord, TREASURY_PAYEE};
use crate::store::Tx;
use crate::store::quota::Counted;

/// How long a full room, tree or room list asks a caller to wait: nothing
/// frees there by itself, but a member may leave or be removed.
const RETRY_HELD_SECS: u64 = 60;
/// The window of `room_messages_per_minute`.
const MESSAGE_WINDOW_MS: i64 = 60_000;

/// The bounds a store checks in its transactions (from [`Limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub invoices_open_per_agent: u32,
    pub holds_pending_per_agent: u32,
    pub rooms_per_agent: u32,
    pub room_members: u32,
    pub room_messages_per_minute: u32,
    pub subagents_per_parent: u32,
    pub tree_depth: u32,
}

impl From<&Limits> for Quotas {
    fn from(l: &Limits) -> Quotas {
        Quotas {
            invoices_open_per_agent: l.invoices_open_per_agent,
            holds_pending_per_agent: l.holds_pending_per_agent,
            rooms_per_agent: l.rooms_per_agent,
            room_members: l.room_members,
            room_messages_per_minute: l.room_messages_per_minute,
            subagents_per_parent: l.subagents_per_parent,
            tree_depth: l.tree_depth,
        }
    }
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas::from(&Limits::default())
    }
}

/// Refuses a write that would take `counted` past `bound`.
fn check(tx: &mut dyn Tx, limit: Limit, bound: u32, counted: Counted<'_>, now_ms: i64) -> Result<(), Error> {
    let count = tx.count(counted, bound)?;
    if count.rows < bound {
        return Ok(());
    }
    let retry_after_secs = match (limit, count.frees_at_ms) {
        (Limit::RoomMessagesPerMinute, Some(oldest)) => secs_until(oldest + MESSAGE_WINDOW_MS, now_ms),
        (
            Limit::InvoicesOpenPerAgent
            | Limit::HoldsPendingPerAgent
            | Limit::EscrowsOpenPerAgent
            | Limit::SessionsOpenPerAgent,
            Some(expiry),
        ) => secs_until(expiry, now_ms),
        _ => RETRY_HELD_SECS,
    };
    let whose = counted.subject().to_owned();
    Err(Error::limit(limit, retry_after_secs, format!("{whose} is at its bound of {bound}")))
}

fn secs_until(at_ms: i64, now_ms: i64) -> u64 {
    u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0).div_ceil(1000)
}

/// Another open invoice of `agent_id` (the treasury's are not counted: the
/// operator makes them).
pub(crate) fn check_invoice(tx: &mut dyn Tx, q: &Quotas, agent_id: &str, now_ms: i64) -> Result<(), Error> {
    if agent_id == TREASURY_PAYEE {
        return Ok(());
    }
    let counted = Counted::InvoicesOpen { agent_id, now_ms };
    check(tx, Limit::InvoicesOpenPerAgent, q.invoices_open_per_agent, counted, now_ms)
}

/// Another pending hold of `agent_id`.
pub(crate) fn check_hold(tx: &mut dyn Tx, holds_max: u32, agent_id: &str, now_ms: i64) -> Result<(), Error> {
    let counted = Counted::HoldsPending { agent_id, now_ms };
    check(tx, Limit::HoldsPendingPerAgent, holds_max, counted, now_ms)
}

/// Another open hold or escrow paid by `payer`.
pub(crate) fn check_escrow(tx: &mut dyn Tx, escrows_max: u32, payer: &str, now_ms: i64) -> Result<(), Error> {
    check(tx, Limit::EscrowsOpenPerAgent, escrows_max, Counted::EscrowsOpen { payer }, now_ms)
}

/// Another open session paid by `payer`.
pub(crate) fn check_session(tx: &mut dyn Tx, sessions_max: u32, payer: &str, now_ms: i64) -> Result<(), Error> {
    check(tx, Limit::SessionsOpenPerAgent, sessions_max, Counted::SessionsOpen { payer }, now_ms)
}

/// Another message in `room_id` this minute.
pub(crate) fn check_message(tx: &mut dyn Tx, q: &Quotas, room_id: &str, now_ms: i64) -> Result<(), Error> {
    let counted = Counted::RecentMessages { room_id, since_ms: now_ms - MESSAGE_WINDOW_MS };
    check(tx, Limit::RoomMessagesPerMinute, q.room_messages_per_minute, counted, now_ms)
}

/// A new member of a room: the room and the newcomer's list of rooms each
/// have room for it.
pub(crate) fn check_member(tx: &mut dyn Tx, q: &Quotas, room_id: &str, member: &str, now_ms: i64) -> Result<(), Error> {
    check(tx, Limit::RoomMembers, q.room_members, Counted::RoomMembers { room_id }, now_ms)?;
    check_rooms_of(tx, q, member, now_ms)
}

/// A new room: each of its members has room for one more.
pub(crate) fn check_room(tx: &mut dyn Tx, q: &Quotas, room: &RoomRecord) -> Result<(), Error> {
    if room.members.len() > q.room_members as usize {
        let detail = format!("a room has at most {} members", q.room_members);
        return Err(Error::limit(Limit::RoomMembers, RETRY_HELD_SECS, detail));
    }
    for member in &room.members {
        check_rooms_of(tx, q, member, room.created_at_ms)?;
    }
    Ok(())
}

/// Room for one more room in `member`'s list; the operator's is not bounded
/// (it is no agent, and watches every room anyway).
fn check_rooms_of(tx: &mut dyn Tx, q: &Quotas, member: &str, now_ms: i64) -> Result<(), Error> {
    if member == OPERATOR {
        return Ok(());
    }
    check(tx, Limit::RoomsPerAgent, q.rooms_per_agent, Counted::Rooms { member }, now_ms)
}

/// A sub-agent: its parent has room for one more child, and the tree stays
/// within `tree_depth` levels (a top-level agent is level 1), which no retry
/// changes.
pub(crate) fn check_subagent(tx: &mut dyn Tx, q: &Quotas, agent: &NewAgent, now_ms: i64) -> Result<(), Error> {
    let Some(parent_id) = agent.parent_id.as_deref() else { return Ok(()) };
    let parent_level = crate::payment::chain::load_chain(tx, parent_id)?.len();
    if parent_level >= q.tree_depth as usize {
        return Err(Error::limit_final(
            Limit::TreeDepth,
            format!("a sub-agent tree has at most {} levels; {parent_id} is on the last one", q.tree_depth),
        ));
    }
    check(tx, Limit::SubagentsPerParent, q.subagents_per_parent, Counted::Subagents { parent_id }, now_ms)
}
