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
    pub async fn start(data: Option<PathBuf>) -> Result<OwnGateway, String> {
        let (data, temp) = match data {
            Some(d) => (d, None),
            None => {
                let d = std::env::temp_dir().join(crate::secrets::new_id("coffer-"));
                (d.clone(), Some(TempDir(d)))
            }
        };
        let token = crate::secrets::new_secret(crate::secrets::OPERATOR_TOKEN_PREFIX);
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .env("COFFER_OPERATOR_TOKEN", &token)
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
        Ok(OwnGateway { child, url, token, data, _temp: temp })
    }

    pub async fn audit(&self) -> Result<String, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = tokio::process::Command::new(exe)
            .args(["audit", "--data"])
            .arg(&self.data)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
        if !out.status.success() {
            return Err(format!("audit failed after the run: {}", String::from_utf8_lossy(&out.stdout)));
        }
        Ok(text)
    }
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
