//! The tamper-evident audit trail: each record carries the hash of the one
//! before it, so changing, removing or reordering any record breaks every
//! hash after it.

use sha2::{Digest, Sha256};

/// The hash the first record of a chain links to.
pub const GENESIS: [u8; 32] = [0; 32];

/// `SHA-256(previous hash || record body)`. The body is the record's
/// canonical bytes (its JSON as stored), so verification needs no schema.
pub fn link(previous: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(body);
    hasher.finalize().into()
}

/// Where a chain stopped verifying.
#[derive(Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: &'static str,
}

/// Verifies records given in sequence order as `(seq, stored hash, body)`.
/// Returns how many records verified.
pub fn verify<'a>(records: impl IntoIterator<Item = (i64, [u8; 32], &'a [u8])>) -> Result<u64, ChainBreak> {
    let mut previous = GENESIS;
    let mut expected_seq: Option<i64> = None;
    let mut count = 0u64;
    for (seq, stored, body) in records {
        if expected_seq.is_some_and(|expected| expected != seq) {
            return Err(ChainBreak { seq, reason: "a record is missing or out of order" });
        }
        if link(&previous, body) != stored {
            return Err(ChainBreak { seq, reason: "hash does not match the record and its predecessor" });
        }
        previous = stored;
        expected_seq = Some(seq + 1);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(bodies: &[&[u8]]) -> Vec<(i64, [u8; 32], Vec<u8>)> {
        let mut previous = GENESIS;
        let mut out = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            previous = link(&previous, body);
            out.push((i as i64 + 1, previous, body.to_vec()));
        }
        out
    }

    fn check(records: &[(i64, [u8; 32], Vec<u8>)]) -> Result<u64, ChainBreak> {
        verify(records.iter().map(|(s, h, b)| (*s, *h, b.as_slice())))
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(check(&chain(&[b"a", b"b", b"c"])), Ok(3));
        assert_eq!(check(&[]), Ok(0));
    }

    #[test]
    fn edits_deletions_and_reorders_are_caught() {
        let mut edited = chain(&[b"a", b"b", b"c"]);
        edited[1].2 = b"B".to_vec();
        assert_eq!(check(&edited).unwrap_err().seq, 2);

        let mut deleted = chain(&[b"a", b"b", b"c"]);
        deleted.remove(1);
        assert_eq!(check(&deleted).unwrap_err().seq, 3);

        let mut swapped = chain(&[b"a", b"b", b"c"]);
        swapped.swap(1, 2);
        assert!(check(&swapped).is_err());
    }
}
