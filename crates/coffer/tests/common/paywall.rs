//! L402 test parts: a tiny upstream that counts its hits, and a real
//! `coffer paywall` process in front of it.

use super::{BIN, Gateway};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const READY_PREFIX: &str = "coffer paywall listening on ";

/// An HTTP service answering `data for <path>` to any GET, counting hits
/// and recording the path and query of each.
pub struct Upstream {
    pub url: String,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (counter, recorder) = (Arc::clone(&hits), Arc::clone(&paths));
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (counter, recorder) = (Arc::clone(&counter), Arc::clone(&recorder));
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str()).to_owned();
                recorder.lock().expect("the upstream's paths").push(path_and_query);
                format!("data for {}", uri.path())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the upstream");
        let url = format!("http://{}", listener.local_addr().expect("the upstream's address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the upstream") });
        Upstream { url, hits, paths }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Every path (with its query) received so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("the upstream's paths").clone()
    }
}

/// A running `coffer paywall`, killed when dropped.
pub struct Paywall {
    pub url: String,
    pub data_dir: tempfile::TempDir,
    _child: Child,
}

impl Paywall {
    /// Starts `coffer paywall` selling for the agent of `seller_key`, with
    /// `--price-msat` and, if given, a routes file with `config` as text.
    pub async fn start(
        gw: &Gateway,
        seller_key: &str,
        upstream: &Upstream,
        price_msat: u64,
        config: Option<&str>,
    ) -> Paywall {
        Paywall::start_with_env(gw, seller_key, upstream, price_msat, config, &[]).await
    }

    /// [`Paywall::start`] with extra environment (`COFFER_LIMIT_...`).
    pub async fn start_with_env(
        gw: &Gateway,
        seller_key: &str,
        upstream: &Upstream,
        price_msat: u64,
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Paywall {
        let data_dir = tempfile::tempdir().expect("a paywall folder");
        let mut cmd = Command::new(BIN);
        cmd.args(["paywall", "--listen", "127.0.0.1:0", "--upstream", &upstream.url])
            .args(["--price-msat", &price_msat.to_string()])
            .arg("--data")
            .arg(data_dir.path())
            .env("COFFER_URL", gw.url())
            .env("COFFER_AGENT_KEY", seller_key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .envs(env.iter().copied())
            .kill_on_drop(true);
        if let Some(text) = config {
            let path = data_dir.path().join("routes.toml");
            std::fs::write(&path, text).expect("writing the routes file");
            cmd.arg("--config").arg(path);
        }
        let mut child = cmd.spawn().expect("starting coffer paywall");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("reading the paywall's stdout") {
                if let Some(rest) = line.strip_prefix(READY_PREFIX) {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("the paywall did not start within 30 s")
        .expect("the paywall exited before listening");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Paywall { url, data_dir, _child: child }
    }

    pub fn root_key(&self) -> Vec<u8> {
        std::fs::read(self.data_dir.path().join("l402-root.key")).expect("the root key file")
    }
}
