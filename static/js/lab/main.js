// The lab page: wires the socket, the diagram, the chart and the panels together.
//
// Why a single store + one render per animation frame: frames arrive 4 times a second and the
// status once a second, per lab; keeping the latest of each and rendering on the next animation
// frame keeps the DOM work bounded and lets a fresh `hello` (reload, reconnect) redraw everything
// from scratch with the same code path.

import { LabSocket } from "./socket.js";
import { Diagram, fmtRate, fmtMs } from "./diagram.js";
import { LabChart } from "./chart.js";
import { RecentList, renderDetail, EventLog, Toasts, NodeMenu } from "./panel.js";
import { Steps } from "./steps.js";

const LOST_AFTER_MS = 5000; // no status or frame for this long while "running" → the worker is gone
const BUSY_AFTER_MS = 1000; // queued longer than this → every slot is taken
const TRAFFIC_DEBOUNCE_MS = 300;
const ENGINE_LAG_WARN_MS = 200; // the lab's event loop this late: the machine, not the model, sets the pace
const ACTIVE = new Set(["queued", "starting", "running", "stopping"]);

const $ = (id) => document.getElementById(id);

// UI strings go through Django's JavaScript catalog (loaded before this module as window.gettext).
/** A lab state as the user reads it (the badge and the event log). */
export function labStateName(state) {
  switch (state) {
    case "queued": return pgettext("lab state", "queued");
    case "starting": return pgettext("lab state", "starting");
    case "running": return pgettext("lab state", "running");
    case "stopping": return pgettext("lab state", "stopping");
    case "stopped": return pgettext("lab state", "stopped");
    case "failed": return pgettext("lab state", "failed");
    case "lost": return pgettext("lab state", "lost");
    default: return state;
  }
}

/** A lifetime as the page says it: "2 h", "90 min", "45 s". */
export function durationText(seconds) {
  if (seconds >= 3600 && seconds % 3600 === 0) return interpolate(gettext("%(n)s h"), { n: seconds / 3600 }, true);
  if (seconds >= 60 && seconds % 60 === 0) return interpolate(gettext("%(n)s min"), { n: seconds / 60 }, true);
  return interpolate(gettext("%(n)s s"), { n: seconds }, true);
}

/** Why a lab ended, in the page's language when the status names the reason (the engine and the
 * server word it in English: core/engine/runner.py, visualizer/services.py). */
export function statusMessage(status) {
  switch (status.reason) {
    case "lost": return gettext("lost: the worker hosting this lab stopped; start again");
    case "limit":
      return typeof status.limit_s === "number"
        ? interpolate(gettext("stopped: labs stop after %(limit)s"), { limit: durationText(status.limit_s) }, true)
        : status.message || "";
    case "idle": return gettext("stopped: nobody watched it for a while");
    case "unclaimed": return gettext("stopped: its workshop ended before anyone claimed it");
    case "redis": return gettext("failed: the lab lost its connection to the server's Redis; start again");
    default: return status.message || "";
  }
}

/** A node's state in the start-up progress chips. */
function nodeStateName(state) {
  switch (state) {
    case "waiting": return pgettext("node state", "waiting");
    case "starting": return pgettext("node state", "starting");
    case "up": return pgettext("node state", "up");
    case "down": return pgettext("node state", "down");
    case "failed": return pgettext("node state", "failed");
    default: return state;
  }
}

export function startLab(root) {
  const store = {
    topology: null,
    lessonTopology: null, // the lesson's own, drawn again when a new lab starts

    status: { state: "stopped" },
    frame: null,
    nodeStates: {},
    lastLabMsgAt: 0,
    queuedAt: 0,
    lost: false,
    conn: "connecting",
    retryInMs: 0,
    pending: null, // "start" | "stop" sent, waiting for the status that confirms it
    pendingAt: 0,
    lastSeq: -1,
    labId: null,
    rateTouchedAt: 0,
    wantedRate: null, // a rate chosen while the lab was not running, sent once it runs
    sentRate: null,
  };

  // Read-only (the watch page, data-readonly): it shows the lab and sends nothing, so no control,
  // node menu or step action is wired (the template renders none; its socket refuses commands).
  const readonly = root.dataset.readonly === "1";
  const diagramWrap = $("diagram-wrap");
  const diagram = new Diagram($("diagram"), {
    onNodeClick: readonly ? null : (id, rect) => {
      const n = diagram.nodes.get(id);
      const edges = (store.topology && store.topology.edges) || [];
      // Who it talks to: its edges, and for a database whom it replicates from or to.
      const fn = (store.frame && store.frame.nodes) || {};
      const replicas = Object.entries(fn).filter(([, m]) => m && m.following === id).map(([r]) => r);
      const peers = [...new Set([...edges.filter((e) => e.includes(id)).map(([a, b]) => (a === id ? b : a)),
        ...(fn[id] && fn[id].following ? [fn[id].following] : []), ...replicas])];
      const partitioned = ((store.frame && store.frame.partitions) || [])
        .filter((p) => p.includes(id)).map(([a, b]) => (a === id ? b : a));
      menu.open(n.spec, rect, diagramWrap.getBoundingClientRect(), {
        state: store.nodeStates[id] || "idle",
        labRunning: labState() === "running",
        gauges: (store.frame && store.frame.nodes && store.frame.nodes[id]) || {},
        peers,
        partitioned,
        scalable: Boolean(n.spec.scalable), // the kind's declaration (core/engine/kinds.py)
        dataTier: diagram.ctx.dataTier,
      });
    },
    onDotClick: (sample) => select(sample),
    onRegionClick: readonly ? null : (region, title, rect) => {
      menu.openRegion(region, title, rect, diagramWrap.getBoundingClientRect(), {
        labRunning: labState() === "running",
        outage: ((store.frame && store.frame.outages) || {})[region],
      });
    },
  });
  const chart = new LabChart($("chart"));
  const recent = new RecentList($("recent"), (sample) => select(sample));
  const events = new EventLog($("events"));
  const toasts = new Toasts($("toasts"));
  // The lesson's steps (in the lesson column); done only when the server's progress says so.
  const steps = new Steps($("steps"), { send: (cmd) => send(cmd), labState: () => labState() });
  // "add" names the node to copy as `like`; every other node action names it as `node`.
  // "add" names the node to copy as `like`; a data centre's actions name a region, no node.
  const menu = readonly ? null : new NodeMenu($("node-menu"), (action, node, extra = {}) =>
    send(action === "add" ? { action, like: node } : node === null ? { action, ...extra } : { action, node, ...extra }));

  function select(sample) {
    recent.select(sample.id);
    renderDetail($("request-detail"), sample, store.topology);
    scheduleRender();
  }
  renderDetail($("request-detail"), null);

  // ---- state --------------------------------------------------------------------------------
  function labState() {
    const s = store.status.state || "stopped";
    if (store.lost || s === "lost") return "lost";
    return s;
  }

  function setTopology(topology) {
    if (!topology) return;
    const same = store.topology && JSON.stringify(store.topology) === JSON.stringify(topology);
    store.topology = topology;
    if (!same) {
      // Nodes were added or removed: re-lay out now; render() applies the kept status and frame.
      diagram.setTopology(topology);
      if (menu && menu.nodeId && !topology.nodes.some((n) => n.id === menu.nodeId)) menu.close();
    }
    if (readonly) return;
    const clients = topology.nodes.filter((n) => n.kind === "client");
    trafficMax = Math.max(1, clients.length * 2000);
    $("traffic-rate").max = String(trafficMax);
    if (store.rateTouchedAt === 0) setTrafficControl(clients.reduce((s, n) => s + (n.params.rate || 0), 0));
  }

  function applyStatus(status) {
    const prev = labState();
    if (status.lab && status.lab !== store.labId) {
      store.labId = status.lab;
      store.lastSeq = -1;
      store.nodeStates = {};
      store.sentRate = null;
      if (!status.topology) setTopology(store.lessonTopology); // a new lab starts as the lesson drew it
    }
    if (status.topology) setTopology(status.topology); // the live one, after nodes were added or removed
    store.status = status;
    store.lost = false;
    store.lastLabMsgAt = performance.now();
    if (status.state === "queued" && prev !== "queued") store.queuedAt = performance.now();
    for (const [id, info] of Object.entries(status.nodes || {})) {
      // A node not yet started reports "stopped"; the diagram shows it as not yet up.
      if (info && info.state) store.nodeStates[id] = info.state === "stopped" ? "idle" : info.state;
    }
    if (!ACTIVE.has(status.state)) {
      store.nodeStates = {};
      store.frame = null;
    }
    if (store.pending === "start" && status.state !== "stopped") store.pending = null;
    if (store.pending === "stop" && !ACTIVE.has(status.state)) store.pending = null;
    const now = labState();
    if (now !== prev) {
      const said = interpolate(gettext("lab %(state)s"), { state: labStateName(now) }, true);
      const why = statusMessage(status);
      events.note(`${said}${why ? `: ${why}` : ""}`);
      if (now === "running" && store.wantedRate !== null) {
        send({ action: "traffic", rate: store.wantedRate });
        store.wantedRate = null;
      }
    }
  }

  function applyFrame(frame, { animate }) {
    if (frame.lab && store.labId && frame.lab !== store.labId) return; // a frame from an old lab
    if (typeof frame.seq === "number") {
      if (frame.seq <= store.lastSeq) return;
      store.lastSeq = frame.seq;
    }
    store.frame = frame;
    store.lost = false;
    store.lastLabMsgAt = performance.now();
    for (const [id, m] of Object.entries(frame.nodes || {})) {
      if (m && typeof m.up === "boolean") store.nodeStates[id] = m.up ? "up" : "down";
    }
    if (animate) diagram.addSamples(frame.samples);
    recent.add(frame.samples);
    events.add(frame.events);
    chart.addFrame(frame);
    // Follow the lab's real rate unless the user is working the control right now.
    const rates = Object.entries(frame.nodes || {})
      .filter(([id]) => diagram.nodes.get(id)?.spec.kind === "client")
      .map(([, m]) => m.rate);
    if (!readonly && rates.length && rates.every((r) => typeof r === "number")
        && performance.now() - store.rateTouchedAt > 3000 && document.activeElement !== $("traffic-rate")) {
      setTrafficControl(rates.reduce((s, r) => s + r, 0));
    }
  }

  function onMessage(msg) {
    steps.onMessage(msg);
    switch (msg.type) {
      case "hello":
        // A new connection: everything is redrawn from this message alone.
        store.lastSeq = -1;
        store.labId = (msg.status && msg.status.lab) || null;
        store.nodeStates = {};
        store.frame = null;
        diagram.clearDots();
        setTopology(msg.topology);
        applyStatus(msg.status || { state: "stopped" });
        chart.seed(msg.history || []);
        if (msg.frame && ACTIVE.has(labState())) applyFrame(msg.frame, { animate: false });
        break;
      case "status":
        applyStatus(msg);
        break;
      case "frame":
        applyFrame(msg, { animate: true });
        break;
      case "topology":
        if (!msg.lab || !store.labId || msg.lab === store.labId) setTopology(msg.topology);
        break;
      case "error":
        toasts.show(msg.message || gettext("Something went wrong."));
        if (store.pending) store.pending = null;
        break;
      default:
        break;
    }
    scheduleRender();
  }

  function onConnection(state, retryInMs, code) {
    if (state === "refused") {
      const why = {
        4401: gettext("Your session has expired: reload the page to get a new one."),
        4429: gettext("This lab is open in too many tabs: close some of them, then reload this page."),
        1009: gettext("The page sent the lab server a message that was too big: reload the page."),
        4009: gettext("The page sent the lab server a message that was too big: reload the page."),
        4403: gettext("Only staff can watch a student's lab: sign in as staff, then reload the page."),
      }[code] || gettext("This lab is not available any more: reload the page.");
      toasts.show(why, 600000);
    }
    if (state === "closed" && store.conn === "open") events.note(gettext("connection to the lab server lost; reconnecting"), "conn");
    if (state === "open" && store.everOpen) events.note(gettext("reconnected"), "conn");
    if (state === "open") store.everOpen = true;
    store.conn = state;
    store.retryInMs = retryInMs || 0;
    scheduleRender();
  }

  const socket = new LabSocket(root.dataset.wsPath, { onMessage, onConnection });

  function send(command) {
    if (readonly) return false;
    if (!socket.send(command)) {
      toasts.show(gettext("Not connected to the lab server; reconnecting…"));
      return false;
    }
    return true;
  }

  // ---- controls -----------------------------------------------------------------------------
  function command(action) {
    if (send({ action })) {
      store.pending = action;
      store.pendingAt = performance.now();
    }
    scheduleRender();
  }
  if (!readonly) {
    $("start-button").addEventListener("click", () => command("start"));
    $("stop-button").addEventListener("click", () => command("stop"));
  }

  // Traffic: a log-scale slider (1 to 2,000 req/s feel equally reachable) and an exact number.
  let trafficMax = 4000;
  const SLIDER_MAX = 1000;
  const sliderTop = () => Math.min(trafficMax, 2000);
  const fromSlider = (pos) => (pos <= 0 ? 0 : Math.round(Math.exp((Math.log(sliderTop()) * pos) / SLIDER_MAX)));
  const toSlider = (rate) => (rate <= 1 ? (rate > 0 ? 1 : 0) : Math.round((SLIDER_MAX * Math.log(Math.min(rate, sliderTop()))) / Math.log(sliderTop())));
  const slider = $("traffic-slider");
  const number = $("traffic-rate");
  let trafficTimer = 0;

  function setTrafficControl(rate) {
    const r = Math.round(rate * 10) / 10;
    if (String(r) !== number.value) number.value = String(r);
    slider.value = String(toSlider(r));
  }

  function trafficChanged(rate) {
    store.rateTouchedAt = performance.now();
    clearTimeout(trafficTimer);
    trafficTimer = setTimeout(() => {
      const r = Math.max(0, Math.min(trafficMax, rate));
      if (labState() === "running") {
        // input and change both fire for one edit: send each distinct rate once.
        if (r !== store.sentRate && send({ action: "traffic", rate: r })) store.sentRate = r;
        store.wantedRate = null;
      } else {
        store.wantedRate = r; // sent when the lab is running
      }
      scheduleRender();
    }, TRAFFIC_DEBOUNCE_MS);
  }

  function numberChanged() {
    const r = Number(number.value);
    if (number.value === "" || !Number.isFinite(r) || r < 0) return;
    slider.value = String(toSlider(r));
    trafficChanged(r);
  }
  if (!readonly) {
    slider.addEventListener("input", () => {
      const r = fromSlider(Number(slider.value));
      number.value = String(r);
      trafficChanged(r);
    });
    number.addEventListener("input", numberChanged);
    number.addEventListener("change", numberChanged);
  }

  // ---- rendering ----------------------------------------------------------------------------
  let rafPending = false;
  function scheduleRender() {
    if (rafPending) return;
    rafPending = true;
    requestAnimationFrame(() => {
      rafPending = false;
      render();
    });
  }

  function badgeText(state) {
    const st = store.status;
    switch (state) {
      case "queued":
        return performance.now() - store.queuedAt > BUSY_AFTER_MS && st.slots
          ? interpolate(gettext("queued — all %(slots)s lab slots are busy, waiting"), { slots: st.slots }, true)
          : gettext("queued — waiting for a lab slot");
      case "starting": {
        const ids = store.topology ? store.topology.nodes.map((n) => n.id) : [];
        const up = ids.filter((id) => store.nodeStates[id] === "up").length;
        return interpolate(gettext("starting — %(up)s/%(total)s nodes up"), { up, total: ids.length }, true);
      }
      case "running": return labStateName("running");
      case "stopping": return gettext("stopping…");
      case "failed": return labStateName("failed");
      case "lost": return gettext("lost — the lab stopped answering");
      default: return labStateName("stopped");
    }
  }

  function render() {
    const state = labState();
    const open = store.conn === "open";

    const badge = $("lab-state");
    const text = store.pending === "start" && !ACTIVE.has(state) ? gettext("starting…") : badgeText(state);
    if (badge.textContent !== text) badge.textContent = text;
    badge.dataset.state = state;
    badge.className = `badge state-${state}`;
    const message = state !== "running" ? statusMessage(store.status) : "";
    $("lab-message").textContent = message;

    if (!readonly) {
      $("start-button").disabled = !open || ACTIVE.has(state) || store.pending === "start";
      $("stop-button").disabled = !open || !ACTIVE.has(state) || store.pending === "stop";
      $("traffic-hint").textContent = store.wantedRate !== null
        ? gettext("applies when the lab is running") : gettext("total, split across clients");
    }

    const conn = $("conn");
    conn.dataset.conn = store.conn;
    conn.textContent = store.conn === "open" ? gettext("connected")
      : store.conn === "closed"
        ? interpolate(gettext("reconnecting in %(seconds)s s…"), { seconds: Math.round(store.retryInMs / 1000) }, true)
        : store.conn === "refused" ? gettext("disconnected: reload the page") : gettext("connecting…");

    // Per-node progress while the lab comes up.
    const progress = $("progress");
    if (state === "starting" && store.topology) {
      progress.hidden = false;
      progress.replaceChildren(...store.topology.nodes.map((n) => {
        const s = store.nodeStates[n.id] && store.nodeStates[n.id] !== "idle" ? store.nodeStates[n.id] : "waiting";
        const chip = document.createElement("span");
        chip.className = `chip chip-${s}`;
        chip.textContent = `${n.id} ${s === "up" ? "✓" : nodeStateName(s)}`;
        return chip;
      }));
    } else if (!progress.hidden) {
      progress.hidden = true;
      progress.replaceChildren();
    }

    const frame = ACTIVE.has(state) ? store.frame : null;
    const tot = frame ? frame.totals || {} : {};
    $("total-rps").textContent = frame ? fmtRate(tot.rps) : "—";
    $("total-p50").textContent = frame ? fmtMs(tot.p50_ms) : "—";
    $("total-p95").textContent = frame ? fmtMs(tot.p95_ms) : "—";
    const err = $("total-err");
    err.textContent = frame ? fmtRate(tot.err_rps) : "—";
    err.classList.toggle("bad", !!frame && tot.err_rps > 0);
    // Stale reads (replication lag seen by a user): shown once the lab counts them.
    const staleWrap = $("total-stale-wrap");
    if (staleWrap) {
      const has = !!frame && typeof tot.stale_total === "number";
      staleWrap.hidden = !has;
      if (has) {
        $("total-stale").textContent = String(tot.stale_total);
        $("total-stale").classList.toggle("bad", tot.stale_total > 0);
        $("total-stale-label").textContent = gettext("stale reads");
      }
    }
    // Logouts (sessions lost with their server: stage 9), only where a kind says sessions are the
    // lesson (Kind.context): earlier stages count them too but do not teach them yet.
    const logoutWrap = $("total-logouts-wrap");
    if (logoutWrap) {
      const has = !!frame && typeof tot.logouts_total === "number" && Boolean(diagram.ctx.sessions);
      logoutWrap.hidden = !has;
      if (has) {
        $("total-logouts").textContent = String(tot.logouts_total);
        $("total-logouts").classList.toggle("bad", tot.logouts_rps > 0);
        $("total-logouts-label").textContent = gettext("logouts");
      }
    }

    // The lab's own event loop falling behind: past this, latencies measure the machine, not the
    // modelled servers (core/engine/looplag.py), so say so rather than let the chart mislead.
    const lag = frame && frame.engine ? frame.engine.lag_ms : 0;
    const lagEl = $("engine-lag");
    lagEl.hidden = !(lag >= ENGINE_LAG_WARN_MS);
    if (!lagEl.hidden) {
      lagEl.textContent = interpolate(gettext("⚠ this machine is %(ms)s ms behind: latencies now include the lab's own delay"),
        { ms: Math.round(lag) }, true);
    }

    diagram.applyStatus(store.status, ACTIVE.has(state) ? store.nodeStates : {});
    diagram.applyFrame(frame);
    chart.render();
    recent.render();
    events.render();
  }

  // The lab's heartbeat: status comes every second while it runs; silence means its worker died.
  setInterval(() => {
    const s = store.status.state;
    if (store.conn === "open" && (s === "starting" || s === "running" || s === "stopping")
        && !store.lost && performance.now() - store.lastLabMsgAt > LOST_AFTER_MS) {
      store.lost = true;
      events.note(gettext("lab lost: no word from its worker"), "lost");
    }
    if (store.pending && performance.now() - store.pendingAt > 5000) store.pending = null; // never confirmed
    scheduleRender(); // also moves "queued" on to "all slots busy"
  }, 1000);

  // Draw the diagram from the page's own copy of the topology before the socket says hello.
  try {
    store.lessonTopology = JSON.parse(root.dataset.topology || "null");
    setTopology(store.lessonTopology);
  } catch (err) {
    console.warn("lab: bad topology in page", err);
  }
  render();
  socket.connect();
  return { store, socket, diagram, chart, onMessage };
}

const root = document.getElementById("lab");
if (root && root.dataset.wsPath) {
  window.scaleLab = startLab(root);
}
