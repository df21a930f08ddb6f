/* open-dsm dashboard: polls this service's REST API and draws with uPlot. Read-only. */
"use strict";
(() => {
  const FAST_MS = 15000; // points, demand, forecast, model
  const SLOW_MS = 60000; // 24 h of readings and the forecast log, training runs
  const DISPATCH_RETRY_MS = 300000;
  const OK = "no-fault-detected";
  const RELIABILITY_TEXT = {
    "no-sensor": "no data",
    "communication-failure": "stale",
    "unreliable-other": "unreliable",
  };
  const DECIMALS = { kilowatts: 2, percent: 1, minutes: 1 };
  const COLORS = {
    measured: "#1d2733", logged: "#e07b00", p50: "#1f5fa8", band: "rgba(31,95,168,0.16)",
    target: "#b3261e", battery: "#2a9d5b", grid: "#7a3fb0", soc: "#888",
  };

  const state = {
    points: {}, demand: null, forecast: null, forecastError: null, readings: [], logged: [],
    charts: {}, lastOk: null, model: null, runs: null, dispatchRoute: false, dispatchNextTry: 0,
  };

  const all = (selector) => Array.from(document.querySelectorAll(selector));
  const byId = (id) => document.getElementById(id);

  async function getJson(path) {
    const reply = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!reply.ok) {
      let detail = "";
      try { detail = (await reply.json()).detail || ""; } catch (_) { /* not JSON */ }
      const error = new Error(`${path} answered ${reply.status} ${detail}`.trim());
      error.status = reply.status;
      error.detail = detail;
      throw error;
    }
    return reply.json();
  }

  function isoMinute(ms) { return new Date(Math.floor(ms / 60000) * 60000).toISOString(); }

  function fmtTime(iso) {
    if (!iso) return "–";
    const at = new Date(iso);
    const today = new Date().toDateString() === at.toDateString();
    const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return today ? time : `${at.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  function fmtKw(value) { return value === null || value === undefined ? "n/a" : value.toFixed(2); }

  function path(object, dotted) {
    return dotted.split(".").reduce((o, key) => (o === null || o === undefined ? o : o[key]), object);
  }

  // -- points: every value the BAS also reads, shown only when its reliability allows ----------

  function showPoint(el, point) {
    el.classList.remove("fault", "bad", "on", "off");
    el.removeAttribute("title");
    if (!point) { el.textContent = "n/a"; return; }
    el.dataset.reliability = point.reliability;
    el.dataset.updatedAt = point.updated_at || "";
    if (point.reliability !== OK) {
      const word = RELIABILITY_TEXT[point.reliability] || "fault";
      el.textContent = `${word} (${point.reliability})`;
      el.classList.add("fault");
      if (point.reliability !== "no-sensor") el.classList.add("bad");
      el.title = point.description;
      return;
    }
    if (point.object_type === "binary-value") {
      el.textContent = point.present_value ? "active" : "inactive";
      el.classList.add(point.present_value ? "on" : "off");
      return;
    }
    el.textContent = point.present_value.toFixed(DECIMALS[point.units] ?? 2);
  }

  function renderPoints() {
    for (const el of all("[data-point]")) showPoint(el, state.points[el.dataset.point]);
    for (const el of all("[data-reliability]")) {
      const point = state.points[el.dataset.reliability];
      if (!point) continue;
      el.textContent = point.reliability === OK
        ? `as of ${fmtTime(point.updated_at)}`
        : point.reliability === "communication-failure"
          ? `meter not written since ${fmtTime((state.points["input-power-meter"] || point).updated_at)}`
          : { "no-sensor": "nothing to show yet", "unreliable-other": "not enough history yet, or a storage fault" }[point.reliability] || point.reliability;
    }
    const meter = state.points["input-power-meter"];
    const pill = byId("status");
    pill.className = "pill";
    if (!meter) { pill.textContent = "no points"; pill.classList.add("warn"); return; }
    const status = {
      [OK]: ["live", "ok"],
      "communication-failure": ["meter stale: BAS stopped writing", "bad"],
      "no-sensor": ["no meter reading yet", "warn"],
      "unreliable-other": ["storage fault: writes refused", "bad"],
    }[meter.reliability] || [meter.reliability, "warn"];
    pill.textContent = status[0];
    pill.classList.add(status[1]);
  }

  // -- demand and model ------------------------------------------------------------------------

  function renderDemand() {
    const demand = state.demand;
    for (const el of all("[data-demand]")) {
      const key = el.dataset.demand;
      const value = demand ? path(demand, key) : null;
      delete el.dataset.raw;
      const isTime = /(start|_at)$/.test(key);
      if (value === null || value === undefined) el.textContent = isTime ? "–" : "none";
      else if (isTime) {
        el.textContent = fmtTime(value);
        el.dataset.raw = value;
      }
      else el.textContent = String(value);
    }
    const notes = byId("demand-notes");
    notes.replaceChildren(...(demand ? demand.notes : []).map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
  }

  function renderModel() {
    const model = state.model;
    const runs = state.runs;
    for (const el of all("[data-model]")) {
      const key = el.dataset.model;
      const value = model ? model[key] : null;
      el.classList.toggle("na", value === null && key.endsWith("_kw"));
      if (key.endsWith("_kw")) el.textContent = value === null ? "not yet" : fmtKw(value);
      else if (key.endsWith("_at")) el.textContent = value ? fmtTime(value) : "never";
      else el.textContent = value === null || value === undefined ? "" : String(value);
    }
    if (runs === null) return;
    const body = byId("runs");
    body.replaceChildren(...runs.slice(0, 5).map((run) => {
      const tr = document.createElement("tr");
      const cells = [
        `#${run.id}`, run.status, run.trigger, fmtTime(run.started_at), fmtKw(run.rmse_kw),
        run.training_minutes === null ? "n/a" : run.training_minutes.toFixed(1),
      ];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tr.children[1].className = `status-${run.status}`;
      if (run.error_text) tr.title = run.error_text;
      return tr;
    }));
    byId("runs-empty").hidden = runs.length > 0;
  }

  // -- charts ----------------------------------------------------------------------------------

  function chartOptions(el, series, extra) {
    return Object.assign({
      width: Math.max(300, el.clientWidth), height: 300,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: [{}, { label: "kW", size: 50 }],
      series: [{}].concat(series.map((one) => Object.assign({ points: { show: false } }, one))),
    }, extra || {});
  }

  function draw(name, el, optionsFor, data) {
    const chart = state.charts[name];
    if (chart) { chart.setData(data); return; }
    el.replaceChildren();
    state.charts[name] = new uPlot(optionsFor(el), data, el);
  }

  function minuteMap(items, key, value) {
    const map = new Map();
    for (const item of items) map.set(Math.floor(Date.parse(item[key]) / 60000), item[value]);
    return map;
  }

  function renderDayChart() {
    const now = Math.floor(Date.now() / 60000);
    const start = now - 24 * 60;
    const measured = minuteMap(state.readings, "observed_at", "kw");
    const logged = minuteMap(state.logged, "at", "kw");
    const xs = [], ys = [], fs = [];
    for (let m = start; m <= now; m++) {
      xs.push(m * 60);
      ys.push(measured.has(m) ? measured.get(m) : null);
      fs.push(logged.has(m) ? logged.get(m) : null);
    }
    const el = byId("chart-day");
    draw("day", el, (target) => chartOptions(target, [
      { label: "measured kW", stroke: COLORS.measured, width: 1 },
      { label: "forecast made 60 min earlier", stroke: COLORS.logged, width: 1.5, dash: [6, 3] },
    ]), [xs, ys, fs]);
    const count = fs.filter((v) => v !== null).length;
    byId("day-note").textContent = count
      ? `${state.readings.length} measured minutes; ${count} minutes with a logged forecast ` +
        "(the service logs what it forecast 60 minutes ahead, once a minute, and keeps 25 h)."
      : `${state.readings.length} measured minutes; no logged forecast for these minutes yet: ` +
        "the service logs its 60-minute-ahead forecast while it runs (imported history has none).";
  }

  function renderHourChart() {
    const now = Math.floor(Date.now() / 60000);
    const forecast = state.forecast;
    const steps = forecast ? forecast.steps : [];
    const last = steps.length ? Math.floor(Date.parse(steps[steps.length - 1].at) / 60000) : now + 60;
    const start = now - 180;
    const measured = minuteMap(state.readings, "observed_at", "kw");
    const logged = minuteMap(state.logged, "at", "kw");
    const p50 = minuteMap(steps, "at", "kw");
    const p10 = minuteMap(steps, "at", "p10_kw");
    const p90 = minuteMap(steps, "at", "p90_kw");
    const target = state.points["effective-demand-target"];
    const targetKw = target && target.reliability === OK ? target.present_value : null;
    const cols = [[], [], [], [], [], [], []];
    for (let m = start; m <= Math.max(last, now + 60); m++) {
      const row = [
        m * 60, measured.get(m) ?? null, logged.get(m) ?? null, p50.get(m) ?? null,
        p10.get(m) ?? null, p90.get(m) ?? null, targetKw,
      ];
      row.forEach((v, i) => cols[i].push(v));
    }
    const el = byId("chart-hour");
    draw("hour", el, (node) => chartOptions(node, [
      { label: "measured kW", stroke: COLORS.measured, width: 1.5 },
      { label: "forecast made 60 min earlier", stroke: COLORS.logged, width: 1.5, dash: [6, 3] },
      { label: "forecast now (P50)", stroke: COLORS.p50, width: 2 },
      { label: "P10", stroke: "rgba(31,95,168,0.5)", width: 1 },
      { label: "P90", stroke: "rgba(31,95,168,0.5)", width: 1 },
      { label: "effective target (interval avg)", stroke: COLORS.target, width: 1, dash: [2, 4] },
    ], { bands: [{ series: [5, 4], fill: COLORS.band }] }), cols);
    const note = byId("hour-note");
    if (!forecast) note.textContent = state.forecastError || "no forecast yet";
    else {
      const band = steps.some((s) => s.p10_kw !== null) ? "with a P10–P90 band" : "no P10–P90 band (this forecaster has none)";
      note.textContent = `${forecast.forecaster}, made ${fmtTime(forecast.made_at)}, quality ${forecast.quality}; ` +
        `next-hour peak ${fmtKw(forecast.peak_kw)} kW at ${fmtTime(forecast.peak_at)}; ${band}` +
        (forecast.note ? `; ${forecast.note}` : "");
    }
    const tile = byId("forecaster");
    tile.textContent = forecast ? `${forecast.forecaster}, made ${fmtTime(forecast.made_at)}` : "no forecast yet";
  }

  // -- dispatch (only when the service has a plan) ------------------------------------------

  async function refreshDispatch() {
    const card = byId("dispatch");
    if (!state.dispatchRoute || Date.now() < state.dispatchNextTry) return;
    let plan;
    try {
      plan = await getJson("/api/v1/dispatch/plan");
    } catch (error) {
      card.hidden = true;
      state.dispatchNextTry = Date.now() + (error.status ? DISPATCH_RETRY_MS : FAST_MS);
      return;
    }
    if (!plan.configured) {  // no battery configured: nothing to show
      card.hidden = true;
      state.dispatchNextTry = Date.now() + DISPATCH_RETRY_MS;
      return;
    }
    card.hidden = false;
    for (const el of all("[data-dispatch]")) {
      const key = el.dataset.dispatch;
      const value = plan[key];
      if (key === "reliable") el.textContent = value ? "reliable" : "NOT reliable: inputs stale or incomplete";
      else if (key.endsWith("_at")) el.textContent = fmtTime(value);
      else el.textContent = value === null || value === undefined ? "n/a" : value.toFixed(key.endsWith("pct") ? 1 : 2);
      el.classList.toggle("fault", key === "reliable" && !value);
      el.classList.toggle("na", value === null || value === undefined);
    }
    refreshTuning();
    const steps = plan.steps || [];
    const cols = [[], [], [], [], [], []];
    for (const s of steps) {
      [Date.parse(s.start) / 1000, s.load_p50_kw, s.load_p90_kw, s.battery_kw, s.grid_kw, s.soc_pct]
        .forEach((v, i) => cols[i].push(v ?? null));
    }
    draw("dispatch", byId("chart-dispatch"), (node) => chartOptions(node, [
      { label: "load P50 kW", stroke: COLORS.p50, width: 1.5 },
      { label: "load P90 kW", stroke: "rgba(31,95,168,0.5)", width: 1 },
      { label: "battery kW (+ charge)", stroke: COLORS.battery, width: 1.5 },
      { label: "grid kW", stroke: COLORS.grid, width: 2 },
      { label: "SOC %", stroke: COLORS.soc, width: 1, dash: [4, 3], scale: "%" },
    ], {
      scales: { x: { time: true }, "%": { range: [0, 100] } },
      axes: [{}, { label: "kW", size: 50 }, { scale: "%", side: 1, label: "SOC %", grid: { show: false } }],
    }), cols);
  }

  // The self-tuning's choice: which candidate the nightly replay of the site's history serves.
  async function refreshTuning() {
    const line = byId("dispatch-tuning");
    let tuning;
    try {
      tuning = await getJson("/api/v1/dispatch/tuning");
    } catch (error) {
      line.textContent = "self-tuning: n/a";
      return;
    }
    if (!tuning.configured) { line.textContent = "self-tuning: n/a"; return; }
    const bills = (tuning.candidates || [])
      .map((c) => `${c.name} ${c.billed_kw.toFixed(2)} kW`).join(", ");
    const saving = tuning.saving_kw === null || tuning.saving_kw === undefined ? "" :
      `; saves ${tuning.saving_kw.toFixed(2)} kW (${tuning.saving_per_month.toFixed(0)} a month at the demand charge)`;
    line.textContent = `self-tuning: serving ${tuning.chosen}` +
      (tuning.level_kw ? ` (level ${tuning.level_kw.toFixed(2)} kW)` : "") + saving +
      (bills ? `; replayed bills over the last ${Math.round(tuning.history_days)} days: ${bills}` : "") +
      (tuning.note && !bills ? `; ${tuning.note}` : "");
  }

  // -- polling ---------------------------------------------------------------------------------

  function reachable(ok, error) {
    const banner = byId("banner");
    document.body.classList.toggle("unreachable", !ok);
    if (ok) {
      state.lastOk = new Date();
      banner.hidden = true;
      byId("updated").textContent = state.lastOk.toLocaleTimeString();
    } else {
      banner.hidden = false;
      banner.textContent = `Cannot reach the service (${error.message}); the figures below are ` +
        `from ${state.lastOk ? state.lastOk.toLocaleTimeString() : "never"} and may be out of date.`;
      const pill = byId("status");
      pill.className = "pill bad";
      pill.textContent = "service unreachable";
    }
  }

  async function refreshFast() {
    try {
      const [points, demand, model] = await Promise.all([
        getJson("/api/v1/points"), getJson("/api/v1/demand"), getJson("/api/v1/model"),
      ]);
      try {
        state.forecast = await getJson("/api/v1/forecast");
        state.forecastError = null;
      } catch (error) {
        if (!error.status) throw error;
        state.forecast = null;
        state.forecastError = `no forecast: ${error.detail || error.message}`;
      }
      state.points = Object.fromEntries(points.map((p) => [p.name, p]));
      state.demand = demand;
      renderPoints();
      renderDemand();
      state.model = model;
      renderModel();
      renderHourChart();
      await refreshDispatch();
      reachable(true);
    } catch (error) {
      reachable(false, error);
    }
  }

  async function refreshSlow() {
    const start = isoMinute(Date.now() - 24 * 3600 * 1000);
    try {
      const [readings, logged, runs] = await Promise.all([
        getJson(`/api/v1/readings?start=${encodeURIComponent(start)}&limit=2000`),
        getJson(`/api/v1/forecast/history?start=${encodeURIComponent(start)}&limit=2000`),
        getJson("/api/v1/model/runs?limit=5"),
      ]);
      state.readings = readings.items;
      state.logged = logged.items;
      state.runs = runs;
      renderModel();
      renderDayChart();
      renderHourChart();
    } catch (error) {
      reachable(false, error);
    }
  }

  async function start() {
    try {
      const api = await getJson("/openapi.json");
      state.dispatchRoute = Boolean(api.paths && api.paths["/api/v1/dispatch/plan"]);
    } catch (_) { state.dispatchRoute = false; }
    await refreshSlow();
    await refreshFast();
    document.body.dataset.loaded = "true"; // the charts and figures are on screen
    setInterval(refreshFast, FAST_MS);
    setInterval(refreshSlow, SLOW_MS);
    window.addEventListener("resize", () => {
      for (const [name, chart] of Object.entries(state.charts)) {
        const el = byId(name === "dispatch" ? "chart-dispatch" : `chart-${name}`);
        chart.setSize({ width: Math.max(300, el.clientWidth), height: 300 });
      }
    });
  }

  start();
})();
