//! The Telegram bridge at work (issue 23): a real `coffer serve` runs its
//! bridge against a local stand-in of the Telegram Bot API
//! (`common::telegram`). Telegram's servers cannot be reached from here, so
//! the stand-in was written from the Bot API's documentation
//! (<https://core.telegram.org/bots/api>), not from Telegram itself: what
//! these tests show is the bridge speaking the documented protocol.
//!
//! Covered: linking, `/request` cards with a Pay button and a QR photo,
//! paying by a press (and by `/pay` in reply), what unlinked users, double
//! deliveries, the constitution and forged buttons get, approvals in the
//! operator's chat, restarts that lose and repeat no update, the audit
//! chain, messenger outages, and chats that are not bridged.

mod common;

use coffer_client::Client;
use common::telegram::{SentMessage, StandIn};
use common::{Gateway, send};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const SAT: u64 = 1_000;
const FUND: u64 = 100 * SAT;
/// The group bridged to the room (group chat ids are negative).
const GROUP: i64 = -100_123;
/// Another group, bridged to another room.
const OTHER_GROUP: i64 = -100_456;
/// A group the bot is in that no room is bridged to.
const UNBRIDGED: i64 = -100_789;
/// Alice acts as the seller (the payee), Bob as the buyer; Eve is not
/// linked; Olga is the operator (in her private chat, whose id is hers).
const ALICE: i64 = 1_001;
const BOB: i64 = 1_002;
const EVE: i64 = 1_003;
const OLGA: i64 = 1_004;
/// How long the restart test waits: the new process takes over the
/// bridge's leases once the killed one's lapse (10 s).
const RESTART_WAIT: Duration = Duration::from_secs(40);

/// A gateway running the bridge against a fresh stand-in, with a seller
/// and a funded buyer in a room bridged to [`GROUP`], each linked to a
/// Telegram user (Alice, Bob).
struct Bridged {
    tg: StandIn,
    gw: Gateway,
    seller: String,
    seller_key: String,
    buyer: String,
    buyer_key: String,
    room: String,
}

impl Bridged {
    async fn start() -> Bridged {
        let tg = StandIn::start().await;
        let gw = Gateway::start_with_env(&[
            ("COFFER_TELEGRAM_BOT_TOKEN", tg.token()),
            ("COFFER_TELEGRAM_API_URL", tg.url()),
        ])
        .await;
        let (seller, _, seller_key) = gw.new_agent("seller", 0).await;
        let (buyer, _, buyer_key) = gw.new_agent("buyer", FUND).await;
        let room = gw.create_room(&seller_key, "market", &[&buyer]).await.id;
        bridge(&gw, &room, GROUP).await;
        let b = Bridged { tg, gw, seller, seller_key, buyer, buyer_key, room };
        b.link(GROUP, ALICE, "Alice", &b.seller, &b.seller_key).await;
        b.link(GROUP, BOB, "Bob", &b.buyer, &b.buyer_key).await;
        b
    }

    fn buyer_client(&self) -> Client {
        self.gw.client(&self.buyer_key)
    }

    /// Links a Telegram user to an agent: a code from the agent's key, sent
    /// as `/link CODE` in `chat`; waits for the bot's confirmation.
    async fn link(&self, chat: i64, user: i64, name: &str, agent: &str, key: &str) {
        let made = send(self.gw.request(Method::POST, &format!("/v1/agents/{agent}/link-codes"), Some(key))).await;
        assert_eq!(made.status, 201, "{made:?}");
        let code = made.json["code"].as_str().expect("a code").to_owned();
        self.tg.user_says(chat, user, name, &format!("/link {code}"));
        let linked = format!("Linked: you act as {agent} here.");
        self.tg.wait_for(&linked, |tg| has_text(tg, chat, &linked)).await;
    }

    /// Alice asks for `amount_sat` in the group: the card, once posted.
    async fn request(&self, amount_sat: u64, memo: &str) -> SentMessage {
        self.tg.user_says(GROUP, ALICE, "Alice", &format!("/request {amount_sat} {memo}"));
        self.tg.wait_for(&format!("the card of {memo}"), |tg| card(tg, GROUP, memo).is_some()).await;
        card(&self.tg, GROUP, memo).expect("the card")
    }

    /// A user presses a button of the group's message `on` with `data`:
    /// the press's id and the bot's answer.
    async fn press(&self, chat: i64, user: i64, name: &str, on: i64, data: &str) -> (String, String) {
        let press = self.tg.user_presses(chat, user, name, on, data);
        self.tg.wait_for("the answer to a press", |tg| tg.answered(&press).is_some()).await;
        let answer = self.tg.answered(&press).expect("answered");
        (press, answer)
    }

    /// The bot's reply to a command of Bob's in the group, so that every
    /// update before it is known to be handled.
    async fn sync(&self) {
        let before = self.tg.messages(GROUP).len();
        self.tg.user_says(GROUP, BOB, "Bob", "/balance");
        self.tg
            .wait_for("the reply to /balance", |tg| {
                tg.messages(GROUP)[before..].iter().any(|m| m.text.contains(" available"))
            })
            .await;
    }

    async fn balances(&self) -> (u64, u64) {
        let b = self.gw.balances().await;
        (b[&self.seller], b[&self.buyer])
    }
}

async fn bridge(gw: &Gateway, room: &str, chat: i64) {
    let put = gw.request(Method::PUT, &format!("/v1/rooms/{room}/bridges/telegram"), Some(gw.operator_token()));
    let r = send(put.json(&json!({"chat_id": chat.to_string()}))).await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn has_text(tg: &StandIn, chat: i64, text: &str) -> bool {
    tg.messages(chat).iter().any(|m| m.text.contains(text))
}

/// The cards of a chat: the bot's messages of payment requests.
fn cards(tg: &StandIn, chat: i64) -> Vec<SentMessage> {
    tg.messages(chat).into_iter().filter(|m| !m.photo && m.text.starts_with('⚡')).collect()
}

/// The card whose memo is `memo`.
fn card(tg: &StandIn, chat: i64, memo: &str) -> Option<SentMessage> {
    let title = format!(" for {memo}\n");
    cards(tg, chat).into_iter().find(|m| m.text.contains(&title))
}

/// The card's Pay button's data.
fn pay_data(card: &SentMessage) -> String {
    match &card.buttons[..] {
        [(label, data)] if label.contains("Pay") && data.starts_with("p:") => data.clone(),
        other => panic!("a card without its Pay button: {other:?}\n{}", card.text),
    }
}

fn photos(tg: &StandIn, chat: i64) -> usize {
    tg.messages(chat).iter().filter(|m| m.photo).count()
}

async fn payments(client: &Client) -> Vec<coffer_client::Payment> {
    client.payments(None).await.expect("listing payments").items
}

/// The room's payment requests (each `/request` handled makes one).
async fn requests_in_room(gw: &Gateway, secret: &str, room: &str) -> Vec<coffer_client::Message> {
    gw.all_messages(secret, room).await.into_iter().filter(|m| m.invoice.is_some()).collect()
}

/// Waits for `check`, up to `limit` (longer than the stand-in's own wait).
async fn wait_long(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the bridge's writer has handled every event in the outbox
/// (its backlog on `/metrics` is 0): the cards it posted are recorded.
async fn outbox_caught_up(gw: &Gateway) {
    let caught_up = "coffer_outbox_backlog_events{consumer=\"bridge.telegram\"} 0\n";
    let deadline = tokio::time::Instant::now() + RESTART_WAIT;
    loop {
        let r = send(gw.request(Method::GET, "/metrics", None)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.text.contains(caught_up) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the bridge's backlog: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_linked_user_pays_a_card_with_its_button() {
    let b = Bridged::start().await;
    let tg = &b.tg;
    let card = b.request(15, "the route to Lyon").await;
    assert!(card.text.contains("asks 15 sat for the route to Lyon"), "{}", card.text);
    assert!(card.text.contains("Status: open"), "{}", card.text);
    assert!(card.text.contains("lnbc"), "the invoice, for any wallet: {}", card.text);
    let data = pay_data(&card);
    tg.wait_for("the card's QR code", |tg| photos(tg, GROUP) == 1).await;
    tg.wait_for("the reply to /request", |tg| has_text(tg, GROUP, "Requested 15 sat for the route to Lyon.")).await;
    assert_eq!(b.balances().await, (0, FUND));

    let (_, answer) = b.press(GROUP, BOB, "Bob", card.id, &data).await;
    assert_eq!(answer, "Paid 15 sat.");
    assert_eq!(b.balances().await, (15 * SAT, FUND - 15 * SAT));
    let paid = payments(&b.buyer_client()).await;
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!((paid[0].amount_msat, paid[0].payee_agent_id.as_deref()), (15 * SAT, Some(b.seller.as_str())));

    // The card now says so, with the payment's receipt (its payer and
    // preimage), and has no Pay button.
    let preimage = paid[0].preimage.clone().expect("the payment's preimage");
    let proof = format!("Preimage (proof of payment): {preimage}");
    tg.wait_for("the card edited to paid", |tg| has_text(tg, GROUP, &proof)).await;
    let edited = tg.messages(GROUP).into_iter().find(|m| m.id == card.id).expect("the card");
    assert!(edited.text.contains("Status: paid"), "{}", edited.text);
    assert!(edited.text.contains(&format!("Paid by {} at ", b.buyer)), "{}", edited.text);
    assert!(edited.text.contains(&proof), "{}", edited.text);
    assert!(!edited.text.contains("lnbc"), "no invoice to pay once paid: {}", edited.text);
    assert!(edited.buttons.is_empty(), "{:?}", edited.buttons);
    assert!(edited.edits >= 1);
    let in_room = requests_in_room(&b.gw, &b.seller_key, &b.room).await;
    assert_eq!(in_room.len(), 1);
    assert_eq!(in_room[0].receipt.as_ref().map(|r| r.preimage.as_str()), Some(preimage.as_str()));

    // The balance, as Bob's agent sees it.
    b.sync().await;
    assert!(has_text(tg, GROUP, "buyer: 85 sat available"), "{:?}", tg.messages(GROUP));
}

#[tokio::test]
async fn an_unlinked_press_pays_nothing_and_says_how_to_link() {
    let b = Bridged::start().await;
    let card = b.request(15, "a map").await;
    let (_, answer) = b.press(GROUP, EVE, "Eve", card.id, &pay_data(&card)).await;
    assert!(answer.contains("not linked") && answer.contains("/link"), "{answer}");
    assert_eq!(b.balances().await, (0, FUND));
    assert!(payments(&b.buyer_client()).await.is_empty());
    let card = b.tg.messages(GROUP).into_iter().find(|m| m.id == card.id).expect("the card");
    assert!(card.text.contains("Status: open") && card.buttons.len() == 1, "still open: {card:?}");

    // Unlinked again, Bob is refused the same way.
    let unlinked = b.gw.request(Method::DELETE, &format!("/v1/agents/{}/links/telegram/{BOB}", b.buyer), None);
    assert_eq!(send(unlinked.bearer_auth(&b.buyer_key)).await.status, 204);
    let (_, answer) = b.press(GROUP, BOB, "Bob", card.id, &pay_data(&card)).await;
    assert!(answer.contains("not linked"), "{answer}");
    assert_eq!(b.balances().await, (0, FUND));
}

#[tokio::test]
async fn a_press_delivered_twice_pays_once() {
    let b = Bridged::start().await;
    let card = b.request(20, "a translation").await;
    let data = pay_data(&card);
    let press = b.tg.user_presses(GROUP, BOB, "Bob", card.id, &data);
    // Delivered again at once (in the same batch, most likely), and later.
    b.tg.redeliver(&press);
    b.tg.wait_for("the answer to the press", |tg| tg.answered(&press).is_some()).await;
    assert_eq!(b.tg.answered(&press).as_deref(), Some("Paid 20 sat."));
    b.tg.redeliver(&press);
    // Updates are handled in order: once Bob's next command is answered,
    // both deliveries have been handled.
    b.sync().await;
    assert_eq!(payments(&b.buyer_client()).await.len(), 1);
    assert_eq!(b.balances().await, (20 * SAT, FUND - 20 * SAT));

    // Another press of the (now stale) button is a new press: refused,
    // the request being paid.
    let (_, answer) = b.press(GROUP, BOB, "Bob", card.id, &data).await;
    assert!(!answer.starts_with("Paid"), "{answer}");
    assert_eq!(payments(&b.buyer_client()).await.len(), 1);
    assert_eq!(b.balances().await, (20 * SAT, FUND - 20 * SAT));
}

#[tokio::test]
async fn an_over_budget_press_is_refused_with_the_rules_reason() {
    let b = Bridged::start().await;
    let policy = json!({"budgets": [{"limit_msat": 10 * SAT, "window": "1h", "kind": "rolling"}]});
    let set = b.gw.put_policy_raw(b.gw.operator_token(), &b.buyer, &policy).await;
    assert_eq!(set.status, 200, "{set:?}");
    let card = b.request(15, "too much").await;
    let (_, answer) = b.press(GROUP, BOB, "Bob", card.id, &pay_data(&card)).await;
    assert!(answer.starts_with("Refused (budget-exceeded): "), "{answer}");
    assert!(answer.len() > "Refused (budget-exceeded): ".len() + 5, "with the rule's reason: {answer}");
    assert_eq!(b.balances().await, (0, FUND));
    assert!(payments(&b.buyer_client()).await.is_empty());
    let denied = b.gw.audit_all(&format!("agent_id={}&action=payment.denied", b.buyer)).await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].record["key_id"], format!("telegram:{BOB}").as_str());

    // Within the budget, the same button of another card pays.
    let small = b.request(10, "just right").await;
    let (_, answer) = b.press(GROUP, BOB, "Bob", small.id, &pay_data(&small)).await;
    assert_eq!(answer, "Paid 10 sat.");
    assert_eq!(b.balances().await, (10 * SAT, FUND - 10 * SAT));
}

#[tokio::test]
async fn a_held_payment_is_approved_from_the_operators_chat() {
    let b = Bridged::start().await;
    let (tg, gw) = (&b.tg, &b.gw);
    // Olga links as the operator, in her private chat with the bot.
    let made = send(gw.request(Method::POST, "/v1/link-codes", Some(gw.operator_token()))).await;
    assert_eq!(made.status, 201, "{made:?}");
    tg.user_says(OLGA, OLGA, "Olga", &format!("/link {}", made.json["code"].as_str().unwrap()));
    tg.wait_for("the operator's link", |tg| has_text(tg, OLGA, "Linked: you act as operator here.")).await;
    let links = send(gw.request(Method::GET, "/v1/links", Some(gw.operator_token()))).await;
    assert_eq!(links.json[0]["user_id"], OLGA.to_string().as_str(), "{links:?}");

    let policy = json!({"approval_above_msat": 5 * SAT});
    assert_eq!(gw.put_policy_raw(gw.operator_token(), &b.buyer, &policy).await.status, 200);
    let card = b.request(12, "a big job").await;
    let (_, answer) = b.press(GROUP, BOB, "Bob", card.id, &pay_data(&card)).await;
    assert!(answer.starts_with("Held for the operator's approval (apr_"), "{answer}");
    let approval_id = answer.split(['(', ')']).nth(1).expect("the approval's id").to_owned();
    assert_eq!(b.balances().await, (0, FUND));

    // The approval reaches Olga, with its buttons.
    tg.wait_for("the approval prompt", |tg| has_text(tg, OLGA, "Approval needed")).await;
    let prompt = tg.messages(OLGA).into_iter().find(|m| m.text.contains("Approval needed")).unwrap();
    assert!(prompt.text.contains(&b.buyer) && prompt.text.contains("12 sat"), "{}", prompt.text);
    assert!(prompt.text.contains(&format!("/approve {approval_id}")), "{}", prompt.text);
    let labels: Vec<&str> = prompt.buttons.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["✅ Approve", "❌ Deny"]);
    let approve = prompt.buttons[0].1.clone();
    assert!(approve.starts_with(&format!("a:{approval_id}:y:")), "{approve}");

    // Bob's press of it is refused: he is not the operator.
    let (_, answer) = b.press(OLGA, BOB, "Bob", prompt.id, &approve).await;
    assert!(!answer.starts_with("Approved"), "{answer}");
    assert_eq!(b.balances().await, (0, FUND));

    let (_, answer) = b.press(OLGA, OLGA, "Olga", prompt.id, &approve).await;
    assert_eq!(answer, format!("Approved {approval_id}: paid."));
    assert_eq!(b.balances().await, (12 * SAT, FUND - 12 * SAT));
    let approvals = send(gw.request(Method::GET, "/v1/approvals?status=approved", Some(gw.operator_token()))).await;
    let approved: Vec<&str> = approvals.json.as_array().unwrap().iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(approved, [approval_id.as_str()]);
    tg.wait_for("the card edited to paid", |tg| {
        tg.messages(GROUP).iter().any(|m| m.id == card.id && m.text.contains("Status: paid") && m.buttons.is_empty())
    })
    .await;
    // Deciding again pays nothing more.
    let (_, answer) = b.press(OLGA, OLGA, "Olga", prompt.id, &approve).await;
    assert!(!answer.starts_with("Approved"), "{answer}");
    assert_eq!(b.balances().await, (12 * SAT, FUND - 12 * SAT));
    assert_eq!(payments(&b.buyer_client()).await.len(), 1);
}

#[tokio::test]
async fn a_restart_loses_and_repeats_no_update() {
    let mut b = Bridged::start().await;
    for i in 1..=3 {
        b.tg.user_says(GROUP, ALICE, "Alice", &format!("/request {i} before {i}"));
    }
    let tg = b.tg.clone();
    tg.wait_for("the first three cards", |tg| cards(tg, GROUP).len() == 3).await;
    // Confirmed: the bridge's next poll carried the cursor after them.
    tg.wait_for("the first updates confirmed", |tg| tg.unconfirmed().is_empty()).await;
    // And the cards recorded: the bridge records a post after sending it, so
    // a kill between the two posts that card again (at least once, by
    // design). The writer stores its cursor after the batch's records.
    outbox_caught_up(&b.gw).await;
    let first: Vec<i64> = tg.updates_delivered();

    b.gw.kill9().await;
    for i in 1..=3 {
        b.tg.user_says(GROUP, ALICE, "Alice", &format!("/request {} while down {i}", 10 + i));
    }
    b.gw.restart().await;
    wait_long("the cards of the updates sent while down", RESTART_WAIT, || cards(&tg, GROUP).len() >= 6).await;
    wait_long("every update confirmed", RESTART_WAIT, || tg.unconfirmed().is_empty()).await;
    b.sync().await;

    // Each /request made exactly one request in the room and one card.
    let requests = requests_in_room(&b.gw, &b.seller_key, &b.room).await;
    let mut memos: Vec<String> = requests.iter().map(|m| m.invoice.as_ref().unwrap().memo.clone()).collect();
    memos.sort();
    let mut expected: Vec<String> = (1..=3).map(|i| format!("before {i}")).collect();
    expected.extend((1..=3).map(|i| format!("while down {i}")));
    expected.sort();
    assert_eq!(memos, expected);
    let cards = cards(&b.tg, GROUP);
    assert_eq!(cards.len(), 6, "{cards:?}");
    for memo in &expected {
        let title = format!(" for {memo}\n");
        assert_eq!(cards.iter().filter(|c| c.text.contains(&title)).count(), 1, "{memo}: {cards:?}");
    }
    let replies = b.tg.messages(GROUP).iter().filter(|m| m.text.starts_with("Requested ")).count();
    assert_eq!(replies, 6);
    // No update confirmed before the restart was delivered after it.
    let delivered = b.tg.updates_delivered();
    let after = &delivered[first.len()..];
    assert!(first.iter().all(|id| !after.contains(id)), "before: {first:?}, after: {after:?}");
}

#[tokio::test]
async fn payments_through_the_bridge_are_in_the_audit_chain() {
    let b = Bridged::start().await;
    let key_id = format!("telegram:{BOB}");
    let linked = b.gw.audit_all(&format!("agent_id={}&action=bridge.linked", b.buyer)).await;
    assert_eq!(linked.len(), 1, "{linked:?}");
    assert_eq!(linked[0].record["key_id"], key_id.as_str());

    // One paid by its button, one by `/pay` in reply to the card.
    let first = b.request(3, "first").await;
    assert_eq!(b.press(GROUP, BOB, "Bob", first.id, &pay_data(&first)).await.1, "Paid 3 sat.");
    let second = b.request(4, "second").await;
    b.tg.user_replies(GROUP, BOB, "Bob", second.id, "/pay");
    b.tg.wait_for("the reply to /pay", |tg| has_text(tg, GROUP, "Paid 4 sat.")).await;
    assert_eq!(b.balances().await, (7 * SAT, FUND - 7 * SAT));

    let paid = payments(&b.buyer_client()).await;
    assert_eq!(paid.len(), 2, "{paid:?}");
    let allowed = b.gw.audit_all(&format!("agent_id={}&action=payment.allowed", b.buyer)).await;
    let mut amounts: Vec<u64> = allowed.iter().filter_map(|r| r.record["amount_msat"].as_u64()).collect();
    amounts.sort();
    assert_eq!(amounts, [3 * SAT, 4 * SAT], "{allowed:?}");
    for record in &allowed {
        assert_eq!(record.record["key_id"], key_id.as_str(), "{record:?}");
        assert_eq!(record.record["agent_id"], b.buyer.as_str(), "{record:?}");
    }
    // The chain holds.
    let (ok, said) = b.gw.audit().await;
    assert!(ok, "coffer audit: {said}");
}

#[tokio::test]
async fn forged_buttons_pay_nothing() {
    let b = Bridged::start().await;
    let gw = &b.gw;
    let other_room = gw.create_room(&b.seller_key, "annex", &[&b.buyer]).await.id;
    bridge(gw, &other_room, OTHER_GROUP).await;
    let card = b.request(9, "the real one").await;
    let data = pay_data(&card);
    let other = b.request(8, "another").await;
    let (id, tag) = data.rsplit_once(':').map(|(p, t)| (p.strip_prefix("p:").unwrap().to_owned(), t)).unwrap();
    let forged = "forged button";

    // A wrong tag.
    let mut wrong: Vec<char> = tag.chars().collect();
    wrong[0] = if wrong[0] == 'A' { 'B' } else { 'A' };
    let wrong: String = wrong.into_iter().collect();
    let (_, answer) = b.press(GROUP, BOB, "Bob", card.id, &format!("p:{id}:{wrong}")).await;
    assert_eq!(answer, "this button is not one of coffer's", "{forged}");
    // A real tag on another card's id (the other card is open and payable).
    let other_id = pay_data(&other).split(':').nth(1).unwrap().to_owned();
    let (_, answer) = b.press(GROUP, BOB, "Bob", other.id, &format!("p:{other_id}:{tag}")).await;
    assert_eq!(answer, "this button is not one of coffer's");
    // The real button copied to another chat, bridged to another room.
    let (_, answer) = b.press(OTHER_GROUP, BOB, "Bob", card.id, &data).await;
    assert_eq!(answer, "this button is not one of coffer's");
    // Nor is data that is no button of coffer's.
    let (_, answer) = b.press(GROUP, BOB, "Bob", card.id, "p:1").await;
    assert_eq!(answer, "this button is not one of coffer's");

    assert_eq!(b.balances().await, (0, FUND));
    assert!(payments(&b.buyer_client()).await.is_empty());
    // The real button still pays: the forgeries were refused for their tags.
    assert_eq!(b.press(GROUP, BOB, "Bob", card.id, &data).await.1, "Paid 9 sat.");
    assert_eq!(b.balances().await, (9 * SAT, FUND - 9 * SAT));
}

#[tokio::test]
async fn an_outage_is_backed_off_and_caught_up() {
    let b = Bridged::start().await;
    let tg = &b.tg;
    for (n, status) in [(3, 502), (2, 429)] {
        tg.fail_next(n, status);
        let texts: Vec<String> = (1..=3).map(|i| format!("during a {status}, message {i}")).collect();
        for text in &texts {
            b.gw.post_text(&b.seller_key, &b.room, text).await;
        }
        let lines: Vec<String> = texts.iter().map(|t| format!("{}: {t}", b.seller)).collect();
        tg.wait_for(&format!("the messages posted during the {status}s"), |tg| {
            lines.iter().all(|l| tg.messages(GROUP).iter().any(|m| &m.text == l))
        })
        .await;
        // Each once, in order.
        let seen: Vec<String> = tg
            .messages(GROUP)
            .into_iter()
            .map(|m| m.text)
            .filter(|t| t.contains(&format!("during a {status}")))
            .collect();
        assert_eq!(seen, lines);
    }
    // And the chat is read again: a command after the outage is answered.
    b.sync().await;
}

#[tokio::test]
async fn chat_text_reaches_the_room_only_from_a_bridged_chat() {
    let b = Bridged::start().await;
    let tg = &b.tg;
    tg.user_says(UNBRIDGED, BOB, "Bob", "hello from nowhere");
    tg.user_says(GROUP, BOB, "Bob", "hello from the group");
    tg.user_says(GROUP, EVE, "Eve", "hi, I am new");
    b.sync().await;
    let texts: Vec<(String, String)> =
        b.gw.all_messages(&b.seller_key, &b.room).await.into_iter().map(|m| (m.sender, m.text)).collect();
    assert_eq!(
        texts,
        [
            (b.buyer.clone(), "hello from the group".to_owned()),
            ("operator".to_owned(), "Eve (telegram): hi, I am new".to_owned())
        ],
        "{texts:?}"
    );
    // Nothing is echoed back into the chat, and nothing goes to the
    // unbridged one.
    assert!(!has_text(tg, GROUP, "hello from the group"), "{:?}", tg.messages(GROUP));
    assert!(!has_text(tg, GROUP, "hi, I am new"), "{:?}", tg.messages(GROUP));
    assert!(tg.messages(UNBRIDGED).is_empty(), "{:?}", tg.messages(UNBRIDGED));
}

/// Two instances on one PostgreSQL database: one reads the chat at a time,
/// though a long poll (25 s) outlasts the reading lease (10 s), so an
/// update is handled once.
#[tokio::test]
async fn of_two_instances_one_reads_the_chat() {
    let tg = StandIn::start().await;
    let env = [("COFFER_TELEGRAM_BOT_TOKEN", tg.token()), ("COFFER_TELEGRAM_API_URL", tg.url())];
    let gw = Gateway::start_postgres_with_env(&[], &env).await;
    let (seller, _, seller_key) = gw.new_agent("seller", 0).await;
    let room = gw.create_room(&seller_key, "market", &[]).await.id;
    bridge(&gw, &room, GROUP).await;
    let made = send(gw.request(Method::POST, &format!("/v1/agents/{seller}/link-codes"), Some(&seller_key))).await;
    tg.user_says(GROUP, ALICE, "Alice", &format!("/link {}", made.json["code"].as_str().unwrap()));
    tg.wait_for("the link", |tg| has_text(tg, GROUP, "Linked: ")).await;
    let other = gw.another_instance().await;
    // Past the lease of the first instance's last claim, well into its
    // long poll.
    tokio::time::sleep(Duration::from_secs(14)).await;
    tg.user_says(GROUP, ALICE, "Alice", "/request 5 once only");
    tg.wait_for("the card", |tg| card(tg, GROUP, "once only").is_some()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cards(&tg, GROUP).len(), 1, "{:?}", tg.messages(GROUP));
    assert_eq!(requests_in_room(&other, &seller_key, &room).await.len(), 1);
    let delivered = tg.updates_delivered();
    let mut distinct = delivered.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), delivered.len(), "an update delivered twice: {delivered:?}");
}
