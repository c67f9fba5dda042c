// The projector: the room in aggregate, no names, refreshed every few seconds.
(function () {
  "use strict";
  const root = document.querySelector("[data-testid=projector]");
  if (!root) return;
  const body = root.querySelector("tbody");
  const count = root.querySelector("[data-testid=projector-count]");
  const spread = (values) => {
    if (!values.length) return "—";
    const mid = values[Math.floor(values.length / 2)];
    const f = (v) => (Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 10) / 10);
    return values.length === 1 ? `${f(mid)}` : `${f(values[0])} · ${f(mid)} · ${f(values[values.length - 1])}`;
  };
  async function poll() {
    try {
      const response = await fetch(root.dataset.url, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const data = await response.json();
        count.textContent = gettext("%s participants").replace("%s", data.participants);
        body.replaceChildren(...data.steps.map((step) => {
          const tr = document.createElement("tr");
          tr.dataset.step = step.id;
          const cells = [step.title, `${step.passed} / ${data.participants}`,
                         step.median_s == null ? "—" : `${step.median_s} s`, spread(step.predicted), spread(step.measured)];
          for (const text of cells) {
            const td = document.createElement("td");
            td.textContent = text;
            tr.append(td);
          }
          return tr;
        }));
      }
    } catch (err) {
      // Try again at the next poll.
    } finally {
      setTimeout(poll, 3000);
    }
  }
  poll();
})();
