// @ts-check
// Atelier's canvas editor: starts the modules and wires them together.

import { EventSocket } from "./api.js"
import { makeCanvas, theme } from "./canvas.js"
import { initGallery, openViewer } from "./gallery.js"
import { initHistory, watchChanges } from "./history.js"
import { initKeyboard } from "./keyboard.js"
import { initMaskEditor } from "./maskeditor.js"
import { initModelBrowser } from "./modelbrowser.js"
import { initLinkStyle } from "./linkstyle.js"
import { initMinimap } from "./minimap.js"
import { installModeDrawing } from "./modes.js"
import { installNodeMenu } from "./nodemenu.js"
import { initVirtualMenu, installVirtualNodes } from "./virtual.js"
import { loadCatalogue } from "./nodes.js"
import { initParams, refreshParams, syncParameterTargets } from "./params.js"
import { initPipelines } from "./pipelines.js"
import { handleEvent, handlePreview, initRunUi } from "./run.js"
import { renderPalette } from "./search.js"
import { restoreSession, saveSession } from "./session.js"
import { app } from "./state.js"
import { exposeTestHooks } from "./testhooks.js"
import { initToolbar, showConnection, showDocumentState } from "./toolbar.js"
import { initTooltips } from "./tooltips.js"
import { byId, errorMessage, toast } from "./ui.js"
import { initDomLayer } from "./widgets.js"
import { initDragAndDrop, loadFromUrl, loadJob, pickImageFor } from "./workflows.js"

// modules reach each other through these hooks where importing would make a cycle
initHistory((history) => {
  saveSession(history.current)
  refreshParams()
  showDocumentState(history)
})
app.onWidgetChanged = (node, widget) => {
  syncParameterTargets(node, widget)
  app.setDirty()
  app.changed()
}
app.loadFromUrl = loadFromUrl
app.pickImageFor = pickImageFor
app.loadJob = loadJob
app.openViewer = (images, i) => openViewer(images, i, null)
installNodeMenu()
initMaskEditor()
installModeDrawing()
installVirtualNodes()

function initSidebars() {
  app.rebuildPalette = renderPalette(byId("palette"), byId("palette-filter", HTMLInputElement))
  initParams(byId("params"))
  initGallery(byId("queue-list"), byId("gallery"))
  initModelBrowser(byId("model-browser"))
  for (const btn of document.querySelectorAll("[data-collapse]")) {
    if (!(btn instanceof HTMLElement)) continue
    btn.addEventListener("click", () => {
      document.body.classList.toggle(`hide-${btn.dataset.collapse}`)
      setTimeout(() => app.canvas.draw(true, true), 0)
    })
  }
}

async function start() {
  theme()
  initDomLayer(byId("dom-widgets"))
  makeCanvas(byId("graph-canvas", HTMLCanvasElement))
  initLinkStyle()
  initMinimap(byId("canvas-wrap"))
  initVirtualMenu()
  initPipelines()
  initToolbar()
  initRunUi()
  initKeyboard()
  watchChanges()
  initDragAndDrop(byId("canvas-wrap"))
  initTooltips(byId("graph-canvas"))
  try {
    await loadCatalogue()
  } catch (err) {
    toast(`Cannot reach the server: ${errorMessage(err)}`, "error", 0)
    return
  }
  initSidebars()
  new EventSocket({ onEvent: handleEvent, onPreview: handlePreview, onStatus: showConnection })
  app.ready = true
  await restoreSession()
  document.body.classList.add("ready")
}

exposeTestHooks()
start()
