// @ts-check
// The node context menu (right-click a node) and renaming a node by double-clicking its title.

import { LGraphCanvas } from "litegraph"
import { menu } from "./canvas.js"
import { openViewer } from "./gallery.js"
import { maskMenuOptions } from "./maskeditor.js"
import { modeMenuEntries } from "./modes.js"
import { AtelierNode, nodeId, widgetsOf } from "./nodes.js"
import { exposeWidget, unexposeWidget } from "./params.js"
import { queue } from "./run.js"
import { app } from "./state.js"
import { promptDialog } from "./ui.js"

/** @typedef {import("litegraph").LGraphNode} LGraphNode */
/** @typedef {import("litegraph").IContextMenuValue} MenuEntry */
/** @typedef {import("./widgets.js").AtelierWidget} AtelierWidget */

/**
 * The parameter a widget is exposed as, if it is.
 * @param {LGraphNode} node
 * @param {AtelierWidget} widget
 */
function exposedAs(node, widget) {
  const target = `${nodeId(node)}.${widget.name}`
  return Object.entries(app.doc.parameters || {}).find(([, p]) => p.targets?.includes(target))?.[0]
}

/** @param {LGraphNode} node */
async function renameNode(node) {
  const t = await promptDialog("Rename node", "Title", node.title, { okLabel: "Rename" })
  if (t) {
    node.title = t
    app.setDirty()
    app.changed()
  }
}

/**
 * @param {LGraphNode} node
 * @returns {(MenuEntry | null)[]} null entries are separators
 */
function menuOptions(node) {
  const def = app.catalogue[node.type]
  /** @type {(MenuEntry | null)[]} */
  const opts = []
  const widgets = widgetsOf(node).filter((w) => !w.isControl && w.inputSpec)
  if (widgets.length) {
    opts.push({
      content: "Expose as parameter",
      has_submenu: true,
      submenu: {
        options: widgets.map((w) => {
          const name = exposedAs(node, w)
          return {
            content: name ? `${w.name} — exposed as ${name} (remove)` : w.name,
            callback: () => {
              if (name) unexposeWidget(node, w)
              else exposeWidget(node, w)
            },
          }
        }),
      },
    })
  }
  if (def?.output_node) opts.push({ content: "Queue up to this output", callback: () => { queue({ outputs: [nodeId(node)] }) } })
  const r = app.runtime.get(nodeId(node))
  if (r?.images?.length) {
    opts.push({ content: "Open image", callback: () => openViewer(r.images, r.imageIndex || 0, null) })
    if (r.images.length > 1) {
      opts.push({ content: "Next image", callback: () => { r.imageIndex = ((r.imageIndex || 0) + 1) % r.images.length; app.setDirty() } })
    }
  }
  opts.push(...maskMenuOptions(node, r?.images || [], r?.imageIndex || 0))
  opts.push(
    null,
    ...modeMenuEntries(node),
    { content: "Rename…", callback: () => { renameNode(node) } },
    { content: node.collapsed ? "Expand" : "Collapse", callback: () => { node.collapse(); app.changed() } },
    { content: node.pinned ? "Unpin" : "Pin", callback: () => { node.pin(); app.setDirty() } },
    { content: "Colors", has_submenu: true, callback: LGraphCanvas.onMenuNodeColors },
    null,
  )
  return opts
}

/** Give every catalogue node (they all derive from AtelierNode) this menu and title renaming. */
export function installNodeMenu() {
  AtelierNode.prototype.onNodeTitleDblClick = function () {
    renameNode(this)
  }
  AtelierNode.prototype.getMenuOptions = function () {
    return menu(menuOptions(this))
  }
}
