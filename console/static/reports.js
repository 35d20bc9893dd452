/* Guichet supervisor reports (templates/reports.html).
 *
 * Reads the form, fetches /api/reports/kpi (JSON: buckets + rows keyed by column name, rates
 * as fractions or null), draws two uPlot charts (calls offered/answered/abandoned, and the
 * service level, per period, summed over the breakdown) and the table. The download links
 * carry the same query. Everything from the server is inserted as text, never as HTML.
 */
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  function json(id) { return JSON.parse($(id).textContent); }

  const T = json("reports-texts");
  const META = json("reports-columns");
  const charts = {};

  function t(key, params) {
    let text = Object.prototype.hasOwnProperty.call(T, key) ? T[key] : key;
    Object.keys(params || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(params[name]));
    });
    return text;
  }

  function query() {
    const form = new FormData($("reports-form"));
    const params = new URLSearchParams();
    ["period", "by", "since", "until", "threshold"].forEach(function (name) {
      const value = form.get(name);
      if (value !== null && value !== "") params.set(name, String(value));
    });
    return params;
  }

  function cell(name, value, by) {
    if (name === "key" && (value === null || value === undefined)) {
      return by === "all" ? t("key_all") : t("key_none");
    }
    if (value === null || value === undefined) return "—";
    const kind = META.kinds[name];
    if (kind === "percent") return (value * 100).toFixed(1) + " %";
    if (kind === "seconds") return Number(value).toFixed(1);
    return String(value);
  }

  function renderTable(data) {
    const head = $("reports-table").querySelector("thead tr");
    const body = $("reports-table").querySelector("tbody");
    head.replaceChildren();
    body.replaceChildren();
    META.columns.forEach(function (name) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name === "key" ? t("by." + data.by) : t("column." + name);
      head.appendChild(th);
    });
    data.rows.forEach(function (row) {
      const tr = document.createElement("tr");
      META.columns.forEach(function (name) {
        const td = document.createElement("td");
        td.textContent = cell(name, row[name], data.by);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    $("reports-caption").textContent = t("table_caption", { by: t("by." + data.by) });
  }

  /** Per period: the sums over the breakdown (the chart shows the whole centre). */
  function series(data) {
    const index = {};
    const x = [], offered = [], answered = [], abandoned = [], within = [], sl = [];
    data.buckets.forEach(function (bucket, i) {
      index[bucket.label] = i;
      x.push(Date.parse(bucket.start) / 1000);
      offered.push(0); answered.push(0); abandoned.push(0); within.push(0);
    });
    data.rows.forEach(function (row) {
      const i = index[row.period];
      offered[i] += row.offered; answered[i] += row.answered;
      abandoned[i] += row.abandoned; within[i] += row.answered_within;
    });
    offered.forEach(function (count, i) { sl.push(count ? (100 * within[i]) / count : null); });
    return { x: x, offered: offered, answered: answered, abandoned: abandoned, sl: sl };
  }

  function draw(id, options, values) {
    if (charts[id]) charts[id].destroy();
    const target = $(id);
    const width = Math.max(300, target.clientWidth || 600);
    charts[id] = new window.uPlot(Object.assign({ width: width, height: 260 }, options), values, target);
  }

  function renderCharts(data) {
    if (!window.uPlot) return; // the table is still there
    const s = series(data);
    draw("chart-calls", {
      scales: { x: { time: true } },
      series: [
        {},
        { label: t("column.offered"), stroke: "#0b5cad", width: 2 },
        { label: t("column.answered"), stroke: "#1f6b2e", width: 2 },
        { label: t("column.abandoned"), stroke: "#a40000", width: 2 },
      ],
    }, [s.x, s.offered, s.answered, s.abandoned]);
    draw("chart-sl", {
      scales: { x: { time: true }, y: { range: [0, 100] } },
      series: [{}, { label: t("column.service_level") + " (%)", stroke: "#6b3fa0", width: 2 }],
    }, [s.x, s.sl]);
  }

  async function load() {
    const params = query();
    const lang = $("reports").dataset.lang;
    $("download-csv").href = "/api/reports/kpi.csv?" + params + "&lang=" + lang;
    $("download-xlsx").href = "/api/reports/kpi.xlsx?" + params + "&lang=" + lang;
    $("reports-error").hidden = true;
    $("reports-status").textContent = t("loading");
    try {
      const response = await fetch("/api/reports/kpi?" + params, {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        let reason = String(response.status);
        try {
          const body = await response.json();
          if (body && body.detail && body.detail.message) reason = body.detail.message;
        } catch (ignored) { /* not JSON */ }
        throw new Error(reason);
      }
      const data = await response.json();
      renderTable(data);
      renderCharts(data);
      $("reports-status").textContent = data.rows.length ? "" : t("no_data");
    } catch (error) {
      $("reports-status").textContent = "";
      $("reports-error").textContent = t("failed", { reason: error.message });
      $("reports-error").hidden = false;
    }
  }

  /** The mystery caller's newest test calls (the same sentences as on the wallboard). */
  async function loadProbes() {
    const response = await fetch("/api/wallboard/probes", {
      credentials: "same-origin", headers: { Accept: "application/json" },
    });
    if (!response.ok) return;
    const data = await response.json();
    const list = $("probes");
    while (list.firstChild) list.removeChild(list.firstChild);
    data.probes.forEach(function (probe) {
      const item = document.createElement("li");
      item.dataset.outcome = probe.outcome;
      item.textContent = probe.script + " — " + (probe.text || probe.outcome);
      list.append(item);
    });
    list.parentElement.hidden = data.probes.length === 0;
  }

  $("reports-form").addEventListener("submit", function (event) {
    event.preventDefault();
    load();
  });
  load();
  loadProbes();
})();
