//! The QR code of a real regtest invoice, rendered to PNG, read back by an
//! independent decoder: Debian's `zbarimg` (package zbar-tools).
//!
//! Without `zbarimg` the test fails under CI (`CI` set) and is skipped
//! elsewhere; `bash .ci/run` installs it.

use bitcoin::secp256k1::SecretKey;
use coffer::http::qr;
use coffer::payment::bolt11::{Network, NodeSigner};
use coffer_core::Msat;
use std::io::ErrorKind;
use std::process::Command;
use std::time::Duration;

const ZBARIMG: &str = "zbarimg";

/// Whether `zbarimg` can run; panics under CI when it cannot.
fn zbarimg_present() -> bool {
    match Command::new(ZBARIMG).arg("--version").output() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{ZBARIMG} is not installed, and CI is set: install zbar-tools (bash .ci/run does)");
            }
            println!("SKIPPED: install zbar-tools (bash .ci/run does)");
            false
        }
        Err(e) => panic!("cannot run {ZBARIMG}: {e}"),
    }
}

fn regtest_bolt11() -> String {
    let secret = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let signer = NodeSigner::new(secret, Network::Regtest);
    let invoice = signer.sign(Msat::new(21_000), "a coffee", 600, Duration::from_secs(1_800_000_000)).unwrap();
    invoice.bolt11
}

/// What `zbarimg` reads in the PNG file: its raw text, one newline removed.
fn zbar_decode(png: &[u8]) -> String {
    let file = tempfile::Builder::new().prefix("coffer-qr-").suffix(".png").tempfile().unwrap();
    std::fs::write(file.path(), png).unwrap();
    let output = Command::new(ZBARIMG).arg("--raw").arg("-q").arg(file.path()).output().unwrap();
    assert!(
        output.status.success(),
        "{ZBARIMG} found no code in {} bytes of PNG (exit {}): {}",
        png.len(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("zbarimg prints UTF-8");
    text.strip_suffix('\n').unwrap_or(&text).to_owned()
}

#[test]
fn zbarimg_reads_the_invoice_back_from_the_png() {
    if !zbarimg_present() {
        return;
    }
    let bolt11 = regtest_bolt11();
    assert!(bolt11.starts_with("lnbcrt210n1"), "{bolt11}");
    let expected = qr::payload(&bolt11);
    for scale in [2, 4, 8] {
        let png = qr::png(&bolt11, scale).unwrap();
        let decoded = zbar_decode(&png);
        assert_eq!(decoded, expected, "scale {scale}");
        let invoice = decoded.strip_prefix("LIGHTNING:").expect("the scheme, in upper case").to_lowercase();
        assert_eq!(invoice, bolt11, "scale {scale}");
    }
}
