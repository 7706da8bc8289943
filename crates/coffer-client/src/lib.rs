//! A typed client for the coffer gateway's HTTP API.
//!
//! ```no_run
//! # async fn run() -> Result<(), coffer_client::Error> {
//! let agent = coffer_client::Client::new("http://127.0.0.1:8420", "csk_...")?;
//! let wallet = agent.wallet().await?;
//! println!("{} msat", wallet.balance_msat);
//! # Ok(()) }
//! ```

mod preview;
pub mod signing;
pub mod types;

use bytes::Bytes;
pub use preview::*;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;
pub use types::*;

/// Why a call failed.
#[derive(Debug)]
pub enum Error {
    /// The gateway answered with a problem (RFC 9457).
    Problem(Box<Problem>),
    /// The request did not complete: connection, timeout, bad URL.
    Transport(reqwest::Error),
    /// The gateway answered something that is not the expected JSON.
    Decode { status: u16, message: String },
    /// The request could not be signed (see [`Client::with_signer`]).
    Signing(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Problem(p) => write!(f, "{} ({}): {}", p.title, p.status, p.detail),
            Error::Transport(e) => write!(f, "request failed: {e}"),
            Error::Decode { status, message } => write!(f, "unexpected answer ({status}): {message}"),
            Error::Signing(why) => write!(f, "signing the request: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The problem code (`insufficient-balance`, `budget-exceeded`, ...), if
    /// the gateway answered with a problem.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Problem(p) => Some(&p.code),
            _ => None,
        }
    }
}

/// The largest answer [`Client::fetch_l402`] reads.
pub const FETCH_BODY_LEN_MAX_BYTES: usize = 8 * 1024 * 1024;

/// What [`Client::fetch_l402`] got.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// What this fetch paid (zero when a kept token served or nothing was due).
    pub paid_msat: u64,
    /// The L402 token used, if any.
    pub token: Option<L402Token>,
}

impl Fetched {
    /// The first `WWW-Authenticate` value with the L402 (or older LSAT)
    /// scheme.
    pub fn l402_challenge(&self) -> Option<&str> {
        self.headers.iter().filter(|(name, _)| name == "www-authenticate").map(|(_, value)| value.as_str()).find(
            |value| {
                let scheme = value.trim_start().get(..4).unwrap_or("");
                scheme.eq_ignore_ascii_case("L402") || scheme.eq_ignore_ascii_case("LSAT")
            },
        )
    }
}

/// A payment's answer: final now, or held for a person's approval.
#[derive(Clone, Debug)]
pub enum PayOutcome {
    Done(Payment),
    Held(Approval),
}

/// Adds the signature headers to a built request. The body is one buffer
/// here (every body this client sends is JSON it serialized).
fn sign(signer: &signing::Signer, request: &mut reqwest::Request) -> Result<(), Error> {
    use reqwest::header::{HeaderName, HeaderValue};
    let body = request.body().and_then(|b| b.as_bytes()).unwrap_or_default();
    let idempotency_key = request.headers().get("idempotency-key").and_then(|v| v.to_str().ok());
    let signed = signer
        .sign(request.method().as_str(), request.url().as_str(), body, idempotency_key)
        .map_err(|e| Error::Signing(e.to_string()))?;
    let headers = [
        ("signature-input", Some(signed.signature_input)),
        ("signature", Some(signed.signature)),
        ("content-digest", signed.content_digest),
    ];
    for (name, value) in headers {
        let Some(value) = value else { continue };
        let value = HeaderValue::from_str(&value).map_err(|e| Error::Signing(e.to_string()))?;
        request.headers_mut().insert(HeaderName::from_static(name), value);
    }
    Ok(())
}

/// One gateway, one secret (an agent key or the operator token).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For URLs outside the gateway ([`Client::fetch_l402`]): `http`
    /// unless set with [`Client::with_fetch_http`].
    fetch_http: reqwest::Client,
    base_url: String,
    authorization: String,
    /// Signs every request that may change something, when set
    /// ([`Client::with_signer`]).
    signer: Option<std::sync::Arc<signing::Signer>>,
}

impl fmt::Debug for Client {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(base_url: &str, secret: &str) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(Error::Transport)?;
        Ok(Client::with_http(http, base_url, secret))
    }

    /// Shares one connection pool between several clients (many agents).
    pub fn with_http(http: reqwest::Client, base_url: &str, secret: &str) -> Client {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Client { fetch_http: http.clone(), http, base_url, authorization: format!("Bearer {secret}"), signer: None }
    }

    /// Signs every request but GET and HEAD with `signer` (RFC 9421; see
    /// [`signing`]): what an agent whose signing key is `required` must do
    /// to spend.
    pub fn with_signer(mut self, signer: std::sync::Arc<signing::Signer>) -> Client {
        self.signer = Some(signer);
        self
    }

    /// Fetches URLs outside the gateway with `http` (a gateway fetching
    /// for an agent uses a guarded client there).
    pub fn with_fetch_http(mut self, http: reqwest::Client) -> Client {
        self.fetch_http = http;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let (status, body) = self.send_raw(request).await?;
        decode(status, &body)
    }

    async fn send_raw(&self, request: RequestBuilder) -> Result<(StatusCode, Bytes), Error> {
        let mut request = request.build().map_err(Error::Transport)?;
        if let Some(signer) = &self.signer
            && !matches!(*request.method(), Method::GET | Method::HEAD)
        {
            sign(signer, &mut request)?;
        }
        let response = self.http.execute(request).await.map_err(Error::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(Error::Transport)?;
        if status.is_client_error() || status.is_server_error() {
            return Err(problem_from(status, &body));
        }
        Ok((status, body))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send(self.request(Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, Error> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    // Operator calls.

    /// Creates an agent (with the operator token) or a sub-agent of the
    /// calling agent (with an agent key that may create them).
    pub async fn create_agent(&self, name: &str) -> Result<AgentCreated, Error> {
        self.create_agent_with(&CreateAgentRequest { name: name.to_owned(), can_create_subagents: false, task: None })
            .await
    }

    pub async fn create_agent_with(&self, request: &CreateAgentRequest) -> Result<AgentCreated, Error> {
        self.post("/v1/agents", request).await
    }

    pub async fn agents(&self) -> Result<Vec<Agent>, Error> {
        self.get("/v1/agents").await
    }

    pub async fn agent(&self, id: &str) -> Result<Agent, Error> {
        self.get(&format!("/v1/agents/{id}")).await
    }

    pub async fn fund_agent(&self, id: &str, amount_msat: u64) -> Result<Transferred, Error> {
        self.post(&format!("/v1/agents/{id}/fund"), &AmountRequest { amount_msat }).await
    }

    pub async fn create_key(&self, agent_id: &str, scope: Scope) -> Result<KeyCreated, Error> {
        self.post(&format!("/v1/agents/{agent_id}/keys"), &CreateKeyRequest { scope, expires_at: None }).await
    }

    /// Registers a public key the agent signs requests with (RFC 9421);
    /// `required`: from now on its writes must be signed.
    pub async fn create_signing_key(
        &self,
        agent_id: &str,
        request: &CreateSigningKeyRequest,
    ) -> Result<SigningKey, Error> {
        self.post(&format!("/v1/agents/{agent_id}/signing-keys"), request).await
    }

    /// An agent's signing keys, revoked ones included (newest first).
    pub async fn signing_keys(&self, agent_id: &str) -> Result<Vec<SigningKey>, Error> {
        self.get(&format!("/v1/agents/{agent_id}/signing-keys")).await
    }

    pub async fn revoke_signing_key(&self, agent_id: &str, key_id: &str) -> Result<(), Error> {
        let path = format!("/v1/agents/{agent_id}/signing-keys/{key_id}");
        self.send_raw(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// Creates a Nostr Wallet Connect connection to an agent's wallet; the
    /// answer's `uri` holds its secret, shown this once.
    pub async fn create_nwc_connection(
        &self,
        agent_id: &str,
        request: &CreateNwcConnectionRequest,
    ) -> Result<NwcConnectionCreated, Error> {
        self.post(&format!("/v1/agents/{agent_id}/nwc"), request).await
    }

    /// An agent's NWC connections, revoked ones included (newest first).
    pub async fn nwc_connections(&self, agent_id: &str) -> Result<Vec<NwcConnection>, Error> {
        self.get(&format!("/v1/agents/{agent_id}/nwc")).await
    }

    pub async fn revoke_nwc_connection(&self, agent_id: &str, connection_id: &str) -> Result<(), Error> {
        let path = format!("/v1/agents/{agent_id}/nwc/{connection_id}");
        self.send_raw(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    // Bridges to messengers.

    /// A single-use code that links a messenger user to an agent: the user
    /// sends `/link CODE` to the bridge's bot.
    pub async fn create_link_code(&self, agent_id: &str) -> Result<LinkCode, Error> {
        self.post(&format!("/v1/agents/{agent_id}/link-codes"), &serde_json::json!({})).await
    }

    /// A link code for the operator's own messenger user (operator).
    pub async fn create_operator_link_code(&self) -> Result<LinkCode, Error> {
        self.post("/v1/link-codes", &serde_json::json!({})).await
    }

    /// The messenger users linked to an agent.
    pub async fn links(&self, agent_id: &str) -> Result<Vec<BridgeLink>, Error> {
        self.get(&format!("/v1/agents/{agent_id}/links")).await
    }

    /// Bridges a room to a chat of `messenger` (`telegram`: a chat id;
    /// `matrix`: a room id). Operator.
    pub async fn bridge_room(&self, room: &str, messenger: &str, chat: &str) -> Result<RoomBridge, Error> {
        let body = match messenger {
            "matrix" => PutRoomBridgeRequest { room_id: Some(chat.to_owned()), ..PutRoomBridgeRequest::default() },
            _ => PutRoomBridgeRequest { chat_id: Some(chat.to_owned()), ..PutRoomBridgeRequest::default() },
        };
        self.send(self.request(Method::PUT, &format!("/v1/rooms/{room}/bridges/{messenger}")).json(&body)).await
    }

    // The constitution.

    /// An agent's policy, as JSON (`{}` when it has none).
    pub async fn policy(&self, agent_id: &str) -> Result<serde_json::Value, Error> {
        self.get(&format!("/v1/agents/{agent_id}/policy")).await
    }

    /// Sets an agent's policy. Every field is optional; see the README.
    pub async fn set_policy(&self, agent_id: &str, policy: &serde_json::Value) -> Result<serde_json::Value, Error> {
        self.send(self.request(Method::PUT, &format!("/v1/agents/{agent_id}/policy")).json(policy)).await
    }

    /// Spent and remaining per budget window.
    pub async fn budget(&self, agent_id: &str) -> Result<serde_json::Value, Error> {
        self.get(&format!("/v1/agents/{agent_id}/budget")).await
    }

    /// Where the money went (`GET /v1/reports/spend`): `group_by` is
    /// `agent`, `tree`, `task`, `tag`, `payee` or `day`; `from` and `to` are
    /// dates (`YYYY-MM-DD`) or RFC 3339 instants, by default the last 30
    /// days. The operator sees every agent, an agent its own tree.
    pub async fn spend_report(
        &self,
        group_by: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<SpendReport, Error> {
        let mut query = query_pair("group_by", group_by);
        for (name, value) in [("from", from), ("to", to)] {
            if let Some(value) = value {
                query.push('&');
                query.push_str(&query_pair(name, value));
            }
        }
        self.get(&format!("/v1/reports/spend?{query}")).await
    }

    pub async fn approvals(&self) -> Result<Vec<Approval>, Error> {
        self.get("/v1/approvals").await
    }

    pub async fn approve(&self, approval_id: &str) -> Result<ApprovalDecision, Error> {
        self.post(&format!("/v1/approvals/{approval_id}/approve"), &serde_json::json!({})).await
    }

    pub async fn deny(&self, approval_id: &str) -> Result<ApprovalDecision, Error> {
        self.post(&format!("/v1/approvals/{approval_id}/deny"), &serde_json::json!({})).await
    }

    pub async fn freeze(&self, agent_id: &str, reason: Option<&str>) -> Result<Agent, Error> {
        let body = FreezeRequest { reason: reason.map(str::to_owned) };
        self.post(&format!("/v1/agents/{agent_id}/freeze"), &body).await
    }

    pub async fn unfreeze(&self, agent_id: &str) -> Result<Agent, Error> {
        self.post(&format!("/v1/agents/{agent_id}/unfreeze"), &FreezeRequest::default()).await
    }

    /// The kill switch.
    pub async fn set_halted(&self, halted: bool) -> Result<Breaker, Error> {
        self.post("/v1/breaker", &Breaker { halted }).await
    }

    /// The audit trail, oldest first, after record `after` (0 for the
    /// start); `query` adds filters such as `agent_id=...&action=...`.
    pub async fn audit(&self, after: i64, query: &str) -> Result<Vec<AuditRecord>, Error> {
        let sep = if query.is_empty() { "" } else { "&" };
        self.get(&format!("/v1/audit?after={after}{sep}{query}")).await
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), Error> {
        self.send_raw(self.request(Method::DELETE, &format!("/v1/keys/{key_id}"))).await?;
        Ok(())
    }

    pub async fn mint(&self, amount_msat: u64) -> Result<Transferred, Error> {
        self.post("/v1/treasury/mint", &AmountRequest { amount_msat }).await
    }

    pub async fn treasury(&self) -> Result<Treasury, Error> {
        self.get("/v1/treasury").await
    }

    // Agent calls.

    pub async fn wallet(&self) -> Result<Wallet, Error> {
        self.get("/v1/wallet").await
    }

    pub async fn create_invoice(&self, request: &CreateInvoiceRequest) -> Result<Invoice, Error> {
        self.post("/v1/invoices", request).await
    }

    /// An invoice payable from the Lightning Network, crediting this agent
    /// (or, with the operator's token, the treasury or `agent_id`).
    pub async fn create_deposit(&self, request: &DepositRequest) -> Result<Invoice, Error> {
        self.post("/v1/deposits", request).await
    }

    pub async fn invoice(&self, payment_hash: &str) -> Result<Invoice, Error> {
        self.get(&format!("/v1/invoices/{payment_hash}")).await
    }

    pub async fn invoices(&self, cursor: Option<&str>) -> Result<Page<Invoice>, Error> {
        self.get(&with_cursor("/v1/invoices", cursor)).await
    }

    pub async fn payments(&self, cursor: Option<&str>) -> Result<Page<Payment>, Error> {
        self.get(&with_cursor("/v1/payments", cursor)).await
    }

    /// Pays a BOLT11 invoice. The idempotency key makes retries safe: the
    /// same key with the same body returns the first answer and never pays
    /// twice.
    pub async fn pay(&self, request: &PayRequest, idempotency_key: &str) -> Result<PayOutcome, Error> {
        let builder =
            self.request(Method::POST, "/v1/payments").header("Idempotency-Key", idempotency_key).json(request);
        let (status, body) = self.send_raw(builder).await?;
        if status == StatusCode::ACCEPTED {
            return decode(status, &body).map(PayOutcome::Held);
        }
        decode(status, &body).map(PayOutcome::Done)
    }

    /// Whether a payment would pass now, which rule would stop or hold it,
    /// and what remains of each budget: nothing moves.
    pub async fn preview_payment(&self, request: &PreviewRequest) -> Result<PaymentPreview, Error> {
        self.post("/v1/payments/preview", request).await
    }

    // Trade between agents: holds, escrows, refunds, metered sessions.

    /// One payment, as its payer or its payee sees it: with the hold or
    /// escrow its money waits in, and its refunds.
    pub async fn payment(&self, id: &str) -> Result<Payment, Error> {
        self.get(&format!("/v1/payments/{id}")).await
    }

    /// Settles an accepted hold invoice of this agent: the money moves to
    /// it; the payer gets the preimage.
    pub async fn settle_invoice(&self, payment_hash: &str) -> Result<Payment, Error> {
        self.send(self.request(Method::POST, &format!("/v1/invoices/{payment_hash}/settle"))).await
    }

    /// Cancels what waits on an invoice of this agent: the payer is
    /// refunded in full.
    pub async fn cancel_invoice(&self, payment_hash: &str) -> Result<Payment, Error> {
        self.send(self.request(Method::POST, &format!("/v1/invoices/{payment_hash}/cancel"))).await
    }

    /// Releases this agent's escrowed payment to its payee.
    pub async fn release(&self, payment_id: &str) -> Result<Payment, Error> {
        self.send(self.request(Method::POST, &format!("/v1/payments/{payment_id}/release"))).await
    }

    /// Disputes this agent's escrowed payment: the operator decides.
    pub async fn dispute(&self, payment_id: &str) -> Result<Escrow, Error> {
        self.send(self.request(Method::POST, &format!("/v1/payments/{payment_id}/dispute"))).await
    }

    /// The operator decides a disputed escrow.
    pub async fn resolve(&self, payment_id: &str, outcome: Outcome) -> Result<Payment, Error> {
        self.post(&format!("/v1/payments/{payment_id}/resolve"), &ResolveRequest { outcome }).await
    }

    /// Refunds (part of) a payment this agent received. The idempotency
    /// key makes retries safe.
    pub async fn refund(
        &self,
        payment_id: &str,
        request: &RefundRequest,
        idempotency_key: &str,
    ) -> Result<Refund, Error> {
        let path = format!("/v1/payments/{payment_id}/refund");
        self.send(self.request(Method::POST, &path).header("Idempotency-Key", idempotency_key).json(request)).await
    }

    /// Holds and escrows of this agent (as payer or payee), or with the
    /// operator's token of every agent; `status` one of held, disputed,
    /// released, refunded.
    pub async fn escrows(&self, status: Option<&str>) -> Result<Vec<Escrow>, Error> {
        match status {
            Some(status) => self.get(&format!("/v1/escrows?status={status}")).await,
            None => self.get("/v1/escrows").await,
        }
    }

    /// Opens a metered session with a payee.
    pub async fn open_session(&self, request: &OpenSessionRequest) -> Result<Session, Error> {
        self.post("/v1/sessions", request).await
    }

    pub async fn session(&self, id: &str) -> Result<Session, Error> {
        self.get(&format!("/v1/sessions/{id}")).await
    }

    pub async fn sessions(&self, cursor: Option<&str>) -> Result<Page<Session>, Error> {
        self.get(&with_cursor("/v1/sessions", cursor)).await
    }

    /// Charges a session this agent is paid by. The idempotency key makes
    /// retries safe: a retry never charges twice.
    pub async fn charge(
        &self,
        session_id: &str,
        request: &ChargeRequest,
        idempotency_key: &str,
    ) -> Result<Session, Error> {
        let path = format!("/v1/sessions/{session_id}/charges");
        self.send(self.request(Method::POST, &path).header("Idempotency-Key", idempotency_key).json(request)).await
    }

    /// Closes a session (its payer or payee): the rest returns to the payer.
    pub async fn close_session(&self, id: &str) -> Result<Session, Error> {
        self.send(self.request(Method::POST, &format!("/v1/sessions/{id}/close"))).await
    }

    // Paid HTTP APIs (L402).

    /// Pays an L402 challenge for `request.url` within the agent's policy,
    /// or gets the agent's live token for that access (nothing paid).
    pub async fn l402_pay(&self, request: &L402PayRequest) -> Result<L402Token, Error> {
        self.post("/v1/l402/pay", request).await
    }

    /// The agent's kept, live token covering `url`, if any.
    pub async fn l402_token(&self, url: &str) -> Result<Option<L402Token>, Error> {
        let request = self.request(Method::GET, &format!("/v1/l402/tokens?{}", query_pair("url", url)));
        match self.send(request).await {
            Ok(token) => Ok(Some(token)),
            Err(e) if e.code() == Some("not-found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GETs `url`, paying its L402 paywall if it answers `402`: a kept
    /// token of the agent is tried first; else (or if the server refuses
    /// it) the gateway pays the challenge within the agent's policy and
    /// the request is retried once. At most one payment and two requests
    /// to `url`. A refusal by the policy is an [`Error::Problem`] (403),
    /// and nothing was paid.
    pub async fn fetch_l402(&self, url: &str) -> Result<Fetched, Error> {
        let kept = self.l402_token(url).await?;
        let first = self.fetch_plain(url, kept.as_ref().map(|t| t.authorization.as_str())).await?;
        if first.status != StatusCode::PAYMENT_REQUIRED.as_u16() {
            return Ok(Fetched { token: kept, ..first });
        }
        let Some(challenge) = first.l402_challenge() else { return Ok(first) };
        let request = L402PayRequest {
            url: url.to_owned(),
            challenge: challenge.to_owned(),
            rejected_token: kept.map(|t| t.token),
        };
        let token = self.l402_pay(&request).await?;
        let second = self.fetch_plain(url, Some(&token.authorization)).await?;
        let paid_msat = if token.paid { token.amount_msat } else { 0 };
        Ok(Fetched { paid_msat, token: Some(token), ..second })
    }

    /// One GET of a URL outside the gateway: without the agent's key, which
    /// is for the gateway only.
    async fn fetch_plain(&self, url: &str, authorization: Option<&str>) -> Result<Fetched, Error> {
        let mut request = self.fetch_http.get(url);
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(Error::Transport)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Error::Transport)? {
            if body.len() + chunk.len() > FETCH_BODY_LEN_MAX_BYTES {
                let message = format!("the answer is larger than {FETCH_BODY_LEN_MAX_BYTES} bytes");
                return Err(Error::Decode { status, message });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { status, headers, body: Bytes::from(body), paid_msat: 0, token: None })
    }

    // Chat.

    pub async fn create_room(&self, request: &CreateRoomRequest) -> Result<Room, Error> {
        self.post("/v1/rooms", request).await
    }

    /// A page of the caller's rooms, oldest first.
    pub async fn rooms(&self, cursor: Option<&str>) -> Result<Page<Room>, Error> {
        self.get(&with_cursor("/v1/rooms", cursor)).await
    }

    /// Takes a member out of a room: the caller leaving (its own id), or
    /// the room's creator or the operator removing one.
    pub async fn remove_member(&self, room: &str, agent_id: &str) -> Result<(), Error> {
        self.send_raw(self.request(Method::DELETE, &format!("/v1/rooms/{room}/members/{agent_id}"))).await?;
        Ok(())
    }

    /// Posts a text or a payment request; answers the message as JSON.
    pub async fn post_message(&self, room: &str, request: &PostMessageRequest) -> Result<serde_json::Value, Error> {
        self.post(&format!("/v1/rooms/{room}/messages"), request).await
    }

    pub async fn messages(&self, room: &str, after: i64) -> Result<Vec<Message>, Error> {
        self.get(&format!("/v1/rooms/{room}/messages?after={after}")).await
    }

    /// Pays a payment request of a room: the status (`200` paid, `202` held)
    /// and the answer.
    pub async fn pay_message(&self, room: &str, message_id: i64) -> Result<(u16, serde_json::Value), Error> {
        let builder = self.request(Method::POST, &format!("/v1/rooms/{room}/messages/{message_id}/pay"));
        let (status, body) = self.send_raw(builder).await?;
        decode(status, &body).map(|value| (status.as_u16(), value))
    }

    pub async fn health(&self) -> Result<Health, Error> {
        self.get("/healthz").await
    }

    // Signed receipts (docs/receipts.md).

    /// The signed receipt of a settled payment, to its payer or payee (or
    /// the operator).
    pub async fn receipt(&self, payment_id: &str) -> Result<SignedReceipt, Error> {
        self.get(&format!("/v1/payments/{payment_id}/receipt")).await
    }

    /// The signed receipt of a closed (or expired) session.
    pub async fn session_receipt(&self, session_id: &str) -> Result<SignedReceipt, Error> {
        self.get(&format!("/v1/sessions/{session_id}/receipt")).await
    }
}

/// `name=value`, form-encoded.
fn query_pair(name: &str, value: &str) -> String {
    let mut scratch = reqwest::Url::parse("http://query.invalid/").expect("a constant URL parses");
    scratch.query_pairs_mut().append_pair(name, value);
    scratch.query().unwrap_or_default().to_owned()
}

fn with_cursor(path: &str, cursor: Option<&str>) -> String {
    match cursor {
        Some(c) => format!("{path}?cursor={c}"),
        None => path.to_owned(),
    }
}

fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Decode { status: status.as_u16(), message: e.to_string() })
}

fn problem_from(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => Error::Problem(Box::new(problem)),
        Err(_) => Error::Decode {
            status: status.as_u16(),
            message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        },
    }
}
