// @ts-check
// Finding nodes: the search box (double-click the canvas, or drop a link on empty space) and the palette.

import { LiteGraph } from "litegraph"
import { graphPosAt } from "./graphio.js"
import { offeredToUsers } from "./nodes.js"
import { app, typeColor } from "./state.js"
import { h } from "./ui.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {{type: import("litegraph").ISlotType}} Slot a node's input or output (or a subgraph's) */
/** @typedef {import("./state.js").NodeDef} NodeDef */

/**
 * A link dropped on empty canvas, which the chosen node gets connected to: dragged from an output
 * (node_from, slot_from) or from an input (node_to, slot_to). Litegraph gives slots as objects or indexes.
 * @typedef {object} DroppedLink
 * @property {LGraphNode | null} [node_from]
 * @property {Slot | number | null} [slot_from]
 * @property {string | number} [type_filter_in]
 * @property {LGraphNode | null} [node_to]
 * @property {Slot | number | null} [slot_to]
 * @property {string | number | false} [type_filter_out]
 */

/**
 * How well a node type matches a query (0: not at all).
 * @param {NodeDef} def
 * @param {string} q lower case
 */
function score(def, q) {
  if (!q) return 1
  const name = (def.display_name || def.type).toLowerCase()
  const type = def.type.toLowerCase()
  const cat = (def.category || "").toLowerCase()
  if (name === q || type === q) return 100
  if (name.startsWith(q) || type.startsWith(q)) return 80
  if (name.includes(q) || type.includes(q)) return 60
  const words = q.split(/\s+/).filter(Boolean)
  if (words.every((w) => name.includes(w) || type.includes(w) || cat.includes(w))) return 40
  // letters in order (fuzzy)
  let i = 0
  for (const c of name) if (c === q[i]) i++
  if (i === q.length) return 20
  if ((def.description || "").toLowerCase().includes(q)) return 10
  return 0
}

/**
 * The node types matching a query, best first; `inputType`/`outputType`: only those taking/giving that type.
 * @param {string} query
 * @param {{inputType?: string | number | null, outputType?: string | number | null}} [filter]
 */
export function searchCatalogue(query, { inputType, outputType } = {}) {
  const q = query.trim().toLowerCase()
  /** @type {[number, NodeDef][]} */
  const out = []
  for (const def of Object.values(app.catalogue)) {
    // internal node types only for their exact name
    if (!offeredToUsers(def) && (def.deprecated || (q !== def.type.toLowerCase() && q !== (def.display_name || "").toLowerCase()))) continue
    if (inputType && !def.inputs.some((i) => i.type === inputType)) continue
    if (outputType && !def.outputs.some((o) => o.type === outputType)) continue
    const s = score(def, q)
    if (s > 0) out.push([s, def])
  }
  out.sort((a, b) => b[0] - a[0] || (a[1].display_name || a[1].type).localeCompare(b[1].display_name || b[1].type))
  return out.map((x) => x[1])
}

/**
 * Create a node of `type` with its top-left at graph position `pos`.
 * @param {string} type
 * @param {import("litegraph").Point} pos
 */
export function addNode(type, pos) {
  const node = LiteGraph.createNode(type)
  if (!node) return null
  node.pos = [pos[0], pos[1]]
  app.graph.add(node)
  app.canvas.deselectAll()
  app.canvas.selectNode(node)
  app.setDirty()
  app.changed()
  return node
}

/**
 * Coloured dots for socket types.
 * @param {string[]} list
 */
function sockets(list) {
  return h("span", { class: "sockets" }, list.map((t) => h("i", { class: "dot", style: { background: typeColor(t) }, title: t })))
}

/** @type {{box: HTMLElement, close: () => void} | null} */
let current = null

export function closeSearch() {
  current?.close()
}

/**
 * A slot's type; litegraph sometimes gives a slot by its index, which says nothing.
 * @param {Slot | number | null | undefined} slot
 */
export function slotType(slot) {
  return slot && typeof slot === "object" ? slot.type : undefined
}

/**
 * Open the search box at a screen position. `link` ({node_from, slot_from, type_filter_in} or
 * {node_to, slot_to, type_filter_out}) connects the new node to a dragged link.
 * @param {number} clientX
 * @param {number} clientY
 * @param {DroppedLink | null} [link]
 * @returns {HTMLDivElement} the search box
 */
export function openSearch(clientX, clientY, link = null) {
  closeSearch()
  const graphPos = graphPosAt(clientX, clientY)
  const filterIn = link?.type_filter_in && link.type_filter_in !== "*" ? link.type_filter_in : null
  const filterOut = link?.type_filter_out && link.type_filter_out !== "*" ? link.type_filter_out : null
  const input = h("input", { class: "search-input", type: "text", placeholder: "Search nodes…", spellcheck: false, "aria-label": "Search nodes" })
  const list = h("ul", { class: "search-results", role: "listbox" })
  const hint = filterIn || filterOut
    ? h("div", { class: "search-filter" }, h("i", { class: "dot", style: { background: typeColor(String(filterIn || filterOut)) } }), filterIn ? `nodes taking ${filterIn}` : `nodes giving ${filterOut}`)
    : null
  const desc = h("div", { class: "search-desc" })
  const box = h("div", { class: "search-box", id: "node-search" }, input, hint, list, desc)
  /** @type {NodeDef[]} */
  let results = []
  let active = 0
  const render = () => {
    results = searchCatalogue(input.value, { inputType: filterIn, outputType: filterOut }).slice(0, 60)
    active = Math.min(active, Math.max(results.length - 1, 0))
    list.replaceChildren(
      ...results.map((def, i) =>
        h(
          "li",
          {
            class: `search-item${i === active ? " active" : ""}`,
            role: "option",
            dataset: { type: def.type },
            onpointerdown: (/** @type {PointerEvent} */ e) => {
              e.preventDefault()
              choose(def)
            },
            onpointermove: () => {
              if (active !== i) {
                active = i
                paint()
              }
            },
          },
          h("span", { class: "search-name" }, def.display_name || def.type),
          h("span", { class: "search-cat" }, def.category),
          sockets(def.outputs.map((o) => o.type)),
        ),
      ),
    )
    if (!results.length) list.appendChild(h("li", { class: "search-empty" }, "No node matches"))
    describe()
  }
  const describe = () => {
    const def = results[active]
    desc.textContent = def ? def.description || def.type : ""
    desc.style.display = def?.description ? "" : "none"
  }
  const paint = () => {
    describe()
    list.querySelectorAll(".search-item").forEach((li, i) => li.classList.toggle("active", i === active))
    list.querySelector(".active")?.scrollIntoView({ block: "nearest" })
  }
  /** @param {NodeDef} def */
  const choose = (def) => {
    close()
    const node = addNode(def.type, [graphPos[0], graphPos[1]])
    if (!node || !link) return
    if (link.node_from) {
      const from = link.node_from
      const outIdx = from.outputs.findIndex((s) => s === link.slot_from)
      const inIdx = node.inputs.findIndex((s) => s.type === slotType(link.slot_from) && s.link == null)
      if (outIdx >= 0 && inIdx >= 0) from.connect(outIdx, node, inIdx)
    } else if (link.node_to) {
      const to = link.node_to
      const inIdx = to.inputs.findIndex((s) => s === (link.slot_to ?? link.slot_from))
      const outIdx = node.outputs.findIndex((s) => s.type === slotType(link.slot_to ?? link.slot_from))
      if (inIdx >= 0 && outIdx >= 0) node.connect(outIdx, to, inIdx)
      node.pos = [graphPos[0] - node.size[0], graphPos[1]]
    }
    app.changed()
  }
  input.addEventListener("input", () => {
    active = 0
    render()
  })
  input.addEventListener("keydown", (e) => {
    e.stopPropagation()
    if (e.key === "ArrowDown") {
      active = Math.min(active + 1, results.length - 1)
      paint()
      e.preventDefault()
    } else if (e.key === "ArrowUp") {
      active = Math.max(active - 1, 0)
      paint()
      e.preventDefault()
    } else if (e.key === "Enter") {
      if (results[active]) choose(results[active])
      e.preventDefault()
    } else if (e.key === "Escape") {
      close()
    }
  })
  /** @param {PointerEvent} e */
  const onDown = (e) => {
    if (!(e.target instanceof Node && box.contains(e.target))) close()
  }
  const close = () => {
    box.remove()
    document.removeEventListener("pointerdown", onDown, true)
    if (current?.box === box) current = null
  }
  document.body.appendChild(box)
  const W = box.offsetWidth || 420
  box.style.left = `${Math.max(8, Math.min(clientX - 20, window.innerWidth - W - 8))}px`
  box.style.top = `${Math.max(8, Math.min(clientY - 20, window.innerHeight - 440))}px`
  setTimeout(() => document.addEventListener("pointerdown", onDown, true), 0)
  current = { box, close }
  render()
  input.focus()
  return box
}

/**
 * The left sidebar's node library: categories from the catalogue, click or drag onto the canvas.
 * Returns the function that builds it again.
 * @param {HTMLElement} root
 * @param {HTMLInputElement} filterInput
 */
export function renderPalette(root, filterInput) {
  const build = () => {
    const q = filterInput.value.trim().toLowerCase()
    const defs = q ? searchCatalogue(q) : Object.values(app.catalogue).filter(offeredToUsers)
    /** @type {Map<string, NodeDef[]>} */
    const cats = new Map()
    for (const def of defs) {
      const top = (def.category || "other").split("/")[0]
      const list = cats.get(top)
      if (list) list.push(def)
      else cats.set(top, [def])
    }
    // categories starting with _ (internal, test nodes) go last
    const order = [...cats.keys()].sort((a, b) => (Number(a.startsWith("_")) - Number(b.startsWith("_"))) || a.localeCompare(b))
    root.replaceChildren(
      ...order.map((cat) => {
        const items = cats.get(cat) || []
        if (!q) items.sort((a, b) => (a.display_name || a.type).localeCompare(b.display_name || b.type))
        const details = h("details", { class: "palette-cat", open: Boolean(q) || undefined },
          h("summary", {}, h("span", {}, cat.replace(/^_/, "")), h("span", { class: "count" }, String(items.length))),
          h("ul", {}, items.map((def) =>
            h("li", {
              class: "palette-item",
              draggable: "true",
              title: def.description || def.type,
              dataset: { type: def.type },
              onclick: () => {
                const r = app.canvas.canvas.getBoundingClientRect()
                const p = graphPosAt(r.left + r.width / 2 - 120, r.top + r.height / 2 - 60)
                addNode(def.type, p)
              },
              ondragstart: (/** @type {DragEvent} */ e) => {
                e.dataTransfer?.setData("application/x-atelier-node", def.type)
                if (e.dataTransfer) e.dataTransfer.effectAllowed = "copy"
              },
            },
            h("span", { class: "palette-name" }, def.display_name || def.type),
            sockets(def.outputs.map((o) => o.type)),
            ),
          )),
        )
        return details
      }),
    )
  }
  filterInput.addEventListener("input", build)
  build()
  return build
}
