"""Verifies coffer's signed receipts with coincurve (libsecp256k1's Python
binding), independently of coffer's code: from the gateway's node public
key alone, as docs/receipts.md describes.

    verify_receipt.py NODE_KEY_HEX FILE...

Prints one JSON line per file: {"file": ..., "valid": true|false,
"why": ...}. Exits 0 when every file is valid, 1 otherwise.
"""

import hashlib
import json
import sys

from coincurve import PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact


def canonical(receipt):
    # Keys sorted, no whitespace, integers as written, strings as JSON
    # writes them (non-ASCII kept as UTF-8): RFC 8785 for this schema.
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def verify(envelope, node_key_hex):
    if not isinstance(envelope, dict) or set(envelope) != {"receipt", "signature", "alg"}:
        return False, "malformed: not a receipt envelope"
    if envelope["alg"] != "secp256k1-sha256":
        return False, "malformed: unknown alg"
    receipt = envelope["receipt"]
    if not isinstance(receipt, dict) or receipt.get("version") != 1:
        return False, "malformed: not a version 1 receipt"
    if receipt.get("gateway") != node_key_hex:
        return False, "wrong gateway key"
    try:
        compact = bytes.fromhex(envelope["signature"])
        der = cdata_to_der(deserialize_compact(compact))
    except Exception as e:  # noqa: BLE001 - any parse failure is malformed
        return False, f"malformed signature: {e}"
    key = PublicKey(bytes.fromhex(node_key_hex))
    digest = hashlib.sha256(canonical(receipt)).digest()
    if not key.verify(der, digest, hasher=None):
        return False, "bad signature"
    return True, "ok"


def main():
    node_key_hex, files = sys.argv[1], sys.argv[2:]
    all_valid = True
    for path in files:
        with open(path, encoding="utf-8") as f:
            envelope = json.load(f)
        valid, why = verify(envelope, node_key_hex)
        all_valid = all_valid and valid
        print(json.dumps({"file": path, "valid": valid, "why": why}))
    sys.exit(0 if all_valid else 1)


if __name__ == "__main__":
    main()
