//! Compact JSON at rest: the outbox's event data and the audit records'
//! bodies are compact JSON texts (`serde_json::to_string`), and most of
//! their bytes are key names, ids (`agt_` and 28 hex digits) and hashes in
//! hex. [`pack`] writes such a text as a token stream a third its size;
//! [`unpack`] gives back the very same text, byte for byte (the audit
//! chain hashes the text, so nothing may be reordered or reformatted).
//!
//! A packed text starts with [`PACKED_V1`], a byte no JSON text starts
//! with; anything else is a text stored as it is (rows written before
//! packing, or a text [`pack`] could not give back exactly). The one text
//! that does start with that byte (not JSON, but a `&str` all the same) is
//! stored behind [`PACKED_V1`] and a verbatim tag.
//!
//! The token stream: `{` `}` `[` `]`, `true` `false` `null` are a tag
//! each; `,` and `:` are implied by the structure. Integers are varints
//! (LEB128); other numbers keep their text. A string is a byte naming an
//! entry of [`DICT`], or a prefix and a hex tail stored as bytes, or its
//! raw text (escapes as written).
//!
//! Pure: no I/O, no allocation past the output ([`pack`] checks its
//! output by decoding it against the text, without building a copy).

/// The first byte of a packed text.
pub const PACKED_V1: u8 = 0x01;

pub use super::PackError;

// Tags. Bytes below `DICT_TAG_FIRST` are structure; the rest name DICT
// entries. Right after PACKED_V1, VERBATIM says the rest is the text.
const VERBATIM: u8 = 0x00;
const OBJECT_OPEN: u8 = 0x02;
const OBJECT_CLOSE: u8 = 0x03;
const ARRAY_OPEN: u8 = 0x04;
const ARRAY_CLOSE: u8 = 0x05;
const TRUE: u8 = 0x06;
const FALSE: u8 = 0x07;
const NULL: u8 = 0x08;
/// A non-negative integer: a varint.
const UINT: u8 = 0x09;
/// A negative integer: a varint of its magnitude (never 0).
const NINT: u8 = 0x0A;
/// Any other number: a varint length and its text.
const NUM: u8 = 0x0B;
/// A string: a varint length and its raw text.
const STR: u8 = 0x0C;
/// A string ending in hex: its prefix (a DICT byte or `RAW_PREFIX`), a
/// varint count of bytes, the bytes (two lowercase hex digits each).
const HEX_TAIL: u8 = 0x0D;
/// A hex tail's prefix not in DICT: a varint length and its raw text.
const RAW_PREFIX: u8 = 0x0E;
const DICT_TAG_FIRST: u8 = 0x20;

const _: () = assert!(PACKED_V1 < DICT_TAG_FIRST && VERBATIM < DICT_TAG_FIRST);
const _: () = assert!(RAW_PREFIX < DICT_TAG_FIRST);
const _: () = assert!(DICT.len() <= 256 - DICT_TAG_FIRST as usize);

/// Objects and arrays nest at most this deep; deeper texts stay as they
/// are (the decoder's stack is an array this long).
const DEPTH_MAX: usize = 64;
/// A string's hex tail is packed from this many digits on: shorter ones
/// save too little to pay for the tag and the counts.
const HEX_TAIL_MIN_DIGITS: usize = 16;
/// A u64 in LEB128 takes at most this many bytes.
const VARINT_MAX_BYTES: usize = 10;
/// A u64 in decimal takes at most this many digits.
const U64_MAX_DIGITS: usize = 20;

const _: () = assert!(HEX_TAIL_MIN_DIGITS.is_multiple_of(2) && HEX_TAIL_MIN_DIGITS > 0);
const _: () = assert!(u64::MAX.ilog10() as usize + 1 == U64_MAX_DIGITS);
const _: () = assert!(u64::BITS.div_ceil(7) as usize == VARINT_MAX_BYTES);

/// Strings common in event data and audit bodies: keys, values, deny
/// codes, actions, id prefixes. A stored row names an entry by its index,
/// so entries may only ever be appended, never reordered or removed.
const DICT: &[&str] = &[
    "",
    // Keys of event data and audit bodies.
    "amount_msat",
    "fee_msat",
    "key_id",
    "payee_agent_id",
    "payer_agent_id",
    "payment_hash",
    "payment_id",
    "purpose",
    "at_ms",
    "action",
    "actor",
    "agent_id",
    "payee",
    "rule",
    "detail",
    "status",
    "kind",
    "transfer_id",
    "debit",
    "credit",
    "memo",
    "expires_at_ms",
    "name",
    "parent_id",
    "scope",
    "room_id",
    "from",
    "policy",
    "reason",
    "code",
    "message",
    "halted",
    "members",
    "member",
    "message_id",
    "sender",
    "settings",
    "webhook_id",
    "types",
    "failures",
    "paused",
    "refunded_msat",
    "refund_id",
    "charge_id",
    "returned_msat",
    "budget",
    "threshold_percent",
    "spent_msat",
    "limit_msat",
    "window_start_ms",
    "resets_at_ms",
    "fee_limit_msat",
    "approval_id",
    "deadline_at_ms",
    "on_timeout",
    "resolved_by",
    "session_id",
    "max_msat",
    "charged_msat",
    "remaining_msat",
    "closed_by",
    // Id prefixes (before a hex tail).
    "agt_",
    "key_",
    "pay_",
    "agent:agt_",
    "node:",
    "chg_",
    "ref_",
    "ses_",
    "whk",
    "whk_",
    "nwc_",
    "cli_",
    "room_",
    "sk_",
    "inst",
    "inst_",
    "out_",
    // Values.
    "allowed",
    "approval-required",
    "operator",
    "system",
    "treasury",
    "outside",
    "fees",
    "mint",
    "fund",
    "read",
    "receive",
    "spend",
    "text",
    "payment_request",
    "release",
    "refund",
    "pending",
    "succeeded",
    "failed",
    "held",
    "approved",
    "denied",
    "expired",
    "accepted",
    "rejected",
    "cancelled",
    "disputed",
    "released",
    "refunded",
    "open",
    "closed",
    "paid",
    "escrow",
    "hold",
    "rolling",
    "calendar",
    "lifetime",
    "day",
    "week",
    "month",
    // Deny and trip codes.
    "budget-exceeded",
    "amount-too-large",
    "rate-limited",
    "policy-expired",
    "payee-not-allowed",
    "fiat-rate-unavailable",
    "spend-burst",
    "too-many-denials",
    "payee-concentration",
    "agent-frozen",
    "gateway-halted",
    "insufficient-balance",
    "self-payment",
    // Event kinds: a copy of `events::KINDS` as it stood when packing came
    // in, on purpose: this list is frozen, that one grows.
    "agent.created",
    "key.created",
    "key.revoked",
    "transfer.mint",
    "transfer.fund",
    "invoice.created",
    "invoice.paid",
    "invoice.expired",
    "payment.pending",
    "payment.succeeded",
    "payment.failed",
    "payment.denied",
    "payment.held",
    "approval.decided",
    "incoming.accepted",
    "incoming.rejected",
    "policy.updated",
    "agent.frozen",
    "agent.unfrozen",
    "breaker.tripped",
    "breaker.halted",
    "room.created",
    "room.member_added",
    "room.member_removed",
    "message.posted",
    "chat.settings_updated",
    "webhook.created",
    "webhook.paused",
    "webhook.resumed",
    "webhook.deleted",
    "invoice.accepted",
    "invoice.cancelled",
    "payment.escrowed",
    "payment.disputed",
    "payment.released",
    "payment.refunded",
    "session.opened",
    "session.charged",
    "session.closed",
    "budget.warning",
    // Audit actions that are no event kind.
    "payment.allowed",
    "deposit.credited",
    "agent.funded",
    "approval.approved",
    "approval.denied",
    "approval.expired",
    "session.expired",
    "session.denied",
    "hold.accepted",
    "hold.cancelled",
    "hold.settled",
    "escrow.disputed",
    "escrow.released",
    "escrow.refunded",
    "bridge.linked",
    "bridge.unlinked",
    "room.bridged",
    "signing_key.created",
    "signing_key.revoked",
    "nwc_connection.created",
    "nwc_connection.revoked",
    // Policy keys.
    "budgets",
    "window",
    "limit",
    "currency",
    "amount",
    "max_payment_msat",
    "payees",
    "approval_above_msat",
    "max_payments_per_minute",
    "breaker",
    "domains",
    "expires_at",
    "lifetime_msat",
    "max_denials",
    "deny",
    "allow",
    "l402",
    "max_price_msat",
];

/// `text` packed, or its bytes as they are when it does not pack to
/// exactly itself.
#[must_use]
pub fn pack(text: &str) -> Vec<u8> {
    if let Some(packed) = Encoder::encode(text)
        && packed.len() < text.len()
        && decodes_to(&packed, text)
    {
        return packed;
    }
    as_is(text)
}

/// The text `stored` holds, packed or not.
///
/// # Errors
///
/// [`PackError::Corrupt`] for a packed value that does not decode,
/// [`PackError::NotUtf8`] for a value stored as it is that is not UTF-8.
pub fn unpack(stored: &[u8]) -> Result<String, PackError> {
    match stored {
        [PACKED_V1, VERBATIM, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|_| PackError::Corrupt("a verbatim text is not UTF-8"))
        }
        [PACKED_V1, tokens @ ..] => {
            let mut out = Collect(Vec::with_capacity(tokens.len().saturating_mul(3)));
            decode(tokens, &mut out)?;
            String::from_utf8(out.0).map_err(|_| PackError::Corrupt("a raw string is not UTF-8"))
        }
        _ => String::from_utf8(stored.to_vec()).map_err(|_| PackError::NotUtf8),
    }
}

/// `text` stored as it is; behind a verbatim tag when it would read as
/// packed.
fn as_is(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&PACKED_V1) {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&[PACKED_V1, VERBATIM]);
    out.extend_from_slice(bytes);
    out
}

/// Whether `packed` decodes to exactly `text`.
fn decodes_to(packed: &[u8], text: &str) -> bool {
    let Some(tokens) = packed.strip_prefix(&[PACKED_V1]) else { return false };
    let mut want = Compare(text.as_bytes());
    decode(tokens, &mut want).is_ok() && want.0.is_empty()
}

/// The tag of a dictionary entry: a hash lookup, since every string of
/// every event is looked up on the store's one writer thread.
fn dict_tag(raw: &[u8]) -> Option<u8> {
    static TAGS: std::sync::OnceLock<std::collections::HashMap<&'static [u8], u8>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let tag = |index: usize| u8::try_from(index).ok().and_then(|i| i.checked_add(DICT_TAG_FIRST));
        DICT.iter().enumerate().filter_map(|(index, entry)| Some((entry.as_bytes(), tag(index)?))).collect()
    });
    tags.get(raw).copied()
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7F) as u8 | 0x80);
        value >>= 7;
    }
    // Below 0x80 now: the mask drops nothing.
    out.push((value & 0x7F) as u8);
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    push_varint(out, len as u64);
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The value of a lowercase hex digit.
fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// Compact JSON to tokens; `None` for any text that is not compact JSON
/// as this tokenizer reads it (the text is then stored as it is).
struct Encoder<'a> {
    text: &'a [u8],
    at: usize,
    out: Vec<u8>,
}

impl Encoder<'_> {
    fn encode(text: &str) -> Option<Vec<u8>> {
        let mut encoder = Encoder { text: text.as_bytes(), at: 0, out: Vec::with_capacity(text.len() / 2 + 1) };
        encoder.out.push(PACKED_V1);
        encoder.value(0)?;
        (encoder.at == encoder.text.len()).then_some(encoder.out)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// One value; `depth` containers are open around it.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b't' => self.literal("true", TRUE),
            b'f' => self.literal("false", FALSE),
            b'n' => self.literal("null", NULL),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, tag: u8) -> Option<()> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word.as_bytes()).then_some(())?;
        self.at = end;
        self.out.push(tag);
        Some(())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        (depth < DEPTH_MAX).then_some(())?;
        self.at += 1;
        self.out.push(OBJECT_OPEN);
        if self.expect(b'}').is_none() {
            loop {
                (self.peek()? == b'"').then_some(())?;
                self.string()?;
                self.expect(b':')?;
                self.value(depth + 1)?;
                if self.expect(b',').is_none() {
                    self.expect(b'}')?;
                    break;
                }
            }
        }
        self.out.push(OBJECT_CLOSE);
        Some(())
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        (depth < DEPTH_MAX).then_some(())?;
        self.at += 1;
        self.out.push(ARRAY_OPEN);
        if self.expect(b']').is_none() {
            loop {
                self.value(depth + 1)?;
                if self.expect(b',').is_none() {
                    self.expect(b']')?;
                    break;
                }
            }
        }
        self.out.push(ARRAY_CLOSE);
        Some(())
    }

    /// A string: its raw content, escapes as written, up to the first
    /// quote no backslash escapes.
    fn string(&mut self) -> Option<()> {
        let start = self.at + 1;
        let mut at = start;
        loop {
            match *self.text.get(at)? {
                b'"' => break,
                b'\\' => at += 2,
                _ => at += 1,
            }
        }
        self.at = at + 1;
        self.string_token(&self.text[start..at]);
        Some(())
    }

    fn string_token(&mut self, raw: &[u8]) {
        if let Some(tag) = dict_tag(raw) {
            self.out.push(tag);
            return;
        }
        let hex_digits = raw.iter().rev().take_while(|b| hex_digit(**b).is_some()).count() & !1;
        if hex_digits >= HEX_TAIL_MIN_DIGITS {
            let (prefix, hex) = raw.split_at(raw.len() - hex_digits);
            self.hex_tail(prefix, hex);
            return;
        }
        self.out.push(STR);
        push_len(&mut self.out, raw.len());
        self.out.extend_from_slice(raw);
    }

    fn hex_tail(&mut self, prefix: &[u8], hex: &[u8]) {
        self.out.push(HEX_TAIL);
        if let Some(tag) = dict_tag(prefix) {
            self.out.push(tag);
        } else {
            self.out.push(RAW_PREFIX);
            push_len(&mut self.out, prefix.len());
            self.out.extend_from_slice(prefix);
        }
        push_len(&mut self.out, hex.len() / 2);
        for pair in hex.chunks_exact(2) {
            // Both are hex digits: string_token counted them.
            let high = hex_digit(pair[0]).unwrap_or(0);
            let low = hex_digit(pair[1]).unwrap_or(0);
            self.out.push(high << 4 | low);
        }
    }

    /// A number as JSON writes it: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        let negative = self.expect(b'-').is_some();
        if self.expect(b'0').is_none() {
            matches!(self.peek()?, b'1'..=b'9').then_some(())?;
            self.digits();
        }
        let integer_end = self.at;
        if self.expect(b'.').is_some() {
            (self.digits() > 0).then_some(())?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            (self.digits() > 0).then_some(())?;
        }
        self.number_token(start, integer_end, negative);
        Some(())
    }

    fn digits(&mut self) -> usize {
        let count = self.text[self.at..].iter().take_while(|b| b.is_ascii_digit()).count();
        self.at += count;
        count
    }

    /// An integer that fits a varint as UINT or NINT, anything else
    /// (fractions, exponents, huge, `-0`) as its text.
    fn number_token(&mut self, start: usize, integer_end: usize, negative: bool) {
        let raw = &self.text[start..self.at];
        let magnitude_text = &self.text[start + usize::from(negative)..integer_end];
        let magnitude = std::str::from_utf8(magnitude_text).ok().and_then(|t| t.parse::<u64>().ok());
        match magnitude {
            Some(m) if integer_end == self.at && !(negative && m == 0) => {
                self.out.push(if negative { NINT } else { UINT });
                push_varint(&mut self.out, m);
            }
            _ => {
                self.out.push(NUM);
                push_len(&mut self.out, raw.len());
                self.out.extend_from_slice(raw);
            }
        }
    }
}

/// Where decoded text goes: collected for `unpack`, or compared with the
/// text for `pack`'s check.
trait Sink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), PackError>;
}

struct Collect(Vec<u8>);

impl Sink for Collect {
    fn put(&mut self, bytes: &[u8]) -> Result<(), PackError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// The text still to match.
struct Compare<'a>(&'a [u8]);

impl Sink for Compare<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), PackError> {
        self.0 = self.0.strip_prefix(bytes).ok_or(PackError::Corrupt("differs from the text"))?;
        Ok(())
    }
}

/// What the decoder expects next at one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// The one top-level value.
    Root,
    /// The top-level value is complete: only the end may follow.
    Done,
    ArrayFirst,
    ArrayNext,
    KeyFirst,
    KeyNext,
    Value,
}

/// The open levels: the root and at most [`DEPTH_MAX`] containers.
struct Stack {
    frames: [Frame; DEPTH_MAX + 1],
    len: usize,
}

impl Stack {
    fn top(&self) -> Frame {
        self.frames[self.len - 1]
    }

    fn set_top(&mut self, frame: Frame) {
        self.frames[self.len - 1] = frame;
    }

    fn push(&mut self, frame: Frame) -> Result<(), PackError> {
        let slot = self.frames.get_mut(self.len).ok_or(PackError::Corrupt("nests too deep"))?;
        *slot = frame;
        self.len += 1;
        Ok(())
    }

    /// Closes a container; the root is never closed.
    fn pop(&mut self) {
        self.len -= 1;
    }
}

/// Bytes of a packed value, read with every length checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, PackError> {
        let (&first, rest) = self.0.split_first().ok_or(PackError::Corrupt("ends early"))?;
        self.0 = rest;
        Ok(first)
    }

    fn bytes(&mut self, len: u64) -> Result<&'a [u8], PackError> {
        let len = usize::try_from(len).map_err(|_| PackError::Corrupt("a length is too long"))?;
        if len > self.0.len() {
            return Err(PackError::Corrupt("a length runs past the end"));
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    fn varint(&mut self) -> Result<u64, PackError> {
        let mut value: u64 = 0;
        let mut shift: u32 = 0;
        for _ in 0..VARINT_MAX_BYTES {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7F);
            // The tenth byte holds the one bit left of 64.
            if shift == 63 && bits > 1 {
                return Err(PackError::Corrupt("a varint overflows"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
        Err(PackError::Corrupt("a varint is too long"))
    }

    fn counted(&mut self) -> Result<&'a [u8], PackError> {
        let len = self.varint()?;
        self.bytes(len)
    }
}

/// Writes the text `tokens` (a packed value past [`PACKED_V1`]) stands for.
/// Every step reads at least one byte, so it ends.
fn decode(tokens: &[u8], out: &mut impl Sink) -> Result<(), PackError> {
    let mut reader = Reader(tokens);
    let mut stack = Stack { frames: [Frame::Root; DEPTH_MAX + 1], len: 1 };
    while stack.top() != Frame::Done {
        step(&mut reader, &mut stack, out)?;
    }
    if reader.0.is_empty() { Ok(()) } else { Err(PackError::Corrupt("trailing bytes")) }
}

fn step(reader: &mut Reader<'_>, stack: &mut Stack, out: &mut impl Sink) -> Result<(), PackError> {
    let tag = reader.byte()?;
    let top = stack.top();
    match top {
        Frame::KeyFirst | Frame::KeyNext => {
            if tag == OBJECT_CLOSE {
                stack.pop();
                return out.put(b"}");
            }
            if top == Frame::KeyNext {
                out.put(b",")?;
            }
            string(tag, reader, out).map_err(|_| PackError::Corrupt("a key is not a string"))?;
            stack.set_top(Frame::Value);
            out.put(b":")
        }
        Frame::ArrayFirst | Frame::ArrayNext => {
            if tag == ARRAY_CLOSE {
                stack.pop();
                return out.put(b"]");
            }
            if top == Frame::ArrayNext {
                out.put(b",")?;
            }
            stack.set_top(Frame::ArrayNext);
            value(tag, reader, stack, out)
        }
        Frame::Value => {
            stack.set_top(Frame::KeyNext);
            value(tag, reader, stack, out)
        }
        Frame::Root => {
            stack.set_top(Frame::Done);
            value(tag, reader, stack, out)
        }
        Frame::Done => Err(PackError::Corrupt("trailing bytes")),
    }
}

/// A value that starts with `tag`; a container only opens here, its
/// members follow in later steps.
fn value(tag: u8, reader: &mut Reader<'_>, stack: &mut Stack, out: &mut impl Sink) -> Result<(), PackError> {
    match tag {
        OBJECT_OPEN => {
            stack.push(Frame::KeyFirst)?;
            out.put(b"{")
        }
        ARRAY_OPEN => {
            stack.push(Frame::ArrayFirst)?;
            out.put(b"[")
        }
        TRUE => out.put(b"true"),
        FALSE => out.put(b"false"),
        NULL => out.put(b"null"),
        UINT => put_decimal(reader.varint()?, out),
        NINT => {
            let magnitude = reader.varint()?;
            if magnitude == 0 {
                return Err(PackError::Corrupt("a negative zero integer"));
            }
            out.put(b"-")?;
            put_decimal(magnitude, out)
        }
        NUM => out.put(reader.counted()?),
        _ => string(tag, reader, out),
    }
}

fn put_decimal(mut value: u64, out: &mut impl Sink) -> Result<(), PackError> {
    let mut digits = [0u8; U64_MAX_DIGITS];
    let mut start = U64_MAX_DIGITS;
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put(&digits[start..])
}

/// A string token, quotes around.
fn string(tag: u8, reader: &mut Reader<'_>, out: &mut impl Sink) -> Result<(), PackError> {
    let raw = match tag {
        STR => reader.counted()?,
        HEX_TAIL => return hex_tail(reader, out),
        _ => dict_entry(tag)?,
    };
    out.put(b"\"")?;
    out.put(raw)?;
    out.put(b"\"")
}

fn dict_entry(tag: u8) -> Result<&'static [u8], PackError> {
    let index = tag.checked_sub(DICT_TAG_FIRST).ok_or(PackError::Corrupt("an unknown tag"))?;
    DICT.get(usize::from(index)).map(|entry| entry.as_bytes()).ok_or(PackError::Corrupt("an unknown dictionary entry"))
}

fn hex_tail(reader: &mut Reader<'_>, out: &mut impl Sink) -> Result<(), PackError> {
    let prefix = match reader.byte()? {
        RAW_PREFIX => reader.counted()?,
        tag => dict_entry(tag)?,
    };
    let tail = reader.counted()?;
    out.put(b"\"")?;
    out.put(prefix)?;
    for byte in tail {
        let pair = [HEX_DIGITS[usize::from(byte >> 4)], HEX_DIGITS[usize::from(byte & 0x0F)]];
        out.put(&pair)?;
    }
    out.put(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    const EVENT: &str = r#"{"amount_msat":1000,"fee_msat":0,"key_id":"key_01a25195570f8aedca62b24ee76c","payee_agent_id":"agt_01a251955710594bce7e1748d9c9","payer_agent_id":"agt_01a25195570f9feefa0e71c6a2bb","payment_hash":"45d007be744a89e5feb8ccee5b4680da23d9b0e3a02efdd98baf0375f198d587","payment_id":"pay_01a25195598ab1a7c70ae3f19fb7","purpose":""}"#;
    const AUDIT: &str = r#"{"at_ms":1796665072010,"action":"payment.allowed","actor":"agt_01a25195570f9feefa0e71c6a2bb","key_id":"key_01a25195570f8aedca62b24ee76c","agent_id":"agt_01a25195570f9feefa0e71c6a2bb","amount_msat":1000,"payee":"agent:agt_01a251955710594bce7e1748d9c9","purpose":"","rule":"allowed"}"#;

    /// EVENT packed. If this fails you reordered DICT: append only (rows
    /// already stored name its entries by index).
    const EVENT_PACKED: &[u8] = &[
        1, 2, 33, 9, 232, 7, 34, 9, 0, 35, 13, 95, 14, 1, 162, 81, 149, 87, 15, 138, 237, 202, 98, 178, 78, 231, 108,
        36, 13, 94, 14, 1, 162, 81, 149, 87, 16, 89, 75, 206, 126, 23, 72, 217, 201, 37, 13, 94, 14, 1, 162, 81, 149,
        87, 15, 159, 238, 250, 14, 113, 198, 162, 187, 38, 13, 32, 32, 69, 208, 7, 190, 116, 74, 137, 229, 254, 184,
        204, 238, 91, 70, 128, 218, 35, 217, 176, 227, 160, 46, 253, 217, 139, 175, 3, 117, 241, 152, 213, 135, 39, 13,
        96, 14, 1, 162, 81, 149, 89, 138, 177, 167, 199, 10, 227, 241, 159, 183, 40, 32, 3,
    ];
    /// `DICT`'s length when `EVENT_PACKED` was pinned; it may only grow.
    const DICT_LEN_PINNED: usize = 211;

    fn round_trips(text: &str) -> Vec<u8> {
        let packed = pack(text);
        assert_eq!(unpack(&packed).as_deref(), Ok(text), "packed {packed:?}");
        packed
    }

    #[test]
    fn examples_pack_to_a_third() {
        for text in [EVENT, AUDIT] {
            let packed = round_trips(text);
            assert_eq!(packed[0], PACKED_V1);
            assert!(packed.len() * 10 <= text.len() * 4, "{} of {} bytes", packed.len(), text.len());
        }
    }

    #[test]
    fn dictionary_is_append_only() {
        // If this fails you reordered DICT: append only.
        assert_eq!(pack(EVENT), EVENT_PACKED);
        assert_eq!(unpack(EVENT_PACKED).as_deref(), Ok(EVENT));
        assert!(DICT.len() >= DICT_LEN_PINNED);
        assert_eq!(DICT[..4], ["", "amount_msat", "fee_msat", "key_id"]);
    }

    #[test]
    fn dictionary_entries_are_distinct_raw_strings() {
        for (index, entry) in DICT.iter().enumerate() {
            assert!(!entry.contains(['"', '\\']), "{entry}");
            assert_eq!(DICT.iter().position(|e| e == entry), Some(index), "{entry} twice");
        }
    }

    #[test]
    fn truncated_is_corrupt() {
        for len in 1..EVENT_PACKED.len() {
            assert!(matches!(unpack(&EVENT_PACKED[..len]), Err(PackError::Corrupt(_))), "{len}");
        }
        let mut longer = EVENT_PACKED.to_vec();
        longer.push(NULL);
        assert_eq!(unpack(&longer), Err(PackError::Corrupt("trailing bytes")));
    }

    #[test]
    fn corrupt_values() {
        let cases: &[&[u8]] = &[
            &[PACKED_V1, OBJECT_OPEN, UINT, 1, OBJECT_CLOSE],
            &[PACKED_V1, ARRAY_OPEN, OBJECT_CLOSE],
            &[PACKED_V1, UINT, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
            &[PACKED_V1, UINT, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[PACKED_V1, STR, 5, b'a'],
            &[PACKED_V1, STR, 2, 0xC3, 0x28],
            &[PACKED_V1, NINT, 0],
            &[PACKED_V1, 0xFF],
            &[PACKED_V1, 0x1F],
            &[PACKED_V1, HEX_TAIL, NULL, 1, 0],
        ];
        for stored in cases {
            assert!(matches!(unpack(stored), Err(PackError::Corrupt(_))), "{stored:?}");
        }
        assert_eq!(
            unpack(&[PACKED_V1, UINT, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).as_deref(),
            Ok("18446744073709551615")
        );
        assert_eq!(unpack(&[0xFF]), Err(PackError::NotUtf8));
        let deep = [vec![PACKED_V1], vec![ARRAY_OPEN; DEPTH_MAX + 1]].concat();
        assert_eq!(unpack(&deep), Err(PackError::Corrupt("nests too deep")));
    }

    #[test]
    fn texts_that_are_not_compact_json_stay_as_they_are() {
        let texts = [
            "",
            "{\"a\": 1}",
            " {}",
            "{} ",
            "01",
            "[01]",
            "-0",
            "[-0,-0.0,0e0]",
            "18446744073709551616",
            "[18446744073709551616,-18446744073709551616,-18446744073709551615]",
            "[1.5e10,-2E-3,1e+2]",
            "{\"a\":1,}",
            "[1,]",
            "{\"a\"}",
            "{1:2}",
            "\"abc",
            "\"abc\\\"",
            "tru",
            "nul",
            "[true,false,null,\"\"]",
            "\u{1}",
            "\u{1}{\"amount_msat\":1000,\"fee_msat\":0,\"key_id\":1}",
            "\"\\u00e9\\\"\\\\\\n0123456789abcdef0123\"",
            "\"\\u0123456789abcdef0123456789\"",
            "\"0123456789abcdef\"",
            "\"0123456789abcde\"",
            "\"x0123456789abcdef0\"",
        ];
        for text in texts {
            round_trips(text);
        }
        assert_eq!(pack("\u{1}"), [PACKED_V1, VERBATIM, 1]);
        assert_eq!(pack("{\"a\": 1}"), b"{\"a\": 1}");
    }

    #[test]
    fn nesting_past_the_bound_stays_as_it_is() {
        let nested = |depth: usize| format!("{}\"amount_msat\"{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = nested(DEPTH_MAX);
        assert_eq!(pack(&deepest)[0], PACKED_V1);
        round_trips(&deepest);
        let too_deep = nested(DEPTH_MAX + 1);
        assert_eq!(pack(&too_deep), too_deep.as_bytes());
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop::sample::select(&DICT[1..62]).prop_map(str::to_owned)
    }

    fn string_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z_.-]{0,12}",
            "(agt_|key_|pay_|agent:agt_|node:|whk|x|)[0-9a-f]{10,70}",
            "[0-9a-fA-F]{0,40}",
            "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀a0]{0,12}",
            prop::sample::select(DICT).prop_map(str::to_owned),
        ]
    }

    fn leaf_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(Value::from(i64::MIN)),
            Just(Value::from(u64::MAX)),
            any::<f64>().prop_map(Value::from),
            string_strategy().prop_map(Value::from),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        leaf_strategy().prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((prop_oneof![key_strategy(), string_strategy()], inner), 0..8)
                    .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_string_round_trips(text in any::<String>()) {
            prop_assert_eq!(unpack(&pack(&text)), Ok(text));
        }

        #[test]
        fn any_json_round_trips(value in value_strategy()) {
            let text = serde_json::to_string(&value).unwrap();
            prop_assert_eq!(unpack(&pack(&text)), Ok(text));
        }

        #[test]
        fn objects_with_dictionary_keys_pack_smaller(
            members in prop::collection::vec((key_strategy(), leaf_strategy()), 3..10),
        ) {
            let object: Map<_, _> = members.into_iter().collect();
            prop_assume!(object.len() >= 3);
            let text = serde_json::to_string(&object).unwrap();
            let packed = pack(&text);
            prop_assert_eq!(packed[0], PACKED_V1);
            prop_assert!(packed.len() < text.len());
            prop_assert_eq!(unpack(&packed), Ok(text));
        }

        #[test]
        fn unpack_never_panics(tail in prop::collection::vec(any::<u8>(), 0..256)) {
            let stored = [&[PACKED_V1][..], &tail].concat();
            if let Ok(text) = unpack(&stored) {
                prop_assert_eq!(unpack(&pack(&text)), Ok(text));
            }
        }

        #[test]
        fn unpack_never_panics_on_likely_tokens(
            tail in prop::collection::vec(prop_oneof![0u8..16, 0x20u8..0x30, any::<u8>()], 0..256),
        ) {
            let stored = [&[PACKED_V1][..], &tail].concat();
            if let Ok(text) = unpack(&stored) {
                prop_assert_eq!(unpack(&pack(&text)), Ok(text));
            }
        }
    }
}
