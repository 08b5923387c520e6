// @ts-check
// The gallery's server routes (/atelier/v1/gallery, engine/server/api_gallery.py).

/**
 * The generation parameters an image carries (read from its PNG).
 * @typedef {object} GenParams
 * @property {string} prompt
 * @property {string} negative
 * @property {number | null} seed
 * @property {string} sampler
 * @property {string} scheduler
 * @property {number | null} steps
 * @property {number | null} cfg
 * @property {string} model
 * @property {string} workflow
 */

/**
 * One image of the gallery: an image reference the file routes take, and what the gallery knows of it.
 * @typedef {object} GalleryImage
 * @property {number} id
 * @property {string} filename
 * @property {string} subfolder
 * @property {string} type
 * @property {number | null} width
 * @property {number | null} height
 * @property {number} created
 * @property {string | null} job_id
 * @property {boolean} favourite
 * @property {number | null} board
 * @property {GenParams} params
 */

/** @typedef {{id: number, name: string, created: number, count: number}} Board */
/** @typedef {{total: number, favourites: number, workflows: {name: string, count: number}[], models: {name: string, count: number}[], boards: Board[]}} Facets */

/**
 * What a listing keeps (unset: no condition). board 0: images in no board.
 * @typedef {object} GalleryFilters
 * @property {string} [q]
 * @property {string} [workflow]
 * @property {string} [model]
 * @property {number} [board]
 * @property {boolean} [favourite]
 */

/** @typedef {{id: string, number: number, status: string, prompt: string, seed: number | null, workflow: string}} QueueRow */
/** @typedef {{images: GalleryImage[], total: number, until: number, next: number | null}} GalleryPage */

const BASE = "/atelier/v1/gallery"

/**
 * @template T
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<T>}
 */
async function call(method, path, body) {
  const res = await fetch(BASE + path, body === undefined ? { method } : { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
  const data = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(data?.error || `HTTP ${res.status}`)
  return data
}

export const galleryApi = {
  /**
   * @param {GalleryFilters} filters
   * @param {{limit?: number, offset?: number, until?: number}} [paging]
   * @returns {Promise<GalleryPage>}
   */
  list(filters, { limit = 100, offset = 0, until } = {}) {
    const q = new URLSearchParams({ limit: String(limit), offset: String(offset) })
    if (until !== undefined) q.set("until", String(until))
    for (const [k, v] of Object.entries(filters)) if (v !== undefined && v !== "") q.set(k, String(v))
    return call("GET", `/images?${q}`)
  },
  /** @returns {Promise<{running: QueueRow[], queued: QueueRow[]}>} */
  queue: () => call("GET", "/queue"),
  /** @returns {Promise<Facets>} */
  facets: () => call("GET", "/facets"),
  /**
   * @param {number} id
   * @param {{favourite?: boolean, board?: number | null}} patch
   * @returns {Promise<GalleryImage>}
   */
  update: (id, patch) => call("PATCH", `/images/${id}`, patch),
  /**
   * @param {string} name
   * @returns {Promise<Board>}
   */
  createBoard: (name) => call("POST", "/boards", { name }),
  /**
   * @param {number} id
   * @param {string} name
   * @returns {Promise<Board>}
   */
  renameBoard: (id, name) => call("PATCH", `/boards/${id}`, { name }),
  /** @param {number} id */
  deleteBoard: (id) => call("DELETE", `/boards/${id}`),
  /**
   * Copy an output image into the input folder.
   * @param {number} id
   * @returns {Promise<{name: string, subfolder: string, type: string}>}
   */
  toInput: (id) => call("POST", `/images/${id}/to-input`),
}

/**
 * @param {number} id
 * @param {number} [size] longer edge in pixels
 */
export function thumbUrl(id, size = 256) {
  return `${BASE}/images/${id}/thumb?size=${size}`
}
