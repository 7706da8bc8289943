//! One configuration file: `coffer config example`, `coffer config check`,
//! and `coffer serve --config`, whose settings the flags and the
//! environment override.

mod common;

use common::{Gateway, send};
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_coffer");

async fn coffer(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("COFFER_OPERATOR_TOKEN")
        .output()
        .await
        .expect("running coffer")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn the_example_passes_the_check() {
    let out = coffer(&["config", "example"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("coffer.toml");
    std::fs::write(&file, &out.stdout).expect("the example written");
    let checked = coffer(&["config", "check", &file.display().to_string()]).await;
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(String::from_utf8_lossy(&checked.stdout).ends_with(": ok\n"), "{}", text(&checked));
}

#[tokio::test]
async fn each_bad_file_fails_naming_its_field() {
    let dir = tempfile::tempdir().expect("a folder");
    let secret = dir.path().join("short-token");
    std::fs::write(&secret, "cop_short\n").expect("a secret file");
    let missing = dir.path().join("nowhere");
    let cases: [(&str, String, &str); 11] = [
        ("unknown field", "[server]\nlisen = \"127.0.0.1:1\"\n".into(), "server.lisen"),
        ("unknown section", "[sever]\nlisten = \"127.0.0.1:1\"\n".into(), "sever.listen"),
        ("wrong type", "[limits]\ntree_depth = \"eight\"\n".into(), "limits.tree_depth"),
        ("negative limit", "[limits]\nstreams_total = -1\n".into(), "limits.streams_total"),
        ("zero limit", "[limits]\nstreams_total = 0\n".into(), "limits.streams_total"),
        ("bad URL", "[server]\npublic_url = \"ftp://pay.example\"\n".into(), "server.public_url"),
        ("bad relay", "[nwc]\nrelays = [\"http://relay.example\"]\n".into(), "nwc.relays"),
        ("bad address", "[server]\nlisten = \"localhost\"\n".into(), "server.listen"),
        ("bad backend", "[lightning]\nbackend = \"paypal\"\n".into(), "lightning.backend"),
        (
            "missing secret file",
            format!("[server]\noperator_token_file = {:?}\n", missing.display().to_string()),
            "server.operator_token_file",
        ),
        (
            "bad secret",
            format!("[server]\noperator_token_file = {:?}\n", secret.display().to_string()),
            "server.operator_token_file",
        ),
    ];
    for (case, content, field) in &cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, content).expect("a file");
        let out = coffer(&["config", "check", &file.display().to_string()]).await;
        assert!(!out.status.success(), "{case}: accepted");
        let said = text(&out);
        assert!(said.contains(field), "{case}: the message does not name {field}: {said}");
        assert!(!said.contains("cop_short"), "{case}: a secret was printed: {said}");
    }
}

/// The file's limit rules a gateway started with it; the environment wins
/// over the file, and the flags (the harness's --data, --listen) over both.
#[tokio::test]
async fn serve_takes_its_settings_from_the_file_under_the_environment() {
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("coffer.toml");
    let unused = dir.path().join("data-from-the-file");
    let content =
        format!("[server]\ndata = {:?}\n\n[limits]\ninvoices_open_per_agent = 2\n", unused.display().to_string());
    std::fs::write(&file, content).expect("the file");
    let path = file.display().to_string();
    let gw = Gateway::start_with_args_env(&["--config", &path], &[]).await;
    assert_eq!(open_invoices_allowed(&gw).await, 2, "the file's limit");
    let gw = Gateway::start_with_args_env(&["--config", &path], &[("COFFER_LIMIT_INVOICES_OPEN_PER_AGENT", "3")]).await;
    assert_eq!(open_invoices_allowed(&gw).await, 3, "the environment over the file");
    assert!(!unused.exists(), "the harness's --data flag wins over the file's data");
}

/// How many open invoices an agent may hold: made until refused.
async fn open_invoices_allowed(gw: &Gateway) -> usize {
    let (_, _, key) = gw.new_agent("counter", 0).await;
    for made in 0..10 {
        let reply = send(
            gw.request(reqwest::Method::POST, "/v1/invoices", Some(&key))
                .json(&serde_json::json!({"amount_msat": 1_000, "expiry_secs": 600})),
        )
        .await;
        if reply.status == 429 {
            assert_eq!(reply.json["limit"], "invoices_open_per_agent", "{reply:?}");
            return made;
        }
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    panic!("no limit within 10 invoices")
}
