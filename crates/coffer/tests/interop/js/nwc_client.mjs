// A real outside NIP-47 client: NWCClient of @getalby/sdk, against a
// wallet service (coffer's) through a relay. Runs a list of calls in order
// and prints one JSON line per call on stdout (the SDK's own complaints go
// to stderr):
//
//   node nwc_client.mjs URI CALLS [TIMEOUT_MS]
//
// URI: a nostr+walletconnect:// connection URI. CALLS: a JSON array of
//   {"method": M, "params": {...}, "uri": "...", "timeout_ms": N}
// where M is an NWCClient method (getInfo, getBalance, makeInvoice,
// payInvoice, lookupInvoice, listTransactions, getWalletServiceInfo, ...),
// called with `params` as they are (makeInvoice {amount (msat),
// description}, payInvoice {invoice}, lookupInvoice {payment_hash} or
// {invoice}, listTransactions {limit, ...}). `uri` (optional) makes the
// call with another connection's client, one per URI (a second client
// paying the first one's invoice, say); `timeout_ms` (optional) bounds the
// call, else TIMEOUT_MS, else NWC_TIMEOUT_MS, else 10000. A value
// {"$ref": "N.path"} anywhere in `params` stands for that field of the
// result of call N (from 0): {"invoice": {"$ref": "0.invoice"}} pays the
// invoice that call 0 made. Three more:
//   {"method": "subscribe", "params": {"types": [...]}}  starts collecting
//       the client's notifications (payment_received and payment_sent by
//       default), and returns once the relay has the subscription;
//   {"method": "notifications", "params": {"count": N, "timeout_ms": T}}
//       waits until N notifications were collected since the client's last
//       "notifications" call (subscribing first if no "subscribe" came
//       before), at most T ms (default: the call's bound), and returns
//       them, each as the wallet sent it: {notification_type, notification};
//   {"method": "sleep", "params": {"ms": N}}.
//
// Each line: {"method", "ok": true, "result", "ms", "encryption"} or
// {"method", "ok": false, "code", "error", "message", "ms", "encryption"}.
// `code` is the NIP-47 error code of a wallet's error response
// (Nip47WalletError's `code`: RATE_LIMITED, QUOTA_EXCEEDED, RESTRICTED,
// UNAUTHORIZED, PAYMENT_FAILED, NOT_FOUND, ...; INTERNAL when the response
// had none), "TIMEOUT" when the call's bound passed or the SDK gave up
// waiting for the relay or the wallet, BAD_CALL for a call this script
// cannot make, else the SDK's own: OTHER when no relay connects,
// UNSUPPORTED_ENCRYPTION, INTERNAL for a response it refused (it wants
// `methods` from get_info, `balance` from get_balance, `invoice` from
// make_invoice and lookup_invoice, `transactions` from list_transactions:
// Nip47ResponseValidationError), or null (no info event after 10 s is a
// plain Error). `error` is the error's class (Nip47WalletError,
// Nip47ReplyTimeoutError, Timeout, ...). `encryption` is what the client
// chose from the wallet's info event (nip44_v2 or nip04), null before its
// first call. "notifications" adds "complete": whether N came in time.
// Exit status 0 when every call ran (whatever it answered), 2 on bad usage.
import WebSocket from "ws";

// nostr-tools (inside the SDK) takes the global WebSocket when the SDK is
// loaded, and Node.js 20 has none: set it first, then import the SDK.
globalThis.WebSocket ??= WebSocket;
const { NWCClient, Nip47TimeoutError } = await import("@getalby/sdk/nwc");

const DEFAULT_TYPES = ["payment_received", "payment_sent"];

function usage(message) {
  process.stderr.write(`nwc_client.mjs: ${message}\nusage: node nwc_client.mjs URI CALLS_JSON [TIMEOUT_MS]\n`);
  process.exit(2);
}

const [uri, callsJson, timeoutArg] = process.argv.slice(2);
if (!uri || !callsJson) usage("a URI and a JSON array of calls are needed");
let calls;
try {
  calls = JSON.parse(callsJson);
} catch (err) {
  usage(`CALLS is not JSON: ${err.message}`);
}
if (!Array.isArray(calls)) usage("CALLS must be a JSON array");
const defaultTimeout = Number(timeoutArg || process.env.NWC_TIMEOUT_MS || 10000);

// One client (one relay connection) per URI, with what it collected.
const sessions = new Map();
// Each call's line, for {"$ref": ...}.
const lines = [];

function resolveRefs(value) {
  if (Array.isArray(value)) return value.map(resolveRefs);
  if (value === null || typeof value !== "object") return value;
  if (typeof value.$ref === "string") {
    const [index, ...path] = value.$ref.split(".");
    let found = lines[Number(index)]?.result;
    for (const key of path) found = found?.[key];
    if (found === undefined) throw new BadCall(`$ref ${value.$ref}: no such value`);
    return found;
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveRefs(v)]));
}
function session(callUri) {
  let s = sessions.get(callUri);
  if (!s) {
    s = { client: new NWCClient({ nostrWalletConnectUrl: callUri }), notifications: [], unsubscribe: null };
    sessions.set(callUri, s);
  }
  return s;
}

class Timeout extends Error {}
class BadCall extends Error {
  code = "BAD_CALL";
}

function bounded(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Timeout(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Returns once every relay of the client has its notification subscription:
// the SDK subscribes in the background and tells nobody. A relay handles a
// connection's messages in order, so the end (EOSE) of a throwaway REQ sent
// after the subscription's means the relay registered it, and a payment
// made from now on is notified.
async function subscriptionsLive(client) {
  for (const url of client.relayUrls) {
    const relay = await client.pool.ensureRelay(url);
    const isNotifications = (sub) => sub.filters.some((f) => f.kinds?.includes(23196) || f.kinds?.includes(23197));
    while (![...relay.openSubs.values()].some(isNotifications)) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => {
      const probe = relay.subscribe([{ ids: ["0".repeat(64)], limit: 0 }], {
        oneose: () => {
          probe.close();
          resolve();
        },
        onclose: resolve,
        eoseTimeout: 10000,
      });
    });
  }
}

async function subscribe(s, types) {
  if (!s.unsubscribe) {
    s.unsubscribe = await s.client.subscribeNotifications((n) => s.notifications.push(n), types);
    await subscriptionsLive(s.client);
  }
  return null;
}

// The notifications collected since the last "notifications" call of the
// client, once there are `count` of them or `timeoutMs` passed.
async function notifications(s, count, timeoutMs) {
  await subscribe(s, DEFAULT_TYPES);
  const deadline = Date.now() + timeoutMs;
  while (s.notifications.length < count && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return s.notifications.splice(0);
}

async function run(call) {
  const method = call?.method;
  const started = Date.now();
  let s;
  const line = (fields) => ({
    method,
    ...fields,
    ms: Date.now() - started,
    encryption: s?.client._encryptionType ?? null,
  });
  try {
    if (method !== "sleep") s = session(call.uri ?? uri);
    const params = resolveRefs(call?.params ?? {});
    if (method === "sleep") {
      await new Promise((resolve) => setTimeout(resolve, params.ms ?? 0));
      return line({ ok: true, result: null });
    }
    if (method === "notifications") {
      const count = params.count ?? 1;
      const result = await notifications(s, count, params.timeout_ms ?? call.timeout_ms ?? defaultTimeout);
      return line({ ok: true, result, complete: result.length >= count });
    }
    const ms = call.timeout_ms ?? defaultTimeout;
    if (method === "subscribe") {
      return line({ ok: true, result: await bounded(subscribe(s, params.types ?? DEFAULT_TYPES), ms) });
    }
    if (typeof method !== "string" || method.startsWith("_") || typeof s.client[method] !== "function") {
      throw new BadCall(`no NWCClient method ${method}`);
    }
    const result = await bounded(s.client[method](params), ms);
    return line({ ok: true, result: result ?? null });
  } catch (err) {
    const timedOut = err instanceof Timeout || err instanceof Nip47TimeoutError;
    return line({
      ok: false,
      code: timedOut ? "TIMEOUT" : (err?.code ?? null),
      error: err?.constructor?.name ?? typeof err,
      message: err?.message ?? String(err),
    });
  }
}

for (const call of calls) {
  const out = await run(call);
  lines.push(out);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

for (const s of sessions.values()) {
  s.unsubscribe?.();
  s.client.close();
}
// A call that timed out here leaves the SDK's own timers (up to 60 s) behind:
// exit once stdout is written rather than wait for them.
process.stdout.write("", () => process.exit(0));
