// MigrationPilot dashboard. Reads the JSON API of docs/API.md, steers healing, follows the
// journal's server-sent events. Plain ES2020, no build step; uPlot is the only library.
//
// Every text that comes from the API reaches the DOM through textContent / text nodes
// (the `h` helper below); innerHTML is never used.
'use strict';
(() => {
  const API = '/api/v1';
  const TOKEN_KEY = 'migrationpilot.token';
  const MIN_GAP_MS = 1000;        // refreshes are coalesced: at most one batch per second
  const FALLBACK_MS = 5000;       // refresh even when the event stream is quiet or down
  const METRICS = [
    { name: 'errorRate', fmt: (v) => fmtPct(v), tick: (v) => `${+(v * 100).toFixed(1)} %`, floor: 0.05, what: 'error rate' },
    { name: 'latencyP95', fmt: (v) => fmtDur(v), tick: (v) => (v >= 1000 ? `${+(v / 1000).toFixed(1)} s` : `${+v.toFixed(0)} ms`), floor: 10, what: 'p95 latency' },
  ];
  const PALETTE = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];

  const state = {
    projects: [],
    project: null,        // selected project's name
    runs: [],             // its runs, newest first
    runsOf: null,         // the project `runs` were loaded for
    run: null,            // selected run id
    runPinned: false,     // false: follow the latest run as new ones start
    detail: null,         // GET /runs/{run}
    logStage: '',
    logs: [],             // the run's attempts listed so far (no output), oldest first
    logsAfter: 0,         // the id past the last one listed: the next page starts there
    logKey: null,         // the id of the attempt whose output is open
    logOutputs: new Map(), // id -> its output, fetched once when opened (it never changes)
    drawn: {},            // panel -> JSON of what it last drew (skips identical redraws)
    charts: {},           // metric -> uPlot instance
  };

  // What the address asked for when the page opened (?project=P&run=R&live=off); used once.
  const asked = new URLSearchParams(location.search);

  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- DOM and formatting helpers

  /** Creates an element; string children become text nodes, never markup. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'style') Object.assign(el.style, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) if (c != null && c !== false) el.append(c);
    return el;
  }

  /** Replaces an element's children, skipping null/false (for optional parts). */
  function put(el, ...kids) {
    el.replaceChildren(...kids.flat().filter((k) => k != null && k !== false));
  }

  /** A one-line message in place of a panel's content (fits inside lists and tables too). */
  function message(container, text, kind = 'info') {
    const cls = `msg msg-${kind}`;
    const node = container.tagName === 'UL' || container.tagName === 'OL'
      ? h('li', { class: cls }, text) : h('p', { class: cls }, text);
    container.replaceChildren(node);
  }

  /** Shows a failed load in place of the panel and forgets what it drew, so data redraws. */
  function failed(panel, container, what, err) {
    delete state.drawn[panel];
    message(container, `Could not load ${what}: ${err.message}`, 'error');
  }

  /** True when `data` differs from what `panel` last drew (and records it). */
  function changed(panel, data) {
    const json = JSON.stringify(data);
    if (state.drawn[panel] === json) return false;
    state.drawn[panel] = json;
    return true;
  }

  /** A table with a hidden caption, column headers and the given rows. */
  const table = (cls, caption, head, rows) => h('table', { class: `grid ${cls}` }, h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows));

  /** Sets a <select>'s options, rebuilding them only when they change (an open list stays open). */
  function setOptions(sel, values, emptyText) {
    const opts = values.length ? values : [''];
    if ([...sel.options].map((o) => o.value).join('\n') !== opts.join('\n')) {
      const keep = sel.value;
      sel.replaceChildren(...opts.map((v) => h('option', { value: v }, v || emptyText)));
      if (opts.includes(keep)) sel.value = keep;
    }
  }

  /** Redraws `container` keeping keyboard focus on the element with the same data-key. */
  function keepFocus(container, draw) {
    const a = document.activeElement;
    const key = a && container.contains(a) ? a.dataset.key : undefined;
    draw();
    if (key !== undefined) {
      const el = [...container.querySelectorAll('[data-key]')].find((e) => e.dataset.key === key);
      if (el) el.focus();
    }
  }

  const cssToken = (s) => String(s ?? 'unknown').toLowerCase().replace(/[^a-z0-9-]/g, '');
  const thisYear = new Date().getFullYear();
  const fmtShort = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  const fmtClock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  const fmtLong = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  function fmtTime(ms) {
    if (ms == null) return '—';
    const d = new Date(ms);
    return d.getFullYear() === thisYear ? fmtShort.format(d) : fmtLong.format(d);
  }

  function fmtRel(ms, now = Date.now()) {
    const s = Math.round((now - ms) / 1000);
    if (Math.abs(s) < 3) return 'just now';
    const a = Math.abs(s);
    const t = a < 60 ? `${a} s` : a < 3600 ? `${Math.floor(a / 60)} min` : a < 86400 ? `${Math.floor(a / 3600)} h` : `${Math.floor(a / 86400)} d`;
    return s > 0 ? `${t} ago` : `in ${t}`;
  }

  function fmtDur(ms) {
    if (ms == null || !Number.isFinite(ms)) return '—';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  }

  /** Round axis steps: "30 s", "2 min", "1 h 30 min". */
  function fmtTick(ms) {
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
    return s % 3600 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min` : `${s / 3600} h`;
  }

  const fmtPct = (v) => (v == null ? '—' : `${(v * 100).toFixed(v < 0.1 ? 2 : 1)} %`);
  const fmtNum = (v, digits = 2) => (v == null ? '—' : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits }));

  /** A path as text nodes with line-break opportunities after each "/". */
  const breakable = (path) => String(path).split(/(?<=\/)/).flatMap((part, i) => (i ? [h('wbr'), part] : [part]));

  /** <time> with local date-time; `rel` adds "(12 s ago)", kept current by the ticker. */
  function timeEl(ms, rel = false) {
    if (ms == null) return h('span', { class: 'muted' }, '—');
    return h('time', { datetime: new Date(ms).toISOString(), title: fmtLong.format(new Date(ms)) },
      fmtTime(ms), rel ? h('span', { class: 'rel', 'data-rel': ms }, ` (${fmtRel(ms)})`) : null);
  }

  /** Status pill: colour, a shape and always the status as text. */
  function badge(status, text) {
    return h('span', { class: `badge s-${cssToken(status)}` },
      h('span', { class: 'mark', 'aria-hidden': 'true' }), text ?? status ?? 'unknown');
  }

  /** A run's duration: finished, or so far (kept growing by the ticker while it runs). */
  function runDuration(run) {
    if (run.startedMs == null) return h('span', { class: 'muted' }, '—');
    if (run.finishedMs != null) return h('span', {}, fmtDur(run.finishedMs - run.startedMs));
    if (!run.live) return h('span', {}, `${fmtDur((run.heartbeatMs ?? run.startedMs) - run.startedMs)} (not live)`);
    return h('span', { 'data-since': run.startedMs }, fmtDur(Date.now() - run.startedMs));
  }

  /** Up/Down/Home/End move focus between the buttons of a list (Enter/Space select them). */
  function arrowKeys(list) {
    list.addEventListener('keydown', (e) => {
      if (!['ArrowDown', 'ArrowUp', 'Home', 'End'].includes(e.key)) return;
      const items = [...list.querySelectorAll('button[data-key]')];
      const i = items.indexOf(document.activeElement);
      if (i < 0) return;
      const j = e.key === 'Home' ? 0 : e.key === 'End' ? items.length - 1
        : Math.max(0, Math.min(items.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)));
      items[j].focus();
      e.preventDefault();
    });
  }

  // ---------------------------------------------------------------- the one fetch helper

  let lastOk = 0;   // when the server last answered well (shown in the top bar)

  class ApiError extends Error {
    constructor(msg, status) { super(msg); this.status = status; }
  }

  /** Fetches API JSON; throws ApiError carrying the answer's `error` text and status. */
  async function api(path, { method = 'GET', body, token } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    // A server listening beyond loopback wants the token for reads too: send it when known.
    const bearer = token ?? $('#token').value.trim();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    let res;
    try {
      res = await fetch(API + path, { method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError('the server cannot be reached', 0);
    }
    const text = await res.text().catch(() => '');
    let data;
    try { data = text ? JSON.parse(text) : null; } catch { data = undefined; }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status} ${res.statusText}`.trim();
      throw new ApiError(msg, res.status);
    }
    if (data === undefined) throw new ApiError('the answer is not JSON', res.status);
    lastOk = Date.now();
    return data;
  }

  // ---------------------------------------------------------------- refresh scheduler

  // Panels to reload are marked dirty; one batch runs at most every MIN_GAP_MS, so a burst of
  // journal events costs one reload of each affected panel. Projects load before runs, and runs
  // before the run's panels, because each may change the selection the next one reads.
  const loaders = {
    projects: loadProjects, runs: loadRuns, detail: loadDetail, charts: loadCharts,
    healing: loadHealing, health: loadHealth, alerts: loadAlerts, logs: loadLogs,
  };
  const dirty = new Set();
  let flushTimer = null;
  let flushing = false;
  let lastFlush = 0;

  function mark(...panels) {
    panels.forEach((p) => dirty.add(p));
    if (flushTimer || flushing || !dirty.size) return;
    flushTimer = setTimeout(flush, Math.max(0, lastFlush + MIN_GAP_MS - Date.now()));
  }

  /** For the user's own clicks: reload now rather than after the gap. */
  function refreshNow(...panels) {
    clearTimeout(flushTimer);
    flushTimer = null;
    lastFlush = 0;
    mark(...panels);
  }

  async function flush() {
    flushTimer = null;
    flushing = true;
    lastFlush = Date.now();
    try {
      for (const first of ['projects', 'runs']) {
        if (dirty.delete(first)) await loaders[first]();
      }
      const rest = [...dirty];
      dirty.clear();
      await Promise.all(rest.map((p) => loaders[p]()));
      $('#updated').textContent = lastOk ? `updated ${fmtClock.format(new Date(lastOk))}` : '';
    } catch (e) {
      // Loaders catch their own failures; this is a bug of the page itself. Say so, keep going.
      $('#updated').textContent = `page error: ${e.message}`;
    } finally {
      flushing = false;
    }
    mark();
  }

  /** The periodic fallback: what can change for the shown project. */
  function fallbackRefresh() {
    const panels = ['projects', 'runs', 'healing', 'health', 'alerts'];
    if (state.run) panels.push('detail');
    if (runIsOngoing()) panels.push('charts', 'logs');
    mark(...panels);
  }

  const runIsOngoing = () => !!(state.detail && state.detail.run.id === state.run && state.detail.run.finishedMs == null);

  // ---------------------------------------------------------------- selection

  function selectProject(name, { focusRuns = false } = {}) {
    if (name === state.project) return;
    state.project = name;
    state.runs = [];
    state.run = null;
    state.runPinned = false;
    for (const p of ['projects', 'runs', 'healing', 'health', 'alerts']) delete state.drawn[p];
    message($('#runs'), 'Loading…');
    message($('#healing'), 'Loading…');
    message($('#health'), 'Loading…');
    message($('#alerts'), 'Loading…');
    $('#health-live').textContent = '';
    runChanged();
    saveLocation();
    renderProjects();
    renderSteering();
    refreshNow('runs', 'healing', 'health', 'alerts');
    if (focusRuns) pendingFocus = 'runs';
  }

  function selectRun(id) {
    state.runPinned = true;
    saveLocation();
    if (id === state.run) return;
    state.run = id;
    runChanged();
    saveLocation();
    keepFocus($('#runs'), renderRuns);
    refreshNow('detail', 'charts', 'logs');
  }

  /** The shown run changed: forget its panels' contents and reload them. */
  function runChanged() {
    state.detail = null;
    resetLogs();
    state.logKey = null;
    state.logStage = '';
    for (const p of ['detail', 'logs', 'logView', ...METRICS.map((m) => `chart-${m.name}`)]) delete state.drawn[p];
    $('#run-summary').replaceChildren();
    $('#metrics').replaceChildren();
    $('#stage-axis').replaceChildren();
    $('#run-error').hidden = true;
    const none = !state.project ? 'No project selected.' : state.runsOf === state.project ? 'This project has no runs yet.' : 'Loading…';
    message($('#stages'), state.run ? 'Loading…' : none);
    message($('#log-list'), state.run ? 'Loading…' : none);
    message($('#log-view'), 'Open an attempt to see its output.');
    $('#log-stage').value = '';
    for (const m of METRICS) chartMessage(m.name, state.run ? 'Loading…' : none);
    if (state.run) mark('detail', 'charts', 'logs');
  }

  let pendingFocus = null;   // after Enter on a project, focus moves to its runs once loaded

  function saveLocation() {
    const q = new URLSearchParams();
    if (asked.get('live')) q.set('live', asked.get('live'));
    if (state.project) q.set('project', state.project);
    if (state.run && state.runPinned) q.set('run', state.run);
    history.replaceState(null, '', `${location.pathname}${q.toString() ? `?${q}` : ''}${location.hash}`);
    const ctx = $('#context');
    put(ctx, state.project && h('strong', {}, state.project), state.run && h('span', { class: 'muted' }, ` › ${state.run}`));
    document.title = state.project ? `${state.project} · MigrationPilot` : 'MigrationPilot';
  }

  // ---------------------------------------------------------------- panel: projects

  async function loadProjects() {
    const el = $('#projects');
    try {
      const list = await api('/projects');
      state.projects = Array.isArray(list) ? list : [];
      if (!state.projects.some((p) => p.name === state.project)) {
        const pick = state.projects.find((p) => p.name === asked.get('project')) || state.projects[0];
        asked.delete('project');
        state.project = null;
        if (pick) selectProject(pick.name);
      }
      renderProjects();
      renderSteering();
    } catch (e) {
      failed('projects', el, 'projects', e);
    }
  }

  function renderProjects() {
    const el = $('#projects');
    if (!changed('projects', [state.projects, state.project])) return;
    if (!state.projects.length) return message(el, 'No projects in the store yet.');
    keepFocus(el, () => el.replaceChildren(...state.projects.map((p) => {
      const run = p.latestRun;
      const manual = p.healing && p.healing.enabled === false;
      const selected = p.name === state.project;
      return h('li', { 'data-project': p.name, 'data-status': run ? run.status : 'none' },
        h('button', {
          type: 'button', class: `pick${selected ? ' selected' : ''}`, 'data-key': p.name,
          'aria-current': selected ? 'true' : null,
          onclick: () => selectProject(p.name, { focusRuns: true }),
        },
        h('span', { class: 'pick-line' }, h('span', { class: 'name' }, p.name),
          p.live ? h('span', { class: 'tag tag-live' }, 'live') : null,
          manual ? h('span', { class: 'tag tag-manual', title: p.healing.reason || '' }, 'manual healing') : null),
        h('span', { class: 'pick-line' }, run ? badge(run.status) : h('span', { class: 'muted' }, 'no runs yet'),
          run ? h('span', { class: 'muted small' }, timeEl(run.startedMs, true)) : null)));
    })));
  }

  // ---------------------------------------------------------------- panel: runs

  async function loadRuns() {
    const p = state.project;
    const el = $('#runs');
    if (!p) return message(el, 'No project selected.');
    try {
      const runs = await api(`/projects/${enc(p)}/runs?limit=50`);
      if (p !== state.project) return;
      state.runs = Array.isArray(runs) ? runs : [];
      state.runsOf = p;
      const before = state.run;
      if (!state.run && asked.get('run')) { state.run = asked.get('run'); state.runPinned = true; }
      asked.delete('run');
      if (!state.runPinned) state.run = state.runs[0] ? state.runs[0].id : null;
      if (state.run !== before || !state.run) { runChanged(); saveLocation(); }
      keepFocus(el, renderRuns);
      renderSteering();
      if (pendingFocus === 'runs') {
        pendingFocus = null;
        const b = el.querySelector('button.selected') || el.querySelector('button');
        if (b) b.focus();
      }
    } catch (e) {
      if (p === state.project) failed('runs', el, 'runs', e);
    }
  }

  function renderRuns() {
    const el = $('#runs');
    if (!changed('runs', [state.runs, state.run])) return;
    if (!state.runs.length) return message(el, 'No runs yet for this project.');
    el.replaceChildren(...state.runs.map((r) => {
      const selected = r.id === state.run;
      return h('li', { 'data-run-id': r.id, 'data-status': r.status },
        h('button', {
          type: 'button', class: `pick${selected ? ' selected' : ''}`, 'data-key': r.id,
          'aria-current': selected ? 'true' : null, onclick: () => selectRun(r.id),
        },
        h('span', { class: 'pick-line' }, badge(r.status), h('span', { class: 'run-id mono' }, r.id)),
        h('span', { class: 'pick-line muted small' }, timeEl(r.startedMs), h('span', {}, ' · '), runDuration(r)),
        r.error ? h('span', { class: 'pick-line err small', title: r.error }, r.error) : null));
    }));
  }

  // ---------------------------------------------------------------- panel: run detail and stages

  async function loadDetail() {
    const run = state.run;
    if (!run) return;
    try {
      const d = await api(`/runs/${enc(run)}`);
      if (run !== state.run) return;
      state.detail = d;
      if (!changed('detail', d)) return;
      renderRunSummary(d.run);
      renderMetrics(d.metrics);
      renderStages();
      renderLogStages();
    } catch (e) {
      if (run !== state.run) return;
      // Stale figures must not keep moving: drop the detail, say why instead.
      state.detail = null;
      for (const sel of ['#run-summary', '#metrics', '#stage-axis']) $(sel).replaceChildren();
      $('#run-error').hidden = true;
      failed('detail', $('#stages'), `run ${run}`, e);
    }
  }

  function renderRunSummary(run) {
    put($('#run-summary'),
      badge(run.status), h('span', { class: 'mono' }, run.id),
      h('span', { class: 'kv' }, 'started ', timeEl(run.startedMs, true)),
      h('span', { class: 'kv' }, 'duration ', runDuration(run)),
      run.owner ? h('span', { class: 'kv' }, 'owner ', h('span', { class: 'mono' }, run.owner)) : null,
      run.finishedMs == null
        ? h('span', { class: `tag ${run.live ? 'tag-live' : 'tag-stale'}` }, run.live ? 'live' : 'not live')
        : null,
      run.finishedMs == null && run.heartbeatMs != null
        ? h('span', { class: 'kv' }, 'heartbeat ', h('span', { 'data-rel': run.heartbeatMs }, fmtRel(run.heartbeatMs))) : null);
    const err = $('#run-error');
    err.hidden = !run.error;
    // The error names its severity itself (`error: …`, `critical: …`).
    err.textContent = run.error || '';
  }

  function renderMetrics(m) {
    const el = $('#metrics');
    if (!m) return el.replaceChildren(h('div', { class: 'metric wide' }, h('dt', {}, 'Pipeline metrics'), h('dd', { class: 'muted' }, 'shown when the run ends')));
    const items = [
      ['Total duration', fmtDur(m.totalDuration)],
      ['Stages ok / failed', `${fmtNum(m.stagesCompleted)} / ${fmtNum(m.stagesFailed)}`],
      ['Retries', fmtNum(m.retryCount)],
      ['Healing events', fmtNum(m.healingEvents)],
      ['Rollbacks', fmtNum(m.rollbackCount)],
      ['Error rate', fmtPct(m.errorRate)],
      ['Throughput', `${fmtNum(m.throughput, 3)} /s`],
    ];
    el.replaceChildren(...items.map(([k, v]) => h('div', { class: 'metric' }, h('dt', {}, k), h('dd', {}, v))));
  }

  /** One bar per stage on a shared time axis; redrawn every second while the run goes on. */
  function renderStages() {
    const d = state.detail;
    const el = $('#stages');
    const axis = $('#stage-axis');
    if (!d) return;
    const stages = Array.isArray(d.stages) ? d.stages : [];
    if (!stages.length) { axis.replaceChildren(); return message(el, 'This run has no stages.'); }
    const run = d.run;
    const now = Date.now();
    // A run whose process is gone does not grow any more: its running stages end at the heartbeat.
    const openEnd = run.finishedMs ?? (run.live === false && run.heartbeatMs ? run.heartbeatMs : now);
    const endOf = (s) => s.finishedMs ?? (s.startedMs != null ? Math.max(s.startedMs, openEnd) : null);
    const starts = stages.map((s) => s.startedMs).filter((t) => t != null);
    const t0 = run.startedMs ?? (starts.length ? Math.min(...starts) : now);
    const t1 = Math.max(run.finishedMs ?? openEnd, ...stages.map(endOf).filter((t) => t != null));
    const span = Math.max(1000, t1 - t0);
    const frac = (t) => (t - t0) / span;
    const pct = (t) => `${100 * frac(t)}%`;

    // Axis ticks at a round step giving at most six intervals.
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400].map((s) => s * 1000);
    const step = steps.find((s) => span / s <= 6) || span;
    const ticks = [];
    for (let t = 0; t <= span; t += step) {
      // A grid line down the timeline, its label centred on it (none where it would not fit).
      ticks.push(h('span', { class: 'tick', style: { left: pct(t0 + t) } },
        t / span < 0.93 ? h('span', {}, t === 0 ? '0' : `+${fmtTick(t)}`) : null));
    }
    axis.replaceChildren(...ticks);
    // The label column fits the longest stage name (and its status), within bounds.
    const longest = Math.max(...stages.map((s) => String(s.stage).length));
    el.parentElement.style.setProperty('--label', `${Math.min(320, Math.max(170, longest * 9 + 120))}px`);

    el.replaceChildren(...stages.map((s) => {
      const started = s.startedMs != null;
      const end = endOf(s);
      const dur = s.durationMs ?? (started ? end - s.startedMs : null);
      const items = s.items != null ? ` · ${s.items} item${s.items === 1 ? '' : 's'}` : '';
      const label = (!started ? 'not started' : s.status === 'running' ? `${fmtDur(dur)} so far` : fmtDur(dur)) + items;
      // The duration goes right of the bar; near the end of the axis, inside the bar if it is
      // wide enough, else left of it.
      const a = started ? frac(s.startedMs) : 0;
      const b = started ? frac(end) : 0;
      const place = !started ? 'pending' : b < 0.75 ? 'after' : b - a > 0.25 ? 'inside' : 'before';
      const pos = { after: { left: `calc(${100 * b}% + 6px)` }, inside: { right: `calc(${100 - 100 * b}% + 8px)` }, before: { right: `calc(${100 - 100 * a}% + 6px)` }, pending: {} }[place];
      return h('li', { class: 'stage', 'data-stage': s.stage, 'data-status': s.status },
        h('div', { class: 'stage-label' }, h('span', { class: 'name', title: s.stage }, s.stage), badge(s.status)),
        h('div', { class: 'track' },
          started
            ? h('div', { class: `bar s-${cssToken(s.status)}`, style: { left: pct(s.startedMs), width: `max(3px, ${(100 * (end - s.startedMs)) / span}%)` },
              title: `${s.stage}: ${fmtTime(s.startedMs)} → ${s.finishedMs ? fmtTime(s.finishedMs) : 'now'}` })
            : null,
          h('span', { class: `bar-label ${place}`, style: pos }, label)));
    }));
  }

  // ---------------------------------------------------------------- panel: charts

  async function loadCharts() {
    const run = state.run;
    if (!run) return;
    await Promise.all(METRICS.map(async (m) => {
      try {
        const samples = await api(`/runs/${enc(run)}/samples?metric=${enc(m.name)}`);
        if (run === state.run) drawChart(m, Array.isArray(samples) ? samples : []);
      } catch (e) {
        if (run === state.run) { delete state.drawn[`chart-${m.name}`]; chartMessage(m.name, `Could not load samples: ${e.message}`, 'error'); }
      }
    }));
  }

  function chartMessage(metric, text, kind = 'info') {
    if (state.charts[metric]) { state.charts[metric].destroy(); delete state.charts[metric]; }
    message($(`#chart-${metric}`), text, kind);
  }

  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  /** One series per stage (pipeline order) plus the run's own (stage null), on shared times. */
  function drawChart(m, samples) {
    const box = $(`#chart-${m.name}`);
    if (!changed(`chart-${m.name}`, samples)) return;
    if (!samples.length) return chartMessage(m.name, 'No samples for this run yet.');
    if (typeof uPlot !== 'function') return chartMessage(m.name, 'The chart library did not load.', 'error');
    // Colours follow the pipeline's stage order, so a stage has the same colour in both charts.
    const runObj = state.runs.find((r) => r.id === state.run) || (state.detail && state.detail.run);
    const order = (runObj && runObj.stages) || [];
    const keys = [...new Set(samples.map((s) => s.stage ?? null))]
      .sort((a, b) => (a === null ? -1 : b === null ? 1 : (order.indexOf(a) + 1 || 999) - (order.indexOf(b) + 1 || 999)));
    const xs = [...new Set(samples.map((s) => s.at))].sort((a, b) => a - b);
    const col = new Map(xs.map((x, i) => [x, i]));
    const ys = keys.map(() => new Array(xs.length).fill(null));
    for (const s of samples) ys[keys.indexOf(s.stage ?? null)][col.get(s.at)] = s.value;
    const axisStyle = { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid'), width: 1 }, ticks: { stroke: cssVar('--grid') }, font: '11px system-ui, sans-serif' };
    const multiDay = xs[xs.length - 1] - xs[0] > 86400e3;
    // Under 10 s of samples (one sample, a short run), uPlot would stretch the axis over days:
    // show 10 s around them instead.
    const mid = (xs[0] + xs[xs.length - 1]) / 2000;
    const narrowRange = xs[xs.length - 1] - xs[0] < 10e3 ? { range: [mid - 5, mid + 5] } : {};
    const xTick = (v) => (multiDay ? fmtShort : fmtClock).format(new Date(v * 1000));
    const opts = {
      width: Math.max(240, box.clientWidth),
      height: 190,
      scales: { x: { time: true, ...narrowRange }, y: { range: (u, min, max) => [0, Math.max((max || 0) * 1.15, m.floor)] } },
      axes: [{ ...axisStyle, space: 70, values: (u, vals) => vals.map(xTick) }, { ...axisStyle, size: 60, values: (u, vals) => vals.map(m.tick) }],
      series: [
        { value: (u, v) => (v == null ? '—' : fmtTime(v * 1000)) },
        ...keys.map((k, i) => ({
          label: k ?? 'whole run', value: (u, v) => m.fmt(v), spanGaps: true,
          stroke: k === null ? '#374151' : PALETTE[(order.includes(k) ? order.indexOf(k) : i) % PALETTE.length],
          width: k === null ? 2 : 1.5, dash: k === null ? [6, 4] : undefined, points: { show: xs.length < 12 },
        })),
      ],
      legend: { live: false },   // series names only; click one to hide it
    };
    if (state.charts[m.name]) state.charts[m.name].destroy();
    box.replaceChildren();
    box.setAttribute('role', 'img');
    const last = ys[0][ys[0].length - 1];
    box.setAttribute('aria-label', `${m.what} over time for ${keys.map((k) => k ?? 'the whole run').join(', ')}; ${samples.length} samples${keys[0] === null && last != null ? `, latest for the run ${m.fmt(last)}` : ''}`);
    state.charts[m.name] = new uPlot(opts, [xs.map((x) => x / 1000), ...ys], box);
  }

  // Charts follow their box's width.
  const resizer = typeof ResizeObserver === 'function' ? new ResizeObserver(() => {
    for (const m of METRICS) {
      const u = state.charts[m.name];
      const w = $(`#chart-${m.name}`).clientWidth;
      if (u && w && Math.abs(u.width - w) > 2) u.setSize({ width: w, height: 190 });
    }
  }) : null;

  // ---------------------------------------------------------------- panel: healing history

  async function loadHealing() {
    const p = state.project;
    const el = $('#healing');
    if (!p) return;
    try {
      const recs = await api(`/projects/${enc(p)}/healing?limit=50`);
      if (p !== state.project || !changed('healing', recs)) return;
      if (!recs.length) return message(el, 'No healing decisions recorded for this project.');
      el.replaceChildren(table('healing-table', `Healing decisions of ${p}`,
        ['Time', 'Stage', 'Item', 'Strategy', 'Trigger', 'Action', 'Outcome', 'Detail'],
        recs.map((r) => {
          const trig = r.trigger || {};
          return h('tr', { class: 'record', 'data-outcome': r.outcome, 'data-run': r.run },
            h('td', { class: 'nowrap', title: `run ${r.run}` }, timeEl(r.at)),
            h('td', { class: 'stage' }, r.stage ?? '—'),
            h('td', { class: 'item mono small' }, r.item == null ? '—' : breakable(r.item)),
            h('td', { class: 'strategy' }, r.strategy),
            h('td', { class: 'trigger' }, h('span', { class: 'tag' }, trig.kind ?? '?'), ' ', trig.description ?? '',
              trig.observed != null ? h('span', { class: 'muted' }, ` (observed ${typeof trig.observed === 'number' ? fmtNum(trig.observed, 4) : JSON.stringify(trig.observed)})`) : null),
            h('td', { class: 'action' }, h('strong', {}, r.action)),
            h('td', { class: 'outcome' }, h('span', { class: `outcome o-${cssToken(r.outcome)}` }, r.outcome)),
            h('td', { class: 'detail small' }, r.detail ?? ''));
        })));
    } catch (e) {
      if (p === state.project) failed('healing', el, 'the healing history', e);
    }
  }

  // ---------------------------------------------------------------- panel: health

  async function loadHealth() {
    const p = state.project;
    const el = $('#health');
    if (!p) return;
    try {
      const hl = await api(`/projects/${enc(p)}/health`);
      if (p !== state.project || !changed('health', hl)) return;
      const note = $('#health-live');
      note.dataset.live = String(!!hl.live);
      note.replaceChildren(hl.live ? badge('live', 'live figures') : h('span', {}, 'Not live: figures as the latest run last saw them'));
      const checks = Array.isArray(hl.checks) ? hl.checks : [];
      if (!checks.length) return message(el, 'The latest run declares no health checks.');
      el.replaceChildren(table('health-table', `Health checks of ${p}`,
        ['Check', 'Stage', 'Status', 'Since', 'Last checked', 'Target / last error'],
        checks.map((c) => h('tr', { class: 'check', 'data-check': c.check, 'data-status': c.status ?? 'unchecked' },
          h('th', { scope: 'row', class: 'name' }, c.check),
          h('td', {}, c.stage ?? h('span', { class: 'muted' }, 'whole run')),
          h('td', { class: 'status' }, badge(c.status ?? 'unchecked', c.status ?? 'not checked yet')),
          h('td', { class: 'nowrap' }, timeEl(c.changedMs, true)),
          h('td', { class: 'nowrap' }, timeEl(c.checkedMs, true)),
          h('td', { class: 'small' }, c.lastError ? h('span', { class: 'err' }, c.lastError) : h('span', { class: 'mono' }, c.target ?? '—'))))));
    } catch (e) {
      if (p !== state.project) return;
      $('#health-live').replaceChildren();
      failed('health', el, 'health', e);
    }
  }

  // ---------------------------------------------------------------- panel: alerts

  /** An alert's runbook: a link when it is a web address, its text otherwise (never a
   *  `javascript:` or other scheme a click would run). */
  function runbookLink(runbook) {
    return /^https?:\/\//i.test(runbook)
      ? h('a', { href: runbook, target: '_blank', rel: 'noopener noreferrer' }, 'Runbook')
      : `Runbook: ${runbook}`;
  }

  async function loadAlerts() {
    const p = state.project;
    const el = $('#alerts');
    if (!p) return;
    try {
      const rows = await api(`/projects/${enc(p)}/alerts?limit=50`);
      if (p !== state.project || !changed('alerts', rows)) return;
      const list = Array.isArray(rows) ? rows : [];
      if (!list.length) return message(el, 'No alerts raised for this project.');
      el.replaceChildren(table('alerts-table', `Alerts of ${p}`,
        ['Alert', 'Stage', 'State', 'Since', 'Ended', 'Deliveries'],
        list.map((r) => {
          const a = r.alert || {};
          const state_ = a.status === 'firing' ? a.severity : 'resolved';
          return h('tr', { class: 'alert-row', 'data-status': a.status, 'data-severity': a.severity, 'data-fingerprint': r.fingerprint },
            h('th', { scope: 'row' }, h('div', { class: 'name' }, a.title ?? a.name), h('div', { class: 'small muted' }, a.message ?? ''),
              a.runbook ? h('div', { class: 'small runbook' }, runbookLink(a.runbook)) : null),
            h('td', {}, a.stage ?? h('span', { class: 'muted' }, 'whole run'), a.subject ? h('div', { class: 'small muted' }, a.subject) : null),
            h('td', { class: 'status' }, badge(state_ === 'resolved' ? 'succeeded' : state_ === 'critical' ? 'failed' : 'rolling-back', state_)),
            h('td', { class: 'nowrap' }, timeEl(a.startsAt, true)),
            h('td', { class: 'nowrap' }, a.endsAt ? timeEl(a.endsAt, true) : h('span', { class: 'muted' }, '—')),
            h('td', { class: 'small' }, ...(r.deliveries || []).map((d) => h('div', { class: `delivery d-${d.status}` },
              `${d.channel} · ${d.about} · ${d.status}`, d.lastError ? h('span', { class: 'err' }, ` (${d.lastError})`) : ''))));
        })));
    } catch (e) {
      if (p !== state.project) return;
      failed('alerts', el, 'alerts', e);
    }
  }

  // ---------------------------------------------------------------- panel: logs

  // The list is read in pages of attempts without their output, and only what is new is asked
  // for again while a run goes on; an attempt's output is fetched when it is opened, once.
  const LOG_PAGE = 500;
  const LOG_PAGES_PER_LOAD = 20;    // a long run's list fills in over a few refreshes
  const logKey = (l) => String(l.id);

  function resetLogs() {
    state.logs = [];
    state.logsAfter = 0;
    state.logOutputs = new Map();
  }

  async function loadLogs() {
    const run = state.run;
    const stage = state.logStage;
    const list = $('#log-list');
    if (!run) return;
    try {
      let added = 0;
      for (let page = 0; page < LOG_PAGES_PER_LOAD; page++) {
        const q = new URLSearchParams({ after: String(state.logsAfter), limit: String(LOG_PAGE) });
        if (stage) q.set('stage', stage);
        const logs = await api(`/runs/${enc(run)}/logs?${q}`);
        if (run !== state.run || stage !== state.logStage) return;
        const got = Array.isArray(logs) ? logs : [];
        state.logs.push(...got);
        added += got.length;
        if (got.length) state.logsAfter = got[got.length - 1].id;
        if (got.length < LOG_PAGE) break;
      }
      if (!added && state.drawn.logs !== undefined) return;
      state.drawn.logs = String(state.logs.length);
      if (!state.logs.length) message(list, stage ? `No attempts of ${stage} yet.` : 'No attempts yet.');
      else keepFocus(list, () => list.replaceChildren(...state.logs.map((l) => {
        const key = logKey(l);
        const open = key === state.logKey;
        return h('li', { 'data-stage': l.stage, 'data-log': key },
          h('button', { type: 'button', class: `pick${open ? ' selected' : ''}`, 'data-key': key, 'aria-current': open ? 'true' : null, onclick: () => openLog(key) },
            h('span', { class: 'pick-line' }, h('span', { class: 'mono item' }, l.item ?? '(whole stage)'), h('span', { class: 'tag' }, `#${l.attempt}`),
              l.stderrBytes > 0 ? h('span', { class: 'tag tag-err' }, 'stderr') : null),
            h('span', { class: 'pick-line small muted' }, `${l.stage} · ${fmtTime(l.at)} · ${fmtBytes(l.stdoutBytes + l.stderrBytes)}`)));
      })));
      renderLogView();
    } catch (e) {
      if (run === state.run) failed('logs', list, 'logs', e);
    }
  }

  const fmtBytes = (n) => (n < 1024 ? `${n} B` : `${fmtNum(n / 1024, 1)} KiB`);

  /** Fetches an opened attempt's output once, then shows it. */
  async function loadLogOutput(key) {
    const run = state.run;
    try {
      const out = await api(`/runs/${enc(run)}/logs/${enc(key)}`);
      if (run !== state.run) return;
      state.logOutputs.set(key, out);
    } catch (e) {
      if (run !== state.run) return;
      state.logOutputs.set(key, { error: e.message });
    }
    if (state.logKey === key) {
      delete state.drawn.logView;
      renderLogView();
    }
  }

  function openLog(key) {
    state.logKey = key;
    delete state.drawn.logs;
    delete state.drawn.logView;
    for (const b of $('#log-list').querySelectorAll('button[data-key]')) {
      const on = b.dataset.key === key;
      b.classList.toggle('selected', on);
      if (on) b.setAttribute('aria-current', 'true'); else b.removeAttribute('aria-current');
    }
    logJustOpened = key;
    renderLogView();
  }

  let logJustOpened = null;   // the attempt opened by a click, whose output is not shown yet

  function renderLogView() {
    const view = $('#log-view');
    const key = state.logKey;
    const listed = state.logs.find((x) => logKey(x) === key);
    const l = listed && state.logOutputs.get(key);
    if (!changed('logView', listed ? (l || 'loading') : null)) return;
    if (!listed) return message(view, 'Open an attempt to see its output (Escape closes it).');
    if (!l) {
      message(view, 'Loading its output…');
      loadLogOutput(key);
      return;
    }
    if (l.error) return message(view, `Could not load its output: ${l.error}`, 'error');
    const stream = (name, text, cut) => h('div', { class: 'stream' },
      h('h4', {}, name, cut > 0 ? h('span', { class: 'cut' }, ` — first ${fmtNum(cut, 0)} bytes cut, the tail is kept`) : null),
      h('pre', { tabindex: '0', class: text ? '' : 'empty', 'aria-label': `${name} of ${l.stage} ${l.item ?? ''} attempt ${l.attempt}` }, text || '(empty)'));
    view.replaceChildren(
      h('h3', { class: 'log-title' }, `${l.stage} · ${l.item ?? 'whole stage'} · attempt ${l.attempt}`, h('span', { class: 'muted small' }, ` · ${fmtTime(l.at)}`)),
      stream('stdout', l.stdout, l.stdoutCut), stream('stderr', l.stderr, l.stderrCut));
    if (logJustOpened === key) {
      logJustOpened = null;
      // The kept text is the tail: show its end, where the error usually is.
      for (const pre of view.querySelectorAll('pre')) pre.scrollTop = pre.scrollHeight;
      const first = view.querySelector('pre');
      if (first) first.focus({ preventScroll: true });
    }
  }

  function renderLogStages() {
    setOptions($('#log-stage'), ['', ...((state.detail && state.detail.run.stages) || [])], 'All stages');
  }

  // ---------------------------------------------------------------- panel: steering

  /** Stages and strategies come from the project's latest run: the server checks against it. */
  function renderSteering() {
    const proj = state.projects.find((p) => p.name === state.project);
    const latest = state.runs[0] || (proj && proj.latestRun) || null;
    setOptions($('#steer-trigger [name=stage]'), (latest && latest.stages) || [], 'no stages (no run yet)');
    setOptions($('#steer-configure [name=strategy]'), (latest && latest.strategies) || [], 'no strategies (no run yet)');
    const mode = $('#healing-mode');
    if (!proj) return mode.replaceChildren();
    const hl = proj.healing || {};
    put(mode, `Healing for ${proj.name}: `,
      hl.enabled === false ? badge('manual', 'manual mode') : badge('automatic', 'automatic'),
      hl.enabled === false && hl.reason && h('span', {}, ` — ${hl.reason}`),
      hl.updatedMs && h('span', { class: 'muted' }, ' · changed ', timeEl(hl.updatedMs, true)));
  }

  /** Reads a steering form into the JSON body API.md gives for its action. */
  function steeringBody(form) {
    const f = new FormData(form);
    const v = (k) => String(f.get(k) ?? '').trim();
    switch (form.dataset.action) {
      case 'disable': return v('reason') ? { reason: v('reason') } : {};
      case 'enable': return undefined;
      case 'trigger': return { action: v('action'), stage: v('stage') };
      case 'configure': {
        const body = { strategy: v('strategy') };
        for (const k of ['maxAttempts', 'cooldown', 'priority']) if (v(k) !== '') body[k] = Number(v(k));
        if (v('enabled')) body.enabled = v('enabled') === 'true';
        if (v('mode')) body.mode = v('mode');
        return body;
      }
      default: throw new Error(`unknown action ${form.dataset.action}`);
    }
  }

  async function steer(form) {
    const action = form.dataset.action;
    const project = state.project;
    const out = $('#steer-result');
    const button = form.querySelector('button[type=submit]');
    const say = (ok, ...text) => {
      out.dataset.ok = ok === null ? 'pending' : String(ok);
      out.dataset.action = action;
      out.replaceChildren(h('span', { class: 'muted' }, `${fmtTime(Date.now())} `), ...text);
    };
    if (!project) return say(false, 'Select a project first.');
    const token = $('#token').value.trim();
    let body;
    try { body = steeringBody(form); } catch (e) { return say(false, e.message); }
    const what = action === 'trigger' ? `${body.action} on ${body.stage}` : action === 'configure' ? `configure ${body.strategy}` : `${action} healing`;
    say(null, `${project}: ${what}… sending`);
    out.scrollIntoView({ block: 'nearest' });
    button.disabled = true;
    try {
      const answer = await api(`/projects/${enc(project)}/healing/${action}`, { method: 'POST', body, token });
      say(true, badge('succeeded', 'done'), ` ${project}: ${what}. The server answered `, h('code', {}, JSON.stringify(answer)));
      refreshNow('projects', 'healing');
    } catch (e) {
      const hint = e.status === 401 ? ' Enter the API token above.'
        : e.status === 403 ? ' The token is wrong, or the server has no token configured.' : '';
      say(false, badge('failed', e.status ? `refused (${e.status})` : 'not sent'), ` ${project}: ${what}: ${e.message}.${hint}`);
      if (e.status === 401 || e.status === 403) $('#token').focus();
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- live: event stream and ticker

  /** Maps a journal event of the shown project to the panels it can change. */
  function onJournal(msg) {
    let ev;
    try { ev = JSON.parse(msg.data); } catch { return; }
    if (!ev || typeof ev !== 'object') return;
    const kind = String(ev.kind || '');
    if (kind.startsWith('run-')) mark('projects');
    if (ev.project !== state.project) return;
    if (kind.startsWith('run-') || kind.startsWith('stage-') || kind.startsWith('rollback-')) mark('runs');
    if (ev.run === state.run || !state.runPinned) {
      if (kind === 'metrics-sampled') mark('charts'); else mark('detail');
      if (kind.startsWith('attempt-')) mark('logs');
    }
    if (kind.startsWith('healing-')) mark('healing');
    if (kind === 'health-changed') mark('health');
    if (kind.startsWith('alert-') || kind.startsWith('run-') || kind === 'rollback-started' || kind.startsWith('healing-')) mark('alerts');
  }

  let source = null;
  function connect() {
    const live = $('#live');
    const show = (st, text) => { live.dataset.state = st; live.querySelector('.live-text').textContent = text; };
    if (typeof EventSource !== 'function') return show('off', 'no live updates');
    // `?live=off` skips the stream (polling stays): an open stream keeps headless Chromium's
    // --virtual-time-budget from ever ending, so --dump-dom / --screenshot need this.
    if (asked.get('live') === 'off') return show('off', 'live updates off');
    const bearer = $('#token').value.trim();
    source = new EventSource(`${API}/events/stream${bearer ? `?access_token=${enc(bearer)}` : ''}`);
    source.addEventListener('open', () => { show('live', 'live'); fallbackRefresh(); });
    source.addEventListener('journal', onJournal);
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a non-stream answer): try again ourselves.
        show('off', 'disconnected, retrying');
        source.close();
        setTimeout(connect, FALLBACK_MS);
      } else {
        show('reconnecting', 'reconnecting…');
      }
    });
  }

  /** Every second: relative times, running durations and the growing stage bars. */
  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll('[data-rel]')) {
      const t = Number(el.dataset.rel);
      el.textContent = el.classList.contains('rel') ? ` (${fmtRel(t, now)})` : fmtRel(t, now);
    }
    for (const el of document.querySelectorAll('[data-since]')) el.textContent = fmtDur(now - Number(el.dataset.since));
    if (runIsOngoing() && state.detail.run.live !== false) renderStages();
  }

  // ---------------------------------------------------------------- start

  function start() {
    const token = $('#token');
    try { token.value = sessionStorage.getItem(TOKEN_KEY) || ''; } catch { /* storage blocked */ }
    token.addEventListener('input', () => {
      try {
        if (token.value) sessionStorage.setItem(TOKEN_KEY, token.value); else sessionStorage.removeItem(TOKEN_KEY);
      } catch { /* storage blocked: the field still works for this page */ }
    });
    $('#token-form').addEventListener('submit', (e) => e.preventDefault());
    for (const form of document.querySelectorAll('#steering form')) {
      form.addEventListener('submit', (e) => { e.preventDefault(); steer(form); });
    }
    $('#log-stage').addEventListener('change', (e) => {
      state.logStage = e.target.value;
      state.logs = [];
      state.logsAfter = 0;
      delete state.drawn.logs;
      message($('#log-list'), 'Loading…');
      refreshNow('logs');
    });
    // Escape in the log viewer closes it and returns focus to its attempt.
    $('#log-view').addEventListener('keydown', (e) => {
      if (e.key !== 'Escape' || !state.logKey) return;
      const key = state.logKey;
      state.logKey = null;
      openLog(null);
      const b = [...$('#log-list').querySelectorAll('button[data-key]')].find((x) => x.dataset.key === key);
      if (b) b.focus();
    });
    arrowKeys($('#projects'));
    arrowKeys($('#runs'));
    arrowKeys($('#log-list'));
    if (resizer) for (const m of METRICS) resizer.observe($(`#chart-${m.name}`));

    mark('projects');
    connect();
    setInterval(fallbackRefresh, FALLBACK_MS);
    setInterval(tick, 1000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
