// The djl management console: polls GET /console/state, renders one row per workflow
// version, and drives the management API (register, scale, unregister, log level).
// No framework and no inline code: the page runs under a strict Content-Security-Policy.
'use strict';

(() => {
  const TOKEN_KEY = 'djl.console.token';
  const POLL_MS = 1000;
  const CHART_S = 300;
  const SVG = 'http://www.w3.org/2000/svg';
  const COLUMNS = 14;

  const $ = (id) => document.getElementById(id);
  const tbody = document.querySelector('#models tbody');
  /** workflow key -> {tr, scaleTr, cells, ...}: rows are kept, so an open Scale form or a
   * focused input survives the next poll. */
  const rows = new Map();

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // -- the API -------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, params) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== '' && value !== null && value !== undefined) {
        url.searchParams.set(key, value);
      }
    }
    const headers = {};
    const secret = token();
    if (secret) headers.Authorization = 'Bearer ' + secret;
    const response = await fetch(url, {method, headers, cache: 'no-store'});
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const message = (body && body.message) || `${response.status} ${response.statusText}`;
      if (response.status === 401) askToken(secret ? message : '');
      throw new ApiError(message, response.status);
    }
    return body;
  }

  function modelPath(name, version) {
    let path = '/models/' + encodeURIComponent(name);
    if (version !== null && version !== undefined) path += '/' + encodeURIComponent(version);
    return path;
  }

  // -- polling -------------------------------------------------------------------------
  let wake = null;
  let waitingForToken = false;

  function pause(ms) {
    return new Promise((resolve) => {
      wake = resolve;
      if (ms !== null) setTimeout(resolve, ms);
    });
  }

  /** Poll now instead of at the next tick (after an action, or once a token is typed). */
  function refresh() {
    if (wake) wake();
  }

  async function loop() {
    for (;;) {
      try {
        const state = await api('GET', '/console/state');
        waitingForToken = false;
        $('login').hidden = true;
        $('main').hidden = false;
        render(state);
        setConnection('updated ' + new Date().toLocaleTimeString(), false);
      } catch (e) {
        if (!(e instanceof ApiError)) {
          setConnection('cannot reach the server: ' + e.message, true);
          // The network, or a fault of this script: the browser's console shows which.
          console.error(e);
        } else if (e.status !== 401) {
          setConnection(e.message, true);
        }
      }
      await pause(waitingForToken ? null : POLL_MS);
    }
  }

  function setConnection(text, bad) {
    const element = $('connection');
    element.textContent = text;
    element.classList.toggle('bad', bad);
  }

  // -- the token -----------------------------------------------------------------------
  function askToken(message) {
    waitingForToken = true;
    // Nothing of the models stays on the page without a valid token.
    $('main').hidden = true;
    for (const key of [...rows.keys()]) removeRow(key);
    $('login').hidden = false;
    $('token-error').textContent = message;
    $('token').focus();
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('token');
    sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = '';
    $('token-error').textContent = '';
    refresh();
  });

  // -- rendering -----------------------------------------------------------------------
  function el(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  /** Replace a cell's content by one line per item (a workflow lists each model). */
  function setLines(cell, lines) {
    const joined = lines.join('\n');
    if (cell.dataset.content === joined) return;
    cell.dataset.content = joined;
    cell.replaceChildren(...lines.map((line) => el('div', 'line', line)));
  }

  function fmtRate(value) {
    return value === null || value === undefined ? '– req/s' : `${value.toFixed(1)} req/s`;
  }

  function fmtMs(value) {
    if (value === null || value === undefined) return '–';
    return value < 10 ? `${value.toFixed(2)} ms` : `${value.toFixed(0)} ms`;
  }

  function fmtNumber(value, digits) {
    return value === null || value === undefined ? '–' : value.toFixed(digits);
  }

  function fmtBytes(bytes) {
    if (bytes === null || bytes === undefined) return '';
    return `${(bytes / 1048576).toFixed(1)} MiB`;
  }

  function render(state) {
    setText($('server-version'), 'djl ' + state.version);
    const level = $('log-level');
    // The server's level, unless the user picked one not yet applied.
    if (!level.dataset.picked) level.value = state.log_level;
    const off = $('figures-off');
    off.hidden = !state.figures_off;
    setText(off, state.figures_off ? 'Live figures are off: ' + state.figures_off : '');

    const seen = new Set();
    let position = 0;
    for (const workflow of state.workflows) {
      const key = workflow.name + '\u0000' + (workflow.version ?? '');
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = createRow(workflow);
        rows.set(key, row);
      }
      updateRow(row, workflow, state.figures_off);
      // Moved only when out of place: moving a row would blur an input inside it.
      if (tbody.children[position] !== row.tr) {
        tbody.insertBefore(row.tr, tbody.children[position] || null);
      }
      if (tbody.children[position + 1] !== row.scaleTr) {
        tbody.insertBefore(row.scaleTr, tbody.children[position + 1] || null);
      }
      position += 2;
    }
    for (const key of [...rows.keys()]) {
      if (!seen.has(key)) removeRow(key);
    }
    $('empty').hidden = state.workflows.length > 0;
  }

  function removeRow(key) {
    const row = rows.get(key);
    row.tr.remove();
    row.scaleTr.remove();
    rows.delete(key);
  }

  const CELLS = ['name', 'version', 'status', 'engine', 'batch', 'queue', 'workers',
    'rate', 'p50', 'p99', 'avgBatch', 'tokens', 'chart', 'actions'];

  function createRow(workflow) {
    const tr = el('tr', 'model');
    tr.dataset.name = workflow.name;
    tr.dataset.version = workflow.version ?? '';
    const cells = {};
    for (const name of CELLS) {
      cells[name] = el('td', name);
      tr.append(cells[name]);
    }
    const label = workflow.version ? `${workflow.name} (version ${workflow.version})`
      : workflow.name;

    const chart = document.createElementNS(SVG, 'svg');
    chart.setAttribute('viewBox', '0 0 120 36');
    chart.setAttribute('class', 'spark');
    chart.setAttribute('role', 'img');
    const title = document.createElementNS(SVG, 'title');
    const rateLine = document.createElementNS(SVG, 'polyline');
    rateLine.setAttribute('class', 'rate');
    const latencyLine = document.createElementNS(SVG, 'polyline');
    latencyLine.setAttribute('class', 'latency');
    chart.append(title, latencyLine, rateLine);
    const caption = el('div', 'caption');
    cells.chart.append(chart, caption);

    const scaleButton = el('button', 'scale-toggle', 'Scale');
    scaleButton.type = 'button';
    const unregister = el('button', 'unregister danger', 'Unregister');
    unregister.type = 'button';
    cells.actions.append(scaleButton, unregister);

    const scaleTr = el('tr', 'scale-row');
    scaleTr.hidden = true;
    const scaleTd = el('td');
    scaleTd.colSpan = COLUMNS;
    const form = el('form', 'scale-form');
    const [minLabel, minInput] = workersInput('Min workers', 'min_worker');
    const [maxLabel, maxInput] = workersInput('Max workers', 'max_worker');
    const apply = el('button', 'scale-apply', 'Scale');
    apply.type = 'submit';
    form.append(el('span', 'scale-title', 'Workers of ' + label + ':'), minLabel, maxLabel,
      apply);
    scaleTd.append(form);
    scaleTr.append(scaleTd);

    const row = {tr, scaleTr, cells, chart: {title, rateLine, latencyLine, caption}, minInput,
      maxInput, workflow};
    scaleButton.addEventListener('click', () => {
      if (scaleTr.hidden) {
        const model = row.workflow.models[0];
        minInput.value = model ? model.min_workers : '';
        maxInput.value = model ? model.max_workers : '';
      }
      scaleTr.hidden = !scaleTr.hidden;
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      act(apply, () => api('PUT', modelPath(workflow.name, workflow.version),
        {min_worker: minInput.value, max_worker: maxInput.value}), () => {
        scaleTr.hidden = true;
      });
    });
    unregister.addEventListener('click', () => {
      if (!window.confirm(`Unregister ${label}?`)) return;
      act(unregister, () => api('DELETE', modelPath(workflow.name, workflow.version)));
    });
    return row;
  }

  /** A label holding a worker-count input: [label, input]. */
  function workersInput(text, name) {
    const label = el('label', null, text + ' ');
    const input = el('input');
    input.type = 'number';
    input.min = '0';
    input.name = name;
    label.append(input);
    return [label, input];
  }

  function updateRow(row, workflow, figuresOff) {
    row.workflow = workflow;
    const c = row.cells;
    const models = workflow.models;
    const many = models.length > 1;
    const prefix = (model) => (many ? model.model_id + ': ' : '');
    setLines(c.name, [workflow.name, ...(workflow.loaded_at_startup ? ['(start-up)'] : [])]);
    setText(c.version, workflow.version ?? '');
    setText(c.status, workflow.status);
    c.status.dataset.status = workflow.status;
    setLines(c.engine, models.map((m) => prefix(m) + (m.engine ?? '')));
    setLines(c.batch, models.map((m) => prefix(m) + (m.batch_size ?? '')));
    setLines(c.queue, models.map((m) => prefix(m) + m.queue_depth +
      (m.queue_capacity !== null ? ' / ' + m.queue_capacity : '')));
    const workers = [];
    for (const m of models) {
      if (many) workers.push(m.model_id + ':');
      if (m.failure) workers.push('failure: ' + m.failure);
      for (const w of m.workers) {
        workers.push(`#${w.id} ${w.state} ${w.device}` + (w.pid ? ` pid ${w.pid}` : '') +
          (w.rss_bytes ? ` ${fmtBytes(w.rss_bytes)}` : ''));
      }
      if (!m.workers.length && !m.failure) workers.push('no worker');
    }
    setLines(c.workers, workers);

    if (figuresOff) {
      for (const name of ['rate', 'p50', 'p99', 'avgBatch', 'tokens']) setText(c[name], '');
      drawChart(row.chart, null);
      return;
    }
    const figures = workflow.figures;
    const now = figures ? figures.now : null;
    setText(c.rate, fmtRate(now ? now.requests_per_s : null));
    setText(c.p50, fmtMs(now ? now.p50_ms : null));
    setText(c.p99, fmtMs(now ? now.p99_ms : null));
    setLines(c.avgBatch, models.map((m) => prefix(m) +
      fmtNumber(m.figures && m.figures.now.batch_size, 1)));
    // Only text generation models count tokens: the column stays empty for the others.
    const tokens = models.map((m) => m.figures && m.figures.now.tokens_per_s)
      .filter((v) => v !== null && v !== undefined);
    setText(c.tokens, tokens.length ? tokens.reduce((a, b) => a + b, 0).toFixed(1) : '');
    drawChart(row.chart, figures);
  }

  function drawChart(chart, figures) {
    if (!figures) {
      chart.rateLine.setAttribute('points', '');
      chart.latencyLine.setAttribute('points', '');
      chart.title.textContent = 'no figures yet';
      setText(chart.caption, '');
      return;
    }
    // The last CHART_S seconds, or less while the server has not been watched that long.
    const span = Math.min(CHART_S, Math.max(60, -Math.min(0, ...figures.ago_s)));
    const line = (values) => {
      const max = Math.max(0, ...values.filter((v) => v !== null));
      const points = [];
      values.forEach((value, i) => {
        if (value === null) return;
        const x = 120 * (1 + figures.ago_s[i] / span);
        const y = max > 0 ? 34 - 32 * (value / max) : 34;
        if (x >= 0) points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      });
      return {points: points.join(' '), max};
    };
    const rate = line(figures.requests_per_s);
    const latency = line(figures.p99_ms);
    chart.rateLine.setAttribute('points', rate.points);
    chart.latencyLine.setAttribute('points', latency.points);
    const minutes = span >= 120 ? `${Math.round(span / 60)} min` : `${Math.round(span)} s`;
    chart.title.textContent = `Last ${minutes}: requests (blue, peak ` +
      `${rate.max.toFixed(1)} req/s) and p99 latency (orange, peak ${fmtMs(latency.max)})`;
    setText(chart.caption, `${minutes} · peak ${rate.max.toFixed(1)} req/s`);
  }

  // -- actions -------------------------------------------------------------------------
  function showMessage(text, error) {
    const message = $('message');
    message.hidden = false;
    message.textContent = text;
    message.classList.toggle('error', error);
  }

  async function act(button, call, done) {
    button.disabled = true;
    try {
      const body = await call();
      showMessage((body && body.status) || 'Done', false);
      if (done) done();
    } catch (e) {
      showMessage(e.message, true);
    } finally {
      button.disabled = false;
      refresh();
    }
  }

  $('register-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.target;
    const params = {};
    for (const name of ['url', 'model_name', 'model_version', 'batch_size', 'min_worker',
      'max_worker']) {
      params[name] = form.elements[name].value.trim();
    }
    params.synchronous = form.elements.synchronous.checked ? 'true' : 'false';
    const button = $('register');
    button.textContent = 'Registering…';
    act(button, () => api('POST', '/models', params), () => {
      for (const input of form.querySelectorAll('input:not([type=checkbox])')) {
        input.value = '';
      }
    }).finally(() => {
      button.textContent = 'Register';
    });
  });

  $('log-level').addEventListener('change', (event) => {
    event.target.dataset.picked = 'yes';
  });

  $('log-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const select = $('log-level');
    const level = select.value;
    delete select.dataset.picked;
    act(event.target.querySelector('button'), async () => {
      await api('PUT', '/server/logging', {level});
      return {status: 'Log level set to ' + level};
    });
  });

  loop();
})();
