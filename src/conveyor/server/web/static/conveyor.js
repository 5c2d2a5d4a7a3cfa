// conveyor serve: progressive enhancement only — every page is complete without it.
// 1. "Copy digest" buttons (hidden without JS) copy the full digest.
// 2. The board listens to /events and swaps in /?fragment=board when the ledger grows.
"use strict";

(function () {
  function say(text) {
    var live = document.getElementById("live");
    if (live) { live.textContent = text; }
  }

  function enableCopy(root) {
    var buttons = root.querySelectorAll("button.copy[data-copy]");
    Array.prototype.forEach.call(buttons, function (button) {
      if (!navigator.clipboard) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(button.getAttribute("data-copy")).then(
          function () { say("Copied " + button.getAttribute("data-copy")); },
          function () { say("Could not copy the digest"); }
        );
      });
    });
  }

  function liveBoard(main) {
    if (!window.EventSource) { return; }
    var known = main.getAttribute("data-ledger-size");
    var fetching = false;
    var again = false;
    function refresh() {
      if (fetching) { again = true; return; }
      fetching = true;
      fetch("/?fragment=board", { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          var focused = document.activeElement && document.activeElement.id;
          main.innerHTML = html;  // server-rendered and escaped; CSP forbids inline script
          enableCopy(main);
          if (focused && document.getElementById(focused)) { document.getElementById(focused).focus(); }
          say("The board was updated");
        })
        .catch(function () { /* the next event tries again */ })
        .then(function () {
          fetching = false;
          if (again) { again = false; refresh(); }
        });
    }
    var source = new EventSource("/events");
    source.addEventListener("ledger", function (event) {
      if (event.data !== known) {
        known = event.data;
        main.setAttribute("data-ledger-size", known);
        refresh();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    enableCopy(document);
    var main = document.querySelector("main[data-live='board']");
    if (main) { liveBoard(main); }
  });
})();
