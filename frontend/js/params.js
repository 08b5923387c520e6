// @ts-check
// The parameters panel: the workflow's exposed parameters as a form, bound to their target widgets.

import { icon } from "./icons.js"
import { findNode, inputWidget, nodeId } from "./nodes.js"
import { inputLimits, narrow, refusal } from "./limits.js"
import { app } from "./state.js"
import { h, promptDialog, toast } from "./ui.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("./state.js").InputDef} InputDef */
/** @typedef {import("./state.js").Parameter} Parameter */
/** @typedef {import("./widgets.js").AtelierWidget} AtelierWidget */

/** @type {HTMLElement | null} */
let root = null
let shape = ""
/**
 * The form's fields by parameter name: the element that has the focus while editing, and how to show a value.
 * @type {Map<string, {field: Element | null, set: (value: unknown) => void}>}
 */
const controls = new Map()

/**
 * The widgets a parameter sets (those of its targets that are on the canvas).
 * @param {Parameter} p
 * @returns {{node: LGraphNode, w: AtelierWidget}[]}
 */
function targetWidgets(p) {
  const out = []
  for (const t of p.targets || []) {
    const dot = t.lastIndexOf(".")
    const node = findNode(t.slice(0, dot))
    const w = inputWidget(node, t.slice(dot + 1))
    if (node && w) out.push({ node, w })
  }
  return out
}

/**
 * The catalogue input of a parameter's first target.
 * @param {Parameter} p
 * @returns {Partial<InputDef>}
 */
function specOf(p) {
  const first = targetWidgets(p)[0]
  return first?.w.inputSpec || {}
}

/** @param {Parameter} p */
function currentValue(p) {
  const first = targetWidgets(p)[0]
  return first ? first.w.value : p.default
}

/**
 * @param {string} name
 * @param {unknown} value
 */
function setValue(name, value) {
  const p = app.doc.parameters[name]
  if (!p) return
  // the form's fields give the values their widgets take (a choice, a number, a boolean, text)
  for (const { w } of targetWidgets(p)) w.value = /** @type {AtelierWidget["value"]} */ (value)
  p.default = value
  app.setDirty()
  app.changed()
}

/** @param {string} name */
function label(name) {
  return name.replace(/_/g, " ")
}

/**
 * The form field of one parameter, after its type.
 * @param {string} name
 * @param {Parameter} p
 */
function control(name, p) {
  const spec = specOf(p)
  const type = p.type || spec.type
  const value = currentValue(p)
  const id = `param-${name}`
  /** @type {HTMLElement} */
  let input
  /** @type {(value: unknown) => void} */
  let set
  if (type === "COMBO" || p.choices) {
    const choices = p.choices || spec.choices || []
    /** @type {unknown[]} */
    const options = [...choices]
    if (value != null && !options.includes(value)) options.unshift(value)
    const select = h("select", { id, class: "select-input", name }, options.map((c) => h("option", { value: String(c) }, String(c))))
    select.value = String(value ?? "")
    select.addEventListener("change", () => {
      const v = choices.find((c) => String(c) === select.value) ?? select.value
      setValue(name, v)
    })
    set = (v) => {
      if (![...select.options].some((o) => o.value === String(v))) select.prepend(h("option", { value: String(v) }, String(v)))
      select.value = String(v)
    }
    input = select
  } else if (type === "INT" || type === "FLOAT") {
    // the node inputs' limits, narrowed by the parameter's own: the same a target widget takes
    let limits = narrow({ min: p.min, max: p.max }, {})
    for (const t of targetWidgets(p)) limits = narrow(limits, inputLimits(t.node, t.w))
    const { min, max } = limits
    const step = p.step ?? spec.step ?? (type === "INT" ? 1 : 0.01)
    const num = h("input", { id, class: "text-input num", type: "number", name, step: String(step), value: String(value ?? "") })
    if (min != null) num.min = String(min)
    if (max != null && max < 1e15) num.max = String(max)
    num.addEventListener("change", () => {
      let v = Number(num.value)
      const why = num.value.trim() === "" ? `${label(name)}: not a number` : refusal(label(name), v, limits)
      if (why) {
        // refused, not clamped: the field shows the value the workflow keeps
        const kept = currentValue(p)
        toast(`${why}; kept ${kept}`, "error", 5000)
        num.value = String(kept ?? "")
        return
      }
      if (type === "INT") v = Math.round(v)
      num.value = String(v)
      setValue(name, v)
    })
    set = (v) => {
      num.value = String(v)
    }
    input = num
    if (/seed/i.test(name)) {
      const dice = h("button", {
        class: "icon-btn dice",
        type: "button",
        title: "New random seed",
        onclick: () => {
          const v = Math.floor(Math.random() * 2 ** 32)
          num.value = String(v)
          setValue(name, v)
        },
      }, icon("dice"))
      input = h("div", { class: "with-button" }, num, dice)
    }
  } else if (type === "BOOLEAN") {
    const box = h("input", { id, type: "checkbox", name, checked: Boolean(value) })
    box.addEventListener("change", () => setValue(name, box.checked))
    set = (v) => {
      box.checked = Boolean(v)
    }
    input = box
  } else {
    const multiline = p.multiline ?? spec.multiline
    const text = multiline
      ? h("textarea", { id, class: "text-input", name, rows: 4, spellcheck: false })
      : h("input", { id, class: "text-input", type: "text", name })
    text.value = String(value ?? "")
    text.addEventListener("change", () => setValue(name, text.value))
    set = (v) => {
      text.value = String(v ?? "")
    }
    input = text
  }
  const field = input.matches?.("input, textarea, select") ? input : input.querySelector("input")
  controls.set(name, { field, set })
  const missing = targetWidgets(p).length === 0
  return h(
    "div",
    { class: `param${missing ? " param-missing" : ""}`, dataset: { param: name } },
    h("div", { class: "param-head" },
      h("label", { for: id }, label(name)),
      h("span", { class: "param-type" }, type),
      h("button", {
        class: "icon-btn small",
        title: `Stop exposing ${name}`,
        onclick: () => {
          delete app.doc.parameters[name]
          app.changed()
          toast(`${name} is no longer a parameter`, "info", 2000)
        },
      }, icon("close"))),
    input,
    p.description ? h("div", { class: "param-desc" }, p.description) : null,
    missing ? h("div", { class: "param-desc warn" }, `targets ${p.targets?.join(", ")}, not on the canvas`) : null,
  )
}

/** @param {HTMLElement} el the panel's body */
export function initParams(el) {
  root = el
  refreshParams(true)
}

const VALUE_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"])

/**
 * Rebuild the form when the set of parameters changed, else only update values not being edited.
 * @param {boolean} [force] rebuild it anyway
 */
export function refreshParams(force = false) {
  if (!root) return
  const params = app.doc.parameters || {}
  const newShape = JSON.stringify(Object.entries(params).map(([k, p]) => [k, p.type, p.targets, p.choices, targetWidgets(p).length]))
  if (force || newShape !== shape) {
    shape = newShape
    controls.clear()
    // socket-typed parameters (IMAGE, MODEL, ...) are a pipeline's inputs, fed by links: no form field
    const names = Object.keys(params).filter((n) => VALUE_TYPES.has(params[n].type ?? ""))
    const meta = app.doc.metadata || {}
    root.replaceChildren(
      ...[meta.description ? h("p", { class: "wf-desc" }, meta.description) : null,
      names.length
        ? h("form", { class: "params", onsubmit: (/** @type {Event} */ e) => e.preventDefault() }, names.map((n) => control(n, params[n])))
        : h("div", { class: "empty" },
          h("p", {}, "This workflow exposes no parameters."),
          h("p", { class: "hint" }, "Right-click a node and choose “Expose as parameter” to edit an input here without touching the graph.")),
      ].filter((x) => x !== null),
    )
    return
  }
  for (const [name, c] of controls) {
    if (document.activeElement === c.field) continue
    const v = currentValue(params[name])
    c.set(v)
  }
}

/**
 * After a widget changed: a parameter with several targets keeps them equal.
 * @param {LGraphNode | null | undefined} node
 * @param {AtelierWidget | null | undefined} widget
 */
export function syncParameterTargets(node, widget) {
  if (!node || !widget || widget.isControl) return
  const target = `${nodeId(node)}.${widget.name}`
  for (const p of Object.values(app.doc.parameters || {})) {
    if (!p.targets?.includes(target) || p.targets.length < 2) continue
    for (const t of p.targets) {
      if (t === target) continue
      const dot = t.lastIndexOf(".")
      const w = inputWidget(findNode(t.slice(0, dot)), t.slice(dot + 1))
      if (w) w.value = widget.value
    }
  }
}

/**
 * Expose a node's widget as a workflow parameter (asks for the name).
 * @param {LGraphNode} node
 * @param {AtelierWidget} widget
 */
export async function exposeWidget(node, widget) {
  const target = `${nodeId(node)}.${widget.name}`
  for (const [name, p] of Object.entries(app.doc.parameters)) {
    if (p.targets?.includes(target)) {
      toast(`${target} is already exposed as ${name}`, "info")
      return
    }
  }
  let suggested = widget.name
  if (app.doc.parameters[suggested]) suggested = `${nodeId(node)}_${widget.name}`
  const name = await promptDialog("Expose as parameter", `Parameter name for ${node.title} › ${widget.name}`, suggested, { okLabel: "Expose" })
  if (!name) return
  if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) {
    toast("Parameter names are letters, digits, _ and -, starting with a letter", "error")
    return
  }
  /** @type {Partial<InputDef>} */
  const spec = widget.inputSpec || {}
  const existing = app.doc.parameters[name]
  if (existing) {
    if (existing.type !== spec.type) {
      toast(`${name} already exists with type ${existing.type}`, "error")
      return
    }
    existing.targets.push(target)
    for (const { w } of targetWidgets(existing)) w.value = widget.value
  } else {
    /** @type {Parameter} */
    const p = { type: spec.type, default: widget.value, targets: [target] }
    if (spec.min != null) p.min = spec.min
    if (spec.max != null) p.max = spec.max
    if (spec.step != null) p.step = spec.step
    if (spec.multiline != null) p.multiline = spec.multiline
    if (spec.description) p.description = spec.description
    app.doc.parameters[name] = p
  }
  app.changed()
  const tab = document.querySelector('[data-tab="params"]')
  if (tab instanceof HTMLElement) tab.click()
  toast(`${node.title} › ${widget.name} is now the parameter “${name}”`, "success", 2500)
}

/**
 * @param {LGraphNode} node
 * @param {AtelierWidget} widget
 */
export function unexposeWidget(node, widget) {
  const target = `${nodeId(node)}.${widget.name}`
  for (const [name, p] of Object.entries(app.doc.parameters)) {
    if (!p.targets?.includes(target)) continue
    p.targets = p.targets.filter((t) => t !== target)
    if (!p.targets.length) delete app.doc.parameters[name]
  }
  app.changed()
}
