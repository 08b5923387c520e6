// @ts-check
// Keyboard shortcuts of the editor (the canvas handles its own: copy, paste, delete, select all).

import { groupSelected } from "./canvas.js"
import { fitView } from "./graphio.js"
import { redo, undo } from "./history.js"
import { batchCount, clearErrors, queueMany, queueSelected } from "./run.js"
import { closeSearch, openSearch } from "./search.js"
import { modeShortcut } from "./modes.js"
import { app } from "./state.js"
import { h, isTyping, modal } from "./ui.js"
import { openLibrary, saveToLibrary } from "./workflows.js"

const SHORTCUTS = [
  ["Ctrl+Enter", "Queue the workflow"],
  ["Ctrl+Shift+Enter", "Queue in front of the others"],
  ["Ctrl+Alt+Enter", "Queue the selected output nodes only"],
  ["Double-click", "Search nodes to add"],
  ["/", "Search nodes to add"],
  ["Drag from a socket", "Connect; drop on empty canvas to add a matching node"],
  ["Ctrl+Z / Ctrl+Y", "Undo / redo"],
  ["Ctrl+C / Ctrl+V", "Copy / paste selected nodes (Ctrl+Shift+V keeps input links)"],
  ["Delete", "Delete the selection"],
  ["Ctrl+A", "Select all"],
  ["Ctrl+G", "Group the selected nodes"],
  ["Alt+C", "Collapse or expand the selected nodes"],
  ["Ctrl+B / Ctrl+M", "Bypass / mute the selected nodes"],
  ["Alt+drag", "Clone a node"],
  ["Space+drag, drag the background", "Pan"],
  ["Wheel", "Zoom"],
  [".", "Fit the workflow in view"],
  ["Ctrl+S / Ctrl+Shift+S", "Save / save as in the library"],
  ["Ctrl+O", "Open from the library"],
  ["?", "This list"],
]

export function showShortcuts() {
  modal({
    title: "Keyboard shortcuts",
    wide: true,
    body: h("table", { class: "shortcuts" }, SHORTCUTS.map(([k, v]) => h("tr", {}, h("td", {}, h("kbd", {}, k)), h("td", {}, v)))),
  })
}

/** @param {KeyboardEvent} e */
function onKeyDown(e) {
  const mod = e.ctrlKey || e.metaKey
  if (mod && e.key === "Enter") {
    e.preventDefault()
    if (e.altKey) queueSelected()
    else queueMany(batchCount(), { front: e.shiftKey })
    return
  }
  if (mod && e.key.toLowerCase() === "s") {
    e.preventDefault()
    saveToLibrary({ askName: e.shiftKey })
    return
  }
  if (mod && e.key.toLowerCase() === "o") {
    e.preventDefault()
    openLibrary()
    return
  }
  // the rest are keys of the canvas: not while typing into a field or a dialog is open
  if (isTyping(e) || document.querySelector(".modal-backdrop")) return
  if (modeShortcut(e)) return
  if (mod && !e.shiftKey && e.key.toLowerCase() === "z") {
    e.preventDefault()
    undo()
  } else if (mod && (e.key.toLowerCase() === "y" || (e.shiftKey && e.key.toLowerCase() === "z"))) {
    e.preventDefault()
    redo()
  } else if (mod && e.key.toLowerCase() === "g") {
    e.preventDefault()
    groupSelected()
  } else if (e.altKey && e.key.toLowerCase() === "c") {
    e.preventDefault()
    for (const n of Object.values(app.canvas.selected_nodes)) n.collapse()
    app.changed()
  } else if (e.key === "." && !mod) {
    fitView()
  } else if (e.key === "Escape") {
    closeSearch()
    clearErrors()
  } else if (e.key === "?" && !mod) {
    showShortcuts()
  } else if (e.key === "/" && !mod) {
    e.preventDefault()
    const r = app.canvas.canvas.getBoundingClientRect()
    openSearch(r.left + r.width / 2 - 200, r.top + 80)
  }
}

export function initKeyboard() {
  document.addEventListener("keydown", onKeyDown)
}
