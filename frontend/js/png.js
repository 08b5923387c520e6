// @ts-check
// Workflows embedded in PNG files: Atelier's `atelier` iTXt chunk (zlib-compressed JSON
// {workflow, parameters, ...}) and ComfyUI's `prompt`/`workflow` tEXt chunks.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10]

/** @param {Uint8Array<ArrayBuffer>} bytes */
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

/**
 * The text chunks of a PNG: {keyword: text}.
 * @param {ArrayBuffer} buffer
 * @returns {Promise<Record<string, string>>}
 */
export async function pngTextChunks(buffer) {
  const bytes = new Uint8Array(buffer)
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file")
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const latin1 = new TextDecoder("latin1")
  const utf8 = new TextDecoder("utf-8")
  /** @type {Record<string, string>} */
  const out = {}
  let pos = 8
  while (pos + 8 <= bytes.length) {
    const len = view.getUint32(pos)
    const type = latin1.decode(bytes.subarray(pos + 4, pos + 8))
    const data = bytes.subarray(pos + 8, pos + 8 + len)
    pos += 12 + len
    if (type === "IEND") break
    if (type !== "tEXt" && type !== "iTXt" && type !== "zTXt") continue
    const z = data.indexOf(0)
    if (z < 0) continue
    const key = latin1.decode(data.subarray(0, z))
    try {
      if (type === "tEXt") {
        out[key] = latin1.decode(data.subarray(z + 1))
      } else if (type === "zTXt") {
        out[key] = latin1.decode(await inflate(data.subarray(z + 2)))
      } else {
        const compressed = data[z + 1] === 1
        let p = z + 3
        p = data.indexOf(0, p) + 1 // language tag
        p = data.indexOf(0, p) + 1 // translated keyword
        const text = data.subarray(p)
        out[key] = utf8.decode(compressed ? await inflate(text) : text)
      }
    } catch (err) {
      console.warn(`unreadable ${type} chunk ${key}`, err)
    }
  }
  return out
}

/**
 * A workflow found in a PNG: Atelier's (with the parameter values of the run), ComfyUI's API-format prompt
 * (with the UI-format workflow when there is one), or only ComfyUI's UI-format workflow.
 * @typedef {{kind: "atelier", workflow: import("./graphio.js").Workflow, parameters: Record<string, unknown>, meta: Record<string, unknown>}
 *   | {kind: "comfy", prompt: import("./graphio.js").ComfyApiPrompt, workflow: import("./graphio.js").ComfyUiWorkflow | null}
 *   | {kind: "comfy-ui", workflow: import("./graphio.js").ComfyUiWorkflow}} PngWorkflow
 */

/**
 * What a PNG carries, or null.
 * @param {ArrayBuffer} buffer
 * @returns {Promise<PngWorkflow | null>}
 */
export async function workflowFromPng(buffer) {
  const chunks = await pngTextChunks(buffer)
  if (chunks.atelier) {
    const meta = JSON.parse(chunks.atelier)
    return { kind: "atelier", workflow: meta.workflow, parameters: meta.parameters || {}, meta }
  }
  if (chunks.prompt) {
    let workflow = null
    try {
      workflow = chunks.workflow ? JSON.parse(chunks.workflow) : null
    } catch {
      workflow = null
    }
    return { kind: "comfy", prompt: JSON.parse(chunks.prompt), workflow }
  }
  if (chunks.workflow) return { kind: "comfy-ui", workflow: JSON.parse(chunks.workflow) }
  return null
}
