// @ts-check
// Widgets for literal inputs, built from the catalogue's input descriptions.

import { inputLimits, refusal } from "./limits.js"
import { app } from "./state.js"
import { toast } from "./ui.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("./state.js").InputDef} InputDef */

/**
 * A node's widget as litegraph has it, with what Atelier keeps on it.
 * @typedef {NonNullable<LGraphNode["widgets"]>[number] & WidgetExtras} AtelierWidget
 */

/**
 * @typedef {object} WidgetExtras
 * @property {InputDef} [inputSpec] the catalogue input it gives a value to
 * @property {boolean} [isControl] not an input's value (a seed's control combo, a button): never saved as one
 * @property {AtelierWidget} [control] a seed's "control after generate" combo
 * @property {AtelierWidget} [controls] the seed that a control combo changes
 * @property {() => void} [onRemove]
 */

export const SEED_CONTROLS = ["fixed", "increment", "decrement", "randomize"]

/** @param {number} step */
function decimals(step) {
  if (!step || Number.isInteger(step)) return 0
  const s = String(step)
  return s.includes("e-") ? Number(s.split("e-")[1]) : (s.split(".")[1] || "").length
}

/**
 * Called by every widget after the user changed it.
 * @param {AtelierWidget} widget
 * @param {LGraphNode} node
 */
function changed(widget, node) {
  app.onWidgetChanged?.(node, widget)
}

/**
 * Adds the widget for one catalogue input to a node; returns it (or null for socket-only inputs).
 * @param {LGraphNode} node
 * @param {InputDef} inp
 * @returns {AtelierWidget | null}
 */
export function addInputWidget(node, inp) {
  const name = inp.name
  /** @type {AtelierWidget} */
  let w
  switch (inp.type) {
    case "INT":
    case "FLOAT": {
      const isInt = inp.type === "INT"
      const step = inp.step ?? (isInt ? 1 : 0.01)
      const precision = isInt ? 0 : Math.max(decimals(step), 1)
      const value = Number(inp.default ?? inp.min ?? 0)
      w = node.addWidget("number", name, value, /** @this {AtelierWidget} @param {unknown} v */ function (v) {
        let x = Number(v)
        if (!Number.isFinite(x)) x = value
        if (isInt) x = Math.round(x)
        else x = Number(x.toFixed(Math.max(precision, 4)))
        if (inp.min != null && x < inp.min) x = inp.min
        if (inp.max != null && x > inp.max) x = inp.max
        this.value = x
        changed(this, node)
      }, { min: inp.min, max: inp.max, step2: step, precision })
      refuseOutOfRange(w, node)
      break
    }
    case "BOOLEAN":
      w = node.addWidget("toggle", name, Boolean(inp.default), /** @this {AtelierWidget} */ function () {
        changed(this, node)
      }, { on: "true", off: "false" })
      break
    case "COMBO": {
      const choices = inp.choices || []
      // a COMBO's default is one of its choices
      const value = /** @type {string | number} */ (inp.default ?? choices[0] ?? "")
      w = node.addWidget("combo", name, value, /** @this {AtelierWidget} */ function () {
        changed(this, node)
      }, { values: choices })
      break
    }
    case "STRING":
      if (inp.multiline) {
        w = addTextArea(node, name, String(inp.default ?? ""), inp.description)
      } else {
        w = node.addWidget("text", name, String(inp.default ?? ""), /** @this {AtelierWidget} */ function () {
          changed(this, node)
        }, {})
      }
      break
    default:
      return null
  }
  w.inputSpec = inp
  return w
}

/**
 * A number widget's typed value (click its middle: litegraph's prompt) outside the input's limits is refused
 * with a message, instead of litegraph clamping it silently; its arrows and dragging stop at the limits.
 * @param {AtelierWidget} widget
 * @param {LGraphNode} node
 */
function refuseOutOfRange(widget, node) {
  /** @type {{onClick?: (o: {e: import("litegraph").CanvasPointerEvent, node: LGraphNode, canvas: import("litegraph").LGraphCanvas}) => void, setValue?: (v: number, o: object) => void, width?: number}} */
  const w = /** @type {any} */ (widget)
  const base = w.onClick?.bind(w)
  if (!base || !w.setValue) return
  const setValue = w.setValue.bind(w)
  w.onClick = (opts) => {
    const { e, canvas } = opts
    const x = e.canvasX - node.pos[0]
    const width = w.width || node.size[0]
    if (x < 40 || x > width - 40) {
      base(opts)
      return
    }
    canvas.prompt("Value", widget.value, (/** @type {unknown} */ typed) => {
      const text = String(typed).trim()
      if (!text) return
      const v = Number(text)
      const why = refusal(widget.name, v, inputLimits(node, widget))
      if (why) {
        toast(`${why}; kept ${widget.value}`, "error", 5000)
        return
      }
      setValue(v, opts)
    }, e)
  }
}

/**
 * ComfyUI's "control after generate" for seeds: a combo under the seed that changes it after each queue.
 * @param {LGraphNode} node
 * @param {AtelierWidget} seedWidget
 */
export function addSeedControl(node, seedWidget) {
  /** @type {AtelierWidget} */
  const w = node.addWidget("combo", "control_after_generate", "fixed", /** @this {AtelierWidget} */ function () {
    changed(this, node)
  }, { values: SEED_CONTROLS })
  w.isControl = true
  w.controls = seedWidget
  w.serialize = false
  seedWidget.control = w
  return w
}

/**
 * Change a seed as its control combo says, after a queue; whether it changed.
 * @param {AtelierWidget} widget
 */
export function applySeedControl(widget) {
  const mode = widget.control?.value
  if (!mode || mode === "fixed") return false
  const min = widget.inputSpec?.min ?? 0
  const max = Math.min(widget.inputSpec?.max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)
  let v = Number(widget.value)
  if (mode === "increment") v = v + 1 > max ? min : v + 1
  else if (mode === "decrement") v = v - 1 < min ? max : v - 1
  else v = min + Math.floor(Math.random() * Math.min(max - min + 1, 2 ** 32))
  widget.value = v
  return true
}

// -- multiline text: a DOM textarea kept over the canvas, like ComfyUI's prompt boxes ----------------

/** @type {{root: HTMLElement | null, all: Set<TextAreaWidget>, drawn: Set<TextAreaWidget>}} */
const layer = { root: null, all: new Set(), drawn: new Set() }

/** @param {HTMLElement} root where the textareas go, over the canvas */
export function initDomLayer(root) {
  layer.root = root
}

export function beginDomFrame() {
  layer.drawn.clear()
}

export function endDomFrame() {
  for (const w of layer.all) {
    if (!layer.drawn.has(w) && w.element.style.display !== "none") w.element.style.display = "none"
  }
}

export function hideAllDomWidgets() {
  for (const w of layer.all) w.element.style.display = "none"
}

/**
 * A prompt box: a widget that draws nothing itself but places its textarea where it would be.
 * @typedef {AtelierWidget & {element: HTMLTextAreaElement, onRemove: () => void}} TextAreaWidget
 */

/**
 * @param {LGraphNode} node
 * @param {string} name
 * @param {string} value
 * @param {string} [description]
 * @returns {TextAreaWidget}
 */
function addTextArea(node, name, value, description) {
  const el = document.createElement("textarea")
  el.className = "node-textarea"
  el.spellcheck = false
  el.placeholder = description || name
  el.value = value
  el.dataset.input = name
  el.style.display = "none"
  /** @type {TextAreaWidget} */
  const widget = {
    type: "customtext",
    name,
    options: { multiline: true },
    element: el,
    y: 0,
    get value() {
      return el.value
    },
    set value(v) {
      el.value = v == null ? "" : String(v)
    },
    computeLayoutSize() {
      return { minHeight: 64, maxHeight: 1200, minWidth: 260 }
    },
    draw(ctx, n, width, y) {
      placeTextArea(this, ctx, n, width, y)
    },
    onRemove() {
      el.remove()
      layer.all.delete(this)
    },
  }
  el.addEventListener("input", () => {
    el.dataset.dirty = "1"
  })
  el.addEventListener("change", () => changed(widget, node))
  el.addEventListener("blur", () => {
    if (el.dataset.dirty) {
      delete el.dataset.dirty
      changed(widget, node)
    }
  })
  // keys typed into the prompt belong to the prompt, not to the canvas shortcuts
  el.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") return // queue works from anywhere
    e.stopPropagation()
  })
  el.addEventListener("wheel", (e) => {
    if (el.scrollHeight <= el.clientHeight) {
      // nothing to scroll: let the canvas zoom
      app.canvas?.processMouseWheel(e)
      e.preventDefault()
    }
  }, { passive: false })
  el.addEventListener("pointerdown", () => {
    app.canvas?.selectNode(node)
  })
  node.addCustomWidget(widget)
  layer.root?.appendChild(el)
  layer.all.add(widget)
  return widget
}

/**
 * @param {TextAreaWidget} widget
 * @param {CanvasRenderingContext2D} ctx
 * @param {LGraphNode} node
 * @param {number} width
 * @param {number} y
 */
function placeTextArea(widget, ctx, node, width, y) {
  const el = widget.element
  const canvas = app.canvas
  if (!canvas || !el.isConnected) return
  const linked = node.inputs?.find((s) => s.widget?.name === widget.name)?.link != null
  if (canvas.low_quality || node.flags?.collapsed || linked) {
    el.style.display = "none"
    layer.drawn.add(widget)
    return
  }
  const t = ctx.getTransform()
  const k = canvas.canvas.clientWidth / canvas.canvas.width
  const margin = 10
  const h = (widget.computedHeight ?? 80) - 6
  el.style.display = "block"
  el.style.width = `${width - margin * 2}px`
  el.style.height = `${Math.max(h, 24)}px`
  el.style.transform = `translate(${(t.e + t.a * margin) * k}px, ${(t.f + t.d * (y + 2)) * k}px) scale(${t.a * k})`
  el.style.opacity = widget.computedDisabled ? "0.5" : "1"
  layer.drawn.add(widget)
}
