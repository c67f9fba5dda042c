// A workshop participant's page: keep the instructor's announcement current, and follow the room
// to the stage the instructor holds it to. Polls the server (a few requests a minute per student).
(function () {
  "use strict";
  const strip = document.querySelector("[data-live-url]");
  if (!strip) return;
  const banner = strip.querySelector(".announcement");
  const POLL_MS = 4000;

  async function poll() {
    try {
      const response = await fetch(strip.dataset.liveUrl, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const { workshop } = await response.json();
      if (!workshop || !workshop.open) {
        strip.hidden = true;
        return;
      }
      banner.textContent = workshop.announcement || "";
      banner.hidden = !workshop.announcement;
      const onStage = location.pathname.startsWith("/stage/");
      if (workshop.locked_url && onStage && !location.pathname.startsWith(workshop.locked_url)) {
        location.assign(workshop.locked_url);
      }
    } catch (err) {
      // The server is away for a moment: the next poll tries again.
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  setTimeout(poll, POLL_MS);
})();
