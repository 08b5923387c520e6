"""How a node type is declared.

A node type is a subclass of :class:`Node` with class attributes describing it and a ``run`` method::

    class EmptyLatentImage(Node):
        '''Create an empty latent batch to start sampling from.'''
        category = "latent"
        version = "1.0.0"
        inputs = (
            Int("width", 512, min=16, max=16384, step=8),
            Int("height", 512, min=16, max=16384, step=8),
            Int("batch_size", 1, min=1, max=4096),
        )
        outputs = (Output(LATENT),)  # a SocketType object, tied to its Python carrier

        def run(self, ctx: Context, width: int, height: int, batch_size: int) -> dict:
            ...

The declaration is checked when the class is created: by pydantic (:class:`NodeSpec`), and ``run``'s
parameters against the declared inputs, so each input is named once and a mismatch fails with the node
and the input named. ``spec`` is also the JSON description that the server and the canvas consume.
``run`` receives a :class:`Context` (typed facades: files, models, job provenance, progress, previews,
the job's cancel token) and the inputs as keyword arguments, and returns a tuple with one value per
output (a bare value when there is exactly one output) or a :class:`NodeResult` carrying UI data too.
"""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import types as T
from .folders import Folders
from .limits import Estimate, Extent, Limits
from .model_loader import ModelLoader
from .traits import Declared, Traits

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.-]+)?$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Interrupted(Exception):
    """Raised inside a node when the job it runs for has been interrupted."""


class InputSpec(BaseModel):
    """One input of a node type: a socket fed by a link, or a widget given literally (or linked)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    type: str
    optional: bool = False
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    choices: tuple[Any, ...] | None = None
    #: choices that change (model files, input images): called with the engine's folders
    choices_fn: Callable[[Folders], list[Any]] | None = Field(default=None, exclude=True)
    #: the socket type object (description, colour, carrier) when declared with one
    socket: T.SocketType | None = Field(default=None, exclude=True)
    multiline: bool = False
    description: str = ""
    control_after_generate: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"input name {v!r} is not an identifier")
        return v

    @property
    def is_widget(self) -> bool:
        """Primitive and choice inputs are widgets: given literally, or linked from a matching output."""
        return self.type in T.PRIMITIVES or self.type == T.COMBO

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def model_kind(self) -> str | None:
        """The model folder kind (``checkpoints``, ``loras``, ...) whose files this input chooses from, if any
        (declared with :func:`model_files`): what a shared workflow's manifest records."""
        return getattr(self.choices_fn, "model_kind", None)

    def resolved_choices(self, files: Folders | None = None) -> list[Any]:
        if self.choices_fn is not None:
            return list(self.choices_fn(files if files is not None else Folders()))
        return list(self.choices or ())

    def describe(self, files: Folders | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "optional": self.optional}
        if self.is_widget:
            d["widget"] = True
        for key in ("default", "min", "max", "step"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.type == T.COMBO:
            d["choices"] = self.resolved_choices(files)
        if self.multiline:
            d["multiline"] = True
        if self.control_after_generate:
            d["control_after_generate"] = True
        if self.description:
            d["description"] = self.description
        return d


class OutputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    type: str
    description: str = ""
    socket: T.SocketType | None = Field(default=None, exclude=True)


class NodeSpec(BaseModel):
    """The validated declaration of a node type; ``describe()`` is its JSON description."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: str
    display_name: str
    version: str
    category: str
    description: str = ""
    output_node: bool = False
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    deprecated: bool = False
    #: the node takes every input as a list (all elements of list outputs upstream) and runs once
    input_is_list: bool = False
    #: per output: the node returns a list, whose elements downstream nodes take one at a time
    output_is_list: tuple[bool, ...] = ()

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        if not SEMVER.match(v):
            raise ValueError(f"version {v!r} is not semver (MAJOR.MINOR.PATCH)")
        return v

    @model_validator(mode="after")
    def _unique(self) -> NodeSpec:
        names = [i.name for i in self.inputs]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.type}: duplicate input names {names}")
        outs = [o.name for o in self.outputs]
        if len(outs) != len(set(outs)):
            raise ValueError(f"{self.type}: duplicate output names {outs}")
        for i in self.inputs:
            if i.type == T.COMBO and i.choices is None and i.choices_fn is None:
                raise ValueError(f"{self.type}.{i.name}: a choice input needs choices")
        return self

    def input(self, name: str) -> InputSpec | None:
        for i in self.inputs:
            if i.name == name:
                return i
        return None

    def output_index(self, ref: str | int) -> int | None:
        """Index of an output named ``ref`` (or given by index), or None when there is no such output."""
        if isinstance(ref, bool):
            return None
        if isinstance(ref, int):
            return ref if 0 <= ref < len(self.outputs) else None
        for n, o in enumerate(self.outputs):
            if o.name == ref:
                return n
        return None

    def describe(self, files: Folders | None = None) -> dict[str, Any]:
        return {
            "type": self.type,
            "display_name": self.display_name,
            "version": self.version,
            "category": self.category,
            "description": self.description,
            "output_node": self.output_node,
            "deprecated": self.deprecated,
            "inputs": [i.describe(files) for i in self.inputs],
            "outputs": [o.model_dump() for o in self.outputs],
            "input_is_list": self.input_is_list,
            "output_is_list": [self.lists(n) for n in range(len(self.outputs))],
        }

    def lists(self, output: int) -> bool:
        """Whether output number ``output`` is a list (see :mod:`engine.node_lists`)."""
        return output < len(self.output_is_list) and self.output_is_list[output]


# -- input and output constructors -------------------------------------------------------------------


def Socket(name: str, type: T.TypeRef, *, optional: bool = False, description: str = "") -> InputSpec:
    """An input fed by a link from another node's output of ``type`` (a :class:`SocketType`)."""
    socket = type if isinstance(type, T.SocketType) else None
    return InputSpec(
        name=name, type=T.type_name(type), optional=optional, description=description, socket=socket
    )


def Int(
    name: str,
    default: int = 0,
    *,
    min: int | None = None,
    max: int | None = None,
    step: int = 1,
    optional: bool = False,
    description: str = "",
    control_after_generate: bool = False,
) -> InputSpec:
    return InputSpec(
        name=name,
        type=T.INT,
        default=default,
        min=min,
        max=max,
        step=step,
        optional=optional,
        description=description,
        control_after_generate=control_after_generate,
    )


def Float(
    name: str,
    default: float = 0.0,
    *,
    min: float | None = None,
    max: float | None = None,
    step: float = 0.01,
    optional: bool = False,
    description: str = "",
) -> InputSpec:
    return InputSpec(
        name=name,
        type=T.FLOAT,
        default=float(default),
        min=min,
        max=max,
        step=step,
        optional=optional,
        description=description,
    )


def String(
    name: str, default: str = "", *, multiline: bool = False, optional: bool = False, description: str = ""
) -> InputSpec:
    return InputSpec(
        name=name,
        type=T.STRING,
        default=default,
        multiline=multiline,
        optional=optional,
        description=description,
    )


def Boolean(name: str, default: bool = False, *, optional: bool = False, description: str = "") -> InputSpec:
    return InputSpec(name=name, type=T.BOOLEAN, default=default, optional=optional, description=description)


def Choice(
    name: str,
    choices: list[Any] | tuple[Any, ...] | Callable[[Folders], list[Any]],
    default: Any = None,
    *,
    optional: bool = False,
    description: str = "",
) -> InputSpec:
    """One of a list of choices. ``choices`` may be a callable for lists that change: it receives the
    engine's :class:`Folders` (see :func:`model_files`, :func:`input_files`)."""
    if callable(choices):
        return InputSpec(
            name=name,
            type=T.COMBO,
            choices_fn=choices,
            default=default,
            optional=optional,
            description=description,
        )
    choices = tuple(choices)
    if default is None and choices:
        default = choices[0]
    return InputSpec(
        name=name, type=T.COMBO, choices=choices, default=default, optional=optional, description=description
    )


def Output(type: T.TypeRef, name: str | None = None, *, description: str = "") -> OutputSpec:
    socket = type if isinstance(type, T.SocketType) else None
    tname = T.type_name(type)
    return OutputSpec(name=name or tname, type=tname, description=description, socket=socket)


def model_files(kind: str) -> Callable[[Folders], list[str]]:
    """Choices: the model files of ``kind`` (``checkpoints``, ``loras``, ...) in the engine's folders."""

    def choices(files: Folders) -> list[str]:
        return files.list_models(kind)

    choices.model_kind = kind  # type: ignore[attr-defined]

    choices.__qualname__ = f"model_files({kind!r})"
    return choices


def input_files(files: Folders) -> list[str]:
    """Choices: the images in the engine's input folder."""
    return files.input_images()


# -- run-time context ------------------------------------------------------------------------------


class CancelToken:
    """A job's cancel switch: set by whoever cancels (a Ctrl+C, a server request), read by the executor
    between nodes and by nodes inside their loops (``ctx.check_interrupt()``). One per job."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "interrupted") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, where: str = "") -> None:
        if self._event.is_set():
            raise Interrupted(f"{self.reason or 'interrupted'}{' in ' + where if where else ''}")


#: The cancel token of the job running in this context (thread): set by the executor for the duration of a
#: run, so that code deep inside a node (a network's blocks) can honour a cancel without being handed it.
_current_cancel: ContextVar[CancelToken | None] = ContextVar("atelier_current_cancel", default=None)


@contextmanager
def cancel_scope(token: CancelToken) -> Iterator[None]:
    """Make ``token`` the current job's for :func:`interrupt_point` within the block (this thread only)."""
    reset = _current_cancel.set(token)
    try:
        yield
    finally:
        _current_cancel.reset(reset)


def interrupt_point(where: str = "") -> None:
    """Raise :class:`Interrupted` if the job running in this thread was cancelled; nothing outside a job.
    Model code calls it between network blocks, so a cancel lands within one block of a long forward pass
    instead of at the end of the sampler step."""
    token = _current_cancel.get()
    if token is not None:
        token.check(where)


class Provenance(BaseModel):
    """What a result was made from, for PNG metadata: the workflow, parameter values, node versions and
    the files the result depends on (with their content hashes)."""

    workflow: dict[str, Any] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    node_versions: dict[str, str] = Field(default_factory=dict)
    #: node id -> {"type", "inputs", "fingerprint", plus what the node's ``provenance()`` adds (sha256)}
    files: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass
class JobContext:
    """The job a node runs for: its id, where it came from, and (once planned) its provenance."""

    id: str
    source: str = ""
    client_id: str | None = None
    workflow: Any = None  # engine.workflow.Workflow (not imported here: the workflow module imports nodes)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: whether nodes publish previews of their work in progress (the server's ``--preview-method``)
    previews: bool = True
    _provenance: Callable[[], Provenance] | None = None
    _memo: Provenance | None = None

    def provenance(self) -> Provenance:
        """Computed once per job, on first use (file content hashes are only taken when a node saves)."""
        if self._memo is None:
            self._memo = self._provenance() if self._provenance is not None else Provenance()
        return self._memo


Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class Context:
    """What a node's ``run`` receives besides its inputs: one per node execution.

    Typed facades instead of a bag of services: ``files`` (output/input/temp and model folders, file
    hashes), ``models`` (model files loaded once onto the engine's device), ``job`` (id, source,
    provenance), ``progress``/``preview`` (events), ``check_interrupt`` (the job's cancel token)."""

    job: JobContext
    node_id: str
    node_type: str
    device: str = "cpu"
    files: Folders = field(default_factory=Folders)
    models: ModelLoader = field(default_factory=ModelLoader)
    cancel: CancelToken = field(default_factory=CancelToken)
    emit: Emit | None = field(default=None, repr=False)
    #: the engine's limits: what a node that reads the outside world (an input image) may take in
    limits: Limits = field(default_factory=Limits)

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def interrupted(self) -> bool:
        return self.cancel.cancelled

    def check_interrupt(self) -> None:
        """Raise :class:`Interrupted` if the job was interrupted. Long loops call this between steps."""
        self.cancel.check(f"node {self.node_id} ({self.node_type})")

    def progress(self, value: float, max: float | None = None) -> None:
        """Report progress (``value`` of ``max``) and honour an interrupt."""
        self.check_interrupt()
        if self.emit is not None:
            self.emit("progress", {"value": value, "max": max})

    @property
    def wants_previews(self) -> bool:
        """Whether previews are wanted for this job and anybody listens for them (encoding one is wasted
        work otherwise)."""
        return self.emit is not None and self.job.previews

    def preview(self, image: bytes, *, format: str = "JPEG", width: int = 0, height: int = 0) -> None:
        """Publish an encoded preview image (JPEG/PNG/WEBP bytes) of the node's work in progress."""
        if self.wants_previews:
            self.emit("preview", {"image": image, "format": format, "width": width, "height": height})

    def send_image(self, image: bytes, *, format: str = "PNG", width: int = 0, height: int = 0) -> None:
        """Send an encoded image to the job's client as a result (never dropped, unlike a preview)."""
        if self.emit is not None:
            self.emit("image_output", {"image": image, "format": format, "width": width, "height": height})


@dataclass(frozen=True)
class NodeResult:
    """A node's outputs plus data for the user interface (saved images, text)."""

    outputs: tuple[Any, ...] = ()
    ui: Mapping[str, Any] | None = None


# -- the node base class --------------------------------------------------------------------------


class NodeDeclarationError(TypeError):
    """A node class whose declaration does not hold together (raised when the class is created)."""


class Node:
    """Base class of node types. Subclasses set the class attributes and implement ``run``.

    ``run(self, ctx, <one keyword parameter per declared input>)``: the parameters are checked against
    ``inputs`` when the class is created, so an input cannot be declared in one place and read under
    another name in the other (optional inputs need a default in ``run``).
    """

    type_name: ClassVar[str | None] = None
    display_name: ClassVar[str | None] = None
    version: ClassVar[str] = "1.0.0"
    category: ClassVar[str] = "misc"
    description: ClassVar[str | None] = None
    output_node: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    #: ComfyUI's INPUT_IS_LIST / OUTPUT_IS_LIST (engine/node_lists.py): list in, list out
    input_is_list: ClassVar[bool] = False
    output_is_list: ClassVar[tuple[bool, ...]] = ()
    #: False for nodes whose result must not be reused: non-deterministic or side-effect nodes. They run on
    #: every job, and what depends on them is not cached either.
    cacheable: ClassVar[bool] = True
    inputs: ClassVar[tuple[InputSpec, ...]] = ()
    outputs: ClassVar[tuple[OutputSpec, ...]] = ()

    spec: ClassVar[NodeSpec]
    #: Whether the class overrides ``fingerprint`` / ``provenance`` (saves a call per node when not).
    has_fingerprint: ClassVar[bool] = False
    has_provenance: ClassVar[bool] = False
    has_check_inputs: ClassVar[bool] = False
    has_estimate: ClassVar[bool] = False
    #: Whether the class overrides ``run_batch`` (cross-job batching, ``engine/batching.py``).
    has_batch: ClassVar[bool] = False
    #: Cross-job batching: the literal inputs whose values may differ between the jobs of one batch (a seed,
    #: a guidance scale); the others must be equal for a server to offer two jobs to one batch.
    batch_free: ClassVar[tuple[str, ...]] = ()
    has_traits: ClassVar[bool] = False

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        type_name = cls.__dict__.get("type_name") or cls.__name__
        doc = (cls.__doc__ or "").strip()
        try:
            cls.spec = NodeSpec(
                type=type_name,
                display_name=cls.display_name or _spaced(type_name),
                version=cls.version,
                category=cls.category,
                description=cls.description if cls.description is not None else doc,
                output_node=cls.output_node,
                inputs=tuple(cls.inputs),
                outputs=tuple(cls.outputs),
                deprecated=cls.deprecated,
                input_is_list=cls.input_is_list,
                output_is_list=tuple(cls.output_is_list),
            )
        except ValueError as exc:
            raise NodeDeclarationError(f"node type {type_name}: {exc}") from exc
        _check_run_signature(cls, type_name)
        cls.has_fingerprint = cls.fingerprint.__func__ is not Node.fingerprint.__func__  # type: ignore[attr-defined]
        cls.has_provenance = cls.provenance.__func__ is not Node.provenance.__func__  # type: ignore[attr-defined]
        cls.has_check_inputs = cls.check_inputs.__func__ is not Node.check_inputs.__func__  # type: ignore[attr-defined]
        cls.has_estimate = cls.estimate.__func__ is not Node.estimate.__func__  # type: ignore[attr-defined]
        cls.has_batch = cls.run_batch is not Node.run_batch
        cls.has_traits = cls.traits.__func__ is not Node.traits.__func__  # type: ignore[attr-defined]

    def run(self, ctx: Context, **inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.run")

    def batch_key(self, **inputs: Any) -> Hashable | None:
        """Cross-job batching: what must be equal for several jobs that reach this node at once to run it
        as one :meth:`run_batch` (same model, same sizes and settings, say), from the resolved inputs; None
        when these inputs cannot share a run. Only asked of nodes that implement ``run_batch``."""
        return None

    def run_batch(self, ctxs: Sequence[Context], inputs: Sequence[dict[str, Any]]) -> list[Any]:
        """Run the node once for several jobs whose inputs have the same :meth:`batch_key`: job ``i``'s
        context and inputs are ``ctxs[i]``, ``inputs[i]``; returns what ``run`` would have returned for each
        job, in order. Each job's progress and previews go through its own context. Raising makes every job
        of the batch run the node alone (a job whose own inputs fail then fails by itself)."""
        raise NotImplementedError(f"{type(self).__name__}.run_batch")

    @classmethod
    def fingerprint(cls, ctx: Context, **literals: Any) -> Any:
        """Extra signature material for nodes whose result depends on the outside world.

        Receives the literal (widget) inputs; returns something JSON-serialisable and cheap to compute,
        such as the identity (path, size, modification time) of the file a loader reads. The default, None,
        means the result depends on the inputs alone.
        """
        return None

    @classmethod
    def check_inputs(cls, files: Folders, **literals: Any) -> list[tuple[str | None, str]]:
        """Checks of literal values beyond their declared type and range, run by validation (before a job
        is queued): ``[(input name or None, message), ...]``, each reported as an error on this node. Gets
        the literal inputs only (linked ones are known at run time) and the engine's folders (for
        example to say that a prompt names an embedding file that does not exist)."""
        return []

    @classmethod
    def estimate(cls, files: Folders, upstream: Mapping[str, Extent], **literals: Any) -> Estimate | None:
        """What a run of this node will need, for admission control (before a job is queued): the figures
        to hold against the limits (pixels, batch, steps, prompt length, frames, decoded bytes), each
        naming the input that sets it, and the extents of the outputs for the nodes downstream.

        Gets the engine's folders (a loader may read a file's header, never decode it), the extents
        flowing into its linked inputs where the nodes upstream declared them (keyed by input name), and
        its literal inputs. Must be cheap. The default, None: nothing to say."""
        return None

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared | None:
        """What validation knows of this node's outputs before running (``engine/traits.py``): per output
        index, the traits it has (a model's family, read from a file header) or the needs it carries (a
        ControlNet's family, for whatever model it meets). Gets the engine's folders, the traits flowing
        into the linked inputs (keyed by input name), this node's id (to name in traits it creates) and its
        literal inputs. Must be cheap. The default, None: each output carries the traits of the inputs of
        its socket type."""
        return None

    @classmethod
    def provenance(cls, ctx: Context, **literals: Any) -> dict[str, Any] | None:
        """What a saved result should record about this node's outside-world input (a model file's
        sha256, say). Called only when a node of the job asks for the provenance (SaveImage), once."""
        return None


def _check_run_signature(cls: type[Node], type_name: str) -> None:
    """``run``'s keyword parameters must be exactly the declared inputs."""
    run = cls.run
    if run is Node.run:
        raise NodeDeclarationError(f"node type {type_name} does not implement run(self, ctx, ...)")
    params = list(inspect.signature(run).parameters.values())[2:]  # self, ctx
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = {
        p.name: p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    declared = {i.name: i for i in cls.spec.inputs}
    for name in named:
        if name not in declared:
            raise NodeDeclarationError(
                f"node type {type_name}: run() takes {name!r}, which is not a declared input "
                f"(inputs: {', '.join(declared) or 'none'})"
            )
    for name, spec in declared.items():
        p = named.get(name)
        if p is None:
            if not var_kw:
                raise NodeDeclarationError(
                    f"node type {type_name}: input {name!r} is declared but run() has no parameter for it"
                )
        elif spec.optional and p.default is inspect.Parameter.empty:
            raise NodeDeclarationError(
                f"node type {type_name}: optional input {name!r} needs a default in run() (it may be absent)"
            )


def _spaced(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
