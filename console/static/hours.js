/* Opening hours editor (templates/hours.html): one form per hours node of the chosen flow.
 * The server is the only judge: values go as typed ("08:30-12:30", "2026-11-02"), and when the
 * flow check refuses an edit its messages are shown as they are; nothing was saved then. */
(function () {
  "use strict";

  const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  const dataBlock = document.getElementById("hours-data");
  if (!dataBlock) return;
  const page = JSON.parse(dataBlock.textContent || "{}");
  const T = page.texts || {};
  const nodesBox = document.getElementById("hours-nodes");
  const statusLine = document.getElementById("hours-status");
  const errorBox = document.getElementById("hours-error");
  const errorText = document.getElementById("hours-error-text");
  const issuesList = document.getElementById("hours-issues");
  let flowHash = null;

  function text(key, params) {
    let value = T[key] || key;
    Object.entries(params || {}).forEach(([name, v]) => { value = value.split("{" + name + "}").join(v); });
    return value;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([name, value]) => {
      if (value === null || value === undefined || value === false) return;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    });
    children.flat().forEach((child) => { if (child) node.append(child); });
    return node;
  }

  let counter = 0;
  function uid(prefix) { counter += 1; return prefix + "-" + counter; }

  function labelled(label, input) {
    const id = uid("f");
    input.id = id;
    return [el("label", { for: id, text: label }), input];
  }

  function say(message) {
    statusLine.textContent = message;
    statusLine.hidden = !message;
  }

  function showError(message, issues) {
    errorText.textContent = message;
    issuesList.replaceChildren(...(issues || []).map((i) => el("li", { text: i })));
    errorBox.hidden = !message;
    if (message) errorBox.scrollIntoView({ block: "nearest" });
  }

  async function api(method, path, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let payload = null;
    try { payload = await response.json(); } catch (err) { payload = null; }
    if (response.status === 401) {
      window.location.assign("/login?msg=expired&next=" + encodeURIComponent(window.location.pathname + window.location.search));
    }
    return { status: response.status, ok: response.ok, payload };
  }

  /* --- building the forms ------------------------------------------------------------------ */

  function slotRow(range) {
    const [start, end] = (range || "-").split("-");
    const open = el("input", { type: "time", value: start || "", "data-role": "open", required: true });
    const close = el("input", { type: "time", value: end || "", "data-role": "close", required: true });
    const row = el("span", { class: "hours-slot", "data-role": "slot" },
      labelled(T.slot_open, open), labelled(T.slot_close, close));
    row.append(el("button", { type: "button", text: T.remove, onclick: () => row.remove() }));
    return row;
  }

  function dayRow(day, ranges) {
    const slots = el("span", { class: "hours-slots", "data-role": "slots" }, (ranges || []).map(slotRow));
    const closedNote = el("span", { class: "closed-note", text: T.closed_all_day });
    const refresh = () => { closedNote.hidden = slots.children.length > 0; };
    new MutationObserver(refresh).observe(slots, { childList: true });
    refresh();
    return el("div", { class: "hours-day", "data-day": day },
      el("span", { class: "day-name", text: T["day." + day] || day }),
      slots, closedNote,
      el("button", { type: "button", text: T.add_slot, onclick: () => slots.append(slotRow("")) }));
  }

  function closureRow(closure) {
    const c = closure || { date: "", start: null, end: null, reason: "" };
    const kind = el("select", { "data-role": "kind" },
      el("option", { value: "day", text: T.kind_day, selected: !c.start && !c.end }),
      el("option", { value: "span", text: T.kind_span, selected: Boolean(c.start || c.end) }));
    const date = el("input", { type: "date", value: c.date || "", "data-role": "date" });
    const start = el("input", { type: "datetime-local", value: c.start || "", "data-role": "start" });
    const end = el("input", { type: "datetime-local", value: c.end || "", "data-role": "end" });
    const reason = el("input", { type: "text", value: c.reason || "", maxlength: "200", "data-role": "reason" });
    const dayPart = el("span", { class: "hours-slot" }, labelled(T.date, date));
    const spanPart = el("span", { class: "hours-slot" }, labelled(T.from, start), labelled(T.to, end));
    const sync = () => { dayPart.hidden = kind.value !== "day"; spanPart.hidden = kind.value === "day"; };
    kind.addEventListener("change", sync);
    sync();
    const row = el("div", { class: "hours-closure", "data-role": "closure" },
      labelled(T.closure_kind, kind), dayPart, spanPart, labelled(T.reason, reason));
    row.append(el("button", { type: "button", text: T.remove, onclick: () => row.remove() }));
    return row;
  }

  function nodeForm(node) {
    const schedule = el("fieldset", {}, el("legend", { text: T.schedule }),
      DAYS.map((day) => dayRow(day, node.schedule[day])));
    const holidaysOn = el("input", { type: "checkbox", "data-role": "holidays-on", checked: Boolean(node.holidays) });
    const country = el("input", { type: "text", size: "4", maxlength: "10", "data-role": "country",
      value: node.holidays ? node.holidays.country : "BE" });
    const subdivision = el("input", { type: "text", size: "6", maxlength: "10", "data-role": "subdivision",
      value: node.holidays && node.holidays.subdivision ? node.holidays.subdivision : "" });
    const holidays = el("fieldset", {}, el("legend", { text: T.holidays }),
      el("div", { class: "hours-slot" }, labelled(T.holidays_closed, holidaysOn),
        labelled(T.country, country), labelled(T.subdivision, subdivision)));
    const list = el("div", { "data-role": "closures" }, node.closures.map(closureRow));
    const closures = el("fieldset", {}, el("legend", { text: T.closures }), list,
      el("button", { type: "button", text: T.add_closure, onclick: () => list.append(closureRow(null)) }));
    const save = el("button", { type: "submit", text: T.save });
    const form = el("form", { class: "hours-node", "data-node": node.id, novalidate: true },
      el("h2", { text: text("node", { id: node.id }) }),
      el("p", { text: text("timezone", { zone: node.timezone }) }),
      schedule, holidays, closures, el("p", {}, save));
    form.addEventListener("submit", (event) => { event.preventDefault(); submit(form, node.id, save); });
    return form;
  }

  /* --- reading the forms back ---------------------------------------------------------------- */

  function value(scope, role) {
    const input = scope.querySelector('[data-role="' + role + '"]');
    return input ? input.value.trim() : "";
  }

  function collect(form) {
    const schedule = {};
    form.querySelectorAll(".hours-day").forEach((row) => {
      const ranges = Array.from(row.querySelectorAll('[data-role="slot"]'))
        .map((slot) => value(slot, "open") + "-" + value(slot, "close"));
      if (ranges.length) schedule[row.dataset.day] = ranges;
    });
    const on = form.querySelector('[data-role="holidays-on"]').checked;
    const holidays = on ? { country: value(form, "country") || "BE", subdivision: value(form, "subdivision") || null } : null;
    const closures = Array.from(form.querySelectorAll('[data-role="closure"]')).map((row) => {
      const reason = value(row, "reason") || null;
      if (value(row, "kind") === "day") return { date: value(row, "date"), reason };
      return { start: value(row, "start"), end: value(row, "end"), reason };
    });
    return { schedule, holidays, closures };
  }

  /* --- talking to the server ------------------------------------------------------------------ */

  function render(state) {
    flowHash = state.hash;
    nodesBox.replaceChildren(...state.nodes.map(nodeForm));
    nodesBox.setAttribute("aria-busy", "false");
  }

  function issuesOf(detail) {
    if (detail && Array.isArray(detail.issues)) return detail.issues.map((i) => i.text);
    if (Array.isArray(detail)) return detail.map((e) => (e.loc || []).join(".") + ": " + e.msg);
    return [];
  }

  async function load() {
    const result = await api("GET", "/api/flows/" + encodeURIComponent(page.flow) + "/hours");
    if (result.ok) { render(result.payload); return true; }
    const detail = result.payload ? result.payload.detail : null;
    const code = detail && detail.code;
    nodesBox.replaceChildren();
    if (code === "flow_file_invalid") showError(T.file_invalid, issuesOf(detail));
    else if (result.status === 404) showError(T.not_found);
    else showError(T.failed);
    return false;
  }

  async function submit(form, nodeId, button) {
    showError("");
    say(T.saving);
    button.disabled = true;
    try {
      const body = { ...collect(form), base_hash: flowHash };
      const path = "/api/flows/" + encodeURIComponent(page.flow) + "/hours/" + encodeURIComponent(nodeId);
      const result = await api("PUT", path, body);
      const detail = result.payload ? result.payload.detail : null;
      if (result.ok) {
        render(result.payload);
        say(result.payload.changed ? T.saved : T.unchanged);
      } else if (result.status === 422) {
        say("");
        showError(T.rejected, issuesOf(detail));
      } else if (result.status === 409 && detail && detail.code === "stale_flow") {
        say("");
        await load();
        showError(T.stale);
      } else if (result.status === 409) {
        say("");
        showError(T.file_invalid, issuesOf(detail));
      } else if (result.status === 404) {
        say("");
        showError(T.not_found);
      } else if (result.status === 403) {
        say("");
        showError(T.forbidden);
      } else {
        say("");
        showError(T.failed);
      }
    } catch (err) {
      say("");
      showError(T.failed);
    } finally {
      button.disabled = false;
    }
  }

  if (page.flow) load().catch(() => showError(T.failed));
})();
