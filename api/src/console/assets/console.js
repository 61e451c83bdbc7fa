// The console's one script: on the projections page, it refreshes each projection's position,
// lag, health and rebuild progress from /console/admin/projections/status, every half second
// while a rebuild runs. It only ever writes text (textContent), never HTML.
"use strict";
(function () {
  const table = document.querySelector("table[data-poll]");
  if (!table) {
    return;
  }
  let polls = 0;
  const show = (value) => (value === null || value === undefined ? "—" : String(value));
  const progress = (r) => (r ? `${show(r.state)} ${show(r.position)}/${show(r.head)}` : "—");

  async function poll() {
    let running = false;
    try {
      const answer = await fetch(table.dataset.poll, {
        credentials: "same-origin",
        headers: { accept: "application/json" },
      });
      if (!answer.ok) {
        return;
      }
      const status = await answer.json();
      document.getElementById("head").textContent = show(status.head);
      for (const p of status.projections) {
        const row = Array.from(table.querySelectorAll("tr[data-projection]")).find(
          (r) => r.dataset.projection === p.name,
        );
        if (!row) {
          continue;
        }
        for (const field of ["position", "lag", "healthy", "last_error"]) {
          row.querySelector(`[data-field="${field}"]`).textContent = show(p[field]);
        }
        row.querySelector('[data-field="rebuild"]').textContent = progress(p.rebuild);
        if (p.rebuild) {
          const bar = row.querySelector("progress");
          bar.max = Math.max(p.rebuild.head || 0, 1);
          bar.value = p.rebuild.position || 0;
          running = running || p.rebuild.state === "running";
        }
      }
      polls += 1;
      document.body.dataset.polls = String(polls);
    } catch (e) {
      running = true; // a network hiccup: try again
    }
    if (running) {
      setTimeout(poll, 500);
    }
  }
  poll();
})();
