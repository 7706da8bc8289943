// An agent's Nostr Wallet Connect connections in the dashboard: created
// through the form (the URI and its QR code shown once), listed, revoked.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { checkAccessibility, launch, setup, signIn } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

// Nothing listens there: the wallet service retries in the background, and
// connections are created, listed and revoked all the same.
const NWC_ENV = { COFFER_NWC_RELAYS: 'ws://127.0.0.1:9' };
const row = (agent) => `[data-testid="agent-row"][data-agent-id="${agent.id}"]`;
const connection = (id) => `[data-testid="nwc-row"][data-connection-id="${id}"]`;

/** Opens the Wallet Connect panel of `agent` from its row of the agents table. */
async function openPanel(page, agent) {
  await page.click(`${row(agent)} [data-testid="nwc-button"]`);
  await page.waitForSelector('[data-testid="nwc-form"]', { state: 'visible' });
  await page.waitForSelector('[data-testid="nwc-empty"], [data-testid="nwc-table"]');
}

test('an agent’s Wallet Connect connection: created, shown once, listed, revoked', async (t) => {
  const { server, page, context, problems, alice } = await setup(t, browser, { env: NWC_ENV });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(server.url).origin });
  await server.operator.put(`/v1/agents/${alice.id}/policy`, {
    budgets: [{ limit_msat: 200_000, window: '1h', kind: 'rolling' }],
  });
  await signIn(page, server, server.token);
  await openPanel(page, alice);
  assert.match(page.url(), new RegExp(`#/dashboard/${alice.id}$`));
  assert.equal(await page.inputValue('[data-testid="nwc-agent"]'), alice.id);
  assert.match(await page.textContent('[data-testid="nwc-bounds"]'), /alice’s constitution/);
  await page.waitForSelector('[data-testid="nwc-remaining"]');
  assert.match(await page.textContent('[data-testid="nwc-remaining"]'), /200 sat of 200 sat \(1h\)/);
  await page.waitForSelector('[data-testid="nwc-empty"]');
  // Every method is offered, labelled, and checked by default.
  for (const label of ['Get info', 'Get balance', 'Make invoices', 'Pay invoices', 'Look up invoices',
    'List transactions']) {
    assert.equal(await page.getByLabel(label, { exact: true }).isChecked(), true, label);
  }

  // No method: refused before asking the gateway.
  for (const box of await page.locator('[data-testid^="nwc-method-"]').all()) await box.uncheck();
  await page.getByLabel('Name', { exact: true }).fill('phone wallet');
  await page.click('[data-testid="nwc-create"]');
  await page.waitForSelector('[data-testid="nwc-error"]:not([hidden])');
  assert.match(await page.textContent('[data-testid="nwc-error"]'), /at least one method/);

  // A past expiry: the gateway's problem is shown.
  await page.getByLabel('Get balance').check();
  await page.getByLabel('Pay invoices').check();
  await page.getByLabel('Expires (optional)').fill('2020-01-01T00:00');
  await page.click('[data-testid="nwc-create"]');
  await page.waitForFunction(() => /expires_at|future/.test(document.querySelector('[data-testid="nwc-error"]')
    .textContent));
  assert.equal(await page.isVisible('[data-testid="nwc-created"]'), false);
  assert.deepEqual(await server.operator.get(`/v1/agents/${alice.id}/nwc`), []);

  // Created: the QR code and the URI, shown once.
  await page.getByLabel('Expires (optional)').fill('');
  await page.click('[data-testid="nwc-create"]');
  await page.waitForSelector('[data-testid="nwc-created"]:not([hidden])');
  assert.equal(await page.isVisible('[data-testid="nwc-error"]'), false);
  const qr = page.locator('[data-testid="nwc-qr"]');
  assert.match(await qr.getAttribute('src'), /^data:image\/svg\+xml/);
  assert.match(await qr.getAttribute('alt'), /QR code .*phone wallet/);
  assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR image decodes');
  const uri = await page.textContent('[data-testid="nwc-uri"]');
  assert.match(uri, /^nostr\+walletconnect:\/\/[0-9a-f]{64}\?relay=ws%3A%2F%2F127\.0\.0\.1%3A9&secret=[0-9a-f]{64}$/);
  const secret = new URL(uri).searchParams.get('secret');
  assert.match(await page.textContent('[data-testid="nwc-once"]'), /Shown once/);
  await checkAccessibility(page, 'a Wallet Connect connection shown once');
  await page.click('[data-testid="nwc-copy"]');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), uri);

  const [made] = await server.operator.get(`/v1/agents/${alice.id}/nwc`);
  assert.equal(made.name, 'phone wallet');
  assert.deepEqual([...made.methods].sort(), ['get_balance', 'pay_invoice']);
  assert.equal(made.revoked_at, undefined);
  await page.waitForSelector(`${connection(made.id)}[data-status="live"]`);
  assert.equal(await page.textContent(`${connection(made.id)} [data-testid="nwc-row-name"]`), 'phone wallet');
  assert.equal(await page.textContent(`${connection(made.id)} [data-testid="nwc-row-used"]`), 'never');
  assert.match(await page.textContent(`${connection(made.id)} [data-testid="nwc-row-methods"]`), /pay_invoice/);
  // The form is ready for another one.
  assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), '');
  assert.equal(await page.getByLabel('List transactions').isChecked(), true);

  // After a reload (the agent stays chosen in the URL), the connection is
  // listed but its URI is gone from the page.
  await page.reload();
  await page.waitForSelector(`${connection(made.id)}[data-status="live"]`);
  assert.equal(await page.locator('[data-testid="nwc-uri"], [data-testid="nwc-qr"]').count(), 0);
  assert.equal(await page.isVisible('[data-testid="nwc-created"]'), false);
  assert.equal((await page.content()).includes(secret), false, 'the secret is not on the page');

  // Revoke, behind a confirmation: dismissed, nothing changes.
  const revoke = `${connection(made.id)} [data-testid="nwc-revoke"]`;
  assert.equal(await page.getAttribute(revoke, 'aria-label'), 'Revoke phone wallet');
  page.once('dialog', (dialog) => dialog.dismiss());
  await page.click(revoke);
  assert.equal((await server.operator.get(`/v1/agents/${alice.id}/nwc`))[0].revoked_at, undefined);
  page.once('dialog', (dialog) => {
    assert.equal(dialog.type(), 'confirm');
    assert.match(dialog.message(), /Revoke the Wallet Connect connection “phone wallet” of alice/);
    dialog.accept();
  });
  await page.click(revoke);
  await page.waitForSelector(`${connection(made.id)}[data-status="revoked"]`);
  assert.equal(await page.textContent(`${connection(made.id)} [data-testid="nwc-row-status"]`), 'revoked');
  assert.equal(await page.locator(revoke).count(), 0);
  const [revoked] = await server.operator.get(`/v1/agents/${alice.id}/nwc`);
  assert.ok(revoked.revoked_at, 'revoked_at is set');
  assert.deepEqual(problems(), []);
});

test('without relays, creating a connection shows that Wallet Connect is off', async (t) => {
  const { server, page, problems, bob } = await setup(t, browser);
  await signIn(page, server, server.token);
  await openPanel(page, bob);
  await page.getByLabel('Name', { exact: true }).fill('desktop');
  await page.click('[data-testid="nwc-create"]');
  await page.waitForSelector('[data-testid="nwc-error"]:not([hidden])');
  assert.match(await page.textContent('[data-testid="nwc-error"]'), /Nostr Wallet Connect is off.*COFFER_NWC_RELAYS/);
  assert.equal(await page.isVisible('[data-testid="nwc-created"]'), false);
  assert.equal(await page.locator('[data-testid="nwc-empty"]').count(), 1);
  assert.deepEqual(problems(), []);
});
