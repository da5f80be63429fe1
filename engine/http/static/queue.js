// The waiting page: poll the order's state every 2 s and update the page in place.
// The server sends ready-made text in the page's language, so this file knows no wording.
(function () {
  "use strict";
  var root = document.getElementById("q");
  if (!root || !window.fetch) { return; }
  var DONE = { fulfilled: true, rejected: true, expired: true, cancelled: true };
  var PERIOD = 2000;
  var failures = 0;

  function byId(id) { return document.getElementById(id); }

  function setRow(name, text) {
    byId(name).textContent = text === null ? "" : text;
    byId("row-" + name).hidden = text === null;
  }

  function localTime() {
    // The server writes UTC; the buyer reads their own clock.
    var el = byId("expires");
    var when = new Date(el.getAttribute("datetime") || "");
    if (!isNaN(when.getTime())) {
      el.textContent = when.toLocaleString(root.dataset.lang, {
        dateStyle: "medium", timeStyle: "short" });
    }
  }

  function show(state) {
    var text = state.text;
    root.dataset.status = state.status;
    byId("headline").textContent = text.headline;
    byId("detail").textContent = text.detail;
    setRow("position", text.position);
    setRow("eta", text.eta);
    byId("expires").setAttribute("datetime", state.expires_at || "");
    setRow("expires", text.expires);
    localTime();
    var notice = byId("notice");
    notice.textContent = state.notice || "";
    notice.hidden = !state.notice;
    byId("conn").hidden = true;
    byId("keep-open").hidden = !!DONE[state.status];
  }

  function later(ms) { window.setTimeout(poll, ms); }

  function fail(message, retry) {
    var conn = byId("conn");
    conn.textContent = message;
    conn.hidden = false;
    if (retry) {
      failures += 1;
      // Back off while the engine is unreachable so a crowd of pages does not pile on.
      later(Math.min(PERIOD * Math.pow(2, failures), 30000));
    }
  }

  function poll() {
    fetch(root.dataset.state, { cache: "no-store", credentials: "omit",
                                headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (resp.status === 404) { return fail(root.dataset.gone, false); }
        if (!resp.ok) { throw new Error("HTTP " + resp.status); }
        return resp.json().then(function (state) {
          failures = 0;
          show(state);
          if (!DONE[state.status]) { later(PERIOD); }
        });
      })
      .catch(function () { fail(root.dataset.lost, true); });
  }

  localTime();
  if (!DONE[root.dataset.status]) { later(PERIOD); }
}());
