// @ts-check
// The session: all open tabs (each one's workflow and undo history) are kept in local storage shortly after
// each change, and come back on the next visit, after a reload or a crash alike.

import { app } from "./state.js"
import { restoreTabs, storedTabs } from "./tabs.js"
import { loadDefault, openWorkflow } from "./workflows.js"

const SESSION_KEY = "atelier.session"
/** characters of JSON the session may take; undo steps go first (the oldest ones) when it is over */
const SESSION_BUDGET = 2_000_000
const DELAY_MS = 200

/** @type {ReturnType<typeof setTimeout> | null} */
let pending = null

/**
 * The session's text within the budget: the oldest undo/redo steps of all tabs are left out until it fits
 * (sizes counted from the snapshots' lengths, the text made once). A tab's saved snapshot equal to its
 * current one is written as `saved: true`.
 * @param {ReturnType<typeof storedTabs>} state
 */
export function sessionText(state, budget = SESSION_BUDGET) {
  const tabs = state.tabs.map((t) => ({ ...t, history: { ...t.history, undo: [...t.history.undo], redo: [...t.history.redo] } }))
  /** @param {string[]} list */
  const sum = (list) => list.reduce((n, x) => n + x.length + 3, 0)
  let total = 0
  for (const t of tabs) {
    const hist = t.history
    total += 1000 + sum(hist.undo) + sum(hist.redo) + (hist.current?.length ?? 0) + (hist.saved !== hist.current ? hist.saved?.length ?? 0 : 0)
  }
  while (total > budget) {
    // drop the oldest step of the tab with the longest stacks
    const tab = tabs.reduce((a, b) => (b.history.undo.length + b.history.redo.length > a.history.undo.length + a.history.redo.length ? b : a))
    const step = tab.history.undo.length ? tab.history.undo.shift() : tab.history.redo.shift()
    if (step === undefined) break
    total -= step.length + 3
  }
  const out = tabs.map((t) => (t.history.saved === t.history.current && t.history.current != null ? { ...t, history: { ...t.history, saved: true } } : t))
  return JSON.stringify({ version: 2, active: state.active, tabs: out })
}

/** Write the session now. */
export function flushSession() {
  if (pending) clearTimeout(pending)
  pending = null
  if (!app.ready) return
  const text = sessionText(storedTabs())
  try {
    localStorage.setItem(SESSION_KEY, text)
  } catch {
    // storage full: keep the documents without their undo steps
    try {
      const state = storedTabs()
      for (const t of state.tabs) t.history = { ...t.history, undo: [], redo: [] }
      localStorage.setItem(SESSION_KEY, JSON.stringify({ version: 2, ...state }))
    } catch {
      // unavailable: the session is simply not kept
    }
  }
}

/** Keep the session soon (after the burst of changes that called this, when the page is idle). */
export function saveSession() {
  if (pending) clearTimeout(pending)
  pending = setTimeout(() => {
    pending = null
    if (window.requestIdleCallback) window.requestIdleCallback(() => flushSession(), { timeout: 1000 })
    else flushSession()
  }, DELAY_MS)
}

/** Put the last session's tabs back, or the default workflow when there is none. */
export async function restoreSession() {
  window.addEventListener("pagehide", flushSession)
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flushSession()
  })
  /** @type {any} */
  let session = null
  try {
    session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null")
  } catch {
    session = null
  }
  if (session?.version === 2) {
    try {
      if (restoreTabs(session)) return
    } catch (err) {
      console.warn("the last session could not be restored", err)
    }
  } else if (session?.workflow) {
    // a session kept before tabs: one workflow
    app.savedAs = session.savedAs || ""
    if (openWorkflow(JSON.parse(session.workflow), { source: "the last session" })) return
  }
  await loadDefault()
}
