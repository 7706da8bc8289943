//! Who may call what: every route against every kind of caller, and each
//! answer is exactly the success, 401 or 403 the rules give. Nothing else.

mod common;

use coffer_client::{CreateInvoiceRequest, PayOutcome, PayRequest, Scope};
use common::{Gateway, Reply, send};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    NoKey,
    Operator,
    Read,
    Receive,
    Spend,
    /// Another agent's spend key.
    OtherSpend,
    /// Agent A's spend key, revoked.
    Revoked,
}

const EVERYONE: [Who; 7] =
    [Who::NoKey, Who::Operator, Who::Read, Who::Receive, Who::Spend, Who::OtherSpend, Who::Revoked];

impl Who {
    fn scope(self) -> Option<Scope> {
        match self {
            Who::Read => Some(Scope::Read),
            Who::Receive => Some(Scope::Receive),
            Who::Spend | Who::OtherSpend => Some(Scope::Spend),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Access {
    /// Anyone, key or not.
    Public,
    /// The operator token only.
    Operator,
    /// An agent key of at least `min`; `owner_only`: agent A's own keys.
    Agent { min: Scope, owner_only: bool },
}

/// What a route needs for each call: fresh where a call uses something up.
#[derive(Clone, Copy, Debug)]
enum Target {
    Fixed(&'static str),
    /// `{a}` is agent A's id, `{hash}` A's invoice.
    Template(&'static str),
    /// A key of its own to revoke.
    FreshKey,
    /// An open invoice of agent C to pay.
    FreshInvoice,
}

struct Route {
    method: Method,
    target: Target,
    body: Option<Value>,
    access: Access,
    success: u16,
}

fn route(method: Method, target: Target, body: Option<Value>, access: Access, success: u16) -> Route {
    Route { method, target, body, access, success }
}

fn expected(access: Access, who: Who, success: u16) -> u16 {
    match (access, who) {
        (Access::Public, _) => success,
        (_, Who::NoKey | Who::Revoked) => 401,
        (Access::Operator, Who::Operator) => success,
        (Access::Operator, _) | (Access::Agent { .. }, Who::Operator) => 403,
        (Access::Agent { min, owner_only }, who) => {
            let scope = who.scope().expect("an agent key");
            if scope < min || (owner_only && who == Who::OtherSpend) { 403 } else { success }
        }
    }
}

struct Fixture {
    gw: Gateway,
    a_id: String,
    b_id: String,
    a_hash: String,
    payee: coffer_client::Client,
    secrets: Vec<(Who, Option<String>)>,
}

impl Fixture {
    async fn new() -> Fixture {
        let gw = Gateway::start().await;
        let op = gw.operator();
        let (a_id, a_spend, a_spend_key) = gw.new_agent("a", 1_000_000).await;
        let (b_id, _, b_spend_key) = gw.new_agent("b", 1_000_000).await;
        let (_, payee, _) = gw.new_agent("c", 0).await;
        op.mint(1_000).await.unwrap();
        let read = op.create_key(&a_id, Scope::Read).await.unwrap();
        let receive = op.create_key(&a_id, Scope::Receive).await.unwrap();
        assert_eq!((read.scope, receive.scope, read.agent_id.as_str()), (Scope::Read, Scope::Receive, a_id.as_str()));
        // The revoked key worked before its revocation.
        let revoked = op.create_key(&a_id, Scope::Spend).await.unwrap();
        assert_eq!(gw.client(&revoked.key).wallet().await.unwrap().agent_id, a_id);
        op.revoke_key(&revoked.id).await.unwrap();
        let request = CreateInvoiceRequest {
            amount_msat: 777,
            memo: Some("a's".into()),
            expiry_secs: None,
            ..Default::default()
        };
        let a_hash = a_spend.create_invoice(&request).await.unwrap().payment_hash;
        let secrets = vec![
            (Who::NoKey, None),
            (Who::Operator, Some(gw.operator_token().to_owned())),
            (Who::Read, Some(read.key)),
            (Who::Receive, Some(receive.key)),
            (Who::Spend, Some(a_spend_key)),
            (Who::OtherSpend, Some(b_spend_key)),
            (Who::Revoked, Some(revoked.key)),
        ];
        Fixture { gw, a_id, b_id, a_hash, payee, secrets }
    }

    fn secret(&self, who: Who) -> Option<&str> {
        self.secrets.iter().find(|(w, _)| *w == who).and_then(|(_, s)| s.as_deref())
    }

    /// The path and body of one call.
    async fn prepare(&self, r: &Route) -> (String, Option<Value>) {
        match r.target {
            Target::Fixed(path) => (path.to_owned(), r.body.clone()),
            Target::Template(t) => (t.replace("{a}", &self.a_id).replace("{hash}", &self.a_hash), r.body.clone()),
            Target::FreshKey => {
                let key = self.gw.operator().create_key(&self.b_id, Scope::Read).await.unwrap();
                (format!("/v1/keys/{}", key.id), None)
            }
            Target::FreshInvoice => {
                let request =
                    CreateInvoiceRequest { amount_msat: 1_000, memo: None, expiry_secs: None, ..Default::default() };
                let inv = self.payee.create_invoice(&request).await.unwrap();
                ("/v1/payments".to_owned(), Some(json!({"bolt11": inv.bolt11, "purpose": "scope matrix"})))
            }
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>, who: Who) -> Reply {
        let mut rb = self.gw.request(method, path, self.secret(who));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        send(rb).await
    }
}

fn routes() -> Vec<Route> {
    use Access::{Agent, Operator, Public};
    use Method as M;
    use Target::{Fixed, FreshInvoice, FreshKey, Template};
    let read = Agent { min: Scope::Read, owner_only: false };
    let own = Agent { min: Scope::Read, owner_only: true };
    let receive = Agent { min: Scope::Receive, owner_only: false };
    let spend = Agent { min: Scope::Spend, owner_only: false };
    let amount = Some(json!({"amount_msat": 1}));
    vec![
        route(M::GET, Fixed("/healthz"), None, Public, 200),
        route(M::GET, Fixed("/metrics"), None, Public, 200),
        route(M::GET, Fixed("/openapi.json"), None, Public, 200),
        route(M::POST, Fixed("/v1/agents"), Some(json!({"name": "made in the matrix"})), Operator, 201),
        route(M::GET, Fixed("/v1/agents"), None, Operator, 200),
        route(M::GET, Template("/v1/agents/{a}"), None, Operator, 200),
        route(M::POST, Template("/v1/agents/{a}/fund"), amount.clone(), Operator, 200),
        route(M::POST, Template("/v1/agents/{a}/keys"), Some(json!({"scope": "read"})), Operator, 201),
        route(M::DELETE, FreshKey, None, Operator, 204),
        route(M::POST, Fixed("/v1/treasury/mint"), amount, Operator, 200),
        route(M::GET, Fixed("/v1/treasury"), None, Operator, 200),
        route(M::GET, Fixed("/v1/wallet"), None, read, 200),
        route(M::GET, Fixed("/v1/invoices"), None, read, 200),
        route(M::GET, Fixed("/v1/payments"), None, read, 200),
        route(M::GET, Template("/v1/invoices/{hash}"), None, own, 200),
        route(M::POST, Fixed("/v1/invoices"), Some(json!({"amount_msat": 500, "memo": "matrix"})), receive, 201),
        route(M::POST, FreshInvoice, None, spend, 200),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_exactly_as_the_scopes_say() {
    let fx = Fixture::new().await;
    let routes = routes();
    let mut failures = Vec::new();
    let mut cells = 0;
    let mut successes = std::collections::BTreeMap::<&str, u32>::new();
    for r in &routes {
        for who in EVERYONE {
            let (path, body) = fx.prepare(r).await;
            let reply = fx.call(r.method.clone(), &path, body.as_ref(), who).await;
            cells += 1;
            let want = expected(r.access, who, r.success);
            let problem = match want {
                401 => Some("unauthorized"),
                403 => Some("forbidden"),
                _ => None,
            };
            let ok = reply.status == want
                && match problem {
                    Some(code) => {
                        std::panic::catch_unwind(|| reply.assert_problem(want, code).clone()).is_ok()
                            && (want != 401 || reply.headers.get("www-authenticate").is_some_and(|v| v == "Bearer"))
                    }
                    None => reply.content_type.as_deref() != Some(common::PROBLEM_JSON),
                };
            if !ok {
                failures.push(format!(
                    "{} {path} as {who:?}: expected {want}, got {} {}",
                    r.method, reply.status, reply.text
                ));
                continue;
            }
            if problem.is_none() {
                *successes.entry(who_name(who)).or_default() += 1;
                if r.method == Method::GET {
                    check_success_body(&fx, &path, who, &reply);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {cells} cells wrong:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cells, routes.len() * EVERYONE.len());
    // The matrix is not vacuous: each caller succeeded exactly where allowed.
    let counts: Vec<_> =
        EVERYONE.iter().map(|w| (who_name(*w), successes.get(who_name(*w)).copied().unwrap_or(0))).collect();
    assert_eq!(
        counts,
        vec![
            ("no key", 3),
            ("operator", 11),
            ("read", 7),
            ("receive", 8),
            ("spend", 9),
            ("other spend", 8),
            ("revoked", 3)
        ]
    );

    // Exactly the successful calls moved money: A was funded 1 msat, A and B
    // each paid one 1000 msat invoice.
    let balances = fx.gw.balances().await;
    assert_eq!(balances[&fx.a_id], 1_000_000 + 1 - 1_000);
    assert_eq!(balances[&fx.b_id], 1_000_000 - 1_000);
    assert_eq!(fx.payee.wallet().await.unwrap().balance_msat, 2_000);
    assert_eq!(fx.gw.treasury_msat().await, 1_000 - 1 + 1);
    let (ok, report) = fx.gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

fn who_name(who: Who) -> &'static str {
    match who {
        Who::NoKey => "no key",
        Who::Operator => "operator",
        Who::Read => "read",
        Who::Receive => "receive",
        Who::Spend => "spend",
        Who::OtherSpend => "other spend",
        Who::Revoked => "revoked",
    }
}

/// A successful GET shows the caller's own data only.
fn check_success_body(fx: &Fixture, path: &str, who: Who, reply: &Reply) {
    let own_id = if who == Who::OtherSpend { &fx.b_id } else { &fx.a_id };
    match path {
        "/v1/wallet" => {
            assert_eq!(reply.json["agent_id"].as_str(), Some(own_id.as_str()), "{who:?}: {}", reply.text);
            assert_eq!(reply.json["scope"].as_str(), who.scope().map(Scope::as_str), "{who:?}");
        }
        "/v1/invoices" => {
            let hashes: Vec<_> =
                reply.json["items"].as_array().unwrap().iter().map(|i| i["payment_hash"].as_str().unwrap()).collect();
            assert_eq!(hashes.contains(&fx.a_hash.as_str()), who != Who::OtherSpend, "{who:?}: {hashes:?}");
        }
        "/v1/payments" => {
            for p in reply.json["items"].as_array().unwrap() {
                assert_ne!(p["payment_hash"].as_str(), Some(fx.a_hash.as_str()));
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_sees_another_agents_data() {
    let gw = Gateway::start().await;
    let (a_id, a, a_key) = gw.new_agent("a", 500_000).await;
    let (b_id, b, b_key) = gw.new_agent("b", 300_000).await;
    let pay = |client: coffer_client::Client, bolt11: String, key: &'static str| async move {
        match client
            .pay(&PayRequest { bolt11, purpose: Some(key.into()), amount_msat: None, ..Default::default() }, key)
            .await
            .unwrap()
        {
            PayOutcome::Done(p) => p,
            PayOutcome::Held(v) => panic!("held: {v:?}"),
        }
    };
    let request =
        |amount_msat| CreateInvoiceRequest { amount_msat, memo: None, expiry_secs: None, ..Default::default() };
    // A pays B twice, B pays A once; each also has an open invoice.
    let b1 = b.create_invoice(&request(10_000)).await.unwrap();
    let b2 = b.create_invoice(&request(20_000)).await.unwrap();
    let a1 = a.create_invoice(&request(5_000)).await.unwrap();
    let a_open = a.create_invoice(&request(1)).await.unwrap();
    let b_open = b.create_invoice(&request(2)).await.unwrap();
    let pa1 = pay(a.clone(), b1.bolt11.clone(), "a-1").await;
    let pa2 = pay(a.clone(), b2.bolt11.clone(), "a-2").await;
    let pb1 = pay(b.clone(), a1.bolt11.clone(), "b-1").await;

    let wa = a.wallet().await.unwrap();
    assert_eq!(
        (wa.agent_id.as_str(), wa.name.as_str(), wa.balance_msat),
        (a_id.as_str(), "a", 500_000 - 30_000 + 5_000)
    );
    let wb = b.wallet().await.unwrap();
    assert_eq!(
        (wb.agent_id.as_str(), wb.name.as_str(), wb.balance_msat),
        (b_id.as_str(), "b", 300_000 + 30_000 - 5_000)
    );

    let ids = |items: Vec<coffer_client::Payment>| items.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(a.payments(None).await.unwrap().items), vec![pa2.id.clone(), pa1.id.clone()]);
    assert_eq!(ids(b.payments(None).await.unwrap().items), vec![pb1.id.clone()]);
    let hashes = |items: Vec<coffer_client::Invoice>| items.into_iter().map(|i| i.payment_hash).collect::<Vec<_>>();
    assert_eq!(
        hashes(a.invoices(None).await.unwrap().items),
        vec![a_open.payment_hash.clone(), a1.payment_hash.clone()]
    );
    assert_eq!(
        hashes(b.invoices(None).await.unwrap().items),
        vec![b_open.payment_hash.clone(), b2.payment_hash.clone(), b1.payment_hash.clone()]
    );

    // Another agent's invoice, paid or open, even one it paid itself: 403.
    for (key, hash) in [
        (&a_key, &b1.payment_hash),
        (&a_key, &b_open.payment_hash),
        (&b_key, &a1.payment_hash),
        (&b_key, &a_open.payment_hash),
    ] {
        let r = send(gw.request(Method::GET, &format!("/v1/invoices/{hash}"), Some(key))).await;
        r.assert_problem(403, "forbidden");
    }
    // The operator's view of agents is the operator's only.
    for (key, id) in [(&a_key, &b_id), (&b_key, &a_id), (&a_key, &a_id)] {
        let r = send(gw.request(Method::GET, &format!("/v1/agents/{id}"), Some(key))).await;
        r.assert_problem(403, "forbidden");
    }
    // A read key of A lists exactly what A's spend key lists.
    let read = gw.operator().create_key(&a_id, Scope::Read).await.unwrap();
    let a_read = gw.client(&read.key);
    assert_eq!(ids(a_read.payments(None).await.unwrap().items), vec![pa2.id, pa1.id]);
    assert_eq!(a_read.wallet().await.unwrap().balance_msat, wa.balance_msat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_scopes_survive_a_restart() {
    let mut gw = Gateway::start().await;
    let (a_id, _, spend_key) = gw.new_agent("a", 10_000).await;
    let op = gw.operator();
    let read = op.create_key(&a_id, Scope::Read).await.unwrap();
    let revoked = op.create_key(&a_id, Scope::Spend).await.unwrap();
    op.revoke_key(&revoked.id).await.unwrap();
    // Revoking twice: the key is no longer live.
    let e = common::problem(op.revoke_key(&revoked.id).await.unwrap_err());
    assert_eq!((e.status, e.code.as_str()), (404, "not-found"));

    gw.restart().await;
    let wallet = |key: &str| send(gw.request(Method::GET, "/v1/wallet", Some(key)));
    wallet(&revoked.key).await.assert_problem(401, "unauthorized");
    let r = wallet(&read.key).await;
    assert_eq!(
        (r.status, r.json["scope"].as_str(), r.json["balance_msat"].as_u64()),
        (200, Some("read"), Some(10_000))
    );
    let r = send(gw.request(Method::POST, "/v1/invoices", Some(&read.key)).json(&json!({"amount_msat": 1}))).await;
    r.assert_problem(403, "forbidden");
    let r = send(gw.request(Method::POST, "/v1/invoices", Some(&spend_key)).json(&json!({"amount_msat": 1}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    // The operator token set at start is the one in force after it.
    assert_eq!(gw.operator().agent(&a_id).await.unwrap().balance_msat, 10_000);
}

/// The ids a write route of the document may name, all real: agent A's own
/// things (A holds the read key), or things A could act on.
struct Ids {
    a: String,
    key: String,
    room: String,
    message: i64,
    incoming: String,
    approval: String,
    webhook: String,
    /// An invoice of A's, paid by B.
    hash: String,
    /// A session B pays A by.
    session: String,
}

impl Ids {
    /// The value of `{param}` in `path`; `None` for a parameter this test
    /// does not know, which fails it: a new route names what to fill in.
    fn fill(&self, path: &str, param: &str) -> Option<String> {
        Some(match (param, path) {
            ("id", p) if p.starts_with("/v1/agents/") => self.a.clone(),
            ("id", p) if p.starts_with("/v1/keys/") => self.key.clone(),
            ("id", p) if p.starts_with("/v1/approvals/") => self.approval.clone(),
            ("id", p) if p.starts_with("/v1/webhooks/") => self.webhook.clone(),
            ("id", p) if p.starts_with("/v1/rooms/") => self.message.to_string(),
            ("id", p) if p.starts_with("/v1/payments/") => self.incoming.clone(),
            ("id", p) if p.starts_with("/v1/sessions/") => self.session.clone(),
            ("payment_hash", _) => self.hash.clone(),
            ("room", _) => self.room.clone(),
            ("agent_id", _) => self.a.clone(),
            ("payment_id", _) => self.incoming.clone(),
            // A read key is refused before the signing key is looked up.
            ("key_id", p) if p.contains("/signing-keys/") => "sk_none".into(),
            ("connection_id", p) if p.contains("/nwc/") => "nwc_none".into(),
            ("messenger", _) => "telegram".into(),
            ("user_id", _) => "1001".into(),
            _ => return None,
        })
    }
}

/// What agent A has and what the gateway has logged: a write by A's read
/// key changes none of it.
async fn snapshot(gw: &Gateway, a_spend: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in ["/v1/wallet", "/v1/invoices", "/v1/payments", "/v1/rooms", "/v1/webhooks", "/v1/incoming?status=all"] {
        let r = send(gw.request(Method::GET, path, Some(a_spend))).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        // A webhook's delivery cursor moves on by itself: its id is what counts.
        let json = match path {
            "/v1/webhooks" => r.json.as_array().expect("webhooks").iter().map(|w| w["id"].clone()).collect(),
            _ => r.json,
        };
        seen.push(json!({ path: json }));
    }
    let (mut after, mut events) = (0, 0);
    loop {
        let r = send(gw.request(Method::GET, &format!("/v1/events?after={after}"), Some(gw.operator_token()))).await;
        let page = r.json["events"].as_array().expect("a page of events").len();
        if page == 0 {
            break;
        }
        events += page;
        after = r.json["next_after"].as_i64().expect("next_after");
    }
    seen.push(json!({ "events": events, "newest": after }));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_changes_nothing_on_any_write_route_of_the_document() {
    // The webhooks below name a port of this machine that nothing serves.
    let gw = Gateway::start_with_env(&[("COFFER_EGRESS_ALLOW", "127.0.0.1")]).await;
    let op = gw.operator();
    let (a, a_client, a_spend) = gw.new_agent("a", 100_000).await;
    let (b, b_client, b_spend) = gw.new_agent("b", 100_000).await;
    let read = op.create_key(&a, Scope::Read).await.unwrap().key;
    let key = op.create_key(&a, Scope::Spend).await.unwrap().id;
    // A room of A and B, with B's payment request in it.
    let room = gw.create_room_raw(&a_spend, "matrix", &[&b]).await.json["id"].as_str().expect("a room").to_owned();
    let request = json!({"payment_request": {"amount_msat": 10}});
    let posted =
        send(gw.request(Method::POST, &format!("/v1/rooms/{room}/messages"), Some(&b_spend)).json(&request)).await;
    let message = posted.json["id"].as_i64().expect("a message");
    // A payment waiting for A's acknowledgment.
    let settings = json!({"require_acknowledgment": true});
    let r =
        send(gw.request(Method::PUT, &format!("/v1/agents/{a}/chat"), Some(gw.operator_token())).json(&settings)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let pay = |amount_msat, key: &'static str| {
        let (a_client, b_client) = (a_client.clone(), b_client.clone());
        async move {
            let request = CreateInvoiceRequest { amount_msat, memo: None, expiry_secs: None, ..Default::default() };
            let bolt11 = a_client.create_invoice(&request).await.unwrap().bolt11;
            b_client
                .pay(&PayRequest { bolt11, purpose: None, amount_msat: None, ..Default::default() }, key)
                .await
                .unwrap()
        }
    };
    let PayOutcome::Done(paid) = pay(50, "ack").await else { panic!("held") };
    let opened = b_client
        .open_session(&coffer_client::OpenSessionRequest {
            payee: a.clone(),
            max_msat: 5,
            expires_in_secs: 600,
            purpose: None,
            ..Default::default()
        })
        .await
        .expect("a session B pays A by");
    // A payment of B's held for approval, and a webhook of A's.
    op.set_policy(&b, &json!({"approval_above_msat": 1})).await.unwrap();
    let PayOutcome::Held(approval) = pay(60, "held").await else { panic!("not held") };
    // Subscribed to an event the test never raises: nothing is delivered.
    let hook = json!({"url": "http://127.0.0.1:9/scope-matrix", "types": ["breaker.tripped"]});
    let r = send(gw.request(Method::POST, "/v1/webhooks", Some(&a_spend)).json(&hook)).await;
    assert_eq!(r.status, 201, "{r:?}");
    let webhook = r.json["id"].as_str().expect("a webhook").to_owned();
    let (hash, session) = (paid.payment_hash.clone(), opened.id);
    let ids =
        Ids { a: a.clone(), key, room, message, incoming: paid.id, approval: approval.id, webhook, hash, session };

    let spec = send(gw.request(Method::GET, "/openapi.json", None)).await.json;
    let before = snapshot(&gw, &a_spend).await;
    let (mut writes, mut unclassified, mut wrong) = (0, Vec::new(), Vec::new());
    for (template, operations) in spec["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            let method = match method.as_str() {
                "get" => continue,
                "post" => Method::POST,
                "put" => Method::PUT,
                "patch" => Method::PATCH,
                "delete" => Method::DELETE,
                other => {
                    unclassified.push(format!("{other} {template}"));
                    continue;
                }
            };
            writes += 1;
            let Some(path) = fill(template, &ids) else {
                unclassified.push(format!("{method} {template}: a parameter this test does not fill"));
                continue;
            };
            let refused = if path == "/mcp" {
                mcp_write(&gw, &read).await
            } else {
                let body = body(template, &b);
                let reply = send(gw.request(method.clone(), &path, Some(&read)).json(&body)).await;
                match (reply.status, reply.code()) {
                    (403, Some("forbidden")) => Ok(()),
                    _ => Err(format!("{} {}", reply.status, reply.text)),
                }
            };
            if let Err(why) = refused {
                wrong.push(format!("{method} {path}: {why}"));
            }
        }
    }
    assert!(unclassified.is_empty(), "operations this test cannot send: {unclassified:?}");
    assert!(wrong.is_empty(), "a read key got past these:\n{}", wrong.join("\n"));
    assert!(writes >= 27, "the document lists {writes} write operations");
    assert_eq!(snapshot(&gw, &a_spend).await, before, "a read key changed something");
}

/// A body the route would take from a key allowed to write (so that only
/// the scope refuses it); `{"amount_msat": 1}` for the rest.
fn body(template: &str, b: &str) -> Value {
    match template {
        "/v1/agents" | "/v1/rooms" => json!({"name": "made by a read key"}),
        "/v1/agents/{id}/keys" => json!({"scope": "spend"}),
        "/v1/agents/{id}/policy" | "/v1/agents/{id}/chat" => json!({}),
        "/v1/rooms/{room}/members" => json!({"agent_id": b}),
        "/v1/rooms/{room}/messages" => json!({"text": "from a read key"}),
        "/v1/rooms/{room}/bridges/{messenger}" => json!({"chat_id": "-1001"}),
        "/v1/webhooks" => json!({"url": "http://127.0.0.1:9/read-key", "types": ["breaker.tripped"]}),
        _ => json!({"amount_msat": 1}),
    }
}

/// `template` with its `{parameters}` filled in.
fn fill(template: &str, ids: &Ids) -> Option<String> {
    let mut path = String::new();
    for segment in template.split('/').skip(1) {
        path.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(param) => path.push_str(&ids.fill(template, param)?),
            None => path.push_str(segment),
        }
    }
    Some(path)
}

/// A read key's write through MCP: the tool is refused (the tools call the
/// routes above with the same key).
async fn mcp_write(gw: &Gateway, read: &str) -> Result<(), String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "create_invoice", "arguments": {"amount_msat": 1}}});
    let request = gw
        .request(Method::POST, "/mcp", Some(read))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body);
    let reply = send(request).await;
    match reply.json["result"]["isError"].as_bool() {
        Some(true) => Ok(()),
        _ => Err(format!("the tool was not refused: {reply:?}")),
    }
}
