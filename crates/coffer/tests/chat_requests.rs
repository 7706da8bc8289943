//! Payment requests in rooms: the invoice a message carries, paying it in
//! one call through the payer's policy, exactly once, and the receipt.

mod common;

use coffer_client::{InvoiceStatus, Message, Outcome, Scope};
use common::trade::{self, wallet};
use common::{Gateway, Reply, SseReader, sha256_hex};
use serde_json::{Value, json};

const SAT: u64 = 1_000;
const FUND: u64 = 100 * SAT;

/// The receipt of a paid request, checked against its invoice: the payer,
/// the amount, a time, and a preimage that hashes to the payment hash.
#[track_caller]
fn assert_paid_by(m: &Message, payer: &str, amount_msat: u64) {
    let invoice = m.invoice.as_ref().unwrap_or_else(|| panic!("not a request: {m:?}"));
    assert_eq!(invoice.status, InvoiceStatus::Paid, "{m:?}");
    let receipt = m.receipt.as_ref().unwrap_or_else(|| panic!("a paid request without a receipt: {m:?}"));
    assert_eq!((receipt.payer.as_str(), receipt.amount_msat), (payer, amount_msat), "{m:?}");
    assert!(chrono::DateTime::parse_from_rfc3339(&receipt.paid_at).is_ok(), "{m:?}");
    let preimage = hex::decode(&receipt.preimage).expect("a hex preimage");
    assert_eq!(preimage.len(), 32, "{m:?}");
    assert_eq!(sha256_hex(&preimage), invoice.payment_hash, "sha256(preimage) == payment_hash: {m:?}");
}

#[track_caller]
fn assert_open(m: &Message) {
    let invoice = m.invoice.as_ref().unwrap_or_else(|| panic!("not a request: {m:?}"));
    assert_eq!(invoice.status, InvoiceStatus::Open, "{m:?}");
    assert!(m.receipt.is_none(), "{m:?}");
}

#[track_caller]
fn assert_payment(r: &Reply, amount_msat: u64, payee: &str, payment_hash: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["status"], "succeeded", "{r:?}");
    assert_eq!(r.json["amount_msat"].as_u64(), Some(amount_msat), "{r:?}");
    assert_eq!(r.json["fee_msat"].as_u64(), Some(0), "{r:?}");
    assert_eq!(r.json["payee_agent_id"].as_str(), Some(payee), "{r:?}");
    assert_eq!(r.json["payment_hash"].as_str(), Some(payment_hash), "{r:?}");
}

#[tokio::test]
async fn a_request_carries_its_invoice_and_is_paid_once_with_one_call() {
    let gw = Gateway::start().await;
    let (seller, seller_client, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, buyer_client, key_b) = gw.new_agent("buyer", FUND).await;
    let (other, other_client, key_o) = gw.new_agent("other", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer, &other]).await.id;

    let m = gw.post_request(&key_s, &room, 21 * SAT, "21 sats for the report", Some(600)).await;
    assert_eq!(
        (m.kind.as_str(), m.sender.as_str(), m.text.as_str()),
        ("payment_request", seller.as_str(), "21 sats for the report")
    );
    let inv = m.invoice.clone().expect("a request carries its invoice");
    assert_eq!(
        (inv.amount_msat, inv.memo.as_str(), inv.status),
        (21 * SAT, "21 sats for the report", InvoiceStatus::Open)
    );
    assert_eq!(inv.payment_hash.len(), 64, "{inv:?}");
    assert!(inv.bolt11.starts_with("lnbcrt210n1"), "a regtest invoice of 21 sat: {inv:?}");
    assert_eq!(inv.qr_svg, format!("/v1/invoices/{}/qr.svg", inv.payment_hash));
    assert_eq!(inv.qr_png, format!("/v1/invoices/{}/qr.png", inv.payment_hash));
    assert!(m.receipt.is_none(), "{m:?}");
    // It is the poster's invoice, known as such.
    let own = seller_client.invoice(&inv.payment_hash).await.expect("the poster's invoice");
    assert_eq!(
        (own.bolt11.as_str(), own.amount_msat, own.status),
        (inv.bolt11.as_str(), 21 * SAT, InvoiceStatus::Open)
    );
    assert_eq!(own.expires_at, inv.expires_at);
    // The QR codes are at the paths given, for the room's members.
    let (_, _, key_x) = gw.new_agent("outsider", 0).await;
    for (path, ct) in [(&inv.qr_svg, "image/svg+xml"), (&inv.qr_png, "image/png")] {
        for key in [&key_s, &key_b] {
            let r = common::send(gw.request(reqwest::Method::GET, path, Some(key))).await;
            assert_eq!((r.status, r.content_type.as_deref()), (200, Some(ct)), "{path}");
        }
        common::send(gw.request(reqwest::Method::GET, path, Some(&key_x))).await.assert_problem(403, "forbidden");
    }
    // Members read it as posted.
    let read = gw.message(&key_b, &room, m.id).await;
    assert_open(&read);
    assert_eq!(read.invoice.as_ref().unwrap().bolt11, inv.bolt11);

    // One call pays it.
    let r = gw.pay_message_raw(&key_b, &room, m.id, None).await;
    assert_payment(&r, 21 * SAT, &seller, &inv.payment_hash);
    let preimage = r.json["preimage"].as_str().expect("a preimage").to_owned();
    let balances = gw.balances().await;
    assert_eq!((balances[&seller], balances[&buyer], balances[&other]), (21 * SAT, FUND - 21 * SAT, FUND));
    let paid = gw.message(&key_o, &room, m.id).await;
    assert_paid_by(&paid, &buyer, 21 * SAT);
    assert_eq!(paid.receipt.as_ref().unwrap().preimage, preimage);
    assert_eq!(seller_client.invoice(&inv.payment_hash).await.unwrap().status, InvoiceStatus::Paid);
    let payment_id = r.json["id"].as_str().unwrap().to_owned();
    let listed = buyer_client.payments(None).await.unwrap().items;
    assert_eq!(listed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [payment_id.as_str()]);
    assert!(listed[0].purpose.contains("shop") && listed[0].purpose.contains("21 sats for the report"), "{listed:?}");

    // Again, by the payer or another member: refused, nothing moves.
    gw.pay_message_raw(&key_b, &room, m.id, None).await.assert_problem(409, "invoice-already-paid");
    gw.pay_message_raw(&key_o, &room, m.id, None).await.assert_problem(409, "invoice-already-paid");
    gw.pay_message_raw(&key_o, &room, m.id, Some("fresh-key")).await.assert_problem(409, "invoice-already-paid");
    gw.pay_raw(&key_o, &inv.bolt11, "directly", None).await.assert_problem(409, "invoice-already-paid");
    // The poster cannot pay its own request.
    gw.pay_message_raw(&key_s, &room, m.id, None).await.assert_problem(422, "self-payment");
    let balances = gw.balances().await;
    assert_eq!((balances[&seller], balances[&buyer], balances[&other]), (21 * SAT, FUND - 21 * SAT, FUND));
    assert_eq!(gw.payment_count(&buyer_client).await, 1);
    assert_eq!(gw.payment_count(&other_client).await, 0);
    assert_paid_by(&gw.message(&key_s, &room, m.id).await, &buyer, 21 * SAT);

    // An open request of the seller's own is refused as a self-payment.
    let mine = gw.post_request(&key_s, &room, SAT, "mine", None).await;
    gw.pay_message_raw(&key_s, &room, mine.id, None).await.assert_problem(422, "self-payment");
    assert_open(&gw.message(&key_s, &room, mine.id).await);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_answers_the_same_payment() {
    let gw = Gateway::start().await;
    let (seller, _, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, buyer_client, key_b) = gw.new_agent("buyer", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let m = gw.post_request(&key_s, &room, 5 * SAT, "five", None).await;
    let first = gw.pay_message_raw(&key_b, &room, m.id, Some("order-5")).await;
    assert_payment(&first, 5 * SAT, &seller, &m.invoice.as_ref().unwrap().payment_hash);
    let again = gw.pay_message_raw(&key_b, &room, m.id, Some("order-5")).await;
    assert_eq!((again.status, &again.json), (200, &first.json));
    let balances = gw.balances().await;
    assert_eq!((balances[&seller], balances[&buyer]), (5 * SAT, FUND - 5 * SAT));
    assert_eq!(gw.payment_count(&buyer_client).await, 1);
}

#[tokio::test]
async fn an_expired_request_shows_expired_and_cannot_be_paid() {
    let gw = Gateway::start_with_dev_clock().await;
    let (seller, _, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, buyer_client, key_b) = gw.new_agent("buyer", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let m = gw.post_request(&key_s, &room, 3 * SAT, "hurry", Some(1)).await;
    let expires_at = chrono::DateTime::parse_from_rfc3339(&m.invoice.as_ref().unwrap().expires_at).unwrap();
    let created_at = chrono::DateTime::parse_from_rfc3339(&m.created_at).unwrap();
    let lifetime = (expires_at - created_at).num_milliseconds();
    assert!((0..=1_000).contains(&lifetime), "expiry_secs 1 is honoured: {lifetime} ms");

    // Past its time: the gateway's clock is moved, not waited for.
    gw.advance_clock(2_000).await;
    let status = gw.message(&key_b, &room, m.id).await.invoice.unwrap().status;
    assert_eq!(status, InvoiceStatus::Expired);
    let read = gw.message(&key_b, &room, m.id).await;
    assert!(read.receipt.is_none(), "{read:?}");

    gw.pay_message_raw(&key_b, &room, m.id, None).await.assert_problem(409, "invoice-expired");
    gw.pay_message_raw(&key_b, &room, m.id, Some("late")).await.assert_problem(409, "invoice-expired");
    gw.pay_raw(&key_b, &m.invoice.as_ref().unwrap().bolt11, "late", None).await.assert_problem(409, "invoice-expired");
    let balances = gw.balances().await;
    assert_eq!((balances[&seller], balances[&buyer]), (0, FUND));
    assert_eq!(gw.payment_count(&buyer_client).await, 0);
    assert_eq!(gw.message(&key_s, &room, m.id).await.invoice.unwrap().status, InvoiceStatus::Expired);
}

#[tokio::test]
async fn a_request_paid_directly_with_its_bolt11_shows_paid() {
    let gw = Gateway::start().await;
    let (seller, _, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, _, key_b) = gw.new_agent("buyer", 0).await;
    // The payer is not even a member: a BOLT11 invoice is payable by anyone.
    let (outsider, _, key_x) = gw.new_agent("outsider", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let m = gw.post_request(&key_s, &room, 8 * SAT, "eight", None).await;
    let inv = m.invoice.clone().unwrap();

    let r = gw.pay_raw(&key_x, &inv.bolt11, "paid outside the room", None).await;
    assert_payment(&r, 8 * SAT, &seller, &inv.payment_hash);
    let read = gw.message(&key_b, &room, m.id).await;
    assert_paid_by(&read, &outsider, 8 * SAT);
    assert_eq!(read.receipt.as_ref().unwrap().preimage, r.json["preimage"].as_str().unwrap());
    // The room's members cannot pay it again.
    let (late, _, key_l) = gw.new_agent("late", FUND).await;
    assert_eq!(gw.add_member_raw(&key_s, &room, &late).await.status, 200);
    gw.pay_message_raw(&key_l, &room, m.id, None).await.assert_problem(409, "invoice-already-paid");
    let balances = gw.balances().await;
    assert_eq!((balances[&seller], balances[&outsider], balances[&late]), (8 * SAT, FUND - 8 * SAT, FUND));
}

#[tokio::test]
async fn paying_a_request_goes_through_the_payers_policy() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (seller, _, key_s) = gw.new_agent("seller", 0).await;
    let (thrifty, thrifty_client, key_t) = gw.new_agent("thrifty", FUND).await;
    let (careful, careful_client, key_c) = gw.new_agent("careful", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&thrifty, &careful]).await.id;
    op.set_policy(&thrifty, &json!({"budgets": [{"limit_msat": 10 * SAT, "window": "1h", "kind": "rolling"}]}))
        .await
        .unwrap();
    op.set_policy(&careful, &json!({"approval_above_msat": 5 * SAT})).await.unwrap();

    // Over the budget: denied, nothing moves, the request stays open.
    let m = gw.post_request(&key_s, &room, 11 * SAT, "eleven", None).await;
    let r = gw.pay_message_raw(&key_t, &room, m.id, None).await;
    assert_eq!(common::assert_denied(&r, "budget-exceeded")["remaining_msat"].as_u64(), Some(10 * SAT), "{r:?}");
    assert_open(&gw.message(&key_s, &room, m.id).await);
    assert_eq!(gw.balances().await[&thrifty], FUND);
    assert_eq!(gw.payment_count(&thrifty_client).await, 0);
    // Within it: paid, and counted.
    let small = gw.post_request(&key_s, &room, 10 * SAT, "ten", None).await;
    let r = gw.pay_message_raw(&key_t, &room, small.id, None).await;
    assert_payment(&r, 10 * SAT, &seller, &small.invoice.as_ref().unwrap().payment_hash);
    assert_eq!(common::first_window(&op.budget(&thrifty).await.unwrap()), (10 * SAT, 0));

    // Above the approval threshold: held (202), reserved, still open.
    let r = gw.pay_message_raw(&key_c, &room, m.id, None).await;
    assert_eq!((r.status, r.json["status"].as_str()), (202, Some("held")), "{r:?}");
    assert_eq!(r.json["amount_msat"].as_u64(), Some(11 * SAT), "{r:?}");
    assert_eq!(r.json["agent_id"].as_str(), Some(careful.as_str()), "{r:?}");
    let approval_id = r.json["id"].as_str().unwrap().to_owned();
    assert_open(&gw.message(&key_s, &room, m.id).await);
    let w = careful_client.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.pending_msat), (FUND, 11 * SAT));
    // Approved: paid by the careful member, with its receipt.
    let decision = op.approve(&approval_id).await.unwrap();
    assert!(decision.payment.is_some(), "{decision:?}");
    assert_paid_by(&gw.message(&key_s, &room, m.id).await, &careful, 11 * SAT);
    let balances = gw.balances().await;
    assert_eq!(
        (balances[&seller], balances[&thrifty], balances[&careful]),
        (21 * SAT, FUND - 10 * SAT, FUND - 11 * SAT)
    );
    // At the threshold: paid at once.
    let five = gw.post_request(&key_s, &room, 5 * SAT, "five", None).await;
    assert_payment(
        &gw.pay_message_raw(&key_c, &room, five.id, None).await,
        5 * SAT,
        &seller,
        &five.invoice.unwrap().payment_hash,
    );
}

#[tokio::test]
async fn key_scopes_decide_who_pays_and_who_posts_requests() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (seller, _, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, buyer_client, _) = gw.new_agent("buyer", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let read_b = op.create_key(&buyer, Scope::Read).await.unwrap().key;
    let receive_b = op.create_key(&buyer, Scope::Receive).await.unwrap().key;
    let read_s = op.create_key(&seller, Scope::Read).await.unwrap().key;
    let receive_s = op.create_key(&seller, Scope::Receive).await.unwrap().key;

    let m = gw.post_request(&key_s, &room, 2 * SAT, "two", None).await;
    // Neither a read nor a receive key pays.
    for key in [&read_b, &receive_b] {
        gw.pay_message_raw(key, &room, m.id, None).await.assert_problem(403, "forbidden");
    }
    assert_open(&gw.message(&read_b, &room, m.id).await);
    assert_eq!(gw.balances().await[&buyer], FUND);
    assert_eq!(gw.payment_count(&buyer_client).await, 0);

    // A read key cannot post a request (it reads, and may talk).
    let body = json!({"payment_request": {"amount_msat": SAT, "memo": "from a read key"}});
    gw.post_raw(&read_s, &room, &body).await.assert_problem(403, "forbidden");
    assert_eq!(gw.all_messages(&key_s, &room).await.len(), 1);
    // A receive key can: the invoice is its agent's.
    let r = gw.post_raw(&receive_s, &room, &body).await;
    assert_eq!(r.status, 201, "{r:?}");
    let posted: Message = serde_json::from_value(r.json).unwrap();
    assert_eq!(posted.sender, seller);
    assert_open(&posted);
    let hash = posted.invoice.as_ref().unwrap().payment_hash.clone();
    let seller_invoices = gw.client(&read_s).invoices(None).await.unwrap().items;
    assert!(seller_invoices.iter().any(|i| i.payment_hash == hash), "the invoice is the seller's");
}

#[tokio::test]
async fn members_racing_to_pay_one_request_pay_it_once() {
    const RACERS: usize = 10;
    let gw = Gateway::start().await;
    let (seller, _, key_s) = gw.new_agent("seller", 0).await;
    let mut racers = Vec::new();
    for i in 0..RACERS {
        racers.push(gw.new_agent(&format!("racer{i}"), FUND).await);
    }
    let ids: Vec<&str> = racers.iter().map(|(id, _, _)| id.as_str()).collect();
    let room = gw.create_room(&key_s, "race", &ids).await.id;
    let m = gw.post_request(&key_s, &room, 13 * SAT, "first come", None).await;

    let (gw_ref, room_ref) = (&gw, room.as_str());
    let replies = futures_util::future::join_all(
        racers.iter().map(|(_, _, key)| async move { gw_ref.pay_message_raw(key, room_ref, m.id, None).await }),
    )
    .await;
    let winners: Vec<usize> = (0..RACERS).filter(|i| replies[*i].status == 200).collect();
    assert_eq!(winners.len(), 1, "exactly one payment: {replies:?}");
    for (i, r) in replies.iter().enumerate() {
        if i != winners[0] {
            r.assert_problem(409, "invoice-already-paid");
        }
    }
    let winner = &racers[winners[0]].0;
    assert_paid_by(&gw.message(&key_s, &room, m.id).await, winner, 13 * SAT);
    let balances = gw.balances().await;
    assert_eq!(balances[&seller], 13 * SAT);
    let debited: Vec<(&str, u64)> =
        racers.iter().filter(|(id, _, _)| balances[id] != FUND).map(|(id, _, _)| (id.as_str(), balances[id])).collect();
    assert_eq!(debited, [(winner.as_str(), FUND - 13 * SAT)]);
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
}

/// `coffer_payments_succeeded_total` and `coffer_payments_refused_total`
/// from `/metrics`.
async fn payment_counts(gw: &Gateway) -> (u64, u64) {
    let r = common::send(gw.request(reqwest::Method::GET, "/metrics", None)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let count = |name: &str| {
        let line = r.text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}: {}", r.text));
        line[name.len()..].trim().parse::<u64>().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    (count("coffer_payments_succeeded_total"), count("coffer_payments_refused_total"))
}

/// A room's payment request is a payment like any other on `/metrics`:
/// paid with the Pay action or by an auto-pay rule, it is counted as
/// `POST /v1/payments` is; a refused one counts as refused.
#[tokio::test]
async fn room_payments_are_counted_on_metrics_like_any_payment() {
    let gw = Gateway::start().await;
    let (seller, _, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, _, key_b) = gw.new_agent("buyer", FUND).await;
    let (auto, _, _) = gw.new_agent("auto-payer", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let (succeeded, refused) = payment_counts(&gw).await;

    let m = gw.post_request(&key_s, &room, 2 * SAT, "counted", None).await;
    let paid = gw.pay_message_raw(&key_b, &room, m.id, None).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!(payment_counts(&gw).await, (succeeded + 1, refused), "the Pay action counted once");

    gw.pay_message_raw(&key_b, &room, m.id, None).await.assert_problem(409, "invoice-already-paid");
    assert_eq!(payment_counts(&gw).await, (succeeded + 1, refused + 1), "a refused room payment counted");

    // An auto-pay rule pays through the same gateway call, and is counted.
    let settings = json!({"auto_pay_from": [seller], "auto_pay_max_msat": 50 * SAT});
    let r = gw.put_chat_raw(gw.operator_token(), &auto, &settings).await;
    assert_eq!(r.status, 200, "{r:?}");
    let auto_room = gw.create_room(&key_s, "auto", &[&auto]).await.id;
    let request = gw.post_request(&key_s, &auto_room, 3 * SAT, "paid by rule", None).await;
    assert!(request.receipt.is_some(), "auto-paid before the post answered: {request:?}");
    assert_eq!(payment_counts(&gw).await, (succeeded + 2, refused + 1), "the auto-payment counted");
}

/// The `Idempotency-Key` is read one way on every route that takes one: a
/// key that is not visible ASCII is refused with a problem naming the
/// header, never taken for another key, and nothing is paid.
#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused_on_every_paying_route() {
    let gw = Gateway::start().await;
    let (seller, seller_client, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, _, key_b) = gw.new_agent("buyer", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let m = gw.post_request(&key_s, &room, 2 * SAT, "keyed", None).await;
    let invoice = common::invoice(&seller_client, SAT).await;
    let non_ascii = reqwest::header::HeaderValue::from_bytes("café".as_bytes()).expect("an obs-text header value");
    let room_pay = gw
        .request(reqwest::Method::POST, &format!("/v1/rooms/{room}/messages/{}/pay", m.id), Some(&key_b))
        .header("Idempotency-Key", non_ascii.clone());
    let pay = gw
        .request(reqwest::Method::POST, "/v1/payments", Some(&key_b))
        .header("Idempotency-Key", non_ascii)
        .json(&json!({"bolt11": invoice.bolt11}));
    for request in [room_pay, pay] {
        let r = common::send(request).await;
        assert_eq!(r.assert_problem(400, "invalid-field")["field"], "Idempotency-Key", "{r:?}");
    }
    let balances = gw.balances().await;
    assert_eq!((balances[&seller], balances[&buyer]), (0, FUND), "nothing was paid");
}

/// Posts a payment request with extra fields (`hold`, `hold_secs`,
/// `escrow`), asserting `201`: the message as its poster reads it.
async fn post_trade_request(
    gw: &Gateway,
    key: &str,
    room: &str,
    amount_msat: u64,
    memo: &str,
    extra: Value,
) -> Message {
    let mut request = json!({"amount_msat": amount_msat, "memo": memo, "expiry_secs": 600});
    if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
        request.extend(extra.clone());
    }
    let r = gw.post_raw(key, room, &json!({"payment_request": request})).await;
    assert_eq!(r.status, 201, "posting a request: {r:?}");
    serde_json::from_value(r.json).expect("a message")
}

/// A request's card as `key` reads it: `(status, state, actions)`.
async fn card(gw: &Gateway, key: &str, room: &str, id: i64) -> (InvoiceStatus, String, Vec<String>) {
    let m = gw.message(key, room, id).await;
    let card = m.invoice.unwrap_or_else(|| panic!("message {id} is not a request"));
    (card.status, card.state, card.actions)
}

fn strs(actions: &[&str]) -> Vec<String> {
    actions.iter().map(|a| (*a).to_owned()).collect()
}

/// The next event of a room stream: an `invoice.*` event of this request,
/// as `(kind, state, actions)`.
#[track_caller]
fn invoice_event(event: &(String, Value), payment_hash: &str) -> (String, String, Vec<String>) {
    assert_eq!(event.1["payment_hash"].as_str(), Some(payment_hash), "{event:?}");
    let actions = serde_json::from_value(event.1["actions"].clone()).expect("the watcher's actions");
    (event.0.clone(), event.1["state"].as_str().unwrap_or_default().to_owned(), actions)
}

#[tokio::test]
async fn a_hold_request_paid_in_the_room_waits_for_its_payee_who_settles_it() {
    let gw = Gateway::start().await;
    let (seller, seller_client, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, buyer_client, key_b) = gw.new_agent("buyer", FUND).await;
    let (other, _, key_o) = gw.new_agent("other", FUND).await;
    let op = gw.operator_token().to_owned();
    let room = gw.create_room(&key_s, "shop", &[&buyer, &other]).await.id;

    let m = post_trade_request(&gw, &key_s, &room, 30 * SAT, "a translation", json!({"hold": true, "hold_secs": 900}))
        .await;
    let inv = m.invoice.clone().expect("a request");
    assert_eq!(m.text, "a translation", "a hold request's text is its memo");
    assert_eq!((inv.hold, inv.hold_secs, inv.escrow.as_ref()), (true, Some(900), None), "{inv:?}");
    assert_eq!((inv.state.as_str(), inv.payee.as_str()), ("open", seller.as_str()), "{inv:?}");
    assert_eq!((inv.payer.as_ref(), inv.payment_id.as_ref(), inv.deadline.as_ref()), (None, None, None), "{inv:?}");
    assert!(inv.actions.is_empty(), "the poster does not pay its own request: {inv:?}");
    let own = seller_client.invoice(&inv.payment_hash).await.expect("the poster's invoice");
    assert_eq!((own.hold, own.hold_secs), (true, Some(900)));
    // Each member reads the actions it may take.
    assert_eq!(card(&gw, &key_b, &room, m.id).await, (InvoiceStatus::Open, "open".into(), strs(&["pay"])));
    assert_eq!(card(&gw, &key_o, &room, m.id).await, (InvoiceStatus::Open, "open".into(), strs(&["pay"])));
    assert_eq!(card(&gw, &op, &room, m.id).await, (InvoiceStatus::Open, "open".into(), strs(&[])));

    // Watchers of the room, each told its own actions.
    let mut seller_watch = SseReader::connect(&gw, &key_s, &room, Some(m.id)).await.expect("the seller watches");
    let mut buyer_watch = SseReader::connect(&gw, &key_b, &room, Some(m.id)).await.expect("the buyer watches");

    // Paid in the room: the amount waits on the buyer's wallet.
    let r = gw.pay_message_raw(&key_b, &room, m.id, None).await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("held")), "{r:?}");
    assert!(r.json["preimage"].is_null(), "no preimage before settlement: {r:?}");
    let payment_id = r.json["id"].as_str().expect("a payment id").to_owned();
    assert_eq!(wallet(&buyer_client).await, (FUND, FUND - 30 * SAT, 30 * SAT));
    assert_eq!(wallet(&seller_client).await, (0, 0, 0));
    let accepted = gw.message(&key_s, &room, m.id).await;
    let card_s = accepted.invoice.clone().expect("a request");
    assert_eq!((card_s.status, card_s.state.as_str()), (InvoiceStatus::Accepted, "accepted"));
    assert_eq!(card_s.actions, strs(&["settle", "cancel"]), "the payee settles or cancels: {card_s:?}");
    assert_eq!(
        (card_s.payer.as_deref(), card_s.payment_id.as_deref()),
        (Some(buyer.as_str()), Some(payment_id.as_str()))
    );
    assert!(card_s.deadline.is_some(), "an accepted hold has a deadline: {card_s:?}");
    assert!(accepted.receipt.is_none(), "no receipt before settlement: {accepted:?}");
    assert_eq!(card(&gw, &key_b, &room, m.id).await, (InvoiceStatus::Accepted, "accepted".into(), strs(&[])));
    assert_eq!(card(&gw, &key_o, &room, m.id).await, (InvoiceStatus::Accepted, "accepted".into(), strs(&[])));
    assert_eq!(card(&gw, &op, &room, m.id).await, (InvoiceStatus::Accepted, "accepted".into(), strs(&[])));
    // Nobody pays it twice.
    gw.pay_message_raw(&key_o, &room, m.id, None).await.assert_problem(409, "invoice-already-paid");
    assert_eq!(
        invoice_event(&seller_watch.next().await, &inv.payment_hash),
        ("invoice.accepted".into(), "accepted".into(), strs(&["settle", "cancel"]))
    );
    assert_eq!(
        invoice_event(&buyer_watch.next().await, &inv.payment_hash),
        ("invoice.accepted".into(), "accepted".into(), strs(&[]))
    );

    // The payee settles: paid, with the receipt; nothing left to do.
    let path = format!("/v1/invoices/{}/settle", inv.payment_hash);
    let settled = trade::post(&gw, &key_s, &path, None).await;
    assert_eq!((settled.status, settled.json["status"].as_str()), (200, Some("succeeded")), "{settled:?}");
    let paid = gw.message(&key_b, &room, m.id).await;
    assert_paid_by(&paid, &buyer, 30 * SAT);
    assert_eq!(paid.invoice.as_ref().map(|i| (i.state.as_str(), i.actions.len())), Some(("paid", 0)));
    assert_eq!(card(&gw, &key_s, &room, m.id).await, (InvoiceStatus::Paid, "paid".into(), strs(&[])));
    assert_eq!(wallet(&buyer_client).await, (FUND - 30 * SAT, FUND - 30 * SAT, 0));
    assert_eq!(wallet(&seller_client).await, (30 * SAT, 30 * SAT, 0));
    for watch in [&mut seller_watch, &mut buyer_watch] {
        let event = watch.next().await;
        assert_eq!(invoice_event(&event, &inv.payment_hash), ("invoice.paid".into(), "paid".into(), strs(&[])));
        assert_eq!(event.1["receipt"], serde_json::to_value(paid.receipt.as_ref().unwrap()).unwrap());
    }
    // Settled once.
    trade::post(&gw, &key_s, &path, None).await.assert_problem(409, "invalid-state");
    trade::assert_audit(&gw).await;
}

#[tokio::test]
async fn an_escrow_request_is_paid_into_escrow_and_released_by_its_payer() {
    let gw = Gateway::start().await;
    let (worker, worker_client, key_w) = gw.new_agent("worker", 0).await;
    let (boss, boss_client, key_b) = gw.new_agent("boss", FUND).await;
    let (other, _, key_o) = gw.new_agent("other", FUND).await;
    let op = gw.operator_token().to_owned();
    let room = gw.create_room(&key_w, "jobs", &[&boss, &other]).await.id;
    let escrow = json!({"escrow": {"release_after_secs": 3600, "on_timeout": "refund"}});
    let m = post_trade_request(&gw, &key_w, &room, 40 * SAT, "label a batch", escrow).await;
    let inv = m.invoice.clone().expect("a request");
    assert_eq!(m.text, "label a batch\nescrow: release after 3600 s unless disputed, on timeout refund");
    let terms = inv.escrow.clone().expect("the escrow it asks for");
    assert_eq!((terms.release_after_secs, terms.on_timeout), (3600, Outcome::Refund));
    assert_eq!((inv.hold, inv.state.as_str(), inv.memo.as_str()), (false, "open", "label a batch"));
    assert_eq!(inv.payee, worker, "{inv:?}");
    let mut worker_watch = SseReader::connect(&gw, &key_w, &room, Some(m.id)).await.expect("the worker watches");
    let mut boss_watch = SseReader::connect(&gw, &key_b, &room, Some(m.id)).await.expect("the boss watches");

    // Paid through the room: into escrow, on the request's terms.
    let r = gw.pay_message_raw(&key_b, &room, m.id, None).await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("held")), "{r:?}");
    let payment_id = r.json["id"].as_str().expect("a payment id").to_owned();
    let payment =
        common::send(gw.request(reqwest::Method::GET, &format!("/v1/payments/{payment_id}"), Some(&key_b))).await;
    assert_eq!(
        (payment.json["escrow"]["kind"].as_str(), payment.json["escrow"]["on_timeout"].as_str()),
        (Some("escrow"), Some("refund")),
        "{payment:?}"
    );
    assert_eq!(wallet(&boss_client).await, (FUND, FUND - 40 * SAT, 40 * SAT));
    assert_eq!(
        card(&gw, &key_b, &room, m.id).await,
        (InvoiceStatus::Accepted, "held".into(), strs(&["release", "dispute"]))
    );
    assert_eq!(card(&gw, &key_w, &room, m.id).await, (InvoiceStatus::Accepted, "held".into(), strs(&["cancel"])));
    assert_eq!(card(&gw, &key_o, &room, m.id).await, (InvoiceStatus::Accepted, "held".into(), strs(&[])));
    assert_eq!(card(&gw, &op, &room, m.id).await, (InvoiceStatus::Accepted, "held".into(), strs(&[])));
    let held = gw.message(&key_o, &room, m.id).await.invoice.expect("a request");
    assert_eq!((held.payer.as_deref(), held.payment_id.as_deref()), (Some(boss.as_str()), Some(payment_id.as_str())));
    assert_eq!(
        invoice_event(&boss_watch.next().await, &inv.payment_hash),
        ("invoice.accepted".into(), "held".into(), strs(&["release", "dispute"]))
    );
    assert_eq!(
        invoice_event(&worker_watch.next().await, &inv.payment_hash),
        ("invoice.accepted".into(), "held".into(), strs(&["cancel"]))
    );
    // The payee cannot settle an escrow: its payer releases it.
    let settle = format!("/v1/invoices/{}/settle", inv.payment_hash);
    trade::post(&gw, &key_w, &settle, None).await.assert_problem(409, "invalid-state");

    let released = trade::post(&gw, &key_b, &format!("/v1/payments/{payment_id}/release"), None).await;
    assert_eq!((released.status, released.json["status"].as_str()), (200, Some("succeeded")), "{released:?}");
    let paid = gw.message(&key_w, &room, m.id).await;
    assert_paid_by(&paid, &boss, 40 * SAT);
    assert_eq!(paid.invoice.as_ref().map(|i| (i.state.as_str(), i.actions.len())), Some(("released", 0)));
    assert_eq!(card(&gw, &key_b, &room, m.id).await, (InvoiceStatus::Paid, "released".into(), strs(&[])));
    assert_eq!(wallet(&boss_client).await, (FUND - 40 * SAT, FUND - 40 * SAT, 0));
    assert_eq!(wallet(&worker_client).await, (40 * SAT, 40 * SAT, 0));
    for watch in [&mut boss_watch, &mut worker_watch] {
        let event = watch.next().await;
        assert_eq!(invoice_event(&event, &inv.payment_hash), ("invoice.paid".into(), "released".into(), strs(&[])));
    }
    trade::assert_audit(&gw).await;
}

#[tokio::test]
async fn a_cancelled_hold_and_a_disputed_escrow_refund_their_payers() {
    let gw = Gateway::start().await;
    let (seller, seller_client, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, buyer_client, key_b) = gw.new_agent("buyer", FUND).await;
    let op = gw.operator_token().to_owned();
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let mut watch = SseReader::connect(&gw, &key_s, &room, None).await.expect("the seller watches");

    // A hold its payee cannot serve: cancelled, the payer refunded.
    let hold = post_trade_request(&gw, &key_s, &room, 25 * SAT, "a GPU hour", json!({"hold": true})).await;
    let hold_inv = hold.invoice.clone().expect("a request");
    assert_eq!((hold_inv.hold_secs, hold_inv.payee.as_str()), (Some(3600), seller.as_str()), "the default hold time");
    assert_eq!(watch.next().await.0, "message.posted");
    let r = gw.pay_message_raw(&key_b, &room, hold.id, None).await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("held")), "{r:?}");
    assert_eq!(wallet(&buyer_client).await, (FUND, FUND - 25 * SAT, 25 * SAT));
    assert_eq!(invoice_event(&watch.next().await, &hold_inv.payment_hash).0, "invoice.accepted");
    let cancel = format!("/v1/invoices/{}/cancel", hold_inv.payment_hash);
    let cancelled = trade::post(&gw, &key_s, &cancel, None).await;
    assert_eq!((cancelled.status, cancelled.json["status"].as_str()), (200, Some("refunded")), "{cancelled:?}");
    assert_eq!(card(&gw, &key_b, &room, hold.id).await, (InvoiceStatus::Cancelled, "cancelled".into(), strs(&[])));
    assert_eq!(card(&gw, &key_s, &room, hold.id).await, (InvoiceStatus::Cancelled, "cancelled".into(), strs(&[])));
    assert!(gw.message(&key_b, &room, hold.id).await.receipt.is_none(), "a cancelled hold has no receipt");
    assert_eq!(
        invoice_event(&watch.next().await, &hold_inv.payment_hash),
        ("invoice.cancelled".into(), "cancelled".into(), strs(&[]))
    );
    assert_eq!(wallet(&buyer_client).await, (FUND, FUND, 0));
    assert_eq!(wallet(&seller_client).await, (0, 0, 0));
    gw.pay_message_raw(&key_b, &room, hold.id, None).await.assert_well_formed_problem();

    // An escrow disputed by its payer, resolved by the operator for it.
    let escrow = json!({"escrow": {"release_after_secs": 600, "on_timeout": "release"}});
    let job = post_trade_request(&gw, &key_s, &room, 15 * SAT, "a bad job", escrow).await;
    let job_inv = job.invoice.clone().expect("a request");
    assert_eq!(watch.next().await.0, "message.posted");
    let r = gw.pay_message_raw(&key_b, &room, job.id, None).await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("held")), "{r:?}");
    let payment_id = r.json["id"].as_str().expect("a payment id").to_owned();
    assert_eq!(invoice_event(&watch.next().await, &job_inv.payment_hash).0, "invoice.accepted");
    let disputed = trade::post(&gw, &key_b, &format!("/v1/payments/{payment_id}/dispute"), None).await;
    assert_eq!((disputed.status, disputed.json["status"].as_str()), (200, Some("disputed")), "{disputed:?}");
    assert_eq!(card(&gw, &key_b, &room, job.id).await, (InvoiceStatus::Accepted, "disputed".into(), strs(&[])));
    assert_eq!(card(&gw, &key_s, &room, job.id).await, (InvoiceStatus::Accepted, "disputed".into(), strs(&["cancel"])));
    assert_eq!(card(&gw, &op, &room, job.id).await, (InvoiceStatus::Accepted, "disputed".into(), strs(&["resolve"])));
    assert_eq!(
        invoice_event(&watch.next().await, &job_inv.payment_hash),
        ("invoice.disputed".into(), "disputed".into(), strs(&["cancel"]))
    );
    let resolved =
        trade::post(&gw, &op, &format!("/v1/payments/{payment_id}/resolve"), Some(json!({"outcome": "refund"}))).await;
    assert_eq!((resolved.status, resolved.json["status"].as_str()), (200, Some("refunded")), "{resolved:?}");
    assert_eq!(card(&gw, &key_b, &room, job.id).await, (InvoiceStatus::Cancelled, "refunded".into(), strs(&[])));
    assert_eq!(card(&gw, &op, &room, job.id).await, (InvoiceStatus::Cancelled, "refunded".into(), strs(&[])));
    assert_eq!(
        invoice_event(&watch.next().await, &job_inv.payment_hash),
        ("invoice.cancelled".into(), "refunded".into(), strs(&[]))
    );
    assert_eq!(wallet(&buyer_client).await, (FUND, FUND, 0));
    assert_eq!(wallet(&seller_client).await, (0, 0, 0));
    trade::assert_audit(&gw).await;
}

#[tokio::test]
async fn a_request_asks_for_a_hold_or_for_escrow_within_bounds() {
    let gw = Gateway::start().await;
    let (_, _, key_s) = gw.new_agent("seller", 0).await;
    let room = gw.create_room(&key_s, "shop", &[]).await.id;
    let refused = [
        (json!({"hold": true, "escrow": {"release_after_secs": 60, "on_timeout": "refund"}}), "payment_request.escrow"),
        (json!({"hold_secs": 60}), "payment_request.hold_secs"),
        (json!({"hold": true, "hold_secs": 0}), "payment_request.hold_secs"),
        (json!({"hold": true, "hold_secs": 604_801}), "payment_request.hold_secs"),
        (json!({"escrow": {"release_after_secs": 0, "on_timeout": "refund"}}), "escrow.release_after_secs"),
        (json!({"escrow": {"release_after_secs": 2_592_001, "on_timeout": "release"}}), "escrow.release_after_secs"),
    ];
    for (extra, field) in refused {
        let mut request = json!({"amount_msat": SAT, "memo": "bounded"});
        if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
            request.extend(extra.clone());
        }
        let r = gw.post_raw(&key_s, &room, &json!({"payment_request": request})).await;
        assert_eq!(r.assert_problem(400, "invalid-field")["field"].as_str(), Some(field), "{extra}");
    }
    let unknown =
        json!({"payment_request": {"amount_msat": SAT, "escrow": {"release_after_secs": 60, "on_timeout": "keep"}}});
    gw.post_raw(&key_s, &room, &unknown).await.assert_problem(400, "malformed-request");
    assert!(gw.messages_page(&key_s, &room, 0, 10).await.is_empty(), "nothing refused was posted");
}

#[tokio::test]
async fn requests_past_their_deadline_end_by_their_rule_and_the_watchers_are_told() {
    let gw = Gateway::start_with_dev_clock().await;
    let (_, seller_client, key_s) = gw.new_agent("seller", 0).await;
    let (buyer, buyer_client, key_b) = gw.new_agent("buyer", FUND).await;
    let room = gw.create_room(&key_s, "shop", &[&buyer]).await.id;
    let hold =
        post_trade_request(&gw, &key_s, &room, 10 * SAT, "served late", json!({"hold": true, "hold_secs": 60})).await;
    let escrow = json!({"escrow": {"release_after_secs": 60, "on_timeout": "release"}});
    let job = post_trade_request(&gw, &key_s, &room, 20 * SAT, "released on time", escrow).await;
    let mut watch = SseReader::connect(&gw, &key_b, &room, Some(job.id)).await.expect("the buyer watches");
    for m in [&hold, &job] {
        let r = gw.pay_message_raw(&key_b, &room, m.id, None).await;
        assert_eq!((r.status, r.json["status"].as_str()), (200, Some("held")), "{r:?}");
        assert_eq!(watch.next().await.0, "invoice.accepted");
    }
    assert_eq!(wallet(&buyer_client).await, (FUND, FUND - 30 * SAT, 30 * SAT));

    gw.advance_clock(59_000).await;
    assert_eq!(card(&gw, &key_s, &room, hold.id).await.1, "accepted", "not yet");
    assert_eq!(card(&gw, &key_b, &room, job.id).await.1, "held", "not yet");
    // At the deadline: the hold is cancelled, the escrow released by its rule.
    gw.advance_clock(1_000).await;
    assert_eq!(card(&gw, &key_s, &room, hold.id).await, (InvoiceStatus::Cancelled, "cancelled".into(), strs(&[])));
    assert_eq!(card(&gw, &key_b, &room, job.id).await, (InvoiceStatus::Paid, "released".into(), strs(&[])));
    let mut told = [watch.next().await, watch.next().await];
    told.sort_by_key(|(kind, _)| kind.clone());
    let hash = |m: &Message| m.invoice.as_ref().map(|i| i.payment_hash.clone()).unwrap_or_default();
    assert_eq!(invoice_event(&told[0], &hash(&hold)), ("invoice.cancelled".into(), "cancelled".into(), strs(&[])));
    assert_eq!(invoice_event(&told[1], &hash(&job)), ("invoice.paid".into(), "released".into(), strs(&[])));
    assert_eq!(wallet(&buyer_client).await, (FUND - 20 * SAT, FUND - 20 * SAT, 0));
    assert_eq!(wallet(&seller_client).await, (20 * SAT, 20 * SAT, 0));
    assert_eq!(gw.message(&key_s, &room, job.id).await.receipt.map(|r| r.payer), Some(buyer));
    trade::assert_audit(&gw).await;
}
