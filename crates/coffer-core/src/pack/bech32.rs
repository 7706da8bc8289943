//! BOLT11 invoices at rest: an invoice is bech32 text, five bits in every
//! character, ending in a six-character checksum of the rest. [`pack`]
//! keeps the human-readable part as it is and the data part as bits (five
//! eighths of its characters), without the checksum, which [`unpack`]
//! computes again: about 60% of the text, given back byte for byte.
//! [`pack_invoice`] also leaves out the payment hash, which the invoice's
//! row holds anyway; [`unpack_invoice`] puts it back.
//!
//! A packed invoice starts with [`PACKED_BECH32_V1`], or
//! [`PACKED_BECH32_V2`] without its hash, bytes no invoice starts with;
//! anything else is the text stored as it is (rows written before packing,
//! or a text that is not lowercase bech32 with a valid checksum, which
//! [`pack`] keeps as it came). A text that does start with either byte (not
//! an invoice, but a `&str` all the same) is kept behind the first mark and
//! an empty prefix.

/// The first byte of a packed invoice.
pub const PACKED_BECH32_V1: u8 = 0x02;
/// The first byte of an invoice packed without its payment hash: then the
/// place of the hash's field (two bytes, big-endian, in five-bit values
/// after the separator), then what follows [`PACKED_BECH32_V1`].
pub const PACKED_BECH32_V2: u8 = 0x03;

/// The prefix length that marks a text kept as it is after the mark (one
/// that starts with the mark itself); an invoice's prefix is never empty.
const VERBATIM: u8 = 0;
const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
/// Characters of the checksum at the end of the data part.
const CHECKSUM_LEN: usize = 6;
/// The longest human-readable part kept (its length is one byte).
const HRP_LEN_MAX_BYTES: usize = 83;
/// The longest text packed: a BOLT11 invoice is far shorter; past this it is
/// stored as it is.
const TEXT_LEN_MAX_BYTES: usize = 8_192;
const _: () = assert!(HRP_LEN_MAX_BYTES < 256 && CHECKSUM_LEN < TEXT_LEN_MAX_BYTES);
/// BOLT11's data part: a timestamp of 7 values, tagged fields (a type, a
/// length of 2 values, the data), a signature of 104 values.
const TIMESTAMP_VALUES: usize = 7;
const SIGNATURE_VALUES: usize = 104;
/// The payment hash's field: type `p` (value 1), 52 values (256 bits and 4
/// zero bits), so 55 values with its type and length.
const HASH_TYPE: u8 = 1;
const HASH_VALUES: usize = 52;
const HASH_FIELD_VALUES: usize = 3 + HASH_VALUES;
const _: () = assert!(CHARSET[HASH_TYPE as usize] == b'p' && HASH_VALUES * 5 == 256 + 4);
// Where the field sits is two bytes.
const _: () = assert!(TEXT_LEN_MAX_BYTES <= u16::MAX as usize);

use super::PackError;

/// `text` packed, or its bytes as they are when it is not lowercase bech32
/// with a valid checksum (or packs to anything but itself).
pub fn pack(text: &str) -> Vec<u8> {
    if matches!(text.as_bytes().first(), Some(&(PACKED_BECH32_V1 | PACKED_BECH32_V2))) {
        // Not an invoice, but a text all the same: kept behind the mark and
        // an empty prefix, so it is not taken for a packed one.
        return [&[PACKED_BECH32_V1, VERBATIM], text.as_bytes()].concat();
    }
    match try_pack(text) {
        Some(packed) if packed.len() < text.len() && unpack(&packed).as_deref() == Ok(text) => packed,
        _ => text.as_bytes().to_vec(),
    }
}

/// `text` packed without its payment hash when it is a BOLT11 invoice whose
/// hash is `payment_hash`; else as [`pack`] packs it.
pub fn pack_invoice(text: &str, payment_hash: &[u8; 32]) -> Vec<u8> {
    match try_pack_without_hash(text, payment_hash) {
        Some(packed) if unpack_invoice(&packed, payment_hash).as_deref() == Ok(text) => packed,
        _ => pack(text),
    }
}

/// The invoice `stored` holds, packed by [`pack_invoice`] with
/// `payment_hash`, by [`pack`], or not at all.
pub fn unpack_invoice(stored: &[u8], payment_hash: &[u8; 32]) -> Result<String, PackError> {
    let Some((&PACKED_BECH32_V2, rest)) = stored.split_first() else {
        return unpack(stored);
    };
    let (place, rest) = rest.split_first_chunk::<2>().ok_or(PackError::Corrupt("no place of the hash"))?;
    let place = usize::from(u16::from_be_bytes(*place));
    let (hrp, mut values) = unpack_body(rest)?;
    if place < TIMESTAMP_VALUES || place > values.len().saturating_sub(SIGNATURE_VALUES) {
        return Err(PackError::Corrupt("the hash's place is outside the tagged fields"));
    }
    values.splice(place..place, hash_field(payment_hash)?);
    Ok(text_of(hrp, &values))
}

/// The invoice `stored` holds, packed by [`pack`] or not at all.
pub fn unpack(stored: &[u8]) -> Result<String, PackError> {
    match stored.split_first() {
        Some((&PACKED_BECH32_V1, rest)) => {
            if rest.first() == Some(&VERBATIM) {
                return String::from_utf8(rest[1..].to_vec()).map_err(|_| PackError::NotUtf8);
            }
            let (hrp, values) = unpack_body(rest)?;
            Ok(text_of(hrp, &values))
        }
        Some((&PACKED_BECH32_V2, _)) => Err(PackError::Corrupt("an invoice packed without its payment hash")),
        _ => String::from_utf8(stored.to_vec()).map_err(|_| PackError::NotUtf8),
    }
}

/// The prefix and the data values after a mark: the prefix's length and
/// bytes, the count of unused bits, the values' bits.
fn unpack_body(rest: &[u8]) -> Result<(&[u8], Vec<u8>), PackError> {
    let (&hrp_len, rest) = rest.split_first().ok_or(PackError::Corrupt("no length"))?;
    let hrp = rest.get(..usize::from(hrp_len)).ok_or(PackError::Corrupt("the prefix is cut short"))?;
    if hrp.is_empty() || !hrp.iter().all(|b| (33..=126).contains(b) && !b.is_ascii_uppercase()) {
        return Err(PackError::Corrupt("a prefix that is not lowercase ASCII"));
    }
    let rest = &rest[hrp.len()..];
    let (&spare_bits, bits) = rest.split_first().ok_or(PackError::Corrupt("no bit count"))?;
    Ok((hrp, unpack_bits(bits, spare_bits)?))
}

/// The text of a prefix and data values, with the checksum computed again.
fn text_of(hrp: &[u8], data: &[u8]) -> String {
    let mut text = String::with_capacity(hrp.len() + 1 + data.len() + CHECKSUM_LEN);
    text.extend(hrp.iter().map(|b| char::from(*b)));
    text.push('1');
    let checksum = checksum(hrp, data);
    text.extend(data.iter().chain(&checksum).map(|v| char::from(CHARSET[usize::from(*v)])));
    text
}

/// The prefix and the data values of lowercase bech32 with a valid checksum.
fn parse(text: &str) -> Option<(&[u8], Vec<u8>)> {
    if text.len() > TEXT_LEN_MAX_BYTES {
        return None;
    }
    let split = text.rfind('1')?;
    let (hrp, data) = (&text.as_bytes()[..split], &text.as_bytes()[split + 1..]);
    if hrp.is_empty() || hrp.len() > HRP_LEN_MAX_BYTES || data.len() < CHECKSUM_LEN {
        return None;
    }
    let mut values: Vec<u8> = data.iter().map(|c| value_of(*c)).collect::<Option<_>>()?;
    let payload_len = values.len() - CHECKSUM_LEN;
    if checksum(hrp, &values[..payload_len]) != values[payload_len..] {
        return None;
    }
    values.truncate(payload_len);
    Some((hrp, values))
}

/// The body after a mark: the prefix's length and bytes, then the values.
fn body(hrp: &[u8], values: &[u8]) -> Option<Vec<u8>> {
    let mut packed = vec![u8::try_from(hrp.len()).ok()?];
    packed.extend_from_slice(hrp);
    let (bits, spare_bits) = pack_bits(values);
    packed.push(spare_bits);
    packed.extend(bits);
    Some(packed)
}

fn try_pack(text: &str) -> Option<Vec<u8>> {
    let (hrp, values) = parse(text)?;
    Some([vec![PACKED_BECH32_V1], body(hrp, &values)?].concat())
}

fn try_pack_without_hash(text: &str, payment_hash: &[u8; 32]) -> Option<Vec<u8>> {
    let (hrp, mut values) = parse(text)?;
    let place = hash_field_place(&values, payment_hash)?;
    values.drain(place..place + HASH_FIELD_VALUES);
    let place = u16::try_from(place).ok()?.to_be_bytes();
    Some([&[PACKED_BECH32_V2][..], &place, &body(hrp, &values)?].concat())
}

/// Where the tagged field holding `payment_hash` starts, if one does.
fn hash_field_place(values: &[u8], payment_hash: &[u8; 32]) -> Option<usize> {
    let fields_end = values.len().checked_sub(SIGNATURE_VALUES)?;
    let wanted = hash_field(payment_hash).ok()?;
    let mut at = TIMESTAMP_VALUES;
    while at + 3 <= fields_end {
        let len = usize::from(values[at + 1]) * 32 + usize::from(values[at + 2]);
        let end = at + 3 + len;
        if end > fields_end {
            return None;
        }
        if values[at..end] == wanted {
            return Some(at);
        }
        at = end;
    }
    None
}

/// The tagged field of a payment hash, as five-bit values.
fn hash_field(payment_hash: &[u8; 32]) -> Result<[u8; HASH_FIELD_VALUES], PackError> {
    let mut field = [0; HASH_FIELD_VALUES];
    field[..3].copy_from_slice(&[HASH_TYPE, (HASH_VALUES / 32) as u8, (HASH_VALUES % 32) as u8]);
    // The hash's 256 bits and 4 zero bits: a zero byte after it, with 4 of
    // its bits unused.
    let mut bytes = [0; 33];
    bytes[..32].copy_from_slice(payment_hash);
    field[3..].copy_from_slice(&unpack_bits(&bytes, 4)?);
    Ok(field)
}

/// Each byte's five bits as a lowercase bech32 character, `NOT_BECH32` for
/// the others: a table, since every invoice made is packed on the store's
/// one writer thread.
const VALUES: [u8; 256] = {
    let mut values = [NOT_BECH32; 256];
    let mut value = 0;
    while value < CHARSET.len() {
        values[CHARSET[value] as usize] = value as u8;
        value += 1;
    }
    values
};
const NOT_BECH32: u8 = 0xFF;

/// A lowercase bech32 character's five bits.
fn value_of(c: u8) -> Option<u8> {
    Some(VALUES[usize::from(c)]).filter(|v| *v != NOT_BECH32)
}

/// Five-bit values as bytes, most significant bits first, and the count of
/// unused bits in the last byte (0 to 7).
fn pack_bits(values: &[u8]) -> (Vec<u8>, u8) {
    let mut out = Vec::with_capacity(values.len() * 5 / 8 + 1);
    let (mut acc, mut acc_bits) = (0u16, 0u32);
    for v in values {
        acc = (acc << 5) | u16::from(*v & 0x1F);
        acc_bits += 5;
        if acc_bits >= 8 {
            acc_bits -= 8;
            out.push((acc >> acc_bits) as u8);
            acc &= (1 << acc_bits) - 1;
        }
    }
    let mut spare_bits = 0;
    if acc_bits > 0 {
        spare_bits = 8 - acc_bits as u8;
        out.push((acc << spare_bits) as u8);
    }
    (out, spare_bits)
}

fn unpack_bits(bytes: &[u8], spare_bits: u8) -> Result<Vec<u8>, PackError> {
    if spare_bits > 7 || (bytes.is_empty() && spare_bits != 0) {
        return Err(PackError::Corrupt("a bit count out of range"));
    }
    let total_bits = bytes.len() * 8 - usize::from(spare_bits);
    if !total_bits.is_multiple_of(5) || bytes.len() > TEXT_LEN_MAX_BYTES {
        return Err(PackError::Corrupt("bits that are not whole characters"));
    }
    let mut values = Vec::with_capacity(total_bits / 5);
    let (mut acc, mut acc_bits) = (0u16, 0u32);
    for b in bytes {
        acc = (acc << 8) | u16::from(*b);
        acc_bits += 8;
        while acc_bits >= 5 && values.len() < total_bits / 5 {
            acc_bits -= 5;
            values.push(((acc >> acc_bits) & 0x1F) as u8);
        }
        acc &= (1 << acc_bits) - 1;
    }
    if acc != 0 {
        return Err(PackError::Corrupt("unused bits set"));
    }
    Ok(values)
}

/// BIP-173's checksum of a human-readable part and data values.
fn checksum(hrp: &[u8], data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let expanded = hrp.iter().map(|b| b >> 5).chain([0]).chain(hrp.iter().map(|b| b & 0x1F));
    let values = expanded.chain(data.iter().copied()).chain([0; CHECKSUM_LEN]);
    let modulus = values.fold(1, polymod_step) ^ 1;
    std::array::from_fn(|i| ((modulus >> (5 * (5 - i))) & 0x1F) as u8)
}

/// One value into BIP-173's checksum polynomial.
fn polymod_step(chk: u32, value: u8) -> u32 {
    const GENERATOR: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];
    let top = chk >> 25;
    let mut chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(value);
    for (i, g) in GENERATOR.iter().enumerate() {
        if (top >> i) & 1 == 1 {
            chk ^= g;
        }
    }
    chk
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An invoice of this gateway (regtest, no memo).
    const INVOICE: &str = "lnbcrt10n1p43dmhsdqqpp50asjkk5v5kz8gqs6fyvgqd33ul7y0exy2tnz8uzef0rl8yprxvfqsp5vnu8rc9f6fycaz00uwc40uwwlupadchfyp242ja56887f5rlg24q9qyysgqcqzysxqrrssy7h8ar4s6w7qhflk9wjzrrlznnj5lnfhm7der39qyxpvcqzz0c7h65t39xw8fq0wj7s9hmj5atef9f7ed4pxhg2sxmdff0kdyhmj04sqg2zuyv";

    #[test]
    fn an_invoice_packs_to_under_two_thirds_and_back() {
        let packed = pack(INVOICE);
        assert_eq!(packed[0], PACKED_BECH32_V1);
        assert!(packed.len() * 3 < INVOICE.len() * 2, "{} of {}", packed.len(), INVOICE.len());
        assert_eq!(unpack(&packed).as_deref(), Ok(INVOICE));
    }

    #[test]
    fn what_is_not_lowercase_bech32_with_its_checksum_is_kept_as_it_is() {
        let upper = INVOICE.to_ascii_uppercase();
        let mut wrong_sum = INVOICE.to_owned();
        wrong_sum.pop();
        wrong_sum.push('q');
        for text in [upper.as_str(), wrong_sum.as_str(), "", "1", "lnbc", "lnbc1qqqqqq", "not an invoice 1 at all"] {
            let stored = pack(text);
            assert_eq!(stored, text.as_bytes(), "{text}");
            assert_eq!(unpack(&stored).as_deref(), Ok(text));
        }
    }

    #[test]
    fn a_text_that_starts_with_the_mark_is_kept() {
        for text in ["\u{2}", "\u{2}\u{2}lnbc1", "\u{2}x"] {
            let stored = pack(text);
            assert_eq!(&stored[..2], [PACKED_BECH32_V1, VERBATIM]);
            assert_eq!(unpack(&stored).as_deref(), Ok(text));
        }
    }

    #[test]
    fn a_cut_packed_invoice_is_corrupt() {
        let packed = pack(INVOICE);
        for end in [1, 2, 5, 8] {
            assert!(unpack(&packed[..end]).is_err(), "cut at {end}");
        }
        // A cut within the bits is a different invoice or corrupt, never a panic.
        for end in 9..packed.len() {
            let _ = unpack(&packed[..end]);
        }
    }

    /// The hash in the tagged field of type `p` that starts at `at`.
    fn hash_at(values: &[u8], at: usize) -> [u8; 32] {
        assert_eq!(values[at..at + 3], [HASH_TYPE, 1, 20], "a hash field at {at}");
        let (bytes, spare_bits) = pack_bits(&values[at + 3..at + HASH_FIELD_VALUES]);
        assert_eq!((bytes.len(), spare_bits, bytes[32]), (33, 4, 0));
        bytes[..32].try_into().expect("32 bytes")
    }

    /// bech32 text of `hrp` and data values, with its checksum.
    fn bech32(hrp: &str, data: &[u8]) -> String {
        text_of(hrp.as_bytes(), data)
    }

    #[test]
    fn an_invoice_packs_without_its_hash_to_a_field_less_and_back() {
        let (_, values) = parse(INVOICE).expect("an invoice");
        // `p43dmhs` the timestamp, `dqq` an empty memo, then `pp5` the hash.
        let hash = hash_at(&values, 10);
        let with = pack(INVOICE);
        let without = pack_invoice(INVOICE, &hash);
        assert_eq!(without[0], PACKED_BECH32_V2);
        // 55 values out (34 or 35 bytes, by the last byte's spare bits), a
        // place of 2 bytes in.
        assert!((32..=33).contains(&(with.len() - without.len())), "{} then {}", with.len(), without.len());
        assert_eq!(unpack_invoice(&without, &hash).as_deref(), Ok(INVOICE));
        // Without the hash it cannot be read, and says so.
        assert!(unpack(&without).is_err());
        // Another hash is not this invoice's: packed as `pack` packs it.
        let other = [7; 32];
        assert_eq!(pack_invoice(INVOICE, &other), with);
        assert_eq!(unpack_invoice(&with, &other).as_deref(), Ok(INVOICE));
    }

    #[test]
    fn texts_that_start_with_either_mark_are_kept() {
        for text in ["\u{3}", "\u{3}lnbc1", "\u{2}\u{3}"] {
            let stored = pack_invoice(text, &[1; 32]);
            assert_eq!(&stored[..2], [PACKED_BECH32_V1, VERBATIM]);
            assert_eq!(unpack_invoice(&stored, &[1; 32]).as_deref(), Ok(text));
        }
    }

    #[test]
    fn a_cut_invoice_packed_without_its_hash_is_corrupt() {
        let (_, values) = parse(INVOICE).expect("an invoice");
        let hash = hash_at(&values, 10);
        let packed = pack_invoice(INVOICE, &hash);
        for end in [1, 2, 3, 4, 6] {
            assert!(unpack_invoice(&packed[..end], &hash).is_err(), "cut at {end}");
        }
        for end in 7..packed.len() {
            let _ = unpack_invoice(&packed[..end], &hash);
        }
        // A place outside the tagged fields.
        for place in [0u16, 6, u16::MAX] {
            let mut moved = packed.clone();
            moved[1..3].copy_from_slice(&place.to_be_bytes());
            assert!(unpack_invoice(&moved, &hash).is_err(), "place {place}");
        }
    }

    proptest! {
        #[test]
        fn any_invoice_shaped_text_comes_back_without_its_hash(
            hash in any::<[u8; 32]>(),
            before in proptest::collection::vec(0u8..32, 0..3),
            after in proptest::collection::vec(0u8..32, 0..40),
            signature in proptest::collection::vec(0u8..32, SIGNATURE_VALUES..=SIGNATURE_VALUES),
        ) {
            // A timestamp, an optional memo field of `before`, the hash's
            // field, some field of `after`, a signature.
            let mut data = vec![3u8; TIMESTAMP_VALUES];
            if !before.is_empty() {
                data.extend([13, 0, before.len() as u8]);
                data.extend(&before);
            }
            let place = data.len();
            data.extend(hash_field(&hash).expect("a hash's field"));
            data.extend([6, (after.len() / 32) as u8, (after.len() % 32) as u8]);
            data.extend(&after);
            data.extend(&signature);
            let text = bech32("lnbcrt", &data);
            let packed = pack_invoice(&text, &hash);
            prop_assert_eq!(packed[0], PACKED_BECH32_V2);
            prop_assert_eq!(usize::from(u16::from_be_bytes([packed[1], packed[2]])), place);
            prop_assert_eq!(hash_at(&data, place), hash);
            prop_assert_eq!(unpack_invoice(&packed, &hash), Ok(text));
        }

        #[test]
        fn any_bytes_after_the_second_mark_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut stored = vec![PACKED_BECH32_V2];
            stored.extend(bytes);
            let _ = unpack_invoice(&stored, &[9; 32]);
        }

        #[test]
        fn any_text_comes_back(text in ".{0,300}") {
            prop_assert_eq!(unpack(&pack(&text)), Ok(text));
        }

        #[test]
        fn any_bech32_comes_back(hrp in "[a-z]{1,20}", data in proptest::collection::vec(0u8..32, 0..400)) {
            let mut text = format!("{hrp}1");
            text.extend(data.iter().chain(&checksum(hrp.as_bytes(), &data)).map(|v| char::from(CHARSET[usize::from(*v)])));
            let packed = pack(&text);
            prop_assert_eq!(unpack(&packed), Ok(text));
            if data.len() > 16 {
                prop_assert_eq!(packed[0], PACKED_BECH32_V1);
            }
        }

        #[test]
        fn any_stored_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut stored = vec![PACKED_BECH32_V1];
            stored.extend(bytes);
            let _ = unpack(&stored);
        }
    }
}
