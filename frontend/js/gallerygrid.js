// @ts-check
// The gallery: a virtualised grid of the output images (only the rows in view are in the page; a spacer
// gives the scroll height), newest first, with a filter bar (prompt words, workflow, model, board,
// favourites). Pages of the listing come from the server as they scroll into view, all from one
// snapshot (`until`), so images that arrive meanwhile never shift the grid; a refresh takes a new one.

import { galleryApi, thumbUrl } from "./galleryapi.js"
import { icon } from "./icons.js"
import { errorMessage, h, promptDialog, confirmDialog, toast } from "./ui.js"

/** @typedef {import("./galleryapi.js").GalleryImage} GalleryImage */
/** @typedef {import("./galleryapi.js").GalleryFilters} GalleryFilters */
/** @typedef {import("./galleryapi.js").Facets} Facets */

const PAGE = 120
const GAP = 6
const MIN_TILE = 84
const OVERSCAN = 1 // rows above and below the view

/**
 * The images of one listing (filters and snapshot), fetched a page at a time.
 */
export class GallerySource {
  /** @param {() => void} onPage a page arrived */
  constructor(onPage) {
    this.onPage = onPage
    /** @type {GalleryFilters} */
    this.filters = {}
    this.total = 0
    /** @type {number | undefined} */
    this.until = undefined
    /** @type {Map<number, GalleryImage[]>} */
    this.pages = new Map()
    /** @type {Map<number, Promise<void>>} pages on their way */
    this.loading = new Map()
    this.generation = 0
  }

  /** A new listing: the first page, with a new snapshot. */
  async reset() {
    const gen = ++this.generation
    const first = await galleryApi.list(this.filters, { limit: PAGE })
    if (gen !== this.generation) return false
    this.pages = new Map([[0, first.images]])
    this.loading.clear()
    this.total = first.total
    this.until = first.until
    return true
  }

  /**
   * The image at `i`, or null while its page is on its way (asked for now).
   * @param {number} i
   * @returns {GalleryImage | null}
   */
  get(i) {
    const p = Math.floor(i / PAGE)
    const page = this.pages.get(p)
    if (page) return page[i - p * PAGE] || null
    this.load(p)
    return null
  }

  /**
   * @param {number} p
   * @returns {Promise<void>}
   */
  load(p) {
    const on = this.loading.get(p)
    if (on) return on
    if (this.until === undefined) return Promise.resolve()
    const gen = this.generation
    const loading = (async () => {
      try {
        const page = await galleryApi.list(this.filters, { limit: PAGE, offset: p * PAGE, until: this.until })
        if (gen !== this.generation) return
        this.pages.set(p, page.images)
        this.onPage()
      } catch (err) {
        console.warn("gallery page", p, err)
      } finally {
        if (gen === this.generation) this.loading.delete(p)
      }
    })()
    this.loading.set(p, loading)
    return loading
  }

  /**
   * The image at `i`, its page fetched when needed.
   * @param {number} i
   * @returns {Promise<GalleryImage | null>}
   */
  async at(i) {
    const got = this.get(i)
    if (got || i < 0 || i >= this.total) return got
    await this.load(Math.floor(i / PAGE))
    return this.get(i)
  }

  /**
   * Update an image where it is cached (favourite, board).
   * @param {GalleryImage} img
   */
  replace(img) {
    for (const page of this.pages.values()) {
      const i = page.findIndex((x) => x.id === img.id)
      if (i >= 0) page[i] = img
    }
  }
}

/**
 * The grid: a scroller holding a spacer and the tiles of the rows in view, absolutely placed.
 */
export class GalleryGrid {
  /**
   * @param {HTMLElement} root where the filter bar and the grid go
   * @param {{open: (source: GallerySource, index: number) => void}} actions
   */
  constructor(root, actions) {
    this.root = root
    this.actions = actions
    this.source = new GallerySource(() => this.render(true))
    /** @type {Facets | null} */
    this.facets = null
    this.cols = 1
    this.tile = MIN_TILE
    this.rowH = MIN_TILE + GAP
    /** @type {Map<number, HTMLElement>} tiles in the page, by index */
    this.tiles = new Map()
    this.frame = 0
    this.search = h("input", { class: "text-input gal-search", type: "search", placeholder: "Search prompts…", "aria-label": "Search prompts" })
    this.workflowSel = h("select", { class: "gal-select", "aria-label": "Workflow", title: "Workflow" })
    this.modelSel = h("select", { class: "gal-select", "aria-label": "Model", title: "Model" })
    this.boardSel = h("select", { class: "gal-select", "aria-label": "Board", title: "Board" })
    this.favBtn = h("button", { class: "icon-btn small gal-fav-filter", title: "Favourites only", "aria-pressed": "false" }, icon("star"))
    this.boardMenu = h("span", { class: "gal-board-actions" })
    this.wideBtn = h("button", { class: "icon-btn small gal-wide", title: "Large gallery (Esc to return)" }, icon("fit"))
    this.count = h("span", { class: "gal-count hint" })
    this.spacer = h("div", { class: "gal-spacer" })
    this.scroller = h("div", { class: "gal-scroller", tabindex: "0" }, this.spacer)
    this.empty = h("p", { class: "empty hint gal-empty" }, "Finished images appear here.")
    root.classList.add("gal-root")
    root.replaceChildren(
      h("div", { class: "gal-bar" },
        h("div", { class: "gal-row" }, this.search, this.count, this.favBtn, this.wideBtn),
        h("div", { class: "gal-row" }, this.workflowSel, this.modelSel, this.boardSel, this.boardMenu)),
      this.scroller,
      this.empty,
    )
    this.wire()
  }

  wire() {
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let typing
    this.search.addEventListener("input", () => {
      clearTimeout(typing)
      typing = setTimeout(() => this.setFilter({ q: this.search.value.trim() || undefined }), 180)
    })
    this.workflowSel.addEventListener("change", () => this.setFilter({ workflow: this.workflowSel.value || undefined }))
    this.modelSel.addEventListener("change", () => this.setFilter({ model: this.modelSel.value || undefined }))
    this.boardSel.addEventListener("change", () => this.onBoardChoice())
    this.favBtn.addEventListener("click", () => {
      const on = !this.source.filters.favourite
      this.favBtn.setAttribute("aria-pressed", String(on))
      this.favBtn.classList.toggle("on", on)
      this.setFilter({ favourite: on || undefined })
    })
    this.wideBtn.addEventListener("click", () => this.setWide(!document.body.classList.contains("gallery-wide")))
    this.scroller.addEventListener("scroll", () => this.schedule(), { passive: true })
    new ResizeObserver(() => this.layout()).observe(this.scroller)
    this.scroller.addEventListener("click", (e) => {
      const t = /** @type {HTMLElement} */ (e.target)
      const tile = t.closest(".tile")
      if (!(tile instanceof HTMLElement)) return
      const i = Number(tile.dataset.index)
      const img = this.source.get(i)
      if (!img) return
      if (t.closest(".tile-fav")) {
        e.stopPropagation()
        this.toggleFavourite(img)
      } else {
        this.actions.open(this.source, i)
      }
    })
  }

  /** @param {boolean} on */
  setWide(on) {
    document.body.classList.toggle("gallery-wide", on)
    this.wideBtn.title = on ? "Back to the side panel" : "Large gallery"
  }

  /** @param {Partial<GalleryFilters>} change */
  setFilter(change) {
    this.source.filters = { ...this.source.filters, ...change }
    for (const [k, v] of Object.entries(this.source.filters)) if (v === undefined) delete this.source.filters[/** @type {keyof GalleryFilters} */ (k)]
    this.scroller.scrollTop = 0
    return this.refresh()
  }

  /** A new listing (new images, changed filters): keeps the scroll position where the list allows. */
  async refresh() {
    try {
      const [changed, facets] = await Promise.all([this.source.reset(), galleryApi.facets()])
      this.facets = facets
      this.fillFacets()
      if (!changed) return
    } catch (err) {
      console.warn("gallery", err)
      return
    }
    this.render(true)
  }

  fillFacets() {
    const f = this.facets
    if (!f) return
    const fl = this.source.filters
    const opts = (/** @type {HTMLSelectElement} */ sel, /** @type {string} */ all, /** @type {{name: string, count: number}[]} */ items, /** @type {string | undefined} */ cur) => {
      sel.replaceChildren(h("option", { value: "" }, all), ...items.map((x) => h("option", { value: x.name }, `${x.name} (${x.count})`)))
      sel.value = cur || ""
    }
    opts(this.workflowSel, "All workflows", f.workflows, fl.workflow)
    opts(this.modelSel, "All models", f.models, fl.model)
    this.boardSel.replaceChildren(
      h("option", { value: "" }, "All boards"),
      h("option", { value: "0" }, "No board"),
      ...f.boards.map((b) => h("option", { value: String(b.id) }, `${b.name} (${b.count})`)),
      h("option", { value: "new" }, "+ New board…"),
    )
    this.boardSel.value = fl.board === undefined ? "" : String(fl.board)
    const board = f.boards.find((b) => b.id === fl.board)
    this.boardMenu.replaceChildren(
      ...(board
        ? [
            h("button", { class: "icon-btn small", title: `Rename board ${board.name}`, onclick: () => this.renameBoard(board.id, board.name) }, "✎"),
            h("button", { class: "icon-btn small", title: `Delete board ${board.name} (its images stay)`, onclick: () => this.deleteBoard(board.id, board.name) }, "🗑"),
          ]
        : []),
    )
  }

  async onBoardChoice() {
    const v = this.boardSel.value
    if (v === "new") {
      const name = await promptDialog("New board", "Board name", "", { okLabel: "Create" })
      if (name) {
        try {
          const b = await galleryApi.createBoard(name)
          await this.setFilter({ board: b.id })
          return
        } catch (err) {
          toast(errorMessage(err), "error")
        }
      }
      this.fillFacets()
      return
    }
    this.setFilter({ board: v === "" ? undefined : Number(v) })
  }

  /**
   * @param {number} id
   * @param {string} name
   */
  async renameBoard(id, name) {
    const to = await promptDialog("Rename board", "Board name", name, { okLabel: "Rename" })
    if (!to) return
    try {
      await galleryApi.renameBoard(id, to)
    } catch (err) {
      toast(errorMessage(err), "error")
    }
    this.refresh()
  }

  /**
   * @param {number} id
   * @param {string} name
   */
  async deleteBoard(id, name) {
    if (!(await confirmDialog("Delete board", `Delete the board “${name}”? Its images stay in the gallery.`, "Delete"))) return
    try {
      await galleryApi.deleteBoard(id)
    } catch (err) {
      toast(errorMessage(err), "error")
    }
    this.setFilter({ board: undefined })
  }

  /** @param {GalleryImage} img */
  async toggleFavourite(img) {
    try {
      const updated = await galleryApi.update(img.id, { favourite: !img.favourite })
      this.updated(updated)
    } catch (err) {
      toast(errorMessage(err), "error")
    }
  }

  /**
   * An image changed (favourite, board): redraw its tile.
   * @param {GalleryImage} img
   */
  updated(img) {
    this.source.replace(img)
    for (const [i, tile] of this.tiles) {
      if (tile.dataset.id === String(img.id)) this.fillTile(tile, i, img)
    }
  }

  layout() {
    const w = this.scroller.clientWidth
    if (!w) return
    this.cols = Math.max(1, Math.floor((w + GAP) / (MIN_TILE + GAP)))
    this.tile = Math.floor((w - (this.cols - 1) * GAP) / this.cols)
    this.rowH = this.tile + GAP
    this.render(true)
  }

  schedule() {
    if (this.frame) return
    this.frame = requestAnimationFrame(() => {
      this.frame = 0
      this.render(false)
    })
  }

  /**
   * Put the tiles of the rows in view (and a few around them) in the page, and only those.
   * @param {boolean} all redraw tiles already there too (their image may have arrived or changed)
   */
  render(all) {
    const n = this.source.total
    const rows = Math.ceil(n / this.cols)
    this.spacer.style.height = `${Math.max(0, rows * this.rowH - GAP)}px`
    this.empty.hidden = n > 0
    this.count.textContent = n ? `${n} image${n === 1 ? "" : "s"}` : ""
    const top = this.scroller.scrollTop
    const view = this.scroller.clientHeight || 400
    const first = Math.max(0, Math.floor(top / this.rowH) - OVERSCAN)
    const last = Math.min(rows - 1, Math.ceil((top + view) / this.rowH) + OVERSCAN)
    const from = first * this.cols
    const to = Math.min(n, (last + 1) * this.cols)
    // tiles that left the view are reused for the rows coming into it (fewer elements made and styled)
    /** @type {HTMLElement[]} */
    const free = []
    for (const [i, tile] of this.tiles) {
      if (i < from || i >= to) {
        free.push(tile)
        this.tiles.delete(i)
      }
    }
    const fresh = document.createDocumentFragment()
    for (let i = from; i < to; i++) {
      let tile = this.tiles.get(i)
      const isNew = !tile
      if (!tile) {
        tile = free.pop() || fresh.appendChild(h("figure", { class: "tile gal-tile" }))
        this.tiles.set(i, tile)
      }
      if (isNew || all) {
        const r = Math.floor(i / this.cols)
        const c = i % this.cols
        tile.style.transform = `translate(${c * (this.tile + GAP)}px, ${r * this.rowH}px)`
        tile.style.width = tile.style.height = `${this.tile}px`
        this.fillTile(tile, i, this.source.get(i))
      }
    }
    for (const tile of free) tile.remove()
    this.spacer.appendChild(fresh)
  }

  /**
   * @param {HTMLElement} tile
   * @param {number} i
   * @param {GalleryImage | null} img
   */
  fillTile(tile, i, img) {
    tile.dataset.index = String(i)
    if (!img) {
      if (tile.dataset.id) tile.replaceChildren()
      delete tile.dataset.id
      tile.classList.add("loading")
      return
    }
    tile.classList.remove("loading")
    const p = img.params
    tile.title = [p.prompt, p.seed !== null ? `seed ${p.seed}` : "", img.filename].filter(Boolean).join("\n")
    tile.classList.toggle("fav", img.favourite)
    if (tile.dataset.id === String(img.id)) return
    tile.dataset.id = String(img.id)
    tile.replaceChildren(
      h("img", { src: thumbUrl(img.id), alt: p.prompt || img.filename, draggable: "false", decoding: "async" }),
      h("button", { class: "tile-fav", title: "Favourite", "aria-label": "Favourite" }, icon("star")),
      h("figcaption", {}, h("span", { class: "tile-seed" }, p.seed !== null ? String(p.seed) : "")),
    )
  }
}
