"""Classifier-free guidance over conditioning lists: the denoiser the samplers call.

A CONDITIONING is a list of :class:`~atelier.engine.sampling.conditioning.CondEntry`: an embedding with
its pooled output, area, mask, strength and SDXL size conditioning. Each entry's denoised prediction is
weighted by its strength over its area (and mask); the positive and negative predictions are the weighted
averages; the result is ``uncond + cfg * (cond - uncond)``, or what the model's CFG function makes of
them. Every entry that can share a forward pass does (same area; token counts brought to a common length
by repeating the context, which leaves cross-attention unchanged): for a plain prompt pair that is one
batched forward of cond and uncond. At cfg 1 the negative is skipped.

:class:`ConditionedPredictor` gives one prediction per conditioning ("slot") from those shared forwards;
:class:`CFGDenoiser` combines two slots, :class:`DualCFGDenoiser` three (ComfyUI's DualCFGGuider).

The model is called with a :class:`ModelCall`, which says which entry each part of the batch belongs to,
so that wrappers on the MODEL handle (ControlNet residuals, image prompts, regional patches) can attach to
the call without editing the UNet. The call also carries what the run started from
(:class:`SamplingInputs`: the latent, its noise mask, the sigmas), which inpainting models concatenate to
their input. A MODEL may also carry a denoise-mask function (:class:`DenoiseMaskArgs`), which the step loop
asks for the noise mask of each step (Differential Diffusion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from .conditioning import CondEntry, Conditioning
from .model_sampling import ModelSampling


@dataclass(frozen=True)
class SamplingInputs:
    """What a sampling run started from, as the model sees it: the latent being denoised (model space,
    full size [B, C, h, w]), its noise mask at latent resolution ([B, 1, h, w], 0..1; None without one)
    and the run's sigmas. Wrappers crop to the call's ``area`` themselves."""

    latent_image: Tensor
    denoise_mask: Tensor | None
    sigmas: Tensor
    #: the run's seed (what seeded conditioning noise derives from: an unCLIP image embedding's)
    seed: int = 0


@dataclass(frozen=True)
class ModelCall:
    """One forward of the denoising network, as wrappers see it.

    ``x`` is the scaled input batch: ``len(entries)`` chunks of ``batch`` rows, chunk ``i`` conditioned by
    ``entries[i]`` (its rows ``i*batch:(i+1)*batch``), all over the latent region ``area`` (h, w, y, x).
    ``unet_kwargs`` are extra keyword arguments for the network's forward (for example diffusers'
    ``down_block_additional_residuals``); wrappers add to them with :meth:`replace`. ``sampling`` is what
    the run started from (None for a call made outside a sampling run)."""

    x: Tensor
    timestep: Tensor
    context: Tensor
    added: dict[str, Tensor] | None
    sigma: Tensor
    entries: tuple[CondEntry, ...]
    negative: tuple[bool, ...]
    batch: int
    area: tuple[int, int, int, int]
    unet_kwargs: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingInputs | None = None

    def replace(self, **changes: Any) -> ModelCall:
        return replace(self, **changes)


#: the network call at the core of the chain: ModelCall -> raw output (eps or v)
ApplyModel = Callable[[ModelCall], Tensor]
#: a wrapper: ``wrapper(call_next, call)`` may change the call, call ``call_next`` (or not), change the result
ModelWrapper = Callable[[ApplyModel, ModelCall], Tensor]


@dataclass(frozen=True)
class CfgArgs:
    """What a CFG function sees: the guided predictions (denoised, in latent space) and the step."""

    cond: Tensor
    uncond: Tensor
    cfg: float
    x: Tensor  # the noisy latent the sampler passed in
    sigma: Tensor  # [B]
    denoised: Tensor  # the result so far (plain CFG, or what earlier functions made)


#: ``f(args) -> denoised``; applied in order after the plain combination
CfgFunction = Callable[[CfgArgs], Tensor]


@dataclass(frozen=True)
class DenoiseMaskArgs:
    """What a denoise-mask function sees at each step of a masked run: the step's sigma ([B]), the
    latent's noise mask at latent resolution ([B, 1, h, w], 0..1), the run's sigmas and the model's noise
    schedule."""

    sigma: Tensor
    mask: Tensor
    sigmas: Tensor
    sampling: ModelSampling


#: ``f(args) -> mask``: the noise mask the step uses instead of the latent's own (Differential Diffusion)
DenoiseMaskFunction = Callable[[DenoiseMaskArgs], Tensor]


class DiffusionModel(Protocol):
    """What guidance needs from a MODEL handle."""

    sampling: ModelSampling

    def timestep(self, sigma: Tensor) -> Tensor:  # the network's time input for sigma
        ...

    def apply_model(self, call: ModelCall) -> Tensor:  # raw output (eps or v) for an already-scaled input
        ...

    @property
    def needs_pooled(self) -> bool:  # SDXL: pooled text embedding and size conditioning
        ...

    def size_ids(
        self, cond: CondEntry, latent_h: int, latent_w: int, negative: bool
    ) -> list[float]: ...  # with needs_pooled: the size conditioning values of an entry

    @property
    def cfg_functions(self) -> tuple[CfgFunction, ...]:  # post-combination hooks (CFG rescale, ...)
        ...

    @property
    def denoise_mask_function(self) -> DenoiseMaskFunction | None:  # per-step noise mask (optional)
        ...


@dataclass
class _Entry:
    cond: CondEntry
    negative: bool
    slot: int = 0


def _area(entry: CondEntry, h: int, w: int) -> tuple[int, int, int, int]:
    area = entry.area
    if area is None:
        return (h, w, 0, 0)
    return _clamp_area(area, h, w)


def _clamp_area(area: Sequence[int], h: int, w: int) -> tuple[int, int, int, int]:
    ah, aw, y, x = (int(v) for v in area)
    y, x = min(max(y, 0), h - 1), min(max(x, 0), w - 1)
    return (max(1, min(ah, h - y)), max(1, min(aw, w - x)), y, x)


#: how many latent cells an area's weight ramps over at each inner edge (at most a quarter of its size)
AREA_FEATHER = 8


def _edge_ramp(size: int, start: int, total: int) -> Tensor:
    """Per-cell factors along one axis of an area: ramps (1/r, 2/r, ..., 1) towards the inside over
    r = min(8, size // 4) cells at each edge that lies inside the latent (not on its border)."""
    ramp = torch.ones(size)
    r = min(AREA_FEATHER, size // 4)
    steps = torch.arange(1, r + 1, dtype=torch.float32) / r
    if r and start != 0:
        ramp[:r] *= steps
    if r and start + size < total:
        ramp[size - r :] *= steps.flip(0)
    return ramp


def area_weight(
    area: Sequence[int], strength: float, h: int, w: int
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """The weight an area conditioning (no mask) gives its prediction, over the area clamped to an
    [h, w] latent: ``strength``, feathered linearly over the area's inner edges so that regions blend
    (as ComfyUI weighs areas). Returns the [ah, aw] weight and the clamped area (h, w, y, x)."""
    ah, aw, y, x = _clamp_area(area, h, w)
    weight = _edge_ramp(ah, y, h)[:, None] * _edge_ramp(aw, x, w)[None, :]
    return weight * float(strength), (ah, aw, y, x)


class ConditionedPredictor:
    """The model's denoised prediction under each of several conditionings, all entries that can share a
    forward pass batched together. ``slots`` are (conditioning, negative): the flag tells wrappers which
    entries are negative prompts (:attr:`ModelCall.negative`). Guiders combine the predictions."""

    def __init__(
        self,
        model: DiffusionModel,
        slots: Sequence[tuple[Conditioning, bool]],
        *,
        max_batch: int | None = None,
        inputs: SamplingInputs | None = None,
    ) -> None:
        self.model = model
        self.slots = len(slots)
        self.entries = [_Entry(e, negative, n) for n, (cond, negative) in enumerate(slots) for e in cond]
        self.max_batch = max_batch
        self.inputs = inputs
        self.model_calls = 0
        # what a group's forward takes besides x and sigma (context, pooled/size inputs, area weights and
        # masks), moved to the device once per run: copies inside the step loop would make every step wait
        # for the device (a host-to-device copy from pageable memory synchronises)
        self._static: dict[tuple[Any, ...], Any] = {}

    def _once(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        value = self._static.get(key)
        if value is None:
            value = self._static[key] = make()
        return value

    def predict(self, x: Tensor, sigma: Tensor, slots: Sequence[int] | None = None) -> list[Tensor]:
        """One denoised prediction per slot (a slot without entries, or not in ``slots`` when given, is not
        computed and predicts 0)."""
        model = self.model
        ms = model.sampling
        b, _, h, w = x.shape
        x_in = ms.calculate_input(sigma, x)
        t = model.timestep(sigma).to(x.device)
        sums = [torch.zeros_like(x) for _ in range(self.slots)]
        weights = [torch.full_like(x[:, :1], 1e-37) for _ in range(self.slots)]

        wanted = self.entries if slots is None else [e for e in self.entries if e.slot in slots]
        groups: dict[tuple[int, int, int, int], list[_Entry]] = {}
        for e in wanted:
            groups.setdefault(_area(e.cond, h, w), []).append(e)
        for area, entries in groups.items():
            ah, aw, y, x0 = area
            for chunk in _chunks(entries, self.max_batch):
                self._run_group(chunk, x, x_in, sigma, t, (ah, aw, y, x0), sums, weights)
        return [s / wgt for s, wgt in zip(sums, weights, strict=True)]

    def combine(
        self,
        cond: Tensor,
        uncond: Tensor,
        cfg: float,
        x: Tensor,
        sigma: Tensor,
        post_cfg: Sequence[CfgFunction] = (),
    ) -> Tensor:
        """``uncond + cfg * (cond - uncond)``, then the model's CFG functions (CFG rescale, ...), then
        ``post_cfg`` (a sampler's own: CFG++ reads the unconditional prediction there)."""
        denoised = uncond + (cond - uncond) * cfg
        for fn in (*getattr(self.model, "cfg_functions", ()), *post_cfg):
            denoised = fn(CfgArgs(cond, uncond, cfg, x, sigma, denoised))
        return denoised

    def _run_group(
        self,
        entries: Sequence[_Entry],
        x: Tensor,
        x_in: Tensor,
        sigma: Tensor,
        t: Tensor,
        area: tuple[int, int, int, int],
        sums: list[Tensor],
        weights: list[Tensor],
    ) -> None:
        ah, aw, y, x0 = area
        b, _, h, w = x.shape
        k = len(entries)
        xs = x_in[:, :, y : y + ah, x0 : x0 + aw]
        x_raw = x[:, :, y : y + ah, x0 : x0 + aw]
        group = (tuple(id(e) for e in entries), b, h, w, x.device)
        context, added = self._once(
            ("inputs", *group), lambda: self._group_inputs(entries, b, h, w, x.device)
        )
        call = ModelCall(
            x=xs.repeat(k, 1, 1, 1),
            timestep=t.repeat(k),
            context=context,
            added=added,
            sigma=sigma.repeat(k),
            entries=tuple(e.cond for e in entries),
            negative=tuple(e.negative for e in entries),
            batch=b,
            area=area,
            sampling=self.inputs,
        )
        out = self.model.apply_model(call)
        self.model_calls += 1
        sig = sigma.repeat(k)
        denoised = self.model.sampling.calculate_denoised(sig, out.float(), x_raw.repeat(k, 1, 1, 1))
        for n, e in enumerate(entries):
            d = denoised[n * b : (n + 1) * b]
            wgt = self._once(
                ("weight", id(e), *group, d.dtype), lambda e=e, d=d: self._weight(e, d, area, h, w)
            )
            sums[e.slot][:, :, y : y + ah, x0 : x0 + aw] += d * wgt
            weights[e.slot][:, :, y : y + ah, x0 : x0 + aw] += wgt

    def _group_inputs(
        self, entries: Sequence[_Entry], b: int, h: int, w: int, device: torch.device
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """A group's context (token counts brought to a common length) and SDXL inputs, on ``device``."""
        length = math.lcm(*(e.cond.embedding.shape[1] for e in entries))
        contexts = []
        for e in entries:
            c = e.cond.embedding.to(device)
            if c.shape[1] != length:
                c = c.repeat(1, length // c.shape[1], 1)
            contexts.append(c.expand(b, -1, -1) if c.shape[0] == 1 else c)
        context = torch.cat(contexts)
        if not self.model.needs_pooled:
            return context, None
        pooled, time_ids = [], []
        for e in entries:
            p = e.cond.pooled
            if p is None:
                raise ValueError("this model (SDXL) needs a pooled text embedding: encode with its CLIP")
            p = p.to(device)
            pooled.append(p.expand(b, -1) if p.shape[0] == 1 else p)
            ids = torch.tensor(self.model.size_ids(e.cond, h, w, e.negative)).to(device)
            time_ids.append(ids.expand(b, -1))
        return context, {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(time_ids)}

    def _weight(self, e: _Entry, d: Tensor, area: tuple[int, int, int, int], h: int, w: int) -> Tensor:
        """The weight of an entry's prediction ``d`` over ``area``: its strength, feathered over an area's
        inner edges, times its mask."""
        ah, aw, y, x0 = area
        b = d.shape[0]
        mask = e.cond.mask
        if mask is None and e.cond.area is not None:
            feathered, _ = area_weight(area, e.cond.strength, h, w)
            wgt = feathered.to(d)[None, None].expand(b, 1, ah, aw)
        else:
            wgt = torch.full_like(d[:, :1], float(e.cond.strength))
        if mask is not None:
            m = mask.to(d.device, torch.float32)
            if m.dim() == 2:
                m = m[None, None]
            elif m.dim() == 3:
                m = m[:, None]
            m = torch.nn.functional.interpolate(m, size=(h, w), mode="bilinear")[
                :, :, y : y + ah, x0 : x0 + aw
            ]
            wgt = wgt * m
        return wgt


class CFGDenoiser(ConditionedPredictor):
    """``denoiser(x, sigma) -> x0`` for the samplers, guided by positive/negative conditioning."""

    def __init__(
        self,
        model: DiffusionModel,
        positive: Conditioning,
        negative: Conditioning,
        cfg: float,
        *,
        max_batch: int | None = None,
        inputs: SamplingInputs | None = None,
    ) -> None:
        if not positive:
            raise ValueError("positive conditioning is empty")
        self.cfg = float(cfg)
        if self.cfg != 1.0 and not negative:
            raise ValueError(
                "negative conditioning is empty (connect a CLIPTextEncode or ConditioningZeroOut)"
            )
        self.has_negative = bool(negative)
        super().__init__(model, [(positive, False), (negative, True)], max_batch=max_batch, inputs=inputs)

    def __call__(self, x: Tensor, sigma: Tensor, *, post_cfg: Sequence[CfgFunction] = (), **_: Any) -> Tensor:
        """The guided prediction. ``post_cfg`` functions run after the model's CFG functions; a sampler
        that needs the unconditional prediction (CFG++) passes one, and then the negative is evaluated
        even at cfg 1."""
        guided = self.cfg != 1.0 or bool(post_cfg)
        if not guided:
            return self.predict(x, sigma, slots=(0,))[0]
        if not self.has_negative:
            raise ValueError(
                "this sampler needs a negative conditioning (it guides with the unconditional prediction)"
            )
        cond, uncond = self.predict(x, sigma)
        return self.combine(cond, uncond, self.cfg, x, sigma, post_cfg)


class DualCFGDenoiser(ConditionedPredictor):
    """Guidance by two prompts and a negative (ComfyUI's DualCFGGuider). With predictions ``p1`` (cond1),
    ``p2`` (cond2, treated as a negative prompt by wrappers) and ``n`` (negative):

    - regular: ``n + cfg2 * (p2 - n) + cfg1 * (p1 - p2)`` (the model's CFG functions apply to the
      ``p2`` / ``n`` combination); at cfg2 = 1 the negative is not computed, and at cfg1 = cfg2 = 1
      neither is cond2 (their terms cancel);
    - nested: ``n + cfg2 * (t - n)`` with ``t = p2 + cfg1 * (p1 - p2)`` (the CFG functions apply to ``t``).
    """

    def __init__(
        self,
        model: DiffusionModel,
        cond1: Conditioning,
        cond2: Conditioning,
        negative: Conditioning,
        cfg1: float,
        cfg2: float,
        *,
        nested: bool = False,
        max_batch: int | None = None,
        inputs: SamplingInputs | None = None,
    ) -> None:
        if not cond1:
            raise ValueError("cond1 conditioning is empty")
        self.cfg1, self.cfg2, self.nested = float(cfg1), float(cfg2), nested
        use_negative = nested or not math.isclose(self.cfg2, 1.0)
        use_middle = use_negative or not math.isclose(self.cfg1, 1.0)
        for name, cond, used in (("cond2", cond2, use_middle), ("negative", negative, use_negative)):
            if used and not cond:
                raise ValueError(f"{name} conditioning is empty")
        slots = [
            (cond1, False),
            (cond2 if use_middle else [], True),
            (negative if use_negative else [], True),
        ]
        super().__init__(model, slots, max_batch=max_batch, inputs=inputs)

    def __call__(self, x: Tensor, sigma: Tensor, **_: Any) -> Tensor:
        p1, p2, n = self.predict(x, sigma)
        if self.nested:
            text = self.combine(p1, p2, self.cfg1, x, sigma)
            return n + (text - n) * self.cfg2
        return self.combine(p2, n, self.cfg2, x, sigma) + (p1 - p2) * self.cfg1


def _chunks(entries: list[_Entry], size: int | None) -> list[list[_Entry]]:
    if not size or size >= len(entries):
        return [entries]
    return [entries[i : i + size] for i in range(0, len(entries), size)]
