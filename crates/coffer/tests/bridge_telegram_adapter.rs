//! The Telegram adapter (`coffer::bridge::telegram`) against the local
//! stand-in of the Bot API (`common::telegram`): sending with buttons and
//! an image, editing, answering presses, polling with a cursor, and how
//! refusals and outages come back, never with the bot's token in them.

mod common;

use coffer::bridge::telegram::Telegram;
use coffer::bridge::{BridgeError, Button, Inbound, Messenger, Outbound, Update, User};
use coffer::secrets::Secret;
use common::telegram::{RETRY_AFTER_SECS, StandIn};
use std::time::{Duration, Instant};

const CHAT: i64 = 4242;
const ALICE: i64 = 1001;

fn bot(stand_in: &StandIn) -> Telegram {
    Telegram::new(stand_in.url(), Secret::new(stand_in.token().to_owned())).unwrap().with_poll_timeout(1)
}

fn button(label: &str, data: &str) -> Button {
    Button { label: label.into(), data: data.into() }
}

fn text(text: &str, buttons: Vec<Button>) -> Outbound {
    Outbound { text: text.into(), image_png: None, buttons }
}

/// The error's text, both ways it can be printed, checked free of the token.
fn shown(stand_in: &StandIn, e: &BridgeError) -> String {
    let all = format!("{e} {e:?}");
    let secret = stand_in.token().split(':').nth(1).unwrap();
    assert!(!all.contains(secret), "the token leaked: {all}");
    all
}

/// Polls until `n` updates came, as the bridge would, storing the cursor.
async fn poll(telegram: &Telegram, cursor: &mut Option<String>, n: usize) -> Vec<Update> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} updates came", got.len());
        for update in telegram.updates(cursor.as_deref()).await.unwrap() {
            *cursor = Some(update.cursor.clone());
            got.push(update);
        }
    }
    got
}

#[tokio::test]
async fn sends_with_buttons_and_an_image() {
    let stand_in = StandIn::start().await;
    let telegram = bot(&stand_in);
    assert_eq!(telegram.name(), "telegram");
    let message = Outbound {
        text: "Pay 1000 sat?".into(),
        image_png: Some(b"\x89PNG\r\n\x1a\n-a-qr-code-".to_vec()),
        buttons: vec![button("Approve", "a:1"), button("Deny", "d:1")],
    };
    let id = telegram.send(&CHAT.to_string(), &message).await.unwrap();
    let sent = stand_in.messages(CHAT);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].id.to_string(), id);
    assert_eq!(sent[0].text, "Pay 1000 sat?");
    assert_eq!(sent[0].buttons, [("Approve".into(), "a:1".into()), ("Deny".into(), "d:1".into())]);
    assert!(!sent[0].photo);
    assert!(sent[1].photo, "the image follows the text");

    let many: Vec<Button> = (0..5).map(|i| button(&format!("Option number {i}"), &format!("o:{i}"))).collect();
    telegram.send(&CHAT.to_string(), &text("choose", many)).await.unwrap();
    assert_eq!(stand_in.messages(CHAT)[2].buttons.len(), 5);
    assert!(stand_in.messages(CHAT).iter().all(|m| m.edits == 0));
}

#[tokio::test]
async fn edits_replace_text_and_buttons() {
    let stand_in = StandIn::start().await;
    let telegram = bot(&stand_in);
    let chat = CHAT.to_string();
    let id = telegram.send(&chat, &text("Approve?", vec![button("Approve", "a:1")])).await.unwrap();

    telegram.edit(&chat, &id, &text("Approved by Alice", vec![])).await.unwrap();
    let edited = &stand_in.messages(CHAT)[0];
    assert_eq!((edited.text.as_str(), edited.buttons.len(), edited.edits), ("Approved by Alice", 0, 1));

    // The same again changes nothing: Telegram says so, and that is success.
    telegram.edit(&chat, &id, &text("Approved by Alice", vec![])).await.unwrap();
    assert_eq!(stand_in.messages(CHAT)[0].edits, 1);

    match telegram.edit(&chat, "999999", &text("x", vec![])).await {
        Err(e @ BridgeError::Refused(_)) => assert!(shown(&stand_in, &e).contains("message to edit not found")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(telegram.edit(&chat, "not-a-number", &text("x", vec![])).await, Err(BridgeError::Refused(_))));
}

#[tokio::test]
async fn updates_follow_the_cursor() {
    let stand_in = StandIn::start().await;
    let telegram = bot(&stand_in);
    let first = stand_in.user_says(CHAT, ALICE, "Alice", "/balance");
    stand_in.user_says(CHAT, ALICE, "Alice", "hello");

    let mut cursor = None;
    let got = poll(&telegram, &mut cursor, 2).await;
    assert_eq!(
        got[0].inbound,
        Some(Inbound::Text {
            chat: CHAT.to_string(),
            user: User { id: ALICE.to_string(), name: "Alice".into() },
            id: first.to_string(),
            text: "/balance".into(),
            reply_to: None,
        })
    );
    // Without the cursor, Telegram answers them again (unconfirmed).
    assert_eq!(telegram.updates(None).await.unwrap().len(), 2);
    // With it, they are confirmed and forgotten; the poll waits, then
    // answers nothing.
    assert!(telegram.updates(cursor.as_deref()).await.unwrap().is_empty());
    assert!(stand_in.unconfirmed().is_empty());
    let delivered = stand_in.updates_delivered();
    assert_eq!(delivered.len(), 4);
    assert_eq!(delivered[..2], delivered[2..]);

    // A reply names the bot's message it answers.
    let asked = telegram.send(&CHAT.to_string(), &text("Which?", vec![])).await.unwrap();
    let reply = stand_in.user_replies(CHAT, ALICE, "Alice", asked.parse().unwrap(), "that one");
    let got = poll(&telegram, &mut cursor, 1).await;
    match &got[0].inbound {
        Some(Inbound::Text { id, reply_to, .. }) => {
            assert_eq!((id.clone(), reply_to.as_deref()), (reply.to_string(), Some(asked.as_str())));
        }
        other => panic!("{other:?}"),
    }

    assert!(matches!(telegram.updates(Some("next")).await, Err(BridgeError::Refused(_))));
}

#[tokio::test]
async fn a_long_poll_ends_when_an_update_comes() {
    let stand_in = StandIn::start().await;
    let telegram = bot(&stand_in).with_poll_timeout(20);
    let later = stand_in.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        later.user_says(CHAT, ALICE, "Alice", "wake up");
    });
    let started = Instant::now();
    let got = telegram.updates(None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the update: {:?}", started.elapsed());
}

#[tokio::test]
async fn presses_are_answered_once() {
    let stand_in = StandIn::start().await;
    let telegram = bot(&stand_in);
    let chat = CHAT.to_string();
    let asked = telegram.send(&chat, &text("Approve?", vec![button("Approve", "a:1")])).await.unwrap();
    let callback = stand_in.user_presses(CHAT, ALICE, "Alice", asked.parse().unwrap(), "a:1");

    let mut cursor = None;
    let press = poll(&telegram, &mut cursor, 1).await.remove(0).inbound.unwrap();
    assert_eq!(
        press,
        Inbound::Press {
            chat: chat.clone(),
            user: User { id: ALICE.to_string(), name: "Alice".into() },
            id: callback.clone(),
            data: "a:1".into(),
            message: Some(asked.clone()),
        }
    );
    telegram.answer(&press, "Approved").await.unwrap();
    assert_eq!(stand_in.answered(&callback).as_deref(), Some("Approved"));

    // Delivered twice: the same press under a new update id; a second
    // answer is refused by Telegram.
    stand_in.redeliver(&callback);
    let again = poll(&telegram, &mut cursor, 1).await.remove(0);
    assert_eq!(again.inbound.as_ref(), Some(&press));
    assert!(matches!(telegram.answer(&press, "Approved").await, Err(BridgeError::Refused(_))));
    let delivered = stand_in.updates_delivered();
    let mut unique = delivered.clone();
    unique.dedup();
    assert_eq!(unique, delivered, "no update delivered twice once confirmed");

    let said = Inbound::Text {
        chat,
        user: User { id: "1".into(), name: "x".into() },
        id: "1".into(),
        text: "x".into(),
        reply_to: None,
    };
    assert!(matches!(telegram.answer(&said, "x").await, Err(BridgeError::Refused(_))));
}

#[tokio::test]
async fn outages_and_refusals_map_to_their_errors() {
    let stand_in = StandIn::start().await;
    let telegram = bot(&stand_in);
    let chat = CHAT.to_string();

    stand_in.fail_next(1, 429);
    match telegram.updates(None).await {
        Err(e @ BridgeError::Unavailable { retry_after_ms: Some(ms), .. }) => {
            assert_eq!(ms, RETRY_AFTER_SECS * 1000);
            shown(&stand_in, &e);
        }
        other => panic!("{other:?}"),
    }
    stand_in.fail_next(1, 502);
    match telegram.send(&chat, &text("hi", vec![])).await {
        Err(e @ BridgeError::Unavailable { retry_after_ms: None, .. }) => assert!(shown(&stand_in, &e).contains("502")),
        other => panic!("{other:?}"),
    }
    assert!(stand_in.messages(CHAT).is_empty());
    // The outage is over.
    telegram.send(&chat, &text("hi", vec![])).await.unwrap();

    match telegram.send(&chat, &text("", vec![])).await {
        Err(e @ BridgeError::Refused(_)) => assert!(shown(&stand_in, &e).contains("message text is empty")),
        other => panic!("{other:?}"),
    }
    match telegram.send(&chat, &text("x", vec![button("Too long", &"d".repeat(65))])).await {
        Err(e @ BridgeError::Refused(_)) => assert!(shown(&stand_in, &e).contains("BUTTON_DATA_INVALID")),
        other => panic!("{other:?}"),
    }

    let wrong = Telegram::new(stand_in.url(), Secret::new(format!("{}x", stand_in.token()))).unwrap();
    match wrong.send(&chat, &text("hi", vec![])).await {
        Err(e @ BridgeError::Refused(_)) => assert!(shown(&stand_in, &e).contains("Unauthorized")),
        other => panic!("{other:?}"),
    }

    // Nothing listens there: a connection refused, without the URL.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let gone = Telegram::new(&closed, Secret::new(stand_in.token().to_owned())).unwrap();
    match gone.send(&chat, &text("hi", vec![])).await {
        Err(e @ BridgeError::Unavailable { .. }) => {
            let all = shown(&stand_in, &e);
            assert!(!all.contains("/bot"), "{all}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{telegram:?}").contains(stand_in.token()));
}

#[tokio::test]
async fn an_image_that_fails_does_not_fail_the_text() {
    let stand_in = StandIn::start().await;
    let telegram = bot(&stand_in);
    let message = Outbound { text: "Pay this".into(), image_png: Some(b"not a png".to_vec()), buttons: vec![] };
    let id = telegram.send(&CHAT.to_string(), &message).await.unwrap();
    let sent = stand_in.messages(CHAT);
    assert_eq!(sent.len(), 1, "the text only: {sent:?}");
    assert_eq!(sent[0].id.to_string(), id);
    stand_in.wait_for("the text to stay", |s| s.messages(CHAT).len() == 1).await;
}
