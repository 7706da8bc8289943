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

/// One stored record: its sequence number, the previous hash it claims,
/// its hash and its body.
pub struct Link<'a> {
    pub seq: i64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub body: &'a [u8],
}

/// Verifies records given in sequence order. Returns how many verified.
pub fn verify<'a>(records: impl IntoIterator<Item = Link<'a>>) -> Result<u64, ChainBreak> {
    let mut previous = GENESIS;
    let mut expected_seq: Option<i64> = None;
    let mut count = 0u64;
    for Link { seq, prev_hash, hash: stored, body } in records {
        if expected_seq.is_some_and(|expected| expected != seq) {
            return Err(ChainBreak { seq, reason: "a record is missing or out of order" });
        }
        if prev_hash != previous {
            return Err(ChainBreak { seq, reason: "the previous hash it names is not its predecessor's" });
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
        let prevs: Vec<[u8; 32]> =
            std::iter::once(GENESIS).chain(records.iter().map(|(_, h, _)| *h)).take(records.len()).collect();
        verify(records.iter().zip(prevs).map(|((seq, hash, body), prev_hash)| Link {
            seq: *seq,
            prev_hash,
            hash: *hash,
            body: body.as_slice(),
        }))
    }

    #[test]
    fn a_rewritten_previous_hash_is_caught() {
        let records = chain(&[b"a", b"b"]);
        let links = [
            Link { seq: 1, prev_hash: GENESIS, hash: records[0].1, body: b"a" },
            Link { seq: 2, prev_hash: [7; 32], hash: records[1].1, body: b"b" },
        ];
        assert_eq!(verify(links).unwrap_err().seq, 2);
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
