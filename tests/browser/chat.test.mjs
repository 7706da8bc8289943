// Rooms: payment-request cards that update live, paying from the page,
// what a reload shows, and who may see a room.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { checkAccessibility, launch, requestPayment, setup, signIn } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const card = (message) => `[data-testid="payment-card"][data-message-id="${message.id}"]`;

/** Presses the card's Pay button and confirms in the dialog that names amount, payee and payer. */
async function payFromCard(page, message) {
  await page.click(`${card(message)} [data-testid="pay-button"]`);
  await page.click('[data-testid="confirm-dialog"] [data-testid="confirm-accept"]');
  await page.waitForSelector('[data-testid="confirm-dialog"]', { state: 'detached' });
}

/** Signs `agent` in; its first room opens and goes live. */
async function enterRoom(page, server, agent, room) {
  await signIn(page, server, agent.key);
  await page.waitForSelector(`[data-testid="room-item"][data-room-id="${room.id}"].active`);
  await page.waitForSelector('[data-testid="live-status"][data-state="live"]');
}

test('a payment request appears live for the other member, who pays it from the card', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  await enterRoom(page, server, bob, room);
  assert.equal(await page.textContent('[data-testid="whoami"]'), 'Agent · bob');
  assert.equal(await page.getAttribute('[data-testid="wallet-balance"]', 'data-msat'), '1000000');

  await alice.api.post(`/v1/rooms/${room.id}/messages`, { text: 'I can label your images for 21 sat.' });
  const request = await requestPayment(alice, room, 21_000, 'image labelling');
  await page.waitForSelector('[data-testid="message"]:has-text("label your images")');
  await page.waitForSelector(`${card(request)}[data-status="open"]`);
  assert.equal(await page.textContent(`${card(request)} [data-testid="card-amount"]`), '21 sat');
  assert.match(await page.textContent(card(request)), /21,000 msat/);
  assert.equal(await page.textContent(`${card(request)} [data-testid="card-memo"]`), 'image labelling');

  // The QR code, fetched with the key and shown from a blob URL.
  const qr = await bob.api.call('GET', request.invoice.qr_svg);
  if (qr.status === 200) {
    await page.waitForFunction((sel) => {
      const img = document.querySelector(sel);
      return img?.src.startsWith('blob:') && img.complete && img.naturalWidth > 0;
    }, `${card(request)} [data-testid="qr"]`);
  } else {
    t.diagnostic(`the QR route answered ${qr.status}: the card shows no QR code`);
    await page.waitForSelector(`${card(request)} [data-testid="qr"]`, { state: 'detached' });
  }

  await checkAccessibility(page, 'a room with an open payment card');
  // A confirmation first: cancelled, nothing is paid; confirmed, it pays.
  await page.click(`${card(request)} [data-testid="pay-button"]`);
  await page.waitForSelector('[data-testid="confirm-dialog"]');
  await checkAccessibility(page, 'the confirmation before paying');
  assert.equal(await page.textContent('[data-testid="confirm-amount"]'), '21 sat (21,000 msat)');
  // An agent cannot read other agents' names (the API gives it none): alice by her id's ending.
  assert.ok((await page.textContent('[data-testid="confirm-payee"]')).endsWith(alice.id.slice(-6)));
  assert.equal(await page.textContent('[data-testid="confirm-payer"]'), 'bob (you)');
  await page.click('[data-testid="confirm-cancel"]');
  await page.waitForSelector('[data-testid="confirm-dialog"]', { state: 'detached' });
  assert.equal(await page.getAttribute(card(request), 'data-status'), 'open');
  assert.equal((await bob.api.get('/v1/wallet')).balance_msat, 1_000_000);
  await payFromCard(page, request);
  await page.waitForSelector(`${card(request)}[data-status="paid"]`);
  assert.match(await page.textContent(`${card(request)} [data-testid="receipt-payer"]`), /bob \(you\)/);
  assert.match(await page.textContent(`${card(request)} [data-testid="receipt-preimage"]`), /^[0-9a-f]{64}$/);
  assert.equal(await page.locator(`${card(request)} [data-testid="pay-button"]`).count(), 0);
  await page.waitForSelector('[data-testid="wallet-balance"][data-msat="979000"]');
  assert.equal(await page.textContent('[data-testid="wallet-balance"]'), '979 sat');
  assert.equal((await alice.api.get('/v1/wallet')).balance_msat, 1_021_000);

  // A refusal shows the problem's detail on the card.
  const second = await requestPayment(alice, room, 5_000, 'a second batch');
  await page.waitForSelector(`${card(second)}[data-status="open"]`);
  await server.operator.post(`/v1/agents/${bob.id}/freeze`, { reason: 'audit in progress' });
  await payFromCard(page, second);
  await page.waitForSelector(`${card(second)} [data-testid="pay-error"]`);
  assert.equal(await page.getAttribute(`${card(second)} [data-testid="pay-error"]`, 'data-code'), 'agent-frozen');
  assert.match(await page.textContent(`${card(second)} [data-testid="pay-error"]`), /frozen/i);
  assert.equal(await page.getAttribute(card(second), 'data-status'), 'open');
  assert.equal(await page.getAttribute('[data-testid="wallet-balance"]', 'data-msat'), '979000');
  assert.deepEqual(problems(), []);
});

test('a card paid while the page was closed shows paid after a reload', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  const request = await requestPayment(alice, room, 8_000, 'weather data');
  await enterRoom(page, server, bob, room);
  await page.waitForSelector(`${card(request)}[data-status="open"]`);

  // Leave the page (the tab keeps its session), pay behind its back, come back.
  await page.goto('about:blank');
  const paid = await bob.api.call('POST', `/v1/rooms/${room.id}/messages/${request.id}/pay`);
  assert.equal(paid.status, 200, JSON.stringify(paid.body));
  await page.goto(`${server.url}/#/rooms/${room.id}`);
  await page.waitForSelector(`${card(request)}[data-status="paid"]`);
  assert.equal(await page.textContent(`${card(request)} [data-testid="receipt-preimage"]`), paid.body.preimage);
  assert.equal(await page.getAttribute('[data-testid="wallet-balance"]', 'data-msat'), '992000');

  // And a plain reload shows the same.
  await page.reload();
  await page.waitForSelector(`${card(request)}[data-status="paid"]`);
  await page.waitForSelector('[data-testid="live-status"][data-state="live"]');
  assert.deepEqual(problems(), []);
});

test('an agent writes and asks to be paid from the composer; the payment shows live', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  await enterRoom(page, server, bob, room);
  await page.fill('[data-testid="message-input"]', 'Who needs a summary?');
  await page.click('[data-testid="send-button"]');
  await page.waitForSelector('[data-testid="message"]:has-text("Who needs a summary?")');
  await page.fill('[data-testid="request-amount"]', '3.5');
  await page.fill('[data-testid="request-memo"]', 'one summary');
  await page.click('[data-testid="request-button"]');
  await page.waitForSelector('[data-testid="payment-card"][data-status="open"]');
  // Bob does not pay his own request.
  assert.equal(await page.locator('[data-testid="pay-button"]').count(), 0);

  const messages = await alice.api.get(`/v1/rooms/${room.id}/messages`);
  assert.deepEqual(messages.map((m) => [m.sender, m.kind, m.text]),
    [[bob.id, 'text', 'Who needs a summary?'], [bob.id, 'payment_request', 'one summary']]);
  assert.equal(messages[1].invoice.amount_msat, 3_500);
  const request = messages[1];
  await alice.api.post(`/v1/rooms/${room.id}/messages/${request.id}/pay`);
  await page.waitForSelector(`${card(request)}[data-status="paid"]`);
  assert.match(await page.textContent(`${card(request)} [data-testid="receipt-payer"]`), /^agt_…/);
  await page.waitForSelector('[data-testid="wallet-balance"][data-msat="1003500"]');
  assert.equal(await page.textContent('[data-testid="wallet-balance"]'), '1,003.5 sat');

  // Asked for escrow: alice pays into it, bob may give it back, alice releases it.
  await page.fill('[data-testid="request-amount"]', '2');
  await page.fill('[data-testid="request-memo"]', 'two summaries');
  await page.selectOption('[data-testid="request-kind"]', 'escrow');
  await page.click('[data-testid="request-button"]');
  await page.waitForSelector('[data-testid="payment-card"][data-state="open"]:has-text("two summaries")');
  const [escrowed] = await alice.api.get(`/v1/rooms/${room.id}/messages?after=${request.id}`);
  assert.deepEqual(escrowed.invoice.escrow, { release_after_secs: 3600, on_timeout: 'refund' });
  await page.waitForSelector(`${card(escrowed)}[data-state="open"]`);
  assert.match(await page.textContent(`${card(escrowed)} [data-testid="card-terms"]`), /Paid into escrow/);
  assert.equal(await page.inputValue('[data-testid="request-kind"]'), 'plain');
  const held = await alice.api.post(`/v1/rooms/${room.id}/messages/${escrowed.id}/pay`);
  assert.equal(held.status, 'held');
  await page.waitForSelector(`${card(escrowed)}[data-state="held"][data-actions="cancel"]`);
  await alice.api.post(`/v1/payments/${held.id}/release`);
  await page.waitForSelector(`${card(escrowed)}[data-state="released"][data-actions=""]`);
  await page.waitForSelector('[data-testid="wallet-balance"][data-msat="1005500"]');
  assert.deepEqual(problems(), []);
});

test('the operator watches a room live', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  await signIn(page, server, server.token);
  await page.click('[data-testid="tab-rooms"]');
  await page.waitForSelector(`[data-testid="room-item"][data-room-id="${room.id}"].active`);
  await page.waitForSelector('[data-testid="live-status"][data-state="live"]');

  const request = await requestPayment(alice, room, 13_000, 'translation');
  await page.waitForSelector(`${card(request)}[data-status="open"]`);
  assert.equal(await page.locator(`${card(request)} [data-testid="pay-button"]`).count(), 0, 'the operator does not pay');
  await bob.api.post(`/v1/rooms/${room.id}/messages/${request.id}/pay`);
  await page.waitForSelector(`${card(request)}[data-status="paid"]`);
  assert.match(await page.textContent(`${card(request)} [data-testid="receipt-payer"]`), /^bob$/);
  assert.deepEqual(problems(), []);
});

test('an agent outside the room can neither list nor open it', async (t) => {
  const { server, page, problems, alice, carol, room } = await setup(t, browser, { carol: true });
  await requestPayment(alice, room, 2_000, 'secret plans');
  await signIn(page, server, carol.key);
  await page.waitForSelector('[data-testid="rooms-empty"]');
  assert.equal(await page.locator('[data-testid="room-item"]').count(), 0);

  await page.goto(`${server.url}/#/rooms/${room.id}`);
  await page.waitForSelector('[data-testid="room-error"]:not([hidden])');
  assert.match(await page.textContent('[data-testid="room-error"]'), /not a member/);
  assert.equal(await page.locator('[data-testid="payment-card"], [data-testid="message"]').count(), 0);
  assert.doesNotMatch(await page.textContent('body'), /secret plans/);
  const refused = await carol.api.call('GET', `/v1/rooms/${room.id}/messages`);
  assert.equal(refused.status, 403);
  assert.deepEqual(problems(), []);
});

/** Posts a request asking for a hold or for escrow (`extra`) as `agent`: the message. */
function requestTrade(agent, room, amount_msat, memo, extra) {
  return agent.api.post(`/v1/rooms/${room.id}/messages`, { payment_request: { amount_msat, memo, ...extra } });
}

test('a hold request shows accepted and its payee settles it from the card', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  const request = await requestTrade(alice, room, 30_000, 'a translation', { hold: true, hold_secs: 900 });
  assert.equal(request.invoice.state, 'open');
  await enterRoom(page, server, alice, room);
  await page.waitForSelector(`${card(request)}[data-state="open"]`);
  assert.match(await page.textContent(`${card(request)} [data-testid="card-terms"]`), /within 900 s/);

  // Bob pays: the card goes to accepted live, with the payee's actions.
  const paid = await bob.api.call('POST', `/v1/rooms/${room.id}/messages/${request.id}/pay`);
  assert.equal(paid.status, 200, JSON.stringify(paid.body));
  assert.equal(paid.body.status, 'held');
  await page.waitForSelector(`${card(request)}[data-state="accepted"][data-status="accepted"]`);
  assert.equal(await page.getAttribute(card(request), 'data-actions'), 'settle cancel');
  assert.equal(await page.textContent(`${card(request)} [data-testid="card-status"]`), 'accepted');
  assert.equal(await page.locator(`${card(request)} [data-testid="action-cancel"]`).count(), 1);
  assert.equal(await page.getAttribute('[data-testid="wallet-balance"]', 'data-msat'), '1000000');

  await page.click(`${card(request)} [data-testid="action-settle"]`);
  await page.waitForSelector(`${card(request)}[data-state="paid"][data-status="paid"]`);
  // An agent knows other agents by id only.
  assert.equal(await page.textContent(`${card(request)} [data-testid="receipt-payer"]`), `agt_…${bob.id.slice(-6)}`);
  assert.equal(await page.locator(`${card(request)} [data-testid="action-settle"]`).count(), 0);
  await page.waitForSelector('[data-testid="wallet-balance"][data-msat="1030000"]');
  assert.equal((await bob.api.get('/v1/wallet')).balance_msat, 970_000);
  assert.deepEqual(problems(), []);
});

test('an escrow request: the payer pays, releases or disputes from the card; the operator resolves the dispute', async (t) => {
  const { server, page, problems, alice, bob, room } = await setup(t, browser);
  const escrow = { escrow: { release_after_secs: 3600, on_timeout: 'refund' } };
  const job = await requestTrade(alice, room, 40_000, 'label a batch', escrow);
  // A metered session bob pays alice for, partly charged: bob's wallet lists it.
  const opened = await bob.api.post('/v1/sessions', { payee: alice.id, max_msat: 50_000, expires_in_secs: 600,
    purpose: 'compute' });
  const charged = await alice.api.call('POST', `/v1/sessions/${opened.id}/charges`, { amount_msat: 20_000, memo: 'one unit' },
    { 'Idempotency-Key': 'unit-1' });
  assert.equal(charged.status, 201, JSON.stringify(charged.body));
  await enterRoom(page, server, bob, room);
  const session = `[data-testid="wallet-trades"] [data-testid="session-row"][data-session-id="${opened.id}"]`;
  await page.waitForSelector(session);
  assert.equal(await page.textContent(`${session} [data-testid="session-charged"]`), '20 sat of 50 sat');

  await page.waitForSelector(`${card(job)}[data-state="open"]`);
  await payFromCard(page, job);
  await page.waitForSelector(`${card(job)}[data-state="held"]`);
  assert.equal(await page.getAttribute(card(job), 'data-actions'), 'release dispute');
  const paymentId = (await bob.api.get(`/v1/rooms/${room.id}/messages`))[0].invoice.payment_id;
  const held = `[data-testid="wallet-trades"] [data-testid="escrow-row"][data-payment-id="${paymentId}"]`;
  await page.waitForSelector(`${held}[data-status="held"]`);
  await page.click(`${card(job)} [data-testid="action-release"]`);
  await page.waitForSelector(`${card(job)}[data-state="released"][data-status="paid"]`);
  assert.equal(await page.locator(`${card(job)} [data-testid="action-dispute"]`).count(), 0);
  assert.equal((await alice.api.get('/v1/wallet')).balance_msat, 1_000_000 + 20_000 + 40_000);

  // A bad delivery: disputed from the card, resolved by the operator.
  const bad = await requestTrade(alice, room, 15_000, 'a bad batch', escrow);
  await page.waitForSelector(`${card(bad)}[data-state="open"]`);
  await payFromCard(page, bad);
  await page.waitForSelector(`${card(bad)}[data-state="held"]`);
  await page.click(`${card(bad)} [data-testid="action-dispute"]`);
  await page.waitForSelector(`${card(bad)}[data-state="disputed"]`);
  assert.equal(await page.getAttribute(card(bad), 'data-actions'), '');
  const badId = (await bob.api.get(`/v1/rooms/${room.id}/messages?after=${job.id}`))[0].invoice.payment_id;

  await page.click('[data-testid="signout"]');
  await signIn(page, server, server.token);
  const dispute = `[data-testid="disputes"] [data-testid="escrow-row"][data-payment-id="${badId}"]`;
  await page.waitForSelector(dispute);
  assert.equal(await page.textContent(`${dispute} [data-testid="escrow-amount"]`), '15 sat');
  await page.waitForSelector(`[data-testid="escrows"] [data-testid="escrow-row"][data-payment-id="${badId}"]`);
  // Per agent: bob's open holds and escrows, and his open session.
  await page.selectOption('[data-testid="escrows-filter-agent"]', bob.id);
  const bobSession = `[data-testid="sessions"] [data-testid="session-row"][data-session-id="${opened.id}"]`;
  await page.waitForSelector(bobSession);
  assert.equal(await page.textContent(`${bobSession} [data-testid="session-charged"]`), '20 sat of 50 sat');
  assert.equal(await page.locator('[data-testid="escrows"] [data-testid="escrow-row"]').count(), 1);
  await page.click(`${dispute} [data-testid="resolve-refund"]`);
  await page.waitForSelector('[data-testid="disputes-empty"]');
  await page.waitForSelector('[data-testid="escrows-empty"]');
  await page.waitForSelector(bobSession);
  const resolved = await bob.api.get(`/v1/payments/${badId}`);
  assert.equal(resolved.status, 'refunded');
  assert.equal(resolved.escrow.resolved_by, 'operator');
  // Bob paid the released job and the session's maximum, still open; the disputed job came back.
  const wallet = await bob.api.get('/v1/wallet');
  assert.deepEqual([wallet.balance_msat, wallet.pending_msat], [1_000_000 - 40_000 - 20_000, 30_000]);

  // In the room, the operator reads the card as refunded.
  await page.click('[data-testid="tab-rooms"]');
  await page.waitForSelector(`${card(bad)}[data-state="refunded"][data-status="cancelled"]`);
  assert.deepEqual(problems(), []);
});
