//! Where the price of a bitcoin in the operator's currency comes from, for
//! policies that state limits in a currency (see
//! `coffer_core::policy::resolve`).
//!
//! The operator sets fixed prices (`COFFER_FIAT_RATES=USD:95000.00,EUR:88000`:
//! what one bitcoin costs in each currency; they never age), or one price
//! endpoint (`COFFER_FIAT_RATE_URL`, the JSON pointer of the price in its
//! answer `COFFER_FIAT_RATE_POINTER`, its currency
//! `COFFER_FIAT_RATE_CURRENCY`), polled every `COFFER_FIAT_RATE_INTERVAL_S`
//! through the egress guard; a price older than `COFFER_FIAT_RATE_MAX_AGE_S`
//! no longer counts, and payments under limits in that currency are refused
//! until a fresh one arrives (`fiat-rate-unavailable`).
//!
//! The latest prices live in memory ([`Rates`]); a payment takes a
//! [`Rates::snapshot`] before its transaction and decides with it.

use coffer_core::policy::{Currency, Decimal, FiatRate, FiatRates};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub const RATES_ENV: &str = "COFFER_FIAT_RATES";
pub const RATE_URL_ENV: &str = "COFFER_FIAT_RATE_URL";
pub const RATE_POINTER_ENV: &str = "COFFER_FIAT_RATE_POINTER";
pub const RATE_CURRENCY_ENV: &str = "COFFER_FIAT_RATE_CURRENCY";
pub const RATE_MAX_AGE_ENV: &str = "COFFER_FIAT_RATE_MAX_AGE_S";
pub const RATE_INTERVAL_ENV: &str = "COFFER_FIAT_RATE_INTERVAL_S";

/// Defaults: a poll a minute, a price trusted for ten minutes (nine missed
/// polls).
pub const RATE_INTERVAL_DEFAULT_S: u64 = 60;
pub const RATE_MAX_AGE_DEFAULT_S: u64 = 600;
/// Bounds: no tighter than a poll a second, no looser than an hour between
/// polls or a day of age.
pub const RATE_INTERVAL_MIN_S: u64 = 1;
pub const RATE_INTERVAL_MAX_S: u64 = 3_600;
pub const RATE_MAX_AGE_MAX_S: u64 = 86_400;
const _: () = assert!(RATE_INTERVAL_DEFAULT_S <= RATE_MAX_AGE_DEFAULT_S);
const _: () = assert!(RATE_INTERVAL_MAX_S <= RATE_MAX_AGE_MAX_S);
/// One poll: its whole time and the size of the answer read, at most.
pub const RATE_FETCH_TIMEOUT_MS: u64 = 5_000;
pub const RATE_BODY_MAX_BYTES: usize = 64 * 1024;
const POINTER_LEN_MAX_BYTES: usize = 256;
const MS_PER_S: u64 = 1_000;

/// What the operator configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FiatConfig {
    /// Fixed prices of one bitcoin.
    pub fixed: Vec<(Currency, Decimal)>,
    pub endpoint: Option<Endpoint>,
}

/// A price endpoint polled in the background.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: reqwest::Url,
    /// RFC 6901 pointer to the price (a number or a decimal string).
    pub pointer: String,
    pub currency: Currency,
    pub interval_s: u64,
    pub max_age_s: u64,
}

impl FiatConfig {
    /// The settings read through `lookup` (the environment over a
    /// configuration file); an unreadable value is an error naming it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<FiatConfig, String> {
        let fixed = match lookup(RATES_ENV) {
            Some(text) => parse_fixed(&text).map_err(|e| format!("{RATES_ENV}: {e}"))?,
            None => Vec::new(),
        };
        let endpoint = match lookup(RATE_URL_ENV).filter(|u| !u.trim().is_empty()) {
            Some(url) => Some(endpoint(url.trim(), &lookup)?),
            None => None,
        };
        if let Some(e) = &endpoint
            && fixed.iter().any(|(c, _)| *c == e.currency)
        {
            return Err(format!("{RATES_ENV} and {RATE_URL_ENV} both set the {} price", e.currency));
        }
        Ok(FiatConfig { fixed, endpoint })
    }
}

/// `USD:95000.00,EUR:88000`: currency, a colon, what one bitcoin costs.
fn parse_fixed(text: &str) -> Result<Vec<(Currency, Decimal)>, String> {
    let mut fixed: Vec<(Currency, Decimal)> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (code, price) = entry.split_once(':').ok_or_else(|| format!("{entry:?}: expected CURRENCY:PRICE"))?;
        let currency = Currency::parse(code.trim())?;
        let price = Decimal::parse(price.trim())?;
        if fixed.iter().any(|(c, _)| *c == currency) {
            return Err(format!("{currency} is listed twice"));
        }
        if fixed.len() == coffer_core::policy::FIAT_CURRENCIES_MAX {
            return Err(format!("at most {} currencies", coffer_core::policy::FIAT_CURRENCIES_MAX));
        }
        fixed.push((currency, price));
    }
    Ok(fixed)
}

fn endpoint(url: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<Endpoint, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("{RATE_URL_ENV}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{RATE_URL_ENV}: an http:// or https:// URL with a host"));
    }
    let pointer = lookup(RATE_POINTER_ENV).unwrap_or_default();
    if !(pointer.is_empty() || pointer.starts_with('/')) || pointer.len() > POINTER_LEN_MAX_BYTES {
        return Err(format!("{RATE_POINTER_ENV}: a JSON pointer such as \"/bitcoin/usd\" (empty: the whole answer)"));
    }
    let currency = lookup(RATE_CURRENCY_ENV).ok_or_else(|| format!("{RATE_URL_ENV} needs {RATE_CURRENCY_ENV}"))?;
    let currency = Currency::parse(currency.trim()).map_err(|e| format!("{RATE_CURRENCY_ENV}: {e}"))?;
    let interval_s = seconds(lookup, RATE_INTERVAL_ENV, RATE_INTERVAL_DEFAULT_S, RATE_INTERVAL_MAX_S)?;
    let max_age_s = seconds(lookup, RATE_MAX_AGE_ENV, RATE_MAX_AGE_DEFAULT_S, RATE_MAX_AGE_MAX_S)?;
    if max_age_s < interval_s {
        return Err(format!("{RATE_MAX_AGE_ENV} ({max_age_s}) is shorter than {RATE_INTERVAL_ENV} ({interval_s})"));
    }
    Ok(Endpoint { url, pointer, currency, interval_s, max_age_s })
}

fn seconds(lookup: &impl Fn(&str) -> Option<String>, name: &str, default: u64, max: u64) -> Result<u64, String> {
    let Some(value) = lookup(name) else { return Ok(default) };
    match value.trim().parse::<u64>() {
        Ok(secs) if (RATE_INTERVAL_MIN_S..=max).contains(&secs) => Ok(secs),
        _ => Err(format!("{name}: seconds from {RATE_INTERVAL_MIN_S} to {max}, not {value:?}")),
    }
}

/// The latest prices, shared by the poller and the payments.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    latest: Arc<RwLock<Arc<FiatRates>>>,
}

impl Rates {
    /// The fixed prices of `config`; an endpoint's come later.
    pub fn new(config: &FiatConfig) -> Rates {
        let mut rates = FiatRates::default();
        for (currency, btc_price) in &config.fixed {
            // Bounded by the parser.
            let _ = rates.set(*currency, FiatRate { btc_price: *btc_price, at_ms: 0, max_age_ms: None });
        }
        Rates { latest: Arc::new(RwLock::new(Arc::new(rates))) }
    }

    /// What a payment decides with: the prices as they are now.
    pub fn snapshot(&self) -> Arc<FiatRates> {
        match self.latest.read() {
            Ok(latest) => Arc::clone(&latest),
            // A writer never panics holding the lock; recover anyway.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set(&self, currency: Currency, rate: FiatRate) {
        let mut latest = match self.latest.write() {
            Ok(latest) => latest,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = FiatRates::clone(&latest);
        if let Err(e) = next.set(currency, rate) {
            tracing::warn!(error = %e, "fiat rate not kept");
            return;
        }
        *latest = Arc::new(next);
    }
}

/// Where a price comes from: one currency, one price per call.
pub trait RateSource: Send + Sync {
    fn currency(&self) -> Currency;
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Decimal, String>> + Send + '_>>;
}

/// A JSON price endpoint, reached through the egress guard.
pub struct HttpSource {
    endpoint: Endpoint,
    /// The client resolves names through the guard; an address written
    /// in the URL is checked here, before each request.
    egress: crate::egress::Egress,
    client: reqwest::Client,
}

impl HttpSource {
    pub fn new(endpoint: Endpoint, egress: &crate::egress::Egress) -> Result<HttpSource, String> {
        let timeout = Duration::from_millis(RATE_FETCH_TIMEOUT_MS);
        let builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        let client = egress.client(builder, crate::egress::Redirects::Checked)?;
        Ok(HttpSource { endpoint, egress: egress.clone(), client })
    }

    async fn fetch_price(&self) -> Result<Decimal, String> {
        self.egress.check_url(&self.endpoint.url).map_err(|refused| refused.to_string())?;
        let mut response = self.client.get(self.endpoint.url.clone()).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the price endpoint answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > RATE_BODY_MAX_BYTES {
                return Err(format!("the answer is larger than {RATE_BODY_MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let price = json.pointer(&self.endpoint.pointer).ok_or("the pointer names nothing in the answer")?;
        price_of(price)
    }
}

impl RateSource for HttpSource {
    fn currency(&self) -> Currency {
        self.endpoint.currency
    }

    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Decimal, String>> + Send + '_>> {
        Box::pin(self.fetch_price())
    }
}

/// A price as the endpoint wrote it: a number or a decimal string. Digits
/// past the eighth after the point round the price up: a higher price
/// converts a limit to fewer msat, the stricter side.
pub fn price_of(value: &serde_json::Value) -> Result<Decimal, String> {
    let text = match value {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err("the price is not a number".into()),
    };
    let Some((whole, fraction)) = text.split_once('.') else { return Decimal::parse(&text) };
    if fraction.len() <= 8 {
        return Decimal::parse(&text);
    }
    let (kept, dropped) = fraction.split_at(8);
    let down = Decimal::parse(&format!("{whole}.{kept}"))?;
    if dropped.bytes().all(|b| b == b'0') {
        return Ok(down);
    }
    if !dropped.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid price {text:?}"));
    }
    let up = down.units_e8() + 1;
    Decimal::parse(&format!("{}.{:08}", up / 100_000_000, up % 100_000_000))
}

/// Polls `source` every `interval_s` for as long as the process runs,
/// keeping each price with the time it was asked for (`now_ms`, the
/// gateway's clock). A failed poll keeps the last price, which ages.
pub async fn run(
    source: Box<dyn RateSource>,
    rates: Rates,
    interval_s: u64,
    max_age_s: u64,
    now_ms: impl Fn() -> i64 + Send,
) {
    let max_age_ms = i64::try_from(max_age_s * MS_PER_S).unwrap_or(i64::MAX);
    let mut ticks = tokio::time::interval(Duration::from_secs(interval_s));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A price is as old as the request that asked for it.
        let asked_at_ms = now_ms();
        match source.fetch().await {
            Ok(btc_price) => {
                let rate = FiatRate { btc_price, at_ms: asked_at_ms, max_age_ms: Some(max_age_ms) };
                rates.set(source.currency(), rate);
            }
            Err(e) => tracing::warn!(currency = %source.currency(), error = %e, "fetching the bitcoin price failed"),
        }
    }
}

/// Starts the poller of the gateway's endpoint, if it has one.
pub fn start(gateway: &Arc<crate::gateway::Gateway>) -> Result<(), String> {
    let Some(endpoint) = gateway.settings().fiat.endpoint.clone() else { return Ok(()) };
    let (interval_s, max_age_s) = (endpoint.interval_s, endpoint.max_age_s);
    let source = HttpSource::new(endpoint, &gateway.settings().egress)?;
    let clock = Arc::clone(gateway);
    let rates = gateway.fiat_rates().clone();
    tokio::spawn(run(Box::new(source), rates, interval_s, max_age_s, move || clock.now_ms()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn fixed_prices_parse() {
        let config = FiatConfig::from_lookup(lookup(&[(RATES_ENV, "USD:95000.00, EUR:88000")])).unwrap();
        assert_eq!(config.fixed.len(), 2);
        assert_eq!(config.fixed[1].1.to_string(), "88000.00");
        for bad in ["USD", "USD:0", "usd:1", "USD:1,USD:2", "USD:-1", "USD:1e5"] {
            assert!(FiatConfig::from_lookup(lookup(&[(RATES_ENV, bad)])).is_err(), "{bad}");
        }
        let rates = Rates::new(&config).snapshot();
        let usd = Currency::parse("USD").unwrap();
        assert!(rates.usable(usd, i64::MAX).is_ok(), "a fixed price never ages");
    }

    #[test]
    fn an_endpoint_needs_its_currency_and_sane_times() {
        let url = (RATE_URL_ENV, "http://127.0.0.1:9/price");
        assert!(FiatConfig::from_lookup(lookup(&[url])).unwrap_err().contains(RATE_CURRENCY_ENV));
        let ok = FiatConfig::from_lookup(lookup(&[url, (RATE_CURRENCY_ENV, "USD"), (RATE_POINTER_ENV, "/usd")]));
        let endpoint = ok.unwrap().endpoint.unwrap();
        assert_eq!((endpoint.interval_s, endpoint.max_age_s), (RATE_INTERVAL_DEFAULT_S, RATE_MAX_AGE_DEFAULT_S));
        let short = [url, (RATE_CURRENCY_ENV, "USD"), (RATE_INTERVAL_ENV, "30"), (RATE_MAX_AGE_ENV, "10")];
        assert!(FiatConfig::from_lookup(lookup(&short)).is_err());
        assert!(FiatConfig::from_lookup(lookup(&[url, (RATE_CURRENCY_ENV, "USD"), (RATE_INTERVAL_ENV, "0")])).is_err());
        assert!(
            FiatConfig::from_lookup(lookup(&[url, (RATE_CURRENCY_ENV, "USD"), (RATE_POINTER_ENV, "usd")])).is_err()
        );
        let both = [url, (RATE_CURRENCY_ENV, "USD"), (RATES_ENV, "USD:1")];
        assert!(FiatConfig::from_lookup(lookup(&both)).is_err());
        let ftp = [(RATE_URL_ENV, "ftp://x/y"), (RATE_CURRENCY_ENV, "USD")];
        assert!(FiatConfig::from_lookup(lookup(&ftp)).is_err());
    }

    #[tokio::test]
    async fn the_endpoint_is_reached_through_the_egress_guard_only() {
        let url = reqwest::Url::parse("http://127.0.0.1:9/price").unwrap();
        let endpoint = Endpoint {
            url,
            pointer: String::new(),
            currency: Currency::parse("USD").unwrap(),
            interval_s: 1,
            max_age_s: 1,
        };
        let source = HttpSource::new(endpoint, &crate::egress::Egress::default()).unwrap();
        let refused = source.fetch().await.unwrap_err();
        assert!(refused.contains("egress guard"), "{refused}");
    }

    #[test]
    fn prices_are_read_as_numbers_or_strings_and_round_up() {
        assert_eq!(price_of(&json!(95000.5)).unwrap().to_string(), "95000.50");
        assert_eq!(price_of(&json!("95000.12")).unwrap().to_string(), "95000.12");
        assert_eq!(price_of(&json!("1.000000001")).unwrap().to_string(), "1.00000001");
        assert_eq!(price_of(&json!("1.000000000")).unwrap().to_string(), "1.00");
        for bad in [json!(null), json!(true), json!(-1), json!("abc"), json!(0), json!(1e300)] {
            assert!(price_of(&bad).is_err(), "{bad}");
        }
    }
}
