// Throughput and latency over the last five minutes, drawn with the vendored uPlot.
//
// Why one point per second: hello.history holds one-second points, so frames (4/s) are folded
// to the same rate and a reconnect joins the history without a change of resolution.

const WINDOW_S = 300;
const MIN_SPAN_S = 60;

// Clock times in 24-hour form, whatever the language (uPlot's default is "3:45pm", in English).
const pad = (n) => String(n).padStart(2, "0");
function clock(t, seconds) {
  const d = new Date(t * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;
}

export class LabChart {
  /** @param {HTMLElement} container */
  constructor(container) {
    this.container = container;
    this.data = [[], [], [], [], []]; // t, rps, err_rps, p50, p95
    this.plot = null;
    this.dirty = false;
    if (typeof window.uPlot !== "function") {
      container.textContent = gettext("Chart library failed to load.");
      return;
    }
    const css = getComputedStyle(document.documentElement);
    const color = (name, fallback) => (css.getPropertyValue(name) || fallback).trim();
    const opts = {
      width: Math.max(300, container.clientWidth),
      height: 210,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: {
          time: true,
          // Always the trailing window; at least a minute wide so a fresh lab is not one pixel.
          range: (u, min, max) => {
            const hi = Math.max(max || 0, this.data[0].length ? this.data[0][this.data[0].length - 1] : Date.now() / 1000);
            return [Math.min(min || hi, hi - MIN_SPAN_S), hi];
          },
        },
        rps: { range: (u, min, max) => [0, Math.max(5, (max || 0) * 1.15)] },
        ms: { range: (u, min, max) => [0, Math.max(10, (max || 0) * 1.15)] },
      },
      axes: [
        { stroke: "#5b6472", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" },
          values: (u, splits, ax, space, incr) => splits.map((t) => clock(t, incr < 60)) },
        { scale: "rps", label: "req/s", stroke: "#5b6472", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" }, size: 50 },
        { scale: "ms", label: gettext("latency (ms)"), side: 1, stroke: "#5b6472", grid: { show: false }, ticks: { stroke: "#dfe3e8" }, size: 56 },
      ],
      series: [
        { label: gettext("Time"), value: (u, v) => (v == null ? "—" : clock(v, true)) },
        { label: "req/s", scale: "rps", stroke: color("--c-rps", "#2563eb"), width: 2, fill: "rgba(37,99,235,0.08)",
          value: (u, v) => (v == null ? "—" : v.toFixed(1)) },
        { label: gettext("errors/s"), scale: "rps", stroke: color("--c-err", "#dc2626"), width: 2,
          value: (u, v) => (v == null ? "—" : v.toFixed(1)) },
        { label: "p50", scale: "ms", stroke: color("--c-p50", "#059669"), width: 1.5,
          value: (u, v) => (v == null ? "—" : `${v.toFixed(1)} ms`) },
        { label: "p95", scale: "ms", stroke: color("--c-p95", "#d97706"), width: 1.5, dash: [6, 4],
          value: (u, v) => (v == null ? "—" : `${v.toFixed(1)} ms`) },
      ],
    };
    this.plot = new window.uPlot(opts, this.data, container);
    // Follow the container's width (the lab column resizes with the window).
    new ResizeObserver(() => {
      const w = container.clientWidth;
      if (this.plot && w > 0 && Math.abs(w - this.plot.width) > 2) this.plot.setSize({ width: w, height: 210 });
    }).observe(container);
  }

  /** Replace everything with hello.history ([t, rps, p50, p95, err_rps] points). */
  seed(history) {
    this.data = [[], [], [], [], []];
    for (const p of history || []) this.push(p[0], p[1], p[4], p[2], p[3]);
    this.dirty = true;
  }

  /** Fold a frame in: at most one point per second. */
  addFrame(frame) {
    if (!frame || !frame.totals || typeof frame.t !== "number") return;
    const ts = this.data[0];
    const last = ts.length ? ts[ts.length - 1] : -Infinity;
    if (frame.t - last < 1) return;
    const tot = frame.totals;
    this.push(frame.t, tot.rps, tot.err_rps, tot.p50_ms, tot.p95_ms);
    this.dirty = true;
  }

  push(t, rps, err, p50, p95) {
    const d = this.data;
    if (d[0].length && t <= d[0][d[0].length - 1]) return; // out of order after a reconnect
    d[0].push(t);
    d[1].push(rps ?? null);
    d[2].push(err ?? null);
    d[3].push(p50 ?? null);
    d[4].push(p95 ?? null);
    const cutoff = t - WINDOW_S;
    let drop = 0;
    while (drop < d[0].length && d[0][drop] < cutoff) drop++;
    if (drop) for (const arr of d) arr.splice(0, drop);
  }

  /** Called from the page's animation-frame render; redraws only when something changed. */
  render() {
    if (!this.dirty || !this.plot) return;
    this.dirty = false;
    this.plot.setData(this.data);
  }
}
