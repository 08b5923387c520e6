// @ts-check
// The mask editor: paint and erase a mask over an image (brush size and hardness, pen pressure, invert,
// clear, undo, zoom and pan) and save it as the alpha channel of a copy of the image in the input folder
// (POST /atelier/v1/upload/mask), which LoadImage reads back as its MASK output (transparent = masked).
//
// The mask is one byte per image pixel (0 = keep, 255 = masked). Brush dabs raise (paint) or lower (erase)
// it to the dab's strength, never past it, so a stroke crossing itself does not build up and a soft edge
// stays soft. The overlay canvas shows it; only the rectangle a stroke touched is redrawn, once a frame.

import { imageUrl } from "./api.js"
import { inputWidget } from "./nodes.js"
import { addNode } from "./search.js"
import { app } from "./state.js"
import { errorMessage, h, isTyping, toast } from "./ui.js"

/** @typedef {import("./state.js").ImageRef} ImageRef */
/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("litegraph").IContextMenuValue} MenuEntry */

/**
 * @typedef {object} MaskEditorOptions
 * @property {(saved: ImageRef) => void} [onSaved] called with the saved copy (an input image); without it the
 *   copy goes into a Load Image node of the canvas (the selected one, else the only one, else a new one)
 */

/** @typedef {"size" | "opacity" | "both" | "off"} PressureUse */

/** what the editor remembers between openings */
const settings = {
  size: 48,
  hardness: 0.6,
  /** @type {"paint" | "erase"} */
  mode: "paint",
  /** @type {PressureUse} */
  pressure: "size",
}

const MAX_UNDO = 30
/** bytes the undo steps of a big image may hold together (each step is a copy of the mask) */
const UNDO_BYTES = 256 * 1024 * 1024
const OVERLAY_RGB = [255, 64, 96]

/** A mask of `width` x `height` pixels and the overlay canvas that shows it. */
export class MaskLayer {
  /**
   * @param {number} width
   * @param {number} height
   */
  constructor(width, height) {
    this.width = width
    this.height = height
    /** @type {Uint8ClampedArray} */
    this.mask = new Uint8ClampedArray(width * height)
    this.canvas = h("canvas", { class: "mask-overlay", width, height })
    const ctx = this.canvas.getContext("2d")
    if (!ctx) throw new Error("no 2D canvas")
    this.ctx = ctx
    this.pixels = ctx.createImageData(width, height)
    const d = this.pixels.data
    for (let i = 0; i < d.length; i += 4) {
      d[i] = OVERLAY_RGB[0]
      d[i + 1] = OVERLAY_RGB[1]
      d[i + 2] = OVERLAY_RGB[2]
    }
    /** the rectangle changed since the last draw: x0, y0 inclusive, x1, y1 exclusive */
    this.dirty = { x0: width, y0: height, x1: 0, y1: 0 }
    this.frame = 0
    /** @type {Uint8ClampedArray[]} */
    this.undoStack = []
    /** @type {Uint8ClampedArray[]} */
    this.redoStack = []
    this.modified = false
    /** how long redrawing the overlay took, for the performance check */
    this.drawStats = { count: 0, ms: 0, maxMs: 0 }
  }

  /**
   * Press a round dab into the mask at (cx, cy), image pixels.
   * @param {number} cx
   * @param {number} cy
   * @param {number} radius
   * @param {number} hardness 0..1: the part of the radius at full strength; the rest fades out smoothly
   * @param {number} strength 0..1
   * @param {boolean} erase
   */
  dab(cx, cy, radius, hardness, strength, erase) {
    const r = Math.max(0.5, radius)
    const x0 = Math.max(0, Math.floor(cx - r))
    const y0 = Math.max(0, Math.floor(cy - r))
    const x1 = Math.min(this.width, Math.ceil(cx + r))
    const y1 = Math.min(this.height, Math.ceil(cy + r))
    if (x0 >= x1 || y0 >= y1) return
    // at least a pixel of fade, so even a hard brush has a smooth edge
    const inner = Math.min(hardness * r, r - 1)
    const fade = r - inner
    const top = strength * 255
    const m = this.mask
    const w = this.width
    const r2 = r * r
    for (let y = y0; y < y1; y++) {
      const dy = y + 0.5 - cy
      const row = y * w
      for (let x = x0; x < x1; x++) {
        const dx = x + 0.5 - cx
        const d2 = dx * dx + dy * dy
        if (d2 >= r2) continue
        let v = top
        const d = Math.sqrt(d2)
        if (d > inner) {
          const t = (d - inner) / fade
          v = top * (1 - t * t * (3 - 2 * t))
        }
        const i = row + x
        if (erase) {
          const cap = 255 - v
          if (m[i] > cap) m[i] = cap
        } else if (m[i] < v) {
          m[i] = v
        }
      }
    }
    this.touch(x0, y0, x1, y1)
  }

  /**
   * @param {number} x0
   * @param {number} y0
   * @param {number} x1
   * @param {number} y1
   */
  touch(x0, y0, x1, y1) {
    const d = this.dirty
    d.x0 = Math.min(d.x0, x0)
    d.y0 = Math.min(d.y0, y0)
    d.x1 = Math.max(d.x1, x1)
    d.y1 = Math.max(d.y1, y1)
    this.modified = true
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw())
  }

  /** Copy the changed rectangle of the mask into the overlay. */
  draw() {
    this.frame = 0
    const { x0, y0, x1, y1 } = this.dirty
    if (x0 >= x1 || y0 >= y1) return
    const t0 = performance.now()
    const m = this.mask
    const d = this.pixels.data
    const w = this.width
    for (let y = y0; y < y1; y++) {
      for (let i = y * w + x0, end = y * w + x1; i < end; i++) d[i * 4 + 3] = m[i]
    }
    this.ctx.putImageData(this.pixels, 0, 0, x0, y0, x1 - x0, y1 - y0)
    this.dirty = { x0: this.width, y0: this.height, x1: 0, y1: 0 }
    const ms = performance.now() - t0
    this.drawStats.count++
    this.drawStats.ms += ms
    this.drawStats.maxMs = Math.max(this.drawStats.maxMs, ms)
  }

  touchAll() {
    this.touch(0, 0, this.width, this.height)
  }

  /** Remember the mask as it is, before a change (a stroke, invert, clear). */
  checkpoint() {
    this.undoStack.push(this.mask.slice())
    const most = Math.max(2, Math.min(MAX_UNDO, Math.floor(UNDO_BYTES / this.mask.length)))
    while (this.undoStack.length > most) this.undoStack.shift()
    this.redoStack = []
  }

  undo() {
    const prev = this.undoStack.pop()
    if (!prev) return false
    this.redoStack.push(this.mask)
    this.mask = prev
    this.touchAll()
    return true
  }

  redo() {
    const next = this.redoStack.pop()
    if (!next) return false
    this.undoStack.push(this.mask)
    this.mask = next
    this.touchAll()
    return true
  }

  invert() {
    this.checkpoint()
    const m = this.mask
    for (let i = 0; i < m.length; i++) m[i] = 255 - m[i]
    this.touchAll()
  }

  clear() {
    this.checkpoint()
    this.mask.fill(0)
    this.touchAll()
  }

  /**
   * Take the mask from an image's alpha (transparent = masked), as LoadImage reads it.
   * @param {HTMLImageElement} img
   */
  fromAlpha(img) {
    const c = h("canvas", { width: this.width, height: this.height })
    const ctx = c.getContext("2d", { willReadFrequently: true })
    if (!ctx) return
    ctx.drawImage(img, 0, 0)
    const d = ctx.getImageData(0, 0, this.width, this.height).data
    const m = this.mask
    for (let i = 0; i < m.length; i++) m[i] = 255 - d[i * 4 + 3]
    this.touchAll()
    this.modified = false
  }

  /**
   * The mask as ComfyUI's /upload/mask takes it: a PNG whose alpha is 255 - mask (black, transparent where masked).
   * @returns {Promise<Blob>}
   */
  toPng() {
    const c = h("canvas", { width: this.width, height: this.height })
    const ctx = c.getContext("2d")
    if (!ctx) return Promise.reject(new Error("no 2D canvas"))
    const out = ctx.createImageData(this.width, this.height)
    const d = out.data
    const m = this.mask
    for (let i = 0; i < m.length; i++) d[i * 4 + 3] = 255 - m[i]
    ctx.putImageData(out, 0, 0)
    return new Promise((resolve, reject) => c.toBlob((b) => (b ? resolve(b) : reject(new Error("cannot encode the mask"))), "image/png"))
  }
}

/**
 * The name the masked copy is saved under: the image's, without an earlier "_masked" or " (2)".
 * @param {string} filename
 */
export function maskedName(filename) {
  const stem = filename.replace(/\.[^.]*$/, "").replace(/( \(\d+\))+$/, "").replace(/_masked$/, "")
  return `${stem || "image"}_masked.png`
}

/**
 * Upload a mask for an image; the server stores the image with the mask as its alpha.
 * @param {Blob} mask
 * @param {ImageRef} original
 * @returns {Promise<ImageRef>}
 */
async function uploadMask(mask, original) {
  const form = new FormData()
  form.append("image", mask, maskedName(original.filename))
  form.append("original_ref", JSON.stringify({ filename: original.filename, subfolder: original.subfolder || "", type: original.type || "output" }))
  form.append("subfolder", original.type === "input" ? original.subfolder || "" : "")
  const res = await fetch("/atelier/v1/upload/mask", { method: "POST", body: form })
  /** @type {{name?: string, subfolder?: string, error?: string}} */
  let body = {}
  try {
    body = await res.json()
  } catch {
    // a body that is not JSON: the status says it
  }
  if (!res.ok || !body.name) throw new Error(body.error || `HTTP ${res.status}`)
  return { filename: body.name, subfolder: body.subfolder || "", type: "input" }
}

// -- the editor ----------------------------------------------------------------------------------------

/** @type {MaskEditor | null} */
let current = null

/**
 * Open the mask editor on an image (an input, output or temp image the server has).
 * @param {ImageRef} ref
 * @param {MaskEditorOptions} [options]
 * @returns {Promise<ImageRef | null>} the saved copy, or null when closed without saving
 */
export function openMaskEditor(ref, options = {}) {
  current?.close(null)
  return new Promise((resolve) => {
    const editor = new MaskEditor(ref, options, resolve)
    current = editor
  })
}

class MaskEditor {
  /**
   * @param {ImageRef} ref
   * @param {MaskEditorOptions} options
   * @param {(saved: ImageRef | null) => void} resolve
   */
  constructor(ref, options, resolve) {
    this.ref = ref
    this.options = options
    this.resolve = resolve
    /** @type {MaskLayer | null} */
    this.layer = null
    this.scale = 1
    this.tx = 0
    this.ty = 0
    this.spaceDown = false
    /** @type {{x: number, y: number, tx: number, ty: number} | null} */
    this.pan = null
    /** @type {{id: number, x: number, y: number, p: number, carry: number, pen: boolean, erase: boolean} | null} */
    this.stroke = null
    this.saving = false
    this.escArmed = 0
    /** where the stage is on the page: read when the view is fitted (on opening and resizing), so that
     * pointer moves never force a layout */
    this.stageRect = new DOMRect()
    /** timings of pointer handling, for the performance check */
    this.stats = { events: 0, ms: 0, maxMs: 0 }
    // the window: a bar of tools over the stage, the picture and its mask on a zoomable layer
    const num = (/** @type {string} */ cls, /** @type {number} */ min, /** @type {number} */ max, /** @type {number} */ value, /** @type {string} */ label) =>
      h("input", { type: "range", class: cls, min, max, value, "aria-label": label })
    this.sizeInput = num("me-size", 1, 400, settings.size, "Brush size")
    this.hardInput = num("me-hardness", 0, 100, Math.round(settings.hardness * 100), "Brush hardness")
    this.sizeLabel = h("span", { class: "me-value" })
    this.hardLabel = h("span", { class: "me-value" })
    this.zoomLabel = h("span", { class: "me-value me-zoom" })
    this.paintBtn = h("button", { class: "btn small me-paint", title: "Paint the mask (B)", onclick: () => this.setMode("paint") }, "Brush")
    this.eraseBtn = h("button", { class: "btn small me-erase", title: "Erase the mask (E; X switches)", onclick: () => this.setMode("erase") }, "Eraser")
    this.pressureSelect = h("select", { class: "me-pressure", title: "What pen pressure changes", "aria-label": "Pen pressure" },
      ["size", "opacity", "both", "off"].map((v) => h("option", { value: v, selected: v === settings.pressure }, `pressure: ${v}`)))
    this.undoBtn = h("button", { class: "btn small me-undo", title: "Undo (Ctrl+Z)", onclick: () => this.undo() }, "↶")
    this.redoBtn = h("button", { class: "btn small me-redo", title: "Redo (Ctrl+Y)", onclick: () => this.redo() }, "↷")
    this.saveBtn = h("button", { class: "btn btn-primary small me-save", title: "Save the mask into a copy of the image (Ctrl+S)", onclick: () => this.save() }, "Save")
    this.picture = h("img", { class: "me-picture", alt: "", draggable: false })
    this.layerBox = h("div", { class: "me-layer" }, this.picture)
    this.cursor = h("div", { class: "me-cursor" })
    this.status = h("div", { class: "me-status" }, "Loading…")
    this.stage = h("div", { class: "me-stage", tabindex: "0" }, this.layerBox, this.cursor, this.status)
    this.root = h("div", { class: "mask-editor", role: "dialog", "aria-label": "Mask editor" },
      h("div", { class: "me-bar" },
        h("strong", { class: "me-title" }, "Mask"),
        h("span", { class: "me-file", title: this.ref.filename }, this.ref.filename),
        h("div", { class: "me-group" }, this.paintBtn, this.eraseBtn),
        h("label", { class: "me-field" }, "Size", this.sizeInput, this.sizeLabel),
        h("label", { class: "me-field" }, "Hardness", this.hardInput, this.hardLabel),
        this.pressureSelect,
        h("div", { class: "me-group" },
          h("button", { class: "btn small me-invert", title: "Invert the mask (I)", onclick: () => this.invert() }, "Invert"),
          h("button", { class: "btn small me-clear", title: "Clear the mask", onclick: () => this.clear() }, "Clear"),
          this.undoBtn, this.redoBtn),
        h("div", { class: "me-group" },
          h("button", { class: "btn small me-fit", title: "Fit the image (0)", onclick: () => this.fit() }, "Fit"),
          this.zoomLabel),
        h("div", { class: "me-spacer" }),
        h("button", { class: "btn small me-cancel", title: "Close without saving (Esc)", onclick: () => this.close(null) }, "Cancel"),
        this.saveBtn),
      this.stage)
    this.sizeInput.addEventListener("input", () => this.setSize(Number(this.sizeInput.value)))
    this.hardInput.addEventListener("input", () => {
      settings.hardness = Number(this.hardInput.value) / 100
      this.showSettings()
    })
    this.pressureSelect.addEventListener("change", () => {
      settings.pressure = /** @type {PressureUse} */ (this.pressureSelect.value)
    })
    const s = this.stage
    s.addEventListener("pointerdown", (e) => this.onDown(e))
    s.addEventListener("pointermove", (e) => this.onMove(e))
    s.addEventListener("pointerup", (e) => this.onUp(e))
    s.addEventListener("pointercancel", (e) => this.onUp(e))
    s.addEventListener("pointerleave", () => this.cursor.classList.remove("on"))
    s.addEventListener("wheel", (e) => this.onWheel(e), { passive: false })
    s.addEventListener("contextmenu", (e) => e.preventDefault())
    // no autoscroll on the middle button; keys go to the stage again after a button of the bar is clicked
    s.addEventListener("mousedown", (e) => {
      if (e.button === 1) e.preventDefault()
    })
    this.root.addEventListener("keydown", (e) => e.stopPropagation())
    this.root.addEventListener("click", (e) => {
      if (e.target instanceof HTMLButtonElement) this.stage.focus()
    })
    this.onKey = (/** @type {KeyboardEvent} */ e) => this.key(e)
    this.onKeyUp = (/** @type {KeyboardEvent} */ e) => {
      if (e.key === " ") {
        e.preventDefault()
        this.spaceDown = false
        this.stage.classList.remove("panning")
      }
    }
    this.onResize = () => this.fit()
    document.addEventListener("keydown", this.onKey, true)
    document.addEventListener("keyup", this.onKeyUp, true)
    window.addEventListener("resize", this.onResize)
    document.body.appendChild(this.root)
    this.showSettings()
    this.setMode(settings.mode)
    this.stage.focus()
    this.load()
  }

  async load() {
    const img = this.picture
    img.src = imageUrl(this.ref)
    try {
      await img.decode()
    } catch {
      this.status.textContent = `Cannot load ${this.ref.filename}`
      this.status.classList.add("error")
      return
    }
    if (!this.root.isConnected) return
    const layer = new MaskLayer(img.naturalWidth, img.naturalHeight)
    layer.fromAlpha(img)
    this.layer = layer
    this.layerBox.style.width = `${layer.width}px`
    this.layerBox.style.height = `${layer.height}px`
    this.layerBox.appendChild(layer.canvas)
    this.status.remove()
    this.root.classList.add("ready")
    this.fit()
    this.showHistory()
  }

  // -- view ----------------------------------------------------------------------------------------

  fit() {
    const layer = this.layer
    if (!layer) return
    const r = (this.stageRect = this.stage.getBoundingClientRect())
    const s = Math.min((r.width - 40) / layer.width, (r.height - 40) / layer.height)
    this.scale = Math.max(0.02, Math.min(s, 8))
    this.tx = (r.width - layer.width * this.scale) / 2
    this.ty = (r.height - layer.height * this.scale) / 2
    this.applyView()
  }

  applyView() {
    this.layerBox.style.transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.scale})`
    this.layerBox.classList.toggle("pixelated", this.scale >= 3)
    this.zoomLabel.textContent = `${Math.round(this.scale * 100)}%`
    this.cursor.style.width = this.cursor.style.height = `${settings.size * this.scale}px`
  }

  /**
   * Zoom by `factor` keeping the stage point (px, py) where it is.
   * @param {number} factor
   * @param {number} px
   * @param {number} py
   */
  zoomAt(factor, px, py) {
    const s = Math.max(0.02, Math.min(this.scale * factor, 32))
    const k = s / this.scale
    this.tx = px - (px - this.tx) * k
    this.ty = py - (py - this.ty) * k
    this.scale = s
    this.applyView()
  }

  /** @param {WheelEvent} e */
  onWheel(e) {
    e.preventDefault()
    const r = this.stageRect
    const dy = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY
    this.zoomAt(Math.exp(-dy * 0.0015), e.clientX - r.left, e.clientY - r.top)
  }

  /**
   * image pixel coordinates of a pointer event
   * @param {PointerEvent} e
   */
  toImage(e) {
    const r = this.stageRect
    return { x: (e.clientX - r.left - this.tx) / this.scale, y: (e.clientY - r.top - this.ty) / this.scale }
  }

  /** @param {PointerEvent} e */
  moveCursor(e) {
    const r = this.stageRect
    const d = settings.size * this.scale
    this.cursor.style.transform = `translate(${e.clientX - r.left - d / 2}px, ${e.clientY - r.top - d / 2}px)`
    this.cursor.classList.toggle("on", !this.pan && e.pointerType !== "touch")
  }

  // -- painting ------------------------------------------------------------------------------------

  /** @param {PointerEvent} e */
  onDown(e) {
    const layer = this.layer
    if (!layer) return
    this.stage.focus()
    const panning = e.button === 1 || (e.button === 0 && this.spaceDown)
    if (panning) {
      e.preventDefault()
      this.pan = { x: e.clientX, y: e.clientY, tx: this.tx, ty: this.ty }
      this.capture(e.pointerId)
      this.stage.classList.add("panning")
      return
    }
    if (e.button !== 0 && e.button !== 2) return
    if (this.stroke) return
    e.preventDefault()
    this.capture(e.pointerId)
    const t0 = performance.now()
    layer.checkpoint()
    const p = this.toImage(e)
    // right button: the other tool for this stroke
    const erase = (settings.mode === "erase") !== (e.button === 2)
    const pen = e.pointerType === "pen" || (e.pointerType === "touch" && e.pressure > 0 && e.pressure !== 0.5)
    this.stroke = { id: e.pointerId, x: p.x, y: p.y, p: pen ? e.pressure : 1, carry: 0, pen, erase }
    this.dabAt(p.x, p.y, this.stroke.p, erase)
    this.showHistory()
    this.count(t0)
  }

  /**
   * Keep the pointer's events while a stroke or pan lasts, even outside the stage.
   * @param {number} id
   */
  capture(id) {
    try {
      this.stage.setPointerCapture(id)
    } catch {
      // not an active pointer (a synthetic event): its events come to the stage anyway
    }
  }

  /** @param {PointerEvent} e */
  onMove(e) {
    this.moveCursor(e)
    if (this.pan) {
      this.tx = this.pan.tx + e.clientX - this.pan.x
      this.ty = this.pan.ty + e.clientY - this.pan.y
      this.applyView()
      return
    }
    const st = this.stroke
    if (!st || e.pointerId !== st.id) return
    const t0 = performance.now()
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : []
    for (const ev of events.length ? events : [e]) {
      const p = this.toImage(ev)
      this.strokeTo(p.x, p.y, st.pen ? ev.pressure : 1)
    }
    this.count(t0)
  }

  /** @param {number} t0 when handling the event began */
  count(t0) {
    const ms = performance.now() - t0
    this.stats.events++
    this.stats.ms += ms
    this.stats.maxMs = Math.max(this.stats.maxMs, ms)
  }

  /** @param {PointerEvent} e */
  onUp(e) {
    if (this.pan) {
      this.pan = null
      this.stage.classList.toggle("panning", this.spaceDown)
      return
    }
    const st = this.stroke
    if (!st || e.pointerId !== st.id) return
    // the stroke ends where the pointer did, not at the last even spacing before it
    if (st.carry > 0) this.dabAt(st.x, st.y, st.p, st.erase)
    this.stroke = null
  }

  /**
   * Dabs along the segment from the stroke's last point, evenly spaced at a fraction of the brush size.
   * @param {number} x
   * @param {number} y
   * @param {number} pressure
   */
  strokeTo(x, y, pressure) {
    const st = this.stroke
    if (!st) return
    const dx = x - st.x
    const dy = y - st.y
    const dist = Math.hypot(dx, dy)
    const spacing = Math.max(0.5, settings.size * 0.08)
    let at = spacing - st.carry
    while (at <= dist) {
      const t = at / dist
      this.dabAt(st.x + dx * t, st.y + dy * t, st.p + (pressure - st.p) * t, st.erase)
      at += spacing
    }
    st.carry = dist - (at - spacing)
    st.x = x
    st.y = y
    st.p = pressure
  }

  /**
   * @param {number} x
   * @param {number} y
   * @param {number} pressure 0..1 (1 when the pointer reports none)
   * @param {boolean} erase
   */
  dabAt(x, y, pressure, erase) {
    const p = Math.max(0.05, Math.min(1, pressure || 0))
    const use = settings.pressure
    const radius = (settings.size / 2) * (use === "size" || use === "both" ? p : 1)
    const strength = use === "opacity" || use === "both" ? p : 1
    this.layer?.dab(x, y, radius, settings.hardness, strength, erase)
  }

  // -- commands -------------------------------------------------------------------------------------

  /** @param {"paint" | "erase"} mode */
  setMode(mode) {
    settings.mode = mode
    this.paintBtn.classList.toggle("active", mode === "paint")
    this.eraseBtn.classList.toggle("active", mode === "erase")
    this.root.classList.toggle("erasing", mode === "erase")
  }

  /** @param {number} size */
  setSize(size) {
    settings.size = Math.max(1, Math.min(400, Math.round(size)))
    this.sizeInput.value = String(settings.size)
    this.showSettings()
    this.applyView()
  }

  showSettings() {
    this.sizeLabel.textContent = `${settings.size}px`
    this.hardLabel.textContent = `${Math.round(settings.hardness * 100)}%`
  }

  showHistory() {
    this.undoBtn.disabled = !this.layer?.undoStack.length
    this.redoBtn.disabled = !this.layer?.redoStack.length
  }

  invert() {
    this.layer?.invert()
    this.showHistory()
  }

  clear() {
    this.layer?.clear()
    this.showHistory()
  }

  undo() {
    this.layer?.undo()
    this.showHistory()
  }

  redo() {
    this.layer?.redo()
    this.showHistory()
  }

  /** @param {KeyboardEvent} e */
  key(e) {
    if (!this.root.isConnected) return
    const inside = e.target instanceof Node && this.root.contains(e.target)
    // the editor owns the keyboard while it is open: no canvas shortcut runs under it. Keys its own
    // shortcuts leave alone reach the focused control of the bar (a slider's arrows), whose keydown the
    // editor's root stops on the way back up.
    if (!inside) e.stopPropagation()
    if (isTyping(e) && !(e.target instanceof HTMLInputElement && e.target.type === "range")) return
    const ctrl = e.ctrlKey || e.metaKey
    const k = e.key.toLowerCase()
    let handled = true
    if (e.key === "Escape") {
      if (!this.layer?.modified || performance.now() - this.escArmed < 2000) this.close(null)
      else {
        this.escArmed = performance.now()
        toast("Unsaved mask: press Esc again to discard it", "info", 2000)
      }
    } else if (ctrl && k === "z") {
      if (e.shiftKey) this.redo()
      else this.undo()
    } else if (ctrl && k === "y") this.redo()
    else if (ctrl && k === "s") this.save()
    else if (ctrl) handled = false
    else if (e.key === " ") {
      this.spaceDown = true
      this.stage.classList.add("panning")
    } else if (k === "b") this.setMode("paint")
    else if (k === "e") this.setMode("erase")
    else if (k === "x") this.setMode(settings.mode === "paint" ? "erase" : "paint")
    else if (k === "i") this.invert()
    else if (e.key === "[") this.setSize(settings.size / 1.2)
    else if (e.key === "]") this.setSize(settings.size * 1.2 + 1)
    else if (e.key === "0") this.fit()
    else if (e.key === "1") {
      const r = this.stage.getBoundingClientRect()
      this.zoomAt(1 / this.scale, r.width / 2, r.height / 2)
    } else handled = false
    if (handled) {
      e.preventDefault()
      e.stopPropagation()
    }
  }

  async save() {
    const layer = this.layer
    if (!layer || this.saving) return
    this.saving = true
    this.saveBtn.disabled = true
    this.saveBtn.textContent = "Saving…"
    try {
      const saved = await uploadMask(await layer.toPng(), this.ref)
      this.close(saved)
      toast(`Saved the mask with the image as ${saved.subfolder ? `${saved.subfolder}/` : ""}${saved.filename}`, "success", 3000)
      if (this.options.onSaved) this.options.onSaved(saved)
      else useInLoadImage(saved)
    } catch (err) {
      toast(`Cannot save the mask: ${errorMessage(err)}`, "error", 8000)
      this.saving = false
      this.saveBtn.disabled = false
      this.saveBtn.textContent = "Save"
    }
  }

  /** @param {ImageRef | null} saved */
  close(saved) {
    if (current === this) current = null
    if (this.layer?.frame) cancelAnimationFrame(this.layer.frame)
    document.removeEventListener("keydown", this.onKey, true)
    document.removeEventListener("keyup", this.onKeyUp, true)
    window.removeEventListener("resize", this.onResize)
    this.root.remove()
    this.resolve(saved)
  }
}

// -- the canvas's entry points ------------------------------------------------------------------------------

/**
 * The input image a Load Image node has picked, if any.
 * @param {LGraphNode} node
 * @returns {ImageRef | null}
 */
function pickedImage(node) {
  const v = inputWidget(node, "image")?.value
  if (typeof v !== "string" || !v) return null
  const slash = v.lastIndexOf("/")
  return { filename: v.slice(slash + 1), subfolder: slash > 0 ? v.slice(0, slash) : "", type: "input" }
}

/**
 * Make a Load Image node load an input image (added to its choices when new).
 * @param {LGraphNode} node
 * @param {ImageRef} ref an input image
 */
function selectImage(node, ref) {
  const widget = inputWidget(node, "image")
  if (!widget) return
  const value = ref.subfolder ? `${ref.subfolder}/${ref.filename}` : ref.filename
  const values = Array.isArray(widget.options.values) ? widget.options.values : []
  if (!values.includes(value)) widget.options.values = [...values, value]
  widget.value = value
  app.onWidgetChanged(node, widget)
}

/** @param {LGraphNode} node */
function isImageLoader(node) {
  return !!app.catalogue[node.type]?.inputs.some((i) => i.name === "image" && i.type === "COMBO")
}

/**
 * Put a saved masked copy into a Load Image node: the selected one, else the only one, else a new one.
 * @param {ImageRef} saved
 */
export function useInLoadImage(saved) {
  if (!app.graph) return
  const loaders = app.graph._nodes.filter((n) => n.type === "LoadImage")
  const selected = Object.values(app.canvas.selected_nodes || {}).filter((n) => n.type === "LoadImage")
  /** @type {LGraphNode | null} */
  let node = selected[0] || (loaders.length === 1 ? loaders[0] : null)
  if (!node) {
    const r = app.canvas.canvas.getBoundingClientRect()
    const pos = app.canvas.convertCanvasToOffset([r.width / 2 - 160, r.height / 2 - 200])
    node = addNode("LoadImage", pos)
    if (!node) return
  }
  selectImage(node, saved)
  app.canvas.selectNode(node)
}

/**
 * Open the editor on the image a Load Image node loads; the saved copy becomes the node's image.
 * @param {LGraphNode} node
 */
export function openMaskEditorFor(node) {
  const ref = pickedImage(node)
  if (!ref) {
    toast("Choose an image first", "info")
    return Promise.resolve(null)
  }
  return openMaskEditor(ref, { onSaved: (saved) => selectImage(node, saved) })
}

/**
 * The node menu's entries: edit the mask of a Load Image node's image, or of an image the node shows.
 * @param {LGraphNode} node
 * @param {ImageRef[]} shown the images the node's last run showed
 * @param {number} index the one on the node
 * @returns {MenuEntry[]}
 */
export function maskMenuOptions(node, shown, index) {
  /** @type {MenuEntry[]} */
  const out = []
  if (isImageLoader(node) && pickedImage(node)) out.push({ content: "Open in mask editor", callback: () => { openMaskEditorFor(node) } })
  const img = shown[index] || shown[0]
  if (img) out.push({ content: "Paint a mask on this image", callback: () => { openMaskEditor(img) } })
  return out
}

/** For the console and the browser tests: the open editor's mask and timings. */
export function maskEditorState() {
  const ed = current
  if (!ed || !ed.layer) return null
  return { width: ed.layer.width, height: ed.layer.height, mask: ed.layer.mask, scale: ed.scale, tx: ed.tx, ty: ed.ty, stats: ed.stats, draws: ed.layer.drawStats, settings: { ...settings } }
}

/** Give the app its hook (the gallery opens the editor through it) and the console its handle. */
export function initMaskEditor() {
  app.openMaskEditor = openMaskEditor
  app.openMaskEditorFor = openMaskEditorFor
  Reflect.set(window, "atelierMaskEditor", { open: openMaskEditor, openFor: openMaskEditorFor, state: maskEditorState })
}
