// The metering dashboard page: reads the JSON API (docs/dashboards.md) and renders it.
// Every value shown comes from the API as an exact decimal string; charts plot them as numbers and
// keep the exact strings on each dataset (dataset.exactValues) for tooltips and for the browser test.
"use strict";

const REFRESH_S = Number(document.body.dataset.refreshS || 10);
const params = new URLSearchParams(window.location.search);
const state = { customer: params.get("customer") || "", meter: params.get("meter") || "", granularity: params.get("granularity") || "hour" };
const charts = new Map();
const COLORS = ["#2680c2", "#e12d39", "#3ebd93", "#f0b429", "#8719e0", "#0e7c86", "#cb6e17", "#616e7c"];
window.dashboard = { state, data: {}, refreshes: 0, access: null };

const $ = (selector) => document.querySelector(selector);

// The access token: from the URL fragment (#token=…), which browsers never send to the server, so it
// is in no request line, log or Referer. It is then kept in this tab only (sessionStorage, where the
// browser allows it; memory otherwise) and removed from the address bar, so a link copied from the
// page never carries it. Every API call sends it as `Authorization: Bearer`.
const TOKEN_KEY = "metering.token";
const token = (() => {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  let found = fragment.get("token") || "";
  try {
    if (found) window.sessionStorage.setItem(TOKEN_KEY, found);
    else found = window.sessionStorage.getItem(TOKEN_KEY) || "";
  } catch (_) { /* storage refused (a sandboxed iframe): memory only */ }
  if (fragment.has("token")) window.history.replaceState(null, "", window.location.pathname + window.location.search);
  return found;
})();

class ApiError extends Error {
  constructor(status, body, path) {
    super(`${path}: ${body.error || status}`);
    this.status = status;
    this.reason = body.reason || "";
  }
}

let denied = false; // a 401: the token will not become valid by asking again

function groupText(groupBy) {
  const entries = Object.entries(groupBy || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(", ") : "—";
}

function period(row) {
  return `${row.period_start.slice(0, 10)} → ${row.period_end.slice(0, 10)}`;
}

async function api(path, query) {
  const url = `${path}?${new URLSearchParams(query)}`;
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { headers, cache: "no-store", credentials: "omit" });
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON: the status says it */ }
  if (!response.ok) throw new ApiError(response.status, body, path);
  return body;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fillTable(selector, rows, columns) {
  const body = $(`${selector} tbody`);
  body.replaceChildren();
  for (const data of rows) {
    const tr = document.createElement("tr");
    tr.dataset.meter = data.meter;
    tr.dataset.group = JSON.stringify(data.group_by || {});
    if (data.period_start) tr.dataset.periodStart = data.period_start;
    for (const [text, className] of columns(data)) {
      if (text instanceof Node) {
        const td = cell(tr, "", className);
        td.appendChild(text);
      } else {
        cell(tr, text, className);
      }
    }
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, "no rows", "muted").colSpan = 8;
    body.appendChild(tr);
  }
}

function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.textContent = status;
  return span;
}

function renderUsage(rows) {
  fillTable("#usage", rows, (r) => [
    [r.meter], [groupText(r.group_by)], [period(r)], [r.total, "num total"], [String(r.event_count), "num"],
    [badge(r.status), "status"], [r.status === "final" ? `final (revision ${r.revision})` : `${r.as_of_minute} (loaded ${r.as_of_loaded})`, "muted"],
  ]);
}

function renderFinals(rows) {
  fillTable("#finals", rows, (r) => [
    [r.meter], [groupText(r.group_by)], [period(r)], [r.total, "num total"], [String(r.event_count), "num"], [String(r.revision), "num"],
  ]);
}

function meterBar(percent) {
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${Math.min(100, Number(percent))}%`;
  if (Number(percent) >= 100) fill.className = "over";
  const text = document.createElement("span");
  text.className = "muted";
  text.textContent = ` ${Number(percent).toFixed(1)} %`;
  bar.appendChild(fill);
  const wrap = document.createElement("span");
  wrap.append(bar, text);
  return wrap;
}

function renderCost(payload) {
  $("#cost-panel").hidden = !payload.priced;
  if (!payload.priced) return;
  fillTable("#limits", payload.limits, (r) => [
    [r.meter], [period(r)], [r.used, "num"], [r.limit, "num"], [meterBar(r.used_pct), "limit"],
  ]);
  fillTable("#cost", payload.rows, (r) => [
    [r.meter], [groupText(r.group_by)], [period(r)], [r.quantity, "num"],
    [r.cost === null ? "not priced" : `${r.cost} ${r.currency}`, "num cost"],
    [r.projected_quantity, "num"], [r.projected_cost === null ? "—" : `${r.projected_cost} ${r.currency}`, "num"],
    [badge(r.is_final ? "final" : "provisional"), "status"],
  ]);
}

function renderHealth(health) {
  const list = $("#health");
  list.replaceChildren();
  const labels = {
    raw_events: "raw events", dead_letters: "dead letters", dead_letters_24h: "dead letters (24 h)",
    duplicates_dropped: "duplicates dropped", conflicting_ids: "conflicting duplicates", corrections: "corrections",
    finals: "final totals", customers: "customers", loader_last_batch: "loader: last batch",
    loader_idle_seconds: "loader: seconds since last batch", loader_consumer_lag: "loader: records behind",
    quarantined: "loader: records in quarantine",
  };
  for (const [key, label] of Object.entries(labels)) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.id = `health-${key.replaceAll("_", "-")}`;
    const value = health[key];
    dd.textContent = value === null || value === undefined ? "—" : String(value);
    if (["conflicting_ids", "loader_consumer_lag", "quarantined"].includes(key) && Number(value) > 0) dd.className = "alert";
    list.append(dt, dd);
  }
  const body = $("#dead-letter-reasons tbody");
  body.replaceChildren();
  for (const r of health.dead_letter_reasons || []) {
    const tr = document.createElement("tr");
    tr.dataset.reason = r.reason;
    cell(tr, r.reason);
    cell(tr, String(r.total), "num");
    cell(tr, String(r.last_24h), "num");
    body.appendChild(tr);
  }
}

function bucketLabel(bucket) {
  return `${bucket.slice(0, 10)} ${bucket.slice(11, 16)}Z`; // UTC; a day bucket starts at the customer's local midnight
}

// Every bucket of the range at minute/hour granularity (an hour without usage is drawn, as 0 or a
// gap); local days have no fixed length, so day charts show the days that have usage.
function allBuckets(payload, lines) {
  const seen = new Set(lines.flatMap((l) => l.points.map((p) => p[0])));
  const step = { minute: 60e3, hour: 3600e3 }[payload.granularity];
  if (step && payload.from && payload.to) {
    const end = Date.parse(payload.to);
    for (let t = Math.floor(Date.parse(payload.from) / step) * step; t < end && seen.size < 5000; t += step) {
      seen.add(new Date(t).toISOString());
    }
  }
  return [...seen].sort();
}

function renderSeries(payload) {
  $("#series-range").textContent = `${payload.granularity}, ${payload.from} → ${payload.to}`;
  const byMeter = new Map();
  for (const line of payload.series) {
    if (!byMeter.has(line.meter)) byMeter.set(line.meter, []);
    byMeter.get(line.meter).push(line);
  }
  const container = $("#charts");
  container.querySelector(".empty")?.remove();
  for (const [meter, chart] of charts) {
    if (!byMeter.has(meter)) {
      chart.destroy();
      charts.delete(meter);
      container.querySelector(`[data-meter="${CSS.escape(meter)}"]`)?.remove();
    }
  }
  for (const [meter, lines] of byMeter) {
    const buckets = allBuckets(payload, lines);
    const datasets = lines.map((line, i) => {
      const values = new Map(line.points.map((p) => [p[0], p[1]]));
      // A bucket without usage is 0 for additive meters; for max/min/latest it has no value.
      const missing = ["sum", "count", "unique_count"].includes(line.aggregation) ? 0 : null;
      return {
        label: groupText(line.group_by) === "—" ? `${meter} (${line.aggregation})` : groupText(line.group_by),
        data: buckets.map((b) => (values.has(b) ? Number(values.get(b)) : missing)),
        exactValues: buckets.map((b) => values.get(b) ?? null),
        buckets,
        groupBy: line.group_by,
        borderColor: COLORS[i % COLORS.length],
        backgroundColor: COLORS[i % COLORS.length],
        spanGaps: true,
        pointRadius: buckets.length > 200 ? 0 : 2,
      };
    });
    const labels = buckets.map(bucketLabel);
    let chart = charts.get(meter);
    if (!chart) {
      const box = document.createElement("div");
      box.className = "chart";
      box.dataset.meter = meter;
      const canvas = document.createElement("canvas");
      canvas.id = `chart-${meter}`;
      box.appendChild(canvas);
      container.appendChild(box);
      chart = new Chart(canvas, {
        type: state.granularity === "day" ? "bar" : "line",
        data: { labels, datasets },
        options: {
          animation: false, maintainAspectRatio: false,
          plugins: {
            title: { display: true, text: `${meter} per ${state.granularity}` },
            tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${ctx.dataset.exactValues[ctx.dataIndex]}` } },
          },
          scales: { x: { ticks: { maxTicksLimit: 12 } }, y: { beginAtZero: true } },
        },
      });
      charts.set(meter, chart);
    } else {
      chart.config.type = state.granularity === "day" ? "bar" : "line";
      chart.options.plugins.title.text = `${meter} per ${state.granularity}`;
      chart.data.labels = labels;
      chart.data.datasets = datasets;
      chart.update();
    }
    chart.canvas.dataset.granularity = payload.granularity;
  }
  if (!payload.series.length) {
    const empty = document.createElement("p");
    empty.className = "empty muted";
    empty.textContent = "no usage in this range";
    container.appendChild(empty);
  }
}

const REASONS = {
  missing_token: "This page needs an access token: open it as …/#token=<token> (a token from `metering token create`).",
  malformed_token: "The access token in this link is not one this dashboard issues (cut short when copied?).",
  bad_signature: "The access token in this link was not signed by this dashboard's key.",
  expired_token: "The access token in this link has expired: ask for a new link.",
  revoked_token: "The access token in this link has been revoked: ask for a new link.",
};

function showError(error) {
  const box = $("#error");
  box.hidden = !error;
  if (!error) {
    box.textContent = "";
    delete box.dataset.status;
    return;
  }
  let text = String(error.message || error);
  if (error.status === 401) text = `Not signed in: ${REASONS[error.reason] || text}`;
  else if (error.status === 403) text = `Not allowed: this access token may not read that (${error.reason}). ${error.message}`;
  box.textContent = text;
  box.dataset.status = String(error.status || "");
}

// The token says which view this is: an operator picks any customer and sees the pipeline's health;
// a customer token shows its own customer only (no picker, no operator panels): the embeddable view.
async function loadAccess() {
  if (window.dashboard.access) return window.dashboard.access;
  const config = await api("/api/config", {});
  const access = config.access;
  window.dashboard.access = access;
  document.body.dataset.scope = access.scope;
  $("#storage").textContent = config.storage || "";
  if (access.scope === "customer") {
    state.customer = access.customer;
    $("#customer-name").textContent = access.customer;
    $("#customer-name").hidden = false;
  } else {
    $("#customer-picker").hidden = false;
    $("#health-panel").hidden = false;
  }
  return access;
}

// A customer's meters, from its usage (the customer list is the operator's).
const seenMeters = new Set();
function customerMeters(rows) {
  for (const r of rows) seenMeters.add(r.meter);
  if (state.meter) seenMeters.add(state.meter);
  const meters = [...seenMeters].sort();
  const select = $("#meter");
  if (select.options.length !== meters.length + 1) {
    select.replaceChildren(new Option("all meters", ""), ...meters.map((m) => new Option(m, m)));
  }
  select.value = state.meter;
}

async function loadCustomers() {
  const { customers } = await api("/api/customers", {});
  const select = $("#customer");
  select.replaceChildren(...customers.map((c) => new Option(c.customer_id, c.customer_id)));
  if (!state.customer && customers.length) state.customer = customers[0].customer_id;
  select.value = state.customer;
  const meters = customers.find((c) => c.customer_id === state.customer)?.meters || [];
  $("#meter").replaceChildren(new Option("all meters", ""), ...meters.map((m) => new Option(m, m)));
  $("#meter").value = state.meter;
}

function remember() {
  const query = new URLSearchParams({ granularity: state.granularity });
  if (window.dashboard.access?.scope !== "customer") query.set("customer", state.customer);
  if (state.meter) query.set("meter", state.meter);
  window.history.replaceState(null, "", `?${query}`);
  for (const button of document.querySelectorAll(".granularity button")) {
    button.classList.toggle("active", button.dataset.granularity === state.granularity);
  }
}

let inFlight = null;
let again = false;
async function refresh() {
  if (inFlight) {
    again = true; // a change arrived while loading: load once more when this one ends
    return inFlight;
  }
  if (denied) return null;
  inFlight = (async () => {
    try {
      const access = await loadAccess();
      const operator = access.scope === "operator";
      if (operator) await loadCustomers();
      remember();
      const scope = { customer: state.customer, meter: state.meter };
      const [usage, series, finals, health, cost] = await Promise.all([
        state.customer ? api("/api/usage", scope) : { rows: [] },
        state.customer ? api("/api/series", { ...scope, granularity: state.granularity }) : { series: [], granularity: state.granularity, from: "", to: "" },
        state.customer ? api("/api/finals", scope) : { rows: [] },
        operator ? api("/api/health", {}) : null,
        state.customer ? api("/api/cost", scope) : { priced: false, rows: [], limits: [] },
      ]);
      Object.assign(window.dashboard.data, { usage, series, finals, health, cost });
      if (!operator) customerMeters(state.meter ? [] : usage.rows);
      renderUsage(usage.rows);
      renderSeries(series);
      renderFinals(finals.rows);
      renderCost(cost);
      if (health) renderHealth(health);
      showError(null);
      window.dashboard.refreshes += 1;
      document.body.dataset.refreshes = String(window.dashboard.refreshes);
      document.body.dataset.granularity = series.granularity;
      $("#refreshed").textContent = `refreshed ${new Date().toLocaleTimeString()} · every ${REFRESH_S} s`;
    } catch (error) {
      if (error.status === 401) denied = true;
      showError(error);
    } finally {
      inFlight = null;
      if (again) {
        again = false;
        refresh();
      }
    }
  })();
  return inFlight;
}

$("#customer").addEventListener("change", (e) => { state.customer = e.target.value; state.meter = ""; refresh(); });
$("#meter").addEventListener("change", (e) => { state.meter = e.target.value; refresh(); });
for (const button of document.querySelectorAll(".granularity button")) {
  button.addEventListener("click", () => {
    state.granularity = button.dataset.granularity;
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    $("#charts").replaceChildren();
    refresh();
  });
}
refresh();
setInterval(refresh, REFRESH_S * 1000);
