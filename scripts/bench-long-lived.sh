#!/usr/bin/env bash
# The history benchmark's second procedure (BENCHMARKS.md): a long-lived
# store measured by a new gateway process, against fresh stores.
#
#   scripts/bench-long-lived.sh BIN DATA [ROUNDS]
#
# DATA is a data folder with history, made first with
#   BIN bench --data DATA --history 1000000 --payments 20000
# Each round starts `BIN serve` on DATA, runs `BIN bench --url` against it
# (20,000 payments, 32 clients, the trivial-route ceiling), stops it and
# audits the store; then the same on a fresh folder. Listens on
# 127.0.0.1:5093.
set -euo pipefail
BIN=$1 DATA=$2 ROUNDS=${3:-2}
PORT=5093
URL=http://127.0.0.1:$PORT
export COFFER_OPERATOR_TOKEN=cop_bench_long_lived_0123456789abcdef0123456789
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

measure() { # data folder, label
  COFFER_LOG=warn "$BIN" serve --data "$1" --listen 127.0.0.1:$PORT >"$WORK/serve-$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.2; done
  echo "== $2 ($(date +%T))"
  "$BIN" bench --url "$URL" --token "$COFFER_OPERATOR_TOKEN" --payments 20000 --concurrency 32 \
    --ceiling-requests 20000 2>&1 | grep -E "throughput|pay  |ceiling|errors"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  "$BIN" audit --data "$1" 2>&1 | tail -1
}

for round in $(seq "$ROUNDS"); do
  measure "$DATA" "history-$round"
  mkdir -m 700 "$WORK/fresh-$round"
  measure "$WORK/fresh-$round" "fresh-$round"
done
