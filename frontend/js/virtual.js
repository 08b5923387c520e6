// @ts-check
// Canvas-only nodes, as ComfyUI's frontend has them: a Reroute passes a link through (typed by what it
// connects), a Note holds text, a Primitive feeds its one value to several widget inputs (taking the first
// one's type, limits and choices; a seed's control after generate too). None of them reaches the server:
// the workflow's nodes get the links and values they stand for (graphio.js asks sourceLink() and
// primitiveValue()), and the canvas keeps them in the layout, ui.virtual:
//   {id: {type, pos, size, title?, color?, bgcolor?, text? (Note), value?, control? (Primitive),
//         input?: {node, output} (Reroute: what feeds it), targets?: [[node id, input name], ...]}}

import { LGraphNode, LiteGraph } from "litegraph"
import { app } from "./state.js"
import { addInputWidget, addSeedControl } from "./widgets.js"

/** @typedef {import("litegraph").LLink} LLink */
/** @typedef {import("./widgets.js").AtelierWidget} AtelierWidget */
/** @typedef {import("./state.js").InputDef} InputDef */
/**
 * @typedef {object} VirtualEntry
 * @property {string} type
 * @property {number[]} pos
 * @property {number[]} [size]
 * @property {string} [title]
 * @property {string} [color]
 * @property {string} [bgcolor]
 * @property {string} [text]
 * @property {unknown} [value]
 * @property {string} [control]
 * @property {{node: string, output: string | number}} [input]
 * @property {[string, string][]} [targets]
 */

export const REROUTE = "Reroute"
export const NOTE = "Note"
export const PRIMITIVE = "PrimitiveNode"
const VIRTUAL = new Set([REROUTE, NOTE, PRIMITIVE])

/**
 * Whether a canvas node is canvas-only (not a node of the workflow the server runs).
 * @param {LGraphNode} node
 */
export const isVirtual = (node) => VIRTUAL.has(node.type)

/** @param {LGraphNode} node */
const aid = (node) => String(node.properties?.aid ?? node.id)

/**
 * Remove the DOM parts of a node's widgets (text boxes) when the node goes.
 * @param {LGraphNode} node
 */
function dropWidgets(node) {
  for (const w of /** @type {AtelierWidget[]} */ (node.widgets || [])) w.onRemove?.()
}

// -- Reroute --------------------------------------------------------------------------------------------

export class RerouteNode extends LGraphNode {
  static title = "Reroute"
  static title_mode = LiteGraph.NO_TITLE
  static collapsable = false
  /** @param {string} [title] */
  constructor(title) {
    super(title || "Reroute")
    this.addInput("", "*")
    this.addOutput("", "*")
    this.size = /** @type {[number, number]} */ ([80, 26])
    this.resizable = false
  }

  /** Take the type of what feeds this reroute (or of what it feeds), and give it to its links. */
  onConnectionsChange() {
    setTimeout(() => retype(this), 0)
  }
}

/**
 * The type a reroute carries: its source's, else the first input it feeds; "*" when it connects nothing.
 * @param {LGraphNode} node
 */
function retype(node) {
  const graph = app.graph
  const src = sourceLink(node.inputs[0]?.link ?? null)
  let type = src ? String(graph.getNodeById(src.origin_id)?.outputs?.[src.origin_slot]?.type ?? "*") : "*"
  if (type === "*") {
    for (const id of node.outputs[0]?.links || []) {
      const l = graph.getLink(id)
      const t = l ? graph.getNodeById(l.target_id)?.inputs?.[l.target_slot]?.type : null
      if (t && t !== "*") {
        type = String(t)
        break
      }
    }
  }
  if (node.outputs[0].type === type) return
  node.outputs[0].type = type
  for (const id of node.outputs[0].links || []) {
    const l = graph.getLink(id)
    if (l) l.type = type
  }
  app.setDirty()
}

/**
 * The link that really feeds a link: back through Reroutes to the node output behind them (a Primitive's
 * included); null when a reroute on the way is fed by nothing.
 * @param {import("litegraph").LinkId | null} linkId
 * @returns {LLink | null}
 */
export function sourceLink(linkId) {
  const graph = app.graph
  const seen = new Set()
  let link = linkId == null ? null : graph.getLink(linkId)
  while (link) {
    const origin = graph.getNodeById(link.origin_id)
    if (origin?.type !== REROUTE || seen.has(origin)) return link
    seen.add(origin)
    const next = origin.inputs[0]?.link
    link = next == null ? null : graph.getLink(next)
  }
  return null
}

// -- Note -----------------------------------------------------------------------------------------------

export class NoteNode extends LGraphNode {
  static title = "Note"
  /** @param {string} [title] */
  constructor(title) {
    super(title || "Note")
    addInputWidget(this, { name: "text", type: "STRING", optional: true, multiline: true, default: "" })
    this.color = "#5c5330"
    this.bgcolor = "#403a22"
    this.size = /** @type {[number, number]} */ ([320, 140])
  }

  onRemoved() {
    dropWidgets(this)
  }
}

// -- Primitive ------------------------------------------------------------------------------------------

/**
 * The catalogue's description of a canvas node's input.
 * @param {LGraphNode} node
 * @param {number} slot
 * @returns {InputDef | null}
 */
function inputDef(node, slot) {
  const name = node.inputs?.[slot]?.name
  return app.catalogue[node.type]?.inputs.find((i) => i.name === name && i.widget) || null
}

export class PrimitiveNode extends LGraphNode {
  static title = "Primitive"
  /** @param {string} [title] */
  constructor(title) {
    super(title || "Primitive")
    this.addOutput("connect to widget input", "*")
    this.size = /** @type {[number, number]} */ ([260, 60])
    /** @type {InputDef | null} the widget input it took its type from */
    this.spec = null
  }

  /**
   * Only widget inputs, and once typed only inputs of that type.
   * @param {number} _slot
   * @param {unknown} _type
   * @param {import("litegraph").INodeInputSlot | import("litegraph").SubgraphIO} _input
   * @param {unknown} target
   * @param {number} targetSlot
   */
  onConnectOutput(_slot, _type, _input, target, targetSlot) {
    const node = typeof target === "number" ? app.graph.getNodeById(target) : target
    if (!(node instanceof LGraphNode)) return false
    const def = inputDef(node, targetSlot)
    if (!def) return false
    return !this.spec || this.spec.type === def.type
  }

  /**
   * @param {import("litegraph").ISlotType} kind
   * @param {number} _index
   * @param {boolean} connected
   * @param {LLink | null | undefined} link
   */
  onConnectionsChange(kind, _index, connected, link) {
    if (kind !== LiteGraph.OUTPUT) return
    if (connected && link && !this.spec) {
      const target = app.graph.getNodeById(link.target_id)
      const def = target ? inputDef(target, link.target_slot) : null
      if (def && target) this.takeType(def, target.widgets?.find((w) => w.name === def.name)?.value)
    } else if (!connected && !this.outputs[0].links?.length) {
      this.dropType()
    }
  }

  /**
   * Become a widget like the target's (its type, limits, choices, seed control), holding `value`.
   * @param {InputDef} def
   * @param {unknown} value
   */
  takeType(def, value) {
    this.spec = def
    const w = addInputWidget(this, { ...def, name: "value", default: /** @type {InputDef["default"]} */ (value ?? def.default) })
    if (w && (def.control_after_generate || ((def.name === "seed" || def.name === "noise_seed") && def.type === "INT"))) addSeedControl(this, w)
    this.outputs[0].type = def.type
    this.outputs[0].name = def.type
    this.title = def.name
    this.setSize([Math.max(this.size[0], 260), this.computeSize()[1]])
    app.setDirty()
  }

  dropType() {
    dropWidgets(this)
    this.widgets = []
    this.spec = null
    this.outputs[0].type = "*"
    this.outputs[0].name = "connect to widget input"
    this.title = "Primitive"
    this.setSize([260, 60])
  }

  /** The value it feeds. */
  get value() {
    return /** @type {AtelierWidget[]} */ (this.widgets || []).find((w) => w.name === "value")?.value
  }

  onRemoved() {
    dropWidgets(this)
  }
}

/**
 * The value a Primitive feeds through a link (through Reroutes), or undefined when no Primitive feeds it.
 * @param {import("litegraph").LinkId} linkId
 */
export function primitiveValue(linkId) {
  const link = sourceLink(linkId)
  const origin = link ? app.graph.getNodeById(link.origin_id) : null
  return origin instanceof PrimitiveNode ? origin.value : undefined
}

// -- saving and loading ---------------------------------------------------------------------------------

/** @param {number} v */
const round = (v) => Math.round(v * 10) / 10

/**
 * The canvas-only nodes, for the workflow's layout (ui.virtual); null when there are none.
 * @returns {Record<string, VirtualEntry> | null}
 */
export function virtualLayout() {
  /** @type {Record<string, VirtualEntry>} */
  const out = {}
  const graph = app.graph
  for (const node of graph._nodes) {
    if (!isVirtual(node)) continue
    /** @type {VirtualEntry} */
    const e = { type: node.type, pos: [round(node.pos[0]), round(node.pos[1])], size: [round(node.size[0]), round(node.size[1])] }
    if (node.title !== /** @type {typeof LGraphNode & {title?: string}} */ (node.constructor).title && !(node instanceof PrimitiveNode)) e.title = node.title
    if (node.color) e.color = node.color
    if (node.bgcolor) e.bgcolor = node.bgcolor
    if (node instanceof NoteNode) e.text = String(node.widgets?.[0]?.value ?? "")
    if (node instanceof PrimitiveNode && node.spec) {
      e.value = node.value
      const control = /** @type {AtelierWidget | undefined} */ (node.widgets?.find((w) => w.name === "value"))?.control?.value
      if (control && control !== "fixed") e.control = String(control)
    }
    const inLink = node.inputs?.[0]?.link
    const l = inLink == null ? null : graph.getLink(inLink)
    const origin = l ? graph.getNodeById(l.origin_id) : null
    if (l && origin) e.input = { node: aid(origin), output: isVirtual(origin) ? 0 : (origin.outputs[l.origin_slot]?.name ?? l.origin_slot) }
    /** @type {[string, string][]} */
    const targets = []
    for (const id of node.outputs?.[0]?.links || []) {
      const t = graph.getLink(id)
      const target = t ? graph.getNodeById(t.target_id) : null
      if (t && target) targets.push([aid(target), isVirtual(target) ? "" : target.inputs[t.target_slot]?.name])
    }
    if (targets.length) e.targets = targets
    out[aid(node)] = e
  }
  return Object.keys(out).length ? out : null
}

/**
 * Put a workflow's canvas-only nodes back (after its own nodes and links): each takes its place and its
 * links again, which replace the direct links (or literal values) the workflow has for what it feeds.
 * @param {unknown} layout the workflow's ui.virtual
 * @param {Record<string, LGraphNode>} made the workflow's canvas nodes by id
 * @param {string[]} warnings
 */
export function restoreVirtual(layout, made, warnings) {
  if (!layout || typeof layout !== "object") return
  const entries = /** @type {Record<string, VirtualEntry>} */ (layout)
  /** @type {Record<string, LGraphNode>} */
  const all = { ...made }
  for (const [id, e] of Object.entries(entries)) {
    if (!VIRTUAL.has(e?.type) || all[id]) continue
    const node = LiteGraph.createNode(e.type)
    if (!node) continue
    node.properties.aid = id
    node.pos = [Number(e.pos?.[0]) || 0, Number(e.pos?.[1]) || 0]
    app.graph.add(node)
    if (e.size && !(node instanceof RerouteNode)) node.setSize([Number(e.size[0]) || 80, Number(e.size[1]) || 30])
    if (e.title) node.title = e.title
    if (e.color) node.color = e.color
    if (e.bgcolor) node.bgcolor = e.bgcolor
    if (node instanceof NoteNode && node.widgets?.[0]) node.widgets[0].value = String(e.text ?? "")
    all[id] = node
  }
  for (const [id, e] of Object.entries(entries)) {
    const node = all[id]
    if (!node || !isVirtual(node)) continue
    if (e.input) {
      const origin = all[String(e.input.node)]
      const slot = origin && (typeof e.input.output === "number" ? e.input.output : origin.outputs.findIndex((o) => o.name === e.input?.output))
      if (origin && slot != null && slot >= 0) origin.connect(slot, node, 0)
      else warnings.push(`${e.type} ${id}: what fed it (${e.input.node}) is gone`)
    }
    for (const [tid, name] of e.targets || []) {
      const target = all[String(tid)]
      const slot = target ? (isVirtual(target) ? 0 : target.inputs.findIndex((s) => s.name === name)) : -1
      if (target && slot >= 0) node.connect(0, target, slot)
      else warnings.push(`${e.type} ${id}: cannot feed ${tid}.${name}`)
    }
    if (node instanceof PrimitiveNode && node.spec) {
      const w = /** @type {AtelierWidget | undefined} */ (node.widgets?.find((x) => x.name === "value"))
      if (w && e.value !== undefined) w.value = /** @type {AtelierWidget["value"]} */ (e.value)
      if (w?.control && e.control) w.control.value = e.control
    }
  }
}

// -- adding them ----------------------------------------------------------------------------------------

/**
 * A new canvas-only node at a graph position.
 * @param {string} type
 * @param {import("litegraph").Point} pos
 */
export function addVirtualNode(type, pos) {
  const node = LiteGraph.createNode(type)
  if (!node) return null
  node.pos = [pos[0], pos[1]]
  app.graph.add(node)
  app.setDirty()
  app.changed()
  return node
}

/** Register the node types and offer them in the canvas menu (right-click the background). */
export function installVirtualNodes() {
  for (const [type, Cls] of /** @type {[string, typeof LGraphNode][]} */ ([[REROUTE, RerouteNode], [NOTE, NoteNode], [PRIMITIVE, PrimitiveNode]])) {
    LiteGraph.registerNodeType(type, Cls)
    Cls.category = "utils"
    Cls.skip_list = true
  }
}

/** Put "Add Note / Reroute / Primitive" into the canvas's context menu. */
export function initVirtualMenu() {
  const canvas = app.canvas
  const original = canvas.getMenuOptions
  canvas.getMenuOptions = () => {
    const at = /** @type {import("litegraph").Point} */ ([...canvas.graph_mouse])
    /** @type {import("litegraph").IContextMenuValue<string>[]} */
    const add = [
      { content: "Add Note", callback: () => { addVirtualNode(NOTE, at) } },
      { content: "Add Reroute", callback: () => { addVirtualNode(REROUTE, at) } },
      { content: "Add Primitive", callback: () => { addVirtualNode(PRIMITIVE, at) } },
    ]
    return [...(original?.call(canvas) || []), /** @type {import("litegraph").IContextMenuValue<string>} */ (/** @type {unknown} */ (null)), ...add]
  }
}
