// @ts-check
// How links are drawn (spline, linear, straight or hidden), chosen in the canvas menu's "Canvas" submenu
// and remembered in localStorage; that submenu also holds the other canvas settings (the minimap's switch).

import { LiteGraph } from "litegraph"
import { app } from "./state.js"

/** @typedef {import("litegraph").IContextMenuValue<string>} MenuEntry */

const KEY = "atelier.linkStyle"

/** @type {Record<string, () => number>} litegraph's LinkRenderType values by our names */
const STYLES = {
  spline: () => LiteGraph.SPLINE_LINK,
  linear: () => LiteGraph.LINEAR_LINK,
  straight: () => LiteGraph.STRAIGHT_LINK,
  hidden: () => LiteGraph.HIDDEN_LINK,
}
export const LINK_STYLES = Object.keys(STYLES)

/** The link style in use. */
export function linkStyle() {
  const mode = app.canvas?.links_render_mode
  return LINK_STYLES.find((s) => STYLES[s]() === mode) || "spline"
}

/**
 * Draw links in a style (one of LINK_STYLES) and remember it.
 * @param {string} style
 */
export function setLinkStyle(style) {
  if (!STYLES[style]) return
  app.canvas.links_render_mode = STYLES[style]()
  try {
    localStorage.setItem(KEY, style)
  } catch {
    // storage refused (private mode): the choice lasts for this page
  }
  app.canvas.setDirty(true, true)
}

/** @type {(() => MenuEntry[])[]} */
const settingEntries = []

/**
 * Add entries to the canvas menu's "Canvas" submenu (built afresh each time it opens).
 * @param {() => MenuEntry[]} entries
 */
export function addCanvasSetting(entries) {
  settingEntries.push(entries)
}

/** Take the remembered link style, and put the "Canvas" submenu into the canvas's context menu. */
export function initLinkStyle() {
  let saved = null
  try {
    saved = localStorage.getItem(KEY)
  } catch {
    saved = null
  }
  if (saved && STYLES[saved]) app.canvas.links_render_mode = STYLES[saved]()
  const canvas = app.canvas
  const original = canvas.getMenuOptions
  const base = () => original?.call(canvas) || []
  canvas.getMenuOptions = () => {
    const current = linkStyle()
    /** @type {MenuEntry[]} */
    const links = LINK_STYLES.map((s) => ({ content: `${s === current ? "● " : ""}${s[0].toUpperCase()}${s.slice(1)} links`, callback: () => setLinkStyle(s) }))
    /** @type {MenuEntry[]} */
    const options = [...links, ...settingEntries.flatMap((f) => f())]
    return [...base(), /** @type {MenuEntry} */ (/** @type {unknown} */ (null)), { content: "Canvas", has_submenu: true, submenu: { options } }]
  }
}
