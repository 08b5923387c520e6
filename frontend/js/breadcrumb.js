// @ts-check
// The breadcrumb bar over the canvas while a pipeline is open inside: "Workflow › face detail", each step a
// button back out to that level.

import { h } from "./ui.js"

/**
 * One step of the breadcrumb: its label, and what clicking it does (the last step, where the canvas is,
 * has none).
 * @typedef {{label: string, onClick?: () => void}} Crumb
 */

/**
 * Show the steps in the bar (made inside `parent` the first time); no steps beyond the first hide it.
 * @param {HTMLElement} parent
 * @param {Crumb[]} crumbs
 * @returns {HTMLElement} the bar
 */
export function renderBreadcrumb(parent, crumbs) {
  const found = parent.querySelector(":scope > .breadcrumb")
  const bar = found instanceof HTMLElement ? found : h("nav", { class: "breadcrumb", "aria-label": "Pipeline path" })
  if (!found) parent.appendChild(bar)
  /** @type {HTMLElement[]} */
  const items = []
  crumbs.forEach((c, i) => {
    if (i) items.push(h("span", { class: "crumb-sep", "aria-hidden": "true" }, "›"))
    const last = i === crumbs.length - 1
    items.push(
      last || !c.onClick
        ? h("span", { class: "crumb current", "aria-current": "location" }, c.label)
        : h("button", { class: "crumb", type: "button", dataset: { level: String(i) }, onclick: c.onClick }, c.label),
    )
  })
  bar.replaceChildren(...items)
  bar.classList.toggle("shown", crumbs.length > 1)
  return bar
}
