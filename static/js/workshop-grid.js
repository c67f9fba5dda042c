// The instructor's live grid: participants by steps, polled every two seconds, with how each lab
// took the last broadcast fault. Built with DOM calls, so nicknames are never parsed as HTML.
(function () {
  "use strict";
  const table = document.querySelector("[data-grid-url]");
  if (!table) return;
  const summary = document.querySelector("[data-testid=broadcast-summary]");
  // The broadcast form's "by N ms" belongs to "Slow down" alone.
  const action = document.querySelector("[data-testid=broadcast-action]");
  const byMs = document.querySelector("[data-testid=broadcast-ms]");
  if (action && byMs) {
    const follow = () => { byMs.hidden = action.value !== "slow"; };
    action.addEventListener("change", follow);
    follow();
  }
  const POLL_MS = 2000;
  const el = (tag, attrs = {}, text = "") => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    return node;
  };
  const secs = (s) => (s == null ? "" : s < 90 ? `${Math.round(s)} s` : `${(s / 60).toFixed(1)} min`);
  const SYMBOL = { passed: "✓", current: "▶", stuck: "⚠", locked: "" };
  // How a lab took the last fault (visualizer.workshops): an error fault by its errors, a "slow"
  // fault by its p95 against the one before it (baseline_ms), shown on hover.
  const RECOVERY = {
    recovered: (r) => gettext("recovered in %s").replace("%s", secs(r.seconds)),
    down: (r) => gettext("still failing after %s").replace("%s", secs(r.seconds)),
    unhurt: () => gettext("no errors"),
    slow: (r) => gettext("still slow after %s").replace("%s", secs(r.seconds)),
    steady: () => gettext("p95 unchanged"),
    unknown: () => "—",
    waiting: () => "…",
  };
  const latency = (r) => r.baseline_ms == null ? "" : interpolate(
    gettext("p95 %(now)s ms, %(before)s ms before the fault"),
    { now: r.p95_ms == null ? "—" : Math.round(r.p95_ms), before: Math.round(r.baseline_ms) }, true);

  function render(data) {
    const head = el("tr");
    head.append(el("th", {}, gettext("Participant")), el("th", {}, gettext("Lab")));
    for (const step of data.steps) head.append(el("th", { title: step.title }, step.title));
    if (data.broadcast) head.append(el("th", {}, gettext("Last fault")));
    table.tHead.replaceChildren(head);
    const rows = data.rows.map((row) => {
      const tr = el("tr", { "data-participant": row.nickname });
      const who = el("td");
      if (row.lab) {
        const a = el("a", { href: `${table.dataset.watchBase}${row.lab}/?name=${encodeURIComponent(row.nickname)}`,
                            "data-testid": "watch-link" }, row.nickname);
        who.append(a);
      } else {
        who.textContent = row.nickname;
      }
      const lab = el("td", { class: row.lab_up ? "lab-up" : "lab-down" },
                     row.lab_up ? gettext("up") : row.lab_state ? gettext(row.lab_state) : "—");
      tr.append(who, lab);
      row.cells.forEach((cell, i) => {
        const td = el("td", { class: `cell cell-${cell.state}`, "data-step": data.steps[i].id, "data-state": cell.state },
                      `${SYMBOL[cell.state]} ${cell.state === "passed" ? secs(cell.seconds) : ""}`.trim());
        tr.append(td);
      });
      if (data.broadcast) {
        const r = row.lab && data.broadcast.labs[row.lab];
        const td = el("td", { "data-testid": "recovery", "data-state": r ? r.state : "" },
                      r ? RECOVERY[r.state](r) : "—");
        if (r && latency(r)) td.title = latency(r);
        tr.append(td);
      }
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
    if (data.broadcast && summary) {
      summary.hidden = false;
      summary.textContent = `${gettext("Last fault")}: ${data.broadcast.label}`;
    }
  }

  async function poll() {
    try {
      const response = await fetch(table.dataset.gridUrl, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) render(await response.json());
    } catch (err) {
      // Try again at the next poll.
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  poll();
})();
