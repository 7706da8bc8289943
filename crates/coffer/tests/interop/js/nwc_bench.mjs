// A benchmark, not a test: N NIP-47 calls through @getalby/sdk's NWCClient,
// CONCURRENCY at a time, against a wallet service through its relay.
//
//   node nwc_bench.mjs URI METHOD N CONCURRENCY [INVOICES_FILE]
//
// METHOD is an NWCClient method: getBalance is the ceiling (no payment,
// the least work for the wallet service), payInvoice pays the invoices of
// INVOICES_FILE, one per line, each once (it needs N of them). Optional
// environment:
//   NWC_BENCH_PARAMS       JSON params of every call (payInvoice adds its
//                          `invoice`), e.g. '{"amount":1000}' for makeInvoice;
//   NWC_BENCH_CONNECTIONS  clients (relay connections) sharing the calls,
//                          1 by default: one agent;
//   NWC_TIMEOUT_MS         the bound of one call, 30000 by default.
//
// Prints one JSON line: {method, count, ok, errors, error_codes, seconds,
// per_second, p50_ms, p99_ms, concurrency, connections, encryption}, where
// per_second counts the calls that succeeded, the latencies are theirs, and
// error_codes counts the failures by NIP-47 code (TIMEOUT for a timeout).
// The connection and the choice of encryption (the info event) happen
// before the clock starts. Exit status 0 once it ran, 1 when it could not
// connect or read the info event, 2 on bad usage.
import { readFileSync } from "node:fs";
import WebSocket from "ws";

// As in nwc_client.mjs: Node.js 20 has no global WebSocket, and the SDK
// takes it when loaded.
globalThis.WebSocket ??= WebSocket;
const { NWCClient, Nip47TimeoutError } = await import("@getalby/sdk/nwc");

function usage(message) {
  process.stderr.write(
    `nwc_bench.mjs: ${message}\nusage: node nwc_bench.mjs URI METHOD N CONCURRENCY [INVOICES_FILE]\n`,
  );
  process.exit(2);
}

const [uri, method, nArg, concurrencyArg, invoicesFile] = process.argv.slice(2);
const count = Number(nArg);
const concurrency = Number(concurrencyArg);
if (!uri || !method || !(count > 0) || !(concurrency > 0)) usage("URI, METHOD, N and CONCURRENCY are needed");
let params;
try {
  params = JSON.parse(process.env.NWC_BENCH_PARAMS || "{}");
} catch (err) {
  usage(`NWC_BENCH_PARAMS is not JSON: ${err.message}`);
}
let invoices = null;
if (invoicesFile) {
  invoices = readFileSync(invoicesFile, "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  if (invoices.length < count) usage(`${invoicesFile} has ${invoices.length} invoices, fewer than N=${count}`);
} else if (method === "payInvoice") {
  usage("payInvoice needs an INVOICES_FILE");
}
const connections = Math.max(1, Number(process.env.NWC_BENCH_CONNECTIONS || 1));
const timeoutMs = Number(process.env.NWC_TIMEOUT_MS || 30000);

const clients = Array.from({ length: connections }, () => new NWCClient({ nostrWalletConnectUrl: uri }));
if (typeof clients[0][method] !== "function" || method.startsWith("_")) usage(`no NWCClient method ${method}`);
// Connect and read the info event (the choice of encryption) before the
// clock starts: the SDK's own steps of a first call, done here once.
try {
  await Promise.all(
    clients.map(async (client) => {
      await client._checkConnected();
      await client._selectEncryptionType();
    }),
  );
} catch (err) {
  process.stderr.write(`nwc_bench.mjs: cannot reach the wallet service: ${err?.message ?? err}\n`);
  process.exit(1);
}

function bounded(promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error("timeout"), { code: "TIMEOUT" })), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const latencies = [];
const errorCodes = {};
let next = 0;

async function worker(w) {
  const client = clients[w % connections];
  for (let i = next++; i < count; i = next++) {
    const callParams = invoices ? { ...params, invoice: invoices[i] } : params;
    const started = performance.now();
    try {
      await bounded(client[method](callParams));
      latencies.push(performance.now() - started);
    } catch (err) {
      const code = err instanceof Nip47TimeoutError ? "TIMEOUT" : (err?.code ?? err?.constructor?.name ?? "?");
      errorCodes[code] = (errorCodes[code] ?? 0) + 1;
    }
  }
}

// The SDK prints every failed call on stderr: once is enough here.
const consoleError = console.error;
let quietened = 0;
console.error = (...args) => {
  if (quietened++ === 0) consoleError(...args, "(further SDK errors not shown)");
};

const start = performance.now();
await Promise.all(Array.from({ length: Math.min(concurrency, count) }, (_, w) => worker(w)));
const seconds = (performance.now() - start) / 1000;
console.error = consoleError;

latencies.sort((a, b) => a - b);
const percentile = (p) =>
  latencies.length
    ? Number(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1))
    : null;
const ok = latencies.length;
const result = {
  method,
  count,
  ok,
  errors: count - ok,
  error_codes: errorCodes,
  seconds: Number(seconds.toFixed(3)),
  per_second: Number((ok / seconds).toFixed(1)),
  p50_ms: percentile(0.5),
  p99_ms: percentile(0.99),
  concurrency,
  connections,
  encryption: clients[0]._encryptionType ?? null,
};
for (const client of clients) client.close();
process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
