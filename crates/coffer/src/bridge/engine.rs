//! A bridge at work, for any messenger: reading the chats (commands, text,
//! presses) and writing to them (the room's messages, cards as they
//! change, approvals and alerts for the operator).
//!
//! Reading: one task long-polls the messenger under a lease (one instance
//! at a time reads, as the messengers want: Telegram refuses two readers),
//! handles each update and then stores the cursor after it, so a restart
//! neither loses nor repeats an update. What an update does is idempotent
//! where money moves: a press pays with its own id as the idempotency key,
//! so a press delivered twice pays once.
//!
//! Writing: the outbox, followed as the event buses follow it
//! ([`crate::events::Bus`], with its lease, cursor and backoff): a messenger
//! outage is retried and caught up. Each room message posted is recorded
//! (`bridge_posts`), so a batch published again posts nothing twice, and a
//! text that came from the chat is not echoed back into it.

use super::render::{self, Action, Command};
use super::{BridgeError, Inbound, Messenger, Outbound, User};
use crate::error::Error;
use crate::events::{Bus, BusFuture, Lease, backoff_ms};
use crate::gateway::bridge::MessengerUser;
use crate::gateway::{AgentKey, Gateway, PayOutcome, Principal};
use crate::model::{BridgeLinkRecord, BridgePostRecord, OPERATOR};
use coffer_client::{Event as WireEvent, PaymentRequestBody};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The first wait after a failed read; it doubles up to the buses' ceiling.
const READ_BACKOFF_BASE_MS: u64 = 500;
/// How often an instance without the reading lease asks for it.
const LEASE_POLL_MS: u64 = 2_000;
/// How often the reading lease is renewed during a long poll: well inside
/// the half of [`crate::events::LEASE_MS`] after which a claim renews it.
const LEASE_RENEW_EVERY: Duration = Duration::from_millis(crate::events::LEASE_MS.unsigned_abs() / 4);
/// The longest text mirrored from a chat into a room (the room's bound).
const MIRRORED_TEXT_MAX_BYTES: usize = crate::gateway::MESSAGE_LEN_MAX_BYTES;

/// One messenger's bridge.
pub struct Bridge {
    gateway: Arc<Gateway>,
    messenger: Arc<dyn Messenger>,
    /// Held while a text from the chat is posted into its room and
    /// recorded, and while the outbox's `message.posted` is handled: the
    /// record is there before the bridge decides whether to post it back.
    posting: Mutex<()>,
}

/// Starts a bridge's reader and writer for as long as the gateway runs.
pub fn start(gateway: &Arc<Gateway>, messenger: Arc<dyn Messenger>, owner: String) {
    let bridge = Arc::new(Bridge { gateway: gateway.clone(), messenger, posting: Mutex::new(()) });
    tokio::spawn(read_loop(bridge.clone(), owner.clone()));
    tokio::spawn(crate::events::run_bus(gateway.clone(), bridge, owner));
}

async fn read_loop(bridge: Arc<Bridge>, owner: String) {
    let name = bridge.messenger.name();
    let mut lease = Lease::new(&format!("bridge.{name}.read"), &owner);
    let mut failures = 0u32;
    loop {
        let wait_ms = match bridge.read_step(&mut lease).await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => LEASE_POLL_MS,
            Err(ReadError::Messenger(BridgeError::Unavailable { retry_after_ms: Some(ms), detail })) => {
                tracing::warn!(messenger = name, error = %detail, retry_in_ms = ms, "the messenger asks to wait");
                ms
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait_ms = backoff_ms(failures, READ_BACKOFF_BASE_MS);
                tracing::warn!(messenger = name, error = %e, retry_in_ms = wait_ms, "reading the messenger failed");
                wait_ms
            }
        };
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    }
}

enum ReadError {
    Messenger(BridgeError),
    Store(Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Messenger(e) => e.fmt(f),
            ReadError::Store(e) => e.fmt(f),
        }
    }
}

impl Bridge {
    fn name(&self) -> &'static str {
        self.messenger.name()
    }

    /// One long poll, if this instance holds the reading lease; whether it
    /// read (so the next poll follows at once).
    async fn read_step(&self, lease: &mut Lease) -> Result<bool, ReadError> {
        if lease.hold(&self.gateway).await.map_err(ReadError::Store)?.is_none() {
            return Ok(false);
        }
        let cursor = self.gateway.bridge_cursor(self.name()).await.map_err(ReadError::Store)?;
        // A long poll outlasts the lease (25 s against 10 s): the lease is
        // renewed while it waits, or another instance would claim it and
        // read the same updates. Lost meanwhile, the poll is dropped.
        let poll = self.messenger.updates(cursor.as_deref());
        tokio::pin!(poll);
        let updates = loop {
            tokio::select! {
                updates = &mut poll => break updates.map_err(ReadError::Messenger)?,
                () = tokio::time::sleep(LEASE_RENEW_EVERY) => {
                    if lease.hold(&self.gateway).await.map_err(ReadError::Store)?.is_none() {
                        return Ok(false);
                    }
                }
            }
        };
        for update in updates {
            // Nor is an update handled once another instance may read it.
            if lease.hold(&self.gateway).await.map_err(ReadError::Store)?.is_none() {
                return Ok(false);
            }
            if let Some(inbound) = &update.inbound {
                self.handle(inbound).await;
            }
            self.gateway.set_bridge_cursor(self.name(), &update.cursor).await.map_err(ReadError::Store)?;
        }
        Ok(true)
    }

    /// What an update does. Failures are told to the user, never retried:
    /// the next update is not held up by this one.
    async fn handle(&self, inbound: &Inbound) {
        let outcome = match inbound {
            Inbound::Text { chat, user, id, text, reply_to } => match render::command(text) {
                Some(command) => self.command(chat, user, id, command, reply_to.as_deref()).await,
                None => self.mirror_text(chat, user, id, text).await.map(|()| None),
            },
            Inbound::Press { chat, user, id, data, message } => {
                let answer = self.press(chat, user, id, data, message.as_deref()).await;
                let text = answer.unwrap_or_else(|e| problem_text(&e));
                if let Err(e) = self.messenger.answer(inbound, &text).await {
                    tracing::warn!(messenger = self.name(), error = %e, "answering a press failed");
                }
                return;
            }
        };
        let reply = match outcome {
            Ok(Some(text)) => text,
            Ok(None) => return,
            Err(e) => problem_text(&e),
        };
        let message = Outbound { text: reply, ..Outbound::default() };
        if let Err(e) = self.messenger.send(inbound.chat(), &message).await {
            tracing::warn!(messenger = self.name(), error = %e, "replying in a chat failed");
        }
    }

    async fn command(
        &self,
        chat: &str,
        user: &User,
        id: &str,
        command: Command,
        reply_to: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let gw = &self.gateway;
        let reply = match command {
            Command::Help => render::HELP.to_owned(),
            Command::Usage(usage) => format!("Usage: {usage}"),
            Command::Link(code) => {
                let who =
                    MessengerUser { messenger: self.name(), user_id: &user.id, user_name: &user.name, chat_id: chat };
                let link = gw.link_messenger_user(&who, &code).await?;
                format!("Linked: you act as {} here. /unlink to stop.", link.agent_id)
            }
            Command::Unlink => match gw.unlink_messenger_user(self.name(), &user.id).await? {
                true => "Unlinked.".to_owned(),
                false => "You were not linked.".to_owned(),
            },
            Command::Balance => {
                let key = self.agent_key(user).await?;
                let (agent, balance) = gw.wallet(&key).await?;
                format!("{}: {} available", agent.name, render::sat(balance.available().as_u64()))
            }
            Command::Request { amount_sat, memo } => self.request(chat, user, id, amount_sat, &memo).await?,
            Command::Pay => {
                let card = reply_to.ok_or(Error::InvalidState("reply /pay to a payment request".into()))?;
                self.pay_card(chat, user, id, card).await?
            }
            Command::Approve(approval) => self.decide(user, &approval, true).await?,
            Command::Deny(approval) => self.decide(user, &approval, false).await?,
            Command::Freeze(agent) => {
                self.operator(user).await?;
                gw.freeze(&agent, Some(&format!("frozen from {} by {}", self.name(), user.name))).await?;
                format!("{agent} is frozen.")
            }
            Command::Unfreeze(agent) => {
                self.operator(user).await?;
                gw.unfreeze(&agent).await?;
                format!("{agent} is unfrozen.")
            }
            Command::Halt(halted) => {
                self.operator(user).await?;
                gw.set_halted(halted).await?;
                if halted { "Halted: no payment leaves a wallet." } else { "Running again." }.to_owned()
            }
        };
        Ok(Some(reply))
    }

    /// A linked user's agent key; the operator's users and unlinked users
    /// have none.
    async fn agent_key(&self, user: &User) -> Result<AgentKey, Error> {
        let link = self.link(user).await?;
        self.gateway.bridge_key(&link).await?.ok_or(Error::Forbidden("you are linked as the operator, not an agent"))
    }

    async fn link(&self, user: &User) -> Result<BridgeLinkRecord, Error> {
        self.gateway.bridge_link_of(self.name(), &user.id).await?.ok_or(Error::Forbidden(render::NOT_LINKED))
    }

    async fn operator(&self, user: &User) -> Result<(), Error> {
        match self.link(user).await? {
            link if link.agent_id == OPERATOR => Ok(()),
            _ => Err(Error::Forbidden("only a user linked as the operator does this")),
        }
    }

    async fn room_of(&self, chat: &str) -> Result<String, Error> {
        let bridge = self.gateway.bridged_room(self.name(), chat).await?;
        Ok(bridge.ok_or(Error::InvalidState("this chat is not bridged to a coffer room".into()))?.room_id)
    }

    /// Posts a payment request as the user's agent, once per command
    /// (`id`): a command read again (a Matrix batch after a restart) posts
    /// none.
    async fn request(&self, chat: &str, user: &User, id: &str, amount_sat: u64, memo: &str) -> Result<String, Error> {
        let room = self.room_of(chat).await?;
        let key = self.agent_key(user).await?;
        let amount_msat = amount_sat
            .checked_mul(1_000)
            .ok_or(Error::InvalidAmount { field: "amount_sat", detail: "too large".into() })?;
        let done = format!("Requested {} for {memo}.", render::sat(amount_msat));
        if self.gateway.bridge_post_by_external(self.name(), chat, id).await?.is_some() {
            return Ok(done);
        }
        let request = PaymentRequestBody { amount_msat, memo: Some(memo.to_owned()), ..PaymentRequestBody::default() };
        // The card reaches this chat through the outbox, as every room's
        // message does.
        let posted = self.gateway.post_message(&Principal::Agent(key), &room, None, Some(&request)).await?;
        // Recorded as a post of the chat's own pseudo-room (the card's own
        // post is the outbox's to record).
        let post = BridgePostRecord {
            messenger: self.name().to_owned(),
            room_id: format!("@request:{chat}"),
            message_id: posted.message.id,
            chat_id: chat.to_owned(),
            external_id: id.to_owned(),
            payment_hash: None,
        };
        self.gateway.record_bridge_post(post).await?;
        Ok(done)
    }

    /// A press: a Pay or Approve/Deny button (data tagged for this chat),
    /// or a reaction to a card (no data; the card is the message reacted
    /// to).
    async fn press(&self, chat: &str, user: &User, id: &str, data: &str, on: Option<&str>) -> Result<String, Error> {
        if data.is_empty() {
            let card = on.ok_or(Error::InvalidState("nothing to press on".into()))?;
            return self.pay_card(chat, user, id, card).await;
        }
        let (action, tag) = Action::parse(data).ok_or(Error::Forbidden("this button is not one of coffer's"))?;
        let expected = self.gateway.bridge_tag(&action.tagged_text(self.name(), chat));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &tag[..])) {
            return Err(Error::Forbidden("this button is not one of coffer's"));
        }
        match action {
            Action::Pay { message_id } => {
                let room = self.room_of(chat).await?;
                self.pay(user, id, &room, message_id).await
            }
            Action::Decide { approval_id, approve } => self.decide(user, &approval_id, approve).await,
        }
    }

    /// Pays the card `card` (the messenger's id of it) of this chat.
    async fn pay_card(&self, chat: &str, user: &User, id: &str, card: &str) -> Result<String, Error> {
        let post = self.gateway.bridge_post_by_external(self.name(), chat, card).await?;
        let post = post.filter(|p| p.payment_hash.is_some()).ok_or(Error::NotFound("payment request"))?;
        self.pay(user, id, &post.room_id, post.message_id).await
    }

    /// Pays a room's request as the user's agent, through its constitution;
    /// the press's id is the idempotency key (a press delivered twice pays
    /// once).
    async fn pay(&self, user: &User, press_id: &str, room: &str, message_id: i64) -> Result<String, Error> {
        let key = self.agent_key(user).await?;
        let idempotency_key = press_key(self.name(), press_id);
        match self.gateway.pay_request(&key, room, message_id, Some(&idempotency_key)).await? {
            PayOutcome::Paid(payment) => Ok(format!("Paid {}.", render::sat(payment.amount.as_u64()))),
            PayOutcome::Held(approval) => Ok(format!("Held for the operator's approval ({}).", approval.id)),
        }
    }

    async fn decide(&self, user: &User, approval_id: &str, approve: bool) -> Result<String, Error> {
        self.operator(user).await?;
        self.gateway.decide_approval(approval_id, approve).await?;
        Ok(if approve { format!("Approved {approval_id}: paid.") } else { format!("Denied {approval_id}.") })
    }

    /// A chat's text, posted into its room: as the linked agent, or by the
    /// operator naming the messenger's user. Text of a chat that is not
    /// bridged is ignored.
    async fn mirror_text(&self, chat: &str, user: &User, id: &str, text: &str) -> Result<(), Error> {
        let Some(bridge) = self.gateway.bridged_room(self.name(), chat).await? else { return Ok(()) };
        let link = self.gateway.bridge_link_of(self.name(), &user.id).await?;
        let (caller, text) = match &link {
            Some(link) => match self.gateway.bridge_key(link).await? {
                Some(key) => (Principal::Agent(key), text.to_owned()),
                None => (Principal::Operator, text.to_owned()),
            },
            None => (Principal::Operator, format!("{} ({}): {text}", user.name, self.name())),
        };
        let text = crate::gateway::text::truncate(&text, MIRRORED_TEXT_MAX_BYTES);
        let _posting = self.posting.lock().await;
        // A text read again (a Matrix batch after a restart) is posted once.
        if self.gateway.bridge_post_by_external(self.name(), chat, id).await?.is_some() {
            return Ok(());
        }
        let posted = self.gateway.post_message(&caller, &bridge.room_id, Some(&text), None).await?;
        let post = BridgePostRecord {
            messenger: self.name().to_owned(),
            room_id: bridge.room_id,
            message_id: posted.message.id,
            chat_id: chat.to_owned(),
            external_id: id.to_owned(),
            payment_hash: None,
        };
        self.gateway.record_bridge_post(post).await.map(drop)
    }

    /// Mirrors one event of the outbox into the chats it concerns.
    async fn publish_one(&self, event: &WireEvent) -> Result<(), BridgeError> {
        let outcome = match event.kind.as_str() {
            "message.posted" => self.post_message(&event.data).await,
            "payment.held" => self.prompt_approval(event).await,
            "breaker.tripped" | "breaker.halted" | "agent.frozen" | "budget.warning" => self.alert(event).await,
            _ => match event.data.get("payment_hash").and_then(Value::as_str) {
                Some(hash) => self.refresh_cards(hash).await,
                None => Ok(()),
            },
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Messenger(e @ BridgeError::Unavailable { .. })) => Err(e),
            Err(Failure::Messenger(BridgeError::Refused(detail))) => {
                tracing::warn!(messenger = self.name(), event = event.id, error = %detail, "the messenger refused a post");
                Ok(())
            }
            Err(Failure::Store(e)) => Err(BridgeError::Unavailable { retry_after_ms: None, detail: e.to_string() }),
        }
    }

    /// A room's new message, into the room's chat on this messenger (unless
    /// it came from there, or was posted before).
    async fn post_message(&self, data: &Value) -> Result<(), Failure> {
        let room_id = data.get("room_id").and_then(Value::as_str).unwrap_or_default();
        let Some(message_id) = data.get("message_id").and_then(Value::as_i64) else { return Ok(()) };
        let bridges = self.gateway.room_bridges(&Principal::Operator, room_id).await;
        let Some(bridge) = bridges.unwrap_or_default().into_iter().find(|b| b.messenger == self.name()) else {
            return Ok(());
        };
        let _posting = self.posting.lock().await;
        if self.gateway.bridge_post(self.name(), room_id, message_id).await?.is_some() {
            return Ok(());
        }
        let Some(message) = self.gateway.bridge_message(room_id, message_id).await? else { return Ok(()) };
        // A room is mirrored from when it was bridged: the outbox's history
        // (read from its start by a new bridge) is not replayed into it.
        if at_ms(&message.created_at).is_none_or(|at| at < bridge.created_at_ms) {
            return Ok(());
        }
        let mut outbound = render::message(&message, Some(self.pay_button(&bridge.chat_id, message_id)));
        let hash = message.invoice.as_ref().map(|i| i.payment_hash.clone());
        if let Some(invoice) = message.invoice.as_ref().filter(|i| i.state == "open") {
            outbound.image_png = render::qr_png(&invoice.bolt11);
        }
        let external_id = self.messenger.send(&bridge.chat_id, &outbound).await?;
        let post = BridgePostRecord {
            messenger: self.name().to_owned(),
            room_id: room_id.to_owned(),
            message_id,
            chat_id: bridge.chat_id,
            external_id,
            payment_hash: hash.and_then(|h| hex::decode(h).ok()).and_then(|h| h.try_into().ok()),
        };
        self.gateway.record_bridge_post(post).await?;
        Ok(())
    }

    fn pay_button(&self, chat: &str, message_id: i64) -> super::Button {
        let action = Action::Pay { message_id };
        render::button("⚡ Pay", &action, &self.gateway.bridge_tag(&action.tagged_text(self.name(), chat)))
    }

    /// Edits every card of a payment request on this messenger to where
    /// it now stands.
    async fn refresh_cards(&self, payment_hash_hex: &str) -> Result<(), Failure> {
        let Some(hash) = hex::decode(payment_hash_hex).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()) else {
            return Ok(());
        };
        for post in self.gateway.bridge_posts_of_hash(hash).await? {
            if post.messenger != self.name() {
                continue;
            }
            let Some(message) = self.gateway.bridge_message(&post.room_id, post.message_id).await? else { continue };
            let outbound = render::message(&message, Some(self.pay_button(&post.chat_id, post.message_id)));
            self.messenger.edit(&post.chat_id, &post.external_id, &outbound).await?;
        }
        Ok(())
    }

    /// A held payment, to every user linked as the operator on this
    /// messenger, once each.
    async fn prompt_approval(&self, event: &WireEvent) -> Result<(), Failure> {
        let Some(id) = event.data.get("approval_id").and_then(Value::as_str) else { return Ok(()) };
        let Some(approval) = self.gateway.approval(id).await? else { return Ok(()) };
        let approval = crate::model::views::approval(approval, true);
        for link in self.operator_links_since(event).await? {
            let chat = &link.chat_id;
            let tag = |approve| {
                let action = Action::Decide { approval_id: approval.id.clone(), approve };
                let tag = self.gateway.bridge_tag(&action.tagged_text(self.name(), chat));
                render::button(if approve { "✅ Approve" } else { "❌ Deny" }, &action, &tag)
            };
            let outbound = render::approval(&approval, tag(true), tag(false));
            self.send_once(chat, event.id, &outbound).await?;
        }
        Ok(())
    }

    async fn alert(&self, event: &WireEvent) -> Result<(), Failure> {
        let Some(outbound) = render::alert(&event.kind, &event.data) else { return Ok(()) };
        for link in self.operator_links_since(event).await? {
            self.send_once(&link.chat_id, event.id, &outbound).await?;
        }
        Ok(())
    }

    /// The users linked as the operator when `event` happened: a new link
    /// is not sent the approvals and alerts of before.
    async fn operator_links_since(&self, event: &WireEvent) -> Result<Vec<BridgeLinkRecord>, Error> {
        let at = at_ms(&event.created_at).unwrap_or(i64::MIN);
        let links = self.gateway.operator_links(self.name()).await?;
        Ok(links.into_iter().filter(|l| l.linked_at_ms <= at).collect())
    }

    /// Sends an operator's message of an event once per chat, though the
    /// outbox may publish the event again: recorded as a post of the
    /// chat's own pseudo-room.
    async fn send_once(&self, chat: &str, event_id: i64, outbound: &Outbound) -> Result<(), Failure> {
        let room_id = format!("@operator:{chat}");
        if self.gateway.bridge_post(self.name(), &room_id, event_id).await?.is_some() {
            return Ok(());
        }
        let external_id = self.messenger.send(chat, outbound).await?;
        let post = BridgePostRecord {
            messenger: self.name().to_owned(),
            room_id,
            message_id: event_id,
            chat_id: chat.to_owned(),
            external_id,
            payment_hash: None,
        };
        self.gateway.record_bridge_post(post).await?;
        Ok(())
    }
}

impl Bus for Bridge {
    fn name(&self) -> &'static str {
        match self.messenger.name() {
            "telegram" => "bridge.telegram",
            "matrix" => "bridge.matrix",
            _ => "bridge",
        }
    }

    fn publish<'a>(&'a self, events: &'a [WireEvent]) -> BusFuture<'a> {
        Box::pin(async move {
            for event in events {
                self.publish_one(event).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

enum Failure {
    Messenger(BridgeError),
    Store(Error),
}

impl From<BridgeError> for Failure {
    fn from(e: BridgeError) -> Failure {
        Failure::Messenger(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Store(e)
    }
}

/// The idempotency key of a press: its messenger and id, hashed into the
/// characters idempotency keys take.
fn press_key(messenger: &str, press_id: &str) -> String {
    let digest = Sha256::new().chain_update(messenger).chain_update([0]).chain_update(press_id).finalize();
    format!("bridge-{}", hex::encode(&digest[..16]))
}

/// An error as a chat shows it: what was refused and why (the rule's
/// reason, for a payment the constitution refused).
fn problem_text(e: &Error) -> String {
    match e {
        Error::Denied(denial) => format!("Refused ({}): {}", denial.code, denial.message),
        Error::Forbidden(why) => (*why).to_owned(),
        other => format!("Not done: {other}"),
    }
}

/// A wire timestamp (RFC 3339) in ms since the epoch.
fn at_ms(timestamp: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(timestamp).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_key_is_a_valid_idempotency_key_per_messenger() {
        let key = press_key("matrix", "$event:example.org");
        assert!(key.len() <= crate::gateway::IDEMPOTENCY_KEY_LEN_MAX_BYTES);
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(key, press_key("telegram", "$event:example.org"));
        assert_eq!(key, press_key("matrix", "$event:example.org"));
    }
}
