// @ts-check
// The queue and the gallery of recent jobs, and the image viewer.

import { api, imageUrl } from "./api.js"
import { icon } from "./icons.js"
import { app } from "./state.js"
import { errorMessage, h, timeAgo, toast } from "./ui.js"

/** @typedef {import("./api.js").Job} Job */
/** @typedef {import("./state.js").ImageRef} ImageRef */

/** @type {HTMLElement | null} */
let queueRoot = null
/** @type {HTMLElement | null} */
let galleryRoot = null
/** @type {ReturnType<typeof setTimeout> | undefined} */
let refreshTimer

/**
 * The images a job's output nodes showed or saved.
 * @param {Job} job
 * @returns {(ImageRef & {node: string})[]}
 */
function jobImages(job) {
  const out = []
  for (const [node, o] of Object.entries(job.outputs || {})) {
    for (const img of o.images || []) out.push({ ...img, node })
  }
  return out
}

/** @param {Job} job */
function duration(job) {
  if (!job.started || !job.finished) return ""
  const s = job.finished - job.started
  return s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`
}

/**
 * @param {HTMLElement} queueEl the list of jobs queued and running
 * @param {HTMLElement} galleryEl the recent images
 */
export function initGallery(queueEl, galleryEl) {
  queueRoot = queueEl
  galleryRoot = galleryEl
  app.onHistoryChanged = () => scheduleRefresh()
  app.onQueueChanged = () => refreshQueue()
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

export async function refreshQueue() {
  if (!queueRoot) return
  let q
  try {
    q = await api.queue()
  } catch {
    return
  }
  const rows = [...q.running.map((j) => ({ ...j, running: true })), ...q.queued.map((j) => ({ ...j, running: false }))]
  queueRoot.replaceChildren(
    ...rows.map((j) =>
      h("li", { class: `queue-item${j.running ? " running" : ""}`, dataset: { job: j.id } },
        h("span", { class: "job-no" }, `#${j.number}`),
        h("span", { class: "job-state" }, j.running ? "running" : "queued"),
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
        }, icon("close"))),
    ),
  )
  queueRoot.parentElement?.classList.toggle("empty", rows.length === 0)
}

export async function refreshGallery() {
  if (!galleryRoot) return
  let data
  try {
    data = await api.history(40)
  } catch {
    return
  }
  const cards = []
  for (const job of data.jobs) {
    const images = jobImages(job)
    const status = job.status
    if (images.length) {
      images.forEach((img, i) => {
        cards.push(
          h("figure", { class: "tile", dataset: { job: job.id, filename: img.filename }, title: `#${job.number} · ${img.filename}` },
            h("img", { src: imageUrl(img), loading: "lazy", alt: img.filename, onclick: () => openViewer(images, i, job) }),
            h("figcaption", {}, h("span", {}, `#${job.number}`), h("span", {}, duration(job) || timeAgo(job.created)))),
        )
      })
    } else if (status !== "success") {
      cards.push(
        h("figure", { class: `tile tile-${status}`, dataset: { job: job.id }, title: `${job.error?.message || status} — click to load its workflow`, onclick: () => app.loadJob?.(job.id) },
          h("div", { class: "tile-msg" }, h("strong", {}, status), h("span", {}, job.error?.message || "")),
          h("figcaption", {}, h("span", {}, `#${job.number}`), h("span", {}, timeAgo(job.created)))),
      )
    }
  }
  galleryRoot.replaceChildren(...(cards.length ? cards : [h("p", { class: "empty hint" }, "Finished images appear here.")]))
}

// -- viewer ---------------------------------------------------------------------------------------

/**
 * The image viewer over the page: arrow keys go through the images, Escape closes it.
 * @param {ImageRef[]} images
 * @param {number} index the one shown first
 * @param {Job | null} job whose images they are, for the caption
 */
export function openViewer(images, index, job) {
  document.getElementById("viewer")?.remove()
  let i = index
  const img = h("img", { class: "viewer-img", alt: "" })
  const caption = h("div", { class: "viewer-caption" })
  const show = () => {
    const cur = images[i]
    img.src = imageUrl(cur)
    caption.textContent = `${cur.filename}${job ? ` · job #${job.number}` : ""}${images.length > 1 ? ` · ${i + 1}/${images.length}` : ""}`
  }
  const close = () => {
    box.remove()
    document.removeEventListener("keydown", onKey, true)
  }
  /** @param {KeyboardEvent} e */
  const onKey = (e) => {
    if (e.key === "Escape") close()
    else if (e.key === "ArrowRight" && i < images.length - 1) {
      i++
      show()
    } else if (e.key === "ArrowLeft" && i > 0) {
      i--
      show()
    } else return
    e.stopPropagation()
    e.preventDefault()
  }
  const box = h("div", { id: "viewer", class: "viewer", onclick: (/** @type {MouseEvent} */ e) => { if (e.target === box) close() } },
    h("div", { class: "viewer-frame" },
      img,
      h("div", { class: "viewer-bar" },
        caption,
        h("div", { class: "viewer-actions" },
          h("button", { class: "btn", onclick: async () => {
            close()
            await app.loadFromUrl?.(imageUrl(images[i]), images[i].filename)
          } }, "Load workflow"),
          h("button", { class: "btn", title: "Paint a mask on this image; the masked copy goes into a Load Image node", onclick: () => {
            close()
            app.openMaskEditor?.(images[i])
          } }, "Mask editor"),
          h("a", { class: "btn", href: imageUrl(images[i]), download: images[i].filename, onclick: (/** @type {MouseEvent} */ e) => {
            if (e.currentTarget instanceof HTMLAnchorElement) e.currentTarget.href = imageUrl(images[i])
          } }, "Download"),
          h("button", { class: "btn", onclick: close }, "Close")))),
  )
  document.addEventListener("keydown", onKey, true)
  document.body.appendChild(box)
  show()
}
