//! A gateway run as a child process on a folder of its own: for `coffer
//! bench` and `coffer demo`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A gateway child process on a folder of its own.
pub struct OwnGateway {
    child: tokio::process::Child,
    pub url: String,
    pub token: String,
    pub data: PathBuf,
    /// A PostgreSQL URL: the store, instead of SQLite in `data`.
    database: Option<String>,
    durability: crate::store::sqlite::Durability,
    _temp: Option<TempDir>,
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl OwnGateway {
    /// The gateway process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts a gateway on `data` (a temporary folder by default), with
    /// its store in PostgreSQL at `database` if given.
    pub async fn start(data: Option<PathBuf>, database: Option<String>) -> Result<OwnGateway, String> {
        OwnGateway::start_with(data, database, crate::store::sqlite::Durability::default()).await
    }

    /// [`OwnGateway::start`], with commits made durable as `durability` says.
    pub async fn start_with(
        data: Option<PathBuf>,
        database: Option<String>,
        durability: crate::store::sqlite::Durability,
    ) -> Result<OwnGateway, String> {
        let (data, temp) = match data {
            Some(d) => (d, None),
            None => {
                let d = std::env::temp_dir().join(crate::secrets::new_id("coffer-"));
                (d.clone(), Some(TempDir(d)))
            }
        };
        let token = crate::secrets::new_secret(crate::secrets::OPERATOR_TOKEN_PREFIX);
        let (child, url) = spawn(&data, database.as_deref(), &token, durability).await?;
        Ok(OwnGateway { child, url, token, data, database, durability, _temp: temp })
    }

    /// Another instance of a gateway on PostgreSQL: the same database,
    /// node key (folder) and operator token. Drop it before `self`, whose
    /// temporary folder it uses.
    pub async fn another_instance(&self) -> Result<OwnGateway, String> {
        let database = self.database.clone().ok_or("only a gateway on PostgreSQL has several instances")?;
        let (child, url) = spawn(&self.data, Some(&database), &self.token, self.durability).await?;
        Ok(OwnGateway {
            child,
            url,
            token: self.token.clone(),
            data: self.data.clone(),
            database: Some(database),
            durability: self.durability,
            _temp: None,
        })
    }

    pub async fn audit(&self) -> Result<String, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut audit = tokio::process::Command::new(exe);
        audit.args(["audit", "--data"]).arg(&self.data).env_remove("COFFER_DATABASE_URL");
        if let Some(url) = &self.database {
            audit.env("COFFER_DATABASE_URL", url);
        }
        let out = audit.output().await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
        if !out.status.success() {
            return Err(format!("audit failed after the run: {}", String::from_utf8_lossy(&out.stdout)));
        }
        Ok(text)
    }
}

async fn spawn(
    data: &std::path::Path,
    database: Option<&str>,
    token: &str,
    durability: crate::store::sqlite::Durability,
) -> Result<(tokio::process::Child, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(exe);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(data).env_remove("COFFER_DATABASE_URL");
    if let Some(url) = database {
        // Through the environment: a URL may carry a password.
        command.env("COFFER_DATABASE_URL", url);
    }
    let mut child = command
        .env("COFFER_OPERATOR_TOKEN", token)
        .env("COFFER_DURABILITY", durability.as_str())
        .env("COFFER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the gateway: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from the gateway")?;
    let url = tokio::time::timeout(Duration::from_secs(30), wait_for_listening(stdout))
        .await
        .map_err(|_| "the gateway did not start within 30 s".to_owned())??;
    Ok((child, url))
}

impl Drop for OwnGateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn wait_for_listening(stdout: tokio::process::ChildStdout) -> Result<String, String> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        if let Some(url) = line.strip_prefix("coffer listening on ") {
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(url.trim().to_owned());
        }
    }
    Err("the gateway exited before listening".into())
}
