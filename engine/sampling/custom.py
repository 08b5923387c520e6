"""The values ComfyUI's custom-sampling nodes pass around: SAMPLER, NOISE and GUIDER (SIGMAS is a tensor).

Each is a small immutable value; the step loop itself is :func:`~.ksampler.sample_sigmas`, the one
KSampler uses, so a custom graph with KSampler's settings gives KSampler's latent bit for bit.

- :class:`Sampler`: a sampler function of ``samplers.py`` by name, with options (eta, s_noise, ...).
- :class:`Noise`: the initial noise for a latent and the seed the sampler's own noise starts from;
  :class:`SeededNoise` draws it as KSampler does, :class:`ZeroNoise` gives zeros (DisableNoise).
- :class:`Guider`: a model and its conditioning, which builds the denoiser a run calls:
  :class:`CFGGuide` (classifier-free guidance), :class:`BasicGuide` (one conditioning, no guidance),
  :class:`DualCFGGuide` (two prompts and a negative).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .conditioning import Conditioning
from .guidance import CFGDenoiser, DualCFGDenoiser, SamplingInputs
from .ksampler import prepare_noise
from .samplers import get_sampler

if TYPE_CHECKING:
    from atelier.engine.models.handles import ModelHandle

Denoise = Callable[..., Tensor]


@dataclass(frozen=True)
class Sampler:
    """SAMPLER: the sampler function called ``name`` (see ``SAMPLER_NAMES``) with extra ``options``
    passed to it as keyword arguments (``eta``, ``s_noise``, ``solver_type``, ``order``, ...)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        get_sampler(self.name)  # an unknown name fails here, naming the valid ones
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __call__(
        self, denoiser: Denoise, x: Tensor, sigmas: Tensor, *, callback: Any = None, seed: int | None = None
    ) -> Tensor:
        return get_sampler(self.name)(denoiser, x, sigmas, callback=callback, seed=seed, **self.options)


@dataclass(frozen=True)
class Noise:
    """NOISE: the initial noise of a run and the seed its sampler's own noise starts from."""

    seed: int = 0

    def generate(self, latent: Mapping[str, Any]) -> Tensor:
        """Unit-variance noise shaped like ``latent["samples"]`` (float32, on the CPU)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SeededNoise(Noise):
    """Gaussian noise from ``seed``, drawn exactly as KSampler draws it (CPU generator, one draw per
    batch item up to the highest ``batch_index`` when the latent carries one)."""

    def generate(self, latent: Mapping[str, Any]) -> Tensor:
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


@dataclass(frozen=True)
class ZeroNoise(Noise):
    """No initial noise (DisableNoise): the run starts from the latent itself. The seed is 0."""

    def generate(self, latent: Mapping[str, Any]) -> Tensor:
        return torch.zeros(latent["samples"].shape, dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class Guider:
    """GUIDER: a MODEL and what guides it; :meth:`denoiser` builds the ``denoiser(x, sigma) -> x0`` a run
    calls (in model space, under the model's session)."""

    model: ModelHandle

    def denoiser(self, inputs: SamplingInputs | None) -> Denoise:
        """The denoiser for a run that starts from ``inputs`` (None outside a run)."""
        raise NotImplementedError

    def predict(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The guided denoised prediction for a noisy latent ``x`` (model space) at ``sigma`` ([B]), outside
        a sampling run. Call it within ``model.session()`` when the model carries weight patches."""
        return self.denoiser(None)(x, sigma)


@dataclass(frozen=True, eq=False)
class CFGGuide(Guider):
    """Classifier-free guidance: ``uncond + cfg * (cond - uncond)`` (KSampler's guidance)."""

    positive: Conditioning
    negative: Conditioning
    cfg: float

    def denoiser(self, inputs: SamplingInputs | None) -> Denoise:
        return CFGDenoiser(self.model, self.positive, self.negative, self.cfg, inputs=inputs)


@dataclass(frozen=True, eq=False)
class BasicGuide(Guider):
    """The conditioned prediction alone (no negative, cfg 1): for distilled and flow models."""

    conditioning: Conditioning

    def denoiser(self, inputs: SamplingInputs | None) -> Denoise:
        return CFGDenoiser(self.model, self.conditioning, [], 1.0, inputs=inputs)


@dataclass(frozen=True, eq=False)
class DualCFGGuide(Guider):
    """Two prompts and a negative (see :class:`~.guidance.DualCFGDenoiser`): ``cfg_conds`` weighs cond1
    against cond2, ``cfg_cond2_negative`` cond2 against the negative."""

    cond1: Conditioning
    cond2: Conditioning
    negative: Conditioning
    cfg_conds: float
    cfg_cond2_negative: float
    nested: bool = False

    def denoiser(self, inputs: SamplingInputs | None) -> Denoise:
        return DualCFGDenoiser(
            self.model,
            self.cond1,
            self.cond2,
            self.negative,
            self.cfg_conds,
            self.cfg_cond2_negative,
            nested=self.nested,
            inputs=inputs,
        )


def as_sigmas(values: Sequence[float] | Tensor) -> Tensor:
    """A SIGMAS value: a 1-D float32 CPU tensor."""
    return torch.as_tensor(values, dtype=torch.float32).reshape(-1).cpu()
