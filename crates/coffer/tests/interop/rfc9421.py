"""RFC 9421 signatures by an independent implementation (PyPI
http-message-signatures), against coffer (tests/signed_requests.rs).

  rfc9421.py send URL BEARER KEY_ID SEED_HEX IDEMPOTENCY_KEY BODY [ALG]
      signs a POST of BODY (JSON) to URL as the library does it, sends it,
      prints the HTTP status and the answer. ALG is ed25519 (the default;
      SEED_HEX is the 32-byte private key) or ecdsa-p256-sha256 (SEED_HEX
      is the private scalar).
  rfc9421.py p256-public SCALAR_HEX
      prints the P-256 public key of a private scalar as coffer registers
      it: standard base64 of the uncompressed point.
  rfc9421.py verify PUBLIC_KEY_HEX < request.json
      verifies a request made by coffer's client crate ({"method", "url",
      "headers": {name: value}, "body": text}); exit 0 only if it verifies
      and covers what coffer requires.
"""

import base64
import json
import secrets
import sys
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, algorithms
from http_message_signatures.resolvers import MappingKeyResolver


class Request:
    """The message interface the library reads: method, url, headers."""

    def __init__(self, method, url, headers):
        self.method = method
        self.url = url
        self.headers = {k.lower(): v for k, v in headers.items()}


def p256_private(scalar_hex):
    return ec.derive_private_key(int(scalar_hex, 16), ec.SECP256R1())


def p256_public(scalar_hex):
    point = p256_private(scalar_hex).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    print(base64.b64encode(point).decode())


def send(url, bearer, key_id, seed_hex, idempotency_key, body, alg="ed25519"):
    if alg == "ecdsa-p256-sha256":
        private, algorithm = p256_private(seed_hex), algorithms.ECDSA_P256_SHA256
    else:
        private, algorithm = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex)), algorithms.ED25519
    resolver = MappingKeyResolver(public_keys={}, private_keys={key_id: private})
    signer = HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=resolver)
    request = Request("POST", url, {"content-type": "application/json", "idempotency-key": idempotency_key})
    signer.sign(
        request,
        key_id=key_id,
        nonce=secrets.token_urlsafe(16),
        label="py",
        covered_component_ids=("@method", "@target-uri", "idempotency-key"),
        body=body.encode(),
    )
    headers = dict(request.headers)
    headers["authorization"] = "Bearer " + bearer
    http = urllib.request.Request(url, data=body.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(http, timeout=30) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    print(json.dumps({"status": status, "body": json.loads(text or "null")}))


def verify(public_key_hex):
    captured = json.load(sys.stdin)
    public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
    request = Request(captured["method"], captured["url"], captured["headers"])
    key_id = captured["key_id"]
    resolver = MappingKeyResolver(public_keys={key_id: public}, private_keys={})
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=resolver)
    required = ["@method", "@target-uri", "content-digest"]
    if "idempotency-key" in request.headers:
        required.append("idempotency-key")
    results = verifier.verify(request, require_components=required, body=captured["body"].encode())
    if not results:
        sys.exit("no signature verified")
    print("ok", results[0].parameters.get("keyid"))


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(*sys.argv[2:9])
    elif sys.argv[1] == "p256-public":
        p256_public(sys.argv[2])
    elif sys.argv[1] == "verify":
        verify(sys.argv[2])
    else:
        sys.exit("usage: rfc9421.py send|p256-public|verify ...")
