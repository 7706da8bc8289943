//! The web UI: a sign-in screen, the operator's dashboard and the rooms'
//! chat, and the operator's console (agents, an agent's page, the audit log,
//! reports), as static files compiled into the binary. No build step and
//! nothing fetched from elsewhere: `GET /` is the page, `/ui/app.js` (with
//! the modules it imports: `/ui/console.js`, `/ui/charts.js`) and
//! `/ui/app.css` its script and style. The page calls the API with the
//! secret the person pasted (kept in the tab's `sessionStorage`).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Everything from this origin only, no inline script or style; images may
/// also be `data:` and `blob:` URLs (the QR codes, which the page fetches
/// with its Authorization header).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'";

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");
const CONSOLE_JS: &str = include_str!("console.js");
const CHARTS_JS: &str = include_str!("charts.js");
const JS: &str = "text/javascript; charset=utf-8";

/// The UI's routes; they need no state and no authentication.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/ui/app.js", get(|| async { asset(JS, APP_JS) }))
        .route("/ui/console.js", get(|| async { asset(JS, CONSOLE_JS) }))
        .route("/ui/charts.js", get(|| async { asset(JS, CHARTS_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Small files: always revalidate, so a new binary's UI shows at once.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_their_type_and_the_policy() {
        let files = [("text/html", INDEX_HTML), ("text/javascript", APP_JS), ("text/css", APP_CSS), (JS, CONSOLE_JS)];
        for (content_type, body) in files {
            let response = asset(content_type, body);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type);
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(INDEX_HTML.contains(r#"src="/ui/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/ui/app.css""#));
        for text in [INDEX_HTML, APP_JS, APP_CSS, CONSOLE_JS, CHARTS_JS] {
            // The SVG namespace is a name, not a place the page loads from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "no URL of another origin");
            assert!(!text.contains("style=\""), "no inline style (the policy refuses it)");
        }
    }
}
