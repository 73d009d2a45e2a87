// Live progress of a distribution: the server pushes each change as a "progress" event
// (server-sent events); this only writes the new values into the table. Without script
// the page still shows the state as of its loading.
(function () {
  "use strict";
  var table = document.getElementById("sites");
  if (!table || !window.EventSource) { return; }
  var live = document.getElementById("live");
  var source = new EventSource(table.dataset.eventsUrl);
  source.addEventListener("progress", function (message) {
    var data = JSON.parse(message.data);
    document.getElementById("status").textContent = data.status;
    data.sites.forEach(function (site) {
      var row = table.querySelector('tr[data-edge="' + CSS.escape(site.edge) + '"]');
      if (!row) { return; }
      ["state", "files", "bytes", "rate", "error"].forEach(function (field) {
        row.querySelector("." + field).textContent = site[field];
      });
    });
    live.dataset.events = String(Number(live.dataset.events) + 1);
    live.textContent = "live";
    if (data.status === "Completed" || data.status === "Failed") {
      source.close();
      live.textContent = "";
      var abort = document.getElementById("abort-form");
      if (abort) { abort.hidden = true; }  // nothing left to abort
    }
  });
})();
