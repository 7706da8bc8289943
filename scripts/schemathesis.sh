#!/usr/bin/env bash
# schemathesis against a fresh `coffer serve`, run by `.ci/run`'s
# schemathesis step inside a network namespace of its own:
#
#   unshare --net -- bash scripts/schemathesis.sh COFFER_BIN SCHEMATHESIS_BIN
#
# The namespace has only a loopback interface, so neither the gateway nor
# schemathesis can reach any other address: the URLs schemathesis makes up
# (webhooks, fetches) go nowhere, and the gateway's own port cannot clash
# with anything outside. Two runs, one with an agent's spend key and one
# with the operator token; any 5xx or answer that the document does not
# describe (status, content type, headers, schema) fails the step.
set -euo pipefail

COFFER_BIN=$1
SCHEMATHESIS_BIN=$2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR
source "$ROOT/scripts/lib.sh"

PORT=8420
BASE=http://127.0.0.1:$PORT
# Bounds: cases per operation and seconds per run keep the step well under
# 5 minutes on 2 cores.
MAX_EXAMPLES=${COFFER_SCHEMATHESIS_MAX_EXAMPLES:-25}
RUN_MAX_SECS=${COFFER_SCHEMATHESIS_RUN_MAX_SECS:-60}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
# Streams never end (SSE) or are not HTTP (WebSocket): nothing to check there.
STREAMS='/stream$|/ws$'

[[ $(ip -o link show | grep -vc ': lo:') == 0 ]] || die "not in a network namespace with only loopback"
ip link set lo up

WORK=$(mktemp -d "${TMPDIR:-/tmp}/coffer-schemathesis.XXXXXX")
GATEWAY_PID=
cleanup() {
    if [[ -n $GATEWAY_PID ]]; then
        kill "$GATEWAY_PID" 2>/dev/null || true
        wait "$GATEWAY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

OPERATOR_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
LOG=$WORK/coffer.log
COFFER_OPERATOR_TOKEN=$OPERATOR_TOKEN COFFER_EGRESS_DENY_PUBLIC=true \
    "$COFFER_BIN" serve --data "$WORK/data" --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 </dev/null &
GATEWAY_PID=$!
wait_for_port coffer "$PORT" 60 "$LOG"

# post PATH BODY: the JSON answer of an operator's POST.
post() {
    curl -sf --max-time 10 -X POST "$BASE$1" -H "authorization: Bearer $OPERATOR_TOKEN" \
        -H 'content-type: application/json' -d "$2"
}
json_field() { "$(dirname "$SCHEMATHESIS_BIN")/python" -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

agent=$(post /v1/agents '{"name": "schemathesis", "can_create_subagents": true}')
AGENT_ID=$(json_field id <<<"$agent")
AGENT_KEY=$(json_field key <<<"$agent")
post /v1/treasury/mint '{"amount_msat": 1000000000}' >/dev/null
post "/v1/agents/$AGENT_ID/fund" '{"amount_msat": 100000000}' >/dev/null
note "coffer $("$COFFER_BIN" --version) on $BASE, agent $AGENT_ID funded"

run() {
    local who=$1 token=$2
    note "schemathesis as $who"
    "$SCHEMATHESIS_BIN" --no-color run "$BASE/openapi.json" --header "Authorization: Bearer $token" \
        --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" --max-time "$RUN_MAX_SECS" \
        --exclude-path-regex "$STREAMS" --request-timeout 10 --seed 17 --workers 1 \
        --suppress-health-check all </dev/null
}

# schemathesis keeps a cache in the working folder: the temporary one.
cd "$WORK"
rc=0
run "the agent" "$AGENT_KEY" || rc=1
run "the operator" "$OPERATOR_TOKEN" || rc=1
if ((rc != 0)); then
    warn "---- last lines of the gateway's log ----"
    tail -n 40 "$LOG" >&2
fi
exit "$rc"
