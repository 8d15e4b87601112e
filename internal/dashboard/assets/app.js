// underlay dashboard: renders GET /v1/cluster and follows
// /v1/cluster/events. Nothing the cluster says is ever parsed as HTML:
// every element is made with createElement and every value set as text
// (textContent, text nodes, attribute values), so a service named
// "<img src=x onerror=…>" is shown as those characters.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const cfg = { auth: body.dataset.auth === 'true', authReads: body.dataset.authReads === 'true' };
  // Relative to the page, so the dashboard works behind a path prefix.
  const url = (p) => new URL(p, location.href).toString();
  const KEEPALIVE_MS = 5000;
  const STALE_MS = 3 * KEEPALIVE_MS;
  const MAX_EVENTS = 500;
  const state = {
    snap: null, instance: null, version: 0, events: [], eventSeq: 0, csrf: null, loggedIn: false,
    lastMessage: 0, es: null, reconnectTimer: null, backoff: 1000, fetching: false, refetch: false,
    // By service or network name: no prototype, so that a name such as
    // constructor finds only what was stored under it.
    toN: Object.create(null), zoom: Object.create(null), results: Object.create(null), search: '', matchIndex: -1,
  };
  // What tests and benchmarks read: render count and times.
  const ul = window.__ul = { renders: 0, renderMs: [], firstRenderAt: null, state };

  // readable is s as the page shows it: every character that is not
  // graphic (controls, bidi overrides and isolates such as U+202E,
  // zero-width characters, line separators; spaces other than U+0020,
  // such as U+00A0, and characters shown as nothing, such as U+3164)
  // escaped as Go quotes it (\u202e), but newlines and tabs, as
  // termtext.Lines does, so that a name cannot show as another name
  // ("web" and "web\u00a0"), nor reorder the text around it.
  const notGraphic = /[^\p{L}\p{M}\p{N}\p{P}\p{S} \n\t]|[\p{Default_Ignorable_Code_Point}\u2800]/gu;
  const shortEscapes = { 7: '\\a', 8: '\\b', 11: '\\v', 12: '\\f', 13: '\\r' };
  const hex = (n, w) => n.toString(16).padStart(w, '0');
  function readable(s) {
    return String(s).replace(notGraphic, (c) => {
      const n = c.codePointAt(0);
      if (shortEscapes[n]) return shortEscapes[n];
      if (n < 0x20 || n === 0x7f) return '\\x' + hex(n, 2);
      return n < 0x10000 ? '\\u' + hex(n, 4) : '\\U' + hex(n, 8);
    });
  }
  // searchText is what the search and the events' filter find an element
  // by, lower-cased: its texts as the page shows them (readable), so that
  // a name is found as it is read, and as they came.
  function searchText(parts) {
    const raw = parts.join(' ');
    const shown = readable(raw);
    return (shown === raw ? raw : shown + '\n' + raw).toLowerCase();
  }

  // h makes an element; attributes and children are set as text, shown
  // readable.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = readable(v);
      else if (k === 'dataset') { for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv); }
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'title' || k === 'aria-label') el.setAttribute(k, readable(v));
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(readable(c)));
    }
  }
  const badge = (text, cls) => h('span', { class: 'badge ' + (cls || slug(text)), text });
  const slug = (v) => String(v || '').toLowerCase().replace(/[^a-z0-9]+/g, '-');

  // reconcile makes container's children the rendered items, in order,
  // reusing the element of every item whose data did not change, so an
  // update touches only what changed (and a focused input keeps focus).
  function reconcile(container, items, key, render) {
    const old = new Map();
    for (const el of container.children) if (el.dataset.key !== undefined) old.set(el.dataset.key, el);
    const want = items.map((item) => {
      const k = key(item);
      const sig = JSON.stringify(item);
      let el = old.get(k);
      if (!el || el._sig !== sig) {
        el = render(item, el);
        el.dataset.key = k;
        el._sig = sig;
      }
      return el;
    });
    order(container, want);
  }

  // order makes container's children exactly want, moving as little as
  // it can.
  function order(container, want) {
    let ref = container.firstChild;
    for (const el of want) {
      if (el === ref) { ref = ref.nextSibling; continue; }
      container.insertBefore(el, ref);
    }
    while (ref) { const next = ref.nextSibling; ref.remove(); ref = next; }
  }

  // ---- time ----
  function age(since) {
    if (!since) return '';
    const ms = Date.now() - Date.parse(since);
    if (!(ms >= 0)) return 'just now';
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm';
    if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor(s % 3600 / 60)).padStart(2, '0');
    return Math.floor(s / 86400) + 'd';
  }
  const ageSpan = (since) => h('span', { class: 'age', dataset: { since }, text: age(since) });
  const clock = (t) => { const d = new Date(t); return isNaN(d) ? '' : d.toLocaleTimeString([], { hour12: false }); };
  function dur(ns) {
    if (!ns) return '0s';
    const s = ns / 1e9;
    if (s < 60) return s + 's';
    if (s % 3600 === 0) return s / 3600 + 'h';
    if (s % 60 === 0) return s / 60 + 'm';
    return Math.round(s) + 's';
  }

  // ---- IPv4 ----
  const ipToInt = (ip) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
  const intToIp = (n) => [n >>> 24 & 255, n >>> 16 & 255, n >>> 8 & 255, n & 255].join('.');
  function prefixRange(p) {
    const [ip, bits] = p.split('/');
    const size = 2 ** (32 - Number(bits));
    const first = ipToInt(ip);
    return [first, first + size - 1];
  }

  // ---- live ----
  function setLive(st, text) {
    const el = $('live');
    el.dataset.state = st;
    el.textContent = text;
  }
  function alive() {
    state.lastMessage = Date.now();
    state.backoff = 1000;
    setLive('live', 'live');
  }
  setInterval(() => {
    if (!state.lastMessage) return;
    const quiet = Date.now() - state.lastMessage;
    if (quiet > STALE_MS) {
      setLive('stale', 'stale: no news from the server since ' + clock(state.lastMessage) + ' — reconnecting…');
      body.classList.add('is-stale');
      if (quiet > 2 * STALE_MS && state.es) reconnect(jitter(KEEPALIVE_MS)); // the stream hangs: open another
    } else {
      body.classList.remove('is-stale');
    }
  }, 1000);
  setInterval(() => { for (const el of document.querySelectorAll('.age')) el.textContent = age(el.dataset.since); }, 5000);

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (state.es) state.es.close();
    const es = state.es = new EventSource(url('../v1/cluster/events'));
    es.addEventListener('open', alive);
    es.addEventListener('snapshot', (e) => { alive(); apply(JSON.parse(e.data)); });
    es.addEventListener('events', (e) => { alive(); addEvents(JSON.parse(e.data)); });
    es.addEventListener('ping', (e) => {
      alive();
      const p = JSON.parse(e.data);
      if (p.instance !== state.instance || p.version > state.version) loadSnapshot(); // a snapshot was missed
    });
    es.addEventListener('error', () => {
      if (es !== state.es) return;
      const since = state.lastMessage ? ' since ' + clock(state.lastMessage) : '';
      setLive('stale', 'stale' + since + ': connection lost — reconnecting…');
      if (es.readyState === EventSource.CLOSED) reconnect(jitter(state.backoff));
    });
  }
  // jitter spreads a delay over [ms/2, 3ms/2): pages that lost control at
  // once (a restart) must not all come back at the same instant.
  function jitter(ms) { return ms / 2 + Math.random() * ms; }
  // reconnect opens the stream again after delay; a refused stream (401,
  // a restarted server) closes for good, so the page retries itself.
  function reconnect(delay) {
    if (state.es) { state.es.close(); state.es = null; }
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(async () => {
      state.backoff = Math.min(state.backoff * 2, 30000);
      const ok = await loadSnapshot();
      if (ok) connect(); else reconnect(jitter(state.backoff));
    }, delay);
  }

  async function loadSnapshot() {
    if (state.fetching) { state.refetch = true; return true; }
    state.fetching = true;
    try {
      const r = await fetch(url('../v1/cluster'), { credentials: 'same-origin', cache: 'no-store' });
      if (r.status === 401) { setLive('offline', 'log in to read the cluster'); askLogin('Reading the cluster needs the control token.'); return false; }
      if (!r.ok) { setLive('offline', 'server answered ' + r.status); return false; }
      apply(await r.json());
      return true;
    } catch (err) {
      setLive('offline', 'offline: ' + err.message);
      return false;
    } finally {
      state.fetching = false;
      if (state.refetch) { state.refetch = false; loadSnapshot(); }
    }
  }

  async function loadSession() {
    try {
      const r = await fetch(url('session'), { credentials: 'same-origin', cache: 'no-store' });
      const sess = await r.json();
      state.csrf = sess.csrf || null;
      state.loggedIn = !!sess.logged_in;
    } catch (err) { /* the stream says whether the server is there */ }
    $('login-button').hidden = !cfg.auth || state.loggedIn;
    $('logout-button').hidden = !cfg.auth || !state.loggedIn;
  }

  // ---- login ----
  let loginWaiters = [];
  function askLogin(why) {
    return new Promise((resolve) => {
      loginWaiters.push(resolve);
      $('login-why').textContent = readable(why || '');
      $('login-error').textContent = '';
      const d = $('login');
      if (!d.open) d.showModal();
      $('token').focus();
    });
  }
  function loginDone(ok) {
    const ws = loginWaiters;
    loginWaiters = [];
    for (const w of ws) w(ok);
  }
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = $('token').value;
    try {
      const r = await fetch(url('login'), {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }),
      });
      const ans = await r.json();
      if (!r.ok) { $('login-error').textContent = readable(ans.error || ('refused: ' + r.status)); return; }
      state.csrf = ans.csrf; state.loggedIn = true;
      $('token').value = '';
      $('login').close();
      await loadSession();
      // A login asked for mid-session (a 401): read the cluster again.
      if (state.started && !state.es) { if (await loadSnapshot()) connect(); }
      loginDone(true);
    } catch (err) { $('login-error').textContent = err.message; }
  });
  $('login-cancel').addEventListener('click', () => { $('login').close(); loginDone(false); });
  $('login-button').addEventListener('click', () => askLogin('Scaling services needs a token.'));
  $('logout-button').addEventListener('click', async () => {
    await post('logout', {});
    await loadSession();
  });

  function post(path, data) {
    return fetch(url(path), {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Underlay-CSRF': state.csrf || '' },
      body: JSON.stringify(data),
    });
  }

  // ---- scaling ----
  async function scale(service, req) {
    const show = (text, cls) => { state.results[service] = { text, cls, at: Date.now() }; renderResult(service); };
    if (cfg.auth && !state.loggedIn) {
      if (!await askLogin('Scaling ' + service + ' needs a token.')) return;
    }
    if (!state.csrf) await loadSession();
    show('asking…', '');
    let r = await post('scale/' + encodeURIComponent(service), req);
    if (r.status === 401 || r.status === 403) {
      state.loggedIn = false;
      await loadSession();
      if (r.status === 401 && !await askLogin('Your session ended; log in again to scale ' + service + '.')) return;
      r = await post('scale/' + encodeURIComponent(service), req);
    }
    let ans = {};
    try { ans = await r.json(); } catch (err) { /* not JSON */ }
    if (!r.ok) { show((ans.error || 'failed') + ' (' + r.status + ')', 'error'); return; }
    if (ans.refused) show('refused (' + ans.reason + '): ' + (ans.why || ''), 'refused');
    else show((ans.dry_run ? 'dry run: ' : '') + (ans.why || ('scaled ' + ans.from + ' → ' + ans.to)), 'ok');
  }
  function renderResult(service) {
    const el = document.querySelector('.service[data-service="' + CSS.escape(service) + '"] .result');
    const r = state.results[service];
    if (!el || !r) return;
    el.className = 'result ' + r.cls;
    el.textContent = readable(r.text);
  }

  // ---- rendering ----
  function apply(snap) {
    if (!snap) return;
    if (snap.instance !== state.instance) {
      // Another control process (a restart): its versions and events
      // count anew.
      state.instance = snap.instance;
      state.version = 0;
      state.eventSeq = 0;
      $('events').replaceChildren();
    }
    if (snap.version <= state.version) return; // seen already
    state.snap = snap;
    state.version = snap.version;
    const t0 = performance.now();
    render(snap);
    const dt = performance.now() - t0;
    ul.renders++;
    ul.renderMs.push(dt);
    if (ul.firstRenderAt === null) ul.firstRenderAt = performance.now();
    body.dataset.snapshot = String(snap.version);
  }

  function render(snap) {
    const parts = {};
    const timed = (name, f) => { const t = performance.now(); f(); parts[name] = performance.now() - t; };
    timed('summary', () => { renderSummary(snap); renderSources(snap.sources || []); });
    timed('nodes', () => { renderProblems(snap.problems || [], snap.problems_omitted || 0); renderNodes(snap.nodes || [], snap.unplaced || [], snap.unplaced_omitted || 0); });
    timed('services', () => renderServices(snap.services || [], snap.services_omitted || 0));
    timed('networks', () => renderNetworks(snap.networks || [], snap.nodes || []));
    timed('search', applySearch);
    ul.parts = parts;
    if (!ul.firstParts) ul.firstParts = parts;
  }
  // A fresh render of the current snapshot, for benchmarks.
  ul.rerender = () => {
    for (const id of ['nodes', 'services', 'networks']) $(id).replaceChildren();
    const t = performance.now();
    render(state.snap);
    return performance.now() - t;
  };

  function renderSummary(snap) {
    const m = snap.summary || {};
    const item = (n, label, bad) => h('span', { class: bad && n > 0 ? 'bad' : '' }, h('b', { text: n }), ' ' + label);
    $('summary').replaceChildren(
      item(m.nodes, 'nodes'), item(m.services, 'services'),
      h('span', {}, h('b', { text: m.running }), ' running tasks, ', h('b', { text: m.passing }), ' passing in Consul'),
      item(m.mismatches, 'Swarm/Consul mismatches', true), item(m.duplicates, 'duplicate addresses', true),
      item(m.duplicate_containers || 0, 'containers listed by several nodes', true),
      item(m.doctor_failures, 'failed doctor checks', true),
      h('span', { class: 'muted', text: 'snapshot ' + snap.version + ' at ' + clock(snap.generated_at) }));
    const c = snap.control || {};
    $('control').textContent = readable(c.leading ? 'this control instance leads the autoscaler' : (c.leader ? 'autoscaler leader: ' + c.leader : 'no autoscaler leader'));
  }

  function renderSources(errs) {
    const el = $('sources');
    el.hidden = errs.length === 0;
    // consul (the catalog) and kv (underlay's records, the agents' reports
    // among them) are both Consul.
    el.replaceChildren(...errs.map((e) => {
      const since = e.since ? ' since ' + clock(e.since) : '';
      if (e.source === 'consul' || e.source === 'kv') {
        return h('div', {}, h('b', { text: 'Consul unreachable since ' + (clock(e.since) || '?') }), ' (' + e.source + ': ' + e.error + ') — showing what it returned last' +
          (e.source === 'kv' ? '; the agents\' states are unknown meanwhile.' : '.'));
      }
      return h('div', {}, h('b', { text: e.source }), ' cannot be read' + since + ': ' + e.error + ' — showing what it returned last.');
    }));
  }

  function renderNodes(nodes, unplaced, unplacedOmitted) {
    const box = $('nodes');
    const cols = new Map();
    // Keyed by swarm node ID: two nodes may have one name.
    for (const el of box.children) cols.set(el.dataset.nodeId, el);
    const names = new Map();
    for (const n of nodes) names.set(n.name, (names.get(n.name) || 0) + 1);
    const want = nodes.map((n) => {
      let col = cols.get(n.id);
      if (!col) {
        col = h('div', { class: 'node', dataset: { node: n.name, nodeId: n.id } }, h('div', { class: 'node-head' }), h('div', { class: 'tasks' }));
      }
      const head = { ...n, tasks: undefined, sameName: names.get(n.name) > 1 };
      const sig = JSON.stringify(head);
      if (col._sig !== sig) {
        col._sig = sig;
        col.className = 'node ' + slug(n.state);
        col.firstChild.replaceWith(nodeHead(n, head.sameName));
      }
      reconcile(col.lastChild, n.tasks, (t) => t.kind + '|' + t.id + '|' + t.node, card);
      return col;
    });
    order(box, want);
    const up = $('unplaced');
    up.hidden = unplaced.length === 0 && !unplacedOmitted;
    up.querySelector('h3').textContent = 'Not on a node' + (unplacedOmitted ? ' (… ' + unplacedOmitted + ' more not shown)' : '');
    reconcile(up.querySelector('.tasks'), unplaced, (t) => t.kind + '|' + t.id, card);
  }

  // nodeHead is a node's column head; sameName when another node has its
  // name, which its swarm node ID then tells apart.
  function nodeHead(n, sameName) {
    const agent = n.agent || {};
    const doc = n.doctor;
    const head = h('div', { class: 'node-head' },
      h('div', { class: 'line' }, h('h3', { class: 'node-name', text: n.name }), n.leader ? badge('leader', 'leader') : null),
      sameName ? h('div', { class: 'line muted node-id', text: 'swarm node ' + n.id + ' (another node has this name)' }) : null,
      h('div', { class: 'line' }, badge(n.role, 'role'), badge(n.state), n.availability !== 'active' ? badge(n.availability, 'warn') : null,
        h('span', { class: 'muted', text: 'Docker ' + (n.docker_version || '?') })),
      h('div', { class: 'line' }, 'agent ', badge(agent.state || 'absent', 'agent-' + (agent.state || 'absent') + ' ' + (agent.state || 'absent')),
        // Unknown: the dashboard cannot read the reports; what it was before.
        agent.last_state ? h('span', { class: 'muted agent-last', text: ' (was ' + agent.last_state + ')' }) : null,
        agent.last_seen ? h('span', { class: 'muted' }, ' seen ', ageSpan(agent.last_seen), ' ago') : null,
        // Its facts name no swarm node: under a name other nodes have, it
        // may be another node's agent.
        agent.name_only ? h('span', { class: 'muted agent-name-only', text: ' (known by the name only: it may be another node\'s agent)' }) : null),
      doc ? h('div', { class: 'line doctor' }, 'doctor ', badge(doc.ok + ' ok', 'ok'), doc.warn ? badge(doc.warn + ' warn', 'warn') : null,
        doc.fail ? badge(doc.fail + ' failed', 'fail') : null) : h('div', { class: 'line muted', text: 'no doctor report' }),
      // A report published by a name several nodes have may be any one's.
      doc && doc.shared_by ? h('div', { class: 'line muted doctor-shared', text: 'the report of the name ' + n.name + ', which swarm nodes ' +
        doc.shared_by.join(', ') + ' have: which one\'s is unknown' }) : null,
      n.message ? h('div', { class: 'muted', text: n.message }) : null,
      // Cards past the snapshot's caps (MaxNodeCards, MaxCards): those in
      // most need of attention are listed.
      n.tasks_omitted ? h('div', { class: 'line muted omitted', text: '… ' + n.tasks_omitted + ' more tasks not shown (docker node ps lists them)' }) : null);
    if (doc && doc.problems.length) {
      head.append(h('ul', { class: 'doctor-problems' }, doc.problems.map(problem), omittedProblems(doc.problems_omitted)));
    }
    return head;
  }

  // omittedProblems counts the problems the snapshot left out (past
  // MaxProblems), null when none.
  function omittedProblems(n) {
    return n ? h('li', { class: 'muted omitted', text: '… ' + n + ' more not listed (underlay doctor on the node lists them)' }) : null;
  }

  // problem is a doctor result as Build counts it: a warning, else a
  // failure (its status is whatever the agent wrote: never a class).
  function problem(p) {
    return h('li', { class: p.status === 'warn' ? 'warn' : 'fail', dataset: { check: p.check } },
      h('span', { class: 'check', text: p.check }), ' ', h('span', { text: p.message }),
      p.fix ? h('code', { class: 'fix', text: p.fix }) : null);
  }

  // renderProblems shows the warnings about nodes the page has no column
  // for (a misfiled facts document naming no node).
  function renderProblems(problems, omitted) {
    const el = $('cluster-problems');
    el.hidden = problems.length === 0;
    el.querySelector('ul').replaceChildren(...problems.map(problem), ...(omitted ? [omittedProblems(omitted)] : []));
  }

  function cardName(t) { return t.slot ? t.service + '.' + t.slot : t.service; }

  function card(t) {
    const ip = t.addresses.length ? t.addresses[0].ip : '';
    const classes = ['card', slug(t.kind), 'health-' + slug(t.health)];
    if (t.state !== 'running') classes.push('ended');
    if (t.mismatch) classes.push('mismatch');
    if (t.duplicate) classes.push('duplicate');
    // Left out of Consul on purpose by its agent: not registered, as it
    // should be, so nothing to flag red.
    if (t.unregistered) classes.push('left-out');
    const search = searchText([t.service, cardName(t), t.id, t.container, t.container_id, t.image, t.node, t.consul_id,
      ...t.addresses.flatMap((a) => [a.ip, a.mac])].filter(Boolean));
    const title = t.checks.map((c) => c.name + ': ' + c.status + (c.output ? '\n' + c.output : '')).join('\n\n') +
      (t.checks_omitted ? '\n\n… ' + t.checks_omitted + ' more checks not listed (consul lists them)' : '');
    return h('div', {
      class: classes.join(' '), title: title || null,
      dataset: { task: t.id, service: t.service, state: t.state, health: t.health, ip, kind: t.kind, search },
    },
      h('div', { class: 'head' }, h('span', { class: 'name', text: cardName(t) }), badge(t.state), badge(t.health)),
      // Why its node's agent leaves it out of Consul: no mismatch.
      t.unregistered ? h('div', { class: 'meta unregistered', text: 'left out on purpose: ' + t.unregistered }) : null,
      t.addresses.map((a) => h('div', { class: 'addr' }, h('span', { class: 'ip', text: a.ip }), ' ',
        a.mac ? h('span', { class: 'mac', text: a.mac }) : null, ' ', h('span', { class: 'net', text: a.network }))),
      t.addresses.length ? null : h('div', { class: 'muted', text: 'no underlay address' }),
      h('div', { class: 'meta' }, t.image || '', t.container ? ' · ' + t.container : '', t.since ? [' · ', ageSpan(t.since)] : null),
      t.message && t.state !== 'running' ? h('div', { class: 'meta', text: t.message }) : null,
      failing(t),
      t.problems.length ? h('ul', { class: 'problems' }, t.problems.map((p) => h('li', { text: p }))) : null);
  }

  // failing names the first check that does not pass, with its output.
  function failing(t) {
    const c = t.checks.find((c) => c.status !== 'passing');
    if (!c) return null;
    return h('div', { class: 'check ' + slug(c.status) }, h('b', { text: c.name }), ': ' + (c.output || c.status).slice(0, 200));
  }

  function renderServices(services, omitted) {
    const more = $('services-omitted');
    more.hidden = !omitted;
    more.textContent = omitted ? '… ' + omitted + ' more services not shown (docker service ls lists them)' : '';
    // A service redrawn while its "to N" box is being typed in keeps the
    // focus there.
    const active = document.activeElement;
    const typing = active && active.classList.contains('to-n') ? active.closest('.service').dataset.service : null;
    reconcile($('services'), services, (s) => s.name, serviceEl);
    for (const s of services) renderResult(s.name);
    if (typing !== null && document.activeElement !== active) {
      const input = document.querySelector('.service[data-service="' + CSS.escape(typing) + '"] .to-n');
      if (input) input.focus();
    }
  }

  function policyText(p) {
    if (!p) return '';
    const step = (st) => st.percent ? st.percent + '%' : String(st.replicas);
    const parts = ['min ' + p.min, 'max ' + p.max, 'step +' + step(p.step_up) + '/−' + step(p.step_down),
      'cooldown up ' + dur(p.cooldown_up) + ', down ' + dur(p.cooldown_down),
      'stabilization ' + dur(p.stabilization_down), p.allow_down ? 'scale-down allowed' : 'no scale-down'];
    if (p.paused) parts.push('PAUSED');
    for (const m of p.metrics || []) parts.push('metric ' + m.name + ' → ' + m.target + ' per replica (' + m.query + ')');
    return parts.join(' · ');
  }

  function serviceEl(svc) {
    const el = h('div', { class: 'service', dataset: { service: svc.name, search: searchText([svc.name, svc.id, svc.image]) } },
      h('div', { class: 'head' }, h('h3', { text: svc.name }), badge(svc.mode, 'mode'),
        h('span', { class: 'replicas' }, h('b', { class: 'running-count', text: svc.running }), '/', h('b', { class: 'desired-count', text: svc.desired }),
          ' running, ', h('b', { text: svc.passing }), ' passing'),
        h('span', { class: 'muted', text: svc.image + (svc.networks.length ? ' on ' + svc.networks.join(', ') : '') })),
      svc.autoscaled ? h('div', { class: 'policy', text: policyText(svc.policy) }) : h('div', { class: 'policy', text: 'not autoscaled (label it underlay.scale.enabled=true)' }),
      svc.policy_error ? h('div', { class: 'error', text: 'bad scaling labels: ' + svc.policy_error }) : null,
      chart(svc),
      svc.decisions.length ? decisions(svc.decisions) : null,
      (svc.bad_records || []).map((r) => h('div', { class: 'error bad-record' },
        'unreadable scaling history record ' + r.key + (r.direction ? ' (last scale-' + r.direction + ')' : '') + ': ' + r.error + ' — left out; fix: ',
        h('code', { text: r.fix }))),
      svc.autoscaled ? actions(svc) : null,
      h('div', { class: 'result' }));
    return el;
  }

  function actions(svc) {
    const input = h('input', { type: 'number', min: '0', class: 'to-n', 'aria-label': 'replicas', value: state.toN[svc.name] || String(svc.desired) });
    input.addEventListener('input', () => { state.toN[svc.name] = input.value; });
    return h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'scale-down', onclick: () => scale(svc.name, { direction: 'down' }), text: '− scale down' }),
      h('button', { type: 'button', class: 'scale-up', onclick: () => scale(svc.name, { direction: 'up' }), text: '+ scale up' }),
      h('span', { text: 'to' }), input,
      h('button', { type: 'button', class: 'scale-to', text: 'set', onclick: () => {
        const n = Number(input.value);
        if (!Number.isInteger(n) || n < 0) { state.results[svc.name] = { text: 'want a whole number of replicas', cls: 'error' }; renderResult(svc.name); return; }
        delete state.toN[svc.name];
        scale(svc.name, { replicas: n });
      } }));
  }

  function decisions(recs) {
    return h('table', { class: 'decisions' },
      h('tr', {}, ['time', 'asked', 'replicas', 'result', 'why'].map((t) => h('th', { text: t }))),
      recs.map((r) => h('tr', { class: r.refused ? 'refused' : '' },
        h('td', { class: 'mono', text: clock(r.time) }),
        h('td', { text: (r.direction || (r.desired ? 'to ' + r.desired : '')) + ' · ' + (r.source || '') }),
        h('td', { text: r.from + ' → ' + r.to }),
        h('td', {}, badge(r.reason, r.refused ? 'warn' : 'ok'), r.dry_run ? ' dry run' : ''),
        h('td', { text: r.why || '' }))));
  }

  // chart draws replicas over time (desired solid, running dashed) and
  // the metric values decisions were made on, against their target.
  function chart(svc) {
    const W = 400, H = 80, L = 24, R = 6, T = 6, B = 14;
    const pts = svc.replicas || [];
    const mets = svc.metrics || [];
    const now = Date.now();
    const times = pts.map((p) => Date.parse(p.time)).concat(mets.map((m) => Date.parse(m.time)));
    // At least the last minute, ending now at the right edge.
    const span = Math.max(now - (times.length ? Math.min(...times) : now), 60000);
    const t0 = now - span;
    const x = (t) => L + (W - L - R) * (t - t0) / span;
    const top = Math.max(1, svc.desired, svc.running, ...pts.map((p) => Math.max(p.desired, p.running)), svc.policy ? svc.policy.max : 0);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'replicas of ' + svc.name + ' over time' });
    svg.append(s('text', { x: 2, y: T + 8, text: String(top) }), s('text', { x: 2, y: H - B, text: '0' }),
      s('text', { x: L, y: H - 2, text: clock(t0) }), s('text', { x: W - R - 44, y: H - 2, text: 'now' }));
    const step = (key) => {
      const ps = pts.filter((p) => p[key] >= 0);
      if (!ps.length) return '';
      let d = '';
      ps.forEach((p, i) => {
        const px = x(Date.parse(p.time)), py = y(p[key]);
        d += i === 0 ? 'M' + px + ' ' + py : 'H' + px + 'V' + py;
      });
      return d + 'H' + x(now);
    };
    const desired = step('desired') || ('M' + L + ' ' + y(svc.desired) + 'H' + x(now));
    svg.append(s('path', { class: 'desired', d: desired }, s('title', { text: 'desired replicas' })));
    const running = step('running');
    if (running) svg.append(s('path', { class: 'running', d: running }, s('title', { text: 'running replicas' })));
    if (mets.length) {
      const name = mets[mets.length - 1].name;
      const ms = mets.filter((m) => m.name === name);
      const mtop = Math.max(...ms.map((m) => Math.max(m.value, m.target))) * 1.2 || 1;
      const my = (v) => T + (H - T - B) * (1 - v / mtop);
      const target = ms[ms.length - 1].target;
      svg.append(s('line', { class: 'target', x1: L, x2: W - R, y1: my(target), y2: my(target) }, s('title', { text: name + ' target ' + target })));
      for (const m of ms) svg.append(s('circle', { class: 'metric', cx: x(Date.parse(m.time)), cy: my(m.value), r: 2.5 }, s('title', { text: name + ' = ' + m.value + ' (target ' + m.target + ') at ' + clock(m.time) })));
    }
    return svg;
  }

  // ---- networks and the subnet map ----
  const STATES = ['task', 'duplicate', 'spare', 'leaked', 'reserved', 'free', 'outside'];
  const RANK = { duplicate: 6, leaked: 5, task: 4, spare: 3, reserved: 2, free: 1, outside: 0 };

  function renderNetworks(nets, nodes) {
    // Regions name their node as the snapshot labels it: with its swarm
    // node ID when another node has its name.
    const nodeIdx = new Map();
    nodes.forEach((n, i) => { nodeIdx.set(n.name, i % 10); nodeIdx.set(n.name + ' (swarm node ' + n.id + ')', i % 10); });
    reconcile($('networks'), nets, (n) => n.name, (n) => networkEl(n, nodeIdx));
  }

  function networkEl(n, nodeIdx) {
    const p = n.pool;
    const el = h('div', { class: 'network', dataset: { network: n.name, search: searchText([n.name, n.subnet, n.ipv6_subnet || '', n.parent]) } },
      h('div', { class: 'head' }, h('h3', { text: n.name }), n.deleting ? badge('being removed', 'warn') : null,
        n.refused ? badge('refused by the agents', 'fail') : null),
      n.refused ? h('div', { class: 'error', text: 'Every agent refuses this spec, and serves no address of it: ' + n.refused }) : null,
      h('div', { class: 'spec' },
        h('span', {}, 'subnet ', h('b', { text: n.subnet })), h('span', {}, 'gateway ', h('b', { text: n.gateway })),
        h('span', {}, 'parent ', h('b', { text: n.parent })), h('span', {}, 'IPAM ', h('b', { text: n.ipam })),
        n.ip_range ? h('span', {}, 'ip range ', h('b', { text: n.ip_range })) : null,
        n.ipv6_subnet ? h('span', {}, 'IPv6 ', h('b', { text: n.ipv6_subnet })) : null,
        n.aux ? h('span', {}, 'aux ', h('b', { text: Object.entries(n.aux).map(([k, v]) => k + '=' + v).join(', ') })) : null),
      h('div', { class: 'network-nodes' }, n.nodes.map((nn) => h('span', { class: 'badge ' + slug(nn.state === 'ready' ? 'ok' : 'fail'), title: nn.error || null,
        text: nn.node + ': ' + nn.state + (nn.range ? ' ' + nn.range : '') + (nn.ipv6_range ? ' ' + nn.ipv6_range : '') +
          (nn.shim ? ' shim ' + nn.shim : '') + (nn.shim6 ? ' ' + nn.shim6 : '') }))));
    if (p && p.size) {
      el.append(usage(p), legend(p, nodeIdx), subnetMap(n, nodeIdx));
      const z = h('div', { class: 'zoom' });
      z.hidden = true;
      el.append(z);
      // A large subnet opens on its busiest block, address by address,
      // until another is clicked.
      const at = state.zoom[n.name] !== undefined ? state.zoom[n.name] : (p.cell > 1 ? busiestCell(p) : -1);
      if (at >= 0) zoom(n, el, at, nodeIdx);
    }
    if (n.ipv6_pool) el.append(pool6El(n.ipv6_pool, nodeIdx));
    if (n.outside && n.outside.length) el.append(outsideEl(n.outside, n.outside_omitted));
    return el;
  }

  // outsideEl lists the addresses containers hold, by their nodes'
  // inventories, in none of the network's subnets: no map holds them.
  function outsideEl(as, omitted) {
    const n = as.length + (omitted || 0);
    return h('div', { class: 'outside-subnets' },
      h('div', { class: 'error', text: n + ' address' + (n === 1 ? '' : 'es') +
        ' in use by an inventory but outside the network\'s subnets: a stale or forged inventory' }),
      h('ul', { class: 'pool6-addresses' }, as.map((a) => h('li', { dataset: { state: 'outside', search: searchText([a.ip, a.holder, a.mac || '']) } },
        h('b', { text: a.ip }), ' ' + a.holder, a.mac ? ' (MAC ' + a.mac + ')' : null)),
        omitted ? h('li', { class: 'muted omitted', text: '… ' + omitted + ' more not listed (underlay ips lists them)' }) : null));
  }

  // pool6El shows an IPv6 pool (/48 to /64), too large for a map: the
  // counts of its addresses that are not free, the nodes' ranges or
  // blocks, and those addresses listed (the first MAX_POOL6_ROWS).
  const MAX_POOL6_ROWS = 256;
  function pool6El(p, nodeIdx) {
    const listed = STATES.filter((st) => st !== 'free' && st !== 'outside');
    const rows = p.addresses.slice(0, MAX_POOL6_ROWS).map((a) => h('li', { dataset: { state: a.state, search: searchText([a.ip, a.holder, a.mac || '']) } },
      h('span', { class: 'sw st-' + a.state }), h('b', { text: a.ip }), ' ' + a.state + ': ' + a.holder,
      a.mac ? ' (MAC ' + a.mac + ')' : null, a.since ? [' since ', ageSpan(a.since), ' ago'] : null));
    return h('div', { class: 'pool6' },
      h('div', { class: 'legend' }, h('span', {}, 'IPv6 pool ', h('b', { text: p.range })),
        listed.map((st) => h('span', { class: 'count6', dataset: { state: st, count: p.counts[st] || 0 } },
          h('span', { class: 'sw st-' + st }), st + ' ', h('b', { text: p.counts[st] || 0 }))),
        h('span', { class: 'muted', text: 'the rest of its 2^' + (128 - p.bits) + ' addresses free' }),
        p.regions.length ? h('span', { class: 'muted', text: p.regions[0].kind === 'range' ? 'per-node ranges:' : 'blocks of:' }) : null,
        p.regions.map((r) => h('span', {}, h('span', { class: 'node-sw r' + (nodeIdx.get(r.node) ?? 9) }), r.node + ' ' + r.prefix))),
      h('ul', { class: 'pool6-addresses' }, rows,
        p.addresses.length > MAX_POOL6_ROWS ? h('li', { class: 'muted', text: '… ' + (p.addresses.length - MAX_POOL6_ROWS) + ' more (GET /v1/cluster lists them)' }) : null,
        p.omitted ? h('li', { class: 'muted omitted', text: '… ' + p.omitted + ' more not listed (underlay ips lists them)' }) : null));
  }

  function usage(p) {
    const bar = h('div', { class: 'usage', title: 'addresses by state' });
    const total = p.size - (p.counts.outside || 0);
    for (const st of ['task', 'duplicate', 'spare', 'leaked', 'reserved']) {
      const c = p.counts[st] || 0;
      if (!c) continue;
      const seg = h('span', { class: 'st-' + st, title: c + ' ' + st });
      seg.style.width = (100 * c / total) + '%';
      bar.append(seg);
    }
    return bar;
  }

  function legend(p, nodeIdx) {
    const inUse = (p.counts.task || 0) + (p.counts.duplicate || 0);
    const usable = p.size - (p.counts.outside || 0);
    const lg = h('div', { class: 'legend' },
      h('span', {}, h('b', { text: inUse }), ' of ' + usable + ' addresses held by containers (' + Math.round(100 * inUse / usable) + '%)'),
      STATES.filter((st) => st !== 'outside' || p.counts.outside).map((st) => h('span', { class: 'count', dataset: { state: st, count: p.counts[st] || 0 } },
        h('span', { class: 'sw st-' + st }), st + ' ', h('b', { text: p.counts[st] || 0 }))));
    const owners = [...new Set(p.regions.map((r) => r.node))];
    if (owners.length) {
      lg.append(h('span', { class: 'muted', text: p.regions[0].kind === 'range' ? 'per-node ranges:' : 'blocks of:' }),
        ...owners.map((o) => h('span', {}, h('span', { class: 'node-sw r' + (nodeIdx.get(o) ?? 9) }), o)));
    }
    lg.append(h('span', { class: 'muted', text: p.cell > 1 ? 'one cell per ' + p.cell + ' addresses (click to zoom)' : 'one cell per address' }));
    // Past the snapshot's limit, the map shows the addresses listed (the
    // most in need of attention first); the counts are whole.
    if (p.omitted) lg.append(h('span', { class: 'muted omitted', text: p.omitted + ' addresses not free are not on the map (underlay ips lists them)' }));
    return lg;
  }

  // busiestCell is the map cell holding the most addresses of tasks (and
  // of anything but reserved ones), -1 when none.
  function busiestCell(p) {
    let best = -1, most = 0;
    for (const [i, as] of cellsOf(p)) {
      const n = as.filter((a) => a.state !== 'reserved').length;
      if (n > most) { most = n; best = i; }
    }
    return best;
  }

  // cellsOf groups a pool's addresses by map cell.
  function cellsOf(p) {
    const first = ipToInt(p.first);
    const cells = new Map();
    for (const a of p.addresses) {
      const i = Math.floor((ipToInt(a.ip) - first) / p.cell);
      if (!cells.has(i)) cells.set(i, []);
      cells.get(i).push(a);
    }
    return cells;
  }

  // regionOf finds the region holding addr; the ranges are parsed once
  // per pool, and looked up by binary search (they are in address order).
  function regionOf(p, addr) {
    if (!p._ranges) p._ranges = p.regions.map((r) => [...prefixRange(r.prefix), r]);
    const rs = p._ranges;
    let lo = 0, hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (addr < rs[mid][0]) hi = mid - 1;
      else if (addr > rs[mid][1]) lo = mid + 1;
      else return rs[mid][2];
    }
    return null;
  }

  function subnetMap(n, nodeIdx) {
    const p = n.pool;
    const first = ipToInt(p.first);
    const [rlo, rhi] = prefixRange(p.range);
    const cells = cellsOf(p);
    const count = Math.ceil(p.size / p.cell);
    const map = h('div', { class: 'map ' + (p.cell > 1 ? 'by-block' : 'per-address'), dataset: { network: n.name } });
    const frag = document.createDocumentFragment();
    for (let i = 0; i < count; i++) {
      const lo = first + i * p.cell, hi = lo + p.cell - 1;
      const as = cells.get(i) || [];
      let st = lo > rhi || hi < rlo ? 'outside' : 'free';
      for (const a of as) if (RANK[a.state] > RANK[st]) st = a.state;
      let cls = 'c st-' + st;
      if (p.cell > 1 && as.length && as.length < p.cell) cls += ' partial';
      const r = regionOf(p, lo);
      if (r) cls += ' r' + (nodeIdx.get(r.node) ?? 9);
      const c = document.createElement('div');
      c.className = cls;
      c.dataset.i = i;
      c.dataset.state = st;
      if (as.length) c.dataset.search = searchText(as.flatMap((a) => [a.ip, a.holder, a.mac || '']));
      frag.append(c);
    }
    map.append(frag);
    map._pool = p;
    map._cells = cells;
    map.addEventListener('mousemove', (e) => hover(e, map));
    map.addEventListener('mouseleave', () => { $('tooltip').hidden = true; });
    if (p.cell > 1) map.addEventListener('click', (e) => {
      const i = e.target.dataset && e.target.dataset.i;
      if (i === undefined) return;
      state.zoom[n.name] = Number(i);
      zoom(n, map.parentElement, Number(i), nodeIdx);
    });
    return map;
  }

  function cellText(p, cells, i) {
    const first = ipToInt(p.first);
    const lo = first + i * p.cell;
    const as = cells.get(i) || [];
    const r = regionOf(p, lo);
    const region = r ? '\n' + (r.kind === 'range' ? 'range ' : 'block ') + r.prefix + ' of ' + r.node : '';
    if (p.cell === 1) {
      if (!as.length) {
        const [rlo, rhi] = prefixRange(p.range);
        return intToIp(lo) + ' — ' + (lo < rlo || lo > rhi ? 'outside the IP range' : 'free') + region;
      }
      const a = as[0];
      return a.ip + ' — ' + a.state + ': ' + a.holder + (a.mac ? '\nMAC ' + a.mac : '') + (a.since ? '\nsince ' + age(a.since) + ' ago' : '') + region;
    }
    const by = {};
    for (const a of as) by[a.state] = (by[a.state] || 0) + 1;
    const lines = [intToIp(lo) + '–' + intToIp(lo + p.cell - 1) + ': ' + (Object.entries(by).map(([k, v]) => v + ' ' + k).join(', ') || 'all free')];
    for (const a of as.slice(0, 8)) lines.push(a.ip + ' ' + a.state + ': ' + a.holder);
    if (as.length > 8) lines.push('… ' + (as.length - 8) + ' more (click to zoom)');
    return lines.join('\n') + region;
  }

  function hover(e, map) {
    const i = e.target.dataset && e.target.dataset.i;
    const tip = $('tooltip');
    if (i === undefined) { tip.hidden = true; return; }
    tip.textContent = readable(cellText(map._pool, map._cells, Number(i)));
    tip.hidden = false;
    tip.style.left = Math.min(e.clientX + 12, window.innerWidth - 430) + 'px';
    tip.style.top = (e.clientY + 14) + 'px';
  }

  // zoom shows one block cell address by address.
  function zoom(n, el, i, nodeIdx) {
    const p = n.pool;
    const z = el.querySelector('.zoom');
    if (!z) return;
    const first = ipToInt(p.first) + i * p.cell;
    const sub = {
      first: intToIp(first), size: Math.min(p.cell, 256), range: p.range, cell: 1, regions: p.regions, counts: {},
      addresses: p.addresses.filter((a) => { const v = ipToInt(a.ip); return v >= first && v < first + p.cell; }),
    };
    const inner = subnetMap({ name: n.name + '-zoom', pool: sub }, nodeIdx);
    z.hidden = false;
    z.replaceChildren(h('div', { class: 'muted' }, intToIp(first) + '–' + intToIp(first + sub.size - 1) + ' ',
      h('button', { type: 'button', text: 'close', onclick: () => { delete state.zoom[n.name]; z.hidden = true; z.replaceChildren(); } })), inner);
  }

  // ---- events ----
  function addEvents(evs) {
    const fresh = evs.filter((e) => e.seq > state.eventSeq);
    if (!fresh.length) return;
    state.eventSeq = fresh[fresh.length - 1].seq;
    const list = $('events');
    const frag = document.createDocumentFragment();
    for (const e of fresh.slice().reverse()) {
      frag.append(h('li', { dataset: { kind: e.kind, seq: e.seq, search: searchText([e.kind, e.node, e.service, e.ip, e.message].filter(Boolean)) } },
        h('span', { class: 't', text: clock(e.time) }), h('span', { class: 'k' }, badge(e.kind, 'kind')),
        h('span', { class: 'm', text: e.message })));
    }
    list.prepend(frag);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    filterEvents();
  }

  function filterEvents() {
    const q = $('event-filter').value.trim().toLowerCase();
    const kind = $('event-kind').value;
    let shown = 0;
    for (const li of $('events').children) {
      const ok = (!kind || li.dataset.kind === kind) && (!q || li.dataset.search.includes(q));
      li.classList.toggle('hidden', !ok);
      if (ok) shown++;
    }
    $('event-count').textContent = shown + ' of ' + $('events').children.length;
  }
  $('event-filter').addEventListener('input', filterEvents);
  $('event-kind').addEventListener('change', filterEvents);

  // ---- search ----
  function applySearch() {
    const q = state.search;
    let matches = [];
    for (const el of document.querySelectorAll('.match')) el.classList.remove('match');
    if (q) {
      for (const el of document.querySelectorAll('main [data-search]')) {
        if (el.closest('#events')) continue;
        if (el.dataset.search.includes(q)) { el.classList.add('match'); matches.push(el); }
      }
    }
    state.matches = matches;
    $('search-count').textContent = q ? matches.length + ' found' + (matches.length ? ' (Enter: next)' : '') : '';
    return matches;
  }
  $('search').addEventListener('input', () => {
    state.search = $('search').value.trim().toLowerCase();
    state.matchIndex = -1;
    const ms = applySearch();
    if (ms.length) ms[0].scrollIntoView({ block: 'nearest', inline: 'nearest' });
  });
  $('search').addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || !state.matches || !state.matches.length) return;
    state.matchIndex = (state.matchIndex + 1) % state.matches.length;
    state.matches[state.matchIndex].scrollIntoView({ block: 'center', inline: 'nearest' });
  });

  // ---- start ----
  // The session, the snapshot and the stream are asked for at once: the
  // first of snapshot and stream to answer is rendered.
  (async () => {
    if (cfg.authReads) {
      await loadSession();
      if (!state.loggedIn) {
        setLive('offline', 'log in to read the cluster');
        if (!await askLogin('Reading the cluster needs the control token.')) return;
      }
    } else {
      loadSession();
    }
    state.started = true;
    const snapshot = loadSnapshot();
    connect();
    if (!await snapshot && state.es && state.es.readyState === EventSource.CLOSED) reconnect(jitter(state.backoff));
  })();
})();
