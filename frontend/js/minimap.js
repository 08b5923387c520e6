// @ts-check
// The minimap: a small overview of the whole workflow in the canvas's corner, with the visible part
// framed. Click or drag in it to move the view there. Redrawn at most once a frame, after the canvas draws.

import { LiteGraph } from "litegraph"
import { addCanvasSetting } from "./linkstyle.js"
import { BYPASS, NEVER } from "./modes.js"
import { app } from "./state.js"

const KEY = "atelier.minimap"
const W = 220
const H = 150
const PAD = 6

/** @typedef {{x0: number, y0: number, scale: number, ox: number, oy: number}} MapFrame */

/** @type {HTMLCanvasElement | null} */
let el = null
/** @type {MapFrame | null} */
let frame = null
let scheduled = false

/** The graph's extent and the visible area, together: what the map shows. */
function bounds() {
  const c = app.canvas
  const v = c.visible_area
  let x0 = v[0]
  let y0 = v[1]
  let x1 = v[0] + v[2]
  let y1 = v[1] + v[3]
  const th = LiteGraph.NODE_TITLE_HEIGHT
  for (const n of app.graph._nodes) {
    x0 = Math.min(x0, n.pos[0])
    y0 = Math.min(y0, n.pos[1] - th)
    x1 = Math.max(x1, n.pos[0] + n.size[0])
    y1 = Math.max(y1, n.pos[1] + n.size[1])
  }
  return [x0, y0, x1, y1]
}

/** Draw the map now. */
export function drawMinimap() {
  scheduled = false
  if (!el || el.hidden || !app.graph) return
  const ctx = el.getContext("2d")
  if (!ctx) return
  const dpr = Math.max(window.devicePixelRatio || 1, 1)
  if (el.width !== W * dpr) {
    el.width = W * dpr
    el.height = H * dpr
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
  ctx.clearRect(0, 0, W, H)
  const [x0, y0, x1, y1] = bounds()
  const scale = Math.min((W - PAD * 2) / Math.max(x1 - x0, 1), (H - PAD * 2) / Math.max(y1 - y0, 1))
  const ox = PAD + (W - PAD * 2 - (x1 - x0) * scale) / 2
  const oy = PAD + (H - PAD * 2 - (y1 - y0) * scale) / 2
  frame = { x0, y0, scale, ox, oy }
  const th = LiteGraph.NODE_TITLE_HEIGHT
  for (const g of app.graph._groups) {
    const b = g._bounding
    ctx.fillStyle = g.color || "#3f789e"
    ctx.globalAlpha = 0.25
    ctx.fillRect(ox + (b[0] - x0) * scale, oy + (b[1] - y0) * scale, b[2] * scale, b[3] * scale)
  }
  ctx.globalAlpha = 1
  for (const n of app.graph._nodes) {
    const h = n.collapsed ? th : n.size[1] + th
    const w = n.collapsed ? n._collapsed_width || 120 : n.size[0]
    ctx.fillStyle = n.mode === BYPASS ? "#9b4dca" : n.mode === NEVER ? "#3a3d44" : n.color || "#5b6270"
    if (n.selected) ctx.fillStyle = "#e8ebf0"
    ctx.fillRect(ox + (n.pos[0] - x0) * scale, oy + (n.pos[1] - th - y0) * scale, Math.max(w * scale, 1.5), Math.max(h * scale, 1.5))
  }
  const v = app.canvas.visible_area
  ctx.strokeStyle = "#f2f5fa"
  ctx.lineWidth = 1.5
  ctx.strokeRect(ox + (v[0] - x0) * scale, oy + (v[1] - y0) * scale, v[2] * scale, v[3] * scale)
}

/** Redraw the map once, before the next frame. */
export function scheduleMinimap() {
  if (scheduled || !el || el.hidden) return
  scheduled = true
  requestAnimationFrame(drawMinimap)
}

/**
 * Center the canvas view on the graph point under a point of the map.
 * @param {number} mx
 * @param {number} my map coordinates (CSS pixels)
 */
function centerAt(mx, my) {
  if (!frame) return
  const gx = frame.x0 + (mx - frame.ox) / frame.scale
  const gy = frame.y0 + (my - frame.oy) / frame.scale
  const c = app.canvas
  const s = c.ds.scale
  c.ds.offset = [c.canvas.clientWidth / (2 * s) - gx, c.canvas.clientHeight / (2 * s) - gy]
  c.setDirty(true, true)
}

/**
 * Show or hide the map, and remember it.
 * @param {boolean} on
 */
export function showMinimap(on) {
  if (!el) return
  el.hidden = !on
  try {
    localStorage.setItem(KEY, on ? "1" : "0")
  } catch {
    // the choice lasts for this page
  }
  if (on) drawMinimap()
}

/**
 * Put the map into the canvas's frame.
 * @param {HTMLElement} wrap the element around the canvas
 */
export function initMinimap(wrap) {
  el = document.createElement("canvas")
  el.id = "minimap"
  el.className = "minimap"
  el.style.width = `${W}px`
  el.style.height = `${H}px`
  el.title = "Overview: click or drag to move the view"
  wrap.append(el)
  let stored = null
  try {
    stored = localStorage.getItem(KEY)
  } catch {
    stored = null
  }
  el.hidden = stored === "0"
  /** @param {PointerEvent} e */
  const at = (e) => {
    const r = /** @type {HTMLCanvasElement} */ (el).getBoundingClientRect()
    centerAt(e.clientX - r.left, e.clientY - r.top)
  }
  el.addEventListener("pointerdown", (e) => {
    e.stopPropagation()
    e.preventDefault()
    el?.setPointerCapture(e.pointerId)
    at(e)
  })
  el.addEventListener("pointermove", (e) => {
    if (el?.hasPointerCapture(e.pointerId)) at(e)
  })
  el.addEventListener("pointerup", (e) => el?.releasePointerCapture(e.pointerId))
  el.addEventListener("wheel", (e) => e.preventDefault(), { passive: false })
  const c = app.canvas
  const drawFront = c.drawFrontCanvas.bind(c)
  c.drawFrontCanvas = function () {
    drawFront()
    scheduleMinimap()
  }
  addCanvasSetting(() => [{ content: `${el?.hidden ? "" : "● "}Minimap`, callback: () => showMinimap(!!el?.hidden) }])
  drawMinimap()
}
