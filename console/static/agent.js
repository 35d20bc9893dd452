/* Guichet agent desk (templates/agent.html): the pop, the case screen, citizen search,
 * presence and call controls.
 *
 * No framework: the page is server-rendered, this file fills it. Pushes come through
 * console.js (window.guichetPush, protocol in console/WEBSOCKET.md); every action is a call
 * to the console's REST API (/api/cases, /api/citizens, /api/calls, /api/presence).
 * Everything that comes from the server is inserted as text, never as HTML.
 *
 * Pushes rendered here (sent by console/screenpop.py):
 *   screen_pop     {call_id, ringing_since, case, citizen, articles, ivr_path}
 *   pop_withdrawn  {call_id, reason}
 *   call_answered  {call_id, case_reference, agent_channel}
 *   call_held      {call_id, held}
 *   call_ended     {call_id, case_reference, reason}
 *   agent_state    {state, pause_reason, since}
 */
(function () {
  "use strict";

  let T = {};
  const state = {
    lang: "fr",
    pop: null, // the screen_pop data on display
    call: null, // {call_id, connected, held, case_reference}
    caseRef: null,
    caseView: null,
    templates: [],
    results: [],
    loading: {}, // case reference (upper case) -> the load in flight
  };

  // --- small helpers -----------------------------------------------------------------------

  // $, el and clear come from page.js (loaded before this file): one DOM builder for every page.
  const P = window.GuichetPage;
  const $ = P.$, el = P.el, clear = P.clear;

  function t(key, params) {
    let text = Object.prototype.hasOwnProperty.call(T, key) ? T[key] : key;
    if (params) {
      text = text.replace(/\{(\w+)\}/g, function (match, name) {
        return Object.prototype.hasOwnProperty.call(params, name) && params[name] !== null &&
          params[name] !== undefined ? String(params[name]) : match;
      });
    }
    return text;
  }

  function label(prefix, code) {
    const key = prefix + code;
    return Object.prototype.hasOwnProperty.call(T, key) ? T[key] : String(code);
  }

  function fact(list, term, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(el("dt", { text: term }), el("dd", { text: String(value) }));
  }

  let dateFormat = null;
  let timeFormat = null;

  function asDate(value) {
    if (value === null || value === undefined || value === "") return null;
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return isNaN(date.getTime()) ? null : date;
  }

  function formatDate(value) {
    const date = asDate(value);
    return date ? dateFormat.format(date) : "";
  }

  function formatTime(value) {
    const date = asDate(value);
    return date ? timeFormat.format(date) : "";
  }

  function citizenName(citizen) {
    return [citizen.first_name, citizen.last_name].filter(Boolean).join(" ");
  }

  function requestId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
  }

  // --- messages ----------------------------------------------------------------------------

  function announce(text) {
    const region = $("announcer");
    region.textContent = "";
    // A new text node in a cleared live region is announced even when it repeats itself.
    window.setTimeout(function () { region.textContent = text; }, 30);
  }

  function showError(error) {
    showErrorText(errorText(error));
  }

  function showErrorText(text) {
    const box = $("agent-error");
    box.textContent = text;
    box.hidden = false;
  }

  function clearError() {
    const box = $("agent-error");
    box.hidden = true;
    box.textContent = "";
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(typeof detail === "object" && detail ? detail.message || "" : String(detail || ""));
      this.status = status;
      this.detail = detail;
      this.code = typeof detail === "object" && detail && !Array.isArray(detail) ? detail.code : null;
    }
  }

  function errorText(error) {
    if (!(error instanceof ApiError)) return t("errors.network");
    const detail = error.detail && typeof error.detail === "object" ? error.detail : {};
    if (error.code && Object.prototype.hasOwnProperty.call(T, "errors." + error.code)) {
      return t("errors." + error.code, {
        message: detail.message || "",
        reference: detail.other_reference || "",
      });
    }
    if (error.status === 401) return t("errors.unauthenticated");
    if (error.status === 403) return t("errors.forbidden");
    if (error.status === 422) return t("errors.validation");
    if (error.status === 503) return t("errors.unavailable");
    return t("errors.generic", { status: error.status });
  }

  async function api(method, path, body) {
    const options = {
      method: method,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw new Error("network");
    }
    let payload = null;
    try { payload = await response.json(); } catch (err) { payload = null; }
    if (response.status === 401) {
      const next = window.location.pathname;
      window.location.assign("/login?msg=expired&lang=" + encodeURIComponent(state.lang) +
        "&next=" + encodeURIComponent(next));
    }
    if (!response.ok) throw new ApiError(response.status, payload ? payload.detail : null);
    return payload;
  }

  /** Run an action: clear the error line first, show it when the action fails. */
  async function act(action) {
    clearError();
    try {
      return await action();
    } catch (error) {
      showError(error);
      return undefined;
    }
  }

  // --- presence ----------------------------------------------------------------------------

  function renderPresence(current, reason) {
    const badge = $("presence-state");
    let shown = current || "unknown";
    let text;
    if (shown === "paused" && reason === "wrap-up") {
      shown = "wrap_up";
      text = label("state.", "wrap_up");
    } else if (shown === "paused" && reason) {
      text = Object.prototype.hasOwnProperty.call(T, "pause_reason." + reason)
        ? T["pause_reason." + reason] : t("presence.paused_with", { reason: reason });
    } else {
      text = label("state.", shown);
    }
    badge.dataset.state = shown;
    badge.textContent = text;
    const choice = $("presence-choice");
    const wanted = shown === "ready" ? "ready" : shown === "wrap_up" ? "wrap_up"
      : shown === "paused" && reason ? "paused:" + reason : null;
    if (wanted && Array.prototype.some.call(choice.options, function (o) { return o.value === wanted; })) {
      choice.value = wanted;
    }
  }

  async function applyPresence(event) {
    event.preventDefault();
    const value = $("presence-choice").value;
    const body = value.startsWith("paused:")
      ? { state: "paused", reason: value.slice("paused:".length) }
      : { state: value };
    await act(async function () {
      const answer = await api("POST", "/api/presence", body);
      renderPresence(answer.state, answer.pause_reason);
      announce(t("presence.requested"));
    });
  }

  // --- the pop -----------------------------------------------------------------------------

  function renderPop(data) {
    state.pop = data;
    const panel = $("pop");
    panel.dataset.state = "ringing";
    $("pop-empty").hidden = true;
    $("pop-notice").hidden = true;
    $("pop-body").hidden = false;
    $("pop-status").textContent = t("pop.ringing_since", { time: formatTime(data.ringing_since) });

    const facts = $("pop-case");
    clear(facts);
    const found = data.case;
    if (found) {
      fact(facts, t("pop.reference"), found.reference);
      fact(facts, t("pop.status"), found.status ? label("case_status.", found.status) : null);
      fact(facts, t("pop.category"), found.category);
      fact(facts, t("pop.language"), found.language ? String(found.language).toUpperCase() : null);
      fact(facts, t("pop.queue"), found.queue);
      fact(facts, t("pop.priority"), found.priority);
      fact(facts, t("pop.caller"), found.caller);
      if (typeof found.wait_seconds === "number") {
        fact(facts, t("pop.wait"), t("pop.seconds", { seconds: Math.round(found.wait_seconds) }));
      }
    } else {
      facts.append(el("dt", { text: t("pop.case") }), el("dd", { text: t("pop.no_case") }));
    }
    const path = data.ivr_path || (found && found.ivr_path) || [];
    if (path.length) fact(facts, t("pop.ivr_path"), path.join(" → "));
    $("pop-open-case").hidden = !(found && found.reference);

    const who = $("pop-citizen");
    clear(who);
    const citizen = data.citizen;
    if (citizen) {
      who.append(el("p", { class: "citizen-name" }, [el("strong", { text: citizenName(citizen) })]));
      const details = el("dl", { class: "facts" });
      fact(details, t("pop.language"),
        citizen.preferred_language ? String(citizen.preferred_language).toUpperCase() : null);
      fact(details, t("pop.address"), citizen.address);
      who.append(details);
      const open = citizen.open_cases || [];
      if (open.length) {
        who.append(el("h4", { text: t("pop.open_cases") }), el("ul", { class: "compact" },
          open.map(function (other) {
            return el("li", {}, [
              el("button", {
                type: "button", class: "link", text: other.reference,
                onclick: function () { openCase(other.reference, { focus: true }); },
              }),
              " — " + label("case_status.", other.status) + (other.category ? " — " + other.category : ""),
            ]);
          })));
      }
      const last = citizen.last_interactions || [];
      if (last.length) {
        who.append(el("h4", { text: t("pop.last_interactions") }), el("ul", { class: "compact" },
          last.map(function (contact) {
            return el("li", {
              text: [formatDate(contact.started_at), label("kind.", contact.kind),
                label("direction.", contact.direction), contact.queue, contact.case_reference]
                .filter(Boolean).join(" · "),
            });
          })));
      }
    } else {
      who.append(el("p", { text: t("pop.unknown_citizen") }));
    }

    const articles = $("pop-articles");
    clear(articles);
    const list = data.articles || [];
    if (list.length) {
      list.forEach(function (article) {
        articles.append(el("details", { class: "article" }, [
          el("summary", { text: article.title }),
          el("p", { class: "article-body", text: article.body }),
        ]));
      });
    } else {
      articles.append(el("p", { text: t("pop.no_articles") }));
    }
    const summary = [found ? found.reference : t("pop.no_case"),
      citizen ? citizenName(citizen) : t("pop.unknown_citizen")].join(", ");
    announce(t("pop.announce", { summary: summary }));
  }

  function clearPop(notice) {
    state.pop = null;
    $("pop").dataset.state = "empty";
    $("pop-body").hidden = true;
    $("pop-empty").hidden = !!notice;
    const note = $("pop-notice");
    note.textContent = notice || "";
    note.hidden = !notice;
    ["pop-case", "pop-citizen", "pop-articles"].forEach(function (id) { clear($(id)); });
    if (notice) announce(notice);
  }

  function onScreenPop(data) {
    if (!data || !data.call_id) return;
    renderPop(data);
    if (!state.call || state.call.call_id !== data.call_id) {
      state.call = { call_id: data.call_id, connected: false, held: false,
        case_reference: data.case ? data.case.reference : null };
      renderCall();
    }
  }

  function onPopWithdrawn(data) {
    if (!data) return;
    if (state.pop && state.pop.call_id !== data.call_id) return; // an older pop's news
    clearPop(t("pop.withdrawn", { reason: label("withdrawn.", data.reason) }));
    if (state.call && state.call.call_id === data.call_id && !state.call.connected) {
      state.call = null;
      renderCall();
    }
  }

  // --- the call ----------------------------------------------------------------------------

  function renderCall() {
    const call = state.call;
    const connected = !!(call && call.connected);
    const status = $("call-status");
    let phase = "idle";
    if (call) phase = !call.connected ? "ringing" : call.held ? "held" : "connected";
    status.dataset.state = phase;
    status.textContent = phase === "idle" ? t("call.none") : t("call." + phase);
    const hold = $("hold-button");
    hold.disabled = !connected;
    hold.setAttribute("aria-pressed", call && call.held ? "true" : "false");
    hold.textContent = call && call.held ? t("call.resume") : t("call.hold");
    $("hangup-button").disabled = !connected;
    $("transfer-fieldset").disabled = !connected;
  }

  function onCallAnswered(data) {
    if (!data || !data.call_id) return;
    state.call = { call_id: data.call_id, connected: true, held: false,
      case_reference: data.case_reference || null };
    renderCall();
    if (state.pop && state.pop.call_id === data.call_id) {
      $("pop").dataset.state = "connected";
      $("pop-status").textContent = t("pop.on_call");
    }
    announce(t("call.connected"));
    if (data.case_reference) openCase(data.case_reference, { attempts: 3 });
  }

  function onCallHeld(data) {
    if (!data || !state.call || state.call.call_id !== data.call_id) return;
    state.call.held = !!data.held;
    renderCall();
    announce(t(state.call.held ? "call.held" : "call.connected"));
  }

  function onCallEnded(data) {
    if (!data) return;
    if (state.call && state.call.call_id !== data.call_id) return;
    state.call = null;
    renderCall();
    if (state.pop && state.pop.call_id === data.call_id) clearPop(null);
    $("call-status").textContent = t("call.ended");
    announce(t("call.ended"));
    const reference = data.case_reference;
    if (reference) {
      const show = function () { if (state.caseRef === reference) showWrapUp(true); };
      if (state.caseRef === reference) show();
      else openCase(reference, { attempts: 3 }).then(show);
    }
  }

  /** After a 404 the call is gone (a click-to-dial call ends without a push). */
  function forgetCallOn(error) {
    if (error instanceof ApiError && error.code === "call_not_found") {
      state.call = null;
      renderCall();
    }
  }

  async function callAction(path, body, done) {
    const call = state.call;
    if (!call) return;
    clearError();
    try {
      const answer = await api("POST", "/api/calls/" + encodeURIComponent(call.call_id) + path, body);
      done(answer);
    } catch (error) {
      forgetCallOn(error);
      showError(error);
    }
  }

  function toggleHold() {
    const held = !(state.call && state.call.held);
    callAction("/hold", { held: held }, function () {
      if (state.call) state.call.held = held;
      renderCall();
      announce(t(held ? "call.hold_requested" : "call.resume_requested"));
    });
  }

  function hangUp() {
    callAction("/hangup", undefined, function () { announce(t("call.hangup_requested")); });
  }

  function transfer(event) {
    event.preventDefault();
    const form = $("transfer-form");
    const kind = form.querySelector("input[name=kind]:checked").value;
    const other = $("transfer-other").value.trim();
    const picked = $("transfer-target");
    let value = other ? "queue:" + other : picked.value;
    if (!value) {
      showErrorText(t("transfer.choose_target"));
      return;
    }
    const colon = value.indexOf(":");
    const targetType = value.slice(0, colon);
    const target = value.slice(colon + 1);
    const shown = other || (picked.selectedOptions[0] ? picked.selectedOptions[0].textContent : target);
    callAction("/transfer", { kind: kind, target: target, target_type: targetType }, function () {
      announce(t("transfer.requested", { target: shown }));
    });
  }

  async function loadTargets() {
    try {
      const targets = await api("GET", "/api/calls/targets");
      const queues = $("transfer-queues");
      clear(queues);
      targets.queues.forEach(function (name) {
        queues.append(el("option", { value: "queue:" + name, text: name }));
      });
      const colleagues = $("transfer-colleagues");
      clear(colleagues);
      targets.colleagues.forEach(function (person) {
        colleagues.append(el("option", { value: "colleague:" + person.username, text: person.display_name }));
      });
      const experts = $("transfer-experts");
      if (experts && !targets.experts) experts.remove();
    } catch (error) { /* the free-text queue field still works */ }
  }

  async function dial(event) {
    event.preventDefault();
    const number = $("dial-number").value.trim();
    if (!number) return;
    announce(t("dial.ringing_phone", { number: number }));
    $("call-status").textContent = t("dial.ringing_phone", { number: number });
    const button = $("dial-submit");
    button.disabled = true; // the request lasts until the phone answers: no second call
    await act(async function () {
      const answer = await api("POST", "/api/calls/dial", {
        number: number, case_reference: state.caseRef, request_id: requestId(),
      });
      if (answer.answered) {
        if (answer.uniqueid) {
          state.call = { call_id: answer.uniqueid, connected: true, held: false,
            case_reference: state.caseRef };
        }
        renderCall();
        $("call-status").textContent = t("dial.answered", { number: number });
        announce(t("dial.answered", { number: number }));
      } else {
        renderCall();
        showErrorText(t("dial.not_answered", { reason: answer.reason }));
      }
    });
    button.disabled = false;
  }

  // --- the case screen ---------------------------------------------------------------------

  /** Load a case into the case screen. Options: ``focus`` (move focus to it: the agent
   * asked), ``quiet`` (no announcement: a reload after the agent's own change, or the page
   * catching up), ``attempts`` (retry a 404: the store may not have written the call's case
   * yet), ``fresh`` (after a change of ours: never reuse a load started before it). Else the
   * same case asked for twice at once (page load and push resync) loads once. */
  function openCase(reference, options) {
    const key = String(reference).toUpperCase();
    if (state.loading[key] && !(options && options.fresh)) return state.loading[key];
    const loading = loadCase(reference, options || {}).finally(function () {
      delete state.loading[key];
    });
    state.loading[key] = loading;
    return loading;
  }

  async function loadCase(reference, options) {
    clearError();
    let left = options.attempts || 1;
    for (;;) {
      try {
        const found = await Promise.all([
          api("GET", "/api/cases/" + encodeURIComponent(reference)),
          api("GET", "/api/cases/" + encodeURIComponent(reference) + "/history"),
        ]);
        renderCase(found[0], found[1]);
        if (options.focus) $("case-title").focus();
        if (!options.quiet) announce(t("case.loaded", { reference: found[0].case.reference }));
        return;
      } catch (error) {
        left -= 1;
        if (left > 0 && error instanceof ApiError && error.status === 404) {
          await new Promise(function (resolve) { window.setTimeout(resolve, 1000); });
          continue;
        }
        showError(error);
        return;
      }
    }
  }

  function renderCase(detail, history) {
    const view = detail.case;
    const changed = state.caseRef !== view.reference;
    state.caseRef = view.reference;
    state.caseView = view;
    $("case-none").hidden = true;
    $("case-body").hidden = false;
    $("case-ref-input").value = view.reference;
    $("case-title").textContent = view.reference + " — " + label("case_status.", view.status);

    const facts = $("case-facts");
    clear(facts);
    fact(facts, t("case.language"), view.language ? String(view.language).toUpperCase() : null);
    fact(facts, t("case.queue"), view.queue);
    fact(facts, t("case.priority"), view.priority);
    fact(facts, t("case.caller"), view.caller);
    fact(facts, t("case.created"), formatDate(view.created_at));
    fact(facts, t("case.updated"), formatDate(view.updated_at));
    fact(facts, t("case.assigned"), view.assigned_agent_id);
    fact(facts, t("case.disposition"), view.disposition ? label("disposition.", view.disposition) : null);

    $("case-status").value = view.status;
    $("case-category").value = view.category || "";

    const linked = view.citizen_id !== null && view.citizen_id !== undefined;
    $("case-citizen-none").hidden = linked;
    $("case-citizen-linked").hidden = !linked;
    $("case-citizen-label").textContent = linked ? t("case.citizen_linked", { id: view.citizen_id }) : "";
    const record = $("citizen-record");
    if (changed || !linked || (record.dataset.citizen && Number(record.dataset.citizen) !== view.citizen_id)) {
      clear(record);
      record.hidden = true;
      delete record.dataset.citizen;
    }

    const notes = $("case-notes");
    clear(notes);
    if (!detail.notes.length) notes.append(el("li", { class: "empty", text: t("case.no_notes") }));
    detail.notes.forEach(function (note) {
      notes.append(el("li", {}, [
        el("p", { class: "note-meta", text: (note.author || t("case.by_guichet")) + " · " + formatDate(note.created_at) }),
        el("p", { class: "note-text", text: note.text }),
      ]));
    });

    state.templates = detail.reply_templates || [];
    const select = $("reply-template");
    while (select.options.length > 1) select.remove(1);
    state.templates.forEach(function (template, index) {
      select.append(el("option", {
        value: String(index),
        text: template.title + (template.lang !== view.language && view.language ? " (" + template.lang.toUpperCase() + ")" : ""),
      }));
    });

    const rows = $("case-history").tBodies[0];
    clear(rows);
    history.interactions.forEach(function (contact) {
      rows.append(el("tr", {}, [
        el("td", { text: formatDate(contact.started_at) }),
        el("td", { text: label("kind.", contact.kind) }),
        el("td", { text: label("direction.", contact.direction) }),
        el("td", { text: contact.queue || "" }),
        el("td", { text: contact.contact || "" }),
        el("td", { text: formatDate(contact.ended_at) }),
      ]));
    });
    $("case-history-none").hidden = history.interactions.length > 0;
    $("case-history").hidden = history.interactions.length === 0;
    if (changed) showWrapUp(false);
    renderResults();
  }

  async function saveCase(event) {
    event.preventDefault();
    const view = state.caseView;
    if (!view) return;
    const body = {};
    const wantedStatus = $("case-status").value;
    const wantedCategory = $("case-category").value.trim();
    if (wantedCategory !== (view.category || "")) body.category = wantedCategory || null;
    if (wantedStatus !== view.status) body.status = wantedStatus;
    await act(async function () {
      if (Object.keys(body).length) {
        await api("PATCH", "/api/cases/" + encodeURIComponent(view.reference), body);
      }
      await openCase(view.reference, { quiet: true, fresh: true });
      announce(t("case.saved"));
    });
  }

  async function addNote(event) {
    event.preventDefault();
    const text = $("note-text").value;
    if (!state.caseRef || !text.trim()) return;
    await act(async function () {
      await api("POST", "/api/cases/" + encodeURIComponent(state.caseRef) + "/notes", { text: text });
      $("note-text").value = "";
      await openCase(state.caseRef, { quiet: true, fresh: true });
      announce(t("case.note_added"));
    });
  }

  function insertTemplate() {
    const index = $("reply-template").value;
    if (index === "") return;
    const template = state.templates[Number(index)];
    const area = $("note-text");
    area.value = (area.value ? area.value.replace(/\s*$/, "") + "\n\n" : "") + template.body;
    area.focus();
  }

  function showWrapUp(visible) {
    $("wrapup-form").hidden = !visible;
    $("wrapup-show").setAttribute("aria-expanded", visible ? "true" : "false");
  }

  async function wrapUp(event) {
    event.preventDefault();
    if (!state.caseRef) return;
    const body = {
      disposition: $("wrapup-disposition").value,
      close: $("wrapup-close").checked,
      note: $("wrapup-note").value.trim() || null,
    };
    await act(async function () {
      await api("POST", "/api/cases/" + encodeURIComponent(state.caseRef) + "/wrap-up", body);
      $("wrapup-note").value = "";
      $("wrapup-close").checked = false;
      await openCase(state.caseRef, { quiet: true, fresh: true });
      showWrapUp(false);
      announce(t("case.wrapped_up"));
    });
  }

  // --- citizens ----------------------------------------------------------------------------

  async function openCitizen(citizenId) {
    if (!state.caseRef) {
      showErrorText(t("search.need_case"));
      return;
    }
    await act(async function () {
      const record = await api("GET", "/api/citizens/" + encodeURIComponent(citizenId) +
        "?case=" + encodeURIComponent(state.caseRef));
      renderCitizen(record);
      announce(t("case.citizen_opened", { reference: record.opened_for }));
    });
  }

  function renderCitizen(record) {
    const box = $("citizen-record");
    clear(box);
    box.dataset.citizen = String(record.id);
    const heading = el("h4", { id: "citizen-record-heading", tabindex: "-1", text: citizenName(record) });
    const details = el("dl", { class: "facts" });
    fact(details, t("case.national_number"), record.national_number);
    fact(details, t("case.language"), record.preferred_language ? record.preferred_language.toUpperCase() : null);
    fact(details, t("case.address"), record.address);
    fact(details, t("case.phone"), record.phone);
    fact(details, t("case.email"), record.email);
    box.append(heading, details, el("p", { class: "hint", text: t("case.citizen_opened", { reference: record.opened_for }) }));
    if (record.open_cases.length) {
      box.append(el("h5", { text: t("pop.open_cases") }), el("ul", { class: "compact" },
        record.open_cases.map(function (other) {
          return el("li", {}, [
            el("button", { type: "button", class: "link", text: other.reference,
              onclick: function () { openCase(other.reference, { focus: true }); } }),
            " — " + label("case_status.", other.status) + (other.category ? " — " + other.category : ""),
          ]);
        })));
    }
    if (record.last_interactions.length) {
      box.append(el("h5", { text: t("pop.last_interactions") }), el("ul", { class: "compact" },
        record.last_interactions.map(function (contact) {
          return el("li", { text: [formatDate(contact.started_at), label("kind.", contact.kind),
            label("direction.", contact.direction), contact.queue, contact.case_reference]
            .filter(Boolean).join(" · ") });
        })));
    }
    box.hidden = false;
    heading.focus();
  }

  async function linkCitizen(citizenId) {
    if (!state.caseRef) return;
    await act(async function () {
      await api("POST", "/api/cases/" + encodeURIComponent(state.caseRef) + "/citizen",
        { citizen_id: citizenId });
      await openCase(state.caseRef, { quiet: true, fresh: true });
      announce(t(citizenId === null ? "case.unlinked" : "case.linked"));
    });
  }

  async function search(event) {
    event.preventDefault();
    const query = $("search-q").value.trim();
    if (!query) return;
    const status = $("search-status");
    status.textContent = t("search.searching");
    clearError();
    try {
      const answer = await api("GET", "/api/citizens?q=" + encodeURIComponent(query));
      state.results = answer.results;
      renderResults();
      status.textContent = !answer.results.length ? t("search.none")
        : answer.truncated ? t("search.truncated", { count: answer.results.length })
          : t("search.count", { count: answer.results.length });
    } catch (error) {
      status.textContent = "";
      showError(error);
    }
  }

  function renderResults() {
    const list = $("search-results");
    clear(list);
    const noCase = !state.caseRef;
    state.results.forEach(function (found) {
      const already = state.caseView && state.caseView.citizen_id === found.id;
      list.append(el("li", { class: "result" }, [
        el("p", {}, [el("strong", { text: citizenName(found) }), " · " + found.national_number]),
        el("p", { class: "hint", text: [found.phone, found.address,
          found.preferred_language ? found.preferred_language.toUpperCase() : null]
          .filter(Boolean).join(" · ") }),
        el("div", { class: "row" }, [
          el("button", { type: "button", text: t("search.open"), disabled: noCase,
            "aria-describedby": noCase ? "search-need-case" : null,
            onclick: function () { openCitizen(found.id); } }),
          el("button", { type: "button", class: "secondary", text: t("search.link"),
            disabled: noCase || already,
            "aria-describedby": noCase ? "search-need-case" : null,
            onclick: function () { linkCitizen(found.id); } }),
        ]),
      ]));
    });
    let hint = $("search-need-case");
    if (noCase && state.results.length) {
      if (!hint) {
        hint = el("p", { id: "search-need-case", class: "hint", text: t("search.need_case") });
        list.after(hint);
      }
    } else if (hint) {
      hint.remove();
    }
  }

  // --- start -------------------------------------------------------------------------------

  /** What the page shows after a load or a resync: presence and the call at my phone. */
  async function refresh() {
    try {
      const presence = await api("GET", "/api/presence");
      renderPresence(presence.state, presence.pause_reason);
    } catch (error) { /* shown as unknown; the next agent_state push fixes it */ }
    try {
      const current = await api("GET", "/api/calls/current");
      const call = current.call;
      state.call = call ? { call_id: call.call_id, connected: call.state === "connected",
        held: call.held, case_reference: call.case_reference } : null;
      renderCall();
      if (call && call.case_reference && state.caseRef !== call.case_reference) {
        openCase(call.case_reference, { quiet: true });
      }
    } catch (error) { /* no CTI: the controls stay as they are */ }
  }

  function start() {
    const root = $("agent");
    if (!root) return;
    try { T = JSON.parse($("agent-texts").textContent || "{}"); } catch (err) { T = {}; }
    state.lang = root.dataset.lang || document.documentElement.lang || "fr";
    const locale = state.lang + "-BE";
    dateFormat = new Intl.DateTimeFormat(locale, { dateStyle: "short", timeStyle: "short" });
    timeFormat = new Intl.DateTimeFormat(locale, { timeStyle: "medium" });

    $("presence-form").addEventListener("submit", applyPresence);
    $("hold-button").addEventListener("click", toggleHold);
    $("hangup-button").addEventListener("click", hangUp);
    $("transfer-form").addEventListener("submit", transfer);
    $("dial-form").addEventListener("submit", dial);
    $("search-form").addEventListener("submit", search);
    $("case-open-form").addEventListener("submit", function (event) {
      event.preventDefault();
      const reference = $("case-ref-input").value.trim();
      if (reference) openCase(reference, { focus: true });
    });
    $("case-edit-form").addEventListener("submit", saveCase);
    $("note-form").addEventListener("submit", addNote);
    $("reply-insert").addEventListener("click", insertTemplate);
    $("wrapup-form").addEventListener("submit", wrapUp);
    $("wrapup-show").addEventListener("click", function () {
      showWrapUp($("wrapup-form").hidden);
      if (!$("wrapup-form").hidden) $("wrapup-disposition").focus();
    });
    $("pop-open-case").addEventListener("click", function () {
      if (state.pop && state.pop.case) openCase(state.pop.case.reference, { focus: true });
    });
    $("case-citizen-open").addEventListener("click", function () {
      if (state.caseView && state.caseView.citizen_id !== null) openCitizen(state.caseView.citizen_id);
    });
    $("case-citizen-unlink").addEventListener("click", function () { linkCitizen(null); });

    renderCall();
    const push = window.guichetPush;
    if (push) {
      push.on("screen_pop", onScreenPop);
      push.on("pop_withdrawn", onPopWithdrawn);
      push.on("call_answered", onCallAnswered);
      push.on("call_held", onCallHeld);
      push.on("call_ended", onCallEnded);
      push.on("agent_state", function (data) {
        if (data) renderPresence(data.state, data.pause_reason);
      });
      push.on("resync", function (stream) { if (stream === "user") refresh(); });
    }
    root.dataset.ready = "true";
    loadTargets();
    refresh();
  }

  // console.js (loaded before this file) starts window.guichetPush on DOMContentLoaded; our
  // listener runs after its own, and before any socket message can arrive.
  document.addEventListener("DOMContentLoaded", start);
})();

/* Live coaching on the agent desk (templates/agent/coaching.html, console/coaching.py):
 * the raise-hand toggle (POST /api/me/hand, only during a connected call) and the private
 * messages supervisors send. Pushes read here:
 *   hand             {agent, user_id, display_name, call_id, raised, at}  (lowered by a
 *                    supervisor joining the call or by its end, too)
 *   private_message  {id, from, text, call_id, at}
 *   call_answered / call_ended / resync: whether there is a call to raise a hand about.
 */
(function () {
  "use strict";

  let T = {};
  let timeFormat = null;
  const hand = { raised: false, onCall: false, busy: false };
  const shown = {}; // message id -> true: a replayed push is not shown twice
  const $ = window.GuichetPage.$;

  function t(key, params) {
    let text = Object.prototype.hasOwnProperty.call(T, key) ? T[key] : key;
    Object.keys(params || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(params[name]));
    });
    return text;
  }

  function say(text) {
    const line = $("hand-status");
    if (line) line.textContent = text;
  }

  function render() {
    const button = $("hand-button");
    button.disabled = hand.busy || (!hand.onCall && !hand.raised);
    button.setAttribute("aria-pressed", hand.raised ? "true" : "false");
    button.textContent = hand.raised ? t("lower") : t("raise");
    $("coaching").dataset.hand = hand.raised ? "raised" : "lowered";
  }

  async function toggle() {
    const wanted = !hand.raised;
    hand.busy = true;
    render();
    try {
      const response = await fetch("/api/me/hand", {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "Content-Type": "application/json" },
        body: JSON.stringify({ raised: wanted }),
      });
      let payload = null;
      try { payload = await response.json(); } catch (err) { payload = null; }
      if (response.ok && payload) {
        hand.raised = !!payload.raised;
        say(t(hand.raised ? "raised" : "lowered"));
      } else if (response.status === 409) {
        hand.onCall = false;
        say(t("not_on_call"));
      } else {
        say(t("failed"));
      }
    } catch (err) {
      say(t("failed"));
    }
    hand.busy = false;
    render();
  }

  function onHand(data) {
    if (!data) return;
    const was = hand.raised;
    hand.raised = !!data.raised;
    if (was && !hand.raised) say(t("lowered"));
    render();
  }

  function onMessage(data) {
    if (!data || data.id === undefined || shown[data.id]) return;
    shown[data.id] = true;
    const when = new Date(data.at);
    const time = timeFormat && !isNaN(when.getTime()) ? timeFormat.format(when) : "";
    const item = document.createElement("li");
    item.className = "message";
    const from = document.createElement("p");
    from.className = "hint";
    from.textContent = t("from", { name: data.from || "", time: time });
    const body = document.createElement("p");
    body.textContent = data.text || "";
    item.append(from, body);
    $("private-messages").prepend(item);
    $("messages-none").hidden = true;
    say(t("new", { name: data.from || "" }));
  }

  function setCall(connected) {
    hand.onCall = connected;
    if (!connected) hand.raised = false; // the server lowers it when the call ends
    render();
  }

  async function refresh() {
    try {
      const response = await fetch("/api/calls/current", {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const current = await response.json();
      setCall(!!(current.call && current.call.state === "connected"));
    } catch (err) { /* no CTI: the toggle stays off */ }
  }

  function start() {
    if (!$("coaching")) return;
    try { T = JSON.parse($("coaching-texts").textContent || "{}"); } catch (err) { T = {}; }
    const lang = document.documentElement.lang || "fr";
    timeFormat = new Intl.DateTimeFormat(lang + "-BE", { timeStyle: "short" });
    $("hand-button").addEventListener("click", toggle);
    const push = window.guichetPush;
    if (push) {
      push.on("hand", onHand);
      push.on("private_message", onMessage);
      push.on("call_answered", function () { setCall(true); });
      push.on("call_ended", function () { setCall(false); });
      push.on("resync", function (stream) { if (stream === "user") refresh(); });
    }
    render();
    refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
