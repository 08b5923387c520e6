// @ts-check
// The session: the canvas is kept in local storage after each change and comes back on the next visit.

import { app } from "./state.js"
import { loadDefault, openWorkflow } from "./workflows.js"

const SESSION_KEY = "atelier.session"

/**
 * Keep the workflow (its JSON text) and the library name it was saved as.
 * @param {string | null} workflow
 */
export function saveSession(workflow) {
  try {
    localStorage.setItem(SESSION_KEY, JSON.stringify({ workflow, savedAs: app.savedAs ?? "" }))
  } catch {
    // storage full or unavailable: the session is simply not kept
  }
}

/** Put the last session's workflow on the canvas, or the default workflow when there is none. */
export async function restoreSession() {
  /** @type {{workflow?: string, savedAs?: string} | null} */
  let session = null
  try {
    session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null")
  } catch {
    session = null
  }
  if (session?.workflow) {
    app.savedAs = session.savedAs || ""
    if (!openWorkflow(JSON.parse(session.workflow), { source: "the last session" })) await loadDefault()
  } else {
    await loadDefault()
  }
}
