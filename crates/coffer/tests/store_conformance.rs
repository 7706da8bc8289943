//! The store's contract, run on every backend: each case below runs once on
//! SQLite (a fresh file) and once on PostgreSQL (a fresh database), through
//! the same [`Store`] and [`Tx`] the gateway uses. A backend passes when it
//! answers every case alike.
//!
//! The cases run on both stores whatever `COFFER_TEST_STORE` says, so under
//! `COFFER_TEST_STORE=postgres` they are skipped (they ran already).

mod common;

use coffer::error::Error;
use coffer::model::*;
use coffer::secrets::SecretDigest;
use coffer::store::Store;
use coffer::store::postgres::PostgresStore;
use coffer::store::retention::Cutoffs;
use coffer::store::sqlite::{Durability, SqliteStore};
use coffer_client::{PaymentStatus, Scope};
use coffer_core::audit_chain;
use coffer_core::ledger::Transfer;
use coffer_core::{AccountId, Msat};
use std::sync::Arc;

/// A store of each backend, each fresh, kept alive with what it needs.
struct Backends {
    stores: Vec<(&'static str, Arc<dyn Store>)>,
    _dir: tempfile::TempDir,
    _database: common::TestDatabase,
}

async fn backends() -> Option<Backends> {
    if common::postgres_mode() {
        eprintln!("skipped: the conformance cases run on both stores in the SQLite pass");
        return None;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sqlite = SqliteStore::open(&dir.path().join("coffer.sqlite3"), Durability::Full).expect("SQLite opens");
    let database = common::TestDatabase::create();
    let postgres = PostgresStore::open(&database.url).await.expect("PostgreSQL opens");
    let stores: Vec<(&'static str, Arc<dyn Store>)> =
        vec![("sqlite", Arc::new(sqlite)), ("postgres", Arc::new(postgres))];
    Some(Backends { stores, _dir: dir, _database: database })
}

/// Runs `case` on every backend, naming the backend in any failure.
macro_rules! on_every_store {
    ($case:ident) => {{
        let Some(backends) = backends().await else { return };
        for (name, store) in &backends.stores {
            eprintln!("{}: {name}", stringify!($case));
            $case(store.as_ref()).await;
        }
    }};
}

fn new_key(id: &str, agent_id: &str) -> NewKey {
    NewKey {
        id: id.into(),
        agent_id: agent_id.into(),
        scope: Scope::Spend,
        digest: SecretDigest::of(id),
        expires_at_ms: None,
    }
}

fn new_agent(id: &str, parent_id: Option<&str>) -> NewAgent {
    NewAgent {
        id: id.into(),
        name: format!("agent {id}"),
        parent_id: parent_id.map(str::to_owned),
        can_create_subagents: parent_id.is_none(),
        task: parent_id.map(|parent| format!("task of {parent}")),
        key: new_key(&format!("key_{id}"), id),
        quotas: Default::default(),
    }
}

fn invoice(hash_byte: u8, agent_id: &str, created_at_ms: i64, expires_at_ms: i64) -> InvoiceRecord {
    InvoiceRecord {
        payment_hash: [hash_byte; 32],
        agent_id: agent_id.into(),
        amount: Msat::new(1_000),
        memo: format!("memo {hash_byte}"),
        bolt11: format!("lnbc{hash_byte}"),
        preimage: [hash_byte.wrapping_add(1); 32],
        status: StoredInvoiceStatus::Open,
        created_at_ms,
        expires_at_ms,
        paid_at_ms: None,
        paid_by: None,
        room_id: None,
        backend: None,
        hold_secs: None,
        escrow: None,
    }
}

/// Adds an agent with its wallet and key, in one write.
async fn add_agent(store: &dyn Store, id: &str) -> AgentRecord {
    let agent = new_agent(id, None);
    store
        .write(move |tx| {
            let account = tx.insert_wallet_account()?;
            tx.insert_agent(&agent, account, 1_000)?;
            tx.insert_key(&agent.key, 1_000)?;
            tx.agent(&agent.id)?.ok_or(Error::NotFound("agent"))
        })
        .await
        .expect("an agent is added")
}

async fn ledger_rows(store: &dyn Store) {
    let (a, b) = (add_agent(store, "a").await, add_agent(store, "b").await);
    assert_ne!(a.account, b.account, "each agent has its own account");
    assert!(a.account.0 >= AccountId::FIRST_WALLET && b.account.0 >= AccountId::FIRST_WALLET);
    let t = Transfer { debit: AccountId::OUTSIDE, credit: a.account, amount: Msat::new(5_000) };
    let id = store
        .write(move |tx| {
            let mut debit = tx.balance(t.debit)?;
            let mut credit = tx.balance(t.credit)?;
            coffer_core::ledger::post(t, &mut debit, &mut credit)?;
            tx.save_balance(t.debit, &debit)?;
            tx.save_balance(t.credit, &credit)?;
            tx.insert_transfer(&t, "mint", 2_000)
        })
        .await
        .expect("a transfer posts");
    assert!(id > 0);
    let balance = store.read(move |tx| tx.balance(a.account)).await.expect("a balance");
    assert_eq!(balance.credits_posted, Msat::new(5_000));
    let input = store.read(|tx| tx.audit_input()).await.expect("the audit input");
    let report = coffer_core::ledger::audit(input.accounts, input.sums);
    assert!(report.violations.is_empty(), "the ledger audits: {report:?}");
    let missing = store.read(|tx| tx.balance(AccountId(999_999))).await;
    assert!(matches!(missing, Err(Error::NotFound("account"))), "{missing:?}");
}

/// The ids of agent "parent"'s live signing keys, with `required`.
async fn live_signing_keys(store: &dyn Store) -> Vec<(String, bool)> {
    let keys = store.read(|tx| tx.live_signing_keys_of("parent")).await.expect("a read");
    keys.into_iter().map(|k| (k.id, k.required)).collect()
}

async fn agents_and_keys(store: &dyn Store) {
    add_agent(store, "parent").await;
    let child = new_agent("child", Some("parent"));
    store
        .write(move |tx| {
            let account = tx.insert_wallet_account()?;
            tx.insert_agent(&child, account, 2_000)
        })
        .await
        .expect("a sub-agent");
    let agents = store.read(|tx| tx.agents()).await.expect("agents");
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["parent", "child"], "oldest first");
    assert!(agents[0].can_create_subagents && !agents[1].can_create_subagents, "the flag reads back");
    assert_eq!(agents[1].parent_id.as_deref(), Some("parent"));
    assert_eq!((agents[0].task.as_deref(), agents[1].task.as_deref()), (None, Some("task of parent")));
    let child_state = store.read(|tx| tx.agent_state("child")).await.expect("a read").expect("the state");
    assert_eq!(child_state.task.as_deref(), Some("task of parent"), "the task its payments inherit");

    let key = store.read(|tx| tx.live_key("key_parent")).await.expect("a key").expect("it is live");
    assert_eq!(
        (key.agent_id.as_str(), key.scope, key.digest),
        ("parent", Scope::Spend, SecretDigest::of("key_parent"))
    );
    let digest = SecretDigest::of("key_parent");
    let by_digest = store.read(move |tx| tx.live_key_by_digest(&digest)).await.expect("a read");
    assert_eq!(by_digest.map(|k| k.id), Some("key_parent".to_owned()), "a live key is found by its digest");
    let unknown = SecretDigest::of("nobody's secret");
    assert!(store.read(move |tx| tx.live_key_by_digest(&unknown)).await.expect("a read").is_none());
    store.write(|tx| tx.revoke_key("key_parent", 3_000)).await.expect("revoked");
    assert!(store.read(|tx| tx.live_key("key_parent")).await.expect("a read").is_none());
    assert!(store.read(move |tx| tx.live_key_by_digest(&digest)).await.expect("a read").is_none(), "revoked");
    assert!(store.read(|tx| tx.live_keys()).await.expect("live keys").is_empty());

    // Signing keys: an agent's live ones, oldest first; a revoked one is not.
    for (id, at_ms, required) in [("sk_b", 2_000, true), ("sk_a", 1_000, false)] {
        let key = SigningKeyRecord {
            id: id.into(),
            agent_id: "parent".into(),
            alg: coffer_client::signing::Alg::Ed25519,
            public_key: vec![7; 32],
            required,
            created_at_ms: at_ms,
            revoked_at_ms: None,
        };
        store.write(move |tx| tx.insert_signing_key(&key)).await.expect("a signing key");
    }
    assert_eq!(live_signing_keys(store).await, [("sk_a".to_owned(), false), ("sk_b".to_owned(), true)]);
    assert!(store.write(|tx| tx.revoke_signing_key("parent", "sk_a", 3_000)).await.expect("revoked"));
    assert_eq!(live_signing_keys(store).await, [("sk_b".to_owned(), true)]);
    assert!(store.read(|tx| tx.live_signing_keys_of("nobody")).await.expect("a read").is_empty());

    let policy = r#"{"max_payment_msat":1000}"#;
    store.write(move |tx| tx.set_policy("parent", Some(policy))).await.expect("a policy");
    let state = store.read(|tx| tx.agent_state("parent")).await.expect("a read").expect("the state");
    assert_eq!(state.policy.map(|p| p.max_payment_msat), Some(Some(Msat::new(1_000))));
    assert!(!state.frozen);
    let unknown = store.write(|tx| tx.set_policy("nobody", None)).await;
    assert!(matches!(unknown, Err(Error::NotFound("agent"))), "{unknown:?}");

    store.write(|tx| tx.set_frozen("parent", Some("runaway"), 4_000)).await.expect("frozen");
    let frozen = store.read(|tx| tx.agent("parent")).await.expect("a read").expect("the agent");
    assert_eq!(frozen.frozen_reason.as_deref(), Some("runaway"));

    let settings = ChatSettings { require_acknowledgment: true, ..ChatSettings::default() };
    let stored = settings.clone();
    store.write(move |tx| tx.set_chat_settings("child", &stored)).await.expect("settings");
    let read = store.read(|tx| tx.chat_settings("child")).await.expect("a read").expect("the settings");
    assert!(read.require_acknowledgment);
    assert!(store.read(|tx| tx.acknowledges_incoming("child")).await.expect("a read"));
    assert!(!store.read(|tx| tx.acknowledges_incoming("parent")).await.expect("a read"));

    let digest = SecretDigest::of("operator");
    store.write(move |tx| tx.set_operator_digest(&digest)).await.expect("the digest");
    assert_eq!(store.read(|tx| tx.operator_digest()).await.expect("a read"), Some(digest));
    assert!(!store.read(|tx| tx.halted()).await.expect("a read"));
    store.write(|tx| tx.set_halted(true)).await.expect("halted");
    assert!(store.read(|tx| tx.halted()).await.expect("a read"));
}

async fn invoices_and_payments(store: &dyn Store) {
    add_agent(store, "payee").await;
    for (byte, created) in [(1u8, 10_000i64), (2, 11_000), (3, 12_000)] {
        store
            .write(move |tx| tx.insert_invoice(&invoice(byte, "payee", created, created + 1_000)))
            .await
            .expect("an invoice");
    }
    let orphan = store.write(|tx| tx.insert_invoice(&invoice(9, "nobody", 1, 2))).await;
    assert!(matches!(orphan, Err(Error::NotFound("agent"))), "{orphan:?}");

    let page = PageRequest { before: None, limit: 2 };
    let (first, cursor) = store.read(move |tx| tx.invoices("payee", page)).await.expect("a page");
    assert_eq!(first.iter().map(|i| i.payment_hash[0]).collect::<Vec<_>>(), [3, 2], "newest first");
    let page = PageRequest { before: cursor, limit: 2 };
    let (rest, end) = store.read(move |tx| tx.invoices("payee", page)).await.expect("a page");
    assert_eq!((rest.len(), rest[0].payment_hash[0], end), (1, 1, None));

    store.write(|tx| tx.mark_invoice_paid(&[2; 32], "payer", 11_500)).await.expect("paid");
    let twice = store.write(|tx| tx.mark_invoice_paid(&[2; 32], "payer", 11_600)).await;
    assert!(matches!(twice, Err(Error::InvoiceAlreadyPaid)), "{twice:?}");

    assert!(store.read(|tx| tx.invoices_due(13_500, 0)).await.expect("a read"));
    let expired = store.write(|tx| tx.expire_invoices(13_500, 0, 10)).await.expect("the sweep");
    assert_eq!(expired.iter().map(|i| i.payment_hash[0]).collect::<Vec<_>>(), [1, 3], "in their order, paid left");
    assert!(!store.read(|tx| tx.invoices_due(13_500, 0)).await.expect("a read"));
    let (paid, _) = store.read(|tx| tx.invoice(&[2; 32])).await.expect("a read").expect("the invoice");
    assert_eq!((paid.status, paid.paid_by.as_deref()), (StoredInvoiceStatus::Paid, Some("payer")));
    assert!(store.write(|tx| tx.mark_invoice_paid_from_outside(&[1; 32], 14_000)).await.expect("credited"));

    let payment = PaymentRecord {
        id: "pay_1".into(),
        agent_id: "payee".into(),
        payment_hash: [2; 32],
        amount: Msat::new(1_000),
        fee: Msat::ZERO,
        status: PaymentStatus::Pending,
        purpose: "a test".into(),
        payee_agent_id: None,
        preimage: None,
        created_at_ms: 15_000,
        detail: None,
        refunded: Msat::ZERO,
        attribution: Attribution { task: Some("crawl".into()), tags: vec!["a".into(), "team:x".into()] },
    };
    let stored = payment.clone();
    store.write(move |tx| tx.insert_payment(&stored, "key_payee", None)).await.expect("a payment");
    let done = PaymentRecord { status: PaymentStatus::Succeeded, preimage: Some([3; 32]), ..payment.clone() };
    let update = done.clone();
    store.write(move |tx| tx.update_payment(&update, None)).await.expect("updated");
    assert_eq!(store.read(|tx| tx.payment("pay_1")).await.expect("a read"), Some(done));
    // Paid at once, to an agent: its preimage is its invoice's (kept once,
    // in the invoice's row), and its payee reads back. One whose preimage is
    // not its invoice's keeps its own; one without none.
    let internal = PaymentRecord {
        id: "pay_2".into(),
        payment_hash: [3; 32],
        status: PaymentStatus::Succeeded,
        payee_agent_id: Some("payee".into()),
        preimage: Some([4; 32]),
        ..payment.clone()
    };
    let other = PaymentRecord { id: "pay_3".into(), preimage: Some([5; 32]), ..internal.clone() };
    let none = PaymentRecord { id: "pay_4".into(), preimage: None, status: PaymentStatus::Failed, ..internal.clone() };
    for p in [&internal, &other, &none] {
        let stored = p.clone();
        store.write(move |tx| tx.insert_payment(&stored, "key_payee", None)).await.expect("a payment");
        let id = p.id.clone();
        assert_eq!(store.read(move |tx| tx.payment(&id)).await.expect("a read").as_ref(), Some(p));
    }

    let idem = Idempotency { key: "k1".into(), request_digest: [4; 32] };
    let again = idem.clone();
    store.write(move |tx| tx.insert_idempotency("payee", &idem, "pay_1", 15_000)).await.expect("remembered");
    let replayed = store.write(move |tx| tx.insert_idempotency("payee", &again, "pay_2", 15_001)).await;
    assert!(replayed.is_err(), "a key is remembered once");
    assert_eq!(store.read(|tx| tx.idempotency("payee", "k1")).await.expect("a read"), Some(([4; 32], "pay_1".into())));
}

async fn approvals_and_audit(store: &dyn Store) {
    add_agent(store, "payer").await;
    let approval = |id: &str, hash: u8, expires_at_ms: i64| ApprovalRecord {
        id: id.into(),
        agent_id: "payer".into(),
        key_id: "key_payer".into(),
        payment_hash: [hash; 32],
        bolt11: "lnbc1".into(),
        amount: Msat::new(500),
        purpose: "needs a person".into(),
        payee_agent_id: None,
        status: ApprovalStatus::Pending,
        created_at_ms: 1_000,
        expires_at_ms,
        decided_at_ms: None,
        decided_by: None,
        payment_id: None,
        fee_limit: Msat::ZERO,
        payee_node_hex: None,
        escrow: Some(EscrowTerms { release_after_ms: 60_000, on_timeout: coffer_client::Outcome::Refund }),
        attribution: Attribution { task: Some("held task".into()), tags: vec!["h".into()] },
    };
    let (first, second) = (approval("apr_1", 7, 9_000), approval("apr_2", 8, 5_000));
    let decided = ApprovalRecord { status: ApprovalStatus::Denied, decided_at_ms: Some(2_000), ..first.clone() };
    store
        .write(move |tx| {
            tx.insert_approval(&first)?;
            tx.insert_approval(&second)
        })
        .await
        .expect("holds");
    assert!(store.read(|tx| tx.held(&[7; 32], Some("payer"))).await.expect("a read").is_some());
    assert!(store.read(|tx| tx.held(&[7; 32], Some("other"))).await.expect("a read").is_none());
    assert!(store.read(|tx| tx.held(&[7; 32], None)).await.expect("a read").is_some());
    let due = store.read(|tx| tx.due_approvals(10_000, 10)).await.expect("due");
    assert_eq!(due.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["apr_2", "apr_1"], "oldest deadline first");
    let again = decided.clone();
    store.write(move |tx| tx.update_approval(&decided)).await.expect("decided");
    let twice = store.write(move |tx| tx.update_approval(&again)).await;
    assert!(matches!(twice, Err(Error::ApprovalNotPending(_))), "a decision is final: {twice:?}");
    let pending = store.read(|tx| tx.approvals(Some(ApprovalStatus::Pending), 10)).await.expect("a list");
    assert_eq!(pending.len(), 1);

    for (i, action) in ["agent.created", "agent.funded", "policy.updated"].into_iter().enumerate() {
        let entry = AuditEntry {
            at_ms: 1_000 + i as i64,
            action,
            actor: OPERATOR.into(),
            agent_id: Some("payer".into()),
            ..AuditEntry::default()
        };
        store.write(move |tx| tx.audit(&entry)).await.expect("an audit entry");
    }
    // Numbered (on PostgreSQL, after commit) before it is read.
    store.sealed().await.expect("sealed");
    let chain = store.read(|tx| tx.audit_chain()).await.expect("the chain");
    assert_eq!(chain.len(), 3, "every record is in the chain once sealed");
    let links = chain.iter().map(|r| audit_chain::Link {
        seq: r.seq,
        prev_hash: r.prev_hash,
        hash: r.hash,
        body: r.body.as_bytes(),
    });
    assert!(audit_chain::verify(links).is_ok(), "the chain links");
    let filter = AuditFilter { action: Some("agent.funded".into()), ..AuditFilter::default() };
    let found = store.read(move |tx| tx.audit_log(&filter, 0, 10)).await.expect("filtered");
    assert_eq!(found.len(), 1);
    assert!(found[0].body.contains("agent.funded"));
    // A record may name what is no agent (the operator linking a chat):
    // it is kept, and found by that name as by an agent's.
    let entry = AuditEntry {
        at_ms: 2_000,
        action: "bridge.linked",
        actor: OPERATOR.into(),
        agent_id: Some(OPERATOR.into()),
        ..AuditEntry::default()
    };
    store.write(move |tx| tx.audit(&entry)).await.expect("an audit entry");
    store.sealed().await.expect("sealed");
    for (agent, count) in [(OPERATOR, 1), ("payer", 3), ("nobody", 0)] {
        let filter = AuditFilter { agent_id: Some(agent.into()), ..AuditFilter::default() };
        let found = store.read(move |tx| tx.audit_log(&filter, 0, 10)).await.expect("filtered");
        assert_eq!(found.len(), count, "{agent}'s records");
    }
}

async fn rooms_and_messages(store: &dyn Store) {
    add_agent(store, "alice").await;
    add_agent(store, "bob").await;
    for (id, at) in [("room_1", 1_000i64), ("room_2", 2_000), ("room_3", 3_000)] {
        let room = RoomRecord {
            id: id.into(),
            name: format!("name of {id}"),
            created_by: "alice".into(),
            created_at_ms: at,
            members: vec![],
        };
        store
            .write(move |tx| {
                tx.insert_room(&room)?;
                tx.add_member(&room.id, "alice", room.created_at_ms)?;
                tx.add_member(&room.id, "alice", room.created_at_ms + 1)
            })
            .await
            .expect("a room");
    }
    store.write(|tx| tx.add_member("room_2", "bob", 2_500)).await.expect("a member");
    let room = store.read(|tx| tx.room("room_2")).await.expect("a read").expect("the room");
    assert_eq!(room.members, ["alice", "bob"], "members once each, in the order they came");
    let (page, next) = store.read(|tx| tx.rooms(Some("alice"), None, 2)).await.expect("a page");
    assert_eq!((page.len(), next.as_deref()), (2, Some("room_2")));
    let (rest, end) = store.read(|tx| tx.rooms(Some("alice"), Some("room_2"), 2)).await.expect("a page");
    assert_eq!((rest.len(), rest[0].id.as_str(), end), (1, "room_3", None));
    let (bobs, _) = store.read(|tx| tx.rooms(Some("bob"), None, 10)).await.expect("bob's");
    assert_eq!(bobs.len(), 1);

    let request = invoice(5, "alice", 3_000, 60_000);
    let message = NewMessage {
        room_id: "room_2".into(),
        sender: "alice".into(),
        text: "pay me".into(),
        invoice: Some(request.clone()),
        now_ms: 3_000,
        quotas: Default::default(),
    };
    let id = store
        .write(move |tx| {
            tx.insert_invoice(&request)?;
            tx.insert_message(&message, MessageKind::PaymentRequest)
        })
        .await
        .expect("a message");
    let read = store.read(move |tx| tx.message("room_2", id)).await.expect("a read").expect("the message");
    assert_eq!((read.kind, read.invoice.map(|i| i.payment_hash)), (MessageKind::PaymentRequest, Some([5; 32])));
    assert_eq!(store.read(|tx| tx.messages("room_2", 0, 10)).await.expect("messages").len(), 1);
    assert!(store.write(|tx| tx.remove_member("room_2", "bob")).await.expect("removed"));
    assert!(!store.write(|tx| tx.remove_member("room_2", "bob")).await.expect("not a member"));
}

async fn outbox_and_webhooks(store: &dyn Store) {
    // An event names its agent by the agent's account id: one that names
    // no agent of the store is kept, with no agent.
    add_agent(store, "x").await;
    store.write(|tx| tx.insert_event("a.ghost", Some("nobody"), &serde_json::json!({}), 1_000)).await.expect("kept");
    store.sealed().await.expect("sealed");
    let ghost = store.read(|tx| tx.events(0, None, 10)).await.expect("events");
    assert_eq!(ghost.iter().map(|e| (e.kind.as_str(), e.agent_id.as_deref())).collect::<Vec<_>>(), [("a.ghost", None)]);
    let after_ghost = ghost[0].id;
    for (kind, agent) in [("a.one", Some("x")), ("a.two", None), ("a.three", Some("x"))] {
        let data = serde_json::json!({"kind": kind});
        store.write(move |tx| tx.insert_event(kind, agent, &data, 1_000)).await.expect("an event");
    }
    store.sealed().await.expect("sealed");
    let all = store.read(move |tx| tx.events(after_ghost, None, 10)).await.expect("events");
    assert_eq!(all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["a.one", "a.two", "a.three"]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    assert_eq!(all[1].data, serde_json::json!({"kind": "a.two"}));
    let mine = store.read(|tx| tx.events(0, Some("x"), 10)).await.expect("x's events");
    assert_eq!(mine.len(), 2);
    let newest = store.read(|tx| tx.newest_event_id()).await.expect("the newest");
    assert_eq!(Some(newest), all.last().map(|e| e.id));

    assert_eq!(store.write(|tx| tx.claim_lease("bus", "one", 1_000, 500)).await.expect("claimed"), Some(0));
    assert_eq!(store.write(|tx| tx.claim_lease("bus", "two", 1_200, 500)).await.expect("held"), None);
    assert!(store.write(|tx| tx.advance_lease("bus", "one", 7)).await.expect("advanced"));
    assert!(!store.write(|tx| tx.advance_lease("bus", "two", 9)).await.expect("not the holder's"));
    assert_eq!(store.write(|tx| tx.claim_lease("bus", "two", 2_000, 500)).await.expect("expired"), Some(7));

    let webhook = WebhookRecord {
        id: "whk_1".into(),
        owner: Some("x".into()),
        url: "https://example.test/hook".into(),
        types: vec!["a.one".into()],
        state: WebhookState { after_event_id: newest, ..WebhookState::default() },
        created_at_ms: 1_000,
    };
    let stored = webhook.clone();
    store.write(move |tx| tx.insert_webhook(&stored)).await.expect("a webhook");
    assert_eq!(store.read(|tx| tx.webhook("whk_1")).await.expect("a read"), Some(webhook.clone()));
    assert_eq!(store.read(|tx| tx.webhooks(Some("y"))).await.expect("a read"), vec![]);
    let paused = WebhookState { failures: 3, paused: true, next_attempt_at_ms: 9_000, ..webhook.state };
    store.write(move |tx| tx.save_webhook_state("whk_1", &paused)).await.expect("a state");
    let delivery = DeliveryRecord {
        webhook_id: "whk_1".into(),
        event_id: newest,
        attempt: 3,
        status: Some(503),
        error: Some("unavailable".into()),
        delivered: false,
        at_ms: 2_000,
        duration_ms: 12,
    };
    let logged = delivery.clone();
    store.write(move |tx| tx.insert_delivery(&logged)).await.expect("logged");
    assert_eq!(store.read(|tx| tx.deliveries("whk_1", 10)).await.expect("a log"), vec![delivery]);
    let read = store.read(|tx| tx.webhook("whk_1")).await.expect("a read").expect("the webhook");
    assert_eq!(read.state, paused);
    let missing = store.write(move |tx| tx.save_webhook_state("whk_none", &paused)).await;
    assert!(matches!(missing, Err(Error::NotFound("webhook"))), "{missing:?}");

    // The paused webhook reads nothing, and the lease's cursor (7) is
    // past the events: retention may take what every consumer read, but
    // the newest event, whose id the next one must come after.
    let cutoffs = Cutoffs { invoices_expired_before_ms: 0, events_before_ms: 5_000, deliveries_before_ms: 5_000 };
    let pruned = store.write(move |tx| tx.prune(&cutoffs)).await.expect("pruned");
    assert_eq!((pruned.events, pruned.deliveries), (3, 1), "the ghost's, a.one and a.two");
    let left = store.read(|tx| tx.events(0, None, 10)).await.expect("events");
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [newest]);
    assert!(store.write(|tx| tx.delete_webhook("whk_1")).await.expect("deleted"));
    assert!(!store.write(|tx| tx.delete_webhook("whk_1")).await.expect("gone"));
}

async fn l402_tokens_are_bounded(store: &dyn Store) {
    let max = L402_TOKENS_PER_ORIGIN_MAX as i64;
    for i in 0..max + 3 {
        let token = L402TokenRecord {
            agent_id: "a".into(),
            origin: "https://api.test".into(),
            scope: format!("/p{i}"),
            token: format!("t{i}"),
            preimage: [1; 32],
            amount: Msat::new(10),
            payment_id: format!("pay_{i}"),
            created_at_ms: 1_000,
            expires_at_ms: 100_000 + i,
        };
        store.write(move |tx| tx.save_l402_token(&token, 2_000)).await.expect("a token");
    }
    let kept = store.read(|tx| tx.l402_tokens("a", "https://api.test", 2_000)).await.expect("tokens");
    assert_eq!(kept.len() as i64, max, "at most {max} per origin");
    assert!(kept.iter().all(|t| t.scope != "/p0" && t.scope != "/p2"), "the first to expire made room");
    store.write(|tx| tx.forget_l402_token("a", "https://api.test", "t66")).await.expect("forgotten");
    let after = store.read(|tx| tx.l402_tokens("a", "https://api.test", 2_000)).await.expect("tokens");
    assert_eq!(after.len() as i64, max - 1);
}

async fn a_failed_write_changes_nothing(store: &dyn Store) {
    let failed = store
        .write(|tx| {
            let account = tx.insert_wallet_account()?;
            tx.insert_agent(&new_agent("ghost", None), account, 1_000)?;
            tx.insert_event("ghost.created", None, &serde_json::json!({}), 1_000)?;
            Err::<(), _>(Error::Internal("the operation fails after its writes".into()))
        })
        .await;
    assert!(failed.is_err());
    assert!(store.read(|tx| tx.agent("ghost")).await.expect("a read").is_none(), "the agent rolled back");
    assert_eq!(store.read(|tx| tx.newest_event_id()).await.expect("a read"), 0, "the event rolled back");
    // The next write commits normally beside it.
    add_agent(store, "real").await;
    assert_eq!(store.read(|tx| tx.agents()).await.expect("agents").len(), 1);
}

/// Writes whose answer an operation does not wait for (PostgreSQL sends
/// them together with the next statement, or when the operation ends) are
/// seen by every read after them in the same operation, and a write that
/// changes other rows than it must fails its operation, which then changes
/// nothing, whatever it did before.
async fn writes_are_seen_by_later_reads_and_checked(store: &dyn Store) {
    add_agent(store, "pipelined").await;
    let seen = store
        .write(|tx| {
            tx.insert_invoice(&invoice(21, "pipelined", 1_000, 9_000))?;
            let open = tx.invoice(&[21; 32])?.map(|(i, _)| i.status);
            tx.mark_invoice_paid(&[21; 32], "payer", 2_000)?;
            let paid = tx.invoice(&[21; 32])?.map(|(i, _)| (i.status, i.paid_by));
            Ok((open, paid))
        })
        .await
        .expect("the write");
    assert_eq!(seen.0, Some(StoredInvoiceStatus::Open));
    assert_eq!(seen.1, Some((StoredInvoiceStatus::Paid, Some("payer".to_owned()))));

    store.sealed().await.expect("sealed");
    let events_before = store.read(|tx| tx.newest_event_id()).await.expect("a read");
    let again = store
        .write(|tx| {
            tx.insert_event("pipelined.written", Some("pipelined"), &serde_json::json!({}), 3_000)?;
            tx.insert_invoice(&invoice(22, "pipelined", 3_000, 9_000))?;
            // Paid already: the statement changes no row.
            tx.mark_invoice_paid(&[21; 32], "payer", 3_000)?;
            tx.insert_event("pipelined.after", Some("pipelined"), &serde_json::json!({}), 3_000)
        })
        .await;
    assert!(matches!(again, Err(Error::InvoiceAlreadyPaid)), "{again:?}");
    store.sealed().await.expect("sealed");
    assert_eq!(store.read(|tx| tx.newest_event_id()).await.expect("a read"), events_before, "no event kept");
    assert!(store.read(|tx| tx.invoice(&[22; 32])).await.expect("a read").is_none(), "no invoice kept");
    let first = store.read(|tx| tx.invoice(&[21; 32])).await.expect("a read").map(|(i, _)| i.paid_at_ms);
    assert_eq!(first, Some(Some(2_000)), "the first payment's record stands");
}

/// A job that meets a failed statement and goes on as if nothing happened
/// (on PostgreSQL that leaves the transaction aborted, and a later COMMIT
/// quietly rolls everything back) must not cost another job of its batch
/// the write it was told is committed: a write answered Ok is there, one
/// answered Err is not.
async fn a_swallowed_failure_never_loses_a_neighbours_acknowledged_write(store: &dyn Store) {
    add_agent(store, "swallow").await;
    // The writer sleeps in the first job while the two others queue up
    // behind it, and they join its batch.
    let blocker = store.write(|_tx| {
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(())
    });
    let good = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        store.write(|tx| tx.insert_key(&new_key("key_good", "swallow"), 2_000)).await
    };
    let swallowing = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        store
            .write(|tx| {
                // The same key again: a unique violation, ignored.
                let _ = tx.insert_key(&new_key("key_swallow", "swallow"), 2_000);
                Ok(())
            })
            .await
    };
    // The first job's answer follows the batch's, like the good one's.
    let (_, good, _) = tokio::join!(blocker, good, swallowing);
    let there = store.read(|tx| tx.live_key("key_good")).await.expect("a read").is_some();
    assert_eq!(good.is_ok(), there, "answered {good:?}, and the key is there: {there}");
}

/// Holds and escrows, sessions and their charges, refunds: each row as
/// written, status changes only from the status named, deadlines found in
/// order, listings bounded.
async fn commerce_rows(store: &dyn Store) {
    add_agent(store, "payer").await;
    add_agent(store, "payee").await;
    let hold = InvoiceRecord { hold_secs: Some(600), ..invoice(1, "payee", 1_000, 9_000) };
    let terms = EscrowTerms { release_after_ms: 60_000, on_timeout: coffer_client::Outcome::Release };
    let asks = InvoiceRecord { escrow: Some(terms), ..invoice(9, "payee", 1_000, 9_000) };
    let write = asks.clone();
    store.write(move |tx| tx.insert_invoice(&write)).await.expect("an invoice asking for escrow");
    let (read, _) = store.read(|tx| tx.invoice(&[9; 32])).await.expect("a read").expect("the invoice");
    assert_eq!((read.escrow, read.hold_secs), (Some(terms), None), "the terms read back as written");
    store.write(move |tx| tx.insert_invoice(&hold)).await.expect("a hold invoice");
    let (open, accepted) = (StoredInvoiceStatus::Open, StoredInvoiceStatus::Accepted);
    let moved = store.write(move |tx| tx.move_invoice(&[1; 32], open, accepted, Some("payer"), None)).await;
    assert!(moved.expect("moved"));
    let again = store.write(move |tx| tx.move_invoice(&[1; 32], open, accepted, Some("payer"), None)).await;
    assert!(!again.expect("a no-op"), "only from the status named");
    let (stored, _) = store.read(|tx| tx.invoice(&[1; 32])).await.expect("a read").expect("the invoice");
    assert_eq!((stored.status, stored.hold_secs, stored.paid_by.as_deref()), (accepted, Some(600), Some("payer")));

    let escrow = |id: &str, hash: u8, deadline_at_ms: i64| EscrowRecord {
        payment_id: id.into(),
        kind: EscrowKind::Escrow,
        payment_hash: [hash; 32],
        payer_agent_id: "payer".into(),
        payee_agent_id: "payee".into(),
        amount: Msat::new(700),
        status: EscrowStatus::Held,
        on_timeout: coffer_client::Outcome::Release,
        deadline_at_ms,
        created_at_ms: 1_000,
        resolved_at_ms: None,
        resolved_by: None,
    };
    let (late, early) = (escrow("pay_late", 2, 9_000), escrow("pay_early", 3, 5_000));
    let rows = (late.clone(), early.clone());
    store.write(move |tx| tx.insert_escrow(&rows.0).and_then(|()| tx.insert_escrow(&rows.1))).await.expect("escrows");
    let twice = late.clone();
    assert!(store.write(move |tx| tx.insert_escrow(&twice)).await.is_err(), "one escrow per payment hash");
    assert_eq!(store.read(|tx| tx.escrow("pay_late")).await.expect("a read"), Some(late.clone()));
    assert_eq!(store.read(|tx| tx.escrow_by_hash(&[3; 32])).await.expect("a read"), Some(early.clone()));
    assert!(!store.read(|tx| tx.escrows_due(4_999)).await.expect("a read"));
    let due = store.read(|tx| tx.due_escrows(9_000, 10)).await.expect("a read");
    assert_eq!(due.iter().map(|e| e.payment_id.as_str()).collect::<Vec<_>>(), ["pay_early", "pay_late"]);
    // A hold paid from outside waits at the backend's node: the agents'
    // sweep does not see it, the outside sweep sees only such holds.
    let outside = EscrowRecord {
        kind: EscrowKind::Hold,
        payer_agent_id: OUTSIDE_PAYER.into(),
        on_timeout: coffer_client::Outcome::Refund,
        ..escrow("out_1", 4, 4_000)
    };
    let write = outside.clone();
    store.write(move |tx| tx.insert_escrow(&write)).await.expect("an outside hold");
    assert!(!store.read(|tx| tx.escrows_due(4_999)).await.expect("a read"), "not an agent's escrow");
    let due = store.read(|tx| tx.due_escrows(9_000, 10)).await.expect("a read");
    assert_eq!(due.iter().map(|e| e.payment_id.as_str()).collect::<Vec<_>>(), ["pay_early", "pay_late"]);
    assert!(store.read(|tx| tx.due_outside_holds(3_999, 10)).await.expect("a read").is_empty());
    let due = store.read(|tx| tx.due_outside_holds(9_000, 10)).await.expect("a read");
    assert_eq!(due, vec![outside.clone()]);
    let write = EscrowRecord { status: EscrowStatus::Refunded, resolved_at_ms: Some(4_500), ..outside.clone() };
    assert!(store.write(move |tx| tx.update_escrow(&write, EscrowStatus::Held)).await.expect("updated"));
    assert!(store.read(|tx| tx.due_outside_holds(9_000, 10)).await.expect("a read").is_empty(), "held ones only");
    let released = EscrowRecord {
        status: EscrowStatus::Released,
        resolved_at_ms: Some(6_000),
        resolved_by: Some("payer".into()),
        ..early.clone()
    };
    let write = released.clone();
    assert!(store.write(move |tx| tx.update_escrow(&write, EscrowStatus::Held)).await.expect("updated"));
    let write = released.clone();
    let late_decision = store.write(move |tx| tx.update_escrow(&write, EscrowStatus::Held)).await;
    assert!(!late_decision.expect("a no-op"), "a second decision changes nothing");
    assert_eq!(store.read(|tx| tx.escrow("pay_early")).await.expect("a read"), Some(released));
    let held = store.read(|tx| tx.escrows(Some("payee"), Some(EscrowStatus::Held), 10)).await.expect("a read");
    assert_eq!(held, vec![late]);
    assert!(store.read(|tx| tx.escrows(Some("nobody"), None, 10)).await.expect("a read").is_empty());

    let session = SessionRecord {
        id: "ses_1".into(),
        payer_agent_id: "payer".into(),
        payee_agent_id: "payee".into(),
        max: Msat::new(10_000),
        charged: Msat::ZERO,
        charges: 0,
        status: SessionStatus::Open,
        purpose: "metered".into(),
        created_at_ms: 1_000,
        expires_at_ms: 8_000,
        closed_at_ms: None,
        closed_by: None,
        attribution: Attribution { task: None, tags: vec!["gpu".into()] },
    };
    let write = session.clone();
    store.write(move |tx| tx.insert_session(&write)).await.expect("a session");
    for (i, amount) in [1_500, 2_500].into_iter().enumerate() {
        let charge = ChargeRecord {
            id: format!("chg_{i}"),
            session_id: "ses_1".into(),
            amount: Msat::new(amount),
            memo: format!("unit {i}"),
            created_at_ms: 2_000 + i as i64,
        };
        store.write(move |tx| tx.insert_charge(&charge, 1)).await.expect("a charge");
    }
    let charges = store.read(|tx| tx.charges("ses_1", 1)).await.expect("a read");
    assert_eq!(charges.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["chg_1"], "the newest, bounded");
    let charges = store.read(|tx| tx.charges("ses_1", 10)).await.expect("a read");
    assert_eq!(charges.iter().map(|c| c.amount.as_u64()).collect::<Vec<_>>(), [1_500, 2_500], "oldest first");
    assert_eq!(store.read(|tx| tx.charge("chg_0")).await.expect("a read"), Some(charges[0].clone()));
    assert!(store.read(|tx| tx.sessions_due(8_000)).await.expect("a read"));
    let closed = SessionRecord {
        charged: Msat::new(4_000),
        charges: 2,
        status: SessionStatus::Closed,
        closed_at_ms: Some(7_000),
        closed_by: Some("payee".into()),
        ..session
    };
    let write = closed.clone();
    assert!(store.write(move |tx| tx.update_session(&write, SessionStatus::Open)).await.expect("closed"));
    let write = closed.clone();
    assert!(!store.write(move |tx| tx.update_session(&write, SessionStatus::Open)).await.expect("a no-op"));
    assert_eq!(store.read(|tx| tx.session("ses_1")).await.expect("a read"), Some(closed.clone()));
    assert!(!store.read(|tx| tx.sessions_due(8_000)).await.expect("a read"), "a closed session is not due");
    let page = PageRequest { before: None, limit: 10 };
    let (listed, _) = store.read(move |tx| tx.sessions("payer", page)).await.expect("a read");
    assert_eq!(listed, vec![closed.clone()]);
    let (listed, _) = store.read(move |tx| tx.sessions("payee", page)).await.expect("a read");
    assert_eq!(listed, vec![closed]);

    let refund = RefundRecord {
        id: "ref_1".into(),
        payment_id: "pay_late".into(),
        from_agent_id: "payee".into(),
        to_agent_id: "payer".into(),
        amount: Msat::new(300),
        reason: "partly served".into(),
        payment_refunded: Msat::new(300),
        created_at_ms: 9_500,
    };
    let write = refund.clone();
    store.write(move |tx| tx.insert_refund(&write, 1)).await.expect("a refund");
    assert_eq!(store.read(|tx| tx.refund("ref_1")).await.expect("a read"), Some(refund.clone()));
    assert_eq!(store.read(|tx| tx.refunds("pay_late")).await.expect("a read"), vec![refund]);
}

/// NWC connections: found by their client key, listed newest first,
/// revoked once; a request is taken once, and forgotten by age.
async fn nwc_connections_and_requests(store: &dyn Store) {
    add_agent(store, "wallet").await;
    let connection = |id: &str, key_byte: u8, at_ms: i64| NwcConnectionRecord {
        id: id.into(),
        agent_id: "wallet".into(),
        name: format!("tool {id}"),
        client_pubkey: [key_byte; 32],
        methods: NwcMethods::parse_names("get_balance pay_invoice").expect("known methods"),
        notifications: key_byte == 1,
        created_at_ms: at_ms,
        expires_at_ms: Some(at_ms + 60_000),
        revoked_at_ms: None,
        last_used_at_ms: None,
    };
    let (first, second) = (connection("nwc_a", 1, 1_000), connection("nwc_b", 2, 2_000));
    for c in [first.clone(), second.clone()] {
        store.write(move |tx| tx.insert_nwc_connection(&c)).await.expect("a connection");
    }
    let same_key = connection("nwc_c", 1, 3_000);
    assert!(store.write(move |tx| tx.insert_nwc_connection(&same_key)).await.is_err(), "one connection per key");
    let listed = store.read(|tx| tx.nwc_connections_of("wallet", 10)).await.expect("a read");
    assert_eq!(listed, vec![second.clone(), first.clone()], "newest first, every field read back");
    let found = store.read(|tx| tx.nwc_connection_by_client(&[2; 32])).await.expect("a read");
    assert_eq!(found, Some(second));
    assert!(store.read(|tx| tx.nwc_connection_by_client(&[9; 32])).await.expect("a read").is_none());

    assert!(store.write(|tx| tx.take_nwc_request(&[7; 32], "nwc_a", 5_000)).await.expect("taken"));
    assert!(!store.write(|tx| tx.take_nwc_request(&[7; 32], "nwc_b", 5_001)).await.expect("a read"), "taken once");
    let used = store.read(|tx| tx.nwc_connection_by_client(&[1; 32])).await.expect("a read").expect("found");
    assert_eq!(used.last_used_at_ms, Some(5_000), "taking a request marks its connection used");
    assert!(store.write(|tx| tx.take_nwc_request(&[8; 32], "nwc_a", 6_000)).await.expect("taken"));
    assert_eq!(store.write(|tx| tx.prune_nwc_requests(5_500, 10)).await.expect("pruned"), 1);
    assert!(store.write(|tx| tx.take_nwc_request(&[7; 32], "nwc_a", 7_000)).await.expect("taken"), "forgotten");
    assert!(!store.write(|tx| tx.take_nwc_request(&[8; 32], "nwc_a", 7_000)).await.expect("a read"), "kept");

    assert!(store.write(|tx| tx.revoke_nwc_connection("wallet", "nwc_a", 8_000)).await.expect("revoked"));
    assert!(!store.write(|tx| tx.revoke_nwc_connection("wallet", "nwc_a", 9_000)).await.expect("a no-op"));
    assert!(!store.write(|tx| tx.revoke_nwc_connection("other", "nwc_b", 9_000)).await.expect("another's"));
    let revoked = store.read(|tx| tx.nwc_connection_by_client(&[1; 32])).await.expect("a read").expect("found");
    assert_eq!(revoked.revoked_at_ms, Some(8_000));
    assert!(!revoked.live(8_000));
}

/// Bridges: a link code is taken once and only while live, expired ones
/// are forgotten when counted; links are replaced, listed and deleted (of
/// their agent only); a chat is bridged to one room; a post is recorded
/// once and found by its room message, its messenger id and its hash;
/// cursors read back.
async fn bridge_rows(store: &dyn Store) {
    add_agent(store, "payer").await;
    let code = |byte: u8, expires_at_ms: i64| LinkCodeRecord {
        digest: [byte; 32],
        agent_id: "payer".into(),
        created_at_ms: 1_000,
        expires_at_ms,
    };
    for c in [code(1, 10_000), code(2, 2_000)] {
        store.write(move |tx| tx.insert_link_code(&c)).await.expect("a code");
    }
    assert_eq!(
        store.write(move |tx| tx.live_link_codes("payer", 5_000)).await.expect("counted"),
        1,
        "the expired one goes"
    );
    assert_eq!(store.write(move |tx| tx.take_link_code(&[2; 32], 1_500)).await.expect("a read"), None, "forgotten");
    assert_eq!(store.write(move |tx| tx.take_link_code(&[1; 32], 5_000)).await.expect("taken"), Some(code(1, 10_000)));
    assert_eq!(store.write(move |tx| tx.take_link_code(&[1; 32], 5_000)).await.expect("a read"), None, "used once");

    let link = |user: &str, agent: &str, at_ms: i64| BridgeLinkRecord {
        messenger: "telegram".into(),
        user_id: user.into(),
        user_name: format!("user {user}"),
        agent_id: agent.into(),
        chat_id: format!("chat-{user}"),
        linked_at_ms: at_ms,
    };
    for l in [link("1", "payer", 1_000), link("2", "payer", 2_000), link("1", "operator", 3_000)] {
        store.write(move |tx| tx.put_bridge_link(&l)).await.expect("a link");
    }
    assert_eq!(
        store.read(move |tx| tx.bridge_link("telegram", "1")).await.expect("a read"),
        Some(link("1", "operator", 3_000))
    );
    assert_eq!(
        store.read(move |tx| tx.bridge_links_of("payer", 10)).await.expect("a read"),
        vec![link("2", "payer", 2_000)]
    );
    assert!(!store.write(move |tx| tx.delete_bridge_link("telegram", "2", Some("operator"))).await.expect("not its"));
    assert!(store.write(move |tx| tx.delete_bridge_link("telegram", "2", None)).await.expect("deleted"));
    assert!(store.read(move |tx| tx.bridge_link("telegram", "2")).await.expect("a read").is_none());

    let bridge = |room: &str, chat: &str| RoomBridgeRecord {
        room_id: room.into(),
        messenger: "matrix".into(),
        chat_id: chat.into(),
        created_at_ms: 4_000,
    };
    store.write(move |tx| tx.put_room_bridge(&bridge("room_a", "!a:hs"))).await.expect("bridged");
    assert!(store.write(move |tx| tx.put_room_bridge(&bridge("room_b", "!a:hs"))).await.is_err(), "one room per chat");
    store.write(move |tx| tx.put_room_bridge(&bridge("room_a", "!b:hs"))).await.expect("moved");
    assert_eq!(store.read(move |tx| tx.room_bridges("room_a")).await.expect("a read"), vec![bridge("room_a", "!b:hs")]);
    assert!(store.read(move |tx| tx.room_bridge_of_chat("matrix", "!a:hs")).await.expect("a read").is_none());
    assert!(store.write(move |tx| tx.delete_room_bridge("room_a", "matrix")).await.expect("deleted"));
    assert!(store.read(move |tx| tx.room_bridges("room_a")).await.expect("a read").is_empty());

    let post = BridgePostRecord {
        messenger: "matrix".into(),
        room_id: "room_a".into(),
        message_id: 7,
        chat_id: "!b:hs".into(),
        external_id: "$card".into(),
        payment_hash: Some([5; 32]),
    };
    let (again, once) = (post.clone(), post.clone());
    assert!(store.write(move |tx| tx.insert_bridge_post(&once)).await.expect("recorded"));
    assert!(!store.write(move |tx| tx.insert_bridge_post(&again)).await.expect("a no-op"), "recorded once");
    assert_eq!(store.read(move |tx| tx.bridge_post("matrix", "room_a", 7)).await.expect("a read"), Some(post.clone()));
    let found = store.read(move |tx| tx.bridge_post_by_external("matrix", "!b:hs", "$card")).await.expect("a read");
    assert_eq!(found, Some(post.clone()));
    assert_eq!(store.read(move |tx| tx.bridge_posts_of_hash(&[5; 32])).await.expect("a read"), vec![post]);

    assert_eq!(store.read(move |tx| tx.bridge_cursor("matrix")).await.expect("a read"), None);
    store.write(move |tx| tx.set_bridge_cursor("matrix", "s72594_4483_1934")).await.expect("stored");
    store.write(move |tx| tx.set_bridge_cursor("matrix", "s72595_4483_1934")).await.expect("replaced");
    assert_eq!(
        store.read(move |tx| tx.bridge_cursor("matrix")).await.expect("a read").as_deref(),
        Some("s72595_4483_1934")
    );
}

/// What `/metrics` reads of the store: one count per kind, and each outbox
/// consumer's backlog (a messenger's own `*.read` cursor left out).
async fn gauge_counts(store: &dyn Store) {
    let empty = store.read(|tx| tx.gauges()).await.expect("gauges");
    assert_eq!(empty, coffer::metrics::StoreGauges::default());
    add_agent(store, "payer").await;
    add_agent(store, "frozen").await;
    store.write(|tx| tx.set_frozen("frozen", Some("a test"), 1_000)).await.expect("frozen");
    let approval = ApprovalRecord {
        id: "apr_g".into(),
        agent_id: "payer".into(),
        key_id: "key_payer".into(),
        payment_hash: [9; 32],
        bolt11: "lnbc1".into(),
        amount: Msat::new(500),
        purpose: "needs a person".into(),
        payee_agent_id: None,
        status: ApprovalStatus::Pending,
        created_at_ms: 1_000,
        expires_at_ms: 9_000,
        decided_at_ms: None,
        decided_by: None,
        payment_id: None,
        fee_limit: Msat::ZERO,
        payee_node_hex: None,
        escrow: None,
        attribution: Default::default(),
    };
    store.write(move |tx| tx.insert_approval(&approval)).await.expect("a hold");
    for kind in ["a.one", "a.two", "a.three"] {
        let data = serde_json::json!({});
        store.write(move |tx| tx.insert_event(kind, None, &data, 1_000)).await.expect("an event");
    }
    store.sealed().await.expect("sealed");
    let newest = store.read(|tx| tx.newest_event_id()).await.expect("the newest");
    store.write(|tx| tx.claim_lease("bus", "one", 1_000, 500)).await.expect("claimed");
    store.write(move |tx| tx.advance_lease("bus", "one", newest - 1)).await.expect("advanced");
    store.write(|tx| tx.claim_lease("bridge.telegram.read", "one", 1_000, 500)).await.expect("claimed");
    store.write(|tx| tx.advance_lease("bridge.telegram.read", "one", 987_654)).await.expect("advanced");
    let gauges = store.read(|tx| tx.gauges()).await.expect("gauges");
    let expected = coffer::metrics::StoreGauges {
        approvals_pending: 1,
        agents_frozen: 1,
        outbox_backlog: vec![("bus".to_owned(), 1)],
        ..Default::default()
    };
    assert_eq!(gauges, expected);
}

/// Spend totals add up per dimension, agent and day; a query reads one
/// dimension over a range of days, by value or by day, largest first.
async fn spend_rows(store: &dyn Store) {
    const DAY_MS: i64 = 86_400_000;
    let tagged = Attribution { task: Some("crawl".into()), tags: vec!["a".into(), "b".into()] };
    let untagged = Attribution::default();
    let spends = [
        ("agt_1", "agent:agt_9", &tagged, 1_000, 10, 10 * DAY_MS + 5),
        ("agt_1", "agent:agt_9", &tagged, 2_000, 0, 10 * DAY_MS + 6),
        ("agt_1", "node:02ab", &untagged, 500, 3, 11 * DAY_MS),
        ("agt_2", "agent:agt_9", &tagged, 4_000, 0, 12 * DAY_MS - 1),
        ("agt_2", "agent:agt_9", &untagged, 7_000, 0, 20 * DAY_MS),
    ];
    for (agent_id, payee, attribution, amount, fee, at_ms) in spends {
        let (attribution, payee) = (attribution.clone(), payee.to_owned());
        store
            .write(move |tx| {
                tx.add_spend(&Spend {
                    agent_id,
                    payee: &payee,
                    attribution: &attribution,
                    amount: Msat::new(amount),
                    fee: Msat::new(fee),
                    at_ms,
                })
            })
            .await
            .expect("a spend");
    }
    let read = |dimension, by_day, from_day, to_day| async move {
        let query = SpendQuery { dimension, by_day, from_day, to_day, limit: 100 };
        let rows = store.read(move |tx| tx.spend_totals(&query)).await.expect("a read");
        rows.into_iter()
            .map(|r| (r.agent_id, r.value, r.payments, r.amount.as_u64(), r.fee.as_u64()))
            .collect::<Vec<_>>()
    };
    let s = |text: &str| text.to_owned();
    assert_eq!(
        read(Dimension::Payee, false, 10, 11).await,
        [
            (s("agt_2"), s("agent:agt_9"), 1, 4_000, 0),
            (s("agt_1"), s("agent:agt_9"), 2, 3_000, 10),
            (s("agt_1"), s("node:02ab"), 1, 500, 3),
        ],
        "largest amount first, days 10 and 11 only"
    );
    assert_eq!(
        read(Dimension::Task, false, 0, 100).await,
        [(s("agt_2"), s("crawl"), 1, 4_000, 0), (s("agt_1"), s("crawl"), 2, 3_000, 10)],
        "an untagged spend has no task row"
    );
    assert_eq!(
        read(Dimension::Tag, false, 0, 100).await,
        [
            (s("agt_2"), s("a"), 1, 4_000, 0),
            (s("agt_2"), s("b"), 1, 4_000, 0),
            (s("agt_1"), s("a"), 2, 3_000, 10),
            (s("agt_1"), s("b"), 2, 3_000, 10),
        ]
    );
    assert_eq!(
        read(Dimension::Payee, true, 0, 100).await,
        [
            (s("agt_2"), s("20"), 1, 7_000, 0),
            (s("agt_2"), s("11"), 1, 4_000, 0),
            (s("agt_1"), s("10"), 2, 3_000, 10),
            (s("agt_1"), s("11"), 1, 500, 3),
        ],
        "by day: the day's number as the value"
    );
    assert!(read(Dimension::Task, false, 21, 30).await.is_empty());
}

#[tokio::test]
async fn spend_totals() {
    on_every_store!(spend_rows);
}

#[tokio::test]
async fn gauges() {
    on_every_store!(gauge_counts);
}

#[tokio::test]
async fn bridges() {
    on_every_store!(bridge_rows);
}

#[tokio::test]
async fn nwc() {
    on_every_store!(nwc_connections_and_requests);
}

#[tokio::test]
async fn commerce() {
    on_every_store!(commerce_rows);
}

#[tokio::test]
async fn ledger() {
    on_every_store!(ledger_rows);
}

#[tokio::test]
async fn agents() {
    on_every_store!(agents_and_keys);
}

#[tokio::test]
async fn invoices() {
    on_every_store!(invoices_and_payments);
}

#[tokio::test]
async fn approvals() {
    on_every_store!(approvals_and_audit);
}

#[tokio::test]
async fn rooms() {
    on_every_store!(rooms_and_messages);
}

#[tokio::test]
async fn outbox() {
    on_every_store!(outbox_and_webhooks);
}

#[tokio::test]
async fn l402() {
    on_every_store!(l402_tokens_are_bounded);
}

#[tokio::test]
async fn atomicity() {
    on_every_store!(a_failed_write_changes_nothing);
    on_every_store!(a_swallowed_failure_never_loses_a_neighbours_acknowledged_write);
    on_every_store!(writes_are_seen_by_later_reads_and_checked);
}
