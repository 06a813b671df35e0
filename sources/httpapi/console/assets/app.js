// Sluice operator console. Plain JavaScript, no build step, no framework, no request to any
// other origin: every read and every action goes through the HTTP API with the operator's
// token, under the same scopes as the CLI. Text from the server (payloads, error messages,
// ids) is only ever set as text, never parsed as HTML.
'use strict';

const TOKEN_KEY = 'sluice.token';
const ERROR_CLASSES = ['validation', 'limit', 'rejected', 'auth', 'transient', 'exhausted'];
const JOB_STATES = ['pending', 'running', 'completed', 'completed_with_errors', 'superseded', 'rolled_back', 'failed'];
const ENVS = ['dev', 'test', 'prod'];
const REPLAY_DEFAULT_RATE = 100; // pipeline/dlq.DefaultRate
const REPLAY_MAX_RATE = 10000; // pipeline/dlq.MaxRate
const PAYLOAD_SHOWN = 256 * 1024; // bytes of a payload shown before "truncated"
const LIVE_JOBS = 500; // rows the live jobs list keeps; the oldest go first

const state = { token: sessionStorage.getItem(TOKEN_KEY) || '', who: null, page: null };

// ---- DOM -----------------------------------------------------------------------------------

// h builds an element: h('a', {href: '#/x', class: 'y'}, 'text', child, [more]). Attributes
// starting with "on" are listeners; strings become text nodes.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

// put replaces el's children with kids, skipping null, undefined and false as h does
// (replaceChildren would write them as text).
function put(el, ...kids) {
  el.replaceChildren();
  return append(el, kids);
}

const $ = (sel) => document.querySelector(sel);
const main = () => $('#main');

function setStatus(msg, isError) {
  const st = $('#status');
  st.textContent = msg || '';
  st.className = 'status' + (isError ? ' error' : '');
  st.setAttribute('role', isError ? 'alert' : 'status');
}

function fmtTime(s) {
  if (!s) return '';
  const d = new Date(s);
  return isNaN(d) ? String(s) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : n ?? '');
const badge = (text, cls) => h('span', { class: 'badge ' + (cls || text) }, String(text).replaceAll('_', ' '));

function table(headers, rows, opts) {
  const o = opts || {};
  return h('div', { class: 'table-wrap' },
    h('table', { 'data-table': o.name },
      o.caption ? h('caption', { class: 'muted' }, o.caption) : null,
      h('thead', {}, h('tr', {}, headers.map((c) => h('th', { scope: 'col', class: c.cls }, c.label ?? c)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, o.empty || 'Nothing here.')))));
}

function dl(pairs) {
  return h('dl', { class: 'grid' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', { 'data-field': k }, v ?? '')]));
}

// ---- API -----------------------------------------------------------------------------------

class APIError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function authHeaders(extra) {
  const hd = Object.assign({}, extra);
  if (state.token) hd.Authorization = 'Bearer ' + state.token;
  return hd;
}

async function problemOf(res) {
  let detail = res.statusText || 'HTTP ' + res.status;
  try {
    const p = await res.json();
    if (p && (p.detail || p.title)) detail = p.detail || p.title;
  } catch (_) { /* not problem+json */ }
  return new APIError(res.status, `${res.status}: ${detail}`);
}

// api calls the HTTP API and returns the decoded JSON (null for 204). It throws APIError.
async function api(method, path, body, signal) {
  const init = { method, headers: authHeaders(), signal, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin('Your token was refused (' + (await problemOf(res)).message + '). Sign in again.');
    throw new APIError(401, 'signed out');
  }
  if (!res.ok) throw await problemOf(res);
  if (res.status === 204) return null;
  return res.json();
}

// follow reads a server-sent event stream with the token (EventSource cannot send one),
// calling onEvent(type, data) for each event, and reconnects with Last-Event-ID, backing off,
// until signal aborts. onLive(bool) tells whether the stream is connected.
async function follow(path, signal, onEvent, onLive) {
  let last = null;
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const hd = authHeaders({ Accept: 'text/event-stream' });
      if (last !== null) hd['Last-Event-ID'] = last;
      const res = await fetch(path, { headers: hd, signal, credentials: 'omit', cache: 'no-store' });
      if (!res.ok) throw await problemOf(res);
      onLive(true);
      delay = 1000;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replaceAll('\r\n', '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let type = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const [k, ...rest] = line.split(':');
            const v = rest.join(':').replace(/^ /, '');
            if (k === 'id') last = v;
            else if (k === 'event') type = v;
            else if (k === 'data') data.push(v);
          }
          if (data.length) onEvent(type, data.join('\n'));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof APIError && e.status === 401) { showLogin('Your token was refused.'); return; }
    }
    onLive(false);
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 15000);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

const can = (scope) => !!state.who && state.who.scopes.includes(scope);

// ---- dialogs -------------------------------------------------------------------------------

// openDialog shows a modal with title, body and buttons [{label, cls, value, disabled}], plus
// Cancel. Its done resolves with the value of the button pressed ('' on Cancel or Escape);
// button(value) is one of the buttons, to enable or relabel while the dialog is open.
function openDialog(title, body, buttons) {
  const dlg = $('#dialog');
  $('#dialog-title').textContent = title;
  const bodyEl = $('#dialog-body');
  put(bodyEl, body);
  const acts = $('#dialog-actions');
  const els = buttons.map((b) => h('button', { value: b.value, class: b.cls, disabled: b.disabled, 'data-action': b.value }, b.label));
  put(acts, ...els, h('button', { value: '', 'data-action': 'cancel' }, 'Cancel'));
  dlg.returnValue = '';
  const done = new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue), { once: true }));
  dlg.showModal();
  (els.find((e) => !e.disabled) || acts.lastChild).focus();
  return {
    done,
    button: (value) => els.find((e) => e.value === value),
  };
}

// ---- session -------------------------------------------------------------------------------

async function loadWho() {
  const res = await fetch('/v1/whoami', { headers: authHeaders(), credentials: 'omit', cache: 'no-store' });
  if (res.status === 401) return null;
  if (!res.ok) throw await problemOf(res);
  return res.json();
}

function renderWho() {
  const who = $('#who');
  if (!state.who) { put(who); return; }
  put(who, 
    h('span', { 'data-principal': state.who.principal }, state.who.principal, ' · ', state.who.scopes.join(', ')),
    state.who.auth ? h('button', { type: 'button', onclick: signOut }, 'Sign out') : null);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = '';
  state.who = null;
  showLogin('Signed out.');
}

function showLogin(msg) {
  state.page?.abort();
  state.who = null;
  renderWho();
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'card login', id: 'login', method: 'post' },
    h('h1', {}, 'Sign in'),
    h('p', { id: 'token-help', class: 'muted' }, 'Paste an API token. It is kept in this tab only (session storage) and sent with each request; a read token sees, an admin token can act.'),
    h('label', { class: 'field', for: 'token' }, 'API token', input),
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Sign in')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    state.token = input.value.trim();
    try {
      const who = await loadWho();
      if (!who) { setStatus('That token was refused.', true); state.token = ''; return; }
      sessionStorage.setItem(TOKEN_KEY, state.token);
      state.who = who;
      renderWho();
      setStatus('');
      if (!location.hash || location.hash === '#/login') location.hash = '#/jobs';
      route();
    } catch (e) {
      setStatus(e.message, true);
    }
  });
  put(main(), form);
  if (msg) setStatus(msg, false);
  input.focus();
}

// ---- routing -------------------------------------------------------------------------------

const routes = [
  [/^\/jobs$/, pageJobs, 'jobs'],
  [/^\/jobs\/([^/]+)$/, pageJob, 'jobs'],
  [/^\/dlq$/, pageDLQ, 'dlq'],
  [/^\/dlq\/([^/]+)$/, pageDeadLetter, 'dlq'],
  [/^\/consumers$/, pageConsumers, 'consumers'],
  [/^\/requirements$/, pageRequirements, 'requirements'],
  [/^\/features\/([^/]+)$/, pageFeature, 'requirements'],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/jobs';
  const [path, query] = raw.split('?');
  return { path, params: new URLSearchParams(query || '') };
}

async function route() {
  if (!state.who) {
    try {
      state.who = await loadWho();
    } catch (e) {
      setStatus('The API is not answering: ' + e.message, true);
      return;
    }
    if (!state.who) { showLogin(state.token ? 'Your token was refused.' : ''); return; }
    renderWho();
  }
  state.page?.abort();
  const ctl = new AbortController();
  state.page = ctl;
  setStatus('');
  const { path, params } = parseHash();
  for (const [re, fn, nav] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('nav a')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const args = m.slice(1).map(decodeURIComponent);
    try {
      await fn(ctl.signal, params, ...args);
    } catch (e) {
      if (!ctl.signal.aborted && !(e instanceof APIError && e.status === 401)) setStatus(e.message, true);
    }
    return;
  }
  put(main(), h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/jobs' }, 'Jobs')));
}

function setHash(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  location.hash = '#' + path + (s ? '?' + s : '');
}

// ---- jobs ----------------------------------------------------------------------------------

function progress(job) {
  const pub = job.published || 0;
  const written = job.written || 0;
  return h('span', {},
    h('progress', { max: Math.max(pub, 1), value: Math.min(written, pub), 'aria-label': `${written} of ${pub} written` }),
    ' ', `${fmtNum(job.written || 0)}/${fmtNum(pub)}`);
}

async function pageJobs(signal, params) {
  const st = params.get('state') || '';
  const env = params.get('env') || '';
  const live = h('span', { class: 'offline', id: 'live' }, 'connecting');
  const stateSel = h('select', { name: 'state', id: 'f-state' }, h('option', { value: '' }, 'any'),
    JOB_STATES.map((s) => h('option', { value: s, selected: s === st }, s.replaceAll('_', ' '))));
  const envSel = h('select', { name: 'env', id: 'f-env' }, h('option', { value: '' }, 'any'),
    ENVS.map((e) => h('option', { value: e, selected: e === env }, e)));
  const filters = h('form', { class: 'filters', role: 'search' },
    h('label', { for: 'f-state' }, 'State', stateSel), h('label', { for: 'f-env' }, 'Environment', envSel),
    h('button', { type: 'submit' }, 'Filter'), live);
  filters.addEventListener('submit', (ev) => { ev.preventDefault(); setHash('/jobs', { state: stateSel.value, env: envSel.value }); });
  const tbody = h('tbody');
  const more = h('div', { class: 'actions' });
  put(main(), h('h1', {}, 'Jobs'), filters,
    h('div', { class: 'table-wrap' }, h('table', { 'data-table': 'jobs' },
      h('thead', {}, h('tr', {}, ['Job', 'Env', 'State', 'File', 'Progress', { label: 'Rejected', cls: 'num' }, { label: 'Dead', cls: 'num' }, { label: 'Created', cls: 'opt' }]
        .map((c) => h('th', { scope: 'col', class: c.cls }, c.label ?? c)))), tbody)), more);

  const jobs = new Map(); // job_id → job
  const rows = new Map(); // job_id → tr
  const matches = (j) => (!st || j.state === st) && (!env || j.env === env);
  const rowOf = (j) => h('tr', { 'data-job': j.job_id, 'data-state': j.state },
    h('td', { class: 'mono' }, h('a', { href: '#/jobs/' + encodeURIComponent(j.job_id) }, j.job_id)),
    h('td', {}, j.env), h('td', {}, badge(j.state)), h('td', {}, j.file || ''),
    h('td', {}, progress(j)), h('td', { class: 'num' }, fmtNum(j.rejected)),
    h('td', { class: 'num' }, fmtNum(j.dead_lettered)), h('td', { class: 'opt' }, fmtTime(j.created_at)));
  const upsert = (j, atTop) => {
    const old = jobs.get(j.job_id);
    if (old && old.updated_at > j.updated_at) return;
    if (!matches(j)) {
      rows.get(j.job_id)?.remove();
      rows.delete(j.job_id);
      jobs.delete(j.job_id);
      return;
    }
    jobs.set(j.job_id, j);
    const tr = rowOf(j);
    const prev = rows.get(j.job_id);
    tbody.querySelector('tr.empty')?.remove();
    if (prev) prev.replaceWith(tr);
    else if (atTop) tbody.prepend(tr);
    else tbody.append(tr);
    rows.set(j.job_id, tr);
    // A tab left open for days must not grow without end: a live job past LIVE_JOBS rows
    // pushes the bottom (oldest) one out. Pages the operator asks for ("More jobs") stay.
    if (!prev && atTop && rows.size > LIVE_JOBS) {
      const last = tbody.lastElementChild;
      rows.delete(last.dataset.job);
      jobs.delete(last.dataset.job);
      last.remove();
    }
  };
  // Follow first, then list: an event that races the list is kept when it is newer.
  follow('/v1/events?types=job', signal, (type, data) => {
    if (type !== 'job') return;
    const ev = JSON.parse(data);
    if (ev.job) upsert(ev.job, true);
  }, (on) => { live.className = on ? 'live' : 'offline'; live.textContent = on ? 'live' : 'reconnecting'; });

  const loadPage = async (cursor) => {
    const q = new URLSearchParams({ limit: '50' });
    if (st) q.set('state', st);
    if (env) q.set('env', env);
    if (cursor) q.set('cursor', cursor);
    const page = await api('GET', '/v1/jobs?' + q, undefined, signal);
    for (const j of page.jobs || []) upsert(j, false);
    put(more, page.next_cursor ? h('button', { type: 'button', onclick: () => loadPage(page.next_cursor) }, 'More jobs') : '');
    if (!jobs.size) put(tbody, h('tr', { class: 'empty' }, h('td', { colspan: 8, class: 'muted' }, 'No jobs yet. Load one with sluice load or POST /v1/jobs.')));
    else tbody.querySelector('tr.empty')?.remove();
  };
  await loadPage('');
}

async function pageJob(signal, params, id) {
  const head = h('div');
  const dead = h('div');
  put(main(), h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')), h('h1', {}, 'Job ', h('span', { class: 'mono' }, id)), head, dead);
  let job = await api('GET', '/v1/jobs/' + encodeURIComponent(id), undefined, signal);
  let deadCount = -1;
  const render = () => {
    const rb = job.rollback;
    put(head, h('section', { class: 'card', 'aria-label': 'Job' },
      dl([
        ['State', badge(job.state)], ['Environment', job.env], ['File', job.file], ['Format', job.format],
        ['Source job', job.source_job_id], ['Progress', progress(job)], ['Total items', fmtNum(job.total)],
        ['Published', fmtNum(job.published)], ['Written', fmtNum(job.written)], ['Rejected', fmtNum(job.rejected)],
        ['Dead-lettered', fmtNum(job.dead_lettered)], ['Created', fmtTime(job.created_at)], ['Completed', fmtTime(job.completed_at)],
        rb ? ['Rollback', `${rb.state}${rb.deleted ? ', ' + fmtNum(rb.deleted) + ' deleted' : ''}${rb.restored ? ', ' + fmtNum(rb.restored) + ' restored' : ''}${rb.error ? ': ' + rb.error : ''}`] : null,
        job.superseded ? ['Superseded', `${fmtNum(job.superseded.documents)} documents by ${job.superseded.by.map((b) => b.job_id).join(', ')}`] : null,
      ]),
      h('div', { class: 'actions' },
        job.dead_lettered ? h('a', { href: '#/dlq?job=' + encodeURIComponent(job.job_id) }, 'Its dead letters in the DLQ view') : null,
        can('admin') && job.state !== 'rolled_back' ? h('button', { type: 'button', class: 'danger', id: 'rollback', onclick: () => rollbackDialog(job) }, 'Roll back…') : null)),
    h('h2', {}, 'Rejections'),
    table([{ label: 'Item', cls: 'num' }, 'Id', 'Reason'], (job.rejections || []).map((r) =>
      h('tr', { 'data-item': r.index }, h('td', { class: 'num' }, r.index), h('td', { class: 'mono' }, r.id || '—'), h('td', {}, r.reason))),
    { name: 'rejections', empty: 'No item was rejected.' }));
  };
  const loadDead = async () => {
    if (deadCount === job.dead_lettered) return;
    deadCount = job.dead_lettered;
    const page = await api('GET', '/v1/dlq?limit=100&job=' + encodeURIComponent(id), undefined, signal);
    put(dead, h('h2', {}, 'Dead letters'), deadTable(page.entries, false, 'No dead letter for this job.'),
      page.next_cursor ? h('p', {}, h('a', { href: '#/dlq?job=' + encodeURIComponent(id) }, 'All of them in the DLQ view')) : null);
  };
  render();
  await loadDead();
  follow('/v1/events?types=job', signal, (type, data) => {
    const ev = JSON.parse(data);
    if (type !== 'job' || !ev.job || ev.job.job_id !== id || ev.job.updated_at < job.updated_at) return;
    job = ev.job;
    render();
    loadDead().catch((e) => setStatus(e.message, true));
  }, () => {});
}

async function rollbackDialog(job) {
  const restore = h('input', { type: 'checkbox', id: 'restore' });
  const body = h('div');
  const dlg = openDialog(`Roll back job ${job.job_id}?`, h('div', {}, body), [{ label: 'Roll back', value: 'confirm', cls: 'danger primary', disabled: true }]);
  const preview = async () => {
    dlg.button('confirm').disabled = true;
    put(body, h('p', { class: 'muted' }, 'Reading what the rollback would do…'));
    let p;
    try {
      p = await api('GET', `/v1/jobs/${encodeURIComponent(job.job_id)}/rollback?restore_previous=${restore.checked}`);
    } catch (e) {
      put(body, h('p', { class: 'error' }, e.message));
      return;
    }
    const sup = p.superseded_jobs || [];
    put(body, h('div', { id: 'rollback-preview' },
      h('p', {}, restore.checked
        ? `${fmtNum(p.restored)} of the ${fmtNum(p.documents)} documents this job wrote last are put back to the version they replaced; ${fmtNum(p.deleted)} are deleted.`
        : `${fmtNum(p.documents)} documents this job wrote last are deleted.`),
      sup.length
        ? [h('p', {}, `${sup.length} earlier job${sup.length > 1 ? 's lose' : ' loses'} documents this job had rewritten, and ${sup.length > 1 ? 'become' : 'becomes'} superseded:`),
          h('ul', { 'data-list': 'superseded' }, sup.map((s) => h('li', {}, h('span', { class: 'mono' }, s.job_id), ` — ${fmtNum(s.documents)} documents`)))]
        : h('p', {}, 'No earlier job is affected.'),
      p.truncated ? h('p', { class: 'muted' }, 'The count stopped early; the rollback may remove more.') : null,
      p.restore_supported ? h('label', {}, restore, ' Restore the previous versions instead of deleting') : h('p', { class: 'muted' }, 'This document store keeps no previous versions: documents are deleted.'),
      p.can_roll_back ? null : h('p', { class: 'error' }, p.reason || 'This job cannot be rolled back now.')));
    dlg.button('confirm').disabled = !p.can_roll_back;
  };
  restore.addEventListener('change', preview);
  await preview();
  if ((await dlg.done) !== 'confirm') return;
  try {
    await api('DELETE', `/v1/jobs/${encodeURIComponent(job.job_id)}?restore_previous=${restore.checked}`);
    setStatus(`Rollback of ${job.job_id} requested; this page follows it.`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

// ---- dead letters --------------------------------------------------------------------------

const dlqFilterKeys = ['job', 'subject', 'error_class', 'since', 'until'];

function deadTable(entries, selectable, empty, onSelect) {
  const rows = entries.map((e) => {
    const box = selectable ? h('input', { type: 'checkbox', 'aria-label': 'Select ' + e.id, 'data-id': e.id }) : null;
    if (box) box.addEventListener('change', () => { box.closest('tr').classList.toggle('selected', box.checked); onSelect?.(); });
    return h('tr', { 'data-dead-letter': e.id },
      selectable ? h('td', {}, box) : null,
      h('td', { class: 'mono' }, h('a', { href: '#/dlq/' + encodeURIComponent(e.id) }, e.id)),
      h('td', { class: 'mono' }, e.subject),
      h('td', { class: 'mono opt' }, e.job_id ? h('a', { href: '#/jobs/' + encodeURIComponent(e.job_id) }, e.job_id) : '—'),
      h('td', { class: 'num opt' }, e.item ?? ''),
      h('td', {}, badge(e.error?.class || '?', 'bad')),
      h('td', { class: 'err' }, clip(e.error?.message || '', 90)),
      h('td', { class: 'num opt' }, e.attempts),
      h('td', { class: 'num opt' }, e.replays || 0),
      h('td', { class: 'opt' }, fmtTime(e.dead_lettered_at)));
  });
  const cols = [selectable ? h('span', { class: 'muted' }, '✓') : null, 'Id', 'Subject', { label: 'Job', cls: 'opt' }, { label: 'Item', cls: 'num opt' },
    'Class', 'Error', { label: 'Attempts', cls: 'num opt' }, { label: 'Replays', cls: 'num opt' }, { label: 'Dead-lettered', cls: 'opt' }].filter(Boolean);
  return table(cols.map((c) => (c instanceof Node ? { label: c } : c)), rows, { name: 'dead-letters', empty });
}

const clip = (s, n) => (s.length > n ? s.slice(0, n) + '…' : s);

function toRFC3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return isNaN(d) ? '' : d.toISOString();
}

function toLocalInput(rfc) {
  if (!rfc) return '';
  const d = new Date(rfc);
  if (isNaN(d)) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

async function pageDLQ(signal, params) {
  const f = Object.fromEntries(dlqFilterKeys.map((k) => [k, params.get(k) || '']));
  const inputs = {
    job: h('input', { id: 'f-job', name: 'job', value: f.job, class: 'mono', size: 26 }),
    subject: h('input', { id: 'f-subject', name: 'subject', value: f.subject, placeholder: 'sluice.v1.chunks.dev', class: 'mono' }),
    error_class: h('select', { id: 'f-class', name: 'error_class' }, h('option', { value: '' }, 'any'),
      ERROR_CLASSES.map((c) => h('option', { value: c, selected: c === f.error_class }, c))),
    since: h('input', { id: 'f-since', name: 'since', type: 'datetime-local', value: toLocalInput(f.since) }),
    until: h('input', { id: 'f-until', name: 'until', type: 'datetime-local', value: toLocalInput(f.until) }),
  };
  const form = h('form', { class: 'filters', role: 'search' },
    h('label', { for: 'f-job' }, 'Job', inputs.job), h('label', { for: 'f-subject' }, 'Subject', inputs.subject),
    h('label', { for: 'f-class' }, 'Error class', inputs.error_class),
    h('label', { for: 'f-since' }, 'Since', inputs.since), h('label', { for: 'f-until' }, 'Until', inputs.until),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    setHash('/dlq', { job: inputs.job.value.trim(), subject: inputs.subject.value.trim(), error_class: inputs.error_class.value,
      since: toRFC3339(inputs.since.value), until: toRFC3339(inputs.until.value) });
  });
  const hasFilter = dlqFilterKeys.some((k) => f[k]);
  const q = new URLSearchParams();
  for (const k of dlqFilterKeys) if (f[k]) q.set(k, f[k]);
  const listEl = h('div');
  const count = h('p', { class: 'muted', id: 'dlq-count' });
  const acts = h('div', { class: 'actions' });
  put(main(), h('h1', {}, 'Dead letters'), form, count, acts, listEl);

  let entries = [];
  const selected = () => [...listEl.querySelectorAll('input[data-id]:checked')].map((b) => b.dataset.id);
  const replaySel = h('button', { type: 'button', id: 'replay-selected', disabled: true, onclick: () => replayDialog({ ids: selected() }, reload) }, 'Replay selected…');
  const onSelect = () => {
    const n = selected().length;
    replaySel.disabled = n === 0;
    replaySel.textContent = n ? `Replay ${n} selected…` : 'Replay selected…';
  };
  const filterBody = () => Object.fromEntries(dlqFilterKeys.filter((k) => f[k]).map((k) => [k, f[k]]));
  if (can('admin')) {
    put(acts, replaySel,
      h('button', { type: 'button', id: 'replay-filter', onclick: () => replayDialog({ filter: filterBody() }, reload) },
        hasFilter ? 'Replay all matching…' : 'Replay all…'),
      h('button', { type: 'button', class: 'danger', id: 'purge', disabled: !hasFilter,
        title: hasFilter ? null : 'Purging needs a filter', onclick: () => purgeDialog(f, q, reload) }, 'Purge matching…'));
  }
  let cursor = '';
  const load = async (more) => {
    const qq = new URLSearchParams(q);
    qq.set('limit', '100');
    if (more && cursor) qq.set('cursor', cursor);
    const page = await api('GET', '/v1/dlq?' + qq, undefined, signal);
    entries = more ? entries.concat(page.entries) : page.entries;
    cursor = page.next_cursor || '';
    put(listEl, deadTable(entries, can('admin'), hasFilter ? 'No dead letter matches.' : 'The dead-letter queue is empty.', onSelect),
      cursor ? h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => load(true) }, 'More')) : null);
    count.textContent = `${entries.length}${cursor ? '+' : ''} dead letter${entries.length === 1 ? '' : 's'}${hasFilter ? ' match' : ''}.`;
    listEl.dataset.count = String(entries.length);
    onSelect();
  };
  const reload = () => load(false);
  await load(false);
}

// replayDialog replays req ({ids} or {filter}) after a dry run the operator confirms.
async function replayDialog(req, after) {
  const rate = h('input', { id: 'replay-rate', type: 'number', min: 1, max: REPLAY_MAX_RATE, step: 'any', value: REPLAY_DEFAULT_RATE });
  const body = h('div');
  const dlg = openDialog('Replay dead letters', h('div', {},
    h('label', { class: 'field', for: 'replay-rate' }, `Rate limit: messages per second (default ${REPLAY_DEFAULT_RATE}, at most ${fmtNum(REPLAY_MAX_RATE)})`, rate),
    body), [{ label: 'Replay', value: 'confirm', cls: 'primary', disabled: true }]);
  put(body, h('p', { class: 'muted' }, 'Dry run…'));
  let res;
  try {
    res = await api('POST', '/v1/dlq/replay', Object.assign({ dry_run: true }, req));
  } catch (e) {
    put(body, h('p', { class: 'error' }, e.message));
    return;
  }
  const n = res.replayed.length;
  const secs = () => Math.ceil(n / (Number(rate.value) || REPLAY_DEFAULT_RATE));
  const eta = h('p', { class: 'muted', id: 'replay-eta' });
  const setEta = () => { eta.textContent = n ? `At this rate the replay takes about ${secs()} s.` : ''; };
  rate.addEventListener('input', setEta);
  setEta();
  put(body, h('div', { id: 'replay-preview' },
    h('p', {}, `Dry run: ${n} dead letter${n === 1 ? '' : 's'} would be republished to ${n === 1 ? 'its' : 'their'} original subject${n === 1 ? '' : 's'}${res.truncated ? ' (the filter matched more: the rest stay for a next replay)' : ''}.`),
    n ? h('ul', { 'data-list': 'would-replay' }, res.replayed.slice(0, 200).map((r) => h('li', { class: 'mono' }, `${r.id} → ${r.subject}`))) : null,
    res.skipped.length ? [h('p', {}, `${res.skipped.length} skipped:`), h('ul', {}, res.skipped.slice(0, 200).map((s) => h('li', {}, h('span', { class: 'mono' }, s.id), ' — ', s.reason)))] : null,
    eta));
  const btn = dlg.button('confirm');
  btn.textContent = `Replay ${n}`;
  btn.disabled = n === 0;
  if ((await dlg.done) !== 'confirm') return;
  const r = Number(rate.value);
  if (!(r > 0 && r <= REPLAY_MAX_RATE)) { setStatus(`The rate must be between 1 and ${REPLAY_MAX_RATE}.`, true); return; }
  setStatus(`Replaying ${n} at most ${r}/s…`);
  try {
    const out = await api('POST', '/v1/dlq/replay', Object.assign({ rate: r }, req));
    setStatus(`Replayed ${out.replayed.length}, skipped ${out.skipped.length}, failed ${out.failed.length}.`, out.failed.length > 0);
  } catch (e) {
    setStatus(e.message, true);
  }
  await after?.();
}

async function purgeDialog(f, q, after) {
  const qq = new URLSearchParams(q);
  qq.set('limit', '1000');
  const page = await api('GET', '/v1/dlq?' + qq);
  const n = page.entries.length;
  const desc = dlqFilterKeys.filter((k) => f[k]).map((k) => `${k.replace('_', ' ')} ${f[k]}`).join(', ');
  const dlg = openDialog('Purge dead letters', h('div', { id: 'purge-preview' },
    h('p', {}, `${n}${page.next_cursor ? ' or more' : ''} dead letter${n === 1 ? '' : 's'} matching ${desc} will be deleted for good, with their stored payloads. They cannot be replayed afterwards.`),
    h('ul', {}, page.entries.slice(0, 20).map((e) => h('li', { class: 'mono' }, `${e.id} (${e.error?.class})`)), n > 20 ? h('li', {}, '…') : null)),
  [{ label: `Purge ${n}${page.next_cursor ? '+' : ''}`, value: 'confirm', cls: 'danger primary', disabled: n === 0 }]);
  if ((await dlg.done) !== 'confirm') return;
  try {
    const out = await api('DELETE', '/v1/dlq?' + q);
    setStatus(`Purged ${out.purged} dead letters.`);
  } catch (e) {
    setStatus(e.message, true);
  }
  await after?.();
}

function decodeBase64(b64) {
  try {
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  } catch (_) {
    return '(not base64)';
  }
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}

async function pageDeadLetter(signal, params, id) {
  const e = await api('GET', '/v1/dlq/' + encodeURIComponent(id), undefined, signal);
  let payload;
  if (e.payload_json !== undefined) payload = JSON.stringify(e.payload_json, null, 2);
  else if (e.payload) payload = pretty(decodeBase64(e.payload));
  else {
    const res = await fetch('/v1/dlq/' + encodeURIComponent(id) + '/payload', { headers: authHeaders(), signal, credentials: 'omit' });
    payload = res.ok ? pretty(await res.text()) : (await problemOf(res)).message;
  }
  const truncated = payload.length > PAYLOAD_SHOWN;
  const acts = can('admin') ? h('div', { class: 'actions' },
    h('button', { type: 'button', class: 'primary', id: 'replay-one', onclick: () => replayDialog({ ids: [id] }, () => { location.hash = '#/dlq'; }) }, 'Replay…'),
    h('button', { type: 'button', class: 'danger', id: 'delete-one', onclick: async () => {
      const dlg = openDialog('Delete this dead letter?', h('p', {}, `${id} and its stored payload are deleted for good.`), [{ label: 'Delete', value: 'confirm', cls: 'danger primary' }]);
      if ((await dlg.done) !== 'confirm') return;
      try {
        await api('DELETE', '/v1/dlq/' + encodeURIComponent(id));
        setStatus(`Deleted ${id}.`);
        location.hash = '#/dlq';
      } catch (err) { setStatus(err.message, true); }
    } }, 'Delete…')) : null;
  const err = e.error || {};
  put(main(), h('p', {}, h('a', { href: '#/dlq' }, '← Dead letters')),
    h('h1', {}, 'Dead letter ', h('span', { class: 'mono' }, id)), acts,
    h('div', { class: 'split' },
      h('section', { class: 'card', 'aria-labelledby': 'payload-h' }, h('h2', { id: 'payload-h' }, 'Payload'),
        h('p', { class: 'muted' }, e.payload_ref ? `Stored by reference (${fmtNum(e.payload_ref.size)} bytes).` : ''),
        h('pre', { id: 'payload', tabindex: 0 }, truncated ? payload.slice(0, PAYLOAD_SHOWN) : payload),
        truncated ? h('p', { class: 'muted' }, `Shown: the first ${fmtNum(PAYLOAD_SHOWN)} characters of ${fmtNum(payload.length)}.`) : null),
      h('section', { class: 'card', 'aria-labelledby': 'error-h' }, h('h2', { id: 'error-h' }, 'Error'),
        h('p', {}, badge(err.class || '?', 'bad'), ' ', err.sink ? `from ${err.sink}` : ''),
        h('pre', { id: 'error-message' }, err.message || ''),
        dl([['Subject', h('span', { class: 'mono' }, e.subject)],
          ['Job', e.job_id ? h('a', { href: '#/jobs/' + encodeURIComponent(e.job_id) }, e.job_id) : '—'],
          ['Item', e.item ?? '—'], ['Attempts', e.attempts], ['Replays', e.replays || 0],
          ['First failure', fmtTime(e.first_failure)], ['Last failure', fmtTime(e.last_failure)],
          ['Dead-lettered', fmtTime(e.dead_lettered_at)], ['Stream', `${e.stream} #${e.stream_seq}`],
          ['Consumer', e.consumer], ['Trace', e.trace_id]]),
        h('h2', {}, 'Headers'),
        h('pre', { id: 'headers' }, JSON.stringify(e.headers || {}, null, 2)))));
}

// ---- consumers -----------------------------------------------------------------------------

async function pageConsumers(signal) {
  const out = h('div');
  put(main(), h('h1', {}, 'Consumers and lag'), out);
  for (;;) {
    const c = await api('GET', '/v1/consumers', undefined, signal);
    put(out, 
      h('p', { class: 'muted' }, c.read_at ? `Read from the broker at ${fmtTime(c.read_at)}; refreshed every 10 s.` : 'Not read from the broker yet.'),
      h('h2', {}, 'Consumers'),
      table(['Stream', 'Consumer', { label: 'Pending', cls: 'num' }, { label: 'Ack pending', cls: 'num' }, { label: 'Redelivered', cls: 'num' }],
        c.consumers.map((x) => h('tr', { 'data-consumer': x.consumer },
          h('td', { class: 'mono' }, x.stream), h('td', { class: 'mono' }, x.consumer),
          h('td', { class: 'num' }, fmtNum(x.pending)), h('td', { class: 'num' }, fmtNum(x.ack_pending)), h('td', { class: 'num' }, fmtNum(x.redelivered)))),
        { name: 'consumers', empty: 'No consumer yet.' }),
      h('h2', {}, 'Streams'),
      table(['Stream', { label: 'Messages', cls: 'num' }, { label: 'Bytes', cls: 'num' }, { label: 'Byte limit', cls: 'num' }],
        c.streams.map((s) => h('tr', { 'data-stream': s.stream },
          h('td', { class: 'mono' }, s.stream), h('td', { class: 'num' }, fmtNum(s.messages)), h('td', { class: 'num' }, fmtNum(s.bytes)),
          h('td', { class: 'num' }, s.max_bytes > 0 ? fmtNum(s.max_bytes) : 'none'))),
        { name: 'streams', empty: 'No stream yet.' }));
    await sleep(10000, signal);
    if (signal.aborted) return;
  }
}

// ---- requirements and feature requests -----------------------------------------------------

const featureBadge = (status) => badge(status, status === 'approved' ? 'good' : status === 'rejected' ? 'bad' : 'pending');

async function pageRequirements(signal) {
  const integrity = h('section', { class: 'card', id: 'integrity', 'aria-label': 'Audit chain' }, h('p', { class: 'muted' }, 'Checking the audit chain…'));
  const versions = h('div');
  const features = h('div');
  put(main(), h('h1', {}, 'Requirements and feature requests'), integrity,
    h('h2', {}, 'Feature requests'), features, h('h2', {}, 'Requirements versions'), versions);
  const [fr, vs] = await Promise.all([api('GET', '/v1/features', undefined, signal), api('GET', '/v1/requirements', undefined, signal)]);
  put(features, table(['Request', 'Title', 'Status', 'Priority', 'Requester', { label: 'Created', cls: 'opt' }],
    (fr.features || []).map((f) => h('tr', { 'data-feature': f.request_id },
      h('td', { class: 'mono' }, h('a', { href: '#/features/' + encodeURIComponent(f.request_id) }, f.request_id)),
      h('td', {}, f.title), h('td', {}, featureBadge(f.status)),
      h('td', {}, f.priority), h('td', {}, f.requester), h('td', { class: 'opt' }, fmtTime(f.created_at)))),
    { name: 'features', empty: 'No feature request yet.' }));
  put(versions, table([{ label: 'Version', cls: 'num' }, 'Author', 'Time', { label: 'Checksum', cls: 'opt' }],
    (vs.versions || []).map((v) => h('tr', {}, h('td', { class: 'num' }, v.version_id), h('td', {}, v.author),
      h('td', {}, v.timestamp), h('td', { class: 'mono opt' }, clip(v.checksum || '', 16)))),
    { name: 'versions', empty: 'No requirements version yet.' }));
  if (!can('admin')) {
    put(integrity, h('p', { class: 'muted' }, 'Checking the audit chain needs an admin token.'));
    return;
  }
  try {
    const ig = await api('GET', '/v1/audit/integrity', undefined, signal);
    put(integrity, h('p', {}, 'Audit chain: ',
      badge(ig.integrity_valid ? 'intact' : 'broken', ig.integrity_valid ? 'good' : 'bad'),
      ` — ${fmtNum(ig.entries)} entries checked at ${fmtTime(ig.validation_timestamp)}`,
      ig.total_compromised ? `; ${fmtNum(ig.total_compromised)} compromised` : ''),
    ig.compromised_entries?.length ? h('pre', {}, JSON.stringify(ig.compromised_entries.slice(0, 50), null, 2)) : null);
  } catch (e) {
    put(integrity, h('p', { class: 'error' }, e.message));
  }
}

async function pageFeature(signal, params, id) {
  const d = await api('GET', '/v1/features/' + encodeURIComponent(id), undefined, signal);
  const f = d.feature;
  put(main(), h('p', {}, h('a', { href: '#/requirements' }, '← Requirements and feature requests')),
    h('h1', {}, f.title), h('section', { class: 'card' }, dl([
      ['Request', h('span', { class: 'mono' }, f.request_id)], ['Status', featureBadge(f.status)], ['Priority', f.priority],
      ['Requester', f.requester], ['Approved by', f.approved_by], ['Rejection reason', f.rejection_reason],
      ['Created', fmtTime(f.created_at)], ['Updated', fmtTime(f.updated_at)], ['Version', f.version]]),
    h('p', {}, f.description)),
    h('h2', {}, 'Decision history'),
    table([{ label: 'Seq', cls: 'num' }, 'Time', 'From', 'To', 'By', 'Reason', { label: 'Checksum', cls: 'opt' }],
      (d.audit || []).map((a) => h('tr', {}, h('td', { class: 'num' }, a.seq), h('td', {}, fmtTime(a.timestamp)),
        h('td', {}, a.old_status || '—'), h('td', {}, a.new_status), h('td', {}, a.admin), h('td', {}, a.reason || ''),
        h('td', { class: 'mono opt' }, clip(a.checksum || '', 16)))),
      { name: 'audit', empty: 'No decision yet.' }));
}

// ---- start ---------------------------------------------------------------------------------

window.addEventListener('hashchange', route);
route();
