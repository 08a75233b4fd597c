// Tributary's dashboard: one page, hash routes, the gateway's own REST API polled every 2 s.
// No framework and no build step: this file is served as it is, compiled into the gateway.
'use strict';

const POLL_MS = 2000;
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => (
  { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const enc = encodeURIComponent;

// ---- the API -------------------------------------------------------------------------------

/** A call to the gateway; the header marks it as the dashboard's own (CSRF check, no popup). */
async function api(path, options = {}) {
  const headers = Object.assign({ 'X-Requested-With': 'tributary-ui' }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: 'same-origin' }));
  if (response.status === 401) {
    location.href = '/ui/login';
    throw new Error('logged out');
  }
  return response;
}

async function getJson(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(`${r.status}: ${(await r.text()).trim()}`);
  return r.json();
}

/** Sends a write and reports the outcome in the message area; whether it succeeded. */
async function send(method, path, body, done) {
  try {
    const r = await api(path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = (await r.text()).trim();
    if (!r.ok) {
      say(`${method} ${path} failed: ${r.status} ${text}`, true);
      return false;
    }
    say(done);
    return true;
  } catch (e) {
    say(`${method} ${path} failed: ${e.message}`, true);
    return false;
  }
}

// ---- small renderers -----------------------------------------------------------------------

function say(text, bad = false) {
  const m = $('#msg');
  if (!m) return;
  m.textContent = text;
  m.className = bad ? 'error' : 'ok';
}

/** Replaces `el`'s content when it changed, keeping keyboard focus on the same control. */
function render(el, html) {
  if (!el || el.dataset.html === html) return;
  const active = document.activeElement;
  const key = el.contains(active) ? active.dataset.key : undefined;
  el.innerHTML = html;
  el.dataset.html = html;
  if (key) el.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

function spark(values, label) {
  if (!values || values.length === 0) return '';
  const max = Math.max(1, ...values);
  const step = 90 / Math.max(1, values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(21 - (v / max) * 20).toFixed(1)}`).join(' ');
  return `<svg class="spark" viewBox="0 0 90 22" role="img" aria-label="${esc(label)}"><polyline points="${points}"/></svg>`;
}

const num = (n, digits = 0) => (n === undefined || n === null ? '–' : Number(n).toFixed(digits));
const ms = (n) => (n === undefined || n === null ? '–' : n < 10 ? `${n.toFixed(2)} ms` : `${Math.round(n)} ms`);
const pct = (n) => (n ? `${(n * 100).toFixed(1)}%` : '0%');
const tags = (list) => list.map((t) => `<span class="tag">${esc(t)}</span>`).join('');
const time = (msSinceEpoch) => (msSinceEpoch ? new Date(msSinceEpoch).toLocaleTimeString() : '–');
function age(msCount) {
  if (msCount === undefined || msCount === null) return '–';
  const s = Math.round(msCount / 1000);
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}
const topicsOf = (f) => ((f.annotations || {}).topic || '').split(',').map((t) => t.trim()).filter(Boolean);
const keyOf = (f) => `${f.name}.${f.namespace}`;
function table(headers, rows, empty) {
  if (rows.length === 0) return `<p class="muted">${esc(empty)}</p>`;
  const head = headers.map((h) => `<th scope="col"${h.num ? ' class="num"' : ''}>${esc(h.label || h)}</th>`).join('');
  return `<div class="scroll"><table><thead><tr>${head}</tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}
function kv(object, hidden) {
  const entries = Object.entries(object || {});
  if (entries.length === 0) return '<p class="muted">None.</p>';
  return `<dl class="kv">${entries.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${hidden ? '<span class="muted">(value hidden)</span>' : esc(v)}</dd>`).join('')}</dl>`;
}
function lines(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const i = line.search(/[=:]/);
    if (line.trim() && i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

// ---- views ---------------------------------------------------------------------------------

/** Polls `refresh` every POLL_MS while the view is shown; reports freshness in the header. */
function poll(refresh) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    const live = $('#live');
    try {
      await refresh();
      live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      live.classList.remove('stale');
    } catch (e) {
      live.textContent = `not updating: ${e.message}`;
      live.classList.add('stale');
    }
    if (!stopped) setTimeout(tick, POLL_MS);
  };
  tick();
  return () => { stopped = true; };
}

function functionsView(main) {
  main.innerHTML = `<h1 tabindex="-1">Functions</h1><p id="msg" role="status"></p><div id="functions"></div>`;
  return poll(async () => {
    const [functions, activity] = await Promise.all([getJson('/system/functions'), getJson('/system/activity')]);
    const schedules = Object.fromEntries(activity.schedules.map((s) => [s.function, s]));
    functions.sort((a, b) => a.name.localeCompare(b.name));
    const rows = functions.map((f) => {
      const s = activity.functions[keyOf(f)] || {};
      const ready = f.availableReplicas > 0;
      const status = ready ? '<span class="ok">Ready</span>' : f.replicas === 0 ? '<span class="muted">Scaled to zero</span>' : '<span class="warn">Not ready</span>';
      const schedule = schedules[f.name];
      return `<tr data-function="${esc(f.name)}">
        <td><a href="#/function/${enc(f.name)}" data-key="fn-${esc(f.name)}">${esc(f.name)}</a></td>
        <td>${status}</td>
        <td class="num">${f.availableReplicas}/${f.replicas}</td>
        <td class="num invocations">${num(s.total ?? f.invocationCount)}</td>
        <td class="num">${num(s.rate, 1)}</td>
        <td class="num${s.errorRate > 0 ? ' bad' : ''}">${pct(s.errorRate)}</td>
        <td class="num">${ms(s.p50Ms)}</td>
        <td class="num">${ms(s.p99Ms)}</td>
        <td class="hide-narrow">${spark(s.callsTrend, `calls of ${f.name}, last ${s.callsTrend ? s.callsTrend.length * activity.slotSeconds : 0} s`)}</td>
        <td>${tags(topicsOf(f))}</td>
        <td>${schedule ? `<code>${esc(schedule.schedule)}</code>` : ''}</td>
      </tr>`;
    });
    render($('#functions'), table(
      ['Name', 'Status', { label: 'Replicas', num: true }, { label: 'Invocations', num: true }, { label: 'Rate/s', num: true },
        { label: 'Errors', num: true }, { label: 'p50', num: true }, { label: 'p99', num: true }, 'Trend (2 min)', 'Topics', 'Schedule'],
      rows, 'No functions deployed yet: deploy one from the Deploy page or with faas-cli.'));
  });
}

function functionView(main, name) {
  main.innerHTML = `
    <h1 tabindex="-1">${esc(name)}</h1>
    <p id="msg" role="status"></p>
    <section class="card" aria-labelledby="h-state"><h2 id="h-state">State</h2><div id="state"></div>
      <div class="actions">
        <form id="scale" class="inline"><label for="replicas">Replicas</label><input id="replicas" type="number" min="0" required><button type="submit">Scale</button></form>
        <button id="delete" class="danger" type="button">Delete function</button>
      </div>
    </section>
    <section class="card" aria-labelledby="h-invoke"><h2 id="h-invoke">Invoke</h2>
      <form id="invoke" class="grid">
        <label for="method">Method</label><select id="method"><option>POST</option><option>GET</option><option>PUT</option><option>PATCH</option><option>DELETE</option></select>
        <label for="path">Path</label><input id="path" value="/" spellcheck="false">
        <label for="headers">Headers</label><textarea id="headers" placeholder="Content-Type: text/plain" spellcheck="false"></textarea>
        <label for="body">Body</label><textarea id="body" spellcheck="false"></textarea>
        <span></span><div><button type="submit">Invoke</button></div>
      </form>
      <div id="answer" aria-live="polite"></div>
    </section>
    <section class="card" aria-labelledby="h-config"><h2 id="h-config">Configuration</h2><div id="config"></div></section>
    <section class="card" aria-labelledby="h-logs"><h2 id="h-logs">Logs</h2><pre id="logs" class="out" tabindex="0" aria-label="Log tail">waiting for logs…</pre></section>
    <section class="card" aria-labelledby="h-update"><h2 id="h-update">Update</h2>
      <form id="update"><label for="deployment">Deployment (JSON, as PUT /system/functions takes it)</label><textarea id="deployment" rows="12" spellcheck="false"></textarea>
      <div class="actions"><button type="submit">Update function</button></div></form>
    </section>`;
  const path = `/system/function/${enc(name)}`;
  const loadConfig = async () => {
    const f = await getJson(path);
    render($('#config'), `<h3>Annotations</h3>${kv(f.annotations)}<h3>Labels</h3>${kv(f.labels)}
      <h3>Environment</h3>${kv(f.envVars)}<h3>Secrets</h3>${f.secrets && f.secrets.length ? `${tags(f.secrets)} <span class="muted">(values never shown)</span>` : '<p class="muted">None.</p>'}`);
    const deployment = { service: f.name, namespace: f.namespace, image: f.image, envProcess: f.envProcess, envVars: f.envVars, labels: f.labels, annotations: f.annotations, secrets: f.secrets, constraints: f.constraints, limits: f.limits, requests: f.requests, readOnlyRootFilesystem: f.readOnlyRootFilesystem };
    $('#deployment').value = JSON.stringify(deployment, (k, v) => (v === null ? undefined : v), 2);
    $('#replicas').value = f.replicas;
  };
  loadConfig().catch((e) => say(e.message, true));
  $('#scale').addEventListener('submit', async (e) => {
    e.preventDefault();
    const replicas = Number($('#replicas').value);
    if (!confirm(`Scale ${name} to ${replicas} replicas?`)) return;
    await send('POST', `/system/scale-function/${enc(name)}`, { serviceName: name, replicas }, `Scaled ${name} to ${replicas}.`);
  });
  $('#delete').addEventListener('click', async () => {
    if (!confirm(`Delete ${name}? Its replicas stop and it can no longer be invoked.`)) return;
    if (await send('DELETE', '/system/functions', { functionName: name }, `Deleted ${name}.`)) location.hash = '#/functions';
  });
  $('#update').addEventListener('submit', async (e) => {
    e.preventDefault();
    let deployment;
    try { deployment = JSON.parse($('#deployment').value); } catch (err) { say(`The deployment is not valid JSON: ${err.message}`, true); return; }
    if (!confirm(`Update ${name}? Its replicas are replaced.`)) return;
    if (await send('PUT', '/system/functions', deployment, `Updated ${name}.`)) loadConfig();
  });
  $('#invoke').addEventListener('submit', (e) => { e.preventDefault(); invoke(name); });
  const stopLogs = followLogs(name);
  const stopPoll = poll(async () => {
    const [f, activity] = await Promise.all([getJson(path), getJson('/system/activity')]);
    const s = activity.functions[keyOf(f)] || {};
    const schedule = activity.schedules.find((x) => x.function === f.name);
    render($('#state'), `<dl class="kv">
      <dt>Replicas</dt><dd>${f.availableReplicas} available of ${f.replicas}</dd>
      <dt>Image</dt><dd>${esc(f.image)}</dd><dt>Process</dt><dd><code>${esc(f.envProcess || '')}</code></dd>
      <dt>Invocations</dt><dd>${num(s.total ?? f.invocationCount)} (${num(s.totalErrors || 0)} failed)</dd>
      <dt>Rate</dt><dd>${num(s.rate, 1)}/s ${spark(s.callsTrend, 'calls per interval')}</dd>
      <dt>Error rate</dt><dd>${pct(s.errorRate)} (last minute)</dd>
      <dt>Latency</dt><dd>p50 ${ms(s.p50Ms)} · p99 ${ms(s.p99Ms)} ${spark(s.p99Trend, 'p99 latency per interval')}</dd>
      <dt>Topics</dt><dd>${tags(topicsOf(f)) || '<span class="muted">none</span>'}</dd>
      ${schedule ? `<dt>Next firings</dt><dd>${schedule.error ? `<span class="bad">${esc(schedule.error)}</span>` : schedule.next.map((t) => esc(new Date(t).toLocaleString())).join(', ')}</dd>` : ''}
      </dl>`);
  });
  return () => { stopPoll(); stopLogs(); };
}

async function invoke(name) {
  const method = $('#method').value;
  const path = $('#path').value.startsWith('/') ? $('#path').value : `/${$('#path').value}`;
  const headers = lines($('#headers').value);
  const started = performance.now();
  const options = { method, headers };
  if (method !== 'GET') options.body = $('#body').value;
  try {
    const r = await fetch(`/function/${enc(name)}${path}`, options);
    const body = await r.text();
    const took = performance.now() - started;
    const shown = [...r.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('\n');
    $('#answer').innerHTML = `<p><strong class="${r.ok ? 'ok' : 'bad'}" id="answer-status">${r.status} ${esc(r.statusText)}</strong> in ${took.toFixed(1)} ms</p>
      <h3>Headers</h3><pre class="out">${esc(shown)}</pre><h3>Body</h3><pre class="out" id="answer-body">${esc(body)}</pre>`;
  } catch (e) {
    $('#answer').innerHTML = `<p class="error">The call failed: ${esc(e.message)}</p>`;
  }
}

/** Streams the function's log lines (`follow=true`); stops when the view goes. */
function followLogs(name) {
  const controller = new AbortController();
  const out = $('#logs');
  const kept = [];
  const show = (line) => {
    kept.push(line);
    if (kept.length > 500) kept.shift();
    out.textContent = kept.join('\n');
    out.scrollTop = out.scrollHeight;
  };
  (async () => {
    try {
      const r = await api(`/system/logs?name=${enc(name)}&tail=50&follow=true`, { signal: controller.signal });
      if (!r.ok) { out.textContent = `Logs are not available: ${r.status} ${(await r.text()).trim()}`; return; }
      out.textContent = '';
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let i;
        while ((i = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, i);
          buffer = buffer.slice(i + 1);
          try {
            const m = JSON.parse(line);
            show(`${m.timestamp} ${m.instance || ''} ${m.text}`);
          } catch { if (line.trim()) show(line); }
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') out.textContent += `\n(log stream ended: ${e.message})`;
    }
  })();
  return () => controller.abort();
}

function flowView(main) {
  main.innerHTML = `<h1 tabindex="-1">Event flow</h1>
    <p class="muted">Topics come from the functions' <code>topic</code> annotations; traffic from the <code>X-Connector</code> and <code>X-Topic</code> headers connectors send with every call.</p>
    <section aria-labelledby="h-topics"><h2 id="h-topics">Topics → functions</h2><div id="topics"></div></section>
    <section aria-labelledby="h-flows"><h2 id="h-flows">Connector traffic</h2><div id="flows"></div></section>
    <section aria-labelledby="h-cron"><h2 id="h-cron">Next cron firings</h2><div id="cron"></div></section>
    <section aria-labelledby="h-recent"><h2 id="h-recent">Recent calls</h2><div id="recent"></div></section>`;
  return poll(async () => {
    const [functions, a] = await Promise.all([getJson('/system/functions'), getJson('/system/activity')]);
    const topics = new Map();
    for (const f of functions) for (const t of topicsOf(f)) topics.set(t, [...(topics.get(t) || []), f.name]);
    const byTopic = (t) => a.flows.filter((f) => f.topic === t);
    render($('#topics'), table(['Topic', 'Functions', 'Connectors seen', { label: 'Calls', num: true }, { label: 'Rate/s', num: true }, { label: 'Failures', num: true }],
      [...topics.keys()].sort().map((t) => {
        const flows = byTopic(t);
        const sum = (k) => flows.reduce((n, f) => n + (k(f) || 0), 0);
        return `<tr><td><code>${esc(t)}</code></td><td>${topics.get(t).map((n) => `<a href="#/function/${enc(n)}">${esc(n)}</a>`).join(', ')}</td>
          <td>${tags([...new Set(flows.map((f) => f.connector))])}</td><td class="num">${sum((f) => f.summary.total)}</td>
          <td class="num">${num(sum((f) => f.summary.rate), 1)}</td><td class="num">${sum((f) => f.summary.totalErrors)}</td></tr>`;
      }), 'No function subscribes to a topic yet (annotation topic=...).'));
    render($('#flows'), table(['Connector', 'Topic', 'Function', { label: 'Calls', num: true }, { label: 'Rate/s', num: true }, { label: 'Failures', num: true }, { label: 'Retries', num: true }, { label: 'p99', num: true }, 'Last call', 'Trend'],
      a.flows.map((f) => `<tr class="flow" data-connector="${esc(f.connector)}" data-function="${esc(f.function)}"><td>${esc(f.connector)}</td><td><code>${esc(f.topic)}</code></td><td>${esc(f.function)}</td>
        <td class="num calls">${f.summary.total}</td><td class="num">${num(f.summary.rate, 1)}</td><td class="num${f.summary.totalErrors ? ' bad' : ''}">${f.summary.totalErrors}</td>
        <td class="num">${f.retries}</td><td class="num">${ms(f.summary.p99Ms)}</td><td>${time(f.lastAtMs)}</td><td>${spark(f.summary.callsTrend, `calls from ${f.connector} on ${f.topic}`)}</td></tr>`),
      'No connector has called a function through this gateway yet.'));
    render($('#cron'), table(['Function', 'Schedule', 'Time zone', 'Next firings'], a.schedules.map((s) => `<tr><td>${esc(s.function)}</td><td><code>${esc(s.schedule)}</code></td><td>${esc(s.timeZone)}</td>
      <td>${s.error ? `<span class="bad">${esc(s.error)}</span>` : s.next.map((t) => esc(new Date(t).toLocaleString())).join('<br>')}</td></tr>`),
      'No function is scheduled (topic=cron-function with a schedule annotation).'));
    render($('#recent'), table(['Time', 'Function', 'From', { label: 'Status', num: true }, { label: 'Duration', num: true }, 'Call id'],
      a.recent.slice(0, 30).map((c) => `<tr class="call" data-call-id="${esc(c.callId)}"><td>${time(c.atMs)}</td><td>${esc(c.function)}</td>
        <td>${c.connector ? `${esc(c.connector)} · <code>${esc(c.topic)}</code>` : '<span class="muted">direct</span>'}</td>
        <td class="num ${c.status < 400 ? 'ok' : 'bad'}">${c.status}</td><td class="num">${ms(c.durationMs)}</td><td class="mono">${esc(c.callId)}</td></tr>`),
      'No calls yet.'));
  });
}

function queueView(main) {
  main.innerHTML = `<h1 tabindex="-1">Async queue</h1><p id="msg" role="status"></p>
    <div id="queue-stats" class="stats"></div>
    <section aria-labelledby="h-dead"><h2 id="h-dead">Dead letters</h2>
      <div class="actions"><button id="redrive-all" type="button" class="secondary">Redrive all</button></div>
      <div id="dead"></div></section>`;
  const refresh = async () => {
    const r = await api('/system/async-queue');
    if (!r.ok) {
      render($('#queue-stats'), `<p class="notice">${esc((await r.text()).trim())}</p>`);
      return;
    }
    const q = await r.json();
    const letters = await getJson('/system/async-dead-letters?limit=200');
    const stat = (label, value, id) => `<div class="stat"><b id="${id}">${esc(value)}</b><span>${esc(label)}</span></div>`;
    render($('#queue-stats'), stat('backend', q.backend, 'q-backend') + stat('waiting or in flight', q.depth, 'q-depth') + stat('in flight', q.inFlight, 'q-inflight')
      + stat('oldest', age(q.oldestAgeMs), 'q-oldest') + stat('dead letters', q.deadLetters, 'q-dead'));
    render($('#dead'), table(['Failed at', 'Function', { label: 'Status', num: true }, { label: 'Attempts', num: true }, 'Reason', 'Call id', 'Actions'],
      letters.map((l) => `<tr class="dead-letter" data-call-id="${esc(l.callId)}"><td>${esc(new Date(l.failedAtMs).toLocaleString())}</td><td>${esc(l.function)}</td>
        <td class="num">${l.status ?? '–'}</td><td class="num">${l.attempts}</td><td>${esc(l.reason)}</td><td class="mono">${esc(l.callId)}</td>
        <td><div class="actions"><button type="button" data-action="redrive" data-id="${l.id}" data-key="redrive-${l.id}" aria-label="Redrive ${esc(l.callId)}">Redrive</button>
        <button type="button" class="danger" data-action="delete" data-id="${l.id}" data-key="delete-${l.id}" aria-label="Delete ${esc(l.callId)}">Delete</button></div></td></tr>`),
      'No dead letters.'));
  };
  $('#dead').addEventListener('click', async (e) => {
    const b = e.target.closest('button[data-action]');
    if (!b) return;
    const id = b.dataset.id;
    if (b.dataset.action === 'redrive') {
      await send('POST', `/system/async-dead-letters/${id}/redrive`, undefined, `Dead letter ${id} is back on the queue.`);
    } else if (confirm(`Delete dead letter ${id}? Its request is gone for good.`)) {
      await send('DELETE', `/system/async-dead-letters/${id}`, undefined, `Deleted dead letter ${id}.`);
    }
    refresh().catch((err) => say(err.message, true));
  });
  $('#redrive-all').addEventListener('click', async () => {
    if (!confirm('Put every dead letter back on the queue?')) return;
    await send('POST', '/system/async-dead-letters/redrive', undefined, 'Every dead letter is back on the queue.');
    refresh().catch((err) => say(err.message, true));
  });
  return poll(refresh);
}

function deployView(main) {
  main.innerHTML = `<h1 tabindex="-1">Deploy a function</h1><p id="msg" role="status"></p>
    <form id="deploy" class="grid card">
      <label for="d-name">Name</label><input id="d-name" required spellcheck="false" autocomplete="off">
      <label for="d-image">Image</label><input id="d-image" required spellcheck="false" placeholder="ghcr.io/you/fn:1.0">
      <label for="d-process">Process (fprocess)</label><input id="d-process" spellcheck="false" placeholder="the command (local provider) or the watchdog's fprocess">
      <label for="d-topics">Topics</label><input id="d-topics" spellcheck="false" placeholder="orders,refunds or cron-function">
      <label for="d-schedule">Schedule</label><input id="d-schedule" spellcheck="false" placeholder="*/5 * * * * (with topic cron-function)">
      <label for="d-env">Environment</label><textarea id="d-env" placeholder="KEY=value, one per line" spellcheck="false"></textarea>
      <label for="d-labels">Labels</label><textarea id="d-labels" placeholder="com.openfaas.scale.min=1" spellcheck="false"></textarea>
      <label for="d-annotations">Annotations</label><textarea id="d-annotations" placeholder="key=value" spellcheck="false"></textarea>
      <span></span><div><button type="submit">Deploy</button></div>
    </form>`;
  $('#deploy').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('#d-name').value.trim();
    const annotations = lines($('#d-annotations').value);
    if ($('#d-topics').value.trim()) annotations.topic = $('#d-topics').value.trim();
    if ($('#d-schedule').value.trim()) annotations.schedule = $('#d-schedule').value.trim();
    const deployment = { service: name, image: $('#d-image').value.trim(), envVars: lines($('#d-env').value), labels: lines($('#d-labels').value), annotations };
    if ($('#d-process').value.trim()) deployment.envProcess = $('#d-process').value.trim();
    if (!confirm(`Deploy ${name} from ${deployment.image}?`)) return;
    if (await send('POST', '/system/functions', deployment, `Deployed ${name}.`)) location.hash = `#/function/${enc(name)}`;
  });
  return () => {};
}

// ---- routing -------------------------------------------------------------------------------

const views = { functions: functionsView, function: functionView, flow: flowView, queue: queueView, deploy: deployView };
let leave = () => {};

/** Shows the view the hash names; after an in-page move, focus goes to its heading (not on load). */
function route(event) {
  const [, view = 'functions', arg] = location.hash.replace(/^#/, '').split('/');
  const show = views[view] || functionsView;
  leave();
  const main = $('#main');
  leave = show(main, arg ? decodeURIComponent(arg) : undefined);
  const section = view === 'function' ? 'functions' : view;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === `#/${section}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${$('h1', main).textContent} · Tributary`;
  if (event) $('h1', main).focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', () => {
  if (document.documentElement.dataset.auth === 'off') $('.logout')?.remove();
  route(undefined);
});
