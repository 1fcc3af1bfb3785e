// rosbackup dashboard: refresh fragments in place, confirm destructive actions,
// submit filter menus on change. No framework, no build step.
(function () {
  "use strict";

  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    var every = parseInt(el.getAttribute("data-every") || "5000", 10);
    var timer = null;
    function tick() {
      if (document.hidden) { timer = setTimeout(tick, every); return; }
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (res) {
          if (res.redirected || res.status === 401) { window.location.reload(); return null; }
          if (!res.ok) { throw new Error("HTTP " + res.status); }
          return res.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          el.innerHTML = html;
          el.removeAttribute("data-stale");
          if (el.querySelector("[data-final]")) {
            el.dispatchEvent(new CustomEvent("rb:final", { bubbles: true }));
            return; // finished: stop polling
          }
          timer = setTimeout(tick, every);
        })
        .catch(function () {
          el.setAttribute("data-stale", "1");
          timer = setTimeout(tick, Math.min(every * 2, 30000));
        });
    }
    timer = setTimeout(tick, every);
    return function () { clearTimeout(timer); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);

    // When a manual backup finishes, refresh the run history and the state cards at once.
    document.addEventListener("rb:final", function () {
      ["runs", "cards"].forEach(function (id) {
        var el = document.getElementById(id);
        if (!el) { return; }
        fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) { if (html !== null) { el.innerHTML = html; } });
      });
    });

    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    });

    document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
  });
})();
