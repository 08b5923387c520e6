// The parameters panel: the workflow's exposed parameters as a form, bound to their target widgets.

import { findNode, nodeId } from "./nodes.js"
import { app } from "./state.js"
import { h, promptDialog, toast } from "./ui.js"

let root = null
let shape = ""
const controls = new Map() // name -> {el, set(value)}

function targetWidgets(p) {
  const out = []
  for (const t of p.targets || []) {
    const dot = t.lastIndexOf(".")
    const node = findNode(t.slice(0, dot))
    const w = node?.widgets?.find((x) => x.name === t.slice(dot + 1) && !x.isControl)
    if (w) out.push({ node, w })
  }
  return out
}

function specOf(p) {
  const first = targetWidgets(p)[0]
  return first?.w.inputSpec || {}
}

function currentValue(p) {
  const first = targetWidgets(p)[0]
  return first ? first.w.value : p.default
}

function setValue(name, value) {
  const p = app.doc.parameters[name]
  if (!p) return
  for (const { w } of targetWidgets(p)) w.value = value
  p.default = value
  app.setDirty()
  app.changed()
}

function label(name) {
  return name.replace(/_/g, " ")
}

function control(name, p) {
  const spec = specOf(p)
  const type = p.type || spec.type
  const value = currentValue(p)
  const id = `param-${name}`
  let input
  let set
  if (type === "COMBO" || p.choices) {
    const choices = p.choices || spec.choices || []
    const options = [...choices]
    if (value != null && !options.includes(value)) options.unshift(value)
    input = h("select", { id, class: "select-input", name }, options.map((c) => h("option", { value: String(c) }, String(c))))
    input.value = String(value ?? "")
    input.addEventListener("change", () => {
      const v = choices.find((c) => String(c) === input.value) ?? input.value
      setValue(name, v)
    })
    set = (v) => {
      if (![...input.options].some((o) => o.value === String(v))) input.prepend(h("option", { value: String(v) }, String(v)))
      input.value = String(v)
    }
  } else if (type === "INT" || type === "FLOAT") {
    const min = p.min ?? spec.min
    const max = p.max ?? spec.max
    const step = p.step ?? spec.step ?? (type === "INT" ? 1 : 0.01)
    const num = h("input", { id, class: "text-input num", type: "number", name, step: String(step), value: String(value ?? "") })
    if (min != null) num.min = String(min)
    if (max != null && max < 1e15) num.max = String(max)
    num.addEventListener("change", () => {
      let v = Number(num.value)
      if (!Number.isFinite(v)) return
      if (type === "INT") v = Math.round(v)
      if (min != null && v < min) v = min
      if (max != null && v > max) v = max
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
      }, "🎲")
      input = h("div", { class: "with-button" }, num, dice)
    }
  } else if (type === "BOOLEAN") {
    input = h("input", { id, type: "checkbox", name, checked: Boolean(value) })
    input.addEventListener("change", () => setValue(name, input.checked))
    set = (v) => {
      input.checked = Boolean(v)
    }
  } else {
    const multiline = p.multiline ?? spec.multiline
    input = multiline
      ? h("textarea", { id, class: "text-input", name, rows: 4, spellcheck: false })
      : h("input", { id, class: "text-input", type: "text", name })
    input.value = value ?? ""
    input.addEventListener("change", () => setValue(name, input.value))
    set = (v) => {
      input.value = v ?? ""
    }
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
      }, "✕")),
    input,
    p.description ? h("div", { class: "param-desc" }, p.description) : null,
    missing ? h("div", { class: "param-desc warn" }, `targets ${p.targets?.join(", ")}, not on the canvas`) : null,
  )
}

export function initParams(el) {
  root = el
  refreshParams(true)
}

/** Rebuild the form when the set of parameters changed, else only update values not being edited. */
export function refreshParams(force = false) {
  if (!root) return
  const params = app.doc.parameters || {}
  const newShape = JSON.stringify(Object.entries(params).map(([k, p]) => [k, p.type, p.targets, p.choices, targetWidgets(p).length]))
  if (force || newShape !== shape) {
    shape = newShape
    controls.clear()
    const names = Object.keys(params)
    const meta = app.doc.metadata || {}
    root.replaceChildren(
      ...[meta.description ? h("p", { class: "wf-desc" }, meta.description) : null,
      names.length
        ? h("form", { class: "params", onsubmit: (e) => e.preventDefault() }, names.map((n) => control(n, params[n])))
        : h("div", { class: "empty" },
          h("p", {}, "This workflow exposes no parameters."),
          h("p", { class: "hint" }, "Right-click a node and choose “Expose as parameter” to edit an input here without touching the graph.")),
      ].filter(Boolean),
    )
    return
  }
  for (const [name, c] of controls) {
    if (document.activeElement === c.field) continue
    const v = currentValue(params[name])
    c.set(v)
  }
}

/** After a widget changed: a parameter with several targets keeps them equal. */
export function syncParameterTargets(node, widget) {
  if (!node || !widget || widget.isControl) return
  const target = `${nodeId(node)}.${widget.name}`
  for (const p of Object.values(app.doc.parameters || {})) {
    if (!p.targets?.includes(target) || p.targets.length < 2) continue
    for (const t of p.targets) {
      if (t === target) continue
      const dot = t.lastIndexOf(".")
      const w = findNode(t.slice(0, dot))?.widgets?.find((x) => x.name === t.slice(dot + 1) && !x.isControl)
      if (w) w.value = widget.value
    }
  }
}

/** Expose a node's widget as a workflow parameter (asks for the name). */
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
    const p = { type: spec.type, default: widget.value, targets: [target] }
    for (const k of ["min", "max", "step", "multiline"]) if (spec[k] != null) p[k] = spec[k]
    if (spec.description) p.description = spec.description
    app.doc.parameters[name] = p
  }
  app.changed()
  document.querySelector('[data-tab="params"]')?.click()
  toast(`${node.title} › ${widget.name} is now the parameter “${name}”`, "success", 2500)
}

export function unexposeWidget(node, widget) {
  const target = `${nodeId(node)}.${widget.name}`
  for (const [name, p] of Object.entries(app.doc.parameters)) {
    if (!p.targets?.includes(target)) continue
    p.targets = p.targets.filter((t) => t !== target)
    if (!p.targets.length) delete app.doc.parameters[name]
  }
  app.changed()
}
