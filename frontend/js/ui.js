// @ts-check
// Small DOM helpers: elements, toasts, modal dialogs.

import { icon } from "./icons.js"

/**
 * A child for h(): a node, or text; null, undefined and false are left out.
 * @typedef {Node | string | number | null | undefined | false} Child
 */

/**
 * A DOM element: `class`, `style` (an object), `dataset`, `on<event>` listeners, properties, attributes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, unknown>} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === "class") el.className = String(v)
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v)
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), /** @type {EventListener} */ (v))
    else if (k === "dataset") Object.assign(el.dataset, v)
    else if (k in el && typeof v !== "string") Reflect.set(el, k, v)
    else el.setAttribute(k, v === true ? "" : String(v))
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

/**
 * An element of the page (index.html) by its id; `kind` says what it must be.
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @param {{new (): T, prototype: T}} [kind] HTMLInputElement, HTMLButtonElement, …
 * @returns {T}
 */
export function byId(id, kind) {
  const el = document.getElementById(id)
  if (!(el instanceof (kind || HTMLElement))) throw new Error(`the page has no ${kind?.name || "element"} #${id}`)
  return /** @type {T} */ (el)
}

/**
 * Whether a key event goes to a text field (its keys are the field's, not shortcuts).
 * @param {Event} e
 */
export function isTyping(e) {
  const t = e.target
  return t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))
}

/**
 * The message of something thrown (an Error's, or the thing itself as text).
 * @param {unknown} err
 */
export function errorMessage(err) {
  return err instanceof Error ? err.message : String(err)
}

/**
 * A short message in the corner; `timeout` 0 keeps it until clicked.
 * @param {string} message
 * @param {"info" | "success" | "error"} [kind]
 * @param {number} [timeout] milliseconds
 */
export function toast(message, kind = "info", timeout = 4000) {
  const box = byId("toasts")
  const t = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message)
  t.addEventListener("click", () => t.remove())
  box.appendChild(t)
  while (box.children.length > 4) box.firstElementChild?.remove()
  if (timeout) setTimeout(() => t.classList.add("leaving"), timeout)
  if (timeout) setTimeout(() => t.remove(), timeout + 300)
  return t
}

/** @type {(() => void) | null} */
let openModal = null

export function closeModal() {
  openModal?.()
}

/**
 * A button of a dialog; its `onClick` returning false keeps the dialog open.
 * @typedef {object} ModalAction
 * @property {string} label
 * @property {boolean} [primary]
 * @property {boolean} [danger]
 * @property {() => unknown} [onClick]
 */

/**
 * A modal dialog. Returns a function that closes it.
 * @param {object} spec
 * @param {string} spec.title
 * @param {Child | Child[]} spec.body
 * @param {ModalAction[]} [spec.actions]
 * @param {boolean} [spec.wide]
 * @param {() => void} [spec.onClose]
 * @returns {() => void}
 */
export function modal({ title, body, actions = [], wide = false, onClose }) {
  closeModal()
  const backdrop = h("div", { class: "modal-backdrop" })
  const footer = h("div", { class: "modal-actions" })
  const box = h(
    "div",
    { class: `modal${wide ? " modal-wide" : ""}`, role: "dialog", "aria-label": title },
    h("div", { class: "modal-head" }, h("h2", {}, title), h("button", { class: "icon-btn", title: "Close", onclick: () => close() }, icon("close"))),
    h("div", { class: "modal-body" }, body),
    footer,
  )
  const close = () => {
    backdrop.remove()
    document.removeEventListener("keydown", onKey, true)
    if (openModal === close) openModal = null
    onClose?.()
  }
  for (const a of actions) {
    footer.appendChild(
      h("button", { class: `btn${a.primary ? " btn-primary" : ""}${a.danger ? " btn-danger" : ""}`, onclick: async () => {
        if ((await a.onClick?.()) !== false) close()
      } }, a.label),
    )
  }
  if (!actions.length) footer.remove()
  /** @param {KeyboardEvent} e */
  const onKey = (e) => {
    if (e.key === "Escape") {
      e.stopPropagation()
      close()
    }
  }
  document.addEventListener("keydown", onKey, true)
  backdrop.addEventListener("pointerdown", (e) => {
    if (e.target === backdrop) close()
  })
  backdrop.appendChild(box)
  document.body.appendChild(backdrop)
  openModal = close
  const field = box.querySelector("input, textarea, select")
  if (field instanceof HTMLElement) field.focus()
  return close
}

/**
 * Ask for a line of text; resolves to it (trimmed), or null when cancelled or left empty.
 * @param {string} title
 * @param {string} label
 * @param {string} [value]
 * @param {{placeholder?: string, okLabel?: string}} [options]
 * @returns {Promise<string | null>}
 */
export function promptDialog(title, label, value = "", { placeholder = "", okLabel = "OK" } = {}) {
  return new Promise((resolve) => {
    /** @type {string | null} */
    let result = null
    const input = h("input", { class: "text-input", type: "text", value, placeholder, "aria-label": label })
    const submit = () => {
      result = input.value.trim()
      close()
    }
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") submit()
    })
    const close = modal({
      title,
      body: h("label", { class: "field" }, h("span", {}, label), input),
      actions: [{ label: "Cancel" }, { label: okLabel, primary: true, onClick: () => { result = input.value.trim() } }],
      onClose: () => resolve(result || null),
    })
    input.select()
  })
}

/**
 * Ask to confirm something dangerous.
 * @param {string} title
 * @param {string} message
 * @param {string} [okLabel]
 * @returns {Promise<boolean>}
 */
export function confirmDialog(title, message, okLabel = "OK") {
  return new Promise((resolve) => {
    let ok = false
    modal({
      title,
      body: h("p", {}, message),
      actions: [{ label: "Cancel" }, { label: okLabel, primary: true, danger: true, onClick: () => { ok = true } }],
      onClose: () => resolve(ok),
    })
  })
}

/**
 * Save a blob as a file, the way a download link does.
 * @param {string} filename
 * @param {Blob} blob
 */
export function download(filename, blob) {
  const a = h("a", { href: URL.createObjectURL(blob), download: filename })
  document.body.appendChild(a)
  a.click()
  setTimeout(() => {
    URL.revokeObjectURL(a.href)
    a.remove()
  }, 1000)
}

/**
 * "just now", "5 min ago", "3 h ago", or the date.
 * @param {number} ts seconds since the epoch
 */
export function timeAgo(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts)
  if (s < 60) return "just now"
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`
  return new Date(ts * 1000).toLocaleDateString()
}
