"""The composition root: one place that builds an engine for the CLI, the server, the tests and workers.

``build_engine(config)`` makes the folders, the node registry, the model loader, the output cache and the
executor from one :class:`EngineConfig`, and lets plugins (entry points ``atelier.plugins``: Atelier's
Stable Diffusion models and its server are two) add what they know: model folder layouts, subcommands.
Nothing here is process-wide: two engines in one process are independent.

The engine options (``--device``, ``--dtype``, ``--models-dir``, folders, cache size) are declared once in
:func:`add_engine_arguments` and shared by every command that builds an engine (``run``, ``serve``,
``demo``, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .admission import Admission, admit
from .cache import OutputCache, default_budget, default_device_budget
from .executor import Executor
from .folders import Folders
from .host_cache import HostCache
from .limits import Limits
from .manifest import HashIndex
from .memory import DeviceBudget, capacity_from
from .model_loader import ModelLoader, parse_dtype
from .pipeline_library import PipelineLibrary
from .registry import Registry, default_registry
from .validate import CheckResult, Graph
from .warmup import WarmupStep

log = logging.getLogger(__name__)

PLUGIN_GROUP = "atelier.plugins"


class EngineConfig(BaseModel):
    """Everything an engine is built from. Unset fields fall back to ``ATELIER_*`` environment variables,
    then to defaults (folders under the working directory, the best device available)."""

    model_config = ConfigDict(frozen=True)

    device: str | None = Field(None, description="cpu, cuda, cuda:1, mps (default: the best available)")
    dtype: str | None = Field(None, description="model weights: float16, bfloat16, float32")
    models_dir: Path | None = Field(None, description="models root ($ATELIER_MODELS, default ./models)")
    config_file: Path | None = Field(None, description="TOML file with more model folders ($ATELIER_CONFIG)")
    output_dir: Path | None = None
    input_dir: Path | None = None
    temp_dir: Path | None = None
    pipelines_dir: Path | None = Field(
        None, description="your pipeline library ($ATELIER_PIPELINES, ./pipelines)"
    )
    cache_mb: float | None = Field(None, description="output cache budget (default: RAM/4, at most 8 GiB)")
    max_loaded_models: int = 3  # checkpoints and standalone VAEs together
    vram_budget_gb: float | None = Field(
        None,
        description="device memory for models and cached outputs, GiB ($ATELIER_VRAM_BUDGET; default on "
        "CUDA: total less a reserve; none on the CPU; 0: none)",
    )
    fast_path: bool | None = Field(
        None,
        description="the GPU fast path (engine/models/fast_path.py); default: on for CUDA ($ATELIER_FAST_PATH)",
    )
    compile: str | None = Field(
        None, description="torch.compile the UNet: default, reduce-overhead, max-autotune ($ATELIER_COMPILE)"
    )
    model_cache_mb: float | None = Field(
        None,
        description="host memory for models dropped from the device (default: RAM/4, at most 8 GiB; 0: none)",
    )
    limits: Limits = Field(default_factory=Limits, description="admission limits (engine/limits.py)")

    def resolved(self) -> EngineConfig:
        """The configuration with environment variables and defaults filled in."""
        env = os.environ

        def path(value: Path | None, var: str, default: str | None) -> Path | None:
            if value is not None:
                return value
            if env.get(var):
                return Path(env[var])
            return Path(default) if default is not None else None

        return self.model_copy(
            update={
                "device": self.device or env.get("ATELIER_DEVICE") or default_device(),
                "dtype": self.dtype or env.get("ATELIER_DTYPE") or None,
                "fast_path": self.fast_path
                if self.fast_path is not None
                else (
                    env["ATELIER_FAST_PATH"] not in ("0", "off", "false")
                    if env.get("ATELIER_FAST_PATH")
                    else None
                ),
                "compile": self.compile or env.get("ATELIER_COMPILE") or None,
                "models_dir": path(self.models_dir, "ATELIER_MODELS", "models"),
                "config_file": path(self.config_file, "ATELIER_CONFIG", None),
                "output_dir": path(self.output_dir, "ATELIER_OUTPUT", "output"),
                "input_dir": path(self.input_dir, "ATELIER_INPUT", "input"),
                "temp_dir": path(self.temp_dir, "ATELIER_TEMP", "temp"),
                "pipelines_dir": path(self.pipelines_dir, "ATELIER_PIPELINES", "pipelines"),
            }
        )


@dataclass(frozen=True)
class Command:
    """A subcommand a plugin adds to ``atelier``. ``engine_options``: it takes the shared engine flags."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    engine_options: bool = True


class Plugin:
    """What a plugin may contribute. Subclass and override; every hook is optional."""

    name: str = "plugin"

    def configure_folders(self, config: EngineConfig, folders: Folders) -> None:
        """Add the model folders this plugin knows about (kinds, aliases, config-file entries), and the
        pipelines it ships (``folders.pipelines``, after the user's)."""

    def commands(self) -> Sequence[Command]:
        return ()

    def warmup(self, engine: Engine, long_lived: bool = True) -> Sequence[WarmupStep]:
        """Start-up work to do in the background (``engine/warmup.py``): for a server (``long_lived``), or
        only what the first job of a one-shot process (``atelier run``) surely needs."""
        return ()


def load_plugins(errors: list[tuple[str, str]] | None = None) -> list[Plugin]:
    """The installed plugins (entry points ``atelier.plugins``); a broken one is reported, not fatal."""
    plugins: list[Plugin] = []
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
            plugin = obj() if isinstance(obj, type) else obj
            if not isinstance(plugin, Plugin):
                raise TypeError(f"entry point gives {type(plugin).__name__}, not an atelier Plugin")
            plugins.append(plugin)
        except Exception as exc:
            log.warning("could not load plugin %s: %s", ep.name, exc)
            if errors is not None:
                errors.append((f"plugin {ep.name} ({ep.value})", f"{type(exc).__name__}: {exc}"))
    return plugins


def default_device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
    except ImportError:
        pass
    return "cpu"


@dataclass
class Engine:
    """One engine: what the CLI, the server and a worker each hold one of."""

    config: EngineConfig
    folders: Folders
    registry: Registry
    models: ModelLoader
    cache: OutputCache
    executor: Executor
    pipelines: PipelineLibrary
    plugins: list[Plugin] = field(default_factory=list)
    #: the device memory budget shared by loaded models and cached outputs (engine/memory.py)
    memory: DeviceBudget = field(default_factory=DeviceBudget)
    #: problems met while loading plugins and node modules: (source, message)
    load_errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def device(self) -> str:
        return self.executor.device

    def check(
        self, data: Any, overrides: dict[str, Any] | None = None, outputs: list[str] | None = None
    ) -> CheckResult:
        return self.executor.check(data, overrides, outputs)

    def admit(self, graph: Graph, limits: Limits | None = None) -> Admission:
        """Whether a checked job fits ``limits`` (default: the engine's) and the device's memory."""
        return admit(graph, limits or self.config.limits, self.folders, device=self.device)

    def describe(self, type_name: str | None = None) -> dict[str, Any]:
        return self.registry.describe(type_name, files=self.folders)

    def warmup_steps(self, long_lived: bool = True) -> list[WarmupStep]:
        """What the plugins would warm up for this engine (``engine/warmup.py`` runs them)."""
        return [step for plugin in self.plugins for step in plugin.warmup(self, long_lived)]

    def free(self) -> None:
        """Drop cached outputs and loaded models (after an out-of-memory failure, or on request)."""
        self.cache.clear()
        self.models.unload_all()


def build_engine(
    config: EngineConfig | None = None,
    *,
    plugins: Sequence[Plugin] | None = None,
    registry: Registry | None = None,
    models: ModelLoader | None = None,
    cache: OutputCache | None = None,
) -> Engine:
    """Build an engine. ``plugins``/``registry`` default to what is installed; tests pass their own, and
    may share one ``models`` loader between engines (loaded weights are read-only to nodes)."""
    errors: list[tuple[str, str]] = []
    cfg = (config or EngineConfig()).resolved()
    assert cfg.device is not None and cfg.output_dir and cfg.input_dir and cfg.temp_dir
    plugin_list = list(plugins) if plugins is not None else load_plugins(errors)
    folders = Folders(output=cfg.output_dir, input=cfg.input_dir, temp=cfg.temp_dir)
    if cfg.models_dir is not None:  # hashes outlive the process: a fresh one does not re-read model files
        folders.hashes.store = HashIndex(cfg.models_dir / ".atelier" / "hashes.json")
    if cfg.pipelines_dir is not None:
        folders.pipelines.append(cfg.pipelines_dir)
    for plugin in plugin_list:
        plugin.configure_folders(cfg, folders)
    if registry is None:
        registry = default_registry()
        errors.extend(registry.load_errors)
    if models is None:
        fast = None
        if cfg.fast_path or (cfg.fast_path is None and cfg.device.startswith("cuda")):
            from .models.fast_path import resolve_fast_path  # the GPU fast path (Stable Diffusion models)

            fast = resolve_fast_path(cfg.device, cfg.fast_path, cfg.compile)
        elif cfg.compile:
            log.warning("--compile is ignored: it needs the fast path (CUDA, or ATELIER_FAST_PATH=1)")
        memory = DeviceBudget(capacity_from(cfg.vram_budget_gb, cfg.device), cfg.device)
        host_budget = (
            int(cfg.model_cache_mb * 1024 * 1024) if cfg.model_cache_mb is not None else default_budget()
        )
        models = ModelLoader(
            cfg.device,
            parse_dtype(cfg.dtype),
            max_loaded=cfg.max_loaded_models,
            budget=memory,
            fast=fast,
            host=HostCache(host_budget, cfg.device),
        )
    memory = models.budget  # a shared loader brings its budget: the modules it accounts for are shared too
    if cache is None:
        budget = int(cfg.cache_mb * 1024 * 1024) if cfg.cache_mb else default_budget()
        cache = OutputCache(max_bytes=budget, max_device_bytes=default_device_budget(cfg.device))
    memory.attach(cache)
    pipelines = PipelineLibrary(folders.pipelines)
    executor = Executor(
        registry,
        cache,
        device=cfg.device,
        folders=folders,
        models=models,
        pipelines=pipelines.resolve,
        limits=cfg.limits,
    )
    return Engine(cfg, folders, registry, models, cache, executor, pipelines, plugin_list, memory, errors)


# -- the shared command-line options ---------------------------------------------------------------


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """The engine options, declared once for every command that builds an engine."""
    g = p.add_argument_group("engine")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    g.add_argument(
        "--dtype", default=None, help="model weights: float16 (GPU default), bfloat16, float32 (CPU default)"
    )
    g.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_const",
        const=False,
        default=None,
        help="plain eager sampling on a GPU (the fast path is on by default on CUDA)",
    )
    g.add_argument(
        "--compile",
        nargs="?",
        const="reduce-overhead",
        default=None,
        metavar="MODE",
        help="torch.compile the UNet on the fast path: reduce-overhead (CUDA graphs, the default MODE), default, max-autotune, "
        "max-autotune-no-cudagraphs; a shape compiles once (minutes), then it is cached on disk",
    )
    g.add_argument(
        "--models-dir", type=Path, default=None, help="models root (default $ATELIER_MODELS or ./models)"
    )
    g.add_argument(
        "--config", type=Path, default=None, help="TOML config with extra model folders ($ATELIER_CONFIG)"
    )
    g.add_argument(
        "--output-dir", type=Path, default=None, help="where images are written (default ./output)"
    )
    g.add_argument(
        "--input-dir", type=Path, default=None, help="where input images are read (default ./input)"
    )
    g.add_argument("--temp-dir", type=Path, default=None, help="previews (default ./temp)")
    g.add_argument(
        "--pipelines-dir", type=Path, default=None, help="your pipeline library (default ./pipelines)"
    )
    g.add_argument(
        "--cache-mb",
        type=float,
        default=None,
        help="output cache budget in MiB (default: a quarter of RAM, at most 8 GiB)",
    )
    g.add_argument(
        "--vram-budget",
        type=float,
        default=None,
        metavar="GB",
        help="device memory (GiB) for loaded models and cached outputs together: past it outputs spill to "
        "RAM, then the least recently used models move to RAM (default $ATELIER_VRAM_BUDGET, on CUDA the "
        "card's memory less a reserve of a quarter (at least 2 GiB); 0: no budget)",
    )
    g.add_argument(
        "--model-cache-mb",
        type=float,
        default=None,
        help="host memory for recently used models, reloaded without reading their files (default: a "
        "quarter of RAM, at most 8 GiB; 0: off)",
    )
    d = Limits()
    lim = p.add_argument_group(
        "limits", "what a job may ask for: the server refuses a job over them, run and validate warn"
    )
    lim.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels, help="pixels of one image")
    lim.add_argument("--max-batch", type=int, default=d.max_batch, help="images in one batch")
    lim.add_argument("--max-steps", type=int, default=d.max_steps, help="steps of one sampler")
    lim.add_argument("--max-prompt-chars", type=int, default=d.max_prompt_chars, help="length of a prompt")
    lim.add_argument("--max-frames", type=int, default=d.max_frames, help="frames of one input image")
    lim.add_argument(
        "--max-decoded-mb",
        type=float,
        default=d.max_decoded_bytes / (1 << 20),
        help="MiB one input image may take once all its frames are decoded",
    )
    lim.add_argument(
        "--memory-fraction",
        type=float,
        default=d.memory_fraction,
        help="share of the device's available memory a job's estimate may take",
    )
    lim.add_argument(
        "--memory-mb",
        type=float,
        default=None,
        help="memory jobs may use, in MiB (default: measured: free RAM, or free VRAM on a GPU)",
    )


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The :class:`EngineConfig` the shared options describe. Raises ValueError for a bad value."""
    dtype = getattr(args, "dtype", None)
    if dtype is not None:
        parse_dtype(dtype)  # refuse an unknown name now, with the accepted ones named
    if getattr(args, "compile", None):
        from .models.fast_path import COMPILE_MODES

        if args.compile not in COMPILE_MODES:
            raise ValueError(
                f"unknown --compile mode {args.compile!r}; use one of {', '.join(COMPILE_MODES)}"
            )
    return EngineConfig(
        device=getattr(args, "device", None),
        dtype=dtype,
        models_dir=getattr(args, "models_dir", None),
        config_file=getattr(args, "config", None),
        output_dir=getattr(args, "output_dir", None),
        input_dir=getattr(args, "input_dir", None),
        temp_dir=getattr(args, "temp_dir", None),
        pipelines_dir=getattr(args, "pipelines_dir", None),
        cache_mb=getattr(args, "cache_mb", None),
        vram_budget_gb=getattr(args, "vram_budget", None),
        model_cache_mb=getattr(args, "model_cache_mb", None),
        limits=limits_from_args(args),
        fast_path=getattr(args, "fast_path", None),
        compile=getattr(args, "compile", None),
    )


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The :class:`Limits` the shared options give (defaults for those absent). Raises ValueError."""
    d = Limits()
    decoded = getattr(args, "max_decoded_mb", None)
    memory = getattr(args, "memory_mb", None)
    try:
        return Limits(
            max_image_pixels=getattr(args, "max_image_pixels", None) or d.max_image_pixels,
            max_batch=getattr(args, "max_batch", None) or d.max_batch,
            max_steps=getattr(args, "max_steps", None) or d.max_steps,
            max_prompt_chars=getattr(args, "max_prompt_chars", None) or d.max_prompt_chars,
            max_frames=getattr(args, "max_frames", None) or d.max_frames,
            max_decoded_bytes=int(decoded * (1 << 20)) if decoded else d.max_decoded_bytes,
            memory_fraction=getattr(args, "memory_fraction", None) or d.memory_fraction,
            memory_bytes=int(memory * (1 << 20)) if memory else None,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"bad limit: {problems}") from None
