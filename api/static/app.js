/* open-dsm dashboard: polls this service's REST API and draws with uPlot. Read-only. */
"use strict";
(() => {
  const FAST_MS = 15000; // points, demand, forecast, model
  const SLOW_MS = 60000; // 24 h of readings and the forecast log, runs, month, day-ahead
  const DISPATCH_RETRY_MS = 300000;
  const OK = "no-fault-detected";
  const LIVE_WITHIN_MS = 5 * 60000; // a meter written this recently is live
  const CLOCK_SKEW_MS = 10 * 60000; // a service clock this far from ours runs on file time
  const RELIABILITY_TEXT = {
    "no-sensor": "no data",
    "communication-failure": "stale",
    "unreliable-other": "unreliable",
  };
  const DECIMALS = { kilowatts: 2, percent: 1, minutes: 1 };
  const COLORS = {
    measured: "#1d2733", logged: "#e07b00", replayed: "#9a8f80", p50: "#1f5fa8",
    band: "rgba(31,95,168,0.16)", target: "#b3261e", battery: "#2a9d5b", grid: "#7a3fb0",
    soc: "#888", peak: "#b3261e", bar: "#5b8fc7",
  };

  const state = {
    points: {}, demand: null, forecast: null, forecastError: null, readings: [], logged: [],
    charts: {}, lastOk: null, model: null, runs: null, dispatchRoute: false, dispatchNextTry: 0,
    month: null, dayAhead: null, dayAheadError: null, plan: null, tz: undefined,
  };

  // The core's notes name its inputs and outputs by their API field (battery_soc_pct); a
  // facility manager reads words. Known fields by name, any other one by its parts.
  const FIELD_WORDS = {
    meter_kw: "meter power",
    battery_soc_pct: "battery state of charge",
    battery_power_kw: "battery power",
    ev_charging_power_kw: "EV charging power",
    pv_power_kw: "PV power",
    outdoor_air_temp: "outdoor air temperature",
    battery_charge_permit: "battery charge permit",
    ev_charge_permit: "EV charge permit",
    battery_discharge_request: "battery discharge request",
  };
  const PART_WORDS = { ev: "EV", pv: "PV", soc: "state of charge", bas: "BAS", temp: "temperature" };
  const UNIT_PARTS = new Set(["kw", "kwh", "pct", "s"]);

  function fieldWords(field) {
    if (FIELD_WORDS[field]) return FIELD_WORDS[field];
    const words = field.split("_");
    if (words.length > 1 && UNIT_PARTS.has(words[words.length - 1])) words.pop();
    return words.map((w) => PART_WORDS[w] || w).join(" ");
  }

  // A note as words: every snake_case field name in it replaced (units stay in the numbers).
  function inWords(text) {
    return String(text).replace(/\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b/g, fieldWords);
  }
  window.openDsm = Object.freeze({ inWords }); // for the browser test

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

  // -- times: always in the site's zone (from the service), never the browser's ---------------

  function parts(date, options) {
    return new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: state.tz }, options)).format(date);
  }

  function siteDay(date) { return parts(date, { year: "numeric", month: "2-digit", day: "2-digit" }); }

  function fmtTime(iso) {
    if (!iso) return "–";
    const at = new Date(iso);
    const time = parts(at, { hour: "2-digit", minute: "2-digit", hour12: false });
    const now = serviceNow();
    if (siteDay(now) === siteDay(at)) return time;
    return `${parts(at, { day: "numeric", month: "short" })} ${time}`;
  }

  function fmtDate(iso) {
    return iso ? parts(new Date(iso), { day: "numeric", month: "short", year: "numeric" }) : "–";
  }

  function serviceNow() {
    // The service's clock: a demo with --speed above 1 runs on the file's time.
    if (state.demand && state.demand.at && state.fetchedAt) {
      return new Date(Date.parse(state.demand.at) + (Date.now() - state.fetchedAt));
    }
    return new Date();
  }

  function fmtKw(value) { return value === null || value === undefined ? "n/a" : value.toFixed(2); }
  function fmtMoney(value) {
    return value === null || value === undefined ? "n/a" : `$${value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  }
  function ago(ms) {
    const minutes = Math.max(0, Math.round(ms / 60000));
    if (minutes === 1) return "1 minute";
    if (minutes < 120) return `${minutes} minutes`;
    const hours = Math.round(minutes / 60);
    if (hours < 72) return `${hours} hours`;
    return `${Math.round(hours / 24)} days`;
  }

  function path(object, dotted) {
    return dotted.split(".").reduce((o, key) => (o === null || o === undefined ? o : o[key]), object);
  }

  // -- points: every value the BAS also reads, shown only when its reliability allows ----------

  function showPoint(el, point) {
    el.classList.remove("fault", "bad", "on", "off", "alarm");
    if (!point) { el.textContent = "n/a"; return; }
    el.title = `BACnet ${point.name} (${point.object_identifier}): ${point.description}`;
    el.dataset.reliability = point.reliability;
    el.dataset.updatedAt = point.updated_at || "";
    if (point.reliability !== OK) {
      const word = RELIABILITY_TEXT[point.reliability] || "fault";
      el.textContent = `${word} (${point.reliability})`;
      el.classList.add("fault");
      // Red only for the alarm a BAS acts on: the meter has stopped (stale inputs). Missing
      // history or no data yet is amber.
      if (point.reliability === "communication-failure") el.classList.add("bad");
      return;
    }
    if (point.object_type === "binary-value") {
      el.textContent = point.present_value ? "active" : "inactive";
      // Red only for an alarm; a permit or a low-load state on is good news (green), off grey.
      if (point.present_value) el.classList.add(el.dataset.alarm === "true" ? "alarm" : "on");
      else el.classList.add("off");
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
          ? `meter not written since ${fmtTime((state.points["input-power-meter"] || point).updated_at || (state.month && state.month.latest_reading_at))}`
          : { "no-sensor": "nothing to show yet", "unreliable-other": "not enough history yet, or a storage fault" }[point.reliability] || point.reliability;
    }
    renderHeader();
  }

  // -- the header says what is true: live, replaying file time, or no live meter ---------------

  function renderHeader() {
    const meter = state.points["input-power-meter"];
    const pill = byId("status");
    const note = byId("history-note");
    pill.className = "pill";
    note.hidden = true;
    if (!meter) { pill.textContent = "no points"; pill.classList.add("warn"); return; }
    const month = state.month;
    const now = serviceNow();
    const skew = state.demand && state.fetchedAt ? Date.parse(state.demand.at) - state.fetchedAt : 0;
    const latest = month && month.latest_reading_at ? Date.parse(month.latest_reading_at) : null;
    let text; let tone;
    if (meter.reliability === "unreliable-other") {
      [text, tone] = ["storage fault: writes refused", "bad"];
    } else if (meter.reliability === OK && Math.abs(skew) > CLOCK_SKEW_MS) {
      [text, tone] = [`replaying history from ${fmtDate(now.toISOString())}`, "info"];
    } else if (meter.reliability === OK) {
      [text, tone] = ["live", "ok"];
    } else {
      const last = meter.updated_at ? Date.parse(meter.updated_at) : latest;
      if (last === null) [text, tone] = ["no meter reading yet", "warn"];
      else if (now - last < 3600000) [text, tone] = [`meter stale: no write for ${ago(now - last)}`, "bad"];
      else [text, tone] = [`no live meter for ${ago(now - last)}`, "bad"];
    }
    pill.textContent = text;
    pill.classList.add(tone);
    if (meter.reliability !== OK && latest !== null && now - latest > 24 * 3600000) {
      note.hidden = false;
      note.textContent = `The newest stored meter minute is from ${fmtDate(month.latest_reading_at)}` +
        ` (${ago(now - latest)} ago): the charts of the last day are empty and the figures below ` +
        "that need a live meter say so. Connect the BAS (or post readings) to go live.";
    }
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
      li.textContent = inWords(text);
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

  // -- the month: money, peak, top intervals -----------------------------------------------------

  function renderMonth() {
    const month = state.month;
    if (!month) return;
    byId("site-tz").textContent = month.timezone;
    byId("month-interval").textContent = String(month.interval_minutes);
    byId("month-period").textContent = `${fmtDate(month.period_start)} to ${fmtDate(month.period_end)}` +
      ` · ${(month.measured_minutes / 1440).toFixed(1)} days measured (imported and live)`;
    byId("month-charge").textContent = fmtMoney(month.demand_charge);
    byId("month-charge-how").textContent = month.billed_peak_kw === null
      ? "no complete interval yet"
      : `peak ${fmtKw(month.billed_peak_kw)} kW set ${fmtTime(month.billed_peak_start)} × $${month.demand_charge_per_kw}/kW`;
    byId("month-energy").textContent = fmtMoney(month.energy_cost);
    byId("month-energy-how").textContent = `${month.energy_kwh.toFixed(0)} kWh at ` +
      (month.time_of_use ? "time-of-use prices" : "the flat price");
    const saving = byId("month-saving");
    saving.textContent = month.battery_saving === null ? "nothing yet" : fmtMoney(month.battery_saving);
    byId("month-saving-how").textContent = month.battery_saving_kw === null
      ? "no battery dispatch recorded this period"
      : `${fmtKw(month.battery_saving_kw)} kW: peak ${fmtKw(month.peak_without_battery_kw)} kW without the battery's kW`;
    const body = byId("month-top").querySelector("tbody");
    body.replaceChildren(...month.top_intervals.map((item, index) => {
      const tr = document.createElement("tr");
      for (const text of [`${index + 1}`, fmtTime(item.start), fmtKw(item.average_kw), String(item.observed_minutes)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      if (index === 0) tr.className = "peak-row";
      return tr;
    }));
    byId("month-notes").replaceChildren(...month.notes.map((text) => {
      const li = document.createElement("li");
      li.textContent = inWords(text);
      return li;
    }));
    const target = state.points["effective-demand-target"];
    const targetKw = target && target.reliability === OK ? target.present_value : null;
    const xs = [], peaks = [], billed = [], targets = [];
    for (const day of month.daily_peaks) {
      xs.push(Date.parse(day.start) / 1000);
      peaks.push(day.kw);
      billed.push(month.billed_peak_kw);
      targets.push(targetKw);
    }
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
    draw("month", byId("chart-month"), (node) => chartOptions(node, [
      { label: "day's highest interval kW", stroke: COLORS.bar, fill: "rgba(91,143,199,0.5)", paths: bars, points: { show: !bars } },
      { label: "billed peak kW", stroke: COLORS.peak, width: 1.5, dash: [6, 3] },
      { label: "effective target kW", stroke: COLORS.soc, width: 1, dash: [2, 4] },
    ], {
      height: 220,
      scales: {
        // Half a day either side so the first and last bars show whole; kW from 0.
        x: { time: true, range: (u, lo, hi) => [lo - 43200, hi + 43200] },
        y: { range: (u, lo, hi) => [0, Math.max(1, (hi || 0) * 1.1)] },
      },
    }), [xs, peaks, billed, targets]);
  }

  // -- charts ----------------------------------------------------------------------------------

  function timeAxis() {
    return {
      space: 90, // room for "Dec 6 14:00" without labels running together
      values: (u, splits) => splits.map((s) => {
        const at = new Date(s * 1000);
        const time = parts(at, { hour: "2-digit", minute: "2-digit", hour12: false });
        return time === "00:00" ? parts(at, { day: "numeric", month: "short" }) : time;
      }),
    };
  }

  function chartOptions(el, series, extra) {
    const options = Object.assign({
      width: Math.max(280, el.clientWidth), height: 300,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: [timeAxis(), { label: "kW", size: 50 }],
      series: [{ value: (u, v) => (v === null ? "–" : fmtTime(new Date(v * 1000).toISOString())) }]
        .concat(series.map((one) => Object.assign({ points: { show: false }, spanGaps: false }, one))),
    }, extra || {});
    if (state.tz) options.tzDate = (ts) => uPlot.tzDate(new Date(ts * 1000), state.tz);
    return options;
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
    const now = Math.floor(serviceNow().getTime() / 60000);
    const start = now - 24 * 60;
    const measured = minuteMap(state.readings, "observed_at", "kw");
    const live = minuteMap(state.logged.filter((e) => !e.replayed), "at", "kw");
    const replayed = minuteMap(state.logged.filter((e) => e.replayed), "at", "kw");
    const xs = [], ys = [], fs = [], rs = [];
    for (let m = start; m <= now; m++) {
      xs.push(m * 60);
      ys.push(measured.has(m) ? measured.get(m) : null);
      fs.push(live.has(m) ? live.get(m) : null);
      rs.push(replayed.has(m) ? replayed.get(m) : null);
    }
    const el = byId("chart-day");
    draw("day", el, (target) => chartOptions(target, [
      { label: "measured kW", stroke: COLORS.measured, width: 1 },
      { label: "forecast made 60 min earlier", stroke: COLORS.logged, width: 1.5, dash: [6, 3] },
      { label: "replayed over imported minutes", stroke: COLORS.replayed, width: 1.5, dash: [2, 3] },
    ]), [xs, ys, fs, rs]);
    const liveCount = fs.filter((v) => v !== null).length;
    const replayedCount = rs.filter((v) => v !== null).length;
    const note = byId("day-note");
    note.dataset.replayed = String(replayedCount);
    note.dataset.live = String(liveCount);
    const parts_ = [`${state.readings.length} measured minutes`];
    if (liveCount) parts_.push(`${liveCount} minutes with a forecast logged live (60 minutes ahead, once a minute)`);
    if (replayedCount) parts_.push(`${replayedCount} minutes with a replayed forecast: the forecaster in service run after the fact over imported minutes, as it would have forecast them (grey dashes)`);
    if (!liveCount && !replayedCount) parts_.push("no forecast for these minutes yet");
    note.textContent = parts_.join("; ") + ".";
  }

  function renderHourChart() {
    const now = Math.floor(serviceNow().getTime() / 60000);
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
      { label: "forecast now", stroke: COLORS.p50, width: 2 },
      { label: "P10", stroke: "rgba(31,95,168,0.5)", width: 1 },
      { label: "P90", stroke: "rgba(31,95,168,0.5)", width: 1 },
      { label: "effective target", stroke: COLORS.target, width: 1, dash: [2, 4] },
    ], { bands: [{ series: [5, 4], fill: COLORS.band }] }), cols);
    const note = byId("hour-note");
    if (!forecast) note.textContent = state.forecastError || "no forecast yet";
    else {
      const band = steps.some((s) => s.p10_kw !== null) ? "with a P10–P90 band" : "no P10–P90 band (this forecaster has none)";
      note.textContent = `${forecast.forecaster}, made ${fmtTime(forecast.made_at)}, quality ${forecast.quality}; ` +
        `next-hour peak ${fmtKw(forecast.peak_kw)} kW at ${fmtTime(forecast.peak_at)}; ${band}` +
        (forecast.note ? `; ${inWords(forecast.note)}` : "");
    }
    const tile = byId("forecaster");
    tile.textContent = forecast ? `${forecast.forecaster}, made ${fmtTime(forecast.made_at)}` : "no forecast yet";
  }

  // -- the next 24 hours: day-ahead band and the dispatch plan on one chart -------------------

  function batteryWords(kw) {
    if (kw === null || kw === undefined) return "n/a";
    if (Math.abs(kw) < 0.005) return "idle (0 kW)";
    return kw > 0 ? `charging ${kw.toFixed(2)} kW` : `discharging ${(-kw).toFixed(2)} kW`;
  }

  function renderAhead() {
    const ahead = state.dayAhead;
    const plan = state.plan && state.plan.configured ? state.plan : null;
    byId("plan-figures").hidden = !plan;
    if (plan) {
      for (const el of all("[data-dispatch]")) {
        const key = el.dataset.dispatch;
        const value = plan[key];
        if (key === "reliable") el.textContent = value ? "inputs fresh" : `on the safe rule: ${inWords(plan.fallback || "inputs stale or incomplete")}`;
        else if (key.endsWith("_at")) el.textContent = fmtTime(value);
        else el.textContent = value === null || value === undefined ? "n/a" : value.toFixed(2);
        el.classList.toggle("warn-text", key === "reliable" && !value);
        el.classList.toggle("na", value === null || value === undefined);
      }
      const first = plan.steps.length ? plan.steps[0] : null;
      byId("battery-now").textContent = batteryWords(plan.setpoint_kw) +
        (first ? ` (plan's first ${Math.round((Date.parse(plan.steps[1] ? plan.steps[1].start : first.start) - Date.parse(first.start)) / 60000) || 15}-minute step: ${batteryWords(first.battery_kw)} on average)` : "");
      const soc = state.points["battery-soc"];
      byId("battery-soc").textContent = soc && soc.reliability === OK
        ? `${soc.present_value.toFixed(1)} % (measured)`
        : `${plan.soc_pct === null ? "n/a" : plan.soc_pct.toFixed(1) + " %"} assumed: no state of charge written (the reserve)`;
      byId("battery-soc").title = "BACnet battery-soc (analog-value,8)";
    }
    const times = new Set();
    const p10 = new Map(), p50 = new Map(), p90 = new Map(), batt = new Map(), grid = new Map(), soc = new Map();
    for (const s of ahead ? ahead.steps : []) {
      const t = Date.parse(s.start) / 1000;
      times.add(t); p10.set(t, s.p10_kw); p50.set(t, s.p50_kw); p90.set(t, s.p90_kw);
    }
    for (const s of plan ? plan.steps : []) {
      const t = Date.parse(s.start) / 1000;
      times.add(t); batt.set(t, s.battery_kw); grid.set(t, s.grid_kw); soc.set(t, s.soc_pct);
    }
    const xs = Array.from(times).sort((a, b) => a - b);
    const target = state.points["effective-demand-target"];
    const targetKw = target && target.reliability === OK ? target.present_value : null;
    const col = (map) => xs.map((t) => (map.has(t) ? map.get(t) : null));
    const data = [xs, col(p50), col(p10), col(p90), xs.map(() => targetKw), col(grid), col(batt), col(soc)];
    draw("ahead", byId("chart-ahead"), (node) => chartOptions(node, [
      { label: "forecast P50 kW", stroke: COLORS.p50, width: 2, spanGaps: true },
      { label: "P10", stroke: "rgba(31,95,168,0.5)", width: 1, spanGaps: true },
      { label: "P90", stroke: "rgba(31,95,168,0.5)", width: 1, spanGaps: true },
      { label: "effective target", stroke: COLORS.target, width: 1, dash: [2, 4] },
      { label: "planned grid kW", stroke: COLORS.grid, width: 1.5, spanGaps: true },
      { label: "battery kW (+ charging)", stroke: COLORS.battery, width: 1.5, spanGaps: true },
      { label: "state of charge %", stroke: COLORS.soc, width: 1, dash: [4, 3], scale: "%", spanGaps: true },
    ], {
      bands: [{ series: [3, 2], fill: COLORS.band }],
      scales: { x: { time: true }, "%": { range: [0, 100] } },
      axes: [timeAxis(), { label: "kW", size: 50 }, { scale: "%", side: 1, label: "SOC %", grid: { show: false }, size: 45 }],
    }), data);
    const note = byId("ahead-note");
    if (!ahead) note.textContent = state.dayAheadError || "no day-ahead forecast yet";
    else note.textContent = `${ahead.forecaster}, made ${fmtTime(ahead.made_at)}, ${ahead.step_minutes}-minute steps` +
      (plan ? `; battery plan solved ${fmtTime(plan.solved_at)}` : "; no battery configured: no plan");
  }

  async function refreshDispatch() {
    if (!state.dispatchRoute || Date.now() < state.dispatchNextTry) return;
    try {
      state.plan = await getJson("/api/v1/dispatch/plan");
    } catch (error) {
      state.plan = null;
      state.dispatchNextTry = Date.now() + (error.status ? DISPATCH_RETRY_MS : FAST_MS);
      return;
    }
    if (!state.plan.configured) state.dispatchNextTry = Date.now() + DISPATCH_RETRY_MS;
    else refreshTuning();
  }

  // The self-tuning's choice: which candidate the nightly replay of the site's history serves.
  async function refreshTuning() {
    const line = byId("dispatch-tuning");
    line.hidden = false;
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
      (tuning.note && !bills ? `; ${inWords(tuning.note)}` : "");
  }

  // -- polling ---------------------------------------------------------------------------------

  function reachable(ok, error) {
    const banner = byId("banner");
    document.body.classList.toggle("unreachable", !ok);
    if (ok) {
      state.lastOk = new Date();
      banner.hidden = true;
      byId("updated").textContent = fmtTime(state.lastOk.toISOString());
    } else {
      banner.hidden = false;
      banner.textContent = `Cannot reach the service (${error.message}); the figures below are ` +
        `from ${state.lastOk ? fmtTime(state.lastOk.toISOString()) : "never"} and may be out of date.`;
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
      state.fetchedAt = Date.now();
      const output = points.find((p) => p.name === "one-hour-future-power");
      if (output && output.reliability !== OK) {
        // No trustworthy forecast now (no or stale meter data): not asked for (no 503s).
        state.forecast = null;
        state.forecastError = `no forecast: the 60-minute output is ${RELIABILITY_TEXT[output.reliability] || output.reliability} (${output.reliability})`;
      } else {
        try {
          state.forecast = await getJson("/api/v1/forecast");
          state.forecastError = null;
        } catch (error) {
          if (!error.status) throw error;
          state.forecast = null;
          state.forecastError = `no forecast: ${inWords(error.detail || error.message)}`;
        }
      }
      state.points = Object.fromEntries(points.map((p) => [p.name, p]));
      state.demand = demand;
      renderPoints();
      renderDemand();
      state.model = model;
      renderModel();
      renderHourChart();
      await refreshDispatch();
      renderAhead();
      reachable(true);
    } catch (error) {
      reachable(false, error);
    }
  }

  async function refreshSlow() {
    try {
      state.month = await getJson("/api/v1/demand/month");
      state.tz = state.month.timezone;
      const now = Date.parse(state.month.now);
      const start = isoMinute(now - 24 * 3600 * 1000);
      const [readings, logged, runs] = await Promise.all([
        getJson(`/api/v1/readings?start=${encodeURIComponent(start)}&limit=2000`),
        getJson(`/api/v1/forecast/history?start=${encodeURIComponent(start)}&limit=2000`),
        getJson("/api/v1/model/runs?limit=5"),
      ]);
      const meter = state.points["input-power-meter"];
      try {
        if (meter && meter.reliability !== OK) {
          const error = new Error("it needs fresh meter data");
          error.status = 503;
          throw error;
        }
        state.dayAhead = await getJson("/api/v1/forecast/day-ahead");
        state.dayAheadError = null;
      } catch (error) {
        if (!error.status) throw error;
        state.dayAhead = null;
        state.dayAheadError = `no day-ahead forecast: ${inWords(error.detail || error.message)}`;
      }
      state.readings = readings.items;
      state.logged = logged.items;
      state.runs = runs;
      renderModel();
      renderMonth();
      renderDayChart();
      renderHourChart();
      renderAhead();
      renderHeader();
    } catch (error) {
      reachable(false, error);
    }
  }

  async function start() {
    try {
      const api = await getJson("/openapi.json");
      state.dispatchRoute = Boolean(api.paths && api.paths["/api/v1/dispatch/plan"]);
    } catch (_) { state.dispatchRoute = false; }
    try { // the site's zone first: every time and chart axis is shown in it
      state.month = await getJson("/api/v1/demand/month");
      state.tz = state.month.timezone;
    } catch (_) { /* refreshSlow reports it */ }
    await refreshFast();
    await refreshSlow();
    document.body.dataset.loaded = "true"; // the charts and figures are on screen
    setInterval(refreshFast, FAST_MS);
    setInterval(refreshSlow, SLOW_MS);
    window.addEventListener("resize", () => {
      for (const [name, chart] of Object.entries(state.charts)) {
        const el = byId(`chart-${name}`);
        chart.setSize({ width: Math.max(280, el.clientWidth), height: chart.height });
      }
    });
  }

  start();
})();
