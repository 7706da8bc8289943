//! The Matrix adapter (`coffer::bridge::matrix`) against a real homeserver:
//! the Synapse that `.ci/run` starts, its users driven through matrix-nio
//! (`tests/common/matrix.rs`). The bot joins a room it is invited to,
//! reads its users' texts, replies and reactions, and sends, edits and
//! answers as they then read it.

mod common;

use coffer::bridge::matrix::Matrix;
use coffer::bridge::{BridgeError, Inbound, Messenger, Outbound, Update, User};
use coffer::secrets::Secret;
use common::matrix::{self, MatrixUser, Seen};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn adapter(url: &str, bot: &MatrixUser) -> Matrix {
    Matrix::new(url, &bot.user_id, Secret::new(bot.access_token.clone())).expect("the adapter").with_sync_timeout(1_000)
}

/// Syncs from `cursor` until `count` inbound updates came (at most
/// [`WAIT`]); answers them and the cursor after them, checking that every
/// batch's last update carries the batch's new cursor and the others the
/// cursor before it.
async fn read(bot: &Matrix, cursor: &mut String, count: usize) -> Vec<Inbound> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while seen.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} updates within {WAIT:?}: {seen:#?}",
            seen.len()
        );
        let batch: Vec<Update> = bot.updates(Some(cursor)).await.expect("a sync");
        if let Some((last, rest)) = batch.split_last() {
            for update in rest {
                assert_eq!(&update.cursor, cursor, "the cursor moves on with a batch's last update only");
            }
            *cursor = last.cursor.clone();
        }
        seen.extend(batch.into_iter().filter_map(|u| u.inbound));
    }
    seen
}

fn text_of(seen: &[Seen], id: &str) -> Option<Seen> {
    seen.iter().find(|s| s.event_id == id).cloned()
}

#[tokio::test]
async fn the_bot_joins_reads_sends_edits_and_answers_in_a_real_room() {
    let Some(hs) = matrix::homeserver("the Matrix adapter against Synapse") else { return };
    let (bot_user, alice, bob) =
        tokio::join!(hs.register("coffer-bot", "coffer"), hs.register("alice", "Alice"), hs.register("bob", "Bob"));
    let bot = adapter(&hs.url, &bot_user);
    assert_eq!(bot.name(), "matrix");

    // The first sync: where "now" is, no history.
    let first = bot.updates(None).await.expect("the first sync");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].inbound.is_none());
    let mut cursor = first[0].cursor.clone();

    // Alice makes a room and invites the bot and Bob; what she says before
    // the bot is in is not handed to the bridge.
    let room = alice.create_room(&[&bot_user.user_id, &bob.user_id]).await;
    bob.join(&room).await;
    alice.send(&room, "said before the bot joined", None).await;

    // The bot joins when a sync shows the invitation: until then it cannot
    // send there.
    let deadline = tokio::time::Instant::now() + WAIT;
    let hello = Outbound { text: "coffer is here".into(), ..Outbound::default() };
    let card = loop {
        let batch = bot.updates(Some(&cursor)).await.expect("a sync");
        if let Some(last) = batch.last() {
            cursor = last.cursor.clone();
        }
        assert!(batch.iter().all(|u| u.inbound.is_none()), "no history: {batch:?}");
        match bot.send(&room, &hello).await {
            Ok(id) => break id,
            Err(BridgeError::Refused(_)) => assert!(tokio::time::Instant::now() < deadline, "the bot never joined"),
            Err(e) => panic!("sending: {e}"),
        }
    };

    // Texts, a rich reply (with its fallback) and a reaction, as the bridge reads them.
    let text = alice.send(&room, "hello bot\nsecond line", None).await;
    let reply = bob.send(&room, "!pay", Some(&card)).await;
    let reaction = alice.react(&room, &card, "👍").await;
    let inbound = read(&bot, &mut cursor, 3).await;
    let alice_is = User { id: alice.user_id.clone(), name: "Alice".into() };
    let bob_is = User { id: bob.user_id.clone(), name: "Bob".into() };
    assert_eq!(
        inbound,
        [
            Inbound::Text {
                chat: room.clone(),
                user: alice_is.clone(),
                id: text,
                text: "hello bot\nsecond line".into(),
                reply_to: None
            },
            Inbound::Text {
                chat: room.clone(),
                user: bob_is,
                id: reply,
                text: "!pay".into(),
                reply_to: Some(card.clone())
            },
            Inbound::Press {
                chat: room.clone(),
                user: alice_is,
                id: reaction,
                data: String::new(),
                message: Some(card.clone())
            },
        ]
    );
    // Nothing again after the cursor: the bot's own messages are not read.
    let after = bot.updates(Some(&cursor)).await.expect("a sync");
    assert!(after.iter().all(|u| u.inbound.is_none()), "{after:?}");

    // A message with an image: Bob reads the text, and the image after it.
    let png = coffer::http::qr::png("lnbcrt10u1ptest", 4).expect("a QR code");
    let request = Outbound {
        text: "Pay 1000 sat <to> Bob & co\nreply !pay".into(),
        image_png: Some(png.clone()),
        ..Default::default()
    };
    let sent = bot.send(&room, &request).await.expect("sent with its image");
    let (shown, image) = bob
        .wait_for(&room, WAIT, |seen| {
            let at = seen.iter().position(|s| s.event_id == sent)?;
            let image = seen[at + 1..]
                .iter()
                .find(|s| s.sender == bot_user.user_id && s.msgtype.as_deref() == Some("m.image"))?;
            Some((seen[at].clone(), image.clone()))
        })
        .await;
    assert_eq!(shown.body.as_deref(), Some("Pay 1000 sat <to> Bob & co\nreply !pay"));
    assert_eq!(shown.formatted_body.as_deref(), Some("Pay 1000 sat &lt;to&gt; Bob &amp; co<br>reply !pay"));
    assert!(image.url.as_deref().is_some_and(|u| u.starts_with("mxc://")), "{image:?}");
    let info = image.info.expect("the image's info");
    assert_eq!(info["mimetype"], "image/png");
    assert_eq!(info["size"], png.len());
    assert!(info["w"].as_u64().is_some_and(|w| w > 0) && info["w"] == info["h"], "{info}");

    // An edit: Bob reads the new text in place of the old.
    bot.edit(&room, &sent, &Outbound { text: "Paid: 1000 sat".into(), ..Default::default() }).await.expect("edited");
    let edited = bob
        .wait_for(&room, WAIT, |seen| text_of(seen, &sent).filter(|s| s.body.as_deref() == Some("Paid: 1000 sat")))
        .await;
    assert!(edited.edited);
    assert!(
        !bob.messages(&room).await.iter().any(|s| s.body.as_deref() == Some("* Paid: 1000 sat")),
        "the edit is not a message of its own"
    );

    // Answering the reaction: a notice in reply to the message reacted to.
    let press = inbound[2].clone();
    bot.answer(&press, "done").await.expect("answered");
    let notice = bob
        .wait_for(&room, WAIT, |seen| {
            seen.iter().find(|s| s.msgtype.as_deref() == Some("m.notice") && s.body.as_deref() == Some("done")).cloned()
        })
        .await;
    assert_eq!(notice.reply_to.as_deref(), Some(card.as_str()));
    assert_eq!(notice.sender, bot_user.user_id);

    // Refusals: a room the bot is not in, a message it cannot edit.
    let elsewhere = bob.create_room(&[]).await;
    match bot.send(&elsewhere, &hello).await {
        Err(BridgeError::Refused(why)) => assert!(why.contains("M_FORBIDDEN"), "{why}"),
        other => panic!("sent to a room the bot is not in: {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_token_is_refused_without_showing_it_and_no_server_is_unavailable() {
    let Some(hs) = matrix::homeserver("the Matrix adapter against Synapse") else { return };
    let token = "syt_not_a_real_token_f00";
    let bot = Matrix::new(&hs.url, "@nobody:localhost", Secret::new(token.into())).expect("the adapter");
    match bot.updates(None).await {
        Err(BridgeError::Refused(why)) => {
            assert!(why.contains("M_UNKNOWN_TOKEN"), "{why}");
            assert!(!why.contains(token), "{why}");
        }
        other => panic!("a bad token: {other:?}"),
    }
    // A port where nothing listens.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    let gone = Matrix::new(&format!("http://127.0.0.1:{port}"), "@nobody:localhost", Secret::new(token.into()))
        .expect("the adapter");
    match gone.send("!room:localhost", &Outbound { text: "x".into(), ..Default::default() }).await {
        Err(BridgeError::Unavailable { detail, .. }) => assert!(!detail.contains(token), "{detail}"),
        other => panic!("no homeserver: {other:?}"),
    }
}
