// The HTML parts of the lab around the diagram: recent requests, request details, event log,
// error toasts and the node menu.
//
// Why batched: messages only mark a part dirty; main.js calls render() once per animation frame,
// so a burst of frames costs one DOM update, never one per request.

import { kindText, nodeTitle, outageText, sizeLabel } from "./i18n.js";

/** Tiny element builder; text always goes in as textContent (messages are never parsed as HTML). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export function clockTime(t) {
  if (typeof t !== "number") return "";
  const d = new Date(t * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function ms(v) {
  if (typeof v !== "number") return "—";
  return v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`;
}

// The request's main operation, for one-line summaries: the last HTTP hop, else the last hop.
function summary(sample) {
  const hops = sample.hops || [];
  const http = [...hops].reverse().find((x) => x.proto === "http") || hops[hops.length - 1];
  if (!http) return gettext("(no hops)");
  return `${http.op || http.proto}${http.status ? ` → ${http.status}` : ""}`;
}

/** The last ~30 sampled requests, newest first. */
export class RecentList {
  constructor(container, onSelect, limit = 30) {
    this.container = container;
    this.onSelect = onSelect;
    this.limit = limit;
    this.items = [];
    this.selected = null;
    this.dirty = true;
  }

  add(samples) {
    if (!samples || !samples.length) return;
    const sorted = [...samples].sort((a, b) => (b.t || 0) - (a.t || 0));
    this.items = sorted.concat(this.items).slice(0, this.limit);
    this.dirty = true;
  }

  select(id) {
    this.selected = id;
    this.dirty = true;
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    if (!this.items.length) {
      this.container.replaceChildren(h("li", { class: "empty" }, gettext("No requests yet. Start the lab.")));
      return;
    }
    const rows = this.items.map((s) => {
      const path = (s.hops || []).map((x) => x.dst);
      return h("li", {},
        h("button", {
          type: "button",
          class: `req-row${s.ok ? "" : " failed"}${s.id === this.selected ? " selected" : ""}`,
          dataset: { request: s.id },
          onclick: () => this.onSelect(s),
        },
        h("span", { class: "req-time" }, clockTime(s.t)),
        h("span", { class: `req-ok ${s.ok ? "ok" : "bad"}` }, s.ok ? pgettext("a request", "OK") : pgettext("a request", "FAIL")),
        h("span", { class: "req-client" }, s.client),
        h("span", { class: "req-path" }, [s.client, ...path].join(" → ")),
        h("span", { class: "req-op" }, summary(s)),
        h("span", { class: "req-ms" }, ms(s.ms))));
    });
    this.container.replaceChildren(...rows);
  }
}

/** The modelled round trip between two nodes' regions (0 within one, or without regions). */
export function modelledRtt(topology, a, b) {
  if (!topology || !topology.latency_ms) return { ms: 0 };
  const region = (id) => ((topology.nodes || []).find((n) => n.id === id) || {}).region || "";
  const ra = region(a);
  const rb = region(b);
  if (!ra || !rb || ra === rb) return { ms: 0 };
  return { ms: topology.latency_ms[[ra, rb].sort().join("-")] || 0, from: ra, to: rb };
}

/** One request's hops: what was asked, what came back, when and how long; a hop between two
 * regions says how much of it is the modelled distance. */
export function renderDetail(container, sample, topology = null) {
  if (!sample) {
    container.replaceChildren(h("p", { class: "muted" },
      gettext("Click a moving dot on the diagram, or a row in Recent requests, to see that request hop by hop.")));
    return;
  }
  const hops = sample.hops || [];
  const total = Math.max(sample.ms || 0, ...hops.map((x) => (x.at_ms || 0) + (x.ms || 0)), 0.001);
  const items = hops.map((hop, i) => {
    const left = (100 * (hop.at_ms || 0)) / total;
    const width = Math.max(0.8, (100 * (hop.ms || 0)) / total);
    return h("li", { class: `hop${hop.ok === false ? " failed" : ""}` },
      h("div", { class: "hop-line" },
        h("span", { class: `hop-proto proto-${hop.proto}` }, (hop.proto || "?").toUpperCase()),
        h("span", { class: "hop-route" }, `${i + 1}. ${hop.src} → ${hop.dst}`),
        h("code", { class: "hop-op" }, hop.op || ""),
        h("span", { class: "hop-arrow" }, "→"),
        h("code", { class: `hop-status${hop.ok === false ? " bad" : ""}` }, hop.status || (hop.ok ? pgettext("a hop", "ok") : pgettext("a hop", "failed")))),
      distanceNote(topology, hop),
      h("div", { class: "hop-timing" },
        h("span", {}, interpolate(gettext("starts at +%(start)s ms · takes %(took)s"),
          { start: (hop.at_ms || 0).toFixed(1), took: ms(hop.ms) }, true)),
        h("div", { class: "waterfall" },
          h("div", { class: "waterfall-bar", style: `left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%` }))));
  });
  const notes = [];
  if (!hops.some((x) => x.proto === "dns")) {
    notes.push(h("p", { class: "muted note" },
      gettext("No DNS hop: the client still had the name's answer cached (it keeps it for the record's TTL).")));
  }
  container.replaceChildren(
    h("div", { class: "detail-head" },
      h("span", { class: `req-ok ${sample.ok ? "ok" : "bad"}` }, sample.ok ? pgettext("a request", "OK") : pgettext("a request", "FAILED")),
      h("strong", {}, summary(sample)),
      h("span", { class: "muted" }, `${interpolate(gettext("from %(client)s · %(total)s total"),
        { client: sample.client, total: ms(sample.ms) }, true)} · ${clockTime(sample.t)} · ${sample.id}`)),
    h("ol", { class: "hops" }, items),
    ...notes);
}

function distanceNote(topology, hop) {
  const rtt = modelledRtt(topology, hop.src, hop.dst);
  if (!rtt.ms) return null;
  return h("div", { class: "hop-distance modelled", "data-testid": "hop-distance" },
    interpolate(gettext("of which %(ms)s ms is the distance %(from)s → %(to)s (modelled)"),
      { ms: rtt.ms.toFixed(0), from: rtt.from, to: rtt.to }, true));
}

// How each event is worded: declared once by the engine's kinds (core/engine/kinds.py), translated
// by the page (visualizer/texts.py). Only the way a field's value is shown is decided here.
let eventTexts = null;
const FIELD_FORMAT = {
  size: (v) => sizeLabel(v),
  fraction: (v) => `${(v * 100).toFixed(1)} %`,
  value: (v) => String(v).replaceAll("_", " "),
};

function eventText(e) {
  if (eventTexts === null) {
    const el = document.getElementById("event-texts");
    eventTexts = el ? JSON.parse(el.textContent) : {};
  }
  const declared = eventTexts[e.kind];
  if (!declared) { // an event this page does not know (a newer engine): say what it can
    const extra = e.message || e.detail || "";
    return `${(e.kind || gettext("event")).replace(/_/g, " ")}${e.node ? ` (${e.node})` : ""}${extra ? `: ${extra}` : ""}`;
  }
  const [field, other] = declared.otherwise || [];
  const text = field && !e[field] ? other : declared.text;
  const values = {};
  for (const [k, v] of Object.entries(e)) values[k] = FIELD_FORMAT[k] && v != null ? FIELD_FORMAT[k](v) : v;
  return interpolate(text, values, true).trim();
}

/** A small log of what happened (frame.events plus the lab's state changes). */
export class EventLog {
  constructor(container, limit = 60) {
    this.container = container;
    this.limit = limit;
    this.items = [];
    this.dirty = true;
  }

  add(events) {
    if (!events || !events.length) return;
    for (const e of events) this.items.unshift({ t: e.t, text: eventText(e), kind: e.kind || "" });
    this.items.length = Math.min(this.items.length, this.limit);
    this.dirty = true;
  }

  note(text, kind = "state") {
    this.items.unshift({ t: Date.now() / 1000, text, kind });
    this.items.length = Math.min(this.items.length, this.limit);
    this.dirty = true;
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    if (!this.items.length) {
      this.container.replaceChildren(h("li", { class: "empty" }, gettext("Nothing has happened yet.")));
      return;
    }
    this.container.replaceChildren(...this.items.map((e) =>
      h("li", { class: `event ev-${e.kind}` }, h("span", { class: "ev-time" }, clockTime(e.t).slice(0, 8)), h("span", {}, e.text))));
  }
}

/** Error messages from the lab, dismissable, fading on their own after a while. */
export class Toasts {
  constructor(container) {
    this.container = container;
  }

  show(message, ttlMs = 10000) {
    const toast = h("div", { class: "toast", role: "alert", "data-testid": "error-toast" },
      h("span", { class: "toast-msg" }, message),
      h("button", { type: "button", class: "toast-close", "aria-label": gettext("Dismiss"), onclick: () => toast.remove() }, "×"));
    this.container.append(toast);
    while (this.container.children.length > 4) this.container.firstElementChild.remove();
    setTimeout(() => toast.remove(), ttlMs);
  }
}

const SLOW_MS = 200; // what "Slow down" adds to every request the node serves

// How the menu words one value of a declared field: its declared label, else the value itself.
function choiceText(f, v) {
  const declared = (f.labels || {})[String(v)];
  if (declared) return kindText(declared);
  if (f.unit === "%") return `${Math.round(v * 100)} %`;
  if (f.unit === "ms") return interpolate(gettext("%(ms)s ms"), { ms: v }, true);
  if (f.unit) return `${v} ${f.unit}`;
  return String(v).replaceAll("_", " ");
}

/** The menu that opens on a node: kill it like a crash, or restart it. */
export class NodeMenu {
  constructor(container, onAction) {
    this.container = container;
    this.onAction = onAction;
    this.nodeId = null;
    document.addEventListener("click", (ev) => {
      if (this.nodeId && !container.contains(ev.target)) this.close();
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") this.close();
    });
  }

  /**
   * @param {object} context state, labRunning, gauges (the node's frame entry), peers (ids it has
   *   an edge with), partitioned (ids it is cut off from), scalable (may be added/removed)
   */
  open(spec, anchor, hostRect, { state, labRunning, gauges = {}, peers = [], partitioned = [], scalable = false,
    dataTier = false }) {
    this.nodeId = spec.id;
    const hint = !labRunning
      ? gettext("Start the lab first.")
      : state === "down"
        ? gettext("It is down: restart brings it back on the same address.")
        : gettext("Kill closes its sockets like a crash.");
    this.container.replaceChildren(
      h("div", { class: "menu-head" }, h("strong", {}, spec.id), h("span", { class: "muted" }, ` · ${nodeTitle(spec)}`)),
      h("button", { type: "button", class: "btn btn-danger", "data-testid": "node-menu-kill",
        disabled: !labRunning || state === "down",
        onclick: (ev) => { ev.stopPropagation(); this.onAction("kill", spec.id); this.close(); } }, gettext("Kill")),
      h("button", { type: "button", class: "btn", "data-testid": "node-menu-restart",
        disabled: !labRunning,
        onclick: (ev) => { ev.stopPropagation(); this.onAction("restart", spec.id); this.close(); } }, gettext("Restart")),
      ...this.extraControls(spec, { state, labRunning, gauges }),
      ...this.kindControls(spec, { state, labRunning, gauges, dataTier }),
      ...this.scalingControls(spec, { labRunning, scalable }),
      ...this.partitionControls(spec, { labRunning, peers, partitioned }),
      h("p", { class: "menu-hint muted" }, hint));
    // Place under the node's box, inside the diagram's frame.
    const left = Math.max(4, Math.min(anchor.left - hostRect.left + anchor.width / 2 - 90, hostRect.width - 184));
    const top = Math.min(anchor.bottom - hostRect.top + 6, hostRect.height - 120);
    this.container.style.left = `${left}px`;
    this.container.style.top = `${Math.max(4, top)}px`;
    this.container.hidden = false;
  }

  /** A data centre's menu (a region's box): take it down, cut it off from the world, or recover it.
   * `outage` is what the frame says of it now ("down", "cut off" or undefined). */
  openRegion(region, title, anchor, hostRect, { labRunning, outage }) {
    this.nodeId = `region:${region}`;
    const send = (action, extra = {}) => (ev) => {
      ev.stopPropagation();
      this.onAction(action, null, { region, ...extra });
      this.close();
    };
    this.container.replaceChildren(
      h("div", { class: "menu-head" }, h("strong", {}, region), h("span", { class: "muted" },
        ` · ${interpolate(gettext("data centre %(title)s"), { title }, true)}`)),
      h("button", { type: "button", class: "btn btn-danger", "data-testid": "region-menu-down",
        disabled: !labRunning || Boolean(outage), onclick: send("outage", { mode: "down" }) },
      gettext("Take it down")),
      h("button", { type: "button", class: "btn", "data-testid": "region-menu-isolate",
        disabled: !labRunning || Boolean(outage), onclick: send("outage", { mode: "isolate" }) },
      gettext("Cut it off")),
      h("button", { type: "button", class: "btn", "data-testid": "region-menu-recover",
        disabled: !labRunning || !outage, onclick: send("recover") }, gettext("Recover")),
      h("p", { class: "menu-hint muted" }, outage
        ? interpolate(gettext("It is %(state)s: Recover brings it back."), { state: outageText(outage) }, true)
        : gettext("Down kills every server in it; cut off keeps them running but unreachable. Its users stay.")));
    const left = Math.max(4, Math.min(anchor.left - hostRect.left, hostRect.width - 184));
    this.container.style.left = `${left}px`;
    this.container.style.top = `${Math.max(4, anchor.bottom - hostRect.top + 6)}px`;
    this.container.hidden = false;
  }

  // The "slow" fault for any server; the size for a kind with sizes (a web server).
  extraControls(spec, { state, labRunning, gauges }) {
    const out = [];
    if (spec.role === "server") {
      const slowed = gauges.slow_ms > 0;
      out.push(h("button", { type: "button", class: "btn", "data-testid": "node-menu-slow",
        disabled: !labRunning || state === "down",
        onclick: (ev) => {
          ev.stopPropagation();
          this.onAction("slow", spec.id, { ms: slowed ? 0 : SLOW_MS });
          this.close();
        } }, slowed ? gettext("Undo slow down")
        : interpolate(gettext("Slow down (+%(ms)s ms)"), { ms: SLOW_MS }, true)));
    }
    if (spec.sizes && spec.sizes.length) {
      const p = spec.params || {};
      const current = gauges.size !== undefined ? gauges.size
        : (spec.sizes.find((z) => z.workers === p.workers && z.service_ms === p.service_ms) || {}).name;
      const largest = spec.sizes[spec.sizes.length - 1].name;
      const options = spec.sizes.map((z) => h("option", { value: z.name, selected: z.name === current },
        interpolate(z.name === largest ? gettext("%(size)s: %(workers)s workers × %(ms)s ms (the largest)")
          : gettext("%(size)s: %(workers)s workers × %(ms)s ms"),
        { size: sizeLabel(z.name), workers: z.workers, ms: z.service_ms }, true)));
      if (!current) options.unshift(h("option", { value: "", selected: true, disabled: true }, gettext("custom")));
      const select = h("select", { "data-testid": "node-menu-size", disabled: !labRunning || state === "down",
        "aria-label": gettext("server size (modelled CPU)"),
        onclick: (ev) => ev.stopPropagation(),
        onchange: (ev) => { this.onAction("resize", spec.id, { size: ev.target.value }); this.close(); } },
      options);
      out.push(h("label", { class: "menu-field" }, gettext("Size (modelled)"), " ", select));
    }
    return out;
  }

  // The kind's own commands, as it declares them (core/engine/kinds.py Kind.commands): a button for a
  // command without fields, a list of values for each field (each sends just that field).
  kindControls(spec, { state, labRunning, gauges, dataTier }) {
    const out = [];
    const facts = { ...gauges, data_tier: dataTier };
    const p = spec.params || {};
    for (const [action, c] of Object.entries(spec.commands || {})) {
      if (!c.menu || (c.when && facts[c.when[0]] !== c.when[1])) continue;
      const fields = Object.entries(c.fields || {});
      if (!fields.length) {
        out.push(this.button(`node-menu-${action}`, kindText(c.label),
          { disabled: !labRunning || state === "down", onclick: () => this.onAction(action, spec.id) }));
        continue;
      }
      for (const [name, f] of fields) {
        const key = f.current || name;
        const current = gauges[key] ?? p[key];
        const number = f.type !== "str";
        const values = f.choices ? f.choices
          : [...new Set([...(f.presets || []), ...(typeof current === "number" ? [current] : [])])].sort((x, y) => x - y);
        const label = kindText(f.label || c.label);
        const select = h("select", { "data-testid": `node-menu-${(c.testids || {})[name] || action}`,
          disabled: !labRunning, "aria-label": label,
          onclick: (ev) => ev.stopPropagation(),
          onchange: (ev) => {
            this.onAction(action, spec.id, { [name]: number ? Number(ev.target.value) : ev.target.value });
            this.close();
          } },
        [
          // An action's argument (a purge's object) has no current value: nothing is chosen yet.
          ...(f.current === "" ? [h("option", { value: "", selected: true, disabled: true }, "…")] : []),
          ...values.map((v) => h("option", { value: String(v), selected: v === current }, choiceText(f, v))),
        ]);
        out.push(h("label", { class: "menu-field" }, label, " ", select));
      }
    }
    return out;
  }

  button(testid, label, { disabled, onclick, cls = "btn" }) {
    return h("button", { type: "button", class: cls, "data-testid": testid, disabled,
      onclick: (ev) => { ev.stopPropagation(); onclick(); this.close(); } }, label);
  }

  // Horizontal scaling: another server like this one, or this one gone (drained first).
  scalingControls(spec, { labRunning, scalable }) {
    if (!scalable) return [];
    return [
      this.button("node-menu-add", gettext("Add a server like this"),
        { disabled: !labRunning, onclick: () => this.onAction("add", spec.id) }),
      this.button("node-menu-remove", gettext("Remove"),
        { disabled: !labRunning, onclick: () => this.onAction("remove", spec.id) }),
    ];
  }

  // The partition fault: cut this node off from one of the nodes it talks to, or reconnect it.
  partitionControls(spec, { labRunning, peers, partitioned }) {
    const out = [];
    const free = peers.filter((p) => !partitioned.includes(p));
    if (free.length) {
      const select = h("select", { "data-testid": "node-menu-partition", disabled: !labRunning,
        "aria-label": gettext("Cut off from…"),
        onclick: (ev) => ev.stopPropagation(),
        onchange: (ev) => { if (ev.target.value) this.onAction("partition", spec.id, { peer: ev.target.value }); this.close(); } },
      [h("option", { value: "", selected: true }, gettext("Cut off from…")), ...free.map((p) => h("option", { value: p }, p))]);
      out.push(h("label", { class: "menu-field" }, select));
    }
    for (const peer of partitioned) {
      out.push(this.button(`node-menu-heal-${peer}`, interpolate(gettext("Reconnect to %(peer)s"), { peer }, true),
        { disabled: !labRunning, onclick: () => this.onAction("heal", spec.id, { peer }) }));
    }
    return out;
  }

  close() {
    this.nodeId = null;
    this.container.hidden = true;
  }
}
