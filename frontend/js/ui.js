// Small DOM helpers: elements, toasts, modal dialogs.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === "class") el.className = v
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v)
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v)
    else if (k === "dataset") Object.assign(el.dataset, v)
    else if (k in el && typeof v !== "string") el[k] = v
    else el.setAttribute(k, v === true ? "" : v)
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

/** Whether a key event goes to a text field (its keys are the field's, not shortcuts). */
export function isTyping(e) {
  const t = e.target
  return t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))
}

export function toast(message, kind = "info", timeout = 4000) {
  const box = document.getElementById("toasts")
  const t = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message)
  t.addEventListener("click", () => t.remove())
  box.appendChild(t)
  while (box.children.length > 4) box.firstElementChild.remove()
  if (timeout) setTimeout(() => t.classList.add("leaving"), timeout)
  if (timeout) setTimeout(() => t.remove(), timeout + 300)
  return t
}

let openModal = null

export function closeModal() {
  openModal?.()
}

/** A modal dialog. Returns a function that closes it. */
export function modal({ title, body, actions = [], wide = false, onClose }) {
  closeModal()
  const backdrop = h("div", { class: "modal-backdrop" })
  const footer = h("div", { class: "modal-actions" })
  const box = h(
    "div",
    { class: `modal${wide ? " modal-wide" : ""}`, role: "dialog", "aria-label": title },
    h("div", { class: "modal-head" }, h("h2", {}, title), h("button", { class: "icon-btn", title: "Close", onclick: () => close() }, "✕")),
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
  box.querySelector("input, textarea, select")?.focus()
  return close
}

export function promptDialog(title, label, value = "", { placeholder = "", okLabel = "OK" } = {}) {
  return new Promise((resolve) => {
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

export function download(filename, blob) {
  const a = h("a", { href: URL.createObjectURL(blob), download: filename })
  document.body.appendChild(a)
  a.click()
  setTimeout(() => {
    URL.revokeObjectURL(a.href)
    a.remove()
  }, 1000)
}

export function timeAgo(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts)
  if (s < 60) return "just now"
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`
  return new Date(ts * 1000).toLocaleDateString()
}
