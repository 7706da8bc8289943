// The operator's console: agents and sub-agents created and funded, an
// agent's page, policies, keys, webhooks, names in chat, the audit log,
// reports, and the confirmation before paying. axe-core checks every page.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { checkAccessibility, eventually, launch, requestPayment, screenshot, setup, signIn } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Opens a console page by its hash and waits for `ready`. */
async function open(page, server, hash, ready) {
  await page.goto(`${server.url}/${hash}`);
  await page.waitForSelector(ready);
}

/** Every text of every chart lies inside its SVG's viewBox: no axis label is clipped. */
async function assertChartsUnclipped(page) {
  const clipped = await page.evaluate(() => [...document.querySelectorAll('svg.chart-svg')].flatMap((svg) => {
    const vb = svg.viewBox.baseVal;
    return [...svg.querySelectorAll('text')].map((t) => [t.textContent, t.getBBox()])
      .filter(([, b]) => b.x < vb.x || b.y < vb.y || b.x + b.width > vb.x + vb.width || b.y + b.height > vb.y + vb.height)
      .map(([text]) => `${svg.dataset.testid}: ${text}`);
  }));
  assert.deepEqual(clipped, []);
}

test('create an agent and a sub-agent, fund them; the key is shown once', async (t) => {
  const { server, page, problems } = await setup(t, browser);
  await signIn(page, server, server.token);
  await page.click('[data-testid="tab-agents"]');
  await page.waitForSelector('[data-testid="console-agent-row"]');
  await checkAccessibility(page, 'the agents page');

  await page.fill('[data-testid="new-agent-name"]', 'research');
  await page.check('[data-testid="new-agent-subs"]');
  await page.fill('[data-testid="new-agent-fund"]', '100');
  await page.click('[data-testid="new-agent-submit"]');
  await page.waitForSelector('[data-testid="secret-once"]');
  const key = await page.textContent('[data-testid="secret-value"]');
  const research = await server.client(key).get('/v1/wallet');
  assert.equal(research.name, 'research');
  assert.equal(research.balance_msat, 100_000);
  await page.click('[data-testid="secret-done"]');
  await page.waitForSelector('[data-testid="secret-once"]', { state: 'detached' });

  // A sub-agent of research, funded from the treasury.
  await page.waitForSelector(`[data-testid="new-agent-parent"] option[value="${research.agent_id}"]`, { state: 'attached' });
  await page.fill('[data-testid="new-agent-name"]', 'scraper');
  await page.selectOption('[data-testid="new-agent-parent"]', research.agent_id);
  await page.fill('[data-testid="new-agent-fund"]', '12.5');
  await page.click('[data-testid="new-agent-submit"]');
  await page.waitForSelector('[data-testid="secret-once"]');
  const scraper = await server.client(await page.textContent('[data-testid="secret-value"]')).get('/v1/wallet');
  assert.equal(scraper.balance_msat, 12_500);
  assert.equal((await server.operator.get(`/v1/agents/${scraper.agent_id}`)).parent_id, research.agent_id);
  const row = `[data-testid="console-agent-row"][data-agent-id="${scraper.agent_id}"]`;
  await page.waitForSelector(`${row}[data-depth="1"]`);
  assert.equal(await page.getAttribute(`${row} [data-testid="console-agent-balance"]`, 'data-msat'), '12500');
  await screenshot(page, 'agents page');
  // Its first key is listed on its page, as issued from this tab.
  await page.click(`${row} [data-testid="agent-link"]`);
  await page.waitForSelector('[data-testid="key-row"][data-revoked="false"]');
  assert.equal(await page.textContent('[data-testid="tree-parent"]'), 'research');

  // More than the treasury holds: the API's refusal, as it came.
  const { balance_msat: left } = await server.operator.get('/v1/treasury');
  await page.goto(`${server.url}/#/agents/${scraper.agent_id}`);
  await page.fill('[data-testid="fund-amount"]', String(left / 1000 + 1));
  await page.click('[data-testid="fund-submit"]');
  await page.waitForSelector('[data-testid="fund-problem"]');
  const refused = await server.operator.call('POST', `/v1/agents/${scraper.agent_id}/fund`, { amount_msat: left + 1000 });
  assert.equal(await page.getAttribute('[data-testid="fund-problem"]', 'data-code'), refused.body.code);
  assert.equal(await page.textContent('[data-testid="fund-problem-detail"]'), refused.body.detail);
  assert.equal((await server.operator.get(`/v1/agents/${scraper.agent_id}`)).balance_msat, 12_500);
  await checkAccessibility(page, 'an agent page with a problem');
  assert.deepEqual(problems(), []);
});

test('an agent page shows its tree, budgets, spend, holds and receipts', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  await server.operator.put(`/v1/agents/${bob.id}/policy`, {
    approval_above_msat: 30_000,
    budgets: [{ limit_msat: 200_000, window: '1h', kind: 'rolling' }],
  });
  const paid = await requestPayment(alice, room, 21_000, 'dataset access');
  await bob.api.post(`/v1/rooms/${room.id}/messages/${paid.id}/pay`);
  const big = await requestPayment(alice, room, 40_000, 'a large job');
  const held = await bob.api.call('POST', `/v1/rooms/${room.id}/messages/${big.id}/pay`);
  assert.equal(held.status, 202, JSON.stringify(held.body));

  await signIn(page, server, server.token);
  await open(page, server, `#/agents/${bob.id}`, '[data-testid="agent-title"]');
  assert.equal(await page.textContent('[data-testid="agent-title"]'), 'bob');
  assert.equal(await page.textContent('[data-testid="tree-parent"]'), 'none (top level)');
  await page.waitForSelector('[data-testid="agent-budgets"] [role="meter"]');
  assert.equal(await page.getAttribute('[data-testid="agent-budgets"] [role="meter"]', 'aria-valuenow'), '61000');
  await page.waitForSelector('[data-testid="agent-spend-total"][data-msat="21000"]');
  assert.match(await page.textContent('[data-testid="agent-spend-total"]'), /^21 sat paid/);
  await page.waitForSelector(`[data-testid="agent-approval"][data-approval-id="${held.body.id}"]`);
  await page.waitForSelector('[data-testid="receipt-row"]');
  assert.equal(await page.locator('[data-testid="receipt-row"]').count(), 1);
  assert.match(await page.textContent('[data-testid="receipt-row"]'), /21 sat.*alice.*dataset access/);
  await assertChartsUnclipped(page);
  await checkAccessibility(page, 'an agent page');
  await screenshot(page, 'agent page');

  // Fund from the page.
  await page.fill('[data-testid="fund-amount"]', '5');
  await page.click('[data-testid="fund-submit"]');
  await page.waitForSelector('[data-testid="agent-page-balance"][data-msat="984000"]');
  assert.equal((await bob.api.get('/v1/wallet')).balance_msat, 984_000);

  // The dashboard's spend chart: its labels inside the picture too.
  await page.click('[data-testid="tab-dashboard"]');
  await page.waitForSelector('[data-testid="spend-chart"]');
  await assertChartsUnclipped(page);
  await checkAccessibility(page, 'the dashboard');
  assert.deepEqual(problems(), []);
});

test('a policy is edited with the API\'s validation, its problem shown verbatim', async (t) => {
  const { server, page, problems, bob } = await setup(t, browser);
  await signIn(page, server, server.token);
  await open(page, server, `#/agents/${bob.id}`, '[data-testid="policy-text"]');
  await eventually(async () => (await page.inputValue('[data-testid="policy-text"]')).startsWith('{'), { what: 'the policy' });

  await page.fill('[data-testid="policy-text"]', '{ not json');
  await page.click('[data-testid="policy-save"]');
  await page.waitForSelector('[data-testid="policy-problem"][data-code="invalid-json"]');

  const bad = { budgets: [{ limit_msat: 1000, window: 'fortnight', kind: 'rolling' }] };
  await page.fill('[data-testid="policy-text"]', JSON.stringify(bad));
  await page.click('[data-testid="policy-save"]');
  await page.waitForSelector('[data-testid="policy-problem"]:not([data-code="invalid-json"])');
  const refused = await server.operator.call('PUT', `/v1/agents/${bob.id}/policy`, bad);
  assert.ok(refused.status >= 400 && refused.status < 500, JSON.stringify(refused.body));
  assert.equal(await page.getAttribute('[data-testid="policy-problem"]', 'data-code'), refused.body.code);
  assert.equal(await page.textContent('[data-testid="policy-problem-detail"]'), refused.body.detail);
  await checkAccessibility(page, 'the policy editor with a problem');

  const good = { approval_above_msat: 7000, budgets: [{ limit_msat: 90_000, window: '1d', kind: 'rolling' }] };
  await page.fill('[data-testid="policy-text"]', JSON.stringify(good));
  await page.click('[data-testid="policy-save"]');
  await page.waitForSelector('[data-testid="toast"]:has-text("Policy saved")');
  const saved = await server.operator.get(`/v1/agents/${bob.id}/policy`);
  assert.equal(saved.approval_above_msat, 7000);
  assert.equal(saved.budgets[0].limit_msat, 90_000);
  await page.waitForSelector('[data-testid="agent-budgets"] [role="meter"][aria-valuemax="90000"]');
  assert.deepEqual(problems(), []);
});

test('a key is issued (shown once, copied) and revoked behind a confirmation', async (t) => {
  const { server, page, context, problems, bob } = await setup(t, browser);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(server.url).origin });
  await signIn(page, server, server.token);
  await open(page, server, `#/agents/${bob.id}`, '[data-testid="key-form"]');
  await page.selectOption('[data-testid="key-scope"]', 'read');
  await page.click('[data-testid="key-issue"]');
  await page.waitForSelector('[data-testid="secret-once"]');
  const secret = await page.textContent('[data-testid="secret-value"]');
  const wallet = await server.client(secret).call('GET', '/v1/wallet');
  assert.equal(wallet.status, 200);
  assert.equal(wallet.body.scope, 'read');
  await page.click('[data-testid="secret-copy"]');
  await page.waitForSelector('[data-testid="toast"]:has-text("Copied")');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await checkAccessibility(page, 'a key shown once');

  const row = '[data-testid="key-row"][data-revoked="false"]';
  await page.waitForSelector(row);
  const keyId = await page.getAttribute(row, 'data-key-id');
  // Cancelled: still valid.
  await page.click(`${row} [data-testid="key-revoke"]`);
  await page.click('[data-testid="confirm-cancel"]');
  assert.equal((await server.client(secret).call('GET', '/v1/wallet')).status, 200);
  await page.click(`[data-testid="key-row"][data-key-id="${keyId}"] [data-testid="key-revoke"]`);
  assert.equal(await page.textContent('[data-testid="confirm-key"]'), keyId);
  await page.click('[data-testid="confirm-accept"]');
  await page.waitForSelector(`[data-testid="key-row"][data-key-id="${keyId}"][data-revoked="true"]`);
  await eventually(async () => (await server.client(secret).call('GET', '/v1/wallet')).status === 401,
    { what: 'the key refused' });

  // A key issued elsewhere (bob's first), revoked by its id.
  await page.fill('[data-testid="revoke-id"]', bob.keyId);
  await page.click('[data-testid="revoke-submit"]');
  assert.equal(await page.textContent('[data-testid="confirm-key"]'), bob.keyId);
  await page.click('[data-testid="confirm-accept"]');
  await eventually(async () => (await bob.api.call('GET', '/v1/wallet')).status === 401, { what: 'bob\'s first key refused' });
  assert.deepEqual(problems(), []);
});

test('webhooks are created (secret once), listed and deleted', async (t) => {
  const { server, page, problems, bob } = await setup(t, browser, {
    env: { COFFER_EGRESS_ALLOW: '127.0.0.1', COFFER_EGRESS_DENY_PUBLIC: 'true' },
  });
  await signIn(page, server, server.token);
  await open(page, server, `#/agents/${bob.id}`, '[data-testid="webhook-form"]');
  await page.waitForSelector('[data-testid="webhooks-empty"]');

  // Refused by the API (not a URL it takes): its problem, nothing created.
  await page.fill('[data-testid="webhook-url"]', 'ftp://127.0.0.1/hook');
  await page.click('[data-testid="webhook-create"]');
  await page.waitForSelector('[data-testid="webhook-problem"]');
  assert.deepEqual(await server.operator.get('/v1/webhooks'), []);

  await page.fill('[data-testid="webhook-url"]', 'http://127.0.0.1:9/hook');
  await page.fill('[data-testid="webhook-types"]', 'payment.sent, payment.received');
  await page.click('[data-testid="webhook-create"]');
  await page.waitForSelector('[data-testid="secret-once"]');
  const [hook] = await server.operator.get('/v1/webhooks');
  assert.equal(hook.agent_id, bob.id);
  assert.deepEqual(hook.types, ['payment.sent', 'payment.received']);
  assert.ok((await page.textContent('[data-testid="secret-value"]')).length > 16);
  await page.waitForSelector(`[data-testid="webhook-row"][data-webhook-id="${hook.id}"]`);
  await checkAccessibility(page, 'webhooks');

  await page.click(`[data-testid="webhook-row"][data-webhook-id="${hook.id}"] [data-testid="webhook-delete"]`);
  await page.click('[data-testid="confirm-accept"]');
  await page.waitForSelector('[data-testid="webhooks-empty"]');
  assert.deepEqual(await server.operator.get('/v1/webhooks'), []);
  assert.deepEqual(problems(), []);
});

test('chat shows agents by name, also one that joined after the page opened', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  await alice.api.post(`/v1/rooms/${room.id}/messages`, { text: 'hello from alice' });
  await signIn(page, server, server.token);
  await page.click('[data-testid="tab-rooms"]');
  await page.waitForSelector('[data-testid="message"]:has-text("hello from alice")');
  assert.match(await page.textContent('[data-testid="message"] .msg-meta'), /^alice ·/);

  const dora = await server.operator.post('/v1/agents', { name: 'dora' });
  await server.operator.post(`/v1/rooms/${room.id}/members`, { agent_id: dora.id });
  await server.client(dora.key).post(`/v1/rooms/${room.id}/messages`, { text: 'dora here' });
  const message = '[data-testid="message"]:has-text("dora here")';
  await page.waitForSelector(message);
  await eventually(async () => /^dora ·/.test(await page.textContent(`${message} .msg-meta`)), { what: 'dora by name' });
  await eventually(async () => /dora/.test(await page.textContent('[data-testid="room-title"] + div')), { what: 'members' });
  assert.doesNotMatch(await page.textContent('[data-testid="messages"]'), new RegExp(bob.id));
  await checkAccessibility(page, 'a room');
  assert.deepEqual(problems(), []);
});

test('the audit log is paged and filtered by agent, action and time', async (t) => {
  const { server, page, problems, alice, bob } = await setup(t, browser);
  // 60 fundings of bob: more than a page.
  for (let i = 0; i < 60; i++) await server.operator.post(`/v1/agents/${bob.id}/fund`, { amount_msat: 1000 });
  const all = await server.operator.get('/v1/audit?limit=200');
  assert.ok(all.length > 60);

  await signIn(page, server, server.token);
  await page.click('[data-testid="tab-audit"]');
  await page.waitForSelector('[data-testid="audit-row"]');
  assert.equal(await page.locator('[data-testid="audit-row"]').count(), 50);
  assert.equal(await page.getAttribute('[data-testid="audit-row"]', 'data-seq'), String(all[0].seq));
  await checkAccessibility(page, 'the audit log');
  await page.click('[data-testid="audit-next"]');
  await page.waitForSelector(`[data-testid="audit-row"][data-seq="${all[50].seq}"]`);
  assert.equal(await page.locator('[data-testid="audit-row"]').count(), Math.min(50, all.length - 50));
  assert.equal(await page.textContent('[data-testid="audit-page-number"]'), 'Page 2');
  await page.click('[data-testid="audit-prev"]');
  await page.waitForSelector(`[data-testid="audit-row"][data-seq="${all[0].seq}"]`);

  // By agent and action: alice's one funding.
  await page.selectOption('[data-testid="audit-agent"]', alice.id);
  await page.selectOption('[data-testid="audit-action"]', 'agent.funded');
  await page.click('[data-testid="audit-apply"]');
  await page.waitForSelector('[data-testid="audit-row"]:only-child');
  assert.equal(await page.locator('[data-testid="audit-row"]').count(), 1);
  assert.equal(await page.textContent('[data-testid="audit-row"] [data-testid="audit-agent-name"]'), 'alice');
  assert.equal(await page.getAttribute('[data-testid="audit-next"]', 'disabled'), '');

  // A time range that ended before anything happened: nothing.
  await page.fill('[data-testid="audit-from"]', '2001-01-01T00:00');
  await page.fill('[data-testid="audit-to"]', '2001-01-02T00:00');
  await page.click('[data-testid="audit-apply"]');
  await page.waitForSelector('[data-testid="audit-empty"]');
  assert.deepEqual(problems(), []);
});

test('reports chart spend by task, tag and payee, or say the gateway has none', async (t) => {
  const { server, page, problems, alice, bob } = await setup(t, browser);
  // Bob pays alice three invoices: two for the task "crawl" (tags web, ml and web), one with neither.
  const payments = [[21_000, 'crawl', ['web', 'ml']], [9_000, 'crawl', ['web']], [4_000, null, []]];
  const route = await server.operator.call('GET', '/v1/reports/spend?group_by=payee');
  for (const [amount_msat, task, tags] of payments) {
    const invoice = await alice.api.post('/v1/invoices', { amount_msat, memo: 'work' });
    const body = { bolt11: invoice.bolt11, ...(route.status === 404 || !task ? {} : { task, tags }) };
    const paid = await bob.api.call('POST', '/v1/payments', body);
    assert.equal(paid.status, 200, JSON.stringify(paid.body));
  }
  await signIn(page, server, server.token);
  await page.click('[data-testid="tab-reports"]');
  if (route.status === 404) {
    t.diagnostic('GET /v1/reports/spend answered 404: the page says so');
    await page.waitForSelector('[data-testid="report-unavailable"]');
  } else {
    assert.equal(route.status, 200, JSON.stringify(route.body));
    await page.waitForSelector('[data-testid="report-chart-payee"]');
    assert.equal(await page.getAttribute('[data-testid="report-total-payee"]', 'data-msat'), '34000');
    assert.equal(await page.getAttribute('[data-testid="report-total-task"]', 'data-msat'),
      String(sumOf(await server.operator.get('/v1/reports/spend?group_by=task'))));
    const crawl = '[data-testid="report-table"] [data-testid="report-row"][data-key="crawl"]';
    await page.waitForSelector(crawl);
    assert.equal(await page.getAttribute(crawl, 'data-msat'), '30000');
    assert.equal(await page.locator('[data-testid="report-chart-tag"] [data-testid="bar-row"]').count(), 2);
    await assertChartsUnclipped(page);

    await page.selectOption('[data-testid="report-group"]', 'tag');
    await page.click('[data-testid="report-apply"]');
    await page.waitForSelector('[data-testid="report-table"][data-group-by="tag"]');
    const byTag = await page.$$eval('[data-testid="report-row"]', (r) => r.map((x) => [x.dataset.key, Number(x.dataset.msat)]));
    assert.deepEqual(Object.fromEntries(byTag), { web: 30_000, ml: 21_000 });

    // The CSV is the API's, downloaded with the session's token.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="report-csv"]')]);
    const csv = await new Promise((done, fail) => download.createReadStream().then((stream) => {
      let text = '';
      stream.on('data', (c) => { text += c; });
      stream.on('end', () => done(text));
      stream.on('error', fail);
    }, fail));
    const from = await page.inputValue('[data-testid="report-from"]');
    const to = await page.inputValue('[data-testid="report-to"]');
    const expected = await server.operator.call('GET', `/v1/reports/spend?group_by=tag&from=${from}&to=${to}&format=csv`);
    assert.equal(csv, expected.body);
  }
  await checkAccessibility(page, 'reports');
  await screenshot(page, 'reports page');
  assert.deepEqual(problems(), []);
});

/** The total of a report's rows (msat). */
function sumOf(report) {
  return report.rows.reduce((sum, r) => sum + r.amount_msat, 0);
}
