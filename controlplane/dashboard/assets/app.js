// The Skiff dashboard. Everything here goes through the Kubernetes API as
// the signed-in user: a bearer token in the Authorization header (kept in
// this tab's sessionStorage only), or the browser's client certificate.
// RBAC therefore decides what each page shows and what each button may do;
// a refusal is shown as the API's own 403, never hidden or worked around.
//
// Data from the API is only ever put on the page as text (`h` below makes
// text nodes), so names, labels, events and log lines cannot become markup.
// Lists follow the API's watches (list, then watch from its
// resourceVersion, relist on 410), so pages update as the cluster changes.
'use strict';

const TOKEN_KEY = 'skiff.token';
const NAMESPACE_KEY = 'skiff.namespace';
/// How often usage figures are polled (nodes report every 10 s).
const USAGE_EVERY_MS = 10000;
/// Points kept for the usage graphs: 10 minutes at one per poll.
const HISTORY_POINTS = 60;
/// A followed log keeps at most this much text on the page.
const LOG_KEEP_CHARS = 512 * 1024;

// ---------------------------------------------------------------- elements

const $ = (id) => document.getElementById(id);

/** An element with attributes (`on*` are listeners) and text or element children. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, attrs);
  return el;
}

/** A link inside the dashboard; path segments are encoded. */
function link(text, ...segments) {
  return h('a', { href: '#/' + segments.map(encodeURIComponent).join('/') }, text);
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, reason, message) {
    super(message || reason);
    this.status = status;
    this.reason = reason;
  }
  toString() {
    return this.status
      ? `${this.status} ${this.reason}: ${this.message}`
      : `${this.reason}: ${this.message}`;
  }
}

const session = { token: sessionStorage.getItem(TOKEN_KEY), user: null, byCertificate: false };

/** One API request; a non-2xx answer throws its Status as an ApiError. */
async function call(method, path, { body, contentType, signal, accept } = {}) {
  const headers = { Accept: accept || 'application/json' };
  if (session.token) headers.Authorization = 'Bearer ' + session.token;
  if (body !== undefined) headers['Content-Type'] = contentType || 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'Unreachable', `the API server did not answer (${e.message})`);
  }
  if (resp.ok) return resp;
  let reason = resp.statusText || 'Error';
  let message = '';
  try {
    const status = await resp.json();
    reason = status.reason || reason;
    message = status.message || '';
  } catch (_) { /* not a Status */ }
  const err = new ApiError(resp.status, reason, message);
  // A token that stops working mid-session (expired, revoked) ends it.
  if (resp.status === 401 && session.user) signOut(tokenProblem(session.token));
  throw err;
}

const getJSON = async (path, signal) => (await call('GET', path, { signal })).json();

function withQuery(path, query) {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== ''));
  const s = q.toString();
  return s ? path + (path.includes('?') ? '&' : '?') + s : path;
}

/** The collection path of a resource, in the chosen namespace if it is namespaced. */
function collection(groupVersion, resource, namespaced = true, ns = currentNamespace()) {
  const base = groupVersion === 'v1' ? '/api/v1' : '/apis/' + groupVersion;
  return namespaced && ns ? `${base}/namespaces/${encodeURIComponent(ns)}/${resource}` : `${base}/${resource}`;
}

function objectPath(groupVersion, resource, ns, name) {
  return collection(groupVersion, resource, !!ns, ns) + '/' + encodeURIComponent(name);
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

const keyOf = (o) => (o.metadata.namespace || '') + '/' + o.metadata.name;

/**
 * A list kept current by a watch, as kube's informers do: list, watch from
 * the list's resourceVersion, relist when the watch ends or is too old.
 * `onChange` runs (batched) after every change and on errors.
 */
class Informer {
  constructor(path, signal, onChange) {
    this.path = path;
    this.signal = signal;
    this.onChange = onChange;
    this.items = new Map();
    this.synced = false;
    this.error = null;
    this.pending = false;
    this.run();
  }

  list() {
    return [...this.items.values()];
  }

  changed() {
    if (this.pending) return;
    this.pending = true;
    setTimeout(() => { this.pending = false; if (!this.signal.aborted) this.onChange(); }, 30);
  }

  async run() {
    let backoff = 500;
    while (!this.signal.aborted) {
      try {
        const list = await getJSON(this.path, this.signal);
        this.items = new Map(list.items.map((o) => [keyOf(o), o]));
        this.synced = true;
        this.error = null;
        this.changed();
        await this.follow(list.metadata.resourceVersion);
        backoff = 500;
      } catch (e) {
        if (this.signal.aborted) return;
        if (e.status === 410) continue; // too old: relist now
        this.error = e;
        this.changed();
        // A refusal will not change by asking again.
        if (e.status === 401 || e.status === 403 || e.status === 404) return;
        await sleep(backoff, this.signal);
        backoff = Math.min(backoff * 2, 10000);
      }
    }
  }

  async follow(resourceVersion) {
    const resp = await call('GET', withQuery(this.path, {
      watch: '1', resourceVersion, allowWatchBookmarks: 'true',
    }), { signal: this.signal });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === 'ERROR') {
          const s = ev.object || {};
          throw new ApiError(s.code || 500, s.reason || 'Error', s.message || '');
        }
        if (ev.type === 'BOOKMARK') continue;
        if (ev.type === 'DELETED') this.items.delete(keyOf(ev.object));
        else this.items.set(keyOf(ev.object), ev.object);
        this.changed();
      }
    }
  }
}

// ---------------------------------------------------------------- figures

const SUFFIX = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity ("250m", "64Mi", "1e3") as a number; NaN if it is none. */
function quantity(s) {
  if (s === undefined || s === null) return NaN;
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$/.exec(String(s).trim());
  if (!m) return NaN;
  return Number(m[1]) * 10 ** Number(m[2] || 0) * SUFFIX[m[3] || ''];
}

const cpu = (cores) => (Number.isFinite(cores) ? `${Math.round(cores * 1000)}m` : '–');

function bytes(n) {
  if (!Number.isFinite(n)) return '–';
  for (const [unit, size] of [['Gi', 2 ** 30], ['Mi', 2 ** 20], ['Ki', 2 ** 10]]) {
    if (n >= size) return `${(n / size).toFixed(n >= 10 * size ? 0 : 1)}${unit}`;
  }
  return `${n}`;
}

function age(ts) {
  if (!ts) return '–';
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function meter(used, total) {
  const pct = total > 0 && Number.isFinite(used) ? Math.min(100, (used / total) * 100) : 0;
  return h('div', { class: pct >= 90 ? 'meter high' : 'meter', title: `${pct.toFixed(0)}%` },
    h('div', { 'data-pct': pct.toFixed(0) }));
}

/** Sets meters' widths from their data-pct (styles are not inline; CSP). */
function sizeMeters(root) {
  for (const bar of root.querySelectorAll('.meter > div')) bar.style.width = bar.dataset.pct + '%';
}

function sparkline(points, max) {
  const w = 120;
  const hgt = 30;
  const s = svg('svg', { class: 'spark', viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: 'none' });
  if (points.length > 1) {
    const top = Math.max(max || 0, ...points) || 1;
    const step = w / (HISTORY_POINTS - 1);
    const x0 = w - step * (points.length - 1);
    s.append(svg('polyline', {
      points: points.map((v, i) => `${(x0 + i * step).toFixed(1)},${(hgt - (v / top) * (hgt - 2) - 1).toFixed(1)}`).join(' '),
    }));
  }
  return s;
}

// ---------------------------------------------------------------- usage

/** Node and pod usage from metrics.k8s.io, with a short history per object. */
const usage = {
  nodes: new Map(), // name -> { cpu, memory, history: [{cpu, memory}] }
  nodesError: null,
  async pollNodes(signal) {
    try {
      const list = await getJSON('/apis/metrics.k8s.io/v1beta1/nodes', signal);
      for (const m of list.items) {
        const e = this.nodes.get(m.metadata.name) || { history: [] };
        e.cpu = quantity(m.usage.cpu);
        e.memory = quantity(m.usage.memory);
        if (e.at !== m.timestamp) e.history = [...e.history, { cpu: e.cpu, memory: e.memory }].slice(-HISTORY_POINTS);
        e.at = m.timestamp;
        this.nodes.set(m.metadata.name, e);
      }
      this.nodesError = null;
    } catch (e) {
      if (e.name !== 'AbortError') this.nodesError = e;
    }
  },
};

// ---------------------------------------------------------------- pages

/** What a page owns: its element, and a signal that ends its watches and timers. */
class Page {
  constructor(main) {
    this.main = main;
    this.controller = new AbortController();
    this.signal = this.controller.signal;
  }
  every(ms, fn) {
    fn();
    const t = setInterval(fn, ms);
    this.signal.addEventListener('abort', () => clearInterval(t));
  }
  watch(path, onChange) {
    return new Informer(path, this.signal, onChange);
  }
  /**
   * A region of the page that `draw` (returning its children) fills each
   * time its data changes; it says "Loading…" until the first time.
   */
  region(draw) {
    const el = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
    const redraw = () => {
      el.replaceChildren(...[draw()].flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
      sizeMeters(el);
    };
    return { el, redraw };
  }
}

function errorBox(e) {
  return h('div', { class: 'error', role: 'alert' }, String(e));
}

/** A table of rows, or what stands in for it (loading, error, empty). */
function table(informer, columns, rowsOf = (items) => items, empty = 'None.') {
  if (informer.error && !informer.synced) return errorBox(informer.error);
  if (!informer.synced) return h('p', { class: 'muted' }, 'Loading…');
  const rows = rowsOf(informer.list());
  const out = [];
  if (informer.error) out.push(errorBox(informer.error));
  if (!rows.length) {
    out.push(h('p', { class: 'muted' }, empty));
    return out;
  }
  out.push(h('table', {},
    h('thead', {}, h('tr', {}, columns.map(([title]) => h('th', {}, title)))),
    h('tbody', {}, rows.map((o) => h('tr', { 'data-name': o.metadata?.name }, columns.map(([, cell]) => h('td', {}, cell(o))))))));
  return out;
}

const byName = (a, b) => keyOf(a).localeCompare(keyOf(b));

function fields(pairs) {
  return h('dl', { class: 'fields' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function tags(map) {
  return Object.entries(map || {}).map(([k, v]) => h('span', { class: 'tag' }, v ? `${k}=${v}` : k));
}

function conditionsTable(conditions) {
  if (!conditions?.length) return h('p', { class: 'muted' }, 'No conditions.');
  return h('table', {},
    h('thead', {}, h('tr', {}, ['Type', 'Status', 'Reason', 'Message', 'Since'].map((t) => h('th', {}, t)))),
    h('tbody', {}, conditions.map((c) => h('tr', {},
      h('td', {}, c.type), h('td', { class: c.status === 'True' ? 'ok' : 'warn' }, c.status),
      h('td', {}, c.reason || ''), h('td', {}, c.message || ''), h('td', {}, age(c.lastTransitionTime))))));
}

function rawObject(o) {
  return h('details', {}, h('summary', {}, 'Object (JSON)'), h('pre', {}, JSON.stringify(o, null, 2)));
}

const eventTime = (e) => e.lastTimestamp || e.eventTime || e.metadata.creationTimestamp;

const eventColumns = (withObject) => [
  ['Last seen', (e) => age(eventTime(e))],
  ['Type', (e) => h('span', { class: e.type === 'Warning' ? 'warn' : '' }, e.type)],
  ['Reason', (e) => e.reason],
  ...(withObject ? [['Object', (e) => `${e.involvedObject.kind}/${e.involvedObject.name}`]] : []),
  ['Message', (e) => e.message],
  ['Count', (e) => e.count || 1],
];

const newestEvents = (items) => items.sort((a, b) => Date.parse(eventTime(b)) - Date.parse(eventTime(a)));

/** The events about one object, live. */
function eventsOf(page, ns, kind, name) {
  const path = withQuery(collection('v1', 'events', !!ns, ns), {
    fieldSelector: `involvedObject.kind=${kind},involvedObject.name=${name}`,
  });
  const r = page.region(() => table(inf, eventColumns(false), newestEvents, 'No events.'));
  const inf = page.watch(path, r.redraw);
  return [h('h2', {}, 'Events'), r.el];
}

/** A button that asks before it acts, then reports what happened. */
function action(label, question, run, danger = false) {
  const status = h('span', { class: 'muted', role: 'status' });
  const button = h('button', {
    type: 'button',
    class: danger ? 'danger' : undefined,
    onclick: async () => {
      if (!(await confirmed(typeof question === 'function' ? question() : question))) return;
      button.disabled = true;
      status.replaceChildren();
      try {
        status.replaceChildren(h('span', { class: 'ok' }, (await run()) || 'Done.'));
      } catch (e) {
        status.replaceChildren(errorBox(e));
      } finally {
        button.disabled = false;
      }
    },
  }, label);
  return [button, status];
}

function confirmed(text) {
  const d = $('confirm');
  $('confirm-text').textContent = text;
  d.returnValue = '';
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
  });
}

const mergePatch = (path, patch) => call('PATCH', path, { body: patch, contentType: 'application/merge-patch+json' });

// ------------------------------------------------ pod and workload states

function podStatus(p) {
  if (p.metadata.deletionTimestamp) return 'Terminating';
  for (const c of p.status?.containerStatuses || []) {
    const waiting = c.state?.waiting?.reason;
    if (waiting) return waiting;
    const term = c.state?.terminated?.reason;
    if (term && p.status.phase !== 'Succeeded') return term;
  }
  return p.status?.reason || p.status?.phase || 'Pending';
}

const statusClass = (s) => (['Running', 'Succeeded', 'Completed', 'True', 'Ready', 'Complete', 'Available'].includes(s) ? 'ok'
  : ['Pending', 'ContainerCreating', 'Terminating', 'Unknown', 'Progressing', 'Suspended'].includes(s) ? 'warn' : 'bad');

const podReady = (p) => {
  const cs = p.status?.containerStatuses || [];
  return `${cs.filter((c) => c.ready).length}/${(p.spec.containers || []).length}`;
};
const restarts = (p) => (p.status?.containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0);

function nodeReady(n) {
  const c = (n.status?.conditions || []).find((c) => c.type === 'Ready');
  const ready = c?.status === 'True' ? 'Ready' : c ? 'NotReady' : 'Unknown';
  return n.spec?.unschedulable ? `${ready},SchedulingDisabled` : ready;
}

function jobStatus(j) {
  const c = (j.status?.conditions || []).find((c) => c.status === 'True' && ['Complete', 'Failed', 'Suspended'].includes(c.type));
  return c ? c.type : (j.status?.active ? 'Running' : 'Pending');
}

const selectorQuery = (matchLabels) => Object.entries(matchLabels || {}).map(([k, v]) => `${k}=${v}`).join(',');

const podColumns = (withNode = true) => [
  ['Name', (p) => link(p.metadata.name, 'pods', p.metadata.namespace, p.metadata.name)],
  ['Namespace', (p) => p.metadata.namespace],
  ['Ready', podReady],
  ['Status', (p) => { const s = podStatus(p); return h('span', { class: statusClass(s) }, s); }],
  ['Restarts', restarts],
  ...(withNode ? [['Node', (p) => (p.spec.nodeName ? link(p.spec.nodeName, 'nodes', p.spec.nodeName) : '–')]] : []),
  ['IP', (p) => p.status?.podIP || ''],
  ['Age', (p) => age(p.metadata.creationTimestamp)],
];

// ---------------------------------------------------------------- overview

async function overview(page) {
  const healthState = { api: null, leases: new Map() };
  const health = page.region(() => healthCards(healthState));
  const nodes = page.region(() => nodeCards(nodeInf));
  const workloads = page.region(() => workloadCards(deployInf, podInf, jobInf));
  const warnings = page.region(() => table(eventInf, eventColumns(true), (items) => newestEvents(items).slice(0, 10), 'No warnings.'));
  page.main.replaceChildren(
    h('h1', {}, 'Overview'),
    h('h2', {}, 'Control plane'), health.el,
    h('h2', {}, 'Nodes'), nodes.el,
    h('h2', {}, 'Workloads'), workloads.el,
    h('section', { id: 'warnings' }, h('h2', {}, 'Recent warnings'), warnings.el),
  );
  const nodeInf = page.watch(collection('v1', 'nodes', false), nodes.redraw);
  const deployInf = page.watch(collection('apps/v1', 'deployments'), workloads.redraw);
  const podInf = page.watch(collection('v1', 'pods'), workloads.redraw);
  const jobInf = page.watch(collection('batch/v1', 'jobs'), workloads.redraw);
  const eventInf = page.watch(withQuery(collection('v1', 'events'), { fieldSelector: 'type=Warning' }), warnings.redraw);
  page.every(USAGE_EVERY_MS, async () => {
    await usage.pollNodes(page.signal);
    nodes.redraw();
    try {
      const ready = await call('GET', '/readyz', { signal: page.signal, accept: 'text/plain' });
      healthState.api = (await ready.text()).trim();
    } catch (e) {
      healthState.api = String(e);
    }
    for (const name of ['kube-scheduler', 'kube-controller-manager']) {
      try {
        healthState.leases.set(name, await getJSON(objectPath('coordination.k8s.io/v1', 'leases', 'kube-system', name), page.signal));
      } catch (e) {
        healthState.leases.set(name, e);
      }
    }
    health.redraw();
  });
}

function healthCards(s) {
  const card = (title, ok, detail) => h('div', { class: 'card' },
    h('h3', {}, title), h('div', { class: ok ? 'ok' : 'bad' }, ok ? 'healthy' : 'not healthy'), h('div', { class: 'muted' }, detail));
  const cards = [card('API server', s.api === 'ok', s.api === null ? 'checking…' : `/readyz: ${s.api}`)];
  for (const [name, l] of s.leases) {
    if (l instanceof Error) {
      cards.push(h('div', { class: 'card' }, h('h3', {}, name), h('div', { class: 'muted' }, String(l))));
      continue;
    }
    const renewed = Date.parse(l.spec?.renewTime || 0);
    const fresh = Date.now() - renewed < (l.spec?.leaseDurationSeconds || 15) * 1000 + 5000;
    cards.push(card(name, fresh, `leader ${l.spec?.holderIdentity || 'none'}, renewed ${age(l.spec?.renewTime)} ago`));
  }
  return h('div', { class: 'cards' }, cards);
}

function nodeCards(inf) {
  if (!inf.synced) return inf.error ? errorBox(inf.error) : h('p', { class: 'muted' }, 'Loading…');
  const nodes = inf.list().sort(byName);
  if (!nodes.length) return h('p', { class: 'muted' }, 'No nodes have joined yet.');
  return [
    usage.nodesError ? errorBox(usage.nodesError) : null,
    h('div', { class: 'cards' }, nodes.map((n) => {
      const [c, m] = [nodeUsage(n, 'cpu'), nodeUsage(n, 'memory')];
      const ready = nodeReady(n);
      return h('div', { class: 'card node', 'data-name': n.metadata.name },
        h('h3', {}, link(n.metadata.name, 'nodes', n.metadata.name), ' ',
          h('span', { class: statusClass(ready.split(',')[0]) }, ready)),
        h('div', {}, `CPU ${cpu(c.used)} of ${cpu(c.alloc)}`), meter(c.used, c.alloc),
        h('div', {}, `Memory ${bytes(m.used)} of ${bytes(m.alloc)}`), meter(m.used, m.alloc),
        sparkline(c.history, c.alloc));
    })),
  ];
}

function workloadCards(deployments, pods, jobs) {
  const count = (inf, classify, title, path) => {
    if (inf.error && !inf.synced) return h('div', { class: 'card' }, h('h3', {}, title), errorBox(inf.error));
    const by = new Map();
    for (const o of inf.list()) {
      const k = classify(o);
      by.set(k, (by.get(k) || 0) + 1);
    }
    return h('div', { class: 'card' }, h('h3', {}, link(title, path)),
      inf.synced ? (by.size ? [...by].sort().map(([k, n]) => h('div', {}, h('span', { class: statusClass(k) }, k), `: ${n}`)) : h('div', { class: 'muted' }, 'none')) : 'Loading…');
  };
  const deployState = (d) => ((d.status?.availableReplicas || 0) >= (d.spec?.replicas ?? 1) ? 'Available' : 'Progressing');
  return h('div', { class: 'cards' },
    count(deployments, deployState, 'Deployments', 'deployments'),
    count(pods, podStatus, 'Pods', 'pods'),
    count(jobs, jobStatus, 'Jobs', 'jobs'));
}

// ---------------------------------------------------------------- nodes

function nodeList(page) {
  const r = page.region(() => table(inf, [
    ['Name', (n) => link(n.metadata.name, 'nodes', n.metadata.name)],
    ['Status', (n) => { const s = nodeReady(n); return h('span', { class: statusClass(s.split(',')[0]) }, s); }],
    ['CPU', (n) => usageCell(n, 'cpu', cpu)],
    ['Memory', (n) => usageCell(n, 'memory', bytes)],
    ['Pod CIDR', (n) => n.spec?.podCIDR || ''],
    ['Internal IP', (n) => (n.status?.addresses || []).find((a) => a.type === 'InternalIP')?.address || ''],
    ['Kubelet', (n) => n.status?.nodeInfo?.kubeletVersion || ''],
    ['Age', (n) => age(n.metadata.creationTimestamp)],
  ], (items) => items.sort(byName), 'No nodes have joined yet.'));
  page.main.replaceChildren(h('h1', {}, 'Nodes'), r.el);
  const inf = page.watch(collection('v1', 'nodes', false), r.redraw);
  page.every(USAGE_EVERY_MS, async () => { await usage.pollNodes(page.signal); r.redraw(); });
}

/** A node's latest use of `what` (cpu or memory), its allocatable and its history. */
function nodeUsage(n, what) {
  const u = usage.nodes.get(n.metadata.name);
  return {
    used: u?.[what],
    alloc: quantity(n.status?.allocatable?.[what]),
    history: (u?.history || []).map((p) => p[what]),
  };
}

function usageCell(n, what, fmt) {
  const { used, alloc } = nodeUsage(n, what);
  return [`${fmt(used)} / ${fmt(alloc)}`, meter(used, alloc)];
}

function nodeDetail(page, name) {
  const path = objectPath('v1', 'nodes', '', name);
  const r = page.region(() => {
    const n = inf.items.get('/' + name);
    if (!n) return inf.error ? errorBox(inf.error) : h('p', { class: 'muted' }, inf.synced ? 'No such node.' : 'Loading…');
    const info = n.status?.nodeInfo || {};
    const usageCard = (label, what, fmt) => {
      const { used, alloc, history } = nodeUsage(n, what);
      return h('div', { class: 'card' }, h('h3', {}, `${label} ${fmt(used)} of ${fmt(alloc)}`),
        meter(used, alloc), sparkline(history, alloc));
    };
    return [
      fields([
        ['Status', nodeReady(n)],
        ['Addresses', (n.status?.addresses || []).map((a) => `${a.type} ${a.address}`).join(', ')],
        ['Pod CIDR', n.spec?.podCIDR],
        ['Kernel / OS', `${info.kernelVersion || ''} ${info.osImage || ''}`],
        ['Kubelet', info.kubeletVersion],
        ['Runtime', info.containerRuntimeVersion],
        ['Labels', tags(n.metadata.labels)],
        ['Taints', (n.spec?.taints || []).map((t) => h('span', { class: 'tag' }, `${t.key}${t.value ? '=' + t.value : ''}:${t.effect}`))],
        ['Created', `${n.metadata.creationTimestamp} (${age(n.metadata.creationTimestamp)})`],
      ]),
      h('h2', {}, 'Usage'),
      h('div', { class: 'cards' }, usageCard('CPU', 'cpu', cpu), usageCard('Memory', 'memory', bytes)),
      h('h2', {}, 'Conditions'), conditionsTable(n.status?.conditions),
      rawObject(n),
    ];
  });
  const pods = page.region(() => table(podInf, podColumns(false), (items) => items.sort(byName), 'No pods on this node.'));
  page.main.replaceChildren(
    h('h1', {}, `Node ${name}`),
    h('div', { class: 'actions' },
      action('Cordon', `Mark node ${name} unschedulable?`, async () => { await mergePatch(path, { spec: { unschedulable: true } }); return 'Cordoned.'; }),
      action('Uncordon', `Let pods be scheduled on ${name} again?`, async () => { await mergePatch(path, { spec: { unschedulable: null } }); return 'Uncordoned.'; })),
    r.el, h('h2', {}, 'Pods'), pods.el, ...eventsOf(page, '', 'Node', name));
  const inf = page.watch(withQuery(collection('v1', 'nodes', false), { fieldSelector: `metadata.name=${name}` }), r.redraw);
  const podInf = page.watch(withQuery(collection('v1', 'pods', false), { fieldSelector: `spec.nodeName=${name}` }), pods.redraw);
  page.every(USAGE_EVERY_MS, async () => { await usage.pollNodes(page.signal); r.redraw(); });
}

// ---------------------------------------------------------------- pods

function podList(page) {
  const r = page.region(() => table(inf, podColumns(), (items) => items.sort(byName), 'No pods.'));
  page.main.replaceChildren(h('h1', {}, 'Pods'), r.el);
  const inf = page.watch(collection('v1', 'pods'), r.redraw);
}

function podDetail(page, ns, name) {
  const path = objectPath('v1', 'pods', ns, name);
  const metrics = { value: null };
  const logs = logsPanel(page, ns, name);
  const r = page.region(() => {
    const p = inf.items.get(`${ns}/${name}`);
    if (!p) return inf.error ? errorBox(inf.error) : h('p', { class: 'muted' }, inf.synced ? 'This pod is gone.' : 'Loading…');
    const st = podStatus(p);
    const used = new Map((metrics.value?.containers || []).map((c) => [c.name, c.usage]));
    return [
      fields([
        ['Status', h('span', { class: statusClass(st) }, st)],
        ['Node', p.spec.nodeName ? link(p.spec.nodeName, 'nodes', p.spec.nodeName) : 'not scheduled'],
        ['Pod IP', p.status?.podIP],
        ['QoS class', p.status?.qosClass],
        ['Owner', (p.metadata.ownerReferences || []).map((o) => `${o.kind}/${o.name}`).join(', ')],
        ['Labels', tags(p.metadata.labels)],
        ['Created', `${p.metadata.creationTimestamp} (${age(p.metadata.creationTimestamp)})`],
      ]),
      h('h2', {}, 'Containers'),
      h('table', {}, h('thead', {}, h('tr', {}, ['Name', 'Image', 'State', 'Ready', 'Restarts', 'CPU', 'Memory'].map((t) => h('th', {}, t)))),
        h('tbody', {}, (p.spec.containers || []).map((c) => {
          const s = (p.status?.containerStatuses || []).find((x) => x.name === c.name) || {};
          const state = Object.entries(s.state || {}).map(([k, v]) => (v.reason ? `${k} (${v.reason})` : k)).join(', ');
          const u = used.get(c.name) || {};
          return h('tr', {}, h('td', {}, c.name), h('td', {}, c.image), h('td', {}, state || 'waiting'),
            h('td', {}, s.ready ? 'yes' : 'no'), h('td', {}, s.restartCount || 0),
            h('td', {}, cpu(quantity(u.cpu))), h('td', {}, bytes(quantity(u.memory))));
        }))),
      h('h2', {}, 'Conditions'), conditionsTable(p.status?.conditions),
      rawObject(p),
    ];
  });
  page.main.replaceChildren(
    h('h1', {}, `Pod ${ns}/${name}`),
    h('div', { class: 'actions' }, action('Delete', `Delete pod ${ns}/${name}?`, async () => {
      await call('DELETE', path);
      return 'Deleted; it is terminating.';
    }, true)),
    r.el, logs.el, ...eventsOf(page, ns, 'Pod', name));
  const inf = page.watch(withQuery(collection('v1', 'pods', true, ns), { fieldSelector: `metadata.name=${name}` }), () => {
    r.redraw();
    logs.podKnown(inf.items.get(`${ns}/${name}`));
  });
  page.every(USAGE_EVERY_MS, async () => {
    try {
      metrics.value = await getJSON(objectPath('metrics.k8s.io/v1beta1', 'pods', ns, name), page.signal);
    } catch (_) {
      metrics.value = null; // no figures yet, or no right to them: the columns say –
    }
    r.redraw();
  });
}

/**
 * The pod page's log panel: `el`, and `podKnown(pod)`, which fills the
 * container picker the first time the pod is seen and starts reading.
 */
function logsPanel(page, ns, name) {
  const out = h('pre', { class: 'logs', 'aria-label': 'logs' });
  const select = h('select', { 'aria-label': 'container' });
  const follow = h('input', { type: 'checkbox', checked: true });
  const state = h('span', { class: 'muted', role: 'status' });
  let stream = null;
  page.signal.addEventListener('abort', () => stream?.abort(), { once: true });
  const start = () => {
    stream?.abort();
    stream = new AbortController();
    out.textContent = '';
    readLogs(ns, name, select.value, follow.checked, out, state, stream.signal);
  };
  const podKnown = (p) => {
    if (!p || select.options.length) return;
    for (const c of p.spec.containers || []) select.append(h('option', { value: c.name }, c.name));
    start();
  };
  select.addEventListener('change', start);
  follow.addEventListener('change', start);
  const el = h('section', {}, h('h2', {}, 'Logs'),
    h('div', { class: 'actions' }, select, h('label', {}, follow, ' follow'), state), out);
  return { el, podKnown };
}

async function readLogs(ns, name, container, follow, out, state, signal) {
  state.textContent = follow ? 'following…' : '';
  try {
    const resp = await call('GET', withQuery(objectPath('v1', 'pods', ns, name) + '/log', {
      container, tailLines: '500', follow: follow ? 'true' : undefined,
    }), { signal, accept: 'text/plain' });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.textContent = (out.textContent + value).slice(-LOG_KEEP_CHARS);
      if (atEnd) out.scrollTop = out.scrollHeight;
    }
    state.textContent = follow ? 'the log ended' : '';
  } catch (e) {
    if (e.name === 'AbortError') return;
    state.replaceChildren(errorBox(e));
  }
}

// ---------------------------------------------------------------- workloads

function deploymentList(page) {
  const r = page.region(() => table(inf, [
    ['Name', (d) => link(d.metadata.name, 'deployments', d.metadata.namespace, d.metadata.name)],
    ['Namespace', (d) => d.metadata.namespace],
    ['Ready', (d) => `${d.status?.readyReplicas || 0}/${d.spec?.replicas ?? 1}`],
    ['Up-to-date', (d) => d.status?.updatedReplicas || 0],
    ['Available', (d) => d.status?.availableReplicas || 0],
    ['Age', (d) => age(d.metadata.creationTimestamp)],
  ], (items) => items.sort(byName), 'No deployments.'));
  page.main.replaceChildren(h('h1', {}, 'Deployments'), r.el);
  const inf = page.watch(collection('apps/v1', 'deployments'), r.redraw);
}

function deploymentDetail(page, ns, name) {
  const path = objectPath('apps/v1', 'deployments', ns, name);
  const replicas = h('input', { type: 'number', min: 0, 'aria-label': 'replicas' });
  const r = page.region(() => {
    const d = inf.items.get(`${ns}/${name}`);
    if (!d) return inf.error ? errorBox(inf.error) : h('p', { class: 'muted' }, inf.synced ? 'No such deployment.' : 'Loading…');
    if (replicas.value === '') replicas.value = d.spec?.replicas ?? 1;
    return [
      fields([
        ['Replicas', h('span', { class: 'replicas' }, `${d.status?.readyReplicas || 0} ready of ${d.spec?.replicas ?? 1} desired (${d.status?.updatedReplicas || 0} up to date, ${d.status?.availableReplicas || 0} available)`)],
        ['Strategy', d.spec?.strategy?.type],
        ['Selector', tags(d.spec?.selector?.matchLabels)],
        ['Images', (d.spec?.template?.spec?.containers || []).map((c) => c.image).join(', ')],
        ['Created', `${d.metadata.creationTimestamp} (${age(d.metadata.creationTimestamp)})`],
      ]),
      h('h2', {}, 'Conditions'), conditionsTable(d.status?.conditions),
      rawObject(d),
    ];
  });
  const pods = page.region(() => table(podInf, podColumns(), (items) => items.sort(byName), 'No pods.'));
  page.main.replaceChildren(
    h('h1', {}, `Deployment ${ns}/${name}`),
    h('div', { class: 'actions' },
      h('label', {}, 'Replicas ', replicas),
      action('Scale', () => `Scale ${ns}/${name} to ${replicas.value} replicas?`, async () => {
        const n = Number(replicas.value);
        if (!Number.isInteger(n) || n < 0) throw new ApiError(0, 'Invalid', 'replicas must be a whole number, 0 or more');
        await mergePatch(path + '/scale', { spec: { replicas: n } });
        return `Scaled to ${n}.`;
      }),
      action('Restart', `Restart every pod of ${ns}/${name} (a rolling update)?`, async () => {
        await mergePatch(path, { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': new Date().toISOString() } } } } });
        return 'Restarting.';
      }),
      action('Delete', `Delete deployment ${ns}/${name} and its pods?`, async () => {
        await call('DELETE', path, { body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' } });
        return 'Deleted.';
      }, true)),
    r.el, h('h2', {}, 'Pods'), pods.el, ...eventsOf(page, ns, 'Deployment', name));
  const inf = page.watch(withQuery(collection('apps/v1', 'deployments', true, ns), { fieldSelector: `metadata.name=${name}` }), () => {
    r.redraw();
    const d = inf.items.get(`${ns}/${name}`);
    const sel = selectorQuery(d?.spec?.selector?.matchLabels);
    if (d && !podInf && sel) podInf = page.watch(withQuery(collection('v1', 'pods', true, ns), { labelSelector: sel }), pods.redraw);
  });
  let podInf = null;
}

function serviceList(page) {
  const r = page.region(() => table(inf, [
    ['Name', (s) => link(s.metadata.name, 'services', s.metadata.namespace, s.metadata.name)],
    ['Namespace', (s) => s.metadata.namespace],
    ['Type', (s) => s.spec?.type],
    ['Cluster IP', (s) => s.spec?.clusterIP],
    ['Ports', servicePorts],
    ['Age', (s) => age(s.metadata.creationTimestamp)],
  ], (items) => items.sort(byName), 'No services.'));
  page.main.replaceChildren(h('h1', {}, 'Services'), r.el);
  const inf = page.watch(collection('v1', 'services'), r.redraw);
}

const servicePorts = (s) => (s.spec?.ports || [])
  .map((p) => `${p.port}${p.nodePort ? ':' + p.nodePort : ''}/${p.protocol || 'TCP'}`).join(', ');

function serviceDetail(page, ns, name) {
  const r = page.region(() => {
    const s = inf.items.get(`${ns}/${name}`);
    if (!s) return inf.error ? errorBox(inf.error) : h('p', { class: 'muted' }, inf.synced ? 'No such service.' : 'Loading…');
    return [
      fields([
        ['Type', s.spec?.type], ['Cluster IP', s.spec?.clusterIP], ['Ports', servicePorts(s)],
        ['Selector', tags(s.spec?.selector)], ['Session affinity', s.spec?.sessionAffinity],
        ['Created', `${s.metadata.creationTimestamp} (${age(s.metadata.creationTimestamp)})`],
      ]),
      rawObject(s),
    ];
  });
  const endpoints = page.region(() => table(sliceInf, [
    ['Address', (e) => e.addresses.join(', ')],
    ['Ready', (e) => (e.conditions?.ready === false ? 'no' : 'yes')],
    ['Node', (e) => e.nodeName || ''],
    ['Pod', (e) => (e.targetRef?.kind === 'Pod' ? link(e.targetRef.name, 'pods', ns, e.targetRef.name) : '')],
  ], (slices) => slices.flatMap((sl) => sl.endpoints || []).map((e) => ({ ...e, metadata: { name: e.addresses[0] } })), 'No endpoints.'));
  page.main.replaceChildren(h('h1', {}, `Service ${ns}/${name}`), r.el, h('h2', {}, 'Endpoints'), endpoints.el, ...eventsOf(page, ns, 'Service', name));
  const inf = page.watch(withQuery(collection('v1', 'services', true, ns), { fieldSelector: `metadata.name=${name}` }), r.redraw);
  const sliceInf = page.watch(withQuery(collection('discovery.k8s.io/v1', 'endpointslices', true, ns), { labelSelector: `kubernetes.io/service-name=${name}` }), endpoints.redraw);
}

function jobList(page) {
  const r = page.region(() => table(inf, [
    ['Name', (j) => link(j.metadata.name, 'jobs', j.metadata.namespace, j.metadata.name)],
    ['Namespace', (j) => j.metadata.namespace],
    ['Status', (j) => { const s = jobStatus(j); return h('span', { class: statusClass(s) }, s); }],
    ['Completions', (j) => `${j.status?.succeeded || 0}/${j.spec?.completions ?? 1}`],
    ['Age', (j) => age(j.metadata.creationTimestamp)],
  ], (items) => items.sort(byName), 'No jobs.'));
  page.main.replaceChildren(h('h1', {}, 'Jobs'), r.el);
  const inf = page.watch(collection('batch/v1', 'jobs'), r.redraw);
}

function jobDetail(page, ns, name) {
  const path = objectPath('batch/v1', 'jobs', ns, name);
  const r = page.region(() => {
    const j = inf.items.get(`${ns}/${name}`);
    if (!j) return inf.error ? errorBox(inf.error) : h('p', { class: 'muted' }, inf.synced ? 'No such job.' : 'Loading…');
    return [
      fields([
        ['Status', jobStatus(j)],
        ['Completions', `${j.status?.succeeded || 0} of ${j.spec?.completions ?? 1} (parallelism ${j.spec?.parallelism ?? 1})`],
        ['Active / failed', `${j.status?.active || 0} / ${j.status?.failed || 0}`],
        ['Started', j.status?.startTime], ['Completed', j.status?.completionTime],
      ]),
      h('h2', {}, 'Conditions'), conditionsTable(j.status?.conditions),
      rawObject(j),
    ];
  });
  const pods = page.region(() => table(podInf, podColumns(), (items) => items.sort(byName), 'No pods.'));
  page.main.replaceChildren(
    h('h1', {}, `Job ${ns}/${name}`),
    h('div', { class: 'actions' }, action('Delete', `Delete job ${ns}/${name} and its pods?`, async () => {
      await call('DELETE', path, { body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' } });
      return 'Deleted.';
    }, true)),
    r.el, h('h2', {}, 'Pods'), pods.el, ...eventsOf(page, ns, 'Job', name));
  const inf = page.watch(withQuery(collection('batch/v1', 'jobs', true, ns), { fieldSelector: `metadata.name=${name}` }), r.redraw);
  const podInf = page.watch(withQuery(collection('v1', 'pods', true, ns), { labelSelector: `job-name=${name}` }), pods.redraw);
}

function eventList(page) {
  const r = page.region(() => table(inf, [
    ['Namespace', (e) => e.metadata.namespace],
    ...eventColumns(true),
  ], newestEvents, 'No events.'));
  page.main.replaceChildren(h('h1', {}, 'Events'), r.el);
  const inf = page.watch(collection('v1', 'events'), r.redraw);
}

// ---------------------------------------------------------------- sign-in

/** Who the API server takes this browser for (SelfSubjectReview). */
async function whoAmI() {
  const resp = await call('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
    body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
  });
  return (await resp.json()).status.userInfo;
}

/** Why a token the API server refused may have been refused, as far as the token itself tells. */
function tokenProblem(token) {
  if (!token) return 'Sign in with a bearer token.';
  const parts = token.split('.');
  if (parts.length === 3) {
    try {
      const claims = JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')));
      if (claims.exp && claims.exp * 1000 <= Date.now()) {
        return `This token expired at ${new Date(claims.exp * 1000).toISOString()}. Ask for a new one (kubectl create token).`;
      }
      if (claims.nbf && claims.nbf * 1000 > Date.now()) return 'This token is not valid yet.';
    } catch (_) { /* not a JWT after all */ }
    return 'The API server refused this token: it is not one it issued, or its service account or bound object is gone.';
  }
  if (/^[a-z0-9]{6}\.[a-z0-9]{16}$/.test(token)) {
    return 'The API server refused this bootstrap token: it is unknown, expired or revoked.';
  }
  return 'The API server refused this token (401 Unauthorized): it is unknown, expired or revoked.';
}

function loginPage(reason) {
  document.body.dataset.view = 'login';
  $('nav').hidden = true;
  $('session').hidden = true;
  const token = h('textarea', { id: 'token', 'aria-label': 'bearer token', placeholder: 'eyJhbGciOi…', autocomplete: 'off', spellcheck: 'false' });
  const problem = h('div', { id: 'login-error' }, reason ? errorBox(reason) : null);
  const form = h('form', {
    class: 'card login',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const t = token.value.trim();
      if (!t) {
        problem.replaceChildren(errorBox('Paste a bearer token first.'));
        return;
      }
      session.token = t;
      try {
        await start();
        sessionStorage.setItem(TOKEN_KEY, t);
      } catch (e) {
        session.token = null;
        problem.replaceChildren(errorBox(e.status === 401 ? tokenProblem(t) : e));
      }
    },
  },
  h('h1', {}, 'Sign in to Skiff'),
  h('p', {}, 'Paste a bearer token. The dashboard acts as that user through the API, so it shows and does only what RBAC allows.'),
  h('p', { class: 'muted' }, 'A service account\'s token: kubectl create token NAME -n NAMESPACE. A browser with a client certificate from the cluster CA is signed in without one.'),
  token, problem, h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Sign in')));
  $('main').replaceChildren(form);
  token.focus();
}

function signOut(reason) {
  session.token = null;
  session.user = null;
  sessionStorage.removeItem(TOKEN_KEY);
  current?.controller.abort();
  current = null;
  loginPage(reason);
}

/** Signs in with the session's token or the browser's certificate; throws the API's refusal. */
async function start() {
  const user = await whoAmI();
  session.user = user.username;
  session.byCertificate = !session.token;
  document.body.dataset.view = 'app';
  $('nav').hidden = false;
  $('session').hidden = false;
  $('whoami').textContent = session.byCertificate ? `${user.username} (certificate)` : user.username;
  $('logout').hidden = session.byCertificate;
  loadNamespaces();
  route();
}

async function loadNamespaces() {
  try {
    const list = await getJSON('/api/v1/namespaces');
    $('namespaces').replaceChildren(...list.items.map((n) => h('option', { value: n.metadata.name })));
  } catch (_) { /* a namespace can still be typed in */ }
}

const currentNamespace = () => sessionStorage.getItem(NAMESPACE_KEY) || '';

// ---------------------------------------------------------------- routes

const ROUTES = [
  [/^$/, overview],
  [/^nodes$/, nodeList], [/^nodes\/([^/]+)$/, nodeDetail],
  [/^pods$/, podList], [/^pods\/([^/]+)\/([^/]+)$/, podDetail],
  [/^deployments$/, deploymentList], [/^deployments\/([^/]+)\/([^/]+)$/, deploymentDetail],
  [/^services$/, serviceList], [/^services\/([^/]+)\/([^/]+)$/, serviceDetail],
  [/^jobs$/, jobList], [/^jobs\/([^/]+)\/([^/]+)$/, jobDetail],
  [/^events$/, eventList],
];

let current = null;

function route() {
  if (!session.user) return;
  current?.controller.abort();
  const path = location.hash.replace(/^#\/?/, '');
  const main = $('main');
  current = new Page(main);
  for (const a of document.querySelectorAll('#nav a')) {
    const target = a.getAttribute('href').slice(2);
    a.classList.toggle('active', target === '' ? path === '' : path === target || path.startsWith(target + '/'));
  }
  for (const [pattern, page] of ROUTES) {
    const m = pattern.exec(path);
    if (m) {
      page(current, ...m.slice(1).map(decodeURIComponent));
      return;
    }
  }
  main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', link('Overview')));
}

window.addEventListener('hashchange', route);

document.addEventListener('DOMContentLoaded', async () => {
  $('logout').addEventListener('click', () => signOut());
  const ns = $('namespace');
  ns.value = currentNamespace();
  ns.addEventListener('change', () => {
    sessionStorage.setItem(NAMESPACE_KEY, ns.value.trim());
    route();
  });
  try {
    await start();
  } catch (e) {
    if (e.status === 401) loginPage(session.token ? tokenProblem(session.token) : null);
    else loginPage(e);
  }
});
