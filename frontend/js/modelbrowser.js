// @ts-check
// The model browser: the left sidebar's Models tab. Model files of each kind (checkpoints, LoRAs, VAEs, …)
// as cards with their preview image, base model family, trigger words and training details, as the server
// reads them from the files' headers (GET /atelier/v1/models/{kind}/browse). Drag a card onto the canvas,
// double-click it or press Enter on it to add the loader node that takes it; click a trigger word to put it
// into the prompt being edited.

import { graphPosAt } from "./graphio.js"
import { inputWidget } from "./nodes.js"
import { addNode } from "./search.js"
import { app } from "./state.js"
import { errorMessage, h, toast } from "./ui.js"

/**
 * One model file as the server lists it.
 * @typedef {object} ModelEntry
 * @property {string} name relative to its folder, with "/"
 * @property {number} size bytes
 * @property {number} mtime seconds since the epoch
 * @property {string} format safetensors, torch, diffusers, other
 * @property {string | null} family sd15, sd2, sdxl, sdxl_refiner, unknown; null for kinds without one
 * @property {string | null} family_label SD1.x, SD2.x, SDXL, SDXL refiner, unknown
 * @property {string} family_source tensors, configs (a diffusers folder), metadata, or "" when unknown
 * @property {string[]} trigger_words the trigger phrase and the most frequent training tags
 * @property {[string, number][]} tags training tags with their counts
 * @property {Record<string, string>} details title, description, network_dim, resolution, …
 * @property {string | null} preview the URL of the image beside the file
 * @property {string | null} error why the file cannot be read
 * @property {string | null} note
 */

/**
 * @typedef {object} ModelListing
 * @property {string} kind
 * @property {{type: string, input: string}[]} loaders node types taking this kind's files, the usual first
 * @property {ModelEntry[]} models
 */

export const DRAG_TYPE = "application/x-atelier-model"

/** @type {Record<string, string>} */
const KIND_LABELS = {
  checkpoints: "Checkpoints",
  loras: "LoRAs",
  vae: "VAE",
  upscale_models: "Upscalers",
  controlnet: "ControlNet",
  embeddings: "Embeddings",
  hypernetworks: "Hypernetworks",
  styles: "Styles",
  face_detectors: "Face detectors",
}
/** @type {Record<string, string>} */
const DETAIL_LABELS = {
  title: "Title",
  author: "Author",
  base_model: "Trained on",
  resolution: "Resolution",
  network_dim: "Rank",
  network_alpha: "Alpha",
  network_module: "Network",
  epochs: "Epochs",
  steps: "Steps",
  train_images: "Images",
  usage_hint: "Usage",
  description: "Description",
}
const STORAGE_KEY = "atelier.sidebar"

const state = {
  /** @type {Record<string, number>} kind -> how many files */
  kinds: {},
  kind: "checkpoints",
  query: "",
  /** @type {Map<string, ModelListing>} */
  listings: new Map(),
  /** @type {HTMLTextAreaElement | null} the prompt box last edited */
  prompt: /** @type {HTMLTextAreaElement | null} */ (null),
}

/**
 * @template T
 * @param {string} path
 * @returns {Promise<T>}
 */
async function getJson(path) {
  const res = await fetch(path)
  const data = await res.json().catch(() => null)
  if (!res.ok) throw new Error((data && data.error) || `HTTP ${res.status}`)
  return data
}

/** @param {number} n */
function formatSize(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`
  if (n >= 1e3) return `${Math.round(n / 1e3)} KB`
  return `${n} B`
}

/** @param {string} name */
function splitName(name) {
  const slash = name.lastIndexOf("/")
  const file = name.slice(slash + 1)
  const stem = file.replace(/\.(safetensors|sft|ckpt|pt|pth|bin)$/i, "")
  return { folder: slash >= 0 ? name.slice(0, slash + 1) : "", file, stem }
}

/**
 * Whether a model matches every word of the query (name, trigger words, tags, family, title).
 * @param {ModelEntry} m
 * @param {string} query
 */
export function matches(m, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean)
  if (!words.length) return true
  const hay = [
    m.name,
    m.family || "",
    m.family_label || "",
    m.details.title || "",
    ...m.trigger_words,
    ...m.tags.map((t) => t[0]),
  ].join("\n").toLowerCase()
  return words.every((w) => hay.includes(w))
}

/**
 * Whether an element is a prompt box: a text node's box on the canvas, or a text parameter's.
 * @param {EventTarget | Element | null} el
 * @returns {el is HTMLTextAreaElement}
 */
function isPromptBox(el) {
  return el instanceof HTMLTextAreaElement && (el.classList.contains("node-textarea") || el.closest(".param") !== null)
}

/**
 * Put `text` into the prompt box being edited (at its cursor, comma-separated), or copy it.
 * @param {string} text
 */
export function insertIntoPrompt(text) {
  const active = document.activeElement
  const el = isPromptBox(active) ? active : state.prompt
  if (!el || !el.isConnected) {
    navigator.clipboard?.writeText(text).then(
      () => toast(`Copied “${text}” (click into a prompt to insert it there)`, "info", 2500),
      () => toast("Click into a prompt first, then on the word", "info", 2500),
    )
    return
  }
  const start = el.selectionStart ?? el.value.length
  const end = el.selectionEnd ?? start
  const before = el.value.slice(0, start)
  const after = el.value.slice(end)
  const sepBefore = before && !/[,\s(]$/.test(before) ? ", " : before && !/\s$/.test(before) ? " " : ""
  const sepAfter = after && !/^[\s,)]/.test(after) ? ", " : ""
  el.value = before + sepBefore + text + sepAfter + after
  const caret = (before + sepBefore + text).length
  el.setSelectionRange(caret, caret)
  el.focus()
  el.dispatchEvent(new Event("change"))
}

/**
 * Add the loader node of a model file to the canvas at graph position `pos`, its file chosen.
 * Embeddings have no loader: they go into the prompt as `embedding:NAME`.
 * @param {string} kind
 * @param {string} name
 * @param {import("litegraph").Point} pos
 */
export function addLoader(kind, name, pos) {
  if (kind === "embeddings") {
    insertIntoPrompt(`embedding:${name.replace(/\.(safetensors|pt|bin)$/i, "")}`)
    return null
  }
  const loader = state.listings.get(kind)?.loaders.find((l) => app.catalogue[l.type])
  if (!loader) {
    toast(`No node loads ${KIND_LABELS[kind] || kind}`, "error")
    return null
  }
  const node = addNode(loader.type, pos)
  const widget = inputWidget(node, loader.input)
  if (!node || !widget) return node
  const values = Array.isArray(widget.options.values) ? widget.options.values : []
  if (!values.includes(name)) widget.options.values = [...values, name]
  widget.value = name
  app.onWidgetChanged(node, widget)
  return node
}

/** The graph position at the middle of the visible canvas. */
function canvasMiddle() {
  const r = app.canvas.canvas.getBoundingClientRect()
  return graphPosAt(r.left + r.width / 2 - 120, r.top + r.height / 2 - 60)
}

/**
 * @param {ModelEntry} m
 */
function thumb(m) {
  if (m.preview) {
    return h("img", { class: "mb-thumb", src: m.preview, alt: "", loading: "lazy", draggable: false })
  }
  const letter = splitName(m.name).stem.replace(/[^a-z0-9]/gi, "").slice(0, 2) || "?"
  return h("div", { class: `mb-thumb mb-placeholder fam-${m.family || "none"}` }, letter)
}

/** @param {ModelEntry} m */
function tooltip(m) {
  const lines = [m.name]
  if (m.family_label) lines.push(`Base model: ${m.family_label}${m.family_source === "metadata" ? " (from its metadata)" : ""}`)
  for (const [key, label] of Object.entries(DETAIL_LABELS)) {
    const v = m.details[key]
    if (v) lines.push(`${label}: ${v.length > 300 ? v.slice(0, 300) + "…" : v}`)
  }
  if (m.note) lines.push(m.note)
  return lines.join("\n")
}

/**
 * What a card shows when it is opened: the training details and the tags with their counts.
 * @param {ModelEntry} m
 */
function detailsBlock(m) {
  const rows = Object.entries(DETAIL_LABELS)
    .filter(([key]) => m.details[key])
    .map(([key, label]) => [h("dt", {}, label), h("dd", {}, m.details[key])])
  rows.push([h("dt", {}, "File"), h("dd", {}, `${m.name} · ${m.format}${m.family_source ? ` · family from its ${m.family_source}` : ""}`)])
  if (m.note) rows.push([h("dt", {}, "Note"), h("dd", {}, m.note)])
  const tags = m.tags.slice(0, 24)
  return h(
    "div",
    { class: "mb-details" },
    h("dl", {}, rows.flat()),
    tags.length ? h("div", { class: "mb-tags", title: "training tags: how many captions carried each" }, tags.map(([t, n]) => h("span", { class: "mb-tag" }, t, h("b", {}, `×${n}`)))) : null,
  )
}

/**
 * @param {string} kind
 * @param {ModelEntry} m
 */
function card(kind, m) {
  const { folder, stem } = splitName(m.name)
  const words = m.trigger_words.slice(0, 8)
  const el = h(
    "li",
    {
      class: `mb-card${m.error ? " has-error" : ""}`,
      tabindex: 0,
      draggable: "true",
      title: tooltip(m),
      dataset: { name: m.name, kind },
      ondblclick: () => addLoader(kind, m.name, canvasMiddle()),
      onclick: () => {
        // a click opens the card's details (a double-click's two clicks leave it as it was)
        const open = el.querySelector(".mb-details")
        if (open) open.remove()
        else el.querySelector(".mb-body")?.appendChild(detailsBlock(m))
        el.classList.toggle("open", !open)
      },
      onkeydown: (/** @type {KeyboardEvent} */ e) => {
        if (e.key === "Enter") {
          e.preventDefault()
          addLoader(kind, m.name, canvasMiddle())
        }
      },
      ondragstart: (/** @type {DragEvent} */ e) => {
        if (!e.dataTransfer) return
        e.dataTransfer.setData(DRAG_TYPE, JSON.stringify({ kind, name: m.name }))
        e.dataTransfer.effectAllowed = "copy"
      },
    },
    thumb(m),
    h(
      "div",
      { class: "mb-body" },
      h("div", { class: "mb-name" }, folder ? h("span", { class: "mb-folder" }, folder) : null, m.details.title && m.details.title !== stem ? m.details.title : stem),
      h(
        "div",
        { class: "mb-meta" },
        m.family ? h("span", { class: `mb-badge fam-${m.family}`, title: m.family_source ? `read from its ${m.family_source}` : "neither its tensors nor its metadata say" }, m.family_label || m.family) : null,
        h("span", { class: "mb-size" }, formatSize(m.size)),
        m.details.network_dim ? h("span", { class: "mb-size" }, `r${m.details.network_dim}`) : null,
      ),
      m.error ? h("div", { class: "mb-error" }, m.error) : null,
      words.length
        ? h(
            "div",
            { class: "mb-words" },
            words.map((w) =>
              h(
                "button",
                {
                  class: "mb-word",
                  type: "button",
                  title: "Put into the prompt being edited",
                  // keep the prompt box focused: the word goes in at its cursor
                  onpointerdown: (/** @type {PointerEvent} */ e) => e.preventDefault(),
                  onclick: (/** @type {MouseEvent} */ e) => {
                    e.stopPropagation()
                    insertIntoPrompt(w)
                  },
                  ondblclick: (/** @type {MouseEvent} */ e) => e.stopPropagation(),
                },
                w,
              ),
            ),
          )
        : null,
    ),
  )
  return el
}

/**
 * The Models tab of the left sidebar, built into `root` (a section of the sidebar `aside`); a tab strip
 * switches between it and the node library.
 * @param {HTMLElement} root
 */
export function initModelBrowser(root) {
  const aside = root.closest("aside")
  const head = aside?.querySelector(".side-head")
  const tabNodes = h("button", { class: "mb-tab active", type: "button", dataset: { tab: "nodes" } }, "Nodes")
  const tabModels = h("button", { class: "mb-tab", type: "button", id: "tab-models", dataset: { tab: "models" } }, "Models")
  head?.prepend(h("div", { class: "mb-tabs", role: "tablist" }, tabNodes, tabModels))
  aside?.classList.add("has-model-tabs")

  const kindBar = h("div", { class: "mb-kinds", role: "tablist" })
  const search = h("input", { class: "text-input", id: "model-filter", type: "search", placeholder: "Search name, trigger word, SDXL…", "aria-label": "Search models", spellcheck: false })
  const refresh = h("button", { class: "icon-btn small", type: "button", title: "Read the model folders again" }, "↻")
  const list = h("ul", { class: "mb-list", id: "model-list" })
  const status = h("div", { class: "mb-status" })
  root.replaceChildren(kindBar, h("div", { class: "mb-search" }, search, refresh), status, list)

  /** @param {boolean} show */
  const showModels = (show) => {
    aside?.classList.toggle("show-models", show)
    document.body.classList.toggle("models-open", show)
    tabNodes.classList.toggle("active", !show)
    tabModels.classList.toggle("active", show)
    try {
      localStorage.setItem(STORAGE_KEY, show ? "models" : "nodes")
    } catch {
      // storage refused: the tab is not remembered
    }
    if (show) load(false)
  }
  tabNodes.addEventListener("click", () => showModels(false))
  tabModels.addEventListener("click", () => showModels(true))

  const renderKinds = () => {
    const kinds = Object.keys(state.kinds).filter((k) => state.kinds[k] > 0 || k === "checkpoints" || k === "loras" || k === state.kind)
    kindBar.replaceChildren(
      ...kinds.map((k) =>
        h(
          "button",
          {
            class: `mb-kind${k === state.kind ? " active" : ""}`,
            type: "button",
            dataset: { kind: k },
            onclick: () => {
              state.kind = k
              renderKinds()
              load(false)
            },
          },
          KIND_LABELS[k] || k,
          h("span", { class: "count" }, String(state.kinds[k] ?? 0)),
        ),
      ),
    )
  }

  const renderList = () => {
    const listing = state.listings.get(state.kind)
    if (!listing) return
    const shown = listing.models.filter((m) => matches(m, state.query))
    list.replaceChildren(...shown.map((m) => card(state.kind, m)))
    status.textContent = !listing.models.length
      ? `No ${KIND_LABELS[state.kind] || state.kind} in the model folders`
      : shown.length < listing.models.length
        ? `${shown.length} of ${listing.models.length}`
        : `${listing.models.length} file${listing.models.length === 1 ? "" : "s"} · drag onto the canvas or double-click`
  }

  /** @param {boolean} again read the folders again */
  const load = async (again) => {
    try {
      if (again || !Object.keys(state.kinds).length) {
        /** @type {Record<string, string[]>} */
        const kinds = await getJson("/atelier/v1/models")
        state.kinds = Object.fromEntries(Object.entries(kinds).map(([k, files]) => [k, files.length]))
        if (again) state.listings.clear()
        renderKinds()
      }
      const kind = state.kind
      if (!state.listings.has(kind)) {
        status.textContent = "Reading the model files…"
        state.listings.set(kind, await getJson(`/atelier/v1/models/${encodeURIComponent(kind)}/browse`))
      }
      if (kind === state.kind) renderList()
    } catch (err) {
      status.textContent = `Cannot list the models: ${errorMessage(err)}`
    }
  }

  search.addEventListener("input", () => {
    state.query = search.value
    renderList()
  })
  search.addEventListener("keydown", (e) => e.stopPropagation())
  refresh.addEventListener("click", () => load(true))

  // the prompt box last edited: trigger words go there
  document.addEventListener("focusin", (e) => {
    if (isPromptBox(e.target)) state.prompt = e.target
  })

  initDrop(document.getElementById("canvas-wrap"))
  let remembered = null
  try {
    remembered = localStorage.getItem(STORAGE_KEY)
  } catch {
    // no storage: start on the node library
  }
  if (remembered === "models") showModels(true)
}

/**
 * Model cards dropped on the canvas add their loader where they are dropped.
 * @param {HTMLElement | null} target
 */
function initDrop(target) {
  if (!target) return
  /** @param {DragEvent} e */
  const over = (e) => {
    if (!e.dataTransfer || ![...e.dataTransfer.types].includes(DRAG_TYPE)) return
    e.preventDefault()
    e.dataTransfer.dropEffect = "copy"
    target.classList.add("model-drop")
  }
  target.addEventListener("dragenter", over)
  target.addEventListener("dragover", over)
  target.addEventListener("dragleave", (e) => {
    if (!(e.relatedTarget instanceof Node && target.contains(e.relatedTarget))) target.classList.remove("model-drop")
  })
  target.addEventListener("drop", (e) => {
    target.classList.remove("model-drop")
    const data = e.dataTransfer?.getData(DRAG_TYPE)
    if (!data) return
    e.preventDefault()
    try {
      const { kind, name } = JSON.parse(data)
      addLoader(String(kind), String(name), app.canvas.convertEventToCanvasOffset(e))
    } catch (err) {
      toast(`Cannot add the model: ${errorMessage(err)}`, "error")
    }
  })
}
