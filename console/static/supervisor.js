/* Guichet supervisor wallboard (templates/supervisor.html).
 *
 * Loads GET /api/wallboard, then follows the pushes of the topic role:supervisor
 * (console/wallboard.py, console/coaching.py):
 *   wallboard.queue / wallboard.agent  one row of figures
 *   wallboard.ivr                      {in_ivr, deflection, callbacks_pending}
 *   wallboard.sample                   a chart point {at, waiting, service_level}
 *   wallboard.reset                    a new day: the whole snapshot
 *   hand                               an agent raised / lowered a hand
 *   spy_session                        a listen / whisper / barge session changed
 * Actions are REST calls: /api/supervision/spy, /messages, /agents/..., /calls/.../reassign.
 * Everything from the server is inserted as text, never as HTML.
 */
(function () {
  "use strict";

  const P = window.GuichetPage;
  const $ = P.$, el = P.el, clear = P.clear;
  let t = function (key) { return key; };
  let config = {};
  const state = {
    queues: {}, agents: {}, waiting: [], ivr: { in_ivr: 0, deflection: [], callbacks_pending: 0 },
    series: [], hands: {}, spy: null, threshold: 20,
    coached: {}, // agent id -> a live spy session of any supervisor on their call
    sort: { queues: ["queue", 1], agents: ["display_name", 1] },
    filter: { service: "", lang: "", state: "", search: "" },
  };
  let charts = null;

  // --- feedback ----------------------------------------------------------------------------

  function announce(text) { $("announcer").textContent = text; }

  function showError(error) {
    const box = $("board-error");
    let text = t("agent.errors.generic", { status: error.status });
    if (error.status === 0) text = t("agent.errors.network");
    else if (error.code && t("wallboard.errors." + error.code) !== "wallboard.errors." + error.code) {
      text = t("wallboard.errors." + error.code);
    } else if (error.code && t("coaching.errors." + error.code) !== "coaching.errors." + error.code) {
      text = t("coaching.errors." + error.code);
    } else if (error.code && t("agent.errors." + error.code) !== "agent.errors." + error.code) {
      text = t("agent.errors." + error.code, { message: error.detail && error.detail.message });
    } else if (error.status === 403) text = t("agent.errors.forbidden");
    box.textContent = text;
    box.hidden = false;
  }

  async function act(action, done) {
    $("board-error").hidden = true;
    try {
      const result = await action();
      if (done) announce(done);
      return result;
    } catch (error) {
      showError(error);
      return undefined;
    }
  }

  // --- loading -----------------------------------------------------------------------------

  async function load() {
    const data = await act(function () { return P.api("GET", "/api/wallboard"); });
    if (!data) return;
    applySnapshot(data);
    const hands = await act(function () { return P.api("GET", "/api/supervision/hands"); });
    state.hands = {};
    (hands || []).forEach(function (hand) { if (hand.raised) state.hands[hand.agent] = hand; });
    const spies = await act(function () { return P.api("GET", "/api/supervision/spy"); });
    state.spy = (spies || []).find(function (s) { return s.supervisor === config.username; }) || null;
    state.coached = {};
    (spies || []).forEach(function (s) { state.coached[s.agent] = s; });
    renderAll();
  }

  function applySnapshot(data) {
    state.threshold = data.threshold;
    state.queues = {};
    (data.queues || []).forEach(function (q) { state.queues[q.queue] = q; });
    state.agents = {};
    (data.agents || []).forEach(function (a) { state.agents[a.agent] = a; });
    state.ivr = data.ivr || state.ivr;
    state.series = data.series || [];
    if (data.waiting_calls) state.waiting = data.waiting_calls;
  }

  async function loadWaiting() {
    const calls = await act(function () { return P.api("GET", "/api/wallboard/waiting"); });
    if (calls) { state.waiting = calls; renderWaiting(); }
  }

  // --- filters and sorting -----------------------------------------------------------------

  function queueVisible(q) {
    const f = state.filter;
    return (!f.service || q.service === f.service) && (!f.lang || q.lang === f.lang);
  }

  function agentVisible(a) {
    const f = state.filter;
    if (f.service && a.services.indexOf(f.service) < 0) return false;
    if (f.lang && a.langs.indexOf(f.lang) < 0) return false;
    if (f.state && a.state !== f.state) return false;
    if (f.search) {
      const hay = (a.display_name + " " + a.agent).toLowerCase();
      if (hay.indexOf(f.search.toLowerCase()) < 0) return false;
    }
    return true;
  }

  function sortRows(rows, table) {
    const key = state.sort[table][0], dir = state.sort[table][1];
    return rows.sort(function (x, y) {
      let a = x[key], b = y[key];
      if (Array.isArray(a)) a = a.join(",");
      if (Array.isArray(b)) b = b.join(",");
      if (a === null || a === undefined) return 1;
      if (b === null || b === undefined) return -1;
      if (typeof a === "string") return dir * a.localeCompare(b);
      return dir * (a - b);
    });
  }

  function bindSorting(table) {
    $(table).querySelectorAll("th[data-key] button").forEach(function (button) {
      button.addEventListener("click", function () {
        const th = button.parentElement, key = th.dataset.key;
        const current = state.sort[table];
        state.sort[table] = [key, current[0] === key ? -current[1] : 1];
        $(table).querySelectorAll("th[data-key]").forEach(function (other) {
          other.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", state.sort[table][1] > 0 ? "ascending" : "descending");
        render(table);
      });
    });
  }

  function refreshFilterOptions() {
    const services = new Set(), langs = new Set(), states = new Set();
    Object.values(state.queues).forEach(function (q) {
      services.add(q.service); if (q.lang) langs.add(q.lang);
    });
    Object.values(state.agents).forEach(function (a) { states.add(a.state); });
    fillSelect($("filter-service"), Array.from(services).sort(), function (v) { return v; });
    fillSelect($("filter-lang"), Array.from(langs).sort(), function (v) { return v.toUpperCase(); });
    fillSelect($("filter-state"), Array.from(states).sort(), function (v) { return t("agent.state." + v); });
  }

  function fillSelect(select, values, labelOf) {
    const chosen = select.value;
    const known = Array.from(select.options).map(function (o) { return o.value; }).join("|");
    if (known === [""].concat(values).join("|")) return;
    while (select.options.length > 1) select.remove(1);
    values.forEach(function (v) { select.append(el("option", { value: v, text: labelOf(v) })); });
    select.value = values.indexOf(chosen) >= 0 ? chosen : "";
  }

  // --- rendering ---------------------------------------------------------------------------

  function now() { return Date.now() / 1000; }

  function render(table) {
    if (table === "queues") renderQueues(); else renderAgents();
  }

  function renderAll() {
    refreshFilterOptions();
    renderQueues(); renderAgents(); renderSummary(); renderIvr(); renderWaiting();
    renderHands(); renderSpy(); renderCharts();
  }

  function cell(text, numeric) { return el("td", { text: text, class: numeric ? "num" : null }); }

  function renderQueues() {
    const body = $("queues").tBodies[0];
    clear(body);
    const rows = sortRows(Object.values(state.queues).filter(queueVisible), "queues");
    rows.forEach(function (q) {
      body.append(el("tr", { dataset: { queue: q.queue } }, [
        cell(q.queue),
        cell(q.waiting, true),
        cell(q.longest_waiting_since ? P.duration(now() - q.longest_waiting_since) : "–", true),
        cell(q.offered, true),
        cell(q.answered, true),
        cell(q.abandoned, true),
        cell(P.percent(q.service_level), true),
        cell(P.percent(q.abandon_rate), true),
        cell(P.duration(q.asa), true),
        cell(P.duration(q.aht), true),
        cell(q.callbacks_pending, true),
        cell(q.available + " / " + q.on_call + " / " + q.paused, true),
      ]));
    });
    $("queues-none").hidden = rows.length > 0;
  }

  function agentActions(a) {
    const box = el("div", { class: "actions" });
    if (a.state === "on_call" && a.call_id && config.has_phone) {
      config.spy_modes.forEach(function (mode) {
        box.append(el("button", {
          type: "button", text: t("wallboard.actions." + mode), dataset: { spy: mode },
          onclick: function () { startSpy(a.call_id, mode); },
        }));
      });
    }
    if (a.user_id) {
      box.append(el("button", { type: "button", text: t("wallboard.actions.message"),
        dataset: { action: "message" }, onclick: function () { messageAgent(a); } }));
    }
    if (a.state === "paused") {
      box.append(el("button", { type: "button", text: t("wallboard.actions.unpause"),
        dataset: { action: "unpause" }, onclick: function () { presence(a, "ready"); } }));
    } else if (a.state !== "logged_out") {
      box.append(el("button", { type: "button", text: t("wallboard.actions.pause"),
        dataset: { action: "pause" }, onclick: function () { presence(a, "paused"); } }));
    }
    if (a.state !== "logged_out") {
      box.append(el("button", { type: "button", text: t("wallboard.actions.logout"),
        dataset: { action: "logout" }, onclick: function () { presence(a, "logged_out"); } }));
    }
    box.append(el("button", { type: "button", text: t("wallboard.actions.queues"),
      dataset: { action: "queues" }, onclick: function () { editQueues(a); } }));
    return box;
  }

  function renderAgents() {
    const body = $("agents").tBodies[0];
    clear(body);
    const rows = sortRows(Object.values(state.agents).filter(agentVisible), "agents");
    rows.forEach(function (a) {
      const hand = state.hands[a.agent];
      const coached = state.coached[a.agent];
      let stateText = t("agent.state." + a.state);
      if (a.state === "paused" && a.pause_reason) {
        const key = "agent.pause_reason." + a.pause_reason;
        stateText += " — " + (t(key) !== key ? t(key) : a.pause_reason);
      }
      const call = a.call_id ? (a.caller ? t("wallboard.agents.caller", { caller: a.caller }) : "") +
        (a.call_queue ? " (" + a.call_queue + ")" : "") : "";
      body.append(el("tr", { dataset: { agent: a.agent, state: a.state, hand: hand ? "true" : "false" } }, [
        el("td", {}, [a.display_name || a.name,
          hand ? el("span", { class: "hand", text: " ✋ " + t("wallboard.agents.hand") }) : null,
          coached ? el("span", { class: "coached", text: " 🎧 " + t("wallboard.agents.coached", {
            name: coached.supervisor_name || coached.supervisor, mode: t("wallboard.actions." + coached.mode) }) }) : null]),
        el("td", {}, [el("span", { class: "state", dataset: { state: a.state }, text: stateText })]),
        el("td", { class: "num ticking", dataset: { since: a.since || "" },
          text: a.since ? P.duration(now() - a.since) : "–" }),
        cell(call),
        cell((a.queues || []).map(function (q) {
          const penalty = (a.penalties || {})[q];
          return penalty ? q + " (" + penalty + ")" : q;
        }).join(", ")),
        cell(a.handled, true),
        cell(P.duration(a.aht), true),
        el("td", {}, [agentActions(a)]),
      ]));
    });
    $("agents-none").hidden = rows.length > 0;
  }

  function renderSummary() {
    const queues = Object.values(state.queues).filter(queueVisible);
    let waiting = 0, oldest = null, inSl = 0, offered = 0, abandoned = 0, callbacks = 0;
    queues.forEach(function (q) {
      waiting += q.waiting; inSl += q.answered_in_sl; offered += q.offered;
      abandoned += q.abandoned; callbacks += q.callbacks_pending;
      if (q.longest_waiting_since && (oldest === null || q.longest_waiting_since < oldest)) {
        oldest = q.longest_waiting_since;
      }
    });
    $("sum-waiting").textContent = waiting;
    $("sum-longest").textContent = oldest ? P.duration(now() - oldest) : "–";
    $("sum-longest").dataset.since = oldest || "";
    $("sum-sl").textContent = P.percent(offered ? inSl / offered : null);
    $("sum-sl-label").textContent = t("wallboard.summary.service_level", { threshold: state.threshold });
    $("sum-abandon").textContent = P.percent(offered ? abandoned / offered : null);
    $("sum-ivr").textContent = state.ivr.in_ivr;
    $("sum-callbacks").textContent = state.filter.service || state.filter.lang ? callbacks : state.ivr.callbacks_pending;
    $("sum-ready").textContent = Object.values(state.agents).filter(function (a) {
      return a.state === "ready" && agentVisible(a);
    }).length;
    $("sum-waiting").parentElement.dataset.alert = waiting > 0 && oldest && now() - oldest > state.threshold ? "true" : "false";
  }

  function renderIvr() {
    $("ivr-now").textContent = state.ivr.in_ivr;
    const body = $("ivr").tBodies[0];
    clear(body);
    (state.ivr.deflection || []).forEach(function (row) {
      body.append(el("tr", {}, [cell(row.request_type || "–"), cell(row.calls, true),
        cell(row.deflected, true), cell(P.percent(row.rate), true)]));
    });
    $("ivr-none").hidden = (state.ivr.deflection || []).length > 0;
  }

  function renderWaiting() {
    const list = $("waiting");
    clear(list);
    state.waiting.forEach(function (call) {
      list.append(el("li", { dataset: { call: call.call_id } }, [
        el("span", { text: call.queue + " · " + (call.caller || "?") + " · " }),
        el("span", { class: "ticking", dataset: { since: call.since || "" },
          text: call.since ? P.duration(now() - call.since) : "" }),
        call.case_reference ? el("span", { text: " · " + call.case_reference }) : null,
        " ",
        el("button", { type: "button", text: t("wallboard.waiting.reassign"),
          onclick: function () { reassign(call); } }),
      ]));
    });
    $("waiting-none").hidden = state.waiting.length > 0;
  }

  function renderHands() {
    const list = $("hands");
    clear(list);
    const hands = Object.values(state.hands);
    hands.forEach(function (hand) {
      list.append(el("li", { dataset: { agent: hand.agent } }, [
        el("span", { class: "hand", text: "✋ " + t("wallboard.hands.raised", { name: hand.display_name || hand.agent }) }),
        " ",
        hand.call_id && config.has_phone ? el("button", { type: "button", text: t("wallboard.actions.join_whisper"),
          dataset: { join: hand.agent }, onclick: function () { startSpy(hand.call_id, "whisper"); } }) : null,
      ]));
    });
    $("hands-none").hidden = hands.length > 0;
  }

  function renderSpy() {
    const spy = state.spy && state.spy.state !== "ended" ? state.spy : null;
    $("spy-session").hidden = !spy;
    $("spy-none").hidden = !!spy;
    if (!spy) return;
    const agent = state.agents[spy.agent];
    $("spy-text").textContent = t("wallboard.spy.session", {
      mode: t("wallboard.actions." + spy.mode), agent: agent ? agent.display_name : spy.agent, call: spy.call_id,
    }) + " — " + t("wallboard.spy.state_" + spy.state);
    const modes = $("spy-modes");
    clear(modes);
    config.spy_modes.forEach(function (mode) {
      modes.append(el("button", { type: "button", text: t("wallboard.actions." + mode),
        "aria-pressed": mode === spy.mode ? "true" : "false", dataset: { mode: mode },
        onclick: function () { switchSpy(mode); } }));
    });
    modes.append(el("button", { type: "button", text: t("wallboard.actions.stop"),
      dataset: { mode: "stop" }, onclick: stopSpy }));
  }

  function renderCharts() {
    const points = state.series;
    $("charts-none").hidden = points.length > 1;
    if (typeof window.uPlot !== "function" || points.length < 2) return;
    const xs = points.map(function (p) { return p.at; });
    const waiting = points.map(function (p) { return p.waiting; });
    const sl = points.map(function (p) { return p.service_level === null ? null : Math.round(p.service_level * 100); });
    const width = Math.max(320, $("chart-waiting").clientWidth || 480);
    if (!charts) {
      charts = {
        waiting: new window.uPlot({ title: t("wallboard.charts.waiting"), width: width, height: 200,
          series: [{}, { label: t("wallboard.charts.waiting"), stroke: "#1d4ed8", fill: "rgba(29,78,216,.1)" }] },
          [xs, waiting], $("chart-waiting")),
        sl: new window.uPlot({ title: t("wallboard.charts.service_level"), width: width, height: 200,
          scales: { y: { range: [0, 100] } },
          series: [{}, { label: t("wallboard.charts.service_level"), stroke: "#15803d" }] },
          [xs, sl], $("chart-sl")),
      };
    } else {
      charts.waiting.setData([xs, waiting]);
      charts.sl.setData([xs, sl]);
    }
  }

  /** The mystery caller's newest test calls, each one translated sentence. */
  async function loadProbes() {
    const data = await act(function () { return P.api("GET", "/api/wallboard/probes"); });
    if (!data) return;
    const list = $("probes");
    clear(list);
    data.probes.forEach(function (probe) {
      list.append(el("li", { dataset: { script: probe.script, outcome: probe.outcome } }, [
        el("strong", { text: probe.script + " — " + (probe.outcome_label || probe.outcome) + ": " }),
        el("span", { text: probe.text || "" }),
      ]));
    });
    $("probes-none").hidden = data.probes.length > 0;
  }

  function tick() {
    document.querySelectorAll(".ticking").forEach(function (node) {
      const since = parseFloat(node.dataset.since);
      if (since) node.textContent = P.duration(now() - since);
    });
    const longest = parseFloat($("sum-longest").dataset.since);
    if (longest) $("sum-longest").textContent = P.duration(now() - longest);
  }

  // --- dialogs -----------------------------------------------------------------------------

  /** A modal form; resolves with the form's values, or null when cancelled. */
  function ask(title, okLabel, fields) {
    const dialog = $("dialog"), body = $("dialog-body");
    $("dialog-h").textContent = title;
    $("dialog-ok").textContent = okLabel;
    clear(body);
    fields.forEach(function (field) { body.append(field); });
    return new Promise(function (resolve) {
      function finish(result) {
        $("dialog-form").onsubmit = null;
        $("dialog-cancel").onclick = null;
        if (dialog.open) dialog.close();
        resolve(result);
      }
      $("dialog-form").onsubmit = function (event) {
        event.preventDefault();
        const values = {};
        body.querySelectorAll("[name]").forEach(function (input) { values[input.name] = input.value; });
        finish(values);
      };
      $("dialog-cancel").onclick = function () { finish(null); };
      dialog.showModal();
      const first = body.querySelector("input, select, textarea");
      if (first) first.focus();
    });
  }

  function field(labelText, input) { return el("label", { class: "stack" }, [labelText, input]); }

  function reasonField(name) {
    const select = el("select", { name: name || "reason", required: true });
    config.pause_reasons.forEach(function (r) { select.append(el("option", { value: r, text: t("agent.pause_reason." + r) })); });
    return field(t("wallboard.actions.reason"), select);
  }

  // --- actions -----------------------------------------------------------------------------

  async function presence(a, target) {
    const title = t(target === "ready" ? "wallboard.actions.unpause" : target === "paused" ?
      "wallboard.actions.pause" : "wallboard.actions.logout") + " — " + (a.display_name || a.agent);
    const fields = target === "paused" ? [reasonField()] :
      [field(t("wallboard.actions.reason"), el("input", { name: "reason", required: true, maxlength: "64" }))];
    const values = await ask(title, t("wallboard.actions.send"), fields);
    if (!values) return;
    await act(function () {
      return P.api("POST", "/api/supervision/agents/" + encodeURIComponent(a.agent) + "/presence",
        { state: target, reason: values.reason });
    }, t("wallboard.done.requested"));
  }

  async function editQueues(a) {
    const queues = Object.keys(state.queues).sort();
    const select = el("select", { name: "queue" });
    queues.forEach(function (q) { select.append(el("option", { value: q, text: q })); });
    const action = el("select", { name: "action" }, [
      el("option", { value: "add", text: t("wallboard.actions.add_queue") }),
      el("option", { value: "remove", text: t("wallboard.actions.remove_queue") }),
    ]);
    const penalty = el("input", { name: "penalty", type: "number", min: "0", max: "100", value: "0" });
    const values = await ask(t("wallboard.actions.queues") + " " + (a.display_name || a.agent), t("wallboard.actions.save"),
      [field(t("wallboard.queues.queue"), select), field(t("wallboard.agents.actions"), action),
        field(t("wallboard.actions.penalty"), penalty)]);
    if (!values || !values.queue) return;
    const path = "/api/supervision/agents/" + encodeURIComponent(a.agent) + "/queues/" + encodeURIComponent(values.queue);
    await act(function () {
      return values.action === "remove" ? P.api("DELETE", path) :
        P.api("PUT", path, { penalty: parseInt(values.penalty || "0", 10) });
    }, t("wallboard.done.requested"));
  }

  async function messageAgent(a) {
    const values = await ask(t("wallboard.message.heading", { name: a.display_name || a.agent }),
      t("wallboard.actions.send"),
      [field(t("wallboard.message.text"), el("textarea", { name: "text", required: true, maxlength: "500", rows: "3" }))]);
    if (!values || !values.text.trim()) return;
    await act(function () {
      return P.api("POST", "/api/supervision/messages",
        { user_id: a.user_id, text: values.text.trim(), call_id: a.call_id || null });
    }, t("wallboard.message.sent"));
  }

  async function reassign(call) {
    const select = el("select", { name: "agent", required: true });
    Object.values(state.agents).filter(function (a) { return a.state === "ready"; })
      .concat(Object.values(state.agents).filter(function (a) { return a.state !== "ready"; }))
      .forEach(function (a) {
        select.append(el("option", { value: a.agent, text: (a.display_name || a.agent) + " — " + t("agent.state." + a.state) }));
      });
    const values = await ask(t("wallboard.waiting.reassign_to"), t("wallboard.waiting.confirm"),
      [field(t("wallboard.agents.name"), select),
        field(t("wallboard.waiting.reassign_reason"), el("input", { name: "reason", required: true, maxlength: "64" }))]);
    if (!values) return;
    const agent = state.agents[values.agent];
    await act(function () {
      return P.api("POST", "/api/supervision/calls/" + encodeURIComponent(call.call_id) + "/reassign",
        { agent: values.agent, reason: values.reason });
    }, t("wallboard.done.reassigned", { agent: agent ? agent.display_name : values.agent }));
    loadWaiting();
  }

  const SPY_ORDER = { starting: 0, live: 1, ended: 2 };

  /** The REST answer and the spy_session pushes race: a session never goes back in state
   * (starting -> live -> ended), whichever arrives last. */
  function mergeSpy(session) {
    const known = state.spy;
    if (known && known.id === session.id && SPY_ORDER[known.state] > SPY_ORDER[session.state]) {
      state.spy = Object.assign({}, session, { state: known.state });
    } else {
      state.spy = session;
    }
    renderSpy();
  }

  async function startSpy(callId, mode) {
    const session = await act(function () {
      return P.api("POST", "/api/supervision/spy",
        { call_id: callId, mode: mode, reason: $("spy-reason").value.trim() || null });
    });
    if (session) mergeSpy(session);
  }

  async function switchSpy(mode) {
    if (!state.spy) return;
    const session = await act(function () {
      return P.api("PATCH", "/api/supervision/spy/" + state.spy.id, { mode: mode });
    });
    if (session) mergeSpy(session);
  }

  async function stopSpy() {
    if (!state.spy) return;
    const id = state.spy.id;
    await act(function () { return P.api("DELETE", "/api/supervision/spy/" + id); });
    if (state.spy && state.spy.id === id) state.spy = Object.assign({}, state.spy, { state: "ended" });
    renderSpy();
  }

  // --- pushes ------------------------------------------------------------------------------

  function onQueue(row) {
    const before = state.queues[row.queue];
    state.queues[row.queue] = row;
    if (!before) refreshFilterOptions();
    renderQueues(); renderSummary();
    if (!before || before.waiting !== row.waiting) loadWaiting();
  }

  function onAgent(row) {
    const before = state.agents[row.agent];
    state.agents[row.agent] = row;
    if (!before || before.state !== row.state) refreshFilterOptions();
    renderAgents(); renderSummary();
  }

  function onHand(hand) {
    if (hand.raised) state.hands[hand.agent] = hand; else delete state.hands[hand.agent];
    renderHands(); renderAgents();
  }

  function onSpy(session) {
    if (session.state === "ended") delete state.coached[session.agent];
    else state.coached[session.agent] = session;
    renderAgents();
    if (session.supervisor !== config.username) return; // another supervisor's session
    if (!state.spy || state.spy.id === session.id || session.state !== "ended") mergeSpy(session);
  }

  function start() {
    const root = $("board");
    if (!root) return;
    const texts = P.readJson("page-texts");
    config = P.readJson("page-config");
    t = P.translator(texts);
    bindSorting("queues");
    bindSorting("agents");
    ["service", "lang", "state"].forEach(function (name) {
      $("filter-" + name).addEventListener("change", function (event) {
        state.filter[name] = event.target.value; renderQueues(); renderAgents(); renderSummary();
      });
    });
    $("filter-search").addEventListener("input", function (event) {
      state.filter.search = event.target.value.trim(); renderAgents();
    });
    const push = window.guichetPush;
    if (push) {
      push.on("wallboard.queue", onQueue);
      push.on("wallboard.agent", onAgent);
      push.on("wallboard.ivr", function (ivr) { state.ivr = ivr; renderIvr(); renderSummary(); });
      push.on("wallboard.sample", function (point) { state.series.push(point); renderCharts(); });
      push.on("wallboard.reset", function (snapshot) { applySnapshot(snapshot); renderAll(); });
      push.on("hand", onHand);
      push.on("spy_session", onSpy);
      push.on("resync", function () { load(); });
    }
    setInterval(tick, 1000);
    loadProbes();
    setInterval(loadProbes, 60000);
    load().then(function () { root.dataset.ready = "true"; });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
