/* FastWorker dashboard: live panels over Server-Sent Events, the auto-refresh switch, confirm dialogs.
 * No framework and no build step; the server renders (and escapes) every fragment it pushes. */
(function () {
  "use strict";

  var STORAGE_KEY = "fastworker.dashboard.autoRefresh";
  var body = document.body;
  var streamUrl = body.getAttribute("data-stream");
  var toggle = document.getElementById("live-toggle");
  var label = document.getElementById("live-label");
  var source = null;

  var LABELS = { live: "Live", connecting: "Connecting…", offline: "Reconnecting…", off: "Auto-refresh off" };

  function wanted() {
    try { return window.localStorage.getItem(STORAGE_KEY) !== "off"; } catch (e) { return true; }
  }

  function remember(on) {
    try { window.localStorage.setItem(STORAGE_KEY, on ? "on" : "off"); } catch (e) { /* private mode */ }
  }

  function setState(state) {
    body.setAttribute("data-live", state);
    if (label) { label.textContent = LABELS[state] || state; }
  }

  // A panel is never redrawn under a pressed pointer: replacing its button between the press and the
  // release would lose the click. Its latest fragment waits until the click has fired. A fragment
  // equal to the one drawn last is not drawn again (no churn under the reader's cursor).
  var drawn = {};
  var held = {};
  var pressedPanel = null;

  function panelOf(node) {
    for (; node && node !== document; node = node.parentNode) {
      if (node.id && node.id.indexOf("panel-") === 0) { return node; }
    }
    return null;
  }

  // Keyboard focus inside a redrawn panel moves to the same control in the new fragment (the same
  // link, button or field; else the one at the same place): replacing the element that had focus
  // would drop it to the page body on every update, and Tab would start over from the top.
  var FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]";

  function focusKey(node) {
    var form = node.closest ? node.closest("form") : null;
    return [node.tagName, node.id, node.getAttribute("href"), node.getAttribute("name"),
      node.getAttribute("value"), form ? form.getAttribute("action") : ""].join("\u0000");
  }

  function focusIn(element) {
    var active = document.activeElement;
    if (!active || active === document.body || !element.contains(active)) { return null; }
    var controls = element.querySelectorAll(FOCUSABLE);
    return { key: focusKey(active), index: Array.prototype.indexOf.call(controls, active) };
  }

  function refocus(element, was) {
    if (!was) { return; }
    var controls = element.querySelectorAll(FOCUSABLE);
    var match = null;
    for (var i = 0; i < controls.length && !match; i++) {
      if (focusKey(controls[i]) === was.key) { match = controls[i]; }
    }
    if (!match && was.index >= 0 && was.index < controls.length) { match = controls[was.index]; }
    if (match) { match.focus({ preventScroll: true }); }
  }

  function draw(id, html) {
    var element = document.getElementById(id);
    if (!element || drawn[id] === html) { return; }
    if (element === pressedPanel) { held[id] = html; return; }
    var focused = focusIn(element);
    element.innerHTML = html;
    drawn[id] = html;
    refocus(element, focused);
  }

  function release() {
    pressedPanel = null;
    window.setTimeout(function () {  // a task after the release: the click it leads to has fired
      var pending = held;
      held = {};
      Object.keys(pending).forEach(function (id) { draw(id, pending[id]); });
    }, 0);
  }

  document.addEventListener("pointerdown", function (event) { pressedPanel = panelOf(event.target); }, true);
  document.addEventListener("pointerup", release, true);
  document.addEventListener("pointercancel", release, true);

  function applyPanel(event) {
    var message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    draw(message.id, message.html);
    setState("live");
  }

  function connect() {
    if (!streamUrl || source || typeof window.EventSource !== "function") { return; }
    setState("connecting");
    source = new window.EventSource(streamUrl);
    source.addEventListener("open", function () { setState("live"); });
    source.addEventListener("panel", applyPanel);
    source.addEventListener("error", function () {
      // EventSource reconnects by itself (the server sends "retry:"); only show it.
      if (source) { setState("offline"); }
    });
  }

  function disconnect() {
    if (source) { source.close(); source = null; }
    setState("off");
  }

  if (toggle) {
    toggle.checked = wanted();
    toggle.addEventListener("change", function () {
      remember(toggle.checked);
      if (toggle.checked) { connect(); } else { disconnect(); }
    });
  }
  if (streamUrl && wanted()) { connect(); } else { setState("off"); }

  // Browsers keep a page alive in the back/forward cache: reconnect when it is shown again.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && streamUrl && wanted()) { source = null; connect(); }
  });
  window.addEventListener("pagehide", function () { if (source) { source.close(); source = null; } });

  // Every action form asks first (forms also work without JavaScript, without the question).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  // Flash messages can be dismissed.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-dismiss]");
    if (button && button.parentElement) { button.parentElement.remove(); }
  });

  // Task filters: state chips and selects apply at once.
  // Empty fields are left out of the URL so links stay short.
  var filters = document.getElementById("task-filters");
  function tidy() {
    Array.prototype.forEach.call(filters.querySelectorAll("input[name], select[name]"), function (field) {
      if (field.type !== "checkbox" && field.value === "") { field.disabled = true; }
    });
    window.setTimeout(function () {
      Array.prototype.forEach.call(filters.querySelectorAll("[disabled]"), function (field) { field.disabled = false; });
    }, 0);
  }
  if (filters) {
    filters.addEventListener("submit", tidy);
    filters.addEventListener("change", function (event) {
      var target = event.target;
      if (target.type === "checkbox" || target.tagName === "SELECT") { tidy(); filters.submit(); }
    });
  }

  // Error pages (control plane unavailable) retry by themselves while auto-refresh is on.
  var reload = Number(body.getAttribute("data-reload"));
  if (reload > 0 && wanted()) { window.setTimeout(function () { window.location.reload(); }, reload * 1000); }
})();
