//! The README's walkthrough runs as pasted: its marked block, extracted
//! from README.md, runs as a bash script (`set -euo pipefail`) against a
//! real `coffer serve` on 127.0.0.1, with `coffer` on the PATH as the README
//! tells a newcomer to put it. The store must then hold what it did.

mod common;

use common::Gateway;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The line right before the walkthrough's fenced block.
const MARKER: &str = "<!-- walkthrough";
/// Bounds a hung script (a `curl` that never returns): not a measure of speed.
const SCRIPT_BOUND: Duration = Duration::from_secs(120);

/// The bash block that follows the marker in `readme`.
fn walkthrough(readme: &str) -> Result<String, String> {
    let marked: Vec<usize> =
        readme.lines().enumerate().filter(|(_, l)| l.starts_with(MARKER)).map(|(i, _)| i).collect();
    let [at] = marked[..] else { return Err(format!("{} lines start with {MARKER:?}; want one", marked.len())) };
    let mut lines = readme.lines().skip(at + 1);
    if lines.next().map(str::trim_end) != Some("```bash") {
        return Err(format!("the line after {MARKER:?} must open a ```bash block"));
    }
    let mut block = String::new();
    for line in lines {
        if line.trim_end() == "```" {
            return Ok(block);
        }
        block.push_str(line);
        block.push('\n');
    }
    Err("the walkthrough's block is not closed".into())
}

#[test]
fn the_extraction_finds_one_closed_block() {
    let readme = "intro\n<!-- walkthrough -->\n```bash\necho one\necho two\n```\nafter\n";
    assert_eq!(walkthrough(readme).unwrap(), "echo one\necho two\n");
    assert!(walkthrough("no marker\n").is_err());
    assert!(walkthrough("<!-- walkthrough -->\n```sh\necho\n```\n").is_err());
    assert!(walkthrough("<!-- walkthrough -->\n```bash\necho\n").is_err());
}

/// Runs `script` with bash in `dir`, `coffer` first on the PATH, against
/// `gw`: its exit status and what it printed.
async fn run(gw: &Gateway, script: &str, dir: &Path) -> (bool, String) {
    let bin_dir = Path::new(common::BIN).parent().expect("the binary's folder");
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_owned()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("a PATH");
    let file = dir.join("walkthrough.sh");
    std::fs::write(&file, format!("set -euo pipefail\n{script}")).expect("writing the script");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(&file)
        .current_dir(dir)
        .env("PATH", path)
        .env("COFFER_URL", gw.url())
        .env("COFFER_OPERATOR_TOKEN", gw.operator_token())
        // `coffer audit` checks the gateway's own store.
        .env("COFFER_DATA", gw.data_dir())
        .env_remove("COFFER_DATABASE_URL")
        .env_remove("COFFER_AGENT_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(database) = gw.database() {
        cmd.env("COFFER_DATABASE_URL", &database.url);
    }
    let out =
        tokio::time::timeout(SCRIPT_BOUND, cmd.output()).await.expect("the walkthrough hung").expect("running bash");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// The audit trail's facts of one agent and action: amount and rule.
async fn facts(gw: &Gateway, agent_id: &str, action: &str) -> Vec<Value> {
    let records = gw.audit_all(&format!("agent_id={agent_id}&action={action}")).await;
    records.iter().map(|r| json!([r.record["amount_msat"], r.record["rule"]])).collect()
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_pasted() {
    let found = std::process::Command::new("jq").arg("--version").output();
    assert!(found.is_ok_and(|o| o.status.success()), "the walkthrough needs jq (`.ci/run` installs it)");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
        .expect("reading README.md");
    let script = walkthrough(&readme).expect("the README's walkthrough");
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().expect("a working folder");

    let (ok, said) = run(&gw, &script, dir.path()).await;
    assert!(ok, "the README's walkthrough failed:\n{said}");

    // The store holds what the walkthrough did: two agents, one payment of
    // 21 sat from alice to bob, one refused by her budget.
    let agents: Vec<(String, String, u64)> = gw
        .operator()
        .agents()
        .await
        .expect("listing agents")
        .into_iter()
        .map(|a| (a.name, a.id, a.balance_msat))
        .collect();
    let named =
        |name: &str| agents.iter().find(|a| a.0 == name).unwrap_or_else(|| panic!("no agent {name}: {agents:?}"));
    let (alice, bob) = (named("alice"), named("bob"));
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert_eq!((alice.2, bob.2), (29_000, 21_000));
    assert_eq!(facts(&gw, &alice.1, "payment.allowed").await, [json!([21_000, "allowed"])]);
    assert_eq!(facts(&gw, &alice.1, "payment.denied").await, [json!([21_000, "budget-exceeded"])]);
    assert_eq!(facts(&gw, &alice.1, "policy.updated").await.len(), 1);
    // The script's own audit check ran and passed.
    assert!(said.contains("ledger OK"), "{said}");
    let (clean, report) = gw.audit().await;
    assert!(clean, "{report}");
}

/// One start of `coffer serve` on `data` with operator token `token`:
/// whether the token works (and whether `old`, if any, still does), and
/// what the start wrote on stderr.
async fn start_with_token(data: &Path, database: Option<&str>, token: &str, old: Option<&str>) -> (bool, bool, String) {
    let log = data.with_extension("stderr");
    let mut cmd = tokio::process::Command::new(common::BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("COFFER_OPERATOR_TOKEN", token)
        .env("COFFER_LOG", "warn")
        .env_remove("COFFER_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("the stderr file"))
        .kill_on_drop(true);
    if let Some(url) = database {
        cmd.env("COFFER_DATABASE_URL", url);
    }
    let mut child = cmd.spawn().expect("spawning coffer serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let url = tokio::time::timeout(SCRIPT_BOUND, async {
        while let Some(line) = lines.next_line().await.expect("reading stdout") {
            if let Some(url) = line.strip_prefix("coffer listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("coffer serve exited before listening: {}", std::fs::read_to_string(&log).unwrap_or_default())
    })
    .await
    .expect("coffer serve did not listen");
    coffer::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let works = |secret: String| {
        let request = http.get(format!("{url}/v1/treasury")).bearer_auth(secret);
        async move { request.send().await.expect("asking the treasury").status().is_success() }
    };
    let new_works = works(token.to_owned()).await;
    let old_works = match old {
        Some(old) => works(old.to_owned()).await,
        None => false,
    };
    child.kill().await.expect("stopping coffer serve");
    (new_works, old_works, std::fs::read_to_string(&log).expect("reading stderr"))
}

#[tokio::test]
async fn a_token_from_the_environment_replaces_the_stored_one_and_says_so() {
    let dir = tempfile::tempdir().expect("a data folder");
    let data = dir.path().join("data");
    let database = common::postgres_mode().then(common::TestDatabase::create);
    let database = database.as_ref().map(|d| d.url.as_str());
    let (first, second) = (coffer::secrets::new_secret("cop_first_"), coffer::secrets::new_secret("cop_second_"));
    const WARNING: &str = "COFFER_OPERATOR_TOKEN replaced the operator token stored by an earlier start";

    let (works, _, said) = start_with_token(&data, database, &first, None).await;
    assert!(works && !said.contains(WARNING), "{said}");
    // The same token again: nothing replaced, nothing said.
    let (works, _, said) = start_with_token(&data, database, &first, None).await;
    assert!(works && !said.contains(WARNING), "{said}");
    // Another one: it works, the first no longer does, and the start says
    // so in one line that holds neither token.
    let (works, old_works, said) = start_with_token(&data, database, &second, Some(&first)).await;
    assert!(works && !old_works, "new works: {works}, old works: {old_works}");
    assert_eq!(said.lines().filter(|l| l.contains(WARNING)).count(), 1, "{said}");
    assert!(!said.contains(&first) && !said.contains(&second), "{said}");
}
