//! `coffer bench`: written next.

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> super::CliResult {
    Err("not yet".into())
}
