// @ts-check
// Workflows: the server library, files (JSON, PNG, WEBP), ComfyUI imports (converted by the server), drag and drop.

import { ApiError, api } from "./api.js"
import { FormatError, graphPosAt, isComfyWorkflow, loadIntoGraph, toWorkflow } from "./graphio.js"
import { icon } from "./icons.js"
import { unseenNotices } from "./notices.js"
import { addNode } from "./search.js"
import { app } from "./state.js"
import { confirmDialog, download, errorMessage, h, modal, promptDialog, timeAgo, toast } from "./ui.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("litegraph").Point} Point */
/** @typedef {import("./widgets.js").AtelierWidget} AtelierWidget */

/**
 * Replace the canvas with a workflow (any format we read); tells the user what was odd about it.
 * Returns whether it loaded.
 * @param {unknown} data
 * @param {{name?: string | null, fixChoices?: boolean, source?: string}} [options] name: its name in the
 *   library; source: what to call it in messages
 */
export function openWorkflow(data, { name = null, fixChoices = false, source = "" } = {}) {
  let warnings
  // the workflow gets a tab of its own (tabs.js): what the canvas showed stays open, with its undo history
  const takeBack = app.tabForLoad?.()
  app.runtime.clear() // run marks, previews and pictures belong to the graph being replaced
  try {
    warnings = loadIntoGraph(data, { fixChoices })
  } catch (err) {
    takeBack?.()
    toast(`Cannot load ${source || "this workflow"}: ${errorMessage(err)}`, "error", 6000)
    console.error(err)
    return false
  }
  if (name != null) app.doc.metadata.name = name
  app.savedAs = name ?? app.doc.metadata.name ?? ""
  app.afterLoad()
  // a shipped workflow's model files replaced by this server's are said once, not on every load
  warnings = fixChoices ? unseenNotices(warnings) : [...new Set(warnings)]
  for (const w of warnings.slice(0, 4)) toast(w, "info", 4000)
  if (warnings.length > 4) toast(`… and ${warnings.length - 4} more warnings`, "info", 5000)
  return true
}

export function currentName() {
  return (app.doc.metadata?.name || "").trim()
}

/**
 * Save the canvas in the library under its name (asked for when it has none, or `askName`).
 * @param {{askName?: boolean}} [options]
 */
export async function saveToLibrary({ askName = false } = {}) {
  let name = currentName()
  if (askName || !name) {
    const asked = await promptDialog("Save workflow", "Name in the library", name || "My workflow", { okLabel: "Save" })
    if (!asked) return false
    name = asked
  }
  app.doc.metadata.name = name
  try {
    await api.saveWorkflow(name, toWorkflow())
  } catch (err) {
    toast(`Not saved: ${errorMessage(err)}`, "error")
    return false
  }
  app.savedAs = name
  app.markSaved()
  toast(`Saved “${name}”`, "success", 2000)
  return true
}

export async function openLibrary() {
  const list = h("div", { class: "library" }, h("p", { class: "hint" }, "Loading…"))
  const close = modal({ title: "Open workflow", body: list, wide: true })
  let saved
  let shipped
  try {
    ;[{ workflows: saved }, shipped] = await Promise.all([api.workflows(), api.shippedWorkflows().catch(() => ({}))])
  } catch (err) {
    list.replaceChildren(h("p", { class: "error-text" }, errorMessage(err)))
    return
  }
  /**
   * One workflow of the list: open it, and delete it (saved ones).
   * @param {string} title
   * @param {string | undefined} desc
   * @param {string} meta when it was saved, or "shipped"
   * @param {() => void} onOpen
   * @param {(() => void) | null} [onDelete]
   */
  const row = (title, desc, meta, onOpen, onDelete) =>
    h("li", { class: "library-item", dataset: { name: title } },
      h("button", { class: "library-open", onclick: onOpen },
        h("span", { class: "library-name" }, title),
        desc ? h("span", { class: "library-desc" }, desc) : null),
      meta ? h("span", { class: "library-meta" }, meta) : null,
      onDelete ? h("button", { class: "icon-btn small", title: `Delete ${title}`, onclick: onDelete }, icon("trash")) : null)
  list.replaceChildren(
    h("h3", {}, "Saved"),
    saved.length
      ? h("ul", { class: "library-list" }, saved.map((w) => row(w.name, w.description, timeAgo(w.updated), async () => {
        try {
          const data = await api.workflow(w.name)
          close()
          openWorkflow(data, { name: w.name, source: w.name })
        } catch (err) {
          toast(errorMessage(err), "error")
        }
      }, async () => {
        if (!(await confirmDialog("Delete workflow", `Delete “${w.name}” from the library?`, "Delete"))) return
        await api.deleteWorkflow(w.name)
        toast(`Deleted “${w.name}”`, "info", 2000)
        openLibrary()
      })))
      : h("p", { class: "hint" }, "Nothing saved yet: Save (Ctrl+S) puts the canvas in the library."),
    h("h3", {}, "Ready workflows"),
    h("ul", { class: "library-list" }, Object.entries(shipped).map(([key, wf]) =>
      row(wf.metadata?.name || key, wf.metadata?.description, "shipped", () => {
        close()
        openWorkflow(wf, { fixChoices: true, source: key })
      }))),
  )
}

export function newWorkflow() {
  if (app.tabs) {
    app.tabs.open()
    return
  }
  openWorkflow({ format: "atelier/workflow", version: 1, metadata: { name: "" }, parameters: {}, nodes: {}, ui: {} }, { name: "" })
}

export async function loadDefault() {
  try {
    const wf = await api.defaultWorkflow()
    openWorkflow(wf, { fixChoices: true, source: "the default workflow" })
  } catch (err) {
    toast(`No default workflow: ${errorMessage(err)}`, "error")
    newWorkflow()
  }
}

export function exportJson() {
  const wf = toWorkflow()
  const name = currentName() || "workflow"
  download(`${name.replace(/[^\w.-]+/g, "_")}.json`, new Blob([JSON.stringify(wf, null, 2)], { type: "application/json" }))
}

/** ComfyUI's API format of the canvas, made by the server's converter (the canvas has none of its own). */
export async function exportApi() {
  const name = currentName() || "workflow"
  try {
    const { workflow } = await api.convert(toWorkflow(), "comfyui-api")
    download(`${name.replace(/[^\w.-]+/g, "_")}_api.json`, new Blob([JSON.stringify(workflow, null, 2)], { type: "application/json" }))
  } catch (err) {
    toast(`Export failed: ${conversionError(err)}`, "error")
  }
}

/**
 * Why the server would not convert a workflow: its message, and the first nodes it names.
 * @param {unknown} err
 */
function conversionError(err) {
  if (!(err instanceof ApiError)) return errorMessage(err)
  const nodes = /** @type {{node?: string | null, node_type?: string | null, message: string}[]} */ (err.body.node_errors || [])
  const listed = nodes.slice(0, 3).map((e) => (e.node ? `node ${e.node}${e.node_type ? ` (${e.node_type})` : ""}: ${e.message}` : e.message))
  const more = nodes.length > 3 ? ` … and ${nodes.length - 3} more` : ""
  return listed.length ? `${err.message}: ${listed.join("; ")}${more}` : err.message
}

/**
 * Load whatever a file holds: Atelier or ComfyUI JSON (ComfyUI's formats converted by the server), or a
 * PNG/WEBP carrying a workflow. An image without a workflow goes into a new Load Image node (at `dropPos`
 * when it was dropped).
 * @param {File} file
 * @param {Point | null} [dropPos]
 * @returns {Promise<boolean>}
 */
export async function importFile(file, dropPos = null) {
  const isImage = file.type.startsWith("image/") || /\.(png|webp)$/i.test(file.name)
  const stem = file.name.replace(/\.(json|png|webp)$/i, "")
  try {
    if (isImage) {
      if (!/png|webp/i.test(file.type) && !/\.(png|webp)$/i.test(file.name)) return placeImage(file, dropPos)
      let found
      try {
        found = await api.convertImage(file)
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) return placeImage(file, dropPos)
        throw err
      }
      const isAtelier = found.source === "atelier"
      const ok = openWorkflow(found.workflow, { name: isAtelier ? null : stem, source: file.name })
      if (ok) toast(isAtelier ? `Loaded the workflow of ${file.name}` : `Imported the ComfyUI workflow of ${file.name}`, "success", 2500)
      return ok
    }
    const data = JSON.parse(await file.text())
    if (isComfyWorkflow(data)) {
      const { workflow } = await api.convert(data)
      return openWorkflow(workflow, { name: stem, source: file.name })
    }
    const isAtelier = data.format === "atelier/workflow"
    return openWorkflow(data, { name: isAtelier ? data.metadata?.name || stem : stem, source: file.name })
  } catch (err) {
    const msg = err instanceof SyntaxError ? "not valid JSON" : conversionError(err)
    toast(`Cannot load ${file.name}: ${msg}`, "error", 8000)
    return false
  }
}

/**
 * Upload an image into the input folder and select it in a Load Image node's combo.
 * @param {LGraphNode} node
 * @param {AtelierWidget} widget
 * @param {File} file
 */
export async function uploadInto(node, widget, file) {
  let res
  try {
    res = await api.upload(file)
  } catch (err) {
    toast(`Upload failed: ${errorMessage(err)}`, "error")
    return false
  }
  const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name
  const values = Array.isArray(widget.options.values) ? widget.options.values : []
  if (!values.includes(value)) widget.options.values = [...values, value]
  widget.value = value
  app.onWidgetChanged(node, widget)
  return true
}

/**
 * Ask for an image file and upload it into a Load Image node.
 * @param {LGraphNode} node
 * @param {AtelierWidget} widget its image combo
 */
export function pickImageFor(node, widget) {
  const input = h("input", { type: "file", accept: "image/*" })
  input.addEventListener("change", () => {
    const f = input.files?.[0]
    if (f) uploadInto(node, widget, f)
  })
  input.click()
}

/**
 * An image without a workflow: upload it and put a LoadImage node on the canvas.
 * @param {File} file
 * @param {Point | null} dropPos
 */
async function placeImage(file, dropPos) {
  if (!app.catalogue.LoadImage) {
    toast(`${file.name} carries no workflow`, "error")
    return false
  }
  const c = app.canvas
  const pos = dropPos || graphPosAt(c.canvas.getBoundingClientRect().left + 200, c.canvas.getBoundingClientRect().top + 200)
  const node = addNode("LoadImage", pos)
  const w = node?.widgets?.find((x) => x.name === "image")
  if (node && w) await uploadInto(node, w, file)
  toast(`${file.name} carries no workflow: uploaded it into a Load Image node`, "info", 4000)
  return true
}

/**
 * Load the workflow a job ran (its overrides applied), e.g. to fix a failed one.
 * @param {string} id
 */
export async function loadJob(id) {
  let job
  try {
    job = await api.job(id, true)
  } catch (err) {
    toast(errorMessage(err), "error")
    return false
  }
  /** @type {import("./graphio.js").Workflow} a copy, as the job ran it */
  const wf = JSON.parse(JSON.stringify(job.workflow || {}))
  for (const [k, v] of Object.entries(job.overrides || {})) {
    if (wf.parameters?.[k]) {
      wf.parameters[k].default = v
    } else {
      const dot = k.lastIndexOf(".")
      const node = wf.nodes?.[k.slice(0, dot)]
      if (node?.inputs) node.inputs[k.slice(dot + 1)] = v
    }
  }
  return openWorkflow(wf, { source: `job #${job.number}` })
}

/**
 * Load the workflow of a file the server has (an output image).
 * @param {string} url
 * @param {string} [filename]
 */
export async function loadFromUrl(url, filename = "image.png") {
  const res = await fetch(url)
  if (!res.ok) {
    toast(`Cannot fetch ${filename}`, "error")
    return false
  }
  const blob = await res.blob()
  return importFile(new File([blob], filename, { type: blob.type || "image/png" }))
}

/**
 * Files and palette entries dropped on the canvas.
 * @param {HTMLElement} target
 */
export function initDragAndDrop(target) {
  /** @param {DragEvent} e */
  const over = (e) => {
    if (!e.dataTransfer || ![...e.dataTransfer.types].some((t) => t === "Files" || t === "application/x-atelier-node")) return
    e.preventDefault()
    e.dataTransfer.dropEffect = "copy"
    target.classList.add("drop-target")
  }
  target.addEventListener("dragenter", over)
  target.addEventListener("dragover", over)
  target.addEventListener("dragleave", (e) => {
    if (!(e.relatedTarget instanceof Node && target.contains(e.relatedTarget))) target.classList.remove("drop-target")
  })
  target.addEventListener("drop", async (e) => {
    target.classList.remove("drop-target")
    const pos = app.canvas.convertEventToCanvasOffset(e)
    const nodeType = e.dataTransfer?.getData("application/x-atelier-node")
    if (nodeType) {
      e.preventDefault()
      addNode(nodeType, pos)
      return
    }
    const file = e.dataTransfer?.files?.[0]
    if (!file) return
    e.preventDefault()
    // an image dropped on a Load Image node goes into that node
    const node = app.graph.getNodeOnPos(pos[0], pos[1])
    const w = node?.widgets?.find((x) => x.name === "image" && x.type === "combo")
    if (node && w && file.type.startsWith("image/")) {
      await uploadInto(node, w, file)
      return
    }
    await importFile(file, pos)
  })
}

export { FormatError }
