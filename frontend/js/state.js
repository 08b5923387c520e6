// Shared application state: one editor per page. Modules import `app` and read what main.js filled in.

export const app = {
  /** node catalogue from GET /api/nodes: {Type: description} */
  catalogue: {},
  /** LGraph and LGraphCanvas */
  graph: null,
  canvas: null,
  /** the document around the graph: metadata, parameters, unknown top-level and ui keys */
  doc: { metadata: { name: "" }, parameters: {}, extra: {}, uiExtra: {} },
  /** run-time state per workflow node id (status, progress, preview, images, errors), survives undo */
  runtime: new Map(),
  /** jobs this page queued: id -> {number, outputs} */
  myJobs: new Map(),
  /** hooks filled by main.js so that modules can ask for a redraw / a history checkpoint */
  changed: () => {},
  setDirty: () => {},
}

export function runtimeOf(id) {
  let r = app.runtime.get(id)
  if (!r) {
    r = { status: null, progress: null, preview: null, images: [], errors: [], elapsed: null }
    app.runtime.set(id, r)
  }
  return r
}

export const TYPE_COLORS = {
  MODEL: "#b39ddb",
  CLIP: "#ffd54f",
  VAE: "#ef5350",
  CONDITIONING: "#ffa726",
  LATENT: "#ec407a",
  IMAGE: "#64b5f6",
  MASK: "#81c784",
  UPSCALE_MODEL: "#9575cd",
  CONTROL_NET: "#4db6ac",
  FACES: "#f48fb1",
  INT: "#7fa8d8",
  FLOAT: "#9ccc65",
  STRING: "#b0bec5",
  BOOLEAN: "#ce93d8",
  COMBO: "#90a4ae",
}

export function typeColor(type) {
  if (TYPE_COLORS[type]) return TYPE_COLORS[type]
  // a stable colour for socket types the catalogue adds later (plugins)
  let h = 0
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360
  return `hsl(${h} 55% 65%)`
}
