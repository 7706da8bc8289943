//! `coffer receipt verify|get`: signed receipts (docs/receipts.md).
//!
//! `verify` works offline: it needs the receipt and the gateway's node
//! public key (`--node-key` or `COFFER_NODE_KEY`, e.g. `node_pubkey` of
//! `/healthz`), never the receipt's own `gateway` field alone.

use super::{AgentRemote, CliResult};
use crate::payment::receipt::{self, ENVELOPE_LEN_MAX_BYTES};
use clap::Subcommand;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The exit code of a receipt that does not verify.
const EXIT_INVALID: u8 = 1;
/// The exit code of a usage error (a node key that is not one, a file that
/// cannot be read): nothing was verified.
const EXIT_USAGE: u8 = 2;

#[derive(Subcommand)]
pub(super) enum ReceiptCommand {
    /// Verify a receipt file (`-` for stdin) against the gateway's node
    /// public key: exit 0 only if it is valid; 1, naming why, if it is not.
    Verify {
        /// The receipt file (`coffer receipt get` prints one), or `-`.
        file: PathBuf,
        /// The gateway's node public key: 66 hexadecimal characters
        /// (`node_pubkey` of the gateway's /healthz).
        #[arg(long, env = "COFFER_NODE_KEY")]
        node_key: String,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch the signed receipt of a settled payment (as its payer or
    /// payee) and print its JSON, to keep in a file.
    Get {
        #[command(flatten)]
        remote: AgentRemote,
        /// The payment's id (or, with --session, the session's).
        payment_id: String,
        /// The id is a session's: its receipt once closed or expired.
        #[arg(long)]
        session: bool,
    },
}

pub(super) async fn run(cmd: ReceiptCommand) -> CliResult {
    match cmd {
        ReceiptCommand::Verify { file, node_key, json } => Ok(verify(&file, &node_key, json)),
        ReceiptCommand::Get { remote, payment_id, session } => {
            let client = remote.client()?;
            let signed =
                if session { client.session_receipt(&payment_id).await } else { client.receipt(&payment_id).await }
                    .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&signed).map_err(|e| e.to_string())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(file: &Path, node_key: &str, json: bool) -> ExitCode {
    let key = match receipt::parse_node_key(node_key) {
        Ok(key) => key,
        Err(why) => {
            eprintln!("coffer: --node-key: {why}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let text = match read_bounded(file) {
        Ok(text) => text,
        Err(why) => {
            eprintln!("coffer: {}: {why}", file.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match receipt::verify(&text, &key) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::json!({"valid": true, "receipt": r}));
            } else {
                let kind = serde_json::to_value(r.kind).ok().and_then(|k| k.as_str().map(str::to_owned));
                println!(
                    "valid: {} ({}) {} msat (fee {} msat) from {} to {}, settled {}, signed by {}",
                    r.payment_id,
                    kind.unwrap_or_default(),
                    r.amount_msat,
                    r.fee_msat,
                    r.payer,
                    r.payee,
                    r.settled_at,
                    r.gateway
                );
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            if json {
                println!("{}", serde_json::json!({"valid": false, "why": why.to_string()}));
            }
            eprintln!("invalid: {why}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// The file (or stdin for `-`), refused past [`ENVELOPE_LEN_MAX_BYTES`].
fn read_bounded(file: &Path) -> Result<Vec<u8>, String> {
    let limit = u64::try_from(ENVELOPE_LEN_MAX_BYTES).unwrap_or(u64::MAX).saturating_add(1);
    let mut text = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut text))
    };
    read.map_err(|e| e.to_string())?;
    if text.len() > ENVELOPE_LEN_MAX_BYTES {
        return Err(format!("longer than {ENVELOPE_LEN_MAX_BYTES} bytes: not a receipt"));
    }
    Ok(text)
}
