//! The egress guard: every request the gateway makes on someone's behalf
//! (webhooks, `fetch_paid` over `/mcp`, LNURL) goes through a client built
//! here, so that no caller can make the gateway reach its own machine or
//! network: loopback, private, link-local, CGNAT, multicast, unspecified,
//! broadcast, reserved and documentation ranges, and IPv6 forms that embed
//! such an IPv4 address (`::ffff:127.0.0.1`), are refused.
//!
//! A destination is checked where it becomes known: an IP literal in the
//! URL before the request (the connector does not resolve those), a host
//! name's addresses after resolution (the resolver drops refused ones, so a
//! name that points at loopback, or is rebound to it, reaches nothing), and
//! every redirect hop. Proxies from the environment are not used: a proxy
//! would connect for us, past these checks.
//!
//! The operator may allow destinations (`COFFER_EGRESS_ALLOW`: host names,
//! IP addresses or CIDR blocks, each optionally with `:port`), and may
//! refuse everything else, public addresses included
//! (`COFFER_EGRESS_DENY_PUBLIC=true`). An entry with a port applies to URLs
//! on that port only; since a resolver does not learn the port, an address
//! entry with a port covers URLs that name that address, and a host name
//! entry with a port refuses that name on other ports.
//!
//! The Lightning backend the operator configured is the operator's own and
//! does not go through here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

pub const ALLOW_ENV: &str = "COFFER_EGRESS_ALLOW";
pub const DENY_PUBLIC_ENV: &str = "COFFER_EGRESS_DENY_PUBLIC";
/// Entries of `COFFER_EGRESS_ALLOW`, at most.
pub const ALLOW_ENTRIES_MAX: usize = 256;
/// Redirect hops followed, at most, each checked.
pub const REDIRECTS_MAX: usize = 5;
const HOST_LEN_MAX_BYTES: usize = 253;

/// Which destinations the gateway may reach on someone's behalf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    allow: Vec<Allowed>,
    deny_public: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Allowed {
    destination: Destination,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Destination {
    /// Lower case, without a trailing dot.
    Host(String),
    Block {
        network: IpAddr,
        prefix_len: u8,
    },
}

/// A destination the guard refused: a clear error, with no word from the
/// destination (nothing was sent to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "destination refused by the egress guard: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// Whether redirects are followed (each hop checked) or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirects {
    None,
    Checked,
}

impl Egress {
    /// `COFFER_EGRESS_ALLOW` and `COFFER_EGRESS_DENY_PUBLIC`, read once at
    /// start; a value it cannot read is an error naming the variable.
    pub fn from_env() -> Result<Egress, String> {
        Egress::from_lookup(|name| std::env::var(name).ok())
    }

    /// The same settings read through `lookup` (the environment over a
    /// configuration file).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Egress, String> {
        let allow = lookup(ALLOW_ENV).unwrap_or_default();
        let deny_public = match lookup(DENY_PUBLIC_ENV).unwrap_or_default().trim() {
            "" | "false" | "0" => false,
            "true" | "1" => true,
            other => return Err(format!("{DENY_PUBLIC_ENV}: true or false, not {other:?}")),
        };
        Egress::parse(&allow, deny_public).map_err(|e| format!("{ALLOW_ENV}: {e}"))
    }

    /// A guard allowing the comma-separated `allow` entries.
    pub fn parse(allow: &str, deny_public: bool) -> Result<Egress, String> {
        let entries: Vec<&str> = allow.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        if entries.len() > ALLOW_ENTRIES_MAX {
            return Err(format!("at most {ALLOW_ENTRIES_MAX} entries"));
        }
        let allow = entries.into_iter().map(parse_entry).collect::<Result<_, _>>()?;
        Ok(Egress { allow, deny_public })
    }

    /// Checks what a URL says of its destination before any connection:
    /// the scheme, an IP literal with its port, and a host name allowed
    /// only on other ports. A host name's addresses are checked when it
    /// is resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("{} is not http or https", url.scheme())));
        }
        let port = url.port_or_known_default();
        let host = url.host_str().ok_or_else(|| Refused("the URL has no host".into()))?;
        // The URL parser wrote every IPv4 form (`0x7f.1`) as dotted decimal
        // and IPv6 in brackets.
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(ip, port),
            Err(_) => self.check_name_port(&normal_host(host), port),
        }
    }

    /// An address named in a URL, with the URL's port.
    fn check_ip(&self, ip: IpAddr, port: Option<u16>) -> Result<(), Refused> {
        let ip = unmapped(ip);
        let allowed = self.allow.iter().any(|a| a.covers_ip(ip) && (a.port.is_none() || a.port == port));
        match (allowed, self.deny_public, forbidden(ip)) {
            (true, _, _) => Ok(()),
            (false, true, _) => Err(Refused(format!("{ip} is not in {ALLOW_ENV}"))),
            (false, false, true) => Err(Refused(format!("{ip} is not a public address"))),
            (false, false, false) => Ok(()),
        }
    }

    fn check_name_port(&self, name: &str, port: Option<u16>) -> Result<(), Refused> {
        let mut entries = self.allow.iter().filter(|a| a.destination == Destination::Host(name.to_owned()));
        match entries.clone().next() {
            Some(_) if !entries.any(|a| a.port.is_none() || a.port == port) => {
                Err(Refused(format!("{name} is allowed on other ports only")))
            }
            _ => Ok(()),
        }
    }

    /// Whether the operator allows this host name, whatever it resolves to.
    pub fn allows_name(&self, name: &str) -> bool {
        let name = normal_host(name);
        self.allow.iter().any(|a| a.destination == Destination::Host(name.clone()))
    }

    /// Whether a resolved address of `name` may be connected to. The port
    /// is not known here: address entries with a port do not apply.
    fn admits_resolved(&self, name: &str, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        self.allows_name(name)
            || self.allow.iter().any(|a| a.port.is_none() && a.covers_ip(ip))
            || (!self.deny_public && !forbidden(ip))
    }

    /// A client whose every connection passes the guard, from `builder`
    /// (timeouts, user agent): the resolver, the redirect policy and no
    /// proxies are set here.
    pub fn client(&self, builder: reqwest::ClientBuilder, redirects: Redirects) -> Result<reqwest::Client, String> {
        // reqwest is built without a TLS provider of its own.
        crate::tls::install_crypto_provider();
        let guard = Arc::new(self.clone());
        let policy = match redirects {
            Redirects::None => reqwest::redirect::Policy::none(),
            Redirects::Checked => {
                let guard = Arc::clone(&guard);
                reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() > REDIRECTS_MAX {
                        return attempt.error(format!("more than {REDIRECTS_MAX} redirects"));
                    }
                    match guard.check_url(attempt.url()) {
                        Ok(()) => attempt.follow(),
                        Err(refused) => attempt.error(refused),
                    }
                })
            }
        };
        builder
            .no_proxy()
            .redirect(policy)
            .dns_resolver(GuardedResolver { guard })
            .build()
            .map_err(|e| format!("the HTTP client: {e}"))
    }
}

/// The guard's refusal behind a failed request, if that is why it failed.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

/// Resolves with the system's resolver, then drops refused addresses.
struct GuardedResolver {
    guard: Arc<Egress>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let admitted: Vec<SocketAddr> = resolved.filter(|a| guard.admits_resolved(&host, a.ip())).collect();
            if admitted.is_empty() {
                let refused = Refused(format!("{host} resolves to no address the gateway may reach"));
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(admitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Allowed {
    fn covers_ip(&self, ip: IpAddr) -> bool {
        match &self.destination {
            Destination::Block { network, prefix_len } => in_block(ip, *network, *prefix_len),
            Destination::Host(_) => false,
        }
    }
}

/// `host`, `host:port`, `ip`, `ip:port`, `[ipv6]:port`, `cidr`,
/// `cidr:port`, `[cidr]:port`.
fn parse_entry(entry: &str) -> Result<Allowed, String> {
    let bad = || format!("{entry:?} is not a host, IP address or CIDR block, with an optional :port");
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?),
        };
        return Ok(Allowed { destination: parse_block(inside).ok_or_else(bad)?, port });
    }
    if let Some(destination) = parse_block(entry) {
        return Ok(Allowed { destination, port: None });
    }
    let (head, port) = match entry.rsplit_once(':') {
        Some((head, port)) => (head, Some(port.parse::<u16>().map_err(|_| bad())?)),
        None => (entry, None),
    };
    let destination = match parse_block(head) {
        Some(block) => block,
        None => Destination::Host(check_host(head).ok_or_else(bad)?),
    };
    Ok(Allowed { destination, port })
}

/// An address (a block of one) or `address/prefix_len`.
fn parse_block(text: &str) -> Option<Destination> {
    let (ip, prefix_len) = match text.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
        None => {
            let ip = text.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let ip = unmapped(ip);
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    (prefix_len <= bits).then_some(Destination::Block { network: ip, prefix_len })
}

fn check_host(text: &str) -> Option<String> {
    let host = normal_host(text);
    let plain = host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    (!host.is_empty() && host.len() <= HOST_LEN_MAX_BYTES && plain).then_some(host)
}

fn normal_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is always this machine (RFC 6761: `localhost` and names
/// under it), so refused before any lookup.
pub fn is_local_name(name: &str) -> bool {
    let name = normal_host(name);
    name == "localhost" || name.ends_with(".localhost")
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as the IPv4 address.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn in_block(ip: IpAddr, network: IpAddr, prefix_len: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// IPv4 blocks that are not the public internet (RFC 6890 and successors):
/// this network, private, CGNAT, loopback, link-local, IETF protocol
/// assignments, documentation, 6to4 relays, benchmarking, multicast,
/// reserved and broadcast.
const V4_REFUSED: [(Ipv4Addr, u8); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 blocks that are not the public internet: unspecified, loopback,
/// discard, IETF protocol assignments (Teredo among them), documentation,
/// unique local, link-local, site-local and multicast.
const V6_REFUSED: [(Ipv6Addr, u8); 10] = [
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// Whether `ip` is outside the public internet. IPv6 addresses that carry
/// an IPv4 address (mapped `::ffff:0:0/96`, compatible `::/96`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that IPv4 address.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => V4_REFUSED.iter().any(|(net, len)| in_block(ip, IpAddr::V4(*net), *len)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => forbidden(IpAddr::V4(v4)),
            None => V6_REFUSED.iter().any(|(net, len)| in_block(ip, IpAddr::V6(*net), *len)),
        },
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    let in_96 = |prefix: u128| bits >> 32 == prefix >> 32;
    if in_96(0) || in_96(0xffff_0000_0000) || in_96(0x0064_ff9b_0000_0000_0000_0000_0000_0000) {
        return Some(low32);
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    (bits >> 112 == 0x2002).then(|| Ipv4Addr::from((bits >> 80) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classifier_refuses_every_non_public_form() {
        let refused = [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0:0",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "3fff::1",
        ];
        for ip in refused {
            assert!(forbidden(ip.parse().unwrap()), "{ip} must be refused");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.0.1",
            "11.0.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:808:808::",
        ];
        for ip in public {
            assert!(!forbidden(ip.parse().unwrap()), "{ip} is public");
        }
    }

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    #[test]
    fn urls_are_checked_by_address_port_and_allow_list() {
        let open = Egress::default();
        for bad in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
            "http://0.0.0.0/",
            "ftp://1.1.1.1/",
        ] {
            assert!(open.check_url(&url(bad)).is_err(), "{bad}");
        }
        assert!(open.check_url(&url("https://1.1.1.1/")).is_ok());
        assert!(open.check_url(&url("https://example.com/")).is_ok(), "names are checked when resolved");

        let some = Egress::parse("127.0.0.1:9000, 10.1.0.0/16, [::1]:7, sink.test:8443, Other.Test.", false).unwrap();
        assert!(some.check_url(&url("http://127.0.0.1:9000/")).is_ok());
        assert!(some.check_url(&url("http://[::ffff:127.0.0.1]:9000/")).is_ok());
        assert!(some.check_url(&url("http://127.0.0.1:9001/")).is_err(), "another port");
        assert!(some.check_url(&url("http://10.1.2.3/")).is_ok());
        assert!(some.check_url(&url("http://10.2.0.1/")).is_err());
        assert!(some.check_url(&url("http://[::1]:7/")).is_ok());
        assert!(some.check_url(&url("https://sink.test:8443/")).is_ok());
        assert!(some.check_url(&url("https://sink.test/")).is_err(), "a name allowed on another port");
        assert!(some.allows_name("other.test") && some.allows_name("OTHER.test."));
        assert!(some.admits_resolved("other.test", "127.0.0.1".parse().unwrap()));
        assert!(!some.admits_resolved("x.test", "127.0.0.1".parse().unwrap()), "a port entry needs the URL");
        assert!(some.admits_resolved("x.test", "10.1.0.5".parse().unwrap()));
        assert!(some.admits_resolved("x.test", "1.1.1.1".parse().unwrap()));

        let locked = Egress::parse("127.0.0.1", true).unwrap();
        assert!(locked.check_url(&url("https://1.1.1.1/")).is_err(), "public refused in lockdown");
        assert!(!locked.admits_resolved("example.com", "1.1.1.1".parse().unwrap()));
        assert!(locked.check_url(&url("http://127.0.0.1:1234/")).is_ok());
    }

    #[test]
    fn bad_allow_entries_are_refused() {
        for bad in ["10.0.0.0/33", "[::1", "[::1]x", "host:port", "a b", "127.0.0.1:99999", "::1/129"] {
            assert!(Egress::parse(bad, false).is_err(), "{bad}");
        }
        let many = vec!["a.test"; ALLOW_ENTRIES_MAX + 1].join(",");
        assert!(Egress::parse(&many, false).is_err());
        assert!(Egress::parse(" , ", false).unwrap().allow.is_empty());
        assert!(is_local_name("LocalHost.") && is_local_name("a.localhost") && !is_local_name("localhost.test"));
    }
}
