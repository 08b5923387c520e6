// @ts-check
// The image viewer over the page: zoom (wheel, buttons) and pan (drag); compare two images side by side
// or with a slider; the generation parameters the image carries; "Use this seed", "Load workflow",
// "Send to inpaint", favourite and board. Arrow keys go through the images, Escape closes it.

import { api, imageUrl } from "./api.js"
import { galleryApi } from "./galleryapi.js"
import { app } from "./state.js"
import { errorMessage, h, toast } from "./ui.js"
import { openWorkflow } from "./workflows.js"

/** @typedef {import("./state.js").ImageRef} ImageRef */
/** @typedef {import("./galleryapi.js").GalleryImage} GalleryImage */
/** @typedef {import("./galleryapi.js").Board} Board */
/** @typedef {import("litegraph").LGraphNode} LGraphNode */

/**
 * An image the viewer shows: a reference, and what the gallery knows of it when it comes from there.
 * @typedef {ImageRef & Partial<GalleryImage>} ViewItem
 */

/**
 * The images the viewer goes through.
 * @typedef {object} ViewList
 * @property {() => number} count
 * @property {(i: number) => Promise<ViewItem | null>} at
 * @property {(img: GalleryImage) => void} [updated] a gallery image changed (favourite, board)
 * @property {() => Board[]} [boards]
 */

/** @typedef {"single" | "side" | "slider"} CompareMode */

/** The shipped workflow "Send to inpaint" opens (workflows/inpaint_face.json). */
export const INPAINT_WORKFLOW = "inpaint_face"

/**
 * A list of plain image references.
 * @param {ImageRef[]} images
 * @returns {ViewList}
 */
export function listOf(images) {
  return { count: () => images.length, at: async (i) => images[i] || null }
}

/**
 * Open the viewer on image `index` of `list`.
 * @param {ViewList} list
 * @param {number} index
 * @param {{caption?: string}} [options]
 */
export function openImageViewer(list, index, options = {}) {
  document.getElementById("viewer")?.remove()
  const v = new Viewer(list, index, options.caption || "")
  document.body.appendChild(v.box)
  v.show()
  return v
}

class Viewer {
  /**
   * @param {ViewList} list
   * @param {number} index
   * @param {string} caption
   */
  constructor(list, index, caption) {
    this.list = list
    this.i = index
    this.extraCaption = caption
    /** @type {ViewItem | null} */
    this.cur = null
    /** @type {ViewItem | null} */
    this.other = null
    this.j = -1 // the index of the image compared with
    /** @type {CompareMode} */
    this.mode = "single"
    this.view = { scale: 1, x: 0, y: 0 }
    this.split = 50 // the slider's position, percent of the stage width
    this.imgA = h("img", { class: "viewer-img gv-img", alt: "", draggable: "false" })
    this.imgB = h("img", { class: "gv-img gv-img-b", alt: "", draggable: "false" })
    this.paneA = h("div", { class: "gv-pane gv-pane-a" }, this.imgA)
    this.paneB = h("div", { class: "gv-pane gv-pane-b" }, this.imgB)
    this.handle = h("div", { class: "gv-handle", title: "Drag to compare" })
    this.stage = h("div", { class: "gv-stage mode-single" }, this.paneA, this.paneB, this.handle)
    this.zoomLabel = h("span", { class: "gv-zoom hint" })
    this.caption = h("div", { class: "viewer-caption" })
    this.info = h("div", { class: "gv-info" })
    this.modeBtns = /** @type {Record<CompareMode, HTMLButtonElement>} */ ({
      single: h("button", { class: "btn small", onclick: () => this.setMode("single") }, "Single"),
      side: h("button", { class: "btn small", onclick: () => this.setMode("side") }, "Side by side"),
      slider: h("button", { class: "btn small", onclick: () => this.setMode("slider") }, "Slider"),
    })
    this.bNav = h("span", { class: "gv-bnav" },
      h("button", { class: "icon-btn small", title: "Compare with the previous image", onclick: () => this.stepB(-1) }, "◀"),
      h("span", { class: "hint" }, "B"),
      h("button", { class: "icon-btn small", title: "Compare with the next image", onclick: () => this.stepB(1) }, "▶"))
    this.box = h("div", { id: "viewer", class: "viewer gviewer", onclick: (/** @type {MouseEvent} */ e) => { if (e.target === this.box) this.close() } },
      h("div", { class: "gv-main" },
        h("div", { class: "gv-toolbar" },
          h("button", { class: "icon-btn small", title: "Zoom out", onclick: () => this.zoomBy(1 / 1.25) }, "−"),
          this.zoomLabel,
          h("button", { class: "icon-btn small", title: "Zoom in", onclick: () => this.zoomBy(1.25) }, "+"),
          h("button", { class: "btn small", title: "Fit the image (double-click)", onclick: () => this.fit() }, "Fit"),
          h("button", { class: "btn small", title: "Actual pixels", onclick: () => this.actual() }, "1:1"),
          h("span", { class: "gv-sep" }),
          this.modeBtns.single, this.modeBtns.side, this.modeBtns.slider, this.bNav,
          h("span", { class: "spacer" }),
          h("button", { class: "icon-btn small", title: "Previous image (←)", onclick: () => this.go(-1) }, "‹"),
          h("button", { class: "icon-btn small", title: "Next image (→)", onclick: () => this.go(1) }, "›"),
          h("button", { class: "icon-btn small", title: "Close (Esc)", onclick: () => this.close() }, "✕")),
        this.stage,
        h("div", { class: "viewer-bar" }, this.caption)),
      h("aside", { class: "gv-side" }, this.info))
    this.onKey = this.onKey.bind(this)
    document.addEventListener("keydown", this.onKey, true)
    this.wirePointer()
  }

  close() {
    this.box.remove()
    document.removeEventListener("keydown", this.onKey, true)
  }

  /** @param {KeyboardEvent} e */
  onKey(e) {
    if (!this.box.isConnected) return
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.target instanceof HTMLTextAreaElement) return
    if (e.key === "Escape") this.close()
    else if (e.key === "ArrowRight") this.go(1)
    else if (e.key === "ArrowLeft") this.go(-1)
    else if (e.key === "+" || e.key === "=") this.zoomBy(1.25)
    else if (e.key === "-") this.zoomBy(1 / 1.25)
    else if (e.key === "0") this.fit()
    else return
    e.stopPropagation()
    e.preventDefault()
  }

  /** @param {number} d */
  go(d) {
    const n = this.i + d
    if (n < 0 || n >= this.list.count()) return
    this.i = n
    if (this.j === n) this.j = n - d
    this.show()
  }

  /** @param {number} d */
  stepB(d) {
    const n = this.j + d
    if (n < 0 || n >= this.list.count()) return
    this.j = n === this.i ? n + d : n
    if (this.j < 0 || this.j >= this.list.count()) this.j = n
    this.showB()
  }

  async show() {
    const i = this.i
    const item = await this.list.at(i)
    if (!item || i !== this.i) return
    this.cur = item
    this.imgA.src = imageUrl(item)
    const total = this.list.count()
    this.caption.textContent = `${item.filename}${this.extraCaption ? ` · ${this.extraCaption}` : ""}${total > 1 ? ` · ${i + 1}/${total}` : ""}`
    this.renderInfo()
    const fitOnLoad = () => this.fit()
    if (this.imgA.complete && this.imgA.naturalWidth) fitOnLoad()
    else this.imgA.addEventListener("load", fitOnLoad, { once: true })
    if (this.mode !== "single") this.showB()
  }

  async showB() {
    if (this.j < 0 || this.j >= this.list.count() || this.j === this.i) {
      this.j = this.i + 1 < this.list.count() ? this.i + 1 : this.i - 1
    }
    const j = this.j
    const item = j >= 0 ? await this.list.at(j) : null
    if (j !== this.j) return
    this.other = item
    if (item) this.imgB.src = imageUrl(item)
    else this.imgB.removeAttribute("src")
    this.box.dataset.compareWith = item?.filename || ""
    this.renderInfo()
  }

  /** @param {CompareMode} mode */
  setMode(mode) {
    this.mode = mode
    this.stage.className = `gv-stage mode-${mode}`
    this.box.dataset.mode = mode
    for (const [m, b] of Object.entries(this.modeBtns)) b.classList.toggle("on", m === mode)
    this.bNav.hidden = mode === "single"
    // the slider shows B over A in one pane; side by side, each in its own
    if (mode === "slider") this.paneA.append(this.imgB)
    else this.paneB.append(this.imgB)
    if (mode !== "single") this.showB()
    requestAnimationFrame(() => this.fit())
    this.applySplit()
  }

  // -- zoom and pan -----------------------------------------------------------------------------

  paneSize() {
    const r = this.paneA.getBoundingClientRect()
    return { w: r.width || 1, h: r.height || 1 }
  }

  fit() {
    const nw = this.imgA.naturalWidth || 1
    const nh = this.imgA.naturalHeight || 1
    const { w, h: ph } = this.paneSize()
    const s = Math.min(w / nw, ph / nh)
    this.view = { scale: s, x: (w - nw * s) / 2, y: (ph - nh * s) / 2 }
    this.apply()
  }

  actual() {
    const { w, h: ph } = this.paneSize()
    this.zoomAt(1 / this.view.scale, w / 2, ph / 2)
  }

  /** @param {number} f */
  zoomBy(f) {
    const { w, h: ph } = this.paneSize()
    this.zoomAt(f, w / 2, ph / 2)
  }

  /**
   * Zoom by `f` keeping the point (px, py) of the pane where it is.
   * @param {number} f
   * @param {number} px
   * @param {number} py
   */
  zoomAt(f, px, py) {
    const v = this.view
    const s = Math.min(32, Math.max(0.02, v.scale * f))
    const k = s / v.scale
    this.view = { scale: s, x: px - (px - v.x) * k, y: py - (py - v.y) * k }
    this.apply()
  }

  apply() {
    const { scale, x, y } = this.view
    const t = `translate(${x}px, ${y}px) scale(${scale})`
    const rendering = scale >= 2 ? "pixelated" : "auto" // close up, the pixels themselves
    for (const img of [this.imgA, this.imgB]) {
      img.style.transform = t
      img.style.imageRendering = rendering
    }
    this.zoomLabel.textContent = `${Math.round(scale * 100)}%`
    this.box.dataset.zoom = String(scale)
  }

  applySplit() {
    this.imgB.style.clipPath = this.mode === "slider" ? `inset(0 0 0 ${this.clipFor()}px)` : ""
    this.handle.style.left = `${this.split}%`
    this.box.dataset.split = String(Math.round(this.split))
  }

  /** The slider's position in B's own (untransformed) pixels: B is clipped left of it. */
  clipFor() {
    const { w } = this.paneSize()
    const { scale, x } = this.view
    return Math.max(0, ((this.split / 100) * w - x) / scale)
  }

  wirePointer() {
    /** @type {{x: number, y: number, vx: number, vy: number} | null} */
    let drag = null
    let sliding = false
    this.stage.addEventListener("wheel", (e) => {
      e.preventDefault()
      const pane = /** @type {HTMLElement} */ (e.target instanceof Element && e.target.closest(".gv-pane")) || this.paneA
      const r = pane.getBoundingClientRect()
      this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top)
      this.applySplit()
    }, { passive: false })
    this.stage.addEventListener("dblclick", () => this.fit())
    this.stage.addEventListener("dragstart", (e) => e.preventDefault()) // a drag pans or slides, never drags the image
    this.stage.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return
      this.stage.setPointerCapture(e.pointerId)
      if (e.target === this.handle) {
        sliding = true // the slider's handle: B is cut where it goes
        return
      }
      drag = { x: e.clientX, y: e.clientY, vx: this.view.x, vy: this.view.y }
      this.stage.classList.add("panning")
    })
    /** @param {PointerEvent} e */
    const slide = (e) => {
      const r = this.stage.getBoundingClientRect()
      this.split = Math.min(100, Math.max(0, ((e.clientX - r.left) / r.width) * 100))
      this.applySplit()
    }
    this.stage.addEventListener("pointermove", (e) => {
      if (sliding) {
        slide(e)
        return
      }
      if (!drag) return
      this.view = { ...this.view, x: drag.vx + e.clientX - drag.x, y: drag.vy + e.clientY - drag.y }
      this.apply()
      this.applySplit()
    })
    /** @param {PointerEvent} e */
    const end = (e) => {
      if (sliding && e.type === "pointerup") slide(e)
      drag = null
      sliding = false
      this.stage.classList.remove("panning")
    }
    this.stage.addEventListener("pointerup", end)
    this.stage.addEventListener("pointercancel", end)
  }

  // -- the side panel ---------------------------------------------------------------------------

  renderInfo() {
    const img = this.cur
    if (!img) return
    const p = img.params
    /** @type {[string, unknown][]} */
    const rows = p
      ? [
          ["Prompt", p.prompt],
          ["Negative", p.negative],
          ["Seed", p.seed],
          ["Sampler", p.sampler],
          ["Scheduler", p.scheduler],
          ["Steps", p.steps],
          ["CFG", p.cfg],
          ["Model", p.model],
          ["Workflow", p.workflow],
        ]
      : []
    if (img.width && img.height) rows.push(["Size", `${img.width} × ${img.height}`])
    const known = rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
    const seed = p?.seed ?? null
    const boards = this.list.boards?.() || []
    const boardSel = h("select", { class: "gal-select", "aria-label": "Board" },
      h("option", { value: "" }, "No board"),
      ...boards.map((b) => h("option", { value: String(b.id) }, b.name)))
    boardSel.value = img.board ? String(img.board) : ""
    boardSel.addEventListener("change", () => this.patch({ board: boardSel.value ? Number(boardSel.value) : null }))
    const inGallery = typeof img.id === "number"
    this.info.replaceChildren(
      h("h3", {}, "Parameters"),
      known.length
        ? h("dl", { class: "gv-params" }, ...known.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { param: k.toLowerCase() } }, String(v))]))
        : h("p", { class: "hint" }, "This image carries no generation parameters."),
      h("div", { class: "gv-actions" },
        h("button", { class: "btn", disabled: seed === null, title: "Set this seed on the sampler of the open workflow", onclick: () => seed !== null && useSeed(seed) }, "Use this seed"),
        h("button", { class: "btn", title: "Load this workflow (embedded in the image)", onclick: () => this.loadWorkflow() }, "Load workflow"),
        h("button", { class: "btn", title: "Copy the image into the input folder and open the inpaint workflow on it", onclick: () => this.sendToInpaint() }, "Send to inpaint"),
        h("button", { class: "btn", title: "Paint a mask on this image; the masked copy goes into a Load Image node", onclick: () => this.openInMaskEditor() }, "Mask editor"),
        inGallery ? h("button", { class: `btn gv-fav${img.favourite ? " on" : ""}`, onclick: () => this.patch({ favourite: !img.favourite }) }, img.favourite ? "★ Favourite" : "☆ Favourite") : null,
        inGallery ? h("label", { class: "gv-board" }, "Board ", boardSel) : null,
        h("a", { class: "btn", href: imageUrl(img), download: img.filename }, "Download")),
      this.mode !== "single" && this.other
        ? h("p", { class: "hint gv-compare-note" }, `Comparing with ${this.other.filename}${this.other.params?.seed != null ? ` (seed ${this.other.params.seed})` : ""}`)
        : "",
    )
  }

  /** This image in the mask editor (when the canvas has one); its masked copy goes into a Load Image node. */
  openInMaskEditor() {
    const img = this.cur
    if (!img) return
    const hooks = /** @type {{openMaskEditor?: (ref: ImageRef) => unknown}} */ (/** @type {unknown} */ (app))
    this.close()
    hooks.openMaskEditor?.({ filename: img.filename, subfolder: img.subfolder, type: img.type || "output" })
  }

  /** @param {{favourite?: boolean, board?: number | null}} change */
  async patch(change) {
    const img = this.cur
    if (!img || typeof img.id !== "number") return
    try {
      const updated = await galleryApi.update(img.id, change)
      this.cur = updated
      this.list.updated?.(updated)
      this.renderInfo()
    } catch (err) {
      toast(errorMessage(err), "error")
    }
  }

  async loadWorkflow() {
    const img = this.cur
    if (!img) return
    this.close()
    await app.loadFromUrl?.(imageUrl(img), img.filename)
  }

  async sendToInpaint() {
    const img = this.cur
    if (!img) return
    try {
      await sendToInpaint(img)
      this.close()
    } catch (err) {
      toast(`Cannot send to inpaint: ${errorMessage(err)}`, "error")
    }
  }
}

// -- actions on the open workflow ---------------------------------------------------------------------

/**
 * The seed widgets of the samplers of the open workflow (nodes with a sampler_name and a seed).
 * @returns {{node: LGraphNode, widget: import("./widgets.js").AtelierWidget}[]}
 */
function seedWidgets() {
  const out = []
  for (const node of app.graph._nodes) {
    const ws = /** @type {import("./widgets.js").AtelierWidget[]} */ (node.widgets || [])
    const seed = ws.find((w) => w.name === "seed" || w.name === "noise_seed")
    if (seed && ws.some((w) => w.name === "sampler_name")) out.push({ node, widget: seed })
  }
  return out
}

/**
 * Set `seed` on the sampler(s) of the open workflow, its "control after generate" to fixed.
 * @param {number} seed
 */
export function useSeed(seed) {
  const found = seedWidgets()
  if (!found.length) {
    toast("The open workflow has no sampler with a seed", "error")
    return false
  }
  for (const { node, widget } of found) {
    widget.value = seed
    if (widget.control) widget.control.value = "fixed"
    app.onWidgetChanged(node, widget)
  }
  app.setDirty()
  toast(`Seed ${seed} set on ${found.map((f) => f.node.title).join(", ")}`, "success", 2500)
  return true
}

/**
 * Copy an image into the input folder, open the inpaint workflow with its Load Image on it, and the mask
 * editor on it when the canvas has one (`app.openMaskEditor`).
 * @param {ViewItem} img
 */
export async function sendToInpaint(img) {
  let ref
  if (typeof img.id === "number") {
    ref = await galleryApi.toInput(img.id)
  } else {
    const blob = await (await fetch(imageUrl(img))).blob()
    ref = await api.upload(new File([blob], img.filename, { type: blob.type || "image/png" }))
  }
  const value = ref.subfolder ? `${ref.subfolder}/${ref.name}` : ref.name
  const shipped = await api.shippedWorkflows()
  const wf = shipped[INPAINT_WORKFLOW]
  if (!wf) throw new Error(`the inpaint workflow (workflows/${INPAINT_WORKFLOW}.json) is not installed`)
  if (!openWorkflow(JSON.parse(JSON.stringify(wf)), { source: "the inpaint workflow" })) return
  const load = app.graph._nodes.find((n) => n.type === "LoadImage")
  const widget = /** @type {import("./widgets.js").AtelierWidget | undefined} */ (load?.widgets?.find((w) => w.name === "image"))
  if (!load || !widget) throw new Error("the inpaint workflow has no Load Image node")
  /** @param {string} v */
  const point = (v) => {
    const values = Array.isArray(widget.options.values) ? widget.options.values : []
    if (!values.includes(v)) widget.options.values = [...values, v]
    widget.value = v
    app.onWidgetChanged(load, widget)
    app.setDirty()
  }
  point(value)
  toast(`${img.filename} copied to the input folder as ${value}: paint the area to repaint`, "success", 3500)
  const hooks = /** @type {{openMaskEditor?: (ref: ImageRef, options: {onSaved?: (saved: ImageRef) => void}) => unknown}} */ (/** @type {unknown} */ (app))
  hooks.openMaskEditor?.({ filename: ref.name, subfolder: ref.subfolder, type: "input" }, {
    onSaved: (saved) => point(saved.subfolder ? `${saved.subfolder}/${saved.filename}` : saved.filename),
  })
}
