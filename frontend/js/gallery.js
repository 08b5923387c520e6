// @ts-check
// The queue (rows with a thumbnail, the prompt and the seed) and the gallery of output images (a
// virtualised grid, gallerygrid.js), and the image viewer (viewer.js) they open.

import { api } from "./api.js"
import { GalleryGrid } from "./gallerygrid.js"
import { galleryApi } from "./galleryapi.js"
import { app } from "./state.js"
import { errorMessage, h, toast } from "./ui.js"
import { listOf, openImageViewer } from "./viewer.js"

/** @typedef {import("./api.js").Job} Job */
/** @typedef {import("./state.js").ImageRef} ImageRef */
/** @typedef {import("./galleryapi.js").QueueRow} QueueRow */

/** @type {HTMLElement | null} */
let queueRoot = null
/** @type {GalleryGrid | null} */
let grid = null
/** @type {ReturnType<typeof setTimeout> | undefined} */
let refreshTimer

/**
 * @param {HTMLElement} queueEl the list of jobs queued and running
 * @param {HTMLElement} galleryEl the output images
 */
export function initGallery(queueEl, galleryEl) {
  queueRoot = queueEl
  grid = new GalleryGrid(galleryEl, {
    open: (source, index) =>
      openImageViewer({
        count: () => source.total,
        at: (i) => source.at(i),
        updated: (img) => grid?.updated(img),
        boards: () => grid?.facets?.boards || [],
      }, index),
  })
  app.onHistoryChanged = () => scheduleRefresh()
  app.onQueueChanged = () => refreshQueue()
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("gallery-wide") && !document.getElementById("viewer")) grid?.setWide(false)
  })
  refreshGallery()
  refreshQueue()
}

function scheduleRefresh() {
  clearTimeout(refreshTimer)
  refreshTimer = setTimeout(() => {
    refreshGallery()
    refreshQueue()
  }, 150)
}

/**
 * The thumbnail of a queue row: the running job's latest preview when this page sees it, else its number.
 * @param {QueueRow} row
 * @param {boolean} running
 */
function queueThumb(row, running) {
  if (running) {
    for (const r of app.runtime.values()) {
      if (r.preview?.src) return h("img", { class: "queue-thumb", src: r.preview.src, alt: "" })
    }
  }
  return h("span", { class: "queue-thumb placeholder" }, `#${row.number}`)
}

export async function refreshQueue() {
  if (!queueRoot) return
  let q
  try {
    q = await galleryApi.queue()
  } catch {
    return
  }
  const rows = [...q.running.map((j) => ({ ...j, running: true })), ...q.queued.map((j) => ({ ...j, running: false }))]
  queueRoot.replaceChildren(
    ...rows.map((j) =>
      h("li", { class: `queue-item${j.running ? " running" : ""}`, dataset: { job: j.id }, title: j.prompt },
        queueThumb(j, j.running),
        h("div", { class: "queue-text" },
          h("div", { class: "queue-line" },
            h("span", { class: "job-no" }, `#${j.number}`),
            h("span", { class: "job-state" }, j.running ? "running" : "queued"),
            j.seed !== null ? h("span", { class: "queue-seed" }, `seed ${j.seed}`) : null),
          h("div", { class: "queue-prompt" }, j.prompt || j.workflow || "")),
        h("button", {
          class: "icon-btn small",
          title: j.running ? "Interrupt this job" : "Remove from the queue",
          onclick: async () => {
            try {
              await api.cancel(j.id)
            } catch (err) {
              toast(errorMessage(err), "error")
            }
            refreshQueue()
          },
        }, "✕")),
    ),
  )
  queueRoot.parentElement?.classList.toggle("empty", rows.length === 0)
}

export async function refreshGallery() {
  await grid?.refresh()
}

/**
 * The image viewer on a list of images (a node's pictures).
 * @param {ImageRef[]} images
 * @param {number} index the one shown first
 * @param {Job | null} job whose images they are, for the caption
 */
export function openViewer(images, index, job) {
  openImageViewer(listOf(images), index, { caption: job ? `job #${job.number}` : "" })
}
