//! Every bound on what an agent or a client can create or hold open, in one
//! place: its name (the `limit` field of a `limit-exceeded` problem and the
//! label of `coffer_limits_hit_total`), its default and its environment
//! variable (`COFFER_LIMIT_<NAME>`).
//!
//! A limit that is hit answers `429 Too Many Requests` with `Retry-After` and
//! an RFC 9457 problem naming the limit (`Error::LimitExceeded`).

use std::time::Duration;

/// The bounds an outsider can run into. The order is the order of the
/// counters on `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Write requests per second of one key (a token bucket).
    WritesPerKey,
    /// Write requests per second of one agent, all its keys together.
    WritesPerAgent,
    /// Invoices of one agent that are open (unpaid and unexpired).
    InvoicesOpenPerAgent,
    /// Messages posted to one room per minute.
    RoomMessagesPerMinute,
    /// Rooms one agent is a member of.
    RoomsPerAgent,
    /// Members of one room.
    RoomMembers,
    /// Payments of one agent held for approval at once.
    HoldsPendingPerAgent,
    /// Sub-agents of one parent.
    SubagentsPerParent,
    /// Levels of a sub-agent tree below the operator's agent.
    TreeDepth,
    /// L402 challenges (each a new invoice) one client gets per minute.
    PaywallChallengesPerClient,
    /// Event and room streams (SSE, WebSocket) open for one key.
    StreamsPerKey,
    /// Event and room streams open in all.
    StreamsTotal,
    /// HTTP connections open from one client address.
    ConnectionsPerClient,
    /// HTTP connections open in all.
    ConnectionsTotal,
    /// Holds and escrows of one payer open at once (money waiting).
    EscrowsOpenPerAgent,
    /// Metered sessions of one payer open at once.
    SessionsOpenPerAgent,
    /// Live signing keys of one agent ([`SIGNING_KEYS_PER_AGENT_MAX`]).
    SigningKeysPerAgent,
    /// Signature nonces remembered at once, against replays
    /// ([`SIGNATURE_NONCES_MAX`]).
    SignatureNonces,
    /// Live NWC connections of one agent ([`NWC_CONNECTIONS_PER_AGENT_MAX`]).
    NwcConnectionsPerAgent,
    /// NWC requests of one connection being answered at once
    /// ([`NWC_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`]).
    NwcRequestsInFlight,
    /// Live link codes of one agent ([`LINK_CODES_PER_AGENT_MAX`]).
    LinkCodesPerAgent,
    /// Messenger users linked to one agent ([`BRIDGE_LINKS_PER_AGENT_MAX`]).
    BridgeLinksPerAgent,
}

/// The most live signing keys an agent holds: a few per device or runtime,
/// and room to rotate.
pub const SIGNING_KEYS_PER_AGENT_MAX: u32 = 16;
/// The most nonces of signed requests remembered at once (16 bytes and a
/// time each: about 50 MB at the bound). Each is kept for the signature's
/// validity window; at about 3,000 signed writes a second that window holds
/// about a million.
pub const SIGNATURE_NONCES_MAX: usize = 1_000_000;
/// The most live NWC connections an agent holds: one per tool or app that
/// uses its wallet, with room to rotate.
pub const NWC_CONNECTIONS_PER_AGENT_MAX: u32 = 16;
/// NWC requests of one connection answered at once; more are refused with
/// `RATE_LIMITED` (a client waits for its answers; a flood does not).
pub const NWC_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: u32 = 32;
/// Link codes of one agent waiting to be used: a code is for one person
/// about to link, and lives minutes.
pub const LINK_CODES_PER_AGENT_MAX: u32 = 8;
/// Messenger users linked to one agent (or to the operator).
pub const BRIDGE_LINKS_PER_AGENT_MAX: u32 = 16;

impl Limit {
    pub const ALL: [Limit; 22] = [
        Limit::WritesPerKey,
        Limit::WritesPerAgent,
        Limit::InvoicesOpenPerAgent,
        Limit::RoomMessagesPerMinute,
        Limit::RoomsPerAgent,
        Limit::RoomMembers,
        Limit::HoldsPendingPerAgent,
        Limit::SubagentsPerParent,
        Limit::TreeDepth,
        Limit::PaywallChallengesPerClient,
        Limit::StreamsPerKey,
        Limit::StreamsTotal,
        Limit::ConnectionsPerClient,
        Limit::ConnectionsTotal,
        Limit::EscrowsOpenPerAgent,
        Limit::SessionsOpenPerAgent,
        Limit::SigningKeysPerAgent,
        Limit::SignatureNonces,
        Limit::NwcConnectionsPerAgent,
        Limit::NwcRequestsInFlight,
        Limit::LinkCodesPerAgent,
        Limit::BridgeLinksPerAgent,
    ];

    /// The stable name: snake case, unit last.
    pub fn name(self) -> &'static str {
        match self {
            Limit::WritesPerKey => "writes_per_second_per_key",
            Limit::WritesPerAgent => "writes_per_second_per_agent",
            Limit::InvoicesOpenPerAgent => "invoices_open_per_agent",
            Limit::RoomMessagesPerMinute => "room_messages_per_minute",
            Limit::RoomsPerAgent => "rooms_per_agent",
            Limit::RoomMembers => "room_members",
            Limit::HoldsPendingPerAgent => "holds_pending_per_agent",
            Limit::SubagentsPerParent => "subagents_per_parent",
            Limit::TreeDepth => "tree_depth",
            Limit::PaywallChallengesPerClient => "paywall_challenges_per_minute_per_client",
            Limit::StreamsPerKey => "streams_per_key",
            Limit::StreamsTotal => "streams_total",
            Limit::ConnectionsPerClient => "connections_per_client",
            Limit::ConnectionsTotal => "connections_total",
            Limit::EscrowsOpenPerAgent => "escrows_open_per_agent",
            Limit::SessionsOpenPerAgent => "sessions_open_per_agent",
            Limit::SigningKeysPerAgent => "signing_keys_per_agent",
            Limit::SignatureNonces => "signature_nonces",
            Limit::NwcConnectionsPerAgent => "nwc_connections_per_agent",
            Limit::NwcRequestsInFlight => "nwc_requests_in_flight_per_connection",
            Limit::LinkCodesPerAgent => "link_codes_per_agent",
            Limit::BridgeLinksPerAgent => "bridge_links_per_agent",
        }
    }

    /// The position of its counter on `/metrics`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The configured bounds. `Limits::default()` are the defaults a gateway
/// runs with; `Limits::from_env()` reads `COFFER_LIMIT_<NAME>` over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub writes_per_second_per_key: u32,
    pub writes_per_second_per_agent: u32,
    pub invoices_open_per_agent: u32,
    pub room_messages_per_minute: u32,
    pub rooms_per_agent: u32,
    pub room_members: u32,
    pub holds_pending_per_agent: u32,
    pub subagents_per_parent: u32,
    pub tree_depth: u32,
    pub paywall_challenges_per_minute_per_client: u32,
    pub streams_per_key: u32,
    pub streams_total: u32,
    pub connections_per_client: u32,
    pub connections_total: u32,
    /// A connection that has not sent a whole request head by then is closed.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout_ms: u64,
    /// Connections kept back from `connections_total` for the operator
    /// and `/healthz`.
    pub connections_reserved: u32,
    /// Limits hit by one agent within a minute that count as one denial for
    /// its breaker (a runaway that keeps hitting limits trips it).
    pub limit_hits_per_breaker_denial: u32,
    pub escrows_open_per_agent: u32,
    pub sessions_open_per_agent: u32,
}

/// The deepest sub-agent tree a payment can walk: its policy chain is
/// checked level by level, and deeper trees are refused at creation.
pub const TREE_DEPTH_MAX: u32 = 8;

/// The largest request body the gateway accepts (HTTP and `/mcp`); larger
/// ones answer `413 body-too-large`. A bound of the gateway, not of one
/// edge: the error's text names it too.
pub const BODY_LEN_MAX_BYTES: usize = 64 * 1024;

impl Limits {
    /// The bounds a gateway runs with unless `COFFER_LIMIT_<NAME>` says
    /// otherwise; a constant, so that their relations are checked when coffer
    /// is compiled (below), not first when a gateway starts.
    pub const DEFAULT: Limits = Limits {
        writes_per_second_per_key: 1_000,
        writes_per_second_per_agent: 2_000,
        invoices_open_per_agent: 10_000,
        room_messages_per_minute: 600,
        rooms_per_agent: 1_000,
        room_members: crate::gateway::ROOM_MEMBERS_MAX as u32,
        holds_pending_per_agent: 100,
        subagents_per_parent: 1_000,
        tree_depth: TREE_DEPTH_MAX,
        paywall_challenges_per_minute_per_client: 120,
        streams_per_key: 8,
        streams_total: 1_024,
        connections_per_client: 512,
        connections_total: 8_192,
        header_read_timeout_ms: 10_000,
        idle_timeout_ms: 120_000,
        connections_reserved: 64,
        limit_hits_per_breaker_denial: 10,
        escrows_open_per_agent: 1_000,
        sessions_open_per_agent: 1_000,
    };
}

// The defaults pass `Limits::check` and `parse_bound`: a gateway started with
// no `COFFER_LIMIT_*` set always starts.
const _: () = assert!(Limits::DEFAULT.tree_depth <= TREE_DEPTH_MAX);
const _: () = assert!(Limits::DEFAULT.connections_reserved < Limits::DEFAULT.connections_total);
const _: () = assert!(Limits::DEFAULT.header_read_timeout_ms > 0);
const _: () = assert!(Limits::DEFAULT.idle_timeout_ms > 0);
const _: () = assert!(Limits::DEFAULT.header_read_timeout_ms <= BOUND_MAX as u64);
const _: () = assert!(Limits::DEFAULT.idle_timeout_ms <= BOUND_MAX as u64);
const _: () = {
    let l = Limits::DEFAULT;
    // The eighteen of `Limits::u32_fields`.
    let bounds: [u32; 18] = [
        l.writes_per_second_per_key,
        l.writes_per_second_per_agent,
        l.invoices_open_per_agent,
        l.room_messages_per_minute,
        l.rooms_per_agent,
        l.room_members,
        l.holds_pending_per_agent,
        l.subagents_per_parent,
        l.tree_depth,
        l.paywall_challenges_per_minute_per_client,
        l.streams_per_key,
        l.streams_total,
        l.connections_per_client,
        l.connections_total,
        l.connections_reserved,
        l.limit_hits_per_breaker_denial,
        l.escrows_open_per_agent,
        l.sessions_open_per_agent,
    ];
    let mut i = 0;
    while i < bounds.len() {
        assert!(bounds[i] >= 1);
        assert!(bounds[i] <= BOUND_MAX);
        i += 1;
    }
};
// `room_members` defaults to the gateway's own bound on a room, which the
// cast above keeps whole.
const _: () = assert!(crate::gateway::ROOM_MEMBERS_MAX <= BOUND_MAX as usize);
// A request head is read well within the time an idle keep-alive connection
// is kept: the idle timeout, not the header one, ends a quiet connection.
const _: () = assert!(Limits::DEFAULT.header_read_timeout_ms < Limits::DEFAULT.idle_timeout_ms);
// A part never allows more than the whole it belongs to: one key of an
// agent, one client of all connections, one key of all streams.
const _: () = assert!(Limits::DEFAULT.writes_per_second_per_key <= Limits::DEFAULT.writes_per_second_per_agent);
const _: () = assert!(Limits::DEFAULT.connections_per_client <= Limits::DEFAULT.connections_total);
const _: () = assert!(Limits::DEFAULT.streams_per_key <= Limits::DEFAULT.streams_total);

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

impl Limits {
    /// The defaults, each replaced by `COFFER_LIMIT_<NAME>` where set (for
    /// example `COFFER_LIMIT_INVOICES_OPEN_PER_AGENT=500`). A value that is
    /// not a whole number, or is out of range, is an error naming the
    /// variable: a gateway never starts on a limit it misread.
    pub fn from_env() -> Result<Limits, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Limits, String> {
        let mut limits = Limits::default();
        for (name, slot) in limits.u32_fields() {
            if let Some(value) = lookup(&env_name(name)) {
                *slot = parse_bound(name, &value)?;
            }
        }
        for (name, slot) in [
            ("header_read_timeout_ms", &mut limits.header_read_timeout_ms),
            ("idle_timeout_ms", &mut limits.idle_timeout_ms),
        ] {
            if let Some(value) = lookup(&env_name(name)) {
                *slot = u64::from(parse_bound(name, &value)?);
            }
        }
        limits.check()?;
        Ok(limits)
    }

    /// Every setting's name (`COFFER_LIMIT_<NAME>` upper-cased): what a
    /// configuration file's `[limits]` table may hold.
    pub fn names() -> Vec<&'static str> {
        let mut limits = Limits::default();
        let mut names: Vec<&'static str> = limits.u32_fields().iter().map(|(name, _)| *name).collect();
        names.extend(["header_read_timeout_ms", "idle_timeout_ms"]);
        names
    }

    fn u32_fields(&mut self) -> [(&'static str, &mut u32); 18] {
        [
            ("writes_per_second_per_key", &mut self.writes_per_second_per_key),
            ("writes_per_second_per_agent", &mut self.writes_per_second_per_agent),
            ("invoices_open_per_agent", &mut self.invoices_open_per_agent),
            ("room_messages_per_minute", &mut self.room_messages_per_minute),
            ("rooms_per_agent", &mut self.rooms_per_agent),
            ("room_members", &mut self.room_members),
            ("holds_pending_per_agent", &mut self.holds_pending_per_agent),
            ("subagents_per_parent", &mut self.subagents_per_parent),
            ("tree_depth", &mut self.tree_depth),
            ("paywall_challenges_per_minute_per_client", &mut self.paywall_challenges_per_minute_per_client),
            ("streams_per_key", &mut self.streams_per_key),
            ("streams_total", &mut self.streams_total),
            ("connections_per_client", &mut self.connections_per_client),
            ("connections_total", &mut self.connections_total),
            ("connections_reserved", &mut self.connections_reserved),
            ("limit_hits_per_breaker_denial", &mut self.limit_hits_per_breaker_denial),
            ("escrows_open_per_agent", &mut self.escrows_open_per_agent),
            ("sessions_open_per_agent", &mut self.sessions_open_per_agent),
        ]
    }

    /// Relations between the bounds that must hold.
    pub fn check(&self) -> Result<(), String> {
        if self.tree_depth > TREE_DEPTH_MAX {
            return Err(format!(
                "{}: at most {TREE_DEPTH_MAX} (payments walk at most that many levels)",
                env_name("tree_depth")
            ));
        }
        if self.connections_reserved >= self.connections_total {
            return Err(format!(
                "{} must be below {}",
                env_name("connections_reserved"),
                env_name("connections_total")
            ));
        }
        if self.header_read_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return Err("timeouts must be above 0 ms".into());
        }
        Ok(())
    }

    /// The header-read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// `invoices_open_per_agent` → `COFFER_LIMIT_INVOICES_OPEN_PER_AGENT`.
pub fn env_name(name: &str) -> String {
    format!("COFFER_LIMIT_{}", name.to_ascii_uppercase())
}

/// The largest value of any `COFFER_LIMIT_*`.
const BOUND_MAX: u32 = 1_000_000_000;

/// A bound is a whole number from 1 to a billion: 0 would refuse everything
/// (an operator who wants that has the kill switch).
fn parse_bound(name: &str, value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=BOUND_MAX).contains(&n) => Ok(n),
        _ => Err(format!("{}: a whole number from 1 to {BOUND_MAX}, not {value:?}", env_name(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_follow_the_order() {
        let mut names: Vec<_> = Limit::ALL.iter().map(|l| l.name()).collect();
        for (i, limit) in Limit::ALL.iter().enumerate() {
            assert_eq!(limit.index(), i);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Limit::ALL.len());
    }

    #[test]
    fn the_environment_overrides_a_default_and_bad_values_name_the_variable() {
        let limits =
            Limits::from_lookup(|name| (name == "COFFER_LIMIT_INVOICES_OPEN_PER_AGENT").then(|| "500".to_owned()))
                .unwrap();
        assert_eq!(limits.invoices_open_per_agent, 500);
        assert_eq!(limits.rooms_per_agent, Limits::default().rooms_per_agent);
        for bad in ["0", "-1", "ten", "4294967296"] {
            let err = Limits::from_lookup(|name| (name == "COFFER_LIMIT_ROOMS_PER_AGENT").then(|| bad.to_owned()))
                .unwrap_err();
            assert!(err.contains("COFFER_LIMIT_ROOMS_PER_AGENT"), "{err}");
        }
        let err = Limits::from_lookup(|name| (name == "COFFER_LIMIT_TREE_DEPTH").then(|| "9".to_owned())).unwrap_err();
        assert!(err.contains("TREE_DEPTH"), "{err}");
    }
}
