// @ts-check
// Reusable pipelines on the canvas (engine/pipeline.py runs them): make one from selected nodes, open one to
// edit its inner graph (a breadcrumb leads back out), save one to the library, update nodes pinned to an older
// library version.
//
// A pipeline made here is inline: its definition lives in the workflow's `definitions` under its name, and
// its nodes have the type `pipeline:NAME` (the catalogue gets a node type for it, described as the server
// describes library pipelines). Opening a pipeline node puts its definition on the canvas; the levels around
// it are kept here as workflow JSON, and toWorkflow() gives the whole workflow with the edited definition in
// place (every instance of it sees the edit). Inside, node ids are their paths (`face:sampler`), as the
// server names the expanded nodes in its events and errors; `ui.editing` of the whole workflow says where the
// canvas is, so that undo, redo and the session come back to it.

import { LiteGraph } from "litegraph"
import { ApiError } from "./api.js"
import { renderBreadcrumb } from "./breadcrumb.js"
import { canvasWorkflow, fitView, loadIntoGraph } from "./graphio.js"
import { AtelierNode, findNode, loadCatalogue, nodeId, registerCatalogue } from "./nodes.js"
import { app, runtimeOf } from "./state.js"
import { errorMessage, h, modal, toast } from "./ui.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("./graphio.js").WorkflowNode} WorkflowNode */
/** @typedef {import("./graphio.js").LinkRef} LinkRef */
/** @typedef {import("./state.js").NodeDef} NodeDef */
/** @typedef {import("./state.js").InputDef} InputDef */
/** @typedef {import("./state.js").Parameter} Parameter */

/**
 * A declared output of a pipeline: which inner node's output it is.
 * @typedef {{type: string, node: string, output: string | number, description?: string}} OutputDecl
 */

/**
 * A workflow with what makes it a pipeline, and the pipelines it defines inline.
 * @typedef {import("./graphio.js").Workflow & {definitions?: Record<string, PWorkflow>, outputs?: Record<string, OutputDecl>}} PWorkflow
 */

/**
 * A level around the canvas while a pipeline is open: that level's workflow (its own node ids), the node
 * opened in it, and where that node's definition is kept.
 * @typedef {object} Frame
 * @property {PWorkflow} outer
 * @property {string} node the pipeline node opened (its id at that level)
 * @property {string} name the definition's name
 * @property {number} owner the level whose `definitions` holds it (0: the whole workflow)
 * @property {string} title what the breadcrumb calls the level inside
 * @property {{scale: number, offset: [number, number]}} view the canvas view to go back to
 * @property {import("./state.js").Metadata} meta the metadata of the level inside (the canvas shows the whole
 *   workflow's)
 */

export const PREFIX = "pipeline:"
const SEP = ":"
const VALUE_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"])

/**
 * Where the canvas is, and what this module knows of the library.
 * @type {{stack: Frame[], loading: boolean, library: Record<string, NodeDef>, newest: Record<string, LibraryRow>, registered: string, rootMeta: import("./state.js").Metadata}}
 */
const nav = { stack: [], loading: false, library: {}, newest: {}, registered: "", rootMeta: { name: "" } }

/**
 * @template T
 * @param {T} x
 * @returns {T}
 */
const clone = (x) => (x === undefined ? x : JSON.parse(JSON.stringify(x)))

/**
 * @param {unknown} v
 * @returns {v is LinkRef}
 */
const isLink = (v) =>
  v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 2 && "node" in v && "output" in v

/** @param {string} type */
export const isPipelineType = (type) => typeof type === "string" && type.startsWith(PREFIX)

/** The id prefix of the level the canvas shows ("" outside every pipeline, "face:" inside node face). */
function prefix() {
  return nav.stack.map((f) => f.node + SEP).join("")
}

// -- ids of a level ---------------------------------------------------------------------------------------

/**
 * A workflow with every node id mapped (links, layout, parameter targets and declared outputs too).
 * @param {PWorkflow} wf
 * @param {(id: string) => string} map
 * @returns {PWorkflow}
 */
function renameIds(wf, map) {
  const out = clone(wf)
  /** @type {Record<string, WorkflowNode>} */
  const nodes = {}
  const own = new Set(Object.keys(wf.nodes || {}))
  /** @param {string} id */
  const m = (id) => (own.has(id) ? map(id) : id)
  for (const [id, n] of Object.entries(out.nodes || {})) {
    for (const [k, v] of Object.entries(n.inputs || {})) {
      if (isLink(v) && n.inputs) n.inputs[k] = { node: m(String(v.node)), output: v.output }
    }
    nodes[m(id)] = n
  }
  out.nodes = nodes
  const ui = out.ui || {}
  for (const key of ["positions", "sizes", "colors", "controls"]) {
    const table = /** @type {Record<string, unknown> | undefined} */ (ui[key])
    if (table && typeof table === "object") ui[key] = Object.fromEntries(Object.entries(table).map(([id, v]) => [m(id), v]))
  }
  if (Array.isArray(ui.collapsed)) ui.collapsed = ui.collapsed.map(m)
  /** @param {string} t */
  const target = (t) => {
    const dot = t.lastIndexOf(".")
    return `${m(t.slice(0, dot))}${t.slice(dot)}`
  }
  for (const p of Object.values(out.parameters || {})) if (p.targets) p.targets = p.targets.map(target)
  for (const d of Object.values(out.outputs || {})) d.node = m(d.node)
  return out
}

/**
 * A level's workflow with the canvas's path ids (`face:sampler`).
 * @param {PWorkflow} wf
 * @param {string} pre
 */
const withPrefix = (wf, pre) => (pre ? renameIds(wf, (id) => pre + id) : wf)

/**
 * The canvas's workflow with its own ids again; a node added inside (an id without the path) that would
 * clash with one of them gets a fresh id.
 * @param {PWorkflow} wf
 * @param {string} pre
 */
function withoutPrefix(wf, pre) {
  if (!pre) return wf
  const ids = Object.keys(wf.nodes || {})
  const inside = new Set(ids.filter((id) => id.startsWith(pre)).map((id) => id.slice(pre.length)))
  return renameIds(wf, (id) => {
    if (id.startsWith(pre)) return id.slice(pre.length)
    let fresh = id
    for (let n = 2; inside.has(fresh); n++) fresh = `${id}_${n}`
    inside.add(fresh)
    return fresh
  })
}

// -- the whole workflow around the canvas ----------------------------------------------------------------

/**
 * The whole workflow: the canvas's level put back, as its definition, into the levels around it.
 * @param {PWorkflow} canvasWf what the canvas shows
 * @returns {PWorkflow}
 */
function wholeWorkflow(canvasWf) {
  if (!nav.stack.length) return canvasWf
  let inner = withoutPrefix(canvasWf, prefix())
  // the canvas's metadata is the whole workflow's (its name in the title bar); the level's own is kept here
  inner.metadata = clone(nav.stack[nav.stack.length - 1].meta)
  /** @type {Map<number, [string, PWorkflow][]>} */
  const pending = new Map()
  for (let i = nav.stack.length - 1; i >= 0; i--) {
    const f = nav.stack[i]
    const list = pending.get(f.owner) || []
    list.push([f.name, inner])
    pending.set(f.owner, list)
    const outer = clone(f.outer)
    for (const [name, def] of pending.get(i) || []) (outer.definitions ||= {})[name] = def
    inner = outer
  }
  inner.ui = { ...(inner.ui || {}), editing: nav.stack.map((f) => f.node) }
  inner.metadata = clone(canvasWf.metadata)
  return inner
}

/**
 * Put a whole workflow on the canvas, at the pipeline its `ui.editing` names (the load hook of graphio.js).
 * @param {PWorkflow} wf
 * @param {{keepView?: boolean, fixChoices?: boolean}} options
 * @returns {string[]} warnings
 */
function loadWhole(wf, options) {
  const data = clone(wf)
  const path = Array.isArray(data.ui?.editing) ? /** @type {unknown[]} */ (data.ui.editing).map(String) : []
  if (data.ui) delete data.ui.editing
  nav.stack = []
  nav.loading = true
  /** @type {string[]} */
  let warnings = []
  try {
    syncCatalogue(data)
    warnings = loadIntoGraph(data, { ...options, inner: true })
    for (const id of path) {
      const found = definitionFor(id)
      if (!found) break
      openLevel(id, found.def, found.owner, { keepView: options.keepView })
    }
  } finally {
    nav.loading = false
  }
  showCrumbs()
  return warnings
}

// -- the catalogue's node types for inline pipelines --------------------------------------------------------

/**
 * The inline definitions visible at the canvas's level (inner ones hide outer ones of the same name).
 * @param {PWorkflow | null} level the workflow of the canvas's level (null: what the canvas holds now)
 * @returns {Record<string, PWorkflow>}
 */
function visibleDefinitions(level) {
  /** @type {Record<string, PWorkflow>} */
  const defs = {}
  for (const f of nav.stack) Object.assign(defs, f.outer.definitions || {})
  const here = level ? level.definitions : /** @type {Record<string, PWorkflow> | undefined} */ (app.doc.extra.definitions)
  Object.assign(defs, here || {})
  return defs
}

/**
 * A definition described as a node type, as the server describes library pipelines (describe_as_node):
 * parameters are inputs (value ones take their widget from the first inner input they set), declared
 * outputs are outputs.
 * @param {string} name
 * @param {PWorkflow} def
 * @returns {NodeDef & {pipeline: true, inline: boolean}}
 */
export function describePipeline(name, def) {
  /** @type {InputDef[]} */
  const inputs = []
  for (const [pname, p] of Object.entries(def.parameters || {})) {
    const first = p.targets?.[0] || ""
    const dot = first.lastIndexOf(".")
    const innerNode = def.nodes?.[first.slice(0, dot)]
    const spec = innerNode ? app.catalogue[innerNode.type]?.inputs.find((i) => i.name === first.slice(dot + 1)) : undefined
    const type = p.type || spec?.type || "*"
    if (!VALUE_TYPES.has(type) && !(spec?.widget && !p.type)) {
      const wired = (p.targets || []).every((t) => {
        const d = t.lastIndexOf(".")
        return isLink(def.nodes?.[t.slice(0, d)]?.inputs?.[t.slice(d + 1)])
      })
      inputs.push({ name: pname, type, optional: wired && (p.targets || []).length > 0, description: p.description || "" })
      continue
    }
    /** @type {InputDef} */
    const d = { ...(spec ? clone(spec) : {}), name: pname, type, optional: false, widget: true }
    for (const key of /** @type {const} */ (["default", "min", "max", "step", "choices", "multiline", "description"])) {
      if (p[key] !== undefined && p[key] !== null) Object.assign(d, { [key]: p[key] })
    }
    inputs.push(d)
  }
  const outputs = Object.entries(def.outputs || {}).map(([n, o]) => ({ name: n, type: o.type, description: o.description || "" }))
  const meta = def.metadata || {}
  return {
    type: PREFIX + name,
    display_name: String(meta.name || name),
    version: String(meta.version || ""),
    category: "pipelines/this workflow",
    description: String(meta.description || ""),
    output_node: Object.values(def.nodes || {}).some((n) => app.catalogue[n.type]?.output_node),
    deprecated: false,
    pipeline: true,
    inline: true,
    inputs,
    outputs,
  }
}

/**
 * Give the catalogue a node type for every inline pipeline visible at a level (the library's own entries
 * come back where no inline definition of that name hides them).
 * @param {PWorkflow | null} level
 */
function syncCatalogue(level) {
  const cat = app.catalogue
  for (const [type, def] of Object.entries(cat)) {
    const inline = /** @type {{inline?: boolean}} */ (def).inline
    if (inline) delete cat[type]
    else if (isPipelineType(type)) nav.library[type] = def
  }
  for (const [type, def] of Object.entries(nav.library)) if (!cat[type]) cat[type] = def
  const defs = visibleDefinitions(level)
  /** @type {Record<string, NodeDef>} */
  const made = {}
  for (let pass = 0; pass < 2; pass++) {
    // twice: a pipeline's input may take its widget from a pipeline node inside it
    for (const [name, def] of Object.entries(defs)) made[PREFIX + name] = cat[PREFIX + name] = describePipeline(name, def)
  }
  // register again only what changed (loads come with every undo): library types an inline one hid, and these
  const key = JSON.stringify(made)
  if (key === nav.registered) return
  const restored = Object.fromEntries(Object.keys(nav.library).filter((t) => !made[t]).map((t) => [t, nav.library[t]]))
  registerCatalogue({ ...restored, ...made })
  nav.registered = key
  if (app.ready) app.rebuildPalette?.()
}

// -- opening a pipeline node ------------------------------------------------------------------------------

/**
 * The inline definition a node of the canvas (by its id at this level) uses, and the level holding it.
 * @param {string} id
 * @returns {{def: PWorkflow, owner: number} | null}
 */
function definitionFor(id) {
  const node = findNode(prefix() + id)
  if (!node || !isPipelineType(node.type)) return null
  const name = node.type.slice(PREFIX.length)
  const here = /** @type {Record<string, PWorkflow> | undefined} */ (app.doc.extra.definitions)
  if (here?.[name]) return { def: here[name], owner: nav.stack.length }
  for (let i = nav.stack.length - 1; i >= 0; i--) {
    const d = nav.stack[i].outer.definitions?.[name]
    if (d) return { def: d, owner: i }
  }
  return null
}

/**
 * Put a definition on the canvas as the level inside node `id` of this level.
 * @param {string} id
 * @param {PWorkflow} def
 * @param {number} owner
 * @param {{keepView?: boolean}} [options]
 */
function openLevel(id, def, owner, { keepView = false } = {}) {
  const pre = prefix()
  const node = findNode(pre + id)
  const here = withoutPrefix(canvasWorkflow(), pre)
  if (nav.stack.length) here.metadata = clone(nav.stack[nav.stack.length - 1].meta)
  else nav.rootMeta = app.doc.metadata
  const ds = app.canvas.ds
  nav.stack.push({
    outer: here,
    node: id,
    name: node ? node.type.slice(PREFIX.length) : "",
    owner,
    title: node?.title || id,
    view: { scale: ds.scale, offset: [ds.offset[0], ds.offset[1]] },
    meta: {},
  })
  const inner = withPrefix(clone(def), prefix())
  syncCatalogue(inner)
  loadIntoGraph(inner, { inner: true, keepView })
  keepRootMetadata()
}

/** Inside a pipeline the document's metadata stays the whole workflow's (the title bar names it, Save
 * saves under its name); the level's own goes to its frame. */
function keepRootMetadata() {
  const top = nav.stack[nav.stack.length - 1]
  if (!top) return
  top.meta = app.doc.metadata
  app.doc.metadata = nav.rootMeta
}

/**
 * Open a pipeline node to edit its inner graph. A library pipeline becomes an inline copy in this workflow
 * (save it to the library as a new version when done).
 * @param {LGraphNode} node
 */
export async function openPipeline(node) {
  if (!isPipelineType(node.type)) return false
  const pre = prefix()
  const id = nodeId(node).slice(pre.length)
  let found = definitionFor(id)
  if (!found) {
    const name = node.type.slice(PREFIX.length)
    const pin = /** @type {{version?: string} | undefined} */ (node.properties?.extra)?.version
    try {
      const got = /** @type {{workflow: PWorkflow, version: string}} */ (
        await request("GET", `/atelier/v1/pipelines/${encodeURIComponent(name)}${pin ? `?version=${encodeURIComponent(pin)}` : ""}`)
      )
      const defs = /** @type {Record<string, PWorkflow>} */ ((app.doc.extra.definitions ||= {}))
      defs[name] = got.workflow
      found = { def: got.workflow, owner: nav.stack.length }
      toast(`Editing a copy of library pipeline ${name} ${got.version} in this workflow: save it to the library as a new version when done`, "info", 6000)
    } catch (err) {
      toast(`Cannot open pipeline ${name}: ${errorMessage(err)}`, "error")
      return false
    }
  }
  openLevel(id, found.def, found.owner)
  showCrumbs()
  app.setDirty()
  app.changed()
  return true
}

/**
 * Go back out to a level (0: the whole workflow), the edits inside kept in their definitions.
 * @param {number} level
 */
export function leaveTo(level) {
  while (nav.stack.length > level) {
    const inner = withoutPrefix(canvasWorkflow(), prefix())
    const f = /** @type {Frame} */ (nav.stack.pop())
    inner.metadata = clone(f.meta)
    const outer = f.outer
    if (!nav.stack.length) outer.metadata = app.doc.metadata
    const owner = f.owner === nav.stack.length ? outer : nav.stack[f.owner].outer
    ;(owner.definitions ||= {})[f.name] = inner
    const shown = withPrefix(clone(outer), prefix())
    syncCatalogue(shown)
    loadIntoGraph(shown, { inner: true, keepView: true })
    keepRootMetadata()
    app.canvas.ds.scale = f.view.scale
    app.canvas.ds.offset = [f.view.offset[0], f.view.offset[1]]
  }
  showCrumbs()
  app.setDirty()
  app.changed()
}

/** The breadcrumb bar: "Workflow › face detail", each step leading back out. */
function showCrumbs() {
  const wrap = document.getElementById("canvas-wrap")
  if (!wrap) return
  const root = app.doc.metadata.name
  const crumbs = [{ label: String(root || "Workflow"), onClick: () => leaveTo(0) }]
  nav.stack.forEach((f, i) => crumbs.push({ label: f.title, onClick: () => leaveTo(i + 1) }))
  renderBreadcrumb(wrap, crumbs)
  document.body.classList.toggle("inside-pipeline", nav.stack.length > 0)
}

/** Where the canvas is: the titles of the pipeline nodes open, outermost first. */
export function editingPath() {
  return nav.stack.map((f) => f.title)
}

// -- making a pipeline from selected nodes ---------------------------------------------------------------

/**
 * A value of a selected node that the dialog offers to expose as a pipeline input.
 * @typedef {object} Exposable
 * @property {string} node its node's id
 * @property {string} input
 * @property {string} name the input name it gets (the workflow parameter's, if one sets it)
 * @property {unknown} value
 * @property {string} type
 * @property {boolean} checked
 * @property {string} label
 */

/**
 * What "Make pipeline" is told.
 * @typedef {object} MakeOptions
 * @property {string} name its title (metadata.name); its definition's name is this as a name (face_detail)
 * @property {string} [version]
 * @property {string} [description]
 * @property {{node: string, input: string, name: string}[]} [exposed] values that become inputs
 */

/**
 * The name a definition gets from a title: letters, digits, '_', '-', '.'.
 * @param {string} title
 */
export function definitionName(title) {
  return title.trim().replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^[._]+|_+$/g, "") || "pipeline"
}

/**
 * @param {string} base
 * @param {Set<string>} taken
 */
function unique(base, taken) {
  let name = base
  for (let n = 2; taken.has(name); n++) name = `${base}_${n}`
  taken.add(name)
  return name
}

/**
 * The type of an input of a workflow node (its catalogue entry's), or of an output.
 * @param {WorkflowNode | undefined} n
 * @param {"inputs" | "outputs"} side
 * @param {string | number} name
 */
function slotTypeOf(n, side, name) {
  const def = n ? app.catalogue[n.type] : undefined
  if (!def) return "*"
  const list = /** @type {{name: string, type: string}[]} */ (def[side])
  const slot = typeof name === "number" ? list[name] : list.find((s) => s.name === name)
  return slot?.type || "*"
}

/**
 * The values of the selected nodes a pipeline may take as inputs; those a workflow parameter sets are
 * checked, under its name.
 * @param {PWorkflow} wf
 * @param {string[]} ids
 * @returns {Exposable[]}
 */
export function exposableValues(wf, ids) {
  /** @type {Exposable[]} */
  const out = []
  for (const id of ids) {
    const n = wf.nodes[id]
    const def = n ? app.catalogue[n.type] : undefined
    for (const inp of def?.inputs || []) {
      const v = n.inputs?.[inp.name]
      if (!inp.widget || v === undefined || isLink(v)) continue
      const param = Object.entries(wf.parameters || {}).find(([, p]) => p.targets?.includes(`${id}.${inp.name}`))
      out.push({
        node: id,
        input: inp.name,
        name: param?.[0] || inp.name,
        value: v,
        type: inp.type,
        checked: Boolean(param),
        label: `${n.title || def?.display_name || n.type} › ${inp.name}`,
      })
    }
  }
  return out
}

/**
 * The workflow with the nodes `ids` replaced by one pipeline node, whose definition goes to `definitions`:
 * links into the selection become socket inputs, links out of it outputs (named after the output, typed by
 * the socket), `exposed` values become value inputs. Workflow parameters that set a selected value set the
 * pipeline node's input instead (or lose that target when it is not exposed).
 * @param {PWorkflow} wf
 * @param {string[]} ids
 * @param {MakeOptions} options
 * @returns {{workflow: PWorkflow, node: string, name: string}}
 */
export function makePipeline(wf, ids, { name, version = "1.0.0", description = "", exposed = [] }) {
  const sel = new Set(ids.filter((id) => wf.nodes[id]))
  if (!sel.size) throw new Error("select the nodes to make a pipeline of")
  const out = clone(wf)
  const defs = (out.definitions ||= {})
  const key = definitionName(name)
  if (defs[key] || nav.library[PREFIX + key] || visibleDefinitions(null)[key]) {
    throw new Error(`a pipeline named ${key} exists already: choose another name`)
  }
  const newId = unique(key, new Set(Object.keys(wf.nodes)))
  /** @type {PWorkflow} */
  const def = {
    format: "atelier/workflow",
    version: 1,
    metadata: { name, version, ...(description ? { description } : {}) },
    parameters: {},
    outputs: {},
    nodes: {},
    ui: { positions: {}, sizes: {} },
  }
  const params = /** @type {Record<string, Parameter>} */ (def.parameters)
  const outputs = /** @type {Record<string, OutputDecl>} */ (def.outputs)
  const ui = def.ui
  const srcUi = wf.ui || {}
  let x0 = Infinity
  let y0 = Infinity
  for (const id of sel) {
    def.nodes[id] = clone(wf.nodes[id])
    const p = srcUi.positions?.[id]
    if (p) {
      ;(ui.positions ||= {})[id] = [...p]
      x0 = Math.min(x0, Number(p[0]))
      y0 = Math.min(y0, Number(p[1]))
    }
    if (srcUi.sizes?.[id]) (ui.sizes ||= {})[id] = [...srcUi.sizes[id]]
    if (srcUi.collapsed?.includes(id)) (ui.collapsed ||= []).push(id)
    if (srcUi.colors?.[id]) (ui.colors ||= {})[id] = clone(srcUi.colors[id])
    if (srcUi.controls?.[id]) (ui.controls ||= {})[id] = clone(srcUi.controls[id])
  }
  const takenIn = new Set()
  /** @type {Record<string, unknown>} */
  const given = {}
  // values exposed as inputs
  /** @type {Map<string, string>} "node.input" -> input name */
  const exposedAs = new Map()
  for (const e of exposed) {
    const n = def.nodes[e.node]
    const v = n?.inputs?.[e.input]
    if (!n || v === undefined || isLink(v)) continue
    const pname = unique(e.name || e.input, takenIn)
    const outerParam = Object.values(wf.parameters || {}).find((p) => p.targets?.includes(`${e.node}.${e.input}`))
    /** @type {Parameter} */
    const p = { type: slotTypeOf(n, "inputs", e.input), default: v, targets: [`${e.node}.${e.input}`] }
    for (const k of /** @type {const} */ (["min", "max", "step", "multiline", "description"])) {
      if (outerParam?.[k] !== undefined) Object.assign(p, { [k]: outerParam[k] })
    }
    params[pname] = p
    given[pname] = v
    exposedAs.set(`${e.node}.${e.input}`, pname)
  }
  // links into the selection: socket inputs (one per source, feeding every input it fed)
  /** @type {Map<string, string>} */
  const incoming = new Map()
  for (const id of sel) {
    const n = def.nodes[id]
    for (const [k, v] of Object.entries(n.inputs || {})) {
      if (!isLink(v) || sel.has(String(v.node))) continue
      const src = `${v.node}\u0000${v.output}`
      let pname = incoming.get(src)
      if (!pname) {
        pname = unique(k, takenIn)
        incoming.set(src, pname)
        let type = slotTypeOf(n, "inputs", k)
        if (type === "*") type = slotTypeOf(wf.nodes[String(v.node)], "outputs", v.output)
        params[pname] = { type, targets: [] }
        given[pname] = { node: String(v.node), output: v.output }
      }
      params[pname].targets.push(`${id}.${k}`)
      if (n.inputs) delete n.inputs[k]
    }
  }
  // links out of it: outputs (one per inner output, feeding every input it fed)
  const takenOut = new Set()
  /** @type {Map<string, string>} */
  const outgoing = new Map()
  /** @param {LinkRef} v */
  const outputFor = (v) => {
    const src = `${v.node}\u0000${v.output}`
    let oname = outgoing.get(src)
    if (!oname) {
      oname = unique(typeof v.output === "number" ? `output_${v.output}` : v.output, takenOut)
      outgoing.set(src, oname)
      outputs[oname] = { type: slotTypeOf(wf.nodes[String(v.node)], "outputs", v.output), node: String(v.node), output: v.output }
    }
    return oname
  }
  for (const [id, n] of Object.entries(out.nodes)) {
    if (sel.has(id)) continue
    for (const [k, v] of Object.entries(n.inputs || {})) {
      if (isLink(v) && sel.has(String(v.node)) && n.inputs) n.inputs[k] = { node: newId, output: outputFor(v) }
    }
  }
  for (const d of Object.values(out.outputs || {})) {
    if (sel.has(d.node)) {
      const oname = outputFor({ node: d.node, output: d.output })
      d.node = newId
      d.output = oname
    }
  }
  // the workflow's parameters that set selected values set the pipeline node's inputs instead
  for (const [pname, p] of Object.entries(out.parameters || {})) {
    /** @type {string[]} */
    const targets = []
    for (const t of p.targets || []) {
      const dot = t.lastIndexOf(".")
      if (!sel.has(t.slice(0, dot))) targets.push(t)
      else if (exposedAs.has(t)) targets.push(`${newId}.${exposedAs.get(t)}`)
    }
    if (targets.length) p.targets = targets
    else delete out.parameters[pname]
  }
  // the outer workflow: the pipeline node where the selection was
  for (const id of sel) delete out.nodes[id]
  out.nodes[newId] = { type: PREFIX + key, inputs: given }
  defs[key] = def
  const oui = (out.ui ||= {})
  for (const table of [oui.positions, oui.sizes, oui.colors, oui.controls]) if (table) for (const id of sel) delete table[id]
  if (oui.collapsed) oui.collapsed = oui.collapsed.filter((id) => !sel.has(id))
  if (Number.isFinite(x0)) (oui.positions ||= {})[newId] = [x0, y0]
  return { workflow: out, node: newId, name: key }
}

/** The dialog of "Make pipeline": name, version, description, which values become inputs. */
export function makePipelineDialog() {
  const pre = prefix()
  const ids = Object.values(app.canvas.selected_nodes || {}).map((n) => nodeId(n).slice(pre.length))
  if (!ids.length) {
    toast("Select the nodes to make a pipeline of first", "info", 2500)
    return
  }
  const wf = withoutPrefix(canvasWorkflow(), pre)
  const values = exposableValues(wf, ids)
  const nameIn = h("input", { class: "text-input", type: "text", name: "pipeline-name", value: "", placeholder: "face detail", "aria-label": "Name" })
  const versionIn = h("input", { class: "text-input", type: "text", name: "pipeline-version", value: "1.0.0", "aria-label": "Version" })
  const descIn = h("textarea", { class: "text-input", name: "pipeline-description", rows: 2, "aria-label": "Description" })
  const rows = values.map((v) =>
    h("label", { class: "pl-value", dataset: { target: `${v.node}.${v.input}` } },
      h("input", { type: "checkbox", checked: v.checked, onchange: (/** @type {Event} */ e) => { v.checked = /** @type {HTMLInputElement} */ (e.target).checked } }),
      h("span", { class: "pl-label" }, v.label),
      h("span", { class: "pl-val", title: String(v.value) }, String(v.value).slice(0, 40)),
      h("input", { class: "text-input pl-name", type: "text", value: v.name, "aria-label": `input name of ${v.label}`, oninput: (/** @type {Event} */ e) => { v.name = /** @type {HTMLInputElement} */ (e.target).value.trim() } })),
  )
  // what crosses the selection's edge becomes sockets
  const sel = new Set(ids)
  const ins = new Map()
  const outs = new Map()
  for (const [id, n] of Object.entries(wf.nodes)) {
    for (const [k, v] of Object.entries(n.inputs || {})) {
      if (!isLink(v)) continue
      if (sel.has(id) && !sel.has(String(v.node))) ins.set(`${v.node}.${v.output}`, `${k} (${slotTypeOf(n, "inputs", k)})`)
      if (!sel.has(id) && sel.has(String(v.node))) outs.set(`${v.node}.${v.output}`, `${v.output} (${slotTypeOf(wf.nodes[String(v.node)], "outputs", v.output)})`)
    }
  }
  const error = h("p", { class: "pl-error", role: "alert" })
  modal({
    title: `Make pipeline of ${ids.length} node${ids.length === 1 ? "" : "s"}`,
    wide: true,
    body: h("div", { class: "pl-dialog" },
      h("div", { class: "pl-fields" },
        h("label", { class: "field" }, h("span", {}, "Name"), nameIn),
        h("label", { class: "field" }, h("span", {}, "Version"), versionIn)),
      h("label", { class: "field" }, h("span", {}, "Description"), descIn),
      h("h3", {}, "Values to expose as inputs"),
      rows.length ? h("div", { class: "pl-values" }, rows) : h("p", { class: "muted" }, "The selected nodes have no values."),
      h("p", { class: "pl-sockets" },
        h("strong", {}, "Socket inputs: "), [...ins.values()].join(", ") || "none",
        h("br"),
        h("strong", {}, "Outputs: "), [...outs.values()].join(", ") || "none"),
      error),
    actions: [
      { label: "Cancel" },
      {
        label: "Make pipeline",
        primary: true,
        onClick: () => {
          const title = nameIn.value.trim()
          if (!title) {
            error.textContent = "Give the pipeline a name"
            return false
          }
          try {
            const made = makePipeline(wf, ids, {
              name: title,
              version: versionIn.value.trim() || "1.0.0",
              description: descIn.value.trim(),
              exposed: values.filter((v) => v.checked).map((v) => ({ node: v.node, input: v.input, name: v.name })),
            })
            replaceLevel(made.workflow)
            toast(`Pipeline ${title} made: double-click it to edit inside`, "success")
          } catch (err) {
            error.textContent = errorMessage(err)
            return false
          }
          return true
        },
      },
    ],
  })
}

/**
 * Put a new workflow for the canvas's level on the canvas (the levels around it stay).
 * @param {PWorkflow} wf the level's workflow, its own ids
 */
function replaceLevel(wf) {
  const shown = withPrefix(wf, prefix())
  syncCatalogue(shown)
  loadIntoGraph(shown, { inner: true, keepView: true })
  app.setDirty()
  app.changed()
}

// -- the library --------------------------------------------------------------------------------------------

/**
 * A pipeline of the library as GET /atelier/v1/pipelines lists it.
 * @typedef {{name: string, version: string, versions: string[], interface: {inputs: Record<string, {type: string}>, outputs: Record<string, {type: string}>}}} LibraryRow
 */

/**
 * A JSON request; an ApiError when refused.
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<unknown>}
 */
async function request(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const data = await res.json().catch(() => null)
  if (!res.ok) throw new ApiError(res.status, data)
  return data
}

/**
 * @param {string} v "1.2.3"
 * @returns {number[]}
 */
const semver = (v) => String(v || "0").split(/[.+-]/).slice(0, 3).map((x) => Number.parseInt(x, 10) || 0)

/**
 * @param {string} a
 * @param {string} b
 */
export function compareVersions(a, b) {
  const x = semver(a)
  const y = semver(b)
  for (let i = 0; i < 3; i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0)
  return 0
}

/**
 * A version one minor step up (1.0.0 -> 1.1.0).
 * @param {string} v
 */
const nextMinor = (v) => {
  const [a, b] = semver(v)
  return `${a}.${b + 1}.0`
}

/** Fetch the library's pipelines and their newest versions again (after a save; nodes' update badges). */
export async function refreshLibrary() {
  try {
    const rows = /** @type {LibraryRow[]} */ (await request("GET", "/atelier/v1/pipelines"))
    nav.newest = Object.fromEntries(rows.map((r) => [r.name, r]))
  } catch (err) {
    console.warn(err)
  }
  app.setDirty()
}

/**
 * Save an inline pipeline (the definition a node uses) to the library; its nodes then use the library's.
 * @param {LGraphNode} node
 */
export function savePipelineDialog(node) {
  const name = node.type.slice(PREFIX.length)
  const found = definitionFor(nodeId(node).slice(prefix().length))
  if (!found) {
    toast(`${name} is the library's already`, "info")
    return
  }
  const def = found.def
  const have = nav.newest[name]?.versions || []
  let version = String(def.metadata?.version || "1.0.0")
  if (have.includes(version)) version = nextMinor(have[have.length - 1])
  const nameIn = h("input", { class: "text-input", type: "text", name: "library-name", value: name, "aria-label": "Library name" })
  const versionIn = h("input", { class: "text-input", type: "text", name: "library-version", value: version, "aria-label": "Version" })
  const error = h("p", { class: "pl-error", role: "alert" })
  modal({
    title: "Save pipeline to library",
    wide: true,
    body: h("div", { class: "pl-dialog" },
      h("label", { class: "field" }, h("span", {}, "Name"), nameIn),
      h("label", { class: "field" }, h("span", {}, "Version"), versionIn),
      have.length ? h("p", { class: "muted" }, `Installed: ${have.join(", ")}`) : null,
      error),
    actions: [
      { label: "Cancel" },
      {
        label: "Save",
        primary: true,
        onClick: async () => {
          const libName = nameIn.value.trim()
          const v = versionIn.value.trim()
          const workflow = clone(def)
          workflow.metadata = { ...(workflow.metadata || {}), version: v }
          try {
            await request("POST", "/atelier/v1/pipelines", { name: libName, workflow })
          } catch (err) {
            error.textContent = errorMessage(err)
            return false
          }
          await useLibrary(name, libName, v)
          toast(`Saved ${libName} ${v} to the library`, "success")
          return true
        },
      },
    ],
  })
}

/**
 * After saving inline pipeline `name` to the library as `libName` `version`: its definition goes, its nodes
 * use the library's, pinned to that version; the catalogue is fetched again so that node search offers it.
 * @param {string} name
 * @param {string} libName
 * @param {string} version
 */
async function useLibrary(name, libName, version) {
  await loadCatalogue()
  nav.library = {}
  nav.registered = ""
  await refreshLibrary()
  const whole = wholeWorkflow(canvasWorkflow())
  /** @param {PWorkflow} wf */
  const retype = (wf) => {
    if (wf.definitions?.[name]) delete wf.definitions[name]
    if (wf.definitions && !Object.keys(wf.definitions).length) delete wf.definitions
    for (const n of Object.values(wf.nodes || {})) {
      if (n.type === PREFIX + name) {
        n.type = PREFIX + libName
        n.version = version
      }
    }
    for (const d of Object.values(wf.definitions || {})) retype(d)
  }
  retype(whole)
  loadWhole(whole, { keepView: true })
  app.setDirty()
  app.changed()
}

/**
 * The library version a node pinned to an older one may update to, and what changes for it.
 * @param {LGraphNode} node
 * @returns {{version: string, major: boolean} | null}
 */
export function updateFor(node) {
  if (!isPipelineType(node.type)) return null
  const def = /** @type {{inline?: boolean} | undefined} */ (app.catalogue[node.type])
  if (!def || def.inline) return null
  const pin = /** @type {{version?: string} | undefined} */ (node.properties?.extra)?.version
  const row = nav.newest[node.type.slice(PREFIX.length)]
  if (!pin || !row || compareVersions(row.version, pin) <= 0) return null
  return { version: row.version, major: semver(row.version)[0] !== semver(pin)[0] }
}

/**
 * What a node meets in the newest version (inputs and outputs added, removed or retyped), as the server's
 * interface_changes says it; empty when it cannot tell.
 * @param {LGraphNode} node
 * @returns {Promise<string[]>}
 */
export async function interfaceChanges(node) {
  const name = node.type.slice(PREFIX.length)
  const pin = /** @type {{version?: string} | undefined} */ (node.properties?.extra)?.version || ""
  const row = nav.newest[name]
  if (!row) return []
  const old = /** @type {{interface: LibraryRow["interface"]}} */ (
    await request("GET", `/atelier/v1/pipelines/${encodeURIComponent(name)}?version=${encodeURIComponent(pin)}`).catch(() => null)
  )
  if (!old) return []
  /** @type {string[]} */
  const changes = []
  for (const side of /** @type {const} */ (["inputs", "outputs"])) {
    const a = old.interface[side]
    const b = row.interface[side]
    const one = side.slice(0, -1)
    for (const k of Object.keys(a)) if (!(k in b)) changes.push(`${one} '${k}' removed`)
    for (const k of Object.keys(b)) if (!(k in a)) changes.push(`${one} '${k}' added`)
    for (const k of Object.keys(a)) if (k in b && a[k].type !== b[k].type) changes.push(`${one} '${k}' retyped ${a[k].type} → ${b[k].type}`)
  }
  return changes.sort()
}

/**
 * Pin every node of a library pipeline at this level to `version`; links stay where the new version has an
 * input or output of the same name.
 * @param {string} type
 * @param {string} version
 */
export function updateInstances(type, version) {
  const wf = withoutPrefix(canvasWorkflow(), prefix())
  let count = 0
  for (const n of Object.values(wf.nodes)) {
    if (n.type === type && n.version !== version) {
      n.version = version
      count++
    }
  }
  replaceLevel(wf)
  toast(`${count} node${count === 1 ? "" : "s"} now use ${type.slice(PREFIX.length)} ${version}`, "success")
  return count
}

/**
 * Ask before a major update: it shows what changes in the interface.
 * @param {LGraphNode} node
 * @param {{version: string, major: boolean}} up
 */
async function confirmUpdate(node, up) {
  if (!up.major) {
    updateInstances(node.type, up.version)
    return
  }
  const changes = await interfaceChanges(node)
  modal({
    title: `Update to v${up.version}`,
    body: h("div", { class: "pl-dialog" },
      h("p", {}, `v${up.version} is a major change from the version these nodes use. Links stay where names match.`),
      changes.length ? h("ul", { class: "pl-changes" }, changes.map((c) => h("li", {}, c))) : h("p", { class: "muted" }, "The interface is the same.")),
    actions: [{ label: "Cancel" }, { label: "Update", primary: true, onClick: () => { updateInstances(node.type, up.version) } }],
  })
}

// -- hooks into the canvas ----------------------------------------------------------------------------------

/**
 * The node menu's pipeline entries.
 * @param {LGraphNode} node
 * @returns {(import("litegraph").IContextMenuValue | null)[]}
 */
function nodeEntries(node) {
  /** @type {(import("litegraph").IContextMenuValue | null)[]} */
  const opts = []
  const selected = Object.keys(app.canvas.selected_nodes || {}).length
  if (selected) opts.push({ content: `Make pipeline${selected > 1 ? ` of ${selected} nodes` : ""}…`, callback: () => makePipelineDialog() })
  if (isPipelineType(node.type)) {
    opts.push({ content: "Edit inside", callback: () => { openPipeline(node) } })
    const def = /** @type {{inline?: boolean} | undefined} */ (app.catalogue[node.type])
    if (def?.inline) opts.push({ content: "Save pipeline to library…", callback: () => savePipelineDialog(node) })
    const up = updateFor(node)
    if (up) opts.push({ content: `Update to v${up.version}${up.major ? " (major)" : ""}`, callback: () => { confirmUpdate(node, up) } })
  }
  if (opts.length) opts.push(null)
  return opts
}

/**
 * The badge of a pipeline node: "inline", or the newer version it may update to.
 * @param {LGraphNode} node
 * @param {CanvasRenderingContext2D} ctx
 */
function drawBadge(node, ctx) {
  if (!isPipelineType(node.type) || node.flags?.collapsed) return
  const def = /** @type {{inline?: boolean} | undefined} */ (app.catalogue[node.type])
  const up = updateFor(node)
  const text = up ? `↑ v${up.version}` : def?.inline ? "pipeline · inline" : "pipeline"
  ctx.save()
  ctx.font = "600 10px Inter, system-ui, sans-serif"
  const w = ctx.measureText(text).width + 12
  // a tab above the title bar, where nothing of the node is drawn
  const x = 8
  const y = -LiteGraph.NODE_TITLE_HEIGHT - 16
  ctx.beginPath()
  ctx.roundRect(x, y, w, 15, 7)
  ctx.fillStyle = up ? "#f0b42933" : "#8b7cf633"
  ctx.fill()
  ctx.fillStyle = up ? "#f0b429" : "#c9a2ff"
  ctx.textBaseline = "middle"
  ctx.fillText(text, x + 6, y + 8)
  ctx.restore()
}

/**
 * What a pipeline node shows of its last run: the state of its inner nodes (events name them by path,
 * `face:sampler`), their progress and preview while one runs, and the pictures the last of them showed.
 * @param {AtelierNode} node
 */
function mirrorInner(node) {
  const id = nodeId(node)
  const pre = id + SEP
  const inner = [...app.runtime.entries()].filter(([k]) => k.startsWith(pre)).map(([, r]) => r)
  if (!inner.length) return
  const r = runtimeOf(id)
  const has = (/** @type {string} */ s) => inner.some((x) => x.status === s)
  const running = inner.find((x) => x.status === "running")
  r.status = running ? "running" : has("error") ? "error" : has("queued") ? "queued" : has("interrupted") ? "interrupted"
    : inner.every((x) => x.status === "cached") ? "cached" : has("done") ? "done" : null
  r.progress = running?.progress || null
  r.preview = running?.preview || null
  const shown = inner.filter((x) => x.images.length)
  const images = shown.length ? shown[shown.length - 1].images : []
  if (images.length && images !== r.images) {
    r.images = images
    r.imageIndex = 0
    node.ensureImageRoom(1)
  }
  // what failed inside shows on the node too (its own problems stay)
  r.errors = [...r.errors.filter((e) => String(e.node) === id), ...inner.flatMap((x) => x.errors)]
  r.elapsed = inner.reduce((sum, x) => sum + (x.status === "done" ? x.elapsed || 0 : 0), 0)
}

/** Start: hooks for loading and saving the whole workflow, the menus, double-click to open, the toolbar. */
export function initPipelines() {
  app.outerWorkflow = wholeWorkflow
  app.loadWorkflow = loadWhole
  const proto = AtelierNode.prototype
  const baseMenu = proto.getMenuOptions
  proto.getMenuOptions = function (...args) {
    const base = baseMenu ? baseMenu.apply(this, args) : []
    return /** @type {import("litegraph").IContextMenuValue[]} */ ([...nodeEntries(this), ...base])
  }
  const baseDbl = proto.onDblClick
  proto.onDblClick = function (e, pos) {
    const r = app.runtime.get(nodeId(this))
    if (isPipelineType(this.type) && !(r?.images?.length && pos[1] > this.contentBottom)) {
      openPipeline(this)
      return
    }
    baseDbl?.call(this, e, pos)
  }
  const baseDraw = proto.onDrawForeground
  proto.onDrawForeground = function (ctx, ...rest) {
    if (isPipelineType(this.type)) mirrorInner(this)
    baseDraw?.call(this, ctx, ...rest)
    drawBadge(this, ctx)
  }
  const canvas = app.canvas
  const baseCanvasMenu = canvas.getMenuOptions?.bind(canvas)
  canvas.getMenuOptions = () => {
    const base = baseCanvasMenu ? baseCanvasMenu() : []
    const selected = Object.keys(canvas.selected_nodes || {}).length
    /** @type {import("litegraph").IContextMenuValue<string>} */
    const make = { content: "Make pipeline from selection…", disabled: !selected, callback: () => makePipelineDialog() }
    /** @type {(import("litegraph").IContextMenuValue<string> | null)[]} */
    const entries = [...base, null, make]
    if (nav.stack.length) entries.push({ content: "Back out of the pipeline", callback: () => leaveTo(nav.stack.length - 1) })
    return /** @type {import("litegraph").IContextMenuValue<string>[]} */ (entries)
  }
  // new library pipeline nodes remember the version they were made with
  const graph = app.graph
  const baseAdded = graph.onNodeAdded
  graph.onNodeAdded = function (node) {
    baseAdded?.call(this, node)
    if (nav.loading || !app.ready) return
    // inside a pipeline, a new node's id is a path too
    const pre = prefix()
    const aid = String(node.properties?.aid ?? "")
    if (pre && aid && !aid.startsWith(pre)) {
      const taken = new Set(graph._nodes.filter((n) => n !== node).map((n) => String(n.properties?.aid)))
      let id = pre + aid
      for (let n = 2; taken.has(id); n++) id = `${pre}${aid}_${n}`
      node.properties.aid = id
    }
    if (!isPipelineType(node.type)) return
    const def = /** @type {(NodeDef & {inline?: boolean}) | undefined} */ (app.catalogue[node.type])
    const extra = /** @type {Record<string, unknown>} */ (node.properties.extra ||= {})
    if (def && !def.inline && def.version && !extra.version) extra.version = def.version
  }
  const menu = document.querySelector(".topbar nav.menu")
  if (menu) {
    menu.appendChild(h("button", { id: "btn-make-pipeline", class: "btn btn-ghost", title: "Make a pipeline of the selected nodes", onclick: () => makePipelineDialog() }, "Make pipeline"))
  }
  refreshLibrary()
  // for the console and the browser tests (window.atelier is testhooks.js's)
  const hooks = /** @type {{atelier?: Record<string, unknown>}} */ (/** @type {unknown} */ (window)).atelier
  if (hooks) hooks.pipelines = { nav, refreshLibrary, openPipeline, leaveTo, makePipeline, updateFor }
  // Alt+Up: one level back out (as the breadcrumb's last link)
  document.addEventListener("keydown", (e) => {
    if (e.altKey && e.key === "ArrowUp" && nav.stack.length) {
      e.preventDefault()
      leaveTo(nav.stack.length - 1)
    }
  })
  showCrumbs()
}
