// Atelier's canvas editor: wires the graph library, the catalogue, the panels and the shortcuts together.

import { LGraph, LGraphCanvas, LGraphGroup, LiteGraph } from "litegraph"
import { EventSocket, api } from "./api.js"
import { initGallery, openViewer, refreshGallery } from "./gallery.js"
import { arrangeGraph, fitView, loadIntoGraph, toWorkflow } from "./graphio.js"
import { AtelierNode, findNode, nodeId, refreshChoices, registerCatalogue } from "./nodes.js"
import { exposeWidget, initParams, refreshParams, unexposeWidget } from "./params.js"
import { clearErrors, eventLog, handleEvent, handlePreview, initRunUi, interrupt, queue, queueMany, selectedOutputs } from "./run.js"
import { closeSearch, openSearch, renderPalette } from "./search.js"
import { app, runtimeOf } from "./state.js"
import { h, modal, promptDialog, toast } from "./ui.js"
import { beginDomFrame, endDomFrame, initDomLayer } from "./widgets.js"
import {
  exportApi,
  exportJson,
  importFile,
  initDragAndDrop,
  loadDefault,
  loadFromUrl,
  loadJob,
  newWorkflow,
  openLibrary,
  openWorkflow,
  pickImageFor,
  saveToLibrary,
} from "./workflows.js"

const $ = (id) => document.getElementById(id)
const SESSION_KEY = "atelier.session"

// -- look -------------------------------------------------------------------------------------------

function theme() {
  const font = 'Inter, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif'
  Object.assign(LiteGraph, {
    NODE_TITLE_HEIGHT: 30,
    NODE_TITLE_TEXT_Y: 20,
    NODE_SLOT_HEIGHT: 20,
    NODE_WIDGET_HEIGHT: 22,
    NODE_TEXT_SIZE: 14,
    NODE_SUBTEXT_SIZE: 12,
    NODE_FONT: font,
    DEFAULT_FONT: font,
    GROUP_FONT: font,
    NODE_TITLE_COLOR: "#c9ced6",
    NODE_SELECTED_TITLE_COLOR: "#ffffff",
    NODE_TEXT_COLOR: "#aab1bc",
    NODE_TEXT_HIGHLIGHT_COLOR: "#ffffff",
    NODE_DEFAULT_COLOR: "#2c3038",
    NODE_DEFAULT_BGCOLOR: "#1e2127",
    NODE_DEFAULT_BOXCOLOR: "#6b7280",
    NODE_BOX_OUTLINE_COLOR: "#e8ebf0",
    NODE_ERROR_COLOUR: "#ff5d5d",
    DEFAULT_SHADOW_COLOR: "rgba(0,0,0,0.45)",
    WIDGET_BGCOLOR: "#14161a",
    WIDGET_OUTLINE_COLOR: "#3a3f48",
    WIDGET_TEXT_COLOR: "#e3e6eb",
    WIDGET_SECONDARY_TEXT_COLOR: "#8d94a0",
    LINK_COLOR: "#9aa3b0",
    CONNECTING_LINK_COLOR: "#f2f5fa",
    ROUND_RADIUS: 8,
    release_link_on_empty_shows_menu: true,
    alt_drag_do_clone_nodes: true,
    middle_click_slot_add_default_node: false,
    search_hide_on_mouse_leave: false,
    snaps_for_comfy: true,
    saveViewportWithGraph: false,
    dialog_close_on_mouse_leave: false,
    context_menu_scaling: false,
  })
  LiteGraph.NODE_DEFAULT_SHAPE = LiteGraph.ROUND_SHAPE
}

function gridPattern() {
  const c = document.createElement("canvas")
  c.width = 24
  c.height = 24
  const ctx = c.getContext("2d")
  ctx.fillStyle = "#131519"
  ctx.fillRect(0, 0, 24, 24)
  ctx.fillStyle = "#262a31"
  ctx.fillRect(0, 0, 2, 2)
  return c.toDataURL()
}

// -- canvas -----------------------------------------------------------------------------------------

function makeCanvas() {
  const el = $("graph-canvas")
  const graph = new LGraph()
  const canvas = new LGraphCanvas(el, graph)
  app.graph = graph
  app.canvas = canvas
  canvas.background_image = gridPattern()
  canvas.clear_background_color = "#131519"
  canvas.show_info = false
  canvas.render_canvas_border = false
  canvas.connections_width = 3
  canvas.render_connection_arrows = false
  canvas.allow_searchbox = true
  canvas.round_radius = 8
  canvas.low_quality_zoom_threshold = 0.35
  canvas.default_link_color = LiteGraph.LINK_COLOR
  canvas.showSearchBox = (e, opts) => {
    openSearch(e.clientX, e.clientY, opts || null)
    return null
  }
  canvas.showConnectionMenu = (opt) => {
    const e = opt.e
    if (opt.nodeFrom) openSearch(e.clientX, e.clientY, { node_from: opt.nodeFrom, slot_from: opt.slotFrom, type_filter_in: opt.slotFrom?.type })
    else if (opt.nodeTo) openSearch(e.clientX, e.clientY, { node_to: opt.nodeTo, slot_to: opt.slotTo, type_filter_out: opt.slotTo?.type })
  }
  canvas.getMenuOptions = () => [
    { content: "Search nodes…", callback: (v, o, e) => openSearch(e.clientX, e.clientY) },
    { content: "Add Node", has_submenu: true, callback: LGraphCanvas.onMenuAdd },
    { content: "Add Group", callback: LGraphCanvas.onGroupAdd },
    null,
    { content: "Group selected nodes (Ctrl+G)", disabled: !Object.keys(canvas.selected_nodes).length, callback: groupSelected },
    { content: "Fit view (.)", callback: () => fitView() },
    { content: "Arrange", callback: () => { arrangeGraph(); app.changed() } },
  ]
  // keep DOM widgets (prompt boxes) glued to their nodes
  const drawFront = canvas.drawFrontCanvas.bind(canvas)
  canvas.drawFrontCanvas = function () {
    beginDomFrame()
    drawFront()
    endDomFrame()
  }
  const resize = () => {
    const r = el.parentElement.getBoundingClientRect()
    const dpr = Math.max(window.devicePixelRatio || 1, 1)
    el.width = Math.round(r.width * dpr)
    el.height = Math.round(r.height * dpr)
    el.style.width = `${r.width}px`
    el.style.height = `${r.height}px`
    el.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0)
    canvas.setDirty(true, true)
    canvas.draw(true, true)
  }
  new ResizeObserver(resize).observe(el.parentElement)
  resize()
  el.addEventListener("pointerdown", () => {
    closeSearch()
    if (document.activeElement !== el) el.focus({ preventScroll: true })
  })
  app.setDirty = () => canvas.setDirty(true, true)
  el.addEventListener("litegraph:canvas", async (e) => {
    const group = e.detail?.subType === "group-double-click" ? e.detail.group : null
    if (!group) return
    const t = await promptDialog("Rename group", "Title", group.title, { okLabel: "Rename" })
    if (t) {
      group.title = t
      app.setDirty()
      app.changed()
    }
  })
  canvas.onNodeMoved = () => app.changed()
  graph.onNodeAdded = (node) => {
    // copies keep their workflow id in properties: give them a fresh one
    const id = node.properties?.aid
    if (id == null || graph._nodes.some((n) => n !== node && n.properties?.aid === id)) {
      node.properties ||= {}
      node.properties.aid = freshId(node)
      if (id != null) {
        const r = app.runtime.get(node.properties.aid)
        if (r) app.runtime.delete(node.properties.aid)
      }
    }
  }
  graph.onNodeRemoved = (node) => {
    app.runtime.delete(nodeId(node))
    app.changed()
  }
  return canvas
}

// -- tooltips: what a node, an input or a widget is for (from the catalogue's descriptions) ------------

function tooltipAt(e) {
  const { canvas, graph } = app
  const [x, y] = canvas.convertEventToCanvasOffset(e)
  const node = graph.getNodeOnPos(x, y)
  const def = node && app.catalogue[node.type]
  if (!def) return null
  if (y - node.pos[1] < 0) return def.description ? `${def.display_name || def.type}: ${def.description}` : null
  const w = node.getWidgetOnPos(x, y)
  if (w?.inputSpec) {
    const spec = w.inputSpec
    const range = spec.min != null || spec.max != null ? ` (${spec.min ?? "…"} to ${spec.max ?? "…"})` : ""
    return spec.description ? `${w.name}${range}: ${spec.description}` : range ? `${w.name}${range}` : null
  }
  const found = node.getSlotInPosition?.(x, y)
  if (found?.input) {
    const spec = def.inputs.find((i) => i.name === found.input.name)
    return `${found.input.name} · ${found.input.type}${spec?.optional ? " (optional)" : ""}${spec?.description ? `: ${spec.description}` : ""}`
  }
  if (found?.output) return `${found.output.name} · ${found.output.type}`
  return null
}

function initTooltips(el) {
  const tip = h("div", { class: "tooltip", role: "tooltip" })
  document.body.appendChild(tip)
  let timer = null
  const hide = () => {
    clearTimeout(timer)
    tip.classList.remove("show")
  }
  el.addEventListener("pointermove", (e) => {
    hide()
    if (e.buttons) return
    timer = setTimeout(() => {
      const text = tooltipAt(e)
      if (!text) return
      tip.textContent = text
      tip.style.left = `${Math.min(e.clientX + 14, window.innerWidth - 340)}px`
      tip.style.top = `${e.clientY + 18}px`
      tip.classList.add("show")
    }, 650)
  })
  for (const t of ["pointerleave", "pointerdown", "wheel"]) el.addEventListener(t, hide, { passive: true })
}

function freshId(node) {
  const taken = new Set(app.graph._nodes.map((n) => n.properties?.aid).filter((x) => x != null))
  let n = Math.max(1, Number(node.id) || 1)
  while (taken.has(String(n))) n++
  return String(n)
}

function groupSelected() {
  const nodes = Object.values(app.canvas.selected_nodes)
  if (!nodes.length) {
    toast("Select nodes to group first", "info", 2000)
    return
  }
  const group = new LGraphGroup("Group")
  group.color = "#3f5f8a"
  app.graph.add(group)
  group.resizeTo(nodes, 16)
  app.setDirty()
  app.changed()
}

// -- the node context menu --------------------------------------------------------------------------

function exposedAs(node, widget) {
  const target = `${nodeId(node)}.${widget.name}`
  return Object.entries(app.doc.parameters || {}).find(([, p]) => p.targets?.includes(target))?.[0]
}

async function renameNode(node) {
  const t = await promptDialog("Rename node", "Title", node.title, { okLabel: "Rename" })
  if (t) {
    node.title = t
    app.setDirty()
    app.changed()
  }
}

AtelierNode.prototype.onNodeTitleDblClick = function () {
  renameNode(this)
}

AtelierNode.prototype.getMenuOptions = function () {
  const node = this
  const def = app.catalogue[node.type]
  const opts = []
  const widgets = (node.widgets || []).filter((w) => !w.isControl && w.inputSpec)
  if (widgets.length) {
    opts.push({
      content: "Expose as parameter",
      has_submenu: true,
      submenu: {
        options: widgets.map((w) => {
          const name = exposedAs(node, w)
          return {
            content: name ? `${w.name} — exposed as ${name} (remove)` : w.name,
            callback: () => (name ? unexposeWidget(node, w) : exposeWidget(node, w)),
          }
        }),
      },
    })
  }
  if (def?.output_node) opts.push({ content: "Queue up to this output", callback: () => queue({ outputs: [nodeId(node)] }) })
  const r = app.runtime.get(nodeId(node))
  if (r?.images?.length) {
    opts.push({ content: "Open image", callback: () => openViewer(r.images, r.imageIndex || 0, null) })
    if (r.images.length > 1) {
      opts.push({ content: "Next image", callback: () => { r.imageIndex = ((r.imageIndex || 0) + 1) % r.images.length; app.setDirty() } })
    }
  }
  opts.push(
    null,
    { content: "Rename…", callback: () => renameNode(node) },
    { content: node.collapsed ? "Expand" : "Collapse", callback: () => { node.collapse(); app.changed() } },
    { content: node.pinned ? "Unpin" : "Pin", callback: () => { node.pin(); app.setDirty() } },
    { content: "Colors", has_submenu: true, callback: LGraphCanvas.onMenuNodeColors },
    null,
  )
  return opts
}

// -- changes, undo/redo, session --------------------------------------------------------------------

const history = { undo: [], redo: [], current: null, restoring: false, saved: null }

function snapshot() {
  return JSON.stringify(toWorkflow())
}

function checkpoint() {
  if (history.restoring || !app.ready) return
  const s = snapshot()
  if (s === history.current) return
  if (history.current != null) {
    history.undo.push(history.current)
    if (history.undo.length > 100) history.undo.shift()
    history.redo = []
  }
  history.current = s
  documentChanged()
}

function documentChanged() {
  try {
    localStorage.setItem(SESSION_KEY, JSON.stringify({ workflow: history.current, savedAs: app.savedAs ?? "" }))
  } catch {
    // storage full or unavailable: the session is simply not kept
  }
  refreshParams()
  const name = app.doc.metadata?.name || ""
  if (document.activeElement !== $("wf-name")) $("wf-name").value = name
  $("wf-modified").classList.toggle("on", history.current !== history.saved)
  app.baseTitle = `${name || "Untitled"}${history.current !== history.saved ? " •" : ""} — Atelier`
  app.updateTitle()
  $("btn-undo").disabled = !history.undo.length
  $("btn-redo").disabled = !history.redo.length
}

function restore(s) {
  history.restoring = true
  try {
    loadIntoGraph(JSON.parse(s), { keepView: true })
  } finally {
    history.restoring = false
  }
  settle()
  history.current = snapshot()
  refreshParams(true)
  documentChanged()
}

/** draw once so that nodes take their final sizes (widgets may grow them) before a snapshot */
function settle() {
  try {
    app.canvas.draw(true, true)
  } catch (err) {
    console.warn(err)
  }
}

function undo() {
  checkpoint() // a change not recorded yet (its event is still on its way) is the state we leave
  if (!history.undo.length) return
  history.redo.push(history.current)
  restore(history.undo.pop())
}

function redo() {
  checkpoint()
  if (!history.redo.length) return
  history.undo.push(history.current)
  restore(history.redo.pop())
}

app.changed = () => setTimeout(checkpoint, 0)
app.updateTitle = () => {
  document.title = app.runProgress != null ? `[${Math.round(app.runProgress * 100)}%] ${app.baseTitle || "Atelier"}` : app.baseTitle || "Atelier"
}
app.markSaved = () => {
  checkpoint()
  history.saved = history.current
  documentChanged()
}
app.afterLoad = () => {
  // a freshly loaded workflow starts a new history
  history.undo = []
  history.redo = []
  settle()
  history.current = snapshot()
  history.saved = history.current
  refreshParams(true)
  documentChanged()
}
app.onWidgetChanged = (node, widget) => {
  // a parameter with several targets keeps them equal
  if (node && widget && !widget.isControl) {
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
  app.setDirty()
  app.changed()
}
app.loadFromUrl = loadFromUrl
app.pickImageFor = pickImageFor
app.loadJob = loadJob
app.openViewer = (images, i) => openViewer(images, i, null)
app.history = history

// -- keyboard ---------------------------------------------------------------------------------------

function batchCount() {
  const n = Math.round(Number($("batch-count").value))
  return Number.isFinite(n) ? Math.min(Math.max(n, 1), 100) : 1
}

const SHORTCUTS = [
  ["Ctrl+Enter", "Queue the workflow"],
  ["Ctrl+Shift+Enter", "Queue in front of the others"],
  ["Ctrl+Alt+Enter", "Queue the selected output nodes only"],
  ["Double-click", "Search nodes to add"],
  ["/", "Search nodes to add"],
  ["Drag from a socket", "Connect; drop on empty canvas to add a matching node"],
  ["Ctrl+Z / Ctrl+Y", "Undo / redo"],
  ["Ctrl+C / Ctrl+V", "Copy / paste selected nodes (Ctrl+Shift+V keeps input links)"],
  ["Delete", "Delete the selection"],
  ["Ctrl+A", "Select all"],
  ["Ctrl+G", "Group the selected nodes"],
  ["Alt+C", "Collapse or expand the selected nodes"],
  ["Alt+drag", "Clone a node"],
  ["Space+drag, drag the background", "Pan"],
  ["Wheel", "Zoom"],
  [".", "Fit the workflow in view"],
  ["Ctrl+S / Ctrl+Shift+S", "Save / save as in the library"],
  ["Ctrl+O", "Open from the library"],
  ["?", "This list"],
]

function showShortcuts() {
  modal({
    title: "Keyboard shortcuts",
    wide: true,
    body: h("table", { class: "shortcuts" }, SHORTCUTS.map(([k, v]) => h("tr", {}, h("td", {}, h("kbd", {}, k)), h("td", {}, v)))),
  })
}

function isTyping(e) {
  const t = e.target
  return t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))
}

function onKeyDown(e) {
  const mod = e.ctrlKey || e.metaKey
  if (mod && e.key === "Enter") {
    e.preventDefault()
    if (e.altKey) {
      const outs = selectedOutputs()
      if (!outs.length) toast("Select one or more output nodes (Save Image, Preview Image) first", "info")
      else queue({ outputs: outs })
    } else {
      queueMany(batchCount(), { front: e.shiftKey })
    }
    return
  }
  if (mod && e.key.toLowerCase() === "s") {
    e.preventDefault()
    saveToLibrary({ askName: e.shiftKey })
    return
  }
  if (mod && e.key.toLowerCase() === "o") {
    e.preventDefault()
    openLibrary()
    return
  }
  if (isTyping(e) || document.querySelector(".modal-backdrop")) return
  if (mod && !e.shiftKey && e.key.toLowerCase() === "z") {
    e.preventDefault()
    undo()
  } else if (mod && (e.key.toLowerCase() === "y" || (e.shiftKey && e.key.toLowerCase() === "z"))) {
    e.preventDefault()
    redo()
  } else if (mod && e.key.toLowerCase() === "g") {
    e.preventDefault()
    groupSelected()
  } else if (e.altKey && e.key.toLowerCase() === "c") {
    e.preventDefault()
    for (const n of Object.values(app.canvas.selected_nodes)) n.collapse()
    app.changed()
  } else if (e.key === "." && !mod) {
    fitView()
  } else if (e.key === "Escape") {
    closeSearch()
    clearErrors()
  } else if (e.key === "?" && !mod) {
    showShortcuts()
  } else if (e.key === "/" && !mod) {
    e.preventDefault()
    const r = app.canvas.canvas.getBoundingClientRect()
    openSearch(r.left + r.width / 2 - 200, r.top + 80)
  }
}

// -- toolbar ----------------------------------------------------------------------------------------

function initToolbar() {
  $("btn-queue").addEventListener("click", () => queueMany(batchCount()))
  $("btn-interrupt").addEventListener("click", interrupt)
  $("btn-new").addEventListener("click", newWorkflow)
  $("btn-open").addEventListener("click", openLibrary)
  $("btn-save").addEventListener("click", () => saveToLibrary())
  $("btn-undo").addEventListener("click", undo)
  $("btn-redo").addEventListener("click", redo)
  $("wf-name").addEventListener("change", () => {
    app.doc.metadata.name = $("wf-name").value.trim()
    app.changed()
  })
  const fileInput = $("file-input")
  fileInput.addEventListener("change", async () => {
    const f = fileInput.files?.[0]
    fileInput.value = ""
    if (f) await importFile(f)
  })
  const menuActions = {
    "save-as": () => saveToLibrary({ askName: true }),
    import: () => fileInput.click(),
    "export-json": exportJson,
    "export-api": exportApi,
    default: loadDefault,
    "queue-front": () => queue({ front: true }),
    "queue-selected": () => {
      const outs = selectedOutputs()
      if (!outs.length) toast("Select one or more output nodes (Save Image, Preview Image) first", "info")
      else queue({ outputs: outs })
    },
    shortcuts: showShortcuts,
    "clear-history": async () => {
      const data = await api.history(200)
      await Promise.all(data.jobs.map((j) => api.deleteJob(j.id).catch(() => null)))
      refreshGallery()
    },
  }
  for (const dd of document.querySelectorAll(".dropdown")) {
    const btn = dd.querySelector(".dropdown-toggle")
    btn.addEventListener("click", (e) => {
      e.stopPropagation()
      const open = dd.classList.contains("open")
      for (const o of document.querySelectorAll(".dropdown.open")) o.classList.remove("open")
      dd.classList.toggle("open", !open)
    })
  }
  document.addEventListener("click", (e) => {
    const item = e.target.closest?.("[data-action]")
    if (item) {
      menuActions[item.dataset.action]?.()
    }
    for (const o of document.querySelectorAll(".dropdown.open")) o.classList.remove("open")
  })
  $("btn-refresh").addEventListener("click", async () => {
    try {
      app.catalogue = await api.nodes()
      registerCatalogue(app.catalogue)
      refreshChoices(app.catalogue)
      app.rebuildPalette?.()
      refreshParams(true)
      app.setDirty()
      toast("Node definitions and model lists refreshed", "success", 2000)
    } catch (err) {
      toast(err.message, "error")
    }
  })
  $("zoom-in").addEventListener("click", () => zoomBy(1.2))
  $("zoom-out").addEventListener("click", () => zoomBy(1 / 1.2))
  $("zoom-fit").addEventListener("click", () => fitView())
}

function zoomBy(f) {
  const c = app.canvas
  const el = c.canvas
  c.ds.changeScale(c.ds.scale * f, [el.clientWidth / 2, el.clientHeight / 2])
  c.setDirty(true, true)
}

function initSidebars() {
  app.rebuildPalette = renderPalette($("palette"), $("palette-filter"))
  initParams($("params"))
  initGallery($("queue-list"), $("gallery"))
  for (const btn of document.querySelectorAll("[data-collapse]")) {
    btn.addEventListener("click", () => {
      document.body.classList.toggle(`hide-${btn.dataset.collapse}`)
      setTimeout(() => app.canvas.draw(true, true), 0)
    })
  }
}

// -- start ------------------------------------------------------------------------------------------

async function start() {
  theme()
  initDomLayer($("dom-widgets"))
  makeCanvas()
  initToolbar()
  initRunUi()
  document.addEventListener("keydown", onKeyDown)
  // a change made just before leaving is kept too
  window.addEventListener("pagehide", () => checkpoint())
  document.addEventListener("pointerup", () => app.changed())
  document.addEventListener("keyup", (e) => {
    if (!isTyping(e)) app.changed()
  })
  initDragAndDrop($("canvas-wrap"))
  initTooltips($("graph-canvas"))
  try {
    app.catalogue = await api.nodes()
  } catch (err) {
    toast(`Cannot reach the server: ${err.message}`, "error", 0)
    return
  }
  registerCatalogue(app.catalogue)
  initSidebars()
  new EventSocket({
    onEvent: handleEvent,
    onPreview: handlePreview,
    onStatus: (up) => {
      $("conn-dot").classList.toggle("up", up)
      $("conn-dot").title = up ? "Connected to the server" : "Disconnected: reconnecting…"
    },
  })
  app.ready = true
  let session = null
  try {
    session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null")
  } catch {
    session = null
  }
  if (session?.workflow) {
    app.savedAs = session.savedAs || ""
    if (!openWorkflow(JSON.parse(session.workflow), { source: "the last session" })) await loadDefault()
  } else {
    await loadDefault()
  }
  document.body.classList.add("ready")
}

// for people poking around in the console, and for the browser tests
window.atelier = {
  app,
  toWorkflow,
  findNode,
  queue,
  runtimeOf,
  eventLog,
  undo,
  redo,
  /** screen position of a node's input or output socket */
  slotPos(id, kind, name) {
    const node = findNode(id)
    if (!node) return null
    const i = (kind === "input" ? node.inputs : node.outputs).findIndex((s) => s.name === name)
    if (i < 0) return null
    const p = kind === "input" ? node.getInputPos(i) : node.getOutputPos(i)
    const c = app.canvas
    const [x, y] = c.ds.convertOffsetToCanvas(p)
    const r = c.canvas.getBoundingClientRect()
    return { x: r.left + x, y: r.top + y }
  },
  /** screen rectangle of a node (title bar included) */
  nodeRect(id) {
    const node = findNode(id)
    if (!node) return null
    const c = app.canvas
    const r = c.canvas.getBoundingClientRect()
    const [x, y] = c.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT])
    const s = c.ds.scale
    return { x: r.left + x, y: r.top + y, width: node.size[0] * s, height: (node.size[1] + LiteGraph.NODE_TITLE_HEIGHT) * s, titleHeight: LiteGraph.NODE_TITLE_HEIGHT * s }
  },
  /** screen rectangle of a widget row */
  widgetRect(id, name) {
    const node = findNode(id)
    const w = node?.widgets?.find((x) => x.name === name)
    if (!w) return null
    const c = app.canvas
    const r = c.canvas.getBoundingClientRect()
    const [x, y] = c.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] + (w.y ?? 0)])
    const s = c.ds.scale
    return { x: r.left + x, y: r.top + y, width: node.size[0] * s, height: (w.computedHeight || 24) * s }
  },
  h,
}

start()
