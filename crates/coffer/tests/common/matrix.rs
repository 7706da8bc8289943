//! Matrix users for the bridge tests, on the real Synapse that `.ci/run`
//! starts (step `synapse`: `COFFER_TEST_MATRIX_HOMESERVER`,
//! `COFFER_TEST_MATRIX_SHARED_SECRET`), each driven through matrix-nio by
//! `tests/interop/matrix_user.py` (run with `COFFER_TEST_MATRIX_PYTHON`,
//! Synapse's venv, which has matrix-nio): a test says "Alice sends !pay in
//! reply to the card" and "read the room as Bob sees it".

#![allow(dead_code)]

use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/matrix_user.py");
/// The driver's own bound on a call is 30 s.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(45);
const PASSWORD: &str = "coffer-test-user-pw";

/// The test homeserver, and what drives its users.
#[derive(Clone, Debug)]
pub struct Homeserver {
    pub url: String,
    pub shared_secret: String,
    pub python: PathBuf,
}

/// The homeserver `.ci/run` starts, or `None` to skip loudly; under CI it
/// must be set.
pub fn homeserver(what: &str) -> Option<Homeserver> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(url), Some(shared_secret), Some(python)) = (
        get("COFFER_TEST_MATRIX_HOMESERVER"),
        get("COFFER_TEST_MATRIX_SHARED_SECRET"),
        get("COFFER_TEST_MATRIX_PYTHON"),
    ) {
        return Some(Homeserver { url, shared_secret, python: PathBuf::from(python) });
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !in_ci,
        "COFFER_TEST_MATRIX_HOMESERVER, _SHARED_SECRET or _PYTHON unset under CI: {what} must run \
         (bash .ci/run starts Synapse)"
    );
    eprintln!(
        "\n*** SKIPPED: {what}: set COFFER_TEST_MATRIX_HOMESERVER, COFFER_TEST_MATRIX_SHARED_SECRET and \
         COFFER_TEST_MATRIX_PYTHON (bash .ci/run does; CI_STEPS=synapse bash .ci/run starts Synapse alone) ***"
    );
    None
}

/// A localpart no earlier run used (the homeserver keeps its users).
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("{prefix}-{now:x}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)).to_lowercase()
}

impl Homeserver {
    /// Runs one driver command; panics with its error.
    pub async fn driver(&self, command: &str, args: Value) -> Value {
        let mut child = Command::new(&self.python)
            .arg(DRIVER)
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting matrix_user.py");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(args.to_string().as_bytes()).await.expect("writing the driver's arguments");
        drop(stdin);
        let out = tokio::time::timeout(DRIVER_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("matrix_user.py {command} did not end within {DRIVER_TIMEOUT:?}"))
            .expect("running matrix_user.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let answer: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|_| panic!("matrix_user.py {command}: no JSON answer: {stdout}{stderr}"));
        assert!(out.status.success(), "matrix_user.py {command} failed: {answer} {stderr}");
        answer
    }

    /// A new user (`@PREFIX-...:localhost`), registered with the shared
    /// secret, logged in (its first device).
    pub async fn register(&self, prefix: &str, displayname: &str) -> MatrixUser {
        let args = json!({
            "homeserver": self.url, "shared_secret": self.shared_secret, "username": unique(prefix),
            "password": PASSWORD, "displayname": displayname,
        });
        let answer = self.driver("register", args).await;
        MatrixUser {
            hs: self.clone(),
            user_id: answer["user_id"].as_str().expect("a user_id").to_owned(),
            access_token: answer["access_token"].as_str().expect("an access_token").to_owned(),
            device_id: answer["device_id"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// A user of the test homeserver, with an access token.
#[derive(Clone, Debug)]
pub struct MatrixUser {
    pub hs: Homeserver,
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

/// An event of a room's timeline as a user reads it (edits applied):
/// `matrix_user.py messages`.
#[derive(Clone, Debug, Deserialize)]
pub struct Seen {
    pub event_id: String,
    pub sender: String,
    /// `m.room.message` or `m.reaction`.
    #[serde(rename = "type")]
    pub kind: String,
    pub msgtype: Option<String>,
    pub body: Option<String>,
    pub formatted_body: Option<String>,
    /// An `m.image`'s mxc URL.
    pub url: Option<String>,
    pub info: Option<Value>,
    pub reply_to: Option<String>,
    /// The event a reaction annotates, and its key.
    pub relates_to: Option<String>,
    pub key: Option<String>,
    pub edited: bool,
}

impl MatrixUser {
    async fn call(&self, command: &str, mut args: Value) -> Value {
        args["homeserver"] = json!(self.hs.url);
        args["user_id"] = json!(self.user_id);
        args["access_token"] = json!(self.access_token);
        args["device_id"] = json!(self.device_id);
        self.hs.driver(command, args).await
    }

    /// A new session of this user (another device, another token).
    pub async fn login(&self) -> MatrixUser {
        let args = json!({"homeserver": self.hs.url, "user": self.user_id, "password": PASSWORD});
        let answer = self.hs.driver("login", args).await;
        MatrixUser {
            hs: self.hs.clone(),
            user_id: answer["user_id"].as_str().expect("a user_id").to_owned(),
            access_token: answer["access_token"].as_str().expect("an access_token").to_owned(),
            device_id: answer["device_id"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// A private room, the users invited; answers its id.
    pub async fn create_room(&self, invite: &[&str]) -> String {
        let answer = self.call("create_room", json!({"invite": invite, "name": "coffer test"})).await;
        answer["room_id"].as_str().expect("a room_id").to_owned()
    }

    pub async fn join(&self, room: &str) {
        self.call("join", json!({"room": room})).await;
    }

    /// Sends a text (a rich reply to `reply_to`, with its fallback, if
    /// given); answers its event id.
    pub async fn send(&self, room: &str, text: &str, reply_to: Option<&str>) -> String {
        let answer = self.call("send", json!({"room": room, "text": text, "reply_to": reply_to})).await;
        answer["event_id"].as_str().expect("an event_id").to_owned()
    }

    /// Reacts to an event with `key`; answers the reaction's event id.
    pub async fn react(&self, room: &str, event_id: &str, key: &str) -> String {
        let answer = self.call("react", json!({"room": room, "event_id": event_id, "key": key})).await;
        answer["event_id"].as_str().expect("an event_id").to_owned()
    }

    /// The room's timeline as this user reads it, oldest first, edits
    /// applied.
    pub async fn messages(&self, room: &str) -> Vec<Seen> {
        let answer = self.call("messages", json!({"room": room})).await;
        serde_json::from_value(answer["events"].clone()).expect("the driver's events")
    }

    /// Reads the room until `found` picks something out of it (at most
    /// `wait`); panics with what was seen otherwise.
    pub async fn wait_for<T>(&self, room: &str, wait: Duration, found: impl Fn(&[Seen]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let seen = self.messages(room).await;
            if let Some(t) = found(&seen) {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "not seen within {wait:?} by {}: {seen:#?}", self.user_id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
