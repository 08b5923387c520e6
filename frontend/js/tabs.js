// @ts-check
// Workflow tabs: several documents open at once, each with its own graph, name, saved state and undo history.
// The active tab's document lives on the canvas (app.graph, app.doc) and in history.js; the others are kept
// here as their workflow JSON text and their undo stacks. Other modules reach the tabs through `app.tabs`.

import { LGraph } from "litegraph"
import { loadIntoGraph } from "./graphio.js"
import { checkpoint, history, swapHistory } from "./history.js"
import { icon } from "./icons.js"
import { app } from "./state.js"
import { h, modal } from "./ui.js"
import { hideAllDomWidgets } from "./widgets.js"

/**
 * The undo history of a document: its snapshots are workflow JSON texts.
 * @typedef {object} TabHistory
 * @property {string[]} undo
 * @property {string[]} redo
 * @property {string | null} current
 * @property {string | null} saved
 */

/**
 * One open document.
 * @typedef {object} Tab
 * @property {string} id
 * @property {string} name the workflow's name as last seen (for the tab's label)
 * @property {string} savedAs the library name it was opened from or saved as
 * @property {TabHistory} history kept here while the tab is not active (the active one's is history.js's)
 * @property {{scale: number, offset: [number, number]} | null} view zoom and pan
 * @property {Map<string, import("./state.js").NodeRuntime>} runtime run marks and pictures of its nodes
 * @property {LGraph | null} graph its graph, kept while the tab is open (switching back builds nothing);
 *   null until the tab is first shown
 * @property {import("./state.js").Doc | null} doc what the workflow holds besides its graph
 */

/**
 * What the session keeps of a tab.
 * @typedef {object} StoredTab
 * @property {string} [name]
 * @property {string} [savedAs]
 * @property {TabHistory} history
 * @property {{scale: number, offset: [number, number]} | null} [view]
 */

/**
 * The tab API on `app.tabs`.
 * @typedef {object} TabsApi
 * @property {() => Tab[]} list
 * @property {() => Tab} active
 * @property {(doc?: {workflow?: unknown, savedAs?: string}) => Tab} open a new tab (empty, or showing a workflow) and switch to it
 * @property {(id: string) => void} switchTo
 * @property {(id: string, options?: {force?: boolean}) => Promise<boolean>} close asks first when it has unsaved changes
 * @property {(listener: () => void) => () => void} onChange called after tabs open, close, switch or change state
 * @property {(tab: Tab) => boolean} isModified
 */

const EMPTY_WORKFLOW = { format: "atelier/workflow", version: 1, metadata: { name: "" }, parameters: {}, nodes: {}, ui: {} }

/** @type {Tab[]} */
const tabs = []
/** @type {Tab | null} */
let current = null
let counter = 0
/** @type {Set<() => void>} */
const listeners = new Set()
/** @type {HTMLElement | null} */
let bar = null

/** @returns {Tab} */
function makeTab() {
  counter += 1
  return {
    id: `t${Date.now().toString(36)}${counter}`,
    name: "",
    savedAs: "",
    history: { undo: [], redo: [], current: null, saved: null },
    view: null,
    runtime: new Map(),
    graph: null,
    doc: null,
  }
}

/** @type {LGraph | null} the graph makeCanvas() made: its hooks go on every tab's graph */
let firstGraph = null

/** A new graph with the editor's hooks (canvas.js) on it. */
function newGraph() {
  const g = new LGraph()
  const base = firstGraph || app.graph
  g.onNodeAdded = base.onNodeAdded
  g.onNodeRemoved = base.onNodeRemoved
  return g
}

/**
 * Put a graph on the canvas.
 * @param {LGraph} g
 */
function useGraph(g) {
  if (app.graph === g) return
  hideAllDomWidgets() // the prompt boxes of the graph leaving; the new graph's show when drawn
  app.graph = g
  app.canvas.setGraph(g)
}

/**
 * A closed tab's graph: its DOM widgets (prompt boxes) go (without the removal hooks, which act on the
 * active tab's run state).
 * @param {LGraph | null} g
 */
function dispose(g) {
  if (!g || g === app.graph) return
  for (const n of g._nodes) for (const w of n.widgets || []) /** @type {{onRemove?: () => void}} */ (w).onRemove?.()
}

/** The active tab (there is always one). */
export function activeTab() {
  if (!current) {
    current = makeTab()
    current.runtime = app.runtime
    current.graph = app.graph
    tabs.push(current)
  }
  return current
}

/** @param {Tab} tab */
export function isModified(tab) {
  const hist = tab === current ? history : tab.history
  return hist.current !== hist.saved
}

/** @param {Tab} tab */
function labelOf(tab) {
  const name = tab === current ? app.doc.metadata?.name || "" : tab.name
  return name.trim() || "Untitled"
}

/**
 * Keep what lives on the canvas and in history.js in the active tab's record.
 * @param {boolean} [record] record an edit whose checkpoint is still on its way first (when leaving the tab);
 *   the session does not, so that its saves never split an edit into two undo steps
 */
function capture(record = true) {
  const tab = activeTab()
  if (record) checkpoint()
  tab.history = { undo: history.undo, redo: history.redo, current: history.current, saved: history.saved }
  tab.name = app.doc.metadata?.name || ""
  tab.savedAs = app.savedAs || ""
  tab.view = { scale: app.canvas.ds.scale, offset: [app.canvas.ds.offset[0], app.canvas.ds.offset[1]] }
  tab.runtime = app.runtime
  tab.graph = app.graph
  tab.doc = app.doc
}

/**
 * Put a tab's document on the canvas and its history in history.js: its graph as it was left, or built from
 * its workflow text the first time (or when `load`).
 * @param {Tab} tab
 * @param {boolean} [load]
 */
function show(tab, load = false) {
  current = tab
  app.runtime = tab.runtime
  app.savedAs = tab.savedAs
  if (!tab.graph) {
    tab.graph = newGraph()
    load = true
  }
  useGraph(tab.graph)
  if (load || !tab.doc) {
    history.restoring = true
    try {
      loadIntoGraph(tab.history.current ? JSON.parse(tab.history.current) : EMPTY_WORKFLOW, { keepView: Boolean(tab.view) })
    } finally {
      history.restoring = false
    }
    tab.doc = app.doc
  } else {
    app.doc = tab.doc
  }
  if (tab.view) {
    app.canvas.ds.scale = tab.view.scale
    app.canvas.ds.offset = [tab.view.offset[0], tab.view.offset[1]]
  }
  app.canvas.deselectAll?.()
  swapHistory(tab.history)
  app.setDirty()
}

/**
 * Whether a tab is an untouched empty document (a workflow being opened may take its place).
 * @param {Tab} tab
 */
function untouched(tab) {
  const hist = tab === current ? history : tab.history
  return !hist.undo.length && !hist.redo.length && (tab === current ? app.graph._nodes.length === 0 : !tab.history.current || !Object.keys(JSON.parse(tab.history.current).nodes || {}).length)
}

/** @param {string} id */
export function switchTo(id) {
  const tab = tabs.find((t) => t.id === id)
  if (!tab || tab === current) return
  capture()
  show(tab)
  notify()
}

/**
 * Open a new tab and switch to it: empty, or showing a workflow as it is (its history starting there).
 * @param {{workflow?: unknown, savedAs?: string}} [doc]
 */
export function openTab(doc = {}) {
  capture()
  const tab = makeTab()
  tab.savedAs = doc.savedAs || ""
  if (doc.workflow) {
    const text = JSON.stringify(doc.workflow)
    tab.history = { undo: [], redo: [], current: text, saved: text }
  }
  tabs.splice(tabs.indexOf(activeTab()) + 1, 0, tab)
  show(tab)
  notify()
  return tab
}

/**
 * Before a workflow is loaded onto the canvas (workflows.js openWorkflow): give it a new tab unless the
 * active one is an untouched empty document. Returns how to take the new tab back if the load fails.
 * @returns {() => void}
 */
export function tabForLoad() {
  if (untouched(activeTab())) return () => {}
  const previous = activeTab()
  const tab = openTab()
  return () => {
    const i = tabs.indexOf(tab)
    if (i < 0) return
    tabs.splice(i, 1)
    show(previous)
    dispose(tab.graph)
    notify()
  }
}

/**
 * Close a tab; one with unsaved changes asks first (a dialog of the page). Resolves to whether it closed.
 * @param {string} id
 * @param {{force?: boolean}} [options]
 */
export async function closeTab(id, { force = false } = {}) {
  const tab = tabs.find((t) => t.id === id)
  if (!tab) return false
  if (tab === current) checkpoint()
  if (!force && isModified(tab)) {
    const choice = await askDiscard(labelOf(tab))
    if (choice === "cancel") return false
    if (choice === "save") {
      switchTo(tab.id)
      const saved = await app.saveCurrent?.()
      if (!saved) return false
    }
  }
  const i = tabs.indexOf(tab)
  if (i < 0) return false
  tabs.splice(i, 1)
  const closing = tab.graph
  if (tab === current) {
    current = null
    const next = tabs[Math.min(i, tabs.length - 1)]
    if (next) {
      show(next)
    } else {
      // the last tab closed: an empty one takes its place
      const fresh = makeTab()
      tabs.push(fresh)
      show(fresh)
    }
  }
  dispose(closing)
  notify()
  return true
}

/**
 * Ask what to do with a document's unsaved changes: "save", "discard" or "cancel".
 * @param {string} name
 * @returns {Promise<"save" | "discard" | "cancel">}
 */
export function askDiscard(name) {
  return new Promise((resolve) => {
    /** @type {"save" | "discard" | "cancel"} */
    let choice = "cancel"
    modal({
      title: "Unsaved changes",
      body: h("p", {}, `“${name}” has changes that are not saved in the library. Close it anyway?`),
      actions: [
        { label: "Cancel" },
        { label: "Discard changes", danger: true, onClick: () => { choice = "discard" } },
        { label: "Save…", primary: true, onClick: () => { choice = "save" } },
      ],
      onClose: () => resolve(choice),
    })
  })
}

/** The tabs as the session keeps them (the active tab's record brought up to date first). */
export function storedTabs() {
  capture(false)
  return {
    active: tabs.indexOf(activeTab()),
    tabs: tabs.map((t) => /** @type {StoredTab} */ ({ name: t.name, savedAs: t.savedAs, history: t.history, view: t.view })),
  }
}

/**
 * Put back the tabs of a session; the active one goes on the canvas. Returns whether there were any.
 * @param {{active?: number, tabs?: StoredTab[]}} stored
 */
export function restoreTabs(stored) {
  const list = (stored.tabs || []).filter((t) => t && t.history && typeof t.history.current === "string")
  if (!list.length) return false
  tabs.length = 0
  current = null
  for (const s of list) {
    const tab = makeTab()
    tab.name = s.name || ""
    tab.savedAs = s.savedAs || ""
    tab.history = {
      undo: Array.isArray(s.history.undo) ? s.history.undo : [],
      redo: Array.isArray(s.history.redo) ? s.history.redo : [],
      current: s.history.current,
      // `true`: saved as it is now (the session writes it so instead of a second copy)
      saved: /** @type {unknown} */ (s.history.saved) === true ? s.history.current : s.history.saved ?? null,
    }
    tab.view = s.view || null
    tabs.push(tab)
  }
  const active = tabs[Math.max(0, Math.min(Number(stored.active) || 0, tabs.length - 1))]
  active.graph = app.graph // the page's first graph, empty until now
  show(active, true)
  notify()
  return true
}

function notify() {
  render()
  for (const fn of listeners) {
    try {
      fn()
    } catch (err) {
      console.error(err)
    }
  }
}

/** The active document changed (an edit, a save, a rename): update the tab bar. */
export function tabsChanged() {
  notify()
}

// -- the tab bar ------------------------------------------------------------------------------------

function render() {
  if (!bar) return
  bar.replaceChildren(
    ...tabs.map((tab) => {
      const label = labelOf(tab)
      const el = h("div", {
        class: `wf-tab${tab === current ? " active" : ""}${isModified(tab) ? " modified" : ""}`,
        role: "tab",
        "aria-selected": tab === current ? "true" : "false",
        title: label,
        dataset: { tabId: tab.id },
        onclick: () => switchTo(tab.id),
        onauxclick: (/** @type {MouseEvent} */ e) => {
          if (e.button === 1) closeTab(tab.id)
        },
      },
      h("span", { class: "wf-tab-name" }, label),
      h("span", { class: "wf-tab-dot", title: "Unsaved changes" }),
      h("button", {
        class: "wf-tab-close",
        title: `Close ${label}`,
        "aria-label": `Close ${label}`,
        onclick: (/** @type {MouseEvent} */ e) => {
          e.stopPropagation()
          closeTab(tab.id)
        },
      }, icon("close")))
      return el
    }),
    h("button", { class: "wf-tab-new", title: "New workflow tab", "aria-label": "New workflow tab", onclick: () => openTab() }, icon("plus")),
  )
}

/** @type {TabsApi} */
const api = {
  list: () => [...tabs],
  active: activeTab,
  open: openTab,
  switchTo,
  close: closeTab,
  onChange: (listener) => {
    listeners.add(listener)
    return () => listeners.delete(listener)
  },
  isModified,
}

/**
 * Start the tabs: the tab bar goes at the top of the canvas area; `app.tabs` is the API.
 * @param {HTMLElement} wrap the canvas area
 */
export function initTabs(wrap) {
  bar = h("div", { class: "wf-tabs", role: "tablist", "aria-label": "Open workflows" })
  wrap.prepend(bar)
  wrap.classList.add("has-tabs")
  firstGraph = app.graph
  activeTab()
  app.tabs = api
  app.tabForLoad = tabForLoad
  render()
}
