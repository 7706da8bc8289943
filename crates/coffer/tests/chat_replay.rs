//! A watcher that connects after a long conversation gets all of it: the
//! replay pages through the backlog before going live.

mod common;

use common::{Gateway, SseReader};

#[tokio::test]
async fn a_backlog_longer_than_a_page_is_replayed_whole_then_live() {
    let gw = Gateway::start().await;
    let (alice, _, alice_key) = gw.new_agent("alice", 0).await;
    let room = gw.create_room(&alice_key, "long", &[]).await;
    assert_eq!(room.members, [alice]);
    let total = 450; // more than two pages of 200
    for i in 0..total {
        gw.post_text(&alice_key, &room.id, &format!("line {i}")).await;
    }
    let mut watcher = SseReader::connect(&gw, &alice_key, &room.id, Some(0)).await.expect("a stream");
    let mut texts = Vec::new();
    for _ in 0..total {
        let (kind, data) = watcher.next().await;
        assert_eq!(kind, "message.posted", "{data}");
        texts.push(data["text"].as_str().unwrap().to_owned());
    }
    let expected: Vec<String> = (0..total).map(|i| format!("line {i}")).collect();
    assert_eq!(texts, expected, "every message, once, in order");
    gw.post_text(&alice_key, &room.id, "and now live").await;
    let (kind, data) = watcher.next().await;
    assert_eq!((kind.as_str(), data["text"].as_str()), ("message.posted", Some("and now live")));
}
