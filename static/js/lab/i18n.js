// Names the engine sends in English (a node kind's title), shown in the page's language.
//
// Why here: gettext() only finds strings that are written out literally, so the titles the topology
// carries are listed once below for `makemessages -d djangojs`; nodeTitle() then looks the live
// title up in the catalog (window.gettext, loaded before the lab's modules), English if unknown.

// For the catalog: every kind title the engine ships (core/engine/kinds.py).
gettext_noop("Client");
gettext_noop("DNS server");
gettext_noop("Web server");
gettext_noop("Load balancer");
gettext_noop("Database (SQL)");
gettext_noop("Database (KV)");

/** A node's title for the diagram and its menu: clients by flavour, others by their kind's title. */
export function nodeTitle(spec) {
  if (spec.kind === "client") {
    return spec.params && spec.params.flavor === "mobile" ? gettext("Mobile client") : gettext("Web client");
  }
  if (!spec.title) return spec.id;
  const t = gettext(spec.title);
  return t !== spec.title ? t : kindText(spec.title); // a newer kind's title comes with the page
}

// A web server's modelled sizes (core/engine/kinds.py SIZES, sent as node.sizes), by name.
const SIZE_LABELS = {
  small: pgettext("server size", "small"),
  medium: pgettext("server size", "medium"),
  large: pgettext("server size", "large"),
  xlarge: pgettext("server size", "extra large"),
};

/** A size's name in the page's language (the engine's own name if it is a new one). */
export function sizeLabel(name) {
  return SIZE_LABELS[name] || name;
}

// The words a node kind declares for its menu and box (core/engine/kinds.py), translated by the page
// (visualizer/texts.py kind_texts); English when the page has no translation.
let kindTexts = null;
export function kindText(english) {
  if (kindTexts === null) {
    const el = typeof document !== "undefined" ? document.getElementById("kind-texts") : null;
    kindTexts = el ? JSON.parse(el.textContent) : {};
  }
  return kindTexts[english] || english;
}

/** A data centre's outage as the frame names it ("down", "cut off"), in the page's language. */
export function outageText(state) {
  return { down: pgettext("data centre", "down"), "cut off": pgettext("data centre", "cut off") }[state] || state;
}
