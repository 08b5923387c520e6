// The server's HTTP API and its event websocket.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`)
    this.status = status
    this.body = body || {}
  }
}

async function request(method, path, body) {
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

export const api = {
  nodes: () => request("GET", "/api/nodes"),
  types: () => request("GET", "/api/types"),
  queueJob: (workflow, { outputs, priority, overrides } = {}) =>
    request("POST", "/api/jobs", {
      workflow,
      overrides: overrides || {},
      ...(outputs ? { outputs } : {}),
      ...(priority ? { priority } : {}),
      client_id: clientId,
    }),
  job: (id, withWorkflow = false) => request("GET", `/api/jobs/${enc(id)}${withWorkflow ? "?workflow=true" : ""}`),
  history: (limit = 40, offset = 0) => request("GET", `/api/jobs?limit=${limit}&offset=${offset}`),
  queue: () => request("GET", "/api/queue"),
  cancel: (id) => request("POST", `/api/jobs/${enc(id)}/cancel`),
  deleteJob: (id) => request("DELETE", `/api/jobs/${enc(id)}`),
  interrupt: () => request("POST", "/api/interrupt"),
  validate: (workflow, outputs) => request("POST", "/api/validate", { workflow, ...(outputs ? { outputs } : {}) }),
  workflows: () => request("GET", "/api/workflows"),
  workflow: (name) => request("GET", `/api/workflows/${enc(name)}`),
  saveWorkflow: (name, workflow) => request("PUT", `/api/workflows/${enc(name)}`, { workflow }),
  deleteWorkflow: (name) => request("DELETE", `/api/workflows/${enc(name)}`),
  defaultWorkflow: () => request("GET", "/api/workflows/_default"),
  shippedWorkflows: () => request("GET", "/api/workflows/_shipped"),
  upload: (file, name) => {
    const form = new FormData()
    form.append("image", file, name || file.name)
    return request("POST", "/api/upload", form)
  },
}

/** URL of an output/input/temp image as the server reports it ({filename, subfolder, type}). */
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
  constructor(handlers) {
    this.handlers = handlers
    this.delay = 500
    this.connected = false
    this.connect()
  }

  connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws"
    const ws = new WebSocket(`${proto}://${location.host}/ws`)
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
