// @ts-check
// Notices the user needs to see once, not on every load (a shipped workflow's model file replaced by one this
// server has): the ones already shown are remembered in local storage.

const KEY = "atelier.notices-seen"
const KEEP = 200

/** @returns {string[]} */
function seen() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) || "[]")
    return Array.isArray(list) ? list.filter((x) => typeof x === "string") : []
  } catch {
    return []
  }
}

/**
 * The messages not shown before (each once, in order); they count as shown from now on.
 * @param {string[]} messages
 * @returns {string[]}
 */
export function unseenNotices(messages) {
  const before = seen()
  const known = new Set(before)
  /** @type {string[]} */
  const fresh = []
  for (const m of messages) {
    if (known.has(m)) continue
    known.add(m)
    fresh.push(m)
  }
  if (fresh.length) {
    try {
      localStorage.setItem(KEY, JSON.stringify([...before, ...fresh].slice(-KEEP)))
    } catch {
      // storage unavailable: shown again next time
    }
  }
  return fresh
}
