// The live diagram: SVG drawn from Topology.to_dict(), updated from status and frames.
//
// Why hand-written SVG: the layout comes straight from the topology (columns by the kind's
// `tier`), so a graph library would add weight without adding anything. The DOM is built once
// per topology; status and frames only change text and attributes of existing elements, and the
// dots are animated in one requestAnimationFrame loop (never one DOM operation per request).

import { kindText, nodeTitle, outageText, sizeLabel } from "./i18n.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const W = 960; // the narrowest the diagram gets; more tiers widen it (the SVG scales to fit)
const MIN_COL_GAP = 64; // between two columns' boxes: room for an edge's rate label
const NODE_W = 256;
const MARGIN_X = 24;
const TOP_Y = 16;
const GAP_Y = 28;
const LEG_MS = 400; // a dot's travel time each way along an edge
const MAX_DOTS = 120; // bound on dots alive at once, whatever the request rate
const TIER_NAMES = { 0: gettext("clients"), 1: gettext("edge services"), 2: gettext("web tier"), 3: gettext("caches"),
  4: gettext("data tier") };

function el(tag, attrs = {}, parent = null, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

export function fmtRate(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (v >= 100) return v.toFixed(0);
  return v.toFixed(1);
}

export function fmtMs(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

// A translated line with live values: each %(name)s in the text becomes parts[name] (a string, or a
// {key} part), so translators see whole phrases, never fragments.
function tline(fmt, parts) {
  return fmt.split(/%\((\w+)\)s/).map((piece, i) => (i % 2 ? parts[piece] ?? "" : piece)).filter((x) => x !== "");
}

// A web server's modelled CPU, with its size's name when it has one (vertical scaling).
function modelledCpu(workers, ms, size) {
  const cpu = interpolate(ngettext("modelled CPU: %(workers)s worker × %(ms)s ms",
    "modelled CPU: %(workers)s workers × %(ms)s ms", workers), { workers, ms }, true);
  return size ? interpolate(gettext("%(size)s · %(cpu)s"), { size: sizeLabel(size), cpu }, true) : cpu;
}

function sizeName(node, workers, ms) {
  const p = node.params || {};
  const w = workers ?? p.workers;
  const s = ms ?? p.service_ms;
  const z = (node.sizes || []).find((x) => x.workers === w && x.service_ms === s);
  return z ? z.name : null;
}

// The lines a node box shows under its title, by kind. Each line is a list of parts: strings are
// static text, {key} parts are live values that update() fills in.
function linesFor(node, { replicated = false, dataTier = false, sharded = false } = {}) {
  const p = node.params || {};
  const lines = [
    tline(gettext("%(rps)s req/s · errors %(err)s/s"),
      { rps: { key: "rps", cls: "metric-strong" }, err: { key: "err", cls: "metric-err" } }),
    ["p50 ", { key: "p50" }, " · p95 ", { key: "p95" }],
  ];
  if (node.kind === "web") {
    lines.push([{ key: "utilbar" }, ...tline(gettext("util %(util)s · in flight %(inflight)s of %(workers)s"),
      { util: { key: "util" }, inflight: { key: "inflight" }, workers: { key: "workers" } })]);
    lines.push(tline(gettext("queued %(queued)s (limit %(limit)s, then 503)"),
      { queued: { key: "queued" }, limit: String(p.queue_limit) }));
    // The size line changes live when the server is resized (applyFrame: the frame's size/workers).
    lines.push([{ key: "modelled", cls: "modelled", text: modelledCpu(p.workers, p.service_ms, sizeName(node)) }]);
  } else if (node.kind === "sqldb") {
    lines.push([{ key: "utilbar" }, ...tline(gettext("util %(util)s · in flight %(inflight)s of %(workers)s"),
      { util: { key: "util" }, inflight: { key: "inflight" }, workers: String(p.workers) })]);
    lines.push(tline(gettext("queued %(queued)s (limit %(limit)s, then overloaded)"),
      { queued: { key: "queued" }, limit: String(p.queue_limit) }));
    if (sharded) { // a shard holds its own users' rows: say how many, and its share of all
      lines.push(tline(gettext("SQLite shard · %(rows)s rows · %(share)s of all"),
        { rows: { key: "g:rows" }, share: { key: "g:share", cls: "metric-strong" } }));
    } else {
      lines.push([interpolate(gettext("SQLite · %(users)s users · %(posts)s posts"),
        { users: p.users, posts: p.posts }, true)]);
    }
    lines.push([{ key: "modelled", cls: "modelled",
      text: interpolate(ngettext("modelled: %(workers)s connection × %(ms)s ms",
        "modelled: %(workers)s connections × %(ms)s ms", p.workers), { workers: p.workers, ms: p.service_ms }, true) }]);
    if (replicated) {
      // Replication state from each frame (role, log position, lag, delay, lost writes).
      lines.push([{ key: "role", cls: "role-badge", text: "" }, { key: "lsn", text: "" }, { key: "lag", text: "" }]);
      lines.push([{ key: "delay", cls: "modelled", text: "" }, { key: "lost", cls: "metric-err bad", text: "" }]);
    }
  } else if (node.kind === "kvdb") {
    lines.push(tline(gettext("Redis · %(keys)s keys · %(mem)s MB"),
      { keys: { key: "keys" }, mem: { key: "mem" } }));
    lines.push([interpolate(gettext("%(users)s users · %(posts)s posts, denormalised"),
      { users: p.users, posts: p.posts }, true)]);
  } else if (node.kind === "lb") {
    lines.push(tline(gettext("algorithm %(algo)s"), { algo: { key: "algo", cls: "metric-strong" } }));
    lines.push([{ key: "backends", cls: "lb-backends" }]);
    lines.push([interpolate(gettext("checks every %(s)s s · rise %(rise)s · fall %(fall)s"),
      { s: p.health_interval_s, rise: p.rise, fall: p.fall }, true)]);
    lines.push([interpolate(gettext("GET retries on failure: %(retries)s"), { retries: p.retries }, true)]);
  } else if (node.kind === "dns") {
    lines.push([interpolate(gettext("TTL %(ttl)s s · name → %(target)s"), { ttl: p.ttl, target: p.target }, true)]);
  } else if (node.kind === "client") {
    const what = p.flavor === "mobile" ? gettext("JSON API calls") : gettext("HTML pages");
    lines.push(tline(gettext("sends %(rate)s req/s of %(what)s"), { rate: { key: "rate" }, what }));
    if (dataTier) { // the workload's mix matters once there is data to read and write
      lines.push(tline(gettext("writes %(writes)s · popularity skew %(zipf)s"),
        { writes: { key: "writes" }, zipf: { key: "zipf" } }));
    }
  } else if (node.lines && node.lines.length) {
    // Declared by the kind (Kind.lines): %(gauge)s live from the frame, %(param.NAME)s a parameter.
    for (const template of node.lines) {
      lines.push(kindText(template).split(/%\(([\w.]+)\)s/).map((piece, i) => {
        if (!(i % 2)) return piece;
        if (piece.startsWith("param.")) return String(p[piece.slice(6)] ?? "—");
        return { key: `g:${piece}`, gauge: piece, cls: "metric-strong" };
      }).filter((x) => x !== ""));
    }
  } else {
    const modelled = new Set(node.modelled || []);
    const parts = Object.entries(p).map(([k, v]) => `${k} ${v}${modelled.has(k) ? ` ${gettext("(modelled)")}` : ""}`);
    if (parts.length) lines.push([parts.join(" · ")]);
  }
  return lines;
}

const DRAWING_H = 150; // room in the box for a kind's own drawing (Kind.drawing)

function boxHeight(node, ctx) {
  return 52 + linesFor(node, ctx).length * 17 + (node.drawing ? DRAWING_H : 0);
}

// A declared gauge's value as a box line shows it, by what its name says it is.
export function fmtGauge(name, v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "string") return v.replaceAll("_", " ");
  if (typeof v !== "number" || Number.isNaN(v)) return "—";
  if (name.endsWith("_ms")) return fmtMs(v);
  if (/(ratio|share|fraction|util)$/.test(name)) return `${(v * 100).toFixed(1)} %`;
  // Money (modelled prices): a lab moves a few MB, so cents would round it all to nothing.
  if (name.endsWith("_usd")) return v >= 1 ? v.toFixed(2) : v.toFixed(5);
  return Number.isInteger(v) ? v.toLocaleString("en-US").replaceAll(",", " ") : fmtRate(v);
}

/** Squeeze a box's line into the box when its text is longer (a long translation, a big number);
 * measured only when the text changes, so frames cost no layout work otherwise. */
function fitLine(t) {
  if (!t || !t.dataset || !t.dataset.maxW || !t.isConnected) return;
  t.removeAttribute("textLength");
  const max = Number(t.dataset.maxW);
  if (t.getComputedTextLength() > max) {
    t.setAttribute("textLength", String(max));
    t.setAttribute("lengthAdjust", "spacingAndGlyphs");
  }
}

/** Whether a topology has database replicas (the db boxes then show replication state). */
function hasReplication(topology) {
  return topology.nodes.some((n) => n.params && n.params.replica_of);
}

/** Whether some node's kind says this of the topology (Kind.context: "data_tier", "sharded"). */
function declares(topology, context) {
  return topology.nodes.some((n) => (n.context || []).includes(context));
}

const pairKey = (a, b) => [a, b].sort().join("|");

function addressText(info, node) {
  if (!info || !info.address) return "—";
  if (!info.port) return interpolate(gettext("%(address)s (source)"), { address: info.address }, true);
  return `${info.address}:${info.port}/${info.proto || node.proto || ""}`;
}

export class Diagram {
  /**
   * @param {SVGSVGElement} svg
   * @param {{onNodeClick: ((id: string, rect: DOMRect) => void) | null, onDotClick: (sample: object) => void}} handlers
   */
  constructor(svg, { onNodeClick, onDotClick, onRegionClick = null }) {
    this.svg = svg;
    this.onNodeClick = onNodeClick;
    this.onRegionClick = onRegionClick;
    this.ctx = { replicated: false, dataTier: false };
    this.onDotClick = onDotClick;
    this.nodes = new Map(); // id -> {spec, x, y, w, h, g, refs}
    this.edges = new Map(); // "a>b" -> {line, label, labelBg, x1, y1, x2, y2}
    this.pending = []; // dots waiting for their start time
    this.active = []; // dots on screen
    this.raf = 0;
    this.lastTick = 0;
    this.tick = this.tick.bind(this);
  }

  setTopology(topology) {
    this.clearDots();
    this.svg.replaceChildren();
    this.nodes.clear();
    this.edges.clear();
    if (!topology || !topology.nodes) return;
    this.topology = topology;
    this.replicated = hasReplication(topology);
    this.ctx = { replicated: this.replicated,
      dataTier: declares(topology, "data_tier"), sharded: declares(topology, "sharded"),
      sessions: declares(topology, "sessions") };
    this.partKey = "";
    this.replKey = "";
    this.layout(topology);

    // A box per region, under everything else, titled with its address block.
    const regionLayer = el("g", { class: "regions" }, this.svg);
    for (const r of this.regionBoxes) {
      const g = el("g", { class: "region", "data-testid": `region-${r.id}` }, regionLayer);
      el("rect", { x: 8, y: r.y, width: this.width - 16, height: r.h, rx: 14, class: "region-box" }, g);
      const block = r.hosts.length ? ` · .${r.hosts[0]}–.${r.hosts[1]}` : "";
      const title = el("text", { x: 20, y: r.y + 16, class: "region-title", "data-testid": `region-${r.id}-title` }, g,
        `${r.id} · ${r.title}${block}`);
      r.state = el("text", { x: this.width - 20, y: r.y + 16, class: "region-state", "text-anchor": "end",
        "data-testid": `region-${r.id}-state` }, g, "");
      if (this.onRegionClick) {
        // The data centre's menu: its title is the button (the box itself lets clicks through to nodes).
        title.setAttribute("tabindex", "0");
        title.setAttribute("role", "button");
        title.classList.add("clickable");
        const open = (ev) => {
          ev.stopPropagation();
          this.onRegionClick(r.id, r.title, title.getBoundingClientRect());
        };
        title.addEventListener("click", open);
        title.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") open(ev); });
      }
    }
    const labels = el("g", { class: "tier-labels" }, this.svg);
    for (const t of this.tierLabels) {
      el("text", { x: t.x, y: this.height - 10, "text-anchor": "middle", class: "tier-label" }, labels, t.text);
    }
    el("text", { x: MARGIN_X, y: TOP_Y + 12, class: "domain-label" }, labels,
      interpolate(gettext("site name: %(domain)s"), { domain: topology.domain || "" }, true));
    const rtts = Object.entries(topology.latency_ms || {});
    if (rtts.length) {
      // Under the site's name, at the left: the top lane's boxes (DNS) stand further right.
      // Three pairs a line, so the matrix stays clear of them.
      const t = el("text", { x: MARGIN_X, y: TOP_Y + 30, class: "latency-label modelled",
        "data-testid": "latency-matrix" }, labels);
      el("tspan", { x: MARGIN_X }, t, gettext("round trips between regions (modelled):"));
      for (let i = 0; i < rtts.length; i += 3) {
        el("tspan", { x: MARGIN_X, dy: 15 }, t,
          rtts.slice(i, i + 3).map(([k, v]) => `${k.replace("-", "–")} ${v} ms`).join(" · "));
      }
    }
    const edgeLayer = el("g", { class: "edges" }, this.svg);
    // Primary → replica lines come from each frame (who follows whom), not from the topology.
    this.replLayer = el("g", { class: "replication-edges" }, this.svg);
    const nodeLayer = el("g", { class: "nodes" }, this.svg);
    this.dotLayer = el("g", { class: "dots" }, this.svg);
    this.labelLayer = el("g", { class: "edge-labels" }, this.svg);
    this.faultLayer = el("g", { class: "partitions" }, this.svg); // on top: a cut must be seen

    for (const [a, b] of topology.edges) this.drawEdge(edgeLayer, a, b);
    for (const n of this.nodes.values()) this.drawNode(nodeLayer, n);
  }

  layout(topology) {
    const tiers = [...new Set(topology.nodes.map((n) => n.tier))].sort((a, b) => a - b);
    const width = Math.max(W, 2 * MARGIN_X + NODE_W + (tiers.length - 1) * (NODE_W + MIN_COL_GAP));
    this.width = width;
    const colX = (tier) => {
      const i = tiers.indexOf(tier);
      if (tiers.length === 1) return width / 2;
      return MARGIN_X + NODE_W / 2 + (i * (width - 2 * MARGIN_X - NODE_W)) / (tiers.length - 1);
    };
    // Regions (a topology's `regions`): a band per region, stacked, each with its own columns, so
    // a region's users, edge and servers sit together and a line between bands crosses the
    // modelled distance. A node in no region (DNS: near everyone) stays in the lane on top.
    const regionIds = Object.keys(topology.regions || {});
    const regionOf = (n) => (regionIds.length && n.region ? n.region : "");
    // Side services (a kind's `lane: top`: name lookups, caches) sit in a lane above the request path,
    // so the path stays straight.
    const top = topology.nodes.filter((n) => n.lane === "top" && !regionOf(n));
    const main = topology.nodes.filter((n) => n.lane !== "top" || regionOf(n));
    const bh = (n) => boxHeight(n, this.ctx);
    const laneH = top.length ? Math.max(...top.map(bh)) + GAP_Y * 1.5 : 0;

    // Columns of each band: each column's boxes spread evenly over the band's height.
    const bandIds = regionIds.length ? ["", ...regionIds] : [""];
    const bands = bandIds.map((id) => {
      const columns = new Map();
      for (const n of main.filter((m) => regionOf(m) === id)) {
        if (!columns.has(n.tier)) columns.set(n.tier, []);
        columns.get(n.tier).push(n);
      }
      let h = 0;
      for (const col of columns.values()) {
        h = Math.max(h, col.reduce((sum, n) => sum + bh(n), 0) + GAP_Y * (col.length + 1));
      }
      return { id, columns, h: columns.size ? Math.max(h, regionIds.length ? 120 : 280) : 0 };
    }).filter((b) => b.columns.size || !regionIds.length);
    const REGION_PAD = regionIds.length ? 22 : 0; // room for a region's title above its boxes
    const bandH = Math.max(bands.reduce((sum, b) => sum + b.h + (b.id ? REGION_PAD + 10 : 0), 0), 280);
    this.height = TOP_Y + laneH + bandH + 30;

    // The top lane: its nodes side by side around their column's x.
    const laneByTier = new Map();
    for (const n of top) {
      if (!laneByTier.has(n.tier)) laneByTier.set(n.tier, []);
      laneByTier.get(n.tier).push(n);
    }
    for (const [tier, list] of laneByTier) {
      list.forEach((n, i) => {
        const h = bh(n);
        const x = colX(tier) + (i - (list.length - 1) / 2) * (NODE_W + 16);
        this.nodes.set(n.id, { spec: n, x, y: TOP_Y + h / 2, w: NODE_W, h });
      });
    }
    this.regionBoxes = [];
    let bandTop = TOP_Y + laneH;
    for (const band of bands) {
      const pad = band.id ? REGION_PAD : 0;
      const height = bands.length === 1 && !band.id ? bandH : band.h;
      for (const [tier, col] of band.columns) {
        const total = col.reduce((sum, n) => sum + bh(n), 0);
        const gap = (height - total) / (col.length + 1);
        let y = bandTop + pad + gap;
        for (const n of col) {
          const h = bh(n);
          this.nodes.set(n.id, { spec: n, x: colX(tier), y: y + h / 2, w: NODE_W, h });
          y += h + gap;
        }
      }
      if (band.id) {
        const hosts = (topology.region_hosts || {})[band.id] || [];
        this.regionBoxes.push({ id: band.id, title: topology.regions[band.id], y: bandTop, h: height + pad, hosts });
        bandTop += height + pad + 10;
      } else {
        bandTop += height;
      }
    }
    this.svg.setAttribute("viewBox", `0 0 ${width} ${this.height}`);
    const titled = (t) => (topology.nodes.find((n) => n.tier === t && n.tier_title) || {}).tier_title;
    this.tierLabels = tiers.map((t) => ({ x: colX(t), text: TIER_NAMES[t] || (titled(t) ? kindText(titled(t)) : `tier ${t}`) }));
  }

  // Where an edge leaves and enters boxes: the facing sides, so lines never cut through a box.
  // A node in a lane above the source (DNS) is entered from below.
  segment(a, b) {
    const G = 4;
    const box = (n) => ({ l: n.x - n.w / 2, r: n.x + n.w / 2, t: n.y - n.h / 2, b: n.y + n.h / 2 });
    const A = box(a);
    const B = box(b);
    let x1, y1, x2, y2;
    if (B.l > A.r || B.r < A.l) {
      const right = B.l > A.r;
      x1 = right ? A.r + G : A.l - G;
      y1 = a.y;
      if (B.b < A.t || B.t > A.b) {
        const above = B.b < A.t;
        x2 = b.x + (right ? -1 : 1) * b.w / 4;
        y2 = above ? B.b + G : B.t - G;
      } else {
        x2 = right ? B.l - G : B.r + G;
        y2 = b.y;
      }
    } else {
      const down = b.y > a.y;
      x1 = a.x;
      y1 = down ? A.b + G : A.t - G;
      x2 = b.x;
      y2 = down ? B.t - G : B.b + G;
    }
    return { x1, y1, x2, y2 };
  }

  drawEdge(layer, a, b) {
    const na = this.nodes.get(a);
    const nb = this.nodes.get(b);
    if (!na || !nb) return;
    const s = this.segment(na, nb);
    const g = el("g", { class: "edge", "data-testid": `edge-${a}-${b}` }, layer);
    const line = el("line", { ...s, class: "edge-line" }, g);
    const mx = (s.x1 + s.x2) / 2;
    const my = (s.y1 + s.y2) / 2;
    // Labels sit in a layer above the dots (readable), and let clicks through to the dots.
    const lg = el("g", { class: "edge-label-group" }, this.labelLayer);
    const labelBg = el("rect", { x: mx - 34, y: my - 10, width: 68, height: 20, rx: 10, class: "edge-label-bg" }, lg);
    const label = el("text", { x: mx, y: my + 4, class: "edge-label", "text-anchor": "middle",
      "data-testid": `edge-${a}-${b}-rps` }, lg, "—");
    this.edges.set(`${a}>${b}`, { g, lg, line, label, labelBg, ...s, mx });
  }

  drawNode(layer, n) {
    const { spec } = n;
    const x0 = n.x - n.w / 2;
    const y0 = n.y - n.h / 2;
    // Without a click handler (a read-only page) a node is a picture, not a button.
    const clickable = this.onNodeClick ? { tabindex: "0", role: "button" } : { role: "img" };
    const g = el("g", { class: `node kind-${spec.kind} state-idle`, "data-testid": `node-${spec.id}`,
      "data-node": spec.id, ...clickable, "aria-label": `${nodeTitle(spec)} ${spec.id}` }, layer);
    el("rect", { x: x0, y: y0, width: n.w, height: n.h, rx: 10, class: "node-box" }, g);
    el("rect", { x: x0, y: y0, width: 5, height: n.h, rx: 2, class: "node-accent" }, g);

    const title = nodeTitle(spec);
    el("text", { x: x0 + 16, y: y0 + 21, class: "node-title" }, g, title);

    const pillW = 68;
    el("rect", { x: x0 + n.w - pillW - 10, y: y0 + 8, width: pillW, height: 18, rx: 9, class: "state-pill" }, g);
    const stateText = el("text", { x: x0 + n.w - pillW / 2 - 10, y: y0 + 21, class: "state-text",
      "text-anchor": "middle", "data-testid": `node-${spec.id}-state` }, g, "—");

    const addr = el("text", { x: x0 + 16, y: y0 + 39, class: "node-addr" }, g);
    el("tspan", { class: "node-id" }, addr, spec.id);
    el("tspan", {}, addr, " · ");
    const addrValue = el("tspan", { "data-testid": `node-${spec.id}-addr` }, addr, "—");

    // The "slow" fault, any kind: shown on the address line while it lasts.
    const slow = el("text", { x: x0 + n.w - 12, y: y0 + 39, class: "slow-label", "text-anchor": "end",
      "data-testid": `node-${spec.id}-slow` }, g, "");
    const refs = { stateText, addrValue, slow };
    let y = y0 + 58;
    for (const line of linesFor(spec, this.ctx)) {
      const t = el("text", { x: x0 + 16, y, class: "node-line" }, g);
      t.dataset.maxW = String(n.w - 16 - 10 - (line.some((p) => p.key === "utilbar") ? 46 : 0));
      for (const part of line) {
        if (typeof part === "string") {
          el("tspan", {}, t, part);
        } else if (part.key === "utilbar") {
          // A small utilisation bar drawn before the text line.
          el("rect", { x: x0 + 16, y: y - 9, width: 40, height: 10, rx: 2, class: "util-bg" }, g);
          refs.utilFill = el("rect", { x: x0 + 16, y: y - 9, width: 0, height: 10, rx: 2, class: "util-fill" }, g);
          t.setAttribute("x", x0 + 62);
        } else {
          const attrs = { class: part.cls || null };
          if (part.key === "rps") attrs["data-testid"] = `node-${spec.id}-rps`;
          refs[part.key] = el("tspan", attrs, t, part.text !== undefined ? part.text : "—");
        }
      }
      y += 17;
      requestAnimationFrame(() => fitLine(t));
    }
    refs.gauges = Object.keys(refs).filter((k) => k.startsWith("g:"));
    if (spec.drawing) {
      // The kind's own drawing, one module of its own: static/js/lab/kinds/<drawing>.js.
      const area = el("g", { class: `drawing drawing-${spec.drawing}`, "data-testid": `node-${spec.id}-drawing` }, g);
      const box = { x: x0 + 12, y: y - 6, w: n.w - 24, h: DRAWING_H - 8 };
      import(`./kinds/${spec.drawing}.js`).then((mod) => {
        n.drawing = mod.draw(area, box, spec);
        if (this.lastFrame !== undefined) n.drawing.update(this.lastFrame ? (this.lastFrame.nodes || {})[spec.id] || {} : {}, this.lastFrame);
      }).catch((err) => console.warn(`diagram: no drawing ${spec.drawing}`, err));
    }
    if (spec.kind === "web") {
      const tip = el("title", {}, g);
      tip.textContent = gettext("Modelled: one machine cannot have a real N-core server per student, so the "
        + "web node serves each request with one of N workers for a random CPU time (mean service_ms).");
    }
    // The down overlay: a bold label across the box, shown by CSS when the node is down.
    el("text", { x: x0 + n.w - 12, y: y0 + n.h - 10, class: "down-label", "text-anchor": "end" }, g,
      pgettext("node state", "DOWN"));

    if (this.onNodeClick) {
      g.addEventListener("click", (ev) => {
        ev.stopPropagation();
        this.onNodeClick(spec.id, g.getBoundingClientRect());
      });
      g.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          this.onNodeClick(spec.id, g.getBoundingClientRect());
        }
      });
    }
    n.g = g;
    n.refs = refs;
  }

  /** Node states and addresses from the latest status (and the lab's state). */
  applyStatus(status, nodeStates) {
    for (const [id, n] of this.nodes) {
      const info = status && status.nodes ? status.nodes[id] : null;
      n.refs.addrValue.textContent = addressText(info, n.spec);
      this.setNodeState(n, nodeStates[id] || "idle");
    }
  }

  setNodeState(n, state) {
    const cls = `node kind-${n.spec.kind} state-${state}`;
    if (n.g.getAttribute("class") !== cls) n.g.setAttribute("class", cls);
    const label = { up: pgettext("node state", "UP"), down: pgettext("node state", "DOWN"),
      starting: pgettext("node state", "STARTING"), idle: "—" }[state] || state.toUpperCase();
    if (n.refs.stateText.textContent !== label) n.refs.stateText.textContent = label;
    n.state = state;
  }

  /** Live numbers from a frame (or clear them when frame is null). */
  applyFrame(frame) {
    this.lastFrame = frame;
    const fn = frame ? frame.nodes || {} : {};
    // A data centre's outage, on its box: down (its servers killed) or cut off.
    const outages = (frame && frame.outages) || {};
    for (const r of this.regionBoxes || []) {
      const state = outages[r.id] || "";
      const text = state ? outageText(state).toUpperCase() : "";
      if (r.state && r.state.textContent !== text) {
        r.state.textContent = text;
        r.state.parentNode.classList.toggle("region-out", Boolean(state));
      }
    }
    for (const [id, n] of this.nodes) {
      const m = fn[id] || {};
      const r = n.refs;
      const set = (key, text) => {
        if (r[key] && r[key].textContent !== text) {
          r[key].textContent = text;
          fitLine(r[key].parentNode);
        }
      };
      set("rps", frame ? fmtRate(m.rps) : "—");
      for (const key of r.gauges || []) set(key, frame ? fmtGauge(key.slice(2), m[key.slice(2)]) : "—");
      if (n.drawing) n.drawing.update(m, frame);
      set("p50", frame ? fmtMs(m.p50_ms) : "—");
      set("p95", frame ? fmtMs(m.p95_ms) : "—");
      set("err", frame ? fmtRate(m.err_rps) : "—");
      if (r.err) r.err.setAttribute("class", m.err_rps > 0 ? "metric-err bad" : "metric-err");
      if (r.modelled && n.spec.kind === "web") {
        const w = (frame && m.workers) || n.spec.params.workers;
        const ms = (frame && m.service_ms) || n.spec.params.service_ms;
        set("modelled", modelledCpu(w, ms, (frame && m.size) || sizeName(n.spec, w, ms)));
        if (r.workers) set("workers", String(w));
      }
      set("slow", frame && m.slow_ms ? interpolate(gettext("slowed +%(ms)s ms"), { ms: m.slow_ms }, true) : "");
      if (r.algo) set("algo", ((frame && m.algorithm) || n.spec.params.algorithm || "").replaceAll("_", " "));
      if (r.backends) {
        const b = frame && m.backends ? Object.entries(m.backends) : [];
        const down = b.filter(([, state]) => state !== "up").map(([id]) => id);
        // Each backend's health while it fits on the line, a summary beyond three.
        const key = JSON.stringify(b);
        if (r.backends.dataset.key !== key) { // rebuilt only when a backend's health changes
          r.backends.dataset.key = key;
          r.backends.replaceChildren();
          if (!b.length) r.backends.textContent = "—";
          else if (b.length <= 3) {
            b.forEach(([id, state], i) => {
              if (i) el("tspan", {}, r.backends, " · ");
              el("tspan", { class: state === "up" ? "backend-up" : "backend-down",
                "data-testid": `node-${id}-in-rotation` }, r.backends, `${id} ${state === "up" ? "✓" : "✗"}`);
            });
          } else {
            r.backends.textContent = interpolate(gettext("%(up)s of %(n)s backends up"),
              { up: b.length - down.length, n: b.length }, true) + (down.length ? ` · ✗ ${down.join(", ")}` : "");
          }
        }
        r.backends.setAttribute("class", down.length ? "lb-backends has-down" : "lb-backends");
      }
      if (r.role) this.applyReplication(r, frame ? m : {}, set);
      if (r.keys) {
        set("keys", typeof m.keys === "number" ? String(m.keys) : "—");
        set("mem", typeof m.used_memory_mb === "number" ? m.used_memory_mb.toFixed(1) : "—");
      }
      if (r.writes) {
        const w = frame && typeof m.write_ratio === "number" ? m.write_ratio : n.spec.params.write_ratio || 0;
        const z = frame && typeof m.zipf_s === "number" ? m.zipf_s : n.spec.params.zipf_s ?? 1;
        set("writes", `${Math.round(w * 100)} %`);
        set("zipf", z === 0 ? gettext("none") : String(z));
      }
      if (r.rate) set("rate", frame && m.rate !== undefined ? fmtRate(m.rate) : fmtRate(n.spec.params.rate));
      if (r.util) {
        const u = typeof m.util === "number" ? m.util : null;
        set("util", u === null ? "—" : `${Math.round(u * 100)}%`);
        set("queued", m.queued === undefined ? "—" : String(m.queued));
        set("inflight", m.in_flight === undefined ? "—" : String(m.in_flight));
        r.utilFill.setAttribute("width", String(40 * Math.min(1, Math.max(0, u || 0))));
        r.utilFill.setAttribute("class", u >= 0.9 ? "util-fill hot" : u >= 0.7 ? "util-fill warm" : "util-fill");
      }
    }
    const fe = frame ? frame.edges || {} : {};
    const cut = new Set(((frame && frame.partitions) || []).map(([a, b]) => pairKey(a, b)));
    for (const [key, e] of this.edges) {
      const m = fe[key];
      let text = "—";
      let cls = cut.has(pairKey(...key.split(">"))) ? "edge partitioned" : "edge";
      if (m) {
        text = `${fmtRate(m.rps)}/s`;
        if (m.err_rps > 0) {
          text += ` · ${interpolate(gettext("%(rate)s err"), { rate: fmtRate(m.err_rps) }, true)}`;
          cls = m.err_rps >= m.rps * 0.5 ? "edge failing" : "edge degraded";
        } else if (m.rps > 0 && cls === "edge") {
          cls = "edge active";
        }
      }
      if (e.label.textContent !== text) {
        e.label.textContent = text;
        const w = Math.max(52, text.length * 7 + 14);
        e.labelBg.setAttribute("x", String(e.mx - w / 2));
        e.labelBg.setAttribute("width", String(w));
      }
      if (e.g.getAttribute("class") !== cls) {
        e.g.setAttribute("class", cls);
        e.lg.setAttribute("class", `edge-label-group ${cls.replace("edge", "").trim()}`);
      }
      e.line.setAttribute("stroke-width", String(m ? Math.min(6, 1.5 + Math.log10(1 + m.rps) * 1.6) : 1.5));
    }
    this.drawPartitions((frame && frame.partitions) || []);
    this.drawReplication(frame ? frame.nodes || {} : {});
  }

  /** A database box's replication lines: role badge, log position, lag, delay, lost writes. */
  applyReplication(r, m, set) {
    const role = m.role === "primary" ? pgettext("database role", "PRIMARY")
      : m.role === "replica" ? pgettext("database role", "REPLICA") : "";
    set("role", role);
    r.role.setAttribute("class", `role-badge role-${m.role || "none"}`);
    set("lsn", typeof m.lsn === "number"
      ? `${role ? " · " : ""}${interpolate(gettext("log %(lsn)s"), { lsn: m.lsn }, true)}` : "");
    set("lag", m.role === "replica" && typeof m.lag === "number"
      ? ` · ${interpolate(gettext("lag %(lag)s (%(ms)s)"), { lag: m.lag, ms: fmtMs(m.lag_ms) }, true)}` : "");
    set("delay", m.delay_ms > 0
      ? `${interpolate(gettext("delay %(ms)s ms (modelled distance)"), { ms: m.delay_ms }, true)} ` : "");
    set("lost", m.lost_writes > 0
      ? interpolate(ngettext("lost %(n)s write", "lost %(n)s writes", m.lost_writes), { n: m.lost_writes }, true) : "");
  }

  // Where a line between two nodes goes: their edge's if they have one, else facing sides.
  between(a, b) {
    const e = this.edges.get(`${a}>${b}`) || this.edges.get(`${b}>${a}`);
    if (e) return { x1: e.x1, y1: e.y1, x2: e.x2, y2: e.y2 };
    const na = this.nodes.get(a);
    const nb = this.nodes.get(b);
    return na && nb ? this.segment(na, nb) : null;
  }

  /** Partitioned pairs: a red dashed line with a ✂ on it (rebuilt only when the set changes). */
  drawPartitions(pairs) {
    const key = JSON.stringify(pairs);
    if (!this.faultLayer || key === this.partKey) return;
    this.partKey = key;
    this.faultLayer.replaceChildren();
    for (const [a, b] of pairs) {
      const s = this.between(a, b);
      if (!s) continue;
      const g = el("g", { class: "partition", "data-testid": `partition-${a}-${b}` }, this.faultLayer);
      el("title", {}, g, interpolate(gettext("Partition: traffic between %(a)s and %(b)s is dropped"), { a, b }, true));
      el("line", { ...s, class: "partition-line" }, g);
      const mx = (s.x1 + s.x2) / 2;
      const my = (s.y1 + s.y2) / 2;
      el("circle", { cx: mx, cy: my - 18, r: 11, class: "partition-mark-bg" }, g);
      el("text", { x: mx, y: my - 13, class: "partition-mark", "text-anchor": "middle" }, g, "✂");
    }
  }

  /** Primary → replica lines, from each replica's `following` (rebuilt only when it changes). */
  drawReplication(nodes) {
    const pairs = Object.entries(nodes)
      .filter(([id, m]) => m && m.following && this.nodes.has(id) && this.nodes.has(m.following))
      .map(([id, m]) => [m.following, id]);
    const key = JSON.stringify(pairs);
    if (!this.replLayer || key === this.replKey) return;
    this.replKey = key;
    this.replLayer.replaceChildren();
    for (const [primary, replica] of pairs) {
      const s = this.segment(this.nodes.get(primary), this.nodes.get(replica));
      const g = el("g", { class: "replication-edge", "data-testid": `replication-${primary}-${replica}` }, this.replLayer);
      el("title", {}, g, interpolate(gettext("%(replica)s applies %(primary)s's change log"), { primary, replica }, true));
      el("line", { ...s, class: "replication-line" }, g);
      el("text", { x: (s.x1 + s.x2) / 2 + 6, y: (s.y1 + s.y2) / 2 - 4, class: "replication-label" }, g,
        gettext("replication"));
    }
  }

  /** Queue a dot per hop of each sample, hop after hop, starting within the frame's interval. */
  addSamples(samples) {
    if (!samples || !samples.length || document.hidden) return;
    const now = performance.now();
    const t0 = Math.min(...samples.map((s) => s.t || 0));
    for (const sample of samples) {
      let start = now + Math.min(250, Math.max(0, ((sample.t || t0) - t0) * 1000));
      const base = start;
      let prevEnd = start;
      for (const hop of sample.hops || []) {
        const geom = this.hopGeometry(hop);
        if (!geom) continue;
        // Hops run in order; a long real gap (a timeout, a retry) shows as a pause, capped.
        start = Math.max(prevEnd, base + Math.min(hop.at_ms || 0, 3000));
        prevEnd = start + 2 * LEG_MS;
        this.pending.push({ sample, hop, ...geom, start });
      }
    }
    // Bounded: drop the oldest waiting dots first.
    const over = this.pending.length + this.active.length - MAX_DOTS;
    if (over > 0) this.pending.splice(0, over);
    if (!this.raf) this.raf = requestAnimationFrame(this.tick);
  }

  hopGeometry(hop) {
    const a = this.nodes.get(hop.src);
    const b = this.nodes.get(hop.dst);
    if (!a || !b) return null;
    const e = this.edges.get(`${hop.src}>${hop.dst}`);
    if (e) return { x1: e.x1, y1: e.y1, x2: e.x2, y2: e.y2 };
    return this.segment(a, b);
  }

  tick(now) {
    const dt = this.lastTick ? now - this.lastTick : 0;
    this.lastTick = now;
    // Start the dots whose time has come (created only now, so every [data-testid=dot] is moving).
    if (this.pending.length) {
      const still = [];
      for (const d of this.pending) {
        if (d.start <= now) this.spawn(d);
        else still.push(d);
      }
      this.pending = still;
    }
    const alive = [];
    for (const d of this.active) {
      if (d.hover) d.start += dt; // a hovered dot holds still, so it can be clicked
      const p = (now - d.start) / LEG_MS;
      if (p >= 2) {
        d.g.remove();
        continue;
      }
      const f = p < 1 ? p : 2 - p; // out to the server, then back with the answer
      const x = d.x1 + (d.x2 - d.x1) * f;
      const y = d.y1 + (d.y2 - d.y1) * f;
      d.g.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)})`);
      alive.push(d);
    }
    this.active = alive;
    if (this.active.length || this.pending.length) {
      this.raf = requestAnimationFrame(this.tick);
    } else {
      this.raf = 0;
      this.lastTick = 0;
    }
  }

  spawn(d) {
    const failed = d.hop.ok === false;
    const cls = `dot proto-${d.hop.proto || "other"}${failed ? " failed" : ""}`;
    const g = el("g", { class: cls, "data-testid": "dot", "data-request": d.sample.id,
      transform: `translate(${d.x1},${d.y1})` }, this.dotLayer);
    el("circle", { r: 14, class: "dot-hit" }, g); // generous, invisible hit area
    el("circle", { r: 5.5, class: "dot-core" }, g);
    const tip = el("title", {}, g);
    tip.textContent = `${d.hop.src} → ${d.hop.dst}: ${d.hop.op || d.hop.proto} ${d.hop.status || ""}`;
    g.addEventListener("pointerenter", () => { d.hover = true; });
    g.addEventListener("pointerleave", () => { d.hover = false; });
    g.addEventListener("click", (ev) => {
      ev.stopPropagation();
      this.onDotClick(d.sample);
    });
    d.g = g;
    this.active.push(d);
  }

  clearDots() {
    for (const d of this.active) d.g.remove();
    this.active = [];
    this.pending = [];
  }

  /** Where a node sits on screen (for placing its menu). */
  nodeRect(id) {
    const n = this.nodes.get(id);
    return n && n.g ? n.g.getBoundingClientRect() : null;
  }
}
