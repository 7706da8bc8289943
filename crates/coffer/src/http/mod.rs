//! The HTTP edge: thin handlers that authenticate, parse, call the gateway
//! and map errors to problems. The router and the OpenAPI document come from
//! the same route list, so neither can miss a route.

mod agent;
mod bridge;
mod commerce;
mod constitution;
pub mod dev;
mod events;
pub mod extract;
mod l402;
mod nwc;
mod operator;
mod preview;
pub mod problem;
pub mod qr;
mod reports;
mod rooms;
mod signing;
mod system;
mod ui;

use crate::error::Error;
use crate::gateway::Gateway;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::Response;
use axum::{Extension, Router};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub type AppState = Arc<Gateway>;

use crate::limits::BODY_LEN_MAX_BYTES;
/// How much of a non-problem error body is kept as a problem's detail.
const DETAIL_LEN_MAX_BYTES: usize = 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "coffer", description = "Lightning wallets with bounded, delegated spending for autonomous AI agents. \
        Amounts are integer millisatoshis. Errors are RFC 9457 problems."),
    modifiers(&BearerAuth, &McpEndpoint),
    components(schemas(coffer_client::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// `/mcp` is served by rmcp's transport rather than an axum handler, so
/// its operation is described here by hand.
struct McpEndpoint;

impl utoipa::Modify for McpEndpoint {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, ResponseBuilder};
        let json_rpc = || ContentBuilder::new().schema(Some(ObjectBuilder::new())).build();
        let problem = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
        let operation = OperationBuilder::new()
            .tag("mcp")
            .summary(Some("Model Context Protocol over streamable HTTP"))
            .description(Some(
                "A JSON-RPC 2.0 message of the Model Context Protocol (initialize, tools/list, tools/call, ...), \
                 answered as JSON. Stateless: no session id. Every request carries an agent's key; each tool \
                 acts for that agent with that key's scope.",
            ))
            .request_body(Some(RequestBodyBuilder::new().content("application/json", json_rpc()).build()))
            .response(
                "200",
                ResponseBuilder::new().description("The JSON-RPC answer").content("application/json", json_rpc()),
            )
            .response("202", ResponseBuilder::new().description("A notification, accepted"))
            .response(
                "4XX",
                ResponseBuilder::new()
                    .description("Not an agent's key, or not MCP")
                    .content(problem::PROBLEM_JSON, problem),
            )
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .build();
        openapi.paths.add_path_operation(crate::mcp::http::PATH, vec![HttpMethod::Post], operation);
    }
}

/// What every operation shares, described once for all of them (applied to
/// the whole document, after the routes are in), so that no handler repeats
/// it: the bearer token, and the problems that the extractors, the body
/// limit, the quotas and the store answer whatever the handler (and `4XX`
/// for the rest), each as `application/problem+json`. A handler describes
/// only its own successes, and a problem of its own when it has more to say.
struct SharedResponses;

/// The routes anyone may call: no token, so no 401, 403 or 429 either.
const PUBLIC_PATHS: [&str; 6] = ["/healthz", "/readyz", "/health/live", "/health/ready", "/metrics", "/openapi.json"];

impl utoipa::Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                describe_shared(operation, public);
            }
        }
    }
}

fn describe_shared(operation: &mut utoipa::openapi::path::Operation, public: bool) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::security::SecurityRequirement;
    // utoipa writes a handler's `body = Problem` as application/json.
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            as_problem_json(response);
        }
    }
    let mut statuses = vec![StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE];
    if !public {
        operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        // Any other client error (402, 409, 422, ...) a route answers, with
        // the problem naming it.
        operation.responses.responses.entry("4XX".to_owned()).or_insert_with(|| any_problem_response().into());
        statuses.extend([
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS,
        ]);
    }
    if operation.request_body.is_some() {
        statuses.extend([StatusCode::PAYLOAD_TOO_LARGE, StatusCode::UNSUPPORTED_MEDIA_TYPE]);
    }
    for status in statuses {
        operation
            .responses
            .responses
            .entry(status.as_str().to_owned())
            .or_insert_with(|| problem_response(status).into());
    }
}

/// A response whose only content is the `Problem` schema, moved to the
/// problem media type.
fn as_problem_json(response: &mut utoipa::openapi::Response) {
    use utoipa::openapi::RefOr;
    let names_problem = |content: &RefOr<utoipa::openapi::Content>| matches!(content, RefOr::T(c) if matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == PROBLEM_SCHEMA_REF));
    if let Some(content) = response.content.shift_remove("application/json") {
        let key = if names_problem(&content) { problem::PROBLEM_JSON } else { "application/json" };
        response.content.insert(key.to_owned(), content);
    }
}

const PROBLEM_SCHEMA_REF: &str = "#/components/schemas/Problem";

fn any_problem_response() -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    ResponseBuilder::new()
        .description("An RFC 9457 problem: `code` names it, `detail` says why")
        .content(problem::PROBLEM_JSON, content)
        .build()
}

fn problem_response(status: StatusCode) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let description = match status {
        StatusCode::BAD_REQUEST => "A malformed request: a path, query, header or body the route cannot read",
        StatusCode::UNAUTHORIZED => "No bearer token, or not a valid one",
        StatusCode::FORBIDDEN => "The token's scope does not allow this",
        StatusCode::NOT_FOUND => "No such resource (or not the caller's)",
        StatusCode::PAYLOAD_TOO_LARGE => "The body is longer than the limit",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "The body is not application/json",
        StatusCode::TOO_MANY_REQUESTS => "A limit was reached: see Retry-After and the problem's `limit`",
        StatusCode::SERVICE_UNAVAILABLE => "The store or a service the gateway needs is unavailable",
        _ => "An internal error",
    };
    let response = ResponseBuilder::new().description(description).content(problem::PROBLEM_JSON, content);
    if status != StatusCode::TOO_MANY_REQUESTS {
        return response.build();
    }
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{ObjectBuilder, Type};
    let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
    let retry_after =
        HeaderBuilder::new().schema(Some(seconds)).description(Some("Seconds to wait before trying again"));
    response.header("Retry-After", retry_after.build()).build()
}

/// Every route, with its OpenAPI description.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::health_live))
        .routes(routes!(system::health_ready))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi))
        .routes(routes!(operator::create_agent, operator::list_agents))
        .routes(routes!(operator::get_agent))
        .routes(routes!(operator::fund_agent))
        .routes(routes!(operator::create_key))
        .routes(routes!(operator::revoke_key))
        .routes(routes!(signing::create_signing_key, signing::list_signing_keys))
        .routes(routes!(signing::revoke_signing_key))
        .routes(routes!(nwc::create_nwc_connection, nwc::list_nwc_connections))
        .routes(routes!(nwc::revoke_nwc_connection))
        .routes(routes!(bridge::create_link_code))
        .routes(routes!(bridge::create_operator_link_code))
        .routes(routes!(bridge::list_links))
        .routes(routes!(bridge::delete_link))
        .routes(routes!(bridge::list_operator_links))
        .routes(routes!(bridge::delete_operator_link))
        .routes(routes!(bridge::put_room_bridge, bridge::delete_room_bridge))
        .routes(routes!(bridge::list_room_bridges))
        .routes(routes!(operator::mint))
        .routes(routes!(operator::treasury))
        .routes(routes!(agent::wallet))
        .routes(routes!(agent::create_invoice, agent::list_invoices))
        .routes(routes!(agent::get_invoice))
        .routes(routes!(agent::create_deposit))
        .routes(routes!(agent::qr_svg))
        .routes(routes!(agent::qr_png))
        .routes(routes!(agent::pay, agent::list_payments))
        .routes(routes!(preview::preview_payment))
        .routes(routes!(reports::spend))
        .routes(routes!(commerce::settle_hold))
        .routes(routes!(commerce::cancel_hold))
        .routes(routes!(commerce::get_payment))
        .routes(routes!(commerce::payment_receipt))
        .routes(routes!(commerce::release))
        .routes(routes!(commerce::dispute))
        .routes(routes!(commerce::resolve))
        .routes(routes!(commerce::refund))
        .routes(routes!(commerce::list_escrows))
        .routes(routes!(commerce::open_session, commerce::list_sessions))
        .routes(routes!(commerce::agent_sessions))
        .routes(routes!(commerce::get_session))
        .routes(routes!(commerce::session_receipt))
        .routes(routes!(commerce::charge))
        .routes(routes!(commerce::close_session))
        .routes(routes!(l402::pay))
        .routes(routes!(l402::token))
        .routes(routes!(constitution::get_policy, constitution::put_policy))
        .routes(routes!(constitution::get_budget))
        .routes(routes!(constitution::freeze))
        .routes(routes!(constitution::unfreeze))
        .routes(routes!(constitution::set_breaker, constitution::get_breaker))
        .routes(routes!(constitution::list_approvals))
        .routes(routes!(constitution::approve))
        .routes(routes!(constitution::deny))
        .routes(routes!(constitution::audit_log))
        .routes(routes!(rooms::create_room, rooms::list_rooms))
        .routes(routes!(rooms::add_member))
        .routes(routes!(rooms::remove_member))
        .routes(routes!(rooms::post_message, rooms::list_messages))
        .routes(routes!(rooms::pay_request))
        .routes(routes!(rooms::stream))
        .routes(routes!(rooms::websocket))
        .routes(routes!(rooms::get_chat_settings, rooms::put_chat_settings))
        .routes(routes!(rooms::list_incoming))
        .routes(routes!(rooms::accept_incoming))
        .routes(routes!(rooms::reject_incoming))
        .routes(routes!(events::list_events))
        .routes(routes!(events::stream_events))
        .routes(routes!(events::events_websocket))
        .routes(routes!(events::create_webhook, events::list_webhooks))
        .routes(routes!(events::delete_webhook))
        .routes(routes!(events::resume_webhook))
        .routes(routes!(events::list_deliveries))
}

/// The API, the web UI (and the dev clock's control on a gateway that has
/// one), with `extra` routers that answer under the same rules (problems,
/// the body limit, the response counts): `server::app` composes them.
pub fn router(state: AppState, extra: Router<AppState>) -> Router {
    let (router, mut spec) = api().split_for_parts();
    utoipa::Modify::modify(&SharedResponses, &mut spec);
    let spec_json = spec.to_pretty_json().unwrap_or_default();
    router
        .merge(extra)
        .merge(dev::router(&state))
        .merge(ui::router())
        .fallback(|| async { Error::NotFound("route") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(Extension(system::Spec(spec_json.into())))
        .layer(middleware::from_fn_with_state(state.clone(), signing::check_signed_writes))
        .layer(DefaultBodyLimit::max(BODY_LEN_MAX_BYTES))
        .layer(middleware::map_response(ensure_problem))
        .layer(middleware::from_fn(system::time_request))
        .with_state(state)
}

/// Every error response is a problem: rejections from axum itself (a
/// malformed path, say) arrive as plain text and are wrapped here.
async fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    crate::metrics::METRICS.record_response(status.as_u16());
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == problem::PROBLEM_JSON.as_bytes());
    if status.as_u16() < 400 || is_problem {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), DETAIL_LEN_MAX_BYTES).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).into_owned();
    let (code, title) = match status {
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "Body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        s if s.is_client_error() => ("malformed-request", "Malformed request"),
        _ => ("internal", "Internal error"),
    };
    let detail = if detail.is_empty() { title.to_owned() } else { detail };
    problem::respond(&problem::problem(status, code, title, detail))
}
