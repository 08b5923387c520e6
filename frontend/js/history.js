// @ts-check
// Undo and redo: the workflow's JSON after each change, and whether it differs from what was saved.

import { loadIntoGraph, toWorkflow } from "./graphio.js"
import { refreshParams } from "./params.js"
import { app } from "./state.js"
import { isTyping } from "./ui.js"

/**
 * Snapshots are the workflow's JSON text: cheap to compare, and what the session keeps.
 * @typedef {object} History
 * @property {string[]} undo older snapshots, the newest last
 * @property {string[]} redo snapshots undone, the next one last
 * @property {string | null} current the canvas as last recorded
 * @property {boolean} restoring an undo/redo is putting a snapshot on the canvas: record nothing
 * @property {string | null} saved the snapshot the library holds
 */

/** @type {History} */
export const history = { undo: [], redo: [], current: null, restoring: false, saved: null }

/** @typedef {(history: History) => void} DocumentListener */

// what follows a change of the document (keep the session, update the panels): main.js decides
/** @type {DocumentListener} */
let documentChanged = () => {}

function snapshot() {
  return JSON.stringify(toWorkflow())
}

/** Record the canvas as a new undo step if it changed since the last one. */
export function checkpoint() {
  if (history.restoring || !app.ready) return
  const s = snapshot()
  if (s === history.current) return
  if (history.current != null) {
    history.undo.push(history.current)
    if (history.undo.length > 100) history.undo.shift()
    history.redo = []
  }
  history.current = s
  documentChanged(history)
}

/** @param {string} s a snapshot */
function restore(s) {
  history.restoring = true
  try {
    loadIntoGraph(JSON.parse(s), { keepView: true })
  } finally {
    history.restoring = false
  }
  settle()
  history.current = snapshot()
  refreshParams(true)
  documentChanged(history)
}

/** draw once so that nodes take their final sizes (widgets may grow them) before a snapshot */
function settle() {
  try {
    app.canvas.draw(true, true)
  } catch (err) {
    console.warn(err)
  }
}

export function undo() {
  checkpoint() // a change not recorded yet (its event is still on its way) is the state we leave
  const previous = history.undo.pop()
  if (previous === undefined) return
  if (history.current != null) history.redo.push(history.current)
  restore(previous)
}

export function redo() {
  checkpoint()
  const next = history.redo.pop()
  if (next === undefined) return
  if (history.current != null) history.undo.push(history.current)
  restore(next)
}

/** The canvas as it is now is what the library holds. */
function markSaved() {
  checkpoint()
  history.saved = history.current
  documentChanged(history)
}

/** A freshly loaded workflow starts a new history. */
function startOver() {
  history.undo = []
  history.redo = []
  settle()
  history.current = snapshot()
  history.saved = history.current
  refreshParams(true)
  documentChanged(history)
}

/**
 * Swap the whole history for another document's (a tab's), the canvas already showing its `current`:
 * the canvas is snapshotted again (widgets may have settled) and stays "saved" if it was.
 * @param {{undo: string[], redo: string[], current: string | null, saved: string | null}} state
 */
export function swapHistory(state) {
  const wasSaved = state.current === state.saved
  settle()
  history.undo = state.undo
  history.redo = state.redo
  history.current = snapshot()
  history.saved = wasSaved ? history.current : state.saved
  refreshParams(true)
  documentChanged(history)
}

/**
 * Fill the app's change hooks; `onDocumentChanged(history)` runs after every recorded change.
 * @param {DocumentListener} onDocumentChanged
 */
export function initHistory(onDocumentChanged) {
  documentChanged = onDocumentChanged
  app.changed = () => setTimeout(checkpoint, 0)
  app.markSaved = markSaved
  app.afterLoad = startOver
  app.history = history
}

/** Take a checkpoint after what usually ends an edit, and before the page goes away. */
export function watchChanges() {
  // a change made just before leaving is kept too
  window.addEventListener("pagehide", () => checkpoint())
  document.addEventListener("pointerup", () => app.changed())
  document.addEventListener("keyup", (e) => {
    if (!isTyping(e)) app.changed()
  })
}
