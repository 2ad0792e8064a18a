// The maas console's only script: regions marked data-live="URL" are refreshed from URL
// (a fragment of the same page) every few seconds, until the fragment says it is final.
// Pages work without it; it only keeps progress live.
(function () {
  "use strict";
  function refresh(el) {
    var url = el.getAttribute("data-live");
    if (!url) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        el.innerHTML = html;
        if (el.querySelector("[data-final]")) { el.removeAttribute("data-live"); }
      })
      .catch(function () { /* keep the last good view; try again next tick */ });
  }
  function tick() {
    document.querySelectorAll("[data-live]").forEach(refresh);
  }
  if (document.querySelector("[data-live]")) { setInterval(tick, 2000); }
})();
