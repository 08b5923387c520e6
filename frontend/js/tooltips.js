// @ts-check
// Tooltips on the canvas: what a node, an input or a widget is for (from the catalogue's descriptions).

import { app } from "./state.js"
import { h } from "./ui.js"

/**
 * The tooltip for what is under the pointer, or null.
 * @param {MouseEvent} e
 */
function tooltipAt(e) {
  const { canvas, graph } = app
  const [x, y] = canvas.convertEventToCanvasOffset(e)
  const node = graph.getNodeOnPos(x, y)
  const def = node && app.catalogue[node.type]
  if (!def) return null
  if (y - node.pos[1] < 0) return def.description ? `${def.display_name || def.type}: ${def.description}` : null
  /** @type {import("./widgets.js").AtelierWidget | undefined} */
  const w = node.getWidgetOnPos(x, y)
  if (w?.inputSpec) {
    const spec = w.inputSpec
    const range = spec.min != null || spec.max != null ? ` (${spec.min ?? "…"} to ${spec.max ?? "…"})` : ""
    return spec.description ? `${w.name}${range}: ${spec.description}` : range ? `${w.name}${range}` : null
  }
  const found = node.getSlotInPosition?.(x, y)
  const input = found?.input
  if (input) {
    const spec = def.inputs.find((i) => i.name === input.name)
    return `${input.name} · ${input.type}${spec?.optional ? " (optional)" : ""}${spec?.description ? `: ${spec.description}` : ""}`
  }
  if (found?.output) return `${found.output.name} · ${found.output.type}`
  return null
}

/** @param {HTMLElement} el the canvas */
export function initTooltips(el) {
  const tip = h("div", { class: "tooltip", role: "tooltip" })
  document.body.appendChild(tip)
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer
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
