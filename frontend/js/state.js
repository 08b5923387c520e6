// Shared application state: one editor per page. Modules import `app` and read what main.js filled in.

export const app = {
  /** node catalogue from GET /api/nodes: {Type: description} */
  catalogue: {},
  /** socket types from GET /api/types: {TYPE: {description, color}} */
  types: {},
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

/** The colour the canvas draws sockets and links of a type in: the server's, from GET /api/types. */
export function typeColor(type) {
  const known = app.types[type]?.color
  if (known) return known
  // a stable colour for types the server did not describe (the server picks the same for the ones it did not declare)
  let h = 0
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360
  return `hsl(${h} 55% 65%)`
}
