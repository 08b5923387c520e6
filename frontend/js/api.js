// @ts-check
// The server's HTTP API and its event websocket.

/** @typedef {import("./state.js").Catalogue} Catalogue */
/** @typedef {import("./state.js").ImageRef} ImageRef */
/** @typedef {import("./state.js").NodeError} NodeError */
/** @typedef {import("./state.js").SocketType} SocketType */

/**
 * A job as the server shows it (GET /atelier/v1/jobs/{id}, the history, the queue).
 * @typedef {object} Job
 * @property {string} id
 * @property {number} number
 * @property {number} priority
 * @property {"queued" | "running" | "success" | "failed" | "interrupted" | "cancelled" | "invalid"} status
 * @property {number} created seconds since the epoch
 * @property {number | null} started
 * @property {number | null} finished
 * @property {Record<string, {images?: ImageRef[]}>} outputs what each output node showed or saved
 * @property {{message?: string} | null} error
 * @property {Record<string, unknown>} overrides parameter values (or "node.input" values) of the run
 * @property {unknown} [workflow] only when asked for (?workflow=true)
 */

/**
 * An event of the websocket: job and node progress, the queue (fields as the type needs them).
 * @typedef {object} ServerEvent
 * @property {string} type hello, queue, job_started, node_cached, node_started, progress, node_finished, …
 * @property {string} [job]
 * @property {string} [node] the workflow node id, for events of a node
 * @property {string} [node_type]
 * @property {number} [value] progress
 * @property {number} [max] progress
 * @property {number} [queue_remaining] hello, queue
 * @property {number} [to_run] job_started: how many nodes will run
 * @property {number} [elapsed_ms]
 * @property {{images?: ImageRef[]}} [ui] node_finished: what it shows
 * @property {Record<string, {images?: ImageRef[]}>} [outputs] job_finished
 * @property {number} [cached] job_finished: how many nodes came from the cache
 * @property {string} [exception_type]
 * @property {string} [message]
 * @property {NodeError[]} [errors] job_failed: a refused workflow
 * @property {boolean} [_replayed] held back until our POST /atelier/v1/jobs answered, then handled
 */

/**
 * The JSON header of a preview frame.
 * @typedef {object} PreviewHeader
 * @property {string} [job]
 * @property {string | null} [node]
 * @property {number} [width]
 * @property {number} [height]
 * @property {string} [format] JPEG (the default), PNG, WEBP
 * @property {boolean} [_replayed]
 */

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {{error?: string, node_errors?: NodeError[]} | null} body
   */
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`)
    this.status = status
    this.body = body || {}
  }
}

/**
 * A request to the server; its JSON answer, of the type the caller declares for it.
 * @template T
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body] JSON, or FormData for uploads
 * @returns {Promise<T>}
 */
async function request(method, path, body) {
  /** @type {RequestInit & {headers: Record<string, string>}} */
  const init = { method, headers: {} }
  if (body instanceof FormData) {
    init.body = body
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json"
    init.body = JSON.stringify(body)
  }
  const res = await fetch(path, init)
  const text = await res.text()
  let data = null
  try {
    data = text ? JSON.parse(text) : null
  } catch {
    data = { error: text }
  }
  if (!res.ok) throw new ApiError(res.status, data)
  return data
}

const enc = encodeURIComponent

// the answers' types are what the server's routes (engine/server/api.py) return
export const api = {
  /** @returns {Promise<Catalogue>} */
  nodes: () => request("GET", "/atelier/v1/nodes"),
  /** @returns {Promise<Record<string, SocketType>>} */
  types: () => request("GET", "/atelier/v1/types"),
  /**
   * @param {unknown} workflow
   * @param {{outputs?: string[], priority?: number, overrides?: Record<string, unknown>}} [options]
   * @returns {Promise<{id: string, number: number, status: string, warnings?: {message: string}[]}>}
   */
  queueJob: (workflow, { outputs, priority, overrides } = {}) =>
    request("POST", "/atelier/v1/jobs", {
      workflow,
      overrides: overrides || {},
      ...(outputs ? { outputs } : {}),
      ...(priority ? { priority } : {}),
      client_id: clientId,
    }),
  /**
   * @param {string} id
   * @returns {Promise<Job>}
   */
  job: (id, withWorkflow = false) => request("GET", `/atelier/v1/jobs/${enc(id)}${withWorkflow ? "?workflow=true" : ""}`),
  /** @returns {Promise<{total: number, jobs: Job[]}>} */
  history: (limit = 40, offset = 0) => request("GET", `/atelier/v1/jobs?limit=${limit}&offset=${offset}`),
  /** @returns {Promise<{running: Job[], queued: Job[]}>} */
  queue: () => request("GET", "/atelier/v1/queue"),
  /** @param {string} id */
  cancel: (id) => request("POST", `/atelier/v1/jobs/${enc(id)}/cancel`),
  /** @param {string} id */
  deleteJob: (id) => request("DELETE", `/atelier/v1/jobs/${enc(id)}`),
  /** @returns {Promise<{interrupted: boolean | null}>} */
  interrupt: () => request("POST", "/atelier/v1/interrupt"),
  /**
   * @param {unknown} workflow
   * @param {string[]} [outputs]
   */
  validate: (workflow, outputs) => request("POST", "/atelier/v1/validate", { workflow, ...(outputs ? { outputs } : {}) }),
  /** @returns {Promise<{workflows: {name: string, description: string, updated: number}[]}>} */
  workflows: () => request("GET", "/atelier/v1/workflows"),
  /**
   * @param {string} name
   * @returns {Promise<unknown>} the workflow as it was saved
   */
  workflow: (name) => request("GET", `/atelier/v1/workflows/${enc(name)}`),
  /**
   * @param {string} name
   * @param {unknown} workflow
   */
  saveWorkflow: (name, workflow) => request("PUT", `/atelier/v1/workflows/${enc(name)}`, { workflow }),
  /** @param {string} name */
  deleteWorkflow: (name) => request("DELETE", `/atelier/v1/workflows/${enc(name)}`),
  /** @returns {Promise<unknown>} */
  defaultWorkflow: () => request("GET", "/atelier/v1/workflows/_default"),
  /** @returns {Promise<Record<string, import("./graphio.js").Workflow>>} the workflows in workflows/ by file stem */
  shippedWorkflows: () => request("GET", "/atelier/v1/workflows/_shipped"),
  /**
   * Any workflow Atelier reads (ComfyUI's UI and API formats too) in Atelier's format, converted by the
   * server: the canvas has no converter of its own. A 400 lists the nodes it cannot take (node_errors).
   * @param {unknown} workflow
   * @param {"atelier" | "comfyui-api"} [to]
   * @returns {Promise<{workflow: import("./graphio.js").Workflow, source: string}>}
   */
  convert: (workflow, to = "atelier") => request("POST", "/atelier/v1/convert", { workflow, to }),
  /**
   * The workflow a PNG or WEBP carries (Atelier's, or ComfyUI's), converted; a 404 when it carries none.
   * @param {File} file
   * @returns {Promise<{workflow: import("./graphio.js").Workflow, source: string}>}
   */
  convertImage: (file) => {
    const form = new FormData()
    form.append("image", file, file.name)
    return request("POST", "/atelier/v1/convert/image", form)
  },
  /**
   * @param {File} file
   * @param {string} [name]
   * @returns {Promise<{name: string, subfolder: string, type: string, width: number, height: number}>}
   */
  upload: (file, name) => {
    const form = new FormData()
    form.append("image", file, name || file.name)
    return request("POST", "/atelier/v1/upload", form)
  },
}

/**
 * URL of an output/input/temp image as the server reports it ({filename, subfolder, type}).
 * @param {ImageRef} img
 */
export function imageUrl(img) {
  const q = new URLSearchParams({ filename: img.filename, subfolder: img.subfolder || "", type: img.type || "output" })
  return `/view?${q}`
}

export const clientId = (() => {
  try {
    let id = sessionStorage.getItem("atelier.clientId")
    if (!id) {
      id = crypto.randomUUID ? crypto.randomUUID().replace(/-/g, "") : String(Math.random()).slice(2)
      sessionStorage.setItem("atelier.clientId", id)
    }
    return id
  } catch {
    return String(Math.random()).slice(2)
  }
})()

/**
 * The event stream: Atelier events as JSON text frames, previews as binary frames
 * (4-byte big-endian header length, JSON header, JPEG bytes). Reconnects on its own.
 */
export class EventSocket {
  /**
   * @param {object} handlers
   * @param {(ev: ServerEvent) => void} [handlers.onEvent]
   * @param {(header: PreviewHeader, image: Blob) => void} [handlers.onPreview]
   * @param {(connected: boolean) => void} [handlers.onStatus]
   */
  constructor(handlers) {
    this.handlers = handlers
    this.delay = 500
    this.connected = false
    /** @type {WebSocket | null} */
    this.ws = null
    this.connect()
  }

  connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws"
    const ws = new WebSocket(`${proto}://${location.host}/atelier/v1/ws`)
    ws.binaryType = "arraybuffer"
    this.ws = ws
    ws.onopen = () => {
      this.connected = true
      this.delay = 500
      this.handlers.onStatus?.(true)
    }
    ws.onclose = () => {
      this.connected = false
      this.handlers.onStatus?.(false)
      setTimeout(() => this.connect(), this.delay)
      this.delay = Math.min(this.delay * 2, 8000)
    }
    ws.onmessage = (msg) => {
      try {
        if (typeof msg.data === "string") {
          this.handlers.onEvent?.(JSON.parse(msg.data))
        } else {
          const view = new DataView(msg.data)
          const len = view.getUint32(0)
          const header = JSON.parse(new TextDecoder().decode(new Uint8Array(msg.data, 4, len)))
          const bytes = new Uint8Array(msg.data, 4 + len)
          const mime = `image/${(header.format || "jpeg").toLowerCase()}`
          this.handlers.onPreview?.(header, new Blob([bytes], { type: mime }))
        }
      } catch (err) {
        console.error("bad websocket message", err)
      }
    }
  }
}
