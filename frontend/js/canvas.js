// @ts-check
// The canvas: the graph library's look, the LGraphCanvas and how it hooks into the rest of the editor.

import { LGraph, LGraphCanvas, LGraphGroup, LGraphNode, LiteGraph } from "litegraph"
import { arrangeGraph, fitView } from "./graphio.js"
import { nodeId } from "./nodes.js"
import { closeSearch, openSearch, slotType } from "./search.js"
import { app } from "./state.js"
import { promptDialog, toast } from "./ui.js"
import { beginDomFrame, endDomFrame } from "./widgets.js"

// -- look -------------------------------------------------------------------------------------------

export function theme() {
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
  if (!ctx) return "" // no grid then
  ctx.fillStyle = "#131519"
  ctx.fillRect(0, 0, 24, 24)
  ctx.fillStyle = "#262a31"
  ctx.fillRect(0, 0, 2, 2)
  return c.toDataURL()
}

// -- canvas -----------------------------------------------------------------------------------------

/**
 * The graph and its canvas on the page's <canvas> (app.graph, app.canvas).
 * @param {HTMLCanvasElement} el
 */
export function makeCanvas(el) {
  const wrap = el.parentElement
  if (!wrap) throw new Error("the canvas needs an element around it to take its size from")
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
  // our search box instead of litegraph's (double-click the canvas, or drop a link on empty space)
  canvas.showSearchBox = (e, opts) => openSearch(e.clientX, e.clientY, opts || null)
  canvas.showConnectionMenu = (opt) => {
    const e = opt.e
    if (!e) return
    if (opt.nodeFrom instanceof LGraphNode) openSearch(e.clientX, e.clientY, { node_from: opt.nodeFrom, slot_from: opt.slotFrom, type_filter_in: slotType(opt.slotFrom) })
    else if (opt.nodeTo instanceof LGraphNode) openSearch(e.clientX, e.clientY, { node_to: opt.nodeTo, slot_to: opt.slotTo, type_filter_out: slotType(opt.slotTo) })
  }
  canvas.getMenuOptions = () => {
    /** @type {(import("litegraph").IContextMenuValue<string> | null)[]} */
    const entries = [
      { content: "Search nodes…", callback: (v, o, e) => { if (e) openSearch(e.clientX, e.clientY) } },
      { content: "Add Node", has_submenu: true, callback: LGraphCanvas.onMenuAdd },
      { content: "Add Group", callback: LGraphCanvas.onGroupAdd },
      null,
      { content: "Group selected nodes (Ctrl+G)", disabled: !Object.keys(canvas.selected_nodes).length, callback: groupSelected },
      { content: "Fit view (.)", callback: () => fitView() },
      { content: "Arrange", callback: () => { arrangeGraph(); app.changed() } },
    ]
    return menu(entries)
  }
  // keep DOM widgets (prompt boxes) glued to their nodes
  const drawFront = canvas.drawFrontCanvas.bind(canvas)
  canvas.drawFrontCanvas = function () {
    beginDomFrame()
    drawFront()
    endDomFrame()
  }
  const resize = () => {
    const r = wrap.getBoundingClientRect()
    const dpr = Math.max(window.devicePixelRatio || 1, 1)
    el.width = Math.round(r.width * dpr)
    el.height = Math.round(r.height * dpr)
    el.style.width = `${r.width}px`
    el.style.height = `${r.height}px`
    el.getContext("2d")?.setTransform(dpr, 0, 0, dpr, 0, 0)
    canvas.setDirty(true, true)
    canvas.draw(true, true)
  }
  new ResizeObserver(resize).observe(wrap)
  resize()
  el.addEventListener("pointerdown", () => {
    closeSearch()
    if (document.activeElement !== el) el.focus({ preventScroll: true })
  })
  app.setDirty = () => canvas.setDirty(true, true)
  el.addEventListener("litegraph:canvas", async (/** @type {Event} */ e) => {
    const detail = e instanceof CustomEvent ? /** @type {import("litegraph").LiteGraphCanvasEvent["detail"]} */ (e.detail) : null
    const group = detail?.subType === "group-double-click" ? detail.group : null
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
    if (id == null || app.graph._nodes.some((n) => n !== node && n.properties?.aid === id)) {
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

/**
 * A workflow id no node on the canvas has, near the node's litegraph id.
 * @param {LGraphNode} node
 */
function freshId(node) {
  const taken = new Set(app.graph._nodes.map((n) => n.properties?.aid).filter((x) => x != null))
  let n = Math.max(1, Number(node.id) || 1)
  while (taken.has(String(n))) n++
  return String(n)
}

/**
 * Context menu entries for litegraph: null entries are separators, which its ContextMenu draws though
 * the hooks' declared types leave them out.
 * @template T
 * @param {(T | null)[]} entries
 * @returns {T[]}
 */
export function menu(entries) {
  return /** @type {T[]} */ (entries)
}

export function groupSelected() {
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

/**
 * Zoom around the middle of the canvas.
 * @param {number} f
 */
export function zoomBy(f) {
  const c = app.canvas
  const el = c.canvas
  c.ds.changeScale(c.ds.scale * f, [el.clientWidth / 2, el.clientHeight / 2])
  c.setDirty(true, true)
}
