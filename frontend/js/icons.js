// @ts-check
// Icons as inline SVG strokes, drawn the same everywhere: no glyph that needs an emoji or symbol font.
// In the page: <span data-icon="undo"></span> (filled by installIcons); in code: icon("trash").

/** Each icon: SVG path data on a 16×16 grid, stroked in the text colour. */
export const ICONS = {
  undo: "M5.5 3.5 2.5 6.5l3 3M2.5 6.5H10a3.5 3.5 0 0 1 0 7H7",
  redo: "M10.5 3.5l3 3-3 3M13.5 6.5H6a3.5 3.5 0 0 0 0 7h3",
  "chevron-left": "M10 3.5 5.5 8l4.5 4.5",
  "chevron-right": "M6 3.5 10.5 8 6 12.5",
  "caret-down": "M4.5 6.5 8 10l3.5-3.5",
  close: "M4 4l8 8M12 4l-8 8",
  times: "M5 5l6 6M11 5l-6 6",
  plus: "M8 3v10M3 8h10",
  minus: "M3 8h10",
  fit: "M2.5 6V2.5H6M10 2.5h3.5V6M13.5 10v3.5H10M6 13.5H2.5V10",
  refresh: "M13 8a5 5 0 1 1-1.6-3.7M13.2 2.3v3h-3",
  more: "M3.5 8h.01M8 8h.01M12.5 8h.01",
  trash: "M2.5 4.5h11M6.5 4.5V2.5h3v2M4 4.5l.8 9h6.4l.8-9M6.8 7v4M9.2 7v4",
  dice: "M3 3h10v10H3zM5.8 5.8h.01M10.2 5.8h.01M8 8h.01M5.8 10.2h.01M10.2 10.2h.01",
  star: "M8 1.9l1.85 3.85 4.2.58-3.06 2.94.75 4.18L8 11.46l-3.74 2 .75-4.18-3.06-2.94 4.2-.58z",
}

/** @typedef {keyof typeof ICONS} IconName */

const SVG = "http://www.w3.org/2000/svg"

/**
 * An icon element.
 * @param {IconName} name
 * @returns {SVGSVGElement}
 */
export function icon(name) {
  const svg = document.createElementNS(SVG, "svg")
  svg.setAttribute("viewBox", "0 0 16 16")
  svg.setAttribute("class", `ico ico-${name}`)
  svg.setAttribute("aria-hidden", "true")
  const path = document.createElementNS(SVG, "path")
  path.setAttribute("d", ICONS[name])
  svg.appendChild(path)
  return svg
}

/**
 * Put its icon into every element of the page that names one (data-icon).
 * @param {ParentNode} root
 */
export function installIcons(root) {
  for (const el of root.querySelectorAll("[data-icon]")) {
    const name = el instanceof HTMLElement ? el.dataset.icon : undefined
    if (name && name in ICONS) el.replaceChildren(icon(/** @type {IconName} */ (name)))
  }
}
