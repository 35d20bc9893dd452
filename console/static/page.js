/* Small helpers shared by the console's pages (window.GuichetPage): translated strings from
 * the page's JSON block, DOM building that only ever inserts text, the REST call with the
 * console's error shape ({"detail": {"code", "message"}}), and durations.
 */
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }

  function readJson(id) {
    const node = $(id);
    if (!node) return {};
    try { return JSON.parse(node.textContent || "{}"); } catch (err) { return {}; }
  }

  /** t("key", {name: value}) over a texts object; a missing key shows the key. */
  function translator(texts) {
    return function t(key, params) {
      let text = Object.prototype.hasOwnProperty.call(texts, key) ? texts[key] : key;
      if (params) {
        text = text.replace(/\{(\w+)\}/g, function (match, name) {
          const value = params[name];
          return value === null || value === undefined ? match : String(value);
        });
      }
      return text;
    };
  }

  /** An element with attributes/properties and children (strings become text nodes). */
  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (name) {
      const value = props[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "text") node.textContent = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name in node && typeof value !== "string") node[name] = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    });
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function ApiError(status, detail) {
    this.status = status;
    this.detail = detail;
    this.code = detail && typeof detail === "object" ? detail.code : null;
  }

  async function api(method, path, body) {
    const options = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try { response = await fetch(path, options); } catch (err) { throw new ApiError(0, null); }
    let payload = null;
    if (response.status !== 204) {
      try { payload = await response.json(); } catch (err) { payload = null; }
    }
    if (response.status === 401) {
      window.location.assign("/login?msg=expired&next=" + encodeURIComponent(window.location.pathname));
    }
    if (!response.ok) throw new ApiError(response.status, payload ? payload.detail : null);
    return payload;
  }

  /** 75 -> "1:15", 3725 -> "1:02:05". */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : Math.round(rate * 100) + " %";
  }

  window.GuichetPage = {
    $: $, readJson: readJson, translator: translator, el: el, clear: clear,
    api: api, ApiError: ApiError, duration: duration, percent: percent,
  };
})();
