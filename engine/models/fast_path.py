"""The fast sampling path: how a loaded UNet and VAE are prepared and called on a GPU.

On by default on CUDA, off elsewhere, switched off with ``--no-fast-path`` (``EngineConfig.fast_path``).
Every part keeps the picture (``tests/sd/test_sd_fast_path.py`` compares each against the plain path):

- weights in float16 (the GPU default ``--dtype``; bfloat16 with ``--dtype bfloat16``), the VAE too: an
  fp16 VAE whose decode gives NaN or inf is detected (:func:`decode_checked`), converted to bfloat16 (fp32
  where bf16 is missing) for good and decoded again, so a model that overflows is found by its output,
  not guessed from its family;
- attention through ``scaled_dot_product_attention`` (diffusers' SDPA processor; flash / memory-efficient
  kernels on CUDA), checked by :func:`sdpa_everywhere`;
- the UNet's and VAE's convolution weights in channels_last, with the UNet's input converted to match;
- ``torch.backends.cudnn.benchmark`` (cuDNN picks the fastest convolution per shape);
- no host-device synchronisation inside the step loop: schedules and step coefficients are Python floats,
  conditioning is moved to the device once per run (guidance.py);
- with ``--compile [MODE]`` the UNet runs through ``torch.compile`` (``dynamic=False``; ``reduce-overhead``
  adds CUDA graphs): one compiled graph per shape bucket (batch, latent size, context length, SDXL or
  not), at most :attr:`FastPath.max_shapes` of them, calls with more shapes run eagerly. LoRAs and merges
  patch weights in place (patches.py), so compiled graphs stay valid; calls that change the network's code
  (attention patches, ControlNet residuals) run eagerly. Compiled kernels are cached on disk
  (:func:`compile_cache_dir`), so the next process compiles a shape in seconds instead of minutes.

The state lives on the loaded modules (an attribute of the UNet/VAE object), never in a module global.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

log = logging.getLogger(__name__)

CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = (
    "off",
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)
#: modes whose compiled graphs replay through CUDA graphs (their outputs are overwritten by the next replay)
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
_STATE = "_atelier_fast_path"
_VAE_FALLBACK = "_atelier_vae_nan_fallback"


class FastPath(BaseModel):
    """How the fast path prepares and calls models (one per engine)."""

    model_config = ConfigDict(frozen=True)

    channels_last: bool = True
    cudnn_benchmark: bool = True
    compile: CompileMode = "off"
    #: torch.compile backend: "inductor" (the real one); tests use "eager"/"aot_eager" or a counting one
    backend: Any = "inductor"
    #: compiled shape buckets per UNet (each a graph in memory); calls of further shapes run eagerly
    max_shapes: int = Field(8, ge=1, le=8)
    cache_dir: Path | None = None


def resolve_fast_path(
    device: str, enabled: bool | None = None, compile: str | None = None, cache_dir: Path | None = None
) -> FastPath | None:
    """The fast path an engine on ``device`` uses: None when off. ``enabled`` None means automatic (on for
    CUDA); ``compile`` a mode of :data:`COMPILE_MODES` (None: off)."""
    mode = compile or "off"
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {', '.join(COMPILE_MODES)}")
    on = str(device).startswith("cuda") if enabled is None else enabled
    if not on:
        return None
    return FastPath(compile=mode, cache_dir=cache_dir)  # type: ignore[arg-type]


def compile_cache_dir(fast: FastPath) -> Path:
    """Where compiled kernels persist: ``FastPath.cache_dir``, else ``$ATELIER_COMPILE_CACHE``, else the
    user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/atelier/torch-compile``."""
    if fast.cache_dir is not None:
        return fast.cache_dir
    if os.environ.get("ATELIER_COMPILE_CACHE"):
        return Path(os.environ["ATELIER_COMPILE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "atelier" / "torch-compile"


def _use_compile_cache(fast: FastPath) -> None:
    """Point inductor's and Triton's on-disk caches at :func:`compile_cache_dir` (their own environment
    variables, read when they compile; a folder the user chose wins). Inductor writes its default folder
    into the environment when it first looks, so that value counts as unset."""
    root = compile_cache_dir(fast)
    inductor = str((root / "inductor").absolute())
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        default = os.path.abspath(default_cache_dir())
    except (ImportError, OSError):  # another torch layout: only an unset variable is ours to set
        default = None
    if current is None or os.path.abspath(current) == default:
        (root / "inductor").mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor
        if current is not None:
            try:  # inductor keeps some paths in memory: forget them, as its own temporary_cache_dir does
                from torch._inductor.utils import clear_caches

                clear_caches()
            except ImportError:
                pass
    os.environ.setdefault("TRITON_CACHE_DIR", str((root / "triton").absolute()))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


# -- preparing loaded modules ------------------------------------------------------------------------


def sdpa_everywhere(module: torch.nn.Module) -> bool:
    """Give every diffusers attention layer of ``module`` the SDPA processor where it has the classic one
    (diffusers picks SDPA itself on torch 2; an older default or a loaded state may not). Returns whether
    all attention layers now use scaled_dot_product_attention (custom processors, such as IP-Adapter's,
    are left alone and counted by their class name)."""
    from atelier.engine.models.libraries import AttnProcessor, AttnProcessor2_0

    all_sdpa = True
    for _name, m in module.named_modules():
        processor = getattr(m, "processor", None)
        if processor is None or not hasattr(m, "set_processor"):
            continue
        if type(processor) is AttnProcessor:
            m.processor = AttnProcessor2_0()  # set directly: set_processor logs and resets state
        elif not isinstance(processor, AttnProcessor2_0) and "2_0" not in type(processor).__name__:
            all_sdpa = False
    return all_sdpa


def prepare_unet(unet: torch.nn.Module, fast: FastPath) -> FastUnet:
    """Make ``unet`` ready for the fast path (in place) and give it its :class:`FastUnet` (once)."""
    state = getattr(unet, _STATE, None)
    if isinstance(state, FastUnet) and state.fast == fast:
        return state
    device = next(unet.parameters()).device
    sdpa_everywhere(unet)
    if fast.channels_last:
        unet.to(memory_format=torch.channels_last)
    if device.type == "cuda" and fast.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    state = FastUnet(unet, fast)
    object.__setattr__(unet, _STATE, state)  # a plain attribute, not a submodule
    return state


def prepare_vae(vae: torch.nn.Module, fast: FastPath) -> None:
    sdpa_everywhere(vae)
    if fast.channels_last:
        vae.to(memory_format=torch.channels_last)


def prepare_checkpoint(loaded: Any, fast: FastPath | None) -> Any:
    """Prepare a loaded checkpoint's UNet and VAE for ``fast`` (nothing when None); returns ``loaded``."""
    if fast is None:
        return loaded
    if getattr(loaded, "unet", None) is not None:
        prepare_unet(loaded.unet, fast)
    if getattr(loaded, "vae", None) is not None:
        prepare_vae(loaded.vae, fast)
    return loaded


def fast_unet(unet: Any) -> FastUnet | None:
    """The UNet's fast-path state, or None when it was not prepared for the fast path."""
    state = getattr(unet, _STATE, None)
    return state if isinstance(state, FastUnet) else None


# -- calling the UNet ---------------------------------------------------------------------------------


class FastUnet:
    """A prepared UNet's fast call: channels_last input and, with compile, one compiled graph per shape
    bucket. ``compiled_shapes`` lists the buckets compiled so far (tests and the bench read it)."""

    def __init__(self, unet: torch.nn.Module, fast: FastPath) -> None:
        self.unet = unet
        self.fast = fast
        self.compiled_shapes: list[Hashable] = []
        self.eager_calls = 0
        self.compiled_calls = 0
        self._compiled: Any = None
        self._cudagraphs = fast.compile in CUDAGRAPH_MODES and fast.backend == "inductor"
        # the attention processors as prepared: a call made while a wrapper has swapped some (an image
        # prompt adapter, attention patches) changes the network's code and runs eagerly
        self._processors = [
            (m, m.processor) for _, m in unet.named_modules() if getattr(m, "processor", None) is not None
        ]

    def untouched(self) -> bool:
        """Whether every attention layer still has the processor it was prepared with."""
        return all(m.processor is p for m, p in self._processors)

    def _compiled_module(self) -> Any:
        if self._compiled is None:
            _use_compile_cache(self.fast)
            mode = None if self.fast.compile == "default" else self.fast.compile
            backend = self.fast.backend
            kwargs: dict[str, Any] = {"dynamic": False, "backend": backend}
            if backend == "inductor":
                kwargs["mode"] = mode
            # every UNet shares one forward code object, whose recompiles dynamo caps (8 by default): room
            # for each loaded model's buckets
            dynamo_config = torch._dynamo.config
            for name, least in (
                ("recompile_limit", 64),
                ("cache_size_limit", 64),  # its name before torch 2.7
                ("accumulated_recompile_limit", 256),
                ("accumulated_cache_size_limit", 256),
            ):
                if hasattr(dynamo_config, name):
                    setattr(dynamo_config, name, max(getattr(dynamo_config, name), least))
            self._compiled = torch.compile(self.unet, **kwargs)
        return self._compiled

    def bucket(self, x: Tensor, context: Tensor, added: dict[str, Tensor] | None) -> Hashable:
        """The shape bucket of a call: what a compiled graph is specialised on."""
        return (
            tuple(x.shape),
            tuple(context.shape),
            None if added is None else tuple(sorted(added)),
            x.dtype,
        )

    def __call__(
        self,
        x: Tensor,
        timestep: Tensor,
        context: Tensor,
        added: dict[str, Tensor] | None,
        *,
        plain: bool = True,
        **unet_kwargs: Any,
    ) -> Tensor:
        """The UNet's raw output (its dtype). A compiled graph serves only calls of the network as prepared:
        ``plain`` (the handle has no attention patches), no extra forward arguments (ControlNet residuals)
        and every attention processor the prepared one; others run eagerly."""
        if self.fast.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        kwargs = dict(unet_kwargs)
        if added is not None:
            kwargs["added_cond_kwargs"] = added
        fn: Any = self.unet
        if self.fast.compile != "off" and plain and not unet_kwargs and self.untouched():
            key = self.bucket(x, context, added)
            if key in self.compiled_shapes or len(self.compiled_shapes) < self.fast.max_shapes:
                if key not in self.compiled_shapes:
                    log.info("compiling the UNet for shape %s (once per shape; cached on disk)", key)
                    self.compiled_shapes.append(key)
                fn = self._compiled_module()
        if fn is self.unet:
            self.eager_calls += 1
            return self.unet(x, timestep, encoder_hidden_states=context, return_dict=False, **kwargs)[0]
        self.compiled_calls += 1
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = fn(x, timestep, encoder_hidden_states=context, return_dict=False, **kwargs)[0]
        # a CUDA graph's output buffer is overwritten by its next replay: hand out a copy
        return out.clone() if self._cudagraphs else out


# -- the VAE: fp16 where it works, detected -------------------------------------------------------------


def nan_fallback_dtype(device: torch.device) -> torch.dtype:
    """What an fp16 VAE that overflowed decodes in from then on: bfloat16 (fp16's speed, fp32's range)
    where the device has it, else float32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16
    return torch.float32


def decode_checked(vae: torch.nn.Module, decode: Any, latent: Tensor) -> Tensor:
    """``decode(latent)`` (the VAE's raw output), checked when the VAE is float16: if any value is NaN or
    inf while the latent was finite, the VAE module is converted for good to :func:`nan_fallback_dtype` (remembered by the model itself,
    so every later decode of it skips fp16) and the latent decoded again. One host sync per decode."""
    out = decode(latent)
    dtype = next(vae.parameters()).dtype
    if dtype != torch.float16 or bool(torch.isfinite(out).all()):
        return out
    if not bool(torch.isfinite(latent).all()):  # the NaN came in with the latent: not the VAE's doing
        return out
    device = next(vae.parameters()).device
    target = nan_fallback_dtype(device)
    log.warning(
        "the VAE's float16 decode gave NaN/inf values: decoding in %s from now on",
        str(target).removeprefix("torch."),
    )
    vae.to(target)
    object.__setattr__(vae, _VAE_FALLBACK, target)
    return decode(latent)


def vae_fallback(vae: Any) -> torch.dtype | None:
    """The dtype an fp16 VAE fell back to after a NaN decode, or None when it never did."""
    return getattr(vae, _VAE_FALLBACK, None)
