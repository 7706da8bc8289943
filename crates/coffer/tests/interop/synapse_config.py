#!/usr/bin/env python3
"""Write the config of the Synapse that .ci/run (step synapse) starts for the
Matrix bridge tests, and its signing key if it has none yet.

    synapse_config.py --port PORT --data DIR --shared-secret SECRET > FILE

A throwaway homeserver named `localhost` (user ids `@name:localhost`):

- One listener, the client API (and Synapse's admin API) on
  127.0.0.1:PORT, plain HTTP; no federation listener, no key server
  (`trusted_key_servers: []`), so it never reaches outside this machine.
- Its SQLite store, media store, signing key and pid file in DIR (the
  folder it runs in, by which .ci/run tells whose it is).
- No open registration: users are made through the admin API's
  shared-secret registration (`/_synapse/admin/v1/register`, HMAC-SHA1 of
  the nonce and the user with SECRET), which the tests call
  (COFFER_TEST_MATRIX_SHARED_SECRET).
- Rate limits raised far above what a test does (Synapse's defaults allow
  a message every 5 s after a burst of 10, and a login every 5 minutes
  per address after 5): a test sends, logs in, registers, creates, invites
  and joins as fast as it likes.
- `max_upload_size` 10 MiB (a QR code PNG is a few KiB); no URL previews,
  no presence, no stats reported, no metrics.
"""

import argparse
import os
import sys

import yaml
from signedjson.key import generate_signing_key, write_signing_keys

# A rate limit no test reaches: a burst of 100,000 and 10,000 a second.
UNLIMITED = {"per_second": 10000, "burst_count": 100000}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="the folder of its store, media and keys")
    parser.add_argument("--shared-secret", required=True, help="the registration shared secret")
    args = parser.parse_args()
    data = os.path.abspath(args.data)

    signing_key = os.path.join(data, "signing.key")
    if not os.path.exists(signing_key):
        with open(signing_key, "w") as out:
            write_signing_keys(out, [generate_signing_key("a_coffer")])

    conf = {
        "server_name": "localhost",
        "public_baseurl": f"http://127.0.0.1:{args.port}/",
        "pid_file": os.path.join(data, "homeserver.pid"),
        "listeners": [
            {
                "port": args.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": os.path.join(data, "homeserver.db")}},
        "media_store_path": os.path.join(data, "media_store"),
        "max_upload_size": "10M",
        "url_preview_enabled": False,
        "signing_key_path": signing_key,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "report_stats": False,
        "enable_metrics": False,
        "use_presence": False,
        "enable_registration": False,
        "registration_shared_secret": args.shared_secret,
        # Fixed: a throwaway local server; tokens survive a restart.
        "macaroon_secret_key": "coffer-test-synapse-macaroon-secret",
        "form_secret": "coffer-test-synapse-form-secret",
        "rc_message": UNLIMITED,
        "rc_registration": UNLIMITED,
        "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
        "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
        "rc_joins_per_room": UNLIMITED,
        "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
        "rc_room_creation": UNLIMITED,
        "rc_media_create": UNLIMITED,
        "rc_admin_redaction": UNLIMITED,
        "rc_3pid_validation": UNLIMITED,
        "rc_presence": {"per_user": UNLIMITED},
        "rc_profile": UNLIMITED,
        "rc_user_directory": UNLIMITED,
        "rc_key_requests": UNLIMITED,
    }
    yaml.safe_dump(conf, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
