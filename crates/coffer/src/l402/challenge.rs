//! The L402 header grammar (lightninglabs/L402, protocol-specification.md):
//!
//! * challenge: `WWW-Authenticate: L402 version="0", token="<base64>", invoice="<bolt11>"`;
//!   older servers send `macaroon="<base64>"` instead of `token`, and the
//!   scheme name `LSAT`: both are understood here;
//! * credentials: `Authorization: L402 <base64 macaroon(s)>:<hex preimage>`
//!   (or `LSAT ...`); several macaroons are comma separated.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// A header value longer than this is not an L402 one.
pub const HEADER_LEN_MAX_BYTES: usize = 8 * 1024;
// Credentials for any token the paywall accepts fit the bound: the scheme,
// the macaroon in base64, `:` and the preimage in hex.
const _: () =
    assert!("LSAT ".len() + super::macaroon::MACAROON_LEN_MAX_BYTES.div_ceil(3) * 4 + 1 + 64 <= HEADER_LEN_MAX_BYTES);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The token (macaroon) as the server sent it, base64.
    pub token: String,
    pub invoice: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The token as sent (base64 text).
    pub token: String,
    pub preimage: [u8; 32],
}

fn strip_scheme(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_at_checked(4)?;
    let known = scheme.eq_ignore_ascii_case("L402") || scheme.eq_ignore_ascii_case("LSAT");
    (known && rest.starts_with([' ', '\t'])).then(|| rest.trim())
}

/// Parses a `WWW-Authenticate` value. Unknown parameters are ignored;
/// `token` wins over the older `macaroon`.
pub fn parse_challenge(value: &str) -> Result<Challenge, String> {
    if value.len() > HEADER_LEN_MAX_BYTES {
        return Err(format!("the challenge is longer than {HEADER_LEN_MAX_BYTES} bytes"));
    }
    let params = strip_scheme(value).ok_or("the challenge does not start with the L402 or LSAT scheme")?;
    let (mut token, mut macaroon, mut invoice) = (None, None, None);
    for (name, param) in auth_params(params)? {
        match name.to_ascii_lowercase().as_str() {
            "token" => token = Some(param),
            "macaroon" => macaroon = Some(param),
            "invoice" => invoice = Some(param),
            _ => {}
        }
    }
    let token = token.or(macaroon).filter(|t| !t.is_empty()).ok_or("the challenge has no token (or macaroon)")?;
    let invoice = invoice.filter(|i| !i.is_empty()).ok_or("the challenge has no invoice")?;
    Ok(Challenge { token, invoice })
}

/// `name="value"` or `name=value` pairs, comma separated (RFC 7235).
fn auth_params(mut rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or("a challenge parameter has no value")?;
        let name = name.trim().to_owned();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or("an unterminated quoted value")?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.push((name, value.to_owned()));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
        if out.len() > 16 {
            return Err("too many challenge parameters".into());
        }
    }
    Ok(out)
}

pub fn format_challenge(token: &str, invoice: &str) -> String {
    format!("L402 version=\"0\", token=\"{token}\", invoice=\"{invoice}\"")
}

pub fn format_authorization(token: &str, preimage: &[u8; 32]) -> String {
    format!("L402 {token}:{}", hex::encode(preimage))
}

/// Parses an `Authorization` value with the L402 or LSAT scheme.
pub fn parse_authorization(value: &str) -> Result<Credentials, String> {
    if value.len() > HEADER_LEN_MAX_BYTES {
        return Err(format!("the credentials are longer than {HEADER_LEN_MAX_BYTES} bytes"));
    }
    let rest = strip_scheme(value).ok_or("not the L402 or LSAT scheme")?;
    let (token, preimage_hex) = rest.rsplit_once(':').ok_or("expected <token>:<preimage hex>")?;
    let mut preimage = [0u8; 32];
    hex::decode_to_slice(preimage_hex.trim(), &mut preimage).map_err(|_| "the preimage is not 64 hex digits")?;
    Ok(Credentials { token: token.trim().to_owned(), preimage })
}

/// Decodes a token's base64: standard (as L402 headers carry it) or
/// URL-safe (as some libraries write it), padded or not.
pub fn decode_token(token: &str) -> Option<Vec<u8>> {
    let trimmed = token.trim().trim_end_matches('=');
    let standard = base64::engine::general_purpose::STANDARD_NO_PAD;
    standard.decode(trimmed).ok().or_else(|| URL_SAFE_NO_PAD.decode(trimmed).ok())
}

pub fn encode_token(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_current_form_and_the_older_ones() {
        let current = parse_challenge(r#"L402 version="0", token="AgEE", invoice="lnbcrt1x""#).unwrap();
        assert_eq!(current, Challenge { token: "AgEE".into(), invoice: "lnbcrt1x".into() });
        let old = parse_challenge(r#"LSAT macaroon="AgEE", invoice="lnbcrt1x""#).unwrap();
        assert_eq!(old, current);
        let unquoted = parse_challenge("lsat macaroon=AgEE, invoice=lnbcrt1x").unwrap();
        assert_eq!(unquoted, current);
        let both = parse_challenge(r#"L402 macaroon="old", token="AgEE", invoice="lnbcrt1x""#).unwrap();
        assert_eq!(both.token, "AgEE", "token wins over macaroon");
    }

    #[test]
    fn rejects_what_is_not_a_challenge() {
        for bad in [
            "",
            "Bearer realm=\"x\"",
            "L402",
            "L402x token=\"a\", invoice=\"b\"",
            "L402 token=\"a\"",
            "L402 invoice=\"b\"",
            "L402 token=\"a, invoice=\"b",
            "L402 token",
        ] {
            assert!(parse_challenge(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse_challenge(&format!("L402 token=\"{}\", invoice=\"b\"", "a".repeat(9000))).is_err());
    }

    #[test]
    fn authorization_round_trips_in_both_schemes() {
        let preimage = [0xab; 32];
        let header = format_authorization("AgEE+/==", &preimage);
        assert_eq!(parse_authorization(&header).unwrap(), Credentials { token: "AgEE+/==".into(), preimage });
        let lsat = header.replacen("L402", "LSAT", 1);
        assert_eq!(parse_authorization(&lsat).unwrap().preimage, preimage);
        assert!(parse_authorization("L402 AgEE:zz").is_err());
        assert!(parse_authorization("L402 AgEE").is_err());
        assert!(parse_authorization("Bearer AgEE:00").is_err());
    }

    #[test]
    fn tokens_decode_from_standard_and_url_safe_base64() {
        let bytes = [0xfb, 0xff, 0xfe, 0x01];
        assert_eq!(decode_token(&encode_token(&bytes)), Some(bytes.to_vec()));
        assert_eq!(decode_token("-__-AQ"), Some(vec![0xfb, 0xff, 0xfe, 0x01]));
        assert_eq!(decode_token("!!"), None);
    }
}
