// @ts-check
// The range a number may take where it is typed (a node's number widget, a field of the parameters panel):
// the node input's limits, narrowed by those of a workflow parameter that sets it. A value outside is refused
// with a message saying why; it is never clamped silently.

import { app } from "./state.js"

/** @typedef {{min?: number, max?: number}} Limits */

/**
 * The narrower of two ranges.
 * @param {Limits} a
 * @param {Limits} b
 * @returns {Limits}
 */
export function narrow(a, b) {
  /** @type {Limits} */
  const out = {}
  const mins = [a.min, b.min].filter((x) => typeof x === "number")
  const maxs = [a.max, b.max].filter((x) => typeof x === "number")
  if (mins.length) out.min = Math.max(...mins)
  if (maxs.length) out.max = Math.min(...maxs)
  return out
}

/**
 * The limits of a node's number input: the catalogue's, narrowed by the parameters that target it.
 * @param {import("litegraph").LGraphNode} node
 * @param {{name: string, inputSpec?: {min?: number, max?: number}}} widget
 * @returns {Limits}
 */
export function inputLimits(node, widget) {
  const spec = widget.inputSpec || {}
  let limits = narrow({}, { min: spec.min, max: spec.max })
  const target = `${node.properties?.aid}.${widget.name}`
  for (const p of Object.values(app.doc.parameters || {})) {
    if (p.targets?.includes(target)) limits = narrow(limits, { min: p.min, max: p.max })
  }
  return limits
}

/**
 * Why a typed value is refused (null: it is taken).
 * @param {string} label what the value is for ("steps")
 * @param {number} value
 * @param {Limits} limits
 */
export function refusal(label, value, { min, max }) {
  if (!Number.isFinite(value)) return `${label}: not a number`
  if (min != null && value < min) return `${label}: ${value} is below the minimum ${min}`
  if (max != null && value > max) return `${label}: ${value} is above the maximum ${max}`
  return null
}
