"""Writes docs/vectors/receipts.json: signed-receipt test vectors made with
coincurve (libsecp256k1), independently of coffer's code. The unit tests
of crates/coffer/src/payment/receipt.rs check coffer against them.

    python make_receipt_vectors.py > docs/vectors/receipts.json

The private key is a TEST KEY, published here: never use it for money.
"""

import hashlib
import json

from coincurve import PrivateKey
from coincurve.ecdsa import der_to_cdata, serialize_compact

SECRET = hashlib.sha256(b"coffer receipt test vectors: a public test key, never for money").digest()


def canonical(receipt):
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def main():
    key = PrivateKey(SECRET)
    gateway = key.public_key.format(compressed=True).hex()
    preimage = hashlib.sha256(b"vector preimage").digest()
    payment_hash = hashlib.sha256(preimage).hexdigest()
    receipts = [
        ("internal payment, allowed", {
            "version": 1, "gateway": gateway, "payment_id": "pay_3q8cVZkD2aYw7xTgLmN5rP",
            "kind": "internal", "payer": "agt_buyer", "payee": "agt_seller",
            "amount_msat": 21000, "fee_msat": 0, "purpose": "an answer",
            "payment_hash": payment_hash, "preimage": preimage.hex(),
            "settled_at": "2026-12-06T05:12:20.123Z",
            "decision": {"rule": "allowed", "audit_seq": 42},
        }),
        ("escrow released, approved by a person; escapes and non-ASCII in the purpose", {
            "version": 1, "gateway": gateway, "payment_id": "pay_Esc7",
            "kind": "escrow", "payer": "agt_buyer", "payee": "agt_seller",
            "amount_msat": 1234567, "fee_msat": 0,
            "purpose": "Bericht f\u00fcr \"Q4\"\n\u2615 \\ tab\tend",
            "payment_hash": payment_hash, "preimage": preimage.hex(),
            "settled_at": "2026-12-07T00:00:00.000Z",
            "decision": {"rule": "approved"},
        }),
        ("session closed: no payment hash or preimage", {
            "version": 1, "gateway": gateway, "payment_id": "ses_9",
            "kind": "session", "payer": "agt_buyer", "payee": "agt_seller",
            "amount_msat": 700, "fee_msat": 0, "purpose": "",
            "payment_hash": "", "preimage": "",
            "settled_at": "2026-12-06T06:00:00.001Z",
            "decision": {"rule": "allowed", "audit_seq": 7},
        }),
    ]
    cases = []
    for name, receipt in receipts:
        data = canonical(receipt)
        digest = hashlib.sha256(data).digest()
        der = key.sign(digest, hasher=None)
        signature = serialize_compact(der_to_cdata(der)).hex()
        cases.append({
            "name": name,
            "receipt": receipt,
            "canonical": data.decode("utf-8"),
            "sha256": digest.hex(),
            "signature": signature,
            "envelope": {"receipt": receipt, "signature": signature, "alg": "secp256k1-sha256"},
        })
    print(json.dumps({
        "description": "Signed receipt test vectors (docs/receipts.md). The private key is a TEST KEY, "
                       "published: never use it for money.",
        "alg": "secp256k1-sha256",
        "private_key": SECRET.hex(),
        "public_key": gateway,
        "cases": cases,
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
