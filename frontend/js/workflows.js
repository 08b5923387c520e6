// Workflows: the server library, files (JSON, PNG), ComfyUI imports, drag and drop.

import { api } from "./api.js"
import { FormatError, fromComfyApi, fromComfyUi, loadIntoGraph, toComfyApi, toWorkflow, withParameterValues } from "./graphio.js"
import { workflowFromPng } from "./png.js"
import { addNode } from "./search.js"
import { app } from "./state.js"
import { confirmDialog, download, h, modal, promptDialog, timeAgo, toast } from "./ui.js"

/** Replace the canvas with a workflow (any format we read); tells the user what was odd about it. */
export function openWorkflow(data, { name = null, fixChoices = false, source = "" } = {}) {
  let warnings
  app.runtime.clear() // run marks, previews and pictures belong to the graph being replaced
  try {
    warnings = loadIntoGraph(data, { fixChoices })
  } catch (err) {
    toast(`Cannot load ${source || "this workflow"}: ${err.message}`, "error", 6000)
    console.error(err)
    return false
  }
  if (name != null) app.doc.metadata.name = name
  app.savedAs = name ?? app.doc.metadata.name ?? ""
  app.afterLoad()
  for (const w of warnings.slice(0, 4)) toast(w, "info", 4000)
  if (warnings.length > 4) toast(`… and ${warnings.length - 4} more warnings`, "info", 5000)
  return true
}

export function currentName() {
  return (app.doc.metadata?.name || "").trim()
}

export async function saveToLibrary({ askName = false } = {}) {
  let name = currentName()
  if (askName || !name) {
    name = await promptDialog("Save workflow", "Name in the library", name || "My workflow", { okLabel: "Save" })
    if (!name) return false
  }
  app.doc.metadata.name = name
  try {
    await api.saveWorkflow(name, toWorkflow())
  } catch (err) {
    toast(`Not saved: ${err.message}`, "error")
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
  let saved = []
  let shipped = {}
  try {
    ;[{ workflows: saved }, shipped] = await Promise.all([api.workflows(), api.shippedWorkflows().catch(() => ({}))])
  } catch (err) {
    list.replaceChildren(h("p", { class: "error-text" }, err.message))
    return
  }
  const row = (title, desc, meta, onOpen, onDelete) =>
    h("li", { class: "library-item", dataset: { name: title } },
      h("button", { class: "library-open", onclick: onOpen },
        h("span", { class: "library-name" }, title),
        desc ? h("span", { class: "library-desc" }, desc) : null),
      meta ? h("span", { class: "library-meta" }, meta) : null,
      onDelete ? h("button", { class: "icon-btn small", title: `Delete ${title}`, onclick: onDelete }, "🗑") : null)
  list.replaceChildren(
    h("h3", {}, "Saved"),
    saved.length
      ? h("ul", { class: "library-list" }, saved.map((w) => row(w.name, w.description, timeAgo(w.updated), async () => {
        try {
          const data = await api.workflow(w.name)
          close()
          openWorkflow(data, { name: w.name, source: w.name })
        } catch (err) {
          toast(err.message, "error")
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
  openWorkflow({ format: "atelier/workflow", version: 1, metadata: { name: "" }, parameters: {}, nodes: {}, ui: {} }, { name: "" })
}

export async function loadDefault() {
  try {
    const wf = await api.defaultWorkflow()
    openWorkflow(wf, { fixChoices: true, source: "the default workflow" })
  } catch (err) {
    toast(`No default workflow: ${err.message}`, "error")
    newWorkflow()
  }
}

export function exportJson() {
  const wf = toWorkflow()
  const name = currentName() || "workflow"
  download(`${name.replace(/[^\w.-]+/g, "_")}.json`, new Blob([JSON.stringify(wf, null, 2)], { type: "application/json" }))
}

export function exportApi() {
  const name = currentName() || "workflow"
  download(`${name.replace(/[^\w.-]+/g, "_")}_api.json`, new Blob([JSON.stringify(toComfyApi(), null, 2)], { type: "application/json" }))
}

/** Load whatever a file holds: Atelier/ComfyUI JSON, or a PNG carrying a workflow. */
export async function importFile(file, dropPos = null) {
  const isPng = file.type === "image/png" || /\.png$/i.test(file.name)
  try {
    if (isPng) {
      const found = await workflowFromPng(await file.arrayBuffer())
      if (found) return openPngWorkflow(found, file.name)
      return placeImage(file, dropPos)
    }
    if (file.type.startsWith("image/")) return placeImage(file, dropPos)
    const data = JSON.parse(await file.text())
    const stem = file.name.replace(/\.json$/i, "")
    const isAtelier = data.format === "atelier/workflow"
    return openWorkflow(data, { name: isAtelier ? data.metadata?.name || stem : stem, source: file.name })
  } catch (err) {
    const msg = err instanceof SyntaxError ? "not valid JSON" : err.message
    toast(`Cannot load ${file.name}: ${msg}`, "error", 6000)
    return false
  }
}

function openPngWorkflow(found, filename) {
  if (found.kind === "atelier") {
    const wf = withParameterValues(found.workflow, found.parameters)
    const ok = openWorkflow(wf, { source: filename })
    if (ok) toast(`Loaded the workflow of ${filename}`, "success", 2500)
    return ok
  }
  if (found.kind === "comfy") {
    const ok = openWorkflow(fromComfyApi(found.prompt, found.workflow), { name: filename.replace(/\.png$/i, ""), source: filename })
    if (ok) toast(`Imported the ComfyUI workflow of ${filename}`, "success", 2500)
    return ok
  }
  return openWorkflow(fromComfyUi(found.workflow), { name: filename.replace(/\.png$/i, ""), source: filename })
}

/** Upload an image into the input folder and select it in a Load Image node's combo. */
export async function uploadInto(node, widget, file) {
  let res
  try {
    res = await api.upload(file)
  } catch (err) {
    toast(`Upload failed: ${err.message}`, "error")
    return false
  }
  const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name
  if (!widget.options.values.includes(value)) widget.options.values = [...widget.options.values, value]
  widget.value = value
  app.onWidgetChanged(node, widget)
  return true
}

/** Ask for an image file and upload it into a Load Image node. */
export function pickImageFor(node, widget) {
  const input = h("input", { type: "file", accept: "image/*" })
  input.addEventListener("change", () => {
    const f = input.files?.[0]
    if (f) uploadInto(node, widget, f)
  })
  input.click()
}

/** An image without a workflow: upload it and put a LoadImage node on the canvas. */
async function placeImage(file, dropPos) {
  if (!app.catalogue.LoadImage) {
    toast(`${file.name} carries no workflow`, "error")
    return false
  }
  const c = app.canvas
  const pos = dropPos || c.convertEventToCanvasOffset({ clientX: c.canvas.getBoundingClientRect().left + 200, clientY: c.canvas.getBoundingClientRect().top + 200 })
  const node = addNode("LoadImage", pos)
  const w = node?.widgets?.find((x) => x.name === "image")
  if (w) await uploadInto(node, w, file)
  toast(`${file.name} carries no workflow: uploaded it into a Load Image node`, "info", 4000)
  return true
}

/** Load the workflow a job ran (its overrides applied), e.g. to fix a failed one. */
export async function loadJob(id) {
  let job
  try {
    job = await api.job(id, true)
  } catch (err) {
    toast(err.message, "error")
    return false
  }
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

export async function loadFromUrl(url, filename = "image.png") {
  const res = await fetch(url)
  if (!res.ok) {
    toast(`Cannot fetch ${filename}`, "error")
    return false
  }
  const blob = await res.blob()
  return importFile(new File([blob], filename, { type: blob.type || "image/png" }))
}

export function initDragAndDrop(target) {
  const over = (e) => {
    if (![...e.dataTransfer.types].some((t) => t === "Files" || t === "application/x-atelier-node")) return
    e.preventDefault()
    e.dataTransfer.dropEffect = "copy"
    target.classList.add("drop-target")
  }
  target.addEventListener("dragenter", over)
  target.addEventListener("dragover", over)
  target.addEventListener("dragleave", (e) => {
    if (!target.contains(e.relatedTarget)) target.classList.remove("drop-target")
  })
  target.addEventListener("drop", async (e) => {
    target.classList.remove("drop-target")
    const pos = app.canvas.convertEventToCanvasOffset(e)
    const nodeType = e.dataTransfer.getData("application/x-atelier-node")
    if (nodeType) {
      e.preventDefault()
      addNode(nodeType, pos)
      return
    }
    const file = e.dataTransfer.files?.[0]
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
