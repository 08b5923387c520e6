// @ts-check
// Node classes built from the server's catalogue, and how a node shows its run state.

import { LGraphCanvas, LGraphNode, LiteGraph, RenderShape } from "litegraph"
import { api, imageUrl } from "./api.js"
import { app, runtimeOf, typeColor } from "./state.js"
import { addInputWidget, addSeedControl } from "./widgets.js"

/** @typedef {import("./state.js").Catalogue} Catalogue */
/** @typedef {import("./state.js").NodeDef} NodeDef */
/** @typedef {import("./state.js").NodeError} NodeError */
/** @typedef {import("./widgets.js").AtelierWidget} AtelierWidget */

export const UNKNOWN_TYPE = "atelier/Unknown"

const COLORS = {
  running: "#4ade80",
  cached: "#5b8def",
  done: "#4ade80",
  error: "#ff5d5d",
  track: "rgba(255,255,255,0.08)",
  param: "#c9a2ff",
}

/** @type {Map<string, HTMLImageElement>} */
const imageCache = new Map()

/**
 * An image by URL, loaded once (the canvas redraws when it arrives).
 * @param {string} url
 */
function loadImage(url) {
  let img = imageCache.get(url)
  if (!img) {
    img = new Image()
    img.onload = () => app.setDirty()
    img.src = url
    imageCache.set(url, img)
    const oldest = imageCache.keys().next().value
    if (imageCache.size > 200 && oldest !== undefined) imageCache.delete(oldest)
  }
  return img
}

/**
 * The workflow node id of a canvas node (kept in its properties so that it survives copy and undo).
 * @param {LGraphNode} node
 * @returns {string}
 */
export function nodeId(node) {
  const aid = node.properties?.aid
  return typeof aid === "string" ? aid : String(node.id)
}

/**
 * The canvas node of a workflow node id (every node on the canvas is an AtelierNode).
 * @param {string} aid
 * @returns {AtelierNode | null}
 */
export function findNode(aid) {
  for (const n of app.graph?._nodes || []) if (n instanceof AtelierNode && nodeId(n) === aid) return n
  return null
}

/**
 * The widget that gives a node's input `name` its value (not a seed's control combo of the same name).
 * @param {LGraphNode | null | undefined} node
 * @param {string} name
 * @returns {AtelierWidget | undefined}
 */
export function inputWidget(node, name) {
  return widgetsOf(node).find((w) => w.name === name && !w.isControl)
}

/**
 * A node's widgets, with what Atelier keeps on them.
 * @param {LGraphNode | null | undefined} node
 * @returns {AtelierWidget[]}
 */
export function widgetsOf(node) {
  return node?.widgets || []
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} x
 * @param {number} y
 * @param {number} w
 * @param {number} h
 * @param {number} r
 */
function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath()
  ctx.roundRect(x, y, w, h, r)
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {string} text
 * @param {number} maxWidth
 */
function wrapText(ctx, text, maxWidth) {
  const lines = []
  for (const para of String(text).split("\n")) {
    let line = ""
    for (const word of para.split(/\s+/)) {
      const test = line ? `${line} ${word}` : word
      if (ctx.measureText(test).width > maxWidth && line) {
        lines.push(line)
        line = word
      } else {
        line = test
      }
    }
    lines.push(line)
  }
  return lines
}

/** Base class of every catalogue node: draws run state, previews, output images and errors. */
export class AtelierNode extends LGraphNode {
  /** @param {string} title */
  constructor(title) {
    super(title)
    this.serialize_widgets = true
    this.properties = this.properties || {}
    /** @type {AtelierWidget | undefined} Load Image: the combo of the picture drawn in the node */
    this.imageInput = undefined
    /** whether it grew once to make room for previews */
    this._previewRoom = false
    /** @this {LGraphNode} */
    this.strokeStyles.run = function () {
      const r = app.runtime.get(nodeId(this))
      if (r?.status === "running") return { color: COLORS.running, lineWidth: 2, padding: 5 }
      if (r?.errors?.length) return { color: COLORS.error, lineWidth: 2, padding: 5 }
      return undefined
    }
  }

  get runtime() {
    return runtimeOf(nodeId(this))
  }

  /** y where the widgets end: images are drawn below */
  get contentBottom() {
    let y = 0
    for (const w of this.widgets || []) {
      if (w.hidden) continue
      y = Math.max(y, (w.y || 0) + (w.computedHeight || LiteGraph.NODE_WIDGET_HEIGHT + 4))
    }
    if (!this.widgets?.length) {
      const rows = Math.max(this.inputs?.filter((i) => !i.widget).length || 0, this.outputs?.length || 0)
      y = rows * LiteGraph.NODE_SLOT_HEIGHT + 6
    }
    return y
  }

  /**
   * grow the node so that a picture has room
   * @param {number} [aspect] width / height of the picture
   */
  ensureImageRoom(aspect = 1) {
    const top = this.contentBottom
    const w = Math.max(this.size[0], 280)
    const want = top + Math.min(Math.max((w - 20) / aspect, 160), 420) + 10
    if (this.size[1] < want || this.size[0] < w) this.setSize([w, Math.max(this.size[1], want)])
  }

  /** @param {CanvasRenderingContext2D} ctx */
  onDrawForeground(ctx) {
    const r = app.runtime.get(nodeId(this))
    const W = this.size[0]
    const H = this.size[1]
    const T = LiteGraph.NODE_TITLE_HEIGHT
    if (this.flags?.collapsed) return
    // the canvas lays widgets out after this hook: lay them out now so that pictures go below them
    try {
      this._setConcreteSlots()
      this.arrange()
    } catch {
      // not in a graph yet
    }
    this.drawParamMarks(ctx)
    const picked = this.imageInput?.value
    if (typeof picked === "string" && picked && !r?.images?.length) {
      const top = this.contentBottom + 4
      if (H - top - 8 > 40) {
        const slash = picked.lastIndexOf("/")
        const img = loadImage(imageUrl({ filename: picked.slice(slash + 1), subfolder: slash > 0 ? picked.slice(0, slash) : "", type: "input" }))
        this.drawPicture(ctx, img, [8, top, W - 16, H - top - 8], null)
      }
    }
    if (!r) return
    // title chip: progress, cached or elapsed time
    /** @type {{text: string, color: string} | null} */
    let chip = null
    if (r.status === "running") {
      chip = { text: r.progress ? `${r.progress.value}/${r.progress.max}` : "running", color: COLORS.running }
    } else if (r.status === "cached") {
      chip = { text: "cached", color: COLORS.cached }
    } else if (r.status === "done" && r.elapsed != null) {
      chip = { text: r.elapsed >= 1000 ? `${(r.elapsed / 1000).toFixed(1)} s` : `${Math.round(r.elapsed)} ms`, color: COLORS.done }
    } else if (r.status === "queued") {
      chip = { text: "queued", color: "#9aa0aa" }
    } else if (r.status === "error") {
      chip = { text: "failed", color: COLORS.error }
    } else if (r.status === "interrupted") {
      chip = { text: "interrupted", color: "#f0b429" }
    }
    if (chip) {
      ctx.save()
      ctx.font = "600 11px Inter, system-ui, sans-serif"
      const tw = ctx.measureText(chip.text).width + 14
      const x = W - tw - 8
      const y = -T + (T - 18) / 2
      roundRect(ctx, x, y, tw, 18, 9)
      ctx.fillStyle = `${chip.color}26`
      ctx.fill()
      ctx.strokeStyle = `${chip.color}aa`
      ctx.lineWidth = 1
      ctx.stroke()
      ctx.fillStyle = chip.color
      ctx.textAlign = "center"
      ctx.textBaseline = "middle"
      ctx.fillText(chip.text, x + tw / 2, y + 9.5)
      ctx.restore()
    }
    // step progress bar under the title
    if (r.status === "running" && r.progress && r.progress.max) {
      const p = Math.min(1, r.progress.value / r.progress.max)
      ctx.save()
      ctx.fillStyle = COLORS.track
      ctx.fillRect(0, 0, W, 4)
      ctx.fillStyle = COLORS.running
      ctx.fillRect(0, 0, W * p, 4)
      ctx.restore()
    }
    // pictures: the latest preview while it runs, the output images once done
    const top = this.contentBottom + 4
    const room = [8, top, W - 16, H - top - 8]
    if (room[3] > 40) {
      if (r.preview && (r.status === "running" || !r.images.length)) {
        this.drawPicture(ctx, r.preview, room, r.status === "running" ? "preview" : null)
      } else if (r.images.length) {
        const img = loadImage(imageUrl(r.images[r.imageIndex || 0] || r.images[0]))
        this.drawPicture(ctx, img, room, r.images.length > 1 ? `${(r.imageIndex || 0) + 1} / ${r.images.length}` : null)
      }
    }
    if (r.errors?.length) this.drawErrors(ctx, r.errors)
  }

  /**
   * @param {CanvasRenderingContext2D} ctx
   * @param {HTMLImageElement} img
   * @param {number[]} room x, y, width, height
   * @param {string | null} label
   */
  drawPicture(ctx, img, [x, y, w, h], label) {
    const iw = img.naturalWidth || img.width
    const ih = img.naturalHeight || img.height
    if (!iw || !ih) return
    const s = Math.min(w / iw, h / ih)
    const dw = iw * s
    const dh = ih * s
    const dx = x + (w - dw) / 2
    const dy = y + (h - dh) / 2
    ctx.save()
    ctx.imageSmoothingQuality = "high"
    ctx.imageSmoothingEnabled = s < 4
    roundRect(ctx, dx, dy, dw, dh, 4)
    ctx.clip()
    ctx.drawImage(img, dx, dy, dw, dh)
    ctx.restore()
    if (label) {
      ctx.save()
      ctx.font = "600 10px Inter, system-ui, sans-serif"
      const tw = ctx.measureText(label).width + 10
      roundRect(ctx, dx + 6, dy + 6, tw, 16, 4)
      ctx.fillStyle = "rgba(0,0,0,0.6)"
      ctx.fill()
      ctx.fillStyle = "#eee"
      ctx.textBaseline = "middle"
      ctx.fillText(label, dx + 11, dy + 14.5)
      ctx.restore()
    }
  }

  /**
   * @param {CanvasRenderingContext2D} ctx
   * @param {NodeError[]} errors
   */
  drawErrors(ctx, errors) {
    const W = Math.max(this.size[0], 240)
    ctx.save()
    ctx.font = "12px Inter, system-ui, sans-serif"
    const lines = []
    for (const e of errors) {
      const head = e.input ? `${e.input}: ` : ""
      lines.push(...wrapText(ctx, head + e.message, W - 20))
    }
    const shown = lines.slice(0, 8)
    if (lines.length > 8) shown.push("…")
    const h = shown.length * 16 + 12
    const y = this.size[1] + 10
    roundRect(ctx, 0, y, W, h, 6)
    ctx.fillStyle = "rgba(60, 16, 18, 0.95)"
    ctx.fill()
    ctx.strokeStyle = COLORS.error
    ctx.lineWidth = 1
    ctx.stroke()
    ctx.fillStyle = "#ffd6d6"
    ctx.textBaseline = "top"
    shown.forEach((line, i) => ctx.fillText(line, 10, y + 7 + i * 16))
    // the offending inputs
    ctx.strokeStyle = COLORS.error
    ctx.lineWidth = 2
    for (const e of errors) {
      if (!e.input) continue
      const w = widgetsOf(this).find((x) => x.name === e.input)
      if (w && w.y != null && !w.hidden) {
        roundRect(ctx, 8, w.y, this.size[0] - 16, (w.computedHeight || 24) - 4, 6)
        ctx.stroke()
        continue
      }
      const i = this.inputs?.findIndex((s) => s.name === e.input && !s.widget)
      if (i != null && i >= 0) {
        const p = this.getInputPos(i)
        ctx.beginPath()
        ctx.arc(p[0] - this.pos[0], p[1] - this.pos[1], 8, 0, Math.PI * 2)
        ctx.stroke()
      }
    }
    ctx.restore()
  }

  /**
   * a bar on the left of widgets that are exposed as workflow parameters
   * @param {CanvasRenderingContext2D} ctx
   */
  drawParamMarks(ctx) {
    const id = nodeId(this)
    const params = app.doc.parameters || {}
    for (const w of this.widgets || []) {
      if (w.hidden || w.y == null) continue
      const target = `${id}.${w.name}`
      const exposed = Object.values(params).some((p) => p.targets?.includes(target))
      if (!exposed) continue
      ctx.save()
      ctx.fillStyle = COLORS.param
      roundRect(ctx, 3, w.y + 3, 3, (w.computedHeight || 24) - 10, 1.5)
      ctx.fill()
      ctx.restore()
    }
  }

  /**
   * @param {unknown} e
   * @param {import("litegraph").Point} pos
   */
  onDblClick(e, pos) {
    const r = app.runtime.get(nodeId(this))
    if (r?.images?.length && pos[1] > this.contentBottom) app.openViewer?.(r.images, r.imageIndex || 0)
  }

  onRemoved() {
    for (const w of widgetsOf(this)) w.onRemove?.()
  }

  onResize() {
    app.setDirty()
  }
}

/** A node whose type the server does not know: kept as it is, shown in red, saved back unchanged. */
export class UnknownNode extends AtelierNode {
  static title = "Unknown node"
  /** @param {string} title */
  constructor(title) {
    super(title)
    this.color = "#6b1f1f"
    this.bgcolor = "#3a1a1a"
  }
  /** @param {CanvasRenderingContext2D} ctx */
  onDrawForeground(ctx) {
    ctx.save()
    ctx.font = "12px Inter, system-ui, sans-serif"
    ctx.fillStyle = "#ffb4b4"
    // the workflow's node as it came (litegraph's properties are untyped)
    const raw = /** @type {{type?: string} | undefined} */ (this.properties?.raw)
    ctx.fillText(`unknown type ${raw?.type ?? ""}`, 10, this.size[1] - 12)
    ctx.restore()
    super.onDrawForeground(ctx)
  }
}

/**
 * The node class of a catalogue entry: its inputs (sockets and widgets) and outputs.
 * @param {NodeDef} def
 */
function nodeClassFor(def) {
  const Cls = class extends AtelierNode {
    static title = def.display_name || def.type
    static nodeData = def
    static description = def.description
    /** @param {string} title */
    constructor(title) {
      super(title || def.display_name || def.type)
      for (const inp of def.inputs) {
        const shape = inp.optional ? { shape: RenderShape.HollowCircle } : {}
        const w = inp.widget ? addInputWidget(this, inp) : null
        if (w) {
          this.addInput(inp.name, inp.type, { widget: { name: inp.name }, ...shape })
          if (inp.control_after_generate) addSeedControl(this, w)
        } else {
          this.addInput(inp.name, inp.type, shape)
        }
      }
      for (const out of def.outputs) this.addOutput(out.name, out.type)
      // Load Image: an upload button, and the chosen picture drawn in the node
      const imageCombo = def.inputs.find((i) => i.name === "image" && i.type === "COMBO")
      if (imageCombo) {
        const combo = widgetsOf(this).find((w) => w.name === "image")
        /** @type {AtelierWidget} */
        const button = this.addWidget("button", "choose image to upload", undefined, () => combo && app.pickImageFor?.(this, combo), {})
        button.serialize = false
        button.isControl = true
        this.imageInput = combo
        /** @type {AtelierWidget} */
        const maskButton = this.addWidget("button", "open in mask editor", undefined, () => app.openMaskEditorFor?.(this), {})
        maskButton.serialize = false
        maskButton.isControl = true
      }
      const size = this.computeSize()
      const multiline = def.inputs.some((i) => i.multiline)
      const minWidth = multiline ? 360 : def.inputs.some((i) => i.widget) ? 300 : 220
      this.size = /** @type {[number, number]} */ ([Math.max(size[0], minWidth), size[1] + (multiline ? 90 : 0)])
      if ((def.output_node && def.type.includes("Image")) || imageCombo) this.size = /** @type {[number, number]} */ ([Math.max(this.size[0], 320), this.size[1] + 260])
    }
  }
  Object.defineProperty(Cls, "name", { value: `${def.type}Node` })
  return Cls
}

/** Fetch the node catalogue and the socket types, and (re)register the node types. */
export async function loadCatalogue() {
  const [catalogue, types] = await Promise.all([api.nodes(), api.types()])
  app.catalogue = catalogue
  app.types = types
  registerCatalogue(catalogue)
}

/**
 * (Re)register node types for a catalogue; sockets and links take their types' colours.
 * @param {Catalogue} catalogue
 */
export function registerCatalogue(catalogue) {
  for (const def of Object.values(catalogue)) {
    const Cls = nodeClassFor(def)
    LiteGraph.registerNodeType(def.type, Cls)
    Cls.category = def.category // after registering, which sets it from the type name
  }
  LiteGraph.registerNodeType(UNKNOWN_TYPE, UnknownNode)
  UnknownNode.skip_list = true
  const types = new Set(Object.keys(app.types))
  for (const def of Object.values(catalogue)) {
    for (const s of [...def.inputs, ...def.outputs]) types.add(s.type)
  }
  for (const t of types) {
    const c = typeColor(t)
    LGraphCanvas.link_type_colors[t] = c
    if (app.canvas) {
      app.canvas.default_connection_color_byType[t] = c
      app.canvas.default_connection_color_byTypeOff[t] = c
    }
  }
}

/**
 * Update combo choices (model files) of the nodes on the canvas after the catalogue was fetched again.
 * @param {Catalogue} catalogue
 */
export function refreshChoices(catalogue) {
  for (const node of app.graph._nodes) {
    const def = catalogue[node.type]
    if (!def) continue
    for (const inp of def.inputs) {
      if (inp.type !== "COMBO") continue
      const w = widgetsOf(node).find((x) => x.name === inp.name)
      if (w) w.options.values = inp.choices || []
    }
  }
}
