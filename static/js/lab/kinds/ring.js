// The shard router's drawing (Kind.drawing = "ring"): where users land, and how the rows spread.
//
// Left, the placement: with consistent hashing the hash ring, each shard's arcs in its colour (the
// router's `arcs` gauge: [start, end, shard] as fractions of the circle); with modulo there is no
// ring, only "hash mod N". Right, each shard's share of the rows it really holds (the shards'
// `share` gauge), so a hot or an empty shard stands out. Rebuilt only when the numbers change.

const SVG_NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4d7c0f"];

function el(tag, attrs, parent, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  parent.appendChild(node);
  return node;
}

function arcPath(cx, cy, r, a, b) {
  // Fractions of the circle, clockwise from the top.
  const pt = (f) => [cx + r * Math.sin(2 * Math.PI * f), cy - r * Math.cos(2 * Math.PI * f)];
  const [x1, y1] = pt(a);
  const [x2, y2] = pt(Math.min(b, a + 0.99999));
  return `M ${x1.toFixed(2)} ${y1.toFixed(2)} A ${r} ${r} 0 ${b - a > 0.5 ? 1 : 0} 1 ${x2.toFixed(2)} ${y2.toFixed(2)}`;
}

export function draw(g, box, spec) {
  const r = Math.min(box.h / 2 - 8, 56);
  const cx = box.x + r + 8;
  const cy = box.y + box.h / 2;
  let key = "";
  return {
    update(m, frame) {
      const nodes = (frame && frame.nodes) || {};
      const shares = m.shares || {};
      const shards = Object.keys(shares);
      const rows = shards.map((s) => (nodes[s] && typeof nodes[s].share === "number" ? nodes[s].share : null));
      const next = JSON.stringify([m.algorithm, m.arcs, shards, rows, m.moving]);
      if (next === key) return;
      key = next;
      g.replaceChildren();
      const colour = (s) => COLOURS[Math.max(0, shards.indexOf(s)) % COLOURS.length];
      if (m.algorithm === "consistent" && (m.arcs || []).length) {
        for (const [a, b, s] of m.arcs) {
          el("path", { d: arcPath(cx, cy, r, a, b), stroke: colour(s), "stroke-width": 14, fill: "none",
            class: "ring-arc", "data-shard": s }, g);
        }
        el("text", { x: cx, y: cy - 2, "text-anchor": "middle", class: "ring-caption" }, g, String(m.vnodes));
        el("text", { x: cx, y: cy + 11, "text-anchor": "middle", class: "ring-caption" }, g, gettext("points each"));
      } else if (shards.length) {
        el("circle", { cx, cy, r, stroke: "#cbd5e1", "stroke-width": 2, fill: "none", "stroke-dasharray": "4 4" }, g);
        el("text", { x: cx, y: cy - 2, "text-anchor": "middle", class: "ring-caption" }, g, gettext("hash(user)"));
        el("text", { x: cx, y: cy + 12, "text-anchor": "middle", class: "ring-caption" }, g,
          interpolate(gettext("mod %(n)s"), { n: shards.length }, true));
      }
      // Each shard's share of the rows it holds now.
      const left = cx + r + 18;
      const width = box.x + box.w - left - 44;
      const rowH = Math.min(18, (box.h - 8) / Math.max(1, shards.length));
      shards.forEach((s, i) => {
        const y = box.y + 6 + i * rowH;
        const share = rows[i] ?? 0;
        el("text", { x: left, y: y + rowH * 0.7, class: "ring-shard" }, g, s);
        const bx = left + 40;
        el("rect", { x: bx, y: y + 2, width: Math.max(0, width - 40), height: rowH - 6, rx: 2, fill: "#e2e8f0" }, g);
        el("rect", { x: bx, y: y + 2, width: Math.max(0, (width - 40) * Math.min(1, share)), height: rowH - 6, rx: 2,
          fill: colour(s), "data-testid": `ring-share-${s}` }, g);
        el("text", { x: bx + width - 36, y: y + rowH * 0.7, class: "ring-shard" }, g,
          rows[i] === null ? "—" : `${Math.round(share * 100)}%`);
      });
      if (m.moving > 0) {
        el("text", { x: left, y: box.y + box.h - 2, class: "ring-moving" }, g,
          interpolate(gettext("moving: %(n)s users to go"), { n: m.moving }, true));
      }
    },
  };
}
