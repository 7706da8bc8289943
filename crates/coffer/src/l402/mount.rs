//! Paywalls mounted on `coffer serve --paywall FILE`: the proxy of
//! `coffer paywall`, under a path prefix of the gateway's own HTTP server,
//! selling for an agent of this gateway. Its invoices are created in
//! process (no key over HTTP), and its macaroons are signed with the root
//! key in the gateway's data folder.
//!
//! ```toml
//! [[paywall]]
//! prefix = "/paid/weather"          # serves /paid/weather and /paid/weather/...
//! agent = "agt_..."                 # the receiving agent
//! upstream = "http://127.0.0.1:9000"
//! price_msat = 2000                 # paths no route names
//! token_ttl_secs = 3600             # optional
//! [[paywall.route]]                 # as in `coffer paywall --config`
//! path = "/forecast"
//! price_msat = 5000
//! ```

use super::covers;
use super::paywall::{
    InvoiceFuture, InvoiceSource, Paywall, PaywallConfig, ROUTE_PATH_LEN_MAX_BYTES, Route, RouteConfig, SellerInvoice,
    parse_upstream, root_key,
};
use crate::gateway::{AgentKey, Gateway};
use axum::Router;
use axum::response::Response;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const PAYWALLS_MAX: usize = 64;
pub const PREFIX_LEN_MAX_BYTES: usize = 128;
/// The gateway's own paths (the API, MCP, the spec, health, metrics, the
/// UI's assets; `/` is the UI's page): a paywall is mounted neither under
/// nor above one of them.
pub const RESERVED_PREFIXES: [&str; 8] =
    ["/v1", "/mcp", "/openapi.json", "/healthz", "/readyz", "/health", "/metrics", "/ui"];

// A challenge's memo is "L402 " and the route's full path: it must fit a
// BOLT11 description.
const _: () =
    assert!(5 + PREFIX_LEN_MAX_BYTES + ROUTE_PATH_LEN_MAX_BYTES <= crate::payment::bolt11::MEMO_LEN_MAX_BYTES);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaywallsFile {
    #[serde(default, rename = "paywall")]
    paywalls: Vec<MountConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MountConfig {
    prefix: String,
    agent: String,
    upstream: String,
    price_msat: Option<u64>,
    token_ttl_secs: Option<u64>,
    #[serde(default, rename = "route")]
    routes: Vec<RouteConfig>,
}

/// One paywall to mount: checked, not yet bound to a gateway.
#[derive(Debug)]
pub struct Mount {
    /// Where it was configured (`FILE paywall[i]`), for messages.
    pub origin: String,
    pub prefix: String,
    pub agent_id: String,
    pub upstream: reqwest::Url,
    routes: Vec<Route>,
}

/// The paywalls of every `--paywall` file, checked together.
#[derive(Debug, Default)]
pub struct Mounts {
    pub mounts: Vec<Mount>,
    data_dir: PathBuf,
}

impl Mounts {
    /// Reads and checks the files; nothing is created yet (the root key is
    /// made by [`Mounts::start`], once the data folder exists).
    pub fn load(files: &[PathBuf], data_dir: &Path) -> Result<Mounts, String> {
        let mut mounts = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            let parsed = parse(&text, &file.display().to_string()).map_err(|e| format!("{}: {e}", file.display()))?;
            mounts.extend(parsed);
        }
        if mounts.len() > PAYWALLS_MAX {
            return Err(format!("--paywall: at most {PAYWALLS_MAX} paywalls"));
        }
        for (i, a) in mounts.iter().enumerate() {
            if let Some(b) = mounts[..i].iter().find(|b| covers(&a.prefix, &b.prefix) || covers(&b.prefix, &a.prefix)) {
                return Err(format!(
                    "{}.prefix: {} overlaps {} of {} (each paywall needs a path of its own)",
                    a.origin, a.prefix, b.prefix, b.origin
                ));
            }
        }
        Ok(Mounts { mounts, data_dir: data_dir.to_owned() })
    }

    /// Binds each paywall to its receiving agent of `gateway`: an unknown
    /// agent is an error.
    pub async fn start(self, gateway: &Arc<Gateway>) -> Result<Vec<(String, Arc<Paywall>)>, String> {
        if self.mounts.is_empty() {
            return Ok(Vec::new());
        }
        let key = root_key(&self.data_dir)?;
        let mut started = Vec::with_capacity(self.mounts.len());
        for mount in self.mounts {
            let receiver = gateway
                .paywall_receiver(&mount.agent_id)
                .await
                .map_err(|e| format!("{}.agent: {} ({e})", mount.origin, mount.agent_id))?;
            let seller = Box::new(GatewaySeller { gateway: Arc::clone(gateway), receiver });
            let per_client = gateway.settings().limits.paywall_challenges_per_minute_per_client;
            let paywall = Paywall::new(key, mount.routes, &mount.prefix, mount.upstream, seller, per_client)?;
            started.push((mount.prefix, Arc::new(paywall)));
        }
        Ok(started)
    }
}

/// The paywalls of one file's text; `origin` names the file in messages.
fn parse(text: &str, origin: &str) -> Result<Vec<Mount>, String> {
    let file: PaywallsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if file.paywalls.is_empty() {
        return Err("lists no [[paywall]]".into());
    }
    let mut mounts = Vec::with_capacity(file.paywalls.len());
    for (i, config) in file.paywalls.into_iter().enumerate() {
        let field = |name: &str| format!("paywall[{i}].{name}");
        let prefix = check_prefix(&config.prefix).map_err(|why| format!("{}: {why}", field("prefix")))?;
        if config.agent.is_empty() || config.agent.len() > 64 {
            return Err(format!("{}: an agent's id, such as agt_...", field("agent")));
        }
        let upstream = parse_upstream(&field("upstream"), &config.upstream)?;
        let has_default_route = config.routes.iter().any(|r| r.path.trim_end_matches('/').is_empty());
        if config.price_msat.is_none() && !has_default_route {
            return Err(format!("{}: required (the price of paths no route names)", field("price_msat")));
        }
        let routes = PaywallConfig {
            price_msat: config.price_msat,
            token_ttl_secs: config.token_ttl_secs,
            routes: config.routes,
        }
        .routes(None)
        .map_err(|e| format!("paywall[{i}].{e}"))?;
        mounts.push(Mount {
            origin: format!("{origin} paywall[{i}]"),
            prefix,
            agent_id: config.agent,
            upstream,
            routes,
        });
    }
    Ok(mounts)
}

/// A prefix of plain segments (`/paid/weather`), outside the gateway's own
/// paths. Plain: no `{`, `*` or `:`, which the router would read as
/// captures, and no `.` or `..` segments.
fn check_prefix(prefix: &str) -> Result<String, String> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err("/ is the gateway's own (the web UI): choose another, such as /paid/...".into());
    }
    if prefix.len() > PREFIX_LEN_MAX_BYTES {
        return Err(format!("at most {PREFIX_LEN_MAX_BYTES} bytes"));
    }
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    };
    match prefix.strip_prefix('/') {
        Some(rest) if rest.split('/').all(plain) => {}
        _ => return Err(format!("{prefix:?}: a path of plain segments, such as \"/paid/weather\"")),
    }
    if let Some(reserved) = RESERVED_PREFIXES.iter().find(|r| covers(r, prefix) || covers(prefix, r)) {
        return Err(format!("{prefix} is the gateway's own ({reserved}): choose another, such as /paid/..."));
    }
    Ok(prefix.to_owned())
}

/// The gateway sells for `receiver` in process.
struct GatewaySeller {
    gateway: Arc<Gateway>,
    receiver: AgentKey,
}

impl InvoiceSource for GatewaySeller {
    fn create_invoice(&self, amount_msat: u64, memo: String, expiry_secs: u32) -> InvoiceFuture<'_> {
        Box::pin(async move {
            let record = self
                .gateway
                .create_invoice(&self.receiver, amount_msat, Some(&memo), Some(expiry_secs), None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(SellerInvoice { bolt11: record.bolt11, payment_hash: record.payment_hash })
        })
    }
}

/// Mounts the paywalls on the gateway's router. They are added after the
/// router's layers, which therefore do not apply: their answers (the
/// upstream's, the 402s) pass as they are, exactly as from `coffer
/// paywall`, and their bodies have the paywall's limit, not the API's.
pub fn attach(mut router: Router, paywalls: Vec<(String, Arc<Paywall>)>) -> Router {
    for (prefix, paywall) in paywalls {
        let counted = paywall.router().layer(axum::middleware::map_response(|response: Response| async move {
            crate::metrics::METRICS.record_response(response.status().as_u16());
            response
        }));
        router = router.nest_service(&prefix, counted);
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [[paywall]]
        prefix = "/paid/weather/"
        agent = "agt_1"
        upstream = "http://127.0.0.1:9000"
        price_msat = 2000
        [[paywall.route]]
        path = "/forecast"
        price_msat = 5000
        uses = 3
        [[paywall]]
        prefix = "/paid/news"
        agent = "agt_2"
        upstream = "http://127.0.0.1:9001/base"
        [[paywall.route]]
        path = "/"
        price_msat = 100
    "#;

    #[test]
    fn a_file_lists_several_paywalls() {
        let mounts = parse(GOOD, "f.toml").unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!((mounts[0].prefix.as_str(), mounts[0].agent_id.as_str()), ("/paid/weather", "agt_1"));
        assert_eq!(super::super::paywall::route_for(&mounts[0].routes, "/forecast/x").unwrap().price_msat, 5000);
        assert_eq!(super::super::paywall::route_for(&mounts[0].routes, "/other").unwrap().price_msat, 2000);
        assert_eq!(super::super::paywall::route_for(&mounts[1].routes, "/x").unwrap().price_msat, 100);
    }

    #[test]
    fn bad_files_name_the_field() {
        let bad = |text: &str| parse(text, "f.toml").unwrap_err();
        let base = "[[paywall]]\nagent = \"agt_1\"\nupstream = \"http://127.0.0.1:1\"\nprice_msat = 5\n";
        for reserved in ["/", "/v1", "/v1/x", "/mcp", "/openapi.json", "/healthz", "/metrics", "/ui", "/ui/app.js"] {
            let e = bad(&format!("{base}prefix = \"{reserved}\""));
            assert!(e.starts_with("paywall[0].prefix:"), "{reserved}: {e}");
        }
        for odd in ["paid", "/paid/{x}", "/paid/*", "/a//b", "/a/../v1", "/a b"] {
            assert!(bad(&format!("{base}prefix = \"{odd}\"")).starts_with("paywall[0].prefix:"), "{odd}");
        }
        assert!(bad(&format!("{base}prefix = \"/{}\"", "a".repeat(200))).starts_with("paywall[0].prefix:"));
        let e = bad("[[paywall]]\nprefix = \"/p\"\nagent = \"agt_1\"\nupstream = \"ftp://x\"\nprice_msat = 5");
        assert!(e.starts_with("paywall[0].upstream"), "{e}");
        let e = bad("[[paywall]]\nprefix = \"/p\"\nagent = \"agt_1\"\nupstream = \"http://x\"");
        assert!(e.starts_with("paywall[0].price_msat"), "{e}");
        let e = bad(&format!("{base}prefix = \"/p\"\n[[paywall.route]]\npath = \"/a\"\nprice_msat = 0"));
        assert!(e.starts_with("paywall[0].route[0].price_msat"), "{e}");
        assert!(bad(&format!("{base}prefix = \"/p\"\nprize = 1")).contains("prize"));
        assert!(bad("").contains("no [[paywall]]"));
    }

    #[test]
    fn overlapping_prefixes_are_refused_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, prefix: &str| {
            let path = dir.path().join(name);
            let text =
                format!("[[paywall]]\nprefix = \"{prefix}\"\nagent = \"a\"\nupstream = \"http://x\"\nprice_msat = 5");
            std::fs::write(&path, text).unwrap();
            path
        };
        let (a, b, c) = (file("a.toml", "/paid/a"), file("b.toml", "/paid/a/b"), file("c.toml", "/paid/ab"));
        assert_eq!(Mounts::load(&[a.clone(), c.clone()], dir.path()).unwrap().mounts.len(), 2);
        let e = Mounts::load(&[a, c, b], dir.path()).unwrap_err();
        assert!(e.contains("paywall[0].prefix: /paid/a/b overlaps /paid/a"), "{e}");
        assert!(Mounts::load(&[], dir.path()).unwrap().mounts.is_empty());
    }

    /// Every documented path of the API is under a reserved prefix: a new
    /// top-level path must be added to the list, or a paywall could shadow it.
    #[test]
    fn the_reserved_prefixes_cover_the_api() {
        let spec = crate::http::api().into_openapi();
        for path in spec.paths.paths.keys() {
            assert!(RESERVED_PREFIXES.iter().any(|r| covers(r, path)), "{path} is not reserved");
        }
        assert!(covers("/mcp", crate::mcp::http::PATH));
    }
}
