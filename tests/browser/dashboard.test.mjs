// The operator's dashboard: agents, the approvals queue, the kill switch.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { checkAccessibility, eventually, launch, requestPayment, setup, signIn } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const row = (agent) => `[data-testid="agent-row"][data-agent-id="${agent.id}"]`;

test('operator signs in and sees the two agents', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  // One payment, so the feed and the chart have something to show.
  const request = await requestPayment(alice, room, 50_000, 'dataset access');
  await bob.api.post(`/v1/rooms/${room.id}/messages/${request.id}/pay`);

  await page.goto(server.url);
  await page.fill('[data-testid="signin-secret"]', 'not-a-token');
  await page.click('[data-testid="signin-submit"]');
  await page.waitForSelector('[data-testid="signin-error"]:not([hidden])');
  assert.match(await page.textContent('[data-testid="signin-error"]'), /not valid/);

  await signIn(page, server, server.token);
  assert.equal(await page.textContent('[data-testid="whoami"]'), 'Operator');
  await page.waitForSelector('[data-testid="agent-row"]');
  assert.equal(await page.locator('[data-testid="agent-row"]').count(), 2);
  assert.equal(await page.textContent(`${row(alice)} [data-testid="agent-name"]`), 'alice');
  assert.equal(await page.textContent(`${row(bob)} [data-testid="agent-name"]`), 'bob');
  assert.equal(await page.getAttribute(`${row(alice)} [data-testid="agent-balance"]`, 'data-msat'), '1050000');
  assert.equal(await page.textContent(`${row(bob)} [data-testid="agent-balance"]`), '950 sat');
  await page.waitForSelector('[data-testid="feed-item"][data-action="payment.allowed"]');
  assert.match(await page.textContent('[data-testid="chart-total"]'), /^50 sat paid/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('coffer.secret')), server.token);

  // Freeze and unfreeze from the table.
  await page.click(`${row(bob)} [data-testid="freeze-button"]`);
  await page.waitForSelector(`${row(bob)}[data-frozen="true"]`);
  assert.equal((await server.operator.get(`/v1/agents/${bob.id}`)).frozen, true);
  await page.click(`${row(bob)} [data-testid="unfreeze-button"]`);
  await page.waitForSelector(`${row(bob)}[data-frozen="false"]`);
  assert.equal((await server.operator.get(`/v1/agents/${bob.id}`)).frozen, false);

  // Signing out forgets the secret; a reload then asks for it again.
  await page.click('[data-testid="signout"]');
  await page.waitForSelector('[data-testid="signin-secret"]');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('coffer.secret')), null);
  await page.reload();
  await page.waitForSelector('[data-testid="signin-secret"]');

  await signIn(page, server, server.token);
  await page.waitForSelector(`${row(bob)} [data-testid="budget-bars"], ${row(bob)} td`);
  assert.deepEqual(problems(), []);
});

test('a held payment waits in the approvals queue; Approve pays it', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  await server.operator.put(`/v1/agents/${bob.id}/policy`, {
    approval_above_msat: 10_000,
    budgets: [{ limit_msat: 200_000, window: '1h', kind: 'rolling' }],
  });
  await signIn(page, server, server.token);
  await page.waitForSelector('[data-testid="approvals-empty"]');

  const request = await requestPayment(alice, room, 25_000, 'a large job');
  const held = await bob.api.call('POST', `/v1/rooms/${room.id}/messages/${request.id}/pay`);
  assert.equal(held.status, 202, JSON.stringify(held.body));
  const approval = `[data-testid="approval-row"][data-approval-id="${held.body.id}"]`;

  // It shows up by itself: the dashboard follows the audit trail.
  await page.waitForSelector(approval);
  assert.equal(await page.textContent(`${approval} [data-testid="approval-amount"]`), '25 sat');
  await page.waitForSelector('[data-testid="feed-item"][data-action="payment.held"]');
  assert.equal(await page.textContent('[data-testid="approval-count"]'), '1');

  await page.click(`${approval} [data-testid="approve-button"]`);
  // Approving pays: a confirmation names the amount, the payee and the payer first.
  assert.equal(await page.textContent('[data-testid="confirm-amount"]'), '25 sat (25,000 msat)');
  assert.equal(await page.textContent('[data-testid="confirm-payee"]'), 'alice');
  assert.equal(await page.textContent('[data-testid="confirm-payer"]'), 'bob');
  await checkAccessibility(page, 'the confirmation before approving');
  await page.click('[data-testid="confirm-accept"]');
  await page.waitForSelector(approval, { state: 'detached' });
  await page.waitForSelector('[data-testid="approvals-empty"]');

  const decided = await server.operator.get('/v1/approvals?status=all');
  assert.equal(decided.length, 1);
  assert.equal(decided[0].status, 'approved');
  assert.ok(decided[0].payment_id, 'the approval records its payment');
  const [message] = await bob.api.get(`/v1/rooms/${room.id}/messages`);
  assert.equal(message.invoice.status, 'paid');
  assert.equal(message.receipt.payer, bob.id);
  assert.equal((await alice.api.get('/v1/wallet')).balance_msat, 1_025_000);
  await page.waitForSelector(`${row(bob)} [data-testid="agent-balance"][data-msat="975000"]`);
  // The approved payment is in the feed and counts as spent.
  await page.waitForSelector('[data-testid="feed-item"][data-action="approval.approved"]');
  assert.equal(await page.textContent('[data-testid="spent-hour"]'), '25 sat');
  assert.deepEqual(problems(), []);
});

test('the kill switch halts every payment, behind a confirmation', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  await signIn(page, server, server.token);
  const kill = '[data-testid="kill-switch"]';
  await page.waitForSelector(`${kill}[data-halted="false"]`);

  // Dismissed: nothing changes.
  page.once('dialog', (dialog) => dialog.dismiss());
  await page.click(kill);
  assert.equal((await server.operator.get('/v1/breaker')).halted, false);

  page.once('dialog', (dialog) => {
    assert.equal(dialog.type(), 'confirm');
    assert.match(dialog.message(), /Halt ALL outgoing payments/);
    dialog.accept();
  });
  await page.click(kill);
  await page.waitForSelector('[data-testid="breaker-status"][data-halted="true"]');
  assert.equal((await server.operator.get('/v1/breaker')).halted, true);

  const request = await requestPayment(alice, room, 1_000, 'coffee');
  const refused = await bob.api.call('POST', `/v1/rooms/${room.id}/messages/${request.id}/pay`);
  assert.equal(refused.status, 403);
  assert.equal(refused.body.code, 'gateway-halted');
  await page.waitForSelector('[data-testid="feed-item"][data-action="payment.denied"]');
  assert.match(await page.textContent('[data-testid="feed-item"][data-action="payment.denied"]'), /gateway-halted/);
  assert.equal(await page.getAttribute(`${row(bob)} [data-testid="agent-balance"]`, 'data-msat'), '1000000');

  // Resume, and payments flow again.
  page.once('dialog', (dialog) => dialog.accept());
  await page.click(kill);
  await page.waitForSelector('[data-testid="breaker-status"][data-halted="false"]');
  const paid = await bob.api.call('POST', `/v1/rooms/${room.id}/messages/${request.id}/pay`);
  assert.equal(paid.status, 200, JSON.stringify(paid.body));
  await page.waitForSelector('[data-testid="feed-item"][data-action="payment.allowed"]');

  // The final screenshot shows the halted state.
  page.once('dialog', (dialog) => dialog.accept());
  await page.click(kill);
  await page.waitForSelector('[data-testid="breaker-status"][data-halted="true"]');
  await eventually(async () => (await server.operator.get('/v1/breaker')).halted, { what: 'the breaker' });
  assert.deepEqual(problems(), []);
});
