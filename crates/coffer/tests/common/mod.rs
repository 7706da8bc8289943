//! A harness for end-to-end tests: runs the real `coffer` binary on a data
//! folder of its own and talks to it over HTTP.
//!
//! ```ignore
//! mod common;
//! let gw = common::Gateway::start().await;
//! let (id, agent, key) = gw.new_agent("alice", 10_000).await;
//! ```
//!
//! Each test file includes this module, and uses only part of it.
#![allow(dead_code)]

pub mod lightning;
pub mod matrix;
pub mod nostr;
pub mod paywall;
pub mod telegram;
pub mod trade;

use coffer_client::{Client, Problem};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test, built by Cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_coffer");
/// What `coffer serve` prints once it accepts connections.
const READY_PREFIX: &str = "coffer listening on ";
/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Every HTTP call of a test is bounded: a hang fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const PROBLEM_JSON: &str = "application/problem+json";
/// The environment of a gateway whose clock the operator may move forward
/// (dev mode only): for tests of expiry, which then need not sleep.
pub const DEV_CLOCK: (&str, &str) = ("COFFER_DEV_CLOCK", "1");

/// A running `coffer serve`, killed when dropped.
pub struct Gateway {
    child: Option<Child>,
    url: String,
    token: String,
    dir: PathBuf,
    /// More arguments of `coffer serve`, kept for restarts.
    args: Vec<String>,
    http: reqwest::Client,
    /// The PostgreSQL database of the gateway (and of its other instances),
    /// dropped with the last of them; `None` on SQLite.
    database: Option<Arc<TestDatabase>>,
    /// Extra environment of the server process (a Lightning backend, say).
    env: Vec<(String, String)>,
    /// Kept last: the folder outlives the process.
    _tempdir: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts a gateway on a fresh temporary data folder.
    pub async fn start() -> Gateway {
        Gateway::start_with(&[]).await
    }

    /// Starts a gateway on a fresh temporary data folder, with more
    /// arguments of `coffer serve`. With `COFFER_TEST_STORE=postgres`, its
    /// store is a fresh PostgreSQL database (the folder then holds only the
    /// node key).
    pub async fn start_with(args: &[&str]) -> Gateway {
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        Gateway::start_fresh(args, Vec::new()).await
    }

    /// Starts a gateway on a fresh temporary data folder with this extra
    /// environment (kept for restarts).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Gateway {
        Gateway::start_fresh(Vec::new(), owned_env(env)).await
    }

    /// Starts a gateway with these arguments and this extra environment.
    pub async fn start_with_args_env(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        Gateway::start_fresh(args, owned_env(env)).await
    }

    async fn start_fresh(args: Vec<String>, env: Vec<(String, String)>) -> Gateway {
        let tempdir = tempfile::tempdir().expect("creating a temporary data folder");
        let database = postgres_mode().then(|| Arc::new(TestDatabase::create()));
        let token = coffer::secrets::new_secret("cop_test_");
        let mut gw = Gateway::launch(&tempdir.path().join("data"), database, token, args, env).await;
        gw._tempdir = Some(tempdir);
        gw
    }

    /// Starts a gateway on the given data folder (kept after the test).
    /// With `COFFER_TEST_STORE=postgres`, its store is a fresh PostgreSQL
    /// database (the folder then holds only the node key).
    pub async fn start_in(dir: &Path) -> Gateway {
        Gateway::start_in_with_env(dir, &[]).await
    }

    /// [`Gateway::start_in`] with extra environment (kept for restarts).
    pub async fn start_in_with_env(dir: &Path, env: &[(&str, &str)]) -> Gateway {
        let database = postgres_mode().then(|| Arc::new(TestDatabase::create()));
        let token = coffer::secrets::new_secret("cop_test_");
        Gateway::launch(dir, database, token, Vec::new(), owned_env(env)).await
    }

    /// Starts a gateway on a fresh PostgreSQL database, whatever
    /// `COFFER_TEST_STORE` says: for the multi-instance tests.
    pub async fn start_postgres() -> Gateway {
        Gateway::start_postgres_with(&[]).await
    }

    /// [`Gateway::start_postgres`] with more arguments of `coffer serve`
    /// (kept for restarts and other instances).
    pub async fn start_postgres_with(args: &[&str]) -> Gateway {
        Gateway::start_postgres_with_env(args, &[]).await
    }

    /// [`Gateway::start_postgres_with`] with extra environment (kept for
    /// restarts and other instances).
    pub async fn start_postgres_with_env(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let tempdir = tempfile::tempdir().expect("creating a temporary data folder");
        let database = Some(Arc::new(TestDatabase::create()));
        let token = coffer::secrets::new_secret("cop_test_");
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut gw = Gateway::launch(&tempdir.path().join("data"), database, token, args, owned_env(env)).await;
        gw._tempdir = Some(tempdir);
        gw
    }

    /// Starts another instance of this gateway: the same database, node key
    /// (the same data folder), operator token, arguments and environment;
    /// its own process and port.
    pub async fn another_instance(&self) -> Gateway {
        assert!(self.database.is_some(), "only a PostgreSQL store has several instances");
        let (database, token) = (self.database.clone(), self.token.clone());
        Gateway::launch(&self.dir, database, token, self.args.clone(), self.env.clone()).await
    }

    async fn launch(
        dir: &Path,
        database: Option<Arc<TestDatabase>>,
        token: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Gateway {
        coffer::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(256)
            .build()
            .expect("building an HTTP client");
        let dir = dir.to_owned();
        let mut gw = Gateway { child: None, url: String::new(), token, dir, args, http, database, env, _tempdir: None };
        gw.spawn().await;
        gw
    }

    /// The PostgreSQL database, if the gateway runs on one.
    pub fn database(&self) -> Option<&TestDatabase> {
        self.database.as_deref()
    }

    /// `COFFER_DATABASE_URL` of this gateway: set on PostgreSQL, removed
    /// (whatever the test's environment says) on SQLite.
    fn database_env(&self, cmd: &mut Command) {
        cmd.env_remove("COFFER_DATABASE_URL");
        if let Some(d) = &self.database {
            cmd.env("COFFER_DATABASE_URL", &d.url);
        }
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the gateway is already running");
        let mut command = Command::new(BIN);
        self.database_env(&mut command);
        let mut child = command
            .arg("serve")
            .arg("--data")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args)
            .env("COFFER_OPERATOR_TOKEN", &self.token)
            .env_remove("COFFER_NATS_URL")
            .env_remove("COFFER_REDIS_URL")
            .env("COFFER_LOG", "warn")
            .env_remove("COFFER_URL")
            .env_remove("COFFER_AGENT_KEY")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning coffer serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("reading coffer's stdout") {
                if let Some(url) = line.strip_prefix(READY_PREFIX) {
                    return Some(url.trim().to_owned());
                }
                seen.push(line);
            }
            None
        })
        .await;
        let url = match url {
            Ok(Some(url)) => url,
            Ok(None) => panic!("coffer serve exited before listening; stdout: {seen:?}"),
            Err(_) => {
                panic!("coffer serve did not listen within {START_TIMEOUT:?}; stdout: {seen:?}")
            }
        };
        // Keep reading, so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.url = url;
        self.child = Some(child);
    }

    /// Starts a gateway whose clock the test moves forward
    /// ([`Gateway::advance_clock`]) instead of sleeping.
    pub async fn start_with_dev_clock() -> Gateway {
        Gateway::start_with_env(&[DEV_CLOCK]).await
    }

    /// Moves the gateway's clock `ms` forward (a gateway started with
    /// [`DEV_CLOCK`]); when this returns, the expiry sweeps have run at the
    /// new time. Returns the new time, in ms since the epoch.
    pub async fn advance_clock(&self, ms: i64) -> i64 {
        let body = serde_json::json!({"advance_ms": ms});
        let reply = send(self.request(reqwest::Method::POST, "/v1/dev/clock", Some(&self.token)).json(&body)).await;
        assert_eq!(reply.status, 200, "moving the clock: {reply:?}");
        reply.json["now_ms"].as_i64().expect("the new time")
    }

    /// Replaces one variable of the server's environment (from the next
    /// start on).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// The base URL, `http://127.0.0.1:PORT` (a new port after a restart).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn operator_token(&self) -> &str {
        &self.token
    }

    /// A shared connection pool, for raw requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A typed client with the operator token.
    pub fn operator(&self) -> Client {
        self.client(&self.token)
    }

    /// A typed client with any secret.
    pub fn client(&self, secret: &str) -> Client {
        Client::with_http(self.http.clone(), &self.url, secret)
    }

    /// Creates an agent and, if `fund_msat > 0`, mints that much into the
    /// treasury and moves it to the agent. Returns the agent's id, a client
    /// with its first (spend) key, and that key.
    pub async fn new_agent(&self, name: &str, fund_msat: u64) -> (String, Client, String) {
        let op = self.operator();
        let created = op.create_agent(name).await.expect("creating an agent");
        if fund_msat > 0 {
            op.mint(fund_msat).await.expect("minting");
            let t = op.fund_agent(&created.id, fund_msat).await.expect("funding");
            assert_eq!(t.balance_msat, fund_msat, "a new agent's balance after funding");
        }
        (created.id.clone(), self.client(&created.key), created.key)
    }

    /// Creates an agent that may create sub-agents, funded like
    /// [`Gateway::new_agent`]. Returns its id, key and a client with it.
    pub async fn new_parent(&self, name: &str, fund_msat: u64) -> (String, String, Client) {
        let op = self.operator();
        let request = coffer_client::CreateAgentRequest { name: name.into(), can_create_subagents: true, task: None };
        let created = op.create_agent_with(&request).await.expect("creating a parent agent");
        if fund_msat > 0 {
            op.mint(fund_msat).await.expect("minting");
            op.fund_agent(&created.id, fund_msat).await.expect("funding");
        }
        let client = self.client(&created.key);
        (created.id, created.key, client)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("the gateway is not running")
    }

    /// Sends SIGTERM to the server (with kill(1): no signal crate needed),
    /// as a service manager stops it; [`Gateway::wait_exit`] reaps it.
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("running kill");
        assert!(status.success(), "kill -TERM {pid}: {status}");
    }

    /// Whether the server process still runs (false once it exited).
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("the gateway was reaped");
        child.try_wait().expect("polling coffer serve").is_none()
    }

    /// Waits for the server to exit, `limit` at most, and reaps it: its exit
    /// status, or `None` if it still ran then (it is then SIGKILLed).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("the gateway is not running");
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Some(status.expect("waiting for coffer serve")),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// Kills the server with SIGKILL (on unix, `Child::kill` sends SIGKILL)
    /// and reaps it.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("the gateway is not running");
        child.kill().await.expect("killing coffer serve");
    }

    /// Starts the server again on the same data folder (SIGKILLing it first
    /// if it still runs). The port changes: make clients anew from `url()`.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9().await;
        }
        self.spawn().await;
    }

    /// Restarts the server (SIGKILLing it first) with other arguments of
    /// `coffer serve`: for arguments that name what must exist first, such
    /// as the agents of `--paywall` files.
    pub async fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
        self.restart().await;
    }

    /// Runs `coffer audit --data DIR` (on PostgreSQL: with
    /// `COFFER_DATABASE_URL`): whether it passed, and what it said.
    pub async fn audit(&self) -> (bool, String) {
        let mut cmd = Command::new(BIN);
        self.database_env(&mut cmd);
        let out = cmd
            .arg("audit")
            .arg("--data")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running coffer audit");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// Runs a CLI command against this gateway (`COFFER_URL` set), with the
    /// given extra environment.
    pub async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("COFFER_OPERATOR_TOKEN")
            .env_remove("COFFER_AGENT_KEY")
            .env("COFFER_URL", &self.url)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().await.expect("running the coffer CLI")
    }

    /// Runs an operator CLI command and parses its `--json` output.
    pub async fn cli_operator_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args, &[("COFFER_OPERATOR_TOKEN", &self.token)]).await;
        cli_json(args, out)
    }

    /// Runs an agent CLI command with `key` and parses its `--json` output.
    pub async fn cli_agent_json(&self, key: &str, args: &[&str]) -> Value {
        let out = self.cli(args, &[("COFFER_AGENT_KEY", key)]).await;
        cli_json(args, out)
    }

    /// A raw request to `path`, with `Authorization: Bearer <secret>` if any.
    pub fn request(&self, method: reqwest::Method, path: &str, secret: Option<&str>) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.url));
        match secret {
            Some(s) => rb.bearer_auth(s),
            None => rb,
        }
    }

    /// The treasury's balance.
    pub async fn treasury_msat(&self) -> u64 {
        self.operator().treasury().await.expect("reading the treasury").balance_msat
    }

    /// Every agent's balance, by id, as the operator sees them.
    pub async fn balances(&self) -> std::collections::BTreeMap<String, u64> {
        let agents = self.operator().agents().await.expect("listing agents");
        agents.into_iter().map(|a| (a.id, a.balance_msat)).collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

fn cli_json(args: &[&str], out: Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "coffer {args:?} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("coffer {args:?} printed no JSON ({e}): {stdout}"))
}

/// An HTTP answer, whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub content_type: Option<String>,
    pub text: String,
    /// The body as JSON, or `Null` if it is not JSON.
    pub json: Value,
}

impl Reply {
    /// Asserts this is a problem with this status and code, well formed:
    /// `application/problem+json`, `type` = `/problems/<code>`, `status`
    /// equal to the HTTP status. Returns it.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!((self.status, self.json["code"].as_str()), (status, Some(code)), "answer: {self:?}");
        self.assert_well_formed_problem();
        &self.json
    }

    /// Asserts this is a well-formed problem, whatever its code.
    #[track_caller]
    pub fn assert_well_formed_problem(&self) {
        assert_eq!(self.content_type.as_deref(), Some(PROBLEM_JSON), "content type of {self:?}");
        let code = self.json["code"].as_str().unwrap_or_else(|| panic!("a problem without a code: {self:?}"));
        assert!(!code.is_empty(), "an empty problem code: {self:?}");
        assert_eq!(self.json["type"].as_str(), Some(format!("/problems/{code}").as_str()), "type of {self:?}");
        assert_eq!(self.json["status"].as_u64(), Some(u64::from(self.status)), "status field of {self:?}");
        assert!(self.json["title"].is_string() && self.json["detail"].is_string(), "title and detail of {self:?}");
    }

    pub fn code(&self) -> Option<&str> {
        self.json["code"].as_str()
    }
}

/// Sends a request and reads the whole answer. Panics on a transport error.
pub async fn send(rb: reqwest::RequestBuilder) -> Reply {
    try_send(rb).await.unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// Sends a request and reads the whole answer.
pub async fn try_send(rb: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let response = rb.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, headers, content_type, text, json })
}

/// The problem inside a client error; panics on any other error.
#[track_caller]
pub fn problem(e: coffer_client::Error) -> Problem {
    match e {
        coffer_client::Error::Problem(p) => *p,
        other => panic!("expected a problem, got {other}"),
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

// Helpers of the constitution tests (policies, breaker, approvals, audit).

impl Gateway {
    /// The SQLite file of the data folder.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("coffer.sqlite3")
    }

    /// `POST /v1/payments` with an agent key, optionally with an
    /// `Idempotency-Key`: the whole answer.
    pub async fn pay_raw(&self, key: &str, bolt11: &str, purpose: &str, idempotency_key: Option<&str>) -> Reply {
        let mut rb = self
            .request(reqwest::Method::POST, "/v1/payments", Some(key))
            .json(&serde_json::json!({"bolt11": bolt11, "purpose": purpose}));
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        send(rb).await
    }

    /// `PUT /v1/agents/{id}/policy` with any secret: the whole answer.
    pub async fn put_policy_raw(&self, secret: &str, agent_id: &str, policy: &Value) -> Reply {
        send(self.request(reqwest::Method::PUT, &format!("/v1/agents/{agent_id}/policy"), Some(secret)).json(policy))
            .await
    }

    /// Every audit record matching `query` (e.g. `agent_id=...&action=...`),
    /// oldest first, paging through `GET /v1/audit`.
    pub async fn audit_all(&self, query: &str) -> Vec<coffer_client::AuditRecord> {
        self.audit_after(0, query).await
    }

    /// Like [`Gateway::audit_all`], from the record after `after` on.
    pub async fn audit_after(&self, mut after: i64, query: &str) -> Vec<coffer_client::AuditRecord> {
        let op = self.operator();
        let mut all: Vec<coffer_client::AuditRecord> = Vec::new();
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let page = op.audit(after, &format!("limit=200{sep}{query}")).await.expect("reading the audit trail");
            let Some(last) = page.last() else { break };
            after = last.seq;
            all.extend(page);
        }
        all
    }

    /// The outbox events of one type, oldest first, as `(agent_id, data)`,
    /// read through `GET /v1/events` with the operator's token (which sees
    /// every event), page by page.
    pub async fn events(&self, kind: &str) -> Vec<(Option<String>, Value)> {
        let mut found = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/v1/events?after={after}&limit=200");
            let reply = send(self.request(reqwest::Method::GET, &path, Some(&self.token))).await;
            assert_eq!(reply.status, 200, "reading the events: {reply:?}");
            let page: coffer_client::EventPage = serde_json::from_value(reply.json.clone()).expect("a page of events");
            let Some(last) = page.events.last() else { return found };
            after = last.id;
            found.extend(page.events.into_iter().filter(|e| e.kind == kind).map(|e| (e.agent_id, e.data)));
        }
    }

    /// An invoice's status as stored (`open`, `paid` or `expired`), read
    /// from the database: the API also answers `expired` for an open invoice
    /// past its time, the sweep is what writes it.
    pub fn stored_invoice_status(&self, payment_hash_hex: &str) -> Option<String> {
        use rusqlite::OpenFlags;
        if let Some(d) = &self.database {
            let rows =
                d.query("SELECT status FROM invoices WHERE payment_hash = decode($1, 'hex')", &[payment_hash_hex]);
            return rows.into_iter().next().and_then(|mut r| r.pop().flatten());
        }
        let conn = rusqlite::Connection::open_with_flags(self.db_path(), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("opening the database read-only");
        conn.busy_timeout(Duration::from_secs(10)).expect("setting a busy timeout");
        let hash = hex::decode(payment_hash_hex).expect("a hex payment hash");
        conn.query_row("SELECT status FROM invoices WHERE payment_hash = ?1", [hash], |r| r.get(0)).ok()
    }

    /// Every payment id in the history of the agent whose key this is,
    /// paging through its list.
    pub async fn payment_ids(&self, key: &str) -> std::collections::BTreeSet<String> {
        let mut ids = std::collections::BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.client(key).payments(cursor.as_deref()).await.expect("listing payments");
            ids.extend(page.items.into_iter().map(|p| p.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return ids,
            }
        }
    }

    /// How many payments an agent has made, paging through its list.
    pub async fn payment_count(&self, agent: &Client) -> usize {
        let mut count = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page = agent.payments(cursor.as_deref()).await.expect("listing payments");
            count += page.items.len();
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return count,
            }
        }
    }
}

/// A fresh invoice of `payee` for `amount_msat`, valid ten minutes.
pub async fn invoice(payee: &Client, amount_msat: u64) -> coffer_client::Invoice {
    invoice_expiring(payee, amount_msat, 600).await
}

pub async fn invoice_expiring(payee: &Client, amount_msat: u64, expiry_secs: u32) -> coffer_client::Invoice {
    let request = coffer_client::CreateInvoiceRequest {
        amount_msat,
        memo: None,
        expiry_secs: Some(expiry_secs),
        ..Default::default()
    };
    payee.create_invoice(&request).await.expect("creating an invoice")
}

/// Asserts a denial by the constitution (403 with this code) and returns it.
#[track_caller]
pub fn assert_denied<'a>(reply: &'a Reply, code: &str) -> &'a Value {
    reply.assert_problem(403, code)
}

/// A budget report's first window: `(spent_msat, remaining_msat)`.
#[track_caller]
pub fn first_window(report: &Value) -> (u64, u64) {
    let w = &report["windows"][0];
    match (w["spent_msat"].as_u64(), w["remaining_msat"].as_u64()) {
        (Some(s), Some(r)) => (s, r),
        _ => panic!("a budget report without a first window: {report}"),
    }
}

// Helpers of the chat tests (rooms, payment requests, live delivery).

impl Gateway {
    /// `POST /v1/rooms` with any secret: the whole answer.
    pub async fn create_room_raw(&self, secret: &str, name: &str, members: &[&str]) -> Reply {
        let body = serde_json::json!({"name": name, "members": members});
        send(self.request(reqwest::Method::POST, "/v1/rooms", Some(secret)).json(&body)).await
    }

    /// Creates a room (asserting `201`).
    pub async fn create_room(&self, secret: &str, name: &str, members: &[&str]) -> coffer_client::Room {
        let r = self.create_room_raw(secret, name, members).await;
        assert_eq!(r.status, 201, "creating room {name}: {r:?}");
        serde_json::from_value(r.json).expect("a room")
    }

    /// `POST /v1/rooms/{room}/members`: the whole answer.
    pub async fn add_member_raw(&self, secret: &str, room: &str, agent_id: &str) -> Reply {
        let body = serde_json::json!({"agent_id": agent_id});
        send(self.request(reqwest::Method::POST, &format!("/v1/rooms/{room}/members"), Some(secret)).json(&body)).await
    }

    /// `POST /v1/rooms/{room}/messages` with any body: the whole answer.
    pub async fn post_raw(&self, secret: &str, room: &str, body: &Value) -> Reply {
        send(self.request(reqwest::Method::POST, &format!("/v1/rooms/{room}/messages"), Some(secret)).json(body)).await
    }

    /// Posts a text (asserting `201`).
    pub async fn post_text(&self, secret: &str, room: &str, text: &str) -> coffer_client::Message {
        let r = self.post_raw(secret, room, &serde_json::json!({"text": text})).await;
        assert_eq!(r.status, 201, "posting {text:?}: {r:?}");
        serde_json::from_value(r.json).expect("a message")
    }

    /// Posts a payment request (asserting `201`).
    pub async fn post_request(
        &self,
        secret: &str,
        room: &str,
        amount_msat: u64,
        memo: &str,
        expiry_secs: Option<u32>,
    ) -> coffer_client::Message {
        let mut request = serde_json::json!({"amount_msat": amount_msat, "memo": memo});
        if let Some(e) = expiry_secs {
            request["expiry_secs"] = e.into();
        }
        let r = self.post_raw(secret, room, &serde_json::json!({"payment_request": request})).await;
        assert_eq!(r.status, 201, "posting a request of {amount_msat} msat: {r:?}");
        serde_json::from_value(r.json).expect("a message")
    }

    /// `GET /v1/rooms/{room}/messages?{query}`: the whole answer.
    pub async fn messages_raw(&self, secret: &str, room: &str, query: &str) -> Reply {
        send(self.request(reqwest::Method::GET, &format!("/v1/rooms/{room}/messages?{query}"), Some(secret))).await
    }

    /// One page of messages after `after` (asserting `200`).
    pub async fn messages_page(&self, secret: &str, room: &str, after: i64, limit: u32) -> Vec<coffer_client::Message> {
        let r = self.messages_raw(secret, room, &format!("after={after}&limit={limit}")).await;
        assert_eq!(r.status, 200, "reading messages: {r:?}");
        serde_json::from_value(r.json).expect("a list of messages")
    }

    /// Every message of a room, oldest first, paging through it.
    pub async fn all_messages(&self, secret: &str, room: &str) -> Vec<coffer_client::Message> {
        let mut all: Vec<coffer_client::Message> = Vec::new();
        loop {
            let after = all.last().map_or(0, |m| m.id);
            let page = self.messages_page(secret, room, after, 200).await;
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// One message of a room, as a member reads it now.
    pub async fn message(&self, secret: &str, room: &str, id: i64) -> coffer_client::Message {
        let mut page = self.messages_page(secret, room, id - 1, 1).await;
        let m = page.pop().unwrap_or_else(|| panic!("message {id} of {room} is missing"));
        assert_eq!(m.id, id, "{m:?}");
        m
    }

    /// `POST /v1/rooms/{room}/messages/{id}/pay`: the whole answer.
    pub async fn pay_message_raw(&self, key: &str, room: &str, id: i64, idempotency_key: Option<&str>) -> Reply {
        let mut rb = self.request(reqwest::Method::POST, &format!("/v1/rooms/{room}/messages/{id}/pay"), Some(key));
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        send(rb).await
    }

    /// `PUT /v1/agents/{id}/chat` with any secret and body: the whole answer.
    pub async fn put_chat_raw(&self, secret: &str, agent_id: &str, settings: &Value) -> Reply {
        send(self.request(reqwest::Method::PUT, &format!("/v1/agents/{agent_id}/chat"), Some(secret)).json(settings))
            .await
    }

    /// A client for long-lived streams: no overall timeout (each read is
    /// bounded by the reader instead).
    pub fn stream_client(&self) -> reqwest::Client {
        reqwest::Client::builder().http1_only().build().expect("building a streaming HTTP client")
    }
}

/// How long a live reader waits for its next event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A Server-Sent Events reader of `GET /v1/rooms/{room}/events`.
pub struct SseReader {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl SseReader {
    /// Connects; `Err` carries the answer if it is not `200`.
    pub async fn connect(gw: &Gateway, secret: &str, room: &str, after: Option<i64>) -> Result<SseReader, Reply> {
        let query = after.map(|a| format!("?after={a}")).unwrap_or_default();
        SseReader::open(gw, secret, &format!("/v1/rooms/{room}/events{query}"), None).await
    }

    /// Connects to any event stream, resuming after `last_event_id` if given.
    pub async fn open(gw: &Gateway, secret: &str, path: &str, last_event_id: Option<i64>) -> Result<SseReader, Reply> {
        let url = format!("{}{path}", gw.url());
        let mut rb = gw.stream_client().get(url).bearer_auth(secret);
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id.to_string());
        }
        let response = tokio::time::timeout(REQUEST_TIMEOUT, rb.send())
            .await
            .expect("connecting to the event stream timed out")
            .expect("connecting to the event stream");
        if response.status().as_u16() != 200 {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let content_type =
                headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let text = response.text().await.unwrap_or_default();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(Reply { status, headers, content_type, text, json });
        }
        let ct = response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        assert!(ct.is_some_and(|c| c.starts_with("text/event-stream")), "content type of the stream: {ct:?}");
        Ok(SseReader { response, buf: Vec::new() })
    }

    /// The next event, `(type, data)`; comments (keep-alives) are skipped.
    /// Panics if none comes within [`EVENT_TIMEOUT`] or the stream ends.
    pub async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(EVENT_TIMEOUT, self.next_inner()).await.expect("no event within the timeout")
    }

    async fn next_inner(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("an event is UTF-8");
                let (mut kind, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a comment
                }
                let data = data.join("\n");
                let json =
                    serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
                return (kind, json);
            }
            match self.response.chunk().await.expect("reading the event stream") {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => panic!("the event stream ended"),
            }
        }
    }
}

/// A minimal WebSocket client over a raw HTTP/1.1 upgrade: reads the
/// server's (unmasked) text frames.
pub struct WsReader {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// The sample key of RFC 6455 and the accept value it requires.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

impl WsReader {
    /// Upgrades `GET path`; `Err((status, head and body so far))` if the
    /// server answers anything but `101`.
    pub async fn connect(gw: &Gateway, secret: &str, path: &str) -> Result<WsReader, (u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = gw.url().strip_prefix("http://").expect("an http URL").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&host).await.expect("connecting for a WebSocket");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {secret}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("sending the upgrade");
        let mut buf = Vec::new();
        let head_end = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return p + 4;
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("reading the upgrade answer");
                assert!(n > 0, "the connection closed during the upgrade: {:?}", String::from_utf8_lossy(&buf));
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("no upgrade answer within the timeout");
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.trim().to_owned())
        };
        if status != 101 {
            // Read the body the answer announces, for the caller to look at.
            let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut chunk = [0u8; 4096];
                while buf.len() < head_end + len {
                    let n = stream.read(&mut chunk).await.expect("reading the refusal");
                    assert!(n > 0, "the connection closed inside the refusal's body");
                    buf.extend_from_slice(&chunk[..n]);
                }
            })
            .await
            .expect("no whole refusal within the timeout");
            return Err((status, String::from_utf8_lossy(&buf).into_owned()));
        }
        assert_eq!(header("sec-websocket-accept").as_deref(), Some(WS_ACCEPT), "the upgrade answer: {head}");
        buf.drain(..head_end);
        Ok(WsReader { stream, buf })
    }

    /// The next text frame, parsed as JSON. Panics on a close, a timeout or
    /// a frame that is not text.
    pub async fn next(&mut self) -> Value {
        tokio::time::timeout(EVENT_TIMEOUT, self.next_inner()).await.expect("no WebSocket frame within the timeout")
    }

    async fn next_inner(&mut self) -> Value {
        use tokio::io::AsyncReadExt;
        let mut message: Vec<u8> = Vec::new();
        loop {
            // A whole frame in the buffer?
            if let Some((fin, opcode, payload, used)) = parse_ws_frame(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    0x1 | 0x0 => {
                        message.extend_from_slice(&payload);
                        if fin {
                            let text = String::from_utf8(message).expect("a text frame is UTF-8");
                            return serde_json::from_str(&text)
                                .unwrap_or_else(|e| panic!("a frame that is not JSON ({e}): {text}"));
                        }
                    }
                    0x9 | 0xA => {} // ping, pong: the server sends none; ignored
                    0x8 => panic!("the server closed the WebSocket: {payload:?}"),
                    other => panic!("an unexpected WebSocket opcode {other:#x}"),
                }
                continue;
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.expect("reading the WebSocket");
            assert!(n > 0, "the WebSocket connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `(fin, opcode, payload, bytes used)` of the frame at the start of `buf`,
/// if it is whole.
fn parse_ws_frame(buf: &[u8]) -> Option<(bool, u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?), 10),
        126 | 127 => return None,
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let len = usize::try_from(len).ok()?;
    let mut payload = buf.get(at..at + len)?.to_vec();
    if let Some(m) = mask {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
    }
    Some((fin, opcode, payload, at + len))
}

/// Runs `coffer serve --listen 127.0.0.1:0 --data DATA` with more `args`
/// and `env` (never on PostgreSQL), and asserts that it refuses to start:
/// it exits non-zero within 30 s and never listens. Returns its stderr.
pub async fn serve_refused(data: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> String {
    let run = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
        .env("COFFER_LOG", "warn")
        .env_remove("COFFER_DATABASE_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("coffer serve did not exit within 30 s")
        .expect("running coffer serve");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "coffer serve started: {stdout}");
    assert!(!stdout.contains(READY_PREFIX), "{stdout}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The Python of the interop tests (`COFFER_TEST_PYTHON`, set by `.ci/run`),
/// or `None` to skip loudly; under CI a missing one fails the test, so the
/// interop tests can never be skipped there. `what` names the test.
pub fn test_python(what: &str) -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("COFFER_TEST_PYTHON").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(python));
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !in_ci,
        "COFFER_TEST_PYTHON is not set, and CI is: {what} must run in CI. \
         Run `bash .ci/run`, which makes the venv .ci/venv and sets COFFER_TEST_PYTHON."
    );
    eprintln!("\n*** SKIPPED: {what}: set COFFER_TEST_PYTHON (bash .ci/run does) ***");
    None
}

/// Whether a TCP server answers on `addr` (NATS, Redis); under CI it must.
pub async fn service_up(addr: &str, what: &str) -> bool {
    let up = tokio::net::TcpStream::connect(addr).await.is_ok();
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(up || !in_ci, "{what} is not running on {addr}, and CI is: `bash .ci/run` starts it");
    if !up {
        eprintln!("\n*** SKIPPED: {what} is not running on {addr} ***");
    }
    up
}

/// Sends all requests at once (released together by a barrier) and returns
/// the answers in the order given: for races.
pub async fn all_at_once(requests: Vec<reqwest::RequestBuilder>) -> Vec<Reply> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|rb| {
            let barrier = std::sync::Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                send(rb).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("a request task panicked"));
    }
    replies
}

// PostgreSQL.

/// Where a test says it runs on SQLite only, and why: in the PostgreSQL
/// pass (`COFFER_TEST_STORE=postgres`) it returns `true` and the test
/// returns at once. Every other test runs on both stores.
///
/// ```ignore
/// if common::sqlite_only("it edits the SQLite file") { return; }
/// ```
pub fn sqlite_only(why: &str) -> bool {
    let skip = postgres_mode();
    if skip {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    skip
}

/// Whether the tests run their gateways on PostgreSQL
/// (`COFFER_TEST_STORE=postgres`) instead of SQLite.
pub fn postgres_mode() -> bool {
    std::env::var("COFFER_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The server the test databases are made on (trust auth on 127.0.0.1,
/// see scripts/services.sh); `COFFER_TEST_PG_SERVER` overrides it.
fn pg_server() -> String {
    std::env::var("COFFER_TEST_PG_SERVER").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A fresh database of one test, dropped at the end, so tests run in
/// parallel without seeing each other.
pub struct TestDatabase {
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn create() -> TestDatabase {
        let name = format!("coffer_t_{}", hex::encode(rand::random::<[u8; 8]>()));
        admin(&format!("CREATE DATABASE {name}")).expect("creating a test database");
        let url = format!("{}/{name}", pg_server());
        TestDatabase { name, url }
    }

    /// Runs one statement on this database with text parameters; every
    /// column it returns must be text (cast with `::text`) or NULL.
    pub fn query(&self, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        let params: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
        on_own_thread(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connecting to the test database");
            let args: Vec<&(dyn postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
            let rows = client.query(&sql, &args).unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter().map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect()
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE: an instance killed a moment ago may still be connected.
        if let Err(e) = admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("dropping test database {}: {e}", self.name);
        }
    }
}

/// One statement on the server's maintenance database.
fn admin(sql: &str) -> Result<(), String> {
    let (url, sql) = (format!("{}/postgres", pg_server()), sql.to_owned());
    on_own_thread(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&sql).map_err(|e| e.to_string())
    })
}

/// The blocking client runs a runtime of its own: keep it off the test's
/// tokio threads.
fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("a database thread panicked")
}

fn owned_env(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
