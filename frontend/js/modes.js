// @ts-check
// Bypass and mute (ComfyUI's Ctrl+B and Ctrl+M): a node's mode, drawn on the canvas (a purple tint for
// bypassed nodes, greyed for muted ones), toggled from the keyboard or the node menu, kept in the workflow
// as the node's "mode" ("bypass" | "mute"; active nodes carry none). The engine resolves them
// (engine/modes.py): a bypassed node passes the input of each output's type through, a muted one does not run.

import { LGraphCanvas, LiteGraph } from "litegraph"
import { app } from "./state.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */

// litegraph's LGraphEventMode values, as ComfyUI's frontend stores them
export const ALWAYS = 0
export const NEVER = 2
export const BYPASS = 4

/** @type {Record<string, number>} */
const FROM_WORKFLOW = { bypass: BYPASS, mute: NEVER }

/**
 * The workflow's name for a canvas node's mode, or null for an active node.
 * @param {LGraphNode} node
 * @returns {"bypass" | "mute" | null}
 */
export function workflowMode(node) {
  if (node.mode === BYPASS) return "bypass"
  if (node.mode === NEVER) return "mute"
  return null
}

/**
 * Set a canvas node's mode from a workflow node's "mode" field (unknown values leave it active).
 * @param {LGraphNode} node
 * @param {unknown} mode
 */
export function applyWorkflowMode(node, mode) {
  node.mode = /** @type {import("litegraph").LGraphEventMode} */ (typeof mode === "string" && FROM_WORKFLOW[mode] ? FROM_WORKFLOW[mode] : ALWAYS)
}

/**
 * Toggle a mode on nodes: when all of them have it they go back to active, else all of them take it
 * (ComfyUI's rule for a mixed selection). Recorded as one undo step.
 * @param {LGraphNode[]} nodes
 * @param {number} mode BYPASS or NEVER
 */
export function toggleMode(nodes, mode) {
  if (!nodes.length) return
  const to = nodes.every((n) => n.mode === mode) ? ALWAYS : mode
  for (const n of nodes) n.mode = /** @type {import("litegraph").LGraphEventMode} */ (to)
  app.setDirty()
  app.changed()
}

/** @returns {LGraphNode[]} */
function selected() {
  return Object.values(app.canvas?.selected_nodes || {})
}

/**
 * Ctrl+B / Ctrl+M on the selected nodes. Returns whether the key was one of them.
 * @param {KeyboardEvent} e
 */
export function modeShortcut(e) {
  const mod = e.ctrlKey || e.metaKey
  if (!mod || e.shiftKey || e.altKey) return false
  const key = e.key.toLowerCase()
  if (key !== "b" && key !== "m") return false
  e.preventDefault()
  toggleMode(selected(), key === "b" ? BYPASS : NEVER)
  return true
}

/**
 * Node menu entries for a node (or the selection it belongs to).
 * @param {LGraphNode} node
 * @returns {import("litegraph").IContextMenuValue[]}
 */
export function modeMenuEntries(node) {
  const nodes = node.selected && selected().length > 1 ? selected() : [node]
  return [
    { content: node.mode === BYPASS ? "Stop bypassing (Ctrl+B)" : "Bypass (Ctrl+B)", callback: () => toggleMode(nodes, BYPASS) },
    { content: node.mode === NEVER ? "Unmute (Ctrl+M)" : "Mute (Ctrl+M)", callback: () => toggleMode(nodes, NEVER) },
  ]
}

/** Draw bypassed nodes tinted purple and muted ones greyed, over what litegraph draws. */
export function installModeDrawing() {
  const draw = LGraphCanvas.prototype.drawNode
  LGraphCanvas.prototype.drawNode = function (node, ctx) {
    if (node.mode !== BYPASS && node.mode !== NEVER) {
      draw.call(this, node, ctx)
      return
    }
    const alpha = this.editor_alpha
    if (node.mode === NEVER) this.editor_alpha = alpha * 0.45
    try {
      draw.call(this, node, ctx)
    } finally {
      this.editor_alpha = alpha
    }
    const th = LiteGraph.NODE_TITLE_HEIGHT
    const w = node.collapsed ? node._collapsed_width || 120 : node.size[0]
    const h = node.collapsed ? 0 : node.size[1]
    ctx.save()
    ctx.fillStyle = node.mode === BYPASS ? "rgba(190, 60, 255, 0.28)" : "rgba(14, 16, 20, 0.55)"
    ctx.beginPath()
    ctx.roundRect(0, -th, w, h + th, 8)
    ctx.fill()
    ctx.restore()
  }
}
