// @ts-check
// Canvas <-> Atelier workflow JSON (ComfyUI's formats are converted by the server: api.convert), and the
// ComfyUI API-format export.

import { LGraphGroup, LiteGraph } from "litegraph"
import { applyWorkflowMode, workflowMode } from "./modes.js"
import { UNKNOWN_TYPE, inputWidget, nodeId, widgetsOf } from "./nodes.js"
import { app } from "./state.js"
import { isVirtual, primitiveValue, restoreVirtual, sourceLink, virtualLayout } from "./virtual.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("./state.js").Metadata} Metadata */
/** @typedef {import("./state.js").Parameter} Parameter */
/** @typedef {import("./widgets.js").AtelierWidget} AtelierWidget */

// -- the formats ----------------------------------------------------------------------------------------

/**
 * An input's value that comes from another node: its output by name (or by index, for unknown nodes).
 * @typedef {{node: string, output: string | number}} LinkRef
 */

/**
 * A node of an Atelier workflow; inputs hold literal values or LinkRefs; fields we do not know are kept.
 * @typedef {{type: string, inputs?: Record<string, unknown>, title?: string, [key: string]: unknown}} WorkflowNode
 */

/**
 * A group box on the canvas.
 * @typedef {{title: string, bounding: number[], color?: string}} WorkflowGroup
 */

/**
 * The layout of an Atelier workflow, per workflow node id; keys we do not know are kept.
 * @typedef {object} WorkflowUiKnown
 * @property {Record<string, number[]>} [positions]
 * @property {Record<string, number[]>} [sizes]
 * @property {string[]} [collapsed]
 * @property {Record<string, {color?: string, bgcolor?: string}>} [colors]
 * @property {WorkflowGroup[]} [groups]
 * @property {Record<string, Record<string, string>>} [controls] seeds' "control after generate" modes
 */
/** @typedef {WorkflowUiKnown & Record<string, unknown>} WorkflowUi */

/**
 * An Atelier workflow (the server's format); top-level keys we do not know are kept.
 * @typedef {object} WorkflowKnown
 * @property {"atelier/workflow"} format
 * @property {number} version
 * @property {Metadata} metadata
 * @property {Record<string, Parameter>} parameters
 * @property {Record<string, WorkflowNode>} nodes
 * @property {WorkflowUi} ui
 */
/** @typedef {WorkflowKnown & Record<string, unknown>} Workflow */

/**
 * ComfyUI's API format: {id: {class_type, inputs}}; a link is [node id, output index].
 * @typedef {Record<string, {class_type: string, inputs?: Record<string, unknown>, _meta?: {title?: string}}>} ComfyApiPrompt
 */

/**
 * @param {unknown} v
 * @returns {v is LinkRef}
 */
const isLink = (v) =>
  v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 2 && "node" in v && "output" in v

/**
 * A deep copy of JSON data.
 * @template T
 * @param {T} x
 * @returns {T}
 */
const clone = (x) => (x === undefined ? x : JSON.parse(JSON.stringify(x)))

/** @param {number} v */
const round = (v) => Math.round(v * 10) / 10

/**
 * The choices of a combo widget (null for other widgets).
 * @param {AtelierWidget} w
 * @returns {unknown[] | null}
 */
const comboChoices = (w) => (w.type === "combo" && Array.isArray(w.options.values) ? w.options.values : null)

// -- canvas -> workflow ------------------------------------------------------------------------------

/**
 * The Atelier workflow being edited: what the canvas shows, inside the workflow around it while a pipeline is
 * open inside (pipelines.js sets app.outerWorkflow).
 * @returns {Workflow}
 */
export function toWorkflow() {
  const wf = canvasWorkflow()
  return app.outerWorkflow ? app.outerWorkflow(wf) : wf
}

/**
 * The Atelier workflow the canvas shows (parameters, metadata, unknown fields and layout included).
 * @returns {Workflow}
 */
export function canvasWorkflow() {
  const { graph, doc, catalogue } = app
  /** @type {Record<string, WorkflowNode>} */
  const nodes = {}
  /** @type {WorkflowUi} */
  const ui = { ...clone(doc.uiExtra || {}) }
  /** @type {Record<string, number[]>} */
  const positions = {}
  /** @type {Record<string, number[]>} */
  const sizes = {}
  /** @type {string[]} */
  const collapsed = []
  /** @type {Record<string, {color?: string, bgcolor?: string}>} */
  const colors = {}
  /** @type {Record<string, Record<string, string>>} */
  const controls = {}
  for (const node of graph._nodes) {
    if (isVirtual(node)) continue // canvas-only: kept in ui.virtual below
    const id = nodeId(node)
    // the workflow node's fields this editor does not know (litegraph's properties are untyped)
    const extra = clone(/** @type {Record<string, unknown>} */ (node.properties?.extra || {}))
    /** @type {WorkflowNode} */
    let entry
    if (node.type === UNKNOWN_TYPE) {
      // an unknown node keeps the workflow's entry as it came (litegraph's properties are untyped)
      entry = clone(/** @type {WorkflowNode} */ (node.properties.raw))
      const inputs = { ...(entry.inputs || {}) }
      entry.inputs = inputs
      // links may have been redrawn on the canvas: take them from there
      for (const slot of node.inputs || []) {
        if (slot.link != null) inputs[slot.name] = linkValue(slot.link)
        else if (isLink(inputs[slot.name])) delete inputs[slot.name]
      }
    } else {
      const def = catalogue[node.type]
      /** @type {Record<string, unknown>} */
      const inputs = {}
      for (const inp of def?.inputs || []) {
        const slot = node.inputs?.find((s) => s.name === inp.name)
        if (slot?.link != null) {
          const pv = primitiveValue(slot.link)
          if (pv !== undefined) {
            inputs[inp.name] = pv
            continue
          }
          const v = linkValue(slot.link)
          if (v) inputs[inp.name] = v
          continue
        }
        const w = inputWidget(node, inp.name)
        if (w) inputs[inp.name] = w.value
        const ctl = w?.control
        if (ctl && ctl.value !== "fixed") (controls[id] ||= {})[inp.name] = String(ctl.value)
      }
      entry = { ...extra, type: node.type, inputs }
      if (node.title && node.title !== (def?.display_name || node.type)) entry.title = node.title
      else delete entry.title
    }
    const mode = workflowMode(node)
    if (mode) entry.mode = mode
    else delete entry.mode
    nodes[id] = entry
    positions[id] = [round(node.pos[0]), round(node.pos[1])]
    sizes[id] = [round(node.size[0]), round(node.size[1])]
    if (node.flags?.collapsed) collapsed.push(id)
    if (node.color || node.bgcolor) colors[id] = { color: node.color, bgcolor: node.bgcolor }
  }
  ui.positions = positions
  ui.sizes = sizes
  if (collapsed.length) ui.collapsed = collapsed
  else delete ui.collapsed
  if (Object.keys(colors).length) ui.colors = colors
  else delete ui.colors
  if (Object.keys(controls).length) ui.controls = controls
  else delete ui.controls
  const virtual = virtualLayout()
  if (virtual) ui.virtual = virtual
  else delete ui.virtual
  const groups = graph._groups.map((g) => ({ title: g.title, bounding: [...g._bounding].map(round), color: g.color }))
  if (groups.length) ui.groups = groups
  else delete ui.groups
  // exposed parameters default to what their (first) target widget holds now
  const parameters = clone(doc.parameters || {})
  for (const p of Object.values(parameters)) {
    const v = targetValue(nodes, p.targets?.[0])
    if (v !== undefined) p.default = v
  }
  return {
    ...clone(doc.extra || {}),
    format: "atelier/workflow",
    version: 1,
    metadata: clone(doc.metadata || {}),
    parameters,
    nodes,
    ui,
  }
}

/**
 * The literal value a parameter's target ("node.input") holds in a workflow's nodes.
 * @param {Record<string, WorkflowNode>} nodes
 * @param {string | undefined} target
 */
function targetValue(nodes, target) {
  if (!target) return undefined
  const dot = target.lastIndexOf(".")
  const n = nodes[target.slice(0, dot)]
  const v = n?.inputs?.[target.slice(dot + 1)]
  return v === undefined || isLink(v) ? undefined : v
}

/**
 * The workflow value of a link on the canvas.
 * @param {import("litegraph").LinkId} linkId
 * @returns {LinkRef | null}
 */
function linkValue(linkId) {
  const link = sourceLink(linkId) // through Reroutes
  if (!link) return null
  const origin = app.graph.getNodeById(link.origin_id)
  if (!origin) return null
  const name = origin.outputs?.[link.origin_slot]?.name
  if (origin.type === UNKNOWN_TYPE && /^\d+$/.test(name ?? "")) return { node: nodeId(origin), output: Number(name) }
  return { node: nodeId(origin), output: name ?? link.origin_slot }
}

// -- workflow -> canvas ------------------------------------------------------------------------------

export class FormatError extends Error {}

/**
 * The Atelier workflow in data the canvas was given: Atelier's format, or {workflow, parameters} (the
 * metadata of an Atelier PNG). ComfyUI's formats are converted by the server first (api.convert).
 * @param {unknown} data
 * @returns {Workflow}
 */
export function normalizeWorkflow(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) throw new FormatError("this file holds no workflow")
  const d = /** @type {Record<string, unknown>} */ (data)
  if (d.format === "atelier/workflow" || (d.nodes && typeof d.nodes === "object" && !Array.isArray(d.nodes))) {
    return /** @type {Workflow} */ (d)
  }
  if (d.workflow && typeof d.workflow === "object") {
    const wf = normalizeWorkflow(d.workflow)
    return withParameterValues(wf, /** @type {Record<string, unknown> | undefined} */ (d.parameters))
  }
  throw new FormatError("not an Atelier workflow (ComfyUI's formats are converted by the server when imported)")
}

/**
 * Whether data is one of ComfyUI's workflow formats (UI: nodes and links lists; API: {id: {class_type}}),
 * which the server converts.
 * @param {unknown} data
 */
export function isComfyWorkflow(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return false
  const d = /** @type {Record<string, unknown>} */ (data)
  if (Array.isArray(d.nodes) && "links" in d) return true
  if (d.prompt && typeof d.prompt === "object") return isComfyWorkflow(d.prompt)
  const values = Object.values(d)
  return values.length > 0 && values.every((v) => v && typeof v === "object" && "class_type" in v)
}

/**
 * Parameter values used by a run (from a PNG) become the parameters' defaults.
 * @param {Workflow} wf
 * @param {Record<string, unknown> | null | undefined} values
 * @returns {Workflow}
 */
export function withParameterValues(wf, values) {
  if (!values) return wf
  const out = clone(wf)
  for (const [k, v] of Object.entries(values)) {
    if (out.parameters?.[k]) out.parameters[k].default = v
  }
  return out
}

/**
 * Topological columns for workflows that carry no layout, spaced by the nodes' real sizes.
 * @param {Workflow} wf
 * @param {Record<string, LGraphNode>} made the canvas nodes by workflow node id
 */
function autoLayout(wf, made) {
  const ids = Object.keys(wf.nodes)
  /** @type {Record<string, number>} */
  const depth = {}
  const visiting = new Set()
  /**
   * @param {string} id
   * @returns {number}
   */
  const d = (id) => {
    if (depth[id] != null) return depth[id]
    if (visiting.has(id)) return 0
    visiting.add(id)
    let best = 0
    for (const v of Object.values(wf.nodes[id]?.inputs || {})) {
      if (isLink(v) && wf.nodes[v.node]) best = Math.max(best, d(String(v.node)) + 1)
    }
    visiting.delete(id)
    depth[id] = best
    return best
  }
  /** @type {Record<number, string[]>} */
  const cols = {}
  for (const id of ids) (cols[d(id)] ||= []).push(id)
  let x = 60
  for (const c of Object.keys(cols).map(Number).sort((a, b) => a - b)) {
    let y = 80
    let width = 0
    for (const id of cols[c]) {
      const node = made[id]
      node.pos = [x, y]
      y += node.size[1] + LiteGraph.NODE_TITLE_HEIGHT + 36
      width = Math.max(width, node.size[0])
    }
    x += width + 70
  }
}

/** Lay the canvas out again in columns along the links. */
export function arrangeGraph() {
  const wf = toWorkflow()
  /** @type {Record<string, LGraphNode>} */
  const made = {}
  for (const node of app.graph._nodes) made[nodeId(node)] = node
  autoLayout(wf, made)
  fitView()
}

/**
 * A new node of a registered type.
 * @param {string} type
 */
function createNode(type) {
  const node = LiteGraph.createNode(type)
  if (!node) throw new Error(`cannot make a ${type} node`)
  return node
}

/**
 * Put a workflow on the canvas (replacing what is there). Returns the warnings worth telling the user.
 * Parameter defaults are written into their target widgets: they are what a run uses.
 * @param {unknown} data a workflow in any format normalizeWorkflow() reads
 * @param {{keepView?: boolean, fixChoices?: boolean, inner?: boolean}} [options] fixChoices: values not among a combo's choices
 *   become its first choice (shipped workflows name model files this server may not have); inner: put this
 *   workflow on the canvas as it is (pipelines.js loads the levels of a workflow open inside a pipeline so)
 * @returns {string[]}
 */
export function loadIntoGraph(data, { keepView = false, fixChoices = false, inner = false } = {}) {
  const wf = normalizeWorkflow(data)
  // a workflow opened inside one of its pipelines goes back there (pipelines.js); `inner`: one level of it
  if (app.loadWorkflow && !inner) return app.loadWorkflow(wf, { keepView, fixChoices })
  const { graph, catalogue } = app
  /** @type {string[]} */
  const warnings = []
  graph.clear()
  const known = new Set(["format", "version", "metadata", "parameters", "nodes", "ui"])
  /** @type {Record<string, unknown>} */
  const extra = {}
  for (const [k, v] of Object.entries(wf)) if (!known.has(k)) extra[k] = clone(v)
  const ui = clone(wf.ui || {})
  const uiExtra = { ...ui }
  for (const k of ["positions", "sizes", "collapsed", "colors", "groups", "controls"]) delete uiExtra[k]
  app.doc = {
    metadata: clone(wf.metadata || { name: "" }),
    parameters: clone(wf.parameters || {}),
    extra,
    uiExtra,
  }
  const positions = ui.positions && Object.keys(ui.positions).length ? ui.positions : null
  /** @type {Record<string, LGraphNode>} */
  const made = {}
  for (const [id, n] of Object.entries(wf.nodes || {})) {
    const def = catalogue[n.type]
    let node
    if (def) {
      node = createNode(n.type)
      const { type, inputs, title, mode, ...rest } = n
      if (Object.keys(rest).length) node.properties.extra = clone(rest)
      if (title) node.title = title
    } else {
      node = createNode(UNKNOWN_TYPE)
      node.title = n.title || n.type
      node.properties.raw = clone(n)
      for (const [k, v] of Object.entries(n.inputs || {})) if (isLink(v)) node.addInput(k, "*")
      warnings.push(`unknown node type ${n.type} (node ${id}) kept as it is`)
    }
    node.properties.aid = id
    applyWorkflowMode(node, n.mode)
    const p = positions?.[id] || [80, 80]
    node.pos = [Number(p[0]) || 0, Number(p[1]) || 0]
    graph.add(node)
    const s = ui.sizes?.[id]
    if (s) node.setSize([Math.max(Number(s[0]) || 0, 80), Math.max(Number(s[1]) || 0, 30)])
    if (ui.collapsed?.includes(id)) node.collapse(true)
    if (ui.colors?.[id]) Object.assign(node, ui.colors[id])
    // literal values
    if (def) {
      for (const [k, v] of Object.entries(n.inputs || {})) {
        if (isLink(v)) continue
        const w = inputWidget(node, k)
        if (!w) continue
        // the value as the workflow has it: the server checks it
        w.value = /** @type {AtelierWidget["value"]} */ (v)
        const choices = comboChoices(w)
        if (fixChoices && choices?.length && !choices.includes(v)) {
          warnings.push(`${n.title || def.display_name}: ${k} ${JSON.stringify(v)} is not available, using ${choices[0]}`)
          w.value = /** @type {AtelierWidget["value"]} */ (choices[0])
        }
      }
      for (const [k, mode] of Object.entries(ui.controls?.[id] || {})) {
        const w = widgetsOf(node).find((x) => x.name === k)
        if (w?.control) w.control.value = mode
      }
    }
    made[id] = node
  }
  if (!positions) autoLayout(wf, made)
  const virtualLinks = () => restoreVirtual(ui.virtual, made, warnings)
  // links
  for (const [id, n] of Object.entries(wf.nodes || {})) {
    const target = made[id]
    for (const [k, v] of Object.entries(n.inputs || {})) {
      if (!isLink(v)) continue
      const origin = made[String(v.node)]
      if (!origin) {
        warnings.push(`node ${id}: input ${k} links to missing node ${v.node}`)
        continue
      }
      let outIdx = typeof v.output === "number" ? v.output : (origin.outputs || []).findIndex((o) => o.name === v.output)
      if (origin.type === UNKNOWN_TYPE) {
        // an unknown node's outputs are only known from the links that use them
        if (typeof v.output === "number") {
          while ((origin.outputs?.length || 0) <= v.output) origin.addOutput(String(origin.outputs?.length || 0), "*")
        } else if (outIdx < 0) {
          origin.addOutput(v.output, "*")
          outIdx = origin.outputs.length - 1
        }
      }
      const inIdx = (target.inputs || []).findIndex((s) => s.name === k)
      if (outIdx < 0 || outIdx >= (origin.outputs?.length || 0) || inIdx < 0) {
        warnings.push(`node ${id}: cannot link ${k} to ${v.node}.${v.output}`)
        continue
      }
      if (!origin.connect(outIdx, target, inIdx)) warnings.push(`node ${id}: ${k} cannot take ${v.node}.${v.output} (types differ)`)
    }
  }
  virtualLinks()
  // parameters: their defaults are the values a run uses
  for (const [name, p] of Object.entries(app.doc.parameters)) {
    for (const t of p.targets || []) {
      const dot = t.lastIndexOf(".")
      const w = inputWidget(made[t.slice(0, dot)], t.slice(dot + 1))
      if (!w) {
        warnings.push(`parameter ${name} targets ${t}, which is not a widget on the canvas`)
        continue
      }
      const choices = comboChoices(w)
      if (p.default !== undefined && p.default !== null) {
        /** @type {unknown} */
        let v = p.default
        if (fixChoices && choices?.length && !choices.includes(v)) v = choices[0]
        w.value = /** @type {AtelierWidget["value"]} */ (v)
      } else if (fixChoices && choices?.length && !choices.includes(w.value)) {
        w.value = /** @type {AtelierWidget["value"]} */ (choices[0])
      }
    }
  }
  for (const g of ui.groups || []) {
    const group = new LGraphGroup(g.title || "Group")
    group.configure({ id: -1, title: g.title || "Group", bounding: g.bounding, color: g.color || "#3f789e", flags: {} })
    graph.add(group)
  }
  if (!keepView) fitView()
  app.setDirty()
  return warnings
}

/**
 * The graph position under a point of the screen (what litegraph's convertEventToCanvasOffset does for events).
 * @param {number} clientX
 * @param {number} clientY
 * @returns {import("litegraph").Point}
 */
export function graphPosAt(clientX, clientY) {
  const rect = app.canvas.canvas.getBoundingClientRect()
  return app.canvas.convertCanvasToOffset([clientX - rect.left, clientY - rect.top])
}

/** Zoom and pan so that the whole workflow is in view. */
export function fitView() {
  const { canvas, graph } = app
  if (!graph._nodes.length) {
    canvas.ds.scale = 1
    canvas.ds.offset = [0, 0]
    return
  }
  let x0 = Infinity
  let y0 = Infinity
  let x1 = -Infinity
  let y1 = -Infinity
  for (const n of graph._nodes) {
    x0 = Math.min(x0, n.pos[0])
    y0 = Math.min(y0, n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT)
    x1 = Math.max(x1, n.pos[0] + n.size[0])
    y1 = Math.max(y1, n.pos[1] + n.size[1])
  }
  const el = canvas.canvas
  const W = el.clientWidth || 800
  const H = el.clientHeight || 600
  const pad = 60
  const scale = Math.min(1.1, Math.max(0.2, Math.min((W - pad * 2) / (x1 - x0), (H - pad * 2) / (y1 - y0))))
  canvas.ds.scale = scale
  canvas.ds.offset = [(W / scale - (x1 - x0)) / 2 - x0, (H / scale - (y1 - y0)) / 2 - y0]
  canvas.setDirty(true, true)
}
