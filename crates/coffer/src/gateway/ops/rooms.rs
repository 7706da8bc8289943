//! Rooms, their members and their messages.

use super::invoices;
use crate::error::Error;
use crate::events::{self, Event};
use crate::model::{MessageKind, MessageRecord, NewMessage, RoomRecord};
use crate::quota::{self, Quotas};
use crate::store::Tx;

/// Creates a room with its first members, within the room and member
/// quotas.
pub fn create_room(tx: &mut dyn Tx, room: RoomRecord, quotas: Quotas) -> Result<RoomRecord, Error> {
    quota::check_room(tx, &quotas, &room)?;
    tx.insert_room(&room)?;
    for member in &room.members {
        tx.add_member(&room.id, member, room.created_at_ms)?;
    }
    let event = Event::RoomCreated { room_id: room.id.clone(), name: room.name.clone(), members: room.members.clone() };
    events::emit(tx, &event, room.created_at_ms)?;
    tx.room(&room.id)?.ok_or(Error::NotFound("room"))
}

/// Adds a member (one already there stays as it is), within the room's
/// `room_members` and the newcomer's `rooms_per_agent`.
pub fn add_member(tx: &mut dyn Tx, room_id: String, member: String, quotas: Quotas, now_ms: i64) -> Result<(), Error> {
    let room = tx.room(&room_id)?.ok_or(Error::NotFound("room"))?;
    if room.members.contains(&member) {
        return Ok(());
    }
    quota::check_member(tx, &quotas, &room_id, &member, now_ms)?;
    tx.add_member(&room_id, &member, now_ms)?;
    events::emit(tx, &Event::RoomMemberAdded { room_id, member }, now_ms)
}

/// Removes a member, with its event; `false` if it was not one.
pub fn remove_member(tx: &mut dyn Tx, room_id: String, member: String, now_ms: i64) -> Result<bool, Error> {
    if !tx.remove_member(&room_id, &member)? {
        return Ok(false);
    }
    events::emit(tx, &Event::RoomMemberRemoved { room_id, member }, now_ms)?;
    Ok(true)
}

/// Posts a message, with its invoice for a payment request, within the
/// room's message rate (and the poster's open invoices).
pub fn post_message(tx: &mut dyn Tx, m: NewMessage) -> Result<MessageRecord, Error> {
    quota::check_message(tx, &m.quotas, &m.room_id, m.now_ms)?;
    if let Some(invoice) = &m.invoice {
        invoices::create_invoice(tx, invoice, &m.quotas)?;
    }
    let kind = if m.invoice.is_some() { MessageKind::PaymentRequest } else { MessageKind::Text };
    let id = tx.insert_message(&m, kind)?;
    let event = Event::MessagePosted { room_id: m.room_id.clone(), message_id: id, sender: m.sender.clone(), kind };
    events::emit(tx, &event, m.now_ms)?;
    Ok(MessageRecord {
        id,
        room_id: m.room_id,
        sender: m.sender,
        kind,
        text: m.text,
        created_at_ms: m.now_ms,
        invoice: m.invoice,
    })
}
