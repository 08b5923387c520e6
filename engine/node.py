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
        outputs = (Output("LATENT"),)

        def run(self, ctx: Context, width: int, height: int, batch_size: int) -> tuple[dict]:
            ...

The declaration is checked by pydantic when the class is created (:class:`NodeSpec`); ``spec`` is also
the JSON description that the server and the canvas consume. ``run`` receives a :class:`Context` (device,
progress, previews, interrupt) and the inputs as keyword arguments, and returns a tuple with one value per
output (a bare value when there is exactly one output) or a :class:`NodeResult` carrying UI data too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import types as T

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
    choices_fn: Callable[[], list[Any]] | None = Field(default=None, exclude=True)
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

    def resolved_choices(self) -> list[Any]:
        if self.choices_fn is not None:
            return list(self.choices_fn())
        return list(self.choices or ())

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "optional": self.optional}
        if self.is_widget:
            d["widget"] = True
        for key in ("default", "min", "max", "step"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.type == T.COMBO:
            d["choices"] = self.resolved_choices()
        if self.multiline:
            d["multiline"] = True
        if self.control_after_generate:
            d["control_after_generate"] = True
        if self.description:
            d["description"] = self.description
        return d


class OutputSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    description: str = ""


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

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "display_name": self.display_name,
            "version": self.version,
            "category": self.category,
            "description": self.description,
            "output_node": self.output_node,
            "deprecated": self.deprecated,
            "inputs": [i.describe() for i in self.inputs],
            "outputs": [o.model_dump() for o in self.outputs],
        }


# -- input and output constructors -------------------------------------------------------------------


def Socket(name: str, type: str, *, optional: bool = False, description: str = "") -> InputSpec:
    """An input fed by a link from another node's output of ``type``."""
    return InputSpec(name=name, type=type, optional=optional, description=description)


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
    choices: list[Any] | tuple[Any, ...] | Callable[[], list[Any]],
    default: Any = None,
    *,
    optional: bool = False,
    description: str = "",
) -> InputSpec:
    """One of a list of choices. ``choices`` may be a callable for lists that change (model files)."""
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


def Output(type: str, name: str | None = None, *, description: str = "") -> OutputSpec:
    return OutputSpec(name=name or type, type=type, description=description)


# -- run-time context ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Folders a run reads from and writes to."""

    output: Path = Path("output")
    input: Path = Path("input")
    temp: Path = Path("temp")


@dataclass
class Context:
    """What a node's ``run`` receives besides its inputs. One per node execution."""

    job_id: str
    node_id: str
    node_type: str
    device: str = "cpu"
    paths: Paths = field(default_factory=Paths)
    services: Mapping[str, Any] = field(default_factory=dict)
    job_info: Mapping[str, Any] = field(default_factory=dict)
    _emit: Callable[[str, dict[str, Any]], None] | None = None
    _interrupt: threading.Event | None = None

    @property
    def interrupted(self) -> bool:
        return self._interrupt is not None and self._interrupt.is_set()

    def check_interrupt(self) -> None:
        """Raise :class:`Interrupted` if the job was interrupted. Long loops call this between steps."""
        if self._interrupt is not None and self._interrupt.is_set():
            raise Interrupted(f"interrupted in node {self.node_id} ({self.node_type})")

    def progress(self, value: float, max: float | None = None) -> None:
        """Report progress (``value`` of ``max``) and honour an interrupt."""
        self.check_interrupt()
        if self._emit is not None:
            self._emit("progress", {"value": value, "max": max})

    def preview(self, image: bytes, *, format: str = "JPEG", width: int = 0, height: int = 0) -> None:
        """Publish an encoded preview image (JPEG/PNG/WEBP bytes) of the node's work in progress."""
        if self._emit is not None:
            self._emit("preview", {"image": image, "format": format, "width": width, "height": height})


@dataclass(frozen=True)
class NodeResult:
    """A node's outputs plus data for the user interface (saved images, text)."""

    outputs: tuple[Any, ...] = ()
    ui: Mapping[str, Any] | None = None


# -- the node base class --------------------------------------------------------------------------


class Node:
    """Base class of node types. Subclasses set the class attributes and implement ``run``."""

    type_name: ClassVar[str | None] = None
    display_name: ClassVar[str | None] = None
    version: ClassVar[str] = "1.0.0"
    category: ClassVar[str] = "misc"
    description: ClassVar[str | None] = None
    output_node: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    inputs: ClassVar[tuple[InputSpec, ...]] = ()
    outputs: ClassVar[tuple[OutputSpec, ...]] = ()

    spec: ClassVar[NodeSpec]
    #: Whether the class overrides ``fingerprint`` (saves a call per node when it does not).
    has_fingerprint: ClassVar[bool] = False

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        type_name = cls.__dict__.get("type_name") or cls.__name__
        doc = (cls.__doc__ or "").strip()
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
        )
        cls.has_fingerprint = cls.fingerprint is not Node.fingerprint

    def run(self, ctx: Context, **inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.run")

    @classmethod
    def fingerprint(cls, ctx: Context, **literals: Any) -> Any:
        """Extra signature material for nodes whose result depends on the outside world.

        Receives the literal (widget) inputs; returns something JSON-serialisable, such as the content hash
        of the file a loader reads. The default, None, means the result depends on the inputs alone.
        """
        return None


def _spaced(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
