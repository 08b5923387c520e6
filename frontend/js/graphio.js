// Canvas <-> Atelier workflow JSON; ComfyUI API-format and UI-format import.

import { LGraphGroup, LiteGraph } from "litegraph"
import { UNKNOWN_TYPE, nodeId } from "./nodes.js"
import { app } from "./state.js"

const isLink = (v) =>
  v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 2 && "node" in v && "output" in v

const clone = (x) => (x === undefined ? undefined : JSON.parse(JSON.stringify(x)))

const round = (v) => Math.round(v * 10) / 10

// -- canvas -> workflow ------------------------------------------------------------------------------

/** The Atelier workflow the canvas shows (parameters, metadata, unknown fields and layout included). */
export function toWorkflow() {
  const { graph, doc, catalogue } = app
  const nodes = {}
  const ui = { ...clone(doc.uiExtra || {}) }
  const positions = {}
  const sizes = {}
  const collapsed = []
  const colors = {}
  const controls = {}
  for (const node of graph._nodes) {
    const id = nodeId(node)
    const extra = clone(node.properties?.extra || {})
    let entry
    if (node.type === UNKNOWN_TYPE) {
      entry = clone(node.properties.raw)
      entry.inputs = { ...(entry.inputs || {}) }
      // links may have been redrawn on the canvas: take them from there
      for (const slot of node.inputs || []) {
        if (slot.link != null) entry.inputs[slot.name] = linkValue(slot.link)
        else if (isLink(entry.inputs[slot.name])) delete entry.inputs[slot.name]
      }
    } else {
      const def = catalogue[node.type]
      const inputs = {}
      for (const inp of def?.inputs || []) {
        const slot = node.inputs?.find((s) => s.name === inp.name)
        if (slot?.link != null) {
          const v = linkValue(slot.link)
          if (v) inputs[inp.name] = v
          continue
        }
        const w = node.widgets?.find((x) => x.name === inp.name && !x.isControl)
        if (w) inputs[inp.name] = w.value
        const ctl = w?.control
        if (ctl && ctl.value !== "fixed") (controls[id] ||= {})[inp.name] = ctl.value
      }
      entry = { ...extra, type: node.type, inputs }
      if (node.title && node.title !== (def?.display_name || node.type)) entry.title = node.title
      else delete entry.title
    }
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

function targetValue(nodes, target) {
  if (!target) return undefined
  const dot = target.lastIndexOf(".")
  const n = nodes[target.slice(0, dot)]
  const v = n?.inputs?.[target.slice(dot + 1)]
  return v === undefined || isLink(v) ? undefined : v
}

function linkValue(linkId) {
  const link = app.graph.getLink(linkId)
  if (!link) return null
  const origin = app.graph.getNodeById(link.origin_id)
  if (!origin) return null
  const out = origin.outputs?.[link.origin_slot]
  if (origin.type === UNKNOWN_TYPE && /^\d+$/.test(out?.name ?? "")) return { node: nodeId(origin), output: Number(out.name) }
  return { node: nodeId(origin), output: out?.name ?? link.origin_slot }
}

/** ComfyUI API format ({id: {class_type, inputs}}) for the current canvas. */
export function toComfyApi(wf = toWorkflow()) {
  const out = {}
  for (const [id, n] of Object.entries(wf.nodes)) {
    const inputs = {}
    for (const [k, v] of Object.entries(n.inputs || {})) {
      if (isLink(v)) {
        const src = wf.nodes[v.node]
        const outs = app.catalogue[src?.type]?.outputs || []
        const idx = typeof v.output === "number" ? v.output : outs.findIndex((o) => o.name === v.output)
        inputs[k] = [v.node, Math.max(idx, 0)]
      } else {
        inputs[k] = v
      }
    }
    out[id] = { class_type: n.type, inputs, _meta: { title: n.title || app.catalogue[n.type]?.display_name || n.type } }
  }
  return out
}

// -- workflow -> canvas ------------------------------------------------------------------------------

export class FormatError extends Error {}

/** Recognise the data of a dropped/opened file and turn it into an Atelier workflow. */
export function normalizeWorkflow(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) throw new FormatError("this file holds no workflow")
  if (data.format === "atelier/workflow" || (data.nodes && typeof data.nodes === "object" && !Array.isArray(data.nodes))) {
    return data
  }
  if (Array.isArray(data.nodes) && Array.isArray(data.links)) return fromComfyUi(data)
  if (data.workflow && typeof data.workflow === "object") {
    const wf = normalizeWorkflow(data.workflow)
    return withParameterValues(wf, data.parameters)
  }
  const values = Object.values(data)
  if (values.length && values.every((v) => v && typeof v === "object" && "class_type" in v)) return fromComfyApi(data)
  throw new FormatError("not an Atelier workflow, nor a ComfyUI workflow (API or UI format)")
}

/** Parameter values used by a run (from a PNG) become the parameters' defaults. */
export function withParameterValues(wf, values) {
  if (!values) return wf
  const out = clone(wf)
  for (const [k, v] of Object.entries(values)) {
    if (out.parameters?.[k]) out.parameters[k].default = v
  }
  return out
}

export function fromComfyApi(prompt, uiWorkflow = null) {
  const nodes = {}
  for (const [id, n] of Object.entries(prompt)) {
    const inputs = {}
    for (const [k, v] of Object.entries(n.inputs || {})) {
      const link = Array.isArray(v) && v.length === 2 && (typeof v[0] === "string" || typeof v[0] === "number") && Number.isInteger(v[1])
      inputs[k] = link ? { node: String(v[0]), output: v[1] } : v
    }
    nodes[String(id)] = { type: n.class_type, inputs, ...(n._meta?.title ? { title: n._meta.title } : {}) }
  }
  const ui = {}
  if (uiWorkflow && Array.isArray(uiWorkflow.nodes)) {
    ui.positions = {}
    ui.sizes = {}
    for (const n of uiWorkflow.nodes) {
      if (!nodes[String(n.id)]) continue
      if (n.pos) ui.positions[String(n.id)] = Array.isArray(n.pos) ? n.pos.slice(0, 2) : [n.pos[0], n.pos[1]]
      if (n.size) ui.sizes[String(n.id)] = Array.isArray(n.size) ? n.size.slice(0, 2) : [n.size[0], n.size[1]]
    }
    if (uiWorkflow.groups?.length) ui.groups = uiWorkflow.groups.map((g) => ({ title: g.title, bounding: g.bounding, color: g.color }))
  }
  // titles equal to the display name are noise
  for (const n of Object.values(nodes)) {
    if (n.title && n.title === app.catalogue[n.type]?.display_name) delete n.title
  }
  return { format: "atelier/workflow", version: 1, metadata: { name: "" }, parameters: {}, nodes, ui }
}

/** ComfyUI's UI-format workflow (nodes array + links array, widget values by position). */
export function fromComfyUi(wf) {
  const links = new Map()
  for (const l of wf.links || []) {
    if (Array.isArray(l)) links.set(l[0], { origin: l[1], slot: l[2] })
    else if (l && typeof l === "object") links.set(l.id, { origin: l.origin_id, slot: l.origin_slot })
  }
  const prompt = {}
  for (const n of wf.nodes) {
    if (n.mode === 2 || n.mode === 4) continue // muted or bypassed
    if (n.type === "Note" || n.type === "MarkdownNote" || n.type === "Reroute" || n.type === "PrimitiveNode") continue
    const inputs = {}
    const linked = new Set()
    for (const inp of n.inputs || []) {
      const l = inp.link != null ? links.get(inp.link) : null
      if (l) {
        inputs[inp.name] = [String(l.origin), l.slot]
        linked.add(inp.name)
      }
    }
    const def = app.catalogue[n.type]
    const values = n.widgets_values
    if (def && values) {
      if (Array.isArray(values)) {
        let i = 0
        for (const inp of def.inputs) {
          if (!inp.widget) continue
          const v = values[i++]
          if (inp.control_after_generate && typeof values[i] === "string" && /^(fixed|increment|decrement|randomize)$/.test(values[i])) i++
          if (!linked.has(inp.name) && v !== undefined) inputs[inp.name] = v
        }
      } else {
        for (const [k, v] of Object.entries(values)) if (!linked.has(k)) inputs[k] = v
      }
    }
    prompt[String(n.id)] = { class_type: n.type, inputs, _meta: n.title ? { title: n.title } : undefined }
  }
  return fromComfyApi(prompt, wf)
}

/** Topological columns for workflows that carry no layout, spaced by the nodes' real sizes. */
function autoLayout(wf, made) {
  const ids = Object.keys(wf.nodes)
  const depth = {}
  const visiting = new Set()
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
  const made = {}
  for (const node of app.graph._nodes) made[nodeId(node)] = node
  autoLayout(wf, made)
  fitView()
}

/**
 * Put a workflow on the canvas (replacing what is there). Returns the warnings worth telling the user.
 * Parameter defaults are written into their target widgets: they are what a run uses.
 */
export function loadIntoGraph(data, { keepView = false, fixChoices = false } = {}) {
  const wf = normalizeWorkflow(data)
  const { graph, catalogue } = app
  const warnings = []
  graph.clear()
  const known = new Set(["format", "version", "metadata", "parameters", "nodes", "ui"])
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
  const made = {}
  for (const [id, n] of Object.entries(wf.nodes || {})) {
    const def = catalogue[n.type]
    let node
    if (def) {
      node = LiteGraph.createNode(n.type)
      const { type, inputs, title, ...rest } = n
      if (Object.keys(rest).length) node.properties.extra = clone(rest)
      if (title) node.title = title
    } else {
      node = LiteGraph.createNode(UNKNOWN_TYPE)
      node.title = n.title || n.type
      node.properties.raw = clone(n)
      for (const [k, v] of Object.entries(n.inputs || {})) if (isLink(v)) node.addInput(k, "*")
      warnings.push(`unknown node type ${n.type} (node ${id}) kept as it is`)
    }
    node.properties.aid = id
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
        const w = node.widgets?.find((x) => x.name === k && !x.isControl)
        if (!w) continue
        w.value = v
        if (fixChoices && w.type === "combo" && w.options.values.length && !w.options.values.includes(v)) {
          warnings.push(`${n.title || def.display_name}: ${k} ${JSON.stringify(v)} is not available, using ${w.options.values[0]}`)
          w.value = w.options.values[0]
        }
      }
      for (const [k, mode] of Object.entries(ui.controls?.[id] || {})) {
        const w = node.widgets?.find((x) => x.name === k)
        if (w?.control) w.control.value = mode
      }
    }
    made[id] = node
  }
  if (!positions) autoLayout(wf, made)
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
  // parameters: their defaults are the values a run uses
  for (const [name, p] of Object.entries(app.doc.parameters)) {
    for (const t of p.targets || []) {
      const dot = t.lastIndexOf(".")
      const node = made[t.slice(0, dot)]
      const w = node?.widgets?.find((x) => x.name === t.slice(dot + 1) && !x.isControl)
      if (!w) {
        warnings.push(`parameter ${name} targets ${t}, which is not a widget on the canvas`)
        continue
      }
      if (p.default !== undefined && p.default !== null) {
        let v = p.default
        if (fixChoices && w.type === "combo" && w.options.values.length && !w.options.values.includes(v)) v = w.options.values[0]
        w.value = v
      } else if (fixChoices && w.type === "combo" && w.options.values.length && !w.options.values.includes(w.value)) {
        w.value = w.options.values[0]
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
