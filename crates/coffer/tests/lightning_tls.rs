//! LND's pinned TLS certificate: LND serves its REST API with a self-signed
//! `tls.cert` marked `CA:TRUE`, which rustls refuses even as a trusted root,
//! so coffer pins that one certificate (`COFFER_LND_TLS_CERT_FILE`). A local
//! server answers as LND does, over TLS with such a certificate
//! (tests/fixtures/tls, throwaway test keys): pinned, coffer talks to it;
//! pinning another certificate, or none, coffer refuses the handshake, the
//! deposit fails cleanly, no request reaches the server, nothing is
//! recorded and `coffer audit` passes.

mod common;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffer::payment::bolt11::{Network, ParsedInvoice};
use coffer_client::{Client, DepositRequest};
use coffer_core::Msat;
use common::lightning::other_node;
use common::{Gateway, problem};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const MACAROON_HEX: &str = "0201036c6e6402f801fixture";

fn tls_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The LND node: it makes invoices for coffer's preimages and says they are
/// open; it counts the requests that reached it.
#[derive(Clone)]
struct Node {
    signer: Arc<coffer::payment::bolt11::NodeSigner>,
    requests: Arc<AtomicU32>,
}

impl Node {
    /// Serves LND's invoice routes over TLS with the fixture certificate;
    /// returns the node and its `https://` URL.
    async fn start() -> (Node, String) {
        let node = Node { signer: Arc::new(other_node(Network::Bitcoin)), requests: Arc::default() };
        let app = Router::new()
            .route("/v1/invoices", post(add_invoice))
            .route("/v1/invoice/{hash}", get(lookup_invoice))
            .with_state(node.clone());
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("binding the TLS server");
        let url = format!("https://{}", tcp.local_addr().expect("its address"));
        let listener = TlsListener { tcp, acceptor: acceptor() };
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serving TLS") });
        (node, url)
    }

    fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// `POST /v1/invoices`: an invoice for the preimage coffer chose.
async fn add_invoice(State(node): State<Node>, Json(body): Json<Value>) -> Json<Value> {
    node.requests.fetch_add(1, Ordering::SeqCst);
    let field = |name: &str| body[name].as_str().unwrap_or_else(|| panic!("{name} in {body}")).to_owned();
    let preimage: [u8; 32] =
        STANDARD.decode(field("r_preimage")).expect("base64").try_into().expect("a 32-byte preimage");
    let amount = Msat::new(field("value_msat").parse().expect("value_msat, a whole number"));
    let expiry_secs = field("expiry").parse().expect("expiry, a whole number");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let signed = node
        .signer
        .sign_with_preimage(preimage, amount, &field("memo"), expiry_secs, Duration::from_secs(now.as_secs()))
        .expect("signing the invoice");
    Json(json!({"r_hash": STANDARD.encode(signed.payment_hash), "payment_request": signed.bolt11}))
}

/// `GET /v1/invoice/{hash}`: still open (the deposit watcher asks).
async fn lookup_invoice(State(node): State<Node>) -> Json<Value> {
    node.requests.fetch_add(1, Ordering::SeqCst);
    Json(json!({"state": "OPEN"}))
}

fn acceptor() -> TlsAcceptor {
    let cert = CertificateDer::from_pem_file(tls_fixture("lnd-tls.cert")).expect("the fixture certificate");
    let key = PrivateKeyDer::from_pem_file(tls_fixture("lnd-tls.key")).expect("the fixture key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("a server configuration");
    TlsAcceptor::from(Arc::new(config))
}

/// Hands axum the connections whose TLS handshake succeeded.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            // A client that refuses the certificate ends the handshake:
            // nothing reaches the routes; wait for the next connection.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A gateway on the LND backend at `url`, pinning `cert` (a fixture name),
/// or trusting the usual roots without one.
async fn gateway(url: &str, cert: Option<&str>) -> Gateway {
    let cert_path = cert.map(tls_fixture);
    let mut env = vec![
        ("COFFER_LIGHTNING", "lnd"),
        ("COFFER_LND_URL", url),
        ("COFFER_LND_MACAROON", MACAROON_HEX),
        ("COFFER_LIGHTNING_TIMEOUT_MS", "5000"),
    ];
    if let Some(path) = &cert_path {
        env.push(("COFFER_LND_TLS_CERT_FILE", path));
    }
    Gateway::start_with_env(&env).await
}

async fn agent(gw: &Gateway) -> Client {
    let created = gw.operator().create_agent("depositor").await.expect("creating an agent");
    gw.client(&created.key)
}

fn deposit(amount_msat: u64) -> DepositRequest {
    DepositRequest { amount_msat, agent_id: None, memo: Some("tls".into()) }
}

#[tokio::test]
async fn the_pinned_self_signed_certificate_is_trusted() {
    let (node, url) = Node::start().await;
    let gw = gateway(&url, Some("lnd-tls.cert")).await;
    let agent = agent(&gw).await;
    let invoice = agent.create_deposit(&deposit(21_000)).await.expect("a deposit invoice over pinned TLS");
    let parsed = ParsedInvoice::parse(&invoice.bolt11, Network::Bitcoin).expect("the node's invoice");
    assert_eq!(hex::encode(parsed.payment_hash), invoice.payment_hash);
    assert_eq!(parsed.amount, Some(Msat::new(21_000)));
    assert!(node.requests() >= 1, "the request reached the node");
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit failed:\n{report}");
}

#[tokio::test]
async fn another_certificate_or_none_is_refused_and_nothing_changes() {
    let (node, url) = Node::start().await;
    for cert in [Some("other-tls.cert"), None] {
        let gw = gateway(&url, cert).await;
        let agent = agent(&gw).await;
        let refused = problem(agent.create_deposit(&deposit(21_000)).await.unwrap_err());
        assert_eq!(refused.code, "lightning-backend", "{cert:?}: {}", refused.detail);
        assert!(refused.detail.contains("certificate"), "{cert:?}: {}", refused.detail);
        assert!(agent.invoices(None).await.expect("the invoices").items.is_empty(), "nothing recorded");
        assert_eq!(agent.wallet().await.expect("the wallet").balance_msat, 0);
        let (ok, report) = gw.audit().await;
        assert!(ok, "coffer audit failed:\n{report}");
    }
    assert_eq!(node.requests(), 0, "no request got past the handshake");
}
