// @ts-check
// Queue the graph and watch it run: node highlight, step progress, previews, cached marks, images, errors.

import { ApiError, api } from "./api.js"
import { toWorkflow } from "./graphio.js"
import { findNode, nodeId, widgetsOf } from "./nodes.js"
import { app, runtimeOf } from "./state.js"
import { byId, errorMessage, h, toast } from "./ui.js"
import { applySeedControl } from "./widgets.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("./api.js").PreviewHeader} PreviewHeader */
/** @typedef {import("./api.js").ServerEvent} ServerEvent */
/** @typedef {import("./state.js").NodeError} NodeError */

/**
 * What the status bar shows of the job of ours that runs now.
 * @typedef {object} LiveRun
 * @property {string | null} job
 * @property {number} toRun how many nodes the job runs (not cached)
 * @property {number} done how many of them finished
 * @property {string | null} node the running node
 * @property {string | null} nodeType
 * @property {{value: number, max: number} | null} progress the running node's steps
 * @property {number} queueRemaining jobs waiting, everybody's
 * @property {string | null} [last] how the last job ended ("Done in 2.1 s")
 */

/** @type {LiveRun} */
const live = {
  job: null, // the job of ours that runs now
  toRun: 0,
  done: 0,
  node: null,
  nodeType: null,
  progress: null,
  queueRemaining: 0,
}

export const runState = live

function statusBar() {
  const text = document.getElementById("run-status")
  const q = document.getElementById("queue-count")
  if (q) {
    q.textContent = String(live.queueRemaining)
    q.parentElement?.classList.toggle("has-items", live.queueRemaining > 0)
  }
  if (!text) return
  const bar = byId("job-progress")
  const stop = byId("btn-interrupt", HTMLButtonElement)
  if (live.job) {
    const def = live.nodeType ? app.catalogue[live.nodeType] : undefined
    const title = (live.node && findNode(live.node)?.title) || def?.display_name || live.nodeType || "starting"
    const step = live.progress?.max ? ` · ${live.progress.value}/${live.progress.max}` : ""
    text.textContent = `Running ${title}${step}`
    text.className = "run-status running"
    const frac = live.progress?.max ? live.progress.value / live.progress.max : 0
    const total = live.toRun ? Math.min(1, (live.done + frac) / live.toRun) : 0
    bar.style.width = `${(total * 100).toFixed(1)}%`
    bar.parentElement?.classList.add("active")
    stop.disabled = false
    app.runProgress = total
  } else {
    text.textContent = live.queueRemaining ? `${live.queueRemaining} queued` : live.last || "Idle"
    text.className = "run-status"
    bar.parentElement?.classList.remove("active")
    bar.style.width = "0%"
    stop.disabled = live.queueRemaining === 0 && !app.queueBusy
    app.runProgress = null
  }
  app.updateTitle?.()
}

// -- errors shown on nodes ------------------------------------------------------------------------------

export function clearErrors() {
  for (const r of app.runtime.values()) r.errors = []
  document.getElementById("error-panel")?.replaceChildren()
  document.getElementById("error-panel")?.classList.remove("open")
  app.setDirty()
}

/**
 * Put errors ({node, input, message, code}) on their nodes and list them in the error panel.
 * @param {NodeError[]} errors
 * @param {string} [title]
 */
export function showErrors(errors, title = "The workflow cannot run") {
  clearErrors()
  const panel = byId("error-panel")
  const items = []
  for (const e of errors) {
    const node = e.node != null ? findNode(String(e.node)) : null
    // kept by id even when not on the canvas: a pipeline node shows its inner nodes' (pipelines.js)
    if (e.node != null) runtimeOf(String(e.node)).errors.push(e)
    const label = node ? node.title : e.node_type || (e.node != null ? `node ${e.node}` : "workflow")
    items.push(
      h("li", {
        class: node ? "clickable" : "",
        onclick: () => node && focusNode(node),
      }, h("strong", {}, label), e.input ? h("code", {}, e.input) : null, h("span", {}, e.message)),
    )
  }
  panel.replaceChildren(
    h("div", { class: "error-head" },
      h("span", { class: "error-icon" }, "!"),
      h("span", {}, `${title}: ${errors.length} problem${errors.length === 1 ? "" : "s"}`),
      h("button", { class: "icon-btn", title: "Dismiss", onclick: clearErrors }, "✕")),
    h("ul", {}, items),
  )
  panel.classList.add("open")
  app.setDirty()
}

/**
 * Select a node and bring it to the middle of the canvas.
 * @param {LGraphNode} node
 */
export function focusNode(node) {
  const c = app.canvas
  c.deselectAll()
  c.selectNode(node)
  c.centerOnNode(node)
  c.setDirty(true, true)
}

// -- queueing ---------------------------------------------------------------------------------------

/**
 * The workflow ids of the output nodes (Save Image, Preview Image) among some nodes.
 * @param {LGraphNode[]} nodes
 */
function outputNodes(nodes) {
  return nodes.filter((n) => app.catalogue[n.type]?.output_node).map(nodeId)
}

export function selectedOutputs() {
  return outputNodes(Object.values(app.canvas.selected_nodes || {}))
}

/** How many times the Queue button queues (the × field next to it). */
export function batchCount() {
  const n = Math.round(Number(byId("batch-count", HTMLInputElement).value))
  return Number.isFinite(n) ? Math.min(Math.max(n, 1), 100) : 1
}

/** Queue only the selected output nodes (and what they need). */
export function queueSelected() {
  const outs = selectedOutputs()
  if (!outs.length) toast("Select one or more output nodes (Save Image, Preview Image) first", "info")
  else queue({ outputs: outs })
}

/**
 * Queue the canvas `count` times (seeds set to change after each queue differ between them).
 * @param {number} count
 * @param {QueueOptions} [options]
 */
export async function queueMany(count, options = {}) {
  let last = null
  for (let i = 0; i < Math.max(1, count); i++) {
    last = await queue(options)
    if (!last) break
  }
  return last
}

/**
 * @typedef {object} QueueOptions
 * @property {string[] | null} [outputs] run only up to these output nodes (workflow ids)
 * @property {boolean} [front] ahead of the jobs waiting
 */

/**
 * Queue the canvas; the server's answer, or null when it was not queued (the user was told why).
 * @param {QueueOptions} [options]
 */
export async function queue({ outputs = null, front = false } = {}) {
  const workflow = toWorkflow()
  if (!Object.keys(workflow.nodes).length) {
    toast("The canvas is empty: add nodes first (double-click the canvas to search)", "error")
    return null
  }
  app.queueBusy = true
  try {
    const res = await api.queueJob(workflow, { outputs: outputs?.length ? outputs : undefined, priority: front ? 100 : 0 })
    clearErrors()
    app.myJobs.set(res.id, { number: res.number, outputs: outputs ?? null })
    replay(res.id)
    for (const w of res.warnings || []) toast(w.message, "info")
    if (outputs?.length) toast(`Queued #${res.number} up to ${outputs.join(", ")}`, "success", 2000)
    // seeds set to change after each queue, as in ComfyUI
    let changed = false
    for (const node of app.graph._nodes) {
      for (const w of widgetsOf(node)) if (w.control && applySeedControl(w)) changed = true
    }
    if (changed) app.changed()
    return res
  } catch (err) {
    if (err instanceof ApiError && err.body?.node_errors) {
      showErrors(err.body.node_errors)
      toast(`Not queued: ${err.body.node_errors.length} problem${err.body.node_errors.length === 1 ? "" : "s"} in the workflow`, "error")
    } else {
      toast(`Could not queue: ${errorMessage(err)}`, "error")
    }
    return null
  } finally {
    app.queueBusy = false
    statusBar()
  }
}

export async function interrupt() {
  try {
    const res = await api.interrupt()
    toast(res.interrupted ? "Interrupting…" : "Nothing is running", "info", 2000)
  } catch (err) {
    toast(`Interrupt failed: ${errorMessage(err)}`, "error")
  }
}

// -- events -----------------------------------------------------------------------------------------

/**
 * The run-time state of an event's node (events of a node always name it).
 * @param {string | undefined} id
 */
function nodeState(id) {
  if (id == null) throw new Error("a node event without its node")
  return runtimeOf(String(id))
}

/** @param {ServerEvent} ev */
function ours(ev) {
  return ev.job != null && app.myJobs.has(ev.job)
}

/** @typedef {{ev: ServerEvent} | {preview: true, header: PreviewHeader, blob: Blob}} HeldItem */

// Events can arrive before the answer to our POST /atelier/v1/jobs: keep those of unknown jobs for a while.
/** @type {Map<string, HeldItem[]>} */
const pending = new Map()

/**
 * @param {string | undefined} job
 * @param {HeldItem} item
 */
function hold(job, item) {
  if (!job) return
  let list = pending.get(job)
  if (!list) {
    list = []
    pending.set(job, list)
    setTimeout(() => pending.delete(job), 30000)
  }
  if (list.length < 2000) list.push(item)
}

/**
 * Handle the events of a job that came before we knew it was ours.
 * @param {string} job
 */
function replay(job) {
  const list = pending.get(job)
  pending.delete(job)
  for (const item of list || []) {
    if ("preview" in item) handlePreview({ ...item.header, _replayed: true }, item.blob)
    else handleEvent({ ...item.ev, _replayed: true })
  }
}

/**
 * An entry of the event log: an event's type, job and node, and what is worth checking of it.
 * @typedef {{type: string, job?: string, node?: string | null, value?: number, max?: number, width?: number, height?: number}} LoggedEvent
 */

/**
 * the last events seen (for the console and the browser tests)
 * @type {LoggedEvent[]}
 */
export const eventLog = []

/** @param {LoggedEvent} item */
function log(item) {
  eventLog.push(item)
  if (eventLog.length > 1000) eventLog.splice(0, eventLog.length - 1000)
}

/** @param {ServerEvent} ev */
export function handleEvent(ev) {
  if (!ev._replayed) log({ type: ev.type, job: ev.job, node: ev.node, value: ev.value, max: ev.max })
  if (ev.type === "hello" || ev.type === "queue") {
    live.queueRemaining = ev.queue_remaining ?? 0
    statusBar()
    app.onQueueChanged?.()
    return
  }
  if (ev.type === "job_finished" || ev.type === "job_failed" || ev.type === "job_interrupted") app.onHistoryChanged?.()
  if (!ours(ev)) {
    hold(ev.job, { ev })
    return
  }
  switch (ev.type) {
    case "job_started": {
      live.job = ev.job ?? null
      live.last = null
      live.toRun = ev.to_run || 0
      live.done = 0
      live.node = null
      live.progress = null
      for (const r of app.runtime.values()) {
        r.status = null
        r.progress = null
        r.errors = []
        r.elapsed = null
      }
      clearErrors()
      break
    }
    case "node_cached": {
      const r = nodeState(ev.node)
      r.status = "cached"
      break
    }
    case "node_started": {
      const r = nodeState(ev.node)
      r.status = "running"
      r.progress = null
      live.node = ev.node ?? null
      live.nodeType = ev.node_type ?? null
      live.progress = null
      break
    }
    case "progress": {
      const r = nodeState(ev.node)
      r.progress = { value: Math.round(Number(ev.value)), max: Math.round(ev.max ?? 0) }
      live.progress = r.progress
      break
    }
    case "node_finished": {
      const r = nodeState(ev.node)
      r.status = "done"
      r.elapsed = ev.elapsed_ms ?? null
      r.progress = null
      live.done += 1
      live.progress = null
      const images = ev.ui?.images
      if (images?.length) {
        r.images = images
        r.imageIndex = 0
        r.preview = null
        findNode(String(ev.node))?.ensureImageRoom(1)
      }
      break
    }
    case "node_failed": {
      const r = nodeState(ev.node)
      r.status = "error"
      r.errors = [{ node: ev.node, message: `${ev.exception_type ? `${ev.exception_type}: ` : ""}${ev.message}` }]
      break
    }
    case "job_finished": {
      live.job = null
      if (ev.job) app.myJobs.delete(ev.job)
      // output nodes served from the cache show the pictures they made before
      for (const [id, out] of Object.entries(ev.outputs || {})) {
        const r = nodeState(id)
        if (out?.images?.length && JSON.stringify(out.images) !== JSON.stringify(r.images)) {
          r.images = out.images
          r.imageIndex = 0
          findNode(id)?.ensureImageRoom(1)
        }
      }
      const ms = Number(ev.elapsed_ms)
      const secs = (ms / 1000).toFixed(ms < 10000 ? 2 : 1)
      live.last = `Done in ${secs} s${ev.cached ? ` · ${ev.cached} cached` : ""}`
      break
    }
    case "job_failed": {
      live.job = null
      live.last = "Failed"
      if (ev.job) app.myJobs.delete(ev.job)
      if (ev.errors?.length) {
        showErrors(ev.errors, "The run was refused")
      } else {
        const errors = [{ node: ev.node, node_type: ev.node_type, message: `${ev.exception_type ? `${ev.exception_type}: ` : ""}${ev.message}` }]
        showErrors(errors, "The run failed")
      }
      toast(`Failed: ${ev.message}`, "error", 6000)
      break
    }
    case "job_interrupted": {
      live.job = null
      live.last = "Interrupted"
      if (ev.job) app.myJobs.delete(ev.job)
      if (ev.node) nodeState(ev.node).status = "interrupted"
      for (const r of app.runtime.values()) if (r.status === "running") r.status = "interrupted"
      toast("Interrupted", "info", 2500)
      break
    }
    default:
      return
  }
  statusBar()
  app.setDirty()
}

/** @type {Map<string, string>} */
const previewUrls = new Map()

/**
 * A preview frame of a running node: drawn in the node, which grows once to show it.
 * @param {PreviewHeader} header
 * @param {Blob} blob
 */
export function handlePreview(header, blob) {
  if (!header._replayed) log({ type: "preview", job: header.job, node: header.node, width: header.width, height: header.height })
  if (header.node == null) return
  if (header.job == null || !app.myJobs.has(header.job)) {
    hold(header.job, { preview: true, header, blob })
    return
  }
  const id = String(header.node)
  const url = URL.createObjectURL(blob)
  const img = new Image()
  img.onload = () => {
    const r = runtimeOf(id)
    r.preview = img
    const old = previewUrls.get(id)
    if (old) URL.revokeObjectURL(old)
    previewUrls.set(id, url)
    const node = findNode(id)
    if (node && !node._previewRoom) {
      node._previewRoom = true
      node.ensureImageRoom(img.naturalWidth / img.naturalHeight || 1)
    }
    app.setDirty()
  }
  img.src = url
}

export function initRunUi() {
  statusBar()
}
