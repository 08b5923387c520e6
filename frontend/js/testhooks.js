// @ts-check
// What the page exposes as `window.atelier`: for people poking around in the console, and for the
// browser tests (tests/browser), which read the graph and find where things are on the screen with it.

import { LiteGraph } from "litegraph"
import { toWorkflow } from "./graphio.js"
import { redo, undo } from "./history.js"
import { findNode } from "./nodes.js"
import { eventLog, queue } from "./run.js"
import { app, runtimeOf } from "./state.js"
import { h } from "./ui.js"

export function exposeTestHooks() {
  const hooks = {
    app,
    toWorkflow,
    findNode,
    queue,
    runtimeOf,
    eventLog,
    undo,
    redo,
    slotPos,
    nodeRect,
    widgetRect,
    h,
  }
  Object.assign(window, { atelier: hooks })
}

/**
 * screen position of a node's input or output socket
 * @param {string} id workflow node id
 * @param {"input" | "output"} kind
 * @param {string} name
 */
function slotPos(id, kind, name) {
  const node = findNode(id)
  if (!node) return null
  /** @type {{name: string}[]} */
  const slots = kind === "input" ? node.inputs : node.outputs
  const i = slots.findIndex((s) => s.name === name)
  if (i < 0) return null
  const p = kind === "input" ? node.getInputPos(i) : node.getOutputPos(i)
  const c = app.canvas
  const [x, y] = c.ds.convertOffsetToCanvas(p)
  const r = c.canvas.getBoundingClientRect()
  return { x: r.left + x, y: r.top + y }
}

/**
 * screen rectangle of a node (title bar included)
 * @param {string} id workflow node id
 */
function nodeRect(id) {
  const node = findNode(id)
  if (!node) return null
  const c = app.canvas
  const r = c.canvas.getBoundingClientRect()
  const [x, y] = c.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT])
  const s = c.ds.scale
  return { x: r.left + x, y: r.top + y, width: node.size[0] * s, height: (node.size[1] + LiteGraph.NODE_TITLE_HEIGHT) * s, titleHeight: LiteGraph.NODE_TITLE_HEIGHT * s }
}

/**
 * screen rectangle of a widget row
 * @param {string} id workflow node id
 * @param {string} name
 */
function widgetRect(id, name) {
  const node = findNode(id)
  const w = node?.widgets?.find((x) => x.name === name)
  if (!node || !w) return null
  const c = app.canvas
  const r = c.canvas.getBoundingClientRect()
  const [x, y] = c.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] + (w.y ?? 0)])
  const s = c.ds.scale
  return { x: r.left + x, y: r.top + y, width: node.size[0] * s, height: (w.computedHeight || 24) * s }
}
