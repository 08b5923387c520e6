// @ts-check
// Shared application state: one editor per page. Modules import `app` and read what main.js filled in.

// -- the catalogue, as GET /atelier/v1/nodes and GET /atelier/v1/types describe it ----------------------------------

/**
 * A literal value of a widget input (COMBO choices are strings or numbers).
 * @typedef {string | number | boolean} WidgetValue
 */

/**
 * One input of a node type.
 * @typedef {object} InputDef
 * @property {string} name
 * @property {string} type a socket type (MODEL, IMAGE, …) or a widget type (INT, FLOAT, STRING, BOOLEAN, COMBO)
 * @property {boolean} optional
 * @property {true} [widget] given literally by a widget on the node (unless a link feeds it)
 * @property {WidgetValue} [default]
 * @property {number} [min]
 * @property {number} [max]
 * @property {number} [step]
 * @property {Array<string | number>} [choices] COMBO inputs: the values to pick from (model files, samplers)
 * @property {true} [multiline] STRING inputs edited in a text box (prompts)
 * @property {true} [control_after_generate] seeds: a combo under them changes them after each queue
 * @property {string} [description]
 */

/**
 * One output of a node type.
 * @typedef {object} OutputDef
 * @property {string} name
 * @property {string} type
 * @property {string} description
 */

/**
 * A node type of the catalogue.
 * @typedef {object} NodeDef
 * @property {string} type
 * @property {string} display_name
 * @property {string} version semver: workflows record it
 * @property {string} category slash-separated path in the node library ("sampling/custom")
 * @property {string} description
 * @property {boolean} output_node whether it is a goal of a run (Save Image, Preview Image)
 * @property {boolean} deprecated kept for old workflows, not offered in search or the palette
 * @property {InputDef[]} inputs
 * @property {OutputDef[]} outputs
 */

/**
 * The node catalogue: node type -> its description.
 * @typedef {Record<string, NodeDef>} Catalogue
 */

/**
 * A socket type: what travels along its links and the colour sockets and links of it are drawn in.
 * @typedef {object} SocketType
 * @property {string} description
 * @property {string} color "#rrggbb" or "hsl(…)"
 */

// -- runs ---------------------------------------------------------------------------------------------

/**
 * An image as the server reports it (output, input or temp folder).
 * @typedef {object} ImageRef
 * @property {string} filename
 * @property {string} [subfolder]
 * @property {string} [type] "output" (the default), "input" or "temp"
 */

/**
 * A problem of a workflow or a run, put on its node (and input) when it has one.
 * @typedef {object} NodeError
 * @property {string | number | null} [node]
 * @property {string} [node_type]
 * @property {string} [input]
 * @property {string} message
 * @property {string} [code]
 */

/** @typedef {"queued" | "running" | "cached" | "done" | "error" | "interrupted"} NodeStatus */

/**
 * What the editor knows of one workflow node's runs; kept by workflow node id so that it survives undo.
 * @typedef {object} NodeRuntime
 * @property {NodeStatus | null} status
 * @property {{value: number, max: number} | null} progress sampling steps of the running node
 * @property {HTMLImageElement | null} preview the latest preview frame while it runs
 * @property {ImageRef[]} images what the last run showed or saved
 * @property {number} [imageIndex] which of the images the node shows
 * @property {NodeError[]} errors
 * @property {number | null} elapsed milliseconds the node took
 */

/**
 * A job this page queued and still waits for.
 * @typedef {object} QueuedJob
 * @property {number} number the server's job number (#12)
 * @property {string[] | null} outputs the output nodes it runs up to (null: all of them)
 */

// -- the document ---------------------------------------------------------------------------------------

/**
 * A workflow parameter: an input exposed by name, with its value (the default) written into its targets.
 * @typedef {object} Parameter
 * @property {string} [type]
 * @property {unknown} [default]
 * @property {string[]} targets "nodeId.input" of the widgets it sets
 * @property {number} [min]
 * @property {number} [max]
 * @property {number} [step]
 * @property {boolean} [multiline]
 * @property {Array<string | number>} [choices]
 * @property {string} [description]
 */

/**
 * A workflow's metadata (name, description and whatever else it carries).
 * @typedef {{name?: string, description?: string, [key: string]: unknown}} Metadata
 */

/**
 * The document around the graph: what a workflow holds besides its nodes and layout.
 * @typedef {object} Doc
 * @property {Metadata} metadata
 * @property {Record<string, Parameter>} parameters
 * @property {Record<string, unknown>} extra top-level workflow keys this editor does not know, kept as they are
 * @property {Record<string, unknown>} uiExtra keys of the workflow's `ui` this editor does not know
 */

// -- the app --------------------------------------------------------------------------------------------

/**
 * The shared state, and hooks through which modules reach each other where importing would make a cycle.
 * @typedef {object} App
 * @property {Catalogue} catalogue from GET /atelier/v1/nodes
 * @property {Record<string, SocketType>} types from GET /atelier/v1/types
 * @property {import("litegraph").LGraph} graph
 * @property {import("litegraph").LGraphCanvas} canvas
 * @property {Doc} doc
 * @property {Map<string, NodeRuntime>} runtime per workflow node id
 * @property {Map<string, QueuedJob>} myJobs per job id
 * @property {boolean} ready the catalogue is loaded: changes are recorded from now on
 * @property {string} [savedAs] the library name the canvas was opened from or saved as
 * @property {string} [baseTitle] the page title without the run's progress
 * @property {number | null} [runProgress] 0..1 while one of our jobs runs
 * @property {boolean} [queueBusy] a queue request is on its way
 * @property {import("./history.js").History} [history] undo/redo stacks, for the console
 * @property {() => void} changed record an undo step soon (after the event that changed the canvas)
 * @property {() => void} setDirty redraw the canvas
 * @property {() => void} updateTitle
 * @property {() => void} markSaved the canvas is what the library holds now
 * @property {() => void} afterLoad a workflow was just loaded: start a new history
 * @property {(node: import("litegraph").LGraphNode, widget: import("./widgets.js").AtelierWidget) => void} onWidgetChanged
 * @property {() => void} [rebuildPalette]
 * @property {() => void} [onHistoryChanged] a job ended: the gallery is out of date
 * @property {() => void} [onQueueChanged]
 * @property {(url: string, filename?: string) => Promise<boolean>} [loadFromUrl]
 * @property {(node: import("litegraph").LGraphNode, widget: import("./widgets.js").AtelierWidget) => void} [pickImageFor]
 * @property {(jobId: string) => Promise<boolean>} [loadJob]
 * @property {(images: ImageRef[], index: number) => void} [openViewer]
 * @property {(image: ImageRef, options?: {onSaved?: (saved: ImageRef) => void}) => Promise<ImageRef | null>} [openMaskEditor] paint a mask on an image; the masked copy goes to the input folder
 * @property {(node: import("litegraph").LGraphNode) => Promise<ImageRef | null>} [openMaskEditorFor] paint a mask on a Load Image node's image
 * @property {(canvas: import("./graphio.js").Workflow) => import("./graphio.js").Workflow} [outerWorkflow] the whole
 *   workflow around what the canvas shows (a pipeline open inside it): pipelines.js
 * @property {(wf: import("./graphio.js").Workflow, options: {keepView?: boolean, fixChoices?: boolean}) => string[]} [loadWorkflow]
 *   put a whole workflow on the canvas (at the pipeline it was open inside): pipelines.js
 */

const noop = () => {}

/** @type {App} */
export const app = {
  catalogue: {},
  types: {},
  // makeCanvas() sets both before anything else runs: the rest of the editor may take them as there
  graph: /** @type {import("litegraph").LGraph} */ (/** @type {unknown} */ (null)),
  canvas: /** @type {import("litegraph").LGraphCanvas} */ (/** @type {unknown} */ (null)),
  doc: { metadata: { name: "" }, parameters: {}, extra: {}, uiExtra: {} },
  runtime: new Map(),
  myJobs: new Map(),
  ready: false,
  // hooks filled by main.js and the modules it starts
  changed: noop,
  setDirty: noop,
  updateTitle: noop,
  markSaved: noop,
  afterLoad: noop,
  onWidgetChanged: noop,
}

/**
 * The run-time state of a workflow node, made when first asked for.
 * @param {string} id workflow node id
 * @returns {NodeRuntime}
 */
export function runtimeOf(id) {
  let r = app.runtime.get(id)
  if (!r) {
    r = { status: null, progress: null, preview: null, images: [], errors: [], elapsed: null }
    app.runtime.set(id, r)
  }
  return r
}

/**
 * The colour the canvas draws sockets and links of a type in: the server's, from GET /atelier/v1/types.
 * @param {string} type
 * @returns {string}
 */
export function typeColor(type) {
  const known = app.types[type]?.color
  if (known) return known
  // a stable colour for types the server did not describe (the server picks the same for the ones it did not declare)
  let h = 0
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360
  return `hsl(${h} 55% 65%)`
}
