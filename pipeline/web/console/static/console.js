// Live updates of the queue: poll the newest verdict id, offer a reload when it grows.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var newest = parseInt(live.dataset.newest || "0", 10);
  var every = parseInt(live.dataset.pollMs || "5000", 10);
  function poll() {
    fetch("/api/verdicts/newest", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (body && body.id > newest) { live.hidden = false; }
      })
      .catch(function () {})
      .finally(function () { setTimeout(poll, every); });
  }
  setTimeout(poll, every);
})();
