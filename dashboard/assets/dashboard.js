// pgcoord dashboard: the Channels page's live tail (Server-Sent Events).
// Values are inserted with textContent only, never as markup.
(function () {
  "use strict";
  var tail = document.getElementById("tail");
  if (!tail) return;
  var status = document.getElementById("tail-status");
  var body = document.getElementById("tail-body");
  var dropped = document.getElementById("tail-dropped");
  var max = 200;
  function setStatus(state) {
    status.textContent = state;
    status.dataset.state = state;
  }
  var src = new EventSource(tail.dataset.src);
  src.addEventListener("ready", function () { setStatus("live"); });
  src.addEventListener("message", function (ev) {
    var m = JSON.parse(ev.data);
    var tr = document.createElement("tr");
    var cells = [m.app, m.channel, m.sender, m.preview, m.age_ms + " ms"];
    for (var i = 0; i < cells.length; i++) {
      var td = document.createElement("td");
      td.textContent = String(cells[i]);
      if (i === 3) td.className = "payload";
      if (i === 4) td.className = "num";
      tr.appendChild(td);
    }
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > max) body.removeChild(body.lastChild);
  });
  src.addEventListener("dropped", function (ev) { dropped.textContent = ev.data + " messages dropped (this page fell behind)"; });
  src.addEventListener("error", function () { setStatus("reconnecting"); });
  window.addEventListener("pagehide", function () { src.close(); });
})();
