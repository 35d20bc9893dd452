/* Guichet browser softphone (templates/agent/softphone.html): the agent answers in the
 * console, next to the pop. Only on the page of an agent whose account has a softphone.
 *
 * JsSIP (static/vendor/jssip.min.js, built from npm by scripts/build_static.sh) registers as
 * the agent's own PJSIP endpoint over the SIP WebSocket; the credentials come from
 * GET /api/me/softphone at page load (never stored in the page).
 *
 * What is done where:
 *   answer, hang up, mute, DTMF   the browser's own SIP session (JsSIP).
 *   hold                          the SIP session too (re-INVITE sendonly): Guichet's CTI hold
 *                                 asks a desk phone by NOTIFY (Event: hold), which a browser
 *                                 cannot honour. So a click on the desk's own hold button
 *                                 (#hold-button, agent.js) is taken here while the softphone
 *                                 has a call; Asterisk's Hold event then reaches agent.js as
 *                                 the usual call_held push.
 *   transfer                      the CTI's (agent.js's transfer form): the button brings it up.
 * This file touches agent.js only through the DOM: the desk's elements, and the events it
 * dispatches on the softphone section ("softphone:ringing", "softphone:answered",
 * "softphone:ended", detail = {caller}).
 *
 * Ring sound: WebAudio, the Belgian ring cadence (425 Hz, 1 s on, 3 s off); no audio file.
 * Several tabs: only one registers (a Web Lock); the others say so and take over when it
 * closes, because the agent's endpoint keeps one contact (the last registration wins).
 */
(function () {
  "use strict";

  const RING_HZ = 425;
  const RING_ON = 1.0; // seconds
  const RING_PERIOD = 4000; // milliseconds
  const LOCK = "guichet-softphone";
  const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];

  let T = {};
  const phone = {
    ua: null,
    session: null,
    stage: "idle",
    caller: "",
    muted: false,
    held: false,
    reoffer: false, // a hold/resume re-INVITE is in flight: JsSIP ignores another one meanwhile
    audio: null, // AudioContext, made on first need (and resumed on a click)
    ringTimer: null,
  };

  function $(id) { return document.getElementById(id); }

  function t(key, params) {
    let text = Object.prototype.hasOwnProperty.call(T, key) ? T[key] : key;
    Object.keys(params || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(params[name]));
    });
    return text;
  }

  function root() { return $("softphone"); }

  function tell(name, detail) {
    root().dispatchEvent(new CustomEvent("softphone:" + name, { bubbles: true, detail: detail }));
  }

  // --- what the agent sees -------------------------------------------------------------------

  function setRegistration(state, detail) {
    const line = $("softphone-registration");
    line.dataset.state = state;
    line.textContent = detail ? t("registration." + state) + " " + detail : t("registration." + state);
    root().dataset.registration = state;
  }

  /** idle, ringing, connecting (answered, waiting for the caller's ACK), in_call, held. */
  function phase() {
    if (!phone.session) return "idle";
    if (phone.stage === "in_call" && phone.held) return "held";
    return phone.stage;
  }

  function render(ended) {
    const now = ended || phase();
    const line = $("softphone-call");
    line.dataset.state = now;
    root().dataset.call = now;
    line.textContent = t("call." + now);
    $("softphone-caller").textContent = phone.caller;
    $("softphone-caller-row").hidden = !phone.caller;
    const live = now === "in_call" || now === "held";
    $("softphone-answer").disabled = now !== "ringing";
    $("softphone-hangup").disabled = !phone.session;
    const hold = $("softphone-hold");
    hold.disabled = !live || phone.reoffer;
    hold.setAttribute("aria-pressed", phone.held ? "true" : "false");
    hold.textContent = t(phone.held ? "resume" : "hold");
    const mute = $("softphone-mute");
    mute.disabled = !live;
    mute.setAttribute("aria-pressed", phone.muted ? "true" : "false");
    mute.textContent = t(phone.muted ? "unmute" : "mute");
    $("softphone-transfer").disabled = !live;
    $("softphone-keypad-toggle").disabled = !live;
    if (!live) showKeypad(false);
  }

  function showKeypad(visible) {
    $("softphone-keypad").hidden = !visible;
    $("softphone-keypad-toggle").setAttribute("aria-expanded", visible ? "true" : "false");
  }

  function say(text) {
    const region = $("softphone-announcer");
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 30);
  }

  // --- ring sound (WebAudio) -----------------------------------------------------------------

  function audioContext() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    if (!phone.audio) phone.audio = new Context();
    if (phone.audio.state === "suspended") phone.audio.resume().catch(function () {});
    return phone.audio;
  }

  function ringOnce() {
    const context = audioContext();
    if (!context || context.state !== "running") return;
    const start = context.currentTime + 0.02;
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.type = "sine";
    tone.frequency.value = RING_HZ;
    gain.gain.setValueAtTime(0, start);
    gain.gain.linearRampToValueAtTime(0.25, start + 0.03); // no click at the edges
    gain.gain.setValueAtTime(0.25, start + RING_ON - 0.03);
    gain.gain.linearRampToValueAtTime(0, start + RING_ON);
    tone.connect(gain).connect(context.destination);
    tone.start(start);
    tone.stop(start + RING_ON + 0.05);
  }

  function startRinging() {
    stopRinging();
    root().dataset.ringing = "true";
    ringOnce();
    phone.ringTimer = window.setInterval(ringOnce, RING_PERIOD);
  }

  function stopRinging() {
    if (phone.ringTimer !== null) window.clearInterval(phone.ringTimer);
    phone.ringTimer = null;
    root().dataset.ringing = "false";
  }

  // --- the SIP session -----------------------------------------------------------------------

  function callerOf(session) {
    const identity = session.remote_identity;
    const number = identity && identity.uri ? identity.uri.user : "";
    const name = identity && identity.display_name ? identity.display_name : "";
    if (name && number && name !== number) return name + " <" + number + ">";
    return name || number || t("unknown_caller");
  }

  function onNewSession(event) {
    const session = event.session;
    if (event.originator !== "remote") return; // calls are placed through the CTI (click-to-dial)
    if (phone.session) {
      session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
      return;
    }
    phone.session = session;
    phone.stage = "ringing";
    phone.caller = callerOf(session);
    phone.muted = false;
    phone.held = false;
    session.on("accepted", function () { stopRinging(); render(); }); // our 200 OK is sent
    session.on("confirmed", function () {
      phone.stage = "in_call";
      render();
      say(t("call.in_call"));
      tell("answered", { caller: phone.caller });
    });
    session.on("peerconnection", function (data) { attachAudio(data.peerconnection); });
    // Our own hold only: Asterisk holding us (remote) changes nothing on our buttons.
    session.on("hold", function (data) { if (data.originator === "local") { phone.held = true; render(); } });
    session.on("unhold", function (data) { if (data.originator === "local") { phone.held = false; render(); } });
    session.on("muted", function () { phone.muted = true; render(); });
    session.on("unmuted", function () { phone.muted = false; render(); });
    session.on("ended", function () { finished("ended"); });
    session.on("failed", function (data) {
      finished(data && data.cause === JsSIP.C.causes.CANCELED ? "missed" : "ended");
    });
    startRinging();
    render();
    say(t("ringing_from", { caller: phone.caller }));
    tell("ringing", { caller: phone.caller });
  }

  function attachAudio(connection) {
    const player = $("softphone-audio");
    connection.addEventListener("track", function (event) {
      if (event.streams && event.streams[0]) player.srcObject = event.streams[0];
    });
  }

  function finished(how) {
    stopRinging();
    const caller = phone.caller;
    phone.session = null;
    phone.stage = "idle";
    phone.reoffer = false;
    phone.muted = false;
    phone.held = false;
    $("softphone-audio").srcObject = null;
    render(how);
    say(t("call." + how));
    tell("ended", { caller: caller });
  }

  function answer() {
    const session = phone.session;
    if (!session || phase() !== "ringing") return;
    stopRinging();
    audioContext(); // a click: the page may play sound from now on
    phone.stage = "connecting";
    session.answer({ mediaConstraints: { audio: true, video: false } });
    render();
  }

  function hangUp() {
    const session = phone.session;
    if (!session) return;
    try {
      if (phone.stage === "ringing") {
        session.terminate({ status_code: 486, reason_phrase: "Busy Here" }); // declined
      } else {
        session.terminate();
      }
    } catch (err) { finished("ended"); }
  }

  function live() {
    return !!phone.session && phone.stage === "in_call";
  }

  function toggleHold() {
    const session = phone.session;
    if (!live() || phone.reoffer) return;
    const done = function () { phone.reoffer = false; render(); };
    // JsSIP shows hold at once; `done` is the 200 OK to the re-INVITE (a refused one ends the
    // call: JsSIP hangs up rather than leave the media half on hold).
    phone.reoffer = phone.held ? session.unhold({}, done) : session.hold({}, done);
    render();
  }

  function toggleMute() {
    const session = phone.session;
    if (!live()) return;
    if (phone.muted) session.unmute({ audio: true });
    else session.mute({ audio: true });
  }

  function sendTone(tone) {
    const session = phone.session;
    if (!live()) return;
    try {
      // RFC 4733 events in the call's RTP (the endpoint's dtmf_mode), as a desk phone sends.
      session.sendDTMF(tone, { transportType: "RFC2833", duration: 120 });
    } catch (err) {
      session.sendDTMF(tone, { transportType: "INFO", duration: 120 }); // no DTMF sender yet
    }
    const shown = $("softphone-dialled");
    shown.textContent = (shown.textContent + tone).slice(-24);
  }

  /** The desk's transfer form (agent.js, CTI transfer) is the one way to transfer. */
  function showTransfer() {
    const target = $("transfer-target");
    if (!target) return;
    target.scrollIntoView({ block: "center" });
    if (!target.disabled) target.focus();
    else say(t("transfer_wait"));
  }

  /** While the softphone has a call, the desk's hold button holds this SIP session. */
  function takeDeskHold(event) {
    if (!live()) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    toggleHold();
  }

  // --- registration --------------------------------------------------------------------------

  async function credentials() {
    const response = await fetch("/api/me/softphone", {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function register(config) {
    const socket = new JsSIP.WebSocketInterface(config.ws_url);
    const ua = new JsSIP.UA({
      sockets: [socket],
      uri: config.uri,
      authorization_user: config.authorization_user,
      password: config.password,
      display_name: config.display_name,
      register: true,
      session_timers: false, // Asterisk refreshes nothing here; fewer re-INVITEs to fail
      user_agent: "Guichet softphone (JsSIP " + JsSIP.version + ")",
    });
    ua.on("connecting", function () { setRegistration("connecting"); });
    ua.on("disconnected", function () { setRegistration("disconnected"); });
    ua.on("registered", function () { setRegistration("registered"); });
    ua.on("unregistered", function () { setRegistration("unregistered"); });
    ua.on("registrationFailed", function (data) {
      setRegistration("failed", data && data.cause ? "(" + data.cause + ")" : "");
    });
    ua.on("newRTCSession", onNewSession);
    phone.ua = ua;
    ua.start();
  }

  /** One tab registers per browser (the endpoint keeps one contact, the last one wins): the
   * others wait on a Web Lock and take over when that tab closes. */
  function inOneTab(run) {
    const locks = navigator.locks;
    if (!locks) { run(); return; }
    const forever = function () { run(); return new Promise(function () {}); };
    locks.request(LOCK, { ifAvailable: true }, function (lock) {
      if (lock) return forever();
      setRegistration("other_tab");
      locks.request(LOCK, forever);
      return undefined;
    });
  }

  async function start() {
    if (!root()) return;
    try { T = JSON.parse($("softphone-texts").textContent || "{}"); } catch (err) { T = {}; }
    const pad = $("softphone-keypad");
    KEYS.forEach(function (key) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "key";
      button.dataset.tone = key;
      button.textContent = key;
      button.setAttribute("aria-label", t("key", { key: key }));
      button.addEventListener("click", function () { sendTone(key); });
      pad.append(button);
    });
    $("softphone-answer").addEventListener("click", answer);
    $("softphone-hangup").addEventListener("click", hangUp);
    $("softphone-hold").addEventListener("click", toggleHold);
    $("softphone-mute").addEventListener("click", toggleMute);
    $("softphone-transfer").addEventListener("click", showTransfer);
    $("softphone-keypad-toggle").addEventListener("click", function () {
      showKeypad(pad.hidden);
    });
    const deskHold = $("hold-button");
    if (deskHold) deskHold.addEventListener("click", takeDeskHold, true);
    // Browsers let a page play sound after a click on it: the first one wakes the ring.
    document.addEventListener("click", function () { audioContext(); }, { once: true });
    window.addEventListener("pagehide", function () { if (phone.ua) phone.ua.stop(); });
    render();
    if (typeof window.JsSIP === "undefined") {
      setRegistration("failed", "(JsSIP)");
      return;
    }
    inOneTab(async function () {
      setRegistration("connecting");
      try {
        register(await credentials());
      } catch (err) {
        setRegistration("failed", "(" + err.message + ")");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
