// What the browser tests share: the real coffer binary on a fresh data
// folder, an HTTP client of its API, Debian's Chromium, and screenshots.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const COFFER_BIN = resolve(ROOT, process.env.COFFER_BIN || 'target/debug/coffer');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARTIFACTS = join(ROOT, 'artifacts', 'browser');
const START_TIMEOUT_MS = 20_000;
// With COFFER_TEST_STORE=postgres (as the Rust suite), each gateway gets a
// fresh database on the server COFFER_TEST_PG_SERVER names, made and
// dropped with psql.
const POSTGRES = process.env.COFFER_TEST_STORE === 'postgres';
const PG_SERVER = process.env.COFFER_TEST_PG_SERVER || 'postgres://postgres@127.0.0.1:5432';

function psql(sql) {
  execFileSync('psql', [`${PG_SERVER}/postgres`, '-qAtc', sql], { stdio: ['ignore', 'ignore', 'inherit'] });
}

/** A fresh PostgreSQL database: its URL and a function that drops it; null on SQLite. */
function testDatabase() {
  if (!POSTGRES) return null;
  const name = `coffer_b_${randomBytes(8).toString('hex')}`;
  psql(`CREATE DATABASE ${name}`);
  return { url: `${PG_SERVER}/${name}`, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/**
 * Starts `coffer serve` on a temporary data folder with a random operator
 * token; `env` adds to (or overrides) its environment.
 */
export async function startCoffer({ env = {} } = {}) {
  if (!existsSync(COFFER_BIN)) throw new Error(`no coffer binary at ${COFFER_BIN} (cargo build -p coffer, or set COFFER_BIN)`);
  const dir = await mkdtemp(join(tmpdir(), 'coffer-browser-'));
  const token = `optok_${randomBytes(24).toString('hex')}`;
  const database = testDatabase();
  const store = database ? { COFFER_DATABASE_URL: database.url } : {};
  const child = spawn(COFFER_BIN, ['serve', '--data', dir, '--listen', '127.0.0.1:0'], {
    env: { ...process.env, COFFER_OPERATOR_TOKEN: token, COFFER_LOG: 'warn', ...store, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`coffer did not start in ${START_TIMEOUT_MS} ms:\n${output}`)),
      START_TIMEOUT_MS);
    const read = (chunk) => {
      output += chunk;
      const found = output.match(/coffer listening on (http:\/\/\S+)/);
      if (found) {
        clearTimeout(timer);
        ok(found[1]);
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.on('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`coffer exited (${code}) before listening:\n${output}`));
    });
  });
  const exited = new Promise((done) => child.on('exit', done));
  return {
    url,
    token,
    operator: client(url, token),
    client: (secret) => client(url, secret),
    output: () => output,
    async stop() {
      child.kill('SIGTERM');
      const timeout = new Promise((done) => setTimeout(done, 5000, 'timeout').unref());
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
      database?.drop();
    },
  };
}

/** A small API client: `call(method, path, body)` answers {status, body}; get/post/put throw unless 2xx. */
export function client(url, secret) {
  async function call(method, path, body, headers = {}) {
    const res = await fetch(url + path, {
      method,
      headers: {
        Authorization: `Bearer ${secret}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = /json/.test(res.headers.get('content-type') || '');
    return { status: res.status, body: json && text ? JSON.parse(text) : text, type: res.headers.get('content-type') };
  }
  const ok = (method) => async (path, body) => {
    const res = await call(method, path, body);
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };
  return { call, get: ok('GET'), post: ok('POST'), put: ok('PUT') };
}

/**
 * Two funded agents (alice, who asks to be paid, and bob, who pays) in a room
 * the operator created; with `carol`, a third funded agent in no room.
 */
export async function world(server, { fund_msat = 1_000_000, carol: withCarol = false } = {}) {
  const op = server.operator;
  await op.post('/v1/treasury/mint', { amount_msat: 10 * fund_msat });
  const agent = async (name) => {
    const created = await op.post('/v1/agents', { name });
    await op.post(`/v1/agents/${created.id}/fund`, { amount_msat: fund_msat });
    return { id: created.id, key: created.key, keyId: created.key_id, name, api: server.client(created.key) };
  };
  const alice = await agent('alice');
  const bob = await agent('bob');
  const carol = withCarol ? await agent('carol') : null;
  const room = await op.post('/v1/rooms', { name: 'market', members: [alice.id, bob.id] });
  return { alice, bob, carol, room };
}

/** Posts a payment request to the room as `agent`: the message. */
export function requestPayment(agent, room, amount_msat, memo) {
  return agent.api.post(`/v1/rooms/${room.id}/messages`, { payment_request: { amount_msat, memo } });
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A fresh page of a new context, whose requests may only go to the gateway:
 * anything else is refused and recorded, as are page errors and CSP
 * violations; `problems()` lists them.
 */
export async function openPage(browser, server) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const problems = [];
  const origin = new URL(server.url).origin;
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(`${origin}/`) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    problems.push(`request to another origin: ${url}`);
    return route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  return { page, context, problems: () => problems };
}

/**
 * A test's gateway (alice and bob in a room, see `world`; `options.env` is
 * the gateway's extra environment) and a page of `browser`; once the test
 * ends, a screenshot of the page's final state, then everything is closed.
 */
export async function setup(t, browser, options = {}) {
  const server = await startCoffer({ env: options.env });
  let ui = null;
  t.after(async () => {
    try {
      if (ui) await screenshot(ui.page, t.name);
    } finally {
      await ui?.context.close();
      await server.stop();
    }
  });
  const people = await world(server, options);
  ui = await openPage(browser, server);
  return { server, ...people, ...ui };
}

/** Opens the UI and signs in with `secret`. */
export async function signIn(page, server, secret) {
  await page.goto(server.url);
  await page.fill('[data-testid="signin-secret"]', secret);
  await page.click('[data-testid="signin-submit"]');
  await page.waitForSelector('[data-testid="whoami"]:not(:empty)');
}

/** Saves the page as artifacts/browser/NAME.png. */
export async function screenshot(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase()}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Polls `fn` until it returns a truthy value (that value), or fails after `ms`. */
export async function eventually(fn, { ms = 10_000, what = 'the condition' } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((done) => setTimeout(done, 100));
  }
}

// axe-core, the accessibility engine, as a script to evaluate in the page.
// Evaluated through the DevTools protocol, it is not refused by the page's
// Content-Security-Policy (which allows scripts of the gateway only).
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const AXE_FAILING = ['critical', 'serious'];

/**
 * Runs axe-core on the page as it is now; fails on any critical or serious
 * violation, naming each rule, its help and the first nodes it found.
 */
export async function checkAccessibility(page, what) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE_SOURCE);
  const { violations, rulesPassed } = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return { rulesPassed: result.passes.length, violations: result.violations.map((v) => ({ id: v.id, impact: v.impact,
      help: v.help, nodes: v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
      count: v.nodes.length })) };
  });
  assert.ok(rulesPassed > 0, `axe-core checked nothing on ${what}`);
  const failing = violations.filter((v) => AXE_FAILING.includes(v.impact));
  assert.deepEqual(failing, [], `axe-core on ${what}: ${JSON.stringify(failing, null, 2)}`);
  return violations;
}
