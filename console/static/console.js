/* Guichet console push client (protocol: console/WEBSOCKET.md).
 *
 * One GuichetPush per page. It keeps the last sequence number of each stream in
 * sessionStorage (per tab, per user), says it in its hello when it reconnects so the server
 * replays what it missed, reconnects with exponential backoff, and dispatches messages by
 * their "type" to handlers registered with on(type, handler).
 *
 *   const push = new GuichetPush({ url: "/ws", userId: 42 });
 *   push.on("call.offered", (data, message) => { ... });
 *   push.on("resync", (stream) => reloadStateFromTheApi(stream));
 *   push.start();
 *
 * Pages rendered by base.html for a signed-in user start one automatically
 * (window.guichetPush) and show its state in #connection.
 */
(function () {
  "use strict";

  var USER_STREAM = "user";
  var CLOSE = { UNAUTHENTICATED: 4401, FORBIDDEN: 4403, PROTOCOL: 4400 };

  function GuichetPush(options) {
    options = options || {};
    this.url = absoluteWsUrl(options.url || "/ws");
    this.topics = options.topics || [];
    this.storageKey = "guichet.push." + (options.userId || "anonymous");
    this.storage = options.storage || safeSessionStorage();
    this.minDelay = options.minDelay || 500;
    this.maxDelay = options.maxDelay || 30000;
    this.loginUrl = options.loginUrl === undefined ? "/login" : options.loginUrl;
    this.handlers = {};
    this.state = this._load();
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.status = "offline";
  }

  GuichetPush.prototype.on = function (type, handler) {
    (this.handlers[type] = this.handlers[type] || []).push(handler);
    var list = this.handlers[type];
    return function off() {
      var index = list.indexOf(handler);
      if (index >= 0) list.splice(index, 1);
    };
  };

  GuichetPush.prototype.start = function () {
    if (!this.stopped) return;
    this.stopped = false;
    var self = this;
    window.addEventListener("online", function () { self._reconnectNow(); });
    this._connect();
  };

  GuichetPush.prototype.stop = function () {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "page closed");
  };

  /** The last sequence number seen on a stream ("user" or a topic), or null. */
  GuichetPush.prototype.lastSeq = function (stream) {
    var value = this.state.streams[stream || USER_STREAM];
    return value === undefined ? null : value;
  };

  GuichetPush.prototype._connect = function () {
    var self = this;
    this._setStatus(this.attempt ? "reconnecting" : "offline");
    var socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = function () {
      var topics = {};
      self.topics.forEach(function (topic) { topics[topic] = self.lastSeq(topic); });
      socket.send(JSON.stringify({
        type: "hello",
        last_seq: self.lastSeq(USER_STREAM),
        epoch: self.state.epoch,
        topics: topics
      }));
    };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (err) { return; }
      self._receive(message);
    };
    socket.onclose = function (event) {
      if (self.socket !== socket) return;
      self.socket = null;
      self._closed(event.code, event.reason);
    };
  };

  GuichetPush.prototype._receive = function (message) {
    var data = message.data;
    switch (message.type) {
      case "ready":
        this.state.epoch = data.epoch;
        this._save();
        this.attempt = 0;
        this._setStatus("online");
        this._dispatch("ready", data, message);
        return;
      case "resync":
        this._setStatus("resync");
        this.state.epoch = data.epoch;
        this.state.streams[message.stream] = data.seq;
        this._save();
        this._dispatch("resync", message.stream, message);
        return;
      case "pong":
      case "error":
        this._dispatch(message.type, data, message);
        return;
    }
    if (typeof message.seq !== "number") return;
    var stream = message.stream || USER_STREAM;
    var last = this.lastSeq(stream);
    if (last !== null && message.seq <= last) return; // already seen (another replay)
    this.state.streams[stream] = message.seq;
    this._save();
    this._dispatch(message.type, data, message);
  };

  GuichetPush.prototype._closed = function (code, reason) {
    this._dispatch("closed", { code: code, reason: reason });
    if (code === CLOSE.UNAUTHENTICATED) {
      this.stopped = true;
      this._setStatus("failed");
      if (this.loginUrl) {
        var next = window.location.pathname + window.location.search;
        var lang = document.documentElement.lang || "";
        window.location.assign(this.loginUrl + "?msg=expired&lang=" + encodeURIComponent(lang) +
          "&next=" + encodeURIComponent(next));
      }
      return;
    }
    if (code === CLOSE.FORBIDDEN || code === CLOSE.PROTOCOL) {
      this.stopped = true; // retrying would be refused the same way
      this._setStatus("failed");
      return;
    }
    if (this.stopped) return;
    // 4429 (too slow), 1001/1012 (server restart), 1006 (network): resume after a pause.
    this._setStatus("reconnecting");
    var delay = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt));
    this.attempt += 1;
    var self = this;
    this.timer = setTimeout(function () { self._connect(); }, delay / 2 + Math.random() * delay / 2);
  };

  GuichetPush.prototype._reconnectNow = function () {
    if (this.stopped || this.socket) return;
    clearTimeout(this.timer);
    this._connect();
  };

  GuichetPush.prototype._dispatch = function (type, data, message) {
    var list = (this.handlers[type] || []).concat(this.handlers["*"] || []);
    list.forEach(function (handler) {
      try { handler(data, message); } catch (err) { console.error("guichet push handler", type, err); }
    });
  };

  GuichetPush.prototype._setStatus = function (status) {
    this.status = status;
    this._dispatch("status", status);
  };

  GuichetPush.prototype._load = function () {
    try {
      var saved = JSON.parse(this.storage.getItem(this.storageKey) || "null");
      if (saved && typeof saved.streams === "object") return saved;
    } catch (err) { /* a corrupt entry is a fresh start */ }
    return { epoch: null, streams: {} };
  };

  GuichetPush.prototype._save = function () {
    try { this.storage.setItem(this.storageKey, JSON.stringify(this.state)); } catch (err) { /* full or disabled */ }
  };

  function absoluteWsUrl(url) {
    if (/^wss?:/.test(url)) return url;
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + url;
  }

  function safeSessionStorage() {
    try { return window.sessionStorage; } catch (err) {
      var memory = {};
      return {
        getItem: function (key) { return key in memory ? memory[key] : null; },
        setItem: function (key, value) { memory[key] = String(value); }
      };
    }
  }

  window.GuichetPush = GuichetPush;

  document.addEventListener("DOMContentLoaded", function () {
    var body = document.body;
    if (!body.dataset.wsUrl) return;
    // A page that follows topics names them: <div data-ws-topics="role:supervisor">.
    var holder = document.querySelector("[data-ws-topics]");
    var topics = holder ? holder.dataset.wsTopics.split(",").filter(Boolean) : [];
    var push = new GuichetPush({ url: body.dataset.wsUrl, userId: body.dataset.userId, topics: topics });
    var badge = document.getElementById("connection");
    if (badge) {
      push.on("status", function (status) {
        badge.dataset.state = status;
        var label = badge.dataset["label" + status.charAt(0).toUpperCase() + status.slice(1)];
        badge.textContent = label || badge.dataset.labelOffline;
      });
    }
    window.guichetPush = push;
    push.start();
  });
})();
