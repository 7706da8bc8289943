//! The Matrix bridge at work (issue 23): a real `coffer serve` runs its
//! bridge as a bot of the Synapse that `.ci/run` starts, its users driven
//! through matrix-nio (`tests/common/matrix.rs`). What the tests look at is
//! what people see in the Matrix room (the cards, with their edits
//! applied, the QR image, the bot's replies and notices) and what the
//! gateway did (balances, payments, the audit chain).
//!
//! Covered: linking with a code, a card from `!request` and from an agent
//! over HTTP, paying by `!pay` in reply to a card and by a reaction on it,
//! an unlinked user paying nothing, the same `!pay` delivered twice (the
//! sync cursor put back across a restart) paying once, and the audit chain
//! naming the Matrix user as the key that paid.

mod common;

use common::matrix::{self, Homeserver, MatrixUser, Seen};
use common::{Gateway, send};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const SAT: u64 = 1_000;
const FUND: u64 = 100 * SAT;
/// How long a step the bot takes (a sync, a send) may take to show.
const WAIT: Duration = Duration::from_secs(30);
/// After a SIGKILL, the new process takes the bridge's leases over once
/// the killed one's lapse (10 s); then it reads and answers.
const RESTART_WAIT: Duration = Duration::from_secs(60);

/// A gateway whose Matrix bot is in a room bridged to a coffer room with a
/// seller and a funded buyer: Alice (linked to the seller), Bob (linked to
/// the buyer) and Eve (not linked) are in the Matrix room.
struct Bridged {
    gw: Gateway,
    bot: MatrixUser,
    alice: MatrixUser,
    bob: MatrixUser,
    eve: MatrixUser,
    /// The Matrix room.
    chat: String,
    seller: String,
    seller_key: String,
    buyer: String,
    buyer_key: String,
    /// The coffer room.
    room: String,
}

impl Bridged {
    async fn start(what: &str) -> Option<Bridged> {
        let hs = matrix::homeserver(what)?;
        let (bot, alice, bob, eve) = tokio::join!(
            hs.register("coffer-bot", "coffer"),
            hs.register("alice", "Alice"),
            hs.register("bob", "Bob"),
            hs.register("eve", "Eve"),
        );
        let gw = Gateway::start_with_env(&[
            ("COFFER_MATRIX_HOMESERVER", &hs.url),
            ("COFFER_MATRIX_USER", &bot.user_id),
            ("COFFER_MATRIX_ACCESS_TOKEN", &bot.access_token),
        ])
        .await;
        let (seller, _, seller_key) = gw.new_agent("seller", 0).await;
        let (buyer, _, buyer_key) = gw.new_agent("buyer", FUND).await;
        let room = gw.create_room(&seller_key, "market", &[&buyer]).await.id;

        // Alice makes the Matrix room; the bot joins it once a sync shows
        // the invitation (what is said before is not the bridge's).
        let chat = alice.create_room(&[&bot.user_id, &bob.user_id, &eve.user_id]).await;
        tokio::join!(bob.join(&chat), eve.join(&chat));
        wait_joined(&hs, &alice, &chat, &bot.user_id).await;

        let put = gw.request(Method::PUT, &format!("/v1/rooms/{room}/bridges/matrix"), Some(gw.operator_token()));
        let r = send(put.json(&json!({"room_id": chat}))).await;
        assert_eq!(r.status, 200, "bridging the room: {r:?}");
        assert_eq!((r.json["messenger"].as_str(), r.json["chat_id"].as_str()), (Some("matrix"), Some(chat.as_str())));

        let b = Bridged { gw, bot, alice, bob, eve, chat, seller, seller_key, buyer, buyer_key, room };
        b.link(&b.alice, &b.seller, &b.seller_key).await;
        b.link(&b.bob, &b.buyer, &b.buyer_key).await;
        Some(b)
    }

    /// Links a Matrix user to an agent: a code from the agent's key, sent
    /// as `!link CODE` in the room; waits for the bot's confirmation.
    async fn link(&self, user: &MatrixUser, agent: &str, key: &str) {
        let made = send(self.gw.request(Method::POST, &format!("/v1/agents/{agent}/link-codes"), Some(key))).await;
        assert_eq!(made.status, 201, "{made:?}");
        let code = made.json["code"].as_str().expect("a code").to_owned();
        assert!(made.json["expires_at"].is_string(), "{made:?}");
        let sent = user.send(&self.chat, &format!("!link {code}"), None).await;
        let linked = format!("Linked: you act as {agent} here. /unlink to stop.");
        self.bot_reply_after(user, &sent, |s| s.body.as_deref() == Some(linked.as_str())).await;
    }

    /// The first message of the bot after the event `after` that `found`
    /// accepts, as `viewer` reads the room.
    async fn bot_reply_after(&self, viewer: &MatrixUser, after: &str, found: impl Fn(&Seen) -> bool) -> Seen {
        viewer
            .wait_for(&self.chat, WAIT, |seen| {
                let at = seen.iter().position(|s| s.event_id == after)?;
                seen[at + 1..].iter().find(|s| s.sender == self.bot.user_id && found(s)).cloned()
            })
            .await
    }

    /// The card of the request with `memo` as `viewer` reads it (edits
    /// applied), and the bot's image after it.
    async fn card(&self, viewer: &MatrixUser, memo: &str) -> (Seen, Seen) {
        viewer.wait_for(&self.chat, WAIT, |seen| card_in(seen, &self.bot.user_id, memo)).await
    }

    /// Waits until the card of `memo`, as Alice and Bob read it, is edited
    /// to paid; answers Bob's view.
    async fn card_paid(&self, memo: &str) -> Seen {
        let mut last = None;
        for viewer in [&self.alice, &self.bob] {
            let card = viewer
                .wait_for(&self.chat, WAIT, |seen| {
                    card_in(seen, &self.bot.user_id, memo).map(|(c, _)| c).filter(|c| c.edited)
                })
                .await;
            let body = card.body.clone().unwrap_or_default();
            assert!(body.contains("Status: paid"), "{body}");
            assert!(body.contains("Paid by "), "{body}");
            assert!(body.contains("Preimage (proof of payment): "), "{body}");
            assert!(!body.contains("lnbc"), "a paid card shows no invoice to pay: {body}");
            assert_eq!(card.msgtype.as_deref(), Some("m.text"));
            last = Some(card);
        }
        last.expect("a viewer")
    }

    /// Bob asks for his balance and waits for the answer: every event of
    /// his before it is then handled.
    async fn balance_round_trip(&self) -> String {
        let asked = self.bob.send(&self.chat, "!balance", None).await;
        let answer = self
            .bot_reply_after(&self.bob, &asked, |s| s.body.as_deref().is_some_and(|b| b.contains(" available")))
            .await;
        answer.body.expect("a body")
    }

    /// Posts a payment request as the seller over HTTP: the coffer message.
    async fn http_request(&self, amount_msat: u64, memo: &str) -> coffer_client::Message {
        self.gw.post_request(&self.seller_key, &self.room, amount_msat, memo, None).await
    }

    async fn balances(&self) -> (u64, u64) {
        let b = self.gw.balances().await;
        (b[&self.seller], b[&self.buyer])
    }

    async fn buyer_payments(&self) -> usize {
        self.gw.payment_count(&self.gw.client(&self.buyer_key)).await
    }
}

/// The card with `memo` among the events, and the bot's image after it.
fn card_in(seen: &[Seen], bot: &str, memo: &str) -> Option<(Seen, Seen)> {
    let title = format!(" for {memo}\n");
    let at = seen.iter().position(|s| {
        s.sender == bot && s.body.as_deref().is_some_and(|b| b.starts_with('⚡') && b.contains(&title))
    })?;
    let image = seen[at + 1..].iter().find(|s| s.sender == bot && s.msgtype.as_deref() == Some("m.image"))?;
    Some((seen[at].clone(), image.clone()))
}

/// Waits until `user` is joined to the room, as `member` reads its members.
async fn wait_joined(hs: &Homeserver, member: &MatrixUser, room: &str, user: &str) {
    let url = format!("{}/_matrix/client/v3/rooms/{}/joined_members", hs.url, encode(room));
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = http.get(&url).bearer_auth(&member.access_token).send().await.expect("asking for the members");
        let joined: serde_json::Value = answer.json().await.expect("the members");
        if joined["joined"].get(user).is_some() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{user} did not join {room} within {WAIT:?}: {joined}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The image an `m.image` points at, downloaded as `user` (authenticated
/// media).
async fn download(hs_user: &MatrixUser, mxc: &str) -> Vec<u8> {
    let (server, id) = mxc.strip_prefix("mxc://").and_then(|r| r.split_once('/')).expect("an mxc URL");
    let url = format!("{}/_matrix/client/v1/media/download/{}/{}", hs_user.hs.url, encode(server), encode(id));
    let answer = reqwest::Client::new().get(&url).bearer_auth(&hs_user.access_token).send().await.expect("downloading");
    assert_eq!(answer.status(), 200, "downloading {mxc}");
    answer.bytes().await.expect("the image").to_vec()
}

/// Asserts that `image` is the QR code of `bolt11`, at some scale.
fn assert_qr_of(image: &[u8], bolt11: &str) {
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let matches = (1..=32).any(|scale| coffer::http::qr::png(bolt11, scale).is_ok_and(|png| png == image));
    assert!(matches, "the image is not the QR code of {bolt11}");
}

/// The bridge's sync cursor, as stored (`meta`, `bridge_cursor.matrix`).
fn stored_cursor(gw: &Gateway) -> Option<String> {
    if let Some(db) = gw.database() {
        let rows = db.query("SELECT convert_from(value, 'UTF8') FROM meta WHERE key = $1", &["bridge_cursor.matrix"]);
        return rows.into_iter().next().and_then(|mut r| r.pop().flatten());
    }
    let conn = rusqlite::Connection::open_with_flags(gw.db_path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opening the database read-only");
    conn.busy_timeout(Duration::from_secs(10)).expect("a busy timeout");
    let value: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = 'bridge_cursor.matrix'", [], |r| r.get(0)).ok();
    value.map(|v| String::from_utf8(v).expect("a UTF-8 cursor"))
}

/// Puts a cursor back into the store of a stopped gateway.
fn put_cursor(gw: &Gateway, cursor: &str) {
    if let Some(db) = gw.database() {
        db.query("UPDATE meta SET value = convert_to($1, 'UTF8') WHERE key = $2", &[cursor, "bridge_cursor.matrix"]);
        assert_eq!(stored_cursor(gw).as_deref(), Some(cursor));
        return;
    }
    let conn = rusqlite::Connection::open(gw.db_path()).expect("opening the database");
    let changed = conn
        .execute("UPDATE meta SET value = ?1 WHERE key = 'bridge_cursor.matrix'", [cursor.as_bytes()])
        .expect("putting the cursor back");
    assert_eq!(changed, 1);
}

/// Waits until the stored cursor is no longer `old`, and reads the same
/// twice in a row (the bot is between batches).
async fn cursor_settled_past(gw: &Gateway, old: Option<&str>, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = None;
    loop {
        let now = stored_cursor(gw);
        if let Some(cursor) = now.as_deref().filter(|c| Some(*c) != old && last.as_deref() == Some(*c)) {
            return cursor.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "the cursor did not move past {old:?}: {now:?}");
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_linked_user_pays_a_card_by_replying_pay() {
    let Some(b) = Bridged::start("the Matrix bridge: link, request, !pay").await else { return };

    // Alice, linked to the seller, asks in the room; the bot says so, and
    // the card comes through the coffer room with its QR code.
    let asked = b.alice.send(&b.chat, "!request 15 the route to Lyon", None).await;
    b.bot_reply_after(&b.alice, &asked, |s| s.body.as_deref() == Some("Requested 15 sat for the route to Lyon.")).await;
    let (card, image) = b.card(&b.bob, "the route to Lyon").await;
    let requests: Vec<_> =
        b.gw.all_messages(&b.buyer_key, &b.room).await.into_iter().filter(|m| m.invoice.is_some()).collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let invoice = requests[0].invoice.as_ref().expect("an invoice");
    assert_eq!(requests[0].sender, b.seller);
    assert_eq!(invoice.amount_msat, 15 * SAT);
    let body = card.body.clone().unwrap_or_default();
    assert!(body.starts_with(&format!("⚡ {} asks 15 sat for the route to Lyon\n", b.seller)), "{body}");
    assert!(body.contains("Status: open"), "{body}");
    assert!(body.contains("!pay"), "the card says how to pay by replying: {body}");
    assert!(body.contains(&invoice.bolt11), "{body}");
    assert!(!card.edited);
    let mxc = image.url.clone().expect("the image's mxc URL");
    assert_eq!(image.info.as_ref().map(|i| i["mimetype"].clone()), Some(json!("image/png")));
    assert_qr_of(&download(&b.bob, &mxc).await, &invoice.bolt11);

    // Bob, linked to the buyer, replies !pay to the card: paid, once.
    let pay = b.bob.send(&b.chat, "!pay", Some(&card.event_id)).await;
    b.bot_reply_after(&b.bob, &pay, |s| s.body.as_deref() == Some("Paid 15 sat.")).await;
    assert_eq!(b.balances().await, (15 * SAT, FUND - 15 * SAT));
    assert_eq!(b.buyer_payments().await, 1);
    let paid = b.card_paid("the route to Lyon").await;
    assert_eq!(paid.event_id, card.event_id, "the card is edited in place");
    let stored = b.gw.message(&b.buyer_key, &b.room, requests[0].id).await;
    assert_eq!(stored.invoice.as_ref().map(|i| i.state.as_str()), Some("paid"));
    assert!(paid.body.as_deref().is_some_and(|t| t.contains(&format!("Paid by {}", b.buyer))), "{paid:?}");

    // A second !pay of the paid card pays nothing more.
    let again = b.bob.send(&b.chat, "!pay", Some(&card.event_id)).await;
    let answer = b.bot_reply_after(&b.bob, &again, |_| true).await;
    assert_ne!(answer.body.as_deref(), Some("Paid 15 sat."), "{answer:?}");
    assert_eq!(b.balances().await, (15 * SAT, FUND - 15 * SAT));
    assert_eq!(b.buyer_payments().await, 1);
    assert!(b.balance_round_trip().await.contains("85 sat available"));
}

#[tokio::test]
async fn a_reaction_on_a_card_pays_it() {
    let Some(b) = Bridged::start("the Matrix bridge: a reaction pays").await else { return };
    // A first card, paid by !pay; the second, posted by the seller agent
    // over HTTP, paid by a reaction.
    b.http_request(5 * SAT, "first").await;
    let (first, _) = b.card(&b.bob, "first").await;
    let pay = b.bob.send(&b.chat, "!pay", Some(&first.event_id)).await;
    b.bot_reply_after(&b.bob, &pay, |s| s.body.as_deref() == Some("Paid 5 sat.")).await;

    let posted = b.http_request(7 * SAT, "second").await;
    let (second, image) = b.card(&b.bob, "second").await;
    let bolt11 = posted.invoice.as_ref().expect("an invoice").bolt11.clone();
    assert!(second.body.as_deref().is_some_and(|t| t.contains(&bolt11)), "{second:?}");
    assert_qr_of(&download(&b.bob, image.url.as_deref().expect("an mxc URL")).await, &bolt11);

    let reaction = b.bob.react(&b.chat, &second.event_id, "⚡").await;
    // The bot answers the reaction with a notice in reply to the card.
    let notice = b.bot_reply_after(&b.bob, &reaction, |s| s.msgtype.as_deref() == Some("m.notice")).await;
    assert_eq!(notice.body.as_deref(), Some("Paid 7 sat."), "{notice:?}");
    assert_eq!(notice.reply_to.as_deref(), Some(second.event_id.as_str()));
    assert_eq!(b.balances().await, (12 * SAT, FUND - 12 * SAT));
    assert_eq!(b.buyer_payments().await, 2);
    let paid = b.card_paid("second").await;
    assert_eq!(paid.event_id, second.event_id);
    let stored = b.gw.message(&b.buyer_key, &b.room, posted.id).await;
    assert_eq!(stored.invoice.as_ref().map(|i| i.state.as_str()), Some("paid"));

    // Another reaction on the paid card (Alice's, the payee's own) pays
    // nothing.
    let again = b.alice.react(&b.chat, &second.event_id, "👍").await;
    let notice = b.bot_reply_after(&b.alice, &again, |s| s.msgtype.as_deref() == Some("m.notice")).await;
    assert_ne!(notice.body.as_deref(), Some("Paid 7 sat."), "{notice:?}");
    assert_eq!(b.balances().await, (12 * SAT, FUND - 12 * SAT));
    assert_eq!(b.buyer_payments().await, 2);
}

#[tokio::test]
async fn an_unlinked_users_pay_pays_nothing_and_says_how_to_link() {
    let Some(b) = Bridged::start("the Matrix bridge: unlinked users").await else { return };
    b.http_request(9 * SAT, "for eve").await;
    let (card, _) = b.card(&b.eve, "for eve").await;

    let pay = b.eve.send(&b.chat, "!pay", Some(&card.event_id)).await;
    let answer = b.bot_reply_after(&b.eve, &pay, |_| true).await;
    let told = answer.body.unwrap_or_default();
    assert!(told.contains("not linked") && told.contains("nothing was paid"), "{told}");
    assert!(told.contains("/link CODE"), "{told}");

    let reaction = b.eve.react(&b.chat, &card.event_id, "⚡").await;
    let notice = b.bot_reply_after(&b.eve, &reaction, |s| s.msgtype.as_deref() == Some("m.notice")).await;
    assert!(notice.body.as_deref().is_some_and(|t| t.contains("/link CODE")), "{notice:?}");
    assert_eq!(notice.reply_to.as_deref(), Some(card.event_id.as_str()));

    // Eve's !balance is refused too; nothing moved, the card stays open.
    let asked = b.eve.send(&b.chat, "!balance", None).await;
    let answer = b.bot_reply_after(&b.eve, &asked, |_| true).await;
    assert!(answer.body.as_deref().is_some_and(|t| t.contains("not linked")), "{answer:?}");
    assert_eq!(b.balances().await, (0, FUND));
    assert_eq!(b.buyer_payments().await, 0);
    let (card, _) = b.card(&b.bob, "for eve").await;
    assert!(!card.edited, "{card:?}");
    assert!(card.body.as_deref().is_some_and(|t| t.contains("Status: open")), "{card:?}");
    let allowed = b.gw.audit_all("action=payment.allowed").await;
    assert!(allowed.is_empty(), "{allowed:?}");
}

#[tokio::test]
async fn the_same_pay_delivered_twice_pays_once() {
    let Some(mut b) = Bridged::start("the Matrix bridge: a double delivery").await else { return };
    b.http_request(15 * SAT, "twice").await;
    let (card, _) = b.card(&b.bob, "twice").await;
    // Everything before is handled: the cursor recorded now is before the
    // !pay.
    b.balance_round_trip().await;
    let before = cursor_settled_past(&b.gw, None, WAIT).await;

    let pay = b.bob.send(&b.chat, "!pay", Some(&card.event_id)).await;
    b.bot_reply_after(&b.bob, &pay, |s| s.body.as_deref() == Some("Paid 15 sat.")).await;
    b.card_paid("twice").await;
    cursor_settled_past(&b.gw, Some(&before), WAIT).await;
    assert_eq!(b.balances().await, (15 * SAT, FUND - 15 * SAT));
    assert_eq!(b.buyer_payments().await, 1);
    // What the bot said after the !pay (the card's edit is not a message).
    let answers = |seen: &[Seen]| -> Vec<String> {
        let at = seen.iter().position(|s| s.event_id == pay).expect("the !pay");
        seen[at + 1..].iter().filter(|s| s.sender == b.bot.user_id).filter_map(|s| s.body.clone()).collect()
    };
    assert_eq!(answers(&b.bob.messages(&b.chat).await), ["Paid 15 sat."]);

    // Stopped, the cursor put back before the !pay, started again: the
    // bot reads the !pay a second time, and answers it as the first time
    // (the payment its event id keyed).
    b.gw.kill9().await;
    put_cursor(&b.gw, &before);
    b.gw.restart().await;
    let again = b.bob.wait_for(&b.chat, RESTART_WAIT, |seen| Some(answers(seen)).filter(|a| a.len() > 1)).await;
    assert_eq!(again, ["Paid 15 sat.", "Paid 15 sat."]);
    cursor_settled_past(&b.gw, Some(&before), WAIT).await;
    // And whatever comes after it is handled after it.
    assert!(b.balance_round_trip().await.contains("85 sat available"));

    // Answered twice, paid once.
    assert_eq!(b.balances().await, (15 * SAT, FUND - 15 * SAT));
    assert_eq!(b.buyer_payments().await, 1);
    let allowed = b.gw.audit_all(&format!("agent_id={}&action=payment.allowed", b.buyer)).await;
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    let (ok, said) = b.gw.audit().await;
    assert!(ok, "coffer audit: {said}");
}

#[tokio::test]
async fn payments_through_the_bridge_are_in_the_audit_chain() {
    let Some(b) = Bridged::start("the Matrix bridge: the audit chain").await else { return };
    let key_id = format!("matrix:{}", b.bob.user_id);
    let linked = b.gw.audit_all(&format!("agent_id={}&action=bridge.linked", b.buyer)).await;
    assert_eq!(linked.len(), 1, "{linked:?}");
    assert_eq!(linked[0].record["key_id"], key_id.as_str());

    // One paid by !pay in reply to its card, one by a reaction.
    b.http_request(3 * SAT, "first").await;
    let (first, _) = b.card(&b.bob, "first").await;
    let pay = b.bob.send(&b.chat, "!pay", Some(&first.event_id)).await;
    b.bot_reply_after(&b.bob, &pay, |s| s.body.as_deref() == Some("Paid 3 sat.")).await;
    b.http_request(4 * SAT, "second").await;
    let (second, _) = b.card(&b.bob, "second").await;
    let reaction = b.bob.react(&b.chat, &second.event_id, "👍").await;
    let notice = b.bot_reply_after(&b.bob, &reaction, |s| s.msgtype.as_deref() == Some("m.notice")).await;
    assert_eq!(notice.body.as_deref(), Some("Paid 4 sat."));
    assert_eq!(b.balances().await, (7 * SAT, FUND - 7 * SAT));

    let paid = b.gw.client(&b.buyer_key).payments(None).await.expect("listing payments").items;
    assert_eq!(paid.len(), 2, "{paid:?}");
    let allowed = b.gw.audit_all(&format!("agent_id={}&action=payment.allowed", b.buyer)).await;
    let mut amounts: Vec<u64> = allowed.iter().filter_map(|r| r.record["amount_msat"].as_u64()).collect();
    amounts.sort();
    assert_eq!(amounts, [3 * SAT, 4 * SAT], "{allowed:?}");
    for record in &allowed {
        assert_eq!(record.record["key_id"], key_id.as_str(), "{record:?}");
        assert_eq!(record.record["agent_id"], b.buyer.as_str(), "{record:?}");
    }
    // Alice's link is the seller's, under her own key id.
    let seller_linked = b.gw.audit_all(&format!("agent_id={}&action=bridge.linked", b.seller)).await;
    assert_eq!(seller_linked.len(), 1);
    assert_eq!(seller_linked[0].record["key_id"], format!("matrix:{}", b.alice.user_id).as_str());
    let (ok, said) = b.gw.audit().await;
    assert!(ok, "coffer audit: {said}");
}

/// A sync batch read again (a restart, or the reading lease lost, before
/// the cursor moved past it) repeats none of what its texts did: no second
/// payment request, no text mirrored twice.
#[tokio::test]
async fn a_batch_read_again_requests_and_mirrors_nothing_twice() {
    let Some(mut b) = Bridged::start("the Matrix bridge: a batch read again").await else { return };
    b.balance_round_trip().await;
    let before = cursor_settled_past(&b.gw, None, WAIT).await;

    let asked = b.alice.send(&b.chat, "!request 2 replayed", None).await;
    b.bot_reply_after(&b.alice, &asked, |s| s.body.as_deref() == Some("Requested 2 sat for replayed.")).await;
    b.alice.send(&b.chat, "said once", None).await;
    b.card(&b.bob, "replayed").await;
    let texts = |messages: &[coffer_client::Message]| messages.iter().filter(|m| m.text == "said once").count();
    let deadline = tokio::time::Instant::now() + WAIT;
    while texts(&b.gw.all_messages(&b.seller_key, &b.room).await) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the text was not mirrored into the room");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cursor_settled_past(&b.gw, Some(&before), WAIT).await;

    b.gw.kill9().await;
    put_cursor(&b.gw, &before);
    b.gw.restart().await;
    // Bob's !balance after them is answered once they are read again.
    let asked = b.bob.send(&b.chat, "!balance", None).await;
    b.bob
        .wait_for(&b.chat, RESTART_WAIT, |seen| {
            let at = seen.iter().position(|s| s.event_id == asked)?;
            seen[at + 1..]
                .iter()
                .find(|s| s.sender == b.bot.user_id && s.body.as_deref().is_some_and(|t| t.contains(" available")))
                .cloned()
        })
        .await;

    let messages = b.gw.all_messages(&b.seller_key, &b.room).await;
    let requests = messages.iter().filter(|m| m.invoice.as_ref().is_some_and(|i| i.memo == "replayed")).count();
    assert_eq!(requests, 1, "{messages:#?}");
    assert_eq!(texts(&messages), 1, "{messages:#?}");
    let seen = b.bob.messages(&b.chat).await;
    let cards = seen.iter().filter(|s| s.body.as_deref().is_some_and(|t| t.contains(" for replayed\n"))).count();
    assert_eq!(cards, 1, "{seen:#?}");
}
