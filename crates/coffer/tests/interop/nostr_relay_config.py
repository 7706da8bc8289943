#!/usr/bin/env python3
"""Write the config of the PyPI `nostr-relay` that .ci/run (step nostr_relay)
starts for the NIP-47 wallet service tests: the package's own config.yaml,
with these changes.

    nostr_relay_config.py --port PORT --data DIR [--no-signature-check] > FILE

- It listens on 127.0.0.1:PORT only (`gunicorn.bind`, `purple.port`), as
  one process. Its gunicorn master is named `coffer-nostr-relay-PORT`, the
  name .ci/run finds a running one by, and has no control socket (gunicorn
  would make one in ~/.gunicorn, shared by every gunicorn of the user).
- Storage: the package's LMDB storage in DIR/lmdb, not the default SQLite.
  The SQLite storage writes every event, ephemeral ones too (NIP-47's
  requests, responses and notifications, kinds 23194-23197), serves them
  again to any later REQ until its collector runs (every 300 s), drops a
  republished event as a duplicate, and forwards about 350 events/s here.
  The LMDB one stores no ephemeral event, as NIP-01 says, forwards a
  republished one again (a wallet service must drop a request it has
  seen), and forwards about 3,700 events/s here: enough for a benchmark.
- `subscription_limit` 1024 instead of 32 per connection: @getalby/sdk's
  NWCClient opens one subscription per request in flight on its one
  connection, so 33 concurrent calls would be refused ("too many
  subscriptions").
- `max_event_size` 65536 instead of 4096: it bounds an event's content,
  and an encrypted list_transactions response outgrows 4 KiB in a few
  transactions. strfry's default bounds a whole event to 64 KiB.
- Logging: the relay's own logger at WARNING, not INFO (a line per event
  and per connection otherwise). Refused events still show (ERROR).

No rate limit needed relaxing: the package's default has none. What the
relay does that a wallet service meets (it cannot be configured away):
after it refuses an event (a bad signature, say) it answers
["OK", "", false, reason], with an empty id, and from then on delays every
message of that connection by 2 s, doubling with each refusal. It accepts
an event whose `expiration` tag is in the past and forwards it. It closes
a connection that has sent nothing for 30 minutes (`message_timeout`). It
asks for no NIP-42 authentication.

--no-signature-check drops the signature validator, for a relay that
forwards events with bad signatures: how a test reaches a wallet service
with a forged request, which a relay that checks would refuse.
"""

import argparse
import os
import sys

import nostr_relay
import yaml
from nostr_relay.config import ConfigClass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="the folder for its LMDB files")
    parser.add_argument("--no-signature-check", action="store_true")
    args = parser.parse_args()

    with open(os.path.join(os.path.dirname(nostr_relay.__file__), "config.yaml")) as packaged:
        conf = yaml.safe_load(packaged)

    name = f"coffer-nostr-relay-{args.port}"
    conf["relay_name"] = name
    conf["relay_description"] = "coffer's test relay (.ci/run)"
    conf["gunicorn"].update(
        bind=f"127.0.0.1:{args.port}",
        workers=1,
        loglevel="warning",
        proc_name=name,
        control_socket_disable=True,
        # Stopping it (a config change, a stale one) waits for open
        # websockets this long at most.
        graceful_timeout=5,
    )
    conf["purple"].update(host="127.0.0.1", port=args.port)
    conf["authentication"]["valid_urls"] = [f"ws://127.0.0.1:{args.port}"]

    validators = conf["storage"]["validators"]
    if args.no_signature_check:
        validators = [v for v in validators if v != "nostr_relay.validators.is_signed"]
    conf["storage"] = {
        "class": "nostr_relay.storage.kv.LMDBStorage",
        "path": os.path.join(os.path.abspath(args.data), "lmdb"),
        # An upper bound of the file's size, reserved as address space only.
        "map_size": 256 * 1024 * 1024,
        "validators": validators,
    }

    conf["subscription_limit"] = 1024
    conf["max_event_size"] = 64 * 1024

    logging = ConfigClass().logging
    logging["loggers"]["nostr_relay"]["level"] = "WARNING"
    conf["logging"] = logging

    yaml.safe_dump(conf, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
