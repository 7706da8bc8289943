//! The agent's signing key on its own machine: `coffer signing-key new`
//! makes one, registers its public half and keeps the private half in a
//! file of mode 0600; `--signing-key FILE` (or `COFFER_SIGNING_KEY`) makes
//! `coffer pay`, the other agent commands and `coffer mcp` sign their
//! requests with it. The private key never reaches the gateway.
//!
//! The file is TOML: `key_id`, `alg` (`ed25519`) and `private_key`
//! (standard base64 of the 32-byte seed).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_client::signing::Signer;
use coffer_client::{Client, CreateSigningKeyRequest};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// The longest key file read: a few lines.
const KEY_FILE_LEN_MAX_BYTES: u64 = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    alg: String,
    private_key: String,
}

/// The signer of a key file.
pub fn load(path: &Path) -> Result<Arc<Signer>, String> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
    if meta.len() > KEY_FILE_LEN_MAX_BYTES {
        return Err(format!("{name}: not a signing key file (too long)"));
    }
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
        return Err(format!("{name}: a private key must be readable by its owner only (chmod 600)"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let file: KeyFile = toml::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    if file.alg != "ed25519" {
        return Err(format!("{name}: alg: only ed25519 keys sign from the command line"));
    }
    let seed = STANDARD.decode(file.private_key.trim()).map_err(|_| format!("{name}: private_key: not base64"))?;
    Signer::ed25519(&file.key_id, &seed).map(Arc::new).map_err(|e| format!("{name}: private_key: {e}"))
}

/// Makes a key, registers it for the agent of `client` and writes it to
/// `out` (which must not exist). Answers the key's id.
pub async fn create(client: &Client, out: &Path, required: bool) -> Result<String, String> {
    if out.exists() {
        return Err(format!("{}: exists; a key file is never overwritten", out.display()));
    }
    let seed = Signer::generate_seed().map_err(|e| e.to_string())?;
    let probe = Signer::ed25519("new", &seed).map_err(|e| e.to_string())?;
    let agent_id = client.wallet().await.map_err(|e| e.to_string())?.agent_id;
    let request = CreateSigningKeyRequest { alg: None, public_key: STANDARD.encode(probe.public_key()), required };
    let key = client.create_signing_key(&agent_id, &request).await.map_err(|e| e.to_string())?;
    let text = format!(
        "# coffer signing key of agent {agent_id}. Keep it secret: it signs this agent's payments.\n\
         key_id = \"{}\"\nalg = \"ed25519\"\nprivate_key = \"{}\"\n",
        key.id,
        STANDARD.encode(seed)
    );
    crate::secrets::write_private_file(out, text.as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(key.id)
}
