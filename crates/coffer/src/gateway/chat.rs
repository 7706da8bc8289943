//! Chat: rooms, messages, payment requests, auto-pay and incoming
//! payments an agent acknowledges.

use super::*;
use crate::model::card::Viewer;
use crate::model::views;

impl Gateway {
    fn member_name(caller: &Principal) -> String {
        match caller {
            Principal::Operator => OPERATOR.to_owned(),
            Principal::Agent(key) => key.agent_id.clone(),
        }
    }

    /// Creates a room; an agent creating one becomes a member, as does the
    /// operator. Every member must accept rooms and have room for one more.
    pub async fn create_room(&self, caller: &Principal, name: &str, members: &[String]) -> Result<RoomRecord, Error> {
        let name = validate_name(name)?;
        if members.len() > ROOM_MEMBERS_MAX {
            return Err(invalid("members", format!("at most {ROOM_MEMBERS_MAX}")));
        }
        let mut all = vec![Self::member_name(caller)];
        for id in members {
            if !all.contains(id) {
                self.addable(id).await?;
                all.push(id.clone());
            }
        }
        let room = RoomRecord {
            id: secrets::new_id("room_"),
            name,
            created_by: Self::member_name(caller),
            created_at_ms: self.now_ms(),
            members: all,
        };
        let created = {
            let quotas = self.quotas();
            self.store.write(move |tx| ops::rooms::create_room(tx, room.clone(), quotas)).await
        };
        self.fed(caller, created).await
    }

    /// An agent others may put in a room: it exists and accepts rooms.
    async fn addable(&self, agent_id: &str) -> Result<(), Error> {
        self.agent(agent_id).await?;
        if self.chat_settings(agent_id).await?.accept_rooms == coffer_client::AcceptRooms::Nobody {
            return Err(Error::Forbidden("this agent does not accept being added to rooms"));
        }
        Ok(())
    }

    /// [`Gateway::feed_breaker`] for an agent caller.
    async fn fed<T>(&self, caller: &Principal, result: Result<T, Error>) -> Result<T, Error> {
        match caller {
            Principal::Agent(key) => self.feed_breaker(&key.agent_id, result).await,
            Principal::Operator => result,
        }
    }

    /// A room the caller may use: a member's, or any for the operator.
    pub async fn room_for(&self, caller: &Principal, room_id: &str) -> Result<RoomRecord, Error> {
        let id = room_id.to_owned();
        let room = self.store.read(move |tx| tx.room(&id)).await?.ok_or(Error::NotFound("room"))?;
        let me = Self::member_name(caller);
        if matches!(caller, Principal::Operator) || room.members.contains(&me) {
            return Ok(room);
        }
        Err(Error::Forbidden("only the room's members use it"))
    }

    /// The caller's rooms (every room, for the operator), oldest first, a
    /// page after the room `after`; with the cursor of the next page.
    pub async fn rooms(
        &self,
        caller: &Principal,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<RoomRecord>, Option<String>), Error> {
        let member = match caller {
            Principal::Operator => None,
            Principal::Agent(key) => Some(key.agent_id.clone()),
        };
        let after = after.map(str::to_owned);
        self.store.read(move |tx| tx.rooms(member.as_deref(), after.as_deref(), limit)).await
    }

    /// Adds an agent that accepts rooms, within the room's members and the
    /// agent's rooms.
    pub async fn add_member(&self, caller: &Principal, room_id: &str, agent_id: &str) -> Result<RoomRecord, Error> {
        let room = self.room_for(caller, room_id).await?;
        if !room.members.iter().any(|m| m == agent_id) {
            self.addable(agent_id).await?;
        }
        let (id, member, quotas, now_ms) = (room.id.clone(), agent_id.to_owned(), self.quotas(), self.now_ms());
        let added =
            self.store.write(move |tx| ops::rooms::add_member(tx, id.clone(), member.clone(), quotas, now_ms)).await;
        self.fed(caller, added).await?;
        self.room_for(caller, room_id).await
    }

    /// Takes a member out of a room: a member leaving, or the room's
    /// creator or the operator removing one.
    pub async fn remove_member(&self, caller: &Principal, room_id: &str, member: &str) -> Result<(), Error> {
        let room = self.room_for(caller, room_id).await?;
        let me = Self::member_name(caller);
        if me != member && me != room.created_by && !matches!(caller, Principal::Operator) {
            return Err(Error::Forbidden(
                "a member leaves itself; only the room's creator or the operator removes others",
            ));
        }
        let (member, now_ms) = (member.to_owned(), self.now_ms());
        if !self.store.write(move |tx| ops::rooms::remove_member(tx, room.id.clone(), member.clone(), now_ms)).await? {
            return Err(Error::NotFound("member"));
        }
        Ok(())
    }

    /// Posts a text, or a payment request whose invoice is made for the
    /// poster (a hold invoice with `hold`; with `escrow`, the terms a payer
    /// pays it with through the room), and delivers it live. Auto-pay rules
    /// of the other members run before this returns, and the message is
    /// returned as it then stands.
    pub async fn post_message(
        &self,
        caller: &Principal,
        room_id: &str,
        text: Option<&str>,
        request: Option<&coffer_client::PaymentRequestBody>,
    ) -> Result<RoomMessage, Error> {
        let room = self.room_for(caller, room_id).await?;
        let (invoice, escrow) = match (text, request) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid("text", "send either text or payment_request".into()));
            }
            (Some(t), None) if t.is_empty() || t.len() > MESSAGE_LEN_MAX_BYTES => {
                return Err(invalid("text", format!("1 to {MESSAGE_LEN_MAX_BYTES} bytes")));
            }
            (Some(t), None) => {
                text::check("text", t, text::Lines::Multi)?;
                (None, None)
            }
            (None, Some(request)) => {
                let Principal::Agent(key) = caller else {
                    return Err(Error::Forbidden("payment requests are posted by agents, which receive the payment"));
                };
                key.require(Scope::Receive)?;
                let (hold_secs, escrow) = request_terms(request)?;
                let (amount, memo, expiry) = (request.amount_msat, request.memo.as_deref(), request.expiry_secs);
                let room_id = Some(room.id.clone());
                let invoice = match hold_secs {
                    // A hold is settled inside this gateway: coffer signs it,
                    // as it does any hold invoice.
                    Some(hold_secs) => InvoiceRecord {
                        hold_secs: Some(hold_secs),
                        ..self.sign_invoice(&key.agent_id, amount, memo, expiry, room_id)?
                    },
                    None => self.make_invoice(&key.agent_id, amount, memo, expiry, room_id).await?,
                };
                let terms = escrow.as_ref().map(super::commerce::escrow_terms).transpose()?;
                let invoice = InvoiceRecord { escrow: terms, ..invoice };
                (Some(invoice), escrow)
            }
        };
        let text = match (text, &invoice) {
            (Some(t), _) => t.to_owned(),
            (None, Some(i)) => crate::model::card::request_text(&i.memo, escrow.as_ref()),
            (None, None) => String::new(),
        };
        let message = NewMessage {
            room_id: room.id.clone(),
            sender: Self::member_name(caller),
            text,
            invoice,
            now_ms: self.now_ms(),
            quotas: self.quotas(),
        };
        let posted = {
            let _in_order = self.post_order.lock().await;
            match self.store.write(move |tx| ops::rooms::post_message(tx, message.clone())).await {
                Ok(posted) => {
                    // Each watcher's stream fills in its own actions.
                    let view = views::message(posted.clone(), None, Viewer::Operator, self.now_ms());
                    let data = serde_json::to_value(view).map_err(|e| Error::internal("serialising a message", e))?;
                    self.live.publish(crate::live::RoomEvent {
                        room_id: room.id.clone(),
                        kind: "message.posted",
                        data,
                    });
                    Ok(posted)
                }
                refused => refused,
            }
        };
        // Fed after the order lock: a refusal holds up no other post.
        let posted = self.fed(caller, posted).await?;
        // A request an auto-pay rule settled is answered as it now stands.
        if self.auto_pay(&room, &posted).await
            && let Some(settled) = self.message(&room.id, posted.id).await?
        {
            return Ok(settled);
        }
        Ok(RoomMessage { message: posted, waiting: None })
    }

    pub(super) async fn message(&self, room_id: &str, id: i64) -> Result<Option<RoomMessage>, Error> {
        let room_id = room_id.to_owned();
        self.store
            .read(move |tx| match tx.message(&room_id, id)? {
                Some(message) => Ok(with_waiting(tx, vec![message])?.pop()),
                None => Ok(None),
            })
            .await
    }

    /// A room's messages after `after_id`, oldest first, each request with
    /// the hold or escrow its payment waits (or waited) in.
    pub async fn messages(
        &self,
        caller: &Principal,
        room_id: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<RoomMessage>, Error> {
        let room = self.room_for(caller, room_id).await?;
        self.store
            .read(move |tx| {
                let messages = tx.messages(&room.id, after_id, limit)?;
                with_waiting(tx, messages)
            })
            .await
    }

    /// Pays a payment request of a room, through the payer's policy.
    pub async fn pay_request(
        &self,
        caller: &AgentKey,
        room_id: &str,
        message_id: i64,
        idempotency_key: Option<&str>,
    ) -> Result<PayOutcome, Error> {
        let room = self.room_for(&Principal::Agent(caller.clone()), room_id).await?;
        let id = room.id.clone();
        let message =
            self.store.read(move |tx| tx.message(&id, message_id)).await?.ok_or(Error::NotFound("message"))?;
        let invoice = message.invoice.ok_or(invalid("message", "this message is not a payment request".into()))?;
        // A request that asks for escrow is paid into escrow on its terms.
        let escrow = invoice.escrow.map(crate::model::EscrowTerms::to_wire);
        let purpose = format!("room {}: {}", room.name, invoice.memo);
        let purpose: String = purpose.chars().take(PURPOSE_LEN_MAX_BYTES / 4).collect();
        let options = super::PayOptions {
            purpose: Some(&purpose),
            idempotency_key,
            escrow: escrow.as_ref(),
            ..Default::default()
        };
        self.pay_to(caller, &invoice.bolt11, options).await
    }

    /// An invoice the caller may see rendered: its agent's, one of a room
    /// the caller is in, or any for the operator.
    pub async fn visible_invoice(&self, caller: &Principal, payment_hash_hex: &str) -> Result<InvoiceRecord, Error> {
        let hash = parse_hash(payment_hash_hex)?;
        let invoice = self.stored_invoice(hash).await?.ok_or(Error::NotFound("invoice"))?;
        let visible = match caller {
            Principal::Operator => true,
            Principal::Agent(key) if key.agent_id == invoice.agent_id => true,
            Principal::Agent(_) => match &invoice.room_id {
                Some(room) => self.room_for(caller, room).await.is_ok(),
                None => false,
            },
        };
        if !visible {
            return Err(Error::Forbidden("the invoice belongs to another agent"));
        }
        Ok(invoice)
    }

    pub async fn incoming(
        &self,
        caller: &AgentKey,
        status: Option<crate::model::IncomingStatus>,
    ) -> Result<Vec<crate::model::IncomingRecord>, Error> {
        let payee = caller.agent_id.clone();
        self.store.read(move |tx| tx.incoming(&payee, status)).await
    }

    /// The payee accepts or rejects (refunds) a payment waiting for it.
    pub async fn decide_incoming(
        &self,
        caller: &AgentKey,
        payment_id: &str,
        accept: bool,
    ) -> Result<crate::model::IncomingRecord, Error> {
        let (payee, id, key) = (caller.agent_id.clone(), payment_id.to_owned(), caller.key_id.clone());
        let now_ms = self.now_ms();
        self.store.write(move |tx| ops::invoices::decide_incoming(tx, &payee, &id, accept, &key, now_ms)).await
    }

    pub async fn chat_settings(&self, agent_id: &str) -> Result<ChatSettings, Error> {
        let id = agent_id.to_owned();
        self.store.read(move |tx| tx.chat_settings(&id)).await?.ok_or(Error::NotFound("agent"))
    }

    pub async fn set_chat_settings(&self, agent_id: &str, settings: ChatSettings) -> Result<(), Error> {
        if settings.auto_pay_from.len() > ROOM_MEMBERS_MAX {
            return Err(invalid("auto_pay_from", format!("at most {ROOM_MEMBERS_MAX} agents")));
        }
        if settings.auto_pay_max_msat > 0 {
            parse_amount("auto_pay_max_msat", settings.auto_pay_max_msat)?;
        }
        let (id, now_ms) = (agent_id.to_owned(), self.now_ms());
        self.store.write(move |tx| ops::agents::set_chat_settings(tx, id.clone(), settings.clone(), now_ms)).await
    }

    /// Members whose chat settings say so pay the request at once, in the
    /// room's member order, through their own policy; the first payment
    /// settles it and the others find it paid.
    /// Returns whether one paid it (or had it held for approval).
    async fn auto_pay(&self, room: &RoomRecord, message: &MessageRecord) -> bool {
        let Some(invoice) = &message.invoice else { return false };
        for member in room.members.iter().filter(|m| **m != message.sender && *m != OPERATOR) {
            let Ok(settings) = self.chat_settings(member).await else { continue };
            let listed = settings.auto_pay_from.contains(&message.sender);
            if !listed || invoice.amount.as_u64() > settings.auto_pay_max_msat {
                continue;
            }
            let Ok(agent) = self.agent(member).await else { continue };
            let key = AgentKey {
                key_id: AUTO_PAY_KEY_ID.into(),
                agent_id: agent.id.clone(),
                account: agent.account,
                scope: Scope::Spend,
                expires_at_ms: None,
            };
            match self.pay_request(&key, &room.id, message.id, None).await {
                Ok(_) => return true,
                Err(e) => tracing::info!(agent = %agent.id, error = %e, "auto-pay did not pay"),
            }
        }
        false
    }
}

/// A room's message, with the hold or escrow the payment of its request
/// waits (or waited) in.
#[derive(Clone, Debug)]
pub struct RoomMessage {
    pub message: MessageRecord,
    pub waiting: Option<crate::model::EscrowRecord>,
}

/// Reads the hold or escrow of each request that was paid (or accepted):
/// one indexed read per such request of the page.
fn with_waiting(tx: &mut dyn crate::store::Tx, messages: Vec<MessageRecord>) -> Result<Vec<RoomMessage>, Error> {
    use crate::model::StoredInvoiceStatus::{Expired, Open};
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        let waiting = match &message.invoice {
            Some(i) if !matches!(i.status, Open | Expired) => tx.escrow_by_hash(&i.payment_hash)?,
            _ => None,
        };
        out.push(RoomMessage { message, waiting });
    }
    Ok(out)
}

/// A payment request's hold time (with `hold`) or escrow terms, checked.
fn request_terms(
    request: &coffer_client::PaymentRequestBody,
) -> Result<(Option<u32>, Option<coffer_client::EscrowTerms>), Error> {
    let hold_secs = match (request.hold, request.hold_secs) {
        (false, None) => None,
        (false, Some(_)) => return Err(invalid("payment_request.hold_secs", "only with \"hold\": true".into())),
        (true, secs) => {
            let (secs, max) = (secs.unwrap_or(crate::model::HOLD_SECS_DEFAULT), crate::model::HOLD_SECS_MAX);
            if secs == 0 || secs > max {
                return Err(invalid("payment_request.hold_secs", format!("between 1 and {max} seconds")));
            }
            Some(secs)
        }
    };
    if let Some(terms) = &request.escrow {
        if hold_secs.is_some() {
            return Err(invalid(
                "payment_request.escrow",
                "a hold invoice is settled by its payee: ask for hold or escrow, not both".into(),
            ));
        }
        super::commerce::escrow_terms(terms)?;
    }
    Ok((hold_secs, request.escrow.clone()))
}

/// The key id recorded for payments made by an agent's auto-pay rule.
pub const AUTO_PAY_KEY_ID: &str = "auto-pay";
pub const ROOM_MEMBERS_MAX: usize = 256;
pub const MESSAGE_LEN_MAX_BYTES: usize = 4_096;
// A message at its bound fits a request body.
const _: () = assert!(MESSAGE_LEN_MAX_BYTES < crate::limits::BODY_LEN_MAX_BYTES);
