// coffer's web UI: plain DOM, no framework, no build step.
//
// Sign in with the operator token (the dashboard and every room) or an
// agent key (that agent's wallet and rooms). The secret stays in this tab's
// sessionStorage and goes in the Authorization header of every request, so
// room events are read with fetch() and a stream parser (EventSource cannot
// send headers) and QR codes are fetched and shown through blob URLs.

import { columnChart } from './charts.js';
import { agentsView, auditView, reportsView } from './console.js';

const SECRET_KEY = 'coffer.secret';
const SVG_NS = 'http://www.w3.org/2000/svg';
const PAGE = 200; // the API's largest page
const AUDIT_POLL_MS = 1000;
const STATE_POLL_MS = 5000;
const AUDIT_KEPT = 5000; // records held for the feed, the chart and the log
const FEED_ROWS = 50;
const CHART_MINUTES = 30;
// The live feed's records, with their label and colour. A held payment that
// is approved is paid then, and recorded as `approval.approved` only.
const FEED_KINDS = {
  'payment.allowed': ['allowed', 'ok'],
  'payment.held': ['held', 'warn'],
  'payment.denied': ['denied', 'bad'],
  'approval.approved': ['approved', 'ok'],
  'approval.denied': ['refused', 'bad'],
  'approval.expired': ['expired', 'muted'],
};
// The records of money that left a wallet: the spend chart adds them up.
const SPEND_ACTIONS = ['payment.allowed', 'approval.approved'];
// The audit log's action filter offers these, and any other action seen.
const KNOWN_ACTIONS = [
  ...Object.keys(FEED_KINDS),
  'agent.created', 'agent.funded', 'agent.frozen', 'agent.unfrozen', 'breaker.tripped', 'gateway.halted',
  'gateway.resumed', 'policy.updated', 'key.created', 'key.revoked', 'room.created', 'room.member_added',
  'treasury.minted', 'nwc_connection.created', 'nwc_connection.revoked',
];

// ------------------------------------------------------------------ helpers

const $ = (id) => document.getElementById(id);
const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

/** h('button', {class, testid, onclick, ...}, ...children): an element. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...kids(children));
  return el;
}

/** The same for SVG elements. */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  el.append(...kids(children));
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'data') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : value);
  }
}

function kids(children) {
  return children.flat(Infinity).filter((c) => c != null && c !== false).map((c) => (c instanceof Node ? c : String(c)));
}

const numberFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 3 });
const sat = (msat) => `${numberFormat.format(msat / 1000)} sat`;
const msat = (value) => `${numberFormat.format(value)} msat`;
const clock = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const when = (t) => new Date(t).toLocaleString([], { dateStyle: 'medium', timeStyle: 'medium' });
// Ids start with their creation time: the end tells them apart.
const shortId = (id) => (id && id.length > 16 ? `${id.slice(0, id.indexOf('_') + 1)}…${id.slice(-6)}` : id);

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `ui-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function toast(text, kind = 'info') {
  const el = h('div', { class: `toast ${kind}`, testid: 'toast' }, text);
  $('toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

const rendered = new WeakMap(); // container -> the data it shows, as JSON

/** Replaces a container's children only when what they show changed. */
function renderIfChanged(container, data, render) {
  const key = JSON.stringify(data);
  if (rendered.get(container) === key) return;
  rendered.set(container, key);
  container.replaceChildren(...kids([render()]));
}

// ---------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code || 'http-error';
    this.problem = problem;
  }
}

let session = null; // { secret, role: 'operator' | 'agent', wallet, names: Map }

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${session.secret}`, ...extra };
}

/** One API call: `{status, data}`, or an ApiError carrying the problem. */
async function request(path, { method = 'GET', body, signal, headers = {} } = {}) {
  const init = { method, signal, headers: authHeaders(headers), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (res.status === 401) {
    signOut('The gateway no longer accepts this secret: sign in again.');
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return { status: res.status, data };
}

const api = async (path, options) => (await request(path, options)).data;

const isAbort = (e) => e?.name === 'AbortError';

/**
 * Reads Server-Sent Events from a fetch() response body: calls onOpen once
 * the response arrived (the server is subscribed), then onEvent(name, data)
 * for each event, until the stream ends or the signal aborts.
 */
async function readEvents(path, { signal, onOpen, onEvent }) {
  const res = await fetch(path, { headers: authHeaders({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
  if (!res.ok) {
    let problem = null;
    try { problem = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, problem);
  }
  await onOpen?.();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, '');
      buffer = buffer.slice(end + 1);
      if (line === '') {
        if (data.length) onEvent(event, data.join('\n'));
        event = 'message';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = text;
        else if (field === 'data') data.push(text);
      }
    }
  }
}

/**
 * Runs fn now and then every `ms` until the signal aborts. onError hears of
 * the first failure of a run of them (e), and of the recovery (null).
 */
function every(ms, signal, fn, onError) {
  (async () => {
    let failing = false;
    while (!signal.aborted) {
      try {
        await fn();
        if (failing) onError?.(null);
        failing = false;
      } catch (e) {
        if (!isAbort(e) && !failing && session) onError?.(e);
        failing = !isAbort(e);
      }
      await sleep(ms, signal);
    }
  })();
}

function nameOf(id) {
  if (!id) return '—';
  if (id.startsWith('agent:')) return nameOf(id.slice('agent:'.length)); // an audit record's payee
  if (id === 'operator') return 'Operator';
  if (session.role === 'agent' && id === session.wallet.agent_id) return `${session.wallet.name} (you)`;
  return session.names.get(id) || shortId(id);
}

/** Remembers agents' names for nameOf (a list of agents as the API gives it). */
function learnNames(agents) {
  agents.forEach((a) => session?.names.set(a.id, a.name));
}

// ------------------------------------------------------------ shared pieces

function pill(text, kind, testid) {
  return h('span', { class: `pill ${kind}`, testid }, text);
}

function bar(spent, limit, label) {
  const fill = h('span', { class: 'bar-fill' });
  const ratio = limit > 0 ? Math.min(1, spent / limit) : 0;
  fill.style.width = `${(ratio * 100).toFixed(1)}%`;
  const level = ratio >= 0.9 ? 'bad' : ratio >= 0.7 ? 'warn' : 'ok';
  return h('span', { class: `bar ${level}`, role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': limit,
    'aria-valuenow': spent, 'aria-valuetext': `${sat(spent)} of ${sat(limit)}`, 'aria-label': label }, fill);
}

/** The usage bars of a budget report: each window, then the lifetime limit. */
function budgetBars(report) {
  if (!report) return h('span', { class: 'muted' }, '…');
  const rows = report.windows.map((w) => ({ label: `${w.window} ${w.kind === 'calendar' ? '(calendar)' : ''}`,
    spent: w.spent_msat, limit: w.limit_msat }));
  if (report.lifetime_limit_msat != null) {
    rows.push({ label: 'lifetime', spent: report.lifetime_spent_msat, limit: report.lifetime_limit_msat });
  }
  if (!rows.length) return h('span', { class: 'muted' }, 'no budget limits');
  return h('div', { class: 'budgets', testid: 'budget-bars' }, rows.map((r) => h('div', { class: 'budget' },
    h('span', { class: 'budget-label' }, r.label.trim()),
    bar(r.spent, r.limit, `Budget used, ${r.label.trim()}`),
    h('span', { class: 'budget-text', title: `${msat(r.spent)} of ${msat(r.limit)}` },
      `${sat(r.spent)} / ${sat(r.limit)}`))));
}

/** Money that waits (a hold or an escrow) is open while held or disputed. */
const isOpenEscrow = (e) => e.status === 'held' || e.status === 'disputed';
const ESCROW_KIND = { hold: 'Hold', escrow: 'Escrow' };
const ESCROW_PILL = { held: 'info', disputed: 'warn', released: 'ok', refunded: 'muted' };

/** A hold or escrow: who pays whom, how much, where it stands, its deadline. */
function escrowRow(e, actions = null) {
  return h('li', { class: 'trade', testid: 'escrow-row', data: { paymentId: e.payment_id, kind: e.kind,
    status: e.status } },
  h('div', { class: 'trade-main' },
    h('div', {}, pill(`${ESCROW_KIND[e.kind] || e.kind} · ${e.status}`, ESCROW_PILL[e.status] || 'muted',
      'escrow-status'), ' ',
    h('span', { class: 'amount', testid: 'escrow-amount', data: { msat: e.amount_msat } }, sat(e.amount_msat))),
    h('div', { class: 'small' }, `${nameOf(e.payer_agent_id)} → ${nameOf(e.payee_agent_id)}`),
    h('div', { class: 'muted small' }, isOpenEscrow(e)
      ? `${e.status === 'disputed' ? 'disputed; was due' : `${e.on_timeout} at`} ${when(e.deadline)}`
      : `${e.status} ${e.resolved_at ? when(e.resolved_at) : ''}`),
    h('div', { class: 'mono muted small' }, e.payment_id)),
  actions ? h('div', { class: 'trade-actions' }, actions) : null);
}

/** An open metered session: who pays whom, its maximum, what was charged and what remains. */
function sessionRow(x) {
  return h('li', { class: 'trade', testid: 'session-row', data: { sessionId: x.id, status: x.status } },
    h('div', { class: 'trade-main' },
      h('div', {}, pill(`Session · ${x.status}`, x.status === 'open' ? 'info' : 'muted', 'session-status'), ' ',
        h('span', { class: 'amount', testid: 'session-charged', data: { msat: x.charged_msat } },
          `${sat(x.charged_msat)} of ${sat(x.max_msat)}`)),
      h('div', { class: 'small' }, `${nameOf(x.payer_agent_id)} → ${nameOf(x.payee_agent_id)}`),
      h('div', { class: 'muted small' }, `${sat(x.remaining_msat)} remaining · expires ${when(x.expires_at)}`),
      x.purpose ? h('div', { class: 'small' }, x.purpose) : null));
}

/**
 * A box that scrolls sideways when its table is wider than the screen: a
 * named region in the tab order, so a keyboard can scroll it too.
 */
function scrollRegion(label, attrs = {}) {
  return h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': label, ...attrs });
}

/**
 * A modal question with the facts it is about (`facts`: [label, value,
 * testid]): resolves true when confirmed, false when cancelled or closed.
 */
function confirmDialog({ title, facts, confirmLabel, danger = false }) {
  return new Promise((resolve) => {
    const cancel = h('button', { type: 'button', testid: 'confirm-cancel', onclick: () => dialog.close('no') }, 'Cancel');
    const accept = h('button', { type: 'button', class: danger ? 'danger' : 'primary', testid: 'confirm-accept',
      onclick: () => dialog.close('yes') }, confirmLabel);
    const dialog = h('dialog', { class: 'confirm card', testid: 'confirm-dialog', 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, title),
      h('dl', { class: 'facts' }, facts.map(([label, value, testid]) => [h('dt', {}, label),
        h('dd', { testid }, value)])),
      h('div', { class: 'trade-actions' }, cancel, accept));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'yes');
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

function panel(title, body, { testid, extra, cls = '' } = {}) {
  return h('section', { class: `panel ${cls}`, testid },
    h('header', { class: 'panel-head' }, h('h2', {}, title), extra), body);
}

// ------------------------------------------------------------------ sign-in

function showSignIn(message) {
  $('topbar').hidden = true;
  const input = h('input', { id: 'secret', type: 'password', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'operator token or csk_…', testid: 'signin-secret', required: true });
  const error = h('p', { class: 'error', testid: 'signin-error', hidden: !message }, message || '');
  const button = h('button', { type: 'submit', class: 'primary', testid: 'signin-submit' }, 'Sign in');
  const form = h('form', { class: 'signin card', onsubmit: async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      await signIn(input.value.trim().replace(/^bearer\s+/i, ''));
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      button.disabled = false;
    }
  } },
  h('div', { class: 'signin-brand' }, h('span', { class: 'brand-mark' }), 'coffer'),
  h('p', { class: 'muted' }, 'Lightning wallets with bounded spending for AI agents.'),
  h('label', { for: 'secret' }, 'Operator token or agent key'),
  input, button, error,
  h('p', { class: 'hint' }, 'The operator token opens the dashboard; an agent key (csk_…) opens that agent’s ',
    'wallet and rooms. The secret is kept in this tab only and forgotten when it closes.'));
  $('view').replaceChildren(form);
  input.focus();
}

async function signIn(secret) {
  if (!secret) throw new Error('Paste a token or a key.');
  // An agent key reads its wallet; the operator token is refused there (403).
  const res = await fetch('/v1/wallet', { headers: { Authorization: `Bearer ${secret}` }, cache: 'no-store' });
  if (res.status === 401) throw new Error('This token or key is not valid here.');
  if (res.status !== 200 && res.status !== 403) throw new Error(`The gateway answered ${res.status}.`);
  const wallet = res.status === 200 ? await res.json() : null;
  session = { secret, role: wallet ? 'agent' : 'operator', wallet, names: new Map() };
  sessionStorage.setItem(SECRET_KEY, secret);
  $('topbar').hidden = false;
  $('who').textContent = wallet ? `Agent · ${wallet.name}` : 'Operator';
  $('who').dataset.role = session.role;
  route();
}

function signOut(message) {
  if (!session) return;
  session = null;
  sessionStorage.removeItem(SECRET_KEY);
  // The ids of keys the console issued (console.js) belong to this session too.
  Object.keys(sessionStorage).filter((k) => k.startsWith('coffer.keys.')).forEach((k) => sessionStorage.removeItem(k));
  stopView();
  qrCache.forEach((url) => url && URL.revokeObjectURL(url));
  qrCache.clear();
  history.replaceState(null, '', location.pathname);
  showSignIn(message);
}

// ------------------------------------------------------------------ routing

let view = null; // { name, stop(), update?(arg) }

function stopView() {
  view?.stop();
  view = null;
}

function renderTabs(current) {
  const tabs = session.role === 'operator'
    ? [['dashboard', 'Dashboard'], ['agents', 'Agents'], ['rooms', 'Rooms'], ['audit', 'Audit log'],
      ['reports', 'Reports']]
    : [['rooms', 'Wallet & rooms']];
  $('tabs').replaceChildren(...tabs.map(([name, label]) => h('a', { href: `#/${name}`, testid: `tab-${name}`,
    class: name === current ? 'active' : null, 'aria-current': name === current ? 'page' : null }, label)));
}

function route() {
  if (!session) return;
  const [, name, arg] = location.hash.split('/').map((p) => decodeURIComponent(p || ''));
  const views = session.role === 'operator'
    ? { dashboard: dashboardView, agents: agentsView, rooms: roomsView, audit: auditView, reports: reportsView }
    : { rooms: roomsView };
  const wanted = views[name] ? name : Object.keys(views)[0];
  renderTabs(wanted);
  if (view?.name === wanted && view.update) return view.update(arg);
  stopView();
  view = views[wanted](arg);
  view.name = wanted;
}

// ---------------------------------------------------------------- dashboard

function dashboardView(initialAgent) {
  const ctl = new AbortController();
  const { signal } = ctl;
  const state = {
    agents: [], budgets: {}, approvals: [], halted: null, treasury: null, escrows: [], disputes: [], sessions: [],
    escrowAgent: '',
    records: [], lastSeq: 0,
  };
  const el = {
    stats: h('div', { class: 'stats' }),
    agents: scrollRegion('Agents table'),
    approvals: h('div', {}),
    feed: h('div', {}),
    chart: h('div', { class: 'chart' }),
    disputes: h('div', {}),
    escrows: h('div', {}),
    escrowAgentFilter: h('select', { testid: 'escrows-filter-agent', 'aria-label': 'Agent of the holds shown',
      title: 'Agent of the holds shown', onchange: (e) => {
      state.escrowAgent = e.target.value;
      refresh().catch(() => {});
    } }),
    live: h('span', { class: 'live', testid: 'feed-status', data: { state: 'connecting' } }, 'connecting'),
  };
  // The agent chosen for the Wallet Connect panel is in the URL: #/dashboard/<agent id>.
  const chooseAgent = (id) => { location.hash = id ? `#/dashboard/${encodeURIComponent(id)}` : '#/dashboard'; };
  const nwc = nwcPanel({ signal, agents: () => state.agents, budgets: () => state.budgets, onSelect: chooseAgent });

  $('view').replaceChildren(h('div', { class: 'dashboard', testid: 'dashboard' },
    h('h1', { class: 'sr-only' }, 'Dashboard'),
    el.stats,
    panel('Agents', el.agents, { testid: 'agents-panel', cls: 'agents' }),
    nwc.element,
    panel('Approvals queue', el.approvals, { testid: 'approvals-panel', cls: 'approvals-panel' }),
    panel('Disputes', el.disputes, { testid: 'disputes-panel', cls: 'disputes-panel' }),
    panel('Open holds, escrows & sessions', el.escrows, { testid: 'escrows-panel', cls: 'escrows-panel',
      extra: el.escrowAgentFilter }),
    panel(`Spend per minute · last ${CHART_MINUTES} min`, el.chart, { testid: 'chart-panel', cls: 'chart-panel' }),
    panel('Live payments', el.feed, { testid: 'feed-panel', cls: 'feed-panel', extra: el.live })));

  // Agents, approvals, the kill switch and the treasury: every few seconds,
  // and at once when the audit trail shows something happened.
  let refreshing = null;
  let refreshAgain = false;
  async function refresh() {
    if (refreshing) { refreshAgain = true; return refreshing; }
    refreshing = (async () => {
      do {
        refreshAgain = false;
        const agentQuery = state.escrowAgent ? `?agent_id=${encodeURIComponent(state.escrowAgent)}` : '';
        const [agents, approvals, breaker, treasury, escrows, disputes, sessions] = await Promise.all([
          api('/v1/agents', { signal }), api('/v1/approvals', { signal }), api('/v1/breaker', { signal }),
          api('/v1/treasury', { signal }).catch(() => null),
          api(`/v1/escrows${agentQuery}`, { signal }).catch(() => []),
          api('/v1/escrows?status=disputed', { signal }).catch(() => []),
          // One agent's sessions, when one is chosen.
          state.escrowAgent ? api(`/v1/agents/${encodeURIComponent(state.escrowAgent)}/sessions?limit=${PAGE}`,
            { signal }).then((p) => p.items).catch(() => []) : [],
        ]);
        const budgets = {};
        await Promise.all(agents.map(async (a) => {
          budgets[a.id] = await api(`/v1/agents/${encodeURIComponent(a.id)}/budget`, { signal }).catch(() => null);
        }));
        Object.assign(state, { agents, approvals, halted: breaker.halted, treasury, budgets,
          escrows: escrows.filter(isOpenEscrow), disputes, sessions: sessions.filter((x) => x.status === 'open') });
        agents.forEach((a) => session.names.set(a.id, a.name));
        render();
        await nwc.refresh();
      } while (refreshAgain && !signal.aborted);
    })();
    try { await refreshing; } finally { refreshing = null; }
  }

  async function pollAudit() {
    let fresh = false;
    for (let page = 0; page < 25; page++) {
      const query = new URLSearchParams({ after: state.lastSeq, limit: PAGE });
      if (state.lastSeq === 0) query.set('since', new Date(Date.now() - 24 * 3600e3).toISOString());
      const rows = await api(`/v1/audit?${query}`, { signal });
      if (rows.length) {
        state.records.push(...rows);
        state.lastSeq = rows[rows.length - 1].seq;
        fresh = true;
      }
      if (rows.length < PAGE) break;
    }
    if (state.records.length > AUDIT_KEPT) state.records.splice(0, state.records.length - AUDIT_KEPT);
    el.live.dataset.state = 'live';
    el.live.textContent = 'live';
    if (fresh) {
      // The stats sum the same records ("Spent, last hour"): render them
      // with the feed, not only after the refresh below has fetched.
      renderStats();
      renderFeed();
      renderChart();
      refresh().catch(() => {});
    }
  }

  function render() {
    renderStats();
    renderAgents();
    renderApprovals();
    renderDisputes();
    renderEscrows();
    renderFeed();
  }

  function renderStats() {
    const frozen = state.agents.filter((a) => a.frozen).length;
    const hourAgo = Date.now() - 3600e3;
    const spentHour = state.records.filter((r) => SPEND_ACTIONS.includes(r.record.action) && r.record.at_ms >= hourAgo)
      .reduce((sum, r) => sum + (r.record.amount_msat || 0), 0);
    const data = { halted: state.halted, treasury: state.treasury?.balance_msat, n: state.agents.length, frozen,
      pending: state.approvals.length, spentHour };
    renderIfChanged(el.stats, data, () => [
      h('div', { class: `stat kill ${state.halted ? 'halted' : ''}`, testid: 'kill-panel' },
        h('span', { class: 'stat-label' }, 'Kill switch'),
        h('span', { class: 'stat-value', testid: 'breaker-status', data: { halted: String(state.halted) } },
          state.halted ? 'All payments halted' : 'Payments flowing'),
        h('button', { type: 'button', class: state.halted ? 'primary' : 'danger', testid: 'kill-switch',
          data: { halted: String(state.halted) }, onclick: (e) => toggleBreaker(e.currentTarget) },
        state.halted ? 'Resume payments' : 'Halt all payments')),
      stat('Treasury', state.treasury ? sat(state.treasury.balance_msat) : '—', 'treasury-balance'),
      stat('Agents', `${state.agents.length}${frozen ? ` · ${frozen} frozen` : ''}`, 'agent-count'),
      stat('Pending approvals', String(state.approvals.length), 'approval-count'),
      stat('Spent, last hour', sat(spentHour), 'spent-hour'),
    ]);
  }

  function stat(label, value, testid) {
    return h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, label),
      h('span', { class: 'stat-value', testid }, value));
  }

  async function toggleBreaker(button) {
    const halt = !state.halted;
    const question = halt
      ? 'Halt ALL outgoing payments of every agent now?\n\nNothing is paid until you resume.'
      : 'Resume payments for every agent?';
    if (!confirm(question)) return;
    await act(button, async () => {
      const breaker = await api('/v1/breaker', { method: 'POST', body: { halted: halt } });
      state.halted = breaker.halted;
      toast(breaker.halted ? 'All payments are halted.' : 'Payments resumed.', breaker.halted ? 'error' : 'ok');
    });
  }

  async function act(button, fn) {
    button.disabled = true;
    try {
      await fn();
    } catch (e) {
      toast(e.message, 'error');
    } finally {
      button.disabled = false;
    }
    await refresh().catch(() => {});
  }

  function renderAgents() {
    const data = state.agents.map((a) => [a, state.budgets[a.id]]);
    renderIfChanged(el.agents, data, () => {
      if (!state.agents.length) {
        return h('p', { class: 'empty' }, 'No agents yet. Create one with the API or `coffer agent create`.');
      }
      const head = ['Agent', 'Balance', 'Budget usage', 'Status'];
      return h('table', { class: 'table', testid: 'agents-table' },
        h('thead', {}, h('tr', {}, head.map((t) => h('th', {}, t)),
          h('th', {}, h('span', { class: 'sr-only' }, 'Actions')))),
        h('tbody', {}, state.agents.map(agentRow)));
    });
  }

  function agentRow(a) {
    const path = `/v1/agents/${encodeURIComponent(a.id)}`;
    const toggle = a.frozen
      ? h('button', { type: 'button', testid: 'unfreeze-button',
        onclick: (e) => act(e.currentTarget, () => api(`${path}/unfreeze`, { method: 'POST' })) }, 'Unfreeze')
      : h('button', { type: 'button', class: 'danger-outline', testid: 'freeze-button',
        onclick: (e) => act(e.currentTarget, () => api(`${path}/freeze`,
          { method: 'POST', body: { reason: 'frozen from the dashboard' } })) }, 'Freeze');
    return h('tr', { testid: 'agent-row', data: { agentId: a.id, frozen: String(a.frozen) } },
      h('td', {},
        h('div', { class: 'strong', testid: 'agent-name' },
          h('a', { href: `#/agents/${encodeURIComponent(a.id)}`, title: `The page of ${a.name}` }, a.name)),
        h('div', { class: 'mono muted small' }, a.id, a.parent_id ? ` · sub-agent of ${nameOf(a.parent_id)}` : '')),
      h('td', { class: 'num' },
        h('div', { class: 'strong', testid: 'agent-balance', data: { msat: a.balance_msat }, title: msat(a.balance_msat) },
          sat(a.balance_msat)),
        a.pending_msat ? h('div', { class: 'muted small' }, `${sat(a.pending_msat)} pending`) : null),
      h('td', {}, budgetBars(state.budgets[a.id])),
      h('td', {},
        a.frozen ? pill('Frozen', 'bad', 'agent-status') : pill('Active', 'ok', 'agent-status'),
        a.frozen_reason ? h('div', { class: 'muted small' }, a.frozen_reason) : null),
      h('td', { class: 'actions' }, h('div', { class: 'trade-actions' }, toggle,
        h('button', { type: 'button', testid: 'nwc-button', 'aria-label': `Wallet Connect of ${a.name}`,
          onclick: () => { chooseAgent(a.id); nwc.element.scrollIntoView({ block: 'start' }); } }, 'Wallet Connect'))));
  }

  function renderApprovals() {
    renderIfChanged(el.approvals, [state.approvals, [...session.names]], () => {
      if (!state.approvals.length) return h('p', { class: 'empty', testid: 'approvals-empty' }, 'Nothing waits for you.');
      return h('ul', { class: 'approvals', testid: 'approvals' }, state.approvals.map(approvalRow));
    });
  }

  /** What an approval did: a payment to another node may still be in flight, or fail. */
  function approvedText(payment, a) {
    if (!payment) return ['Approved.', 'ok'];
    if (payment.status === 'pending') return ['Approved: the payment is in flight through the Lightning backend.', 'ok'];
    if (payment.status === 'failed') return [`Approved, but the payment failed (released): ${payment.detail || ''}`, 'error'];
    return [`Approved and paid ${sat(a.amount_msat)}.`, 'ok'];
  }

  function approvalRow(a) {
    const path = `/v1/approvals/${encodeURIComponent(a.id)}`;
    // Approving pays: the same confirmation as paying from a card.
    const approve = async (e) => {
      const button = e.currentTarget;
      const payee = a.payee_agent_id ? nameOf(a.payee_agent_id) : `node ${(a.payee_node || '').slice(0, 16)}…`;
      const sure = await confirmDialog({ title: 'Approve and pay?', confirmLabel: `Pay ${sat(a.amount_msat)}`,
        facts: [['Amount', `${sat(a.amount_msat)} (${msat(a.amount_msat)})`, 'confirm-amount'],
          ['Payee', payee, 'confirm-payee'], ['Paid by', nameOf(a.agent_id), 'confirm-payer'],
          ['For', a.purpose || '—', 'confirm-memo']] });
      if (!sure) return;
      await act(button, async () => {
        const decision = await api(`${path}/approve`, { method: 'POST' });
        toast(...approvedText(decision.payment, a));
      });
    };
    const deny = (e) => act(e.currentTarget, async () => {
      await api(`${path}/deny`, { method: 'POST' });
      toast('Denied: the reservation is released.', 'ok');
    });
    return h('li', { class: 'approval', testid: 'approval-row', data: { approvalId: a.id, paymentHash: a.payment_hash } },
      h('div', { class: 'approval-main' },
        h('div', {},
          h('span', { class: 'amount', testid: 'approval-amount' }, sat(a.amount_msat)), ' ',
          h('span', { class: 'muted' }, `from ${nameOf(a.agent_id)}`),
          a.payee_agent_id ? h('span', { class: 'muted' }, ` to ${nameOf(a.payee_agent_id)}`) : null,
          a.payee_node ? h('span', { class: 'muted' }, ` to node ${a.payee_node.slice(0, 12)}…, fee up to ${sat(a.fee_limit_msat)}`) : null),
        h('div', { class: 'small' }, a.purpose || h('span', { class: 'muted' }, 'no purpose given')),
        h('div', { class: 'muted small' }, `held ${clock(a.created_at)} · expires ${clock(a.expires_at)}`)),
      h('div', { class: 'approval-actions' },
        h('button', { type: 'button', class: 'primary', testid: 'approve-button', onclick: approve }, 'Approve'),
        h('button', { type: 'button', class: 'danger-outline', testid: 'deny-button', onclick: deny }, 'Deny')));
  }

  function renderDisputes() {
    renderIfChanged(el.disputes, [state.disputes, [...session.names]], () => {
      if (!state.disputes.length) return h('p', { class: 'empty', testid: 'disputes-empty' }, 'No dispute waits for you.');
      return h('ul', { class: 'trades', testid: 'disputes' }, state.disputes.map((e) => {
        const resolve = (outcome) => (ev) => act(ev.currentTarget, async () => {
          await api(`/v1/payments/${encodeURIComponent(e.payment_id)}/resolve`, { method: 'POST', body: { outcome } });
          toast(outcome === 'release' ? `Released ${sat(e.amount_msat)} to ${nameOf(e.payee_agent_id)}.`
            : `Refunded ${sat(e.amount_msat)} to ${nameOf(e.payer_agent_id)}.`, 'ok');
        });
        return escrowRow(e, [
          h('button', { type: 'button', class: 'primary', testid: 'resolve-release', onclick: resolve('release') },
            'Release to payee'),
          h('button', { type: 'button', class: 'danger-outline', testid: 'resolve-refund', onclick: resolve('refund') },
            'Refund payer')]);
      }));
    });
  }

  function renderEscrows() {
    const options = [['', 'All agents'], ...state.agents.map((a) => [a.id, a.name])];
    renderIfChanged(el.escrowAgentFilter, [options, state.escrowAgent], () => options.map(([value, label]) =>
      h('option', { value, selected: value === state.escrowAgent ? true : null }, label)));
    renderIfChanged(el.escrows, [state.escrows, state.sessions, state.escrowAgent, [...session.names]], () => [
      state.escrows.length
        ? h('ul', { class: 'trades', testid: 'escrows' }, state.escrows.map((e) => escrowRow(e)))
        : h('p', { class: 'empty', testid: 'escrows-empty' }, 'No money waits in a hold or an escrow.'),
      state.escrowAgent
        ? (state.sessions.length
          ? h('ul', { class: 'trades sessions', testid: 'sessions' }, state.sessions.map(sessionRow))
          : h('p', { class: 'empty', testid: 'sessions-empty' }, `${nameOf(state.escrowAgent)} has no open session.`))
        : h('p', { class: 'muted small' }, 'Choose an agent to see its open sessions too.'),
    ]);
  }

  function feedRow(r) {
    const rec = r.record;
    const kind = FEED_KINDS[rec.action];
    // An approval's rule is the approval's id: not worth a badge.
    const rule = rec.action.startsWith('payment.') && rec.rule !== 'allowed' ? rec.rule : null;
    return h('li', { class: `feed-item ${kind[1]}`, testid: 'feed-item', data: { action: rec.action, seq: r.seq } },
      pill(kind[0], kind[1]),
      h('span', { class: 'amount' }, rec.amount_msat != null ? sat(rec.amount_msat) : '—'),
      h('span', { class: 'feed-who' }, nameOf(rec.agent_id || rec.actor), h('span', { class: 'muted' }, ' → '),
        nameOf(rec.payee)),
      h('span', { class: 'feed-why small' }, rec.purpose || '', rule ? h('span', { class: 'rule' }, rule) : null),
      h('time', { class: 'muted small' }, clock(rec.at_ms)));
  }

  function renderFeed() {
    const rows = [];
    for (let i = state.records.length - 1; i >= 0 && rows.length < FEED_ROWS; i--) {
      if (FEED_KINDS[state.records[i].record.action]) rows.push(state.records[i]);
    }
    renderIfChanged(el.feed, [rows.map((r) => r.seq), [...session.names]], () => (rows.length
      ? h('ol', { class: 'feed', testid: 'payment-feed' }, rows.map(feedRow))
      : h('p', { class: 'empty', testid: 'payment-feed' }, 'No payment in the last 24 hours.')));
  }

  function renderChart() {
    const minute = 60e3;
    const end = Math.floor(Date.now() / minute) * minute;
    const start = end - (CHART_MINUTES - 1) * minute;
    const buckets = new Array(CHART_MINUTES).fill(0);
    for (const r of state.records) {
      const rec = r.record;
      if (!SPEND_ACTIONS.includes(rec.action) || rec.at_ms < start) continue;
      const i = Math.floor((rec.at_ms - start) / minute);
      if (i >= 0 && i < CHART_MINUTES) buckets[i] += rec.amount_msat || 0;
    }
    renderIfChanged(el.chart, [start, buckets], () => spendChart(buckets, start));
  }

  every(STATE_POLL_MS, signal, refresh, (e) => e && toast(`Could not refresh: ${e.message}`, 'error'));
  every(AUDIT_POLL_MS, signal, pollAudit, (e) => {
    if (e) toast(`The audit trail is out of reach: ${e.message}`, 'error');
    el.live.dataset.state = e ? 'offline' : 'live';
    el.live.textContent = e ? 'offline' : 'live';
  });
  const clockTimer = setInterval(() => { renderChart(); renderStats(); }, 15e3);
  signal.addEventListener('abort', () => clearInterval(clockTimer));
  // An agent named in the URL (#/dashboard/<id>, as the agent page links it): its Wallet Connect panel.
  const selectNwc = (agentId) => {
    nwc.select(agentId);
    if (agentId) nwc.element.scrollIntoView({ block: 'start' });
  };
  selectNwc(initialAgent);
  return { stop: () => ctl.abort(), update: selectNwc };
}

/** Bars of the amount paid each minute, oldest on the left. */
function spendChart(buckets, start) {
  const total = buckets.reduce((a, b) => a + b, 0);
  const label = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const points = buckets.map((value, i) => ({ label: label(start + i * 60e3), value }));
  return [
    h('div', { class: 'chart-total', testid: 'chart-total' }, `${sat(total)} paid in the last ${buckets.length} minutes`),
    columnChart(points, { title: `Spend per minute, ${sat(total)} in total`, every: 10, testid: 'spend-chart' }),
  ];
}

// ----------------------------------------------------- Nostr Wallet Connect

// What a connection may ask (NIP-47), as the API names it, with its label.
const NWC_METHODS = [
  ['get_info', 'Get info'], ['get_balance', 'Get balance'], ['make_invoice', 'Make invoices'],
  ['pay_invoice', 'Pay invoices'], ['lookup_invoice', 'Look up invoices'], ['list_transactions', 'List transactions'],
];
const NWC_NAME_MAX = 100; // characters, as the gateway allows
const NWC_STATUS_PILL = { live: 'ok', expired: 'muted', revoked: 'bad' };

/** A connection is live until it expires or is revoked. */
function nwcStatus(c) {
  if (c.revoked_at) return 'revoked';
  if (c.expires_at && Date.parse(c.expires_at) <= Date.now()) return 'expired';
  return 'live';
}

/** Whether a parsed SVG document is one <svg> with nothing active in it: no script, no link, no handler. */
function isPlainSvg(doc) {
  const root = doc.documentElement;
  if (root.namespaceURI !== SVG_NS || root.localName !== 'svg') return false;
  if (doc.querySelector('parsererror, script, foreignObject, a, use, image')) return false;
  return [...doc.querySelectorAll('*')].every((el) => [...el.attributes].every((a) => !/^on|href/i.test(a.name)));
}

/**
 * An SVG the gateway drew (a QR code) as an image: checked with isPlainSvg,
 * then shown from a data: URL, where no script would run anyway. Null when
 * the text is not such an SVG.
 */
function svgImage(svgText, alt, testid) {
  const doc = new DOMParser().parseFromString(svgText, 'image/svg+xml');
  if (!isPlainSvg(doc)) return null;
  const src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(new XMLSerializer().serializeToString(doc))}`;
  return h('img', { class: 'qr nwc-qr', src, alt, testid, width: 200, height: 200 });
}

/** Copies text to the clipboard; where the browser refuses, selects `node` for a manual copy. */
async function copyText(text, node) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied to the clipboard.', 'ok');
  } catch {
    getSelection().selectAllChildren(node);
    toast('The browser refused the clipboard: the text is selected, copy it by hand.', 'error');
  }
}

/** What is left of an agent's budgets, in one line. */
function remainingText(agent, report) {
  const parts = report.windows.map((w) => `${sat(w.remaining_msat)} of ${sat(w.limit_msat)} (${w.window})`);
  if (report.lifetime_remaining_msat != null) {
    parts.push(`${sat(report.lifetime_remaining_msat)} of ${sat(report.lifetime_limit_msat)} (lifetime)`);
  }
  if (report.max_payments_per_minute != null) parts.push(`${report.max_payments_per_minute} payments a minute`);
  const limits = parts.length ? parts.join(' · ') : 'no budget limit';
  return `Remaining budget: ${limits}; balance ${sat(agent.balance_msat)}.`;
}

/** What bounds the payments of an agent's connections: its constitution, and what remains of its budgets. */
function nwcBounds(agent, report) {
  return [
    h('p', { class: 'small' }, 'Payments through these connections pass ',
      h('strong', {}, `${agent.name}’s constitution`), ' as its HTTP payments do: its policy, budgets and approvals apply to each one.',
      agent.frozen ? ' The agent is frozen: they are refused now.' : ''),
    report ? h('p', { class: 'small', testid: 'nwc-remaining' }, remainingText(agent, report)) : null,
  ];
}

/**
 * The dashboard's panel of an agent's Nostr Wallet Connect connections
 * (NIP-47): the list, each live one with a Revoke button; what bounds their
 * payments; a form to create one; and a new connection's URI and QR code,
 * shown once (the gateway keeps no copy of its secret). `agents()` and
 * `budgets()` read the dashboard's state; `onSelect(id)` hears the agent
 * chosen in the panel's list.
 */
function nwcPanel({ signal, agents, budgets, onSelect }) {
  let agentId = '';
  let connections = null; // agentId's, once read
  let loadError = null;
  const picker = h('select', { id: 'nwc-agent', testid: 'nwc-agent', onchange: (e) => onSelect(e.target.value) });
  const prompt = h('p', { class: 'empty', testid: 'nwc-prompt' }, 'Choose an agent to see its connections.');
  const bounds = h('div', { class: 'nwc-bounds', testid: 'nwc-bounds' });
  const list = scrollRegion('Wallet Connect connections');
  list.classList.add('nwc-list');
  const created = h('section', { class: 'nwc-created', testid: 'nwc-created', hidden: true,
    'aria-labelledby': 'nwc-created-title' });
  const form = createForm();
  const content = h('div', { class: 'nwc-layout', hidden: true },
    created, h('div', { class: 'nwc-main' }, bounds, list), form.element);
  const element = panel('Nostr Wallet Connect', [prompt, content], { testid: 'nwc-panel', cls: 'nwc-panel',
    extra: h('div', { class: 'filters' }, h('label', { for: 'nwc-agent', class: 'filter-label' }, 'Agent'), picker) });

  const base = (id = agentId) => `/v1/agents/${encodeURIComponent(id)}/nwc`;
  const current = () => agents().find((a) => a.id === agentId);

  function select(id = '') {
    if (id === agentId) return;
    agentId = id;
    connections = null;
    loadError = null;
    hideCreated();
    form.clear();
    render();
    refresh().catch(() => {});
  }

  /** Reads the chosen agent's connections, then renders. */
  async function refresh() {
    const id = agentId;
    if (id) {
      try {
        const rows = await api(base(id), { signal });
        if (id !== agentId) return;
        [connections, loadError] = [rows, null];
      } catch (e) {
        if (isAbort(e) || id !== agentId) return;
        loadError = e.message;
      }
    }
    render();
  }

  function render() {
    const options = [['', 'Choose an agent'], ...agents().map((a) => [a.id, a.name])];
    renderIfChanged(picker, options, () => options.map(([value, label]) => h('option', { value }, label)));
    picker.value = agentId;
    const agent = current();
    prompt.hidden = Boolean(agent);
    content.hidden = !agent;
    prompt.textContent = agentId && agents().length ? 'There is no such agent.'
      : 'Choose an agent to see its connections.';
    if (!agent) return;
    renderIfChanged(bounds, [agent, budgets()[agent.id]], () => nwcBounds(agent, budgets()[agent.id]));
    renderIfChanged(list, [agentId, connections, connections?.map(nwcStatus), loadError], renderList);
  }

  function renderList() {
    if (loadError) {
      return h('p', { class: 'error', testid: 'nwc-load-error' }, `Could not read the connections: ${loadError}`);
    }
    if (!connections) return h('p', { class: 'empty' }, 'Reading the connections…');
    if (!connections.length) return h('p', { class: 'empty', testid: 'nwc-empty' }, 'No connection yet.');
    const head = ['Name', 'Methods', 'Created', 'Last used', 'Expires', 'Status'];
    return h('table', { class: 'table nwc-table', testid: 'nwc-table' },
      h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)),
        h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, connections.map(connectionRow)));
  }

  function connectionRow(c) {
    const status = nwcStatus(c);
    return h('tr', { testid: 'nwc-row', data: { connectionId: c.id, status } },
      h('td', {}, h('div', { class: 'strong', testid: 'nwc-row-name' }, c.name),
        h('div', { class: 'mono muted small', title: `client key ${c.client_pubkey}` }, shortId(c.id))),
      h('td', { class: 'small' }, h('span', { class: 'mono', testid: 'nwc-row-methods' },
        c.methods.length === NWC_METHODS.length ? 'all' : c.methods.join(', ')),
        c.notifications ? h('div', { class: 'muted' }, 'with notifications') : null),
      h('td', { class: 'small nowrap' }, when(c.created_at)),
      h('td', { class: 'small nowrap', testid: 'nwc-row-used' }, c.last_used_at ? when(c.last_used_at) : 'never'),
      h('td', { class: 'small nowrap' }, c.expires_at ? when(c.expires_at) : 'never'),
      h('td', {}, pill(status, NWC_STATUS_PILL[status], 'nwc-row-status'),
        c.revoked_at ? h('div', { class: 'muted small nowrap' }, when(c.revoked_at)) : null),
      h('td', { class: 'actions' }, status === 'live' ? h('button', { type: 'button', class: 'danger-outline',
        testid: 'nwc-revoke', 'aria-label': `Revoke ${c.name}`, onclick: (e) => revoke(e.currentTarget, c) },
      'Revoke') : null));
  }

  async function revoke(button, c) {
    const question = `Revoke the Wallet Connect connection “${c.name}” of ${current()?.name || 'this agent'}?\n\n`
      + 'The app that holds its URI can no longer pay, nor read the wallet.';
    if (!confirm(question)) return;
    button.disabled = true;
    try {
      await api(`${base()}/${encodeURIComponent(c.id)}`, { method: 'DELETE' });
      toast(`Revoked “${c.name}”.`, 'ok');
    } catch (e) {
      toast(e.message, 'error');
      button.disabled = false;
    }
    await refresh();
  }

  /** The creation form: a name, the methods allowed (all by default), an optional expiry, notifications. */
  function createForm() {
    const name = h('input', { id: 'nwc-name', type: 'text', required: true, maxlength: NWC_NAME_MAX,
      autocomplete: 'off', placeholder: 'e.g. phone wallet', testid: 'nwc-name' });
    const methods = NWC_METHODS.map(([value, label]) => [h('input', { type: 'checkbox', value, checked: true,
      testid: `nwc-method-${value}` }), label]);
    const expires = h('input', { id: 'nwc-expires', type: 'datetime-local', testid: 'nwc-expires' });
    const notify = h('input', { type: 'checkbox', checked: true, testid: 'nwc-notifications' });
    const error = h('p', { class: 'error', testid: 'nwc-error', role: 'alert', hidden: true });
    const submit = h('button', { type: 'submit', class: 'primary', testid: 'nwc-create' }, 'Create connection');
    const fail = (text) => { error.textContent = text; error.hidden = false; };
    const element = h('form', { class: 'nwc-form', testid: 'nwc-form', 'aria-labelledby': 'nwc-form-title',
      onsubmit: (e) => { e.preventDefault(); create(); } },
    h('h3', { id: 'nwc-form-title' }, 'New connection'),
    h('label', { for: 'nwc-name' }, 'Name'), name,
    h('fieldset', { class: 'nwc-methods' }, h('legend', {}, 'Methods'),
      methods.map(([box, label]) => h('label', { class: 'check' }, box, label))),
    h('label', { for: 'nwc-expires' }, 'Expires (optional)'), expires,
    h('label', { class: 'check' }, notify, 'Send payment notifications'),
    submit, error);

    async function create() {
      const chosen = methods.filter(([box]) => box.checked).map(([box]) => box.value);
      if (!name.value.trim()) return fail('Give the connection a name.');
      if (!chosen.length) return fail('Choose at least one method.');
      const body = { name: name.value.trim(), methods: chosen, notifications: notify.checked };
      if (expires.value) body.expires_at = new Date(expires.value).toISOString();
      const id = agentId;
      submit.disabled = true;
      error.hidden = true;
      try {
        const made = await api(base(id), { method: 'POST', body });
        if (id === agentId) {
          showCreated(made);
          element.reset();
        }
      } catch (e) {
        fail(e.message);
      } finally {
        submit.disabled = false;
      }
      return refresh();
    }
    return { element, clear: () => { element.reset(); error.hidden = true; } };
  }

  /** The new connection's URI and its QR code: shown here once, until dismissed or the page is left. */
  function showCreated(made) {
    const qr = svgImage(made.uri_qr_svg, `QR code of the Wallet Connect URI of “${made.connection.name}”`, 'nwc-qr');
    const uri = h('code', { class: 'mono small nwc-uri', testid: 'nwc-uri' }, made.uri);
    created.replaceChildren(
      h('h3', { id: 'nwc-created-title' }, `Connection “${made.connection.name}” created`),
      h('p', { class: 'nwc-once', testid: 'nwc-once' }, h('strong', {}, 'Shown once. '),
        'Scan the QR code with the wallet app, or copy the URI into it, now: the gateway keeps no copy of its ',
        'secret and cannot show it again. Whoever holds it can spend within the agent’s constitution.'),
      h('div', { class: 'nwc-created-body' },
        qr ? h('div', { class: 'qr-box' }, qr) : h('p', { class: 'error' }, 'The QR code could not be shown.'),
        h('div', { class: 'nwc-uri-box' }, uri, h('div', { class: 'trade-actions' },
          h('button', { type: 'button', class: 'primary', testid: 'nwc-copy', onclick: () => copyText(made.uri, uri) },
            'Copy URI'),
          h('button', { type: 'button', testid: 'nwc-done', onclick: hideCreated }, 'Done, hide it')))));
    created.hidden = false;
  }

  function hideCreated() {
    created.hidden = true;
    created.replaceChildren();
  }

  return { element, select, refresh, render };
}

// -------------------------------------------------------------------- rooms

const qrCache = new Map(); // payment hash -> blob URL, or null when there is none

/** The QR code of an invoice: fetched once with the header, shown from a blob URL. */
function qrImage(invoice) {
  const img = h('img', { class: 'qr', testid: 'qr', alt: 'QR code of the invoice', width: 168, height: 168 });
  const box = h('div', { class: 'qr-box' }, img);
  const show = (url) => {
    if (url) img.src = url;
    else box.remove();
  };
  if (qrCache.has(invoice.payment_hash)) {
    show(qrCache.get(invoice.payment_hash));
  } else {
    fetch(invoice.qr_svg, { headers: authHeaders() })
      .then(async (res) => (res.ok ? URL.createObjectURL(await res.blob()) : null))
      .catch(() => null)
      .then((url) => {
        if (!session) return;
        qrCache.set(invoice.payment_hash, url);
        show(url);
      });
  }
  return box;
}

function effectiveStatus(invoice) {
  if (invoice.status === 'open' && Date.parse(invoice.expires_at) <= Date.now()) return 'expired';
  return invoice.status;
}

/** Where a request stands (`state`), expired on the clock like its status. */
function effectiveState(invoice) {
  const state = invoice.state || invoice.status;
  return state === 'open' && effectiveStatus(invoice) === 'expired' ? 'expired' : state;
}

/** How far a request got: a stale copy of a card never moves it back. */
const STATE_RANK = { open: 0, expired: 0, accepted: 1, held: 1, disputed: 2, paid: 3, released: 3, cancelled: 3,
  refunded: 3 };
const STATE_PILL = { open: 'info', accepted: 'warn', held: 'warn', disputed: 'bad', paid: 'ok', released: 'ok',
  cancelled: 'muted', refunded: 'muted', expired: 'muted' };
const STATE_NOTE = {
  accepted: 'Paid and held: the payee settles it once served, or cancels it (refunding the payer).',
  held: 'Paid into escrow: the payer releases it on delivery, or disputes it.',
  disputed: 'Disputed: the operator decides.',
  released: 'Released from escrow to the payee.',
  cancelled: 'Cancelled: the payer was refunded in full.',
  refunded: 'Given back from escrow: the payer was refunded in full.',
};

/** The rooms screen: the room list, the selected room, and for an agent its wallet. */
function roomsView(initialRoom) {
  const ctl = new AbortController();
  const { signal } = ctl;
  const isAgent = session.role === 'agent';
  let rooms = [];
  let selected = null;
  let room = null; // the open room: { id, stop() }
  const list = h('nav', { class: 'room-list', testid: 'room-list' });
  const main = h('div', { class: 'room-main' });
  const wallet = h('div', { class: 'wallet-body' });

  $('view').replaceChildren(h('div', { class: `rooms-layout ${isAgent ? 'agent' : ''}` },
    h('h1', { class: 'sr-only' }, isAgent ? 'Wallet and rooms' : 'Rooms'),
    isAgent ? panel('Wallet', wallet, { testid: 'wallet-panel', cls: 'wallet' }) : null,
    panel('Rooms', list, { testid: 'rooms-panel', cls: 'rooms' }),
    h('section', { class: 'panel room' }, main)));

  async function refreshWallet() {
    if (!isAgent) return;
    const [w, budget, escrows, sessions] = await Promise.all([api('/v1/wallet', { signal }),
      api(`/v1/agents/${encodeURIComponent(session.wallet.agent_id)}/budget`, { signal }).catch(() => null),
      api('/v1/escrows', { signal }).catch(() => []),
      api(`/v1/sessions?limit=${PAGE}`, { signal }).then((p) => p.items).catch(() => [])]);
    session.wallet = w;
    const open = escrows.filter(isOpenEscrow);
    const live = sessions.filter((x) => x.status === 'open');
    renderIfChanged(wallet, [w, budget, open, live], () => [
      h('div', { class: 'wallet-balance' },
        h('span', { class: 'big', testid: 'wallet-balance', data: { msat: w.balance_msat } }, sat(w.balance_msat)),
        h('span', { class: 'muted small' }, msat(w.balance_msat))),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Available'), h('dd', { testid: 'wallet-available' }, sat(w.available_msat)),
        h('dt', {}, 'Pending'), h('dd', {}, sat(w.pending_msat)),
        h('dt', {}, 'Agent'), h('dd', { class: 'mono small' }, w.agent_id),
        h('dt', {}, 'Key scope'), h('dd', {}, w.scope)),
      budget ? h('div', { class: 'wallet-budget' }, h('h3', {}, 'Budgets'), budgetBars(budget)) : null,
      h('div', { class: 'wallet-trades', testid: 'wallet-trades' }, h('h3', {}, 'Waiting'),
        open.length || live.length
          ? h('ul', { class: 'trades' }, open.map((e) => escrowRow(e)), live.map(sessionRow))
          : h('p', { class: 'muted small', testid: 'trades-empty' }, 'No open hold, escrow or session.')),
    ]);
  }

  async function refreshRooms() {
    rooms = [];
    for (let cursor = null; ;) {
      const page = await api(`/v1/rooms?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { signal });
      rooms.push(...page.items);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    // The operator reads every agent's name, again whenever a room names one it does not know yet.
    const unknown = (id) => id !== 'operator' && !session.names.has(id);
    if (!isAgent && (!session.names.size || rooms.some((r) => r.members.some(unknown)))) {
      const agents = await api('/v1/agents', { signal }).catch(() => []);
      agents.forEach((a) => session.names.set(a.id, a.name));
      room?.renderMessages();
    }
    renderList();
    room?.renderTitle();
    if (!selected) select(null);
  }

  function renderList() {
    renderIfChanged(list, [rooms, selected], () => (rooms.length
      ? rooms.map((r) => h('a', { href: `#/rooms/${encodeURIComponent(r.id)}`, testid: 'room-item',
        class: r.id === selected ? 'active' : null, data: { roomId: r.id } },
      h('span', { class: 'room-name' }, `# ${r.name}`),
      h('span', { class: 'muted small' }, `${r.members.length} member${r.members.length === 1 ? '' : 's'}`)))
      : h('p', { class: 'empty', testid: 'rooms-empty' }, isAgent ? 'You are in no room yet.' : 'No room yet.')));
  }

  function select(roomId) {
    if (roomId === selected && room) return;
    room?.stop();
    room = null;
    selected = roomId || null;
    renderList();
    if (!selected) {
      // The first room, once the list is known.
      if (rooms.length) location.replace(`#/rooms/${encodeURIComponent(rooms[0].id)}`);
      else main.replaceChildren(h('p', { class: 'empty' }, 'Choose a room.'));
      return;
    }
    room = openRoom(selected, main, { rooms: () => rooms, refreshWallet, isAgent });
  }

  every(5000, signal, refreshWallet, () => {});
  every(10000, signal, refreshRooms, (e) => e && toast(`Could not list the rooms: ${e.message}`, 'error'));
  select(initialRoom);
  return {
    update: select,
    stop: () => { ctl.abort(); room?.stop(); },
  };
}

/** One room: its messages, kept current by the event stream, and the composer. */
function openRoom(roomId, container, ctx) {
  const ctl = new AbortController();
  const { signal } = ctl;
  const me = ctx.isAgent ? session.wallet.agent_id : 'operator';
  const messages = new Map(); // id -> message
  const nodes = new Map(); // id -> element
  const cardState = new Map(); // id -> { busy, error, note }
  let lastId = 0;

  const live = h('span', { class: 'live', testid: 'live-status', data: { state: 'connecting' } }, 'connecting');
  const title = h('div', {});
  const list = h('ol', { class: 'messages', testid: 'messages' });
  const error = h('p', { class: 'error', testid: 'room-error', hidden: true });
  const compose = composer();
  container.replaceChildren(h('header', { class: 'room-head' }, title, live), error, list, compose);
  renderTitle();

  function renderTitle() {
    const info = ctx.rooms().find((r) => r.id === roomId);
    renderIfChanged(title, [info, [...session.names]], () => [
      h('h2', { testid: 'room-title' }, `# ${info ? info.name : roomId}`),
      info ? h('div', { class: 'muted small' }, 'Members: ', info.members.map(nameOf).join(', ')) : null]);
  }

  function composer() {
    const text = h('input', { type: 'text', placeholder: 'Write a message…', maxlength: 4096,
      testid: 'message-input', 'aria-label': 'Message' });
    const send = h('form', { class: 'composer', onsubmit: async (e) => {
      e.preventDefault();
      if (!text.value.trim()) return;
      try {
        upsert(await api(`/v1/rooms/${encodeURIComponent(roomId)}/messages`, { method: 'POST',
          body: { text: text.value } }));
        text.value = '';
      } catch (err) { toast(err.message, 'error'); }
    } }, text, h('button', { type: 'submit', class: 'primary', testid: 'send-button' }, 'Send'));
    if (!ctx.isAgent || session.wallet.scope === 'read') return send;
    const amount = h('input', { type: 'number', min: '0.001', step: '0.001', placeholder: 'sat',
      testid: 'request-amount', 'aria-label': 'Amount in sat', required: true });
    const memo = h('input', { type: 'text', placeholder: 'What for?', maxlength: 600, testid: 'request-memo',
      'aria-label': 'Memo' });
    // A plain request, a hold (settled by the poster once served) or escrow
    // (released by the payer on delivery; refunded after an hour otherwise).
    const kind = h('select', { testid: 'request-kind', 'aria-label': 'How it is paid' },
      h('option', { value: 'plain' }, 'Paid now'),
      h('option', { value: 'hold' }, 'Hold (I settle once served)'),
      h('option', { value: 'escrow' }, 'Escrow (payer releases)'));
    const terms = () => (kind.value === 'hold' ? { hold: true }
      : kind.value === 'escrow' ? { escrow: { release_after_secs: 3600, on_timeout: 'refund' } } : {});
    const ask = h('form', { class: 'composer request', onsubmit: async (e) => {
      e.preventDefault();
      const amount_msat = Math.round(Number(amount.value) * 1000);
      try {
        upsert(await api(`/v1/rooms/${encodeURIComponent(roomId)}/messages`, { method: 'POST',
          body: { payment_request: { amount_msat, memo: memo.value || null, ...terms() } } }));
        amount.value = '';
        memo.value = '';
        kind.value = 'plain';
      } catch (err) { toast(err.message, 'error'); }
    } }, h('span', { class: 'composer-label' }, 'Request'), amount, memo, kind,
    h('button', { type: 'submit', testid: 'request-button' }, 'Request payment'));
    return h('div', { class: 'composers' }, send, ask);
  }

  function upsert(m) {
    const prev = messages.get(m.id);
    // States only move forward: a stale copy never reopens a paid request.
    const rank = (inv) => STATE_RANK[inv?.state || inv?.status] ?? 0;
    if (prev?.invoice && m.invoice && rank(prev.invoice) > rank(m.invoice)) {
      m = { ...m, invoice: prev.invoice, receipt: prev.receipt };
    }
    messages.set(m.id, m);
    lastId = Math.max(lastId, m.id);
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    const node = renderMessage(m);
    const old = nodes.get(m.id);
    nodes.set(m.id, node);
    if (old) {
      old.replaceWith(node);
    } else {
      const after = [...nodes.keys()].filter((id) => id > m.id && id !== m.id).sort((a, b) => a - b)[0];
      if (after !== undefined && nodes.get(after).isConnected) list.insertBefore(node, nodes.get(after));
      else list.append(node);
    }
    if (stick) list.scrollTop = list.scrollHeight;
  }

  /** A request changed state: an `invoice.*` event's data (or a payment just made) on its card. */
  function applyUpdate(update) {
    for (const m of messages.values()) {
      if (m.invoice?.payment_hash !== update.payment_hash) continue;
      cardState.delete(m.id);
      const inv = { ...m.invoice };
      for (const field of ['status', 'state', 'actions', 'payer', 'payment_id', 'deadline', 'receipt_url']) {
        if (update[field] !== undefined) inv[field] = update[field];
      }
      upsert({ ...m, invoice: inv, receipt: update.receipt || m.receipt });
      if (ctx.isAgent && (m.sender === me || inv.payer === me)) ctx.refreshWallet().catch(() => {});
    }
  }

  function markPaid(paymentHash, receipt) {
    applyUpdate({ payment_hash: paymentHash, status: 'paid', state: 'paid', actions: [], receipt });
  }

  function renderMessage(m) {
    const mine = m.sender === me;
    const meta = h('div', { class: 'msg-meta' }, h('span', { class: 'strong' }, nameOf(m.sender)), ' · ',
      h('time', { title: when(m.created_at) }, clock(m.created_at)));
    if (m.kind === 'payment_request' && m.invoice) return renderCard(m, mine, meta);
    return h('li', { class: `msg ${mine ? 'mine' : ''}`, testid: 'message', data: { messageId: m.id } },
      meta, h('div', { class: 'bubble' }, m.text));
  }

  function renderCard(m, mine, meta) {
    const inv = m.invoice;
    const status = effectiveStatus(inv);
    const state = effectiveState(inv);
    const st = cardState.get(m.id) || {};
    const canPay = ctx.isAgent && !mine && status === 'open' && session.wallet.scope === 'spend';
    const actions = (inv.actions || []).filter((a) => a !== 'pay' && state !== 'expired');
    const terms = inv.escrow
      ? `Paid into escrow: released by the payer, or ${inv.escrow.on_timeout === 'release' ? 'released' : 'refunded'} after ${inv.escrow.release_after_secs} s`
      : inv.hold ? `Hold invoice: the payee settles it within ${inv.hold_secs} s of payment` : null;
    return h('li', { class: `msg card-row ${mine ? 'mine' : ''}`, data: { messageId: m.id } }, meta,
      h('article', { class: `pay-card ${status} state-${state}`, testid: 'payment-card', data: { status, state,
        messageId: m.id, paymentHash: inv.payment_hash, actions: actions.join(' ') } },
      h('header', { class: 'pay-card-head' }, h('span', { class: 'muted small' },
        inv.escrow ? 'Payment request · escrow' : inv.hold ? 'Payment request · hold' : 'Payment request'),
      pill(state, STATE_PILL[state] || 'muted', 'card-status')),
      h('div', { class: 'pay-card-body' },
        h('div', { class: 'pay-card-info' },
          h('div', { class: 'amount big', testid: 'card-amount', data: { msat: inv.amount_msat } }, sat(inv.amount_msat)),
          h('div', { class: 'muted small' }, msat(inv.amount_msat)),
          inv.memo ? h('p', { class: 'memo', testid: 'card-memo' }, inv.memo) : null,
          terms && status === 'open' ? h('p', { class: 'muted small', testid: 'card-terms' }, terms) : null,
          STATE_NOTE[state] ? h('p', { class: 'small', testid: 'card-note' }, STATE_NOTE[state]) : null,
          inv.deadline && (state === 'accepted' || state === 'held')
            ? h('div', { class: 'muted small', testid: 'card-deadline' }, `decided by ${when(inv.deadline)}`) : null,
          status === 'open' ? h('div', { class: 'muted small' }, `expires ${when(inv.expires_at)}`) : null,
          status === 'paid' && m.receipt ? receipt(m.receipt) : null,
          status === 'paid' && !m.receipt ? h('p', { class: 'muted small' }, 'Paid.') : null,
          inv.receipt_url ? h('a', { href: '#', class: 'small', testid: 'card-receipt',
            onclick: (ev) => { ev.preventDefault(); saveReceipt(inv.receipt_url).catch(() => {}); } }, 'Receipt') : null),
        status === 'open' ? qrImage(inv) : null),
      status === 'open' ? h('details', { class: 'bolt11' }, h('summary', {}, 'Invoice (BOLT11)'),
        h('code', { class: 'mono small', testid: 'card-bolt11' }, inv.bolt11)) : null,
      canPay || actions.length || st.error || st.note ? h('footer', { class: 'pay-card-foot' },
        canPay ? h('button', { type: 'button', class: 'primary', testid: 'pay-button', disabled: st.busy,
          onclick: () => pay(m) }, st.busy ? 'Paying…' : `Pay ${sat(inv.amount_msat)}`) : null,
        actions.length ? h('div', { class: 'card-actions' }, actions.flatMap((a) => actionButtons(m, a, st))) : null,
        st.note ? h('p', { class: 'note', testid: 'pay-note' }, st.note) : null,
        st.error ? h('p', { class: 'error', testid: 'pay-error', data: { code: st.code } }, st.error) : null)
        : null));
  }

  /** The buttons of one action the reader may take on a card. */
  function actionButtons(m, action, st) {
    const inv = m.invoice;
    const hash = encodeURIComponent(inv.payment_hash);
    const id = encodeURIComponent(inv.payment_id || '');
    const button = (testid, label, cls, path, body, done) => h('button', { type: 'button', class: cls, testid,
      disabled: st.busy, onclick: () => act(m, path, body, done) }, label);
    switch (action) {
      case 'settle': return [button('action-settle', 'Settle (served)', 'primary', `/v1/invoices/${hash}/settle`, null,
        'Settled: you are paid.')];
      case 'cancel': return [button('action-cancel', inv.state === 'accepted' ? 'Cancel (refund)' : 'Give back',
        'danger-outline', `/v1/invoices/${hash}/cancel`, null, 'Cancelled: the payer is refunded.')];
      case 'release': return [button('action-release', 'Release (delivered)', 'primary', `/v1/payments/${id}/release`,
        null, 'Released to the payee.')];
      case 'dispute': return [button('action-dispute', 'Dispute', 'danger-outline', `/v1/payments/${id}/dispute`, null,
        'Disputed: the operator decides.')];
      case 'resolve': return [
        button('action-resolve-release', 'Release to payee', 'primary', `/v1/payments/${id}/resolve`,
          { outcome: 'release' }, 'Released to the payee.'),
        button('action-resolve-refund', 'Refund payer', 'danger-outline', `/v1/payments/${id}/resolve`,
          { outcome: 'refund' }, 'Refunded to the payer.')];
      default: return [];
    }
  }

  /** Takes an action on a card, then reads the card back as it now stands. */
  async function act(m, path, body, done) {
    cardState.set(m.id, { busy: true });
    upsert(messages.get(m.id));
    try {
      await api(path, { method: 'POST', body: body || undefined });
      cardState.delete(m.id);
      toast(done, 'ok');
    } catch (e) {
      cardState.set(m.id, { error: e.message, code: e.code });
    }
    await catchUp(m.id - 1, 1).catch(() => {});
    upsert(messages.get(m.id));
    ctx.refreshWallet().catch(() => {});
  }

  /** Fetches a signed receipt (with the session's token) and saves it as a JSON file. */
  async function saveReceipt(url) {
    const signed = await api(url);
    const blob = new Blob([JSON.stringify(signed, null, 2)], { type: 'application/json' });
    const link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = `receipt-${signed.receipt.payment_id}.json`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  function receipt(r) {
    return h('dl', { class: 'receipt facts', testid: 'receipt' },
      h('dt', {}, 'Paid by'), h('dd', { testid: 'receipt-payer' }, nameOf(r.payer)),
      h('dt', {}, 'Amount'), h('dd', {}, `${sat(r.amount_msat)} (${msat(r.amount_msat)})`),
      h('dt', {}, 'At'), h('dd', {}, when(r.paid_at)),
      h('dt', {}, 'Preimage'), h('dd', { class: 'mono small preimage', testid: 'receipt-preimage' }, r.preimage));
  }

  async function pay(m) {
    const payee = m.invoice.payee || m.sender;
    const sure = await confirmDialog({ title: 'Pay this request?', confirmLabel: `Pay ${sat(m.invoice.amount_msat)}`,
      facts: [['Amount', `${sat(m.invoice.amount_msat)} (${msat(m.invoice.amount_msat)})`, 'confirm-amount'],
        ['Payee', nameOf(payee), 'confirm-payee'],
        ['Paid by', nameOf(me), 'confirm-payer'],
        ['For', m.invoice.memo || '—', 'confirm-memo']] });
    if (!sure) return;
    cardState.set(m.id, { busy: true });
    upsert(messages.get(m.id));
    try {
      const { status, data } = await request(
        `/v1/rooms/${encodeURIComponent(roomId)}/messages/${m.id}/pay`,
        { method: 'POST', headers: { 'Idempotency-Key': randomKey() } },
      );
      if (status === 202) {
        cardState.set(m.id, { note: 'Held for the operator’s approval: it is paid once approved.' });
        upsert(messages.get(m.id));
      } else if (data.status === 'held') {
        // Paid into a hold or an escrow: read the card back for its state and actions.
        cardState.delete(m.id);
        await catchUp(m.id - 1, 1).catch(() => {});
      } else {
        markPaid(m.invoice.payment_hash, { payer: me, amount_msat: data.amount_msat, paid_at: data.created_at,
          preimage: data.preimage || '' });
      }
    } catch (e) {
      cardState.set(m.id, { error: e.message, code: e.code });
      upsert(messages.get(m.id));
      if (e.code === 'already-paid' || e.status === 409) catchUp(m.id - 1).catch(() => {});
    }
    ctx.refreshWallet().catch(() => {});
  }

  /** Reads the messages after `after`, page by page, into the list. */
  async function catchUp(after, pages = Infinity) {
    for (let page = 0; page < pages; page++) {
      const rows = await api(`/v1/rooms/${encodeURIComponent(roomId)}/messages?after=${after}&limit=${PAGE}`,
        { signal });
      rows.forEach(upsert);
      if (rows.length < PAGE) return;
      after = rows[rows.length - 1].id;
    }
  }

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  // Catch up, then follow the stream; once it is open (the server is
  // subscribed), re-read the open requests, so none paid in between is
  // missed. Reconnect with a growing pause after a drop, at once after a
  // `reload` (the stream fell behind).
  (async () => {
    let pause = 500;
    while (!signal.aborted) {
      const stream = new AbortController();
      const stopStream = () => stream.abort();
      signal.addEventListener('abort', stopStream, { once: true });
      let reload = false;
      try {
        await catchUp(lastId);
        await readEvents(`/v1/rooms/${encodeURIComponent(roomId)}/events?after=${lastId}`, {
          signal: stream.signal,
          onOpen: async () => {
            setLive('live', 'live');
            pause = 500;
            const open = [...messages.values()].filter((m) => m.invoice && (STATE_RANK[m.invoice.state] ?? 0) < 3)
              .map((m) => m.id);
            if (open.length) await catchUp(Math.min(...open) - 1, 5);
          },
          onEvent: (name, data) => {
            if (name === 'message.posted') upsert(JSON.parse(data));
            else if (name.startsWith('invoice.')) applyUpdate(JSON.parse(data));
            else if (name === 'reload') {
              reload = true;
              stream.abort();
            }
          },
        });
      } catch (e) {
        if (signal.aborted) return;
        if (e.status === 403 || e.status === 404) {
          setLive('offline', 'no access');
          error.textContent = e.status === 403 ? 'You are not a member of this room.' : 'There is no such room.';
          error.hidden = false;
          list.replaceChildren();
          list.hidden = true;
          compose.hidden = true;
          return;
        }
      } finally {
        signal.removeEventListener('abort', stopStream);
      }
      if (signal.aborted) return;
      if (!reload) {
        setLive('offline', 'reconnecting');
        await sleep(pause, signal);
        pause = Math.min(pause * 2, 10_000);
      }
    }
  })();

  // Open requests expire on the clock, not on an event.
  const expiry = setInterval(() => {
    for (const m of messages.values()) {
      const node = nodes.get(m.id)?.querySelector('[data-testid="payment-card"]');
      if (node && (node.dataset.status !== effectiveStatus(m.invoice) || node.dataset.state !== effectiveState(m.invoice))) {
        upsert(m);
      }
    }
  }, 10_000);

  // Names learnt after the messages were drawn: draw them again.
  const renderMessages = () => [...messages.values()].forEach(upsert);
  return { stop: () => { ctl.abort(); clearInterval(expiry); }, renderTitle, renderMessages };
}

// --------------------------------------------------------------------- boot

$('signout').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
const saved = sessionStorage.getItem(SECRET_KEY);
if (saved) {
  signIn(saved).catch((e) => {
    sessionStorage.removeItem(SECRET_KEY);
    showSignIn(e.message);
  });
} else {
  showSignIn();
}

// What the console's pages (console.js) share with this file.
export {
  $, ApiError, KNOWN_ACTIONS, PAGE, SPEND_ACTIONS, api, budgetBars, clock, confirmDialog, copyText, escrowRow, every,
  h, isAbort, learnNames, msat, nameOf, panel, pill, randomKey, renderIfChanged, request, sat, scrollRegion,
  sessionRow, shortId, toast, when,
};
