// @ts-check
// The top bar: workflow menu and name, undo/redo, queue buttons, connection dot; the zoom buttons and the
// page title, which show the document's state.

import { api } from "./api.js"
import { zoomBy } from "./canvas.js"
import { refreshGallery } from "./gallery.js"
import { fitView } from "./graphio.js"
import { redo, undo } from "./history.js"
import { showShortcuts } from "./keyboard.js"
import { loadCatalogue, refreshChoices } from "./nodes.js"
import { refreshParams } from "./params.js"
import { batchCount, interrupt, queue, queueMany, queueSelected } from "./run.js"
import { app } from "./state.js"
import { byId, errorMessage, toast } from "./ui.js"
import { exportApi, exportJson, importFile, loadDefault, newWorkflow, openLibrary, saveToLibrary } from "./workflows.js"

const $ = byId

export function initToolbar() {
  app.updateTitle = updateTitle
  $("btn-queue").addEventListener("click", () => queueMany(batchCount()))
  $("btn-interrupt").addEventListener("click", interrupt)
  $("btn-new").addEventListener("click", newWorkflow)
  $("btn-open").addEventListener("click", openLibrary)
  $("btn-save").addEventListener("click", () => saveToLibrary())
  $("btn-undo").addEventListener("click", undo)
  $("btn-redo").addEventListener("click", redo)
  $("wf-name").addEventListener("change", () => {
    app.doc.metadata.name = $("wf-name", HTMLInputElement).value.trim()
    app.changed()
  })
  const fileInput = $("file-input", HTMLInputElement)
  fileInput.addEventListener("change", async () => {
    const f = fileInput.files?.[0]
    fileInput.value = ""
    if (f) await importFile(f)
  })
  /** @type {Record<string, () => void>} what the menus' items (data-action) do */
  const menuActions = {
    "save-as": () => saveToLibrary({ askName: true }),
    import: () => fileInput.click(),
    "export-json": exportJson,
    "export-api": exportApi,
    default: loadDefault,
    "queue-front": () => queue({ front: true }),
    "queue-selected": queueSelected,
    shortcuts: showShortcuts,
    "clear-history": async () => {
      const data = await api.history(200)
      await Promise.all(data.jobs.map((j) => api.deleteJob(j.id).catch(() => null)))
      refreshGallery()
    },
  }
  for (const dd of document.querySelectorAll(".dropdown")) {
    const btn = dd.querySelector(".dropdown-toggle")
    btn?.addEventListener("click", (e) => {
      e.stopPropagation()
      const open = dd.classList.contains("open")
      for (const o of document.querySelectorAll(".dropdown.open")) o.classList.remove("open")
      dd.classList.toggle("open", !open)
    })
  }
  document.addEventListener("click", (e) => {
    const item = e.target instanceof Element ? e.target.closest("[data-action]") : null
    if (item instanceof HTMLElement) {
      menuActions[item.dataset.action || ""]?.()
    }
    for (const o of document.querySelectorAll(".dropdown.open")) o.classList.remove("open")
  })
  $("btn-refresh").addEventListener("click", async () => {
    try {
      await loadCatalogue()
      refreshChoices(app.catalogue)
      app.rebuildPalette?.()
      refreshParams(true)
      app.setDirty()
      toast("Node definitions and model lists refreshed", "success", 2000)
    } catch (err) {
      toast(errorMessage(err), "error")
    }
  })
  $("zoom-in").addEventListener("click", () => zoomBy(1.2))
  $("zoom-out").addEventListener("click", () => zoomBy(1 / 1.2))
  $("zoom-fit").addEventListener("click", () => fitView())
}

/** The page title: the workflow's name, a dot when it is not saved, the progress of a run. */
function updateTitle() {
  document.title = app.runProgress != null ? `[${Math.round(app.runProgress * 100)}%] ${app.baseTitle || "Atelier"}` : app.baseTitle || "Atelier"
}

/**
 * Show the document's name, whether it is saved and whether undo/redo can go anywhere.
 * @param {import("./history.js").History} history
 */
export function showDocumentState(history) {
  const name = app.doc.metadata?.name || ""
  const nameField = $("wf-name", HTMLInputElement)
  if (document.activeElement !== nameField) nameField.value = name
  $("wf-modified").classList.toggle("on", history.current !== history.saved)
  app.baseTitle = `${name || "Untitled"}${history.current !== history.saved ? " •" : ""} — Atelier`
  app.updateTitle()
  $("btn-undo", HTMLButtonElement).disabled = !history.undo.length
  $("btn-redo", HTMLButtonElement).disabled = !history.redo.length
}

/**
 * The dot of the connection to the server.
 * @param {boolean} up
 */
export function showConnection(up) {
  $("conn-dot").classList.toggle("up", up)
  $("conn-dot").title = up ? "Connected to the server" : "Disconnected: reconnecting…"
}
