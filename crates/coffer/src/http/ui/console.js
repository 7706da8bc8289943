// The operator's console: agents (create, fund, sub-agents), an agent's
// page (its tree, budgets, spend, policy, keys, webhooks, holds and
// receipts), the audit log (paged, filtered by the API) and reports. Every
// change goes through the same HTTP API as any client; a refusal shows the
// API's problem as it came.

import {
  $, ApiError, KNOWN_ACTIONS, SPEND_ACTIONS, api, budgetBars, clock, confirmDialog, copyText, escrowRow, every, h,
  isAbort, learnNames, msat, nameOf, panel, pill, renderIfChanged, sat, scrollRegion, shortId, toast, when,
} from './app.js';
import { barChart, columnChart } from './charts.js';

const AGENT_POLL_MS = 5000;
// The API's largest audit page; the log shows pages of this many rows.
const AUDIT_PAGE_ROWS = 50;
const AUDIT_PAGE_MAX = 200;
// An agent's page reads at most this many pages of its records (for the
// spend chart and the receipts): 2,000 records, a bounded read.
const AGENT_AUDIT_PAGES_MAX = 10;
const SPEND_HOURS = 24;
const RECEIPT_ROWS = 20;
const REPORT_GROUPS = ['task', 'tag', 'payee', 'agent', 'tree', 'day'];
const REPORT_CHARTS = ['task', 'tag', 'payee'];
const REPORT_DAYS_DEFAULT = 30;
const KEY_SCOPES = ['spend', 'receive', 'read'];
const HOUR_MS = 3600e3;
const DAY_MS = 24 * HOUR_MS;

// ------------------------------------------------------------ shared parts

/** A refusal as the API put it: its title, detail, code and field, verbatim. */
function problemBox(error, testid = 'problem') {
  if (!error) return h('div', { testid, hidden: true });
  const p = error.problem || {};
  return h('div', { class: 'problem', role: 'alert', testid, data: { code: error.code || '', field: p.field || '' } },
    h('p', { class: 'strong' }, p.title || `HTTP ${error.status || ''}`.trim(), p.status ? ` (${p.status})` : ''),
    p.detail || error.message ? h('p', { testid: `${testid}-detail` }, p.detail || error.message) : null,
    h('dl', { class: 'facts small' },
      p.code ? [h('dt', {}, 'Code'), h('dd', { class: 'mono' }, p.code)] : null,
      p.field ? [h('dt', {}, 'Field'), h('dd', { class: 'mono', testid: `${testid}-field` }, p.field)] : null));
}

/** Shows `error` (an ApiError or an Error) in `slot`; null clears it. */
function showProblem(slot, error, testid) {
  slot.replaceChildren(error ? problemBox(error, testid) : '');
}

/** A secret shown once, with a copy button: the gateway keeps only its hash. */
function secretOnce(title, secret, what) {
  const value = h('code', { class: 'mono small secret', testid: 'secret-value' }, secret);
  const box = h('section', { class: 'secret-once', testid: 'secret-once', 'aria-label': title },
    h('h3', {}, title),
    h('p', { class: 'small' }, h('strong', {}, 'Shown once. '), `Copy ${what} now: the gateway keeps only its hash `,
      'and cannot show it again.'),
    value,
    h('div', { class: 'trade-actions' },
      h('button', { type: 'button', class: 'primary', testid: 'secret-copy', onclick: () => copyText(secret, value) },
        'Copy'),
      h('button', { type: 'button', testid: 'secret-done', onclick: () => box.remove() }, 'Done, hide it')));
  return box;
}

/** A labelled input: [label, input]. */
function field(id, label, input) {
  input.id = id;
  return [h('label', { for: id }, label), input];
}

/** Sats typed by a person, as whole msat; null when it is not a positive amount. */
function satInput(value) {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) return null;
  return Math.round(n * 1000);
}

/** Calls the API with another secret than the session's (a parent's key that creates a sub-agent). */
async function apiAs(secret, path, body) {
  const res = await fetch(path, { method: 'POST', cache: 'no-store',
    headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** Every agent, their names learnt for nameOf. */
async function readAgents(signal) {
  const agents = await api('/v1/agents', { signal });
  learnNames(agents);
  return agents;
}

/** Agents in tree order: each followed by its sub-agents, with its depth. */
function treeOrder(agents) {
  const ids = new Set(agents.map((a) => a.id));
  const children = new Map();
  for (const a of agents) {
    const parent = a.parent_id && ids.has(a.parent_id) ? a.parent_id : '';
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(a);
  }
  const out = [];
  const walk = (parent, depth) => (children.get(parent) || []).forEach((a) => {
    out.push({ agent: a, depth });
    if (depth < 32) walk(a.id, depth + 1); // ids are unique, so no cycle; the bound is a guard
  });
  walk('', 0);
  return out;
}

// ------------------------------------------------------------------ agents

/** #/agents: the list and the forms; #/agents/<id>: one agent's page. */
export function agentsView(arg) {
  let current = null;
  const show = (id) => {
    current?.stop();
    current = id ? agentPage(id) : agentList();
  };
  show(arg);
  return { stop: () => current?.stop(), update: show };
}

function agentList() {
  const ctl = new AbortController();
  const { signal } = ctl;
  let agents = [];
  let treasury = null;
  const table = scrollRegion('Agents', { testid: 'console-agents' });
  const treasuryBox = h('div', { class: 'treasury' });
  const created = h('div', {});
  const createForm = newAgentForm();
  const mint = mintForm();
  const hooks = webhooksPanel({ signal, agentId: null });
  $('view').replaceChildren(h('div', { class: 'console', testid: 'agents-page' },
    h('h1', { class: 'page-title' }, 'Agents'),
    h('div', { class: 'console-grid' },
      panel('New agent', [createForm.element, created], { testid: 'new-agent-panel' }),
      panel('Treasury', [treasuryBox, mint.element], { testid: 'treasury-panel' })),
    panel('All agents', table, { testid: 'agents-list-panel' }),
    hooks.element));

  async function refresh() {
    const [list, t] = await Promise.all([readAgents(signal), api('/v1/treasury', { signal }).catch(() => null)]);
    agents = list;
    treasury = t;
    render();
  }

  function render() {
    createForm.setParents(agents.filter((a) => a.can_create_subagents));
    renderIfChanged(treasuryBox, [treasury], () => h('p', {}, 'Balance ',
      h('span', { class: 'strong', testid: 'treasury-amount', data: { msat: treasury?.balance_msat ?? '' } },
        treasury ? sat(treasury.balance_msat) : '—')));
    renderIfChanged(table, agents, () => {
      if (!agents.length) return h('p', { class: 'empty', testid: 'agents-empty' }, 'No agent yet: create one above.');
      return h('table', { class: 'table' },
        h('caption', { class: 'sr-only' }, 'Agents, each followed by its sub-agents'),
        h('thead', {}, h('tr', {}, ['Agent', 'Balance', 'Sub-agents', 'Status'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, treeOrder(agents).map(({ agent: a, depth }) => h('tr', { testid: 'console-agent-row',
          data: { agentId: a.id, depth } },
        h('td', { class: `depth-${Math.min(depth, 4)}` },
          h('a', { href: `#/agents/${encodeURIComponent(a.id)}`, class: 'strong', testid: 'agent-link' }, a.name),
          h('div', { class: 'mono muted small' }, shortId(a.id), a.parent_id ? ` · sub-agent of ${nameOf(a.parent_id)}` : '')),
        h('td', { class: 'num', testid: 'console-agent-balance', data: { msat: a.balance_msat } }, sat(a.balance_msat)),
        h('td', {}, a.can_create_subagents ? 'may create' : '—'),
        h('td', {}, a.frozen ? pill('Frozen', 'bad') : pill('Active', 'ok'))))));
    });
  }

  /** Name, may-create-sub-agents, an optional parent and an optional first funding. */
  function newAgentForm() {
    const name = h('input', { type: 'text', required: true, maxlength: 64, autocomplete: 'off', testid: 'new-agent-name' });
    const subs = h('input', { type: 'checkbox', id: 'new-agent-subs', testid: 'new-agent-subs' });
    const task = h('input', { type: 'text', maxlength: 128, autocomplete: 'off', testid: 'new-agent-task',
      placeholder: 'none' });
    const parent = h('select', { testid: 'new-agent-parent' });
    const fund = h('input', { type: 'number', min: '0', step: '0.001', testid: 'new-agent-fund', placeholder: '0' });
    const problem = h('div', {});
    const submit = h('button', { type: 'submit', class: 'primary', testid: 'new-agent-submit' }, 'Create agent');
    const element = h('form', { class: 'form', testid: 'new-agent-form', onsubmit: (e) => { e.preventDefault(); create(); } },
      field('new-agent-name-input', 'Name', name),
      field('new-agent-parent-select', 'Parent (for a sub-agent)', parent),
      field('new-agent-task-input', 'Task its payments count under (optional)', task),
      field('new-agent-fund-input', 'Fund with (sat, optional)', fund),
      h('label', { class: 'check', for: 'new-agent-subs' }, subs, 'May create sub-agents'),
      submit, problem);

    function setParents(list) {
      const options = [['', 'None: a top-level agent'], ...list.map((a) => [a.id, a.name])];
      const value = parent.value;
      renderIfChanged(parent, options, () => options.map(([v, label]) => h('option', { value: v }, label)));
      parent.value = options.some(([v]) => v === value) ? value : '';
    }

    async function create() {
      showProblem(problem, null);
      const fundMsat = fund.value ? satInput(fund.value) : 0;
      if (fundMsat === null) return showProblem(problem, new Error('The funding must be a positive number of sats.'));
      submit.disabled = true;
      try {
        const body = { name: name.value, can_create_subagents: subs.checked };
        // Sent only when given: a gateway without cost attribution refuses the field.
        if (task.value.trim()) body.task = task.value.trim();
        const made = parent.value ? await createSubAgent(parent.value, body) : await api('/v1/agents', { method: 'POST', body });
        rememberKey(made.id, { id: made.key_id, scope: 'spend', at: Date.now() });
        if (fundMsat) await api(`/v1/agents/${encodeURIComponent(made.id)}/fund`, { method: 'POST', body: { amount_msat: fundMsat } });
        created.replaceChildren(secretOnce(`Agent “${body.name}” created`, made.key, 'its first spend key'));
        created.firstChild.dataset.agentId = made.id;
        element.reset();
        toast(`Created ${body.name}.`, 'ok');
      } catch (e) {
        showProblem(problem, e);
      } finally {
        submit.disabled = false;
      }
      await refresh().catch(() => {});
    }
    return { element, setParents };
  }

  /**
   * A sub-agent is created with its parent's spend key (the API's rule): the
   * operator issues the parent a short-lived key, creates the sub-agent
   * with it and revokes it at once.
   */
  async function createSubAgent(parentId, body) {
    const expires_at = new Date(Date.now() + 5 * 60e3).toISOString();
    const key = await api(`/v1/agents/${encodeURIComponent(parentId)}/keys`, { method: 'POST',
      body: { scope: 'spend', expires_at } });
    try {
      return await apiAs(key.key, '/v1/agents', body);
    } finally {
      await api(`/v1/keys/${encodeURIComponent(key.id)}`, { method: 'DELETE' }).catch(() => {});
    }
  }

  /** Test funds into the treasury: the gateway allows it in dev mode only, and says so otherwise. */
  function mintForm() {
    const amount = h('input', { type: 'number', min: '0.001', step: '0.001', required: true, testid: 'mint-amount' });
    const problem = h('div', {});
    const element = h('form', { class: 'form inline', testid: 'mint-form', onsubmit: async (e) => {
      e.preventDefault();
      showProblem(problem, null);
      const amount_msat = satInput(amount.value);
      if (amount_msat === null) return showProblem(problem, new Error('Type a positive number of sats.'));
      try {
        await api('/v1/treasury/mint', { method: 'POST', body: { amount_msat } });
        toast(`Minted ${sat(amount_msat)} into the treasury.`, 'ok');
        element.reset();
      } catch (err) { showProblem(problem, err); }
      return refresh().catch(() => {});
    } }, field('mint-amount-input', 'Mint test funds (sat, dev mode)', amount),
    h('button', { type: 'submit', testid: 'mint-submit' }, 'Mint'), problem);
    return { element };
  }

  every(AGENT_POLL_MS, signal, refresh, (e) => e && toast(`Could not read the agents: ${e.message}`, 'error'));
  return { stop: () => ctl.abort() };
}

// ---------------------------------------------------------- an agent's page

function agentPage(agentId) {
  const ctl = new AbortController();
  const { signal } = ctl;
  const path = `/v1/agents/${encodeURIComponent(agentId)}`;
  const el = {
    head: h('div', { class: 'agent-head' }),
    tree: h('div', { testid: 'agent-tree' }),
    budgets: h('div', { testid: 'agent-budgets' }),
    chart: h('div', { class: 'chart', testid: 'agent-spend' }),
    holds: h('div', { testid: 'agent-holds' }),
    receipts: scrollRegion('Receipts', { testid: 'agent-receipts' }),
  };
  const fund = fundForm();
  const policy = policyEditor();
  const keys = keysPanel();
  const hooks = webhooksPanel({ signal, agentId });
  $('view').replaceChildren(h('div', { class: 'console', testid: 'agent-page', data: { agentId } },
    h('p', { class: 'trade-actions' }, h('a', { href: '#/agents', testid: 'back-to-agents' }, '← All agents'),
      h('a', { href: `#/dashboard/${encodeURIComponent(agentId)}`, testid: 'agent-nwc-link' }, 'Wallet Connect connections')),
    el.head,
    h('div', { class: 'console-grid' },
      panel('Tree', el.tree, { testid: 'tree-panel' }),
      panel('Fund', fund.element, { testid: 'fund-panel' })),
    h('div', { class: 'console-grid' },
      panel('Budgets', el.budgets, { testid: 'budgets-panel' }),
      panel(`Spend per hour · last ${SPEND_HOURS} hours`, el.chart, { testid: 'agent-chart-panel' })),
    panel('Holds & approvals', el.holds, { testid: 'holds-panel' }),
    panel(`Receipts · last ${SPEND_HOURS} hours`, el.receipts, { testid: 'receipts-panel' }),
    panel('Policy', policy.element, { testid: 'policy-panel' }),
    keys.element,
    hooks.element));

  let agent = null;
  async function refresh() {
    const [a, agents, budget, approvals, escrows, records] = await Promise.all([
      api(path, { signal }), readAgents(signal), api(`${path}/budget`, { signal }).catch(() => null),
      api('/v1/approvals', { signal }).catch(() => []),
      api(`/v1/escrows?agent_id=${encodeURIComponent(agentId)}`, { signal }).catch(() => []),
      agentRecords(signal, agentId)]);
    agent = a;
    renderHead(a);
    renderTree(a, agents);
    renderIfChanged(el.budgets, [budget], () => budgetBars(budget));
    renderSpend(records);
    renderHolds(approvals.filter((x) => x.agent_id === agentId), escrows);
    renderReceipts(records);
    keys.render();
    if (!policy.loaded) await policy.load();
  }

  function renderHead(a) {
    renderIfChanged(el.head, [a], () => [
      h('h1', { class: 'page-title', testid: 'agent-title' }, a.name),
      h('p', { class: 'mono muted small' }, a.id),
      h('div', { class: 'stats' },
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'Balance'),
          h('span', { class: 'stat-value', testid: 'agent-page-balance', data: { msat: a.balance_msat } }, sat(a.balance_msat))),
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'Pending'),
          h('span', { class: 'stat-value' }, sat(a.pending_msat))),
        a.task ? h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'Task'),
          h('span', { class: 'stat-value', testid: 'agent-task' }, a.task)) : null,
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'Status'),
          h('span', { class: 'stat-value' }, a.frozen ? pill('Frozen', 'bad') : pill('Active', 'ok'))))]);
  }

  function renderTree(a, agents) {
    const byId = new Map(agents.map((x) => [x.id, x]));
    const link = (x) => h('a', { href: `#/agents/${encodeURIComponent(x.id)}`, testid: 'tree-link',
      data: { agentId: x.id } }, x.name);
    const children = agents.filter((x) => x.parent_id === a.id);
    const parent = a.parent_id ? byId.get(a.parent_id) : null;
    renderIfChanged(el.tree, [a.parent_id, parent?.name, children.map((c) => [c.id, c.name])], () => h('dl', { class: 'facts' },
      h('dt', {}, 'Parent'), h('dd', { testid: 'tree-parent' }, parent ? link(parent) : a.parent_id ? shortId(a.parent_id) : 'none (top level)'),
      h('dt', {}, 'Sub-agents'), h('dd', { testid: 'tree-children' }, children.length
        ? h('ul', { class: 'plain' }, children.map((c) => h('li', {}, link(c), ' ', h('span', { class: 'muted small' }, sat(c.balance_msat)))))
        : a.can_create_subagents ? 'none yet' : 'none (it may not create any)')));
  }

  function renderSpend(records) {
    const end = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    const start = end - (SPEND_HOURS - 1) * HOUR_MS;
    const buckets = new Array(SPEND_HOURS).fill(0);
    for (const { record: r } of records) {
      if (!SPEND_ACTIONS.includes(r.action) || r.agent_id !== agentId || r.at_ms < start) continue;
      const i = Math.floor((r.at_ms - start) / HOUR_MS);
      if (i >= 0 && i < SPEND_HOURS) buckets[i] += r.amount_msat || 0;
    }
    const total = buckets.reduce((x, y) => x + y, 0);
    const label = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    renderIfChanged(el.chart, [start, buckets], () => [
      h('div', { class: 'chart-total', testid: 'agent-spend-total', data: { msat: total } },
        `${sat(total)} paid in the last ${SPEND_HOURS} hours`),
      columnChart(buckets.map((value, i) => ({ label: label(start + i * HOUR_MS), value })),
        { title: `Spend per hour of ${agent?.name || 'the agent'}, ${sat(total)} in total`, every: 6,
          testid: 'agent-spend-chart' })]);
  }

  function renderHolds(approvals, escrows) {
    const open = escrows.filter((e) => e.status === 'held' || e.status === 'disputed');
    renderIfChanged(el.holds, [approvals, open], () => [
      h('h3', {}, 'Waiting for approval'),
      approvals.length ? h('ul', { class: 'approvals', testid: 'agent-approvals' }, approvals.map((a) =>
        h('li', { class: 'approval', testid: 'agent-approval', data: { approvalId: a.id } },
          h('span', { class: 'amount' }, sat(a.amount_msat)), ' ',
          h('span', { class: 'muted' }, a.payee_agent_id ? `to ${nameOf(a.payee_agent_id)} · ` : '', a.purpose || 'no purpose given',
            ` · expires ${clock(a.expires_at)}`))))
        : h('p', { class: 'empty', testid: 'agent-approvals-empty' }, 'No payment of this agent waits for approval.'),
      h('h3', {}, 'Holds and escrows'),
      open.length ? h('ul', { class: 'trades' }, open.map((e) => escrowRow(e)))
        : h('p', { class: 'empty', testid: 'agent-holds-empty' }, 'No money of this agent waits in a hold or an escrow.')]);
  }

  function renderReceipts(records) {
    const paid = records.filter(({ record: r }) => SPEND_ACTIONS.includes(r.action) && r.agent_id === agentId)
      .slice(-RECEIPT_ROWS).reverse();
    renderIfChanged(el.receipts, paid.map((r) => r.seq), () => (paid.length
      ? h('table', { class: 'table' },
        h('caption', { class: 'sr-only' }, 'The agent’s latest payments'),
        h('thead', {}, h('tr', {}, ['Time', 'Amount', 'Payee', 'Purpose', 'Record'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, paid.map(({ seq, record: r }) => h('tr', { testid: 'receipt-row', data: { seq } },
          h('td', { class: 'nowrap' }, when(r.at_ms)),
          h('td', { class: 'num nowrap', data: { msat: r.amount_msat } }, sat(r.amount_msat || 0)),
          h('td', {}, nameOf(r.payee)),
          h('td', { class: 'small' }, r.purpose || ''),
          h('td', { class: 'mono small' }, `#${seq}`)))))
      : h('p', { class: 'empty', testid: 'receipts-empty' }, 'No payment by this agent yet.')));
  }

  function fundForm() {
    const amount = h('input', { type: 'number', min: '0.001', step: '0.001', required: true, testid: 'fund-amount' });
    const problem = h('div', {});
    const submit = h('button', { type: 'submit', class: 'primary', testid: 'fund-submit' }, 'Fund from the treasury');
    const element = h('form', { class: 'form', testid: 'fund-form', onsubmit: async (e) => {
      e.preventDefault();
      showProblem(problem, null);
      const amount_msat = satInput(amount.value);
      if (amount_msat === null) return showProblem(problem, new Error('Type a positive number of sats.'));
      submit.disabled = true;
      try {
        const done = await api(`${path}/fund`, { method: 'POST', body: { amount_msat } });
        toast(`Funded ${sat(amount_msat)}: the balance is ${sat(done.balance_msat)}.`, 'ok');
        element.reset();
      } catch (err) { showProblem(problem, err, 'fund-problem'); } finally { submit.disabled = false; }
      return refresh().catch(() => {});
    } }, field('fund-amount-input', 'Amount (sat)', amount), submit, problem);
    return { element };
  }

  /** The policy as JSON: checked here for syntax, then by the API, whose refusal is shown verbatim. */
  function policyEditor() {
    const text = h('textarea', { rows: 14, spellcheck: 'false', class: 'mono small', testid: 'policy-text' });
    const problem = h('div', {});
    const save = h('button', { type: 'submit', class: 'primary', testid: 'policy-save' }, 'Save policy');
    const state = { loaded: false };
    const element = h('form', { class: 'form', testid: 'policy-form', onsubmit: async (e) => {
      e.preventDefault();
      showProblem(problem, null);
      let body;
      try { body = JSON.parse(text.value); } catch (err) {
        return showProblem(problem, new ApiError(0, { title: 'Not JSON', detail: err.message, code: 'invalid-json' }),
          'policy-problem');
      }
      save.disabled = true;
      try {
        const saved = await api(`${path}/policy`, { method: 'PUT', body });
        text.value = JSON.stringify(saved ?? body, null, 2);
        toast('Policy saved.', 'ok');
      } catch (err) { showProblem(problem, err, 'policy-problem'); } finally { save.disabled = false; }
      return refresh().catch(() => {});
    } }, field('policy-text-input', 'Constitution (JSON)', text),
    h('p', { class: 'muted small' }, 'Budgets, approval thresholds and payee rules as the API takes them (',
      h('code', {}, 'PUT /v1/agents/{id}/policy'), '); the gateway checks every field and names the one it refuses.'),
    save, problem);
    state.element = element;
    state.load = async () => {
      const current = await api(`${path}/policy`, { signal });
      text.value = JSON.stringify(current, null, 2);
      state.loaded = true;
    };
    return state;
  }

  /**
   * Issue a key (its secret shown once) and revoke keys. The API lists no
   * keys (and does not audit them), so the page lists those issued from this
   * tab (`rememberKey`), and revokes any other by its id.
   */
  function keysPanel() {
    const scope = h('select', { testid: 'key-scope' }, KEY_SCOPES.map((x) => h('option', { value: x }, x)));
    const expires = h('input', { type: 'datetime-local', testid: 'key-expires' });
    const problem = h('div', {});
    const shown = h('div', {});
    const list = h('div', { testid: 'keys-list' });
    const form = h('form', { class: 'form inline', testid: 'key-form', onsubmit: async (e) => {
      e.preventDefault();
      showProblem(problem, null);
      const body = { scope: scope.value };
      if (expires.value) body.expires_at = new Date(expires.value).toISOString();
      try {
        const made = await api(`${path}/keys`, { method: 'POST', body });
        rememberKey(agentId, { id: made.id, scope: made.scope, at: Date.now() });
        shown.replaceChildren(secretOnce(`New ${made.scope} key ${made.id}`, made.key, 'the key'));
        form.reset();
      } catch (err) { showProblem(problem, err, 'key-problem'); }
      render();
    } }, field('key-scope-select', 'Scope', scope), field('key-expires-input', 'Expires (optional)', expires),
    h('button', { type: 'submit', class: 'primary', testid: 'key-issue' }, 'Issue key'), problem);
    const byId = h('input', { type: 'text', required: true, autocomplete: 'off', placeholder: 'key_…', testid: 'revoke-id' });
    const other = h('form', { class: 'form inline', testid: 'revoke-form', onsubmit: (e) => {
      e.preventDefault();
      revoke(e.submitter, byId.value.trim()).then(() => other.reset());
    } }, field('revoke-id-input', 'Revoke another key by its id', byId),
    h('button', { type: 'submit', class: 'danger-outline', testid: 'revoke-submit' }, 'Revoke'));
    const element = panel('Keys', [form, shown, h('h3', {}, 'Issued from this tab'), list, other], { testid: 'keys-panel' });

    function render() {
      const keys = knownKeys(agentId);
      renderIfChanged(list, keys, () => (keys.length ? h('ul', { class: 'plain keys' }, keys.map((k) =>
        h('li', { testid: 'key-row', data: { keyId: k.id, revoked: String(Boolean(k.revoked)) } },
          h('span', { class: 'mono small' }, k.id), ' ',
          h('span', { class: 'muted small' }, `${k.scope || 'spend'} · issued ${when(k.at)}`), ' ',
          k.revoked ? pill('revoked', 'muted') : h('button', { type: 'button', class: 'danger-outline', testid: 'key-revoke',
            'aria-label': `Revoke key ${k.id}`, onclick: (e) => revoke(e.currentTarget, k.id) }, 'Revoke'))))
        : h('p', { class: 'muted small' }, 'No key issued from this tab.')));
    }

    async function revoke(button, id) {
      const sure = await confirmDialog({ title: 'Revoke this key?', confirmLabel: 'Revoke', danger: true,
        facts: [['Key', id, 'confirm-key'], ['Agent', agent?.name || agentId, 'confirm-agent']] });
      if (!sure) return;
      if (button) button.disabled = true;
      try {
        await api(`/v1/keys/${encodeURIComponent(id)}`, { method: 'DELETE' });
        rememberKey(agentId, { id, revoked: true });
        toast(`Revoked ${id}.`, 'ok');
      } catch (err) {
        showProblem(problem, err, 'key-problem');
      } finally {
        if (button) button.disabled = false;
      }
      render();
    }
    return { element, render };
  }

  every(AGENT_POLL_MS, signal, refresh, (e) => {
    if (!e) return;
    if (e.status === 404) {
      $('view').replaceChildren(h('p', { class: 'empty', testid: 'agent-missing' }, 'There is no such agent. ',
        h('a', { href: '#/agents' }, 'All agents')));
      ctl.abort();
    } else toast(`Could not read the agent: ${e.message}`, 'error');
  });
  return { stop: () => ctl.abort() };
}

// Keys issued from this tab, per agent (ids only, never a secret), in its
// sessionStorage like the session itself; the newest `KEYS_KEPT` of each.
const KEYS_KEPT = 50;
const keysStorage = (agentId) => `coffer.keys.${agentId}`;

function knownKeys(agentId) {
  try {
    const keys = JSON.parse(sessionStorage.getItem(keysStorage(agentId)) || '[]');
    return Array.isArray(keys) ? keys : [];
  } catch {
    return [];
  }
}

/** Adds a key to the agent's list, or updates it (`revoked`). */
function rememberKey(agentId, key) {
  const keys = knownKeys(agentId);
  const found = keys.find((k) => k.id === key.id);
  if (found) Object.assign(found, key);
  else keys.unshift(key);
  sessionStorage.setItem(keysStorage(agentId), JSON.stringify(keys.slice(0, KEYS_KEPT)));
}

/**
 * An agent's audit records of the last `SPEND_HOURS`, oldest first: at most
 * `AGENT_AUDIT_PAGES_MAX` pages (an agent busier than that shows the first
 * ones of the window).
 */
async function agentRecords(signal, agentId) {
  const rows = [];
  const since = new Date(Date.now() - SPEND_HOURS * HOUR_MS).toISOString();
  let after = 0;
  for (let page = 0; page < AGENT_AUDIT_PAGES_MAX; page++) {
    const query = new URLSearchParams({ agent_id: agentId, since, after, limit: AUDIT_PAGE_MAX });
    const got = await api(`/v1/audit?${query}`, { signal });
    rows.push(...got);
    if (got.length < AUDIT_PAGE_MAX) break;
    after = got[got.length - 1].seq;
  }
  return rows;
}

// ---------------------------------------------------------------- webhooks

/** The webhooks of one agent (`agentId`) or of the whole gateway (null): list, create (secret once), delete. */
function webhooksPanel({ signal, agentId }) {
  const url = h('input', { type: 'url', required: true, maxlength: 2048, placeholder: 'the receiver’s URL', testid: 'webhook-url' });
  const types = h('input', { type: 'text', placeholder: 'all events', testid: 'webhook-types', autocomplete: 'off' });
  const problem = h('div', {});
  const shown = h('div', {});
  const list = scrollRegion(agentId ? 'Webhooks of this agent' : 'Webhooks', { testid: 'webhooks-list' });
  const prefix = agentId ? 'agent-webhook' : 'webhook';
  const form = h('form', { class: 'form inline', testid: 'webhook-form', onsubmit: async (e) => {
    e.preventDefault();
    showProblem(problem, null);
    const body = { url: url.value.trim(), types: types.value.split(/[\s,]+/).filter(Boolean) };
    if (agentId) body.agent_id = agentId;
    try {
      const made = await api('/v1/webhooks', { method: 'POST', body });
      shown.replaceChildren(secretOnce(`Webhook ${made.id} created`, made.secret, 'its signing secret'));
      form.reset();
    } catch (err) { showProblem(problem, err, 'webhook-problem'); }
    return refresh().catch(() => {});
  } }, field(`${prefix}-url-input`, 'URL', url), field(`${prefix}-types-input`, 'Event types (comma separated)', types),
  h('button', { type: 'submit', class: 'primary', testid: 'webhook-create' }, 'Add webhook'), problem);
  const element = panel(agentId ? 'Webhooks of this agent' : 'Webhooks', [form, shown, list], { testid: 'webhooks-panel' });

  async function refresh() {
    const all = await api('/v1/webhooks', { signal });
    const rows = all.filter((w) => (agentId ? w.agent_id === agentId : true));
    renderIfChanged(list, rows, () => (rows.length ? h('table', { class: 'table' },
      h('caption', { class: 'sr-only' }, 'Webhooks'),
      h('thead', {}, h('tr', {}, ['URL', 'Agent', 'Types', 'Delivered through', 'State'].map((c) => h('th', { scope: 'col' }, c)),
        h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, rows.map((w) => h('tr', { testid: 'webhook-row', data: { webhookId: w.id } },
        h('td', { class: 'mono small' }, w.url),
        h('td', {}, w.agent_id ? nameOf(w.agent_id) : 'all'),
        h('td', { class: 'small' }, w.types.length ? w.types.join(', ') : 'all'),
        h('td', { class: 'num' }, String(w.delivered_through)),
        h('td', {}, w.paused ? pill(`paused · ${w.failures} failures`, 'warn') : pill('active', 'ok')),
        h('td', {}, h('button', { type: 'button', class: 'danger-outline', testid: 'webhook-delete',
          'aria-label': `Delete the webhook to ${w.url}`, onclick: (e) => remove(e.currentTarget, w) }, 'Delete'))))))
      : h('p', { class: 'empty', testid: 'webhooks-empty' }, 'No webhook.')));
  }

  async function remove(button, w) {
    const sure = await confirmDialog({ title: 'Delete this webhook?', confirmLabel: 'Delete', danger: true,
      facts: [['URL', w.url, 'confirm-url']] });
    if (!sure) return;
    button.disabled = true;
    try {
      await api(`/v1/webhooks/${encodeURIComponent(w.id)}`, { method: 'DELETE' });
      toast('Webhook deleted.', 'ok');
    } catch (err) { toast(err.message, 'error'); button.disabled = false; }
    await refresh().catch(() => {});
  }

  every(AGENT_POLL_MS, signal, refresh, (e) => e && !isAbort(e) && showProblem(problem, e, 'webhook-problem'));
  return { element, refresh };
}

// --------------------------------------------------------------- audit log

/**
 * #/audit: the audit trail, filtered by the API (`agent_id`, `action`,
 * `since`, `until`) and paged with its `after` cursor, which reads forward
 * only: the pages go from the oldest record of the chosen time range to the
 * newest, and "Previous" goes back through the cursors already seen.
 */
export function auditView() {
  const ctl = new AbortController();
  const { signal } = ctl;
  const cursors = [0]; // the `after` of each page read so far
  let rows = [];
  const agent = h('select', { testid: 'audit-agent' });
  const action = h('select', { testid: 'audit-action' });
  const from = h('input', { type: 'datetime-local', testid: 'audit-from' });
  const to = h('input', { type: 'datetime-local', testid: 'audit-to' });
  const table = scrollRegion('Audit records', { testid: 'audit-log' });
  const pager = h('div', { class: 'pager' });
  const problem = h('div', {});
  from.value = localInput(Date.now() - DAY_MS);
  const filters = h('form', { class: 'filters wrap', testid: 'audit-filters', onsubmit: (e) => { e.preventDefault(); restart(); } },
    field('audit-agent-select', 'Agent', agent), field('audit-action-select', 'Action', action),
    field('audit-from-input', 'From', from), field('audit-to-input', 'To', to),
    h('button', { type: 'submit', class: 'primary', testid: 'audit-apply' }, 'Apply'));
  $('view').replaceChildren(h('div', { class: 'console', testid: 'audit-page' },
    h('h1', { class: 'page-title' }, 'Audit log'),
    panel('Records', [filters, problem, table, pager], { testid: 'audit-log-panel' })));

  async function options() {
    const agents = await readAgents(signal).catch(() => []);
    agent.replaceChildren(h('option', { value: '' }, 'All agents'), ...agents.map((a) => h('option', { value: a.id }, a.name)));
    action.replaceChildren(h('option', { value: '' }, 'All actions'),
      ...[...new Set(KNOWN_ACTIONS)].sort().map((x) => h('option', { value: x }, x)));
  }

  function query(after) {
    const q = new URLSearchParams({ after, limit: AUDIT_PAGE_ROWS });
    if (agent.value) q.set('agent_id', agent.value);
    if (action.value) q.set('action', action.value);
    if (from.value) q.set('since', new Date(from.value).toISOString());
    if (to.value) q.set('until', new Date(to.value).toISOString());
    return q;
  }

  async function load() {
    showProblem(problem, null);
    try {
      rows = await api(`/v1/audit?${query(cursors[cursors.length - 1])}`, { signal });
    } catch (e) {
      if (isAbort(e)) return;
      rows = [];
      showProblem(problem, e, 'audit-problem');
    }
    render();
  }

  function restart() {
    cursors.splice(1);
    load();
  }

  function render() {
    table.replaceChildren(rows.length ? h('table', { class: 'table audit', testid: 'audit-table' },
      h('caption', { class: 'sr-only' }, 'Audit records, oldest first'),
      h('thead', {}, h('tr', {}, ['#', 'Time', 'Action', 'Actor', 'Agent', 'Amount', 'Payee', 'Purpose', 'Rule', 'Detail']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map(auditRow)))
      : h('p', { class: 'empty', testid: 'audit-empty' }, 'No record matches.'));
    const page = cursors.length;
    pager.replaceChildren(
      h('button', { type: 'button', testid: 'audit-prev', disabled: page === 1, onclick: () => { cursors.pop(); load(); } },
        '← Previous'),
      h('span', { class: 'muted small', testid: 'audit-page-number' }, `Page ${page}`),
      h('button', { type: 'button', testid: 'audit-next', disabled: rows.length < AUDIT_PAGE_ROWS,
        onclick: () => { cursors.push(rows[rows.length - 1].seq); load(); } }, 'Next →'));
  }

  function auditRow({ seq, record: r }) {
    const verb = r.action.split('.')[1] || '';
    return h('tr', { testid: 'audit-row', data: { action: r.action, seq } },
      h('td', { class: 'mono muted' }, seq),
      h('td', { class: 'nowrap', title: when(r.at_ms) }, `${new Date(r.at_ms).toLocaleDateString()} ${clock(r.at_ms)}`),
      h('td', {}, h('span', { class: `action ${verb}` }, r.action)),
      h('td', {}, nameOf(r.actor)),
      h('td', { testid: 'audit-agent-name' }, r.agent_id ? nameOf(r.agent_id) : ''),
      h('td', { class: 'num nowrap' }, r.amount_msat != null ? sat(r.amount_msat) : ''),
      h('td', {}, r.payee ? nameOf(r.payee) : ''),
      h('td', { class: 'small purpose' }, r.purpose || ''),
      h('td', { class: 'mono small' }, r.rule || ''),
      h('td', { class: 'small detail' }, r.detail || ''));
  }

  options().then(load);
  return { stop: () => ctl.abort() };
}

/** A time as a `datetime-local` input's value (local time, minutes). */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 16);
}

// ----------------------------------------------------------------- reports

/**
 * #/reports: spend by task, tag and payee as charts, and a table of any
 * grouping (with its CSV), from `GET /v1/reports/spend`. A gateway without
 * that route (404) gets a clear empty state, not an error.
 */
export function reportsView() {
  const ctl = new AbortController();
  const { signal } = ctl;
  const from = h('input', { type: 'date', testid: 'report-from' });
  const to = h('input', { type: 'date', testid: 'report-to' });
  const group = h('select', { testid: 'report-group' }, REPORT_GROUPS.map((g) => h('option', { value: g }, g)));
  // The API counts whole UTC days, `to` included.
  from.value = new Date(Date.now() - (REPORT_DAYS_DEFAULT - 1) * DAY_MS).toISOString().slice(0, 10);
  to.value = new Date().toISOString().slice(0, 10);
  const charts = h('div', { class: 'console-grid three' });
  const table = scrollRegion('Report rows', { testid: 'report-table-wrap' });
  const state = h('div', { testid: 'report-state' });
  const csv = h('button', { type: 'button', testid: 'report-csv', onclick: () => downloadCsv() }, 'Download CSV');
  const form = h('form', { class: 'filters wrap', testid: 'report-filters', onsubmit: (e) => { e.preventDefault(); load(); } },
    field('report-from-input', 'From (UTC day)', from), field('report-to-input', 'To (UTC day, included)', to),
    field('report-group-select', 'Table grouped by', group),
    h('button', { type: 'submit', class: 'primary', testid: 'report-apply' }, 'Show'), csv);
  $('view').replaceChildren(h('div', { class: 'console', testid: 'reports-page' },
    h('h1', { class: 'page-title' }, 'Reports'),
    panel('Spend', [form, state], { testid: 'report-panel' }),
    charts,
    panel('Rows', table, { testid: 'report-rows-panel' })));

  const range = () => {
    const q = new URLSearchParams();
    if (from.value) q.set('from', from.value);
    if (to.value) q.set('to', to.value);
    return q;
  };
  const url = (groupBy, extra = {}) => {
    const q = range();
    q.set('group_by', groupBy);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return `/v1/reports/spend?${q}`;
  };

  async function load() {
    state.replaceChildren(h('p', { class: 'muted small' }, 'Reading…'));
    try {
      const [tableReport, ...chartReports] = await Promise.all([group.value, ...REPORT_CHARTS]
        .map((g) => api(url(g), { signal })));
      state.replaceChildren();
      charts.replaceChildren(...REPORT_CHARTS.map((g, i) => reportChart(g, chartReports[i])));
      table.replaceChildren(reportTable(tableReport));
      csv.disabled = false;
    } catch (e) {
      if (isAbort(e)) return;
      charts.replaceChildren();
      table.replaceChildren();
      csv.disabled = true;
      state.replaceChildren(e.status === 404
        ? h('p', { class: 'empty', testid: 'report-unavailable' },
          'This gateway has no spend reports (GET /v1/reports/spend answered 404): it predates them.')
        : problemBox(e, 'report-problem'));
    }
  }

  async function downloadCsv() {
    try {
      const res = await fetch(url(group.value, { format: 'csv' }), { headers: { Authorization: authOf() }, cache: 'no-store' });
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
      const link = h('a', { href: URL.createObjectURL(await res.blob()), download: `spend-by-${group.value}.csv` });
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    } catch (e) { toast(e.message, 'error'); }
  }

  load();
  return { stop: () => ctl.abort() };
}

/** The session's Authorization header, for a download read with fetch(). */
function authOf() {
  return `Bearer ${sessionStorage.getItem('coffer.secret') || ''}`;
}

const rowLabel = (r) => r.label || (r.key ? nameOf(r.key) : '(none)');

function reportChart(groupBy, report) {
  const rows = [...report.rows].sort((a, b) => b.amount_msat - a.amount_msat);
  const total = rows.reduce((sum, r) => sum + r.amount_msat, 0);
  return panel(`By ${groupBy}`, [
    h('p', { class: 'chart-total', testid: `report-total-${groupBy}`, data: { msat: total } }, `${sat(total)} in total`),
    rows.length
      ? barChart(rows.map((r) => ({ label: rowLabel(r), value: r.amount_msat })),
        { title: `Spend by ${groupBy}, ${sat(total)} in total`, testid: `report-chart-${groupBy}` })
      : h('p', { class: 'empty', testid: `report-empty-${groupBy}` }, 'No payment in this range.'),
  ], { testid: `report-chart-panel-${groupBy}`, cls: 'chart' });
}

function reportTable(report) {
  if (!report.rows.length) return h('p', { class: 'empty', testid: 'report-rows-empty' }, 'No payment in this range.');
  return h('table', { class: 'table', testid: 'report-table', data: { groupBy: report.group_by } },
    h('caption', { class: 'sr-only' }, `Spend by ${report.group_by}`),
    h('thead', {}, h('tr', {}, [report.group_by, 'Payments', 'Amount', 'Fees'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, report.rows.map((r) => h('tr', { testid: 'report-row', data: { key: r.key, msat: r.amount_msat } },
      h('td', {}, rowLabel(r), r.label && r.key !== r.label ? h('div', { class: 'mono muted small' }, shortId(r.key)) : null),
      h('td', { class: 'num' }, String(r.payments)),
      h('td', { class: 'num', title: msat(r.amount_msat) }, sat(r.amount_msat)),
      h('td', { class: 'num', title: msat(r.fee_msat) }, sat(r.fee_msat))))));
}
