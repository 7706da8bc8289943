//! What the bridges to messengers ask of the gateway: link codes and the
//! users they link, rooms bridged to chats, the posts a bridge made, and the
//! key a linked user acts under. The messengers themselves are an edge
//! (`crate::bridge`).

use super::signing::{actor, key_audit};
use super::*;
use crate::limits::{BRIDGE_LINKS_PER_AGENT_MAX, LINK_CODES_PER_AGENT_MAX, Limit};
use crate::model::{BridgeLinkRecord, BridgePostRecord, LinkCodeRecord, RoomBridgeRecord, bridge_key_id};

/// How long a link code may be used: minutes, for a person who has it on
/// one screen and the messenger on another.
pub const LINK_CODE_TTL_MS: i64 = 10 * 60_000;
/// The messengers a room can be bridged to.
pub const MESSENGERS: [&str; 2] = ["telegram", "matrix"];
/// Characters of a link code: 10 of 32 symbols, 50 bits. A guess is tried
/// at the rate of the guesser's messenger user, against codes that live
/// minutes.
const LINK_CODE_CHARS: usize = 10;
/// Crockford's base 32: no I, L, O or U to misread.
const LINK_CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// The most bytes of a messenger's user or chat id, and of a user's name.
const MESSENGER_ID_LEN_MAX_BYTES: usize = 256;

/// A link code, shown once.
pub struct LinkCode {
    pub code: String,
    pub expires_at_ms: i64,
}

/// Who a messenger user is to the gateway.
pub struct MessengerUser<'a> {
    pub messenger: &'a str,
    pub user_id: &'a str,
    pub user_name: &'a str,
    pub chat_id: &'a str,
}

impl Gateway {
    /// A single-use code that links a messenger user to an agent (`agent_id`)
    /// or, from the operator with `None`, to the operator. Linking lets the
    /// user spend as the agent, so it takes what managing the agent's keys
    /// takes.
    pub async fn create_link_code(&self, caller: &Principal, agent_id: Option<&str>) -> Result<LinkCode, Error> {
        let owner = match agent_id {
            Some(agent_id) => {
                self.self_or_managed(caller, agent_id, Scope::Spend).await?;
                agent_id.to_owned()
            }
            None if matches!(caller, Principal::Operator) => OPERATOR.to_owned(),
            None => return Err(Error::Forbidden("only the operator links a user as the operator")),
        };
        let code = new_link_code();
        let now_ms = self.now_ms();
        let record = LinkCodeRecord {
            digest: link_code_digest(&code),
            agent_id: owner,
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(LINK_CODE_TTL_MS),
        };
        let expires_at_ms = record.expires_at_ms;
        self.store
            .write(move |tx| {
                if tx.live_link_codes(&record.agent_id, now_ms)? >= LINK_CODES_PER_AGENT_MAX {
                    let detail = format!("at most {LINK_CODES_PER_AGENT_MAX} link codes wait at once; use one");
                    let retry_after_secs = u64::try_from(LINK_CODE_TTL_MS / 1_000).unwrap_or(600);
                    return Err(Error::limit(Limit::LinkCodesPerAgent, retry_after_secs, detail));
                }
                tx.insert_link_code(&record)
            })
            .await?;
        Ok(LinkCode { code, expires_at_ms })
    }

    /// Links a messenger user with a code (used up, whatever the outcome
    /// after it is found). A wrong or expired code links nothing.
    pub async fn link_messenger_user(&self, user: &MessengerUser<'_>, code: &str) -> Result<BridgeLinkRecord, Error> {
        check_messenger(user.messenger)?;
        for (field, value) in [("user_id", user.user_id), ("chat_id", user.chat_id)] {
            check_id(field, value)?;
        }
        // Each guess costs the guesser a write of its rate.
        let guesser = bridge_key_id(user.messenger, user.user_id);
        self.throttle.admit_write(&self.settings.limits, &guesser, &guesser)?;
        let digest = link_code_digest(&code.trim().to_ascii_uppercase());
        let now_ms = self.now_ms();
        let user_name: String = user.user_name.chars().take(MESSENGER_ID_LEN_MAX_BYTES / 4).collect();
        let (messenger, user_id, chat_id) =
            (user.messenger.to_owned(), user.user_id.to_owned(), user.chat_id.to_owned());
        self.store
            .write(move |tx| {
                let code = tx.take_link_code(&digest, now_ms)?.ok_or(Error::NotFound("link code"))?;
                let linked = tx.bridge_links_of(&code.agent_id, BRIDGE_LINKS_PER_AGENT_MAX + 1)?;
                let relinked = linked.iter().any(|l| l.messenger == messenger && l.user_id == user_id);
                if !relinked && linked.len() >= BRIDGE_LINKS_PER_AGENT_MAX as usize {
                    let detail = format!("at most {BRIDGE_LINKS_PER_AGENT_MAX} messenger users link to one agent");
                    return Err(Error::limit_final(Limit::BridgeLinksPerAgent, detail));
                }
                let link = BridgeLinkRecord {
                    messenger: messenger.clone(),
                    user_id: user_id.clone(),
                    user_name: user_name.clone(),
                    agent_id: code.agent_id.clone(),
                    chat_id: chat_id.clone(),
                    linked_at_ms: now_ms,
                };
                tx.put_bridge_link(&link)?;
                let mut entry =
                    key_audit("bridge.linked", &link.agent_id, &link.key_id(), link.agent_id.clone(), now_ms);
                entry.detail = Some(format!("{} user {}", link.messenger, link.user_name));
                tx.audit(&entry)?;
                Ok(link)
            })
            .await
    }

    /// Unlinks a messenger user, from the messenger (`/unlink`): whether
    /// the user was linked.
    pub async fn unlink_messenger_user(&self, messenger: &str, user_id: &str) -> Result<bool, Error> {
        self.delete_link(messenger, user_id, None, None).await
    }

    /// An agent's linked messenger users (or the operator's, `None`, for
    /// the operator).
    pub async fn bridge_links(
        &self,
        caller: &Principal,
        agent_id: Option<&str>,
    ) -> Result<Vec<BridgeLinkRecord>, Error> {
        let owner = self.link_owner(caller, agent_id, Scope::Read).await?;
        self.store.read(move |tx| tx.bridge_links_of(&owner, BRIDGE_LINKS_PER_AGENT_MAX)).await
    }

    /// Unlinks a user from the gateway's side.
    pub async fn remove_bridge_link(
        &self,
        caller: &Principal,
        agent_id: Option<&str>,
        messenger: &str,
        user_id: &str,
    ) -> Result<(), Error> {
        let owner = self.link_owner(caller, agent_id, Scope::Spend).await?;
        if !self.delete_link(messenger, user_id, Some(owner), Some(actor(caller))).await? {
            return Err(Error::NotFound("linked user"));
        }
        Ok(())
    }

    async fn link_owner(&self, caller: &Principal, agent_id: Option<&str>, needed: Scope) -> Result<String, Error> {
        match agent_id {
            Some(agent_id) => {
                self.self_or_managed(caller, agent_id, needed).await?;
                Ok(agent_id.to_owned())
            }
            None if matches!(caller, Principal::Operator) => Ok(OPERATOR.to_owned()),
            None => Err(Error::Forbidden("only the operator sees the operator's linked users")),
        }
    }

    async fn delete_link(
        &self,
        messenger: &str,
        user_id: &str,
        owner: Option<String>,
        actor: Option<String>,
    ) -> Result<bool, Error> {
        let (messenger, user_id, now_ms) = (messenger.to_owned(), user_id.to_owned(), self.now_ms());
        self.store
            .write(move |tx| {
                let Some(link) = tx.bridge_link(&messenger, &user_id)? else { return Ok(false) };
                if owner.as_ref().is_some_and(|o| *o != link.agent_id)
                    || !tx.delete_bridge_link(&messenger, &user_id, owner.as_deref())?
                {
                    return Ok(false);
                }
                let actor = actor.clone().unwrap_or_else(|| link.key_id());
                tx.audit(&key_audit("bridge.unlinked", &link.agent_id, &link.key_id(), actor, now_ms))?;
                Ok(true)
            })
            .await
    }

    /// The link of a messenger user, if linked.
    pub async fn bridge_link_of(&self, messenger: &str, user_id: &str) -> Result<Option<BridgeLinkRecord>, Error> {
        let (messenger, user_id) = (messenger.to_owned(), user_id.to_owned());
        self.store.read(move |tx| tx.bridge_link(&messenger, &user_id)).await
    }

    /// The key a linked user acts under: the agent's, with the messenger
    /// and user as its id (so the audit chain names them), spending as the
    /// agent's constitution allows. `None` for the operator's users.
    pub async fn bridge_key(&self, link: &BridgeLinkRecord) -> Result<Option<AgentKey>, Error> {
        if link.agent_id == OPERATOR {
            return Ok(None);
        }
        let agent = self.agent(&link.agent_id).await?;
        Ok(Some(AgentKey {
            key_id: link.key_id(),
            agent_id: agent.id,
            account: agent.account,
            scope: Scope::Spend,
            expires_at_ms: None,
        }))
    }

    /// Bridges a room to a chat of a messenger (the operator's bot is in
    /// it); a room has one chat per messenger, a chat one room.
    pub async fn bridge_room(
        &self,
        caller: &Principal,
        room_id: &str,
        messenger: &str,
        chat_id: &str,
    ) -> Result<RoomBridgeRecord, Error> {
        require_operator(caller)?;
        check_messenger(messenger)?;
        check_id("chat_id", chat_id)?;
        let room = self.room_for(caller, room_id).await?;
        let bridge = RoomBridgeRecord {
            room_id: room.id,
            messenger: messenger.to_owned(),
            chat_id: chat_id.to_owned(),
            created_at_ms: self.now_ms(),
        };
        let stored = bridge.clone();
        self.store
            .write(move |tx| {
                tx.put_room_bridge(&stored)?;
                let mut entry =
                    key_audit("room.bridged", OPERATOR, &stored.room_id, OPERATOR.to_owned(), stored.created_at_ms);
                entry.agent_id = None;
                entry.detail = Some(format!("{} chat {}", stored.messenger, stored.chat_id));
                tx.audit(&entry)
            })
            .await?;
        Ok(bridge)
    }

    /// Ends a room's bridge to a messenger.
    pub async fn unbridge_room(&self, caller: &Principal, room_id: &str, messenger: &str) -> Result<(), Error> {
        require_operator(caller)?;
        check_messenger(messenger)?;
        let (room_id, messenger) = (room_id.to_owned(), messenger.to_owned());
        if !self.store.write(move |tx| tx.delete_room_bridge(&room_id, &messenger)).await? {
            return Err(Error::NotFound("bridge"));
        }
        Ok(())
    }

    /// A room's bridges, for its members and the operator.
    pub async fn room_bridges(&self, caller: &Principal, room_id: &str) -> Result<Vec<RoomBridgeRecord>, Error> {
        let room = self.room_for(caller, room_id).await?;
        self.store.read(move |tx| tx.room_bridges(&room.id)).await
    }

    /// The room a chat is bridged to, if any.
    pub async fn bridged_room(&self, messenger: &str, chat_id: &str) -> Result<Option<RoomBridgeRecord>, Error> {
        let (messenger, chat_id) = (messenger.to_owned(), chat_id.to_owned());
        self.store.read(move |tx| tx.room_bridge_of_chat(&messenger, &chat_id)).await
    }

    /// Records a bridge's post of a room's message: `false` if it was
    /// recorded before (the message is not posted again).
    pub async fn record_bridge_post(&self, post: BridgePostRecord) -> Result<bool, Error> {
        self.store.write(move |tx| tx.insert_bridge_post(&post)).await
    }

    pub async fn bridge_post(
        &self,
        messenger: &str,
        room_id: &str,
        message_id: i64,
    ) -> Result<Option<BridgePostRecord>, Error> {
        let (messenger, room_id) = (messenger.to_owned(), room_id.to_owned());
        self.store.read(move |tx| tx.bridge_post(&messenger, &room_id, message_id)).await
    }

    pub async fn bridge_post_by_external(
        &self,
        messenger: &str,
        chat_id: &str,
        external_id: &str,
    ) -> Result<Option<BridgePostRecord>, Error> {
        let (messenger, chat_id, external_id) = (messenger.to_owned(), chat_id.to_owned(), external_id.to_owned());
        self.store.read(move |tx| tx.bridge_post_by_external(&messenger, &chat_id, &external_id)).await
    }

    /// The cards of a payment request on every bridge.
    pub async fn bridge_posts_of_hash(&self, payment_hash: [u8; 32]) -> Result<Vec<BridgePostRecord>, Error> {
        self.store.read(move |tx| tx.bridge_posts_of_hash(&payment_hash)).await
    }

    /// The users linked as the operator, on one messenger: where approvals
    /// and alerts go.
    pub async fn operator_links(&self, messenger: &str) -> Result<Vec<BridgeLinkRecord>, Error> {
        let links = self.store.read(|tx| tx.bridge_links_of(OPERATOR, BRIDGE_LINKS_PER_AGENT_MAX)).await?;
        Ok(links.into_iter().filter(|l| l.messenger == messenger).collect())
    }

    /// A room's message as the wire shows it to the operator (the bridge
    /// is the operator's bot), with its card as it now stands.
    pub async fn bridge_message(
        &self,
        room_id: &str,
        message_id: i64,
    ) -> Result<Option<coffer_client::Message>, Error> {
        let now_ms = self.now_ms();
        Ok(self.message(room_id, message_id).await?.map(|m| {
            crate::model::views::message(m.message, m.waiting.as_ref(), crate::model::card::Viewer::Operator, now_ms)
        }))
    }

    pub async fn bridge_cursor(&self, messenger: &str) -> Result<Option<String>, Error> {
        let messenger = messenger.to_owned();
        self.store.read(move |tx| tx.bridge_cursor(&messenger)).await
    }

    pub async fn set_bridge_cursor(&self, messenger: &str, cursor: &str) -> Result<(), Error> {
        let (messenger, cursor) = (messenger.to_owned(), cursor.to_owned());
        self.store.write(move |tx| tx.set_bridge_cursor(&messenger, &cursor)).await
    }

    /// A held payment, for its approval prompt.
    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        let id = id.to_owned();
        self.store.read(move |tx| tx.approval(&id)).await
    }

    /// A tag that binds a button's data to what it acts on (the card or the
    /// approval, and the chat): data from another card or chat does not
    /// verify. Keyed by a secret derived from the node key, so the same on
    /// every instance.
    pub fn bridge_tag(&self, text: &str) -> [u8; 12] {
        use hmac::{Hmac, Mac};
        let key = self.node.derive_key(b"bridge/button/v1");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(text.as_bytes());
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut tag = [0u8; 12];
        tag.copy_from_slice(&full[..12]);
        tag
    }
}

fn require_operator(caller: &Principal) -> Result<(), Error> {
    match caller {
        Principal::Operator => Ok(()),
        Principal::Agent(_) => Err(Error::Forbidden("only the operator bridges rooms to messengers")),
    }
}

fn check_messenger(messenger: &str) -> Result<(), Error> {
    if MESSENGERS.contains(&messenger) {
        return Ok(());
    }
    Err(invalid("messenger", format!("one of {}", MESSENGERS.join(", "))))
}

fn check_id(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > MESSENGER_ID_LEN_MAX_BYTES || value.chars().any(char::is_control) {
        return Err(invalid(field, format!("1 to {MESSENGER_ID_LEN_MAX_BYTES} bytes, no control characters")));
    }
    Ok(())
}

fn new_link_code() -> String {
    let bytes = secrets::random_bytes::<LINK_CODE_CHARS>();
    // 256 is a multiple of 32: every symbol equally likely.
    bytes.iter().map(|b| char::from(LINK_CODE_ALPHABET[usize::from(*b) % LINK_CODE_ALPHABET.len()])).collect()
}

fn link_code_digest(code: &str) -> [u8; 32] {
    Sha256::new().chain_update(b"coffer/link-code\0").chain_update(code.as_bytes()).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_codes_are_unambiguous_and_fresh() {
        let (a, b) = (new_link_code(), new_link_code());
        assert_eq!(a.len(), LINK_CODE_CHARS);
        assert!(a.bytes().all(|c| LINK_CODE_ALPHABET.contains(&c)));
        assert_ne!(a, b);
        assert_ne!(link_code_digest(&a), link_code_digest(&b));
    }

    #[test]
    fn ids_are_bounded_and_printable() {
        assert!(check_id("chat_id", "-1001234").is_ok());
        assert!(check_id("chat_id", "").is_err());
        assert!(check_id("chat_id", "a\nb").is_err());
        assert!(check_id("chat_id", &"x".repeat(MESSENGER_ID_LEN_MAX_BYTES + 1)).is_err());
        assert!(check_messenger("telegram").is_ok() && check_messenger("discord").is_err());
    }
}
